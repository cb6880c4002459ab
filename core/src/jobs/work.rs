//! Working one chunk of a job: decide for each member from the directory's state (its snapshot
//! from this run, or a fresh read), write the differences through the directory client in
//! `$batch`es, decide again from a fresh read what the directory refused as a whole, and
//! verify the writes when asked. What each member's result means is in [`super::outcome`].

use chrono::Utc;
use uuid::Uuid;

use super::lease::Claimed;
use super::notes::{self, MADE_UNANSWERED, SEEN_AFTER_LOST_ANSWER};
use super::outcome::{JobFailure, Outcome, item_outcome};
use super::plan::{self, Change, Decision, LocationChange, Snapshot, UndoTarget};
use super::request::{ParsedRequest, UsageLocation};
use super::{codes, state};
use crate::config::JobSettings;
use crate::db::Db;
use crate::directory::{
    AssignedLicense, DirectoryClient, DirectoryError, ItemCode, WriteOp, Written,
};
use crate::domain::JobStatus;
use crate::entities::job;

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
    /// Whether the directory's answer to the write was lost and a read showed it made.
    answer_lost: bool,
    /// Undo items: kept for a second decision.
    target: Option<UndoTarget>,
    /// A usage location an earlier try of this job set (its ledger entry so far).
    located: Option<LocationChange>,
}

impl Pending {
    /// The usage location this job set for the member before its license write — in this
    /// step, or in an earlier try whose license write failed — if it did (a member that had
    /// none: `before` is `null`).
    fn location_set(&self) -> Option<LocationChange> {
        match self
            .set_location
            .as_deref()
            .filter(|_| self.set_in_this_step())
        {
            Some(location) => Some(LocationChange::given(location)),
            None => self.located.clone(),
        }
    }

    /// Whether this step set the member's usage location (its license write came after).
    fn set_in_this_step(&self) -> bool {
        self.location_tried && self.set_location.is_some()
    }
}

/// A member to decide for in this step.
struct Member {
    id: i64,
    attempts: i32,
    user_id: String,
    /// Undo items: what to restore, and only from what.
    target: Option<UndoTarget>,
    /// A member licensor may have written without recording the answer (taken over from a
    /// holder that stopped, or whose write's answer was lost): its state is read afresh first.
    taken_over: bool,
    /// For such a member, its state as last known before that write: a fresh read that shows
    /// the write it called for made it `succeeded`, with that change in the ledger.
    prior: Option<Snapshot>,
    /// A usage location an earlier try of this job set (its ledger entry so far): kept in the
    /// entry this step records.
    located: Option<LocationChange>,
}

impl Member {
    fn of(item: Claimed, prior: Option<Snapshot>) -> Member {
        Member {
            id: item.id,
            attempts: item.attempts,
            target: item
                .target
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok()),
            user_id: item.user_id,
            taken_over: item.taken_over,
            prior,
            located: item
                .change
                .as_deref()
                .and_then(|c| serde_json::from_str::<Change>(c).ok())
                .and_then(|c| c.usage_location),
        }
    }
}

/// Decisions of one step, gathered.
#[derive(Default)]
struct Step {
    outcomes: Vec<(i64, Outcome)>,
    writes: Vec<Pending>,
    reads: Vec<Member>,
    /// A temporary assign's due time for the licenses its writes add.
    due_at: Option<chrono::DateTime<Utc>>,
    /// Tries a member has (`jobs.item_max_attempts`; 0: no bound). A member with none left is
    /// only read — after a write whose fate was not known ([`settle_last_tries`]) — never
    /// written again.
    max_attempts: i32,
}

impl Step {
    /// Decide for `m` from `snap`; `fresh` when it was read in this step.
    fn decide(&mut self, req: &ParsedRequest, m: Member, snap: Option<&Snapshot>, fresh: bool) {
        let decide = |snap: Option<&Snapshot>, fresh: bool| match &m.target {
            Some(t) => plan::decide_undo(t, snap, fresh),
            None => plan::decide(req, snap, fresh),
        };
        let decision = decide(snap, fresh);
        // A member found in the desired state that its state before a write licensor may have
        // made without recording the answer called for exactly that write: the write was made.
        if let (Decision::Skip(_), Some(prior), Some(now)) = (&decision, &m.prior, snap)
            && let Decision::Write {
                add,
                remove,
                set_location,
                ..
            } = decide(Some(prior), true)
            && now.shows(&add, &remove)
        {
            let due_at = if add.is_empty() { None } else { self.due_at };
            // The location that write called for, if the member has it now: another change
            // of its location (an administrator's) is not the job's.
            let located = set_location
                .as_deref()
                .filter(|l| now.usage_location.as_deref() == Some(*l))
                .map(LocationChange::given);
            let change = Change {
                before: prior.direct_licenses(),
                after: now.direct_licenses(),
                verified: Some(true),
                usage_location: located.or_else(|| m.located.clone()),
            };
            if let Some(o) = Outcome::changed(&change) {
                self.outcomes.push((m.id, o));
            }
            self.outcomes.push((
                m.id,
                Outcome::Succeeded {
                    note: Some(MADE_UNANSWERED.into()),
                    due_at,
                },
            ));
            return;
        }
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
            Decision::Write { .. } if self.max_attempts > 0 && m.attempts >= self.max_attempts => {
                let located = m.located.as_ref().map(location_note).unwrap_or_default();
                self.outcomes.push((
                    m.id,
                    Outcome::Failed {
                        code: ItemCode::DirectoryUnavailable.as_str().to_owned(),
                        detail: format!(
                            "gave up after {} tries; a fresh read shows the change not made{located}",
                            m.attempts
                        ),
                    },
                ))
            }
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
                answer_lost: false,
                located: m.located,
            }),
            Decision::Read => self.reads.push(m),
        }
    }

    /// The step's outcomes. A temporary assign's member that already held the licenses records
    /// the job's due time too: an earlier temporary assignment is not removed before it.
    fn into_outcomes(mut self) -> Vec<(i64, Outcome)> {
        if let Some(due) = self.due_at {
            for (_, o) in &mut self.outcomes {
                if let Outcome::Skipped { due_at, .. } = o {
                    *due_at = Some(due);
                }
            }
        }
        self.outcomes
    }

    /// Read the members in `reads` from the directory (batched) and decide for each from what
    /// the directory says now. Returns the new writes.
    async fn read_and_decide(
        &mut self,
        client: &DirectoryClient,
        req: &ParsedRequest,
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
                    if let Some(o) = Outcome::refreshed(&snap) {
                        self.outcomes.push((m.id, o));
                    }
                    self.decide(req, m, Some(&snap), true);
                }
                // A member licensor may have written stays to be read first — and is never
                // called failed unread, whatever its tries; only the directory's lasting
                // answer (the user deleted) ends it.
                Err(e) => match item_outcome(&e, m.attempts, self.max_attempts) {
                    Some(Outcome::Failed { .. }) if m.taken_over => {
                        const MAY_HAVE: &str =
                            "licensor may have changed this member without recording the answer";
                        let outcome = read_refused(&e, MAY_HAVE).unwrap_or_else(|| {
                            unread(
                                format!(
                                    "{MAY_HAVE}; reading it failed ({e}), so it is read again before it is called anything"
                                ),
                                e.item_code(),
                                m.attempts,
                                e.retry_after(),
                            )
                        });
                        self.outcomes.push((m.id, outcome));
                    }
                    Some(o) => self.outcomes.push((m.id, o.read_first(m.taken_over))),
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
    items: Vec<Claimed>,
) -> Result<(Vec<(i64, Outcome)>, Option<tokio::time::Instant>), JobFailure> {
    let max_attempts = settings.item_max_attempts;
    let mut deferred = None;
    let verify = req
        .verify
        .unwrap_or(job.runs > 1 || job.parent_job_id.is_some());
    let due_at = req.expires_in().map(|e| e.due_from(Utc::now()));
    let mut step = Step {
        due_at,
        max_attempts,
        ..Step::default()
    };
    for mut item in items {
        // A member taken over from a holder that stopped (its lease ran out, or its process's
        // heartbeat did), or whose last write's answer was lost, may have been written without
        // its outcome being recorded: it is read afresh, never written from its snapshot
        // again; the snapshot tells what that write was.
        let snap = stored_snapshot(&mut item);
        let (snap, prior) = if item.taken_over {
            (None, snap)
        } else {
            (snap, None)
        };
        step.decide(req, Member::of(item, prior), snap.as_ref(), false);
    }
    step.read_and_decide(client, req).await?;

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
            // Whatever the member ends as, a location this step set stays in the ledger.
            location_kept(&mut step.outcomes, &w);
            if pass == 0 && !w.redecided {
                step.reads.push(Member {
                    located: w.location_set(),
                    id: w.id,
                    attempts: w.attempts,
                    user_id: w.user_id,
                    target: w.target,
                    taken_over: false,
                    prior: None,
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
        step.read_and_decide(client, req).await?;
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
            usage_location: w.location_set(),
        };
        let due_at = if w.add.is_empty() { None } else { due_at };
        let outcome = match check {
            None => Outcome::Succeeded {
                note: match (&w.note, w.answer_lost) {
                    (Some(n), true) => Some(format!("{SEEN_AFTER_LOST_ANSWER}; {n}")),
                    (None, true) => Some(SEEN_AFTER_LOST_ANSWER.into()),
                    (n, false) => n.clone(),
                },
                due_at,
            },
            Some(Ok(snap)) => {
                change.after = snap.direct_licenses();
                if let Some(o) = Outcome::refreshed(&snap) {
                    step.outcomes.push((w.id, o));
                }
                if snap.shows(&w.add, &w.remove) {
                    change.verified = Some(true);
                    Outcome::Succeeded {
                        note: Some(match &w.note {
                            Some(n) => format!("{}; {n}", notes::VERIFIED),
                            None => notes::VERIFIED.into(),
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
        if let Some(o) = Outcome::changed(&change) {
            step.outcomes.push((w.id, o));
        }
        step.outcomes.push((w.id, outcome));
    }
    Ok((step.into_outcomes(), deferred))
}

/// The member's snapshot stored with its item (`job_items.licenses`), taken out of it.
fn stored_snapshot(item: &mut Claimed) -> Option<Snapshot> {
    item.licenses
        .take()
        .and_then(|v| serde_json::from_str(&v).ok())
}

/// A cancelled job's members that licensor may have written without recording the answer
/// (claimed with [`super::lease::Pick::MayHaveBeenWritten`]): each is read from the directory
/// (batched reads) before it is called anything. One that shows the write its stored state
/// called for ends `succeeded` with that change in the ledger, as in [`process`]; one a fresh
/// read finds already in the desired state ends `skipped` as such; any other is skipped as
/// `cancelled` (the read shows the change not made). A user the read finds deleted ends
/// `failed` ([`read_refused`]); when the read fails otherwise the member stays pending and is
/// read again later ([`unread_after_cancel`]). Nothing is written.
pub async fn settle_unanswered(
    client: &DirectoryClient,
    req: &ParsedRequest,
    items: Vec<Claimed>,
) -> Vec<(i64, Outcome)> {
    let mut step = Step {
        due_at: req.expires_in().map(|e| e.due_from(Utc::now())),
        ..Step::default()
    };
    let members: Vec<Member> = items
        .into_iter()
        .map(|mut item| {
            let prior = stored_snapshot(&mut item);
            Member::of(item, prior)
        })
        .collect();
    let ids: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
    let users = client.read_users(&ids).await;
    for (m, user) in members.into_iter().zip(users) {
        let id = m.id;
        match user {
            Ok(user) => {
                let snap = Snapshot::of(&user);
                if let Some(o) = Outcome::refreshed(&snap) {
                    step.outcomes.push((id, o));
                }
                let before = step.outcomes.len();
                step.decide(req, m, Some(&snap), true);
                // Only what the fresh read shows is said: done (by the unanswered write, or
                // before it); anything else was not made, and the cancel stopped it.
                let shown = step.outcomes[before..]
                    .iter()
                    .any(|(_, o)| matches!(o, Outcome::Succeeded { .. } | Outcome::Skipped { .. }));
                if !shown {
                    step.outcomes.truncate(before);
                    step.outcomes.push((id, Outcome::NotSent));
                }
                step.writes.retain(|w| w.id != id);
                step.reads.retain(|r| r.id != id);
            }
            // The directory's lasting answer ends it; otherwise nothing can be said yet: the
            // member stays pending, to be read again.
            Err(e) => step.outcomes.push((
                id,
                read_refused(
                    &e,
                    "the job was cancelled while this member's write had no recorded answer",
                )
                .unwrap_or_else(|| {
                    unread_after_cancel(&e.to_string(), e.item_code(), m.attempts, e.retry_after())
                }),
            )),
        }
    }
    step.into_outcomes()
}

/// The outcome of a cancelled job's member that [`settle_unanswered`] could not read (`why`):
/// it stays pending, marked to be read first, and is read again after a backoff
/// ([`super::outcome::retry_delay`]) — never called done, skipped or failed without a read.
pub fn unread_after_cancel(
    why: &str,
    code: ItemCode,
    attempts: i32,
    retry_after: Option<std::time::Duration>,
) -> Outcome {
    unread(
        format!(
            "the job was cancelled while this member's write had no recorded answer; reading the member to see whether it was made failed ({why}), so it is read again"
        ),
        code,
        attempts,
        retry_after,
    )
}

/// The outcome of a member licensor may have written without recording the answer (`why`
/// says how) when the directory refuses its fresh read for good, or `None` when the refusal is
/// worth reading again after ([`unread`]: a 429, a 5xx, a timeout, rejected credentials).
/// - 404 (`Request_ResourceNotFound`): the user is no longer in the directory (deleted
///   meanwhile), so it holds nothing: `failed`, `user_not_found`, the directory's word in the
///   detail. Reading it again would never end (Graph: "Get user", 404 for a user that does not
///   exist).
/// - Another lasting 4xx: `failed` with the directory's code, the detail saying whether the
///   write was made could not be read; a rerun reads the member before it writes.
fn read_refused(e: &DirectoryError, why: &str) -> Option<Outcome> {
    match e {
        DirectoryError::NotFound { detail } => Some(Outcome::Failed {
            code: ItemCode::UserNotFound.as_str().to_owned(),
            detail: format!(
                "{why}; a fresh read finds the user no longer in the directory (deleted meanwhile), so it holds nothing: {detail}"
            ),
        }),
        DirectoryError::Permanent { code, detail } => Some(Outcome::Failed {
            code: code.as_str().to_owned(),
            detail: format!(
                "{why}; the directory refuses to read the member ({detail}), so whether that write was made could not be read"
            ),
        }),
        _ => None,
    }
}

/// The outcome of a member licensor may have written without recording the answer and could
/// not read (`detail` says why): pending, marked to be read first, read again after a backoff
/// ([`super::outcome::retry_delay`]) whatever tries it has had — never called done, skipped
/// or failed without a read.
fn unread(
    detail: String,
    code: ItemCode,
    attempts: i32,
    retry_after: Option<std::time::Duration>,
) -> Outcome {
    let wait = super::outcome::retry_delay(attempts, retry_after);
    Outcome::Retry {
        not_before: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        code: code.as_str().to_owned(),
        detail,
        read_first: true,
    }
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
    let mut unknown = Vec::new();
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
                    Ok(_) => {}
                    Err(DirectoryError::Stopped) => failed.push((i, Some(Outcome::NotSent))),
                    Err(DirectoryError::Deferred { until }) => {
                        defer(until);
                        failed.push((i, None));
                    }
                    // The license write is not sent: what the member holds is as it was.
                    Err(e) => match item_outcome(&e, writes[i].attempts, max_attempts) {
                        Some(o) => failed.push((i, Some(location_failed(o, &writes[i])))),
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
                Ok(answer) => written.push(Pending {
                    answer_lost: answer == Written::SeenAfterLostAnswer,
                    ..w
                }),
                Err(DirectoryError::Stopped) => {
                    // Skipped as cancelled if the job stays so: a location set is kept.
                    location_kept(outcomes, &w);
                    outcomes.push((w.id, Outcome::NotSent));
                }
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
                    // Tries run out on a write that may have been made: a read tells which.
                    Some(Outcome::Failed { .. }) if e.fate_unknown() => unknown.push((w, e)),
                    Some(o) => location_written(outcomes, o, &w),
                    None => return Err(JobFailure::from_directory(&e, "writing licenses")),
                },
            }
        }
        writes = again;
    }
    settle_last_tries(client, unknown, outcomes, written).await;
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

/// Members whose last try's license write failed without a known fate (a 5xx, a timeout, a
/// closed connection, and a read right after that failed too: the write may have been made)
/// and that have no tries left: each is read (batched) before it is called anything.
/// - The read shows the change: the write was made → to `written` (it ends `succeeded`, its
///   change in the ledger, with the lost answer in its note).
/// - The read shows it not made: `failed`, "gave up after N tries", with that said.
/// - The read finds the user deleted (404): `failed`, `user_not_found` ([`read_refused`]).
/// - The read fails too: it stays pending, to be read again after a backoff ([`unread`]); once
///   read, it ends as the read shows, and is not written again (no tries left).
///
/// Its fresh state is stored either way when read. Before, such a member ended `failed`
/// unread, though the directory might show it licensed.
async fn settle_last_tries(
    client: &DirectoryClient,
    unknown: Vec<(Pending, DirectoryError)>,
    outcomes: &mut Vec<(i64, Outcome)>,
    written: &mut Vec<Pending>,
) {
    if unknown.is_empty() {
        return;
    }
    let ids: Vec<String> = unknown.iter().map(|(w, _)| w.user_id.clone()).collect();
    let users = client.read_users(&ids).await;
    for ((w, e), user) in unknown.into_iter().zip(users) {
        let code = e.item_code().as_str().to_owned();
        let tries = w.attempts + 1;
        let detail = match &e {
            DirectoryError::Transient { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        match user {
            Ok(user) => {
                let snap = Snapshot::of(&user);
                if let Some(o) = Outcome::refreshed(&snap) {
                    outcomes.push((w.id, o));
                }
                if snap.shows(&w.add, &w.remove) {
                    written.push(Pending {
                        answer_lost: true,
                        ..w
                    });
                    continue;
                }
                let failed = Outcome::Failed {
                    code,
                    detail: format!(
                        "gave up after {tries} tries: {detail}; a read afterwards shows the change not made"
                    ),
                };
                location_written(outcomes, failed, &w);
            }
            // The directory's lasting answer ends it. Otherwise it is not known whether the
            // write was made: read again later, never written again.
            Err(read) => {
                let gave_up = format!(
                    "gave up writing after {tries} tries: {detail}; the directory's answer to the last write was lost"
                );
                let outcome = read_refused(&read, &gave_up).unwrap_or_else(|| {
                    unread(
                        format!(
                            "{gave_up} and reading the member failed ({read}), so it is read again before it is called anything"
                        ),
                        read.item_code(),
                        w.attempts,
                        read.retry_after(),
                    )
                });
                outcomes.push((w.id, outcome));
            }
        }
    }
}

/// A member whose usage location could not be set: its license write was not sent, and its
/// outcome says which write failed.
fn location_failed(mut outcome: Outcome, w: &Pending) -> Outcome {
    let location = w.set_location.as_deref().unwrap_or_default();
    if let Outcome::Failed { detail, .. } | Outcome::Retry { detail, .. } = &mut outcome {
        *detail = format!(
            "setting its usage location to {location} (the license write was not sent): {detail}"
        );
    }
    outcome
}

/// What a failed member's detail adds when the job set its usage location before.
fn location_note(set: &LocationChange) -> String {
    format!(
        " (its usage location was set to {} before the license write)",
        set.after
    )
}

/// Record `outcome` for a member whose license write failed. One whose usage location the job
/// set before keeps that location (Graph has no transaction across the two calls): its
/// outcome says so and the change ledger has it (licenses unchanged), so neither the Job
/// Monitor nor the ledger hides a change licensor made.
fn location_written(outcomes: &mut Vec<(i64, Outcome)>, outcome: Outcome, w: &Pending) {
    let Some(set) = location_kept(outcomes, w) else {
        outcomes.push((w.id, outcome));
        return;
    };
    // Set in this step, the stored state no longer says what the member holds: it is read
    // before the next try (a location set by an earlier try was read since).
    let mut outcome = if w.set_in_this_step() {
        outcome.read_first(true)
    } else {
        outcome
    };
    if let Outcome::Failed { detail, .. } | Outcome::Retry { detail, .. } = &mut outcome {
        detail.push_str(&location_note(&set));
    }
    outcomes.push((w.id, outcome));
}

/// For a member whose license write was not made (failed, not sent, refused), the ledger
/// entry of the usage location the job set for it, if it did: its licenses unchanged. A later
/// write's entry replaces it and keeps the location ([`Pending::location_set`]).
fn location_kept(outcomes: &mut Vec<(i64, Outcome)>, w: &Pending) -> Option<LocationChange> {
    let set = w.location_set()?;
    let change = Change {
        before: w.before.clone(),
        after: w.before.clone(),
        verified: None,
        usage_location: Some(set.clone()),
    };
    if let Some(o) = Outcome::changed(&change) {
        outcomes.push((w.id, o));
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::plan::tests::{G, req, snap};
    use serde_json::json;

    const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
    const E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";

    fn taken_over(prior: Option<Snapshot>) -> Member {
        Member {
            id: 7,
            attempts: 1,
            user_id: "u".into(),
            target: None,
            taken_over: true,
            prior,
            located: None,
        }
    }

    /// The outcome and ledger entry a step records for a member taken over (or whose write's
    /// answer was lost), from its state before and a fresh read now.
    fn decided(
        r: &ParsedRequest,
        prior: Option<Snapshot>,
        now: &Snapshot,
    ) -> (Vec<(i64, Outcome)>, usize) {
        let mut step = Step::default();
        step.decide(r, taken_over(prior), Some(now), true);
        (step.outcomes, step.writes.len())
    }

    /// A usage location an earlier try set (its license write then failed, so the ledger has
    /// it with licenses unchanged) stays in the entry a later try's write records, though this
    /// try sets none: the member has one now.
    #[test]
    fn a_usage_location_an_earlier_try_set_stays_in_the_ledger() {
        let assign = req(json!({"kind": "assign", "groups": [G],
            "add_licenses": [{"sku_id": E3}], "usage_location": "SE"}));
        let now = snap(Some("SE"), &[], &[]);
        let set = Some(LocationChange::given("SE"));
        let mut step = Step::default();
        let member = Member {
            taken_over: false,
            located: set.clone(),
            ..taken_over(None)
        };
        step.decide(&assign, member, Some(&now), true);
        let [w] = &step.writes[..] else {
            panic!("{:?}", step.outcomes);
        };
        assert_eq!(w.set_location, None, "the member has a location now");
        assert_eq!(w.location_set(), set);
        // A member this job set none for has none in its entry.
        let mut step = Step::default();
        step.decide(&assign, taken_over(None), Some(&now), true);
        assert_eq!(step.writes[0].location_set(), None);
    }

    /// A write made without a recorded answer, told made by a fresh read: the ledger says the
    /// job set the member's usage location only when the member has the location that write
    /// called for — not one an administrator set meanwhile.
    #[test]
    fn a_location_is_the_jobs_only_if_it_is_the_one_it_set() {
        let assign = req(json!({"kind": "assign", "groups": [G],
            "add_licenses": [{"sku_id": E3}], "usage_location": "SE"}));
        let prior = snap(None, &[], &[]);
        let location_of = |now: &Snapshot| {
            let (outcomes, writes) = decided(&assign, Some(prior.clone()), now);
            assert_eq!(writes, 0);
            let Some((_, Outcome::Changed { change })) = outcomes.first() else {
                panic!("{outcomes:?}");
            };
            serde_json::from_str::<Change>(change)
                .unwrap()
                .usage_location
        };
        assert_eq!(
            location_of(&snap(Some("SE"), &[E3], &[])),
            Some(LocationChange::given("SE"))
        );
        assert_eq!(location_of(&snap(Some("US"), &[E3], &[])), None);
    }

    #[test]
    fn a_member_with_no_tries_left_is_read_never_written_again() {
        let assign = req(json!({"kind": "assign", "groups": [G],
            "add_licenses": [{"sku_id": E3}]}));
        let before = snap(Some("SE"), &[], &[]);
        let decide = |max_attempts| {
            let mut step = Step {
                max_attempts,
                ..Step::default()
            };
            step.decide(
                &assign,
                taken_over(Some(before.clone())),
                Some(&before),
                true,
            );
            step
        };
        // Its last try's write had no known fate; a fresh read shows it not made.
        let step = decide(1);
        assert_eq!(step.writes.len(), 0, "written again with no tries left");
        let [(7, Outcome::Failed { code, detail })] = &step.outcomes[..] else {
            panic!("{:?}", step.outcomes);
        };
        assert_eq!(code, "directory_unavailable");
        assert!(
            detail.contains("a fresh read shows the change not made"),
            "{detail}"
        );
        // With tries left it is written.
        assert_eq!(decide(2).writes.len(), 1);
    }

    #[test]
    fn a_write_an_earlier_attempt_made_is_succeeded_with_its_change() {
        let replace = req(json!({"kind": "replace", "groups": [G],
            "add_licenses": [{"sku_id": E3}], "remove_licenses": [E5]}));
        let before = snap(Some("SE"), &[E5], &[]);
        let after = snap(Some("SE"), &[E3], &[]);
        let (outcomes, writes) = decided(&replace, Some(before.clone()), &after);
        assert_eq!(writes, 0);
        let [
            (7, Outcome::Changed { change }),
            (7, Outcome::Succeeded { note, .. }),
        ] = &outcomes[..]
        else {
            panic!("{outcomes:?}");
        };
        let change: Change = serde_json::from_str(change).unwrap();
        assert_eq!(change.before, before.direct_licenses());
        assert_eq!(change.after, after.direct_licenses());
        assert_eq!(change.verified, Some(true));
        assert_eq!(note.as_deref(), Some(MADE_UNANSWERED));
    }

    #[test]
    fn a_temporary_assign_made_by_an_earlier_attempt_comes_due() {
        let temporary = req(json!({"kind": "assign", "groups": [G],
            "add_licenses": [{"sku_id": E3}], "expires_in": {"value": 1, "unit": "days"}}));
        let due = Utc::now() + chrono::Duration::days(1);
        let mut step = Step {
            due_at: Some(due),
            ..Step::default()
        };
        let before = snap(Some("SE"), &[], &[]);
        let after = snap(Some("SE"), &[E3], &[]);
        step.decide(&temporary, taken_over(Some(before)), Some(&after), true);
        assert!(
            matches!(
                &step.outcomes[..],
                [_, (7, Outcome::Succeeded { due_at: Some(d), .. })] if *d == due
            ),
            "{:?}",
            step.outcomes
        );
    }

    #[test]
    fn a_member_already_done_before_the_attempt_stays_skipped() {
        let assign =
            req(json!({"kind": "assign", "groups": [G], "add_licenses": [{"sku_id": E3}]}));
        let held = snap(Some("SE"), &[E3], &[]);
        // Its state before already held the licenses: no write was called for.
        let (outcomes, _) = decided(&assign, Some(held.clone()), &held);
        assert!(
            matches!(&outcomes[..], [(7, Outcome::Skipped { .. })]),
            "{outcomes:?}"
        );
        // No state before known (a rerun): skipped as found.
        let (outcomes, _) = decided(&assign, None, &held);
        assert!(
            matches!(&outcomes[..], [(7, Outcome::Skipped { .. })]),
            "{outcomes:?}"
        );
    }

    #[test]
    fn a_write_not_made_is_decided_again_from_the_fresh_read() {
        let assign =
            req(json!({"kind": "assign", "groups": [G], "add_licenses": [{"sku_id": E3}]}));
        let before = snap(Some("SE"), &[], &[]);
        let (outcomes, writes) = decided(&assign, Some(before.clone()), &before);
        assert!(outcomes.is_empty(), "{outcomes:?}");
        assert_eq!(writes, 1);
        // Another change since (the member now holds something else entirely, not what the
        // write would leave): decided from what it holds now, not called succeeded.
        let other = snap(Some("SE"), &[E5], &[]);
        let (outcomes, writes) = decided(&assign, Some(before), &other);
        assert!(outcomes.is_empty(), "{outcomes:?}");
        assert_eq!(writes, 1);
    }

    #[test]
    fn only_a_failure_that_may_have_been_carried_out_reads_first() {
        let throttled = DirectoryError::Transient {
            code: ItemCode::Throttled,
            detail: "429".into(),
            retry_after: None,
            refused: true,
        };
        let lost = DirectoryError::unavailable("connection closed before the answer");
        let read_first = |e: &DirectoryError| match item_outcome(e, 0, 5) {
            Some(Outcome::Retry { read_first, .. }) => read_first,
            other => panic!("{other:?}"),
        };
        assert!(!read_first(&throttled));
        assert!(read_first(&lost));
    }
}
