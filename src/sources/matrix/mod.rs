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
//!
//! Settings: `homeserver` (URL), `user_id`, and the access token from `access_token_env`
//! (an environment variable's name) or `access_token_file` (a file holding only the token),
//! never from the configuration text; optional `rooms` (only these room ids) and
//! `exclude_rooms`.
pub mod client;
pub mod events;

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
use ruma::api::client::state::get_state_events;
use ruma::api::client::sync::sync_events;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId, UInt};
use serde::Deserialize;
use serde_json::Value;

use self::client::{Client, MatrixError};
use self::events::{TimelineItem, member_people, read_timeline_event, room_name};
use super::{
    ChatHistory, LiveEvent, LiveSink, SendReceipt, Source, SourceChat, SourceContext, SourceError,
    apply_window,
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

    /// A room's history from `/messages`, paging backwards from the newest event until
    /// `limit` messages are read, the room's start, or (with `since_ms`) a page that reaches
    /// a message sent before `since_ms`: older pages are not read. Returns the messages at or
    /// after `since_ms`, oldest first, at most the `limit` most recent.
    async fn backfill(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
        since_ms: Option<i64>,
    ) -> Result<ChatHistory, SourceError> {
        let room_id = room_id(&chat.chat_id)?;
        let mut items = Vec::new();
        let mut messages = 0usize;
        let mut from: Option<String> = None;
        // Member events: those of the window read, and the room's current state.
        let mut members: Vec<Value> = self.room_state(&room_id).await?;
        members.retain(|event| event["type"] == "m.room.member");
        loop {
            let want = limit.map_or(PAGE_SIZE, |limit| (limit - messages).min(PAGE_SIZE));
            let page = self.page_back(&room_id, from.as_deref(), want).await?;
            let mut passed_since = false;
            for raw in &page.chunk {
                if raw.json().get().contains("m.room.member")
                    && let Ok(event) = raw.deserialize_as_unchecked::<Value>()
                {
                    members.push(event);
                }
                let mut item = read_timeline_event(raw, &self.me);
                if let TimelineItem::Message(message) = &item {
                    if since_ms.is_some_and(|since| message.sent_at_ms < since) {
                        // Before the window: cut by `apply_window`, so its file is not fetched.
                        passed_since = true;
                        items.push(item);
                        continue;
                    }
                    messages += 1;
                }
                self.fetch_media(&chat.chat_id, raw, &mut item).await;
                items.push(item);
            }
            if passed_since || limit.is_some_and(|limit| messages >= limit) {
                break;
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() => from = Some(end),
                _ => break,
            }
        }
        let mut messages = fold_history(items);
        apply_window(&mut messages, limit, since_ms);
        Ok(ChatHistory {
            messages,
            people: member_people(&members),
            unplaced_lines: 0,
            content_sha256: None,
        })
    }

    /// One `/messages` page backwards from `from` (the newest events when `None`), retried
    /// with backoff while the homeserver is unavailable.
    async fn page_back(
        &self,
        room_id: &OwnedRoomId,
        from: Option<&str>,
        limit: usize,
    ) -> Result<get_message_events::v3::Response, MatrixError> {
        let mut attempt = 0;
        loop {
            let mut request =
                get_message_events::v3::Request::new(room_id.clone(), Direction::Backward);
            request.from = from.map(str::to_owned);
            request.limit = UInt::try_from(limit.clamp(1, PAGE_SIZE) as u64).unwrap_or(UInt::MIN);
            match self.client.send(request, None).await {
                Err(MatrixError::Unavailable(error)) if attempt + 1 < PAGE_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(%room_id, attempt, %error, "history page failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                result => return result,
            }
        }
    }

    /// Turns a room's `/sync` section into live events. `names` caches room names for this
    /// process: a room seen for the first time, or renamed, is looked up (a name made of the
    /// members is not followed as members come and go). `lenient`: pass over a room whose name
    /// or gap the homeserver cannot serve, rather than failing the whole batch.
    async fn room_events(
        &self,
        room_id: &OwnedRoomId,
        room: &sync_events::v3::JoinedRoom,
        names: &mut HashMap<String, String>,
        sink: &dyn LiveSink,
        out: &mut Vec<LiveEvent>,
        lenient: bool,
    ) -> Result<(), MatrixError> {
        let chat_id = room_id.to_string();
        let renamed = room.timeline.events.iter().any(|raw| {
            matches!(
                raw.get_field::<String>("type").ok().flatten().as_deref(),
                Some("m.room.name" | "m.room.canonical_alias")
            )
        });
        // Only an unreachable homeserver fails the batch (it is retried whole), until the
        // retries turn lenient. A refusal concerns this room alone: it keeps its stored name,
        // or its gap stays unfilled (logged; SyncChats backfills it).
        if renamed || !names.contains_key(&chat_id) {
            match self.room_name(room_id).await {
                Ok(name) => {
                    names.insert(chat_id.clone(), name.clone());
                    out.push(LiveEvent::Chat {
                        chat_id: chat_id.clone(),
                        name,
                    });
                }
                Err(error @ MatrixError::Unavailable(_)) if !lenient => return Err(error),
                Err(error) => tracing::warn!(%room_id, %error, "cannot read the room's name"),
            }
        }
        if room.timeline.limited
            && let Some(prev_batch) = &room.timeline.prev_batch
        {
            match self.fill_gap(room_id, prev_batch, sink).await {
                Ok(missed) => out.extend(
                    missed
                        .into_iter()
                        .filter_map(|item| live_event(&chat_id, item)),
                ),
                Err(error @ MatrixError::Unavailable(_)) if !lenient => return Err(error),
                Err(error) => {
                    tracing::warn!(%room_id, %error, "cannot read the gap in the timeline; messages in it are missed until SyncChats")
                }
            }
        }
        for raw in &room.timeline.events {
            let mut item = read_timeline_event(raw, &self.me);
            self.fetch_media(&chat_id, raw, &mut item).await;
            out.extend(live_event(&chat_id, item));
        }
        // Members: the state section (before or after the timeline) and the timeline's
        // member events; storage keeps the latest join and leave whatever the order.
        let no_state = Vec::new();
        let state = match &room.state {
            sync_events::v3::State::Before(state) | sync_events::v3::State::After(state) => {
                &state.events
            }
            _ => &no_state,
        };
        let members: Vec<Value> = state
            .iter()
            .map(|raw| raw.json())
            .chain(room.timeline.events.iter().map(|raw| raw.json()))
            .filter(|json| json.get().contains("m.room.member"))
            .filter_map(|json| serde_json::from_str::<Value>(json.get()).ok())
            .collect();
        let people = member_people(&members);
        if !people.is_empty() {
            out.push(LiveEvent::People {
                chat_id: chat_id.clone(),
                people,
            });
        }
        for raw in &room.ephemeral.events {
            if raw.get_field::<String>("type").ok().flatten().as_deref() != Some("m.receipt") {
                continue;
            }
            let Ok(Some(content)) = raw.get_field::<BTreeMap<String, Value>>("content") else {
                continue;
            };
            for (event_id, receipts) in content {
                // Public read receipts (`m.read`) of other members, with their times.
                let Some(users) = receipts["m.read"].as_object() else {
                    continue;
                };
                let times: Vec<Option<i64>> = users
                    .iter()
                    .filter(|(user, _)| *user != self.me.as_str())
                    .map(|(_, receipt)| receipt["ts"].as_i64())
                    .collect();
                if !times.is_empty() {
                    out.push(LiveEvent::ReadUpTo {
                        chat_id: chat_id.clone(),
                        provider_message_id: event_id,
                        read_at_ms: times.into_iter().flatten().max(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The events a `limited` timeline skipped: read back from `prev_batch` until a stored
    /// message (or the room's start, or [`MAX_GAP_EVENTS`]), oldest first.
    async fn fill_gap(
        &self,
        room_id: &OwnedRoomId,
        prev_batch: &str,
        sink: &dyn LiveSink,
    ) -> Result<Vec<TimelineItem>, MatrixError> {
        let chat_id = room_id.to_string();
        let mut missed = Vec::new();
        let mut from = prev_batch.to_owned();
        'pages: while missed.len() < MAX_GAP_EVENTS {
            let page = self.page_back(room_id, Some(&from), PAGE_SIZE).await?;
            for raw in &page.chunk {
                let item = read_timeline_event(raw, &self.me);
                if let TimelineItem::Message(message) = &item {
                    let stored = sink
                        .has_message(&chat_id, &message.provider_message_id)
                        .await
                        .map_err(|error| MatrixError::Unavailable(format!("storage: {error}")))?;
                    if stored {
                        break 'pages;
                    }
                }
                let mut item = item;
                self.fetch_media(&chat_id, raw, &mut item).await;
                missed.push(item);
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() => from = end,
                _ => break,
            }
        }
        tracing::info!(%room_id, events = missed.len(), "filled a gap in the live timeline");
        missed.reverse();
        Ok(missed)
    }

    /// One `/sync` call and what it means. The first connection (no `since`) asks for no
    /// timeline and delivers nothing.
    async fn sync_once(
        &self,
        since: Option<&str>,
        names: &mut HashMap<String, String>,
        sink: &dyn LiveSink,
        lenient: bool,
    ) -> Result<(Vec<LiveEvent>, String), MatrixError> {
        let mut filter = FilterDefinition::default();
        let limit = if since.is_some() {
            SYNC_TIMELINE_LIMIT
        } else {
            1
        };
        filter.room.timeline.limit = Some(UInt::from(limit));
        filter.room.account_data = RoomEventFilter::ignore_all();
        filter.presence = ruma::api::client::filter::Filter::ignore_all();
        filter.account_data = ruma::api::client::filter::Filter::ignore_all();
        let mut request = sync_events::v3::Request::new();
        request.filter = Some(filter.into());
        request.since = since.map(str::to_owned);
        request.timeout = Some(if since.is_some() {
            LONG_POLL
        } else {
            Duration::ZERO
        });
        let response = self
            .client
            .send(request, Some(LONG_POLL + Duration::from_secs(15)))
            .await?;
        let mut out = Vec::new();
        if since.is_some() {
            for (room_id, room) in &response.rooms.join {
                if self.wanted(room_id.as_str()) {
                    self.room_events(room_id, room, names, sink, &mut out, lenient)
                        .await?;
                }
            }
        }
        Ok((out, response.next_batch))
    }
}

/// What a timeline item means to storage.
fn live_event(chat_id: &str, item: TimelineItem) -> Option<LiveEvent> {
    let chat_id = chat_id.to_owned();
    Some(match item {
        TimelineItem::Message(message) => LiveEvent::Message { chat_id, message },
        TimelineItem::Edit {
            target,
            sender,
            text,
        } => LiveEvent::Edited {
            chat_id,
            provider_message_id: target,
            editor: sender,
            text,
        },
        TimelineItem::Redaction { target } => LiveEvent::Deleted {
            chat_id,
            provider_message_id: target,
        },
        TimelineItem::Other => return None,
    })
}

/// A backfilled window, newest first, as messages oldest first: edits by the original sender
/// fold into the message they replace (the newest edit wins), redactions turn their target
/// DELETED, and the edit and redaction events themselves are not messages.
fn fold_history(newest_first: Vec<TimelineItem>) -> Vec<crate::model::NewMessage> {
    let mut messages = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut later: Vec<TimelineItem> = Vec::new();
    for item in newest_first.into_iter().rev() {
        match item {
            TimelineItem::Message(message) => {
                index.insert(message.provider_message_id.clone(), messages.len());
                messages.push(message);
            }
            TimelineItem::Edit { .. } | TimelineItem::Redaction { .. } => later.push(item),
            TimelineItem::Other => {}
        }
    }
    for item in later {
        match item {
            TimelineItem::Edit {
                target,
                sender,
                text,
            } => {
                if let Some(message) = index.get(&target).map(|&i| &mut messages[i])
                    && message.kind != MessageKind::Deleted
                    && message.sender == sender
                {
                    message.text = text;
                }
            }
            TimelineItem::Redaction { target } => {
                if let Some(message) = index.get(&target).map(|&i| &mut messages[i]) {
                    message.kind = MessageKind::Deleted;
                    message.text.clear();
                }
            }
            _ => {}
        }
    }
    messages
}

/// Capped exponential backoff with jitter: attempt 1 waits 0.25–0.5 s, doubling up to
/// 15–30 s.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 500u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(30_000);
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_millis(ceiling_ms / 2 + random % (ceiling_ms / 2 + 1))
}

fn room_id(chat_id: &str) -> Result<OwnedRoomId, SourceError> {
    OwnedRoomId::try_from(chat_id).map_err(|error| {
        SourceError::Rejected(format!("{chat_id:?} is not a Matrix room id: {error}"))
    })
}

#[async_trait]
impl Source for Matrix {
    fn kind(&self) -> &'static str {
        KIND
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

    fn can_send(&self) -> bool {
        true
    }

    async fn send(
        &self,
        chat_id: &str,
        text: &str,
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        let room_id = room_id(chat_id)?;
        let txn_id = OwnedTransactionId::from(format!("{TXN_PREFIX}{idempotency_key}"));
        let content = RoomMessageEventContent::text_plain(text);
        let request = send_message_event::v3::Request::new(room_id, txn_id, &content)
            .map_err(|error| SourceError::Invalid(error.to_string()))?;
        let response = self.client.send(request, None).await?;
        Ok(SendReceipt {
            provider_message_id: response.event_id.to_string(),
        })
    }

    /// One file per message: a Matrix media event carries one file.
    fn max_files_per_message(&self) -> usize {
        1
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
        idempotency_key: &str,
    ) -> Result<SendReceipt, SourceError> {
        use ruma::api::client::media::create_content;
        use ruma::events::room::message::{
            AudioMessageEventContent, FileMessageEventContent, ImageMessageEventContent,
            MessageType, VideoMessageEventContent,
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
        let content = RoomMessageEventContent::new(msgtype);
        let txn_id = OwnedTransactionId::from(format!("{TXN_PREFIX}{idempotency_key}"));
        let request = send_message_event::v3::Request::new(room_id, txn_id, &content)
            .map_err(|error| SourceError::Invalid(error.to_string()))?;
        let response = self.client.send(request, None).await?;
        Ok(SendReceipt {
            provider_message_id: response.event_id.to_string(),
        })
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

    fn batch_size(&self) -> usize {
        PAGE_SIZE
    }

    fn is_live(&self) -> bool {
        true
    }

    async fn run_live(&self, sink: Arc<dyn LiveSink>) {
        let stop = sink.stopped();
        let mut since = loop {
            match sink.cursor().await {
                Ok(cursor) => break cursor,
                Err(error) => {
                    tracing::error!(%error, "cannot read the stored sync token; retrying");
                    if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        };
        sink.set_state(SourceState::Connecting);
        let mut names = HashMap::new();
        let mut failures = 0u32;
        loop {
            let result = tokio::select! {
                result = self.sync_once(since.as_deref(), &mut names, sink.as_ref(), failures >= LENIENT_AFTER) => result,
                _ = stop.cancelled() => return,
            };
            let error = match result {
                Ok((events, next_batch)) => match sink.apply(events, &next_batch).await {
                    Ok(()) => {
                        if failures > 0 || since.is_none() {
                            tracing::info!("matrix /sync connected");
                        }
                        failures = 0;
                        sink.set_state(SourceState::Up);
                        since = Some(next_batch);
                        continue;
                    }
                    Err(error) => format!("cannot store live events: {}", error.public_text()),
                },
                Err(error) => error.to_string(),
            };
            failures += 1;
            let wait = backoff(failures);
            tracing::warn!(%error, failures, retry_in_ms = wait.as_millis() as u64, "matrix /sync failed");
            sink.set_state(SourceState::Down(error));
            if sleep_or_stop(&stop, wait).await {
                return;
            }
        }
    }
}

/// Sleeps for `wait`; true when the server began shutting down first.
async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageStatus, NewMessage};

    fn message(id: &str, text: &str) -> TimelineItem {
        TimelineItem::Message(NewMessage {
            provider_message_id: id.into(),
            client_message_id: None,
            sender: "@bob:localhost".into(),
            text: text.into(),
            kind: MessageKind::Text,
            status: MessageStatus::Sent,
            from_me: false,
            sent_at_ms: 0,
            attachments: Vec::new(),
        })
    }

    fn edit(target: &str, sender: &str, text: &str) -> TimelineItem {
        TimelineItem::Edit {
            target: target.into(),
            sender: sender.into(),
            text: text.into(),
        }
    }

    #[test]
    fn folds_edits_and_redactions_into_history() {
        // Newest first, as /messages?dir=b returns them.
        let page = vec![
            edit("$3", "@mallory:localhost", "not the sender: ignored"),
            edit("$1", "@bob:localhost", "one, edited twice"),
            TimelineItem::Redaction {
                target: "$2".into(),
            },
            edit("$9", "@bob:localhost", "target not in the window"),
            message("$3", "three"),
            edit("$1", "@bob:localhost", "one, edited"),
            message("$2", "two"),
            TimelineItem::Other,
            message("$1", "one"),
        ];
        let messages = fold_history(page);
        let shown: Vec<(&str, &str, MessageKind)> = messages
            .iter()
            .map(|m| (m.provider_message_id.as_str(), m.text.as_str(), m.kind))
            .collect();
        assert_eq!(
            shown,
            [
                ("$1", "one, edited twice", MessageKind::Text),
                ("$2", "", MessageKind::Deleted),
                ("$3", "three", MessageKind::Text),
            ]
        );
    }

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
        assert!(source.is_live() && source.can_send());

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

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        for attempt in 1..20 {
            let wait = backoff(attempt).as_millis() as u64;
            let ceiling = (500u64 << (attempt - 1).min(6)).min(30_000);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "attempt {attempt}: {wait} ms"
            );
        }
        let waits: std::collections::HashSet<u128> =
            (0..20).map(|_| backoff(10).as_millis()).collect();
        assert!(waits.len() > 1, "jittered");
    }
}
