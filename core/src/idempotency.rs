//! `Idempotency-Key`: the first answer to each key of a tenant is kept for a day; a repeat with
//! the same key and the same request gets that answer again and does nothing again.

use chrono::{Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set, TryInsertResult};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::Db;
use crate::entities::idempotency_key;
use crate::error::{StoreError, StoreResult};

/// How long a key is remembered.
pub const RETENTION_HOURS: i64 = 24;

/// How long a claim of a key holds it without being renewed: the request answering it renews
/// it every [`LEASE_RENEWAL`] while it runs (see [`renew`]). A key still unanswered after its
/// lease ran out was being answered by a process that stopped ([`Claim::Interrupted`]). Long
/// enough that a database slow to answer a renewal does not make a live request look dead.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a request answering a key renews its claim ([`LEASE`]).
pub const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(10);

fn lease_from(now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    now + Duration::seconds(LEASE.as_secs() as i64)
}

/// A key as clients may send it: 1–200 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What identifies a request for a key: method, path and body — a JSON body as its value (keys
/// in order, no white space), so the same request sent with its keys in another order is the
/// same request; any other body as its bytes. A job submission (`POST /v1/jobs`) is taken as
/// the [`JobRequest`](crate::jobs::JobRequest) it reads as, so options left to their defaults
/// and the same defaults sent explicitly (`"transitive": false`, `"usage_location": null`,
/// `"disabled_plans": []`, as `licensor jobs submit` sends them) are the same request.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    let job_submission = method == "POST" && path == "/v1/jobs";
    // serde_json's maps are ordered by key (no `preserve_order`), so this writes them sorted.
    match serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| match job_submission {
            // Read and checked as the job it asks for (group ids in lower case, each once),
            // then written back with every default.
            true => serde_json::from_value::<crate::jobs::JobRequest>(v.clone())
                .ok()
                .and_then(|r| r.parse().ok())
                .map(crate::jobs::JobRequest::from)
                .and_then(|r| serde_json::to_value(r).ok())
                .unwrap_or(v),
            false => v,
        })
        .and_then(|v| serde_json::to_vec(&v).ok())
    {
        Some(canonical) => h.update(canonical),
        None => h.update(body),
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The first answer to a key.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The `Location` header (a created job's address), sent again with a replay.
    pub location: Option<String>,
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The key is new: handle the request, then [`finish`] or [`release`] this claim (its
    /// row's id: a late retry of either never touches a later claim of the same key).
    Fresh(i64),
    /// Answered before: send this again.
    Replay(Stored),
    /// The first request with this key is still being answered.
    InProgress,
    /// The first request with this key was being answered by a process that stopped before it
    /// kept or released the key (its [`LEASE`] ran out): whether it took effect is not known
    /// here. The key stays taken until it expires; the client looks at what it asked for and
    /// sends again with a new key if it did not happen.
    Interrupted,
    /// The key was used for a different request.
    Reused,
}

/// How many times [`claim`] tries to insert a key whose earlier claim is released each time
/// between the insert that finds it and the read of it.
const CLAIM_TRIES: usize = 3;

/// Claim `key` for a request with `fingerprint`. A key whose earlier claim is released (its
/// request was answered with a server error) between this claim's insert, which found it, and
/// the read of it is claimed again — it is never answered as if it did not exist; should that
/// happen [`CLAIM_TRIES`] times running, the key is in use ([`Claim::InProgress`]).
pub async fn claim(db: &Db, tenant_id: Uuid, key: &str, fingerprint: &str) -> StoreResult<Claim> {
    let now = Utc::now();
    // Expired keys are looked for first and deleted only when there are some: a delete takes
    // SQLite's write lock even when it finds nothing, and every submit claims a key
    // (`licensor-bench --scenario msp`: 500 such deletes as 500 jobs were submitted at once).
    let expired = || {
        sea_orm::Condition::all()
            .add(idempotency_key::Column::TenantId.eq(tenant_id))
            .add(idempotency_key::Column::CreatedAt.lt(now - Duration::hours(RETENTION_HOURS)))
    };
    let any_expired = idempotency_key::Entity::find()
        .select_only()
        .column(idempotency_key::Column::Id)
        .filter(expired())
        .into_tuple::<i64>()
        .one(db)
        .await?
        .is_some();
    if any_expired {
        idempotency_key::Entity::delete_many()
            .filter(expired())
            .exec(db)
            .await?;
    }
    for _ in 0..CLAIM_TRIES {
        if let Some(claim) = try_claim(db, tenant_id, key, fingerprint, now).await? {
            return Ok(claim);
        }
    }
    Ok(Claim::InProgress)
}

/// One try of [`claim`]: `None` when the key's row was gone by the time it was read back.
///
/// A new key is claimed by its insert alone (`INSERT … ON CONFLICT DO NOTHING RETURNING id`):
/// nothing stands between the row written and the claim handed to the request. When the claim
/// was an insert followed by a read of the row, a read that found no connection free in time
/// (a burst of submits holding the API's pool) answered the request 503 and left its key
/// claimed by nobody: the retries were told "in progress" for the lease, then "interrupted" —
/// `licensor-bench --scenario msp` on PostgreSQL stopped on it in two runs of three.
async fn try_claim(
    db: &Db,
    tenant_id: Uuid,
    key: &str,
    fingerprint: &str,
    now: chrono::DateTime<Utc>,
) -> StoreResult<Option<Claim>> {
    let inserted = idempotency_key::Entity::insert(idempotency_key::ActiveModel {
        tenant_id: Set(tenant_id),
        key: Set(key.to_owned()),
        fingerprint: Set(fingerprint.to_owned()),
        status: Set(None),
        content_type: Set(None),
        body: Set(None),
        location: Set(None),
        created_at: Set(now),
        // From when the row is written, not from when the claim began: waiting for a
        // connection does not use up the lease.
        lease_until: Set(Some(lease_from(Utc::now()))),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([
        idempotency_key::Column::TenantId,
        idempotency_key::Column::Key,
    ])
    .exec(db)
    .await?;
    if let TryInsertResult::Inserted(r) = inserted {
        return Ok(Some(Claim::Fresh(r.last_insert_id)));
    }
    let Some(row) = find(db, tenant_id, key).await? else {
        // The claim the insert found was released meanwhile: the key is free again.
        return Ok(None);
    };
    if row.fingerprint != fingerprint {
        return Ok(Some(Claim::Reused));
    }
    Ok(Some(match (row.status, row.body) {
        (Some(status), Some(body)) => Claim::Replay(Stored {
            status: u16::try_from(status).unwrap_or(500),
            content_type: row.content_type,
            body,
            location: row.location,
        }),
        _ if row.lease_until.is_some_and(|until| until < now) => Claim::Interrupted,
        _ => Claim::InProgress,
    }))
}

/// Renew claim `claim` ([`Claim::Fresh`]) of a key while its request is still being answered
/// (every [`LEASE_RENEWAL`]); a key answered or released meanwhile is left as it is. Retried
/// while the database is unavailable (see [`after_request_retries`]): a burst of requests that
/// holds every connection of the API's pool for longer than a connection wait must not let a
/// live request's lease run out, or a retry of it would be told its server stopped
/// ([`Claim::Interrupted`]).
pub async fn renew(db: &Db, tenant_id: Uuid, key: &str, claim: i64) -> StoreResult<()> {
    retried(|| extend(db, tenant_id, key, claim)).await
}

/// One try of [`renew`]. The lease runs from when a connection (on SQLite, the file's write
/// lock) is had, not from when one was asked for: a renewal that waited does not land already
/// spent.
async fn extend(db: &Db, tenant_id: Uuid, key: &str, claim: i64) -> StoreResult<()> {
    let txn = crate::db::begin(db).await?;
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::LeaseUntil,
            Expr::value(lease_from(Utc::now())),
        )
        .filter(unanswered_claim(tenant_id, key, claim))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Claim `claim` of the tenant's `key`, while it has no answer kept.
fn unanswered_claim(tenant_id: Uuid, key: &str, claim: i64) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(idempotency_key::Column::TenantId.eq(tenant_id))
        .add(idempotency_key::Column::Key.eq(key))
        .add(idempotency_key::Column::Id.eq(claim))
        .add(idempotency_key::Column::Status.is_null())
}

async fn find(db: &Db, tenant_id: Uuid, key: &str) -> StoreResult<Option<idempotency_key::Model>> {
    Ok(idempotency_key::Entity::find()
        .filter(idempotency_key::Column::TenantId.eq(tenant_id))
        .filter(idempotency_key::Column::Key.eq(key))
        .one(db)
        .await?)
}

/// How a key's [`renew`], [`finish`] and [`release`] retry while the database cannot be
/// reached or has no connection free (a burst of requests holds every connection of the API's
/// pool): up to 16 tries a second apart at most, each waiting up to the API's connection wait
/// (1 s): about 30 s in all. A key neither kept nor released is "in progress" (409
/// `idempotency_key_in_use`) while its claim is renewed, and "interrupted" once its [`LEASE`]
/// ran out, until it expires after [`RETENTION_HOURS`]: answering one request 503 under load
/// must lock its key neither for a day nor for good.
fn after_request_retries() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(1))
        .with_jitter()
        .with_max_times(16)
}

/// Run `step` again while it fails because the database is unavailable (see
/// [`StoreError::is_unavailable`]), as [`after_request_retries`] says.
async fn retried<F, Fut>(step: F) -> StoreResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
{
    use backon::Retryable;
    step.retry(after_request_retries())
        .when(StoreError::is_unavailable)
        .await
}

/// Keep the answer to claim `claim` ([`Claim::Fresh`]) of a key. Retried while the database is
/// unavailable (see [`after_request_retries`]).
pub async fn finish(
    db: &Db,
    tenant_id: Uuid,
    key: &str,
    claim: i64,
    answer: &Stored,
) -> StoreResult<()> {
    retried(|| keep(db, tenant_id, key, claim, answer)).await
}

async fn keep(db: &Db, tenant_id: Uuid, key: &str, claim: i64, answer: &Stored) -> StoreResult<()> {
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::Status,
            Expr::value(i32::from(answer.status)),
        )
        .col_expr(
            idempotency_key::Column::ContentType,
            Expr::value(answer.content_type.clone()),
        )
        .col_expr(
            idempotency_key::Column::Body,
            Expr::value(answer.body.clone()),
        )
        .col_expr(
            idempotency_key::Column::Location,
            Expr::value(answer.location.clone()),
        )
        .filter(idempotency_key::Column::TenantId.eq(tenant_id))
        .filter(idempotency_key::Column::Key.eq(key))
        .filter(idempotency_key::Column::Id.eq(claim))
        .exec(db)
        .await?;
    Ok(())
}

/// Forget claim `claim` ([`Claim::Fresh`]) of a key whose request could not be answered (a
/// server error): a retry with the same key runs again. Retried while the database is
/// unavailable (see [`after_request_retries`]); a retry of a delete that had taken effect
/// (the connection failed after it) leaves a later claim of the key alone.
pub async fn release(db: &Db, tenant_id: Uuid, key: &str, claim: i64) -> StoreResult<()> {
    retried(|| forget(db, tenant_id, key, claim)).await
}

async fn forget(db: &Db, tenant_id: Uuid, key: &str, claim: i64) -> StoreResult<()> {
    idempotency_key::Entity::delete_many()
        .filter(unanswered_claim(tenant_id, key, claim))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    const G: &str = "8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01";
    const S: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";

    #[test]
    fn a_job_with_its_defaults_spelt_out_is_the_same_request() {
        let minimal =
            format!(r#"{{"kind":"assign","groups":["{G}"],"add_licenses":[{{"sku_id":"{S}"}}]}}"#);
        // As `licensor jobs submit` sends it, in another key order.
        let explicit = format!(
            r#"{{"groups":["{G}"],"transitive":false,"kind":"assign","usage_location":null,
                "add_licenses":[{{"disabled_plans":[],"sku_id":"{S}"}}]}}"#
        );
        let fp = |body: &str| fingerprint("POST", "/v1/jobs", body.as_bytes());
        assert_eq!(fp(&minimal), fp(&explicit));
        // Group ids are compared as the job holds them (lower case).
        assert_eq!(fp(&minimal), fp(&minimal.replace(G, &G.to_uppercase())));
        // Another intent is another request.
        let transitive = minimal.replace(r#""kind""#, r#""transitive":true,"kind""#);
        assert_ne!(fp(&minimal), fp(&transitive));
        let located = minimal.replace(r#""kind""#, r#""usage_location":"SE","kind""#);
        assert_ne!(fp(&minimal), fp(&located));
        // A body that is no job request (refused by the handler) is taken as its JSON value.
        assert_ne!(fp(r#"{"kind":"assign"}"#), fp(r#"{"kind":"assign","x":1}"#));
        // Other routes compare JSON values as sent.
        assert_ne!(
            fingerprint("POST", "/v1/licenses", br#"{"name":"a","seats":1}"#),
            fingerprint(
                "POST",
                "/v1/licenses",
                br#"{"name":"a","seats":1,"notes":null}"#
            )
        );
        assert_eq!(
            fingerprint("POST", "/v1/licenses", br#"{"seats":1,"name":"a"}"#),
            fingerprint("POST", "/v1/licenses", br#"{"name":"a","seats":1}"#)
        );
    }
}
