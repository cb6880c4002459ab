//! Leases: claiming a chunk of pending members for a worker step, renewing and releasing it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait};
use uuid::Uuid;

use super::SetNull;
use super::processes::{is_live, process_of};
use super::{ParsedRequest, now};
use crate::db::{Db, as_json_text};
use crate::domain::ItemStatus;
use crate::entities::{job, job_item};
use crate::error::{StoreError, StoreResult};

/// The job, if it exists for this tenant.
pub async fn load(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Option<job::Model>> {
    Ok(job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?)
}

/// The job's stored request, parsed.
pub fn request_of(job: &job::Model) -> StoreResult<ParsedRequest> {
    serde_json::from_value(job.request.clone()).map_err(StoreError::internal)
}

/// Take up to `limit` pending items of a running job that nobody holds (or whose holder's
/// lease ran out — or was ended because its process stopped heartbeating, see
/// [`super::processes::take_over`]), in member order, and hold them for `owner` until `until`.
/// Items taken from such a holder come back with `taken_over` set. Nothing is taken while the
/// owner's process (`{process}/{step}`) has no row in `worker_processes` — it stopped, or was
/// taken for dead ([`super::processes::is_live`]). With
/// [`Pick::PredictedToSucceed`] only the members a launched preview predicted to succeed are
/// taken (see [`super::launch::predicted_first`]).
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
    limit: u64,
    only: Pick,
) -> StoreResult<Vec<Claimed>> {
    let mut pick = claimable(db.get_database_backend(), job_id, only, limit);
    if db.get_database_backend() == DbBackend::Postgres {
        pick.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    // An item still naming a holder has a lease that ran out (finished, retried and released
    // items name none): the claim takes it over, and says so on the item. An item already
    // marked so (a retry whose write's answer was lost) stays marked until it is read.
    let backend = db.get_database_backend();
    let mut update = job_item::Entity::update_many()
        .col_expr(
            job_item::Column::TakenOver,
            Expr::case(job_item::Column::LeaseOwner.is_not_null(), true)
                .finally(Expr::col(job_item::Column::TakenOver))
                .into(),
        )
        .col_expr(job_item::Column::LeaseOwner, Expr::value(owner))
        .col_expr(job_item::Column::LeaseUntil, Expr::value(until))
        .filter(job_item::Column::Id.in_subquery(pick))
        .filter(is_live(db, process_of(owner)))
        .into_query();
    // Only what a step needs, the JSON columns as text (parsed straight into their types, no
    // value tree in between): the whole row cost a claim more than its update.
    update.returning(Query::returning().exprs([
        Expr::col(job_item::Column::Id),
        Expr::col(job_item::Column::UserId),
        Expr::col(job_item::Column::Attempts),
        Expr::col(job_item::Column::TakenOver),
        as_json_text(backend, Expr::col(job_item::Column::Licenses)),
        as_json_text(backend, Expr::col(job_item::Column::Target)),
        as_json_text(backend, Expr::col(job_item::Column::Change)),
    ]));
    let mut claimed = db
        .query_all(&update)
        .await?
        .into_iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get_by_index(0)?,
                user_id: row.try_get_by_index(1)?,
                attempts: row.try_get_by_index(2)?,
                taken_over: row.try_get_by_index(3)?,
                licenses: row.try_get_by_index(4)?,
                target: row.try_get_by_index(5)?,
                change: row.try_get_by_index(6)?,
            })
        })
        .collect::<Result<Vec<Claimed>, sea_orm::DbErr>>()?;
    claimed.sort_by_key(|i| i.id);
    Ok(claimed)
}

/// The ids of up to `limit` items of the job that [`claim`] may take now with `only`, in member
/// order: pending, and nobody's lease on them running.
fn claimable(
    backend: DbBackend,
    job_id: Uuid,
    only: Pick,
    limit: u64,
) -> sea_orm::sea_query::SelectStatement {
    let t = now();
    let mut pick = Query::select();
    pick.column(job_item::Column::Id)
        .from(job_item::Entity)
        .and_where(job_item::Column::JobId.eq(job_id))
        .and_where(job_item::Column::Status.eq(ItemStatus::Pending))
        .and_where(
            job_item::Column::LeaseUntil
                .is_null()
                .or(job_item::Column::LeaseUntil.lt(t)),
        )
        .order_by(job_item::Column::Id, sea_orm::Order::Asc)
        .limit(limit);
    match only {
        Pick::All => {}
        Pick::PredictedToSucceed => {
            pick.and_where(predicted_to_succeed(backend));
        }
        Pick::MayHaveBeenWritten => {
            pick.and_where(may_have_been_written());
        }
    }
    pick
}

/// Whether the job has an item [`claim`] may take now with `only` (pending, nobody's lease on it
/// running), read without locking anything. A claim that took nothing while this is true met
/// rows another transaction had locked: PostgreSQL's claims skip locked rows
/// (`FOR UPDATE SKIP LOCKED`) rather than wait for them, so the members are free but were not
/// taken, and the lane is to come back for them rather than leave them to the reconciler.
pub async fn any_claimable<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    only: Pick,
) -> StoreResult<bool> {
    let pick = claimable(db.get_database_backend(), job_id, only, 1);
    Ok(db.query_one(&pick).await?.is_some())
}

/// A member a step claimed ([`claim`]): what deciding for it and writing it needs, not its
/// whole row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// `job_items.id`.
    pub id: i64,
    /// The member's directory object id.
    pub user_id: String,
    /// Outcomes recorded for it so far (tries).
    pub attempts: i32,
    /// Whether it is to be read before anything is decided (`job_items.taken_over`).
    pub taken_over: bool,
    /// Its state as last stored (`job_items.licenses`), a [`super::plan::Snapshot`] as JSON
    /// text.
    pub licenses: Option<String>,
    /// Undo items: what to restore, and only from what (`job_items.target`), as JSON text.
    pub target: Option<String>,
    /// Its change ledger entry so far (`job_items.change`), a [`super::plan::Change`] as JSON
    /// text: a usage location an earlier try set stays in the entry a later write records.
    pub change: Option<String>,
}

/// Which pending members a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Any, in member order.
    All,
    /// Only those whose preview predicted `would_succeed`, in member order.
    PredictedToSucceed,
    /// Only those licensor may have written without recording the answer
    /// ([`may_have_been_written`]), in member order: a cancelled job reads them before it
    /// calls them anything ([`super::work::settle_unanswered`]).
    MayHaveBeenWritten,
}

/// Pending items licensor may have written without recording the answer: marked to be read
/// first (`taken_over`: a write's answer was lost, or the item was taken over from a holder
/// that stopped), or still naming a holder whose lease ran out or was ended (it stopped in the
/// middle of its step). Such an item is never called skipped or cancelled without a fresh read.
pub(crate) fn may_have_been_written() -> sea_orm::sea_query::SimpleExpr {
    job_item::Column::TakenOver
        .eq(true)
        .or(job_item::Column::LeaseOwner.is_not_null())
}

/// Items whose prediction (`job_items.prediction`, JSON) is `would_succeed`.
pub(crate) fn predicted_to_succeed(backend: DbBackend) -> sea_orm::sea_query::SimpleExpr {
    let outcome = match backend {
        DbBackend::Postgres => "job_items.prediction ->> 'outcome'",
        _ => "json_extract(job_items.prediction, '$.outcome')",
    };
    Expr::cust(format!("{outcome} = 'would_succeed'"))
}

/// Extend `owner`'s hold on its items of the job (those another step has claimed since are
/// its no longer).
pub async fn renew(db: &Db, job_id: Uuid, owner: &str, until: DateTime<Utc>) -> StoreResult<()> {
    held_by(job_item::Entity::update_many(), job_id, owner)
        .col_expr(job_item::Column::LeaseUntil, Expr::value(until))
        .exec(db)
        .await?;
    Ok(())
}

/// Let go of `owner`'s items of the job that are still pending (a stopping worker, a job that
/// failed), so another worker can take them at once.
pub async fn release(db: &Db, job_id: Uuid, owner: &str) -> StoreResult<()> {
    release_update(job_id, owner).exec(db).await?;
    Ok(())
}

/// [`release`]'s statement, for a transaction that lets go of the members with other work
/// (see [`super::outcome::record_and_release`]).
pub(crate) fn release_update(job_id: Uuid, owner: &str) -> sea_orm::UpdateMany<job_item::Entity> {
    held_by(unleased(job_item::Entity::update_many()), job_id, owner)
}

/// Items whose holder's lease is live at `t`: a step holds them and records them itself.
pub(crate) fn lease_live(t: DateTime<Utc>) -> sea_orm::sea_query::SimpleExpr {
    job_item::Column::LeaseOwner
        .is_not_null()
        .and(job_item::Column::LeaseUntil.is_not_null())
        .and(job_item::Column::LeaseUntil.gte(t))
}

/// `update`, also setting the items held by nobody (no lease owner, no lease time).
pub(crate) fn unleased(
    update: sea_orm::UpdateMany<job_item::Entity>,
) -> sea_orm::UpdateMany<job_item::Entity> {
    update.set_null([job_item::Column::LeaseOwner, job_item::Column::LeaseUntil])
}

/// `update` narrowed to the job's items `owner` holds that are still pending.
fn held_by(
    update: sea_orm::UpdateMany<job_item::Entity>,
    job_id: Uuid,
    owner: &str,
) -> sea_orm::UpdateMany<job_item::Entity> {
    update
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::LeaseOwner.eq(owner))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending))
}
