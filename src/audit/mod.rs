//! The tamper-evident audit trail: events appended as leaves of an RFC 6962 Merkle tree
//! (`tree`), signed checkpoints, proofs for auditors, and offline verification of an export.
//! Events carry ids, times, principals, lawful bases, reasons and field pointers, never a
//! payload value.

pub mod export;
pub mod log;
pub mod tree;
pub mod verify;

use serde_json::json;

use crate::store::records::AuditRecord;

/// The exact text of leaf `idx`: canonical JSON (fixed key order, no whitespace) of the event.
/// This string is what is hashed, stored and exported.
pub fn canonical_leaf(idx: i64, e: &AuditRecord) -> String {
    json!({
        "idx": idx,
        "at": e.at,
        "kind": e.kind,
        "referral_id": e.referral_id,
        "delivery_id": e.delivery_id,
        "actor": e.actor,
        "detail": e.detail,
    })
    .to_string()
}

/// A stored hex hash.
pub fn parse_hash(hex_text: &str) -> Option<tree::Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}
