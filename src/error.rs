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
    /// A storage failure.
    #[error("storage error: {0}")]
    Storage(#[from] DbErr),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
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
