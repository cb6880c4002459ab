use sea_orm::entity::prelude::*;

/// One job's counts for one minute (UTC, truncated): members that reached each outcome and
/// 429 answers its workers met, added with each recorded chunk.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_activity")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub minute: DateTimeUtc,
    pub tenant_id: Uuid,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub throttled: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
