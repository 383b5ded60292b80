//! The write path: [`WriteTxn`], the one way to change a session's data.
//!
//! A write transaction takes the session's lock as its first step, before it reads anything
//! it decides on:
//! - PostgreSQL: `SELECT head_seq FROM sessions WHERE id = $1 FOR UPDATE`, the transaction's
//!   first statement. Every replica's writers of the session queue on that row lock.
//! - SQLite: the in-process writer queue, then `BEGIN IMMEDIATE` (one process serves a SQLite
//!   file, see [`super::Store::connect`]).
//!
//! On both, a writer first queues in process ([`WriterQueues`]: one queue per SQLite file, one
//! per session on PostgreSQL) before it takes a pooled connection.
//!
//! While it holds the lock it hands out seqs from the head it read ([`WriteTxn::next_seq`]);
//! [`WriteTxn::commit`] stores the new head, commits, and announces the head (in process, and
//! on PostgreSQL by `NOTIFY chatsync_heads` after the commit, see [`super::heads`]). No caller
//! can forget a step, and seqs are gapless and committed in order.
//! Dropping a `WriteTxn` without committing rolls it back and takes no seqs.
use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use super::Store;
use super::heads::Heads;
use crate::error::{Error, Result};

/// In-process writer queues: one for the whole database (SQLite), or one per session.
#[derive(Clone)]
pub(super) struct WriterQueues {
    whole_database: Option<Arc<tokio::sync::Mutex<()>>>,
    per_session: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl WriterQueues {
    pub(super) fn new(one_for_the_whole_database: bool) -> Self {
        Self {
            whole_database: one_for_the_whole_database.then(Arc::default),
            per_session: Arc::default(),
        }
    }

    /// Waits for this process's turn to write (the whole file's on SQLite, the session's on
    /// PostgreSQL), at most [`WRITE_TURN_LIMIT`]: `Unavailable` after that, so that no writer
    /// waits forever behind a stalled one.
    pub(super) async fn turn(&self, session_id: &str) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        let queue = match &self.whole_database {
            Some(queue) => queue.clone(),
            None => self
                .per_session
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .entry(session_id.to_owned())
                .or_default()
                .clone(),
        };
        tokio::time::timeout(WRITE_TURN_LIMIT, queue.lock_owned())
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the database is busy: a write waited {} s for its turn; retry",
                    WRITE_TURN_LIMIT.as_secs()
                ))
            })
    }
}

/// The longest a write waits in process for its turn ([`WriterQueues::turn`]). Each writer
/// ahead of it is itself bounded (SQLite's 10 s busy timeout, PostgreSQL's `lock_timeout`),
/// so only a stalled process reaches it.
pub const WRITE_TURN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An open write transaction holding one session's lock. See the module docs.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    /// This process's writer-queue turn, held until the transaction ends.
    _writer: tokio::sync::OwnedMutexGuard<()>,
    heads: Heads,
    backend: DbBackend,
    session_id: String,
    /// The committed head when the lock was taken.
    head: u64,
    /// The next seq to hand out.
    next: u64,
}

impl Store {
    /// Opens a write transaction on `session_id`, taking the session's lock first.
    ///
    /// Errors: `NotFound` when the session has no row; `Storage` on a database failure.
    pub async fn write(&self, session_id: &str) -> Result<WriteTxn> {
        let writer = self.writers.turn(session_id).await?;
        self.write_in_turn(session_id, writer).await
    }

    /// [`Store::write`] for a writer that already holds its queue's turn.
    pub(super) async fn write_in_turn(
        &self,
        session_id: &str,
        writer: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<WriteTxn> {
        let txn = self
            .writer_db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => "SELECT head_seq FROM sessions WHERE id = $1 FOR UPDATE",
            _ => "SELECT head_seq FROM sessions WHERE id = ?",
        };
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [session_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?;
        let head = row.try_get::<i64>("", "head_seq")? as u64;
        if let Some(fenced) = &self.fence
            && let Err(error) = super::sessions::check_fence(&txn, session_id, &fenced.fence).await
        {
            if matches!(error, Error::LeaseLost(_)) {
                tracing::warn!(%error, "a write as a former lease holder was refused");
                fenced.lost.cancel();
            }
            return Err(error);
        }
        Ok(WriteTxn {
            txn,
            _writer: writer,
            heads: self.heads.clone(),
            backend,
            session_id: session_id.to_owned(),
            head,
            next: head + 1,
        })
    }
}

impl WriteTxn {
    /// The connection to run this transaction's statements on.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// The session this transaction holds.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Hands out the next seq of the session.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// Hands out `n` consecutive seqs; returns the first.
    pub fn take_seqs(&mut self, n: u64) -> u64 {
        let first = self.next;
        self.next += n;
        first
    }

    /// Commits: stores the new head (when seqs were taken) inside the transaction, commits,
    /// then, when the head moved, announces it ([`Heads::committed`]: in process at once, and
    /// to the cluster by a NOTIFY after the commit that this call does not wait for). Returns
    /// the committed head.
    pub async fn commit(self) -> Result<u64> {
        let head = self.next - 1;
        if head > self.head {
            let update = match self.backend {
                DbBackend::Postgres => "UPDATE sessions SET head_seq = $1 WHERE id = $2",
                _ => "UPDATE sessions SET head_seq = ? WHERE id = ?",
            };
            self.txn
                .execute_raw(Statement::from_sql_and_values(
                    self.backend,
                    update,
                    [(head as i64).into(), self.session_id.as_str().into()],
                ))
                .await?;
        }
        self.txn.commit().await?;
        if head > self.head {
            self.heads.committed(&self.session_id, head);
        }
        Ok(head)
    }
}
