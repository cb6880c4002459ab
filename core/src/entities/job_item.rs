use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_items")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: Uuid,
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub group_id: Option<String>,
    pub status: crate::domain::ItemStatus,
    pub error_code: Option<String>,
    pub error_detail: Option<String>,
    pub attempts: i32,
    pub run_no: i32,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    pub due_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    pub display_name: Option<String>,
    pub usage_location: Option<String>,
    pub licenses: Option<Json>,
    /// The change ledger entry of the member's write: `{before, after, verified}`.
    pub change: Option<Json>,
    /// Undo items only: `{expect, restore}`.
    pub target: Option<Json>,
    /// Whether the current lease was taken over from a holder whose lease had run out, or had
    /// been ended because the holder's process stopped heartbeating
    /// ([`crate::jobs::processes::take_over`]); set by each claim, counted by
    /// `licensor_lease_takeovers_total`. Such a member is read afresh before any write.
    pub taken_over: bool,
    /// Previews: the member's predicted outcome, a [`crate::jobs::preview::Prediction`].
    pub prediction: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
