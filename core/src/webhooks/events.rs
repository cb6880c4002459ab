//! The end of a job's run becomes one delivery per subscribed endpoint.
//!
//! [`on_job_end`] runs inside the transaction that records the end (finishing, failing or
//! cancelling the run), so the deliveries commit with the status or not at all; the unique key
//! (endpoint, job, run, event) makes a repeated step insert nothing more. A rerun that ends again
//! is a new run, so a new event.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::{Value, json};
use uuid::Uuid;

use super::EventType;
use super::deliveries::DeliveryStatus;
use super::endpoints::events_of;
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item, webhook_delivery, webhook_endpoint};
use crate::error::{StoreError, StoreResult};

/// Record the deliveries of the event that `status` fires for the job's current run, one per
/// enabled endpoint of the tenant that subscribed to it. Costs one indexed read of the tenant's
/// endpoints when none did. Call it on the transaction that records the end; the caller queues
/// the deliveries after commit ([`super::deliveries::queue_for_job`]), and the reconciler queues
/// any it did not.
pub async fn on_job_end<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    job_id: Uuid,
    status: JobStatus,
) -> StoreResult<u64> {
    let Some(event) = EventType::of_status(status) else {
        return Ok(0);
    };
    let endpoints: Vec<(Uuid, Value)> = webhook_endpoint::Entity::find()
        .select_only()
        .column(webhook_endpoint::Column::Id)
        .column(webhook_endpoint::Column::Events)
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id))
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .into_tuple()
        .all(conn)
        .await?;
    let endpoints: Vec<Uuid> = endpoints
        .into_iter()
        .filter(|(_, events)| events_of(events).contains(&event))
        .map(|(id, _)| id)
        .collect();
    if endpoints.is_empty() {
        return Ok(0);
    }
    let Some(job) = job::Entity::find_by_id(job_id)
        .filter(job::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
    else {
        return Ok(0);
    };
    let now = Utc::now();
    let body = payload(conn, &job, event, now).await?;
    let mut insert = Query::insert();
    insert.into_table(webhook_delivery::Entity).columns([
        webhook_delivery::Column::Id,
        webhook_delivery::Column::TenantId,
        webhook_delivery::Column::EndpointId,
        webhook_delivery::Column::JobId,
        webhook_delivery::Column::RunNo,
        webhook_delivery::Column::Event,
        webhook_delivery::Column::Payload,
        webhook_delivery::Column::Status,
        webhook_delivery::Column::Attempts,
        webhook_delivery::Column::SeriesAttempts,
        webhook_delivery::Column::SeriesStartedAt,
        webhook_delivery::Column::NextAttemptAt,
        webhook_delivery::Column::CreatedAt,
    ]);
    for endpoint in endpoints {
        insert
            .values([
                Uuid::now_v7().into(),
                tenant_id.into(),
                endpoint.into(),
                job_id.into(),
                job.runs.into(),
                event.as_str().into(),
                body.clone().into(),
                DeliveryStatus::Pending.as_str().into(),
                0i32.into(),
                0i32.into(),
                now.into(),
                Some(now).into(),
                now.into(),
            ])
            .map_err(StoreError::internal)?;
    }
    insert.on_conflict(
        OnConflict::columns([
            webhook_delivery::Column::EndpointId,
            webhook_delivery::Column::JobId,
            webhook_delivery::Column::RunNo,
            webhook_delivery::Column::Event,
        ])
        .do_nothing()
        .to_owned(),
    );
    Ok(conn.execute(&insert).await?.rows_affected())
}

/// The message: `{type, timestamp, data: {job: {id, kind, status, progress {total, succeeded,
/// failed, skipped, pending}, runs, run, error {code, detail}|null, error_codes [{code, count}],
/// created_at, started_at, finished_at, parent_job_id}, links: {job, items, report}}}`. Links
/// are paths of the licensor API (`/v1/jobs/{id}` …), to be joined to its base URL.
async fn payload<C: ConnectionTrait>(
    conn: &C,
    job: &job::Model,
    event: EventType,
    at: DateTime<Utc>,
) -> StoreResult<Value> {
    // Failed members by error code, most frequent first.
    let mut codes: Vec<(Option<String>, i64)> = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::ErrorCode)
        .column_as(job_item::Column::Id.count(), "n")
        .filter(job_item::Column::JobId.eq(job.id))
        .filter(job_item::Column::Status.eq(ItemStatus::Failed))
        .group_by(job_item::Column::ErrorCode)
        .into_tuple()
        .all(conn)
        .await?;
    codes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let error_codes: Vec<Value> = codes
        .into_iter()
        .map(|(code, n)| json!({"code": code.unwrap_or_else(|| "other".into()), "count": n}))
        .collect();
    let done = job.succeeded + job.failed + job.skipped;
    let id = job.id;
    Ok(json!({
        "type": event.as_str(),
        "timestamp": at,
        "data": {
            "job": {
                "id": id,
                "kind": job.kind,
                "status": job.status,
                "progress": {
                    "total": job.total,
                    "succeeded": job.succeeded,
                    "failed": job.failed,
                    "skipped": job.skipped,
                    "pending": (job.total - done).max(0),
                },
                "runs": job.runs,
                "run": job.runs,
                "error": job.error_code.as_ref().map(|code| json!({"code": code, "detail": job.error_detail})),
                "error_codes": error_codes,
                "parent_job_id": job.parent_job_id,
                "created_at": job.created_at,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
            },
            "links": {
                "job": format!("/v1/jobs/{id}"),
                "items": format!("/v1/jobs/{id}/items"),
                "report": format!("/v1/jobs/{id}/report"),
            },
        },
    }))
}
