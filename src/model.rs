//! Domain types shared by the services, storage and sources.
//!
//! Nothing here knows prost or SeaORM types: the gRPC adapter and the storage layer convert
//! at their edges. Enum discriminants are the values stored in the database, so they never
//! change.

use crate::error::Error;

/// What a message is. Stored as a small integer (`kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MessageKind {
    /// Ordinary text.
    #[default]
    Text = 1,
    /// A system notice with no sender: the encryption notice, a member added or left, the
    /// subject changed, and so on.
    System = 2,
    /// A media placeholder or attachment (`<Media omitted>`, `image omitted`, ...).
    Media = 3,
    /// A message deleted for everyone ("This message was deleted"): no text and no files are
    /// stored; [`Message::deletion`] says who deleted it and when, where known.
    Deleted = 4,
}

impl MessageKind {
    /// All kinds, in discriminant order.
    pub const ALL: [MessageKind; 4] = [Self::Text, Self::System, Self::Media, Self::Deleted];

    /// The stored integer.
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// The kind for a stored integer; unknown values read as `Text`.
    pub fn from_i16(value: i16) -> Self {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_i16() == value)
            .unwrap_or(Self::Text)
    }
}

/// Delivery status of a message. Ranked PENDING < SENT < DELIVERED < READ; FAILED is terminal
/// for a send attempt. Stored as a small integer (`status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageStatus {
    Pending = 1,
    #[default]
    Sent = 2,
    Delivered = 3,
    Read = 4,
    Failed = 5,
}

impl MessageStatus {
    /// All statuses, in discriminant order.
    pub const ALL: [MessageStatus; 5] = [
        Self::Pending,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
    ];

    /// The stored integer.
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// The status for a stored integer; unknown values read as `Sent`.
    pub fn from_i16(value: i16) -> Self {
        Self::ALL
            .into_iter()
            .find(|status| status.as_i16() == value)
            .unwrap_or(Self::Sent)
    }

    /// Whether moving from `self` to `next` is a step forward. Statuses never go backwards:
    /// READ followed by DELIVERED stays READ. FAILED replaces only PENDING or SENT (a WhatsApp
    /// `failed` status can follow `sent`; one after `delivered` changes nothing), and
    /// nothing leaves FAILED except a successful retry of the send (PENDING → SENT is handled
    /// by the sender, not by receipts).
    pub fn advances_to(self, next: MessageStatus) -> bool {
        match (self, next) {
            (Self::Failed, _) => false,
            (Self::Pending | Self::Sent, Self::Failed) => true,
            (_, Self::Failed) => false,
            (current, next) => next.rank() > current.rank(),
        }
    }

    fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 0,
        }
    }
}

/// A stored message, as the services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Server id, unique across the server.
    pub id: i64,
    pub session_id: String,
    pub chat_id: String,
    pub provider_message_id: String,
    pub client_message_id: Option<String>,
    /// Empty for system notices.
    pub sender: String,
    pub text: String,
    pub kind: MessageKind,
    pub status: MessageStatus,
    pub from_me: bool,
    /// When the message was sent, Unix milliseconds (UTC).
    pub sent_at_ms: i64,
    /// The seq at which the message was created.
    pub seq: u64,
    /// The message's files, in order. Only `Media` messages have any.
    pub attachments: Vec<Attachment>,
    /// The message this one quotes, when it is a reply.
    pub reply_to: Option<ReplyTo>,
    pub forwarded: Forwarded,
    /// The original sender of a forwarded message, when the source names one.
    pub forwarded_from: Option<String>,
    /// Whether the text was edited after it was sent.
    pub edited: bool,
    /// When it was last edited (Unix ms), when the source says.
    pub edited_at_ms: Option<i64>,
    /// The texts the message had before its edits, oldest first (none once deleted).
    pub earlier_texts: Vec<EarlierText>,
    /// Reactions, in the order they were stored (see [`Reaction`]).
    pub reactions: Vec<Reaction>,
    /// Per-recipient delivery and read receipts, by recipient.
    pub receipts: Vec<Receipt>,
    /// Who deleted the message for everyone, and when; `None` unless kind `Deleted` and known.
    pub deletion: Option<Deletion>,
}

/// The message a reply quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The quoted message's `provider_message_id`, in the same chat.
    pub provider_message_id: String,
    /// Its server id, once it is stored (looked up when read, so a reply stored before the
    /// message it quotes resolves when that message arrives).
    pub message_id: Option<i64>,
}

/// Whether a message was forwarded. Stored as `messages.forwarded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarded {
    #[default]
    No = 0,
    /// Forwarded.
    Once = 1,
    /// Forwarded many times (WhatsApp's "Forwarded many times", five hops or more).
    Frequently = 2,
}

impl Forwarded {
    /// The value for a stored integer; unknown values read as `Once`.
    pub fn from_i16(value: i16) -> Self {
        match value {
            0 => Self::No,
            2 => Self::Frequently,
            _ => Self::Once,
        }
    }
}

/// One reaction: `sender` reacted to a message with `emoji`. A sender has at most one reaction
/// per emoji; sources with one reaction per person (WhatsApp) replace it
/// ([`ReactionChange::Set`]), Matrix keeps a set ([`ReactionChange::Add`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The emoji (or any short text the source allows as a reaction key).
    pub emoji: String,
    /// Who reacted: the source's user id (a Matrix user id, a Telegram `user123`), or the
    /// name it shows when it has no id.
    pub sender: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// The source's id of the reaction itself (a Matrix event id), which its removal names.
    pub provider_reaction_id: Option<String>,
}

/// A change to one sender's reactions on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReactionChange {
    /// Sets `sender`'s one reaction, replacing any other; `emoji: None` removes it
    /// (WhatsApp's model, and ReactToMessage's).
    Set {
        sender: String,
        emoji: Option<String>,
        at_ms: i64,
        provider_reaction_id: Option<String>,
    },
    /// Adds `reaction` to its sender's set (a Matrix `m.annotation`).
    Add(Reaction),
}

/// One recipient's receipts for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The recipient: the source's user id (a Matrix user id, a phone number).
    pub recipient: String,
    /// When it was delivered to them (Unix ms); a read implies delivery.
    pub delivered_at_ms: Option<i64>,
    /// When they read it (Unix ms).
    pub read_at_ms: Option<i64>,
}

/// A text a message had before an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierText {
    pub text: String,
    /// When the next text replaced it (Unix ms).
    pub replaced_at_ms: i64,
}

/// Who deleted a message for everyone, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The source's user id, or the sender as shown; empty when unknown.
    pub deleted_by: String,
    /// Unix ms.
    pub deleted_at_ms: i64,
}

/// What a `message_updated` change changed. Stored as `changes.what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageChange {
    /// The text was edited.
    Edit = 1,
    /// The message was deleted for everyone.
    Deletion = 2,
    /// A reaction was added, changed or removed.
    Reaction = 3,
    /// A recipient's delivery or read receipt was recorded.
    Receipt = 4,
    /// A file of the message was stored after the message (a download that had failed,
    /// retried): its attachment is `stored` now.
    Attachment = 5,
}

impl MessageChange {
    /// The stored integer.
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// The change for a stored integer. `None` (a change logged before `what` existed) and
    /// unknown values read as `Edit`, which is what those were.
    pub fn from_i16(value: Option<i16>) -> Self {
        match value {
            Some(2) => Self::Deletion,
            Some(3) => Self::Reaction,
            Some(4) => Self::Receipt,
            Some(5) => Self::Attachment,
            _ => Self::Edit,
        }
    }
}

/// Which receipt a recipient sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// A file of a message (a photo, a document, a voice note, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    pub file_name: String,
    /// E.g. `image/jpeg`; `application/octet-stream` when unknown.
    pub mime_type: String,
    /// Bytes; 0 when not stored.
    pub size_bytes: u64,
    /// 64 lowercase hex digits of the bytes (their name in the blob store); empty when not
    /// stored.
    pub sha256: String,
    /// Whether the bytes are in the blob store (GetMedia serves them).
    pub stored: bool,
}

/// A file a client sends with a message (SendMessage).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachmentUpload {
    pub file_name: String,
    /// Empty: guessed from the file name.
    pub mime_type: String,
    pub data: Vec<u8>,
}

impl Attachment {
    /// An attachment whose bytes are not available (a file an export names but does not hold).
    pub fn missing(file_name: &str, mime_type: &str) -> Self {
        Self {
            file_name: file_name.to_owned(),
            mime_type: mime_type.to_owned(),
            ..Self::default()
        }
    }
}

/// A message to store. The storage layer assigns `id` and `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewMessage {
    pub provider_message_id: String,
    pub client_message_id: Option<String>,
    pub sender: String,
    pub text: String,
    pub kind: MessageKind,
    pub status: MessageStatus,
    pub from_me: bool,
    /// Unix milliseconds (UTC).
    pub sent_at_ms: i64,
    /// The message's files, in order; a message with any is kind `Media`. Their bytes are in
    /// the blob store already when `stored`.
    pub attachments: Vec<Attachment>,
    /// The `provider_message_id` of the message this one quotes, in the same chat.
    pub reply_to: Option<String>,
    pub forwarded: Forwarded,
    /// The original sender of a forwarded message, when the source names one.
    pub forwarded_from: Option<String>,
    /// Whether the source marks the message as edited.
    pub edited: bool,
    /// When it was last edited (Unix ms), when the source says.
    pub edited_at_ms: Option<i64>,
    /// The reactions the source reads with the message (an export's), stored with it.
    pub reactions: Vec<Reaction>,
}

impl NewMessage {
    /// Whether any of the lifecycle columns (reply, forward, edit) differs from its default,
    /// so a bulk insert must write them.
    pub fn has_relations(&self) -> bool {
        self.reply_to.is_some()
            || self.forwarded != Forwarded::No
            || self.forwarded_from.is_some()
            || self.edited
            || self.edited_at_ms.is_some()
    }
}

/// A stored chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub chat_id: String,
    pub name: String,
    /// The seq of the chat's last change (created or renamed).
    pub seq: u64,
}

/// One change in a session's change log, in seq order. Replays and live subscriptions both
/// read these from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A message was created; it carries the message as stored now.
    MessageCreated(Message),
    /// A message's status moved forward.
    StatusUpdated(StatusUpdate),
    /// A chat was added or renamed.
    ChatUpdated(Chat),
    /// A message was edited, deleted, reacted to or got a receipt; it carries the message as
    /// stored now (its `seq` is the creation seq; the change's own seq is `seq` here) and what
    /// changed.
    MessageUpdated {
        seq: u64,
        message: Message,
        what: MessageChange,
    },
    /// A contact was added or changed; it carries the contact as stored now (`contact.seq` is
    /// its latest change; `seq` is this change's).
    ContactUpdated { seq: u64, contact: Contact },
    /// A participant of a chat was first seen, joined or left; it carries the participant as
    /// stored now.
    ParticipantsChanged { seq: u64, participant: Participant },
    /// A sync run of the session ended: `state` is SUCCEEDED, FAILED or INTERRUPTED, at
    /// `finished_at_ms` (Unix milliseconds). Session-wide: it passes every chat filter.
    SyncRunFinished {
        seq: u64,
        state: SyncState,
        finished_at_ms: i64,
    },
}

impl Change {
    /// The seq of this change.
    pub fn seq(&self) -> u64 {
        match self {
            Self::MessageCreated(message) => message.seq,
            Self::StatusUpdated(update) => update.seq,
            Self::ChatUpdated(chat) => chat.seq,
            Self::MessageUpdated { seq, .. } => *seq,
            Self::ContactUpdated { seq, .. } => *seq,
            Self::ParticipantsChanged { seq, .. } => *seq,
            Self::SyncRunFinished { seq, .. } => *seq,
        }
    }

    /// The chat this change belongs to; empty for a session-wide change (a contact, a sync
    /// run).
    pub fn chat_id(&self) -> &str {
        match self {
            Self::MessageCreated(message) => &message.chat_id,
            Self::StatusUpdated(update) => &update.chat_id,
            Self::ChatUpdated(chat) => &chat.chat_id,
            Self::MessageUpdated { message, .. } => &message.chat_id,
            Self::ContactUpdated { .. } | Self::SyncRunFinished { .. } => "",
            Self::ParticipantsChanged { participant, .. } => &participant.chat_id,
        }
    }

    /// Whether a subscription filtered to `chat_ids` (empty: all chats) carries this change.
    /// Contacts and sync runs belong to no chat and pass every filter: a client showing some
    /// chats needs their senders' names, and to know when a backfill ended.
    pub fn passes(&self, chat_ids: &[String]) -> bool {
        matches!(
            self,
            Self::ContactUpdated { .. } | Self::SyncRunFinished { .. }
        ) || chat_ids.is_empty()
            || chat_ids.iter().any(|id| id == self.chat_id())
    }
}

/// A status change of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub seq: u64,
    pub message_id: i64,
    pub chat_id: String,
    pub provider_message_id: String,
    pub status: MessageStatus,
    /// Unix milliseconds (UTC).
    pub updated_at_ms: i64,
    /// Why the message failed, when `status` is FAILED and the source said why.
    pub error: Option<StatusError>,
}

/// Why a source could not deliver a message, as the source says it: for the WhatsApp Cloud
/// API the first entry of a failed status's `errors[]`
/// (<https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components#statuses-object>),
/// whose codes are listed at
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    /// The source's error code (`131047`: the 24-hour window is closed).
    pub code: i64,
    /// The source's short title (`Re-engagement message`).
    pub title: String,
}

/// A stored contact: a person a session's source knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Stable id within the session (see [`NewContact::contact_id`]).
    pub contact_id: String,
    pub display_name: String,
    /// The phone number, when the source shows one (`+1 555 0100`, as written).
    pub phone: Option<String>,
    /// The Matrix user id (`@alice:example.org`), on Matrix.
    pub matrix_id: Option<String>,
    /// The seq of the contact's last change.
    pub seq: u64,
}

/// A contact as a source gives it. Storing it again unchanged takes no seq; a field the source
/// leaves `None` keeps its stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    /// Stable across re-syncs: the source's user id (Telegram `user123`, the Matrix user id),
    /// or, for WhatsApp exports, derived from the phone number or the name.
    pub contact_id: String,
    pub display_name: String,
    pub phone: Option<String>,
    pub matrix_id: Option<String>,
}

/// A stored participant of a chat: a contact, with its latest known join and leave.
/// It is a member when `left_at` is `None`, or `joined_at` is later than `left_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub chat_id: String,
    pub contact_id: String,
    /// The latest known join (Unix ms); `None` when none is known (a sender, an invitee).
    pub joined_at_ms: Option<i64>,
    /// The latest known leave or removal (Unix ms); `None` when none is known.
    pub left_at_ms: Option<i64>,
    /// The seq of the row's last change.
    pub seq: u64,
}

/// What a membership event says about a contact in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Seen in the chat (a sender, an invitee): a participant, no join time known.
    Seen,
    /// Joined or was added.
    Joined,
    /// Left, was removed or banned.
    Left,
}

/// One membership event of a chat, as a source reads it. Events are merged into the stored
/// participant by their times (the latest join and the latest leave win), so storing the same
/// events again changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    pub contact_id: String,
    pub membership: Membership,
    /// When it happened (Unix ms).
    pub at_ms: i64,
}

/// The people of one chat's history: the contacts it names and its membership events, in
/// order. Sources fill it with the chat's messages ([`crate::sources::ChatHistory`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct People {
    pub contacts: Vec<NewContact>,
    pub members: Vec<MemberEvent>,
}

impl People {
    /// Whether there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty() && self.members.is_empty()
    }
}

/// No people: for imports that carry none.
pub static NO_PEOPLE: People = People {
    contacts: Vec::new(),
    members: Vec::new(),
};

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ---- Domain types shared by the service, storage and the adapters ----

/// Identifies one message of a session.
#[derive(Debug, Clone)]
pub enum MessageRef {
    /// The server id.
    Id(i64),
    /// The source's id within a chat.
    Provider {
        chat_id: String,
        provider_message_id: String,
    },
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "message {id}"),
            Self::Provider {
                chat_id,
                provider_message_id,
            } => write!(f, "message {provider_message_id:?} in chat {chat_id:?}"),
        }
    }
}

/// The persisted state of a session's sync runs (`sessions.sync_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    NeverSynced = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Interrupted = 5,
}

/// Whether a live source's connection is up, as GetSyncStatus and the health service show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// The source has no live connection (exports, and `local`, where chatsync is the server).
    NotLive,
    /// Connecting for the first time since the server started.
    Connecting,
    /// Connected: upstream changes arrive live.
    Up,
    /// Unreachable or refusing; the source retries with backoff. The text says why.
    Down(String),
}

/// Which messages a search covers besides its query.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Only these chats; empty means all.
    pub chat_ids: Vec<String>,
    /// Only messages with `sent_at >= sent_after_ms` (Unix ms).
    pub sent_after_ms: Option<i64>,
    /// Only messages with `sent_at < sent_before_ms` (Unix ms).
    pub sent_before_ms: Option<i64>,
    /// Only messages with `id <= max_id`: those that existed when the first page was read.
    pub max_id: i64,
}

/// Whether a send (`Store::insert_outgoing`) may create the chat of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingChat {
    /// The chat is created (named by its id) with the message: a native source.
    Create,
    /// An unknown chat is `NotFound`.
    Refuse,
}

/// Refuses a NUL character in a request's text field: PostgreSQL cannot store it in text, so
/// every backend refuses it alike. `InvalidArgument` naming `field`.
pub fn refuse_nul(field: &str, value: &str) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// A chat id as a request names it (the source's own id: a WhatsApp export's file name, a
/// Telegram chat id, a Matrix room id, a `local` chat's name): 1 to [`ChatId::MAX_BYTES`]
/// bytes, not only white space, no NUL character.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatId(String);

impl ChatId {
    /// The longest chat id a request may name, in bytes.
    pub const MAX_BYTES: usize = 256;

    /// Checks a requested chat id. Errors: `InvalidArgument` for an empty (or blank) id, one
    /// over [`Self::MAX_BYTES`], or one with a NUL character.
    pub fn parse(value: impl Into<String>) -> Result<Self, Error> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(Error::InvalidArgument("chat_id must not be empty".into()));
        }
        if value.len() > Self::MAX_BYTES {
            return Err(Error::InvalidArgument(format!(
                "chat_id is {} bytes; the limit is {}",
                value.len(),
                Self::MAX_BYTES
            )));
        }
        refuse_nul("chat_id", &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message's idempotency key (`client_message_id`): 1 to [`ClientMessageId::MAX_BYTES`]
/// bytes with no NUL character. A retry under the same key returns the stored message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// The largest idempotency key, in bytes.
    pub const MAX_BYTES: usize = 128;

    /// Checks a requested key; `None` for an empty one (the server then makes one, see
    /// [`Self::generate`]). Errors: `InvalidArgument` for a key over [`Self::MAX_BYTES`] or
    /// with a NUL character.
    pub fn parse_optional(value: impl Into<String>) -> Result<Option<Self>, Error> {
        Self::parse_field("client_message_id", value)
    }

    /// [`Self::parse_optional`] for an idempotency key the request names `field` (the
    /// `request_id` of ReactToMessage, EditMessage and DeleteMessage): errors name it.
    pub fn parse_field(field: &str, value: impl Into<String>) -> Result<Option<Self>, Error> {
        let value = value.into();
        if value.is_empty() {
            return Ok(None);
        }
        if value.len() > Self::MAX_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{field} is {} bytes; the limit is {}",
                value.len(),
                Self::MAX_BYTES
            )));
        }
        refuse_nul(field, &value)?;
        Ok(Some(Self(value)))
    }

    /// A new random key (a UUID v4), for a message sent without one.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a value takes on the wire, in bytes: the size of its protobuf encoding as the API
/// sends it, as one element of a repeated field (tag, length prefix and body; prost's
/// `encoded_len` of the proto type). Implemented by the gRPC adapter (`grpc::convert`), the
/// one place that knows the proto types; listing pages, search pages and snapshot frames are
/// cut by it so that they fit a client's message size limit.
pub trait EncodedLen {
    fn encoded_len(&self) -> usize;
}

/// A value in the protobuf JSON mapping of its API message
/// (<https://protobuf.dev/programming-guides/json/>): 64-bit integers as decimal strings,
/// enums by name, fields in lowerCamelCase unless the proto names them otherwise. Implemented
/// by the gRPC adapter (`grpc::convert`), the one place that knows the proto types; a
/// [`Change`] maps to its `SubscribeMessagesResponse`. Webhook bodies are built from it.
pub trait ProtoJson {
    fn proto_json(&self) -> serde_json::Value;
}

#[cfg(test)]
mod status_order_tests {
    use super::MessageStatus::*;

    #[test]
    fn failed_replaces_only_pending_or_sent() {
        assert!(Pending.advances_to(Failed));
        assert!(Sent.advances_to(Failed));
        assert!(!Delivered.advances_to(Failed));
        assert!(!Read.advances_to(Failed));
        assert!(!Failed.advances_to(Sent));
        assert!(!Read.advances_to(Delivered));
    }
}
