//! The domain error type. Every layer below the gRPC adapter returns [`Error`]; the adapter
//! maps it to a gRPC status in exactly one place (`grpc::status_from`).
use sea_orm::DbErr;

/// A failed operation, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (empty text, unknown enum value, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session, chat or message does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// No credentials, or credentials that match no token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A valid token used outside its scope.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The source cannot do this (for example SendMessage on a read-only export).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The source or the server is unavailable (source down, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A configured limit is reached (open subscriptions, server-wide or per token).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// This replica's work for a session (a sync run, a live loop) no longer holds the
    /// session's lease: another replica took over while this one was stalled or cut off. The
    /// write was refused and the work stops; the client may retry (on any replica).
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// A concurrent transaction won (a serialization failure or a deadlock, PostgreSQL
    /// SQLSTATE 40001 and 40P01): nothing was written, and the whole call may be retried.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A storage failure that retrying will not mend. Failures that a retry may mend (a lost
    /// or refused connection, a database restarting or failing over, a lock wait past
    /// `lock_timeout`) are [`Error::Unavailable`] and conflicts [`Error::Aborted`]: see
    /// `From<DbErr>`.
    #[error("storage error: {0}")]
    Storage(DbErr),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Sorts a storage failure by what a client can do about it, the one place that does: a lost,
/// refused or exhausted connection, a database shutting down or not yet accepting
/// connections, an idle transaction ended by the server, a lock wait past `lock_timeout`, or
/// SQLite's busy and locked answers are [`Error::Unavailable`]; serialization failures and
/// deadlocks are [`Error::Aborted`]; anything else is [`Error::Storage`]. The cause is logged;
/// a client sees only the class (no database text).
///
/// PostgreSQL codes: <https://www.postgresql.org/docs/current/errcodes-appendix.html>;
/// SQLite result codes: <https://www.sqlite.org/rescode.html>.
impl From<DbErr> for Error {
    fn from(error: DbErr) -> Self {
        match retry_class(&error) {
            Some(RetryClass::Unavailable(what)) => {
                tracing::warn!(%error, "database unavailable");
                Error::Unavailable(format!("the database is unavailable ({what}); retry"))
            }
            Some(RetryClass::Aborted) => {
                tracing::warn!(%error, "transaction conflict");
                Error::Aborted(
                    "the database aborted the transaction in a conflict with another; retry".into(),
                )
            }
            None => Error::Storage(error),
        }
    }
}

impl From<sea_orm::sqlx::Error> for Error {
    fn from(error: sea_orm::sqlx::Error) -> Self {
        Error::from(DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
            std::sync::Arc::new(error),
        )))
    }
}

/// What a client may do about a storage failure, when retrying helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryClass {
    /// Retry later; the text says what failed.
    Unavailable(&'static str),
    /// Retry the whole call now.
    Aborted,
}

fn retry_class(error: &DbErr) -> Option<RetryClass> {
    use sea_orm::RuntimeErr;
    match error {
        DbErr::ConnectionAcquire(_) => Some(RetryClass::Unavailable("no connection")),
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error)) => sqlx_retry_class(error),
        _ => None,
    }
}

fn sqlx_retry_class(error: &sea_orm::sqlx::Error) -> Option<RetryClass> {
    use sea_orm::sqlx::Error as E;
    match error {
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => {
            Some(RetryClass::Unavailable("connection lost"))
        }
        E::PoolTimedOut | E::PoolClosed => Some(RetryClass::Unavailable("no connection")),
        E::Database(database) => {
            let code = database.code()?;
            if database
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some()
            {
                sqlite_retry_class(code.parse().ok()?)
            } else {
                sqlstate_retry_class(&code)
            }
        }
        _ => None,
    }
}

/// A SQLite result code by class.
fn sqlite_retry_class(code: i32) -> Option<RetryClass> {
    // The primary code is the low byte of an extended one (517 is SQLITE_BUSY_SNAPSHOT).
    match code & 0xff {
        5 => Some(RetryClass::Unavailable("database busy")),
        6 => Some(RetryClass::Unavailable("table locked")),
        _ => None,
    }
}

/// A PostgreSQL SQLSTATE by class.
fn sqlstate_retry_class(code: &str) -> Option<RetryClass> {
    match code {
        "40001" | "40P01" => Some(RetryClass::Aborted),
        "55P03" => Some(RetryClass::Unavailable("lock wait timed out")),
        "25P03" => Some(RetryClass::Unavailable(
            "idle transaction ended by the server",
        )),
        "57P01" | "57P02" | "57P03" => Some(RetryClass::Unavailable("database restarting")),
        "57014" => Some(RetryClass::Unavailable("statement cancelled")),
        "53300" => Some(RetryClass::Unavailable("too many connections")),
        // A write that reached a primary demoted in a failover.
        "25006" => Some(RetryClass::Unavailable("database read-only (failover)")),
        code if code.starts_with("08") => Some(RetryClass::Unavailable("connection lost")),
        _ => None,
    }
}

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The text a client may see. For `Storage` and `Internal` errors that is only a fresh
    /// error id: the cause is logged with that id (no database text reaches a client).
    pub fn public_text(&self) -> String {
        match self {
            Self::Storage(_) | Self::Internal(_) => {
                let error_id = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(error_id, error = %self, "internal error");
                format!("internal error (error id {error_id}); the server log has the cause")
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_retryable_code_has_its_class() {
        let table = [
            ("40001", Some(RetryClass::Aborted)),
            ("40P01", Some(RetryClass::Aborted)),
            (
                "55P03",
                Some(RetryClass::Unavailable("lock wait timed out")),
            ),
            (
                "25P03",
                Some(RetryClass::Unavailable(
                    "idle transaction ended by the server",
                )),
            ),
            (
                "57P01",
                Some(RetryClass::Unavailable("database restarting")),
            ),
            (
                "57P02",
                Some(RetryClass::Unavailable("database restarting")),
            ),
            (
                "57P03",
                Some(RetryClass::Unavailable("database restarting")),
            ),
            (
                "57014",
                Some(RetryClass::Unavailable("statement cancelled")),
            ),
            (
                "53300",
                Some(RetryClass::Unavailable("too many connections")),
            ),
            (
                "25006",
                Some(RetryClass::Unavailable("database read-only (failover)")),
            ),
            ("08006", Some(RetryClass::Unavailable("connection lost"))),
            ("08003", Some(RetryClass::Unavailable("connection lost"))),
            // Not retryable: a unique violation, a syntax error.
            ("23505", None),
            ("42601", None),
        ];
        for (code, class) in table {
            assert_eq!(sqlstate_retry_class(code), class, "SQLSTATE {code}");
        }
        let table = [
            (5, Some(RetryClass::Unavailable("database busy"))),
            (517, Some(RetryClass::Unavailable("database busy"))),
            (6, Some(RetryClass::Unavailable("table locked"))),
            // Not retryable: a constraint, a corrupt file.
            (19, None),
            (2067, None),
            (11, None),
        ];
        for (code, class) in table {
            assert_eq!(sqlite_retry_class(code), class, "SQLite code {code}");
        }
    }

    #[test]
    fn connection_failures_are_unavailable_and_the_rest_storage() {
        use sea_orm::sqlx::Error as E;
        let lost = Error::from(E::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(matches!(lost, Error::Unavailable(_)), "{lost:?}");
        assert!(matches!(
            Error::from(E::PoolTimedOut),
            Error::Unavailable(_)
        ));
        assert!(matches!(Error::from(E::PoolClosed), Error::Unavailable(_)));
        assert!(matches!(
            Error::from(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)),
            Error::Unavailable(_)
        ));
        assert!(matches!(Error::from(E::RowNotFound), Error::Storage(_)));
        assert!(matches!(
            Error::from(DbErr::Custom("bug".into())),
            Error::Storage(_)
        ));
    }
}
