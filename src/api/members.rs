//! One directory member's history across the tenant's jobs.

use axum::extract::State;
use axum::extract::rejection::PathRejection;
use licensor_core::jobs::history::{self, HistoryEntry, MemberRef};
use licensor_core::page::PageRequest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Auth;
use super::extract::{Json, Query, text_path};
use super::problem::{ApiError, ApiResult};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryList {
    pub data: Vec<HistoryEntry>,
    pub next_cursor: Option<String>,
}

/// What happened to one member (any role): every item of the tenant's jobs that touched the
/// member — the job, its kind and status, the run, the member's outcome with its error code and
/// detail, the licenses before and after where the job's change ledger recorded a write, the
/// group — newest first. The member is its user id (a GUID) or user principal name (matched
/// without regard to case). A well-formed member no job of the tenant touched (or one of another
/// tenant) → 200 with empty `data`; a malformed one → 400 `invalid_member`.
#[utoipa::path(get, path = "/v1/members/{member}/history", tag = "members", security(("bearer" = [])),
    params(
        ("member" = String, Path, description = "The member's user id (GUID) or user principal name", max_length = 256),
        HistoryQuery,
    ),
    responses(
        (status = 200, body = HistoryList, description = "The member's items, newest first; empty when no job of the tenant touched a well-formed member"),
    ))]
pub async fn member_history(
    State(state): State<AppState>,
    auth: Auth,
    member: Result<axum::extract::Path<String>, PathRejection>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<HistoryList>> {
    let member = text_path(member, |why| {
        ApiError::bad_request(
            "invalid_member",
            format!("a member is its user id (a GUID) or user principal name: {why}"),
        )
    })?;
    let member =
        MemberRef::parse(&member).map_err(|e| ApiError::bad_request("invalid_member", e))?;
    // The member as parsed: a cursor reads on whichever way the member is written (a GUID in
    // braces, a user principal name in capitals).
    let scope = match &member {
        MemberRef::UserId(id) => format!("history:{id}"),
        MemberRef::Upn(upn) => format!("history:{upn}"),
    };
    let page = PageRequest::<i64>::parse_in(scope, q.limit, q.cursor.as_deref())?;
    let page = history::member_history(&state.db, auth.tenant_id(), &member, &page).await?;
    Ok(Json(HistoryList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}
