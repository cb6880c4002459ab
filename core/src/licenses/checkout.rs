//! Checking a license out to a user or an asset. Licenses that are out of stock cannot be
//! checked out: the stock check and the increment are one conditional statement, so concurrent
//! checkouts never oversell.

use chrono::{NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::assignments::{AssignmentView, assignment_view, seat_dates};
use super::{Assignee, Notes, Quantity, counts, end_date, lock, record, reload, settle, today};
use crate::db::Db;
use crate::entities::{license, license_assignment, license_seat};
use crate::error::{StoreError, StoreResult};

/// A checkout, already validated.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub assignee: Assignee,
    pub quantity: Quantity,
    pub notes: Option<Notes>,
    /// "Återanvänd startad licens": hand out reusable started seats ending on this date.
    pub reuse_started: Option<NaiveDate>,
}

/// Check `quantity` seats out. No free seat → 409 `out_of_stock`; `reuse_started` with no
/// reusable started seat of that end date → 409 `no_started_seat`. Nothing changes on refusal.
pub async fn checkout(
    db: &Db,
    tenant_id: Uuid,
    license_id: Uuid,
    req: Checkout,
    actor: Option<Uuid>,
) -> StoreResult<AssignmentView> {
    let today = today();
    let q = req.quantity.get();
    let txn = crate::db::begin(db).await?;
    let m = lock(&txn, tenant_id, license_id).await?;
    let m = settle::settle(&txn, m, today).await?;
    if req.reuse_started.is_some() && m.term_days.is_none() {
        return Err(StoreError::conflict(
            "no_started_seat",
            "this license has no term, so it has no started seats to reuse",
        ));
    }
    let before = counts(&txn, &m).await?;

    // The stock check and the increment in one statement.
    let taken = license::Entity::update_many()
        .col_expr(
            license::Column::Assigned,
            Expr::col(license::Column::Assigned).add(q),
        )
        .filter(license::Column::Id.eq(m.id))
        .filter(license::Column::TenantId.eq(tenant_id))
        .filter(
            Expr::col(license::Column::Assigned)
                .add(Expr::col(license::Column::Ended))
                .add(q)
                .lte(Expr::col(license::Column::Seats)),
        )
        .exec(&txn)
        .await?;
    if taken.rows_affected == 0 {
        return Err(out_of_stock(q, before.available));
    }

    let now = Utc::now();
    let assignment = license_assignment::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        license_id: Set(m.id),
        assignee_type: Set(req.assignee.kind.as_str().to_owned()),
        assignee_id: Set(req.assignee.id.clone()),
        assignee_name: Set(req.assignee.name.clone()),
        quantity: Set(q),
        notes: Set(req.notes.map(Notes::into_inner)),
        checked_out_at: Set(now),
        checked_out_by: Set(actor),
        checked_in_at: Set(None),
        checked_in_by: Set(None),
        checkin_notes: Set(None),
    }
    .insert(&txn)
    .await?;

    if let Some(term_days) = m.term_days {
        match req.reuse_started {
            Some(ends_on) => {
                let got = claim_started(&txn, &m, assignment.id, q, Some(ends_on)).await?;
                if got < q {
                    let dates = reusable_end_dates(&txn, &m).await?;
                    return Err(StoreError::conflict(
                        "no_started_seat",
                        format!(
                            "{} reusable started seat(s) end on {ends_on}; {q} asked for",
                            got
                        ),
                    )
                    .with_extra(json!({ "ends_on": ends_on, "available_ends_on": dates })));
                }
            }
            None => {
                // New seats first: they start today. Then reusable started seats, most time left
                // first.
                let fresh = claim_unstarted(&txn, &m, assignment.id, q, today, term_days).await?;
                let reused = if fresh < q {
                    claim_started(&txn, &m, assignment.id, q - fresh, None).await?
                } else {
                    0
                };
                if fresh + reused < q {
                    return Err(out_of_stock(q, before.available));
                }
            }
        }
    }

    let m = reload(&txn, m.id).await?;
    let after = counts(&txn, &m).await?;
    let dates = seat_dates(&txn, &[assignment.id]).await?;
    let view = assignment_view(assignment, &dates);
    record(
        &txn,
        &m,
        actor,
        "license.checkout",
        Some(json!({ "counts": before.json() })),
        Some(json!({
            "assignment_id": view.id,
            "assignee": view.assignee,
            "quantity": view.quantity,
            "reuse_started": req.reuse_started,
            "ends_on": view.ends_on,
            "counts": after.json(),
        })),
    )
    .await?;
    txn.commit().await?;
    Ok(view)
}

fn out_of_stock(requested: i64, available: i64) -> StoreError {
    StoreError::conflict(
        "out_of_stock",
        format!(
            "the license is out of stock: {requested} seat(s) asked for, {available} available"
        ),
    )
    .with_extra(json!({ "requested": requested, "available": available }))
}

/// Give up to `n` unstarted seats to the assignment, starting them on `today`.
async fn claim_unstarted<C: ConnectionTrait>(
    conn: &C,
    m: &license::Model,
    assignment_id: Uuid,
    n: i64,
    today: NaiveDate,
    term_days: i32,
) -> StoreResult<i64> {
    let pick = license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::Id)
        .filter(license_seat::Column::LicenseId.eq(m.id))
        .filter(license_seat::Column::AssignmentId.is_null())
        .filter(license_seat::Column::StartedOn.is_null())
        .order_by_asc(license_seat::Column::Id)
        .limit(n as u64)
        .into_query();
    Ok(license_seat::Entity::update_many()
        .col_expr(
            license_seat::Column::AssignmentId,
            Expr::value(Some(assignment_id)),
        )
        .col_expr(license_seat::Column::StartedOn, Expr::value(today))
        .col_expr(
            license_seat::Column::EndsOn,
            Expr::value(end_date(today, term_days)),
        )
        .filter(license_seat::Column::Id.in_subquery(pick))
        .filter(license_seat::Column::AssignmentId.is_null())
        .exec(conn)
        .await?
        .rows_affected as i64)
}

/// Give up to `n` reusable started seats to the assignment: those ending on `ends_on`, or any,
/// most time left first.
async fn claim_started<C: ConnectionTrait>(
    conn: &C,
    m: &license::Model,
    assignment_id: Uuid,
    n: i64,
    ends_on: Option<NaiveDate>,
) -> StoreResult<i64> {
    let mut pick = license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::Id)
        .filter(license_seat::Column::LicenseId.eq(m.id))
        .filter(license_seat::Column::AssignmentId.is_null())
        .filter(license_seat::Column::StartedOn.is_not_null())
        .filter(license_seat::Column::Ended.eq(false));
    if let Some(ends_on) = ends_on {
        pick = pick.filter(license_seat::Column::EndsOn.eq(ends_on));
    }
    let pick = pick
        .order_by_desc(license_seat::Column::EndsOn)
        .order_by_asc(license_seat::Column::Id)
        .limit(n as u64)
        .into_query();
    Ok(license_seat::Entity::update_many()
        .col_expr(
            license_seat::Column::AssignmentId,
            Expr::value(Some(assignment_id)),
        )
        .filter(license_seat::Column::Id.in_subquery(pick))
        .filter(license_seat::Column::AssignmentId.is_null())
        .exec(conn)
        .await?
        .rows_affected as i64)
}

async fn reusable_end_dates<C: ConnectionTrait>(
    conn: &C,
    m: &license::Model,
) -> StoreResult<Vec<NaiveDate>> {
    Ok(license_seat::Entity::find()
        .select_only()
        .column(license_seat::Column::EndsOn)
        .filter(license_seat::Column::LicenseId.eq(m.id))
        .filter(license_seat::Column::AssignmentId.is_null())
        .filter(license_seat::Column::StartedOn.is_not_null())
        .filter(license_seat::Column::Ended.eq(false))
        .distinct()
        .order_by_asc(license_seat::Column::EndsOn)
        .into_tuple::<NaiveDate>()
        .all(conn)
        .await?)
}
