//! What an operator watches a job by: per-minute counts of its members done and of the 429s its
//! workers met (`job_activity`, one row per job and UTC minute, upserted with each chunk's
//! outcomes), when a worker last moved the job (`jobs.last_progress_at`, the clock of the stuck
//! flag), how often the reconciler queued it again (`jobs.requeues`), and whether an item's
//! current lease was taken over from a holder whose lease had run out (`job_items.taken_over`,
//! set by the claim itself, for the lease-takeover metric).

use sea_orm_migration::{prelude::*, schema::*};

use crate::indexes::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(JobActivity::Table)
                .if_not_exists()
                .col(uuid(JobActivity::JobId))
                .col(timestamp_with_time_zone(JobActivity::Minute))
                .col(uuid(JobActivity::TenantId))
                .col(big_integer(JobActivity::Succeeded).default(0))
                .col(big_integer(JobActivity::Failed).default(0))
                .col(big_integer(JobActivity::Skipped).default(0))
                .col(big_integer(JobActivity::Throttled).default(0))
                .primary_key(
                    Index::create()
                        .col(JobActivity::JobId)
                        .col(JobActivity::Minute),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(JobActivity::Table, JobActivity::JobId)
                        .to(Jobs::Table, Jobs::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_job_activity_tenant_job",
            JobActivity::Table,
            &[JobActivity::TenantId, JobActivity::JobId],
        )
        .await?;
        // SQLite adds one column per ALTER TABLE.
        if !m.has_column("jobs", "last_progress_at").await? {
            m.alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(timestamp_with_time_zone_null(Jobs::LastProgressAt))
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("jobs", "requeues").await? {
            m.alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(integer(Jobs::Requeues).default(0))
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("job_items", "taken_over").await? {
            m.alter_table(
                Table::alter()
                    .table(JobItems::Table)
                    .add_column(boolean(JobItems::TakenOver).default(false))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, col) in [
            (JobItems::Table.into_iden(), JobItems::TakenOver.into_iden()),
            (Jobs::Table.into_iden(), Jobs::Requeues.into_iden()),
            (Jobs::Table.into_iden(), Jobs::LastProgressAt.into_iden()),
        ] {
            m.alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        m.drop_table(
            Table::drop()
                .table(JobActivity::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobActivity {
    Table,
    TenantId,
    JobId,
    Minute,
    Succeeded,
    Failed,
    Skipped,
    Throttled,
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    Id,
    LastProgressAt,
    Requeues,
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    TakenOver,
}
