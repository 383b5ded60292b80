//! GetSnapshot (one consistent read, then SubscribeMessages from its head seq) and SyncChats
//! `since`, through the public gRPC surface, on SQLite and PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::common::*;
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    a_snapshot_has_exact_frames_newest_chat_first_with_unread_counts,
    a_snapshot_honours_since_limit_and_the_chat_filter,
    a_snapshot_then_subscribe_misses_nothing_and_repeats_nothing_under_four_writers,
    sync_chats_since_imports_only_the_window_and_a_later_full_run_is_not_skipped,
    matrix_sync_since_backfills_only_the_window,
);

type Client = ChatSyncServiceClient<Channel>;

/// 2023-01-13 08:00 UTC plus `minutes`, the times [`write_android_chat`] gives its lines.
fn at(minutes: i64) -> pbjson_types::Timestamp {
    let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 13)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .expect("date")
        .and_utc()
        + chrono::Duration::minutes(minutes);
    pbjson_types::Timestamp {
        seconds: start.timestamp(),
        nanos: 0,
    }
}

async fn snapshot(
    client: &mut Client,
    request: pb::GetSnapshotRequest,
) -> Result<Vec<pb::GetSnapshotResponse>, tonic::Status> {
    let mut stream = client.get_snapshot(request).await?.into_inner();
    let mut frames = Vec::new();
    while let Some(frame) = stream.message().await? {
        frames.push(frame);
    }
    Ok(frames)
}

fn request(session_id: &str) -> pb::GetSnapshotRequest {
    pb::GetSnapshotRequest {
        session_id: session_id.into(),
        ..Default::default()
    }
}

fn texts(messages: &[pb::Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

/// Three exported chats: Ana (3 messages, the last at 08:02), Ben (5, the last at 08:04) and
/// Cy (1, at 08:00), synced whole; then Ben's second message is marked READ. Returns the
/// chat ids by name.
async fn three_chats(client: &mut Client, dir: &Path) -> HashMap<String, String> {
    write_android_chat(dir, "Ana", "ana", 3);
    write_android_chat(dir, "Ben", "ben", 5);
    write_android_chat(dir, "Cy", "cy", 1);
    let frames = sync_frames(client, "wa", Some(0)).await;
    assert_eq!(stage(frames.last().expect("frames")), SyncStage::Completed);
    let ids: HashMap<String, String> = all_chats(client, "wa")
        .await
        .into_iter()
        .map(|chat| (chat.name, chat.chat_id))
        .collect();
    let ben = all_messages(client, "wa", &ids["Ben"]).await;
    client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: "wa".into(),
            message_id: ben[1].id,
            status: pb::MessageStatus::Read as i32,
            ..Default::default()
        })
        .await
        .expect("READ");
    ids
}

async fn a_snapshot_has_exact_frames_newest_chat_first_with_unread_counts(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn(&backend, vec![whatsapp_session("wa", dir.path())]).await;
    let mut client = app.client().await;
    let ids = three_chats(&mut client, dir.path()).await;
    let head = sync_status(&client, "wa").await.head_seq;

    let frames = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            limit_per_chat: Some(2),
            ..request("wa")
        },
    )
    .await
    .expect("GetSnapshot");

    // Newest chat first (by its newest message), each frame at the same head.
    let names: Vec<&str> = frames
        .iter()
        .map(|f| f.chat.as_ref().expect("chat").name.as_str())
        .collect();
    assert_eq!(names, ["Ben", "Ana", "Cy"]);
    assert!(frames.iter().all(|f| f.head_seq == head && f.n_chats == 3));
    let expected = [
        ("Ben", vec!["ben message 4", "ben message 5"], true, 3),
        ("Ana", vec!["ana message 2", "ana message 3"], true, 3),
        ("Cy", vec!["cy message 1"], false, 1),
    ];
    for (frame, (name, want, has_more, unread)) in frames.iter().zip(expected) {
        let chat = frame.chat.as_ref().expect("chat");
        assert_eq!(chat.chat_id, ids[name]);
        assert_eq!(texts(&frame.messages), want, "{name}");
        assert_eq!(frame.has_more, has_more, "{name}");
        // Ben's message 2 is READ: it reads message 1 too, and 3 to 5 stay unread.
        assert_eq!(frame.unread_count, unread, "{name}");
        // The messages are the stored ones, whole.
        let stored = all_messages(&mut client, "wa", &chat.chat_id).await;
        assert_eq!(
            frame.messages,
            stored[stored.len() - want.len()..],
            "{name}"
        );
    }
}

async fn a_snapshot_honours_since_limit_and_the_chat_filter(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn(
        &backend,
        vec![whatsapp_session("wa", dir.path()), local_session("empty")],
    )
    .await;
    let mut client = app.client().await;
    let ids = three_chats(&mut client, dir.path()).await;

    // since 08:03: Ben's last two; Ana and Cy still listed, with no messages.
    let frames = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            since: Some(at(3)),
            ..request("wa")
        },
    )
    .await
    .expect("since");
    let got: Vec<(&str, Vec<&str>, bool)> = frames
        .iter()
        .map(|f| {
            (
                f.chat.as_ref().expect("chat").name.as_str(),
                texts(&f.messages),
                f.has_more,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Ben", vec!["ben message 4", "ben message 5"], false),
            ("Ana", vec![], false),
            ("Cy", vec![], false),
        ]
    );

    // since and limit together: the newest of the window only.
    let frames = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            since: Some(at(1)),
            limit_per_chat: Some(1),
            chat_ids: vec![ids["Ben"].clone()],
            ..request("wa")
        },
    )
    .await
    .expect("since + limit + filter");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].n_chats, 1);
    assert_eq!(texts(&frames[0].messages), ["ben message 5"]);
    assert!(frames[0].has_more, "ben 2 to 4 are in the window too");

    // limit 0: the chat list and unread counts only.
    let frames = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            limit_per_chat: Some(0),
            ..request("wa")
        },
    )
    .await
    .expect("limit 0");
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.messages.is_empty() && !f.has_more));
    assert_eq!(
        frames.iter().map(|f| f.unread_count).collect::<Vec<_>>(),
        [3, 3, 1]
    );

    // The default limit is 50: every message of these small chats.
    let frames = snapshot(&mut client, request("wa")).await.expect("default");
    assert_eq!(
        frames.iter().map(|f| f.messages.len()).collect::<Vec<_>>(),
        [5, 3, 1]
    );

    // A session without chats still gives one frame with the head.
    let frames = snapshot(&mut client, request("empty"))
        .await
        .expect("empty");
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].head_seq, frames[0].n_chats), (0, 1));
    assert!(frames[0].chat.is_none());

    // Errors.
    let error = |result: Result<Vec<pb::GetSnapshotResponse>, tonic::Status>| {
        result.expect_err("an error").code()
    };
    let too_many = pb::GetSnapshotRequest {
        limit_per_chat: Some(1_001),
        ..request("wa")
    };
    assert_eq!(
        error(snapshot(&mut client, too_many).await),
        Code::InvalidArgument
    );
    let bad_time = pb::GetSnapshotRequest {
        since: Some(pbjson_types::Timestamp {
            seconds: 0,
            nanos: -1,
        }),
        ..request("wa")
    };
    assert_eq!(
        error(snapshot(&mut client, bad_time).await),
        Code::InvalidArgument
    );
    let unknown_chat = pb::GetSnapshotRequest {
        chat_ids: vec!["nope".into()],
        ..request("wa")
    };
    assert_eq!(
        error(snapshot(&mut client, unknown_chat).await),
        Code::NotFound
    );
    assert_eq!(
        error(snapshot(&mut client, request("nope")).await),
        Code::NotFound
    );
    assert_eq!(
        error(snapshot(&mut client, request("")).await),
        Code::InvalidArgument
    );
}

async fn a_snapshot_then_subscribe_misses_nothing_and_repeats_nothing_under_four_writers(
    backend: Backend,
) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    for i in 0..20 {
        send(
            &mut client,
            "n",
            "room",
            &format!("before {i}"),
            &format!("b{i}"),
        )
        .await
        .expect("send");
    }
    const PER_WRITER: usize = 60;
    let writers = spawn_writers(&client, "n", 4, PER_WRITER);
    // Take the snapshot while the writers run (once they have begun).
    eventually("the writers to begin", || {
        let client = client.clone();
        async move { sync_status(&client, "n").await.head_seq > 30 }
    })
    .await;
    let frames = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            limit_per_chat: Some(1_000),
            ..request("n")
        },
    )
    .await
    .expect("GetSnapshot");
    let head = frames[0].head_seq;
    assert!(frames.iter().all(|f| f.head_seq == head));
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "n".into(),
            chat_ids: vec![],
            after_seq: Some(head),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    for writer in writers {
        writer.await.expect("writer");
    }
    let last = sync_status(&client, "n").await.head_seq;
    eprintln!("snapshot at seq {head} of {last}");
    let events = read_until(&mut stream, last).await;

    // The snapshot is exactly storage at its head: per chat, every message up to it.
    let mut in_snapshot: HashSet<String> = HashSet::new();
    for frame in &frames {
        let chat = frame.chat.as_ref().expect("chat");
        let stored: Vec<pb::Message> = all_messages(&mut client, "n", &chat.chat_id)
            .await
            .into_iter()
            .filter(|m| m.seq <= head)
            .collect();
        assert_eq!(
            frame.messages, stored,
            "chat {} at seq {head}",
            chat.chat_id
        );
        assert!(!frame.has_more);
        for message in &frame.messages {
            assert!(in_snapshot.insert(message.client_message_id.clone()));
        }
    }
    // The subscription continues at head + 1, with no gap and no duplicate.
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| !matches!(e.event, Some(Event::Ready(_))))
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (head + 1..=last).collect::<Vec<u64>>());
    let mut live: HashSet<String> = HashSet::new();
    for event in &events {
        if let Some(Event::MessageCreated(message)) = &event.event {
            assert!(message.seq > head);
            assert!(live.insert(message.client_message_id.clone()), "once");
        }
    }
    assert!(in_snapshot.is_disjoint(&live), "no message in both");
    let all: HashSet<String> = in_snapshot.union(&live).cloned().collect();
    let expected: HashSet<String> = (0..20)
        .map(|i| format!("b{i}"))
        .chain((0..4).flat_map(|w| (0..PER_WRITER).map(move |i| format!("w{w}-{i}"))))
        .collect();
    assert_eq!(all, expected, "every message, in the snapshot or live");
}

fn sync_with(
    session_id: &str,
    limit_per_chat: Option<u32>,
    since: Option<pbjson_types::Timestamp>,
) -> pb::SyncChatsRequest {
    pb::SyncChatsRequest {
        session_id: session_id.into(),
        limit_per_chat,
        since,
    }
}

/// Runs SyncChats to its end; returns the new messages of the COMPLETED frame.
async fn run_sync(client: &mut Client, request: pb::SyncChatsRequest) -> u64 {
    let mut stream = client
        .sync_chats(request)
        .await
        .expect("SyncChats")
        .into_inner();
    let mut last = None;
    while let Some(frame) = stream.message().await.expect("frame") {
        last = frame.progress;
    }
    let last = last.expect("frames");
    assert_eq!(stage(&last), SyncStage::Completed);
    last.total_messages_synced
}

async fn sync_chats_since_imports_only_the_window_and_a_later_full_run_is_not_skipped(
    backend: Backend,
) {
    let dir = tempfile::tempdir().expect("dir");
    // 10 messages each, 08:00 to 08:09.
    write_android_chat(dir.path(), "Ana", "ana", 10);
    write_android_chat(dir.path(), "Ben", "ben", 10);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("wa", dir.path())]).await;
    let mut client = app.client().await;
    let stored = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            let mut texts: Vec<String> = all_messages(&mut client, "wa", "")
                .await
                .into_iter()
                .map(|m| m.text)
                .collect();
            texts.sort();
            texts
        }
    };
    let numbered = |label: &str, range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|i| format!("{label} message {i}")).collect()
    };

    // since 08:05 with a limit of 3: the 3 newest of the window.
    assert_eq!(
        run_sync(&mut client, sync_with("wa", Some(3), Some(at(5)))).await,
        6
    );
    let mut want: Vec<String> = [numbered("ana", 8..=10), numbered("ben", 8..=10)].concat();
    want.sort();
    assert_eq!(stored(&mut client).await, want);

    // since alone (the whole window): the rest of 08:05 on.
    assert_eq!(
        run_sync(&mut client, sync_with("wa", Some(0), Some(at(5)))).await,
        4
    );
    let mut want: Vec<String> = [numbered("ana", 6..=10), numbered("ben", 6..=10)].concat();
    want.sort();
    assert_eq!(stored(&mut client).await, want);

    // A full run afterwards is not skipped as if the files had been imported whole.
    assert_eq!(
        run_sync(&mut client, sync_with("wa", Some(0), None)).await,
        10
    );
    let mut want: Vec<String> = [numbered("ana", 1..=10), numbered("ben", 1..=10)].concat();
    want.sort();
    assert_eq!(stored(&mut client).await, want);

    // Messages 1 to 5 were stored last (higher seqs than 6 to 10): a snapshot still gives each
    // chat's newest messages by when they were sent.
    let frames = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            limit_per_chat: Some(3),
            ..request("wa")
        },
    )
    .await
    .expect("GetSnapshot");
    assert_eq!(frames.len(), 2);
    for frame in &frames {
        let name = frame.chat.as_ref().expect("chat").name.to_lowercase();
        let label = if name.contains("ana") { "ana" } else { "ben" };
        assert_eq!(
            texts(&frame.messages),
            numbered(label, 8..=10),
            "{name}: the newest three by sent_at, oldest first"
        );
        assert!(frame.has_more);
    }

    // Now the files are recorded as imported whole: a windowed run adds nothing.
    assert_eq!(
        run_sync(&mut client, sync_with("wa", Some(0), Some(at(2)))).await,
        0
    );
    assert_eq!(
        run_sync(&mut client, sync_with("wa", Some(0), None)).await,
        0
    );
    assert_eq!(stored(&mut client).await.len(), 20);
}

/// Matrix against the real Synapse (needs one, as the `matrix` tests do): backfill with
/// `since` stores only the events the homeserver dates at or after it.
async fn matrix_sync_since_backfills_only_the_window(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = me.create_room(Some("Window"), &[&bob]).await;
    for i in 1..=5 {
        bob.post(&room, &format!("old {i}")).await;
    }
    for i in 1..=5 {
        bob.post(&room, &format!("new {i}")).await;
    }
    // The homeserver's own dates decide the window.
    let events = me.messages(&room).await;
    let dated: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["content"]["body"].as_str().unwrap_or_default().to_owned(),
                e["origin_server_ts"].as_i64().expect("origin_server_ts"),
            )
        })
        .collect();
    let since_ms = dated
        .iter()
        .find(|(text, _)| text == "new 1")
        .expect("new 1")
        .1;
    let in_window: Vec<String> = dated
        .iter()
        .filter(|(_, ts)| *ts >= since_ms)
        .map(|(text, _)| text.clone())
        .collect();
    assert!(in_window.len() < dated.len(), "old 1 is older than new 1");
    let since = pbjson_types::Timestamp {
        seconds: since_ms.div_euclid(1000),
        nanos: (since_ms.rem_euclid(1000) * 1_000_000) as i32,
    };

    let token_file = backend.dir.path().join("mx.token");
    std::fs::write(&token_file, format!("{}\n", me.token)).expect("token file");
    let config = session(
        "mx",
        "matrix",
        serde_json::json!({
            "homeserver": hs.url, "user_id": me.user_id, "access_token_file": token_file,
        }),
    );
    let app = TestApp::spawn(&backend, vec![config]).await;
    let mut client = app.client().await;
    let texts = |client: &Client| {
        let mut client = client.clone();
        async move {
            all_messages(&mut client, "mx", "")
                .await
                .into_iter()
                .map(|m| m.text)
                .collect::<Vec<String>>()
        }
    };

    // With a limit too: the newest 2 of the window.
    assert_eq!(
        run_sync(&mut client, sync_with("mx", Some(2), Some(since))).await,
        2
    );
    assert_eq!(texts(&client).await, ["new 4", "new 5"]);
    // The whole window.
    run_sync(&mut client, sync_with("mx", Some(0), Some(since))).await;
    let mut stored = texts(&client).await;
    stored.sort();
    let mut want = in_window.clone();
    want.sort();
    assert_eq!(stored, want);
    // Without a window: everything.
    run_sync(&mut client, sync_with("mx", Some(0), None)).await;
    let stored: HashSet<String> = texts(&client).await.into_iter().collect();
    let all: HashSet<String> = dated.into_iter().map(|(text, _)| text).collect();
    assert_eq!(stored, all);
}
