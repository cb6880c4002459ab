//! Database connection (SQLite embedded default or PostgreSQL) and migrations.

use std::time::Duration;

use licensor_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use crate::config::{ConfigError, DatabaseUrl};

pub use sea_orm::DatabaseConnection as Db;

/// Open the database. A failure names the `database_url` key and never shows a password.
pub async fn connect(url: &DatabaseUrl) -> Result<DatabaseConnection, ConfigError> {
    let mut options = match url {
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ConfigError::new(
                        "database_url",
                        format!("cannot create directory {}: {e}", dir.display()),
                    )
                })?;
            }
            let mut o = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
            o.max_connections(8).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
            });
            o
        }
        DatabaseUrl::Postgres(url) => {
            let mut o = ConnectOptions::new(url.clone());
            o.max_connections(16);
            o
        }
    };
    options
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let db = Database::connect(options).await.map_err(|e| {
        ConfigError::new(
            "database_url",
            format!(
                "cannot connect to {}: {}",
                url.redacted(),
                one_line(&e.to_string())
            ),
        )
    })?;
    db.execute_unprepared("SELECT 1").await.map_err(|e| {
        ConfigError::new(
            "database_url",
            format!(
                "cannot use {}: {}",
                url.redacted(),
                one_line(&e.to_string())
            ),
        )
    })?;
    Ok(db)
}

/// Apply every pending migration; applying them again does nothing.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    Migrator::up(db, None).await
}

/// Whether the database answers.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Sqlite => "sqlite",
        DbBackend::Postgres => "postgres",
        _ => "other",
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
