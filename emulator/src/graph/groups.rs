//! Groups: `GET /groups` (with `$filter`, `$search`, `$orderby`, paging) and `GET /groups/{id}`.

use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::odata::{Q, next_link, parse_filter, project, scope_hash, skiptoken};
use super::{CTX, Tn};
use crate::directory::{Directory, ObjRef};
use crate::error::{GraphError, graph_json};
use crate::state::Tenant;

/// A `groups/{id}` segment: a GUID naming a group.
pub(super) fn find_group(dir: &Directory, id: &str) -> Result<u32, GraphError> {
    let uid = Uuid::parse_str(id).map_err(|_| GraphError::invalid_id(id))?;
    match dir.lookup(&uid) {
        Some(ObjRef::Group(g)) => Ok(g),
        _ => Err(GraphError::not_found(id)),
    }
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
            if filter.matches(&group_prop(&dir, g, filter.prop())?) {
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
    let offset = q.offset(scope)?;
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
