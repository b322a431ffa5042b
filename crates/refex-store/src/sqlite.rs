//! The SQLite backend: one file under the data directory, WAL journal, `synchronous=FULL`
//! so a commit is durable before the caller hears of it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::common::store_impl;

/// How long a writer waits for SQLite's write lock before failing: far above any single
/// transaction's time, well below a client's request timeout.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool: SQLite has one writer at a time; a few readers suffice.
const MAX_CONNECTIONS: u32 = 8;

/// The embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one writer connection. SQLite admits one writer at a time; queueing writers here,
    /// first come first served, beats queueing them in SQLite's busy handler, which sleeps
    /// in steps of up to 100 ms (it put 180 ms on the p99 of inbox acknowledgements).
    writer: SqlitePool,
    group: super::group_commit::Acceptances,
    /// Inbox fetches and acknowledgements, committed together the same way.
    inbox:
        super::group_commit::GroupCommit<crate::records::InboxWrite, crate::records::InboxWritten>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://path` URL names and migrates it.
    pub async fn open(
        url: &str,
        batching: super::group_commit::Options,
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
        // A newer release's migrations already applied are not an error: migrations are
        // expand-only, so this release runs on a newer schema (a rolling update, a rollback).
        let mut migrator = sqlx::migrate!("../../migrations/sqlite");
        migrator.set_ignore_missing(true);
        migrator
            .run(&pool)
            .await
            .map_err(|e| crate::StoreError::Migration(e.to_string()))?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
        let (group, inbox) = committers(&writer, batching);
        Ok(Self {
            pool,
            writer,
            group,
            inbox,
        })
    }
}

impl SqliteStore {
    /// One process owns the embedded store: its own commits already wake its long-polls.
    fn watch_inbox(&self, _on_change: std::sync::Arc<dyn Fn() + Send + Sync>) {}
}

store_impl!(
    SqliteStore,
    crate::Backend::Sqlite,
    sqlx::SqliteConnection,
    "BEGIN IMMEDIATE",
    "",
    "",
    "",
    "CAST(strftime('%s', 'now') AS INTEGER)",
    // 2,000 pages (8 MiB at SQLite's 4 KiB pages) per housekeeping pass: short enough never
    // to hold the writer long.
    "PRAGMA incremental_vacuum(2000)"
);
