//! The domain services behind the RPCs: sync runs, subscriptions and sending.
//!
//! [`ChatSync`] is what the gRPC adapter calls. It validates what the types do not, owns the
//! sessions' sources, and never sees a prost type.
pub mod lease;
mod lifecycle;
mod listings;
pub mod live;
mod search;
mod send;
mod snapshot;
pub mod subscriptions;
pub mod sync;
pub mod webhooks;
pub mod whatsapp_cloud;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use crate::blobs::{BlobStore, ChunkStream, DirBlobStore, is_sha256};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::EncodedLen;
use crate::model::{
    self, AttachmentUpload, Chat, ChatId, ClientMessageId, Contact, Message, MessageKind,
    MessageStatus, NewMessage, Participant, now_ms, refuse_nul,
};
use crate::model::{MessageRef, MissingChat, SearchFilter, SourceState, SyncState};
use crate::search::SearchQuery;
use crate::sources::{self, Source, SourceContext};
use crate::storage::{PoolUsage, SessionRecord, Store, Take};
pub use lifecycle::{ChangeAnswer, ChangeRequest, ClientChange, MAX_EMOJI_BYTES};
pub use listings::Page;
use listings::{fit_newest, fit_oldest, page_bytes, page_size};
pub use search::{MAX_SEARCH_CHATS, SearchHit, SearchPage, SearchRequest};
pub use send::SendRequest;
pub use snapshot::{SNAPSHOT_STALL, SnapshotFrame, snapshot_slots};
pub use subscriptions::{Event, SubscribeRequest};
pub use sync::{Progress, RunHandle, Stage};

/// The largest text SendMessage accepts, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 65_536;
/// The longest file name SendMessage accepts, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Page size of the listings (ListChats, ListMessages, ListContacts, ListParticipants) when
/// the request gives none, and the largest.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1_000;
/// Messages per chat GetSnapshot takes when the request gives no limit; the largest limit is
/// [`MAX_PAGE`].
pub const DEFAULT_SNAPSHOT_LIMIT: u32 = 50;
/// What a default gRPC client accepts in one message (4 MiB): a listing page never exceeds
/// it, whatever `max_response_bytes` allows.
pub const DEFAULT_CLIENT_MESSAGE_BYTES: usize = 4 << 20;

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
    /// This replica's id in the cluster (leases, send claims): new at every start.
    replica_id: String,
    sessions: HashMap<String, Session>,
    runs: Arc<sync::SyncRuns>,
    hub: subscriptions::Hub,
    shutdown: CancellationToken,
    /// The estimated encoded size a listing page stays within.
    page_bytes: usize,
    /// Message media (GetMedia reads it; sources write it).
    blobs: Arc<dyn BlobStore>,
    /// Slots for snapshots in progress: each holds a pooled database connection (and, on
    /// SQLite, holds back WAL checkpoints) until its last frame is sent.
    snapshots: Arc<tokio::sync::Semaphore>,
    /// The webhook endpoints and their deliverers.
    webhooks: webhooks::Webhooks,
}

impl ChatSync {
    /// Builds the sources of every configured session and makes sure each session has its
    /// row. Runs left RUNNING by a crash become INTERRUPTED. Each `whatsapp-cloud` session's
    /// webhook inbox is swept in the background, now and periodically
    /// ([`whatsapp_cloud::spawn_inbox_sweeps`]): statuses left waiting for a message stored
    /// meanwhile are applied, and media retries no live replica holds are taken up.
    pub async fn new(
        config: &Config,
        store: Store,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let interrupted = store.mark_interrupted_runs(true).await?;
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
        let blobs: Arc<dyn BlobStore> = Arc::new(DirBlobStore::new(&config.blob_dir));
        for session in &config.sessions {
            let context = SourceContext {
                session_id: session.id.clone(),
                stored: Arc::new(StoredSessionView::new(store.clone(), &session.id)),
                export_limits: config.export_limits(),
                blobs: blobs.clone(),
            };
            let source = sources::build(session, &context).map_err(anyhow::Error::msg)?;
            store.ensure_session(&session.id, source.kind()).await?;
            let initial = if source.capabilities().live {
                SourceState::Connecting
            } else {
                SourceState::NotLive
            };
            let handles = Session {
                source: source.clone(),
                state: watch::channel(initial).0,
            };
            if source.capabilities().live {
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
        if store.is_postgres() {
            spawn_run_sweeper(store.clone(), lease, shutdown.clone());
        }
        let session_ids: Vec<String> = config.sessions.iter().map(|s| s.id.clone()).collect();
        let webhooks = webhooks::Webhooks::start(
            &config.webhooks,
            &session_ids,
            store.clone(),
            webhooks::Cluster {
                holder: replica_id.clone(),
                lease,
                shutdown: shutdown.clone(),
            },
        )
        .await?;
        let hub_store = store.clone();
        let service = Self {
            inner: Arc::new(Inner {
                store,
                sessions,
                runs: Arc::new(sync::SyncRuns::new(
                    replica_id.clone(),
                    lease,
                    shutdown.clone(),
                )),
                replica_id,
                hub: subscriptions::Hub::new(
                    hub_store,
                    Duration::from_secs(config.heartbeat_secs),
                    shutdown.clone(),
                ),
                shutdown,
                page_bytes: page_bytes(config.max_response_bytes),
                blobs,
                snapshots: Arc::new(tokio::sync::Semaphore::new(snapshot_slots(
                    &config.database_url,
                    config.database_max_connections,
                ))),
                webhooks,
            }),
        };
        whatsapp_cloud::spawn_inbox_sweeps(service.clone());
        Ok(service)
    }

    /// The webhook endpoints: their status and cursors (GetWebhookStatus, ReplayWebhook).
    pub fn webhooks(&self) -> &webhooks::Webhooks {
        &self.inner.webhooks
    }

    /// Cancelled when the server starts shutting down; open streams end then.
    pub fn shutdown(&self) -> CancellationToken {
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
    ) -> Result<RunHandle> {
        self.sync_chats_since(session_id, limit_per_chat, None)
            .await
    }

    /// [`Self::sync_chats`], importing only messages sent at or after `since_ms` (Unix
    /// milliseconds) when given; the limit then counts only those.
    pub async fn sync_chats_since(
        &self,
        session_id: &str,
        limit_per_chat: Option<u32>,
        since_ms: Option<i64>,
    ) -> Result<RunHandle> {
        let session = self.session(session_id)?;
        let limit = match limit_per_chat.unwrap_or(sync::DEFAULT_LIMIT_PER_CHAT) {
            0 => None,
            n => Some(n as usize),
        };
        self.inner
            .runs
            .start_or_attach(
                &self.inner.store,
                session_id,
                session.source.clone(),
                limit,
                since_ms,
            )
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

    /// The sync state, progress and counts of a session.
    pub async fn sync_status(&self, session_id: &str) -> Result<SyncStatus> {
        let source_state = self.session(session_id)?.state.borrow().clone();
        let store = &self.inner.store;
        let (mut session, lease_held) = store.session_and_sync_lease(session_id).await?;
        let (chat_count, message_count) = store.counts(session_id).await?;
        if self.inner.runs.current(session_id).is_none()
            && session.sync_state == SyncState::Running
            && !lease_held
        {
            // The replica running it stopped. A read never takes the session's lock (that
            // replica may hold it, stalled): the run is reported INTERRUPTED now and recorded
            // so by the sweeper or the next run.
            session.sync_state = SyncState::Interrupted;
            session.sync_error = Some(crate::storage::LEASE_EXPIRED.to_owned());
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
}

/// Records as INTERRUPTED, every third of a lease, the runs whose replica stopped renewing
/// their lease (PostgreSQL; on SQLite a run dies with the one process and start-up records
/// it). Stops at shutdown.
fn spawn_run_sweeper(store: Store, lease: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match store.mark_interrupted_runs(false).await {
                Ok(0) => {}
                Ok(interrupted) => {
                    tracing::warn!(
                        interrupted,
                        "sync runs whose replica stopped were interrupted"
                    )
                }
                Err(error) => tracing::warn!(%error, "cannot sweep expired sync runs"),
            }
        }
    });
}

/// A configured session: its source and the live source's connection state.
struct Session {
    source: Arc<dyn Source>,
    state: watch::Sender<SourceState>,
}

/// A session's stored state as its source may read it ([`sources::StoredSession`]): reads
/// of one session in storage, and nothing else.
pub struct StoredSessionView {
    store: Store,
    session_id: String,
}

impl StoredSessionView {
    /// The view of `session_id` in `store`.
    pub fn new(store: Store, session_id: &str) -> Self {
        Self {
            store,
            session_id: session_id.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl sources::StoredSession for StoredSessionView {
    async fn chats(&self, after_seq: u64, limit: u64) -> Result<Vec<Chat>> {
        self.store
            .list_chats(&self.session_id, after_seq, limit)
            .await
    }

    async fn chat(&self, chat_id: &str) -> Result<Option<Chat>> {
        self.store.find_chat(&self.session_id, chat_id).await
    }

    async fn has_message(&self, chat_id: &str, provider_message_id: &str) -> Result<bool> {
        self.store
            .has_message(&self.session_id, chat_id, provider_message_id)
            .await
    }

    async fn provider_ids(&self, chat_id: &str) -> Result<std::collections::HashSet<String>> {
        self.store
            .stored_provider_ids(&self.session_id, chat_id)
            .await
    }
}
