//! Migrations apply, and apply again as a no-op, on SQLite and on the real PostgreSQL server.

mod common;

use common::{Backend, TestData};
use licensor_core::db;
use licensor_migrations::MigratorTrait;
use sea_orm::{ConnectionTrait, Statement};

const TABLES: [&str; 14] = [
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
    "member_keys",
    "member_keys_mark",
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
        "ix_member_keys_user",
        "ix_member_keys_upn",
    ] {
        assert!(
            names.iter().any(|n| n == index),
            "index {index} in {names:?}"
        );
    }
    // Replaced: the full due-time index (by the partial one), the (job, status) index (by
    // the claim index) and the member history's whole-key and then prefix indexes on job items
    // (by the keys in `member_keys`).
    for index in [
        "ix_job_items_due",
        "ix_job_items_job_status",
        "ix_job_items_user",
        "ix_job_items_upn_lower",
        "ix_job_items_user_key",
        "ix_job_items_upn_key",
    ] {
        assert!(
            !names.iter().any(|n| n == index),
            "no index {index} in {names:?}"
        );
    }
    if backend == Backend::Embedded {
        // The member history's look-ups (as `jobs::history` writes them) use the key indexes,
        // and its read of the items not keyed yet the items' ids.
        for (lookup, index) in [
            (
                "job_items.id IN (SELECT item_id FROM member_keys WHERE user_key = '6f1c2d3e') \
                 AND job_items.user_id = '6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f'",
                "ix_member_keys_user",
            ),
            (
                "job_items.id IN (SELECT item_id FROM member_keys \
                   WHERE upn_key = 'anna.berg@contos') \
                 AND lower(job_items.user_principal_name) = 'anna.berg@contoso.com'",
                "ix_member_keys_upn",
            ),
            (
                "job_items.id > 1000 \
                 AND job_items.user_id = '6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f'",
                "INTEGER PRIMARY KEY (rowid>?)",
            ),
        ] {
            let plan = conn
                .query_all_raw(Statement::from_string(
                    conn.get_database_backend(),
                    format!("EXPLAIN QUERY PLAN SELECT id FROM job_items WHERE {lookup}"),
                ))
                .await
                .unwrap();
            let plan: Vec<String> = plan
                .iter()
                .map(|r| r.try_get("", "detail").unwrap())
                .collect();
            assert!(
                plan.iter().any(|d| d.contains(index)),
                "{lookup} uses {index}: {plan:?}"
            );
        }
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

/// `m20261204_000035_member_keys` keys the items stored before it (and marks them keyed through
/// the newest), and its rollback gives `job_items` its two key indexes back: up, down, two items
/// stored, up again.
async fn the_member_keys_migration_keys_stored_items_and_rolls_back(backend: Backend) {
    let Some(data) = TestData::new(backend).await else {
        return;
    };
    let conn = db::connect(&data.settings("").database).await.unwrap();
    let count = |sql: &'static str| {
        let conn = conn.clone();
        async move {
            conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index::<i64>(0)
                .unwrap()
        }
    };
    let key_indexes = match backend {
        Backend::Embedded => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
             AND name IN ('ix_job_items_user_key', 'ix_job_items_upn_key')"
        }
        Backend::Production => {
            "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = 'public' \
             AND indexname IN ('ix_job_items_user_key', 'ix_job_items_upn_key')"
        }
    };
    db::migrate(&conn).await.unwrap();
    assert_eq!(count(key_indexes).await, 0);
    licensor_migrations::Migrator::down(&conn, Some(1))
        .await
        .unwrap();
    assert_eq!(
        count(key_indexes).await,
        2,
        "the rollback creates them again"
    );
    conn.execute_unprepared(
        "INSERT INTO tenants (id, name, created_at, updated_at)
           VALUES ('4d0c7f4e-5a63-4d52-9a43-3c1e2f0b7a11', 'Contoso', '2026-12-04T00:00:00Z',
                   '2026-12-04T00:00:00Z');
         INSERT INTO jobs (id, tenant_id, kind, status, request, created_at, updated_at)
           VALUES ('9b3f2a10-77c4-4e0b-8d65-2f4a1c9e0d22', '4d0c7f4e-5a63-4d52-9a43-3c1e2f0b7a11',
                   'assign', 'finished', '{}', '2026-12-04T00:00:00Z', '2026-12-04T00:00:00Z');
         INSERT INTO job_items (job_id, user_id, user_principal_name, status, updated_at)
           VALUES ('9b3f2a10-77c4-4e0b-8d65-2f4a1c9e0d22', '6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f',
                   'Anna.Berg@Contoso.com', 'succeeded', '2026-12-04T00:00:00Z'),
                  ('9b3f2a10-77c4-4e0b-8d65-2f4a1c9e0d22', '0a1b2c3d-4b5a-4c7d-8e9f-0a1b2c3d4e5f',
                   NULL, 'failed', '2026-12-04T00:00:00Z')",
    )
    .await
    .unwrap();
    db::migrate(&conn).await.unwrap();
    assert_eq!(count(key_indexes).await, 0);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM member_keys k JOIN job_items i ON i.id = k.item_id
             WHERE (k.user_key = '6f1c2d3e' AND k.upn_key = 'anna.berg@contos')
                OR (k.user_key = '0a1b2c3d' AND k.upn_key IS NULL)"
        )
        .await,
        2
    );
    assert_eq!(
        count("SELECT through - (SELECT MAX(id) FROM job_items) FROM member_keys_mark").await,
        0,
        "keyed through the newest item"
    );
    conn.close().await.unwrap();
}
on_both_backends!(the_member_keys_migration_keys_stored_items_and_rolls_back);
