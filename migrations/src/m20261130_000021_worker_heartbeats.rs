//! Worker processes and their heartbeats (`worker_processes`): one row per running worker process
//! (its id is the prefix of every lease it takes, `jobs.expand_owner` and
//! `job_items.lease_owner`), stamped every `worker.heartbeat_secs`. A live worker that sees a row
//! whose heartbeat stopped more than `worker.missed_heartbeats × worker.heartbeat_secs` ago takes
//! over that process's leases at once instead of waiting for them to run out; a process that
//! stops cleanly removes its row.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WorkerProcesses::Table)
                .if_not_exists()
                // `licensor-{host}-{pid}-{suffix}`: the process's queue worker name.
                .col(string_len(WorkerProcesses::Id, 255).primary_key())
                .col(string_len(WorkerProcesses::Host, 255))
                .col(big_integer(WorkerProcesses::Pid))
                .col(timestamp_with_time_zone(WorkerProcesses::StartedAt))
                .col(timestamp_with_time_zone(WorkerProcesses::LastHeartbeatAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(WorkerProcesses::Table)
                .if_exists()
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum WorkerProcesses {
    Table,
    Id,
    Host,
    Pid,
    StartedAt,
    LastHeartbeatAt,
}
