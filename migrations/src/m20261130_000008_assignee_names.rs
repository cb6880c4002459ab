//! The name of whom a license is checked out to (a user's display name, an asset's name), so
//! "Used By" reads as people and things rather than ids; and an index for "everything one user or
//! asset holds" across a tenant's licenses.

use sea_orm_migration::prelude::*;

use crate::columns::{add_column, drop_column};
use crate::indexes::{drop_index, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            LicenseAssignments::Table,
            ColumnDef::new(LicenseAssignments::AssigneeName)
                .string_len(200)
                .null()
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_license_assignments_assignee",
            LicenseAssignments::Table,
            &[
                LicenseAssignments::TenantId,
                LicenseAssignments::AssigneeType,
                LicenseAssignments::AssigneeId,
            ],
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_index(
            m,
            "ix_license_assignments_assignee",
            LicenseAssignments::Table,
        )
        .await?;
        drop_column(
            m,
            LicenseAssignments::Table,
            LicenseAssignments::AssigneeName,
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum LicenseAssignments {
    Table,
    TenantId,
    AssigneeType,
    AssigneeId,
    AssigneeName,
}
