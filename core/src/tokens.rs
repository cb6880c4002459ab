//! API tokens: random, shown once, stored as a hash, scoped to one tenant and one role,
//! revocable, with the time they were last used.

use chrono::{Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::crypto::{new_token, token_hash};
use crate::db::Db;
use crate::domain::Role;
use crate::entities::api_token;
use crate::error::{StoreError, StoreResult};

/// Who is calling: established from a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub token_id: Uuid,
    pub role: Role,
}

impl Principal {
    /// This caller acting on its tenant's job `job_id`.
    pub fn on_job(&self, job_id: Uuid) -> crate::jobs::OnJob {
        crate::jobs::OnJob {
            tenant_id: self.tenant_id,
            job_id,
            by: Some(self.token_id),
        }
    }
}

/// A token as listed: never its value or hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: chrono::DateTime<Utc>,
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    pub revoked_at: Option<chrono::DateTime<Utc>>,
}

fn view(m: api_token::Model) -> TokenView {
    TokenView {
        id: m.id,
        name: m.name,
        role: m.role.parse().unwrap_or(Role::Viewer),
        created_at: m.created_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
    }
}

/// A freshly created token: `secret` is shown to its creator once and is not kept.
pub struct NewToken {
    pub view: TokenView,
    pub secret: String,
}

pub async fn create(
    db: &Db,
    tenant_id: Uuid,
    role: Role,
    name: &str,
    actor: Option<Uuid>,
) -> StoreResult<NewToken> {
    let name = crate::domain::name(name)
        .map_err(|why| StoreError::Invalid(format!("token name {why}")))?;
    let secret = new_token();
    let now = Utc::now();
    let txn = crate::db::begin(db).await?;
    let model = api_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        name: Set(name.to_owned()),
        role: Set(role.as_str().to_owned()),
        token_hash: Set(token_hash(&secret)),
        created_at: Set(now),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "token.create",
            target_type: "token",
            target_id: model.id.to_string(),
            before: None,
            after: Some(serde_json::json!({ "name": name, "role": role })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(NewToken {
        view: view(model),
        secret,
    })
}

/// The principal behind a presented bearer token, if it is known and not revoked. Records the
/// time of use (at most once a minute per token, to keep reads cheap).
pub async fn authenticate(db: &Db, presented: &str) -> StoreResult<Option<Principal>> {
    if presented.len() > 256 {
        return Ok(None);
    }
    let Some(token) = api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(token_hash(presented)))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if token.revoked_at.is_some() {
        return Ok(None);
    }
    let Ok(role) = token.role.parse::<Role>() else {
        return Ok(None);
    };
    let now = Utc::now();
    if token
        .last_used_at
        .is_none_or(|t| now - t > Duration::seconds(60))
    {
        api_token::Entity::update_many()
            .col_expr(
                api_token::Column::LastUsedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(api_token::Column::Id.eq(token.id))
            .exec(db)
            .await?;
    }
    Ok(Some(Principal {
        tenant_id: token.tenant_id,
        token_id: token.id,
        role,
    }))
}

pub async fn list(db: &Db, tenant_id: Uuid) -> StoreResult<Vec<TokenView>> {
    Ok(api_token::Entity::find()
        .filter(api_token::Column::TenantId.eq(tenant_id))
        .order_by_asc(api_token::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// Revoke one of the tenant's tokens. Revoking twice is harmless; another tenant's token is
/// "not found".
pub async fn revoke(
    db: &Db,
    tenant_id: Uuid,
    token_id: Uuid,
    actor: Option<Uuid>,
) -> StoreResult<TokenView> {
    let txn = crate::db::begin(db).await?;
    let token = api_token::Entity::find_by_id(token_id)
        .filter(api_token::Column::TenantId.eq(tenant_id))
        .one(&txn)
        .await?
        .ok_or(StoreError::NotFound("token"))?;
    if token.revoked_at.is_some() {
        return Ok(view(token));
    }
    let mut active: api_token::ActiveModel = token.into();
    active.revoked_at = Set(Some(Utc::now()));
    let token = active.update(&txn).await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "token.revoke",
            target_type: "token",
            target_id: token_id.to_string(),
            before: Some(serde_json::json!({ "revoked": false })),
            after: Some(serde_json::json!({ "revoked": true })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(view(token))
}

/// Find a token by id without knowing its tenant: for the operator's `licensor token revoke`.
pub async fn tenant_of(db: &Db, token_id: Uuid) -> StoreResult<Uuid> {
    api_token::Entity::find_by_id(token_id)
        .one(db)
        .await?
        .map(|t| t.tenant_id)
        .ok_or(StoreError::NotFound("token"))
}
