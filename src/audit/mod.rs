//! The tamper-evident audit trail: events appended as leaves of an RFC 6962 Merkle tree
//! (`tree`), signed checkpoints, proofs for auditors, and offline verification of an export.
//! Events carry ids, times, principals, lawful bases, reasons and field pointers, never a
//! payload value.

pub mod export;
pub mod log;

pub use refex_core::audit::{CHECKPOINT_TYP, event, parse_hash, tree, verify};
