//! Riding out a database that is away (down, restarting, refusing connections): workers stop
//! claiming and writing while they cannot record outcomes, keep what they already wrote, and
//! go on within a second of the database's return.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::BoxDynError;
use licensor_core::StoreError;
use licensor_core::db::{self, Db};
use licensor_core::jobs::{self, outcome::Outcome};
use uuid::Uuid;

pub use licensor_core::db::OUTAGE_PATIENCE;

/// Whether a step's error means the database could not be reached.
pub fn is_unavailable(e: &BoxDynError) -> bool {
    e.downcast_ref::<StoreError>()
        .is_some_and(StoreError::is_unavailable)
}

/// Record a chunk's outcomes (with the 429s its directory calls met), and with `release` let
/// go of the holder's members still pending ([`jobs::outcome::record_and_release`]); while the
/// database is away, keep them and try again as soon as it answers (for up to
/// [`OUTAGE_PATIENCE`]). The members were written to the directory already: losing their
/// outcomes would mean writing them again.
pub async fn record_when_available(
    db: &Db,
    job_id: Uuid,
    holder: &str,
    outcomes: Vec<(i64, Outcome)>,
    throttled: u64,
    release: bool,
) -> Result<u64, BoxDynError> {
    loop {
        match jobs::outcome::record_and_release(
            db,
            job_id,
            holder,
            outcomes.clone(),
            throttled,
            release,
        )
        .await
        {
            Ok(n) => return Ok(n),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(job = %job_id, items = outcomes.len(), "database unavailable; keeping the chunk's outcomes until it answers");
                if !db::wait_until_available(db, OUTAGE_PATIENCE).await {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A member lease this process holds: the job's tenant, the job, the owner name.
type Held = (Uuid, Uuid, String);

/// The leases this process holds on job members right now, so a worker that stops with work
/// unfinished (grace period over, steps dropped) hands them back before it exits instead of
/// leaving them locked until the lease time runs out.
#[derive(Clone, Default)]
pub struct Leases(Arc<Mutex<HashSet<Held>>>);

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Held>> {
        // The set stays consistent whatever a panicking holder did: take it anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note that `owner` holds members of the job. The lease counts as held until
    /// [`LeaseGuard::done`] — a step dropped half-way (a stopping process) leaves it here for
    /// [`Leases::release_all`].
    pub fn hold(&self, tenant_id: Uuid, job_id: Uuid, owner: &str) -> LeaseGuard {
        let key = (tenant_id, job_id, owner.to_owned());
        self.lock().insert(key.clone());
        LeaseGuard {
            leases: self.clone(),
            key,
        }
    }

    /// Whether this process holds no lease.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Resolves once this process holds no lease (checked every 50 ms).
    pub async fn drained(&self) {
        while !self.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Release every lease still held: the members stay pending, free for any worker at once.
    /// Returns the jobs (tenant, job) whose members were released, for queueing them again.
    pub async fn release_all(&self, db: &Db) -> Vec<(Uuid, Uuid)> {
        let held: Vec<Held> = self.lock().drain().collect();
        let mut jobs = Vec::new();
        for (tenant_id, job_id, owner) in held {
            match jobs::lease::release(db, job_id, &owner).await {
                Ok(()) => {
                    if !jobs.contains(&(tenant_id, job_id)) {
                        jobs.push((tenant_id, job_id));
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %job_id, error = %e, "releasing a lease at shutdown failed")
                }
            }
        }
        jobs
    }
}

/// See [`Leases::hold`].
pub struct LeaseGuard {
    leases: Leases,
    key: Held,
}

impl LeaseGuard {
    /// The step recorded its members' outcomes (or released them): the lease is over.
    pub fn done(self) {
        self.leases.lock().remove(&self.key);
    }
}
