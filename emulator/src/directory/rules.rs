//! License writes and the rules Microsoft Entra ID holds them to: seats never oversold, a usage
//! location before any license, inherited licenses not removed directly, mutually exclusive and
//! dependent service plans.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::model::{Directory, Held, Sku, now_ms, now_secs};
use crate::error::GraphError;

impl Sku {
    /// Reserve one seat; false when none is free.
    pub(super) fn reserve(&self) -> bool {
        self.consumed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < self.enabled.load(Ordering::Acquire)).then_some(c + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .consumed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
    }
}

impl Held {
    /// The SKU's plans disabled for the user (bit i = plan i): a plan is disabled only if every
    /// assignment path disables it, and a group assignment disables none.
    pub(super) fn disabled_mask(&self) -> u64 {
        if self.groups.is_empty() {
            self.direct.unwrap_or(0)
        } else {
            0
        }
    }
}

impl Directory {
    /// Apply one assignLicense call to user `u`, all or nothing. Returns whether anything changed.
    pub fn assign_license(
        &self,
        u: u32,
        add: &[(Uuid, Vec<Uuid>)],
        remove: &[Uuid],
    ) -> Result<bool, GraphError> {
        // Resolve SKUs and plans before touching the user.
        let mut adds: Vec<(u16, u64)> = Vec::with_capacity(add.len());
        for (sku_id, disabled) in add {
            let sku = self
                .sku_by_id(sku_id)
                .ok_or_else(|| GraphError::invalid_license(sku_id))?;
            let plans = &self.skus[sku as usize].plans;
            let mut mask = 0u64;
            for d in disabled {
                let pos = plans.iter().position(|p| p.id == *d).ok_or_else(|| {
                    GraphError::bad_request(format!(
                        "Invalid value specified for property 'disabledPlans' of resource 'AssignedLicense'. Service plan {d} does not belong to license {sku_id}."
                    ))
                })?;
                mask |= 1 << pos;
            }
            adds.push((sku, mask));
        }
        let mut removes: Vec<u16> = Vec::with_capacity(remove.len());
        for sku_id in remove {
            removes.push(
                self.sku_by_id(sku_id)
                    .ok_or_else(|| GraphError::invalid_license(sku_id))?,
            );
        }

        let mut st = self.users[u as usize].lock();
        if st.deleted {
            return Err(GraphError::not_found(
                &self.user_ids[u as usize].to_string(),
            ));
        }
        if !adds.is_empty() && st.usage_location.is_none() {
            return Err(GraphError::bad_request(
                "License assignment cannot be done for user with invalid usage location.",
            ));
        }
        let now = now_secs();
        let mut next = st.licenses.clone();
        for sku in &removes {
            match next.iter().position(|h| h.sku == *sku) {
                Some(pos) if next[pos].direct.is_some() => {
                    next[pos].direct = None;
                    next[pos].updated = now;
                    if next[pos].groups.is_empty() {
                        next.remove(pos);
                    }
                }
                Some(_) => {
                    return Err(GraphError::bad_request(
                        "User license is inherited from a group membership and it cannot be removed directly from the user.",
                    ));
                }
                None => {
                    return Err(GraphError::bad_request(
                        "User does not have a corresponding license.",
                    ));
                }
            }
        }
        for (sku, mask) in &adds {
            match next.iter_mut().find(|h| h.sku == *sku) {
                Some(h) => {
                    if h.direct != Some(*mask) {
                        h.direct = Some(*mask);
                        h.updated = now;
                    }
                }
                None => next.push(Held {
                    sku: *sku,
                    direct: Some(*mask),
                    groups: Vec::new(),
                    updated: now,
                }),
            }
        }
        if next == st.licenses {
            return Ok(false);
        }
        self.check_plans(&next)?;

        // Seats: reserve for SKUs newly held, release for SKUs no longer held.
        let gained: Vec<u16> = next
            .iter()
            .filter(|h| !st.licenses.iter().any(|o| o.sku == h.sku))
            .map(|h| h.sku)
            .collect();
        let lost: Vec<u16> = st
            .licenses
            .iter()
            .filter(|o| !next.iter().any(|h| h.sku == o.sku))
            .map(|o| o.sku)
            .collect();
        for (i, sku) in gained.iter().enumerate() {
            if !self.skus[*sku as usize].reserve() {
                for s in &gained[..i] {
                    self.skus[*s as usize].release();
                }
                return Err(GraphError::bad_request(format!(
                    "Subscription with SKU {} does not have any available licenses.",
                    self.skus[*sku as usize].id
                )));
            }
        }
        for sku in &lost {
            self.skus[*sku as usize].release();
        }
        st.licenses = next;
        st.successful_writes += 1;
        self.writes_max
            .fetch_max(st.successful_writes, Ordering::Relaxed);
        self.successful_writes.fetch_add(1, Ordering::Relaxed);
        let now_ms = now_ms();
        let _ =
            self.first_write_ms
                .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
        self.last_write_ms.fetch_max(now_ms, Ordering::Relaxed);
        Ok(true)
    }

    /// Mutually exclusive and dependent service plans over the user's resulting licenses.
    fn check_plans(&self, held: &[Held]) -> Result<(), GraphError> {
        // Enabled plans: (name, id).
        let mut enabled: Vec<(&str, Uuid)> = Vec::new();
        for h in held {
            let mask = h.disabled_mask();
            for (i, p) in self.skus[h.sku as usize].plans.iter().enumerate() {
                if mask & (1 << i) == 0 {
                    enabled.push((p.name.as_str(), p.id));
                }
            }
        }
        for h in held {
            let mask = h.disabled_mask();
            for (i, p) in self.skus[h.sku as usize].plans.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    continue;
                }
                if let Some((_, other)) = enabled
                    .iter()
                    .find(|(n, _)| p.exclusive_with.iter().any(|x| x == n))
                {
                    return Err(GraphError::bad_request(format!(
                        "License assignment failed because service plans {},{} are mutually exclusive.",
                        p.id, other
                    )));
                }
                let missing: Vec<&String> = p
                    .depends_on
                    .iter()
                    .filter(|d| !enabled.iter().any(|(n, _)| n == d))
                    .collect();
                if !missing.is_empty() {
                    let ids: Vec<String> = missing
                        .iter()
                        .map(|d| {
                            self.plan_id_by_name(d)
                                .map(|u| u.to_string())
                                .unwrap_or_else(|| (*d).clone())
                        })
                        .collect();
                    return Err(GraphError::bad_request(format!(
                        "License assignment failed because service plan {} depends on the service plan(s) {}",
                        p.id,
                        ids.join(",")
                    )));
                }
            }
        }
        Ok(())
    }

    fn plan_id_by_name(&self, name: &str) -> Option<Uuid> {
        self.skus
            .iter()
            .flat_map(|s| s.plans.iter())
            .find(|p| p.name == name)
            .map(|p| p.id)
    }

    /// Delete user `u`, as an administrator would in the directory's own console: Graph then
    /// answers 404 for it and leaves it out of lists, and the seats of every SKU it held are
    /// released. The object keeps its licenses as they were, for the control API to show
    /// (Graph's deleted items keep them for a restore). False when it was deleted already.
    pub fn delete_user(&self, u: u32) -> bool {
        let mut st = self.users[u as usize].lock();
        if st.deleted {
            return false;
        }
        st.deleted = true;
        for h in &st.licenses {
            self.skus[h.sku as usize].release();
        }
        self.deleted_users.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Whether user `u` was deleted ([`Directory::delete_user`]).
    pub fn is_deleted(&self, u: u32) -> bool {
        self.deleted_users.load(Ordering::Acquire) > 0 && self.users[u as usize].lock().deleted
    }

    /// PATCH of the user's usage location. Returns whether it changed; `None` when the user
    /// was deleted meanwhile.
    pub fn set_usage_location(&self, u: u32, loc: Option<[u8; 2]>) -> Option<bool> {
        let mut st = self.users[u as usize].lock();
        if st.deleted {
            return None;
        }
        if st.usage_location == loc {
            return Some(false);
        }
        st.usage_location = loc;
        st.profile_writes += 1;
        Some(true)
    }
}

/// An ISO 3166-1 alpha-2 code: two ASCII letters, stored upper-case.
pub fn parse_country(s: &str) -> Option<[u8; 2]> {
    let b = s.as_bytes();
    (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
        .then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}
