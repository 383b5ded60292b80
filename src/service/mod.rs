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
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use crate::blobs::{BlobStore, ChunkStream, DirBlobStore, is_sha256};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{
    self, AttachmentUpload, Chat, Contact, Message, MessageKind, MessageStatus, NewMessage,
    Participant, now_ms,
};
use crate::model::{MessageRef, MissingChat, SearchFilter, SourceState, SyncState};
use crate::search::SearchQuery;
use crate::sources::{self, Source, SourceContext};
use crate::storage::{PoolUsage, SessionRecord, Store, Take};
pub use subscriptions::{Event, SubscribeRequest};
pub use sync::{Attachment, Progress, Stage};

/// The largest text SendMessage accepts, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 65_536;
/// The longest chat id SendMessage accepts, in bytes.
pub const MAX_CHAT_ID_BYTES: usize = 256;
/// The longest file name SendMessage accepts, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// The largest idempotency key, in bytes.
pub const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 128;
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

/// One frame of a snapshot (GetSnapshot): one chat, or none in the single frame of a session
/// without chats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFrame {
    /// The seq the whole snapshot is consistent at.
    pub head_seq: u64,
    /// How many frames the snapshot has (at least 1).
    pub n_chats: u32,
    pub chat: Option<Chat>,
    /// The chat's newest messages within the window, oldest first.
    pub messages: Vec<Message>,
    pub unread_count: u64,
    /// Older messages within the window exist beyond `messages`.
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
    shutdown: CancellationToken,
    /// The estimated encoded size a listing page stays within.
    page_bytes: usize,
    /// Message media (GetMedia reads it; sources write it).
    blobs: Arc<dyn BlobStore>,
    /// Slots for snapshots in progress: each holds a pooled database connection (and, on
    /// SQLite, holds back WAL checkpoints) until its last frame is sent.
    snapshots: Arc<tokio::sync::Semaphore>,
}

impl ChatSync {
    /// Builds the sources of every configured session and makes sure each session has its
    /// row. Runs left RUNNING by a crash become INTERRUPTED.
    pub async fn new(
        config: &Config,
        store: Store,
        shutdown: CancellationToken,
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
                blobs,
                snapshots: Arc::new(tokio::sync::Semaphore::new(snapshot_slots(
                    &config.database_url,
                    config.database_max_connections,
                ))),
            }),
        })
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
    ) -> Result<Attachment> {
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
    ) -> Result<Attachment> {
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

    /// A consistent snapshot of the session (GetSnapshot): one frame per chat, newest chat
    /// first, each with its newest `limit_per_chat` messages (`None`: [`DEFAULT_SNAPSHOT_LIMIT`];
    /// 0: none) sent at or after `since_ms`, and its unread count, all read in one read
    /// transaction at the head seq every frame carries. A session without chats gives one
    /// frame without a chat. Frames are read as the stream is consumed (the transaction stays
    /// open until the last one); a frame's messages stop at the page budget (as listings do),
    /// keeping the newest. The stream ends UNAVAILABLE when the server shuts down.
    ///
    /// At most [`snapshot_slots`] snapshots are in progress at once, since each holds a
    /// database connection while its client reads.
    ///
    /// Errors (before the stream starts): `InvalidArgument` for a limit over [`MAX_PAGE`];
    /// `NotFound` for an unknown session or chat; `ResourceExhausted` when every snapshot slot
    /// is taken.
    pub async fn snapshot(
        &self,
        session_id: &str,
        chat_ids: &[String],
        limit_per_chat: Option<u32>,
        since_ms: Option<i64>,
    ) -> Result<ReceiverStream<Result<SnapshotFrame>>> {
        self.source(session_id)?;
        let limit = limit_per_chat.unwrap_or(DEFAULT_SNAPSHOT_LIMIT);
        if limit > MAX_PAGE {
            return Err(Error::InvalidArgument(format!(
                "limit_per_chat {limit} is over the maximum of {MAX_PAGE}"
            )));
        }
        let slot = self
            .inner
            .snapshots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Error::ResourceExhausted(
                    "the server is serving its maximum of concurrent snapshots; retry later".into(),
                )
            })?;
        let mut snapshot = self
            .inner
            .store
            .snapshot(session_id, chat_ids, since_ms)
            .await?;
        let head_seq = snapshot.head_seq();
        let n_chats = u32::try_from(snapshot.n_chats()).unwrap_or(u32::MAX);
        let budget = self.inner.page_bytes;
        let shutdown = self.shutdown();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let frame = move |chat: Option<Chat>| SnapshotFrame {
            head_seq,
            n_chats: n_chats.max(1),
            chat,
            messages: Vec::new(),
            unread_count: 0,
            has_more: false,
        };
        tokio::spawn(
            async move {
                let _slot = slot;
                if n_chats == 0 {
                    let _ = sender.send(Ok(frame(None))).await;
                    let _ = snapshot.close().await;
                    return;
                }
                loop {
                    let next = tokio::select! {
                        next = snapshot.next_chat(u64::from(limit)) => next,
                        _ = shutdown.cancelled() => {
                            let _ = sender.try_send(Err(Error::Unavailable("the server is shutting down".into())));
                            return;
                        }
                        _ = sender.closed() => return,
                    };
                    let item = match next {
                        Ok(None) => break,
                        Ok(Some(mut chat)) => {
                            let keep = fit_newest(&chat.messages, budget, message_bytes);
                            let cut = chat.messages.len() - keep;
                            if cut > 0 {
                                chat.messages.drain(..cut);
                                chat.has_more = true;
                            }
                            Ok(SnapshotFrame {
                                messages: chat.messages,
                                unread_count: chat.unread,
                                has_more: chat.has_more,
                                ..frame(Some(chat.chat))
                            })
                        }
                        Err(error) => Err(error),
                    };
                    let failed = item.is_err();
                    tokio::select! {
                        sent = sender.send(item) => if sent.is_err() || failed { return },
                        _ = shutdown.cancelled() => {
                            let _ = sender.try_send(Err(Error::Unavailable("the server is shutting down".into())));
                            return;
                        }
                        _ = tokio::time::sleep(SNAPSHOT_STALL) => {
                            // A client that stops reading would hold the read transaction (and
                            // its pooled connection, and on SQLite the WAL's checkpoints) for as
                            // long as it likes: both are let go, then the client is told.
                            let _ = snapshot.close().await;
                            drop(_slot);
                            let error = Error::Unavailable(format!(
                                "the client read no snapshot frame for {} s; take the snapshot again",
                                SNAPSHOT_STALL.as_secs()
                            ));
                            tokio::select! {
                                _ = sender.send(Err(error)) => {}
                                _ = sender.closed() => {}
                                _ = shutdown.cancelled() => {}
                            }
                            return;
                        }
                    }
                }
                if let Err(error) = snapshot.close().await {
                    tracing::debug!(%error, "cannot end the snapshot's read transaction");
                }
            }
            .in_current_span(),
        );
        Ok(ReceiverStream::new(receiver))
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
        self.send_message_with(session_id, chat_id, text, client_message_id, Vec::new())
            .await
    }

    /// [`Self::send_message`] with files. A message with files is kind `Media` and its text
    /// may be empty; the files are put in the blob store before the message is stored.
    ///
    /// Errors, besides those of [`Self::send_message`]: `InvalidArgument` for a file with an
    /// empty name or one over [`MAX_FILE_NAME_BYTES`], a MIME type over 255 bytes, no bytes,
    /// a NUL character, or more files than the source takes in one message;
    /// `FailedPrecondition` when the source cannot send files at all.
    pub async fn send_message_with(
        &self,
        session_id: &str,
        chat_id: &str,
        text: &str,
        client_message_id: &str,
        uploads: Vec<AttachmentUpload>,
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
        if text.trim().is_empty() && uploads.is_empty() {
            return Err(Error::InvalidArgument("text must not be empty".into()));
        }
        for upload in &uploads {
            validate_upload(upload)?;
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
        let most_files = source.max_files_per_message();
        if uploads.len() > most_files {
            return Err(if most_files == 0 {
                Error::FailedPrecondition(format!("the {} source cannot send files", source.kind()))
            } else {
                Error::InvalidArgument(format!(
                    "the {} source sends at most {most_files} file(s) per message",
                    source.kind()
                ))
            });
        }
        let attachments = self.store_uploads(uploads).await?;
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
            kind: if attachments.is_empty() {
                MessageKind::Text
            } else {
                MessageKind::Media
            },
            status,
            from_me: true,
            sent_at_ms: now_ms(),
            attachments,
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
        let sent = if stored.attachments.is_empty() {
            source.send(chat_id, &stored.text, client_message_id).await
        } else {
            let files = self.read_attachments(&stored.attachments).await?;
            source
                .send_files(chat_id, &stored.text, &files, client_message_id)
                .await
        };
        match sent {
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

    /// Puts the bytes of uploaded files in the blob store; their attachments, stored.
    async fn store_uploads(
        &self,
        uploads: Vec<AttachmentUpload>,
    ) -> Result<Vec<model::Attachment>> {
        let mut attachments = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let mime_type = if upload.mime_type.is_empty() {
                sources::media::mime_for(&upload.file_name).to_owned()
            } else {
                upload.mime_type
            };
            let blob = self
                .inner
                .blobs
                .put(upload.data)
                .await
                .map_err(|error| Error::Internal(format!("cannot store a file: {error}")))?;
            attachments.push(model::Attachment {
                file_name: upload.file_name,
                mime_type,
                size_bytes: blob.size,
                sha256: blob.sha256,
                stored: true,
            });
        }
        Ok(attachments)
    }

    /// The bytes of stored attachments, read back from the blob store (to send them).
    async fn read_attachments(
        &self,
        attachments: &[model::Attachment],
    ) -> Result<Vec<(model::Attachment, Vec<u8>)>> {
        use tokio_stream::StreamExt;
        let mut files = Vec::with_capacity(attachments.len());
        for attachment in attachments {
            let internal =
                |error: std::io::Error| Error::Internal(format!("cannot read a file: {error}"));
            let Some((size, mut chunks)) = self
                .inner
                .blobs
                .get(&attachment.sha256)
                .await
                .map_err(internal)?
            else {
                return Err(Error::Internal(format!(
                    "blob {} is missing from the blob store",
                    attachment.sha256
                )));
            };
            let mut bytes = Vec::with_capacity(size as usize);
            while let Some(chunk) = chunks.next().await {
                bytes.extend(chunk.map_err(internal)?);
            }
            files.push((attachment.clone(), bytes));
        }
        Ok(files)
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

    /// The bytes of a stored attachment of this session: its MIME type, size and bytes in
    /// chunks of at most [`crate::blobs::CHUNK_BYTES`]. `sha256` is 64 hex digits (either
    /// case).
    ///
    /// Errors: `InvalidArgument` for a malformed hash; `NotFound` for an unknown session, or
    /// a hash that no attachment of this session references with its bytes stored (a session
    /// never reads another session's media), or whose blob is gone from the store.
    pub async fn get_media(
        &self,
        session_id: &str,
        sha256: &str,
    ) -> Result<(String, u64, ChunkStream)> {
        self.source(session_id)?;
        let sha256 = sha256.to_ascii_lowercase();
        if !is_sha256(&sha256) {
            return Err(Error::InvalidArgument(
                "sha256 must be 64 hexadecimal digits".into(),
            ));
        }
        let not_found = || Error::NotFound(format!("media {sha256} in session {session_id:?}"));
        let Some(mime_type) = self.inner.store.session_media(session_id, &sha256).await? else {
            return Err(not_found());
        };
        match self.inner.blobs.get(&sha256).await {
            Ok(Some((size, chunks))) => Ok((mime_type, size, chunks)),
            Ok(None) => {
                tracing::warn!(
                    session_id,
                    sha256,
                    "an attachment's blob is missing from the blob store"
                );
                Err(not_found())
            }
            Err(error) => Err(Error::Internal(format!(
                "cannot read blob {sha256}: {error}"
            ))),
        }
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
        let newest = items.len().min(limit as usize);
        let keep = fit_newest(
            &items[items.len() - newest..],
            self.inner.page_bytes,
            message_bytes,
        );
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

impl ChatSync {
    /// A page of contacts with `seq > after_seq`, in seq order, sized as in
    /// [`Self::list_chats`].
    pub async fn list_contacts(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page<Contact>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        let mut items = self
            .inner
            .store
            .list_contacts(session_id, after_seq, limit + 1)
            .await?;
        let fitting = fit_oldest(&items, self.inner.page_bytes, contact_bytes);
        let limit = limit.min(fitting as u64);
        Ok(page(&mut items, limit, after_seq, |contact| contact.seq))
    }

    /// A page of participants with `seq > after_seq` (of one chat, when named: `NotFound`
    /// unless it is stored), in seq order, sized as in [`Self::list_chats`].
    pub async fn list_participants(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page<Participant>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        self.ensure_chat(session_id, chat_id).await?;
        let mut items = self
            .inner
            .store
            .list_participants(session_id, chat_id, after_seq, limit + 1)
            .await?;
        let fitting = fit_oldest(&items, self.inner.page_bytes, participant_bytes);
        let limit = limit.min(fitting as u64);
        Ok(page(&mut items, limit, after_seq, |participant| {
            participant.seq
        }))
    }
}

/// An upper estimate of a contact's encoded size, in bytes.
fn contact_bytes(contact: &Contact) -> usize {
    contact.contact_id.len()
        + contact.display_name.len()
        + contact.phone.as_deref().map_or(0, str::len)
        + contact.matrix_id.as_deref().map_or(0, str::len)
        + 32
}

/// An upper estimate of a participant's encoded size, in bytes.
fn participant_bytes(participant: &Participant) -> usize {
    participant.chat_id.len() + participant.contact_id.len() + 64
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

/// Checks a file to send: a name of 1 to [`MAX_FILE_NAME_BYTES`] bytes, a MIME type of at most
/// 255, some bytes, and no NUL character.
fn validate_upload(upload: &AttachmentUpload) -> Result<()> {
    let name = &upload.file_name;
    if name.trim().is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a file name must be 1 to {MAX_FILE_NAME_BYTES} bytes"
        )));
    }
    if upload.mime_type.len() > 255 {
        return Err(Error::InvalidArgument(
            "a MIME type must be at most 255 bytes".into(),
        ));
    }
    if name.contains('\0') || upload.mime_type.contains('\0') {
        return Err(Error::InvalidArgument(
            "a file name or MIME type must not contain NUL characters".into(),
        ));
    }
    if upload.data.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "file {name:?} has no bytes"
        )));
    }
    Ok(())
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

/// How long a snapshot waits for its client to take the next frame before it ends the read
/// transaction and the stream (UNAVAILABLE).
pub const SNAPSHOT_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// How many snapshots may be in progress at once: half the database connections (SQLite
/// keeps 8 readers), at least 2.
pub fn snapshot_slots(database_url: &str, database_max_connections: u32) -> usize {
    let connections = if database_url.starts_with("sqlite:") {
        8
    } else {
        database_max_connections
    };
    (connections as usize / 2).max(2)
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
        + message
            .attachments
            .iter()
            .map(|file| file.file_name.len() + file.mime_type.len() + file.sha256.len() + 24)
            .sum::<usize>()
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

/// How many of `items`, from the last, fit in `budget` bytes; at least one when there is one.
fn fit_newest<T>(items: &[T], budget: usize, size: impl Fn(&T) -> usize) -> usize {
    let mut bytes = 0;
    for (taken, item) in items.iter().rev().enumerate() {
        bytes += size(item);
        if bytes > budget && taken > 0 {
            return taken;
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
