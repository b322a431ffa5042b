//! The names of the metrics the store records (the gateway's `telemetry` re-exports them,
//! describes them and exports them).

/// Store transactions that committed acceptances (each one fsync).
pub const STORE_COMMITS: &str = "refex_store_commits_total";
/// Acceptances committed (or refused) through group commit.
pub const STORE_ACCEPTANCES: &str = "refex_store_acceptances_total";
/// Time to write and commit one group-commit transaction, in seconds.
pub const STORE_COMMIT_DURATION: &str = "refex_store_commit_seconds";
/// Acceptances per group-commit transaction.
pub const STORE_BATCH_SIZE: &str = "refex_store_batch_size";
/// Batches of inbox fetches and acknowledgements (each at most one commit and fsync; a
/// batch of re-fetches only reads, and a failed batch is retried one write at a time).
pub const STORE_INBOX_BATCHES: &str = "refex_store_inbox_batches_total";
/// Inbox fetches and acknowledgements committed through group commit.
pub const STORE_INBOX_WRITES: &str = "refex_store_inbox_writes_total";
