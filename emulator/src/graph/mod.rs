//! Microsoft Graph v1.0 routes: the request gate (ids, faults, authentication, throttling),
//! directory reads with paging, license writes and JSON batching.
//!
//! One file per subject: [`gate`] (what every request passes), [`odata`] (query options and
//! paging), [`groups`], [`members`], [`users`], [`licenses`] and [`batch`]; this file wires the
//! routes and holds what several of them share.

mod batch;
mod gate;
mod groups;
mod licenses;
mod members;
mod odata;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::directory::{Directory, ObjRef};
use crate::drives;
use crate::error::GraphError;
use crate::state::{AppState, Tenant};

pub(crate) use odata::base_url;
use odata::project;

type St = State<Arc<AppState>>;
/// The tenant of the request's token, set by [`gate::gate`].
type Tn = Extension<Arc<Tenant>>;

const CTX: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// Every `/v1.0` route (the drives' included), behind [`gate::gate`].
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1.0/subscribedSkus", get(licenses::subscribed_skus))
        .route("/v1.0/groups", get(groups::list_groups))
        .route("/v1.0/groups/{id}", get(groups::get_group))
        .route("/v1.0/groups/{id}/members", get(members::members))
        .route(
            "/v1.0/groups/{id}/members/{cast}",
            get(members::members_cast),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers",
            get(members::transitive_members),
        )
        .route(
            "/v1.0/groups/{id}/members/{cast}/$count",
            get(members::members_cast_count),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers/{cast}",
            get(members::transitive_members_cast),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers/{cast}/$count",
            get(members::transitive_members_cast_count),
        )
        .route("/v1.0/users", get(users::list_users))
        .route(
            "/v1.0/users/{id}",
            get(users::get_user).patch(users::patch_user),
        )
        .route(
            "/v1.0/users/{id}/assignLicense",
            post(licenses::assign_license),
        )
        .route(
            "/v1.0/users/{id}/licenseDetails",
            get(licenses::license_details),
        )
        .route("/v1.0/$batch", post(batch::batch))
        .merge(drives::graph_routes())
        .route("/v1.0/{*rest}", axum::routing::any(unknown_segment))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state, gate::gate))
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

fn parse_body(body: &Bytes) -> Result<Value, GraphError> {
    serde_json::from_slice::<Value>(body).map_err(|_| {
        GraphError::odata(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    })
}

/// A member as a directory-object list shows it: its `$select`ed properties and `@odata.type`.
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
