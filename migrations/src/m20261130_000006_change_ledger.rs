//! The per-member change ledger: for every write a job makes, the member's direct licenses
//! before and after (and whether a re-read after the write confirmed them), stored with the
//! item; and, for the items of an undo job, what the member must still hold for the undo to
//! touch it and what to restore.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for (col, name) in [(JobItems::Change, "change"), (JobItems::Target, "target")] {
            if !m.has_column("job_items", name).await? {
                m.alter_table(
                    Table::alter()
                        .table(JobItems::Table)
                        .add_column(json_binary_null(col))
                        .to_owned(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [JobItems::Target, JobItems::Change] {
            m.alter_table(
                Table::alter()
                    .table(JobItems::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    Change,
    Target,
}
