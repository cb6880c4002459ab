//! Webhook deliveries on the worker side: one attempt per `Deliver` message, its outcome
//! recorded, the next try scheduled on the queue; and the reconciler's share (deliveries whose
//! message is late or lost).
//!
//! Metrics: `licensor_webhook_deliveries_total{outcome="delivered"|"retrying"|"failed"}`, one
//! per attempt recorded. Logs name the delivery, endpoint and job, never the URL (it may carry a
//! token) nor the secret.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::BoxDynError;
use chrono::Utc;
use licensor_core::StoreError;
use licensor_core::queue::Message;
use licensor_core::webhooks::deliveries::{self, Next};
use licensor_core::webhooks::{Attempt, check_url, endpoints, retry_delay, send};
use uuid::Uuid;

use crate::WorkerContext;

/// How far ahead of its due time a delivery may be tried (clocks of processes a little apart,
/// the queue's whole-second scheduling).
const DUE_SLACK: chrono::Duration = chrono::Duration::seconds(2);

/// Make the next attempt of a delivery, if it is pending, due and not being tried by another
/// step; record it and schedule what follows.
pub async fn deliver(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    delivery_id: Uuid,
) -> Result<(), BoxDynError> {
    let hooks = &ctx.webhooks;
    let owner = Uuid::new_v4().simple().to_string();
    // Held for the attempt's timeout and a margin; a step that dies leaves it to run out.
    let lease = chrono::Duration::seconds(hooks.settings.timeout_secs as i64 + 30);
    let Some(claimed) = deliveries::claim(
        &ctx.db,
        tenant_id,
        delivery_id,
        &owner,
        Utc::now() + lease,
        DUE_SLACK,
    )
    .await?
    else {
        return Ok(());
    };
    let refused = |error: String| {
        (
            Attempt {
                at: Utc::now(),
                status_code: None,
                error: Some(error),
                duration_ms: 0,
                response: None,
            },
            Next::Failed,
        )
    };
    let (attempt, next) =
        match endpoints::for_delivery(&ctx.db, hooks, tenant_id, claimed.endpoint_id).await {
            // Deleted meanwhile: its deliveries went with it.
            Ok(None) => return Ok(()),
            Err(StoreError::Secret(_)) => refused(
                "the endpoint's signing secret cannot be read with the configured secret_key; rotate it"
                    .into(),
            ),
            Err(e) => return Err(e.into()),
            Ok(Some((endpoint, _))) if !endpoint.enabled => {
                refused("the endpoint is disabled".into())
            }
            Ok(Some((endpoint, secret))) => match check_url(&endpoint.url, &hooks.settings) {
                Err(e) => refused(e.to_string()),
                Ok(url) => {
                    let body = serde_json::to_vec(&claimed.payload)?;
                    let (attempt, delivered) =
                        send::attempt(hooks, url.as_str(), &secret, claimed.id, &body).await;
                    let next = if delivered {
                        Next::Delivered
                    } else {
                        let elapsed = (Utc::now() - claimed.series_started_at)
                            .to_std()
                            .unwrap_or_default();
                        let series = (claimed.series_attempts.max(0) + 1) as u32;
                        match retry_delay(&hooks.settings, series, elapsed) {
                            Some(delay) => Next::RetryAt(
                                Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                            ),
                            None => Next::Failed,
                        }
                    };
                    (attempt, next)
                }
            },
        };
    let attempt_no = claimed.attempts + 1;
    let status_code = attempt.status_code;
    let error = attempt.error.clone();
    if !deliveries::record(&ctx.db, &claimed, &owner, attempt, next).await? {
        // The lease ran out and another step took the delivery over: its record stands.
        tracing::warn!(delivery = %claimed.id, "webhook attempt outlived its lease; not recorded");
        return Ok(());
    }
    let outcome = match next {
        Next::Delivered => "delivered",
        Next::RetryAt(_) => "retrying",
        Next::Failed => "failed",
    };
    metrics::counter!("licensor_webhook_deliveries_total", "outcome" => outcome).increment(1);
    match next {
        Next::Delivered => tracing::info!(
            delivery = %claimed.id, endpoint = %claimed.endpoint_id, job = %claimed.job_id,
            event = %claimed.event, attempt = attempt_no, http.status = status_code,
            "webhook delivered"
        ),
        Next::RetryAt(at) => {
            tracing::info!(
                delivery = %claimed.id, endpoint = %claimed.endpoint_id, job = %claimed.job_id,
                event = %claimed.event, attempt = attempt_no, http.status = status_code,
                error = error.as_deref().unwrap_or_default(), next_attempt_at = %at,
                "webhook attempt failed; retrying"
            );
            let message = Message::Deliver {
                tenant_id,
                delivery_id: claimed.id,
            };
            if let Err(e) = ctx.queue.push_at(message, at).await {
                tracing::warn!(delivery = %claimed.id, error = %e, "queueing a webhook retry failed; the reconciler will");
            }
        }
        Next::Failed => tracing::warn!(
            delivery = %claimed.id, endpoint = %claimed.endpoint_id, job = %claimed.job_id,
            event = %claimed.event, attempt = attempt_no, http.status = status_code,
            error = error.as_deref().unwrap_or_default(),
            "webhook delivery failed; no more retries"
        ),
    }
    Ok(())
}

/// Queue the webhook deliveries a job's end just recorded. Never fails the step: what is not
/// queued now, the reconciler queues.
pub async fn queue_job_events(ctx: &WorkerContext, job_id: Uuid) {
    if let Err(e) = deliveries::queue_for_job(&ctx.db, &ctx.queue, job_id).await {
        tracing::warn!(job = %job_id, error = %e, "queueing webhook deliveries failed; the reconciler will");
    }
}

/// Queue again the pending deliveries overdue by more than `jobs.stall_secs` that no attempt
/// holds: their message was lost (or waits behind much other work; a repeated message is
/// harmless).
pub async fn reconcile(ctx: &Arc<WorkerContext>) -> Result<usize, BoxDynError> {
    let grace = Duration::from_secs(ctx.jobs.stall_secs);
    let before = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let overdue = deliveries::overdue(&ctx.db, before).await?;
    if overdue.is_empty() {
        return Ok(0);
    }
    let n = overdue.len();
    ctx.queue
        .push_bulk(
            overdue
                .into_iter()
                .map(|(tenant_id, delivery_id)| Message::Deliver {
                    tenant_id,
                    delivery_id,
                })
                .collect(),
        )
        .await?;
    tracing::info!(deliveries = n, "overdue webhook deliveries queued again");
    metrics::counter!("licensor_webhook_deliveries_requeued_total").increment(n as u64);
    Ok(n)
}
