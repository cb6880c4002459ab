//! The term rules applied to a license's seats: unstarted seats start by themselves 4 months
//! after delivery, and seats past their end date end (leaving their holder and the reusable
//! pool). Applied to one license at the start of every change to it, and to every license by
//! the daily sweep, which also catches up after downtime. Applying them twice changes nothing.

use std::collections::BTreeSet;

use chrono::{Months, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;
use uuid::Uuid;

use super::{AUTO_START_MONTHS, auto_start_date, counts, end_date, lock, record, reload};
use crate::db::Db;
use crate::entities::{license, license_assignment, license_seat};
use crate::error::StoreResult;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Licenses changed.
    pub licenses: u64,
    /// Seats started automatically.
    pub started: u64,
    /// Seats that reached their end.
    pub ended: u64,
}

/// Apply the term rules as of `today` to `m` (taken by the caller's transaction); records what
/// changed in the audit log and returns the license as it is now.
pub(crate) async fn settle<C: ConnectionTrait>(
    conn: &C,
    m: license::Model,
    today: NaiveDate,
) -> StoreResult<license::Model> {
    let (m, _) = settle_counted(conn, m, today).await?;
    Ok(m)
}

async fn settle_counted<C: ConnectionTrait>(
    conn: &C,
    m: license::Model,
    today: NaiveDate,
) -> StoreResult<(license::Model, (u64, u64))> {
    let Some(term_days) = m.term_days else {
        return Ok((m, (0, 0)));
    };
    let mut before = counts(conn, &m).await?;

    // Unstarted seats start by themselves on `delivered_on` + 4 months, and run from that day.
    let mut started = 0;
    if let Some(delivered_on) = m.delivered_on {
        let due = auto_start_date(delivered_on);
        if due <= today {
            started = license_seat::Entity::update_many()
                .col_expr(license_seat::Column::StartedOn, Expr::value(due))
                .col_expr(
                    license_seat::Column::EndsOn,
                    Expr::value(end_date(due, term_days)),
                )
                .filter(license_seat::Column::LicenseId.eq(m.id))
                .filter(license_seat::Column::StartedOn.is_null())
                .exec(conn)
                .await?
                .rows_affected;
        }
    }
    if started > 0 {
        let after = counts(conn, &m).await?;
        record(
            conn,
            &m,
            None,
            "license.seats_started",
            Some(json!({ "counts": before.json() })),
            Some(json!({
                "started": started,
                "reason": format!("not started within {AUTO_START_MONTHS} months of delivery"),
                "counts": after.json(),
            })),
        )
        .await?;
        before = after;
    }

    // Seats past their end date end: they leave their holder and the reusable pool.
    let held: Vec<(Uuid, i64)> = license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::AssignmentId)
        .column_as(license_seat::Column::Id.count(), "n")
        .filter(license_seat::Column::LicenseId.eq(m.id))
        .filter(license_seat::Column::Ended.eq(false))
        .filter(license_seat::Column::EndsOn.lt(today))
        .filter(license_seat::Column::AssignmentId.is_not_null())
        .group_by(license_seat::Column::AssignmentId)
        .into_tuple()
        .all(conn)
        .await?;
    let ended = license_seat::Entity::update_many()
        .col_expr(license_seat::Column::Ended, Expr::value(true))
        .col_expr(
            license_seat::Column::AssignmentId,
            Expr::value(Option::<Uuid>::None),
        )
        .filter(license_seat::Column::LicenseId.eq(m.id))
        .filter(license_seat::Column::Ended.eq(false))
        .filter(license_seat::Column::EndsOn.lt(today))
        .exec(conn)
        .await?
        .rows_affected;
    if ended == 0 {
        let m = reload(conn, m.id).await?;
        return Ok((m, (started, 0)));
    }
    let mut released = 0i64;
    let now = Utc::now();
    for (assignment_id, n) in &held {
        released += n;
        license_assignment::Entity::update_many()
            .col_expr(
                license_assignment::Column::Quantity,
                Expr::col(license_assignment::Column::Quantity).sub(*n),
            )
            .filter(license_assignment::Column::Id.eq(*assignment_id))
            .exec(conn)
            .await?;
        // An assignment left without seats is over.
        license_assignment::Entity::update_many()
            .col_expr(license_assignment::Column::CheckedInAt, Expr::value(now))
            .col_expr(
                license_assignment::Column::CheckinNotes,
                Expr::value("term ended"),
            )
            .filter(license_assignment::Column::Id.eq(*assignment_id))
            .filter(license_assignment::Column::Quantity.lte(0))
            .filter(license_assignment::Column::CheckedInAt.is_null())
            .exec(conn)
            .await?;
    }
    license::Entity::update_many()
        .col_expr(
            license::Column::Assigned,
            Expr::col(license::Column::Assigned).sub(released),
        )
        .col_expr(
            license::Column::Ended,
            Expr::col(license::Column::Ended).add(ended as i64),
        )
        .filter(license::Column::Id.eq(m.id))
        .exec(conn)
        .await?;
    let m = reload(conn, m.id).await?;
    let after = counts(conn, &m).await?;
    record(
        conn,
        &m,
        None,
        "license.seats_ended",
        Some(json!({ "counts": before.json() })),
        Some(json!({
            "ended": ended,
            "released_from_assignments": released,
            "assignment_ids": held.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "counts": after.json(),
        })),
    )
    .await?;
    Ok((m, (started, ended)))
}

/// Apply the term rules to every license of every tenant that has something due as of `today`:
/// start unstarted seats delivered 4 months ago or more, end seats whose end date has passed.
/// Each license changes in its own transaction.
pub async fn sweep(db: &Db, today: NaiveDate) -> StoreResult<SweepOutcome> {
    let mut due: BTreeSet<Uuid> = BTreeSet::new();
    // Delivered at least 3 months ago: a superset of "4 calendar months ago", refined below.
    let cutoff = today
        .checked_sub_months(Months::new(AUTO_START_MONTHS - 1))
        .unwrap_or(NaiveDate::MIN);
    let unstarted = license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::LicenseId)
        .filter(license_seat::Column::StartedOn.is_null())
        .distinct();
    let candidates: Vec<(Uuid, Uuid, Option<NaiveDate>)> = license::Entity::find()
        .select_only()
        .column(license::Column::Id)
        .column(license::Column::TenantId)
        .column(license::Column::DeliveredOn)
        .filter(license::Column::TermDays.is_not_null())
        .filter(license::Column::DeliveredOn.lte(cutoff))
        .filter(license::Column::Id.in_subquery(sea_orm::QueryTrait::into_query(unstarted)))
        .into_tuple()
        .all(db)
        .await?;
    let mut tenants = std::collections::HashMap::new();
    for (id, tenant_id, delivered_on) in candidates {
        if delivered_on.is_some_and(|d| auto_start_date(d) <= today) {
            due.insert(id);
            tenants.insert(id, tenant_id);
        }
    }
    let ending: Vec<(Uuid, Uuid)> = license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::LicenseId)
        .column(license_seat::Column::TenantId)
        .filter(license_seat::Column::Ended.eq(false))
        .filter(license_seat::Column::EndsOn.lt(today))
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    for (id, tenant_id) in ending {
        due.insert(id);
        tenants.insert(id, tenant_id);
    }

    let mut outcome = SweepOutcome::default();
    for id in due {
        let Some(&tenant_id) = tenants.get(&id) else {
            continue;
        };
        let txn = crate::db::begin(db).await?;
        let m = match lock(&txn, tenant_id, id).await {
            Ok(m) => m,
            // Deleted meanwhile: nothing to do.
            Err(crate::StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let (_, (started, ended)) = settle_counted(&txn, m, today).await?;
        txn.commit().await?;
        if started + ended > 0 {
            outcome.licenses += 1;
            outcome.started += started;
            outcome.ended += ended;
        }
    }
    Ok(outcome)
}
