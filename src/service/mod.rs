//! The domain services behind the RPCs: sync runs, subscriptions and sending.
//!
//! [`ChatSync`] is what the gRPC adapter calls. It validates what the types do not, owns the
//! sessions' sources, and never sees a prost type.
pub mod live;
pub mod subscriptions;
pub mod sync;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Chat, Message, MessageKind, MessageStatus, NewMessage, now_ms};
use crate::search::SearchQuery;
use crate::sources::{self, Source, SourceContext, SourceState};
use crate::storage::messages::MissingChat;
use crate::storage::search::SearchFilter;
use crate::storage::{MessageRef, PoolUsage, SessionRecord, Store, SyncState, Take};
pub use subscriptions::{Event, SubscribeRequest};
pub use sync::{Attachment, Progress, Stage};

/// The largest text SendMessage accepts, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 65_536;
/// The longest chat id SendMessage accepts, in bytes.
pub const MAX_CHAT_ID_BYTES: usize = 256;
/// The largest idempotency key, in bytes.
pub const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 128;
/// Page size of ListChats and ListMessages when the request gives none, and the largest.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1_000;
/// What a default gRPC client accepts in one message (4 MiB): a listing page never exceeds
/// it, whatever `max_response_bytes` allows.
pub const DEFAULT_CLIENT_MESSAGE_BYTES: usize = 4 << 20;
/// Bytes added to a message's strings for its other fields and protobuf framing, in a
/// page's size estimate (ids, seq, kind, status, timestamp, tags and lengths; generous).
const MESSAGE_OVERHEAD_BYTES: usize = 96;

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor for the next page.
    pub next_seq: u64,
    pub has_more: bool,
}

/// A session's sync status, as GetSyncStatus reports it.
#[derive(Debug, Clone)]
pub struct SyncStatus {
    pub session: SessionRecord,
    /// RUNNING while a run is in memory, else the persisted state.
    pub state: SyncState,
    pub progress: Option<Progress>,
    pub chat_count: u64,
    pub message_count: u64,
    /// Whether the session's live source is connected.
    pub source_state: SourceState,
}

/// A reading of the domain's gauges and counters, for the metrics ([`ChatSync::observe`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Subscriptions open on this replica, replaying or live.
    pub subscriptions_active: u64,
    /// Per session with open subscriptions on this replica, sorted by id: the committed head
    /// seq minus the smallest cursor of those subscriptions (the last seq each has handed to
    /// its stream's send buffer). 0 when every subscriber is up to date.
    pub feed_lag: Vec<(String, u64)>,
    /// Sync runs this replica is running now.
    pub sync_runs_active: u64,
    /// New messages stored by this replica's sync runs since the process started.
    pub sync_messages_stored: u64,
    /// The database pool's connections.
    pub db_pool: PoolUsage,
}

/// The domain facade. Cheap to clone.
#[derive(Clone)]
pub struct ChatSync {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sessions: HashMap<String, Session>,
    runs: Arc<sync::SyncRuns>,
    hub: subscriptions::Hub,
    shutdown: watch::Receiver<bool>,
    /// The estimated encoded size a listing page stays within.
    page_bytes: usize,
}

impl ChatSync {
    /// Builds the sources of every configured session and makes sure each session has its
    /// row. Runs left RUNNING by a crash become INTERRUPTED.
    pub async fn new(
        config: &Config,
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let interrupted = store.mark_interrupted_runs().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "sync runs were interrupted by the last shutdown"
            );
        }
        // This replica's id in the cluster's leases: new at every start, so a restarted
        // process never mistakes a dead one's lease for its own.
        let replica_id = uuid::Uuid::new_v4().to_string();
        let lease = Duration::from_secs(config.lease_secs);
        let mut sessions = HashMap::new();
        for session in &config.sessions {
            let context = SourceContext {
                session_id: session.id.clone(),
                store: store.clone(),
                export_limits: config.export_limits(),
            };
            let source = sources::build(session, &context).map_err(anyhow::Error::msg)?;
            store.ensure_session(&session.id, source.kind()).await?;
            let initial = if source.is_live() {
                SourceState::Connecting
            } else {
                SourceState::NotLive
            };
            let handles = Session {
                source: source.clone(),
                state: watch::channel(initial).0,
            };
            if source.is_live() {
                live::spawn(
                    source,
                    live::LiveLease {
                        session_id: session.id.clone(),
                        store: store.clone(),
                        state: handles.state.clone(),
                        shutdown: shutdown.clone(),
                        holder: replica_id.clone(),
                        lease,
                    },
                );
            }
            sessions.insert(session.id.clone(), handles);
        }
        let hub_store = store.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                sessions,
                runs: Arc::new(sync::SyncRuns::new(replica_id, lease, shutdown.clone())),
                hub: subscriptions::Hub::new(
                    hub_store,
                    Duration::from_secs(config.heartbeat_secs),
                    shutdown.clone(),
                ),
                shutdown,
                page_bytes: page_bytes(config.max_response_bytes),
            }),
        })
    }

    /// Turns true when the server starts shutting down; open streams end then.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    /// Completes once this replica runs no sync run: after a shutdown, once each has been
    /// persisted INTERRUPTED.
    pub async fn sync_runs_stopped(&self) {
        self.inner.runs.stopped().await;
    }

    /// What the metrics report about the domain, read now (cheap: no database query).
    pub fn observe(&self) -> Observation {
        let hub = self.inner.hub.observe();
        Observation {
            subscriptions_active: hub.active,
            feed_lag: hub.feed_lag,
            sync_runs_active: self.inner.runs.active(),
            sync_messages_stored: self.inner.runs.messages_stored(),
            db_pool: self.inner.store.pool_usage(),
        }
    }

    /// The configured session ids, sorted.
    pub fn session_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.sessions.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The configured sessions as `(id, source kind)`, sorted by id.
    pub fn sessions(&self) -> Vec<(String, String)> {
        let mut sessions: Vec<(String, String)> = self
            .inner
            .sessions
            .iter()
            .map(|(id, session)| (id.clone(), session.source.kind().to_owned()))
            .collect();
        sessions.sort();
        sessions
    }

    /// Each session's source state, to follow (the health service shows them).
    pub fn source_states(&self) -> Vec<(String, watch::Receiver<SourceState>)> {
        let mut states: Vec<_> = self
            .inner
            .sessions
            .iter()
            .map(|(id, session)| (id.clone(), session.state.subscribe()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    fn session(&self, session_id: &str) -> Result<&Session> {
        if session_id.is_empty() {
            return Err(Error::InvalidArgument(
                "session_id must not be empty".into(),
            ));
        }
        self.inner
            .sessions
            .get(session_id)
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))
    }

    fn source(&self, session_id: &str) -> Result<&Arc<dyn Source>> {
        Ok(&self.session(session_id)?.source)
    }

    /// Starts a sync run, or attaches to the running one, on this replica or another.
    /// `limit_per_chat`: `None` means [`sync::DEFAULT_LIMIT_PER_CHAT`], `Some(0)` the whole
    /// history.
    pub async fn sync_chats(
        &self,
        session_id: &str,
        limit_per_chat: Option<u32>,
    ) -> Result<Attachment> {
        let session = self.session(session_id)?;
        let limit = match limit_per_chat.unwrap_or(sync::DEFAULT_LIMIT_PER_CHAT) {
            0 => None,
            n => Some(n as usize),
        };
        self.inner
            .runs
            .start_or_attach(&self.inner.store, session_id, session.source.clone(), limit)
            .await
    }

    /// Opens a subscription; see [`subscriptions`].
    pub async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<ReceiverStream<Result<Event>>> {
        self.source(&request.session_id)?;
        self.inner.hub.subscribe(request).await
    }

    /// Stores a message, sends it through the source, and records the outcome. Returns the
    /// message and whether the idempotency key was seen before (then nothing is sent).
    ///
    /// Errors: `InvalidArgument` for an empty chat id or one over [`MAX_CHAT_ID_BYTES`], an
    /// empty text or one over [`MAX_TEXT_BYTES`], an idempotency key over
    /// [`MAX_CLIENT_MESSAGE_ID_BYTES`] or already used for another message, or a NUL
    /// character in any of them;
    /// `NotFound` for an unknown session, or an unknown chat on a source that cannot create
    /// chats; `FailedPrecondition` for a read-only source; the source's error when it rejects
    /// the send (the message stays stored as FAILED).
    pub async fn send_message(
        &self,
        session_id: &str,
        chat_id: &str,
        text: &str,
        client_message_id: &str,
    ) -> Result<(Message, bool)> {
        let source = self.source(session_id)?.clone();
        if chat_id.trim().is_empty() {
            return Err(Error::InvalidArgument("chat_id must not be empty".into()));
        }
        if chat_id.len() > MAX_CHAT_ID_BYTES {
            return Err(Error::InvalidArgument(format!(
                "chat_id is {} bytes; the limit is {MAX_CHAT_ID_BYTES}",
                chat_id.len()
            )));
        }
        // PostgreSQL cannot store NUL in text; refuse it on every backend alike.
        for (field, value) in [
            ("chat_id", chat_id),
            ("text", text),
            ("client_message_id", client_message_id),
        ] {
            if value.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "{field} must not contain NUL characters"
                )));
            }
        }
        if text.trim().is_empty() {
            return Err(Error::InvalidArgument("text must not be empty".into()));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        if client_message_id.len() > MAX_CLIENT_MESSAGE_ID_BYTES {
            return Err(Error::InvalidArgument(format!(
                "client_message_id is {} bytes; the limit is {MAX_CLIENT_MESSAGE_ID_BYTES}",
                client_message_id.len()
            )));
        }
        if !source.can_send() {
            return Err(sources::SourceError::ReadOnly(source.kind()).into());
        }
        let store = &self.inner.store;
        let client_message_id = if client_message_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            client_message_id.to_owned()
        };
        // A native source's storage is its chat server: the stored message is the sent one.
        let (provider_message_id, status) = if source.is_native() {
            (format!("local-{client_message_id}"), MessageStatus::Sent)
        } else {
            (
                format!("pending-{client_message_id}"),
                MessageStatus::Pending,
            )
        };
        let new = NewMessage {
            provider_message_id,
            client_message_id: Some(client_message_id.clone()),
            sender: String::new(),
            text: text.to_owned(),
            kind: MessageKind::Text,
            status,
            from_me: true,
            sent_at_ms: now_ms(),
        };
        // A native source creates chats on first send; others only send to chats they have.
        let missing_chat = if source.is_native() {
            MissingChat::Create
        } else {
            MissingChat::Refuse
        };
        let (stored, created) = store
            .insert_outgoing(session_id, chat_id, &new, missing_chat)
            .await?;
        if !created {
            let (existing, duplicate) = same_request(stored, chat_id, text)?;
            // Still PENDING: the first attempt was cut off (a crash, a timeout) or is in flight
            // on another call. Send again; the source deduplicates on the idempotency key, so
            // this never posts twice.
            if existing.status == MessageStatus::Pending && !source.is_native() {
                let (message, _) = self.deliver(&source, existing, &client_message_id).await?;
                return Ok((message, true));
            }
            return Ok((existing, duplicate));
        }
        if status == MessageStatus::Sent {
            return Ok((stored, false));
        }
        self.deliver(&source, stored, &client_message_id).await
    }

    /// Sends a stored PENDING message through its source and records the outcome: SENT with
    /// the source's id, or FAILED and the source's error.
    async fn deliver(
        &self,
        source: &Arc<dyn Source>,
        stored: Message,
        client_message_id: &str,
    ) -> Result<(Message, bool)> {
        let store = &self.inner.store;
        let (session_id, chat_id) = (stored.session_id.as_str(), stored.chat_id.as_str());
        let reference = MessageRef::Id(stored.id);
        match source.send(chat_id, &stored.text, client_message_id).await {
            Ok(receipt) => {
                let (sent, _) = store
                    .update_status(
                        session_id,
                        &reference,
                        MessageStatus::Sent,
                        Some(&receipt.provider_message_id),
                    )
                    .await?;
                Ok((sent, false))
            }
            Err(error) => {
                tracing::warn!(session_id, chat_id, %error, "source rejected the send");
                store
                    .update_status(session_id, &reference, MessageStatus::Failed, None)
                    .await?;
                Err(error.into())
            }
        }
    }

    /// Records a receipt. A status that is not ahead of the stored one changes nothing.
    pub async fn update_status(
        &self,
        session_id: &str,
        reference: MessageRef,
        status: MessageStatus,
    ) -> Result<(Message, bool)> {
        let source = self.source(session_id)?;
        if status == MessageStatus::Pending {
            return Err(Error::InvalidArgument(
                "status must be SENT, DELIVERED, READ or FAILED".into(),
            ));
        }
        let (message, changed) = self
            .inner
            .store
            .update_status(session_id, &reference, status, None)
            .await?;
        // On a two-way source, reading an incoming message is said upstream too, on every READ
        // (so a READ repeated after a failed receipt says it again). The local change stands
        // even when that fails.
        if message.status == MessageStatus::Read
            && status == MessageStatus::Read
            && !message.from_me
            && let Err(error) = source
                .mark_read(&message.chat_id, &message.provider_message_id)
                .await
        {
            tracing::warn!(session_id, %error, "cannot send the read receipt upstream");
        }
        Ok((message, changed))
    }

    /// The sync state, progress and counts of a session.
    pub async fn sync_status(&self, session_id: &str) -> Result<SyncStatus> {
        let source_state = self.session(session_id)?.state.borrow().clone();
        let store = &self.inner.store;
        let session = store.session(session_id).await?;
        let (chat_count, message_count) = store.counts(session_id).await?;
        let mut session = session;
        if self.inner.runs.current(session_id).is_none()
            && session.sync_state == SyncState::Running
            && store.interrupt_if_expired(session_id, false).await?
        {
            // The replica running it died: its lease expired just now.
            session = store.session(session_id).await?;
        }
        let (state, progress) = match self.inner.runs.current(session_id) {
            Some(progress) => (SyncState::Running, Some(progress)),
            None => (
                session.sync_state,
                session
                    .sync_progress
                    .as_deref()
                    .and_then(|json| serde_json::from_str(json).ok()),
            ),
        };
        Ok(SyncStatus {
            session,
            state,
            progress,
            chat_count,
            message_count,
            source_state,
        })
    }

    /// A page of chats with `seq > after_seq`: at most `limit`, and fewer when their encoded
    /// size would pass the page budget (three quarters of the smaller of
    /// `max_response_bytes` and [`DEFAULT_CLIENT_MESSAGE_BYTES`]); `has_more` then says so.
    pub async fn list_chats(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page<Chat>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        let mut items = self
            .inner
            .store
            .list_chats(session_id, after_seq, limit + 1)
            .await?;
        let fitting = fit_oldest(&items, self.inner.page_bytes, chat_bytes);
        let limit = limit.min(fitting as u64);
        Ok(page(&mut items, limit, after_seq, |chat| chat.seq))
    }

    /// `NotFound` unless the chat, when one is named, is stored.
    async fn ensure_chat(&self, session_id: &str, chat_id: Option<&str>) -> Result<()> {
        if let Some(chat_id) = chat_id
            && self
                .inner
                .store
                .find_chat(session_id, chat_id)
                .await?
                .is_none()
        {
            return Err(Error::NotFound(format!("chat {chat_id:?}")));
        }
        Ok(())
    }

    /// A page of messages of the session (or of one chat), in ascending seq order.
    ///
    /// Without `before_seq`: the oldest messages with `seq > after_seq` (paging forwards;
    /// `next_seq` is the last seq returned). With it: the newest with
    /// `after_seq < seq < before_seq` (paging backwards; `next_seq` is the oldest seq returned,
    /// or `before_seq` when none is, and `has_more` says whether older ones exist).
    ///
    /// A page holds at most `limit` messages, and fewer when their encoded size would pass the
    /// page budget (as in [`Self::list_chats`]), so the answer fits a default 4 MiB client;
    /// a page always holds at least one message when there is one.
    pub async fn list_messages(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Page<Message>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        self.ensure_chat(session_id, chat_id).await?;
        let take = if before_seq.is_some() {
            Take::Newest
        } else {
            Take::Oldest
        };
        let mut items = self
            .inner
            .store
            .list_messages(session_id, chat_id, after_seq, before_seq, take, limit + 1)
            .await?;
        let Some(before_seq) = before_seq else {
            let fitting = fit_oldest(&items, self.inner.page_bytes, message_bytes);
            let limit = limit.min(fitting as u64);
            return Ok(page(&mut items, limit, after_seq, |message| message.seq));
        };
        // The newest `limit + 1`, ascending: the extra rows are the oldest, at the front.
        let mut keep = items.len().min(limit as usize);
        let mut bytes = 0;
        for (taken, message) in items.iter().rev().take(keep).enumerate() {
            bytes += message_bytes(message);
            if bytes > self.inner.page_bytes && taken > 0 {
                keep = taken;
                break;
            }
        }
        let has_more = items.len() > keep;
        items.drain(..items.len() - keep);
        let next_seq = items.first().map(|m| m.seq).unwrap_or(before_seq);
        Ok(Page {
            items,
            next_seq,
            has_more,
        })
    }
}

/// The most chats a SearchMessages chat filter may name.
pub const MAX_SEARCH_CHATS: usize = 1_000;

/// What SearchMessages asks for (see [`ChatSync::search_messages`]).
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub session_id: String,
    /// The query as written; parsed by [`SearchQuery::parse`].
    pub query: String,
    /// Only these chats; empty means all.
    pub chat_ids: Vec<String>,
    /// Only messages sent at or after this instant (Unix ms).
    pub sent_after_ms: Option<i64>,
    /// Only messages sent before this instant (Unix ms).
    pub sent_before_ms: Option<i64>,
    /// Page size; 0 means [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    pub limit: u32,
    /// Empty, or the `next_page_token` of the previous page.
    pub page_token: String,
}

/// One search result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub message: Message,
    /// The text around the first match, matches marked (see [`crate::search`]).
    pub snippet: String,
    /// Relevance, higher is better.
    pub score: f64,
}

/// A page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Empty when no hit follows.
    pub next_page_token: String,
}

/// Where a search page starts: an offset into the ranked hits among the messages with
/// `id <= max_id` (those that existed when the first page was read). Written as
/// `s1.<offset>.<max_id>`; clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageToken {
    offset: u64,
    max_id: i64,
}

impl PageToken {
    fn parse(token: &str) -> Result<Self> {
        let invalid =
            || Error::InvalidArgument(format!("page_token {token:?} is not one this server made"));
        let mut parts = token.strip_prefix("s1.").ok_or_else(invalid)?.split('.');
        let offset = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        let max_id = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        if parts.next().is_some() || max_id < 0 {
            return Err(invalid());
        }
        Ok(Self { offset, max_id })
    }

    fn encode(self) -> String {
        format!("s1.{}.{}", self.offset, self.max_id)
    }
}

impl ChatSync {
    /// A page of the session's messages matching a query, best first, with snippets.
    ///
    /// `InvalidArgument` for a bad query ([`SearchQuery::parse`]), limit, chat filter (more
    /// than [`MAX_SEARCH_CHATS`]), time range
    /// (`sent_after` not before `sent_before`) or page token; `NotFound` for an unknown
    /// session. A page holds at most `limit` hits, and fewer when their encoded size would pass
    /// the page budget (as in [`Self::list_chats`]).
    pub async fn search_messages(&self, request: SearchRequest) -> Result<SearchPage> {
        self.source(&request.session_id)?;
        let query = SearchQuery::parse(&request.query)?;
        let limit = page_size(request.limit)?;
        if request.chat_ids.len() > MAX_SEARCH_CHATS {
            return Err(Error::InvalidArgument(format!(
                "{} chat_ids, over the maximum of {MAX_SEARCH_CHATS}",
                request.chat_ids.len()
            )));
        }
        if let (Some(after), Some(before)) = (request.sent_after_ms, request.sent_before_ms)
            && after >= before
        {
            return Err(Error::InvalidArgument(
                "sent_after must be before sent_before".into(),
            ));
        }
        let store = &self.inner.store;
        let start = if request.page_token.is_empty() {
            PageToken {
                offset: 0,
                max_id: store.max_message_id().await?,
            }
        } else {
            PageToken::parse(&request.page_token)?
        };
        let filter = SearchFilter {
            chat_ids: request.chat_ids,
            sent_after_ms: request.sent_after_ms,
            sent_before_ms: request.sent_before_ms,
            max_id: start.max_id,
        };
        let found = store
            .search(
                &request.session_id,
                &query,
                &filter,
                start.offset,
                limit + 1,
            )
            .await?;
        let mut hits: Vec<SearchHit> = found
            .into_iter()
            .map(|found| SearchHit {
                snippet: query.snippet(&found.message.text),
                message: found.message,
                score: found.score,
            })
            .collect();
        let fitting = fit_oldest(&hits, self.inner.page_bytes, |hit| {
            message_bytes(&hit.message) + hit.snippet.len() + 16
        });
        let keep = (limit as usize).min(fitting);
        let has_more = hits.len() > keep;
        hits.truncate(keep);
        let next_page_token = if has_more {
            PageToken {
                offset: start.offset + keep as u64,
                max_id: start.max_id,
            }
            .encode()
        } else {
            String::new()
        };
        Ok(SearchPage {
            hits,
            next_page_token,
        })
    }
}

/// A configured session: its source and the live source's connection state.
struct Session {
    source: Arc<dyn Source>,
    state: watch::Sender<SourceState>,
}

/// Completes once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// A retry under a used idempotency key returns the stored message, but only when it asks for
/// the same thing: a key reused for another message is a client bug worth reporting.
fn same_request(stored: Message, chat_id: &str, text: &str) -> Result<(Message, bool)> {
    if stored.chat_id != chat_id || stored.text != text {
        return Err(Error::InvalidArgument(format!(
            "client_message_id {:?} was already used for another message (chat {:?})",
            stored.client_message_id.as_deref().unwrap_or_default(),
            stored.chat_id
        )));
    }
    Ok((stored, true))
}

fn page_size(limit: u32) -> Result<u64> {
    match limit {
        0 => Ok(DEFAULT_PAGE as u64),
        n if n > MAX_PAGE => Err(Error::InvalidArgument(format!(
            "limit {n} is over the maximum of {MAX_PAGE}"
        ))),
        n => Ok(n as u64),
    }
}

/// The page budget for a `max_response_bytes` limit: three quarters of the smaller of it and
/// a default client's 4 MiB, leaving room for the estimate's error.
fn page_bytes(max_response_bytes: usize) -> usize {
    max_response_bytes.min(DEFAULT_CLIENT_MESSAGE_BYTES) / 4 * 3
}

/// An upper estimate of a message's encoded size, in bytes.
fn message_bytes(message: &Message) -> usize {
    message.session_id.len()
        + message.chat_id.len()
        + message.provider_message_id.len()
        + message.client_message_id.as_deref().map_or(0, str::len)
        + message.sender.len()
        + message.text.len()
        + MESSAGE_OVERHEAD_BYTES
}

/// An upper estimate of a chat's encoded size, in bytes.
fn chat_bytes(chat: &Chat) -> usize {
    chat.chat_id.len() + chat.name.len() + 32
}

/// How many of `items`, from the first, fit in `budget` bytes; at least one, so a page always
/// moves the cursor.
fn fit_oldest<T>(items: &[T], budget: usize, size: impl Fn(&T) -> usize) -> usize {
    let mut bytes = 0;
    for (index, item) in items.iter().enumerate() {
        bytes += size(item);
        if bytes > budget && index > 0 {
            return index;
        }
    }
    items.len()
}

/// Cuts a listing fetched with `limit + 1` rows down to a page.
fn page<T>(items: &mut Vec<T>, limit: u64, after_seq: u64, seq: impl Fn(&T) -> u64) -> Page<T> {
    let has_more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    let next_seq = items.last().map(&seq).unwrap_or(after_seq);
    Page {
        items: std::mem::take(items),
        next_seq,
        has_more,
    }
}

#[cfg(test)]
mod search_tests {
    use super::PageToken;

    #[test]
    fn page_tokens_round_trip_and_refuse_what_the_server_did_not_make() {
        let token = PageToken {
            offset: 40,
            max_id: 7,
        };
        assert_eq!(PageToken::parse(&token.encode()).unwrap(), token);
        for bad in ["40", "s1.", "s1.x.1", "s1.1.-2", "s1.1.2.3", "s2.1.2"] {
            assert!(PageToken::parse(bad).is_err(), "{bad}");
        }
    }
}
