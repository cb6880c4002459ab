//! licensor's own periodic work, on apalis-cron schedules from configuration (`[sweeps]`).
//!
//! The started-seats sweep starts seats not started within 4 months of delivery and ends seats
//! past their end date, for every tenant. It runs once when the worker starts (catching up after
//! downtime) and then on its schedule. It is idempotent, so several worker processes running it
//! at once do no harm.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, WorkerBuilder};
use apalis_cron::{CronScheduler, Tick};
use licensor_core::StoreError;
use std::sync::Arc;

use licensor_core::config::SweepSettings;
use licensor_core::db::Db;

use crate::WorkerContext;
use licensor_core::licenses::{self, SweepOutcome};

/// Run the started-seats sweep now, as of today (UTC).
pub async fn sweep_started_seats(db: &Db) -> Result<SweepOutcome, StoreError> {
    let today = chrono::Utc::now().date_naive();
    let outcome = licenses::sweep(db, today).await?;
    metrics::counter!("licensor_seats_started_total").increment(outcome.started);
    metrics::counter!("licensor_seats_ended_total").increment(outcome.ended);
    if outcome.licenses > 0 {
        tracing::info!(
            licenses = outcome.licenses,
            seats_started = outcome.started,
            seats_ended = outcome.ended,
            %today,
            "started-seats sweep"
        );
    } else {
        tracing::debug!(%today, "started-seats sweep: nothing due");
    }
    Ok(outcome)
}

async fn started_seats_tick(_tick: Tick, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    sweep_started_seats(&ctx.db).await?;
    Ok(())
}

async fn expiries_tick(_tick: Tick, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    crate::jobs::sweep_expiries(&ctx).await?;
    Ok(())
}

async fn reconcile_tick(_tick: Tick, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    crate::jobs::reconcile(&ctx).await?;
    crate::webhooks::reconcile(&ctx).await?;
    Ok(())
}

/// How old items are before the member-keys sweep keys them. Until then the member history reads
/// them from the short tail of items not keyed yet. The delay keeps the sweep away from the
/// burst of members stored as jobs start — with hundreds of tenants' jobs started at once,
/// keying them as they were stored held those jobs' first writes back — and gathers more items
/// into each of its transactions, which makes each item cheaper to key.
pub const KEY_AFTER: Duration = Duration::from_secs(30);

/// The newest item at each of this process's member-keys sweeps, to bound the next ones by
/// [`KEY_AFTER`].
#[derive(Debug, Default, Clone)]
pub struct StoredItems {
    seen: Arc<Mutex<VecDeque<(Instant, i64)>>>,
}

impl StoredItems {
    /// Note `newest`, the newest item at `now`; returns the newest item noted at least
    /// [`KEY_AFTER`] before `now` (`None`: none noted that long ago), forgetting older notes.
    pub fn note(&self, now: Instant, newest: Option<i64>) -> Option<i64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = newest {
            seen.push_back((now, id));
        }
        let mut through = None;
        while let Some(&(at, id)) = seen.front() {
            if now.saturating_duration_since(at) < KEY_AFTER {
                break;
            }
            through = Some((at, id));
            seen.pop_front();
        }
        // The bound stays noted for the sweeps to come (keyed items are skipped).
        if let Some(bound) = through {
            seen.push_front(bound);
        }
        through.map(|(_, id)| id)
    }
}

/// Key for the member history the items stored at least [`KEY_AFTER`] before (as `stored`
/// noted them).
pub async fn key_members(db: &Db, stored: &StoredItems) -> Result<u64, StoreError> {
    let newest = licensor_core::jobs::history::newest_item(db).await?;
    let Some(through) = stored.note(Instant::now(), newest) else {
        return Ok(0);
    };
    let keyed = licensor_core::jobs::history::key_members(db, through).await?;
    metrics::counter!("licensor_members_keyed_total").increment(keyed);
    if keyed > 0 {
        tracing::debug!(members = keyed, "member-history keys added");
    }
    Ok(keyed)
}

async fn member_keys_tick(
    _tick: Tick,
    ctx: Data<Arc<WorkerContext>>,
    stored: Data<StoredItems>,
) -> Result<(), BoxDynError> {
    key_members(&ctx.db, &stored).await?;
    Ok(())
}

/// Run one sweep on its schedule until `stop` resolves; its handler gets `ctx` and any further
/// data given after `stop`.
macro_rules! on_schedule {
    ($name:expr, $schedule:expr, $ctx:expr, $handler:expr, $stop:expr $(, $data:expr)*) => {{
        let stop = $stop;
        WorkerBuilder::new($name)
            .backend(CronScheduler::new($schedule))
            .data($ctx)
            $(.data($data))*
            .build($handler)
            .run_until(async move {
                stop.await;
                Ok::<(), std::io::Error>(())
            })
    }};
}

/// Catch up once (every sweep is idempotent, and the reconciler picks up jobs left by a
/// previous process), then run every sweep on its schedule until `stop` resolves.
pub async fn run_all<S, F>(
    ctx: Arc<WorkerContext>,
    schedules: SweepSettings,
    worker_name: String,
    stop: S,
) -> anyhow::Result<()>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    if let Err(e) = sweep_started_seats(&ctx.db).await {
        // The schedule retries; a database hiccup at start-up must not stop the worker.
        tracing::warn!(error = %e, "started-seats sweep at start-up failed");
    }
    if let Err(e) = crate::jobs::reconcile(&ctx).await {
        tracing::warn!(error = %e, "reconciling jobs at start-up failed");
    }
    if let Err(e) = crate::webhooks::reconcile(&ctx).await {
        tracing::warn!(error = %e, "reconciling webhook deliveries at start-up failed");
    }
    let seats = on_schedule!(
        format!("{worker_name}-started-seats"),
        schedules.started_seats,
        ctx.clone(),
        started_seats_tick,
        stop()
    );
    let expiries = on_schedule!(
        format!("{worker_name}-expiries"),
        schedules.expiries,
        ctx.clone(),
        expiries_tick,
        stop()
    );
    let reconcile = on_schedule!(
        format!("{worker_name}-reconcile"),
        schedules.reconcile,
        ctx.clone(),
        reconcile_tick,
        stop()
    );
    let member_keys = on_schedule!(
        format!("{worker_name}-member-keys"),
        schedules.member_keys,
        ctx.clone(),
        member_keys_tick,
        stop(),
        StoredItems::default()
    );
    let (a, b, c, d) = tokio::join!(seats, expiries, reconcile, member_keys);
    for (name, outcome) in [
        ("started-seats", a),
        ("expiries", b),
        ("reconcile", c),
        ("member-keys", d),
    ] {
        outcome.map_err(|e| anyhow::anyhow!("{name} sweep: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_keyed_once_they_are_old_enough() {
        let stored = StoredItems::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(stored.note(at(0), None), None, "nothing stored");
        assert_eq!(stored.note(at(5), Some(100)), None);
        assert_eq!(stored.note(at(10), Some(250)), None);
        assert_eq!(stored.note(at(34), Some(300)), None, "none 30 s old");
        assert_eq!(stored.note(at(35), Some(300)), Some(100));
        assert_eq!(stored.note(at(39), Some(400)), Some(100), "the bound stays");
        assert_eq!(stored.note(at(40), Some(400)), Some(250));
        assert_eq!(stored.note(at(70), Some(400)), Some(400));
        assert_eq!(stored.note(at(75), None), Some(400));
    }
}
