//! The canary: the first members of a job worked before the rest, the pause when too many fail, and
//! resuming a paused job.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;
use uuid::Uuid;

use super::finish::set_run_status;
use super::lease::claim;
use super::state::{OnJob, begin_action, check_resumable, commit_action};
use super::{JobView, now};
use crate::db::Db;
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item};
use crate::error::StoreResult;

/// Resume a paused job (operator): its canary counts as passed and the job runs on with the
/// rest of its members (and reads the rest of its groups, if it paused while reading them).
/// Any other status → 409 `not_paused`. The caller queues the job after this commits.
pub async fn resume(db: &Db, on: OnJob) -> StoreResult<JobView> {
    let (tenant_id, job_id, by) = (on.tenant_id, on.job_id, on.by);
    let (txn, job) = begin_action(db, tenant_id, job_id).await?;
    let status = job.status;
    check_resumable(&job)?;
    let now = Utc::now();
    super::state::transition(job_id, &[status], JobStatus::Running)?
        .col_expr(job::Column::CanaryPassedAt, Expr::value(now))
        .col_expr(job::Column::LastProgressAt, Expr::value(now))
        .exec(&txn)
        .await?;
    super::finish::set_run_status(&txn, job_id, job.runs, JobStatus::Running).await?;
    commit_action(
        txn,
        tenant_id,
        job_id,
        by,
        "job.resumed",
        Some(json!({"status": status.as_str(), "worked": job.succeeded + job.failed + job.skipped, "failed": job.failed})),
        json!({"status": "running"}),
    )
    .await
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
    only: super::lease::Pick,
) -> StoreResult<Vec<super::lease::Claimed>> {
    let t = now();
    let txn = crate::db::begin(db).await?;
    let Some((job, running)) = lock_if_running(&txn, job_id, t).await? else {
        return Ok(Vec::new());
    };
    if !running {
        return Ok(Vec::new());
    }
    let limit = if job.canary_passed_at.is_some() {
        limit
    } else {
        let held: i64 = job_item::Entity::find()
            .select_only()
            .column_as(job_item::Column::Id.count(), "n")
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Status.eq(ItemStatus::Pending))
            .filter(job_item::Column::LeaseOwner.is_not_null())
            .filter(job_item::Column::LeaseUntil.gte(t))
            .into_tuple::<i64>()
            .one(&txn)
            .await?
            .unwrap_or(0);
        let left = i64::from(canary.members) - written(&job) - held;
        if left <= 0 {
            txn.commit().await?;
            return Ok(Vec::new());
        }
        Ord::min(limit, left as u64)
    };
    let claimed = claim(&txn, job_id, owner, until, limit, only).await?;
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
    let Some((job, running)) = lock_if_running(&txn, job_id, t).await? else {
        return Ok(CanaryDecision::Undecided);
    };
    if job.canary_passed_at.is_some() {
        return Ok(CanaryDecision::PassedBefore);
    }
    if !running {
        return Ok(if job.status == JobStatus::Paused {
            CanaryDecision::Paused
        } else {
            CanaryDecision::Undecided
        });
    }
    let worked = written(&job);
    if job.expanded_at.is_some() && worked + job.skipped >= job.total {
        // Every member is worked: there is nothing left to hold back, so the job ends as it
        // stands rather than pausing (as a job smaller than its canary does).
        return Ok(CanaryDecision::Undecided);
    }
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
            super::state::transition(job_id, &[JobStatus::Running], JobStatus::Paused)?
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

/// The members of `job` the canary counts: those a write was decided for (succeeded or
/// failed). Members found already in the desired state are skipped without a write and say
/// nothing about whether the job's writes work, so they do not count.
fn written(job: &job::Model) -> i64 {
    job.succeeded + job.failed
}

/// Take job `job_id`'s row lock in `txn` (stamping `updated_at` with `t`) when it is running.
/// Returns the job and whether it is running; `None` when it is gone.
async fn lock_if_running(
    txn: &sea_orm::DatabaseTransaction,
    job_id: Uuid,
    t: DateTime<Utc>,
) -> StoreResult<Option<(job::Model, bool)>> {
    let running = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .exec(txn)
        .await?
        .rows_affected
        == 1;
    Ok(job::Entity::find_by_id(job_id)
        .one(txn)
        .await?
        .map(|job| (job, running)))
}
