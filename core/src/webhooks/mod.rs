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
pub use signing::{SECRET_PREFIX, UrlRefusal, check_url, new_secret, retry_delay, sign};

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
