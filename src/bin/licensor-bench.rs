//! licensor-bench: how fast licensor works a group license job, end to end.
//!
//! Starts the directory emulator, then licensor as real processes (the embedded default in one
//! process, or PostgreSQL + Redis with an API process and N worker processes), creates a tenant
//! and a token with the CLI, submits jobs through the HTTP API, waits for them and prints one
//! JSON line per run: wall time, items per second, peak RSS of each licensor process, directory
//! requests, 429s, duplicate writes and lost items.
//!
//! ```text
//! cargo run --release --bin licensor-bench -- --backend embedded --members 100000 --scenario raw
//! cargo run --release --bin licensor-bench -- --backend postgres --workers 2 --members 100000 --scenario latency
//! cargo run --release --bin licensor-bench -- --scenario throttle --members 20000
//! cargo run --release --bin licensor-bench -- --scenario throttle --write-budget 40/2000 --members 2000
//! cargo run --release --bin licensor-bench -- --scenario throttle --write-budget 1000/5000 --error-rate 0.3 --members 5000
//! cargo run --release --bin licensor-bench -- --scenario fairness --members 1000000
//! cargo run --release --bin licensor-bench -- --scenario msp --tenants 500 --tenant-members 1000
//! cargo run --release --bin licensor-bench -- --scenario raw --members 100000 --preview
//! ```
//!
//! With `--preview` a preview of the same assign runs first (it reads the group and predicts
//! every member, writing nothing); its line gets `preview` — its wall time and running time, and
//! the directory's writes during it (0) — beside the real job's `members_read_seconds`, the
//! expansion part of a real job. With `--launch` too, the real job is the preview's launch: every
//! member is read afresh (`$batch` reads) before it is written, and `read_throttled_429` shows
//! whether those reads stayed inside the directory's read budget, e.g.
//! `--scenario throttle --members 5000 --preview --launch`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use graph_emulator::{
    Budget, ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, Faults, Scenario,
};
use licensor_core::domain::{JobKind, JobStatus};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// SQLite + apalis-sqlite, one process.
    Embedded,
    /// PostgreSQL + Redis, one API process and `--workers` worker processes.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Load {
    /// No latency, no throttling: raw engine speed.
    Raw,
    /// 20 ms ± 10 ms per directory call.
    Latency,
    /// A write budget of 600 writes per 6 s: how close licensor runs to it.
    Throttle,
    /// Tenant A runs a job of `--members` while tenant B submits a 100-member job.
    Fairness,
    /// A service provider: `--tenants` tenants of `--tenant-members` members, each throttled at
    /// `--tenant-write-budget`, all jobs submitted at once (one emulator serving every tenant).
    Msp,
}

#[derive(Debug, Parser)]
#[command(
    name = "licensor-bench",
    about = "Benchmark licensor's group license jobs end to end"
)]
struct Args {
    #[arg(long, value_enum, default_value = "embedded")]
    backend: Backend,
    /// Worker processes (PostgreSQL + Redis only).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Members of the group the job works.
    #[arg(long, default_value_t = 100_000)]
    members: usize,
    #[arg(long, value_enum, default_value = "raw")]
    scenario: Load,
    /// Runs (each with fresh data).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// PostgreSQL server for `--backend postgres` (a database is created per run and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Job kind: assign (writes one license per member) or export (reads only).
    #[arg(long, default_value = "assign", value_parser = bench_kind)]
    kind: JobKind,
    /// Export's file format (with `--kind export`); the file is downloaded after the job.
    #[arg(long, default_value = "csv", value_parser = ["csv", "json", "xlsx"])]
    export_format: String,
    /// Give up on a job after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// With `--scenario throttle`: the directory's write budget as LIMIT/WINDOW_MS (writes per
    /// sliding window of that many milliseconds, e.g. Graph's own 3000/150000), with 20 ± 10 ms
    /// per directory call. Prints the job's share of the best possible time and its 429 rates.
    #[arg(long, value_parser = parse_write_budget)]
    write_budget: Option<Budget>,
    /// With `--write-budget`: writes of the same app spent on the budget just before the job is
    /// submitted (another client of the tenant), 0 up to LIMIT.
    #[arg(long, default_value_t = 0)]
    budget_used: u32,
    /// With `--write-budget`: the share (0 to 0.9) of directory requests answered 503 Service
    /// Unavailable with `Retry-After: 1`, whole `$batch`es and the requests inside them alike
    /// (the emulator's `error_rate`). Prints the 503s met beside the share of the budget.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Tenants of `--scenario msp`.
    #[arg(long, default_value_t = 500)]
    tenants: usize,
    /// Members of each tenant's group in `--scenario msp`.
    #[arg(long, default_value_t = 1_000)]
    tenant_members: usize,
    /// Each tenant's write budget in `--scenario msp`: LIMIT/WINDOW_MS (writes per window).
    #[arg(long, default_value = "100/5000", value_parser = parse_write_budget)]
    tenant_write_budget: Budget,
    /// Seconds between two looks at each unfinished job in `--scenario msp`
    /// (`GET /v1/jobs/{id}`, one per tenant's job). The figures come from the jobs' own
    /// timestamps and the directory's, not from when a look finds a job done. The looks are
    /// load on licensor: every 2 s, the 500-tenant run made about 16,000 of them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    poll_secs: u64,
    /// With `--scenario msp`: write each tenant's figures to this file as a JSON array, with
    /// its timeline in seconds from the run's first job (created, first write, last write,
    /// finished), for a run whose spread of shares needs a closer look.
    #[arg(long)]
    tenant_figures: Option<std::path::PathBuf>,
    /// Run a preview of the assign first (nothing written) and print its times beside the real
    /// job's expansion (`members_read_seconds`). Assign only, not with `--scenario fairness` or
    /// `msp`.
    #[arg(long)]
    preview: bool,
    /// With `--preview`: the real job is the preview's launch (`POST /v1/jobs/{id}/launch`), so
    /// every member is read afresh through `$batch` before it is written — the read load of a
    /// rerun, an expiry removal or a resumed job. The line's `read_throttled_429` counts the
    /// reads the directory refused.
    #[arg(long, requires = "preview")]
    launch: bool,
}

/// `LIMIT/WINDOW_MS`, both positive integers.
fn parse_write_budget(s: &str) -> Result<Budget, String> {
    let bad =
        || format!("expected LIMIT/WINDOW_MS with positive integers, e.g. 3000/150000; got '{s}'");
    let (limit, window) = s.split_once('/').ok_or_else(bad)?;
    let limit: u32 = limit.trim().parse().map_err(|_| bad())?;
    let window_ms: u64 = window.trim().parse().map_err(|_| bad())?;
    if limit == 0 || window_ms == 0 {
        return Err(bad());
    }
    Ok(Budget { limit, window_ms })
}

const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn main() -> anyhow::Result<()> {
    // Child processes are this binary acting as `licensor`.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("licensor") {
        use clap::Parser as _;
        let cli = licensor::cli::Cli::parse_from(&argv[1..]);
        std::process::exit(match licensor::cli::main(cli) {
            c if c == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    let args = Args::parse();
    if args.preview
        && (args.kind != JobKind::Assign || matches!(args.scenario, Load::Fairness | Load::Msp))
    {
        eprintln!(
            "error: --preview goes with an assign job and --scenario raw, latency or throttle"
        );
        std::process::exit(2);
    }
    if args.write_budget.is_some() && args.scenario != Load::Throttle {
        eprintln!("error: --write-budget needs --scenario throttle");
        std::process::exit(2);
    }
    if args.error_rate != 0.0
        && (args.write_budget.is_none() || !(0.0..=0.9).contains(&args.error_rate))
    {
        eprintln!("error: --error-rate needs --write-budget, and lies between 0 and 0.9");
        std::process::exit(2);
    }
    if args.budget_used > 0 && args.write_budget.is_none_or(|b| args.budget_used > b.limit) {
        eprintln!("error: --budget-used needs --write-budget, and at most its LIMIT");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        for run in 0..args.runs {
            let line = if args.scenario == Load::Msp {
                msp::bench(&args, run).await?
            } else {
                bench(&args, run).await?
            };
            println!("{line}");
        }
        Ok(())
    })
}

/// One licensor deployment under test.
struct Deployment {
    url: String,
    env: Vec<(String, String)>,
    processes: Vec<(String, Child)>,
    _dir: tempfile::TempDir,
    pg_db: Option<(String, String)>,
    redis_prefix: Option<String>,
}

/// A run that ends in an error (a submit refused, a job not done in time) drops its deployment
/// without [`Deployment::stop`]: its processes are killed rather than left running against an
/// emulator that is gone, and its PostgreSQL database and Redis keys are removed (on a thread
/// of its own: a drop cannot wait for them on the runtime it runs on). After `stop` they have
/// exited and been removed, and this does nothing.
impl Drop for Deployment {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.pg_db.is_none() && self.redis_prefix.is_none() {
            return;
        }
        let (pg_db, redis_prefix) = (self.pg_db.take(), self.redis_prefix.take());
        let env = std::mem::take(&mut self.env);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(clean_up(pg_db, redis_prefix, &env));
            }
        })
        .join();
    }
}

impl Deployment {
    fn licensor(&self) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("licensor");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run_cli(&self, args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut cmd = self.licensor();
        cmd.args(args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "licensor {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn(&mut self, role: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = self
            .licensor()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        self.processes.push((role.to_owned(), child));
        Ok(())
    }

    /// CPU seconds (user + system) each process has used so far.
    fn cpu_seconds(&self) -> Vec<(String, f64)> {
        self.processes
            .iter()
            .map(|(role, child)| (role.clone(), process_cpu_seconds(child.id())))
            .collect()
    }

    /// Peak resident set size (VmHWM) of each process, in MiB.
    fn peak_rss(&self) -> Vec<(String, f64)> {
        self.processes
            .iter()
            .map(|(role, child)| {
                let kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmHWM:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|n| n.parse::<f64>().ok())
                    })
                    .unwrap_or(0.0);
                (role.clone(), (kib / 1024.0 * 10.0).round() / 10.0)
            })
            .collect()
    }

    async fn stop(mut self) {
        for (_, child) in &mut self.processes {
            // SIGTERM, then wait for the graceful stop.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
        }
        for (_, child) in &mut self.processes {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        clean_up(self.pg_db.take(), self.redis_prefix.take(), &self.env).await;
    }
}

/// Drop a run's PostgreSQL database (`(admin URL, name)`) and delete its Redis keys (those
/// starting with `redis_prefix`, on each Redis of `env`).
async fn clean_up(
    pg_db: Option<(String, String)>,
    redis_prefix: Option<String>,
    env: &[(String, String)],
) {
    if let Some((admin, name)) = pg_db
        && let Ok(conn) = sea_orm::Database::connect(admin.as_str()).await
    {
        use sea_orm::ConnectionTrait;
        let _ = conn
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    if let Some(prefix) = redis_prefix {
        for (_, v) in env {
            if v.starts_with("redis://")
                && let Ok(client) = redis::Client::open(v.as_str())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            }
        }
    }
}

/// User + system CPU seconds of a process, from `/proc/PID/stat` (clock ticks of 1/100 s).
fn process_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at `state`.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some(((utime + stime) / 100.0 * 10.0).round() / 10.0)
        })
        .unwrap_or(0.0)
}

/// Busy and total CPU time of the whole machine so far, in clock ticks (`/proc/stat`).
fn machine_cpu() -> (u64, u64) {
    let line = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = line
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A licensor tenant to create: its name and its directory tenant's base URL, id and app
/// registration.
struct DirectoryTenant {
    name: String,
    base_url: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
}

async fn deploy(
    args: &Args,
    tenants: &[(&str, &EmulatorHandle)],
) -> anyhow::Result<(Deployment, Vec<String>)> {
    let tenants: Vec<DirectoryTenant> = tenants
        .iter()
        .map(|(name, emulator)| DirectoryTenant {
            name: (*name).to_owned(),
            base_url: emulator.base_url(),
            tenant_id: emulator.directory_tenant_id(),
            client_id: emulator.client_id(),
            client_secret: emulator.client_secret(),
        })
        .collect();
    deploy_tenants(args, &tenants).await
}

/// CLI processes that create tenants and tokens side by side while a run is set up.
const SETUP_PROCESSES: usize = 6;

/// Start licensor with one licensor tenant (and an admin token) per directory tenant.
async fn deploy_tenants(
    args: &Args,
    tenants: &[DirectoryTenant],
) -> anyhow::Result<(Deployment, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let mut env = vec![
        (
            "LICENSOR_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        ("LICENSOR_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("LICENSOR_SECRET_KEY".into(), SECRET_KEY.into()),
        (
            "LICENSOR_LOG".into(),
            std::env::var("BENCH_LICENSOR_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ];
    let mut pg_db = None;
    let mut redis_prefix = None;
    if args.backend == Backend::Postgres {
        let name = format!("licensor_bench_{suffix}");
        let conn = sea_orm::Database::connect(args.database_url.as_str())
            .await
            .context("PostgreSQL for --backend postgres")?;
        use sea_orm::ConnectionTrait;
        conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = args
            .database_url
            .rsplit_once('/')
            .map_or(args.database_url.as_str(), |(b, _)| b);
        env.push(("LICENSOR_DATABASE_URL".into(), format!("{base}/{name}")));
        env.push(("LICENSOR_QUEUE_URL".into(), args.redis_url.clone()));
        let prefix = format!("licensor-bench-{suffix}");
        env.push(("LICENSOR_QUEUE_NAME".into(), prefix.clone()));
        pg_db = Some((args.database_url.clone(), name));
        redis_prefix = Some(prefix);
    }
    let mut d = Deployment {
        url: format!("http://127.0.0.1:{port}"),
        env,
        processes: Vec::new(),
        _dir: dir,
        pg_db,
        redis_prefix,
    };
    d.run_cli(&["migrate"], &[])?;
    // Each tenant and its token by the CLI, as an operator would, a few processes at a time.
    let create = |t: &DirectoryTenant| -> anyhow::Result<String> {
        d.run_cli(
            &[
                "tenant",
                "create",
                "--name",
                &t.name,
                "--directory-url",
                &t.base_url,
                "--directory-tenant-id",
                &t.tenant_id,
                "--client-id",
                &t.client_id,
                "--client-secret-env",
                "BENCH_CLIENT_SECRET",
            ],
            &[("BENCH_CLIENT_SECRET", &t.client_secret)],
        )?;
        let token = d.run_cli(
            &[
                "token", "create", "--tenant", &t.name, "--role", "admin", "--name", "bench",
            ],
            &[],
        )?;
        Ok(token.trim().to_owned())
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut made: Vec<Option<anyhow::Result<String>>> = Vec::new();
    made.resize_with(tenants.len(), || None);
    let made = std::sync::Mutex::new(made);
    std::thread::scope(|s| {
        for _ in 0..SETUP_PROCESSES.min(tenants.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(t) = tenants.get(i) else { break };
                    let token = create(t);
                    made.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(token);
                }
            });
        }
    });
    let tokens = made
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .map(|t| t.unwrap_or_else(|| Err(anyhow::anyhow!("tenant not created"))))
        .collect::<anyhow::Result<Vec<String>>>()?;
    match args.backend {
        Backend::Embedded => d.spawn("licensor", &["serve"])?,
        Backend::Postgres => {
            d.spawn("api", &["serve", "--no-worker"])?;
            for i in 0..args.workers {
                d.spawn(&format!("worker-{}", i + 1), &["worker"])?;
            }
        }
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", d.url)).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("licensor did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((d, tokens))
}

async fn emulator(members: usize, faults: Faults, seed: u64) -> anyhow::Result<EmulatorHandle> {
    let scenario = Scenario::simple(seed, members, (members as u32).saturating_mul(2).max(10));
    graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario),
        faults,
        ..EmulatorConfig::default()
    })
    .await
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Ok(req.send().await?.error_for_status()?.json().await?)
}

/// A job's status as the API gave it (`None` when it is missing or unknown).
fn status_of(job: &Value) -> Option<JobStatus> {
    serde_json::from_value(job["status"].clone()).ok()
}

/// `--kind`: the kinds the benchmark runs (assign or export).
fn bench_kind(s: &str) -> Result<JobKind, String> {
    match s.parse::<JobKind>()? {
        k @ (JobKind::Assign | JobKind::Export) => Ok(k),
        other => Err(format!(
            "the benchmark runs assign or export jobs, not {other}"
        )),
    }
}

async fn submit(
    http: &reqwest::Client,
    d: &Deployment,
    token: &str,
    kind: JobKind,
    export_format: &str,
) -> anyhow::Result<String> {
    let groups = get_json(
        http,
        &format!("{}/v1/directory/groups?search=All", d.url),
        Some(token),
    )
    .await?;
    let group = groups["data"][0]["id"]
        .as_str()
        .context("group")?
        .to_owned();
    let body = if kind == JobKind::Export {
        json!({"kind": "export", "groups": [group], "export": {"format": export_format}})
    } else {
        assign_body(&group)
    };
    submit_body(http, d, token, &body).await
}

/// An assign of ENTERPRISEPACK (usage location SE) to one group.
fn assign_body(group: &str) -> Value {
    json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"})
}

/// Submits answered 503 (no database connection free in time: a burst of submits) or 409
/// `idempotency_key_in_use` (the key of an earlier 503 not released yet), each sent again.
static SUBMITS_SENT_AGAIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `POST /v1/jobs` with `body` and an `Idempotency-Key`; the new job's id. A 503 is sent again
/// with the same key after its `Retry-After`, a 409 `idempotency_key_in_use` after 1 s, as a
/// well-behaved client does, for up to 2 minutes; any other answer but 202 is an error.
async fn submit_body(
    http: &reqwest::Client,
    d: &Deployment,
    token: &str,
    body: &Value,
) -> anyhow::Result<String> {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let resp = http
            .post(format!("{}/v1/jobs", d.url))
            .bearer_auth(token)
            .header("idempotency-key", &key)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status == 202 {
            let job: Value = resp.json().await?;
            return Ok(job["id"].as_str().context("job id")?.to_owned());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = resp.text().await?;
        let again = match status {
            503 => Some(Duration::from_secs(retry_after.unwrap_or(2))),
            409 if text.contains("idempotency_key_in_use") => Some(Duration::from_secs(1)),
            _ => None,
        };
        match again {
            Some(wait) if Instant::now() + wait < deadline => {
                SUBMITS_SENT_AGAIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(wait).await;
            }
            _ => bail!("submit: {status} {text}"),
        }
    }
}

async fn wait(
    http: &reqwest::Client,
    d: &Deployment,
    token: &str,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    Ok(wait_sampled(http, d, token, id, timeout).await?.0)
}

/// Wait for a job to end, sampling its succeeded count as it goes: (seconds since the wait
/// began, succeeded).
async fn wait_sampled(
    http: &reqwest::Client,
    d: &Deployment,
    token: &str,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<(Value, Vec<(f64, u64)>)> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut samples = Vec::new();
    loop {
        let job = get_json(http, &format!("{}/v1/jobs/{id}", d.url), Some(token)).await?;
        samples.push((
            started.elapsed().as_secs_f64(),
            job["progress"]["succeeded"].as_u64().unwrap_or(0),
        ));
        if status_of(&job).is_some_and(JobStatus::is_terminal) {
            return Ok((job, samples));
        }
        if Instant::now() > deadline {
            bail!("job {id} not done after {timeout:?}: {job}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Succeeded members per second in each `step`-second slice of the samples.
fn rates_by_slice(samples: &[(f64, u64)], step: f64) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut from = (0.0, 0u64);
    let mut edge = step;
    for &(t, n) in samples {
        if t >= edge {
            let rate = (n - from.1) as f64 / (t - from.0);
            rates.push((rate * 10.0).round() / 10.0);
            from = (t, n);
            edge = t + step;
        }
    }
    rates
}

fn job_figures(job: &Value, members: usize, stats: &Value, wall: f64) -> Value {
    let p = &job["progress"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let done = n(&p["succeeded"]) + n(&p["failed"]) + n(&p["skipped"]);
    let successful = n(&stats["successful_writes"]);
    let requests = n(&stats["requests_total"]);
    let throttled = n(&stats["throttled"]);
    // Reads refused for the read budget (inside `$batch` too: each request there is counted by
    // its own route).
    let read_throttled: u64 = stats["requests"]
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .filter(|(route, _)| route.starts_with("GET "))
                .map(|(_, by)| n(&by["429"]))
                .sum()
        })
        .unwrap_or(0);
    let at = |k: &str| {
        job[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let secs = |a: Option<chrono::DateTime<chrono::FixedOffset>>,
                b: Option<chrono::DateTime<chrono::FixedOffset>>| match (a, b) {
        (Some(a), Some(b)) => ((b - a).num_milliseconds() as f64 / 1000.0).into(),
        _ => Value::Null,
    };
    json!({
        "status": job["status"],
        "queued_seconds": secs(at("created_at"), at("started_at")),
        "running_seconds": secs(at("started_at"), at("finished_at")),
        // A launched preview read its members before it started (the preview's figures).
        "members_read_seconds": if at("expanded_at") < at("started_at") {
            Value::Null
        } else {
            secs(at("started_at"), at("expanded_at"))
        },
        "members": members,
        "wall_seconds": (wall * 100.0).round() / 100.0,
        "items_per_second": (done as f64 / wall).round(),
        "succeeded": n(&p["succeeded"]),
        "failed": n(&p["failed"]),
        "directory_requests": requests,
        "throttled_429": throttled,
        "read_throttled_429": read_throttled,
        "throttled_share": if requests > 0 { ((throttled as f64 / requests as f64) * 10000.0).round() / 10000.0 } else { 0.0 },
        "duplicate_writes": successful.saturating_sub(n(&p["succeeded"])),
        "writes_per_user_max": stats["writes_per_user_max"],
        "lost_items": (members as u64).saturating_sub(done),
    })
}

async fn bench(args: &Args, run: usize) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let timeout = Duration::from_secs(args.timeout_secs);
    let faults = match args.scenario {
        Load::Raw | Load::Fairness | Load::Msp => Faults::unthrottled(),
        Load::Latency => Faults {
            latency_ms: 20,
            jitter_ms: 20,
            ..Faults::unthrottled()
        },
        Load::Throttle => Faults {
            write_budget: args.write_budget.unwrap_or(Budget {
                limit: 600,
                window_ms: 6_000,
            }),
            latency_ms: if args.write_budget.is_some() { 20 } else { 0 },
            jitter_ms: if args.write_budget.is_some() { 20 } else { 0 },
            error_rate: args.error_rate,
            error_statuses: vec![503],
            ..Faults::default()
        },
    };
    // Latency is "20 ms ± 10 ms": the emulator adds 0..=jitter on top of the base, so the base is
    // 10 ms when jitter is 20 ms.
    let faults = if faults.latency_ms == 20 {
        Faults {
            latency_ms: 10,
            ..faults
        }
    } else {
        faults
    };
    let a = emulator(args.members, faults, 11 + run as u64).await?;
    let b = if args.scenario == Load::Fairness {
        Some(emulator(100, Faults::unthrottled(), 99).await?)
    } else {
        None
    };
    let mut tenants = vec![("tenant-a", &a)];
    if let Some(b) = &b {
        tenants.push(("tenant-b", b));
    }
    let (d, tokens) = deploy(args, &tenants).await?;
    let cpu_before = d.cpu_seconds();
    let machine_before = machine_cpu();
    let bench_cpu_before = process_cpu_seconds(std::process::id());
    let preview = if args.preview {
        Some(preview_figures(&http, &d, &tokens[0], &a, timeout).await?)
    } else {
        None
    };
    if args.budget_used > 0 {
        spend_budget(&http, &a, args.budget_used).await?;
    }
    let started = Instant::now();
    let job_a = match (&preview, args.launch) {
        (Some((id, _)), true) => launch_preview(&http, &d, &tokens[0], id).await?,
        _ => submit(&http, &d, &tokens[0], args.kind, &args.export_format).await?,
    };
    let mut fairness = Value::Null;
    if let Some(b) = &b {
        // Let A's job get going, then time B's small job while A's runs.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t = Instant::now();
        let job_b = submit(&http, &d, &tokens[1], JobKind::Assign, "csv").await?;
        let done_b = wait(&http, &d, &tokens[1], &job_b, timeout).await?;
        let b_secs = t.elapsed().as_secs_f64();
        let a_now = get_json(
            &http,
            &format!("{}/v1/jobs/{job_a}", d.url),
            Some(&tokens[0]),
        )
        .await?;
        let stats_b = get_json(&http, &format!("{}/_emulator/stats", b.base_url()), None).await?;
        fairness = json!({
            "tenant_b": job_figures(&done_b, 100, &stats_b, b_secs),
            "tenant_b_seconds_from_submit": (b_secs * 100.0).round() / 100.0,
            "tenant_a_status_when_b_finished": a_now["status"],
            "tenant_a_done_when_b_finished": a_now["progress"]["succeeded"],
        });
    }
    let (job, samples) = wait_sampled(&http, &d, &tokens[0], &job_a, timeout).await?;
    let wall = started.elapsed().as_secs_f64();
    let stats = get_json(&http, &format!("{}/_emulator/stats", a.base_url()), None).await?;
    // An export's file is downloaded too (streamed from the server), so peak RSS covers both.
    let mut export = Value::Null;
    if args.kind == JobKind::Export {
        let t = Instant::now();
        let mut resp = http
            .get(format!("{}/v1/jobs/{job_a}/export", d.url))
            .bearer_auth(&tokens[0])
            .send()
            .await?
            .error_for_status()?;
        let mut bytes = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            bytes += chunk.len() as u64;
        }
        export = json!({
            "format": args.export_format,
            "rows": job["export"]["rows"],
            "bytes": job["export"]["size"],
            "downloaded_bytes": bytes,
            "download_seconds": (t.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        });
    }
    let rss = d.peak_rss();
    let cpu: Vec<(String, f64)> = d
        .cpu_seconds()
        .into_iter()
        .zip(cpu_before)
        .map(|((role, after), (_, before))| (role, ((after - before) * 10.0).round() / 10.0))
        .collect();
    let (busy_after, total_after) = machine_cpu();
    let machine_busy =
        (busy_after - machine_before.0) as f64 / (total_after - machine_before.1).max(1) as f64;
    let bench_cpu = process_cpu_seconds(std::process::id()) - bench_cpu_before;
    let mut line = json!({
        "backend": match args.backend { Backend::Embedded => "embedded".to_owned(), Backend::Postgres => format!("postgres+redis, {} workers", args.workers) },
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "kind": args.kind,
        "run": run + 1,
    });
    if let (Some(obj), Value::Object(figures)) = (
        line.as_object_mut(),
        job_figures(&job, args.members, &stats, wall),
    ) {
        obj.extend(figures);
        obj.insert(
            "peak_rss_mib".into(),
            Value::Object(rss.into_iter().map(|(r, m)| (r, json!(m))).collect()),
        );
        // Where the machine's two cores went: licensor's processes, the emulator (this
        // process) and everything else (the database, Redis, the kernel).
        obj.insert(
            "cpu_seconds".into(),
            Value::Object(cpu.into_iter().map(|(r, s)| (r, json!(s))).collect()),
        );
        obj.insert(
            "emulator_cpu_seconds".into(),
            json!((bench_cpu * 10.0).round() / 10.0),
        );
        obj.insert(
            "machine_busy_share".into(),
            json!((machine_busy * 1000.0).round() / 1000.0),
        );
        if !export.is_null() {
            obj.insert("export".into(), export.clone());
        }
        if let Some(budget) = args.write_budget {
            obj.insert(
                "budget".into(),
                budget_figures(&job, args.members, budget, args.budget_used, &stats),
            );
        } else if args.scenario == Load::Throttle {
            // The budget's rate is 100 writes/s; how close the run came to it.
            let rate = job["progress"]["succeeded"].as_f64().unwrap_or(0.0) / wall;
            obj.insert(
                "writes_per_second".into(),
                json!((rate * 10.0).round() / 10.0),
            );
            obj.insert(
                "writes_per_second_by_5s".into(),
                json!(rates_by_slice(&samples, 5.0)),
            );
            obj.insert(
                "share_of_budget".into(),
                json!((rate / 100.0 * 1000.0).round() / 1000.0),
            );
        }
        if !fairness.is_null() {
            obj.insert("fairness".into(), fairness);
        }
        if let Some((_, preview)) = preview {
            obj.insert("preview".into(), preview);
        }
    }
    d.stop().await;
    a.shutdown().await;
    if let Some(b) = b {
        b.shutdown().await;
    }
    Ok(line)
}

/// A preview of the assign to the whole group, timed (its job id, and the figures): its wall time (submit to `previewed`),
/// its running time (started → finished), when its members were all read, and the directory's
/// writes while it ran (none are expected). The emulator's counters are not reset: the real job
/// that follows counts its writes on top of 0.
/// `POST /v1/jobs/{id}/launch` of a preview; the job's id again (anything but 202 is an error).
async fn launch_preview(
    http: &reqwest::Client,
    d: &Deployment,
    token: &str,
    id: &str,
) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{}/v1/jobs/{id}/launch", d.url))
        .bearer_auth(token)
        .send()
        .await?;
    if resp.status().as_u16() != 202 {
        bail!("launch: {} {}", resp.status(), resp.text().await?);
    }
    Ok(id.to_owned())
}

async fn preview_figures(
    http: &reqwest::Client,
    d: &Deployment,
    token: &str,
    emulator: &EmulatorHandle,
    timeout: Duration,
) -> anyhow::Result<(String, Value)> {
    let groups = get_json(
        http,
        &format!("{}/v1/directory/groups?search=All", d.url),
        Some(token),
    )
    .await?;
    let group = groups["data"][0]["id"].as_str().context("group")?;
    let mut body = assign_body(group);
    body["preview"] = json!(true);
    let before = get_json(
        http,
        &format!("{}/_emulator/stats", emulator.base_url()),
        None,
    )
    .await?;
    let t = Instant::now();
    let id = submit_body(http, d, token, &body).await?;
    let job = wait(http, d, token, &id, timeout).await?;
    let wall = t.elapsed().as_secs_f64();
    if status_of(&job) != Some(JobStatus::Previewed) {
        bail!("the preview {id} ended {}: {job}", job["status"]);
    }
    let after = get_json(
        http,
        &format!("{}/_emulator/stats", emulator.base_url()),
        None,
    )
    .await?;
    let n = |v: &Value| v["successful_writes"].as_u64().unwrap_or(0);
    let at = |k: &str| {
        job[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let secs = |a: Option<chrono::DateTime<chrono::FixedOffset>>,
                b: Option<chrono::DateTime<chrono::FixedOffset>>| match (a, b) {
        (Some(a), Some(b)) => ((b - a).num_milliseconds() as f64 / 1000.0).into(),
        _ => Value::Null,
    };
    Ok((
        id,
        json!({
            "wall_seconds": (wall * 100.0).round() / 100.0,
            "running_seconds": secs(at("started_at"), at("finished_at")),
            "members_read_seconds": secs(at("started_at"), at("expanded_at")),
            "members": job["preview"]["members"],
            "would_fail": job["preview"]["would_fail"],
            "directory_writes": n(&after).saturating_sub(n(&before)),
        }),
    ))
}

/// Spend `writes` of the app's write budget as another client of the tenant would: `PATCH`es of
/// users that do not exist (the directory counts a write before it looks the user up), 20 to a
/// `$batch`. Each is answered 404 and changes nothing.
async fn spend_budget(
    http: &reqwest::Client,
    emulator: &EmulatorHandle,
    writes: u32,
) -> anyhow::Result<()> {
    let token: Value = http
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &emulator.client_id()),
            ("client_secret", &emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["access_token"].as_str().context("access token")?;
    let mut left = writes;
    while left > 0 {
        let n = left.min(20);
        let requests: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "id": i.to_string(),
                    "method": "PATCH",
                    "url": format!("/users/{}", uuid::Uuid::new_v4()),
                    "headers": {"Content-Type": "application/json"},
                    "body": {"usageLocation": "SE"},
                })
            })
            .collect();
        let answer: Value = http
            .post(format!("{}/$batch", emulator.graph_url()))
            .bearer_auth(token)
            .json(&json!({ "requests": requests }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let refused = answer["responses"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["status"] == 429).count());
        if refused > 0 {
            bail!("--budget-used: the directory refused {refused} writes; use at most LIMIT");
        }
        left -= n;
    }
    Ok(())
}

/// How a job used a write budget of `budget`: the best possible time for its writes (the
/// budget's first `limit` writes at once, each further `limit` as the previous age out:
/// ⌊(writes + used − 1) / limit⌋ × window, where `used` writes were spent just before the
/// job), the job's time from created to finished, their ratio (the share), and the 429s among
/// the directory's requests: writes and reads apart, each request inside a `$batch` counted
/// (the `$batch` envelopes, token requests and the writes spent before the job are not).
fn budget_figures(job: &Value, members: usize, budget: Budget, used: u32, stats: &Value) -> Value {
    let writes = members as u64 + u64::from(used);
    let best = (writes.saturating_sub(1) / u64::from(budget.limit)) as f64
        * budget.window_ms as f64
        / 1000.0;
    let at = |k: &str| {
        job[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let took = match (at("created_at"), at("finished_at")) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => f64::NAN,
    };
    let (mut write_requests, mut write_429, mut read_requests, mut read_429) = (0u64, 0, 0, 0);
    if let Some(routes) = stats["requests"].as_object() {
        for (route, by) in routes {
            if route.ends_with("/$batch") || route.contains("/oauth2/") {
                continue;
            }
            let Some(by) = by.as_object() else { continue };
            let total: u64 = by.values().filter_map(Value::as_u64).sum();
            let refused = by.get("429").and_then(Value::as_u64).unwrap_or(0);
            if route.starts_with("GET ") {
                read_requests += total;
                read_429 += refused;
            } else {
                write_requests += total;
                write_429 += refused;
            }
        }
    }
    // The writes spent before the job were answered 404.
    write_requests = write_requests.saturating_sub(u64::from(used));
    let pct = |n: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            (n as f64 / of as f64 * 10_000.0).round() / 100.0
        }
    };
    json!({
        "write_budget": format!("{}/{}", budget.limit, budget.window_ms),
        "used_before_job": used,
        "best_seconds": best,
        "job_seconds": took,
        "share_percent": if took > 0.0 { (best / took * 1000.0).round() / 10.0 } else { 0.0 },
        "write_requests": write_requests,
        "write_429": write_429,
        "write_429_percent": pct(write_429, write_requests),
        "read_requests": read_requests,
        "read_429": read_429,
        "read_429_percent": pct(read_429, read_requests),
        "requests_429_percent": pct(write_429 + read_429, write_requests + read_requests),
        "injected_503": stats["injected_errors"],
    })
}

/// `--scenario msp`: a service provider's licensor working every customer tenant at once.
mod msp {
    use super::*;
    use futures::StreamExt;
    use graph_emulator::TenantSet;

    /// The best possible time for `n` writes under a sliding window of `limit` writes per
    /// `window`: `limit` at once, the next `limit` as the first age out.
    fn best_seconds(n: usize, b: Budget) -> f64 {
        (n.saturating_sub(1) / b.limit as usize) as f64 * b.window_ms as f64 / 1000.0
    }

    fn round(x: f64, places: i32) -> f64 {
        let p = 10f64.powi(places);
        (x * p).round() / p
    }

    fn at(job: &Value, k: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        job[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    }

    async fn submit_assign(
        http: &reqwest::Client,
        d: &Deployment,
        token: &str,
        group: &str,
    ) -> anyhow::Result<String> {
        submit_body(http, d, token, &assign_body(group)).await
    }

    /// How many of the slowest tenants a run's line describes one by one.
    const SLOWEST_SHOWN: usize = 3;

    /// One run: JSON figures of every tenant's share of its budget, wall time, licensor's CPU
    /// seconds and peak RSS.
    pub async fn bench(args: &Args, run: usize) -> anyhow::Result<Value> {
        let http = reqwest::Client::new();
        let budget = args.tenant_write_budget;
        let members = args.tenant_members;
        let setup = Instant::now();
        let mut scenarios = TenantSet {
            count: Some(args.tenants),
            template: Some(Scenario::simple(
                1_000 * (run as u64 + 1),
                members,
                (members as u32).saturating_mul(2).max(10),
            )),
            ..Default::default()
        }
        .expand()
        .map_err(|e| anyhow::anyhow!("--tenants: {e}"))?;
        let faults = Faults {
            write_budget: budget,
            ..Faults::default()
        };
        let more_tenants = scenarios.split_off(1);
        let emu = graph_emulator::spawn(EmulatorConfig {
            scenario: scenarios.pop(),
            more_tenants,
            faults,
            ..EmulatorConfig::default()
        })
        .await?;
        let creds = emu.tenants();
        let mut groups = Vec::with_capacity(creds.len());
        for c in &creds {
            let s = get_json(
                &http,
                &format!(
                    "{}/_emulator/scenario?tenant={}",
                    emu.base_url(),
                    c.tenant_id
                ),
                None,
            )
            .await?;
            groups.push(s["groups"][0]["id"].as_str().context("group")?.to_owned());
        }
        let tenants: Vec<DirectoryTenant> = creds
            .iter()
            .enumerate()
            .map(|(i, c)| DirectoryTenant {
                name: format!("customer-{}", i + 1),
                base_url: emu.base_url(),
                tenant_id: c.tenant_id.clone(),
                client_id: c.client_id.clone(),
                client_secret: c.client_secret.clone(),
            })
            .collect();
        let (d, tokens) = deploy_tenants(args, &tenants).await?;
        let setup_secs = setup.elapsed().as_secs_f64();

        let cpu_before = d.cpu_seconds();
        let emulator_cpu_before = process_cpu_seconds(std::process::id());
        let started = Instant::now();
        // Every job at once.
        let submitted = futures::future::join_all(
            tokens
                .iter()
                .zip(&groups)
                .map(|(token, group)| submit_assign(&http, &d, token, group)),
        )
        .await;
        let jobs: Vec<String> = submitted.into_iter().collect::<anyhow::Result<_>>()?;
        let submit_secs = started.elapsed().as_secs_f64();
        let submits_sent_again = SUBMITS_SENT_AGAIN.swap(0, std::sync::atomic::Ordering::Relaxed);

        // Look at the unfinished jobs every `--poll-secs` (the jobs' own timestamps give the
        // times).
        let deadline = started + Duration::from_secs(args.timeout_secs);
        let mut done: Vec<Option<Value>> = vec![None; jobs.len()];
        loop {
            let pending: Vec<usize> = (0..jobs.len()).filter(|i| done[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} jobs not done after {} s",
                    pending.len(),
                    jobs.len(),
                    args.timeout_secs
                );
            }
            tokio::time::sleep(Duration::from_secs(args.poll_secs)).await;
            let polled: Vec<(usize, anyhow::Result<Value>)> =
                futures::stream::iter(pending.into_iter().map(|i| {
                    let url = format!("{}/v1/jobs/{}", d.url, jobs[i]);
                    let (http, token) = (&http, &tokens[i]);
                    async move { (i, get_json(http, &url, Some(token)).await) }
                }))
                .buffer_unordered(8)
                .collect()
                .await;
            for (i, job) in polled {
                let job = job?;
                if status_of(&job).is_some_and(|s| s.is_terminal() && s != JobStatus::Previewed) {
                    done[i] = Some(job);
                }
            }
        }
        let detected_wall = started.elapsed().as_secs_f64();
        let cpu: Vec<(String, f64)> = d
            .cpu_seconds()
            .into_iter()
            .zip(cpu_before)
            .map(|((role, after), (_, before))| (role, round(after - before, 1)))
            .collect();
        let emulator_cpu = process_cpu_seconds(std::process::id()) - emulator_cpu_before;
        let rss = d.peak_rss();
        let per_tenant = get_json(
            &http,
            &format!("{}/_emulator/tenants", emu.base_url()),
            None,
        )
        .await?["value"]
            .as_array()
            .cloned()
            .unwrap_or_default();

        let best = best_seconds(members, budget);
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let mut shares = Vec::with_capacity(jobs.len());
        // The slowest tenants, for a run whose minimum share is far below its median: how long
        // each job waited to start, how long it ran, and what the directory said to it.
        // Each with its times for `--tenant-figures` (see `Timeline`).
        let mut slowest: Vec<(f64, Value, Timeline)> = Vec::new();
        // Each tenant's seconds from its job's creation to its first write, from its first to
        // its last write, and from its last write to the job's end.
        let mut splits: [Vec<f64>; 3] = Default::default();
        // Where the wait for the first write went: from the job's creation to its `Run`'s
        // start (queued), from there to its groups all read and stored (expanded), and from
        // there to its first write.
        let mut start_splits: [Vec<f64>; 3] = Default::default();
        let (mut first_created, mut last_finished) = (None, None);
        let (mut succeeded, mut failed, mut duplicates, mut unfinished) = (0u64, 0u64, 0u64, 0);
        for (i, job) in done.iter().enumerate() {
            let Some(job) = job else { continue };
            let p = &job["progress"];
            succeeded += n(&p["succeeded"]);
            failed += n(&p["failed"]);
            if status_of(job) != Some(JobStatus::Finished) {
                unfinished += 1;
            }
            let written = per_tenant.get(i).map_or(0, |t| n(&t["successful_writes"]));
            duplicates += written.saturating_sub(n(&p["succeeded"]));
            if let (Some(c), Some(f)) = (at(job, "created_at"), at(job, "finished_at")) {
                let secs = (f - c).num_milliseconds() as f64 / 1000.0;
                shares.push(if secs > 0.0 {
                    (best / secs).min(1.0)
                } else {
                    1.0
                });
                let tenant = per_tenant.get(i);
                let started =
                    at(job, "started_at").map(|s| (s - c).num_milliseconds() as f64 / 1000.0);
                let expanded =
                    at(job, "expanded_at").map(|e| (e - c).num_milliseconds() as f64 / 1000.0);
                // Where the job's time went: waiting for its first write, writing, and ending
                // after its last write (the emulator's clock and licensor's are the machine's).
                let split = tenant.and_then(|t| {
                    let (first, last) = (n(&t["first_write_ms"]), n(&t["last_write_ms"]));
                    (first > 0).then(|| {
                        let (c, f) = (c.timestamp_millis(), f.timestamp_millis());
                        [
                            (first as i64 - c) as f64 / 1000.0,
                            (last - first) as f64 / 1000.0,
                            (f - last as i64) as f64 / 1000.0,
                        ]
                    })
                });
                if let Some(split) = split {
                    for (all, part) in splits.iter_mut().zip(split) {
                        all.push(part);
                    }
                    if let (Some(started), Some(expanded)) = (started, expanded) {
                        let parts = [started, expanded - started, split[0] - expanded];
                        for (all, part) in start_splits.iter_mut().zip(parts) {
                            all.push(part);
                        }
                    }
                }
                slowest.push((
                    secs,
                    json!({
                        "tenant": format!("customer-{}", i + 1),
                        "job": jobs[i],
                        "seconds": round(secs, 2),
                        "started_after_seconds": started.map(|s| round(s, 2)),
                        "expanded_after_seconds": expanded.map(|e| round(e, 2)),
                        "first_write_after_seconds": split.map(|s| round(s[0], 2)),
                        "writing_seconds": split.map(|s| round(s[1], 2)),
                        "finished_after_last_write_seconds": split.map(|s| round(s[2], 2)),
                        "throttled_429": tenant.map_or(0, |t| n(&t["throttled"])),
                        "directory_requests": tenant.map_or(0, |t| n(&t["requests_total"])),
                    }),
                    [
                        Some(c.timestamp_millis()),
                        tenant.map(|t| n(&t["first_write_ms"]) as i64),
                        tenant.map(|t| n(&t["last_write_ms"]) as i64),
                        Some(f.timestamp_millis()),
                    ],
                ));
                first_created = Some(first_created.map_or(c, |x: chrono::DateTime<_>| x.min(c)));
                last_finished = Some(last_finished.map_or(f, |x: chrono::DateTime<_>| x.max(f)));
            }
        }
        shares.sort_by(f64::total_cmp);
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some(path) = &args.tenant_figures {
            write_tenant_figures(path, &slowest)?;
        }
        slowest.truncate(SLOWEST_SHOWN);
        let share_at = |q: f64| -> Value {
            if shares.is_empty() {
                return Value::Null;
            }
            let i = ((shares.len() - 1) as f64 * q).round() as usize;
            json!(round(shares[i], 3))
        };
        let wall = match (first_created, last_finished) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => detected_wall,
        };
        let requests: u64 = per_tenant.iter().map(|t| n(&t["requests_total"])).sum();
        let throttled: u64 = per_tenant.iter().map(|t| n(&t["throttled"])).sum();
        let line = json!({
            "backend": match args.backend { Backend::Embedded => "embedded".to_owned(), Backend::Postgres => format!("postgres+redis, {} workers", args.workers) },
            "scenario": "msp",
            "run": run + 1,
            "tenants": jobs.len(),
            "members_per_tenant": members,
            "write_budget": format!("{}/{} ms", budget.limit, budget.window_ms),
            "best_possible_seconds_per_tenant": best,
            "share_min": share_at(0.0),
            "share_median": share_at(0.5),
            "share_p10": share_at(0.1),
            "tenants_below_90_percent": shares.iter().filter(|s| **s < 0.9).count(),
            "time_split_seconds": {
                "before_first_write": spread(&mut splits[0]),
                "writing": spread(&mut splits[1]),
                "after_last_write": spread(&mut splits[2]),
                "before_first_write_queued": spread(&mut start_splits[0]),
                "before_first_write_reading_groups": spread(&mut start_splits[1]),
                "before_first_write_after_groups": spread(&mut start_splits[2]),
            },
            "slowest_tenants": slowest.into_iter().map(|(_, v, _)| v).collect::<Vec<_>>(),
            "wall_seconds": round(wall, 2),
            "submit_seconds": round(submit_secs, 2),
            "submits_sent_again": submits_sent_again,
            "poll_seconds": args.poll_secs,
            "setup_seconds": round(setup_secs, 1),
            "succeeded": succeeded,
            "failed": failed,
            "jobs_not_finished_cleanly": unfinished,
            "lost_items": (members as u64 * jobs.len() as u64).saturating_sub(succeeded + failed),
            "duplicate_writes": duplicates,
            "directory_requests": requests,
            "throttled_429": throttled,
            "throttled_share": if requests > 0 { round(throttled as f64 / requests as f64, 4) } else { 0.0 },
            "throttled_429_most_per_tenant": per_tenant.iter().map(|t| n(&t["throttled"])).max().unwrap_or(0),
            "cpu_seconds": Value::Object(cpu.iter().map(|(r, s)| (r.clone(), json!(s))).collect()),
            "licensor_cpu_seconds": round(cpu.iter().map(|(_, s)| s).sum::<f64>(), 1),
            "emulator_cpu_seconds": round(emulator_cpu, 1),
            "peak_rss_mib": Value::Object(rss.into_iter().map(|(r, m)| (r, json!(m))).collect()),
        });
        d.stop().await;
        emu.shutdown().await;
        Ok(line)
    }

    /// A tenant's times in milliseconds since the epoch: its job's creation, its first and
    /// last write (the emulator's clock; `None` when the emulator did not say), its job's end.
    type Timeline = [Option<i64>; 4];

    /// Write every tenant's figures (`--tenant-figures`), slowest first, with its timeline as
    /// seconds from the first job's creation: `created`, `first_write`, `last_write`,
    /// `finished`.
    fn write_tenant_figures(
        path: &std::path::Path,
        tenants: &[(f64, Value, Timeline)],
    ) -> anyhow::Result<()> {
        let origin = tenants
            .iter()
            .filter_map(|(_, _, t)| t[0])
            .min()
            .unwrap_or(0);
        let since = |ms: Option<i64>| ms.map(|ms| round((ms - origin) as f64 / 1000.0, 2));
        let all: Vec<Value> = tenants
            .iter()
            .map(|(_, v, [created, first, last, finished])| {
                let mut v = v.clone();
                v["timeline_seconds"] = json!({
                    "created": since(*created),
                    "first_write": since(*first),
                    "last_write": since(*last),
                    "finished": since(*finished),
                });
                v
            })
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)
            .with_context(|| format!("--tenant-figures {}", path.display()))
    }

    /// `{"median", "max"}` of `values` in seconds (sorted in place), or null when empty.
    fn spread(values: &mut [f64]) -> Value {
        values.sort_by(f64::total_cmp);
        match values.last() {
            Some(max) => json!({
                "median": round(values[(values.len() - 1) / 2], 2),
                "max": round(*max, 2),
            }),
            None => Value::Null,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn best_time_is_whole_windows_after_the_first() {
            let b = |limit, window_ms| Budget { limit, window_ms };
            assert_eq!(best_seconds(1_000, b(100, 5_000)), 45.0);
            assert_eq!(best_seconds(100, b(100, 5_000)), 0.0);
            assert_eq!(best_seconds(101, b(100, 5_000)), 5.0);
            assert_eq!(best_seconds(6_000, b(3_000, 150_000)), 150.0);
        }
    }
}
