use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "license_assignments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub license_id: Uuid,
    /// `user` or `asset`.
    pub assignee_type: String,
    pub assignee_id: String,
    /// The user's display name or the asset's name, as given at checkout.
    pub assignee_name: Option<String>,
    /// Seats the assignment holds now (fewer than checked out once some seats' terms ended).
    pub quantity: i64,
    pub notes: Option<String>,
    pub checked_out_at: DateTimeUtc,
    pub checked_out_by: Option<Uuid>,
    pub checked_in_at: Option<DateTimeUtc>,
    pub checked_in_by: Option<Uuid>,
    pub checkin_notes: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
