//! `Idempotency-Key` on mutating POSTs: the first answer to each key, per tenant, so a repeat
//! with the same key and body returns it and does nothing again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(IdempotencyKeys::Table)
                .if_not_exists()
                .col(
                    big_integer(IdempotencyKeys::Id)
                        .auto_increment()
                        .primary_key(),
                )
                .col(uuid(IdempotencyKeys::TenantId))
                .col(string_len(IdempotencyKeys::Key, 200))
                // SHA-256 of method, path and body, hex.
                .col(string_len(IdempotencyKeys::Fingerprint, 64))
                // NULL while the first request is still being answered.
                .col(integer_null(IdempotencyKeys::Status))
                .col(string_len_null(IdempotencyKeys::ContentType, 100))
                .col(blob_null(IdempotencyKeys::Body))
                .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(IdempotencyKeys::Table, IdempotencyKeys::TenantId)
                        .to(Tenants::Table, Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_idempotency_keys_tenant_key")
                .table(IdempotencyKeys::Table)
                .col(IdempotencyKeys::TenantId)
                .col(IdempotencyKeys::Key)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_idempotency_keys_created_at")
                .table(IdempotencyKeys::Table)
                .col(IdempotencyKeys::CreatedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(IdempotencyKeys::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum IdempotencyKeys {
    Table,
    Id,
    TenantId,
    Key,
    Fingerprint,
    Status,
    ContentType,
    Body,
    CreatedAt,
}
