//! A job's lanes that wait for their tenant's write budget, in this process.
//!
//! A job is worked by `jobs.lanes_per_job` lanes (queue messages) at once, so that a directory
//! that does not hold writes back is written to by several chunks side by side. A throttled
//! tenant's budget frees a window's worth at a time, and one chunk takes it all (its writes are
//! pledged: [`licensor_core::directory::Pledge`]): the job's other lanes each took a step only to
//! find the budget spent, waited for it to free, went through the queue again and found it spent
//! again. With hundreds of throttled tenants those steps — a dozen statements and a queue round
//! trip each — cost more than the writes (`licensor-bench --scenario msp`, 100 tenants: 84 steps
//! a second for 21 that wrote).
//!
//! So lanes of one job that wait for the budget in this process wait as one ([`Lanes::park`]):
//! the first parks and comes back through the queue when the budget frees; the others that would
//! come back no sooner join it and are kept here as *spare* lanes (one that would come back
//! sooner waits itself, and those that joined wait with it). A step that took its chunk and sees
//! the budget still free beyond it sends a spare lane back to the queue ([`Lanes::spare`]), so an
//! unthrottled or generous budget gets all of the job's lanes again. Nothing here is durable, and nothing need
//! be: should this process stop or die, its tenants' running jobs are queued again as its turns
//! to write end ([`licensor_core::jobs::processes`]), and the reconciler queues any job that
//! stalls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Jobs with spare lanes noted beyond which those untouched for [`SPARE_KEPT`] are forgotten
/// (their jobs ended, or are worked by another process now).
const TRIM_AT: usize = 4096;
/// How long spare lanes of a job nobody asked for are kept once [`TRIM_AT`] jobs have some.
const SPARE_KEPT: Duration = Duration::from_secs(3600);

/// This process's parked and spare lanes, per job. Cheap to clone; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Lanes {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Jobs with a lane parked for the budget: the wait lanes join.
    parked: HashMap<Uuid, Wait>,
    /// Names the waits, so a lane that parked earlier and then waited on its own does not end
    /// the wait that took its place ([`Lanes::unpark`]).
    waits: u64,
    /// Jobs with spare lanes: how many, and when last changed.
    spare: HashMap<Uuid, (u32, Instant)>,
    /// Jobs whose first lane writes to a directory this process knows nothing of the budget
    /// of: how many of their other lanes wait for it ([`Lanes::probe`]).
    probing: HashMap<Uuid, u32>,
}

/// One job's lanes waiting for the budget as one.
#[derive(Debug, Clone, Copy)]
struct Wait {
    id: u64,
    /// When the waiting lane goes back to the queue.
    until: tokio::time::Instant,
    /// The waiting lane and those that joined it.
    lanes: u32,
}

/// What [`Lanes::probe`] decided for a lane of a job whose tenant's write budget is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No other lane of the job is learning the budget: this one takes its chunk and learns
    /// it; hand the job to [`Lanes::end_probe`] when its step ends.
    Learns,
    /// Another lane of the job is learning the budget: this one waits for it, and ends here.
    Waits,
    /// No lane of the job is learning it, and the budget has let writes through: go on.
    Free,
}

/// What [`Lanes::park`] decided for a lane that waits for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// It waits for the budget itself and then comes back through the queue; hand the value to
    /// [`Lanes::unpark`] then.
    Waits(u64),
    /// Another lane of the job waits already, and comes back no later: this one joined it, and
    /// ends here.
    Joined,
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counts only: a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lane of `job_id` waits for the budget in this process until `until`: it joins the
    /// job's wait if that ends no later, else it waits itself (and lanes that joined the later
    /// wait come back with it).
    pub fn park(&self, job_id: Uuid, until: tokio::time::Instant) -> Parked {
        let mut inner = self.lock();
        inner.waits += 1;
        let id = inner.waits;
        match inner.parked.get_mut(&job_id) {
            Some(wait) if wait.until <= until => {
                wait.lanes += 1;
                Parked::Joined
            }
            // The lane waiting already keeps its own time; those that joined it move here.
            Some(wait) => {
                *wait = Wait { id, until, ..*wait };
                Parked::Waits(id)
            }
            None => {
                inner.parked.insert(
                    job_id,
                    Wait {
                        id,
                        until,
                        lanes: 1,
                    },
                );
                Parked::Waits(id)
            }
        }
    }

    /// The lane that parked as `parked` goes back to the queue: if its wait is still the job's,
    /// the lanes that joined it become spare lanes of the job.
    pub fn unpark(&self, job_id: Uuid, parked: u64) {
        let mut inner = self.lock();
        let joined = match inner.parked.get(&job_id) {
            Some(wait) if wait.id == parked => wait.lanes - 1,
            _ => return,
        };
        inner.parked.remove(&job_id);
        if joined == 0 {
            return;
        }
        let now = Instant::now();
        if inner.spare.len() >= TRIM_AT {
            inner
                .spare
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < SPARE_KEPT);
        }
        let entry = inner.spare.entry(job_id).or_insert((0, now));
        entry.0 += joined;
        entry.1 = now;
    }

    /// Take one spare lane of `job_id`, if it has one: the budget is free beyond the chunk a
    /// step just took, and the lane goes back to the queue.
    pub fn spare(&self, job_id: Uuid) -> bool {
        let mut inner = self.lock();
        let Some((n, _)) = inner.spare.get_mut(&job_id) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            inner.spare.remove(&job_id);
        }
        true
    }

    /// A lane of `job_id` is about to take a chunk while its tenant's write budget is not
    /// learned. While another lane of the job learns it, this one waits for it
    /// ([`Probe::Waits`]: until [`Lanes::end_probe`], called once the budget is learned, a
    /// short while has passed, or the learning step ended), rather than take a chunk of members
    /// only to give back the most of it once the budget proves to allow a window's worth (with
    /// 500 new throttled tenants at once, `licensor-bench --scenario msp` claimed and gave back
    /// nearly the whole of each 1,000-member job as it started). Otherwise, when `first` (this
    /// process has written nothing to the tenant's directory yet) this lane learns it
    /// ([`Probe::Learns`]); when not, the budget has let writes through unrefused and the lane
    /// goes on ([`Probe::Free`]).
    ///
    /// `bringing` more lanes of the job come with this one without having taken a step each
    /// (`Message::Work`'s `more_lanes`): unless the lane goes on ([`Probe::Free`]: the caller
    /// queues them), they wait for the budget to be learned as it does, and
    /// [`Lanes::end_probe`] counts them.
    pub fn probe(&self, job_id: Uuid, first: bool, bringing: u32) -> Probe {
        let mut inner = self.lock();
        match inner.probing.get_mut(&job_id) {
            Some(waiting) => {
                *waiting += 1 + bringing;
                Probe::Waits
            }
            None if first => {
                inner.probing.insert(job_id, bringing);
                Probe::Learns
            }
            None => Probe::Free,
        }
    }

    /// The step of `job_id` that learned the budget ([`Probe::Learns`]) has ended: the lanes
    /// that waited for it, to be sent back to work.
    pub fn end_probe(&self, job_id: Uuid) -> u32 {
        self.lock().probing.remove(&job_id).unwrap_or(0)
    }

    /// Add `lanes` to the lanes of `job_id` that wait for the budget here, if one does: they
    /// come back with it as spare lanes. `false` when none waits.
    pub fn join_wait(&self, job_id: Uuid, lanes: u32) -> bool {
        match self.lock().parked.get_mut(&job_id) {
            Some(wait) => {
                wait.lanes += lanes;
                true
            }
            None => false,
        }
    }

    /// `job_id` is over (or not running): forget its spare lanes.
    pub fn forget(&self, job_id: Uuid) {
        self.lock().spare.remove(&job_id);
    }

    /// Lanes of `job_id` parked here (the waiting one and those that joined it) and spare.
    #[cfg(test)]
    fn count(&self, job_id: Uuid) -> (u32, u32) {
        let inner = self.lock();
        (
            inner.parked.get(&job_id).map_or(0, |w| w.lanes),
            inner.spare.get(&job_id).map_or(0, |(n, _)| *n),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(secs)
    }

    fn waits(p: Parked) -> u64 {
        match p {
            Parked::Waits(id) => id,
            Parked::Joined => panic!("joined where it should wait"),
        }
    }

    #[test]
    fn lanes_waiting_for_the_budget_wait_as_one_and_come_back_as_spares() {
        let lanes = Lanes::default();
        let (job, other) = (Uuid::now_v7(), Uuid::now_v7());
        let until = at(5);
        let first = waits(lanes.park(job, until));
        assert_eq!(lanes.park(job, until), Parked::Joined);
        assert_eq!(
            lanes.park(job, until + Duration::from_secs(1)),
            Parked::Joined
        );
        let alone = waits(lanes.park(other, until));
        assert_eq!(lanes.count(job), (3, 0));
        assert!(!lanes.spare(job), "no spare lane while they wait");

        lanes.unpark(job, first);
        assert_eq!(lanes.count(job), (0, 2), "the two that joined are spare");
        waits(lanes.park(job, until));
        assert!(lanes.spare(job));
        assert!(lanes.spare(job));
        assert!(!lanes.spare(job), "no more spares than lanes joined");

        lanes.unpark(other, alone);
        assert_eq!(
            lanes.count(other),
            (0, 0),
            "a lane that waited alone leaves no spare"
        );
    }

    #[test]
    fn a_lane_that_would_come_back_sooner_waits_itself_and_takes_the_joined_along() {
        let lanes = Lanes::default();
        let job = Uuid::now_v7();
        let late = waits(lanes.park(job, at(60)));
        assert_eq!(lanes.park(job, at(60)), Parked::Joined);
        let soon = waits(lanes.park(job, at(5)));
        assert_eq!(
            lanes.count(job),
            (2, 0),
            "the sooner wait holds the lane that joined"
        );
        assert_eq!(
            lanes.park(job, at(10)),
            Parked::Joined,
            "joins the sooner wait"
        );
        lanes.unpark(job, soon);
        assert_eq!(lanes.count(job), (0, 2), "both lanes that joined are spare");
        // The later wait ends on its own, and takes nothing that is not its own.
        lanes.unpark(job, late);
        assert_eq!(lanes.count(job), (0, 2));
        let again = waits(lanes.park(job, at(5)));
        lanes.unpark(job, late);
        assert_eq!(
            lanes.count(job),
            (1, 2),
            "an older wait never ends a newer one"
        );
        lanes.unpark(job, again);
        assert_eq!(lanes.count(job), (0, 2));
    }

    #[test]
    fn spare_lanes_of_an_ended_job_are_forgotten() {
        let lanes = Lanes::default();
        let job = Uuid::now_v7();
        let first = waits(lanes.park(job, at(5)));
        lanes.park(job, at(5));
        lanes.unpark(job, first);
        assert_eq!(lanes.count(job), (0, 1));
        lanes.forget(job);
        assert!(!lanes.spare(job));
    }

    #[test]
    fn lanes_wait_for_the_one_learning_the_budget_and_then_join_its_wait() {
        let lanes = Lanes::default();
        let (job, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            lanes.probe(job, false, 0),
            Probe::Free,
            "writes went through: go on"
        );
        assert_eq!(lanes.probe(job, true, 0), Probe::Learns);
        // While it learns, the job's other lanes wait, whatever they see; another job does not.
        assert_eq!(lanes.probe(job, true, 0), Probe::Waits);
        assert_eq!(lanes.probe(job, false, 0), Probe::Waits);
        assert_eq!(lanes.probe(other, true, 0), Probe::Learns);
        assert_eq!(lanes.end_probe(job), 2);
        assert_eq!(lanes.end_probe(job), 0, "handed back once");
        assert_eq!(lanes.probe(job, false, 0), Probe::Free);
        // The learning step found the budget spent and waits for it: the two join that wait and
        // come back with it as spare lanes.
        assert!(!lanes.join_wait(job, 2), "no wait to join yet");
        let waits = waits(lanes.park(job, at(5)));
        assert!(lanes.join_wait(job, 2));
        assert_eq!(lanes.count(job), (3, 0));
        lanes.unpark(job, waits);
        assert_eq!(lanes.count(job), (0, 2));
    }

    /// A job's first lane brings its other lanes: they wait with it while it learns the
    /// budget (or with the lane that does), and are counted once the learning ends; a lane
    /// that goes on leaves them to its caller.
    #[test]
    fn lanes_brought_by_a_first_lane_wait_for_the_budget_with_it() {
        let lanes = Lanes::default();
        let (job, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(lanes.probe(job, true, 3), Probe::Learns);
        assert_eq!(
            lanes.end_probe(job),
            3,
            "the three it brought waited for it"
        );
        // A first lane that finds another lane learning waits with what it brought.
        assert_eq!(lanes.probe(job, true, 0), Probe::Learns);
        assert_eq!(lanes.probe(job, true, 3), Probe::Waits);
        assert_eq!(lanes.end_probe(job), 4);
        assert_eq!(
            lanes.probe(other, false, 3),
            Probe::Free,
            "nobody learns: the caller queues them"
        );
        assert_eq!(lanes.end_probe(other), 0);
    }
}
