//! Checking a license in from one or many assignments at once (bulk checkin): the seats return
//! to the stock and the available quantity updates. All or nothing.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::assignments::{AssignmentView, assignment_view, seat_dates};
use super::{
    Assignee, AssignmentIds, LicenseView, Notes, counts, lock, record, reload, settle, today,
    view_of,
};
use crate::db::Db;
use crate::entities::{license, license_assignment, license_seat};
use crate::error::{Refusal, StoreError, StoreResult};

/// A checkin, already validated.
#[derive(Debug, Clone)]
pub struct Checkin {
    pub assignment_ids: AssignmentIds,
    pub notes: Option<Notes>,
}

/// What a checkin did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckinOutcome {
    /// The assignments checked in, as they were checked in.
    pub checked_in: Vec<AssignmentView>,
    /// The license with its updated counts.
    pub license: LicenseView,
}

/// Check in every named assignment of the license, or none: a license that is not reassignable
/// → 409 `not_reassignable`; an id that is not an assignment of this license → 404; an
/// assignment already checked in → 409 `already_checked_in`.
pub async fn checkin(
    db: &Db,
    tenant_id: Uuid,
    license_id: Uuid,
    req: Checkin,
    actor: Option<Uuid>,
) -> StoreResult<CheckinOutcome> {
    let txn = crate::db::begin(db).await?;
    let notes = req.notes.map(Notes::into_inner);
    let (checked_in, license) = checkin_in(
        &txn,
        tenant_id,
        license_id,
        Which::Ids(req.assignment_ids.as_slice()),
        notes,
        actor,
        (today(), Utc::now()),
    )
    .await?;
    txn.commit().await?;
    Ok(CheckinOutcome {
        checked_in,
        license,
    })
}

/// "1 of the assignments is" / "3 of the assignments are", for a refusal's detail.
fn of_the_assignments(n: usize) -> String {
    if n == 1 {
        "1 of the assignments is".to_owned()
    } else {
        format!("{n} of the assignments are")
    }
}

/// The ids a refusal names, at most five of them (all are in its `unknown_ids` or
/// `assignment_ids`).
fn listed(ids: &[Uuid]) -> String {
    let mut shown: Vec<String> = ids.iter().take(5).map(Uuid::to_string).collect();
    if ids.len() > 5 {
        shown.push(format!("and {} more", ids.len() - 5));
    }
    shown.join(", ")
}

/// Which assignments of a license a checkin takes back.
pub(crate) enum Which<'a> {
    /// These, each of which must be an open assignment of the license.
    Ids(&'a [Uuid]),
    /// Every open assignment of the license held by this user or asset (none is fine).
    HeldBy(&'a Assignee),
}

/// Check in, inside the caller's transaction, and write one audit entry for the license. `at`
/// is today and now. Returns the assignments as checked in and the license's new counts.
pub(crate) async fn checkin_in<C: ConnectionTrait>(
    txn: &C,
    tenant_id: Uuid,
    license_id: Uuid,
    which: Which<'_>,
    notes: Option<String>,
    actor: Option<Uuid>,
    at: (NaiveDate, DateTime<Utc>),
) -> StoreResult<(Vec<AssignmentView>, LicenseView)> {
    let (today, now) = at;
    let m = lock(txn, tenant_id, license_id).await?;
    if !m.reassignable {
        return Err(StoreError::conflict(
            "not_reassignable",
            format!("{} is not reassignable, so it cannot be checked in", m.name),
        )
        .with_extra(json!({ "license_id": m.id, "license_name": m.name })));
    }
    let m = settle::settle(txn, m, today).await?;
    let before = counts(txn, &m).await?;

    let held_by = match which {
        Which::HeldBy(a) => Some(a),
        Which::Ids(_) => None,
    };
    let named: Vec<license_assignment::Model> = match which {
        Which::Ids(ids) => {
            license_assignment::Entity::find()
                .filter(license_assignment::Column::Id.is_in(ids.iter().copied()))
                .filter(license_assignment::Column::LicenseId.eq(m.id))
                .filter(license_assignment::Column::TenantId.eq(tenant_id))
                .all(txn)
                .await?
        }
        Which::HeldBy(a) => {
            license_assignment::Entity::find()
                .filter(license_assignment::Column::LicenseId.eq(m.id))
                .filter(license_assignment::Column::TenantId.eq(tenant_id))
                .filter(license_assignment::Column::AssigneeType.eq(a.kind.as_str()))
                .filter(license_assignment::Column::AssigneeId.eq(a.id.as_str()))
                .filter(license_assignment::Column::CheckedInAt.is_null())
                .all(txn)
                .await?
        }
    };
    let held_ids: Vec<Uuid> = named.iter().map(|a| a.id).collect();
    let ids: &[Uuid] = match which {
        Which::Ids(ids) => ids,
        Which::HeldBy(_) => &held_ids,
    };
    if ids.is_empty() {
        let license = view_of(txn, &m).await?;
        return Ok((Vec::new(), license));
    }
    if named.len() < ids.len() {
        let unknown: Vec<Uuid> = ids
            .iter()
            .filter(|id| !named.iter().any(|a| a.id == **id))
            .copied()
            .collect();
        return Err(StoreError::refused(
            Refusal::NotFound,
            "not_found",
            format!(
                "{} not {} of this license ({}); nothing was checked in",
                of_the_assignments(unknown.len()),
                if unknown.len() == 1 {
                    "an assignment"
                } else {
                    "assignments"
                },
                listed(&unknown)
            ),
        )
        .with_extra(json!({ "unknown_ids": unknown })));
    }
    let done: Vec<Uuid> = named
        .iter()
        .filter(|a| a.checked_in_at.is_some())
        .map(|a| a.id)
        .collect();
    if !done.is_empty() {
        return Err(StoreError::conflict(
            "already_checked_in",
            format!(
                "{} checked in already ({}); nothing was checked in",
                of_the_assignments(done.len()),
                listed(&done)
            ),
        )
        .with_extra(json!({ "assignment_ids": done })));
    }

    let closed = license_assignment::Entity::update_many()
        .col_expr(license_assignment::Column::CheckedInAt, Expr::value(now))
        .col_expr(license_assignment::Column::CheckedInBy, Expr::value(actor))
        .col_expr(
            license_assignment::Column::CheckinNotes,
            Expr::value(notes.clone()),
        )
        .filter(license_assignment::Column::Id.is_in(ids.iter().copied()))
        .filter(license_assignment::Column::LicenseId.eq(m.id))
        .filter(license_assignment::Column::CheckedInAt.is_null())
        .exec(txn)
        .await?;
    if closed.rows_affected != ids.len() as u64 {
        return Err(StoreError::conflict(
            "already_checked_in",
            "some of the assignments were checked in meanwhile; nothing was checked in",
        ));
    }
    let returned: i64 = named.iter().map(|a| a.quantity).sum();
    let dates = if m.term_days.is_some() {
        seat_dates(txn, ids).await?
    } else {
        Default::default()
    };
    // Seats return to the stock; started seats with time left become reusable.
    license::Entity::update_many()
        .col_expr(
            license::Column::Assigned,
            Expr::col(license::Column::Assigned).sub(returned),
        )
        .filter(license::Column::Id.eq(m.id))
        .exec(txn)
        .await?;
    if m.term_days.is_some() {
        license_seat::Entity::update_many()
            .col_expr(
                license_seat::Column::AssignmentId,
                Expr::value(Option::<Uuid>::None),
            )
            .filter(license_seat::Column::LicenseId.eq(m.id))
            .filter(license_seat::Column::AssignmentId.is_in(ids.iter().copied()))
            .exec(txn)
            .await?;
    }

    let m = reload(txn, m.id).await?;
    let after = counts(txn, &m).await?;
    let mut after_json = json!({
        "assignment_ids": ids,
        "seats_returned": returned,
        "notes": notes,
        "counts": after.json(),
    });
    if let Some(a) = held_by {
        after_json["held_by"] = json!({ "type": a.kind, "id": a.id });
    }
    record(
        txn,
        &m,
        actor,
        "license.checkin",
        Some(json!({ "counts": before.json() })),
        Some(after_json),
    )
    .await?;
    let license = view_of(txn, &m).await?;
    let checked_in = named
        .into_iter()
        .map(|mut a| {
            a.checked_in_at = Some(now);
            a.checked_in_by = actor;
            a.checkin_notes = notes.clone();
            assignment_view(a, &dates)
        })
        .collect();
    Ok((checked_in, license))
}
