//! Everything one user or asset holds across the tenant's licenses, and checking it all in at
//! once: what an asset manager does when an asset is retired or a person leaves.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::assignments::{AssignmentView, assignment_view, seat_dates};
use super::checkin::{Which, checkin_in};
use super::{Assignee, AssigneeType, LicenseView, Notes, today};
use crate::db::Db;
use crate::entities::{license, license_assignment};
use crate::error::{StoreError, StoreResult};
use crate::page::{Page, PageRequest};

/// An open assignment of one user or asset, with the license it is of.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeldAssignment {
    #[serde(flatten)]
    pub assignment: AssignmentView,
    /// The license's name.
    pub license_name: String,
    /// Whether the license can be checked in (and its seats handed to someone else).
    pub reassignable: bool,
}

/// What checking in everything one user or asset holds did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HolderCheckinOutcome {
    /// The assignments checked in, as they were checked in.
    pub checked_in: Vec<AssignmentView>,
    /// Each license concerned, with its updated counts.
    pub licenses: Vec<LicenseView>,
}

/// The open assignments of `kind`/`id` on any of the tenant's licenses, newest first.
pub async fn list_held(
    db: &Db,
    tenant_id: Uuid,
    kind: AssigneeType,
    id: &str,
    page: &PageRequest<Uuid>,
) -> StoreResult<Page<HeldAssignment>> {
    let mut q = license_assignment::Entity::find()
        .filter(license_assignment::Column::TenantId.eq(tenant_id))
        .filter(license_assignment::Column::AssigneeType.eq(kind.as_str()))
        .filter(license_assignment::Column::AssigneeId.eq(id))
        .filter(license_assignment::Column::CheckedInAt.is_null());
    if let Some(after) = page.after {
        q = q.filter(license_assignment::Column::Id.lt(after));
    }
    let rows = q
        .order_by_desc(license_assignment::Column::Id)
        .limit(page.fetch())
        .all(db)
        .await?;
    let page = page.finish(rows, |r| r.id);
    let license_ids: Vec<Uuid> = page.data.iter().map(|a| a.license_id).collect();
    let licenses: HashMap<Uuid, license::Model> = if license_ids.is_empty() {
        HashMap::new()
    } else {
        license::Entity::find()
            .filter(license::Column::TenantId.eq(tenant_id))
            .filter(license::Column::Id.is_in(license_ids))
            .all(db)
            .await?
            .into_iter()
            .map(|l| (l.id, l))
            .collect()
    };
    let ids: Vec<Uuid> = page.data.iter().map(|a| a.id).collect();
    let dates = seat_dates(db, &ids).await?;
    Ok(page.map(|a| {
        let l = licenses.get(&a.license_id);
        HeldAssignment {
            license_name: l.map(|l| l.name.clone()).unwrap_or_default(),
            reassignable: l.is_some_and(|l| l.reassignable),
            assignment: assignment_view(a, &dates),
        }
    }))
}

/// Check in every open assignment `holder` has, on every license, or none: nothing held → 409
/// `nothing_checked_out`; any of the licenses not reassignable → 409 `not_reassignable` naming
/// them. One audit entry per license.
pub async fn checkin_held(
    db: &Db,
    tenant_id: Uuid,
    holder: &Assignee,
    notes: Option<Notes>,
    actor: Option<Uuid>,
) -> StoreResult<HolderCheckinOutcome> {
    let txn = crate::db::begin(db).await?;
    let held: Vec<(Uuid, Uuid)> = license_assignment::Entity::find()
        .select_only()
        .column(license_assignment::Column::Id)
        .column(license_assignment::Column::LicenseId)
        .filter(license_assignment::Column::TenantId.eq(tenant_id))
        .filter(license_assignment::Column::AssigneeType.eq(holder.kind.as_str()))
        .filter(license_assignment::Column::AssigneeId.eq(holder.id.as_str()))
        .filter(license_assignment::Column::CheckedInAt.is_null())
        .into_tuple()
        .all(&txn)
        .await?;
    if held.is_empty() {
        return Err(StoreError::conflict(
            "nothing_checked_out",
            format!(
                "no license is checked out to {} {}",
                holder.kind.as_str(),
                holder.id
            ),
        ));
    }
    // Licenses in a fixed order, so two such checkins never wait for each other crosswise.
    let mut by_license: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (_, license_id) in &held {
        *by_license.entry(*license_id).or_default() += 1;
    }
    let fixed: Vec<license::Model> = license::Entity::find()
        .filter(license::Column::TenantId.eq(tenant_id))
        .filter(license::Column::Id.is_in(by_license.keys().copied()))
        .filter(license::Column::Reassignable.eq(false))
        .all(&txn)
        .await?;
    if !fixed.is_empty() {
        let names: Vec<&str> = fixed.iter().map(|l| l.name.as_str()).collect();
        return Err(StoreError::conflict(
            "not_reassignable",
            format!(
                "not reassignable, so it cannot be checked in: {}; nothing was checked in",
                names.join(", ")
            ),
        )
        .with_extra(json!({
            "licenses": fixed.iter().map(|l| json!({ "id": l.id, "name": l.name })).collect::<Vec<_>>(),
        })));
    }
    let notes = notes.map(Notes::into_inner);
    let at = (today(), Utc::now());
    let mut checked_in = Vec::new();
    let mut licenses = Vec::new();
    for license_id in by_license.keys() {
        let (done, license) = checkin_in(
            &txn,
            tenant_id,
            *license_id,
            Which::HeldBy(holder),
            notes.clone(),
            actor,
            at,
        )
        .await?;
        checked_in.extend(done);
        licenses.push(license);
    }
    txn.commit().await?;
    Ok(HolderCheckinOutcome {
        checked_in,
        licenses,
    })
}
