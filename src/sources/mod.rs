//! Sources: where a session's chats come from.
//!
//! The contract every source keeps:
//! - [`Source::list_chats`] names every chat the source holds now. If it fails, the whole
//!   sync run fails.
//! - [`Source::fetch_history`] returns a chat's messages oldest first (in the order they are
//!   to take seqs), at most `limit` of the most recent when a limit is given. Every message
//!   carries a `provider_message_id` that is stable across re-syncs, so storage can skip what
//!   it already has. Exports carry no ids, so their sources derive one.
//! - Input a source cannot read is counted (`unplaced_lines`) or reported as a chat failure,
//!   never silently dropped, and never a panic.
//! - Read-only sources keep the default [`Source::send`], which refuses with
//!   [`SourceError::ReadOnly`].
//!
//! Sources are built from the `[[sessions]]` configuration by [`build`], the registry.
pub mod local;
pub mod telegram;
pub mod whatsapp;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::SessionConfig;
use crate::error::Error;
use crate::model::NewMessage;
use crate::storage::Store;

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
    /// Input lines (or records) that could not be placed in any message.
    pub unplaced_lines: u64,
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
    /// The source is unreachable.
    #[error("source unavailable: {0}")]
    Unavailable(String),
}

impl From<SourceError> for Error {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::ReadOnly(_) => Error::FailedPrecondition(error.to_string()),
            SourceError::Unavailable(_) => Error::Unavailable(error.to_string()),
            SourceError::Invalid(_) | SourceError::Io { .. } => {
                Error::FailedPrecondition(error.to_string())
            }
        }
    }
}

/// A session's source of chats. See the module docs for the contract.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The source kind, as written in the configuration (`whatsapp-export`, ...).
    fn kind(&self) -> &'static str;

    /// Every chat the source holds now.
    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError>;

    /// A chat's messages, oldest first; at most the `limit` most recent when given.
    async fn fetch_history(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError>;

    /// Whether SendMessage works on this source at all. Read-only sources keep the default.
    fn can_send(&self) -> bool {
        false
    }

    /// Whether chatsync itself is the chat server for this source (the `local` source):
    /// storing a message is sending it, so it is stored SENT at once, with no upstream call and
    /// no separate status change, and a send to an unknown chat creates the chat. Otherwise a
    /// message goes PENDING → [`Source::send`] → SENT or FAILED, and an unknown chat is
    /// `NotFound`.
    fn is_native(&self) -> bool {
        false
    }

    /// Sends a text message upstream (never called for native sources). `idempotency_key` is
    /// the message's `client_message_id`: a
    /// source that can deduplicate upstream uses it so a retry never posts twice.
    async fn send(
        &self,
        chat_id: &str,
        text: &str,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let _ = (chat_id, text, idempotency_key);
        Err(SourceError::ReadOnly(self.kind()))
    }
}

/// What a source factory may use besides its settings.
#[derive(Clone)]
pub struct SourceContext {
    pub session_id: String,
    pub store: Store,
}

type Factory = fn(&SessionConfig, &SourceContext) -> Result<Arc<dyn Source>, String>;

/// The registry: source kind → factory.
const REGISTRY: &[(&str, Factory)] = &[
    (whatsapp::KIND, whatsapp::WhatsAppExport::build),
    (telegram::KIND, telegram::TelegramExport::build),
    (local::KIND, local::Local::build),
];

/// The source kinds this build knows.
pub fn kinds() -> Vec<&'static str> {
    REGISTRY.iter().map(|(kind, _)| *kind).collect()
}

/// Builds the source a session's configuration names, or says why it cannot.
pub fn build(config: &SessionConfig, context: &SourceContext) -> Result<Arc<dyn Source>, String> {
    let (_, factory) = REGISTRY
        .iter()
        .find(|(kind, _)| *kind == config.source)
        .ok_or_else(|| {
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

/// Keeps the last `limit` items of `items` when a limit is given.
pub fn keep_most_recent<T>(items: &mut Vec<T>, limit: Option<usize>) {
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.drain(..items.len() - limit);
    }
}
