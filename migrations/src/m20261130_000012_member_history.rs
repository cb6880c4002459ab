//! A member's history (`GET /v1/members/{member}/history`) finds the member's items across the
//! tenant's jobs by user id or, case-insensitively, by user principal name: one index for each.
//! Neither column changes after an item is inserted, so workers' status updates do not touch
//! them.

use sea_orm_migration::prelude::*;

use crate::indexes::{drop_index, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        index(m, "ix_job_items_user", JobItems::Table, &[JobItems::UserId]).await?;
        // An expression index: the same statement on SQLite and PostgreSQL.
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_job_items_upn_lower \
                 ON job_items (lower(user_principal_name))",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_index(m, "ix_job_items_upn_lower", JobItems::Table).await?;
        drop_index(m, "ix_job_items_user", JobItems::Table).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    UserId,
}
