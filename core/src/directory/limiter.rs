//! Per-tenant scheduling of directory writes against the directory's write budget, so that a long
//! job uses every write the budget allows without provoking 429s.
//!
//! # The rule it schedules against
//!
//! Microsoft Graph throttles writes per app and tenant with a *sliding window*: at most `L`
//! writes in any `W` (the identity and access service allows 3,000 writes per 150 s per app and
//! tenant; other services have other shapes — see <https://learn.microsoft.com/graph/throttling>
//! and <https://learn.microsoft.com/graph/throttling-limits>). A refused request is answered 429
//! with `Retry-After` in whole seconds; an accepted one carries `x-ms-throttle-limit-percentage`
//! (the used share of the limit, floored to tenths) once 80 % of it is used. Inside a `$batch`
//! each request is charged on its own, in order, and has its own answer and headers.
//!
//! Under a sliding window the fastest schedule is not a rate: it is a burst of `L` writes, then
//! each next write as soon as the write `L` places back leaves the window (a constant rate of
//! `L/W` takes about twice as long for two windows). So the scheduler learns `L` and `W` and
//! grants write `i` no earlier than the time write `i − L` was charged, plus `W`:
//!
//! - **Learning `L`** (the *fill*): writes go out only as far as the readings prove there is
//!   room. While the window only fills (nothing has aged out yet), every accepted write with a
//!   reading below `r` (none = below 0.8, 0.8, 0.9, below 1.0) proves the capacity left to this
//!   app exceeds `count(below r) / r`; when both the 80 % and the 90 % marks were crossed, the
//!   gap between them is a tenth of `L`. Each answer widens the proof, so the burst grows by a
//!   quarter per round trip until 80 %, then closes in on the limit exactly, with no 429. The
//!   first reading of 100 % (or a 429) ends the fill: the writes accepted are the capacity, and
//!   the marks crossed say how much of `L` was already used by another client of the same app
//!   and tenant (those writes are modelled as spent at the first write and age out with it).
//! - **Learning `W`**: the first write past a full window is a single-write probe; its 429's
//!   `Retry-After` bounds `W` to a second. Further single-write probes bisect that second
//!   (a refused probe raises the lower bound, an accepted one lowers the upper bound) until
//!   the bounds are within 0.5 % of `W` (or two round trips); refused probes are capped to keep
//!   429s well under 1 % of requests. The schedule always uses the upper bound, so it never
//!   relies on a guess. A probe's age — between its reference write's charge and its own — is
//!   known only between the two sends and answers: an accepted probe bounds `W` from above by
//!   the longest it may be (the reference's send to the probe's answer, less the shortest round
//!   trip seen: the reference's way there and the probe's way back take about one), a refused
//!   one from below by the shortest (the reference's answer to the probe's send). With the whole
//!   round trip left in, the bound stayed about a round trip above `W` (2.025 s for 2 s, twenty
//!   seconds in) and every window of a 2 s budget started that much late: 96.7–97.6 % of the
//!   budget at 40 writes per 2 s against 98.3–98.4 % net of it (`licensor-bench --scenario
//!   throttle --write-budget 40/2000`, 20 ± 10 ms latency). Measured answer to
//!   answer, a reference answered late (a busy client takes hundreds of milliseconds to read a
//!   `$batch` answer) made the window seem shorter than it is, and every window's first writes
//!   then went out early into 429s.
//! - **Timing** is measured on the client's side from the answers: a write is counted in the
//!   window from the moment its answer arrived (never earlier than it was charged), and the next
//!   write may be sent a little before the slot frees: by the shortest round trip seen, as it
//!   cannot reach the directory sooner.
//! - **Re-learning**: a 429 that the model did not expect (another client spending the same
//!   budget) counts the window as full from that moment; those writes age out after `W` like
//!   ours. The same again once those have left, in the next window or the one after, shows
//!   the budget is smaller than `L` (learned too high, or shared with a client that spends all
//!   the time): `L` comes down to our writes in the window. A reading below 100 % when the
//!   model counts the window full shows room the model missed: foreign writes left early, or
//!   `L` is larger than proved so far.
//! - **A budget that shrinks**: a window reported full (a 100 % reading or a 429) while the
//!   model counts more than a tenth of the capacity free, or after our writes crossed the 80 %
//!   and 90 % marks in a way that measures less than nine tenths of `L`, is no timing error at
//!   a window's edge. `L` comes down at once, not a window later: to our writes answered
//!   between the 80 % and 90 % readings times ten (a tenth of `L`, as in the fill), or our
//!   writes in the window if fewer (see [`State::full_with_room`]). Sooner still: when our
//!   writes, having filled the window from below 80 % themselves, reach the 90 % mark
//!   measuring a budget under nine tenths of `L`, nothing more goes out until the writes in
//!   flight are answered (they fill the last tenth), and `L` comes down to the measure (see
//!   [`State::settle_hold`]).
//! - **Grants re-checked at send**: a grant waits for a place in flight after it is given, and
//!   goes only if the window as modelled then still has room for it ([`Grant::send_now`]): a
//!   window found full or a limit brought down meanwhile withdraws the writes granted and not
//!   yet sent, which ask again.
//! - **After a spell with nothing written** of a whole window, the limit is learned again by a
//!   fill (see [`State::after_idle`]): the budget may have changed meanwhile. A fill itself
//!   starts over after a second with nothing written: some of its writes may have left the
//!   window, whose length it does not know yet.
//! - **A budget that grows** (another client of the same app stops spending, or the directory
//!   allows more): every accepted write's reading bounds `L` from below as in the fill — our
//!   writes surely in the window over the reading's upper end (no reading: 80 %) — and the
//!   limit is raised to that bound, a quarter more per round trip while readings stay absent.
//!   While the schedule counts the window full for long (Graph's 150 s window after a burst),
//!   no write would go to carry a reading, so a single *limit probe* goes now and then: refused,
//!   it costs one 429 (under 0.25 % of a window's writes); accepted, its reading raises the
//!   limit. A limit of 3,000 learned for a budget grown to 30,000 per 150 s was otherwise learned
//!   back a write at a time, after the window freed: minutes of a job writing nothing.
//!
//! Until the directory first pushes back (a reading of 80 % or more, or a 429), the fill also
//! lets out writes by time alone: the first burst, doubled every second since the fill's first
//! write while callers use it (never more than twice the writes out, then doubled from
//! there). The proof grows by a quarter per *round trip*, so on its own it would hold a new
//! client of a slowly answering directory (round trips of seconds) back for tens of round
//! trips — a worker that starts or takes over a job mid-way would crawl for a minute. Over a
//! fast directory the proof outgrows the clock and the fill is as careful as described; over a
//! slow one the in-flight limit is what bounds the writes out when the first reading comes. A
//! directory that never reports pressure (no throttling) is thus never held back for more than
//! a few seconds.
//!
//! Units: durations are wall-clock time on the client ([`tokio::time::Instant`], so tests can
//! pause time); `L` and counts are writes (one request inside a `$batch` is one write).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    /// Ceiling on writes per second, whatever the directory allows.
    pub max_rate: f64,
    /// Share of the learned write budget to fill, in percent (100 = all of it).
    pub target_percent: f64,
}

/// Writes let out before the directory has said anything: one `$batch`.
const FIRST_BURST: u64 = 20;
/// Until the directory first pushes back (a reading of 80 % or more, or a 429), the writes let
/// out also double this often, whatever the answers have proved: a new client of a directory
/// that answers slowly (a round trip of seconds) reaches full speed within seconds, not after
/// the tens of round trips the proof alone would take. Over a fast directory the proof (a
/// quarter more per round trip) outgrows it, so nothing changes there.
const UNPRESSED_DOUBLING: Duration = Duration::from_secs(1);
/// The window is known well enough once its bounds are this close, relative to it.
const WINDOW_PRECISION: f64 = 0.005;
/// ... or this close in absolute terms.
const WINDOW_PRECISION_MIN: Duration = Duration::from_millis(4);
/// Slack added to the window's upper bound when scheduling, at first; each 429 the schedule
/// did not expect adds [`MARGIN_STEP`] (up to [`MARGIN_MAX`]) and halves the send-ahead, since
/// times measured on our side carry the noise of both answers.
const WINDOW_MARGIN: Duration = Duration::from_millis(5);
const MARGIN_STEP: Duration = Duration::from_millis(4);
const MARGIN_MAX: Duration = Duration::from_millis(50);
/// Refused probes allowed: this many, plus one per [`PROBE_WRITES_PER_REFUSAL`] writes granted.
const PROBE_REFUSALS_BASE: u64 = 8;
const PROBE_WRITES_PER_REFUSAL: u64 = 400;
/// Fills started again because the window was found spent by another client, at most (see
/// [`State::end_fill`]).
const MAX_INCONCLUSIVE_FILLS: u32 = 2;
/// A limit probe (see [`State::limit_probe_at`]) goes only when the schedule's next write is at
/// least this far off: a short window frees soon enough, and its writes then carry readings.
const LIMIT_PROBE_WAIT: Duration = Duration::from_secs(10);
/// Limit probes go at most this often per window (and once per [`LIMIT_PROBE_WAIT`])...
const LIMIT_PROBES_PER_WINDOW: u32 = 8;
/// ... and at most once per this many writes of the limit's worth of window: refused ones stay
/// under 0.25 % of the writes a full window lets out.
const LIMIT_WRITES_PER_PROBE: u64 = 400;
/// Round trips remembered for the send-ahead (the shortest of them is used).
const RTT_SAMPLES: usize = 64;
/// Nothing granted for a window and this much more: the limit is learned again; for this long
/// during a fill: the fill starts over (see [`State::after_idle`]). A job's lanes come back for
/// the next window's writes within it.
const IDLE_MARGIN: Duration = Duration::from_secs(1);
/// Writes remembered while the limit is unknown (a directory that never pushes back).
const MAX_LOG: usize = 200_000;

/// What the write budget allows soon, as [`WriteLimiter::outlook`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlook {
    /// The budget is not learned yet (or nothing is known to hold writes back): no bound.
    Open,
    /// About this many writes may be granted within the horizon asked for (at least one).
    Ready(u64),
    /// None within the horizon: the next may be granted at this time.
    Wait(Instant),
}

/// The directory's answer to one write, in the order the directory charged them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WriteAnswer {
    /// Charged and answered (successfully or not, but not throttled), with the value of
    /// `x-ms-throttle-limit-percentage` if sent (a fraction of the limit, e.g. `0.9`, or a
    /// percentage).
    Accepted { reading: Option<f64> },
    /// Answered 429: not charged.
    Refused { retry_after: Option<Duration> },
    /// No answer (connection lost, timeout, an error for the whole request), or one saying the
    /// directory failed while carrying it out (500, 502, 504): may have been charged.
    Unknown,
    /// Answered that it was not carried out for a reason other than the budget (503 Service
    /// Unavailable, see [`DirectoryError::refused`](super::DirectoryError::refused)): not
    /// charged, and it says nothing of the budget.
    NotCarriedOut,
}

impl WriteAnswer {
    /// The answer an HTTP status gives a write, alone or inside a `$batch`, with its
    /// `x-ms-throttle-limit-percentage` reading and `Retry-After`:
    /// - 429: refused, not charged;
    /// - 5xx (503, 504, …): the directory failed to carry it out, and whether it was charged is
    ///   not known. Read as accepted with no reading, such writes proved room the budget does not
    ///   have: a fill under 30 % injected 503s learned a limit of 7,720 writes where the
    ///   directory allowed 1,000;
    /// - anything else (2xx, and 400, 404, … refused on their merits): carried out as far as the
    ///   directory got, and charged.
    pub fn of_status(status: u16, reading: Option<f64>, retry_after: Option<Duration>) -> Self {
        match status {
            429 => WriteAnswer::Refused { retry_after },
            503 => WriteAnswer::NotCarriedOut,
            500.. => WriteAnswer::Unknown,
            _ => WriteAnswer::Accepted { reading },
        }
    }
}

/// The right to send some writes now. Report their answers with [`Grant::answered`]; a grant
/// dropped unanswered counts its writes as charged when dropped.
#[must_use = "report the answers with Grant::answered"]
pub struct Grant {
    shared: Arc<Shared>,
    writes: u32,
    sent: Instant,
    kind: Kind,
    settled: bool,
    /// Not sent yet: counted in [`State::unsent`] until [`Grant::send_now`].
    unsent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Granted while the limit is being learned (fill number `epoch`).
    Fill { epoch: u64 },
    /// Granted by the schedule.
    Scheduled,
    /// A single write sent to learn the window, accepted once `reference` (the write that has
    /// to leave the window first) has: its answer time, and `reference_sent`, its send time.
    Probe {
        reference: Instant,
        reference_sent: Instant,
    },
    /// A single write sent while the schedule counts the window full, to learn whether the
    /// budget has grown (see [`State::limit_probe_at`]).
    LimitProbe,
}

impl Grant {
    /// How many writes may be sent (at least one, at most what was asked).
    pub fn writes(&self) -> u32 {
        self.writes
    }

    /// The request carrying the writes is about to be sent (round trips are timed from here):
    /// whether they may still go. A grant waits for a place in flight after it is given (writes
    /// waiting for the budget hold no place that reads could use), and meanwhile the limiter
    /// may have learned that the window has no room for them: the directory reported it full
    /// while the model counted room (a budget that shrank, another client spending), or the
    /// limit was brought down. Sent anyway, they would be answered 429: a job's four lanes had
    /// up to 2,000 writes granted and waiting for 16 places when the demo's budget was cut from
    /// 30,000 to 3,000 per 150 s, and 300–850 requests were refused. `false`: give the grant back
    /// with [`Grant::unused`] and ask again. Probes always go.
    pub fn send_now(&mut self) -> bool {
        self.sent = Instant::now();
        let mut s = self.shared.state.lock();
        if std::mem::take(&mut self.unsent) {
            s.unsent -= u64::from(self.writes);
        }
        let go = s.still_fits(&self.shared.config, self.kind, self.sent);
        if !go {
            // Not let out after all.
            s.withdrawn += u64::from(self.writes);
            s.granted -= u64::from(self.writes);
        }
        go
    }

    /// The directory's answers, one per write granted, in the order it charged them (a `$batch`
    /// charges its requests in order). Missing answers count as [`WriteAnswer::Unknown`].
    pub fn answered(mut self, answers: &[WriteAnswer]) {
        self.settled = true;
        let mut all: Vec<WriteAnswer> =
            answers.iter().take(self.writes as usize).copied().collect();
        all.resize(self.writes as usize, WriteAnswer::Unknown);
        let unsent = std::mem::take(&mut self.unsent);
        self.shared
            .settle(self.sent, self.writes, self.kind, unsent, &all);
    }

    /// Give up the grant without sending anything.
    pub fn unused(mut self) {
        self.settled = true;
        let mut s = self.shared.state.lock();
        s.outstanding -= u64::from(self.writes);
        if std::mem::take(&mut self.unsent) {
            s.unsent -= u64::from(self.writes);
        }
        s.settle_hold();
        if matches!(self.kind, Kind::Probe { .. } | Kind::LimitProbe) {
            s.probe_out = false;
        }
        // The last write of a full fill given up: nothing else would settle the limit.
        if s.limit.is_none() && s.fill.full && s.outstanding == 0 {
            s.end_fill(Instant::now());
        }
        drop(s);
        self.shared.notify.notify_waiters();
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if !self.settled {
            let all = vec![WriteAnswer::Unknown; self.writes as usize];
            let unsent = std::mem::take(&mut self.unsent);
            self.shared
                .settle(self.sent, self.writes, self.kind, unsent, &all);
        }
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("writes", &self.writes)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Writes promised to work a caller took on after [`WriteLimiter::pledge`] (a job step's
/// chunk of members), not yet granted. Grants for that work redeem it
/// ([`Pledge::redeem`]); what is left is given back when it is dropped or cut
/// ([`Pledge::cut_to`]). Meanwhile other callers' outlooks count it as spent, so they do not
/// take on work for the same free slots and then give it back unsent.
pub struct Pledge {
    shared: Arc<Shared>,
    /// Writes still pledged; changed only under the state lock.
    left: AtomicU64,
}

impl Pledge {
    /// Writes still pledged.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// `writes` of the pledge were granted (they now count as outstanding instead).
    pub fn redeem(&self, writes: u32) {
        let mut s = self.shared.state.lock();
        let left = self.left.load(Ordering::Relaxed);
        let n = left.min(u64::from(writes));
        self.left.store(left - n, Ordering::Relaxed);
        s.pledged = s.pledged.saturating_sub(n);
    }

    /// The work turned out smaller (fewer members were there to take): keep at most `writes`
    /// pledged.
    pub fn cut_to(&self, writes: u64) {
        let mut s = self.shared.state.lock();
        let left = self.left.load(Ordering::Relaxed);
        if left > writes {
            self.left.store(writes, Ordering::Relaxed);
            s.pledged = s.pledged.saturating_sub(left - writes);
        }
    }
}

impl Drop for Pledge {
    fn drop(&mut self) {
        let left = self.left.load(Ordering::Relaxed);
        if left > 0 {
            let mut s = self.shared.state.lock();
            s.pledged = s.pledged.saturating_sub(left);
        }
    }
}

impl std::fmt::Debug for Pledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pledge")
            .field("left", &self.left())
            .finish()
    }
}

/// What the fill (learning `L`) has seen: answered writes of this fill by reading.
#[derive(Debug, Default)]
struct Fill {
    epoch: u64,
    /// Proven capacity: this many writes of ours fit in the window.
    proven: u64,
    accepted: u64,
    /// Accepted with no reading (below 80 %), below 90 %, below 100 %.
    below8: u64,
    below9: u64,
    below10: u64,
    seen8: bool,
    seen9: bool,
    /// A 100 % reading or a 429 came: no more grants; the limit is settled once every write of
    /// this fill is answered.
    full: bool,
    /// A 429 came during the fill: `Retry-After`, the answer time and the send time.
    refused: Option<(Duration, Instant, Instant)>,
    first_answer: Option<Instant>,
    /// When this fill let out its first write.
    started: Option<Instant>,
    /// Where [`Fill::unpressed`] doubles from, when not from the first burst at `started`: the
    /// allowance was moved down to twice what had gone out (see [`Fill::hold_unpressed`]).
    unpressed_from: Option<(Instant, u64)>,
    /// The allowance by time carried over from the fill this one started over from (see
    /// [`State::after_idle`]): [`Fill::hold_unpressed`] holds it no lower.
    carried: u64,
    /// No write of this fill goes out before then: the window an earlier fill found spent by
    /// another client frees (see [`State::end_fill`]).
    not_before: Option<Instant>,
}

impl Fill {
    /// Whether the directory has pushed back yet: a reading of 80 % or more, or a 429.
    fn pushed_back(&self) -> bool {
        self.seen8 || self.full || self.refused.is_some()
    }

    /// Writes let out by time alone while the directory has not pushed back: the first burst,
    /// doubled every [`UNPRESSED_DOUBLING`] since the fill's first write (0 once it pushed back),
    /// or since it was last held to what went out ([`Fill::hold_unpressed`]).
    fn unpressed(&self, now: Instant) -> u64 {
        if self.pushed_back() {
            return 0;
        }
        let Some((from, writes)) = self.unpressed_base() else {
            return FIRST_BURST;
        };
        let doublings =
            now.saturating_duration_since(from).as_secs_f64() / UNPRESSED_DOUBLING.as_secs_f64();
        (writes as f64 * doublings.min(40.0).exp2()).min(MAX_LOG as f64) as u64
    }

    fn unpressed_base(&self) -> Option<(Instant, u64)> {
        self.unpressed_from
            .or_else(|| self.started.map(|t| (t, FIRST_BURST)))
    }

    /// When [`Fill::unpressed`] lets out `writes` in all (`None`: never, the directory pushed
    /// back; only answers help).
    fn unpressed_reaches(&self, writes: u64) -> Option<Instant> {
        if self.pushed_back() || writes > MAX_LOG as u64 {
            return None;
        }
        let (from, base) = self.unpressed_base()?;
        let doublings = (writes as f64 / base as f64).log2().max(0.0);
        Some(from + UNPRESSED_DOUBLING.mul_f64(doublings) + Duration::from_millis(1))
    }

    /// The allowance by time grows while callers use it, not while they write slowly: one that
    /// has grown past twice the writes out (`used`, at least the first burst) is moved down to
    /// that and doubles from now. A job writing slower than the budget kept a fill going for
    /// seconds, its allowance doubling all the while, and a job that then met the budget had
    /// hundreds of writes let out at once into a window with room for tens (263 of 2,263
    /// requests refused in `a_fill_longer_than_the_window_counts_only_the_window`).
    fn hold_unpressed(&mut self, now: Instant, used: u64) {
        let most = (2 * used.max(FIRST_BURST)).max(self.carried);
        if self.started.is_some() && self.unpressed(now) > most {
            self.unpressed_from = Some((now, most));
        }
    }

    fn prove(&mut self, outstanding: u64) {
        let mut proven = self.proven.max(FIRST_BURST);
        // Capacity > count(below r) / r, rounded up (a reading exactly at a mark may be
        // reported as the tenth below it).
        if self.below8 > 0 {
            proven = proven.max((self.below8 * 10).div_ceil(8));
        }
        if self.below9 > 0 {
            proven = proven.max((self.below9 * 10).div_ceil(9));
        }
        if self.below10 > 0 {
            proven = proven.max(self.below10 + 1);
        }
        // Both marks crossed, everything answered: a tenth of L lies between them, and the
        // capacity is at least that tenth past the 90 % mark (one write of slack each side).
        if outstanding == 0 && self.seen9 && self.below8 > 0 && self.below9 > self.below8 {
            let tenth = self.below9 - self.below8;
            proven = proven.max(self.below9 + tenth - 1);
        }
        self.proven = proven;
    }

    /// The lowest limit `L` consistent with the marks, given the capacity `cap` this fill found.
    fn limit_floor(&self, cap: u64) -> u64 {
        let mut floor = cap;
        if self.below8 > 0 && self.seen8 {
            // 0.8 L ≤ used(before) + below8 + 1 and used(before) = L − cap.
            floor = floor.max(5 * cap.saturating_sub(self.below8 + 1));
        }
        if self.below9 > 0 && self.seen9 {
            floor = floor.max(10 * cap.saturating_sub(self.below9 + 1));
        }
        floor
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the write's answer came (it was charged no later).
    at: Instant,
    /// When it was sent (it was charged no earlier); `at` for a modelled foreign write.
    sent: Instant,
    /// Spent by someone else (modelled), not by us.
    foreign: bool,
    /// Ours, and answered as charged (accepted): not one whose fate is unknown.
    charged: bool,
    /// The reading it was answered with, in tenths: 8, 9 or 10 (0: none, below 80 %, or not
    /// accepted).
    band: u8,
}

impl Entry {
    fn foreign(at: Instant) -> Entry {
        Entry {
            at,
            sent: at,
            foreign: true,
            charged: false,
            band: 0,
        }
    }
}

#[derive(Debug)]
struct State {
    fill: Fill,
    /// Our writes per window when nobody else spends (`L`), once learned.
    limit: Option<u64>,
    /// Writes in the window as modelled: our accepted writes by answer time, and foreign ones.
    log: VecDeque<Entry>,
    /// Granted, not yet answered.
    outstanding: u64,
    /// Of `outstanding`, granted and not sent yet: waiting for a place in flight (see
    /// [`Grant::send_now`]).
    unsent: u64,
    /// Writes whose grant was withdrawn before they were sent (see [`Grant::send_now`]).
    withdrawn: u64,
    /// Nothing more goes out until every write sent is answered: our writes' readings crossed
    /// the 80 % and 90 % marks measuring a budget smaller than the limit (see
    /// [`State::settle_hold`]).
    hold: bool,
    /// Promised to work taken on the strength of an outlook and not granted yet (see
    /// [`WriteLimiter::pledge`]): [`WriteLimiter::outlook`] counts them as spent, the schedule
    /// does not (the work they are pledged to asks for them).
    pledged: u64,
    /// Bounds of the window `W`: `W > w_lo`, `W ≤ w_hi`.
    w_lo: Duration,
    w_hi: Option<Duration>,
    probe_out: bool,
    probe_refusals: u64,
    granted: u64,
    throttled: u64,
    rtts: RoundTrips,
    /// Share of the shortest round trip sent ahead of a slot freeing.
    lead_share: f64,
    /// Added to the window's upper bound when scheduling.
    margin: Duration,
    last_grant: Option<(Instant, u32)>,
    /// When a caller last wanted to write and was told to wait: an outlook or a pledge that
    /// named a later time, or a grant waited for (see [`State::after_idle`]).
    waited: Option<Instant>,
    /// Fills that found the window spent by another client and were started again.
    inconclusive_fills: u32,
    /// When the last run of 429s the schedule did not expect began (see [`State::surprised`]).
    surprised_at: Option<Instant>,
    /// Whether the directory has sent `x-ms-throttle-limit-percentage` on any answer: only then
    /// does an answer without one say the budget is less than 80 % used.
    readings_seen: bool,
    /// When the last limit probe was sent (see [`State::limit_probe_at`]).
    limit_probed: Option<Instant>,
}

/// The last [`RTT_SAMPLES`] round trips of answered writes, with their least and median kept
/// as each comes in: the scheduler asks for them at every decision, and answers come far less
/// often than decisions.
#[derive(Debug, Default)]
struct RoundTrips {
    samples: VecDeque<Duration>,
    least: Option<Duration>,
    median: Option<Duration>,
}

impl RoundTrips {
    fn push(&mut self, rtt: Duration) {
        self.samples.push_back(rtt);
        if self.samples.len() > RTT_SAMPLES {
            self.samples.pop_front();
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        self.least = sorted.first().copied();
        self.median = sorted.get(sorted.len() / 2).copied();
    }

    /// The shortest of the kept round trips (`None` before the first answer).
    fn least(&self) -> Option<Duration> {
        self.least
    }

    /// The median of the kept round trips (the upper one of an even count).
    fn median(&self) -> Option<Duration> {
        self.median
    }
}

#[derive(Debug)]
struct Shared {
    config: LimiterConfig,
    state: Mutex<State>,
    notify: Notify,
}

enum Decision {
    Grant(u32, Kind),
    /// Wait until then, or until an answer comes (`None`: only an answer helps).
    Wait(Option<Instant>),
}

impl State {
    /// How far ahead of a slot freeing a write may be sent: half the shortest round trip seen
    /// at first (a write cannot be charged before it reaches the directory), less after
    /// unexpected 429s.
    fn lead(&self) -> Duration {
        self.rtts
            .least()
            .map_or(Duration::ZERO, |d| d.mul_f64(self.lead_share))
    }

    fn window(&self) -> Option<Duration> {
        self.w_hi.map(|w| w + self.margin)
    }

    /// A 429 the schedule did not expect: be more careful with timing from now on.
    fn more_careful(&mut self) {
        self.margin = (self.margin + MARGIN_STEP).min(MARGIN_MAX);
        self.lead_share /= 2.0;
    }

    fn capacity(&self, config: &LimiterConfig) -> Option<u64> {
        self.limit
            .map(|l| ((l as f64 * config.target_percent / 100.0).floor() as u64).max(1))
    }

    /// Whether the window's bounds are as close as probing can bring them: 0.5 % of it, or twice
    /// the round trips' typical spread (median less least: a probe's age is known to within the
    /// spread of its own round trip and its reference's, see [`Shared::settle`]).
    fn window_known(&self) -> bool {
        match self.w_hi {
            Some(hi) => {
                let rtt = self
                    .rtts
                    .median()
                    .unwrap_or_default()
                    .saturating_sub(self.rtts.least().unwrap_or_default());
                let gap = hi.saturating_sub(self.w_lo);
                gap <= WINDOW_PRECISION_MIN
                    .max(hi.mul_f64(WINDOW_PRECISION))
                    .max(2 * rtt)
            }
            None => false,
        }
    }

    /// When a probe against `entry` (the write whose leaving frees the next slot) would go: when
    /// the entry is the middle of the window's bounds old. `None`: no probe (the window is known,
    /// probes are used up, or the entry is another client's, whose times are not known).
    fn probe_at(&self, entry: &Entry) -> Option<Instant> {
        if entry.foreign || self.window_known() || !self.may_probe() {
            return None;
        }
        let hi = self.w_hi?;
        let mid = self.w_lo + (hi.saturating_sub(self.w_lo)) / 2;
        Some(
            (entry.at + mid)
                .checked_sub(self.lead())
                .unwrap_or(entry.at),
        )
    }

    fn may_probe(&self) -> bool {
        !self.probe_out
            && self.probe_refusals < PROBE_REFUSALS_BASE + self.granted / PROBE_WRITES_PER_REFUSAL
    }

    fn decide(
        &mut self,
        config: &LimiterConfig,
        now: Instant,
        want: u32,
        at_least: u32,
    ) -> Decision {
        self.after_idle(now);
        if let Some((t, n)) = self.last_grant {
            let next = t + Duration::from_secs_f64(f64::from(n) / config.max_rate);
            if now < next {
                return Decision::Wait(Some(next));
            }
        }
        let Some(cap) = self.capacity(config) else {
            // Learning the limit.
            if let Some(t) = self.fill.not_before.filter(|t| now < *t) {
                return Decision::Wait(Some(t));
            }
            if self.fill.full {
                return Decision::Wait(None);
            }
            let used = self.fill.accepted + self.outstanding;
            let at_least = u64::from(at_least).min(self.fill.proven);
            let room = self.fill.proven.saturating_sub(used);
            self.fill.hold_unpressed(now, used);
            // What time alone lets out goes in whole requests (`want`), not a write at a time.
            let by_time = self.fill.unpressed(now).saturating_sub(used);
            if room >= at_least.max(1) || by_time >= u64::from(want) {
                let n = room.max(by_time).min(u64::from(want)) as u32;
                self.fill.started.get_or_insert(now);
                return Decision::Grant(
                    n,
                    Kind::Fill {
                        epoch: self.fill.epoch,
                    },
                );
            }
            if self.outstanding == 0 {
                // Nothing in flight, so no answer can widen the proof: writes whose fate is
                // unknown (a request failed as a whole, e.g. a 503) proved no room. Waiting
                // would wait for ever: let out up to another first burst; its readings go on
                // with the proof, and a 429 ends the fill.
                let n = room
                    .max(FIRST_BURST)
                    .min(u64::from(want))
                    .max(at_least)
                    .max(1) as u32;
                self.fill.started.get_or_insert(now);
                return Decision::Grant(
                    n,
                    Kind::Fill {
                        epoch: self.fill.epoch,
                    },
                );
            }
            // Until the directory pushes back, the allowance also grows with time.
            return Decision::Wait(self.fill.unpressed_reaches(used + u64::from(want)));
        };
        if self.hold {
            return Decision::Wait(None);
        }
        let at_least = at_least.min(u32::try_from(cap).unwrap_or(u32::MAX)).max(1);
        let lead = self.lead();
        let Some(window) = self.window() else {
            // The window is full and its length unknown: one write to learn it.
            if self.probe_out {
                return Decision::Wait(None);
            }
            let in_window = self.log.len() as u64 + self.outstanding;
            if in_window < cap {
                let n = (cap - in_window).min(u64::from(want)) as u32;
                return Decision::Grant(n, Kind::Scheduled);
            }
            let (reference, reference_sent) =
                self.log.front().map_or((now, now), |e| (e.at, e.sent));
            return Decision::Grant(
                1,
                Kind::Probe {
                    reference,
                    reference_sent,
                },
            );
        };
        // Writes that have left the window by the time a write sent now is charged.
        while let Some(e) = self.log.front() {
            if e.at + window <= now + lead {
                self.log.pop_front();
            } else {
                break;
            }
        }
        let in_window = self.log.len() as u64 + self.outstanding;
        if in_window + u64::from(at_least) <= cap {
            let n = (cap - in_window).min(u64::from(want)) as u32;
            return Decision::Grant(n, Kind::Scheduled);
        }
        // The entry that must leave for `at_least` more writes.
        let need = (in_window + u64::from(at_least) - cap) as usize;
        let Some(entry) = self.log.get(need - 1).copied() else {
            return Decision::Wait(None); // answers pending
        };
        let mut wake = entry.at + window - lead;
        if need == 1
            && at_least == 1
            && self.outstanding == 0
            && let Some(at) = self.probe_at(&entry)
        {
            if now >= at {
                return Decision::Grant(
                    1,
                    Kind::Probe {
                        reference: entry.at,
                        reference_sent: entry.sent,
                    },
                );
            }
            wake = wake.min(at);
        }
        if at_least == 1
            && let Some(at) = self.limit_probe_at(now, window, wake)
        {
            if now >= at {
                return Decision::Grant(1, Kind::LimitProbe);
            }
            wake = wake.min(at);
        }
        Decision::Wait(Some(wake))
    }

    /// When a *limit probe* may go, given that the schedule's next write goes at `next_write`
    /// (`None`: not before then). The schedule counts the window full with the writes it knows
    /// of, so a budget that grew — another client of the same app stopped spending, or the
    /// directory's limit was raised — would show only once those writes leave the window: for
    /// Graph's 150 s window, minutes of a job waiting on a budget that has room. One write sent
    /// anyway tells. Accepted with a reading below 100 %, it proves the limit higher (see
    /// [`State::raise_by_reading`]) and the writes that then go out carry readings that prove
    /// more, a quarter more per round trip; refused, it costs one 429 and changes nothing. So
    /// one goes only when the directory sends readings (an answer without one then says less
    /// than 80 % is used), the next scheduled write is [`LIMIT_PROBE_WAIT`] or more away,
    /// nothing is in flight, and the last limit probe (or 429 the schedule did not expect) came
    /// an eighth of the window ago or more, and no sooner than one per [`LIMIT_WRITES_PER_PROBE`]
    /// writes of the limit: refused ones stay under 0.25 % of the writes the budget lets out.
    /// On Graph's budget (3,000 per 150 s) that is one per 20 s: a budget that grew is found
    /// within 20 s. Short windows (2 s, 5 s) never need one: they free within the wait.
    fn limit_probe_at(
        &self,
        now: Instant,
        window: Duration,
        next_write: Instant,
    ) -> Option<Instant> {
        if !self.readings_seen || self.probe_out || self.outstanding > 0 {
            return None;
        }
        let limit = self.limit?.max(1);
        let gap = LIMIT_PROBE_WAIT
            .max(window / LIMIT_PROBES_PER_WINDOW)
            .max(window.mul_f64(LIMIT_WRITES_PER_PROBE as f64 / limit as f64));
        let at = [
            Some(now),
            self.limit_probed.map(|t| t + gap),
            self.surprised_at.map(|t| t + gap),
        ]
        .into_iter()
        .flatten()
        .max()?;
        (at + LIMIT_PROBE_WAIT <= next_write).then_some(at)
    }

    /// Our writes surely in the window when a write sent at `sent` and answered at `now` was
    /// charged: accepted (a write whose fate is unknown may not have been charged), answered
    /// before it was sent (so charged before it) and sent less than the
    /// window's lower bound before `now` (so charged within the window before it).
    fn surely_in_window(&self, sent: Instant, now: Instant) -> u64 {
        if self.w_lo.is_zero() {
            return 0;
        }
        let since = now.checked_sub(self.w_lo);
        self.log
            .iter()
            .filter(|e| e.charged && e.at <= sent && since.is_none_or(|t| e.sent > t))
            .count() as u64
    }

    /// An accepted write with `reading` (`None`: not sent, less than 80 % used, once the
    /// directory is known to send readings) after `before` more of ours in the same `$batch`,
    /// sent at `sent` and answered `now`: the limit is more than our writes surely in the
    /// window then, over the reading's upper end (a reading is floored to tenths: 0.9 means
    /// less than 100 % used). Raise it to that when it is higher.
    fn raise_by_reading(&mut self, reading: Option<f64>, before: u64, sent: Instant, now: Instant) {
        let Some(limit) = self.limit else { return };
        // The reading's upper end, in tenths of the limit.
        let upper = match reading {
            Some(r) => (tenths(r) * 10.0).round() as u64 + 1,
            None if self.readings_seen => 8,
            None => return,
        };
        if upper > 10 {
            return;
        }
        let ours = self.surely_in_window(sent, now) + before + 1;
        let proved = ours * 10 / upper + 1;
        if proved > limit {
            self.limit = Some(proved);
            tracing::debug!(limit = proved, "write pacing: limit raised by a reading");
        }
    }

    /// Forget writes that have left the window by `now` (no send-ahead).
    fn trim(&mut self, now: Instant) {
        let Some(window) = self.window() else { return };
        while let Some(e) = self.log.front() {
            if e.at + window <= now {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Our writes certainly in the window when a write sent at `sent` was charged: those
    /// answered before it was sent (so charged before it), less than half the window's lower
    /// bound before `now` (half, since answer times carry the noise of the way back).
    fn certainly_in_window(&self, sent: Instant, now: Instant) -> u64 {
        let since = now.checked_sub(self.w_lo / 2);
        self.log
            .iter()
            .filter(|e| !e.foreign && e.at <= sent && since.is_none_or(|t| e.at > t))
            .count() as u64
    }

    /// Our write, sent at `sent` and answered at `at`: `charged` if it was accepted (not if its
    /// fate is unknown).
    fn push(&mut self, at: Instant, sent: Instant, charged: bool, band: u8) {
        self.log.push_back(Entry {
            at,
            sent,
            foreign: false,
            charged,
            band,
        });
        if self.limit.is_none() && self.log.len() > MAX_LOG {
            self.log.pop_front();
        }
    }

    /// A 429 the schedule did not expect, answered `now`. The first run of them (the refusals
    /// of one burst, within half a window) is taken for another client's passing writes, and
    /// [`Self::fill_with_foreign`] counts the window full until it frees. A run again once those
    /// modelled writes have left, in the next window or the one after, shows the budget itself
    /// is smaller than the limit: learned too high (a fill whose window slid, or that another
    /// process of the same app filled at the same time), or shared with a client that spends
    /// all the time, which comes to the same. Counting it full each window would provoke as
    /// many 429s every window, for the rest of the job. So the limit comes down to our own
    /// writes the model holds in the window (answered ones: writes still in flight are not
    /// counted, so it may come a little lower than our use); readings below 100 % on writes
    /// answered with the window counted full raise it again, a write at a time, should the
    /// other client stop.
    fn surprised(&mut self, config: &LimiterConfig, now: Instant) {
        let Some(w) = self.window() else { return };
        let since = self.surprised_at.map(|t| now.saturating_duration_since(t));
        if since.is_some_and(|d| d < w / 2) {
            return; // the same run
        }
        self.surprised_at = Some(now);
        if self.full_with_room(config) {
            return;
        }
        if since.is_none_or(|d| d > 3 * w) {
            return;
        }
        self.lower_to_ours(None, "write pacing: 429s again, limit lowered");
    }

    /// Lower the limit to our writes the model holds in the window, when fewer: the directory
    /// was full with them, so that is what it lets us have. With `target_percent` below 100
    /// only that share of it is filled, and a limit lowered again comes back more slowly (a
    /// raise of one adds that share of a write). `crossed`: what the readings of our last
    /// crossing of the 80 % and 90 % marks measured (see [`State::crossing`]), when lower still.
    fn lower_to_ours(&mut self, crossed: Option<u64>, why: &'static str) {
        let count = self.log.iter().filter(|e| !e.foreign).count() as u64;
        let lowered = crossed.map_or(count, |m| m.min(count)).max(1);
        if lowered < count {
            // The directory counts fewer of ours than the model holds: the oldest have left its
            // window (it started over). Held on, they would prove a limit as high as before
            // once readings come below 80 % again (see [`State::raise_by_reading`]).
            let mut extra = count - lowered;
            self.log.retain(|e| {
                let drop = extra > 0 && !e.foreign;
                extra -= u64::from(drop);
                !drop
            });
        }
        if self.limit.is_some_and(|l| lowered < l) {
            self.limit = Some(lowered);
            tracing::debug!(limit = lowered, "{why}");
        }
    }

    /// The directory says its window is full (a 100 % reading, or a 429): whether that shows a
    /// budget smaller than the limit — the directory's limit came down after a larger one was
    /// learned, or another client of the same app spends — rather than timing at a window's
    /// edge, and if so, the limit comes down now (returns `true`). Two signs, with readings
    /// coming: the model counts more than a tenth of the capacity free (timing errors come with
    /// the window counted full), or our last crossing of the 80 % and 90 % marks measured a
    /// budget under nine tenths of the limit ([`State::crossing`]).
    ///
    /// Waiting for a second run of 429s a window later before the limit comes down (see
    /// [`State::surprised`]) cost a window's worth of writes sent into 429s: the demo's 3,000
    /// per 150 s budget, set again after jobs had raised the limit on a larger one, answered
    /// 996 requests 429 in one job. A limit lowered too far comes back at once: writes answered
    /// below 80 % prove it a quarter higher per round trip (see [`State::raise_by_reading`]).
    fn full_with_room(&mut self, config: &LimiterConfig) -> bool {
        let (Some(limit), Some(cap)) = (self.limit, self.capacity(config)) else {
            return false;
        };
        if !self.readings_seen {
            return false;
        }
        let crossed = self.crossing();
        let in_window = self.log.len() as u64 + self.outstanding;
        let room = in_window * 10 < cap * 9;
        let measured_less = crossed.is_some_and(|m| m * 10 < limit * 9);
        if !room && !measured_less {
            return false;
        }
        self.lower_to_ours(
            crossed,
            "write pacing: window full with room left, limit lowered",
        );
        true
    }

    /// What our newest writes' readings measured of the budget, as in the fill: when they went
    /// from below 80 % (a `$batch`'s worth in a row) through the 80 % mark to 90 % or more,
    /// those answered 80 % are a tenth of what the directory lets us have (readings are floored
    /// to tenths; fewer, when another client spent meanwhile), so the budget is at most ten
    /// times them, plus one. The directory's own measure: right when the model's count of our
    /// writes in its window is not (the emulator starts its windows over when its faults
    /// change). `None` when they made no such crossing: in a window that slides a write at a
    /// time the readings stay at 90 % and above.
    fn crossing(&self) -> Option<u64> {
        let (mut band8, mut band9, mut below) = (0u64, 0u64, 0u64);
        for e in self.log.iter().rev().filter(|e| !e.foreign && e.charged) {
            match e.band {
                8 => band8 += 1,
                9 => band9 += 1,
                10 => {}
                _ => {
                    // A few answered late below 80 % do not end the crossing.
                    below += 1;
                    if below >= FIRST_BURST {
                        return (band8 > 0 && band9 > 0).then_some(band8 * 10 + 1);
                    }
                    continue;
                }
            }
            below = 0;
        }
        None
    }

    /// Whether our last crossing of the 80 % and 90 % marks measured a budget under nine tenths
    /// of the limit, where our writes before it had filled the window from low down themselves
    /// ([`State::crossing_from_below`]).
    fn crossing_measures_less(&self) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        self.readings_seen
            && self
                .crossing_from_below()
                .is_some_and(|(m, _)| m * 10 < limit * 9)
    }

    /// [`State::crossing`], when our writes just before the crossing were answered below 80 %
    /// for at least four fifths of the budget it measures: we filled the window from low down
    /// ourselves, so the writes between the marks are a tenth of the budget, and the window
    /// holds our writes from the first of those four fifths on (its index in the log, returned
    /// with the measure). In a window that slides (a job's next window, its first writes leaving
    /// as new ones come), the readings climb through the marks from just below them, and the
    /// count between them is no measure: such a crossing brought a limit of 3,000 down to 2,801
    /// in a simulated run.
    fn crossing_from_below(&self) -> Option<(u64, usize)> {
        let measured = self.crossing()?;
        // The directory first reads 80 % on the write that fills four fifths of the budget
        // (`measured` is ten times the writes between the marks, plus one): ours before it are
        // one fewer. An older write of ours kept as in the window would be a window probe's
        // reference, and the window learned too long by the time since it.
        let filled = ((measured - 1) * 8 / 10).saturating_sub(1);
        // Below 80 %: in a row (a few answered late among the crossing's do not make a run), and
        // in all (those answered late were charged among the four fifths all the same).
        let (mut run, mut below) = (0u64, 0u64);
        for (i, e) in self.log.iter().enumerate().rev() {
            if e.foreign || !e.charged {
                continue;
            }
            if e.band >= 8 {
                if run >= FIRST_BURST {
                    // An earlier crossing: the run below it was too short.
                    return None;
                }
                run = 0;
            } else {
                run += 1;
                below += 1;
                if below >= filled {
                    return Some((measured, i));
                }
            }
        }
        None
    }

    /// A hold (see [`State::hold`]) ends once every write sent is answered: the crossing's
    /// count is then complete, and if it still measures a budget smaller than the limit, the
    /// limit comes down to it, and the model keeps of our writes only those the directory's
    /// window holds by the readings: from the first of the four fifths below 80 % on. Older ones
    /// (a budget cut in the emulator starts its windows over: the writes before it) would keep
    /// the window counted full while it has room, and a window probe timed against one of them
    /// learned a window 26 s too long.
    ///
    /// A budget cut after a larger one was learned (the demo's fault set from 30,000 to 3,000
    /// per 150 s) is first told by the readings: our writes cross 80 % and then 90 % of the
    /// smaller budget. The limit brought down only at the first 100 % reading or 429 left every
    /// write in flight then to be refused (16 places of 20 writes); held at the first 90 %
    /// reading, the writes in flight fill the last tenth instead. Held rather than brought down
    /// at once: some writes answered 80 % may still be on their way back, and the count of them
    /// is the measure.
    fn settle_hold(&mut self) {
        if !self.hold || self.outstanding > self.unsent {
            return;
        }
        self.hold = false;
        let Some(limit) = self.limit else { return };
        let Some((measured, from)) = self.crossing_from_below() else {
            return;
        };
        if measured * 10 >= limit * 9 {
            return;
        }
        let mut i = 0;
        self.log.retain(|e| {
            let keep = e.foreign || i >= from;
            i += 1;
            keep
        });
        self.limit = Some(measured);
        tracing::debug!(
            limit = measured,
            "write pacing: readings measured a smaller budget, limit lowered"
        );
    }

    /// Writes the model holds that are still in a window of `window` at `at` (a write leaves it
    /// a window after its answer).
    fn still_in_window(&self, window: Duration, at: Instant) -> u64 {
        self.log.iter().filter(|e| e.at + window > at).count() as u64
    }

    /// Whether writes granted as `kind` may still go now that their turn to be sent came (see
    /// [`Grant::send_now`]): the window as modelled has room for them beside the writes already
    /// sent. Writes granted and not sent yet are not counted: each is weighed when its own turn
    /// comes, so those that still fit go.
    fn still_fits(&self, config: &LimiterConfig, kind: Kind, now: Instant) -> bool {
        match kind {
            Kind::Probe { .. } | Kind::LimitProbe => true,
            // A fill told the window is full lets nothing more out.
            Kind::Fill { .. } if self.limit.is_none() => !self.fill.full,
            Kind::Fill { .. } | Kind::Scheduled => {
                let Some(cap) = self.capacity(config) else {
                    return true;
                };
                if self.hold {
                    return false;
                }
                let logged = match self.window() {
                    Some(window) => self.still_in_window(window, now + self.lead()),
                    None => self.log.len() as u64,
                };
                // `outstanding` holds this grant's writes, `unsent` no longer does.
                logged + self.outstanding - self.unsent <= cap
            }
        }
    }

    /// Note an outlook given to a caller: one that names a later time is a wait told.
    fn told(&mut self, outlook: Outlook) {
        if matches!(outlook, Outlook::Wait(_)) {
            self.waited = Some(Instant::now());
        }
    }

    /// What the limiter knows of the budget holds while our writes keep the directory's window
    /// busy. After a whole window and [`IDLE_MARGIN`] more with nothing granted, nothing in
    /// flight and nobody waiting to write, the limit (learned, raised by readings or brought
    /// down) says nothing of the budget now: the directory's limit may have changed, another
    /// client may spend or have stopped (the demo's fault set again after a reset and minutes
    /// of nothing written: about 900 writes sent into 429s at once on a limit raised on the
    /// larger budget). The limit is learned again by a fill, which closes in on it from the
    /// readings without 429s; the window's length, the round trips and the margins are kept.
    ///
    /// A fill (the limit not learned yet) starts over after [`IDLE_MARGIN`] with nothing
    /// granted and nothing in flight. Its proof counts every write it let out as still in the
    /// directory's window, and the window's length is not known yet: after a pause, some may
    /// have left it. A job too small to meet the budget's pressure left such a fill, and the
    /// next job's went on counting its writes (the demo: Sales, 244 writes on its 30,000 per
    /// 150 s, then 3,000 per 150 s set and an assign on All Staff — 3,244 learned, a window
    /// bounded by a probe timed against a Sales write, readings that raised the limit further,
    /// and a run of 429s for each raise). The fill that starts over counts the earlier writes
    /// still in the window by its readings, as another client's. For the same reason a fill
    /// starts over once its first write is a window old, when the window is known from an
    /// earlier fill: a job writing slower than the budget, over a window and more, then joined
    /// by one that meets it, proved a limit of all its writes since the fill began.
    ///
    /// A wait for the budget is no idleness: a lane told to wait until the window frees, and
    /// taken late by a busy process, found the window idle since its last grant and the limit
    /// learned again — a fill and a learning chunk for every late lane, and the next windows
    /// half used (`licensor-bench --scenario msp`, 500 tenants on a machine where licensor's
    /// places stayed busy: 747 limits learned again in a run). Idleness counts from the last
    /// grant or the last wait told, whichever is later.
    fn after_idle(&mut self, now: Instant) {
        let Some((granted, _)) = self.last_grant else {
            return;
        };
        if self.outstanding > 0 {
            return;
        }
        let last = self.waited.map_or(granted, |w| w.max(granted));
        let idle = now.saturating_duration_since(last);
        let stale = match (self.limit, self.fill.started) {
            (Some(_), _) => self.window().is_some_and(|w| idle >= w + IDLE_MARGIN),
            // A fill older than the window (known from an earlier one) counts writes that have
            // left it, however busy it kept.
            (None, Some(started)) => {
                idle >= IDLE_MARGIN || self.window().is_some_and(|w| now >= started + w)
            }
            (None, None) => false,
        };
        if !stale {
            return;
        }
        // `idle_ms` below the margin: a fill that had grown a window old, not a pause.
        tracing::debug!(
            learned = self.limit.is_some(),
            idle_ms = idle.as_millis() as u64,
            "write pacing: the limit is learned again"
        );
        // A fill started over keeps what its allowance by time had reached at its last grant,
        // halved for every second since, and at most twice the writes it let out: a directory
        // that has not pushed back (one answering slowly, with no throttling) is not crawled
        // through again from the first burst after each pause between a job's chunks (a
        // 20,000-member job on three workers killed every 10 s, answers in 500 ms: 9,500
        // members in 6 minutes where the whole took 3), while after seconds of nothing written
        // the allowance is the first burst again.
        let carried = match self.limit {
            None => {
                let level = self.fill.unpressed(granted) as f64;
                let halvings = idle.as_secs_f64() / UNPRESSED_DOUBLING.as_secs_f64();
                ((level / halvings.min(40.0).exp2()) as u64)
                    .min(2 * self.fill.accepted.max(FIRST_BURST))
            }
            Some(_) => 0,
        };
        self.limit = None;
        self.log.clear();
        self.fill = Fill {
            epoch: self.fill.epoch + 1,
            proven: FIRST_BURST,
            unpressed_from: (carried > FIRST_BURST).then_some((now, carried)),
            carried,
            ..Fill::default()
        };
        self.inconclusive_fills = 0;
        self.surprised_at = None;
        self.limit_probed = None;
        self.hold = false;
    }

    /// Count the window full until `until` (a 429's `Retry-After`; without one, a whole
    /// window): foreign writes fill what the model leaves free.
    ///
    /// Writes granted and not sent yet do not count: the directory has no room for them either,
    /// and they are withdrawn when their turn to go comes (see [`Grant::send_now`]).
    fn fill_with_foreign(&mut self, cap: u64, now: Instant, until: Option<Duration>) {
        let in_window = self.log.len() as u64 + self.outstanding - self.unsent;
        if in_window >= cap {
            return;
        }
        let at = match (until, self.window()) {
            (Some(ra), Some(w)) if ra < w => now - (w - ra),
            _ => now,
        };
        // Keep the log in time order.
        let i = self.log.partition_point(|e| e.at <= at);
        for _ in in_window..cap {
            self.log.insert(i, Entry::foreign(at));
        }
    }

    /// The fill is over and every write of it answered: settle the limit.
    fn end_fill(&mut self, now: Instant) {
        // A fill that never saw the window below 80 % started in a window another client of
        // the same app and tenant had (nearly) spent: what fitted says nothing about `L`, and
        // settling on it would take the budget for a few writes (and the writes that then find
        // room for a far shorter window). Learn again once that window frees: after the 429's
        // `Retry-After`, or a second after a first reading of 100 %. A directory whose window
        // is always found spent is settled on the third such fill.
        if self.fill.below8 == 0 && self.inconclusive_fills < MAX_INCONCLUSIVE_FILLS {
            self.inconclusive_fills += 1;
            let resume = match self.fill.refused {
                Some((retry_after, answered, _)) => answered + retry_after,
                None => now + Duration::from_secs(1),
            };
            // This fill's writes are counted by the next fill's readings like anyone else's;
            // as entries of our own they would make the window seem to start with them.
            self.log.clear();
            self.fill = Fill {
                epoch: self.fill.epoch + 1,
                not_before: Some(resume),
                ..Fill::default()
            };
            tracing::debug!(
                "write pacing: window found spent by another client; learning again when it frees"
            );
            return;
        }
        let cap = self.fill.accepted.max(1);
        let limit = self.fill.limit_floor(cap);
        let foreign = limit - cap;
        let at = self.fill.first_answer.unwrap_or(now);
        // Another client's writes were in the window before ours: they leave it no later than
        // our first write does.
        let mut log: VecDeque<Entry> = (0..foreign).map(|_| Entry::foreign(at)).collect();
        log.extend(self.log.drain(..));
        self.log = log;
        self.limit = Some(limit);
        if let Some((ra, answered, sent)) = self.fill.refused
            && self.w_hi.is_none()
        {
            // The refused write's age past the fill's first write: at least from that write's
            // answer to the refused one's send, at most from its send to the refused one's answer.
            let age_lo = sent.saturating_duration_since(at);
            let age = answered.saturating_duration_since(self.fill.started.unwrap_or(at));
            self.w_lo = self
                .w_lo
                .max((age_lo + ra).saturating_sub(Duration::from_secs(1)));
            self.w_hi = Some(age + ra);
        }
        tracing::debug!(
            limit,
            capacity = cap,
            foreign,
            "write pacing: limit learned"
        );
    }
}

impl Shared {
    /// `writes` granted as `kind` were answered (`answers`, one each); `unsent`: they were never
    /// sent (a grant dropped before [`Grant::send_now`]).
    fn settle(
        &self,
        sent: Instant,
        writes: u32,
        kind: Kind,
        unsent: bool,
        answers: &[WriteAnswer],
    ) {
        let now = Instant::now();
        let config = self.config;
        let mut s = self.state.lock();
        s.outstanding -= u64::from(writes);
        if unsent {
            s.unsent -= u64::from(writes);
        }
        // The send-ahead rests on the round trips of writes the directory carried out or
        // weighed against the budget, not on a refusal answered before reaching either.
        if answers.iter().any(|a| {
            matches!(
                a,
                WriteAnswer::Accepted { .. } | WriteAnswer::Refused { .. }
            )
        }) {
            s.rtts.push(now.saturating_duration_since(sent));
        }
        if answers
            .iter()
            .any(|a| matches!(a, WriteAnswer::Accepted { reading: Some(_) }))
        {
            s.readings_seen = true;
        }
        if kind == Kind::LimitProbe {
            s.probe_out = false;
        }
        match kind {
            Kind::Fill { epoch } if epoch == s.fill.epoch && s.limit.is_none() => {
                for a in answers {
                    match *a {
                        WriteAnswer::Accepted { reading } => {
                            s.fill.first_answer.get_or_insert(now);
                            s.fill.accepted += 1;
                            s.push(now, sent, true, band(reading));
                            let r = reading.map_or(0.0, tenths);
                            if r < 0.8 {
                                s.fill.below8 += 1;
                            } else {
                                s.fill.seen8 = true;
                            }
                            if r < 0.9 {
                                s.fill.below9 += 1;
                            } else {
                                s.fill.seen9 = true;
                            }
                            if r < 1.0 {
                                s.fill.below10 += 1;
                            } else {
                                s.fill.full = true;
                            }
                        }
                        WriteAnswer::Refused { retry_after } => {
                            s.throttled += 1;
                            s.fill.full = true;
                            s.fill.refused =
                                Some((retry_after.unwrap_or(Duration::from_secs(1)), now, sent));
                        }
                        // Spent, as far as the schedule knows, but no proof of room: a write
                        // the directory failed to carry out may not have been charged, and
                        // counted as fitting it would teach a limit the budget does not have.
                        WriteAnswer::Unknown => s.push(now, sent, false, 0),
                        WriteAnswer::NotCarriedOut => {}
                    }
                }
                let outstanding = s.outstanding;
                s.fill.prove(outstanding);
                if s.fill.full && s.outstanding == 0 {
                    s.end_fill(now);
                }
            }
            Kind::LimitProbe if matches!(answers.first(), Some(WriteAnswer::Refused { .. })) => {
                // The window was full after all: nothing learned, nothing to change.
                s.throttled += 1;
                tracing::debug!("write pacing: limit probe refused");
            }
            Kind::Fill { .. } | Kind::Scheduled | Kind::LimitProbe => {
                let mut cap = s.capacity(&config);
                s.trim(now);
                for (j, a) in answers.iter().enumerate() {
                    match *a {
                        WriteAnswer::Accepted { reading } => {
                            let crossed_90 = band(reading) == 9
                                && s.log.back().is_some_and(|e| !e.foreign && e.band == 8);
                            s.push(now, sent, true, band(reading));
                            let Some(c) = cap else { continue };
                            let r = reading.map_or(0.0, tenths);
                            if crossed_90 && !s.hold && s.crossing_measures_less() {
                                s.hold = true;
                                tracing::debug!(
                                    "write pacing: readings measure a smaller budget, held until the writes sent are answered"
                                );
                            }
                            let in_window = s.log.len() as u64 + s.outstanding;
                            if r >= 1.0 && in_window < c {
                                // Full before the model thinks: someone else spends too, or
                                // the budget came down.
                                if s.full_with_room(&config) {
                                    cap = s.capacity(&config);
                                }
                                if let Some(c) = cap {
                                    s.fill_with_foreign(c, now, None);
                                }
                            } else if r < 1.0 && in_window >= c {
                                // Room the model missed: a foreign write left early, or the
                                // limit is higher than proved (when our writes certainly still
                                // in the window fill it).
                                if let Some(i) = s.log.iter().position(|e| e.foreign) {
                                    s.log.remove(i);
                                } else if s.certainly_in_window(sent, now) + j as u64 + 1 >= c {
                                    s.limit = s.limit.map(|l| l + 1);
                                    tracing::debug!(limit = ?s.limit, "write pacing: limit raised");
                                }
                            }
                            if r < 1.0 {
                                s.raise_by_reading(reading, j as u64, sent, now);
                            }
                        }
                        WriteAnswer::Refused { retry_after } => {
                            s.throttled += 1;
                            if cap.is_some() {
                                if s.w_hi.is_some() {
                                    s.more_careful();
                                }
                                s.surprised(&config, now);
                                cap = s.capacity(&config);
                            }
                            if let Some(cap) = cap {
                                s.fill_with_foreign(cap, now, retry_after);
                                tracing::debug!(
                                    "write pacing: unexpected 429, window counted full"
                                );
                            }
                        }
                        WriteAnswer::Unknown => s.push(now, sent, false, 0),
                        WriteAnswer::NotCarriedOut => {}
                    }
                }
            }
            Kind::Probe {
                reference,
                reference_sent,
            } => {
                s.probe_out = false;
                // The age between the two charges lies between these: from the reference's
                // answer to the probe's send at least, from the reference's send to the probe's
                // answer at most. The upper one also holds the reference's way there and the
                // probe's way back, together about a round trip: net of the shortest one seen,
                // it is above the age by the round trips' spread, not their length (an accepted
                // probe then brings the window's upper bound, which the schedule uses, within
                // that spread of `W`). Should the two ways be shorter than the shortest round
                // trip, the bound is a few milliseconds short: `WINDOW_MARGIN` covers that,
                // and a 429 the schedule did not expect widens the margin. The lower one is
                // left as the sends and answers give it, so it stays below `W`.
                let least = s.rtts.least().unwrap_or_default();
                let age = now
                    .saturating_duration_since(reference_sent)
                    .saturating_sub(least);
                let age_lo = sent.saturating_duration_since(reference);
                match answers.first().copied().unwrap_or(WriteAnswer::Unknown) {
                    WriteAnswer::Accepted { reading } => {
                        s.push(now, sent, true, band(reading));
                        // The reference had left the window: W ≤ its age, at most `age`.
                        s.w_hi = Some(s.w_hi.map_or(age, |hi| hi.min(age)));
                        if s.w_hi.is_some_and(|hi| hi <= s.w_lo) {
                            s.w_lo = Duration::ZERO;
                        }
                    }
                    WriteAnswer::Refused { retry_after } => {
                        s.throttled += 1;
                        s.probe_refusals += 1;
                        // Still in the window, and it leaves within Retry-After (whole seconds,
                        // rounded up): its age + Retry-After − 1 s < W ≤ its age + Retry-After,
                        // its age at least `age_lo` and at most `age`.
                        let ra = retry_after.unwrap_or(Duration::from_secs(1));
                        let lo = age_lo.max((age_lo + ra).saturating_sub(Duration::from_secs(1)));
                        s.w_lo = s.w_lo.max(lo);
                        let hi = s.w_hi.map_or(age + ra, |h| h.min(age + ra));
                        // Contradicting answers (times are measured on our side): widen.
                        let least =
                            s.w_lo + WINDOW_PRECISION_MIN.max(s.w_lo.mul_f64(WINDOW_PRECISION));
                        s.w_hi = Some(if hi <= s.w_lo { least } else { hi });
                    }
                    WriteAnswer::Unknown => s.push(now, sent, false, 0),
                    // Not weighed against the budget: it tells nothing of the window.
                    WriteAnswer::NotCarriedOut => {}
                }
                tracing::debug!(?age, w_lo = ?s.w_lo, w_hi = ?s.w_hi, "write pacing: window probed");
            }
        }
        s.settle_hold();
        drop(s);
        self.notify.notify_waiters();
    }
}

/// Paces one tenant's directory writes (see the module documentation).
#[derive(Debug)]
pub struct WriteLimiter {
    shared: Arc<Shared>,
    turn: tokio::sync::Mutex<()>,
}

impl WriteLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        WriteLimiter {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    fill: Fill {
                        proven: FIRST_BURST,
                        ..Fill::default()
                    },
                    limit: None,
                    log: VecDeque::new(),
                    outstanding: 0,
                    unsent: 0,
                    withdrawn: 0,
                    hold: false,
                    pledged: 0,
                    w_lo: Duration::ZERO,
                    w_hi: None,
                    probe_out: false,
                    probe_refusals: 0,
                    granted: 0,
                    throttled: 0,
                    rtts: RoundTrips::default(),
                    lead_share: 0.5,
                    margin: WINDOW_MARGIN,
                    last_grant: None,
                    waited: None,
                    inconclusive_fills: 0,
                    surprised_at: None,
                    readings_seen: false,
                    limit_probed: None,
                }),
                notify: Notify::new(),
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes per second the learned budget carries (`L / W`); before it is learned, the
    /// configured ceiling.
    pub fn rate(&self) -> f64 {
        let s = self.shared.state.lock();
        match (s.limit, s.w_hi) {
            (Some(l), Some(w)) if !w.is_zero() => l as f64 / w.as_secs_f64(),
            _ => self.shared.config.max_rate,
        }
    }

    /// The learned budget: writes per window and the window's upper bound, once known.
    pub fn budget(&self) -> (Option<u64>, Option<Duration>) {
        let s = self.shared.state.lock();
        (s.limit, s.w_hi)
    }

    /// Writes granted and then withdrawn before they were sent, so far (see
    /// [`Grant::send_now`]).
    pub fn withdrawn(&self) -> u64 {
        self.shared.state.lock().withdrawn
    }

    /// Writes let out through this limiter so far (retries included): 0 for a directory
    /// (tenant) this process has not written to, whose budget nothing is known of.
    pub fn granted(&self) -> u64 {
        self.shared.state.lock().granted
    }

    /// What the budget allows within `horizon` from now, without granting anything: the
    /// writes whose slots are free by then (writes in the window that will have left it, less
    /// those granted and not answered and those pledged to work already taken on).
    /// [`Outlook::Open`] while the limit or the window is still being learned. A caller deciding
    /// how much work to take on uses it so that work waiting for the budget does not hold a
    /// place another tenant's work could use.
    pub fn outlook(&self, horizon: Duration) -> Outlook {
        let mut s = self.shared.state.lock();
        let outlook = self.outlook_of(&s, horizon);
        s.told(outlook);
        outlook
    }

    /// [`WriteLimiter::outlook`], and a pledge of the writes `take` decides to take on from it
    /// (0: none), in one step: two callers sizing their work at once never both count the same
    /// free slots. While the [`Pledge`] is held (or until grants redeem it), later outlooks count
    /// its writes as spent and name the time the budget frees beyond them.
    pub fn pledge(
        &self,
        horizon: Duration,
        take: impl FnOnce(Outlook) -> u64,
    ) -> (Outlook, Pledge) {
        let mut s = self.shared.state.lock();
        let outlook = self.outlook_of(&s, horizon);
        s.told(outlook);
        let writes = take(outlook);
        s.pledged += writes;
        drop(s);
        (
            outlook,
            Pledge {
                shared: self.shared.clone(),
                left: AtomicU64::new(writes),
            },
        )
    }

    fn outlook_of(&self, s: &State, horizon: Duration) -> Outlook {
        let (Some(cap), Some(window)) = (s.capacity(&self.shared.config), s.window()) else {
            return Outlook::Open;
        };
        let now = Instant::now();
        let lead = s.lead();
        let by = now + horizon + lead;
        let still_in = s.still_in_window(window, by);
        let free = cap.saturating_sub(still_in + s.outstanding + s.pledged);
        if free > 0 {
            return Outlook::Ready(free);
        }
        // The entry whose leaving frees the first slot (all in the window count, and the ones
        // granted but unanswered, which leave no earlier than now plus a window).
        let in_window = s.still_in_window(window, now + lead);
        let need = (in_window + s.outstanding + s.pledged + 1).saturating_sub(cap) as usize;
        let skip = s.log.len() - in_window as usize;
        match s.log.get(skip + need.saturating_sub(1)) {
            Some(e) => {
                let scheduled = (e.at + window).checked_sub(lead).unwrap_or(e.at);
                // A probe of the window goes before the schedule (see `State::decide`).
                let probe = (need == 1 && s.outstanding == 0 && s.pledged == 0)
                    .then(|| s.probe_at(e))
                    .flatten();
                let next = probe.map_or(scheduled, |p| p.min(scheduled));
                // So does a probe of the limit (see `State::limit_probe_at`).
                let limit_probe = (s.pledged == 0)
                    .then(|| s.limit_probe_at(now, window, next))
                    .flatten();
                Outlook::Wait(limit_probe.map_or(next, |p| p.min(next)))
            }
            None => Outlook::Wait(now + window),
        }
    }

    /// Wait for the right to send all `writes` writes at once.
    pub async fn acquire(&self, writes: u32) -> Grant {
        let writes = writes.max(1);
        self.wait_grant(writes, writes).await
    }

    /// Wait for the right to send between one and `writes` writes now (as many as the budget
    /// allows). Callers take turns, first come first served.
    pub async fn acquire_up_to(&self, writes: u32) -> Grant {
        self.wait_grant(writes.max(1), 1).await
    }

    /// As [`WriteLimiter::acquire_up_to`], but only if the budget lets at least one write go
    /// within `patience`: when the schedule says the next write must wait longer, nothing is
    /// granted and the time it names is returned instead. Only a learned schedule (limit and
    /// window known) gives up: a wait for answers still in flight, or while the limit is
    /// still being learned, is waited out — answers may let the write go any moment.
    pub async fn acquire_up_to_within(
        &self,
        writes: u32,
        patience: Duration,
    ) -> Result<Grant, Instant> {
        let deadline = Instant::now() + patience;
        self.wait_grant_until(writes.max(1), 1, Some(deadline))
            .await
    }

    async fn wait_grant(&self, want: u32, at_least: u32) -> Grant {
        match self.wait_grant_until(want, at_least, None).await {
            Ok(g) => g,
            Err(_) => unreachable!("a grant without a deadline is always waited for"),
        }
    }

    async fn wait_grant_until(
        &self,
        want: u32,
        at_least: u32,
        deadline: Option<Instant>,
    ) -> Result<Grant, Instant> {
        let _turn = self.turn.lock().await;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (decision, learned) = {
                let mut s = self.shared.state.lock();
                let now = Instant::now();
                let d = s.decide(&self.shared.config, now, want, at_least);
                if let Decision::Grant(n, kind) = d {
                    s.outstanding += u64::from(n);
                    s.granted += u64::from(n);
                    s.last_grant = Some((now, n));
                    match kind {
                        Kind::Probe { .. } | Kind::LimitProbe => s.probe_out = true,
                        Kind::Fill { .. } | Kind::Scheduled => {}
                    }
                    if kind == Kind::LimitProbe {
                        s.limit_probed = Some(now);
                    }
                    s.unsent += u64::from(n);
                    return Ok(Grant {
                        shared: self.shared.clone(),
                        writes: n,
                        sent: now,
                        kind,
                        settled: false,
                        unsent: true,
                    });
                }
                s.waited = Some(now);
                // While the budget is learned, a wait names only the latest a write may go
                // (answers on their way may let it go sooner): never a reason to give up.
                let learned = s.capacity(&self.shared.config).is_some() && s.window().is_some();
                (d, learned)
            };
            if let (Decision::Wait(Some(at)), Some(deadline), true) = (&decision, deadline, learned)
                && *at > deadline
            {
                return Err(*at);
            }
            match decision {
                Decision::Wait(Some(at)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                _ => notified.await,
            }
        }
    }
}

/// A write's reading in whole tenths (see [`Entry::band`]): 8, 9 or 10, else 0.
fn band(reading: Option<f64>) -> u8 {
    let r = reading.map_or(0.0, tenths);
    if r >= 0.8 {
        (r * 10.0).round().min(10.0) as u8
    } else {
        0
    }
}

/// A reading of `x-ms-throttle-limit-percentage` as a fraction, floored to tenths (Graph sends
/// a fraction such as `0.9`; a value above 5 is taken as a percentage).
fn tenths(value: f64) -> f64 {
    let fraction = if value > 5.0 { value / 100.0 } else { value };
    (fraction * 10.0 + 1e-9).floor() / 10.0
}

#[cfg(test)]
mod tests;
