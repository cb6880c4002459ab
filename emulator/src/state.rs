//! Shared emulator state: the directory, issued tokens, throttle windows, faults and statistics.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub tenant_id: String,
}

#[derive(Default)]
pub struct Stats {
    /// "METHOD /route/{template}" → status → count.
    pub requests: Mutex<HashMap<String, HashMap<u16, u64>>>,
    pub throttled: AtomicU64,
    pub injected_errors: AtomicU64,
    pub dropped_connections: AtomicU64,
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

    /// Note a read of one page of a group's members.
    pub fn record_member_page(&self, page: String) {
        *self.member_pages.lock().entry(page).or_default() += 1;
    }

    pub fn clear(&self) {
        self.requests.lock().clear();
        self.member_pages.lock().clear();
        self.throttled.store(0, Ordering::Relaxed);
        self.injected_errors.store(0, Ordering::Relaxed);
        self.dropped_connections.store(0, Ordering::Relaxed);
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

pub struct AppState {
    pub dir: RwLock<Arc<Directory>>,
    pub scenario: RwLock<Scenario>,
    pub tokens: RwLock<HashMap<String, TokenInfo>>,
    pub faults: RwLock<Faults>,
    pub initial_faults: Faults,
    pub windows: Mutex<HashMap<String, AppWindows>>,
    pub stats: Stats,
    pub dice: Mutex<ChaCha8Rng>,
    /// The router itself, for requests inside `$batch`.
    pub router: OnceLock<Router>,
    /// Drives for export uploads.
    pub drives: crate::drives::Drives,
}

impl AppState {
    pub fn new(dir: Directory, scenario: Scenario, faults: Faults) -> Self {
        AppState {
            dir: RwLock::new(Arc::new(dir)),
            scenario: RwLock::new(scenario),
            tokens: RwLock::new(HashMap::new()),
            dice: Mutex::new(ChaCha8Rng::seed_from_u64(faults.seed)),
            faults: RwLock::new(faults.clone()),
            initial_faults: faults,
            windows: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            router: OnceLock::new(),
            drives: Default::default(),
        }
    }

    pub fn dir(&self) -> Arc<Directory> {
        self.dir.read().clone()
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
        let w = map.entry(key.to_string()).or_default();
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

    /// Roll the fault dice for a dropped connection and the added latency.
    pub fn roll_connection(&self) -> (bool, Duration) {
        let f = self.faults.read();
        if f.drop_rate <= 0.0 && f.latency_ms == 0 && f.jitter_ms == 0 {
            return (false, Duration::ZERO);
        }
        let mut d = self.dice.lock();
        let drop = f.drop_rate > 0.0 && rand::Rng::random_bool(&mut *d, f.drop_rate.min(1.0));
        let jitter = if f.jitter_ms > 0 {
            rand::Rng::random_range(&mut *d, 0..=f.jitter_ms)
        } else {
            0
        };
        (drop, Duration::from_millis(f.latency_ms + jitter))
    }
}
