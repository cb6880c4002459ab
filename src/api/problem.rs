//! RFC 9457 problem details: the one conversion from an error to an HTTP response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use licensor_core::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An `application/problem+json` body. `code` is stable and snake_case; clients branch on it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    /// Extra, code-specific fields (e.g. seat counts for `no_licenses_available`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An error answered to an API caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this server accepts",
        )
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// 503 `database_unavailable` with `Retry-After: 2`: the database does not answer (down,
    /// restarting, or no connection free within [`licensor_core::db::API_ACQUIRE_TIMEOUT`]).
    /// Nothing was changed; the same request can be sent again.
    pub fn database_unavailable() -> Self {
        tracing::warn!("database unavailable; answered 503");
        ApiError {
            retry_after: Some(2),
            ..Self::unavailable(
                "database_unavailable",
                "the database is not reachable right now; nothing was changed, try again shortly",
            )
        }
    }

    /// A failure that is ours, not the caller's: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; it has been logged",
        )
    }

    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        if let serde_json::Value::Object(map) = extra {
            self.extra = Some(map);
        }
        self
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!(
                "https://licensor.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            extra: self.extra.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(detail) => ApiError::conflict("conflict", detail),
            StoreError::Invalid(detail) => ApiError::unprocessable("invalid", detail),
            StoreError::Internal(detail) => ApiError::internal(detail),
            StoreError::Refused {
                kind,
                code,
                detail,
                extra,
            } => {
                let status = match kind {
                    licensor_core::error::Refusal::NotFound => StatusCode::NOT_FOUND,
                    licensor_core::error::Refusal::Conflict => StatusCode::CONFLICT,
                    licensor_core::error::Refusal::Unacceptable => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let error = ApiError::new(status, code, detail);
                match extra {
                    Some(extra) => error.with_extra(extra),
                    None => error,
                }
            }
            other if other.is_unavailable() => ApiError::database_unavailable(),
            other => ApiError::internal(other),
        }
    }
}

impl From<licensor_core::page::PageError> for ApiError {
    fn from(e: licensor_core::page::PageError) -> Self {
        ApiError::bad_request("invalid_query", e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
