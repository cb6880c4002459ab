use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: crate::domain::JobKind,
    pub status: crate::domain::JobStatus,
    pub request: Json,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub runs: i32,
    pub created_by: Option<Uuid>,
    pub parent_job_id: Option<Uuid>,
    pub error_code: Option<String>,
    pub error_detail: Option<String>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    pub expanded_at: Option<DateTimeUtc>,
    pub result: Option<Json>,
    /// Where expansion has got to ([`crate::jobs::expand::ExpandPosition`]); `None` before
    /// the first page is stored.
    pub expand_position: Option<Json>,
    /// The worker step expanding the job, and until when it holds the expansion.
    pub expand_owner: Option<String>,
    pub expand_until: Option<DateTimeUtc>,
    /// When a worker last moved the job: started it, stored a page of members or recorded a
    /// chunk's outcomes. A running job with none for `jobs.stuck_after_secs` is stuck.
    pub last_progress_at: Option<DateTimeUtc>,
    /// How many times the reconciler queued the job again after it made no progress.
    pub requeues: i32,
    /// When the job's canary passed (its first members failed no more often than the bound, or
    /// the paused job was resumed); `None` while it has not, or without a canary.
    pub canary_passed_at: Option<DateTimeUtc>,
    /// A launched preview's first run takes the members predicted to succeed before the rest
    /// ([`crate::jobs::launch::predicted_first`]); this is when they had all been worked.
    pub launch_order_done_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
