use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: Uuid,
    pub key: String,
    /// SHA-256 of method, path and body, hex.
    pub fingerprint: String,
    /// `None` while the first request is still being answered.
    pub status: Option<i32>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
    /// The first answer's `Location` header, if it had one.
    pub location: Option<String>,
    pub created_at: DateTimeUtc,
    /// Until when the request answering the key holds it (renewed while it runs); `None` for
    /// keys claimed before leases were kept.
    pub lease_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
