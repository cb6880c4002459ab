//! Submitting a job: the request checked as a whole against the tenant's SKUs, then the job
//! row, its first run and the audit entry created in one transaction.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

use super::view::job_view;
use super::{JobView, ParsedRequest};
use crate::audit::{self, AuditEntry};
use crate::db::Db;
use crate::directory::Sku;
use crate::domain::JobStatus;
use crate::entities::{job, job_run};
use crate::error::{StoreError, StoreResult};

/// A job to create, its request parsed.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant_id: Uuid,
    pub request: ParsedRequest,
    pub created_by: Option<Uuid>,
    pub parent_job_id: Option<Uuid>,
    /// What the submitter already read of the job's groups and the tenant's SKUs (the API
    /// reads them as it checks the request): the job shows the groups' names from the start,
    /// not only once it reads the groups itself (which records them again). `None`: nothing.
    pub known: Option<super::view::JobFacts>,
}

/// Insert a `queued` job and its first run on `conn` (a transaction when the caller records
/// more with it).
pub async fn insert<C: ConnectionTrait>(conn: &C, new: NewJob) -> StoreResult<job::Model> {
    let now = Utc::now();
    let request = serde_json::to_value(&new.request).map_err(StoreError::internal)?;
    let known = match &new.known {
        Some(facts) => Some(serde_json::to_value(facts).map_err(StoreError::internal)?),
        None => None,
    };
    let job = job::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(new.tenant_id),
        kind: Set(new.request.kind()),
        status: Set(JobStatus::Queued),
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
        result: Set(known),
        expand_position: Set(None),
        expand_owner: Set(None),
        expand_until: Set(None),
        last_progress_at: Set(None),
        requeues: Set(0),
        canary_passed_at: Set(None),
        launch_order_done_at: Set(None),
    }
    .insert(conn)
    .await?;
    insert_run(conn, job.id, 1, new.created_by, 0).await?;
    Ok(job)
}

pub(crate) async fn insert_run<C: ConnectionTrait>(
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
        status: Set(JobStatus::Queued),
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

/// An assign, remove or replace checked as a whole against the tenant's subscribed SKUs before
/// its job is created, so a request that cannot work is refused rather than failed member by
/// member: an unknown SKU → 422 `unknown_sku`; a disabled plan that is not a plan of its SKU →
/// 422 `plan_not_in_sku`; a SKU to add with no free unit → 409 `no_licenses_available` with its
/// `enabled`, `consumed` and `available` counts. A preview is not refused for seats: it reports
/// the shortfall in its summary. An export is not checked.
pub fn check_against_skus(request: &ParsedRequest, skus: &[Sku]) -> StoreResult<()> {
    // An export names no SKU.
    request.check_skus(skus)?;
    for add in request.add_licenses().iter().filter(|_| !request.preview) {
        if let Some(sku) = skus.iter().find(|s| s.sku_id == add.sku_id.uuid())
            && sku.available <= 0
        {
            return Err(StoreError::conflict(
                "no_licenses_available",
                format!(
                    "no {} licenses are available: {} of {} are in use",
                    sku.sku_part_number, sku.consumed, sku.enabled
                ),
            )
            .with_extra(json!({
                "sku_id": sku.sku_id,
                "sku_part_number": sku.sku_part_number,
                "enabled": sku.enabled,
                "consumed": sku.consumed,
                "available": sku.available,
            })));
        }
    }
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
    let view = job_view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// A job created from another's items (an expiry removal, an undo) has its members stored:
/// set its total and its run's to `members`, mark it expanded at `at`, and give it the facts
/// (`result`: groups, SKUs) of the job it came from.
pub(crate) async fn set_copied<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    members: i64,
    at: chrono::DateTime<Utc>,
    result: Option<serde_json::Value>,
) -> StoreResult<()> {
    job::Entity::update_many()
        .col_expr(job::Column::Total, Expr::value(members))
        .col_expr(job::Column::ExpandedAt, Expr::value(at))
        .col_expr(job::Column::Result, Expr::value(result))
        .filter(job::Column::Id.eq(job_id))
        .exec(conn)
        .await?;
    job_run::Entity::update_many()
        .col_expr(job_run::Column::Total, Expr::value(members))
        .filter(job_run::Column::JobId.eq(job_id))
        .exec(conn)
        .await?;
    Ok(())
}
