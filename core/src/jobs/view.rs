//! The read models of jobs: a job with its progress, its runs, items, error groups and changes, and
//! the lists and counts the API, the Job Monitor and the metrics read. Every function that serves
//! an API caller takes the tenant id; another tenant's job is "not found".

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::history::{self, MemberRef};
use super::{activity, codes, export, notes, plan, preview};
use crate::db::Db;
use crate::directory::AssignedLicense;
use crate::domain::{ItemStatus, JobKind, JobStatus};
use crate::entities::{api_token, job, job_item, job_run};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

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

impl SkuRef {
    /// The id and part number of a SKU the tenant subscribes to.
    pub fn of(sku: &crate::directory::Sku) -> SkuRef {
        SkuRef {
            sku_id: sku.sku_id,
            sku_part_number: sku.sku_part_number.clone(),
        }
    }
}

/// What a job learnt from the directory while it ran (`jobs.result`); a submitted job starts
/// with what the API read as it checked the request (its groups' names, the SKUs).
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
    /// A paused job (its canary) reads on once resumed, so it says so too; a job that ended
    /// before all were read (cancelled, failed) does not.
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
    /// When the latest run ended. A `cancelled` job's stays `null` while members are still
    /// pending — held by a step, or read before they are called anything because licensor may
    /// have written them — and is set with its final counts ([`JobView::settled`]).
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
    /// The job has ended and its counts are final: a terminal status, and for a `cancelled`
    /// job, no member pending any more (`finished_at` set). A job can leave an ended status
    /// only by an operator's rerun or launch.
    pub fn settled(&self) -> bool {
        self.status.is_terminal()
            && (self.status != JobStatus::Cancelled || self.finished_at.is_some())
    }

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
        let kind = m.kind;
        let status = m.status;
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
                && matches!(
                    status,
                    JobStatus::Queued | JobStatus::Running | JobStatus::Paused
                ),
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

pub(crate) async fn job_view<C: ConnectionTrait>(conn: &C, m: job::Model) -> StoreResult<JobView> {
    Ok(views(conn, vec![m]).await?.remove(0))
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
    job_view(db, model(db, tenant_id, job_id).await?).await
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
            q = q.filter(job::Column::Status.is_in(self.status.iter().copied()));
        }
        if !self.kind.is_empty() {
            q = q.filter(job::Column::Kind.is_in(self.kind.iter().copied()));
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

/// The tenant's jobs that match `filter`, newest first, older than `after` when given, at most
/// `limit`: the batches a bulk action works through (each job checked as the action itself
/// checks it).
pub async fn matching(
    db: &Db,
    tenant_id: Uuid,
    filter: &JobFilter,
    after: Option<Uuid>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    let mut q = filter.query(tenant_id);
    if let Some(after) = after {
        q = q.filter(job::Column::Id.lt(after));
    }
    Ok(q.order_by_desc(job::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Number of jobs per kind and status across all tenants, for metrics.
pub async fn count_by_status(db: &Db) -> StoreResult<Vec<(JobKind, JobStatus, i64)>> {
    let rows: Vec<(JobKind, JobStatus, i64)> = job::Entity::find()
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

/// Members waiting in queued and running jobs, and in cancelled jobs still settling, across
/// all tenants: the work the queue holds.
pub async fn pending_items(db: &Db) -> StoreResult<i64> {
    let rows: Vec<(i64, i64, i64, i64)> = job::Entity::find()
        .select_only()
        .column(job::Column::Total)
        .column(job::Column::Succeeded)
        .column(job::Column::Failed)
        .column(job::Column::Skipped)
        .filter(
            job::Column::Status
                .is_in([JobStatus::Queued, JobStatus::Running])
                .or(super::cancel::settling()),
        )
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(t, s, f, k)| Ord::max(t - s - f - k, 0))
        .sum())
}

/// One run of a job: who started it, when, and its counts — final once `finished_at` is set;
/// of the run still open, its members' outcomes as they stand (pending members count in
/// `total` only).
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
    let job = model(db, tenant_id, job_id).await?;
    let rows = job_run::Entity::find()
        .filter(job_run::Column::JobId.eq(job_id))
        .order_by_asc(job_run::Column::RunNo)
        .all(db)
        .await?;
    let mut runs = Vec::with_capacity(rows.len());
    for r in rows {
        // A run's counts are written when it closes. The open first run's are the job's own
        // counters (one row read); an open rerun's are counted from its items, since the
        // job's counters hold every run's members.
        let (total, succeeded, failed, skipped) = match r.finished_at {
            Some(_) => (r.total, r.succeeded, r.failed, r.skipped),
            None if r.run_no == 1 => (job.total, job.succeeded, job.failed, job.skipped),
            None => {
                let c = super::finish::RunCounts::of(db, job_id, Some(r.run_no)).await?;
                (c.total, c.succeeded, c.failed, c.skipped)
            }
        };
        runs.push(RunView {
            run_no: r.run_no,
            status: r.status,
            started_by: r.started_by,
            started_at: r.started_at,
            finished_at: r.finished_at,
            total,
            succeeded,
            failed,
            skipped,
        });
    }
    Ok(runs)
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
    /// The codes of `note`'s parts when it is made of licensor's fixed notes alone (e.g.
    /// `["verified"]`), for clients that show them in another language; empty when the note
    /// holds free text or there is none ([`super::notes`]).
    pub note_codes: Vec<String>,
    pub attempts: i32,
    pub run_no: i32,
    pub updated_at: chrono::DateTime<Utc>,
    /// Previews: the member's predicted outcome (kept after the launch, to compare).
    pub prediction: Option<preview::Prediction>,
}

impl ItemView {
    pub fn from_model(m: job_item::Model) -> StoreResult<ItemView> {
        let status: ItemStatus = m.status;
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
            note_codes: note.as_deref().map(notes::codes_of).unwrap_or_default(),
            note,
            attempts: m.attempts,
            run_no: m.run_no,
            updated_at: m.updated_at,
            prediction: m.prediction.and_then(|v| serde_json::from_value(v).ok()),
        })
    }
}

/// Which of a job's items to list: any of `status` and any of the error `code`s (empty: all).
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
    let q = items_of(job_id, &filter.status, &filter.code);
    let page = item_page(db, q, page).await?;
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
        .filter(job_item::Column::Status.eq(ItemStatus::Failed))
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

/// A license a member holds directly, as the change ledger answers it: the SKU and the service
/// plans switched off for the member. The ledger stores licenses as Graph names them (`skuId`,
/// `disabledPlans`); the API answers them in snake_case like every other field, old entries too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LedgerLicense {
    pub sku_id: Uuid,
    pub disabled_plans: Vec<Uuid>,
}

impl LedgerLicense {
    /// Licenses as the ledger stores them, in the shape the API answers.
    pub fn all(licenses: Vec<AssignedLicense>) -> Vec<LedgerLicense> {
        licenses
            .into_iter()
            .map(|l| LedgerLicense {
                sku_id: l.sku_id,
                disabled_plans: l.disabled_plans,
            })
            .collect()
    }
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
    pub before: Vec<LedgerLicense>,
    /// Licenses held directly after the write: as read back when the job verifies, else as
    /// written.
    pub after: Vec<LedgerLicense>,
    /// `true`: a read after the write confirmed it; `false`: the directory showed something
    /// else (drifted); `null`: not verified.
    pub verified: Option<bool>,
    /// The usage location the job set for the member before its license write (`null`: none
    /// set) — kept also when that write then failed.
    pub usage_location: Option<plan::LocationChange>,
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
            before: LedgerLicense::all(change.before),
            after: LedgerLicense::all(change.after),
            verified: change.verified,
            usage_location: change.usage_location,
            updated_at: item.updated_at,
        }))
    }
}

/// The change ledger's filter: the items' own ([`ItemFilter`]), and one member.
#[derive(Debug, Default, Clone)]
pub struct ChangeFilter {
    pub items: ItemFilter,
    /// One member, as member history names it ([`MemberRef::parse`]: a user id in any of a
    /// GUID's forms, or a user principal name in any case); `None`: every member.
    pub user: Option<MemberRef>,
}

/// A page of a job's change ledger ([`changes`]) with its counts.
#[derive(Debug)]
pub struct Ledger {
    pub page: Page<ChangeView>,
    /// How many entries match the filter (all pages).
    pub total: i64,
    /// How many of the job's entries, whatever the filter, an undo takes back: those of
    /// members that succeeded (a failed member's entry — a drifted write, or a usage location
    /// set before a license write that failed — is not undone).
    pub undoable: i64,
}

/// A page of a job's change ledger, in member order, with how many entries match the filter
/// and how many an undo takes back.
pub async fn changes(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
    filter: &ChangeFilter,
    page: &PageRequest<i64>,
) -> StoreResult<Ledger> {
    model(db, tenant_id, job_id).await?;
    let mut q = items_of(job_id, &filter.items.status, &filter.items.code)
        .filter(job_item::Column::Change.is_not_null());
    if let Some(user) = &filter.user {
        q = q.filter(member_is(user));
    }
    let total = count_items(db, q.clone()).await?;
    let undoable = count_items(
        db,
        items_of(job_id, &[ItemStatus::Succeeded], &[])
            .filter(job_item::Column::Change.is_not_null()),
    )
    .await?;
    let page = item_page(db, q, page).await?;
    let mut data = Vec::with_capacity(page.data.len());
    for m in &page.data {
        if let Some(c) = ChangeView::of(m)? {
            data.push(c);
        }
    }
    Ok(Ledger {
        page: Page {
            data,
            next_cursor: page.next_cursor,
        },
        total,
        undoable,
    })
}

/// The items of the member `user` names, matched as the member's history matches it: a user
/// id as the directory writes it (a lower-case hyphenated GUID, whichever form it was given
/// in), or a user principal name in any case (they are case-insensitive in the directory, and
/// ASCII: [`history::upn_is`]).
fn member_is(user: &MemberRef) -> sea_orm::sea_query::SimpleExpr {
    match user {
        MemberRef::UserId(id) => job_item::Column::UserId.eq(id.hyphenated().to_string()),
        MemberRef::Upn(upn) => history::upn_is(upn),
    }
}

/// How many items `q` selects.
async fn count_items(db: &Db, q: Select<job_item::Entity>) -> StoreResult<i64> {
    Ok(q.select_only()
        .column_as(job_item::Column::Id.count(), "n")
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0))
}

/// The job's items with one of `status` and one of `code` (an empty list: any).
fn items_of(job_id: Uuid, status: &[ItemStatus], code: &[String]) -> Select<job_item::Entity> {
    let mut q = job_item::Entity::find().filter(job_item::Column::JobId.eq(job_id));
    if !status.is_empty() {
        q = q.filter(job_item::Column::Status.is_in(status.iter().copied()));
    }
    if !code.is_empty() {
        q = q.filter(job_item::Column::ErrorCode.is_in(code.iter().cloned()));
    }
    q
}

/// One page of `q`'s items, in member order (item id), after `page`'s cursor.
async fn item_page(
    db: &Db,
    q: Select<job_item::Entity>,
    page: &PageRequest<i64>,
) -> StoreResult<Page<job_item::Model>> {
    let q = match page.after {
        Some(after) => q.filter(job_item::Column::Id.gt(after)),
        None => q,
    };
    let rows = q
        .order_by_asc(job_item::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    Ok(page.finish(rows, |r| r.id))
}
