//! A job's kind, its status and its members' item statuses as stored (sea-orm active enums),
//! the one place that says which status changes are allowed, and reading a job's status under a
//! row lock before changing it.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use sea_orm::{DeriveActiveEnum, EnumIter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::view::JobView;
use super::view::model;
use crate::audit::{self, AuditEntry};
use crate::db::Db;
use crate::entities::job;
use crate::error::{StoreError, StoreResult};

/// A status or kind stored as text: its JSON name, its column value and its `Display` are the
/// same snake_case word; sea-orm reads and writes it as the enum (an unknown stored word is an
/// error when the row is read, never a string compared later).
macro_rules! stored_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, EnumIter,
            DeriveActiveEnum,
        )]
        #[serde(rename_all = "snake_case")]
        #[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
        pub enum $name { $($body)* }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// The kinds of group license job.
    pub enum JobKind {
        Assign,
        Remove,
        Replace,
        Export,
    }
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Assign => "assign",
            JobKind::Remove => "remove",
            JobKind::Replace => "replace",
            JobKind::Export => "export",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "assign" => Ok(JobKind::Assign),
            "remove" => Ok(JobKind::Remove),
            "replace" => Ok(JobKind::Replace),
            "export" => Ok(JobKind::Export),
            other => Err(format!(
                "unknown job kind `{}` (assign, remove, replace or export)",
                crate::domain::clip(other)
            )),
        }
    }
}

stored_enum! {
    /// Job status. `queued` → `running` → `finished` | `finished_with_exception` | `failed`;
    /// `cancelled` from `queued` or `running`; a rerun moves `failed` / `finished_with_exception`
    /// back to `queued`. A preview (`"preview": true`) goes `queued` → `running` → `previewed`
    /// without writing; launching it moves it back to `queued` as a real job, and a previewed job
    /// may be cancelled. A job with a canary whose first members failed too often goes `running` →
    /// `paused`; resuming it moves it back to `running`, and a paused job may be cancelled.
    pub enum JobStatus {
        Queued,
        Running,
        Finished,
        FinishedWithException,
        Failed,
        Cancelled,
        /// A preview: every member decided from the directory's state, nothing written.
        Previewed,
        /// Its canary's failed share was above the bound: nothing more is written until it is
        /// resumed or cancelled.
        Paused,
    }
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Finished,
        JobStatus::FinishedWithException,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Previewed,
        JobStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::FinishedWithException => "finished_with_exception",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Previewed => "previewed",
            JobStatus::Paused => "paused",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished
                | JobStatus::FinishedWithException
                | JobStatus::Failed
                | JobStatus::Cancelled
                | JobStatus::Previewed
        )
    }

    /// The one place that says which status changes are allowed.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Running | Cancelled | Failed)
                | (
                    Running,
                    Finished | FinishedWithException | Failed | Cancelled | Previewed | Paused
                )
                | (
                    Failed | FinishedWithException | Cancelled | Previewed,
                    Queued
                )
                | (Previewed | Paused, Cancelled)
                | (Paused, Running)
        )
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = JobStatus::ALL.iter().map(|st| st.as_str()).collect();
                format!(
                    "unknown job status `{}` ({})",
                    crate::domain::clip(s),
                    known.join(", ")
                )
            })
    }
}

stored_enum! {
    /// Status of one member's item in a job.
    pub enum ItemStatus {
        Pending,
        Succeeded,
        Failed,
        Skipped,
    }
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Skipped => "skipped",
        }
    }
}

impl std::str::FromStr for ItemStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ItemStatus::Pending),
            "succeeded" => Ok(ItemStatus::Succeeded),
            "failed" => Ok(ItemStatus::Failed),
            "skipped" => Ok(ItemStatus::Skipped),
            other => Err(format!(
                "unknown item status `{}` (pending, succeeded, failed or skipped)",
                crate::domain::clip(other)
            )),
        }
    }
}

/// Whether the job, by its status, can be rerun: `failed`, `finished_with_exception` or `cancelled`;
/// otherwise 409 `not_rerunnable`.
pub fn check_rerunnable(job: &job::Model) -> StoreResult<()> {
    let status = job.status;
    if !matches!(
        status,
        JobStatus::Failed | JobStatus::FinishedWithException | JobStatus::Cancelled
    ) {
        return Err(StoreError::conflict(
            "not_rerunnable",
            format!(
                "only failed, finished_with_exception or cancelled jobs can be rerun; this job is {}",
                status.as_str()
            ),
        ));
    }
    if super::lease::request_of(job)?.preview {
        // A preview decides members from the state read at its expansion; run again, its
        // members would be decided from no state at all. A fresh preview reads them again.
        return Err(StoreError::conflict(
            "not_rerunnable",
            "a cancelled preview is not run again; submit the preview again to read the members afresh",
        ));
    }
    Ok(())
}

/// Whether `job` can be undone: a finished, finished-with-exception, failed or cancelled
/// assign, remove or replace (409 `not_undoable` otherwise — a queued, running, paused or
/// previewed job has not ended, an export changes nothing).
pub fn check_undoable(job: &job::Model) -> StoreResult<()> {
    let ended = matches!(
        job.status,
        JobStatus::Finished
            | JobStatus::FinishedWithException
            | JobStatus::Failed
            | JobStatus::Cancelled
    );
    if job.status == JobStatus::Cancelled && job.finished_at.is_none() {
        // Members still read after a cancel may turn out written: an undo now would miss them.
        return Err(StoreError::conflict(
            "not_undoable",
            "the cancelled job's members are still being read before they are called done or cancelled; undo it once it has finished",
        ));
    }
    if ended && job.kind != JobKind::Export {
        return Ok(());
    }
    Err(StoreError::conflict(
        "not_undoable",
        format!(
            "only an ended (finished, finished with exception, failed or cancelled) assign, remove or replace job can be undone; this is a {} {} job",
            job.status, job.kind
        ),
    ))
}

/// Whether the job, by its status, can be cancelled: `queued`, `running`, `previewed` or `paused`;
/// otherwise 409 `not_cancellable`.
pub fn check_cancellable(job: &job::Model) -> StoreResult<()> {
    let status = job.status;
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

/// Whether the job, by its status, can be resumed: only a `paused` job; otherwise 409 `not_paused`.
pub fn check_resumable(job: &job::Model) -> StoreResult<()> {
    let status = job.status;
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

/// The job an operator acts on (rerun, cancel, launch, resume, undo): tenant `tenant_id`'s job
/// `job_id`, by the API token `by` (`None`: the server's operator on the CLI, or licensor itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnJob {
    pub tenant_id: Uuid,
    pub job_id: Uuid,
    pub by: Option<Uuid>,
}

/// Begin an operator's action on one job (rerun, cancel, launch, resume, undo): a transaction
/// holding the job's row lock, and the job as it is under it. 404 `not_found` when the job is
/// not the tenant's. End it with [`commit_action`].
pub(crate) async fn begin_action(
    db: &Db,
    tenant_id: Uuid,
    job_id: Uuid,
) -> StoreResult<(sea_orm::DatabaseTransaction, job::Model)> {
    let txn = crate::db::begin(db).await?;
    let job = lock(&txn, tenant_id, job_id).await?;
    Ok((txn, job))
}

/// End an operator's action: record `action` in the audit log on job `target` (the job acted
/// on, or the job the action created), with the state `before` and `after`, commit, and return
/// `target` as it is now.
pub(crate) async fn commit_action(
    txn: sea_orm::DatabaseTransaction,
    tenant_id: Uuid,
    target: Uuid,
    by: Option<Uuid>,
    action: &'static str,
    before: Option<Value>,
    after: Value,
) -> StoreResult<JobView> {
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: by,
            action,
            target_type: "job",
            target_id: target.to_string(),
            before,
            after: Some(after),
        },
    )
    .await?;
    let job = super::view::model(&txn, tenant_id, target).await?;
    let view = super::view::job_view(&txn, job).await?;
    txn.commit().await?;
    Ok(view)
}

/// Touch the job (taking SQLite's write lock / PostgreSQL's row lock first) and read it back.
pub(crate) async fn lock<C: ConnectionTrait>(
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

/// Every change of a job's status goes through here: the update that moves job `job_id` to
/// `next`, only while it is still in one of `from` (a step that raced another changes nothing:
/// callers read `rows_affected`). A `from` that [`JobStatus::can_become`] does not allow to
/// become `next` is an error ([`StoreError::Internal`]) and nothing is written — a status is
/// never overwritten with one its states do not lead to.
pub(crate) fn transition(
    job_id: Uuid,
    from: &[JobStatus],
    next: JobStatus,
) -> StoreResult<sea_orm::UpdateMany<job::Entity>> {
    if let Some(bad) = from.iter().find(|s| !s.can_become(next)) {
        return Err(StoreError::Internal(format!(
            "job {job_id}: a {bad} job cannot become {next}"
        )));
    }
    Ok(job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(next))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.is_in(from.iter().copied())))
}

/// Whether the job can be launched, by its status and whether it is a preview: only a `previewed`
/// job; a preview still reading its members → 409 `preview_not_ready`; otherwise 409
/// `not_a_preview`.
pub fn check_launchable(job: &job::Model) -> StoreResult<()> {
    launchable(job.status, super::lease::request_of(job)?.preview)
}

fn launchable(status: JobStatus, preview: bool) -> StoreResult<()> {
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

/// Whether the job has stopped running (cancelled, failed, gone), read now. A database that
/// does not answer is waited for (up to [`crate::db::OUTAGE_PATIENCE`]) and any other failure to read
/// counts as "still running": a step never calls its members cancelled because the database did
/// not say.
pub async fn stopped_meanwhile(db: &Db, job_id: Uuid) -> bool {
    loop {
        match super::finish::status(db, job_id).await {
            Ok(status) => return status != Some(JobStatus::Running),
            Err(e) if e.is_unavailable() => {
                if !crate::db::wait_until_available(db, crate::db::OUTAGE_PATIENCE).await {
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "reading the job's status failed; going on");
                return false;
            }
        }
    }
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
        assert_eq!(code(launchable(JobStatus::Previewed, true)), None);
        for s in [JobStatus::Queued, JobStatus::Running] {
            assert_eq!(
                code(launchable(s, true)).as_deref(),
                Some("preview_not_ready")
            );
            assert_eq!(code(launchable(s, false)).as_deref(), Some("not_a_preview"));
        }
        for s in [JobStatus::Finished, JobStatus::Cancelled, JobStatus::Paused] {
            assert_eq!(code(launchable(s, false)).as_deref(), Some("not_a_preview"));
        }
    }

    #[test]
    fn job_status_transitions() {
        use JobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(FinishedWithException));
        assert!(FinishedWithException.can_become(Queued));
        assert!(!Finished.can_become(Queued));
        assert!(!Cancelled.can_become(Running));
        assert!(Running.can_become(Previewed));
        assert!(Previewed.can_become(Queued));
        assert!(Previewed.can_become(Cancelled));
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(Paused.can_become(Cancelled));
        assert!(!Paused.can_become(Queued));
        assert!(!Paused.is_terminal());
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
    }

    #[test]
    fn an_illegal_transition_is_an_error_and_writes_nothing() {
        let id = Uuid::nil();
        for (from, next) in [
            (JobStatus::Finished, JobStatus::Queued),
            (JobStatus::Cancelled, JobStatus::Running),
            (JobStatus::Paused, JobStatus::Queued),
            (JobStatus::Queued, JobStatus::Finished),
        ] {
            match transition(id, &[from], next) {
                Err(StoreError::Internal(detail)) => {
                    assert!(detail.contains(from.as_str()) && detail.contains(next.as_str()))
                }
                other => panic!("{from} -> {next}: {:?}", other.map(|_| ())),
            }
        }
        // One illegal source in the list refuses the whole change.
        assert!(
            transition(
                id,
                &[JobStatus::Running, JobStatus::Finished],
                JobStatus::Failed
            )
            .is_err()
        );
        assert!(
            transition(
                id,
                &[JobStatus::Queued, JobStatus::Running],
                JobStatus::Failed
            )
            .is_ok()
        );
        assert!(transition(id, &[JobStatus::Cancelled], JobStatus::Queued).is_ok());
    }
}
