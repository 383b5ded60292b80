//! Test harness: the real server on `127.0.0.1:0` with a fresh database, and the generated
//! client. Every behavioural test runs on SQLite (a temporary file) and on PostgreSQL (a fresh
//! database per test, created on the server of `CHATSYNC_TEST_POSTGRES_URL`). What a test needs
//! from outside the repository (PostgreSQL, Synapse, buf, the real-export corpus) is decided in
//! one place, [`skip_or_fail`]. Set `TEST_LOG=1` to see the server's logs.
#![allow(dead_code)]

pub mod graph_api;
pub mod postgres_server;
pub mod replica;
pub mod synapse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chatsync::config::{Config, SessionConfig, TokenConfig};
use chatsync::grpc::pb;
use chatsync::server::Application;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use sea_orm::ConnectionTrait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use pb::SyncStage;

/// How long a test waits for something that must happen (an event, a process exit, a stream's
/// end) before it calls it a hang. Generous on purpose: it turns a hang into a failure and is no
/// speed check; tests never assert how long something took.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// Runs a behavioural test on SQLite and on PostgreSQL (which, when missing, fails the test or,
/// with `CHATSYNC_ALLOW_SKIP=1`, records the skip: see [`skip_or_fail`]).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(backend) = $crate::common::Backend::postgres().await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,sqlx=warn")
                .with_test_writer()
                .try_init();
        }
    });
}

/// Where a test's data lives.
pub struct Backend {
    pub database_url: String,
    /// Keeps the SQLite file (and any test files) alive.
    pub dir: tempfile::TempDir,
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl Backend {
    /// A fresh SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = format!("sqlite://{}", dir.path().join("chatsync.db").display());
        Self { database_url, dir }
    }

    /// A fresh database on the PostgreSQL server of `CHATSYNC_TEST_POSTGRES_URL`. Without that
    /// variable the test fails, or is skipped (`None`, recorded) with `CHATSYNC_ALLOW_SKIP=1`.
    pub async fn postgres() -> Option<Self> {
        let Ok(base) = std::env::var("CHATSYNC_TEST_POSTGRES_URL") else {
            skip_or_fail(&POSTGRES);
            return None;
        };
        let name = format!(
            "chatsync_test_{}_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst),
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("x")
        );
        let admin = sea_orm::Database::connect(&base)
            .await
            .expect("connect to CHATSYNC_TEST_POSTGRES_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let (server, _) = base
            .rsplit_once('/')
            .expect("postgres URL has a database path");
        Some(Self {
            database_url: format!("{server}/{name}"),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}

/// A session entry for the configuration.
pub fn session(id: &str, source: &str, settings: serde_json::Value) -> SessionConfig {
    SessionConfig {
        id: id.into(),
        source: source.into(),
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

/// A `whatsapp-export` session over `path`.
pub fn whatsapp_session(id: &str, path: &Path) -> SessionConfig {
    session(id, "whatsapp-export", serde_json::json!({"path": path}))
}

/// A `local` session.
pub fn local_session(id: &str) -> SessionConfig {
    session(id, "local", serde_json::json!({}))
}

/// The samples shipped with the project, in the source tree.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the server with these sessions on `backend`.
    pub async fn spawn(backend: &Backend, sessions: Vec<SessionConfig>) -> Self {
        Self::spawn_with(backend, sessions, |_| {}).await
    }

    /// Starts the server, letting the test adjust the configuration first.
    pub async fn spawn_with(
        backend: &Backend,
        sessions: Vec<SessionConfig>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        init_tracing();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url: backend.database_url.clone(),
            sessions,
            ..Config::default()
        };
        adjust(&mut config);
        wait_for_sqlite_release(&config.database_url).await;
        let app = Application::build(config).await.expect("server builds");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            url: format!("http://{addr}"),
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn channel(&self) -> Channel {
        for _ in 0..50 {
            if let Ok(channel) = Channel::from_shared(self.url.clone())
                .expect("url")
                .connect()
                .await
            {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {} does not accept connections", self.url);
    }

    /// A client without credentials.
    pub async fn client(&self) -> ChatSyncServiceClient<Channel> {
        ChatSyncServiceClient::new(self.channel().await)
    }

    /// Stops the server (as SIGTERM would) and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// SQLite: waits until no server holds the database's lock file (`FILE.lock`, see
/// `storage::lock_sqlite_file`), at most [`HANG_GUARD`]. A test that stops a server and starts
/// another on the same file needs it: a task the stopped server spawned may hold its store, and
/// with it the lock, a moment after the server returns (in a real process, exiting ends them),
/// so the new server waits for the lock itself, as a restart must.
async fn wait_for_sqlite_release(database_url: &str) {
    let Some(path) = database_url.strip_prefix("sqlite://") else {
        return;
    };
    let path = PathBuf::from(format!("{path}.lock"));
    if !path.exists() {
        return;
    }
    let released = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.lock()?;
        file.unlock()
    });
    tokio::time::timeout(HANG_GUARD, released)
        .await
        .expect("the previous server releases the SQLite file's lock")
        .expect("lock task")
        .expect("lock the SQLite file");
}

/// A token entry.
pub fn token(secret: &str, sessions: &[&str]) -> TokenConfig {
    TokenConfig::inline(secret, sessions)
}

/// Starts (or attaches to) a sync run and returns its frame stream.
pub async fn start_sync(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    limit_per_chat: Option<u32>,
) -> tonic::Streaming<pb::SyncChatsResponse> {
    client
        .sync_chats(pb::SyncChatsRequest {
            session_id: session_id.into(),
            limit_per_chat,
            since: None,
        })
        .await
        .expect("SyncChats starts")
        .into_inner()
}

/// The next frame of a sync stream, which must not have ended.
pub async fn next_frame(stream: &mut tonic::Streaming<pb::SyncChatsResponse>) -> pb::SyncProgress {
    stream
        .message()
        .await
        .expect("SyncChats frame")
        .expect("the stream has not ended")
        .progress
        .expect("frame has progress")
}

/// GetSyncStatus of a session, which must succeed.
pub async fn sync_status(
    client: &ChatSyncServiceClient<Channel>,
    session_id: &str,
) -> pb::GetSyncStatusResponse {
    client
        .clone()
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: session_id.into(),
        })
        .await
        .expect("GetSyncStatus")
        .into_inner()
}

/// Runs SyncChats to the end and returns every frame.
pub async fn sync_frames(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    limit_per_chat: Option<u32>,
) -> Vec<pb::SyncProgress> {
    let mut stream = start_sync(client, session_id, limit_per_chat).await;
    let mut frames = Vec::new();
    while let Some(response) = stream.message().await.expect("SyncChats frame") {
        frames.push(response.progress.expect("frame has progress"));
    }
    frames
}

/// Every message of a session (or chat), paging through ListMessages.
pub async fn all_messages(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    chat_id: &str,
) -> Vec<pb::Message> {
    let mut messages = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .list_messages(pb::ListMessagesRequest {
                session_id: session_id.into(),
                chat_id: chat_id.into(),
                after_seq,
                limit: 1000,
                before_seq: 0,
            })
            .await
            .expect("ListMessages")
            .into_inner();
        messages.extend(page.messages);
        after_seq = page.next_seq;
        if !page.has_more {
            return messages;
        }
    }
}

/// Every chat of a session.
pub async fn all_chats(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
) -> Vec<pb::Chat> {
    client
        .list_chats(pb::ListChatsRequest {
            session_id: session_id.into(),
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("ListChats")
        .into_inner()
        .chats
}

/// Sends a text message to a chat.
pub async fn send(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    chat_id: &str,
    text: &str,
    client_message_id: &str,
) -> Result<pb::SendMessageResponse, tonic::Status> {
    client
        .send_message(pb::SendMessageRequest {
            session_id: session_id.into(),
            chat_id: chat_id.into(),
            text: text.into(),
            client_message_id: client_message_id.into(),
            attachments: Vec::new(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Writes an Android-layout export with `n` messages, one a minute from 2023-01-13 08:00,
/// texts `"{label} message {i}"` (i from 1).
pub fn write_android_chat(dir: &Path, name: &str, label: &str, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 1..=n {
        let minutes = i as i64 - 1;
        let at = chrono::NaiveDate::from_ymd_opt(2023, 1, 13)
            .and_then(|d| d.and_hms_opt(8, 0, 0))
            .expect("date")
            + chrono::Duration::minutes(minutes);
        let sender = if i % 2 == 0 { "Ana" } else { "Ben" };
        text.push_str(&format!(
            "{} - {sender}: {label} message {i}\n",
            at.format("%d/%m/%Y, %H:%M")
        ));
    }
    let path = dir.join(format!("WhatsApp Chat with {name}.txt"));
    std::fs::write(&path, text).expect("write export");
    path
}

/// The stage of a frame.
pub fn stage(frame: &pb::SyncProgress) -> SyncStage {
    SyncStage::try_from(frame.stage).expect("known stage")
}

/// Waits until `check` holds, polling; fails after [`HANG_GUARD`] (a hang, not a slow machine).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {HANG_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs one grpc-web call over plain HTTP/1.1 (as a browser would, optionally from another
/// origin) and returns the whole response, lower-cased. `message` is the encoded protobuf.
pub async fn grpc_web_post(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
    message: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{origin}Content-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(&body).await.expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).to_lowercase()
}

/// Reads a subscription until an event has reached seq `until` (a `ready` counts), skipping
/// heartbeats; failing after [`HANG_GUARD`].
pub async fn read_until(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    until: u64,
) -> Vec<pb::SubscribeMessagesResponse> {
    use pb::subscribe_messages_response::Event;
    let mut events = Vec::new();
    // Heartbeats must not keep a test waiting forever for a seq that never comes.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("events in time")
            .expect("stream ok")
            .expect("stream open");
        let reached = event.seq;
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            events.push(event);
        }
        if reached >= until {
            return events;
        }
    }
}

/// `writers` concurrent writers on the local session `session_id`, each sending `each`
/// messages to its own chat `room{w}` (texts `w{w} {i}`, idempotency keys `w{w}-{i}`).
pub fn spawn_writers(
    client: &ChatSyncServiceClient<Channel>,
    session_id: &str,
    writers: usize,
    each: usize,
) -> Vec<JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let mut client = client.clone();
            let session_id = session_id.to_owned();
            tokio::spawn(async move {
                for i in 0..each {
                    send(
                        &mut client,
                        &session_id,
                        &format!("room{w}"),
                        &format!("w{w} {i}"),
                        &format!("w{w}-{i}"),
                    )
                    .await
                    .expect("send");
                }
            })
        })
        .collect()
}

/// The lowercase hex SHA-256 of `bytes`, as attachments and GetMedia name a blob.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// What a test needs from outside the repository, and what happens when it is missing.

/// Something a test needs that is not in the repository: a service, a tool or data.
pub struct Requirement {
    /// What is missing, as the failure message names it.
    pub what: &'static str,
    /// How to provide it.
    pub how: &'static str,
}

/// A PostgreSQL server for the PostgreSQL half of the suite.
pub const POSTGRES: Requirement = Requirement {
    what: "PostgreSQL (CHATSYNC_TEST_POSTGRES_URL is not set)",
    how: "set CHATSYNC_TEST_POSTGRES_URL to a database on a server where the user may CREATE \
          DATABASE, e.g. postgres://postgres@127.0.0.1:5432/postgres (scripts/test creates a run \
          database on CHATSYNC_TEST_POSTGRES_ADMIN_URL and sets it)",
};

/// The shared Synapse homeserver of the Matrix tests.
pub const SYNAPSE: Requirement = Requirement {
    what: "a Matrix homeserver (CHATSYNC_TEST_SYNAPSE_DIR is not set)",
    how: "run `scripts/synapse start target/synapse` and set \
          CHATSYNC_TEST_SYNAPSE_DIR=$PWD/target/synapse (scripts/test does both)",
};

/// `buf`, for `buf curl`.
pub const BUF: Requirement = Requirement {
    what: "buf (not at $CHATSYNC_BUF, .tools/node_modules/.bin/buf or on PATH)",
    how: "run scripts/test once (it installs buf into .tools/), or set CHATSYNC_BUF to a buf \
          binary",
};

/// The real-export corpus of the conformance tests.
pub const CORPUS: Requirement = Requirement {
    what: "the real-export corpus (no MANIFEST.tsv in ../shared/realchats or $CHATSYNC_REALCHATS)",
    how: "put the corpus at ../shared/realchats next to the repository, or set \
          CHATSYNC_REALCHATS to its folder",
};

/// The shared homeserver `scripts/test` starts (`CHATSYNC_TEST_SYNAPSE_DIR`). Without it the test
/// fails, or is skipped (`None`, recorded) with `CHATSYNC_ALLOW_SKIP=1`.
pub fn shared_homeserver() -> Option<synapse::Homeserver> {
    let homeserver = synapse::Homeserver::from_env();
    if homeserver.is_none() {
        skip_or_fail(&SYNAPSE);
    }
    homeserver
}

/// `buf`: `$CHATSYNC_BUF`, `.tools/node_modules/.bin/buf` (installed by `scripts/test`) or on
/// PATH. Without it the test fails, or is skipped (`None`, recorded) with
/// `CHATSYNC_ALLOW_SKIP=1`.
pub fn buf() -> Option<PathBuf> {
    let found = [
        std::env::var_os("CHATSYNC_BUF").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/buf")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .or_else(|| {
        std::process::Command::new("buf")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| PathBuf::from("buf"))
    });
    if found.is_none() {
        skip_or_fail(&BUF);
    }
    found
}

/// The real-export corpus (`$CHATSYNC_REALCHATS`, else `../shared/realchats` beside the
/// repository), with its `MANIFEST.tsv`. Without it the test fails, or is skipped (`None`,
/// recorded) with `CHATSYNC_ALLOW_SKIP=1`.
pub fn realchats() -> Option<PathBuf> {
    let dir = std::env::var_os("CHATSYNC_REALCHATS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/realchats"));
    if dir.join("MANIFEST.tsv").is_file() {
        return Some(dir);
    }
    skip_or_fail(&CORPUS);
    None
}

/// The one place a test decides what a missing requirement means. Without
/// `CHATSYNC_ALLOW_SKIP=1` it fails the test, naming what is missing and how to provide it.
/// With it, the skip is said on stderr and appended to the skip list ([`skip_list`]), and the
/// caller returns without checking anything.
#[track_caller]
pub fn skip_or_fail(missing: &Requirement) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test thread)")
        .to_owned();
    if std::env::var("CHATSYNC_ALLOW_SKIP").as_deref() != Ok("1") {
        panic!(
            "{test} needs {}: {}. Or set CHATSYNC_ALLOW_SKIP=1 to skip it (skips are recorded \
             in {})",
            missing.what,
            missing.how,
            skip_list().display()
        );
    }
    let line = format!("{test}: skipped, missing {}\n", missing.what);
    eprint!("{line}");
    let path = skip_list();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("record the skip in {}: {e}", path.display()));
}

/// Where skips are recorded, one line each (`TEST: skipped, missing WHAT`):
/// `$CHATSYNC_SKIP_FILE`, else `test-skips.txt` in cargo's temporary directory for
/// integration tests (`target/tmp/`). Lines are appended; `scripts/test` empties the file
/// before `cargo test` and prints it afterwards.
pub fn skip_list() -> PathBuf {
    std::env::var_os("CHATSYNC_SKIP_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-skips.txt"))
}
