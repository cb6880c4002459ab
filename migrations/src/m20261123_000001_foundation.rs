//! Tenants, API tokens, jobs with their runs and items, and the audit log.
//!
//! `job_items` is built to hold millions of rows: a compact integer key, one row per member of a
//! job (unique on `(job_id, user_id)`, so a member of several selected groups is one item), and an
//! index on `(job_id, status)` for the worker's "next pending chunk" and the monitor's filters.

use sea_orm_migration::{prelude::*, schema::*};

use crate::indexes::{index, unique_index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tenants::Table)
                .if_not_exists()
                .col(uuid(Tenants::Id).primary_key())
                .col(string_len(Tenants::Name, 200).unique_key())
                .col(string_null(Tenants::DirectoryTenantId))
                .col(string_null(Tenants::TokenUrl))
                .col(string_null(Tenants::GraphUrl))
                .col(string_null(Tenants::ClientId))
                .col(blob_null(Tenants::ClientSecretEnc))
                .col(timestamp_with_time_zone(Tenants::CreatedAt))
                .col(timestamp_with_time_zone(Tenants::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiTokens::Table)
                .if_not_exists()
                .col(uuid(ApiTokens::Id).primary_key())
                .col(uuid(ApiTokens::TenantId))
                .col(string_len(ApiTokens::Name, 200))
                .col(string_len(ApiTokens::Role, 16))
                .col(string_len(ApiTokens::TokenHash, 64).unique_key())
                .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiTokens::LastUsedAt))
                .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(ApiTokens::Table, ApiTokens::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_api_tokens_tenant",
            ApiTokens::Table,
            &[ApiTokens::TenantId],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Jobs::Table)
                .if_not_exists()
                .col(uuid(Jobs::Id).primary_key())
                .col(uuid(Jobs::TenantId))
                .col(string_len(Jobs::Kind, 16))
                .col(string_len(Jobs::Status, 32))
                .col(json_binary(Jobs::Request))
                .col(big_integer(Jobs::Total).default(0))
                .col(big_integer(Jobs::Succeeded).default(0))
                .col(big_integer(Jobs::Failed).default(0))
                .col(big_integer(Jobs::Skipped).default(0))
                .col(integer(Jobs::Runs).default(1))
                .col(uuid_null(Jobs::CreatedBy))
                .col(uuid_null(Jobs::ParentJobId))
                .col(string_len_null(Jobs::ErrorCode, 64))
                .col(text_null(Jobs::ErrorDetail))
                .col(timestamp_with_time_zone(Jobs::CreatedAt))
                .col(timestamp_with_time_zone_null(Jobs::StartedAt))
                .col(timestamp_with_time_zone_null(Jobs::FinishedAt))
                .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Jobs::Table, Jobs::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Listing a tenant's jobs newest first (ids are time-ordered UUIDv7), optionally by status.
        index(
            m,
            "ix_jobs_tenant_id",
            Jobs::Table,
            &[Jobs::TenantId, Jobs::Id],
        )
        .await?;
        index(m, "ix_jobs_status", Jobs::Table, &[Jobs::Status]).await?;

        m.create_table(
            Table::create()
                .table(JobRuns::Table)
                .if_not_exists()
                .col(big_integer(JobRuns::Id).auto_increment().primary_key())
                .col(uuid(JobRuns::JobId))
                .col(integer(JobRuns::RunNo))
                .col(uuid_null(JobRuns::StartedBy))
                .col(string_len(JobRuns::Status, 32))
                .col(big_integer(JobRuns::Total).default(0))
                .col(big_integer(JobRuns::Succeeded).default(0))
                .col(big_integer(JobRuns::Failed).default(0))
                .col(big_integer(JobRuns::Skipped).default(0))
                .col(timestamp_with_time_zone(JobRuns::StartedAt))
                .col(timestamp_with_time_zone_null(JobRuns::FinishedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(JobRuns::Table, JobRuns::JobId)
                        .to(Jobs::Table, Jobs::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        unique_index(
            m,
            "ux_job_runs_job_run",
            JobRuns::Table,
            &[JobRuns::JobId, JobRuns::RunNo],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(JobItems::Table)
                .if_not_exists()
                .col(big_integer(JobItems::Id).auto_increment().primary_key())
                .col(uuid(JobItems::JobId))
                .col(string_len(JobItems::UserId, 64))
                .col(string_len_null(JobItems::UserPrincipalName, 256))
                .col(string_len_null(JobItems::GroupId, 64))
                .col(string_len(JobItems::Status, 16))
                .col(string_len_null(JobItems::ErrorCode, 64))
                .col(text_null(JobItems::ErrorDetail))
                .col(integer(JobItems::Attempts).default(0))
                .col(integer(JobItems::RunNo).default(1))
                .col(string_len_null(JobItems::LeaseOwner, 128))
                .col(timestamp_with_time_zone_null(JobItems::LeaseUntil))
                .col(timestamp_with_time_zone_null(JobItems::DueAt))
                .col(timestamp_with_time_zone(JobItems::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(JobItems::Table, JobItems::JobId)
                        .to(Jobs::Table, Jobs::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        unique_index(
            m,
            "ux_job_items_job_user",
            JobItems::Table,
            &[JobItems::JobId, JobItems::UserId],
        )
        .await?;
        index(
            m,
            "ix_job_items_job_status",
            JobItems::Table,
            &[JobItems::JobId, JobItems::Status],
        )
        .await?;
        index(m, "ix_job_items_due", JobItems::Table, &[JobItems::DueAt]).await?;

        m.create_table(
            Table::create()
                .table(AuditLog::Table)
                .if_not_exists()
                .col(big_integer(AuditLog::Id).auto_increment().primary_key())
                .col(uuid(AuditLog::TenantId))
                .col(uuid_null(AuditLog::ActorTokenId))
                .col(string_len(AuditLog::Action, 64))
                .col(string_len(AuditLog::TargetType, 32))
                .col(string_len(AuditLog::TargetId, 64))
                .col(json_binary_null(AuditLog::Before))
                .col(json_binary_null(AuditLog::After))
                .col(timestamp_with_time_zone(AuditLog::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(AuditLog::Table, AuditLog::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_audit_log_tenant_id",
            AuditLog::Table,
            &[AuditLog::TenantId, AuditLog::Id],
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            JobItems::Table.into_iden(),
            JobRuns::Table.into_iden(),
            Jobs::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
    Name,
    DirectoryTenantId,
    TokenUrl,
    GraphUrl,
    ClientId,
    ClientSecretEnc,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ApiTokens {
    Table,
    Id,
    TenantId,
    Name,
    Role,
    TokenHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    Id,
    TenantId,
    Kind,
    Status,
    Request,
    Total,
    Succeeded,
    Failed,
    Skipped,
    Runs,
    CreatedBy,
    ParentJobId,
    ErrorCode,
    ErrorDetail,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum JobRuns {
    Table,
    Id,
    JobId,
    RunNo,
    StartedBy,
    Status,
    Total,
    Succeeded,
    Failed,
    Skipped,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    Id,
    JobId,
    UserId,
    UserPrincipalName,
    GroupId,
    Status,
    ErrorCode,
    ErrorDetail,
    Attempts,
    RunNo,
    LeaseOwner,
    LeaseUntil,
    DueAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditLog {
    Table,
    Id,
    TenantId,
    ActorTokenId,
    Action,
    TargetType,
    TargetId,
    Before,
    After,
    CreatedAt,
}
