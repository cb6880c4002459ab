//! A production deployment of licensor as separate processes — `serve --no-worker` and
//! workers of the real binary on PostgreSQL + Redis — for tests that kill, stop or starve its
//! parts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graph_emulator::{ENTERPRISEPACK_SKU_ID, EmulatorHandle};
use serde_json::{Value, json};

use super::{PgDatabase, Processes, RedisNamespace};

/// A production deployment of licensor (processes) on this test's own PostgreSQL database and
/// Redis namespace, with one tenant pointed at `emulator`.
pub struct Deployment {
    pub url: String,
    pub token: String,
    pub env: Vec<(String, String)>,
    pub procs: Processes,
    /// The queue's Redis namespace (`None`: the embedded default, SQLite in the data directory).
    pub redis: Option<RedisNamespace>,
    _pg: Option<PgDatabase>,
    _data: tempfile::TempDir,
}

/// Where a [`Deployment`] keeps its data.
pub struct Services {
    /// `postgres://…` of a database the deployment may use as its own.
    pub database_url: String,
    /// The Redis server and the key namespace (queue name) the deployment uses.
    pub redis: RedisNamespace,
}

impl Deployment {
    /// A deployment on a fresh database of the test PostgreSQL and a namespace of the test
    /// Redis; `None` where those are not configured (outside CI).
    pub async fn start(emulator: &EmulatorHandle, workers: usize) -> Option<Deployment> {
        let pg = PgDatabase::create(&crate::common::postgres_url()?).await;
        let services = Services {
            database_url: pg.url.clone(),
            redis: RedisNamespace::new(&crate::common::redis_url()?),
        };
        let mut d = Self::start_on(emulator, workers, services, &[]).await;
        d._pg = Some(pg);
        Some(d)
    }

    /// A deployment on `services`, with `extra` environment variables over the test defaults
    /// (short heartbeats, leases and reconcile intervals).
    pub async fn start_on(
        emulator: &EmulatorHandle,
        workers: usize,
        services: Services,
        extra: &[(&str, &str)],
    ) -> Deployment {
        let mut d = Self::prepare(emulator, Some(services), extra);
        d.spawn(&["serve", "--no-worker"]);
        for _ in 0..workers {
            d.spawn(&["worker"]);
        }
        d.wait_ready().await;
        d
    }

    /// The embedded default as one process: `licensor serve` (API and worker) on the SQLite
    /// database and queue of the deployment's own data directory, with `extra` environment
    /// variables over the test defaults.
    pub async fn start_embedded(emulator: &EmulatorHandle, extra: &[(&str, &str)]) -> Deployment {
        let mut d = Self::prepare(emulator, None, extra);
        d.spawn(&["serve"]);
        d.wait_ready().await;
        d
    }

    /// Migrate, create the tenant and its admin token; no process started yet.
    fn prepare(
        emulator: &EmulatorHandle,
        services: Option<Services>,
        extra: &[(&str, &str)],
    ) -> Deployment {
        let (database_url, redis) = match services {
            Some(s) => (Some(s.database_url), Some(s.redis)),
            None => (None, None),
        };
        let data = tempfile::tempdir().unwrap();
        let port = super::servers::free_port();
        let stores: Vec<(&str, String)> = match (&database_url, &redis) {
            (Some(db), Some(redis)) => vec![
                ("LICENSOR_DATABASE_URL", db.clone()),
                ("LICENSOR_QUEUE_URL", redis.url.clone()),
                ("LICENSOR_QUEUE_NAME", redis.prefix.clone()),
            ],
            _ => Vec::new(),
        };
        let env: Vec<(String, String)> = [
            ("LICENSOR_DATA_DIR", data.path().display().to_string()),
            ("LICENSOR_LISTEN", format!("127.0.0.1:{port}")),
            ("LICENSOR_SECRET_KEY", super::SECRET_KEY.to_owned()),
            // `LICENSOR_TEST_LOG` (e.g. `warn,licensor_workers::jobs=debug`) shows more of the
            // processes' logs when a test is looked into.
            (
                "LICENSOR_LOG",
                std::env::var("LICENSOR_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
            ("LICENSOR_WORKER__HEARTBEAT_SECS", "1".to_owned()),
            ("LICENSOR_WORKER__MISSED_HEARTBEATS", "2".to_owned()),
            ("LICENSOR_WORKER__SHUTDOWN_GRACE_SECS", "5".to_owned()),
            ("LICENSOR_JOBS__LEASE_SECS", "5".to_owned()),
            ("LICENSOR_JOBS__STALL_SECS", "5".to_owned()),
            ("LICENSOR_SWEEPS__RECONCILE", "*/2 * * * * *".to_owned()),
            ("LICENSOR_API__RATE_LIMIT_PER_SECOND", "0".to_owned()),
        ]
        .into_iter()
        .chain(stores)
        .map(|(k, v)| (k.to_owned(), v))
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .chain(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect();
        let mut d = Deployment {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            env,
            procs: Processes(Vec::new()),
            redis,
            _pg: None,
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
        d
    }

    /// The deployment's database URL: `postgres://…`, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        let var = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        var("LICENSOR_DATABASE_URL").unwrap_or_else(|| {
            format!(
                "sqlite://{}/licensor.db?mode=rw",
                var("LICENSOR_DATA_DIR").unwrap_or_default()
            )
        })
    }

    /// Wait until the API answers `/readyz` with 200.
    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "licensor did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_licensor"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
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
    pub fn spawn(&mut self, args: &[&str]) -> usize {
        self.spawn_with(args, &[])
    }

    /// Start a process with `extra` environment variables over the deployment's; returns its
    /// index.
    pub fn spawn_with(&mut self, args: &[&str], extra: &[(&str, &str)]) -> usize {
        let child = self
            .command()
            .args(args)
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.procs.0.push(child);
        self.procs.0.len() - 1
    }

    /// `GET` `path` (below the API's URL) with the deployment's token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn submit_assign(&self) -> String {
        self.submit_for_all(|group| json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
            .await
    }

    /// Submit the job `body` makes of the directory's group of all members (given its id);
    /// returns the job's id.
    pub async fn submit_for_all(&self, body: impl FnOnce(&Value) -> Value) -> String {
        let groups: Value = self
            .get("/v1/directory/groups?search=All")
            .await
            .json()
            .await
            .unwrap();
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/jobs", self.url))
            .bearer_auth(&self.token)
            .json(&body(&groups["data"][0]["id"]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let job: Value = resp.json().await.unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// Wait until the job has at least `done` members done.
    pub async fn wait_progress(&self, id: &str, done: i64) {
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

    pub async fn wait_end(&self, id: &str, secs: u64) -> Value {
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

pub async fn stats(emulator: &EmulatorHandle) -> Value {
    reqwest::get(format!("{}/_emulator/stats", emulator.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every member holds the license, and none was written twice. Every item says so: succeeded,
/// or skipped as already holding it — a member written by a step that could not record it
/// (its worker killed, the database away) is read afresh by the step that takes it over and
/// found done.
pub async fn assert_all_assigned_once(emulator: &EmulatorHandle, job: &Value, members: u64) {
    assert_eq!(job["status"], "finished", "{job}");
    let progress = &job["progress"];
    assert_eq!(progress["failed"].as_u64(), Some(0), "{job}");
    assert_eq!(
        progress["succeeded"].as_u64().unwrap_or(0) + progress["skipped"].as_u64().unwrap_or(0),
        members,
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
