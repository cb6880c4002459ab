//! Cancel: a job stops taking work, members nobody holds are skipped as cancelled, and the
//! cancelled run is closed.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use super::SetNull;
use super::finish::{any_pending, close_run};
use super::launch::conn_delete_carried;
use super::lease::{lease_live, unleased};
use super::state::{OnJob, begin_action, check_cancellable, commit_action};
use super::{JobView, now};
use crate::db::Db;
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item, job_run};
use crate::error::StoreResult;

/// Cancel a queued or running job: members not being worked on right now are skipped with code
/// `cancelled`; those in flight finish and are recorded. Nothing new starts: expansion stops at
/// its next page and every lane at its next chunk, and no member is left pending.
///
/// The job is `cancelled` at once, but its `finished_at` stays empty until no member is pending
/// any more (members a worker holds, or members licensor may have written, which are read
/// before they are called anything): a cancelled job with `finished_at` set has its final
/// counts ([`close_cancelled_run`]).
pub async fn cancel(db: &Db, on: OnJob) -> StoreResult<JobView> {
    let (tenant_id, job_id, by) = (on.tenant_id, on.job_id, on.by);
    let (txn, job) = begin_action(db, tenant_id, job_id).await?;
    let status = job.status;
    check_cancellable(&job)?;
    let now = Utc::now();
    super::state::transition(job_id, &[status], JobStatus::Cancelled)?
        .set_null([job::Column::FinishedAt])
        .exec(&txn)
        .await?;
    // Members a worker holds right now are recorded by it; the rest are skipped now. Expansion
    // and the lanes see the status before their next page or chunk.
    let skipped = super::cancel::skip_unheld(&txn, job_id, now).await?;
    // A stale preview cancelled while its groups were read again keeps no predictions aside.
    conn_delete_carried(&txn, job_id).await?;
    // With no member held, the run ends now: its counts are final and its webhook deliveries
    // commit with it (the caller queues them). Otherwise the worker holding members records
    // them and then closes the run (`super::cancel::settle_cancelled`), so the run's counts and the
    // `job.cancelled` event tell every member's outcome.
    if status == JobStatus::Previewed {
        // The preview's run ended when its members were predicted; cancelled, it ends again as
        // cancelled, with its members' outcomes.
        super::finish::run_update(job_id, job.runs)
            .set_null([job_run::Column::FinishedAt])
            .exec(&txn)
            .await?;
    }
    let run_status = Expr::value(JobStatus::Cancelled);
    if !super::cancel::close_cancelled_run(&txn, job_id, now).await? {
        super::finish::run_update(job_id, job.runs)
            .col_expr(job_run::Column::Status, run_status)
            .filter(job_run::Column::FinishedAt.is_null())
            .exec(&txn)
            .await?;
    }
    let view = commit_action(
        txn,
        tenant_id,
        job_id,
        by,
        "job.cancelled",
        Some(json!({"status": status.as_str()})),
        json!({"status": "cancelled", "skipped": skipped}),
    )
    .await?;
    super::finish::count_completed(view.kind, JobStatus::Cancelled);
    Ok(view)
}

/// Skip, with code `cancelled`, the job's pending items that no worker holds and that licensor
/// cannot have written, and move the job's counters with them. Items held by a worker are
/// recorded by that worker; items licensor may have written without recording the answer (a
/// lost answer, a holder that stopped mid-step: [`super::lease::may_have_been_written`]) are
/// left pending for a worker to read first ([`super::work::settle_unanswered`]) — "cancelled
/// before this member was worked on" is said only of members that were not. Returns how many
/// were skipped.
pub async fn skip_unheld<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    t: DateTime<Utc>,
) -> StoreResult<i64> {
    let skipped = unleased(job_item::Entity::update_many())
        .col_expr(job_item::Column::Status, Expr::value(ItemStatus::Skipped))
        .col_expr(job_item::Column::ErrorCode, Expr::value("cancelled"))
        .col_expr(
            job_item::Column::ErrorDetail,
            Expr::value(super::codes::explanation("cancelled")),
        )
        .col_expr(job_item::Column::UpdatedAt, Expr::value(t))
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Status.eq(ItemStatus::Pending))
        .filter(lease_live(t).not())
        .filter(super::lease::may_have_been_written().not())
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
/// counts are then final, the job's `finished_at` is set, and its `job.cancelled` event fires
/// (once). While a worker still holds members, or members are left to be read, they are
/// recorded first and the run stays open (`finished_at` empty). Returns whether this call
/// closed the run.
pub(crate) async fn close_cancelled_run<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    t: DateTime<Utc>,
) -> StoreResult<bool> {
    if any_pending(conn, job_id).await? {
        return Ok(false);
    }
    let Some(job) = job::Entity::find_by_id(job_id)
        .filter(job::Column::Status.eq(JobStatus::Cancelled))
        .one(conn)
        .await?
    else {
        return Ok(false);
    };
    mark_ended(conn, job_id, t).await?;
    close_run(conn, &job, JobStatus::Cancelled, t).await
}

/// Jobs cancelled whose members are still being settled: `finished_at` is set only once none
/// is pending ([`close_cancelled_run`]).
pub(crate) fn settling() -> sea_orm::sea_query::SimpleExpr {
    job::Column::Status
        .eq(JobStatus::Cancelled)
        .and(job::Column::FinishedAt.is_null())
}

/// Set a cancelled job's `finished_at` to `t` as its run closes (unless set already), so the
/// run's `job.cancelled` event and every later view tell when it ended.
pub(crate) async fn mark_ended<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    t: DateTime<Utc>,
) -> StoreResult<()> {
    job::Entity::update_many()
        .col_expr(job::Column::FinishedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::FinishedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// A cancelled job's members left pending (a lane that stopped, a lease that ran out): skip
/// them as cancelled, and close the cancelled run when nothing is pending any more.
pub async fn settle_cancelled(db: &Db, job_id: Uuid) -> StoreResult<Settled> {
    let txn = crate::db::begin(db).await?;
    let still_cancelled = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(now()))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Cancelled))
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
