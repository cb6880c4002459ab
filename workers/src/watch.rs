//! The chunks this process is writing, watched together: every [`STATUS_WATCH`] one statement
//! (per 1,000 jobs) reads the status of all their jobs, and a chunk whose job is no longer
//! running (cancelled, paused, gone) has its stop raised, so the writes it has not sent yet are
//! not sent. Once a chunk has been written for [`TURN_WATCH`], its tenant's turn to write is
//! asked for again ([`Turns::confirm`]) about once a [`TURN_WATCH`], once per tenant however
//! many of its chunks are being written, beside the status reads (a turn is a write, which may
//! wait for the database's lock; the status reads never wait for it): a chunk whose process
//! lost the turn (taken for dead, and another process took it) stops within about that long
//! instead of writing into the budget the new writer schedules.
//!
//! Each chunk read its own job's status every 250 ms before: with 500 tenants' jobs written at
//! once (`licensor-bench --scenario msp`) those reads were one statement in ten of the run,
//! each a wake-up of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use licensor_core::db::Db;
use licensor_core::domain::JobStatus;
use licensor_core::jobs;
use licensor_core::jobs::writer::{Turn, Turns};
use uuid::Uuid;

/// How often the jobs of the chunks being written are read, so a cancel stops the writes not
/// sent yet within about this long (plus the requests already in flight).
pub const STATUS_WATCH: Duration = Duration::from_millis(250);

/// How often a tenant whose chunk has been written this long is asked for its turn to write
/// ([`jobs::writer`]).
pub const TURN_WATCH: Duration = Duration::from_secs(1);

/// The chunks this process is writing ([`Watched::watch`]).
#[derive(Clone)]
pub struct Watched {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    turns: Turns,
    chunks: Mutex<Chunks>,
    next: AtomicU64,
    /// Whether tenants' turns are being asked for ([`ask_turns`]): one round at a time, beside
    /// the status reads, never delaying them.
    asking: AtomicBool,
}

#[derive(Default)]
struct Chunks {
    watched: HashMap<u64, Chunk>,
    /// When each tenant's turn was last asked for by the watch.
    asked: HashMap<Uuid, Instant>,
    /// Whether the task reading the statuses runs.
    polling: bool,
}

struct Chunk {
    tenant_id: Uuid,
    job_id: Uuid,
    since: Instant,
    stop: Arc<AtomicBool>,
}

/// One chunk being written, watched until dropped. `stop` is raised once its job is no longer
/// running or its process no longer holds the tenant's turn to write.
pub struct Watch {
    inner: Arc<Inner>,
    id: u64,
    pub stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.inner.chunks).watched.remove(&self.id);
    }
}

impl Watched {
    /// The watch of this process's chunks, reading `db` and asking `turns`.
    pub fn new(db: Db, turns: Turns) -> Watched {
        Watched {
            inner: Arc::new(Inner {
                db,
                turns,
                chunks: Mutex::new(Chunks::default()),
                next: AtomicU64::new(0),
                asking: AtomicBool::new(false),
            }),
        }
    }

    /// Watch a chunk of `job_id` (of `tenant_id`) being written from now until the returned
    /// [`Watch`] is dropped. The task reading the statuses starts with the first chunk watched
    /// and ends once nothing is watched.
    pub fn watch(&self, tenant_id: Uuid, job_id: Uuid) -> Watch {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let mut chunks = lock(&self.inner.chunks);
        chunks.watched.insert(
            id,
            Chunk {
                tenant_id,
                job_id,
                since: Instant::now(),
                stop: stop.clone(),
            },
        );
        if !chunks.polling {
            chunks.polling = true;
            tokio::spawn(poll(Arc::downgrade(&self.inner)));
        }
        Watch {
            inner: self.inner.clone(),
            id,
            stop,
        }
    }
}

/// Read the watched chunks' jobs every [`STATUS_WATCH`], and have their tenants' turns asked
/// for ([`ask_turns`]), until nothing is watched (or the watch is gone). A database that cannot
/// be read raises nothing: the chunks go on as if nothing happened.
async fn poll(watched: Weak<Inner>) {
    // A poller that panicked lets the next chunk watched start another.
    let _guard = Polling(watched.clone());
    loop {
        tokio::time::sleep(STATUS_WATCH).await;
        let Some(inner) = watched.upgrade() else {
            return;
        };
        let asking = inner.asking.load(Ordering::Acquire);
        let (jobs, tenants) = {
            let mut chunks = lock(&inner.chunks);
            if chunks.watched.is_empty() {
                chunks.polling = false;
                chunks.asked.clear();
                return;
            }
            let jobs: HashSet<Uuid> = chunks.watched.values().map(|c| c.job_id).collect();
            let tenants = if asking {
                Vec::new()
            } else {
                chunks.turns_due(Instant::now())
            };
            (jobs.into_iter().collect::<Vec<_>>(), tenants)
        };
        if !tenants.is_empty() {
            inner.asking.store(true, Ordering::Release);
            tokio::spawn(ask_turns(inner.clone(), tenants));
        }
        if let Ok(statuses) = jobs::finish::statuses(&inner.db, &jobs).await {
            let stopped: HashSet<Uuid> = jobs
                .into_iter()
                .filter(|j| statuses.get(j) != Some(&JobStatus::Running))
                .collect();
            if !stopped.is_empty() {
                raise(&inner, |c| stopped.contains(&c.job_id));
            }
        }
    }
}

impl Chunks {
    /// The tenants whose turn to write is due to be asked for at `now`: a chunk of theirs has
    /// been written for [`TURN_WATCH`], and their turn was not asked for within it. They are
    /// noted as asked; tenants no longer watched are forgotten.
    fn turns_due(&mut self, now: Instant) -> Vec<Uuid> {
        let due: HashSet<Uuid> = self
            .watched
            .values()
            .filter(|c| now.duration_since(c.since) >= TURN_WATCH)
            .map(|c| c.tenant_id)
            .collect();
        let tenants: Vec<Uuid> = due
            .into_iter()
            .filter(|t| {
                self.asked
                    .get(t)
                    .is_none_or(|at| now.duration_since(*at) >= TURN_WATCH)
            })
            .collect();
        for t in &tenants {
            self.asked.insert(*t, now);
        }
        let watched: HashSet<Uuid> = self.watched.values().map(|c| c.tenant_id).collect();
        self.asked.retain(|t, _| watched.contains(t));
        tenants
    }
}

/// Ask for each of `tenants`' turn to write ([`Turns::confirm`], a write), [`TURNS_AT_ONCE`] at
/// a time, and stop their chunks where another process holds it or this one is no longer live.
async fn ask_turns(inner: Arc<Inner>, tenants: Vec<Uuid>) {
    let _asked = Asking(inner.clone());
    for some in tenants.chunks(TURNS_AT_ONCE) {
        let turns = some
            .iter()
            .map(|tenant_id| inner.turns.confirm(&inner.db, *tenant_id));
        let answers = futures::future::join_all(turns).await;
        for (tenant_id, turn) in some.iter().copied().zip(answers) {
            match turn {
                Ok(Turn::Others(writer)) => {
                    let n = raise(&inner, |c| c.tenant_id == tenant_id);
                    tracing::debug!(tenant = %tenant_id, writer = %writer, chunks = n, "chunks stopped: another process writes to the tenant");
                    metrics::counter!("licensor_chunks_left_to_writer_total").increment(n);
                }
                Ok(Turn::Gone) => {
                    let n = raise(&inner, |c| c.tenant_id == tenant_id);
                    tracing::debug!(tenant = %tenant_id, chunks = n, "chunks stopped: this process is no longer live");
                }
                Ok(Turn::Mine | Turn::Free) | Err(_) => {}
            }
        }
    }
}

/// Tenants' turns asked for at once by [`ask_turns`].
const TURNS_AT_ONCE: usize = 8;

/// Ends a round of [`ask_turns`], however it ends.
struct Asking(Arc<Inner>);

impl Drop for Asking {
    fn drop(&mut self) {
        self.0.asking.store(false, Ordering::Release);
    }
}

/// Held by [`poll`]: if it panics, the watch starts a new poller with the next chunk.
struct Polling(Weak<Inner>);

impl Drop for Polling {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(inner) = self.0.upgrade()
        {
            lock(&inner.chunks).polling = false;
        }
    }
}

fn lock(chunks: &Mutex<Chunks>) -> std::sync::MutexGuard<'_, Chunks> {
    chunks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Raise the stop of every watched chunk `which` picks; returns how many were not raised yet.
fn raise(inner: &Inner, which: impl Fn(&Chunk) -> bool) -> u64 {
    let chunks = lock(&inner.chunks);
    let mut n = 0;
    for c in chunks.watched.values().filter(|c| which(c)) {
        if !c.stop.swap(true, Ordering::AcqRel) {
            n += 1;
        }
    }
    n
}
