//! Building a directory from a [`Scenario`]: seeded ids, users with or without a usage location,
//! groups and their nesting, group-based licenses and the preassigned direct licenses.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::json::iso;
use super::model::{Directory, Group, Held, Members, ObjRef, Plan, Sku, UserState, mix, now_secs};
use super::rules::parse_country;
use crate::scenario::Scenario;

fn guid(rng: &mut ChaCha8Rng) -> Uuid {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

fn parse_guid(field: &str, s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|_| format!("{field}: '{s}' is not a GUID"))
}

/// Pick `k` distinct indices of `0..n`, in ascending order.
fn sample(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<u32> {
    let k = k.min(n);
    if k * 2 >= n {
        // Dense: a partial shuffle of the whole range.
        let mut all: Vec<u32> = (0..n as u32).collect();
        for i in 0..k {
            let j = rng.random_range(i..n);
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
        all
    } else {
        // Sparse: Floyd's algorithm.
        let mut chosen = HashSet::with_capacity(k);
        for j in (n - k)..n {
            let t = rng.random_range(0..=j) as u32;
            if !chosen.insert(t) {
                chosen.insert(j as u32);
            }
        }
        let mut v: Vec<u32> = chosen.into_iter().collect();
        v.sort_unstable();
        v
    }
}

impl Directory {
    /// Build a directory from a scenario. Errors name the offending field.
    pub fn build(s: &Scenario) -> Result<Directory, String> {
        if s.users > (u32::MAX / 2) as usize {
            return Err("users: too many".into());
        }
        if !(0.0..=1.0).contains(&s.users_without_usage_location) {
            return Err("users_without_usage_location must be between 0 and 1".into());
        }
        let usage = parse_country(&s.usage_location).ok_or_else(|| {
            format!(
                "usage_location: '{}' is not a country code",
                s.usage_location
            )
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        let tenant_id = match &s.tenant_id {
            Some(t) => parse_guid("tenant_id", t)?,
            None => guid(&mut rng),
        };
        let client_id = match &s.client_id {
            Some(c) => parse_guid("client_id", c)?.to_string(),
            None => guid(&mut rng).to_string(),
        };
        let client_secret = s
            .client_secret
            .clone()
            .unwrap_or_else(|| format!("emu~{:016x}{:016x}", rng.next_u64(), rng.next_u64()));
        let created = iso(now_secs());

        // SKUs
        let mut skus = Vec::with_capacity(s.skus.len());
        let mut sku_index = HashMap::new();
        let mut sku_by_name: HashMap<String, u16> = HashMap::new();
        for (i, spec) in s.skus.iter().enumerate() {
            if spec.sku_part_number.is_empty() {
                return Err(format!("skus[{i}].sku_part_number is empty"));
            }
            if spec.service_plans.len() > 64 {
                return Err(format!("skus[{i}]: at most 64 service plans"));
            }
            let id = match &spec.sku_id {
                Some(x) => parse_guid("sku_id", x)?,
                None => guid(&mut rng),
            };
            let mut plans = Vec::new();
            for p in &spec.service_plans {
                let pid = match &p.service_plan_id {
                    Some(x) => parse_guid("service_plan_id", x)?,
                    None => Uuid::from_u64_pair(
                        mix(s.seed ^ 0x5e41),
                        mix(p
                            .service_plan_name
                            .bytes()
                            .fold(7u64, |h, b| mix(h ^ b as u64))),
                    ),
                };
                plans.push(Plan {
                    id: pid,
                    name: p.service_plan_name.clone(),
                    applies_to: p.applies_to.clone(),
                    provisioning_status: p.provisioning_status.clone(),
                    exclusive_with: p.exclusive_with.clone(),
                    depends_on: p.depends_on.clone(),
                });
            }
            if sku_index.insert(id, i as u16).is_some() {
                return Err(format!("skus[{i}]: duplicate sku_id {id}"));
            }
            sku_by_name.insert(spec.sku_part_number.clone(), i as u16);
            skus.push(Sku {
                id,
                part_number: spec.sku_part_number.clone(),
                enabled: AtomicU32::new(spec.enabled),
                suspended: spec.suspended,
                warning: spec.warning,
                locked_out: spec.locked_out,
                consumed: AtomicU32::new(0),
                plans,
                applies_to: spec.applies_to.clone(),
                capability_status: spec.capability_status.clone(),
                subscription_id: guid(&mut rng),
            });
        }

        // Users
        let n = s.users;
        let mut user_ids = Vec::with_capacity(n);
        let mut urng = ChaCha8Rng::seed_from_u64(mix(s.seed ^ 0x0005_e125));
        for _ in 0..n {
            user_ids.push(guid(&mut urng));
        }
        let without = (n as f64 * s.users_without_usage_location).round() as usize;
        let no_location: HashSet<u32> = sample(&mut rng, n, without).into_iter().collect();
        let mut users: Vec<Mutex<UserState>> = Vec::with_capacity(n);
        for i in 0..n as u32 {
            users.push(Mutex::new(UserState {
                usage_location: (!no_location.contains(&i)).then_some(usage),
                ..Default::default()
            }));
        }

        // Groups
        let mut groups = Vec::with_capacity(s.groups.len());
        let mut group_by_name: HashMap<&str, u32> = HashMap::new();
        let mut device_ids = Vec::new();
        let mut contact_ids = Vec::new();
        for (gi, spec) in s.groups.iter().enumerate() {
            if spec.display_name.is_empty() {
                return Err(format!("groups[{gi}].display_name is empty"));
            }
            if spec.members > n {
                return Err(format!(
                    "groups[{gi}] ({}): {} members but only {n} users",
                    spec.display_name, spec.members
                ));
            }
            let id = match &spec.id {
                Some(x) => parse_guid("group id", x)?,
                None => guid(&mut rng),
            };
            let users_of = if spec.leading_users {
                (0..spec.members as u32).collect()
            } else {
                sample(&mut rng, n, spec.members)
            };
            let mut devices = Vec::with_capacity(spec.devices);
            for _ in 0..spec.devices {
                devices.push(device_ids.len() as u32);
                device_ids.push(guid(&mut rng));
            }
            let mut contacts = Vec::with_capacity(spec.contacts);
            for _ in 0..spec.contacts {
                contacts.push(contact_ids.len() as u32);
                contact_ids.push(guid(&mut rng));
            }
            let mut licenses = Vec::new();
            for l in &spec.licenses {
                let idx = sku_by_name
                    .get(l)
                    .copied()
                    .or_else(|| {
                        Uuid::parse_str(l)
                            .ok()
                            .and_then(|u| sku_index.get(&u).copied())
                    })
                    .ok_or_else(|| format!("groups[{gi}].licenses: unknown SKU '{l}'"))?;
                licenses.push(idx);
            }
            group_by_name.insert(spec.display_name.as_str(), gi as u32);
            groups.push(Group {
                id,
                display_name: spec.display_name.clone(),
                mail_nickname: spec
                    .display_name
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect(),
                created: created.clone(),
                members: Members {
                    users: users_of,
                    groups: Vec::new(),
                    devices,
                    contacts,
                },
                licenses,
                transitive: OnceLock::new(),
            });
        }
        for (gi, spec) in s.groups.iter().enumerate() {
            for name in &spec.nested_groups {
                let child = *group_by_name
                    .get(name.as_str())
                    .ok_or_else(|| format!("groups[{gi}].nested_groups: unknown group '{name}'"))?;
                if child as usize == gi {
                    return Err(format!("groups[{gi}] cannot contain itself"));
                }
                groups[gi].members.groups.push(child);
            }
        }

        let mut index =
            HashMap::with_capacity(n + groups.len() + device_ids.len() + contact_ids.len());
        for (i, id) in user_ids.iter().enumerate() {
            index.insert(*id, ObjRef::User(i as u32));
        }
        for (i, g) in groups.iter().enumerate() {
            if index.insert(g.id, ObjRef::Group(i as u32)).is_some() {
                return Err(format!("groups[{i}]: duplicate id {}", g.id));
            }
        }
        for (i, id) in device_ids.iter().enumerate() {
            index.insert(*id, ObjRef::Device(i as u32));
        }
        for (i, id) in contact_ids.iter().enumerate() {
            index.insert(*id, ObjRef::Contact(i as u32));
        }

        let dir = Directory {
            tenant_id,
            domain: s.domain.clone(),
            client_id,
            client_secret,
            seed: s.seed,
            created,
            user_ids,
            users,
            groups,
            device_ids,
            contact_ids,
            skus,
            index,
            sku_index,
            writes_max: AtomicU32::new(0),
            successful_writes: AtomicU64::new(0),
            first_write_ms: AtomicU64::new(0),
            last_write_ms: AtomicU64::new(0),
            deleted_users: AtomicU32::new(0),
        };

        // Group-based licenses: every transitive user member inherits the group's SKUs.
        let now = now_secs();
        for gi in 0..dir.groups.len() {
            if dir.groups[gi].licenses.is_empty() {
                continue;
            }
            let members = dir.transitive(gi as u32);
            for &u in &members.users {
                let mut st = dir.users[u as usize].lock();
                for &sku in &dir.groups[gi].licenses {
                    match st.licenses.iter_mut().find(|h| h.sku == sku) {
                        Some(h) => h.groups.push(gi as u32),
                        None => {
                            st.licenses.push(Held {
                                sku,
                                direct: None,
                                groups: vec![gi as u32],
                                updated: now,
                            });
                            dir.skus[sku as usize]
                                .consumed
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }

        // Direct assignments present when the scenario loads.
        for (si, spec) in s.skus.iter().enumerate() {
            if spec.preassigned == 0 {
                continue;
            }
            let mut given = 0;
            for u in sample(&mut rng, n, n.min(spec.preassigned * 2 + 16)) {
                if given == spec.preassigned {
                    break;
                }
                let mut st = dir.users[u as usize].lock();
                if st.usage_location.is_none() || st.licenses.iter().any(|h| h.sku == si as u16) {
                    continue;
                }
                if !dir.skus[si].reserve() {
                    break;
                }
                st.licenses.push(Held {
                    sku: si as u16,
                    direct: Some(0),
                    groups: Vec::new(),
                    updated: now,
                });
                given += 1;
            }
        }
        Ok(dir)
    }
}
