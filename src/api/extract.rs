//! Extractors whose rejections are problem+json with a stable code, never axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

use super::problem::ApiError;

/// JSON body; malformed JSON → 400 `malformed_json`, wrong shape → 422 `invalid_body`,
/// wrong content type → 415 `unsupported_media_type`, too large → 413 `body_too_large`.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        use axum::http::StatusCode;
        match r {
            JsonRejection::JsonDataError(e) => {
                ApiError::unprocessable("invalid_body", body_text(&e.body_text()))
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request("malformed_json", body_text(&e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than this server accepts",
            ),
            other => ApiError::bad_request("malformed_body", body_text(&other.body_text())),
        }
    }
}

/// Query string; anything unparsable → 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", body_text(&r.body_text()))
    }
}

/// Path parameters; a malformed id is "not found" (404), as no such object can exist.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no such resource ({})", body_text(&r.body_text())),
        )
    }
}

/// axum's rejection texts, trimmed to one line.
fn body_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
