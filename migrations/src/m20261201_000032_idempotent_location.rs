//! Idempotency keys keep the first answer's `Location` header, so a replay of a request that
//! created something (a job: 202 + `Location: /v1/jobs/{id}`) points at it as the first answer
//! did.

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
            ColumnDef::new(IdempotencyKeys::Location)
                .text()
                .null()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_column(m, IdempotencyKeys::Table, IdempotencyKeys::Location).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum IdempotencyKeys {
    Table,
    Location,
}
