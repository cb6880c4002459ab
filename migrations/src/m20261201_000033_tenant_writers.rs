//! Each tenant's directory writer (`tenant_writers`): the one worker process that writes to a
//! throttled tenant's directory for now, so that one write scheduler learns and fills the
//! tenant's write budget instead of several that each take the others' writes for a foreign
//! client's. A row names the process (`worker_processes.id`) and until when it holds the turn;
//! a process that stops (cleanly, or found dead by its missed heartbeats) loses its rows.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(TenantWriters::Table)
                .if_not_exists()
                .col(uuid(TenantWriters::TenantId).primary_key())
                .col(string_len(TenantWriters::Owner, 255))
                .col(timestamp_with_time_zone(TenantWriters::Until))
                .foreign_key(
                    ForeignKey::create()
                        .from(TenantWriters::Table, TenantWriters::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(TenantWriters::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum TenantWriters {
    Table,
    TenantId,
    Owner,
    Until,
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
}
