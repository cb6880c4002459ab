//! Where a job's expansion has got to: the selected group being read and the directory's link
//! to its next page of members. Written in the same transaction as each page's items, so an
//! expansion that crashed goes on from the page after the last one stored instead of reading
//! every group again from its first page. And who is expanding: one worker at a time holds the
//! expansion under a lease (`expand_owner`, `expand_until`), renewed with each page.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            (
                "expand_position",
                ColumnDef::new(Jobs::ExpandPosition)
                    .json()
                    .null()
                    .to_owned(),
            ),
            (
                "expand_owner",
                ColumnDef::new(Jobs::ExpandOwner).string().null().to_owned(),
            ),
            (
                "expand_until",
                ColumnDef::new(Jobs::ExpandUntil)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
        ];
        for (name, mut column) in columns {
            if !m.has_column("jobs", name).await? {
                m.alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in [Jobs::ExpandPosition, Jobs::ExpandOwner, Jobs::ExpandUntil] {
            m.alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    ExpandPosition,
    ExpandOwner,
    ExpandUntil,
}
