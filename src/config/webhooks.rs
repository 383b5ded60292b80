//! `[[webhooks]]`: one table per endpoint in `chatsync.toml`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::model::Change;

/// One webhook endpoint: where chatsync POSTs each change of its sessions, signed per
/// Standard Webhooks. The secret comes from exactly one of `secret_env` and `secret_file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint's id: 1 to 64 characters of `A-Z a-z 0-9 _ - .`; it names the endpoint's
    /// cursors, leases, status and metrics, so keep it when the URL changes.
    pub id: String,
    /// `https://…` (or `http://…`) the events are POSTed to.
    pub url: String,
    /// The name of an environment variable holding the secret, `whsec_` + base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// A file holding the secret (surrounding whitespace is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The sessions whose changes go to this endpoint. Default (empty): all sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<String>,
    /// The event types delivered (see [`EventType`]). Default (empty): all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Seconds one attempt may take, connection to the end of the answer. Default 10.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Deliver to loopback, link-local and private addresses. Default false: such a
    /// destination is refused, checked after DNS resolution on every connection.
    #[serde(default)]
    pub allow_private_network: bool,
    /// PEM CA certificate(s) trusted for this endpoint, besides the webpki roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The first retry delay's bound in milliseconds (full jitter: a random delay up to
    /// `retry_initial_ms × 2^attempt`, at most `retry_max_ms`). Default 1,000.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// The longest retry delay in milliseconds: the pace of a failing endpoint (a 4xx other
    /// than 408 and 429). Default 600,000 (10 minutes).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_timeout_secs() -> u64 {
    10
}
fn default_retry_initial_ms() -> u64 {
    1_000
}
fn default_retry_max_ms() -> u64 {
    600_000
}

/// The kinds of event a webhook delivers: the value of the body's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `message.created`: a new message (`message_created`).
    MessageCreated,
    /// `message.updated`: an edit, deletion, reaction or receipt (`message_updated`).
    MessageUpdated,
    /// `status.updated`: a message's status moved forward (`status_updated`).
    StatusUpdated,
    /// `chat.updated`: a chat was added or renamed (`chat_updated`).
    ChatUpdated,
    /// `contact.updated`: a contact was added or changed (`contact_updated`).
    ContactUpdated,
    /// `participants.changed`: a chat's participant was seen, joined or left.
    ParticipantsChanged,
    /// `sync.finished`: a sync run of the session ended (`sync_run_finished`).
    SyncRunFinished,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 7] = [
        Self::MessageCreated,
        Self::MessageUpdated,
        Self::StatusUpdated,
        Self::ChatUpdated,
        Self::ContactUpdated,
        Self::ParticipantsChanged,
        Self::SyncRunFinished,
    ];

    /// The name in configuration and in the body's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreated => "message.created",
            Self::MessageUpdated => "message.updated",
            Self::StatusUpdated => "status.updated",
            Self::ChatUpdated => "chat.updated",
            Self::ContactUpdated => "contact.updated",
            Self::ParticipantsChanged => "participants.changed",
            Self::SyncRunFinished => "sync.finished",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The type of a change.
    pub fn of(change: &Change) -> Self {
        match change {
            Change::MessageCreated(_) => Self::MessageCreated,
            Change::MessageUpdated { .. } => Self::MessageUpdated,
            Change::StatusUpdated(_) => Self::StatusUpdated,
            Change::ChatUpdated(_) => Self::ChatUpdated,
            Change::ContactUpdated { .. } => Self::ContactUpdated,
            Change::ParticipantsChanged { .. } => Self::ParticipantsChanged,
            Change::SyncRunFinished { .. } => Self::SyncRunFinished,
        }
    }
}

impl WebhookConfig {
    /// Reads the secret from where it is configured. `Invalid` when not exactly one source
    /// is given, it cannot be read, or it is not `whsec_` + base64 of at least 24 bytes. The
    /// error never contains the secret.
    pub fn secret(&self) -> Result<String, ConfigError> {
        let id = &self.id;
        let secret = match (&self.secret_env, &self.secret_file) {
            (Some(name), None) => std::env::var(name).map_err(|_| {
                ConfigError::Invalid(format!(
                    "webhook {id:?}: secret_env names {name:?}, which is not set (or not UTF-8)"
                ))
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "webhook {id:?}: cannot read secret_file {}: {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_owned(),
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "webhook {id:?} needs exactly one of secret_env and secret_file"
                )));
            }
        };
        let valid = secret
            .strip_prefix("whsec_")
            .and_then(|key| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(key).ok()
            })
            .is_some_and(|key| key.len() >= 24);
        if !valid {
            return Err(ConfigError::Invalid(format!(
                "webhook {id:?}: the secret must be \"whsec_\" followed by the base64 of at \
                 least 24 random bytes"
            )));
        }
        Ok(secret)
    }

    /// The event types this endpoint takes.
    pub fn event_types(&self) -> Vec<EventType> {
        if self.events.is_empty() {
            return EventType::ALL.to_vec();
        }
        self.events
            .iter()
            .filter_map(|name| EventType::parse(name))
            .collect()
    }
}

/// Checks every `[[webhooks]]` table: unique ids, a valid URL, a readable secret, known
/// sessions and event types, positive times. `session_ids` are the configured sessions.
pub fn validate(webhooks: &[WebhookConfig], session_ids: &[&str]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for webhook in webhooks {
        let id = &webhook.id;
        let id_ok = (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !id_ok {
            return Err(ConfigError::Invalid(format!(
                "webhook id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ - ."
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "webhook id {id:?} is declared twice"
            )));
        }
        match reqwest::Url::parse(&webhook.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "webhook {id:?}: url must be an http:// or https:// URL"
                )));
            }
        }
        webhook.secret()?;
        for session in &webhook.sessions {
            if !session_ids.contains(&session.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "webhook {id:?} names session {session:?}, which is not configured"
                )));
            }
        }
        for event in &webhook.events {
            if EventType::parse(event).is_none() {
                let known: Vec<_> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
                return Err(ConfigError::Invalid(format!(
                    "webhook {id:?}: unknown event {event:?} (known: {})",
                    known.join(", ")
                )));
            }
        }
        if webhook.timeout_secs == 0 || webhook.retry_initial_ms == 0 {
            return Err(ConfigError::Invalid(format!(
                "webhook {id:?}: timeout_secs and retry_initial_ms must be at least 1"
            )));
        }
        if webhook.retry_max_ms < webhook.retry_initial_ms {
            return Err(ConfigError::Invalid(format!(
                "webhook {id:?}: retry_max_ms must be at least retry_initial_ms"
            )));
        }
    }
    Ok(())
}
