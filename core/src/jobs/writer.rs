//! Each tenant's writer: the one worker process that writes to its directory for now
//! (`tenant_writers`).
//!
//! The directory's write budget is per app and tenant (Graph: 3,000 writes per 150 s), and every
//! process learns and schedules it on its own ([`crate::directory::limiter`]). Two processes
//! writing to the same tenant each count the other's writes as a foreign client's: each fills
//! what it believes is left, they collide, and the tenant gets 429s and idle gaps instead of its
//! whole budget. Worst is learning it side by side: a fill that another process fills at the
//! same time proves too little or too much, a window probed beside another's writes comes out
//! too short, and the process that then writes alone keeps that model for the rest of the job
//! (`reliability::one_worker_writes_to_a_throttled_tenant_postgres_redis` saw 27 to 275 of
//! 660–1,350 requests answered 429 that way). So a process takes the tenant's *turn* as a step
//! for the tenant starts, before it takes members: for [`TURN`] after each of its steps, no
//! other process writes to that tenant, and their lanes of its jobs go back to the queue for the
//! writer to take ([`Turn::Others`]). The budget is learned and filled by one scheduler, from
//! the first write.
//!
//! Only a live process — one with its row in `worker_processes` — takes or renews a turn
//! ([`Turn::Gone`] otherwise): a step still running in a process that stopped, or that was
//! taken for dead, would otherwise take the turn again after it ended, and keep every other
//! process from the tenant for a [`TURN`] with nobody writing.
//!
//! A turn is named by the process (`worker_processes.id`), not the step; it ends when the
//! process stops cleanly, when it is found dead by its missed heartbeats (both through
//! [`super::processes`]), or [`TURN`] after its last step for the tenant. Times are the
//! database's clock on PostgreSQL, as heartbeats are (hosts whose clocks disagree never take
//! each other's turns), and this host's on SQLite.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::processes::{clock, clock_after, is_live};
use crate::db::Db;
use crate::entities::tenant_writer;
use crate::error::{StoreError, StoreResult};

/// How long a process keeps a tenant's turn after its last step for the tenant: long enough
/// that the writer's lanes — queued again after each chunk, or taken by another process and
/// queued again — come back to it before the turn ends (a new writer starts without the old
/// one's knowledge of the window's writes, and provokes 429s while it learns); a lane left for
/// the budget keeps it for as long as it waits ([`Turns::keep`]). A writer that stops or dies
/// ends its turns at once ([`end_turns`]), so only a live writer with nothing more for the
/// tenant makes others wait this long, and only to take its lanes.
pub const TURN: Duration = Duration::from_secs(30);

/// Whose turn it is to write to a tenant's directory, as a step asks before it takes members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// This process holds the turn (taken or renewed now).
    Mine,
    /// No process holds it (only looked, not taken).
    Free,
    /// Another process (named) holds it: leave the tenant's writes to it.
    Others(String),
    /// This process may not take it: it has no row in `worker_processes` — it stopped (a step
    /// of its still runs after its grace period), or was taken for dead by its missed
    /// heartbeats and has not beaten since ([`super::processes::is_live`]). It writes nothing
    /// until it beats again; its lanes go back to the queue for a live process.
    Gone,
}

/// Ask for the turn to write to `tenant_id`'s directory as process `process`.
///
/// - `take` (the process is about to write): take the turn, or renew it, for [`TURN`], unless
///   another process holds it → [`Turn::Mine`] or [`Turn::Others`]; a process with no row in
///   `worker_processes` takes nothing → [`Turn::Gone`] (or [`Turn::Others`]).
/// - Otherwise: only look → [`Turn::Others`] while another process holds it, else
///   [`Turn::Free`] (or [`Turn::Mine`] when this process still holds it).
///
/// One statement either way.
pub async fn ask(db: &Db, tenant_id: Uuid, process: &str, take: bool) -> StoreResult<Turn> {
    if take {
        let live_elsewhere = Expr::col((tenant_writer::Entity, tenant_writer::Column::Owner))
            .ne(process)
            .and(Expr::col((tenant_writer::Entity, tenant_writer::Column::Until)).gte(clock(db)));
        // INSERT … SELECT … WHERE: only a live process takes or renews a turn.
        let mut row = Query::select();
        row.expr(Expr::val(tenant_id))
            .expr(Expr::val(process))
            .expr(clock_after(db, TURN))
            .and_where(is_live(db, process));
        let mut insert = Query::insert();
        insert
            .into_table(tenant_writer::Entity)
            .columns([
                tenant_writer::Column::TenantId,
                tenant_writer::Column::Owner,
                tenant_writer::Column::Until,
            ])
            .select_from(row)
            .map_err(StoreError::internal)?
            .on_conflict(
                OnConflict::column(tenant_writer::Column::TenantId)
                    .update_columns([tenant_writer::Column::Owner, tenant_writer::Column::Until])
                    .action_and_where(live_elsewhere.not())
                    .to_owned(),
            );
        if db.execute(&insert).await?.rows_affected() == 1 {
            return Ok(Turn::Mine);
        }
        // Refused: another live process holds the turn, or this one is not live (a live one
        // takes a turn nobody holds, and renews its own).
        return Ok(match holder(db, tenant_id).await? {
            Some(p) if p != process => Turn::Others(p),
            _ => Turn::Gone,
        });
    }
    Ok(match holder(db, tenant_id).await? {
        None => Turn::Free,
        Some(p) if p == process => Turn::Mine,
        Some(p) => Turn::Others(p),
    })
}

/// The process holding `tenant_id`'s turn now, if one does.
async fn holder(db: &Db, tenant_id: Uuid) -> StoreResult<Option<String>> {
    Ok(tenant_writer::Entity::find()
        .select_only()
        .column(tenant_writer::Column::Owner)
        .filter(tenant_writer::Column::TenantId.eq(tenant_id))
        .filter(Expr::col(tenant_writer::Column::Until).gte(clock(db)))
        .into_tuple()
        .one(db)
        .await?)
}

/// The tenants whose turn to write process `process` holds, or held last: a turn that ran out
/// counts as long as no other process took the tenant since (its row names the process still).
/// The lanes of such a tenant's jobs wait in the process (for the budget, or for a place) or went
/// with it, however long ago its turn was renewed: a process found dead once its turn had run
/// out left them to nobody, and its takeover queued nothing (the job waited for the reconciler).
pub async fn turns_of<C: ConnectionTrait>(conn: &C, process: &str) -> StoreResult<Vec<Uuid>> {
    Ok(tenant_writer::Entity::find()
        .select_only()
        .column(tenant_writer::Column::TenantId)
        .filter(tenant_writer::Column::Owner.eq(process))
        .into_tuple()
        .all(conn)
        .await?)
}

/// End every turn process `process` holds (it stopped, or was found dead).
pub async fn end_turns<C: ConnectionTrait>(conn: &C, process: &str) -> StoreResult<u64> {
    Ok(tenant_writer::Entity::delete_many()
        .filter(tenant_writer::Column::Owner.eq(process))
        .exec(conn)
        .await?
        .rows_affected)
}

/// How many tenants' turns [`Turns`] remembers before it forgets the ended ones.
const TRIM_AT: usize = 1024;

/// This process's side of [`ask`], taking the turn: a turn taken or renewed less than half a
/// [`TURN`] ago is not renewed again by a step, so a tenant's steps cost one statement per half
/// turn, not one each; and a turn known to outlast a lane's wait is not kept again for it
/// ([`Turns::keep`]).
#[derive(Debug, Clone)]
pub struct Turns {
    process: String,
    held: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<Uuid, Held>>>,
}

/// What this process knows of a turn of its own: when it last took or renewed it (then it
/// lasts [`TURN`]), and until when it last kept it for a lane's wait ([`Turns::keep`]).
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    renewed: Option<std::time::Instant>,
    kept: Option<std::time::Instant>,
}

impl Held {
    /// Until when the turn lasts at least, as this process made it last (`None`: not known).
    fn until(&self) -> Option<std::time::Instant> {
        self.renewed.map(|at| at + TURN).max(self.kept)
    }
}

impl Turns {
    /// Turns of process `process` (`worker_processes.id`).
    pub fn new(process: impl Into<String>) -> Turns {
        Turns {
            process: process.into(),
            held: Default::default(),
        }
    }

    /// Take or renew this process's turn to write to `tenant_id` ([`ask`] with `take`), as a
    /// step does before it takes members: [`Turn::Mine`] without a statement while a turn it
    /// took or renewed is less than half a [`TURN`] old.
    pub async fn ask(&self, db: &Db, tenant_id: Uuid) -> StoreResult<Turn> {
        let fresh = self
            .held
            .lock()
            .get(&tenant_id)
            .and_then(|held| held.renewed)
            .is_some_and(|at| at.elapsed() < TURN / 2);
        if fresh {
            return Ok(Turn::Mine);
        }
        self.confirm(db, tenant_id).await
    }

    /// Forget every turn this process took (it is leaving): its steps still running ask the
    /// database from now on, which answers [`Turn::Gone`] once the process's row is removed.
    pub fn forget_all(&self) {
        self.held.lock().clear();
    }

    /// Keep this process's turn to write to `tenant_id`, if it holds it, until [`TURN`] after
    /// `wait` from now: its lanes of the tenant's jobs wait that long for the write budget
    /// (Graph's window is 150 s, five times a turn), and the turn must not end meanwhile — the
    /// process that took it next would learn the budget again while this one's writes are still
    /// in the window. One statement, or none while this process made the turn last at least
    /// half a [`TURN`] past the wait already (taken, renewed or kept): a throttled tenant's
    /// lanes wait a few seconds each, and renewing for each cost one write in five of a
    /// 500-tenant run (`licensor-bench --scenario msp`).
    pub async fn keep(&self, db: &Db, tenant_id: Uuid, wait: Duration) -> StoreResult<()> {
        let now = std::time::Instant::now();
        if self.lasts(tenant_id, now + wait + TURN / 2) {
            return Ok(());
        }
        let kept = tenant_writer::Entity::update_many()
            .col_expr(tenant_writer::Column::Until, clock_after(db, wait + TURN))
            .filter(tenant_writer::Column::TenantId.eq(tenant_id))
            .filter(tenant_writer::Column::Owner.eq(self.process.as_str()))
            .exec(db)
            .await?
            .rows_affected;
        self.held.lock().entry(tenant_id).or_default().kept =
            (kept == 1).then_some(now + wait + TURN);
        Ok(())
    }

    /// Whether this process made its turn to write to `tenant_id` last until `until` at least.
    fn lasts(&self, tenant_id: Uuid, until: std::time::Instant) -> bool {
        self.held
            .lock()
            .get(&tenant_id)
            .and_then(|held| held.until())
            .is_some_and(|at| at >= until)
    }

    /// [`Turns::ask`] with a statement whatever the age of this process's turn: a chunk being
    /// written asks this way about once a second, so a turn this process lost while it wrote
    /// (taken for dead by its missed heartbeats, and another process took the turn) stops the
    /// chunk within that second, not after half a [`TURN`].
    pub async fn confirm(&self, db: &Db, tenant_id: Uuid) -> StoreResult<Turn> {
        let turn = ask(db, tenant_id, &self.process, true).await?;
        tracing::debug!(tenant = %tenant_id, ?turn, "asked for the turn to write");
        if turn == Turn::Mine {
            self.remember(tenant_id, std::time::Instant::now());
        } else {
            self.held.lock().remove(&tenant_id);
        }
        Ok(turn)
    }

    /// Note the turn to write to `tenant_id` taken or renewed at `now`. Turns that have ended
    /// as far as this process made them last (or are renewed by a statement at the next step
    /// anyway) are forgotten once [`TRIM_AT`] are noted, so a process that writes to many
    /// tenants in turn keeps only those it wrote to lately.
    fn remember(&self, tenant_id: Uuid, now: std::time::Instant) {
        let mut held = self.held.lock();
        if held.len() >= TRIM_AT {
            held.retain(|_, turn| turn.until().is_some_and(|until| until > now));
        }
        held.entry(tenant_id).or_default().renewed = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_of_tenants_written_to_long_ago_are_forgotten() {
        let turns = Turns::new("licensor-test-1-00000000");
        let start = std::time::Instant::now();
        let tenants: Vec<Uuid> = (0..TRIM_AT).map(|_| Uuid::now_v7()).collect();
        for t in &tenants {
            turns.remember(*t, start);
        }
        assert_eq!(turns.held.lock().len(), TRIM_AT);
        // Within a turn, nothing is forgotten.
        let soon = start + TURN / 2;
        let more = Uuid::now_v7();
        turns.remember(more, soon);
        assert_eq!(turns.held.lock().len(), TRIM_AT + 1);
        // A turn later, the ones renewed at the start have ended and go.
        let later = start + TURN + Duration::from_secs(1);
        let last = Uuid::now_v7();
        turns.remember(last, later);
        let held = turns.held.lock();
        assert_eq!(
            held.len(),
            2,
            "only the turns renewed within a turn are kept"
        );
        assert!(held.contains_key(&more) && held.contains_key(&last));
    }
}
