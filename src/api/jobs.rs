//! Reading group license jobs.

use axum::extract::State;
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::jobs::{self, JobFilter, JobView};
use licensor_core::page::PageRequest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Auth;
use super::extract::{Json, Path, Query};
use super::problem::{ApiError, ApiResult};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Comma-separated statuses: queued, running, finished, finished_with_exception, failed, cancelled.
    pub status: Option<String>,
    /// Comma-separated kinds: assign, remove, replace, export.
    pub kind: Option<String>,
    /// Page size, 1–500 (default 50).
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobView>,
    pub next_cursor: Option<String>,
}

/// Parse a comma-separated list of values, naming the parameter on error.
pub(crate) fn csv_param<T: std::str::FromStr<Err = String>>(
    name: &str,
    value: Option<&str>,
) -> Result<Vec<T>, ApiError> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("{name}: {e}")))
        })
        .collect()
}

/// The tenant's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])), params(ListJobsQuery), responses(
    (status = 200, body = JobList),
    (status = 400, body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 401, body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list_jobs(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListJobsQuery>,
) -> ApiResult<Json<JobList>> {
    let filter = JobFilter {
        status: csv_param::<JobStatus>("status", q.status.as_deref())?,
        kind: csv_param::<JobKind>("kind", q.kind.as_deref())?,
    };
    let page = PageRequest::<Uuid>::parse(q.limit, q.cursor.as_deref())?;
    let page = jobs::list(&state.db, auth.tenant_id(), &filter, &page).await?;
    Ok(Json(JobList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// One job with its progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 404, body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(jobs::get(&state.db, auth.tenant_id(), id).await?))
}
