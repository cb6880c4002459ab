//! licensor-workers: the processes that take messages off the queue and do the work.
//!
//! [`run`] consumes the queue until `shutdown` resolves, then stops taking new messages and
//! lets in-flight ones finish within the configured grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{BackendExt, BoxDynError, Data, Strategy, WorkerBuilder};
use futures::FutureExt;
use licensor_core::db::Db;
use licensor_core::jobs::processes::ProcessId;
use licensor_core::queue::{Message, Queue, Wake};
use tokio::sync::broadcast;

pub mod heartbeat;
pub mod jobs;
pub mod lanes;
pub mod outage;
mod ping;
mod poll;
pub mod sweeps;
pub mod watch;
pub mod webhooks;

/// Something a worker did, for metrics and for observers such as tests and the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    Pinged { nonce: uuid::Uuid, worker: String },
}

/// What every handler can reach.
#[derive(Clone)]
pub struct WorkerContext {
    pub db: Db,
    /// The queue every process takes from.
    pub queue: Queue,
    /// This process's own queue ([`Queue::own`]: on Redis [`Queue::of_process`], beside the
    /// embedded queue a [`licensor_core::queue::LocalQueue`] in memory): the lanes of the
    /// tenants it writes to go there, and on Redis other processes send it the lanes of those
    /// tenants they take from the shared queue.
    pub own_queue: Option<Queue>,
    pub name: String,
    pub events: broadcast::Sender<WorkerEvent>,
    /// One directory client per tenant, shared by every task of this process.
    pub directory: licensor_core::directory::DirectoryClients,
    pub jobs: licensor_core::config::JobSettings,
    /// The member leases this process holds right now.
    pub leases: outage::Leases,
    /// This process's turns to write to tenants ([`licensor_core::jobs::writer`]).
    pub turns: licensor_core::jobs::writer::Turns,
    /// The chunks this process is writing, their jobs' statuses and tenants' turns watched
    /// together ([`watch`]); made with `db` and `turns` above.
    pub watched: watch::Watched,
    /// Lanes of jobs waiting for their tenant's write budget here, and spare lanes
    /// ([`lanes`]).
    pub lanes: lanes::Lanes,
    /// Webhook settings, the key to their signing secrets and the client deliveries use.
    pub webhooks: licensor_core::webhooks::Webhooks,
    /// Raised once the process is told to stop: a step reading a job's groups stops after the
    /// page it stores ([`licensor_core::jobs::expand::expand`]).
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl WorkerContext {
    /// Where this process queues the lanes of a tenant whose turn to write it holds: its own
    /// queue where it has one, else the shared queue.
    pub fn lanes_queue(&self) -> &Queue {
        self.own_queue.as_ref().unwrap_or(&self.queue)
    }
}

/// A worker process's places (`worker.concurrency`), shared by its queue workers: the shared
/// queue's and its own ([`WorkerContext::own_queue`]) together run no more steps at once than
/// that.
#[derive(Clone)]
struct Places(Arc<tokio::sync::Semaphore>);

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique per process (host + pid + a random suffix): apalis recovers a dead worker's tasks
    /// by name, and two processes sharing one would hide each other's orphans.
    pub name: String,
    /// The host name (`/etc/hostname`) and process id in `name`, recorded with the process's
    /// heartbeat.
    pub host: String,
    pub pid: u32,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    /// Schedules of licensor's own periodic work.
    pub sweeps: licensor_core::config::SweepSettings,
    /// The process's heartbeat in the database, and when its leases are taken over.
    pub heartbeat: heartbeat::HeartbeatOptions,
}

impl WorkerOptions {
    pub fn new(concurrency: usize, shutdown_grace: Duration) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let pid = std::process::id();
        WorkerOptions {
            name: format!("licensor-{host}-{pid}-{suffix}"),
            host,
            pid,
            concurrency,
            shutdown_grace,
            sweeps: Default::default(),
            heartbeat: Default::default(),
        }
    }
}

async fn handle(
    message: Message,
    ctx: Data<Arc<WorkerContext>>,
    places: Data<Places>,
) -> Result<(), BoxDynError> {
    let place = (*places).0.clone().acquire_owned().await?;
    // A step runs to its end even when the queue worker that started it stops (a lost queue
    // connection, shutdown): dropped half-way, it would leave members written to the directory
    // but not recorded, to be written again. Its place is held until then.
    let ctx: Arc<WorkerContext> = (*ctx).clone();
    tokio::spawn(async move {
        let outcome = step(message, ctx).await;
        drop(place);
        outcome
    })
    .await
    .unwrap_or_else(|e| Err(e.into()))
}

async fn step(message: Message, ctx: Arc<WorkerContext>) -> Result<(), BoxDynError> {
    loop {
        let outcome = match &message {
            Message::Ping { nonce } => ping::handle(&ctx, *nonce).await,
            Message::Run { tenant_id, job_id } => jobs::run(&ctx, *tenant_id, *job_id).await,
            Message::Work {
                tenant_id,
                job_id,
                more_lanes,
            } => jobs::work(&ctx, *tenant_id, *job_id, *more_lanes).await,
            Message::Deliver {
                tenant_id,
                delivery_id,
            } => webhooks::deliver(&ctx, *tenant_id, *delivery_id).await,
        };
        match outcome {
            // Every step is safe to repeat: wait for the database and take the step again,
            // rather than let the queue back off for longer than the outage lasted.
            Err(e) if outage::is_unavailable(&e) => {
                tracing::warn!(error = %e, "database unavailable; waiting for it to take the step again");
                if !licensor_core::db::wait_until_available(&ctx.db, outage::OUTAGE_PATIENCE).await
                {
                    return Err(e);
                }
            }
            other => {
                return other.inspect_err(
                    |e| tracing::warn!(error = %e, "task failed; it will be retried"),
                );
            }
        }
    }
}

/// Take the messages of this process's own queue on the embedded default
/// ([`licensor_core::queue::LocalQueue`]) until `stop` resolves: each on one of the process's
/// places, as the shared queue's are — a message at a time, waiting for a place once it has
/// one (a place is never held waiting for a message: the shared queue's steps could not have
/// it). A step that fails is taken again later ([`licensor_core::queue::LocalQueue::retry`]).
/// Steps still running when it returns go on to their end, as the shared queue's do; a message
/// taken and not started when it stops is put back ([`licensor_core::queue::Taken`]).
async fn work_local(
    local: licensor_core::queue::LocalQueue,
    ctx: Arc<WorkerContext>,
    places: Places,
    stop: impl Future<Output = Result<(), std::io::Error>>,
) {
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            _ = &mut stop => return,
            next = local.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        // Put back should this stop, or be dropped (the shared queue's worker beside it
        // failed, and both start again), before the message's step starts.
        let taken = licensor_core::queue::Taken::new(&local, next);
        let place = tokio::select! {
            _ = &mut stop => return,
            place = places.0.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => return,
            },
        };
        let Some(next) = taken.start() else {
            continue;
        };
        let (ctx, local) = (ctx.clone(), local.clone());
        tokio::spawn(async move {
            let outcome = step(next.message.clone(), ctx).await;
            drop(place);
            if outcome.is_err() && !local.retry(next) {
                tracing::warn!(
                    "a step of this process's own queue failed on its last try; the reconciler queues its job again should it stall"
                );
            }
        });
    }
}

/// Consume the queue until `shutdown` resolves.
pub async fn run<S>(ctx: WorkerContext, options: WorkerOptions, shutdown: S) -> anyhow::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let places = Places(Arc::new(tokio::sync::Semaphore::new(options.concurrency)));
    tracing::info!(worker = %options.name, queue = ctx.queue.backend_name(), "worker started");
    let grace = options.shutdown_grace;
    let stopping = Arc::new(tokio::sync::Notify::new());
    // The sweeps run beside the queue worker and stop on the same signal.
    let sweeps_stop = Arc::new(tokio::sync::watch::channel(false).0);
    let mut sweeps = tokio::spawn(sweeps::run_all(
        ctx.clone(),
        options.sweeps.clone(),
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
    // The process's heartbeat starts before the process takes any work (the sweeps' start-up catch-up is already under way beside it), and beside every step: a slow step
    // never stops it.
    let process = ProcessId {
        name: options.name.clone(),
        host: options.host.clone(),
        pid: options.pid,
    };
    let first_beat = heartbeat::start(&ctx, &process, &options.heartbeat).await;
    let beating = licensor_core::tasks::AbortOnDrop(tokio::spawn(heartbeat::run(
        ctx.clone(),
        process,
        options.heartbeat.clone(),
        first_beat,
    )));
    {
        let stopping = stopping.clone();
        let sweeps_stop = sweeps_stop.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            shutdown.await;
            ctx.stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
            sweeps_stop.send_replace(true);
            stopping.notify_one();
        });
    }
    if let Err(e) = ctx.queue.forget_departed_workers().await {
        tracing::warn!(error = %e, "removing departed workers' queue data failed");
    }
    let tidy = licensor_core::tasks::AbortOnDrop(tokio::spawn(tidy_queue(ctx.clone())));
    let mut restarted = false;
    // The queue worker runs until shutdown. If it stops early — the queue backend lost its
    // state (a flushed or restarted Redis), a connection broke — it is started again, so the
    // process keeps working; the reconciler re-queues whatever the queue lost.
    let outcome = loop {
        let stop_signal = || {
            let mut stopped = sweeps_stop.subscribe();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
                Ok::<(), std::io::Error>(())
            }
        };
        let signal = stop_signal();
        if restarted {
            // The queue may have lost its messages (a Redis that restarted empty): once it
            // answers, queue every active job again at once instead of waiting for the
            // reconciler. Repeated messages are harmless.
            while !*sweeps_stop.borrow() && !ctx.queue.ping().await {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            match jobs::requeue_active(&ctx).await {
                Ok(n) => tracing::info!(jobs = n, "queue back; active jobs queued again"),
                Err(e) => tracing::warn!(error = %e, "queueing active jobs again failed"),
            }
        }
        restarted = true;
        let outcome = match ctx.queue.clone() {
            Queue::Sqlite { storage, wake, .. } => {
                // SQLite polls cost a write each: fewer of them.
                let storage =
                    storage.poll_with_strategy(poll_strategy(&wake, Duration::from_millis(500)));
                let worker = WorkerBuilder::new(options.name.as_str())
                    .backend(storage)
                    .data(ctx.clone())
                    .data(places.clone())
                    .concurrency(options.concurrency)
                    .build(handle);
                match ctx.own_queue.clone() {
                    Some(Queue::Local(local)) => {
                        // This process's own queue, in memory, on the same places.
                        let own = work_local(local, ctx.clone(), places.clone(), stop_signal());
                        let both = async {
                            tokio::try_join!(
                                worker.run_until(signal),
                                own.map(Ok::<(), apalis::prelude::WorkerError>)
                            )
                            .map(|_| ())
                        };
                        stop_within(grace, &stopping, &ctx, both).await
                    }
                    _ => stop_within(grace, &stopping, &ctx, worker.run_until(signal)).await,
                }
            }
            // A process's own queue as the only one (an embedder's): its messages alone.
            Queue::Local(local) => {
                let own = work_local(local, ctx.clone(), places.clone(), signal);
                stop_within(grace, &stopping, &ctx, own.map(Ok::<(), std::io::Error>)).await
            }
            Queue::Redis { storage, wake, .. } => {
                let worker = |storage: apalis_redis::RedisStorage<Message>, wake: &Wake| {
                    WorkerBuilder::new(options.name.as_str())
                        .backend(
                            storage
                                .poll_with_strategy(poll_strategy(wake, Duration::from_millis(50))),
                        )
                        .data(ctx.clone())
                        .data(places.clone())
                        .concurrency(options.concurrency)
                        .build(handle)
                };
                let shared = worker(storage, &wake);
                match ctx.own_queue.clone() {
                    Some(Queue::Redis { storage, wake, .. }) => {
                        // This process's own queue, beside the shared one and on the same
                        // places; either stopping stops both, and both start again.
                        let own = worker(storage, &wake);
                        let both = async {
                            tokio::try_join!(shared.run_until(signal), own.run_until(stop_signal()))
                                .map(|_| ())
                        };
                        stop_within(grace, &stopping, &ctx, both).await
                    }
                    _ => stop_within(grace, &stopping, &ctx, shared.run_until(signal)).await,
                }
            }
        };
        if *sweeps_stop.borrow() {
            // The queue worker takes no more messages, but steps it started may still run:
            // they get the grace period, then their members are released.
            let _ = tokio::time::timeout(grace, ctx.leases.drained()).await;
            release_held(&ctx, grace).await;
            break match outcome {
                // Once this process stopped beating on the queue, apalis-redis gave the
                // messages of its steps still running to the other workers as orphans, and
                // refuses the acknowledgements of the steps that finish within the grace
                // period: nothing is lost, a step's message runs again (a step is safe to run
                // twice). Any other error stays one.
                Err(e) if orphaned_ack(&ctx.queue, &e) => {
                    tracing::warn!(error = %e, "steps that finished while the worker stopped could not be acknowledged; their messages run again elsewhere");
                    Ok(())
                }
                other => other,
            };
        }
        match outcome {
            Ok(()) => tracing::warn!("the queue worker stopped; starting it again"),
            Err(e) => {
                tracing::error!(error = %e, "the queue worker stopped; starting it again")
            }
        }
        metrics::counter!("licensor_worker_restarts_total").increment(1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    sweeps_stop.send_replace(true);
    drop(tidy);
    // Stopped cleanly: hand back whatever this process still holds and remove its row, so no
    // peer waits for its heartbeat to go stale.
    drop(beating);
    heartbeat::stopped(&options.name);
    ctx.turns.forget_all();
    match licensor_core::jobs::processes::leave(&ctx.db, &options.name).await {
        Ok(freed) => {
            heartbeat::requeue(&ctx, freed).await;
            // Its tenants' jobs were queued again on the shared queue: the lanes still on this
            // process's own queue have nobody to take them.
            if let Err(e) = ctx.queue.forget_process(&options.name).await {
                tracing::warn!(error = %e, "deleting the worker process's own queue failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "removing the worker process's row failed"),
    }
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

/// Whether `error`, with which the queue worker ended after it was told to stop, is
/// apalis-redis refusing to acknowledge a step whose message it had already given to another
/// worker as an orphan (its Lua script's "task not executed by worker").
fn orphaned_ack(queue: &Queue, error: &anyhow::Error) -> bool {
    matches!(queue, Queue::Redis { .. })
        && format!("{error:#}").contains("task not executed by worker")
}

/// When the queue worker looks for messages: at once when this process pushed one (the queue's
/// wake-ups), and otherwise by polling every `every`, with a timer that never goes quiet
/// ([`poll::Ticker`]).
fn poll_strategy(wake: &licensor_core::queue::Wake, every: Duration) -> Strategy {
    Strategy::new()
        .stream(wake.stream())
        .apply(poll::Ticker::new(every))
}

/// Run the worker; once it has been told to stop it has `grace` to finish in-flight tasks.
/// Tasks still running after that are abandoned: the members they hold are released at once
/// (free for any worker), and their messages go to the queue's orphan recovery and licensor's
/// reconciler.
async fn stop_within<F, E>(
    grace: Duration,
    stopping: &tokio::sync::Notify,
    ctx: &WorkerContext,
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
            release_held(ctx, grace).await;
            Ok(())
        }
    }
}

/// Hand back the members this process still holds and queue their jobs again, so another
/// worker takes them at once rather than after the lease time (the messages of the steps that
/// held them went with those steps).
async fn release_held(ctx: &WorkerContext, grace: Duration) {
    let jobs = ctx.leases.release_all(&ctx.db).await;
    if jobs.is_empty() {
        return;
    }
    tracing::warn!(
        grace_secs = grace.as_secs(),
        jobs = jobs.len(),
        "in-flight tasks did not finish within the grace period; their members were released"
    );
    let messages = jobs
        .into_iter()
        .map(|(tenant_id, job_id)| Message::Run { tenant_id, job_id })
        .collect();
    if let Err(e) = ctx.queue.push_bulk(messages).await {
        tracing::warn!(error = %e, "queueing released jobs failed; the reconciler will");
    }
}

/// How often a worker process removes finished tasks' data from the queue (see
/// [`Queue::tidy`]).
const TIDY_EVERY: Duration = Duration::from_secs(1);

/// Keep the queue holding only waiting and running tasks, for as long as the process runs.
async fn tidy_queue(ctx: Arc<WorkerContext>) {
    loop {
        tokio::time::sleep(TIDY_EVERY).await;
        for queue in std::iter::once(&ctx.queue).chain(&ctx.own_queue) {
            match queue.tidy().await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("licensor_queue_tasks_removed_total").increment(n);
                    tracing::trace!(tasks = n, "finished tasks removed from the queue");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "removing finished tasks from the queue failed")
                }
            }
        }
    }
}
