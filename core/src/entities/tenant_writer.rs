use sea_orm::entity::prelude::*;

/// The worker process writing to a tenant's directory for now (`tenant_writers`); see
/// [`crate::jobs::writer`].
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_writers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// The holding process's name (`worker_processes.id`).
    pub owner: String,
    /// Until when it holds the turn (PostgreSQL's clock, or this host's on SQLite).
    pub until: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
