//! The job queue: apalis-sqlite (embedded default) or apalis-redis (production), behind one
//! [`Queue`] that the API pushes to and the workers consume from.
//!
//! Messages are small (ids and chunk bounds, never member lists) and delivery is at least once:
//! the database, not the queue, says what is already done.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ConfigError, QueueUrl, Settings};

/// A unit of work on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Proves the round trip from the API to a worker; carries nothing but a nonce.
    Ping { nonce: Uuid },
    /// Start or resume a job: expand its groups if that is not done yet, then queue its lanes.
    Run { tenant_id: Uuid, job_id: Uuid },
    /// Work one chunk of a job's pending members, then queue the next chunk of the same lane.
    Work {
        tenant_id: Uuid,
        job_id: Uuid,
        /// The job's other lanes this one brings: a job's `Run` queues its first lane alone,
        /// carrying the rest, and the step that takes it queues them as soon as it knows it
        /// does not learn the tenant's write budget — or, when it does, once the budget is
        /// learned (lanes that would only wait for it never go through the queue). 0 (and left
        /// out of the message) for every other lane.
        #[serde(default, skip_serializing_if = "is_zero")]
        more_lanes: u32,
    },
    /// Make the next attempt of a webhook delivery ([`crate::webhooks::deliveries`]).
    Deliver { tenant_id: Uuid, delivery_id: Uuid },
}

/// The embedded queue's priority of a job's first lane (others have 0): taken before the
/// `Run`s queued ahead of it, so a job's first writes do not wait for every other job to be
/// read. One per job, so the `Run`s are never kept waiting for long.
const FIRST_LANE_PRIORITY: usize = 1;

/// `message` as a task of the embedded queue: a job's first lane (a [`Message::Work`] that
/// brings other lanes) with [`FIRST_LANE_PRIORITY`], every other message with none. Every push
/// of one message to apalis-sqlite goes through here (apalis-redis has no priorities).
fn sqlite_task(message: Message) -> apalis::prelude::TaskBuilder<Message> {
    let first_lane = matches!(message, Message::Work { more_lanes, .. } if more_lanes > 0);
    let task = apalis::prelude::TaskBuilder::new(message);
    if first_lane {
        task.priority(FIRST_LANE_PRIORITY)
    } else {
        task
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Message {
    /// A lane of job `job_id` (a [`Message::Work`] that brings no other lane).
    pub fn work(tenant_id: Uuid, job_id: Uuid) -> Message {
        Message::Work {
            tenant_id,
            job_id,
            more_lanes: 0,
        }
    }
}

/// apalis-sqlite's finished tasks: done, killed, or failed with no attempt left (a macro, so the
/// statements that use it stay `&'static str`).
macro_rules! finished_sqlite {
    () => {
        "(status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))"
    };
}

/// Queue tuning that both backends share.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub name: String,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
}

impl QueueOptions {
    pub fn from_settings(settings: &Settings) -> Self {
        QueueOptions {
            name: settings.queue_name.clone(),
            heartbeat: Duration::from_secs(settings.worker.heartbeat_secs),
            missed_heartbeats: settings.worker.missed_heartbeats,
        }
    }
}

/// A connected queue backend.
#[derive(Clone)]
pub enum Queue {
    Sqlite {
        pool: SqlitePool,
        storage: SqliteStorage<Message>,
        name: String,
        wake: Wake,
    },
    Redis {
        conn: ConnectionManager,
        storage: RedisStorage<Message>,
        options: QueueOptions,
        wake: Wake,
    },
    /// This process's own queue on the embedded default ([`Queue::own`]), in memory.
    Local(LocalQueue),
}

/// The own queue of the process working an embedded (SQLite) queue ([`Queue::own`]): the lanes of
/// the tenants whose turn to write it holds, kept in this process's memory, as a Redis worker's
/// own queue keeps them where only it reads them. Nothing on it need be durable: should the
/// process stop, its turns end and its tenants' running jobs are queued again on the shared
/// queue ([`crate::jobs::processes::leave`]); should it die, the process that starts on the same
/// file takes over its leases and queues those jobs again at once
/// ([`crate::jobs::processes::take_over`]), and the reconciler queues any job that stalls.
///
/// Kept in apalis-sqlite's table, every lane's step cost a push, a fetch and an
/// acknowledgement, each a transaction on the queue's file: `licensor-bench --scenario msp`
/// (500 tenants' jobs at once) wrote as many pages to the queue's write-ahead log as to the
/// database's, for messages nobody else could take.
#[derive(Clone)]
pub struct LocalQueue {
    tx: tokio::sync::mpsc::UnboundedSender<Local>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Local>>>,
    waiting: Arc<std::sync::atomic::AtomicU64>,
}

/// A message taken from a [`LocalQueue`] whose step has not started: put back on the queue
/// when dropped before [`Taken::start`], so a consumer that stops (or is dropped) while it waits
/// for a place loses nothing.
pub struct Taken<'a> {
    queue: &'a LocalQueue,
    local: Option<Local>,
}

impl<'a> Taken<'a> {
    pub fn new(queue: &'a LocalQueue, local: Local) -> Taken<'a> {
        Taken {
            queue,
            local: Some(local),
        }
    }

    /// The message, its step starting: no longer put back.
    pub fn start(mut self) -> Option<Local> {
        self.local.take()
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(local) = self.local.take() {
            self.queue.send(local);
        }
    }
}

/// A message on a [`LocalQueue`], with the tries its step has failed so far.
#[derive(Debug, Clone)]
pub struct Local {
    pub message: Message,
    pub failed: u32,
}

/// Tries of a message on a [`LocalQueue`] whose step fails, as apalis-sqlite gives a task
/// (`max_attempts`, 25 by default); past them the message is dropped, and its job, should it
/// stall, is queued again by the reconciler.
pub const LOCAL_TRIES: u32 = 25;

impl LocalQueue {
    fn new() -> LocalQueue {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        LocalQueue {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            waiting: Default::default(),
        }
    }

    /// A new message (no failed tries) on the queue.
    fn push(&self, message: Message) {
        self.send(Local { message, failed: 0 });
    }

    fn send(&self, local: Local) {
        // The receiver lives as long as any clone of the queue: a send cannot fail.
        if self.tx.send(local).is_ok() {
            let now = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
            show_depth(now);
        }
    }

    /// `local` on the queue once `wait` has passed.
    fn send_after(&self, local: Local, wait: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            queue.send(local);
        });
    }

    /// The next message, once there is one.
    pub async fn next(&self) -> Option<Local> {
        let local = self.rx.lock().await.recv().await?;
        let now = self
            .waiting
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        show_depth(now);
        Some(local)
    }

    /// Take `local` again after its step failed: after 1 s, doubling with each failure up to a
    /// minute, while it has tries left ([`LOCAL_TRIES`]). Returns whether it is taken again.
    pub fn retry(&self, mut local: Local) -> bool {
        local.failed += 1;
        if local.failed >= LOCAL_TRIES {
            return false;
        }
        let wait =
            Duration::from_secs(1u64 << (local.failed - 1).min(6)).min(Duration::from_secs(60));
        self.send_after(local, wait);
        true
    }

    /// Messages waiting to be taken (those waiting for a retry or a `push_at` time aside).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A [`LocalQueue`]'s messages waiting, as the queue's depth
/// (`licensor_queue_depth{backend="local"}`: the API's scrape reads the shared queue's).
fn show_depth(waiting: u64) {
    metrics::gauge!("licensor_queue_depth", "backend" => "local").set(waiting as f64);
}

/// Wakes this process's queue worker when this process pushes a message, so work queued here
/// (a new job on the embedded default, a lane's next chunk anywhere) starts at once instead of
/// at the worker's next poll. Workers still poll for messages other processes push.
#[derive(Clone)]
pub struct Wake {
    tx: futures::channel::mpsc::Sender<()>,
    rx: Arc<std::sync::Mutex<futures::channel::mpsc::Receiver<()>>>,
}

impl Wake {
    fn new() -> Self {
        // One pending wake-up is enough: a poll takes every message there is room for.
        let (tx, rx) = futures::channel::mpsc::channel(0);
        Wake {
            tx,
            rx: Arc::new(std::sync::Mutex::new(rx)),
        }
    }

    fn notify(&self) {
        // A full channel means a wake-up is already pending.
        let _ = self.tx.clone().try_send(());
    }

    /// The wake-ups, as a stream for the worker's poll strategy. There is one stream of
    /// wake-ups per queue; a restarted worker takes it over.
    pub fn stream(&self) -> WakeStream {
        WakeStream(self.rx.clone())
    }
}

/// See [`Wake::stream`].
pub struct WakeStream(Arc<std::sync::Mutex<futures::channel::mpsc::Receiver<()>>>);

impl futures::Stream for WakeStream {
    type Item = ();

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        use futures::StreamExt;
        match self.0.lock() {
            Ok(mut rx) => rx.poll_next_unpin(cx),
            Err(_) => std::task::Poll::Ready(None),
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Queue::Sqlite { .. } => "Queue::Sqlite",
            Queue::Redis { .. } => "Queue::Redis",
            Queue::Local(_) => "Queue::Local",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(String);

impl Queue {
    /// Connect to the configured backend and prepare it. Failures name the `queue_url` key.
    pub async fn connect(url: &QueueUrl, options: QueueOptions) -> Result<Queue, ConfigError> {
        match url {
            QueueUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        ConfigError::new(
                            "queue_url",
                            format!("cannot create directory {}: {e}", dir.display()),
                        )
                    })?;
                }
                // Every connection of the pool in write-ahead-log mode, synced at checkpoints
                // rather than at each commit: the durability of the database's own connections
                // (`db::connect`). apalis-sqlite's setup sets its pragmas on the one connection
                // it runs on; the pool's other connections synced the log at every commit
                // (sqlx's default, `FULL`), each queue push and ack waiting for the disk while
                // it held the queue's write lock. A message lost with the last commits of a
                // power cut is queued again by the reconciler, like one lost between a commit
                // and its push.
                let connect = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(crate::db::LOCK_TIMEOUT);
                // apalis-sqlite's tables are made (or migrated) on a connection of their own,
                // closed after: its setup also sets `synchronous = OFF` on the connection it
                // runs on, which none of the working pool's connections is then.
                let setup = crate::db::wait_for_locks(SqlitePoolOptions::new())
                    .max_connections(1)
                    .connect_with(connect.clone())
                    .await
                    .map_err(|e| queue_config_error(url, &e.to_string()))?;
                let made = SqliteStorage::setup(&setup).await;
                setup.close().await;
                made.map_err(|e| queue_config_error(url, &e.to_string()))?;
                let pool = crate::db::wait_for_locks(SqlitePoolOptions::new())
                    .max_connections(4)
                    .connect_with(connect)
                    .await
                    .map_err(|e| queue_config_error(url, &e.to_string()))?;
                let config = apalis_sqlite::Config::default()
                    .queue(&options.name)
                    // Take few messages at a time: work spreads over processes, and other
                    // jobs' messages are not stuck behind a worker's prefetched ones.
                    .batch_size(2)
                    .heartbeat_interval(options.heartbeat)
                    .missed_heartbeats(options.missed_heartbeats);
                let storage = SqliteStorage::new(&pool).with_config(config);
                Ok(Queue::Sqlite {
                    pool,
                    storage,
                    name: options.name.clone(),
                    wake: Wake::new(),
                })
            }
            QueueUrl::Redis(redis_url) => {
                let conn = tokio::time::timeout(
                    Duration::from_secs(10),
                    connect_redis(redis_url.as_str()),
                )
                .await
                .map_err(|_| queue_config_error(url, "timed out"))?
                .map_err(|e| queue_config_error(url, &e.to_string()))?;
                let storage = RedisStorage::new(conn.clone()).with_config(redis_config(&options));
                Ok(Queue::Redis {
                    conn,
                    storage,
                    options,
                    wake: Wake::new(),
                })
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Queue::Sqlite { .. } => "sqlite",
            Queue::Redis { .. } => "redis",
            Queue::Local(_) => "local",
        }
    }

    /// This process's wake-ups (see [`Wake`]); none for a [`Queue::Local`], whose worker takes
    /// each message as it comes.
    fn wake(&self) -> Option<&Wake> {
        match self {
            Queue::Sqlite { wake, .. } | Queue::Redis { wake, .. } => Some(wake),
            Queue::Local(_) => None,
        }
    }

    /// This process's own queue, for the lanes of the tenants whose turn to write it holds:
    /// [`Queue::of_process`] on Redis, a [`LocalQueue`] beside the embedded queue.
    pub fn own(&self, process: &str) -> Option<Queue> {
        match self {
            Queue::Sqlite { .. } => Some(Queue::Local(LocalQueue::new())),
            Queue::Redis { .. } => self.of_process(process),
            Queue::Local(_) => None,
        }
    }

    /// Put one message on the queue, and wake this process's queue worker for it.
    pub async fn push(&self, message: Message) -> Result<(), QueueError> {
        self.push_unwoken(message).await?;
        if let Some(wake) = self.wake() {
            wake.notify();
        }
        Ok(())
    }

    /// Put one message on the queue without waking this process's queue worker (see
    /// [`Wake`]): whichever process polls first takes it. For a message meant for another
    /// process as much as this one — a lane left to the process holding its tenant's turn to
    /// write, which this process's wake-up would otherwise take straight back.
    pub async fn push_unwoken(&self, message: Message) -> Result<(), QueueError> {
        match self {
            Queue::Sqlite { storage, .. } => storage
                .clone()
                .push_task(sqlite_task(message).build())
                .await
                .map_err(|e| QueueError(e.to_string()))?,
            Queue::Redis { storage, .. } => storage
                .clone()
                .push(message)
                .await
                .map_err(|e| QueueError(e.to_string()))?,
            Queue::Local(local) => local.push(message),
        }
        Ok(())
    }

    /// Put one message on the queue, to be taken no earlier than `at` (whole seconds, rounded
    /// up: both backends schedule by the second).
    pub async fn push_at(
        &self,
        message: Message,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), QueueError> {
        use apalis::prelude::TaskBuilder;
        let secs = (at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)).max(0) as u64;
        match self {
            Queue::Sqlite { storage, .. } => storage
                .clone()
                .push_task(sqlite_task(message).run_at_timestamp(secs).build())
                .await
                .map_err(|e| QueueError(e.to_string()))?,
            Queue::Redis { storage, .. } => storage
                .clone()
                .push_task(TaskBuilder::new(message).run_at_timestamp(secs).build())
                .await
                .map_err(|e| QueueError(e.to_string()))?,
            Queue::Local(local) => local.send_after(
                Local { message, failed: 0 },
                (at - chrono::Utc::now()).to_std().unwrap_or_default(),
            ),
        }
        Ok(())
    }

    /// Put many messages on the queue in one round trip.
    pub async fn push_bulk(&self, messages: Vec<Message>) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Sqlite { storage, .. } => storage
                .clone()
                .push_bulk(messages)
                .await
                .map_err(|e| QueueError(e.to_string()))?,
            Queue::Redis { storage, .. } => storage
                .clone()
                .push_bulk(messages)
                .await
                .map_err(|e| QueueError(e.to_string()))?,
            Queue::Local(local) => messages.into_iter().for_each(|m| local.push(m)),
        }
        if let Some(wake) = self.wake() {
            wake.notify();
        }
        Ok(())
    }

    /// Messages waiting to be taken by a worker, for metrics — on Redis those on every worker
    /// process's own queue too ([`Queue::of_process`]); `None` if the backend does not answer.
    pub async fn depth(&self) -> Option<u64> {
        match self {
            Queue::Sqlite { pool, name, .. } => {
                let queue = name.clone();
                sea_orm::sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND status = 'Pending'",
                )
                .bind(queue)
                .fetch_one(pool)
                .await
                .ok()
                .map(|n| n.max(0) as u64)
            }
            Queue::Redis { conn, options, .. } => {
                let mut conn = conn.clone();
                let depth = async {
                    let mut processes: Vec<String> = own_queue_keys(&mut conn, &options.name)
                        .await
                        .ok()?
                        .into_iter()
                        .map(|(process, _)| process)
                        .collect();
                    processes.sort();
                    processes.dedup();
                    let names = processes.iter().map(|p| own_queue_name(&options.name, p));
                    // apalis-redis keeps a message pushed for now in the queue's scheduled set
                    // until a worker's poll moves it to the active list: both hold waiting
                    // messages (the scheduled set up to now, not those due later).
                    let now = chrono::Utc::now().timestamp();
                    let mut total = 0u64;
                    for name in std::iter::once(options.name.clone()).chain(names) {
                        let config = redis_config(&QueueOptions {
                            name,
                            ..options.clone()
                        });
                        let (active, due): (u64, u64) = redis::pipe()
                            .cmd("LLEN")
                            .arg(config.active_jobs_list())
                            .cmd("ZCOUNT")
                            .arg(config.scheduled_jobs_set())
                            .arg("-inf")
                            .arg(now)
                            .query_async(&mut conn)
                            .await
                            .ok()?;
                        total += active + due;
                    }
                    Some(total)
                };
                tokio::time::timeout(Duration::from_secs(2), depth)
                    .await
                    .ok()
                    .flatten()
            }
            Queue::Local(local) => Some(local.waiting()),
        }
    }

    /// Remove the data of finished tasks from the queue backend, so it holds only what is
    /// waiting or running; returns how many tasks were removed. On Redis see [`TIDY_LUA`].
    ///
    /// apalis-sqlite keeps a row for every task it ever ran (`status` `Done`, `Killed`, or
    /// `Failed` with no attempt left) in the same `Jobs` table it takes tasks from and
    /// acknowledges them in. Its acknowledgement (`UPDATE Jobs … FROM json_each(?)`) is planned
    /// through the `lock_by` index, which every row this worker ever ran shares: each
    /// acknowledgement parsed its JSON once per such row, so the queue's cost grew with every
    /// task since the file was created (`licensor-bench --scenario msp`: about a sixth of
    /// licensor's CPU after a minute). Removed here in batches of [`TIDY_BATCH`], the rows left
    /// are the ones waiting or running.
    pub async fn tidy(&self) -> Result<u64, QueueError> {
        let (conn, options) = match self {
            Queue::Redis { conn, options, .. } => (conn, options),
            Queue::Sqlite { pool, name, .. } => return tidy_sqlite(pool, name).await,
            Queue::Local(_) => return Ok(0),
        };
        let config = redis_config(options);
        let mut conn = conn.clone();
        let mut total = 0u64;
        loop {
            let removed: u64 = redis::Script::new(TIDY_LUA)
                .key(config.done_jobs_set())
                .key(config.dead_jobs_set())
                .key(config.job_data_hash())
                .key(config.job_meta_hash())
                .arg(TIDY_BATCH)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| QueueError(e.to_string()))?;
            total += removed;
            if removed < TIDY_BATCH {
                return Ok(total);
            }
        }
    }

    /// Finished tasks the backend still keeps: those [`Queue::tidy`] removes (on SQLite the
    /// rows of done, killed and dead tasks; on Redis the ids in the done and dead sets).
    pub async fn finished_kept(&self) -> Result<u64, QueueError> {
        match self {
            Queue::Sqlite { pool, name, .. } => {
                let n: i64 = sea_orm::sqlx::query_scalar(concat!(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND ",
                    finished_sqlite!()
                ))
                .bind(name)
                .fetch_one(pool)
                .await
                .map_err(|e| QueueError(e.to_string()))?;
                Ok(n.max(0) as u64)
            }
            Queue::Redis { conn, options, .. } => {
                let config = redis_config(options);
                let mut conn = conn.clone();
                let mut total = 0u64;
                for set in [config.done_jobs_set(), config.dead_jobs_set()] {
                    let n: u64 = redis::cmd("SCARD")
                        .arg(set)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| QueueError(e.to_string()))?;
                    total += n;
                }
                Ok(total)
            }
            Queue::Local(_) => Ok(0),
        }
    }

    /// The queue of worker process `process` alone (`{queue}:to:{process}` on Redis), for the
    /// lanes of the tenants whose turn to write it holds ([`crate::jobs::writer`]): a lane that
    /// another process takes goes straight to the writer, not back on the shared queue for
    /// whichever process polls next (`licensor-bench --scenario msp` on two worker processes:
    /// 11,498 lanes went back and forth that way for 5,438 chunks written, and a job's chunks
    /// came a median 5.8 s apart where its window is 5 s). `None` on the embedded default: one
    /// process works an SQLite file's queue.
    ///
    /// Messages there are worked by that process only. Should it stop or die, nobody takes them:
    /// its turns end with it and its tenants' running jobs are queued again on the shared queue
    /// ([`crate::jobs::processes`]), and [`Queue::forget_process`] deletes its queue's keys.
    pub fn of_process(&self, process: &str) -> Option<Queue> {
        match self {
            Queue::Sqlite { .. } | Queue::Local(_) => None,
            Queue::Redis { conn, options, .. } => {
                let options = QueueOptions {
                    name: own_queue_name(&options.name, process),
                    ..options.clone()
                };
                let storage = RedisStorage::new(conn.clone()).with_config(redis_config(&options));
                Some(Queue::Redis {
                    conn: conn.clone(),
                    storage,
                    options,
                    wake: Wake::new(),
                })
            }
        }
    }

    /// Delete the keys of process `process`'s own queue ([`Queue::of_process`]), once it has
    /// stopped or been taken for dead; returns how many keys were deleted.
    pub async fn forget_process(&self, process: &str) -> Result<u64, QueueError> {
        let Queue::Redis { conn, options, .. } = self else {
            return Ok(0);
        };
        let name = own_queue_name(&options.name, process);
        let mut conn = conn.clone();
        let mut keys = scan(&mut conn, &format!("{}:*", glob_escape(&name))).await?;
        keys.push(name);
        delete(&mut conn, keys).await
    }

    /// Delete the registration data apalis-redis left for workers that are no longer registered
    /// (`{queue}:workers:metadata:{name}` of processes that died or stopped), and the own queues
    /// of those processes ([`Queue::of_process`]), so restarts do not add keys for ever. Run at
    /// worker start.
    pub async fn forget_departed_workers(&self) -> Result<u64, QueueError> {
        let Queue::Redis { conn, options, .. } = self else {
            return Ok(0);
        };
        let config = redis_config(options);
        let mut conn = conn.clone();
        let live: Vec<String> = redis::cmd("ZRANGE")
            .arg(config.workers_set())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| QueueError(e.to_string()))?;
        let prefix = format!("{}:workers:metadata:", options.name);
        let metadata = scan(&mut conn, &format!("{}*", glob_escape(&prefix))).await?;
        let departed = |name: &str| !live.iter().any(|w| w == name);
        let mut keys: Vec<String> = metadata
            .into_iter()
            .filter(|k| k.strip_prefix(&prefix).is_some_and(departed))
            .collect();
        let own = own_queue_keys(&mut conn, &options.name).await?;
        keys.extend(
            own.into_iter()
                .filter(|(process, _)| departed(process))
                .map(|(_, key)| key),
        );
        delete(&mut conn, keys).await
    }

    /// Whether the backend answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        match self {
            Queue::Sqlite { pool, .. } => {
                sea_orm::sqlx::query("SELECT 1").execute(pool).await.is_ok()
            }
            Queue::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut conn);
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), ping).await,
                    Ok(Ok(_))
                )
            }
            Queue::Local(_) => true,
        }
    }
}

/// The start of every process's own queue's name ([`Queue::of_process`]).
fn process_prefix(queue: &str) -> String {
    format!("{queue}:to:")
}

/// The name of process `process`'s own queue beside queue `queue`: `{queue}:to:{process}`.
fn own_queue_name(queue: &str, process: &str) -> String {
    format!("{}{process}", process_prefix(queue))
}

/// The keys of every process's own queue under queue `queue` ([`Queue::of_process`]:
/// `{queue}:to:{process}` and `{queue}:to:{process}:…`), each with its process's name.
async fn own_queue_keys(
    conn: &mut ConnectionManager,
    queue: &str,
) -> Result<Vec<(String, String)>, QueueError> {
    let prefix = process_prefix(queue);
    let keys = scan(conn, &format!("{}*", glob_escape(&prefix))).await?;
    Ok(keys
        .into_iter()
        .filter_map(|key| {
            let process = key.strip_prefix(&prefix)?.split(':').next()?.to_owned();
            Some((process, key))
        })
        .collect())
}

/// `text` with the characters special to Redis's `MATCH` patterns escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Every key matching `pattern`, by `SCAN` (never `KEYS`, which blocks Redis while it looks).
async fn scan(conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, QueueError> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| QueueError(e.to_string()))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Delete `keys` (none: nothing is sent); returns how many there were.
async fn delete(conn: &mut ConnectionManager, keys: Vec<String>) -> Result<u64, QueueError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let n = keys.len() as u64;
    redis::cmd("DEL")
        .arg(keys)
        .query_async::<()>(conn)
        .await
        .map_err(|e| QueueError(e.to_string()))?;
    Ok(n)
}

/// The apalis-redis configuration licensor runs with: heartbeats set explicitly (the library's
/// defaults take minutes to notice a dead worker) and every finished task acknowledged.
///
/// apalis-redis 1.0 acknowledges a task (takes it out of the worker's in-flight set and marks it
/// `Done`) only when `persist_results` is on; with it off, finished tasks stay in the in-flight
/// set with status `Running` for ever, and a dead worker's recovery runs all of them again. The
/// acknowledged tasks' data is then removed by [`Queue::tidy`], which the workers run every
/// second: apalis-redis keeps it otherwise (upstream apalis-dev/apalis-redis#10).
pub fn redis_config(options: &QueueOptions) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(&options.name)
        .batch_size(2)
        .heartbeat_interval(options.heartbeat)
        .missed_heartbeats(options.missed_heartbeats)
        .persist_results(true)
}

/// Removes acknowledged tasks from apalis-redis's keys: each id in the `done` and `dead` sets
/// loses its data (`{queue}:data` field), its metadata hash (`{queue}:meta:{id}`) and its place
/// in the set. At most `ARGV[1]` ids per set and call, so one call never blocks Redis for long.
///
/// KEYS: done set, dead set, data hash, metadata prefix. Returns the number of tasks removed.
const TIDY_LUA: &str = r#"
local removed = 0
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  local ids = redis.call('SPOP', set, tonumber(ARGV[1]))
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('DEL', KEYS[4] .. ':' .. id)
    removed = removed + 1
  end
end
return removed
"#;

/// A Redis connection that comes back quickly after Redis does: reconnection is tried every
/// 50–500 ms (the client's default backs off to 3.2 s, which delays work by as much after a
/// Redis restart).
async fn connect_redis(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_number_of_retries(6)
        .set_connection_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(url)?
        .get_connection_manager_with_config(config)
        .await
}

/// Tasks [`Queue::tidy`] removes per set and Redis call, or per SQLite statement.
const TIDY_BATCH: u64 = 500;

/// [`Queue::tidy`] on apalis-sqlite: delete queue `name`'s finished tasks (the statuses
/// apalis-sqlite's own `vacuum` deletes), [`TIDY_BATCH`] per statement so that no statement
/// holds the queue file's write lock for long.
async fn tidy_sqlite(pool: &SqlitePool, name: &str) -> Result<u64, QueueError> {
    let mut total = 0u64;
    loop {
        let removed = sea_orm::sqlx::query(concat!(
            "DELETE FROM Jobs WHERE ROWID IN (SELECT ROWID FROM Jobs WHERE job_type = ?1 AND ",
            finished_sqlite!(),
            " LIMIT ?2)"
        ))
        .bind(name)
        .bind(TIDY_BATCH as i64)
        .execute(pool)
        .await
        .map_err(|e| QueueError(e.to_string()))?
        .rows_affected();
        total += removed;
        if removed < TIDY_BATCH {
            return Ok(total);
        }
    }
}

fn queue_config_error(url: &QueueUrl, reason: &str) -> ConfigError {
    ConfigError::new(
        "queue_url",
        format!(
            "cannot use {}: {}",
            url.redacted(),
            crate::db::one_line(reason)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message taken from a process's own queue and dropped before its step started is put
    /// back; one whose step started is not; a failed step's message comes back while it has
    /// tries left.
    #[tokio::test(start_paused = true)]
    async fn a_local_message_not_started_is_put_back() {
        let queue = LocalQueue::new();
        let own = Queue::Local(queue.clone());
        let job = Uuid::now_v7();
        own.push(Message::work(job, job)).await.unwrap();
        assert_eq!(own.depth().await, Some(1));
        let taken = Taken::new(&queue, queue.next().await.unwrap());
        assert_eq!(queue.waiting(), 0);
        drop(taken);
        assert_eq!(queue.waiting(), 1, "put back");
        let taken = Taken::new(&queue, queue.next().await.unwrap());
        let started = taken.start().unwrap();
        assert_eq!(started.message, Message::work(job, job));
        assert_eq!(queue.waiting(), 0, "a started message is not put back");
        // A failed step: taken again after a second, its failure counted.
        assert!(queue.retry(started));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let again = queue.next().await.unwrap();
        assert_eq!(again.failed, 1);
        let last = Local {
            failed: LOCAL_TRIES - 1,
            ..again
        };
        assert!(!queue.retry(last), "no tries left");
    }

    /// An embedded queue named `name` in a new directory (removed when the handle is dropped).
    async fn embedded_queue(name: &str) -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let url = QueueUrl::Sqlite(dir.path().join("queue.db"));
        let options = QueueOptions {
            name: name.into(),
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 3,
        };
        let queue = Queue::connect(&url, options).await.unwrap();
        (dir, queue)
    }

    /// Each connection of the embedded queue's pool is in WAL mode and syncs at checkpoints
    /// (`synchronous` 1, NORMAL), not only the one apalis-sqlite's setup ran on.
    #[tokio::test]
    async fn every_connection_of_the_embedded_queue_syncs_at_checkpoints_only() {
        let (_dir, queue) = embedded_queue("pragmas").await;
        let Queue::Sqlite { pool, .. } = &queue else {
            panic!("an embedded queue");
        };
        // Hold every connection of the pool at once, so each is looked at.
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            held.push(pool.acquire().await.unwrap());
        }
        for conn in &mut held {
            let (sync,): (i64,) = sea_orm::sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            let (mode,): (String,) = sea_orm::sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!((sync, mode.as_str()), (1, "wal"));
        }
    }

    /// On the embedded queue a job's first lane (one that brings the job's other lanes) comes
    /// before the `Run`s queued ahead of it, in the order apalis-sqlite takes messages
    /// (`priority DESC, run_at ASC, id ASC`); every other message keeps the queue's order.
    #[tokio::test]
    async fn a_jobs_first_lane_goes_before_the_runs_queued_ahead_of_it() {
        let (_dir, queue) = embedded_queue("first-lanes").await;
        let (tenant_id, job_id) = (Uuid::now_v7(), Uuid::now_v7());
        let run = |job_id| Message::Run { tenant_id, job_id };
        let first_lane = Message::Work {
            tenant_id,
            job_id,
            more_lanes: 3,
        };
        let later = Uuid::now_v7();
        // apalis-sqlite orders messages of one `run_at` by their ULID, whose random part orders
        // those made in the same millisecond at random: the pushes are a few milliseconds apart.
        for message in [
            run(Uuid::now_v7()),
            run(later),
            Message::work(tenant_id, job_id),
            first_lane.clone(),
        ] {
            queue.push(message).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let Queue::Sqlite { pool, .. } = &queue else {
            panic!("an embedded queue");
        };
        let taken: Vec<(Vec<u8>,)> = sea_orm::sqlx::query_as(
            "SELECT job FROM Jobs WHERE job_type = 'first-lanes' AND status = 'Pending' \
             ORDER BY priority DESC, run_at ASC, id ASC",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let taken: Vec<Message> = taken
            .iter()
            .map(|(job,)| serde_json::from_slice(job).unwrap())
            .collect();
        assert_eq!(taken.len(), 4);
        assert_eq!(
            taken[0], first_lane,
            "the first lane is taken first: {taken:?}"
        );
        assert!(
            matches!(taken[1], Message::Run { .. }) && taken[2] == run(later),
            "the runs keep their order, ahead of a lane that brings none: {taken:?}"
        );
        assert_eq!(taken[3], Message::work(tenant_id, job_id));
    }
}
