//! A job's activity minute by minute: members done and 429s met, for the Job Monitor's charts.

use axum::extract::State;
use licensor_core::jobs::activity::{self, ActivityMinute};
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
pub struct ActivityQuery {
    /// Page size, 1–500 (default 50): minutes per page.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ActivityList {
    /// Minutes with activity, oldest first; minutes with none are left out.
    pub data: Vec<ActivityMinute>,
    pub next_cursor: Option<String>,
}

/// A job's activity per minute (UTC): members that reached each outcome, and the 429 answers
/// (throttled directory requests) its workers met, oldest minute first. Counted as the workers
/// record each chunk, so over a job's first run the counts add up to its progress; reruns add
/// their minutes, and members a cancel skipped are not counted (no worker settled them).
#[utoipa::path(get, path = "/v1/jobs/{id}/activity", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id"), ActivityQuery),
    responses(
        (status = 200, body = ActivityList),
    ))]
pub async fn job_activity(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(q): Query<ActivityQuery>,
) -> ApiResult<Json<ActivityList>> {
    let page =
        PageRequest::<i64>::parse_in(format!("activity:{id}"), q.limit, q.cursor.as_deref())?;
    if page
        .after
        .is_some_and(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0).is_none())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "cursor is not one of this list: a cursor reads on only in the list, and with the filters, that issued it",
        ));
    }
    let page = activity::series(&state.db, auth.tenant_id(), id, &page).await?;
    Ok(Json(ActivityList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}
