//! What Matrix events mean to chatsync: messages, edits, redactions and room names.
//!
//! Followed: the client-server spec, "m.room.message" msgtypes, "Event replacements"
//! (`m.replace`), "Redactions", and "Calculating the display name for a room".
use ruma::UserId;
use ruma::events::room::message::{MessageType, Relation};
use ruma::events::room::redaction::SyncRoomRedactionEvent;
use ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent};
use ruma::serde::Raw;
use serde_json::Value;

use crate::model::{Attachment, MessageKind, MessageStatus, NewMessage};

/// One timeline event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineItem {
    /// A message to store. The echo of a message chatsync sent with this access token carries
    /// that message's `client_message_id` (from `unsigned.transaction_id`, see
    /// [`super::TXN_PREFIX`]).
    Message(NewMessage),
    /// An edit of an earlier message by `sender`: its new text. Only the original sender's
    /// edits count (spec: "Event replacements", validity).
    Edit {
        target: String,
        sender: String,
        text: String,
    },
    /// A redaction of an earlier event.
    Redaction { target: String },
    /// Anything else (state, reactions, calls, ...): not a message.
    Other,
}

/// The file of an `m.image`, `m.file`, `m.video` or `m.audio` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// The attachment as the event describes it, its bytes not stored yet: the name is
    /// `content.filename`, else `content.body`; the MIME type `content.info.mimetype`, else
    /// guessed from the name.
    pub attachment: Attachment,
    /// Where the bytes are (`content.url`); `None` for an encrypted file (`content.file`),
    /// which chatsync cannot decrypt.
    pub uri: Option<ruma::OwnedMxcUri>,
    /// The size `content.info.size` declares, in bytes.
    pub declared_size: Option<u64>,
}

/// The file a media message event carries, read from its raw `content`; `None` when the event
/// has no content object.
pub fn media_file<T>(raw: &Raw<T>) -> Option<MediaFile> {
    let content = raw.get_field::<Value>("content").ok().flatten()?;
    let text = |value: &Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let file_name = text(&content["filename"])
        .or_else(|| text(&content["body"]))
        .unwrap_or_else(|| "file".to_owned());
    let mime_type = text(&content["info"]["mimetype"])
        .unwrap_or_else(|| crate::sources::media::mime_for(&file_name).to_owned());
    let uri = content["url"]
        .as_str()
        .map(ruma::OwnedMxcUri::from)
        .filter(|uri| uri.is_valid());
    Some(MediaFile {
        attachment: Attachment::missing(&file_name, &mime_type),
        uri,
        declared_size: content["info"]["size"].as_u64(),
    })
}

/// Reads a timeline event from `/sync` or `/messages` (the room id, present in the latter,
/// is ignored). Events that do not deserialize are [`TimelineItem::Other`].
pub fn read_timeline_event<T>(raw: &Raw<T>, me: &UserId) -> TimelineItem {
    let Ok(event) = raw.deserialize_as_unchecked::<AnySyncTimelineEvent>() else {
        return TimelineItem::Other;
    };
    let AnySyncTimelineEvent::MessageLike(event) = event else {
        return TimelineItem::Other;
    };
    match event {
        AnySyncMessageLikeEvent::RoomMessage(SyncMessageLikeEvent::Original(event)) => {
            if let Some(Relation::Replacement(replacement)) = &event.content.relates_to {
                return TimelineItem::Edit {
                    target: replacement.event_id.to_string(),
                    sender: event.sender.to_string(),
                    text: replacement.new_content.msgtype.body().to_owned(),
                };
            }
            let kind = match &event.content.msgtype {
                MessageType::Image(_)
                | MessageType::File(_)
                | MessageType::Audio(_)
                | MessageType::Video(_) => MessageKind::Media,
                MessageType::ServerNotice(_) => MessageKind::System,
                _ => MessageKind::Text,
            };
            let echo_of = event
                .unsigned
                .transaction_id
                .as_ref()
                .and_then(|id| id.as_str().strip_prefix(super::TXN_PREFIX))
                .map(str::to_owned);
            let attachments = if kind == MessageKind::Media {
                media_file(raw)
                    .map(|file| vec![file.attachment])
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            TimelineItem::Message(NewMessage {
                provider_message_id: event.event_id.to_string(),
                client_message_id: echo_of,
                sender: event.sender.to_string(),
                text: event.content.msgtype.body().to_owned(),
                kind,
                status: MessageStatus::Sent,
                from_me: event.sender == me,
                sent_at_ms: i64::from(event.origin_server_ts.get()),
                attachments,
            })
        }
        // Redacted before we saw it: a deleted message.
        AnySyncMessageLikeEvent::RoomMessage(SyncMessageLikeEvent::Redacted(event)) => {
            TimelineItem::Message(NewMessage {
                provider_message_id: event.event_id.to_string(),
                client_message_id: None,
                sender: event.sender.to_string(),
                text: String::new(),
                kind: MessageKind::Deleted,
                status: MessageStatus::Sent,
                from_me: event.sender == me,
                sent_at_ms: i64::from(event.origin_server_ts.get()),
                attachments: Vec::new(),
            })
        }
        AnySyncMessageLikeEvent::RoomRedaction(SyncRoomRedactionEvent::Original(event)) => {
            // Room versions before 11 carry `redacts` at the top level, later ones in content.
            match event.content.redacts.or(event.redacts) {
                Some(target) => TimelineItem::Redaction {
                    target: target.to_string(),
                },
                None => TimelineItem::Other,
            }
        }
        _ => TimelineItem::Other,
    }
}

/// A room's display name from its current state events (JSON objects with `type`,
/// `state_key` and `content`), per the spec's order: `m.room.name`, else
/// `m.room.canonical_alias`, else the other members' names ("Bob", "Bob and Carol",
/// "Bob, Carol and 2 others"), else "Empty room".
pub fn room_name(state: &[Value], me: &str) -> String {
    let content_str = |event_type: &str, key: &str| {
        state
            .iter()
            .find(|e| e["type"] == event_type && e["state_key"] == "")
            .and_then(|e| e["content"][key].as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Some(name) = content_str("m.room.name", "name") {
        return name;
    }
    if let Some(alias) = content_str("m.room.canonical_alias", "alias") {
        return alias;
    }
    let mut members: Vec<String> = state
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter(|e| matches!(e["content"]["membership"].as_str(), Some("join" | "invite")))
        .filter_map(|e| {
            let user = e["state_key"].as_str()?;
            (user != me).then(|| {
                e["content"]["displayname"]
                    .as_str()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(user)
                    .to_owned()
            })
        })
        .collect();
    members.sort();
    match members.as_slice() {
        [] => "Empty room".to_owned(),
        [one] => one.clone(),
        [one, two] => format!("{one} and {two}"),
        [one, two, rest @ ..] => format!("{one}, {two} and {} others", rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> ruma::OwnedUserId {
        "@me:localhost".try_into().unwrap()
    }

    fn raw(value: Value) -> Raw<AnySyncTimelineEvent> {
        Raw::from_json_string(value.to_string()).unwrap()
    }

    #[test]
    fn reads_messages_echoes_edits_and_redactions() {
        let text = raw(json!({
            "type": "m.room.message", "event_id": "$a", "sender": "@me:localhost",
            "origin_server_ts": 1_700_000_000_123u64,
            "content": {"msgtype": "m.text", "body": "hello"},
            "unsigned": {"transaction_id": "chatsync.k1"}
        }));
        match read_timeline_event(&text, &me()) {
            TimelineItem::Message(message) => {
                assert_eq!(message.provider_message_id, "$a");
                assert_eq!(message.text, "hello");
                assert!(message.from_me);
                assert_eq!(message.kind, MessageKind::Text);
                assert_eq!(message.sent_at_ms, 1_700_000_000_123);
                assert_eq!(
                    message.client_message_id.as_deref(),
                    Some("k1"),
                    "an echo of ours"
                );
            }
            other => panic!("{other:?}"),
        }
        // A transaction id of another client is not ours.
        let foreign = raw(json!({
            "type": "m.room.message", "event_id": "$f", "sender": "@me:localhost",
            "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "from my phone"},
            "unsigned": {"transaction_id": "m1700000000.3"}
        }));
        assert!(matches!(
            read_timeline_event(&foreign, &me()),
            TimelineItem::Message(message) if message.client_message_id.is_none() && message.from_me
        ));
        let image = raw(json!({
            "type": "m.room.message", "event_id": "$i", "sender": "@bob:localhost",
            "origin_server_ts": 1, "content": {"msgtype": "m.image", "body": "cat.jpg", "url": "mxc://x/y"}
        }));
        assert!(matches!(
            read_timeline_event(&image, &me()),
            TimelineItem::Message(message) if message.kind == MessageKind::Media && !message.from_me
        ));
        let edit = raw(json!({
            "type": "m.room.message", "event_id": "$e", "sender": "@bob:localhost",
            "origin_server_ts": 2,
            "content": {"msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$a"}}
        }));
        assert_eq!(
            read_timeline_event(&edit, &me()),
            TimelineItem::Edit {
                target: "$a".into(),
                sender: "@bob:localhost".into(),
                text: "fixed".into()
            }
        );
        for redaction in [
            json!({"type": "m.room.redaction", "event_id": "$r", "sender": "@bob:localhost",
                "origin_server_ts": 3, "redacts": "$a", "content": {}}),
            json!({"type": "m.room.redaction", "event_id": "$r", "sender": "@bob:localhost",
                "origin_server_ts": 3, "content": {"redacts": "$a"}}),
        ] {
            assert_eq!(
                read_timeline_event(&raw(redaction), &me()),
                TimelineItem::Redaction {
                    target: "$a".into()
                }
            );
        }
        let redacted = raw(json!({
            "type": "m.room.message", "event_id": "$d", "sender": "@bob:localhost",
            "origin_server_ts": 4, "content": {},
            "unsigned": {"redacted_because": {"type": "m.room.redaction", "event_id": "$r",
                "sender": "@bob:localhost", "origin_server_ts": 5, "redacts": "$d", "content": {}}}
        }));
        assert!(matches!(
            read_timeline_event(&redacted, &me()),
            TimelineItem::Message(message) if message.kind == MessageKind::Deleted && message.text.is_empty()
        ));
        let state = raw(
            json!({"type": "m.room.topic", "event_id": "$t", "sender": "@bob:localhost",
            "origin_server_ts": 5, "state_key": "", "content": {"topic": "x"}}),
        );
        assert_eq!(read_timeline_event(&state, &me()), TimelineItem::Other);
        assert_eq!(
            read_timeline_event(&raw(json!({"nonsense": true})), &me()),
            TimelineItem::Other
        );
    }

    #[test]
    fn names_rooms_in_the_spec_order() {
        let member = |user: &str, name: Option<&str>, membership: &str| {
            json!({"type": "m.room.member", "state_key": user,
                "content": {"membership": membership, "displayname": name}})
        };
        let mut state = vec![
            member("@me:localhost", Some("Me"), "join"),
            member("@bob:localhost", Some("Bob"), "join"),
        ];
        assert_eq!(room_name(&state, "@me:localhost"), "Bob");
        state.push(member("@carol:localhost", None, "invite"));
        assert_eq!(
            room_name(&state, "@me:localhost"),
            "@carol:localhost and Bob"
        );
        state.push(member("@dan:localhost", Some("Dan"), "join"));
        state.push(member("@eve:localhost", Some("Eve"), "leave"));
        state.push(member("@fay:localhost", Some("Fay"), "join"));
        assert_eq!(
            room_name(&state, "@me:localhost"),
            "@carol:localhost, Bob and 2 others"
        );
        state.push(json!({"type": "m.room.canonical_alias", "state_key": "", "content": {"alias": "#team:localhost"}}));
        assert_eq!(room_name(&state, "@me:localhost"), "#team:localhost");
        state.push(json!({"type": "m.room.name", "state_key": "", "content": {"name": " Team "}}));
        assert_eq!(room_name(&state, "@me:localhost"), "Team");
        assert_eq!(room_name(&[], "@me:localhost"), "Empty room");
    }
}
