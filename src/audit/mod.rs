//! The tamper-evident audit trail: events appended as leaves of an RFC 6962 Merkle tree
//! (`tree`), signed checkpoints, proofs for auditors, and offline verification of an export.
//! Events carry ids, times, principals, lawful bases, reasons and field pointers, never a
//! payload value.

pub mod event;
pub mod export;
pub mod log;
pub mod tree;
pub mod verify;

/// A stored hex hash.
pub fn parse_hash(hex_text: &str) -> Option<tree::Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}
