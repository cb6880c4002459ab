//! The queue's job handlers, kept thin: each step's logic is in `licensor_core::jobs` (one file
//! per step); here are the queue pushes, lease renewal while a step runs, metrics and webhooks.
//!
//! `Run` starts (or resumes) a job: [`jobs::expand`] reads the selected groups into one item per
//! member, and the job's lanes are queued. `Work` is one lane step: [`jobs::lease`] takes a chunk
//! of pending members, [`jobs::work`] decides and writes it, [`jobs::outcome`] records the
//! outcomes with the job's counters in one transaction, then the lane's next step is queued
//! behind other jobs' work — so a huge job never holds up a small one. The last step to find
//! nothing pending finishes the job ([`jobs::finish`]). Each handler is one tracing span
//! (`job.run`, `job.work`) with the job's and tenant's ids.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apalis::prelude::BoxDynError;
use chrono::Utc;
use licensor_core::directory::{DirectoryClient, Outlook, Pledge};
use licensor_core::domain::JobStatus;
use licensor_core::entities::job;
use licensor_core::jobs::canary::CanaryDecision;
use licensor_core::jobs::lease::Pick;
use licensor_core::jobs::outcome::{JobFailure, Outcome};
use licensor_core::jobs::writer::Turn;
use licensor_core::jobs::{self, JobSpec, ParsedRequest, deliver, preview, work};
use licensor_core::queue::{Message, Queue, QueueError};
use licensor_core::tasks::AbortOnDrop;
use uuid::Uuid;

use crate::WorkerContext;
use crate::lanes::{Parked, Probe};

async fn client_for(
    ctx: &WorkerContext,
    tenant_id: Uuid,
) -> Result<Result<DirectoryClient, JobFailure>, BoxDynError> {
    Ok(ctx
        .directory
        .for_tenant_id(&ctx.db, tenant_id)
        .await?
        .map_err(|e| JobFailure::from_client(&e)))
}

async fn fail(
    ctx: &WorkerContext,
    job: &job::Model,
    failure: JobFailure,
) -> Result<(), BoxDynError> {
    if jobs::finish::fail(&ctx.db, job.id, failure.code, &failure.detail).await? {
        crate::webhooks::queue_job_events(ctx, job.id).await;
        tracing::warn!(job = %job.id, code = failure.code, detail = %failure.detail, "job failed");
        jobs::finish::count_completed(job.kind, JobStatus::Failed);
    }
    Ok(())
}

/// `jobs.lanes_per_job` (at most 256, checked at load).
fn lanes_per_job(ctx: &WorkerContext) -> u32 {
    u32::try_from(ctx.jobs.lanes_per_job).unwrap_or(u32::MAX)
}

/// Queue a job's `jobs.lanes_per_job` lanes on `queue`.
async fn push_lanes(
    ctx: &WorkerContext,
    queue: &Queue,
    job: &job::Model,
) -> Result<(), BoxDynError> {
    send_lanes(queue, job.tenant_id, job.id, lanes_per_job(ctx)).await?;
    Ok(())
}

/// Start or resume a job.
#[tracing::instrument(name = "job.run", skip_all, fields(worker = %ctx.name, job.id = %job_id, tenant.id = %tenant_id))]
pub async fn run(ctx: &WorkerContext, tenant_id: Uuid, job_id: Uuid) -> Result<(), BoxDynError> {
    let Some(job) = jobs::expand::start(&ctx.db, tenant_id, job_id).await? else {
        // A cancelled job whose members a stopped worker held: skip them now.
        if jobs::finish::status(&ctx.db, job_id).await? == Some(JobStatus::Cancelled) {
            settle_cancelled(ctx, tenant_id, job_id).await?;
        }
        return Ok(());
    };
    let req = jobs::lease::request_of(&job)?;
    // A preview's members predicted as they are read (see `expand`).
    let mut read = None;
    // Whether the expansion queued the job's lanes already (work starts while groups are read):
    // a job has `jobs.lanes_per_job` lanes, not twice as many.
    let mut lanes_queued = false;
    if job.expanded_at.is_none() {
        let owner = step_owner(ctx);
        if !jobs::expand::claim_expansion(&ctx.db, job.id, &owner, lease_until(ctx)).await? {
            // Another step is reading the groups; if it dies, a lane or the reconciler
            // queues the job again once its lease has run out.
            return Ok(());
        }
        if job.expand_owner.is_some() {
            // A step that stopped cleanly lets go of the expansion; one still named had its
            // lease run out (it died) and this step took over from its last page.
            metrics::counter!("licensor_lease_takeovers_total", "lease" => "expansion")
                .increment(1);
        }
        // Hold the expansion while this step lives, however slow the directory or the database
        // (each stored page renews it too); a dead step's lease runs out.
        let _renewer = AbortOnDrop(tokio::spawn({
            let db = ctx.db.clone();
            let owner = owner.clone();
            let lease = Duration::from_secs(ctx.jobs.lease_secs);
            async move {
                let every = (lease / 3).max(Duration::from_millis(500));
                loop {
                    tokio::time::sleep(every).await;
                    let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
                    match jobs::expand::renew_expansion(&db, job_id, &owner, until).await {
                        Ok(true) => {}
                        // Taken for dead (or done): the step stops at its next page.
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(job = %job_id, error = %e, "renewing the expansion lease failed");
                        }
                    }
                }
            }
        }));
        let client = match client_for(ctx, tenant_id).await? {
            Ok(c) => c,
            Err(f) => return fail(ctx, &job, f).await,
        };
        let start_lanes = || {
            lanes_queued = true;
            Box::pin(start_lanes(ctx, &job)) as futures::future::BoxFuture<'_, _>
        };
        let reader = jobs::expand::Reader {
            db: &ctx.db,
            owner: &owner,
            client: &client,
            settings: &ctx.jobs,
            stop: &ctx.stopping,
        };
        let expanded = jobs::expand::expand(reader, &job, &req, &mut read, start_lanes).await?;
        if !matches!(expanded, Ok(true)) {
            if !jobs::expand::holds_expansion(&ctx.db, job.id, &owner).await? {
                return expansion_lost(&job);
            }
            // A rerun goes on reading from the last page stored, at once.
            jobs::expand::release_expansion(&ctx.db, job.id, &owner).await?;
        }
        match expanded {
            // Marked expanded with its last page.
            Ok(true) => {}
            Ok(false) => {
                // Cancelled or paused (by its canary) while the groups were read, or cancelled
                // and run again meanwhile, or this process is stopping.
                match jobs::finish::status(&ctx.db, job.id).await? {
                    Some(JobStatus::Paused) => {
                        // A resumed job reads on from the last page stored.
                        tracing::info!(job = %job.id, "job paused during expansion");
                    }
                    Some(JobStatus::Cancelled) => {
                        // Nothing more is read or queued.
                        tracing::info!(job = %job.id, "job cancelled during expansion");
                        settle_cancelled(ctx, tenant_id, job.id).await?;
                    }
                    _ => {
                        // This process is stopping, or the job was run again while this step
                        // read the groups: the next step (another process's, or the new run's)
                        // reads on from the last page stored.
                        if ctx.stopping.load(Ordering::Relaxed) {
                            tracing::info!(job = %job.id, "process stopping: expansion handed back");
                        } else {
                            tracing::info!(job = %job.id, "job run again during expansion: handing over");
                        }
                        ctx.queue.push(Message::Run { tenant_id, job_id }).await?;
                    }
                }
                return Ok(());
            }
            Err(failure) => return fail(ctx, &job, failure).await,
        }
    }
    if req.preview {
        return conclude_preview(ctx, &job, &req, read).await;
    }
    if let JobSpec::Export { export } = &req.spec {
        // Export Results: the file goes where the request asked before the job finishes.
        let client = if deliver::needs_directory(export) {
            match client_for(ctx, tenant_id).await? {
                Ok(c) => Some(c),
                Err(f) => return fail(ctx, &job, f).await,
            }
        } else {
            None
        };
        if let Err(e) =
            deliver::deliver(&ctx.db, client.as_ref(), tenant_id, job_id, export).await?
        {
            let failure = JobFailure {
                code: e.code(),
                detail: e.to_string(),
            };
            return fail(ctx, &job, failure).await;
        }
    }
    // Lanes queued while the groups were read finish the job once its members are done;
    // otherwise it may be done already (no members, an export), or its lanes start now.
    if lanes_queued || finish(ctx, &job).await? {
        return Ok(());
    }
    start_lanes(ctx, &job).await
}

/// Start a job's `jobs.lanes_per_job` lanes: its first lane, bringing the others
/// (`Message::Work`'s `more_lanes`), which its step queues as soon as they can work.
///
/// Queued side by side, the lanes of a job whose tenant's write budget nobody had learned yet
/// each took a step only to wait for the one learning it, and after it went through the queue
/// again only to wait for the budget to free: eight messages and steps for a job's start where
/// two do. With 500 tenants' jobs started at once (`licensor-bench --scenario msp`) those
/// steps, queued behind every job's `Run`, were what held each job's first write back by
/// about 4 s.
///
/// On Redis the first lane goes to the own queue of the tenant's writer
/// ([`first_lane_queue`]), not to the shared queue behind the other jobs' `Run`s.
async fn start_lanes(ctx: &WorkerContext, job: &job::Model) -> Result<(), BoxDynError> {
    let first = Message::Work {
        tenant_id: job.tenant_id,
        job_id: job.id,
        more_lanes: lanes_per_job(ctx).saturating_sub(1),
    };
    let queue = match first_lane_queue(ctx, job.tenant_id).await {
        FirstLane::Mine(own) => {
            own.push(first).await?;
            "own"
        }
        FirstLane::Writer(writers) => {
            writers.push_unwoken(first).await?;
            "writer"
        }
        FirstLane::Shared => {
            ctx.queue.push(first).await?;
            "shared"
        }
    };
    metrics::counter!("licensor_first_lanes_queued_total", "queue" => queue).increment(1);
    Ok(())
}

/// Where a job's first lane is queued ([`first_lane_queue`]).
enum FirstLane {
    /// This process's own queue: it holds the tenant's turn to write (taken by the `Run`).
    Mine(Queue),
    /// The own queue of the process that holds the tenant's turn.
    Writer(Queue),
    /// The shared queue.
    Shared,
}

/// Where a job's first lane is queued as its `Run` starts the lanes.
///
/// On Redis a message pushed to the shared queue is taken after every message pushed before it:
/// with 500 tenants' jobs submitted at once (`licensor-bench --scenario msp`, PostgreSQL + Redis,
/// 2 workers) a job's first lane waited a median 4.9 s behind the other jobs' `Run`s after its
/// groups were read. So the `Run` takes the tenant's turn to write ([`jobs::writer`]), as the
/// lane's step would, and queues the lane on its own process's queue, where it waits only for a
/// place; when another process holds the turn, on that process's queue, where the lane would be
/// sent anyway. Should the process die before the lane is taken, its turn is among those its
/// takeover ends, and the tenant's running jobs are queued again
/// ([`licensor_core::jobs::processes`]). On the embedded queue the first lane has a priority
/// instead (one process works it), and a process that may not take turns ([`Turn::Gone`]) queues
/// it on the shared queue for a live process — as does one that could not ask for the turn (the
/// database did not answer): the lane's step asks again.
async fn first_lane_queue(ctx: &WorkerContext, tenant_id: Uuid) -> FirstLane {
    if !matches!(ctx.queue, Queue::Redis { .. }) {
        return FirstLane::Shared;
    }
    let turn = match ctx.turns.ask(&ctx.db, tenant_id).await {
        Ok(turn) => turn,
        Err(e) => {
            tracing::warn!(tenant = %tenant_id, error = %e, "asking for the tenant's turn to write failed; the job's first lane goes to the shared queue");
            return FirstLane::Shared;
        }
    };
    match turn {
        Turn::Mine => match &ctx.own_queue {
            Some(own) => FirstLane::Mine(own.clone()),
            None => FirstLane::Shared,
        },
        Turn::Others(writer) => match ctx.queue.of_process(&writer) {
            Some(writers) => FirstLane::Writer(writers),
            None => FirstLane::Shared,
        },
        Turn::Free | Turn::Gone => FirstLane::Shared,
    }
}

/// This step no longer holds the job's expansion: its process was taken for dead (its
/// heartbeats stopped for a while) and its leases ended; a live step reads on from the last
/// page stored. This one neither fails, marks nor queues the job.
fn expansion_lost(job: &job::Model) -> Result<(), BoxDynError> {
    tracing::warn!(job = %job.id, "this step's hold on the expansion was ended; leaving the job to a live step");
    Ok(())
}

/// A preview whose members are all read: end it `previewed`. Its members were predicted as the
/// expansion stored them (`read`), or — when that step did not store them all (resumed after a
/// crash or a restart) — are predicted now from what the expansion read (the same decisions a
/// real run takes before writing, units counted in member order against the free units read
/// now). Nothing is written to the directory.
async fn conclude_preview<'a>(
    ctx: &WorkerContext,
    job: &job::Model,
    req: &'a ParsedRequest,
    read: Option<preview::Predictor<'a>>,
) -> Result<(), BoxDynError> {
    let predictor = match read {
        // Predicted as they were read: nothing more to read or decide.
        Some(p) if preview::covers(&ctx.db, job.id, &p).await? => p,
        _ => {
            let client = match client_for(ctx, job.tenant_id).await? {
                Ok(c) => c,
                Err(f) => return fail(ctx, job, f).await,
            };
            let skus = match client.subscribed_skus().await {
                Ok(s) => s,
                Err(e) => {
                    return fail(
                        ctx,
                        job,
                        JobFailure::from_directory(&e, "reading subscribed SKUs"),
                    )
                    .await;
                }
            };
            preview::predict_stored(&ctx.db, job, req, &skus).await?
        }
    };
    if let Some(summary) = preview::conclude(&ctx.db, job, predictor).await? {
        tracing::info!(job = %job.id, members = summary.members, would_fail = summary.would_fail, "job previewed");
        jobs::finish::count_completed(job.kind, JobStatus::Previewed);
    }
    Ok(())
}

/// Skip a cancelled job's members nobody holds; when that leaves none pending, its run closes
/// and the `job.cancelled` webhook deliveries are queued. Members licensor may have written
/// without recording the answer are read from the directory first
/// ([`work::settle_unanswered`]), never skipped as cancelled on trust.
async fn settle_cancelled(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<(), BoxDynError> {
    settle_unanswered(ctx, tenant_id, job_id).await?;
    if jobs::cancel::settle_cancelled(&ctx.db, job_id)
        .await?
        .closed
    {
        crate::webhooks::queue_job_events(ctx, job_id).await;
    }
    Ok(())
}

/// A cancelled job's members licensor may have written without recording the answer: claimed
/// by this step, read and recorded ([`work::settle_unanswered`]), a chunk at a time.
async fn settle_unanswered(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<(), BoxDynError> {
    let Some(job) = jobs::lease::load(&ctx.db, tenant_id, job_id).await? else {
        return Ok(());
    };
    let req = jobs::lease::request_of(&job)?;
    let owner = step_owner(ctx);
    let mut client = None;
    loop {
        // A cancelled job run again meanwhile is the new run's to work.
        if jobs::finish::status(&ctx.db, job_id).await? != Some(JobStatus::Cancelled) {
            jobs::lease::release(&ctx.db, job_id, &owner).await?;
            return Ok(());
        }
        let items = jobs::lease::claim(
            &ctx.db,
            job_id,
            &owner,
            lease_until(ctx),
            ctx.jobs.chunk_size as u64,
            Pick::MayHaveBeenWritten,
        )
        .await?;
        if items.is_empty() {
            if jobs::lease::any_claimable(&ctx.db, job_id, Pick::MayHaveBeenWritten).await? {
                // Free, but their rows were locked by another transaction: come back for them.
                return lane_again_after(ctx, tenant_id, job_id, LOCKED_POLL).await;
            }
            // Members that could not be read yet are read again when their backoff ends.
            if let (true, Some(at)) = jobs::finish::pending_state(&ctx.db, job_id).await? {
                ctx.queue
                    .push_at(Message::work(tenant_id, job_id), at)
                    .await?;
            }
            return Ok(());
        }
        let client = match &client {
            Some(c) => c,
            None => client.insert(client_for(ctx, tenant_id).await?),
        };
        let outcomes = match client {
            Ok(client) => work::settle_unanswered(client, &req, items).await,
            // No directory to read: whether the writes were made is not known yet.
            Err(failure) => items
                .iter()
                .map(|i| {
                    let why = format!("{}: {}", failure.code, failure.detail);
                    let code = licensor_core::directory::ItemCode::DirectoryUnavailable;
                    (
                        i.id,
                        work::unread_after_cancel(&why, code, i.attempts, None),
                    )
                })
                .collect(),
        };
        tracing::info!(job = %job_id, members = outcomes.len(), "cancelled job: members whose writes had no recorded answer read");
        count(job.kind.as_str(), &outcomes);
        crate::outage::record_when_available(&ctx.db, job_id, &owner, outcomes, 0, false).await?;
    }
}

/// Finish the job if nothing is pending; true when it is over.
async fn finish(ctx: &WorkerContext, job: &job::Model) -> Result<bool, BoxDynError> {
    if let Some(status) = jobs::finish::finish_if_done(&ctx.db, job.id).await? {
        ctx.lanes.forget(job.id);
        crate::webhooks::queue_job_events(ctx, job.id).await;
        tracing::info!(job = %job.id, kind = %job.kind, status = status.as_str(), "job finished");
        jobs::finish::count_completed(job.kind, status);
        return Ok(true);
    }
    Ok(false)
}

/// One lane step: a chunk of the job's pending members.
///
/// A job's first lane brings its other `more_lanes` ([`start_lanes`]): they are queued as soon
/// as this step knows it does not learn the tenant's write budget, or — when it learns it —
/// once they can write ([`Learning`]); a lane left to another process goes to it with them.
///
/// A step that fails before it handed them on fails as any step does, and the message taken
/// again brings them. One that fails after does not: taken again, the message would bring
/// them a second time, and every lane of a job queues itself again after each step, so the job
/// would keep more lanes than `jobs.lanes_per_job` for good. Its lane goes back on the queue
/// as a plain one instead, and the failure is logged.
#[tracing::instrument(name = "job.work", skip_all, fields(worker = %ctx.name, job.id = %job_id, tenant.id = %tenant_id))]
pub async fn work(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
    more_lanes: u32,
) -> Result<(), BoxDynError> {
    let mut brought = more_lanes;
    let outcome = work_lane(ctx, tenant_id, job_id, &mut brought).await;
    match (after_step(more_lanes, brought, outcome.is_ok()), outcome) {
        (AfterStep::Send(lanes), _) => Ok(send_lanes(&ctx.queue, tenant_id, job_id, lanes).await?),
        (AfterStep::PlainLane, Err(e)) => {
            tracing::warn!(job = %job_id, error = %e, "a job's first lane failed after it handed its other lanes on: queued again as a plain lane");
            if let Err(e) = ctx.queue.push(Message::work(tenant_id, job_id)).await {
                tracing::warn!(job = %job_id, error = %e, "queueing the lane again failed; the job's other lanes go on");
            }
            Ok(())
        }
        (_, outcome) => outcome,
    }
}

/// What [`work`] does once its step ended ([`after_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStep {
    /// Nothing more: the step's outcome stands (an error has the message taken again, with
    /// the lanes it brings when none were handed on).
    AsItEnded,
    /// The step ended well with lanes it brought not handed on: queue them.
    Send(u32),
    /// The step failed after it handed on the lanes it brought: its lane goes back on the
    /// queue as a plain one, and the message is not taken again.
    PlainLane,
}

/// [`work`]'s rule after a step of a lane that brought `more_lanes`, `left` of them not handed
/// on, that ended well (`ok`) or failed.
fn after_step(more_lanes: u32, left: u32, ok: bool) -> AfterStep {
    match (ok, left) {
        (true, 0) => AfterStep::AsItEnded,
        (true, left) => AfterStep::Send(left),
        (false, 0) if more_lanes > 0 => AfterStep::PlainLane,
        (false, _) => AfterStep::AsItEnded,
    }
}

/// The step of [`work`]: `brought` is the lanes the message brings, set to 0 once they are
/// handed on (queued, waiting for the lane learning the budget, or sent along to another
/// process) or not needed (the job is not running).
async fn work_lane(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
    brought: &mut u32,
) -> Result<(), BoxDynError> {
    let Some(job) = jobs::lease::load(&ctx.db, tenant_id, job_id).await? else {
        *brought = 0;
        return Ok(());
    };
    if job.status != JobStatus::Running {
        // Nothing to work: a cancelled job is settled here.
        *brought = 0;
        ctx.lanes.forget(job_id);
        if job.status == JobStatus::Cancelled {
            settle_cancelled(ctx, tenant_id, job_id).await?;
        }
        return Ok(());
    }
    if job.expand_until.is_some() && jobs::expand::expansion_abandoned(&job) {
        // The step reading the groups died: queue the job so another one goes on from the
        // last page stored.
        ctx.queue.push(Message::Run { tenant_id, job_id }).await?;
    }
    let req = jobs::lease::request_of(&job)?;
    if req.preview {
        // A preview writes nothing: its members wait for the launch.
        *brought = 0;
        return Ok(());
    }
    let client = match client_for(ctx, tenant_id).await? {
        Ok(c) => c,
        Err(f) => {
            *brought = 0;
            return fail(ctx, &job, f).await;
        }
    };
    // A tenant's directory is written to by one process at a time: its write budget is learned
    // and filled by one scheduler, not split blindly between several (see `jobs::writer`).
    match ctx.turns.ask(&ctx.db, tenant_id).await? {
        Turn::Others(writer) => {
            tracing::debug!(job = %job_id, writer = %writer, "lane left to the tenant's writer");
            metrics::counter!("licensor_lanes_left_to_writer_total").increment(1);
            return leave_to_writer(ctx, tenant_id, job_id, Some(&writer), brought).await;
        }
        Turn::Gone => {
            // This process stopped (the step outlived its grace period) or was taken for dead:
            // it takes nothing more, and the lane goes back to the queue for a live process —
            // as a lane left to a writer does, so a process taken for dead that still polls the
            // queue (until its next heartbeat brings it back) does not spin on its own lanes.
            tracing::debug!(job = %job_id, "lane given back: this process is no longer live");
            return leave_to_writer(ctx, tenant_id, job_id, None, brought).await;
        }
        Turn::Mine | Turn::Free => {}
    }
    // The tenant's budget not learned yet: one lane of the job learns it, the others wait for
    // it (see `Lanes::probe` and `Learning`).
    let mut learning = None;
    if client.write_outlook(BUDGET_HORIZON) == Outlook::Open {
        match ctx
            .lanes
            .probe(job_id, client.writes_granted() == 0, *brought)
        {
            Probe::Waits => {
                // The lanes this one brought wait with it.
                let waiting = 1 + std::mem::take(brought);
                metrics::counter!("licensor_lanes_waited_for_budget_learning_total")
                    .increment(u64::from(waiting));
                return Ok(());
            }
            Probe::Learns => {
                // The lanes this one brought wait for it to learn the budget.
                metrics::counter!("licensor_lanes_waited_for_budget_learning_total")
                    .increment(u64::from(std::mem::take(brought)));
                learning = Some(Learning {
                    ctx,
                    tenant_id,
                    job_id,
                    watch: None,
                })
            }
            Probe::Free => {}
        }
    }
    // Nobody learns the budget: the lanes this one brought can work now.
    send_lanes(ctx.lanes_queue(), tenant_id, job_id, *brought).await?;
    *brought = 0;
    let Some((take, pledge)) = budgeted_chunk(ctx, &client, tenant_id, job_id).await? else {
        return Ok(());
    };
    // The step learning the budget takes no more than its learning needs.
    let take = match learning {
        Some(_) => take.min(LEARNING_CHUNK),
        None => take,
    };
    let owner = step_owner(ctx);
    let lease = Duration::from_secs(ctx.jobs.lease_secs);
    let lease_until = || lease_until(ctx);
    // Until its canary has passed, a job works no more members than the canary's.
    let canary = req.canary.filter(|_| job.canary_passed_at.is_none());
    let claim = |only| {
        let owner = &owner;
        async move {
            match &canary {
                Some(canary) => {
                    jobs::canary::claim_canary(
                        &ctx.db,
                        job_id,
                        owner,
                        lease_until(),
                        take,
                        canary,
                        only,
                    )
                    .await
                }
                None => jobs::lease::claim(&ctx.db, job_id, owner, lease_until(), take, only).await,
            }
        }
    };
    // A launched preview that predicted members to fail for want of a unit writes the members
    // it predicted to succeed first, so the units go to them as predicted.
    let first = jobs::launch::predicted_first(&job);
    let mut items = claim(if first {
        Pick::PredictedToSucceed
    } else {
        Pick::All
    })
    .await?;
    if items.is_empty() && first {
        if jobs::launch::end_predicted_first(&ctx.db, &job).await? {
            items = claim(Pick::All).await?;
        } else if canary.is_none() {
            // Other lanes hold the rest of them, or they wait for a retry: come back soon.
            // (Until a canary is decided, its lanes stop here as below and its decision
            // starts them again.)
            return lane_again_after(ctx, tenant_id, job_id, LAUNCH_ORDER_POLL).await;
        }
    }
    let taken_over = items.iter().filter(|i| i.taken_over).count();
    if taken_over > 0 {
        tracing::info!(job = %job_id, members = taken_over, "took over members whose holder stopped");
        metrics::counter!("licensor_lease_takeovers_total", "lease" => "members")
            .increment(taken_over as u64);
    }
    if items.is_empty() {
        // Lanes that waited for this one go back to work before this one waits for anything.
        drop(learning.take());
        if let Some(canary) = &canary {
            match jobs::canary::decide_canary(&ctx.db, job_id, canary).await? {
                CanaryDecision::Paused => return Ok(()),
                CanaryDecision::Passed => return push_lanes(ctx, ctx.lanes_queue(), &job).await,
                CanaryDecision::PassedBefore | CanaryDecision::Undecided => {}
            }
        }
        let (pending, next_retry) = jobs::finish::pending_state(&ctx.db, job_id).await?;
        if !pending && finish(ctx, &job).await? {
            return Ok(());
        }
        if job.expanded_at.is_none() {
            // The lanes have caught up with the step still reading the groups: come back for
            // the members it stores next (the job's lanes are queued once, as work starts).
            lane_again_after(ctx, tenant_id, job_id, EXPANSION_POLL).await?;
        } else if canary.is_none() && jobs::lease::any_claimable(&ctx.db, job_id, Pick::All).await?
        {
            // Members nobody holds, yet the claim took none: another transaction had their rows
            // locked (`jobs::lease::any_claimable`). Come back for them, rather than leave them
            // to the reconciler (or, were one due for a retry already, come back at once and
            // find them locked again).
            tracing::debug!(job = %job_id, "free members were locked; the lane comes back for them");
            lane_again_after(ctx, tenant_id, job_id, LOCKED_POLL).await?;
        } else if let Some(at) = next_retry {
            // Members waiting for a retry and held by nobody: wait for them here, then go on.
            let wait = (at - Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            lane_again_after(ctx, tenant_id, job_id, wait).await?;
        }
        // Otherwise other lanes hold the remaining members and will finish the job.
        return Ok(());
    }
    // Keep the lease while the chunk is worked, however long the directory makes it take —
    // and not a moment longer: the renewal stops when this step ends or is dropped.
    let renewer = AbortOnDrop({
        let db = ctx.db.clone();
        let owner = owner.clone();
        tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(every).await;
                let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
                if let Err(e) = jobs::lease::renew(&db, job_id, &owner, until).await {
                    tracing::warn!(job = %job_id, error = %e, "renewing a lease failed");
                }
            }
        })
    });
    let held = ctx.leases.hold(tenant_id, job_id, &owner);
    let started = std::time::Instant::now();
    let n = items.len();
    if let Some(learning) = learning.as_mut() {
        learning.watch(&client, n as u64);
    }
    // A cancel stops this chunk's writes that have not gone out yet, not only the next chunk;
    // so does another process taking the tenant's turn to write (see `crate::watch`).
    let watcher = ctx.watched.watch(tenant_id, job_id);
    // The chunk may be smaller than the lane's share: pledge only its members' writes.
    pledge.cut_to(n as u64);
    // The budget is free beyond this chunk: a lane that joined a wait for it goes back to work.
    if matches!(
        client.write_outlook(BUDGET_HORIZON),
        Outlook::Open | Outlook::Ready(_)
    ) && ctx.lanes.spare(job_id)
    {
        ctx.lanes_queue()
            .push(Message::work(tenant_id, job_id))
            .await?;
    }
    let client = client
        .stopping_on(watcher.stop.clone())
        .deferring_beyond(BUDGET_PATIENCE)
        .redeeming(pledge);
    let (outcome, throttled) = licensor_core::directory::count_throttles(work::process(
        &ctx.db, &client, &ctx.jobs, &job, &req, items,
    ))
    .await;
    // The chunk is written (or stopped) and its members re-read where it verifies them:
    // nothing more to stop.
    drop(watcher);
    let (outcomes, deferred) = match outcome {
        Ok(o) => o,
        Err(failure) => {
            drop(renewer);
            jobs::lease::release(&ctx.db, job_id, &owner).await?;
            held.done();
            return fail(ctx, &job, failure).await;
        }
    };
    count(job.kind.as_str(), &outcomes);
    // The lease is kept until the outcomes are stored, so nobody writes these members again
    // while the database is away. Members whose writes wait for the budget go back to the job
    // with them (one transaction), for whichever lane comes first once it frees.
    crate::outage::record_when_available(
        &ctx.db,
        job_id,
        &owner,
        outcomes,
        throttled,
        deferred.is_some(),
    )
    .await?;
    held.done();
    drop(renewer);
    if let Some(canary) = &canary {
        match jobs::canary::decide_canary(&ctx.db, job_id, canary).await? {
            CanaryDecision::Paused => {
                tracing::info!(job = %job_id, "job paused: its canary failed too often");
                metrics::counter!("licensor_jobs_paused_total", "kind" => job.kind.as_str())
                    .increment(1);
                return Ok(());
            }
            CanaryDecision::Passed => {
                // The lanes that found the canary's members all taken have stopped: start
                // them again (this one goes on below).
                tracing::info!(job = %job_id, "canary passed");
                push_lanes(ctx, ctx.lanes_queue(), &job).await?;
            }
            CanaryDecision::PassedBefore | CanaryDecision::Undecided => {}
        }
    }
    let (status, pending) = jobs::finish::status_and_pending(&ctx.db, job_id)
        .await?
        .map_or((None, false), |(s, p)| (Some(s), p));
    match status {
        Some(JobStatus::Cancelled) => {
            // Cancelled while this chunk was worked: its members are recorded; settle the rest.
            settle_cancelled(ctx, tenant_id, job_id).await?;
            return Ok(());
        }
        // Paused meanwhile: members this step did not write are let go at once, and nothing
        // more is taken until the job is resumed.
        Some(JobStatus::Paused) => {
            jobs::lease::release(&ctx.db, job_id, &owner).await?;
            return Ok(());
        }
        _ => {}
    }
    metrics::histogram!("licensor_job_chunk_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(job = %job_id, items = n, ms = started.elapsed().as_millis() as u64, "chunk done");
    // Members still pending: the job is not done (the step that records the last of them
    // reads after its own commit, and finishes it).
    if !pending && finish(ctx, &job).await? {
        return Ok(());
    }
    match deferred {
        Some(until) => {
            defer_lane(ctx, &client, tenant_id, job_id, until).await?;
            // The budget is learned and spent: lanes that waited for it wait with this one.
            if let Some(l) = learning.take() {
                l.join_wait_or_send().await?;
            }
        }
        None => {
            ctx.lanes_queue()
                .push(Message::work(tenant_id, job_id))
                .await?
        }
    }
    Ok(())
}

/// The longest the lanes waiting for a new tenant's write budget to be learned
/// ([`Probe::Waits`]) wait once the learning step has its members, should neither sign in
/// [`Learning::watch`] come.
const LEARNING_WAIT: Duration = Duration::from_secs(10);
/// How often a step learning the budget looks whether it has learned it.
const LEARNING_POLL: Duration = Duration::from_millis(25);

/// A lane step learning its tenant's write budget for its job ([`Probe::Learns`]). The job's
/// lanes that waited for it go back to the queue once there is nothing more to wait for (see
/// [`Learning::watch`]), and in any case when the step ends, however it ends.
struct Learning<'a> {
    ctx: &'a WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
    watch: Option<AbortOnDrop>,
}

impl Learning<'_> {
    /// The step has taken its `members`: send the lanes that wait for it back as soon as the
    /// budget is learned and has writes for them within [`BUDGET_HORIZON`] (the outlook is
    /// neither [`Outlook::Open`] nor a wait beyond the horizon) or has let the step's writes
    /// out (as many granted as it has members: the budget is larger than the chunk), or after
    /// [`LEARNING_WAIT`]. Not at the step's end only: a step whose members the
    /// directory keeps refusing (503s, each tried again after its `Retry-After`) may run for
    /// many seconds after its first writes went out, and the job's other lanes, held for all
    /// of it, left the budget unused (`flaky_throttled_directory`: 5,000 members under 30 %
    /// 503s took 117–128 s instead of 61–77).
    fn watch(&mut self, client: &DirectoryClient, members: u64) {
        let (lanes, queue, client) = (
            self.ctx.lanes.clone(),
            self.ctx.lanes_queue().clone(),
            client.clone(),
        );
        let (tenant_id, job_id) = (self.tenant_id, self.job_id);
        let watch = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let deadline = tokio::time::Instant::now() + LEARNING_WAIT;
            let before = client.writes_granted();
            // Learned and spent beyond the horizon, the budget has nothing for them: sent now,
            // they would only take a step each to wait for it. They join this step's wait for
            // it as the step ends ([`Learning::join_wait_or_send`]), or go once it frees.
            let nothing_for_them = |outlook| match outlook {
                Outlook::Open => true,
                Outlook::Wait(at) => {
                    at.saturating_duration_since(tokio::time::Instant::now()) > BUDGET_HORIZON
                }
                Outlook::Ready(_) => false,
            };
            while nothing_for_them(client.write_outlook(BUDGET_HORIZON))
                && client.writes_granted() - before < members
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(LEARNING_POLL).await;
            }
            requeue_waiting(&queue, lanes.end_probe(job_id), tenant_id, job_id).await;
        }));
        self.watch = Some(AbortOnDrop(watch));
    }

    /// The step waits for the budget: the lanes that waited for it join that wait if it is
    /// this process's, else go back to the queue now.
    async fn join_wait_or_send(self) -> Result<(), BoxDynError> {
        let waited = self.ctx.lanes.end_probe(self.job_id);
        if waited == 0 {
            return Ok(());
        }
        if self.ctx.lanes.join_wait(self.job_id, waited) {
            metrics::counter!("licensor_lanes_joined_total").increment(u64::from(waited));
        } else {
            send_lanes(self.ctx.lanes_queue(), self.tenant_id, self.job_id, waited).await?;
        }
        Ok(())
    }
}

impl Drop for Learning<'_> {
    fn drop(&mut self) {
        let waited = self.ctx.lanes.end_probe(self.job_id);
        if waited == 0 {
            return;
        }
        let (queue, tenant_id, job_id) =
            (self.ctx.lanes_queue().clone(), self.tenant_id, self.job_id);
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            requeue_waiting(&queue, waited, tenant_id, job_id).await;
        }));
    }
}

/// Queue again `waited` lanes of a job that waited for its tenant's budget to be learned,
/// from a task nothing waits on: a failure is logged, and the reconciler queues the job again.
async fn requeue_waiting(queue: &Queue, waited: u32, tenant_id: Uuid, job_id: Uuid) {
    if let Err(e) = send_lanes(queue, tenant_id, job_id, waited).await {
        tracing::warn!(error = %e, "queueing lanes that waited for the budget to be learned failed; the reconciler will");
    }
}

/// Queue `lanes` more lanes of a job (none: nothing is sent).
async fn send_lanes(
    queue: &Queue,
    tenant_id: Uuid,
    job_id: Uuid,
    lanes: u32,
) -> Result<(), QueueError> {
    let lanes = (0..lanes)
        .map(|_| Message::work(tenant_id, job_id))
        .collect();
    queue.push_bulk(lanes).await
}

/// How long a lane that found another process writing to its tenant stays away before it goes
/// back on the queue, for whichever process polls first — the writer, as often as not. It used
/// to be the queue's whole seconds (one to two): with 50 throttled tenants on two worker
/// processes (`licensor-bench --scenario msp`, PostgreSQL + Redis) the median tenant had 74–76 %
/// of its budget that way. The lane waits on a timer, not in its worker place: the place looks
/// for a message as soon as the step ends, and a lane put back before then went to the very
/// process that had just left it, nearly every time (60 times in a row over 14 s for one tenant
/// of the msp benchmark, while its writer got none).
const WRITER_AWAY: Duration = Duration::from_millis(150);
/// How many lanes this process may keep away for [`WRITER_AWAY`] at once. Beyond them a lane
/// left to its tenant's writer is queued again for the next whole second: while a writer is
/// stalled (its turn lasts until its missed heartbeats are seen) or idle with its turn still on
/// (up to [`jobs::writer::TURN`]), its tenants' lanes cycle through the queue at most
/// `AWAY_LANES` per `WRITER_AWAY` (about 100 a second), not all of them every 150 ms. It was
/// two, each holding its worker place while it waited: with 500 tenants on two worker
/// processes, the lanes that came back for their budget to the other process mostly went to the
/// next whole second, and tenants wrote for a median 74–78 s where 45 s would do.
const AWAY_LANES: usize = 16;
/// The lanes this process keeps away for [`WRITER_AWAY`] now: one permit each.
static AWAY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AWAY_LANES);

/// Leave a job's lane to `writer`, the process holding its tenant's turn to write: on its own
/// queue at once where processes have one ([`Queue::of_process`], Redis). Otherwise — on the
/// embedded default, or with no live writer to name (this process is no longer live) — back on
/// the shared queue [`WRITER_AWAY`] after its step (or, with [`AWAY_LANES`] lanes already away,
/// at the next whole second), for whichever process polls first. Should the writer or this
/// process die meanwhile, its tenants' running jobs are queued again as its turns end, and the
/// reconciler queues any job that stalls.
///
/// A job's first lane goes with the lanes it brings (`brought`, set to 0 once it is queued or
/// on its timer): the writer hands them on, not this process.
async fn leave_to_writer(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
    writer: Option<&str>,
    brought: &mut u32,
) -> Result<(), BoxDynError> {
    let message = Message::Work {
        tenant_id,
        job_id,
        more_lanes: *brought,
    };
    if let Some(writers) = writer.and_then(|w| ctx.queue.of_process(w)) {
        writers.push_unwoken(message).await?;
        *brought = 0;
        return Ok(());
    }
    match AWAY.try_acquire() {
        Ok(away) => {
            let queue = ctx.queue.clone();
            tokio::spawn(tracing::Instrument::in_current_span(async move {
                tokio::time::sleep(WRITER_AWAY).await;
                if let Err(e) = queue.push_unwoken(message).await {
                    tracing::warn!(error = %e, "queueing a lane left to its tenant's writer failed; the reconciler will");
                }
                drop(away);
            }));
        }
        Err(_) => {
            ctx.queue
                .push_at(message, Utc::now() + chrono::Duration::milliseconds(1))
                .await?
        }
    }
    *brought = 0;
    Ok(())
}

/// Queue a job's lane again after `wait`, the step holding its worker place meanwhile (the
/// queue itself schedules by whole seconds only).
async fn lane_again_after(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
    wait: Duration,
) -> Result<(), BoxDynError> {
    tokio::time::sleep(wait).await;
    ctx.lanes_queue()
        .push(Message::work(tenant_id, job_id))
        .await?;
    Ok(())
}

/// How soon a lane that found every member stored so far taken comes back while the job's groups
/// are still being read.
const EXPANSION_POLL: Duration = Duration::from_millis(250);
/// How soon a lane that found free members' rows locked by another transaction comes back for
/// them ([`jobs::lease::any_claimable`]).
const LOCKED_POLL: Duration = Duration::from_millis(500);
/// How often a lane of a launched preview looks again while other lanes still write the members
/// predicted to succeed ([`jobs::launch::predicted_first`]).
const LAUNCH_ORDER_POLL: Duration = Duration::from_millis(500);
/// How far ahead a lane looks at the tenant's write budget when it sizes its chunk, and how
/// early a lane that left for the budget comes back before the budget frees.
const BUDGET_HORIZON: Duration = Duration::from_secs(1);
/// The longest a chunk's write waits for the tenant's write budget; past it the chunk gives
/// back the members not written yet and its lane comes back when the budget frees.
const BUDGET_PATIENCE: Duration = Duration::from_secs(2);
/// How many horizons of the tenant's writes a job's lanes hold between them: while one lane's
/// chunk is written, the next are already claimed, so the budget does not idle while a lane
/// records its outcomes and comes back through the queue. Four rather than two: every step
/// costs the same dozen statements and queue round trip whatever its size, and with hundreds
/// of throttled tenants at once those per-step costs, not the directory, set the pace
/// (`licensor-bench --scenario msp`, 200 tenants: median share 55 % with two, 62–65 % with four).
const HORIZONS_HELD: u64 = 4;
/// The fewest members a lane takes while the budget allows any: two `$batch`es of writes.
/// The second waits for the budget within [`BUDGET_PATIENCE`] at Graph's rate shape (20
/// writes per second), so the step still holds its worker place for no longer than that.
const LEAST_CHUNK: u64 = 2 * licensor_core::directory::MAX_BATCH as u64;

/// The most members a lane learning its tenant's write budget takes ([`Probe::Learns`]): ten
/// `$batch`es of writes. The writes let out to a new directory start at one `$batch` and double
/// as they are answered (see `licensor_core::directory::WriteLimiter`), so a budget of up to
/// about a hundred writes per window is met, and learned, within them; a larger one lets them all
/// through unrefused, and the job's lanes then take `jobs.chunk_size`. Each member taken beyond
/// what the budget lets through was claimed and given back unsent: with `jobs.chunk_size` (500)
/// at 100 writes per 5 s, four in five.
const LEARNING_CHUNK: u64 = 10 * licensor_core::directory::MAX_BATCH as u64;

/// How many members this lane takes, sized to the tenant's write budget, so that a chunk waiting
/// for the budget does not hold one of the worker's places (`worker.concurrency`) that another
/// tenant's job could use meanwhile — with hundreds of tenants' jobs at once, each throttled on
/// its own budget, holding them would work a few tenants at a time.
///
/// - Budget not learned yet (or never pushing back): `jobs.chunk_size`.
/// - Writes free within [`BUDGET_HORIZON`]: this lane's share of [`HORIZONS_HELD`] times as
///   many (the job's lanes split them), at least [`LEAST_CHUNK`], at most `jobs.chunk_size`.
/// - None free until later: the lane is queued again for just before the budget frees (the
///   queue schedules by whole seconds) and takes nothing now (`None`).
///
/// The writes taken on against a learned budget are pledged
/// ([`licensor_core::directory::Pledge`]) until the chunk's grants redeem them or the step
/// ends: the tenant's next lane sees them as spent, and waits for the budget beyond them instead
/// of taking members for the same free slots only to give them back unsent (`licensor-bench --scenario msp`, 100 tenants: 2.75 members taken for each one
/// written without it).
async fn budgeted_chunk(
    ctx: &WorkerContext,
    client: &DirectoryClient,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<(u64, Arc<Pledge>)>, BoxDynError> {
    let most = ctx.jobs.chunk_size as u64;
    let lanes = ctx.jobs.lanes_per_job.max(1) as u64;
    let now = tokio::time::Instant::now();
    // Nothing is pledged while the budget is being learned: the outlook has no bound to keep
    // then, and a pledge made before would count against the budget once it is learned.
    let (outlook, pledge) = client.pledge_writes(BUDGET_HORIZON, |outlook| match outlook {
        Outlook::Open => 0,
        Outlook::Ready(writes) => (writes * HORIZONS_HELD / lanes).max(LEAST_CHUNK).min(most),
        Outlook::Wait(at) if at.saturating_duration_since(now) <= BUDGET_PATIENCE => {
            LEAST_CHUNK.min(most)
        }
        Outlook::Wait(_) => 0,
    });
    match outlook {
        Outlook::Open => Ok(Some((most, pledge))),
        Outlook::Wait(at) if pledge.left() == 0 => {
            drop(pledge);
            defer_lane(ctx, client, tenant_id, job_id, at).await?;
            Ok(None)
        }
        _ => Ok(Some((pledge.left(), pledge))),
    }
}

/// Queue a job's lane again [`LANE_LEAD`] before its tenant's write budget frees at `until`,
/// for this process: it holds the tenant's turn to write, and the lane is its to work.
///
/// The lane waits here, not on the queue: the queue schedules by whole seconds and gives a due
/// message to whichever process polls first, and a lane another process takes only goes back
/// to the queue for the writer ([`leave_to_writer`]), again and again while the writer's places
/// are busy (`licensor-bench --scenario msp` on two workers: tenants lost seconds per window
/// that way). Queued by this process when due, it wakes this process's queue worker. Should
/// this process stop or die meanwhile, its tenants' running jobs are queued again as its turns
/// end ([`licensor_core::jobs::processes`]).
///
/// While it waits, the lane looks at the budget every [`PARKED_POLL`] and comes back sooner
/// when the budget frees sooner than it said: the limit it was learned to have grew (a limit
/// probe's reading raised it, see [`licensor_core::directory::WriteLimiter`]), or a probe is
/// due. Otherwise a budget that grew between two jobs went unused until the last job's writes
/// left the window (150 s on Graph), whatever the probe had found.
async fn defer_lane(
    ctx: &WorkerContext,
    client: &DirectoryClient,
    tenant_id: Uuid,
    job_id: Uuid,
    until: tokio::time::Instant,
) -> Result<(), BoxDynError> {
    let wait = until.saturating_duration_since(tokio::time::Instant::now());
    let message = Message::work(tenant_id, job_id);
    if wait <= BUDGET_HORIZON {
        ctx.lanes_queue().push(message).await?;
        return Ok(());
    }
    // Another lane of the job waits for the same budget here: this one joins it, and comes back
    // as a spare lane when the budget proves free beyond one chunk ([`crate::lanes`]).
    let parked = match ctx.lanes.park(job_id, until) {
        Parked::Joined => {
            metrics::counter!("licensor_lanes_joined_total").increment(1);
            return Ok(());
        }
        Parked::Waits(parked) => parked,
    };
    // The turn outlasts the wait, so the lane comes back to this process and its budget.
    if let Err(e) = ctx.turns.keep(&ctx.db, tenant_id, wait).await {
        tracing::debug!(error = %e, "keeping the turn to write failed");
    }
    metrics::counter!("licensor_lanes_deferred_total").increment(1);
    let (queue, lanes, limiter) = (
        ctx.lanes_queue().clone(),
        ctx.lanes.clone(),
        client.write_limiter(),
    );
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        let mut until = until;
        loop {
            let due = until.checked_sub(LANE_LEAD).unwrap_or(until);
            let poll = tokio::time::Instant::now() + PARKED_POLL;
            if due <= poll {
                tokio::time::sleep_until(due).await;
                break;
            }
            tokio::time::sleep_until(poll).await;
            let frees = match limiter.outlook(BUDGET_HORIZON) {
                Outlook::Open | Outlook::Ready(_) => tokio::time::Instant::now(),
                Outlook::Wait(at) => at,
            };
            until = until.min(frees);
        }
        lanes.unpark(job_id, parked);
        if let Err(e) = queue.push(message).await {
            tracing::warn!(error = %e, "queueing a lane that waited for the write budget failed; the reconciler will");
        }
    }));
    Ok(())
}

/// How long before its tenant's write budget frees a lane that waited for it is queued: enough
/// to be taken and to claim its members, so its first writes go as the budget frees.
const LANE_LEAD: Duration = Duration::from_millis(250);

/// How often a lane that waits for its tenant's write budget looks whether it frees sooner
/// (see [`defer_lane`]).
const PARKED_POLL: Duration = Duration::from_secs(1);

/// A name for one step's leases: this process and a random suffix.
fn step_owner(ctx: &WorkerContext) -> String {
    format!(
        "{}/{}",
        ctx.name,
        &Uuid::new_v4().simple().to_string()[..12]
    )
}

/// When a lease taken or renewed now runs out (`jobs.lease_secs`).
fn lease_until(ctx: &WorkerContext) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(ctx.jobs.lease_secs as i64)
}

fn count(kind: &str, outcomes: &[(i64, Outcome)]) {
    // One counter update per outcome and code in the chunk, not per member.
    let mut counts: Vec<((&str, &str), u64)> = Vec::new();
    for (_, o) in outcomes {
        let key = match o {
            Outcome::Succeeded { .. } => ("succeeded", ""),
            Outcome::Skipped { .. } => ("skipped", ""),
            Outcome::Failed { code, .. } => ("failed", code.as_str()),
            Outcome::Retry { code, .. } => ("retried", code.as_str()),
            Outcome::Left { code, .. } => ("skipped", code.as_str()),
            Outcome::NotSent => ("not_sent", ""),
            Outcome::Refreshed { .. } | Outcome::Changed { .. } => continue,
        };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    for ((outcome, code), n) in counts {
        metrics::counter!("licensor_job_items_total", "kind" => kind.to_owned(), "outcome" => outcome, "code" => code.to_owned()).increment(n);
    }
}

/// Create removal jobs for temporary assignments whose time is up, and queue them.
#[tracing::instrument(name = "jobs.sweep_expiries", skip_all)]
pub async fn sweep_expiries(ctx: &Arc<WorkerContext>) -> Result<usize, BoxDynError> {
    let created = jobs::expiry::create_expiry_removals(&ctx.db, Utc::now()).await?;
    for (tenant_id, job_id) in &created {
        tracing::info!(job = %job_id, "temporary assignments due: removal job created");
        if let Err(e) = ctx
            .queue
            .push(Message::Run {
                tenant_id: *tenant_id,
                job_id: *job_id,
            })
            .await
        {
            // The reconciler queues it later.
            tracing::warn!(job = %job_id, error = %e, "queueing a removal job failed");
        }
    }
    metrics::counter!("licensor_expiry_removal_jobs_total").increment(created.len() as u64);
    Ok(created.len())
}

/// Queue again the jobs that made no progress for `stall_secs`: their messages may have been
/// lost (a crash between commit and enqueue, a flushed Redis, a dead worker). Repeating a
/// message is harmless; only pending members are worked.
pub async fn reconcile(ctx: &Arc<WorkerContext>) -> Result<usize, BoxDynError> {
    let before = Utc::now() - chrono::Duration::seconds(ctx.jobs.stall_secs as i64);
    requeue_idle_since(ctx, before).await
}

/// Queue again every queued or running job at once, however recently it moved: for when the
/// queue itself lost its messages (a Redis that restarted empty), where waiting for the
/// reconciler would leave the jobs idle for `stall_secs`.
pub async fn requeue_active(ctx: &WorkerContext) -> Result<usize, BoxDynError> {
    requeue_idle_since(ctx, Utc::now() + chrono::Duration::seconds(1)).await
}

#[tracing::instrument(name = "jobs.requeue", skip_all)]
async fn requeue_idle_since(
    ctx: &WorkerContext,
    before: chrono::DateTime<Utc>,
) -> Result<usize, BoxDynError> {
    let stalled = jobs::reconcile::stalled(&ctx.db, before).await?;
    for (tenant_id, job_id) in &stalled {
        jobs::reconcile::touch(&ctx.db, *job_id).await?;
        ctx.queue
            .push(Message::Run {
                tenant_id: *tenant_id,
                job_id: *job_id,
            })
            .await?;
        tracing::info!(job = %job_id, "job made no progress; queued again");
    }
    metrics::counter!("licensor_jobs_requeued_total").increment(stalled.len() as u64);
    Ok(stalled.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first lane's step that failed after it handed on the lanes it brought is not taken
    /// again with them (they would be queued twice, and the job would keep more lanes than
    /// `jobs.lanes_per_job` for good); one that failed before is, with all of them; one that
    /// ended well with some not handed on queues them.
    #[test]
    fn a_first_lane_hands_its_lanes_on_once() {
        assert_eq!(after_step(3, 0, false), AfterStep::PlainLane);
        assert_eq!(after_step(3, 3, false), AfterStep::AsItEnded);
        assert_eq!(after_step(3, 0, true), AfterStep::AsItEnded);
        assert_eq!(after_step(3, 3, true), AfterStep::Send(3));
        // A plain lane's step keeps its outcome.
        assert_eq!(after_step(0, 0, false), AfterStep::AsItEnded);
        assert_eq!(after_step(0, 0, true), AfterStep::AsItEnded);
    }
}
