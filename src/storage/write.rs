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
//! [`WriteTxn::commit`] stores the new head, commits, gives up the writer turn, then sends
//! `NOTIFY chatsync_heads` on PostgreSQL (after the commit, on its own: see
//! [`WriteTxn::commit`]) and announces the head in process. No caller can forget a step, and
//! seqs are gapless and committed in order.
//! Dropping a `WriteTxn` without committing rolls it back and takes no seqs.
use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use super::Store;
use super::heads::{HEADS_CHANNEL, Heads};
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
    /// The pool, for the NOTIFY after the commit (PostgreSQL).
    db: sea_orm::DatabaseConnection,
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
            .db
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
            db: self.db.clone(),
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

    /// Commits: stores the new head (when seqs were taken), commits, gives up the writer turn,
    /// then, when the head moved, tells this process and the cluster (PostgreSQL: `NOTIFY
    /// chatsync_heads, '<session_id> <head>'`). Returns the committed head.
    ///
    /// The NOTIFY is a statement of its own after the commit, not part of the transaction:
    /// PostgreSQL queues a transaction's notifications under one server-wide lock held through
    /// its commit, which made the commits of every session wait on each other (pgbench, 30
    /// clients on 30 sessions: 370 commits/s with the NOTIFY inside, 1,170 after, 1,000 with
    /// none; BENCHMARKS.md). A NOTIFY that fails, or that a dying replica never sends, costs
    /// latency only: every replica re-reads its watched heads every
    /// [`super::heads::HEAD_REREAD_INTERVAL`]. A failed NOTIFY is logged; the commit stands.
    pub async fn commit(self) -> Result<u64> {
        let WriteTxn {
            txn,
            _writer: writer,
            heads,
            db,
            backend,
            session_id,
            head: before,
            next,
        } = self;
        let head = next - 1;
        if head > before {
            let update = match backend {
                DbBackend::Postgres => "UPDATE sessions SET head_seq = $1 WHERE id = $2",
                _ => "UPDATE sessions SET head_seq = ? WHERE id = ?",
            };
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                update,
                [(head as i64).into(), session_id.as_str().into()],
            ))
            .await?;
        }
        txn.commit().await?;
        drop(writer);
        if head > before {
            heads.announce(&session_id, head);
            if backend == DbBackend::Postgres
                && let Err(error) = db
                    .execute_raw(Statement::from_sql_and_values(
                        backend,
                        "SELECT pg_notify($1, $2)",
                        [HEADS_CHANNEL.into(), format!("{session_id} {head}").into()],
                    ))
                    .await
            {
                tracing::warn!(%error, session_id, head, "the head NOTIFY failed; replicas see the commit at their next head re-read");
            }
        }
        Ok(head)
    }
}
