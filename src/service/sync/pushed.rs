//! Runs that a source pushes instead of chatsync pulling them: the chunks of a WhatsApp Cloud
//! API `history` webhook (a number moved over from the WhatsApp Business app). Each chunk
//! arrives as a webhook, at any replica, in any order, minutes apart.
//!
//! - A pushed run is an ordinary sync run in storage (`sessions.sync_*`): GetSyncStatus shows
//!   it RUNNING with its last frame, and SyncChats on any replica follows it (`runs::follow`,
//!   through the persisted progress) until its COMPLETED or FAILED frame.
//! - Its sync lease is held by [`PUSHED_RUN_HOLDER`], not by a replica: each chunk takes or
//!   renews it for [`PUSHED_RUN_IDLE`], so that no replica's start-up or sweeper interrupts the
//!   run between chunks, and no pulled run starts meanwhile. A run with no chunk for that long
//!   is INTERRUPTED by the sweeper like any run whose lease lapsed; the next chunk then starts
//!   a new run.
//! - Each chunk is one import ([`Store::import_with_files`]), then one MESSAGES_SAVED frame
//!   persisted under the lease's fence: `n_chats` counts the chats in which the run's chunks
//!   stored new messages (a chat split over chunks counts once per chunk), `chat_id` is the
//!   chunk's last chat, `messages_synced` the chunk's new messages. The last chunk ends the
//!   run COMPLETED (SUCCEEDED); a source that says there is nothing to sync ends it FAILED,
//!   with its reason.
//! - A chunk delivered again stores nothing twice (messages are keyed by their provider id)
//!   and counts 0 new messages; after its run ended it starts no new one.
use super::*;
use crate::storage::{LeaseKind, PUSHED_RUN_HOLDER};

/// How long a pushed run stays RUNNING with no new chunk: 1 hour.
pub const PUSHED_RUN_IDLE: Duration = Duration::from_secs(3600);

/// The prefix of a pushed run's `sync_id` (then a UUID).
const PUSHED_SYNC_ID: &str = "history-";

/// One chunk of a pushed run.
pub struct PushedChunk<'a> {
    /// The chunk's chats and their messages, stored in one import transaction.
    pub chats: Vec<ImportChat<'a>>,
    /// The source says the run is complete with this chunk.
    pub last: bool,
    /// The source says there is nothing to sync, and why: the run ends FAILED.
    pub error: Option<String>,
}

impl SyncRuns {
    /// Stores one chunk of the session's pushed run, then accounts it to the run: the
    /// running pushed run's, or a new one's when it stored new messages or ends the run with
    /// an error (a chunk delivered again after its run ended starts nothing). The chunk's
    /// messages are stored even while a pulled run of the session is in progress (imports
    /// are idempotent, under the session's lock); that run is left alone and the chunk is
    /// accounted to no run. Returns the frame persisted for the chunk, if any.
    ///
    /// Errors: storage's (nothing of the chunk is stored when its import fails).
    pub async fn push_chunk(
        &self,
        store: &Store,
        session_id: &str,
        chunk: PushedChunk<'_>,
    ) -> crate::error::Result<Option<Progress>> {
        let counts = if chunk.chats.is_empty() {
            Vec::new()
        } else {
            store
                .import_with_files(session_id, &chunk.chats, &[])
                .await?
        };
        let stored: u64 = counts.iter().sum();
        self.messages_stored.fetch_add(stored, Ordering::Relaxed);
        let idle_ms = PUSHED_RUN_IDLE.as_millis() as i64;
        let started_at_ms = now_ms();
        let mut progress = Progress {
            sync_id: format!("{PUSHED_SYNC_ID}{}", uuid::Uuid::new_v4()),
            session_id: session_id.to_owned(),
            ..Progress::default()
        };
        // A pushed run another request started between the look and the claim is joined.
        let mut tries = 0;
        let (fence, started_at_ms) = loop {
            tries += 1;
            if let Some((fence, record, last)) = self.running_pushed(store, session_id).await? {
                if let Some(last) = last {
                    progress = last;
                }
                progress.sync_id = record.sync_id.unwrap_or_default();
                break (fence, record.sync_started_at_ms.unwrap_or(started_at_ms));
            }
            if stored == 0 && chunk.error.is_none() {
                return Ok(None);
            }
            let json = serde_json::to_string(&progress).unwrap_or_default();
            let record = SyncRecord {
                state: SyncState::Running,
                sync_id: &progress.sync_id,
                started_at_ms,
                finished_at_ms: None,
                error: None,
                progress_json: &json,
            };
            match store
                .claim_sync_run(session_id, PUSHED_RUN_HOLDER, idle_ms, &record)
                .await?
            {
                RunClaim::Started(fence) => break (fence, started_at_ms),
                RunClaim::Running { sync_id }
                    if sync_id.starts_with(PUSHED_SYNC_ID) && tries < 3 => {}
                RunClaim::Running { sync_id } => {
                    tracing::info!(
                        session_id,
                        sync_id,
                        "a sync run is in progress: the pushed chunk is stored, accounted to no run"
                    );
                    return Ok(None);
                }
            }
        };
        let new_chats = counts.iter().filter(|&&count| count > 0).count() as u32;
        progress.n_chats += new_chats;
        progress.current_chat = progress.n_chats;
        if let Some(last) = chunk.chats.last() {
            progress.chat_id = last.chat_id.to_owned();
        }
        progress.messages_synced = stored;
        progress.total_messages_synced += stored;
        progress.error = chunk.error.clone().unwrap_or_default();
        let (state, stage, finished_at_ms) = match (&chunk.error, chunk.last) {
            (Some(_), _) => (SyncState::Failed, Stage::Failed, Some(now_ms())),
            (None, true) => (SyncState::Succeeded, Stage::Completed, Some(now_ms())),
            (None, false) => (SyncState::Running, Stage::MessagesSaved, None),
        };
        progress.stage = stage;
        let json = serde_json::to_string(&progress).unwrap_or_default();
        store
            .fenced(fence.clone(), CancellationToken::new())
            .save_sync_state(
                session_id,
                &SyncRecord {
                    state,
                    sync_id: &progress.sync_id,
                    started_at_ms,
                    finished_at_ms,
                    error: chunk.error.as_deref(),
                    progress_json: &json,
                },
                &fence,
            )
            .await?;
        Ok(Some(progress))
    }

    /// The session's running pushed run, its lease renewed for [`PUSHED_RUN_IDLE`]: the
    /// lease's fence, the session row and the run's last frame; `None` when none is running.
    async fn running_pushed(
        &self,
        store: &Store,
        session_id: &str,
    ) -> crate::error::Result<
        Option<(
            crate::storage::Fence,
            crate::storage::SessionRecord,
            Option<Progress>,
        )>,
    > {
        // A pushed run is RUNNING under a sync id of its own.
        let running_pushed = |record: &crate::storage::SessionRecord| {
            record.sync_state == SyncState::Running
                && record
                    .sync_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(PUSHED_SYNC_ID))
        };
        if !running_pushed(&store.session(session_id).await?) {
            return Ok(None);
        }
        let idle_ms = PUSHED_RUN_IDLE.as_millis() as i64;
        let Some(fence) = store
            .acquire_lease(session_id, LeaseKind::Sync, PUSHED_RUN_HOLDER, idle_ms)
            .await?
        else {
            return Ok(None);
        };
        // Read again under the lease: the run may have ended in between.
        let record = store.session(session_id).await?;
        if !running_pushed(&record) {
            store.release_lease(session_id, &fence).await?;
            return Ok(None);
        }
        let last = record
            .sync_progress
            .as_deref()
            .and_then(|json| serde_json::from_str::<Progress>(json).ok());
        Ok(Some((fence, record, last)))
    }
}
