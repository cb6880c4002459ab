//! Expansion: a job started, its groups read page by page into items, where it got to kept so
//! another worker can go on.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait, Statement,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::SetNull;
use super::lease::load;
use super::now;
use super::outcome::JobFailure;
use super::plan::Snapshot;
use super::view::JobFacts;
use super::{GroupRef, JobSpec, ParsedRequest, SkuRef, export, preview};
use crate::config::JobSettings;
use crate::db::Db;
use crate::directory::{DirectoryClient, DirectoryError};
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_run};
use crate::error::{StoreError, StoreResult};
use crate::tasks::unless_stopped;

/// A member found by expansion.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub group_id: String,
    pub usage_location: Option<String>,
    /// The member's [`super::plan::Snapshot`] (an export's: its
    /// [`super::export::ExportMember`]), as JSON text.
    pub licenses: Option<String>,
    /// A preview's prediction for the member, a [`super::preview::Prediction`], when it was
    /// made as the member was read (`None`: decided later, or not a preview).
    pub prediction: Option<Value>,
}

/// Move a queued job to running (also its current run). Returns the job when it is running
/// afterwards (started now or earlier), `None` when it is finished, cancelled or gone.
///
/// The job's row and its run's go in one round trip ([`crate::db::execute_together`]): the
/// run's row is updated only when the job's was by this call (running, started at this call's
/// time), so a job started earlier, or cancelled meanwhile, keeps its run as it is.
pub async fn start(db: &Db, tenant_id: Uuid, job_id: Uuid) -> StoreResult<Option<job::Model>> {
    let t = now();
    let backend = db.get_database_backend();
    let started = super::state::transition(job_id, &[JobStatus::Queued], JobStatus::Running)?
        .col_expr(job::Column::StartedAt, Expr::value(t))
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .col_expr(job::Column::LastProgressAt, Expr::value(t))
        .filter(job::Column::TenantId.eq(tenant_id))
        .build(backend);
    let started_now = sea_orm::sea_query::Query::select()
        .column(job::Column::Runs)
        .from(job::Entity)
        .and_where(job::Column::Id.eq(job_id))
        .and_where(job::Column::TenantId.eq(tenant_id))
        .and_where(job::Column::Status.eq(JobStatus::Running))
        .and_where(job::Column::StartedAt.eq(t))
        .to_owned();
    let run = job_run::Entity::update_many()
        .col_expr(job_run::Column::Status, Expr::value(JobStatus::Running))
        .col_expr(job_run::Column::StartedAt, Expr::value(t))
        .filter(job_run::Column::JobId.eq(job_id))
        .filter(job_run::Column::RunNo.in_subquery(started_now))
        .build(backend);
    crate::db::execute_together(db, vec![started, run]).await?;
    let Some(job) = load(db, tenant_id, job_id).await? else {
        return Ok(None);
    };
    Ok((job.status == JobStatus::Running).then_some(job))
}

/// Record what the job learnt about its groups and SKUs.
pub async fn set_facts(db: &Db, job_id: Uuid, facts: &JobFacts) -> StoreResult<()> {
    let value = serde_json::to_value(facts).map_err(StoreError::internal)?;
    store_facts(job_id, value).exec(db).await?;
    Ok(())
}

/// The update storing the job's facts ([`JobFacts`] as JSON).
fn store_facts(job_id: Uuid, facts: Value) -> sea_orm::UpdateMany<job::Entity> {
    job::Entity::update_many()
        .col_expr(job::Column::Result, Expr::value(facts))
        .col_expr(job::Column::UpdatedAt, Expr::value(now()))
        .filter(job::Column::Id.eq(job_id))
}

/// Store the facts an expansion step read and did not store with a page ([`PageMark::facts`])
/// before it ended, if any — only while `owner` still holds the expansion ([`held`]): a step
/// taken for dead never overwrites what a live step stored since (a preview's summary).
async fn keep_facts(db: &Db, job_id: Uuid, owner: &str, facts: Option<Value>) -> StoreResult<()> {
    if let Some(facts) = facts {
        store_facts(job_id, facts)
            .filter(held(owner))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Where a job's expansion has got to (`jobs.expand_position`): the index of the selected group
/// being read (in the request's order) and the directory's `@odata.nextLink` to that group's
/// next page of members (`None`: the group's first page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpandPosition {
    pub group: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl ExpandPosition {
    /// The stored position of `job` (the start when none is stored).
    pub fn of(job: &job::Model) -> ExpandPosition {
        job.expand_position
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// The position after a page of group `group` whose next page is `next` (`None`: the
    /// group's last page, so the next group's start).
    pub fn after_page(group: usize, next: Option<String>) -> ExpandPosition {
        match next {
            Some(link) => ExpandPosition {
                group,
                next: Some(link),
            },
            None => ExpandPosition {
                group: group + 1,
                next: None,
            },
        }
    }
}

/// A stored page's mark: the expansion's position after it and the expander's renewed lease.
/// It may carry what else the expansion has to store, so it goes in the page's transaction
/// rather than in a write of its own.
#[derive(Debug, Clone, Default)]
pub struct PageMark {
    pub position: ExpandPosition,
    pub lease_until: DateTime<Utc>,
    /// What the job learnt about its groups and SKUs ([`JobFacts`], as JSON), not stored yet.
    pub facts: Option<Value>,
    /// The page is the expansion's last: the job is marked expanded with it (as
    /// [`mark_expanded`] does), and the expansion let go.
    pub last: bool,
    /// With `last`: the job was launched from a preview (its facts keep the preview's summary),
    /// whose members may have been read afresh: their predictions are carried over
    /// ([`super::launch::carry_predictions`]) as the job is marked expanded.
    pub carry: bool,
}

/// The job's expansion is held by `owner` (a step's lease owner, `{process}/{step}`) and its
/// lease has not run out or been ended. A step whose process was taken for dead (its heartbeats
/// stopped for a while, see [`super::processes::take_over`]: its leases are ended, its name
/// kept) holds nothing from then on, whether or not another step has claimed the expansion
/// yet — so it never renews, stores, marks or fails what a live step now reads, and two steps
/// never read the same groups side by side.
fn held(owner: &str) -> sea_orm::sea_query::SimpleExpr {
    held_at(owner, now())
}

/// [`held`] as of `at`: the statements of one transaction ask it of one time, so a lease that
/// runs out while they run does not hold for the first and not for the last.
fn held_at(owner: &str, at: DateTime<Utc>) -> sea_orm::sea_query::SimpleExpr {
    job::Column::ExpandOwner
        .eq(owner)
        .and(job::Column::ExpandUntil.gte(at))
}

/// Take the job's expansion for `owner` until `until`, unless another step holds it and its
/// lease has not run out (or the job is expanded already). One expander at a time: repeated
/// `Run` messages (orphan recovery, the reconciler, a lane noticing a dead expander) never read
/// the same pages side by side. Nothing is taken while `owner`'s process has no row in
/// `worker_processes` ([`super::processes::is_live`]). Returns whether `owner` holds it now.
pub async fn claim_expansion(
    db: &Db,
    job_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    let taken = job::Entity::update_many()
        .col_expr(job::Column::ExpandOwner, Expr::value(owner))
        .col_expr(job::Column::ExpandUntil, Expr::value(until))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::ExpandedAt.is_null())
        .filter(super::processes::is_live(
            db,
            super::processes::process_of(owner),
        ))
        .filter(
            job::Column::ExpandUntil
                .is_null()
                .or(job::Column::ExpandUntil.lt(now()))
                .or(job::Column::ExpandOwner.eq(owner)),
        )
        .exec(db)
        .await?
        .rows_affected;
    Ok(taken == 1)
}

/// Renew `owner`'s hold on the job's expansion until `until`. Returns whether it still holds it
/// (see [`held`]); `false`: the step stops at its next page.
pub async fn renew_expansion(
    db: &Db,
    job_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    let renewed = job::Entity::update_many()
        .col_expr(job::Column::ExpandUntil, Expr::value(until))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::ExpandedAt.is_null())
        .filter(held(owner))
        .exec(db)
        .await?
        .rows_affected;
    Ok(renewed == 1)
}

/// Let go of the job's expansion held by `owner` (it stopped: cancelled, failed), keeping its
/// position, so the next run goes on from there at once.
pub async fn release_expansion(db: &Db, job_id: Uuid, owner: &str) -> StoreResult<()> {
    job::Entity::update_many()
        .set_null([job::Column::ExpandOwner, job::Column::ExpandUntil])
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::ExpandOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

/// Whether `owner` still holds the job's expansion (see [`held`]). A step that stopped reading
/// asks before it acts on the job (fails it, queues it again): when it no longer holds the
/// expansion, its process was taken for dead and a live step reads on, or will.
pub async fn holds_expansion(db: &Db, job_id: Uuid, owner: &str) -> StoreResult<bool> {
    Ok(job::Entity::find_by_id(job_id)
        .filter(job::Column::ExpandedAt.is_null())
        .filter(held(owner))
        .one(db)
        .await?
        .is_some())
}

/// Whether the job still needs expanding and nobody holds its expansion (never started, or its
/// expander's lease ran out: it died).
pub fn expansion_abandoned(job: &job::Model) -> bool {
    job.expanded_at.is_none() && job.expand_until.is_none_or(|until| until < now())
}

/// Insert expanded members as items with `status` (pending; succeeded for an export). A member
/// already in the job (from another selected group, or from an earlier delivery of the same
/// expansion) is not inserted again. Returns how many were new — the job's counters and, when
/// given, the expansion's position after this page with its renewed lease move with them in the
/// same transaction, so a crash never loses a stored page's place — or `None` when the job is no
/// longer running in run `run_no` (cancelled, failed, or cancelled and run again since): then
/// nothing is inserted, so a cancel never leaves members pending behind it and every member
/// belongs to the run that read it. `None` also when `holder`, the step storing the page, no
/// longer holds the job's expansion (see [`held`]): nothing is stored then either. The mark's
/// facts and, on the last page, the job's mark as expanded ([`PageMark`]) go with the page too.
pub async fn insert_items(
    db: &Db,
    job_id: Uuid,
    run_no: i32,
    holder: &str,
    items: Vec<NewItem>,
    status: ItemStatus,
    mark: Option<&PageMark>,
) -> StoreResult<Option<u64>> {
    let mark = match mark {
        Some(m) => Some((
            m,
            serde_json::to_value(&m.position).map_err(StoreError::internal)?,
        )),
        None => None,
    };
    let t = now();
    let store_mark = |(mark, position): (&PageMark, Value)| {
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::ExpandPosition, Expr::value(position))
            .filter(job::Column::Id.eq(job_id))
            .filter(held_at(holder, t));
        if let Some(facts) = &mark.facts {
            update = update.col_expr(job::Column::Result, Expr::value(facts.clone()));
        }
        if mark.last {
            update = update
                .col_expr(job::Column::ExpandedAt, Expr::value(t))
                .set_null([job::Column::ExpandOwner, job::Column::ExpandUntil]);
        } else {
            update = update.col_expr(job::Column::ExpandUntil, Expr::value(mark.lease_until));
        }
        // Each column is set once: PostgreSQL refuses a second assignment.
        if mark.last || mark.facts.is_some() {
            update = update.col_expr(job::Column::UpdatedAt, Expr::value(t));
        }
        update
    };
    let carry = mark.as_ref().is_some_and(|(m, _)| m.last && m.carry);
    if items.is_empty() {
        let Some(mark) = mark else {
            return Ok(Some(0));
        };
        if !carry {
            return Ok((store_mark(mark).exec(db).await?.rows_affected == 1).then_some(0));
        }
        let txn = crate::db::begin(db).await?;
        if store_mark(mark).exec(&txn).await?.rows_affected == 0 {
            return Ok(None);
        }
        super::launch::carry_predictions(&txn, job_id).await?;
        txn.commit().await?;
        return Ok(Some(0));
    }
    let backend = db.get_database_backend();
    let mut inserts = Vec::with_capacity(items.len().div_ceil(ROWS_PER_INSERT));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let rows = items.by_ref().take(ROWS_PER_INSERT);
        inserts.push(members_insert(backend, job_id, run_no, status, t, rows));
    }
    let txn = crate::db::begin(db).await?;
    // Take the job's row first (SQLite's write lock, PostgreSQL's row lock): a cancel waits for
    // this page, or this page sees the cancel — and a step of an earlier run (cancelled, then
    // run again while it read) stores nothing under its old run number.
    let running = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .col_expr(job::Column::LastProgressAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .filter(job::Column::Runs.eq(run_no))
        .filter(held_at(holder, t))
        .exec(&txn)
        .await?
        .rows_affected;
    if running == 0 {
        return Ok(None);
    }
    let mut inserted = 0;
    for insert in inserts {
        inserted += txn.execute_raw(insert).await?.rows_affected();
    }
    if carry {
        super::launch::carry_predictions(&txn, job_id).await?;
    }
    // The page's mark, the job's counters and its activity need nothing from each other's
    // answers: one round trip.
    let mut after: Vec<Statement> = mark
        .map(|mark| store_mark(mark).build(backend))
        .into_iter()
        .collect();
    if inserted > 0 {
        let n = inserted as i64;
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::Total, Expr::col(job::Column::Total).add(n))
            .col_expr(job::Column::UpdatedAt, Expr::value(t))
            .filter(job::Column::Id.eq(job_id));
        match status {
            ItemStatus::Succeeded => {
                update = update.col_expr(
                    job::Column::Succeeded,
                    Expr::col(job::Column::Succeeded).add(n),
                )
            }
            ItemStatus::Skipped => {
                update =
                    update.col_expr(job::Column::Skipped, Expr::col(job::Column::Skipped).add(n))
            }
            ItemStatus::Failed => {
                update = update.col_expr(job::Column::Failed, Expr::col(job::Column::Failed).add(n))
            }
            ItemStatus::Pending => {}
        }
        after.push(update.build(backend));
        // Members stored already done (an export's) count in the job's activity.
        let counts = match status {
            ItemStatus::Succeeded => Some([n, 0, 0]),
            ItemStatus::Failed => Some([0, n, 0]),
            ItemStatus::Skipped => Some([0, 0, n]),
            ItemStatus::Pending => None,
        };
        if let Some([succeeded, failed, skipped]) = counts {
            after.extend(super::activity::upsert(
                backend,
                job_id,
                t,
                super::activity::Counts {
                    succeeded,
                    failed,
                    skipped,
                    throttled: 0,
                },
            )?);
        }
    }
    crate::db::execute_together(&txn, after).await?;
    txn.commit().await?;
    Ok(Some(inserted))
}

/// Members per `INSERT` statement of [`insert_items`]: 11 bound values each stay below SQLite's
/// 32,766 parameters (7 each, and 4 for the whole statement, on PostgreSQL: below 65,535).
const ROWS_PER_INSERT: usize = 2000;

/// `INSERT INTO job_items … ON CONFLICT (job_id, user_id) DO NOTHING` of `rows`, all of job
/// `job_id`'s run `run_no` with `status`, 0 attempts, updated at `t`.
///
/// The statement's text is written here, not built with sea-query's `InsertStatement`, which
/// boxed, cloned and wrote each of the twelve values of every member (building and binding the
/// statements took 17 % of licensor's CPU while `licensor-bench --scenario msp` started 500
/// jobs of 1,000 members). On PostgreSQL what the rows share (job, status, run, time) is bound
/// once.
fn members_insert(
    backend: DbBackend,
    job_id: Uuid,
    run_no: i32,
    status: ItemStatus,
    t: DateTime<Utc>,
    rows: impl ExactSizeIterator<Item = NewItem>,
) -> Statement {
    use std::fmt::Write;
    const PER_ROW: usize = 7;
    const SHARED: usize = 4;
    let shared: [sea_orm::Value; SHARED] = [job_id.into(), status.into(), run_no.into(), t.into()];
    let mut sql = String::with_capacity(200 + rows.len() * 96);
    sql.push_str(
        "INSERT INTO job_items (job_id, status, run_no, updated_at, attempts, user_id, \
         user_principal_name, display_name, group_id, usage_location, licenses, prediction) VALUES ",
    );
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(rows.len() * (SHARED + PER_ROW));
    if backend == DbBackend::Postgres {
        values.extend(shared.iter().cloned());
    }
    for (i, item) in rows.enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        if backend == DbBackend::Postgres {
            // What the rows share is bound once (`$1`–`$4`); JSON text is cast to `jsonb`.
            let n = SHARED + i * PER_ROW;
            let _ = write!(
                sql,
                "($1, $2, $3, $4, 0, ${}, ${}, ${}, ${}, ${}, CAST(${} AS jsonb), CAST(${} AS jsonb))",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7
            );
        } else {
            // SQLite's parameters stay anonymous: sqlx binds a numbered one (`?N`, `$N`) by
            // asking SQLite for its name, a walk through every name of the statement, so a
            // page's statement of 7,000 numbered parameters cost tens of milliseconds to bind.
            sql.push_str("(?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)");
            values.extend(shared.iter().cloned());
        }
        // JSON columns are bound as text (cast to `jsonb` on PostgreSQL, see `db::as_json`), not as
        // `serde_json::Value` trees, which would be copied whole as they are bound.
        values.extend([
            item.user_id.into(),
            item.user_principal_name.into(),
            item.display_name.into(),
            item.group_id.into(),
            item.usage_location.into(),
            item.licenses.into(),
            item.prediction.map(|p| p.to_string()).into(),
        ]);
    }
    sql.push_str(" ON CONFLICT (job_id, user_id) DO NOTHING");
    Statement::from_sql_and_values(backend, sql, values)
}

/// Expansion is complete: every member of every selected group is an item. Marked only while
/// `owner` holds the expansion (see [`held`]); returns whether it did.
pub async fn mark_expanded(db: &Db, job_id: Uuid, owner: &str) -> StoreResult<bool> {
    let t = now();
    if !holds_expansion(db, job_id, owner).await? {
        return Ok(false);
    }
    super::launch::carry_predictions(db, job_id).await?;
    let marked = job::Entity::update_many()
        .col_expr(job::Column::ExpandedAt, Expr::value(t))
        .set_null([job::Column::ExpandOwner, job::Column::ExpandUntil])
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .filter(held(owner))
        .exec(db)
        .await?
        .rows_affected;
    Ok(marked == 1)
}

/// What a step reading a job's groups ([`expand`]) works with.
#[derive(Clone, Copy)]
pub struct Reader<'r> {
    pub db: &'r Db,
    /// The step holding the expansion ([`claim_expansion`]).
    pub owner: &'r str,
    pub client: &'r DirectoryClient,
    pub settings: &'r JobSettings,
    /// Raised when the step's process stops: expansion stops after the page being stored, or
    /// at once while it waits for the directory (an export's next step reads its groups again
    /// from the first page, see [`export::expand`]).
    pub stop: &'r std::sync::atomic::AtomicBool,
}

/// Expand the selected groups into items, page by page, as `owner` (the step holding the
/// expansion, see [`claim_expansion`]). `Ok(true)`: every member is stored and the job marked
/// expanded (with its last page, see [`PageMark::last`]). `Ok(false)`: the job stopped running (cancelled), or
/// `owner` no longer holds the expansion ([`holds_expansion`]), or the process is stopping, and
/// expansion stopped at that page. A preview read from its first page predicts
/// each member as it is stored, against the free units read at the start, and leaves its
/// predictor in `read` (a resumed one is predicted once all are read).
///
/// `start_work` queues the job's lanes: called once members are stored (a resumed expansion
/// calls it at once), so work starts while the rest of the groups are still read.
///
/// Once `reader.stop` is raised (the process is stopping), expansion stops with `Ok(false)`
/// after the page being stored, or at once while it waits for the directory (within
/// [`crate::tasks::STOP_POLL`]: a slow page, a read throttled with a long `Retry-After`): the
/// position after the last page stored is stored with it, so the step that takes the
/// expansion next reads on from there, and a stopping worker neither reads a large group to
/// its end nor waits for a slow read within its grace period.
pub async fn expand<'a, 's, E: From<StoreError>>(
    reader: Reader<'_>,
    job: &job::Model,
    req: &'a ParsedRequest,
    read: &mut Option<preview::Predictor<'a>>,
    mut start_work: impl FnMut() -> futures::future::BoxFuture<'s, Result<(), E>>,
) -> Result<Result<bool, JobFailure>, E> {
    let Reader {
        db,
        owner,
        client,
        settings,
        stop,
    } = reader;
    let mut facts = JobFacts::default();
    // Every read waits for the directory only while the process is not stopping: a read the
    // directory holds up (a slow page, a long `Retry-After`) is left, and the next step reads
    // it again.
    let handed_back = || -> Result<Result<bool, JobFailure>, E> {
        tracing::info!(job = %job.id, "process stopping: expansion left during a read");
        Ok(Ok(false))
    };
    // A crashed or interrupted expansion goes on from the page after the last one stored.
    let start = ExpandPosition::of(job);
    // The SKUs, the selected groups and the first members to store are read side by side (at
    // most GROUPS_AT_ONCE groups at a time); a failure is reported as if they were read in
    // turn: the SKUs', then the first group's in the request's order, then the members'.
    let mut first_pages = match req.spec {
        JobSpec::Export { .. } => None,
        _ => req
            .groups
            .get(start.group)
            .map(|g| read_ahead(client, g, req.transitive, start.next.clone())),
    };
    let groups = async {
        let mut read = Vec::with_capacity(req.groups.len());
        for ids in req.groups.chunks(GROUPS_AT_ONCE) {
            read.extend(futures::future::join_all(ids.iter().map(|id| client.get_group(id))).await);
        }
        read
    };
    let Some((skus, groups)) = unless_stopped(
        stop,
        futures::future::join(client.subscribed_skus(), groups),
    )
    .await
    else {
        return handed_back();
    };
    let skus = match skus {
        Ok(skus) => {
            facts.skus = skus.iter().map(SkuRef::of).collect();
            skus
        }
        Err(e) => {
            return Ok(Err(JobFailure::from_directory(
                &e,
                "reading subscribed SKUs",
            )));
        }
    };
    for (id, group) in req.groups.iter().zip(groups) {
        match group {
            Ok(g) => facts.groups.push(GroupRef {
                id: id.to_string(),
                display_name: g.display_name,
            }),
            Err(DirectoryError::NotFound { .. }) => {
                return Ok(Err(JobFailure {
                    code: "group_not_found",
                    detail: format!("group {id} does not exist in the directory"),
                }));
            }
            Err(e) => {
                return Ok(Err(JobFailure::from_directory(
                    &e,
                    "reading the selected groups",
                )));
            }
        }
    }
    // A launched preview that reads its groups again keeps its summary.
    facts.preview = JobFacts::of(job).preview;
    if let JobSpec::Export { .. } = req.spec {
        set_facts(db, job.id, &facts).await?;
        return Ok(
            match export::expand(db, owner, client, job, req, facts, stop).await? {
                Ok(Some(members)) => {
                    tracing::info!(job = %job.id, members, groups = req.groups.len(), "export expanded");
                    Ok(mark_expanded(db, job.id, owner).await?)
                }
                Ok(None) => Ok(false),
                Err((e, doing)) => Err(JobFailure::from_directory(&e, doing)),
            },
        );
    }
    // The facts go with the first page stored (its mark), or on their own when the step ends
    // before storing one.
    let carry = facts.preview.is_some();
    let mut facts = Some(serde_json::to_value(&facts).map_err(StoreError::internal)?);
    let status = ItemStatus::Pending;
    // A preview's members are decided once all are read, and never worked.
    let work_now = !req.preview;
    if start != ExpandPosition::default() {
        tracing::info!(job = %job.id, group = start.group, "expansion resumed where it stopped");
        // Members already read may be waiting: let the lanes take them while reading goes on.
        if work_now {
            start_work().await?;
        }
    }
    let mut lanes_started = start != ExpandPosition::default();
    if req.preview && start == ExpandPosition::default() && job.total == 0 {
        *read = Some(preview::Predictor::new(req, &skus));
    }
    // Members predicted already (one in several selected groups is stored once, as first read).
    let mut predicted = std::collections::HashSet::new();
    let mut members = 0u64;
    for (index, group) in req.groups.iter().enumerate().skip(start.group) {
        let (_reader, mut pages) = match first_pages.take() {
            Some(reading) if index == start.group => reading,
            _ => read_ahead(client, group, req.transitive, None),
        };
        loop {
            let Some(page) = unless_stopped(stop, pages.recv()).await else {
                // The position after the last page stored was stored with it.
                keep_facts(db, job.id, owner, facts).await?;
                return handed_back();
            };
            let page = match page {
                None => break,
                Some(Ok(page)) => page,
                Some(Err(e)) => {
                    keep_facts(db, job.id, owner, facts).await?;
                    return Ok(Err(JobFailure::from_directory(&e, "reading group members")));
                }
            };
            // Pages read already and waiting are stored with this one, in one transaction
            // (never waiting for a page still being read): fewer commits while the directory
            // answers faster than the database stores.
            let mut users = page.users;
            let mut next_link = page.next_link;
            let mut failed = None;
            while next_link.is_some() && users.len() < MEMBERS_PER_STORE {
                match pages.try_recv() {
                    Ok(Ok(more)) => {
                        users.extend(more.users);
                        next_link = more.next_link;
                    }
                    Ok(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // The last page of the last group marks the job expanded in its transaction.
            let last = next_link.is_none() && index + 1 == req.groups.len();
            let mark = PageMark {
                position: ExpandPosition::after_page(index, next_link),
                lease_until: Utc::now() + chrono::Duration::seconds(settings.lease_secs as i64),
                facts: facts.take(),
                last,
                carry: last && carry,
            };
            let mut items = Vec::with_capacity(users.len());
            for user in users {
                let snap = Snapshot::of(&user);
                let prediction = match read.as_mut() {
                    Some(p) if predicted.insert(user.id.clone()) => Some(p.predict_value(&snap)?),
                    _ => None,
                };
                items.push(NewItem {
                    usage_location: snap.usage_location.clone(),
                    licenses: serde_json::to_string(&snap).ok(),
                    user_id: user.id,
                    user_principal_name: user.user_principal_name,
                    display_name: user.display_name,
                    group_id: group.to_string(),
                    prediction,
                });
            }
            match insert_items(db, job.id, job.runs, owner, items, status, Some(&mark)).await? {
                Some(n) => members += n,
                None => {
                    keep_facts(db, job.id, owner, mark.facts).await?;
                    return Ok(Ok(false));
                }
            }
            if last {
                // Marked expanded: whatever else happens, the lanes go to work.
                if work_now && !lanes_started && members > 0 {
                    start_work().await?;
                }
                tracing::info!(job = %job.id, members, groups = req.groups.len(), "job expanded");
                return Ok(Ok(true));
            }
            if failed.is_none() && stop.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::info!(job = %job.id, group = index, members, "process stopping: expansion stopped after the page stored");
                return Ok(Ok(false));
            }
            if work_now && !lanes_started && members > 0 {
                // Work starts while the rest of the groups are still being read.
                start_work().await?;
                lanes_started = true;
            }
            if let Some(e) = failed {
                return Ok(Err(JobFailure::from_directory(&e, "reading group members")));
            }
        }
    }
    // Every page was stored and the job not marked with the last one: a step that resumes
    // from a position past the last group (stored by a step that stopped before it marked the
    // job) marks it here.
    keep_facts(db, job.id, owner, facts).await?;
    let marked = mark_expanded(db, job.id, owner).await?;
    if marked {
        tracing::info!(job = %job.id, members, groups = req.groups.len(), "job expanded");
    }
    Ok(Ok(marked))
}

/// Read `group`'s members from `from` (`None`: its first page) ahead of the step storing them:
/// a task reads up to [`PAGES_AHEAD`] pages ahead, stops at the first failure (sent on), and
/// stops with the returned guard.
fn read_ahead(
    client: &DirectoryClient,
    group: &str,
    transitive: bool,
    from: Option<String>,
) -> (
    crate::tasks::AbortOnDrop,
    tokio::sync::mpsc::Receiver<Result<crate::directory::MemberPage, DirectoryError>>,
) {
    let (tx, pages) = tokio::sync::mpsc::channel(PAGES_AHEAD);
    let mut stream = client.member_pages(group, transitive, from);
    let reader = crate::tasks::AbortOnDrop(tokio::spawn(async move {
        while let Some(page) = stream.next().await {
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                break;
            }
        }
    }));
    (reader, pages)
}

/// Selected groups read at once as a job starts (with its SKUs).
const GROUPS_AT_ONCE: usize = 8;

/// Member pages the reader may run ahead of the expansion's stores.
const PAGES_AHEAD: usize = 2;

/// At most this many members read ahead are stored in one transaction (pages are never split).
const MEMBERS_PER_STORE: usize = 3000;
