//! Telegram exports' message lifecycle fields (issue 17), through gRPC, on SQLite and
//! PostgreSQL: a `result.json` written here with replies (within the window, to a message later
//! in the file, to one outside the window, into another chat), forwards (named and hidden),
//! edits (exact and wall-clock) and reactions (emoji, custom emoji, paid, more counted than
//! listed) is synced, read back through ListMessages, synced again (nothing new, no duplicate
//! reaction) and synced whole (the reply outside the first window resolves).

use std::path::Path;

use crate::common::*;
use chatsync::grpc::pb;

on_both_backends!(telegram_replies_forwards_edits_and_reactions_reach_list_messages);

/// 2025-01-12T14:00:00Z, 15:00 in Berlin (CET, UTC+1), the export's zone.
const T: i64 = 1_736_690_400;

/// Berlin wall-clock time of `T + offset` seconds, as Telegram Desktop writes `date`.
fn local(offset: i64) -> String {
    let at = chrono::DateTime::from_timestamp(T + offset + 3_600, 0).expect("time");
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// One ordinary message `id`, sent at `T + 60 * (id - 1)` by `from`, with `extra` fields.
fn message(id: i64, from: (&str, &str), text: &str, extra: serde_json::Value) -> serde_json::Value {
    let offset = 60 * (id - 1);
    let mut message = serde_json::json!({
        "id": id,
        "type": "message",
        "date": local(offset),
        "date_unixtime": (T + offset).to_string(),
        "from": from.0,
        "from_id": from.1,
        "text": text,
        "text_entities": [{"type": "plain", "text": text}],
    });
    if let (Some(fields), serde_json::Value::Object(extra)) = (message.as_object_mut(), extra) {
        fields.extend(extra);
    }
    message
}

/// The export: a supergroup of nine messages (see the module docs for what each carries).
fn write_export(dir: &Path) {
    const ANN: (&str, &str) = ("Ann", "user1");
    const BOB: (&str, &str) = ("Bob", "user2");
    const CY: (&str, &str) = ("Cy", "user3");
    let messages = vec![
        message(1, ANN, "the oldest", serde_json::json!({})),
        message(
            2,
            ANN,
            "dinner at eight?",
            serde_json::json!({"reactions": [
                {"type": "emoji", "count": 5, "emoji": "👍", "recent": [
                    {"from": "Bob", "from_id": "user2", "date": local(1_800)},
                    {"from": "Cy", "from_id": "user3", "date": local(1_860)}
                ]},
                {"type": "custom_emoji", "count": 1, "document_id": "5368324170671202286",
                 "recent": [{"from": "Ann", "from_id": "user1", "date": local(1_920)}]},
                {"type": "paid", "count": 10}
            ]}),
        ),
        message(
            3,
            BOB,
            "yes, at eight",
            serde_json::json!({"reply_to_message_id": 2, "edited": local(600),
                               "edited_unixtime": (T + 600).to_string()}),
        ),
        message(
            4,
            CY,
            "about the oldest",
            serde_json::json!({"reply_to_message_id": 1}),
        ),
        message(
            5,
            BOB,
            "road closed tonight",
            serde_json::json!({"forwarded_from": "Daily News"}),
        ),
        message(
            6,
            ANN,
            "from someone hidden",
            serde_json::json!({"forwarded_from": null, "edited": local(1_200)}),
        ),
        message(
            7,
            ANN,
            "see below",
            serde_json::json!({"reply_to_message_id": 9}),
        ),
        message(
            8,
            CY,
            "from another chat",
            serde_json::json!({"reply_to_message_id": 3, "reply_to_peer_id": "channel999"}),
        ),
        message(
            9,
            BOB,
            "below",
            serde_json::json!({"reactions": [
                {"type": "emoji", "count": 1, "emoji": "❤", "recent": [
                    {"from": "Dee", "date": local(2_400)}
                ]}
            ]}),
        ),
    ];
    let export = serde_json::json!({
        "name": "Crew",
        "type": "private_supergroup",
        "id": 500,
        "messages": messages,
    });
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(&export).expect("json"),
    )
    .expect("write");
}

/// The message whose provider id is `id`.
fn by_id<'a>(messages: &'a [pb::Message], id: &str) -> &'a pb::Message {
    messages
        .iter()
        .find(|m| m.provider_message_id == id)
        .unwrap_or_else(|| panic!("message {id} in {messages:?}"))
}

/// A message's reactions as (emoji, [(sender, seconds)]).
fn reactions(message: &pb::Message) -> Vec<(String, Vec<(String, i64)>)> {
    message
        .reactions
        .iter()
        .map(|reaction| {
            let reactors = reaction
                .reactors
                .iter()
                .map(|r| {
                    let at = r.reacted_at.as_ref().expect("reacted_at").seconds;
                    (r.sender.clone(), at)
                })
                .collect();
            (reaction.emoji.clone(), reactors)
        })
        .collect()
}

/// A message's reply as (quoted provider id, quoted server id; 0 while not stored).
fn reply(message: &pb::Message) -> Option<(String, u64)> {
    message
        .reply_to
        .as_ref()
        .map(|r| (r.provider_message_id.clone(), r.message_id))
}

async fn telegram_replies_forwards_edits_and_reactions_reach_list_messages(backend: Backend) {
    let export = backend.dir.path().join("telegram");
    write_export(&export);
    let app = TestApp::spawn(
        &backend,
        vec![session(
            "tg",
            "telegram-export",
            serde_json::json!({"path": export, "timezone": "Europe/Berlin"}),
        )],
    )
    .await;
    let mut client = app.client().await;

    // The newest eight: message 1 stays out.
    let frames = sync_frames(&mut client, "tg", Some(8)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(8));
    assert_eq!(frames.last().map(|f| f.total_unplaced_lines), Some(0));
    let messages = all_messages(&mut client, "tg", "tg-500").await;
    assert_eq!(messages.len(), 8);
    let id_of = |id: &str| by_id(&messages, id).id;

    // Replies: resolved when the quoted message is stored (also one later in the file), 0 for
    // one outside the window, none for a reply into another chat.
    assert_eq!(reply(by_id(&messages, "3")), Some(("2".into(), id_of("2"))));
    assert_eq!(reply(by_id(&messages, "4")), Some(("1".into(), 0)));
    assert_eq!(reply(by_id(&messages, "7")), Some(("9".into(), id_of("9"))));
    assert_eq!(reply(by_id(&messages, "8")), None);
    assert_ne!(id_of("9"), 0);

    // Forwards: named, and hidden (null) which is still forwarded.
    let named = by_id(&messages, "5");
    assert!(named.forwarded && !named.frequently_forwarded);
    assert_eq!(named.forwarded_from, "Daily News");
    let hidden = by_id(&messages, "6");
    assert!(hidden.forwarded && !hidden.frequently_forwarded);
    assert_eq!(hidden.forwarded_from, "");

    // Edits: edited_unixtime exact; a bare `edited` read in the session's zone.
    let exact = by_id(&messages, "3");
    assert!(exact.edited);
    assert_eq!(exact.edited_at.as_ref().map(|t| t.seconds), Some(T + 600));
    assert_eq!(exact.text, "yes, at eight");
    assert!(hidden.edited);
    assert_eq!(
        hidden.edited_at.as_ref().map(|t| t.seconds),
        Some(T + 1_200)
    );

    // Reactions, grouped by emoji with their reactors oldest first; a reactor without an id is
    // named; the paid reaction and the three 👍 not listed in `recent` are not stored.
    assert_eq!(
        reactions(by_id(&messages, "2")),
        vec![
            (
                "👍".to_owned(),
                vec![
                    ("user2".to_owned(), T + 1_800),
                    ("user3".to_owned(), T + 1_860)
                ]
            ),
            (
                "custom_emoji:5368324170671202286".to_owned(),
                vec![("user1".to_owned(), T + 1_920)]
            ),
        ]
    );
    assert_eq!(
        reactions(by_id(&messages, "9")),
        vec![("❤".to_owned(), vec![("Dee".to_owned(), T + 2_400)])]
    );

    // Messages without lifecycle fields carry none.
    for plain in ["2", "4", "7", "9"] {
        let message = by_id(&messages, plain);
        assert!(!message.forwarded && !message.edited, "{message:?}");
        assert!(message.edited_at.is_none() && message.forwarded_from.is_empty());
    }
    for plain in ["3", "4", "5", "6", "7", "8"] {
        assert!(by_id(&messages, plain).reactions.is_empty(), "{plain}");
    }

    // A reactor with an id is a contact, named as the export names them.
    let contacts = client
        .list_contacts(pb::ListContactsRequest {
            session_id: "tg".into(),
            after_seq: 0,
            limit: 100,
        })
        .await
        .expect("ListContacts")
        .into_inner()
        .contacts;
    assert!(
        contacts
            .iter()
            .any(|c| c.contact_id == "user3" && c.display_name == "Cy"),
        "{contacts:?}"
    );

    // The same sync again: nothing new, nothing doubled.
    let again = sync_frames(&mut client, "tg", Some(8)).await;
    assert_eq!(again.last().map(stage), Some(SyncStage::Completed));
    assert_eq!(again.last().map(|f| f.total_messages_synced), Some(0));
    assert_eq!(all_messages(&mut client, "tg", "tg-500").await, messages);

    // The whole history: message 1 arrives and the reply to it resolves; nothing else changes.
    let whole = sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(whole.last().map(|f| f.total_messages_synced), Some(1));
    let after = all_messages(&mut client, "tg", "tg-500").await;
    assert_eq!(after.len(), 9);
    let oldest = by_id(&after, "1").id;
    assert_ne!(oldest, 0);
    assert_eq!(reply(by_id(&after, "4")), Some(("1".into(), oldest)));
    for id in ["2", "3", "5", "6", "7", "8", "9"] {
        assert_eq!(by_id(&after, id), by_id(&messages, id), "message {id}");
    }

    app.stop().await;
}
