//! Migrations apply, and apply again as a no-op, on SQLite and on the real PostgreSQL server.

mod common;

use common::{Backend, TestData};
use licensor_core::db;
use licensor_migrations::MigratorTrait;
use sea_orm::{ConnectionTrait, Statement};

const TABLES: [&str; 12] = [
    "tenants",
    "api_tokens",
    "jobs",
    "job_runs",
    "job_items",
    "audit_log",
    "licenses",
    "license_assignments",
    "license_seats",
    "idempotency_keys",
    "job_activity",
    "worker_processes",
];

async fn migrations_apply_and_reapply(backend: Backend) {
    let Some(data) = TestData::new(backend).await else {
        return;
    };
    let settings = data.settings("");
    let conn = db::connect(&settings.database).await.unwrap();
    db::migrate(&conn).await.unwrap();
    db::migrate(&conn).await.expect("re-applying is a no-op");
    let sql = match backend {
        Backend::Embedded => "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')",
        Backend::Production => {
            "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' \
             UNION ALL SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        }
    };
    let rows = conn
        .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap();
    let names: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("", "name").unwrap())
        .collect();
    for table in TABLES {
        assert!(
            names.iter().any(|n| n == table),
            "table {table} in {names:?}"
        );
    }
    for index in [
        "ix_job_items_claim",
        "ux_job_items_job_user",
        "ix_job_items_due_set",
        "ix_audit_log_tenant_id",
        "ix_job_activity_tenant_job",
    ] {
        assert!(
            names.iter().any(|n| n == index),
            "index {index} in {names:?}"
        );
    }
    // Replaced: the full due-time index (by the partial one) and the (job, status) index (by
    // the claim index).
    for index in ["ix_job_items_due", "ix_job_items_job_status"] {
        assert!(
            !names.iter().any(|n| n == index),
            "no index {index} in {names:?}"
        );
    }
    let applied = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
        .unwrap();
    assert_eq!(
        applied.len(),
        licensor_migrations::Migrator::migrations().len(),
        "each migration recorded once"
    );
    conn.close().await.unwrap();
    // A second connection (a restarted process) migrates again without error.
    let again = db::connect(&settings.database).await.unwrap();
    db::migrate(&again).await.unwrap();
    again.close().await.unwrap();
}
on_both_backends!(migrations_apply_and_reapply);
