//! The audit log: who changed what in licensor, when, with before/after figures.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::Db;
use crate::entities::audit_log;
use crate::error::StoreResult;
use crate::page::{Page, PageRequest};

/// One change to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub tenant_id: Uuid,
    /// The API token that made the change; `None` for the CLI run by the server's operator and
    /// for licensor's own sweeps.
    pub actor_token_id: Option<Uuid>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Record `entry` on `conn` (a transaction, so the entry commits with the change it describes).
pub async fn record<C: ConnectionTrait>(conn: &C, entry: AuditEntry<'_>) -> StoreResult<()> {
    audit_log::ActiveModel {
        tenant_id: Set(entry.tenant_id),
        actor_token_id: Set(entry.actor_token_id),
        action: Set(entry.action.to_owned()),
        target_type: Set(entry.target_type.to_owned()),
        target_id: Set(entry.target_id),
        before: Set(entry.before),
        after: Set(entry.after),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub actor_token_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub created_at: chrono::DateTime<Utc>,
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor_token_id: Option<Uuid>,
}

/// The tenant's audit entries, newest first.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &AuditFilter,
    page: &PageRequest<i64>,
) -> StoreResult<Page<AuditView>> {
    let mut q = audit_log::Entity::find().filter(audit_log::Column::TenantId.eq(tenant_id));
    if let Some(a) = &filter.action {
        q = q.filter(audit_log::Column::Action.eq(a.as_str()));
    }
    if let Some(t) = &filter.target_type {
        q = q.filter(audit_log::Column::TargetType.eq(t.as_str()));
    }
    if let Some(t) = &filter.target_id {
        q = q.filter(audit_log::Column::TargetId.eq(t.as_str()));
    }
    if let Some(a) = filter.actor_token_id {
        q = q.filter(audit_log::Column::ActorTokenId.eq(a));
    }
    if let Some(after) = page.after {
        q = q.filter(audit_log::Column::Id.lt(after));
    }
    let rows = q
        .order_by_desc(audit_log::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    Ok(page.finish(rows, |r| r.id).map(|m| AuditView {
        id: m.id,
        actor_token_id: m.actor_token_id,
        action: m.action,
        target_type: m.target_type,
        target_id: m.target_id,
        before: m.before,
        after: m.after,
        created_at: m.created_at,
    }))
}
