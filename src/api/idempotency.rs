//! `Idempotency-Key` on mutating POSTs: a repeat with the same key and body returns the first
//! answer and does nothing again; the same key with a different request → 422
//! `idempotency_key_reused`; while the first is still being answered → 409
//! `idempotency_key_in_use`; when the process answering it stopped before it kept or released
//! the key (its claim's lease ran out) → 409 `idempotency_key_interrupted`, for the client to
//! look at what it asked for and send again with a new key if it did not happen. A request whose
//! client goes away is answered to its end all the same, and its answer kept. Server errors
//! and 429s are not kept, so a retry runs again; any
//! other answer, a refusal too, is the answer to that request (CONTRACT §API). The same request
//! means the same method, path and JSON value: the order of an object's keys and white space do
//! not matter.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use licensor_core::idempotency::{self, Claim, Stored};
use licensor_core::tokens;
use tracing::Instrument;

use super::AppState;
use super::problem::ApiError;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that is a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";

/// Whether `path` (a request path or an OpenAPI path template) is a route whose answer
/// carries a secret shown once (a new API token, a webhook's signing secret): such answers are
/// never kept, so never replayed.
pub(crate) fn not_kept(path: &str) -> bool {
    path == "/v1/tokens"
        || path == "/v1/webhooks"
        || (path.starts_with("/v1/webhooks/") && path.ends_with("/rotate-secret"))
}

pub async fn idempotency(
    State((state, max_body_bytes)): State<(AppState, usize)>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST || not_kept(req.uri().path()) {
        return next.run(req).await;
    }
    let mut keys = req.headers().get_all(HEADER).iter();
    let Some(key) = keys.next() else {
        return next.run(req).await;
    };
    if keys.next().is_some() {
        return ApiError::bad_request(
            "invalid_idempotency_key",
            "send one Idempotency-Key header, not several",
        )
        .into_response();
    }
    let Some(key) = key.to_str().ok().filter(|k| idempotency::valid_key(k)) else {
        return ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 visible ASCII characters",
        )
        .into_response();
    };
    let key = key.to_owned();
    // Keys belong to the caller's tenant; without a valid token the handler answers 401.
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let principal = match bearer {
        Some(t) => tokens::authenticate(&state.db, &t).await.ok().flatten(),
        None => None,
    };
    let Some(principal) = principal else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::body_too_large().into_response();
        }
    };
    let fingerprint = idempotency::fingerprint(parts.method.as_str(), parts.uri.path(), &bytes);
    let tenant_id = principal.tenant_id;
    match idempotency::claim(&state.db, tenant_id, &key, &fingerprint).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Claim::Reused) => ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )
        .into_response(),
        Ok(Claim::InProgress) => ApiError {
            retry_after: Some(1),
            ..ApiError::conflict(
                "idempotency_key_in_use",
                "the first request with this Idempotency-Key is still being answered; retry shortly",
            )
        }
        .into_response(),
        Ok(Claim::Interrupted) => ApiError::conflict(
            "idempotency_key_interrupted",
            "the first request with this Idempotency-Key was being answered when the server stopped, and whether it took effect is not known: look at what it asked for, and if it did not happen send it again with a new key",
        )
        .into_response(),
        Ok(Claim::Replay(stored)) => replay(stored),
        Ok(Claim::Fresh(claim)) => {
            // Answered to the end in a task of its own: a client that goes away (a timeout, a
            // dropped connection) must not cut the request off between its effects and the
            // answer kept for its key. Cut off, the key was held by nobody, and the retry was
            // told "in progress" for the lease, then "interrupted", of a job that was made.
            let request = Request::from_parts(parts, Body::from(bytes));
            let answering = tokio::spawn(
                answer(state, tenant_id, key, claim, request, next).in_current_span(),
            );
            match answering.await {
                Ok(response) => response,
                // The handler panicked: its claim, no longer renewed, runs out and the key is
                // "interrupted" (whether it took effect is not known).
                Err(_) => ApiError::internal("the request could not be answered").into_response(),
            }
        }
    }
}

/// Run a request whose key was claimed afresh (`claim`), and keep its answer for the key — or
/// release the key for a retry to run again, if the answer is a server error or a 429.
async fn answer(
    state: AppState,
    tenant_id: uuid::Uuid,
    key: String,
    claim: i64,
    request: Request,
    next: Next,
) -> Response {
    // The claim is held while the request runs and its answer is kept or released.
    let held = hold(&state, tenant_id, &key, claim);
    let response = next.run(request).await;
    // Server errors and rate-limit refusals are not answers to keep: a retry with the
    // same key runs again.
    if response.status().is_server_error() || response.status() == StatusCode::TOO_MANY_REQUESTS {
        // Released beside the answer (it retries while the database is away or busy),
        // so the 503 goes out at once; a retry meanwhile is told 409 "retry shortly".
        release_soon(&state, tenant_id, key, claim, held);
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        release_soon(&state, tenant_id, key, claim, held);
        return ApiError::internal("response body could not be read").into_response();
    };
    let stored = Stored {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
        location: parts
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    if let Err(e) = idempotency::finish(&state.db, tenant_id, &key, claim, &stored).await {
        tracing::warn!(error = %e, "could not keep the answer to an idempotency key");
    }
    drop(held);
    parts.headers.remove(REPLAYED);
    Response::from_parts(parts, Body::from(body))
}

/// Renew claim `claim` of `key` every [`idempotency::LEASE_RENEWAL`] until the returned task is
/// dropped, so a request that takes long is never taken for one whose process stopped; each
/// renewal waits out a pool with no connection free (see [`idempotency::renew`]).
fn hold(
    state: &AppState,
    tenant_id: uuid::Uuid,
    key: &str,
    claim: i64,
) -> licensor_core::tasks::AbortOnDrop {
    let (db, key) = (state.db.clone(), key.to_owned());
    licensor_core::tasks::AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(idempotency::LEASE_RENEWAL).await;
            if let Err(e) = idempotency::renew(&db, tenant_id, &key, claim).await {
                tracing::warn!(error = %e, "could not renew the claim of an idempotency key");
            }
        }
    }))
}

/// Release `key` in a task of its own (see [`idempotency::release`]), holding its claim
/// (`held`) until then.
fn release_soon(
    state: &AppState,
    tenant_id: uuid::Uuid,
    key: String,
    claim: i64,
    held: licensor_core::tasks::AbortOnDrop,
) {
    let db = state.db.clone();
    tokio::spawn(async move {
        if let Err(e) = idempotency::release(&db, tenant_id, &key, claim).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        drop(held);
    });
}

fn replay(stored: Stored) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    if let Some(ct) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        headers.insert(CONTENT_TYPE, ct);
    }
    if let Some(location) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(LOCATION, location);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
