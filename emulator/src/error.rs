//! Graph error bodies: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Content type Graph answers JSON with.
pub const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

tokio::task_local! {
    /// The request being served: its `request-id` and `client-request-id`.
    pub static REQUEST: RequestIds;
}

#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

pub fn current_ids() -> RequestIds {
    REQUEST.try_with(Clone::clone).unwrap_or_else(|_| {
        let id = Uuid::new_v4().to_string();
        RequestIds {
            request_id: id.clone(),
            client_request_id: id,
        }
    })
}

#[derive(Debug, Clone)]
pub struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub headers: Vec<(HeaderName, String)>,
    /// Extra members of `innerError` (throttling adds some).
    pub inner: Map<String, Value>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
            inner: Map::new(),
        }
    }

    /// 400 `Request_BadRequest`, the directory's validation error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    /// 400 `BadRequest`, the OData layer's error (query syntax, unknown segments and properties).
    pub fn odata(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unsupported_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
    }

    pub fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    pub fn invalid_id(id: &str) -> Self {
        Self::bad_request(format!("Invalid object identifier '{id}'."))
    }

    pub fn invalid_license(sku: &impl std::fmt::Display) -> Self {
        Self::bad_request(format!(
            "License {sku} does not correspond to a valid company License."
        ))
    }

    pub fn unauthenticated(message: &str) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        e.headers.push((
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"".into(),
        ));
        e
    }

    pub fn throttled(retry_after: u64, scope: String, info: &str) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Please retry again later.",
        );
        e.headers
            .push((header::RETRY_AFTER, retry_after.to_string()));
        e.headers
            .push((HeaderName::from_static("x-ms-throttle-scope"), scope));
        e.headers.push((
            HeaderName::from_static("x-ms-throttle-information"),
            info.to_string(),
        ));
        e.inner.insert("code".into(), json!("429"));
        e.inner
            .insert("message".into(), json!("Please retry after"));
        e.inner.insert("status".into(), json!("429"));
        e
    }

    pub fn body(&self) -> Value {
        let ids = current_ids();
        let mut inner = self.inner.clone();
        inner.insert(
            "date".into(),
            json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()),
        );
        inner.insert("request-id".into(), json!(ids.request_id));
        inner.insert("client-request-id".into(), json!(ids.client_request_id));
        json!({"error": {"code": self.code, "message": self.message, "innerError": inner}})
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(GRAPH_JSON));
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        res
    }
}

/// A successful Graph JSON answer.
pub fn graph_json(status: StatusCode, v: &Value) -> Response {
    let mut res = (status, v.to_string()).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GRAPH_JSON));
    res
}
