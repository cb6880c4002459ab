//! The audit log of the caller's tenant.

use axum::extract::State;
use licensor_core::audit::{self, AuditFilter, AuditView};
use licensor_core::page::PageRequest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Auth;
use super::extract::{Filters, Json, Query};
use super::problem::ApiResult;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditQuery {
    /// e.g. `token.create`, `license.checkout`, `job.create`.
    pub action: Option<String>,
    /// e.g. `token`, `license`, `job`.
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor_token_id: Option<Uuid>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub data: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// Changes made in the tenant, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])), params(ListAuditQuery), responses(
    (status = 200, body = AuditList),
))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListAuditQuery>,
    filters: Filters,
) -> ApiResult<Json<AuditList>> {
    let page = PageRequest::<i64>::parse_in(filters.scope("audit"), q.limit, q.cursor.as_deref())?;
    let filter = AuditFilter {
        action: q.action,
        target_type: q.target_type,
        target_id: q.target_id,
        actor_token_id: q.actor_token_id,
    };
    let page = audit::list(&state.db, auth.tenant_id(), &filter, &page).await?;
    Ok(Json(AuditList {
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}
