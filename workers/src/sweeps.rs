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
use licensor_core::db::Db;
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

async fn on_tick(_tick: Tick, db: Data<Db>) -> Result<(), BoxDynError> {
    sweep_started_seats(&db).await?;
    Ok(())
}

/// Catch up once, then sweep on `schedule` until `stop` resolves.
pub async fn run_started_seats<S>(
    db: Db,
    schedule: cron::Schedule,
    worker_name: String,
    stop: S,
) -> anyhow::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    if let Err(e) = sweep_started_seats(&db).await {
        // The schedule retries; a database hiccup at start-up must not stop the worker.
        tracing::warn!(error = %e, "started-seats sweep at start-up failed");
    }
    let worker = WorkerBuilder::new(format!("{worker_name}-started-seats"))
        .backend(CronScheduler::new(schedule))
        .data(db)
        .build(on_tick);
    worker
        .run_until(async move {
            stop.await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("started-seats sweep: {e}"))
}
