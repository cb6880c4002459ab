//! Assignments: the "Used By" list of a license — the users and assets it is checked out to.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use super::{Assignee, AssigneeType, find};
use crate::db::Db;
use crate::entities::{license_assignment, license_seat};
use crate::error::StoreResult;
use crate::page::{Page, PageRequest};

/// One checkout of a license to a user or an asset.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssignmentView {
    pub id: Uuid,
    pub license_id: Uuid,
    pub assignee: Assignee,
    /// Seats the assignment holds.
    pub quantity: i64,
    /// Notes given at checkout.
    pub notes: Option<String>,
    pub checked_out_at: chrono::DateTime<Utc>,
    /// The API token that checked it out.
    pub checked_out_by: Option<Uuid>,
    /// Term licenses: the day the assignment's seats started (the earliest of them).
    pub started_on: Option<NaiveDate>,
    /// Term licenses: the day the assignment's seats end (the earliest of them).
    pub ends_on: Option<NaiveDate>,
    /// Set once checked in (or once every seat's term has ended).
    pub checked_in_at: Option<chrono::DateTime<Utc>>,
    pub checked_in_by: Option<Uuid>,
    /// Notes given at checkin.
    pub checkin_notes: Option<String>,
}

pub(crate) type SeatDates = HashMap<Uuid, (Option<NaiveDate>, Option<NaiveDate>)>;

pub(crate) fn assignment_view(m: license_assignment::Model, dates: &SeatDates) -> AssignmentView {
    let (started_on, ends_on) = dates.get(&m.id).copied().unwrap_or((None, None));
    AssignmentView {
        id: m.id,
        license_id: m.license_id,
        assignee: Assignee {
            kind: m.assignee_type.parse().unwrap_or(AssigneeType::User),
            id: m.assignee_id,
            name: m.assignee_name,
        },
        quantity: m.quantity,
        notes: m.notes,
        checked_out_at: m.checked_out_at,
        checked_out_by: m.checked_out_by,
        started_on,
        ends_on,
        checked_in_at: m.checked_in_at,
        checked_in_by: m.checked_in_by,
        checkin_notes: m.checkin_notes,
    }
}

/// Start and end of the seats each assignment holds (the earliest of each).
pub(crate) async fn seat_dates<C: ConnectionTrait>(
    conn: &C,
    assignment_ids: &[Uuid],
) -> StoreResult<SeatDates> {
    if assignment_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<license_seat::Model> = license_seat::Entity::find()
        .filter(license_seat::Column::AssignmentId.is_in(assignment_ids.iter().copied()))
        .all(conn)
        .await?;
    let mut dates: SeatDates = HashMap::new();
    for seat in rows {
        let Some(id) = seat.assignment_id else {
            continue;
        };
        let entry = dates.entry(id).or_insert((seat.started_on, seat.ends_on));
        entry.0 = min_date(entry.0, seat.started_on);
        entry.1 = min_date(entry.1, seat.ends_on);
    }
    Ok(dates)
}

fn min_date(a: Option<NaiveDate>, b: Option<NaiveDate>) -> Option<NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which assignments to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentState {
    /// Currently checked out: the "Used By" list.
    #[default]
    CheckedOut,
    /// Checked in: the history.
    CheckedIn,
    All,
}

/// The license's assignments, newest first.
pub async fn list_assignments(
    db: &Db,
    tenant_id: Uuid,
    license_id: Uuid,
    state: AssignmentState,
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<AssignmentView>> {
    let license = find(db, tenant_id, license_id).await?;
    let mut q = license_assignment::Entity::find()
        .filter(license_assignment::Column::TenantId.eq(tenant_id))
        .filter(license_assignment::Column::LicenseId.eq(license.id));
    q = match state {
        AssignmentState::CheckedOut => q.filter(license_assignment::Column::CheckedInAt.is_null()),
        AssignmentState::CheckedIn => {
            q.filter(license_assignment::Column::CheckedInAt.is_not_null())
        }
        AssignmentState::All => q,
    };
    if let Some(after) = page.after {
        q = q.filter(license_assignment::Column::Id.lt(after));
    }
    let rows = q
        .order_by_desc(license_assignment::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.id);
    let dates = if license.term_days.is_some() {
        let ids: Vec<Uuid> = page.data.iter().map(|a| a.id).collect();
        seat_dates(db, &ids).await?
    } else {
        HashMap::new()
    };
    Ok(page.map(|a| assignment_view(a, &dates)))
}

/// One assignment of the tenant's license `license_id` — checked out or checked in — with its
/// seats' start and end dates for a term license. An assignment of another license or tenant,
/// or none, → [`crate::error::StoreError::NotFound`] (`"assignment"`).
pub async fn get_assignment(
    db: &Db,
    tenant_id: Uuid,
    license_id: Uuid,
    assignment_id: Uuid,
) -> StoreResult<AssignmentView> {
    let license = find(db, tenant_id, license_id).await?;
    let m = license_assignment::Entity::find_by_id(assignment_id)
        .filter(license_assignment::Column::TenantId.eq(tenant_id))
        .filter(license_assignment::Column::LicenseId.eq(license.id))
        .one(db)
        .await?
        .ok_or(crate::error::StoreError::NotFound("assignment"))?;
    let dates = if license.term_days.is_some() {
        seat_dates(db, &[m.id]).await?
    } else {
        HashMap::new()
    };
    Ok(assignment_view(m, &dates))
}
