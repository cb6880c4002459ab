//! The delivery log and the life of a delivery: `pending` (waiting for its first or next try,
//! or being tried) → `delivered` (the endpoint answered 2xx) or `failed` (no 2xx within the
//! retry window, the endpoint disabled, or its URL no longer allowed). A redeliver makes a
//! delivered or failed delivery pending again with a fresh retry window.
//!
//! An attempt is made under a lease ([`claim`]), and its outcome recorded only by the holder of
//! that lease ([`record`]), so repeated queue messages never send one attempt twice at once; a
//! worker that dies mid-attempt leaves a lease that runs out, and the reconciler
//! ([`overdue`]) queues the delivery again.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::db::Db;
use crate::entities::{webhook_delivery, webhook_endpoint};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};
use crate::queue::{Message, Queue, QueueError};

/// Attempts kept in a delivery's log (the count goes on beyond it).
pub const LOG_ATTEMPTS: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(format!(
                "unknown delivery status `{other}` (pending, delivered or failed)"
            )),
        }
    }
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status; `None` when it gave none (timeout, refused connection).
    pub status_code: Option<u16>,
    /// Why it did not count as delivered, when it did not (`timeout`, `connection refused`,
    /// `answered 500`, `redirect not followed` …).
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The start of the endpoint's answer (at most 256 characters); nothing more is kept.
    pub response: Option<String>,
}

/// A delivery in the log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Also the message's `webhook-id` header, the same on every attempt.
    pub id: Uuid,
    pub endpoint_id: Uuid,
    #[schema(value_type = String, example = "job.finished")]
    pub event: String,
    pub job_id: Uuid,
    /// The job's run whose end fired the event.
    pub run: i32,
    pub status: DeliveryStatus,
    /// Attempts made, all told.
    pub attempts: i32,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next try is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The last attempts, oldest first.
    pub attempt_log: Vec<Attempt>,
}

impl DeliveryView {
    fn of(m: webhook_delivery::Model) -> StoreResult<DeliveryView> {
        let status: DeliveryStatus = m.status.parse().map_err(StoreError::Internal)?;
        Ok(DeliveryView {
            id: m.id,
            endpoint_id: m.endpoint_id,
            event: m.event,
            job_id: m.job_id,
            run: m.run_no,
            status,
            attempts: m.attempts,
            last_status_code: m.last_status_code,
            last_error: m.last_error,
            last_attempt_at: m.last_attempt_at,
            next_attempt_at: (status == DeliveryStatus::Pending)
                .then_some(m.next_attempt_at)
                .flatten(),
            created_at: m.created_at,
            delivered_at: m.delivered_at,
            attempt_log: log_of(&m.attempt_log),
        })
    }
}

fn log_of(v: &Option<serde_json::Value>) -> Vec<Attempt> {
    v.as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

async fn endpoint_exists<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    endpoint_id: Uuid,
) -> StoreResult<()> {
    webhook_endpoint::Entity::find_by_id(endpoint_id)
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .select_only()
        .column(webhook_endpoint::Column::Id)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound("webhook"))
}

/// An endpoint's deliveries, newest first, optionally of some statuses.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    statuses: &[DeliveryStatus],
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<DeliveryView>> {
    endpoint_exists(db, tenant_id, endpoint_id).await?;
    let mut q = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id));
    if !statuses.is_empty() {
        q = q.filter(webhook_delivery::Column::Status.is_in(statuses.iter().map(|s| s.as_str())));
    }
    if let Some(after) = page.after {
        q = q.filter(webhook_delivery::Column::Id.lt(after));
    }
    let rows = q
        .order_by_desc(webhook_delivery::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.id);
    Ok(Page {
        data: page
            .data
            .into_iter()
            .map(DeliveryView::of)
            .collect::<StoreResult<_>>()?,
        next_cursor: page.next_cursor,
    })
}

/// Send a delivered or failed delivery again, with a fresh retry window; the caller queues it
/// after this returns. A pending one → 409 `delivery_pending` (it is being sent already).
pub async fn redeliver(
    db: &Db,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    delivery_id: Uuid,
    actor: Option<Uuid>,
) -> StoreResult<DeliveryView> {
    let txn = crate::db::begin(db).await?;
    endpoint_exists(&txn, tenant_id, endpoint_id).await?;
    let now = Utc::now();
    let changed = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(DeliveryStatus::Pending.as_str()),
        )
        .col_expr(webhook_delivery::Column::SeriesAttempts, Expr::value(0))
        .col_expr(webhook_delivery::Column::SeriesStartedAt, Expr::value(now))
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(
            webhook_delivery::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            webhook_delivery::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_delivery::Column::Id.eq(delivery_id))
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending.as_str()))
        .exec(&txn)
        .await?
        .rows_affected;
    let Some(m) = webhook_delivery::Entity::find_by_id(delivery_id)
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .one(&txn)
        .await?
    else {
        return Err(StoreError::NotFound("delivery"));
    };
    if changed == 0 {
        return Err(StoreError::conflict(
            "delivery_pending",
            "the delivery is pending: it is being sent or waits for its next try already",
        ));
    }
    audit::record(
        &txn,
        AuditEntry {
            tenant_id,
            actor_token_id: actor,
            action: "webhook.redelivered",
            target_type: "webhook_delivery",
            target_id: delivery_id.to_string(),
            before: None,
            after: Some(json!({"endpoint_id": endpoint_id, "event": m.event, "job_id": m.job_id})),
        },
    )
    .await?;
    txn.commit().await?;
    DeliveryView::of(m)
}

/// Queue the pending deliveries of a job that were never tried (the event its run just
/// ended with), after the transaction that recorded them committed. A failure here loses
/// nothing: the reconciler queues them.
pub async fn queue_for_job(db: &Db, queue: &Queue, job_id: Uuid) -> Result<usize, QueueErrorOr> {
    let rows: Vec<(Uuid, Uuid)> = webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::TenantId)
        .column(webhook_delivery::Column::Id)
        .filter(webhook_delivery::Column::JobId.eq(job_id))
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(webhook_delivery::Column::Attempts.eq(0))
        .into_tuple()
        .all(db)
        .await
        .map_err(|e| QueueErrorOr::Store(e.into()))?;
    let n = rows.len();
    queue
        .push_bulk(
            rows.into_iter()
                .map(|(tenant_id, delivery_id)| Message::Deliver {
                    tenant_id,
                    delivery_id,
                })
                .collect(),
        )
        .await
        .map_err(QueueErrorOr::Queue)?;
    Ok(n)
}

/// A failure to read deliveries or to queue them.
#[derive(Debug, thiserror::Error)]
pub enum QueueErrorOr {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Take a pending delivery that is due (allowing `slack` for clocks a little apart) and not
/// held by another attempt, for `owner` until `until`. Returns the delivery when `owner` holds
/// it now; `None` when it is not pending, not due yet, held, or gone — then there is nothing to
/// do (another message or the reconciler brings it back when it is due).
pub async fn claim(
    db: &Db,
    tenant_id: Uuid,
    delivery_id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
    slack: chrono::Duration,
) -> StoreResult<Option<webhook_delivery::Model>> {
    let now = Utc::now();
    let taken = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::LeaseOwner, Expr::value(owner))
        .col_expr(webhook_delivery::Column::LeaseUntil, Expr::value(until))
        .filter(webhook_delivery::Column::Id.eq(delivery_id))
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id))
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(webhook_delivery::Column::NextAttemptAt.lte(now + slack))
        .filter(
            webhook_delivery::Column::LeaseUntil
                .is_null()
                .or(webhook_delivery::Column::LeaseUntil.lt(now)),
        )
        .exec(db)
        .await?
        .rows_affected;
    if taken == 0 {
        return Ok(None);
    }
    Ok(webhook_delivery::Entity::find_by_id(delivery_id)
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id))
        .filter(webhook_delivery::Column::LeaseOwner.eq(owner))
        .one(db)
        .await?)
}

/// How an attempt ends the delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Record an attempt of `claimed` made by `owner` and what follows it. Recorded only while
/// `owner` still holds the delivery (a lease that ran out and was taken over loses its say);
/// returns whether it was recorded.
pub async fn record(
    db: &Db,
    claimed: &webhook_delivery::Model,
    owner: &str,
    attempt: Attempt,
    next: Next,
) -> StoreResult<bool> {
    let mut log = log_of(&claimed.attempt_log);
    log.push(attempt.clone());
    if log.len() > LOG_ATTEMPTS {
        log.drain(..log.len() - LOG_ATTEMPTS);
    }
    let log = serde_json::to_value(&log).map_err(StoreError::internal)?;
    let (status, next_at, delivered_at) = match next {
        Next::Delivered => (DeliveryStatus::Delivered, None, Some(attempt.at)),
        Next::RetryAt(at) => (DeliveryStatus::Pending, Some(at), None),
        Next::Failed => (DeliveryStatus::Failed, None, None),
    };
    let updated = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(status.as_str()),
        )
        .col_expr(
            webhook_delivery::Column::Attempts,
            Expr::col(webhook_delivery::Column::Attempts).add(1),
        )
        .col_expr(
            webhook_delivery::Column::SeriesAttempts,
            Expr::col(webhook_delivery::Column::SeriesAttempts).add(1),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(next_at),
        )
        .col_expr(
            webhook_delivery::Column::LastAttemptAt,
            Expr::value(attempt.at),
        )
        .col_expr(
            webhook_delivery::Column::LastStatusCode,
            Expr::value(attempt.status_code.map(i32::from)),
        )
        .col_expr(
            webhook_delivery::Column::LastError,
            // The column holds 300 characters; the log keeps the whole text.
            Expr::value(
                attempt
                    .error
                    .as_ref()
                    .map(|e| e.chars().take(300).collect::<String>()),
            ),
        )
        .col_expr(webhook_delivery::Column::AttemptLog, Expr::value(log))
        .col_expr(
            webhook_delivery::Column::DeliveredAt,
            Expr::value(delivered_at),
        )
        .col_expr(
            webhook_delivery::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            webhook_delivery::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_delivery::Column::Id.eq(claimed.id))
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(webhook_delivery::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?
        .rows_affected;
    Ok(updated == 1)
}

/// Pending deliveries due before `before` that no attempt holds: their queue message is late
/// or lost (a crash before it was pushed, a flushed queue, a worker that died mid-attempt).
/// Each is marked due now, so it is not picked up again before the next grace period runs out;
/// the caller queues them. At most 1,000 per call.
pub async fn overdue(db: &Db, before: DateTime<Utc>) -> StoreResult<Vec<(Uuid, Uuid)>> {
    let now = Utc::now();
    let rows: Vec<(Uuid, Uuid)> = webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::TenantId)
        .column(webhook_delivery::Column::Id)
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(webhook_delivery::Column::NextAttemptAt.lt(before))
        .filter(
            webhook_delivery::Column::LeaseUntil
                .is_null()
                .or(webhook_delivery::Column::LeaseUntil.lt(now)),
        )
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .limit(1000)
        .into_tuple()
        .all(db)
        .await?;
    for part in rows.chunks(500) {
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
            .filter(webhook_delivery::Column::Id.is_in(part.iter().map(|(_, id)| *id)))
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .exec(db)
            .await?;
    }
    Ok(rows)
}

/// Deliveries pending across all tenants, for the `licensor_webhook_deliveries_pending` gauge.
pub async fn pending_count(db: &Db) -> StoreResult<u64> {
    Ok(webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .count(db)
        .await?)
}
