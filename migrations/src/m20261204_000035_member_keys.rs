//! The member history's keys kept apart from storing members: `member_keys` holds, per job item,
//! the prefix of its user id and of its lower-cased user principal name that the history looks
//! up (the prefixes of `m20261130_000030_member_history_keys`), indexed there. A sweep adds the
//! keys of newly stored items many thousands at a time (`licensor_core::jobs::history::key_members`)
//! and marks those items `keyed`; items not keyed yet are found through a partial index of them
//! alone, a short tail in storing order.
//!
//! The two prefix indexes on `job_items` were kept up by every page of members a job stored. The
//! members' keys are random, so each page wrote about one leaf page of each index per member:
//! with 200,000 items stored, a page of 999 members took 41 ms to store with them and 7 ms
//! without, and at `licensor-bench --scenario msp` scale (500 tenants' jobs of 1,000 members
//! started at once) storing the jobs' members was what held their first writes back. Keyed by
//! the sweep, a leaf page is written about once per sweep, however many members it gained.

use sea_orm_migration::prelude::*;

use crate::columns::{add_column, drop_column};
use crate::indexes::{drop_index, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Items not keyed yet: the sweep's work, and the tail the history reads without keys.
/// `licensor_core::jobs::history` queries with the same condition, so both databases match it
/// to the partial index.
const UNKEYED: &str = "CREATE INDEX IF NOT EXISTS ix_job_items_unkeyed \
                       ON job_items (id) WHERE keyed = FALSE";
/// The items stored before this migration, keyed at once.
const BACKFILL: &str = "INSERT INTO member_keys (item_id, user_key, upn_key) \
                        SELECT id, substr(user_id, 1, 8), substr(lower(user_principal_name), 1, 16) \
                        FROM job_items WHERE keyed = FALSE \
                        ON CONFLICT (item_id) DO NOTHING";
const MARK: &str = "UPDATE job_items SET keyed = TRUE WHERE keyed = FALSE";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            JobItems::Table,
            ColumnDef::new(JobItems::Keyed)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(MemberKeys::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(MemberKeys::ItemId)
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(MemberKeys::UserKey).string_len(8).not_null())
                .col(ColumnDef::new(MemberKeys::UpnKey).string_len(16).null())
                .foreign_key(
                    ForeignKey::create()
                        .from(MemberKeys::Table, MemberKeys::ItemId)
                        .to(JobItems::Table, JobItems::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_member_keys_user",
            MemberKeys::Table,
            &[MemberKeys::UserKey, MemberKeys::ItemId],
        )
        .await?;
        index(
            m,
            "ix_member_keys_upn",
            MemberKeys::Table,
            &[MemberKeys::UpnKey, MemberKeys::ItemId],
        )
        .await?;
        let db = m.get_connection();
        db.execute_unprepared(BACKFILL).await?;
        db.execute_unprepared(MARK).await?;
        db.execute_unprepared(UNKEYED).await?;
        drop_index(m, "ix_job_items_upn_key", JobItems::Table).await?;
        drop_index(m, "ix_job_items_user_key", JobItems::Table).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_job_items_user_key ON job_items (substr(user_id, 1, 8))",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_job_items_upn_key \
             ON job_items (substr(lower(user_principal_name), 1, 16))",
        )
        .await?;
        drop_index(m, "ix_job_items_unkeyed", JobItems::Table).await?;
        m.drop_table(
            Table::drop()
                .table(MemberKeys::Table)
                .if_exists()
                .to_owned(),
        )
        .await?;
        drop_column(m, JobItems::Table, JobItems::Keyed).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
    Id,
    Keyed,
}

#[derive(DeriveIden, Clone, Copy)]
enum MemberKeys {
    Table,
    ItemId,
    UserKey,
    UpnKey,
}
