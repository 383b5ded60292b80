//! The `whatsapp-cloud` source: a WhatsApp Business number through Meta's official Cloud API.
//!
//! - Upstream changes arrive as signed webhooks on the server's own port
//!   (`/webhooks/whatsapp`, see `server::webhooks`); the domain layer routes a body to its
//!   session by `metadata.phone_number_id`, checks the signature with
//!   [`WhatsAppCloud::app_secret`] ([`webhook::signature_matches`]) and reads each change into
//!   [`Item`]s with [`WhatsAppCloud::read_change`]: events to store, statuses, and items that
//!   could not be read (kept with their error).
//! - Chats are one per user, keyed by `wa_id`, or by the business-scoped `user_id` (BSUID)
//!   when there is no `wa_id`; contacts come from `contacts[]`.
//! - Media (`image`, `video`, `audio`, `document`, `sticker`) is downloaded at once
//!   (`GET /{media-id}`, then the URL with the bearer token), its `sha256` checked, into the
//!   blob store; a failed download is an attachment with `stored = false`, kept as a
//!   [`MissingMedia`] and downloaded again (with a fresh URL) in the background, with a
//!   doubling pause, while its media id is valid (7 days), also after a restart.
//! - SendMessage posts `POST /{version}/{phone_number_id}/messages` with
//!   `biz_opaque_callback_data` = `client_message_id`, so a status that beats the send's answer
//!   still finds its message. A message with a file (one at most) uploads it first
//!   (`POST /{version}/{phone_number_id}/media`, multipart) and sends its media id as an
//!   image, video, audio or document by its MIME type ([`graph::media_type`]). Graph has no
//!   idempotency key: a retry racing its first call on this process waits for it and gets
//!   its wamid, so it never posts twice (nor uploads twice); on another replica, the
//!   service's send claim (`Store::claim`) keeps it from posting at all. Rate limits
//!   (130429, 131056) are retried with backoff, then `Exhausted` (RESOURCE_EXHAUSTED); 131047
//!   (outside the 24-hour window) is `Rejected` (FAILED_PRECONDITION); an invalid token is
//!   `Unavailable` and puts the source DOWN.
//! - ReactToMessage posts `type: reaction`; UpdateMessageStatus READ posts `status: read`.
//! - The `history` field (a number moved over from the WhatsApp Business app) is read into
//!   [`HistoryChunk`]s, imported by the service as one sync run; a `media_placeholder` is a
//!   media message whose file a later `history` webhook gives ([`Item::PlaceholderFile`]).
//!
//! Settings: `phone_number_id`; `access_token_env` / `access_token_file`; `app_secret_env` /
//! `app_secret_file`; `verify_token_env` / `verify_token_file`; `graph_api_url` (default
//! [`DEFAULT_GRAPH_API_URL`]), `graph_api_version` (default [`DEFAULT_GRAPH_API_VERSION`]),
//! `send_rate_per_second` (default 80), `rate_limit_retries` (default 3) and
//! `rate_limit_backoff_ms` (default 1000, doubled per retry) and `media_retry_backoff_ms`
//! (default 1000: the first pause before a failed media download is tried again, doubled per
//! try, at most an hour), `inbox_sweep_interval_ms` (default 60000: how often each replica
//! sweeps the webhook inbox for statuses whose message has come and for media retries whose
//! replica died).
pub mod graph;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use self::graph::{CallError, Graph};
use super::{
    Capabilities, ChatHistory, LiveEvent, LiveSink, SendReceipt, SessionConfig, Source, SourceChat,
    SourceContext, SourceError, UpstreamChange,
};
use crate::model::{
    Attachment, Forwarded, MessageKind, MessageStatus, NewContact, NewMessage, People,
    ReactionChange, SourceState, now_ms,
};

/// The source kind in the configuration.
pub const KIND: &str = "whatsapp-cloud";
/// Where the Graph API is.
pub const DEFAULT_GRAPH_API_URL: &str = "https://graph.facebook.com";
/// The Graph API version called when the configuration names none.
pub const DEFAULT_GRAPH_API_VERSION: &str = "v23.0";
/// The largest media file downloaded into the blob store: 100 MiB (Meta's own limit for
/// documents); larger files are attachments with `stored = false`.
pub const MAX_MEDIA_BYTES: u64 = 100 << 20;

/// The `[[sessions]]` settings of a `whatsapp-cloud` session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    phone_number_id: String,
    #[serde(default)]
    access_token_env: Option<String>,
    #[serde(default)]
    access_token_file: Option<PathBuf>,
    #[serde(default)]
    app_secret_env: Option<String>,
    #[serde(default)]
    app_secret_file: Option<PathBuf>,
    #[serde(default)]
    verify_token_env: Option<String>,
    #[serde(default)]
    verify_token_file: Option<PathBuf>,
    #[serde(default)]
    graph_api_url: Option<String>,
    #[serde(default)]
    graph_api_version: Option<String>,
    #[serde(default)]
    send_rate_per_second: Option<u32>,
    #[serde(default)]
    rate_limit_retries: Option<u32>,
    #[serde(default)]
    rate_limit_backoff_ms: Option<u64>,
    #[serde(default)]
    media_retry_backoff_ms: Option<u64>,
    #[serde(default)]
    inbox_sweep_interval_ms: Option<u64>,
}

/// Reads a secret from the environment variable or the file a pair of settings names.
fn secret(name: &str, env: &Option<String>, file: &Option<PathBuf>) -> Result<String, String> {
    let value = match (env, file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            format!("{name}_env names {var:?}, which is not set in the environment")
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {name}_file {}: {error}", path.display()))?,
        _ => return Err(format!("set exactly one of {name}_env and {name}_file")),
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(format!("the {name} is empty"));
    }
    Ok(value)
}

/// One item of a webhook change, applied or kept on its own.
#[derive(Debug, Clone)]
pub enum Item {
    /// Events to store in order (the chat, its contact, a message or a change to one).
    /// `key` names the item in logs. `missing`: the files of the message that could not be
    /// downloaded (attachments with `stored = false`), to download again later.
    Events {
        key: String,
        events: Vec<LiveEvent>,
        missing: Vec<MissingMedia>,
    },
    /// A message status; kept in the inbox while its message is not stored.
    Status {
        key: String,
        payload: String,
        status: Box<webhook::Status>,
    },
    /// An item that could not be read: kept with its error.
    Unreadable {
        key: String,
        payload: String,
        error: String,
    },
    /// One chunk of a `history` webhook: chats and messages to import as part of the
    /// session's history sync run.
    History(Box<HistoryChunk>),
    /// The file of a message that a `history` chunk stored as a `media_placeholder`, sent in a
    /// webhook of its own (`field: history` with `messages[]`): attachment `ordinal` of
    /// message `wamid` gets it, if that attachment is not stored yet.
    PlaceholderFile {
        chat_id: String,
        wamid: String,
        ordinal: u32,
        attachment: Attachment,
    },
}

/// One element of a `history` webhook's `history[]`: a chunk of the chats of a number that
/// was moved over from the WhatsApp Business app (coexistence), up to 180 days back.
///
/// Source: <https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/history/>.
/// `metadata.phase` is 0 (day 0 to 1), 1 (day 1 to 90) or 2 (day 90 to 180); chunks of a
/// phase may arrive out of `chunk_order`; `progress` is the whole sync's percentage, 100 when
/// it is complete. A business that declined to share its history sends one element with
/// `errors[]` (code 2593109) instead.
#[derive(Debug, Clone, Default)]
pub struct HistoryChunk {
    /// Names the chunk in logs: `history:<phase>:<chunk_order>`.
    pub key: String,
    pub phase: Option<u64>,
    pub chunk_order: Option<u64>,
    /// 0..=100; 100: the history is complete.
    pub progress: Option<u64>,
    /// Its threads: one chat per WhatsApp user, messages oldest first as Meta lists them.
    pub threads: Vec<HistoryThread>,
    /// Why there is no history (`errors[]`: title and code), when the business declined.
    pub error: Option<String>,
    /// What its threads hold besides messages: reactions, edits, revokes, and messages that
    /// could not be read, applied and kept as a `messages` webhook's are.
    pub other: Vec<Item>,
}

/// One `threads[]` of a history chunk: the chat with one WhatsApp user.
#[derive(Debug, Clone, Default)]
pub struct HistoryThread {
    /// The user's phone number (`threads[].id`), the chat's id as live webhooks key it.
    pub chat_id: String,
    pub messages: Vec<NewMessage>,
}

/// Where a message was read from: a `messages` webhook, or a history chunk's thread.
#[derive(Debug, Clone, Copy, Default)]
struct Origin<'a> {
    /// The business's own number (`metadata.display_phone_number`): a message `from` it is
    /// one the business sent (from the WhatsApp Business app, in a history chunk).
    business_number: Option<&'a str>,
    /// The chat, for a message of a history thread (`threads[].id`).
    thread: Option<&'a str>,
}

/// A WhatsApp Business number as a source.
pub struct WhatsAppCloud {
    graph: Graph,
    phone_number_id: String,
    app_secret: String,
    verify_token: String,
    context: SourceContext,
    /// Sends in flight or done, by idempotency key: a racing retry waits for the first.
    sends: Mutex<HashMap<String, Arc<OnceCell<String>>>>,
    /// Reads said upstream, by wamid: each once.
    read_sent: Mutex<std::collections::HashSet<String>>,
    /// The next instant a send may start (the per-number rate limit).
    next_send: tokio::sync::Mutex<Instant>,
    send_interval: Duration,
    retries: u32,
    backoff: Duration,
    /// The live sink while the live loop runs: an invalid token puts the source DOWN.
    sink: Mutex<Option<Arc<dyn LiveSink>>>,
    /// The first pause before a failed media download is tried again.
    media_backoff: Duration,
    /// Inbox keys of media retries running on this process.
    media_retries: Mutex<std::collections::HashSet<String>>,
    /// How often each replica sweeps the session's webhook inbox.
    inbox_sweep_interval: Duration,
}

/// A file of an incoming message whose download failed: stored as an attachment with
/// `stored = false`, and kept in the webhook inbox (as JSON, under [`MissingMedia::key`]) to
/// be downloaded again while its media id is valid ([`MissingMedia::expires_at_ms`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct MissingMedia {
    /// The message's wamid.
    pub wamid: String,
    /// Its chat (the sender's `wa_id`, or BSUID).
    pub chat_id: String,
    /// The attachment's place among the message's files (0: WhatsApp messages carry one).
    pub ordinal: u32,
    /// Meta's media id (`GET /{media-id}` gives a fresh URL).
    pub media_id: String,
    /// The file's SHA-256 as the webhook gave it (base64), checked after the download.
    pub sha256: Option<String>,
    /// When the message was sent (Unix ms, the webhook's `timestamp`).
    pub sent_at_ms: i64,
}

/// How long a media id of an incoming message stays valid: 7 days ("Media IDs in webhooks
/// expire after 7 days"; those the upload API answers last 30 days), in milliseconds.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media>
pub const WEBHOOK_MEDIA_ID_VALID_MS: i64 = 7 * 24 * 3600 * 1000;

/// The longest pause between two retries of a failed media download: 1 hour.
pub const MEDIA_RETRY_MAX_PAUSE: Duration = Duration::from_secs(3600);

impl MissingMedia {
    /// Its key in the webhook inbox: `media:{wamid}:{ordinal}`.
    pub fn key(&self) -> String {
        format!("media:{}:{}", self.wamid, self.ordinal)
    }

    /// When its media id stops being valid (Unix ms): [`WEBHOOK_MEDIA_ID_VALID_MS`] after the
    /// message was sent. Retries stop then.
    pub fn expires_at_ms(&self) -> i64 {
        self.sent_at_ms.saturating_add(WEBHOOK_MEDIA_ID_VALID_MS)
    }
}

impl WhatsAppCloud {
    /// Builds the source from its settings; reads the secrets from the environment variables
    /// or files they name. Errors name the setting at fault.
    pub fn build(
        config: &SessionConfig,
        context: &SourceContext,
    ) -> Result<Arc<dyn Source>, String> {
        let settings: Settings = super::settings(config)?;
        if settings.phone_number_id.trim().is_empty() {
            return Err("phone_number_id must not be empty".into());
        }
        let token = secret(
            "access_token",
            &settings.access_token_env,
            &settings.access_token_file,
        )?;
        let app_secret = secret(
            "app_secret",
            &settings.app_secret_env,
            &settings.app_secret_file,
        )?;
        let verify_token = secret(
            "verify_token",
            &settings.verify_token_env,
            &settings.verify_token_file,
        )?;
        let url = settings
            .graph_api_url
            .unwrap_or_else(|| DEFAULT_GRAPH_API_URL.to_owned());
        let parsed = reqwest::Url::parse(&url)
            .map_err(|error| format!("graph_api_url {url:?} is not a URL: {error}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("graph_api_url {url:?} must be http:// or https://"));
        }
        let version = settings
            .graph_api_version
            .unwrap_or_else(|| DEFAULT_GRAPH_API_VERSION.to_owned());
        let rate = settings.send_rate_per_second.unwrap_or(80).max(1);
        let base = format!("{}/{}", url.trim_end_matches('/'), version);
        Ok(Arc::new(Self {
            graph: Graph::new(base, settings.phone_number_id.clone(), token),
            phone_number_id: settings.phone_number_id,
            app_secret,
            verify_token,
            context: context.clone(),
            sends: Mutex::new(HashMap::new()),
            read_sent: Mutex::new(Default::default()),
            next_send: tokio::sync::Mutex::new(Instant::now()),
            send_interval: Duration::from_secs(1) / rate,
            retries: settings.rate_limit_retries.unwrap_or(3),
            backoff: Duration::from_millis(settings.rate_limit_backoff_ms.unwrap_or(1000)),
            sink: Mutex::new(None),
            media_backoff: Duration::from_millis(settings.media_retry_backoff_ms.unwrap_or(1000))
                .max(Duration::from_millis(1)),
            media_retries: Mutex::new(Default::default()),
            inbox_sweep_interval: Duration::from_millis(
                settings.inbox_sweep_interval_ms.unwrap_or(60_000),
            )
            .max(Duration::from_millis(1)),
        }))
    }

    /// The number's id at Meta (`metadata.phone_number_id` of its webhooks).
    pub fn phone_number_id(&self) -> &str {
        &self.phone_number_id
    }

    /// The app secret that signs this number's webhooks.
    pub fn app_secret(&self) -> &[u8] {
        self.app_secret.as_bytes()
    }

    /// Whether `token` is the configured verify token (compared in constant time).
    pub fn verify_token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (a, b) = (Sha256::digest(token), Sha256::digest(&self.verify_token));
        a.ct_eq(&b).into()
    }

    fn report(&self, error: &CallError) {
        if error.is_invalid_token()
            && let Some(sink) = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
        {
            sink.set_state(SourceState::Down(
                "the Graph API refused the access token".into(),
            ));
        }
    }

    /// Runs `send` once per idempotency key on this process: a retry, even one racing the
    /// first call, waits for it and gets its wamid; a failed call leaves the key free.
    async fn send_once<F, Fut>(
        &self,
        idempotency_key: &str,
        send: F,
    ) -> Result<SendReceipt, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, SourceError>>,
    {
        let cell = {
            let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
            if sends.len() > 100_000 {
                sends.retain(|_, cell| !cell.initialized());
            }
            sends.entry(idempotency_key.to_owned()).or_default().clone()
        };
        let wamid = cell.get_or_try_init(send).await?;
        Ok(SendReceipt {
            provider_message_id: wamid.clone(),
        })
    }

    /// Posts a message body; the wamid of its answer.
    async fn post_for_wamid<B: serde::Serialize>(&self, body: &B) -> Result<String, SourceError> {
        let answer: graph::SendAnswer = self.post(body).await?;
        answer
            .messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| SourceError::Unavailable("Graph API: no message id".into()))
    }

    /// Waits for the number's next send slot (`send_rate_per_second`).
    async fn pace(&self) {
        let wait = {
            let mut next = self.next_send.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + self.send_interval;
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Posts a message body in the number's next send slot, retrying rate limits with
    /// doubling backoff.
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        body: &B,
    ) -> Result<T, SourceError> {
        self.retrying(true, || self.graph.post_message(body)).await
    }

    /// Runs a Graph call (after [`pace`](Self::pace) when `paced`), retrying rate limits
    /// with doubling backoff; other errors are reported ([`report`](Self::report)) and
    /// returned as source errors.
    async fn retrying<T, F, Fut>(&self, paced: bool, call: F) -> Result<T, SourceError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, graph::CallError>>,
    {
        let mut attempt = 0;
        loop {
            if paced {
                self.pace().await;
            }
            match call().await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.is_rate_limit() && attempt < self.retries => {
                    tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
                Err(error) => {
                    self.report(&error);
                    return Err(error.into_source_error());
                }
            }
        }
    }

    /// Reads one webhook change into items. Media is downloaded here, before anything is
    /// stored. Never fails: what cannot be read is an [`Item::Unreadable`].
    pub async fn read_change(&self, change: &webhook::Change) -> Vec<Item> {
        let value = &change.value;
        let mut items = Vec::new();
        let origin = Origin {
            business_number: str_at(value, &["metadata", "display_phone_number"]),
            thread: None,
        };
        let history = change.field == "history";
        if history && let Some(chunks) = value.get("history").and_then(Value::as_array) {
            for chunk in chunks {
                items.push(Item::History(Box::new(
                    self.read_history(chunk, origin).await,
                )));
            }
            return items;
        }
        // A `history` change with `messages[]` is the file of a message a chunk stored as a
        // `media_placeholder`: read as any message, and its file given to the placeholder.
        if change.field != "messages" && !history {
            items.push(Item::Unreadable {
                key: format!("field:{}:{}", change.field, digest(value)),
                payload: value.to_string(),
                error: format!("webhook field {:?} is not read", change.field),
            });
            return items;
        }
        // Contacts: a chat per user, named after the profile.
        let mut names: HashMap<String, String> = HashMap::new();
        let mut people_events = Vec::new();
        for contact in value
            .get("contacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let wa_id = str_at(contact, &["wa_id"]);
            let user_id = str_at(contact, &["user_id"]);
            let Some(id) = wa_id.or(user_id) else {
                continue;
            };
            let name = str_at(contact, &["profile", "name"])
                .or(str_at(contact, &["profile", "username"]))
                .unwrap_or(id)
                .to_owned();
            names.insert(id.to_owned(), name.clone());
            if let Some(user_id) = user_id {
                names.insert(user_id.to_owned(), name.clone());
            }
            people_events.push(LiveEvent::Chat {
                chat_id: id.to_owned(),
                name: name.clone(),
            });
            people_events.push(LiveEvent::People {
                chat_id: id.to_owned(),
                people: People {
                    contacts: vec![NewContact {
                        contact_id: id.to_owned(),
                        display_name: name,
                        phone: wa_id.map(|w| format!("+{w}")),
                        matrix_id: None,
                    }],
                    members: Vec::new(),
                },
            });
        }
        if !people_events.is_empty() {
            items.push(Item::Events {
                key: "contacts".into(),
                events: people_events,
                missing: Vec::new(),
            });
        }
        for message in value
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let item = self.read_message(message, &names, origin).await;
            if history
                && let Item::Events { events, .. } = &item
                && let Some(LiveEvent::Message { chat_id, message }) = events.last()
            {
                let fills: Vec<Item> = message
                    .attachments
                    .iter()
                    .enumerate()
                    .filter(|(_, attachment)| attachment.stored)
                    .map(|(ordinal, attachment)| Item::PlaceholderFile {
                        chat_id: chat_id.clone(),
                        wamid: message.provider_message_id.clone(),
                        ordinal: ordinal as u32,
                        attachment: attachment.clone(),
                    })
                    .collect();
                items.push(item);
                items.extend(fills);
                continue;
            }
            items.push(item);
        }
        for status in value
            .get("statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let payload = status.to_string();
            match serde_json::from_value::<webhook::Status>(status.clone()) {
                Ok(parsed) if parsed.chat_id().is_some() => items.push(Item::Status {
                    key: parsed.key(),
                    payload,
                    status: Box::new(parsed),
                }),
                Ok(_) => items.push(Item::Unreadable {
                    key: format!("bad:{}", digest(status)),
                    payload,
                    error: "a status with no recipient".into(),
                }),
                Err(error) => items.push(Item::Unreadable {
                    key: format!("bad:{}", digest(status)),
                    payload,
                    error: format!("unreadable status: {error}"),
                }),
            }
        }
        // Value-level errors (Meta could not deliver something): a notice, once.
        if let Some(errors) = value.get("errors").and_then(Value::as_array)
            && value.get("messages").is_none()
        {
            items.push(Item::Unreadable {
                key: format!("errors:{}", digest(value)),
                payload: Value::Array(errors.clone()).to_string(),
                error: "the webhook reports errors".into(),
            });
        }
        items
    }

    /// Reads one history chunk (an element of `history[]`) into its threads' messages.
    async fn read_history(&self, chunk: &Value, origin: Origin<'_>) -> HistoryChunk {
        let number = |key: &str| {
            chunk
                .get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Value::as_u64)
        };
        let mut read = HistoryChunk {
            phase: number("phase"),
            chunk_order: number("chunk_order"),
            progress: number("progress"),
            ..HistoryChunk::default()
        };
        read.key = format!(
            "history:{}:{}",
            read.phase.map_or("?".into(), |p| p.to_string()),
            read.chunk_order.map_or("?".into(), |c| c.to_string())
        );
        if chunk.get("errors").is_some() {
            read.error = Some(format!("WhatsApp shares no history{}", errors_text(chunk)));
        }
        let names = HashMap::new();
        for thread in chunk
            .get("threads")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(chat_id) = str_at(thread, &["id"]).filter(|id| !id.is_empty()) else {
                read.other.push(Item::Unreadable {
                    key: format!("bad:{}", digest(thread)),
                    payload: thread.to_string(),
                    error: "a history thread with no id".into(),
                });
                continue;
            };
            let origin = Origin {
                thread: Some(chat_id),
                ..origin
            };
            let mut messages = Vec::new();
            for message in thread
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match self.read_message(message, &names, origin).await {
                    Item::Events {
                        key,
                        events,
                        missing,
                    } => {
                        let mut other = Vec::new();
                        for event in events {
                            match event {
                                LiveEvent::Message { message, .. } => messages.push(message),
                                // A chat event names the chat; the import does that.
                                LiveEvent::Chat { .. } => {}
                                event => other.push(event),
                            }
                        }
                        if !other.is_empty() {
                            read.other.push(Item::Events {
                                key,
                                events: other,
                                missing,
                            });
                        }
                    }
                    item => read.other.push(item),
                }
            }
            read.threads.push(HistoryThread {
                chat_id: chat_id.to_owned(),
                messages,
            });
        }
        read
    }

    /// Reads one `messages[]` entry (of a webhook, or of a history thread: `origin`).
    async fn read_message(
        &self,
        message: &Value,
        names: &HashMap<String, String>,
        origin: Origin<'_>,
    ) -> Item {
        let payload = message.to_string();
        let unreadable = |error: String| Item::Unreadable {
            key: format!("bad:{}", digest(message)),
            payload: payload.clone(),
            error,
        };
        let Some(wamid) = str_at(message, &["id"]).filter(|id| !id.is_empty()) else {
            return unreadable("a message with no id".into());
        };
        let Some(sender) = str_at(message, &["from"])
            .or(str_at(message, &["from_user_id"]))
            .filter(|s| !s.is_empty())
        else {
            return unreadable(format!("message {wamid} has no sender"));
        };
        // A message from the business's own number (a history chunk's, or its file's own
        // webhook) is one it sent: its chat is the thread, or `to`.
        let from_me = origin.business_number == Some(sender);
        let chat_id = match (origin.thread, str_at(message, &["to"])) {
            (Some(thread), _) => thread.to_owned(),
            (None, Some(to)) if from_me => to.to_owned(),
            _ => sender.to_owned(),
        };
        let sender = if from_me {
            self.phone_number_id.as_str()
        } else {
            sender
        };
        let kind = str_at(message, &["type"]).unwrap_or("unknown");
        let at_ms = webhook::seconds_ms(message.get("timestamp").unwrap_or(&Value::Null));
        let key = format!("message:{wamid}");
        let mut events = Vec::new();
        if let Some(name) = names.get(sender) {
            events.push(LiveEvent::Chat {
                chat_id: chat_id.clone(),
                name: name.clone(),
            });
        }
        let mut new = NewMessage {
            provider_message_id: wamid.to_owned(),
            sender: sender.to_owned(),
            kind: MessageKind::Text,
            status: MessageStatus::Read,
            sent_at_ms: at_ms,
            reply_to: str_at(message, &["context", "id"]).map(str::to_owned),
            forwarded: if bool_at(message, &["context", "frequently_forwarded"]) {
                Forwarded::Frequently
            } else if bool_at(message, &["context", "forwarded"]) {
                Forwarded::Once
            } else {
                Forwarded::No
            },
            ..NewMessage::default()
        };
        // Incoming messages are stored as received (DELIVERED); chatsync marks them READ. A
        // history chunk gives each message's last status (`history_context.status`).
        new.from_me = from_me;
        new.status = match str_at(message, &["history_context", "status"]) {
            Some("PENDING") => MessageStatus::Pending,
            Some("SENT") => MessageStatus::Sent,
            Some("DELIVERED") => MessageStatus::Delivered,
            Some("READ" | "PLAYED") => MessageStatus::Read,
            Some("ERROR") => MessageStatus::Failed,
            _ if from_me => MessageStatus::Sent,
            _ => MessageStatus::Delivered,
        };
        let body = message.get(kind);
        // The media id of each attachment, in order.
        let mut media_ids: Vec<String> = Vec::new();
        match kind {
            "text" => new.text = str_at(message, &["text", "body"]).unwrap_or("").to_owned(),
            "image" | "video" | "audio" | "document" | "sticker" => {
                let Some(media) = body else {
                    return unreadable(format!("{kind} message {wamid} has no {kind} object"));
                };
                new.kind = MessageKind::Media;
                new.text = str_at(media, &["caption"]).unwrap_or("").to_owned();
                new.attachments.push(self.store_media(kind, media).await);
                media_ids.push(str_at(media, &["id"]).unwrap_or("").to_owned());
            }
            "location" => {
                let location = body.cloned().unwrap_or_default();
                let place = [
                    str_at(&location, &["name"]),
                    str_at(&location, &["address"]),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
                let lat = location.get("latitude").cloned().unwrap_or_default();
                let long = location.get("longitude").cloned().unwrap_or_default();
                new.text = if place.is_empty() {
                    format!("📍 Location: {lat}, {long}")
                } else {
                    format!("📍 Location: {place} ({lat}, {long})")
                };
            }
            "contacts" => {
                let cards: Vec<String> = body
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|card| {
                        let name = str_at(card, &["name", "formatted_name"]).unwrap_or("?");
                        let phones: Vec<&str> = card
                            .get("phones")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|p| str_at(p, &["phone"]))
                            .collect();
                        if phones.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{name} ({})", phones.join(", "))
                        }
                    })
                    .collect();
                new.text = format!("👤 Contacts: {}", cards.join("; "));
            }
            "interactive" => {
                let answer = body.and_then(|i| {
                    let kind = str_at(i, &["type"])?;
                    let reply = i.get(kind)?;
                    Some((
                        str_at(reply, &["title"]).unwrap_or("").to_owned(),
                        str_at(reply, &["id"]).unwrap_or("").to_owned(),
                    ))
                });
                new.text = match answer {
                    Some((title, id)) => format!("{title} [{id}]"),
                    None => format!(
                        "⚠ An interactive answer Meta could not deliver{}",
                        errors_text(message)
                    ),
                };
            }
            "button" => {
                let text = str_at(message, &["button", "text"]).unwrap_or("");
                let payload = str_at(message, &["button", "payload"]).unwrap_or("");
                new.text = format!("{text} [{payload}]");
            }
            "order" => {
                let order = body.cloned().unwrap_or_default();
                let items: Vec<String> = order
                    .get("product_items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|item| {
                        format!(
                            "{} × {} ({} {})",
                            item.get("quantity").cloned().unwrap_or_default(),
                            str_at(item, &["product_retailer_id"]).unwrap_or("?"),
                            item.get("item_price").cloned().unwrap_or_default(),
                            str_at(item, &["currency"]).unwrap_or(""),
                        )
                    })
                    .collect();
                new.text = format!(
                    "🛒 Order from catalog {}: {}",
                    str_at(&order, &["catalog_id"]).unwrap_or("?"),
                    items.join(", ")
                );
            }
            "reaction" => {
                let Some(target) = str_at(message, &["reaction", "message_id"]) else {
                    return unreadable(format!("reaction {wamid} names no message"));
                };
                let emoji = str_at(message, &["reaction", "emoji"])
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned);
                events.push(LiveEvent::Reacted {
                    chat_id,
                    provider_message_id: target.to_owned(),
                    change: ReactionChange::Set {
                        sender: sender.to_owned(),
                        emoji,
                        at_ms,
                        provider_reaction_id: Some(wamid.to_owned()),
                    },
                });
                return Item::Events {
                    key,
                    events,
                    missing: Vec::new(),
                };
            }
            "edit" => {
                let Some(original) = str_at(message, &["edit", "original_message_id"]) else {
                    return unreadable(format!("edit {wamid} names no message"));
                };
                let edited = message
                    .get("edit")
                    .and_then(|e| e.get("message"))
                    .cloned()
                    .unwrap_or_default();
                let inner = str_at(&edited, &["type"]).unwrap_or("text");
                let text = str_at(&edited, &["text", "body"])
                    .or(str_at(&edited, &[inner, "caption"]))
                    .unwrap_or("")
                    .to_owned();
                events.push(LiveEvent::Edited {
                    chat_id,
                    provider_message_id: original.to_owned(),
                    editor: sender.to_owned(),
                    text,
                    at_ms,
                });
                return Item::Events {
                    key,
                    events,
                    missing: Vec::new(),
                };
            }
            "revoke" => {
                let Some(original) = str_at(message, &["revoke", "original_message_id"]) else {
                    return unreadable(format!("revoke {wamid} names no message"));
                };
                events.push(LiveEvent::Redacted {
                    chat_id,
                    provider_id: original.to_owned(),
                    by: sender.to_owned(),
                    at_ms,
                });
                return Item::Events {
                    key,
                    events,
                    missing: Vec::new(),
                };
            }
            // A history chunk's media message: its file comes in a webhook of its own (only
            // for the last 14 days), given to this attachment then (`Item::PlaceholderFile`).
            "media_placeholder" => {
                new.kind = MessageKind::Media;
                new.attachments
                    .push(Attachment::missing("media", "application/octet-stream"));
            }
            "system" => {
                new.kind = MessageKind::System;
                new.sender = String::new();
                new.text = str_at(message, &["system", "body"])
                    .unwrap_or("A system change")
                    .to_owned();
            }
            _ => {
                new.kind = MessageKind::System;
                new.sender = String::new();
                new.text = format!(
                    "⚠ A message WhatsApp could not show (type {kind}){}",
                    errors_text(message)
                );
            }
        }
        // A click-to-WhatsApp ad the user came from: its headline and link, after the text.
        if let Some(referral) = message.get("referral") {
            let headline = str_at(referral, &["headline"]).unwrap_or("");
            let url = str_at(referral, &["source_url"]).unwrap_or("");
            new.text = format!("{}\n↪ from ad: {headline} {url}", new.text)
                .trim()
                .to_owned();
        }
        let missing = new
            .attachments
            .iter()
            .zip(&media_ids)
            .enumerate()
            .filter(|(_, (attachment, media_id))| !attachment.stored && !media_id.is_empty())
            .map(|(ordinal, (_, media_id))| MissingMedia {
                wamid: wamid.to_owned(),
                chat_id: chat_id.clone(),
                ordinal: ordinal as u32,
                media_id: media_id.clone(),
                sha256: body
                    .and_then(|media| str_at(media, &["sha256"]))
                    .map(str::to_owned),
                // A message without a readable timestamp counts from now.
                sent_at_ms: if at_ms > 0 { at_ms } else { now_ms() },
            })
            .collect();
        events.push(LiveEvent::Message {
            chat_id,
            message: new,
        });
        Item::Events {
            key,
            events,
            missing,
        }
    }

    /// Downloads a media object's file into the blob store; `stored = false` when it cannot.
    async fn store_media(&self, kind: &str, media: &Value) -> Attachment {
        let id = str_at(media, &["id"]).unwrap_or("");
        let mime = str_at(media, &["mime_type"])
            .unwrap_or("application/octet-stream")
            .to_owned();
        let extension = mime
            .split(['/', ';'])
            .nth(1)
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .unwrap_or("bin");
        let file_name = str_at(media, &["filename"])
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{kind}-{id}.{extension}"));
        let expected = str_at(media, &["sha256"]);
        match self.fetch_media(id, expected).await {
            Ok(blob) => Attachment {
                file_name,
                mime_type: mime,
                size_bytes: blob.size,
                sha256: blob.sha256,
                stored: true,
            },
            Err(error) => {
                tracing::warn!(media_id = id, %error, "cannot download a media file");
                Attachment::missing(&file_name, &mime)
            }
        }
    }

    /// Downloads media `media_id` ([`download`](Self::download): a fresh URL from
    /// `GET /{media-id}`, its bytes checked against `expected`, Meta's `sha256`) into the blob
    /// store. Used at once for an incoming file, and again for one whose download failed
    /// ([`MissingMedia`]). Errors: why it could not, for the log.
    pub async fn fetch_media(
        &self,
        media_id: &str,
        expected: Option<&str>,
    ) -> Result<crate::blobs::BlobRef, String> {
        let bytes = self.download(media_id, expected).await?;
        self.context
            .blobs
            .put(bytes)
            .await
            .map_err(|error| format!("cannot store media {media_id}: {error}"))
    }

    /// How long after a failed download the first retry waits (`media_retry_backoff_ms`,
    /// default 1 s); each further retry waits twice as long, at most [`MEDIA_RETRY_MAX_PAUSE`].
    pub fn media_retry_backoff(&self) -> Duration {
        self.media_backoff
    }

    /// How often each replica sweeps the session's webhook inbox (`inbox_sweep_interval_ms`,
    /// default 60 s): statuses whose message is stored by now are applied, and media retries
    /// that no live replica holds (their replica died) are taken up.
    pub fn inbox_sweep_interval(&self) -> Duration {
        self.inbox_sweep_interval
    }

    /// Media retries running on this process, by inbox key: a key is retried by one task at
    /// a time. `true` when `key` was free and is now taken ([`media_retry_done`](Self::media_retry_done)
    /// frees it).
    pub fn media_retry_start(&self, key: &str) -> bool {
        self.media_retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned())
    }

    /// Frees a key taken by [`media_retry_start`](Self::media_retry_start).
    pub fn media_retry_done(&self, key: &str) {
        self.media_retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// `GET /{media-id}`, then its URL; an expired URL is asked for again once.
    async fn download(&self, media_id: &str, expected: Option<&str>) -> Result<Vec<u8>, String> {
        if media_id.is_empty() {
            return Err("no media id".into());
        }
        let mut last = String::new();
        for _ in 0..2 {
            let location = self
                .graph
                .media_url(media_id)
                .await
                .map_err(|e| format!("{:?}", e))?;
            match self.graph.download(&location.url, MAX_MEDIA_BYTES).await {
                Ok(bytes) => {
                    let digest: [u8; 32] = Sha256::digest(&bytes).into();
                    let matches = |want: &str| {
                        hex::decode(want).is_ok_and(|d| d == digest)
                            || base64::engine::general_purpose::STANDARD
                                .decode(want)
                                .is_ok_and(|d| d == digest)
                    };
                    let want = expected.unwrap_or(&location.sha256);
                    if !matches(want) && !matches(&location.sha256) {
                        return Err(format!("sha256 mismatch for media {media_id}"));
                    }
                    return Ok(bytes);
                }
                Err(error) => last = format!("{error:?}"),
            }
        }
        Err(last)
    }
}

/// The string at a path of object keys.
fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = value;
    for key in path {
        at = at.get(key)?;
    }
    at.as_str()
}

fn bool_at(value: &Value, path: &[&str]) -> bool {
    let mut at = value;
    for key in path {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_bool().unwrap_or(false)
}

/// ": <title> (<code>)" for each of a message's `errors[]`, or "".
fn errors_text(message: &Value) -> String {
    let errors: Vec<String> = message
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} ({})",
                str_at(e, &["title"]).unwrap_or("error"),
                e.get("code").cloned().unwrap_or_default()
            )
        })
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

/// A short stable digest of a JSON value, for the keys of items that have no id.
fn digest(value: &Value) -> String {
    hex::encode(&Sha256::digest(value.to_string().as_bytes())[..12])
}

#[async_trait]
impl Source for WhatsAppCloud {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            send: true,
            native: false,
            max_files_per_message: 1,
            live: true,
            batch_size: usize::MAX,
            message_changes: true,
            // Graph has no idempotency key: sends are claimed per replica first.
            upstream_deduplicates: false,
        }
    }

    /// Chats arrive with webhooks; the Cloud API lists none.
    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        Ok(Vec::new())
    }

    async fn fetch_history(
        &self,
        _chat: &SourceChat,
        _limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        Ok(ChatHistory::default())
    }

    async fn send(
        &self,
        chat_id: &str,
        text: &str,
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let body = graph::SendText {
            messaging_product: "whatsapp".into(),
            recipient_type: "individual".into(),
            to: chat_id.to_owned(),
            kind: "text".into(),
            text: graph::TextBody {
                preview_url: false,
                body: text.to_owned(),
            },
            context: reply_to.map(|id| graph::Context {
                message_id: id.to_owned(),
            }),
            biz_opaque_callback_data: Some(idempotency_key.to_owned()),
        };
        self.send_once(idempotency_key, || self.post_for_wamid(&body))
            .await
    }

    /// Uploads the one file (`POST /{version}/{phone_number_id}/media`, multipart), then
    /// posts a message of the type its MIME type gives ([`graph::media_type`]: image, video,
    /// audio or document) with the media id, `text` as the caption, the file name (a
    /// document's) and, like [`send`](Self::send), `context` and `biz_opaque_callback_data`.
    /// A retry under the same key uploads nothing again once the first has its wamid.
    ///
    /// Errors: `Rejected` for more than one file, and for text with an audio file (WhatsApp
    /// shows no caption on audio); Graph errors as for a text.
    async fn send_files(
        &self,
        chat_id: &str,
        text: &str,
        files: &[(crate::model::Attachment, Vec<u8>)],
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let [(attachment, bytes)] = files else {
            return Err(SourceError::Rejected(format!(
                "a WhatsApp message carries one file, not {}",
                files.len()
            )));
        };
        let kind = graph::media_type(&attachment.mime_type);
        let caption = (!text.trim().is_empty()).then(|| text.to_owned());
        if kind == "audio" && caption.is_some() {
            return Err(SourceError::Rejected(
                "WhatsApp shows no caption on audio: send the text as a message of its own".into(),
            ));
        }
        self.send_once(idempotency_key, || async {
            let uploaded = self
                .retrying(false, || {
                    self.graph
                        .upload(&attachment.file_name, &attachment.mime_type, bytes)
                })
                .await?;
            let mut body = graph::SendMedia::new(
                chat_id,
                kind,
                uploaded.id,
                caption.clone(),
                &attachment.file_name,
            );
            body.context = reply_to.map(|id| graph::Context {
                message_id: id.to_owned(),
            });
            body.biz_opaque_callback_data = Some(idempotency_key.to_owned());
            self.post_for_wamid(&body).await
        })
        .await
    }

    fn account_id(&self) -> Option<String> {
        Some(self.phone_number_id.clone())
    }

    async fn change_message(
        &self,
        chat_id: &str,
        provider_message_id: &str,
        change: UpstreamChange<'_>,
        _idempotency_key: &str,
    ) -> Result<Option<String>, SourceError> {
        match change {
            UpstreamChange::React { emoji, .. } => {
                let body = graph::SendReaction {
                    messaging_product: "whatsapp".into(),
                    recipient_type: "individual".into(),
                    to: chat_id.to_owned(),
                    kind: "reaction".into(),
                    reaction: graph::ReactionBody {
                        message_id: provider_message_id.to_owned(),
                        emoji: emoji.unwrap_or("").to_owned(),
                    },
                };
                let answer: graph::SendAnswer = self.post(&body).await?;
                Ok(answer.messages.into_iter().next().map(|m| m.id))
            }
            UpstreamChange::Edit { .. } | UpstreamChange::Delete => Err(SourceError::ReadOnly(
                "whatsapp-cloud (the Cloud API cannot edit or delete a sent message)",
            )),
        }
    }

    async fn mark_read(
        &self,
        _chat_id: &str,
        provider_message_id: &str,
    ) -> Result<(), SourceError> {
        let first = self
            .read_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider_message_id.to_owned());
        if !first {
            return Ok(());
        }
        let body = graph::MarkRead {
            messaging_product: "whatsapp".into(),
            status: "read".into(),
            message_id: provider_message_id.to_owned(),
        };
        let result: Result<Value, SourceError> = self.post(&body).await;
        if result.is_err() {
            self.read_sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(provider_message_id);
        }
        result.map(|_| ())
    }

    /// Webhooks are pushed to the server; the loop only holds the state (UP until the Graph
    /// API refuses the token).
    async fn run_live(&self, sink: Arc<dyn LiveSink>) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.clone());
        sink.set_state(SourceState::Up);
        sink.stopped().cancelled().await;
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn whatsapp_cloud(&self) -> Option<&WhatsAppCloud> {
        Some(self)
    }
}
