//! Working one chunk of a job: decide for each member from the directory's state (its snapshot
//! from this run, or a fresh read), write the differences through the directory client in
//! `$batch`es, decide again from a fresh read what the directory refused as a whole, and
//! verify the writes when asked. What each member's result means is in [`super::outcome`].

use chrono::Utc;
use uuid::Uuid;

use super::outcome::{JobFailure, Outcome, item_outcome};
use super::plan::{self, Change, Decision, Snapshot, UndoTarget};
use super::request::{ParsedRequest, UsageLocation};
use super::{codes, state};
use crate::config::JobSettings;
use crate::db::Db;
use crate::directory::{AssignedLicense, DirectoryClient, DirectoryError, ItemCode, WriteOp};
use crate::domain::JobStatus;
use crate::entities::{job, job_item};

/// A write still to make for a member.
pub(crate) struct Pending {
    id: i64,
    attempts: i32,
    user_id: String,
    set_location: Option<UsageLocation>,
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
    fn decide(&mut self, req: &ParsedRequest, m: Member, snap: Option<&Snapshot>, fresh: bool) {
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
        req: &ParsedRequest,
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
                Err(e) => match item_outcome(&e, m.attempts, max_attempts) {
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
pub async fn process(
    db: &Db,
    client: &DirectoryClient,
    settings: &JobSettings,
    job: &job::Model,
    req: &ParsedRequest,
    items: Vec<job_item::Model>,
) -> Result<(Vec<(i64, Outcome)>, Option<tokio::time::Instant>), JobFailure> {
    let max_attempts = settings.item_max_attempts;
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

    let due_at = req.expires_in().map(|e| e.due_from(Utc::now()));
    let mut written: Vec<Pending> = Vec::new();
    // Two passes: the writes as decided, then those the directory refused as a whole, decided
    // again from a fresh read.
    for pass in 0..2 {
        if step.writes.is_empty() {
            break;
        }
        // A cancel stops the job between chunks and before writes; a pause leaves the members
        // not written yet pending, for when the job is resumed.
        if state::stopped_meanwhile(db, job.id).await {
            if matches!(
                super::finish::status(db, job.id).await,
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
    if due_at.is_some() {
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
pub(crate) async fn write(
    client: &DirectoryClient,
    req: &ParsedRequest,
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
                    usage_location: writes[*i]
                        .set_location
                        .as_ref()
                        .map(|l| l.to_string())
                        .unwrap_or_default(),
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
                    Err(e) => match item_outcome(&e, writes[i].attempts, max_attempts) {
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
                }) if req.usage_location().is_some() && !w.location_tried => {
                    again.push(Pending {
                        set_location: req.usage_location().cloned(),
                        ..w
                    });
                }
                Err(e) => match item_outcome(&e, w.attempts, max_attempts) {
                    Some(o) => outcomes.push((w.id, location_written(o, &w))),
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

/// A member whose usage location this step set before its license write failed keeps that
/// location (Graph has no transaction across the two calls): its outcome says so, so the
/// Job Monitor never hides a change licensor made.
fn location_written(outcome: Outcome, w: &Pending) -> Outcome {
    let Some(location) = w.set_location.as_deref().filter(|_| w.location_tried) else {
        return outcome;
    };
    let note = format!(" (its usage location was set to {location} before the license write)");
    match outcome {
        Outcome::Failed { code, detail } => Outcome::Failed {
            code,
            detail: detail + &note,
        },
        Outcome::Retry {
            not_before,
            code,
            detail,
        } => Outcome::Retry {
            not_before,
            code,
            detail: detail + &note,
        },
        other => other,
    }
}
