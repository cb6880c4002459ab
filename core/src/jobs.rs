//! Job rows: creation, tenant-scoped reads and listing. Every function takes the tenant id.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::Db;
use crate::domain::{JobKind, JobStatus};
use crate::entities::job;
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub pending: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: JobKind,
    pub status: JobStatus,
    pub request: Value,
    pub progress: Progress,
    pub runs: i32,
    pub created_by: Option<Uuid>,
    pub parent_job_id: Option<Uuid>,
    pub created_at: chrono::DateTime<Utc>,
    pub started_at: Option<chrono::DateTime<Utc>>,
    pub finished_at: Option<chrono::DateTime<Utc>>,
    pub error: Option<JobError>,
}

impl TryFrom<job::Model> for JobView {
    type Error = StoreError;
    fn try_from(m: job::Model) -> Result<Self, Self::Error> {
        let kind = m.kind.parse().map_err(StoreError::Invalid)?;
        let status = m.status.parse().map_err(StoreError::Invalid)?;
        let done = m.succeeded + m.failed + m.skipped;
        Ok(JobView {
            id: m.id,
            kind,
            status,
            request: m.request,
            progress: Progress {
                total: m.total,
                succeeded: m.succeeded,
                failed: m.failed,
                skipped: m.skipped,
                pending: (m.total - done).max(0),
            },
            runs: m.runs,
            created_by: m.created_by,
            parent_job_id: m.parent_job_id,
            created_at: m.created_at,
            started_at: m.started_at,
            finished_at: m.finished_at,
            error: m.error_code.map(|code| JobError {
                code,
                detail: m.error_detail,
            }),
        })
    }
}

/// A job to create, already validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant_id: Uuid,
    pub kind: JobKind,
    pub request: Value,
    pub created_by: Option<Uuid>,
    pub parent_job_id: Option<Uuid>,
}

/// Insert a `queued` job on `conn` (a transaction when the caller records more with it).
pub async fn insert<C: ConnectionTrait>(conn: &C, new: NewJob) -> StoreResult<job::Model> {
    let now = Utc::now();
    Ok(job::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(new.tenant_id),
        kind: Set(new.kind.as_str().to_owned()),
        status: Set(JobStatus::Queued.as_str().to_owned()),
        request: Set(new.request),
        total: Set(0),
        succeeded: Set(0),
        failed: Set(0),
        skipped: Set(0),
        runs: Set(1),
        created_by: Set(new.created_by),
        parent_job_id: Set(new.parent_job_id),
        error_code: Set(None),
        error_detail: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(now),
    }
    .insert(conn)
    .await?)
}

/// One of the tenant's jobs; another tenant's job is "not found".
pub async fn get(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<JobView> {
    job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("job"))?
        .try_into()
}

#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub status: Vec<JobStatus>,
    pub kind: Vec<JobKind>,
}

/// The tenant's jobs, newest first.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &JobFilter,
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<JobView>> {
    let mut q = job::Entity::find().filter(job::Column::TenantId.eq(tenant_id));
    if !filter.status.is_empty() {
        q = q.filter(job::Column::Status.is_in(filter.status.iter().map(|s| s.as_str())));
    }
    if !filter.kind.is_empty() {
        q = q.filter(job::Column::Kind.is_in(filter.kind.iter().map(|k| k.as_str())));
    }
    if let Some(after) = page.after {
        q = q.filter(job::Column::Id.lt(after));
    }
    let rows = q
        .order_by_desc(job::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.id);
    Ok(Page {
        data: page
            .data
            .into_iter()
            .map(JobView::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    })
}

/// Number of jobs per status across all tenants, for metrics.
pub async fn count_by_status(db: &Db) -> StoreResult<Vec<(String, String, i64)>> {
    let rows: Vec<(String, String, i64)> = job::Entity::find()
        .select_only()
        .column(job::Column::Kind)
        .column(job::Column::Status)
        .column_as(job::Column::Id.count(), "n")
        .group_by(job::Column::Kind)
        .group_by(job::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows)
}
