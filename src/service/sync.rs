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
//! - When the server shuts down, a running run is stopped where it is (an import transaction
//!   in flight rolls back) and persisted INTERRUPTED, its lease released; the next run
//!   resumes it, skipping what was stored. [`SyncRuns::stopped`] waits for that.
//! - **Unchanged files are skipped.** For a source that reads each chat from a file of its
//!   own ([`Source::chat_file`]), each full import of a file records its fingerprint (size,
//!   modification time, SHA-256 of its bytes, the run's limit) in the import's transaction.
//!   A later run skips a file whose size and time are unchanged, unless the recorded time was
//!   within [`RACY_MS`] of when it was read (it may have changed again within the file
//!   system's clock tick): then, as when size or time differ, the file is read and hashed, and
//!   skipped if the hash is unchanged. A skipped chat gets its CHAT_SAVED and MESSAGES_SAVED
//!   (0 messages) frames as usual. A run with a larger limit than the recorded import reads
//!   the file again.
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use crate::model::{NO_PEOPLE, NewMessage, People, SyncState, now_ms};
use crate::sources::{ChatHistory, Source, SourceChat, SourceError, apply_window};
use crate::storage::{
    FileFingerprint, FileRecord, ImportChat, LeaseKind, RunClaim, Store, SyncRecord,
};

/// Messages stored per transaction: a chat larger than this gets one MESSAGES_SAVED frame
/// per batch; smaller chats share a transaction, up to this many messages in all. A source
/// with a smaller [`Source::batch_size`] (its history page) gets batches of that size.
pub const MESSAGES_PER_BATCH: usize = 10_000;

/// The most chats that share one import transaction.
pub const CHATS_PER_BATCH: usize = 1_000;

/// How often a running run persists its last frame (followers on other replicas see progress
/// at this pace).
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// The most chats whose histories are read ahead of the chat being stored.
const READ_AHEAD: usize = 32;

/// The most file bytes read ahead (the first chat ahead is read whatever its size).
const READ_AHEAD_BYTES: u64 = 8 << 20;

/// The size a chat without a known file size counts for in [`READ_AHEAD_BYTES`].
const UNKNOWN_SIZE: u64 = 1 << 20;

/// A file whose recorded modification time is this close to when it was looked at (or
/// later) may have changed again within the same clock tick without its time changing, so
/// its size and time alone do not prove it unchanged (the "racy" case of git's index).
pub const RACY_MS: i64 = 2_000;

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
    /// Cancelled when the server shuts down: running runs stop, INTERRUPTED.
    shutdown: CancellationToken,
    /// How many runs this replica is supervising (until each has persisted its outcome).
    active: watch::Sender<usize>,
    /// New messages this replica's runs have stored since start (the
    /// `chatsync_sync_messages_total` counter).
    messages_stored: AtomicU64,
}

/// Counts a supervised run in [`SyncRuns::active`] while it lives.
struct Active(watch::Sender<usize>);

impl Active {
    fn new(active: &watch::Sender<usize>) -> Self {
        active.send_modify(|n| *n += 1);
        Self(active.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl SyncRuns {
    /// `holder` is this replica's id in leases; `shutdown` is cancelled when the server stops.
    pub fn new(holder: String, lease: Duration, shutdown: CancellationToken) -> Self {
        Self {
            runs: Mutex::default(),
            starting: tokio::sync::Mutex::default(),
            holder,
            lease,
            shutdown,
            active: watch::channel(0).0,
            messages_stored: AtomicU64::new(0),
        }
    }

    /// Completes once no run is left on this replica: after a shutdown, once every run has
    /// persisted its INTERRUPTED state.
    pub async fn stopped(&self) {
        let mut active = self.active.subscribe();
        let _ = active.wait_for(|n| *n == 0).await;
    }

    /// Sync runs this replica is running now (runs it follows for another replica do not
    /// count).
    pub fn active(&self) -> u64 {
        *self.active.borrow() as u64
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
    /// with `limit` messages per chat (`None`: the whole history), only messages sent at or
    /// after `since_ms` when given (a run attached to keeps its own limit and window).
    pub async fn start_or_attach(
        self: &Arc<Self>,
        store: &Store,
        session_id: &str,
        source: Arc<dyn Source>,
        limit: Option<usize>,
        since_ms: Option<i64>,
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
            since_ms,
            progress,
            started_at_ms,
            last_saved: Instant::now(),
            failed_chats: Vec::new(),
            files: HashMap::new(),
        };
        let span = tracing::info_span!("sync_run", session_id, sync_id);
        let active = Active::new(&self.active);
        tokio::spawn(self.clone().supervise(job, active).instrument(span));
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
    /// over) is stopped, and its attached streams end. At shutdown the job is stopped and
    /// persisted INTERRUPTED (its streams end UNAVAILABLE, from the gRPC layer).
    async fn supervise(self: Arc<Self>, job: Job, _active: Active) {
        let store = job.store.clone();
        let run = job.run.clone();
        let session_id = job.progress.session_id.clone();
        let started_at_ms = job.started_at_ms;
        let mut task = tokio::spawn(job.run().in_current_span());
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let lease_ms = self.lease.as_millis() as i64;
        let shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    task.abort();
                    if let Ok(()) = (&mut task).await {
                        // It finished before the abort took: its outcome is persisted.
                        return;
                    }
                    let record = run.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let json = serde_json::to_string(&record).unwrap_or_default();
                    let saved = store
                        .save_sync_state(
                            &session_id,
                            &SyncRecord {
                                state: SyncState::Interrupted,
                                sync_id: &record.sync_id,
                                started_at_ms,
                                finished_at_ms: Some(now_ms()),
                                error: Some("the server shut down while the run was in progress; sync again to resume"),
                                progress_json: &json,
                            },
                            &self.holder,
                        )
                        .await;
                    match saved {
                        Ok(()) => tracing::info!("sync run interrupted by shutdown"),
                        Err(error) => tracing::error!(%error, "cannot persist the interrupted sync run"),
                    }
                    self.retire(&session_id, &run);
                    return;
                }
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
    /// The contacts and membership events the history names.
    people: People,
    unplaced_lines: u64,
    /// Whether `messages` may include some already stored (storage checks them).
    may_be_stored: bool,
    /// Why the chat's history could not be read; the chat row is still stored.
    failure: Option<String>,
    /// The chat's file is unchanged since its last full import: nothing to store.
    unchanged: bool,
    /// The fingerprint to record with this chat's import (its file was read in full).
    file: Option<FileRecord>,
}

/// A chat's file, as a run finds it before reading it.
#[derive(Debug, Clone, Copy)]
struct FileStat {
    size: u64,
    mtime_ns: i64,
    /// When the size and time were read (Unix milliseconds).
    checked_at_ms: i64,
}

/// What a prefetch task brings back.
enum Fetched {
    /// The file's bytes are unchanged though its size or time changed (or were racy); the
    /// record with its new size and time.
    Unchanged(FileRecord),
    /// The history as read, and the fingerprint to record with its import.
    History(Result<ChatHistory, SourceError>, Option<FileRecord>),
}

struct Job {
    runs: Arc<SyncRuns>,
    run: Arc<Run>,
    store: Store,
    source: Arc<dyn Source>,
    /// Messages per import transaction.
    batch: usize,
    limit: Option<usize>,
    /// Only messages sent at or after this (Unix milliseconds). A run with a window records
    /// no file fingerprints: it is not a full import of any file.
    since_ms: Option<i64>,
    progress: Progress,
    started_at_ms: i64,
    last_saved: Instant,
    failed_chats: Vec<String>,
    /// The recorded fingerprints of the session's files, by locator.
    files: HashMap<String, FileRecord>,
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
                let stats = self.stat_files(&chats).await;
                // Chats whose files are unchanged since their last full import are not read.
                let unchanged: Vec<Option<u64>> = chats
                    .iter()
                    .zip(&stats)
                    .map(|(chat, stat)| self.unchanged(chat, stat.as_ref()))
                    .collect();
                let to_read: Vec<usize> = (0..chats.len())
                    .filter(|&index| unchanged[index].is_none())
                    .collect();
                let mut seen: HashSet<String> = HashSet::new();
                let mut batch: Vec<Pending> = Vec::new();
                // Histories are read (and parsed) ahead, in tasks of their own, while earlier
                // chats are stored: up to READ_AHEAD chats and READ_AHEAD_BYTES of files.
                let mut reads = to_read.iter().copied().peekable();
                let mut ahead: VecDeque<(usize, u64, JoinHandle<Fetched>)> = VecDeque::new();
                let mut ahead_bytes = 0u64;
                let read_size = |index: usize| stats[index].map_or(UNKNOWN_SIZE, |s| s.size);
                for (index, chat) in chats.iter().enumerate() {
                    let mut pending = Pending {
                        index: index as u32 + 1,
                        chat: chat.clone(),
                        messages: Vec::new(),
                        people: People::default(),
                        unplaced_lines: 0,
                        may_be_stored: false,
                        failure: None,
                        unchanged: false,
                        file: None,
                    };
                    if let Some(unplaced_lines) = unchanged[index] {
                        seen.insert(chat.chat_id.clone());
                        pending.unchanged = true;
                        pending.unplaced_lines = unplaced_lines;
                        self.queue(&mut batch, pending).await;
                        continue;
                    }
                    while let Some(&next) = reads.peek() {
                        let size = read_size(next);
                        if !ahead.is_empty()
                            && (ahead.len() >= READ_AHEAD || ahead_bytes + size > READ_AHEAD_BYTES)
                        {
                            break;
                        }
                        reads.next();
                        ahead_bytes += size;
                        ahead.push_back((next, size, self.prefetch(&chats[next], stats[next])));
                    }
                    let history = match ahead.pop_front() {
                        Some((queued, size, handle)) if queued == index => {
                            ahead_bytes -= size;
                            handle
                        }
                        // Not reached: reads are queued in chat order.
                        other => {
                            if let Some((queued, size, handle)) = other {
                                ahead_bytes -= size;
                                ahead.push_front((queued, size, handle));
                            }
                            self.prefetch(chat, stats[index])
                        }
                    };
                    let fetched = match history.await {
                        Ok(fetched) => fetched,
                        Err(error) => History(
                            Err(SourceError::Invalid(format!(
                                "history task failed: {error}"
                            ))),
                            None,
                        ),
                    };
                    match fetched {
                        Unchanged(record) => {
                            seen.insert(chat.chat_id.clone());
                            pending.unchanged = true;
                            pending.unplaced_lines = record.unplaced_lines;
                            pending.file = Some(record);
                        }
                        History(Err(error), _) => pending.failure = Some(error.to_string()),
                        History(Ok(history), file) => {
                            pending.file = file;
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
                            pending.people = history.people;
                            pending.may_be_stored = may_hold_messages;
                        }
                    }
                    self.queue(&mut batch, pending).await;
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

    /// Queues a chat for the next import transaction (a large one is stored at once, on its
    /// own, in batches), and persists the progress every [`SAVE_EVERY`].
    async fn queue(&mut self, batch: &mut Vec<Pending>, pending: Pending) {
        // A large chat is checked and stored on its own, in batches; small ones are checked
        // when their batch is stored.
        if pending.messages.len() > self.batch {
            self.flush(batch).await;
            self.import_large(pending).await;
        } else {
            let queued: usize = batch.iter().map(|p| p.messages.len()).sum();
            if queued + pending.messages.len() > self.batch || batch.len() >= CHATS_PER_BATCH {
                self.flush(batch).await;
            }
            batch.push(pending);
        }
        if self.last_saved.elapsed() > SAVE_EVERY {
            self.save(SyncState::Running, None, None).await;
        }
    }

    /// Reads the size and time of every chat's file (for sources with [`Source::chat_file`]),
    /// before any is read, and loads the session's recorded fingerprints into `self.files`.
    /// A file that cannot be looked at gets `None` (it is read, and its error reported, as
    /// usual).
    async fn stat_files(&mut self, chats: &[SourceChat]) -> Vec<Option<FileStat>> {
        let paths: Vec<Option<PathBuf>> = chats.iter().map(|c| self.source.chat_file(c)).collect();
        if paths.iter().all(Option::is_none) {
            return vec![None; chats.len()];
        }
        match self.store.source_files(&self.progress.session_id).await {
            Ok(files) => self.files = files,
            Err(error) => {
                tracing::warn!(%error, "cannot read file fingerprints; reading every file")
            }
        }
        tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|path| path.as_deref().and_then(stat_file))
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![None; chats.len()])
    }

    /// `Some(unplaced lines)` when the chat's file is proven unchanged by its size and time
    /// alone since an import that covered this run's limit.
    fn unchanged(&self, chat: &SourceChat, stat: Option<&FileStat>) -> Option<u64> {
        let record = self.covering_record(chat)?;
        let stat = stat?;
        let same = record.fingerprint.size == stat.size
            && record.fingerprint.mtime_ns == stat.mtime_ns
            && !is_racy(record);
        same.then_some(record.unplaced_lines)
    }

    /// The chat's recorded fingerprint, when its import covered this run's limit.
    fn covering_record(&self, chat: &SourceChat) -> Option<&FileRecord> {
        let record = self.files.get(&chat.locator)?;
        let covers = match (record.limit_per_chat, self.limit) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(recorded), Some(wanted)) => wanted as u64 <= recorded,
        };
        (covers && record.chat_id == chat.chat_id).then_some(record)
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

    /// Reads a chat's history in a task of its own, so it can run ahead of the writes. A chat
    /// with a file (`stat` was read before) gets the fingerprint to record; one whose file's
    /// size or time changed since a covering import is first hashed, and not read further
    /// when its bytes are unchanged.
    fn prefetch(&self, chat: &SourceChat, stat: Option<FileStat>) -> JoinHandle<Fetched> {
        let source = self.source.clone();
        let chat = chat.clone();
        let limit = self.limit;
        let since_ms = self.since_ms;
        let known = self.covering_record(&chat).cloned();
        let path = self.source.chat_file(&chat);
        // Every source's history is cut to the window and the limit here, whatever the
        // source did with them.
        let fetch = move |source: Arc<dyn Source>, chat: SourceChat| async move {
            let mut history = source.fetch_history_since(&chat, limit, since_ms).await;
            if let Ok(read) = &mut history {
                apply_window(&mut read.messages, limit, since_ms);
            }
            history
        };
        let task = async move {
            let (Some(path), Some(stat)) = (path, stat) else {
                return History(fetch(source, chat).await, None);
            };
            let mut hashed = None;
            if let Some(known) = known {
                let file = path.clone();
                let digest = tokio::task::spawn_blocking(move || hash_file(&file))
                    .await
                    .ok()
                    .flatten();
                if digest == Some(known.fingerprint.sha256) {
                    return Unchanged(FileRecord {
                        fingerprint: FileFingerprint {
                            size: stat.size,
                            mtime_ns: stat.mtime_ns,
                            sha256: known.fingerprint.sha256,
                        },
                        checked_at_ms: stat.checked_at_ms,
                        ..known
                    });
                }
                hashed = digest;
            }
            let history = fetch(source, chat.clone()).await;
            let Ok(read) = &history else {
                return History(history, None);
            };
            // A windowed read is not a full import of the file: nothing to record (a record
            // left by an earlier full import stays, and still describes what is stored).
            if since_ms.is_some() {
                return History(history, None);
            }
            // The hash of the bytes parsed, when the source knows it; else the file's now
            // (read after the size and time, so a later change is seen by the next run).
            let sha256 = match read.content_sha256.or(hashed) {
                Some(sha256) => Some(sha256),
                None => tokio::task::spawn_blocking(move || hash_file(&path))
                    .await
                    .ok()
                    .flatten(),
            };
            let record = sha256.map(|sha256| FileRecord {
                chat_id: chat.chat_id.clone(),
                fingerprint: FileFingerprint {
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    sha256,
                },
                checked_at_ms: stat.checked_at_ms,
                limit_per_chat: limit.map(|limit| limit as u64),
                unplaced_lines: read.unplaced_lines,
            });
            History(history, record)
        };
        tokio::spawn(task.in_current_span())
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
        // Chats whose files are unchanged store nothing (but a refreshed fingerprint).
        let items: Vec<ImportChat<'_>> = batch
            .iter()
            .filter(|pending| !pending.unchanged)
            .map(|pending| ImportChat {
                chat_id: &pending.chat.chat_id,
                name: &pending.chat.name,
                messages: &pending.messages,
                may_be_stored: pending.may_be_stored,
                people: &pending.people,
            })
            .collect();
        let files: Vec<(&str, &FileRecord)> = batch
            .iter()
            .filter_map(|pending| Some((pending.chat.locator.as_str(), pending.file.as_ref()?)))
            .collect();
        let result = if items.is_empty() && files.is_empty() {
            Ok(Vec::new())
        } else {
            self.store
                .import_with_files(&self.progress.session_id, &items, &files)
                .await
        };
        drop(items);
        drop(files);
        let result = result.map_err(|error| error.public_text());
        let mut position = 0;
        for pending in batch.drain(..) {
            self.begin_chat(&pending);
            let stored = if pending.unchanged {
                0
            } else {
                position += 1;
                result
                    .as_ref()
                    .ok()
                    .and_then(|counts| counts.get(position - 1).copied())
                    .unwrap_or_default()
            };
            match (&result, pending.failure) {
                (Err(error), _) => self.fail_chat(error.clone()),
                (Ok(_), Some(failure)) => {
                    self.publish(Stage::ChatSaved);
                    self.fail_chat(failure);
                }
                (Ok(_), None) => {
                    self.publish(Stage::ChatSaved);
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
        let batches = pending.messages.len().div_ceil(self.batch);
        for (number, slice) in pending.messages.chunks(self.batch).enumerate() {
            // The chat's people go with the last batch, after its messages.
            let people = if number + 1 == batches {
                &pending.people
            } else {
                &NO_PEOPLE
            };
            let item = ImportChat {
                chat_id: &pending.chat.chat_id,
                name: &pending.chat.name,
                messages: slice,
                may_be_stored: pending.may_be_stored,
                people,
            };
            // The file's fingerprint goes with the last batch: only a whole import counts.
            let file: Vec<(&str, &FileRecord)> = match &pending.file {
                Some(record) if number + 1 == batches => {
                    vec![(pending.chat.locator.as_str(), record)]
                }
                _ => Vec::new(),
            };
            match self
                .store
                .import_with_files(&self.progress.session_id, &[item], &file)
                .await
            {
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

use Fetched::{History, Unchanged};

/// Whether a recorded size and time cannot prove the file unchanged: the file was modified
/// within [`RACY_MS`] of when it was looked at.
fn is_racy(record: &FileRecord) -> bool {
    record.fingerprint.mtime_ns >= record.checked_at_ms.saturating_sub(RACY_MS) * 1_000_000
}

/// A file's size and modification time, read now; `None` when it cannot be looked at.
fn stat_file(path: &Path) -> Option<FileStat> {
    let checked_at_ms = now_ms();
    let metadata = std::fs::metadata(path).ok()?;
    let mtime = metadata.modified().ok()?;
    let mtime_ns = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_nanos()).ok()?,
    };
    Some(FileStat {
        size: metadata.len(),
        mtime_ns,
        checked_at_ms,
    })
}

/// The SHA-256 of a file's bytes; `None` when it cannot be read.
fn hash_file(path: &Path) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize().into())
}
