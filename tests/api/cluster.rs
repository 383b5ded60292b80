//! Concurrency and replicas: writers racing through gRPC on both backends, the same races
//! spread over two server processes on PostgreSQL, and three `chatsync serve` replicas on one
//! PostgreSQL database (fan-out across replicas, resume on another replica, one sync run per
//! session, a replica killed mid-run). SQLite refuses a second process.
//!
//! Every wait here waits for an event (a frame, a subscription event, a process's line), never
//! for time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::common::replica::Replica;
use crate::common::*;
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event as Ev;
use tonic::transport::Channel;

type Client = ChatSyncServiceClient<Channel>;

const SESSION: &str = "chat";

// ---------------------------------------------------------------------------------------------
// The races, over any number of servers (one client each).

/// 16 writers send the first messages of 4 chats that do not exist yet, 5 each, spread over
/// the servers. Every call succeeds; 4 chats and 80 messages are stored, with gapless seqs.
async fn race_first_sends(clients: &[Client]) {
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let mut client = clients[writer % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let chat = format!("new-{}", writer % 4);
                let key = format!("first-{writer}-{i}");
                send(
                    &mut client,
                    SESSION,
                    &chat,
                    &format!("hello {writer} {i}"),
                    &key,
                )
                .await
                .unwrap_or_else(|status| panic!("send {key} failed: {status:?}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let mut client = clients[0].clone();
    let chats: Vec<String> = all_chats(&mut client, SESSION)
        .await
        .into_iter()
        .map(|chat| chat.chat_id)
        .filter(|id| id.starts_with("new-"))
        .collect();
    assert_eq!(chats.len(), 4, "{chats:?}");
    for chat in &chats {
        assert_eq!(all_messages(&mut client, SESSION, chat).await.len(), 20);
    }
}

/// 8 concurrent SendMessage calls with one idempotency key: all succeed with the same
/// message, and exactly one of them stored it.
async fn race_retries(clients: &[Client]) {
    let mut tasks = Vec::new();
    for attempt in 0..8 {
        let mut client = clients[attempt % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            send(&mut client, SESSION, "retries", "only once", "the-one-key").await
        }));
    }
    let mut ids = HashSet::new();
    let mut originals = 0;
    for task in tasks {
        let answer = task
            .await
            .expect("retry task")
            .unwrap_or_else(|status| panic!("a retry failed: {status:?}"));
        ids.insert(answer.message.expect("message").id);
        if !answer.duplicate {
            originals += 1;
        }
    }
    assert_eq!(ids.len(), 1, "every retry gets the one message: {ids:?}");
    assert_eq!(originals, 1, "exactly one call stored it");
    let mut client = clients[0].clone();
    assert_eq!(all_messages(&mut client, SESSION, "retries").await.len(), 1);
}

/// 4 threads send READ, DELIVERED, DELIVERED and READ receipts for the same 200 messages.
/// Every call succeeds, every message ends READ, and no message's status ever went back.
async fn race_receipts(clients: &[Client]) {
    let mut client = clients[0].clone();
    let mut ids = Vec::new();
    for i in 0..200 {
        let sent = send(
            &mut client,
            SESSION,
            "receipts",
            &format!("m{i}"),
            &format!("r{i}"),
        )
        .await
        .expect("send");
        ids.push(sent.message.expect("message").id);
    }
    let statuses = [
        pb::MessageStatus::Read,
        pb::MessageStatus::Delivered,
        pb::MessageStatus::Delivered,
        pb::MessageStatus::Read,
    ];
    let mut tasks = Vec::new();
    for (thread, status) in statuses.into_iter().enumerate() {
        let mut client = clients[thread % clients.len()].clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for id in ids {
                client
                    .update_message_status(pb::UpdateMessageStatusRequest {
                        session_id: SESSION.into(),
                        message_id: id,
                        status: status as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|s| panic!("receipt for {id} failed: {s:?}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("receipt task");
    }
    let stored = all_messages(&mut client, SESSION, "receipts").await;
    assert_eq!(stored.len(), 200);
    let unread: Vec<u64> = stored
        .iter()
        .filter(|m| m.status != pb::MessageStatus::Read as i32)
        .map(|m| m.id)
        .collect();
    assert!(unread.is_empty(), "these ended below READ: {unread:?}");
    // The change log, in seq order, only ever moves each message forward.
    let mut last: HashMap<u64, i32> = HashMap::new();
    for event in replay(&mut client).await.0 {
        if let Some(Ev::StatusUpdated(update)) = event.event {
            let before = last.insert(update.message_id, update.status).unwrap_or(0);
            assert!(
                update.status > before,
                "message {} went from {before} to {}",
                update.message_id,
                update.status
            );
        }
    }
}

/// Replays the whole session: the events before `ready`, and the head it reports.
async fn replay(client: &mut Client) -> (Vec<pb::SubscribeMessagesResponse>, u64) {
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: Some(0),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let event = stream.message().await.expect("event").expect("open stream");
        match event.event {
            Some(Ev::Ready(ready)) => return (events, ready.head_seq),
            Some(Ev::Heartbeat(_)) => {}
            _ => events.push(event),
        }
    }
}

/// Every seq from 1 to the head was given to exactly one change.
async fn assert_gapless(client: &mut Client) {
    let (events, head) = replay(client).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=head).collect();
    assert_eq!(
        seqs, expected,
        "seqs are gapless and in order up to head {head}"
    );
}

async fn writers_race_without_failures_gaps_or_backward_statuses(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session(SESSION)]).await;
    let clients = [app.client().await];
    race_first_sends(&clients).await;
    race_retries(&clients).await;
    race_receipts(&clients).await;
    let mut client = clients[0].clone();
    assert_gapless(&mut client).await;
}

on_both_backends!(
    writers_race_without_failures_gaps_or_backward_statuses,
    a_former_lease_holder_cannot_write
);

// ---------------------------------------------------------------------------------------------
// Server processes.

/// The replicas' `lease_secs`: short, so that the tests that wait for a lease to expire are
/// quick, yet long enough that a loaded machine renews in time (every third of it).
const LEASE: std::time::Duration = std::time::Duration::from_secs(4);

/// A replica configuration on `database_url` with the `chat` (local) session and a `wa`
/// (whatsapp-export) session over `exports`; leases of [`LEASE`].
fn replica_config(dir: &Path, database_url: &str, exports: &Path) -> PathBuf {
    let path = dir.join("replica.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\nlease_secs = {}\n\
             database_max_connections = 6\n\
             [[sessions]]\nid = \"{SESSION}\"\nsource = \"local\"\n\
             [[sessions]]\nid = \"wa\"\nsource = \"whatsapp-export\"\npath = \"{}\"\n",
            LEASE.as_secs(),
            exports.display()
        ),
    )
    .expect("write config");
    path
}

/// Starts `n` replicas at once (they race to migrate the fresh database).
async fn start_replicas(config: &Path, n: usize) -> Vec<Replica> {
    let starts: Vec<_> = (0..n)
        .map(|_| {
            let config = config.to_owned();
            tokio::spawn(async move { Replica::start(&config).await })
        })
        .collect();
    let mut replicas = Vec::new();
    for start in starts {
        replicas.push(start.await.expect("replica starts"));
    }
    replicas
}

/// [`start_replicas`] on the backend's database, with an empty exports directory (the `wa`
/// session has nothing to sync).
async fn start_replicas_without_exports(backend: &Backend, n: usize) -> Vec<Replica> {
    let exports = backend.dir.path().join("none");
    std::fs::create_dir_all(&exports).expect("dir");
    let config = replica_config(backend.dir.path(), &backend.database_url, &exports);
    start_replicas(&config, n).await
}

/// Messages in each regular chat: more than one import batch, so that each is stored (and
/// reported) before the run reads the next chat.
const REGULAR_MESSAGES: usize = 10_500;

/// Exports for the `wa` session: `regular` chats of [`REGULAR_MESSAGES`], then one held chat,
/// a named pipe: a sync run blocks on it until [`release`] writes it.
fn write_held_exports(dir: &Path, regular: usize) -> (PathBuf, PathBuf) {
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).expect("exports");
    for i in 0..regular {
        write_android_chat(
            &exports,
            &format!("Chat {i:02}"),
            &format!("c{i}"),
            REGULAR_MESSAGES,
        );
    }
    let held = exports.join("WhatsApp Chat with Zz Held.txt");
    let status = std::process::Command::new("mkfifo")
        .arg(&held)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    (exports, held)
}

/// Messages in the held chat once released.
const HELD_MESSAGES: usize = 500;

/// Writes the held chat into its pipe once a reader (a sync run) opens it.
fn release(held: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let scratch = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read(write_android_chat(
            scratch.path(),
            "Zz Held",
            "held",
            HELD_MESSAGES,
        ))
        .expect("read");
        // Opening for writing blocks until the run opens the pipe for reading.
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(&held)
            .expect("open pipe");
        std::io::Write::write_all(&mut pipe, &text).expect("write pipe");
    })
}

/// Reads frames until the run has stored every regular chat (it is then blocked on the held
/// one); returns the run's sync id.
async fn until_held(stream: &mut tonic::Streaming<pb::SyncChatsResponse>, regular: u32) -> String {
    loop {
        let frame = next_frame(stream).await;
        if stage(&frame) == SyncStage::MessagesSaved
            && frame.current_chat == regular
            && frame.messages_synced == REGULAR_MESSAGES as u64
        {
            return frame.sync_id;
        }
    }
}

/// Reads frames to the end; returns the last one, or the status the stream ended with.
async fn to_end(
    stream: &mut tonic::Streaming<pb::SyncChatsResponse>,
) -> Result<pb::SyncProgress, tonic::Status> {
    let mut last = None;
    loop {
        match stream.message().await {
            Ok(Some(response)) => last = response.progress,
            Ok(None) => return Ok(last.expect("at least one frame")),
            Err(status) => return Err(status),
        }
    }
}

/// The replica tests run one at a time, so that their processes' connections stay well within
/// the PostgreSQL server's `max_connections` (100 by default) whatever else runs.
static REPLICA_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_race_writers_retries_and_receipts_on_postgres() {
    let _one_at_a_time = REPLICA_TESTS.lock().await;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let replicas = start_replicas_without_exports(&backend, 2).await;
    let clients = [replicas[0].client().await, replicas[1].client().await];
    race_first_sends(&clients).await;
    race_retries(&clients).await;
    race_receipts(&clients).await;
    let mut client = clients[1].clone();
    assert_gapless(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_fan_out_resume_and_share_one_sync_run() {
    let _one_at_a_time = REPLICA_TESTS.lock().await;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (exports, held) = write_held_exports(backend.dir.path(), 2);
    let config = replica_config(backend.dir.path(), &backend.database_url, &exports);
    let replicas = start_replicas(&config, 3).await;
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }

    // A subscriber on A (on a connection of its own, read while the sends go on) hears
    // 3×300 messages sent concurrently through A, B and C.
    let mut subscriber = replicas[0]
        .client()
        .await
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: Some(0),
        })
        .await
        .expect("subscribe on A")
        .into_inner();
    loop {
        let event = subscriber.message().await.expect("event").expect("open");
        if matches!(event.event, Some(Ev::Ready(_))) {
            break;
        }
    }
    let collector = tokio::spawn(async move {
        let mut seqs = Vec::new();
        let mut created = HashSet::new();
        while created.len() < 900 {
            let event = subscriber.message().await.expect("event").expect("open");
            match &event.event {
                Some(Ev::Heartbeat(_)) => continue,
                Some(Ev::MessageCreated(message)) => {
                    assert!(created.insert(message.id), "message {} twice", message.id);
                }
                _ => {}
            }
            seqs.push(event.seq);
        }
        seqs
    });
    let mut senders = Vec::new();
    for (replica, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..300 {
                let key = format!("r{replica}-{i}");
                send(&mut client, SESSION, &format!("via-{replica}"), &key, &key)
                    .await
                    .unwrap_or_else(|s| panic!("send {key}: {s:?}"));
            }
        }));
    }
    for sender in senders {
        sender.await.expect("every send succeeds");
    }
    let seqs = collector.await.expect("the subscriber hears all 900");
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "no gap, no duplicate, rising seqs");
    let cursor = *seqs.last().expect("seqs");

    // The subscriber resumes on B from its cursor and hears exactly what came after it.
    for i in 0..10 {
        let key = format!("after-{i}");
        send(&mut clients[2], SESSION, "via-2", &key, &key)
            .await
            .expect("send after");
    }
    let mut resumed = clients[1]
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: Some(cursor),
        })
        .await
        .expect("resume on B")
        .into_inner();
    let mut texts = Vec::new();
    loop {
        let event = resumed.message().await.expect("event").expect("open");
        match event.event {
            Some(Ev::MessageCreated(message)) => {
                assert_eq!(event.seq, cursor + 1 + texts.len() as u64);
                texts.push(message.text);
            }
            Some(Ev::Ready(ready)) => {
                assert_eq!(ready.head_seq, cursor + 10);
                break;
            }
            _ => {}
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    assert_eq!(texts, expected);

    // SyncChats started on A and called on B: one run, the same sync_id, COMPLETED on both.
    let mut on_a = start_sync(&mut clients[0], "wa", Some(0)).await;
    let sync_id = until_held(&mut on_a, 2).await;
    let mut on_b = start_sync(&mut clients[1], "wa", Some(0)).await;
    let snapshot = next_frame(&mut on_b).await;
    assert_eq!(snapshot.sync_id, sync_id, "B attaches to A's run");
    release(held).await.expect("release");
    let last_a = to_end(&mut on_a).await.expect("A's stream ends OK");
    let last_b = to_end(&mut on_b).await.expect("B's stream ends OK");
    assert_eq!(stage(&last_a), SyncStage::Completed);
    assert_eq!(stage(&last_b), SyncStage::Completed);
    assert_eq!(last_b.sync_id, sync_id);
    assert_eq!(
        last_a.total_messages_synced,
        2 * REGULAR_MESSAGES as u64 + HELD_MESSAGES as u64
    );
    let status = sync_status(&clients[2], "wa").await;
    assert_eq!(status.state, pb::SyncState::Succeeded as i32);
    assert_eq!(
        status.message_count,
        2 * REGULAR_MESSAGES as u64 + HELD_MESSAGES as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_sync_run_is_interrupted_and_another_replica_finishes_it() {
    let _one_at_a_time = REPLICA_TESTS.lock().await;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (exports, held) = write_held_exports(backend.dir.path(), 2);
    let config = replica_config(backend.dir.path(), &backend.database_url, &exports);
    let mut replicas = start_replicas(&config, 2).await;
    let mut on_a_client = replicas[0].client().await;
    let mut b = replicas[1].client().await;

    let mut on_a = start_sync(&mut on_a_client, "wa", Some(0)).await;
    let sync_id = until_held(&mut on_a, 2).await;
    let mut on_b = start_sync(&mut b, "wa", Some(0)).await;
    assert_eq!(next_frame(&mut on_b).await.sync_id, sync_id);

    // kill -9 the holder mid-run: B's attached stream ends UNAVAILABLE once the lease expires.
    replicas[0].kill().await;
    let ended = to_end(&mut on_b)
        .await
        .expect_err("no outcome after the holder died");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    let status = sync_status(&b, "wa").await;
    assert_eq!(status.state, pb::SyncState::Interrupted as i32);
    assert_eq!(
        status.message_count,
        2 * REGULAR_MESSAGES as u64,
        "what A stored stays"
    );

    // A new run on B completes, and every message is stored exactly once.
    let mut again = start_sync(&mut b, "wa", Some(0)).await;
    let writer = release(held);
    let last = to_end(&mut again).await.expect("the new run ends OK");
    writer.await.expect("release");
    assert_eq!(stage(&last), SyncStage::Completed);
    assert_ne!(last.sync_id, sync_id, "a new run");
    assert_eq!(
        last.total_messages_synced, HELD_MESSAGES as u64,
        "only the held chat is new"
    );
    let status = sync_status(&b, "wa").await;
    assert_eq!(status.state, pb::SyncState::Succeeded as i32);
    assert_eq!(
        status.message_count,
        2 * REGULAR_MESSAGES as u64 + HELD_MESSAGES as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = dir.path().join("none");
    std::fs::create_dir_all(&exports).expect("dir");
    let database_url = format!("sqlite://{}", dir.path().join("one.db").display());
    let config = replica_config(dir.path(), &database_url, &exports);
    let first = Replica::start(&config).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatsync"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("run a second server");
    assert!(!second.status.success(), "the second server must not start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another chatsync process"),
        "says why: {stderr}"
    );
    // The first one still serves.
    let mut client = first.client().await;
    send(&mut client, SESSION, "still", "here", "k")
        .await
        .expect("first still serves");
}

// ---------------------------------------------------------------------------------------------
// Fencing: a former lease holder never writes.

/// A write through a store fenced by a lease whose tenure is over (it lapsed, or another
/// holder took it) is refused with nothing written, and cancels the holder's work; the new
/// holder's epoch is higher and its writes go through.
async fn a_former_lease_holder_cannot_write(backend: Backend) {
    use chatsync::error::Error;
    use chatsync::storage::{LeaseKind, Store};
    use tokio_util::sync::CancellationToken;

    let store = Store::connect(&backend.database_url)
        .await
        .expect("connect");
    store.ensure_session("s", "local").await.expect("session");
    let a = store
        .acquire_lease("s", LeaseKind::Live, "replica-a", 60_000)
        .await
        .expect("acquire")
        .expect("free lease");
    assert!(
        store
            .acquire_lease("s", LeaseKind::Live, "replica-b", 60_000)
            .await
            .expect("acquire")
            .is_none(),
        "held by A"
    );
    let a_lost = CancellationToken::new();
    let as_a = store.fenced(a.clone(), a_lost.clone());
    as_a.save_source_cursor("s", "a-1")
        .await
        .expect("A holds it");
    assert_eq!(
        store.source_cursor("s").await.unwrap().as_deref(),
        Some("a-1")
    );

    // A's tenure lapses (taken again for 0 ms: same holder, same epoch, already expired).
    let lapsed = store
        .acquire_lease("s", LeaseKind::Live, "replica-a", 0)
        .await
        .expect("acquire")
        .expect("A's own lease");
    assert_eq!(lapsed.epoch, a.epoch, "same holder, same tenure");
    let refused = as_a
        .save_source_cursor("s", "a-2")
        .await
        .expect_err("lapsed");
    assert!(matches!(refused, Error::LeaseLost(_)), "{refused:?}");
    assert!(a_lost.is_cancelled(), "A's work is told to stop");
    assert!(
        !store.renew_lease("s", &a, 60_000).await.expect("renew"),
        "a lapsed lease is never renewed"
    );

    // B takes over with the next epoch; A stays refused, B writes.
    let b = store
        .acquire_lease("s", LeaseKind::Live, "replica-b", 60_000)
        .await
        .expect("acquire")
        .expect("lapsed lease");
    assert_eq!(b.epoch, a.epoch + 1);
    let as_b = store.fenced(b.clone(), CancellationToken::new());
    as_b.save_source_cursor("s", "b-1")
        .await
        .expect("B holds it");
    let refused = as_a
        .save_source_cursor("s", "a-3")
        .await
        .expect_err("B holds it");
    assert!(matches!(refused, Error::LeaseLost(_)), "{refused:?}");
    assert_eq!(
        store.source_cursor("s").await.unwrap().as_deref(),
        Some("b-1")
    );

    // A release keeps the epoch: the next holder's is higher still, even A's own again.
    store.release_lease("s", &b).await.expect("release");
    let again = store
        .acquire_lease("s", LeaseKind::Live, "replica-a", 60_000)
        .await
        .expect("acquire")
        .expect("released lease");
    assert_eq!(again.epoch, b.epoch + 1);
    let refused = as_a
        .save_source_cursor("s", "a-4")
        .await
        .expect_err("old tenure");
    assert!(matches!(refused, Error::LeaseLost(_)), "{refused:?}");
}

/// GetSyncStatus, which must answer (any error fails the test) while another replica is
/// stalled or a writer holds the session's lock.
async fn status_while_stalled(client: &Client, session_id: &str) -> pb::GetSyncStatusResponse {
    client
        .clone()
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: session_id.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("GetSyncStatus answered {status:?} while a writer stalled"))
        .into_inner()
}

/// SyncChats, retried while it answers UNAVAILABLE (a write that waited past `lock_timeout`).
async fn start_sync_retrying(
    client: &mut Client,
    session_id: &str,
) -> tonic::Streaming<pb::SyncChatsResponse> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match client
            .sync_chats(pb::SyncChatsRequest {
                session_id: session_id.into(),
                limit_per_chat: Some(0),
                since: None,
            })
            .await
        {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
            }
            Err(status) => panic!("SyncChats: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_holder_never_freezes_its_session_and_never_writes_after_it_resumes() {
    use sea_orm::sqlx::{Connection, Executor};

    let _one_at_a_time = REPLICA_TESTS.lock().await;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (exports, held) = write_held_exports(backend.dir.path(), 2);
    let config = replica_config(backend.dir.path(), &backend.database_url, &exports);
    let replicas = start_replicas(&config, 2).await;
    let mut a = replicas[0].client().await;
    let mut b = replicas[1].client().await;

    // A runs the sync; it stores the regular chats and waits on the held one.
    let mut on_a = start_sync(&mut a, "wa", Some(0)).await;
    let a_sync_id = until_held(&mut on_a, 2).await;
    let mut following = start_sync(&mut b, "wa", Some(0)).await;
    assert_eq!(next_frame(&mut following).await.sync_id, a_sync_id);

    // Pause A (SIGSTOP: a VM pause, a stop-the-world stall). B answers GetSyncStatus the whole
    // time, and its follower stream ends UNAVAILABLE once A's lease expired.
    replicas[0].pause();
    let watcher = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut states = Vec::new();
            loop {
                let status = status_while_stalled(&b, "wa").await;
                let state = pb::SyncState::try_from(status.state).expect("state");
                states.push(state);
                if state == pb::SyncState::Interrupted {
                    return states;
                }
                // Ask again soon (a client polling; not a wait for an event).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let ended = to_end(&mut following)
        .await
        .expect_err("no outcome once the holder stalled");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    let states = tokio::time::timeout(HANG_GUARD, watcher)
        .await
        .expect("INTERRUPTED is reported")
        .expect("watcher");
    assert!(
        states
            .iter()
            .all(|s| matches!(s, pb::SyncState::Running | pb::SyncState::Interrupted)),
        "{states:?}"
    );

    // A writer stalled inside its transaction, holding the session's lock (as A would be had
    // the pause caught it mid-write). It holds the lock until the test lets the server end it,
    // so reads that answered before then did not wait for it: a read that waited would never
    // answer, and the test would hang (HANG_GUARD) instead of going on.
    let mut stalled = sea_orm::sqlx::PgConnection::connect(&backend.database_url)
        .await
        .expect("connect");
    stalled
        .execute("SET idle_in_transaction_session_timeout = 0")
        .await
        .expect("set");
    stalled.execute("BEGIN").await.expect("begin");
    stalled
        .execute("SELECT head_seq FROM sessions WHERE id = 'wa' FOR UPDATE")
        .await
        .expect("lock the session");
    for _ in 0..3 {
        let status = tokio::time::timeout(HANG_GUARD, status_while_stalled(&b, "wa"))
            .await
            .expect("GetSyncStatus waited for the session's lock");
        assert_eq!(status.state, pb::SyncState::Interrupted as i32);
    }
    // Now chatsync's idle limit of one lease: the server ends the transaction once it has been
    // idle that long, as it would end a stalled replica's.
    let idle_limit = format!(
        "SET idle_in_transaction_session_timeout = {}",
        LEASE.as_millis()
    );
    stalled
        .execute(sea_orm::sqlx::AssertSqlSafe(idle_limit))
        .await
        .expect("the stalled transaction still holds the lock");

    // The held chat, for B's run, in a plain file; A keeps waiting on the pipe, moved aside.
    let a_pipe = backend.dir.path().join("a-held.fifo");
    std::fs::rename(&held, &a_pipe).expect("move the pipe aside");
    write_android_chat(&exports, "Zz Held", "held", HELD_MESSAGES);
    // B starts a new run once the server ended the stalled transaction (or after answering
    // UNAVAILABLE past lock_timeout, and a retry), and completes it.
    let mut again = start_sync_retrying(&mut b, "wa").await;
    let last = to_end(&mut again).await.expect("B's run ends OK");
    assert_eq!(stage(&last), SyncStage::Completed);
    assert_ne!(last.sync_id, a_sync_id, "a new run");
    let ended = stalled.execute("SELECT 1").await;
    assert!(ended.is_err(), "the server ended the stalled transaction");

    // A resumes: its epoch is stale. The pipe now gives A's run a chat B never stored; A's run
    // stops without writing it, and the state never flips back.
    replicas[0].resume();
    let writer = tokio::task::spawn_blocking(move || {
        let scratch = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read(write_android_chat(
            scratch.path(),
            "Zz Held",
            "late",
            HELD_MESSAGES + 50,
        ))
        .expect("read");
        // Read and write: the open never waits for a reader (A's run may have stopped before
        // it opened the pipe), and the text fits the pipe's buffer.
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&a_pipe)
            .expect("open pipe");
        std::io::Write::write_all(&mut pipe, &text).expect("write pipe");
    });
    let ended = to_end(&mut on_a).await.expect_err("A's run has no outcome");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    writer.await.expect("pipe written");
    eventually("A's run stops", || {
        let a = a.clone();
        let sync_id = last.sync_id.clone();
        async move {
            let status = sync_status(&a, "wa").await;
            status.state == pb::SyncState::Succeeded as i32
                && status.progress.is_some_and(|p| p.sync_id == sync_id)
        }
    })
    .await;
    for client in [&a, &b] {
        let status = sync_status(client, "wa").await;
        assert_eq!(status.state, pb::SyncState::Succeeded as i32);
        assert_eq!(
            status.message_count,
            2 * REGULAR_MESSAGES as u64 + HELD_MESSAGES as u64,
            "every message once, and none from the former holder"
        );
    }
}

/// A replica's commit is announced to the cluster by `NOTIFY chatsync_heads, '<session>
/// <head>'` after it. A commit whose NOTIFY never went out (its replica died between the
/// commit and the NOTIFY, or the NOTIFY failed) still reaches a subscriber on another replica:
/// every replica re-reads its watched heads every `HEAD_REREAD_INTERVAL`. The writer of that
/// commit is a store in this process whose connections find a `pg_notify` that does nothing
/// before PostgreSQL's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_whose_notify_never_went_out_reaches_subscribers_on_other_replicas() {
    use chatsync::model::{MessageKind, NO_PEOPLE, NewMessage};
    use chatsync::storage::{ImportChat, Store};
    use sea_orm::sqlx::{Connection, Executor};

    let _one_at_a_time = REPLICA_TESTS.lock().await;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let replicas = start_replicas_without_exports(&backend, 1).await;
    let mut client = replicas[0].client().await;

    // A send through the replica is announced, with the head it committed.
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&backend.database_url)
        .await
        .expect("listen");
    listener.listen("chatsync_heads").await.expect("listen");
    send(&mut client, SESSION, "loud", "announced", "announced")
        .await
        .expect("send");
    let (_, head) = replay(&mut client).await;
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let notification = listener.recv().await.expect("notification");
            let (session, announced) = notification.payload().rsplit_once(' ').expect("payload");
            assert_eq!(session, SESSION);
            let announced: u64 = announced.parse().expect("head");
            assert!(announced <= head, "{announced} > {head}");
            if announced == head {
                return;
            }
        }
    })
    .await
    .expect("the send's NOTIFY");
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: Some(head),
        })
        .await
        .expect("subscribe")
        .into_inner();
    loop {
        let event = stream.message().await.expect("event").expect("open stream");
        if matches!(event.event, Some(Ev::Ready(_))) {
            break;
        }
    }

    let mut admin = sea_orm::sqlx::PgConnection::connect(&backend.database_url)
        .await
        .expect("connect");
    admin
        .execute(
            "CREATE SCHEMA silent; CREATE FUNCTION silent.pg_notify(text, text) RETURNS void \
             LANGUAGE sql AS $$ SELECT $$",
        )
        .await
        .expect("a pg_notify that does nothing");
    let separator = if backend.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let silent_url = format!(
        "{}{separator}options[search_path]=public,silent,pg_catalog",
        backend.database_url
    );
    let silent = Store::connect(&silent_url).await.expect("connect");
    let message = NewMessage {
        provider_message_id: "unannounced".into(),
        sender: "someone".into(),
        text: "committed, never notified".into(),
        kind: MessageKind::Text,
        sent_at_ms: 1_700_000_000_000,
        ..NewMessage::default()
    };
    let chat = ImportChat {
        chat_id: "quiet",
        name: "Quiet",
        messages: std::slice::from_ref(&message),
        may_be_stored: true,
        people: &NO_PEOPLE,
    };
    assert_eq!(
        silent.import(SESSION, &[chat]).await.expect("import"),
        vec![1]
    );

    let created = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let event = stream.message().await.expect("event").expect("open stream");
            if let Some(Ev::MessageCreated(created)) = event.event {
                return created;
            }
        }
    })
    .await
    .expect("the replica saw the commit at a head re-read");
    assert_eq!(created.text, "committed, never notified");
}

/// Reads a session's changes from the start, resubscribing from its cursor whenever the stream
/// ends (as a client does through an outage), until it has seen `messages` new messages.
/// Returns every change's seq, in the order received.
async fn follow_through_outages(mut client: Client, messages: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut seqs = Vec::new();
    let mut created = 0;
    let mut cursor = 0;
    while created < messages {
        assert!(tokio::time::Instant::now() < deadline, "subscriber hung");
        let opened = client
            .subscribe_messages(pb::SubscribeMessagesRequest {
                session_id: SESSION.into(),
                chat_ids: vec![],
                after_seq: Some(cursor),
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                // Retry with a short backoff while the database is away.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => panic!("subscriber hung at seq {cursor}"),
                Ok(Ok(Some(event))) => match event.event {
                    Some(Ev::Ready(_)) | Some(Ev::Heartbeat(_)) | None => {}
                    Some(other) => {
                        seqs.push(event.seq);
                        cursor = event.seq;
                        if matches!(other, Ev::MessageCreated(_)) {
                            created += 1;
                            if created == messages {
                                return seqs;
                            }
                        }
                    }
                },
                Ok(Ok(None)) => break,
                Ok(Err(status)) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    break;
                }
            }
        }
    }
    seqs
}

/// PostgreSQL restarts (`pg_ctl stop -m fast`, then start: connections cut, then refused)
/// while two writers send 300 messages each through two replicas and a subscriber follows each
/// replica. Every failed call answers UNAVAILABLE or ABORTED (never INTERNAL); each writer
/// retries with the same `client_message_id`, and every message is stored exactly once;
/// subscribers, resuming from their cursors, see every seq once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_under_sends_answers_only_retryable_codes_and_loses_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PER_WRITER: usize = 300;
    let _one_at_a_time = REPLICA_TESTS.lock().await;
    let server = Arc::new(crate::common::postgres_server::PostgresServer::start());
    server.create_database("chatsync");
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("exports");
    let config = replica_config(dir.path(), &server.url("chatsync"), &exports);
    let replicas = start_replicas(&config, 2).await;
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }
    let followers: Vec<_> = clients
        .iter()
        .map(|client| tokio::spawn(follow_through_outages(client.clone(), 2 * PER_WRITER)))
        .collect();

    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(writer, client)| {
            let mut client = client.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut refused = Vec::new();
                for i in 0..PER_WRITER {
                    let key = format!("w{writer}-{i}");
                    let deadline = tokio::time::Instant::now() + HANG_GUARD;
                    loop {
                        match send(&mut client, SESSION, "general", &key, &key).await {
                            Ok(_) => break,
                            Err(status) => {
                                refused.push((status.code(), status.message().to_owned()));
                                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                refused
            })
        })
        .collect();

    // Restart the database a third of the way through.
    eventually("a third of the sends", || {
        let sent = sent.clone();
        async move { sent.load(Ordering::SeqCst) >= 2 * PER_WRITER / 3 }
    })
    .await;
    let restart = server.clone();
    tokio::task::spawn_blocking(move || {
        restart.stop();
        restart.start_again();
    })
    .await
    .expect("restart");

    let mut refused = Vec::new();
    for writer in writers {
        refused.extend(writer.await.expect("writer"));
    }
    let not_retryable: Vec<_> = refused
        .iter()
        .filter(|(code, _)| !matches!(code, tonic::Code::Unavailable | tonic::Code::Aborted))
        .collect();
    assert!(
        not_retryable.is_empty(),
        "only UNAVAILABLE or ABORTED during the restart: {not_retryable:?}"
    );
    eprintln!(
        "database restart: {} calls answered UNAVAILABLE or ABORTED and were retried",
        refused.len()
    );

    let stored = all_messages(&mut clients[0], SESSION, "general").await;
    let keys: HashSet<String> = stored.iter().map(|m| m.client_message_id.clone()).collect();
    assert_eq!(stored.len(), 2 * PER_WRITER, "every message stored once");
    assert_eq!(keys.len(), 2 * PER_WRITER, "one message per key");
    for follower in followers {
        let seqs = tokio::time::timeout(HANG_GUARD, follower)
            .await
            .expect("subscriber finished")
            .expect("subscriber");
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "every seq once, in order, through the restart"
        );
    }
}
