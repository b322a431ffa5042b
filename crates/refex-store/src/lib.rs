//! Storage: one [`Store`] trait with two real backends, SQLite (the embedded default, WAL,
//! `synchronous=FULL`) and PostgreSQL (shared by gateway replicas), each with its own
//! migrations under `migrations/`. Nothing outside this crate speaks SQL to the gateway's
//! store (the gateway re-exports it as `refex::store`; only its benchmark seeds a throwaway
//! store directly).
//!
//! The same conformance suite (`tests/it/store_conformance.rs`) runs against both backends.

mod common;
pub mod group_commit;
pub mod metric;
mod postgres;
pub mod records;
mod rows;
mod sqlite;

use std::sync::Arc;

use refex_core::audit::event::ActorRef;
use refex_core::identity::PartnerId;
use refex_core::ids::{DeliveryId, ReferralId};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The store format this build writes; [`Store::ping`] checks the store has it. It changes
/// only with a migration that contracts the schema (0007: 2; 0011: 3), so a replica of an
/// older release still running beside the migrated store fails its readiness instead of
/// answering 500s.
pub const STORE_FORMAT: &str = "3";

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
    /// A stored value does not parse into its type (a row written by something other than
    /// this gateway, or damaged): an error, never a default or a skipped row.
    #[error("store holds a value in {table}.{column} this build cannot read")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
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

/// Everything refex keeps durably. Ids are typed here too; every status change a method makes
/// is one that [`refex_core::lifecycle::next`] allows, with its audit event in the same transaction.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Succeeds when the store is reachable and migrated to [`STORE_FORMAT`].
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the store's connections (after the last request has finished).
    async fn close(&self);

    /// Commits an accepted referral: replay marker (with the referral id and digest),
    /// referral, deliveries, hold, subject keys and audit events in one transaction; and, when
    /// the acceptance says so, the open deliveries of the referral it corrects are withdrawn
    /// in the same transaction. [`records::AcceptOutcome::Replay`] if the sender used the
    /// `jti` before (nothing is written). Concurrent acceptances share a transaction
    /// ([`group_commit`]); each returns only once its transaction is durable, and each
    /// succeeds or fails on its own.
    async fn accept(
        &self,
        acceptance: records::Acceptance,
    ) -> Result<records::AcceptOutcome, StoreError>;

    /// The referral that `sender`'s `jti` admitted, if any: how a submission whose commit
    /// outcome was lost learns whether it committed, and how a retry finds its original.
    async fn prior_acceptance(
        &self,
        sender: &PartnerId,
        jti: &str,
    ) -> Result<Option<records::PriorAcceptance>, StoreError>;

    /// Appends one audit event on its own (a rejection, a consultation, a report).
    async fn record_event(&self, event: &records::AuditRecord) -> Result<(), StoreError>;

    /// The recipients and statuses of a referral's deliveries, if `sender` sent it; `None`
    /// for an unknown referral or someone else's (the caller answers both with 404).
    async fn delivery_states(
        &self,
        referral: &ReferralId,
        sender: &PartnerId,
    ) -> Result<Option<Vec<records::DeliveryState>>, StoreError>;

    /// A page of `recipient`'s inbox (queued or fetched, not acknowledged): deliveries with
    /// position after `after`, in position order, at most `limit`.
    async fn inbox_page(
        &self,
        recipient: &PartnerId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<records::InboxItem>, StoreError>;

    /// A delivery of `recipient` as it stands, without touching it: its status, and its
    /// sealed copy while it has one (for a hosted recipient's console, which opens the copy
    /// before marking it fetched, and checks the status before an acknowledgement).
    async fn peek_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
    ) -> Result<Option<(records::DeliveryStatus, Option<String>)>, StoreError>;

    /// The sealed delivery `id` if it is in `recipient`'s inbox; the first fetch marks it
    /// `delivered` with a `fetched` audit event, in one transaction.
    async fn fetch_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
        at: i64,
        actor: &ActorRef,
    ) -> Result<Option<String>, StoreError>;

    /// Acknowledges a delivery: its ciphertext is deleted and it leaves the inbox, with an
    /// `acknowledged` audit event. Idempotent.
    async fn ack_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
        at: i64,
        actor: &ActorRef,
    ) -> Result<records::AckOutcome, StoreError>;

    /// Withdraws every open delivery of `sender`'s referral (held ones included):
    /// ciphertext and hold deleted, a `withdrawn` event each. `None` if the referral is not
    /// `sender`'s.
    async fn withdraw(
        &self,
        referral: &ReferralId,
        sender: &PartnerId,
        at: i64,
        actor: &ActorRef,
    ) -> Result<Option<Vec<records::DeliveryState>>, StoreError>;

    /// Expires `recipient`'s deliveries still unacknowledged that entered its inbox before
    /// `cutoff`: status `expired`, ciphertext deleted, an `expired` event each. Returns how
    /// many.
    async fn expire_deliveries(
        &self,
        recipient: &PartnerId,
        cutoff: i64,
        at: i64,
    ) -> Result<u64, StoreError>;

    /// Expires every delivery that entered an inbox before `cutoff` and is still there, of a
    /// recipient that is not in `known` (a partner removed from the configuration can no
    /// longer fetch): ciphertext deleted, an `expired` event each. Returns how many.
    async fn expire_unknown_recipients(
        &self,
        known: &[PartnerId],
        cutoff: i64,
        at: i64,
    ) -> Result<u64, StoreError>;

    /// Deletes referral, delivery and hold records with no activity since `cutoff` (and not
    /// linked from a later correction), with a `purged` event each. Returns how many.
    async fn purge_records(&self, cutoff: i64, at: i64) -> Result<u64, StoreError>;

    /// Deletes replay markers seen more than `max_age` ago by the database's clock (a `jti`
    /// that old is refused by the `iat` check anyway). Returns how many.
    async fn purge_replay_markers(&self, max_age: std::time::Duration) -> Result<u64, StoreError>;

    /// How many leaves the audit tree has.
    async fn audit_size(&self) -> Result<u64, StoreError>;

    /// The stored hashes of the given perfect subtrees (`(level, index)`; level 0 = leaves).
    async fn audit_nodes(
        &self,
        keys: &[(u32, u64)],
    ) -> Result<std::collections::HashMap<(u32, u64), refex_core::audit::tree::Hash>, StoreError>;

    /// Every signed checkpoint, smallest first.
    async fn audit_checkpoints(&self) -> Result<Vec<records::CheckpointRecord>, StoreError>;

    /// Stores a signed checkpoint (a second one for the same size is ignored).
    async fn save_checkpoint(
        &self,
        checkpoint: &records::CheckpointRecord,
    ) -> Result<(), StoreError>;

    /// Audit leaves from index `from`, at most `limit`, in order.
    async fn audit_leaves(
        &self,
        from: u64,
        limit: u64,
    ) -> Result<Vec<records::LeafRecord>, StoreError>;

    /// Everything recorded about a referral (record, deliveries, audit events), if it exists.
    async fn referral_detail(
        &self,
        referral: &ReferralId,
    ) -> Result<Option<records::ReferralDetail>, StoreError>;

    /// The referrals concerning any of the keyed `subjects` that `partner` may be shown:
    /// those it sent (indexed from the full payload), and its deliveries that reached its
    /// inbox (indexed from the copy it received; never held, rejected, or withdrawn or
    /// expired before their first fetch).
    async fn subject_matches(
        &self,
        subjects: &[String],
        partner: &PartnerId,
    ) -> Result<Vec<records::SubjectMatch>, StoreError>;

    /// `sender`'s held referrals, oldest first.
    async fn held_referrals(&self, sender: &PartnerId)
    -> Result<Vec<records::HeldRow>, StoreError>;

    /// The sealed hold of a referral, while undecided.
    async fn hold_sealed(&self, referral: &ReferralId) -> Result<Option<String>, StoreError>;

    /// Commits a lead's decision in one transaction: the hold is deleted, each held delivery
    /// released (queued with its ciphertext, inbox position and the recipient's subject keys)
    /// or rejected (with its sealed reason), the decision's events appended, and a released
    /// correction's original withdrawn. [`records::DecideOutcome::AlreadyDecided`] if the
    /// hold was gone.
    async fn decide_hold(
        &self,
        decision: &records::ReviewCommit,
    ) -> Result<records::DecideOutcome, StoreError>;

    /// Every set of review preview digests shown to `actor` for a referral, newest first
    /// (from the `consulted` events the review pages write).
    async fn previews_shown(
        &self,
        referral: &ReferralId,
        actor: &ActorRef,
    ) -> Result<Vec<Vec<refex_core::audit::event::PreviewShown>>, StoreError>;

    /// Marks holds undecided since before `cutoff` as escalated (an `escalated` event each);
    /// they stay held. Returns how many.
    async fn escalate_holds(&self, cutoff: i64, at: i64) -> Result<u64, StoreError>;

    /// Closes holds undecided since before `cutoff`: each held delivery becomes
    /// `expired-undecided` (never released) with a `closed-undecided` event, and the hold
    /// (the claims under the storage key) is deleted. Returns how many holds.
    async fn close_undecided_holds(&self, cutoff: i64, at: i64) -> Result<u64, StoreError>;

    /// How many holds are escalated and still undecided.
    async fn count_escalated(&self) -> Result<i64, StoreError>;

    /// Every delivery of referrals received in `[from, to)`, as report dimensions.
    async fn report_facts(&self, from: i64, to: i64) -> Result<Vec<records::FactRow>, StoreError>;

    /// `sender`'s most recent referrals (id, type, received) with their delivery states.
    async fn sent_referrals(
        &self,
        sender: &PartnerId,
        limit: i64,
    ) -> Result<Vec<records::SentRow>, StoreError>;

    /// The deliveries that reached `recipient`'s inbox, most recent first (at most `limit`),
    /// whatever their status now (new, read, acknowledged, withdrawn, expired): metadata
    /// only, for a hosted organisation's console.
    async fn received(
        &self,
        recipient: &PartnerId,
        limit: i64,
    ) -> Result<Vec<records::ReceivedRow>, StoreError>;

    /// Each recipient's inbox backlog: deliveries waiting (queued or fetched, not
    /// acknowledged) and when the oldest of them entered the inbox.
    async fn inbox_backlog(&self) -> Result<Vec<(PartnerId, i64, Option<i64>)>, StoreError>;

    /// Records that replica `id` is alive at `at`, forgets replicas not seen since
    /// `forget_before`, and returns how many were seen since `live_after` (itself included).
    async fn heartbeat(
        &self,
        id: &str,
        at: i64,
        live_after: i64,
        forget_before: i64,
    ) -> Result<u32, StoreError>;

    /// Returns space freed by expiry and purge to the file system, a bounded amount per call
    /// (SQLite's incremental vacuum; PostgreSQL's autovacuum needs nothing).
    async fn reclaim_space(&self) -> Result<(), StoreError>;

    /// Forgets replica `id` (it is stopping gracefully), so the others stop counting it at
    /// once rather than after the live window.
    async fn forget_replica(&self, id: &str) -> Result<(), StoreError>;

    /// Claims the once-only notice `key` at `at`: `true` for the first claim (send it),
    /// `false` if any process claimed it before. Claims older than `forget_before` are
    /// dropped on the way.
    async fn claim_notice(
        &self,
        key: &str,
        at: i64,
        forget_before: i64,
    ) -> Result<bool, StoreError>;

    /// The referral a referral corrects, and the latest referral that corrects it.
    async fn referral_links(
        &self,
        referral: &ReferralId,
    ) -> Result<(Option<ReferralId>, Option<ReferralId>), StoreError>;

    /// Calls `on_change` whenever another process (a replica) commits deliveries to an inbox,
    /// until the store closes. PostgreSQL `LISTEN`s (reconnecting by itself); the embedded
    /// store has no other processes and does nothing.
    fn watch_inbox_changes(&self, on_change: std::sync::Arc<dyn Fn() + Send + Sync>);

    /// How many rows a table holds (operations and tests: proving nothing half-written).
    async fn count_rows(&self, table: Table) -> Result<i64, StoreError>;
}

/// The tables, for [`Store::count_rows`].
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
        // accepting connections): the store is unavailable, whatever the code.
        sqlx::Error::Database(_) if matches!(op, "begin" | "acquire") => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => match classify(db.code().as_deref()) {
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

/// Classifies PostgreSQL SQLSTATEs and SQLite result codes.
fn classify(code: Option<&str>) -> Transient {
    match code {
        // PostgreSQL: connection exceptions (class 08), the server shutting down or starting
        // (57P01-57P03), too many connections (53300).
        Some(c) if c.starts_with("08") => Transient::Unavailable,
        Some("57P01" | "57P02" | "57P03" | "53300") => Transient::Unavailable,
        // PostgreSQL deadlock and serialisation failures: the transaction was rolled back
        // whole; a retry can succeed.
        Some("40P01" | "40001") => Transient::Contended,
        // PostgreSQL disk_full; SQLite SQLITE_FULL.
        Some("53100" | "13") => Transient::Full,
        // SQLite SQLITE_BUSY and SQLITE_LOCKED (and their extended codes): another writer
        // held the database past the busy timeout.
        Some(c) if c == "5" || c == "6" || c.parse::<u32>().is_ok_and(|n| n & 0xff == 5) => {
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
        assert_eq!(classify(Some("57P01")), Transient::Unavailable);
        assert_eq!(classify(Some("08006")), Transient::Unavailable);
        assert_eq!(classify(Some("40P01")), Transient::Contended);
        assert_eq!(classify(Some("53100")), Transient::Full);
        assert_eq!(classify(Some("13")), Transient::Full);
        assert_eq!(classify(Some("5")), Transient::Contended);
        assert_eq!(classify(Some("517")), Transient::Contended); // SQLITE_BUSY_SNAPSHOT
        assert_eq!(classify(Some("23505")), Transient::No);
        assert_eq!(classify(Some("2067")), Transient::No); // SQLITE_CONSTRAINT_UNIQUE
        assert_eq!(classify(None), Transient::No);
    }
}
