//! JSON batching: `POST /$batch` runs up to 20 requests through the same routes, in order,
//! honouring `dependsOn`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::{St, parse_body};
use crate::error::{GraphError, graph_json};
use crate::state::AppState;

const MAX_BATCH: usize = 20;

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
