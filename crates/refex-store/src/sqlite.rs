//! The SQLite backend: one file under the data directory, WAL journal; a commit is durable
//! before the caller hears of it (the writer syncs the WAL after each commit, off its path:
//! [`crate::durable`]; every other connection runs `synchronous=FULL`).

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

/// Pages in the write-ahead log past which the writer checkpoints by itself (32 MiB at 8 KiB
/// pages). Under sustained load the checkpointer's passes copy most of the log beside the
/// writer but never reach its end, so the log is restarted only by the writer's own
/// checkpoint, which then copies only what the passes have not; when idle, the passes finish
/// the log and the writer's next commit restarts it.
const WRITER_CHECKPOINT_PAGES: u32 = 4_096;

/// Bytes the write-ahead log file is cut back to after it restarts (`journal_size_limit`):
/// without it the file keeps its largest size for ever.
const WAL_SIZE_LIMIT: u32 = 32 * 1024 * 1024;

/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

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
    // Its statements run on its own worker thread: a batch polled on a thread of its own
    // waits for none of the reactor's requests between them.
    const BATCHES: crate::group_commit::Placement = crate::group_commit::Placement::Threads;

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

/// The statement with its arguments bound, its `$N` placeholders handed to SQLite as
/// anonymous `?` ones in order of appearance ([`anonymous_placeholders`]).
fn bind<'q>(
    stmt: &'q Stmt<'_>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let (sql, order) = anonymous_placeholders(stmt.sql());
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for n in order {
        // An unknown `$N` binds NULL, as SQLite does for a parameter left unbound.
        q = match n.checked_sub(1).and_then(|i| stmt.args().get(i)) {
            Some(Arg::Int(v)) => q.bind(*v),
            Some(Arg::Int32(v)) => q.bind(*v),
            Some(Arg::Text(v)) => q.bind(v.as_deref()),
            Some(Arg::Blob(v)) => q.bind(v.as_deref()),
            None => q.bind(None::<i64>),
        };
    }
    q
}

/// `sql` with each `$N` placeholder (outside quotes and comments) replaced by `?`, and the
/// `N`s in order of appearance: the arguments to bind, one per `?`.
///
/// SQLite looks a numbered or named parameter up in a list, by a linear scan, once when the
/// statement is parsed and once per argument bound (the driver asks each parameter's name):
/// quadratic in the parameters, which a multi-row `INSERT` of a batch has thousands of
/// (`perf`: ~18 % of the writer thread under load). Anonymous parameters are never looked
/// up.
fn anonymous_placeholders(sql: &str) -> (String, Vec<usize>) {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut order = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                out.push_str(&sql[copied..i]);
                out.push('?');
                order.push(sql[start..end].parse().unwrap_or(usize::MAX));
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    (out, order)
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
        Self::open_with(url, batching, faults, None).await
    }

    /// [`SqliteStore::open`] with `sync` in place of `fdatasync` for the write-ahead log
    /// (called with the log's path): the seam a test uses to see that every write is
    /// synced before it is answered, and to fail a sync.
    pub async fn open_synced_by(
        url: &str,
        batching: super::group_commit::Options,
        sync: crate::durable::SyncFn,
    ) -> Result<Self, crate::StoreError> {
        Self::open_with(url, batching, Faults::default(), Some(sync)).await
    }

    async fn open_with(
        url: &str,
        batching: super::group_commit::Options,
        faults: Faults,
        sync: Option<crate::durable::SyncFn>,
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
            // What a delete or purge removes is overwritten with zeros in the file, not left
            // in free space for anyone who copies it (a purged person's subject keys, a
            // delivery's ciphertext once acknowledged): erasure, not unlinking.
            .pragma("secure_delete", "ON")
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
        // The writer commits without waiting for the disk; `WalSync` makes each commit
        // durable before it returns, while the writer runs the next transaction. It leaves
        // checkpoints to the checkpointer below unless the log grows far past its usual size.
        // Its one connection stays open, so SQLite never removes the log while the store runs.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                options
                    .clone()
                    .synchronous(SqliteSynchronous::Normal)
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string())
                    .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string()),
            )
            .await
            .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
        let sync = std::sync::Arc::new(match sync {
            None => crate::durable::WalSync::for_database(&file),
            Some(sync) => crate::durable::WalSync::with_sync(crate::durable::wal_of(&file), sync),
        });
        spawn_checkpointer(
            options,
            writer.close_event(),
            std::sync::Arc::downgrade(&sync),
        );
        Ok(SqlStore::new(
            Pool::new(pool, faults.clone()),
            Pool::synced_by(writer, faults, sync),
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

/// Checkpoints the write-ahead log on a connection of its own, beside the writer, so that
/// the writer's own checkpoint (inside the `COMMIT` that crosses its threshold, holding the
/// one writer while it copies pages and syncs the database file) is rare and finds most of
/// the log already copied. A `PASSIVE` checkpoint takes no write lock; it syncs the log
/// before copying and the database after, like the automatic one. It stops when the store is dropped
/// (`alive` no longer upgrades) or closed.
fn spawn_checkpointer(
    options: SqliteConnectOptions,
    mut closed: sqlx::pool::CloseEvent,
    alive: std::sync::Weak<crate::durable::WalSync>,
) {
    use sqlx::{ConnectOptions as _, Connection as _};
    tokio::spawn(async move {
        let Ok(mut conn) = options.connect().await else {
            return;
        };
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Failing since the last pass that worked: warned once per streak, not ten times a
        // second.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut closed => break,
            }
            if alive.upgrade().is_none() {
                break;
            }
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut conn)
                .await
            {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("checkpoint passes work again");
                }
                Ok(_) => {}
                Err(e) => {
                    // Closed with the store, or a disk error the writer will meet too; the
                    // log grows until a pass works.
                    if !failing {
                        tracing::warn!(error = %e, "checkpoint pass failed; the write-ahead log grows until one works");
                    }
                    failing = true;
                    if matches!(e, sqlx::Error::Io(_)) {
                        break;
                    }
                }
            }
        }
        let _ = conn.close().await;
    });
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

#[cfg(test)]
mod tests {
    use super::anonymous_placeholders;

    #[test]
    fn placeholders_become_anonymous_in_order_of_appearance() {
        let (sql, order) = anonymous_placeholders(
            "SELECT a FROM t WHERE b = $2 AND c = $1 OR d = $2 AND e IN ($10, $3)",
        );
        assert_eq!(
            sql,
            "SELECT a FROM t WHERE b = ? AND c = ? OR d = ? AND e IN (?, ?)"
        );
        assert_eq!(order, [2, 1, 2, 10, 3]);
    }

    #[test]
    fn quotes_and_comments_are_left_alone() {
        let (sql, order) =
            anonymous_placeholders("SELECT '$1', \"$2\", 'it''s $3' -- $4\nFROM t WHERE x = $5$");
        assert_eq!(
            sql,
            "SELECT '$1', \"$2\", 'it''s $3' -- $4\nFROM t WHERE x = ?$"
        );
        assert_eq!(order, [5]);
    }

    #[test]
    fn unterminated_text_is_kept_whole() {
        assert_eq!(
            anonymous_placeholders("SELECT 'open $1"),
            ("SELECT 'open $1".to_owned(), vec![])
        );
    }
}
