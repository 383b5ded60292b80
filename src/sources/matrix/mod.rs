//! The `matrix` source: a live, two-way connection to a Matrix homeserver through the
//! client-server API (spec v1.1+), as one user with an access token.
//!
//! - Chats are the joined rooms (optionally filtered); `chat_id` is the room id and the name
//!   follows the spec's room display name rules ([`events::room_name`]).
//! - History is backfilled with `GET /rooms/{roomId}/messages?dir=b`, [`PAGE_SIZE`] events a
//!   page, to the limit or the room's start, then stored oldest first. Edits are folded into
//!   the message they replace and redacted messages are DELETED; provider ids are event ids.
//! - While the server runs, [`Source::run_live`] keeps one `/sync` long-poll going. Its
//!   `since` token is stored with what it delivered, so a restart resumes with no loss. The
//!   first connection of a session only takes a token: history is SyncChats' job. A timeline
//!   that comes back `limited` (a gap, after a long outage) is filled from `/messages` back to
//!   the last stored message. Errors are retried with capped exponential backoff and jitter.
//! - SendMessage is `PUT /rooms/{roomId}/send/m.room.message/{txnId}` with txnId
//!   `chatsync.<client_message_id>`, so a retry is deduplicated by the homeserver, and the echo
//!   through `/sync` (its `unsigned.transaction_id`) is matched to the stored message.
//! - Files: `m.image`, `m.file`, `m.video` and `m.audio` carry one attachment; bytes not
//!   stored yet are downloaded through the authenticated media endpoint (bounded by
//!   [`MAX_MEDIA_BYTES`]) into the blob store. SendMessage with one file uploads it, then posts
//!   the matching media event under the same transaction id rule.
//! - Read receipts (`m.receipt`, `m.read`) from other members mark our messages READ, and
//!   UpdateMessageStatus READ on an incoming message posts our `m.read` upstream.
//! - Relations: a reply's `m.in_reply_to` is the message's `reply_to` (both ways: SendMessage
//!   with a reply sends it); reactions (`m.reaction`, `m.annotation`) are a sender's set of
//!   emoji per message; edits (`m.replace`, the text from `m.new_content`) and redactions
//!   (of a message: DELETED; of a reaction: taken back) change the stored message, live and,
//!   folded into the page, in backfill. ReactToMessage, EditMessage and DeleteMessage
//!   ([`Source::change_message`]) redact the account's earlier reactions and send an
//!   `m.reaction`, send an `m.replace`, or redact the message, under transaction ids derived
//!   from the request id ([`CHANGE_TXN_PREFIX`]), so a retry never posts twice.
//!
//! Settings: `homeserver` (URL), `user_id`, and the access token from `access_token_env`
//! (an environment variable's name) or `access_token_file` (a file holding only the token),
//! never from the configuration text; optional `rooms` (only these room ids) and
//! `exclude_rooms`.
pub mod client;
pub mod events;
mod history;
mod live;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ruma::api::Direction;
use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::api::client::membership::joined_rooms;
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::get_state_events;
use ruma::api::client::sync::sync_events;
use ruma::events::reaction::ReactionEventContent;
use ruma::events::relation::{Annotation, Reply};
use ruma::events::room::message::{
    MessageType, Relation, ReplacementMetadata, RoomMessageEventContent,
};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId, UInt};
use serde::Deserialize;
use serde_json::Value;

use self::client::{Client, MatrixError};
use self::events::{TimelineItem, member_people, read_timeline_event, room_name};
use super::{
    Capabilities, ChatHistory, LiveEvent, LiveSink, SendReceipt, Source, SourceChat, SourceContext,
    SourceError, UpstreamChange, apply_window,
};
use tokio_util::sync::CancellationToken;

use crate::model::SourceState;
use crate::model::{Attachment, MessageKind};
use crate::sources::SessionConfig;

/// The source kind in the configuration.
pub const KIND: &str = "matrix";
/// Events asked for per `/messages` page; also the sync run's batch size for this source, so
/// a big room gets one MESSAGES_SAVED frame per page.
pub const PAGE_SIZE: usize = 500;
/// The largest Matrix file chatsync downloads into the blob store (also bounded by
/// `max_export_bytes`): 100 MiB. Larger files are attachments with `stored = false`.
pub const MAX_MEDIA_BYTES: u64 = 100 << 20;
/// How long the homeserver may hold a `/sync` long-poll open.
pub const LONG_POLL: Duration = Duration::from_secs(25);
/// The prefix of the transaction ids chatsync sends with: `chatsync.<client_message_id>`.
pub const TXN_PREFIX: &str = "chatsync.";
/// The prefix of the transaction ids of message changes (ReactToMessage, EditMessage,
/// DeleteMessage): `chatsync-change.<what>.<request id>`, where `<what>` is `react`, `edit`,
/// `delete` or `unreact.<reaction event id>`. Distinct from [`TXN_PREFIX`], so a request id
/// that is also some message's `client_message_id` never meets that message's transaction,
/// and an echo of a change is never taken for a sent message.
pub const CHANGE_TXN_PREFIX: &str = "chatsync-change.";
/// Timeline events asked for per room and `/sync` answer; more come back `limited`.
const SYNC_TIMELINE_LIMIT: u32 = 100;
/// The most events one gap fill reads back before giving up on finding a stored message.
const MAX_GAP_EVENTS: usize = 5_000;
/// Attempts at one history page before the room is reported failed.
const PAGE_ATTEMPTS: u32 = 4;
/// After this many failed `/sync` rounds in a row, a room whose name or gap cannot be read
/// (the homeserver keeps failing for it) is passed over instead of holding up every room.
const LENIENT_AFTER: u32 = 3;

/// The `[[sessions]]` settings of a `matrix` session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    homeserver: String,
    user_id: String,
    #[serde(default)]
    access_token_env: Option<String>,
    #[serde(default)]
    access_token_file: Option<PathBuf>,
    /// Refused with a clear error: tokens never live in the configuration text.
    #[serde(default)]
    access_token: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    exclude_rooms: Vec<String>,
}

/// A Matrix account as a source.
pub struct Matrix {
    client: Client,
    /// For the stored names of rooms whose name cannot be read.
    context: SourceContext,
    me: OwnedUserId,
    rooms: Vec<String>,
    exclude_rooms: Vec<String>,
}

impl Matrix {
    /// Builds the source from its settings; reads the access token from the environment
    /// variable or file they name. Errors name the setting at fault.
    pub fn build(
        config: &SessionConfig,
        context: &SourceContext,
    ) -> Result<Arc<dyn Source>, String> {
        let settings: Settings = super::settings(config)?;
        if settings.access_token.is_some() {
            return Err(
                "access_token must not be written in the configuration: name an \
                 environment variable with access_token_env, or a file with access_token_file"
                    .into(),
            );
        }
        let token = match (&settings.access_token_env, &settings.access_token_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                format!("access_token_env names {var:?}, which is not set in the environment")
            })?,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
                format!("cannot read access_token_file {}: {error}", path.display())
            })?,
            _ => {
                return Err("set exactly one of access_token_env and access_token_file".into());
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err("the access token is empty".into());
        }
        let url = reqwest::Url::parse(&settings.homeserver).map_err(|error| {
            format!("homeserver {:?} is not a URL: {error}", settings.homeserver)
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "homeserver {:?} must be http:// or https://",
                settings.homeserver
            ));
        }
        let me = OwnedUserId::try_from(settings.user_id.as_str()).map_err(|error| {
            format!(
                "user_id {:?} is not a Matrix user id: {error}",
                settings.user_id
            )
        })?;
        Ok(Arc::new(Self {
            client: Client::new(&settings.homeserver, token)?,
            context: context.clone(),
            me,
            rooms: settings.rooms,
            exclude_rooms: settings.exclude_rooms,
        }))
    }

    fn wanted(&self, room_id: &str) -> bool {
        (self.rooms.is_empty() || self.rooms.iter().any(|r| r == room_id))
            && !self.exclude_rooms.iter().any(|r| r == room_id)
    }

    /// The room's display name from its current state.
    async fn room_name(&self, room_id: &OwnedRoomId) -> Result<String, MatrixError> {
        Ok(room_name(
            &self.room_state(room_id).await?,
            self.me.as_str(),
        ))
    }

    /// The room's current state events, as JSON.
    async fn room_state(&self, room_id: &OwnedRoomId) -> Result<Vec<Value>, MatrixError> {
        let state = self
            .client
            .send(get_state_events::v3::Request::new(room_id.clone()), None)
            .await?;
        Ok(state
            .room_state
            .iter()
            .filter_map(|raw| raw.deserialize_as_unchecked::<Value>().ok())
            .collect())
    }

    /// Stores the file of a media message (`m.image`, `m.file`, `m.video`, `m.audio`) that is
    /// not stored yet: downloads it through the authenticated media endpoint, at most
    /// [`MAX_MEDIA_BYTES`] (and `max_export_bytes`), into the blob store, and marks the
    /// message's attachment stored. A file that cannot be had (encrypted, too large, the
    /// homeserver refusing or down) leaves the attachment unstored: the message is stored
    /// anyway, and the failure is logged.
    async fn fetch_media<T>(&self, chat_id: &str, raw: &Raw<T>, item: &mut TimelineItem) {
        let TimelineItem::Message(message) = item else {
            return;
        };
        if message.kind != MessageKind::Media || message.attachments.is_empty() {
            return;
        }
        let Some(events::MediaFile {
            uri: Some(uri),
            declared_size,
            ..
        }) = events::media_file(raw)
        else {
            return;
        };
        let stored = self
            .context
            .stored
            .has_message(chat_id, &message.provider_message_id)
            .await
            .unwrap_or(false);
        if stored {
            return;
        }
        let max = MAX_MEDIA_BYTES.min(self.context.export_limits.max_bytes);
        if declared_size.is_some_and(|size| size > max) {
            tracing::warn!(%uri, max, "a Matrix file is over the media size limit; not stored");
            return;
        }
        let bytes = match self.client.download(&uri, max).await {
            Ok((bytes, _)) => bytes,
            Err(error) => {
                tracing::warn!(%uri, %error, "cannot download a Matrix file; not stored");
                return;
            }
        };
        match self.context.blobs.put(bytes).await {
            Ok(blob) => {
                let attachment = &mut message.attachments[0];
                attachment.size_bytes = blob.size;
                attachment.sha256 = blob.sha256;
                attachment.stored = true;
            }
            Err(error) => tracing::warn!(%uri, %error, "cannot store a Matrix file"),
        }
    }
}

/// Capped exponential backoff with jitter, as an endless iterator of waits: the first is
/// 0.25–0.5 s, each next one doubles, up to 15–30 s (backon adds a random part of the current
/// delay, up to all of it).
fn backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
        .build()
}

fn room_id(chat_id: &str) -> Result<OwnedRoomId, SourceError> {
    OwnedRoomId::try_from(chat_id).map_err(|error| {
        SourceError::Rejected(format!("{chat_id:?} is not a Matrix room id: {error}"))
    })
}

fn event_id(provider_id: &str) -> Result<OwnedEventId, SourceError> {
    OwnedEventId::try_from(provider_id).map_err(|error| {
        SourceError::Rejected(format!("{provider_id:?} is not a Matrix event id: {error}"))
    })
}

/// `content` as a rich reply to `reply_to` (`m.relates_to.m.in_reply_to`), when given. No reply
/// fallback in the body: the spec dropped it (v1.13).
fn replying(
    mut content: RoomMessageEventContent,
    reply_to: Option<&str>,
) -> Result<RoomMessageEventContent, SourceError> {
    if let Some(reply_to) = reply_to {
        content.relates_to = Some(Relation::Reply(Reply::with_event_id(event_id(reply_to)?)));
    }
    Ok(content)
}

/// The transaction id of one upstream request of a message change (see
/// [`CHANGE_TXN_PREFIX`]).
fn change_txn(what: &str, idempotency_key: &str) -> OwnedTransactionId {
    OwnedTransactionId::from(format!("{CHANGE_TXN_PREFIX}{what}.{idempotency_key}"))
}

/// The new content of an edit of a message whose content was `original`: a media message
/// keeps its file and takes `text` as its caption (the file name moves to `filename`, spec
/// v1.10), anything else becomes plain text.
fn edited_msgtype(original: Option<MessageType>, text: &str) -> MessageType {
    let caption = |body: &mut String, filename: &mut Option<String>| {
        if filename.is_none() {
            *filename = Some(std::mem::take(body));
        }
        *body = text.to_owned();
    };
    match original {
        Some(MessageType::Image(mut c)) => {
            caption(&mut c.body, &mut c.filename);
            MessageType::Image(c)
        }
        Some(MessageType::File(mut c)) => {
            caption(&mut c.body, &mut c.filename);
            MessageType::File(c)
        }
        Some(MessageType::Video(mut c)) => {
            caption(&mut c.body, &mut c.filename);
            MessageType::Video(c)
        }
        Some(MessageType::Audio(mut c)) => {
            caption(&mut c.body, &mut c.filename);
            MessageType::Audio(c)
        }
        _ => MessageType::text_plain(text),
    }
}

impl Matrix {
    /// Redacts an event (`PUT /rooms/{roomId}/redact/{eventId}/{txnId}`); the redaction's
    /// event id.
    async fn redact(
        &self,
        room_id: &OwnedRoomId,
        target: OwnedEventId,
        txn_id: OwnedTransactionId,
    ) -> Result<OwnedEventId, MatrixError> {
        let request = redact_event::v3::Request::new(room_id.clone(), target, txn_id);
        Ok(self.client.send(request, None).await?.event_id)
    }

    /// Sends a message-like event (`PUT /rooms/{roomId}/send/{eventType}/{txnId}`); its
    /// event id.
    async fn send_event<C>(
        &self,
        room_id: &OwnedRoomId,
        txn_id: OwnedTransactionId,
        content: &C,
    ) -> Result<OwnedEventId, SourceError>
    where
        C: ruma::events::MessageLikeEventContent,
    {
        let request = send_message_event::v3::Request::new(room_id.clone(), txn_id, content)
            .map_err(|error| SourceError::Invalid(error.to_string()))?;
        Ok(self.client.send(request, None).await?.event_id)
    }
}

#[async_trait]
impl Source for Matrix {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Live and two-way; one file per message (a Matrix media event carries one file);
    /// history is stored a `/messages` page at a time.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            send: true,
            native: false,
            max_files_per_message: 1,
            live: true,
            batch_size: PAGE_SIZE,
            message_changes: true,
            upstream_deduplicates: true,
        }
    }

    fn account_id(&self) -> Option<String> {
        Some(self.me.to_string())
    }

    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        let joined = self
            .client
            .send(joined_rooms::v3::Request::new(), None)
            .await?;
        let mut chats = Vec::new();
        for room_id in joined.joined_rooms {
            if !self.wanted(room_id.as_str()) {
                continue;
            }
            // A room whose state cannot be read is still listed, under its stored name (else
            // its id); its history fetch then fails on its own, as CHAT_FAILED.
            let name = match self.room_name(&room_id).await {
                Ok(name) => name,
                Err(error) => {
                    tracing::warn!(%room_id, %error, "cannot read the room's name");
                    let stored = self
                        .context
                        .stored
                        .chat(room_id.as_str())
                        .await
                        .ok()
                        .flatten();
                    stored.map_or_else(|| room_id.to_string(), |chat| chat.name)
                }
            };
            chats.push(SourceChat {
                chat_id: room_id.to_string(),
                name,
                locator: room_id.to_string(),
            });
        }
        chats.sort_by(|a, b| a.name.cmp(&b.name).then(a.chat_id.cmp(&b.chat_id)));
        Ok(chats)
    }

    async fn fetch_history(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        self.backfill(chat, limit, None).await
    }

    async fn fetch_history_since(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
        since_ms: Option<i64>,
    ) -> Result<ChatHistory, SourceError> {
        self.backfill(chat, limit, since_ms).await
    }

    async fn send(
        &self,
        chat_id: &str,
        text: &str,
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let room_id = room_id(chat_id)?;
        let txn_id = OwnedTransactionId::from(format!("{TXN_PREFIX}{idempotency_key}"));
        let content = replying(RoomMessageEventContent::text_plain(text), reply_to)?;
        let event_id = self.send_event(&room_id, txn_id, &content).await?;
        Ok(SendReceipt {
            provider_message_id: event_id.to_string(),
        })
    }

    /// Uploads the file (`POST /_matrix/media/v3/upload`), then sends an `m.image`,
    /// `m.video`, `m.audio` or `m.file` event (by MIME type) under the same transaction id as a
    /// text send, so a retry posts once. The text, when given, is the caption (`body`, with
    /// `filename` naming the file, spec v1.10); else `body` is the file name.
    async fn send_files(
        &self,
        chat_id: &str,
        text: &str,
        files: &[(Attachment, Vec<u8>)],
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        use ruma::api::client::media::create_content;
        use ruma::events::room::message::{
            AudioMessageEventContent, FileMessageEventContent, ImageMessageEventContent,
            VideoMessageEventContent,
        };
        use ruma::events::room::{ImageInfo, MediaSource};
        let room_id = room_id(chat_id)?;
        let [(attachment, bytes)] = files else {
            return Err(SourceError::Rejected(format!(
                "a Matrix message carries one file, not {}",
                files.len()
            )));
        };
        let mut upload = create_content::v3::Request::new(bytes.clone());
        upload.filename = Some(attachment.file_name.clone());
        upload.content_type = Some(attachment.mime_type.clone());
        let uploaded = self.client.send(upload, None).await?;
        let uri = uploaded.content_uri;
        let (body, filename) = if text.trim().is_empty() {
            (attachment.file_name.clone(), None)
        } else {
            (text.to_owned(), Some(attachment.file_name.clone()))
        };
        let size = UInt::try_from(attachment.size_bytes).ok();
        let mime = Some(attachment.mime_type.clone());
        let source = MediaSource::Plain(uri);
        let msgtype = match attachment.mime_type.split('/').next() {
            Some("image") => {
                let mut content = ImageMessageEventContent::new(body, source);
                let mut info = ImageInfo::new();
                (info.mimetype, info.size) = (mime, size);
                content.info = Some(Box::new(info));
                content.filename = filename;
                MessageType::Image(content)
            }
            Some("video") => {
                let mut content = VideoMessageEventContent::new(body, source);
                let mut info = ruma::events::room::message::VideoInfo::new();
                (info.mimetype, info.size) = (mime, size);
                content.info = Some(Box::new(info));
                content.filename = filename;
                MessageType::Video(content)
            }
            Some("audio") => {
                let mut content = AudioMessageEventContent::new(body, source);
                let mut info = ruma::events::room::message::AudioInfo::new();
                (info.mimetype, info.size) = (mime, size);
                content.info = Some(Box::new(info));
                content.filename = filename;
                MessageType::Audio(content)
            }
            _ => {
                let mut content = FileMessageEventContent::new(body, source);
                let mut info = ruma::events::room::message::FileInfo::new();
                (info.mimetype, info.size) = (mime, size);
                content.info = Some(Box::new(info));
                content.filename = filename;
                MessageType::File(content)
            }
        };
        let content = replying(RoomMessageEventContent::new(msgtype), reply_to)?;
        let txn_id = OwnedTransactionId::from(format!("{TXN_PREFIX}{idempotency_key}"));
        let event_id = self.send_event(&room_id, txn_id, &content).await?;
        Ok(SendReceipt {
            provider_message_id: event_id.to_string(),
        })
    }

    /// ReactToMessage: redacts each of the account's earlier reactions, then sends the new
    /// `m.reaction` (an `m.annotation` with the emoji as its key), whose event id it returns.
    /// EditMessage: an `m.room.message` with `m.new_content` and an `m.replace` relation (the
    /// body `* text`, the spec's fallback); a media message keeps its file and takes the text
    /// as its caption. DeleteMessage: a redaction of the message. Each request's transaction
    /// id is derived from the request id ([`CHANGE_TXN_PREFIX`]): a retry is deduplicated by
    /// the homeserver.
    async fn change_message(
        &self,
        chat_id: &str,
        provider_message_id: &str,
        change: UpstreamChange<'_>,
        idempotency_key: &str,
    ) -> Result<Option<String>, SourceError> {
        let room_id = room_id(chat_id)?;
        let target = event_id(provider_message_id)?;
        match change {
            UpstreamChange::React { emoji, previous } => {
                for previous in previous {
                    let txn_id = change_txn(&format!("unreact.{previous}"), idempotency_key);
                    match self.redact(&room_id, event_id(previous)?, txn_id).await {
                        // Gone upstream already: nothing to take back.
                        Ok(_) | Err(MatrixError::Rejected { status: 404, .. }) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                let Some(emoji) = emoji else {
                    return Ok(None);
                };
                let content = ReactionEventContent::new(Annotation::new(target, emoji.to_owned()));
                let txn_id = change_txn("react", idempotency_key);
                let reaction = self.send_event(&room_id, txn_id, &content).await?;
                Ok(Some(reaction.to_string()))
            }
            UpstreamChange::Edit { text } => {
                let request = get_room_event::v3::Request::new(room_id.clone(), target.clone());
                let original = self.client.send(request, None).await?;
                let original = original
                    .event
                    .get_field::<RoomMessageEventContent>("content")
                    .ok()
                    .flatten()
                    .map(|content| content.msgtype);
                let content = RoomMessageEventContent::new(edited_msgtype(original, text))
                    .make_replacement(ReplacementMetadata::new(target, None));
                let txn_id = change_txn("edit", idempotency_key);
                let edit = self.send_event(&room_id, txn_id, &content).await?;
                Ok(Some(edit.to_string()))
            }
            UpstreamChange::Delete => {
                let txn_id = change_txn("delete", idempotency_key);
                let redaction = self.redact(&room_id, target, txn_id).await?;
                Ok(Some(redaction.to_string()))
            }
        }
    }

    async fn mark_read(&self, chat_id: &str, provider_message_id: &str) -> Result<(), SourceError> {
        let room_id = room_id(chat_id)?;
        let event_id = OwnedEventId::try_from(provider_message_id).map_err(|error| {
            SourceError::Rejected(format!(
                "{provider_message_id:?} is not an event id: {error}"
            ))
        })?;
        let request = create_receipt::v3::Request::new(
            room_id,
            create_receipt::v3::ReceiptType::Read,
            event_id,
        );
        self.client.send(request, None).await?;
        Ok(())
    }

    async fn run_live(&self, sink: Arc<dyn LiveSink>) {
        self.live_loop(sink).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context over a fresh SQLite store (kept alive by the returned directory).
    fn context() -> (SourceContext, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = runtime
            .block_on(crate::storage::Store::connect(&url))
            .unwrap();
        let context = SourceContext {
            session_id: "mx".into(),
            stored: Arc::new(crate::service::StoredSessionView::new(store, "mx")),
            export_limits: Default::default(),
            blobs: Arc::new(crate::blobs::DirBlobStore::new(dir.path().join("blobs"))),
        };
        (context, dir)
    }

    fn built(settings: serde_json::Value) -> Result<Arc<dyn Source>, String> {
        let config = SessionConfig {
            id: "mx".into(),
            source: KIND.into(),
            settings: settings.as_object().cloned().unwrap_or_default(),
        };
        let (context, _dir) = context();
        Matrix::build(&config, &context)
    }

    #[test]
    fn settings_take_the_token_from_a_file_or_the_environment_only() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "syt_secret\n").unwrap();
        let ok = serde_json::json!({"homeserver": "http://127.0.0.1:8008", "user_id": "@me:localhost",
            "access_token_file": token_file, "rooms": ["!a:localhost"], "exclude_rooms": ["!b:localhost"]});
        let source = built(ok).expect("valid settings");
        assert_eq!(source.kind(), KIND);
        assert!(source.capabilities().live && source.capabilities().send);

        let error = built(serde_json::json!({"homeserver": "http://h", "user_id": "@me:h", "access_token": "syt_x"}))
            .err()
            .unwrap();
        assert!(
            error.contains("must not be written in the configuration"),
            "{error}"
        );
        let error = built(serde_json::json!({"homeserver": "http://h", "user_id": "@me:h"}))
            .err()
            .unwrap();
        assert!(
            error.contains("exactly one of access_token_env and access_token_file"),
            "{error}"
        );
        let error = built(
            serde_json::json!({"homeserver": "http://h", "user_id": "@me:h",
            "access_token_env": "CHATSYNC_TEST_SURELY_UNSET_VARIABLE"}),
        )
        .err()
        .unwrap();
        assert!(error.contains("not set in the environment"), "{error}");
        let error = built(
            serde_json::json!({"homeserver": "ftp://h", "user_id": "@me:h",
            "access_token_file": token_file}),
        )
        .err()
        .unwrap();
        assert!(error.contains("must be http:// or https://"), "{error}");
        let error = built(
            serde_json::json!({"homeserver": "http://h", "user_id": "me",
            "access_token_file": token_file}),
        )
        .err()
        .unwrap();
        assert!(error.contains("is not a Matrix user id"), "{error}");
    }

    #[test]
    fn room_filters_include_then_exclude() {
        let (context, _dir) = context();
        let matrix = |rooms: &[&str], exclude: &[&str]| Matrix {
            client: Client::new("http://127.0.0.1:1", "t".into()).unwrap(),
            context: context.clone(),
            me: "@me:localhost".try_into().unwrap(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            exclude_rooms: exclude.iter().map(|r| r.to_string()).collect(),
        };
        assert!(matrix(&[], &[]).wanted("!any:localhost"));
        assert!(!matrix(&[], &["!x:localhost"]).wanted("!x:localhost"));
        let only = matrix(&["!a:localhost", "!b:localhost"], &["!b:localhost"]);
        assert!(only.wanted("!a:localhost"));
        assert!(!only.wanted("!b:localhost"));
        assert!(!only.wanted("!c:localhost"));
    }
}
