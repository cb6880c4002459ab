//! A local Microsoft Graph v1.0 stand-in: token endpoint, directory reads, license writes,
//! JSON batching, throttling and fault injection, plus a control API for tests.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let emu = graph_emulator::spawn(graph_emulator::EmulatorConfig::default()).await?;
//! println!("Graph at {}, token at {}", emu.graph_url(), emu.token_url());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod control;
mod directory;
mod drives;
mod error;
mod faults;
mod graph;
mod scenario;
mod state;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::Request;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;
use tower::ServiceExt;

pub use faults::{Budget, Faults};
pub use scenario::{
    ENTERPRISEPACK_SKU_ID, EXCHANGESTANDARD_SKU_ID, FieldError, GroupSpec, SPE_E5_SKU_ID, Scenario,
    ServicePlanSpec, SkuSpec, TenantSet, from_json, parse_scenarios,
};

use crate::state::AppState;

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to listen on; default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// The default tenant's directory; `None` serves [`Scenario::demo`].
    pub scenario: Option<Scenario>,
    /// Further tenants served by the same process, each with its own directory, app
    /// registration, budgets and statistics (see [`TenantSet::expand`] to make many from one
    /// template). Tenant ids and domains must all differ. Default none.
    pub more_tenants: Vec<Scenario>,
    /// Faults and budgets every tenant starts with (and returns to on reset).
    pub faults: Faults,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scenario: None,
            more_tenants: Vec::new(),
            faults: Faults::default(),
        }
    }
}

/// One served tenant's identity and app registration, as a client needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCredentials {
    /// Directory (tenant) id, lowercase GUID.
    pub tenant_id: String,
    /// Initial domain, e.g. `contoso-2.onmicrosoft.com`.
    pub domain: String,
    pub client_id: String,
    pub client_secret: String,
}

/// A running emulator. Dropping it without [`EmulatorHandle::shutdown`] leaves it serving until
/// the runtime ends.
pub struct EmulatorHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn router(state: Arc<AppState>) -> Router {
    let graph = graph::routes(state.clone());
    let control = Router::new()
        .route(
            "/_emulator/scenario",
            get(control::get_scenario).post(control::put_scenario),
        )
        .route(
            "/_emulator/faults",
            get(control::get_faults).put(control::put_faults),
        )
        .route("/_emulator/tenants", get(control::tenants))
        .route("/_emulator/stats", get(control::stats))
        .route("/_emulator/reset", post(control::reset))
        .route("/_emulator/users", get(control::users))
        .route(
            "/_emulator/users/{id}",
            get(control::user)
                .patch(control::patch_user)
                .delete(control::delete_user),
        )
        .route(
            "/_emulator/users/{id}/licenses",
            post(control::change_user_licenses),
        )
        .route(
            "/_emulator/skus/{id}",
            axum::routing::patch(control::patch_sku),
        );
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_route))
        .merge(graph)
        .merge(control)
        .merge(drives::other_routes())
        .with_state(state)
}

async fn token_route(
    st: axum::extract::State<Arc<AppState>>,
    path: axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let tenants = st.0.tenants();
    let counted = tenants
        .find(&path.0)
        .unwrap_or_else(|| tenants.default_tenant())
        .clone();
    drop(tenants);
    let res = token::token(st, path, headers, body).await;
    counted.stats.record(
        "POST /{tenant}/oauth2/v2.0/token".into(),
        res.status().as_u16(),
    );
    res
}

/// Start an emulator on `config.listen`.
pub async fn spawn(config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    config
        .faults
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid faults: {e}"))?;
    let mut scenarios = vec![config.scenario.unwrap_or_else(Scenario::demo)];
    scenarios.extend(config.more_tenants);
    let tenants = control::build_tenants(scenarios, config.faults.clone())
        .await
        .map_err(|e| anyhow::anyhow!("invalid scenario: {e}"))?;
    let state = Arc::new(AppState::new(tenants, config.faults));
    let app = router(state.clone());
    let _ = state.router.set(app.clone());

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let st = state.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                acc = listener.accept() => {
                    let Ok((stream, _)) = acc else { continue };
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let st = st.clone();
                    let mut stop_conn = stopped.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let app = app.clone();
                            let st = st.clone();
                            async move {
                                let mut lose = false;
                                let graph = req.uri().path().starts_with("/v1.0")
                                    || req.uri().path().contains("/oauth2/");
                                if graph {
                                    let auth = req
                                        .headers()
                                        .get(hyper::header::AUTHORIZATION)
                                        .and_then(|v| v.to_str().ok());
                                    let tenant = st.tenant_hint(auth, req.uri().path());
                                    let (drop, lost, delay) = tenant.roll_connection();
                                    if !delay.is_zero() {
                                        tokio::time::sleep(delay).await;
                                    }
                                    if drop {
                                        tenant.stats.dropped_connections.fetch_add(1, Ordering::Relaxed);
                                        return Err(DroppedConnection);
                                    }
                                    if lost {
                                        tenant.stats.lost_answers.fetch_add(1, Ordering::Relaxed);
                                        lose = true;
                                    }
                                }
                                let req = req.map(axum::body::Body::new);
                                let answer = match app.oneshot(req).await {
                                    Ok(r) => r,
                                    Err(never) => match never {},
                                };
                                // Carried out, then the answer is lost.
                                if lose {
                                    return Err(DroppedConnection);
                                }
                                Ok(answer)
                            }
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop_conn.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    });
    Ok(EmulatorHandle {
        addr,
        state,
        stop,
        task,
    })
}

/// A connection the emulator closes without answering (fault injection).
#[derive(Debug)]
struct DroppedConnection;

impl std::fmt::Display for DroppedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DroppedConnection {}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`: serves the token endpoint, `/v1.0` and `/_emulator`.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        // Listening on every interface: loopback reaches it.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// The default tenant's token endpoint.
    pub fn token_url(&self) -> String {
        self.token_url_of(&self.directory_tenant_id())
    }

    /// The token endpoint of a tenant (by id or domain), as Microsoft's
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub fn token_url_of(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// The default tenant's id.
    pub fn directory_tenant_id(&self) -> String {
        self.state.default_tenant().id.clone()
    }

    /// The default tenant's app registration.
    pub fn client_id(&self) -> String {
        self.state.default_tenant().dir().client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.state.default_tenant().dir().client_secret.clone()
    }

    /// Every served tenant, the default one first.
    pub fn tenants(&self) -> Vec<TenantCredentials> {
        self.state
            .tenants()
            .list
            .iter()
            .map(|t| {
                let dir = t.dir();
                TenantCredentials {
                    tenant_id: t.id.clone(),
                    domain: dir.domain.clone(),
                    client_id: dir.client_id.clone(),
                    client_secret: dir.client_secret.clone(),
                }
            })
            .collect()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, finish in-flight requests, and wait for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
