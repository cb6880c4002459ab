//! Previews: a job that reads its groups like a real one and decides every member from the
//! directory's state — with the same decision code as a real run ([`super::plan::decide`]) —
//! but writes nothing. Each member gets a predicted outcome, and the job a summary: seat math
//! per SKU (units counted in member order against the free units the directory reports), usage
//! locations, licenses held only through a group, and the licenses the members hold. A write
//! that would leave two mutually exclusive service plans enabled ([`CONFLICTING_PLANS`]) is
//! predicted to fail as the directory refuses it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::plan::{self, Decision, Snapshot};
use super::{GroupId, JobFacts, JobSpec, ParsedRequest};
use crate::db::Db;
use crate::directory::{AssignedLicense, DirectoryClient, DirectoryError, ItemCode, Sku};
use crate::domain::JobStatus;
use crate::entities::{job, job_item, job_run};
use crate::error::{StoreError, StoreResult};

/// A member's predicted outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PredictedOutcome {
    WouldSucceed,
    WouldSkip,
    WouldFail,
}

/// What a preview predicts for one member: the outcome, the item error code a failure (or a
/// deliberate skip) would carry, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    pub outcome: PredictedOutcome,
    pub code: Option<String>,
    pub detail: Option<String>,
}

/// Seat math for one SKU the job adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SkuNeed {
    pub sku_id: Uuid,
    pub sku_part_number: Option<String>,
    /// Members that hold the SKU in no way (neither directly nor through a group): each takes
    /// a unit.
    pub needed: i64,
    /// Units free when the preview read the subscribed SKUs (enabled − consumed).
    pub free: i64,
    /// `needed − free` when positive, else 0.
    pub shortfall: i64,
    /// Members predicted to fail with `count_violation` because no unit of this SKU would be
    /// left for them (a member short of two SKUs counts for both).
    #[serde(default)]
    pub short_members: i64,
}

/// Members without a usage location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageLocationNeed {
    /// Members without a usage location, counted only when the job gives licenses (a remove
    /// needs none: 0).
    pub missing: i64,
    /// Whether the request's `usage_location` is set on them before assigning.
    pub fixed_by_request: bool,
}

/// How many members hold a SKU, directly and through a group (a member holding it both ways
/// counts in both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeldLicense {
    pub sku_id: Uuid,
    pub sku_part_number: Option<String>,
    pub direct: i64,
    pub inherited: i64,
}

/// Predicted failures with one item error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeCount {
    pub code: String,
    pub count: i64,
}

/// The summary of a preview (`preview` on the job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreviewSummary {
    pub members: i64,
    pub would_succeed: i64,
    pub would_skip: i64,
    pub would_fail: i64,
    /// Per SKU the job adds: needed units, free units, shortfall.
    pub skus: Vec<SkuNeed>,
    pub usage_location: UsageLocationNeed,
    /// Members holding one of the job's licenses (for `replace_all`: any license) only through
    /// a group.
    pub inherited_only: i64,
    /// Members already in the desired state (they are skipped).
    pub already_done: i64,
    /// Members a replace leaves alone because they hold none of the licenses to replace (they
    /// are skipped too, but are not "done": the replace is not for them). 0 for other kinds and
    /// for `replace_all`.
    #[serde(default)]
    pub not_affected: i64,
    /// Predicted failures by item error code, most first.
    pub failures: Vec<CodeCount>,
    /// The licenses the members hold, per SKU.
    pub held: Vec<HeldLicense>,
    pub previewed_at: DateTime<Utc>,
    /// When the preview was launched as a real run.
    pub launched_at: Option<DateTime<Utc>>,
    /// The launch read the groups again: the preview was older than
    /// `jobs.preview_max_age_secs`.
    pub expanded_again: bool,
}

/// Service plans that cannot be enabled for one user together: the directory refuses an
/// assignment that would leave both enabled ("License assignment failed because service plans
/// … are mutually exclusive"). Graph does not publish these pairs; they are the Exchange Online
/// mailbox plans (Kiosk, Plan 1, Plan 2), which Microsoft's "Identify and resolve license
/// assignment problems for a group in Microsoft Entra ID" gives as the example of conflicting
/// service plans (Office 365 E1 next to E3). A pair missing here is not predicted, only reported
/// by the real run.
pub const CONFLICTING_PLANS: &[(&str, &str)] = &[
    ("EXCHANGE_S_STANDARD", "EXCHANGE_S_ENTERPRISE"),
    ("EXCHANGE_S_DESKLESS", "EXCHANGE_S_ENTERPRISE"),
    ("EXCHANGE_S_DESKLESS", "EXCHANGE_S_STANDARD"),
];

/// Per SKU, how many members hold it directly and how many through a group (a member holding
/// it both ways counts in both): the preview's `held` and the New job form's Remove and Replace
/// pickers ([`held_by_members`]) count alike.
#[derive(Debug, Default)]
pub struct HeldTally {
    held: BTreeMap<Uuid, (i64, i64)>,
}

impl HeldTally {
    /// Count one member; returns the SKUs it holds directly and those it holds through a group.
    pub fn add(&mut self, snap: &Snapshot) -> (BTreeSet<Uuid>, BTreeSet<Uuid>) {
        let mut direct = BTreeSet::new();
        let mut inherited = BTreeSet::new();
        for l in &snap.licenses {
            if l.assigned_by_group.is_none() {
                direct.insert(l.sku_id);
            } else {
                inherited.insert(l.sku_id);
            }
        }
        for sku in &direct {
            self.held.entry(*sku).or_default().0 += 1;
        }
        for sku in &inherited {
            self.held.entry(*sku).or_default().1 += 1;
        }
        (direct, inherited)
    }

    /// The counts per SKU (in SKU id order), named from `names` (sku_id → part number).
    pub fn list(&self, names: &HashMap<Uuid, String>) -> Vec<HeldLicense> {
        self.held
            .iter()
            .map(|(sku_id, (direct, inherited))| HeldLicense {
                sku_id: *sku_id,
                sku_part_number: names.get(sku_id).cloned(),
                direct: *direct,
                inherited: *inherited,
            })
            .collect()
    }
}

/// The licenses held by the members of some groups, counted from at most a number of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeldSample {
    /// Per SKU a member holds: how many hold it directly and through a group.
    pub data: Vec<HeldLicense>,
    /// Members read (each counted once, however many of the groups it is in).
    pub members_read: i64,
    /// True when the groups have more members than were read: the counts are of the first
    /// `members_read` members only (groups in the order given, members in the directory's
    /// order).
    pub sampled: bool,
}

/// Read the members of `groups` the way a job's expansion reads them (the same member pages,
/// the same snapshot of each member) — stopping after `max_members` distinct members — and
/// count the licenses they hold. Nothing is stored.
pub async fn held_by_members(
    client: &DirectoryClient,
    groups: &[GroupId],
    transitive: bool,
    max_members: usize,
) -> Result<HeldSample, DirectoryError> {
    let names: HashMap<Uuid, String> = client
        .subscribed_skus()
        .await?
        .into_iter()
        .map(|s| (s.sku_id, s.sku_part_number))
        .collect();
    let mut tally = HeldTally::default();
    let mut seen = HashSet::new();
    let mut sampled = false;
    'groups: for group in groups {
        let mut pages = client.member_pages(group, transitive, None);
        while let Some(page) = pages.next().await {
            for user in page?.users {
                if seen.contains(&user.id) {
                    continue;
                }
                if seen.len() >= max_members {
                    sampled = true;
                    break 'groups;
                }
                tally.add(&Snapshot::of(&user));
                seen.insert(user.id);
            }
        }
    }
    Ok(HeldSample {
        data: tally.list(&names),
        members_read: seen.len() as i64,
        sampled,
    })
}

/// Decides members in member order and counts what the summary says.
pub struct Predictor<'a> {
    req: &'a ParsedRequest,
    free: HashMap<Uuid, i64>,
    names: HashMap<Uuid, String>,
    /// Each SKU's service plans: (id, name).
    plans: HashMap<Uuid, Vec<(Uuid, String)>>,
    start_free: HashMap<Uuid, i64>,
    needed: HashMap<Uuid, i64>,
    short_members: HashMap<Uuid, i64>,
    held: HeldTally,
    failures: BTreeMap<String, i64>,
    members: i64,
    succeed: i64,
    skip: i64,
    fail: i64,
    no_location: i64,
    inherited_only: i64,
    not_affected: i64,
}

impl<'a> Predictor<'a> {
    /// A predictor for `req` with the tenant's subscribed SKUs as read now.
    pub fn new(req: &'a ParsedRequest, skus: &[Sku]) -> Predictor<'a> {
        let free: HashMap<Uuid, i64> = skus
            .iter()
            .map(|s| (s.sku_id, (s.enabled - s.consumed).max(0)))
            .collect();
        Predictor {
            req,
            start_free: free.clone(),
            free,
            names: skus
                .iter()
                .map(|s| (s.sku_id, s.sku_part_number.clone()))
                .collect(),
            plans: skus
                .iter()
                .map(|s| {
                    let plans = s
                        .service_plans
                        .iter()
                        .filter_map(|p| Some((p.service_plan_id, p.service_plan_name.clone()?)))
                        .collect();
                    (s.sku_id, plans)
                })
                .collect(),
            needed: HashMap::new(),
            short_members: HashMap::new(),
            held: HeldTally::default(),
            failures: BTreeMap::new(),
            members: 0,
            succeed: 0,
            skip: 0,
            fail: 0,
            no_location: 0,
            inherited_only: 0,
            not_affected: 0,
        }
    }

    fn holds(snap: &Snapshot, sku: Uuid) -> bool {
        snap.licenses.iter().any(|l| l.sku_id == sku)
    }

    /// The first pair of [`CONFLICTING_PLANS`] that would both be enabled for the member after
    /// the write: (plan, its SKU) twice. A license held through a group has every plan
    /// enabled; one held directly, all but its disabled plans; a removed license counts no more
    /// where it was held directly.
    fn conflict_after(
        &self,
        snap: &Snapshot,
        add: &[AssignedLicense],
        remove: &[Uuid],
    ) -> Option<((String, Uuid), (String, Uuid))> {
        // SKU → (disabled plans of the direct assignment, if any; held through a group).
        let mut after: BTreeMap<Uuid, (Option<&[Uuid]>, bool)> = BTreeMap::new();
        for l in &snap.licenses {
            let e = after.entry(l.sku_id).or_default();
            match l.assigned_by_group {
                None => e.0 = Some(&l.disabled_plans),
                Some(_) => e.1 = true,
            }
        }
        for sku in remove {
            if let Some(e) = after.get_mut(sku) {
                e.0 = None;
            }
        }
        for a in add {
            after.entry(a.sku_id).or_default().0 = Some(&a.disabled_plans);
        }
        let mut enabled: Vec<(&str, Uuid)> = Vec::new();
        for (sku, (direct, by_group)) in &after {
            let disabled: &[Uuid] = match (direct, by_group) {
                (_, true) => &[],
                (Some(d), false) => d,
                (None, false) => continue,
            };
            for (id, name) in self.plans.get(sku).into_iter().flatten() {
                if !disabled.contains(id) {
                    enabled.push((name.as_str(), *sku));
                }
            }
        }
        CONFLICTING_PLANS.iter().find_map(|(a, b)| {
            let x = enabled.iter().find(|(n, _)| n == a)?;
            let y = enabled.iter().find(|(n, _)| n == b)?;
            Some(((a.to_string(), x.1), (b.to_string(), y.1)))
        })
    }

    /// [`Self::predict`] as the JSON stored in the item's `prediction` column.
    pub fn predict_value(&mut self, snap: &Snapshot) -> StoreResult<serde_json::Value> {
        serde_json::to_value(self.predict(snap)).map_err(StoreError::internal)
    }

    /// The prediction for the next member (in member order) whose state is `snap`.
    pub fn predict(&mut self, snap: &Snapshot) -> Prediction {
        self.members += 1;
        // A replace (not of everything) leaves a member holding none of the licenses to
        // replace alone: it needs no unit and no usage location.
        let untouched = match &self.req.spec {
            JobSpec::Replace {
                remove,
                replace_all: false,
                ..
            } => !remove.iter().any(|s| Self::holds(snap, s.uuid())),
            _ => false,
        };
        // A usage location matters only to a member given a license.
        if snap.usage_location.is_none() && !self.req.add_licenses().is_empty() && !untouched {
            self.no_location += 1;
        }
        let (direct, inherited) = self.held.add(snap);
        let replace_all = matches!(
            self.req.spec,
            JobSpec::Replace {
                replace_all: true,
                ..
            }
        );
        let relevant = |sku: &Uuid| {
            replace_all
                || self
                    .req
                    .add_licenses()
                    .iter()
                    .any(|l| l.sku_id.uuid() == *sku)
                || self.req.remove_licenses().iter().any(|s| s.uuid() == *sku)
        };
        if inherited.iter().any(|s| relevant(s) && !direct.contains(s)) {
            self.inherited_only += 1;
        }
        for add in self.req.add_licenses().iter().filter(|_| !untouched) {
            if !Self::holds(snap, add.sku_id.uuid()) {
                *self.needed.entry(add.sku_id.uuid()).or_default() += 1;
            }
        }
        let prediction = match plan::decide(self.req, Some(snap), true) {
            Decision::Skip(note) if untouched => {
                self.not_affected += 1;
                Prediction {
                    outcome: PredictedOutcome::WouldSkip,
                    code: None,
                    detail: Some(note),
                }
            }
            Decision::Skip(note) => Prediction {
                outcome: PredictedOutcome::WouldSkip,
                code: None,
                detail: Some(note),
            },
            Decision::Leave(code, detail) => Prediction {
                outcome: PredictedOutcome::WouldSkip,
                code: Some(code.to_owned()),
                detail: Some(detail),
            },
            Decision::Fail(code, detail) => Prediction {
                outcome: PredictedOutcome::WouldFail,
                code: Some(code.as_str().to_owned()),
                detail: Some(detail),
            },
            Decision::Read => Prediction {
                outcome: PredictedOutcome::WouldFail,
                code: Some(ItemCode::Other.as_str().to_owned()),
                detail: Some("the member's state could not be decided".into()),
            },
            Decision::Write {
                add, remove, note, ..
            } => {
                if let Some(((a, sku_a), (b, sku_b))) = self.conflict_after(snap, &add, &remove) {
                    let name =
                        |s: Uuid| self.names.get(&s).cloned().unwrap_or_else(|| s.to_string());
                    let prediction = Prediction {
                        outcome: PredictedOutcome::WouldFail,
                        code: Some(ItemCode::MutuallyExclusiveViolation.as_str().to_owned()),
                        detail: Some(format!(
                            "service plans {a} ({}) and {b} ({}) cannot both be enabled for the member",
                            name(sku_a),
                            name(sku_b)
                        )),
                    };
                    return self.count(prediction);
                }
                // A unit is taken for a SKU the member does not hold at all, and given back for
                // one it holds no more afterwards; the call is all or nothing for the member.
                let takes: Vec<Uuid> = add
                    .iter()
                    .map(|a| a.sku_id)
                    .filter(|s| !Self::holds(snap, *s))
                    .collect();
                let short_ids: Vec<Uuid> = takes
                    .iter()
                    .copied()
                    .filter(|s| self.free.get(s).copied().unwrap_or(0) <= 0)
                    .collect();
                for s in &short_ids {
                    *self.short_members.entry(*s).or_default() += 1;
                }
                let short: Vec<String> = short_ids
                    .iter()
                    .map(|s| self.names.get(s).cloned().unwrap_or_else(|| s.to_string()))
                    .collect();
                if short.is_empty() {
                    for s in &takes {
                        *self.free.entry(*s).or_default() -= 1;
                    }
                    for s in &remove {
                        if snap.inherited_from(*s).is_none()
                            && let Some(n) = self.free.get_mut(s)
                        {
                            *n += 1;
                        }
                    }
                    Prediction {
                        outcome: PredictedOutcome::WouldSucceed,
                        code: None,
                        detail: note,
                    }
                } else {
                    Prediction {
                        outcome: PredictedOutcome::WouldFail,
                        code: Some(ItemCode::CountViolation.as_str().to_owned()),
                        detail: Some(format!(
                            "no free units of {} would be left for this member",
                            short.join(", ")
                        )),
                    }
                }
            }
        };
        self.count(prediction)
    }

    /// Count a member's prediction in the summary's figures.
    fn count(&mut self, prediction: Prediction) -> Prediction {
        match prediction.outcome {
            PredictedOutcome::WouldSucceed => self.succeed += 1,
            PredictedOutcome::WouldSkip => self.skip += 1,
            PredictedOutcome::WouldFail => {
                self.fail += 1;
                let code = prediction.code.clone().unwrap_or_else(|| "other".into());
                *self.failures.entry(code).or_default() += 1;
            }
        }
        prediction
    }

    /// The summary of every member predicted so far.
    pub fn summary(self, at: DateTime<Utc>) -> PreviewSummary {
        let skus = self
            .req
            .add_licenses()
            .iter()
            .map(|l| l.sku_id.uuid())
            .map(|sku_id| {
                let needed = self.needed.get(&sku_id).copied().unwrap_or(0);
                let free = self.start_free.get(&sku_id).copied().unwrap_or(0);
                SkuNeed {
                    sku_id,
                    sku_part_number: self.names.get(&sku_id).cloned(),
                    needed,
                    free,
                    shortfall: (needed - free).max(0),
                    short_members: self.short_members.get(&sku_id).copied().unwrap_or(0),
                }
            })
            .collect();
        let mut failures: Vec<CodeCount> = self
            .failures
            .into_iter()
            .map(|(code, count)| CodeCount { code, count })
            .collect();
        failures.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
        let held = self.held.list(&self.names);
        PreviewSummary {
            members: self.members,
            would_succeed: self.succeed,
            would_skip: self.skip,
            would_fail: self.fail,
            skus,
            usage_location: UsageLocationNeed {
                missing: self.no_location,
                fixed_by_request: self.req.usage_location().is_some()
                    && !self.req.add_licenses().is_empty(),
            },
            inherited_only: self.inherited_only,
            already_done: self.skip - self.not_affected,
            not_affected: self.not_affected,
            failures,
            held,
            previewed_at: at,
            launched_at: None,
            expanded_again: false,
        }
    }
}

/// Whether `p` — the predictor that predicted each member as the expansion stored it — covers
/// the job's stored members: as many as the job counts, and none stored without a prediction
/// (the expansion ran from the first page to the last in one step). When it does not (the
/// expansion was resumed after a crash or a pause, or another step stored members too), every
/// member is predicted again with [`predict_stored`].
pub async fn covers(db: &Db, job_id: Uuid, p: &Predictor<'_>) -> StoreResult<bool> {
    let Some(total) = job::Entity::find_by_id(job_id)
        .select_only()
        .column(job::Column::Total)
        .into_tuple::<i64>()
        .one(db)
        .await?
    else {
        return Ok(false);
    };
    if total != p.members {
        return Ok(false);
    }
    let unpredicted = job_item::Entity::find()
        .select_only()
        .column(job_item::Column::Id)
        .filter(job_item::Column::JobId.eq(job_id))
        .filter(job_item::Column::Prediction.is_null())
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(unpredicted.is_none())
}

/// Members predicted per page of [`predict_stored`] (their ids are bound in one statement per
/// distinct prediction: well below SQLite's 32,766 parameters).
const PREDICT_PAGE: u64 = 5000;

/// Predict every stored member of the job in member order from the snapshot its expansion
/// read, against the free units in `skus`, and store each prediction.
pub async fn predict_stored<'a>(
    db: &Db,
    job: &job::Model,
    req: &'a ParsedRequest,
    skus: &[Sku],
) -> StoreResult<Predictor<'a>> {
    let mut predictor = Predictor::new(req, skus);
    let mut after = 0i64;
    loop {
        let page: Vec<(i64, Option<serde_json::Value>)> = job_item::Entity::find()
            .select_only()
            .column(job_item::Column::Id)
            .column(job_item::Column::Licenses)
            .filter(job_item::Column::JobId.eq(job.id))
            .filter(job_item::Column::Id.gt(after))
            .order_by_asc(job_item::Column::Id)
            .limit(PREDICT_PAGE)
            .into_tuple()
            .all(db)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        // Most members share their prediction (the same outcome, code and detail): one
        // statement per distinct prediction in the page, not one per member.
        let mut same: BTreeMap<String, (serde_json::Value, Vec<i64>)> = BTreeMap::new();
        for (id, licenses) in page {
            // Every member's snapshot was read by this preview's expansion.
            let snap: Snapshot = licenses
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let v = predictor.predict_value(&snap)?;
            same.entry(v.to_string())
                .or_insert_with(|| (v, Vec::new()))
                .1
                .push(id);
        }
        let txn = crate::db::begin(db).await?;
        for (v, ids) in same.into_values() {
            job_item::Entity::update_many()
                .col_expr(job_item::Column::Prediction, Expr::value(v))
                .filter(job_item::Column::Id.is_in(ids))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
    }
    Ok(predictor)
}

/// End an expanded preview job `previewed` with the summary of `predictor`, which has predicted
/// every stored member (see [`covers`], [`predict_stored`]). Returns the summary, or `None`
/// when the job is no longer running (cancelled).
pub async fn conclude(
    db: &Db,
    job: &job::Model,
    predictor: Predictor<'_>,
) -> StoreResult<Option<PreviewSummary>> {
    let now = Utc::now();
    let summary = predictor.summary(now);
    let mut facts = JobFacts::of(job);
    if let Some(fresh) = super::lease::load(db, job.tenant_id, job.id).await? {
        facts = JobFacts::of(&fresh);
    }
    facts.preview = Some(summary.clone());
    let result = serde_json::to_value(&facts).map_err(StoreError::internal)?;
    let txn = crate::db::begin(db).await?;
    let done = super::state::transition(job.id, &[JobStatus::Running], JobStatus::Previewed)?
        .col_expr(job::Column::Result, Expr::value(result))
        .col_expr(job::Column::FinishedAt, Expr::value(now))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .col_expr(job::Column::LastProgressAt, Expr::value(now))
        .exec(&txn)
        .await?
        .rows_affected;
    if done == 1 {
        job_run::Entity::update_many()
            .col_expr(job_run::Column::Status, Expr::value(JobStatus::Previewed))
            .col_expr(job_run::Column::Total, Expr::value(summary.members))
            // The preview's run is over (its launch opens it again).
            .col_expr(job_run::Column::FinishedAt, Expr::value(now))
            .filter(job_run::Column::JobId.eq(job.id))
            .filter(job_run::Column::RunNo.eq(job.runs))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok((done == 1).then_some(summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::LicenseAssignmentState;
    use serde_json::json;

    const E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
    use crate::jobs::plan::tests::G;

    fn sku(id: &str, enabled: i64, consumed: i64) -> Sku {
        Sku {
            sku_id: id.parse().unwrap(),
            sku_part_number: "SPE_E5".into(),
            enabled,
            consumed,
            available: enabled - consumed,
            service_plans: Vec::new(),
        }
    }

    fn member(loc: Option<&str>, direct: bool, inherited: bool) -> Snapshot {
        let held = |yes: bool| if yes { vec![E5] } else { vec![] };
        crate::jobs::plan::tests::snap(loc, &held(direct), &held(inherited))
    }

    /// Two SKUs added, each running short for different members: the summary counts, per SKU,
    /// the members who would fail for want of its units (the prompt names each).
    #[test]
    fn members_short_are_counted_per_sku() {
        const EP: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
        let req: ParsedRequest = serde_json::from_value::<super::super::JobRequest>(json!({
            "kind": "assign", "groups": [G], "usage_location": "SE",
            "add_licenses": [{"sku_id": E5}, {"sku_id": EP}], "preview": true
        }))
        .unwrap()
        .parse()
        .unwrap();
        let skus = [
            sku(E5, 10, 8),
            Sku {
                sku_part_number: "ENTERPRISEPACK".into(),
                ..sku(EP, 5, 4)
            },
        ];
        let holding = |ids: &[&str]| Snapshot {
            usage_location: Some("SE".into()),
            licenses: ids
                .iter()
                .map(|id| LicenseAssignmentState {
                    sku_id: id.parse().unwrap(),
                    assigned_by_group: None,
                    disabled_plans: vec![],
                })
                .collect(),
        };
        let mut p = Predictor::new(&req, &skus);
        let codes: Vec<Option<String>> = [
            holding(&[]),   // takes one of each: 1 E5 and 0 EP left
            holding(&[E5]), // needs EP only: none left
            holding(&[]),   // needs both, EP is short
            holding(&[EP]), // needs E5 only: takes the last
            holding(&[]),   // both short
        ]
        .iter()
        .map(|m| p.predict(m).code)
        .collect();
        let cv = Some("count_violation".to_owned());
        assert_eq!(codes, vec![None, cv.clone(), cv.clone(), None, cv]);
        let s = p.summary(Utc::now());
        let by = |part: &str| {
            s.skus
                .iter()
                .find(|k| k.sku_part_number.as_deref() == Some(part))
                .unwrap()
        };
        let (e5, ep) = (by("SPE_E5"), by("ENTERPRISEPACK"));
        assert_eq!(
            (e5.needed, e5.free, e5.shortfall, e5.short_members),
            (4, 2, 2, 1)
        );
        assert_eq!(
            (ep.needed, ep.free, ep.shortfall, ep.short_members),
            (4, 1, 3, 3)
        );
        assert_eq!(s.would_fail, 3);
    }

    #[test]
    fn units_are_counted_in_member_order() {
        let req: ParsedRequest = serde_json::from_value::<super::super::JobRequest>(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E5}],"preview":true}),
        )
        .unwrap()
        .parse()
        .unwrap();
        let skus = [sku(E5, 10, 8)];
        let mut p = Predictor::new(&req, &skus);
        let outcomes: Vec<(PredictedOutcome, Option<String>)> = [
            member(Some("SE"), true, false), // already holds it
            member(None, false, false),      // no usage location
            member(Some("SE"), false, true), // inherits it: takes no unit
            member(Some("SE"), false, false),
            member(Some("SE"), false, false),
            member(Some("SE"), false, false), // none left
        ]
        .iter()
        .map(|m| {
            let r = p.predict(m);
            (r.outcome, r.code)
        })
        .collect();
        use PredictedOutcome::*;
        assert_eq!(
            outcomes,
            vec![
                (WouldSkip, None),
                (WouldFail, Some("usage_location_missing".into())),
                (WouldSucceed, None),
                (WouldSucceed, None),
                (WouldSucceed, None),
                (WouldFail, Some("count_violation".into())),
            ]
        );
        let s = p.summary(Utc::now());
        assert_eq!(s.members, 6);
        assert_eq!(
            (s.skus[0].needed, s.skus[0].free, s.skus[0].shortfall),
            (4, 2, 2)
        );
        assert_eq!(s.usage_location.missing, 1);
        assert!(!s.usage_location.fixed_by_request);
        assert_eq!(s.inherited_only, 1);
        assert_eq!(s.already_done, 1);
        assert_eq!(s.held[0].direct, 1);
        assert_eq!(s.held[0].inherited, 1);
        assert_eq!(s.failures.len(), 2);
    }

    /// Exchange Online Plan 1 next to the Plan 2 mailbox of E3: the write is predicted to fail,
    /// unless the Plan 2 mailbox is disabled in the assignment, the Plan 1 license is removed by
    /// the same call (a replace), or the member only gets E3 without holding Plan 1.
    #[test]
    fn mutually_exclusive_plans_are_predicted() {
        const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
        const EXO1: &str = "4b9405b0-7788-4568-add1-99614e613b69";
        let mailbox2: Uuid = "efb87545-963c-4e0d-99df-69c6916d9eb0".parse().unwrap();
        let plan = |id: Uuid, name: &str| crate::directory::ServicePlan {
            service_plan_id: id,
            service_plan_name: Some(name.into()),
        };
        let skus = [
            Sku {
                sku_part_number: "ENTERPRISEPACK".into(),
                service_plans: vec![
                    plan(mailbox2, "EXCHANGE_S_ENTERPRISE"),
                    plan(Uuid::new_v4(), "SHAREPOINTENTERPRISE"),
                ],
                ..sku(E3, 100, 0)
            },
            Sku {
                sku_part_number: "EXCHANGESTANDARD".into(),
                service_plans: vec![plan(Uuid::new_v4(), "EXCHANGE_S_STANDARD")],
                ..sku(EXO1, 100, 0)
            },
        ];
        let holds_exo1 = || Snapshot {
            usage_location: Some("SE".into()),
            licenses: vec![LicenseAssignmentState {
                sku_id: EXO1.parse().unwrap(),
                assigned_by_group: None,
                disabled_plans: vec![],
            }],
        };
        let predict = |body: serde_json::Value, snap: &Snapshot| {
            let req: ParsedRequest = serde_json::from_value::<super::super::JobRequest>(body)
                .unwrap()
                .parse()
                .unwrap();
            let mut p = Predictor::new(&req, &skus);
            let r = p.predict(snap);
            let s = p.summary(Utc::now());
            (r.outcome, r.code, s.skus.first().map(|k| k.needed))
        };
        use PredictedOutcome::*;
        let (outcome, code, _) = predict(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E3}],"preview":true}),
            &holds_exo1(),
        );
        assert_eq!(
            (outcome, code.as_deref()),
            (WouldFail, Some("mutually_exclusive_violation"))
        );
        let (outcome, _, _) = predict(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E3,"disabled_plans":[mailbox2]}],"preview":true}),
            &holds_exo1(),
        );
        assert_eq!(outcome, WouldSucceed, "the Plan 2 mailbox is disabled");
        let (outcome, _, _) = predict(
            json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":E3}],"remove_licenses":[EXO1],"preview":true}),
            &holds_exo1(),
        );
        assert_eq!(outcome, WouldSucceed, "Plan 1 goes in the same call");
        let (outcome, _, _) = predict(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E3}],"preview":true}),
            &Snapshot {
                usage_location: Some("SE".into()),
                licenses: vec![],
            },
        );
        assert_eq!(outcome, WouldSucceed);
        // Plan 1 held through a group has every plan enabled, whatever is disabled directly.
        let mut by_group = holds_exo1();
        by_group.licenses[0].assigned_by_group = Some(G.into());
        let (outcome, code, _) = predict(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E3}],"preview":true}),
            &by_group,
        );
        assert_eq!(
            (outcome, code.as_deref()),
            (WouldFail, Some("mutually_exclusive_violation"))
        );
    }

    /// A replace's members holding none of the licenses to replace are "not affected", not
    /// "already done"; a remove counts no missing usage location (it gives nothing).
    #[test]
    fn replace_and_remove_summaries_say_what_applies() {
        const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
        let skus = [
            sku(E5, 10, 0),
            Sku {
                sku_part_number: "ENTERPRISEPACK".into(),
                ..sku(E3, 10, 0)
            },
        ];
        let run = |body: serde_json::Value| {
            let req: ParsedRequest = serde_json::from_value::<super::super::JobRequest>(body)
                .unwrap()
                .parse()
                .unwrap();
            let mut p = Predictor::new(&req, &skus);
            // Holds E5 directly; holds nothing and has no usage location.
            p.predict(&member(Some("SE"), true, false));
            p.predict(&member(None, false, false));
            p.summary(Utc::now())
        };
        let s = run(
            json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":E3}],"remove_licenses":[E5],"usage_location":"SE","preview":true}),
        );
        assert_eq!((s.would_succeed, s.would_skip), (1, 1));
        assert_eq!((s.already_done, s.not_affected), (0, 1));
        // The member the replace leaves alone needs no unit and no usage location.
        assert_eq!((s.skus[0].needed, s.skus[0].shortfall), (1, 0));
        assert_eq!(s.usage_location.missing, 0);
        let s = run(json!({"kind":"remove","groups":[G],"remove_licenses":[E5],"preview":true}));
        assert_eq!((s.would_succeed, s.would_skip), (1, 1));
        assert_eq!((s.already_done, s.not_affected), (1, 0));
        assert_eq!(s.usage_location.missing, 0);
        let s = run(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E3}],"preview":true}),
        );
        assert_eq!(s.usage_location.missing, 1);
    }

    #[test]
    fn export_cannot_be_previewed() {
        let e = serde_json::from_value::<super::super::JobRequest>(
            json!({"kind":"export","groups":[G],"export":{"format":"csv"},"preview":true}),
        )
        .unwrap()
        .parse()
        .unwrap_err();
        assert!(
            e.to_string().contains("preview") || format!("{e:?}").contains("preview_not_supported")
        );
    }
}
