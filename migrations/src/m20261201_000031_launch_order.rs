//! The launch order of a preview: a launched preview's lanes first take only the members it
//! predicted to succeed, so the free units go to the members the preview said would get them
//! however many lanes and `$batch`es write at once. `launch_order_done_at` is when those members
//! had all been worked; from then on lanes take every member. `NULL` while the order holds, and
//! for jobs that were never previewed (their lanes never look at it).

use sea_orm_migration::prelude::*;

use crate::columns::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            Jobs::Table,
            ColumnDef::new(Jobs::LaunchOrderDoneAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop_column(m, Jobs::Table, Jobs::LaunchOrderDoneAt).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    LaunchOrderDoneAt,
}
