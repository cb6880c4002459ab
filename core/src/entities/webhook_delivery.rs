use sea_orm::entity::prelude::*;

/// One event for one endpoint, with its attempts ([`crate::webhooks`]).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// Also the message's `webhook-id`, the same on every attempt.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub job_id: Uuid,
    pub run_no: i32,
    pub event: String,
    /// The message body, built when the job's run ended.
    pub payload: Json,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// Attempts since `series_started_at` (creation or the last redeliver).
    pub series_attempts: i32,
    pub series_started_at: DateTimeUtc,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub last_attempt_at: Option<DateTimeUtc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// The last attempts, oldest first ([`crate::webhooks::Attempt`]).
    pub attempt_log: Option<Json>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub delivered_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
