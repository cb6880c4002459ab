//! Errors of the storage layer.

/// What a store operation can fail with; the API maps each to a problem response.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The caller's input is unacceptable (422 `invalid`).
    #[error("{0}")]
    Invalid(String),
    /// licensor failed on its own side: stored data it cannot read, a value it cannot encode,
    /// a file writer that failed, a status change the job's states do not allow. Never the
    /// caller's fault: the API answers 500 and logs it, and nothing of it reaches the answer.
    #[error("internal failure: {0}")]
    Internal(String),
    /// A refusal with a stable `code` callers branch on (e.g. `out_of_stock`), and optional
    /// code-specific fields.
    #[error("{detail}")]
    Refused {
        kind: Refusal,
        code: &'static str,
        detail: String,
        extra: Option<serde_json::Value>,
    },
    #[error(transparent)]
    Secret(#[from] crate::crypto::SecretError),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// Why a [`StoreError::Refused`] was refused: the object is unknown (404), the state does not
/// allow it (409), or the input is unacceptable (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Conflict,
    Unacceptable,
}

impl StoreError {
    /// Whether the database could not be reached (see [`crate::db::is_unavailable`]): worth
    /// waiting out, answered 503 `database_unavailable` by the API.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Db(e) if crate::db::is_unavailable(e))
    }

    pub fn refused(kind: Refusal, code: &'static str, detail: impl Into<String>) -> Self {
        StoreError::Refused {
            kind,
            code,
            detail: detail.into(),
            extra: None,
        }
    }

    /// An internal failure ([`StoreError::Internal`]) from any error.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        StoreError::Internal(e.to_string())
    }

    /// 409 with a stable code.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Conflict, code, detail)
    }

    /// 422 with a stable code.
    pub fn unacceptable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Unacceptable, code, detail)
    }

    /// Attach code-specific fields (an object) to a refusal.
    pub fn with_extra(mut self, value: serde_json::Value) -> Self {
        if let StoreError::Refused { extra, .. } = &mut self {
            *extra = Some(value);
        }
        self
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
