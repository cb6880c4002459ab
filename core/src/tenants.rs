//! Tenants and their directory connection settings.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use uuid::Uuid;

use crate::crypto::SecretBox;
use crate::db::Db;
use crate::entities::tenant;
use crate::error::{StoreError, StoreResult};

/// Microsoft's public endpoints, used when a tenant names no directory URL.
pub const MICROSOFT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub const MICROSOFT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// How licensor reaches a tenant's directory. The secret is given in clear only here, on its
/// way in; it is sealed before it is stored.
#[derive(Default, Clone)]
pub struct DirectorySettings {
    /// Base URL serving both `/{tenant}/oauth2/v2.0/token` and `/v1.0` (an emulator, say).
    /// `None` = Microsoft's public endpoints.
    pub directory_url: Option<String>,
    pub directory_tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for DirectorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySettings")
            .field("directory_url", &self.directory_url)
            .field("directory_tenant_id", &self.directory_tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl DirectorySettings {
    fn urls(&self) -> StoreResult<(Option<String>, Option<String>)> {
        let tenant = self.directory_tenant_id.as_deref();
        let base = match &self.directory_url {
            Some(url) => {
                let url = url.trim_end_matches('/');
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(StoreError::Invalid(format!(
                        "directory URL `{url}` must start with http:// or https://"
                    )));
                }
                Some(url.to_owned())
            }
            None => None,
        };
        let token_url = tenant.map(|t| {
            let login = base.as_deref().unwrap_or(MICROSOFT_LOGIN_URL);
            format!("{login}/{t}/oauth2/v2.0/token")
        });
        let graph_url = Some(match &base {
            Some(b) => format!("{b}/v1.0"),
            None => MICROSOFT_GRAPH_URL.to_owned(),
        });
        Ok((token_url, graph_url))
    }
}

/// A tenant as shown to operators: never the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub directory_tenant_id: Option<String>,
    pub token_url: Option<String>,
    pub graph_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_set: bool,
    pub created_at: chrono::DateTime<Utc>,
}

impl From<tenant::Model> for TenantView {
    fn from(m: tenant::Model) -> Self {
        TenantView {
            id: m.id,
            name: m.name,
            directory_tenant_id: m.directory_tenant_id,
            token_url: m.token_url,
            graph_url: m.graph_url,
            client_id: m.client_id,
            client_secret_set: m.client_secret_enc.is_some(),
            created_at: m.created_at,
        }
    }
}

fn validate_name(name: &str) -> StoreResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid(
            "tenant name must be 1 to 200 characters".into(),
        ));
    }
    Ok(name)
}

pub async fn create(
    db: &Db,
    secrets: &SecretBox,
    name: &str,
    directory: &DirectorySettings,
) -> StoreResult<tenant::Model> {
    let name = validate_name(name)?;
    if find_by_name(db, name).await?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a tenant named `{name}` exists already"
        )));
    }
    let (token_url, graph_url) = directory.urls()?;
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        directory_tenant_id: Set(directory.directory_tenant_id.clone()),
        token_url: Set(token_url),
        graph_url: Set(graph_url),
        client_id: Set(directory.client_id.clone()),
        client_secret_enc: Set(directory.client_secret.as_deref().map(|s| secrets.seal(s))),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Ok(model.insert(db).await?)
}

/// Point an existing tenant at a (new) directory, e.g. the demo's emulator on a fresh port.
pub async fn update_directory(
    db: &Db,
    secrets: &SecretBox,
    tenant_id: Uuid,
    directory: &DirectorySettings,
) -> StoreResult<tenant::Model> {
    let existing = get(db, tenant_id).await?;
    let (token_url, graph_url) = directory.urls()?;
    let mut model: tenant::ActiveModel = existing.into();
    model.directory_tenant_id = Set(directory.directory_tenant_id.clone());
    model.token_url = Set(token_url);
    model.graph_url = Set(graph_url);
    model.client_id = Set(directory.client_id.clone());
    model.client_secret_enc = Set(directory.client_secret.as_deref().map(|s| secrets.seal(s)));
    model.updated_at = Set(Utc::now());
    Ok(model.update(db).await?)
}

pub async fn get(db: &Db, tenant_id: Uuid) -> StoreResult<tenant::Model> {
    tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
}

pub async fn find_by_name(db: &Db, name: &str) -> StoreResult<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name.trim()))
        .one(db)
        .await?)
}

/// A tenant by id or by name, as the CLI accepts either.
pub async fn find_by_ref(db: &Db, reference: &str) -> StoreResult<tenant::Model> {
    if let Ok(id) = reference.parse::<Uuid>()
        && let Ok(t) = get(db, id).await
    {
        return Ok(t);
    }
    find_by_name(db, reference)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
}

pub async fn list(db: &Db) -> StoreResult<Vec<tenant::Model>> {
    Ok(tenant::Entity::find()
        .order_by_asc(tenant::Column::Name)
        .all(db)
        .await?)
}

/// The tenant's client secret in clear, for the directory client only.
pub fn client_secret(secrets: &SecretBox, tenant: &tenant::Model) -> StoreResult<Option<String>> {
    match &tenant.client_secret_enc {
        Some(sealed) => Ok(Some(secrets.open(sealed)?)),
        None => Ok(None),
    }
}
