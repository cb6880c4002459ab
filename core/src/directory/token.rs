//! Client-credentials access tokens: fetched once, shared by every caller, refreshed before
//! they expire. Concurrent callers wait on one refresh instead of each asking for a token.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::error::{DirectoryError, parse_retry_after};

/// Refresh when less than this is left (or a tenth of the lifetime, for short-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Cached {
    token: String,
    refresh_at: Instant,
}

pub struct TokenSource {
    token_url: String,
    client_id: String,
    client_secret: String,
    scope: String,
    /// The `tenant` label of this source's metrics (see [`super::DirectoryClient::for_tenant`]).
    tenant: String,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenSource {
    pub fn new(
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: String,
        tenant: String,
    ) -> Self {
        TokenSource {
            token_url,
            client_id,
            client_secret,
            scope,
            tenant,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token, fetching or refreshing it when needed.
    pub async fn get(&self, http: &reqwest::Client) -> Result<String, DirectoryError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch(http).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forget `token` (Graph said it is no longer valid); the next call fetches a new one.
    pub async fn invalidate(&self, token: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Cached, DirectoryError> {
        let started = Instant::now();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("scope", self.scope.as_str()),
        ];
        let response = http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                DirectoryError::unavailable(format!("token endpoint: {}", without_url(&e)))
            })?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let bytes = response.bytes().await.map_err(|e| {
            DirectoryError::unavailable(format!("token endpoint: {}", without_url(&e)))
        })?;
        metrics::counter!("licensor_directory_requests_total", "route" => "token", "status" => status.to_string(), "tenant" => self.tenant.clone()).increment(1);
        if (200..300).contains(&status) {
            let t: TokenResponse = serde_json::from_slice(&bytes).map_err(|_| {
                DirectoryError::unavailable("token endpoint answered without an access token")
            })?;
            let lifetime = Duration::from_secs(t.expires_in);
            let margin = REFRESH_MARGIN.min(lifetime / 10);
            return Ok(Cached {
                token: t.access_token,
                refresh_at: started + lifetime.saturating_sub(margin),
            });
        }
        let err: TokenError = serde_json::from_slice(&bytes).unwrap_or_default();
        // The description's first line carries the AADSTS code and reason; never the secret.
        let reason = err
            .error_description
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        match status {
            429 | 500..=599 => Err(DirectoryError::Transient {
                code: if status == 429 {
                    super::ItemCode::Throttled
                } else {
                    super::ItemCode::DirectoryUnavailable
                },
                detail: format!("token endpoint answered {status}"),
                retry_after,
                refused: matches!(status, 429 | 503),
            }),
            _ => {
                metrics::counter!(
                    "licensor_directory_credentials_rejected_total",
                    "tenant" => self.tenant.clone(),
                    "code" => super::token_error_label(&err.error)
                )
                .increment(1);
                Err(DirectoryError::CredentialsRejected {
                    detail: if reason.is_empty() {
                        format!("token endpoint answered {status} {}", err.error)
                    } else {
                        reason
                    },
                })
            }
        }
    }
}

/// A reqwest error's text without the URL (which may carry query parameters).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer"
    } else if e.is_request() {
        "connection dropped"
    } else {
        "request failed"
    };
    kind.to_owned()
}
