//! The tamper-evident audit trail: events appended as leaves of an RFC 6962 Merkle tree
//! (`tree`), signed checkpoints, proofs for auditors, and offline verification of an export.
//! Events carry ids, times, principals, lawful bases, reasons and field pointers, never a
//! payload value.

pub mod export;
pub mod log;
pub mod tree;
pub mod verify;

use serde::Serialize;

use crate::store::records::AuditRecord;

/// A leaf's fields in their canonical order, borrowed from the event (no copy of `detail`).
#[derive(Serialize)]
struct Leaf<'a> {
    idx: i64,
    at: i64,
    kind: &'a str,
    referral_id: &'a Option<String>,
    delivery_id: &'a Option<String>,
    actor: &'a Option<String>,
    detail: &'a serde_json::Value,
}

/// The exact text of leaf `idx`: canonical JSON (fixed key order, no whitespace) of the event.
/// This string is what is hashed, stored and exported.
pub fn canonical_leaf(idx: i64, e: &AuditRecord) -> String {
    let leaf = Leaf {
        idx,
        at: e.at,
        kind: e.kind,
        referral_id: &e.referral_id,
        delivery_id: &e.delivery_id,
        actor: &e.actor,
        detail: &e.detail,
    };
    // Serialising strings, integers and a JSON value cannot fail.
    serde_json::to_string(&leaf).unwrap_or_default()
}

/// A stored hex hash.
pub fn parse_hash(hex_text: &str) -> Option<tree::Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaf text is pinned: changing it would make every stored leaf unverifiable.
    #[test]
    fn the_leaf_text_is_canonical_and_stable() {
        let e = AuditRecord {
            at: 1_795_000_000,
            kind: "queued",
            referral_id: Some("ref_1".into()),
            delivery_id: None,
            actor: Some("p/system:s".into()),
            detail: serde_json::json!({ "to": "imara", "a": [1, 2] }),
        };
        assert_eq!(
            canonical_leaf(7, &e),
            r#"{"idx":7,"at":1795000000,"kind":"queued","referral_id":"ref_1","delivery_id":null,"actor":"p/system:s","detail":{"to":"imara","a":[1,2]}}"#
        );
    }
}
