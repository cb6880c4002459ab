//! One entry point for every way licensor runs: `serve` (API), `worker`, `demo` (both), and the
//! tests, which start the real thing on port 0 with their own database and queue.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use licensor_core::config::{ConfigError, DatabaseUrl, Settings};
use licensor_core::crypto::SecretBox;
use licensor_core::db::{self, Db};
use licensor_core::queue::{Queue, QueueOptions};
use licensor_workers::{WorkerContext, WorkerEvent, WorkerOptions};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::api::{self, AppState};

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

impl Roles {
    pub const API: Roles = Roles {
        api: true,
        worker: false,
    };
    pub const WORKER: Roles = Roles {
        api: false,
        worker: true,
    };
    pub const ALL: Roles = Roles {
        api: true,
        worker: true,
    };
}

/// A start-up failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Other(String),
}

/// The instance's key for secrets at rest: configured, or (embedded default only) kept in the
/// data directory.
pub fn secret_box(settings: &Settings) -> Result<SecretBox, ConfigError> {
    match &settings.secret_key {
        Some(key) => SecretBox::from_base64(key).map_err(|r| ConfigError::new("secret_key", r)),
        None if matches!(settings.database, DatabaseUrl::Postgres(_)) => Err(ConfigError::new(
            "secret_key",
            "must be set when the database is PostgreSQL, so every process can read the stored secrets (e.g. `openssl rand -base64 32`)",
        )),
        None => {
            let path = settings.data_dir.join("secret.key");
            SecretBox::load_or_create(&path).map_err(|e| {
                ConfigError::new("secret_key", format!("cannot use {}: {e}", path.display()))
            })
        }
    }
}

/// Connect to the database and apply migrations.
pub async fn open_database(settings: &Settings) -> Result<Db, StartError> {
    let db = db::connect(&settings.database).await?;
    db::migrate(&db).await.map_err(|e| {
        StartError::Other(format!(
            "migrating {} failed: {}",
            settings.database.redacted(),
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ))
    })?;
    Ok(db)
}

/// A built, not yet running, licensor process.
pub struct Application {
    settings: Settings,
    roles: Roles,
    db: Db,
    /// The API's own pool on PostgreSQL (short connection wait, see [`db::PoolRole::Api`]);
    /// on SQLite the one pool serves both.
    api_db: Db,
    /// A worker process's heartbeat pool (one connection, see [`db::PoolRole::Heartbeat`]).
    heartbeat_db: Option<Db>,
    queue: Queue,
    secrets: SecretBox,
    listener: Option<TcpListener>,
    /// A worker-only process's `/metrics` listener (`worker.metrics_listen`).
    metrics_listener: Option<TcpListener>,
    events: broadcast::Sender<WorkerEvent>,
}

impl Application {
    /// Connect, migrate, bind. Nothing is served until [`Application::run_until`].
    pub async fn build(settings: Settings, roles: Roles) -> Result<Application, StartError> {
        let secrets = secret_box(&settings)?;
        let db = open_database(&settings).await?;
        let api_db = match &settings.database {
            licensor_core::config::DatabaseUrl::Postgres(_) if roles.api => {
                db::connect_as(&settings.database, db::PoolRole::Api).await?
            }
            _ => db.clone(),
        };
        let heartbeat_db = if roles.worker {
            Some(db::connect_as(&settings.database, db::PoolRole::Heartbeat).await?)
        } else {
            None
        };
        let queue = Queue::connect(&settings.queue, QueueOptions::from_settings(&settings)).await?;
        let listener = if roles.api {
            Some(TcpListener::bind(settings.listen).await.map_err(|e| {
                ConfigError::new(
                    "listen",
                    format!("cannot listen on {}: {e}", settings.listen),
                )
            })?)
        } else {
            None
        };
        let metrics_listener = match settings.worker.metrics_addr()? {
            Some(addr) if roles.worker && !roles.api => {
                Some(TcpListener::bind(addr).await.map_err(|e| {
                    ConfigError::new(
                        "worker.metrics_listen",
                        format!("cannot listen on {addr}: {e}"),
                    )
                })?)
            }
            _ => None,
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Application {
            settings,
            roles,
            db,
            api_db,
            heartbeat_db,
            queue,
            secrets,
            listener,
            metrics_listener,
            events,
        })
    }

    /// The address the API listens on (port 0 resolved), if this process serves the API.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// The address a worker-only process serves `/metrics` on (`worker.metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Worker events (for observers: tests, the demo's greeting).
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// Serve until `shutdown` resolves, then stop taking work and drain within the grace period.
    pub async fn run_until<S>(self, shutdown: S) -> anyhow::Result<()>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let mut tasks = tokio::task::JoinSet::new();
        // One directory client per tenant for the whole process: API and workers share its
        // token and its write pacing.
        let directory = licensor_core::directory::DirectoryClients::new(
            self.settings.directory.clone(),
            self.secrets.clone(),
        );
        let webhooks = licensor_core::webhooks::Webhooks::new(
            self.settings.webhooks.clone(),
            self.secrets.clone(),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(listener) = self.listener {
            let state = AppState {
                db: self.api_db.clone(),
                queue: self.queue.clone(),
                secrets: self.secrets.clone(),
                metrics: crate::telemetry::metrics_handle(),
                openapi: Arc::new(Default::default()),
                directory: directory.clone(),
                jobs: self.settings.jobs.clone(),
                webhooks: webhooks.clone(),
                rate_limit: api::rate_limit::TokenRateLimiter::from_settings(&self.settings.api)
                    .map(Arc::new),
                directory_wait: std::time::Duration::from_secs(
                    self.settings.api.directory_wait_secs,
                ),
            };
            let app = api::router(state, self.settings.max_body_bytes);
            let signal = stopped(stop_rx.clone());
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
                    .map_err(anyhow::Error::from)
            });
        }
        if let Some(listener) = self.metrics_listener {
            // This process's own metrics (its workers' items, directory calls, leases); the
            // database-wide gauges are the API's.
            let app = crate::api::health::worker_metrics_router();
            let signal = stopped(stop_rx.clone());
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
                    .map_err(anyhow::Error::from)
            });
        }
        if self.roles.worker {
            let options = WorkerOptions {
                sweeps: self.settings.sweeps.clone(),
                heartbeat: licensor_workers::heartbeat::HeartbeatOptions {
                    every: Duration::from_secs(self.settings.worker.heartbeat_secs),
                    missed: u32::try_from(self.settings.worker.missed_heartbeats)
                        .unwrap_or(u32::MAX),
                    embedded: matches!(self.settings.database, DatabaseUrl::Sqlite(_)),
                    db: self.heartbeat_db.clone(),
                },
                ..WorkerOptions::new(
                    self.settings.worker_places(),
                    Duration::from_secs(self.settings.worker.shutdown_grace_secs),
                )
            };
            let turns = licensor_core::jobs::writer::Turns::new(options.name.clone());
            let ctx = WorkerContext {
                watched: licensor_workers::watch::Watched::new(self.db.clone(), turns.clone()),
                turns,
                db: self.db.clone(),
                queue: self.queue.clone(),
                own_queue: self.queue.own(&options.name),
                name: options.name.clone(),
                events: self.events.clone(),
                directory: directory.clone(),
                jobs: self.settings.jobs.clone(),
                leases: Default::default(),
                lanes: Default::default(),
                webhooks: webhooks.clone(),
                stopping: Default::default(),
            };
            let signal = stopped(stop_rx.clone());
            tasks.spawn(licensor_workers::run(ctx, options, signal));
        }
        let mut outcome = Ok(());
        while let Some(done) = tasks.join_next().await {
            let result = done.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = result {
                tracing::error!(error = %e, "a component stopped with an error");
                outcome = Err(e);
            }
        }
        outcome
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stopping");
}
