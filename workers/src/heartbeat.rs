//! This worker process's heartbeat in the database, and taking over the leases of processes
//! whose heartbeat stopped (see [`licensor_core::jobs::processes`]).
//!
//! Every `worker.heartbeat_secs` the process stamps its row (`worker_processes`). About every
//! second it looks for peers whose last heartbeat is more than `worker.missed_heartbeats ×
//! worker.heartbeat_secs` old, ends their leases and queues their jobs again, so their members
//! are worked again within that delay rather than after `jobs.lease_secs`. A process judges its
//! peers only while its own heartbeats have been recorded without a gap for at least that long:
//! after the database was away for everyone, every process first beats again, so none takes
//! members from a peer that is alive but has not beaten yet.
//!
//! On the embedded database (SQLite: its file is on this host), a process that starts takes over
//! at once the leases of every process row of this host whose process is gone — a restarted
//! `licensor serve` picks up where its killed predecessor stopped without waiting at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use licensor_core::entities::worker_process;
use licensor_core::jobs::processes::{self, Freed, ProcessId};
use licensor_core::queue::Message;

use crate::WorkerContext;

/// How a process's heartbeat runs (`[worker]` settings).
#[derive(Debug, Clone)]
pub struct HeartbeatOptions {
    /// Between two heartbeats (`worker.heartbeat_secs`).
    pub every: Duration,
    /// Heartbeats a process may miss before its leases are taken over
    /// (`worker.missed_heartbeats`).
    pub missed: u32,
    /// Whether the database is the embedded one (SQLite), which only processes on this host
    /// can open.
    pub embedded: bool,
    /// The heartbeat's own connection pool (one connection), so a worker whose steps hold every
    /// connection of the workers' pool still beats on time and is never taken for dead; `None`
    /// beats through the workers' pool.
    pub db: Option<licensor_core::db::Db>,
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        HeartbeatOptions {
            every: Duration::from_secs(5),
            missed: 3,
            embedded: false,
            db: None,
        }
    }
}

impl HeartbeatOptions {
    /// The pool the heartbeat and the takeover use: its own, else the workers'.
    fn db<'a>(&'a self, ctx: &'a WorkerContext) -> &'a licensor_core::db::Db {
        self.db.as_ref().unwrap_or(&ctx.db)
    }

    /// How long after its last heartbeat a process counts as dead: `missed × every`.
    pub fn takeover_after(&self) -> Duration {
        self.every * self.missed.max(1)
    }
}

/// How often peers' heartbeats are looked at: every second (every heartbeat when that is
/// shorter), so a dead process is noticed within a second of the takeover delay.
fn check_every(options: &HeartbeatOptions) -> Duration {
    options.every.min(Duration::from_secs(1))
}

/// Record this process's first heartbeat and, on the embedded database, take over the leases of
/// the processes of this host that are gone (a restarted server's predecessor). Call before the
/// process takes any work. Returns when the heartbeat was recorded (`None`: it failed), for
/// [`run`] to beat next a whole `worker.heartbeat_secs` later.
pub async fn start(
    ctx: &WorkerContext,
    process: &ProcessId,
    options: &HeartbeatOptions,
) -> Option<Instant> {
    running_here().push(process.name.clone());
    if let Err(e) = processes::beat(options.db(ctx), process).await {
        tracing::warn!(error = %e, "recording the worker's heartbeat failed; trying again shortly");
        return None;
    }
    let recorded = Instant::now();
    if !options.embedded {
        return Some(recorded);
    }
    let rows = match processes::all(options.db(ctx)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "reading the worker processes at start failed");
            return Some(recorded);
        }
    };
    let mut took_over = false;
    for row in rows {
        if row.id == process.name || !predecessor(process, &row) {
            continue;
        }
        took_over |= take_over(ctx, options.db(ctx), &row, "gone at start").await;
    }
    if took_over {
        // A predecessor that died after it took a job's message from the queue and before it
        // held anything for it (a member, an expansion, a turn to write) left nothing for its
        // takeover to find: the message was the queue's, held for it until the queue's own
        // recovery of a dead worker's messages (a server killed twice in quick succession
        // waited 15 s). Every queued or running job is queued again instead; a repeated
        // message is harmless.
        match crate::jobs::requeue_active(ctx).await {
            Ok(n) => tracing::info!(
                jobs = n,
                "a predecessor was taken over at start; active jobs queued again"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "queueing active jobs again at start failed; the reconciler will")
            }
        }
    }
    Some(recorded)
}

/// The worker names running in this operating-system process (tests and embedders may run
/// several on one database): never a predecessor, although they share this pid.
static RUNNING_HERE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn running_here() -> std::sync::MutexGuard<'static, Vec<String>> {
    RUNNING_HERE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `row`, another process's row on the embedded database, is a process of this host
/// that no longer runs: its pid is gone, or is this process's own (a restarted container) but
/// none of the workers running in it.
fn predecessor(me: &ProcessId, row: &worker_process::Model) -> bool {
    if row.host != me.host || running_here().contains(&row.id) {
        return false;
    }
    match u32::try_from(row.pid) {
        Ok(pid) => pid == me.pid || !process_alive(pid),
        Err(_) => true,
    }
}

/// Whether a process with this id runs on this host (`/proc` on Linux, `ps -p` elsewhere; when
/// that cannot be told, it counts as running and its heartbeat decides). On Linux a process
/// that has ended but not been reaped by its parent (a zombie, `Z` in `/proc/{pid}/stat`: a
/// `kill -9`ed server whose parent does not wait for it, as a container's first process may
/// not) is gone: it runs nothing, and its heartbeat will never come.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // `pid (comm) state …`: the command name may hold any character, `)` too.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| !matches!(state, "Z" | "X" | "x")),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        };
    }
    std::process::Command::new("ps")
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true)
}

/// The process stopped: it is no longer one of the workers running here.
pub fn stopped(process_name: &str) {
    running_here().retain(|n| n != process_name);
}

/// Beat and watch the peers until the task is dropped. `first`: when [`start`] recorded the
/// first heartbeat; the next is due a whole `worker.heartbeat_secs` later. Beating sooner
/// would bring back a process that its peers took for dead in between, however briefly it
/// was gone — only its heartbeat, due on schedule, does that.
pub async fn run(
    ctx: Arc<WorkerContext>,
    process: ProcessId,
    options: HeartbeatOptions,
    first: Option<Instant>,
) {
    let takeover_after = options.takeover_after();
    let mut next_beat = first.map_or_else(Instant::now, |at| at + options.every);
    // The start of this process's current run of heartbeats recorded without a gap.
    let mut steady_since: Option<Instant> = first;
    let mut last_recorded: Option<Instant> = first;
    loop {
        tokio::time::sleep(check_every(&options)).await;
        if Instant::now() >= next_beat {
            next_beat = Instant::now() + options.every;
            match processes::beat(options.db(&ctx), &process).await {
                Ok(()) => {
                    // A gap of more than two heartbeats starts a new run.
                    if steady_since.is_none()
                        || last_recorded.is_none_or(|l| l.elapsed() > options.every * 2)
                    {
                        steady_since = Some(Instant::now());
                    }
                    last_recorded = Some(Instant::now());
                }
                Err(e) => {
                    steady_since = None;
                    tracing::warn!(error = %e, "recording the worker's heartbeat failed");
                    continue;
                }
            }
        }
        if steady_since.is_none_or(|s| s.elapsed() < takeover_after) {
            continue;
        }
        let rows = match processes::silent(options.db(&ctx), takeover_after).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "reading the worker processes failed");
                continue;
            }
        };
        for row in rows {
            if row.id != process.name {
                take_over(&ctx, options.db(&ctx), &row, "heartbeat stopped").await;
            }
        }
    }
}

/// Take over `dead`'s leases and queue the jobs they were on; `false` when it beat again, another
/// worker took it over first, or the takeover failed.
async fn take_over(
    ctx: &WorkerContext,
    db: &licensor_core::db::Db,
    dead: &worker_process::Model,
    why: &'static str,
) -> bool {
    let freed = match processes::take_over(db, dead).await {
        Ok(Some(freed)) => freed,
        // It beat again, or another worker was first.
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(process = %dead.id, error = %e, "taking over a worker process's leases failed");
            return false;
        }
    };
    tracing::warn!(
        process = %dead.id,
        reason = why,
        last_heartbeat = %dead.last_heartbeat_at,
        members = freed.members,
        expansions = freed.expansions,
        jobs = freed.jobs.len(),
        "a worker process stopped; its leases were taken over"
    );
    metrics::counter!("licensor_worker_processes_taken_over_total").increment(1);
    requeue(ctx, freed).await;
    // Nobody takes the lanes left on its own queue: its tenants' jobs were queued again above.
    if let Err(e) = ctx.queue.forget_process(&dead.id).await {
        tracing::warn!(process = %dead.id, error = %e, "deleting a stopped worker process's own queue failed");
    }
    true
}

/// Queue the freed jobs again, so a live worker works them at once (the messages of the steps
/// that held them went with their process).
pub(crate) async fn requeue(ctx: &WorkerContext, freed: Freed) {
    if freed.jobs.is_empty() {
        return;
    }
    let messages = freed
        .jobs
        .into_iter()
        .map(|(tenant_id, job_id)| Message::Run { tenant_id, job_id })
        .collect();
    if let Err(e) = ctx.queue.push_bulk(messages).await {
        tracing::warn!(error = %e, "queueing the jobs of a stopped worker failed; the reconciler will");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(host: &str, pid: i64) -> worker_process::Model {
        worker_process::Model {
            id: format!("licensor-{host}-{pid}-abcdef12"),
            host: host.into(),
            pid,
            started_at: Utc::now(),
            last_heartbeat_at: Utc::now(),
        }
    }

    #[test]
    fn a_predecessor_is_a_gone_process_of_this_host() {
        let me = ProcessId {
            name: "licensor-here-1-00000000".into(),
            host: "here".into(),
            pid: std::process::id(),
        };
        // This very pid on this host: a restarted container's predecessor.
        assert!(predecessor(&me, &row("here", i64::from(me.pid))));
        // Another host's process is judged by its heartbeat only.
        assert!(!predecessor(&me, &row("elsewhere", 999_999_999)));
        // A pid no process has.
        assert!(predecessor(&me, &row("here", 999_999_999)));
        // A running process of this host (pid 1 always runs).
        assert!(!predecessor(&me, &row("here", 1)));
    }

    /// A `kill -9`ed server that its parent has not reaped (a zombie) is gone, as one reaped is;
    /// a running one is not.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_ended_but_not_reaped_is_gone() {
        let mut running = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = running.id();
        assert!(process_alive(pid));
        running.kill().unwrap();
        // Not waited for yet: a zombie once the signal has done its work.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while process_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "a killed, unreaped process still counts as running"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "a zombie"
        );
        running.wait().unwrap();
        assert!(!process_alive(pid));
    }

    #[test]
    fn takeover_delay_is_missed_heartbeats_times_interval() {
        let o = HeartbeatOptions {
            every: Duration::from_secs(5),
            missed: 3,
            embedded: true,
            db: None,
        };
        assert_eq!(o.takeover_after(), Duration::from_secs(15));
        assert_eq!(check_every(&o), Duration::from_secs(1));
    }
}
