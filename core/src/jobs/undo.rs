//! Undo: a job that puts each member back as the ledger says they were before the job.

use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use uuid::Uuid;

use super::state::{OnJob, begin_action, check_undoable, commit_action};
use super::submit::{NewJob, insert};
use super::{JobSpec, JobView, LicenseToAdd, ParsedRequest, SkuId, plan};
use crate::db::Db;
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item};
use crate::error::{StoreError, StoreResult};

/// The request of the job that undoes a job of `req`'s kind: the inverse licenses, for the
/// record (each member's undo is decided from its ledger entry).
fn undo_request(req: &ParsedRequest, job_id: Uuid) -> ParsedRequest {
    let as_add = |ids: &[SkuId]| {
        ids.iter()
            .map(|id| LicenseToAdd {
                sku_id: *id,
                disabled_plans: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let added: Vec<SkuId> = req.add_licenses().iter().map(|l| l.sku_id).collect();
    let spec = match &req.spec {
        JobSpec::Assign { .. } => JobSpec::Remove { remove: added },
        JobSpec::Remove { remove } => JobSpec::Assign {
            add: as_add(remove),
            usage_location: None,
            expires_in: None,
        },
        // An export is never undone (`check_undoable`); its undo would name no license.
        JobSpec::Replace { .. } | JobSpec::Export { .. } => JobSpec::Replace {
            add: as_add(req.remove_licenses()),
            remove: added,
            replace_all: false,
            usage_location: None,
        },
    };
    ParsedRequest {
        groups: req.groups.clone(),
        transitive: req.transitive,
        spec,
        verify: Some(true),
        undo_of: Some(job_id),
        preview: false,
        canary: None,
    }
}

/// The undo of tenant `tenant_id`'s job `job_id` that stands — one that has not failed and was
/// not cancelled (queued, running or ended) — if there is one.
pub(crate) async fn standing_undo<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    job_id: Uuid,
) -> StoreResult<Option<job::Model>> {
    let children = job::Entity::find()
        .filter(job::Column::TenantId.eq(tenant_id))
        .filter(job::Column::ParentJobId.eq(job_id))
        .all(conn)
        .await?;
    for child in children {
        let undoes = super::lease::request_of(&child)?.undo_of == Some(job_id);
        let stands = !matches!(child.status, JobStatus::Failed | JobStatus::Cancelled);
        if undoes && stands {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// Undo a job (admin): a new job, linked to it (`parent_job_id`, `request.undo_of`), that gives
/// each member the job wrote for its direct licenses from before the job — only where the
/// member's licenses still equal what the job left; the others end `skipped` with code
/// `changed_since` and are not touched. Only a finished, failed or cancelled job that wrote for
/// at least one member can be undone (409 `not_undoable` / `nothing_to_undo`), and only once
/// (409 `already_undone` while an earlier undo has not failed or been cancelled). The caller
/// enqueues the new job after this commits.
pub async fn undo(db: &Db, on: OnJob) -> StoreResult<JobView> {
    let (tenant_id, job_id, by) = (on.tenant_id, on.job_id, on.by);
    let (txn, job) = begin_action(db, tenant_id, job_id).await?;
    check_undoable(&job)?;
    // One undo at a time: an earlier undo that did not fail and was not cancelled stands.
    if let Some(child) = standing_undo(&txn, tenant_id, job_id).await? {
        let detail = if child.status.is_terminal() {
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
    let req = super::lease::request_of(&job)?;
    let child = insert(
        &txn,
        NewJob {
            tenant_id,
            request: undo_request(&req, job_id),
            created_by: by,
            parent_job_id: Some(job_id),
            known: None,
        },
    )
    .await?;
    let now = Utc::now();
    let mut after = 0i64;
    let mut n = 0i64;
    loop {
        let page = job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Status.eq(ItemStatus::Succeeded))
            .filter(job_item::Column::Change.is_not_null())
            .filter(job_item::Column::Id.gt(after))
            .order_by_asc(job_item::Column::Id)
            .limit(1000)
            .all(&txn)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let mut insert = sea_orm::sea_query::Query::insert();
        insert
            .into_table(job_item::Entity)
            .columns(super::MEMBER_COLUMNS.into_iter().chain([
                job_item::Column::Target,
                job_item::Column::Status,
                job_item::Column::Attempts,
                job_item::Column::RunNo,
                job_item::Column::UpdatedAt,
            ]));
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
            let target = serde_json::to_value(&target).map_err(StoreError::internal)?;
            insert
                .values([
                    child.id.into(),
                    item.user_id.into(),
                    item.user_principal_name.into(),
                    item.display_name.into(),
                    item.group_id.into(),
                    item.usage_location.into(),
                    target.into(),
                    ItemStatus::Pending.into(),
                    0i32.into(),
                    1i32.into(),
                    now.into(),
                ])
                .map_err(StoreError::internal)?;
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
    super::submit::set_copied(&txn, child.id, n, now, job.result.clone()).await?;
    commit_action(
        txn,
        tenant_id,
        child.id,
        by,
        "job.undo",
        None,
        json!({"undo_of": job_id, "members": n}),
    )
    .await
}
