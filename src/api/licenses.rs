//! Seat inventory and started licenses: licenses, checkout, checkin (one or many at once), the
//! "Used By" list, reusable started seats, and everything one user or asset holds (with checking
//! it all in). Admin everything; operator reads and checks in; viewer reads.

use axum::extract::State;
use axum::extract::rejection::PathRejection;
use chrono::NaiveDate;
use licensor_core::licenses::{
    self, Assignee, AssigneeType, AssignmentIds, AssignmentState, AssignmentView, Checkin,
    CheckinOutcome, Checkout, DeliveredOn, HeldAssignment, HolderCheckinOutcome, LicenseName,
    LicenseUpdate, LicenseView, NewLicense, Notes, Quantity, SeatCount, StartedSeats, TermDays,
};
use licensor_core::page::PageRequest;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::{AsAdmin, AsOperator, Auth};
use super::extract::{Created, Filters, Json, NoQuery, Path, Query, created, text_path};
use super::problem::{ApiError, ApiResult, Problem};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LicenseListQuery {
    /// Only licenses whose name contains this, in any case (at most 200 characters).
    #[param(max_length = 200)]
    pub search: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LicenseList {
    pub data: Vec<LicenseView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLicense {
    /// 1–200 characters, trimmed; no control or bidirectional formatting character (a newline, a tab, ESC, a right-to-left override).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Seats bought (1–1,000,000; at most 100,000 with a term).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub seats: i64,
    /// Whether checked-out seats can be checked in and reassigned (default true).
    #[serde(default)]
    pub reassignable: Option<bool>,
    /// Length of a seat's term in days (1–36500). A seat starts at its first checkout or
    /// automatically 4 months after `delivered_on`, whichever comes first.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 36_500)]
    pub term_days: Option<i64>,
    /// Delivery date (`YYYY-MM-DD`), in the years 1900–2200.
    #[serde(default)]
    pub delivered_on: Option<NaiveDate>,
    /// At most 2,000 characters.
    #[serde(default)]
    #[schema(max_length = 2_000)]
    pub notes: Option<String>,
}

/// Distinguishes a field that is absent (`None`) from one set to `null` (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A field that may be left out (`None`: kept as it is) but has no `null`: a license always has
/// a name, a seat count and a reassignable flag, so `"seats": null` is 422 `invalid_body` rather
/// than read as "no change".
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(
            "null is not a value here; leave the field out to keep it as it is",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLicense {
    /// 1–200 characters, trimmed; no control or bidirectional formatting character (a newline, a tab, ESC, a right-to-left override); not `null`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// New seat count (1–1,000,000); not `null`. Fewer than are checked out → 409
    /// `seats_below_assigned`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = i64, required = false, minimum = 1, maximum = 1_000_000)]
    pub seats: Option<i64>,
    /// Not `null`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool, required = false)]
    pub reassignable: Option<bool>,
    /// `null` removes the term (only while no seat is checked out or started).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 36_500)]
    pub term_days: Option<Option<i64>>,
    /// `null` clears the delivery date.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>, nullable)]
    pub delivered_on: Option<Option<NaiveDate>>,
    /// `null` clears the notes.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable, max_length = 2_000)]
    pub notes: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReuseStarted {
    /// The end date of the reusable started seat to hand out (one of `GET …/started`).
    pub ends_on: NaiveDate,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// Checkout to a user (a person) or an asset (e.g. a laptop or other equipment).
    pub assignee: Assignee,
    /// Number of seats to check out (1–10,000; default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: Option<i64>,
    /// e.g. reason for checkout; at most 2,000 characters.
    #[serde(default)]
    #[schema(max_length = 2_000)]
    pub notes: Option<String>,
    /// "Återanvänd startad licens": hand out a reusable started seat with this end date
    /// instead of a new one.
    #[serde(default)]
    pub reuse_started: Option<ReuseStarted>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    /// The assignments to check in (1–1,000, each once), from the "Used By" list.
    #[schema(min_items = 1, max_items = 1_000)]
    pub assignment_ids: Vec<Uuid>,
    /// At most 2,000 characters.
    #[serde(default)]
    #[schema(max_length = 2_000)]
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssignmentsQuery {
    /// `checked_out` (default: the "Used By" list), `checked_in` or `all`.
    #[param(inline)]
    pub state: Option<AssignmentState>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AssignmentList {
    pub data: Vec<AssignmentView>,
    pub next_cursor: Option<String>,
}

fn notes(s: Option<&str>) -> Result<Option<Notes>, ApiError> {
    Ok(Notes::parse(s)?)
}

/// The tenant's licenses with their seat counts, newest first; `search` keeps those whose name
/// contains it.
#[utoipa::path(get, path = "/v1/licenses", tag = "licenses", security(("bearer" = [])), params(LicenseListQuery), responses(
    (status = 200, body = LicenseList),
))]
pub async fn list_licenses(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<LicenseListQuery>,
    filters: Filters,
) -> ApiResult<Json<LicenseList>> {
    let page =
        PageRequest::<Uuid>::parse_in(filters.scope("licenses"), q.limit, q.cursor.as_deref())?;
    // Counted as searched: spaces around it are not (a blank search filters nothing), and a
    // letter typed in either Unicode form is one.
    if q.search
        .as_deref()
        .is_some_and(|s| licenses::search_length(s) > 200)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "search is at most 200 characters",
        ));
    }
    let page = licenses::list(&state.db, auth.tenant_id(), q.search.as_deref(), &page).await?;
    Ok(Json(LicenseList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// Create a license (admin).
#[utoipa::path(post, path = "/v1/licenses", tag = "licenses", security(("bearer" = [])), request_body = CreateLicense, responses(
    (status = 201, body = LicenseView, headers(("Location" = String, description = "The license's URL"))),
))]
pub async fn create_license(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Json(body): Json<CreateLicense>,
) -> ApiResult<Created<LicenseView>> {
    let new = NewLicense {
        name: LicenseName::parse(&body.name)?,
        seats: SeatCount::parse(body.seats)?,
        reassignable: body.reassignable.unwrap_or(true),
        term_days: body.term_days.map(TermDays::parse).transpose()?,
        delivered_on: body.delivered_on.map(DeliveredOn::parse).transpose()?,
        notes: notes(body.notes.as_deref())?,
    };
    let view = licenses::create(&state.db, me.tenant_id, new, Some(me.token_id)).await?;
    Ok(created(format!("/v1/licenses/{}", view.id), view))
}

/// One license with its seat counts.
#[utoipa::path(get, path = "/v1/licenses/{id}", tag = "licenses", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "License id")),
    responses(
        (status = 200, body = LicenseView),
    ))]
pub async fn get_license(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<LicenseView>> {
    Ok(Json(licenses::get(&state.db, auth.tenant_id(), id).await?))
}

/// Change a license (admin). Reducing `seats` below the checked-out seats → 409
/// `seats_below_assigned`.
#[utoipa::path(patch, path = "/v1/licenses/{id}", tag = "licenses", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "License id")),
    request_body = UpdateLicense,
    responses(
        (status = 200, body = LicenseView),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_license(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateLicense>,
) -> ApiResult<Json<LicenseView>> {
    let change = LicenseUpdate {
        name: body.name.as_deref().map(LicenseName::parse).transpose()?,
        seats: body.seats.map(SeatCount::parse).transpose()?,
        reassignable: body.reassignable,
        term_days: body
            .term_days
            .map(|t| t.map(TermDays::parse).transpose())
            .transpose()?,
        delivered_on: body
            .delivered_on
            .map(|d| d.map(DeliveredOn::parse).transpose())
            .transpose()?,
        notes: body.notes.map(|n| notes(n.as_deref())).transpose()?,
    };
    Ok(Json(
        licenses::update(&state.db, me.tenant_id, id, change, Some(me.token_id)).await?,
    ))
}

/// Check a license out to a user or an asset (admin). Licenses that are out of stock cannot be
/// checked out: 409 `out_of_stock`, nothing changed. With `reuse_started`, a reusable started
/// seat with that end date is handed out ("Återanvänd startad licens"); none → 409
/// `no_started_seat`.
#[utoipa::path(post, path = "/v1/licenses/{id}/checkout", tag = "licenses", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "License id")),
    request_body = CheckoutRequest,
    responses(
        (status = 201, body = AssignmentView, headers(("Location" = String, description = "The assignment: /v1/licenses/{id}/assignments/{assignment_id}"))),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkout_license(
    State(state): State<AppState>,
    AsAdmin { me, .. }: AsAdmin,
    Path(id): Path<Uuid>,
    Json(body): Json<CheckoutRequest>,
) -> ApiResult<Created<AssignmentView>> {
    let req = Checkout {
        assignee: Assignee::parse(
            body.assignee.kind,
            &body.assignee.id,
            body.assignee.name.as_deref(),
        )?,
        quantity: Quantity::parse(body.quantity.unwrap_or(1))?,
        notes: notes(body.notes.as_deref())?,
        reuse_started: body.reuse_started.map(|r| r.ends_on),
    };
    let view = licenses::checkout(&state.db, me.tenant_id, id, req, Some(me.token_id)).await?;
    Ok(created(
        format!("/v1/licenses/{id}/assignments/{}", view.id),
        view,
    ))
}

/// Check a license in from one or many assignments at once (operator). The seats return to the
/// stock and the available quantity updates. All or nothing: a license that is not reassignable
/// → 409 `not_reassignable`; any id that is not an assignment of this license → 404.
#[utoipa::path(post, path = "/v1/licenses/{id}/checkin", tag = "licenses", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "License id")),
    request_body = CheckinRequest,
    responses(
        (status = 200, body = CheckinOutcome),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkin_license(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    Path(id): Path<Uuid>,
    Json(body): Json<CheckinRequest>,
) -> ApiResult<Json<CheckinOutcome>> {
    let req = Checkin {
        assignment_ids: AssignmentIds::parse(body.assignment_ids)?,
        notes: notes(body.notes.as_deref())?,
    };
    Ok(Json(
        licenses::checkin(&state.db, me.tenant_id, id, req, Some(me.token_id)).await?,
    ))
}

/// "Used By": the users and assets the license is checked out to, newest first.
#[utoipa::path(get, path = "/v1/licenses/{id}/assignments", tag = "licenses", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "License id"), AssignmentsQuery),
    responses(
        (status = 200, body = AssignmentList),
    ))]
pub async fn list_assignments(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<Uuid>,
    Query(q): Query<AssignmentsQuery>,
    filters: Filters,
) -> ApiResult<Json<AssignmentList>> {
    let page = PageRequest::<Uuid>::parse_in(
        filters.scope(format_args!("assignments:{id}")),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = licenses::list_assignments(
        &state.db,
        auth.tenant_id(),
        id,
        q.state.unwrap_or_default(),
        &page,
    )
    .await?;
    Ok(Json(AssignmentList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

/// One assignment of the license, checked out or checked in (any role): who holds it, how many
/// seats, its notes and, for a term license, when its seats started and end. Not an assignment
/// of this license → 404 `not_found`.
#[utoipa::path(get, path = "/v1/licenses/{id}/assignments/{assignment_id}", tag = "licenses", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "License id"),
        ("assignment_id" = Uuid, Path, description = "Assignment id (from checkout or the Used By list)"),
    ),
    responses(
        (status = 200, body = AssignmentView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_assignment(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path((id, assignment_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<AssignmentView>> {
    Ok(Json(
        licenses::get_assignment(&state.db, auth.tenant_id(), id, assignment_id).await?,
    ))
}

/// Reusable started seats ("återanvändbara startade licenser"): started seats with time left
/// that nobody holds, grouped by end date with counts.
#[utoipa::path(get, path = "/v1/licenses/{id}/started", tag = "licenses", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "License id")),
    responses(
        (status = 200, body = StartedSeats),
    ))]
pub async fn started_seats(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<StartedSeats>> {
    Ok(Json(
        licenses::started(&state.db, auth.tenant_id(), id).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct HeldList {
    pub data: Vec<HeldAssignment>,
    pub next_cursor: Option<String>,
}

fn holder(kind: AssigneeType, id: &str) -> Result<Assignee, ApiError> {
    Ok(Assignee::parse(kind, id, None)?)
}

/// Everything one user or asset holds: its open assignments on all of the tenant's licenses,
/// newest first.
#[utoipa::path(get, path = "/v1/assignees/{type}/{id}/assignments", tag = "licenses", security(("bearer" = [])),
    params(
        ("type" = AssigneeType, Path, description = "`user` or `asset`"),
        ("id" = String, Path, description = "The user's or asset's id, as given at checkout"),
        PageQuery,
    ),
    responses(
        (status = 200, body = HeldList),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_held(
    State(state): State<AppState>,
    auth: Auth,
    assignee: Result<axum::extract::Path<(AssigneeType, String)>, PathRejection>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<HeldList>> {
    let (kind, id) = text_path(assignee, |why| {
        ApiError::unprocessable(
            "invalid_assignee",
            format!("an assignee id is text, as given at checkout: {why}"),
        )
    })?;
    let who = holder(kind, &id)?;
    let page = PageRequest::<Uuid>::parse_in(
        format!("held:{}:{id}", kind.as_str()),
        q.limit,
        q.cursor.as_deref(),
    )?;
    let page = licenses::list_held(&state.db, auth.tenant_id(), who.kind, &who.id, &page).await?;
    Ok(Json(HeldList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolderCheckinRequest {
    /// e.g. "asset retired"; at most 2,000 characters.
    #[serde(default)]
    #[schema(max_length = 2_000)]
    pub notes: Option<String>,
}

/// Check in everything held by this user or asset (operator), on every license: when an asset
/// is retired or a person leaves. All or nothing, one audit entry per license. Nothing held →
/// 409 `nothing_checked_out`; a license that is not reassignable → 409 `not_reassignable`.
#[utoipa::path(post, path = "/v1/assignees/{type}/{id}/checkin", tag = "licenses", security(("bearer" = [])),
    params(
        ("type" = AssigneeType, Path, description = "`user` or `asset`"),
        ("id" = String, Path, description = "The user's or asset's id, as given at checkout"),
    ),
    request_body = HolderCheckinRequest,
    responses(
        (status = 200, body = HolderCheckinOutcome),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkin_held(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    assignee: Result<axum::extract::Path<(AssigneeType, String)>, PathRejection>,
    Json(body): Json<HolderCheckinRequest>,
) -> ApiResult<Json<HolderCheckinOutcome>> {
    let (kind, id) = text_path(assignee, |why| {
        ApiError::unprocessable(
            "invalid_assignee",
            format!("an assignee id is text, as given at checkout: {why}"),
        )
    })?;
    let who = holder(kind, &id)?;
    let notes = notes(body.notes.as_deref())?;
    Ok(Json(
        licenses::checkin_held(&state.db, me.tenant_id, &who, notes, Some(me.token_id)).await?,
    ))
}
