//! Per-tenant pacing of directory writes, so a long job runs near the tenant's throttle budget
//! instead of bouncing off it.
//!
//! Writes are paced at a rate that adapts to the directory's feedback:
//! - until the directory first pushes back, the rate doubles every 100 ms (a job against an
//!   unthrottled directory soon runs at full speed);
//! - `x-ms-throttle-limit-percentage` (sent from 80 % of the budget, over the directory's sliding
//!   window, in tenths) steers the rate: below the target band it grows gently, inside the band
//!   it edges up slowly, never far above the rate actually sent, and at a full budget (100 % and over) it is cut at once and the next write waits
//!   a moment, before the directory has to refuse anything;
//! - a 429 pauses all writes until its `Retry-After` has passed and sets the rate to what the
//!   budget evidently carries: the writes sent over the last seconds, spread over those seconds
//!   plus the wait, at the target share — once per burst of 429s;
//! - with no pressure reported for a while, the rate creeps back up.

use std::collections::VecDeque;
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

/// How often the fast start doubles the rate.
const FAST_START_STEP: Duration = Duration::from_millis(100);
/// Readings within this many points of the target hold the rate: the directory reports in
/// tenths, so a narrower band could only oscillate.
const HOLD_BAND: f64 = 5.0;
/// How far back the writes sent are remembered, to judge what a budget carries.
const LOOKBACK: Duration = Duration::from_secs(10);
/// Granularity of that memory.
const BUCKET: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct State {
    rate: f64,
    /// The last grant: when, and how many writes. The next may start once those writes' share
    /// of a second at the rate in force *now* has passed, so a rate raised meanwhile applies at
    /// once.
    last_grant: (Instant, u32),
    /// No write before this (a gap left at a full budget).
    gap_until: Instant,
    paused_until: Instant,
    /// Seen any pressure yet (switches from fast start to steering).
    pressured: bool,
    last_adjust: Instant,
    last_cut: Instant,
    last_pressure: Instant,
    /// Writes granted over the last [`LOOKBACK`], in [`BUCKET`]s: (bucket start, writes).
    granted: VecDeque<(Instant, u64)>,
    first_grant: Option<Instant>,
}

impl State {
    fn record_grant(&mut self, now: Instant, writes: u32) {
        self.first_grant.get_or_insert(now);
        match self.granted.back_mut() {
            Some((start, n)) if now.duration_since(*start) < BUCKET => *n += u64::from(writes),
            _ => self.granted.push_back((now, u64::from(writes))),
        }
        while let Some(&(t, _)) = self.granted.front() {
            if now.duration_since(t) > LOOKBACK {
                self.granted.pop_front();
            } else {
                break;
            }
        }
    }

    /// Writes per second granted over the last [`LOOKBACK`] (or since the first write).
    fn sent_rate(&self, now: Instant) -> Option<f64> {
        self.carried_rate(now, Duration::ZERO)
    }

    /// The writes per second a budget evidently carries, given that after the writes granted
    /// over the last [`LOOKBACK`] (or since the first write, if sooner) it asks to `wait`.
    fn carried_rate(&self, now: Instant, wait: Duration) -> Option<f64> {
        let since = now.duration_since(self.first_grant?).min(LOOKBACK);
        let sent: u64 = self
            .granted
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= since)
            .map(|(_, n)| n)
            .sum();
        let span = (since + wait).as_secs_f64();
        (sent > 0 && span > 0.0).then(|| sent as f64 / span)
    }
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
                last_grant: (now, 0),
                gap_until: now,
                paused_until: now,
                pressured: false,
                last_adjust: now,
                last_cut: now - Duration::from_secs(60),
                last_pressure: now,
                granted: VecDeque::new(),
                first_grant: None,
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
                let (last, n) = s.last_grant;
                let slot = last + Duration::from_secs_f64(f64::from(n) / s.rate);
                let at = slot.max(s.paused_until).max(s.gap_until);
                if at <= now {
                    s.last_grant = (now, writes);
                    s.record_grant(now, writes);
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
        s.last_pressure = s.last_pressure.max(now);
        if percent >= 100.0 {
            // The budget is full: the next writes would be refused. Cut now (once a second,
            // the reading lags the rate) and leave a gap before the next write.
            if now.duration_since(s.last_cut) >= Duration::from_secs(1) {
                s.last_cut = now;
                s.last_adjust = now;
                let sent = s.sent_rate(now).unwrap_or(s.rate);
                s.rate = (s.rate.min(sent) * 0.9).max(self.config.min_rate);
            }
            let gap = Duration::from_secs_f64((20.0 / s.rate).min(1.0));
            s.gap_until = s.gap_until.max(now + gap);
            tracing::debug!(percent, rate = s.rate, "write pacing: budget full");
            return;
        }
        // Steer at most every 100 ms.
        if now.duration_since(s.last_adjust) < Duration::from_millis(100) {
            return;
        }
        s.last_adjust = now;
        let error = self.config.target_percent - percent;
        s.rate = if error.abs() <= HOLD_BAND {
            // On target: edge up slowly (0.2 % a step), but never more than 3 % above the rate
            // actually sent over the last seconds, which is what the reading measured (a rate
            // raised since would show only later, too late). Step down towards it rather than
            // jump: the last seconds may include a pause.
            match s.sent_rate(now) {
                Some(sent) if sent * 1.03 < s.rate => (s.rate * 0.97).max(sent * 1.03),
                Some(sent) => (s.rate * 1.002).min(sent * 1.03),
                None => s.rate,
            }
        } else if error > 0.0 {
            // Below the band: grow gently, since the reading covers the directory's whole
            // window and lags the rate (0.5 % a step, 1 % when far below).
            s.rate * if error > 2.0 * HOLD_BAND { 1.01 } else { 1.005 }
        } else {
            s.rate * 0.97
        }
        .clamp(self.config.min_rate, self.config.max_rate);
        tracing::debug!(percent, rate = s.rate, "write pacing: steered");
    }

    /// A 429: pause until `retry_after`, and (once per burst of 429s) set the rate to what the
    /// budget evidently carries, at the target share — never higher than it was.
    pub fn observe_throttled(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.pressured = true;
        let pause = retry_after.unwrap_or(Duration::from_secs(1));
        s.paused_until = s.paused_until.max(now + pause);
        // No creeping up while paused.
        s.last_pressure = s.last_pressure.max(s.paused_until);
        s.last_adjust = s.last_adjust.max(s.paused_until);
        if now.duration_since(s.last_cut) > pause.max(Duration::from_millis(500)) {
            s.last_cut = now;
            let carried = s
                .carried_rate(now, pause)
                .map_or(s.rate * 0.5, |r| r * self.config.target_percent / 100.0);
            s.rate = carried.min(s.rate).max(self.config.min_rate);
        }
        tracing::debug!(?pause, rate = s.rate, "write pacing: throttled");
    }

    fn grow(&self, s: &mut State, now: Instant) {
        if now < s.last_adjust {
            return; // paused
        }
        let since = now.duration_since(s.last_adjust);
        if !s.pressured {
            if since >= FAST_START_STEP {
                s.rate = (s.rate * 2.0).min(self.config.max_rate);
                s.last_adjust = now;
            }
        } else if now.saturating_duration_since(s.last_pressure) > Duration::from_secs(2)
            && since >= Duration::from_millis(500)
        {
            // No pressure reported lately: the budget has room; creep up 5 % a second (the
            // directory's readings lag, so faster would overshoot).
            s.rate = (s.rate * (1.0 + 0.05 * since.as_secs_f64())).min(self.config.max_rate);
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

    #[tokio::test]
    async fn a_429_sets_the_rate_the_budget_carried() {
        let l = limiter();
        let started = Instant::now();
        for _ in 0..30 {
            l.acquire(20).await;
        }
        assert!(l.rate() > 20.0, "doubles while nothing pushes back");
        // 600 writes went out since `started` and the directory asks to wait 5 s: the budget
        // carries 600 over that time plus 5 s; aim for 93 % of that.
        let spent = started.elapsed().as_secs_f64();
        l.observe_throttled(Some(Duration::from_secs(5)));
        let rate = l.rate();
        let expected = 600.0 / (spent + 5.0) * 0.93;
        assert!(
            (rate - expected).abs() < expected * 0.05,
            "{rate} vs {expected}"
        );
        assert!(l.state.lock().paused_until > Instant::now() + Duration::from_secs(4));
    }

    #[test]
    fn steers_towards_the_target_band() {
        let l = limiter();
        l.observe_percent(85.0); // ends the fast start
        let set = |rate: f64| {
            let mut s = l.state.lock();
            s.rate = rate;
            s.last_adjust = Instant::now() - Duration::from_millis(200);
        };
        set(50.0);
        l.observe_percent(85.0);
        assert!(l.rate() > 50.0, "grows below the band");
        set(50.0);
        l.observe_percent(95.0);
        assert_eq!(
            l.rate(),
            50.0,
            "holds inside the band while nothing was sent"
        );
        set(50.0);
        l.observe_percent(99.0);
        assert!(l.rate() < 50.0, "slows above the band");
        set(50.0);
        let before = Instant::now();
        l.observe_percent(105.0);
        assert!((l.rate() - 45.0).abs() < 1e-9, "a full budget cuts at once");
        assert!(
            l.state.lock().gap_until >= before + Duration::from_millis(400),
            "and leaves a gap before the next write"
        );
        l.observe_percent(105.0);
        assert!((l.rate() - 45.0).abs() < 1e-9, "once a second");
    }

    #[test]
    fn throttling_cuts_once_per_burst_and_pauses() {
        let l = limiter();
        // Nothing sent yet: half the rate.
        l.observe_throttled(Some(Duration::from_secs(2)));
        let cut = l.rate();
        assert!((cut - 10.0).abs() < 1e-9);
        l.observe_throttled(Some(Duration::from_secs(2)));
        assert_eq!(l.rate(), cut, "a burst of 429s is one signal");
        assert!(l.state.lock().paused_until > Instant::now() + Duration::from_secs(1));
    }
}
