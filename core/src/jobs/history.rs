//! One member's history: every job item of the tenant's jobs that touched the member, newest
//! first — the helpdesk's "what happened to this person's licenses?".
//!
//! Items carry no tenant id; they are scoped through their job (`EXISTS` a job of the tenant
//! with the item's `job_id`). An item is found by its keys — a prefix of `job_items.user_id` and
//! of `lower(job_items.user_principal_name)` — in `member_keys`, which [`key_members`] fills
//! from items stored a while before, many thousands at a time; the items after the last one it
//! keyed are read from `job_items` by id (migration `m20261204_000035_member_keys`).

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use super::{GroupRef, ItemError, ItemView, JobFacts, LedgerLicense, plan};
use crate::db::Db;
use crate::domain::{ItemStatus, JobKind, JobStatus};
use crate::entities::{job, job_item};
use crate::error::StoreResult;
use crate::page::{Page, PageRequest};

/// Longest user principal name accepted (Microsoft Entra allows 113 characters; room is left
/// for guests' `#EXT#` names).
pub const MAX_UPN_LEN: usize = 256;

/// The member history's keys: a prefix of the user id and of the lower-cased user principal
/// name (`member_keys.user_key`, `member_keys.upn_key`), and their lengths.
const USER_KEY: &str = "substr(job_items.user_id, 1, 8)";
const USER_KEY_LEN: usize = 8;
const UPN_KEY: &str = "substr(lower(job_items.user_principal_name), 1, 16)";
const UPN_KEY_LEN: usize = 16;
/// Item ids keyed per transaction of [`key_members`].
const KEYS_PER_BATCH: i64 = 50_000;

#[derive(sea_orm::DeriveIden, Clone, Copy)]
enum MemberKeys {
    Table,
    ItemId,
    UserKey,
    UpnKey,
}

/// `member_keys_mark`: one row (`id` 1) whose `through` is the item id through which every
/// item is keyed.
#[derive(sea_orm::DeriveIden, Clone, Copy)]
enum MemberKeysMark {
    Table,
    Id,
    Through,
}

/// `SELECT through FROM member_keys_mark WHERE id = 1`.
fn mark() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(MemberKeysMark::Through)
        .from(MemberKeysMark::Table)
        .and_where(Expr::col(MemberKeysMark::Id).eq(1))
        .to_owned()
}

/// The item id through which every item is keyed (0: none yet).
async fn keyed_through(db: &Db) -> StoreResult<i64> {
    Ok(match db.query_one(&mark()).await? {
        Some(row) => row.try_get_by_index::<i64>(0)?,
        None => 0,
    })
}

/// In a transaction of [`key_members`]: the item id through which every item is keyed, its
/// row locked until the transaction ends, or `None` when another process holds it (PostgreSQL:
/// `FOR UPDATE SKIP LOCKED`; SQLite's transactions hold the file's one write lock, so none
/// does).
async fn lock_mark(txn: &sea_orm::DatabaseTransaction) -> StoreResult<Option<i64>> {
    let mut q = mark();
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        q.lock_with_behavior(
            sea_orm::sea_query::LockType::Update,
            sea_orm::sea_query::LockBehavior::SkipLocked,
        );
    }
    Ok(match txn.query_one(&q).await? {
        Some(row) => Some(row.try_get_by_index::<i64>(0)?),
        // No mark row: none was ever written (every migration writes one), or it is locked.
        None => None,
    })
}

/// A member as the history is asked for: its directory object id or its user principal name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRef {
    UserId(Uuid),
    /// Lower-cased (ASCII; user principal names are ASCII), matched case-insensitively.
    Upn(String),
}

impl MemberRef {
    /// A user id (a GUID) or a user principal name (printable ASCII without spaces — Microsoft
    /// Entra ID's user principal names allow no other characters — one `@` with a name before
    /// it and a domain after it, at most [`MAX_UPN_LEN`] characters).
    /// Anything else is not a member reference.
    pub fn parse(s: &str) -> Result<MemberRef, String> {
        let s = s.trim();
        if let Ok(id) = Uuid::try_parse(s) {
            return Ok(MemberRef::UserId(id));
        }
        if s.is_empty()
            || s.len() > MAX_UPN_LEN
            || !s.split_once('@').is_some_and(|(name, domain)| {
                !name.is_empty() && !domain.is_empty() && !domain.contains('@')
            })
            || !s.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "give a member's user id (a GUID) or user principal name (name@domain in printable ASCII without spaces, as Microsoft Entra ID allows them, at most {MAX_UPN_LEN} characters)"
            ));
        }
        Ok(MemberRef::Upn(s.to_ascii_lowercase()))
    }
}

/// One job's item for the member.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub item_id: i64,
    pub job_id: Uuid,
    pub kind: JobKind,
    /// The job's status now.
    pub job_status: JobStatus,
    /// The run that last worked the member (1 = the first run, 2 = the first rerun, …).
    pub run_no: i32,
    /// The member's outcome in that job.
    pub status: ItemStatus,
    pub error: Option<ItemError>,
    /// A remark on a member that succeeded or was skipped (e.g. licenses left in place).
    pub note: Option<String>,
    /// The codes of `note`'s fixed parts (see [`super::notes`]); empty when it holds free text.
    pub note_codes: Vec<String>,
    /// A preview's prediction for the member (`would_succeed`, `would_skip`, `would_fail` with
    /// its code): what a previewed job's member, still `pending`, would come to if launched.
    pub prediction: Option<super::preview::Prediction>,
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    /// The group through which the job reached the member, with its name once the job read it.
    pub group: Option<GroupRef>,
    /// The member's direct licenses before the job's write (SKU ids with disabled plans), when
    /// the change ledger has an entry for the member; `null` when the job changed nothing for
    /// it. A member whose usage location the job set but whose license write was not made has
    /// an entry with its licenses unchanged (`before` = `after`).
    pub before: Option<Vec<LedgerLicense>>,
    /// Its direct licenses after the write (as read back when the job verified), when recorded.
    pub after: Option<Vec<LedgerLicense>>,
    /// Whether a read after the write confirmed it (`null`: not verified or nothing written).
    pub verified: Option<bool>,
    /// The usage location the job set for the member before its license write (`null`: none
    /// set).
    pub usage_location: Option<super::plan::LocationChange>,
    pub job_created_at: chrono::DateTime<Utc>,
    /// When the member's item last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

/// Items whose user principal name is `upn_lower` (lower-cased already) in any case: UPNs are
/// case-insensitive in the directory.
pub(crate) fn upn_is(upn_lower: &str) -> sea_orm::sea_query::SimpleExpr {
    Expr::expr(Func::lower(Expr::col((
        job_item::Entity,
        job_item::Column::UserPrincipalName,
    ))))
    .eq(upn_lower)
}

/// A page of the member's history in the tenant, newest first (by item: the job that reached
/// the member last comes first). A member no job of the tenant touched has an empty history.
pub async fn member_history(
    db: &Db,
    tenant_id: Uuid,
    member: &MemberRef,
    page: &PageRequest<i64>,
) -> StoreResult<Page<HistoryEntry>> {
    // Per item, a primary-key look-up of its job: a member has few items, a tenant many jobs.
    let of_tenant = Query::select()
        .expr(Expr::val(1))
        .from(job::Entity)
        .and_where(
            Expr::col((job::Entity, job::Column::Id))
                .equals((job_item::Entity, job_item::Column::JobId)),
        )
        .and_where(Expr::col((job::Entity, job::Column::TenantId)).eq(tenant_id))
        .to_owned();
    let mut q = job_item::Entity::find().filter(Expr::exists(of_tenant));
    // The key finds the rows, the whole user id or name picks the member's.
    let (key_col, key) = match member {
        MemberRef::UserId(id) => {
            let id = id.hyphenated().to_string();
            q = q.filter(job_item::Column::UserId.eq(id.as_str()));
            (MemberKeys::UserKey, id[..USER_KEY_LEN].to_owned())
        }
        MemberRef::Upn(upn) => {
            q = q.filter(upn_is(upn));
            (
                MemberKeys::UpnKey,
                upn.chars().take(UPN_KEY_LEN).collect::<String>(),
            )
        }
    };
    if let Some(after) = page.after {
        q = q.filter(job_item::Column::Id.lt(after));
    }
    let q = q.order_by_desc(job_item::Column::Id).limit(page.fetch());
    // Items not keyed yet first (after the mark read first), then the keyed ones: an item the
    // sweep keys in between is read twice (and kept once), never missed — the sweep adds keys
    // and moves the mark past them in one transaction.
    let through = keyed_through(db).await?;
    let unkeyed = q
        .clone()
        .filter(job_item::Column::Id.gt(through))
        .all(db)
        .await?;
    let keyed = q
        .filter(
            job_item::Column::Id.in_subquery(
                Query::select()
                    .column(MemberKeys::ItemId)
                    .from(MemberKeys::Table)
                    .and_where(Expr::col(key_col).eq(key))
                    .to_owned(),
            ),
        )
        .all(db)
        .await?;
    let mut rows: Vec<job_item::Model> = unkeyed.into_iter().chain(keyed).collect();
    rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
    rows.dedup_by_key(|r| r.id);
    rows.truncate(page.fetch() as usize);
    let page = page.finish(rows, |r| r.id);
    let mut job_ids: Vec<Uuid> = page.data.iter().map(|r| r.job_id).collect();
    job_ids.sort();
    job_ids.dedup();
    let jobs: HashMap<Uuid, job::Model> = if job_ids.is_empty() {
        HashMap::new()
    } else {
        job::Entity::find()
            .filter(job::Column::TenantId.eq(tenant_id))
            .filter(job::Column::Id.is_in(job_ids))
            .all(db)
            .await?
            .into_iter()
            .map(|j| (j.id, j))
            .collect()
    };
    let mut data = Vec::with_capacity(page.data.len());
    for m in page.data {
        let Some(job) = jobs.get(&m.job_id) else {
            continue;
        };
        let change = m
            .change
            .clone()
            .and_then(|v| serde_json::from_value::<plan::Change>(v).ok());
        let group = m.group_id.clone().map(|id| GroupRef {
            display_name: JobFacts::of(job)
                .groups
                .into_iter()
                .find(|g| g.id == id)
                .and_then(|g| g.display_name),
            id,
        });
        let item_id = m.id;
        let item = ItemView::from_model(m)?;
        data.push(HistoryEntry {
            item_id,
            job_id: job.id,
            kind: job.kind,
            job_status: job.status,
            run_no: item.run_no,
            status: item.status,
            error: item.error,
            note: item.note,
            note_codes: item.note_codes,
            prediction: item.prediction,
            user_id: item.user_id,
            user_principal_name: item.user_principal_name,
            display_name: item.display_name,
            group,
            before: change
                .as_ref()
                .map(|c| LedgerLicense::all(c.before.clone())),
            after: change.as_ref().map(|c| LedgerLicense::all(c.after.clone())),
            verified: change.as_ref().and_then(|c| c.verified),
            usage_location: change.and_then(|c| c.usage_location),
            job_created_at: job.created_at,
            updated_at: item.updated_at,
        });
    }
    Ok(Page {
        data,
        next_cursor: page.next_cursor,
    })
}

/// Delete the keys of job `job_id`'s items, before its items are deleted (`member_keys` has no
/// foreign key to them: see migration `m20261204_000035_member_keys`).
pub(crate) async fn forget_keys(db: &impl ConnectionTrait, job_id: Uuid) -> StoreResult<()> {
    let forget = Query::delete()
        .from_table(MemberKeys::Table)
        .and_where(
            Expr::col(MemberKeys::ItemId).in_subquery(
                Query::select()
                    .column(job_item::Column::Id)
                    .from(job_item::Entity)
                    .and_where(job_item::Column::JobId.eq(job_id))
                    .to_owned(),
            ),
        )
        .to_owned();
    db.execute(&forget).await?;
    Ok(())
}

/// The newest item stored so far (its id; `None`: none yet), for [`key_members`]'s bound.
pub async fn newest_item(db: &Db) -> StoreResult<Option<i64>> {
    let newest = Query::select()
        .expr(Expr::col(job_item::Column::Id).max())
        .from(job_item::Entity)
        .to_owned();
    Ok(match db.query_one(&newest).await? {
        Some(row) => row.try_get_by_index::<Option<i64>>(0)?,
        None => None,
    })
}

/// Key the items after `member_keys_mark.through` up to id `through`: add their keys to
/// `member_keys` and move the mark past them, [`KEYS_PER_BATCH`] item ids per transaction,
/// oldest first. Between two transactions it waits as long as the last one took, so jobs' own
/// writes go on in between (on SQLite the file has one writer); with nothing to key it takes no
/// write lock at all. Returns how many keys were added. One process keys at a time: a process
/// whose sweep finds another keying leaves the turn to it (see [`lock_mark`]); an item keyed
/// twice all the same keeps its one key row, and the mark only moves on. Nothing in
/// `job_items` is written or locked, so lanes claiming members never wait for the sweep.
///
/// The mark moves past every item id up to `through`: an item stored with a lower id after the
/// sweep passed it would never be keyed. Item ids are taken as items are inserted, by
/// transactions that commit within a second; the worker's sweep keys only through the newest
/// item it saw at least 30 s before (`licensor_workers::sweeps::KEY_AFTER`), so no transaction
/// that stores items with those ids is still open.
///
/// The keys go into `member_keys`' indexes many thousands at a time, each leaf page written
/// about once per transaction however many keys it gains (migration
/// `m20261204_000035_member_keys` on why they are not kept up as members are stored): the more
/// items one transaction keys, the less each costs (with 500,000 keyed already, 28–33 µs an
/// item in transactions of 10,000, 17–19 µs in transactions of 50,000).
pub async fn key_members(db: &Db, through: i64) -> StoreResult<u64> {
    let mut keyed = 0;
    loop {
        // Read outside a transaction first: with nothing to key no lock is taken at all.
        let from = keyed_through(db).await?;
        if from >= through {
            return Ok(keyed);
        }
        let started = std::time::Instant::now();
        let txn = crate::db::begin(db).await?;
        // One process keys at a time: the mark is locked for the transaction (on SQLite the
        // transaction holds the file's write lock). A process that finds it locked leaves this
        // turn to the one keying — both keying the same items, one waiting on each key the
        // other had inserted, doubled the sweep's load on the database — and one that got it
        // after another keyed reads where that one got to.
        let from = match lock_mark(&txn).await? {
            Some(from) if from < through => from,
            _ => {
                txn.rollback().await?;
                return Ok(keyed);
            }
        };
        let to = Ord::min(through, from.saturating_add(KEYS_PER_BATCH));
        let keys = Query::select()
            .column(job_item::Column::Id)
            .expr(Expr::cust(USER_KEY))
            .expr(Expr::cust(UPN_KEY))
            .from(job_item::Entity)
            .and_where(job_item::Column::Id.gt(from))
            .and_where(job_item::Column::Id.lte(to))
            .to_owned();
        let insert = Query::insert()
            .into_table(MemberKeys::Table)
            .columns([MemberKeys::ItemId, MemberKeys::UserKey, MemberKeys::UpnKey])
            .select_from(keys)
            .map_err(crate::error::StoreError::internal)?
            .on_conflict(
                OnConflict::column(MemberKeys::ItemId)
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        keyed += txn.execute(&insert).await?.rows_affected();
        let mark = Query::update()
            .table(MemberKeysMark::Table)
            .value(MemberKeysMark::Through, to)
            .and_where(Expr::col(MemberKeysMark::Id).eq(1))
            .and_where(Expr::col(MemberKeysMark::Through).lt(to))
            .to_owned();
        txn.execute(&mark).await?;
        txn.commit().await?;
        if to >= through {
            return Ok(keyed);
        }
        tokio::time::sleep(started.elapsed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_refs() {
        let id = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";
        assert_eq!(
            MemberRef::parse(id).unwrap(),
            MemberRef::UserId(Uuid::parse_str(id).unwrap())
        );
        assert_eq!(
            MemberRef::parse(" Anna.Berg@Contoso.com ").unwrap(),
            MemberRef::Upn("anna.berg@contoso.com".into())
        );
        assert!(MemberRef::parse("guest_x.com#EXT#@contoso.onmicrosoft.com").is_ok());
        for bad in [
            "",
            "anna",
            "anna berg@contoso.com",
            "@",
            "a@",
            "@contoso.com",
            "a@b@contoso.com",
            "åsa@contoso.com",
            &"a".repeat(300),
        ] {
            assert!(MemberRef::parse(bad).is_err(), "{bad}");
        }
        // A refusal says what a user principal name may hold, not only its shape: a name with
        // å has that shape.
        let refused = MemberRef::parse("åsa.öberg@contoso.se").unwrap_err();
        assert!(refused.contains("printable ASCII"), "{refused}");
    }
}
