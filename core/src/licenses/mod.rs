//! Seat inventory and started licenses. Every function takes the tenant id; another tenant's
//! license is "not found".
//!
//! A license has `seats`; open assignments hold `assigned` of them and, for a license with a
//! term, `ended` seats have reached their end date and can no longer be handed out, so
//! `available = seats - assigned - ended`. Both counters live on the license row and change in
//! the same transaction as the assignments and seats they count. Every change first takes the
//! license row (an `UPDATE` of it), so changes to one license are applied one after the other,
//! on SQLite and on PostgreSQL alike; the checkout's stock check and increment are then one
//! conditional `UPDATE`.
//!
//! A license with `term_days` has one `license_seats` row per seat. A seat starts at its first
//! checkout or automatically 4 months after `delivered_on`, whichever comes first, and ends
//! `term_days` after it started. A started seat that is checked in with time left is a reusable
//! started seat ("återanvändbar startad licens"): it can be handed to someone else, choosing
//! among the available end dates.

use std::collections::HashMap;

use chrono::{Days, Months, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::db::Db;
use crate::entities::{license, license_seat};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

mod assignments;
mod checkin;
mod checkout;
mod holder;
mod settle;
mod types;

pub use assignments::{AssignmentState, AssignmentView, get_assignment, list_assignments};
pub use checkin::{Checkin, CheckinOutcome, checkin};
pub use checkout::{Checkout, checkout};
pub use holder::{HeldAssignment, HolderCheckinOutcome, checkin_held, list_held};
pub use settle::{SweepOutcome, sweep};
pub use types::*;

/// Months after delivery at which a license's unstarted seats start by themselves.
pub const AUTO_START_MONTHS: u32 = 4;

/// A license with its derived counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LicenseView {
    pub id: Uuid,
    pub name: String,
    /// Seats bought.
    pub seats: i64,
    /// Whether checked-out seats can be checked in and handed to someone else.
    pub reassignable: bool,
    /// Length of a seat's term in days; `null` = seats never end.
    pub term_days: Option<i32>,
    /// Delivery date; unstarted seats start by themselves 4 months later.
    pub delivered_on: Option<NaiveDate>,
    /// When unstarted seats start by themselves (`delivered_on` + 4 months), for term licenses.
    pub auto_starts_on: Option<NaiveDate>,
    pub notes: Option<String>,
    /// Seats checked out to users or assets.
    pub assigned: i64,
    /// Seats that can be checked out now (new seats and reusable started seats).
    pub available: i64,
    /// Started seats with time left that nobody holds ("återanvändbara startade licenser").
    pub started_reusable: i64,
    /// Seats whose term has ended.
    pub ended: i64,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

/// The figures recorded before and after each change in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub seats: i64,
    pub assigned: i64,
    pub available: i64,
    pub started_reusable: i64,
    pub ended: i64,
}

impl Counts {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A license to create, already validated.
#[derive(Debug, Clone)]
pub struct NewLicense {
    pub name: LicenseName,
    pub seats: SeatCount,
    pub reassignable: bool,
    pub term_days: Option<TermDays>,
    pub delivered_on: Option<DeliveredOn>,
    pub notes: Option<Notes>,
}

/// Changes to a license; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct LicenseUpdate {
    pub name: Option<LicenseName>,
    pub seats: Option<SeatCount>,
    pub reassignable: Option<bool>,
    pub term_days: Option<Option<TermDays>>,
    pub delivered_on: Option<Option<DeliveredOn>>,
    pub notes: Option<Option<Notes>>,
}

impl LicenseUpdate {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.seats.is_none()
            && self.reassignable.is_none()
            && self.term_days.is_none()
            && self.delivered_on.is_none()
            && self.notes.is_none()
    }
}

pub(crate) fn auto_start_date(delivered_on: NaiveDate) -> NaiveDate {
    delivered_on
        .checked_add_months(Months::new(AUTO_START_MONTHS))
        .unwrap_or(NaiveDate::MAX)
}

pub(crate) fn end_date(started_on: NaiveDate, term_days: i32) -> NaiveDate {
    started_on
        .checked_add_days(Days::new(Ord::max(term_days, 0) as u64))
        .unwrap_or(NaiveDate::MAX)
}

pub(crate) fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn view(m: &license::Model, started_reusable: i64) -> LicenseView {
    LicenseView {
        id: m.id,
        name: m.name.clone(),
        seats: m.seats,
        reassignable: m.reassignable,
        term_days: m.term_days,
        delivered_on: m.delivered_on,
        auto_starts_on: m.term_days.and(m.delivered_on).map(auto_start_date),
        notes: m.notes.clone(),
        assigned: m.assigned,
        available: Ord::max(m.seats - m.assigned - m.ended, 0),
        started_reusable,
        ended: m.ended,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// Reusable started seats per license.
async fn started_reusable<C: ConnectionTrait>(
    conn: &C,
    license_ids: &[Uuid],
) -> StoreResult<HashMap<Uuid, i64>> {
    if license_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, i64)> = license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::LicenseId)
        .column_as(license_seat::Column::Id.count(), "n")
        .filter(license_seat::Column::LicenseId.is_in(license_ids.iter().copied()))
        .filter(license_seat::Column::StartedOn.is_not_null())
        .filter(license_seat::Column::Ended.eq(false))
        .filter(license_seat::Column::AssignmentId.is_null())
        .group_by(license_seat::Column::LicenseId)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

async fn view_of<C: ConnectionTrait>(conn: &C, m: &license::Model) -> StoreResult<LicenseView> {
    let reusable = if m.term_days.is_some() {
        started_reusable(conn, &[m.id])
            .await?
            .get(&m.id)
            .copied()
            .unwrap_or(0)
    } else {
        0
    };
    Ok(view(m, reusable))
}

async fn counts<C: ConnectionTrait>(conn: &C, m: &license::Model) -> StoreResult<Counts> {
    let v = view_of(conn, m).await?;
    Ok(Counts {
        seats: v.seats,
        assigned: v.assigned,
        available: v.available,
        started_reusable: v.started_reusable,
        ended: v.ended,
    })
}

/// Take the license row for the rest of the transaction (so changes to one license happen one
/// after the other) and read it. Another tenant's license is "not found".
async fn lock<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    license_id: Uuid,
) -> StoreResult<license::Model> {
    let taken = license::Entity::update_many()
        .col_expr(license::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(license::Column::Id.eq(license_id))
        .filter(license::Column::TenantId.eq(tenant_id))
        .exec(conn)
        .await?;
    if taken.rows_affected == 0 {
        return Err(StoreError::NotFound("license"));
    }
    reload(conn, license_id).await
}

async fn reload<C: ConnectionTrait>(conn: &C, license_id: Uuid) -> StoreResult<license::Model> {
    license::Entity::find_by_id(license_id)
        .one(conn)
        .await?
        .ok_or(StoreError::NotFound("license"))
}

async fn record<C: ConnectionTrait>(
    conn: &C,
    m: &license::Model,
    actor: Option<Uuid>,
    action: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> StoreResult<()> {
    audit::record(
        conn,
        AuditEntry {
            tenant_id: m.tenant_id,
            actor_token_id: actor,
            action,
            target_type: "license",
            target_id: m.id.to_string(),
            before,
            after,
        },
    )
    .await
}

/// Add `n` unstarted seats to a term license.
async fn add_seats<C: ConnectionTrait>(conn: &C, m: &license::Model, n: i64) -> StoreResult<()> {
    let mut left = n;
    while left > 0 {
        let chunk = Ord::min(left, 1000);
        let rows = (0..chunk).map(|_| license_seat::ActiveModel {
            tenant_id: Set(m.tenant_id),
            license_id: Set(m.id),
            started_on: Set(None),
            ends_on: Set(None),
            ended: Set(false),
            assignment_id: Set(None),
            ..Default::default()
        });
        license_seat::Entity::insert_many(rows)
            .exec_without_returning(conn)
            .await?;
        left -= chunk;
    }
    Ok(())
}

/// Remove `n` free seats of a term license: unstarted ones first, then reusable started ones
/// that end soonest, then ended ones. Returns how many of the removed seats had ended.
async fn remove_free_seats<C: ConnectionTrait>(
    conn: &C,
    m: &license::Model,
    n: i64,
) -> StoreResult<i64> {
    let mut left = n;
    let mut ended_removed = 0;
    for pass in 0..3 {
        if left <= 0 {
            break;
        }
        let mut pick = license_seat::Entity::find()
            .select_only()
            .column(license_seat::Column::Id)
            .filter(license_seat::Column::LicenseId.eq(m.id))
            .filter(license_seat::Column::AssignmentId.is_null());
        pick = match pass {
            0 => pick
                .filter(license_seat::Column::StartedOn.is_null())
                .order_by_asc(license_seat::Column::Id),
            1 => pick
                .filter(license_seat::Column::StartedOn.is_not_null())
                .filter(license_seat::Column::Ended.eq(false))
                .order_by_asc(license_seat::Column::EndsOn)
                .order_by_asc(license_seat::Column::Id),
            _ => pick
                .filter(license_seat::Column::Ended.eq(true))
                .order_by_asc(license_seat::Column::Id),
        };
        let pick = sea_orm::QueryTrait::into_query(pick.limit(left as u64));
        let removed = license_seat::Entity::delete_many()
            .filter(license_seat::Column::Id.in_subquery(pick))
            .exec(conn)
            .await?
            .rows_affected as i64;
        if pass == 2 {
            ended_removed = removed;
        }
        left -= removed;
    }
    if left > 0 {
        return Err(StoreError::conflict(
            "seats_below_assigned",
            "not enough free seats to remove",
        ));
    }
    Ok(ended_removed)
}

/// Create a license. A term license delivered more than 4 months ago starts its seats at once.
pub async fn create(
    db: &Db,
    tenant_id: Uuid,
    new: NewLicense,
    actor: Option<Uuid>,
) -> StoreResult<LicenseView> {
    if new.term_days.is_some() && new.seats.get() > MAX_TERM_SEATS {
        return Err(StoreError::unacceptable(
            "invalid_seats",
            format!("a license with a term may have at most {MAX_TERM_SEATS} seats"),
        ));
    }
    let now = Utc::now();
    let txn = crate::db::begin(db).await?;
    let m = license::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        name: Set(new.name.as_str().to_owned()),
        seats: Set(new.seats.get()),
        assigned: Set(0),
        ended: Set(0),
        reassignable: Set(new.reassignable),
        term_days: Set(new.term_days.map(TermDays::get)),
        delivered_on: Set(new.delivered_on.map(DeliveredOn::get)),
        notes: Set(new.notes.map(Notes::into_inner)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    if m.term_days.is_some() {
        add_seats(&txn, &m, m.seats).await?;
    }
    let after = counts(&txn, &m).await?;
    record(
        &txn,
        &m,
        actor,
        "license.create",
        None,
        Some(json!({
            "name": m.name,
            "reassignable": m.reassignable,
            "term_days": m.term_days,
            "delivered_on": m.delivered_on,
            "counts": after.json(),
        })),
    )
    .await?;
    let m = settle::settle(&txn, m, today()).await?;
    let v = view_of(&txn, &m).await?;
    txn.commit().await?;
    Ok(v)
}

/// One of the tenant's licenses with its counts.
pub async fn get(db: &Db, tenant_id: Uuid, license_id: Uuid) -> StoreResult<LicenseView> {
    let m = find(db, tenant_id, license_id).await?;
    view_of(db, &m).await
}

pub(crate) async fn find<C: ConnectionTrait>(
    conn: &C,
    tenant_id: Uuid,
    license_id: Uuid,
) -> StoreResult<license::Model> {
    license::Entity::find_by_id(license_id)
        .filter(license::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or(StoreError::NotFound("license"))
}

/// Licenses read at a time by a search of [`list`].
const SEARCH_BATCH: u64 = 500;

/// `text` as a license search compares it ([`list`]): in Unicode's composed form (NFC: an "Å"
/// typed as A and a combining ring, as text pasted from some systems has it, is the one
/// character "Å"), in small letters (Unicode's, not only ASCII's), and with Greek's final sigma
/// as the sigma it is ("ΟΔΟΣ" lowercases to "οδος", which "σ" would not find).
pub fn search_key(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfc()
        .collect::<String>()
        .to_lowercase()
        .replace('ς', "σ")
}

/// How long a license search is, in characters, as [`list`] searches it: without the spaces
/// around it, in Unicode's composed form (an "Å" typed as A and a combining ring is one). The API
/// takes at most 200.
pub fn search_length(search: &str) -> usize {
    use unicode_normalization::UnicodeNormalization;
    search.trim().nfc().count()
}

/// The tenant's licenses, newest first; with `search`, those whose name contains it in any
/// case — Unicode's, not only ASCII's: "östersund" finds "Östersund Skola". The names are
/// matched here rather than by the database, whose `lower()` folds ASCII only on SQLite (and
/// only what the server's locale knows on PostgreSQL): a search for "Ö" found nothing. A
/// tenant's licenses are read [`SEARCH_BATCH`] at a time, newest first, until the page is full.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    search: Option<&str>,
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<LicenseView>> {
    let search = search
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(search_key);
    let newest_first = |before: Option<Uuid>| {
        let mut q = license::Entity::find().filter(license::Column::TenantId.eq(tenant_id));
        if let Some(before) = before {
            q = q.filter(license::Column::Id.lt(before));
        }
        q.order_by_desc(license::Column::Id)
    };
    let rows = match &search {
        None => newest_first(page.after).limit(page.fetch()).all(db).await?,
        Some(search) => {
            let mut found = Vec::new();
            let mut before = page.after;
            loop {
                let batch = newest_first(before).limit(SEARCH_BATCH).all(db).await?;
                let last = batch.last().map(|m| m.id);
                let more = batch.len() as u64 == SEARCH_BATCH;
                found.extend(
                    batch
                        .into_iter()
                        .filter(|m| search_key(&m.name).contains(search.as_str())),
                );
                if found.len() as u64 >= page.fetch() || !more {
                    break;
                }
                before = last;
            }
            found.truncate(page.fetch() as usize);
            found
        }
    };
    let page = page.finish(rows, |r| r.id);
    let term_ids: Vec<Uuid> = page
        .data
        .iter()
        .filter(|m| m.term_days.is_some())
        .map(|m| m.id)
        .collect();
    let reusable = started_reusable(db, &term_ids).await?;
    Ok(page.map(|m| {
        let n = reusable.get(&m.id).copied().unwrap_or(0);
        view(&m, n)
    }))
}

/// Change a license. Fewer seats than are checked out → 409 `seats_below_assigned`; adding or
/// removing the term while seats are checked out or started → 409 `term_in_use`.
pub async fn update(
    db: &Db,
    tenant_id: Uuid,
    license_id: Uuid,
    change: LicenseUpdate,
    actor: Option<Uuid>,
) -> StoreResult<LicenseView> {
    if change.is_empty() {
        return get(db, tenant_id, license_id).await;
    }
    let today = today();
    let txn = crate::db::begin(db).await?;
    let m = lock(&txn, tenant_id, license_id).await?;
    let m = settle::settle(&txn, m, today).await?;
    let before = counts(&txn, &m).await?;
    let fields = |m: &license::Model| {
        json!({
            "name": m.name,
            "seats": m.seats,
            "reassignable": m.reassignable,
            "term_days": m.term_days,
            "delivered_on": m.delivered_on,
            "notes": m.notes,
        })
    };
    let before_fields = fields(&m);

    let had_term = m.term_days.is_some();
    let term_days = match change.term_days {
        Some(t) => t.map(TermDays::get),
        None => m.term_days,
    };
    let has_term = term_days.is_some();
    let seats = change.seats.map_or(m.seats, SeatCount::get);
    if has_term && seats > MAX_TERM_SEATS {
        return Err(StoreError::unacceptable(
            "invalid_seats",
            format!("a license with a term may have at most {MAX_TERM_SEATS} seats"),
        ));
    }
    if had_term != has_term {
        let started = if had_term {
            license_seat::Entity::find()
                .filter(license_seat::Column::LicenseId.eq(m.id))
                .filter(license_seat::Column::StartedOn.is_not_null())
                .count(&txn)
                .await?
        } else {
            0
        };
        if m.assigned > 0 || started > 0 {
            return Err(StoreError::conflict(
                "term_in_use",
                "the term can be added or removed only while no seat is checked out or started",
            )
            .with_extra(json!({ "assigned": m.assigned, "started": started })));
        }
    }

    // The seat count: never below what is checked out, in one conditional statement.
    if seats != m.seats {
        let changed = license::Entity::update_many()
            .col_expr(license::Column::Seats, Expr::value(seats))
            .filter(license::Column::Id.eq(m.id))
            .filter(Expr::col(license::Column::Assigned).lte(seats))
            .exec(&txn)
            .await?;
        if changed.rows_affected == 0 {
            return Err(StoreError::conflict(
                "seats_below_assigned",
                format!(
                    "{} seats are checked out; check some in before reducing seats to {seats}",
                    m.assigned
                ),
            )
            .with_extra(json!({ "assigned": m.assigned, "seats": seats })));
        }
        if had_term && has_term {
            if seats > m.seats {
                add_seats(&txn, &m, seats - m.seats).await?;
            } else {
                let ended_removed = remove_free_seats(&txn, &m, m.seats - seats).await?;
                if ended_removed > 0 {
                    license::Entity::update_many()
                        .col_expr(
                            license::Column::Ended,
                            Expr::col(license::Column::Ended).sub(ended_removed),
                        )
                        .filter(license::Column::Id.eq(m.id))
                        .exec(&txn)
                        .await?;
                }
            }
        }
    }
    if had_term && !has_term {
        license_seat::Entity::delete_many()
            .filter(license_seat::Column::LicenseId.eq(m.id))
            .exec(&txn)
            .await?;
        license::Entity::update_many()
            .col_expr(license::Column::Ended, Expr::value(0i64))
            .filter(license::Column::Id.eq(m.id))
            .exec(&txn)
            .await?;
    }

    let current = reload(&txn, m.id).await?;
    let mut active: license::ActiveModel = current.into();
    if let Some(name) = change.name {
        active.name = Set(name.as_str().to_owned());
    }
    if let Some(r) = change.reassignable {
        active.reassignable = Set(r);
    }
    if change.term_days.is_some() {
        active.term_days = Set(term_days);
    }
    if let Some(d) = change.delivered_on {
        active.delivered_on = Set(d.map(DeliveredOn::get));
    }
    if let Some(n) = change.notes {
        active.notes = Set(n.map(Notes::into_inner));
    }
    active.updated_at = Set(Utc::now());
    let m = active.update(&txn).await?;
    if !had_term && has_term {
        add_seats(&txn, &m, m.seats).await?;
    }
    let after = counts(&txn, &m).await?;
    let mut after_json = fields(&m);
    after_json["counts"] = after.json();
    let mut before_json = before_fields;
    before_json["counts"] = before.json();
    record(
        &txn,
        &m,
        actor,
        "license.update",
        Some(before_json),
        Some(after_json),
    )
    .await?;
    // A new delivery date or term may start seats at once.
    let m = settle::settle(&txn, m, today).await?;
    let v = view_of(&txn, &m).await?;
    txn.commit().await?;
    Ok(v)
}

/// Reusable started seats of one end date.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StartedGroup {
    /// The last day the seats run.
    pub ends_on: NaiveDate,
    /// Reusable started seats ending that day.
    pub count: i64,
    /// Days left from today.
    pub days_left: i64,
}

/// A license's reusable started seats, grouped by end date, soonest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StartedSeats {
    pub license_id: Uuid,
    /// All reusable started seats of the license.
    pub total: i64,
    pub data: Vec<StartedGroup>,
}

/// The license's reusable started seats ("återanvändbara startade licenser") by end date.
pub async fn started(db: &Db, tenant_id: Uuid, license_id: Uuid) -> StoreResult<StartedSeats> {
    let m = find(db, tenant_id, license_id).await?;
    let rows: Vec<(NaiveDate, i64)> = if m.term_days.is_some() {
        license_seat::Entity::find()
            .select_only()
            .column(license_seat::Column::EndsOn)
            .column_as(license_seat::Column::Id.count(), "n")
            .filter(license_seat::Column::LicenseId.eq(m.id))
            .filter(license_seat::Column::StartedOn.is_not_null())
            .filter(license_seat::Column::EndsOn.is_not_null())
            .filter(license_seat::Column::Ended.eq(false))
            .filter(license_seat::Column::AssignmentId.is_null())
            .group_by(license_seat::Column::EndsOn)
            .order_by_asc(license_seat::Column::EndsOn)
            .into_tuple()
            .all(db)
            .await?
    } else {
        Vec::new()
    };
    let today = today();
    Ok(StartedSeats {
        license_id: m.id,
        total: rows.iter().map(|(_, n)| n).sum(),
        data: rows
            .into_iter()
            .map(|(ends_on, count)| StartedGroup {
                ends_on,
                count,
                days_left: (ends_on - today).num_days(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_start_four_calendar_months_after_delivery() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(auto_start_date(d(2026, 1, 15)), d(2026, 5, 15));
        assert_eq!(auto_start_date(d(2025, 10, 31)), d(2026, 2, 28));
        assert_eq!(end_date(d(2026, 5, 15), 365), d(2027, 5, 15));
    }
}
