//! Drives (SharePoint document libraries and OneDrives) as Graph serves them for uploads:
//!
//! - `PUT /v1.0/drives/{drive-id}/root:/{path}:/content` — a file in one request (created or
//!   replaced; `?@microsoft.graph.conflictBehavior=fail` refuses an existing one);
//! - `POST /v1.0/drives/{drive-id}/root:/{path}:/createUploadSession` — an upload session, whose
//!   `uploadUrl` takes `PUT`s with `Content-Range: bytes a-b/total` in order (chunks a multiple
//!   of 320 KiB except the last; 202 with `nextExpectedRanges` until the last, then 201 with the
//!   item) and `DELETE` to cancel;
//! - `GET /v1.0/drives/{drive-id}/root:/{path}` — an item's metadata.
//!
//! Graph's errors: unknown drive or item → 404 `itemNotFound`; a drive the app may not write →
//! 403 `accessDenied`; an existing name with `fail` → 409 `nameAlreadyExists`.
//!
//! Control: `POST /_emulator/drives` `{"id", "name"?, "writable"?}` creates (or reconfigures) a
//! drive; `PATCH /_emulator/drives/{id}` `{"writable"}`; `GET /_emulator/drives/{id}/files` lists
//! the files with how each arrived; `GET /_emulator/drives/{id}/content?path=/a/b.csv` reads one
//! back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{GraphError, graph_json};
use crate::graph::base_url;
use crate::scenario::{FieldError, from_json};
use crate::state::AppState;

type St = State<Arc<AppState>>;

/// Largest request body the drive routes take (Graph: 250 MB for a simple upload).
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Upload-session chunks are multiples of this (320 KiB).
const CHUNK_UNIT: usize = 327_680;

#[derive(Default)]
pub struct Drives {
    drives: Mutex<HashMap<String, Drive>>,
    sessions: Mutex<HashMap<String, Session>>,
}

struct Drive {
    name: String,
    writable: bool,
    /// Path (as given, `/Reports/a.csv`) → file; names compare case-insensitively as in SharePoint.
    files: BTreeMap<String, StoredFile>,
}

struct StoredFile {
    id: String,
    path: String,
    bytes: Bytes,
    /// `simple` or `session`.
    upload: &'static str,
    chunks: u32,
}

struct Session {
    drive: String,
    path: String,
    replace: bool,
    received: Vec<u8>,
    chunks: u32,
}

fn item_not_found() -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "The resource could not be found.",
    )
}

fn access_denied() -> GraphError {
    GraphError::new(StatusCode::FORBIDDEN, "accessDenied", "Access denied")
}

fn name_exists() -> GraphError {
    GraphError::new(
        StatusCode::CONFLICT,
        "nameAlreadyExists",
        "The specified item name already exists.",
    )
}

fn invalid(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "invalidRequest", message)
}

fn key(path: &str) -> String {
    path.to_lowercase()
}

fn item_json(base: &str, drive_id: &str, drive_name: &str, f: &StoredFile) -> Value {
    let (parent, name) = f.path.rsplit_once('/').unwrap_or(("", &f.path));
    json!({
        "id": f.id,
        "name": name,
        "size": f.bytes.len(),
        "webUrl": format!("{base}/sites/emulator/{}{}", drive_name.replace(' ', "%20"), f.path),
        "file": {"mimeType": "application/octet-stream"},
        "parentReference": {"driveId": drive_id, "path": format!("/drive/root:{parent}")},
    })
}

/// `root:/a/b.csv:/content` → (`/a/b.csv`, `content`); `root:/a/b.csv` → (`/a/b.csv`, ``).
fn parse_rest(rest: &str) -> Result<(String, String), GraphError> {
    let Some(after) = rest.strip_prefix("root:") else {
        return Err(invalid(format!("Unsupported segment '{rest}'.")));
    };
    let (path, action) = match after.rsplit_once(":/") {
        Some((p, a)) => (p, a),
        None => (after.strip_suffix(':').unwrap_or(after), ""),
    };
    let path = format!("/{}", path.trim_matches('/'));
    if path.len() < 2 || path.split('/').any(|s| s == "..") {
        return Err(invalid("The item path is not valid."));
    }
    Ok((path, action.to_owned()))
}

fn conflict_replaces(uri: &Uri) -> bool {
    !uri.query().unwrap_or("").split('&').any(|kv| {
        kv.strip_prefix("@microsoft.graph.conflictBehavior=")
            .is_some_and(|v| v.eq_ignore_ascii_case("fail"))
    })
}

/// `/v1.0/drives/{drive-id}/{*rest}` (behind the Graph gate).
pub async fn item(
    State(st): St,
    Path((drive_id, rest)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    match item_inner(&st, &drive_id, &rest, &method, &headers, &uri, body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn item_inner(
    st: &AppState,
    drive_id: &str,
    rest: &str,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Bytes,
) -> Result<Response, GraphError> {
    let (path, action) = parse_rest(rest)?;
    let base = base_url(headers);
    let mut drives = st.drives.drives.lock();
    let drive = drives.get_mut(drive_id).ok_or_else(item_not_found)?;
    match (method.as_str(), action.as_str()) {
        ("GET", "") => {
            let f = drive.files.get(&key(&path)).ok_or_else(item_not_found)?;
            Ok(graph_json(
                StatusCode::OK,
                &item_json(&base, drive_id, &drive.name, f),
            ))
        }
        ("PUT", "content") => {
            if !drive.writable {
                return Err(access_denied());
            }
            let existed = drive.files.contains_key(&key(&path));
            if existed && !conflict_replaces(uri) {
                return Err(name_exists());
            }
            let name = drive.name.clone();
            let f = store(drive, &path, body, "simple", 0);
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(graph_json(status, &item_json(&base, drive_id, &name, f)))
        }
        ("POST", "createUploadSession") => {
            if !drive.writable {
                return Err(access_denied());
            }
            let v: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).map_err(|_| invalid("Invalid request body."))?
            };
            let behavior = v["item"]["@microsoft.graph.conflictBehavior"]
                .as_str()
                .unwrap_or("replace");
            let replace = !behavior.eq_ignore_ascii_case("fail");
            if !replace && drive.files.contains_key(&key(&path)) {
                return Err(name_exists());
            }
            let id = Uuid::new_v4().simple().to_string();
            st.drives.sessions.lock().insert(
                id.clone(),
                Session {
                    drive: drive_id.to_owned(),
                    path,
                    replace,
                    received: Vec::new(),
                    chunks: 0,
                },
            );
            Ok(graph_json(
                StatusCode::OK,
                &json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
                    "uploadUrl": format!("{base}/_upload/{id}"),
                    "expirationDateTime": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                    "nextExpectedRanges": ["0-"],
                }),
            ))
        }
        _ => Err(invalid(format!(
            "{method} is not supported on '{action}' here."
        ))),
    }
}

fn store<'a>(
    drive: &'a mut Drive,
    path: &str,
    bytes: Bytes,
    upload: &'static str,
    chunks: u32,
) -> &'a StoredFile {
    let k = key(path);
    let id = drive
        .files
        .get(&k)
        .map(|f| f.id.clone())
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string().to_uppercase());
    drive.files.insert(
        k.clone(),
        StoredFile {
            id,
            path: path.to_owned(),
            bytes,
            upload,
            chunks,
        },
    );
    &drive.files[&k]
}

/// `Content-Range: bytes a-b/total`.
fn parse_range(headers: &HeaderMap) -> Option<(usize, usize, usize)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// `PUT /_upload/{session}`: one chunk of an upload session (no bearer token, as in Graph).
pub async fn chunk(
    State(st): St,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match chunk_inner(&st, &id, &headers, body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn chunk_inner(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, GraphError> {
    let mut sessions = st.drives.sessions.lock();
    let session = sessions.get_mut(id).ok_or_else(item_not_found)?;
    let Some((a, b, total)) = parse_range(headers) else {
        return Err(invalid("The Content-Range header is missing or malformed."));
    };
    if a != session.received.len() || b < a || b - a + 1 != body.len() || b >= total {
        return Err(GraphError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            "The uploaded fragment does not match the expected range.",
        ));
    }
    let last = b + 1 == total;
    if !last && !body.len().is_multiple_of(CHUNK_UNIT) {
        return Err(invalid(
            "Fragments must be a multiple of 320 KiB (327,680 bytes), except the last.",
        ));
    }
    session.received.extend_from_slice(&body);
    session.chunks += 1;
    if !last {
        return Ok(graph_json(
            StatusCode::ACCEPTED,
            &json!({
                "expirationDateTime": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                "nextExpectedRanges": [format!("{}-", session.received.len())],
            }),
        ));
    }
    let Some(session) = sessions.remove(id) else {
        return Err(item_not_found());
    };
    drop(sessions);
    let base = base_url(headers);
    let mut drives = st.drives.drives.lock();
    let drive = drives.get_mut(&session.drive).ok_or_else(item_not_found)?;
    let existed = drive.files.contains_key(&key(&session.path));
    if existed && !session.replace {
        return Err(name_exists());
    }
    let name = drive.name.clone();
    let f = store(
        drive,
        &session.path,
        Bytes::from(session.received),
        "session",
        session.chunks,
    );
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(graph_json(
        status,
        &item_json(&base, &session.drive, &name, f),
    ))
}

/// `DELETE /_upload/{session}`: cancel an upload session.
pub async fn cancel(State(st): St, Path(id): Path<String>) -> Response {
    match st.drives.sessions.lock().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => item_not_found().into_response(),
    }
}

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "BadRequest", "message": msg.into()}})),
    )
        .into_response()
}

/// 400 naming the field at fault (`error.field`).
fn bad_field(e: FieldError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "BadRequest", "message": format!("invalid drive: {e}"), "field": e.field}})),
    )
        .into_response()
}

fn no_drive(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "NotFound", "message": format!("no drive '{id}'")}})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDrive {
    id: String,
    name: Option<String>,
    writable: Option<bool>,
}

/// `POST /_emulator/drives`: create a drive, or change an existing one's name and permission.
pub async fn create_drive(State(st): St, body: Bytes) -> Response {
    let d: NewDrive = match from_json(&body) {
        Ok(d) => d,
        Err(e) => return bad_field(e),
    };
    if d.id.is_empty() || d.id.contains('/') {
        return bad("a drive id is a non-empty string without `/`");
    }
    let mut drives = st.drives.drives.lock();
    let drive = drives.entry(d.id.clone()).or_insert_with(|| Drive {
        name: "Documents".into(),
        writable: true,
        files: BTreeMap::new(),
    });
    if let Some(name) = d.name {
        drive.name = name;
    }
    if let Some(w) = d.writable {
        drive.writable = w;
    }
    (
        StatusCode::CREATED,
        Json(json!({"id": d.id, "name": drive.name, "writable": drive.writable})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrivePatch {
    writable: bool,
}

/// `PATCH /_emulator/drives/{id}` `{"writable": false}`: take away (or give back) the app's
/// permission to write.
pub async fn patch_drive(State(st): St, Path(id): Path<String>, body: Bytes) -> Response {
    let p: DrivePatch = match from_json(&body) {
        Ok(p) => p,
        Err(e) => return bad_field(e),
    };
    match st.drives.drives.lock().get_mut(&id) {
        Some(d) => {
            d.writable = p.writable;
            StatusCode::NO_CONTENT.into_response()
        }
        None => no_drive(&id),
    }
}

/// `GET /_emulator/drives/{id}/files`: every file with its size and how it was uploaded
/// (`simple` or `session`, with the session's chunk count).
pub async fn files(State(st): St, Path(id): Path<String>) -> Response {
    let drives = st.drives.drives.lock();
    let Some(d) = drives.get(&id) else {
        return no_drive(&id);
    };
    let v: Vec<Value> = d
        .files
        .values()
        .map(|f| json!({"path": f.path, "size": f.bytes.len(), "upload": f.upload, "chunks": f.chunks}))
        .collect();
    Json(json!({"value": v})).into_response()
}

#[derive(Deserialize)]
pub struct ContentQuery {
    path: String,
}

/// `GET /_emulator/drives/{id}/content?path=/Reports/a.csv`: a file's bytes.
pub async fn content(
    State(st): St,
    Path(id): Path<String>,
    Query(q): Query<ContentQuery>,
) -> Response {
    let drives = st.drives.drives.lock();
    let Some(d) = drives.get(&id) else {
        return no_drive(&id);
    };
    match d.files.get(&key(&q.path)) {
        Some(f) => (StatusCode::OK, f.bytes.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": {"code": "NotFound", "message": format!("no file '{}'", q.path)}}),
            ),
        )
            .into_response(),
    }
}

/// The Graph drive routes (to sit behind the gate).
pub fn graph_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1.0/drives/{drive}/{*rest}", any(item))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Upload-session URLs and the control routes.
pub fn other_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_upload/{session}", put(chunk).delete(cancel))
        .route("/_emulator/drives", post(create_drive))
        .route("/_emulator/drives/{id}", axum::routing::patch(patch_drive))
        .route("/_emulator/drives/{id}/files", get(files))
        .route("/_emulator/drives/{id}/content", get(content))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths() {
        assert_eq!(
            parse_rest("root:/Reports/a.csv:/content").unwrap(),
            ("/Reports/a.csv".to_owned(), "content".to_owned())
        );
        assert_eq!(
            parse_rest("root:/a.csv:/createUploadSession").unwrap().1,
            "createUploadSession"
        );
        assert_eq!(parse_rest("root:/a.csv:").unwrap().0, "/a.csv");
        assert!(parse_rest("items/1").is_err());
        assert!(parse_rest("root:/../a:/content").is_err());
    }
}
