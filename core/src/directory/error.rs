//! Directory errors, classified once: transient (retry) or permanent (with the item error code
//! of the job contract), plus the two outcomes that are not item failures — a remove of a
//! license the user does not hold (already done) and rejected credentials (the job fails).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Item error codes (CONTRACT §Jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemCode {
    CountViolation,
    UsageLocationMissing,
    MutuallyExclusiveViolation,
    DependencyViolation,
    InheritedFromGroup,
    UserNotFound,
    SkuNotFound,
    Throttled,
    DirectoryUnavailable,
    Other,
}

impl ItemCode {
    pub const ALL: [ItemCode; 10] = [
        ItemCode::CountViolation,
        ItemCode::UsageLocationMissing,
        ItemCode::MutuallyExclusiveViolation,
        ItemCode::DependencyViolation,
        ItemCode::InheritedFromGroup,
        ItemCode::UserNotFound,
        ItemCode::SkuNotFound,
        ItemCode::Throttled,
        ItemCode::DirectoryUnavailable,
        ItemCode::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemCode::CountViolation => "count_violation",
            ItemCode::UsageLocationMissing => "usage_location_missing",
            ItemCode::MutuallyExclusiveViolation => "mutually_exclusive_violation",
            ItemCode::DependencyViolation => "dependency_violation",
            ItemCode::InheritedFromGroup => "inherited_from_group",
            ItemCode::UserNotFound => "user_not_found",
            ItemCode::SkuNotFound => "sku_not_found",
            ItemCode::Throttled => "throttled",
            ItemCode::DirectoryUnavailable => "directory_unavailable",
            ItemCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ItemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a directory call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Worth retrying: 429, 5xx, timeouts, dropped connections. `code` is `throttled` or
    /// `directory_unavailable`.
    #[error("{code}: {detail}")]
    Transient {
        code: ItemCode,
        detail: String,
        retry_after: Option<Duration>,
        /// The directory answered that it did not carry the request out: 429 (throttled), 503
        /// (Service Unavailable: "you may repeat the request after a delay", Microsoft Graph
        /// error responses; "the server is currently unable to handle the request", RFC 9110
        /// §15.6.4), or 401 for an access token that expired on the way. `false` when it may
        /// have been carried out: any other 5xx, a timeout, a connection closed before the
        /// answer.
        refused: bool,
    },
    /// The directory refused this request for good.
    #[error("{code}: {detail}")]
    Permanent { code: ItemCode, detail: String },
    /// Removing a license the user does not hold: the desired state is already there.
    #[error("already done: {detail}")]
    AlreadyDone { detail: String },
    /// The tenant's app credentials were refused; nothing will work until they are fixed.
    #[error("directory credentials rejected: {detail}")]
    CredentialsRejected { detail: String },
    /// A group (or other addressed object) that does not exist.
    #[error("not found: {detail}")]
    NotFound { detail: String },
    /// A write not sent: the client's stop signal was raised (the job was cancelled or
    /// paused, or another worker process took the tenant's turn to write) before the request's
    /// turn came. Nothing reached the directory.
    #[error("not sent: the job was stopped before this write went out")]
    Stopped,
    /// A write not sent: the tenant's write budget would not let it go within the client's
    /// patience ([`DirectoryClient::deferring_beyond`](super::DirectoryClient::deferring_beyond)),
    /// only from `until`. Nothing reached the directory; the work is to be taken up again then.
    #[error("not sent: the write budget is spent until later")]
    Deferred { until: tokio::time::Instant },
}

impl DirectoryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DirectoryError::Transient { .. })
    }

    /// Whether a write that met this error may have been carried out all the same: a transient
    /// failure the directory did not answer with a refusal (a 500, 502 or 504, a timeout, a
    /// connection closed before the answer, a request missing from a `$batch` answer). A 429
    /// is Graph's word that the request was not carried out ("Microsoft Graph throttling
    /// guidance": the request is refused, not queued), and so is a 503 (see
    /// [`DirectoryError::Transient`]'s `refused`); `Stopped` and `Deferred` were never sent.
    /// Such a write is never sent again before the member is read.
    pub fn fate_unknown(&self) -> bool {
        matches!(self, DirectoryError::Transient { refused, .. } if !refused)
    }

    /// Whether the directory answered that it did not carry the request out (429, 503, an
    /// expired token): nothing changed, and nothing was charged to the write budget.
    pub fn refused(&self) -> bool {
        matches!(self, DirectoryError::Transient { refused: true, .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DirectoryError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The item error code this error leaves on a member's item.
    pub fn item_code(&self) -> ItemCode {
        match self {
            DirectoryError::Transient { code, .. } | DirectoryError::Permanent { code, .. } => {
                *code
            }
            DirectoryError::NotFound { .. } => ItemCode::UserNotFound,
            DirectoryError::AlreadyDone { .. }
            | DirectoryError::CredentialsRejected { .. }
            | DirectoryError::Stopped
            | DirectoryError::Deferred { .. } => ItemCode::Other,
        }
    }

    /// What this failure means to whoever meets it outside a member's write: the one
    /// classification the API's answers and a job's failure are both made from.
    pub fn failure(&self) -> Failure {
        match self {
            DirectoryError::CredentialsRejected { .. } => Failure::CredentialsRejected,
            DirectoryError::Transient { .. } => Failure::Unavailable,
            DirectoryError::NotFound { .. } => Failure::NotFound,
            _ => Failure::Other,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        DirectoryError::Transient {
            code: ItemCode::DirectoryUnavailable,
            detail: detail.into(),
            retry_after: None,
            refused: false,
        }
    }
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`.
#[derive(Debug, Default, Deserialize)]
struct GraphErrorBody {
    #[serde(default)]
    error: GraphError,
}

#[derive(Debug, Default, Deserialize)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Classify a non-success answer from Graph. `body` is the JSON error body (possibly empty),
/// `retry_after` the parsed `Retry-After` header. `is_remove` says whether the request removed
/// licenses (a "does not hold" answer then means the work is already done).
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> DirectoryError {
    let parsed: GraphErrorBody = serde_json::from_slice(body).unwrap_or_default();
    classify_parts(
        status,
        &parsed.error.code,
        &parsed.error.message,
        retry_after,
    )
}

/// As [`classify`], from an already parsed error (e.g. one response inside a `$batch`).
pub fn classify_value(
    status: u16,
    body: &serde_json::Value,
    retry_after: Option<Duration>,
) -> DirectoryError {
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    classify_parts(status, code, message, retry_after)
}

fn classify_parts(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> DirectoryError {
    let detail = if message.is_empty() {
        format!("HTTP {status} {code}").trim().to_owned()
    } else {
        message.to_owned()
    };
    let lower = message.to_ascii_lowercase();
    match status {
        429 => DirectoryError::Transient {
            code: ItemCode::Throttled,
            detail,
            retry_after,
            refused: true,
        },
        500..=599 => DirectoryError::Transient {
            code: ItemCode::DirectoryUnavailable,
            detail,
            retry_after,
            refused: status == 503,
        },
        408 => DirectoryError::unavailable(detail),
        401 | 403 if code == "InvalidAuthenticationToken" => DirectoryError::Transient {
            // An access token that expired between check and use: refresh and try again.
            code: ItemCode::DirectoryUnavailable,
            detail,
            retry_after: Some(Duration::ZERO),
            refused: true,
        },
        401 | 403 => DirectoryError::CredentialsRejected { detail },
        404 => DirectoryError::NotFound { detail },
        _ => {
            let code = if lower.contains("does not have any available licenses") {
                ItemCode::CountViolation
            } else if lower.contains("usage location") {
                ItemCode::UsageLocationMissing
            } else if lower.contains("mutually exclusive") {
                ItemCode::MutuallyExclusiveViolation
            } else if lower.contains("depends on the service plan") {
                ItemCode::DependencyViolation
            } else if lower.contains("inherited from a group") {
                ItemCode::InheritedFromGroup
            } else if lower.contains("does not correspond to a valid company license") {
                ItemCode::SkuNotFound
            } else if lower.contains("does not have a corresponding license") {
                return DirectoryError::AlreadyDone { detail };
            } else {
                ItemCode::Other
            };
            DirectoryError::Permanent { code, detail }
        }
    }
}

/// `Retry-After` in seconds (Graph sends delta-seconds).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": message}}))
            .unwrap()
    }

    #[test]
    fn graph_errors_map_to_item_codes() {
        let cases = [
            (
                "Subscription with SKU 6fd2c87f does not have any available licenses.",
                ItemCode::CountViolation,
            ),
            (
                "License assignment cannot be done for user with invalid usage location.",
                ItemCode::UsageLocationMissing,
            ),
            (
                "License assignment failed because service plans A,B are mutually exclusive.",
                ItemCode::MutuallyExclusiveViolation,
            ),
            (
                "License assignment failed because service plan A depends on the service plan(s) B",
                ItemCode::DependencyViolation,
            ),
            (
                "User license is inherited from a group membership and it cannot be removed directly from the user.",
                ItemCode::InheritedFromGroup,
            ),
            (
                "License 1234 does not correspond to a valid company License.",
                ItemCode::SkuNotFound,
            ),
            ("Something new.", ItemCode::Other),
        ];
        for (message, code) in cases {
            assert_eq!(
                classify(400, &body("Request_BadRequest", message), None),
                DirectoryError::Permanent {
                    code,
                    detail: message.into()
                }
            );
        }
        assert!(matches!(
            classify(
                400,
                &body(
                    "Request_BadRequest",
                    "User does not have a corresponding license."
                ),
                None
            ),
            DirectoryError::AlreadyDone { .. }
        ));
        assert_eq!(
            classify(404, &body("Request_ResourceNotFound", "x"), None).item_code(),
            ItemCode::UserNotFound
        );
    }

    #[test]
    fn transient_and_credentials() {
        let t = classify(429, b"", Some(Duration::from_secs(3)));
        assert!(t.is_transient());
        assert_eq!(t.item_code(), ItemCode::Throttled);
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert!(
            t.refused() && !t.fate_unknown(),
            "a 429 was not carried out"
        );
        for status in [500, 502, 503, 504] {
            let e = classify(status, b"not json", None);
            assert_eq!(e.item_code(), ItemCode::DirectoryUnavailable);
            // Only a 503 says the request was not carried out; after the others a write may
            // have been made, and is read before it is sent again.
            assert_eq!(e.refused(), status == 503, "{status}");
            assert_eq!(e.fate_unknown(), status != 503, "{status}");
        }
        assert!(DirectoryError::unavailable("connection closed").fate_unknown());
        let expired = classify(401, &body("InvalidAuthenticationToken", "expired"), None);
        assert!(expired.is_transient() && expired.refused());
        assert!(matches!(
            classify(
                403,
                &body("Authorization_RequestDenied", "Insufficient privileges"),
                None
            ),
            DirectoryError::CredentialsRejected { .. }
        ));
        assert_eq!(parse_retry_after(Some("5")), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(Some("soon")), None);
    }
}

/// What a directory failure means for a whole request or a whole job (a member's own result is
/// [`DirectoryError::item_code`]). The API answers it ([`Failure::code`] with an HTTP status), a
/// job that meets it ends `failed` with the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The tenant has no directory connection, or its client secret cannot be read with this
    /// deployment's key: an admin must set the connection (again).
    NotConfigured,
    /// The directory refused licensor's credentials (401/403 on the token or the call).
    CredentialsRejected,
    /// The directory did not answer, or answered 429/5xx until the retries ran out.
    Unavailable,
    /// What was asked for does not exist in the directory.
    NotFound,
    /// Any other refusal.
    Other,
}

impl Failure {
    /// The stable error code: problem+json `code` in the API, `error.code` of a failed job.
    pub fn code(self) -> &'static str {
        match self {
            Failure::NotConfigured => "directory_not_configured",
            Failure::CredentialsRejected => "directory_credentials_rejected",
            Failure::Unavailable => "directory_unavailable",
            Failure::NotFound => "not_found",
            Failure::Other => "directory_error",
        }
    }
}
