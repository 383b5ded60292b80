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
use std::fmt::Write as _;
use std::sync::Arc;

use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, EntityName, EntityTrait, IdenStatic, Iterable,
    Statement, Value,
};

use super::heads::Heads;
use super::write_conn::WriteConn;
use super::{ROWS_PER_INSERT, Store};
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

/// SQLite's limit on bound variables per statement (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766 since
/// 3.32); PostgreSQL's (65,535) is higher.
const SQLITE_MAX_VARIABLES: usize = 32_766;

/// The longest a write waits in process for its turn ([`WriterQueues::turn`]). Each writer
/// ahead of it is itself bounded (SQLite's 10 s busy timeout, PostgreSQL's `lock_timeout`),
/// so only a stalled process reaches it.
pub const WRITE_TURN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An open write transaction holding one session's lock. See the module docs.
pub struct WriteTxn {
    txn: WriteConn,
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
        let backend = self.db.get_database_backend();
        let txn = match backend {
            DbBackend::Postgres => WriteConn::Postgres(tokio::sync::Mutex::new(
                self.writer_db
                    .get_postgres_connection_pool()
                    .begin()
                    .await?,
            )),
            _ => WriteConn::Sqlite(tokio::sync::Mutex::new(
                self.writer_db
                    .get_sqlite_connection_pool()
                    .begin_with("BEGIN IMMEDIATE")
                    .await?,
            )),
        };
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
    pub fn conn(&self) -> &WriteConn {
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

    /// Inserts `rows` (new rows of one table, each setting the same columns) in multi-row
    /// `INSERT … VALUES (…), …` statements without `RETURNING`, as many rows each as
    /// [`ROWS_PER_INSERT`] and the bound-variable limit allow (SQLite's 32,766; PostgreSQL's
    /// 65,535). The statement is what sea-orm's `insert_many` writes, built from the rows'
    /// values directly: sea-orm builds an expression per value, which costs more than
    /// SQLite's own insert of a small row (an import's chat, change, contact or participant).
    /// Columns left `NotSet` (an autoincrement id) are left out; a column set in some rows only
    /// is an `Internal` error (the caller's transaction then rolls back).
    pub async fn insert_rows<A: ActiveModelTrait>(&self, rows: &[A]) -> Result<()> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let (columns, unset): (Vec<_>, Vec<_>) =
            <<A::Entity as EntityTrait>::Column as Iterable>::iter()
                .partition(|column| !first.get(*column).is_not_set());
        let table = A::Entity::default();
        let uneven = |column: &<A::Entity as EntityTrait>::Column| {
            Error::Internal(format!(
                "insert_rows: column {} of {} is set in some rows only",
                column.as_str(),
                table.table_name()
            ))
        };
        let per_statement = ROWS_PER_INSERT.min(SQLITE_MAX_VARIABLES / columns.len().max(1));
        for chunk in super::statement_chunks(rows, per_statement) {
            let mut sql = format!("INSERT INTO \"{}\" (", table.table_name());
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('"');
                sql.push_str(column.as_str());
                sql.push('"');
            }
            sql.push_str(") VALUES ");
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * columns.len());
            for (r, row) in chunk.iter().enumerate() {
                if let Some(column) = unset.iter().find(|column| !row.get(**column).is_not_set()) {
                    return Err(uneven(column));
                }
                sql.push_str(if r == 0 { "(" } else { ", (" });
                for (i, column) in columns.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    values.push(
                        row.get(*column)
                            .into_value()
                            .ok_or_else(|| uneven(column))?,
                    );
                    match self.backend {
                        DbBackend::Postgres => {
                            let _ = write!(sql, "${}", values.len());
                        }
                        _ => sql.push('?'),
                    }
                }
                sql.push(')');
            }
            self.txn
                .execute_raw(Statement::from_sql_and_values(self.backend, sql, values))
                .await?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use sea_orm::ActiveValue::NotSet;
    use sea_orm::{EntityTrait, PaginatorTrait};

    use super::super::entities::change;
    use super::super::rows::change_row;
    use super::*;

    /// Rows in several statements (more than one statement's worth, and a tail), all stored;
    /// a row that leaves a column unset that the others set is refused, and its transaction
    /// stores nothing.
    #[tokio::test]
    async fn insert_rows_stores_every_row_and_refuses_uneven_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap();
        store.ensure_session("s", "test").await.unwrap();
        let count = || async { change::Entity::find().count(&store.db).await.unwrap() };
        let before = count().await;

        let n = ROWS_PER_INSERT as u64 * 2 + 37;
        let txn = store.write("s").await.unwrap();
        let rows: Vec<change::ActiveModel> = (1..=n)
            .map(|seq| change_row("s", 1_000 + seq, 2, format!("chat {seq}"), None, None, 7))
            .collect();
        txn.insert_rows(&rows).await.unwrap();
        txn.commit().await.unwrap();
        assert_eq!(count().await, before + n);

        let txn = store.write("s").await.unwrap();
        let mut rows: Vec<change::ActiveModel> = (1..=3)
            .map(|seq| change_row("s", 10_000 + seq, 2, "c".into(), None, None, 7))
            .collect();
        rows[2].contact_id = NotSet;
        let error = txn.insert_rows(&rows).await.unwrap_err();
        assert!(
            matches!(&error, Error::Internal(text) if text.contains("contact_id")),
            "{error:?}"
        );
        drop(txn);
        assert_eq!(count().await, before + n);
    }
}
