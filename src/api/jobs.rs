//! Group license jobs: submit, read, items, runs, reports, exports, rerun and cancel.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use licensor_core::domain::{ItemStatus, JobKind, JobStatus};
use licensor_core::jobs::files::File;
use licensor_core::jobs::history::MemberRef;
use licensor_core::jobs::{
    self, ChangeFilter, ChangeView, ErrorGroup, FileFormat, ItemFilter, ItemView, JobFilter,
    JobRequest, JobSpec, JobView, NewJob, RunView,
};
use licensor_core::page::PageRequest;
use licensor_core::queue::Message;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::{AsAdmin, AsOperator, Auth};
use super::extract::{Filters, Json, NoBody, NoQuery, Path, Query};
use super::problem::{ApiError, ApiResult, Problem};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Comma-separated statuses: queued, running, finished, finished_with_exception, failed,
    /// cancelled, previewed, paused.
    pub status: Option<String>,
    /// Comma-separated kinds: assign, remove, replace, export.
    pub kind: Option<String>,
    /// Jobs that selected this group (its object id).
    pub group: Option<Uuid>,
    /// Jobs whose id starts with these 4–32 hexadecimal digits (hyphens ignored), e.g. the
    /// 8 characters the Job Monitor shows.
    #[param(max_length = 36)]
    pub id_prefix: Option<String>,
    /// Jobs created strictly before this instant (RFC 3339).
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Jobs created at or after this instant (RFC 3339).
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// `true`: the answer also gives `total`, how many jobs match (all pages) — what a bulk
    /// rerun or cancel with the same filter would cover.
    pub count: Option<bool>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobView>,
    pub next_cursor: Option<String>,
    /// With `?count=true`: how many jobs match the filter, on all pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
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

/// The tenant's jobs, newest first, filtered by status, kind, group, creation time or id
/// prefix. A malformed filter → 400 `invalid_query`.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])), params(ListJobsQuery), responses(
    (status = 200, body = JobList),
))]
pub async fn list_jobs(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListJobsQuery>,
    filters: Filters,
) -> ApiResult<Json<JobList>> {
    let id_range = match q.id_prefix.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(jobs::id_prefix_range(p).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "id_prefix: 4 to 32 hexadecimal digits of a job id",
            )
        })?),
    };
    let filter = JobFilter {
        status: csv_param::<JobStatus>("status", q.status.as_deref())?,
        kind: csv_param::<JobKind>("kind", q.kind.as_deref())?,
        group: q.group,
        created_before: q.created_before,
        created_after: q.created_after,
        id_range,
    };
    let page = PageRequest::<Uuid>::parse_in(filters.scope("jobs"), q.limit, q.cursor.as_deref())?;
    let total = match q.count {
        Some(true) => Some(jobs::count(&state.db, auth.tenant_id(), &filter).await?),
        _ => None,
    };
    let page = jobs::list(&state.db, auth.tenant_id(), &filter, &page).await?;
    Ok(Json(JobList {
        data: page.data.into_iter().map(|j| state.flag_stuck(j)).collect(),
        next_cursor: page.next_cursor,
        total,
    }))
}

/// One job with its progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<JobView>> {
    let job = jobs::get(&state.db, auth.tenant_id(), id).await?;
    Ok(Json(state.flag_stuck(job)))
}

/// Put a job's start on the queue. The job is already committed: if the queue cannot take the
/// message now, the reconciler queues the job later, so the caller still gets its job.
pub(crate) async fn enqueue(state: &AppState, job: &JobView, tenant_id: Uuid) {
    let message = Message::Run {
        tenant_id,
        job_id: job.id,
    };
    if let Err(e) = state.queue.push(message).await {
        tracing::warn!(job = %job.id, error = %e, "queueing a job failed; the reconciler will queue it");
    }
}

/// A cancelled job with members still pending: held by a step that records them, or ones
/// licensor may have written without recording the answer, which a worker reads before it
/// calls them anything. A lane is queued for the latter at once, rather than at the
/// reconciler's next look (`jobs.stall_secs`).
pub(crate) async fn settle_soon(state: &AppState, job: &JobView, tenant_id: Uuid) {
    if job.progress.pending == 0 {
        return;
    }
    let message = Message::work(tenant_id, job.id);
    if let Err(e) = state.queue.push(message).await {
        tracing::warn!(job = %job.id, error = %e, "queueing a cancelled job's settling failed");
    }
}

fn accepted(view: JobView) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", view.id)) {
        headers.insert(header::LOCATION, v);
    }
    (StatusCode::ACCEPTED, headers, Json(view)).into_response()
}

/// Submit a group license job (admin): assign, remove or replace licenses for the members of
/// the selected groups, or export what they hold. Before an assign, remove or replace is queued,
/// the request is checked as a whole against the subscribed SKUs: an unknown SKU → 422
/// `unknown_sku`; a disabled plan that is not a plan of its SKU → 422 `plan_not_in_sku`; a SKU
/// with no free unit → 409 `no_licenses_available` with its counts. Refused: no job is created.
/// With `"preview": true` the job writes nothing: it reads the groups, predicts each member's
/// outcome and ends `previewed` with a summary (`preview`), including the seat shortfall — so a
/// SKU without free units is not refused — and `POST /v1/jobs/{id}/launch` runs it; an export
/// cannot be previewed (422 `preview_not_supported`).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body = JobRequest,
    responses(
        (status = 202, body = JobView, headers(("Location" = String, description = "The job's URL"))),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn submit_job(
    State(state): State<AppState>,
    AsAdmin { auth, me, .. }: AsAdmin,
    Json(body): Json<JobRequest>,
) -> ApiResult<Response> {
    let request = body.parse()?;
    let client = super::directory::client(&state, &auth).await?;
    let mut known = jobs::JobFacts::default();
    // An export names no SKU.
    if !matches!(request.spec, JobSpec::Export { .. }) {
        let skus = super::directory::answered(&state, client.subscribed_skus())
            .await
            .map_err(super::directory::directory_error)?;
        jobs::submit::check_against_skus(&request, &skus)?;
        known.skus = skus.iter().map(jobs::SkuRef::of).collect();
    }
    // Names are a courtesy: groups not named in time are read by the job itself, so a slow
    // directory holds the answer back for a moment, not for the whole `directory_wait`.
    let names_wait = state.directory_wait.min(GROUP_NAMES_WAIT);
    known.groups = tokio::time::timeout(names_wait, group_names(&client, &request.groups))
        .await
        .unwrap_or_default();
    let view = jobs::create(
        &state.db,
        NewJob {
            tenant_id: me.tenant_id,
            request,
            created_by: Some(me.token_id),
            parent_job_id: None,
            known: Some(known),
        },
    )
    .await?;
    enqueue(&state, &view, me.tenant_id).await;
    metrics::counter!("licensor_jobs_submitted_total", "kind" => view.kind.as_str()).increment(1);
    Ok(accepted(view))
}

/// How long `POST /v1/jobs` waits for the selected groups' names (at most
/// `api.directory_wait_secs`). A directory that answers slowly would otherwise hold a submit
/// back for the whole wait after its SKUs were read — twice the wait for an assign — only to
/// create the same job with its groups unnamed.
const GROUP_NAMES_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The selected groups' display names as the directory has them now (`GET /groups/{id}`, all
/// at once), so the job shows them while it waits in the queue. A group that cannot be read
/// is left out, unnamed: the job reads its groups itself when it starts, and one the
/// directory does not know fails it with `group_not_found` as before.
async fn group_names(
    client: &licensor_core::directory::DirectoryClient,
    groups: &[jobs::GroupId],
) -> Vec<jobs::GroupRef> {
    let reads = groups.iter().map(|id| async move {
        let group = client.get_group(id.as_str()).await.ok()?;
        Some(jobs::GroupRef {
            id: id.to_string(),
            display_name: group.display_name,
        })
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub data: Vec<RunView>,
}

/// A job's runs: the first and each rerun, with who started it, when, and its counts.
#[utoipa::path(get, path = "/v1/jobs/{id}/runs", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = RunList),
    ))]
pub async fn list_runs(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RunList>> {
    Ok(Json(RunList {
        data: jobs::runs(&state.db, auth.tenant_id(), id).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListItemsQuery {
    /// Comma-separated statuses: pending, succeeded, failed, skipped.
    pub status: Option<String>,
    /// Comma-separated item error codes, e.g. `usage_location_missing,count_violation`
    /// (the directory's codes, and `drifted`, `changed_since`, `cancelled`); an unknown one is
    /// 400 `invalid_query`.
    #[param(pattern = "^[a-z_,]*$", max_length = 1000)]
    pub code: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ItemList {
    pub data: Vec<ItemView>,
    pub next_cursor: Option<String>,
}

/// A comma-separated list of error codes.
fn code_param(value: Option<&str>) -> Result<Vec<String>, ApiError> {
    let code: Vec<String> = value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if code
        .iter()
        .any(|c| c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "code: error codes are snake_case words such as count_violation",
        ));
    }
    // A mistyped code would match nothing and read as "no such items".
    if let Some(unknown) = code
        .iter()
        .find(|c| !jobs::codes::item_codes().any(|known| known == c.as_str()))
    {
        let known: Vec<&str> = jobs::codes::item_codes().collect();
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "code: `{unknown}` is not an item error code; known codes: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(code)
}

/// The `status` and `code` query parameters of the item and change lists.
fn item_filter(status: Option<&str>, code: Option<&str>) -> Result<ItemFilter, ApiError> {
    Ok(ItemFilter {
        status: csv_param::<ItemStatus>("status", status)?,
        code: code_param(code)?,
    })
}

/// A job's items (one per member), in member order.
#[utoipa::path(get, path = "/v1/jobs/{id}/items", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id"), ListItemsQuery),
    responses(
        (status = 200, body = ItemList),
    ))]
pub async fn list_items(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(q): Query<ListItemsQuery>,
    filters: Filters,
) -> ApiResult<Json<ItemList>> {
    let filter = item_filter(q.status.as_deref(), q.code.as_deref())?;
    let page = PageRequest::<i64>::parse_in(
        filters.scope(format_args!("items:{id}")),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = jobs::items(&state.db, auth.tenant_id(), id, &filter, &page).await?;
    Ok(Json(ItemList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ErrorList {
    pub data: Vec<ErrorGroup>,
}

/// A job's failed items grouped by error code, with counts and what each code means.
#[utoipa::path(get, path = "/v1/jobs/{id}/errors", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = ErrorList),
    ))]
pub async fn list_errors(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ErrorList>> {
    Ok(Json(ErrorList {
        data: jobs::error_groups(&state.db, auth.tenant_id(), id).await?,
    }))
}

fn download(file: File) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file.name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    (StatusCode::OK, headers, file.bytes).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// csv (default), json or xlsx.
    #[param(inline)]
    pub format: Option<FileFormat>,
}

/// The job's items with their outcomes, as a file.
#[utoipa::path(get, path = "/v1/jobs/{id}/report", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id"), ReportQuery),
    responses(
        (status = 200, description = "The report file", content((String = "text/csv"), (String = "application/json"), (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
    ))]
pub async fn report(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Response> {
    let format = q.format.unwrap_or(FileFormat::Csv);
    let file = jobs::files::report(&state.db, auth.tenant_id(), id, format).await?;
    Ok(download(file))
}

/// The file an export job produced (one row per member × license, one per member without a
/// license), in the format it asked for — the same file its delivery sent. Not an export → 409 `not_an_export`; not finished yet → 409 `export_not_ready`.
#[utoipa::path(get, path = "/v1/jobs/{id}/export", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The export file", content((String = "text/csv"), (String = "application/json"), (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_file(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let file = jobs::files::export(&state.db, auth.tenant_id(), id).await?;
    // Streamed from the temporary file it was written to (deleted when the stream ends).
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file.name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file.file));
    Ok((
        StatusCode::OK,
        headers,
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Rerun a `failed` or `finished_with_exception` job (operator): only its failed members are
/// worked again (all unfinished ones when the job itself failed); the earlier runs stay in its
/// history. Any other status → 409 `not_rerunnable`.
#[utoipa::path(post, path = "/v1/jobs/{id}/rerun", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, body = JobView),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rerun_job(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Response> {
    let view = jobs::rerun(&state.db, me.on_job(id)).await?;
    enqueue(&state, &view, me.tenant_id).await;
    Ok(accepted(view))
}

/// Launch a preview (admin): the `previewed` job is queued as the real run of its request,
/// with the members the preview found — the groups are not read again unless the preview is
/// older than `jobs.preview_max_age_secs` (default 900 s). Every member is read afresh before it
/// is decided and written. A preview still reading its members → 409 `preview_not_ready`; any
/// other status → 409 `not_a_preview`.
#[utoipa::path(post, path = "/v1/jobs/{id}/launch", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, body = JobView, headers(("Location" = String, description = "The job's URL"))),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn launch_job(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Response> {
    let view = jobs::launch(
        &state.db,
        me.on_job(id),
        std::time::Duration::from_secs(state.jobs.preview_max_age_secs),
    )
    .await?;
    enqueue(&state, &view, me.tenant_id).await;
    metrics::counter!("licensor_jobs_launched_total", "kind" => view.kind.as_str()).increment(1);
    Ok(accepted(view))
}

/// Cancel a queued, running, previewed or paused job (operator): members not being worked on
/// are skipped, those in flight finish; no member is left pending. Any other status → 409 `not_cancellable`.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Json<JobView>> {
    let job = jobs::cancel(&state.db, me.on_job(id)).await?;
    super::webhooks::queue_job_events(&state, id).await;
    settle_soon(&state, &job, me.tenant_id).await;
    Ok(Json(job))
}

/// Resume a paused job (operator): a job whose canary's failed share was above its bound goes
/// on with the rest of its members (the canary counts as passed). Takes no body (`{}` at most).
/// Any other status → 409 `not_paused`.
#[utoipa::path(post, path = "/v1/jobs/{id}/resume", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, body = JobView, headers(("Location" = String, description = "The job's URL"))),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume_job(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Response> {
    let view = jobs::resume(&state.db, me.on_job(id)).await?;
    enqueue(&state, &view, me.tenant_id).await;
    metrics::counter!("licensor_jobs_resumed_total", "kind" => view.kind.as_str()).increment(1);
    Ok(accepted(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListChangesQuery {
    /// Comma-separated item statuses: succeeded, failed (e.g. `drifted`), skipped.
    pub status: Option<String>,
    /// Comma-separated error codes, e.g. `drifted`.
    #[param(pattern = "^[a-z_,]*$", max_length = 1000)]
    pub code: Option<String>,
    /// One member: its user id (a GUID, in any of its forms and any case) or user principal
    /// name (name@domain, printable ASCII, any case), as member history takes it; empty: every
    /// member. Anything else → 400 `invalid_member`.
    #[param(max_length = 256)]
    pub user: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChangeList {
    pub data: Vec<ChangeView>,
    pub next_cursor: Option<String>,
    /// How many ledger entries match the filter (all pages).
    pub total: i64,
    /// How many of the job's entries, whatever the filter, an undo would take back: those of
    /// members that succeeded.
    pub undoable: i64,
}

/// A job's change ledger: for every member the job wrote for, its direct licenses before and
/// after the write (SKU ids with disabled plans) and whether a read after the write verified
/// them; in member order. A `user` that names no member as member history would take it
/// (neither a GUID nor a user principal name) → 400 `invalid_member`, the code member history
/// answers, before the job is read; a well-formed one the job did not write for → 200 with
/// empty `data`.
#[utoipa::path(get, path = "/v1/jobs/{id}/changes", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id"), ListChangesQuery),
    responses(
        (status = 200, body = ChangeList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_changes(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(q): Query<ListChangesQuery>,
    filters: Filters,
) -> ApiResult<Json<ChangeList>> {
    let user = match q.user.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(
            MemberRef::parse(u)
                .map_err(|e| ApiError::bad_request("invalid_member", format!("user: {e}")))?,
        ),
    };
    let filter = ChangeFilter {
        items: item_filter(q.status.as_deref(), q.code.as_deref())?,
        user,
    };
    let page = PageRequest::<i64>::parse_in(
        filters.scope(format_args!("changes:{id}")),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let ledger = jobs::changes(&state.db, auth.tenant_id(), id, &filter, &page).await?;
    Ok(Json(ChangeList {
        data: ledger.page.data,
        next_cursor: ledger.page.next_cursor,
        total: ledger.total,
        undoable: ledger.undoable,
    }))
}

/// Undo a job (admin): queue a new job, linked to this one, that gives each member the job
/// wrote for its direct licenses from before the job — only where the member still holds what
/// the job left; members changed since end `skipped` with code `changed_since`, untouched.
/// 409 `not_undoable` for a queued or running job or an export; 409 `nothing_to_undo` when the
/// job wrote for no member; 409 `already_undone` when an earlier undo of it has not failed or
/// been cancelled.
#[utoipa::path(post, path = "/v1/jobs/{id}/undo", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, body = JobView, headers(("Location" = String, description = "The undo job's URL"))),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn undo_job(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    _body: NoBody,
) -> ApiResult<Response> {
    let view = jobs::undo(&state.db, me.on_job(id)).await?;
    enqueue(&state, &view, me.tenant_id).await;
    metrics::counter!("licensor_jobs_submitted_total", "kind" => view.kind.as_str()).increment(1);
    Ok(accepted(view))
}
