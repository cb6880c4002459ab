//! The trivial job kind: proves that a message pushed by the API reaches a worker.

use apalis::prelude::BoxDynError;
use uuid::Uuid;

use crate::{WorkerContext, WorkerEvent};

pub async fn handle(ctx: &WorkerContext, nonce: Uuid) -> Result<(), BoxDynError> {
    tracing::debug!(%nonce, worker = %ctx.name, "ping");
    metrics::counter!("licensor_queue_pings_total").increment(1);
    // Nobody listening is fine.
    let _ = ctx.events.send(WorkerEvent::Pinged {
        nonce,
        worker: ctx.name.clone(),
    });
    Ok(())
}
