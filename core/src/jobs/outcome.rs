//! Recording outcomes: what happened to each member of a chunk, stored with the job's counters in
//! one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait};
use uuid::Uuid;

use super::finish::status;
use super::lease::unleased;
use super::now;
use crate::db::Db;
use crate::directory::{ClientError, DirectoryError, Failure};
use crate::domain::{ItemStatus, JobStatus};
use crate::entities::{job, job_item};
use crate::error::StoreResult;

/// The outcome of one item, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        note: Option<String>,
        due_at: Option<DateTime<Utc>>,
    },
    /// `due_at`: a temporary assign's member that already held the licenses records until
    /// when the job wants them kept (it never comes due itself: it only keeps an earlier
    /// temporary assignment from being removed before then).
    Skipped {
        note: Option<String>,
        due_at: Option<DateTime<Utc>>,
    },
    Failed {
        code: String,
        detail: String,
    },
    /// A transient failure with tries left: pending again, not before `not_before`.
    /// `read_first`: licensor may have changed the member without recording it (a write whose
    /// answer was lost, or a member taken over and not read since): the next try reads it
    /// before deciding (`job_items.taken_over`), never writes from its stored state.
    Retry {
        not_before: DateTime<Utc>,
        code: String,
        detail: String,
        read_first: bool,
    },
    /// Not done on purpose, with the reason's code (`cancelled`, `changed_since`): skipped.
    Left {
        code: String,
        detail: String,
    },
    /// A write not sent because the job stopped running while its chunk was worked, or
    /// another worker process took the tenant's turn to write (the job still running). Decided
    /// when recorded, from the job's status in the same transaction: while the job stays
    /// `cancelled`, the member is skipped as `cancelled`; otherwise (paused, failed, or cancelled
    /// and run again meanwhile) it stays pending and held by nobody, for whichever run does it —
    /// so a rerun that began while the chunk was worked never loses it to the old run.
    NotSent,
    /// The member's current state, read from the directory (for later runs and exports): a
    /// [`super::plan::Snapshot`] as JSON text ([`Outcome::refreshed`]).
    Refreshed {
        licenses: String,
    },
    /// The member's change ledger entry, with its final outcome: a [`super::plan::Change`] as
    /// JSON text ([`Outcome::changed`]).
    Changed {
        change: String,
    },
}

impl Outcome {
    /// [`Outcome::Refreshed`] with `snap`, serialized.
    pub(crate) fn refreshed(snap: &super::plan::Snapshot) -> Option<Outcome> {
        serde_json::to_string(snap)
            .ok()
            .map(|licenses| Outcome::Refreshed { licenses })
    }

    /// [`Outcome::Changed`] with `change`, serialized.
    pub(crate) fn changed(change: &super::plan::Change) -> Option<Outcome> {
        serde_json::to_string(change)
            .ok()
            .map(|change| Outcome::Changed { change })
    }

    /// This outcome with a [`Outcome::Retry`]'s `read_first` set to `read_first`: a retry
    /// after a failed read is read first exactly when the member was to be (a read changes
    /// nothing); a retry after a usage location was set, always. Other outcomes as they are.
    pub(crate) fn read_first(mut self, read_first: bool) -> Outcome {
        if let Outcome::Retry { read_first: r, .. } = &mut self {
            *r = read_first;
        }
        self
    }
}

/// Record the outcomes of a chunk's items and move the job's counters with them, in one
/// transaction. Only items still pending are changed (whoever holds them now), so an outcome
/// recorded twice counts once. A member's fresh state ([`Outcome::Refreshed`]) and change ledger
/// entry ([`Outcome::Changed`]) are written by the same statement as its outcome, so each item
/// row is written once. The same transaction stamps the job's `last_progress_at` (in the
/// counters' statement) and adds the chunk to the job's per-minute activity — the members that
/// reached each outcome here and `throttled`, the 429 answers the chunk's directory calls met
/// (one upsert). Returns how many items reached a final status.
///
/// Outcomes that hand a member back rather than settle it ([`Outcome::Retry`],
/// [`Outcome::NotSent`]) change only members `holder` (the recording step's lease owner) still
/// holds: a step whose process was taken for dead must not free, or skip, members a live step
/// took over and is writing now.
pub async fn record(
    db: &Db,
    job_id: Uuid,
    holder: &str,
    outcomes: Vec<(i64, Outcome)>,
    throttled: u64,
) -> StoreResult<u64> {
    record_and_release(db, job_id, holder, outcomes, throttled, false).await
}

/// [`record`], and with `release` also let go of `holder`'s members of the job still pending
/// after it ([`super::lease::release`]) in the same transaction: a chunk whose writes wait for
/// the directory's budget hands the rest back with its outcomes, in one hold of SQLite's write
/// lock instead of two (`licensor-bench --scenario msp`: 500 jobs' first chunks did this at
/// once).
pub async fn record_and_release(
    db: &Db,
    job_id: Uuid,
    holder: &str,
    outcomes: Vec<(i64, Outcome)>,
    throttled: u64,
    release: bool,
) -> StoreResult<u64> {
    use std::collections::{BTreeMap, HashMap};
    let t = now();
    // Group items with the same outcome so each group is one statement.
    let mut groups: BTreeMap<String, (Outcome, Vec<i64>)> = BTreeMap::new();
    let mut json: HashMap<i64, ItemJson> = HashMap::new();
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Refreshed { licenses } => {
                json.entry(id).or_default().licenses = Some(licenses)
            }
            Outcome::Changed { change } => json.entry(id).or_default().change = Some(change),
            other => {
                let key = format!("{other:?}");
                groups
                    .entry(key)
                    .or_insert_with(|| (other, Vec::new()))
                    .1
                    .push(id);
            }
        }
    }
    let backend = db.get_database_backend();
    let txn = crate::db::begin(db).await?;
    // The job's row first, as every other transaction on a job takes it (rerun, cancel, launch,
    // expansion's stores): taken after the items, it closed a lock cycle with a rerun holding
    // the row and waiting for these items, and PostgreSQL aborted one side as a deadlock.
    // (SQLite's `BEGIN IMMEDIATE` has taken the whole file's write lock already.)
    if backend != DbBackend::Sqlite {
        job::Entity::update_many()
            .col_expr(job::Column::UpdatedAt, Expr::value(t))
            .filter(job::Column::Id.eq(job_id))
            .exec(&txn)
            .await?;
    }
    let (mut succeeded, mut failed, mut skipped) = (0i64, 0i64, 0i64);
    if groups.values().any(|(o, _)| *o == Outcome::NotSent)
        && status(&txn, job_id).await? != Some(JobStatus::Cancelled)
    {
        let ids = groups
            .remove(&format!("{:?}", Outcome::NotSent))
            .map(|(_, ids)| ids)
            .unwrap_or_default();
        for ids in ids.chunks(ITEMS_PER_STATEMENT) {
            let update = unleased(job_item::Entity::update_many())
                .col_expr(job_item::Column::UpdatedAt, Expr::value(t))
                .filter(job_item::Column::LeaseOwner.eq(holder));
            update_items(&txn, job_id, update, Only::Pending, ids, &mut json).await?;
        }
    }
    for (_, (outcome, ids)) in groups {
        for ids in ids.chunks(ITEMS_PER_STATEMENT) {
            let mut update = job_item::Entity::update_many()
                .col_expr(
                    job_item::Column::Attempts,
                    Expr::col(job_item::Column::Attempts).add(1),
                )
                .col_expr(job_item::Column::UpdatedAt, Expr::value(t));
            let (status, code, detail): (ItemStatus, Option<String>, Option<String>) =
                match &outcome {
                    Outcome::Succeeded { note, due_at } => {
                        update = update.col_expr(job_item::Column::DueAt, Expr::value(*due_at));
                        (ItemStatus::Succeeded, None, note.clone())
                    }
                    Outcome::Skipped { note, due_at } => {
                        update = update.col_expr(job_item::Column::DueAt, Expr::value(*due_at));
                        (ItemStatus::Skipped, None, note.clone())
                    }
                    Outcome::Left { code, detail } => (
                        ItemStatus::Skipped,
                        Some(code.clone()),
                        Some(detail.clone()),
                    ),
                    // The job is still cancelled (checked above).
                    Outcome::NotSent => (
                        ItemStatus::Skipped,
                        Some("cancelled".to_owned()),
                        Some(super::codes::explanation("cancelled").to_owned()),
                    ),
                    Outcome::Failed { code, detail } => {
                        (ItemStatus::Failed, Some(code.clone()), Some(detail.clone()))
                    }
                    Outcome::Retry {
                        not_before,
                        code,
                        detail,
                        read_first,
                    } => {
                        update = update
                            .col_expr(job_item::Column::TakenOver, Expr::value(*read_first))
                            .col_expr(job_item::Column::LeaseUntil, Expr::value(*not_before))
                            .col_expr(
                                job_item::Column::LeaseOwner,
                                Expr::value(Option::<String>::None),
                            );
                        (
                            ItemStatus::Pending,
                            Some(code.clone()),
                            Some(detail.clone()),
                        )
                    }
                    Outcome::Refreshed { .. } | Outcome::Changed { .. } => {
                        unreachable!("handled above")
                    }
                };
            if status != ItemStatus::Pending {
                update = unleased(update);
            }
            if matches!(outcome, Outcome::Retry { .. } | Outcome::NotSent) {
                update = update.filter(job_item::Column::LeaseOwner.eq(holder));
            }
            let update = update
                .col_expr(job_item::Column::Status, Expr::value(status))
                .col_expr(job_item::Column::ErrorCode, Expr::value(code))
                .col_expr(job_item::Column::ErrorDetail, Expr::value(detail));
            let n = update_items(&txn, job_id, update, Only::Pending, ids, &mut json).await? as i64;
            match status {
                ItemStatus::Succeeded => succeeded += n,
                ItemStatus::Failed => failed += n,
                ItemStatus::Skipped => skipped += n,
                ItemStatus::Pending => {}
            }
        }
    }
    // A fresh state without an outcome in this call (the workers always send both; kept so a
    // read is never dropped): written on its own, whatever the item's status.
    let unrecorded: Vec<i64> = json.keys().copied().collect();
    for ids in unrecorded.chunks(ITEMS_PER_STATEMENT) {
        let update = job_item::Entity::update_many();
        update_items(&txn, job_id, update, Only::Any, ids, &mut json).await?;
    }
    // The job's counters and its activity need nothing from each other: one round trip.
    let counters = job::Entity::update_many()
        .col_expr(
            job::Column::Succeeded,
            Expr::col(job::Column::Succeeded).add(succeeded),
        )
        .col_expr(
            job::Column::Failed,
            Expr::col(job::Column::Failed).add(failed),
        )
        .col_expr(
            job::Column::Skipped,
            Expr::col(job::Column::Skipped).add(skipped),
        )
        .col_expr(job::Column::UpdatedAt, Expr::value(t))
        .col_expr(job::Column::LastProgressAt, Expr::value(t))
        .filter(job::Column::Id.eq(job_id))
        .build(backend);
    let activity = super::activity::upsert(
        backend,
        job_id,
        t,
        super::activity::Counts {
            succeeded,
            failed,
            skipped,
            throttled: throttled as i64,
        },
    )?;
    let released = release.then(|| super::lease::release_update(job_id, holder).build(backend));
    crate::db::execute_together(
        &txn,
        std::iter::once(counters)
            .chain(activity)
            .chain(released)
            .collect(),
    )
    .await?;
    txn.commit().await?;
    Ok((succeeded + failed + skipped) as u64)
}

/// Items changed by one statement of [`record`]: 3 bound values each (id, fresh state, ledger
/// entry), far below SQLite's 32,766 and PostgreSQL's 65,535 parameters.
pub(crate) const ITEMS_PER_STATEMENT: usize = 900;

/// An item's JSON columns written with its outcome: its fresh state (`job_items.licenses`) and
/// its change ledger entry (`job_items.change`).
#[derive(Debug, Default)]
struct ItemJson {
    licenses: Option<String>,
    change: Option<String>,
}

/// Which of the given items a statement of [`record`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Only {
    /// Those still pending (an outcome is recorded once, whoever holds the item now).
    Pending,
    /// All of them.
    Any,
}

/// Run `update` on the job's items `ids` (one chunk, a few hundred; `only` the pending ones or
/// all), taking their JSON columns out of `json` into the same statement, so each item row is
/// written once. Returns the rows changed.
///
/// Without JSON the ids are an `IN` list. With JSON the items are joined to a `VALUES` list of
/// `(id, licenses, change)` (`UPDATE … FROM`; an absent value keeps the column as it is): a key
/// lookup per row, where a `CASE id WHEN …` per column scans the whole `CASE` for every row.
/// The join must be driven by the `VALUES` list: on SQLite the item's other conditions are
/// written so that no index can serve them (`+column`, SQLite's documented way to disqualify
/// an index) — SQLite 3.51 otherwise walks the claim index and scans the list for every row,
/// the quadratic cost the join exists to avoid. On PostgreSQL the statement is also bounded to
/// the ids' span, so whichever index it picks ((job, status, id) when a new job's statistics
/// are stale) it never walks the job's other members.
async fn update_items<C: ConnectionTrait>(
    conn: &C,
    job_id: Uuid,
    update: sea_orm::UpdateMany<job_item::Entity>,
    only: Only,
    ids: &[i64],
    json: &mut std::collections::HashMap<i64, ItemJson>,
) -> StoreResult<u64> {
    use sea_orm::sea_query::{Func, IntoIden, TableRef, ValueTuple};
    let (Some(&low), Some(&high)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(0);
    };
    let pending = ItemStatus::Pending;
    if !ids.iter().any(|id| json.contains_key(id)) {
        let mut update = update
            .filter(job_item::Column::JobId.eq(job_id))
            .filter(job_item::Column::Id.between(low, high))
            .filter(job_item::Column::Id.is_in(ids.iter().copied()));
        if only == Only::Pending {
            update = update.filter(job_item::Column::Status.eq(pending));
        }
        return Ok(update.exec(conn).await?.rows_affected);
    }
    let item = |column: job_item::Column| Expr::col((job_item::Entity, column));
    let update = match conn.get_database_backend() {
        DbBackend::Sqlite => {
            let unindexed = |column| Expr::cust_with_expr("+?", item(column));
            let mut update = update.filter(unindexed(job_item::Column::JobId).eq(job_id));
            if only == Only::Pending {
                update = update.filter(unindexed(job_item::Column::Status).eq(pending));
            }
            update
        }
        _ => {
            let mut update = update
                .filter(job_item::Column::JobId.eq(job_id))
                .filter(job_item::Column::Id.between(low, high));
            if only == Only::Pending {
                update = update.filter(job_item::Column::Status.eq(pending));
            }
            update
        }
    };
    let rows: Vec<(i64, ItemJson)> = ids
        .iter()
        .map(|id| (*id, json.remove(id).unwrap_or_default()))
        .collect();
    let (with_licenses, with_change) = (
        rows.iter().any(|(_, j)| j.licenses.is_some()),
        rows.iter().any(|(_, j)| j.change.is_some()),
    );
    // The JSON goes as text (a JSON column's value below, `crate::db::as_json`), never as a
    // value tree.
    let tuples = rows
        .into_iter()
        .map(|(id, j)| ValueTuple::Three(id.into(), j.licenses.into(), j.change.into()));
    let backend = conn.get_database_backend();
    // `VALUES` columns are named column1, column2 … on both databases.
    let values = Query::select()
        .expr_as(Expr::col("column1"), "id")
        .expr_as(Expr::col("column2"), "licenses")
        .expr_as(Expr::col("column3"), "change")
        .from_values(tuples, "item_values")
        .to_owned();
    let mut stmt = update.into_query();
    stmt.from(TableRef::SubQuery(values.into(), "item_json".into_iden()))
        .and_where(item(job_item::Column::Id).equals(("item_json", "id")));
    for (present, column, name) in [
        (with_licenses, job_item::Column::Licenses, "licenses"),
        (with_change, job_item::Column::Change, "change"),
    ] {
        if present {
            let given = crate::db::as_json(backend, Expr::col(("item_json", name)));
            stmt.value(column, Func::coalesce([given, item(column)]));
        }
    }
    Ok(conn.execute(&stmt).await?.rows_affected())
}

/// Why a whole job cannot go on: it ends `failed` with this code and detail. Made from the
/// directory's one classification ([`Failure`]), so a job and the API say the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// The stable code: [`Failure::code`].
    pub code: &'static str,
    /// What happened, for the Job Monitor.
    pub detail: String,
}

impl JobFailure {
    /// A directory failure met while `doing` something (e.g. "writing licenses").
    pub fn from_directory(e: &DirectoryError, doing: &str) -> JobFailure {
        let failure = e.failure();
        let detail = match (failure, e) {
            (Failure::CredentialsRejected, DirectoryError::CredentialsRejected { detail }) => {
                format!("the directory refused licensor's credentials: {detail}")
            }
            (Failure::Unavailable, DirectoryError::Transient { detail, .. }) => {
                format!("the directory did not answer while {doing}: {detail}")
            }
            (_, other) => format!("{doing}: {other}"),
        };
        JobFailure {
            code: failure.code(),
            detail,
        }
    }

    /// A tenant without a usable directory client.
    pub fn from_client(e: &ClientError) -> JobFailure {
        match e {
            ClientError::Directory(e) => JobFailure::from_directory(e, "connecting"),
            ClientError::NotConfigured => JobFailure {
                code: e.failure().code(),
                detail: e.to_string(),
            },
            ClientError::Secret(secret) => JobFailure {
                code: e.failure().code(),
                detail: format!("the tenant's client secret cannot be read: {secret}"),
            },
        }
    }
}

/// The first wait before a member's write is tried again after a transient failure; each try
/// doubles it, up to [`RETRY_MAX_DELAY`], and each wait is jittered (up to twice as long) so
/// members that failed together are not tried again together — as the directory client's own
/// HTTP retries are.
const RETRY_MIN_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between a member's tries, before jitter.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(64);

/// The wait before try `attempts + 1` of a member: exponential from [`RETRY_MIN_DELAY`], with
/// backon's jitter, never shorter than the directory's `Retry-After`.
pub fn retry_delay(attempts: i32, retry_after: Option<Duration>) -> Duration {
    use backon::BackoffBuilder;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN_DELAY)
        .with_max_delay(RETRY_MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.clamp(0, 16) as usize)
        .unwrap_or(RETRY_MAX_DELAY);
    retry_after.map_or(backoff, |r| r.max(backoff))
}

/// The item outcome of a directory error met by one member; `None` when the whole job must
/// stop (the directory refused licensor's credentials). A transient failure is tried again
/// ([`retry_delay`]) until `max_attempts` tries, then fails with its code.
pub fn item_outcome(e: &DirectoryError, attempts: i32, max_attempts: i32) -> Option<Outcome> {
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
            ..
        } => {
            if attempts + 1 >= max_attempts {
                Some(Outcome::Failed {
                    code: code.as_str().to_owned(),
                    detail: format!("gave up after {} tries: {detail}", attempts + 1),
                })
            } else {
                let wait = retry_delay(attempts, *retry_after);
                Some(Outcome::Retry {
                    not_before: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    code: code.as_str().to_owned(),
                    detail: detail.clone(),
                    read_first: e.fate_unknown(),
                })
            }
        }
        other => Some(Outcome::Failed {
            code: other.item_code().as_str().to_owned(),
            detail: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_try_jittered_and_never_less_than_retry_after() {
        for attempts in 0..6 {
            let base = RETRY_MIN_DELAY * 2u32.pow(attempts as u32);
            let waits: Vec<Duration> = (0..50).map(|_| retry_delay(attempts, None)).collect();
            assert!(
                waits.iter().all(|w| *w >= base && *w <= base * 2),
                "{attempts}: {waits:?}"
            );
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "not jittered: {waits:?}"
            );
        }
        assert!(retry_delay(20, None) <= RETRY_MAX_DELAY * 2);
        let long = Duration::from_secs(30);
        assert!(retry_delay(0, Some(long)) >= long);
    }

    #[test]
    fn a_job_and_the_api_classify_an_unreadable_secret_alike() {
        let e = ClientError::NotConfigured;
        assert_eq!(JobFailure::from_client(&e).code, "directory_not_configured");
        let rejected = DirectoryError::CredentialsRejected { detail: "x".into() };
        assert_eq!(
            JobFailure::from_directory(&rejected, "writing").code,
            rejected.failure().code()
        );
        assert!(item_outcome(&rejected, 0, 3).is_none());
    }
}
