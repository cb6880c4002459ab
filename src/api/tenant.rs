//! The caller's own tenant.

use axum::extract::State;
use licensor_core::domain::Role;
use licensor_core::tenants::{self, TenantView};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Auth;
use super::extract::{Json, NoQuery};
use super::problem::ApiResult;

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub tenant: TenantView,
    pub token_id: uuid::Uuid,
    pub role: Role,
}

/// The tenant and role behind the presented token.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("bearer" = [])), responses(
    (status = 200, body = WhoAmI),
))]
pub async fn whoami(
    State(state): State<AppState>,
    auth: Auth,
    _: NoQuery,
) -> ApiResult<Json<WhoAmI>> {
    let tenant = tenants::get(&state.db, auth.tenant_id()).await?;
    Ok(Json(WhoAmI {
        tenant: tenant.into(),
        token_id: auth.0.token_id,
        role: auth.0.role,
    }))
}
