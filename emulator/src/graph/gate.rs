//! The gate every `/v1.0` request passes: request ids, injected errors, authentication (which
//! picks the tenant), throttling by resource units, and statistics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::St;
use super::odata::parse_query;
use crate::error::{GraphError, REQUEST, RequestIds};
use crate::state::{Tenant, Throttle};
use crate::token::{Caller, authenticate};

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
