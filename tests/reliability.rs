//! Jobs survive what breaks in production: a worker killed with SIGKILL mid-job, the queue's
//! Redis emptied mid-job, and a directory failing 30% of requests while throttling hard. Each
//! time the job still ends `finished`, every member is assigned, and no member is written twice.
//!
//! The process tests run the real `licensor` binary on PostgreSQL + Redis: one `serve
//! --no-worker` and worker processes, with short heartbeats, leases and reconcile intervals.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, PgDatabase, Processes, RedisNamespace, TestApp};
use graph_emulator::{
    Budget, ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, Faults, Scenario,
};
use licensor::Roles;
use serde_json::{Value, json};

/// A production deployment of licensor (processes) on this test's own PostgreSQL database and
/// Redis namespace, with one tenant pointed at `emulator`.
struct Deployment {
    url: String,
    token: String,
    env: Vec<(String, String)>,
    procs: Processes,
    redis: RedisNamespace,
    _pg: PgDatabase,
    _data: tempfile::TempDir,
}

impl Deployment {
    async fn start(emulator: &EmulatorHandle, workers: usize) -> Option<Deployment> {
        let pg = PgDatabase::create(&common::postgres_url()?).await;
        let redis = RedisNamespace::new(&common::redis_url()?);
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env: Vec<(String, String)> = [
            ("LICENSOR_DATA_DIR", data.path().display().to_string()),
            ("LICENSOR_LISTEN", format!("127.0.0.1:{port}")),
            ("LICENSOR_DATABASE_URL", pg.url.clone()),
            ("LICENSOR_QUEUE_URL", redis.url.clone()),
            ("LICENSOR_QUEUE_NAME", redis.prefix.clone()),
            ("LICENSOR_SECRET_KEY", common::SECRET_KEY.to_owned()),
            ("LICENSOR_LOG", "warn".to_owned()),
            ("LICENSOR_WORKER__HEARTBEAT_SECS", "1".to_owned()),
            ("LICENSOR_WORKER__MISSED_HEARTBEATS", "2".to_owned()),
            ("LICENSOR_WORKER__SHUTDOWN_GRACE_SECS", "5".to_owned()),
            ("LICENSOR_JOBS__LEASE_SECS", "5".to_owned()),
            ("LICENSOR_JOBS__STALL_SECS", "5".to_owned()),
            ("LICENSOR_SWEEPS__RECONCILE", "*/2 * * * * *".to_owned()),
            ("LICENSOR_API__RATE_LIMIT_PER_SECOND", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut d = Deployment {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            env,
            procs: Processes(Vec::new()),
            redis,
            _pg: pg,
            _data: data,
        };
        d.run(&["migrate"], &[]);
        d.run(
            &[
                "tenant",
                "create",
                "--name",
                "contoso",
                "--directory-url",
                &emulator.base_url(),
                "--directory-tenant-id",
                &emulator.directory_tenant_id(),
                "--client-id",
                &emulator.client_id(),
                "--client-secret-env",
                "DIRECTORY_SECRET",
            ],
            &[("DIRECTORY_SECRET", &emulator.client_secret())],
        );
        d.token = d
            .run(
                &["token", "create", "--tenant", "contoso", "--role", "admin"],
                &[],
            )
            .trim()
            .to_owned();
        d.spawn(&["serve", "--no-worker"]);
        for _ in 0..workers {
            d.spawn(&["worker"]);
        }
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{}/readyz", d.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "licensor did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(d)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_licensor"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self
            .command()
            .args(args)
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "licensor {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Start a process; returns its index.
    fn spawn(&mut self, args: &[&str]) -> usize {
        let child = self
            .command()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.procs.0.push(child);
        self.procs.0.len() - 1
    }

    async fn job(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/v1/jobs/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn submit_assign(&self) -> String {
        let http = reqwest::Client::new();
        let groups: Value = http
            .get(format!("{}/v1/directory/groups?search=All", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let resp = http
            .post(format!("{}/v1/jobs", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"kind": "assign", "groups": [groups["data"][0]["id"]], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let job: Value = resp.json().await.unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// Wait until the job has at least `done` members done.
    async fn wait_progress(&self, id: &str, done: i64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.job(id).await;
            if job["progress"]["succeeded"].as_i64().unwrap_or(0) >= done {
                return;
            }
            assert!(Instant::now() < deadline, "no progress: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_end(&self, id: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(id).await;
            if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job not done after {secs} s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn stats(emulator: &EmulatorHandle) -> Value {
    reqwest::get(format!("{}/_emulator/stats", emulator.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every member holds the license, and none was written twice.
async fn assert_all_assigned_once(emulator: &EmulatorHandle, job: &Value, members: u64) {
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(
        job["progress"]["succeeded"].as_u64(),
        Some(members),
        "{job}"
    );
    let stats = stats(emulator).await;
    let consumed = stats["skus"][0]["consumedUnits"].as_u64().unwrap();
    assert_eq!(consumed, members, "every member assigned: {stats}");
    assert_eq!(
        stats["successful_writes"].as_u64(),
        Some(members),
        "{stats}"
    );
    assert!(
        stats["writes_per_user_max"].as_u64().unwrap() <= 1,
        "no member written twice: {stats}"
    );
}

async fn slow_directory(members: usize) -> EmulatorHandle {
    graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(31, members, (members * 2) as u32)),
        faults: Faults {
            latency_ms: 15,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_job_postgres_redis() {
    let emulator = slow_directory(20_000).await;
    let Some(mut d) = Deployment::start(&emulator, 2).await else {
        return;
    };
    let id = d.submit_assign().await;
    d.wait_progress(&id, 3_000).await;
    // SIGKILL the first worker in the middle of its chunks.
    let victim = &mut d.procs.0[1];
    Command::new("kill")
        .args(["-9", &victim.id().to_string()])
        .status()
        .unwrap();
    victim.wait().unwrap();
    let before = d.job(&id).await;
    assert_eq!(before["status"], "running");
    // A new worker joins.
    d.spawn(&["worker"]);
    let job = d.wait_end(&id, 180).await;
    assert_all_assigned_once(&emulator, &job, 20_000).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_emptied_mid_job_postgres_redis() {
    let emulator = slow_directory(5_000).await;
    let Some(d) = Deployment::start(&emulator, 1).await else {
        return;
    };
    let id = d.submit_assign().await;
    d.wait_progress(&id, 1_000).await;
    // Everything the queue held for this deployment is gone (as after FLUSHALL or a Redis
    // restart without persistence), keeping other tests' keys.
    let client = redis::Client::open(d.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = d.redis.keys();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let flushed = Instant::now();
    let job = d.wait_end(&id, 60).await;
    assert!(flushed.elapsed() < Duration::from_secs(60));
    assert_all_assigned_once(&emulator, &job, 5_000).await;
    emulator.shutdown().await;
}

/// 30% of directory requests fail with 503 and writes are throttled hard: transient errors are
/// retried until they succeed, none is left as a failed member.
async fn flaky_throttled_directory(backend: Backend) {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(32, 5_000, 10_000)),
        faults: Faults {
            error_rate: 0.3,
            error_statuses: vec![503],
            write_budget: Budget {
                limit: 1_000,
                window_ms: 5_000,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[directory]\nretry_min_delay_ms = 50\nretry_max_delay_ms = 2000\n",
    )
    .await
    else {
        return;
    };
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let group = app.group_id(&tenant.admin, "All Users").await;
    let resp = app
        .post("/v1/jobs", &tenant.admin)
        .json(&json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let job: Value = resp.json().await.unwrap();
    let job = app
        .wait_for_job(&tenant.admin, job["id"].as_str().unwrap(), 240)
        .await;
    assert_eq!(job["progress"]["failed"], 0, "{job}");
    assert_all_assigned_once(&emulator, &job, 5_000).await;
    app.assert_outcomes_true(
        &tenant.viewer,
        job["id"].as_str().unwrap(),
        &emulator.base_url(),
    )
    .await;
    let stats = stats(&emulator).await;
    assert!(stats["injected_errors"].as_u64().unwrap() > 100, "{stats}");
    assert!(stats["throttled"].as_u64().unwrap() > 0, "{stats}");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(flaky_throttled_directory);
