//! Rerun: a failed, finished-with-exception or cancelled job is queued again, and only what is not
//! done is done again.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::JobView;
use super::SetNull;
use super::state::{OnJob, begin_action, check_rerunnable, commit_action};
use super::submit::insert_run;
use crate::db::Db;
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item};
use crate::error::StoreResult;

/// A job that was undone (or is being undone) is not run again: its rerun would make again the
/// changes its undo takes back — 409 `not_rerunnable`, naming the undo job. An undo that failed
/// or was cancelled does not count.
pub async fn check_not_undone<C: sea_orm::ConnectionTrait>(
    conn: &C,
    job: &job::Model,
) -> StoreResult<()> {
    match super::undo::standing_undo(conn, job.tenant_id, job.id).await? {
        None => Ok(()),
        Some(undo) => Err(crate::error::StoreError::conflict(
            "not_rerunnable",
            format!(
                "the job was undone by job {} ({}); rerunning it would make again the changes the undo takes back",
                undo.id, undo.status
            ),
        )),
    }
}

/// Rerun a `failed`, `finished_with_exception` or `cancelled` job: its failed items (and, when
/// the job itself failed, its unfinished ones; when it was cancelled, the members the cancel
/// skipped) go back to pending for a new run, to be read afresh from the directory before they
/// are decided; succeeded and skipped items are not touched. A job whose groups were not read
/// to the end reads them again (members already in the job are not added twice). The job is
/// queued again; the caller enqueues it after this commits.
pub async fn rerun(db: &Db, on: OnJob) -> StoreResult<JobView> {
    let (tenant_id, job_id, by) = (on.tenant_id, on.job_id, on.by);
    let (txn, job) = begin_action(db, tenant_id, job_id).await?;
    let status = job.status;
    check_rerunnable(&job)?;
    check_not_undone(&txn, &job).await?;
    let run_no = job.runs + 1;
    let now = Utc::now();
    // A cancelled run whose held members were not recorded yet ends here, with its counts as
    // they stand (nothing happens to a run that is closed already), and the job with it.
    if status == JobStatus::Cancelled {
        super::cancel::mark_ended(&txn, job_id, now).await?;
    }
    super::finish::close_run(&txn, &job, status, now).await?;
    let mut retried = job_item::Column::Status.eq(ItemStatus::Failed);
    if status == JobStatus::Failed {
        retried = retried.or(job_item::Column::Status.eq(ItemStatus::Pending));
    }
    if status == JobStatus::Cancelled {
        retried = retried.or(job_item::Column::Status.eq(ItemStatus::Pending));
        retried = retried.or(job_item::Column::Status
            .eq(ItemStatus::Skipped)
            .and(job_item::Column::ErrorCode.eq("cancelled")));
    }
    // A member still held by a step of the run that ended (its lease is live: its write may be
    // on its way) keeps its holder, who records what the directory answered — taking it away
    // now would let the cancel that may follow skip it as not done while it was written. The
    // step gives back what it did not send (`Outcome::NotSent`).
    let held = job_item::Column::Status
        .eq(ItemStatus::Pending)
        .and(super::lease::lease_live(now));
    // Each member the run takes: pending in the new run, its state to be read again (what it
    // holds may have changed since: the snapshot taken at expansion is not trusted).
    let for_the_run = || {
        job_item::Entity::update_many()
            .col_expr(job_item::Column::Status, Expr::value(ItemStatus::Pending))
            .set_null([
                job_item::Column::ErrorCode,
                job_item::Column::ErrorDetail,
                job_item::Column::Licenses,
            ])
            .col_expr(job_item::Column::RunNo, Expr::value(run_no))
            .col_expr(job_item::Column::Attempts, Expr::value(0))
            .col_expr(job_item::Column::TakenOver, Expr::value(false))
            .col_expr(job_item::Column::UpdatedAt, Expr::value(now))
            .filter(job_item::Column::JobId.eq(job_id))
    };
    let reset_held = if matches!(status, JobStatus::Failed | JobStatus::Cancelled) {
        for_the_run()
            .filter(held.clone())
            .exec(&txn)
            .await?
            .rows_affected as i64
    } else {
        0
    };
    let reset = super::lease::unleased(for_the_run())
        .filter(retried)
        .filter(held.not())
        .exec(&txn)
        .await?
        .rows_affected as i64
        + reset_held;
    let was_failed = job.failed;
    // The counters from the items as they are now.
    let counts = super::finish::RunCounts::of(&txn, job_id, None).await?;
    super::state::transition(job_id, &[status], JobStatus::Queued)?
        .col_expr(job::Column::Runs, Expr::value(run_no))
        .col_expr(job::Column::Total, Expr::value(counts.total))
        .col_expr(job::Column::Succeeded, Expr::value(counts.succeeded))
        .col_expr(job::Column::Skipped, Expr::value(counts.skipped))
        .col_expr(job::Column::Failed, Expr::value(counts.failed))
        .set_null([
            job::Column::ErrorCode,
            job::Column::ErrorDetail,
            job::Column::FinishedAt,
        ])
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .exec(&txn)
        .await?;
    insert_run(&txn, job_id, run_no, by, reset).await?;
    commit_action(
        txn,
        tenant_id,
        job_id,
        by,
        "job.rerun",
        Some(json!({"status": status.as_str(), "failed": was_failed, "run": job.runs})),
        json!({"status": "queued", "items": reset, "run": run_no}),
    )
    .await
}
