//! `chatsync mirror` (issue 21): the real binary keeps a real SQLite file in step with a real
//! server over loopback gRPC. The file is compared with the server's listings row for row
//! (`chatsync::client::mirror::read_file` reads it back into the generated types); the mirror
//! is killed with SIGKILL at random points while writers send, edit, react and delete; and an
//! offline gap of 1,000 changes is caught up without a snapshot. Tests wait on the file's
//! `sync_state` and on process exits, never on time. Each test runs against a server on SQLite
//! and one on PostgreSQL (the mirror's own file is SQLite either way).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::*;
use chatsync::client::mirror::{LocalContents, read_file};
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

on_both_backends!(
    a_mirror_of_a_synced_corpus_session_equals_the_servers_listings,
    a_mirror_killed_at_ten_random_points_ends_equal_to_the_server_with_no_duplicate,
    a_mirror_catches_up_1000_changes_after_an_offline_gap_without_a_snapshot,
    the_mirror_sends_its_token_and_a_refusal_ends_it_without_retrying,
    a_live_mirror_retries_with_backoff_until_the_server_is_up,
);

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_chatsync")
}

/// `chatsync mirror SESSION --to FILE --server URL ARGS…` as a child process.
fn mirror_process(url: &str, session: &str, file: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(binary())
        .args(["mirror", session, "--to"])
        .arg(file)
        .args(["--server", url])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chatsync mirror")
}

/// Runs `chatsync mirror … --once --json ARGS` to its end: its summary line and its stderr.
async fn mirror_once(url: &str, session: &str, file: &Path, args: &[&str]) -> (Value, String) {
    let mut all = vec!["--once", "--json"];
    all.extend_from_slice(args);
    let child = mirror_process(url, session, file, &all);
    let output = tokio::time::timeout(HANG_GUARD, child.wait_with_output())
        .await
        .expect("the mirror ends in time")
        .expect("mirror output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "mirror failed: {stderr}");
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary line: {e}: {stdout:?} (stderr {stderr})"));
    (summary, stderr)
}

/// The file's `sync_state.head_seq`, `None` before its first snapshot is committed.
async fn local_head(file: &Path) -> Option<u64> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file);
    let mut db = sqlx::SqliteConnection::connect_with(&options).await.ok()?;
    let head: Option<i64> = sqlx::query_scalar("SELECT head_seq FROM sync_state")
        .fetch_optional(&mut db)
        .await
        .ok()?;
    db.close().await.ok();
    head.map(|h| h as u64)
}

/// What the server holds of a session, listed as a client would, in the order
/// [`read_file`] reads the file: chats, messages, contacts and participants by seq.
async fn server_contents(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
) -> (
    Vec<pb::Chat>,
    Vec<pb::Message>,
    Vec<pb::Contact>,
    Vec<pb::Participant>,
) {
    let mut chats = all_chats(client, session_id).await;
    chats.sort_by(|a, b| (a.seq, &a.chat_id).cmp(&(b.seq, &b.chat_id)));
    let messages = all_messages(client, session_id, "").await;
    let mut contacts = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .list_contacts(pb::ListContactsRequest {
                session_id: session_id.into(),
                after_seq,
                limit: 1000,
            })
            .await
            .expect("ListContacts")
            .into_inner();
        contacts.extend(page.contacts);
        after_seq = page.next_seq;
        if !page.has_more {
            break;
        }
    }
    contacts.sort_by(|a, b| (a.seq, &a.contact_id).cmp(&(b.seq, &b.contact_id)));
    let mut participants = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .list_participants(pb::ListParticipantsRequest {
                session_id: session_id.into(),
                chat_id: String::new(),
                after_seq,
                limit: 1000,
            })
            .await
            .expect("ListParticipants")
            .into_inner();
        participants.extend(page.participants);
        after_seq = page.next_seq;
        if !page.has_more {
            break;
        }
    }
    participants.sort_by(|a, b| {
        (a.seq, &a.chat_id, &a.contact_id).cmp(&(b.seq, &b.chat_id, &b.contact_id))
    });
    (chats, messages, contacts, participants)
}

/// Asserts that the file holds exactly what the server lists, row for row, at the server's
/// head; returns the file's contents.
async fn assert_file_equals_server(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    file: &Path,
) -> LocalContents {
    let local = read_file(file).await.expect("read the mirror file");
    let (chats, messages, contacts, participants) = server_contents(client, session_id).await;
    let head = sync_status(client, session_id).await.head_seq;
    let state = local.state.clone().expect("the file has a sync_state");
    assert_eq!(state.head_seq, head, "the file is at the server's head");
    assert_eq!(local.chats, chats, "chats row for row");
    assert_eq!(local.messages.len(), messages.len(), "as many messages");
    for (mine, theirs) in local.messages.iter().zip(&messages) {
        assert_eq!(mine, theirs, "message {} row for row", theirs.id);
    }
    assert_eq!(local.contacts, contacts, "contacts row for row");
    assert_eq!(local.participants, participants, "participants row for row");
    local
}

/// A folder of links to the corpus' WhatsApp exports (one chat each), as the conformance test
/// builds it, or `None` when the corpus is missing (and skipping is allowed).
fn corpus_folder(backend: &Backend) -> Option<PathBuf> {
    let dir = realchats()?;
    let folder = backend.dir.path().join("realchats");
    std::fs::create_dir_all(&folder).expect("dir");
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    for line in manifest.lines().skip(1) {
        let mut fields = line.split('\t');
        let (Some(file), Some(format)) = (fields.next(), fields.nth(4)) else {
            continue;
        };
        if format.starts_with("whatsapp") {
            std::os::unix::fs::symlink(dir.join(file), folder.join(file.replace('/', "__")))
                .expect("symlink");
        }
    }
    Some(folder)
}

async fn a_mirror_of_a_synced_corpus_session_equals_the_servers_listings(backend: Backend) {
    let Some(folder) = corpus_folder(&backend) else {
        return;
    };
    let app = TestApp::spawn(&backend, vec![whatsapp_session("real", &folder)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "real", Some(0)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    let server_messages = all_messages(&mut client, "real", "").await;
    assert!(server_messages.len() > 500, "the corpus is synced");

    // Everything in one snapshot (no corpus chat has more than 1,000 messages).
    let file = backend.dir.path().join("whole.db");
    let (summary, _) = mirror_once(&app.url, "real", &file, &["--limit-per-chat", "1000"]).await;
    assert_eq!(summary["snapshot"], true, "{summary}");
    let local = assert_file_equals_server(&mut client, "real", &file).await;
    assert!(!local.contacts.is_empty(), "contacts are mirrored");
    assert!(!local.participants.is_empty(), "participants are mirrored");

    // A second run finds nothing new and takes no snapshot.
    let (again, _) = mirror_once(&app.url, "real", &file, &[]).await;
    assert_eq!(again["snapshot"], false, "{again}");
    assert_eq!(again["events"], 0, "{again}");
    assert_eq!(
        read_file(&file)
            .await
            .expect("read")
            .state
            .map(|s| s.snapshots),
        Some(1)
    );

    // Three messages per chat, then the rest paged in chat by chat with --backfill.
    let small = backend.dir.path().join("small.db");
    mirror_once(&app.url, "real", &small, &["--limit-per-chat", "3"]).await;
    let partial = read_file(&small).await.expect("read");
    assert!(
        partial.messages.len() < server_messages.len(),
        "{} of {} messages before the backfill",
        partial.messages.len(),
        server_messages.len()
    );
    for chat in &partial.chats {
        let output = tokio::process::Command::new(binary())
            .args(["mirror", "real", "--to"])
            .arg(&small)
            .args(["--server", &app.url, "--backfill", &chat.chat_id])
            .output()
            .await
            .expect("run the backfill");
        assert!(
            output.status.success(),
            "backfill of {}: {}",
            chat.chat_id,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_file_equals_server(&mut client, "real", &small).await;

    // A chat the file does not hold is refused, naming it.
    let output = tokio::process::Command::new(binary())
        .args(["mirror", "real", "--to"])
        .arg(&small)
        .args(["--server", &app.url, "--backfill", "no-such-chat"])
        .output()
        .await
        .expect("run the backfill");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no chat \"no-such-chat\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A small xorshift generator: the kill points are random, and the seed is printed so a
/// failing run can be repeated (`MIRROR_SEED`).
struct Random(u64);

impl Random {
    fn new() -> Self {
        let seed = std::env::var("MIRROR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| (uuid::Uuid::new_v4().as_u128() as u64) | 1);
        eprintln!("mirror kill test: MIRROR_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Sends, edits, reacts to and deletes messages of the local session `notes`: `rounds`
/// rounds over three chats. Returns how many changes (seqs) it made at least.
async fn churn(mut client: ChatSyncServiceClient<Channel>, writer: usize, rounds: usize) -> u64 {
    let mut changes = 0;
    let mut mine = Vec::new();
    let mut deleted = std::collections::HashSet::new();
    for i in 0..rounds {
        let sent = send(
            &mut client,
            "notes",
            &format!("room{}", i % 3),
            &format!("writer {writer} message {i}"),
            &format!("w{writer}-{i}"),
        )
        .await
        .expect("send");
        mine.push(sent.message.expect("message").id);
        changes += 1;
        let edit = mine[i / 2];
        if i % 2 == 1 && !deleted.contains(&edit) {
            client
                .edit_message(pb::EditMessageRequest {
                    session_id: "notes".into(),
                    message_id: edit,
                    text: format!("writer {writer} edit {i}"),
                    request_id: String::new(),
                })
                .await
                .expect("edit");
            changes += 1;
        }
        let react = mine[i.saturating_sub(1)];
        if i % 3 == 2 && !deleted.contains(&react) {
            client
                .react_to_message(pb::ReactToMessageRequest {
                    session_id: "notes".into(),
                    message_id: react,
                    emoji: ["👍", "🎉", "❤️"][(i / 3) % 3].into(),
                    request_id: String::new(),
                })
                .await
                .expect("react");
            changes += 1;
        }
        if i % 7 == 6 && deleted.insert(mine[i - 3]) {
            client
                .delete_message(pb::DeleteMessageRequest {
                    session_id: "notes".into(),
                    message_id: mine[i - 3],
                    request_id: String::new(),
                })
                .await
                .expect("delete");
            changes += 1;
        }
    }
    changes
}

async fn a_mirror_killed_at_ten_random_points_ends_equal_to_the_server_with_no_duplicate(
    backend: Backend,
) {
    let app = TestApp::spawn(&backend, vec![local_session("notes")]).await;
    let mut client = app.client().await;
    send(&mut client, "notes", "room0", "before the mirror", "first")
        .await
        .expect("send");
    let file = backend.dir.path().join("notes.db");
    let mut random = Random::new();

    // Two writers churn while the mirror is killed and restarted.
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(churn(client.clone(), w, 150)))
        .collect();
    let mut kill_points: Vec<u64> = (0..9).map(|_| 1 + random.below(400)).collect();
    kill_points.sort_unstable();
    let mut killed_with_state = 0;
    // The first kill is at once: during the start-up or the first snapshot.
    for (round, point) in std::iter::once(None)
        .chain(kill_points.into_iter().map(Some))
        .enumerate()
    {
        let mut child = mirror_process(&app.url, "notes", &file, &[]);
        if let Some(point) = point {
            eventually(
                &format!("round {round}: the file reaching seq {point}"),
                || {
                    let file = file.clone();
                    async move { local_head(&file).await.is_some_and(|h| h >= point) }
                },
            )
            .await;
            killed_with_state += 1;
        }
        // SIGKILL: no clean shutdown, whatever the mirror was doing.
        child.start_kill().expect("kill -9");
        let status = child.wait().await.expect("wait");
        assert!(!status.success(), "round {round}: the mirror was killed");
    }
    assert_eq!(killed_with_state, 9);
    let mut changes = 1;
    for writer in writers {
        changes += writer.await.expect("writer");
    }

    // One more run to the head: the file equals the server, and nothing is doubled.
    let (summary, stderr) = mirror_once(&app.url, "notes", &file, &[]).await;
    assert!(!stderr.contains("warning"), "{stderr}");
    let local = assert_file_equals_server(&mut client, "notes", &file).await;
    let state = local.state.expect("state");
    assert!(state.head_seq >= changes, "{} < {changes}", state.head_seq);
    assert_eq!(
        state.snapshots, 1,
        "one snapshot only: every restart resumed from the stored seq ({summary})"
    );
    let mut ids: Vec<&str> = local
        .messages
        .iter()
        .map(|m| m.client_message_id.as_str())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "no message appears twice");
    assert_eq!(all, 1 + 2 * 150);
    assert!(
        local
            .messages
            .iter()
            .any(|m| m.edited && !m.earlier_texts.is_empty()),
        "edits are mirrored"
    );
    assert!(
        local.messages.iter().any(|m| !m.reactions.is_empty()),
        "reactions are mirrored"
    );
    assert!(
        local
            .messages
            .iter()
            .any(|m| m.kind == pb::MessageKind::Deleted as i32),
        "deletions are mirrored"
    );
}

async fn a_mirror_catches_up_1000_changes_after_an_offline_gap_without_a_snapshot(
    backend: Backend,
) {
    let app = TestApp::spawn(&backend, vec![local_session("notes")]).await;
    let mut client = app.client().await;
    for i in 0..20 {
        send(
            &mut client,
            "notes",
            "general",
            &format!("early {i}"),
            &format!("early-{i}"),
        )
        .await
        .expect("send");
    }
    let file = backend.dir.path().join("notes.db");
    let media = backend.dir.path().join("notes-media");
    let media_arg = media.to_str().expect("path");
    let (first, _) = mirror_once(&app.url, "notes", &file, &["--media", media_arg]).await;
    assert_eq!(first["snapshot"], true, "{first}");
    let before = read_file(&file).await.expect("read").state.expect("state");
    assert_eq!(before.snapshots, 1);

    // The offline gap: 1,000 changes (800 sends by four writers, 199 reactions, one file).
    let head_before = sync_status(&client, "notes").await.head_seq;
    for writer in spawn_writers(&client, "notes", 4, 200) {
        writer.await.expect("writer");
    }
    let ids: Vec<u64> = all_messages(&mut client, "notes", "")
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    for (i, id) in ids.iter().take(199).enumerate() {
        client
            .react_to_message(pb::ReactToMessageRequest {
                session_id: "notes".into(),
                message_id: *id,
                emoji: if i % 2 == 0 { "👍" } else { "🎉" }.into(),
                request_id: String::new(),
            })
            .await
            .expect("react");
    }
    let bytes = b"\x89PNG\r\n\x1a\n a small picture".repeat(100);
    client
        .send_message(pb::SendMessageRequest {
            session_id: "notes".into(),
            chat_id: "general".into(),
            text: "a picture".into(),
            client_message_id: "picture".into(),
            attachments: vec![pb::AttachmentUpload {
                file_name: "dot.png".into(),
                mime_type: String::new(),
                data: bytes.clone(),
            }],
            reply_to_message_id: 0,
        })
        .await
        .expect("send a file");
    let head_after = sync_status(&client, "notes").await.head_seq;
    assert!(
        head_after - head_before >= 1000,
        "{} changes",
        head_after - head_before
    );

    // Resume: it catches up from the stored seq, with no snapshot.
    let (resumed, _) = mirror_once(&app.url, "notes", &file, &["--media", media_arg]).await;
    assert_eq!(resumed["snapshot"], false, "{resumed}");
    assert_eq!(resumed["events"], head_after - head_before, "{resumed}");
    let local = assert_file_equals_server(&mut client, "notes", &file).await;
    let state = local.state.expect("state");
    assert_eq!(state.snapshots, 1, "no GetSnapshot since the first run");
    assert_eq!(state.events_applied, head_after - head_before);
    // The file's bytes are beside it, named by their SHA-256.
    let sha = hex_sha256(&bytes);
    assert_eq!(
        std::fs::read(media.join(&sha)).expect("the fetched file"),
        bytes
    );

    // A server that lost its history (a fresh database for the same session): the file's
    // seq is ahead of it, so the mirror says so and takes a new snapshot, never skipping.
    let fresh = if backend.is_postgres() {
        Backend::postgres()
            .await
            .expect("PostgreSQL, as for this test")
    } else {
        Backend::sqlite()
    };
    let other = TestApp::spawn(&fresh, vec![local_session("notes")]).await;
    let mut other_client = other.client().await;
    send(
        &mut other_client,
        "notes",
        "elsewhere",
        "a new start",
        "new",
    )
    .await
    .expect("send");
    let (again, stderr) = mirror_once(&other.url, "notes", &file, &[]).await;
    assert_eq!(again["snapshot"], true, "{again}");
    assert!(stderr.contains("is behind this file's seq"), "{stderr}");
    let local = assert_file_equals_server(&mut other_client, "notes", &file).await;
    assert_eq!(local.state.map(|s| s.snapshots), Some(2));
}

async fn the_mirror_sends_its_token_and_a_refusal_ends_it_without_retrying(backend: Backend) {
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.tokens = vec![token("mirror-secret", &["notes"])];
    })
    .await;
    let file = backend.dir.path().join("notes.db");

    // No token: UNAUTHENTICATED is not transient, so it ends at once with the server's word.
    let output = tokio::time::timeout(
        HANG_GUARD,
        mirror_process(&app.url, "notes", &file, &["--once"]).wait_with_output(),
    )
    .await
    .expect("the mirror ends in time")
    .expect("output");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    assert!(!stderr.contains("reconnecting"), "{stderr}");

    // With the token it mirrors the session.
    let (summary, _) = mirror_once(&app.url, "notes", &file, &["--token", "mirror-secret"]).await;
    assert_eq!(summary["snapshot"], true, "{summary}");
    // A file of one session refuses another.
    let output = tokio::process::Command::new(binary())
        .args(["mirror", "other", "--to"])
        .arg(&file)
        .args(["--server", &app.url, "--once", "--token", "mirror-secret"])
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("mirrors session \"notes\", not \"other\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn a_live_mirror_retries_with_backoff_until_the_server_is_up(backend: Backend) {
    use tokio::io::AsyncBufReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let file = backend.dir.path().join("notes.db");
    // Live (no --once), started before any server listens.
    let mut child = mirror_process(&url, "notes", &file, &[]);
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(HANG_GUARD, stderr.next_line())
        .await
        .expect("a line in time")
        .expect("read stderr")
        .expect("a line");
    assert!(
        line.contains("cannot reach chatsync") && line.contains("reconnecting in"),
        "{line}"
    );

    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.listen = format!("127.0.0.1:{port}").parse().expect("address");
    })
    .await;
    let mut client = app.client().await;
    send(
        &mut client,
        "notes",
        "general",
        "while the mirror waited",
        "waited",
    )
    .await
    .expect("send");
    let head = sync_status(&client, "notes").await.head_seq;
    eventually("the live mirror to reach the server's head", || {
        let file = file.clone();
        async move { local_head(&file).await == Some(head) }
    })
    .await;
    child.start_kill().expect("kill");
    child.wait().await.expect("wait");
    let local = read_file(&file).await.expect("read");
    assert_eq!(
        local
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["while the mirror waited"]
    );
}
