use sea_orm::entity::prelude::*;

/// A running worker process and its heartbeat (`worker_processes`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "worker_processes")]
pub struct Model {
    /// The process's name, `licensor-{host}-{pid}-{suffix}`: every lease it takes is named
    /// `{id}/{step}` (`job_items.lease_owner`, `jobs.expand_owner`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The host name the process runs on (`/etc/hostname`).
    pub host: String,
    /// The operating system's process id on that host.
    pub pid: i64,
    pub started_at: DateTimeUtc,
    /// When the process last recorded that it is alive (its own clock).
    pub last_heartbeat_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
