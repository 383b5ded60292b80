//! Faults, hostile input and shutdown (issue 8, section 3), through the public surface: zip
//! bombs beside a good export (the server as a process, its peak RSS read from /proc), a sync
//! run that panics (a source registered by this test), an unparsable Telegram file, SIGTERM
//! with 1,000 open streams and with a sync run in progress, kill -9 at seeded random points of
//! a long sync, and a server restart under load with 1,000 subscribers resuming from their
//! cursors.
//!
//! The process tests run on SQLite (a file per test): they check what the process does on a
//! signal, not the backend; the PostgreSQL side of a killed replica is in `cluster`.
//! The SIGTERM-mid-sync test runs on both (on PostgreSQL the run's lease matters).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::replica::Replica;
use crate::common::*;
use async_trait::async_trait;
use chatsync::config::SessionConfig;
use chatsync::grpc::pb;
use chatsync::model::{MessageKind, MessageStatus, NewMessage};
use chatsync::sources::{ChatHistory, Source, SourceChat, SourceContext, SourceError};
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

on_both_backends!(a_sync_run_stopped_by_sigterm_is_interrupted_and_the_next_run_finishes_it);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A small seeded generator (SplitMix64), so that a failing run can be repeated: the seed is
/// printed, and `CHATSYNC_TEST_SEED` sets it.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Self {
        let seed = std::env::var("CHATSYNC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (CHATSYNC_TEST_SEED={seed} repeats this run)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A free loopback port (for a server that must come back on the same address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Writes a server configuration on a SQLite file in `dir`; `extra` is more TOML (keys, then
/// `[[sessions]]` tables).
fn server_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("chatsync.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://{}\"\n{extra}",
            dir.join("chatsync.db").display()
        ),
    )
    .expect("write config");
    path
}

fn whatsapp_table(id: &str, exports: &Path) -> String {
    format!(
        "[[sessions]]\nid = \"{id}\"\nsource = \"whatsapp-export\"\npath = \"{}\"\n",
        exports.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Zip bombs.

/// A raw deflate stream (one block of fixed Huffman codes) that inflates to `len` bytes of
/// `a`: one literal, then matches of 258 bytes at distance 1 (13 bits each, about 159:1).
fn deflate_bomb(len: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// Appends `count` bits of `value`, least significant first (deflate's bit order).
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
    }
    /// A Huffman code is sent most significant bit first: reversed for `put`.
    fn reversed(code: u64, count: u32) -> u64 {
        (0..count).fold(0, |out, i| out | (((code >> i) & 1) << (count - 1 - i)))
    }
    let literal_a = reversed(0x30 + u64::from(b'a'), 8);
    let length_258 = reversed(0xC5, 8); // symbol 285
    let distance_1 = reversed(0, 5); // distance code 0
    let mut bits = Bits {
        out: Vec::with_capacity((len / 258 * 13 / 8 + 16) as usize),
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE 01: fixed Huffman codes
    bits.put(literal_a, 8);
    let mut left = len - 1;
    while left >= 258 {
        bits.put(length_258, 8);
        bits.put(distance_1, 5);
        left -= 258;
    }
    for _ in 0..left {
        bits.put(literal_a, 8);
    }
    bits.put(0, 7); // end of block (symbol 256)
    if bits.n > 0 {
        bits.out.push(bits.acc as u8);
    }
    bits.out
}

/// Writes a zip holding one deflated entry `_chat.txt` whose headers declare
/// `declared_size` uncompressed bytes (true or not).
fn write_zip(path: &Path, deflated: &[u8], declared_size: u32) {
    let name = b"_chat.txt";
    let compressed = u32::try_from(deflated.len()).expect("small enough");
    let mut out = Vec::with_capacity(deflated.len() + 200);
    let u16le = |out: &mut Vec<u8>, v: u16| out.extend(v.to_le_bytes());
    let u32le = |out: &mut Vec<u8>, v: u32| out.extend(v.to_le_bytes());
    // Local file header.
    u32le(&mut out, 0x0403_4b50);
    u16le(&mut out, 20); // version needed
    u16le(&mut out, 0); // flags
    u16le(&mut out, 8); // deflate
    u16le(&mut out, 0); // time
    u16le(&mut out, 0x21); // date: 1980-01-01
    u32le(&mut out, 0); // crc-32 (never reached: the reader stops at a limit)
    u32le(&mut out, compressed);
    u32le(&mut out, declared_size);
    u16le(&mut out, name.len() as u16);
    u16le(&mut out, 0);
    out.extend(name);
    out.extend(deflated);
    // Central directory.
    let central = out.len() as u32;
    u32le(&mut out, 0x0201_4b50);
    u16le(&mut out, 20); // made by
    u16le(&mut out, 20); // needed
    u16le(&mut out, 0);
    u16le(&mut out, 8);
    u16le(&mut out, 0);
    u16le(&mut out, 0x21);
    u32le(&mut out, 0);
    u32le(&mut out, compressed);
    u32le(&mut out, declared_size);
    u16le(&mut out, name.len() as u16);
    u16le(&mut out, 0); // extra
    u16le(&mut out, 0); // comment
    u16le(&mut out, 0); // disk
    u16le(&mut out, 0); // internal attributes
    u32le(&mut out, 0); // external attributes
    u32le(&mut out, 0); // local header offset
    out.extend(name);
    let central_size = out.len() as u32 - central;
    // End of central directory.
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, 1);
    u16le(&mut out, 1);
    u32le(&mut out, central_size);
    u32le(&mut out, central);
    u16le(&mut out, 0);
    std::fs::write(path, out).expect("write zip");
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_bombs_beside_a_good_export_fail_their_chats_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    write_android_chat(&exports, "Good", "good", 200);
    // 1 GiB of text in a 6.6 MB zip, declared honestly: refused by its declared size.
    let gib = deflate_bomb(1 << 30);
    write_zip(&exports.join("WhatsApp Chat - Bomb.zip"), &gib, 1 << 30);
    // The same, declaring 1,000 bytes: refused while it inflates, at max_export_bytes.
    write_zip(&exports.join("WhatsApp Chat - Liar.zip"), &gib, 1_000);
    drop(gib);
    // 48 MiB (below the size limit) at about 159:1, declared honestly: refused by its ratio.
    let small = deflate_bomb(48 * MIB);
    write_zip(
        &exports.join("WhatsApp Chat - Ratio.zip"),
        &small,
        (48 * MIB) as u32,
    );
    // The same, declaring 1,000 bytes: refused while it inflates, by its ratio.
    write_zip(&exports.join("WhatsApp Chat - Squeeze.zip"), &small, 1_000);

    let config = server_config(
        dir.path(),
        0,
        &format!(
            "max_export_bytes = {}\n{}",
            64 * MIB,
            whatsapp_table("wa", &exports)
        ),
    );
    let server = Replica::start(&config).await;
    let idle = server.peak_rss_bytes();
    let mut client = server.client().await;
    let frames = sync_frames(&mut client, "wa", Some(0)).await;
    let peak = server.peak_rss_bytes();
    eprintln!(
        "zip bombs: server peak RSS {} MiB (idle {} MiB)",
        peak / MIB,
        idle / MIB
    );

    let last = frames.last().expect("frames");
    assert_eq!(stage(last), SyncStage::Completed, "{frames:?}");
    assert_eq!(last.total_messages_synced, 200, "the good chat is stored");
    assert!(last.error.contains("4 of 5 chats failed"), "{}", last.error);
    let failed = |prefix: &str| -> String {
        frames
            .iter()
            .find(|f| stage(f) == SyncStage::ChatFailed && f.chat_id.starts_with(prefix))
            .unwrap_or_else(|| panic!("no CHAT_FAILED for {prefix}: {frames:?}"))
            .error
            .clone()
    };
    for (prefix, limit) in [
        ("bomb-", "max_export_bytes"),
        ("liar-", "max_export_bytes"),
        ("ratio-", "max_export_compression_ratio"),
        ("squeeze-", "max_export_compression_ratio"),
    ] {
        let error = failed(prefix);
        assert!(error.contains(limit), "{prefix}: {error}");
        assert!(error.contains(".zip"), "names the file: {error}");
    }
    assert_eq!(all_messages(&mut client, "wa", "").await.len(), 200);
    // Reading the liar to its end alone would hold 1 GiB.
    assert!(
        peak < 512 * MIB,
        "peak RSS {} MiB: a bomb was read beyond its limit",
        peak / MIB
    );
}

// ---------------------------------------------------------------------------------------------
// A sync run that panics.

/// The kind of [`PanickingSource`], registered with `chatsync::sources::register`.
const PANICKING: &str = "test-panicking";

/// Holds `list_chats` until the test lets it go (so a second caller can attach first).
static RELEASE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
/// Whether the next `list_chats` panics.
static PANIC_NEXT: AtomicBool = AtomicBool::new(true);

/// A source whose first `list_chats` panics; later ones list one chat of three messages.
struct PanickingSource;

impl PanickingSource {
    fn build(_: &SessionConfig, _: &SourceContext) -> Result<Arc<dyn Source>, String> {
        Ok(Arc::new(Self))
    }
}

#[async_trait]
impl Source for PanickingSource {
    fn kind(&self) -> &'static str {
        PANICKING
    }

    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        RELEASE.acquire().await.expect("semaphore").forget();
        if PANIC_NEXT.swap(false, Ordering::SeqCst) {
            panic!("forced panic in a test source");
        }
        Ok(vec![SourceChat {
            chat_id: "c".into(),
            name: "C".into(),
            locator: "c".into(),
        }])
    }

    async fn fetch_history(
        &self,
        _chat: &SourceChat,
        _limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        let messages = (1..=3)
            .map(|i| NewMessage {
                provider_message_id: format!("p{i}"),
                client_message_id: None,
                sender: "Ana".into(),
                text: format!("message {i}"),
                kind: MessageKind::Text,
                status: MessageStatus::Sent,
                from_me: false,
                sent_at_ms: 1_700_000_000_000 + i,
                attachments: Vec::new(),
                ..NewMessage::default()
            })
            .collect();
        Ok(ChatHistory {
            messages,
            people: Default::default(),
            unplaced_lines: 0,
            content_sha256: None,
        })
    }
}

/// Reads a SyncChats stream to its end: the frames, and the status it ended with.
async fn frames_and_end(
    stream: &mut tonic::Streaming<pb::SyncChatsResponse>,
) -> (Vec<pb::SyncProgress>, Result<(), tonic::Status>) {
    let mut frames = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(response)) => frames.push(response.progress.expect("progress")),
            Ok(None) => return (frames, Ok(())),
            Err(status) => return (frames, Err(status)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_run_that_panics_ends_failed_and_the_session_syncs_again() {
    chatsync::sources::register(PANICKING, PanickingSource::build).expect("register");
    let backend = Backend::sqlite();
    let app = TestApp::spawn(
        &backend,
        vec![session("p", PANICKING, serde_json::json!({}))],
    )
    .await;
    let mut client = app.client().await;
    let mut first = start_sync(&mut client, "p", Some(0)).await;
    // The run is registered once the first call has answered: the second one attaches.
    let mut second = start_sync(&mut client, "p", Some(0)).await;
    let snapshot = next_frame(&mut second).await;
    assert_eq!(
        sync_status(&client, "p").await.state,
        pb::SyncState::Running as i32
    );
    RELEASE.add_permits(1);

    for stream in [&mut first, &mut second] {
        let (frames, end) = frames_and_end(stream).await;
        let last = frames.last().expect("a FAILED frame");
        assert_eq!(stage(last), SyncStage::Failed, "{frames:?}");
        assert_eq!(last.sync_id, snapshot.sync_id, "one run");
        assert!(last.error.contains("panic"), "says why: {}", last.error);
        let status = end.expect_err("the stream ends with an error");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    let status = sync_status(&client, "p").await;
    assert_eq!(status.state, pb::SyncState::Failed as i32);
    assert!(status.last_error.contains("panic"), "{}", status.last_error);

    // The session syncs again: a new run, to the end.
    RELEASE.add_permits(1);
    let frames = sync_frames(&mut client, "p", Some(0)).await;
    let last = frames.last().expect("frames");
    assert_eq!(stage(last), SyncStage::Completed, "{frames:?}");
    assert_ne!(last.sync_id, snapshot.sync_id);
    assert_eq!(last.total_messages_synced, 3);
    assert_eq!(
        sync_status(&client, "p").await.state,
        pb::SyncState::Succeeded as i32
    );
}

// ---------------------------------------------------------------------------------------------
// Telegram.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_result_json_that_does_not_parse_is_one_chat_failed() {
    let backend = Backend::sqlite();
    let broken = backend.dir.path().join("result.json");
    std::fs::write(&broken, br#"{"name": "Cut", "messages": [{"id": 1, "#).expect("write");
    let app = TestApp::spawn(
        &backend,
        vec![
            session("tg", "telegram-export", serde_json::json!({"path": broken})),
            session(
                "good",
                "telegram-export",
                serde_json::json!({"path": samples().join("telegram")}),
            ),
        ],
    )
    .await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "tg", Some(0)).await;
    let stages: Vec<SyncStage> = frames.iter().map(stage).collect();
    use SyncStage::*;
    assert_eq!(
        stages,
        vec![Started, ChatSaved, ChatFailed, Completed],
        "{frames:?}"
    );
    assert!(frames[2].error.contains("result.json"), "{:?}", frames[2]);
    assert!(
        !frames[2]
            .error
            .contains(&*backend.dir.path().to_string_lossy()),
        "no server paths in frames: {}",
        frames[2].error
    );
    // The server goes on serving other sessions.
    let good = sync_frames(&mut client, "good", Some(0)).await;
    assert_eq!(good.last().map(|f| f.total_messages_synced), Some(6));
}

// ---------------------------------------------------------------------------------------------
// SIGTERM.

/// Opens `n` subscriptions replaying from seq 0 over `connections` connections, each read
/// up to its `ready` marker.
async fn ready_subscriptions(
    url: &str,
    session_id: &str,
    n: usize,
    connections: usize,
) -> Vec<tonic::Streaming<pb::SubscribeMessagesResponse>> {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            Endpoint::from_shared(url.to_owned())
                .expect("url")
                .connect()
                .await
                .expect("connect"),
        );
    }
    let opens = (0..n).map(|i| {
        let channel = channels[i % connections].clone();
        let session_id = session_id.to_owned();
        tokio::spawn(async move {
            let mut stream = ChatSyncServiceClient::new(channel)
                .subscribe_messages(pb::SubscribeMessagesRequest {
                    session_id,
                    chat_ids: vec![],
                    after_seq: Some(0),
                })
                .await
                .expect("subscribe")
                .into_inner();
            loop {
                let event = stream.message().await.expect("event").expect("open");
                if matches!(event.event, Some(Event::Ready(_))) {
                    return stream;
                }
            }
        })
    });
    let mut streams = Vec::new();
    for open in opens.collect::<Vec<_>>() {
        streams.push(open.await.expect("subscription task"));
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_ends_1000_open_streams_unavailable_and_the_process_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = server_config(
        dir.path(),
        0,
        "[[sessions]]\nid = \"n\"\nsource = \"local\"\n",
    );
    let mut server = Replica::start(&config).await;
    let mut client = server.client().await;
    send(&mut client, "n", "c", "before", "m1")
        .await
        .expect("send");
    let streams = ready_subscriptions(&server.url, "n", 1_000, 10).await;

    let started = Instant::now();
    server.terminate();
    let ends: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(event)) if matches!(event.event, Some(Event::Heartbeat(_))) => {}
                        Ok(Some(event)) => return Err(format!("unexpected event {event:?}")),
                        Ok(None) => return Err("ended OK, without a status".to_owned()),
                        Err(status) => return Ok(status),
                    }
                }
            })
        })
        .collect();
    let exit = server.wait_exit(HANG_GUARD).await;
    let took = started.elapsed();
    eprintln!("SIGTERM with 1,000 open streams: the process exited after {took:?}");
    assert!(exit.success(), "a clean exit: {exit:?}");
    let mut unavailable = 0;
    for end in ends {
        let status = end
            .await
            .expect("stream task")
            .expect("the stream ends with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        unavailable += 1;
    }
    assert_eq!(unavailable, 1_000);
}

/// Exports for a long sync: `chats` chats of `each` messages (more chats than one import
/// transaction holds, so that a run commits many times).
fn long_exports(dir: &Path, chats: usize, each: usize) -> PathBuf {
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    for i in 0..chats {
        write_android_chat(&exports, &format!("Chat {i:03}"), &format!("c{i}"), each);
    }
    exports
}

/// Reads frames until one reports newly stored messages; returns it.
async fn until_stored(stream: &mut tonic::Streaming<pb::SyncChatsResponse>) -> pb::SyncProgress {
    loop {
        let frame = next_frame(stream).await;
        assert_ne!(
            stage(&frame),
            SyncStage::Completed,
            "the run ended too soon"
        );
        if stage(&frame) == SyncStage::MessagesSaved && frame.messages_synced > 0 {
            return frame;
        }
    }
}

/// On both backends: on PostgreSQL the run's lease must be released at shutdown too, or the
/// restarted server would see the run RUNNING until the lease expired.
async fn a_sync_run_stopped_by_sigterm_is_interrupted_and_the_next_run_finishes_it(
    backend: Backend,
) {
    const CHATS: usize = 40;
    const EACH: usize = 2_500;
    let dir = backend.dir.path();
    let exports = long_exports(dir, CHATS, EACH);
    let config = dir.join("chatsync.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\ndatabase_max_connections = 4\n{}",
            backend.database_url,
            whatsapp_table("wa", &exports)
        ),
    )
    .expect("write config");
    let mut server = Replica::start(&config).await;
    let mut client = server.client().await;
    let mut stream = start_sync(&mut client, "wa", Some(0)).await;
    until_stored(&mut stream).await;
    server.terminate();
    let (_, end) = frames_and_end(&mut stream).await;
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(server.wait_exit(HANG_GUARD).await.success(), "a clean exit");

    let server = Replica::start(&config).await;
    let mut client = server.client().await;
    let status = sync_status(&client, "wa").await;
    assert_eq!(
        status.state,
        pb::SyncState::Interrupted as i32,
        "{status:?}"
    );
    assert!(status.last_error.contains("shut down"), "{status:?}");
    let stored = status.message_count;
    assert!(
        stored > 0 && stored < (CHATS * EACH) as u64,
        "a partial run: {stored}"
    );
    let frames = sync_frames(&mut client, "wa", Some(0)).await;
    let last = frames.last().expect("frames");
    assert_eq!(stage(last), SyncStage::Completed);
    assert_eq!(last.total_messages_synced, (CHATS * EACH) as u64 - stored);
    let status = sync_status(&client, "wa").await;
    assert_eq!(status.state, pb::SyncState::Succeeded as i32);
    assert_eq!(status.message_count, (CHATS * EACH) as u64);
}

// ---------------------------------------------------------------------------------------------
// kill -9.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_ten_random_points_of_a_long_sync_then_every_message_once() {
    // 21 import transactions of 10,000 messages: a round stores at most two (the one its kill
    // point follows, and one in flight), so the run is still going at the tenth kill.
    const CHATS: usize = 42;
    const EACH: usize = 5_000;
    const KILLS: usize = 10;
    let mut rng = Rng::from_env("kill_9");
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = long_exports(dir.path(), CHATS, EACH);
    let config = server_config(dir.path(), 0, &whatsapp_table("wa", &exports));
    let mut stored_before = 0;
    for kill in 1..=KILLS {
        let mut server = Replica::start(&config).await;
        let mut client = server.client().await;
        let mut stream = start_sync(&mut client, "wa", Some(0)).await;
        // The kill point: after the run's first commit of new messages, then 0 to 3 more
        // frames (the rest of that transaction's frames, or into the next one).
        until_stored(&mut stream).await;
        let extra = rng.below(4);
        for _ in 0..extra {
            let frame = next_frame(&mut stream).await;
            assert_ne!(
                stage(&frame),
                SyncStage::Completed,
                "the run ended too soon"
            );
        }
        server.kill().await;

        let server = Replica::start(&config).await;
        let client = server.client().await;
        let status = sync_status(&client, "wa").await;
        eprintln!(
            "kill {kill}: {extra} frames after a commit; {} messages stored",
            status.message_count
        );
        assert_eq!(
            status.state,
            pb::SyncState::Interrupted as i32,
            "after kill {kill}: {status:?}"
        );
        assert!(
            status.message_count > stored_before,
            "the run made progress"
        );
        stored_before = status.message_count;
        // One process per SQLite file: this one is gone before the next starts.
        let mut server = server;
        server.kill().await;
    }
    let server = Replica::start(&config).await;
    let mut client = server.client().await;
    let frames = sync_frames(&mut client, "wa", Some(0)).await;
    let last = frames.last().expect("frames");
    assert_eq!(stage(last), SyncStage::Completed, "{last:?}");
    assert_eq!(
        last.total_messages_synced,
        (CHATS * EACH) as u64 - stored_before
    );
    let status = sync_status(&client, "wa").await;
    assert_eq!(status.state, pb::SyncState::Succeeded as i32);
    assert_eq!(status.message_count, (CHATS * EACH) as u64, "every message");
    assert_eq!(status.chat_count, CHATS as u64);
    // Every seq was taken once: one per chat created, one per message, one per contact (the
    // senders Ana and Ben), one per participant (both, in every chat), and one per run's end
    // (KILLS interrupted, then the one that succeeded).
    assert_eq!(
        status.head_seq,
        (CHATS * EACH + CHATS + 2 + 2 * CHATS + KILLS + 1) as u64,
        "{status:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reconnect storm.

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Change events received, in order of arrival.
    events: u64,
    /// The last seq received.
    cursor: u64,
    /// Events whose seq was not cursor + 1 (a gap or a duplicate).
    out_of_order: Vec<(u64, u64)>,
    /// How many times it (re)subscribed.
    subscriptions: u32,
}

/// A subscriber that holds its cursor: it subscribes from it, and after any error reconnects
/// with exponential backoff (50 ms doubling to 1 s, with jitter) and resumes from it, until
/// it has seen `done`'s head.
async fn subscriber(
    channel: Channel,
    seed: u64,
    ready: Arc<AtomicU64>,
    mut done: tokio::sync::watch::Receiver<Option<u64>>,
) -> Seen {
    let mut rng = Rng(seed);
    let mut seen = Seen::default();
    let mut backoff = Duration::from_millis(50);
    let finished = |seen: &Seen, done: &Option<u64>| done.is_some_and(|head| seen.cursor >= head);
    loop {
        if finished(&seen, &done.borrow()) {
            return seen;
        }
        seen.subscriptions += 1;
        let opened = ChatSyncServiceClient::new(channel.clone())
            .subscribe_messages(pb::SubscribeMessagesRequest {
                session_id: "n".into(),
                chat_ids: vec![],
                after_seq: Some(seen.cursor),
            })
            .await;
        if let Ok(response) = opened {
            let mut stream = response.into_inner();
            loop {
                if finished(&seen, &done.borrow()) {
                    return seen;
                }
                let next = tokio::select! {
                    next = stream.message() => next,
                    _ = done.changed() => continue,
                };
                match next {
                    Ok(Some(event)) => match event.event {
                        Some(Event::Ready(_)) => {
                            if seen.subscriptions == 1 {
                                ready.fetch_add(1, Ordering::SeqCst);
                            }
                            backoff = Duration::from_millis(50);
                        }
                        Some(Event::Heartbeat(_)) | None => {}
                        Some(_) => {
                            if event.seq != seen.cursor + 1 {
                                seen.out_of_order.push((seen.cursor, event.seq));
                            }
                            seen.events += 1;
                            seen.cursor = seen.cursor.max(event.seq);
                        }
                    },
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let jitter = Duration::from_millis(rng.below(backoff.as_millis() as u64 / 2 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_under_200_messages_a_second_loses_and_repeats_nothing_for_1000_subscribers() {
    const SUBSCRIBERS: usize = 1_000;
    const CONNECTIONS: usize = 50;
    const MESSAGES: u64 = 500;
    const RESTART_AFTER: u64 = 200;
    let mut rng = Rng::from_env("reconnect_storm");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = server_config(
        dir.path(),
        port,
        "[[sessions]]\nid = \"n\"\nsource = \"local\"\n",
    );
    let mut server = Replica::start(&config).await;
    let url = server.url.clone();

    let (done_tx, done) = tokio::sync::watch::channel(None);
    let ready = Arc::new(AtomicU64::new(0));
    let channels: Vec<Channel> = (0..CONNECTIONS)
        .map(|_| {
            Endpoint::from_shared(url.clone())
                .expect("url")
                .connect_lazy()
        })
        .collect();
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            tokio::spawn(subscriber(
                channels[i % CONNECTIONS].clone(),
                rng.next(),
                ready.clone(),
                done.clone(),
            ))
        })
        .collect();
    // Every subscriber holds a stream (and a cursor) before the traffic and the restart.
    eventually("every subscriber ready", || {
        let ready = ready.clone();
        async move { ready.load(Ordering::SeqCst) == SUBSCRIBERS as u64 }
    })
    .await;

    // The writer: 200 messages a second (paced by an interval), each retried with the same
    // idempotency key until the server (back up) accepts it.
    let (acknowledged_tx, mut acknowledged) = tokio::sync::watch::channel(0u64);
    let writer = {
        let channel = Endpoint::from_shared(url.clone())
            .expect("url")
            .connect_lazy();
        tokio::spawn(async move {
            let mut client = ChatSyncServiceClient::new(channel);
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            let mut retries = Vec::new();
            for i in 1..=MESSAGES {
                pace.tick().await;
                loop {
                    match send(
                        &mut client,
                        "n",
                        "storm",
                        &format!("m{i}"),
                        &format!("m{i}"),
                    )
                    .await
                    {
                        Ok(_) => break,
                        Err(status) => {
                            // While the server restarts: refused connections, streams cut
                            // off, UNAVAILABLE. Bounded, so that a real refusal fails.
                            retries.push(status.code());
                            assert!(retries.len() < 2_000, "too many failed sends: {status:?}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                acknowledged_tx.send_replace(i);
            }
            retries
        })
    };

    // Restart the server (SIGTERM, then the same address) once 200 messages are in.
    // Waits on the writer's progress itself: on a loaded machine 200 sends to a server
    // fanning out to 1,000 streams can take well over the `HANG_GUARD` `eventually` allows.
    tokio::time::timeout(
        Duration::from_secs(600),
        acknowledged.wait_for(|sent| *sent >= RESTART_AFTER),
    )
    .await
    .expect("200 messages acknowledged within 10 minutes")
    .expect("the writer is running");
    server.terminate();
    assert!(server.wait_exit(HANG_GUARD).await.success());
    let server = Replica::start(&config).await;
    let retries = writer.await.expect("writer");

    let mut client = server.client().await;
    let head = sync_status(&client, "n").await.head_seq;
    // One seq for the chat, one per message: each stored once.
    assert_eq!(head, MESSAGES + 1);
    let messages = all_messages(&mut client, "n", "storm").await;
    assert_eq!(messages.len() as u64, MESSAGES);
    done_tx.send(Some(head)).expect("subscribers wait");

    let mut resubscribed = 0;
    for (i, handle) in subscribers.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(120), handle)
            .await
            .unwrap_or_else(|_| panic!("subscriber {i} did not reach head {head}"))
            .expect("subscriber task");
        assert!(
            seen.out_of_order.is_empty(),
            "subscriber {i}: gaps or duplicates (cursor, seq): {:?}",
            seen.out_of_order
        );
        assert_eq!(seen.events, head, "subscriber {i}: every change once");
        assert_eq!(seen.cursor, head);
        if seen.subscriptions > 1 {
            resubscribed += 1;
        }
    }
    eprintln!(
        "reconnect storm: {resubscribed} of {SUBSCRIBERS} subscribers resumed after the restart; \
         the writer retried {} sends ({:?})",
        retries.len(),
        retries
            .iter()
            .map(|code| format!("{code:?}"))
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert_eq!(
        resubscribed, SUBSCRIBERS,
        "every subscriber was cut off by the restart and resumed"
    );
    assert!(!retries.is_empty(), "the writer met the restart");
}
