//! What a job did minute by minute, and whether it is stuck.
//!
//! `job_activity` holds one row per job and UTC minute: members that reached each outcome and
//! the 429 answers the job's workers met, added with each recorded chunk in the chunk's own
//! transaction (see [`super::outcome::record`]). The Job Monitor draws its charts from it
//! (`GET /v1/jobs/{id}/activity`).
//!
//! A running job is *stuck* when no worker has moved it (started it, stored a page of members,
//! recorded a chunk: `jobs.last_progress_at`) for `jobs.stuck_after_secs`.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use crate::db::Db;
use crate::domain::JobStatus;
use crate::entities::{job, job_activity, tenant};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

/// Counts to add to a job's minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    /// 429 answers met.
    pub throttled: i64,
}

impl Counts {
    fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// The minute (UTC, seconds cut off) `t` falls in.
pub fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// Add `counts` to the job's row for the minute of `at` (created at zero if missing): one
/// upsert, on the caller's connection or transaction. The row takes its tenant from the job.
pub async fn add<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    at: DateTime<Utc>,
    counts: Counts,
) -> StoreResult<()> {
    if let Some(upsert) = upsert(conn.get_database_backend(), job_id, at, counts)? {
        conn.execute_raw(upsert).await?;
    }
    Ok(())
}

/// The statement of [`add`], for `backend`, to be run with others
/// ([`crate::db::execute_together`]); `None` when `counts` are all zero.
pub fn upsert(
    backend: sea_orm::DbBackend,
    job_id: Uuid,
    at: DateTime<Utc>,
    counts: Counts,
) -> StoreResult<Option<sea_orm::Statement>> {
    if counts.is_empty() {
        return Ok(None);
    }
    use job_activity::Column as A;
    let minute = minute_of(at);
    let sum = |col: A| {
        (
            col,
            Expr::col((job_activity::Entity, col)).add(Expr::col((Alias::new("excluded"), col))),
        )
    };
    let mut insert = Query::insert();
    insert
        .into_table(job_activity::Entity)
        .columns([
            A::JobId,
            A::Minute,
            A::TenantId,
            A::Succeeded,
            A::Failed,
            A::Skipped,
            A::Throttled,
        ])
        .select_from(
            Query::select()
                .column(job::Column::Id)
                .expr(Expr::value(minute))
                .column(job::Column::TenantId)
                .expr(Expr::value(counts.succeeded))
                .expr(Expr::value(counts.failed))
                .expr(Expr::value(counts.skipped))
                .expr(Expr::value(counts.throttled))
                .from(job::Entity)
                .and_where(job::Column::Id.eq(job_id))
                .to_owned(),
        )
        .map_err(StoreError::internal)?
        .on_conflict(
            OnConflict::columns([A::JobId, A::Minute])
                .values([
                    sum(A::Succeeded),
                    sum(A::Failed),
                    sum(A::Skipped),
                    sum(A::Throttled),
                ])
                .to_owned(),
        );
    Ok(Some(backend.build(&insert)))
}

/// One minute of a job's life.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityMinute {
    /// The minute's start (UTC).
    pub minute: DateTime<Utc>,
    /// Members that reached each outcome in that minute.
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    /// 429 answers (throttled requests) the job's workers met in that minute.
    pub throttled: i64,
}

/// The job's minutes with activity, oldest first (minutes with none are absent). The job must
/// be the tenant's (else [`StoreError::NotFound`]); the cursor key is the minute in seconds
/// since 1970.
pub async fn series(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    page: &PageRequest<i64>,
) -> StoreResult<Page<ActivityMinute>> {
    super::model(db, tenant_id, job_id).await?;
    let mut q = job_activity::Entity::find()
        .filter(job_activity::Column::TenantId.eq(tenant_id))
        .filter(job_activity::Column::JobId.eq(job_id));
    if let Some(after) = page.after {
        let after = DateTime::<Utc>::from_timestamp(after, 0)
            .ok_or(StoreError::Invalid("activity cursor out of range".into()))?;
        q = q.filter(job_activity::Column::Minute.gt(after));
    }
    let rows = q
        .order_by_asc(job_activity::Column::Minute)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.minute.timestamp());
    Ok(page.map(|r| ActivityMinute {
        minute: r.minute,
        succeeded: r.succeeded,
        failed: r.failed,
        skipped: r.skipped,
        throttled: r.throttled,
    }))
}

/// Since when a job is stuck, given its status and last progress: `Some` for a running job
/// whose last progress is more than `stuck_after` ago (the moment it became stuck: last
/// progress + `stuck_after`), `None` otherwise.
pub fn stuck_since(
    status: JobStatus,
    last_progress_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    stuck_after: std::time::Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if status != JobStatus::Running {
        return None;
    }
    let since = last_progress_at.or(started_at)? + TimeDelta::from_std(stuck_after).ok()?;
    (since <= now).then_some(since)
}

/// For every tenant, how many of its running jobs are stuck (no progress since `before`):
/// tenants without one read 0, so a gauge per tenant drops back when its jobs move again.
pub async fn stuck_by_tenant(db: &Db, before: DateTime<Utc>) -> StoreResult<Vec<(Uuid, i64)>> {
    let tenants: Vec<Uuid> = tenant::Entity::find()
        .select_only()
        .column(tenant::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let stuck: Vec<(Uuid, i64)> = job::Entity::find()
        .select_only()
        .column(job::Column::TenantId)
        .column_as(job::Column::Id.count(), "n")
        .filter(job::Column::Status.eq(JobStatus::Running))
        .filter(
            job::Column::LastProgressAt
                .lt(before)
                .or(job::Column::LastProgressAt
                    .is_null()
                    .and(job::Column::StartedAt.lt(before))),
        )
        .group_by(job::Column::TenantId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(tenants
        .into_iter()
        .map(|t| {
            let n = stuck.iter().find(|(id, _)| *id == t).map_or(0, |(_, n)| *n);
            (t, n)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_job_is_stuck_after_the_setting() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let after = std::time::Duration::from_secs(600);
        let at = |secs| t0 + TimeDelta::seconds(secs);
        assert_eq!(
            stuck_since(JobStatus::Running, Some(t0), None, after, at(599)),
            None
        );
        assert_eq!(
            stuck_since(JobStatus::Running, Some(t0), None, after, at(600)),
            Some(at(600))
        );
        // Without a recorded progress, from the start.
        assert_eq!(
            stuck_since(JobStatus::Running, None, Some(t0), after, at(700)),
            Some(at(600))
        );
        // Only running jobs.
        for status in [JobStatus::Queued, JobStatus::Finished, JobStatus::Failed] {
            assert_eq!(stuck_since(status, Some(t0), None, after, at(9999)), None);
        }
        assert_eq!(minute_of(at(61)), at(60));
    }
}
