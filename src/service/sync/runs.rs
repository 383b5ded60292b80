//! The run registry: at most one run per session on this replica, started under the
//! session's sync lease and supervised (renewals, shutdown, panics); a caller on a replica
//! that does not hold the run follows the holder's persisted progress.
use super::job::{Job, Reader, Writer};
use super::*;

pub(super) struct Run {
    pub(super) last: Mutex<Progress>,
    pub(super) frames: broadcast::Sender<Progress>,
}

impl Run {
    pub(super) fn publish(&self, frame: Progress) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = frame.clone();
        // Nobody listening is fine: the run belongs to the server.
        let _ = self.frames.send(frame);
    }

    pub(super) fn sync_id(&self) -> String {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_id
            .clone()
    }

    pub(super) fn attach(&self) -> RunHandle {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        RunHandle {
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
    pub(super) holder: String,
    /// How long a lease lasts without renewal; it is renewed every third of that.
    lease: Duration,
    /// Cancelled when the server shuts down: running runs stop, INTERRUPTED.
    shutdown: CancellationToken,
    /// How many runs this replica is supervising (until each has persisted its outcome).
    active: watch::Sender<usize>,
    /// New messages this replica's runs have stored since start (the
    /// `chatsync_sync_messages_total` counter).
    pub(super) messages_stored: AtomicU64,
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
    ) -> crate::error::Result<RunHandle> {
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
        let fence = match store
            .claim_sync_run(session_id, &self.holder, lease_ms, &record)
            .await?
        {
            RunClaim::Running { sync_id } => {
                return Ok(follow(store.clone(), session_id, sync_id, self.lease).await);
            }
            RunClaim::Started(fence) => fence,
        };
        let keeper = LeaseKeeper::start(store.clone(), session_id, fence, self.lease);
        let (sender, receiver) = broadcast::channel(4_096);
        let run = Arc::new(Run {
            last: Mutex::new(progress.clone()),
            frames: sender,
        });
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session_id.to_owned(), run.clone());
        let batch = source
            .capabilities()
            .batch_size
            .clamp(1, MESSAGES_PER_BATCH);
        let job = Job {
            reader: Reader {
                session_id: session_id.to_owned(),
                store: keeper.store(),
                source,
                batch,
                limit,
                since_ms,
                files: HashMap::new(),
            },
            writer: Writer {
                runs: self.clone(),
                run: run.clone(),
                store: keeper.store(),
                fence: keeper.fence().clone(),
                lost: keeper.lost(),
                batch,
                progress,
                started_at_ms,
                last_saved: Instant::now(),
                failed_chats: Vec::new(),
            },
        };
        let span = tracing::info_span!("sync_run", session_id, sync_id);
        let active = Active::new(&self.active);
        tokio::spawn(self.clone().supervise(job, keeper, active).instrument(span));
        Ok(RunHandle {
            snapshot: None,
            frames: receiver,
        })
    }

    fn local(&self, session_id: &str) -> Option<Arc<Run>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(session_id).cloned()
    }

    /// Removes `run` from the registry, if it is still the session's.
    pub(super) fn retire(&self, session_id: &str, run: &Arc<Run>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs
            .get(session_id)
            .is_some_and(|current| Arc::ptr_eq(current, run))
        {
            runs.remove(session_id);
        }
    }

    /// Runs a job while its [`LeaseKeeper`] keeps its lease. A job that panics ends FAILED; a
    /// job whose lease was lost (this replica was paused or cut off for longer than the
    /// lease, or another replica took over; see [`LeaseKeeper`]) is stopped, writes nothing
    /// more (its writes are fenced), and its attached streams end UNAVAILABLE. At shutdown the
    /// job is stopped and persisted INTERRUPTED (its streams end UNAVAILABLE, from the gRPC
    /// layer).
    async fn supervise(self: Arc<Self>, job: Job, keeper: LeaseKeeper, _active: Active) {
        let store = job.writer.store.clone();
        let fence = job.writer.fence.clone();
        let lost = keeper.lost();
        let run = job.writer.run.clone();
        let session_id = job.writer.progress.session_id.clone();
        let started_at_ms = job.writer.started_at_ms;
        let mut task = tokio::spawn(job.run().in_current_span());
        let shutdown = self.shutdown.clone();
        // The job keeps the lease (`keeper`, dropped with this task) until one of these ends it.
        let _keeper = keeper;
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
                        &fence,
                    )
                    .await;
                match saved {
                    Ok(()) => tracing::info!("sync run interrupted by shutdown"),
                    Err(error) => tracing::error!(%error, "cannot persist the interrupted sync run"),
                }
                self.retire(&session_id, &run);
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
                            &fence,
                        )
                        .await;
                    if let Err(error) = saved {
                        tracing::error!(%error, "cannot persist the failed sync run");
                    }
                    self.retire(&session_id, &run);
                    run.publish(record);
                }
            }
            _ = lost.cancelled() => {
                // The job's own final save releases the lease: then let it finish.
                let finished = store.session(&session_id).await.is_ok_and(|record| {
                    record.sync_id.as_deref() == Some(run.sync_id().as_str())
                        && matches!(record.sync_state, SyncState::Succeeded | SyncState::Failed)
                });
                if finished {
                    let _ = (&mut task).await;
                } else {
                    tracing::error!(epoch = fence.epoch, "sync run lost its lease (another replica took over, or this one stalled past it); stopping it");
                    task.abort();
                    self.retire(&session_id, &run);
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
async fn follow(store: Store, session_id: &str, sync_id: String, lease: Duration) -> RunHandle {
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
    RunHandle {
        snapshot: Some(snapshot),
        frames: receiver,
    }
}
