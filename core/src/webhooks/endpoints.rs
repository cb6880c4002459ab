//! A tenant's webhook endpoints. Every function takes the tenant id; another tenant's endpoint
//! is "not found". Each change is in the audit log, in its transaction; the signing secret is
//! never in it, nor in any answer but the one that creates or rotates it.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{EventType, Webhooks, check_url, new_secret};
use crate::audit::{self, AuditEntry};
use crate::db::Db;
use crate::entities::{webhook_delivery, webhook_endpoint};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

/// Endpoints one tenant may have.
pub const MAX_ENDPOINTS: u64 = 50;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 500;

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    pub description: Option<String>,
    /// The events it receives.
    pub events: Vec<EventType>,
    /// A disabled endpoint gets no new deliveries, and its pending ones fail at their next try.
    pub enabled: bool,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl EndpointView {
    fn of(m: webhook_endpoint::Model) -> EndpointView {
        EndpointView {
            events: events_of(&m.events),
            id: m.id,
            url: m.url,
            description: m.description,
            enabled: m.enabled,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }

    fn audit(&self) -> Value {
        json!({
            "url": self.url,
            "description": self.description,
            "events": self.events,
            "enabled": self.enabled,
        })
    }
}

/// The stored event list; names this version does not know are left out.
pub(crate) fn events_of(v: &Value) -> Vec<EventType> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.parse().ok())
        .collect()
}

/// An endpoint to create.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
}

/// What an update changes (`None`: unchanged; `description: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

fn checked_url(hooks: &Webhooks, url: &str) -> StoreResult<String> {
    check_url(url, &hooks.settings)
        .map(|u| u.to_string())
        .map_err(|e| StoreError::unacceptable("webhook_url_not_allowed", e.to_string()))
}

fn checked_events(mut events: Vec<EventType>) -> StoreResult<Value> {
    if events.is_empty() {
        return Err(StoreError::unacceptable(
            "invalid_events",
            format!(
                "`events` needs at least one of: {}",
                EventType::ALL.map(EventType::as_str).join(", ")
            ),
        ));
    }
    events.sort_by_key(|e| EventType::ALL.iter().position(|a| a == e));
    events.dedup();
    Ok(json!(events))
}

fn checked_description(d: Option<String>) -> StoreResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(StoreError::unacceptable(
            "invalid_description",
            format!("`description` may have at most {MAX_DESCRIPTION} characters"),
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        Some(d) => match crate::domain::free_text_refusal(&d) {
            Some(c) => Err(StoreError::unacceptable(
                "invalid_description",
                format!("description {}", crate::domain::free_text_refused(c)),
            )),
            None => Ok(Some(d)),
        },
        None => Ok(None),
    }
}

/// Create an endpoint with a new signing secret; returns it with the secret (`whsec_…`), which
/// is shown this once. A URL that is not `https://` (or `http://` to an allowed host) → 422
/// `webhook_url_not_allowed`; no events → 422 `invalid_events`; more than [`MAX_ENDPOINTS`] →
/// 409 `too_many_webhooks`.
pub async fn create(
    db: &Db,
    hooks: &Webhooks,
    tenant_id: Uuid,
    new: NewEndpoint,
    actor: Option<Uuid>,
) -> StoreResult<(EndpointView, String)> {
    let url = checked_url(hooks, &new.url)?;
    let events = checked_events(new.events)?;
    let description = checked_description(new.description)?;
    let secret = new_secret();
    let txn = crate::db::begin(db).await?;
    let count = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .count(&txn)
        .await?;
    if count >= MAX_ENDPOINTS {
        return Err(StoreError::conflict(
            "too_many_webhooks",
            format!("a tenant may have at most {MAX_ENDPOINTS} webhook endpoints"),
        ));
    }
    let now = Utc::now();
    let m = webhook_endpoint::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        url: Set(url),
        description: Set(description),
        events: Set(events),
        enabled: Set(true),
        secret_enc: Set(hooks.secrets().seal(&secret)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let view = EndpointView::of(m);
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "webhook.created",
            target_type: "webhook",
            target_id: view.id.to_string(),
            before: None,
            after: Some(view.audit()),
        },
    )
    .await?;
    txn.commit().await?;
    Ok((view, secret))
}

async fn model<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    id: Uuid,
) -> StoreResult<webhook_endpoint::Model> {
    webhook_endpoint::Entity::find_by_id(id)
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or(StoreError::NotFound("webhook"))
}

/// One of the tenant's endpoints.
pub async fn get(db: &Db, tenant_id: Uuid, id: Uuid) -> StoreResult<EndpointView> {
    Ok(EndpointView::of(model(db, tenant_id, id).await?))
}

/// The tenant's endpoints, newest first.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<EndpointView>> {
    let mut q =
        webhook_endpoint::Entity::find().filter(webhook_endpoint::Column::TenantId.eq(tenant_id));
    if let Some(after) = page.after {
        q = q.filter(webhook_endpoint::Column::Id.lt(after));
    }
    let rows = q
        .order_by_desc(webhook_endpoint::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    Ok(page.finish(rows, |r| r.id).map(EndpointView::of))
}

/// Change an endpoint's URL, events, description or whether it is enabled (checked as at
/// creation).
pub async fn update(
    db: &Db,
    hooks: &Webhooks,
    tenant_id: Uuid,
    id: Uuid,
    change: EndpointUpdate,
    actor: Option<Uuid>,
) -> StoreResult<EndpointView> {
    let url = change.url.map(|u| checked_url(hooks, &u)).transpose()?;
    let events = change.events.map(checked_events).transpose()?;
    let description = change.description.map(checked_description).transpose()?;
    let txn = crate::db::begin(db).await?;
    let before = EndpointView::of(model(&txn, tenant_id, id).await?);
    let mut update = webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(webhook_endpoint::Column::Id.eq(id))
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id));
    if let Some(url) = url {
        update = update.col_expr(webhook_endpoint::Column::Url, Expr::value(url));
    }
    if let Some(events) = events {
        update = update.col_expr(webhook_endpoint::Column::Events, Expr::value(events));
    }
    if let Some(description) = description {
        update = update.col_expr(
            webhook_endpoint::Column::Description,
            Expr::value(description),
        );
    }
    if let Some(enabled) = change.enabled {
        update = update.col_expr(webhook_endpoint::Column::Enabled, Expr::value(enabled));
    }
    update.exec(&txn).await?;
    let after = EndpointView::of(model(&txn, tenant_id, id).await?);
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "webhook.updated",
            target_type: "webhook",
            target_id: id.to_string(),
            before: Some(before.audit()),
            after: Some(after.audit()),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// Delete an endpoint and its delivery log; deliveries not yet made are dropped.
pub async fn delete(db: &Db, tenant_id: Uuid, id: Uuid, actor: Option<Uuid>) -> StoreResult<()> {
    let txn = crate::db::begin(db).await?;
    let before = EndpointView::of(model(&txn, tenant_id, id).await?);
    let deliveries = webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::EndpointId.eq(id))
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id))
        .exec(&txn)
        .await?
        .rows_affected;
    webhook_endpoint::Entity::delete_many()
        .filter(webhook_endpoint::Column::Id.eq(id))
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .exec(&txn)
        .await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "webhook.deleted",
            target_type: "webhook",
            target_id: id.to_string(),
            before: Some(before.audit()),
            after: Some(json!({"deliveries_removed": deliveries})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Give an endpoint a new signing secret, returned this once; the old one stops signing at once
/// (attempts from now on, retries included, are signed with the new one).
pub async fn rotate_secret(
    db: &Db,
    hooks: &Webhooks,
    tenant_id: Uuid,
    id: Uuid,
    actor: Option<Uuid>,
) -> StoreResult<(EndpointView, String)> {
    let secret = new_secret();
    let txn = crate::db::begin(db).await?;
    model(&txn, tenant_id, id).await?;
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::SecretEnc,
            Expr::value(hooks.secrets().seal(&secret)),
        )
        .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(webhook_endpoint::Column::Id.eq(id))
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .exec(&txn)
        .await?;
    let view = EndpointView::of(model(&txn, tenant_id, id).await?);
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "webhook.secret_rotated",
            target_type: "webhook",
            target_id: id.to_string(),
            before: None,
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok((view, secret))
}

/// The endpoint a delivery goes to, with its secret opened; `None` when it is gone.
pub async fn for_delivery(
    db: &Db,
    hooks: &Webhooks,
    tenant_id: Uuid,
    id: Uuid,
) -> StoreResult<Option<(webhook_endpoint::Model, String)>> {
    let Some(m) = webhook_endpoint::Entity::find_by_id(id)
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let secret = hooks.secrets().open(&m.secret_enc)?;
    Ok(Some((m, secret)))
}
