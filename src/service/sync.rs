//! Sync runs: one background job per session that pulls chats and history from the source
//! into storage and publishes progress frames.
//!
//! Contract (`../shared/DESIGN.md`, SyncChats):
//! - Frames go STARTED, then per chat CHAT_SAVED and one MESSAGES_SAVED per stored batch (or
//!   CHAT_FAILED), then COMPLETED; or FAILED when the source cannot list its chats.
//! - The run belongs to the server: it is a spawned task, and callers only watch it. A caller
//!   that goes away changes nothing; a second caller attaches and first gets a snapshot of the
//!   last frame.
//! - The run's state is persisted (`sessions.sync_*`), at start, about twice a second, and at
//!   the end, so GetSyncStatus survives restarts.
//! - One run per session in the cluster: a run starts only under the session's sync lease,
//!   renewed while it runs ([`SyncRuns::supervise`]). A caller on another replica follows the
//!   persisted progress ([`follow`]). A run whose lease expired (its replica died) is
//!   INTERRUPTED; any replica may start the next one.
//! - A run that panics ends FAILED, with a FAILED frame, and the session can sync again.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::model::{NewMessage, now_ms};
use crate::sources::{ChatHistory, Source, SourceChat, SourceError};
use crate::storage::{ImportChat, LeaseKind, RunClaim, Store, SyncRecord, SyncState};

/// Messages stored per transaction: a chat larger than this gets one MESSAGES_SAVED frame
/// per batch; smaller chats share a transaction, up to this many messages in all. A source
/// with a smaller [`Source::batch_size`] (its history page) gets batches of that size.
pub const MESSAGES_PER_BATCH: usize = 10_000;

/// The most chats that share one import transaction.
pub const CHATS_PER_BATCH: usize = 1_000;

/// How often a running run persists its last frame (followers on other replicas see progress
/// at this pace).
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// The limit SyncChats applies when the request gives none.
pub const DEFAULT_LIMIT_PER_CHAT: u32 = 100;

/// What a frame reports. See `SyncStage` in the proto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Stage {
    #[default]
    Started,
    ChatSaved,
    MessagesSaved,
    ChatFailed,
    Completed,
    Failed,
}

/// One progress frame. Counts of messages are new messages stored (already stored ones do
/// not count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Progress {
    pub sync_id: String,
    pub session_id: String,
    pub n_chats: u32,
    /// 1-based; 0 in the STARTED frame.
    pub current_chat: u32,
    pub chat_id: String,
    pub messages_synced: u64,
    pub total_messages_synced: u64,
    pub stage: Stage,
    pub error: String,
    pub unplaced_lines: u64,
    pub total_unplaced_lines: u64,
}

/// A caller's view of a run: an optional snapshot (for callers that attached to a running
/// run), then every later frame.
pub struct Attachment {
    pub snapshot: Option<Progress>,
    pub frames: broadcast::Receiver<Progress>,
}

struct Run {
    last: Mutex<Progress>,
    frames: broadcast::Sender<Progress>,
}

impl Run {
    fn publish(&self, frame: Progress) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = frame.clone();
        // Nobody listening is fine: the run belongs to the server.
        let _ = self.frames.send(frame);
    }

    fn sync_id(&self) -> String {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_id
            .clone()
    }

    fn attach(&self) -> Attachment {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        Attachment {
            snapshot: Some(last.clone()),
            frames: self.frames.subscribe(),
        }
    }
}

/// The sync runs this replica runs, at most one per session, and the cluster-wide claim on
/// them: a run is started only under the session's sync lease (see
/// [`crate::storage::sessions`]); a caller on a replica that does not hold it follows the
/// holder's persisted progress instead.
pub struct SyncRuns {
    runs: Mutex<HashMap<String, Arc<Run>>>,
    /// Serialises "attach or claim" within this replica.
    starting: tokio::sync::Mutex<()>,
    /// This replica's id, the holder named in its leases.
    holder: String,
    /// How long a lease lasts without renewal; it is renewed every third of that.
    lease: Duration,
    /// New messages this replica's runs have stored since start (the
    /// `chatsync_sync_messages_total` counter).
    messages_stored: AtomicU64,
}

impl SyncRuns {
    pub fn new(holder: String, lease: Duration) -> Self {
        Self {
            runs: Mutex::default(),
            starting: tokio::sync::Mutex::default(),
            holder,
            lease,
            messages_stored: AtomicU64::new(0),
        }
    }

    /// Sync runs this replica is running now (runs it follows for another replica do not
    /// count).
    pub fn active(&self) -> u64 {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// New messages this replica's runs have stored since the process started.
    pub fn messages_stored(&self) -> u64 {
        self.messages_stored.load(Ordering::Relaxed)
    }

    /// The last frame of the session's run, if this replica is running one.
    pub fn current(&self, session_id: &str) -> Option<Progress> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(session_id)
            .map(|run| run.last.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Attaches to the session's running run, on this replica or another, or starts one
    /// with `limit` messages per chat (`None`: the whole history).
    pub async fn start_or_attach(
        self: &Arc<Self>,
        store: &Store,
        session_id: &str,
        source: Arc<dyn Source>,
        limit: Option<usize>,
    ) -> crate::error::Result<Attachment> {
        let _starting = self.starting.lock().await;
        if let Some(run) = self.local(session_id) {
            return Ok(run.attach());
        }
        let sync_id = uuid::Uuid::new_v4().to_string();
        let started_at_ms = now_ms();
        let progress = Progress {
            sync_id: sync_id.clone(),
            session_id: session_id.to_owned(),
            ..Progress::default()
        };
        let json = serde_json::to_string(&progress).unwrap_or_default();
        let record = SyncRecord {
            state: SyncState::Running,
            sync_id: &sync_id,
            started_at_ms,
            finished_at_ms: None,
            error: None,
            progress_json: &json,
        };
        let lease_ms = self.lease.as_millis() as i64;
        match store
            .claim_sync_run(session_id, &self.holder, lease_ms, &record)
            .await?
        {
            RunClaim::Running { sync_id } => {
                return Ok(follow(store.clone(), session_id, sync_id, self.lease).await);
            }
            RunClaim::Started => {}
        }
        let (sender, receiver) = broadcast::channel(4_096);
        let run = Arc::new(Run {
            last: Mutex::new(progress.clone()),
            frames: sender,
        });
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session_id.to_owned(), run.clone());
        let job = Job {
            runs: self.clone(),
            run: run.clone(),
            store: store.clone(),
            batch: source.batch_size().clamp(1, MESSAGES_PER_BATCH),
            source,
            limit,
            progress,
            started_at_ms,
            last_saved: Instant::now(),
            failed_chats: Vec::new(),
        };
        let span = tracing::info_span!("sync_run", session_id, sync_id);
        tokio::spawn(self.clone().supervise(job).instrument(span));
        Ok(Attachment {
            snapshot: None,
            frames: receiver,
        })
    }

    fn local(&self, session_id: &str) -> Option<Arc<Run>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(session_id).cloned()
    }

    /// Removes `run` from the registry, if it is still the session's.
    fn retire(&self, session_id: &str, run: &Arc<Run>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs
            .get(session_id)
            .is_some_and(|current| Arc::ptr_eq(current, run))
        {
            runs.remove(session_id);
        }
    }

    /// Runs a job while renewing its lease. A job that panics ends FAILED; a job whose lease
    /// was lost (this replica was cut off for longer than the lease, and another replica took
    /// over) is stopped, and its attached streams end.
    async fn supervise(self: Arc<Self>, job: Job) {
        let store = job.store.clone();
        let run = job.run.clone();
        let session_id = job.progress.session_id.clone();
        let started_at_ms = job.started_at_ms;
        let mut task = tokio::spawn(job.run().in_current_span());
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let lease_ms = self.lease.as_millis() as i64;
        loop {
            tokio::select! {
                outcome = &mut task => {
                    if let Err(error) = outcome {
                        let message = format!("the sync run stopped unexpectedly: {error}");
                        tracing::error!(error = %message, "sync run panicked");
                        let mut record = run.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        record.stage = Stage::Failed;
                        record.error = message.clone();
                        let json = serde_json::to_string(&record).unwrap_or_default();
                        let saved = store
                            .save_sync_state(
                                &session_id,
                                &SyncRecord {
                                    state: SyncState::Failed,
                                    sync_id: &record.sync_id,
                                    started_at_ms,
                                    finished_at_ms: Some(now_ms()),
                                    error: Some(&message),
                                    progress_json: &json,
                                },
                                &self.holder,
                            )
                            .await;
                        if let Err(error) = saved {
                            tracing::error!(%error, "cannot persist the failed sync run");
                        }
                        self.retire(&session_id, &run);
                        run.publish(record);
                    }
                    return;
                }
                _ = renew.tick() => {
                    match store.renew_lease(&session_id, LeaseKind::Sync, &self.holder, lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // The job's own final save releases the lease: then let it finish.
                            let finished = store.session(&session_id).await.is_ok_and(|record| {
                                record.sync_id.as_deref() == Some(run.sync_id().as_str())
                                    && matches!(record.sync_state, SyncState::Succeeded | SyncState::Failed)
                            });
                            if finished {
                                let _ = (&mut task).await;
                                return;
                            }
                            tracing::error!("sync run lost its lease to another replica; stopping it");
                            task.abort();
                            self.retire(&session_id, &run);
                            return;
                        }
                        Err(error) => tracing::warn!(%error, "cannot renew the sync run's lease"),
                    }
                }
            }
        }
    }
}

/// Follows a run held by another replica: the snapshot is its persisted progress, then each
/// newly persisted frame, then its outcome. Progress arrives through the database: the holder
/// persists it and wakes followers (`chatsync_runs` on PostgreSQL). When the holder's lease
/// expires, the run is marked INTERRUPTED and the frames end without an outcome (the stream
/// then ends UNAVAILABLE).
async fn follow(store: Store, session_id: &str, sync_id: String, lease: Duration) -> Attachment {
    let mut changes = store.run_changes(session_id);
    let persisted = |record: &crate::storage::SessionRecord| -> Option<Progress> {
        record
            .sync_progress
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
    };
    let snapshot = match store.session(session_id).await {
        Ok(record) => persisted(&record),
        Err(_) => None,
    }
    .unwrap_or_else(|| Progress {
        sync_id: sync_id.clone(),
        session_id: session_id.to_owned(),
        ..Progress::default()
    });
    let (sender, receiver) = broadcast::channel(256);
    let session_id = session_id.to_owned();
    let mut last = snapshot.clone();
    tokio::spawn(
        async move {
            let mut check = tokio::time::interval(lease / 3);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = check.tick() => {
                        match store.interrupt_if_expired(&session_id, false).await {
                            Ok(true) => {
                                tracing::warn!("the followed sync run's replica stopped; run interrupted");
                                return;
                            }
                            Ok(false) => {}
                            Err(error) => tracing::warn!(%error, "cannot check the sync run's lease"),
                        }
                    }
                }
                if sender.receiver_count() == 0 {
                    return;
                }
                let record = match store.session(&session_id).await {
                    Ok(record) => record,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the followed sync run");
                        continue;
                    }
                };
                if record.sync_id.as_deref() != Some(sync_id.as_str()) {
                    return;
                }
                if let Some(progress) = persisted(&record)
                    && progress != last
                {
                    last = progress.clone();
                    let _ = sender.send(progress);
                }
                if record.sync_state != SyncState::Running {
                    // A final state carries its final frame (COMPLETED or FAILED), sent above;
                    // INTERRUPTED has none, and the frames end.
                    return;
                }
            }
        }
        .instrument(tracing::info_span!("sync_follow")),
    );
    Attachment {
        snapshot: Some(snapshot),
        frames: receiver,
    }
}

/// A chat read from the source, queued for the next import transaction.
struct Pending {
    /// 1-based position in the run.
    index: u32,
    chat: SourceChat,
    /// Messages not stored yet.
    messages: Vec<NewMessage>,
    unplaced_lines: u64,
    /// Whether `messages` may include some already stored (storage checks them).
    may_be_stored: bool,
    /// Why the chat's history could not be read; the chat row is still stored.
    failure: Option<String>,
}

struct Job {
    runs: Arc<SyncRuns>,
    run: Arc<Run>,
    store: Store,
    source: Arc<dyn Source>,
    /// Messages per import transaction.
    batch: usize,
    limit: Option<usize>,
    progress: Progress,
    started_at_ms: i64,
    last_saved: Instant,
    failed_chats: Vec<String>,
}

impl Job {
    async fn run(mut self) {
        let started = Instant::now();
        self.save(SyncState::Running, None, None).await;
        match self.source.list_chats().await {
            Err(error) => {
                tracing::error!(%error, "sync run failed: cannot list chats");
                self.progress.error = error.to_string();
                self.finish(Stage::Failed, SyncState::Failed, Some(error.to_string()))
                    .await;
            }
            Ok(chats) => {
                self.progress.n_chats = chats.len() as u32;
                self.publish(Stage::Started);
                let stored_at_start = self.stored_chat_ids().await;
                let mut seen: HashSet<String> = HashSet::new();
                let mut batch: Vec<Pending> = Vec::new();
                // The next chat's history is read (and parsed) while this one is handled.
                let mut next = chats.first().map(|chat| self.prefetch(chat));
                for (index, chat) in chats.iter().enumerate() {
                    let history = next.take().unwrap_or_else(|| self.prefetch(chat));
                    next = chats.get(index + 1).map(|chat| self.prefetch(chat));
                    let mut pending = Pending {
                        index: index as u32 + 1,
                        chat: chat.clone(),
                        messages: Vec::new(),
                        unplaced_lines: 0,
                        may_be_stored: false,
                        failure: None,
                    };
                    match history.await {
                        Err(error) => {
                            pending.failure = Some(format!("history task failed: {error}"))
                        }
                        Ok(Err(error)) => pending.failure = Some(error.to_string()),
                        Ok(Ok(history)) => {
                            pending.unplaced_lines = history.unplaced_lines;
                            let messages = history.messages;
                            // A chat met earlier in this run (the same chat exported twice)
                            // holds what that copy stored.
                            let seen_before = !seen.insert(chat.chat_id.clone());
                            // A chat absent when the run started, and not met since, holds
                            // no messages: no need to read its provider ids. A live source
                            // may store into any chat meanwhile, so its chats are all checked.
                            let may_hold_messages = seen_before
                                || self.source.is_live()
                                || stored_at_start
                                    .as_ref()
                                    .is_none_or(|ids| ids.contains(&chat.chat_id));
                            pending.messages = messages;
                            pending.may_be_stored = may_hold_messages;
                        }
                    }
                    // A large chat is checked and stored on its own, in batches; small ones
                    // are checked when their batch is stored.
                    if pending.messages.len() > self.batch {
                        self.flush(&mut batch).await;
                        self.import_large(pending).await;
                    } else {
                        let queued: usize = batch.iter().map(|p| p.messages.len()).sum();
                        if queued + pending.messages.len() > self.batch
                            || batch.len() >= CHATS_PER_BATCH
                        {
                            self.flush(&mut batch).await;
                        }
                        batch.push(pending);
                    }
                    if self.last_saved.elapsed() > SAVE_EVERY {
                        self.save(SyncState::Running, None, None).await;
                    }
                }
                self.flush(&mut batch).await;
                self.progress.error = if self.failed_chats.is_empty() {
                    String::new()
                } else {
                    format!(
                        "{} of {} chats failed: {}",
                        self.failed_chats.len(),
                        chats.len(),
                        self.failed_chats.join(", ")
                    )
                };
                let error = Some(self.progress.error.clone()).filter(|e| !e.is_empty());
                self.finish(Stage::Completed, SyncState::Succeeded, error)
                    .await;
                tracing::info!(
                    n_chats = chats.len(),
                    messages = self.progress.total_messages_synced,
                    unplaced_lines = self.progress.total_unplaced_lines,
                    failed_chats = self.failed_chats.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sync run completed"
                );
            }
        }
    }

    /// Ends the run: persists the final state first, then retires the run (a caller that comes
    /// later starts a new one) and publishes the last frame. A caller that sees
    /// COMPLETED or FAILED therefore already reads the final state from GetSyncStatus.
    async fn finish(&mut self, stage: Stage, state: SyncState, error: Option<String>) {
        let mut frame = self.progress.clone();
        frame.stage = stage;
        self.save_frame(state, Some(now_ms()), error, &frame).await;
        self.runs.retire(&self.progress.session_id, &self.run);
        self.run.publish(frame);
    }

    /// Reads a chat's history in a task of its own, so it can run ahead of the writes.
    fn prefetch(&self, chat: &SourceChat) -> JoinHandle<Result<ChatHistory, SourceError>> {
        let source = self.source.clone();
        let chat = chat.clone();
        let limit = self.limit;
        tokio::spawn(async move { source.fetch_history(&chat, limit).await }.in_current_span())
    }

    /// The ids of the chats stored when the run starts, or `None` when they cannot be read
    /// (then every chat is checked for stored messages).
    async fn stored_chat_ids(&self) -> Option<HashSet<String>> {
        let mut ids = HashSet::new();
        let mut after_seq = 0;
        loop {
            let page = match self
                .store
                .list_chats(&self.progress.session_id, after_seq, 1_000)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "cannot list stored chats; checking every chat");
                    return None;
                }
            };
            let Some(last) = page.last() else {
                return Some(ids);
            };
            after_seq = last.seq;
            ids.extend(page.into_iter().map(|chat| chat.chat_id));
        }
    }

    /// Stores the queued chats in one transaction, then publishes their frames in order:
    /// CHAT_SAVED, then MESSAGES_SAVED (or CHAT_FAILED) per chat.
    async fn flush(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let items: Vec<ImportChat<'_>> = batch
            .iter()
            .map(|pending| ImportChat {
                chat_id: &pending.chat.chat_id,
                name: &pending.chat.name,
                messages: &pending.messages,
                may_be_stored: pending.may_be_stored,
            })
            .collect();
        let result = self.store.import(&self.progress.session_id, &items).await;
        drop(items);
        let result = result.map_err(|error| error.public_text());
        for (position, pending) in batch.drain(..).enumerate() {
            self.begin_chat(&pending);
            match (&result, pending.failure) {
                (Err(error), _) => self.fail_chat(error.clone()),
                (Ok(_), Some(failure)) => {
                    self.publish(Stage::ChatSaved);
                    self.fail_chat(failure);
                }
                (Ok(counts), None) => {
                    self.publish(Stage::ChatSaved);
                    let stored = counts.get(position).copied().unwrap_or_default();
                    self.progress.messages_synced = stored;
                    self.progress.total_messages_synced += stored;
                    self.runs
                        .messages_stored
                        .fetch_add(stored, Ordering::Relaxed);
                    self.publish(Stage::MessagesSaved);
                }
            }
        }
    }

    /// Stores a chat too large for one batch on its own, one MESSAGES_SAVED per batch.
    async fn import_large(&mut self, pending: Pending) {
        self.begin_chat(&pending);
        for (number, slice) in pending.messages.chunks(self.batch).enumerate() {
            let item = ImportChat {
                chat_id: &pending.chat.chat_id,
                name: &pending.chat.name,
                messages: slice,
                may_be_stored: pending.may_be_stored,
            };
            match self.store.import(&self.progress.session_id, &[item]).await {
                Ok(counts) => {
                    if number == 0 {
                        self.publish(Stage::ChatSaved);
                    }
                    let stored = counts.first().copied().unwrap_or_default();
                    self.progress.messages_synced += stored;
                    self.progress.total_messages_synced += stored;
                    self.runs
                        .messages_stored
                        .fetch_add(stored, Ordering::Relaxed);
                    self.publish(Stage::MessagesSaved);
                }
                Err(error) => {
                    self.fail_chat(error.public_text());
                    return;
                }
            }
        }
    }

    /// Points the progress at a chat.
    fn begin_chat(&mut self, pending: &Pending) {
        self.progress.current_chat = pending.index;
        self.progress.chat_id = pending.chat.chat_id.clone();
        self.progress.messages_synced = 0;
        self.progress.unplaced_lines = pending.unplaced_lines;
        self.progress.total_unplaced_lines += pending.unplaced_lines;
        self.progress.error.clear();
    }

    fn fail_chat(&mut self, error: String) {
        tracing::warn!(chat_id = self.progress.chat_id, %error, "chat failed");
        self.progress.error = error;
        self.failed_chats.push(self.progress.chat_id.clone());
        self.publish(Stage::ChatFailed);
    }

    fn publish(&self, stage: Stage) {
        let mut frame = self.progress.clone();
        frame.stage = stage;
        self.run.publish(frame);
    }

    /// Persists the running state with the last published frame.
    async fn save(&mut self, state: SyncState, finished_at_ms: Option<i64>, error: Option<String>) {
        let progress = self
            .run
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.save_frame(state, finished_at_ms, error, &progress)
            .await;
    }

    async fn save_frame(
        &mut self,
        state: SyncState,
        finished_at_ms: Option<i64>,
        error: Option<String>,
        progress: &Progress,
    ) {
        self.last_saved = Instant::now();
        let json = serde_json::to_string(progress).unwrap_or_default();
        if let Err(save_error) = self
            .store
            .save_sync_state(
                &self.progress.session_id,
                &SyncRecord {
                    state,
                    sync_id: &self.progress.sync_id,
                    started_at_ms: self.started_at_ms,
                    finished_at_ms,
                    error: error.as_deref(),
                    progress_json: &json,
                },
                &self.runs.holder,
            )
            .await
        {
            tracing::error!(error = %save_error, "cannot persist sync state");
        }
    }
}
