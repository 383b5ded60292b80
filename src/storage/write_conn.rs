//! [`WriteConn`], the connection a [`super::WriteTxn`] runs its statements on: sea-orm's
//! transaction on SQLite, sqlx's own on PostgreSQL.
//!
//! PostgreSQL's transaction is sqlx's so that an import can stream its messages with
//! `COPY … FROM STDIN` inside the same transaction ([`WriteConn::copy_in`]): sea-orm's
//! `DatabaseTransaction` does not expose its connection, and the copy protocol needs it.
//! Every other statement goes through [`ConnectionTrait`] as before, run the way sea-orm 2.0
//! runs it on PostgreSQL (sqlx's `query_with` over the statement's values, errors as
//! `DbErr::Exec` or `DbErr::Query` of the sqlx error), so the entities' queries and
//! `crate::error`'s classification of failures work unchanged.
use std::sync::Arc;

use sea_orm::sqlx::{self, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
};
use sea_query_sqlx::SqlxValues;

/// An open write transaction's connection. See the module docs.
pub enum WriteConn {
    /// SQLite: sea-orm's transaction (`BEGIN IMMEDIATE`).
    Sea(DatabaseTransaction),
    /// PostgreSQL: sqlx's transaction on a connection of the writer pool.
    Postgres(tokio::sync::Mutex<sqlx::Transaction<'static, Postgres>>),
}

/// A failed statement, as sea-orm reports one.
fn exec_err(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error)))
}

/// A failed query, as sea-orm reports one.
fn query_err(error: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)))
}

/// sqlx's query for a sea-orm statement, taking its values (sea-orm clones them).
fn sqlx_query(statement: Statement) -> sqlx::query::Query<'static, Postgres, SqlxValues> {
    let values = statement.values.unwrap_or(sea_orm::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), SqlxValues(values))
}

impl WriteConn {
    /// Commits. Errors: the database's, as `DbErr::Exec`.
    pub(super) async fn commit(self) -> Result<(), DbErr> {
        match self {
            WriteConn::Sea(txn) => txn.commit().await,
            WriteConn::Postgres(txn) => txn.into_inner().commit().await.map_err(exec_err),
        }
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
            WriteConn::Sea(txn) => txn.get_database_backend(),
            WriteConn::Postgres(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        match self {
            WriteConn::Sea(txn) => txn.execute_raw(statement).await,
            WriteConn::Postgres(txn) => {
                let mut txn = txn.lock().await;
                sqlx_query(statement)
                    .execute(&mut **txn)
                    .await
                    .map(Into::into)
                    .map_err(exec_err)
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            WriteConn::Sea(txn) => txn.execute_unprepared(sql).await,
            WriteConn::Postgres(txn) => {
                let mut txn = txn.lock().await;
                sqlx::Executor::execute(&mut **txn, sqlx::AssertSqlSafe(sql.to_owned()))
                    .await
                    .map(Into::into)
                    .map_err(exec_err)
            }
        }
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            WriteConn::Sea(txn) => txn.query_one_raw(statement).await,
            WriteConn::Postgres(txn) => {
                let mut txn = txn.lock().await;
                sqlx_query(statement)
                    .fetch_optional(&mut **txn)
                    .await
                    .map(|row| row.map(Into::into))
                    .map_err(query_err)
            }
        }
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            WriteConn::Sea(txn) => txn.query_all_raw(statement).await,
            WriteConn::Postgres(txn) => {
                let mut txn = txn.lock().await;
                sqlx_query(statement)
                    .fetch_all(&mut **txn)
                    .await
                    .map(|rows| rows.into_iter().map(Into::into).collect())
                    .map_err(query_err)
            }
        }
    }
}
