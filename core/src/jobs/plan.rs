//! What to do for one member, decided from the job's request and what the directory said about
//! the member: the snapshot taken when the job expanded, or a fresh read. A write is decided
//! from either (the directory refuses what no longer fits, and the answer is recorded); a claim
//! about the member's state without a write — "skipped, already in the desired state", or a
//! failure decided here — only from a fresh read.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::notes;
use super::request::{JobSpec, LicenseToAdd, ParsedRequest, UsageLocation};
use crate::directory::{AssignedLicense, ItemCode, LicenseAssignmentState, User};

/// What the directory said about a member: stored on the item at expansion, or after a read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
    #[serde(default)]
    pub licenses: Vec<LicenseAssignmentState>,
}

impl Snapshot {
    pub fn of(user: &User) -> Snapshot {
        Snapshot {
            usage_location: user.usage_location.clone().filter(|l| !l.is_empty()),
            licenses: user.license_states(),
        }
    }

    pub(crate) fn direct(&self, sku: Uuid) -> Option<&LicenseAssignmentState> {
        self.licenses
            .iter()
            .find(|l| l.sku_id == sku && l.assigned_by_group.is_none())
    }

    pub(crate) fn inherited_from(&self, sku: Uuid) -> Option<&str> {
        self.licenses
            .iter()
            .find(|l| l.sku_id == sku && l.assigned_by_group.is_some())
            .and_then(|l| l.assigned_by_group.as_deref())
    }

    fn holds_directly_as(&self, want: &LicenseToAdd) -> bool {
        self.direct(want.sku_id.uuid()).is_some_and(|l| {
            l.disabled_plans.iter().collect::<BTreeSet<_>>()
                == want.disabled_plans.iter().collect::<BTreeSet<_>>()
        })
    }

    /// The licenses held directly (what `assignLicense` changes), in a canonical order: by SKU
    /// id, disabled plans sorted.
    pub fn direct_licenses(&self) -> Vec<AssignedLicense> {
        canonical(
            self.licenses
                .iter()
                .filter(|l| l.assigned_by_group.is_none())
                .map(|l| AssignedLicense {
                    sku_id: l.sku_id,
                    disabled_plans: l.disabled_plans.clone(),
                })
                .collect(),
        )
    }

    /// Whether a write of `add` and `remove` shows in this state: every added license held
    /// directly with exactly its disabled plans, no removed one held directly.
    pub fn shows(&self, add: &[AssignedLicense], remove: &[Uuid]) -> bool {
        crate::directory::write_shows(&self.direct_licenses(), add, remove)
    }
}

/// Licenses in canonical order (by SKU id, disabled plans sorted, one entry per SKU).
pub fn canonical(mut licenses: Vec<AssignedLicense>) -> Vec<AssignedLicense> {
    for l in &mut licenses {
        l.disabled_plans.sort();
        l.disabled_plans.dedup();
    }
    licenses.sort_by_key(|a| a.sku_id);
    licenses.dedup_by(|a, b| a.sku_id == b.sku_id);
    licenses
}

/// The direct licenses after a successful `assignLicense` of `add` and `remove` on `before`.
pub fn apply(
    before: &[AssignedLicense],
    add: &[AssignedLicense],
    remove: &[Uuid],
) -> Vec<AssignedLicense> {
    let mut after: Vec<AssignedLicense> = before
        .iter()
        .filter(|l| !remove.contains(&l.sku_id) && !add.iter().any(|a| a.sku_id == l.sku_id))
        .cloned()
        .collect();
    after.extend(add.iter().cloned());
    canonical(after)
}

/// One entry of a job's change ledger: a member's direct licenses before and after the job's
/// write (SKU ids with disabled plans), and — when the job verifies — whether a read after the
/// write found what was written (`true`: verified, `false`: drifted). A member whose usage
/// location the job set has it in `usage_location`, also when its license write then failed
/// (its licenses are then unchanged: `before` = `after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub before: Vec<AssignedLicense>,
    pub after: Vec<AssignedLicense>,
    #[serde(default)]
    pub verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<LocationChange>,
}

/// A usage location licensor set for a member before writing its licenses: Graph assigns a
/// license only to a user with a usage location
/// (<https://learn.microsoft.com/graph/api/user-assignlicense>), so a member with none is given
/// the job's `usage_location` first. An undo leaves it set: every license the member holds,
/// including those through groups, needs one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocationChange {
    /// The member's usage location before (ISO 3166-1 alpha-2; `null`: none).
    pub before: Option<String>,
    /// The usage location the job set.
    pub after: String,
}

impl LocationChange {
    /// `location` given to a member that had none (the only location a job sets).
    pub fn given(location: &str) -> LocationChange {
        LocationChange {
            before: None,
            after: location.to_owned(),
        }
    }
}

/// What an undo job does for one member: restore `restore` only while the member's direct
/// licenses still equal `expect` (the undone job's "after").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoTarget {
    pub expect: Vec<AssignedLicense>,
    pub restore: Vec<AssignedLicense>,
}

/// The decision for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Already in the desired state; nothing to write.
    Skip(String),
    /// Cannot succeed; nothing written.
    Fail(ItemCode, String),
    /// One `assignLicense` call (adds and removes together, atomic for the member), after
    /// setting the usage location when `set_location` is given.
    Write {
        set_location: Option<UsageLocation>,
        add: Vec<AssignedLicense>,
        remove: Vec<Uuid>,
        note: Option<String>,
    },
    /// Left alone on purpose, with an item code saying why (e.g. `changed_since`).
    Leave(&'static str, String),
    /// The member's current licenses must be read first.
    Read,
}

fn to_add(licenses: &[LicenseToAdd]) -> Vec<AssignedLicense> {
    licenses
        .iter()
        .map(|l| AssignedLicense {
            sku_id: l.sku_id.uuid(),
            disabled_plans: l.disabled_plans.clone(),
        })
        .collect()
}

/// Decide for a member whose state is `snapshot` (`None`: unknown — on a rerun, a resumed job
/// or an expiry removal). `fresh` says the snapshot was read in this step; a decision that
/// writes nothing is only made from a fresh one, otherwise the member is read first.
pub fn decide(req: &ParsedRequest, snapshot: Option<&Snapshot>, fresh: bool) -> Decision {
    if let JobSpec::Export { .. } = req.spec {
        return Decision::Skip(notes::EXPORT_WRITES_NOTHING.into());
    }
    let Some(snap) = snapshot else {
        return Decision::Read;
    };
    match decide_from(req, snap) {
        Decision::Skip(_) | Decision::Fail(..) if !fresh => Decision::Read,
        d => d,
    }
}

/// Decide for an undo item: restore the member's licenses before the undone job, only where
/// they still are what that job left.
pub fn decide_undo(target: &UndoTarget, snapshot: Option<&Snapshot>, fresh: bool) -> Decision {
    let Some(snap) = snapshot.filter(|_| fresh) else {
        return Decision::Read;
    };
    let current = snap.direct_licenses();
    let restore = canonical(target.restore.clone());
    if current == restore {
        return Decision::Skip(notes::ALREADY_RESTORED.into());
    }
    if current != canonical(target.expect.clone()) {
        return Decision::Leave(
            "changed_since",
            "the member's licenses changed after the job; left as they are".into(),
        );
    }
    let add: Vec<AssignedLicense> = restore
        .iter()
        .filter(|l| !current.contains(l))
        .cloned()
        .collect();
    let remove: Vec<Uuid> = current
        .iter()
        .filter(|l| !restore.iter().any(|r| r.sku_id == l.sku_id))
        .map(|l| l.sku_id)
        .collect();
    Decision::Write {
        set_location: None,
        add,
        remove,
        note: Some(notes::RESTORED.into()),
    }
}

fn decide_from(req: &ParsedRequest, snap: &Snapshot) -> Decision {
    let adds: Vec<LicenseToAdd> = req
        .add_licenses()
        .iter()
        .filter(|l| !snap.holds_directly_as(l))
        .cloned()
        .collect();
    // Licenses to remove that the member holds directly, those it only inherits, and those it
    // does not hold at all.
    let mut gone: Vec<String> = Vec::new();
    let (remove, inherited): (Vec<Uuid>, Vec<(Uuid, String)>) = match &req.spec {
        JobSpec::Replace {
            add,
            replace_all: true,
            ..
        } => {
            let keep: BTreeSet<Uuid> = add.iter().map(|l| l.sku_id.uuid()).collect();
            let mut direct: Vec<Uuid> = snap
                .licenses
                .iter()
                .filter(|l| l.assigned_by_group.is_none() && !keep.contains(&l.sku_id))
                .map(|l| l.sku_id)
                .collect();
            direct.dedup();
            let inherited = snap
                .licenses
                .iter()
                .filter(|l| !keep.contains(&l.sku_id))
                .filter_map(|l| l.assigned_by_group.clone().map(|g| (l.sku_id, g)))
                .collect();
            (direct, inherited)
        }
        JobSpec::Remove { remove } | JobSpec::Replace { remove, .. } => {
            let mut direct = Vec::new();
            let mut inherited = Vec::new();
            for sku in remove.iter().map(|s| s.uuid()) {
                if snap.direct(sku).is_some() {
                    direct.push(sku);
                } else if let Some(g) = snap.inherited_from(sku) {
                    inherited.push((sku, g.to_owned()));
                } else {
                    gone.push(sku.to_string());
                }
            }
            (direct, inherited)
        }
        JobSpec::Assign { .. } | JobSpec::Export { .. } => (Vec::new(), Vec::new()),
    };
    // A remove, or a replace of named licenses: what to say when the member holds none of them.
    let none_held = match &req.spec {
        JobSpec::Remove { .. } => Some("the member holds none of the licenses to remove"),
        JobSpec::Replace {
            replace_all: false, ..
        } => Some("the member holds none of the licenses to replace"),
        _ => None,
    };
    let inherited_note = (!inherited.is_empty()).then(|| {
        let list: Vec<String> = inherited
            .iter()
            .map(|(sku, g)| format!("{sku} (from group {g})"))
            .collect();
        format!("left in place, inherited from a group: {}", list.join(", "))
    });
    let gone_note = (!gone.is_empty() && !remove.is_empty())
        .then(|| format!("already not held: {}", gone.join(", ")));
    let write_note = match (inherited_note.clone(), gone_note) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    match none_held {
        Some(none_held) if remove.is_empty() => {
            if let Some(note) = inherited_note {
                Decision::Fail(
                    ItemCode::InheritedFromGroup,
                    format!("the member holds these licenses only through a group; {note}"),
                )
            } else {
                Decision::Skip(none_held.into())
            }
        }
        _ if adds.is_empty() && remove.is_empty() => {
            Decision::Skip(inherited_note.unwrap_or_else(|| notes::ALREADY_HELD.into()))
        }
        _ => {
            let mut set_location = None;
            if !adds.is_empty() && snap.usage_location.is_none() {
                match req.usage_location() {
                    Some(loc) => set_location = Some(loc.clone()),
                    None => {
                        return Decision::Fail(
                            ItemCode::UsageLocationMissing,
                            "the user has no usage location; choose one when assigning".into(),
                        );
                    }
                }
            }
            Decision::Write {
                set_location,
                add: to_add(&adds),
                remove,
                note: write_note,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
    const E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
    /// The group members inherit licenses from, in tests.
    pub(crate) const G: &str = "8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01";

    pub(crate) fn req(v: serde_json::Value) -> ParsedRequest {
        serde_json::from_value::<super::super::JobRequest>(v)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A member with usage location `loc`, holding the SKUs `direct` directly and `inherited`
    /// through group [`G`].
    pub(crate) fn snap(loc: Option<&str>, direct: &[&str], inherited: &[&str]) -> Snapshot {
        let mut licenses: Vec<LicenseAssignmentState> = direct
            .iter()
            .map(|s| LicenseAssignmentState {
                sku_id: s.parse().unwrap(),
                assigned_by_group: None,
                disabled_plans: vec![],
            })
            .collect();
        licenses.extend(inherited.iter().map(|s| LicenseAssignmentState {
            sku_id: s.parse().unwrap(),
            assigned_by_group: Some(G.into()),
            disabled_plans: vec![],
        }));
        Snapshot {
            usage_location: loc.map(Into::into),
            licenses,
        }
    }

    #[test]
    fn assign_skips_holders_and_needs_a_location() {
        let r = req(json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E5}]}));
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[E5], &[])), true),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide(&r, Some(&snap(None, &[], &[])), true),
            Decision::Fail(ItemCode::UsageLocationMissing, _)
        ));
        // Inherited only: a direct assignment is still made.
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[E5])), true),
            Decision::Write { .. }
        ));
        let with_loc = req(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E5}],"usage_location":"NO"}),
        );
        match decide(&with_loc, Some(&snap(None, &[], &[])), true) {
            Decision::Write { set_location, .. } => assert_eq!(set_location.as_deref(), Some("NO")),
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(&r, None, true), Decision::Read);
        // A skip is never decided from a snapshot that was not read in this step.
        assert_eq!(
            decide(&r, Some(&snap(Some("SE"), &[E5], &[])), false),
            Decision::Read
        );
    }

    #[test]
    fn remove_leaves_inherited_licenses() {
        let r = req(json!({"kind":"remove","groups":[G],"remove_licenses":[E3]}));
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[E3])), true),
            Decision::Fail(ItemCode::InheritedFromGroup, _)
        ));
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[])), true),
            Decision::Skip(_)
        ));
        match decide(&r, Some(&snap(None, &[E3], &[])), true) {
            Decision::Write {
                add,
                remove,
                set_location,
                ..
            } => {
                assert!(add.is_empty() && set_location.is_none());
                assert_eq!(remove, vec![E3.parse::<Uuid>().unwrap()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replace_is_one_call_and_replace_all_takes_direct_licenses_only() {
        let r = req(
            json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":E5}],"remove_licenses":[E3]}),
        );
        match decide(&r, Some(&snap(Some("SE"), &[E3], &[])), true) {
            Decision::Write { add, remove, .. } => {
                assert_eq!(add.len(), 1);
                assert_eq!(remove.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[])), true),
            Decision::Skip(_)
        ));
        let all = req(
            json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":E5}],"replace_all":true}),
        );
        match decide(&all, Some(&snap(Some("SE"), &[E3], &[E3])), true) {
            Decision::Write {
                add, remove, note, ..
            } => {
                assert_eq!(add.len(), 1);
                assert_eq!(remove, vec![E3.parse::<Uuid>().unwrap()]);
                assert!(note.unwrap().contains("inherited"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(&all, None, true), Decision::Read);
        assert!(matches!(
            decide(&all, Some(&snap(Some("SE"), &[E5], &[])), true),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn a_replace_writes_only_the_difference_and_names_what_was_already_gone() {
        const X: &str = "4b9405b0-7788-4568-add1-99614e613b69";
        let r = req(
            json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":E5}],"remove_licenses":[E3, X]}),
        );
        match decide(&r, Some(&snap(Some("SE"), &[E3], &[])), false) {
            Decision::Write {
                add, remove, note, ..
            } => {
                assert_eq!(add.len(), 1);
                assert_eq!(remove, vec![E3.parse::<Uuid>().unwrap()]);
                assert!(note.unwrap().contains(X));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn undo_restores_only_what_the_job_left() {
        let lic = |s: &str| AssignedLicense {
            sku_id: s.parse().unwrap(),
            disabled_plans: vec![],
        };
        let t = UndoTarget {
            expect: vec![lic(E3), lic(E5)],
            restore: vec![lic(E3)],
        };
        assert_eq!(decide_undo(&t, None, true), Decision::Read);
        match decide_undo(&t, Some(&snap(Some("SE"), &[E3, E5], &[])), true) {
            Decision::Write { add, remove, .. } => {
                assert!(add.is_empty());
                assert_eq!(remove, vec![E5.parse::<Uuid>().unwrap()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide_undo(&t, Some(&snap(Some("SE"), &[E5], &[])), true),
            Decision::Leave("changed_since", _)
        ));
        assert!(matches!(
            decide_undo(&t, Some(&snap(Some("SE"), &[E3], &[])), true),
            Decision::Skip(_)
        ));
        let before = vec![lic(E3)];
        assert_eq!(
            apply(&before, &[lic(E5)], &[E3.parse().unwrap()]),
            vec![lic(E5)]
        );
    }
}
