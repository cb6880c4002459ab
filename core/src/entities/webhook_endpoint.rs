use sea_orm::entity::prelude::*;

/// A tenant's webhook endpoint ([`crate::webhooks`]).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives: a JSON array of strings.
    pub events: Json,
    pub enabled: bool,
    /// The signing secret (`whsec_…`), sealed with the instance's secret key.
    pub secret_enc: Vec<u8>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
