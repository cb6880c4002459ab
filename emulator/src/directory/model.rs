//! The directory's types: users, groups, devices, contacts and SKUs as the emulator stores them,
//! the names and addresses derived from a user's index, and lookups by id.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64};

use parking_lot::Mutex;
use uuid::Uuid;

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
    pub(super) transitive: OnceLock<Members>,
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
    /// Deleted through the control API: Graph answers 404 for it and leaves it out of every
    /// list, and its seats are released (Graph's deleted items keep the object, not the seats).
    pub deleted: bool,
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
    pub(super) index: HashMap<Uuid, ObjRef>,
    pub(super) sku_index: HashMap<Uuid, u16>,
    pub writes_max: AtomicU32,
    pub successful_writes: AtomicU64,
    /// When the first and the last license write that changed a user were made, in Unix
    /// milliseconds (0 before the first): what a benchmark needs to tell a job's wait before
    /// its first write from its writing and from its end after the last.
    pub first_write_ms: AtomicU64,
    pub last_write_ms: AtomicU64,
    /// Users deleted so far: lists and counts look for them only when some are.
    pub deleted_users: AtomicU32,
}

pub(super) const FIRST: &[&str] = &[
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
pub(super) const LAST: &[&str] = &[
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

pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Now, in Unix milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl Directory {
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
}
