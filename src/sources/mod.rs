//! Sources: where a session's chats come from.
//!
//! The contract every source keeps:
//! - [`Source::list_chats`] names every chat the source holds now. If it fails, the whole
//!   sync run fails.
//! - [`Source::fetch_history`] returns a chat's messages oldest first (in the order they are
//!   to take seqs), at most `limit` of the most recent when a limit is given. Every message
//!   carries a `provider_message_id` that is stable across re-syncs, so storage can skip what
//!   it already has. Exports carry no ids, so their sources derive one. With them it returns
//!   the chat's people ([`ChatHistory::people`]): the contacts it names and its membership
//!   events, with contact ids as stable as the message ids (storage merges them idempotently).
//! - Input a source cannot read is counted (`unplaced_lines`) or reported as a chat failure,
//!   never silently dropped, and never a panic.
//! - Read-only sources keep the default [`Source::send`], which refuses with
//!   [`SourceError::ReadOnly`]. Sources that send files say how many a message may carry
//!   ([`Capabilities::max_files_per_message`]) and implement [`Source::send_files`].
//! - Message files (attachments) go to the blob store ([`SourceContext::blobs`]) before the
//!   messages are handed over, each described by an [`crate::model::Attachment`]; a file a
//!   source cannot have is an attachment with `stored = false`, never an error.
//!
//! - A live source ([`Source::run_live`], the `matrix` source) keeps a connection open while
//!   the server runs and hands what happens upstream to a [`LiveSink`] as [`LiveEvent`]s,
//!   with the cursor to resume from; the sink stores them and saves the cursor after them.
//!
//! Sources are built from the `[[sessions]]` configuration by [`build`], the registry: the
//! built-in kinds, and any kind a program embedding chatsync adds with [`register`].
//!
//! Export files are read bounded ([`ExportLimits`], [`read_bounded`]): an export larger than
//! `max_export_bytes`, or a zip entry that inflates beyond `max_export_compression_ratio`, is
//! one failed chat, and no allocation follows a size a file merely declares.
pub mod export;
pub mod local;
pub mod matrix;
pub mod media;
pub mod telegram;
pub mod whatsapp;
pub mod whatsapp_cloud;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
/// Re-exported for source implementations: [`LiveSink::set_state`] takes it.
pub use crate::model::SourceState;
use crate::model::{NewMessage, People, ReactionChange, ReceiptKind, StatusError};

pub use export::{ExportLimits, RATIO_CHECK_FLOOR, read_bounded, too_compressed, too_large};

/// A chat as a source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChat {
    /// Stable id of the chat within the session.
    pub chat_id: String,
    /// Display name.
    pub name: String,
    /// Where the source finds the chat again (a file path, a room id, ...).
    pub locator: String,
}

/// The messages of one chat, oldest first.
#[derive(Debug, Clone, Default)]
pub struct ChatHistory {
    pub messages: Vec<NewMessage>,
    /// The contacts the chat names (its senders, members added or removed) and its
    /// membership events (joins and leaves), in order. Read from the whole history, also when
    /// `messages` is limited.
    pub people: People,
    /// Input lines (or records) that could not be placed in any message.
    pub unplaced_lines: u64,
    /// The SHA-256 of the file bytes the history was parsed from, when it was read whole
    /// from [`Source::chat_file`] (a sync run records it, see [`crate::storage::files`]).
    /// `None` otherwise; the run then hashes the file itself.
    pub content_sha256: Option<[u8; 32]>,
}

/// What a source accepted for sending.
#[derive(Debug, Clone)]
pub struct SendReceipt {
    /// The source's id of the sent message.
    pub provider_message_id: String,
}

/// A source failure.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot send (an export).
    #[error("the {0} source is read-only")]
    ReadOnly(&'static str),
    /// The source's data is unreadable (a corrupt zip, invalid JSON, ...).
    #[error("{0}")]
    Invalid(String),
    /// An I/O error reading the source.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The source is unreachable (network error, timeout, overloaded): worth retrying.
    #[error("source unavailable: {0}")]
    Unavailable(String),
    /// The source refused the request (forbidden, unknown room, bad token): retrying the same
    /// request will not help.
    #[error("the source refused: {0}")]
    Rejected(String),
    /// The source's rate limit held after retries (WhatsApp Cloud API 130429, 131056): worth
    /// retrying later.
    #[error("the source's rate limit: {0}")]
    Exhausted(String),
    /// `error`, for which the source gave its own code and title (a Graph API error of the
    /// WhatsApp Cloud API: its `code`, and the title Meta puts in its `message`). `error`
    /// decides the gRPC code; `reason` is kept on a send that fails this way (the message's
    /// FAILED `status_updated` event carries it). See [`SourceError::reason`].
    #[error("{error}")]
    Described {
        error: Box<SourceError>,
        reason: StatusError,
    },
}

impl SourceError {
    /// The source's own code and title for this error, when it gave them
    /// ([`SourceError::Described`]).
    pub fn reason(&self) -> Option<&StatusError> {
        match self {
            SourceError::Described { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl From<SourceError> for Error {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::ReadOnly(_) => Error::FailedPrecondition(error.to_string()),
            SourceError::Unavailable(_) => Error::Unavailable(error.to_string()),
            SourceError::Exhausted(_) => Error::ResourceExhausted(error.to_string()),
            SourceError::Invalid(_) | SourceError::Io { .. } | SourceError::Rejected(_) => {
                Error::FailedPrecondition(error.to_string())
            }
            SourceError::Described { error, .. } => Error::from(*error),
        }
    }
}

/// What a source can do, as [`Source::capabilities`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// SendMessage works on this source at all ([`Source::send`]).
    pub send: bool,
    /// chatsync itself is the chat server for this source (the `local` source): storing a
    /// message is sending it, so it is stored SENT at once, with no upstream call and no
    /// separate status change, and a send to an unknown chat creates the chat. Otherwise a
    /// message goes PENDING → [`Source::send`] → SENT or FAILED, and an unknown chat is
    /// `NotFound`.
    pub native: bool,
    /// How many files one message may carry on SendMessage ([`Source::send_files`]): 0 when
    /// the source cannot send files.
    pub max_files_per_message: usize,
    /// [`Source::run_live`] does something; when false the session's source state is
    /// [`SourceState::NotLive`].
    pub live: bool,
    /// The most messages of one chat a sync run should store per transaction (and report per
    /// MESSAGES_SAVED frame); the run also applies its own upper bound. A source that fetches
    /// history in pages gives its page size; `usize::MAX` says it has no preference.
    pub batch_size: usize,
    /// ReactToMessage, EditMessage and DeleteMessage work on this source
    /// ([`Source::change_message`]; on a native source storing the change is making it).
    pub message_changes: bool,
    /// The upstream itself deduplicates a send retried with the same idempotency key (Matrix:
    /// the transaction id), whichever replica retries it. When false (the WhatsApp Cloud API
    /// has no such key), a replica claims the key in storage before it posts, so that a retry
    /// racing the first call on another replica never posts twice (`service::send`).
    pub upstream_deduplicates: bool,
}

/// A change the session's account makes to a message upstream ([`Source::change_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamChange<'a> {
    /// Sets the account's one reaction; `emoji: None` removes it. `previous`: the upstream ids
    /// of the account's current reactions on the message, which a new one replaces.
    React {
        emoji: Option<&'a str>,
        previous: &'a [String],
    },
    /// Replaces the text.
    Edit { text: &'a str },
    /// Deletes the message for everyone.
    Delete,
}

impl Capabilities {
    /// A read-only source with no live connection (an export): no sends, no files, no
    /// preferred batch size.
    pub const READ_ONLY: Capabilities = Capabilities {
        message_changes: false,
        send: false,
        native: false,
        max_files_per_message: 0,
        live: false,
        batch_size: usize::MAX,
        upstream_deduplicates: false,
    };
}

/// A session's source of chats. See the module docs for the contract.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The source kind, as written in the configuration (`whatsapp-export`, ...).
    fn kind(&self) -> &'static str;

    /// What the source can do. The default, [`Capabilities::READ_ONLY`], fits an export.
    fn capabilities(&self) -> Capabilities {
        Capabilities::READ_ONLY
    }

    /// Every chat the source holds now.
    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError>;

    /// A chat's messages, oldest first; at most the `limit` most recent when given.
    async fn fetch_history(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError>;

    /// A chat's messages sent at or after `since_ms` (Unix milliseconds; `None`: all),
    /// oldest first; at most the `limit` most recent of those when given. The sync run
    /// applies the window and the limit again to what this returns, so a source need only
    /// override it to read less: Matrix stops paging back once it passes `since_ms`. The
    /// default reads the history (whole, when a window is given, so the limit counts only
    /// messages inside it) and filters it.
    async fn fetch_history_since(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
        since_ms: Option<i64>,
    ) -> Result<ChatHistory, SourceError> {
        let Some(since) = since_ms else {
            return self.fetch_history(chat, limit).await;
        };
        let mut history = self.fetch_history(chat, None).await?;
        apply_window(&mut history.messages, limit, Some(since));
        Ok(history)
    }

    /// The file a chat's whole history is read from, for sources that read each chat from a
    /// file of its own (WhatsApp exports). A sync run then records the file's fingerprint
    /// with the import and skips the file while it is unchanged (see
    /// [`crate::service::sync`]). Default `None`: every run reads every chat.
    fn chat_file(&self, chat: &SourceChat) -> Option<std::path::PathBuf> {
        let _ = chat;
        None
    }

    /// Sends a text message upstream (never called for native sources). `reply_to`: the
    /// `provider_message_id` of the message it quotes, in the same chat. `idempotency_key` is
    /// the message's `client_message_id`: a source that can deduplicate upstream uses it so a
    /// retry never posts twice.
    async fn send(
        &self,
        chat_id: &str,
        text: &str,
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let _ = (chat_id, text, reply_to, idempotency_key);
        Err(SourceError::ReadOnly(self.kind()))
    }

    /// Sends a message with files upstream (never called for native sources, nor with more
    /// files than [`Capabilities::max_files_per_message`]): each file's description (stored in the
    /// blob store) and its bytes. `text` may be empty. Idempotent on `idempotency_key` like
    /// [`Source::send`].
    async fn send_files(
        &self,
        chat_id: &str,
        text: &str,
        files: &[(crate::model::Attachment, Vec<u8>)],
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let _ = (chat_id, text, files, reply_to, idempotency_key);
        Err(SourceError::ReadOnly(self.kind()))
    }

    /// The session account's own user id upstream (the Matrix user id), which its reactions
    /// and receipts carry; `None` where the source has none (`local`: the account is `""`).
    fn account_id(&self) -> Option<String> {
        None
    }

    /// Makes a change to a stored message upstream for the session's account (ReactToMessage,
    /// EditMessage, DeleteMessage; never called for native sources, nor unless
    /// [`Capabilities::message_changes`]). Idempotent on `idempotency_key` like
    /// [`Source::send`]. Returns the upstream id of the event that made the change (a Matrix
    /// `m.reaction` event id, which a later removal redacts), when there is one.
    async fn change_message(
        &self,
        chat_id: &str,
        provider_message_id: &str,
        change: UpstreamChange<'_>,
        idempotency_key: &str,
    ) -> Result<Option<String>, SourceError> {
        let _ = (chat_id, provider_message_id, change, idempotency_key);
        Err(SourceError::ReadOnly(self.kind()))
    }

    /// Tells the upstream that the session's account has read an incoming message (and
    /// everything before it in the chat): Matrix `m.read`. Called when UpdateMessageStatus
    /// moves an incoming message to READ. Sources without read receipts keep the default.
    async fn mark_read(&self, chat_id: &str, provider_message_id: &str) -> Result<(), SourceError> {
        let _ = (chat_id, provider_message_id);
        Ok(())
    }

    /// Runs the source's live connection until `sink.stopped()` is cancelled: the source
    /// reports upstream changes through `sink` and says whether it is connected. Sources with
    /// no live connection (exports, `local`) keep the default, which returns at once.
    async fn run_live(&self, sink: Arc<dyn LiveSink>) {
        let _ = sink;
    }

    /// The WhatsApp Cloud API source behind this one, which takes pushed webhooks
    /// (`/webhooks/whatsapp`); `None` for every other kind.
    fn whatsapp_cloud(&self) -> Option<&whatsapp_cloud::WhatsAppCloud> {
        None
    }
}

/// One change a live source saw upstream, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A chat exists upstream with this name (new, renamed, or first seen since start-up).
    /// Storing it changes nothing when the stored chat has this name already.
    Chat { chat_id: String, name: String },
    /// A message. Skipped when its `provider_message_id` is stored already. A message whose
    /// `client_message_id` is set echoes one chatsync sent (Matrix `unsigned.transaction_id`):
    /// when that is stored, it is settled instead (see [`crate::storage::import`]).
    Message {
        chat_id: String,
        message: NewMessage,
    },
    /// A message's text was edited (Matrix `m.replace`) by `editor` at `at_ms` (Unix ms);
    /// only an edit by the message's own sender changes it. The earlier text is kept.
    Edited {
        chat_id: String,
        provider_message_id: String,
        editor: String,
        text: String,
        at_ms: i64,
    },
    /// An upstream event was redacted (deleted for everyone) by `by` at `at_ms`: a stored
    /// message with the id becomes kind DELETED with no text or files; a stored reaction with
    /// the id is removed.
    Redacted {
        chat_id: String,
        provider_id: String,
        by: String,
        at_ms: i64,
    },
    /// A reaction to a message was added, replaced or removed.
    Reacted {
        chat_id: String,
        provider_message_id: String,
        change: ReactionChange,
    },
    /// `reader` read the chat up to this event (a Matrix `m.read` receipt, at `read_at_ms`):
    /// each of the session's own messages up to it gets `reader`'s read receipt, and becomes
    /// READ once every recipient has read it. When the event is not a stored message (an
    /// edit, a reaction), `read_at_ms` bounds the messages instead.
    ReadUpTo {
        chat_id: String,
        provider_message_id: String,
        reader: String,
        read_at_ms: i64,
    },
    /// A receipt of one message by one recipient (a WhatsApp `delivered` or `read` status).
    Receipt {
        chat_id: String,
        provider_message_id: String,
        recipient: String,
        kind: ReceiptKind,
        at_ms: i64,
    },
    /// Contacts and membership events of a chat (Matrix `m.room.member`): merged into the
    /// stored contacts and participants; what changes nothing takes no seq.
    People { chat_id: String, people: People },
}

/// Where a live source delivers what it sees. Implemented by the domain layer, which stores
/// the events and publishes them to subscribers.
#[async_trait]
pub trait LiveSink: Send + Sync {
    /// The cursor saved with the last applied batch (Matrix: the `/sync` `since` token), or
    /// `None` when the source has never been connected.
    async fn cursor(&self) -> Result<Option<String>, Error>;
    /// Stores `events` in order, then saves `cursor`. On error nothing after the failing
    /// event is applied and the cursor is not saved: the source retries from the old cursor,
    /// and what was applied already is skipped as a duplicate.
    async fn apply(&self, events: Vec<LiveEvent>, cursor: &str) -> Result<(), Error>;
    /// Whether a message with this provider id is stored in the chat.
    async fn has_message(&self, chat_id: &str, provider_message_id: &str) -> Result<bool, Error>;
    /// Reports the connection state.
    fn set_state(&self, state: SourceState);
    /// Cancelled when the loop must stop (the server shuts down, or this replica lost the
    /// live lease); the live loop then returns.
    fn stopped(&self) -> CancellationToken;
}

/// One `[[sessions]]` entry: an id, a source kind, and the source's own settings (all other
/// keys of the table, read by the source's factory).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionConfig {
    /// The session id clients use. 1 to 128 characters.
    pub id: String,
    /// The source kind: `whatsapp-export`, `telegram-export`, `local` or `matrix`.
    pub source: String,
    /// Source settings, e.g. `path`, `timezone`, `date_order` (exports), or `homeserver`,
    /// `user_id`, `access_token_env` / `access_token_file` (matrix).
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// What a source may read of its own session's stored state. Implemented by the domain
/// layer over storage (`service::StoredSessionView`): sources never reach the database
/// otherwise, and write only through their history or their [`LiveSink`]. Errors are the
/// storage's, as [`Error`].
#[async_trait]
pub trait StoredSession: Send + Sync {
    /// The session's stored chats whose last change is after `after_seq`, in seq order, at
    /// most `limit`.
    async fn chats(&self, after_seq: u64, limit: u64) -> Result<Vec<crate::model::Chat>, Error>;
    /// The stored chat `chat_id`, if any.
    async fn chat(&self, chat_id: &str) -> Result<Option<crate::model::Chat>, Error>;
    /// Whether a message with this provider id is stored in the chat.
    async fn has_message(&self, chat_id: &str, provider_message_id: &str) -> Result<bool, Error>;
    /// The provider ids of the chat's stored messages.
    async fn provider_ids(&self, chat_id: &str)
    -> Result<std::collections::HashSet<String>, Error>;
}

/// What a source factory may use besides its settings.
#[derive(Clone)]
pub struct SourceContext {
    pub session_id: String,
    /// The session's stored state, read-only.
    pub stored: Arc<dyn StoredSession>,
    /// Bounds on the export files an export source reads (media files included, each one).
    pub export_limits: ExportLimits,
    /// Where sources put the bytes of message attachments (`blob_dir`).
    pub blobs: Arc<dyn crate::blobs::BlobStore>,
}

/// A source factory: builds a session's source from its configuration, or says why it cannot.
pub type Factory = fn(&SessionConfig, &SourceContext) -> Result<Arc<dyn Source>, String>;

/// The built-in source kinds.
const BUILT_IN: &[(&str, Factory)] = &[
    (whatsapp::KIND, whatsapp::WhatsAppExport::build),
    (telegram::KIND, telegram::TelegramExport::build),
    (local::KIND, local::Local::build),
    (matrix::KIND, matrix::Matrix::build),
    (whatsapp_cloud::KIND, whatsapp_cloud::WhatsAppCloud::build),
];

/// Kinds added with [`register`], for the whole process.
static REGISTERED: RwLock<Vec<(&'static str, Factory)>> = RwLock::new(Vec::new());

/// Adds a source kind for this process, beside the built-in ones: a program that embeds
/// chatsync as a library (or a test) brings a source of its own, and sessions name it as
/// `source = KIND`. Registering a kind again replaces its factory.
///
/// Errors: a built-in kind cannot be replaced.
pub fn register(kind: &'static str, factory: Factory) -> Result<(), String> {
    if BUILT_IN.iter().any(|(built_in, _)| *built_in == kind) {
        return Err(format!("{kind:?} is a built-in source kind"));
    }
    let mut registered = REGISTERED.write().unwrap_or_else(|p| p.into_inner());
    registered.retain(|(known, _)| *known != kind);
    registered.push((kind, factory));
    Ok(())
}

/// The source kinds this process knows: the built-in ones, then the registered ones.
pub fn kinds() -> Vec<&'static str> {
    let registered = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    BUILT_IN
        .iter()
        .chain(registered.iter())
        .map(|(kind, _)| *kind)
        .collect()
}

fn factory(kind: &str) -> Option<Factory> {
    let registered = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    BUILT_IN
        .iter()
        .chain(registered.iter())
        .find(|(known, _)| *known == kind)
        .map(|(_, factory)| *factory)
}

/// Builds the source a session's configuration names, or says why it cannot.
pub fn build(config: &SessionConfig, context: &SourceContext) -> Result<Arc<dyn Source>, String> {
    let factory = factory(&config.source).ok_or_else(|| {
        format!(
            "session {:?}: unknown source {:?} (known: {})",
            config.id,
            config.source,
            kinds().join(", ")
        )
    })?;
    factory(config, context).map_err(|error| format!("session {:?}: {error}", config.id))
}

/// Reads a source's settings struct from the session's settings table.
pub fn settings<T: serde::de::DeserializeOwned>(config: &SessionConfig) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(config.settings.clone()))
        .map_err(|error| format!("invalid {} settings: {error}", config.source))
}

/// How a source names a file or folder in errors that reach clients: its name only, so that
/// the server's directory layout stays on the server (the logs carry full paths).
pub fn shown(path: &std::path::Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "the export".to_owned())
}

/// Keeps the messages sent at or after `since_ms` (when given), then the last `limit` of those
/// (when given). Messages are oldest first.
pub fn apply_window(messages: &mut Vec<NewMessage>, limit: Option<usize>, since_ms: Option<i64>) {
    if let Some(since) = since_ms {
        messages.retain(|message| message.sent_at_ms >= since);
    }
    keep_most_recent(messages, limit);
}

/// Keeps the last `limit` items of `items` when a limit is given.
pub fn keep_most_recent<T>(items: &mut Vec<T>, limit: Option<usize>) {
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.drain(..items.len() - limit);
    }
}
