//! A local Microsoft Graph v1.0 stand-in: token endpoint, directory reads, license writes,
//! JSON batching, throttling and fault injection, plus a control API for tests.

mod faults;
mod scenario;

use std::net::SocketAddr;

use axum::{
    Json, Router,
    routing::{get, post},
};

pub use faults::{Budget, Faults};
pub use scenario::{GroupSpec, Scenario, ServicePlanSpec, SkuSpec};

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub scenario: Option<Scenario>,
    pub faults: Faults,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scenario: None,
            faults: Faults::default(),
        }
    }
}

/// A running emulator.
pub struct EmulatorHandle {
    base: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn spawn(config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    let scenario = config.scenario.unwrap_or_else(Scenario::demo);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(|| async {
            Json(serde_json::json!({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"x.y.z"}))
        }))
        .route("/v1.0/groups", get(|| async { Json(serde_json::json!({"value": []})) }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(EmulatorHandle {
        base: format!("http://{addr}"),
        tenant_id: scenario.tenant_id.clone().unwrap_or_default(),
        client_id: scenario.client_id.clone().unwrap_or_default(),
        client_secret: scenario.client_secret.clone().unwrap_or_default(),
        shutdown: tx,
        task,
    })
}

impl EmulatorHandle {
    pub fn base_url(&self) -> String {
        self.base.clone()
    }
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base)
    }
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base, self.tenant_id)
    }
    pub fn directory_tenant_id(&self) -> String {
        self.tenant_id.clone()
    }
    pub fn client_id(&self) -> String {
        self.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.client_secret.clone()
    }
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}
