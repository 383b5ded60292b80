//! [`WriteConn`], the connection a [`super::WriteTxn`] runs its statements on: sqlx's own
//! transaction on a connection of the writer pool, on SQLite (`BEGIN IMMEDIATE`) and on
//! PostgreSQL alike.
//!
//! Why not sea-orm's `DatabaseTransaction`:
//! - PostgreSQL: an import streams its messages with `COPY … FROM STDIN` inside the same
//!   transaction ([`WriteConn::copy_in`]), and sea-orm's transaction does not expose its
//!   connection, which the copy protocol needs.
//! - SQLite: sea-orm clones every statement's bound values before it hands them to sqlx; an
//!   import's multi-row INSERTs bind about 20,000 values each, and that copy ran on the writer's
//!   critical path. Without it, and with the message INSERTs' arguments built while the
//!   statement before runs ([`WriteConn::execute_sqlite`]), a corpus sync ran 1.12× faster
//!   (BENCHMARKS.md, 2026-12-08).
//!
//! Every statement goes through [`ConnectionTrait`], run the way sea-orm 2.0 runs it (sqlx's
//! `query_with` over the statement's values, errors as `DbErr::Exec` or `DbErr::Query` of the
//! sqlx error), so the entities' queries and `crate::error`'s classification of failures work
//! unchanged.
use std::sync::Arc;

use sea_orm::sqlx::sqlite::SqliteArguments;
use sea_orm::sqlx::{self, Database, IntoArguments, Postgres, Sqlite};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;

/// An open write transaction's connection. See the module docs.
pub enum WriteConn {
    /// SQLite: sqlx's transaction, begun with `BEGIN IMMEDIATE`.
    Sqlite(tokio::sync::Mutex<sqlx::Transaction<'static, Sqlite>>),
    /// PostgreSQL: sqlx's transaction.
    Postgres(tokio::sync::Mutex<sqlx::Transaction<'static, Postgres>>),
}

/// Runs `$body` with `$txn` bound to the locked transaction, whichever the backend.
macro_rules! with_txn {
    ($conn:expr, |$txn:ident| $body:expr) => {
        match $conn {
            WriteConn::Sqlite(txn) => {
                let mut $txn = txn.lock().await;
                $body
            }
            WriteConn::Postgres(txn) => {
                let mut $txn = txn.lock().await;
                $body
            }
        }
    };
}

/// A failed statement, as sea-orm reports one.
fn exec_err(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error)))
}

/// A failed query, as sea-orm reports one.
fn query_err(error: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)))
}

/// sqlx's query for a sea-orm statement, taking its values (where sea-orm would clone them).
fn sqlx_query<DB: Database>(statement: Statement) -> sqlx::query::Query<'static, DB, SqlxValues>
where
    SqlxValues: IntoArguments<DB>,
{
    let values = statement.values.unwrap_or(sea_orm::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), SqlxValues(values))
}

impl WriteConn {
    /// Commits. Errors: the database's, as `DbErr::Exec`.
    pub(super) async fn commit(self) -> Result<(), DbErr> {
        match self {
            WriteConn::Sqlite(txn) => txn.into_inner().commit().await.map_err(exec_err),
            WriteConn::Postgres(txn) => txn.into_inner().commit().await.map_err(exec_err),
        }
    }

    /// SQLite: runs `sql` with `arguments` bound, already in sqlx's form (the import's message
    /// INSERTs, see `rows::messages_insert_sqlite`). Returns the rows changed. `Internal` on
    /// PostgreSQL; the database's errors as `DbErr::Exec`.
    pub(super) async fn execute_sqlite(
        &self,
        sql: String,
        arguments: SqliteArguments,
    ) -> crate::error::Result<u64> {
        let WriteConn::Sqlite(txn) = self else {
            return Err(crate::error::Error::Internal(
                "SQLite arguments for a PostgreSQL transaction".into(),
            ));
        };
        let mut txn = txn.lock().await;
        let done = sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments)
            .execute(&mut **txn)
            .await
            .map_err(exec_err)?;
        Ok(done.rows_affected())
    }

    /// PostgreSQL: runs `statement` (a `COPY table (columns) FROM STDIN` in text format) and
    /// sends `data`, its rows in that format, in this transaction. Returns the rows copied.
    /// `Internal` on SQLite, which has no `COPY`; the database's errors as `DbErr::Exec` (a
    /// row COPY cannot read, a unique index violated: the transaction is then aborted).
    pub(super) async fn copy_in(
        &self,
        statement: &str,
        data: Vec<u8>,
    ) -> crate::error::Result<u64> {
        let WriteConn::Postgres(txn) = self else {
            return Err(crate::error::Error::Internal(
                "COPY is PostgreSQL's; this transaction is SQLite's".into(),
            ));
        };
        let mut txn = txn.lock().await;
        let mut copy = txn.copy_in_raw(statement).await.map_err(exec_err)?;
        if let Err(error) = copy.send(data).await {
            // Ends the COPY so that the connection is usable again (the transaction is aborted).
            let _ = copy.abort(error.to_string()).await;
            return Err(exec_err(error).into());
        }
        Ok(copy.finish().await.map_err(exec_err)?)
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteConn {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            WriteConn::Sqlite(_) => DbBackend::Sqlite,
            WriteConn::Postgres(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        with_txn!(self, |txn| sqlx_query(statement)
            .execute(&mut **txn)
            .await
            .map(Into::into)
            .map_err(exec_err))
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        with_txn!(self, |txn| sqlx::Executor::execute(
            &mut **txn,
            sqlx::AssertSqlSafe(sql.to_owned())
        )
        .await
        .map(Into::into)
        .map_err(exec_err))
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        with_txn!(self, |txn| sqlx_query(statement)
            .fetch_optional(&mut **txn)
            .await
            .map(|row| row.map(Into::into))
            .map_err(query_err))
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        with_txn!(self, |txn| sqlx_query(statement)
            .fetch_all(&mut **txn)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(query_err))
    }
}
