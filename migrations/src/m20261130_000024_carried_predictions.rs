//! A stale preview launched reads its groups again: its items are dropped and the members read
//! afresh. Their predictions wait here, by member, until the new items are stored, so members
//! still in the groups keep their predicted outcome.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(CarriedPredictions::Table)
                .if_not_exists()
                .col(uuid(CarriedPredictions::JobId))
                .col(string(CarriedPredictions::UserId))
                .col(json_binary(CarriedPredictions::Prediction))
                .primary_key(
                    Index::create()
                        .col(CarriedPredictions::JobId)
                        .col(CarriedPredictions::UserId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(CarriedPredictions::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum CarriedPredictions {
    Table,
    JobId,
    UserId,
    Prediction,
}
