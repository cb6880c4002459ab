//! The one client through which licensor talks to a tenant's directory (Microsoft Graph v1.0):
//! token handling, paging, batching, retries, throttling and error classification.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::TryStreamExt;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};
use uuid::Uuid;

use crate::config::DirectoryTuning;

mod batch;
mod drive;
mod error;
mod limiter;
mod registry;
mod token;

pub use batch::{MAX_BATCH, WriteOp, Written};
pub use drive::{DriveItem, DriveUpload, UploadError};
pub use error::{DirectoryError, Failure, ItemCode, classify, parse_retry_after};
pub use limiter::{Grant, LimiterConfig, Outlook, Pledge, WriteAnswer, WriteLimiter};
pub use registry::{ClientError, DirectoryClients};

use token::{TokenSource, without_url};

/// The Graph scope for application permissions.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Fields licensor reads of a user.
const USER_SELECT: &str =
    "id,userPrincipalName,displayName,usageLocation,assignedLicenses,licenseAssignmentStates";

/// Fields an export reads of a user: licensor's usual fields and whether the account is enabled.
const EXPORT_USER_SELECT: &str = "id,userPrincipalName,displayName,accountEnabled,usageLocation,assignedLicenses,licenseAssignmentStates";

/// Where and as whom to reach a tenant's directory.
#[derive(Clone)]
pub struct DirectoryConfig {
    pub token_url: String,
    pub graph_url: String,
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("token_url", &self.token_url)
            .field("graph_url", &self.graph_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// A directory group: read from Graph in its own shape (`displayName`), answered by licensor's
/// API in snake_case (`display_name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all(deserialize = "camelCase", serialize = "snake_case"))]
pub struct Group {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A directory user as the checkout picker shows it: read from Graph in its own shape
/// (`displayName`, `userPrincipalName`), answered by licensor's API in snake_case
/// (`display_name`, `user_principal_name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all(deserialize = "camelCase", serialize = "snake_case"))]
pub struct DirectoryUser {
    /// The user's object id.
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
}

/// One page of [`DirectoryClient::search_users`].
#[derive(Debug, Clone)]
pub struct UserPage {
    pub data: Vec<DirectoryUser>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignedLicense {
    pub sku_id: Uuid,
    #[serde(default)]
    pub disabled_plans: Vec<Uuid>,
}

/// A user as licensor needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub usage_location: Option<String>,
    /// Whether the account can sign in; read by exports only (`None` when not selected).
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub assigned_licenses: Vec<AssignedLicense>,
    /// How each license is held: directly (`assigned_by_group` empty) or through a group.
    #[serde(default)]
    pub license_assignment_states: Vec<LicenseAssignmentState>,
}

impl User {
    /// How the user holds each license: its `licenseAssignmentStates`, and any of
    /// `assignedLicenses` the states do not mention as held directly (a directory that reports
    /// only `assignedLicenses` gives no group information).
    pub fn license_states(&self) -> Vec<LicenseAssignmentState> {
        let mut states = self.license_assignment_states.clone();
        for l in &self.assigned_licenses {
            if !states.iter().any(|s| s.sku_id == l.sku_id) {
                states.push(LicenseAssignmentState {
                    sku_id: l.sku_id,
                    assigned_by_group: None,
                    disabled_plans: l.disabled_plans.clone(),
                });
            }
        }
        states
    }

    /// The licenses the user holds directly (what `assignLicense` changes): those of
    /// [`User::license_states`] with no `assignedByGroup`.
    pub fn direct_licenses(&self) -> Vec<AssignedLicense> {
        self.license_states()
            .into_iter()
            .filter(|s| s.assigned_by_group.is_none())
            .map(|s| AssignedLicense {
                sku_id: s.sku_id,
                disabled_plans: s.disabled_plans,
            })
            .collect()
    }
}

/// Whether an `assignLicense` of `add` and `remove` shows in `direct` (a user's directly held
/// licenses): every added SKU held directly with exactly its disabled plans, no removed SKU
/// held directly. `assignLicense` is all or nothing for the user (Graph, "user: assignLicense"),
/// so a state that shows the write is the state the write leaves.
pub fn write_shows(direct: &[AssignedLicense], add: &[AssignedLicense], remove: &[Uuid]) -> bool {
    use std::collections::BTreeSet;
    let plans = |p: &[Uuid]| p.iter().copied().collect::<BTreeSet<_>>();
    add.iter().all(|a| {
        direct
            .iter()
            .any(|d| d.sku_id == a.sku_id && plans(&d.disabled_plans) == plans(&a.disabled_plans))
    }) && remove
        .iter()
        .all(|r| !direct.iter().any(|d| d.sku_id == *r))
}

/// One path by which a user holds a license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseAssignmentState {
    pub sku_id: Uuid,
    #[serde(default)]
    pub assigned_by_group: Option<String>,
    #[serde(default)]
    pub disabled_plans: Vec<Uuid>,
}

/// A service plan of a SKU: read from Graph in its own shape (`servicePlanId`,
/// `servicePlanName`), answered by licensor's API in snake_case (`service_plan_id`,
/// `service_plan_name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all(deserialize = "camelCase", serialize = "snake_case"))]
pub struct ServicePlan {
    pub service_plan_id: Uuid,
    #[serde(default)]
    pub service_plan_name: Option<String>,
}

/// A subscribed SKU with its seat counts; `available` = enabled − consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sku {
    pub sku_id: Uuid,
    pub sku_part_number: String,
    pub enabled: i64,
    pub consumed: i64,
    pub available: i64,
    pub service_plans: Vec<ServicePlan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSku {
    sku_id: Uuid,
    #[serde(default)]
    sku_part_number: String,
    #[serde(default)]
    consumed_units: i64,
    #[serde(default)]
    prepaid_units: RawUnits,
    #[serde(default)]
    service_plans: Vec<ServicePlan>,
}

#[derive(Deserialize, Default)]
struct RawUnits {
    #[serde(default)]
    enabled: i64,
}

/// One page of a collection: its items and its `@odata.nextLink` (`None` on the last).
type CollectionPage<T> = (Vec<T>, Option<String>);

/// One page of a group's members: its users and the link to the next page (`None` on the last).
#[derive(Debug, Clone)]
pub struct MemberPage {
    pub users: Vec<User>,
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
struct Collection<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// How often a write waiting for the write budget checks whether its work stopped.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A connection to one tenant's directory. Cheap to clone; clones share the token, the
/// in-flight limit and the write pacing.
#[derive(Clone)]
pub struct DirectoryClient {
    inner: Arc<Inner>,
    /// Raised when the work these writes belong to stops (see [`DirectoryClient::stopping_on`]).
    stop: Option<Arc<AtomicBool>>,
    /// The longest a `$batch` write waits for the budget (see
    /// [`DirectoryClient::deferring_beyond`]); `None`: as long as it takes.
    patience: Option<Duration>,
    /// The writes pledged to the work this clone writes for, redeemed by its grants (see
    /// [`DirectoryClient::redeeming`]).
    pledge: Option<Arc<Pledge>>,
}

struct Inner {
    http: reqwest::Client,
    graph_url: String,
    tokens: TokenSource,
    in_flight: Semaphore,
    /// Shared with the client that replaced this one for the same app registration and
    /// directory ([`DirectoryClient::pacing_like`]).
    limiter: Arc<WriteLimiter>,
    tuning: DirectoryTuning,
    /// The licensor tenant id as the `tenant` label of the per-tenant metrics; empty for a
    /// client made outside the per-tenant registry (tools, tests).
    tenant: String,
}

tokio::task_local! {
    /// 429 answers met by the directory calls of the current task, when it counts them
    /// ([`count_throttles`]).
    static THROTTLES: std::cell::Cell<u64>;
}

/// Run `work` and count the 429 answers its directory calls met (a whole request answered 429
/// counts one, each request of a `$batch` answered 429 counts one). Calls made from tasks that
/// `work` spawns are not counted. Used for a job's per-minute activity.
pub async fn count_throttles<F: std::future::Future>(work: F) -> (F::Output, u64) {
    THROTTLES
        .scope(std::cell::Cell::new(0), async move {
            let out = work.await;
            (out, THROTTLES.with(std::cell::Cell::get))
        })
        .await
}

/// The OAuth error codes the token endpoint may answer with; anything else is `other`, so the
/// metric's `code` label stays a short, fixed list.
const TOKEN_ERROR_CODES: &[&str] = &[
    "invalid_client",
    "unauthorized_client",
    "invalid_request",
    "invalid_grant",
    "invalid_scope",
    "unsupported_grant_type",
    "access_denied",
];

/// The `code` label of `licensor_directory_credentials_rejected_total` for an OAuth error.
pub(crate) fn token_error_label(error: &str) -> &'static str {
    TOKEN_ERROR_CODES
        .iter()
        .find(|c| **c == error)
        .copied()
        .unwrap_or("other")
}

/// One successful answer from Graph.
struct Answer {
    body: Vec<u8>,
}

impl DirectoryClient {
    pub fn new(config: DirectoryConfig, tuning: DirectoryTuning) -> Result<Self, DirectoryError> {
        let http = Self::http_client(&tuning)?;
        Ok(Self::labelled(config, tuning, String::new(), http))
    }

    /// The HTTP client that carries a process's directory requests: its time-outs from
    /// `tuning` (`directory.request_timeout_secs`; 10 s to connect), licensor's user agent, and
    /// a pool of kept-alive connections per host. One is built per process and shared by every
    /// tenant's client ([`super::registry::DirectoryClients`]): Microsoft Graph is one host for
    /// all tenants, so they share one pool, and the TLS root certificates are read once (a
    /// build takes milliseconds). A tenant's requests in flight stay bounded by its own
    /// client's `max_in_flight`, not by the pool. Fails only if the TLS backend cannot be set
    /// up.
    pub fn http_client(tuning: &DirectoryTuning) -> Result<reqwest::Client, DirectoryError> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(tuning.request_timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("licensor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DirectoryError::unavailable(format!("http client: {e}")))
    }

    /// A clone (same token, in-flight limit and write pacing) whose writes are not sent once
    /// `stop` is raised: each write is checked when its turn comes — after pacing, right before
    /// it goes out — and answered [`DirectoryError::Stopped`] instead; a write still waiting for
    /// the write budget stops waiting. Writes already sent finish. Reads are not affected.
    pub fn stopping_on(&self, stop: Arc<AtomicBool>) -> DirectoryClient {
        DirectoryClient {
            stop: Some(stop),
            ..self.clone()
        }
    }

    /// A clone whose `$batch` writes do not wait for the write budget longer than `patience`:
    /// a write the budget lets go only later is not sent and answered
    /// [`DirectoryError::Deferred`] with the time it could go. A job's step uses it so that a
    /// chunk whose tenant has spent its budget gives its members back and comes back then,
    /// rather than hold a worker's place that another tenant's job could use meanwhile.
    pub fn deferring_beyond(&self, patience: Duration) -> DirectoryClient {
        DirectoryClient {
            patience: Some(patience),
            ..self.clone()
        }
    }

    /// A clone whose writes redeem `pledge` as they are granted ([`Pledge::redeem`]): the
    /// writes a job step pledged as it took its chunk ([`DirectoryClient::pledge_writes`]) stop
    /// counting as pledged once they count as granted.
    pub fn redeeming(&self, pledge: Arc<Pledge>) -> DirectoryClient {
        DirectoryClient {
            pledge: Some(pledge),
            ..self.clone()
        }
    }

    /// What the tenant's write budget allows within `horizon`, and a pledge of the writes `take`
    /// takes on from it (see [`WriteLimiter::pledge`]): a job step sizes its chunk this way, so
    /// the next step's outlook counts this chunk's writes as spent and does not take members
    /// for the same free slots only to give them back unsent.
    pub fn pledge_writes(
        &self,
        horizon: Duration,
        take: impl FnOnce(Outlook) -> u64,
    ) -> (Outlook, Arc<Pledge>) {
        let (outlook, pledge) = self.inner.limiter.pledge(horizon, take);
        (outlook, Arc::new(pledge))
    }

    /// `writes` were granted: they no longer count as pledged.
    fn redeem(&self, writes: u32) {
        if let Some(p) = &self.pledge {
            p.redeem(writes);
        }
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// Resolves once `stop` is raised (checked every [`STOP_CHECK`]); never without one.
    async fn until_stopped(&self) {
        let Some(stop) = &self.stop else {
            return std::future::pending().await;
        };
        crate::tasks::raised(stop, STOP_CHECK).await
    }

    /// A client whose metrics carry `tenant` (licensor's tenant id, never a name or secret) as
    /// their `tenant` label: `licensor_directory_requests_total`, `…_throttled_total`,
    /// `…_write_budget_used_ratio` and `…_credentials_rejected_total`. Their per-tenant series
    /// are registered here, at zero when new, so they exist before the first event; a series the
    /// process has already is left as it is (the write budget's share last reported stays on a
    /// rebuilt client of the same app: see [`DirectoryClient::budget_changed`]). Its requests
    /// go through `http`, the process's one HTTP client ([`DirectoryClient::http_client`]).
    pub fn for_tenant(
        config: DirectoryConfig,
        tuning: DirectoryTuning,
        tenant: Uuid,
        http: reqwest::Client,
    ) -> Self {
        let tenant = tenant.to_string();
        metrics::counter!("licensor_directory_throttled_total", "tenant" => tenant.clone())
            .increment(0);
        metrics::gauge!("licensor_directory_write_budget_used_ratio", "tenant" => tenant.clone())
            .increment(0.0);
        metrics::counter!("licensor_directory_credentials_rejected_total", "tenant" => tenant.clone(), "code" => "invalid_client")
            .increment(0);
        Self::labelled(config, tuning, tenant, http)
    }

    fn labelled(
        config: DirectoryConfig,
        tuning: DirectoryTuning,
        tenant: String,
        http: reqwest::Client,
    ) -> Self {
        let limiter = Arc::new(WriteLimiter::new(LimiterConfig {
            max_rate: tuning.max_write_rate,
            target_percent: tuning.target_throttle_percent,
        }));
        DirectoryClient {
            stop: None,
            patience: None,
            pledge: None,
            inner: Arc::new(Inner {
                http,
                graph_url: config.graph_url.trim_end_matches('/').to_owned(),
                tokens: TokenSource::new(
                    config.token_url,
                    config.client_id,
                    config.client_secret,
                    GRAPH_SCOPE.to_owned(),
                    tenant.clone(),
                ),
                in_flight: Semaphore::new(tuning.max_in_flight),
                limiter,
                tuning,
                tenant,
            }),
        }
    }

    /// This new client, pacing its writes with `previous`'s write pacing: for new settings of the
    /// same app registration in the same directory (a rotated client secret), whose write
    /// budget — per app and tenant, Graph's throttling limits page — is the one `previous` has
    /// learned and may be spending still. A client already shared is returned as it is.
    pub fn pacing_like(mut self, previous: &DirectoryClient) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.limiter = previous.inner.limiter.clone();
        }
        self
    }

    /// This client spends another write budget than the tenant's client before it (another
    /// app registration or directory): the share of the budget last reported
    /// (`licensor_directory_write_budget_used_ratio`) was the other budget's, and reads 0 until
    /// this one's is reported.
    pub fn budget_changed(self) -> Self {
        self.note_budget(None);
        self
    }

    /// Whether `other` paces its writes with this client's write pacing.
    pub fn same_pacing(&self, other: &DirectoryClient) -> bool {
        Arc::ptr_eq(&self.inner.limiter, &other.inner.limiter)
    }

    /// Whether `other` is this client, or a copy of it (one token, in-flight limit and write
    /// pacing), not merely a client of the same tenant.
    pub fn same_client(&self, other: &DirectoryClient) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The write rate the learned budget carries (writes per second: writes per window over the
    /// window); the configured ceiling while it is not learned yet.
    pub fn write_rate(&self) -> f64 {
        self.inner.limiter.rate()
    }

    /// The learned write budget: writes per window, and the window (its upper bound), once known.
    pub fn write_budget(&self) -> (Option<u64>, Option<Duration>) {
        self.inner.limiter.budget()
    }

    /// What the tenant's write budget allows within `horizon` (see [`WriteLimiter::outlook`]).
    pub fn write_outlook(&self, horizon: Duration) -> Outlook {
        self.inner.limiter.outlook(horizon)
    }

    /// The tenant's write budget as this process paces it, to watch without holding the
    /// client (its stop signal, patience or pledge).
    pub fn write_limiter(&self) -> Arc<WriteLimiter> {
        self.inner.limiter.clone()
    }

    /// Writes this process has let out to the tenant's directory so far, retries included
    /// ([`WriteLimiter::granted`]): until there are any, nothing is known of the write budget.
    pub fn writes_granted(&self) -> u64 {
        self.inner.limiter.granted()
    }

    /// 429 answers met: the tenant's counter, and the current task's count when it keeps one
    /// ([`count_throttles`]).
    pub(crate) fn note_throttled(&self, answers: u64) {
        if answers == 0 {
            return;
        }
        metrics::counter!("licensor_directory_throttled_total", "tenant" => self.inner.tenant.clone())
            .increment(answers);
        let _ = THROTTLES.try_with(|c| c.set(c.get() + answers));
    }

    /// The share of the write budget the directory reported with a write's answer
    /// (`x-ms-throttle-limit-percentage`, as a ratio: 0.8 … 1.0 and over); `None` = not
    /// reported, which the directory does below 80 %: the gauge reads 0 then.
    pub(crate) fn note_budget(&self, reported: Option<f64>) {
        let ratio = reported.map_or(0.0, |v| if v > 5.0 { v / 100.0 } else { v });
        metrics::gauge!("licensor_directory_write_budget_used_ratio", "tenant" => self.inner.tenant.clone())
            .set(ratio);
    }

    /// Check that the credentials are accepted (fetches a token).
    pub async fn check_credentials(&self) -> Result<(), DirectoryError> {
        (|| async { self.inner.tokens.get(&self.inner.http).await.map(|_| ()) })
            .retry(self.backoff())
            .when(DirectoryError::is_transient)
            .adjust(adjust_delay)
            .await
    }

    fn backoff(&self) -> ExponentialBuilder {
        let t = &self.inner.tuning;
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(t.retry_min_delay_ms))
            .with_max_delay(Duration::from_millis(t.retry_max_delay_ms))
            .with_max_times(t.retry_max_attempts)
            .with_total_delay(Some(Duration::from_secs(t.retry_max_total_secs)))
    }

    /// One request, no retry. `writes` > 0 paces it as that many directory writes, all granted at
    /// once and answered alike (a `$batch` is paced by [`Self::write_batch`] instead, request by
    /// request).
    async fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        writes: u32,
        route: &'static str,
    ) -> Result<Answer, DirectoryError> {
        let pace = if writes > 0 {
            Pace::Writes(writes)
        } else {
            Pace::None
        };
        self.send_paced(method, url, body, pace, route).await
    }

    /// `grant`, its place in flight taken, if its writes may still go ([`Grant::send_now`]);
    /// otherwise it is given back and counted as withdrawn, and the caller asks again.
    fn still_goes(&self, mut grant: Grant) -> Option<Grant> {
        if grant.send_now() {
            return Some(grant);
        }
        let writes = u64::from(grant.writes());
        grant.unused();
        metrics::counter!("licensor_directory_writes_withdrawn_total", "tenant" => self.inner.tenant.clone())
            .increment(writes);
        None
    }

    /// A place among the tenant's requests in flight (`directory.max_in_flight`).
    async fn place_in_flight(&self) -> Result<SemaphorePermit<'_>, DirectoryError> {
        self.inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| DirectoryError::unavailable("directory client closed"))
    }

    /// One request, no retry, paced as `pace` says.
    async fn send_paced(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        pace: Pace<'_>,
        route: &'static str,
    ) -> Result<Answer, DirectoryError> {
        let inner = &self.inner;
        let (writes, granted, mut place) = match pace {
            Pace::None => (0, false, None),
            Pace::Writes(n) => (n, false, None),
            Pace::Granted(place) => (0, true, Some(place)),
        };
        // Pace first, then take a place in flight: writes waiting for their turn must not hold
        // places that reads (a job's member pages, another job's reads) could use meanwhile.
        // A grant the budget withdrew while it waited for its place is asked for again.
        let (grant, _place) = loop {
            let grant = if writes > 0 {
                tokio::select! {
                    grant = inner.limiter.acquire(writes) => {
                        self.redeem(grant.writes());
                        Some(grant)
                    }
                    // No wait for the budget outlives the work it is for.
                    () = self.until_stopped() => return Err(DirectoryError::Stopped),
                }
            } else {
                None
            };
            // Only a caller's own grant comes with its place; it goes through once.
            let place = match place.take() {
                Some(p) => p,
                None => self.place_in_flight().await?,
            };
            match grant {
                Some(g) => {
                    if let Some(g) = self.still_goes(g) {
                        break (Some(g), place);
                    }
                }
                None => break (None, place),
            }
        };
        if (writes > 0 || granted) && self.stopped() {
            return Err(DirectoryError::Stopped);
        }
        let token = inner.tokens.get(&inner.http).await?;
        let mut request = inner.http.request(method, url).bearer_auth(&token);
        let tenant = inner.tenant.clone();
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let started = Instant::now();
        let outcome = request.send().await;
        let response = match outcome {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("licensor_directory_requests_total", "route" => route, "status" => "error", "tenant" => tenant).increment(1);
                return Err(DirectoryError::unavailable(without_url(&e)));
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| DirectoryError::unavailable(without_url(&e)))?
            .to_vec();
        metrics::counter!("licensor_directory_requests_total", "route" => route, "status" => status.to_string(), "tenant" => tenant).increment(1);
        metrics::histogram!("licensor_directory_request_duration_seconds", "route" => route)
            .record(started.elapsed().as_secs_f64());
        let retry_after = parse_retry_after(
            headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        if let Some(grant) = grant {
            let reported = header_f64(&headers, "x-ms-throttle-limit-percentage");
            self.note_budget(reported);
            let answer = WriteAnswer::of_status(status, reported, retry_after);
            grant.answered(&vec![answer; writes as usize]);
        }
        if (200..300).contains(&status) {
            return Ok(Answer { body });
        }
        if status == 429 {
            self.note_throttled(1);
        }
        let err = classify(status, &body, retry_after);
        if matches!(err, DirectoryError::CredentialsRejected { .. }) {
            let code = if status == 401 {
                "graph_401"
            } else {
                "graph_403"
            };
            metrics::counter!("licensor_directory_credentials_rejected_total", "tenant" => inner.tenant.clone(), "code" => code).increment(1);
        }
        if status == 401 && err.is_transient() {
            inner.tokens.invalidate(&token).await;
        }
        Err(err)
    }

    /// A request with retries of transient failures (after `Retry-After`, else a jittered
    /// exponential backoff; bounded in attempts and total time).
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        writes: u32,
        route: &'static str,
    ) -> Result<Answer, DirectoryError> {
        (|| self.send_once(method.clone(), url, body, writes, route))
            .retry(self.backoff())
            .when(DirectoryError::is_transient)
            .adjust(adjust_delay)
            .notify(|_, _| {
                metrics::counter!("licensor_directory_retries_total", "route" => route)
                    .increment(1);
            })
            .await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        route: &'static str,
    ) -> Result<T, DirectoryError> {
        let answer = self.call(Method::GET, url, None, 0, route).await?;
        serde_json::from_slice(&answer.body).map_err(|e| {
            DirectoryError::unavailable(format!("unreadable answer from {route}: {e}"))
        })
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.inner.graph_url)
    }

    /// `link` (an `@odata.nextLink`, as the directory gave it or as a job stored it to read on
    /// later) on this client's Graph URL: the same path below the version segment (`/v1.0`) and
    /// the same query. A job that reads on after the tenant's directory URL changed (a restarted
    /// emulator on another port, a proxy put in front) goes on from where it was, and the bearer
    /// token only ever goes to the configured Graph URL.
    ///
    /// Errors: a link that is not a URL, or has no version segment, is `Permanent` (`other`):
    /// it is not a page of this directory, and asking again would not make it one.
    fn on_graph_url(&self, link: &str) -> Result<String, DirectoryError> {
        let base = &self.inner.graph_url;
        if link
            .strip_prefix(base.as_str())
            .is_some_and(|rest| rest.starts_with(['/', '?']))
        {
            return Ok(link.to_owned());
        }
        let foreign = |why: &str| DirectoryError::Permanent {
            code: ItemCode::Other,
            detail: format!("@odata.nextLink {why}"),
        };
        let parsed = reqwest::Url::parse(link).map_err(|_| foreign("is not a URL"))?;
        let version = base.rsplit('/').next().unwrap_or_default();
        let marker = format!("/{version}/");
        let path = parsed.path();
        let at = path
            .find(&marker)
            .filter(|_| !version.is_empty())
            .ok_or_else(|| foreign(&format!("is outside the directory's /{version} API")))?;
        let below = &path[at + marker.len() - 1..];
        Ok(match parsed.query() {
            Some(query) => format!("{base}{below}?{query}"),
            None => format!("{base}{below}"),
        })
    }

    /// Groups whose display name starts with `search` (all groups when empty), up to `limit`.
    pub async fn list_groups(
        &self,
        search: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Group>, DirectoryError> {
        let mut url = reqwest::Url::parse(&self.url("/groups"))
            .map_err(|e| DirectoryError::unavailable(format!("graph url: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("$select", "id,displayName,description");
            q.append_pair("$top", &limit.clamp(1, 999).to_string());
            if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
                q.append_pair(
                    "$filter",
                    &format!("startswith(displayName,'{}')", s.replace('\'', "''")),
                );
            }
        }
        let mut groups = Vec::new();
        let mut next = Some(url.to_string());
        while let Some(url) = next.take() {
            let page: Collection<Group> = self.get_json(&url, "groups").await?;
            groups.extend(page.value);
            if groups.len() >= limit {
                groups.truncate(limit);
                break;
            }
            next = page.next_link.map(|l| self.on_graph_url(&l)).transpose()?;
        }
        Ok(groups)
    }

    /// One page of users whose display name or userPrincipalName starts with `search` (all
    /// users when empty), at most `limit` (1–999) a page. `cursor` is the `next_cursor` of the
    /// previous page: Graph's `$skiptoken`, bound to the same search.
    pub async fn search_users(
        &self,
        search: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<UserPage, DirectoryError> {
        let mut url = reqwest::Url::parse(&self.url("/users"))
            .map_err(|e| DirectoryError::unavailable(format!("graph url: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("$select", "id,displayName,userPrincipalName,mail");
            q.append_pair("$top", &limit.clamp(1, 999).to_string());
            if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
                let s = s.replace('\'', "''");
                q.append_pair(
                    "$filter",
                    &format!(
                        "startswith(displayName,'{s}') or startswith(userPrincipalName,'{s}')"
                    ),
                );
            }
            if let Some(c) = cursor {
                q.append_pair("$skiptoken", c);
            }
        }
        let page: Collection<DirectoryUser> = self.get_json(url.as_str(), "users").await?;
        let next_cursor = page.next_link.as_deref().and_then(|link| {
            let link = reqwest::Url::parse(link).ok()?;
            link.query_pairs()
                .find(|(k, _)| k.eq_ignore_ascii_case("$skiptoken"))
                .map(|(_, v)| v.into_owned())
        });
        Ok(UserPage {
            data: page.value,
            next_cursor,
        })
    }

    pub async fn get_group(&self, group_id: &str) -> Result<Group, DirectoryError> {
        let url = self.url(&format!(
            "/groups/{}?$select=id,displayName,description",
            path_segment(group_id)
        ));
        self.get_json(&url, "group").await
    }

    /// The users in a group (direct members, or all nested members with `transitive`), as a
    /// stream that follows `@odata.nextLink` page by page: a large group is never in memory whole.
    pub fn members(
        &self,
        group_id: &str,
        transitive: bool,
    ) -> BoxStream<'static, Result<User, DirectoryError>> {
        self.member_pages(group_id, transitive, None)
            .map_ok(|page| stream::iter(page.users.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// The group's members page by page (up to 999 users each), starting at `from` (a page's
    /// `@odata.nextLink`, as [`MemberPage::next_link`] gave it) or at the first page. Each page
    /// says where the next one is, so a reader that stops can go on later from there.
    pub fn member_pages(
        &self,
        group_id: &str,
        transitive: bool,
        from: Option<String>,
    ) -> BoxStream<'static, Result<MemberPage, DirectoryError>> {
        let relation = if transitive {
            "transitiveMembers"
        } else {
            "members"
        };
        let first = from.unwrap_or_else(|| {
            self.url(&format!(
                "/groups/{}/{relation}/microsoft.graph.user?$select={USER_SELECT}&$top=999",
                path_segment(group_id)
            ))
        });
        self.pages::<User>(first)
            .map_ok(|(users, next_link)| MemberPage { users, next_link })
            .boxed()
    }

    /// The users who are direct members of a group, with `accountEnabled` (for exports), page by
    /// page.
    pub fn export_members(
        &self,
        group_id: &str,
    ) -> BoxStream<'static, Result<User, DirectoryError>> {
        self.paged(self.url(&format!(
            "/groups/{}/members/microsoft.graph.user?$select={EXPORT_USER_SELECT}&$top=999",
            path_segment(group_id)
        )))
    }

    /// The groups that are direct members of a group (`/members/microsoft.graph.group`).
    pub async fn nested_groups(&self, group_id: &str) -> Result<Vec<Group>, DirectoryError> {
        self.paged(self.url(&format!(
            "/groups/{}/members/microsoft.graph.group?$select=id,displayName&$top=999",
            path_segment(group_id)
        )))
        .try_collect()
        .await
    }

    /// The items of a collection, following `@odata.nextLink` one page at a time.
    fn paged<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        first: String,
    ) -> BoxStream<'static, Result<T, DirectoryError>> {
        self.pages(first)
            .map_ok(|(items, _)| stream::iter(items.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// A collection's pages from `first` on: each page's items and its `@odata.nextLink`.
    fn pages<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        first: String,
    ) -> BoxStream<'static, Result<CollectionPage<T>, DirectoryError>> {
        let client = self.clone();
        stream::try_unfold(Some(first), move |next| {
            let client = client.clone();
            async move {
                let Some(link) = next else {
                    return Ok::<_, DirectoryError>(None);
                };
                let url = client.on_graph_url(&link)?;
                let page: Collection<T> = client.get_json(&url, "members").await?;
                let next = page.next_link.clone();
                Ok(Some(((page.value, page.next_link), next)))
            }
        })
        .boxed()
    }

    /// The tenant's subscribed SKUs with seat counts.
    pub async fn subscribed_skus(&self) -> Result<Vec<Sku>, DirectoryError> {
        let raw: Collection<RawSku> = self
            .get_json(&self.url("/subscribedSkus"), "subscribedSkus")
            .await?;
        Ok(raw
            .value
            .into_iter()
            .map(|s| Sku {
                sku_id: s.sku_id,
                sku_part_number: s.sku_part_number,
                enabled: s.prepaid_units.enabled,
                consumed: s.consumed_units,
                available: (s.prepaid_units.enabled - s.consumed_units).max(0),
                service_plans: s.service_plans,
            })
            .collect())
    }

    pub async fn get_user(&self, user_id: &str) -> Result<User, DirectoryError> {
        let url = self.url(&format!(
            "/users/{}?$select={USER_SELECT}",
            path_segment(user_id)
        ));
        self.get_json(&url, "user").await
    }

    pub async fn set_usage_location(
        &self,
        user_id: &str,
        usage_location: &str,
    ) -> Result<(), DirectoryError> {
        let url = self.url(&format!("/users/{}", path_segment(user_id)));
        self.call(
            Method::PATCH,
            &url,
            Some(&json_bytes(&json!({"usageLocation": usage_location}))),
            1,
            "user.patch",
        )
        .await
        .map(|_| ())
    }

    /// Add and/or remove licenses in one call (all or nothing on the directory's side).
    pub async fn assign_license(
        &self,
        user_id: &str,
        add: &[AssignedLicense],
        remove: &[Uuid],
    ) -> Result<(), DirectoryError> {
        let url = self.url(&format!("/users/{}/assignLicense", path_segment(user_id)));
        let body = json_bytes(&batch::AssignBody {
            add_licenses: add,
            remove_licenses: remove,
        });
        self.call(Method::POST, &url, Some(&body), 1, "assignLicense")
            .await
            .map(|_| ())
    }
}

/// A request body as JSON bytes (serializing licensor's own request types cannot fail: string
/// keys only).
fn json_bytes(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

/// How a request is paced as directory writes.
enum Pace<'a> {
    /// Not a write.
    None,
    /// This many writes, granted at once and answered alike.
    Writes(u32),
    /// Writes granted by the caller, who took their place in flight and checked that they may
    /// still go ([`Grant::send_now`]), and reports their answers (a `$batch`).
    Granted(SemaphorePermit<'a>),
}

/// With `Retry-After`, wait that long, as the directory asks ("Microsoft Graph throttling
/// guidance": wait the seconds `Retry-After` names, and back off exponentially only when no
/// `Retry-After` is given); without it, the backoff's delay. Give up when the backoff is
/// exhausted (`directory.retry_max_attempts`).
fn adjust_delay(err: &DirectoryError, backoff: Option<Duration>) -> Option<Duration> {
    backoff.map(|d| err.retry_after().unwrap_or(d))
}

fn header_f64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Bytes of an id that go into a URL path segment as they are: ASCII letters and digits and
/// `-_.@` (a GUID or a user principal name's usual characters). Every other byte of the id's
/// UTF-8 is percent-encoded (RFC 3986 §2.1), so `/` or `?` in an id never ends the segment.
const SEGMENT_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'@');

/// An id as one URL path segment ([`SEGMENT_ESCAPED`]): borrowed when nothing is to be
/// escaped, as with every directory object id (a GUID).
fn path_segment(id: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::utf8_percent_encode(id, SEGMENT_ESCAPED).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GUID goes as it is; any other character is escaped as its UTF-8 bytes, so a segment
    /// never ends early and a non-ASCII user principal name reaches the directory intact.
    #[test]
    fn a_path_segment_escapes_every_other_byte_of_the_id() {
        let guid = "5f7c0a1e-0000-4000-8000-00000000abcd";
        assert!(matches!(path_segment(guid), std::borrow::Cow::Borrowed(g) if g == guid));
        assert_eq!(
            path_segment("ada.l_x-1@contoso.com"),
            "ada.l_x-1@contoso.com"
        );
        assert_eq!(path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(path_segment("josé@bolag.se"), "jos%C3%A9@bolag.se");
        assert_eq!(path_segment("%"), "%25");
    }

    /// The directory's `Retry-After` is the wait, shorter or longer than the backoff's delay;
    /// the backoff's delay only without one; no retry once the backoff is spent.
    #[test]
    fn a_retry_waits_for_retry_after_else_the_backoff() {
        let refused = |after: Option<u64>| DirectoryError::Transient {
            code: ItemCode::DirectoryUnavailable,
            detail: "503".into(),
            retry_after: after.map(Duration::from_secs),
            refused: true,
        };
        let backoff = Some(Duration::from_secs(8));
        assert_eq!(
            adjust_delay(&refused(Some(1)), backoff),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            adjust_delay(&refused(Some(20)), backoff),
            Some(Duration::from_secs(20))
        );
        assert_eq!(adjust_delay(&refused(None), backoff), backoff);
        assert_eq!(adjust_delay(&refused(Some(1)), None), None);
    }
}
