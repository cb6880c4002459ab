use sea_orm::entity::prelude::*;

/// One seat of a license with a term.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "license_seats")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: Uuid,
    pub license_id: Uuid,
    pub started_on: Option<Date>,
    pub ends_on: Option<Date>,
    pub ended: bool,
    /// The open assignment holding the seat; `None` when it is free.
    pub assignment_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
