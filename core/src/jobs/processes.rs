//! Worker processes and their heartbeats (`worker_processes`), and taking over the leases of a
//! process that died.
//!
//! Every worker process has a row named like its queue worker (`licensor-{host}-{pid}-{suffix}`)
//! and stamps it every `worker.heartbeat_secs`. Every lease a process takes is named
//! `{process}/{step}` (`job_items.lease_owner`, `jobs.expand_owner`), so the leases of a process
//! whose heartbeat stopped can be found and ended at once ([`take_over`]) instead of after
//! `jobs.lease_secs`; the next claim then takes its members over (`job_items.taken_over`, the
//! `licensor_lease_takeovers_total` metric). A process that stops cleanly hands its leases back
//! and removes its row ([`leave`]).
//!
//! Heartbeats are a separate task of the process: a step that runs long (a slow directory, a
//! throttled tenant) keeps its process beating, so its members are never taken from it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict, Query, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::db::Db;
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item, worker_process};
use crate::error::StoreResult;

/// Who a worker process is: its name (the prefix of its leases), host name and process id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessId {
    pub name: String,
    pub host: String,
    pub pid: u32,
}

/// The time a heartbeat is stamped with and judged by: PostgreSQL's clock (`clock_timestamp()`,
/// one clock for every host, so hosts whose clocks disagree never take each other for dead), or
/// on SQLite — whose processes all run on the host of its file — this host's clock.
pub(crate) fn clock<C: ConnectionTrait>(db: &C) -> SimpleExpr {
    clock_after(db, std::time::Duration::ZERO)
}

/// [`clock`]'s time `after` from now: what leases and turns kept by it run until
/// ([`super::writer`]).
pub(crate) fn clock_after<C: ConnectionTrait>(db: &C, after: std::time::Duration) -> SimpleExpr {
    match (db.get_database_backend(), after.is_zero()) {
        (DbBackend::Postgres, true) => Expr::cust("clock_timestamp()"),
        (DbBackend::Postgres, false) => Expr::cust_with_values(
            "clock_timestamp() + make_interval(secs => $1)",
            [after.as_secs_f64()],
        ),
        _ => Expr::value(Utc::now() + chrono::Duration::from_std(after).unwrap_or_default()),
    }
}

/// Record that `process` is alive now (the database's clock, see [`clock`]): its row is
/// inserted the first time (now its start too) and its `last_heartbeat_at` moved on every later
/// call. A process whose row a peer removed (it could not reach the database for longer than the
/// takeover delay) gets it back with its next heartbeat.
pub async fn beat(db: &Db, process: &ProcessId) -> StoreResult<()> {
    let mut insert = Query::insert();
    insert
        .into_table(worker_process::Entity)
        .columns([
            worker_process::Column::Id,
            worker_process::Column::Host,
            worker_process::Column::Pid,
            worker_process::Column::StartedAt,
            worker_process::Column::LastHeartbeatAt,
        ])
        .values_panic([
            process.name.clone().into(),
            process.host.clone().into(),
            i64::from(process.pid).into(),
            clock(db),
            clock(db),
        ])
        .on_conflict(
            OnConflict::column(worker_process::Column::Id)
                .value(worker_process::Column::LastHeartbeatAt, clock(db))
                .to_owned(),
        );
    db.execute(&insert).await?;
    Ok(())
}

/// Every worker process's row, oldest heartbeat first.
pub async fn all(db: &Db) -> StoreResult<Vec<worker_process::Model>> {
    Ok(worker_process::Entity::find()
        .order_by_asc(worker_process::Column::LastHeartbeatAt)
        .all(db)
        .await?)
}

/// The worker processes whose last heartbeat is more than `for_` old by the database's clock
/// (see [`clock`]), oldest first.
pub async fn silent(db: &Db, for_: std::time::Duration) -> StoreResult<Vec<worker_process::Model>> {
    let stale = match db.get_database_backend() {
        DbBackend::Postgres => Expr::cust_with_values(
            "last_heartbeat_at < clock_timestamp() - make_interval(secs => $1)",
            [for_.as_secs_f64()],
        ),
        _ => worker_process::Column::LastHeartbeatAt
            .lt(Utc::now() - chrono::Duration::from_std(for_).unwrap_or_default()),
    };
    Ok(worker_process::Entity::find()
        .filter(stale)
        .order_by_asc(worker_process::Column::LastHeartbeatAt)
        .all(db)
        .await?)
}

/// The worker process named by a lease owner (`{process}/{step}`), or the whole name when it
/// names no step.
pub(crate) fn process_of(owner: &str) -> &str {
    owner.split_once('/').map_or(owner, |(process, _)| process)
}

/// A condition true while process `name` has its row in `worker_processes`: it has not stopped
/// ([`leave`]) and has not been taken for dead ([`take_over`]) without beating since. Whatever a
/// process takes — members ([`super::lease::claim`]), an expansion
/// ([`super::expand::claim_expansion`]), a tenant's turn to write ([`super::writer::ask`]) — it
/// takes only under this condition: a step still running in a process that has left (its grace
/// period over, its leases handed back, its row removed, the process not yet exited) would
/// otherwise take them again, and nobody would free them — no heartbeat of its goes stale — until
/// they ran out (a turn [`super::writer::TURN`] later, members `jobs.lease_secs` later).
///
/// On PostgreSQL the row is locked for share: a process leaving (or taken over) at the same time
/// either waits for the taking statement and then frees what it took, or removes the row first,
/// and the statement takes nothing. SQLite runs one writing statement at a time.
pub(crate) fn is_live<C: ConnectionTrait>(conn: &C, name: &str) -> SimpleExpr {
    let mut row = Query::select();
    row.expr(Expr::val(1))
        .from(worker_process::Entity)
        .and_where(worker_process::Column::Id.eq(name));
    if conn.get_database_backend() == DbBackend::Postgres {
        row.lock(sea_orm::sea_query::LockType::Share);
    }
    Expr::exists(row)
}

/// What taking over (or handing back) a process's leases freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freed {
    /// The jobs (tenant, job) with members or an expansion the process held, and the running
    /// jobs of the tenants whose turn to write it held (their lanes waiting for the write
    /// budget waited in it): to queue again, so a live worker works them now.
    pub jobs: Vec<(Uuid, Uuid)>,
    /// Pending members whose lease was ended.
    pub members: u64,
    /// Expansions (reading a job's groups) whose lease was ended.
    pub expansions: u64,
}

/// A condition true for the leases `owner_column` of process `name` (`{name}/{step}`). Compared
/// exactly (`substr`, the same on SQLite and PostgreSQL): `LIKE` is case-insensitive on SQLite
/// and treats `_` as a wildcard.
fn owned_by(owner: SimpleExpr, name: &str) -> SimpleExpr {
    let prefix = format!("{name}/");
    let len = prefix.chars().count() as i32;
    SimpleExpr::from(Func::cust("substr").arg(owner).arg(1i32).arg(len)).eq(prefix)
}

/// Statuses of jobs whose pending members may be held by a worker.
const ACTIVE: [JobStatus; 3] = [JobStatus::Queued, JobStatus::Running, JobStatus::Cancelled];

/// Take over the leases of `dead`, a process whose heartbeat stopped: if its row still shows no
/// heartbeat after `dead.last_heartbeat_at` (it did not come back, and no other worker took it
/// over first), remove the row and end its leases — its pending members' and its expansions' —
/// as of its last heartbeat, in one transaction. The holder stays named on them, so the next
/// claim takes them over (and says so). Returns `None` when the process beat again meanwhile or
/// another worker took it over first.
pub async fn take_over(db: &Db, dead: &worker_process::Model) -> StoreResult<Option<Freed>> {
    let ended = dead.last_heartbeat_at;
    let txn = crate::db::begin(db).await?;
    let removed = worker_process::Entity::delete_many()
        .filter(worker_process::Column::Id.eq(dead.id.as_str()))
        .filter(worker_process::Column::LastHeartbeatAt.lte(ended))
        .exec(&txn)
        .await?
        .rows_affected;
    if removed == 0 {
        return Ok(None);
    }
    let freed = free(&txn, &dead.id, Some(ended)).await?;
    txn.commit().await?;
    Ok(Some(freed))
}

/// A process that stops cleanly: remove its row, then hand back every lease it still holds
/// (its members stay pending, free for any worker at once; its expansions go on from their last
/// stored page) and end its turns. The row goes first: from then on the process takes nothing
/// more ([`is_live`]), though steps of its may still run until it exits.
pub async fn leave(db: &Db, name: &str) -> StoreResult<Freed> {
    let txn = crate::db::begin(db).await?;
    worker_process::Entity::delete_many()
        .filter(worker_process::Column::Id.eq(name))
        .exec(&txn)
        .await?;
    let freed = free(&txn, name, None).await?;
    txn.commit().await?;
    Ok(freed)
}

/// End (`Some(at)`: lease until `at`, holder kept) or hand back (`None`: no holder, no lease)
/// the leases of process `name` on active jobs, and end its turns to write to tenants
/// ([`super::writer`]).
async fn free<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    ended: Option<DateTime<Utc>>,
) -> StoreResult<Freed> {
    let active: Vec<&str> = ACTIVE.iter().map(|s| s.as_str()).collect();
    let active_jobs = || {
        sea_orm::sea_query::Query::select()
            .column(job::Column::Id)
            .from(job::Entity)
            .and_where(job::Column::Status.is_in(active.clone()))
            .to_owned()
    };
    let held = || {
        job_item::Column::JobId
            .in_subquery(active_jobs())
            .and(job_item::Column::Status.eq(ItemStatus::Pending))
            .and(owned_by(Expr::col(job_item::Column::LeaseOwner), name))
    };
    let mut jobs: Vec<Uuid> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::JobId)
        .distinct()
        .filter(held())
        .into_tuple()
        .all(conn)
        .await?;
    let mut items = job_item::Entity::update_many()
        .col_expr(job_item::Column::LeaseUntil, Expr::value(ended))
        .filter(held());
    if ended.is_none() {
        items = items.col_expr(
            job_item::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        );
    }
    let members = items.exec(conn).await?.rows_affected;

    let expanding = || {
        job::Column::ExpandedAt
            .is_null()
            .and(job::Column::Status.is_in(active.clone()))
            .and(owned_by(Expr::col(job::Column::ExpandOwner), name))
    };
    let expansions: Vec<Uuid> = job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .filter(expanding())
        .into_tuple()
        .all(conn)
        .await?;
    if !expansions.is_empty() {
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::ExpandUntil, Expr::value(ended))
            .filter(expanding());
        if ended.is_none() {
            update = update.col_expr(
                job::Column::ExpandOwner,
                Expr::value(Option::<String>::None),
            );
        }
        update.exec(conn).await?;
    }
    // Its tenants' turns to write end with it: another process may write to them at once. The
    // lanes of their jobs that waited in it for the write budget went with it: those jobs are
    // queued again too.
    let writing_to = super::writer::turns_of(conn, name).await?;
    if !writing_to.is_empty() {
        let running: Vec<Uuid> = job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .filter(job::Column::TenantId.is_in(writing_to))
            .filter(job::Column::Status.eq(JobStatus::Running))
            .into_tuple()
            .all(conn)
            .await?;
        jobs.extend(running);
    }
    super::writer::end_turns(conn, name).await?;
    let expansions_n = expansions.len() as u64;
    jobs.extend(expansions);
    jobs.sort();
    jobs.dedup();
    let jobs = if jobs.is_empty() {
        Vec::new()
    } else {
        job::Entity::find()
            .select_only()
            .column(job::Column::TenantId)
            .column(job::Column::Id)
            .filter(job::Column::Id.is_in(jobs))
            .into_tuple()
            .all(conn)
            .await?
    };
    Ok(Freed {
        jobs,
        members,
        expansions: expansions_n,
    })
}
