//! Test harness: starts the real licensor on port 0 with its own data, and talks HTTP to it.
//!
//! Each test owns its data: a fresh SQLite directory, or a PostgreSQL database and a Redis key
//! namespace of its own, removed when the test ends (also when it fails). PostgreSQL and Redis
//! come from `LICENSOR_TEST_DATABASE_URL` / `LICENSOR_TEST_REDIS_URL`; when CI is set, their
//! absence fails the test instead of skipping it.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::time::Duration;

use licensor::{Application, Roles};
use licensor_core::Settings;
use licensor_core::domain::Role;
use licensor_core::tenants::{self, DirectorySettings};
use licensor_core::tokens;
use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

pub mod deployment;
pub mod jobs;
pub mod servers;

pub const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn required_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{var} must be set in CI: PostgreSQL/Redis-backed tests may not be skipped")
        }
        _ => None,
    }
}

pub fn postgres_url() -> Option<String> {
    required_env("LICENSOR_TEST_DATABASE_URL")
}

pub fn redis_url() -> Option<String> {
    required_env("LICENSOR_TEST_REDIS_URL")
}

/// Where a test's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + apalis-sqlite (the embedded default).
    Embedded,
    /// PostgreSQL + apalis-redis (production).
    Production,
}

/// A PostgreSQL database created for one test and dropped after it.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        let name = format!("licensor_t_{}", Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let (server, _) = base.rsplit_once('/').expect("database URL with a path");
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{server}/{name}{query}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
            Ok::<(), std::io::Error>(())
        })
        .join();
    }
}

/// Child processes a test started, killed when the test ends — also when it fails half-way.
pub struct Processes(pub Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A Redis key namespace for one test, deleted after it.
pub struct RedisNamespace {
    pub url: String,
    pub prefix: String,
}

impl RedisNamespace {
    pub fn new(url: &str) -> RedisNamespace {
        RedisNamespace {
            url: url.to_owned(),
            prefix: format!("licensor-test-{}", Uuid::new_v4().simple()),
        }
    }

    /// Keys currently under the namespace.
    pub fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let mut conn = client.get_connection().expect("connect to the test Redis");
        redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default()
    }
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Everything one test owns.
pub struct TestData {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
    pub redis: Option<RedisNamespace>,
}

impl TestData {
    /// Fresh data for `backend`, or `None` when the backend's services are not configured
    /// (outside CI).
    pub async fn new(backend: Backend) -> Option<TestData> {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Embedded => Some(TestData {
                dir,
                pg: None,
                redis: None,
            }),
            Backend::Production => {
                let pg_url = postgres_url()?;
                let redis_url = redis_url()?;
                Some(TestData {
                    dir,
                    pg: Some(PgDatabase::create(&pg_url).await),
                    redis: Some(RedisNamespace::new(&redis_url)),
                })
            }
        }
    }

    /// Settings pointing at this test's data, with `extra` TOML on top.
    pub fn settings(&self, extra: &str) -> Settings {
        let data_dir = self.dir.path().display().to_string();
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data_dir}\"\nsecret_key = \"{SECRET_KEY}\"\nlog = \"warn\"\n"
        );
        if let Some(pg) = &self.pg {
            toml.push_str(&format!("database_url = \"{}\"\n", pg.url));
        }
        if let Some(ns) = &self.redis {
            toml.push_str(&format!(
                "queue_url = \"{}\"\nqueue_name = \"{}\"\n",
                ns.url, ns.prefix
            ));
        }
        // Fast heartbeats, unless the test sets the worker's table itself.
        if !extra.contains("[worker]") {
            toml.push_str(
                "[worker]\nheartbeat_secs = 1\nmissed_heartbeats = 2\nshutdown_grace_secs = 5\n",
            );
        }
        toml.push_str(extra);
        let mut settings = Settings::from_toml(&toml).expect("test settings");
        // Tests drive the API faster than any person; the per-token rate limit is on only where
        // a test asks for it.
        if !extra.contains("rate_limit") {
            settings.api.rate_limit_per_second = 0;
        }
        settings
    }
}

impl TestData {
    /// `licensor` as the operator runs it on this data (`tenant …`, `token …`): the same data
    /// directory, secret key, database and queue as [`TestData::settings`], and nothing else
    /// from the environment running the tests.
    pub fn admin_cli(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("LICENSOR_DATA_DIR", self.dir.path())
            .env("LICENSOR_SECRET_KEY", SECRET_KEY)
            .stdin(std::process::Stdio::null());
        if let Some(pg) = &self.pg {
            cmd.env("LICENSOR_DATABASE_URL", &pg.url);
        }
        if let Some(ns) = &self.redis {
            cmd.env("LICENSOR_QUEUE_URL", &ns.url)
                .env("LICENSOR_QUEUE_NAME", &ns.prefix);
        }
        cmd
    }
}

/// A running licensor (API + worker) and an HTTP client for it.
pub struct TestApp {
    pub url: String,
    pub db: sea_orm::DatabaseConnection,
    pub secrets: licensor_core::crypto::SecretBox,
    pub http: reqwest::Client,
    pub events: tokio::sync::broadcast::Receiver<licensor_workers::WorkerEvent>,
    pub queue: licensor_core::queue::Queue,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the data outlives the app.
    pub data: TestData,
}

impl TestApp {
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, Roles::ALL, "").await
    }

    pub async fn start_with(backend: Backend, roles: Roles, extra: &str) -> Option<TestApp> {
        let data = TestData::new(backend).await?;
        let app = Application::build(data.settings(extra), roles)
            .await
            .expect("licensor starts");
        let url = app
            .local_addr()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let db = app.db().clone();
        let secrets = app.secrets().clone();
        let events = app.subscribe();
        let queue = app.queue().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Some(TestApp {
            url,
            db,
            secrets,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            events,
            queue,
            stop: Some(stop),
            task: Some(task),
            data,
        })
    }

    /// Stop the app and wait until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let outcome = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("licensor stops within 30 s");
            outcome.expect("app task").expect("app ran without error");
        }
    }

    /// A tenant with one token per role.
    pub async fn tenant(&self, name: &str) -> TestTenant {
        let t = tenants::create(&self.db, &self.secrets, name, &DirectorySettings::default())
            .await
            .expect("create tenant");
        let mut tokens = Vec::new();
        for role in [Role::Admin, Role::Operator, Role::Viewer] {
            let tok = tokens::create(&self.db, t.id, role, role.as_str(), None)
                .await
                .expect("create token");
            tokens.push(tok.secret);
        }
        TestTenant {
            id: t.id,
            admin: tokens[0].clone(),
            operator: tokens[1].clone(),
            viewer: tokens[2].clone(),
        }
    }

    pub fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    /// GET `path` (a list with a `cursor`) and expect its refusal: 400 `invalid_query` whose
    /// detail starts with `refusal` — for a cursor of the list sent with other filters,
    /// [`other_filters`] naming them.
    pub async fn expect_cursor_refused(&self, path: &str, token: &str, refusal: &str) {
        let resp = self.get(path, token).send().await.unwrap();
        let problem = expect_problem(resp, 400, "invalid_query").await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(refusal), "{path}: {problem}");
    }

    pub fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    pub fn patch(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .patch(format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    /// GET `path` with `token`: the answer, whatever its status.
    pub async fn get_response(&self, path: &str, token: &str) -> reqwest::Response {
        self.get(path, token).send().await.expect("GET")
    }

    /// POST `body` as JSON to `path` with `token`: the answer, whatever its status.
    pub async fn post_response(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.post(path, token)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// POST to `path` with `token` and no body: the answer, whatever its status.
    pub async fn post_empty(&self, path: &str, token: &str) -> reqwest::Response {
        self.post(path, token).send().await.expect("POST")
    }

    /// POST `body` exactly as given, declared `application/json` (for bodies that are not valid
    /// JSON or not of the right shape): the answer, whatever its status.
    pub async fn post_raw(&self, path: &str, token: &str, body: &str) -> reqwest::Response {
        self.post(path, token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }

    /// PATCH `body` as JSON to `path` with `token`: the answer, whatever its status.
    pub async fn patch_response(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.patch(path, token)
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    /// PATCH `body` to `path` with `token`: asserts a 2xx answer and returns its JSON body.
    pub async fn patch_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        success_json(self.patch_response(path, token, body).await).await
    }

    /// GET `path` without a token: the answer, whatever its status.
    pub async fn get_anonymous(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
    }

    /// GET `path` without a token: asserts a 2xx answer and returns its JSON body.
    pub async fn get_anonymous_json(&self, path: &str) -> serde_json::Value {
        success_json(self.get_anonymous(path).await).await
    }

    /// GET `path` with `token`: asserts a 2xx answer and returns its JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        success_json(self.get_response(path, token).await).await
    }

    /// GET a list at `path` with `token`: asserts a 2xx answer and returns its `data` rows.
    pub async fn list(&self, path: &str, token: &str) -> Vec<serde_json::Value> {
        let page = self.get_json(path, token).await;
        match page["data"].as_array() {
            Some(rows) => rows.clone(),
            None => panic!("GET {path}: no data list in {page}"),
        }
    }

    /// POST `body` to `path` with `token`: asserts a 2xx answer and returns its JSON body.
    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        success_json(self.post_response(path, token, body).await).await
    }

    /// GET an unauthenticated route and return its body as text (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> String {
        self.get_anonymous(path)
            .await
            .text()
            .await
            .expect("text body")
    }
}

/// The JSON body of a 2xx answer; panics, naming the URL, status and body, on any other.
pub async fn success_json(resp: reqwest::Response) -> serde_json::Value {
    let (status, url) = (resp.status(), resp.url().clone());
    let body = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// The names of a JSON object's fields, sorted: an answer's shape. Panics on anything else.
pub fn field_names(v: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

pub struct TestTenant {
    pub id: Uuid,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

/// Assert a problem+json response with `status` and `code`; returns the body.
/// Replace the emulator's faults (`PUT /_emulator/faults`) with `faults` (fields not given
/// take the emulator's starting ones: throttling is on unless it says `"throttling": false` or
/// the emulator started without it).
pub async fn put_faults(emulator: &graph_emulator::EmulatorHandle, faults: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/_emulator/faults", emulator.base_url()))
        .json(&faults)
        .send()
        .await
        .expect("the emulator answers");
    assert!(
        resp.status().is_success(),
        "faults {faults} refused: {:?}",
        resp.text().await
    );
}

/// The start of the refusal of a list's cursor sent with other filters, naming `differ` (the
/// filters' names, comma-separated, in name order).
pub fn other_filters(differ: &str) -> String {
    format!("cursor was issued with other filters ({differ})")
}

pub async fn expect_problem(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    check_problem(resp, status, code)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A problem+json response with `status` and `code` (its body), or what is wrong with it.
pub async fn check_problem(
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> Result<serde_json::Value, String> {
    let (got, url) = (resp.status().as_u16(), resp.url().clone());
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let shaped = ["type", "title", "detail"]
        .iter()
        .all(|field| body[field].is_string());
    if got != status
        || ct != "application/problem+json"
        || body["code"] != code
        || body["status"] != status
        || !shaped
    {
        return Err(format!(
            "{url}: expected {status} {code} as problem+json, got {got} {ct} {text}"
        ));
    }
    Ok(body)
}

/// Generate one `#[tokio::test]` per backend from an async fn taking a [`Backend`]; the
/// production variant's name says what it needs, so CI output shows it ran.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_redis() {
                super::$name($crate::common::Backend::Production).await;
            }
        }
    };
}

impl TestApp {
    /// Point `tenant` at a running directory emulator.
    pub async fn connect_directory(
        &self,
        tenant_id: Uuid,
        emulator: &graph_emulator::EmulatorHandle,
    ) {
        tenants::update_directory(
            &self.db,
            &self.secrets,
            tenant_id,
            &DirectorySettings {
                directory_url: Some(emulator.base_url()),
                directory_tenant_id: Some(emulator.directory_tenant_id()),
                client_id: Some(emulator.client_id()),
                client_secret: Some(emulator.client_secret()),
            },
        )
        .await
        .expect("point the tenant at the emulator");
    }

    /// Point a tenant at one of an emulator's tenants (see [`graph_emulator::TenantSet`]).
    pub async fn connect_directory_to(
        &self,
        tenant_id: Uuid,
        emulator: &graph_emulator::EmulatorHandle,
        directory: &graph_emulator::TenantCredentials,
    ) {
        tenants::update_directory(
            &self.db,
            &self.secrets,
            tenant_id,
            &DirectorySettings {
                directory_url: Some(emulator.base_url()),
                directory_tenant_id: Some(directory.tenant_id.clone()),
                client_id: Some(directory.client_id.clone()),
                client_secret: Some(directory.client_secret.clone()),
            },
        )
        .await
        .expect("point the tenant at the emulator's tenant");
    }

    /// Poll a job until it reaches a final status (or panic after `secs`); returns the job.
    pub async fn wait_for_job(&self, token: &str, job_id: &str, secs: u64) -> serde_json::Value {
        self.poll_job(token, job_id, secs, |status| {
            matches!(
                status,
                "finished" | "finished_with_exception" | "failed" | "cancelled"
            )
        })
        .await
    }

    /// Poll a job until it is no longer `queued` or `running` — paused, previewed or ended — (or
    /// panic after `secs`); returns the job.
    pub async fn wait_until_settled(
        &self,
        token: &str,
        job_id: &str,
        secs: u64,
    ) -> serde_json::Value {
        self.poll_job(token, job_id, secs, |status| {
            !matches!(status, "queued" | "running")
        })
        .await
    }

    /// Poll a job every 100 ms until `done` holds for its status (or panic after `secs`);
    /// returns the job.
    async fn poll_job(
        &self,
        token: &str,
        job_id: &str,
        secs: u64,
        done: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let job: serde_json::Value = self
                .get(&format!("/v1/jobs/{job_id}"), token)
                .send()
                .await
                .expect("get job")
                .json()
                .await
                .expect("job body");
            let status = job["status"].as_str().unwrap_or_default();
            if done(status) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job_id} still {status} after {secs} s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The id of the directory group named `name`, through the API.
    pub async fn group_id(&self, token: &str, name: &str) -> String {
        let groups: serde_json::Value = self
            .get(&format!("/v1/directory/groups?search={name}"), token)
            .send()
            .await
            .expect("groups")
            .json()
            .await
            .expect("groups body");
        groups["data"]
            .as_array()
            .and_then(|a| a.iter().find(|g| g["display_name"] == name))
            .and_then(|g| g["id"].as_str())
            .unwrap_or_else(|| panic!("group {name} in {groups}"))
            .to_owned()
    }

    /// Every item of a job, following the cursor.
    pub async fn all_items(&self, token: &str, job_id: &str) -> Vec<serde_json::Value> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let page: serde_json::Value = self
                .get(
                    &format!("/v1/jobs/{job_id}/items?limit=500&cursor={cursor}"),
                    token,
                )
                .send()
                .await
                .expect("items")
                .json()
                .await
                .expect("items body");
            items.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => return items,
            }
        }
    }
}

/// A member's licenses as the directory emulator shows them.
struct Held {
    /// SKU id → disabled plans, for licenses held directly.
    direct: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// SKU ids held through a group.
    inherited: std::collections::BTreeSet<String>,
}

impl Held {
    fn of(user: &serde_json::Value) -> Held {
        let mut held = Held {
            direct: Default::default(),
            inherited: Default::default(),
        };
        for s in user["licenseAssignmentStates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let sku = s["skuId"].as_str().unwrap_or_default().to_lowercase();
            if s["assignedByGroup"].is_null() {
                let plans = s["disabledPlans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .map(str::to_lowercase)
                    .collect();
                held.direct.insert(sku, plans);
            } else {
                held.inherited.insert(sku);
            }
        }
        held
    }

    /// The direct licenses in the shape of the change ledger.
    fn ledger(
        list: &serde_json::Value,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["sku_id"].as_str().unwrap_or_default().to_lowercase(),
                    l["disabled_plans"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str())
                        .map(str::to_lowercase)
                        .collect(),
                )
            })
            .collect()
    }
}

impl TestApp {
    /// `licensor` as a client of this app with `token`: only the variables set here (no
    /// LICENSOR_* from the environment running the tests), warnings logged, no input.
    pub fn cli(&self, token: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("LICENSOR_URL", &self.url)
            .env("LICENSOR_TOKEN", token)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Every page of a job's change ledger.
    pub async fn all_changes(&self, token: &str, job_id: &str) -> Vec<serde_json::Value> {
        let mut changes = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get_json(
                    &format!("/v1/jobs/{job_id}/changes?limit=500&cursor={cursor}"),
                    token,
                )
                .await;
            changes.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => return changes,
            }
        }
    }

    /// The truth of a finished job: every item's final outcome compared with the directory
    /// emulator's state of its member, right now. No item is pending; a member `succeeded` or
    /// `skipped` (already in the desired state) holds what the job asked for; a `failed` one
    /// does not; an undo's member holds its licenses from before the undone job, or — left
    /// `changed_since` — no longer what that job left; a member deleted from the directory is
    /// `failed`, `user_not_found`. `cancelled` items claim nothing. Call it
    /// when the job has ended, before anything else changes the members. Returns the number of
    /// items checked.
    pub async fn assert_outcomes_true(
        &self,
        token: &str,
        job_id: &str,
        emulator_url: &str,
    ) -> usize {
        self.assert_outcomes_true_in(token, job_id, emulator_url, None)
            .await
    }

    /// [`TestApp::assert_outcomes_true`] against one of an emulator's tenants (its directory
    /// tenant id; `None`: the default tenant).
    pub async fn assert_outcomes_true_in(
        &self,
        token: &str,
        job_id: &str,
        emulator_url: &str,
        directory_tenant: Option<&str>,
    ) -> usize {
        use std::collections::{BTreeMap, BTreeSet, HashMap};
        let job = self.get_json(&format!("/v1/jobs/{job_id}"), token).await;
        let req = &job["request"];
        let kind = req["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "export" {
            return 0;
        }
        let lower = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_lowercase();
        let adds: Vec<(String, BTreeSet<String>)> = req["add_licenses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    lower(&l["sku_id"]),
                    l["disabled_plans"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(lower)
                        .collect(),
                )
            })
            .collect();
        let removes: Vec<String> = req["remove_licenses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(lower)
            .collect();
        let replace_all = req["replace_all"].as_bool().unwrap_or(false);
        // An undo: each member's ledger entry in the undone job.
        let undone: Option<HashMap<String, serde_json::Value>> = match req["undo_of"].as_str() {
            Some(parent) => Some(
                self.all_changes(token, parent)
                    .await
                    .into_iter()
                    .map(|c| (c["user_id"].as_str().unwrap_or_default().to_owned(), c))
                    .collect(),
            ),
            None => None,
        };
        // The job's own ledger: a usage location it says it set is the member's now.
        let ledger: HashMap<String, serde_json::Value> = self
            .all_changes(token, job_id)
            .await
            .into_iter()
            .map(|c| (c["user_id"].as_str().unwrap_or_default().to_owned(), c))
            .collect();
        let items = self.all_items(token, job_id).await;
        let http = reqwest::Client::new();
        for item in &items {
            let status = item["status"].as_str().unwrap_or_default();
            let code = item["error"]["code"].as_str().unwrap_or_default();
            assert_ne!(
                status, "pending",
                "job {job_id} ended with a pending item: {item}"
            );
            if code == "cancelled" {
                continue;
            }
            let user_id = item["user_id"].as_str().unwrap_or_default();
            let user: serde_json::Value = http
                .get(format!("{emulator_url}/_emulator/users/{user_id}"))
                .query(&[("tenant", directory_tenant)])
                .send()
                .await
                .expect("emulator user")
                .json()
                .await
                .expect("emulator user body");
            let held = Held::of(&user);
            let why = || format!("job {job_id} ({kind}) item {item} but the directory has {user}");
            if let Some(set) = ledger
                .get(user_id)
                .map(|c| &c["usage_location"])
                .filter(|l| !l.is_null())
            {
                assert_eq!(
                    user["usageLocation"],
                    set["after"],
                    "the ledger says the job set its usage location ({set}): {}",
                    why()
                );
            }
            // A user deleted in the directory holds nothing: only "the user is not found" is
            // true of it.
            if user["deleted"] == true {
                assert_eq!(
                    (status, code),
                    ("failed", "user_not_found"),
                    "the user was deleted: {}",
                    why()
                );
                continue;
            }
            if let Some(undone) = &undone {
                let entry = undone
                    .get(user_id)
                    .unwrap_or_else(|| panic!("no ledger entry of the undone job: {}", why()));
                let before: BTreeMap<_, _> = Held::ledger(&entry["before"]);
                let after: BTreeMap<_, _> = Held::ledger(&entry["after"]);
                match (status, code) {
                    ("succeeded", _) | ("skipped", "") => {
                        assert_eq!(held.direct, before, "not restored: {}", why())
                    }
                    ("skipped", "changed_since") => {
                        assert_ne!(held.direct, after, "not changed since: {}", why())
                    }
                    ("failed", _) => {
                        assert_ne!(held.direct, before, "failed but restored: {}", why())
                    }
                    _ => panic!("unexpected outcome: {}", why()),
                }
                continue;
            }
            let adds_held = adds
                .iter()
                .all(|(sku, plans)| held.direct.get(sku) == Some(plans));
            let removes_gone_direct = removes.iter().all(|r| !held.direct.contains_key(r));
            let removes_gone =
                removes_gone_direct && removes.iter().all(|r| !held.inherited.contains(r));
            let only_adds_direct = held.direct.keys().all(|k| adds.iter().any(|(a, _)| a == k));
            let done = match kind.as_str() {
                "assign" => adds_held,
                "remove" => removes_gone_direct,
                _ if replace_all => adds_held && only_adds_direct,
                _ => adds_held && removes_gone_direct,
            };
            match (status, code) {
                ("succeeded", _) => assert!(done, "succeeded but not done: {}", why()),
                ("skipped", "") => match kind.as_str() {
                    // "Holds none of the licenses to replace" is a skip too.
                    "replace" if !replace_all => {
                        assert!(removes_gone_direct, "skipped but not done: {}", why())
                    }
                    _ => assert!(done, "skipped but not done: {}", why()),
                },
                ("failed", _) => {
                    let fully = match kind.as_str() {
                        "assign" => adds_held,
                        "remove" => removes_gone,
                        _ => done && removes_gone,
                    };
                    assert!(
                        !fully,
                        "failed ({code}) but the directory has it done: {}",
                        why()
                    );
                }
                _ => panic!("unexpected outcome: {}", why()),
            }
        }
        items.len()
    }
}
