//! The `matrix` source end to end, against a real Synapse (`scripts/synapse`): chatsync logs
//! in as one registered user; other registered users post, edit, redact and read in rooms
//! created through the client-server API. Each test runs on SQLite and on PostgreSQL.
//!
//! Needs `CHATSYNC_TEST_SYNAPSE_DIR` (the shared homeserver `scripts/test` starts); without it
//! the tests fail, or are skipped with `CHATSYNC_ALLOW_SKIP=1` (`common::shared_homeserver`).

use std::collections::HashSet;
use std::time::Instant;

use crate::common::synapse::{Homeserver, MatrixUser};
use crate::common::{
    Backend, HANG_GUARD, SyncStage, TestApp, all_chats, all_messages, eventually, on_both_backends,
    replica, send, session, shared_homeserver, stage, sync_frames, sync_status,
};
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use sea_orm::ConnectionTrait;
use tonic::transport::Channel;

on_both_backends!(
    sync_backfills_joined_rooms_oldest_first_and_a_second_sync_adds_nothing,
    live_messages_and_new_rooms_reach_subscribers,
    send_message_posts_once_and_its_echo_is_not_stored_twice,
    read_receipts_go_both_ways,
    edits_and_redactions_update_the_stored_message,
    a_homeserver_crash_loses_and_duplicates_nothing,
    a_chatsync_restart_resumes_from_the_stored_sync_token,
);

const SESSION: &str = "mx";

/// A `matrix` session for `user`, its token in a file under the backend's directory.
fn matrix_session(
    backend: &Backend,
    hs: &Homeserver,
    user: &MatrixUser,
) -> chatsync::config::SessionConfig {
    let token_file = backend.dir.path().join(format!("{}.token", SESSION));
    std::fs::write(&token_file, format!("{}\n", user.token)).expect("token file");
    session(
        SESSION,
        "matrix",
        serde_json::json!({
            "homeserver": hs.url, "user_id": user.user_id, "access_token_file": token_file,
        }),
    )
}

async fn start(
    backend: &Backend,
    hs: &Homeserver,
    user: &MatrixUser,
) -> (TestApp, ChatSyncServiceClient<Channel>) {
    let app = TestApp::spawn(backend, vec![matrix_session(backend, hs, user)]).await;
    let client = app.client().await;
    (app, client)
}

async fn source_state(client: &mut ChatSyncServiceClient<Channel>) -> pb::SourceState {
    pb::SourceState::try_from(sync_status(client, SESSION).await.source_state).expect("known state")
}

/// Waits until the live source is connected: from then on, posts arrive live.
async fn wait_up(client: &ChatSyncServiceClient<Channel>) {
    eventually("the matrix source to be UP", || {
        let mut client = client.clone();
        async move { source_state(&mut client).await == pb::SourceState::Up }
    })
    .await;
}

/// A subscription, read up to its `ready` marker.
async fn subscribe(
    client: &mut ChatSyncServiceClient<Channel>,
    after_seq: Option<u64>,
) -> (
    tonic::Streaming<pb::SubscribeMessagesResponse>,
    Vec<pb::SubscribeMessagesResponse>,
) {
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq,
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    let mut replay = Vec::new();
    loop {
        let event = next_event(&mut stream).await;
        if matches!(event.event, Some(Event::Ready(_))) {
            return (stream, replay);
        }
        replay.push(event);
    }
}

/// The next event that is not a heartbeat (bounded wait).
async fn next_event(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
) -> pb::SubscribeMessagesResponse {
    // One bound for the whole wait: heartbeats do not extend it.
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let event = stream
                .message()
                .await
                .expect("stream ok")
                .expect("stream open");
            if !matches!(event.event, Some(Event::Heartbeat(_))) {
                return event;
            }
        }
    })
    .await
    .expect("an event (the stream hangs)")
}

/// Reads events until a message with `text` is created; returns every event read.
async fn until_message(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    text: &str,
) -> Vec<pb::SubscribeMessagesResponse> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message {text:?} within {HANG_GUARD:?}"
        );
        let event = next_event(stream).await;
        let done = matches!(&event.event, Some(Event::MessageCreated(m)) if m.text == text);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn created_texts(events: &[pb::SubscribeMessagesResponse]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::MessageCreated(m)) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

/// Posts `texts` in order, `in_flight` at a time; returns the event ids.
async fn post_all(
    user: &MatrixUser,
    room_id: &str,
    texts: &[String],
    in_flight: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in texts.chunks(in_flight) {
        let posts = chunk.iter().map(|text| {
            let user = user.clone();
            let room_id = room_id.to_owned();
            let text = text.clone();
            tokio::spawn(async move { user.post(&room_id, &text).await })
        });
        for post in posts.collect::<Vec<_>>() {
            ids.push(post.await.expect("post task"));
        }
    }
    ids
}

async fn sync_backfills_joined_rooms_oldest_first_and_a_second_sync_adds_nothing(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    // "Team": 600 messages (two backfill pages), "bob" (unnamed, named after its member) with
    // an edit and a redaction, and a room known by its alias.
    let team = me.create_room(Some("Team"), &[&bob]).await;
    let texts: Vec<String> = (1..=600).map(|i| format!("team message {i}")).collect();
    post_all(&bob, &team, &texts, 8).await;
    let direct = bob.create_room(None, &[&me]).await;
    let first = me.post(&direct, "hello bob").await;
    bob.post(&direct, "hi there").await;
    let gone = bob.post(&direct, "oops, wrong chat").await;
    me.edit(&direct, &first, "hello bob!").await;
    bob.redact(&direct, &gone).await;
    let aliased = me.create_room(None, &[]).await;
    let alias = me
        .set_alias(&aliased, &format!("notes{}", &me.user_id[3..9]))
        .await;
    for i in 1..=20 {
        me.post(&aliased, &format!("note {i}")).await;
    }

    let (_app, mut client) = start(&backend, &hs, &me).await;
    let frames = sync_frames(&mut client, SESSION, Some(0)).await;
    let stages: Vec<(SyncStage, u32, u64)> = frames
        .iter()
        .map(|f| (stage(f), f.current_chat, f.messages_synced))
        .collect();
    // Synapse sets a new user's display name to its localpart.
    let bob_name = bob.user_id[1..].split(':').next().unwrap().to_owned();
    let mut chats_in_order: Vec<(String, String)> = vec![
        (alias.clone(), aliased.clone()),
        ("Team".into(), team.clone()),
        (bob_name, direct.clone()),
    ];
    chats_in_order.sort();
    let index = |room: &str| {
        1 + chats_in_order
            .iter()
            .position(|(_, id)| id == room)
            .unwrap() as u32
    };
    let mut expected = vec![(SyncStage::Started, 0, 0)];
    for (_, room) in &chats_in_order {
        let i = index(room);
        expected.push((SyncStage::ChatSaved, i, 0));
        if *room == team {
            expected.push((SyncStage::MessagesSaved, i, 500));
            expected.push((SyncStage::MessagesSaved, i, 600));
        } else if *room == direct {
            expected.push((SyncStage::MessagesSaved, i, 3));
        } else {
            expected.push((SyncStage::MessagesSaved, i, 20));
        }
    }
    let last = frames.last().unwrap();
    assert_eq!(stage(last), SyncStage::Completed);
    assert_eq!(last.total_messages_synced, 623);
    assert_eq!(last.n_chats, 3);
    assert_eq!(
        stages[..stages.len() - 1],
        expected[..],
        "frames: {frames:#?}"
    );

    // The exact messages, oldest first, as the homeserver itself orders them.
    let chats = all_chats(&mut client, SESSION).await;
    let names: HashSet<(String, String)> = chats
        .iter()
        .map(|c| (c.name.clone(), c.chat_id.clone()))
        .collect();
    assert_eq!(names, chats_in_order.iter().cloned().collect());
    let stored = all_messages(&mut client, SESSION, &team).await;
    let upstream = bob.messages(&team).await;
    let stored_ids: Vec<&str> = stored
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    let upstream_ids: Vec<&str> = upstream
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(stored_ids, upstream_ids);
    let stored_texts: HashSet<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(stored_texts, texts.iter().map(String::as_str).collect());
    assert!(stored.iter().all(|m| m.sender == bob.user_id && !m.from_me));
    let dm = all_messages(&mut client, SESSION, &direct).await;
    let shown: Vec<(&str, &str, i32, bool)> = dm
        .iter()
        .map(|m| (m.text.as_str(), m.sender.as_str(), m.kind, m.from_me))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "hello bob!",
                me.user_id.as_str(),
                pb::MessageKind::Text as i32,
                true
            ),
            (
                "hi there",
                bob.user_id.as_str(),
                pb::MessageKind::Text as i32,
                false
            ),
            (
                "",
                bob.user_id.as_str(),
                pb::MessageKind::Deleted as i32,
                false
            ),
        ],
        "the edit folded in, the redacted message DELETED, and neither stored as a message"
    );
    let notes = all_messages(&mut client, SESSION, &aliased).await;
    assert_eq!(
        notes.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
        (1..=20).map(|i| format!("note {i}")).collect::<Vec<_>>()
    );

    let head = sync_status(&client, SESSION).await.head_seq;
    let again = sync_frames(&mut client, SESSION, Some(0)).await;
    assert_eq!(stage(again.last().unwrap()), SyncStage::Completed);
    assert_eq!(again.last().unwrap().total_messages_synced, 0);
    let status = sync_status(&client, SESSION).await;
    assert_eq!(
        status.head_seq,
        head + 1,
        "a second sync takes no seq but its end's"
    );
    assert_eq!(status.message_count, 623);

    // A limit takes the most recent messages.
    let backend2 = Backend::sqlite();
    let (_app2, mut limited) = start(&backend2, &hs, &me).await;
    let frames = sync_frames(&mut limited, SESSION, Some(5)).await;
    assert_eq!(
        frames.last().unwrap().total_messages_synced,
        13,
        "5 + 3 + 5"
    );
    let team_tail: Vec<String> = all_messages(&mut limited, SESSION, &team)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    let upstream_texts: Vec<String> = upstream
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(team_tail, upstream_texts[595..].to_vec());
}

async fn live_messages_and_new_rooms_reach_subscribers(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Live"), &[&me]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    wait_up(&client).await;
    let (mut stream, _) = subscribe(&mut client, None).await;

    let mut latencies = Vec::new();
    for i in 1..=10 {
        let text = format!("live {i}");
        let posted = Instant::now();
        bob.post(&room, &text).await;
        let events = until_message(&mut stream, &text).await;
        latencies.push(posted.elapsed());
        let created = created_texts(&events);
        assert_eq!(
            created,
            std::slice::from_ref(&text),
            "exactly the posted message: {events:?}"
        );
        if i == 1 {
            assert!(
                events.iter().any(|e| matches!(&e.event, Some(Event::ChatUpdated(c)) if c.chat_id == room && c.name == "Live")),
                "the room appears as a chat first: {events:?}"
            );
        }
    }
    latencies.sort();
    eprintln!(
        "matrix post → subscriber latency over 10 posts: median {:?}, max {:?}",
        latencies[5], latencies[9]
    );
    let stored = all_messages(&mut client, SESSION, &room).await;
    assert_eq!(stored.len(), 10);
    assert!(
        stored
            .iter()
            .all(|m| m.sender == bob.user_id && m.status == pb::MessageStatus::Sent as i32)
    );

    // A room joined mid-session appears as chat_updated, then its messages follow.
    let carol = hs.register("carol").await;
    let new_room = carol.create_room(Some("Joined later"), &[]).await;
    carol.post(&new_room, "before we joined").await;
    carol.invite(&new_room, &me).await;
    me.join(&new_room).await;
    carol.post(&new_room, "welcome").await;
    let events = until_message(&mut stream, "welcome").await;
    assert!(
        events.iter().any(|e| matches!(&e.event, Some(Event::ChatUpdated(c)) if c.chat_id == new_room && c.name == "Joined later")),
        "{events:?}"
    );
    assert!(
        !created_texts(&events).contains(&"live 10".to_owned()),
        "nothing twice"
    );
}

async fn send_message_posts_once_and_its_echo_is_not_stored_twice(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Outbox"), &[&me]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, None).await;
    wait_up(&client).await;
    let (mut stream, _) = subscribe(&mut client, None).await;

    let sent = send(&mut client, SESSION, &room, "from chatsync", "key-1")
        .await
        .expect("SendMessage");
    let message = sent.message.expect("message");
    assert!(!sent.duplicate);
    assert_eq!(message.status, pb::MessageStatus::Sent as i32);
    assert!(message.provider_message_id.starts_with('$'), "{message:?}");
    let retry = send(&mut client, SESSION, &room, "from chatsync", "key-1")
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.message.unwrap().id, message.id);

    // A marker posted after the echo: once it arrives, the echo has been seen too.
    bob.post(&room, "marker").await;
    let events = until_message(&mut stream, "marker").await;
    assert_eq!(
        created_texts(&events),
        ["from chatsync", "marker"],
        "{events:?}"
    );
    let upstream: Vec<(String, String)> = bob
        .messages(&room)
        .await
        .iter()
        .map(|e| {
            (
                e["sender"].as_str().unwrap().to_owned(),
                e["content"]["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        upstream,
        [
            (me.user_id.clone(), "from chatsync".into()),
            (bob.user_id.clone(), "marker".into())
        ],
        "exactly one Matrix event for the retried send"
    );
    let stored = all_messages(&mut client, SESSION, &room).await;
    assert_eq!(
        stored.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["from chatsync", "marker"]
    );
    assert_eq!(stored[0].provider_message_id, message.provider_message_id);
    assert_eq!(stored[0].client_message_id, "key-1");

    // A crash between the PUT and recording its outcome leaves the message PENDING without
    // its event id. A backfill that reads the event back (with its transaction id) settles it
    // instead of storing it again.
    let db = sea_orm::Database::connect(&backend.database_url)
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "UPDATE messages SET status = {}, provider_message_id = 'pending-key-1' \
         WHERE client_message_id = 'key-1'",
        pb::MessageStatus::Pending as i32
    ))
    .await
    .unwrap();
    db.close().await.ok();
    let again = sync_frames(&mut client, SESSION, Some(0)).await;
    assert_eq!(again.last().unwrap().total_messages_synced, 0);
    let stored = all_messages(&mut client, SESSION, &room).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].status, pb::MessageStatus::Sent as i32);
    assert_eq!(stored[0].provider_message_id, message.provider_message_id);

    // Refused upstream (no longer in the room): FAILED_PRECONDITION, and stored FAILED.
    me.leave(&room).await;
    let refused = send(&mut client, SESSION, &room, "after leaving", "key-2")
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let stored = all_messages(&mut client, SESSION, &room).await;
    let failed = stored
        .iter()
        .find(|m| m.client_message_id == "key-2")
        .expect("kept");
    assert_eq!(failed.status, pb::MessageStatus::Failed as i32);
}

async fn read_receipts_go_both_ways(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Receipts"), &[&me]).await;
    let incoming = bob.post(&room, "please read me").await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, None).await;
    wait_up(&client).await;
    let (mut stream, _) = subscribe(&mut client, None).await;

    let first = send(&mut client, SESSION, &room, "one", "r-1")
        .await
        .unwrap()
        .message
        .unwrap();
    let second = send(&mut client, SESSION, &room, "two", "r-2")
        .await
        .unwrap()
        .message
        .unwrap();
    bob.read_receipt(&room, &second.provider_message_id).await;
    let mut read = HashSet::new();
    while read.len() < 2 {
        if let Some(Event::StatusUpdated(update)) = next_event(&mut stream).await.event
            && update.status == pb::MessageStatus::Read as i32
        {
            read.insert(update.message_id);
        }
    }
    assert_eq!(
        read,
        HashSet::from([first.id, second.id]),
        "both of our messages up to the receipt"
    );

    // READ on an incoming message posts our m.read upstream.
    let stored = all_messages(&mut client, SESSION, &room).await;
    let theirs = stored
        .iter()
        .find(|m| m.provider_message_id == incoming)
        .expect("backfilled");
    client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: SESSION.into(),
            message_id: theirs.id,
            status: pb::MessageStatus::Read as i32,
            ..Default::default()
        })
        .await
        .expect("UpdateMessageStatus");
    let readers = bob.readers_of(&room, &incoming).await;
    assert!(
        readers.contains(&me.user_id),
        "bob sees our receipt: {readers:?}"
    );
}

async fn edits_and_redactions_update_the_stored_message(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Edits"), &[&me]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    wait_up(&client).await;
    let (mut stream, _) = subscribe(&mut client, None).await;
    let typo = bob.post(&room, "helo").await;
    let secret = bob.post(&room, "my password is hunter2").await;
    until_message(&mut stream, "my password is hunter2").await;
    bob.edit(&room, &typo, "hello").await;
    bob.redact(&room, &secret).await;
    let mut updated = Vec::new();
    while updated.len() < 2 {
        match next_event(&mut stream).await.event {
            Some(Event::MessageUpdated(message)) => updated.push(message),
            Some(Event::MessageCreated(message)) => {
                panic!("an edit created a message: {message:?}")
            }
            _ => {}
        }
    }
    assert_eq!(updated[0].provider_message_id, typo);
    assert_eq!(updated[0].text, "hello");
    assert_eq!(updated[1].provider_message_id, secret);
    assert_eq!(updated[1].kind, pb::MessageKind::Deleted as i32);
    assert_eq!(updated[1].text, "");
    // An edit by someone other than the sender changes nothing.
    me.edit(&room, &typo, "hijacked").await;
    bob.post(&room, "marker").await;
    let events = until_message(&mut stream, "marker").await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.event, Some(Event::MessageUpdated(_)))),
        "{events:?}"
    );
    let stored = all_messages(&mut client, SESSION, &room).await;
    let shown: Vec<(&str, i32)> = stored.iter().map(|m| (m.text.as_str(), m.kind)).collect();
    assert_eq!(
        shown,
        [
            ("hello", pb::MessageKind::Text as i32),
            ("", pb::MessageKind::Deleted as i32),
            ("marker", pb::MessageKind::Text as i32)
        ]
    );
}

async fn a_homeserver_crash_loses_and_duplicates_nothing(backend: Backend) {
    if shared_homeserver().is_none() {
        return;
    }
    let hs = Homeserver::start(&backend.dir.path().join("synapse"));
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Outage"), &[&me]).await;
    let (app, mut client) = start(&backend, &hs, &me).await;
    wait_up(&client).await;
    let (mut stream, _) = subscribe(&mut client, None).await;
    bob.post(&room, "before").await;
    until_message(&mut stream, "before").await;

    hs.kill();
    eventually("the source to be DOWN", || {
        let mut client = client.clone();
        async move { source_state(&mut client).await == pb::SourceState::Down }
    })
    .await;
    let status = sync_status(&client, SESSION).await;
    assert!(!status.source_error.is_empty());
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let entry = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: format!("chatsync.session.{SESSION}"),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        entry.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );

    hs.restart();
    bob.post(&room, "after").await;
    let events = until_message(&mut stream, "after").await;
    assert_eq!(created_texts(&events), ["after"], "{events:?}");
    wait_up(&client).await;
    let stored: Vec<String> = all_messages(&mut client, SESSION, &room)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(stored, ["before", "after"]);
    drop(stream);
    app.stop().await;
    hs.stop();
}

async fn a_chatsync_restart_resumes_from_the_stored_sync_token(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Restart"), &[&me]).await;
    let (app, mut client) = start(&backend, &hs, &me).await;
    wait_up(&client).await;
    let (mut stream, _) = subscribe(&mut client, None).await;
    bob.post(&room, "first").await;
    let events = until_message(&mut stream, "first").await;
    let cursor = events.last().unwrap().seq;
    drop(stream);
    app.stop().await;

    // 150 posts while chatsync is down: more than one /sync timeline holds, so the gap is
    // filled from /messages.
    let missed: Vec<String> = (1..=150).map(|i| format!("while down {i}")).collect();
    post_all(&bob, &room, &missed, 8).await;
    let order: Vec<String> = bob
        .messages(&room)
        .await
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();

    let (_app, mut client) = start(&backend, &hs, &me).await;
    let (mut stream, replay) = subscribe(&mut client, Some(cursor)).await;
    let mut events = replay;
    let newest = order.last().unwrap();
    if !created_texts(&events).contains(newest) {
        events.extend(until_message(&mut stream, newest).await);
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let sorted = {
        let mut s = seqs.clone();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(seqs, sorted, "ascending, no duplicate");
    assert_eq!(
        created_texts(&events),
        order[1..].to_vec(),
        "every missed message once, in order"
    );
    let stored: Vec<String> = all_messages(&mut client, SESSION, &room)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(stored, order);
}

/// Two replicas on one PostgreSQL database serve one Matrix session: one runs the `/sync`
/// loop. kill -9 of that replica: the other takes the loop over from the stored `since` token
/// within the lease time, and every post, before and after the kill, arrives exactly once.
/// The live loop's holder stops: killed (`kill -9`) or paused (`SIGSTOP`, then `SIGCONT`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Pause,
}

/// Two replicas on one PostgreSQL database follow one Matrix account. A takes the live loop;
/// Bob posts; then A stops (`how`) and Bob posts again, and B takes the loop over after the
/// lease. A paused A is resumed after that, with a stale lease epoch: it must neither store
/// nor replay anything. Every post reaches B's subscriber once, in order, and is stored once.
async fn live_loop_taken_over(how: Stop) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Replicas"), &[&me]).await;
    let token_file = backend.dir.path().join("mx.token");
    std::fs::write(&token_file, format!("{}\n", me.token)).expect("token file");
    let config = backend.dir.path().join("replica.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\nlease_secs = 4\n\
             database_max_connections = 6\n\
             [[sessions]]\nid = \"{SESSION}\"\nsource = \"matrix\"\nhomeserver = \"{}\"\n\
             user_id = \"{}\"\naccess_token_file = \"{}\"\n",
            backend.database_url,
            hs.url,
            me.user_id,
            token_file.display()
        ),
    )
    .expect("config");
    // A starts first and takes the live loop; B stands by.
    let mut a = replica::Replica::start(&config).await;
    let a_client = a.client().await;
    wait_up(&a_client).await;
    let b = replica::Replica::start(&config).await;
    let mut b_client = b.client().await;
    let (mut stream, _) = subscribe(&mut b_client, None).await;

    let before: Vec<String> = (1..=3).map(|i| format!("before {i}")).collect();
    post_all(&bob, &room, &before, 1).await;
    let mut events = until_message(&mut stream, "before 3").await;

    match how {
        Stop::Kill => a.kill().await,
        Stop::Pause => a.pause(),
    }
    let during: Vec<String> = (1..=3).map(|i| format!("during {i}")).collect();
    post_all(&bob, &room, &during, 1).await;
    events.extend(until_message(&mut stream, "during 3").await);
    if how == Stop::Pause {
        // A's long poll may hold "during" events: resumed, its lease epoch is stale.
        a.resume();
    }
    let after: Vec<String> = (1..=3).map(|i| format!("after {i}")).collect();
    post_all(&bob, &room, &after, 1).await;
    events.extend(until_message(&mut stream, "after 3").await);

    let expected: Vec<String> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    assert_eq!(
        created_texts(&events),
        expected,
        "every post once, in order, through B"
    );
    let stored: Vec<String> = all_messages(&mut b_client, SESSION, &room)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(stored, expected, "stored exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_live_loop_is_taken_over_without_loss_or_duplicates() {
    live_loop_taken_over(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replicas_live_loop_is_taken_over_and_it_stores_nothing_when_it_resumes() {
    live_loop_taken_over(Stop::Pause).await;
}
