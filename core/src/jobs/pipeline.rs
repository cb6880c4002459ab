//! The worker side of a job, all in the database (the source of truth; the queue only carries
//! job ids): start, expansion into items, claiming chunks of pending items under a lease,
//! recording outcomes with the job's counters in one transaction, finishing, failing, the
//! expiry sweep and the reconciler's view of stalled jobs.
//!
//! Every step is safe to repeat: items are unique per job and member, outcomes are recorded
//! only on items still pending, and status changes are conditional — so a message delivered
//! twice, or a worker that dies mid-chunk, neither loses nor repeats work.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{JobFacts, JobRequest, NewJob};
use crate::db::Db;
use crate::domain::{ItemStatus, JobKind, JobStatus};
use crate::entities::{job, job_item, job_run};
use crate::error::{StoreError, StoreResult};

/// A member found by expansion.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub group_id: String,
    pub usage_location: Option<String>,
    /// The member's [`super::plan::Snapshot`].
    pub licenses: Option<Value>,
    /// A preview's prediction for the member, a [`super::preview::Prediction`], when it was
    /// made as the member was read (`None`: decided later, or not a preview).
    pub prediction: Option<Value>,
}

/// The job, if it exists for this tenant.
pub async fn load(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Option<job::Model>> {
    Ok(job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?)
}

pub fn request_of(job: &job::Model) -> StoreResult<JobRequest> {
    serde_json::from_value(job.request.clone()).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Move a queued job to running (also its current run). Returns the job when it is running
/// afterwards (started now or earlier), `None` when it is finished, cancelled or gone.
pub async fn start(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Option<job::Model>> {
    let t = now();
    let started = job::Entity::update_many()
        .col_expr(
            job::Column::Status,
            Expr::value(JobStatus::Running.as_str()),
        )
        .col_expr(job::Column::StartedAt, Expr::value(t))
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .col_expr(job::Column::LastProgressAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::TenantId.eq(tenant_id))
        .filter(job::Column::Status.eq(JobStatus::Queued.as_str()))
        .exec(db)
        .await?
        .rows_affected;
    let Some(job) = load(db, tenant_id, job_id).await? else {
        return Ok(None);
    };
    if started == 1 {
        job_run::Entity::update_many()
            .col_expr(
                job_run::Column::Status,
                Expr::value(JobStatus::Running.as_str()),
            )
            .col_expr(job_run::Column::StartedAt, Expr::value(t))
            .filter(job_run::Column::JobId.eq(job_id))
            .filter(job_run::Column::RunNo.eq(job.runs))
            .exec(db)
            .await?;
    }
    Ok((job.status == JobStatus::Running.as_str()).then_some(job))
}

/// Record what the job learnt about its groups and SKUs.
pub async fn set_facts(db: &Db, job_id: Uuid, facts: &JobFacts) -> StoreResult<()> {
    let value = serde_json::to_value(facts).map_err(|e| StoreError::Invalid(e.to_string()))?;
    job::Entity::update_many()
        .col_expr(job::Column::Result, Expr::value(value))
        .col_expr(job::Column::UpdatedAt, Expr::value(now()))
        .filter(job::Column::Id.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Where a job's expansion has got to (`jobs.expand_position`): the index of the selected group
/// being read (in the request's order) and the directory's `@odata.nextLink` to that group's
/// next page of members (`None`: the group's first page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpandPosition {
    pub group: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl ExpandPosition {
    /// The stored position of `job` (the start when none is stored).
    pub fn of(job: &job::Model) -> ExpandPosition {
        job.expand_position
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// The position after a page of group `group` whose next page is `next` (`None`: the
    /// group's last page, so the next group's start).
    pub fn after_page(group: usize, next: Option<String>) -> ExpandPosition {
        match next {
            Some(link) => ExpandPosition {
                group,
                next: Some(link),
            },
            None => ExpandPosition {
                group: group + 1,
                next: None,
            },
        }
    }
}

/// A stored page's mark: the expansion's position after it and the expander's renewed lease.
#[derive(Debug, Clone)]
pub struct PageMark {
    pub position: ExpandPosition,
    pub lease_until: DateTime<Utc>,
}

/// Take the job's expansion for `owner` until `until`, unless another step holds it and its
/// lease has not run out (or the job is expanded already). One expander at a time: repeated
/// `Run` messages (orphan recovery, the reconciler, a lane noticing a dead expander) never read
/// the same pages side by side. Returns whether `owner` holds it now.
pub async fn claim_expansion(
    db: &Db,
    job_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    let taken = job::Entity::update_many()
        .col_expr(job::Column::ExpandOwner, Expr::value(owner))
        .col_expr(job::Column::ExpandUntil, Expr::value(until))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::ExpandedAt.is_null())
        .filter(
            job::Column::ExpandUntil
                .is_null()
                .or(job::Column::ExpandUntil.lt(now()))
                .or(job::Column::ExpandOwner.eq(owner)),
        )
        .exec(db)
        .await?
        .rows_affected;
    Ok(taken == 1)
}

/// Let go of the job's expansion held by `owner` (it stopped: cancelled, failed), keeping its
/// position, so the next run goes on from there at once.
pub async fn release_expansion(db: &Db, job_id: Uuid, owner: &str) -> StoreResult<()> {
    job::Entity::update_many()
        .col_expr(
            job::Column::ExpandOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            job::Column::ExpandUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::ExpandOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

/// Whether the job still needs expanding and nobody holds its expansion (never started, or its
/// expander's lease ran out: it died).
pub fn expansion_abandoned(job: &job::Model) -> bool {
    job.expanded_at.is_none() && job.expand_until.is_none_or(|until| until < now())
}

/// Insert expanded members as items with `status` (pending; succeeded for an export). A member
/// already in the job (from another selected group, or from an earlier delivery of the same
/// expansion) is not inserted again. Returns how many were new — the job's counters and, when
/// given, the expansion's position after this page with its renewed lease move with them in the
/// same transaction, so a crash never loses a stored page's place — or `None` when the job is no
/// longer running in run `run_no` (cancelled, failed, or cancelled and run again since): then
/// nothing is inserted, so a cancel never leaves members pending behind it and every member
/// belongs to the run that read it.
pub async fn insert_items(
    db: &Db,
    job_id: Uuid,
    run_no: i32,
    items: Vec<NewItem>,
    status: ItemStatus,
    mark: Option<&PageMark>,
) -> StoreResult<Option<u64>> {
    let mark = match mark {
        Some(m) => Some((
            serde_json::to_value(&m.position).map_err(|e| StoreError::Invalid(e.to_string()))?,
            m.lease_until,
        )),
        None => None,
    };
    let store_mark = |mark: (Value, DateTime<Utc>)| {
        job::Entity::update_many()
            .col_expr(job::Column::ExpandPosition, Expr::value(mark.0))
            .col_expr(job::Column::ExpandUntil, Expr::value(mark.1))
            .filter(job::Column::Id.eq(job_id))
    };
    let t = now();
    if items.is_empty() {
        if let Some(mark) = mark {
            store_mark(mark).exec(db).await?;
        }
        return Ok(Some(0));
    }
    let new_insert = || {
        let mut insert = Query::insert();
        insert.into_table(job_item::Entity).columns([
            job_item::Column::JobId,
            job_item::Column::UserId,
            job_item::Column::UserPrincipalName,
            job_item::Column::DisplayName,
            job_item::Column::GroupId,
            job_item::Column::UsageLocation,
            job_item::Column::Licenses,
            job_item::Column::Status,
            job_item::Column::Attempts,
            job_item::Column::RunNo,
            job_item::Column::UpdatedAt,
            job_item::Column::Prediction,
        ]);
        insert.on_conflict(
            OnConflict::columns([job_item::Column::JobId, job_item::Column::UserId])
                .do_nothing()
                .to_owned(),
        );
        insert
    };
    // One statement per ROWS_PER_INSERT members: 12 bound values each stay below SQLite's
    // 32,766 parameters.
    let mut inserts = Vec::with_capacity(items.len().div_ceil(ROWS_PER_INSERT));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let mut insert = new_insert();
        for item in items.by_ref().take(ROWS_PER_INSERT) {
            insert.values_panic([
                job_id.into(),
                item.user_id.into(),
                item.user_principal_name.into(),
                item.display_name.into(),
                item.group_id.into(),
                item.usage_location.into(),
                item.licenses.into(),
                status.as_str().into(),
                0i32.into(),
                run_no.into(),
                t.into(),
                item.prediction.into(),
            ]);
        }
        inserts.push(insert);
    }
    let txn = crate::db::begin(db).await?;
    // Take the job's row first (SQLite's write lock, PostgreSQL's row lock): a cancel waits for
    // this page, or this page sees the cancel — and a step of an earlier run (cancelled, then
    // run again while it read) stores nothing under its old run number.
    let running = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .col_expr(job::Column::LastProgressAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running.as_str()))
        .filter(job::Column::Runs.eq(run_no))
        .exec(&txn)
        .await?
        .rows_affected;
    if running == 0 {
        return Ok(None);
    }
    let mut inserted = 0;
    for insert in &inserts {
        inserted += txn.execute(insert).await?.rows_affected();
    }
    if let Some(mark) = mark {
        store_mark(mark).exec(&txn).await?;
    }
    if inserted > 0 {
        let n = inserted as i64;
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::Total, Expr::col(job::Column::Total).add(n))
            .col_expr(job::Column::UpdatedAt, Expr::value(t))
            .filter(job::Column::Id.eq(job_id));
        match status {
            ItemStatus::Succeeded => {
                update = update.col_expr(
                    job::Column::Succeeded,
                    Expr::col(job::Column::Succeeded).add(n),
                )
            }
            ItemStatus::Skipped => {
                update =
                    update.col_expr(job::Column::Skipped, Expr::col(job::Column::Skipped).add(n))
            }
            ItemStatus::Failed => {
                update = update.col_expr(job::Column::Failed, Expr::col(job::Column::Failed).add(n))
            }
            ItemStatus::Pending => {}
        }
        update.exec(&txn).await?;
        // Members stored already done (an export's) count in the job's activity.
        let counts = match status {
            ItemStatus::Succeeded => Some([n, 0, 0]),
            ItemStatus::Failed => Some([0, n, 0]),
            ItemStatus::Skipped => Some([0, 0, n]),
            ItemStatus::Pending => None,
        };
        if let Some([succeeded, failed, skipped]) = counts {
            super::activity::add(
                &txn,
                job_id,
                t,
                super::activity::Counts {
                    succeeded,
                    failed,
                    skipped,
                    throttled: 0,
                },
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(Some(inserted))
}

/// Members per `INSERT` statement of [`insert_items`].
const ROWS_PER_INSERT: usize = 2000;

/// Expansion is complete: every member of every selected group is an item.
pub async fn mark_expanded(db: &Db, job_id: Uuid) -> StoreResult<()> {
    let t = now();
    super::carry_predictions(db, job_id).await?;
    job::Entity::update_many()
        .col_expr(job::Column::ExpandedAt, Expr::value(t))
        .col_expr(
            job::Column::ExpandOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            job::Column::ExpandUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Take up to `limit` pending items of a running job that nobody holds (or whose holder's
/// lease ran out — or was ended because its process stopped heartbeating, see
/// [`super::processes::take_over`]), in member order, and hold them for `owner` until `until`.
/// Items taken from such a holder come back with `taken_over` set.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job_item::Model>> {
    let t = now();
    let mut pick = Query::select();
    pick.column(job_item::Column::Id)
        .from(job_item::Entity)
        .and_where(job_item::Column::JobId.eq(job_id))
        .and_where(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
        .and_where(
            job_item::Column::LeaseUntil
                .is_null()
                .or(job_item::Column::LeaseUntil.lt(t)),
        )
        .order_by(job_item::Column::Id, sea_orm::Order::Asc)
        .limit(limit);
    if db.get_database_backend() == DbBackend::Postgres {
        pick.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    // An item still naming a holder has a lease that ran out (finished, retried and released
    // items name none): the claim takes it over, and says so on the item.
    let mut claimed = job_item::Entity::update_many()
        .col_expr(
            job_item::Column::TakenOver,
            Expr::case(job_item::Column::LeaseOwner.is_not_null(), true)
                .finally(false)
                .into(),
        )
        .col_expr(job_item::Column::LeaseOwner, Expr::value(owner))
        .col_expr(job_item::Column::LeaseUntil, Expr::value(until))
        .filter(job_item::Column::Id.in_subquery(pick))
        .exec_with_returning(db)
        .await?;
    claimed.sort_by_key(|i| i.id);
    Ok(claimed)
}

/// What a lane may do with a job that has a canary ([`super::Canary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryDecision {
    /// Not enough members worked yet: wait.
    Undecided,
    /// The canary passed now: the job runs on normally, with all its lanes.
    Passed,
    /// The canary had passed already.
    PassedBefore,
    /// The failed share was above the bound: the job is `paused` now.
    Paused,
}

/// [`claim`] for a running job whose canary has not passed: under the job's row lock (so lanes
/// claim one after another), take no more than the canary's members not yet worked nor held by
/// another lane — so no more than `canary.members` members are written before the canary is
/// decided. Once it passed, the same as [`claim`]. Nothing when the job is not running.
pub async fn claim_canary(
    db: &Db,
    job_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
    limit: u64,
    canary: &super::Canary,
) -> StoreResult<Vec<job_item::Model>> {
    let t = now();
    let txn = crate::db::begin(db).await?;
    let running = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running.as_str()))
        .exec(&txn)
        .await?
        .rows_affected;
    let Some(job) = job::Entity::find_by_id(job_id).one(&txn).await? else {
        return Ok(Vec::new());
    };
    if running == 0 {
        return Ok(Vec::new());
    }
    let limit = if job.canary_passed_at.is_some() {
        limit
    } else {
        let held: i64 = job_item::Entity::find()
            .select_only()
            .column_as(job_item::Column::Id.count(), "n")
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
            .filter(job_item::Column::LeaseOwner.is_not_null())
            .filter(job_item::Column::LeaseUntil.gte(t))
            .into_tuple::<i64>()
            .one(&txn)
            .await?
            .unwrap_or(0);
        let worked = job.succeeded + job.failed + job.skipped;
        let left = i64::from(canary.members) - worked - held;
        if left <= 0 {
            txn.commit().await?;
            return Ok(Vec::new());
        }
        Ord::min(limit, left as u64)
    };
    let claimed = claim(&txn, job_id, owner, until, limit).await?;
    txn.commit().await?;
    Ok(claimed)
}

/// Decide a running job's canary once its members are worked: the failed share among the
/// members worked so far above the bound → the job is `paused` (its lanes stop at their next
/// step, nothing more is leased); within it → the canary passed and the job runs on. Under the
/// job's row lock, so one lane decides. A job smaller than its canary simply finishes.
pub async fn decide_canary(
    db: &Db,
    job_id: Uuid,
    canary: &super::Canary,
) -> StoreResult<CanaryDecision> {
    let t = now();
    let txn = crate::db::begin(db).await?;
    let running = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running.as_str()))
        .exec(&txn)
        .await?
        .rows_affected;
    let Some(job) = job::Entity::find_by_id(job_id).one(&txn).await? else {
        return Ok(CanaryDecision::Undecided);
    };
    if job.canary_passed_at.is_some() {
        return Ok(CanaryDecision::PassedBefore);
    }
    if running == 0 {
        return Ok(if job.status == JobStatus::Paused.as_str() {
            CanaryDecision::Paused
        } else {
            CanaryDecision::Undecided
        });
    }
    let worked = job.succeeded + job.failed + job.skipped;
    let decision = match canary.passes(worked, job.failed) {
        None => return Ok(CanaryDecision::Undecided),
        Some(true) => {
            job::Entity::update_many()
                .col_expr(job::Column::CanaryPassedAt, Expr::value(t))
                .filter(job::Column::Id.eq(job_id))
                .exec(&txn)
                .await?;
            CanaryDecision::Passed
        }
        Some(false) => {
            job::Entity::update_many()
                .col_expr(job::Column::Status, Expr::value(JobStatus::Paused.as_str()))
                .filter(job::Column::Id.eq(job_id))
                .exec(&txn)
                .await?;
            // The run's history row says so too, until it is resumed or cancelled.
            set_run_status(&txn, job_id, job.runs, JobStatus::Paused).await?;
            crate::audit::record(
                &txn,
                crate::audit::AuditEntry {
                    tenant_id: job.tenant_id,
                    actor_token_id: None,
                    action: "job.paused",
                    target_type: "job",
                    target_id: job_id.to_string(),
                    before: Some(serde_json::json!({"status": "running"})),
                    after: Some(serde_json::json!({
                        "status": "paused",
                        "worked": worked,
                        "failed": job.failed,
                        "max_failed_share": canary.max_failed_share,
                    })),
                },
            )
            .await?;
            CanaryDecision::Paused
        }
    };
    txn.commit().await?;
    Ok(decision)
}

/// Set the status of run `run_no` of the job (its history row) while the run is not over, with
/// its members' outcomes so far.
pub(crate) async fn set_run_status<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    run_no: i32,
    status: JobStatus,
) -> StoreResult<()> {
    let c = RunCounts::of(db, job_id, run_no).await?;
    job_run::Entity::update_many()
        .col_expr(job_run::Column::Status, Expr::value(status.as_str()))
        .col_expr(job_run::Column::Total, Expr::value(c.total))
        .col_expr(job_run::Column::Succeeded, Expr::value(c.succeeded))
        .col_expr(job_run::Column::Failed, Expr::value(c.failed))
        .col_expr(job_run::Column::Skipped, Expr::value(c.skipped))
        .filter(job_run::Column::JobId.eq(job_id))
        .filter(job_run::Column::RunNo.eq(run_no))
        .filter(job_run::Column::FinishedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Extend `owner`'s hold on its items of the job.
pub async fn renew(db: &Db, job_id: Uuid, owner: &str, until: DateTime<Utc>) -> StoreResult<()> {
    job_item::Entity::update_many()
        .col_expr(job_item::Column::LeaseUntil, Expr::value(until))
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::LeaseOwner.eq(owner))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// Let go of `owner`'s items of the job that are still pending (a stopping worker, a job that
/// failed), so another worker can take them at once.
pub async fn release(db: &Db, job_id: Uuid, owner: &str) -> StoreResult<()> {
    unleased(job_item::Entity::update_many())
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::LeaseOwner.eq(owner))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
        .exec(db)
        .await?;
    Ok(())
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
    update
        .col_expr(
            job_item::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            job_item::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
}

/// The outcome of one item, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        note: Option<String>,
        due_at: Option<DateTime<Utc>>,
    },
    /// `due_at`: a temporary assign's member that already held the licenses records until
    /// when the job wants them kept (it never comes due itself: it only keeps an earlier
    /// temporary assignment from being removed before then).
    Skipped {
        note: Option<String>,
        due_at: Option<DateTime<Utc>>,
    },
    Failed {
        code: String,
        detail: String,
    },
    /// A transient failure with tries left: pending again, not before `not_before`.
    Retry {
        not_before: DateTime<Utc>,
        code: String,
        detail: String,
    },
    /// Not done on purpose, with the reason's code (`cancelled`, `changed_since`): skipped.
    Left {
        code: String,
        detail: String,
    },
    /// A write not sent because the job stopped running while its chunk was worked. Decided
    /// when recorded, from the job's status in the same transaction: while the job stays
    /// `cancelled`, the member is skipped as `cancelled`; otherwise (paused, failed, or cancelled
    /// and run again meanwhile) it stays pending and held by nobody, for whichever run does it —
    /// so a rerun that began while the chunk was worked never loses it to the old run.
    NotSent,
    /// The member's current state, read from the directory (for later runs and exports).
    Refreshed {
        licenses: Value,
    },
    /// The member's change ledger entry ([`super::plan::Change`]), with its final outcome.
    Changed {
        change: Value,
    },
}

/// Record the outcomes of a chunk's items and move the job's counters with them, in one
/// transaction. Only items still pending are changed (whoever holds them now), so an outcome
/// recorded twice counts once. A member's fresh state ([`Outcome::Refreshed`]) and change ledger
/// entry ([`Outcome::Changed`]) are written by the same statement as its outcome, so each item
/// row is written once. The same transaction stamps the job's `last_progress_at` (in the
/// counters' statement) and adds the chunk to the job's per-minute activity — the members that
/// reached each outcome here and `throttled`, the 429 answers the chunk's directory calls met
/// (one upsert). Returns how many items reached a final status.
pub async fn record(
    db: &Db,
    job_id: Uuid,
    outcomes: Vec<(i64, Outcome)>,
    throttled: u64,
) -> StoreResult<u64> {
    use std::collections::{BTreeMap, HashMap};
    let t = now();
    // Group items with the same outcome so each group is one statement.
    let mut groups: BTreeMap<String, (Outcome, Vec<i64>)> = BTreeMap::new();
    let mut json: HashMap<i64, ItemJson> = HashMap::new();
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Refreshed { licenses } => {
                json.entry(id).or_default().licenses = Some(licenses)
            }
            Outcome::Changed { change } => json.entry(id).or_default().change = Some(change),
            other => {
                let key = format!("{other:?}");
                groups
                    .entry(key)
                    .or_insert_with(|| (other, Vec::new()))
                    .1
                    .push(id);
            }
        }
    }
    let txn = crate::db::begin(db).await?;
    // The job's row first, as every other transaction on a job takes it (rerun, cancel, launch,
    // expansion's stores): taken after the items, it closed a lock cycle with a rerun holding
    // the row and waiting for these items, and PostgreSQL aborted one side as a deadlock.
    job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .exec(&txn)
        .await?;
    let (mut succeeded, mut failed, mut skipped) = (0i64, 0i64, 0i64);
    if groups.values().any(|(o, _)| *o == Outcome::NotSent)
        && status(&txn, job_id).await? != Some(JobStatus::Cancelled)
    {
        let ids = groups
            .remove(&format!("{:?}", Outcome::NotSent))
            .map(|(_, ids)| ids)
            .unwrap_or_default();
        for ids in ids.chunks(ITEMS_PER_STATEMENT) {
            let update = unleased(job_item::Entity::update_many())
                .col_expr(job_item::Column::UpdatedAt, Expr::value(t));
            update_items(&txn, job_id, update, Only::Pending, ids, &mut json).await?;
        }
    }
    for (_, (outcome, ids)) in groups {
        for ids in ids.chunks(ITEMS_PER_STATEMENT) {
            let mut update = job_item::Entity::update_many()
                .col_expr(
                    job_item::Column::Attempts,
                    Expr::col(job_item::Column::Attempts).add(1),
                )
                .col_expr(job_item::Column::UpdatedAt, Expr::value(t));
            let (status, code, detail): (ItemStatus, Option<String>, Option<String>) =
                match &outcome {
                    Outcome::Succeeded { note, due_at } => {
                        update = update.col_expr(job_item::Column::DueAt, Expr::value(*due_at));
                        (ItemStatus::Succeeded, None, note.clone())
                    }
                    Outcome::Skipped { note, due_at } => {
                        update = update.col_expr(job_item::Column::DueAt, Expr::value(*due_at));
                        (ItemStatus::Skipped, None, note.clone())
                    }
                    Outcome::Left { code, detail } => (
                        ItemStatus::Skipped,
                        Some(code.clone()),
                        Some(detail.clone()),
                    ),
                    // The job is still cancelled (checked above).
                    Outcome::NotSent => (
                        ItemStatus::Skipped,
                        Some("cancelled".to_owned()),
                        Some(super::codes::explanation("cancelled").to_owned()),
                    ),
                    Outcome::Failed { code, detail } => {
                        (ItemStatus::Failed, Some(code.clone()), Some(detail.clone()))
                    }
                    Outcome::Retry {
                        not_before,
                        code,
                        detail,
                    } => {
                        update = update
                            .col_expr(job_item::Column::LeaseUntil, Expr::value(*not_before))
                            .col_expr(
                                job_item::Column::LeaseOwner,
                                Expr::value(Option::<String>::None),
                            );
                        (
                            ItemStatus::Pending,
                            Some(code.clone()),
                            Some(detail.clone()),
                        )
                    }
                    Outcome::Refreshed { .. } | Outcome::Changed { .. } => {
                        unreachable!("handled above")
                    }
                };
            if status != ItemStatus::Pending {
                update = unleased(update);
            }
            let update = update
                .col_expr(job_item::Column::Status, Expr::value(status.as_str()))
                .col_expr(job_item::Column::ErrorCode, Expr::value(code))
                .col_expr(job_item::Column::ErrorDetail, Expr::value(detail));
            let n = update_items(&txn, job_id, update, Only::Pending, ids, &mut json).await? as i64;
            match status {
                ItemStatus::Succeeded => succeeded += n,
                ItemStatus::Failed => failed += n,
                ItemStatus::Skipped => skipped += n,
                ItemStatus::Pending => {}
            }
        }
    }
    // A fresh state without an outcome in this call (the workers always send both; kept so a
    // read is never dropped): written on its own, whatever the item's status.
    let unrecorded: Vec<i64> = json.keys().copied().collect();
    for ids in unrecorded.chunks(ITEMS_PER_STATEMENT) {
        let update = job_item::Entity::update_many();
        update_items(&txn, job_id, update, Only::Any, ids, &mut json).await?;
    }
    job::Entity::update_many()
        .col_expr(
            job::Column::Succeeded,
            Expr::col(job::Column::Succeeded).add(succeeded),
        )
        .col_expr(
            job::Column::Failed,
            Expr::col(job::Column::Failed).add(failed),
        )
        .col_expr(
            job::Column::Skipped,
            Expr::col(job::Column::Skipped).add(skipped),
        )
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .col_expr(job::Column::LastProgressAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .exec(&txn)
        .await?;
    super::activity::add(
        &txn,
        job_id,
        t,
        super::activity::Counts {
            succeeded,
            failed,
            skipped,
            throttled: throttled as i64,
        },
    )
    .await?;
    txn.commit().await?;
    Ok((succeeded + failed + skipped) as u64)
}

/// Items changed by one statement of [`record`]: 3 bound values each (id, fresh state, ledger
/// entry), far below SQLite's 32,766 and PostgreSQL's 65,535 parameters.
const ITEMS_PER_STATEMENT: usize = 900;

/// An item's JSON columns written with its outcome: its fresh state (`job_items.licenses`) and
/// its change ledger entry (`job_items.change`).
#[derive(Debug, Default)]
struct ItemJson {
    licenses: Option<Value>,
    change: Option<Value>,
}

/// Which of the given items a statement of [`record`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    /// Those still pending (an outcome is recorded once, whoever holds the item now).
    Pending,
    /// All of them.
    Any,
}

/// Run `update` on the job's items `ids` (one chunk, a few hundred; `only` the pending ones or
/// all), taking their JSON columns out of `json` into the same statement, so each item row is
/// written once. Returns the rows changed.
///
/// Without JSON the ids are an `IN` list. With JSON the items are joined to a `VALUES` list of
/// `(id, licenses, change)` (`UPDATE … FROM`; an absent value keeps the column as it is): a key
/// lookup per row, where a `CASE id WHEN …` per column scans the whole `CASE` for every row.
/// The join must be driven by the `VALUES` list: on SQLite the item's other conditions are
/// written so that no index can serve them (`+column`, SQLite's documented way to disqualify
/// an index) — SQLite 3.51 otherwise walks the claim index and scans the list for every row,
/// the quadratic cost the join exists to avoid. On PostgreSQL the statement is also bounded to
/// the ids' span, so whichever index it picks ((job, status, id) when a new job's statistics
/// are stale) it never walks the job's other members.
async fn update_items<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    update: sea_orm::UpdateMany<job_item::Entity>,
    only: Only,
    ids: &[i64],
    json: &mut std::collections::HashMap<i64, ItemJson>,
) -> StoreResult<u64> {
    use sea_orm::QueryTrait;
    use sea_orm::sea_query::{Func, IntoIden, TableRef, ValueTuple};
    let (Some(&low), Some(&high)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(0);
    };
    let pending = ItemStatus::Pending.as_str();
    if !ids.iter().any(|id| json.contains_key(id)) {
        let mut update = update
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Id.between(low, high))
            .filter(job_item::Column::Id.is_in(ids.iter().copied()));
        if only == Only::Pending {
            update = update.filter(job_item::Column::Status.eq(pending));
        }
        return Ok(update.exec(conn).await?.rows_affected);
    }
    let item = |column: job_item::Column| Expr::col((job_item::Entity, column));
    let update = match conn.get_database_backend() {
        DbBackend::Sqlite => {
            let unindexed = |column| Expr::cust_with_expr("+?", item(column));
            let mut update = update.filter(unindexed(job_item::Column::JobId).eq(job_id));
            if only == Only::Pending {
                update = update.filter(unindexed(job_item::Column::Status).eq(pending));
            }
            update
        }
        _ => {
            let mut update = update
                .filter(job_item::Column::JobId.eq(job_id))
                .filter(job_item::Column::Id.between(low, high));
            if only == Only::Pending {
                update = update.filter(job_item::Column::Status.eq(pending));
            }
            update
        }
    };
    let rows: Vec<(i64, ItemJson)> = ids
        .iter()
        .map(|id| (*id, json.remove(id).unwrap_or_default()))
        .collect();
    let (with_licenses, with_change) = (
        rows.iter().any(|(_, j)| j.licenses.is_some()),
        rows.iter().any(|(_, j)| j.change.is_some()),
    );
    let tuples = rows.into_iter().map(|(id, j)| {
        ValueTuple::Three(
            id.into(),
            sea_orm::Value::Json(j.licenses.map(Box::new)),
            sea_orm::Value::Json(j.change.map(Box::new)),
        )
    });
    // `VALUES` columns are named column1, column2 … on both databases.
    let values = Query::select()
        .expr_as(Expr::col("column1"), "id")
        .expr_as(Expr::col("column2"), "licenses")
        .expr_as(Expr::col("column3"), "change")
        .from_values(tuples, "item_values")
        .to_owned();
    let mut stmt = update.into_query();
    stmt.from(TableRef::SubQuery(values.into(), "item_json".into_iden()))
        .and_where(item(job_item::Column::Id).equals(("item_json", "id")));
    for (present, column, name) in [
        (with_licenses, job_item::Column::Licenses, "licenses"),
        (with_change, job_item::Column::Change, "change"),
    ] {
        if present {
            stmt.value(
                column,
                Func::coalesce([Expr::col(("item_json", name)), item(column)]),
            );
        }
    }
    Ok(conn.execute(&stmt).await?.rows_affected())
}

/// Skip, with code `cancelled`, the job's pending items that no worker holds (or whose holder's
/// lease ran out), and move the job's counters with them. Items held by a worker are recorded
/// by that worker. Returns how many were skipped.
pub async fn skip_unheld<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    t: DateTime<Utc>,
) -> StoreResult<i64> {
    let skipped = unleased(job_item::Entity::update_many())
        .col_expr(
            job_item::Column::Status,
            Expr::value(ItemStatus::Skipped.as_str()),
        )
        .col_expr(job_item::Column::ErrorCode, Expr::value("cancelled"))
        .col_expr(
            job_item::Column::ErrorDetail,
            Expr::value(super::codes::explanation("cancelled")),
        )
        .col_expr(job_item::Column::UpdatedAt, Expr::value(t))
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
        .filter(lease_live(t).not())
        .exec(conn)
        .await?
        .rows_affected as i64;
    if skipped > 0 {
        job::Entity::update_many()
            .col_expr(
                job::Column::Skipped,
                Expr::col(job::Column::Skipped).add(skipped),
            )
            .col_expr(job::Column::UpdatedAt, Expr::value(t))
            .filter(job::Column::Id.eq(job_id))
            .exec(conn)
            .await?;
        // The cancel's skipped members count in the job's activity like any outcome.
        super::activity::add(
            conn,
            job_id,
            t,
            super::activity::Counts {
                skipped,
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(skipped)
}

/// Close a cancelled job's current run once none of its members is pending any more: the run's
/// counts are then final and its `job.cancelled` event fires (once). While a worker still holds
/// members, they are recorded first and the run stays open. Returns whether this call closed
/// the run.
pub(crate) async fn close_cancelled_run<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    t: DateTime<Utc>,
) -> StoreResult<bool> {
    if any_pending(conn, job_id).await? {
        return Ok(false);
    }
    let Some(job) = job::Entity::find_by_id(job_id)
        .filter(job::Column::Status.eq(JobStatus::Cancelled.as_str()))
        .one(conn)
        .await?
    else {
        return Ok(false);
    };
    close_run(conn, &job, JobStatus::Cancelled, t).await
}

/// A cancelled job's members left pending (a lane that stopped, a lease that ran out): skip
/// them as cancelled, and close the cancelled run when nothing is pending any more.
pub async fn settle_cancelled(db: &Db, job_id: Uuid) -> StoreResult<Settled> {
    let txn = crate::db::begin(db).await?;
    let still_cancelled = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(now()))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Cancelled.as_str()))
        .exec(&txn)
        .await?
        .rows_affected;
    let (n, closed) = if still_cancelled == 1 {
        let t = now();
        let n = skip_unheld(&txn, job_id, t).await?;
        (n, close_cancelled_run(&txn, job_id, t).await?)
    } else {
        (0, false)
    };
    txn.commit().await?;
    Ok(Settled { skipped: n, closed })
}

/// What [`settle_cancelled`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Members skipped as cancelled now.
    pub skipped: i64,
    /// Whether the cancelled run was closed now (its counts final, its event recorded): the
    /// caller queues the job's webhook deliveries.
    pub closed: bool,
}

/// The job's status as stored now (`None` when it is gone).
pub async fn status<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<Option<JobStatus>> {
    let s: Option<String> = job::Entity::find_by_id(job_id)
        .select_only()
        .column(job::Column::Status)
        .into_tuple()
        .one(db)
        .await?;
    s.map(|s| s.parse().map_err(StoreError::Invalid))
        .transpose()
}

/// Whether any item of the job is still pending (one index probe).
pub async fn any_pending<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<bool> {
    Ok(job_item::Entity::find()
        .select_only()
        .column(job_item::Column::Id)
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?
        .is_some())
}

/// Whether any item of the job is still pending; and if some wait for a retry and nobody holds
/// them, the earliest time one may be taken. Reads every pending item: for when a claim found
/// nothing to take, not for every chunk.
pub async fn pending_state(db: &Db, job_id: Uuid) -> StoreResult<(bool, Option<DateTime<Utc>>)> {
    if !any_pending(db, job_id).await? {
        return Ok((false, None));
    }
    let next: Option<DateTime<Utc>> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::LeaseUntil)
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
        .filter(job_item::Column::LeaseOwner.is_null())
        .filter(job_item::Column::LeaseUntil.is_not_null())
        .order_by_asc(job_item::Column::LeaseUntil)
        .limit(1)
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(db)
        .await?
        .flatten();
    Ok((true, next))
}

/// Finish a running job whose items are all done: `finished` when none failed,
/// `finished_with_exception` when some did, `failed` when every item failed. Returns the new
/// status when this call finished it.
pub async fn finish_if_done(db: &Db, job_id: Uuid) -> StoreResult<Option<JobStatus>> {
    let Some(job) = job::Entity::find_by_id(job_id).one(db).await? else {
        return Ok(None);
    };
    if job.status != JobStatus::Running.as_str() || job.expanded_at.is_none() {
        return Ok(None);
    }
    if any_pending(db, job_id).await? {
        return Ok(None);
    }
    let (status, code) = if job.failed == 0 {
        (JobStatus::Finished, None)
    } else if job.succeeded + job.skipped == 0 {
        (JobStatus::Failed, Some("all_items_failed"))
    } else {
        (JobStatus::FinishedWithException, None)
    };
    let t = now();
    let txn = crate::db::begin(db).await?;
    let done = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(status.as_str()))
        .col_expr(job::Column::ErrorCode, Expr::value(code))
        .col_expr(
            job::Column::ErrorDetail,
            Expr::value(code.map(|_| format!("all {} members failed", job.failed))),
        )
        .col_expr(job::Column::FinishedAt, Expr::value(t))
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running.as_str()))
        .exec(&txn)
        .await?
        .rows_affected;
    if done == 1 {
        close_run(&txn, &job, status, t).await?;
    }
    txn.commit().await?;
    Ok((done == 1).then_some(status))
}

/// A run's members by outcome, from its items.
struct RunCounts {
    total: i64,
    succeeded: i64,
    failed: i64,
    skipped: i64,
}

impl RunCounts {
    async fn of<C: ConnectionTrait>(conn: &C, job_id: Uuid, run_no: i32) -> StoreResult<Self> {
        let counts: Vec<(String, i64)> = job_item::Entity::find()
            .select_only()
            .column(job_item::Column::Status)
            .column_as(job_item::Column::Id.count(), "n")
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::RunNo.eq(run_no))
            .group_by(job_item::Column::Status)
            .into_tuple()
            .all(conn)
            .await?;
        let count = |s: ItemStatus| {
            counts
                .iter()
                .find(|(st, _)| st == s.as_str())
                .map_or(0, |(_, n)| *n)
        };
        Ok(RunCounts {
            total: counts.iter().map(|(_, n)| n).sum(),
            succeeded: count(ItemStatus::Succeeded),
            failed: count(ItemStatus::Failed),
            skipped: count(ItemStatus::Skipped),
        })
    }
}

/// Write the counts of the job's current run, and record the webhook deliveries its end fires.
/// A run is closed once: when it is closed already (`finished_at` set) nothing changes and no
/// event fires again. Returns whether this call closed it.
pub(crate) async fn close_run<C: ConnectionTrait>(
    conn: &C,
    job: &job::Model,
    status: JobStatus,
    t: DateTime<Utc>,
) -> StoreResult<bool> {
    let c = RunCounts::of(conn, job.id, job.runs).await?;
    let closed = job_run::Entity::update_many()
        .col_expr(job_run::Column::Status, Expr::value(status.as_str()))
        .col_expr(job_run::Column::Total, Expr::value(c.total))
        .col_expr(job_run::Column::Succeeded, Expr::value(c.succeeded))
        .col_expr(job_run::Column::Failed, Expr::value(c.failed))
        .col_expr(job_run::Column::Skipped, Expr::value(c.skipped))
        .col_expr(job_run::Column::FinishedAt, Expr::value(t))
        .filter(job_run::Column::JobId.eq(job.id))
        .filter(job_run::Column::RunNo.eq(job.runs))
        .filter(job_run::Column::FinishedAt.is_null())
        .exec(conn)
        .await?
        .rows_affected;
    if closed == 0 {
        return Ok(false);
    }
    // The run's end is an event: its webhook deliveries commit with it.
    crate::webhooks::events::on_job_end(conn, job.tenant_id, job.id, status).await?;
    Ok(true)
}

/// The job could not run (a group that does not exist, rejected credentials …): it ends
/// `failed` with `code` and `detail`; its unfinished items stay pending for a rerun.
pub async fn fail(db: &Db, job_id: Uuid, code: &str, detail: &str) -> StoreResult<bool> {
    let t = now();
    let txn = crate::db::begin(db).await?;
    let done = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Failed.as_str()))
        .col_expr(job::Column::ErrorCode, Expr::value(code))
        .col_expr(job::Column::ErrorDetail, Expr::value(detail))
        .col_expr(job::Column::FinishedAt, Expr::value(t))
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(
            job::Column::Status.is_in([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]),
        )
        .exec(&txn)
        .await?
        .rows_affected;
    if done == 1 {
        job_item::Entity::update_many()
            .col_expr(
                job_item::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                job_item::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Status.eq(ItemStatus::Pending.as_str()))
            .exec(&txn)
            .await?;
        if let Some(job) = job::Entity::find_by_id(job_id).one(&txn).await? {
            close_run(&txn, &job, JobStatus::Failed, t).await?;
        }
    }
    txn.commit().await?;
    Ok(done == 1)
}

/// What later assign jobs of the tenant want of one member's SKU, as the expiry sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// A permanent assign holds it: keep it without end.
    Forever { job_id: Uuid },
    /// A temporary assign wants it until `until`. `removes_it`: that job's own item added the
    /// SKU and comes due itself, so the removal is left to it.
    Until {
        job_id: Uuid,
        until: DateTime<Utc>,
        removes_it: bool,
    },
}

/// The SKUs a member held directly before an item's write, from its change ledger entry.
fn held_before(item: &job_item::Model) -> std::collections::BTreeSet<Uuid> {
    item.change
        .clone()
        .and_then(|c| serde_json::from_value::<super::plan::Change>(c).ok())
        .map(|c| c.before.into_iter().map(|l| l.sku_id).collect())
        .unwrap_or_default()
}

/// Turn temporary assignments that are due into removal jobs linked to the job that assigned
/// them (one per distinct set of SKUs to remove). A SKU is removed from a member only if no
/// later assign job of the tenant wants the member to keep it longer: a later permanent assign
/// whose item for the member succeeded or found the SKU already held keeps it without end; a
/// later temporary one that expires later keeps it until then (the removal is then left to that
/// job's item when it added the SKU itself, otherwise this item comes due again at that time).
/// A SKU the member held before the job is kept too. Kept members say why in their item's note;
/// their `due_at` is cleared or moved, so they come due once. Expired claims of skipped items
/// (their due time only ever extends an earlier assignment) are cleared.
pub async fn create_expiry_removals(db: &Db, at: DateTime<Utc>) -> StoreResult<Vec<(Uuid, Uuid)>> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let due_jobs: Vec<Uuid> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::JobId)
        .distinct()
        .filter(job_item::Column::DueAt.lte(at))
        .filter(job_item::Column::Status.eq(ItemStatus::Succeeded.as_str()))
        .limit(100)
        .into_tuple()
        .all(db)
        .await?;
    let mut created = Vec::new();
    for parent_id in due_jobs {
        let Some(parent) = job::Entity::find_by_id(parent_id).one(db).await? else {
            continue;
        };
        let parent_req = request_of(&parent)?;
        if parent_req.kind != JobKind::Assign {
            continue;
        }
        let skus: Vec<Uuid> = parent_req.add_licenses.iter().map(|l| l.sku_id).collect();
        let txn = crate::db::begin(db).await?;
        // Take the parent's row first (the write lock comes with it), so two sweeps never both
        // decide the same members; then read the members still due.
        job::Entity::update_many()
            .col_expr(job::Column::Requeues, Expr::col(job::Column::Requeues))
            .filter(job::Column::Id.eq(parent.id))
            .exec(&txn)
            .await?;
        let due: Vec<job_item::Model> = job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(parent.id))
            .filter(job_item::Column::DueAt.lte(at))
            .filter(job_item::Column::Status.eq(ItemStatus::Succeeded.as_str()))
            .all(&txn)
            .await?;
        if due.is_empty() {
            txn.rollback().await?;
            continue;
        }
        let users: Vec<String> = due.iter().map(|i| i.user_id.clone()).collect();

        // Later assign jobs of the same tenant that name any of the parent's SKUs.
        let mut later: HashMap<Uuid, (Option<Uuid>, BTreeSet<Uuid>)> = HashMap::new();
        let candidates: Vec<job::Model> = job::Entity::find()
            .filter(job::Column::TenantId.eq(parent.tenant_id))
            .filter(job::Column::Kind.eq(JobKind::Assign.as_str()))
            .filter(job::Column::CreatedAt.gte(parent.created_at))
            .filter(job::Column::Id.ne(parent.id))
            .all(&txn)
            .await?;
        for j in candidates {
            if j.created_at == parent.created_at && j.id < parent.id {
                continue;
            }
            let Ok(req) = request_of(&j) else { continue };
            if req.undo_of.is_some() {
                continue;
            }
            let named: BTreeSet<Uuid> = req
                .add_licenses
                .iter()
                .map(|l| l.sku_id)
                .filter(|s| skus.contains(s))
                .collect();
            if !named.is_empty() {
                let permanent = if req.expires_in.is_none() {
                    Some(j.id)
                } else {
                    None
                };
                later.insert(j.id, (permanent, named));
            }
        }
        // Their items for the due members that ended holding the SKUs: succeeded, or skipped
        // as already held (no code).
        let mut claims: HashMap<String, Vec<(Uuid, job_item::Model)>> = HashMap::new();
        if !later.is_empty() {
            let ids: Vec<Uuid> = later.keys().copied().collect();
            for chunk in users.chunks(ITEMS_PER_STATEMENT) {
                let found: Vec<job_item::Model> = job_item::Entity::find()
                    .filter(job_item::Column::JobId.is_in(ids.clone()))
                    .filter(job_item::Column::UserId.is_in(chunk.to_vec()))
                    .filter(
                        job_item::Column::Status
                            .is_in([ItemStatus::Succeeded.as_str(), ItemStatus::Skipped.as_str()]),
                    )
                    .filter(job_item::Column::ErrorCode.is_null())
                    .all(&txn)
                    .await?;
                for i in found {
                    claims
                        .entry(i.user_id.clone())
                        .or_default()
                        .push((i.job_id, i));
                }
            }
        }
        // SKUs an earlier removal of this job already took from a member.
        let mut removed: HashMap<String, BTreeSet<Uuid>> = HashMap::new();
        let children: Vec<job::Model> = job::Entity::find()
            .filter(job::Column::TenantId.eq(parent.tenant_id))
            .filter(job::Column::ParentJobId.eq(parent.id))
            .all(&txn)
            .await?;
        for child in children {
            let Ok(req) = request_of(&child) else {
                continue;
            };
            for chunk in users.chunks(ITEMS_PER_STATEMENT) {
                let members: Vec<String> = job_item::Entity::find()
                    .select_only()
                    .column(job_item::Column::UserId)
                    .filter(job_item::Column::JobId.eq(child.id))
                    .filter(job_item::Column::UserId.is_in(chunk.to_vec()))
                    .into_tuple()
                    .all(&txn)
                    .await?;
                for m in members {
                    removed
                        .entry(m)
                        .or_default()
                        .extend(req.remove_licenses.iter().copied());
                }
            }
        }

        // Decide each member: the SKUs to remove now, and why the others are kept.
        let mut groups: BTreeMap<Vec<Uuid>, Vec<i64>> = BTreeMap::new();
        let mut cleared: Vec<i64> = Vec::new();
        let mut kept: Vec<(i64, Option<DateTime<Utc>>, String)> = Vec::new();
        for item in &due {
            let before = held_before(item);
            let gone = removed.get(&item.user_id);
            let mine = claims.get(&item.user_id);
            let mut remove: Vec<Uuid> = Vec::new();
            let mut notes: Vec<String> = Vec::new();
            let mut next_due: Option<DateTime<Utc>> = None;
            for sku in &skus {
                if gone.is_some_and(|g| g.contains(sku)) {
                    continue;
                }
                if before.contains(sku) {
                    notes.push(format!("kept {sku}: held before the job"));
                    continue;
                }
                let mut best: Option<Claim> = None;
                for (job_id, claim) in mine.into_iter().flatten() {
                    let Some((permanent, named)) = later.get(job_id) else {
                        continue;
                    };
                    if !named.contains(sku) {
                        continue;
                    }
                    let this = match (permanent, claim.due_at) {
                        (Some(_), _) => Claim::Forever { job_id: *job_id },
                        (None, Some(until)) if until > at => Claim::Until {
                            job_id: *job_id,
                            until,
                            removes_it: claim.status == ItemStatus::Succeeded.as_str()
                                && !held_before(claim).contains(sku),
                        },
                        _ => continue,
                    };
                    best = match (best, this) {
                        (Some(Claim::Forever { job_id: a }), Claim::Forever { job_id: b }) => {
                            Some(Claim::Forever {
                                job_id: std::cmp::max(a, b),
                            })
                        }
                        (Some(f @ Claim::Forever { .. }), _) => Some(f),
                        (_, f @ Claim::Forever { .. }) => Some(f),
                        (
                            Some(Claim::Until {
                                job_id: a,
                                until: ua,
                                removes_it: ra,
                            }),
                            Claim::Until {
                                job_id: b,
                                until: ub,
                                removes_it: rb,
                            },
                        ) => Some(if (ub, b) > (ua, a) {
                            Claim::Until {
                                job_id: b,
                                until: ub,
                                removes_it: rb,
                            }
                        } else {
                            Claim::Until {
                                job_id: a,
                                until: ua,
                                removes_it: ra,
                            }
                        }),
                        (None, c) => Some(c),
                    };
                }
                match best {
                    None => remove.push(*sku),
                    Some(Claim::Forever { job_id }) => {
                        notes.push(format!("kept {sku}: assigned without end by job {job_id}"))
                    }
                    Some(Claim::Until {
                        job_id,
                        until,
                        removes_it: true,
                    }) => notes.push(format!(
                        "kept {sku}: assigned again until {} by job {job_id}, which removes it then",
                        until.to_rfc3339()
                    )),
                    Some(Claim::Until { job_id, until, .. }) => {
                        next_due = Some(next_due.map_or(until, |d| std::cmp::min(d, until)));
                        notes.push(format!(
                            "kept {sku} until {}: assigned until then by job {job_id}",
                            until.to_rfc3339()
                        ));
                    }
                }
            }
            if !remove.is_empty() {
                groups.entry(remove).or_default().push(item.id);
            }
            if notes.is_empty() && next_due.is_none() {
                cleared.push(item.id);
            } else {
                let mut detail = item.error_detail.clone().unwrap_or_default();
                for n in notes {
                    if !detail.contains(&n) {
                        if !detail.is_empty() {
                            detail.push_str("; ");
                        }
                        detail.push_str(&n);
                    }
                }
                kept.push((item.id, next_due, detail));
            }
        }

        // One removal job per distinct set of SKUs to remove.
        let t = now();
        let mut children_created = Vec::new();
        for (remove, ids) in groups {
            let request = JobRequest {
                kind: JobKind::Remove,
                groups: parent_req.groups.clone(),
                transitive: parent_req.transitive,
                add_licenses: Vec::new(),
                remove_licenses: remove.clone(),
                replace_all: false,
                usage_location: None,
                expires_in: None,
                export: None,
                verify: None,
                undo_of: None,
                preview: false,
                canary: None,
            };
            let child = super::insert(
                &txn,
                NewJob {
                    tenant_id: parent.tenant_id,
                    request,
                    created_by: None,
                    parent_job_id: Some(parent.id),
                },
            )
            .await?;
            let mut n = 0i64;
            for chunk in ids.chunks(ITEMS_PER_STATEMENT) {
                let mut copy = Query::insert();
                copy.into_table(job_item::Entity)
                    .columns([
                        job_item::Column::JobId,
                        job_item::Column::UserId,
                        job_item::Column::UserPrincipalName,
                        job_item::Column::DisplayName,
                        job_item::Column::GroupId,
                        job_item::Column::UsageLocation,
                        job_item::Column::Status,
                        job_item::Column::Attempts,
                        job_item::Column::RunNo,
                        job_item::Column::UpdatedAt,
                    ])
                    .select_from(
                        Query::select()
                            .expr(Expr::value(child.id))
                            .column(job_item::Column::UserId)
                            .column(job_item::Column::UserPrincipalName)
                            .column(job_item::Column::DisplayName)
                            .column(job_item::Column::GroupId)
                            .column(job_item::Column::UsageLocation)
                            .expr(Expr::value(ItemStatus::Pending.as_str()))
                            .expr(Expr::value(0i32))
                            .expr(Expr::value(1i32))
                            .expr(Expr::value(t))
                            .from(job_item::Entity)
                            .and_where(job_item::Column::JobId.eq(parent.id))
                            .and_where(job_item::Column::Id.is_in(chunk.to_vec()))
                            .to_owned(),
                    )
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                n += txn.execute(&copy).await?.rows_affected() as i64;
            }
            job::Entity::update_many()
                .col_expr(job::Column::Total, Expr::value(n))
                .col_expr(job::Column::ExpandedAt, Expr::value(t))
                .col_expr(job::Column::Result, Expr::value(parent.result.clone()))
                .filter(job::Column::Id.eq(child.id))
                .exec(&txn)
                .await?;
            job_run::Entity::update_many()
                .col_expr(job_run::Column::Total, Expr::value(n))
                .filter(job_run::Column::JobId.eq(child.id))
                .exec(&txn)
                .await?;
            crate::audit::record(
                &txn,
                crate::audit::AuditEntry {
                    tenant_id: parent.tenant_id,
                    actor_token_id: None,
                    action: "job.expiry_removal",
                    target_type: "job",
                    target_id: child.id.to_string(),
                    before: None,
                    after: Some(serde_json::json!({
                        "parent_job_id": parent.id,
                        "members": n,
                        "remove_licenses": remove,
                    })),
                },
            )
            .await?;
            children_created.push((parent.tenant_id, child.id));
        }
        // The parent's members: due no more, or again when a later temporary assign ends.
        for chunk in cleared.chunks(ITEMS_PER_STATEMENT) {
            job_item::Entity::update_many()
                .col_expr(
                    job_item::Column::DueAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(job_item::Column::JobId.eq(parent.id))
                .filter(job_item::Column::Id.is_in(chunk.to_vec()))
                .exec(&txn)
                .await?;
        }
        for (id, due_at, detail) in kept {
            job_item::Entity::update_many()
                .col_expr(job_item::Column::DueAt, Expr::value(due_at))
                .col_expr(job_item::Column::ErrorDetail, Expr::value(detail))
                .col_expr(job_item::Column::UpdatedAt, Expr::value(t))
                .filter(job_item::Column::JobId.eq(parent.id))
                .filter(job_item::Column::Id.eq(id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        created.extend(children_created);
    }
    // A skipped member's due time only ever extended an earlier assignment: once past, it
    // claims nothing more.
    job_item::Entity::update_many()
        .col_expr(
            job_item::Column::DueAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(job_item::Column::DueAt.lte(at))
        .filter(job_item::Column::Status.ne(ItemStatus::Succeeded.as_str()))
        .exec(db)
        .await?;
    Ok(created)
}

/// Queued or running jobs with no progress since `before` — their queue messages may be gone —
/// and cancelled jobs with members still pending (held by a worker that stopped).
pub async fn stalled(db: &Db, before: DateTime<Utc>) -> StoreResult<Vec<(Uuid, Uuid)>> {
    let unfinished = Expr::col(job::Column::Succeeded)
        .add(Expr::col(job::Column::Failed))
        .add(Expr::col(job::Column::Skipped))
        .lt(Expr::col(job::Column::Total));
    Ok(job::Entity::find()
        .select_only()
        .column(job::Column::TenantId)
        .column(job::Column::Id)
        .filter(
            job::Column::Status
                .is_in([JobStatus::Queued.as_str(), JobStatus::Running.as_str()])
                .or(job::Column::Status
                    .eq(JobStatus::Cancelled.as_str())
                    .and(unfinished)),
        )
        .filter(job::Column::UpdatedAt.lt(before))
        .order_by_asc(job::Column::UpdatedAt)
        .limit(1000)
        .into_tuple()
        .all(db)
        .await?)
}

/// Note that the reconciler queued the job again, so it is not picked up again at once, and
/// count it in the job's `requeues`.
pub async fn touch(db: &Db, job_id: Uuid) -> StoreResult<()> {
    job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(now()))
        .col_expr(
            job::Column::Requeues,
            Expr::col(job::Column::Requeues).add(1),
        )
        .filter(job::Column::Id.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}
