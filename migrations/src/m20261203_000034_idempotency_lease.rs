//! An `Idempotency-Key` being answered is held by its request for a while at a time
//! (`lease_until`, renewed while the request runs): a key whose request died with its process
//! (the answer neither kept nor released) is told apart from one still being answered.

use sea_orm_migration::prelude::*;

use crate::columns::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            IdempotencyKeys::Table,
            ColumnDef::new(IdempotencyKeys::LeaseUntil)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_column(m, IdempotencyKeys::Table, IdempotencyKeys::LeaseUntil).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum IdempotencyKeys {
    Table,
    LeaseUntil,
}
