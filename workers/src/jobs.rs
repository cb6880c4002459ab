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
use std::time::Duration;

use apalis::prelude::BoxDynError;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use licensor_core::directory::{ClientError, DirectoryClient, DirectoryError, ItemCode, WriteOp};
use licensor_core::domain::{ItemStatus, JobKind, JobStatus};
use licensor_core::entities::{job, job_item};
use licensor_core::jobs::pipeline::{self, NewItem, Outcome};
use licensor_core::jobs::plan::{self, Decision, Snapshot};
use licensor_core::jobs::{GroupRef, JobFacts, JobRequest, SkuRef, deliver, export};
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
        return Ok(());
    };
    if job.expanded_at.is_none() {
        let req = pipeline::request_of(&job)?;
        match expand(ctx, &job, &req).await? {
            Ok(()) => pipeline::mark_expanded(&ctx.db, job.id).await?,
            Err(failure) => return fail(ctx, &job, failure).await,
        }
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

/// Finish the job if nothing is pending; true when it is over.
async fn finish(ctx: &WorkerContext, job: &job::Model) -> Result<bool, BoxDynError> {
    if let Some(status) = pipeline::finish_if_done(&ctx.db, job.id).await? {
        tracing::info!(job = %job.id, kind = %job.kind, status = status.as_str(), "job finished");
        metrics::counter!("licensor_jobs_completed_total", "kind" => job.kind.clone(), "status" => status.as_str()).increment(1);
        return Ok(true);
    }
    Ok(false)
}

/// Expand the selected groups into items, page by page.
async fn expand(
    ctx: &WorkerContext,
    job: &job::Model,
    req: &JobRequest,
) -> Result<Result<(), JobFailure>, BoxDynError> {
    let client = match client_for(ctx, job.tenant_id).await? {
        Ok(c) => c,
        Err(f) => return Ok(Err(f)),
    };
    let mut facts = JobFacts::default();
    match client.subscribed_skus().await {
        Ok(skus) => {
            facts.skus = skus
                .into_iter()
                .map(|s| SkuRef {
                    sku_id: s.sku_id,
                    sku_part_number: s.sku_part_number,
                })
                .collect()
        }
        Err(e) => {
            return Ok(Err(JobFailure::from_directory(
                &e,
                "reading subscribed SKUs",
            )));
        }
    }
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
    pipeline::set_facts(&ctx.db, job.id, &facts).await?;
    if req.kind == JobKind::Export {
        return Ok(
            match export::expand(&ctx.db, &client, job, req, facts).await? {
                Ok(members) => {
                    tracing::info!(job = %job.id, members, groups = req.groups.len(), "export expanded");
                    Ok(())
                }
                Err((e, doing)) => Err(JobFailure::from_directory(&e, doing)),
            },
        );
    }
    let status = if req.kind == JobKind::Export {
        ItemStatus::Succeeded
    } else {
        ItemStatus::Pending
    };
    let mut lanes_started = false;
    let mut members = 0u64;
    for group in &req.groups {
        // The next page is read while this one is stored: a reader task runs one page ahead
        // (two pages in memory at most), and stops with this step.
        let (tx, mut pages) = tokio::sync::mpsc::channel(1);
        let _reader = AbortOnDrop(tokio::spawn({
            let stream = client.members(group, req.transitive).try_chunks(999);
            async move {
                let mut stream = stream;
                while let Some(page) = stream.next().await {
                    let failed = page.is_err();
                    if tx.send(page.map_err(|e| e.1)).await.is_err() || failed {
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
            let items = page
                .into_iter()
                .map(|user| {
                    let snap = Snapshot::of(&user);
                    NewItem {
                        usage_location: snap.usage_location.clone(),
                        licenses: serde_json::to_value(&snap).ok(),
                        user_id: user.id,
                        user_principal_name: user.user_principal_name,
                        display_name: user.display_name,
                        group_id: group.clone(),
                    }
                })
                .collect();
            members += pipeline::insert_items(&ctx.db, job.id, job.runs, items, status).await?;
            if status == ItemStatus::Pending && !lanes_started && members > 0 {
                // Work starts while the rest of the groups are still being read.
                push_lanes(ctx, job).await?;
                lanes_started = true;
            }
        }
    }
    tracing::info!(job = %job.id, members, groups = req.groups.len(), "job expanded");
    Ok(Ok(()))
}

/// One lane step: a chunk of the job's pending members.
pub async fn work(ctx: &WorkerContext, tenant_id: Uuid, job_id: Uuid) -> Result<(), BoxDynError> {
    let Some(job) = pipeline::load(&ctx.db, tenant_id, job_id).await? else {
        return Ok(());
    };
    if job.status != JobStatus::Running.as_str() {
        return Ok(());
    }
    let req = pipeline::request_of(&job)?;
    let client = match client_for(ctx, tenant_id).await? {
        Ok(c) => c,
        Err(f) => return fail(ctx, &job, f).await,
    };
    let owner = format!(
        "{}/{}",
        ctx.name,
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let lease = Duration::from_secs(ctx.jobs.lease_secs);
    let lease_until = || Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
    let items = pipeline::claim(
        &ctx.db,
        job_id,
        &owner,
        lease_until(),
        ctx.jobs.chunk_size as u64,
    )
    .await?;
    if items.is_empty() {
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
    let started = std::time::Instant::now();
    let n = items.len();
    let outcome = process(ctx, &client, &req, items).await;
    drop(renewer);
    let outcomes = match outcome {
        Ok(o) => o,
        Err(failure) => {
            pipeline::release(&ctx.db, job_id, &owner).await?;
            return fail(ctx, &job, failure).await;
        }
    };
    count(&job.kind, &outcomes);
    pipeline::record(&ctx.db, job_id, outcomes).await?;
    metrics::histogram!("licensor_job_chunk_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(job = %job_id, items = n, ms = started.elapsed().as_millis() as u64, "chunk done");
    if finish(ctx, &job).await? {
        return Ok(());
    }
    ctx.queue.push(Message::Work { tenant_id, job_id }).await?;
    Ok(())
}

/// A background task that stops when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn count(kind: &str, outcomes: &[(i64, Outcome)]) {
    for (_, o) in outcomes {
        let (outcome, code) = match o {
            Outcome::Succeeded { .. } => ("succeeded", ""),
            Outcome::Skipped { .. } => ("skipped", ""),
            Outcome::Failed { code, .. } => ("failed", code.as_str()),
            Outcome::Retry { code, .. } => ("retried", code.as_str()),
            Outcome::Refreshed { .. } => continue,
        };
        metrics::counter!("licensor_job_items_total", "kind" => kind.to_owned(), "outcome" => outcome, "code" => code.to_owned()).increment(1);
    }
}

/// A write still to make for a member.
struct Pending {
    id: i64,
    attempts: i32,
    user_id: String,
    set_location: Option<String>,
    add: Vec<licensor_core::directory::AssignedLicense>,
    remove: Vec<Uuid>,
    note: Option<String>,
    /// Whether the usage location was already set for this member in this step.
    location_tried: bool,
}

/// Decide and write for a chunk of members. Returns each member's outcome, or the reason the
/// whole job cannot go on.
async fn process(
    ctx: &WorkerContext,
    client: &DirectoryClient,
    req: &JobRequest,
    items: Vec<job_item::Model>,
) -> Result<Vec<(i64, Outcome)>, JobFailure> {
    let max_attempts = ctx.jobs.item_max_attempts;
    let mut outcomes: Vec<(i64, Outcome)> = Vec::with_capacity(items.len());
    let mut writes: Vec<Pending> = Vec::new();
    let mut reads: Vec<job_item::Model> = Vec::new();
    let plan_one = |item: &job_item::Model,
                    snap: Option<&Snapshot>,
                    outcomes: &mut Vec<(i64, Outcome)>,
                    writes: &mut Vec<Pending>|
     -> bool {
        match plan::decide(req, snap) {
            Decision::Skip(note) => outcomes.push((item.id, Outcome::Skipped { note: Some(note) })),
            Decision::Fail(code, detail) => outcomes.push((
                item.id,
                Outcome::Failed {
                    code: code.as_str().to_owned(),
                    detail,
                },
            )),
            Decision::Write {
                set_location,
                add,
                remove,
                note,
            } => writes.push(Pending {
                id: item.id,
                attempts: item.attempts,
                user_id: item.user_id.clone(),
                set_location,
                add,
                remove,
                note,
                location_tried: false,
            }),
            Decision::Read => return false,
        }
        true
    };
    for item in items {
        let snap: Option<Snapshot> = item
            .licenses
            .clone()
            .and_then(|v| serde_json::from_value(v).ok());
        if !plan_one(&item, snap.as_ref(), &mut outcomes, &mut writes) {
            reads.push(item);
        }
    }

    // Members whose current licenses must be read first (replace all, on a rerun).
    let read_results: Vec<(
        job_item::Model,
        Result<licensor_core::directory::User, DirectoryError>,
    )> = futures::stream::iter(reads)
        .map(|item| async move {
            let user = client.get_user(&item.user_id).await;
            (item, user)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (item, user) in read_results {
        match user {
            Ok(user) => {
                let snap = Snapshot::of(&user);
                if let Ok(v) = serde_json::to_value(&snap) {
                    outcomes.push((item.id, Outcome::Refreshed { licenses: v }));
                }
                plan_one(&item, Some(&snap), &mut outcomes, &mut writes);
            }
            Err(e) => match directory_outcome(&e, item.attempts, max_attempts) {
                Some(o) => outcomes.push((item.id, o)),
                None => return Err(JobFailure::from_directory(&e, "reading a member")),
            },
        }
    }

    let due_at = req.expires_in.map(|e| e.due_from(Utc::now()));
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
                if let Err(e) = r {
                    match directory_outcome(&e, writes[i].attempts, max_attempts) {
                        Some(o) => failed.push((i, o)),
                        None => {
                            return Err(JobFailure::from_directory(&e, "setting a usage location"));
                        }
                    }
                }
            }
            for (i, o) in failed.into_iter().rev() {
                let w = writes.remove(i);
                outcomes.push((w.id, o));
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
                Ok(()) => outcomes.push((
                    w.id,
                    Outcome::Succeeded {
                        note: w.note,
                        due_at: if w.add.is_empty() { None } else { due_at },
                    },
                )),
                Err(DirectoryError::AlreadyDone { detail }) => outcomes.push((
                    w.id,
                    Outcome::Skipped {
                        note: Some(format!("already in the desired state: {detail}")),
                    },
                )),
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
    Ok(outcomes)
}

/// The item outcome of a directory error; `None` when the whole job must stop (credentials).
fn directory_outcome(e: &DirectoryError, attempts: i32, max_attempts: i32) -> Option<Outcome> {
    match e {
        DirectoryError::CredentialsRejected { .. } => None,
        DirectoryError::AlreadyDone { detail } => Some(Outcome::Skipped {
            note: Some(format!("already in the desired state: {detail}")),
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
