//! Users: `GET /users` (with `$filter`, `$select`, paging), `GET /users/{id}` and
//! `PATCH /users/{id}` (usage location).

use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::odata::{
    Filter, Q, next_link, parse_filter, scope_hash, skiptoken, split_or, validate_select,
};
use super::{CTX, Tn, object_json, parse_body};
use crate::directory::{Directory, ObjRef, USER_PROPS, parse_country};
use crate::error::{GraphError, graph_json};
use crate::state::Tenant;

/// A `users/{id | userPrincipalName}` segment: a user that exists (a deleted one is not
/// found, as in Graph).
pub(super) fn find_user(dir: &Directory, id: &str) -> Result<u32, GraphError> {
    dir.find_user(id)
        .filter(|u| !dir.is_deleted(*u))
        .ok_or_else(|| GraphError::not_found(id))
}

/// A user as `GET /users/{id}` answers it.
pub(super) fn user_entity(dir: &Directory, u: u32, select: Option<&[String]>) -> Value {
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
    // `a or b or …` keeps the users matching any clause, e.g.
    // `startswith(displayName,'an') or startswith(userPrincipalName,'an')`.
    let filters = match q.get("$filter") {
        None => Vec::new(),
        Some(f) => match split_or(f) {
            Some(clauses) => clauses
                .iter()
                .map(|c| parse_filter(c))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![parse_filter(f)?],
        },
    };
    let scope = scope_hash(&["users", q.get("$filter").unwrap_or("")]);
    let mut offset = q.offset(scope)?;
    let n = dir.user_ids.len();
    let mut value = Vec::new();
    let mut more = false;
    // Fast path: an exact id or userPrincipalName.
    if let [Filter::Eq(p, v)] = filters.as_slice()
        && (p.eq_ignore_ascii_case("id") || p.eq_ignore_ascii_case("userPrincipalName"))
    {
        if offset == 0
            && let Ok(u) = find_user(&dir, v)
        {
            value.push(object_json(&dir, ObjRef::User(u), select.as_deref()));
        }
        offset = n;
    }
    while offset < n {
        let u = offset as u32;
        offset += 1;
        if dir.is_deleted(u) {
            continue;
        }
        let mut keep = filters.is_empty();
        for f in &filters {
            keep |= user_prop(&dir, u, f.prop())?.is_some_and(|x| f.matches(&x));
        }
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
    if let Some(l) = loc
        && dir.set_usage_location(u, l).is_none()
    {
        return Err(GraphError::not_found(id));
    }
    Ok(())
}
