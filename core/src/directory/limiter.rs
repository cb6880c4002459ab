//! Per-tenant pacing of directory writes, so a long job runs near the tenant's throttle budget
//! instead of bouncing off it.
//!
//! Writes are paced at a rate that adapts to the directory's feedback:
//! - until the directory first reports pressure, the rate doubles every quarter second (a job
//!   against an unthrottled directory soon runs at full speed);
//! - `x-ms-throttle-limit-percentage` (sent from 80 % of the budget, over the directory's sliding
//!   window) steers the rate proportionally towards the target share of the budget;
//! - a 429 halves the rate (once per burst of 429s) and pauses all writes until its
//!   `Retry-After` has passed;
//! - with no pressure reported for a while, the rate creeps back up.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    pub initial_rate: f64,
    pub max_rate: f64,
    pub min_rate: f64,
    /// Target share of the budget, in percent.
    pub target_percent: f64,
}

#[derive(Debug)]
struct State {
    rate: f64,
    /// When the next write may start.
    next_slot: Instant,
    paused_until: Instant,
    /// Seen any pressure yet (switches from fast start to steering).
    pressured: bool,
    last_adjust: Instant,
    last_cut: Instant,
    last_pressure: Instant,
}

#[derive(Debug)]
pub struct WriteLimiter {
    config: LimiterConfig,
    state: Mutex<State>,
    turn: tokio::sync::Mutex<()>,
}

impl WriteLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        let now = Instant::now();
        WriteLimiter {
            config,
            state: Mutex::new(State {
                rate: config.initial_rate,
                next_slot: now,
                paused_until: now,
                pressured: false,
                last_adjust: now,
                last_cut: now - Duration::from_secs(60),
                last_pressure: now,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Current writes per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().rate
    }

    /// Wait for the right to send `writes` writes. Callers take turns (first come, first
    /// served), and each turn's slot is computed from the rate and pause in force when the
    /// turn comes, so a change of rate applies at once to everyone waiting.
    pub async fn acquire(&self, writes: u32) {
        let _turn = self.turn.lock().await;
        loop {
            let wait_until = {
                let mut s = self.state.lock();
                let now = Instant::now();
                self.grow(&mut s, now);
                let at = s.next_slot.max(s.paused_until);
                if at <= now {
                    s.next_slot = now + Duration::from_secs_f64(f64::from(writes) / s.rate);
                    return;
                }
                // Re-check at least every 50 ms: the rate may rise while we wait.
                at.min(now + Duration::from_millis(50))
            };
            tokio::time::sleep_until(wait_until.into()).await;
        }
    }

    /// Feedback from a write response: the value of `x-ms-throttle-limit-percentage`. Graph
    /// documents it as the used share of the limit, 0.8 to 1.8, in tenths.
    pub fn observe_header(&self, value: f64) {
        self.observe_percent(header_percent(value));
    }

    /// Feedback as a percentage of the budget in use.
    pub fn observe_percent(&self, percent: f64) {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.pressured = true;
        s.last_pressure = now;
        // Steer at most every 100 ms, proportionally to the distance from the target.
        if now.duration_since(s.last_adjust) < Duration::from_millis(100) {
            return;
        }
        s.last_adjust = now;
        // A gentle gain: the percentage is measured over the directory's window and lags the
        // rate, so steering hard would oscillate.
        let error = (self.config.target_percent - percent) / 100.0;
        let factor = (1.0 + error * 0.15).clamp(0.9, 1.02);
        s.rate = (s.rate * factor).clamp(self.config.min_rate, self.config.max_rate);
    }

    /// A 429: cut the rate (once per burst of 429s) and pause until `retry_after`.
    pub fn observe_throttled(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.pressured = true;
        s.last_pressure = now;
        let pause = retry_after.unwrap_or(Duration::from_secs(1));
        s.paused_until = s.paused_until.max(now + pause);
        if now.duration_since(s.last_cut) > pause.max(Duration::from_millis(500)) {
            s.last_cut = now;
            s.rate = (s.rate * 0.5).max(self.config.min_rate);
        }
    }

    fn grow(&self, s: &mut State, now: Instant) {
        let since = now.duration_since(s.last_adjust);
        if !s.pressured {
            if since >= Duration::from_millis(250) {
                s.rate = (s.rate * 2.0).min(self.config.max_rate);
                s.last_adjust = now;
            }
        } else if now.duration_since(s.last_pressure) > Duration::from_secs(2)
            && since >= Duration::from_millis(500)
        {
            // No pressure reported lately: the budget has room; creep up 10 % a second.
            s.rate = (s.rate * (1.0 + 0.1 * since.as_secs_f64())).min(self.config.max_rate);
            s.last_adjust = now;
        }
    }
}

/// `x-ms-throttle-limit-percentage` as a percentage. A reading in whole tenths (0.8, 0.9, …)
/// covers the tenth above it, so it counts as the tenth's middle (0.9 → 95 %).
pub fn header_percent(value: f64) -> f64 {
    if value > 5.0 {
        return value; // already a percentage
    }
    let percent = value * 100.0;
    if ((value * 10.0) - (value * 10.0).round()).abs() < 1e-9 {
        percent + 5.0
    } else {
        percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_fractions_of_the_limit() {
        assert_eq!(header_percent(0.8), 85.0);
        assert_eq!(header_percent(1.0), 105.0);
        assert!((header_percent(0.87) - 87.0).abs() < 1e-9);
        assert_eq!(header_percent(92.0), 92.0);
    }

    fn limiter() -> WriteLimiter {
        WriteLimiter::new(LimiterConfig {
            initial_rate: 20.0,
            max_rate: 1000.0,
            min_rate: 1.0,
            target_percent: 93.0,
        })
    }

    #[test]
    fn steers_towards_the_target() {
        let l = limiter();
        std::thread::sleep(Duration::from_millis(110));
        l.observe_percent(99.0);
        assert!(l.rate() < 20.0, "slows above the target");
        let slow = l.rate();
        std::thread::sleep(Duration::from_millis(110));
        l.observe_percent(82.0);
        assert!(l.rate() > slow, "speeds up below the target");
    }

    #[test]
    fn throttling_cuts_once_per_burst_and_pauses() {
        let l = limiter();
        l.observe_throttled(Some(Duration::from_secs(2)));
        let cut = l.rate();
        assert!((cut - 10.0).abs() < 1e-9);
        l.observe_throttled(Some(Duration::from_secs(2)));
        assert_eq!(l.rate(), cut, "a burst of 429s is one signal");
        assert!(l.state.lock().paused_until > Instant::now() + Duration::from_secs(1));
    }
}
