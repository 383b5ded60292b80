//! Parser for Telegram Desktop's JSON export (`result.json`).
//!
//! Contract:
//! - Pure and synchronous: [`parse`] takes the bytes of one export file, does no I/O, holds no
//!   state, and never panics, whatever the input.
//! - Two shapes are accepted. A single-chat export is a top-level object with `messages` (and
//!   usually `name`, `type`, `id`); it yields one chat. A whole-account export ("Export
//!   Telegram data") has `chats.list[]` and possibly `left_chats.list[]`; it yields every chat
//!   of `chats.list` followed by every chat of `left_chats.list`, in file order. Everything else
//!   in an account export (personal information, contacts, sessions, ...) is ignored. A
//!   top-level `messages` wins over `chats` should a file have both.
//! - The file is rejected only when it is not JSON ([`TelegramError::Json`]) or when its
//!   top level is not shaped like either export ([`TelegramError::Shape`]). Inside a chat the
//!   parser is lenient: unknown fields are ignored, fields of an unexpected JSON type read as
//!   absent, duplicate keys keep the last value (the first non-empty one for `text`), and a
//!   message that is not an object or has no usable date is skipped and counted in
//!   [`TelegramChat::skipped`].
//! - Time: `sent_at_unix` comes from `date_unixtime` (seconds, a string or a number; exact,
//!   and written by Telegram Desktop since 2021). When that is absent or unreadable, `date` is
//!   read as a wall-clock time in the `timezone` given to [`parse`]: Telegram writes `date` in
//!   the exporting computer's local time zone, which the file does not record, so the session
//!   says which it was (default UTC). A `date` with an explicit offset is exact. A wall-clock
//!   time in a DST gap is read one hour later; an ambiguous one takes the earlier instant.
//!   `edited_unixtime` and `edited` give `edited_at_unix` by the same rules.
//! - Text: `text` is either a string or an array of strings and entity objects
//!   (`{type, text, href?}`); the visible text of the parts is concatenated, with nothing added
//!   between them (links keep their visible text, not their `href`). When `text` is empty,
//!   `text_entities` is flattened the same way. Service messages get a readable English line
//!   built from `actor`, `action` and the action's fields ("Alice joined Telegram", "Bob
//!   called (1 min 5 s)").
//! - Messages keep file order; the parser neither sorts nor de-duplicates them.
//!
//! Message lifecycle fields (issue 17). The shapes are those Telegram Desktop's JSON writer
//! emits (`Telegram/SourceFiles/export/output/export_output_json.cpp`, `SerializeMessage`, as
//! of tdesktop commit 929032d5 of 2025-09-06), confirmed by exports users posted (tdesktop
//! pull requests #28068 and #28252, mlomb/chat-analytics issue #128) and by the reaction types
//! kant2002/TelegramExportProcessor lists (`emoji`, `custom_emoji`, `paid`):
//! - `reply_to_message_id` (a number): the id of the quoted message. Telegram adds
//!   `reply_to_peer_id` (`channel123`, `user123`, `chat123`) for a reply into another chat;
//!   such a reply is dropped, as is one whose peer cannot be read, since only replies within
//!   the chat are kept ([`TelegramMessage::reply_to`]). A peer naming the chat itself (some
//!   versions write it) keeps the reply.
//! - `forwarded_from`: the original sender's name, or null when Telegram has no name it may show
//!   (a deleted account, a hidden sender's empty name): present at all means forwarded.
//!   `forwarded_from_id` is not written by Telegram Desktop; a variant that writes it marks the
//!   message forwarded too, and names the sender when `forwarded_from` does not. `saved_from`
//!   (a message saved to Saved Messages) is not a forward of its own and is ignored.
//! - `edited` (local ISO time) and `edited_unixtime` (seconds, since tdesktop 2022-06): see Time
//!   above. A message is edited when either is present, even unreadable.
//! - `reactions` (written since tdesktop 2024-09-30, PR #28252: exports made since then, of
//!   reactions of any age): an array of
//!   `{"type", "count", "emoji" | "document_id", "recent": [{"from", "from_id", "date"}]}`.
//!   Each `recent` entry is one attributed reaction: its sender is `from_id` (the id form
//!   senders have, `user123`), else the name `from`; an entry with neither is skipped. Its time
//!   is `date_unixtime` when present (Telegram Desktop writes none), else `date`, a local
//!   wall-clock time read in the export's zone like a message's `date`, else the message's own
//!   time. `type: custom_emoji` reactions are keyed `custom_emoji:{document_id}` (the sticker
//!   document that draws them: stable, and a client can fetch it by that id). A reaction
//!   without `type` but with `emoji` is read as an emoji (hand-written exports). `paid`
//!   (Telegram Stars, no emoji), `empty` and unknown types are skipped, as is any entry not
//!   shaped as above. The gap: `recent` lists only the reactions Telegram let the exporter see
//!   (recent ones, in small chats), so a `count` above the length of `recent` leaves reactions
//!   without a sender. Those are not stored (a reaction in chatsync has a sender and a time);
//!   [`TelegramMessage::unattributed_reactions`] counts them and the source logs the total
//!   per chat at debug level.
//!
//! The input is streamed through hand-written serde visitors rather than a `serde_json::Value`
//! tree, so a 100,000-message export parses in one pass with one small allocation per field.

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, NaiveDateTime};
use chrono_tz::Tz;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::model::{Membership, MessageKind};

/// Why a file could not be read as a Telegram export.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// The input is not valid JSON (syntax error, truncated file, invalid UTF-8, nesting too
    /// deep). Carries `serde_json`'s message, which names the line and column.
    #[error("not a Telegram export: {0}")]
    Json(String),
    /// The input is JSON, but its top level is neither a single-chat export nor an account
    /// export.
    #[error("not a Telegram export: {0}")]
    Shape(&'static str),
}

/// One chat of an export, with its messages in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct TelegramChat {
    /// Telegram's chat id (`id`), when present.
    pub id: Option<i64>,
    /// The chat's `name`; when absent or empty, "Saved Messages" for a `saved_messages` chat,
    /// else "Telegram chat {id}", else "Telegram chat".
    pub name: String,
    /// The chat's `type` as written (`personal_chat`, `private_group`, `private_supergroup`,
    /// `saved_messages`, ...); empty when absent.
    pub kind: String,
    /// The messages that could be placed in time, in file order.
    pub messages: Vec<TelegramMessage>,
    /// Entries of `messages` that were left out: not an object, or neither `date_unixtime`
    /// nor `date` could be read.
    pub skipped: usize,
}

/// Who joined or left a group, by a service message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub membership: Membership,
    /// The names as written in `members` (null names, deleted accounts, left out), or the
    /// actor's name for a join by link or request.
    pub names: Vec<String>,
}

/// One message, reduced to what the importer stores.
#[derive(Debug, Clone, PartialEq)]
pub struct TelegramMessage {
    /// Telegram's message id (`id`), when present.
    pub id: Option<i64>,
    /// Seconds since the Unix epoch: `date_unixtime`, else `date` read in the export's time
    /// zone (see the module docs).
    pub sent_at_unix: i64,
    /// When the message was last edited, in seconds since the Unix epoch: `edited_unixtime`,
    /// else `edited` read like `date`; `None` when never edited (or unreadable).
    pub edited_at_unix: Option<i64>,
    /// Whether the message was edited: `edited` or `edited_unixtime` is present and not blank
    /// (even when neither can be read as a time).
    pub edited: bool,
    /// `reply_to_message_id`: the id of the message this one replies to, in the same chat. A
    /// reply into another chat (`reply_to_peer_id` naming a peer other than the chat) is left
    /// out.
    pub reply_to: Option<i64>,
    /// Whether the message was forwarded: `forwarded_from` is present (even as null, which
    /// Telegram writes when the original sender has no name it may show), or
    /// `forwarded_from_id` is.
    pub forwarded: bool,
    /// The original sender of a forwarded message: `forwarded_from`, else `forwarded_from_id`;
    /// `None` when neither names one.
    pub forwarded_from: Option<String>,
    /// The attributed reactions (`reactions[].recent[]`), in file order, at most one per
    /// sender and emoji.
    pub reactions: Vec<TelegramReaction>,
    /// Reactions counted (`reactions[].count`) but not listed in `recent`, so without a sender:
    /// not stored (see the module docs). Counted over the reaction types that are read.
    pub unattributed_reactions: u64,
    /// `from` for ordinary messages, `actor` for service messages (each falls back to the
    /// other); `None` when absent, null or empty (Telegram writes null for deleted accounts).
    pub sender: Option<String>,
    /// The sender's user id: `from_id` for ordinary messages, `actor_id` for service messages
    /// (each falls back to the other), as written (`user123`); `None` when absent.
    pub sender_id: Option<String>,
    /// The membership change a service message records (`invite_members`, `remove_members`,
    /// `create_group`, `join_group_by_link`, `join_group_by_request`); `None` otherwise.
    pub membership: Option<MembershipChange>,
    /// The plain text (entities flattened); for service messages a readable line built from
    /// the action; empty for a media message without caption.
    pub text: String,
    /// `System` for `type: service`; `Media` when the message carries an attachment (photo,
    /// file, sticker, media type, contact, location, poll, game, invoice) and no text; `Text`
    /// otherwise. Never `Deleted`: Telegram does not export deleted messages.
    pub kind: MessageKind,
    /// The `photo` and `file` values of a message, as written: paths relative to the export
    /// folder, or Telegram's note that the file was not exported.
    pub media_files: Vec<String>,
    /// The `mime_type` Telegram gives a `file`, when it does.
    pub mime_type: Option<String>,
    /// Whether `sent_at_unix` / `edited_at_unix` were read from a wall-clock `date` /
    /// `edited` as if in UTC, and still need the export's time zone ([`parse`] applies it).
    wall_clock: (bool, bool),
    /// `reply_to_peer_id` as written, checked against the chat's id once it is known.
    reply_to_peer: Option<String>,
}

/// One attributed reaction: an entry of `recent` under one of a message's `reactions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramReaction {
    /// The reaction's `emoji`; for `type: custom_emoji`, `custom_emoji:` followed by its
    /// `document_id` (Telegram's id of the sticker document that draws it, stable across
    /// exports).
    pub emoji: String,
    /// The reactor's id as written (`from_id`: `user123`, or `channel123` / `chat123` for a
    /// chat reacting as itself); `None` when absent.
    pub from_id: Option<String>,
    /// The reactor's name (`from`); `None` when absent or null (a deleted account).
    pub from: Option<String>,
    /// When, in seconds since the Unix epoch: `date_unixtime` when present, else `date` (local
    /// time, read like a message's `date`), else the message's own time.
    pub at_unix: i64,
    /// Whether `at_unix` is a wall-clock time read as UTC ([`parse`] applies the zone).
    wall_clock: bool,
}

impl TelegramReaction {
    /// Who reacted, as chatsync stores it: the id when the export gives one, else the name.
    pub fn sender(&self) -> &str {
        self.from_id
            .as_deref()
            .or(self.from.as_deref())
            .unwrap_or_default()
    }
}

/// Parses one export file; returns every chat in it (1 for a single-chat export). Wall-clock
/// `date`/`edited` values (used only without `date_unixtime`/`edited_unixtime`) are read in
/// `timezone`.
///
/// A UTF-8 byte-order mark before the JSON is tolerated.
///
/// # Errors
///
/// [`TelegramError::Json`] when the input is not valid JSON; [`TelegramError::Shape`] when
/// the top level is not an object, or has neither a `messages` array nor a `chats` object
/// with a `list` array.
pub fn parse(input: &[u8], timezone: Tz) -> Result<Vec<TelegramChat>, TelegramError> {
    let mut chats = parse_utc(input)?;
    for message in chats.iter_mut().flat_map(|chat| chat.messages.iter_mut()) {
        let (sent, edited) = std::mem::take(&mut message.wall_clock);
        if sent {
            message.sent_at_unix = in_zone(message.sent_at_unix, timezone);
        }
        if edited {
            message.edited_at_unix = message.edited_at_unix.map(|at| in_zone(at, timezone));
        }
        for reaction in &mut message.reactions {
            if std::mem::take(&mut reaction.wall_clock) {
                reaction.at_unix = in_zone(reaction.at_unix, timezone);
            }
        }
    }
    Ok(chats)
}

/// A wall-clock time read as if in UTC (`unix`), re-read in `timezone`.
fn in_zone(unix: i64, timezone: Tz) -> i64 {
    match DateTime::from_timestamp(unix, 0) {
        Some(utc) => crate::sources::export::to_utc_ms(&utc.naive_utc(), timezone) / 1000,
        None => unix,
    }
}

/// [`parse`] with wall-clock times read as UTC and flagged in `wall_clock`.
fn parse_utc(input: &[u8]) -> Result<Vec<TelegramChat>, TelegramError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let root: RawRoot =
        serde_json::from_slice(input).map_err(|error| TelegramError::Json(error.to_string()))?;
    if !root.is_object {
        return Err(TelegramError::Shape(
            "the top-level JSON value is not an object",
        ));
    }
    if let Some(messages) = root.messages {
        if !messages.is_array {
            return Err(TelegramError::Shape("`messages` is not an array"));
        }
        return Ok(vec![build_chat(&root.header, messages)]);
    }
    if root.chats.is_none() && root.left_chats.is_none() {
        return Err(TelegramError::Shape(
            "the top-level object has neither `messages` nor `chats`",
        ));
    }
    let mut chats = Vec::new();
    let mut found_list = false;
    for section in [root.chats, root.left_chats].into_iter().flatten() {
        if !section.is_object {
            return Err(TelegramError::Shape("`chats` is not an object"));
        }
        if let Some(list) = section.list {
            if !list.is_array {
                return Err(TelegramError::Shape("`chats.list` is not an array"));
            }
            found_list = true;
            chats.extend(list.chats);
        }
    }
    if !found_list {
        return Err(TelegramError::Shape("`chats` has no `list`"));
    }
    Ok(chats)
}

// ---------------------------------------------------------------------------------------------
// Object keys: matched without allocating, unknown keys map to `Other`.

trait FieldKey: Sized {
    fn from_key(key: &str) -> Self;
}

struct Key<K>(K);

impl<'de, K: FieldKey> Deserialize<'de> for Key<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<K>(PhantomData<K>);

        impl<K: FieldKey> Visitor<'_> for KeyVisitor<K> {
            type Value = Key<K>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Key<K>, E> {
                Ok(Key(K::from_key(value)))
            }
        }

        deserializer.deserialize_identifier(KeyVisitor(PhantomData))
    }
}

/// Fallbacks for a visitor that expects an object or an array but must accept any scalar:
/// each returns `$fallback`.
macro_rules! accept_scalars {
    ($fallback:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($fallback)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($fallback)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($fallback)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($fallback)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($fallback)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($fallback)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($fallback)
        }
    };
}

/// Fallback for a visitor that expects an object but must accept an array.
macro_rules! accept_seq {
    ($fallback:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($fallback)
        }
    };
}

/// Fallback for a visitor that expects an array but must accept an object.
macro_rules! accept_map {
    ($fallback:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($fallback)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Top level.

#[derive(Default)]
struct ChatHeader {
    name: Value,
    kind: Value,
    id: Value,
}

#[derive(Default)]
struct RawRoot {
    is_object: bool,
    header: ChatHeader,
    messages: Option<MessageList>,
    chats: Option<Section>,
    left_chats: Option<Section>,
}

enum RootKey {
    Name,
    Type,
    Id,
    Messages,
    Chats,
    LeftChats,
    Other,
}

impl FieldKey for RootKey {
    fn from_key(key: &str) -> Self {
        match key {
            "name" => Self::Name,
            "type" => Self::Type,
            "id" => Self::Id,
            "messages" => Self::Messages,
            "chats" => Self::Chats,
            "left_chats" => Self::LeftChats,
            _ => Self::Other,
        }
    }
}

impl<'de> Deserialize<'de> for RawRoot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RootVisitor;

        impl<'de> Visitor<'de> for RootVisitor {
            type Value = RawRoot;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Telegram export object")
            }

            accept_scalars!(RawRoot::default());
            accept_seq!(RawRoot::default());

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoot, A::Error> {
                let mut root = RawRoot {
                    is_object: true,
                    ..RawRoot::default()
                };
                while let Some(Key(key)) = map.next_key::<Key<RootKey>>()? {
                    match key {
                        RootKey::Name => root.header.name = map.next_value()?,
                        RootKey::Type => root.header.kind = map.next_value()?,
                        RootKey::Id => root.header.id = map.next_value()?,
                        RootKey::Messages => root.messages = Some(map.next_value()?),
                        RootKey::Chats => root.chats = Some(map.next_value()?),
                        RootKey::LeftChats => root.left_chats = Some(map.next_value()?),
                        RootKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(root)
            }
        }

        deserializer.deserialize_any(RootVisitor)
    }
}

/// `chats` or `left_chats` of an account export: `{ "about": ..., "list": [...] }`.
#[derive(Default)]
struct Section {
    is_object: bool,
    list: Option<ChatList>,
}

enum SectionKey {
    List,
    Other,
}

impl FieldKey for SectionKey {
    fn from_key(key: &str) -> Self {
        match key {
            "list" => Self::List,
            _ => Self::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SectionVisitor;

        impl<'de> Visitor<'de> for SectionVisitor {
            type Value = Section;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat list section")
            }

            accept_scalars!(Section::default());
            accept_seq!(Section::default());

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Section, A::Error> {
                let mut section = Section {
                    is_object: true,
                    list: None,
                };
                while let Some(Key(key)) = map.next_key::<Key<SectionKey>>()? {
                    match key {
                        SectionKey::List => section.list = Some(map.next_value()?),
                        SectionKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(section)
            }
        }

        deserializer.deserialize_any(SectionVisitor)
    }
}

/// `chats.list`: entries that are not objects are dropped.
#[derive(Default)]
struct ChatList {
    is_array: bool,
    chats: Vec<TelegramChat>,
}

impl<'de> Deserialize<'de> for ChatList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChatListVisitor;

        impl<'de> Visitor<'de> for ChatListVisitor {
            type Value = ChatList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of chats")
            }

            accept_scalars!(ChatList::default());
            accept_map!(ChatList::default());

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChatList, A::Error> {
                let mut chats = Vec::new();
                while let Some(ChatSlot(chat)) = seq.next_element()? {
                    chats.extend(chat);
                }
                Ok(ChatList {
                    is_array: true,
                    chats,
                })
            }
        }

        deserializer.deserialize_any(ChatListVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Chats.

/// One entry of `chats.list`; `None` when the entry is not an object.
struct ChatSlot(Option<TelegramChat>);

enum ChatKey {
    Name,
    Type,
    Id,
    Messages,
    Other,
}

impl FieldKey for ChatKey {
    fn from_key(key: &str) -> Self {
        match key {
            "name" => Self::Name,
            "type" => Self::Type,
            "id" => Self::Id,
            "messages" => Self::Messages,
            _ => Self::Other,
        }
    }
}

impl<'de> Deserialize<'de> for ChatSlot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChatVisitor;

        impl<'de> Visitor<'de> for ChatVisitor {
            type Value = ChatSlot;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat object")
            }

            accept_scalars!(ChatSlot(None));
            accept_seq!(ChatSlot(None));

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatSlot, A::Error> {
                let mut header = ChatHeader::default();
                let mut messages = MessageList::default();
                while let Some(Key(key)) = map.next_key::<Key<ChatKey>>()? {
                    match key {
                        ChatKey::Name => header.name = map.next_value()?,
                        ChatKey::Type => header.kind = map.next_value()?,
                        ChatKey::Id => header.id = map.next_value()?,
                        ChatKey::Messages => messages = map.next_value()?,
                        ChatKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ChatSlot(Some(build_chat(&header, messages))))
            }
        }

        deserializer.deserialize_any(ChatVisitor)
    }
}

fn build_chat(header: &ChatHeader, messages: MessageList) -> TelegramChat {
    let id = int_of(&header.id);
    let kind = str_of(&header.kind).unwrap_or_default().to_owned();
    let name = match str_of(&header.name) {
        Some(name) => name.to_owned(),
        None if kind == "saved_messages" => "Saved Messages".to_owned(),
        None => match id {
            Some(id) => format!("Telegram chat {id}"),
            None => "Telegram chat".to_owned(),
        },
    };
    let mut messages = messages;
    for message in &mut messages.messages {
        if let Some(peer) = message.reply_to_peer.take()
            && !same_peer(&peer, id)
        {
            message.reply_to = None;
        }
    }
    TelegramChat {
        id,
        name,
        kind,
        messages: messages.messages,
        skipped: messages.skipped,
    }
}

/// Whether `reply_to_peer_id` (`channel123`, `user123`, `chat123`, or a bare number) names the
/// chat whose id is `chat`. Telegram Desktop writes the peer only for a reply into another
/// chat, but some versions write it for the same chat too; an unknown chat id matches nothing.
fn same_peer(peer: &str, chat: Option<i64>) -> bool {
    let digits = peer
        .trim()
        .trim_start_matches(|c: char| c.is_ascii_alphabetic());
    match (digits.parse::<i64>(), chat) {
        (Ok(peer), Some(chat)) => peer == chat,
        _ => false,
    }
}

/// A chat's `messages`, converted while streaming.
#[derive(Default)]
struct MessageList {
    is_array: bool,
    messages: Vec<TelegramMessage>,
    skipped: usize,
}

impl<'de> Deserialize<'de> for MessageList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageListVisitor;

        impl<'de> Visitor<'de> for MessageListVisitor {
            type Value = MessageList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of messages")
            }

            accept_scalars!(MessageList::default());
            accept_map!(MessageList::default());

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageList, A::Error> {
                let mut list = MessageList {
                    is_array: true,
                    messages: Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16)),
                    skipped: 0,
                };
                while let Some(MessageSlot(raw)) = seq.next_element()? {
                    match raw.and_then(RawMessage::finish) {
                        Some(message) => list.messages.push(message),
                        None => list.skipped += 1,
                    }
                }
                Ok(list)
            }
        }

        deserializer.deserialize_any(MessageListVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Messages.

/// Fields that mark a message as carrying an attachment.
const MEDIA_KEYS: [&str; 11] = [
    "photo",
    "file",
    "media_type",
    "sticker_emoji",
    "contact_information",
    "contact_vcard",
    "location_information",
    "place_name",
    "poll",
    "game_title",
    "invoice_information",
];

/// Fields that service messages use to describe their action.
const EXTRA_KEYS: [&str; 19] = [
    "title",
    "from_id",
    "actor_id",
    "new_title",
    "members",
    "inviter",
    "duration_seconds",
    "duration",
    "discard_reason",
    "message_id",
    "score",
    "information_text",
    "period",
    "emoticon",
    "to",
    "distance",
    "months",
    "reason_domain",
    "reason_app_name",
];

enum MessageKey {
    Id,
    Type,
    Date,
    DateUnixtime,
    Edited,
    EditedUnixtime,
    ReplyTo,
    ReplyToPeer,
    ForwardedFrom,
    ForwardedFromId,
    Reactions,
    From,
    Actor,
    Action,
    Text,
    TextEntities,
    /// `photo` or `file`: a path relative to the export folder (or Telegram's "not included"
    /// note).
    MediaFile,
    /// `mime_type` of a `file`.
    MimeType,
    Media,
    Extra(&'static str),
    Other,
}

impl FieldKey for MessageKey {
    fn from_key(key: &str) -> Self {
        match key {
            "id" => Self::Id,
            "type" => Self::Type,
            "date" => Self::Date,
            "date_unixtime" => Self::DateUnixtime,
            "edited" => Self::Edited,
            "edited_unixtime" => Self::EditedUnixtime,
            "reply_to_message_id" => Self::ReplyTo,
            "reply_to_peer_id" => Self::ReplyToPeer,
            "forwarded_from" => Self::ForwardedFrom,
            "forwarded_from_id" => Self::ForwardedFromId,
            "reactions" => Self::Reactions,
            "from" => Self::From,
            "actor" => Self::Actor,
            "action" => Self::Action,
            "text" => Self::Text,
            "text_entities" => Self::TextEntities,
            "photo" | "file" => Self::MediaFile,
            "mime_type" => Self::MimeType,
            _ if MEDIA_KEYS.contains(&key) => Self::Media,
            _ => match EXTRA_KEYS.iter().find(|extra| **extra == key) {
                Some(extra) => Self::Extra(extra),
                None => Self::Other,
            },
        }
    }
}

/// The fields of one message object that matter here.
#[derive(Default)]
struct RawMessage {
    id: Value,
    kind: Value,
    date: Value,
    date_unixtime: Value,
    edited: Value,
    edited_unixtime: Value,
    reply_to: Value,
    reply_to_peer: Value,
    /// `Some` when the key is present, even as null (a hidden or deleted original sender).
    forwarded_from: Option<Value>,
    forwarded_from_id: Value,
    reactions: Value,
    from: Value,
    actor: Value,
    action: Value,
    text: String,
    entities_text: String,
    has_media: bool,
    media_files: Vec<String>,
    mime_type: Option<String>,
    extras: Vec<(&'static str, Value)>,
}

/// One entry of `messages`; `None` when the entry is not an object.
struct MessageSlot(Option<RawMessage>);

impl<'de> Deserialize<'de> for MessageSlot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor;

        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = MessageSlot;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }

            accept_scalars!(MessageSlot(None));
            accept_seq!(MessageSlot(None));

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageSlot, A::Error> {
                let mut raw = RawMessage::default();
                while let Some(Key(key)) = map.next_key::<Key<MessageKey>>()? {
                    match key {
                        MessageKey::Id => raw.id = map.next_value()?,
                        MessageKey::Type => raw.kind = map.next_value()?,
                        MessageKey::Date => raw.date = map.next_value()?,
                        MessageKey::DateUnixtime => raw.date_unixtime = map.next_value()?,
                        MessageKey::Edited => raw.edited = map.next_value()?,
                        MessageKey::EditedUnixtime => raw.edited_unixtime = map.next_value()?,
                        MessageKey::ReplyTo => raw.reply_to = map.next_value()?,
                        MessageKey::ReplyToPeer => raw.reply_to_peer = map.next_value()?,
                        MessageKey::ForwardedFrom => raw.forwarded_from = Some(map.next_value()?),
                        MessageKey::ForwardedFromId => raw.forwarded_from_id = map.next_value()?,
                        MessageKey::Reactions => raw.reactions = map.next_value()?,
                        MessageKey::From => raw.from = map.next_value()?,
                        MessageKey::Actor => raw.actor = map.next_value()?,
                        MessageKey::Action => raw.action = map.next_value()?,
                        MessageKey::Text => {
                            let FlatText(text) = map.next_value()?;
                            if raw.text.is_empty() {
                                raw.text = text;
                            }
                        }
                        MessageKey::TextEntities => {
                            let FlatText(text) = map.next_value()?;
                            raw.entities_text = text;
                        }
                        MessageKey::MediaFile => {
                            let value: Value = map.next_value()?;
                            if !is_blank(&value) {
                                raw.has_media = true;
                                if let Some(path) = str_of(&value) {
                                    raw.media_files.push(path.to_owned());
                                }
                            }
                        }
                        MessageKey::MimeType => {
                            let value: Value = map.next_value()?;
                            raw.mime_type = str_of(&value).map(str::to_owned);
                        }
                        MessageKey::Media => {
                            let value: Value = map.next_value()?;
                            if !is_blank(&value) {
                                raw.has_media = true;
                            }
                        }
                        MessageKey::Extra(name) => {
                            let value: Value = map.next_value()?;
                            raw.extras.retain(|(existing, _)| *existing != name);
                            raw.extras.push((name, value));
                        }
                        MessageKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MessageSlot(Some(raw)))
            }
        }

        deserializer.deserialize_any(MessageVisitor)
    }
}

impl RawMessage {
    /// The message, or `None` when it has no usable date.
    fn finish(self) -> Option<TelegramMessage> {
        let (sent_at_unix, sent_wall_clock) = time_of(&self.date_unixtime, &self.date)?;
        let edited = time_of(&self.edited_unixtime, &self.edited);
        let is_service = str_of(&self.kind) == Some("service");
        let from = str_of(&self.from);
        let actor = str_of(&self.actor);
        let (sender, text, kind) = if is_service {
            let sender = actor.or(from);
            let text = self.service_line(sender);
            (sender, text, MessageKind::System)
        } else {
            let text = if self.text.is_empty() {
                self.entities_text.clone()
            } else {
                self.text.clone()
            };
            let kind = if self.has_media && text.trim().is_empty() {
                MessageKind::Media
            } else {
                MessageKind::Text
            };
            (from.or(actor), text, kind)
        };
        let (from_id, actor_id) = (self.extra_str("from_id"), self.extra_str("actor_id"));
        let sender_id = if is_service {
            actor_id.or(from_id)
        } else {
            from_id.or(actor_id)
        };
        let membership = if is_service {
            self.membership(sender)
        } else {
            None
        };
        let (reactions, unattributed_reactions) =
            reactions_of(&self.reactions, (sent_at_unix, sent_wall_clock));
        let forwarded_from = str_of(self.forwarded_from.as_ref().unwrap_or(&Value::Null))
            .or_else(|| str_of(&self.forwarded_from_id))
            .map(str::to_owned);
        let reply_to_peer = match &self.reply_to_peer {
            Value::Null => None,
            Value::Number(number) => Some(number.to_string()),
            Value::String(text) => Some(text.clone()),
            // Unreadable: not known to be this chat.
            _ => Some(String::new()),
        };
        Some(TelegramMessage {
            id: int_of(&self.id),
            sent_at_unix,
            edited_at_unix: edited.map(|(at, _)| at),
            edited: edited.is_some() || is_set(&self.edited) || is_set(&self.edited_unixtime),
            reply_to: int_of(&self.reply_to),
            forwarded: self.forwarded_from.is_some() || forwarded_from.is_some(),
            forwarded_from,
            reactions,
            unattributed_reactions,
            sender: sender.map(str::to_owned),
            sender_id: sender_id.map(str::to_owned),
            membership,
            text,
            kind,
            media_files: if is_service {
                Vec::new()
            } else {
                self.media_files
            },
            mime_type: self.mime_type,
            wall_clock: (sent_wall_clock, edited.is_some_and(|(_, wall)| wall)),
            reply_to_peer,
        })
    }

    fn extra(&self, name: &str) -> Option<&Value> {
        self.extras
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    fn extra_str(&self, name: &str) -> Option<&str> {
        self.extra(name).and_then(str_of)
    }

    fn extra_int(&self, name: &str) -> Option<i64> {
        self.extra(name).and_then(int_of)
    }

    /// The membership change of a service message sent by `actor`.
    fn membership(&self, actor: Option<&str>) -> Option<MembershipChange> {
        let listed = || -> Vec<String> {
            match self.extra("members") {
                Some(Value::Array(members)) => members
                    .iter()
                    .filter_map(str_of)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let (membership, names) = match str_of(&self.action)? {
            "invite_members" | "create_group" => (Membership::Joined, listed()),
            "remove_members" => (Membership::Left, listed()),
            "join_group_by_link" | "join_group_by_request" => (
                Membership::Joined,
                actor.into_iter().map(str::to_owned).collect(),
            ),
            _ => return None,
        };
        (!names.is_empty()).then_some(MembershipChange { membership, names })
    }

    /// The names in `members` (null names read as "Deleted Account"), joined by ", ".
    fn members(&self) -> Option<String> {
        let Some(Value::Array(members)) = self.extra("members") else {
            return None;
        };
        let names: Vec<&str> = members
            .iter()
            .map(|member| str_of(member).unwrap_or("Deleted Account"))
            .collect();
        if names.is_empty() {
            None
        } else {
            Some(names.join(", "))
        }
    }

    /// A readable line for a service message.
    fn service_line(&self, sender: Option<&str>) -> String {
        let who = sender.unwrap_or("Someone");
        let quoted = |name: &str| self.extra_str(name).map(|title| format!(" «{title}»"));
        let Some(action) = str_of(&self.action) else {
            if let Some(information) = self.extra_str("information_text") {
                return information.to_owned();
            }
            let text = if self.text.is_empty() {
                &self.entities_text
            } else {
                &self.text
            };
            return if text.trim().is_empty() {
                format!("{who}: service message")
            } else {
                text.clone()
            };
        };
        match action {
            "joined_telegram" => format!("{who} joined Telegram"),
            "phone_call" => {
                let reason = self.extra_str("discard_reason");
                if reason == Some("missed") {
                    return format!("Missed call from {who}");
                }
                let mut details = Vec::new();
                if let Some(seconds) = self.extra_int("duration_seconds").filter(|s| *s > 0) {
                    details.push(human_duration(seconds));
                }
                match reason {
                    Some("busy") => details.push("busy".to_owned()),
                    Some("disconnect") => details.push("disconnected".to_owned()),
                    _ => {}
                }
                if details.is_empty() {
                    format!("{who} called")
                } else {
                    format!("{who} called ({})", details.join(", "))
                }
            }
            "group_call" => match self.extra_int("duration").filter(|s| *s > 0) {
                Some(seconds) => {
                    format!("{who} started a video chat ({})", human_duration(seconds))
                }
                None => format!("{who} started a video chat"),
            },
            "group_call_scheduled" => format!("{who} scheduled a video chat"),
            "invite_to_group_call" => match self.members() {
                Some(members) => format!("{who} invited {members} to the video chat"),
                None => format!("{who} invited members to the video chat"),
            },
            "create_group" => format!(
                "{who} created the group{}",
                quoted("title").unwrap_or_default()
            ),
            "create_channel" => format!(
                "{who} created the channel{}",
                quoted("title").unwrap_or_default()
            ),
            "edit_group_title" => match self.extra_str("title") {
                Some(title) => format!("{who} changed the group name to «{title}»"),
                None => format!("{who} changed the group name"),
            },
            "edit_group_photo" => format!("{who} changed the group photo"),
            "delete_group_photo" => format!("{who} removed the group photo"),
            "invite_members" => match self.members() {
                Some(members) if members == who => format!("{who} joined the group"),
                Some(members) => format!("{who} added {members}"),
                None => format!("{who} added members"),
            },
            "remove_members" => match self.members() {
                Some(members) if members == who => format!("{who} left the group"),
                Some(members) => format!("{who} removed {members}"),
                None => format!("{who} removed members"),
            },
            "join_group_by_link" => format!("{who} joined the group via an invite link"),
            "join_group_by_request" => format!("{who} was accepted into the group"),
            "migrate_to_supergroup" => format!("{who} converted this group to a supergroup"),
            "migrate_from_group" => format!(
                "{who} converted the group{} to a supergroup",
                quoted("title").unwrap_or_default()
            ),
            "pin_message" => match self.extra_int("message_id") {
                Some(id) => format!("{who} pinned message {id}"),
                None => format!("{who} pinned a message"),
            },
            "clear_history" => format!("{who} cleared the history"),
            "score_in_game" => match self.extra_int("score") {
                Some(score) => format!("{who} scored {score} in a game"),
                None => format!("{who} scored in a game"),
            },
            "send_payment" => "Payment sent".to_owned(),
            "take_screenshot" => format!("{who} took a screenshot"),
            "requested_phone_number" => format!("{who} requested a phone number"),
            "set_messages_ttl" => match self.extra_int("period").filter(|s| *s > 0) {
                Some(seconds) => format!(
                    "{who} set messages to auto-delete after {}",
                    human_duration(seconds)
                ),
                None => format!("{who} turned off auto-delete"),
            },
            "edit_chat_theme" => match self.extra_str("emoticon") {
                Some(emoji) => format!("{who} changed the chat theme to {emoji}"),
                None => format!("{who} turned off the chat theme"),
            },
            "topic_created" => format!(
                "{who} created the topic{}",
                quoted("title").unwrap_or_default()
            ),
            "topic_edit" => match self.extra_str("new_title") {
                Some(title) => format!("{who} renamed the topic to «{title}»"),
                None => format!("{who} edited the topic"),
            },
            "proximity_reached" => {
                let to = self.extra_str("to").unwrap_or("someone");
                match self.extra_int("distance") {
                    Some(meters) => format!("{who} is now within {meters} m of {to}"),
                    None => format!("{who} is now close to {to}"),
                }
            }
            "send_passport_values" => "Telegram Passport data sent".to_owned(),
            "allow_sending_messages" => {
                match self
                    .extra_str("reason_domain")
                    .or_else(|| self.extra_str("reason_app_name"))
                {
                    Some(reason) => format!("Messages allowed after logging in on {reason}"),
                    None => "Messages allowed".to_owned(),
                }
            }
            "send_premium_gift" => match self.extra_int("months") {
                Some(months) => format!("{who} gifted Telegram Premium for {months} months"),
                None => format!("{who} gifted Telegram Premium"),
            },
            "suggest_profile_photo" => format!("{who} suggested a profile photo"),
            "set_chat_wallpaper" | "set_same_chat_wallpaper" => {
                format!("{who} set a chat wallpaper")
            }
            other => format!("{who}: {}", other.replace('_', " ")),
        }
    }
}

/// "56 s", "2 min 5 s", "1 h 30 min", "7 d".
fn human_duration(seconds: i64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")];
    let mut rest = seconds.max(0);
    let mut parts = Vec::new();
    for (size, unit) in units {
        let count = rest / size;
        if count > 0 {
            parts.push(format!("{count} {unit}"));
            rest -= count * size;
        }
    }
    if parts.is_empty() {
        "0 s".to_owned()
    } else {
        parts.join(" ")
    }
}

// ---------------------------------------------------------------------------------------------
// Reactions.

/// The attributed reactions of a message's `reactions` value, and how many of its counted
/// reactions `recent` leaves unattributed. `sent` is the message's time (and whether it is a
/// wall clock), used for an entry whose own time cannot be read. Anything of an unexpected
/// shape is skipped.
fn reactions_of(value: &Value, sent: (i64, bool)) -> (Vec<TelegramReaction>, u64) {
    let Value::Array(items) = value else {
        return (Vec::new(), 0);
    };
    let mut reactions: Vec<TelegramReaction> = Vec::new();
    let mut unattributed = 0u64;
    for item in items {
        let Value::Object(fields) = item else {
            continue;
        };
        let field = |name: &str| fields.get(name).unwrap_or(&Value::Null);
        // Exports before the `type` field (and hand-written ones) have only `emoji`.
        let emoji = match str_of(field("type")) {
            Some("emoji") | None => str_of(field("emoji")).map(|emoji| emoji.trim().to_owned()),
            Some("custom_emoji") => {
                let document = field("document_id");
                str_of(document)
                    .map(|id| id.trim().to_owned())
                    .or_else(|| int_of(document).map(|id| id.to_string()))
                    .map(|id| format!("custom_emoji:{id}"))
            }
            // `paid` (Telegram Stars, no emoji), `empty`, and types to come.
            Some(_) => None,
        };
        let Some(emoji) = emoji else {
            continue;
        };
        let mut attributed = 0u64;
        if let Value::Array(recent) = field("recent") {
            for entry in recent {
                let Value::Object(entry) = entry else {
                    continue;
                };
                let get = |name: &str| entry.get(name).unwrap_or(&Value::Null);
                let from_id = str_of(get("from_id")).map(|id| id.trim().to_owned());
                let from = str_of(get("from")).map(str::to_owned);
                if from_id.is_none() && from.is_none() {
                    continue;
                }
                let (at_unix, wall_clock) =
                    time_of(get("date_unixtime"), get("date")).unwrap_or(sent);
                let reaction = TelegramReaction {
                    emoji: emoji.clone(),
                    from_id,
                    from,
                    at_unix,
                    wall_clock,
                };
                attributed += 1;
                let duplicate = reactions
                    .iter()
                    .any(|r| r.emoji == reaction.emoji && r.sender() == reaction.sender());
                if !duplicate {
                    reactions.push(reaction);
                }
            }
        }
        let count = int_of(field("count")).unwrap_or(0).max(0) as u64;
        unattributed = unattributed.saturating_add(count.saturating_sub(attributed));
    }
    (reactions, unattributed)
}

// ---------------------------------------------------------------------------------------------
// Text.

/// `text` or `text_entities` flattened to plain text: a string is itself, an array is the
/// concatenation of its items, an object is its `text` field, a number its decimal form,
/// anything else empty.
struct FlatText(String);

enum EntityKey {
    Text,
    Other,
}

impl FieldKey for EntityKey {
    fn from_key(key: &str) -> Self {
        match key {
            "text" => Self::Text,
            _ => Self::Other,
        }
    }
}

impl<'de> Deserialize<'de> for FlatText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = FlatText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("message text")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<FlatText, E> {
                Ok(FlatText(value.to_owned()))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<FlatText, E> {
                Ok(FlatText(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<FlatText, E> {
                Ok(FlatText(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<FlatText, E> {
                Ok(FlatText(value.to_string()))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<FlatText, E> {
                Ok(FlatText(value.to_string()))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<FlatText, E> {
                Ok(FlatText(String::new()))
            }

            fn visit_unit<E: de::Error>(self) -> Result<FlatText, E> {
                Ok(FlatText(String::new()))
            }

            fn visit_none<E: de::Error>(self) -> Result<FlatText, E> {
                Ok(FlatText(String::new()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlatText, A::Error> {
                let mut text = String::new();
                while let Some(FlatText(part)) = seq.next_element()? {
                    text.push_str(&part);
                }
                Ok(FlatText(text))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FlatText, A::Error> {
                let mut text = String::new();
                while let Some(Key(key)) = map.next_key::<Key<EntityKey>>()? {
                    match key {
                        EntityKey::Text => {
                            let FlatText(part) = map.next_value()?;
                            text = part;
                        }
                        EntityKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(FlatText(text))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars.

/// A string value that is not blank; other JSON types read as absent.
fn str_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text),
        _ => None,
    }
}

/// An integer from a JSON integer, an integral float, or a string holding either.
fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().and_then(float_to_int)),
        Value::String(text) => {
            let text = text.trim();
            text.parse::<i64>()
                .ok()
                .or_else(|| text.parse::<f64>().ok().and_then(float_to_int))
        }
        _ => None,
    }
}

fn float_to_int(value: f64) -> Option<i64> {
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    if value.is_finite()
        && value.fract() == 0.0
        && value >= -(2f64.powi(63))
        && value < 2f64.powi(63)
    {
        Some(value as i64)
    } else {
        None
    }
}

/// `date_unixtime`: seconds as a string or a number.
fn unix_of(value: &Value) -> Option<i64> {
    int_of(value)
}

/// A time from its exact field (`date_unixtime`) or else its ISO field (`date`): the seconds,
/// and whether they are a wall-clock time read as UTC.
fn time_of(unix: &Value, iso: &Value) -> Option<(i64, bool)> {
    unix_of(unix).map(|at| (at, false)).or_else(|| date_of(iso))
}

/// `date`: an ISO 8601 local time, read as UTC wall clock (flagged `true`); an explicit offset
/// is honoured (flagged `false`).
fn date_of(value: &Value) -> Option<(i64, bool)> {
    let text = str_of(value)?.trim();
    if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some((naive.and_utc().timestamp(), true));
    }
    if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return Some((naive.and_utc().timestamp(), true));
    }
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
        return Some((with_offset.timestamp(), false));
    }
    None
}

/// Whether a flag-like field says yes: `true`, or any value that is not blank.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Bool(flag) => *flag,
        other => !is_blank(other),
    }
}

/// Null, an empty string, or an empty array/object.
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_utc(input: &[u8]) -> Result<Vec<TelegramChat>, TelegramError> {
        parse(input, Tz::UTC)
    }

    fn parse_one(json: &str) -> TelegramChat {
        let mut chats = parse_in_utc(json.as_bytes()).expect("parses");
        assert_eq!(chats.len(), 1, "one chat");
        chats.remove(0)
    }

    #[test]
    fn single_chat_with_string_text() {
        let chat = parse_one(
            r#"{"name": "Alice", "type": "personal_chat", "id": 42, "messages": [
                {"id": 1, "type": "message", "date": "2021-03-15T12:34:56",
                 "date_unixtime": "1615811696", "from": "Alice", "from_id": "user42",
                 "text": "hello\nworld", "text_entities": [{"type": "plain", "text": "hello\nworld"}]}
            ]}"#,
        );
        assert_eq!(chat.id, Some(42));
        assert_eq!(chat.name, "Alice");
        assert_eq!(chat.kind, "personal_chat");
        assert_eq!(chat.skipped, 0);
        assert_eq!(
            chat.messages,
            vec![TelegramMessage {
                id: Some(1),
                sent_at_unix: 1_615_811_696,
                edited_at_unix: None,
                edited: false,
                reply_to: None,
                forwarded: false,
                forwarded_from: None,
                reactions: Vec::new(),
                unattributed_reactions: 0,
                sender: Some("Alice".to_owned()),
                sender_id: Some("user42".to_owned()),
                membership: None,
                text: "hello\nworld".to_owned(),
                kind: MessageKind::Text,
                media_files: Vec::new(),
                mime_type: None,
                wall_clock: (false, false),
                reply_to_peer: None,
            }]
        );
    }

    #[test]
    fn wall_clock_dates_are_read_in_the_timezone_and_unixtimes_win() {
        let input = br#"{"messages": [
            {"id": 1, "type": "message", "date": "2021-03-15T12:34:56",
             "date_unixtime": "1615811696", "from": "A", "text": "exact",
             "edited": "2021-03-15T13:00:00", "edited_unixtime": "1615813200"},
            {"id": 2, "type": "message", "date": "2021-07-01T12:00:00", "from": "A", "text": "local",
             "edited": "2021-07-01T12:30:00"},
            {"id": 3, "type": "message", "date": "2021-07-01T12:00:00+00:00", "from": "A", "text": "offset"}
        ]}"#;
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        let chat = parse(input, berlin).expect("parses").remove(0);
        let times: Vec<_> = chat
            .messages
            .iter()
            .map(|m| (m.sent_at_unix, m.edited_at_unix))
            .collect();
        assert_eq!(
            times,
            vec![
                // date_unixtime / edited_unixtime are exact, whatever the zone.
                (1_615_811_696, Some(1_615_813_200)),
                // 12:00 and 12:30 in Berlin (CEST, UTC+2) are 10:00 and 10:30 UTC.
                (1_625_133_600, Some(1_625_135_400)),
                // An explicit offset is exact.
                (1_625_140_800, None),
            ]
        );
        let utc = parse_in_utc(input).expect("parses").remove(0);
        assert_eq!(utc.messages[1].sent_at_unix, 1_625_140_800);
        assert_eq!(utc.messages[1].edited_at_unix, Some(1_625_142_600));
    }

    #[test]
    fn entity_array_text_is_flattened() {
        let chat = parse_one(
            r#"{"messages": [{"type": "message", "date_unixtime": "100", "from": "Bob",
                "text": [{"type": "bold", "text": "Link:"}, " see ",
                         {"type": "text_link", "text": "here", "href": "https://example.org"},
                         {"type": "mention", "text": "@carol"}]}]}"#,
        );
        assert_eq!(chat.messages[0].text, "Link: see here@carol");
        assert_eq!(chat.messages[0].kind, MessageKind::Text);
    }

    #[test]
    fn text_entities_used_when_text_is_empty() {
        let chat = parse_one(
            r#"{"messages": [{"type": "message", "date_unixtime": "100", "from": "Bob",
                "text": "", "text_entities": [{"type": "plain", "text": "from entities"}]}]}"#,
        );
        assert_eq!(chat.messages[0].text, "from entities");
    }

    #[test]
    fn service_messages_become_readable_lines() {
        let chat = parse_one(
            r#"{"name": "G", "type": "private_group", "id": 7, "messages": [
                {"id": 1, "type": "service", "date": "2019-07-05T16:55:32", "actor": "Bob",
                 "action": "joined_telegram", "text": ""},
                {"id": 2, "type": "service", "date_unixtime": "200", "actor": "Alice",
                 "action": "phone_call", "duration_seconds": 65, "discard_reason": "hangup",
                 "text": ""},
                {"id": 3, "type": "service", "date_unixtime": "300", "actor": "Alice",
                 "action": "phone_call", "discard_reason": "missed", "text": ""},
                {"id": 4, "type": "service", "date_unixtime": "400", "actor": "Alice",
                 "action": "create_group", "title": "Trip", "members": ["Alice", "Bob"]},
                {"id": 5, "type": "service", "date_unixtime": "500", "actor": "Alice",
                 "action": "invite_members", "members": ["Carol", null]},
                {"id": 6, "type": "service", "date_unixtime": "600", "actor": "Bob",
                 "action": "remove_members", "members": ["Bob"]},
                {"id": 7, "type": "service", "date_unixtime": "700", "actor": "Bob",
                 "action": "some_future_action"},
                {"id": 8, "type": "service", "date_unixtime": "800", "actor": "Bot",
                 "information_text": "Custom notice"},
                {"id": 9, "type": "service", "date_unixtime": "900", "action": "send_payment",
                 "amount": 500, "currency": "EUR"}
            ]}"#,
        );
        let lines: Vec<&str> = chat.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            lines,
            vec![
                "Bob joined Telegram",
                "Alice called (1 min 5 s)",
                "Missed call from Alice",
                "Alice created the group «Trip»",
                "Alice added Carol, Deleted Account",
                "Bob left the group",
                "Bob: some future action",
                "Custom notice",
                "Payment sent",
            ]
        );
        assert!(chat.messages.iter().all(|m| m.kind == MessageKind::System));
        // Read as UTC wall clock: 2019-07-05T16:55:32Z.
        assert_eq!(chat.messages[0].sent_at_unix, 1_562_345_732);
        assert_eq!(chat.messages[0].sender.as_deref(), Some("Bob"));
        assert_eq!(chat.messages[8].sender, None);
    }

    #[test]
    fn media_only_and_captioned_media() {
        let chat = parse_one(
            r#"{"messages": [
                {"id": 1, "type": "message", "date_unixtime": "1", "from": "A",
                 "photo": "(File not included. Change data exporting settings to download.)",
                 "width": 960, "height": 1280, "text": "", "text_entities": []},
                {"id": 2, "type": "message", "date_unixtime": "2", "from": "A",
                 "file": "files/a.pdf", "mime_type": "application/pdf", "text": "the report"},
                {"id": 3, "type": "message", "date_unixtime": "3", "from": "A",
                 "file": "stickers/s.webp", "media_type": "sticker", "sticker_emoji": "😀",
                 "text": ""},
                {"id": 4, "type": "message", "date_unixtime": "4", "from": "A",
                 "location_information": {"latitude": 1.5, "longitude": 2.5}, "text": ""}
            ]}"#,
        );
        let kinds: Vec<MessageKind> = chat.messages.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            vec![
                MessageKind::Media,
                MessageKind::Text,
                MessageKind::Media,
                MessageKind::Media
            ]
        );
        assert_eq!(chat.messages[0].text, "");
        assert_eq!(chat.messages[1].text, "the report");
    }

    #[test]
    fn missing_fields_and_skipped_messages() {
        let chat = parse_one(
            r#"{"type": "saved_messages", "messages": [
                {"type": "message", "text": "no date at all"},
                {"type": "message", "date": "not a date", "date_unixtime": "soon", "text": "bad"},
                42,
                "a string",
                {"date": "2021-03-15T12:34:56", "text": "only an ISO date", "from": null},
                {"date_unixtime": 1615811696, "text": "numeric unixtime", "id": "17"},
                {"date": "2021-03-15T12:34:56", "date_unixtime": "garbage", "text": "fallback"}
            ]}"#,
        );
        assert_eq!(chat.name, "Saved Messages");
        assert_eq!(chat.id, None);
        assert_eq!(chat.skipped, 4);
        assert_eq!(chat.messages.len(), 3);
        assert_eq!(chat.messages[0].sent_at_unix, 1_615_811_696);
        assert_eq!(chat.messages[0].sender, None);
        assert_eq!(chat.messages[0].id, None);
        assert_eq!(chat.messages[1].id, Some(17));
        assert_eq!(chat.messages[1].sent_at_unix, 1_615_811_696);
        assert_eq!(chat.messages[2].sent_at_unix, 1_615_811_696);
    }

    #[test]
    fn chat_name_fallbacks() {
        assert_eq!(
            parse_one(r#"{"id": 5, "messages": []}"#).name,
            "Telegram chat 5"
        );
        assert_eq!(
            parse_one(r#"{"name": null, "messages": []}"#).name,
            "Telegram chat"
        );
        assert_eq!(
            parse_one(r#"{"name": "", "type": "saved_messages", "id": 1, "messages": []}"#).name,
            "Saved Messages"
        );
    }

    #[test]
    fn account_export_returns_every_chat() {
        let chats = parse_in_utc(
            br#"{"about": "x", "personal_information": {"user_id": 1},
                "chats": {"about": "y", "list": [
                    {"name": "One", "type": "personal_chat", "id": 1, "messages": [
                        {"id": 1, "type": "message", "date_unixtime": "10", "from": "A", "text": "hi"}]},
                    "not a chat",
                    {"type": "private_supergroup", "id": 2, "messages": []}
                ]},
                "left_chats": {"about": "z", "list": [
                    {"name": "Gone", "type": "private_supergroup", "id": 3, "messages": []}]}
            }"#,
        )
        .expect("parses");
        let names: Vec<&str> = chats.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["One", "Telegram chat 2", "Gone"]);
        assert_eq!(chats[0].messages.len(), 1);
        assert_eq!(
            parse_in_utc(br#"{"chats": {"list": []}}"#).expect("parses"),
            vec![]
        );
    }

    #[test]
    fn duplicate_keys_do_not_fail_the_file() {
        let chat = parse_one(
            r#"{"messages": [{"type": "service", "date_unixtime": "5", "action": "send_webview_data",
                "text": "button", "text": ""},
                {"type": "message", "date_unixtime": "6", "from": "A", "from": "B", "text": "x"}]}"#,
        );
        assert_eq!(chat.messages.len(), 2);
        assert_eq!(chat.messages[1].sender.as_deref(), Some("B"));
    }

    #[test]
    fn garbage_input_is_an_error() {
        assert!(matches!(parse_in_utc(b""), Err(TelegramError::Json(_))));
        assert!(matches!(
            parse_in_utc(b"\x00\xff\xfe"),
            Err(TelegramError::Json(_))
        ));
        assert!(matches!(
            parse_in_utc(b"{\"messages\": [1, 2"),
            Err(TelegramError::Json(_))
        ));
        assert!(matches!(
            parse_in_utc(b"[1, 2, 3]"),
            Err(TelegramError::Shape(_))
        ));
        assert!(matches!(
            parse_in_utc(b"\"text\""),
            Err(TelegramError::Shape(_))
        ));
        assert!(matches!(parse_in_utc(b"{}"), Err(TelegramError::Shape(_))));
        assert!(matches!(
            parse_in_utc(b"{\"messages\": 3}"),
            Err(TelegramError::Shape(_))
        ));
        assert!(matches!(
            parse_in_utc(b"{\"chats\": []}"),
            Err(TelegramError::Shape(_))
        ));
        assert!(matches!(
            parse_in_utc(b"{\"chats\": {}}"),
            Err(TelegramError::Shape(_))
        ));
        let deep = "[".repeat(100_000);
        assert!(parse_in_utc(deep.as_bytes()).is_err());
        let deep_text = format!(
            "{{\"messages\": [{{\"date_unixtime\": \"1\", \"text\": {}}}]}}",
            "[".repeat(10_000)
        );
        assert!(parse_in_utc(deep_text.as_bytes()).is_err());
        let error = parse_in_utc(b"{").expect_err("truncated");
        assert!(error.to_string().starts_with("not a Telegram export: "));
    }

    #[test]
    fn bom_is_tolerated() {
        let chat = parse_one("\u{feff}{\"messages\": []}");
        assert!(chat.messages.is_empty());
    }

    #[test]
    fn odd_values_never_panic() {
        let chat = parse_one(
            r#"{"id": 1e300, "name": 5, "type": ["x"], "messages": [
                {"date_unixtime": "99999999999999999999999", "date": "+262143-12-31T23:59:59"},
                {"date_unixtime": -1e300},
                {"date_unixtime": "1.0", "text": {"text": "object text"}, "photo": null,
                 "members": 3, "type": "service", "action": "invite_members"},
                {"date_unixtime": "2", "text": [1, true, null, ["nested", {"text": "!"}]]}
            ]}"#,
        );
        assert_eq!(chat.id, None);
        assert_eq!(chat.name, "Telegram chat");
        assert_eq!(chat.kind, "");
        // The first two have no readable date (year out of range, unixtime not an integer).
        assert_eq!(chat.skipped, 2);
        assert_eq!(chat.messages[0].sent_at_unix, 1);
        assert_eq!(chat.messages[0].text, "Someone added members");
        assert_eq!(chat.messages[1].text, "1nested!");
    }

    #[test]
    fn replies_within_the_chat_are_kept() {
        let chat = parse_one(
            r#"{"name": "G", "type": "private_supergroup", "id": 42, "messages": [
                {"id": 1, "type": "message", "date_unixtime": "10", "from": "A", "text": "q"},
                {"id": 2, "type": "message", "date_unixtime": "11", "from": "B", "text": "a",
                 "reply_to_message_id": 1},
                {"id": 3, "type": "message", "date_unixtime": "12", "from": "B", "text": "b",
                 "reply_to_message_id": "1"},
                {"id": 4, "type": "message", "date_unixtime": "13", "from": "B", "text": "c",
                 "reply_to_message_id": 77, "reply_to_peer_id": "channel99"},
                {"id": 5, "type": "message", "date_unixtime": "14", "from": "B", "text": "d",
                 "reply_to_message_id": 1, "reply_to_peer_id": "channel42"},
                {"id": 6, "type": "message", "date_unixtime": "15", "from": "B", "text": "e",
                 "reply_to_message_id": 9, "reply_to_peer_id": {"x": 1}},
                {"id": 7, "type": "message", "date_unixtime": "16", "from": "B", "text": "f",
                 "reply_to_message_id": "soon"},
                {"id": 8, "type": "message", "date_unixtime": "17", "from": "B", "text": "g",
                 "reply_to_message_id": 100}
            ]}"#,
        );
        let replies: Vec<Option<i64>> = chat.messages.iter().map(|m| m.reply_to).collect();
        assert_eq!(
            replies,
            vec![
                None,
                Some(1),
                Some(1),
                // Into another chat: not a reply within this one.
                None,
                // The peer is this chat.
                Some(1),
                // An unreadable peer is not known to be this chat.
                None,
                None,
                // A message not in the file is still named.
                Some(100),
            ]
        );
        // Without a chat id, a reply naming a peer cannot be placed.
        let chat = parse_one(
            r#"{"messages": [{"id": 2, "date_unixtime": "11", "text": "a",
                "reply_to_message_id": 1, "reply_to_peer_id": "user5"}]}"#,
        );
        assert_eq!(chat.messages[0].reply_to, None);
    }

    #[test]
    fn forwards_with_and_without_a_name() {
        let chat = parse_one(
            r#"{"messages": [
                {"id": 1, "date_unixtime": "1", "from": "A", "text": "x", "forwarded_from": "News"},
                {"id": 2, "date_unixtime": "2", "from": "A", "text": "x", "forwarded_from": null},
                {"id": 3, "date_unixtime": "3", "from": "A", "text": "x",
                 "forwarded_from_id": "channel7"},
                {"id": 4, "date_unixtime": "4", "from": "A", "text": "x", "forwarded_from": null,
                 "forwarded_from_id": "user8"},
                {"id": 5, "date_unixtime": "5", "from": "A", "text": "x", "saved_from": "Chat"},
                {"id": 6, "date_unixtime": "6", "from": "A", "text": "x", "forwarded_from": 12}
            ]}"#,
        );
        let forwards: Vec<(bool, Option<&str>)> = chat
            .messages
            .iter()
            .map(|m| (m.forwarded, m.forwarded_from.as_deref()))
            .collect();
        assert_eq!(
            forwards,
            vec![
                (true, Some("News")),
                // A hidden or deleted original sender: still forwarded.
                (true, None),
                (true, Some("channel7")),
                (true, Some("user8")),
                (false, None),
                (true, None),
            ]
        );
    }

    #[test]
    fn edits_are_flagged_even_without_a_readable_time() {
        let chat = parse_one(
            r#"{"messages": [
                {"id": 1, "date_unixtime": "100", "text": "a", "edited": "1970-01-01T00:03:20",
                 "edited_unixtime": "300"},
                {"id": 2, "date_unixtime": "100", "text": "b", "edited": "1970-01-01T00:03:20"},
                {"id": 3, "date_unixtime": "100", "text": "c", "edited": "yesterday"},
                {"id": 4, "date_unixtime": "100", "text": "d", "edited_unixtime": 400},
                {"id": 5, "date_unixtime": "100", "text": "e", "edited": null},
                {"id": 6, "date_unixtime": "100", "text": "f", "edited": false},
                {"id": 7, "date_unixtime": "100", "text": "g"}
            ]}"#,
        );
        let edits: Vec<(bool, Option<i64>)> = chat
            .messages
            .iter()
            .map(|m| (m.edited, m.edited_at_unix))
            .collect();
        assert_eq!(
            edits,
            vec![
                (true, Some(300)),
                (true, Some(200)),
                (true, None),
                (true, Some(400)),
                (false, None),
                (false, None),
                (false, None),
            ]
        );
    }

    fn reaction(
        emoji: &str,
        from_id: Option<&str>,
        from: Option<&str>,
        at: i64,
    ) -> TelegramReaction {
        TelegramReaction {
            emoji: emoji.to_owned(),
            from_id: from_id.map(str::to_owned),
            from: from.map(str::to_owned),
            at_unix: at,
            wall_clock: false,
        }
    }

    #[test]
    fn reactions_recent_entries_are_attributed() {
        // The shape of tdesktop's writer (PR #28252) and of mlomb/chat-analytics issue #128.
        let input = r#"{"id": 5, "messages": [
            {"id": 1, "type": "message", "date": "2025-01-12T15:00:00",
             "date_unixtime": "1736694000", "from": "Ann", "from_id": "user1", "text": "hi",
             "reactions": [
               {"type": "emoji", "count": 3, "emoji": "👍", "recent": [
                 {"from": "Bob", "from_id": "user2", "date": "2025-01-12T15:49:22"},
                 {"from": null, "from_id": "user3", "date": "2025-01-12T15:50:00",
                  "date_unixtime": "1736697000"},
                 {"from": "Bob", "from_id": "user2", "date": "2025-01-12T15:49:23"}
               ]},
               {"type": "custom_emoji", "count": 1, "document_id": "5368324170671202286",
                "recent": [{"from": "Cy", "date": "2025-01-12T16:00:00"}]},
               {"type": "custom_emoji", "count": 1, "document_id": 77,
                "recent": [{"from_id": "channel9", "date": "2025-01-12T16:01:00"}]},
               {"type": "paid", "count": 50, "recent": [
                 {"from": "Dee", "from_id": "user4", "date": "2025-01-12T16:00:00"}]},
               {"type": "some_future_kind", "count": 1, "emoji": "x"},
               {"count": 2, "emoji": "❤", "recent": [
                 {"from": "Eve", "date": "not a date"},
                 {"date": "2025-01-12T16:00:00"},
                 "junk", 7
               ]},
               {"type": "emoji", "count": 4, "emoji": "🔥"},
               {"type": "emoji", "count": 1, "emoji": "  "},
               "junk", null, [1]
             ]},
            {"id": 2, "type": "message", "date_unixtime": "1736694100", "text": "x",
             "reactions": {"not": "an array"}},
            {"id": 3, "type": "message", "date_unixtime": "1736694200", "text": "y",
             "reactions": [{"type": "emoji", "emoji": "👍", "count": "many",
                            "recent": {"from": "Zed"}}]}
        ]}"#;
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        let chat = parse(input.as_bytes(), berlin).expect("parses").remove(0);
        assert_eq!(chat.skipped, 0);
        let first = &chat.messages[0];
        assert_eq!(
            first.reactions,
            vec![
                // 15:49:22 in Berlin (CET, UTC+1) is 14:49:22 UTC.
                reaction("👍", Some("user2"), Some("Bob"), 1_736_693_362),
                // date_unixtime wins over date.
                reaction("👍", Some("user3"), None, 1_736_697_000),
                reaction(
                    "custom_emoji:5368324170671202286",
                    None,
                    Some("Cy"),
                    1_736_694_000
                ),
                reaction("custom_emoji:77", Some("channel9"), None, 1_736_694_060),
                // Unreadable date: the message's time.
                reaction("❤", None, Some("Eve"), 1_736_694_000),
            ]
        );
        assert_eq!(first.reactions[0].sender(), "user2");
        assert_eq!(first.reactions[2].sender(), "Cy");
        // 👍 counts 3 with 3 entries (one a duplicate), ❤ 2 with 1 attributed, 🔥 4 with none;
        // paid and unknown types are not counted.
        assert_eq!(first.unattributed_reactions, 1 + 4);
        assert!(chat.messages[1].reactions.is_empty());
        assert!(chat.messages[2].reactions.is_empty());
        assert_eq!(chat.messages[2].unattributed_reactions, 0);
        // The same file in UTC reads the wall clocks as UTC.
        let utc = parse_in_utc(input.as_bytes()).expect("parses").remove(0);
        assert_eq!(utc.messages[0].reactions[0].at_unix, 1_736_696_962);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0), "0 s");
        assert_eq!(human_duration(56), "56 s");
        assert_eq!(human_duration(3_600), "1 h");
        assert_eq!(human_duration(90_061), "1 d 1 h 1 min 1 s");
    }
}
