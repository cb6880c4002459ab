//! The tenant's directory, for the web app's pickers: groups by name, subscribed SKUs with their
//! free units, users by name or userPrincipalName (the checkout picker), and the licenses the
//! members of some groups hold (the Remove and Replace pickers).

use axum::extract::State;
use licensor_core::directory::{
    ClientError, DirectoryClient, DirectoryError, DirectoryUser, Failure, Group, Sku,
};
use licensor_core::jobs::preview::{HeldSample, held_by_members};
use licensor_core::jobs::request::parse_groups;
use licensor_core::tenants;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Auth;
use super::extract::{Json, NoQuery, Query};
use super::problem::{ApiError, ApiResult};

/// The caller's tenant's directory client.
pub(crate) async fn client(state: &AppState, auth: &Auth) -> ApiResult<DirectoryClient> {
    let tenant = tenants::get(&state.db, auth.tenant_id()).await?;
    state.directory.for_tenant(&tenant).map_err(|e| match e {
        ClientError::Directory(e) => directory_error(e),
        e => {
            if let ClientError::Secret(secret) = &e {
                tracing::warn!(tenant = %auth.tenant_id(), error = %secret, "the tenant's client secret cannot be read");
            }
            ApiError::conflict(e.failure().code(), e.to_string())
        }
    })
}

/// `read` (a directory read, with its retries), answered within `state.directory_wait`
/// (`api.directory_wait_secs`); past it, [`DirectoryError`] `Transient` — 503
/// `directory_unavailable` with Retry-After through [`directory_error`]. An API caller, a person
/// at a picker or a CLI, is told the directory is not answering rather than wait for the
/// workers' whole retry budget (minutes).
pub(crate) async fn answered<T>(
    state: &AppState,
    read: impl std::future::Future<Output = Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    tokio::time::timeout(state.directory_wait, read)
        .await
        .unwrap_or_else(|_| {
            Err(DirectoryError::unavailable(format!(
                "no answer within {} s (api.directory_wait_secs)",
                state.directory_wait.as_secs()
            )))
        })
}

/// The `Retry-After` (seconds) of a 503 `directory_unavailable`.
const DIRECTORY_RETRY_AFTER_SECS: u64 = 5;

/// A directory failure as seen by an API caller: its one classification ([`Failure`]) with the
/// HTTP status that goes with it.
pub(crate) fn directory_error(e: DirectoryError) -> ApiError {
    use axum::http::StatusCode;
    let failure = e.failure();
    let detail = match &e {
        DirectoryError::CredentialsRejected { detail } => {
            format!("directory credentials rejected: {detail}")
        }
        DirectoryError::NotFound { detail } => detail.clone(),
        DirectoryError::Transient { detail, .. } => {
            format!("the directory did not answer in time: {detail}")
        }
        other => other.to_string(),
    };
    match failure {
        Failure::NotFound => ApiError::new(StatusCode::NOT_FOUND, failure.code(), detail),
        // The directory did not answer (in time): worth asking again in a few seconds.
        Failure::Unavailable => ApiError {
            retry_after: Some(DIRECTORY_RETRY_AFTER_SECS),
            ..ApiError::unavailable(failure.code(), detail)
        },
        Failure::NotConfigured => ApiError::conflict(failure.code(), detail),
        Failure::CredentialsRejected | Failure::Other => {
            ApiError::new(StatusCode::BAD_GATEWAY, failure.code(), detail)
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupSearch {
    /// Start of the group's display name (at most 256 characters).
    #[param(max_length = 256)]
    pub search: Option<String>,
    /// At most this many groups, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct GroupList {
    pub data: Vec<Group>,
}

/// Directory groups whose name starts with `search`.
#[utoipa::path(get, path = "/v1/directory/groups", tag = "directory", security(("bearer" = [])), params(GroupSearch), responses(
    (status = 200, body = GroupList),
    (status = 502, body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 503, body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list_groups(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<GroupSearch>,
) -> ApiResult<Json<GroupList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 500",
        ));
    }
    if q.search.as_ref().is_some_and(|s| s.chars().count() > 256) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "search is at most 256 characters",
        ));
    }
    let client = client(&state, &auth).await?;
    let groups = answered(
        &state,
        client.list_groups(q.search.as_deref(), limit as usize),
    )
    .await
    .map_err(directory_error)?;
    Ok(Json(GroupList { data: groups }))
}

#[derive(Serialize, ToSchema)]
pub struct SkuList {
    pub data: Vec<Sku>,
}

/// The tenant's subscribed SKUs with enabled, consumed and available units.
#[utoipa::path(get, path = "/v1/directory/skus", tag = "directory", security(("bearer" = [])), responses(
    (status = 200, body = SkuList),
    (status = 502, body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 503, body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list_skus(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
) -> ApiResult<Json<SkuList>> {
    let client = client(&state, &auth).await?;
    let skus = answered(&state, client.subscribed_skus())
        .await
        .map_err(directory_error)?;
    Ok(Json(SkuList { data: skus }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserSearch {
    /// Start of the user's display name or userPrincipalName (at most 256 characters).
    #[param(max_length = 256)]
    pub search: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page (same `search`).
    #[param(max_length = 2048)]
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub data: Vec<DirectoryUser>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Directory users whose display name or userPrincipalName starts with `search`, a page at a
/// time, read through the tenant's directory connection (the checkout picker).
#[utoipa::path(get, path = "/v1/directory/users", tag = "directory", security(("bearer" = [])), params(UserSearch), responses(
    (status = 200, body = UserList),
    (status = 502, body = super::problem::Problem, content_type = "application/problem+json"),
    (status = 503, body = super::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<UserSearch>,
) -> ApiResult<Json<UserList>> {
    let limit = q.limit.unwrap_or(25);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 100",
        ));
    }
    if q.search.as_ref().is_some_and(|s| s.chars().count() > 256) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "search is at most 256 characters",
        ));
    }
    let cursor_ok = |c: &str| {
        !c.is_empty()
            && c.len() <= 2048
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~=+/%".contains(&b))
    };
    if q.cursor.as_deref().is_some_and(|c| !cursor_ok(c)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "cursor is not valid",
        ));
    }
    let client = client(&state, &auth).await?;
    let page = answered(
        &state,
        client.search_users(q.search.as_deref(), limit as usize, q.cursor.as_deref()),
    )
    .await
    .map_err(|e| match e {
        // A page token the directory refuses is the caller's stale cursor.
        DirectoryError::Permanent { .. } if q.cursor.is_some() => ApiError::bad_request(
            "invalid_query",
            "cursor is not valid (expired or from another search)",
        ),
        other => directory_error(other),
    })?;
    Ok(Json(UserList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// At most this many members are read to count the licenses held by the members of the groups
/// chosen in the New job form: enough for the Remove and Replace pickers to list what the
/// members hold, quickly (two member pages), on the first screen. A larger selection is
/// counted from its first members and the answer says so (`sampled`); a preview counts them all.
pub const HELD_SAMPLE_MEMBERS: usize = 1000;

/// One selected group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPick {
    /// The directory group id (a GUID).
    pub id: String,
}

/// The groups whose members' licenses are counted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldLicensesRequest {
    /// 1–100 directory groups.
    pub groups: Vec<GroupPick>,
    /// Include members of nested groups (default false).
    #[serde(default)]
    pub transitive: bool,
}

/// The licenses the members hold, per SKU, from at most `sample_limit` members.
#[derive(Serialize, ToSchema)]
pub struct HeldLicenses {
    #[serde(flatten)]
    pub sample: HeldSample,
    /// The most members read for one answer.
    pub sample_limit: i64,
}

/// The licenses held by the members of the selected groups (the New job form's Remove and
/// Replace pickers): per SKU, how many members hold it directly and how many through a group.
/// The members are read as a job reads them, up to the first 1,000 (`sample_limit`); `sampled`
/// says whether there were more. Groups that are not GUIDs, none, or more than 100 → 422; a
/// group the directory does not know → 422 `group_not_found`.
#[utoipa::path(post, path = "/v1/directory/held-licenses", tag = "directory", security(("bearer" = [])),
    request_body = HeldLicensesRequest,
    responses(
        (status = 200, body = HeldLicenses),
        (status = 502, body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 503, body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn held_licenses(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<HeldLicensesRequest>,
) -> ApiResult<Json<HeldLicenses>> {
    let ids: Vec<String> = body.groups.into_iter().map(|g| g.id).collect();
    let groups = parse_groups(&ids)?;
    let client = client(&state, &auth).await?;
    let sample = answered(
        &state,
        held_by_members(&client, &groups, body.transitive, HELD_SAMPLE_MEMBERS),
    )
    .await
    .map_err(|e| match e {
        DirectoryError::NotFound { .. } => ApiError::unprocessable(
            "group_not_found",
            "a selected group does not exist in the directory",
        ),
        other => directory_error(other),
    })?;
    Ok(Json(HeldLicenses {
        sample,
        sample_limit: HELD_SAMPLE_MEMBERS as i64,
    }))
}
