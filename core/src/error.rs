//! Errors of the storage layer.

/// What a store operation can fail with; the API maps each to a problem response.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Secret(#[from] crate::crypto::SecretError),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

pub type StoreResult<T> = Result<T, StoreError>;
