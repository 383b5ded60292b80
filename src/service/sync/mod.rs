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
//!   renewed while it runs (`SyncRuns::supervise` in `runs.rs`). A caller on another
//!   replica follows the persisted progress (`runs::follow`). A run whose lease expired (its
//!   replica died) is INTERRUPTED; any replica may start the next one.
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

use super::lease::LeaseKeeper;
use crate::error::Error;
use crate::model::{NO_PEOPLE, NewMessage, People, SyncState, now_ms};
use crate::sources::{ChatHistory, Source, SourceChat, SourceError, apply_window};
use crate::storage::{Fence, FileFingerprint, FileRecord, ImportChat, RunClaim, Store, SyncRecord};

mod fingerprint;
mod job;
mod pushed;
mod runs;

pub use pushed::{PUSHED_RUN_IDLE, PushedChunk};
pub use runs::SyncRuns;

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

/// A caller's handle on a running sync run: an optional snapshot (for callers that attached
/// to a running run), then every later frame.
pub struct RunHandle {
    pub snapshot: Option<Progress>,
    pub frames: broadcast::Receiver<Progress>,
}

impl RunHandle {
    /// The run's frames as a stream of domain results, as SyncChats streams them: the
    /// snapshot first (when attached to a running run), then every later frame, ending after
    /// COMPLETED. After a FAILED frame comes `Err(FailedPrecondition("sync run failed: …"))`.
    /// `Err(Unavailable)` ends it when the run ends without an outcome (the replica running it
    /// stopped: the run is INTERRUPTED) or when `shutdown` is cancelled. A slow reader skips
    /// the frames it lagged behind on. Dropping the stream leaves the run running: it belongs
    /// to the server.
    pub fn into_stream(
        mut self,
        shutdown: CancellationToken,
    ) -> tokio_stream::wrappers::ReceiverStream<crate::error::Result<Progress>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(
            async move {
                let mut pending = self.snapshot.take();
                loop {
                    let frame = match pending.take() {
                        Some(frame) => frame,
                        None => tokio::select! {
                            next = self.frames.recv() => match next {
                                Ok(frame) => frame,
                                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                                    tracing::debug!(skipped, "slow SyncChats client skipped frames");
                                    continue;
                                }
                                Err(broadcast::error::RecvError::Closed) => {
                                    // The run ended without an outcome: the replica running
                                    // it stopped, and it is INTERRUPTED.
                                    let _ = sender.try_send(Err(Error::Unavailable(
                                        "the sync run was interrupted: the server running it stopped; sync again to resume".into(),
                                    )));
                                    return;
                                }
                            },
                            _ = shutdown.cancelled() => {
                                let _ = sender.try_send(Err(Error::Unavailable("the server is shutting down".into())));
                                return;
                            }
                        },
                    };
                    let stage = frame.stage;
                    let error = frame.error.clone();
                    if sender.send(Ok(frame)).await.is_err() {
                        tracing::debug!("SyncChats client went away; the run goes on");
                        return;
                    }
                    match stage {
                        Stage::Completed => return,
                        Stage::Failed => {
                            let _ = sender
                                .send(Err(Error::FailedPrecondition(format!("sync run failed: {error}"))))
                                .await;
                            return;
                        }
                        _ => {}
                    }
                }
            }
            .in_current_span(),
        );
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}
