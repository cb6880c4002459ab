//! Group license jobs: creation, tenant-scoped reads, items, runs, rerun and cancel. Every
//! function that serves an API caller takes the tenant id; another tenant's job is "not found".
//!
//! The worker side — expansion, claiming and completing items, finalising — is in [`pipeline`].

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::db::Db;
use crate::directory::AssignedLicense;
use crate::domain::{ItemStatus, JobKind, JobStatus};
use crate::entities::{api_token, job, job_item, job_run};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

pub mod activity;
pub mod codes;
pub mod deliver;
pub mod export;
pub mod files;
pub mod history;
pub mod pipeline;
pub mod plan;
pub mod preview;
pub mod processes;
pub mod request;

pub use request::{Canary, ExpiresIn, ExpiryUnit, FileFormat, JobRequest, LicenseToAdd};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub pending: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: String,
    pub detail: Option<String>,
}

/// A selected group, with its name once the job has read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupRef {
    pub id: String,
    pub display_name: Option<String>,
}

/// A SKU's id and part number, as the job read them from the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkuRef {
    pub sku_id: Uuid,
    pub sku_part_number: String,
}

/// What a job learnt from the directory while it ran (`jobs.result`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFacts {
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    #[serde(default)]
    pub skus: Vec<SkuRef>,
    /// Export jobs: names the file needs, when it was produced and where it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<export::ExportFacts>,
    /// Previews: the summary of the members' predicted outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<preview::PreviewSummary>,
}

impl JobFacts {
    pub fn of(m: &job::Model) -> JobFacts {
        m.result
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: JobKind,
    pub status: JobStatus,
    /// The selected groups' members are still being read: `progress.total` counts the members
    /// read so far, and more will come (the job is not near its end however many are done).
    pub expanding: bool,
    #[schema(value_type = Object)]
    pub request: Value,
    pub progress: Progress,
    /// Number of runs (1 + reruns).
    pub runs: i32,
    /// The API token that submitted the job (`None` for licensor's own jobs, e.g. expiries).
    pub created_by: Option<Uuid>,
    pub created_by_name: Option<String>,
    /// For a removal created by an expiry: the job that made the temporary assignment; for an
    /// undo job: the job it undoes.
    pub parent_job_id: Option<Uuid>,
    pub groups: Vec<GroupRef>,
    pub created_at: chrono::DateTime<Utc>,
    pub started_at: Option<chrono::DateTime<Utc>>,
    /// When every member of the selected groups had been read (members are worked while the
    /// groups are still being read).
    pub expanded_at: Option<chrono::DateTime<Utc>>,
    pub finished_at: Option<chrono::DateTime<Utc>>,
    pub error: Option<JobError>,
    /// Export jobs: where the file went (URL or bucket key), its size and row count, once
    /// delivered.
    pub export: Option<export::Delivery>,
    /// When a worker last moved the job: started it, stored a page of members or recorded a
    /// chunk of outcomes.
    pub last_progress_at: Option<chrono::DateTime<Utc>>,
    /// The job is running but no worker has moved it for `jobs.stuck_after_secs` (default
    /// 600 s): its workers may be gone and the reconciler off or failing. Clears by itself when
    /// the job moves again.
    pub stuck: bool,
    /// When it became stuck (`last_progress_at` + `jobs.stuck_after_secs`); `null` unless
    /// `stuck`.
    pub stuck_since: Option<chrono::DateTime<Utc>>,
    /// How many times the reconciler queued the job again after it made no progress for
    /// `jobs.stall_secs`.
    pub requeues: i32,
    /// A preview (`"preview": true`, also once launched): members, seat math per SKU, usage
    /// locations, licenses held only through a group, members already done, predicted
    /// failures by code and the licenses the members hold. `null` until the preview is done.
    pub preview: Option<preview::PreviewSummary>,
    /// With a canary (`request.canary`): when it passed — its first members failed no more
    /// often than the bound, or the paused job was resumed. `null` while undecided; a job whose
    /// canary failed is `paused`.
    pub canary_passed_at: Option<chrono::DateTime<Utc>>,
}

impl JobView {
    /// Set `stuck` and `stuck_since` as of `now`, for `stuck_after` (`jobs.stuck_after_secs`).
    pub fn flag_stuck(
        mut self,
        stuck_after: std::time::Duration,
        now: chrono::DateTime<Utc>,
    ) -> Self {
        self.stuck_since = activity::stuck_since(
            self.status,
            self.last_progress_at,
            self.started_at,
            stuck_after,
            now,
        );
        self.stuck = self.stuck_since.is_some();
        self
    }
}

impl JobView {
    fn build(m: job::Model, created_by_name: Option<String>) -> StoreResult<JobView> {
        let kind = m.kind.parse().map_err(StoreError::Invalid)?;
        let status = m.status.parse().map_err(StoreError::Invalid)?;
        let done = m.succeeded + m.failed + m.skipped;
        let facts = JobFacts::of(&m);
        let groups = match m.request.get("groups").and_then(Value::as_array) {
            Some(ids) => ids
                .iter()
                .filter_map(Value::as_str)
                .map(|id| GroupRef {
                    id: id.to_owned(),
                    display_name: facts
                        .groups
                        .iter()
                        .find(|g| g.id == id)
                        .and_then(|g| g.display_name.clone()),
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(JobView {
            id: m.id,
            kind,
            status,
            expanding: m.expanded_at.is_none()
                && matches!(status, JobStatus::Queued | JobStatus::Running),
            request: m.request,
            progress: Progress {
                total: m.total,
                succeeded: m.succeeded,
                failed: m.failed,
                skipped: m.skipped,
                pending: Ord::max(m.total - done, 0),
            },
            runs: m.runs,
            created_by: m.created_by,
            created_by_name,
            parent_job_id: m.parent_job_id,
            groups,
            created_at: m.created_at,
            started_at: m.started_at,
            expanded_at: m.expanded_at,
            finished_at: m.finished_at,
            export: facts.export.clone().and_then(|e| e.delivery),
            preview: facts.preview.clone(),
            last_progress_at: m.last_progress_at,
            stuck: false,
            stuck_since: None,
            requeues: m.requeues,
            canary_passed_at: m.canary_passed_at,
            error: m.error_code.map(|code| JobError {
                code,
                detail: m.error_detail,
            }),
        })
    }
}

/// Views of `models`, with the names of the tokens that created them (one query).
pub async fn views<C: ConnectionTrait>(
    conn: &C,
    models: Vec<job::Model>,
) -> StoreResult<Vec<JobView>> {
    let ids: Vec<Uuid> = models.iter().filter_map(|m| m.created_by).collect();
    let names: HashMap<Uuid, String> = if ids.is_empty() {
        HashMap::new()
    } else {
        api_token::Entity::find()
            .select_only()
            .column(api_token::Column::Id)
            .column(api_token::Column::Name)
            .filter(api_token::Column::Id.is_in(ids))
            .into_tuple::<(Uuid, String)>()
            .all(conn)
            .await?
            .into_iter()
            .collect()
    };
    models
        .into_iter()
        .map(|m| {
            let name = m.created_by.and_then(|id| names.get(&id).cloned());
            JobView::build(m, name)
        })
        .collect()
}

async fn view<C: ConnectionTrait>(conn: &C, m: job::Model) -> StoreResult<JobView> {
    Ok(views(conn, vec![m]).await?.remove(0))
}

/// A job to create, already validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant_id: Uuid,
    pub request: JobRequest,
    pub created_by: Option<Uuid>,
    pub parent_job_id: Option<Uuid>,
}

/// Insert a `queued` job and its first run on `conn` (a transaction when the caller records
/// more with it).
pub async fn insert<C: ConnectionTrait>(conn: &C, new: NewJob) -> StoreResult<job::Model> {
    let now = Utc::now();
    let request =
        serde_json::to_value(&new.request).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let job = job::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(new.tenant_id),
        kind: Set(new.request.kind.as_str().to_owned()),
        status: Set(JobStatus::Queued.as_str().to_owned()),
        request: Set(request),
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
        expanded_at: Set(None),
        result: Set(None),
        expand_position: Set(None),
        expand_owner: Set(None),
        expand_until: Set(None),
        last_progress_at: Set(None),
        requeues: Set(0),
        canary_passed_at: Set(None),
    }
    .insert(conn)
    .await?;
    insert_run(conn, job.id, 1, new.created_by, 0).await?;
    Ok(job)
}

async fn insert_run<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    run_no: i32,
    started_by: Option<Uuid>,
    total: i64,
) -> StoreResult<()> {
    job_run::ActiveModel {
        job_id: Set(job_id),
        run_no: Set(run_no),
        started_by: Set(started_by),
        status: Set(JobStatus::Queued.as_str().to_owned()),
        total: Set(total),
        succeeded: Set(0),
        failed: Set(0),
        skipped: Set(0),
        started_at: Set(Utc::now()),
        finished_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Create a job for an API caller, with its audit entry, in one transaction.
pub async fn create(db: &Db, new: NewJob) -> StoreResult<JobView> {
    let txn = crate::db::begin(db).await?;
    let tenant_id = new.tenant_id;
    let actor = new.created_by;
    let job = insert(&txn, new).await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "job.submitted",
            target_type: "job",
            target_id: job.id.to_string(),
            before: None,
            after: Some(json!({"kind": job.kind, "request": job.request})),
        },
    )
    .await?;
    let view = view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// The tenant's job row.
pub async fn model<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    job_id: Uuid,
) -> StoreResult<job::Model> {
    job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or(StoreError::NotFound("job"))
}

/// One of the tenant's jobs.
pub async fn get(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<JobView> {
    view(db, model(db, tenant_id, job_id).await?).await
}

/// Which of a tenant's jobs a list, a count or a bulk action covers; empty fields match all.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub status: Vec<JobStatus>,
    pub kind: Vec<JobKind>,
    /// Jobs that selected this group (its object id, lower-case hyphenated as jobs store it).
    pub group: Option<Uuid>,
    /// Jobs created strictly before / at or after these instants.
    pub created_before: Option<chrono::DateTime<Utc>>,
    pub created_after: Option<chrono::DateTime<Utc>>,
    /// Jobs whose id lies in this inclusive range (a job id prefix, see [`id_prefix_range`]).
    pub id_range: Option<(Uuid, Uuid)>,
}

/// The inclusive range of ids that start with `prefix`: 4 to 32 hexadecimal digits, hyphens
/// ignored (`0193a1b2`, or a whole id). `None` when it is not such a prefix.
pub fn id_prefix_range(prefix: &str) -> Option<(Uuid, Uuid)> {
    let hex: String = prefix.chars().filter(|c| *c != '-').collect();
    if !(4..=32).contains(&hex.len()) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let pad = |fill: char| {
        let mut s = hex.to_ascii_lowercase();
        while s.len() < 32 {
            s.push(fill);
        }
        Uuid::try_parse(&s).ok()
    };
    Some((pad('0')?, pad('f')?))
}

impl JobFilter {
    /// The tenant's jobs that match, as a query.
    fn query(&self, tenant_id: Uuid) -> sea_orm::Select<job::Entity> {
        let mut q = job::Entity::find().filter(job::Column::TenantId.eq(tenant_id));
        if !self.status.is_empty() {
            q = q.filter(job::Column::Status.is_in(self.status.iter().map(|s| s.as_str())));
        }
        if !self.kind.is_empty() {
            q = q.filter(job::Column::Kind.is_in(self.kind.iter().map(|k| k.as_str())));
        }
        if let Some(group) = self.group {
            // Jobs store their groups' ids normalised (lower-case, hyphenated) in `request`;
            // an id in quotes cannot match anything but a whole group id.
            q = q.filter(
                Expr::cust("CAST(\"jobs\".\"request\" AS TEXT)")
                    .like(format!("%\"{}\"%", group.hyphenated())),
            );
        }
        if let Some(before) = self.created_before {
            q = q.filter(job::Column::CreatedAt.lt(before));
        }
        if let Some(after) = self.created_after {
            q = q.filter(job::Column::CreatedAt.gte(after));
        }
        if let Some((lo, hi)) = self.id_range {
            q = q
                .filter(job::Column::Id.gte(lo))
                .filter(job::Column::Id.lte(hi));
        }
        q
    }
}

/// The tenant's jobs, newest first.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &JobFilter,
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<JobView>> {
    let mut q = filter.query(tenant_id);
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
        data: views(db, page.data).await?,
        next_cursor: page.next_cursor,
    })
}

/// How many of the tenant's jobs match `filter`.
pub async fn count(db: &Db, tenant_id: Uuid, filter: &JobFilter) -> StoreResult<i64> {
    Ok(filter
        .query(tenant_id)
        .select_only()
        .column_as(job::Column::Id.count(), "n")
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0))
}

/// Ids and statuses of the tenant's jobs that match `filter`, newest first, older than `after`
/// when given, at most `limit`: the batches a bulk action works through.
pub async fn matching(
    db: &Db,
    tenant_id: Uuid,
    filter: &JobFilter,
    after: Option<Uuid>,
    limit: u64,
) -> StoreResult<Vec<(Uuid, String)>> {
    let mut q = filter.query(tenant_id);
    if let Some(after) = after {
        q = q.filter(job::Column::Id.lt(after));
    }
    Ok(q.select_only()
        .column(job::Column::Id)
        .column(job::Column::Status)
        .order_by_desc(job::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// Whether a job in `status` can be rerun: `failed`, `finished_with_exception` or `cancelled`;
/// otherwise 409 `not_rerunnable`.
pub fn check_rerunnable(status: JobStatus) -> StoreResult<()> {
    if matches!(
        status,
        JobStatus::Failed | JobStatus::FinishedWithException | JobStatus::Cancelled
    ) {
        Ok(())
    } else {
        Err(StoreError::conflict(
            "not_rerunnable",
            format!(
                "only failed, finished_with_exception or cancelled jobs can be rerun; this job is {}",
                status.as_str()
            ),
        ))
    }
}

/// Whether a job in `status` can be cancelled: `queued`, `running`, `previewed` or `paused`;
/// otherwise 409 `not_cancellable`.
pub fn check_cancellable(status: JobStatus) -> StoreResult<()> {
    if status.can_become(JobStatus::Cancelled) {
        Ok(())
    } else {
        Err(StoreError::conflict(
            "not_cancellable",
            format!(
                "only queued, running, previewed or paused jobs can be cancelled; this job is {}",
                status.as_str()
            ),
        ))
    }
}

/// Whether a job in `status` can be resumed: only a `paused` job; otherwise 409 `not_paused`.
pub fn check_resumable(status: JobStatus) -> StoreResult<()> {
    if status == JobStatus::Paused {
        Ok(())
    } else {
        Err(StoreError::conflict(
            "not_paused",
            format!(
                "only a paused job can be resumed; this job is {}",
                status.as_str()
            ),
        ))
    }
}

/// Resume a paused job (operator): its canary counts as passed and the job runs on with the
/// rest of its members (and reads the rest of its groups, if it paused while reading them).
/// Any other status → 409 `not_paused`. The caller queues the job after this commits.
pub async fn resume(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    by: Option<Uuid>,
) -> StoreResult<JobView> {
    let txn = crate::db::begin(db).await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    let status = status_of(&job)?;
    check_resumable(status)?;
    let now = Utc::now();
    job::Entity::update_many()
        .col_expr(
            job::Column::Status,
            Expr::value(JobStatus::Running.as_str()),
        )
        .col_expr(job::Column::CanaryPassedAt, Expr::value(now))
        .col_expr(job::Column::LastProgressAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id))
        .exec(&txn)
        .await?;
    pipeline::set_run_status(&txn, job_id, job.runs, JobStatus::Running).await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: by,
            action: "job.resumed",
            target_type: "job",
            target_id: job_id.to_string(),
            before: Some(json!({"status": status.as_str(), "worked": job.succeeded + job.failed + job.skipped, "failed": job.failed})),
            after: Some(json!({"status": "running"})),
        },
    )
    .await?;
    let job = model(&txn, tenant_id, job_id).await?;
    let view = view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// The table where a stale preview's predictions wait for its members to be read again.
const CARRIED: &str = "carried_predictions";

fn statement<C: ConnectionTrait>(conn: &C, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    let backend = conn.get_database_backend();
    let sql = if backend == sea_orm::DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len());
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Keep a preview's predictions, by member, while its items are dropped to read the groups
/// again (see [`carry_predictions`]).
async fn stash_predictions<C: ConnectionTrait>(conn: &C, job_id: Uuid) -> StoreResult<()> {
    conn_delete_carried(conn, job_id).await?;
    conn.execute_raw(statement(
        conn,
        &format!(
            "INSERT INTO {CARRIED} (job_id, user_id, prediction) \
             SELECT job_id, user_id, prediction FROM job_items \
             WHERE job_id = ? AND prediction IS NOT NULL"
        ),
        vec![job_id.into()],
    ))
    .await?;
    Ok(())
}

async fn conn_delete_carried<C: ConnectionTrait>(conn: &C, job_id: Uuid) -> StoreResult<()> {
    conn.execute_raw(statement(
        conn,
        &format!("DELETE FROM {CARRIED} WHERE job_id = ?"),
        vec![job_id.into()],
    ))
    .await?;
    Ok(())
}

/// A launched preview that read its groups again: each member still in them gets its
/// prediction back; members new to the groups have none. Nothing to do for other jobs (one
/// index probe).
pub(crate) async fn carry_predictions<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
) -> StoreResult<()> {
    let any = conn
        .query_one_raw(statement(
            conn,
            &format!("SELECT 1 AS one FROM {CARRIED} WHERE job_id = ? LIMIT 1"),
            vec![job_id.into()],
        ))
        .await?;
    if any.is_none() {
        return Ok(());
    }
    conn.execute_raw(statement(
        conn,
        &format!(
            "UPDATE job_items SET prediction = (SELECT c.prediction FROM {CARRIED} c \
             WHERE c.job_id = job_items.job_id AND c.user_id = job_items.user_id) \
             WHERE job_id = ? AND user_id IN (SELECT user_id FROM {CARRIED} WHERE job_id = ?)"
        ),
        vec![job_id.into(), job_id.into()],
    ))
    .await?;
    conn.execute_raw(statement(
        conn,
        &format!("DELETE FROM {CARRIED} WHERE job_id = ?"),
        vec![job_id.into()],
    ))
    .await?;
    Ok(())
}

/// Number of jobs per kind and status across all tenants, for metrics.
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

/// Members waiting in queued and running jobs, across all tenants: the work the queue holds.
pub async fn pending_items(db: &Db) -> StoreResult<i64> {
    let rows: Vec<(i64, i64, i64, i64)> = job::Entity::find()
        .select_only()
        .column(job::Column::Total)
        .column(job::Column::Succeeded)
        .column(job::Column::Failed)
        .column(job::Column::Skipped)
        .filter(
            job::Column::Status.is_in([JobStatus::Queued.as_str(), JobStatus::Running.as_str()]),
        )
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(t, s, f, k)| Ord::max(t - s - f - k, 0))
        .sum())
}

/// Touch the job (taking SQLite's write lock / PostgreSQL's row lock first) and read it back.
async fn lock<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    job_id: Uuid,
) -> StoreResult<job::Model> {
    let taken = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::TenantId.eq(tenant_id))
        .exec(conn)
        .await?;
    if taken.rows_affected == 0 {
        return Err(StoreError::NotFound("job"));
    }
    model(conn, tenant_id, job_id).await
}

fn status_of(m: &job::Model) -> StoreResult<JobStatus> {
    m.status.parse().map_err(StoreError::Invalid)
}

/// Rerun a `failed`, `finished_with_exception` or `cancelled` job: its failed items (and, when
/// the job itself failed, its unfinished ones; when it was cancelled, the members the cancel
/// skipped) go back to pending for a new run, to be read afresh from the directory before they
/// are decided; succeeded and skipped items are not touched. A job whose groups were not read
/// to the end reads them again (members already in the job are not added twice). The job is
/// queued again; the caller enqueues it after this commits.
pub async fn rerun(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    by: Option<Uuid>,
) -> StoreResult<JobView> {
    let txn = crate::db::begin(db).await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    let status = status_of(&job)?;
    check_rerunnable(status)?;
    if pipeline::request_of(&job)?.preview {
        // A preview decides members from the state read at its expansion; run again, its
        // members would be decided from no state at all. A fresh preview reads them again.
        return Err(StoreError::conflict(
            "not_rerunnable",
            "a cancelled preview is not run again; submit the preview again to read the members afresh",
        ));
    }
    let run_no = job.runs + 1;
    let now = Utc::now();
    // A cancelled run whose held members were not recorded yet ends here, with its counts as
    // they stand (nothing happens to a run that is closed already).
    pipeline::close_run(&txn, &job, status, now).await?;
    let mut retried = job_item::Column::Status.eq(ItemStatus::Failed.as_str());
    if status == JobStatus::Failed {
        retried = retried.or(job_item::Column::Status.eq(ItemStatus::Pending.as_str()));
    }
    if status == JobStatus::Cancelled {
        retried = retried.or(job_item::Column::Status.eq(ItemStatus::Pending.as_str()));
        retried = retried.or(job_item::Column::Status
            .eq(ItemStatus::Skipped.as_str())
            .and(job_item::Column::ErrorCode.eq("cancelled")));
    }
    // A member still held by a step of the run that ended (its lease is live: its write may be
    // on its way) keeps its holder, who records what the directory answered — taking it away
    // now would let the cancel that may follow skip it as not done while it was written. The
    // step gives back what it did not send (`Outcome::NotSent`).
    let held = job_item::Column::Status
        .eq(ItemStatus::Pending.as_str())
        .and(pipeline::lease_live(now));
    // Each member the run takes: pending in the new run, its state to be read again (what it
    // holds may have changed since: the snapshot taken at expansion is not trusted).
    let for_the_run = || {
        job_item::Entity::update_many()
            .col_expr(
                job_item::Column::Status,
                Expr::value(ItemStatus::Pending.as_str()),
            )
            .col_expr(
                job_item::Column::ErrorCode,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                job_item::Column::ErrorDetail,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                job_item::Column::Licenses,
                Expr::value(Option::<Value>::None),
            )
            .col_expr(job_item::Column::RunNo, Expr::value(run_no))
            .col_expr(job_item::Column::Attempts, Expr::value(0))
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
    let reset = pipeline::unleased(for_the_run())
        .filter(retried)
        .filter(held.not())
        .exec(&txn)
        .await?
        .rows_affected as i64
        + reset_held;
    let was_failed = job.failed;
    // The counters from the items as they are now.
    let counts: Vec<(String, i64)> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::Status)
        .column_as(job_item::Column::Id.count(), "n")
        .filter(job_item::Column::JobId.eq(job_id))
        .group_by(job_item::Column::Status)
        .into_tuple()
        .all(&txn)
        .await?;
    let count = |st: ItemStatus| {
        counts
            .iter()
            .find(|(s, _)| s == st.as_str())
            .map_or(0i64, |(_, n)| *n)
    };
    job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Queued.as_str()))
        .col_expr(job::Column::Runs, Expr::value(run_no))
        .col_expr(
            job::Column::Total,
            Expr::value(counts.iter().map(|(_, n)| n).sum::<i64>()),
        )
        .col_expr(
            job::Column::Succeeded,
            Expr::value(count(ItemStatus::Succeeded)),
        )
        .col_expr(
            job::Column::Skipped,
            Expr::value(count(ItemStatus::Skipped)),
        )
        .col_expr(job::Column::Failed, Expr::value(count(ItemStatus::Failed)))
        .col_expr(job::Column::ErrorCode, Expr::value(Option::<String>::None))
        .col_expr(
            job::Column::ErrorDetail,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            job::Column::FinishedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id))
        .exec(&txn)
        .await?;
    insert_run(&txn, job_id, run_no, by, reset).await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: by,
            action: "job.rerun",
            target_type: "job",
            target_id: job_id.to_string(),
            before: Some(json!({"status": status.as_str(), "failed": was_failed, "run": job.runs})),
            after: Some(json!({"status": "queued", "items": reset, "run": run_no})),
        },
    )
    .await?;
    let job = model(&txn, tenant_id, job_id).await?;
    let view = view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// Cancel a queued or running job: members not being worked on right now are skipped with code
/// `cancelled`; those in flight finish and are recorded. Nothing new starts: expansion stops at
/// its next page and every lane at its next chunk, and no member is left pending.
pub async fn cancel(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    by: Option<Uuid>,
) -> StoreResult<JobView> {
    let txn = crate::db::begin(db).await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    let status = status_of(&job)?;
    check_cancellable(status)?;
    let now = Utc::now();
    job::Entity::update_many()
        .col_expr(
            job::Column::Status,
            Expr::value(JobStatus::Cancelled.as_str()),
        )
        .col_expr(job::Column::FinishedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id))
        .exec(&txn)
        .await?;
    // Members a worker holds right now are recorded by it; the rest are skipped now. Expansion
    // and the lanes see the status before their next page or chunk.
    let skipped = pipeline::skip_unheld(&txn, job_id, now).await?;
    // A stale preview cancelled while its groups were read again keeps no predictions aside.
    conn_delete_carried(&txn, job_id).await?;
    // With no member held, the run ends now: its counts are final and its webhook deliveries
    // commit with it (the caller queues them). Otherwise the worker holding members records
    // them and then closes the run (`pipeline::settle_cancelled`), so the run's counts and the
    // `job.cancelled` event tell every member's outcome.
    if status == JobStatus::Previewed {
        // The preview's run ended when its members were predicted; cancelled, it ends again as
        // cancelled, with its members' outcomes.
        job_run::Entity::update_many()
            .col_expr(
                job_run::Column::FinishedAt,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .filter(job_run::Column::JobId.eq(job_id))
            .filter(job_run::Column::RunNo.eq(job.runs))
            .exec(&txn)
            .await?;
    }
    let run_status = Expr::value(JobStatus::Cancelled.as_str());
    if !pipeline::close_cancelled_run(&txn, job_id, now).await? {
        job_run::Entity::update_many()
            .col_expr(job_run::Column::Status, run_status)
            .filter(job_run::Column::JobId.eq(job_id))
            .filter(job_run::Column::RunNo.eq(job.runs))
            .filter(job_run::Column::FinishedAt.is_null())
            .exec(&txn)
            .await?;
    }
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: by,
            action: "job.cancelled",
            target_type: "job",
            target_id: job_id.to_string(),
            before: Some(json!({"status": status.as_str()})),
            after: Some(json!({"status": "cancelled", "skipped": skipped})),
        },
    )
    .await?;
    let job = model(&txn, tenant_id, job_id).await?;
    let view = view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// Whether a job in `status` (a preview when `preview`) can be launched: only a `previewed`
/// job; a preview still reading its members → 409 `preview_not_ready`; otherwise 409
/// `not_a_preview`.
pub fn check_launchable(status: JobStatus, preview: bool) -> StoreResult<()> {
    if status == JobStatus::Previewed {
        Ok(())
    } else if preview && matches!(status, JobStatus::Queued | JobStatus::Running) {
        Err(StoreError::conflict(
            "preview_not_ready",
            "the preview is still reading its members; launch it once it is previewed",
        ))
    } else {
        Err(StoreError::conflict(
            "not_a_preview",
            format!(
                "only a previewed job can be launched; this job is {}",
                status.as_str()
            ),
        ))
    }
}

/// Launch a preview (admin): the job is queued as a real run of the same request. The members
/// the preview found are kept — the groups are not read again — unless the preview is older
/// than `max_age` (`jobs.preview_max_age_secs`), when they are dropped and the groups read
/// afresh. Either way each member is read again from the directory before it is decided and
/// written. Each item keeps its prediction and the job its preview summary, with `launched_at`.
/// The caller enqueues the job after this commits.
pub async fn launch(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    by: Option<Uuid>,
    max_age: std::time::Duration,
) -> StoreResult<JobView> {
    let txn = crate::db::begin(db).await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    let status = status_of(&job)?;
    let mut req = pipeline::request_of(&job)?;
    check_launchable(status, req.preview)?;
    req.preview = false;
    let request = serde_json::to_value(&req).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let now = Utc::now();
    let mut facts = JobFacts::of(&job);
    let previewed_at = facts
        .preview
        .as_ref()
        .map(|p| p.previewed_at)
        .or(job.finished_at)
        .unwrap_or(job.created_at);
    let stale = now - previewed_at > chrono::Duration::from_std(max_age).unwrap_or_default();
    if let Some(p) = facts.preview.as_mut() {
        p.launched_at = Some(now);
        p.expanded_again = stale;
    }
    let result = serde_json::to_value(&facts).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let total = if stale {
        // The members are read again; those still in the groups keep their predictions.
        stash_predictions(&txn, job_id).await?;
        job_item::Entity::delete_many()
            .filter(job_item::Column::JobId.eq(job_id))
            .exec(&txn)
            .await?;
        0
    } else {
        // What each member holds is read again before it is decided and written.
        job_item::Entity::update_many()
            .col_expr(
                job_item::Column::Licenses,
                Expr::value(Option::<Value>::None),
            )
            .col_expr(
                job_item::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                job_item::Column::LeaseUntil,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(job_item::Column::UpdatedAt, Expr::value(now))
            .filter(job_item::Column::JobId.eq(job_id))
            .exec(&txn)
            .await?;
        job.total
    };
    let mut update = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Queued.as_str()))
        .col_expr(job::Column::Request, Expr::value(request))
        .col_expr(job::Column::Result, Expr::value(result))
        .col_expr(job::Column::Total, Expr::value(total))
        .col_expr(job::Column::Succeeded, Expr::value(0i64))
        .col_expr(job::Column::Failed, Expr::value(0i64))
        .col_expr(job::Column::Skipped, Expr::value(0i64))
        .col_expr(job::Column::ErrorCode, Expr::value(Option::<String>::None))
        .col_expr(
            job::Column::ErrorDetail,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            job::Column::StartedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .col_expr(
            job::Column::FinishedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job_id));
    if stale {
        update = update
            .col_expr(
                job::Column::ExpandedAt,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .col_expr(
                job::Column::ExpandPosition,
                Expr::value(Option::<Value>::None),
            )
            .col_expr(
                job::Column::ExpandOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                job::Column::ExpandUntil,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            );
    }
    update.exec(&txn).await?;
    job_run::Entity::update_many()
        .col_expr(
            job_run::Column::Status,
            Expr::value(JobStatus::Queued.as_str()),
        )
        .col_expr(job_run::Column::Total, Expr::value(total))
        .col_expr(job_run::Column::StartedBy, Expr::value(by))
        .col_expr(job_run::Column::StartedAt, Expr::value(now))
        .col_expr(
            job_run::Column::FinishedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(job_run::Column::JobId.eq(job_id))
        .filter(job_run::Column::RunNo.eq(job.runs))
        .exec(&txn)
        .await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: by,
            action: "job.launched",
            target_type: "job",
            target_id: job_id.to_string(),
            before: Some(json!({"status": status.as_str(), "members": job.total})),
            after: Some(json!({"status": "queued", "expanded_again": stale})),
        },
    )
    .await?;
    let job = model(&txn, tenant_id, job_id).await?;
    let view = view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// One run of a job: who started it, when, and its counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub run_no: i32,
    pub status: JobStatus,
    pub started_by: Option<Uuid>,
    pub started_at: chrono::DateTime<Utc>,
    pub finished_at: Option<chrono::DateTime<Utc>>,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
}

/// A job's run history, first run first.
pub async fn runs(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Vec<RunView>> {
    model(db, tenant_id, job_id).await?;
    job_run::Entity::find()
        .filter(job_run::Column::JobId.eq(job_id))
        .order_by_asc(job_run::Column::RunNo)
        .all(db)
        .await?
        .into_iter()
        .map(|r| {
            Ok(RunView {
                run_no: r.run_no,
                status: r.status.parse().map_err(StoreError::Invalid)?,
                started_by: r.started_by,
                started_at: r.started_at,
                finished_at: r.finished_at,
                total: r.total,
                succeeded: r.succeeded,
                failed: r.failed,
                skipped: r.skipped,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    pub code: String,
    pub detail: Option<String>,
}

/// One member's item.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    pub id: i64,
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub group_id: Option<String>,
    pub status: ItemStatus,
    pub error: Option<ItemError>,
    /// A remark on a member that succeeded or was skipped (e.g. licenses left in place).
    pub note: Option<String>,
    pub attempts: i32,
    pub run_no: i32,
    pub updated_at: chrono::DateTime<Utc>,
    /// Previews: the member's predicted outcome (kept after the launch, to compare).
    pub prediction: Option<preview::Prediction>,
}

impl ItemView {
    pub fn from_model(m: job_item::Model) -> StoreResult<ItemView> {
        let status: ItemStatus = m.status.parse().map_err(StoreError::Invalid)?;
        let (error, note) = match (status, m.error_code) {
            (ItemStatus::Failed, code) | (ItemStatus::Skipped, code @ Some(_)) => (
                Some(ItemError {
                    code: code.unwrap_or_else(|| "other".into()),
                    detail: m.error_detail,
                }),
                None,
            ),
            (_, _) => (None, m.error_detail),
        };
        Ok(ItemView {
            id: m.id,
            user_id: m.user_id,
            user_principal_name: m.user_principal_name,
            display_name: m.display_name,
            group_id: m.group_id,
            status,
            error,
            note,
            attempts: m.attempts,
            run_no: m.run_no,
            updated_at: m.updated_at,
            prediction: m.prediction.and_then(|v| serde_json::from_value(v).ok()),
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct ItemFilter {
    pub status: Vec<ItemStatus>,
    pub code: Vec<String>,
}

/// A job's items in member order.
pub async fn items(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    filter: &ItemFilter,
    page: &PageRequest<i64>,
) -> StoreResult<Page<ItemView>> {
    model(db, tenant_id, job_id).await?;
    let mut q = job_item::Entity::find().filter(job_item::Column::JobId.eq(job_id));
    if !filter.status.is_empty() {
        q = q.filter(job_item::Column::Status.is_in(filter.status.iter().map(|s| s.as_str())));
    }
    if !filter.code.is_empty() {
        q = q.filter(job_item::Column::ErrorCode.is_in(filter.code.iter().cloned()));
    }
    if let Some(after) = page.after {
        q = q.filter(job_item::Column::Id.gt(after));
    }
    let rows = q
        .order_by_asc(job_item::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.id);
    Ok(Page {
        data: page
            .data
            .into_iter()
            .map(ItemView::from_model)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    })
}

/// Failed (and cancelled) items of a job grouped by error code.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorGroup {
    pub code: String,
    pub count: i64,
    /// What the code means and what to do about it.
    pub explanation: String,
}

pub async fn error_groups(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Vec<ErrorGroup>> {
    model(db, tenant_id, job_id).await?;
    let rows: Vec<(Option<String>, i64)> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::ErrorCode)
        .column_as(job_item::Column::Id.count(), "n")
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Status.eq(ItemStatus::Failed.as_str()))
        .group_by(job_item::Column::ErrorCode)
        .into_tuple()
        .all(db)
        .await?;
    let mut groups: Vec<ErrorGroup> = rows
        .into_iter()
        .map(|(code, count)| {
            let code = code.unwrap_or_else(|| "other".into());
            ErrorGroup {
                explanation: codes::explanation(&code).to_owned(),
                code,
                count,
            }
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
    Ok(groups)
}

/// One member's entry in a job's change ledger: its direct licenses before and after the job's
/// write, with the item's outcome.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChangeView {
    pub item_id: i64,
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub status: ItemStatus,
    pub error: Option<ItemError>,
    pub run_no: i32,
    /// Licenses held directly before the write (SKU ids with disabled plans).
    pub before: Vec<AssignedLicense>,
    /// Licenses held directly after the write: as read back when the job verifies, else as
    /// written.
    pub after: Vec<AssignedLicense>,
    /// `true`: a read after the write confirmed it; `false`: the directory showed something
    /// else (drifted); `null`: not verified.
    pub verified: Option<bool>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl ChangeView {
    /// The ledger entry of an item, if the job wrote for it.
    pub fn of(m: &job_item::Model) -> StoreResult<Option<ChangeView>> {
        let Some(change) = m
            .change
            .clone()
            .and_then(|v| serde_json::from_value::<plan::Change>(v).ok())
        else {
            return Ok(None);
        };
        let item = ItemView::from_model(m.clone())?;
        Ok(Some(ChangeView {
            item_id: m.id,
            user_id: item.user_id,
            user_principal_name: item.user_principal_name,
            display_name: item.display_name,
            status: item.status,
            error: item.error,
            run_no: item.run_no,
            before: change.before,
            after: change.after,
            verified: change.verified,
            updated_at: item.updated_at,
        }))
    }
}

#[derive(Debug, Default, Clone)]
pub struct ChangeFilter {
    pub status: Vec<ItemStatus>,
    pub code: Vec<String>,
    /// A member's user id or user principal name (exact).
    pub user: Option<String>,
}

/// A page of a job's change ledger, in member order, with how many entries match the filter.
pub async fn changes(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    filter: &ChangeFilter,
    page: &PageRequest<i64>,
) -> StoreResult<(Page<ChangeView>, i64)> {
    model(db, tenant_id, job_id).await?;
    let mut q = job_item::Entity::find()
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Change.is_not_null());
    if !filter.status.is_empty() {
        q = q.filter(job_item::Column::Status.is_in(filter.status.iter().map(|s| s.as_str())));
    }
    if !filter.code.is_empty() {
        q = q.filter(job_item::Column::ErrorCode.is_in(filter.code.iter().cloned()));
    }
    if let Some(user) = filter
        .user
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        q = q.filter(
            job_item::Column::UserId
                .eq(user)
                .or(job_item::Column::UserPrincipalName.eq(user)),
        );
    }
    let total = q
        .clone()
        .select_only()
        .column_as(job_item::Column::Id.count(), "n")
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0);
    if let Some(after) = page.after {
        q = q.filter(job_item::Column::Id.gt(after));
    }
    let rows = q
        .order_by_asc(job_item::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.id);
    let mut data = Vec::with_capacity(page.data.len());
    for m in &page.data {
        if let Some(c) = ChangeView::of(m)? {
            data.push(c);
        }
    }
    Ok((
        Page {
            data,
            next_cursor: page.next_cursor,
        },
        total,
    ))
}

/// The request of the job that undoes a job of `req`'s kind: the inverse licenses, for the
/// record (each member's undo is decided from its ledger entry).
fn undo_request(req: &JobRequest, job_id: Uuid) -> JobRequest {
    let as_add = |ids: &[Uuid]| {
        ids.iter()
            .map(|id| LicenseToAdd {
                sku_id: *id,
                disabled_plans: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let added: Vec<Uuid> = req.add_licenses.iter().map(|l| l.sku_id).collect();
    let (kind, add_licenses, remove_licenses) = match req.kind {
        JobKind::Assign => (JobKind::Remove, Vec::new(), added),
        JobKind::Remove => (JobKind::Assign, as_add(&req.remove_licenses), Vec::new()),
        _ => (JobKind::Replace, as_add(&req.remove_licenses), added),
    };
    JobRequest {
        kind,
        groups: req.groups.clone(),
        transitive: req.transitive,
        add_licenses,
        remove_licenses,
        replace_all: false,
        usage_location: None,
        expires_in: None,
        export: None,
        verify: Some(true),
        undo_of: Some(job_id),
        preview: false,
        canary: None,
    }
}

/// Undo a job (admin): a new job, linked to it (`parent_job_id`, `request.undo_of`), that gives
/// each member the job wrote for its direct licenses from before the job — only where the
/// member's licenses still equal what the job left; the others end `skipped` with code
/// `changed_since` and are not touched. Only a finished, failed or cancelled job that wrote for
/// at least one member can be undone (409 `not_undoable` / `nothing_to_undo`), and only once
/// (409 `already_undone` while an earlier undo has not failed or been cancelled). The caller
/// enqueues the new job after this commits.
pub async fn undo(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    by: Option<Uuid>,
) -> StoreResult<JobView> {
    let txn = crate::db::begin(db).await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    let status = status_of(&job)?;
    let kind: JobKind = job.kind.parse().map_err(StoreError::Invalid)?;
    if matches!(status, JobStatus::Queued | JobStatus::Running) || kind == JobKind::Export {
        return Err(StoreError::conflict(
            "not_undoable",
            format!(
                "only a finished, failed or cancelled assign, remove or replace job can be undone; this is a {} {} job",
                status.as_str(),
                kind.as_str()
            ),
        ));
    }
    // One undo at a time: an earlier undo that did not fail and was not cancelled stands.
    let children = job::Entity::find()
        .filter(job::Column::TenantId.eq(tenant_id))
        .filter(job::Column::ParentJobId.eq(job_id))
        .all(&txn)
        .await?;
    for child in children {
        let undoes = pipeline::request_of(&child)?.undo_of == Some(job_id);
        let status = status_of(&child)?;
        let stands = !matches!(status, JobStatus::Failed | JobStatus::Cancelled);
        if undoes && stands {
            let detail = if status.is_terminal() {
                format!(
                    "the job was undone already by job {} ({})",
                    child.id, child.status
                )
            } else {
                format!(
                    "the job is being undone by job {} ({}); cancel that one to undo again",
                    child.id, child.status
                )
            };
            return Err(StoreError::conflict("already_undone", detail));
        }
    }
    let req = pipeline::request_of(&job)?;
    let child = insert(
        &txn,
        NewJob {
            tenant_id,
            request: undo_request(&req, job_id),
            created_by: by,
            parent_job_id: Some(job_id),
        },
    )
    .await?;
    let now = Utc::now();
    let mut after = 0i64;
    let mut n = 0i64;
    loop {
        let page = job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Status.eq(ItemStatus::Succeeded.as_str()))
            .filter(job_item::Column::Change.is_not_null())
            .filter(job_item::Column::Id.gt(after))
            .order_by_asc(job_item::Column::Id)
            .limit(1000)
            .all(&txn)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let mut insert = sea_orm::sea_query::Query::insert();
        insert.into_table(job_item::Entity).columns([
            job_item::Column::JobId,
            job_item::Column::UserId,
            job_item::Column::UserPrincipalName,
            job_item::Column::DisplayName,
            job_item::Column::GroupId,
            job_item::Column::UsageLocation,
            job_item::Column::Target,
            job_item::Column::Status,
            job_item::Column::Attempts,
            job_item::Column::RunNo,
            job_item::Column::UpdatedAt,
        ]);
        let mut rows = 0;
        for item in page {
            let Some(change) = item
                .change
                .and_then(|v| serde_json::from_value::<plan::Change>(v).ok())
            else {
                continue;
            };
            let target = plan::UndoTarget {
                expect: change.after,
                restore: change.before,
            };
            let target =
                serde_json::to_value(&target).map_err(|e| StoreError::Invalid(e.to_string()))?;
            insert
                .values([
                    child.id.into(),
                    item.user_id.into(),
                    item.user_principal_name.into(),
                    item.display_name.into(),
                    item.group_id.into(),
                    item.usage_location.into(),
                    target.into(),
                    ItemStatus::Pending.as_str().into(),
                    0i32.into(),
                    1i32.into(),
                    now.into(),
                ])
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            rows += 1;
        }
        if rows > 0 {
            n += txn.execute(&insert).await?.rows_affected() as i64;
        }
    }
    if n == 0 {
        return Err(StoreError::conflict(
            "nothing_to_undo",
            "the job changed no member's licenses, so there is nothing to undo",
        ));
    }
    job::Entity::update_many()
        .col_expr(job::Column::Total, Expr::value(n))
        .col_expr(job::Column::ExpandedAt, Expr::value(now))
        .col_expr(job::Column::Result, Expr::value(job.result.clone()))
        .filter(job::Column::Id.eq(child.id))
        .exec(&txn)
        .await?;
    job_run::Entity::update_many()
        .col_expr(job_run::Column::Total, Expr::value(n))
        .filter(job_run::Column::JobId.eq(child.id))
        .exec(&txn)
        .await?;
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: by,
            action: "job.undo",
            target_type: "job",
            target_id: child.id.to_string(),
            before: None,
            after: Some(json!({"undo_of": job_id, "members": n})),
        },
    )
    .await?;
    let child = model(&txn, tenant_id, child.id).await?;
    let view = view(&txn, child).await?;
    txn.commit().await?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: StoreResult<()>) -> Option<String> {
        match r {
            Ok(()) => None,
            Err(StoreError::Refused {
                kind: crate::error::Refusal::Conflict,
                code,
                ..
            }) => Some(code.to_owned()),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Only a previewed job is launched; a preview still reading its members says so.
    #[test]
    fn launch_is_for_a_finished_preview() {
        assert_eq!(code(check_launchable(JobStatus::Previewed, true)), None);
        for s in [JobStatus::Queued, JobStatus::Running] {
            assert_eq!(
                code(check_launchable(s, true)).as_deref(),
                Some("preview_not_ready")
            );
            assert_eq!(
                code(check_launchable(s, false)).as_deref(),
                Some("not_a_preview")
            );
        }
        for s in [JobStatus::Finished, JobStatus::Cancelled, JobStatus::Paused] {
            assert_eq!(
                code(check_launchable(s, false)).as_deref(),
                Some("not_a_preview")
            );
        }
    }
}
