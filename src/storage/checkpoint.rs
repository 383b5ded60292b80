//! SQLite WAL checkpoints off the write path.
//!
//! SQLite's own auto-checkpoint (`PRAGMA wal_autocheckpoint`) runs inside the `COMMIT` that
//! grows the WAL past its limit: that commit then copies every page of the WAL back into the
//! database file and syncs it before it returns, while this process's writer queue
//! ([`super::write`]) waits behind it. With a 32 MiB WAL that is a stall of tens to hundreds of
//! milliseconds for every writer queued at that moment: the tail of SendMessage, of fan-out and
//! of webhook delivery.
//!
//! Instead, every pooled connection gets a WAL hook (`sqlite3_wal_hook`, which replaces the
//! auto-checkpoint; <https://www.sqlite.org/c3ref/wal_hook.html>) that only *signals* when a
//! commit leaves [`CHECKPOINT_PAGES`] or more pages in the WAL, and one task per store runs
//! `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own
//! (<https://www.sqlite.org/pragma.html#pragma_wal_checkpoint>). A passive checkpoint never
//! takes the write lock, so writers go on appending to the WAL while it copies pages back; the
//! next writer after a complete checkpoint starts the WAL from its beginning again. The
//! threshold is the one the auto-checkpoint had, so an import's batches still rewrite the same
//! index pages in the WAL and have them copied back once, not after every batch.
//!
//! Durability is unchanged: a commit is durable once it is in the WAL (`synchronous = NORMAL`
//! makes it so at the checkpoint's sync, as before), and the last connection to close
//! checkpoints what is left, as SQLite always does.
use std::ffi::{c_char, c_int, c_void};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection};
use tokio::sync::{Notify, watch};

/// Pages in the WAL (4 KiB each by default, so 32 MiB) after which a commit asks for a
/// checkpoint: what `wal_autocheckpoint` was set to before the checkpoints moved here.
pub(super) const CHECKPOINT_PAGES: c_int = 8192;

/// The signal between the WAL hooks of one store's connections and its checkpoint task.
///
/// Leaked once per SQLite [`super::Store::connect`] (a few bytes): a connection's hook holds a
/// plain pointer to it, and the pool may keep a connection alive after the last `Store` clone
/// is gone, so it must outlive every connection.
pub(super) struct Checkpoints {
    /// Pages in the WAL from which a commit wakes the task.
    pages: c_int,
    wake: Notify,
    closed: AtomicBool,
    /// WAL frames copied back by the task's checkpoints so far (their sum).
    checkpointed: watch::Sender<u64>,
}

impl Checkpoints {
    /// A new signal for a WAL of at most about `pages` pages, leaked (see the type's docs).
    pub(super) fn leak(pages: c_int) -> &'static Checkpoints {
        Box::leak(Box::new(Checkpoints {
            pages,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            checkpointed: watch::Sender::new(0),
        }))
    }

    /// Installs the WAL hook on one pooled connection (the pool's `after_connect`). The hook
    /// replaces SQLite's auto-checkpoint on that connection.
    pub(super) async fn install(&'static self, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        let mut handle = conn.lock_handle().await?;
        // SAFETY: the handle is locked out of sqlx's worker thread for this call, and `self`
        // is 'static, so the hook's argument outlives the connection.
        unsafe {
            libsqlite3_sys::sqlite3_wal_hook(
                handle.as_raw_handle().as_ptr(),
                Some(on_commit),
                self as *const Checkpoints as *mut c_void,
            );
        }
        Ok(())
    }

    /// Starts the checkpoint task for the SQLite database at `url`; it ends when the returned
    /// [`CheckpointTask`] is dropped.
    pub(super) fn spawn(&'static self, url: &str) -> CheckpointTask {
        let options = SqliteConnectOptions::from_str(url).map(|options| {
            options
                .busy_timeout(std::time::Duration::from_secs(10))
                .disable_statement_logging()
        });
        tokio::spawn(async move {
            let options = match options {
                Ok(options) => options,
                Err(error) => {
                    tracing::warn!(%error, "no WAL checkpoint task: the database URL does not parse");
                    return;
                }
            };
            let mut connection: Option<SqliteConnection> = None;
            loop {
                self.wake.notified().await;
                if self.closed.load(Ordering::Acquire) {
                    break;
                }
                if connection.is_none() {
                    match SqliteConnection::connect_with(&options).await {
                        Ok(opened) => connection = Some(opened),
                        Err(error) => {
                            tracing::warn!(%error, "cannot open a connection for WAL checkpoints");
                            continue;
                        }
                    }
                }
                if let Some(opened) = connection.as_mut() {
                    // One row: (busy, frames in the WAL, frames checkpointed).
                    let done: sqlx::Result<(i64, i64, i64)> =
                        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                            .fetch_one(&mut *opened)
                            .await;
                    match done {
                        Ok((_, _, frames)) => self
                            .checkpointed
                            .send_modify(|sum| *sum += u64::try_from(frames).unwrap_or(0)),
                        Err(error) => {
                            tracing::warn!(%error, "WAL checkpoint failed; the next commit past the threshold retries");
                            connection = None;
                        }
                    }
                }
            }
            if let Some(opened) = connection {
                let _ = opened.close().await;
            }
        });
        CheckpointTask(self)
    }
}

/// Owned by the store (shared by its clones): dropping it ends the checkpoint task.
pub(super) struct CheckpointTask(&'static Checkpoints);

impl Drop for CheckpointTask {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// The WAL hook: called by SQLite after each commit on the connection, with the number of
/// pages now in the WAL. It only wakes the checkpoint task, so the commit returns at once.
unsafe extern "C" fn on_commit(
    checkpoints: *mut c_void,
    _db: *mut libsqlite3_sys::sqlite3,
    _schema: *const c_char,
    pages: c_int,
) -> c_int {
    // SAFETY: the argument is the `&'static Checkpoints` given in `install`.
    let checkpoints = unsafe { &*(checkpoints as *const Checkpoints) };
    if pages >= checkpoints.pages {
        checkpoints.wake.notify_one();
    }
    libsqlite3_sys::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sqlx::sqlite::SqlitePoolOptions;

    /// Commits past the threshold wake the task, whose checkpoint copies the WAL back, and the
    /// commits themselves do not checkpoint (the hook replaced the auto-checkpoint).
    #[tokio::test]
    async fn commits_past_the_threshold_are_checkpointed_by_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        );
        let checkpoints = Checkpoints::leak(16);
        // SQLite's own auto-checkpoint at 16 pages too: had the hook not replaced it, the
        // commits below would checkpoint inline and leave the task next to nothing to copy.
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "16");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| Box::pin(checkpoints.install(conn)))
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE blobs (body BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        let mut frames = checkpoints.checkpointed.subscribe();
        // Before the task runs, the WAL only grows: 64 commits of a 4 KiB blob each (each
        // wakes the task, which is not started yet: one wake is kept for it).
        for _ in 0..64 {
            sqlx::query("INSERT INTO blobs VALUES (zeroblob(4096))")
                .execute(&pool)
                .await
                .unwrap();
        }
        let task = checkpoints.spawn(&url);
        let copied = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            frames.wait_for(|sum| *sum >= 64),
        )
        .await
        .expect("the checkpoint task copied the WAL back within 60 s")
        .map(|sum| *sum)
        .unwrap();
        assert!(copied >= 64, "{copied} frames checkpointed");
        drop(task);
        pool.close().await;
    }
}
