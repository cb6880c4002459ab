//! Only temporary assignments have a due time: index those alone. Every member of every job
//! used to get an entry in the due-time index, which each insert and status change had to keep
//! up to date for nothing.

use sea_orm_migration::prelude::*;

use crate::indexes::{drop_index, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The expiry sweep's `due_at <= now` implies `due_at IS NOT NULL`, so both databases
        // use the partial index for it.
        m.create_index(
            Index::create()
                .name("ix_job_items_due_set")
                .table(JobItems::Table)
                .col(JobItems::DueAt)
                .and_where(Expr::col(JobItems::DueAt).is_not_null())
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        drop_index(m, "ix_job_items_due", JobItems::Table).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        index(m, "ix_job_items_due", JobItems::Table, &[JobItems::DueAt]).await?;
        drop_index(m, "ix_job_items_due_set", JobItems::Table).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    DueAt,
}
