//! Configuration: compiled-in defaults from `config/default.toml`, overridden by an optional file
//! named in `LICENSOR_CONFIG`, then by `LICENSOR_*` environment variables. Parsed once into
//! [`Settings`]; a bad value becomes a [`ConfigError`] that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../config/default.toml");

/// A configuration problem, printed as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}` ({env}): {reason}")]
pub struct ConfigError {
    pub key: String,
    pub env: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            env: env_name(key),
            reason: reason.into(),
        }
    }
}

/// The environment variable that overrides `key` (`worker.concurrency` → `LICENSOR_WORKER__CONCURRENCY`).
pub fn env_name(key: &str) -> String {
    format!("LICENSOR_{}", key.replace('.', "__").to_uppercase())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    listen: String,
    data_dir: PathBuf,
    database_url: String,
    queue_url: String,
    queue_name: String,
    secret_key: String,
    log: String,
    max_body_bytes: usize,
    api: ApiSettings,
    worker: WorkerSettings,
    directory: DirectoryTuning,
    sweeps: RawSweepSettings,
    jobs: JobSettings,
    webhooks: WebhookSettings,
}

/// Limits of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Requests per second one API token may make, sustained; 0 = no limit.
    pub rate_limit_per_second: u32,
    /// Requests one API token may make at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// Seconds an API request waits for the directory (its reads with their retries) before
    /// it is answered 503 `directory_unavailable`: the pickers, `POST /v1/jobs` and the CLI
    /// commands behind them do not sit silent for the workers' whole retry budget. 1–600.
    pub directory_wait_secs: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Settings::from_toml("")
            .map(|s| s.api)
            .unwrap_or(ApiSettings {
                rate_limit_per_second: 50,
                rate_limit_burst: 100,
                directory_wait_secs: 15,
            })
    }
}

/// When licensor's own periodic work runs: cron expressions with seconds
/// (`sec min hour day-of-month month day-of-week`), in UTC, as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweepSettings {
    started_seats: String,
    expiries: String,
    reconcile: String,
    member_keys: String,
}

/// When licensor's own periodic work runs, parsed when the configuration is loaded (a schedule
/// that is not a cron expression is a [`ConfigError`] naming its key, at start-up).
#[derive(Clone, PartialEq, Eq)]
pub struct SweepSettings {
    /// Start seats not started within 4 months of delivery and end seats past their end date.
    /// Also runs once when a worker starts, catching up after downtime.
    pub started_seats: cron::Schedule,
    /// Temporary assignments whose time is up become removal jobs.
    pub expiries: cron::Schedule,
    /// Jobs whose work went missing from the queue are queued again.
    pub reconcile: cron::Schedule,
    /// Members stored at least 30 s before get their member-history keys
    /// ([`crate::jobs::history::key_members`]).
    pub member_keys: cron::Schedule,
}

impl std::fmt::Debug for SweepSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepSettings")
            .field("started_seats", &self.started_seats.source())
            .field("expiries", &self.expiries.source())
            .field("reconcile", &self.reconcile.source())
            .field("member_keys", &self.member_keys.source())
            .finish()
    }
}

fn parse_schedule(key: &str, value: &str) -> Result<cron::Schedule, ConfigError> {
    value.trim().parse().map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "`{value}` is not a cron expression like \"0 0 3 * * *\" (sec min hour day month weekday): {e}"
            ),
        )
    })
}

impl RawSweepSettings {
    fn parse(&self) -> Result<SweepSettings, ConfigError> {
        Ok(SweepSettings {
            started_seats: parse_schedule("sweeps.started_seats", &self.started_seats)?,
            expiries: parse_schedule("sweeps.expiries", &self.expiries)?,
            reconcile: parse_schedule("sweeps.reconcile", &self.reconcile)?,
            member_keys: parse_schedule("sweeps.member_keys", &self.member_keys)?,
        })
    }
}

impl Default for SweepSettings {
    /// The compiled-in schedules of `config/default.toml`.
    fn default() -> Self {
        Settings::from_toml("")
            .expect("the compiled-in configuration is valid")
            .sweeps
    }
}

/// How group license jobs are cut into work: chunk size, parallel lanes per job, leases and
/// retries of items.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Members a worker takes at once from a job (one queue message each).
    pub chunk_size: usize,
    /// Chunks of one job on the queue at once; other jobs' work queues between them, so a huge
    /// job does not hold up a small one.
    pub lanes_per_job: usize,
    /// Seconds a worker holds the members it took; renewed while it works. A dead worker's
    /// members go to another after this.
    pub lease_secs: u64,
    /// Tries of a member whose directory call keeps failing transiently before it fails.
    pub item_max_attempts: i32,
    /// Most jobs one bulk rerun or cancel (`POST /v1/jobs/rerun`, `/v1/jobs/cancel` with a
    /// filter) may act on; a filter matching more is refused with 422 `too_many_jobs`.
    pub bulk_max_jobs: u64,
    /// Seconds without progress after which a queued or running job is queued again.
    pub stall_secs: u64,
    /// Seconds a running job may go without progress (no page of members stored, no chunk
    /// recorded) before it is flagged stuck: `stuck: true` in the API, "Stuck" in the Job
    /// Monitor, counted by the `licensor_jobs_stuck` gauge.
    pub stuck_after_secs: u64,
    /// Seconds a preview stays fresh: launching an older one reads the groups again instead of
    /// using the members the preview found.
    pub preview_max_age_secs: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Settings::from_toml("")
            .map(|s| s.jobs)
            .unwrap_or(JobSettings {
                chunk_size: 500,
                lanes_per_job: 4,
                lease_secs: 60,
                item_max_attempts: 10,
                bulk_max_jobs: 10_000,
                stall_secs: 60,
                stuck_after_secs: 600,
                preview_max_age_secs: 900,
            })
    }
}

/// How licensor treats a tenant's directory (Microsoft Graph): concurrency, retries, pacing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryTuning {
    pub max_in_flight: usize,
    pub request_timeout_secs: u64,
    pub retry_max_attempts: usize,
    pub retry_min_delay_ms: u64,
    pub retry_max_delay_ms: u64,
    pub retry_max_total_secs: u64,
    /// No longer used (the write budget is learned, not approached by rate); still accepted.
    pub initial_write_rate: f64,
    /// Ceiling on writes per second to one tenant's directory, whatever its budget allows.
    pub max_write_rate: f64,
    /// Share of the directory's learned write budget to fill, in percent (50–100).
    pub target_throttle_percent: f64,
    /// Export uploads to a drive: one request up to this size in bytes, an upload session above.
    pub drive_simple_upload_max_bytes: u64,
    /// Bytes per upload-session chunk: a multiple of 327,680 (320 KiB), at most 60 MiB (Graph).
    pub drive_upload_chunk_bytes: u64,
}

impl Default for DirectoryTuning {
    fn default() -> Self {
        Settings::from_toml("")
            .map(|s| s.directory)
            .unwrap_or(DirectoryTuning {
                max_in_flight: 16,
                request_timeout_secs: 30,
                retry_max_attempts: 8,
                retry_min_delay_ms: 200,
                retry_max_delay_ms: 30_000,
                retry_max_total_secs: 300,
                initial_write_rate: 20.0,
                max_write_rate: 100_000.0,
                target_throttle_percent: 100.0,
                drive_simple_upload_max_bytes: 4_194_304,
                drive_upload_chunk_bytes: 3_276_800,
            })
    }
}

/// Webhook deliveries (`[webhooks]`): where they may go, how long one attempt may take and the
/// retry schedule ([`crate::webhooks::retry_delay`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Hosts (names or IP addresses, as written in the URL) that endpoints may reach over plain
    /// `http://`; every other endpoint must be `https://`. A TOML list, or in the environment a
    /// comma-separated list.
    #[serde(deserialize_with = "string_list")]
    pub allow_http_hosts: Vec<String>,
    /// Seconds one delivery attempt may take, connection included.
    pub timeout_secs: u64,
    /// The first retry's delay in milliseconds; later ones are multiples of it (5 s → 30 s,
    /// 2 min, 10 min, 30 min, 1 h, then every 2 h), each jittered by ±20 %.
    pub retry_base_ms: u64,
    /// Seconds after an event (or a redeliver) during which failed attempts are retried.
    pub retry_for_secs: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Settings::from_toml("")
            .map(|s| s.webhooks)
            .unwrap_or(WebhookSettings {
                allow_http_hosts: Vec::new(),
                timeout_secs: 10,
                retry_base_ms: 5_000,
                retry_for_secs: 86_400,
            })
    }
}

/// A list of strings, given as a list or as one comma-separated string (environment variables).
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    let items = match List::deserialize(d)? {
        List::Many(items) => items,
        List::One(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Messages a worker process handles at once (its places); unset, it depends on the
    /// database: see [`Settings::worker_places`].
    #[serde(default)]
    pub concurrency: Option<usize>,
    pub heartbeat_secs: u64,
    pub missed_heartbeats: usize,
    pub shutdown_grace_secs: u64,
    /// Where a worker-only process (`licensor worker`) serves `GET /metrics` (and `/healthz`)
    /// for Prometheus, e.g. `0.0.0.0:9100`; empty = not served. Processes that serve the API
    /// export their metrics on the API's `/metrics`.
    pub metrics_listen: String,
}

impl WorkerSettings {
    /// The parsed `metrics_listen` address, `None` when empty.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.metrics_listen.trim() {
            "" => Ok(None),
            addr => addr.parse().map(Some).map_err(|_| {
                ConfigError::new(
                    "worker.metrics_listen",
                    format!("`{addr}` is not an address like 0.0.0.0:9100"),
                )
            }),
        }
    }
}

/// Where licensor keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    /// The URL with any password replaced, for messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_url(url),
        }
    }
}

/// Where the job queue lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueUrl {
    Sqlite(PathBuf),
    Redis(String),
}

impl QueueUrl {
    pub fn redacted(&self) -> String {
        match self {
            QueueUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            QueueUrl::Redis(url) => redact_url(url),
        }
    }
}

/// The parsed, validated configuration.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseUrl,
    pub queue: QueueUrl,
    pub queue_name: String,
    /// Base64 key from configuration; `None` = use or create `<data_dir>/secret.key`.
    pub secret_key: Option<String>,
    pub log: String,
    pub max_body_bytes: usize,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub directory: DirectoryTuning,
    pub sweeps: SweepSettings,
    pub jobs: JobSettings,
    pub webhooks: WebhookSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &self.database.redacted())
            .field("queue", &self.queue.redacted())
            .field("queue_name", &self.queue_name)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<set>"))
            .field("log", &self.log)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("api", &self.api)
            .field("worker", &self.worker)
            .field("directory", &self.directory)
            .field("sweeps", &self.sweeps)
            .field("jobs", &self.jobs)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

/// A worker process's places ([`Settings::worker_places`]) with the embedded database.
pub const EMBEDDED_WORKER_PLACES: usize = 32;
/// A worker process's places ([`Settings::worker_places`]) with PostgreSQL: as many as the
/// worker's connections to the database (`db::connect`'s pool for workers).
pub const POSTGRES_WORKER_PLACES: usize = 16;

impl Settings {
    /// How many queue messages a worker process handles at once: `worker.concurrency` when set,
    /// else [`EMBEDDED_WORKER_PLACES`] (32) on the embedded database and
    /// [`POSTGRES_WORKER_PLACES`] (16) on PostgreSQL. A step mostly waits — for the database
    /// (on the embedded one, for its file's one write lock), for the directory's answers, for a
    /// tenant's write budget — holding its place meanwhile. With 500 tenants at once
    /// (`licensor-bench --scenario msp`), 32 places gave each tenant a larger share of its
    /// budget than 8 on the embedded database in each of three alternated pairs of runs; on
    /// PostgreSQL + Redis with two workers, 16 places per worker gave a higher median share
    /// than 8 in four runs against seven the same hour, and none of the four collapsed as one
    /// of the seven did (README, "Benchmarks").
    pub fn worker_places(&self) -> usize {
        self.worker.concurrency.unwrap_or(match self.database {
            DatabaseUrl::Sqlite(_) => EMBEDDED_WORKER_PLACES,
            DatabaseUrl::Postgres(_) => POSTGRES_WORKER_PLACES,
        })
    }

    /// Load defaults, then `LICENSOR_CONFIG` (if set), then `LICENSOR_*` variables.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_with("")
    }

    /// As [`Settings::load`], with `overrides` (TOML, e.g. from command-line flags) on top.
    pub fn load_with(overrides: &str) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Ok(path) = std::env::var("LICENSOR_CONFIG") {
            if !Path::new(&path).is_file() {
                return Err(ConfigError {
                    key: "config".into(),
                    env: "LICENSOR_CONFIG".into(),
                    reason: format!("file {path} does not exist"),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        let figment = figment.merge(
            Env::prefixed("LICENSOR_")
                .ignore(&[
                    "CONFIG",
                    "URL",
                    "TOKEN",
                    "TEST_DATABASE_URL",
                    "TEST_REDIS_URL",
                    "TEST_LOG",
                    "SCHEMATHESIS_EXAMPLES",
                ])
                .split("__"),
        );
        Self::from_figment(figment.merge(Toml::string(overrides)))
    }

    /// Defaults only (plus `overrides` as TOML), ignoring the environment: for tests and tools.
    pub fn from_toml(overrides: &str) -> Result<Settings, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(overrides)))
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let raw: RawSettings = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let key = if key.is_empty() {
                match &e.kind {
                    figment::error::Kind::UnknownField(f, _) => f.clone(),
                    figment::error::Kind::MissingField(f) => f.to_string(),
                    _ => "config".into(),
                }
            } else {
                key
            };
            let reason = match &e.kind {
                figment::error::Kind::UnknownField(f, _) => format!("unknown key `{f}`"),
                other => other.to_string(),
            };
            ConfigError::new(&key, reason)
        })?;
        raw.validate()
    }
}

impl RawSettings {
    fn validate(self) -> Result<Settings, ConfigError> {
        let listen: SocketAddr = self.listen.trim().parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", self.listen),
            )
        })?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        let database = parse_database_url(self.database_url.trim(), &self.data_dir)?;
        let queue = parse_queue_url(self.queue_url.trim(), &self.data_dir)?;
        if self.queue_name.is_empty()
            || !self
                .queue_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
        {
            return Err(ConfigError::new(
                "queue_name",
                "must be letters, digits, `-`, `_`, `:` or `.`",
            ));
        }
        let secret_key = match self.secret_key.trim() {
            "" => None,
            key => {
                crate::crypto::SecretBox::from_base64(key)
                    .map_err(|reason| ConfigError::new("secret_key", reason))?;
                Some(key.to_owned())
            }
        };
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1024"));
        }
        let a = &self.api;
        if a.rate_limit_per_second > 1_000_000 {
            return Err(ConfigError::new(
                "api.rate_limit_per_second",
                "must be between 0 (no limit) and 1000000",
            ));
        }
        if a.rate_limit_per_second > 0 && !(1..=1_000_000).contains(&a.rate_limit_burst) {
            return Err(ConfigError::new(
                "api.rate_limit_burst",
                "must be between 1 and 1000000 while api.rate_limit_per_second is set",
            ));
        }
        if !(1..=600).contains(&a.directory_wait_secs) {
            return Err(ConfigError::new(
                "api.directory_wait_secs",
                "must be between 1 and 600",
            ));
        }
        let w = &self.worker;
        if w.concurrency.is_some_and(|c| c == 0 || c > 1024) {
            return Err(ConfigError::new(
                "worker.concurrency",
                "must be between 1 and 1024",
            ));
        }
        if w.heartbeat_secs == 0 {
            return Err(ConfigError::new(
                "worker.heartbeat_secs",
                "must be at least 1",
            ));
        }
        if w.missed_heartbeats == 0 {
            return Err(ConfigError::new(
                "worker.missed_heartbeats",
                "must be at least 1",
            ));
        }
        w.metrics_addr()?;
        let d = &self.directory;
        if d.max_in_flight == 0 || d.max_in_flight > 1024 {
            return Err(ConfigError::new(
                "directory.max_in_flight",
                "must be between 1 and 1024",
            ));
        }
        if d.request_timeout_secs == 0 {
            return Err(ConfigError::new(
                "directory.request_timeout_secs",
                "must be at least 1",
            ));
        }
        if d.retry_min_delay_ms == 0 || d.retry_min_delay_ms > d.retry_max_delay_ms {
            return Err(ConfigError::new(
                "directory.retry_min_delay_ms",
                "must be at least 1 and at most directory.retry_max_delay_ms",
            ));
        }
        if !(d.initial_write_rate > 0.0 && d.initial_write_rate <= d.max_write_rate) {
            return Err(ConfigError::new(
                "directory.initial_write_rate",
                "must be above 0 and at most directory.max_write_rate",
            ));
        }
        if !(50.0..=100.0).contains(&d.target_throttle_percent) {
            return Err(ConfigError::new(
                "directory.target_throttle_percent",
                "must be between 50 and 100",
            ));
        }
        let chunk = d.drive_upload_chunk_bytes;
        if chunk == 0 || !chunk.is_multiple_of(327_680) || chunk > 60 * 1024 * 1024 {
            return Err(ConfigError::new(
                "directory.drive_upload_chunk_bytes",
                "must be a multiple of 327680 (320 KiB) and at most 62914560 (60 MiB)",
            ));
        }
        if d.drive_simple_upload_max_bytes > 250 * 1024 * 1024 {
            return Err(ConfigError::new(
                "directory.drive_simple_upload_max_bytes",
                "must be at most 262144000 (250 MiB)",
            ));
        }
        let sweeps = self.sweeps.parse()?;
        let j = &self.jobs;
        if !(1..=5000).contains(&j.chunk_size) {
            return Err(ConfigError::new(
                "jobs.chunk_size",
                "must be between 1 and 5000",
            ));
        }
        if !(1..=256).contains(&j.lanes_per_job) {
            return Err(ConfigError::new(
                "jobs.lanes_per_job",
                "must be between 1 and 256",
            ));
        }
        if j.lease_secs < 5 {
            return Err(ConfigError::new("jobs.lease_secs", "must be at least 5"));
        }
        if j.item_max_attempts < 1 {
            return Err(ConfigError::new(
                "jobs.item_max_attempts",
                "must be at least 1",
            ));
        }
        if !(1..=100_000).contains(&j.bulk_max_jobs) {
            return Err(ConfigError::new(
                "jobs.bulk_max_jobs",
                "must be between 1 and 100000",
            ));
        }
        if j.stall_secs < 5 {
            return Err(ConfigError::new("jobs.stall_secs", "must be at least 5"));
        }
        let h = &self.webhooks;
        if !(1..=300).contains(&h.timeout_secs) {
            return Err(ConfigError::new(
                "webhooks.timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(10..=3_600_000).contains(&h.retry_base_ms) {
            return Err(ConfigError::new(
                "webhooks.retry_base_ms",
                "must be between 10 and 3600000",
            ));
        }
        if !(1..=7 * 86_400).contains(&h.retry_for_secs) {
            return Err(ConfigError::new(
                "webhooks.retry_for_secs",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        if let Some(bad) = h
            .allow_http_hosts
            .iter()
            .find(|host| host.contains(['/', '@', ' ', '?', '#']))
        {
            return Err(ConfigError::new(
                "webhooks.allow_http_hosts",
                format!("`{bad}` is not a host name or IP address"),
            ));
        }
        if !(1..=604_800).contains(&j.stuck_after_secs) {
            return Err(ConfigError::new(
                "jobs.stuck_after_secs",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        Ok(Settings {
            listen,
            data_dir: self.data_dir,
            database,
            queue,
            queue_name: self.queue_name,
            secret_key,
            log: self.log,
            max_body_bytes: self.max_body_bytes,
            api: self.api,
            worker: self.worker,
            directory: self.directory,
            sweeps,
            jobs: self.jobs,
            webhooks: self.webhooks,
        })
    }
}

fn parse_database_url(url: &str, data_dir: &Path) -> Result<DatabaseUrl, ConfigError> {
    if url.is_empty() {
        return Ok(DatabaseUrl::Sqlite(data_dir.join("licensor.db")));
    }
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Ok(DatabaseUrl::Sqlite(data_dir.join("licensor.db")));
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, h)| h))
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('/') {
            return Err(ConfigError::new(
                "database_url",
                "PostgreSQL URL has no host",
            ));
        }
        return Ok(DatabaseUrl::Postgres(url.to_owned()));
    }
    Err(ConfigError::new(
        "database_url",
        format!("`{}` is neither postgres://… nor sqlite:…", redact_url(url)),
    ))
}

fn parse_queue_url(url: &str, data_dir: &Path) -> Result<QueueUrl, ConfigError> {
    if url.is_empty() || url == "sqlite:" || url == "sqlite://" {
        return Ok(QueueUrl::Sqlite(data_dir.join("queue.db")));
    }
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(QueueUrl::Sqlite(PathBuf::from(
            rest.split('?').next().unwrap_or(rest),
        )));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(QueueUrl::Redis(url.to_owned()));
    }
    Err(ConfigError::new(
        "queue_url",
        format!("`{}` is neither redis://… nor sqlite:…", redact_url(url)),
    ))
}

/// Replace the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{userinfo}@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_setup() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            s.database,
            DatabaseUrl::Sqlite(PathBuf::from("./licensor-data/licensor.db"))
        );
        assert_eq!(
            s.queue,
            QueueUrl::Sqlite(PathBuf::from("./licensor-data/queue.db"))
        );
        assert!(s.secret_key.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Settings::from_toml(r#"listen = "nowhere""#).unwrap_err();
        assert_eq!(e.key, "listen");
        assert_eq!(e.env, "LICENSOR_LISTEN");
        let e = Settings::from_toml(r#"database_url = "mysql://x""#).unwrap_err();
        assert_eq!(e.key, "database_url");
        let e = Settings::from_toml("[worker]\nconcurrency = \"many\"").unwrap_err();
        assert_eq!(e.key, "worker.concurrency");
        assert_eq!(e.env, "LICENSOR_WORKER__CONCURRENCY");
        let e = Settings::from_toml(r#"colour = "blue""#).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Settings::from_toml(r#"secret_key = "short""#).unwrap_err();
        assert_eq!(e.key, "secret_key");
        let e = Settings::from_toml("[api]\nrate_limit_burst = 0").unwrap_err();
        assert_eq!(e.key, "api.rate_limit_burst");
        assert_eq!(e.env, "LICENSOR_API__RATE_LIMIT_BURST");
        for wait in ["0", "601"] {
            let e =
                Settings::from_toml(&format!("[api]\ndirectory_wait_secs = {wait}")).unwrap_err();
            assert_eq!(e.key, "api.directory_wait_secs");
            assert_eq!(e.env, "LICENSOR_API__DIRECTORY_WAIT_SECS");
        }
        let e = Settings::from_toml("[api]\nrate_limit_per_second = -1").unwrap_err();
        assert_eq!(e.key, "api.rate_limit_per_second");
        let s =
            Settings::from_toml("[api]\nrate_limit_per_second = 0\nrate_limit_burst = 0").unwrap();
        assert_eq!(s.api.rate_limit_per_second, 0, "0 turns the limit off");
        let e = Settings::from_toml("[sweeps]\nstarted_seats = \"every day\"").unwrap_err();
        assert_eq!(e.key, "sweeps.started_seats");
        assert_eq!(e.env, "LICENSOR_SWEEPS__STARTED_SEATS");
        let e = Settings::from_toml("[webhooks]\ntimeout_secs = 0").unwrap_err();
        assert_eq!(e.env, "LICENSOR_WEBHOOKS__TIMEOUT_SECS");
    }

    #[test]
    fn schedules_are_parsed_at_load_and_a_bad_one_names_its_key() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.sweeps.started_seats.source(), "0 0 3 * * *");
        assert_eq!(s.sweeps.expiries.source(), "0 * * * * *");
        assert_eq!(s.sweeps.reconcile.source(), "*/15 * * * * *");
        assert_eq!(s.sweeps.member_keys.source(), "*/5 * * * * *");
        assert_eq!(SweepSettings::default(), s.sweeps);
        let s = Settings::from_toml("[sweeps]\nexpiries = \" * * * * * * \"").unwrap();
        assert_eq!(s.sweeps.expiries.source(), "* * * * * *");
        for key in ["started_seats", "expiries", "reconcile", "member_keys"] {
            let e =
                Settings::from_toml(&format!("[sweeps]\n{key} = \"61 * * * * *\"")).unwrap_err();
            assert_eq!(e.key, format!("sweeps.{key}"));
            assert_eq!(e.env, format!("LICENSOR_SWEEPS__{}", key.to_uppercase()));
            assert!(e.reason.contains("`61 * * * * *`"), "{e}");
            assert!(e.to_string().contains("is not a cron expression"), "{e}");
        }
    }

    #[test]
    fn webhook_http_hosts_take_a_list_or_commas() {
        let s = Settings::from_toml("").unwrap();
        assert!(s.webhooks.allow_http_hosts.is_empty());
        let s =
            Settings::from_toml("[webhooks]\nallow_http_hosts = [\"127.0.0.1\", \"LocalHost\"]")
                .unwrap();
        assert_eq!(s.webhooks.allow_http_hosts, ["127.0.0.1", "localhost"]);
        let s = Settings::from_toml("[webhooks]\nallow_http_hosts = \"127.0.0.1, hooks.internal\"")
            .unwrap();
        assert_eq!(s.webhooks.allow_http_hosts, ["127.0.0.1", "hooks.internal"]);
        let e = Settings::from_toml("[jobs]\nstuck_after_secs = 0").unwrap_err();
        assert_eq!(e.key, "jobs.stuck_after_secs");
        assert_eq!(e.env, "LICENSOR_JOBS__STUCK_AFTER_SECS");
        let e = Settings::from_toml("[worker]\nmetrics_listen = \"nine\"").unwrap_err();
        assert_eq!(e.key, "worker.metrics_listen");
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.jobs.stuck_after_secs, 600);
        assert_eq!(s.worker.metrics_addr().unwrap(), None);
    }

    #[test]
    fn queue_and_database_urls() {
        let s = Settings::from_toml(
            "database_url = \"postgres://app:hunter2@db:5432/licensor\"\nqueue_url = \"redis://cache:6379\"",
        )
        .unwrap();
        assert_eq!(s.database.redacted(), "postgres://app:***@db:5432/licensor");
        assert_eq!(s.queue, QueueUrl::Redis("redis://cache:6379".into()));
        assert!(!format!("{s:?}").contains("hunter2"));
        let s = Settings::from_toml("queue_url = \"sqlite:\"").unwrap();
        assert!(matches!(s.queue, QueueUrl::Sqlite(_)));
    }

    #[test]
    fn worker_places_depend_on_the_database_unless_set() {
        let pg = "database_url = \"postgres://db/licensor\"\nqueue_url = \"redis://cache\"\n";
        let places = |toml: &str| Settings::from_toml(toml).unwrap().worker_places();
        assert_eq!(places(""), EMBEDDED_WORKER_PLACES);
        assert_eq!(places(pg), POSTGRES_WORKER_PLACES);
        assert_eq!(places("[worker]\nconcurrency = 4"), 4);
        assert_eq!(places(&format!("{pg}[worker]\nconcurrency = 48")), 48);
        for bad in ["0", "1025"] {
            let e = Settings::from_toml(&format!("[worker]\nconcurrency = {bad}")).unwrap_err();
            assert_eq!(e.key, "worker.concurrency", "{bad}");
        }
    }
}
