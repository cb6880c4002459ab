//! Injected misbehaviour and throttle budgets: the body of `PUT /_emulator/faults`.

use serde::{Deserialize, Serialize};

/// A budget of `limit` units per sliding window of `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub limit: u32,
    pub window_ms: u64,
}

/// Faults applied to one tenant's Graph routes (`/v1.0/...` and its token endpoint). `Default`
/// means no faults and Graph's default budgets. Missing fields take their defaults (in
/// `PUT /_emulator/faults`: the emulator's starting faults); unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Faults {
    /// Added latency per request, in milliseconds.
    pub latency_ms: u64,
    /// Uniform random extra latency in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Share (0.0..=1.0) of Graph requests answered with a 5xx error.
    pub error_rate: f64,
    /// Status codes drawn from for injected errors (500, 502, 503 or 504).
    pub error_statuses: Vec<u16>,
    /// Share (0.0..=1.0) of Graph requests whose connection is closed without an answer,
    /// before the request is carried out.
    pub drop_rate: f64,
    /// Share (0.0..=1.0) of Graph requests carried out whose answer is then lost: the
    /// connection is closed instead of answering, after the change is made (a `$batch`: all of
    /// its requests). What a client meets when a gateway times out on a request that went
    /// through.
    pub lost_answer_rate: f64,
    /// Throttling on or off.
    pub throttling: bool,
    /// Writes per app and tenant: Graph's 3,000 per 150 s by default.
    pub write_budget: Budget,
    /// Read resource units per app and tenant: 8,000 per 10 s by default.
    pub read_budget: Budget,
    /// Lifetime of issued access tokens, in seconds (`expires_in`).
    pub token_lifetime_secs: u64,
    /// Seed of the fault dice; a fixed seed makes a run reproducible.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            error_statuses: vec![503],
            drop_rate: 0.0,
            lost_answer_rate: 0.0,
            throttling: true,
            write_budget: Budget {
                limit: 3_000,
                window_ms: 150_000,
            },
            read_budget: Budget {
                limit: 8_000,
                window_ms: 10_000,
            },
            token_lifetime_secs: 3_599,
            seed: 7,
        }
    }
}

impl Faults {
    /// No faults and budgets so large they never throttle: for benchmarks.
    pub fn unthrottled() -> Self {
        Faults {
            throttling: false,
            ..Default::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err("error_rate must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.drop_rate) {
            return Err("drop_rate must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.lost_answer_rate) {
            return Err("lost_answer_rate must be between 0 and 1".into());
        }
        if self.error_statuses.is_empty() && self.error_rate > 0.0 {
            return Err("error_statuses must not be empty when error_rate > 0".into());
        }
        if let Some(s) = self
            .error_statuses
            .iter()
            .find(|s| !(500..=599).contains(*s))
        {
            return Err(format!("error_statuses must be 5xx codes, got {s}"));
        }
        for (name, b) in [
            ("write_budget", self.write_budget),
            ("read_budget", self.read_budget),
        ] {
            if b.limit == 0 || b.window_ms == 0 {
                return Err(format!("{name} needs a positive limit and window_ms"));
            }
        }
        if self.token_lifetime_secs == 0 {
            return Err("token_lifetime_secs must be positive".into());
        }
        Ok(())
    }
}
