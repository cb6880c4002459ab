//! Finishing: a job's status and counters, a run closed with its counts, a job finished when
//! nothing is pending, or failed as a whole.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::SetNull;
use super::now;
use crate::db::Db;
use crate::domain::{ItemStatus, JobKind, JobStatus};
use crate::entities::{job, job_item, job_run};
use crate::error::StoreResult;

/// The update of run `run_no` of job `job_id` (its row in `job_runs`), for the caller to say
/// what changes.
pub(crate) fn run_update(job_id: Uuid, run_no: i32) -> sea_orm::UpdateMany<job_run::Entity> {
    job_run::Entity::update_many()
        .filter(job_run::Column::JobId.eq(job_id))
        .filter(job_run::Column::RunNo.eq(run_no))
}

/// Set the status of run `run_no` of the job (its history row) while the run is not over, with
/// its members' outcomes so far.
pub(crate) async fn set_run_status<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    run_no: i32,
    status: JobStatus,
) -> StoreResult<()> {
    let c = RunCounts::of(db, job_id, Some(run_no)).await?;
    run_update(job_id, run_no)
        .col_expr(job_run::Column::Status, Expr::value(status))
        .col_expr(job_run::Column::Total, Expr::value(c.total))
        .col_expr(job_run::Column::Succeeded, Expr::value(c.succeeded))
        .col_expr(job_run::Column::Failed, Expr::value(c.failed))
        .col_expr(job_run::Column::Skipped, Expr::value(c.skipped))
        .filter(job_run::Column::FinishedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// The job's status as stored now (`None` when it is gone).
pub async fn status<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<Option<JobStatus>> {
    Ok(job::Entity::find_by_id(job_id)
        .select_only()
        .column(job::Column::Status)
        .into_tuple()
        .one(db)
        .await?)
}

/// The status of each of `job_ids` that exists, in one statement per 1,000 ids.
pub async fn statuses<C: ConnectionTrait>(
    db: &C,
    job_ids: &[Uuid],
) -> StoreResult<std::collections::HashMap<Uuid, JobStatus>> {
    let mut found = std::collections::HashMap::with_capacity(job_ids.len());
    for ids in job_ids.chunks(1000) {
        let rows: Vec<(Uuid, JobStatus)> = job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .column(job::Column::Status)
            .filter(job::Column::Id.is_in(ids.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// The job's status and whether any of its items is still pending, in one statement (`None`:
/// the job is gone) — what a step asks after it recorded a chunk: stop (cancelled, paused),
/// go on (members pending), or see whether the job is done ([`finish_if_done`]).
pub async fn status_and_pending<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
) -> StoreResult<Option<(JobStatus, bool)>> {
    Ok(job::Entity::find_by_id(job_id)
        .select_only()
        .column(job::Column::Status)
        .expr(Expr::exists(pending_item_of(Expr::col((
            job::Entity,
            job::Column::Id,
        )))))
        .into_tuple()
        .one(db)
        .await?)
}

/// One pending item of the job `job` names (an id, or the outer query's `jobs.id`), if any:
/// the probe of [`any_pending`] and [`status_and_pending`].
fn pending_item_of(job: Expr) -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .column((job_item::Entity, job_item::Column::Id))
        .from(job_item::Entity)
        .and_where(Expr::col((job_item::Entity, job_item::Column::JobId)).eq(job))
        .and_where(job_item::Column::Status.eq(ItemStatus::Pending))
        .limit(1)
        .to_owned()
}

/// Whether any item of the job is still pending (one index probe).
pub async fn any_pending<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<bool> {
    Ok(db
        .query_one(&pending_item_of(Expr::val(job_id)))
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
        .filter(job_item::Column::Status.eq(ItemStatus::Pending))
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
///
/// Most calls come after a chunk while members are still pending: those cost one index probe,
/// not a read of the job's row. Only a job whose groups were all read when its row was read,
/// and with nothing pending after that, is finished (members stored between the first probe
/// and the read of the row are found by the second).
pub async fn finish_if_done(db: &Db, job_id: Uuid) -> StoreResult<Option<JobStatus>> {
    if any_pending(db, job_id).await? {
        return Ok(None);
    }
    let Some(job) = job::Entity::find_by_id(job_id).one(db).await? else {
        return Ok(None);
    };
    if job.status != JobStatus::Running || job.expanded_at.is_none() {
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
    let detail = code.map(|_| format!("all {} members failed", job.failed));
    let done = end(job_id, &[JobStatus::Running], status, code, detail, t)?
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
pub(crate) struct RunCounts {
    pub(crate) total: i64,
    pub(crate) succeeded: i64,
    pub(crate) failed: i64,
    pub(crate) skipped: i64,
}

impl RunCounts {
    /// The counts of the job's items as they are now: of run `run_no`, or of all its runs.
    pub(crate) async fn of<C: ConnectionTrait>(
        conn: &C,
        job_id: Uuid,
        run_no: Option<i32>,
    ) -> StoreResult<Self> {
        let mut query = job_item::Entity::find()
            .select_only()
            .column(job_item::Column::Status)
            .column_as(job_item::Column::Id.count(), "n")
            .filter(job_item::Column::JobId.eq(job_id));
        if let Some(run_no) = run_no {
            query = query.filter(job_item::Column::RunNo.eq(run_no));
        }
        let counts: Vec<(ItemStatus, i64)> = query
            .group_by(job_item::Column::Status)
            .into_tuple()
            .all(conn)
            .await?;
        let count = |s: ItemStatus| {
            counts
                .iter()
                .find(|(st, _)| *st == s)
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
    let c = RunCounts::of(conn, job.id, Some(job.runs)).await?;
    let closed = run_update(job.id, job.runs)
        .col_expr(job_run::Column::Status, Expr::value(status))
        .col_expr(job_run::Column::Total, Expr::value(c.total))
        .col_expr(job_run::Column::Succeeded, Expr::value(c.succeeded))
        .col_expr(job_run::Column::Failed, Expr::value(c.failed))
        .col_expr(job_run::Column::Skipped, Expr::value(c.skipped))
        .col_expr(job_run::Column::FinishedAt, Expr::value(t))
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
/// The update that ends job `job_id` (in one of `from`) as `to` at `t`, with its error `code`
/// and `detail` (`None` clears them); the caller runs it and reads whether it applied.
fn end(
    job_id: Uuid,
    from: &[JobStatus],
    to: JobStatus,
    code: Option<&str>,
    detail: Option<String>,
    t: DateTime<Utc>,
) -> StoreResult<sea_orm::UpdateMany<job::Entity>> {
    Ok(super::state::transition(job_id, from, to)?
        .col_expr(job::Column::ErrorCode, Expr::value(code))
        .col_expr(job::Column::ErrorDetail, Expr::value(detail))
        .col_expr(job::Column::FinishedAt, Expr::value(t))
        .col_expr(job::Column::UpdatedAt, Expr::value(t)))
}

/// `failed` with `code` and `detail`; its unfinished items stay pending for a rerun.
pub async fn fail(db: &Db, job_id: Uuid, code: &str, detail: &str) -> StoreResult<bool> {
    let t = now();
    let txn = crate::db::begin(db).await?;
    let done = end(
        job_id,
        &[JobStatus::Queued, JobStatus::Running],
        JobStatus::Failed,
        Some(code),
        Some(detail.to_owned()),
        t,
    )?
    .exec(&txn)
    .await?
    .rows_affected;
    if done == 1 {
        job_item::Entity::update_many()
            .set_null([job_item::Column::LeaseOwner, job_item::Column::LeaseUntil])
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Status.eq(ItemStatus::Pending))
            .exec(&txn)
            .await?;
        if let Some(job) = job::Entity::find_by_id(job_id).one(&txn).await? {
            close_run(&txn, &job, JobStatus::Failed, t).await?;
        }
    }
    txn.commit().await?;
    Ok(done == 1)
}

/// Count a job that reached an end (`finished`, `finished_with_exception`, `failed`,
/// `cancelled`) or a preview that ended `previewed`, in `licensor_jobs_completed_total{kind,
/// status}` — the one place that counter is written.
pub fn count_completed(kind: JobKind, status: JobStatus) {
    metrics::counter!("licensor_jobs_completed_total", "kind" => kind.as_str(), "status" => status.as_str())
        .increment(1);
}
