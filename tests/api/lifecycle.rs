//! A message's whole life on the native `local` source, through gRPC: replies, reactions,
//! edits, deletions and per-recipient receipts; their idempotency keys and errors; search
//! following edits and deletions; a replay from seq 0 rebuilding the same state; and a
//! reaction racing an edit on two replica processes.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chatsync::grpc::pb::{
    self, chat_sync_service_client::ChatSyncServiceClient, subscribe_messages_response::Event,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::replica::Replica;
use crate::common::{
    Backend, HANG_GUARD, TestApp, all_messages, local_session, on_both_backends, send, session,
};

const SESSION: &str = "me";
const CHAT: &str = "team";

type Client = ChatSyncServiceClient<Channel>;

async fn react(
    client: &mut Client,
    message_id: u64,
    emoji: &str,
    request_id: &str,
) -> Result<pb::ReactToMessageResponse, tonic::Status> {
    client
        .react_to_message(pb::ReactToMessageRequest {
            session_id: SESSION.into(),
            message_id,
            emoji: emoji.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn edit(
    client: &mut Client,
    message_id: u64,
    text: &str,
    request_id: &str,
) -> Result<pb::EditMessageResponse, tonic::Status> {
    client
        .edit_message(pb::EditMessageRequest {
            session_id: SESSION.into(),
            message_id,
            text: text.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn delete(
    client: &mut Client,
    message_id: u64,
    request_id: &str,
) -> Result<pb::DeleteMessageResponse, tonic::Status> {
    client
        .delete_message(pb::DeleteMessageRequest {
            session_id: SESSION.into(),
            message_id,
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn receipt(
    client: &mut Client,
    message_id: u64,
    recipient: &str,
    status: pb::MessageStatus,
) -> pb::UpdateMessageStatusResponse {
    client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: SESSION.into(),
            message_id,
            status: status as i32,
            recipient: recipient.into(),
            ..Default::default()
        })
        .await
        .expect("UpdateMessageStatus with a recipient")
        .into_inner()
}

async fn search_ids(client: &mut Client, query: &str) -> Vec<u64> {
    client
        .search_messages(pb::SearchMessagesRequest {
            session_id: SESSION.into(),
            query: query.into(),
            ..Default::default()
        })
        .await
        .expect("SearchMessages")
        .into_inner()
        .hits
        .into_iter()
        .map(|hit| hit.message.expect("message").id)
        .collect()
}

/// The emojis of a message with their reactors' senders.
fn reactions(message: &pb::Message) -> Vec<(String, Vec<String>)> {
    message
        .reactions
        .iter()
        .map(|r| {
            (
                r.emoji.clone(),
                r.reactors.iter().map(|x| x.sender.clone()).collect(),
            )
        })
        .collect()
}

/// Every event of the session from seq 0 up to the head the replay ends at (its `ready`).
async fn replay(client: &mut Client) -> Vec<pb::SubscribeMessagesResponse> {
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: Vec::new(),
            after_seq: Some(0),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("the replay ends")
            .expect("a frame")
            .expect("the stream stays open");
        if matches!(next.event, Some(Event::Ready(_))) {
            return events;
        }
        events.push(next);
    }
}

/// The state the events rebuild: each message as its last event carries it, by id.
fn rebuild(events: &[pb::SubscribeMessagesResponse]) -> HashMap<u64, pb::Message> {
    let mut messages = HashMap::new();
    for event in events {
        match &event.event {
            Some(Event::MessageCreated(message)) | Some(Event::MessageUpdated(message)) => {
                messages.insert(message.id, message.clone());
            }
            Some(Event::StatusUpdated(update)) => {
                if let Some(message) = messages.get_mut(&update.message_id) {
                    message.status = update.status;
                }
            }
            _ => {}
        }
    }
    messages
}

/// Replies, reactions, edits, deletions and receipts on a native chat, with their events,
/// idempotency keys and search.
async fn a_local_message_lives_its_whole_life(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session(SESSION)]).await;
    let mut client = app.client().await;

    let first = send(&mut client, SESSION, CHAT, "hello alpha world", "k1")
        .await
        .expect("send")
        .message
        .expect("message");
    // A reply quotes the first message, by its server id.
    let reply = client
        .send_message(pb::SendMessageRequest {
            session_id: SESSION.into(),
            chat_id: CHAT.into(),
            text: "replying with swordfish".into(),
            client_message_id: "k2".into(),
            reply_to_message_id: first.id,
            ..Default::default()
        })
        .await
        .expect("send a reply")
        .into_inner()
        .message
        .expect("message");
    let quoted = reply.reply_to.clone().expect("reply_to");
    assert_eq!(quoted.message_id, first.id);
    assert_eq!(quoted.provider_message_id, first.provider_message_id);
    // A reply to a message of another chat, or to none, is refused.
    let other = send(&mut client, SESSION, "elsewhere", "other chat", "k3")
        .await
        .expect("send")
        .message
        .expect("message");
    let cross = client
        .send_message(pb::SendMessageRequest {
            session_id: SESSION.into(),
            chat_id: CHAT.into(),
            text: "x".into(),
            reply_to_message_id: other.id,
            ..Default::default()
        })
        .await
        .expect_err("a reply across chats");
    assert_eq!(cross.code(), Code::InvalidArgument);
    let missing = client
        .send_message(pb::SendMessageRequest {
            session_id: SESSION.into(),
            chat_id: CHAT.into(),
            text: "x".into(),
            reply_to_message_id: 999_999,
            ..Default::default()
        })
        .await
        .expect_err("a reply to nothing");
    assert_eq!(missing.code(), Code::NotFound);

    // Reactions: one per person; a new emoji replaces it; a retry is a duplicate; "" removes.
    let reacted = react(&mut client, first.id, "👍", "r1")
        .await
        .expect("react");
    assert!(reacted.changed && !reacted.duplicate);
    let message = reacted.message.expect("message");
    assert_eq!(
        reactions(&message),
        [("👍".to_owned(), vec![String::new()])]
    );
    assert!(message.reactions[0].reactors[0].reacted_at.is_some());
    let again = react(&mut client, first.id, "👍", "r1")
        .await
        .expect("retry");
    assert!(again.duplicate && !again.changed);
    let same = react(&mut client, first.id, "👍", "r2")
        .await
        .expect("same");
    assert!(!same.changed && !same.duplicate);
    let replaced = react(&mut client, first.id, "❤️", "r3")
        .await
        .expect("replace");
    assert_eq!(
        reactions(&replaced.message.expect("message")),
        [("❤️".to_owned(), vec![String::new()])]
    );
    // A retry of r1 after r3 changes nothing back.
    let late = react(&mut client, first.id, "👍", "r1")
        .await
        .expect("late");
    assert!(late.duplicate);
    assert_eq!(reactions(&late.message.expect("message"))[0].0, "❤️");
    let removed = react(&mut client, first.id, "", "r4")
        .await
        .expect("remove");
    assert!(removed.changed);
    assert!(removed.message.expect("message").reactions.is_empty());
    react(&mut client, first.id, "🎉", "r5")
        .await
        .expect("react");

    // An edit keeps the earlier text; search follows the new one.
    assert_eq!(search_ids(&mut client, "alpha").await, [first.id]);
    let edited = edit(&mut client, first.id, "hello beta world", "e1")
        .await
        .expect("edit");
    assert!(edited.changed);
    let message = edited.message.expect("message");
    assert!(message.edited && message.edited_at.is_some());
    assert_eq!(message.text, "hello beta world");
    assert_eq!(
        message
            .earlier_texts
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>(),
        ["hello alpha world"]
    );
    assert_eq!(
        reactions(&message)[0].0,
        "🎉",
        "an edit keeps the reactions"
    );
    assert!(search_ids(&mut client, "alpha").await.is_empty());
    assert_eq!(search_ids(&mut client, "beta").await, [first.id]);
    let retried = edit(&mut client, first.id, "hello beta world", "e1")
        .await
        .expect("retry");
    assert!(retried.duplicate);
    edit(&mut client, first.id, "hello gamma world", "e2")
        .await
        .expect("second edit");

    // A deletion drops the text and the search words; who and when are kept.
    assert_eq!(search_ids(&mut client, "swordfish").await, [reply.id]);
    let deleted = delete(&mut client, reply.id, "d1").await.expect("delete");
    assert!(deleted.changed);
    let message = deleted.message.expect("message");
    assert_eq!(message.kind, pb::MessageKind::Deleted as i32);
    assert!(message.text.is_empty());
    let deletion = message.deletion.expect("deletion");
    assert!(deletion.deleted_at.is_some());
    assert!(search_ids(&mut client, "swordfish").await.is_empty());
    let again = delete(&mut client, reply.id, "d2")
        .await
        .expect("delete again");
    assert!(!again.changed && !again.duplicate);
    let react_deleted = react(&mut client, reply.id, "👍", "")
        .await
        .expect_err("a reaction on a deleted message");
    assert_eq!(react_deleted.code(), Code::FailedPrecondition);
    let edit_deleted = edit(&mut client, reply.id, "back", "")
        .await
        .expect_err("an edit of a deleted message");
    assert_eq!(edit_deleted.code(), Code::FailedPrecondition);
    // A SendMessage retry of the deleted message still answers it as a duplicate.
    let resent = send(&mut client, SESSION, CHAT, "replying with swordfish", "k2")
        .await
        .expect("retry of a deleted message's send");
    assert!(resent.duplicate);

    // Bad requests.
    let unknown = react(&mut client, 999_999, "👍", "")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let long = react(&mut client, first.id, &"👍".repeat(20), "")
        .await
        .expect_err("a long emoji");
    assert_eq!(long.code(), Code::InvalidArgument);
    let empty = edit(&mut client, first.id, "  ", "")
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let zero = delete(&mut client, 0, "").await.expect_err("message 0");
    assert_eq!(zero.code(), Code::InvalidArgument);

    // Receipts per recipient. A local chat stores no participants: one read is enough.
    let got = receipt(
        &mut client,
        first.id,
        "+15550100",
        pb::MessageStatus::Delivered,
    )
    .await;
    assert!(got.changed);
    let message = got.message.expect("message");
    assert_eq!(message.status, pb::MessageStatus::Delivered as i32);
    assert_eq!(message.receipts.len(), 1);
    assert!(message.receipts[0].delivered_at.is_some() && message.receipts[0].read_at.is_none());
    let read = receipt(&mut client, first.id, "+15550100", pb::MessageStatus::Read).await;
    let message = read.message.expect("message");
    assert_eq!(message.status, pb::MessageStatus::Read as i32);
    assert!(message.receipts[0].read_at.is_some());
    let repeat = receipt(
        &mut client,
        first.id,
        "+15550100",
        pb::MessageStatus::Delivered,
    )
    .await;
    assert!(!repeat.changed, "a receipt never goes backwards");

    // Listings carry the new fields, and a replay from seq 0 rebuilds the same state.
    let listed: HashMap<u64, pb::Message> = all_messages(&mut client, SESSION, "")
        .await
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    // So do snapshot frames and search hits.
    let mut frames = client
        .get_snapshot(pb::GetSnapshotRequest {
            session_id: SESSION.into(),
            chat_ids: vec![CHAT.into()],
            ..Default::default()
        })
        .await
        .expect("GetSnapshot")
        .into_inner();
    let frame = frames.message().await.expect("frame").expect("one frame");
    for message in &frame.messages {
        assert_eq!(
            message, &listed[&message.id],
            "snapshot of message {}",
            message.id
        );
    }
    assert!(frame.messages.iter().any(|m| m.id == first.id));
    let hit = client
        .search_messages(pb::SearchMessagesRequest {
            session_id: SESSION.into(),
            query: "gamma".into(),
            ..Default::default()
        })
        .await
        .expect("SearchMessages")
        .into_inner()
        .hits
        .remove(0)
        .message
        .expect("message");
    assert_eq!(hit, listed[&first.id]);
    let events = replay(&mut client).await;
    let rebuilt = rebuild(&events);
    assert_eq!(rebuilt.len(), listed.len());
    for (id, message) in &listed {
        assert_eq!(
            &rebuilt[id], message,
            "message {id} rebuilt from the replay"
        );
    }
    let changes: Vec<(i32, i32)> = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::MessageUpdated(_))))
        .map(|e| {
            let Some(Event::MessageUpdated(message)) = &e.event else {
                unreachable!()
            };
            (message.id as i32, e.message_change)
        })
        .collect();
    use pb::MessageChange as C;
    let (a, b) = (first.id as i32, reply.id as i32);
    assert_eq!(
        changes,
        [
            (a, C::Reaction as i32),
            (a, C::Reaction as i32),
            (a, C::Reaction as i32),
            (a, C::Reaction as i32),
            (a, C::Edit as i32),
            (a, C::Edit as i32),
            (b, C::Deletion as i32),
            (a, C::Receipt as i32),
            (a, C::Receipt as i32),
        ]
    );
    // Only message_updated events carry a message_change.
    assert!(
        events
            .iter()
            .filter(|e| !matches!(e.event, Some(Event::MessageUpdated(_))))
            .all(|e| e.message_change == C::Unspecified as i32)
    );
}

/// A live subscriber receives a reaction as `message_updated` (REACTION) with the message as
/// stored now.
async fn a_reaction_reaches_a_live_subscriber(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session(SESSION)]).await;
    let mut client = app.client().await;
    let message = send(&mut client, SESSION, CHAT, "react to me", "k1")
        .await
        .expect("send")
        .message
        .expect("message");
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![CHAT.into()],
            after_seq: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let ready = stream.message().await.expect("frame").expect("open");
    assert!(matches!(ready.event, Some(Event::Ready(_))));
    react(&mut client, message.id, "🔥", "")
        .await
        .expect("react");
    let update = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let next = stream.message().await.expect("frame").expect("open");
            if let Some(Event::MessageUpdated(updated)) = next.event {
                return (updated, next.message_change, next.seq);
            }
        }
    })
    .await
    .expect("the reaction arrives");
    assert_eq!(update.0.id, message.id);
    assert_eq!(update.1, pb::MessageChange::Reaction as i32);
    assert_eq!(
        reactions(&update.0),
        [("🔥".to_owned(), vec![String::new()])]
    );
    assert!(update.2 > ready.seq);
}

/// Sources that cannot change messages answer FAILED_PRECONDITION.
async fn an_export_session_refuses_changes(backend: Backend) {
    let exports = backend.dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    crate::common::write_android_chat(&exports, "Ana", "wa", 3);
    let wa = session(
        "wa",
        "whatsapp-export",
        serde_json::json!({ "path": exports }),
    );
    let app = TestApp::spawn(&backend, vec![wa]).await;
    let mut client = app.client().await;
    crate::common::sync_frames(&mut client, "wa", Some(0)).await;
    let message = all_messages(&mut client, "wa", "").await.remove(0);
    let refused = client
        .react_to_message(pb::ReactToMessageRequest {
            session_id: "wa".into(),
            message_id: message.id,
            emoji: "👍".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("an export cannot react");
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

on_both_backends!(
    a_local_message_lives_its_whole_life,
    a_reaction_reaches_a_live_subscriber,
    an_export_session_refuses_changes,
    whatsapp_edit_marks_and_deletion_sentences_in_every_language,
);

/// A configuration for replica processes of the `me` local session on `database_url`.
fn replica_config(dir: &Path, database_url: &str) -> PathBuf {
    let path = dir.join("replica.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\n\
             [[sessions]]\nid = \"{SESSION}\"\nsource = \"local\"\n"
        ),
    )
    .expect("write config");
    path
}

/// Reactions, edits and receipts of the same messages, made at once through two replica
/// processes on one PostgreSQL database: none is lost, and each took its own seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaction_racing_an_edit_on_two_replicas_loses_neither() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let config = replica_config(backend.dir.path(), &backend.database_url);
    let first = Replica::start(&config).await;
    let second = Replica::start(&config).await;
    let mut client = first.client().await;
    const MESSAGES: usize = 20;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let message = send(
            &mut client,
            SESSION,
            CHAT,
            &format!("original {i}"),
            &format!("k{i}"),
        )
        .await
        .expect("send")
        .message
        .expect("message");
        ids.push(message.id);
    }
    let racers: Vec<tokio::task::JoinHandle<()>> = ids
        .iter()
        .enumerate()
        .flat_map(|(i, &id)| {
            let (a, b) = (first.url.clone(), second.url.clone());
            let (c, d) = (first.url.clone(), second.url.clone());
            [
                tokio::spawn(async move {
                    let mut client = Client::connect(a).await.expect("connect");
                    react(&mut client, id, "👍", &format!("react-{i}"))
                        .await
                        .expect("react");
                }),
                tokio::spawn(async move {
                    let mut client = Client::connect(b).await.expect("connect");
                    edit(
                        &mut client,
                        id,
                        &format!("edited {i}"),
                        &format!("edit-{i}"),
                    )
                    .await
                    .expect("edit");
                }),
                tokio::spawn(async move {
                    let mut client = Client::connect(c).await.expect("connect");
                    receipt(&mut client, id, "ana", pb::MessageStatus::Read).await;
                }),
                tokio::spawn(async move {
                    let mut client = Client::connect(d).await.expect("connect");
                    receipt(&mut client, id, "ben", pb::MessageStatus::Delivered).await;
                }),
            ]
        })
        .collect();
    for racer in racers {
        tokio::time::timeout(HANG_GUARD, racer)
            .await
            .expect("no racer hangs")
            .expect("racer");
    }
    let mut other = second.client().await;
    let messages = all_messages(&mut other, SESSION, CHAT).await;
    assert_eq!(messages.len(), MESSAGES);
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(message.text, format!("edited {i}"));
        assert_eq!(message.earlier_texts.len(), 1);
        assert_eq!(reactions(message), [("👍".to_owned(), vec![String::new()])]);
        let recipients: Vec<&str> = message
            .receipts
            .iter()
            .map(|r| r.recipient.as_str())
            .collect();
        assert_eq!(recipients, ["ana", "ben"]);
    }
    // Every change took a seq of its own: the replay has each of them once, in seq order.
    let events = replay(&mut other).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "strictly increasing seqs");
    let updates = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::MessageUpdated(_))))
        .count();
    assert_eq!(updates, MESSAGES * 4);
}

/// A WhatsApp export written with every deletion sentence and edit mark of the phrase table,
/// synced through gRPC: the deletions are DELETED with no text, the edited messages are
/// `edited` with the mark taken out of their text, and a re-sync adds nothing (the ids keep
/// hashing the line as written).
async fn whatsapp_edit_marks_and_deletion_sentences_in_every_language(backend: Backend) {
    use chatsync::sources::whatsapp::marks::LANGUAGES;
    let exports = backend.dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    let mut text = String::new();
    let mut expected: Vec<(String, bool, bool)> = Vec::new();
    let mut minute = 0;
    let mut line = |body: &str| {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 2, 20)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .expect("date")
            + chrono::Duration::minutes(minute);
        minute += 1;
        format!("{} - Ana: {body}\n", at.format("%d/%m/%Y, %H:%M"))
    };
    for language in LANGUAGES {
        for phrase in language.deleted.iter().chain(language.you_deleted) {
            text.push_str(&line(phrase.text));
            expected.push((String::new(), true, false));
        }
        for (i, mark) in language.edited.iter().enumerate() {
            let body = format!("{} message {i}", language.language);
            text.push_str(&line(&format!("{body} {}", mark.text)));
            expected.push((body, false, true));
        }
    }
    text.push_str(&line("an ordinary message"));
    expected.push(("an ordinary message".into(), false, false));
    std::fs::write(exports.join("WhatsApp Chat with Ana.txt"), text).expect("write export");
    let wa = session(
        "wa",
        "whatsapp-export",
        serde_json::json!({ "path": exports }),
    );
    let app = TestApp::spawn(&backend, vec![wa]).await;
    let mut client = app.client().await;
    crate::common::sync_frames(&mut client, "wa", Some(0)).await;
    let messages = all_messages(&mut client, "wa", "").await;
    let got: Vec<(String, bool, bool)> = messages
        .iter()
        .map(|m| {
            (
                m.text.clone(),
                m.kind == pb::MessageKind::Deleted as i32,
                m.edited,
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        expected.iter().filter(|e| e.1).count() >= 20,
        "deletion sentences tested"
    );
    assert!(
        expected.iter().filter(|e| e.2).count() >= 10,
        "edit marks tested"
    );
    let frames = crate::common::sync_frames(&mut client, "wa", Some(0)).await;
    let last = frames.last().expect("frames");
    assert_eq!(last.total_messages_synced, 0, "a re-sync adds nothing");
}
