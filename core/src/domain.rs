//! Domain vocabulary shared by the API, the workers and the CLI.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token may do. `admin` everything; `operator` read, rerun, cancel, check in;
/// `viewer` read only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes everything `needed` may do.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (admin, operator or viewer)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of group license job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Assign,
    Remove,
    Replace,
    Export,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Assign => "assign",
            JobKind::Remove => "remove",
            JobKind::Replace => "replace",
            JobKind::Export => "export",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "assign" => Ok(JobKind::Assign),
            "remove" => Ok(JobKind::Remove),
            "replace" => Ok(JobKind::Replace),
            "export" => Ok(JobKind::Export),
            other => Err(format!(
                "unknown job kind `{other}` (assign, remove, replace or export)"
            )),
        }
    }
}

/// Job status. `queued` → `running` → `finished` | `finished_with_exception` | `failed`;
/// `cancelled` from `queued` or `running`; a rerun moves `failed` / `finished_with_exception`
/// back to `queued`. A preview (`"preview": true`) goes `queued` → `running` → `previewed`
/// without writing; launching it moves it back to `queued` as a real job, and a previewed job
/// may be cancelled. A job with a canary whose first members failed too often goes `running` →
/// `paused`; resuming it moves it back to `running`, and a paused job may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Finished,
    FinishedWithException,
    Failed,
    Cancelled,
    /// A preview: every member decided from the directory's state, nothing written.
    Previewed,
    /// Its canary's failed share was above the bound: nothing more is written until it is
    /// resumed or cancelled.
    Paused,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Finished,
        JobStatus::FinishedWithException,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Previewed,
        JobStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::FinishedWithException => "finished_with_exception",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Previewed => "previewed",
            JobStatus::Paused => "paused",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished
                | JobStatus::FinishedWithException
                | JobStatus::Failed
                | JobStatus::Cancelled
                | JobStatus::Previewed
        )
    }

    /// The one place that says which status changes are allowed.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Running | Cancelled | Failed)
                | (
                    Running,
                    Finished | FinishedWithException | Failed | Cancelled | Previewed | Paused
                )
                | (Failed | FinishedWithException | Previewed, Queued)
                | (Previewed | Paused, Cancelled)
                | (Paused, Running)
        )
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job status `{s}`"))
    }
}

/// Status of one member's item in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Pending,
    Succeeded,
    Failed,
    Skipped,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Skipped => "skipped",
        }
    }
}

impl std::str::FromStr for ItemStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ItemStatus::Pending),
            "succeeded" => Ok(ItemStatus::Succeeded),
            "failed" => Ok(ItemStatus::Failed),
            "skipped" => Ok(ItemStatus::Skipped),
            other => Err(format!("unknown item status `{other}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn job_status_transitions() {
        use JobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(FinishedWithException));
        assert!(FinishedWithException.can_become(Queued));
        assert!(!Finished.can_become(Queued));
        assert!(!Cancelled.can_become(Running));
        assert!(Running.can_become(Previewed));
        assert!(Previewed.can_become(Queued));
        assert!(Previewed.can_become(Cancelled));
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(Paused.can_become(Cancelled));
        assert!(!Paused.can_become(Queued));
        assert!(!Paused.is_terminal());
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
    }
}
