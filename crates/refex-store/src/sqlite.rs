//! The SQLite backend: one file under the data directory, WAL journal, `synchronous=FULL`
//! so a commit is durable before the caller hears of it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use crate::common::SqlStore;
use crate::sql::{Arg, Dialect, Faults, Pool, Stmt, Value};

/// How long a writer waits for SQLite's write lock before failing: far above any single
/// transaction's time, well below a client's request timeout.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool: SQLite has one writer at a time; a few readers suffice.
const MAX_CONNECTIONS: u32 = 8;

/// The embedded store.
pub type SqliteStore = SqlStore<Sqlite>;

/// SQLite's dialect: one writer (no row locks, no job locks), `BEGIN IMMEDIATE`.
#[derive(Debug)]
pub struct Sqlite;

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    const BACKEND: crate::Backend = crate::Backend::Sqlite;
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const NOTIFY: &'static str = "";
    const JOB_LOCK: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const DB_NOW: &'static str = "CAST(strftime('%s', 'now') AS INTEGER)";
    // 2,000 pages (16 MiB at 8 KiB pages) per housekeeping pass: short enough never to hold
    // the writer long.
    const RECLAIM: &'static str = "PRAGMA incremental_vacuum(2000)";

    async fn execute(
        conn: &mut sqlx::SqliteConnection,
        stmt: &Stmt<'_>,
    ) -> Result<u64, sqlx::Error> {
        bind(stmt).execute(conn).await.map(|r| r.rows_affected())
    }

    async fn fetch(
        conn: &mut sqlx::SqliteConnection,
        stmt: &Stmt<'_>,
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        let rows = bind(stmt).fetch_all(conn).await?;
        rows.iter().map(values).collect()
    }
}

/// The statement with its arguments bound.
fn bind<'q>(
    stmt: &'q Stmt<'_>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(stmt.sql_text()));
    for arg in stmt.args() {
        q = match arg {
            Arg::Int(v) => q.bind(*v),
            Arg::Int32(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
            Arg::Blob(v) => q.bind(*v),
        };
    }
    q
}

/// A row's values by their storage class.
fn values(row: &sqlx::sqlite::SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_owned();
            Ok(match kind.as_str() {
                "INTEGER" | "BOOLEAN" | "INT8" => Value::Int(row.try_get_unchecked(i)?),
                "BLOB" => Value::Blob(row.try_get_unchecked(i)?),
                _ => Value::Text(row.try_get_unchecked(i)?),
            })
        })
        .collect()
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://path` URL names and migrates it.
    pub async fn open(
        url: &str,
        batching: super::group_commit::Options,
    ) -> Result<Self, crate::StoreError> {
        Self::open_with_faults(url, batching, Faults::default()).await
    }

    /// [`SqliteStore::open`] consulting `faults` before each statement.
    pub async fn open_with_faults(
        url: &str,
        batching: super::group_commit::Options,
        faults: Faults,
    ) -> Result<Self, crate::StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| crate::StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // A new database is created with incremental auto-vacuum, so space purged
            // records held is returned to the file system (`reclaim_space`); an existing
            // one keeps its mode until an operator runs VACUUM once (OPERATIONS.md).
            .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
            // 8 KiB pages for a new database: a sealed delivery of a few KiB fills most of a
            // 4 KiB page on its own, so half of `deliveries` was unused space (measured with
            // dbstat after `refex bench`: 17.0 → 11.4 KiB per referral once compacted). An
            // existing database keeps its page size.
            .page_size(8192)
            .busy_timeout(BUSY_TIMEOUT);
        // The data directory 0700 and the database 0600 before SQLite opens it: its -wal and
        // -shm files take the database file's mode, so none is ever readable by others.
        let file = options.get_filename().to_owned();
        if let Some(dir) = file.parent() {
            if !dir.as_os_str().is_empty() {
                refex_core::files::create_private_dir_all(dir).map_err(|e| {
                    crate::StoreError::Unavailable(format!("{}: {e}", dir.display()))
                })?;
            }
        }
        if file.as_os_str() != ":memory:" && !file.as_os_str().is_empty() {
            refex_core::files::touch_private(&file)
                .map_err(|e| crate::StoreError::Unavailable(format!("{}: {e}", file.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await
            .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
        migrate(&pool).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
        Ok(SqlStore::new(
            Pool::new(pool, faults.clone()),
            Pool::new(writer, faults),
            batching,
        ))
    }

    /// A store in this process's memory, gone when dropped: the embedded backend's very
    /// schema and statements on one connection (readers and the writer share it), consulting
    /// `faults` before each statement. For fast, deterministic fault tests: a planned
    /// failure of a chosen statement shows what each operation leaves behind.
    pub async fn in_memory(
        batching: super::group_commit::Options,
        faults: Faults,
    ) -> Result<Self, crate::StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| crate::StoreError::Url(e.to_string()))?
            .journal_mode(SqliteJournalMode::Memory)
            .foreign_keys(true);
        // One connection for ever: a second would open a second, empty database, and one
        // closed for being idle would take the data with it.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
        migrate(&pool).await?;
        let pool = Pool::new(pool, faults);
        Ok(SqlStore::new(pool.clone(), pool, batching))
    }
}

/// Brings the schema up to date. A newer release's migrations already applied are not an
/// error: migrations are expand-only, so this release runs on a newer schema (a rolling
/// update, a rollback).
async fn migrate(pool: &sqlx::SqlitePool) -> Result<(), crate::StoreError> {
    let mut migrator = sqlx::migrate!("../../migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(|e| crate::StoreError::Migration(e.to_string()))
}
