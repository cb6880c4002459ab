//! Seat inventory and started licenses: licenses with their seat counters, assignments ("Used
//! By", kept after checkin as history) and, for licenses with a term, one row per seat.
//!
//! `licenses.assigned` and `licenses.ended` are counters kept exact in the same transaction as
//! every change, so a checkout is one conditional `UPDATE` (`assigned + ended + q <= seats`) and
//! can never oversell. `license_seats` exists only for term licenses: it says which seat started
//! when, when it ends and who holds it, so a reusable started seat is handed out by its end date.

use sea_orm_migration::{prelude::*, schema::*};

use crate::indexes::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Licenses::Table)
                .if_not_exists()
                .col(uuid(Licenses::Id).primary_key())
                .col(uuid(Licenses::TenantId))
                .col(string_len(Licenses::Name, 200))
                .col(big_integer(Licenses::Seats))
                .col(big_integer(Licenses::Assigned).default(0))
                .col(big_integer(Licenses::Ended).default(0))
                .col(boolean(Licenses::Reassignable).default(true))
                .col(integer_null(Licenses::TermDays))
                .col(date_null(Licenses::DeliveredOn))
                .col(text_null(Licenses::Notes))
                .col(timestamp_with_time_zone(Licenses::CreatedAt))
                .col(timestamp_with_time_zone(Licenses::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Licenses::Table, Licenses::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_licenses_tenant_id",
            Licenses::Table,
            &[Licenses::TenantId, Licenses::Id],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(LicenseAssignments::Table)
                .if_not_exists()
                .col(uuid(LicenseAssignments::Id).primary_key())
                .col(uuid(LicenseAssignments::TenantId))
                .col(uuid(LicenseAssignments::LicenseId))
                .col(string_len(LicenseAssignments::AssigneeType, 16))
                .col(string_len(LicenseAssignments::AssigneeId, 200))
                .col(big_integer(LicenseAssignments::Quantity))
                .col(text_null(LicenseAssignments::Notes))
                .col(timestamp_with_time_zone(LicenseAssignments::CheckedOutAt))
                .col(uuid_null(LicenseAssignments::CheckedOutBy))
                .col(timestamp_with_time_zone_null(
                    LicenseAssignments::CheckedInAt,
                ))
                .col(uuid_null(LicenseAssignments::CheckedInBy))
                .col(text_null(LicenseAssignments::CheckinNotes))
                .foreign_key(
                    ForeignKey::create()
                        .from(LicenseAssignments::Table, LicenseAssignments::LicenseId)
                        .to(Licenses::Table, Licenses::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // "Used By": a license's assignments newest first (ids are time-ordered UUIDv7).
        index(
            m,
            "ix_license_assignments_license_id",
            LicenseAssignments::Table,
            &[LicenseAssignments::LicenseId, LicenseAssignments::Id],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(LicenseSeats::Table)
                .if_not_exists()
                .col(big_integer(LicenseSeats::Id).auto_increment().primary_key())
                .col(uuid(LicenseSeats::TenantId))
                .col(uuid(LicenseSeats::LicenseId))
                .col(date_null(LicenseSeats::StartedOn))
                .col(date_null(LicenseSeats::EndsOn))
                .col(boolean(LicenseSeats::Ended).default(false))
                .col(uuid_null(LicenseSeats::AssignmentId))
                .foreign_key(
                    ForeignKey::create()
                        .from(LicenseSeats::Table, LicenseSeats::LicenseId)
                        .to(Licenses::Table, Licenses::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_license_seats_license_assignment",
            LicenseSeats::Table,
            &[LicenseSeats::LicenseId, LicenseSeats::AssignmentId],
        )
        .await?;
        index(
            m,
            "ix_license_seats_assignment",
            LicenseSeats::Table,
            &[LicenseSeats::AssignmentId],
        )
        .await?;
        // The daily sweep: seats that have reached their end.
        index(
            m,
            "ix_license_seats_ended_ends_on",
            LicenseSeats::Table,
            &[LicenseSeats::Ended, LicenseSeats::EndsOn],
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LicenseSeats::Table.into_iden(),
            LicenseAssignments::Table.into_iden(),
            Licenses::Table.into_iden(),
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
}

#[derive(DeriveIden, Clone, Copy)]
enum Licenses {
    Table,
    Id,
    TenantId,
    Name,
    Seats,
    Assigned,
    Ended,
    Reassignable,
    TermDays,
    DeliveredOn,
    Notes,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum LicenseAssignments {
    Table,
    Id,
    TenantId,
    LicenseId,
    AssigneeType,
    AssigneeId,
    Quantity,
    Notes,
    CheckedOutAt,
    CheckedOutBy,
    CheckedInAt,
    CheckedInBy,
    CheckinNotes,
}

#[derive(DeriveIden, Clone, Copy)]
enum LicenseSeats {
    Table,
    Id,
    TenantId,
    LicenseId,
    StartedOn,
    EndsOn,
    Ended,
    AssignmentId,
}
