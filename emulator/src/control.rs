//! The control API under `/_emulator`: load a scenario (one tenant or many), set faults, read
//! statistics, reset, and inspect users for assertions.
//!
//! Every route that reads or changes one tenant takes `?tenant={id or domain}` and speaks of the
//! default tenant (the first one loaded) without it; `PUT /_emulator/faults?tenant=*` sets every
//! tenant's faults. Bodies refuse unknown fields: 400 with the field's path in
//! `error.field` and in the message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::directory::Directory;
use crate::faults::Faults;
use crate::scenario::{FieldError, Scenario, from_json, parse_scenarios};
use crate::state::{AppState, Tenant, Tenants};

type St = State<Arc<AppState>>;

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "BadRequest", "message": msg.into()}})),
    )
        .into_response()
}

/// 400 for a body with a field at fault: `{"error": {"code": "BadRequest", "message":
/// "{what}: {field}: {why}", "field": "{field}"}}`.
fn bad_field(what: &str, e: FieldError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {
            "code": "BadRequest",
            "message": format!("{what}: {e}"),
            "field": e.field,
        }})),
    )
        .into_response()
}

/// A query string the route does not take (unknown parameter, bad value) → 400.
fn bad_query(e: QueryRejection) -> Response {
    bad(e.body_text())
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "NotFound", "message": format!("no {what} '{id}'")}})),
    )
        .into_response()
}

/// `?tenant=` of a route that speaks of one tenant.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    tenant: Option<String>,
}

/// Why a route could not pick its tenant: a query string it does not take (400) or an unknown
/// tenant (404).
enum NoTenant {
    BadQuery(String),
    Unknown(String),
}

impl IntoResponse for NoTenant {
    fn into_response(self) -> Response {
        match self {
            NoTenant::BadQuery(m) => bad(m),
            NoTenant::Unknown(t) => not_found("tenant", &t),
        }
    }
}

/// The tenant named by `?tenant=` (id or domain), or the default tenant; 404 for an unknown one.
fn pick(st: &AppState, tenant: Option<&str>) -> Result<Arc<Tenant>, NoTenant> {
    let tenants = st.tenants();
    match tenant {
        None => Ok(tenants.default_tenant().clone()),
        Some(t) => tenants
            .find(t.trim())
            .cloned()
            .ok_or_else(|| NoTenant::Unknown(t.to_string())),
    }
}

/// A route's query string that may name its tenant (`?tenant=`).
trait NamesTenant {
    fn tenant(&self) -> Option<&str>;
}

/// Each of these query strings names its tenant in a `tenant` field.
macro_rules! names_tenant {
    ($($query:ty),*) => {$(
        impl NamesTenant for $query {
            fn tenant(&self) -> Option<&str> {
                self.tenant.as_deref()
            }
        }
    )*};
}

names_tenant!(TenantQuery, StatsQuery, Page);

/// The route's query and the tenant it names: 400 for a query string the route does not take,
/// 404 for an unknown tenant.
fn pick_with<Q: NamesTenant>(
    st: &AppState,
    q: Result<Query<Q>, QueryRejection>,
) -> Result<(Q, Arc<Tenant>), NoTenant> {
    let Query(q) = q.map_err(|e| NoTenant::BadQuery(e.body_text()))?;
    let tenant = pick(st, q.tenant())?;
    Ok((q, tenant))
}

fn pick_q(
    st: &AppState,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Arc<Tenant>, NoTenant> {
    pick_with(st, q).map(|(_, tenant)| tenant)
}

/// Build every tenant's directory (off the async threads); each starts with `faults`.
pub async fn build_tenants(scenarios: Vec<Scenario>, faults: Faults) -> Result<Tenants, String> {
    tokio::task::spawn_blocking(move || {
        let many = scenarios.len() > 1;
        let mut list = Vec::with_capacity(scenarios.len());
        for (i, s) in scenarios.into_iter().enumerate() {
            let dir = Directory::build(&s).map_err(|e| {
                if many {
                    format!("tenants[{i}]: {e}")
                } else {
                    e
                }
            })?;
            list.push(Arc::new(Tenant::new(dir, s, faults.clone())));
        }
        Tenants::new(list)
    })
    .await
    .map_err(|e| format!("scenario could not be built: {e}"))?
}

/// What a loaded scenario produced: credentials and ids to drive tests with.
pub fn summary(dir: &Directory) -> Value {
    json!({
        "tenant_id": dir.tenant_id.to_string(),
        "domain": dir.domain,
        "client_id": dir.client_id,
        "client_secret": dir.client_secret,
        "users": dir.user_ids.len(),
        "groups": dir.groups.iter().enumerate().map(|(i, g)| json!({
            "id": g.id.to_string(),
            "displayName": g.display_name,
            "members": g.members.len(),
            "userMembers": g.members.users.len(),
            "transitiveUserMembers": dir.transitive(i as u32).users.len(),
            "nestedGroups": g.members.groups.iter().map(|c| dir.groups[*c as usize].id.to_string()).collect::<Vec<_>>(),
            "licenses": g.licenses.iter().map(|s| dir.skus[*s as usize].id.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "skus": dir.skus.iter().map(|s| json!({
            "skuId": s.id.to_string(),
            "skuPartNumber": s.part_number,
            "enabled": s.enabled.load(Ordering::Acquire),
            "consumedUnits": s.consumed.load(Ordering::Acquire),
            "servicePlans": s.plans.iter().map(|p| json!({"servicePlanId": p.id.to_string(), "servicePlanName": p.name})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// `GET /_emulator/scenario[?tenant=]`: the tenant's [`summary`] and the scenario it was built
/// from (`scenario`).
pub async fn get_scenario(
    State(st): St,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Response {
    let t = match pick_q(&st, q) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let mut v = summary(&t.dir());
    v["scenario"] = serde_json::to_value(&t.scenario).unwrap_or(Value::Null);
    Json(v).into_response()
}

/// `POST /_emulator/scenario`: replace every tenant. A [`Scenario`] body serves that one tenant
/// and answers its [`summary`]; a [`crate::TenantSet`] body serves its tenants and answers
/// `{"tenants": [summary, …]}` (the default tenant first). New tenants start with the default
/// tenant's current faults, empty throttle windows and statistics; tokens of tenants no longer
/// served stop working.
pub async fn put_scenario(State(st): St, body: Bytes) -> Response {
    let scenarios = match parse_scenarios(&body) {
        Ok(s) => s,
        Err(e) => return bad_field("invalid scenario", e),
    };
    let many = scenarios.len() > 1;
    let faults = st.default_tenant().faults.read().clone();
    let tenants = match build_tenants(scenarios, faults).await {
        Ok(t) => t,
        Err(e) => return bad(format!("invalid scenario: {e}")),
    };
    let v = if many {
        json!({"tenants": tenants.list.iter().map(|t| summary(&t.dir())).collect::<Vec<_>>()})
    } else {
        summary(&tenants.default_tenant().dir())
    };
    *st.tenants.write() = Arc::new(tenants);
    (StatusCode::OK, Json(v)).into_response()
}

/// `GET /_emulator/tenants`: every tenant, the default first: `tenant_id`, `domain`,
/// `client_id`, `client_secret`, `users`, `groups`, and its counters `requests_total`,
/// `throttled`, `successful_writes`, and `first_write_ms` / `last_write_ms` (Unix
/// milliseconds of the first and last license write that changed a user; 0 before any).
pub async fn tenants(State(st): St) -> Response {
    let tenants = st.tenants();
    let v: Vec<Value> = tenants
        .list
        .iter()
        .map(|t| {
            let dir = t.dir();
            json!({
                "tenant_id": t.id,
                "domain": dir.domain,
                "client_id": dir.client_id,
                "client_secret": dir.client_secret,
                "users": dir.user_ids.len(),
                "groups": dir.groups.len(),
                "requests_total": t.stats.requests_total(),
                "throttled": t.stats.throttled.load(Ordering::Relaxed),
                "successful_writes": dir.successful_writes.load(Ordering::Relaxed),
                "first_write_ms": dir.first_write_ms.load(Ordering::Relaxed),
                "last_write_ms": dir.last_write_ms.load(Ordering::Relaxed),
            })
        })
        .collect();
    Json(json!({"value": v})).into_response()
}

/// `GET /_emulator/faults[?tenant=]`: the tenant's faults.
pub async fn get_faults(State(st): St, q: Result<Query<TenantQuery>, QueryRejection>) -> Response {
    match pick_q(&st, q) {
        Ok(t) => Json(t.faults.read().clone()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT /_emulator/faults[?tenant=ID|*]`: replace the faults of one tenant (the default one
/// without `tenant`) or of every tenant (`*`); restarts their throttle windows. Fields left out
/// take the emulator's starting faults (`--faults`, or what its embedder gave it — `licensor
/// demo`'s large write budget; Graph's defaults when none were given), so `{}` clears the
/// faults a test or an operator added without undoing how the emulator was started.
pub async fn put_faults(
    State(st): St,
    q: Result<Query<TenantQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    // The body alone first: a refusal names the field at fault.
    if let Err(e) = from_json::<Faults>(&body) {
        return bad_field("invalid faults", e);
    }
    // Checked as it joins the starting faults: the fields given may not fit them (an error
    // rate with no status to draw).
    let f = match over_starting(&st.initial_faults, &body) {
        Ok(f) => f,
        Err(e) => return bad(format!("invalid faults: {e}")),
    };
    if let Err(e) = f.validate() {
        return bad(format!("invalid faults: {e}"));
    }
    if q.tenant.as_deref().map(str::trim) == Some("*") {
        for t in &st.tenants().list {
            t.set_faults(f.clone());
        }
    } else {
        match pick(&st, q.tenant.as_deref()) {
            Ok(t) => t.set_faults(f.clone()),
            Err(e) => return e.into_response(),
        }
    }
    Json(f).into_response()
}

/// `body` (a `Faults` object, checked already) with the fields it leaves out taken from
/// `starting`.
fn over_starting(starting: &Faults, body: &[u8]) -> Result<Faults, serde_json::Error> {
    let given: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    let mut faults = serde_json::to_value(starting)?;
    if let Some(fields) = faults.as_object_mut() {
        fields.extend(given);
    }
    serde_json::from_value(faults)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    per_user: Option<bool>,
    tenant: Option<String>,
}

/// `GET /_emulator/stats[?per_user=true][&tenant=]`: one tenant's statistics (the default
/// tenant's without `tenant`), with its `tenant_id`.
pub async fn stats(State(st): St, q: Result<Query<StatsQuery>, QueryRejection>) -> Response {
    let (q, st) = match pick_with(&st, q) {
        Ok(picked) => picked,
        Err(e) => return e.into_response(),
    };
    let dir = st.dir();
    let mut requests: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut total = 0u64;
    for (route, by) in st.stats.requests.lock().iter() {
        let e = requests.entry(route.clone()).or_default();
        for (s, n) in by {
            e.insert(s.to_string(), *n);
            total += n;
        }
    }
    let mut v = json!({
        "tenant_id": st.id,
        "requests": requests,
        "requests_total": total,
        "throttled": st.stats.throttled.load(Ordering::Relaxed),
        "injected_errors": st.stats.injected_errors.load(Ordering::Relaxed),
        "dropped_connections": st.stats.dropped_connections.load(Ordering::Relaxed),
        "lost_answers": st.stats.lost_answers.load(Ordering::Relaxed),
        "successful_writes": dir.successful_writes.load(Ordering::Relaxed),
        "writes_per_user_max": dir.writes_max.load(Ordering::Relaxed),
        "member_pages_read": st.stats.member_pages.lock().values().sum::<u64>(),
        "member_page_reads_max": st.stats.member_pages.lock().values().copied().max().unwrap_or(0),
        "skus": dir.skus.iter().map(|s| json!({
            "skuId": s.id.to_string(),
            "skuPartNumber": s.part_number,
            "consumedUnits": s.consumed.load(Ordering::Acquire),
            "enabled": s.enabled.load(Ordering::Acquire),
        })).collect::<Vec<_>>(),
    });
    if q.per_user.unwrap_or(false) {
        let mut per = serde_json::Map::new();
        for (i, u) in dir.users.iter().enumerate() {
            let n = u.lock().successful_writes;
            if n > 0 {
                per.insert(dir.user_ids[i].to_string(), json!(n));
            }
        }
        v["writes_per_user"] = Value::Object(per);
    }
    Json(v).into_response()
}

/// `POST /_emulator/reset`: every tenant rebuilt from its scenario, with the initial faults,
/// empty statistics and throttle windows.
pub async fn reset(State(st): St) -> Response {
    let tenants = st.tenants();
    let scenarios: Vec<Scenario> = tenants.list.iter().map(|t| t.scenario.clone()).collect();
    let built = match build_tenants(scenarios, st.initial_faults.clone()).await {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    *st.tenants.write() = Arc::new(built);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn user(
    State(st): St,
    Path(id): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Response {
    let dir = match pick_q(&st, q) {
        Ok(t) => t.dir(),
        Err(e) => return e.into_response(),
    };
    let Some(u) = dir.find_user(&id) else {
        return not_found("user", &id);
    };
    let s = dir.users[u as usize].lock();
    let (f, l) = dir.names(u);
    Json(json!({
        "id": dir.user_ids[u as usize].to_string(),
        "userPrincipalName": dir.upn(u),
        "displayName": format!("{f} {l}"),
        "accountEnabled": !s.account_disabled,
        "usageLocation": s.usage_location.map(|c| String::from_utf8_lossy(&c).into_owned()),
        "assignedLicenses": dir.assigned_licenses(&s),
        "licenseAssignmentStates": dir.assignment_states(&s),
        "successfulWrites": s.successful_writes,
        "profileWrites": s.profile_writes,
        "deleted": s.deleted,
    }))
    .into_response()
}

/// `DELETE /_emulator/users/{id}`: delete a user behind licensor's back, as an administrator
/// would in the directory's own console. From then on Graph answers 404 for it (reads, usage
/// location, assignLicense), leaves it out of user and member lists and counts, and the seats
/// it held are free; `GET /_emulator/users/{id}` still shows it, with `"deleted": true` and its
/// licenses as they were. 404 for an unknown or already deleted user. Not counted as a write.
pub async fn delete_user(
    State(st): St,
    Path(id): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Response {
    let dir = match pick_q(&st, q) {
        Ok(t) => t.dir(),
        Err(e) => return e.into_response(),
    };
    match dir.find_user(&id) {
        Some(u) if dir.delete_user(u) => StatusCode::NO_CONTENT.into_response(),
        _ => not_found("user", &id),
    }
}

/// `GET /_emulator/users?offset=&limit=`: users in directory order, for tests that need ids.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
    tenant: Option<String>,
}

pub async fn users(State(st): St, p: Result<Query<Page>, QueryRejection>) -> Response {
    let (p, dir) = match pick_with(&st, p) {
        Ok((p, t)) => (p, t.dir()),
        Err(e) => return e.into_response(),
    };
    let off = p.offset.unwrap_or(0).min(dir.user_ids.len());
    let end = (off + p.limit.unwrap_or(100).min(10_000)).min(dir.user_ids.len());
    let v: Vec<Value> = (off..end)
        .map(|i| {
            let s = dir.users[i].lock();
            json!({
                "id": dir.user_ids[i].to_string(),
                "userPrincipalName": dir.upn(i as u32),
                "usageLocation": s.usage_location.map(|c| String::from_utf8_lossy(&c).into_owned()),
                "licenses": s.licenses.len(),
                "deleted": s.deleted,
            })
        })
        .collect();
    Json(json!({"total": dir.user_ids.len(), "value": v})).into_response()
}

/// `PATCH /_emulator/skus/{id}` `{"enabled": N}`: change the units bought of a SKU (by id or part
/// number), as when a tenant buys more licenses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuPatch {
    enabled: u32,
}

pub async fn patch_sku(
    State(st): St,
    Path(id): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let dir = match pick_q(&st, q) {
        Ok(t) => t.dir(),
        Err(e) => return e.into_response(),
    };
    let patch: SkuPatch = match from_json(&body) {
        Ok(p) => p,
        Err(e) => return bad_field("invalid SKU change", e),
    };
    let Some(sku) = dir
        .skus
        .iter()
        .find(|s| s.id.to_string().eq_ignore_ascii_case(&id) || s.part_number == id)
    else {
        return not_found("SKU", &id);
    };
    sku.enabled.store(patch.enabled, Ordering::Release);
    StatusCode::NO_CONTENT.into_response()
}

/// `PATCH /_emulator/users/{id}` `{"usageLocation": "SE" | null, "accountEnabled": false}`: change
/// a user behind licensor's back, as an administrator would in the directory's own console.
/// Only the fields given change. Not counted as a write.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserPatch {
    #[serde(default, deserialize_with = "present")]
    usage_location: Option<Option<String>>,
    account_enabled: Option<bool>,
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub async fn patch_user(
    State(st): St,
    Path(id): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let dir = match pick_q(&st, q) {
        Ok(t) => t.dir(),
        Err(e) => return e.into_response(),
    };
    let patch: UserPatch = match from_json(&body) {
        Ok(p) => p,
        Err(e) => return bad_field("invalid user change", e),
    };
    let Some(u) = dir.find_user(&id).filter(|u| !dir.is_deleted(*u)) else {
        return not_found("user", &id);
    };
    let location = match patch.usage_location {
        None => None,
        Some(None) => Some(None),
        Some(Some(c)) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            let b = c.as_bytes();
            Some(Some([b[0], b[1]]))
        }
        Some(Some(c)) => return bad(format!("'{c}' is not a two-letter country code")),
    };
    let mut user = dir.users[u as usize].lock();
    if let Some(location) = location {
        user.usage_location = location;
    }
    if let Some(enabled) = patch.account_enabled {
        user.account_disabled = !enabled;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_emulator/users/{id}/licenses` `{"addLicenses": [{"skuId", "disabledPlans"}],
/// "removeLicenses": [skuId]}`: change a user's direct licenses behind licensor's back, as an
/// administrator would in the directory's own console — with the directory's own rules (seats,
/// usage location, all or nothing), answered as Graph would. Not counted as a write.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LicensesChange {
    #[serde(default)]
    add_licenses: Vec<LicenseToAdd>,
    #[serde(default)]
    remove_licenses: Vec<uuid::Uuid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LicenseToAdd {
    sku_id: uuid::Uuid,
    #[serde(default)]
    disabled_plans: Vec<uuid::Uuid>,
}

pub async fn change_user_licenses(
    State(st): St,
    Path(id): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let dir = match pick_q(&st, q) {
        Ok(t) => t.dir(),
        Err(e) => return e.into_response(),
    };
    let change: LicensesChange = match from_json(&body) {
        Ok(c) => c,
        Err(e) => return bad_field("invalid license change", e),
    };
    let Some(u) = dir.find_user(&id) else {
        return not_found("user", &id);
    };
    let add: Vec<(uuid::Uuid, Vec<uuid::Uuid>)> = change
        .add_licenses
        .into_iter()
        .map(|l| (l.sku_id, l.disabled_plans))
        .collect();
    match dir.assign_license(u, &add, &change.remove_licenses) {
        Ok(changed) => {
            if changed {
                // An administrator's change, not one of licensor's writes.
                dir.users[u as usize].lock().successful_writes -= 1;
                dir.successful_writes.fetch_sub(1, Ordering::Relaxed);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}
