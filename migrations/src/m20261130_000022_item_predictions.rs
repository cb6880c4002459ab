//! Previews: each member's predicted outcome (`{outcome, code, detail}`), decided from the
//! directory's state without writing, kept on the item so a launched preview can be compared
//! with what happened.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if !m.has_column("job_items", "prediction").await? {
            m.alter_table(
                Table::alter()
                    .table(JobItems::Table)
                    .add_column(json_binary_null(JobItems::Prediction))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(JobItems::Table)
                .drop_column(JobItems::Prediction)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    Prediction,
}
