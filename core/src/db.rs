//! Database connection (SQLite embedded default or PostgreSQL) and migrations.

use std::time::Duration;

use licensor_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::{ConfigError, DatabaseUrl};

pub use sea_orm::DatabaseConnection as Db;

/// Who a connection pool serves: the two wait differently for a connection when the database
/// is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRole {
    /// Workers and start-up: wait up to 5 s for a PostgreSQL connection (30 s for SQLite's),
    /// then fail the step, which waits for the database and is taken again (see
    /// [`wait_until_available`]).
    Workers,
    /// API request handlers: wait at most [`API_ACQUIRE_TIMEOUT`], so a caller gets 503
    /// `database_unavailable` within 2 s instead of a hung request.
    Api,
    /// A worker process's heartbeat: one connection of its own, so steps that hold every
    /// connection of the workers' pool never delay it (a late heartbeat would have the
    /// process's members taken over while it works them).
    Heartbeat,
}

/// How long an API request waits for a database connection before it is answered 503.
pub const API_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The size, in bytes, the embedded database's write-ahead log (`licensor.db-wal`) is cut back
/// to each time it starts over (SQLite's `journal_size_limit`,
/// <https://www.sqlite.org/pragma.html#pragma_journal_size_limit>): 64 MiB. While readers keep
/// a checkpoint from finishing (a large job's lanes read as its groups are stored) the log
/// grows past it — to 2–3 GB for a 287 MB database at 500 tenants × 1,000 members — and
/// without a limit its file kept that size for good.
pub const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// How long a PostgreSQL session may sit idle inside a transaction before the server ends it
/// and releases its locks (`idle_in_transaction_session_timeout`, set on every connection).
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// How many rows a SQLite connection's thread hands back to the waiting task before it stops
/// for the task to take them (sqlx's `row_buffer_size`, 50 by default): more than the largest
/// chunk of members a step claims (`jobs.chunk_size`, at most 5,000).
///
/// A statement's write is committed only once its last row has been stepped. With sqlx's
/// default, a claim's `UPDATE … RETURNING` of 100 or 500 members held the file's write lock
/// while its thread waited for the claiming task to be scheduled and take the first 50 rows,
/// then the next 50 — with hundreds of tenants' steps on two cores, for milliseconds each time,
/// and every other write of the process waited behind it (`licensor-bench --scenario msp`,
/// 500 tenants: a claim took 8.8 ms on average from start to last row).
pub const ROW_BUFFER: usize = 8192;

/// How long a SQLite statement waits for another connection's lock (the file's write lock,
/// mostly) before it fails with `SQLITE_BUSY`: 30 s.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Have every connection of a SQLite pool wait for another connection's lock
/// ([`wait_for_lock`]) rather than with SQLite's own busy handler, for at most
/// [`LOCK_TIMEOUT`], and wake the connections waiting on the same file as soon as one of them
/// commits ([`lock_freed`]). Used for the database and the embedded queue's file.
///
/// SQLite's handler (`sqlite3_busy_timeout`, <https://www.sqlite.org/c3ref/busy_timeout.html>)
/// sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms between tries, so a
/// connection that found the lock taken a few times sleeps on long after it was freed. With
/// licensor's worker places sharing one file that added up: in `licensor-bench --scenario raw`
/// (100,000 members) the connections slept 9 s in all within a 5 s run, 26 of the sleeps
/// 100 ms long, while the machine was a third idle. Polling the lock every 0.1–2 ms instead
/// still left it free for a fraction of each poll after every commit, thousands of times a
/// second while `licensor-bench --scenario msp` started 500 jobs: a commit now wakes the
/// waiters at once, and the poll stays as the fallback for a lock freed without a commit (a
/// rollback, a checkpoint).
pub fn wait_for_locks(
    options: sea_orm::sqlx::pool::PoolOptions<sea_orm::sqlx::Sqlite>,
) -> sea_orm::sqlx::pool::PoolOptions<sea_orm::sqlx::Sqlite> {
    options.after_connect(|conn, _| {
        Box::pin(async move {
            let mut handle = conn.lock_handle().await?;
            let db = handle.as_raw_handle().as_ptr();
            // SAFETY: `db` is this open connection's handle, locked for the calls. The
            // filename SQLite returns is copied before the handle is used again. The argument
            // both callbacks get is a `LockWaits` that lives as long as the process, and
            // neither callback keeps it beyond the call.
            let rc = unsafe {
                let name = libsqlite3_sys::sqlite3_db_filename(db, c"main".as_ptr());
                let file = if name.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(name)
                        .to_string_lossy()
                        .into_owned()
                };
                let waits = LockWaits::of_file(&file) as *const LockWaits as *mut std::ffi::c_void;
                libsqlite3_sys::sqlite3_wal_hook(db, Some(lock_freed), waits);
                libsqlite3_sys::sqlite3_busy_handler(db, Some(wait_for_lock), waits)
            };
            if rc != libsqlite3_sys::SQLITE_OK {
                return Err(sea_orm::sqlx::Error::Protocol(format!(
                    "cannot set SQLite's busy handler: code {rc}"
                )));
            }
            Ok(())
        })
    })
}

/// The connections of one SQLite file (of every pool of the process) waiting for its write
/// lock ([`wait_for_lock`]), and the commits that free it ([`lock_freed`]).
#[derive(Default)]
pub(crate) struct LockWaits {
    /// Commits to the file so far.
    commits: std::sync::atomic::AtomicU64,
    /// Connections waiting now: a commit with none waiting wakes nobody.
    waiting: std::sync::atomic::AtomicUsize,
    /// Waits a commit ended (not their pause).
    woken: std::sync::atomic::AtomicU64,
    lock: std::sync::Mutex<()>,
    freed: std::sync::Condvar,
}

impl LockWaits {
    /// The waits of the file at `path` (SQLite's full name of the file; empty for a database
    /// in memory), one for the whole process: every pool on that file shares it.
    pub(crate) fn of_file(path: &str) -> &'static LockWaits {
        use std::collections::HashMap;
        use std::sync::{LazyLock, Mutex};
        static FILES: LazyLock<Mutex<HashMap<String, &'static LockWaits>>> =
            LazyLock::new(Default::default);
        let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
        files
            .entry(path.to_owned())
            .or_insert_with(|| Box::leak(Box::default()))
    }

    /// A commit freed the lock: wake the connections waiting for it.
    pub(crate) fn commit(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.commits.fetch_add(1, SeqCst);
        if self.waiting.load(SeqCst) > 0 {
            let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.freed.notify_all();
        }
    }

    /// Wait until the next commit or for `most`, whichever comes first; true when a commit
    /// ended the wait.
    pub(crate) fn wait(&self, most: Duration) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiting.fetch_add(1, SeqCst);
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // A commit from here on either sees this connection waiting and notifies under the
        // lock, or has counted itself before the wait starts.
        let seen = self.commits.load(SeqCst);
        let (_lock, waited) = self
            .freed
            .wait_timeout_while(lock, most, |_| self.commits.load(SeqCst) == seen)
            .unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, SeqCst);
        let woken = !waited.timed_out();
        if woken {
            self.woken.fetch_add(1, SeqCst);
        }
        woken
    }
}

/// SQLite's write-ahead-log hook of licensor's connections (see [`wait_for_locks`],
/// <https://www.sqlite.org/c3ref/wal_hook.html>): called after each commit, once the
/// connection has let go of the write lock, with the number of frames in the log. It wakes the
/// connections waiting for the lock, then checkpoints the log once it holds 1,000 frames or
/// more, as SQLite's own hook does (`sqlite3_wal_autocheckpoint`, which this hook replaces).
extern "C" fn lock_freed(
    waits: *mut std::ffi::c_void,
    db: *mut libsqlite3_sys::sqlite3,
    name: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    /// SQLite's default `wal_autocheckpoint`, in frames.
    const AUTOCHECKPOINT_FRAMES: std::ffi::c_int = 1000;
    // SAFETY: `waits` is the process-long `LockWaits` set with the hook (`wait_for_locks`).
    let waits = unsafe { &*(waits as *const LockWaits) };
    waits.commit();
    if frames >= AUTOCHECKPOINT_FRAMES {
        // SAFETY: `db` and `name` are the committing connection's and its database's, valid
        // for the call; SQLite's own hook makes the same call. A checkpoint that could not
        // finish (readers on older snapshots) is tried again by a later commit.
        unsafe { libsqlite3_sys::sqlite3_wal_checkpoint(db, name) };
    }
    libsqlite3_sys::SQLITE_OK
}

/// SQLite's busy handler of licensor's connections (see [`wait_for_locks`]): called with
/// `tries` = 0, 1, 2, … while the lock the connection needs is held by another; returns 1 to
/// try again once a commit to the file frees it or after a pause, 0 to give up (the statement
/// fails with `SQLITE_BUSY`) once [`LOCK_TIMEOUT`] has passed since the first call. The pause
/// grows by 100 µs a try to at most 2 ms. It runs on the connection's own thread (sqlx gives
/// each SQLite connection one), which it may block.
extern "C" fn wait_for_lock(
    waits: *mut std::ffi::c_void,
    tries: std::ffi::c_int,
) -> std::ffi::c_int {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let since = SINCE.with(|since| {
        if tries == 0 || since.get().is_none() {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    if now.duration_since(since) >= LOCK_TIMEOUT {
        return 0;
    }
    let pause = Duration::from_micros(100 * (u64::from(tries.unsigned_abs()) + 1));
    // SAFETY: `waits` is the process-long `LockWaits` set with the handler (`wait_for_locks`).
    let waits = unsafe { &*(waits as *const LockWaits) };
    waits.wait(pause.min(Duration::from_millis(2)));
    1
}

/// How long start-up tries to reach a PostgreSQL server before it reports why it could not.
const START_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Begin a transaction that may write. On SQLite it is `BEGIN IMMEDIATE`: the file's write
/// lock is taken (waiting up to the busy timeout) before the first read, so a transaction that
/// reads and then writes can never fail half-way with `SQLITE_BUSY` because another connection
/// wrote in between (a deferred transaction cannot upgrade a stale read snapshot, and SQLite
/// answers that at once, without waiting: <https://www.sqlite.org/lang_transaction.html>).
/// On PostgreSQL it is a plain `BEGIN`. Every transaction of licensor is begun here
/// (`clippy.toml` disallows `TransactionTrait::begin`).
pub async fn begin(db: &Db) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Run `statements` in order on `conn` (a transaction, mostly) and return the rows they changed
/// in all. On SQLite they go to the connection's thread as one multi-statement string, in one
/// round trip; on PostgreSQL one at a time.
///
/// Inside a SQLite transaction (begun `IMMEDIATE`, see [`begin`]) the file's write lock is held
/// from `BEGIN` to `COMMIT`, across every round trip between the connection's thread and the
/// task that issues the statements — and on a busy runtime each round trip waits for that task
/// to be polled again. Statements that need nothing from each other's answers are sent together
/// so the lock is held for one round trip instead of several.
///
/// Each statement's `?` placeholders take the next values in turn (SQLite binds positional
/// parameters across the statements of one string), so `statements` must use plain `?`, as
/// sea-query builds them for SQLite.
pub async fn execute_together<C: ConnectionTrait>(
    conn: &C,
    statements: Vec<sea_orm::Statement>,
) -> Result<u64, sea_orm::DbErr> {
    if conn.get_database_backend() != sea_orm::DbBackend::Sqlite || statements.len() < 2 {
        let mut changed = 0;
        for statement in statements {
            changed += conn.execute_raw(statement).await?.rows_affected();
        }
        return Ok(changed);
    }
    let mut sql = String::new();
    let mut values = Vec::new();
    for statement in statements {
        sql.push_str(statement.sql.trim_end().trim_end_matches(';'));
        sql.push_str(";\n");
        values.extend(statement.values.map(|v| v.0).unwrap_or_default());
    }
    let together = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values);
    Ok(conn.execute_raw(together).await?.rows_affected())
}

/// Open the database for workers and start-up (see [`PoolRole`]). A failure names the
/// `database_url` key and never shows a password.
pub async fn connect(url: &DatabaseUrl) -> Result<DatabaseConnection, ConfigError> {
    connect_as(url, PoolRole::Workers).await
}

/// Open the database for `role`. With PostgreSQL, one direct connection is tried first, so a
/// server that is down or refuses is reported as such (e.g. "Connection refused") within 5 s,
/// rather than as a pool time-out after 30 s.
pub async fn connect_as(
    url: &DatabaseUrl,
    role: PoolRole,
) -> Result<DatabaseConnection, ConfigError> {
    if let DatabaseUrl::Postgres(pg) = url {
        probe_postgres(url, pg).await?;
    }
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
            o.max_connections(if role == PoolRole::Heartbeat { 1 } else { 8 })
                .map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(LOCK_TIMEOUT)
                        .foreign_keys(true)
                        .row_buffer_size(ROW_BUFFER)
                })
                .map_sqlx_sqlite_pool_opts(wait_for_locks);
            o
        }
        DatabaseUrl::Postgres(url) => {
            let mut o = ConnectOptions::new(url.clone());
            // A process stopped or cut off in the middle of a transaction (SIGSTOP, a frozen
            // VM, a network partition) would otherwise keep its row locks for as long as its
            // connection lives: members it had claimed with `FOR UPDATE SKIP LOCKED` stayed
            // invisible to every other worker and the job never ended. The server ends such a
            // session after this long; licensor's own transactions never wait between
            // statements (no directory call is made inside one).
            o.map_sqlx_postgres_opts(|o| {
                o.options([(
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", IDLE_IN_TRANSACTION_TIMEOUT.as_millis()),
                )])
            });
            match role {
                PoolRole::Workers => o.max_connections(16),
                PoolRole::Api => o.max_connections(8).min_connections(0),
                PoolRole::Heartbeat => o.max_connections(1).min_connections(0),
            };
            o
        }
    };
    let acquire = match (role, url) {
        // A SQLite connection can wait long for the file's write lock under load; it is never
        // "away".
        (_, DatabaseUrl::Sqlite(_)) => Duration::from_secs(30),
        // The pool's reconnection backoff grows to a fifth of this time: kept short, the
        // workers find a PostgreSQL server that came back within a second.
        (PoolRole::Workers | PoolRole::Heartbeat, DatabaseUrl::Postgres(_)) => {
            Duration::from_secs(5)
        }
        (PoolRole::Api, DatabaseUrl::Postgres(_)) => API_ACQUIRE_TIMEOUT,
    };
    options
        .connect_timeout(Duration::from_secs(10).min(acquire))
        .acquire_timeout(acquire)
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

/// One direct connection to the PostgreSQL server, closed at once: its error is the real reason
/// (refused, unknown host, bad password, no such database), where a pool reports only a
/// time-out.
async fn probe_postgres(url: &DatabaseUrl, pg: &str) -> Result<(), ConfigError> {
    use sea_orm::sqlx::Connection;
    let refused = |reason: String| {
        ConfigError::new(
            "database_url",
            format!(
                "cannot connect to {}: {}",
                url.redacted(),
                one_line(&reason)
            ),
        )
    };
    match tokio::time::timeout(
        START_PROBE_TIMEOUT,
        sea_orm::sqlx::PgConnection::connect(pg),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(refused(e.to_string())),
        Err(_) => Err(refused(format!(
            "no answer within {} s",
            START_PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether `e` means the database could not be reached (down, restarting, refusing
/// connections, no connection free in time) rather than that a statement was wrong. Such a
/// failure is worth waiting out and retrying; the API answers it 503 `database_unavailable`.
pub fn is_unavailable(e: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => match e.as_ref() {
            SqlxError::Io(_)
            | SqlxError::PoolTimedOut
            | SqlxError::PoolClosed
            | SqlxError::WorkerCrashed
            | SqlxError::Tls(_)
            | SqlxError::Protocol(_) => true,
            // PostgreSQL shutting down or starting: admin_shutdown, crash_shutdown,
            // cannot_connect_now (class 57P) and connection exceptions (class 08).
            SqlxError::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
            _ => false,
        },
        DbErr::Conn(_) => true,
        _ => false,
    }
}

/// How long a worker step waits for a database that is away before it gives up and fails (the
/// queue and the reconciler then try it again): 10 min.
pub const OUTAGE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// Wait until the database answers again, checking every 250 ms, for at most `limit`. Returns
/// whether it answers. Workers call this after a step failed with an [`is_unavailable`] error,
/// so they stop claiming and writing while outcomes cannot be recorded, and go on within a
/// second of the database's return.
pub async fn wait_until_available(db: &DatabaseConnection, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ping = tokio::time::timeout(Duration::from_secs(1), self::ping(db)).await;
        if matches!(ping, Ok(true)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

/// `expr`, JSON text (a bound string, a `VALUES` column), as a JSON column's value: JSON columns
/// are `jsonb` on PostgreSQL (the text is cast there) and text on SQLite.
pub(crate) fn as_json(
    backend: DbBackend,
    expr: sea_orm::sea_query::Expr,
) -> sea_orm::sea_query::Expr {
    use sea_orm::sea_query::ExprTrait;
    match backend {
        DbBackend::Postgres => expr.cast_as("jsonb"),
        _ => expr,
    }
}

/// `expr`, a JSON column or JSON text (see [`as_json`]), as text: PostgreSQL's `jsonb` is
/// cast, SQLite's is text already. Read into a `String`, it parses straight into its Rust type.
pub(crate) fn as_json_text(
    backend: DbBackend,
    expr: sea_orm::sea_query::Expr,
) -> sea_orm::sea_query::Expr {
    use sea_orm::sea_query::ExprTrait;
    match backend {
        DbBackend::Postgres => expr.cast_as("text"),
        _ => expr,
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

    use super::*;

    /// A new SQLite database (in a directory removed when the handle is dropped) with one
    /// counter at 0: `counter (id = 1, n = 0)`.
    async fn counter_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&DatabaseUrl::Sqlite(dir.path().join("licensor.db")))
            .await
            .unwrap();
        db.execute_unprepared(
            "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
             INSERT INTO counter VALUES (1, 0)",
        )
        .await
        .unwrap();
        (dir, db)
    }

    async fn counter(db: &Db) -> i64 {
        counter_of(db, 1).await
    }

    /// The counter `id`'s value.
    async fn counter_of(db: &Db, id: i64) -> i64 {
        db.query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT n FROM counter WHERE id = ?",
            [id.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
    }

    /// Hold the file's write lock through `holder` (a counter incremented, not committed) for
    /// `held` while an increment through `waiter` waits for it, then commit. Returns how long
    /// after the commit the waiting write was made.
    async fn write_behind_held_lock(holder: &Db, waiter: &Db, held: Duration) -> Duration {
        let holding = begin(holder).await.unwrap();
        holding
            .execute_unprepared("UPDATE counter SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let db = waiter.clone();
            async move {
                db.execute_unprepared("UPDATE counter SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
                std::time::Instant::now()
            }
        });
        tokio::time::sleep(held).await;
        assert!(!waiting.is_finished(), "the write waited for the lock");
        holding.commit().await.unwrap();
        let released = std::time::Instant::now();
        let written = waiting.await.unwrap();
        written.saturating_duration_since(released)
    }

    /// A write that found the file's write lock taken goes on within milliseconds of its
    /// release ([`wait_for_locks`]), however long it waited. With SQLite's own busy handler a
    /// connection that has waited 340 ms sleeps 100 ms at a time, and went on about 90 ms
    /// after the release. The best of three tries is compared, so one slow wake-up of a busy
    /// machine does not decide it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_write_goes_on_as_the_lock_is_released() {
        let (_dir, db) = counter_db().await;
        let mut gaps = Vec::new();
        for _ in 0..3 {
            gaps.push(write_behind_held_lock(&db, &db, Duration::from_millis(340)).await);
        }
        assert_eq!(counter(&db).await, 6, "every write was made");
        let best = gaps.iter().min().unwrap();
        assert!(
            *best < Duration::from_millis(40),
            "a waiting write went on {best:?} after the lock was released (tries: {gaps:?})"
        );
    }

    /// A wait for the lock ends at the next commit to the file, not at the end of its pause;
    /// with no commit it ends after the pause.
    #[test]
    fn a_commit_ends_the_waits_for_the_lock() {
        let waits: &'static LockWaits = Box::leak(Box::default());
        let started = std::time::Instant::now();
        assert!(
            !waits.wait(Duration::from_millis(20)),
            "no commit: the pause ended it"
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
        let committer = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            waits.commit();
        });
        let started = std::time::Instant::now();
        assert!(
            waits.wait(Duration::from_secs(10)),
            "the commit ended the wait"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken {:?} after the wait began",
            started.elapsed()
        );
        committer.join().unwrap();
        assert_eq!(waits.woken.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Every pool on one file shares its waits, and a write through any of them wakes the
    /// writes waiting in the others: the workers' and the API's pools of the embedded server
    /// take the same file's lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_wakes_the_writes_of_every_pool_on_the_file() {
        let (dir, db) = counter_db().await;
        let api = connect_as(
            &DatabaseUrl::Sqlite(dir.path().join("licensor.db")),
            PoolRole::Api,
        )
        .await
        .unwrap();
        let file = std::fs::canonicalize(dir.path().join("licensor.db")).unwrap();
        let waits = LockWaits::of_file(&file.to_string_lossy());
        let woken = || waits.woken.load(std::sync::atomic::Ordering::SeqCst);
        let commits = || waits.commits.load(std::sync::atomic::Ordering::SeqCst);
        let before = commits();
        api.execute_unprepared("UPDATE counter SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(commits(), before + 1, "the other pool's commit was counted");
        let mut by_commit = 0;
        for _ in 0..3 {
            // Only the holder's commit can end a wait: its write was not committed before.
            let was = woken();
            write_behind_held_lock(&api, &db, Duration::from_millis(100)).await;
            by_commit += usize::from(woken() > was);
        }
        assert_eq!(counter(&db).await, 7, "every write was made");
        // A waiter between two tries as the commit comes finds the lock free without being
        // woken: rare, so most of the three are woken by the commit.
        assert!(by_commit >= 1, "no waiting write was woken by the commit");
    }

    /// The write-ahead log grows past [`WAL_SIZE_LIMIT`] while a reader holds an old snapshot,
    /// and is cut back to the limit once the reader is gone and the log starts over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_is_cut_back_after_a_long_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("licensor.db");
        let db = connect(&DatabaseUrl::Sqlite(path.clone())).await.unwrap();
        let wal = || {
            std::fs::metadata(path.with_extension("db-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        db.execute_unprepared("CREATE TABLE page (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .await
            .unwrap();
        // A reader holds its snapshot while 96 MiB are written, 1 MiB per commit.
        #[allow(clippy::disallowed_methods)]
        let reader = db.begin().await.unwrap();
        reader
            .execute_unprepared("SELECT count(*) FROM page")
            .await
            .unwrap();
        for _ in 0..96 {
            db.execute_unprepared("INSERT INTO page (body) VALUES (randomblob(1048576))")
                .await
                .unwrap();
        }
        let grown = wal();
        assert!(
            grown > WAL_SIZE_LIMIT,
            "the log grew past the limit: {grown}"
        );
        reader.commit().await.unwrap();
        // Later commits checkpoint the log and start it over: it is cut back.
        for _ in 0..4 {
            db.execute_unprepared("DELETE FROM page WHERE id = (SELECT min(id) FROM page)")
                .await
                .unwrap();
        }
        let after = wal();
        assert!(
            after <= WAL_SIZE_LIMIT,
            "the log is cut back to the limit: {grown} -> {after} bytes"
        );
    }

    /// A write that returns more rows than sqlx hands back at a time by default (50) is
    /// committed, and lets go of the file's write lock, before the task that issued it has
    /// taken its rows ([`ROW_BUFFER`]): another write goes on meanwhile. With sqlx's default the
    /// connection's thread waited, statement unfinished and lock held, for the task to come
    /// back for the rows beyond the first 50, and the other write waited with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_not_taken_yet_do_not_hold_the_write_lock() {
        use futures::StreamExt;
        let (_dir, db) = counter_db().await;
        db.execute_unprepared(
            "CREATE TABLE member (id INTEGER PRIMARY KEY, leased INTEGER NOT NULL DEFAULT 0);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO member (id) SELECT i FROM n",
        )
        .await
        .unwrap();
        let pool = db.get_sqlite_connection_pool();
        let mut claimed =
            sea_orm::sqlx::query("UPDATE member SET leased = 1 RETURNING id").fetch(pool);
        // The first row is back: the statement has started, and its task takes no more yet.
        claimed.next().await.unwrap().unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            db.execute_unprepared("UPDATE counter SET n = n + 1 WHERE id = 1"),
        )
        .await
        .expect("a write waited for rows its claiming task had not taken")
        .unwrap();
        let rest = claimed.count().await;
        assert_eq!(rest, 499, "every claimed row was handed back");
        assert_eq!(counter(&db).await, 1);
    }

    /// [`execute_together`] runs its statements in order in one go on SQLite, each taking its
    /// own bound values in turn, and counts the rows they changed in all; inside a transaction a
    /// failing one leaves nothing of the others once it is rolled back.
    #[tokio::test]
    async fn statements_run_together_take_their_values_in_turn() {
        use sea_orm::sea_query::Value;
        let (_dir, db) = counter_db().await;
        db.execute_unprepared("INSERT INTO counter VALUES (2, 0)")
            .await
            .unwrap();
        let add = |id: i64, by: i64| {
            Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "UPDATE counter SET n = n + ? WHERE id = ?",
                [Value::from(by), Value::from(id)],
            )
        };
        let changed = execute_together(&db, vec![add(1, 5), add(2, 7), add(3, 1)])
            .await
            .unwrap();
        assert_eq!(changed, 2, "rows 1 and 2 changed; there is no row 3");
        assert_eq!((counter_of(&db, 1).await, counter_of(&db, 2).await), (5, 7));

        let txn = begin(&db).await.unwrap();
        let failing =
            Statement::from_string(DbBackend::Sqlite, "INSERT INTO counter VALUES (1, 0)");
        execute_together(&txn, vec![add(2, 100), failing])
            .await
            .expect_err("the second statement breaks the primary key");
        txn.rollback().await.unwrap();
        assert_eq!(
            counter_of(&db, 2).await,
            7,
            "the first statement's change was rolled back"
        );
    }

    /// The bundled SQLite is built with its query planner stability guarantee
    /// (`.cargo/config.toml`): a statement's plan does not depend on the values bound to it, so
    /// a statement with a bound `LIMIT ?` is not compiled again each time it runs. Both
    /// connections (the database's and the queue's) are of this build.
    #[tokio::test]
    async fn sqlite_plans_do_not_depend_on_bound_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&DatabaseUrl::Sqlite(dir.path().join("licensor.db")))
            .await
            .unwrap();
        let options = db
            .query_all_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA compile_options",
            ))
            .await
            .unwrap();
        let options: Vec<String> = options
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect();
        assert!(
            options.iter().any(|o| o == "ENABLE_QPSG"),
            "SQLite built without SQLITE_ENABLE_QPSG: {options:?}"
        );
    }

    /// A transaction that reads, then writes, while another connection writes in between: a
    /// deferred SQLite transaction is refused at once (its read snapshot is stale, and SQLite
    /// does not wait); one begun with [`begin`] holds the write lock from the start, so the
    /// other writer waits for it and both succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reading_transaction_keeps_its_write_on_sqlite() {
        let (_dir, db) = counter_db().await;
        let read = "SELECT n FROM counter WHERE id = 1";

        // The fault: deferred.
        #[allow(clippy::disallowed_methods)]
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared(read).await.unwrap();
        db.execute_unprepared("UPDATE counter SET n = n + 1")
            .await
            .unwrap();
        let refused = txn
            .execute_unprepared("UPDATE counter SET n = n + 10")
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("locked") || refused.to_string().contains("busy"),
            "{refused}"
        );
        txn.rollback().await.unwrap();
        assert_eq!(counter(&db).await, 1);

        // `begin`: the other writer waits until this transaction commits.
        let txn = begin(&db).await.unwrap();
        txn.execute_unprepared(read).await.unwrap();
        let other = tokio::spawn({
            let db = db.clone();
            async move { db.execute_unprepared("UPDATE counter SET n = n + 1").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other.is_finished(), "the other writer waits for the lock");
        txn.execute_unprepared("UPDATE counter SET n = n + 10")
            .await
            .unwrap();
        txn.commit().await.unwrap();
        other.await.unwrap().unwrap();
        assert_eq!(counter(&db).await, 12);
    }
}
