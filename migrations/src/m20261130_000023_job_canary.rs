//! Canaries: when a job's canary (`request.canary`) passed — its first members failed no more
//! often than the bound, or an operator resumed the paused job. Until then a job with a canary
//! works no more members than the canary's; once set, it runs on normally.

use sea_orm_migration::prelude::*;

use crate::columns::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            Jobs::Table,
            ColumnDef::new(Jobs::CanaryPassedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_column(m, Jobs::Table, Jobs::CanaryPassedAt).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    CanaryPassedAt,
}
