//! The import job of one sync run: lists the chats, reads their histories ahead (skipping
//! unchanged files), stores them in batched transactions, and publishes the frames.
use super::fingerprint::hash_file;
use super::runs::Run;
use super::*;
use Fetched::{History, Unchanged};

/// A chat read from the source, queued for the next import transaction.
pub(super) struct Pending {
    /// 1-based position in the run.
    pub(super) index: u32,
    pub(super) chat: SourceChat,
    /// Messages not stored yet.
    pub(super) messages: Vec<NewMessage>,
    /// The contacts and membership events the history names.
    pub(super) people: People,
    pub(super) unplaced_lines: u64,
    /// Whether `messages` may include some already stored (storage checks them).
    pub(super) may_be_stored: bool,
    /// Why the chat's history could not be read; the chat row is still stored.
    pub(super) failure: Option<String>,
    /// The chat's file is unchanged since its last full import: nothing to store.
    pub(super) unchanged: bool,
    /// The fingerprint to record with this chat's import (its file was read in full).
    pub(super) file: Option<FileRecord>,
}

/// A chat's file, as a run finds it before reading it.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileStat {
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    /// When the size and time were read (Unix milliseconds).
    pub(super) checked_at_ms: i64,
}

/// What a prefetch task brings back.
pub(super) enum Fetched {
    /// The file's bytes are unchanged though its size or time changed (or were racy); the
    /// record with its new size and time.
    Unchanged(FileRecord),
    /// The history as read, and the fingerprint to record with its import.
    History(Result<ChatHistory, SourceError>, Option<FileRecord>),
}

/// One sync run's job: a reader that lists and reads the chats into batches, and a writer
/// that stores each batch in its own transaction and publishes its frames. They run side by
/// side, so a batch is read and parsed while the one before it is stored.
pub(super) struct Job {
    pub(super) reader: Reader,
    pub(super) writer: Writer,
}

/// The reading half of a [`Job`].
pub(super) struct Reader {
    pub(super) session_id: String,
    /// For reads only (the stored chats, the recorded fingerprints).
    pub(super) store: Store,
    pub(super) source: Arc<dyn Source>,
    /// Messages per import transaction.
    pub(super) batch: usize,
    pub(super) limit: Option<usize>,
    /// Only messages sent at or after this (Unix milliseconds). A run with a window records
    /// no file fingerprints: it is not a full import of any file.
    pub(super) since_ms: Option<i64>,
    /// The recorded fingerprints of the session's files, by locator.
    pub(super) files: HashMap<String, FileRecord>,
}

/// The storing half of a [`Job`]: owns the run's progress and frames.
pub(super) struct Writer {
    pub(super) runs: Arc<SyncRuns>,
    pub(super) run: Arc<Run>,
    /// Fenced by the run's lease: a write after the lease was lost is refused.
    pub(super) store: Store,
    /// The run's lease.
    pub(super) fence: Fence,
    /// Cancelled when the lease is lost (a write was refused, or the keeper gave up): the run
    /// publishes nothing more, and its supervisor stops it (its streams end UNAVAILABLE).
    pub(super) lost: CancellationToken,
    /// Messages per import transaction.
    pub(super) batch: usize,
    pub(super) progress: Progress,
    pub(super) started_at_ms: i64,
    pub(super) last_saved: Instant,
    pub(super) failed_chats: Vec<String>,
}

/// What the reader hands the writer, in run order.
enum Work {
    /// Chats that share one import transaction.
    Batch(Vec<Pending>),
    /// A chat larger than a batch: stored on its own, in batches.
    Large(Pending),
}

/// The writer's task, aborted when dropped: a run stopped where it is (shutdown, a lost
/// lease) rolls back the import transaction in flight.
struct Storing(JoinHandle<Writer>);

impl Drop for Storing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Job {
    pub(super) async fn run(self) {
        let Job {
            mut reader,
            mut writer,
        } = self;
        let started = Instant::now();
        writer.save(SyncState::Running, None, None).await;
        let chats = match reader.source.list_chats().await {
            Ok(chats) => chats,
            Err(error) => {
                tracing::error!(%error, "sync run failed: cannot list chats");
                writer.progress.error = error.to_string();
                writer
                    .finish(Stage::Failed, SyncState::Failed, Some(error.to_string()))
                    .await;
                return;
            }
        };
        writer.progress.n_chats = chats.len() as u32;
        writer.publish(Stage::Started);
        // One batch may wait while the one before it is stored.
        let (to_store, work) = tokio::sync::mpsc::channel(1);
        let mut storing = Storing(tokio::spawn(writer.store_all(work).in_current_span()));
        reader.read(&chats, &to_store).await;
        drop(to_store);
        let mut writer = match (&mut storing.0).await {
            Ok(writer) => writer,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: only by dropping `storing`, which this task holds.
                Err(_) => return,
            },
        };
        writer.progress.error = if writer.failed_chats.is_empty() {
            String::new()
        } else {
            format!(
                "{} of {} chats failed: {}",
                writer.failed_chats.len(),
                chats.len(),
                writer.failed_chats.join(", ")
            )
        };
        let error = Some(writer.progress.error.clone()).filter(|e| !e.is_empty());
        writer
            .finish(Stage::Completed, SyncState::Succeeded, error)
            .await;
        tracing::info!(
            n_chats = chats.len(),
            messages = writer.progress.total_messages_synced,
            unplaced_lines = writer.progress.total_unplaced_lines,
            failed_chats = writer.failed_chats.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sync run completed"
        );
    }
}

impl Reader {
    /// Reads every chat (skipping unchanged files, reading histories ahead) and hands them to
    /// the writer in batches, in run order. Returns early when the writer has stopped.
    async fn read(&mut self, chats: &[SourceChat], to_store: &tokio::sync::mpsc::Sender<Work>) {
        let stored_at_start = self.stored_chat_ids().await;
        let stats = self.stat_files(chats).await;
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
                if !self.queue(&mut batch, pending, to_store).await {
                    return;
                }
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
                        || self.source.capabilities().live
                        || stored_at_start
                            .as_ref()
                            .is_none_or(|ids| ids.contains(&chat.chat_id));
                    pending.messages = messages;
                    pending.people = history.people;
                    pending.may_be_stored = may_hold_messages;
                }
            }
            if !self.queue(&mut batch, pending, to_store).await {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = to_store.send(Work::Batch(batch)).await;
        }
    }

    /// Queues a chat for the next import transaction. A full batch goes to the writer, and a
    /// chat larger than a batch goes on its own (it is stored in batches). `false` when the
    /// writer has stopped.
    async fn queue(
        &self,
        batch: &mut Vec<Pending>,
        pending: Pending,
        to_store: &tokio::sync::mpsc::Sender<Work>,
    ) -> bool {
        let large = pending.messages.len() > self.batch;
        let queued: usize = batch.iter().map(|p| p.messages.len()).sum();
        let full = queued + pending.messages.len() > self.batch || batch.len() >= CHATS_PER_BATCH;
        if !batch.is_empty()
            && (large || full)
            && to_store
                .send(Work::Batch(std::mem::take(batch)))
                .await
                .is_err()
        {
            return false;
        }
        if large {
            return to_store.send(Work::Large(pending)).await.is_ok();
        }
        batch.push(pending);
        true
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
                .list_chats(&self.session_id, after_seq, 1_000)
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
}

impl Writer {
    /// Stores what the reader hands over, in order, and persists the progress every
    /// [`SAVE_EVERY`]. Returns itself once the reader is done.
    async fn store_all(mut self, mut work: tokio::sync::mpsc::Receiver<Work>) -> Self {
        while let Some(item) = work.recv().await {
            match item {
                Work::Batch(mut batch) => self.flush(&mut batch).await,
                Work::Large(pending) => self.import_large(pending).await,
            }
            if self.last_saved.elapsed() > SAVE_EVERY {
                self.save(SyncState::Running, None, None).await;
            }
        }
        self
    }

    /// Ends the run: persists the final state first, then retires the run (a caller that comes
    /// later starts a new one) and publishes the last frame. A caller that sees
    /// COMPLETED or FAILED therefore already reads the final state from GetSyncStatus.
    async fn finish(&mut self, stage: Stage, state: SyncState, error: Option<String>) {
        let mut frame = self.progress.clone();
        frame.stage = stage;
        self.save_frame(state, Some(now_ms()), error, &frame).await;
        if self.lost.is_cancelled() {
            // Not saved: another replica holds the session's run now.
            return;
        }
        self.runs.retire(&self.progress.session_id, &self.run);
        self.run.publish(frame);
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
        if self.lost.is_cancelled() {
            return;
        }
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
                &self.fence,
            )
            .await
        {
            tracing::error!(error = %save_error, "cannot persist sync state");
        }
    }
}
