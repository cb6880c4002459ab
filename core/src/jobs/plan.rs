//! What to do for one member, decided from the job's request and what the directory said about
//! the member when the job expanded (its snapshot) — so a member already in the desired state
//! costs no write, and a member that cannot succeed fails with the right code without one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::request::{JobRequest, LicenseToAdd};
use crate::directory::{AssignedLicense, ItemCode, LicenseAssignmentState, User};
use crate::domain::JobKind;

/// What the directory said about a member: stored on the item at expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
    #[serde(default)]
    pub licenses: Vec<LicenseAssignmentState>,
}

impl Snapshot {
    pub fn of(user: &User) -> Snapshot {
        let mut licenses = user.license_assignment_states.clone();
        // A directory that reports only `assignedLicenses` gives no group information: treat
        // those licenses as held directly.
        for l in &user.assigned_licenses {
            if !licenses.iter().any(|s| s.sku_id == l.sku_id) {
                licenses.push(LicenseAssignmentState {
                    sku_id: l.sku_id,
                    assigned_by_group: None,
                    disabled_plans: l.disabled_plans.clone(),
                });
            }
        }
        Snapshot {
            usage_location: user.usage_location.clone().filter(|l| !l.is_empty()),
            licenses,
        }
    }

    fn direct(&self, sku: Uuid) -> Option<&LicenseAssignmentState> {
        self.licenses
            .iter()
            .find(|l| l.sku_id == sku && l.assigned_by_group.is_none())
    }

    fn inherited_from(&self, sku: Uuid) -> Option<&str> {
        self.licenses
            .iter()
            .find(|l| l.sku_id == sku && l.assigned_by_group.is_some())
            .and_then(|l| l.assigned_by_group.as_deref())
    }

    fn holds_directly_as(&self, want: &LicenseToAdd) -> bool {
        self.direct(want.sku_id).is_some_and(|l| {
            l.disabled_plans.iter().collect::<BTreeSet<_>>()
                == want.disabled_plans.iter().collect::<BTreeSet<_>>()
        })
    }
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
        set_location: Option<String>,
        add: Vec<AssignedLicense>,
        remove: Vec<Uuid>,
        note: Option<String>,
    },
    /// The member's current licenses must be read first.
    Read,
}

fn to_add(licenses: &[LicenseToAdd]) -> Vec<AssignedLicense> {
    licenses
        .iter()
        .map(|l| AssignedLicense {
            sku_id: l.sku_id,
            disabled_plans: l.disabled_plans.clone(),
        })
        .collect()
}

/// Decide for a member whose snapshot is `snapshot` (`None`: unknown, e.g. on a rerun or for a
/// removal of a temporary assignment — then write and let the directory's answer decide).
pub fn decide(req: &JobRequest, snapshot: Option<&Snapshot>) -> Decision {
    let Some(snap) = snapshot else {
        return match req.kind {
            JobKind::Assign => Decision::Write {
                set_location: None,
                add: to_add(&req.add_licenses),
                remove: Vec::new(),
                note: None,
            },
            JobKind::Remove => Decision::Write {
                set_location: None,
                add: Vec::new(),
                remove: req.remove_licenses.clone(),
                note: None,
            },
            JobKind::Replace if req.replace_all => Decision::Read,
            JobKind::Replace => Decision::Write {
                set_location: None,
                add: to_add(&req.add_licenses),
                remove: req.remove_licenses.clone(),
                note: None,
            },
            JobKind::Export => Decision::Skip("nothing to write for an export".into()),
        };
    };
    let adds: Vec<LicenseToAdd> = req
        .add_licenses
        .iter()
        .filter(|l| !snap.holds_directly_as(l))
        .cloned()
        .collect();
    // Licenses to remove that the member holds directly, and those it only inherits.
    let (remove, inherited): (Vec<Uuid>, Vec<(Uuid, String)>) = match req.kind {
        JobKind::Replace if req.replace_all => {
            let keep: BTreeSet<Uuid> = req.add_licenses.iter().map(|l| l.sku_id).collect();
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
        JobKind::Remove | JobKind::Replace => {
            let mut direct = Vec::new();
            let mut inherited = Vec::new();
            for sku in &req.remove_licenses {
                if snap.direct(*sku).is_some() {
                    direct.push(*sku);
                } else if let Some(g) = snap.inherited_from(*sku) {
                    inherited.push((*sku, g.to_owned()));
                }
            }
            (direct, inherited)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let inherited_note = (!inherited.is_empty()).then(|| {
        let list: Vec<String> = inherited
            .iter()
            .map(|(sku, g)| format!("{sku} (from group {g})"))
            .collect();
        format!("left in place, inherited from a group: {}", list.join(", "))
    });
    match req.kind {
        JobKind::Export => Decision::Skip("nothing to write for an export".into()),
        JobKind::Remove | JobKind::Replace if !req.replace_all && remove.is_empty() => {
            if let Some(note) = inherited_note {
                Decision::Fail(
                    ItemCode::InheritedFromGroup,
                    format!("the member holds these licenses only through a group; {note}"),
                )
            } else if req.kind == JobKind::Remove {
                Decision::Skip("the member holds none of the licenses to remove".into())
            } else {
                Decision::Skip("the member holds none of the licenses to replace".into())
            }
        }
        _ if adds.is_empty() && remove.is_empty() => Decision::Skip(
            inherited_note.unwrap_or_else(|| "the member already holds the licenses".into()),
        ),
        _ => {
            let mut set_location = None;
            if !adds.is_empty() && snap.usage_location.is_none() {
                match &req.usage_location {
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
                note: inherited_note,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
    const E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
    const G: &str = "8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01";

    fn req(v: serde_json::Value) -> JobRequest {
        serde_json::from_value::<JobRequest>(v)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn snap(loc: Option<&str>, direct: &[&str], inherited: &[&str]) -> Snapshot {
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
            decide(&r, Some(&snap(Some("SE"), &[E5], &[]))),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide(&r, Some(&snap(None, &[], &[]))),
            Decision::Fail(ItemCode::UsageLocationMissing, _)
        ));
        // Inherited only: a direct assignment is still made.
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[E5]))),
            Decision::Write { .. }
        ));
        let with_loc = req(
            json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":E5}],"usage_location":"NO"}),
        );
        match decide(&with_loc, Some(&snap(None, &[], &[]))) {
            Decision::Write { set_location, .. } => assert_eq!(set_location.as_deref(), Some("NO")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide(&r, None), Decision::Write { .. }));
    }

    #[test]
    fn remove_leaves_inherited_licenses() {
        let r = req(json!({"kind":"remove","groups":[G],"remove_licenses":[E3]}));
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[E3]))),
            Decision::Fail(ItemCode::InheritedFromGroup, _)
        ));
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[]))),
            Decision::Skip(_)
        ));
        match decide(&r, Some(&snap(None, &[E3], &[]))) {
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
        match decide(&r, Some(&snap(Some("SE"), &[E3], &[]))) {
            Decision::Write { add, remove, .. } => {
                assert_eq!(add.len(), 1);
                assert_eq!(remove.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&r, Some(&snap(Some("SE"), &[], &[]))),
            Decision::Skip(_)
        ));
        let all = req(
            json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":E5}],"replace_all":true}),
        );
        match decide(&all, Some(&snap(Some("SE"), &[E3], &[E3]))) {
            Decision::Write {
                add, remove, note, ..
            } => {
                assert_eq!(add.len(), 1);
                assert_eq!(remove, vec![E3.parse::<Uuid>().unwrap()]);
                assert!(note.unwrap().contains("inherited"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(&all, None), Decision::Read);
        assert!(matches!(
            decide(&all, Some(&snap(Some("SE"), &[E5], &[]))),
            Decision::Skip(_)
        ));
    }
}
