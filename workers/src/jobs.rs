//! Group license jobs on the worker side.
//!
//! `Run` starts (or resumes) a job: it expands the selected groups into one item per member,
//! streaming the directory's pages into the database, and queues the job's lanes. `Work` is one
//! lane step: take a chunk of pending members under a lease, decide per member from its
//! snapshot, write through the directory client in `$batch`es, record the outcomes with the
//! job's counters in one transaction, then queue the lane's next step behind other jobs' work —
//! so a huge job never holds up a small one. The last step to find nothing pending finishes the
//! job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis::prelude::BoxDynError;
use chrono::Utc;
use futures::StreamExt;
use licensor_core::directory::{
    AssignedLicense, ClientError, DirectoryClient, DirectoryError, ItemCode, Outlook, WriteOp,
};
use licensor_core::domain::{ItemStatus, JobKind, JobStatus};
use licensor_core::entities::{job, job_item};
use licensor_core::jobs::codes;
use licensor_core::jobs::pipeline::{
    self, CanaryDecision, ExpandPosition, NewItem, Outcome, PageMark,
};
use licensor_core::jobs::plan::{self, Change, Decision, Snapshot, UndoTarget};
use licensor_core::jobs::{GroupRef, JobFacts, JobRequest, SkuRef, deliver, export, preview};
use licensor_core::queue::Message;
use licensor_core::tenants;
use uuid::Uuid;

use crate::WorkerContext;

/// Why a job cannot go on: it ends `failed` with this code and detail.
#[derive(Debug)]
struct JobFailure {
    code: &'static str,
    detail: String,
}

impl JobFailure {
    fn from_directory(e: &DirectoryError, doing: &str) -> JobFailure {
        match e {
            DirectoryError::CredentialsRejected { detail } => JobFailure {
                code: "directory_credentials_rejected",
                detail: format!("the directory refused licensor's credentials: {detail}"),
            },
            DirectoryError::Transient { detail, .. } => JobFailure {
                code: "directory_unavailable",
                detail: format!("the directory did not answer while {doing}: {detail}"),
            },
            other => JobFailure {
                code: "directory_error",
                detail: format!("{doing}: {other}"),
            },
        }
    }
}

async fn client_for(
    ctx: &WorkerContext,
    tenant_id: Uuid,
) -> Result<Result<DirectoryClient, JobFailure>, BoxDynError> {
    let tenant = tenants::get(&ctx.db, tenant_id).await?;
    Ok(ctx.directory.for_tenant(&tenant).map_err(|e| match e {
        ClientError::NotConfigured => JobFailure {
            code: "directory_not_configured",
            detail: e.to_string(),
        },
        ClientError::Secret(e) => JobFailure {
            code: "directory_not_configured",
            detail: format!("the tenant's client secret cannot be read: {e}"),
        },
        ClientError::Directory(e) => JobFailure::from_directory(&e, "connecting"),
    }))
}

async fn fail(
    ctx: &WorkerContext,
    job: &job::Model,
    failure: JobFailure,
) -> Result<(), BoxDynError> {
    if pipeline::fail(&ctx.db, job.id, failure.code, &failure.detail).await? {
        crate::webhooks::queue_job_events(ctx, job.id).await;
        tracing::warn!(job = %job.id, code = failure.code, detail = %failure.detail, "job failed");
        metrics::counter!("licensor_jobs_completed_total", "kind" => job.kind.clone(), "status" => "failed").increment(1);
    }
    Ok(())
}

async fn push_lanes(ctx: &WorkerContext, job: &job::Model) -> Result<(), BoxDynError> {
    let lanes = (0..ctx.jobs.lanes_per_job)
        .map(|_| Message::Work {
            tenant_id: job.tenant_id,
            job_id: job.id,
        })
        .collect();
    ctx.queue.push_bulk(lanes).await?;
    Ok(())
}

/// Start or resume a job.
pub async fn run(ctx: &WorkerContext, tenant_id: Uuid, job_id: Uuid) -> Result<(), BoxDynError> {
    let Some(job) = pipeline::start(&ctx.db, tenant_id, job_id).await? else {
        // A cancelled job whose members a stopped worker held: skip them now.
        if pipeline::status(&ctx.db, job_id).await? == Some(JobStatus::Cancelled) {
            settle_cancelled(ctx, job_id).await?;
        }
        return Ok(());
    };
    let req = pipeline::request_of(&job)?;
    // A preview's members predicted as they are read (see `expand`).
    let mut read = None;
    if job.expanded_at.is_none() {
        let owner = step_owner(ctx);
        if !pipeline::claim_expansion(&ctx.db, job.id, &owner, lease_until(ctx)).await? {
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
                    if let Err(e) = pipeline::claim_expansion(&db, job_id, &owner, until).await {
                        tracing::warn!(job = %job_id, error = %e, "renewing the expansion lease failed");
                    }
                }
            }
        }));
        let expanded = expand(ctx, &job, &req, &mut read).await?;
        if !matches!(expanded, Ok(true)) {
            // A rerun goes on reading from the last page stored, at once.
            pipeline::release_expansion(&ctx.db, job.id, &owner).await?;
        }
        match expanded {
            Ok(true) => pipeline::mark_expanded(&ctx.db, job.id).await?,
            Ok(false) => {
                // Cancelled or paused (by its canary) while the groups were read, or cancelled
                // and run again meanwhile.
                match pipeline::status(&ctx.db, job.id).await? {
                    Some(JobStatus::Paused) => {
                        // A resumed job reads on from the last page stored.
                        tracing::info!(job = %job.id, "job paused during expansion");
                    }
                    Some(JobStatus::Cancelled) => {
                        // Nothing more is read or queued.
                        tracing::info!(job = %job.id, "job cancelled during expansion");
                        settle_cancelled(ctx, job.id).await?;
                    }
                    _ => {
                        // Run again while this step read the groups: the new run's step reads
                        // on from the last page stored, with the new run's number.
                        tracing::info!(job = %job.id, "job run again during expansion: handing over");
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
    if job.kind == JobKind::Export.as_str() {
        // Export Results: the file goes where the request asked before the job finishes.
        let client = if deliver::needs_directory(&job) {
            match client_for(ctx, tenant_id).await? {
                Ok(c) => Some(c),
                Err(f) => return fail(ctx, &job, f).await,
            }
        } else {
            None
        };
        if let Err(e) = deliver::deliver(&ctx.db, client.as_ref(), tenant_id, job_id).await? {
            let failure = JobFailure {
                code: e.code(),
                detail: e.to_string(),
            };
            return fail(ctx, &job, failure).await;
        }
    }
    if finish(ctx, &job).await? {
        return Ok(());
    }
    push_lanes(ctx, &job).await
}

/// A preview whose members are all read: end it `previewed`. Its members were predicted as the
/// expansion stored them (`read`), or — when that step did not store them all (resumed after a
/// crash or a restart) — are predicted now from what the expansion read (the same decisions a
/// real run takes before writing, units counted in member order against the free units read
/// now). Nothing is written to the directory.
async fn conclude_preview<'a>(
    ctx: &WorkerContext,
    job: &job::Model,
    req: &'a JobRequest,
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
        metrics::counter!("licensor_jobs_completed_total", "kind" => job.kind.clone(), "status" => JobStatus::Previewed.as_str()).increment(1);
    }
    Ok(())
}

/// Skip a cancelled job's members nobody holds; when that leaves none pending, its run closes
/// and the `job.cancelled` webhook deliveries are queued.
async fn settle_cancelled(ctx: &WorkerContext, job_id: Uuid) -> Result<(), BoxDynError> {
    if pipeline::settle_cancelled(&ctx.db, job_id).await?.closed {
        crate::webhooks::queue_job_events(ctx, job_id).await;
    }
    Ok(())
}

/// Finish the job if nothing is pending; true when it is over.
async fn finish(ctx: &WorkerContext, job: &job::Model) -> Result<bool, BoxDynError> {
    if let Some(status) = pipeline::finish_if_done(&ctx.db, job.id).await? {
        crate::webhooks::queue_job_events(ctx, job.id).await;
        tracing::info!(job = %job.id, kind = %job.kind, status = status.as_str(), "job finished");
        metrics::counter!("licensor_jobs_completed_total", "kind" => job.kind.clone(), "status" => status.as_str()).increment(1);
        return Ok(true);
    }
    Ok(false)
}

/// Expand the selected groups into items, page by page. `Ok(false)`: the job stopped running
/// (cancelled) and expansion stopped at that page. A preview read from its first page predicts
/// each member as it is stored, against the free units read at the start, and leaves its
/// predictor in `read` (a resumed one is predicted once all are read).
async fn expand<'a>(
    ctx: &WorkerContext,
    job: &job::Model,
    req: &'a JobRequest,
    read: &mut Option<preview::Predictor<'a>>,
) -> Result<Result<bool, JobFailure>, BoxDynError> {
    let client = match client_for(ctx, job.tenant_id).await? {
        Ok(c) => c,
        Err(f) => return Ok(Err(f)),
    };
    let mut facts = JobFacts::default();
    let skus = match client.subscribed_skus().await {
        Ok(skus) => {
            facts.skus = skus
                .iter()
                .map(|s| SkuRef {
                    sku_id: s.sku_id,
                    sku_part_number: s.sku_part_number.clone(),
                })
                .collect();
            skus
        }
        Err(e) => {
            return Ok(Err(JobFailure::from_directory(
                &e,
                "reading subscribed SKUs",
            )));
        }
    };
    for id in &req.groups {
        match client.get_group(id).await {
            Ok(g) => facts.groups.push(GroupRef {
                id: id.clone(),
                display_name: g.display_name,
            }),
            Err(DirectoryError::NotFound { .. }) => {
                return Ok(Err(JobFailure {
                    code: "group_not_found",
                    detail: format!("group {id} does not exist in the directory"),
                }));
            }
            Err(e) => {
                return Ok(Err(JobFailure::from_directory(
                    &e,
                    "reading the selected groups",
                )));
            }
        }
    }
    // A launched preview that reads its groups again keeps its summary.
    facts.preview = JobFacts::of(job).preview;
    pipeline::set_facts(&ctx.db, job.id, &facts).await?;
    if req.kind == JobKind::Export {
        return Ok(
            match export::expand(&ctx.db, &client, job, req, facts).await? {
                Ok(Some(members)) => {
                    tracing::info!(job = %job.id, members, groups = req.groups.len(), "export expanded");
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err((e, doing)) => Err(JobFailure::from_directory(&e, doing)),
            },
        );
    }
    let status = if req.kind == JobKind::Export {
        ItemStatus::Succeeded
    } else {
        ItemStatus::Pending
    };
    // A preview's members are decided once all are read, and never worked.
    let work_now = status == ItemStatus::Pending && !req.preview;
    // A crashed or interrupted expansion goes on from the page after the last one stored.
    let start = ExpandPosition::of(job);
    if start != ExpandPosition::default() {
        tracing::info!(job = %job.id, group = start.group, "expansion resumed where it stopped");
        // Members already read may be waiting: let the lanes take them while reading goes on.
        if work_now {
            push_lanes(ctx, job).await?;
        }
    }
    let mut lanes_started = start != ExpandPosition::default();
    if req.preview && start == ExpandPosition::default() && job.total == 0 {
        *read = Some(preview::Predictor::new(req, &skus));
    }
    // Members predicted already (one in several selected groups is stored once, as first read).
    let mut predicted = std::collections::HashSet::new();
    let mut members = 0u64;
    for (index, group) in req.groups.iter().enumerate().skip(start.group) {
        let from = (index == start.group).then(|| start.next.clone()).flatten();
        // The next pages are read while this one is stored: a reader task runs up to
        // PAGES_AHEAD pages ahead, and stops with this step.
        let (tx, mut pages) = tokio::sync::mpsc::channel(PAGES_AHEAD);
        let _reader = AbortOnDrop(tokio::spawn({
            let stream = client.member_pages(group, req.transitive, from);
            async move {
                let mut stream = stream;
                while let Some(page) = stream.next().await {
                    let failed = page.is_err();
                    if tx.send(page).await.is_err() || failed {
                        break;
                    }
                }
            }
        }));
        loop {
            let page = match pages.recv().await {
                None => break,
                Some(Ok(page)) => page,
                Some(Err(e)) => {
                    return Ok(Err(JobFailure::from_directory(&e, "reading group members")));
                }
            };
            // Pages read already and waiting are stored with this one, in one transaction
            // (never waiting for a page still being read): fewer commits while the directory
            // answers faster than the database stores.
            let mut users = page.users;
            let mut next_link = page.next_link;
            let mut failed = None;
            while next_link.is_some() && users.len() < MEMBERS_PER_STORE {
                match pages.try_recv() {
                    Ok(Ok(more)) => {
                        users.extend(more.users);
                        next_link = more.next_link;
                    }
                    Ok(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mark = PageMark {
                position: ExpandPosition::after_page(index, next_link),
                lease_until: lease_until(ctx),
            };
            let mut items = Vec::with_capacity(users.len());
            for user in users {
                let snap = Snapshot::of(&user);
                let prediction = match read.as_mut() {
                    Some(p) if predicted.insert(user.id.clone()) => Some(p.predict_value(&snap)?),
                    _ => None,
                };
                items.push(NewItem {
                    usage_location: snap.usage_location.clone(),
                    licenses: serde_json::to_value(&snap).ok(),
                    user_id: user.id,
                    user_principal_name: user.user_principal_name,
                    display_name: user.display_name,
                    group_id: group.clone(),
                    prediction,
                });
            }
            match pipeline::insert_items(&ctx.db, job.id, job.runs, items, status, Some(&mark))
                .await?
            {
                Some(n) => members += n,
                None => return Ok(Ok(false)),
            }
            if work_now && !lanes_started && members > 0 {
                // Work starts while the rest of the groups are still being read.
                push_lanes(ctx, job).await?;
                lanes_started = true;
            }
            if let Some(e) = failed {
                return Ok(Err(JobFailure::from_directory(&e, "reading group members")));
            }
        }
    }
    tracing::info!(job = %job.id, members, groups = req.groups.len(), "job expanded");
    Ok(Ok(true))
}

/// Member pages the reader may run ahead of the expansion's stores.
const PAGES_AHEAD: usize = 2;

/// At most this many members read ahead are stored in one transaction (pages are never split).
const MEMBERS_PER_STORE: usize = 3000;

/// One lane step: a chunk of the job's pending members.
pub async fn work(ctx: &WorkerContext, tenant_id: Uuid, job_id: Uuid) -> Result<(), BoxDynError> {
    let Some(job) = pipeline::load(&ctx.db, tenant_id, job_id).await? else {
        return Ok(());
    };
    if job.status != JobStatus::Running.as_str() {
        if job.status == JobStatus::Cancelled.as_str() {
            settle_cancelled(ctx, job_id).await?;
        }
        return Ok(());
    }
    if job.expand_until.is_some() && pipeline::expansion_abandoned(&job) {
        // The step reading the groups died: queue the job so another one goes on from the
        // last page stored.
        ctx.queue.push(Message::Run { tenant_id, job_id }).await?;
    }
    let req = pipeline::request_of(&job)?;
    if req.preview {
        // A preview writes nothing: its members wait for the launch.
        return Ok(());
    }
    let client = match client_for(ctx, tenant_id).await? {
        Ok(c) => c,
        Err(f) => return fail(ctx, &job, f).await,
    };
    let Some(take) = budgeted_chunk(ctx, &client, tenant_id, job_id).await? else {
        return Ok(());
    };
    let owner = step_owner(ctx);
    let lease = Duration::from_secs(ctx.jobs.lease_secs);
    let lease_until = || lease_until(ctx);
    // Until its canary has passed, a job works no more members than the canary's.
    let canary = req.canary.filter(|_| job.canary_passed_at.is_none());
    let items = match &canary {
        Some(canary) => {
            pipeline::claim_canary(&ctx.db, job_id, &owner, lease_until(), take, canary).await?
        }
        None => pipeline::claim(&ctx.db, job_id, &owner, lease_until(), take).await?,
    };
    let taken_over = items.iter().filter(|i| i.taken_over).count();
    if taken_over > 0 {
        tracing::info!(job = %job_id, members = taken_over, "took over members whose holder stopped");
        metrics::counter!("licensor_lease_takeovers_total", "lease" => "members")
            .increment(taken_over as u64);
    }
    if items.is_empty() {
        if let Some(canary) = &canary {
            match pipeline::decide_canary(&ctx.db, job_id, canary).await? {
                CanaryDecision::Paused => return Ok(()),
                CanaryDecision::Passed => return push_lanes(ctx, &job).await,
                CanaryDecision::PassedBefore | CanaryDecision::Undecided => {}
            }
        }
        let (pending, next_retry) = pipeline::pending_state(&ctx.db, job_id).await?;
        if !pending {
            finish(ctx, &job).await?;
        } else if let Some(at) = next_retry {
            // Members waiting for a retry and held by nobody: wait for them here, then go on.
            let wait = (at - Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            tokio::time::sleep(wait).await;
            ctx.queue.push(Message::Work { tenant_id, job_id }).await?;
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
                if let Err(e) = pipeline::renew(&db, job_id, &owner, until).await {
                    tracing::warn!(job = %job_id, error = %e, "renewing a lease failed");
                }
            }
        })
    });
    let held = ctx.leases.hold(tenant_id, job_id, &owner);
    let started = std::time::Instant::now();
    let n = items.len();
    // A cancel stops this chunk's writes that have not gone out yet, not only the next chunk.
    let stop = Arc::new(AtomicBool::new(false));
    let _watcher = AbortOnDrop(tokio::spawn(watch_status(
        ctx.db.clone(),
        job_id,
        stop.clone(),
    )));
    let client = client.stopping_on(stop).deferring_beyond(BUDGET_PATIENCE);
    let (outcome, throttled) =
        licensor_core::directory::count_throttles(process(ctx, &client, &job, &req, items)).await;
    let (outcomes, deferred) = match outcome {
        Ok(o) => o,
        Err(failure) => {
            drop(renewer);
            pipeline::release(&ctx.db, job_id, &owner).await?;
            held.done();
            return fail(ctx, &job, failure).await;
        }
    };
    count(&job.kind, &outcomes);
    // The lease is kept until the outcomes are stored, so nobody writes these members again
    // while the database is away.
    crate::outage::record_when_available(&ctx.db, job_id, outcomes, throttled).await?;
    if deferred.is_some() {
        // Members whose writes wait for the budget go back to the job, for whichever lane
        // comes first once it frees.
        pipeline::release(&ctx.db, job_id, &owner).await?;
    }
    held.done();
    drop(renewer);
    if let Some(canary) = &canary {
        match pipeline::decide_canary(&ctx.db, job_id, canary).await? {
            CanaryDecision::Paused => {
                tracing::info!(job = %job_id, "job paused: its canary failed too often");
                metrics::counter!("licensor_jobs_paused_total", "kind" => job.kind.clone())
                    .increment(1);
                return Ok(());
            }
            CanaryDecision::Passed => {
                // The lanes that found the canary's members all taken have stopped: start
                // them again (this one goes on below).
                tracing::info!(job = %job_id, "canary passed");
                push_lanes(ctx, &job).await?;
            }
            CanaryDecision::PassedBefore | CanaryDecision::Undecided => {}
        }
    }
    match pipeline::status(&ctx.db, job_id).await? {
        Some(JobStatus::Cancelled) => {
            // Cancelled while this chunk was worked: its members are recorded; settle the rest.
            settle_cancelled(ctx, job_id).await?;
            return Ok(());
        }
        // Paused meanwhile: members this step did not write are let go at once, and nothing
        // more is taken until the job is resumed.
        Some(JobStatus::Paused) => {
            pipeline::release(&ctx.db, job_id, &owner).await?;
            return Ok(());
        }
        _ => {}
    }
    metrics::histogram!("licensor_job_chunk_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(job = %job_id, items = n, ms = started.elapsed().as_millis() as u64, "chunk done");
    if finish(ctx, &job).await? {
        return Ok(());
    }
    match deferred {
        Some(until) => defer_lane(ctx, tenant_id, job_id, until).await?,
        None => ctx.queue.push(Message::Work { tenant_id, job_id }).await?,
    }
    Ok(())
}

/// How far ahead a lane looks at the tenant's write budget when it sizes its chunk, and how
/// early a lane that left for the budget comes back before the budget frees.
const BUDGET_HORIZON: Duration = Duration::from_secs(1);
/// The longest a chunk's write waits for the tenant's write budget; past it the chunk gives
/// back the members not written yet and its lane comes back when the budget frees.
const BUDGET_PATIENCE: Duration = Duration::from_secs(2);
/// The fewest members a lane takes while the budget allows any: one `$batch` of writes.
const LEAST_CHUNK: u64 = 20;

/// How many members this lane takes, sized to the tenant's write budget, so that a chunk waiting
/// for the budget does not hold one of the worker's places (`worker.concurrency`) that another
/// tenant's job could use meanwhile — with hundreds of tenants' jobs at once, each throttled on
/// its own budget, holding them would work a few tenants at a time.
///
/// - Budget not learned yet (or never pushing back): `jobs.chunk_size`.
/// - Writes free within [`BUDGET_HORIZON`]: this lane's share of them (the job's lanes split
///   them), at least [`LEAST_CHUNK`], at most `jobs.chunk_size`.
/// - None free until later: the lane is queued again for just before the budget frees (the
///   queue schedules by whole seconds) and takes nothing now (`None`).
async fn budgeted_chunk(
    ctx: &WorkerContext,
    client: &DirectoryClient,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<u64>, BoxDynError> {
    let most = ctx.jobs.chunk_size as u64;
    let lanes = ctx.jobs.lanes_per_job.max(1) as u64;
    Ok(Some(match client.write_outlook(BUDGET_HORIZON) {
        Outlook::Open => most,
        Outlook::Ready(writes) => (writes / lanes).max(LEAST_CHUNK).min(most),
        Outlook::Wait(at) => {
            let wait = at.saturating_duration_since(tokio::time::Instant::now());
            if wait <= BUDGET_PATIENCE {
                LEAST_CHUNK.min(most)
            } else {
                defer_lane(ctx, tenant_id, job_id, at).await?;
                return Ok(None);
            }
        }
    }))
}

/// Queue a job's lane again for just before its tenant's write budget frees at `until` (the
/// queue schedules by whole seconds, rounded up: it comes back within [`BUDGET_HORIZON`] of
/// `until`, and at once if that is sooner).
async fn defer_lane(
    ctx: &WorkerContext,
    tenant_id: Uuid,
    job_id: Uuid,
    until: tokio::time::Instant,
) -> Result<(), BoxDynError> {
    let wait = until.saturating_duration_since(tokio::time::Instant::now());
    let message = Message::Work { tenant_id, job_id };
    if wait <= BUDGET_HORIZON {
        ctx.queue.push(message).await?;
    } else {
        let at = Utc::now() + chrono::Duration::from_std(wait - BUDGET_HORIZON).unwrap_or_default();
        ctx.queue.push_at(message, at).await?;
        metrics::counter!("licensor_lanes_deferred_total").increment(1);
    }
    Ok(())
}

/// How often a step writing a chunk reads its job's status, so a cancel stops the writes not
/// sent yet within about this long (plus the requests already in flight).
const STATUS_WATCH: Duration = Duration::from_millis(250);

/// Raise `stop` as soon as the job is no longer running (cancelled, or gone). A database that
/// cannot be read raises nothing: the chunk goes on as if nothing happened.
async fn watch_status(db: licensor_core::db::Db, job_id: Uuid, stop: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(STATUS_WATCH).await;
        match pipeline::status(&db, job_id).await {
            Ok(Some(JobStatus::Running)) | Err(_) => {}
            Ok(_) => {
                stop.store(true, Ordering::Release);
                return;
            }
        }
    }
}

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

/// A background task that stops when its owner goes away.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// A write still to make for a member.
struct Pending {
    id: i64,
    attempts: i32,
    user_id: String,
    set_location: Option<String>,
    add: Vec<AssignedLicense>,
    remove: Vec<Uuid>,
    note: Option<String>,
    /// The member's direct licenses the write was decided from (the ledger's "before").
    before: Vec<AssignedLicense>,
    /// Whether the usage location was already set for this member in this step.
    location_tried: bool,
    /// Whether this write was decided again after the directory refused an earlier one.
    redecided: bool,
    /// Undo items: kept for a second decision.
    target: Option<UndoTarget>,
}

/// A member to decide for in this step.
struct Member {
    id: i64,
    attempts: i32,
    user_id: String,
    /// Undo items: what to restore, and only from what.
    target: Option<UndoTarget>,
}

impl Member {
    fn of(item: &job_item::Model) -> Member {
        Member {
            id: item.id,
            attempts: item.attempts,
            user_id: item.user_id.clone(),
            target: item
                .target
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
        }
    }
}

/// Decisions of one step, gathered.
#[derive(Default)]
struct Step {
    outcomes: Vec<(i64, Outcome)>,
    writes: Vec<Pending>,
    reads: Vec<Member>,
}

impl Step {
    /// Decide for `m` from `snap`; `fresh` when it was read in this step.
    fn decide(&mut self, req: &JobRequest, m: Member, snap: Option<&Snapshot>, fresh: bool) {
        let decision = match &m.target {
            Some(t) => plan::decide_undo(t, snap, fresh),
            None => plan::decide(req, snap, fresh),
        };
        match decision {
            Decision::Skip(note) => self.outcomes.push((
                m.id,
                Outcome::Skipped {
                    note: Some(note),
                    due_at: None,
                },
            )),
            Decision::Fail(code, detail) => self.outcomes.push((
                m.id,
                Outcome::Failed {
                    code: code.as_str().to_owned(),
                    detail,
                },
            )),
            Decision::Leave(code, detail) => self.outcomes.push((
                m.id,
                Outcome::Left {
                    code: code.to_owned(),
                    detail,
                },
            )),
            Decision::Write {
                set_location,
                add,
                remove,
                note,
            } => self.writes.push(Pending {
                id: m.id,
                attempts: m.attempts,
                target: m.target,
                user_id: m.user_id,
                set_location,
                add,
                remove,
                note,
                before: snap.map(Snapshot::direct_licenses).unwrap_or_default(),
                location_tried: false,
                redecided: false,
            }),
            Decision::Read => self.reads.push(m),
        }
    }

    /// Read the members in `reads` from the directory (batched) and decide for each from what
    /// the directory says now. Returns the new writes.
    async fn read_and_decide(
        &mut self,
        client: &DirectoryClient,
        req: &JobRequest,
        max_attempts: i32,
    ) -> Result<(), JobFailure> {
        let reads = std::mem::take(&mut self.reads);
        if reads.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = reads.iter().map(|m| m.user_id.clone()).collect();
        let users = client.read_users(&ids).await;
        for (m, user) in reads.into_iter().zip(users) {
            match user {
                Ok(user) => {
                    let snap = Snapshot::of(&user);
                    if let Ok(v) = serde_json::to_value(&snap) {
                        self.outcomes
                            .push((m.id, Outcome::Refreshed { licenses: v }));
                    }
                    self.decide(req, m, Some(&snap), true);
                }
                Err(e) => match directory_outcome(&e, m.attempts, max_attempts) {
                    Some(o) => self.outcomes.push((m.id, o)),
                    None => return Err(JobFailure::from_directory(&e, "reading a member")),
                },
            }
        }
        // A member read afresh is never read again in the same step.
        for m in std::mem::take(&mut self.reads) {
            self.outcomes.push((
                m.id,
                Outcome::Failed {
                    code: ItemCode::Other.as_str().to_owned(),
                    detail: "the member's state could not be decided".into(),
                },
            ));
        }
        Ok(())
    }
}

/// Decide and write for a chunk of members. Returns each member's outcome (with its change
/// ledger entry for every write), or the reason the whole job cannot go on.
///
/// A member is decided from its snapshot when it has one from this run; a member without one
/// (a rerun, a resumed job, an expiry removal, an undo), a member taken over from a holder that
/// stopped, and any member the snapshot says needs no write, is read from the directory first (batched reads, not paced as writes) — so "already
/// in the desired state" is only ever said from a fresh read. A multi-license call the directory
/// refuses as all or nothing ("does not have a corresponding license") is not taken as done: the
/// member is read again and the precise difference written, once.
async fn process(
    ctx: &WorkerContext,
    client: &DirectoryClient,
    job: &job::Model,
    req: &JobRequest,
    items: Vec<job_item::Model>,
) -> Result<(Vec<(i64, Outcome)>, Option<tokio::time::Instant>), JobFailure> {
    let max_attempts = ctx.jobs.item_max_attempts;
    let mut deferred = None;
    let verify = req
        .verify
        .unwrap_or(job.runs > 1 || job.parent_job_id.is_some());
    let mut step = Step::default();
    for mut item in items {
        // A member taken over from a holder that stopped (its lease ran out, or its process's
        // heartbeat did) may have been written by that holder without its outcome being
        // recorded: it is read afresh, never written from its snapshot again.
        let snap: Option<Snapshot> = item
            .licenses
            .take()
            .filter(|_| !item.taken_over)
            .and_then(|v| serde_json::from_value(v).ok());
        step.decide(req, Member::of(&item), snap.as_ref(), false);
    }
    step.read_and_decide(client, req, max_attempts).await?;

    let due_at = req.expires_in.map(|e| e.due_from(Utc::now()));
    let mut written: Vec<Pending> = Vec::new();
    // Two passes: the writes as decided, then those the directory refused as a whole, decided
    // again from a fresh read.
    for pass in 0..2 {
        if step.writes.is_empty() {
            break;
        }
        // A cancel stops the job between chunks and before writes; a pause leaves the members
        // not written yet pending, for when the job is resumed.
        if crate::outage::stopped_meanwhile(&ctx.db, job.id).await {
            if matches!(
                pipeline::status(&ctx.db, job.id).await,
                Ok(Some(JobStatus::Paused))
            ) {
                step.writes.clear();
                break;
            }
            for w in std::mem::take(&mut step.writes) {
                step.outcomes.push((w.id, Outcome::NotSent));
            }
            break;
        }
        let writes = std::mem::take(&mut step.writes);
        let refused = write(
            client,
            req,
            writes,
            max_attempts,
            &mut step.outcomes,
            &mut written,
            &mut deferred,
        )
        .await?;
        for w in refused {
            if pass == 0 && !w.redecided {
                step.reads.push(Member {
                    id: w.id,
                    attempts: w.attempts,
                    user_id: w.user_id,
                    target: w.target,
                });
                continue;
            }
            step.outcomes.push((
                w.id,
                Outcome::Failed {
                    code: ItemCode::Other.as_str().to_owned(),
                    detail: "the directory refused the change as a whole again after the member was read afresh (does not have a corresponding license)".into(),
                },
            ));
        }
        if step.reads.is_empty() {
            break;
        }
        step.read_and_decide(client, req, max_attempts).await?;
        for w in &mut step.writes {
            w.redecided = true;
        }
    }

    // The ledger, and with `verify` a read of every written member.
    let checked: Vec<Option<Result<Snapshot, DirectoryError>>> = if verify && !written.is_empty() {
        let ids: Vec<String> = written.iter().map(|w| w.user_id.clone()).collect();
        client
            .read_users(&ids)
            .await
            .into_iter()
            .map(|r| Some(r.map(|u| Snapshot::of(&u))))
            .collect()
    } else {
        written.iter().map(|_| None).collect()
    };
    for (w, check) in written.into_iter().zip(checked) {
        let mut change = Change {
            before: w.before.clone(),
            after: plan::apply(&w.before, &w.add, &w.remove),
            verified: None,
        };
        let due_at = if w.add.is_empty() { None } else { due_at };
        let outcome = match check {
            None => Outcome::Succeeded {
                note: w.note.clone(),
                due_at,
            },
            Some(Ok(snap)) => {
                change.after = snap.direct_licenses();
                if let Ok(v) = serde_json::to_value(&snap) {
                    step.outcomes
                        .push((w.id, Outcome::Refreshed { licenses: v }));
                }
                if snap.shows(&w.add, &w.remove) {
                    change.verified = Some(true);
                    Outcome::Succeeded {
                        note: Some(match &w.note {
                            Some(n) => format!("verified; {n}"),
                            None => "verified".into(),
                        }),
                        due_at,
                    }
                } else {
                    change.verified = Some(false);
                    Outcome::Failed {
                        code: "drifted".into(),
                        detail: format!(
                            "the directory accepted the change, but a read right after shows other licenses ({}): {}",
                            describe(&change.after),
                            codes::explanation("drifted")
                        ),
                    }
                }
            }
            Some(Err(e)) => Outcome::Succeeded {
                note: Some(format!("written; the read to verify it failed: {e}")),
                due_at,
            },
        };
        if let Ok(v) = serde_json::to_value(&change) {
            step.outcomes.push((w.id, Outcome::Changed { change: v }));
        }
        step.outcomes.push((w.id, outcome));
    }
    // A temporary assign's member that already held the licenses records the job's due time
    // too: an earlier temporary assignment is not removed before it.
    if req.kind == JobKind::Assign && due_at.is_some() {
        for (_, o) in &mut step.outcomes {
            if let Outcome::Skipped { due_at: d, .. } = o {
                *d = due_at;
            }
        }
    }
    Ok((step.outcomes, deferred))
}

/// Licenses as the ledger shows them: SKU ids, with disabled plans in brackets.
fn describe(licenses: &[AssignedLicense]) -> String {
    if licenses.is_empty() {
        return "none held directly".into();
    }
    licenses
        .iter()
        .map(|l| {
            if l.disabled_plans.is_empty() {
                l.sku_id.to_string()
            } else {
                let plans: Vec<String> = l.disabled_plans.iter().map(Uuid::to_string).collect();
                format!("{} [without {}]", l.sku_id, plans.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write `writes` (usage locations first where needed, then one `assignLicense` per member, in
/// `$batch`es). Outcomes go to `outcomes`; members written go to `written`. Returns the writes
/// the directory refused as a whole for a license the member does not hold, when the call did
/// more than remove that one license: they must be decided again from a fresh read.
async fn write(
    client: &DirectoryClient,
    req: &JobRequest,
    mut writes: Vec<Pending>,
    max_attempts: i32,
    outcomes: &mut Vec<(i64, Outcome)>,
    written: &mut Vec<Pending>,
    deferred: &mut Option<tokio::time::Instant>,
) -> Result<Vec<Pending>, JobFailure> {
    // A member whose write waits for the budget beyond the client's patience gets no outcome:
    // it stays pending and is given back, and the step notes when the budget frees.
    let mut defer = |until: tokio::time::Instant| {
        *deferred = Some(deferred.map_or(until, |d| d.min(until)));
    };
    let mut refused = Vec::new();
    // Up to two rounds: a member refused for a missing usage location, when the job names
    // one, gets it set and is tried once more.
    for _round in 0..2 {
        if writes.is_empty() {
            break;
        }
        // Usage locations first, for members that lack one.
        let needs_location: Vec<usize> = (0..writes.len())
            .filter(|i| writes[*i].set_location.is_some() && !writes[*i].location_tried)
            .collect();
        if !needs_location.is_empty() {
            let ops: Vec<WriteOp> = needs_location
                .iter()
                .map(|i| WriteOp::SetUsageLocation {
                    user_id: writes[*i].user_id.clone(),
                    usage_location: writes[*i].set_location.clone().unwrap_or_default(),
                })
                .collect();
            let results = client.write_batch(&ops).await;
            let mut failed = Vec::new();
            for (i, r) in needs_location.into_iter().zip(results) {
                writes[i].location_tried = true;
                match r {
                    Ok(()) => {}
                    Err(DirectoryError::Stopped) => failed.push((i, Some(Outcome::NotSent))),
                    Err(DirectoryError::Deferred { until }) => {
                        defer(until);
                        failed.push((i, None));
                    }
                    Err(e) => match directory_outcome(&e, writes[i].attempts, max_attempts) {
                        Some(o) => failed.push((i, Some(o))),
                        None => {
                            return Err(JobFailure::from_directory(&e, "setting a usage location"));
                        }
                    },
                }
            }
            for (i, o) in failed.into_iter().rev() {
                let w = writes.remove(i);
                if let Some(o) = o {
                    outcomes.push((w.id, o));
                }
            }
        }
        let ops: Vec<WriteOp> = writes
            .iter()
            .map(|w| WriteOp::AssignLicense {
                user_id: w.user_id.clone(),
                add: w.add.clone(),
                remove: w.remove.clone(),
            })
            .collect();
        let results = client.write_batch(&ops).await;
        let mut again = Vec::new();
        for (w, r) in std::mem::take(&mut writes).into_iter().zip(results) {
            match r {
                Ok(()) => written.push(w),
                Err(DirectoryError::Stopped) => outcomes.push((w.id, Outcome::NotSent)),
                Err(DirectoryError::Deferred { until }) => defer(until),
                // Only a call that removed one license and did nothing else may count as done.
                Err(DirectoryError::AlreadyDone { detail })
                    if w.add.is_empty() && w.remove.len() == 1 =>
                {
                    outcomes.push((
                        w.id,
                        Outcome::Skipped {
                            note: Some(format!("already in the desired state: {detail}")),
                            due_at: None,
                        },
                    ))
                }
                Err(DirectoryError::AlreadyDone { .. }) => refused.push(w),
                Err(DirectoryError::Permanent {
                    code: ItemCode::UsageLocationMissing,
                    ..
                }) if req.usage_location.is_some() && !w.location_tried => {
                    again.push(Pending {
                        set_location: req.usage_location.clone(),
                        ..w
                    });
                }
                Err(e) => match directory_outcome(&e, w.attempts, max_attempts) {
                    Some(o) => outcomes.push((w.id, o)),
                    None => return Err(JobFailure::from_directory(&e, "writing licenses")),
                },
            }
        }
        writes = again;
    }
    for w in writes {
        outcomes.push((
            w.id,
            Outcome::Failed {
                code: ItemCode::UsageLocationMissing.as_str().to_owned(),
                detail: "the user has no usage location".into(),
            },
        ));
    }
    Ok(refused)
}

/// The item outcome of a directory error; `None` when the whole job must stop (credentials).
fn directory_outcome(e: &DirectoryError, attempts: i32, max_attempts: i32) -> Option<Outcome> {
    match e {
        DirectoryError::CredentialsRejected { .. } => None,
        DirectoryError::AlreadyDone { detail } => Some(Outcome::Skipped {
            note: Some(format!("already in the desired state: {detail}")),
            due_at: None,
        }),
        DirectoryError::Transient {
            code,
            detail,
            retry_after,
        } => {
            if attempts + 1 >= max_attempts {
                Some(Outcome::Failed {
                    code: code.as_str().to_owned(),
                    detail: format!("gave up after {} tries: {detail}", attempts + 1),
                })
            } else {
                let backoff = Duration::from_secs(1 << attempts.clamp(0, 6) as u32);
                let wait = retry_after.map_or(backoff, |r| r.max(backoff));
                Some(Outcome::Retry {
                    not_before: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    code: code.as_str().to_owned(),
                    detail: detail.clone(),
                })
            }
        }
        other => Some(Outcome::Failed {
            code: other.item_code().as_str().to_owned(),
            detail: other.to_string(),
        }),
    }
}

/// Create removal jobs for temporary assignments whose time is up, and queue them.
pub async fn sweep_expiries(ctx: &Arc<WorkerContext>) -> Result<usize, BoxDynError> {
    let created = pipeline::create_expiry_removals(&ctx.db, Utc::now()).await?;
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
pub async fn requeue_active(ctx: &Arc<WorkerContext>) -> Result<usize, BoxDynError> {
    requeue_idle_since(ctx, Utc::now() + chrono::Duration::seconds(1)).await
}

async fn requeue_idle_since(
    ctx: &Arc<WorkerContext>,
    before: chrono::DateTime<Utc>,
) -> Result<usize, BoxDynError> {
    let stalled = pipeline::stalled(&ctx.db, before).await?;
    for (tenant_id, job_id) in &stalled {
        pipeline::touch(&ctx.db, *job_id).await?;
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
