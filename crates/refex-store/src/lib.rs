//! Storage: one [`Store`] trait with two real backends, SQLite (the embedded default, WAL,
//! every write durable before it returns: [`durable`]) and PostgreSQL (shared by gateway replicas), each with its own
//! migrations under `migrations/`. Nothing outside this crate speaks SQL to the gateway's
//! store (the gateway re-exports it as `refex::store`; only its benchmark seeds a throwaway
//! store directly).
//!
//! The store is split by aggregate into narrow ports ([`ports`]); one generic implementation
//! ([`SqlStore`]) serves every port over a [`sql::Dialect`] (SQLite or PostgreSQL), and
//! can be opened with a [`sql::Faults`] plan that fails chosen statements. The same
//! conformance functions (`tests/it/store_conformance.rs`) run against both backends and
//! against the embedded store in memory with planned faults.

mod audit;
mod common;
pub mod durable;
pub mod group_commit;
mod housekeeping;
mod inbox;
mod intake;
pub mod metric;
pub mod packed;
pub mod ports;
mod postgres;
pub mod records;
mod review;
mod rows;
pub mod sql;
mod sqlite;

use std::sync::Arc;

pub use common::SqlStore;
pub use ports::{AuditStore, HousekeepingStore, InboxStore, IntakeStore, ReviewStore};
pub use postgres::{Postgres, PostgresStore};
pub use sqlite::{Sqlite, SqliteStore};

/// The store format this build writes; [`Store::ping`] checks the store has it. It changes
/// only with a migration that contracts the schema or after which rows are written that no
/// earlier build reads (0007: 2; 0011: 3; 0012: 4; 0016: 5, the gateway's JWE headers kept as
/// fields), so a replica of an older build still running beside the migrated store fails its
/// readiness instead of answering 500s.
pub const STORE_FORMAT: &str = "5";

/// A storage failure. Its text names the operation, never a stored value.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not `sqlite://…` or `postgres://…`, or does not parse.
    #[error("unsupported or malformed store URL ({0})")]
    Url(String),
    /// The store cannot be reached or refused the connection.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is reachable but rolled this transaction back for another (a deadlock, a
    /// serialisation failure, a writer holding SQLite past the busy timeout): nothing was
    /// written; a retry can succeed at once.
    #[error("store contended: {0}")]
    Contended(String),
    /// Applying migrations failed.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// The store answered but is not in the format this build expects.
    #[error("store format {found:?}, expected {STORE_FORMAT:?}")]
    Format {
        /// What the store holds.
        found: Option<String>,
    },
    /// The store is out of space (SQLite `SQLITE_FULL`, PostgreSQL `disk_full`): nothing was
    /// written; retry once space is freed.
    #[error("store full: {0}")]
    Full(String),
    /// A write could not be made durable (the embedded store's write-ahead log failed its
    /// sync), so the store accepts no more writes and promises nothing until the gateway
    /// restarts (fail-stop; docs/OPERATIONS.md). Not "unreachable": probing it again cannot
    /// bring it back, and nothing is worth waiting for.
    #[error("store stopped: {0}")]
    Stopped(String),
    /// A stored value does not parse into its type (a row written by something other than
    /// this gateway, or damaged): an error, never a default or a skipped row.
    #[error("store holds a value in {table}.{column} this build cannot read")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
    },
    /// An audit event's leaf cannot be rebuilt from what is stored (its packed detail is
    /// damaged, or it holds both a leaf and a packed detail): named by its index, so an
    /// auditor can find the row an export stopped at.
    #[error("audit leaf {idx} cannot be read back from the store (a damaged or altered row)")]
    Leaf {
        /// The leaf's index.
        idx: u64,
    },
    /// A stored value is not of its column's type (text where a time belongs, a row written
    /// by something other than this gateway): like [`StoreError::Corrupt`], an error, never a
    /// default, named by the statement and the column's place in it.
    #[error("store answered {op} with column {column} that is not {expected}")]
    Unreadable {
        /// Which operation.
        op: &'static str,
        /// The column's place in the statement's select list (from 0).
        column: usize,
        /// What it should hold.
        expected: &'static str,
    },
    /// A query failed.
    #[error("store query {op} failed: {reason}")]
    Query {
        /// Which operation.
        op: &'static str,
        /// The driver's message (SQL errors carry no bound values).
        reason: String,
    },
}

/// Which backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Everything refex keeps durably: every port over one backend, which can be pinged and
/// closed as a whole.
#[async_trait::async_trait]
pub trait Store:
    ports::IntakeStore
    + ports::InboxStore
    + ports::ReviewStore
    + ports::AuditStore
    + ports::HousekeepingStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Succeeds when the store is reachable and migrated to [`STORE_FORMAT`].
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the store's connections (after the last request has finished).
    async fn close(&self);
}

/// The tables, for [`HousekeepingStore::count_rows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Referral records.
    Referrals,
    /// Deliveries.
    Deliveries,
    /// Encrypted holds.
    Holds,
    /// Replay markers.
    ReplayMarkers,
    /// Audit events.
    AuditEvents,
}

impl Table {
    fn count_sql(self) -> &'static str {
        match self {
            Table::Referrals => "SELECT COUNT(*) FROM referrals",
            Table::Deliveries => "SELECT COUNT(*) FROM deliveries",
            Table::Holds => "SELECT COUNT(*) FROM holds",
            Table::ReplayMarkers => "SELECT COUNT(*) FROM replay_markers",
            Table::AuditEvents => "SELECT COUNT(*) FROM audit_events",
        }
    }
}

/// Opens the store a URL names and brings its schema up to date, with the default
/// group-commit options.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, group_commit::Options::default()).await
}

/// Opens the store a URL names with the given group-commit options.
pub async fn open_with(
    url: &str,
    options: group_commit::Options,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::open(url, options).await?))
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::Url(format!("scheme {scheme:?}")))
    }
}

fn check_format(found: Option<String>) -> Result<(), StoreError> {
    if found.as_deref() == Some(STORE_FORMAT) {
        Ok(())
    } else {
        Err(StoreError::Format { found })
    }
}

fn query_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        // Not even a transaction could begin (a refused connection, a database not
        // accepting connections): the store is unavailable, whatever the code; except a
        // full disk, which SQLite can report at BEGIN after a commit failed for space: that
        // is a store that is up and full (`507`), and must not open the breaker.
        sqlx::Error::Database(db)
            if matches!(op, "begin" | "acquire") && classify_db(db.as_ref()) != Transient::Full =>
        {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => match classify_db(db.as_ref()) {
            Transient::Unavailable => StoreError::Unavailable(e.to_string()),
            Transient::Contended => StoreError::Contended(e.to_string()),
            Transient::Full => StoreError::Full(e.to_string()),
            Transient::No => StoreError::Query {
                op,
                reason: e.to_string(),
            },
        },
        _ => StoreError::Query {
            op,
            reason: e.to_string(),
        },
    }
}

/// What a database error code says about retrying.
#[derive(Debug, PartialEq, Eq)]
enum Transient {
    /// The store is unreachable or restarting: retry later (`503`).
    Unavailable,
    /// Another transaction won: retry (`503`); the store itself is fine.
    Contended,
    /// The store has no space: retry once freed (`507`).
    Full,
    /// A real failure of this query.
    No,
}

/// A database error's code in its backend's numbering. The two overlap as text: `22021`, a
/// PostgreSQL encoding error (a NUL in a text value), is also a number whose low byte is
/// SQLite's `SQLITE_BUSY`, and was once answered "busy, retry later" for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code<'a> {
    /// A PostgreSQL SQLSTATE (five characters).
    Sqlstate(&'a str),
    /// A SQLite result code, extended codes included (decimal).
    Sqlite(&'a str),
}

/// Classifies a driver's database error by its backend's code.
fn classify_db(db: &dyn sqlx::error::DatabaseError) -> Transient {
    let code = db.code();
    let code = code.as_deref().map(|c| {
        if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            Code::Sqlite(c)
        } else {
            Code::Sqlstate(c)
        }
    });
    classify(code)
}

/// Classifies PostgreSQL SQLSTATEs and SQLite result codes.
fn classify(code: Option<Code<'_>>) -> Transient {
    match code {
        // PostgreSQL: connection exceptions (class 08), the server shutting down or starting
        // (57P01-57P03), too many connections (53300).
        Some(Code::Sqlstate(c)) if c.starts_with("08") => Transient::Unavailable,
        Some(Code::Sqlstate("57P01" | "57P02" | "57P03" | "53300")) => Transient::Unavailable,
        // PostgreSQL deadlock and serialisation failures: the transaction was rolled back
        // whole; a retry can succeed.
        Some(Code::Sqlstate("40P01" | "40001")) => Transient::Contended,
        // PostgreSQL disk_full; SQLite SQLITE_FULL.
        Some(Code::Sqlstate("53100") | Code::Sqlite("13")) => Transient::Full,
        // SQLite SQLITE_BUSY and SQLITE_LOCKED (and SQLITE_BUSY's extended codes): another
        // writer held the database past the busy timeout.
        Some(Code::Sqlite(c)) if c.parse::<u32>().is_ok_and(|n| n == 6 || n & 0xff == 5) => {
            Transient::Contended
        }
        _ => Transient::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified_for_retry() {
        use Code::{Sqlite, Sqlstate};
        assert_eq!(classify(Some(Sqlstate("57P01"))), Transient::Unavailable);
        assert_eq!(classify(Some(Sqlstate("08006"))), Transient::Unavailable);
        assert_eq!(classify(Some(Sqlstate("40P01"))), Transient::Contended);
        assert_eq!(classify(Some(Sqlstate("53100"))), Transient::Full);
        assert_eq!(classify(Some(Sqlite("13"))), Transient::Full);
        assert_eq!(classify(Some(Sqlite("5"))), Transient::Contended);
        assert_eq!(classify(Some(Sqlite("6"))), Transient::Contended);
        assert_eq!(classify(Some(Sqlite("517"))), Transient::Contended); // SQLITE_BUSY_SNAPSHOT
        assert_eq!(classify(Some(Sqlstate("23505"))), Transient::No);
        assert_eq!(classify(Some(Sqlite("2067"))), Transient::No); // SQLITE_CONSTRAINT_UNIQUE
        assert_eq!(classify(None), Transient::No);
    }

    /// PostgreSQL codes that read as numbers are never SQLite's "busy": an encoding error
    /// (a NUL in text, 0x5605) and insufficient privilege (0xA605) are real failures, and
    /// SQLite's codes are never taken for SQLSTATEs.
    #[test]
    fn a_code_is_read_in_its_own_backends_numbering() {
        assert_eq!(classify(Some(Code::Sqlstate("22021"))), Transient::No);
        assert_eq!(classify(Some(Code::Sqlstate("42501"))), Transient::No);
        assert_eq!(classify(Some(Code::Sqlstate("5"))), Transient::No);
        assert_eq!(classify(Some(Code::Sqlstate("13"))), Transient::No);
        assert_eq!(classify(Some(Code::Sqlite("53100"))), Transient::No);
    }
}
