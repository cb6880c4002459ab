//! Group members: `members` and `transitiveMembers`, whole or cast to one type
//! (`microsoft.graph.user` …), paged, and their `$count`.

use std::sync::atomic::Ordering;

use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::groups::find_group;
use super::odata::{Q, next_link, scope_hash, skiptoken, validate_select};
use super::{CTX, Tn, object_json};
use crate::directory::{Directory, Members, ObjRef, USER_PROPS};
use crate::error::{GraphError, graph_json};
use crate::state::Tenant;

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

/// The number of (cast) members, deleted users left out.
fn cast_len(dir: &Directory, m: &Members, c: Cast) -> usize {
    let deleted =
        if matches!(c, Cast::All | Cast::User) && dir.deleted_users.load(Ordering::Acquire) > 0 {
            m.users.iter().filter(|u| dir.is_deleted(**u)).count()
        } else {
            0
        };
    positions(m, c) - deleted
}

/// The number of (cast) member positions, deleted users included: what paging walks.
fn positions(m: &Members, c: Cast) -> usize {
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
    let mut res = (StatusCode::OK, cast_len(dir, m, cast).to_string()).into_response();
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
    let offset = q.offset(scope)?;
    st.stats
        .record_member_page(format!("{id}/{kind}/{cast_name}/{offset}"));
    // A page walks `top` positions; a deleted user's is left out, so a page may hold fewer
    // (Graph's pages may be short too: clients follow `@odata.nextLink`, not counts).
    let len = positions(m, cast);
    let end = (offset + top).min(len);
    let mut value = Vec::with_capacity(end.saturating_sub(offset));
    for i in offset..end {
        match cast_get(m, cast, i) {
            Some(ObjRef::User(u)) if dir.is_deleted(u) => {}
            Some(o) => value.push(object_json(&dir, o, select.as_deref())),
            None => {}
        }
    }
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{CTX}#{ctx}")));
    if q.count() {
        body.insert("@odata.count".into(), json!(cast_len(&dir, m, cast)));
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
