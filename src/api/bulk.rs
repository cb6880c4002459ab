//! Acting on many jobs at once: `POST /v1/jobs/rerun` and `POST /v1/jobs/cancel`, on listed ids
//! or on every job a filter matches (the Job Monitor's "Select all N matching"), with a dry run
//! that only counts, and one audit entry per call naming what was acted on and what refused.

use std::collections::HashSet;

use axum::extract::State;
use chrono::{DateTime, Utc};
use licensor_core::audit::{self, AuditEntry};
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::entities::job;
use licensor_core::jobs::{self, JobFilter, JobView};
use licensor_core::tokens::Principal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::AsOperator;
use super::extract::Json;
use super::problem::{ApiError, ApiResult};

/// Most ids one call may list.
pub const MAX_IDS: usize = 500;
/// Jobs read per batch while working through a filter's matches.
const BATCH: u64 = 500;
/// Ids written into the audit entry per list (acted on, refused); the counts are always whole.
const AUDIT_IDS: usize = 1_000;

/// Which jobs a filter matches; every field given must hold (at least one is needed).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// Any of these statuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<JobStatus>,
    /// Any of these kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kind: Vec<JobKind>,
    /// Created strictly before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Created at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    /// Jobs that selected this group (its object id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Uuid>,
}

impl BulkFilter {
    fn to_job_filter(&self) -> Result<JobFilter, ApiError> {
        if self.status.is_empty()
            && self.kind.is_empty()
            && self.created_before.is_none()
            && self.created_after.is_none()
            && self.group.is_none()
        {
            return Err(ApiError::unprocessable(
                "empty_filter",
                "a filter needs at least one of status, kind, created_before, created_after, group",
            ));
        }
        if let (Some(before), Some(after)) = (self.created_before, self.created_after)
            && before <= after
        {
            return Err(ApiError::unprocessable(
                "invalid_filter",
                "created_before must be later than created_after",
            ));
        }
        Ok(JobFilter {
            status: self.status.clone(),
            kind: self.kind.clone(),
            group: self.group,
            created_before: self.created_before,
            created_after: self.created_after,
            id_range: None,
        })
    }
}

/// Jobs to act on: exactly one of `job_ids` and `filter`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 500 job ids.
    #[schema(min_items = 1, max_items = 500)]
    pub job_ids: Option<Vec<Uuid>>,
    /// Every job of the tenant this matches (at most `jobs.bulk_max_jobs`, default 10,000).
    pub filter: Option<BulkFilter>,
    /// Only say what would be done: `acted_on` counts the jobs that would be, nothing changes
    /// and no audit entry is written.
    #[serde(default)]
    pub dry_run: bool,
}

/// A job the call did not act on, and why (`not_rerunnable`, `not_cancellable`, `not_found`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerunRejected {
    pub job_id: Uuid,
    pub code: String,
    pub detail: String,
}

/// What a bulk call did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct BulkSummary {
    /// `true`: nothing was done; the counts say what would have been.
    pub dry_run: bool,
    /// Jobs the ids or the filter named.
    pub matched: u64,
    /// Jobs acted on (rerun: queued again; cancel: cancelled).
    pub acted_on: u64,
    /// Their ids, newest first with a filter.
    pub acted_on_ids: Vec<Uuid>,
    /// Jobs refused (`matched - acted_on`).
    pub refused: u64,
    /// The refused jobs with the reason.
    pub rejected: Vec<RerunRejected>,
}

/// The answer of `POST /v1/jobs/rerun`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RerunOutcome {
    #[serde(flatten)]
    pub summary: BulkSummary,
    /// With `job_ids`: the jobs queued again. With a filter or a dry run: empty (see
    /// `acted_on_ids`).
    pub rerun: Vec<JobView>,
}

/// The answer of `POST /v1/jobs/cancel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelOutcome {
    #[serde(flatten)]
    pub summary: BulkSummary,
    /// With `job_ids`: the jobs as cancelled. With a filter or a dry run: empty (see
    /// `acted_on_ids`).
    pub cancelled: Vec<JobView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Rerun,
    Cancel,
}

impl Action {
    /// The check the action itself makes, so a dry run refuses what the real run refuses.
    async fn check(
        self,
        db: &licensor_core::db::Db,
        job: &job::Model,
    ) -> Result<(), licensor_core::StoreError> {
        self.check_status(job)?;
        match self {
            Action::Rerun => jobs::rerun::check_not_undone(db, job).await,
            Action::Cancel => Ok(()),
        }
    }

    /// The part of [`Action::check`] read from the job row alone: a real run skips the jobs it
    /// refuses without opening the action, which makes the whole check itself.
    fn check_status(self, job: &job::Model) -> Result<(), licensor_core::StoreError> {
        match self {
            Action::Rerun => jobs::check_rerunnable(job),
            Action::Cancel => jobs::check_cancellable(job),
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            Action::Rerun => "job.bulk_rerun",
            Action::Cancel => "job.bulk_cancel",
        }
    }
}

/// Which jobs, checked.
enum Targets {
    Ids(Vec<Uuid>),
    Filter(JobFilter),
}

fn targets(body: &BulkRequest) -> Result<Targets, ApiError> {
    match (&body.job_ids, &body.filter) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(ApiError::unprocessable(
                    "invalid_job_ids",
                    format!("give between 1 and {MAX_IDS} job ids"),
                ));
            }
            let mut seen = HashSet::new();
            Ok(Targets::Ids(
                ids.iter().copied().filter(|id| seen.insert(*id)).collect(),
            ))
        }
        (None, Some(filter)) => Ok(Targets::Filter(filter.to_job_filter()?)),
        _ => Err(ApiError::unprocessable(
            "ids_or_filter",
            "give exactly one of job_ids and filter",
        )),
    }
}

/// Refuse `id` with `e`'s code and detail; a server error ends the call.
fn refuse(summary: &mut BulkSummary, id: Uuid, e: licensor_core::StoreError) -> ApiResult<()> {
    let problem = ApiError::from(e);
    if problem.status.is_server_error() {
        return Err(problem);
    }
    summary.refused += 1;
    summary.rejected.push(RerunRejected {
        job_id: id,
        code: problem.code.to_owned(),
        detail: problem.detail,
    });
    Ok(())
}

/// Act on one job that looked eligible; the job's own function re-checks it under its lock.
async fn act_on(
    state: &AppState,
    me: &Principal,
    action: Action,
    id: Uuid,
    summary: &mut BulkSummary,
    views: Option<&mut Vec<JobView>>,
) -> ApiResult<()> {
    let done = match action {
        Action::Rerun => jobs::rerun(&state.db, me.on_job(id)).await,
        Action::Cancel => jobs::cancel(&state.db, me.on_job(id)).await,
    };
    match done {
        Ok(view) => {
            match action {
                Action::Rerun => super::jobs::enqueue(state, &view, me.tenant_id).await,
                // The run's end event goes to the tenant's webhooks now, not at the next
                // reconcile.
                Action::Cancel => {
                    super::webhooks::queue_job_events(state, id).await;
                    super::jobs::settle_soon(state, &view, me.tenant_id).await;
                }
            }
            summary.acted_on += 1;
            summary.acted_on_ids.push(id);
            if let Some(views) = views {
                views.push(view);
            }
            Ok(())
        }
        Err(e) => refuse(summary, id, e),
    }
}

async fn run(
    state: &AppState,
    me: Principal,
    action: Action,
    body: BulkRequest,
) -> ApiResult<(BulkSummary, Vec<JobView>)> {
    let max_jobs = state.jobs.bulk_max_jobs;
    let targets = targets(&body)?;
    let mut summary = BulkSummary {
        dry_run: body.dry_run,
        ..BulkSummary::default()
    };
    let mut views = Vec::new();
    match &targets {
        Targets::Ids(ids) => {
            summary.matched = ids.len() as u64;
            for &id in ids {
                if body.dry_run {
                    let checked = match jobs::model(&state.db, me.tenant_id, id).await {
                        Ok(m) => action.check(&state.db, &m).await,
                        Err(e) => Err(e),
                    };
                    match checked {
                        Ok(()) => {
                            summary.acted_on += 1;
                            summary.acted_on_ids.push(id);
                        }
                        Err(e) => refuse(&mut summary, id, e)?,
                    }
                } else {
                    act_on(state, &me, action, id, &mut summary, Some(&mut views)).await?;
                }
            }
        }
        Targets::Filter(filter) => {
            let matched = jobs::count(&state.db, me.tenant_id, filter).await?;
            let matched = u64::try_from(matched).unwrap_or_default();
            if matched > max_jobs {
                return Err(ApiError::unprocessable(
                    "too_many_jobs",
                    format!(
                        "the filter matches {matched} jobs; one call acts on at most {max_jobs}: narrow it (e.g. created_before / created_after)"
                    ),
                )
                .with_extra(json!({"matched": matched, "max_jobs": max_jobs})));
            }
            // Newest first, in batches; jobs acted on drop out of a status filter but the
            // cursor moves past them anyway. Jobs that came to match since the count are taken
            // too, up to the bound.
            let mut after = None;
            let mut seen = 0u64;
            'batches: loop {
                let batch = jobs::matching(&state.db, me.tenant_id, filter, after, BATCH).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.id);
                for job in batch {
                    let id = job.id;
                    if seen == max_jobs {
                        break 'batches;
                    }
                    seen += 1;
                    let eligible = if body.dry_run {
                        action.check(&state.db, &job).await
                    } else {
                        action.check_status(&job)
                    };
                    match eligible {
                        Err(e) => refuse(&mut summary, id, e)?,
                        Ok(()) if body.dry_run => {
                            summary.acted_on += 1;
                            summary.acted_on_ids.push(id);
                        }
                        Ok(()) => act_on(state, &me, action, id, &mut summary, None).await?,
                    }
                }
            }
            summary.matched = seen;
        }
    }
    if !body.dry_run {
        // Ids that are not the tenant's jobs are counted, never written into its log: another
        // tenant's job id must not show up there.
        let unknown: HashSet<Uuid> = summary
            .rejected
            .iter()
            .filter(|r| r.code == "not_found")
            .map(|r| r.job_id)
            .collect();
        let selection = match &targets {
            Targets::Filter(_) => json!({"filter": body.filter}),
            Targets::Ids(ids) => json!({
                "job_ids": ids.iter().filter(|id| !unknown.contains(id)).collect::<Vec<_>>(),
                "unknown_ids": unknown.len(),
            }),
        };
        let first = |ids: &[Uuid]| ids.iter().take(AUDIT_IDS).copied().collect::<Vec<_>>();
        let refused_ids: Vec<Value> = summary
            .rejected
            .iter()
            .filter(|r| !unknown.contains(&r.job_id))
            .take(AUDIT_IDS)
            .map(|r| json!({"job_id": r.job_id, "code": r.code}))
            .collect();
        audit::record(
            &state.db,
            AuditEntry {
                tenant_id: me.tenant_id,
                actor_token_id: Some(me.token_id),
                action: action.audit_action(),
                target_type: "jobs",
                target_id: match targets {
                    Targets::Ids(_) => "job_ids".to_owned(),
                    Targets::Filter(_) => "filter".to_owned(),
                },
                before: Some(selection),
                after: Some(json!({
                    "matched": summary.matched,
                    "acted_on": summary.acted_on,
                    "acted_on_ids": first(&summary.acted_on_ids),
                    "refused": summary.refused,
                    "refused_jobs": refused_ids,
                    "ids_complete": summary.acted_on_ids.len() <= AUDIT_IDS
                        && summary.rejected.len() <= AUDIT_IDS,
                })),
            },
        )
        .await?;
    }
    Ok((summary, views))
}

/// Rerun several jobs at once (operator) — the Job Monitor's checkboxes or "Select all N
/// matching" and Start. Give exactly one of `job_ids` (1–500) and `filter` (else 422
/// `ids_or_filter`; a filter without a field → 422 `empty_filter`); a filter matching more than
/// `jobs.bulk_max_jobs` jobs (default 10,000) → 422 `too_many_jobs` with `matched`, nothing
/// done. Each `failed`, `finished_with_exception` or `cancelled` job is queued again as by
/// `POST /v1/jobs/{id}/rerun`; the others are listed in `rejected` (`not_rerunnable`,
/// `not_found`). `dry_run: true` only counts. One audit entry `job.bulk_rerun` records who, the
/// ids or filter, the jobs acted on and the refused count.
#[utoipa::path(post, path = "/v1/jobs/rerun", tag = "jobs", security(("bearer" = [])),
    request_body = BulkRequest,
    responses(
        (status = 200, body = RerunOutcome),
    ))]
pub async fn rerun_jobs(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    Json(body): Json<BulkRequest>,
) -> ApiResult<Json<RerunOutcome>> {
    let (summary, rerun) = run(&state, me, Action::Rerun, body).await?;
    Ok(Json(RerunOutcome { summary, rerun }))
}

/// Cancel several jobs at once (operator): as `POST /v1/jobs/rerun`, for `queued` and
/// `running` jobs, each cancelled as by `POST /v1/jobs/{id}/cancel`; others are refused with
/// `not_cancellable`. Audit entry `job.bulk_cancel`.
#[utoipa::path(post, path = "/v1/jobs/cancel", tag = "jobs", security(("bearer" = [])),
    request_body = BulkRequest,
    responses(
        (status = 200, body = CancelOutcome),
    ))]
pub async fn cancel_jobs(
    State(state): State<AppState>,
    AsOperator { me, .. }: AsOperator,
    Json(body): Json<BulkRequest>,
) -> ApiResult<Json<CancelOutcome>> {
    let (summary, cancelled) = run(&state, me, Action::Cancel, body).await?;
    Ok(Json(CancelOutcome { summary, cancelled }))
}
