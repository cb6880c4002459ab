//! One [`DirectoryClient`] per tenant, shared by every request and task in the process, so a
//! tenant's token, in-flight limit and write pacing are one. A tenant whose directory settings
//! change gets a new client.
//!
//! "One" holds however many steps ask at once: two clients of one tenant would each learn the
//! write budget with the other's writes taken for a foreign client's, and the one kept would go
//! on with what it learned beside the other (a limit of a fifth of the budget, in the MSP
//! benchmark, for the rest of the job).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use super::{DirectoryClient, DirectoryConfig, DirectoryError, Failure};
use crate::config::DirectoryTuning;
use crate::crypto::SecretBox;
use crate::entities::tenant;
use crate::tenants;

/// Why a tenant has no usable directory client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the tenant has no directory connection configured (directory tenant id, client id and secret); set one with `licensor tenant set-directory`"
    )]
    NotConfigured,
    /// The tenant's client secret was sealed with another `secret_key` than this process's: set
    /// it again with `licensor tenant set-directory`, run with the server's `secret_key`.
    #[error(
        "{0}: set the client secret again with `licensor tenant set-directory --client-secret-env VAR`, run with this server's secret_key"
    )]
    Secret(#[from] crate::crypto::SecretError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

impl ClientError {
    /// The one classification of this failure ([`Failure`]). A secret that cannot be read is
    /// a connection to set again, not licensor's fault: the API and a job say the same.
    pub fn failure(&self) -> Failure {
        match self {
            ClientError::NotConfigured | ClientError::Secret(_) => Failure::NotConfigured,
            ClientError::Directory(e) => e.failure(),
        }
    }
}

#[derive(Clone)]
pub struct DirectoryClients {
    inner: Arc<Inner>,
}

struct Inner {
    tuning: DirectoryTuning,
    secrets: SecretBox,
    clients: Mutex<HashMap<Uuid, Entry>>,
    /// The HTTP client every tenant's client sends through, built on first use
    /// ([`DirectoryClient::http_client`]).
    http: Mutex<Option<reqwest::Client>>,
}

/// A tenant's client, and what it was made from.
struct Entry {
    /// The tenant's `updated_at` the client was made for.
    version: chrono::DateTime<chrono::Utc>,
    /// Whose write budget the client spends: the directory and app registration (token URL,
    /// Graph URL, client id). New settings that keep it (a rotated secret) keep the client's
    /// write pacing: the budget it learned is still the one being spent.
    budget: Budget,
    client: DirectoryClient,
    /// When the tenant's row was last read and found at `version`
    /// ([`DirectoryClients::RECHECK`]).
    checked: std::time::Instant,
}

type Budget = (String, String, String);

impl DirectoryClients {
    /// How long a tenant's client is used by [`DirectoryClients::for_tenant_id`] without
    /// reading the tenant's row again: changed directory settings reach the steps that start
    /// after at most this long. A step of a job read the row every time: with 500 tenants' jobs
    /// written at once (`licensor-bench --scenario msp`) that was one statement in eleven.
    pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn new(tuning: DirectoryTuning, secrets: SecretBox) -> Self {
        DirectoryClients {
            inner: Arc::new(Inner {
                tuning,
                secrets,
                clients: Mutex::new(HashMap::new()),
                http: Mutex::new(None),
            }),
        }
    }

    /// The client for `tenant` (at its `updated_at`), created on first use; steps asking at once
    /// get the same one. A step that read the tenant before its settings were changed gets the
    /// client of the newer settings once another step has made it: an older read never replaces
    /// a newer client.
    pub fn for_tenant(&self, tenant: &tenant::Model) -> Result<DirectoryClient, ClientError> {
        if let Some(e) = self.inner.clients.lock().get_mut(&tenant.id)
            && e.version >= tenant.updated_at
        {
            e.checked = std::time::Instant::now();
            return Ok(e.client.clone());
        }
        let (Some(token_url), Some(graph_url), Some(client_id)) =
            (&tenant.token_url, &tenant.graph_url, &tenant.client_id)
        else {
            return Err(ClientError::NotConfigured);
        };
        let client_secret =
            tenants::client_secret(&self.inner.secrets, tenant).map_err(|e| match e {
                crate::StoreError::Secret(s) => ClientError::Secret(s),
                _ => ClientError::NotConfigured,
            })?;
        let Some(client_secret) = client_secret else {
            return Err(ClientError::NotConfigured);
        };
        let client = DirectoryClient::for_tenant(
            DirectoryConfig {
                token_url: token_url.clone(),
                graph_url: graph_url.clone(),
                client_id: client_id.clone(),
                client_secret,
            },
            self.inner.tuning.clone(),
            tenant.id,
            self.http()?,
        );
        // Built outside the lock: a step that built one at the same time and stored it first
        // wins, and this one is dropped unused.
        let budget = (token_url.clone(), graph_url.clone(), client_id.clone());
        let mut clients = self.inner.clients.lock();
        let client = match clients.get(&tenant.id) {
            Some(e) if e.version >= tenant.updated_at => return Ok(e.client.clone()),
            Some(e) if e.budget == budget => client.pacing_like(&e.client),
            Some(_) => client.budget_changed(),
            None => client,
        };
        clients.insert(
            tenant.id,
            Entry {
                version: tenant.updated_at,
                budget,
                client: client.clone(),
                checked: std::time::Instant::now(),
            },
        );
        Ok(client)
    }

    /// The client for tenant `tenant_id`, as [`DirectoryClients::for_tenant`] gives it from the
    /// tenant's row; the row is read only when the client was not checked against it within
    /// [`DirectoryClients::RECHECK`]. Errors: the tenant is gone ([`crate::StoreError::NotFound`]) or the
    /// database failed (outer); the tenant has no usable connection (inner).
    pub async fn for_tenant_id(
        &self,
        db: &crate::db::Db,
        tenant_id: Uuid,
    ) -> crate::error::StoreResult<Result<DirectoryClient, ClientError>> {
        if let Some(e) = self.inner.clients.lock().get(&tenant_id)
            && e.checked.elapsed() < Self::RECHECK
        {
            return Ok(Ok(e.client.clone()));
        }
        let tenant = tenants::get(db, tenant_id).await?;
        Ok(self.for_tenant(&tenant))
    }

    /// The process's HTTP client, built on first use; a build that failed is tried again on the
    /// next use.
    fn http(&self) -> Result<reqwest::Client, DirectoryError> {
        let mut http = self.inner.http.lock();
        if let Some(h) = &*http {
            return Ok(h.clone());
        }
        let h = DirectoryClient::http_client(&self.inner.tuning)?;
        *http = Some(h.clone());
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(secrets: &SecretBox) -> tenant::Model {
        let now = chrono::Utc::now();
        tenant::Model {
            id: Uuid::now_v7(),
            name: "contoso".into(),
            directory_tenant_id: Some("contoso.onmicrosoft.com".into()),
            token_url: Some("http://127.0.0.1:9/token".into()),
            graph_url: Some("http://127.0.0.1:9".into()),
            client_id: Some("app".into()),
            client_secret_enc: Some(secrets.seal("secret")),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn steps_asking_at_once_share_one_client() {
        let secrets = SecretBox::from_base64(&format!("{}=", "A".repeat(43))).unwrap();
        let clients = DirectoryClients::new(DirectoryTuning::default(), secrets.clone());
        let tenant = tenant(&secrets);
        const STEPS: usize = 8;
        let start = std::sync::Barrier::new(STEPS);
        let got: Vec<DirectoryClient> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..STEPS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        clients.for_tenant(&tenant).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for c in &got {
            assert!(
                c.same_client(&got[0]),
                "two clients (two write paces) for one tenant"
            );
        }
        // Later steps get it too.
        assert!(clients.for_tenant(&tenant).unwrap().same_client(&got[0]));
    }

    #[test]
    fn new_settings_of_the_same_app_keep_its_write_pacing() {
        let secrets = SecretBox::from_base64(&format!("{}=", "A".repeat(43))).unwrap();
        let clients = DirectoryClients::new(DirectoryTuning::default(), secrets.clone());
        let first = tenant(&secrets);
        let old = clients.for_tenant(&first).unwrap();
        // A rotated secret: a new client (a new token), the same budget being spent.
        let rotated = tenant::Model {
            client_secret_enc: Some(secrets.seal("rotated")),
            updated_at: first.updated_at + chrono::Duration::seconds(1),
            ..first.clone()
        };
        let new = clients.for_tenant(&rotated).unwrap();
        assert!(!new.same_client(&old));
        assert!(new.same_pacing(&old));
        // Another app registration: another budget, learned afresh.
        let other_app = tenant::Model {
            client_id: Some("another-app".into()),
            updated_at: rotated.updated_at + chrono::Duration::seconds(1),
            ..rotated
        };
        let other = clients.for_tenant(&other_app).unwrap();
        assert!(!other.same_pacing(&new));
        // A step that read the tenant before these changes gets the newest client; its older
        // read does not replace it.
        let late = clients.for_tenant(&first).unwrap();
        assert!(late.same_client(&other));
        assert!(clients.for_tenant(&other_app).unwrap().same_client(&other));
    }

    /// The share of the write budget a tenant's directory last reported stays on the dashboard
    /// when its client is rebuilt for the same app (a rotated secret), and when a step builds a
    /// client it then drops for a newer one; another app's budget starts at 0.
    #[test]
    fn the_budget_gauge_outlives_a_rebuilt_client_of_the_same_app() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let secrets = SecretBox::from_base64(&format!("{}=", "A".repeat(43))).unwrap();
        let first = tenant(&secrets);
        let gauge = |handle: &metrics_exporter_prometheus::PrometheusHandle| -> Option<f64> {
            let label = format!("tenant=\"{}\"", first.id);
            handle
                .render()
                .lines()
                .find(|l| {
                    l.starts_with("licensor_directory_write_budget_used_ratio{")
                        && l.contains(&label)
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        metrics::with_local_recorder(&recorder, || {
            let clients = DirectoryClients::new(DirectoryTuning::default(), secrets.clone());
            let client = clients.for_tenant(&first).unwrap();
            assert_eq!(
                gauge(&handle),
                Some(0.0),
                "registered at 0 before any write"
            );
            client.note_budget(Some(92.0));
            assert_eq!(gauge(&handle), Some(0.92));
            let rotated = tenant::Model {
                client_secret_enc: Some(secrets.seal("rotated")),
                updated_at: first.updated_at + chrono::Duration::seconds(1),
                ..first.clone()
            };
            let rebuilt = clients.for_tenant(&rotated).unwrap();
            assert!(!rebuilt.same_client(&client));
            // A step with an older read of the tenant builds a client and drops it.
            assert!(clients.for_tenant(&first).unwrap().same_client(&rebuilt));
            assert_eq!(gauge(&handle), Some(0.92), "kept across the rebuilt client");
            let other_app = tenant::Model {
                client_id: Some("another-app".into()),
                updated_at: rotated.updated_at + chrono::Duration::seconds(1),
                ..rotated
            };
            clients.for_tenant(&other_app).unwrap();
            assert_eq!(
                gauge(&handle),
                Some(0.0),
                "another app's budget is not reported yet"
            );
        });
    }
}
