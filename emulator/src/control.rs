//! The control API under `/_emulator`: load a scenario, set faults, read statistics, reset, and
//! inspect users for assertions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::directory::Directory;
use crate::faults::Faults;
use crate::scenario::Scenario;
use crate::state::AppState;

type St = State<Arc<AppState>>;

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "BadRequest", "message": msg.into()}})),
    )
        .into_response()
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

pub async fn get_scenario(State(st): St) -> Response {
    let dir = st.dir();
    let mut v = summary(&dir);
    v["scenario"] = serde_json::to_value(&*st.scenario.read()).unwrap_or(Value::Null);
    Json(v).into_response()
}

pub async fn put_scenario(State(st): St, body: Bytes) -> Response {
    let scenario: Scenario = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad(format!("invalid scenario: {e}")),
    };
    let s2 = scenario.clone();
    let built = tokio::task::spawn_blocking(move || Directory::build(&s2)).await;
    let dir = match built {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return bad(format!("invalid scenario: {e}")),
        Err(e) => return bad(format!("scenario could not be built: {e}")),
    };
    let v = summary(&dir);
    *st.dir.write() = Arc::new(dir);
    *st.scenario.write() = scenario;
    st.windows.lock().clear();
    st.stats.clear();
    (StatusCode::OK, Json(v)).into_response()
}

pub async fn get_faults(State(st): St) -> Response {
    Json(st.faults.read().clone()).into_response()
}

pub async fn put_faults(State(st): St, body: Bytes) -> Response {
    let f: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad(format!("invalid faults: {e}")),
    };
    if let Err(e) = f.validate() {
        return bad(format!("invalid faults: {e}"));
    }
    *st.dice.lock() = rand::SeedableRng::seed_from_u64(f.seed);
    *st.faults.write() = f.clone();
    st.windows.lock().clear();
    Json(f).into_response()
}

#[derive(Deserialize)]
pub struct StatsQuery {
    per_user: Option<bool>,
}

pub async fn stats(State(st): St, Query(q): Query<StatsQuery>) -> Response {
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
        "requests": requests,
        "requests_total": total,
        "throttled": st.stats.throttled.load(Ordering::Relaxed),
        "injected_errors": st.stats.injected_errors.load(Ordering::Relaxed),
        "dropped_connections": st.stats.dropped_connections.load(Ordering::Relaxed),
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

pub async fn reset(State(st): St) -> Response {
    let scenario = st.scenario.read().clone();
    let built = tokio::task::spawn_blocking(move || Directory::build(&scenario)).await;
    match built {
        Ok(Ok(d)) => {
            *st.dir.write() = Arc::new(d);
        }
        Ok(Err(e)) => return bad(e),
        Err(e) => return bad(e.to_string()),
    }
    *st.faults.write() = st.initial_faults.clone();
    *st.dice.lock() = rand::SeedableRng::seed_from_u64(st.initial_faults.seed);
    st.windows.lock().clear();
    st.stats.clear();
    StatusCode::NO_CONTENT.into_response()
}

pub async fn user(State(st): St, Path(id): Path<String>) -> Response {
    let dir = st.dir();
    let Some(u) = dir.find_user(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": format!("no user '{id}'")}})),
        )
            .into_response();
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
    }))
    .into_response()
}

/// `GET /_emulator/users?offset=&limit=`: users in directory order, for tests that need ids.
#[derive(Deserialize)]
pub struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

pub async fn users(State(st): St, Query(p): Query<Page>) -> Response {
    let dir = st.dir();
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

pub async fn patch_sku(State(st): St, Path(id): Path<String>, body: Bytes) -> Response {
    let patch: SkuPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(e.to_string()),
    };
    let dir = st.dir();
    let Some(sku) = dir
        .skus
        .iter()
        .find(|s| s.id.to_string().eq_ignore_ascii_case(&id) || s.part_number == id)
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": format!("no SKU '{id}'")}})),
        )
            .into_response();
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

pub async fn patch_user(State(st): St, Path(id): Path<String>, body: Bytes) -> Response {
    let patch: UserPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(e.to_string()),
    };
    let dir = st.dir();
    let Some(u) = dir.find_user(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": format!("no user '{id}'")}})),
        )
            .into_response();
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

pub async fn change_user_licenses(State(st): St, Path(id): Path<String>, body: Bytes) -> Response {
    let change: LicensesChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad(e.to_string()),
    };
    let dir = st.dir();
    let Some(u) = dir.find_user(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NotFound", "message": format!("no user '{id}'")}})),
        )
            .into_response();
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
