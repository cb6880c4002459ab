//! The in-memory directory built from a [`Scenario`]: users, groups, devices, contacts and
//! subscribed SKUs, with the license rules of Microsoft Entra ID.
//!
//! Layout is chosen for large tenants: users are kept in flat vectors indexed by a `u32`, names and
//! addresses are derived from that index instead of being stored, and each user has its own small
//! lock so that license writes on different users never contend. SKU seat counters are atomics, so
//! a seat is reserved with a compare-and-swap and can never be oversold.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::error::GraphError;
use crate::scenario::Scenario;

/// Kinds of directory objects that can be group members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjRef {
    User(u32),
    Group(u32),
    Device(u32),
    Contact(u32),
}

#[derive(Debug, Default, Clone)]
pub struct Members {
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    pub devices: Vec<u32>,
    pub contacts: Vec<u32>,
}

impl Members {
    pub fn len(&self) -> usize {
        self.users.len() + self.groups.len() + self.devices.len() + self.contacts.len()
    }

    /// The member at `pos` in the order users, groups, devices, contacts.
    pub fn get(&self, mut pos: usize) -> Option<ObjRef> {
        if pos < self.users.len() {
            return Some(ObjRef::User(self.users[pos]));
        }
        pos -= self.users.len();
        if pos < self.groups.len() {
            return Some(ObjRef::Group(self.groups[pos]));
        }
        pos -= self.groups.len();
        if pos < self.devices.len() {
            return Some(ObjRef::Device(self.devices[pos]));
        }
        pos -= self.devices.len();
        self.contacts.get(pos).map(|c| ObjRef::Contact(*c))
    }
}

pub struct Group {
    pub id: Uuid,
    pub display_name: String,
    pub mail_nickname: String,
    pub created: String,
    pub members: Members,
    /// SKU indices licensed through this group.
    pub licenses: Vec<u16>,
    transitive: OnceLock<Members>,
}

pub struct Plan {
    pub id: Uuid,
    pub name: String,
    pub applies_to: String,
    pub provisioning_status: String,
    pub exclusive_with: Vec<String>,
    pub depends_on: Vec<String>,
}

pub struct Sku {
    pub id: Uuid,
    pub part_number: String,
    /// Units bought; the control API may change it ("buy more licenses").
    pub enabled: AtomicU32,
    pub suspended: u32,
    pub warning: u32,
    pub locked_out: u32,
    pub consumed: AtomicU32,
    pub plans: Vec<Plan>,
    pub applies_to: String,
    pub capability_status: String,
    pub subscription_id: Uuid,
}

impl Sku {
    /// Reserve one seat; false when none is free.
    fn reserve(&self) -> bool {
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

/// One SKU held by a user, directly and/or through groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub sku: u16,
    /// Direct assignment with its disabled plans (bit i = plan i of the SKU disabled).
    pub direct: Option<u64>,
    /// Groups this SKU is inherited from.
    pub groups: Vec<u32>,
    /// Seconds since the epoch of the last change.
    pub updated: i64,
}

#[derive(Debug, Default)]
pub struct UserState {
    pub usage_location: Option<[u8; 2]>,
    pub licenses: Vec<Held>,
    /// assignLicense calls that changed this user.
    pub successful_writes: u32,
    /// PATCH calls that changed this user.
    pub profile_writes: u32,
    /// `accountEnabled: false` (set through the control API).
    pub account_disabled: bool,
}

pub struct Directory {
    pub tenant_id: Uuid,
    pub domain: String,
    pub client_id: String,
    pub client_secret: String,
    pub seed: u64,
    pub created: String,
    pub user_ids: Vec<Uuid>,
    pub users: Vec<Mutex<UserState>>,
    pub groups: Vec<Group>,
    pub device_ids: Vec<Uuid>,
    pub contact_ids: Vec<Uuid>,
    pub skus: Vec<Sku>,
    index: HashMap<Uuid, ObjRef>,
    sku_index: HashMap<Uuid, u16>,
    pub writes_max: AtomicU32,
    pub successful_writes: AtomicU64,
}

const FIRST: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Christie",
    "Debra",
    "Diego",
    "Emily",
    "Enrico",
    "Grady",
    "Henrietta",
    "Isaiah",
    "Johanna",
    "Joni",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Patti",
    "Pradeep",
    "Raul",
    "Sofia",
    "Tomas",
    "Uma",
    "Valeria",
    "Wen",
    "Yusuf",
    "Zara",
    "Omar",
    "Ingrid",
    "Kenji",
];
const LAST: &[&str] = &[
    "Vance",
    "Wilber",
    "Deyoung",
    "Cline",
    "Berg",
    "Siciliani",
    "Braun",
    "Gonzalez",
    "Archie",
    "Gonzales",
    "Langer",
    "Lauer",
    "Sherman",
    "Gu",
    "Holloway",
    "Robbins",
    "Bowen",
    "Graham",
    "Wilke",
    "Fernandez",
    "Gupta",
    "Ortega",
    "Rossi",
    "Novak",
    "Iyer",
    "Moreau",
    "Li",
    "Kaya",
    "Okafor",
    "Haddad",
    "Larsen",
    "Tanaka",
];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

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

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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

    pub fn lookup(&self, id: &Uuid) -> Option<ObjRef> {
        self.index.get(id).copied()
    }

    pub fn sku_by_id(&self, id: &Uuid) -> Option<u16> {
        self.sku_index.get(id).copied()
    }

    /// Resolve a `users/{id | userPrincipalName}` segment.
    pub fn find_user(&self, key: &str) -> Option<u32> {
        if let Ok(id) = Uuid::parse_str(key) {
            return match self.lookup(&id) {
                Some(ObjRef::User(u)) => Some(u),
                _ => None,
            };
        }
        let (local, domain) = key.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let digits = local.len() - local.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let idx: u32 = local[local.len() - digits..].parse().ok()?;
        ((idx as usize) < self.user_ids.len() && self.upn(idx).eq_ignore_ascii_case(key))
            .then_some(idx)
    }

    pub fn names(&self, u: u32) -> (&'static str, &'static str) {
        let h = mix(self.seed ^ (u as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        (
            FIRST[(h % FIRST.len() as u64) as usize],
            LAST[((h >> 32) % LAST.len() as u64) as usize],
        )
    }

    pub fn upn(&self, u: u32) -> String {
        let (f, l) = self.names(u);
        format!(
            "{}.{}{}@{}",
            f.to_ascii_lowercase(),
            l.to_ascii_lowercase(),
            u,
            self.domain
        )
    }

    /// Members of a group including those of nested groups, each object once.
    pub fn transitive(&self, g: u32) -> &Members {
        self.groups[g as usize].transitive.get_or_init(|| {
            let mut seen_groups = HashSet::new();
            let mut stack = vec![g];
            let mut out = Members::default();
            let mut users = HashSet::new();
            let mut devices = HashSet::new();
            let mut contacts = HashSet::new();
            seen_groups.insert(g);
            while let Some(cur) = stack.pop() {
                let m = &self.groups[cur as usize].members;
                for &u in &m.users {
                    if users.insert(u) {
                        out.users.push(u);
                    }
                }
                for &d in &m.devices {
                    if devices.insert(d) {
                        out.devices.push(d);
                    }
                }
                for &c in &m.contacts {
                    if contacts.insert(c) {
                        out.contacts.push(c);
                    }
                }
                for &child in &m.groups {
                    if seen_groups.insert(child) {
                        out.groups.push(child);
                        stack.push(child);
                    }
                }
            }
            out.users.sort_unstable();
            out
        })
    }

    // ----- JSON renderings -------------------------------------------------------------------

    pub fn user_json(
        &self,
        u: u32,
        st: &UserState,
        select: Option<&[String]>,
    ) -> Map<String, Value> {
        let (f, l) = self.names(u);
        let upn = self.upn(u);
        let mut m = Map::new();
        let want = |k: &str| match select {
            None => DEFAULT_USER_PROPS.contains(&k),
            Some(s) => s.iter().any(|x| x.eq_ignore_ascii_case(k)),
        };
        if want("businessPhones") {
            m.insert("businessPhones".into(), json!([]));
        }
        if want("displayName") {
            m.insert("displayName".into(), json!(format!("{f} {l}")));
        }
        if want("givenName") {
            m.insert("givenName".into(), json!(f));
        }
        if want("jobTitle") {
            m.insert("jobTitle".into(), Value::Null);
        }
        if want("mail") {
            m.insert("mail".into(), json!(upn));
        }
        if want("mobilePhone") {
            m.insert("mobilePhone".into(), Value::Null);
        }
        if want("officeLocation") {
            m.insert("officeLocation".into(), Value::Null);
        }
        if want("preferredLanguage") {
            m.insert("preferredLanguage".into(), json!("en-US"));
        }
        if want("surname") {
            m.insert("surname".into(), json!(l));
        }
        if want("userPrincipalName") {
            m.insert("userPrincipalName".into(), json!(upn));
        }
        if want("id") {
            m.insert("id".into(), json!(self.user_ids[u as usize].to_string()));
        }
        if select.is_some() {
            if want("accountEnabled") {
                m.insert("accountEnabled".into(), json!(!st.account_disabled));
            }
            if want("usageLocation") {
                m.insert(
                    "usageLocation".into(),
                    st.usage_location
                        .map(|c| json!(String::from_utf8_lossy(&c)))
                        .unwrap_or(Value::Null),
                );
            }
            if want("assignedLicenses") {
                m.insert("assignedLicenses".into(), self.assigned_licenses(st));
            }
            if want("licenseAssignmentStates") {
                m.insert("licenseAssignmentStates".into(), self.assignment_states(st));
            }
            if want("mailNickname") {
                m.insert(
                    "mailNickname".into(),
                    json!(format!("{}.{}{}", f, l, u).to_lowercase()),
                );
            }
            if want("userType") {
                m.insert("userType".into(), json!("Member"));
            }
        }
        m
    }

    fn disabled_ids(&self, sku: u16, mask: u64) -> Vec<String> {
        self.skus[sku as usize]
            .plans
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, p)| p.id.to_string())
            .collect()
    }

    pub fn assigned_licenses(&self, st: &UserState) -> Value {
        Value::Array(
            st.licenses
                .iter()
                .map(|h| {
                    // A plan is disabled only if every assignment path disables it.
                    let mask = if h.groups.is_empty() {
                        h.direct.unwrap_or(0)
                    } else {
                        0
                    };
                    json!({
                        "disabledPlans": self.disabled_ids(h.sku, mask),
                        "skuId": self.skus[h.sku as usize].id.to_string(),
                    })
                })
                .collect(),
        )
    }

    /// `GET /users/{id}/licenseDetails`: one entry per license the user holds (directly or
    /// through a group): `id` (opaque), `skuId`, `skuPartNumber` and every service plan of the
    /// SKU with its `provisioningStatus` — `Disabled` where the assignment disables the plan.
    /// Shape: <https://learn.microsoft.com/en-us/graph/api/resources/licensedetails>.
    pub fn license_details(&self, u: u32, st: &UserState) -> Value {
        Value::Array(
            st.licenses
                .iter()
                .map(|h| {
                    let sku = &self.skus[h.sku as usize];
                    // As for assignedLicenses: disabled only if every assignment path disables it.
                    let mask = if h.groups.is_empty() {
                        h.direct.unwrap_or(0)
                    } else {
                        0
                    };
                    let plans: Vec<Value> = sku
                        .plans
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let status = if mask & (1 << i) != 0 {
                                "Disabled"
                            } else {
                                p.provisioning_status.as_str()
                            };
                            json!({
                                "servicePlanId": p.id.to_string(),
                                "servicePlanName": p.name,
                                "provisioningStatus": status,
                                "appliesTo": p.applies_to,
                            })
                        })
                        .collect();
                    json!({
                        "id": format!(
                            "{}_{}",
                            self.user_ids[u as usize].simple(),
                            sku.id.simple()
                        ),
                        "skuId": sku.id.to_string(),
                        "skuPartNumber": sku.part_number,
                        "servicePlans": plans,
                    })
                })
                .collect(),
        )
    }

    pub fn assignment_states(&self, st: &UserState) -> Value {
        let mut v = Vec::new();
        for h in &st.licenses {
            let sku = self.skus[h.sku as usize].id.to_string();
            if let Some(mask) = h.direct {
                v.push(json!({
                    "assignedByGroup": null,
                    "disabledPlans": self.disabled_ids(h.sku, mask),
                    "error": "None",
                    "lastUpdatedDateTime": iso(h.updated),
                    "skuId": sku,
                    "state": "Active",
                }));
            }
            for g in &h.groups {
                v.push(json!({
                    "assignedByGroup": self.groups[*g as usize].id.to_string(),
                    "disabledPlans": [],
                    "error": "None",
                    "lastUpdatedDateTime": iso(h.updated),
                    "skuId": sku,
                    "state": "Active",
                }));
            }
        }
        Value::Array(v)
    }

    pub fn group_json(&self, g: u32) -> Map<String, Value> {
        let gr = &self.groups[g as usize];
        let v = json!({
            "id": gr.id.to_string(),
            "deletedDateTime": null,
            "classification": null,
            "createdDateTime": gr.created,
            "creationOptions": [],
            "description": format!("{} security group", gr.display_name),
            "displayName": gr.display_name,
            "expirationDateTime": null,
            "groupTypes": [],
            "isAssignableToRole": null,
            "mail": null,
            "mailEnabled": false,
            "mailNickname": gr.mail_nickname,
            "membershipRule": null,
            "membershipRuleProcessingState": null,
            "onPremisesDomainName": null,
            "onPremisesLastSyncDateTime": null,
            "onPremisesNetBiosName": null,
            "onPremisesSamAccountName": null,
            "onPremisesSecurityIdentifier": null,
            "onPremisesSyncEnabled": null,
            "preferredDataLocation": null,
            "preferredLanguage": null,
            "proxyAddresses": [],
            "renewedDateTime": gr.created,
            "resourceBehaviorOptions": [],
            "resourceProvisioningOptions": [],
            "securityEnabled": true,
            "securityIdentifier": format!("S-1-12-1-{}", gr.id.as_u64_pair().0 % 4_000_000_000),
            "theme": null,
            "visibility": null,
            "onPremisesProvisioningErrors": [],
            "serviceProvisioningErrors": [],
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn device_json(&self, d: u32) -> Map<String, Value> {
        let id = self.device_ids[d as usize];
        let v = json!({
            "id": id.to_string(),
            "deletedDateTime": null,
            "accountEnabled": true,
            "approximateLastSignInDateTime": self.created,
            "deviceId": Uuid::from_u64_pair(mix(id.as_u64_pair().0), mix(id.as_u64_pair().1)).to_string(),
            "displayName": format!("DESKTOP-{:07X}", mix(d as u64 ^ self.seed) & 0xFFF_FFFF),
            "isCompliant": true,
            "isManaged": true,
            "operatingSystem": "Windows",
            "operatingSystemVersion": "10.0.22631.4317",
            "trustType": "AzureAd",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn contact_json(&self, c: u32) -> Map<String, Value> {
        let h = mix(self.seed ^ 0xC0 ^ (c as u64) << 8);
        let f = FIRST[(h % FIRST.len() as u64) as usize];
        let l = LAST[((h >> 32) % LAST.len() as u64) as usize];
        let v = json!({
            "id": self.contact_ids[c as usize].to_string(),
            "deletedDateTime": null,
            "companyName": "Fabrikam",
            "department": null,
            "displayName": format!("{f} {l} (Fabrikam)"),
            "givenName": f,
            "jobTitle": null,
            "mail": format!("{}.{}@fabrikam.com", f.to_lowercase(), l.to_lowercase()),
            "mailNickname": format!("{}{}", f.to_lowercase(), l.to_lowercase()),
            "surname": l,
            "proxyAddresses": [],
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn sku_json(&self, i: usize) -> Value {
        let s = &self.skus[i];
        json!({
            "accountName": self.domain.split('.').next().unwrap_or("contoso"),
            "accountId": self.tenant_id.to_string(),
            "appliesTo": s.applies_to,
            "capabilityStatus": s.capability_status,
            "consumedUnits": s.consumed.load(Ordering::Acquire),
            "id": format!("{}_{}", self.tenant_id, s.id),
            "prepaidUnits": {
                "enabled": s.enabled.load(Ordering::Acquire),
                "suspended": s.suspended,
                "warning": s.warning,
                "lockedOut": s.locked_out,
            },
            "servicePlans": s.plans.iter().map(|p| json!({
                "servicePlanId": p.id.to_string(),
                "servicePlanName": p.name,
                "provisioningStatus": p.provisioning_status,
                "appliesTo": p.applies_to,
            })).collect::<Vec<_>>(),
            "skuId": s.id.to_string(),
            "skuPartNumber": s.part_number,
            "subscriptionIds": [s.subscription_id.to_string()],
        })
    }

    // ----- License writes --------------------------------------------------------------------

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
        Ok(true)
    }

    /// Mutually exclusive and dependent service plans over the user's resulting licenses.
    fn check_plans(&self, held: &[Held]) -> Result<(), GraphError> {
        // Enabled plans: (name, id).
        let mut enabled: Vec<(&str, Uuid)> = Vec::new();
        for h in held {
            let mask = if h.groups.is_empty() {
                h.direct.unwrap_or(0)
            } else {
                0
            };
            for (i, p) in self.skus[h.sku as usize].plans.iter().enumerate() {
                if mask & (1 << i) == 0 {
                    enabled.push((p.name.as_str(), p.id));
                }
            }
        }
        for h in held {
            let mask = if h.groups.is_empty() {
                h.direct.unwrap_or(0)
            } else {
                0
            };
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

    /// PATCH of the user's usage location. Returns whether it changed.
    pub fn set_usage_location(&self, u: u32, loc: Option<[u8; 2]>) -> bool {
        let mut st = self.users[u as usize].lock();
        if st.usage_location == loc {
            return false;
        }
        st.usage_location = loc;
        st.profile_writes += 1;
        true
    }
}

/// Properties Graph returns for a user when no `$select` is given.
pub const DEFAULT_USER_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Properties a user can be selected on.
pub const USER_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
    "accountEnabled",
    "usageLocation",
    "assignedLicenses",
    "licenseAssignmentStates",
    "mailNickname",
    "userType",
];

/// An ISO 3166-1 alpha-2 code: two ASCII letters, stored upper-case.
pub fn parse_country(s: &str) -> Option<[u8; 2]> {
    let b = s.as_bytes();
    (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
        .then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}
