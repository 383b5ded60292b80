//! A message's life on Matrix (issue 17), end to end against a real Synapse
//! (`scripts/synapse`), on SQLite and PostgreSQL: replies (`m.in_reply_to`), reactions
//! (`m.annotation`) and their redactions, edits (`m.replace`) and deletions (redactions), live
//! and in the backfill of a fresh session; other members' read receipts and the summary status;
//! and ReactToMessage, EditMessage, DeleteMessage and SendMessage with a reply through
//! chatsync, read back through Synapse as another member.
//!
//! Needs `CHATSYNC_TEST_SYNAPSE_DIR`, like the `matrix` tests. Every wait is on an event (a
//! subscription, or a poll bounded by `HANG_GUARD`).

use std::collections::HashMap;

use crate::common::synapse::{Homeserver, MatrixUser};
use crate::common::{
    Backend, HANG_GUARD, TestApp, all_messages, eventually, on_both_backends, session,
    shared_homeserver, sync_frames, sync_status,
};
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use serde_json::{Value, json};
use tonic::transport::Channel;

on_both_backends!(
    replies_reactions_edits_and_deletions_arrive_live_and_in_backfill,
    a_message_is_read_once_every_other_member_has_read_it,
    react_edit_and_delete_through_chatsync_reach_synapse_once,
);

const SESSION: &str = "mx";

async fn start(
    backend: &Backend,
    hs: &Homeserver,
    user: &MatrixUser,
) -> (TestApp, ChatSyncServiceClient<Channel>) {
    let token_file = backend.dir.path().join("mx.token");
    std::fs::write(&token_file, format!("{}\n", user.token)).expect("token file");
    let config = session(
        SESSION,
        "matrix",
        json!({"homeserver": hs.url, "user_id": user.user_id, "access_token_file": token_file}),
    );
    let app = TestApp::spawn(backend, vec![config]).await;
    let client = app.client().await;
    (app, client)
}

/// A fresh database of the same kind as `backend`.
async fn fresh(backend: &Backend) -> Backend {
    if backend.is_postgres() {
        Backend::postgres()
            .await
            .expect("PostgreSQL, as for the first backend")
    } else {
        Backend::sqlite()
    }
}

async fn wait_up(client: &ChatSyncServiceClient<Channel>) {
    eventually("the matrix source to be UP", || {
        let client = client.clone();
        async move {
            sync_status(&client, SESSION).await.source_state == pb::SourceState::Up as i32
        }
    })
    .await;
}

async fn subscribe(
    client: &mut ChatSyncServiceClient<Channel>,
) -> tonic::Streaming<pb::SubscribeMessagesResponse> {
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: None,
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    read_until(&mut stream, |e| matches!(e.event, Some(Event::Ready(_)))).await;
    stream
}

/// The next event that is not a heartbeat, before `deadline`.
async fn next_event(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    deadline: tokio::time::Instant,
) -> pb::SubscribeMessagesResponse {
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("an event within HANG_GUARD (the stream hangs, heartbeats aside)")
            .expect("stream ok")
            .expect("stream open");
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            return event;
        }
    }
}

/// Reads events until one satisfies `done`, within [`HANG_GUARD`] in all; returns every event
/// read, that one last.
async fn read_until(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    done: impl Fn(&pb::SubscribeMessagesResponse) -> bool,
) -> Vec<pb::SubscribeMessagesResponse> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut events = Vec::new();
    loop {
        let event = next_event(stream, deadline).await;
        let last = done(&event);
        events.push(event);
        if last {
            return events;
        }
    }
}

/// Reads events until a message with `text` is created; that message.
async fn created(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    text: &str,
) -> pb::Message {
    let events = read_until(
        stream,
        |e| matches!(&e.event, Some(Event::MessageCreated(m)) if m.text == text),
    )
    .await;
    match events.into_iter().last().and_then(|e| e.event) {
        Some(Event::MessageCreated(message)) => message,
        other => unreachable!("{other:?}"),
    }
}

/// Reads events until a `message_updated` of the message with this provider id, changing
/// `what`; that message as stored then.
async fn updated(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    provider_message_id: &str,
    what: pb::MessageChange,
) -> pb::Message {
    let events = read_until(stream, |e| {
        e.message_change == what as i32
            && matches!(&e.event, Some(Event::MessageUpdated(m)) if m.provider_message_id == provider_message_id)
    })
    .await;
    match events.into_iter().last().and_then(|e| e.event) {
        Some(Event::MessageUpdated(message)) => message,
        other => unreachable!("{other:?}"),
    }
}

/// `(emoji, [reactors])` of a message, as stored, by emoji (each emoji's reactors oldest
/// first, as the API gives them).
fn reactions(message: &pb::Message) -> Vec<(String, Vec<String>)> {
    let mut reactions: Vec<(String, Vec<String>)> = message
        .reactions
        .iter()
        .map(|r| {
            (
                r.emoji.clone(),
                r.reactors.iter().map(|who| who.sender.clone()).collect(),
            )
        })
        .collect();
    reactions.sort();
    reactions
}

/// `user` logged in again (`POST /login`), as a new device with its own access token.
async fn login(user: &MatrixUser) -> MatrixUser {
    let localpart = user.user_id[1..].split(':').next().expect("localpart");
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/login", user.url))
        .json(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": "correct horse battery",
        }))
        .send()
        .await
        .expect("login");
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "login: {status} {answer}");
    MatrixUser::from_token(
        &user.url,
        &user.user_id,
        answer["access_token"].as_str().expect("access_token"),
    )
}

fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `PUT /rooms/{room}/send/{event_type}/{txn}` as `user`; the event id.
async fn send_event(user: &MatrixUser, room: &str, event_type: &str, content: Value) -> String {
    let txn = uuid::Uuid::new_v4().simple().to_string();
    let response = reqwest::Client::new()
        .put(format!(
            "{}/_matrix/client/v3/rooms/{}/send/{event_type}/{txn}",
            user.url,
            enc(room)
        ))
        .bearer_auth(&user.token)
        .json(&content)
        .send()
        .await
        .expect("send an event");
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{event_type}: {status} {answer}");
    answer["event_id"].as_str().expect("event_id").to_owned()
}

/// Reacts to `target` with `key` (an `m.reaction` annotation); the reaction's event id.
async fn react(user: &MatrixUser, room: &str, target: &str, key: &str) -> String {
    send_event(
        user,
        room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}),
    )
    .await
}

/// Replies to `target` with `text`, with the reply fallback older clients put in the body.
async fn reply(user: &MatrixUser, room: &str, target: &str, quoted: &str, text: &str) -> String {
    send_event(
        user,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": format!("> <{}> {quoted}\n\n{text}", user.user_id),
            "m.relates_to": {"m.in_reply_to": {"event_id": target}}
        }),
    )
    .await
}

async fn replies_reactions_edits_and_deletions_arrive_live_and_in_backfill(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let carol = hs.register("carol").await;
    let room = bob.create_room(Some("Relations"), &[&me, &carol]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, None).await;
    wait_up(&client).await;
    let mut stream = subscribe(&mut client).await;

    // A reply: its quote resolved to the stored message, the fallback gone from the text.
    let original = bob.post(&room, "original").await;
    let first = created(&mut stream, "original").await;
    let answer = reply(&carol, &room, &original, "original", "a reply").await;
    let replied = created(&mut stream, "a reply").await;
    assert_eq!(replied.provider_message_id, answer);
    let quoted = replied.reply_to.clone().expect("reply_to");
    assert_eq!(quoted.provider_message_id, original);
    assert_eq!(
        quoted.message_id, first.id,
        "resolved to the stored message"
    );

    // Reactions: a set per sender (bob's 👍 and ❤️, carol's 👍); a redaction takes one back.
    let thumbs = react(&bob, &room, &original, "👍").await;
    updated(&mut stream, &original, pb::MessageChange::Reaction).await;
    react(&bob, &room, &original, "❤️").await;
    updated(&mut stream, &original, pb::MessageChange::Reaction).await;
    react(&carol, &room, &original, "👍").await;
    let all = updated(&mut stream, &original, pb::MessageChange::Reaction).await;
    assert_eq!(
        reactions(&all),
        [
            ("❤️".into(), vec![bob.user_id.clone()]),
            (
                "👍".into(),
                vec![bob.user_id.clone(), carol.user_id.clone()]
            ),
        ],
        "{all:?}"
    );
    bob.redact(&room, &thumbs).await;
    let fewer = updated(&mut stream, &original, pb::MessageChange::Reaction).await;
    assert_eq!(
        reactions(&fewer),
        [
            ("❤️".into(), vec![bob.user_id.clone()]),
            ("👍".into(), vec![carol.user_id.clone()]),
        ]
    );

    // An edit keeps the earlier text.
    bob.edit(&room, &original, "original, edited").await;
    let edited = updated(&mut stream, &original, pb::MessageChange::Edit).await;
    assert_eq!(edited.text, "original, edited");
    assert!(edited.edited && edited.edited_at.is_some(), "{edited:?}");
    let earlier: Vec<&str> = edited
        .earlier_texts
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(earlier, ["original"]);
    assert_eq!(reactions(&edited), reactions(&fewer), "reactions stay");

    // A deletion: no text, and who deleted it.
    let doomed = bob.post(&room, "delete me").await;
    created(&mut stream, "delete me").await;
    react(&carol, &room, &doomed, "😮").await;
    updated(&mut stream, &doomed, pb::MessageChange::Reaction).await;
    bob.redact(&room, &doomed).await;
    let deleted = updated(&mut stream, &doomed, pb::MessageChange::Deletion).await;
    assert_eq!(deleted.kind, pb::MessageKind::Deleted as i32);
    assert_eq!(deleted.text, "");
    assert!(deleted.reactions.is_empty(), "{deleted:?}");
    let deletion = deleted.deletion.expect("deletion");
    assert_eq!(deletion.deleted_by, bob.user_id);
    assert!(deletion.deleted_at.is_some());

    // The same room backfilled by a fresh session: the same state, folded from the history.
    // The session logs in anew: Synapse serves an initial /sync of the same device from its
    // response cache for a while (`sync_response_cache_duration`), and the stale token would
    // replay the room live, racing the backfill.
    let fresh = fresh(&backend).await;
    let me_again = login(&me).await;
    let (_app2, mut backfilled) = start(&fresh, &hs, &me_again).await;
    sync_frames(&mut backfilled, SESSION, None).await;
    let stored = all_messages(&mut backfilled, SESSION, &room).await;
    let by_id: HashMap<&str, &pb::Message> = stored
        .iter()
        .map(|m| (m.provider_message_id.as_str(), m))
        .collect();
    assert_eq!(
        stored.len(),
        3,
        "no edit, reaction or redaction as a message: {stored:?}"
    );
    let first = by_id[original.as_str()];
    assert_eq!(first.text, "original, edited");
    assert!(first.edited && first.edited_at.is_some());
    assert_eq!(
        reactions(first),
        reactions(&fewer),
        "the redacted 👍 of bob's is gone"
    );
    let replied = by_id[answer.as_str()];
    assert_eq!(replied.text, "a reply");
    let quoted = replied.reply_to.clone().expect("reply_to");
    assert_eq!(
        (quoted.provider_message_id.as_str(), quoted.message_id),
        (original.as_str(), first.id)
    );
    let deleted = by_id[doomed.as_str()];
    assert_eq!(deleted.kind, pb::MessageKind::Deleted as i32);
    assert!(deleted.text.is_empty() && deleted.reactions.is_empty());
}

/// SendMessage through chatsync; the stored message.
async fn send(
    client: &mut ChatSyncServiceClient<Channel>,
    room: &str,
    text: &str,
    key: &str,
    reply_to_message_id: u64,
) -> pb::Message {
    client
        .send_message(pb::SendMessageRequest {
            session_id: SESSION.into(),
            chat_id: room.into(),
            text: text.into(),
            client_message_id: key.into(),
            reply_to_message_id,
            ..Default::default()
        })
        .await
        .expect("SendMessage")
        .into_inner()
        .message
        .expect("message")
}

async fn a_message_is_read_once_every_other_member_has_read_it(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let carol = hs.register("carol").await;
    let group = me.create_room(Some("Group"), &[&bob, &carol]).await;
    let direct = me.create_room(None, &[&bob]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, None).await;
    wait_up(&client).await;
    let mut stream = subscribe(&mut client).await;

    let ours = send(&mut client, &group, "to the group", "g-1", 0).await;
    assert_eq!(
        ours.sender, me.user_id,
        "our own message, sent by the account"
    );
    let event = ours.provider_message_id.clone();

    // One of two other members read it: a receipt, and still not READ.
    bob.read_receipt(&group, &event).await;
    let events = read_until(&mut stream, |e| {
        e.message_change == pb::MessageChange::Receipt as i32
            && matches!(&e.event, Some(Event::MessageUpdated(m)) if m.id == ours.id)
    })
    .await;
    let one = match &events.last().unwrap().event {
        Some(Event::MessageUpdated(message)) => message.clone(),
        _ => unreachable!(),
    };
    let readers: Vec<&str> = one.receipts.iter().map(|r| r.recipient.as_str()).collect();
    assert_eq!(readers, [bob.user_id.as_str()]);
    assert!(one.receipts[0].read_at.is_some());
    // The status would move in the receipt's own transaction: it is committed by now.
    let stored = all_messages(&mut client, SESSION, &group).await;
    let stored = stored.iter().find(|m| m.id == ours.id).expect("stored");
    assert_eq!(stored.sender, me.user_id, "the echo leaves the sender ours");
    assert_ne!(
        stored.status,
        pb::MessageStatus::Read as i32,
        "read by one of two: {stored:?}"
    );

    // Both have read it: READ.
    carol.read_receipt(&group, &event).await;
    let events = read_until(&mut stream, |e| read(e, ours.id)).await;
    let both = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::MessageUpdated(m)) if m.id == ours.id => Some(m.clone()),
            _ => None,
        })
        .expect("carol's receipt");
    let mut readers: Vec<&str> = both.receipts.iter().map(|r| r.recipient.as_str()).collect();
    readers.sort();
    let mut expected = [bob.user_id.as_str(), carol.user_id.as_str()];
    expected.sort();
    assert_eq!(readers, expected);

    // In a direct chat one reader is enough.
    let dm = send(&mut client, &direct, "just us", "d-1", 0).await;
    bob.read_receipt(&direct, &dm.provider_message_id).await;
    let events = read_until(&mut stream, |e| read(e, dm.id)).await;
    assert!(
        events.iter().any(|e| matches!(&e.event,
            Some(Event::MessageUpdated(m)) if m.id == dm.id && m.receipts.len() == 1)),
        "{events:#?}"
    );
}

/// Whether `event` makes message `id` READ.
fn read(event: &pb::SubscribeMessagesResponse, id: u64) -> bool {
    matches!(&event.event, Some(Event::StatusUpdated(u))
        if u.message_id == id && u.status == pb::MessageStatus::Read as i32)
}

/// The room's events of `event_type` as `user` sees them, oldest first.
async fn events_of(user: &MatrixUser, room: &str, event_type: &str) -> Vec<Value> {
    let mut events = user.history(room, 1000).await;
    events.retain(|e| e["type"] == event_type);
    events
}

async fn react_edit_and_delete_through_chatsync_reach_synapse_once(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Changes"), &[&me]).await;
    let theirs = bob.post(&room, "react to me").await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, None).await;
    wait_up(&client).await;
    let stored = all_messages(&mut client, SESSION, &room).await;
    let target = stored
        .iter()
        .find(|m| m.provider_message_id == theirs)
        .expect("backfilled")
        .clone();
    let mut stream = subscribe(&mut client).await;

    // SendMessage with a reply: m.in_reply_to upstream, and the quote resolved here.
    let mine = send(&mut client, &room, "my reply", "s-1", target.id).await;
    let quoted = mine.reply_to.clone().expect("reply_to");
    assert_eq!(
        (quoted.provider_message_id.as_str(), quoted.message_id),
        (theirs.as_str(), target.id)
    );
    let sent = events_of(&bob, &room, "m.room.message").await;
    let upstream = sent
        .iter()
        .find(|e| e["event_id"] == mine.provider_message_id.as_str())
        .expect("the reply upstream");
    assert_eq!(
        upstream["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        theirs.as_str(),
        "{upstream}"
    );
    assert_eq!(upstream["content"]["body"], "my reply");

    let react_to = |emoji: &str, request_id: &str| pb::ReactToMessageRequest {
        session_id: SESSION.into(),
        message_id: target.id,
        emoji: emoji.into(),
        request_id: request_id.into(),
    };
    // React, and retry: duplicate, nothing more upstream.
    let reacted = client
        .react_to_message(react_to("👍", "re-1"))
        .await
        .expect("ReactToMessage")
        .into_inner();
    assert!(reacted.changed && !reacted.duplicate);
    let message = reacted.message.expect("message");
    assert_eq!(
        reactions(&message),
        [("👍".into(), vec![me.user_id.clone()])]
    );
    let retry = client
        .react_to_message(react_to("👍", "re-1"))
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.duplicate && !retry.changed);
    // Another emoji replaces ours; an empty one takes it back.
    let replaced = client
        .react_to_message(react_to("🎉", "re-2"))
        .await
        .expect("ReactToMessage 🎉")
        .into_inner();
    assert_eq!(
        reactions(&replaced.message.expect("message")),
        [("🎉".into(), vec![me.user_id.clone()])]
    );
    // The same emoji again (a new request id): already so, and nothing posted upstream.
    let again = client
        .react_to_message(react_to("🎉", "re-2b"))
        .await
        .expect("ReactToMessage 🎉 again")
        .into_inner();
    assert!(!again.changed && !again.duplicate);
    let removed = client
        .react_to_message(react_to("", "re-3"))
        .await
        .expect("ReactToMessage ''")
        .into_inner();
    assert!(removed.changed);
    assert!(removed.message.expect("message").reactions.is_empty());

    // Edit our message, and retry.
    let edit = pb::EditMessageRequest {
        session_id: SESSION.into(),
        message_id: mine.id,
        text: "my reply, edited".into(),
        request_id: "ed-1".into(),
    };
    let edited = client
        .edit_message(edit.clone())
        .await
        .expect("EditMessage")
        .into_inner();
    assert!(!edited.duplicate);
    let message = edited.message.expect("message");
    assert_eq!(message.text, "my reply, edited");
    assert_eq!(
        message
            .earlier_texts
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>(),
        ["my reply"]
    );
    let retry = client.edit_message(edit).await.expect("retry").into_inner();
    assert!(retry.duplicate);

    // Delete it, and retry.
    let delete = pb::DeleteMessageRequest {
        session_id: SESSION.into(),
        message_id: mine.id,
        request_id: "del-1".into(),
    };
    let deleted = client
        .delete_message(delete.clone())
        .await
        .expect("DeleteMessage")
        .into_inner();
    let message = deleted.message.expect("message");
    assert_eq!(message.kind, pb::MessageKind::Deleted as i32);
    assert_eq!(message.deletion.expect("deletion").deleted_by, me.user_id);
    let retry = client
        .delete_message(delete)
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.duplicate);

    // Every echo has come back once a marker posted after them arrives: each call is exactly
    // one change, and no echo is a message.
    bob.post(&room, "marker").await;
    let events = read_until(
        &mut stream,
        |e| matches!(&e.event, Some(Event::MessageCreated(m)) if m.text == "marker"),
    )
    .await;
    let changes = |id: u64, what: pb::MessageChange| {
        events
            .iter()
            .filter(|e| {
                e.message_change == what as i32
                    && matches!(&e.event, Some(Event::MessageUpdated(m)) if m.id == id)
            })
            .count()
    };
    assert_eq!(
        changes(target.id, pb::MessageChange::Reaction),
        3,
        "{events:#?}"
    );
    assert_eq!(changes(mine.id, pb::MessageChange::Edit), 1, "{events:#?}");
    assert_eq!(
        changes(mine.id, pb::MessageChange::Deletion),
        1,
        "{events:#?}"
    );
    let created: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::MessageCreated(m)) => Some(m.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, ["my reply", "marker"], "{events:#?}");
    let stored = all_messages(&mut client, SESSION, &room).await;
    let now = stored.iter().find(|m| m.id == target.id).unwrap();
    assert!(now.reactions.is_empty(), "{now:?}");
    let now = stored.iter().find(|m| m.id == mine.id).unwrap();
    assert_eq!(now.kind, pb::MessageKind::Deleted as i32);

    // Synapse, as bob sees the room: two reactions of ours (each posted once), both redacted;
    // one edit of our message; our message redacted.
    let ours = |e: &&Value| e["sender"] == me.user_id.as_str();
    let reactions_upstream: Vec<Value> = events_of(&bob, &room, "m.reaction")
        .await
        .into_iter()
        .filter(|e| ours(&e))
        .collect();
    assert_eq!(reactions_upstream.len(), 2, "{reactions_upstream:#?}");
    for reaction in &reactions_upstream {
        assert!(
            reaction["unsigned"]["redacted_because"].is_object(),
            "taken back: {reaction}"
        );
    }
    let edits: Vec<Value> = events_of(&bob, &room, "m.room.message")
        .await
        .into_iter()
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .collect();
    assert_eq!(edits.len(), 1, "{edits:#?}");
    assert_eq!(edits[0]["sender"], me.user_id.as_str());
    assert_eq!(
        edits[0]["content"]["m.relates_to"]["event_id"],
        mine.provider_message_id.as_str()
    );
    assert_eq!(
        edits[0]["content"]["m.new_content"]["body"],
        "my reply, edited"
    );
    assert_eq!(edits[0]["content"]["body"], "* my reply, edited");
    let redactions: Vec<Value> = events_of(&bob, &room, "m.room.redaction")
        .await
        .into_iter()
        .filter(|e| ours(&e))
        .collect();
    assert_eq!(
        redactions.len(),
        3,
        "two reactions and our message: {redactions:#?}"
    );
    let original = events_of(&bob, &room, "m.room.message")
        .await
        .into_iter()
        .find(|e| e["event_id"] == mine.provider_message_id.as_str())
        .expect("our message");
    assert!(
        original["unsigned"]["redacted_because"].is_object(),
        "{original}"
    );
}
