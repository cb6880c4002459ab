//! The HTTP API (`/v1`), health and metrics endpoints, and `/openapi.json`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use licensor_core::crypto::SecretBox;
use licensor_core::db::Db;
use licensor_core::queue::Queue;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use auth::SecurityAddon;

pub mod activity;
pub mod audit;
pub mod auth;
pub mod bulk;
mod common_answers;
pub mod directory;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod jobs;
pub mod licenses;
pub mod members;
pub mod printable;
pub mod problem;
pub mod rate_limit;
pub mod tenant;
pub mod tokens;
pub mod webhooks;

/// Shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub queue: Queue,
    pub secrets: SecretBox,
    pub metrics: PrometheusHandle,
    pub openapi: Arc<utoipa::openapi::OpenApi>,
    pub directory: licensor_core::directory::DirectoryClients,
    pub jobs: licensor_core::config::JobSettings,
    /// Webhook settings (the URL allow-list) and the key that seals signing secrets.
    pub webhooks: licensor_core::webhooks::Webhooks,
    /// Per-token request budget; `None` = no limit.
    pub rate_limit: Option<Arc<rate_limit::TokenRateLimiter>>,
    /// How long a request waits for the directory (`api.directory_wait_secs`).
    pub directory_wait: std::time::Duration,
}

impl AppState {
    /// `job` with its `stuck` flag set as of now (`jobs.stuck_after_secs`).
    pub fn flag_stuck(&self, job: licensor_core::jobs::JobView) -> licensor_core::jobs::JobView {
        job.flag_stuck(
            std::time::Duration::from_secs(self.jobs.stuck_after_secs),
            chrono::Utc::now(),
        )
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "licensor",
        description = "Group license jobs, seat inventory and started licenses for organisations.",
    ),
    modifiers(&SecurityAddon),
    components(schemas(problem::Problem)),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "tenant", description = "The caller's tenant and API tokens"),
        (name = "jobs", description = "Group license jobs"),
        (name = "licenses", description = "Seat inventory and started licenses: checkout, checkin, Used By, reusable started seats"),
        (name = "audit", description = "Who changed what"),
        (name = "members", description = "What licensor's jobs did to one directory member"),
        (name = "directory", description = "The tenant's directory: groups, subscribed SKUs, users and the licenses group members hold"),
        (name = "webhooks", description = "Endpoints told when a job's run ends (Standard Webhooks), and their delivery log"),
    )
)]
struct ApiDoc;

/// Every route with its OpenAPI description; the document is built from the same list that
/// serves requests, so it cannot miss one.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_json))
        .routes(routes!(tenant::whoami))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(jobs::list_jobs, jobs::submit_job))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::launch_job))
        .routes(routes!(jobs::list_runs))
        .routes(routes!(activity::job_activity))
        .routes(routes!(jobs::list_items))
        .routes(routes!(jobs::list_errors))
        .routes(routes!(jobs::report))
        .routes(routes!(jobs::export_file))
        .routes(routes!(jobs::rerun_job))
        .routes(routes!(bulk::rerun_jobs))
        .routes(routes!(bulk::cancel_jobs))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::resume_job))
        .routes(routes!(jobs::list_changes))
        .routes(routes!(jobs::undo_job))
        .routes(routes!(members::member_history))
        .routes(routes!(licenses::list_licenses, licenses::create_license))
        .routes(routes!(licenses::get_license, licenses::update_license))
        .routes(routes!(licenses::checkout_license))
        .routes(routes!(licenses::checkin_license))
        .routes(routes!(licenses::list_assignments))
        .routes(routes!(licenses::get_assignment))
        .routes(routes!(licenses::started_seats))
        .routes(routes!(licenses::list_held))
        .routes(routes!(licenses::checkin_held))
        .routes(routes!(audit::list_audit))
        .routes(routes!(directory::list_groups))
        .routes(routes!(directory::list_skus))
        .routes(routes!(directory::list_users))
        .routes(routes!(directory::held_licenses))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::redeliver))
}

/// The OpenAPI document alone (for `licensor openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    common_answers::document(&mut doc);
    doc
}

/// Build the router over `state` (whose `openapi` field is filled in here).
pub fn router(mut state: AppState, max_body_bytes: usize) -> Router {
    let (router, mut openapi) = routes().split_for_parts();
    common_answers::document(&mut openapi);
    state.openapi = Arc::new(openapi);
    router
        .merge(crate::web::router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .layer(middleware::from_fn(track_requests))
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(middleware::map_response(body_too_large_as_problem))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Method and path only: headers (Authorization) and bodies never reach the logs.
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .layer(middleware::from_fn_with_state(
            (state.clone(), max_body_bytes),
            idempotency::idempotency,
        ))
        // Outermost: a path or query with a control character is refused before any other
        // layer acts on it (the idempotency layer would look up its token and claim its key).
        .layer(middleware::from_fn(printable::refuse_control_characters))
        .with_state(state)
}

async fn fallback() -> problem::ApiError {
    problem::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

/// The body limit's own 413 (sent when `Content-Length` is already too large) as problem+json.
async fn body_too_large_as_problem(response: Response) -> Response {
    use axum::response::IntoResponse;
    if response.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE
        || response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct == "application/problem+json")
    {
        return response;
    }
    problem::ApiError::body_too_large().into_response()
}

async fn method_not_allowed() -> problem::ApiError {
    problem::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// Count requests by route and status and time them.
async fn track_requests(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("licensor_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("licensor_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// State as seen by handlers that need the whole of it.
pub type AppStateRef = State<AppState>;
