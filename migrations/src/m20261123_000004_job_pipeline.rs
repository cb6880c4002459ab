//! What the job pipeline needs beyond the foundation: each member's directory snapshot on its
//! item (for decisions without a read per member, and for exports), when expansion finished, what
//! the job learnt about its groups and SKUs, and an index for claiming pending items in order.

use sea_orm_migration::{prelude::*, schema::*};

use crate::indexes::{drop_index, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        if !m.has_column("jobs", "expanded_at").await? {
            m.alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(timestamp_with_time_zone_null(Jobs::ExpandedAt))
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("jobs", "result").await? {
            m.alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(json_binary_null(Jobs::Result))
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("job_items", "display_name").await? {
            m.alter_table(
                Table::alter()
                    .table(JobItems::Table)
                    .add_column(string_len_null(JobItems::DisplayName, 256))
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("job_items", "usage_location").await? {
            m.alter_table(
                Table::alter()
                    .table(JobItems::Table)
                    .add_column(string_len_null(JobItems::UsageLocation, 8))
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("job_items", "licenses").await? {
            m.alter_table(
                Table::alter()
                    .table(JobItems::Table)
                    .add_column(json_binary_null(JobItems::Licenses))
                    .to_owned(),
            )
            .await?;
        }
        index(
            m,
            "ix_job_items_claim",
            JobItems::Table,
            &[JobItems::JobId, JobItems::Status, JobItems::Id],
        )
        .await?;
        // The claim index serves every lookup the (job, status) index did.
        drop_index(m, "ix_job_items_job_status", JobItems::Table).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, col) in [
            (JobItems::Table.into_iden(), JobItems::Licenses.into_iden()),
            (
                JobItems::Table.into_iden(),
                JobItems::UsageLocation.into_iden(),
            ),
            (
                JobItems::Table.into_iden(),
                JobItems::DisplayName.into_iden(),
            ),
            (Jobs::Table.into_iden(), Jobs::Result.into_iden()),
            (Jobs::Table.into_iden(), Jobs::ExpandedAt.into_iden()),
        ] {
            m.alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    ExpandedAt,
    Result,
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    Id,
    JobId,
    Status,
    DisplayName,
    UsageLocation,
    Licenses,
}
