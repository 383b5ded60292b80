//! What Matrix events mean to chatsync: messages, edits, redactions, room names and members.
//!
//! Followed: the client-server spec, "m.room.message" msgtypes, "Rich replies"
//! (`m.in_reply_to`), "Event replacements" (`m.replace`), "Event annotations and reactions"
//! (`m.annotation`), "Redactions", and "Calculating the display name for a room".
use ruma::UserId;
use ruma::events::reaction::SyncReactionEvent;
use ruma::events::room::message::sanitize::remove_plain_reply_fallback;
use ruma::events::room::message::{MessageType, Relation};
use ruma::events::room::redaction::SyncRoomRedactionEvent;
use ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent};
use ruma::serde::Raw;
use serde_json::Value;

use crate::model::{
    Attachment, MemberEvent, Membership, MessageKind, MessageStatus, NewContact, NewMessage, People,
};

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
        /// `origin_server_ts` (Unix ms).
        at_ms: i64,
    },
    /// A redaction of an earlier event by `sender` at `at_ms` (Unix ms).
    Redaction {
        target: String,
        sender: String,
        at_ms: i64,
    },
    /// A reaction (`m.reaction`, an `m.annotation` of `target` with `key`) by `sender`: its
    /// own event id is `event_id`, which a redaction of the reaction names.
    Reaction {
        target: String,
        event_id: String,
        sender: String,
        key: String,
        /// `origin_server_ts` (Unix ms).
        at_ms: i64,
    },
    /// Anything else (state, calls, redacted reactions, ...): not a message.
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
                    at_ms: i64::from(event.origin_server_ts.get()),
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
            // A reply names the event it quotes in `m.in_reply_to`; so does a reply within a
            // thread, where an `m.in_reply_to` that is only a fallback for clients without
            // threads (`is_falling_back`) is no reply.
            let reply_to = match &event.content.relates_to {
                Some(Relation::Reply(reply)) => Some(reply.in_reply_to.event_id.to_string()),
                Some(Relation::Thread(thread)) if !thread.is_falling_back => thread
                    .in_reply_to
                    .as_ref()
                    .map(|reply| reply.event_id.to_string()),
                _ => None,
            };
            let body = event.content.msgtype.body();
            // Older clients quote the replied-to message in the body ("> <@bob> …" lines, the
            // reply fallback, removed from the spec in v1.13): the quote is `reply_to`.
            let text = if reply_to.is_some() {
                remove_plain_reply_fallback(body)
            } else {
                body
            };
            TimelineItem::Message(NewMessage {
                provider_message_id: event.event_id.to_string(),
                client_message_id: echo_of,
                sender: event.sender.to_string(),
                text: text.to_owned(),
                reply_to,
                kind,
                status: MessageStatus::Sent,
                from_me: event.sender == me,
                sent_at_ms: i64::from(event.origin_server_ts.get()),
                attachments,
                ..NewMessage::default()
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
                ..NewMessage::default()
            })
        }
        AnySyncMessageLikeEvent::RoomRedaction(SyncRoomRedactionEvent::Original(event)) => {
            // Room versions before 11 carry `redacts` at the top level, later ones in content.
            match event.content.redacts.or(event.redacts) {
                Some(target) => TimelineItem::Redaction {
                    target: target.to_string(),
                    sender: event.sender.to_string(),
                    at_ms: i64::from(event.origin_server_ts.get()),
                },
                None => TimelineItem::Other,
            }
        }
        AnySyncMessageLikeEvent::Reaction(SyncReactionEvent::Original(event)) => {
            TimelineItem::Reaction {
                target: event.content.relates_to.event_id.to_string(),
                event_id: event.event_id.to_string(),
                sender: event.sender.to_string(),
                key: event.content.relates_to.key,
                at_ms: i64::from(event.origin_server_ts.get()),
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

/// The people of `m.room.member` events (JSON objects; other events are passed over), in
/// `origin_server_ts` order: each member is a contact (id and `matrix_id`: the user id; name:
/// `displayname`, else the user id). `join` is a join, unless the previous content (in
/// `unsigned.prev_content`) was a join too (a profile change: seen); `leave` and `ban` are a
/// leave (keeping the name: from `prev_content`, else unchanged); `invite` and `knock` make a
/// participant with no times.
pub fn member_people<'a>(events: impl IntoIterator<Item = &'a Value>) -> People {
    let mut members: Vec<&Value> = events
        .into_iter()
        .filter(|e| e["type"] == "m.room.member")
        .collect();
    members.sort_by_key(|e| e["origin_server_ts"].as_i64().unwrap_or(0));
    let mut people = People::default();
    for event in members {
        let Some(user) = event["state_key"].as_str().filter(|u| u.starts_with('@')) else {
            continue;
        };
        let at = event["origin_server_ts"].as_i64();
        let was_member = event["unsigned"]["prev_content"]["membership"] == "join";
        let membership = match (event["content"]["membership"].as_str(), at) {
            (Some("join"), Some(_)) if !was_member => Membership::Joined,
            (Some("leave" | "ban"), Some(_)) => Membership::Left,
            (Some("join" | "leave" | "ban" | "invite" | "knock"), _) => Membership::Seen,
            _ => continue,
        };
        // A leave carries no name: it keeps the stored one (an empty name changes nothing).
        let name = [&event["content"], &event["unsigned"]["prev_content"]]
            .into_iter()
            .find_map(|content| content["displayname"].as_str())
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(if membership == Membership::Left {
                ""
            } else {
                user
            });
        people.contacts.push(NewContact {
            contact_id: user.to_owned(),
            display_name: name.to_owned(),
            phone: None,
            matrix_id: Some(user.to_owned()),
        });
        people.members.push(MemberEvent {
            contact_id: user.to_owned(),
            membership,
            at_ms: at.unwrap_or(0),
        });
    }
    people
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
                text: "fixed".into(),
                at_ms: 2,
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
                    target: "$a".into(),
                    sender: "@bob:localhost".into(),
                    at_ms: 3,
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
    fn reads_replies_and_reactions() {
        let reply = raw(json!({
            "type": "m.room.message", "event_id": "$b", "sender": "@bob:localhost",
            "origin_server_ts": 10,
            "content": {"msgtype": "m.text",
                "body": "> <@me:localhost> hello\n> there\n\nhi yourself",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}
        }));
        match read_timeline_event(&reply, &me()) {
            TimelineItem::Message(message) => {
                assert_eq!(message.reply_to.as_deref(), Some("$a"));
                assert_eq!(message.text, "hi yourself", "the reply fallback removed");
            }
            other => panic!("{other:?}"),
        }
        // Without `m.in_reply_to`, a body that looks like a quote is kept as written.
        let quote = raw(json!({
            "type": "m.room.message", "event_id": "$q", "sender": "@bob:localhost",
            "origin_server_ts": 10,
            "content": {"msgtype": "m.text", "body": "> <@me:localhost> hello\n\nas you said"}
        }));
        assert!(matches!(
            read_timeline_event(&quote, &me()),
            TimelineItem::Message(message) if message.reply_to.is_none() && message.text.starts_with("> <@me")
        ));
        // In a thread: a genuine reply counts, the fallback for thread-less clients does not.
        for (falling_back, expected) in [(false, Some("$a")), (true, None)] {
            let threaded = raw(json!({
                "type": "m.room.message", "event_id": "$t", "sender": "@bob:localhost",
                "origin_server_ts": 11,
                "content": {"msgtype": "m.text", "body": "in the thread",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                        "is_falling_back": falling_back, "m.in_reply_to": {"event_id": "$a"}}}
            }));
            match read_timeline_event(&threaded, &me()) {
                TimelineItem::Message(message) => {
                    assert_eq!(message.reply_to.as_deref(), expected);
                    assert_eq!(message.text, "in the thread");
                }
                other => panic!("{other:?}"),
            }
        }
        let reaction = raw(json!({
            "type": "m.reaction", "event_id": "$r", "sender": "@bob:localhost",
            "origin_server_ts": 12,
            "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": "👍"}}
        }));
        assert_eq!(
            read_timeline_event(&reaction, &me()),
            TimelineItem::Reaction {
                target: "$a".into(),
                event_id: "$r".into(),
                sender: "@bob:localhost".into(),
                key: "👍".into(),
                at_ms: 12,
            }
        );
        // A reaction redacted before we saw it has no content left: nothing.
        let redacted = raw(json!({
            "type": "m.reaction", "event_id": "$r", "sender": "@bob:localhost",
            "origin_server_ts": 12, "content": {},
            "unsigned": {"redacted_because": {"type": "m.room.redaction", "event_id": "$x",
                "sender": "@bob:localhost", "origin_server_ts": 13, "redacts": "$r", "content": {}}}
        }));
        assert_eq!(read_timeline_event(&redacted, &me()), TimelineItem::Other);
    }

    #[test]
    fn member_events_become_contacts_and_joins_and_leaves() {
        let events = [
            json!({"type": "m.room.member", "state_key": "@bob:localhost", "origin_server_ts": 20,
                "content": {"membership": "leave"},
                "unsigned": {"prev_content": {"membership": "join", "displayname": "Bobby"}}}),
            json!({"type": "m.room.member", "state_key": "@bob:localhost", "origin_server_ts": 10,
                "content": {"membership": "join", "displayname": "Bob"}}),
            json!({"type": "m.room.member", "state_key": "@bob:localhost", "origin_server_ts": 15,
                "content": {"membership": "join", "displayname": "Bobby"},
                "unsigned": {"prev_content": {"membership": "join"}}}),
            json!({"type": "m.room.member", "state_key": "@eve:localhost", "origin_server_ts": 30,
                "content": {"membership": "invite"}}),
            json!({"type": "m.room.topic", "state_key": "", "origin_server_ts": 5, "content": {}}),
        ];
        let people = member_people(&events);
        let names: Vec<(&str, &str)> = people
            .contacts
            .iter()
            .map(|c| (c.contact_id.as_str(), c.display_name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("@bob:localhost", "Bob"),
                ("@bob:localhost", "Bobby"),
                ("@bob:localhost", "Bobby"),
                ("@eve:localhost", "@eve:localhost")
            ]
        );
        assert!(
            people
                .contacts
                .iter()
                .all(|c| c.matrix_id.as_deref() == Some(c.contact_id.as_str()))
        );
        let members: Vec<(Membership, i64)> = people
            .members
            .iter()
            .map(|m| (m.membership, m.at_ms))
            .collect();
        assert_eq!(
            members,
            [
                (Membership::Joined, 10),
                (Membership::Seen, 15),
                (Membership::Left, 20),
                (Membership::Seen, 30)
            ]
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
