//! Shared emulator state: the directory, issued tokens, throttle windows, faults and statistics.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::Router;
use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::directory::Directory;
use crate::faults::{Budget, Faults};
use crate::scenario::Scenario;

pub struct TokenInfo {
    pub expires: Instant,
    pub app_id: String,
    /// The tenant the token was issued for (its `tid` claim): lowercase GUID.
    pub tenant_id: String,
}

#[derive(Default)]
pub struct Stats {
    /// "METHOD /route/{template}" → status → count.
    pub requests: Mutex<HashMap<String, HashMap<u16, u64>>>,
    pub throttled: AtomicU64,
    pub injected_errors: AtomicU64,
    pub dropped_connections: AtomicU64,
    /// Requests carried out whose answer was lost (`lost_answer_rate`).
    pub lost_answers: AtomicU64,
    /// "group/relation/cast/offset" → times that page of members was read.
    pub member_pages: Mutex<HashMap<String, u64>>,
}

impl Stats {
    pub fn record(&self, route: String, status: u16) {
        *self
            .requests
            .lock()
            .entry(route)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    /// Every request counted, whatever its route and status.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .lock()
            .values()
            .flat_map(|by| by.values())
            .sum()
    }

    /// Note a read of one page of a group's members.
    pub fn record_member_page(&self, page: String) {
        *self.member_pages.lock().entry(page).or_default() += 1;
    }
}

/// A sliding-window log of units spent: never more than `limit` units in any `window`.
#[derive(Default)]
pub struct Window {
    log: VecDeque<(Instant, u32)>,
    used: u64,
}

impl Window {
    fn trim(&mut self, now: Instant, window: Duration) {
        while let Some(&(t, c)) = self.log.front() {
            if now.duration_since(t) >= window {
                self.used -= c as u64;
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Would `cost` fit now? Does not spend.
    fn check(&mut self, now: Instant, b: Budget, cost: u32) -> Result<(), u64> {
        let window = Duration::from_millis(b.window_ms);
        self.trim(now, window);
        if self.used + cost as u64 <= b.limit as u64 {
            return Ok(());
        }
        // Wait until enough of the oldest entries leave the window.
        let mut freed = 0u64;
        let need = self.used + cost as u64 - b.limit as u64;
        let mut wait = window;
        for &(t, c) in &self.log {
            freed += c as u64;
            if freed >= need {
                wait = window.saturating_sub(now.duration_since(t));
                break;
            }
        }
        Err(wait.as_millis().div_ceil(1000).max(1) as u64)
    }

    fn spend(&mut self, now: Instant, b: Budget, cost: u32) -> f64 {
        self.log.push_back((now, cost));
        self.used += cost as u64;
        self.used as f64 / b.limit as f64
    }
}

#[derive(Default)]
pub struct AppWindows {
    pub writes: Window,
    pub reads: Window,
}

pub enum Throttle {
    Ok {
        read_pct: f64,
        write_pct: Option<f64>,
    },
    Reads(u64),
    Writes(u64),
}

/// One tenant: its directory (with its app registration), the scenario it was built from, its
/// faults and throttle budgets, its throttle windows and its statistics. Nothing is shared between
/// tenants except the process.
pub struct Tenant {
    /// Directory (tenant) id, lowercase GUID; fixed for the tenant's life (a reset rebuilds the
    /// same scenario, so the same id).
    pub id: String,
    /// Initial domain, lowercase.
    pub domain: String,
    pub dir: RwLock<Arc<Directory>>,
    pub scenario: Scenario,
    pub faults: RwLock<Faults>,
    /// "appId/tenantId" → that app's windows in this tenant.
    pub windows: Mutex<HashMap<String, AppWindows>>,
    pub stats: Stats,
    pub dice: Mutex<ChaCha8Rng>,
}

impl Tenant {
    pub fn new(dir: Directory, scenario: Scenario, faults: Faults) -> Self {
        Tenant {
            id: dir.tenant_id.to_string(),
            domain: dir.domain.to_ascii_lowercase(),
            dir: RwLock::new(Arc::new(dir)),
            scenario,
            dice: Mutex::new(ChaCha8Rng::seed_from_u64(faults.seed)),
            faults: RwLock::new(faults),
            windows: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    pub fn dir(&self) -> Arc<Directory> {
        self.dir.read().clone()
    }

    /// Replace the faults: reseeds the dice and restarts the throttle windows.
    pub fn set_faults(&self, f: Faults) {
        *self.dice.lock() = ChaCha8Rng::seed_from_u64(f.seed);
        *self.faults.write() = f;
        self.windows.lock().clear();
    }

    /// Charge one request against the app's budgets: `ru` resource units, and one write if
    /// `write`. All or nothing: a refused request spends nothing.
    pub fn throttle(&self, key: &str, ru: u32, write: bool) -> Throttle {
        let f = self.faults.read();
        if !f.throttling {
            return Throttle::Ok {
                read_pct: 0.0,
                write_pct: None,
            };
        }
        let (rb, wb) = (f.read_budget, f.write_budget);
        drop(f);
        let now = Instant::now();
        let mut map = self.windows.lock();
        let w = match map.get_mut(key) {
            Some(w) => w,
            None => map.entry(key.to_string()).or_default(),
        };
        if write && let Err(secs) = w.writes.check(now, wb, 1) {
            return Throttle::Writes(secs);
        }
        if let Err(secs) = w.reads.check(now, rb, ru) {
            return Throttle::Reads(secs);
        }
        let write_pct = write.then(|| w.writes.spend(now, wb, 1));
        let read_pct = w.reads.spend(now, rb, ru);
        Throttle::Ok {
            read_pct,
            write_pct,
        }
    }

    /// Roll the fault dice: an injected status, if any.
    pub fn roll_error(&self) -> Option<u16> {
        let f = self.faults.read();
        if f.error_rate <= 0.0 {
            return None;
        }
        let mut d = self.dice.lock();
        let hit = rand::Rng::random_bool(&mut *d, f.error_rate.min(1.0));
        if !hit {
            return None;
        }
        let i = rand::Rng::random_range(&mut *d, 0..f.error_statuses.len());
        Some(f.error_statuses[i])
    }

    /// Roll the fault dice for a connection: closed before the request is carried out, its
    /// answer lost after, and the added latency.
    pub fn roll_connection(&self) -> (bool, bool, Duration) {
        let f = self.faults.read();
        if f.drop_rate <= 0.0 && f.lost_answer_rate <= 0.0 && f.latency_ms == 0 && f.jitter_ms == 0
        {
            return (false, false, Duration::ZERO);
        }
        let mut d = self.dice.lock();
        let drop = f.drop_rate > 0.0 && rand::Rng::random_bool(&mut *d, f.drop_rate.min(1.0));
        let lose = f.lost_answer_rate > 0.0
            && rand::Rng::random_bool(&mut *d, f.lost_answer_rate.min(1.0));
        let jitter = if f.jitter_ms > 0 {
            rand::Rng::random_range(&mut *d, 0..=f.jitter_ms)
        } else {
            0
        };
        (drop, lose, Duration::from_millis(f.latency_ms + jitter))
    }
}

/// The tenants served, the first being the default one (the one the control API and
/// [`crate::EmulatorHandle`]'s credentials speak of when no tenant is named).
pub struct Tenants {
    pub list: Vec<Arc<Tenant>>,
    /// Lowercase tenant id and domain → position in `list`.
    index: HashMap<String, usize>,
}

impl Tenants {
    /// Index `list`; an id or domain used twice is refused with the position of the second use.
    pub fn new(list: Vec<Arc<Tenant>>) -> Result<Self, String> {
        if list.is_empty() {
            return Err("tenants: at least one tenant is needed".into());
        }
        let mut index = HashMap::with_capacity(list.len() * 2);
        for (i, t) in list.iter().enumerate() {
            for (what, key) in [("tenant id", &t.id), ("domain", &t.domain)] {
                if let Some(j) = index.insert(key.clone(), i) {
                    return Err(format!(
                        "tenants[{i}]: {what} '{key}' is already used by tenants[{j}]"
                    ));
                }
            }
        }
        Ok(Tenants { list, index })
    }

    pub fn default_tenant(&self) -> &Arc<Tenant> {
        &self.list[0]
    }

    /// A tenant by id or domain (any case).
    pub fn find(&self, key: &str) -> Option<&Arc<Tenant>> {
        if self.list.len() == 1 {
            let t = &self.list[0];
            return (t.id.eq_ignore_ascii_case(key) || t.domain.eq_ignore_ascii_case(key))
                .then_some(t);
        }
        let i = match self.index.get(key) {
            Some(i) => *i,
            None => *self.index.get(&key.to_ascii_lowercase())?,
        };
        self.list.get(i)
    }
}

pub struct AppState {
    pub tenants: RwLock<Arc<Tenants>>,
    pub tokens: RwLock<HashMap<String, TokenInfo>>,
    /// Faults every tenant returns to on `POST /_emulator/reset`.
    pub initial_faults: Faults,
    /// The router itself, for requests inside `$batch`.
    pub router: OnceLock<Router>,
    /// Drives for export uploads (shared by every tenant).
    pub drives: crate::drives::Drives,
}

impl AppState {
    pub fn new(tenants: Tenants, initial_faults: Faults) -> Self {
        AppState {
            tenants: RwLock::new(Arc::new(tenants)),
            tokens: RwLock::new(HashMap::new()),
            initial_faults,
            router: OnceLock::new(),
            drives: Default::default(),
        }
    }

    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants.read().clone()
    }

    pub fn default_tenant(&self) -> Arc<Tenant> {
        self.tenants.read().default_tenant().clone()
    }

    /// The tenant a Graph request is for, without validating anything: the tenant of a known
    /// bearer token, else the tenant named in a token endpoint path, else the default tenant.
    /// Used for connection-level faults and statistics before authentication.
    pub fn tenant_hint(&self, authorization: Option<&str>, path: &str) -> Arc<Tenant> {
        let tenants = self.tenants();
        if tenants.list.len() == 1 {
            return tenants.default_tenant().clone();
        }
        if let Some(tok) = authorization.and_then(bearer)
            && let Some(t) = self
                .tokens
                .read()
                .get(tok)
                .and_then(|info| tenants.find(&info.tenant_id))
        {
            return t.clone();
        }
        if let Some(seg) = path
            .strip_suffix("/oauth2/v2.0/token")
            .and_then(|p| p.strip_prefix('/'))
            && let Some(t) = tenants.find(seg)
        {
            return t.clone();
        }
        tenants.default_tenant().clone()
    }
}

/// The token of `Authorization: Bearer …` (any case of the scheme; a bare token is taken too).
pub fn bearer(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    let token = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .unwrap_or(raw)
        .trim();
    (!token.is_empty()).then_some(token)
}
