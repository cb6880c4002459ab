//! Expiry: removal jobs created for temporary assignments that have come due.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::lease::request_of;
use super::outcome::ITEMS_PER_STATEMENT;
use super::submit::NewJob;
use super::{JobSpec, ParsedRequest, SkuId, now};
use crate::db::Db;
use crate::domain::{ItemStatus, JobKind};
use crate::entities::{job, job_item};
use crate::error::{StoreError, StoreResult};

/// What later assign jobs of the tenant want of one member's SKU, as the expiry sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// A permanent assign holds it: keep it without end.
    Forever { job_id: Uuid },
    /// A temporary assign wants it until `until`. `removes_it`: that job's own item added the
    /// SKU and comes due itself, so the removal is left to it.
    Until {
        job_id: Uuid,
        until: DateTime<Utc>,
        removes_it: bool,
    },
}

/// The SKUs a member held directly before an item's write, from its change ledger entry.
fn held_before(item: &job_item::Model) -> std::collections::BTreeSet<Uuid> {
    item.change
        .clone()
        .and_then(|c| serde_json::from_value::<super::plan::Change>(c).ok())
        .map(|c| c.before.into_iter().map(|l| l.sku_id).collect())
        .unwrap_or_default()
}

/// Turn temporary assignments that are due into removal jobs linked to the job that assigned
/// them (one per distinct set of SKUs to remove). A SKU is removed from a member only if no
/// later assign job of the tenant wants the member to keep it longer: a later permanent assign
/// whose item for the member succeeded or found the SKU already held keeps it without end; a
/// later temporary one that expires later keeps it until then (the removal is then left to that
/// job's item when it added the SKU itself, otherwise this item comes due again at that time).
/// A SKU the member held before the job is kept too. Kept members say why in their item's note;
/// their `due_at` is cleared or moved, so they come due once. Expired claims of skipped items
/// (their due time only ever extends an earlier assignment) are cleared.
pub async fn create_expiry_removals(db: &Db, at: DateTime<Utc>) -> StoreResult<Vec<(Uuid, Uuid)>> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let due_jobs: Vec<Uuid> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::JobId)
        .distinct()
        .filter(job_item::Column::DueAt.lte(at))
        .filter(job_item::Column::Status.eq(ItemStatus::Succeeded))
        .limit(100)
        .into_tuple()
        .all(db)
        .await?;
    let mut created = Vec::new();
    for parent_id in due_jobs {
        let Some(parent) = job::Entity::find_by_id(parent_id).one(db).await? else {
            continue;
        };
        let parent_req = request_of(&parent)?;
        let JobSpec::Assign { add, .. } = &parent_req.spec else {
            continue;
        };
        let skus: Vec<Uuid> = add.iter().map(|l| l.sku_id.uuid()).collect();
        let txn = crate::db::begin(db).await?;
        // Take the parent's row first (the write lock comes with it), so two sweeps never both
        // decide the same members; then read the members still due.
        job::Entity::update_many()
            .col_expr(job::Column::Requeues, Expr::col(job::Column::Requeues))
            .filter(job::Column::Id.eq(parent.id))
            .exec(&txn)
            .await?;
        let due: Vec<job_item::Model> = job_item::Entity::find()
            .filter(job_item::Column::JobId.eq(parent.id))
            .filter(job_item::Column::DueAt.lte(at))
            .filter(job_item::Column::Status.eq(ItemStatus::Succeeded))
            .all(&txn)
            .await?;
        if due.is_empty() {
            txn.rollback().await?;
            continue;
        }
        let users: Vec<String> = due.iter().map(|i| i.user_id.clone()).collect();

        // Later assign jobs of the same tenant that name any of the parent's SKUs.
        let mut later: HashMap<Uuid, (Option<Uuid>, BTreeSet<Uuid>)> = HashMap::new();
        let candidates: Vec<job::Model> = job::Entity::find()
            .filter(job::Column::TenantId.eq(parent.tenant_id))
            .filter(job::Column::Kind.eq(JobKind::Assign))
            .filter(job::Column::CreatedAt.gte(parent.created_at))
            .filter(job::Column::Id.ne(parent.id))
            .all(&txn)
            .await?;
        for j in candidates {
            if j.created_at == parent.created_at && j.id < parent.id {
                continue;
            }
            let Ok(req) = request_of(&j) else { continue };
            if req.undo_of.is_some() {
                continue;
            }
            let named: BTreeSet<Uuid> = req
                .add_licenses()
                .iter()
                .map(|l| l.sku_id.uuid())
                .filter(|s| skus.contains(s))
                .collect();
            if !named.is_empty() {
                let permanent = if req.expires_in().is_none() {
                    Some(j.id)
                } else {
                    None
                };
                later.insert(j.id, (permanent, named));
            }
        }
        // Their items for the due members that ended holding the SKUs: succeeded, or skipped
        // as already held (no code).
        let mut claims: HashMap<String, Vec<(Uuid, job_item::Model)>> = HashMap::new();
        if !later.is_empty() {
            let ids: Vec<Uuid> = later.keys().copied().collect();
            for chunk in users.chunks(ITEMS_PER_STATEMENT) {
                let found: Vec<job_item::Model> = job_item::Entity::find()
                    .filter(job_item::Column::JobId.is_in(ids.clone()))
                    .filter(job_item::Column::UserId.is_in(chunk.to_vec()))
                    .filter(
                        job_item::Column::Status
                            .is_in([ItemStatus::Succeeded, ItemStatus::Skipped]),
                    )
                    .filter(job_item::Column::ErrorCode.is_null())
                    .all(&txn)
                    .await?;
                for i in found {
                    claims
                        .entry(i.user_id.clone())
                        .or_default()
                        .push((i.job_id, i));
                }
            }
        }
        // SKUs an earlier removal of this job already took from a member.
        let mut removed: HashMap<String, BTreeSet<Uuid>> = HashMap::new();
        let children: Vec<job::Model> = job::Entity::find()
            .filter(job::Column::TenantId.eq(parent.tenant_id))
            .filter(job::Column::ParentJobId.eq(parent.id))
            .all(&txn)
            .await?;
        for child in children {
            let Ok(req) = request_of(&child) else {
                continue;
            };
            for chunk in users.chunks(ITEMS_PER_STATEMENT) {
                let members: Vec<String> = job_item::Entity::find()
                    .select_only()
                    .column(job_item::Column::UserId)
                    .filter(job_item::Column::JobId.eq(child.id))
                    .filter(job_item::Column::UserId.is_in(chunk.to_vec()))
                    .into_tuple()
                    .all(&txn)
                    .await?;
                for m in members {
                    removed
                        .entry(m)
                        .or_default()
                        .extend(req.remove_licenses().iter().map(|s| s.uuid()));
                }
            }
        }

        // Decide each member: the SKUs to remove now, and why the others are kept.
        let mut groups: BTreeMap<Vec<Uuid>, Vec<i64>> = BTreeMap::new();
        let mut cleared: Vec<i64> = Vec::new();
        let mut kept: Vec<(i64, Option<DateTime<Utc>>, String)> = Vec::new();
        for item in &due {
            let before = held_before(item);
            let gone = removed.get(&item.user_id);
            let mine = claims.get(&item.user_id);
            let mut remove: Vec<Uuid> = Vec::new();
            let mut notes: Vec<String> = Vec::new();
            let mut next_due: Option<DateTime<Utc>> = None;
            for sku in &skus {
                if gone.is_some_and(|g| g.contains(sku)) {
                    continue;
                }
                if before.contains(sku) {
                    notes.push(format!("kept {sku}: held before the job"));
                    continue;
                }
                let mut best: Option<Claim> = None;
                for (job_id, claim) in mine.into_iter().flatten() {
                    let Some((permanent, named)) = later.get(job_id) else {
                        continue;
                    };
                    if !named.contains(sku) {
                        continue;
                    }
                    let this = match (permanent, claim.due_at) {
                        (Some(_), _) => Claim::Forever { job_id: *job_id },
                        (None, Some(until)) if until > at => Claim::Until {
                            job_id: *job_id,
                            until,
                            removes_it: claim.status == ItemStatus::Succeeded
                                && !held_before(claim).contains(sku),
                        },
                        _ => continue,
                    };
                    best = match (best, this) {
                        (Some(Claim::Forever { job_id: a }), Claim::Forever { job_id: b }) => {
                            Some(Claim::Forever {
                                job_id: std::cmp::max(a, b),
                            })
                        }
                        (Some(f @ Claim::Forever { .. }), _) => Some(f),
                        (_, f @ Claim::Forever { .. }) => Some(f),
                        (
                            Some(Claim::Until {
                                job_id: a,
                                until: ua,
                                removes_it: ra,
                            }),
                            Claim::Until {
                                job_id: b,
                                until: ub,
                                removes_it: rb,
                            },
                        ) => Some(if (ub, b) > (ua, a) {
                            Claim::Until {
                                job_id: b,
                                until: ub,
                                removes_it: rb,
                            }
                        } else {
                            Claim::Until {
                                job_id: a,
                                until: ua,
                                removes_it: ra,
                            }
                        }),
                        (None, c) => Some(c),
                    };
                }
                match best {
                    None => remove.push(*sku),
                    Some(Claim::Forever { job_id }) => {
                        notes.push(format!("kept {sku}: assigned without end by job {job_id}"))
                    }
                    Some(Claim::Until {
                        job_id,
                        until,
                        removes_it: true,
                    }) => notes.push(format!(
                        "kept {sku}: assigned again until {} by job {job_id}, which removes it then",
                        until.to_rfc3339()
                    )),
                    Some(Claim::Until { job_id, until, .. }) => {
                        next_due = Some(next_due.map_or(until, |d| std::cmp::min(d, until)));
                        notes.push(format!(
                            "kept {sku} until {}: assigned until then by job {job_id}",
                            until.to_rfc3339()
                        ));
                    }
                }
            }
            if !remove.is_empty() {
                groups.entry(remove).or_default().push(item.id);
            }
            if notes.is_empty() && next_due.is_none() {
                cleared.push(item.id);
            } else {
                let mut detail = item.error_detail.clone().unwrap_or_default();
                for n in notes {
                    if !detail.contains(&n) {
                        if !detail.is_empty() {
                            detail.push_str("; ");
                        }
                        detail.push_str(&n);
                    }
                }
                kept.push((item.id, next_due, detail));
            }
        }

        // One removal job per distinct set of SKUs to remove.
        let t = now();
        let mut children_created = Vec::new();
        for (remove, ids) in groups {
            let request = ParsedRequest {
                groups: parent_req.groups.clone(),
                transitive: parent_req.transitive,
                spec: JobSpec::Remove {
                    remove: remove.iter().copied().map(SkuId::from).collect(),
                },
                verify: None,
                undo_of: None,
                preview: false,
                canary: None,
            };
            let child = super::insert(
                &txn,
                NewJob {
                    tenant_id: parent.tenant_id,
                    request,
                    created_by: None,
                    parent_job_id: Some(parent.id),
                    known: None,
                },
            )
            .await?;
            let mut n = 0i64;
            for chunk in ids.chunks(ITEMS_PER_STATEMENT) {
                let mut copy = Query::insert();
                copy.into_table(job_item::Entity)
                    .columns(super::MEMBER_COLUMNS.into_iter().chain([
                        job_item::Column::Status,
                        job_item::Column::Attempts,
                        job_item::Column::RunNo,
                        job_item::Column::UpdatedAt,
                    ]))
                    .select_from(
                        Query::select()
                            .expr(Expr::value(child.id))
                            .column(job_item::Column::UserId)
                            .column(job_item::Column::UserPrincipalName)
                            .column(job_item::Column::DisplayName)
                            .column(job_item::Column::GroupId)
                            .column(job_item::Column::UsageLocation)
                            .expr(Expr::value(ItemStatus::Pending))
                            .expr(Expr::value(0i32))
                            .expr(Expr::value(1i32))
                            .expr(Expr::value(t))
                            .from(job_item::Entity)
                            .and_where(job_item::Column::JobId.eq(parent.id))
                            .and_where(job_item::Column::Id.is_in(chunk.to_vec()))
                            .to_owned(),
                    )
                    .map_err(StoreError::internal)?;
                n += txn.execute(&copy).await?.rows_affected() as i64;
            }
            super::submit::set_copied(&txn, child.id, n, t, parent.result.clone()).await?;
            crate::audit::record(
                &txn,
                crate::audit::AuditEntry {
                    tenant_id: parent.tenant_id,
                    actor_token_id: None,
                    action: "job.expiry_removal",
                    target_type: "job",
                    target_id: child.id.to_string(),
                    before: None,
                    after: Some(serde_json::json!({
                        "parent_job_id": parent.id,
                        "members": n,
                        "remove_licenses": remove,
                    })),
                },
            )
            .await?;
            children_created.push((parent.tenant_id, child.id));
        }
        // The parent's members: due no more, or again when a later temporary assign ends.
        for chunk in cleared.chunks(ITEMS_PER_STATEMENT) {
            job_item::Entity::update_many()
                .col_expr(
                    job_item::Column::DueAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(job_item::Column::JobId.eq(parent.id))
                .filter(job_item::Column::Id.is_in(chunk.to_vec()))
                .exec(&txn)
                .await?;
        }
        for (id, due_at, detail) in kept {
            job_item::Entity::update_many()
                .col_expr(job_item::Column::DueAt, Expr::value(due_at))
                .col_expr(job_item::Column::ErrorDetail, Expr::value(detail))
                .col_expr(job_item::Column::UpdatedAt, Expr::value(t))
                .filter(job_item::Column::JobId.eq(parent.id))
                .filter(job_item::Column::Id.eq(id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        created.extend(children_created);
    }
    // A skipped member's due time only ever extended an earlier assignment: once past, it
    // claims nothing more.
    job_item::Entity::update_many()
        .col_expr(
            job_item::Column::DueAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(job_item::Column::DueAt.lte(at))
        .filter(job_item::Column::Status.ne(ItemStatus::Succeeded))
        .exec(db)
        .await?;
    Ok(created)
}
