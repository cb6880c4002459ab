//! Licenses: the tenant's `subscribedSkus`, a user's `licenseDetails` and `assignLicense`.

use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::users::{find_user, user_entity};
use super::{CTX, Tn, parse_body};
use crate::error::{GraphError, graph_json};
use crate::state::Tenant;

pub async fn subscribed_skus(Extension(st): Tn) -> Response {
    let dir = st.dir();
    let v: Vec<Value> = (0..dir.skus.len()).map(|i| dir.sku_json(i)).collect();
    graph_json(
        StatusCode::OK,
        &json!({"@odata.context": format!("{CTX}#subscribedSkus"), "value": v}),
    )
}

/// `GET /users/{id}/licenseDetails` (see [`crate::directory::Directory::license_details`]).
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
