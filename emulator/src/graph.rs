//! Microsoft Graph v1.0 routes: the request gate (ids, faults, authentication, throttling),
//! directory reads with paging, license writes and JSON batching.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;
use uuid::Uuid;

use crate::directory::{Directory, Members, ObjRef, USER_PROPS, parse_country};
use crate::error::{GraphError, REQUEST, RequestIds, graph_json};
use crate::state::{AppState, Tenant, Throttle};
use crate::token::{Caller, authenticate};

type St = State<Arc<AppState>>;
/// The tenant of the request's token, set by [`gate`].
type Tn = Extension<Arc<Tenant>>;

const MAX_BATCH: usize = 20;
const CTX: &str = "https://graph.microsoft.com/v1.0/$metadata";

// ----- Gate -----------------------------------------------------------------------------------

/// Route template of a request, e.g. `GET /v1.0/groups/{id}/members`.
fn route_of(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    format!("{} {}", req.method(), path)
}

/// Base cost in resource units and whether the request is a write, per Graph's identity limits.
fn cost_of(method: &Method, route: &str, query: &str) -> (u32, bool) {
    if *method != Method::GET {
        return (1, true);
    }
    let mut base: i32 = if route.contains("/transitiveMembers") {
        5
    } else if route.contains("/members") || route.ends_with("/subscribedSkus") {
        3
    } else if route.ends_with("/v1.0/users") {
        2
    } else {
        1
    };
    let q = parse_query(query);
    if q.iter().any(|(k, _)| k.eq_ignore_ascii_case("$select")) {
        base -= 1;
    }
    if let Some((_, t)) = q.iter().find(|(k, _)| k.eq_ignore_ascii_case("$top"))
        && t.parse::<u32>().is_ok_and(|t| t < 20)
    {
        base -= 1;
    }
    (base.max(1) as u32, false)
}

fn injected(status: u16) -> GraphError {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match status {
        503 => {
            let mut e = GraphError::new(
                code,
                "serviceNotAvailable",
                "The service is not available. Try the request again after a delay. There may be a Retry-After header.",
            );
            e.headers.push((header::RETRY_AFTER, "1".into()));
            e
        }
        504 => GraphError::new(
            code,
            "timeout",
            "The operation timed out before it could be completed.",
        ),
        _ => GraphError::new(
            code,
            "generalException",
            "An unspecified error has occurred.",
        ),
    }
}

/// Every `/v1.0` request passes here: request ids, authentication (which picks the tenant: the
/// one the token was issued for), that tenant's injected errors, throttling and statistics.
/// Handlers find the tenant as an `Extension<Arc<Tenant>>`.
pub async fn gate(State(st): St, req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let client_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let request_id = Uuid::new_v4().to_string();
    let ids = RequestIds {
        client_request_id: client_id.unwrap_or_else(|| request_id.clone()),
        request_id,
    };
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (tenant, caller) = authenticate(&st, auth);
    let t2 = tenant.clone();
    let route2 = route.clone();
    let mut res = REQUEST
        .scope(ids.clone(), async move {
            gated(t2, caller, req, next, &route2).await
        })
        .await;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ids.request_id) {
        h.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&ids.client_request_id) {
        h.insert("client-request-id", v);
    }
    h.insert(
        "x-ms-ags-diagnostic",
        HeaderValue::from_static(
            r#"{"ServerInfo":{"DataCenter":"Local","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"EMULATOR"}}"#,
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("odata-version", HeaderValue::from_static("4.0"));
    tenant.stats.record(route, res.status().as_u16());
    res
}

async fn gated(
    st: Arc<Tenant>,
    caller: Result<Caller, GraphError>,
    mut req: Request,
    next: Next,
    route: &str,
) -> Response {
    if let Some(status) = st.roll_error() {
        st.stats.injected_errors.fetch_add(1, Ordering::Relaxed);
        return injected(status).into_response();
    }
    let app = match caller {
        Ok(c) => c.app_id,
        Err(e) => return e.into_response(),
    };
    let tenant = st.id.clone();
    req.extensions_mut().insert(st.clone());
    if route.ends_with("/$batch") {
        // Requests inside a batch are charged one by one.
        return next.run(req).await;
    }
    let (ru, write) = cost_of(req.method(), route, req.uri().query().unwrap_or(""));
    let key = format!("{app}/{tenant}");
    let (read_pct, write_pct) = match st.throttle(&key, ru, write) {
        Throttle::Ok {
            read_pct,
            write_pct,
        } => (read_pct, write_pct),
        Throttle::Reads(secs) => {
            st.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return GraphError::throttled(
                secs,
                format!("Tenant_Application/ReadWrite/{app}/{tenant}"),
                "ResourceUnitLimitExceeded",
            )
            .into_response();
        }
        Throttle::Writes(secs) => {
            st.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return GraphError::throttled(
                secs,
                format!("Tenant_Application/Write/{app}/{tenant}"),
                "WriteLimitExceeded",
            )
            .into_response();
        }
    };
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert("x-ms-resource-unit", HeaderValue::from(ru));
    let pct = read_pct.max(write_pct.unwrap_or(0.0));
    if pct >= 0.8
        && let Ok(v) = HeaderValue::from_str(&format!("{:.1}", (pct * 10.0).floor() / 10.0))
    {
        h.insert("x-ms-throttle-limit-percentage", v);
    }
    res
}

/// Unknown `/v1.0` paths.
pub async fn unknown_segment(req: Request) -> Response {
    let path = req.uri().path();
    let seg = path
        .strip_prefix("/v1.0/")
        .and_then(|p| p.split('/').next())
        .unwrap_or(path);
    GraphError::odata(format!("Resource not found for the segment '{seg}'.")).into_response()
}

pub async fn method_not_allowed() -> Response {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
    .into_response()
}

// ----- Query helpers --------------------------------------------------------------------------

fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

struct Q {
    pairs: Vec<(String, String)>,
}

impl Q {
    fn new(q: Option<&str>) -> Self {
        Q {
            pairs: parse_query(q.unwrap_or("")),
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    fn select(&self) -> Option<Vec<String>> {
        self.get("$select").map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
    }
    fn top(&self) -> Result<usize, GraphError> {
        match self.get("$top") {
            None => Ok(100),
            Some(t) => match t.trim().parse::<i64>() {
                Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
                Ok(_) => Err(GraphError::unsupported_query(format!(
                    "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                ))),
                Err(_) => Err(GraphError::odata(format!(
                    "Invalid value '{t}' for $top query option found. The $top query option requires a non-negative integer value."
                ))),
            },
        }
    }
    fn count(&self) -> bool {
        self.get("$count")
            .is_some_and(|c| c.eq_ignore_ascii_case("true"))
    }
}

fn validate_select(
    select: &Option<Vec<String>>,
    allowed: &[&str],
    ty: &str,
) -> Result<(), GraphError> {
    if let Some(sel) = select {
        for p in sel {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(p)) {
                return Err(GraphError::odata(format!(
                    "Could not find a property named '{p}' on type 'microsoft.graph.{ty}'."
                )));
            }
        }
    }
    Ok(())
}

fn project(mut m: Map<String, Value>, select: Option<&[String]>) -> Map<String, Value> {
    if let Some(sel) = select {
        m.retain(|k, _| sel.iter().any(|s| s.eq_ignore_ascii_case(k)));
    }
    m
}

/// Opaque paging token: where the next page starts, bound to the collection it pages.
fn skiptoken(scope: u64, offset: usize) -> String {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(b"DSpt");
    b.extend_from_slice(&scope.to_le_bytes());
    b.extend_from_slice(&(offset as u64).to_le_bytes());
    URL_SAFE_NO_PAD.encode(b)
}

fn read_skiptoken(tok: &str, scope: u64) -> Result<usize, GraphError> {
    let expired = || {
        GraphError::bad_request(
            "The specified page token value has expired and can no longer be included in your request.",
        )
        .with_code("Directory_ExpiredPageToken")
    };
    let b = URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .map_err(|_| expired())?;
    if b.len() != 20 || &b[..4] != b"DSpt" {
        return Err(expired());
    }
    let s = u64::from_le_bytes(b[4..12].try_into().map_err(|_| expired())?);
    let o = u64::from_le_bytes(b[12..20].try_into().map_err(|_| expired())?);
    if s != scope {
        return Err(expired());
    }
    Ok(o as usize)
}

impl GraphError {
    fn with_code(mut self, code: &str) -> Self {
        self.code = code.into();
        self
    }
}

pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `@odata.nextLink` for the page after `next`: the same request with a new `$skiptoken`.
fn next_link(headers: &HeaderMap, path: &str, q: &Q, top: usize, token: String) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    let mut has_top = false;
    for (k, v) in &q.pairs {
        if k.eq_ignore_ascii_case("$skiptoken") {
            continue;
        }
        if k.eq_ignore_ascii_case("$top") {
            has_top = true;
        }
        ser.append_pair(k, v);
    }
    if !has_top {
        ser.append_pair("$top", &top.to_string());
    }
    ser.append_pair("$skiptoken", &token);
    let qs = ser
        .finish()
        .replace("%24", "$")
        .replace("%2C", ",")
        .replace('+', "%20");
    format!("{}{}?{}", base_url(headers), path, qs)
}

fn scope_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn parse_body(body: &Bytes) -> Result<Value, GraphError> {
    serde_json::from_slice::<Value>(body).map_err(|_| {
        GraphError::odata(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    })
}

fn find_group(dir: &Directory, id: &str) -> Result<u32, GraphError> {
    let uid = Uuid::parse_str(id).map_err(|_| GraphError::invalid_id(id))?;
    match dir.lookup(&uid) {
        Some(ObjRef::Group(g)) => Ok(g),
        _ => Err(GraphError::not_found(id)),
    }
}

// ----- subscribedSkus --------------------------------------------------------------------------

pub async fn subscribed_skus(Extension(st): Tn) -> Response {
    let dir = st.dir();
    let v: Vec<Value> = (0..dir.skus.len()).map(|i| dir.sku_json(i)).collect();
    graph_json(
        StatusCode::OK,
        &json!({"@odata.context": format!("{CTX}#subscribedSkus"), "value": v}),
    )
}

// ----- groups ---------------------------------------------------------------------------------

enum Filter {
    Eq(String, String),
    StartsWith(String, String),
}

fn parse_literal(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn parse_filter(f: &str) -> Result<Filter, GraphError> {
    let t = f.trim();
    let invalid = || GraphError::odata(format!("Invalid filter clause: syntax error in '{f}'."));
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("startswith(") {
        let inner = t["startswith(".len()..]
            .strip_suffix(')')
            .ok_or_else(invalid)?;
        let (prop, lit) = inner.split_once(',').ok_or_else(invalid)?;
        return Ok(Filter::StartsWith(
            prop.trim().to_string(),
            parse_literal(lit).ok_or_else(invalid)?,
        ));
    }
    let mut it = t.splitn(3, ' ');
    let prop = it.next().ok_or_else(invalid)?;
    let op = it.next().ok_or_else(invalid)?;
    let lit = it.next().ok_or_else(invalid)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(GraphError::unsupported_query(format!(
            "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'Group'."
        )));
    }
    Ok(Filter::Eq(
        prop.to_string(),
        parse_literal(lit).ok_or_else(invalid)?,
    ))
}

fn group_prop(dir: &Directory, g: u32, prop: &str) -> Result<String, GraphError> {
    let gr = &dir.groups[g as usize];
    match prop.to_ascii_lowercase().as_str() {
        "displayname" => Ok(gr.display_name.clone()),
        "id" => Ok(gr.id.to_string()),
        "mailnickname" => Ok(gr.mail_nickname.clone()),
        _ => Err(GraphError::unsupported_query(format!(
            "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'Group'."
        ))),
    }
}

pub async fn list_groups(
    Extension(st): Tn,
    headers: HeaderMap,
    req_uri: axum::http::Uri,
) -> Response {
    match list_groups_inner(&st, &headers, &req_uri) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn list_groups_inner(
    st: &Tenant,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Response, GraphError> {
    let dir = st.dir();
    let q = Q::new(uri.query());
    let top = q.top()?;
    let select = q.select();
    let mut ids: Vec<u32> = (0..dir.groups.len() as u32).collect();
    if let Some(f) = q.get("$filter") {
        let filter = parse_filter(f)?;
        let mut keep = Vec::new();
        for g in ids {
            let ok = match &filter {
                Filter::Eq(p, v) => group_prop(&dir, g, p)?.eq_ignore_ascii_case(v),
                Filter::StartsWith(p, v) => group_prop(&dir, g, p)?
                    .to_lowercase()
                    .starts_with(&v.to_lowercase()),
            };
            if ok {
                keep.push(g);
            }
        }
        ids = keep;
    }
    if let Some(s) = q.get("$search") {
        let eventual = headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
        if !eventual {
            return Err(GraphError::unsupported_query(
                "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
            ));
        }
        let s = s.trim();
        let inner = s
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .ok_or_else(|| {
                GraphError::odata(format!(
                    "Syntax error: character '{s}' is not valid in $search."
                ))
            })?;
        let (prop, term) = inner.split_once(':').ok_or_else(|| {
            GraphError::odata("Invalid $search query: expected \"property:value\".")
        })?;
        let term = term.to_lowercase();
        let mut keep = Vec::new();
        for g in ids {
            let val = group_prop(&dir, g, prop)?.to_lowercase();
            if val
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.starts_with(&term))
                || val.starts_with(&term)
            {
                keep.push(g);
            }
        }
        ids = keep;
    }
    if let Some(o) = q.get("$orderby") {
        let desc = o.to_ascii_lowercase().ends_with(" desc");
        if !o.to_ascii_lowercase().starts_with("displayname") {
            return Err(GraphError::unsupported_query(
                "Sorting not supported for current query.",
            ));
        }
        ids.sort_by(|a, b| {
            dir.groups[*a as usize]
                .display_name
                .to_lowercase()
                .cmp(&dir.groups[*b as usize].display_name.to_lowercase())
        });
        if desc {
            ids.reverse();
        }
    }
    let scope = scope_hash(&[
        "groups",
        q.get("$filter").unwrap_or(""),
        q.get("$search").unwrap_or(""),
        q.get("$orderby").unwrap_or(""),
    ]);
    let offset = match q.get("$skiptoken") {
        Some(t) => read_skiptoken(t, scope)?,
        None => 0,
    };
    let end = (offset + top).min(ids.len());
    let value: Vec<Value> = ids
        .get(offset.min(ids.len())..end)
        .unwrap_or(&[])
        .iter()
        .map(|g| Value::Object(project(dir.group_json(*g), select.as_deref())))
        .collect();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{CTX}#groups")));
    if q.count() {
        body.insert("@odata.count".into(), json!(ids.len()));
    }
    if end < ids.len() {
        let tok = skiptoken(scope, end);
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(headers, "/v1.0/groups", &q, top, tok)),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Ok(graph_json(StatusCode::OK, &Value::Object(body)))
}

pub async fn get_group(
    Extension(st): Tn,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    let dir = st.dir();
    let q = Q::new(uri.query());
    let g = match find_group(&dir, &id) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let mut m = project(dir.group_json(g), q.select().as_deref());
    m.insert(
        "@odata.context".into(),
        json!(format!("{CTX}#groups/$entity")),
    );
    graph_json(StatusCode::OK, &Value::Object(m))
}

// ----- members --------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Cast {
    All,
    User,
    Group,
    Device,
    Contact,
}

/// A type-cast segment after `members` / `transitiveMembers`, in the qualified form
/// (`microsoft.graph.user`) or the short one Microsoft's SDKs send (`graph.user`); both name the
/// same cast. Returns the cast and the `@odata.context` collection of its answers.
fn parse_cast(s: &str) -> Option<(Cast, &'static str)> {
    let name = s
        .strip_prefix("microsoft.graph.")
        .or_else(|| s.strip_prefix("graph."))?;
    match name {
        "user" => Some((Cast::User, "users")),
        "group" => Some((Cast::Group, "groups")),
        "device" => Some((Cast::Device, "devices")),
        "orgContact" => Some((Cast::Contact, "contacts")),
        _ => None,
    }
}

/// The qualified name of a cast, as `@odata.nextLink` spells it whichever form was asked for.
fn cast_segment(c: Cast) -> &'static str {
    match c {
        Cast::All => "",
        Cast::User => "microsoft.graph.user",
        Cast::Group => "microsoft.graph.group",
        Cast::Device => "microsoft.graph.device",
        Cast::Contact => "microsoft.graph.orgContact",
    }
}

fn cast_len(m: &Members, c: Cast) -> usize {
    match c {
        Cast::All => m.len(),
        Cast::User => m.users.len(),
        Cast::Group => m.groups.len(),
        Cast::Device => m.devices.len(),
        Cast::Contact => m.contacts.len(),
    }
}

fn cast_get(m: &Members, c: Cast, i: usize) -> Option<ObjRef> {
    match c {
        Cast::All => m.get(i),
        Cast::User => m.users.get(i).map(|u| ObjRef::User(*u)),
        Cast::Group => m.groups.get(i).map(|g| ObjRef::Group(*g)),
        Cast::Device => m.devices.get(i).map(|d| ObjRef::Device(*d)),
        Cast::Contact => m.contacts.get(i).map(|c| ObjRef::Contact(*c)),
    }
}

fn object_json(dir: &Directory, o: ObjRef, select: Option<&[String]>) -> Value {
    let (ty, mut m) = match o {
        ObjRef::User(u) => {
            let st = dir.users[u as usize].lock();
            ("#microsoft.graph.user", dir.user_json(u, &st, select))
        }
        ObjRef::Group(g) => ("#microsoft.graph.group", project(dir.group_json(g), select)),
        ObjRef::Device(d) => (
            "#microsoft.graph.device",
            project(dir.device_json(d), select),
        ),
        ObjRef::Contact(c) => (
            "#microsoft.graph.orgContact",
            project(dir.contact_json(c), select),
        ),
    };
    m.insert("@odata.type".into(), json!(ty));
    Value::Object(m)
}

pub async fn members(st: Tn, Path(id): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    members_any(st, id, None, false, false, headers, uri)
}

pub async fn members_cast(
    st: Tn,
    Path((id, cast)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    members_any(st, id, Some(cast), false, false, headers, uri)
}

/// `…/members/{cast}/$count`.
pub async fn members_cast_count(
    st: Tn,
    Path((id, cast)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    members_any(st, id, Some(cast), true, false, headers, uri)
}

pub async fn transitive_members(
    st: Tn,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    members_any(st, id, None, false, true, headers, uri)
}

pub async fn transitive_members_cast(
    st: Tn,
    Path((id, cast)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    members_any(st, id, Some(cast), false, true, headers, uri)
}

/// `…/transitiveMembers/{cast}/$count`.
pub async fn transitive_members_cast_count(
    st: Tn,
    Path((id, cast)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    members_any(st, id, Some(cast), true, true, headers, uri)
}

fn members_any(
    Extension(st): Tn,
    id: String,
    cast: Option<String>,
    count: bool,
    transitive: bool,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match members_inner(&st, &id, cast.as_deref(), count, transitive, &headers, &uri) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `…/$count`: the number of (cast) members as `text/plain`. Graph answers a raw count only
/// to advanced queries, i.e. with `ConsistencyLevel: eventual`.
fn members_count(
    dir: &Directory,
    id: &str,
    cast: Cast,
    transitive: bool,
    headers: &HeaderMap,
) -> Result<Response, GraphError> {
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
    if !eventual {
        return Err(GraphError::unsupported_query(
            "Raw count (/$count) is not supported because the 'ConsistencyLevel:eventual' header is missing. Refer to https://aka.ms/graph-docs/advanced-queries for more information",
        ));
    }
    let g = find_group(dir, id)?;
    let m = if transitive {
        dir.transitive(g)
    } else {
        &dir.groups[g as usize].members
    };
    let mut res = (StatusCode::OK, cast_len(m, cast).to_string()).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

fn members_inner(
    st: &Tenant,
    id: &str,
    cast: Option<&str>,
    count: bool,
    transitive: bool,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, GraphError> {
    let dir = st.dir();
    let q = Q::new(uri.query());
    let (cast, ctx) = match cast {
        None => (Cast::All, "directoryObjects"),
        Some("$count") if !count => {
            return members_count(&dir, id, Cast::All, transitive, headers);
        }
        Some(c) => parse_cast(c).ok_or_else(|| {
            GraphError::odata(format!("Resource not found for the segment '{c}'."))
        })?,
    };
    if count {
        return members_count(&dir, id, cast, transitive, headers);
    }
    let top = q.top()?;
    let select = q.select();
    if cast == Cast::User {
        validate_select(&select, USER_PROPS, "user")?;
    }
    if q.get("$filter").is_some() {
        return Err(GraphError::unsupported_query("Unsupported Query."));
    }
    let g = find_group(&dir, id)?;
    let m = if transitive {
        dir.transitive(g)
    } else {
        &dir.groups[g as usize].members
    };
    let kind = if transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    let cast_name = match cast {
        Cast::All => "",
        Cast::User => "user",
        Cast::Group => "group",
        Cast::Device => "device",
        Cast::Contact => "contact",
    };
    let scope = scope_hash(&[id, kind, cast_name]);
    let offset = match q.get("$skiptoken") {
        Some(t) => read_skiptoken(t, scope)?,
        None => 0,
    };
    st.stats
        .record_member_page(format!("{id}/{kind}/{cast_name}/{offset}"));
    let len = cast_len(m, cast);
    let end = (offset + top).min(len);
    let mut value = Vec::with_capacity(end.saturating_sub(offset));
    for i in offset..end {
        if let Some(o) = cast_get(m, cast, i) {
            value.push(object_json(&dir, o, select.as_deref()));
        }
    }
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{CTX}#{ctx}")));
    if q.count() {
        body.insert("@odata.count".into(), json!(len));
    }
    if end < len {
        let path = match cast {
            Cast::All => format!("/v1.0/groups/{id}/{kind}"),
            _ => format!("/v1.0/groups/{id}/{kind}/{}", cast_segment(cast)),
        };
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(headers, &path, &q, top, skiptoken(scope, end))),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Ok(graph_json(StatusCode::OK, &Value::Object(body)))
}

// ----- users ----------------------------------------------------------------------------------

fn find_user(dir: &Directory, id: &str) -> Result<u32, GraphError> {
    dir.find_user(id).ok_or_else(|| GraphError::not_found(id))
}

fn user_entity(dir: &Directory, u: u32, select: Option<&[String]>) -> Value {
    let st = dir.users[u as usize].lock();
    let mut m = dir.user_json(u, &st, select);
    m.insert(
        "@odata.context".into(),
        json!(format!("{CTX}#users/$entity")),
    );
    Value::Object(m)
}

pub async fn list_users(Extension(st): Tn, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    match list_users_inner(&st, &headers, &uri) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn user_prop(dir: &Directory, u: u32, prop: &str) -> Result<Option<String>, GraphError> {
    Ok(match prop.to_ascii_lowercase().as_str() {
        "id" => Some(dir.user_ids[u as usize].to_string()),
        "userprincipalname" | "mail" => Some(dir.upn(u)),
        "displayname" => {
            let (f, l) = dir.names(u);
            Some(format!("{f} {l}"))
        }
        "givenname" => Some(dir.names(u).0.to_string()),
        "surname" => Some(dir.names(u).1.to_string()),
        "usagelocation" => dir.users[u as usize]
            .lock()
            .usage_location
            .map(|c| String::from_utf8_lossy(&c).into_owned()),
        _ => {
            return Err(GraphError::unsupported_query(format!(
                "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'."
            )));
        }
    })
}

fn list_users_inner(
    st: &Tenant,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Response, GraphError> {
    let dir = st.dir();
    let q = Q::new(uri.query());
    let top = q.top()?;
    let select = q.select();
    validate_select(&select, USER_PROPS, "user")?;
    if let Some(clauses) = q.get("$filter").and_then(split_or) {
        return list_users_any_of(&dir, headers, &q, top, select, &clauses);
    }
    let filter = q.get("$filter").map(parse_filter).transpose()?;
    let scope = scope_hash(&["users", q.get("$filter").unwrap_or("")]);
    let mut offset = match q.get("$skiptoken") {
        Some(t) => read_skiptoken(t, scope)?,
        None => 0,
    };
    let n = dir.user_ids.len();
    let mut value = Vec::new();
    let mut more = false;
    // Fast path: an exact id or userPrincipalName.
    if let Some(Filter::Eq(p, v)) = &filter
        && (p.eq_ignore_ascii_case("id") || p.eq_ignore_ascii_case("userPrincipalName"))
    {
        if offset == 0
            && let Some(u) = dir.find_user(v)
        {
            value.push(object_json(&dir, ObjRef::User(u), select.as_deref()));
        }
        offset = n;
    }
    while offset < n {
        let u = offset as u32;
        offset += 1;
        let keep = match &filter {
            None => true,
            Some(Filter::Eq(p, v)) => {
                user_prop(&dir, u, p)?.is_some_and(|x| x.eq_ignore_ascii_case(v))
            }
            Some(Filter::StartsWith(p, v)) => user_prop(&dir, u, p)?
                .is_some_and(|x| x.to_lowercase().starts_with(&v.to_lowercase())),
        };
        if !keep {
            continue;
        }
        if value.len() == top {
            more = true;
            offset -= 1;
            break;
        }
        value.push(object_json(&dir, ObjRef::User(u), select.as_deref()));
    }
    for v in &mut value {
        if let Some(m) = v.as_object_mut() {
            m.remove("@odata.type");
        }
    }
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{CTX}#users")));
    if more {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(
                headers,
                "/v1.0/users",
                &q,
                top,
                skiptoken(scope, offset)
            )),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Ok(graph_json(StatusCode::OK, &Value::Object(body)))
}

/// The clauses of `a or b or …` (split outside quoted literals); `None` for a single clause.
fn split_or(f: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let bytes = f.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && bytes.len() - i >= 4 && bytes[i..i + 4].eq_ignore_ascii_case(b" or ") {
            // `i` and `i + 4` border ASCII bytes, so the slices below are on char boundaries.
            parts.push(f[start..i].trim().to_string());
            i += 4;
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(f[start..].trim().to_string());
    (parts.len() > 1).then_some(parts)
}

/// `GET /v1.0/users?$filter=startswith(displayName,'an') or startswith(userPrincipalName,'an')`:
/// the users matching any clause, in directory order, paged like every user list.
fn list_users_any_of(
    dir: &Directory,
    headers: &HeaderMap,
    q: &Q,
    top: usize,
    select: Option<Vec<String>>,
    clauses: &[String],
) -> Result<Response, GraphError> {
    let filters = clauses
        .iter()
        .map(|c| parse_filter(c))
        .collect::<Result<Vec<_>, _>>()?;
    let scope = scope_hash(&["users", q.get("$filter").unwrap_or("")]);
    let mut offset = match q.get("$skiptoken") {
        Some(t) => read_skiptoken(t, scope)?,
        None => 0,
    };
    let n = dir.user_ids.len();
    let mut value = Vec::new();
    let mut more = false;
    while offset < n {
        let u = offset as u32;
        offset += 1;
        let mut keep = false;
        for f in &filters {
            keep |= match f {
                Filter::Eq(p, v) => {
                    user_prop(dir, u, p)?.is_some_and(|x| x.eq_ignore_ascii_case(v))
                }
                Filter::StartsWith(p, v) => user_prop(dir, u, p)?
                    .is_some_and(|x| x.to_lowercase().starts_with(&v.to_lowercase())),
            };
        }
        if !keep {
            continue;
        }
        if value.len() == top {
            more = true;
            offset -= 1;
            break;
        }
        let mut v = object_json(dir, ObjRef::User(u), select.as_deref());
        if let Some(m) = v.as_object_mut() {
            m.remove("@odata.type");
        }
        value.push(v);
    }
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{CTX}#users")));
    if more {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(
                headers,
                "/v1.0/users",
                q,
                top,
                skiptoken(scope, offset)
            )),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Ok(graph_json(StatusCode::OK, &Value::Object(body)))
}

pub async fn get_user(Extension(st): Tn, Path(id): Path<String>, uri: axum::http::Uri) -> Response {
    let dir = st.dir();
    let q = Q::new(uri.query());
    let select = q.select();
    if let Err(e) = validate_select(&select, USER_PROPS, "user") {
        return e.into_response();
    }
    match find_user(&dir, &id) {
        Ok(u) => graph_json(StatusCode::OK, &user_entity(&dir, u, select.as_deref())),
        Err(e) => e.into_response(),
    }
}

/// `GET /users/{id}/licenseDetails` (see [`Directory::license_details`]).
pub async fn license_details(Extension(st): Tn, Path(id): Path<String>) -> Response {
    let dir = st.dir();
    match find_user(&dir, &id) {
        Ok(u) => {
            let value = {
                let state = dir.users[u as usize].lock();
                dir.license_details(u, &state)
            };
            graph_json(
                StatusCode::OK,
                &json!({
                    "@odata.context": format!("{CTX}#users('{id}')/licenseDetails"),
                    "value": value,
                }),
            )
        }
        Err(e) => e.into_response(),
    }
}

pub async fn patch_user(Extension(st): Tn, Path(id): Path<String>, body: Bytes) -> Response {
    match patch_user_inner(&st, &id, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

const PATCHABLE_IGNORED: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "businessPhones",
    "accountEnabled",
];

fn patch_user_inner(st: &Tenant, id: &str, body: &Bytes) -> Result<(), GraphError> {
    let dir = st.dir();
    let v = parse_body(body)?;
    let obj = v.as_object().ok_or_else(|| {
        GraphError::odata("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
    })?;
    let u = find_user(&dir, id)?;
    let mut loc: Option<Option<[u8; 2]>> = None;
    for (k, val) in obj {
        if k == "usageLocation" {
            loc = Some(match val {
                Value::Null => None,
                Value::String(s) => Some(parse_country(s).ok_or_else(|| {
                    GraphError::bad_request(
                        "Invalid value specified for property 'usageLocation' of resource 'User'.",
                    )
                })?),
                _ => {
                    return Err(GraphError::bad_request(
                        "Invalid value specified for property 'usageLocation' of resource 'User'.",
                    ));
                }
            });
        } else if !PATCHABLE_IGNORED.contains(&k.as_str()) && !k.starts_with('@') {
            return Err(GraphError::bad_request(format!(
                "Property '{k}' does not exist as a declared property or extension property."
            )));
        }
    }
    if let Some(l) = loc {
        dir.set_usage_location(u, l);
    }
    Ok(())
}

pub async fn assign_license(Extension(st): Tn, Path(id): Path<String>, body: Bytes) -> Response {
    match assign_inner(&st, &id, &body) {
        Ok(v) => graph_json(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

fn guid_of(v: &Value) -> Result<Uuid, GraphError> {
    let s = v.as_str().ok_or_else(|| {
        GraphError::odata(format!(
            "Cannot convert the literal '{v}' to the expected type 'Edm.Guid'."
        ))
    })?;
    Uuid::parse_str(s).map_err(|_| {
        GraphError::odata(format!(
            "Cannot convert the literal '{s}' to the expected type 'Edm.Guid'."
        ))
    })
}

fn assign_inner(st: &Tenant, id: &str, body: &Bytes) -> Result<Value, GraphError> {
    let dir = st.dir();
    let v = parse_body(body)?;
    let missing: Vec<&str> = ["addLicenses", "removeLicenses"]
        .into_iter()
        .filter(|k| v.get(*k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(GraphError::bad_request(format!(
            "One or more parameters of the operation 'assignLicense' are missing from the request payload. The missing parameters are: {}.",
            missing.join(", ")
        )));
    }
    let bad = |p: &str| {
        GraphError::odata(format!(
            "Invalid value specified for parameter '{p}' of the operation 'assignLicense'."
        ))
    };
    let mut add = Vec::new();
    match &v["addLicenses"] {
        Value::Array(items) => {
            for it in items {
                let sku = guid_of(it.get("skuId").ok_or_else(|| bad("addLicenses"))?)?;
                let mut disabled = Vec::new();
                match it.get("disabledPlans") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(ps)) => {
                        for p in ps {
                            disabled.push(guid_of(p)?);
                        }
                    }
                    Some(_) => return Err(bad("addLicenses")),
                }
                add.push((sku, disabled));
            }
        }
        Value::Null => {}
        _ => return Err(bad("addLicenses")),
    }
    let mut remove = Vec::new();
    match &v["removeLicenses"] {
        Value::Array(items) => {
            for it in items {
                remove.push(guid_of(it)?);
            }
        }
        Value::Null => {}
        _ => return Err(bad("removeLicenses")),
    }
    let u = find_user(&dir, id)?;
    dir.assign_license(u, &add, &remove)?;
    Ok(user_entity(&dir, u, None))
}

// ----- $batch ---------------------------------------------------------------------------------

fn canonical_header(name: &str) -> String {
    match name {
        "content-type" => "Content-Type".into(),
        "retry-after" => "Retry-After".into(),
        "location" => "Location".into(),
        "cache-control" => "Cache-Control".into(),
        "odata-version" => "OData-Version".into(),
        other => other.to_string(),
    }
}

const BATCH_ITEM_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    "location",
    "cache-control",
    "odata-version",
    "x-ms-resource-unit",
    "x-ms-throttle-limit-percentage",
    "x-ms-throttle-scope",
    "x-ms-throttle-information",
];

pub async fn batch(State(st): St, headers: HeaderMap, body: Bytes) -> Response {
    match batch_inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

struct Item {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse_batch(body: &Bytes) -> Result<Vec<Item>, GraphError> {
    let invalid = || GraphError::odata("Invalid batch payload format.");
    let v = parse_body(body)?;
    let reqs = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    if reqs.is_empty() {
        return Err(invalid());
    }
    if reqs.len() > MAX_BATCH {
        return Err(GraphError::odata(format!(
            "The number of requests in the batch exceeds the limit of {MAX_BATCH}."
        )));
    }
    let mut items: Vec<Item> = Vec::with_capacity(reqs.len());
    for r in reqs {
        let id = match r.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(invalid()),
        };
        if items.iter().any(|i| i.id == id) {
            return Err(GraphError::odata(format!(
                "Batch request contains duplicate request id '{id}'."
            )));
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(invalid)?;
        let url = r
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?
            .to_string();
        if url.contains("$batch") {
            return Err(GraphError::odata(format!(
                "Request id : {id} is a nested batch request, which is not supported."
            )));
        }
        let mut hs = Vec::new();
        if let Some(h) = r.get("headers") {
            let h = h.as_object().ok_or_else(invalid)?;
            for (k, v) in h {
                hs.push((
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                ));
            }
        }
        let body = r.get("body").filter(|b| !b.is_null()).cloned();
        if body.is_some()
            && !hs
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            return Err(GraphError::odata(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            )));
        }
        let mut depends_on = Vec::new();
        if let Some(d) = r.get("dependsOn") {
            for x in d.as_array().ok_or_else(invalid)? {
                let dep = x.as_str().ok_or_else(invalid)?.to_string();
                if !items.iter().any(|i| i.id == dep) {
                    return Err(GraphError::odata(format!(
                        "Request with id '{id}' depends on a request id '{dep}' that does not precede it in the batch."
                    )));
                }
                depends_on.push(dep);
            }
        }
        items.push(Item {
            id,
            method,
            url,
            headers: hs,
            body,
            depends_on,
        });
    }
    Ok(items)
}

async fn batch_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GraphError> {
    let items = parse_batch(&body)?;
    let Some(router) = st.router.get().cloned() else {
        return Err(GraphError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "Batching is not ready.",
        ));
    };
    let mut statuses: Vec<(String, u16)> = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let failed_dep = it.depends_on.iter().any(|d| {
            statuses
                .iter()
                .any(|(i, s)| i == d && !(200..300).contains(s))
        });
        if failed_dep {
            statuses.push((it.id.clone(), 424));
            let e = GraphError::new(
                StatusCode::FAILED_DEPENDENCY,
                "FailedDependency",
                "The request was not executed because a request it depends on failed.",
            );
            out.push(json!({"id": it.id, "status": 424, "headers": {"Content-Type": "application/json"}, "body": e.body()}));
            continue;
        }
        let mut path = it.url.trim().to_string();
        for p in ["https://graph.microsoft.com/v1.0", "/v1.0", "v1.0"] {
            if let Some(rest) = path.strip_prefix(p) {
                path = rest.to_string();
            }
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let uri = format!("/v1.0{path}");
        let mut b = Request::builder().method(it.method.clone()).uri(&uri);
        for (k, v) in &it.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                b = b.header(k, v);
            }
        }
        for h in [header::AUTHORIZATION, header::HOST] {
            if let Some(v) = headers.get(&h) {
                b = b.header(h, v.clone());
            }
        }
        let body = match &it.body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        let req = match b.body(body) {
            Ok(r) => r,
            Err(_) => {
                return Err(GraphError::odata(format!(
                    "Invalid request URL '{}' in batch request id '{}'.",
                    it.url, it.id
                )));
            }
        };
        let res = match router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = res.status().as_u16();
        let mut hs = Map::new();
        for name in BATCH_ITEM_HEADERS {
            if let Some(v) = res.headers().get(*name).and_then(|v| v.to_str().ok()) {
                hs.insert(canonical_header(name), json!(v));
            }
        }
        let bytes = res
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut entry = Map::new();
        entry.insert("id".into(), json!(it.id));
        entry.insert("status".into(), json!(status));
        entry.insert("headers".into(), Value::Object(hs));
        if !bytes.is_empty() {
            let b = serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            entry.insert("body".into(), b);
        }
        statuses.push((it.id, status));
        out.push(Value::Object(entry));
    }
    Ok(graph_json(StatusCode::OK, &json!({"responses": out})))
}
