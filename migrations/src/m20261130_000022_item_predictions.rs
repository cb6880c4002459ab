//! Previews: each member's predicted outcome (`{outcome, code, detail}`), decided from the
//! directory's state without writing, kept on the item so a launched preview can be compared
//! with what happened.

use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, JobItems::Table, json_binary_null(JobItems::Prediction)).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_column(m, JobItems::Table, JobItems::Prediction).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    Prediction,
}
