//! The member history's keys kept apart from storing members: `member_keys` holds, per job item,
//! the prefix of its user id and of its lower-cased user principal name that the history looks
//! up (the prefixes of `m20261130_000030_member_history_keys`), indexed there. A sweep adds the
//! keys of items stored a while before, many thousands at a time
//! (`licensor_core::jobs::history::key_members`), and moves `member_keys_mark.through`, the item
//! id through which every item is keyed; the history reads the items after it from `job_items`
//! itself, a short tail in storing order.
//!
//! The two prefix indexes on `job_items` were kept up by every page of members a job stored. The
//! members' keys are random, so each page wrote about one leaf page of each index per member:
//! with 200,000 items stored, a page of 999 members took 41 ms to store with them and 7 ms
//! without, and at `licensor-bench --scenario msp` scale (500 tenants' jobs of 1,000 members
//! started at once) storing the jobs' members was what held their first writes back. Keyed by
//! the sweep, a leaf page is written about once per transaction, however many keys it gains.
//!
//! `member_keys.item_id` has no foreign key to `job_items`: on PostgreSQL the check of one takes
//! a `FOR KEY SHARE` lock on the item until the sweep's transaction ends, and lanes claiming
//! members (`FOR UPDATE SKIP LOCKED`) skip locked items — a lane that found every pending member
//! locked stopped, and the job waited for the reconciler. The keys of items deleted (a stale
//! preview read again at launch) are deleted with them; a key whose item is gone matches nothing.

use sea_orm_migration::prelude::*;

use crate::indexes::{drop_index, index};
use crate::m20261130_000030_member_history_keys as history_keys;

#[derive(DeriveMigrationName)]
pub struct Migration;

// Both `INSERT … SELECT`s have a `WHERE`: without one, SQLite reads the `ON CONFLICT` that
// follows as a join constraint of the `SELECT` (https://www.sqlite.org/lang_upsert.html).

/// The items stored before this migration, keyed at once.
const BACKFILL: &str = "INSERT INTO member_keys (item_id, user_key, upn_key) \
                        SELECT id, substr(user_id, 1, 8), substr(lower(user_principal_name), 1, 16) \
                        FROM job_items WHERE id > 0 \
                        ON CONFLICT (item_id) DO NOTHING";
/// Keyed through the newest item stored before this migration.
const MARK: &str = "INSERT INTO member_keys_mark (id, through) \
                    SELECT 1, COALESCE(MAX(id), 0) FROM job_items WHERE TRUE \
                    ON CONFLICT (id) DO NOTHING";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
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
        m.create_table(
            Table::create()
                .table(MemberKeysMark::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(MemberKeysMark::Id)
                        .integer()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(MemberKeysMark::Through)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        db.execute_unprepared(BACKFILL).await?;
        db.execute_unprepared(MARK).await?;
        drop_index(m, "ix_job_items_upn_key", JobItems::Table).await?;
        drop_index(m, "ix_job_items_user_key", JobItems::Table).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(history_keys::USER_KEY).await?;
        db.execute_unprepared(history_keys::UPN_KEY).await?;
        m.drop_table(
            Table::drop()
                .table(MemberKeysMark::Table)
                .if_exists()
                .to_owned(),
        )
        .await?;
        m.drop_table(
            Table::drop()
                .table(MemberKeys::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
}

#[derive(DeriveIden, Clone, Copy)]
enum MemberKeys {
    Table,
    ItemId,
    UserKey,
    UpnKey,
}

#[derive(DeriveIden, Clone, Copy)]
enum MemberKeysMark {
    Table,
    Id,
    Through,
}
