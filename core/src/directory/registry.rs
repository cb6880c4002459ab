//! One [`DirectoryClient`] per tenant, shared by every request and task in the process, so a
//! tenant's token, in-flight limit and write pacing are one. A tenant whose directory settings
//! change gets a new client.

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
        "the tenant has no directory connection configured (directory tenant id, client id and secret)"
    )]
    NotConfigured,
    #[error(transparent)]
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
    clients: Mutex<HashMap<Uuid, (chrono::DateTime<chrono::Utc>, DirectoryClient)>>,
}

impl DirectoryClients {
    pub fn new(tuning: DirectoryTuning, secrets: SecretBox) -> Self {
        DirectoryClients {
            inner: Arc::new(Inner {
                tuning,
                secrets,
                clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The client for `tenant`, created on first use.
    pub fn for_tenant(&self, tenant: &tenant::Model) -> Result<DirectoryClient, ClientError> {
        if let Some((version, client)) = self.inner.clients.lock().get(&tenant.id)
            && *version == tenant.updated_at
        {
            return Ok(client.clone());
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
        )?;
        self.inner
            .clients
            .lock()
            .insert(tenant.id, (tenant.updated_at, client.clone()));
        Ok(client)
    }
}
