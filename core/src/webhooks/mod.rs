//! Webhooks: a tenant's endpoints are told when a job's run ends, following the Standard
//! Webhooks convention (<https://www.standardwebhooks.com/>).
//!
//! - [`endpoints`]: create, read, update, delete an endpoint and rotate its signing secret
//!   (sealed at rest with the instance's [`SecretBox`], shown once).
//! - [`events`]: the end of a job's run records one delivery per subscribed endpoint, in the
//!   transaction that records the end, so a crash neither loses nor repeats an event.
//! - [`deliveries`]: the delivery log, claiming a delivery for an attempt, recording its outcome
//!   and the next try, redelivering, and what the reconciler queues again.
//! - [`send`]: one signed HTTP attempt.
//!
//! Deliveries are messages on the job queue ([`crate::queue::Message::Deliver`]); the database
//! says what is delivered, so a message repeated or lost does no harm (the reconciler queues
//! overdue deliveries again).

use serde::{Deserialize, Serialize};

use crate::config::WebhookSettings;
use crate::crypto::SecretBox;
use crate::domain::JobStatus;

pub mod deliveries;
pub mod endpoints;
pub mod events;
pub mod send;
mod signing;

pub use deliveries::{Attempt, DeliveryStatus, DeliveryView};
pub use endpoints::{EndpointView, NewEndpoint};
pub use signing::{
    SECRET_PREFIX, UrlRefusal, check_url, host_allowed, is_public, new_secret, retry_delay, sign,
};

/// What an endpoint can subscribe to: the end of a job's run, by its final status.
///
/// A job its canary pauses has not ended its run, so a pause fires no event (it is in the audit
/// log as `job.paused`); the run's end after a resume or a cancel fires its event as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "job.finished")]
    JobFinished,
    #[serde(rename = "job.finished_with_exception")]
    JobFinishedWithException,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.cancelled")]
    JobCancelled,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::JobFinished,
        EventType::JobFinishedWithException,
        EventType::JobFailed,
        EventType::JobCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobFinished => "job.finished",
            EventType::JobFinishedWithException => "job.finished_with_exception",
            EventType::JobFailed => "job.failed",
            EventType::JobCancelled => "job.cancelled",
        }
    }

    /// The event a job's run ending with `status` fires; `None` for a status that is not an end.
    pub fn of_status(status: JobStatus) -> Option<EventType> {
        match status {
            JobStatus::Finished => Some(EventType::JobFinished),
            JobStatus::FinishedWithException => Some(EventType::JobFinishedWithException),
            JobStatus::Failed => Some(EventType::JobFailed),
            JobStatus::Cancelled => Some(EventType::JobCancelled),
            _ => None,
        }
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown event `{s}` ({})",
                    EventType::ALL.map(EventType::as_str).join(", ")
                )
            })
    }
}

/// What the API and the workers need for webhooks: the settings, the key that seals signing
/// secrets, and the HTTP client deliveries go out with (no redirects followed, a timeout per
/// attempt).
/// Resolves an endpoint's host name for a delivery, keeping only public addresses
/// ([`is_public`]) unless the host is listed in `webhooks.allow_http_hosts`: a name that
/// resolves to an internal address (`localhost`, a name pointed at 169.254.169.254, or one
/// changed to such an address after the endpoint was registered) is not reached. Addresses
/// written in the URL are checked by [`check_url`] before each delivery.
#[derive(Debug, Clone)]
pub struct PublicResolver {
    settings: WebhookSettings,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowed = host_allowed(&host, &self.settings);
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allowed || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (loopback, private, link-local and reserved addresses are not reached unless the host is listed in webhooks.allow_http_hosts)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[derive(Clone)]
pub struct Webhooks {
    pub settings: WebhookSettings,
    secrets: SecretBox,
    http: reqwest::Client,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Fails only when the HTTP client cannot be built (no TLS roots).
    pub fn new(settings: WebhookSettings, secrets: SecretBox) -> Result<Webhooks, String> {
        let timeout = std::time::Duration::from_secs(settings.timeout_secs);
        let http = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(PublicResolver {
                settings: settings.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("licensor-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Webhooks {
            settings,
            secrets,
            http,
        })
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

#[cfg(test)]
mod resolver_tests {
    use std::str::FromStr;

    use reqwest::dns::{Name, Resolve};

    use super::*;

    fn resolver(hosts: &[&str]) -> PublicResolver {
        PublicResolver {
            settings: WebhookSettings {
                allow_http_hosts: hosts.iter().map(|h| h.to_string()).collect(),
                ..WebhookSettings::default()
            },
        }
    }

    /// A name that resolves to loopback only (`localhost`) is not reached unless listed: an
    /// endpoint registered under a public-looking name and pointed at an internal address later
    /// is refused at the delivery, not only at registration.
    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_not_reached_unless_listed() {
        let refused = resolver(&[])
            .resolve(Name::from_str("localhost").unwrap())
            .await;
        let err = refused.err().expect("localhost is refused").to_string();
        assert!(err.contains("resolves to no public address"), "{err}");
        let found: Vec<std::net::SocketAddr> = resolver(&["localhost"])
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .expect("a listed host resolves")
            .collect();
        assert!(found.iter().any(|a| a.ip().is_loopback()), "{found:?}");
    }
}
