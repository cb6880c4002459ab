//! The reconciler's view: jobs that have made no progress for a while, and the mark that a job
//! moved.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::now;
use crate::db::Db;
use crate::domain::JobStatus;
use crate::entities::job;
use crate::error::StoreResult;

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
                .is_in([JobStatus::Queued, JobStatus::Running])
                .or(job::Column::Status.eq(JobStatus::Cancelled).and(unfinished))
                // A cancelled job whose run was not closed (its last members were recorded,
                // then the process stopped before it settled) is settled by the next step.
                .or(super::cancel::settling()),
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
