//! Liveness, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::{db, jobs};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::problem::{ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub database: &'static str,
    pub queue: &'static str,
}

/// The database and the queue answer.
/// How long `/readyz` waits for each of the database and the queue.
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(600);

#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Readiness>> {
    // Answered within a second whatever is down: a check that has not answered by then counts
    // as down.
    let within = |ok: Option<bool>| ok.unwrap_or(false);
    let (db_ok, queue_ok) = tokio::join!(
        tokio::time::timeout(READY_CHECK_TIMEOUT, db::ping(&state.db)),
        tokio::time::timeout(READY_CHECK_TIMEOUT, state.queue.ping())
    );
    let (db_ok, queue_ok) = (within(db_ok.ok()), within(queue_ok.ok()));
    if db_ok && queue_ok {
        return Ok(Json(Readiness {
            status: "ready",
            database: db::backend_name(&state.db),
            queue: state.queue.backend_name(),
        }));
    }
    let mut down = Vec::new();
    if !db_ok {
        down.push("database");
    }
    if !queue_ok {
        down.push("queue");
    }
    Err(ApiError::unavailable(
        "not_ready",
        format!("not reachable: {}", down.join(", ")),
    ))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(rows) = jobs::count_by_status(&state.db).await {
        // Every kind × status, so a status that emptied reads 0 rather than its last value.
        for kind in [
            JobKind::Assign,
            JobKind::Remove,
            JobKind::Replace,
            JobKind::Export,
        ] {
            for status in JobStatus::ALL {
                let n = rows
                    .iter()
                    .find(|(k, s, _)| *k == kind && *s == status)
                    .map_or(0, |(_, _, n)| *n);
                metrics::gauge!("licensor_jobs", "kind" => kind.as_str(), "status" => status.as_str())
                    .set(n as f64);
            }
        }
    }
    let stuck_before =
        chrono::Utc::now() - chrono::Duration::seconds(state.jobs.stuck_after_secs as i64);
    if let Ok(rows) = jobs::activity::stuck_by_tenant(&state.db, stuck_before).await {
        for (tenant, n) in rows {
            metrics::gauge!("licensor_jobs_stuck", "tenant" => tenant.to_string()).set(n as f64);
        }
    }
    if let Ok(n) = jobs::pending_items(&state.db).await {
        metrics::gauge!("licensor_job_items_pending").set(n as f64);
    }
    // Every outcome reads 0 until it happens (dashboards and alert rules name them).
    for outcome in ["delivered", "retrying", "failed"] {
        metrics::counter!("licensor_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    if let Ok(n) = licensor_core::webhooks::deliveries::pending_count(&state.db).await {
        metrics::gauge!("licensor_webhook_deliveries_pending").set(n as f64);
    }
    if let Some(n) = state.queue.depth().await {
        metrics::gauge!("licensor_queue_depth", "backend" => state.queue.backend_name())
            .set(n as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object),
))]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.openapi.as_ref().clone())
}

/// The router of a worker-only process's metrics listener (`worker.metrics_listen`):
/// `GET /metrics` with this process's own metrics, `GET /healthz`.
pub fn worker_metrics_router() -> axum::Router {
    let handle = crate::telemetry::metrics_handle();
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(healthz))
}
