//! Writes through JSON batching: up to 20 requests per `$batch`, one outcome per request, and
//! retries of only the requests that failed transiently, after the longest `Retry-After` among
//! them.

use std::borrow::Cow;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;
use uuid::Uuid;

use super::error::{DirectoryError, classify_value, parse_retry_after};
use super::limiter::{Grant, WriteAnswer};
use super::{AssignedLicense, DirectoryClient, ItemCode, Pace, USER_SELECT, User, path_segment};

/// Graph's limit of requests in one `$batch`.
pub const MAX_BATCH: usize = 20;

/// Times a write answered 429 goes straight back to the limiter before it is left to the
/// round's retry (after `Retry-After`).
const REQUEUES: usize = 3;

/// One directory write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// `assignLicense`: add and remove in one call (all or nothing for the user).
    AssignLicense {
        user_id: String,
        add: Vec<AssignedLicense>,
        remove: Vec<Uuid>,
    },
    /// `PATCH /users/{id}` with a usage location.
    SetUsageLocation {
        user_id: String,
        usage_location: String,
    },
}

impl WriteOp {
    /// The op as request `id` of a `$batch` (Graph's JSON batching request shape), borrowing
    /// from the op: serialized straight to the body, never built as a JSON tree first.
    fn request(&self, id: usize) -> BatchRequest<'_> {
        match self {
            WriteOp::AssignLicense {
                user_id,
                add,
                remove,
            } => BatchRequest {
                id: id.to_string(),
                method: "POST",
                url: format!("/users/{}/assignLicense", path_segment(user_id)),
                headers: Some(JSON_CONTENT),
                body: Some(OpBody::Assign(AssignBody {
                    add_licenses: add,
                    remove_licenses: remove,
                })),
            },
            WriteOp::SetUsageLocation {
                user_id,
                usage_location,
            } => BatchRequest {
                id: id.to_string(),
                method: "PATCH",
                url: format!("/users/{}", path_segment(user_id)),
                headers: Some(JSON_CONTENT),
                body: Some(OpBody::UsageLocation { usage_location }),
            },
        }
    }
}

/// A `$batch` request body: `{"requests": [...]}` (see
/// <https://learn.microsoft.com/graph/json-batching>).
#[derive(Serialize)]
struct Batch<'a> {
    requests: Vec<BatchRequest<'a>>,
}

/// One request of a `$batch`.
#[derive(Serialize)]
struct BatchRequest<'a> {
    id: String,
    method: &'static str,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<ContentType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<OpBody<'a>>,
}

/// A request's headers inside a `$batch`: Graph asks for `Content-Type` with every body.
#[derive(Clone, Copy, Serialize)]
struct ContentType {
    #[serde(rename = "Content-Type")]
    content_type: &'static str,
}

const JSON_CONTENT: ContentType = ContentType {
    content_type: "application/json",
};

/// The body of a write inside a `$batch`.
#[derive(Serialize)]
#[serde(untagged)]
enum OpBody<'a> {
    Assign(AssignBody<'a>),
    UsageLocation {
        #[serde(rename = "usageLocation")]
        usage_location: &'a str,
    },
}

/// `assignLicense`'s body: `{"addLicenses": [{"skuId", "disabledPlans"}], "removeLicenses":
/// [skuId]}` (<https://learn.microsoft.com/graph/api/user-assignlicense>).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AssignBody<'a> {
    pub(super) add_licenses: &'a [AssignedLicense],
    pub(super) remove_licenses: &'a [Uuid],
}

/// A `$batch` body as JSON bytes.
fn batch_body(requests: Vec<BatchRequest<'_>>) -> Vec<u8> {
    super::json_bytes(&Batch { requests })
}

/// How a write that succeeded is known to have been carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The directory answered it with a 2xx.
    Answered,
    /// Its answer was lost (a 5xx, a timeout, a closed connection: [`DirectoryError::fate_unknown`]);
    /// a read of the user afterwards shows the change, so it was not sent again.
    SeenAfterLostAnswer,
}

impl WriteOp {
    fn user_id(&self) -> &str {
        match self {
            WriteOp::AssignLicense { user_id, .. } | WriteOp::SetUsageLocation { user_id, .. } => {
                user_id
            }
        }
    }

    /// Whether `user`, as read now, shows this write made.
    fn shows_in(&self, user: &User) -> bool {
        match self {
            WriteOp::AssignLicense { add, remove, .. } => {
                super::write_shows(&user.direct_licenses(), add, remove)
            }
            WriteOp::SetUsageLocation { usage_location, .. } => {
                user.usage_location.as_deref() == Some(usage_location.as_str())
            }
        }
    }
}

impl DirectoryClient {
    /// Run `ops` through `$batch` (groups of up to 20, sent concurrently within the client's
    /// limits) and return one outcome per op, in order. Transient failures are retried —
    /// only those ops — until they succeed, fail for good, or the retry budget is spent.
    ///
    /// A write is never sent twice blindly: one whose answer was lost
    /// ([`DirectoryError::fate_unknown`]) is read before its retry. A read that shows the
    /// change ends it as [`Written::SeenAfterLostAnswer`]; one that does not sends it again; a
    /// read that fails leaves it failed with its unknown fate, for the caller to read later.
    pub async fn write_batch(&self, ops: &[WriteOp]) -> Vec<Result<Written, DirectoryError>> {
        let unanswered = std::sync::Mutex::new(std::collections::HashSet::<usize>::new());
        let unanswered = &unanswered;
        self.batched(ops.len(), "$batch", |chunk| async move {
            let lost: Vec<usize> = {
                let set = unanswered.lock().unwrap_or_else(|p| p.into_inner());
                chunk.iter().copied().filter(|i| set.contains(i)).collect()
            };
            let mut out = Vec::with_capacity(chunk.len());
            let mut send: Vec<usize> = chunk.iter().copied().filter(|i| !lost.contains(i)).collect();
            if !lost.is_empty() {
                let ids: Vec<String> = lost.iter().map(|&i| ops[i].user_id().to_owned()).collect();
                let users = self.read_users(&ids).await;
                for (i, user) in lost.into_iter().zip(users) {
                    match user {
                        Ok(user) if ops[i].shows_in(&user) => {
                            out.push((i, Ok(Written::SeenAfterLostAnswer)));
                        }
                        Ok(_) => send.push(i),
                        Err(e) => out.push((
                            i,
                            Err(DirectoryError::unavailable(format!(
                                "the answer to the write was lost, and reading the user to see whether it was made failed: {e}"
                            ))),
                        )),
                    }
                }
            }
            send.sort_unstable();
            if !send.is_empty() {
                let sent = self.send_batch(ops, &send).await;
                let mut set = unanswered.lock().unwrap_or_else(|p| p.into_inner());
                for (i, r) in sent {
                    match r {
                        Ok(()) => {
                            set.remove(&i);
                            out.push((i, Ok(Written::Answered)));
                        }
                        Err(e) => {
                            if e.fate_unknown() {
                                set.insert(i);
                            } else {
                                set.remove(&i);
                            }
                            out.push((i, Err(e)));
                        }
                    }
                }
            }
            out
        })
        .await
    }

    /// Send `n` requests in `$batch`es of up to 20 through `send` (concurrently within the
    /// client's limits) and return one outcome per request, in order. Transient failures are
    /// retried — only those requests — until they succeed, fail for good, or their retry budget
    /// (`directory.retry_max_attempts` each, `directory.retry_max_total_secs` in all) is spent.
    ///
    /// Retries are not held to rounds: the requests that failed in one `$batch` go again
    /// together once their own backoff and the longest `Retry-After` among them have passed,
    /// while the other `$batch`es are still out. So a `$batch` waiting for the write budget, or
    /// a request unlucky several times in a row, delays no other request's retry — under a
    /// directory that fails many requests (503s), the budget keeps being used instead of idling
    /// until the slowest `$batch` of a round is back.
    async fn batched<T, F, Fut>(
        &self,
        n: usize,
        route: &'static str,
        send: F,
    ) -> Vec<Result<T, DirectoryError>>
    where
        T: Clone,
        F: Fn(Vec<usize>) -> Fut,
        Fut: std::future::Future<Output = Vec<(usize, Result<T, DirectoryError>)>>,
    {
        let mut outcomes: Vec<Option<Result<T, DirectoryError>>> = vec![None; n];
        // Each request's own backoff, made at its first transient failure.
        let mut backoffs: Vec<Option<backon::ExponentialBackoff>> = Vec::new();
        backoffs.resize_with(n, || None);
        let started = Instant::now();
        let total = Duration::from_secs(self.inner.tuning.retry_max_total_secs);
        let mut in_flight = FuturesUnordered::new();
        // Requests to send again, each group at its own time.
        let mut waiting: Vec<(Instant, Vec<usize>)> = Vec::new();
        let mut due: Vec<usize> = (0..n).collect();
        loop {
            for chunk in due.chunks(MAX_BATCH) {
                in_flight.push(send(chunk.to_vec()));
            }
            due.clear();
            let next = waiting.iter().map(|(at, _)| *at).min();
            if in_flight.is_empty() && next.is_none() {
                break;
            }
            tokio::select! {
                Some(results) = in_flight.next(), if !in_flight.is_empty() => {
                    let mut retry = Vec::new();
                    let mut wait = Duration::ZERO;
                    for (index, result) in results {
                        match result {
                            Err(e) if e.is_transient() => {
                                // A request whose own retries are spent keeps its error.
                                if let Some(delay) = backoffs[index]
                                    .get_or_insert_with(|| self.backoff().build())
                                    .next()
                                {
                                    // `Retry-After` when the directory names one,
                                    // else the backoff (see `adjust_delay`).
                                    wait = wait.max(e.retry_after().unwrap_or(delay));
                                    retry.push(index);
                                }
                                outcomes[index] = Some(Err(e));
                            }
                            other => outcomes[index] = Some(other),
                        }
                    }
                    if !retry.is_empty() && started.elapsed() + wait <= total {
                        metrics::counter!("licensor_directory_retries_total", "route" => route)
                            .increment(retry.len() as u64);
                        waiting.push((Instant::now() + wait, retry));
                    }
                }
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)),
                    if next.is_some() => {
                    let now = Instant::now();
                    waiting.retain_mut(|(at, group)| {
                        if *at <= now {
                            due.append(group);
                            false
                        } else {
                            true
                        }
                    });
                    due.sort_unstable();
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(DirectoryError::unavailable("not sent"))))
            .collect()
    }

    /// The ops at `indexes` (up to 20), as the write budget lets them go: the limiter may grant
    /// only part of them now, and each part goes out as its own `$batch` as soon as it is
    /// granted. A request answered 429 was not carried out: it goes back to the limiter at once
    /// (a few times at most), which sends it when the window has room, instead of waiting for
    /// the whole round's retry. An outcome per index.
    async fn send_batch(
        &self,
        ops: &[WriteOp],
        indexes: &[usize],
    ) -> Vec<(usize, Result<(), DirectoryError>)> {
        let limiter = &self.inner.limiter;
        let mut out = Vec::with_capacity(indexes.len());
        let mut pending: Vec<usize> = indexes.to_vec();
        // Rounds that met 429s; writes withdrawn before they went (see `Grant::send_now`) are
        // asked for again without counting one.
        let mut again = 0;
        loop {
            let mut results: Vec<(usize, Result<(), DirectoryError>)> = Vec::new();
            let mut withdrawn: Vec<usize> = Vec::new();
            let mut sending = FuturesUnordered::new();
            let mut rest: &[usize] = &pending;
            while !rest.is_empty() {
                let wanted = rest.len() as u32;
                let patience = self.patience;
                tokio::select! {
                    grant = async move {
                        match patience {
                            Some(p) => limiter.acquire_up_to_within(wanted, p).await,
                            None => Ok(limiter.acquire_up_to(wanted).await),
                        }
                    } => match grant {
                        Ok(grant) => {
                            self.redeem(grant.writes());
                            let (now, later) =
                                rest.split_at((grant.writes() as usize).min(rest.len()));
                            sending.push(self.send_granted(ops, now, grant));
                            rest = later;
                        }
                        // The budget is spent beyond the client's patience: the writes not
                        // granted are not sent; the caller takes them up again later.
                        Err(until) => {
                            results.extend(
                                rest.iter().map(|&i| (i, Err(DirectoryError::Deferred { until }))),
                            );
                            rest = &[];
                        }
                    },
                    Some(done) = sending.next(), if !sending.is_empty() => match done {
                        Ok(done) => results.extend(done),
                        Err(w) => withdrawn.extend(w),
                    },
                    // The work stopped: the writes not granted yet are not sent, and do not
                    // wait for the budget first.
                    () = self.until_stopped() => {
                        results.extend(rest.iter().map(|&i| (i, Err(DirectoryError::Stopped))));
                        rest = &[];
                    }
                }
            }
            while let Some(done) = sending.next().await {
                match done {
                    Ok(done) => results.extend(done),
                    Err(w) => withdrawn.extend(w),
                }
            }
            drop(sending);
            let mut refused = Vec::new();
            for (i, r) in results {
                match r {
                    Err(DirectoryError::Transient {
                        code: ItemCode::Throttled,
                        ..
                    }) if again < REQUEUES => refused.push(i),
                    other => out.push((i, other)),
                }
            }
            if !refused.is_empty() {
                metrics::counter!("licensor_directory_retries_total", "route" => "$batch")
                    .increment(refused.len() as u64);
                again += 1;
            }
            if refused.is_empty() && withdrawn.is_empty() {
                break;
            }
            refused.append(&mut withdrawn);
            refused.sort_unstable();
            pending = refused;
        }
        out
    }

    /// One `$batch` of the ops at `indexes`, under `grant`; an outcome per index.
    async fn send_granted(
        &self,
        ops: &[WriteOp],
        indexes: &[usize],
        grant: Grant,
    ) -> Result<Vec<(usize, Result<(), DirectoryError>)>, Vec<usize>> {
        let place = match self.place_in_flight().await {
            Ok(p) => p,
            Err(e) => {
                grant.unused();
                return Ok(indexes.iter().map(|&i| (i, Err(e.clone()))).collect());
            }
        };
        let Some(grant) = self.still_goes(grant) else {
            // The budget has no room for them after all: asked for again.
            return Err(indexes.to_vec());
        };
        let body = batch_body(indexes.iter().map(|&i| ops[i].request(i)).collect());
        let url = self.url("/$batch");
        let answer = self
            .send_paced(
                Method::POST,
                &url,
                Some(body.as_slice()),
                Pace::Granted(place),
                "$batch",
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            // Not sent: the work stopped before the batch's turn came.
            Err(DirectoryError::Stopped) => {
                grant.unused();
                return Ok(indexes
                    .iter()
                    .map(|&i| (i, Err(DirectoryError::Stopped)))
                    .collect());
            }
            // The whole batch failed (throttled, unavailable, dropped): every op shares the fate.
            Err(e) => {
                let fate = match &e {
                    DirectoryError::Transient {
                        code: ItemCode::Throttled,
                        retry_after,
                        ..
                    } => WriteAnswer::Refused {
                        retry_after: *retry_after,
                    },
                    e if e.refused() => WriteAnswer::NotCarriedOut,
                    _ => WriteAnswer::Unknown,
                };
                grant.answered(&vec![fate; indexes.len()]);
                return Ok(indexes.iter().map(|&i| (i, Err(e.clone()))).collect());
            }
        };
        let responses = batch_responses(&answer.body);
        let mut out = Vec::with_capacity(indexes.len());
        let mut throttled_items = 0u64;
        // The directory's answer to each write, in the order it charged them (the batch's).
        let mut answers: Vec<WriteAnswer> = Vec::with_capacity(indexes.len());
        let mut highest: Option<f64> = None;
        for &i in indexes {
            let id = i.to_string();
            let response = responses.iter().find(|r| r.id == id);
            let Some(response) = response else {
                answers.push(WriteAnswer::Unknown);
                out.push((
                    i,
                    Err(DirectoryError::unavailable(
                        "no answer for this request in the batch",
                    )),
                ));
                continue;
            };
            let status = response.status;
            let headers = &response.headers;
            let reading = header_ci(headers, "x-ms-throttle-limit-percentage")
                .and_then(|v| v.trim().parse::<f64>().ok());
            if let Some(r) = reading {
                highest = Some(highest.map_or(r, |h| h.max(r)));
            }
            if (200..300).contains(&status) {
                answers.push(WriteAnswer::Accepted { reading });
                out.push((i, Ok(())));
                continue;
            }
            let retry_after =
                header_ci(headers, "retry-after").and_then(|v| parse_retry_after(Some(&v)));
            if status == 429 {
                throttled_items += 1;
            }
            answers.push(WriteAnswer::of_status(status, reading, retry_after));
            out.push((i, Err(response.error(retry_after))));
        }
        grant.answered(&answers);
        // The budget's share right after this batch: the highest reading among its requests.
        self.note_budget(highest);
        self.note_throttled(throttled_items);
        Ok(out)
    }
}

/// One answer inside a `$batch` answer, borrowed from the answer's bytes: the body Graph sends
/// back with a write (the whole user) is kept as raw JSON and only read when needed (a read's
/// user, an error's code and message), never built as a JSON tree.
#[derive(Deserialize)]
struct BatchResponse<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

impl BatchResponse<'_> {
    /// The directory's refusal this answer carries (its status and `error` body).
    fn error(&self, retry_after: Option<Duration>) -> DirectoryError {
        let body: Value = self
            .body
            .and_then(|b| serde_json::from_str(b.get()).ok())
            .unwrap_or_default();
        classify_value(self.status, &body, retry_after)
    }
}

#[derive(Deserialize)]
struct BatchAnswer<'a> {
    #[serde(default, borrow)]
    responses: Vec<BatchResponse<'a>>,
}

/// The `responses` of a `$batch` answer's body (none when it is not one).
fn batch_responses(body: &[u8]) -> Vec<BatchResponse<'_>> {
    serde_json::from_slice::<BatchAnswer>(body)
        .map(|a| a.responses)
        .unwrap_or_default()
}

/// A header of a batch response, looked up without regard to case.
fn header_ci(headers: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    headers.iter().find_map(|(k, v)| {
        k.eq_ignore_ascii_case(name).then(|| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    })
}

impl DirectoryClient {
    /// Read members' licenses and usage location through `$batch` (`GET /users/{id}` with
    /// `$select`, 20 per batch, batches sent concurrently within the client's in-flight limit).
    /// Paced as reads: nothing is taken from the write budget. One outcome per id, in order;
    /// requests that failed transiently are retried like writes are.
    pub async fn read_users(&self, ids: &[String]) -> Vec<Result<User, DirectoryError>> {
        self.batched(ids.len(), "$batch.read", |chunk| async move {
            self.send_read_batch(ids, &chunk).await
        })
        .await
    }

    /// One `$batch` of reads of the users at `indexes`.
    async fn send_read_batch(
        &self,
        ids: &[String],
        indexes: &[usize],
    ) -> Vec<(usize, Result<User, DirectoryError>)> {
        let body = batch_body(
            indexes
                .iter()
                .map(|&i| BatchRequest {
                    id: i.to_string(),
                    method: "GET",
                    url: format!("/users/{}?$select={USER_SELECT}", path_segment(&ids[i])),
                    headers: None,
                    body: None,
                })
                .collect(),
        );
        let url = self.url("/$batch");
        let answer = self
            .send_once(Method::POST, &url, Some(body.as_slice()), 0, "$batch.read")
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return indexes.iter().map(|&i| (i, Err(e.clone()))).collect(),
        };
        let responses = batch_responses(&answer.body);
        indexes
            .iter()
            .map(|&i| {
                let id = i.to_string();
                let Some(response) = responses.iter().find(|r| r.id == id) else {
                    return (
                        i,
                        Err(DirectoryError::unavailable(
                            "no answer for this request in the batch",
                        )),
                    );
                };
                let status = response.status;
                if (200..300).contains(&status) {
                    let user =
                        serde_json::from_str::<User>(response.body.map_or("null", |b| b.get()))
                            .map_err(|e| {
                                DirectoryError::unavailable(format!("unreadable user: {e}"))
                            });
                    return (i, user);
                }
                let retry_after = header_ci(&response.headers, "retry-after")
                    .and_then(|v| parse_retry_after(Some(&v)));
                if status == 429 {
                    self.note_throttled(1);
                }
                (i, Err(response.error(retry_after)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::DirectoryTuning;
    use crate::directory::DirectoryConfig;

    fn client(retry_max_attempts: usize) -> DirectoryClient {
        DirectoryClient::new(
            DirectoryConfig {
                token_url: "http://127.0.0.1:9/token".into(),
                graph_url: "http://127.0.0.1:9/v1.0".into(),
                client_id: "app".into(),
                client_secret: "secret".into(),
            },
            DirectoryTuning {
                retry_max_attempts,
                retry_min_delay_ms: 100,
                retry_max_delay_ms: 2_000,
                ..DirectoryTuning::default()
            },
        )
        .unwrap()
    }

    fn unavailable_for(retry_after: Duration) -> DirectoryError {
        DirectoryError::Transient {
            code: ItemCode::DirectoryUnavailable,
            detail: "503".into(),
            retry_after: Some(retry_after),
            refused: true,
        }
    }

    /// The requests of a `$batch` answered 503 go again after their `Retry-After` (1 s), while
    /// another `$batch` of the same call is still out (answered after 5 s): no round makes
    /// them wait for it.
    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_goes_again_while_another_is_still_out() {
        let client = client(8);
        let start = tokio::time::Instant::now();
        let sent: Mutex<Vec<(Duration, Vec<usize>)>> = Mutex::new(Vec::new());
        let sent = &sent;
        let outcomes = client
            .batched(40, "$batch", |chunk| async move {
                let attempt = {
                    let mut sent = sent.lock().unwrap();
                    sent.push((start.elapsed(), chunk.clone()));
                    sent.iter().filter(|(_, c)| c[0] == chunk[0]).count()
                };
                if chunk[0] == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let answer = |_| match attempt {
                        1 => Err(unavailable_for(Duration::from_secs(1))),
                        _ => Ok(()),
                    };
                    chunk.iter().map(|&i| (i, answer(i))).collect()
                } else {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    chunk.iter().map(|&i| (i, Ok(()))).collect()
                }
            })
            .await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let sent = sent.lock().unwrap().clone();
        let first: Vec<usize> = (0..20).collect();
        let second: Vec<usize> = (20..40).collect();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(sent[0], (Duration::ZERO, first.clone()));
        assert_eq!(sent[1], (Duration::ZERO, second));
        let (at, again) = &sent[2];
        assert_eq!(again, &first);
        assert!(
            *at >= Duration::from_millis(1_010) && *at < Duration::from_secs(2),
            "sent again at {at:?}, not after Retry-After while the other batch was out"
        );
    }

    /// Each request has its own retries: one failed every time ends with its error once its
    /// `retry_max_attempts` retries are spent, and is sent exactly 1 + that many times; those
    /// failed with it once go again with it, and succeed.
    #[tokio::test(start_paused = true)]
    async fn a_request_ends_with_its_error_when_its_own_retries_are_spent() {
        let client = client(3);
        let sent: Mutex<Vec<Vec<usize>>> = Mutex::new(Vec::new());
        let sent = &sent;
        let outcomes = client
            .batched(25, "$batch", |chunk| async move {
                let times = {
                    let mut sent = sent.lock().unwrap();
                    sent.push(chunk.clone());
                    sent.iter().filter(|c| c.contains(&chunk[0])).count()
                };
                chunk
                    .iter()
                    .map(|&i| match i {
                        7 => (i, Err(unavailable_for(Duration::from_millis(300)))),
                        0..20 if times == 1 => (i, Err(unavailable_for(Duration::ZERO))),
                        _ => (i, Ok(())),
                    })
                    .collect()
            })
            .await;
        for (i, outcome) in outcomes.iter().enumerate() {
            match i {
                7 => assert!(outcome.as_ref().is_err_and(|e| e.is_transient()), "{i}"),
                _ => assert!(outcome.is_ok(), "{i}: {outcome:?}"),
            }
        }
        let sent = sent.lock().unwrap().clone();
        let times = |i: usize| sent.iter().filter(|c| c.contains(&i)).count();
        assert_eq!(times(7), 4, "{sent:?}");
        assert_eq!(times(0), 2, "{sent:?}");
        assert_eq!(times(19), 2, "{sent:?}");
        assert_eq!(times(24), 1, "{sent:?}");
    }
}
