//! licensor-workers: the processes that take messages off the queue and do the work.
//!
//! [`run`] consumes the queue until `shutdown` resolves, then stops taking new messages and
//! lets in-flight ones finish within the configured grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{BackendExt, BackoffConfig, BoxDynError, Data, Strategy, WorkerBuilder};
use licensor_core::db::Db;
use licensor_core::queue::{Message, Queue};
use tokio::sync::broadcast;

pub mod jobs;
mod ping;
pub mod sweeps;

/// Something a worker did, for metrics and for observers such as tests and the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    Pinged { nonce: uuid::Uuid, worker: String },
}

/// What every handler can reach.
#[derive(Clone)]
pub struct WorkerContext {
    pub db: Db,
    pub queue: Queue,
    pub name: String,
    pub events: broadcast::Sender<WorkerEvent>,
    /// One directory client per tenant, shared by every task of this process.
    pub directory: licensor_core::directory::DirectoryClients,
    pub jobs: licensor_core::config::JobSettings,
}

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique per process (host + pid + a random suffix): apalis recovers a dead worker's tasks
    /// by name, and two processes sharing one would hide each other's orphans.
    pub name: String,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    /// Schedules of licensor's own periodic work.
    pub sweeps: licensor_core::config::SweepSettings,
}

impl WorkerOptions {
    pub fn new(concurrency: usize, shutdown_grace: Duration) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        WorkerOptions {
            name: format!("licensor-{host}-{}-{suffix}", std::process::id()),
            concurrency,
            shutdown_grace,
            sweeps: Default::default(),
        }
    }
}

async fn handle(message: Message, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    match message {
        Message::Ping { nonce } => ping::handle(&ctx, nonce).await,
        Message::Run { tenant_id, job_id } => jobs::run(&ctx, tenant_id, job_id).await,
        Message::Work { tenant_id, job_id } => jobs::work(&ctx, tenant_id, job_id).await,
    }
    .inspect_err(|e| tracing::warn!(error = %e, "task failed; it will be retried"))
}

/// Consume the queue until `shutdown` resolves.
pub async fn run<S>(ctx: WorkerContext, options: WorkerOptions, shutdown: S) -> anyhow::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    let ctx = Arc::new(ctx);
    tracing::info!(worker = %options.name, queue = ctx.queue.backend_name(), "worker started");
    let grace = options.shutdown_grace;
    let stopping = Arc::new(tokio::sync::Notify::new());
    // The sweeps run beside the queue worker and stop on the same signal.
    let schedules = sweeps::Schedules::from_settings(&options.sweeps)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let sweeps_stop = Arc::new(tokio::sync::watch::channel(false).0);
    let mut sweeps = tokio::spawn(sweeps::run_all(
        ctx.clone(),
        schedules,
        options.name.clone(),
        {
            let stopped = sweeps_stop.subscribe();
            move || {
                let mut stopped = stopped.clone();
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                }
            }
        },
    ));
    {
        let stopping = stopping.clone();
        let sweeps_stop = sweeps_stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            sweeps_stop.send_replace(true);
            stopping.notify_one();
        });
    }
    // The queue worker runs until shutdown. If it stops early — the queue backend lost its
    // state (a flushed or restarted Redis), a connection broke — it is started again, so the
    // process keeps working; the reconciler re-queues whatever the queue lost.
    let outcome = loop {
        let mut stopped = sweeps_stop.subscribe();
        let signal = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            Ok::<(), std::io::Error>(())
        };
        let outcome = match ctx.queue.clone() {
            Queue::Sqlite { storage, wake, .. } => {
                // SQLite polls cost a query each: back off further when idle.
                let storage =
                    storage.poll_with_strategy(poll_strategy(&wake, Duration::from_millis(500)));
                let worker = WorkerBuilder::new(options.name.as_str())
                    .backend(storage)
                    .data(ctx.clone())
                    .concurrency(options.concurrency)
                    .build(handle);
                stop_within(grace, &stopping, worker.run_until(signal)).await
            }
            Queue::Redis { storage, wake, .. } => {
                let storage =
                    storage.poll_with_strategy(poll_strategy(&wake, Duration::from_millis(100)));
                let worker = WorkerBuilder::new(options.name.as_str())
                    .backend(storage)
                    .data(ctx.clone())
                    .concurrency(options.concurrency)
                    .build(handle);
                stop_within(grace, &stopping, worker.run_until(signal)).await
            }
        };
        if *sweeps_stop.borrow() {
            break outcome;
        }
        match outcome {
            Ok(()) => tracing::warn!("the queue worker stopped; starting it again"),
            Err(e) => {
                tracing::error!(error = %e, "the queue worker stopped; starting it again")
            }
        }
        metrics::counter!("licensor_worker_restarts_total").increment(1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    sweeps_stop.send_replace(true);
    match tokio::time::timeout(grace, &mut sweeps).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "sweeps stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "sweeps stopped with an error"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => {
            tracing::warn!("sweeps did not stop within the grace period");
            sweeps.abort();
        }
    }
    tracing::info!(worker = %options.name, "worker stopped");
    outcome
}

/// When the queue worker looks for messages: at once when this process pushed one (the queue's
/// wake-ups), and otherwise by polling — every 20 ms while there is work, backing off to `idle`
/// while the queue stays empty.
fn poll_strategy(wake: &licensor_core::queue::Wake, idle: Duration) -> Strategy {
    Strategy::new()
        .stream(wake.stream())
        .interval_with_backoff(Duration::from_millis(20), BackoffConfig::new(idle))
}

/// Run the worker; once it has been told to stop it has `grace` to finish in-flight tasks.
/// Tasks still running after that are abandoned to the queue's orphan recovery and licensor's
/// reconciler, which hand them to another worker.
async fn stop_within<F, E>(
    grace: Duration,
    stopping: &tokio::sync::Notify,
    worker: F,
) -> anyhow::Result<()>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let deadline = async {
        stopping.notified().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        outcome = worker => outcome.map_err(|e| anyhow::anyhow!("worker: {e}")),
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight tasks did not finish within the grace period; leaving them to recovery");
            Ok(())
        }
    }
}
