//! Database migrations for licensor. Every migration runs on SQLite (the embedded default) and on
//! PostgreSQL (production), and applying them again is a no-op.

pub use sea_orm_migration::prelude::*;

mod columns;
mod indexes;
mod m20261123_000001_foundation;
mod m20261123_000002_licenses;
mod m20261123_000003_idempotency_keys;
mod m20261123_000004_job_pipeline;
mod m20261123_000005_partial_due_index;
mod m20261130_000006_change_ledger;
mod m20261130_000008_assignee_names;
mod m20261130_000009_expansion_position;
mod m20261130_000010_webhooks;
mod m20261130_000011_job_activity;
mod m20261130_000012_member_history;
mod m20261130_000021_worker_heartbeats;
mod m20261130_000022_item_predictions;
mod m20261130_000023_job_canary;
mod m20261130_000024_carried_predictions;
mod m20261130_000030_member_history_keys;
mod m20261201_000031_launch_order;
mod m20261201_000032_idempotent_location;
mod m20261201_000033_tenant_writers;
mod m20261203_000034_idempotency_lease;
mod m20261204_000035_member_keys;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_foundation::Migration),
            Box::new(m20261123_000002_licenses::Migration),
            Box::new(m20261123_000003_idempotency_keys::Migration),
            Box::new(m20261123_000004_job_pipeline::Migration),
            Box::new(m20261123_000005_partial_due_index::Migration),
            Box::new(m20261130_000006_change_ledger::Migration),
            Box::new(m20261130_000008_assignee_names::Migration),
            Box::new(m20261130_000009_expansion_position::Migration),
            Box::new(m20261130_000010_webhooks::Migration),
            Box::new(m20261130_000011_job_activity::Migration),
            Box::new(m20261130_000012_member_history::Migration),
            Box::new(m20261130_000021_worker_heartbeats::Migration),
            Box::new(m20261130_000022_item_predictions::Migration),
            Box::new(m20261130_000023_job_canary::Migration),
            Box::new(m20261130_000024_carried_predictions::Migration),
            Box::new(m20261130_000030_member_history_keys::Migration),
            Box::new(m20261201_000031_launch_order::Migration),
            Box::new(m20261201_000032_idempotent_location::Migration),
            Box::new(m20261201_000033_tenant_writers::Migration),
            Box::new(m20261203_000034_idempotency_lease::Migration),
            Box::new(m20261204_000035_member_keys::Migration),
        ]
    }
}
