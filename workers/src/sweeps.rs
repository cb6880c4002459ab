//! licensor's own periodic work, on apalis-cron schedules from configuration (`[sweeps]`).
//!
//! The started-seats sweep starts seats not started within 4 months of delivery and ends seats
//! past their end date, for every tenant. It runs once when the worker starts (catching up after
//! downtime) and then on its schedule. It is idempotent, so several worker processes running it
//! at once do no harm.

use std::future::Future;

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

/// Key the members stored since the last run for the member history.
pub async fn key_members(db: &Db) -> Result<u64, StoreError> {
    let keyed = licensor_core::jobs::history::key_members(db).await?;
    metrics::counter!("licensor_members_keyed_total").increment(keyed);
    if keyed > 0 {
        tracing::debug!(members = keyed, "member-history keys added");
    }
    Ok(keyed)
}

async fn member_keys_tick(_tick: Tick, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    key_members(&ctx.db).await?;
    Ok(())
}

/// Run one sweep on its schedule until `stop` resolves.
macro_rules! on_schedule {
    ($name:expr, $schedule:expr, $ctx:expr, $handler:expr, $stop:expr) => {{
        let stop = $stop;
        WorkerBuilder::new($name)
            .backend(CronScheduler::new($schedule))
            .data($ctx)
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
        stop()
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
