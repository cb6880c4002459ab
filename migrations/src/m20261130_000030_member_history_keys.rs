//! The member history's indexes made cheap to keep up while a job stores its members: they
//! index a short prefix of the member's key — the first 8 characters of the user id (32 random
//! bits of a GUID) and the first 16 of the lower-cased user principal name — instead of the
//! whole value. The look-up goes through the prefix and then compares the whole key on the few
//! rows it finds.
//!
//! Members arrive in random key order, so every page of an index over them is written again by
//! each transaction that stores a page of members; with whole keys the two indexes were about
//! half the size of the table's other data and made storing members a third slower. The prefix
//! indexes are about a third of their size.

use sea_orm_migration::prelude::*;

use crate::indexes::drop_index;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The expressions the indexes are on (the keys `member_keys` holds since
/// `m20261204_000035_member_keys`, whose rollback creates the indexes again).
pub(crate) const USER_KEY: &str = "CREATE INDEX IF NOT EXISTS ix_job_items_user_key \
                        ON job_items (substr(user_id, 1, 8))";
pub(crate) const UPN_KEY: &str = "CREATE INDEX IF NOT EXISTS ix_job_items_upn_key \
                       ON job_items (substr(lower(user_principal_name), 1, 16))";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(USER_KEY).await?;
        db.execute_unprepared(UPN_KEY).await?;
        drop_index(m, "ix_job_items_upn_lower", JobItems::Table).await?;
        drop_index(m, "ix_job_items_user", JobItems::Table).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_job_items_user ON job_items (user_id)",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_job_items_upn_lower \
             ON job_items (lower(user_principal_name))",
        )
        .await?;
        drop_index(m, "ix_job_items_upn_key", JobItems::Table).await?;
        drop_index(m, "ix_job_items_user_key", JobItems::Table).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JobItems {
    Table,
}
