//! Group license jobs, one file per step of a job's life:
//!
//! - [`submit`] creates a job; [`expand`] reads its groups into one item per member;
//! - [`lease`] gives chunks of members to worker steps; [`work`] decides and writes a chunk;
//! - [`outcome`] records what happened to each member; [`finish`] closes runs and jobs;
//! - [`rerun`], [`cancel`], [`launch`] (a preview made real), [`canary`] (pause and resume) and
//!   [`undo`] are what an operator does to a job; [`state`] says which status changes are allowed;
//! - [`expiry`] creates the removals of temporary assignments; [`reconcile`] finds stalled jobs;
//! - [`view`] holds the read models the API, the Job Monitor and the metrics read.
//!
//! Every function that serves an API caller takes the tenant id; another tenant's job is
//! "not found". The database is the source of truth; the queue only carries job ids, and every
//! step is safe to repeat: items are unique per job and member, outcomes are recorded only on
//! items still pending, and status changes are conditional.

use chrono::{DateTime, Utc};

pub mod activity;
pub mod canary;
pub mod cancel;
pub mod codes;
pub mod deliver;
pub mod expand;
pub mod expiry;
pub mod export;
pub mod files;
pub mod finish;
pub mod history;
pub mod launch;
pub mod lease;
pub mod notes;
pub mod outcome;
pub mod plan;
pub mod preview;
pub mod processes;
pub mod reconcile;
pub mod request;
pub mod rerun;
pub mod state;
pub mod submit;
pub mod undo;
pub mod view;
pub mod work;
pub mod writer;

pub use canary::resume;
pub use cancel::cancel;
pub use launch::launch;
pub use request::{
    Canary, ExpiresIn, Expiry, ExpiryUnit, FileFormat, GroupId, JobRequest, JobSpec, LicenseToAdd,
    ParsedRequest, SkuId, UsageLocation,
};
pub use rerun::rerun;
pub use state::{
    OnJob, check_cancellable, check_launchable, check_rerunnable, check_resumable, check_undoable,
};
pub use submit::{NewJob, create, insert};
pub use undo::undo;
pub use view::*;

/// The columns that name a member on a job's item, in the order every statement that inserts
/// items lists them first (expansion, expiry removals, undo).
pub(crate) const MEMBER_COLUMNS: [crate::entities::job_item::Column; 6] = {
    use crate::entities::job_item::Column;
    [
        Column::JobId,
        Column::UserId,
        Column::UserPrincipalName,
        Column::DisplayName,
        Column::GroupId,
        Column::UsageLocation,
    ]
};

/// Clearing columns in an update: `.set_null([..])` sets each to NULL (a typeless NULL, so
/// one call serves text, timestamp and JSON columns alike on SQLite and PostgreSQL).
pub(crate) trait SetNull<E: sea_orm::EntityTrait> {
    fn set_null(self, columns: impl IntoIterator<Item = E::Column>) -> Self;
}

impl<E: sea_orm::EntityTrait> SetNull<E> for sea_orm::UpdateMany<E> {
    fn set_null(mut self, columns: impl IntoIterator<Item = E::Column>) -> Self {
        for column in columns {
            self = self.col_expr(column, sea_orm::sea_query::Expr::cust("NULL"));
        }
        self
    }
}

/// The time a step stamps on what it changes.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}
