//! The tamper-evident audit trail: events appended as leaves of an RFC 6962 Merkle tree
//! (`tree`), signed checkpoints, proofs for auditors, and offline verification of an export.
//! Events carry ids, times, principals, lawful bases, reasons and field pointers, never a
//! payload value.

pub mod tree;
