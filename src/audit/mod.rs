//! The tamper-evident audit trail: events appended as leaves of an RFC 6962 Merkle tree
//! (`tree`), signed checkpoints, proofs for auditors, and offline verification of an export.
//! Events carry ids, times, principals, lawful bases, reasons and field pointers, never a
//! payload value.

pub mod export;
pub mod log;
pub mod tree;
pub mod verify;

use serde_json::Value;

use crate::store::records::AuditRecord;

/// The exact text of leaf `idx`: canonical JSON (fixed key order, no whitespace) of the event.
/// This string is what is hashed, stored and exported.
pub fn canonical_leaf(idx: i64, e: &AuditRecord) -> String {
    leaf_with_detail(idx, e, &e.detail.to_string())
}

/// [`canonical_leaf`] for an event whose `detail` is already serialised (compact JSON, as
/// `Value::to_string` writes it): the store serialises each detail once, for its column and
/// for the leaf.
pub fn leaf_with_detail(idx: i64, e: &AuditRecord, detail: &str) -> String {
    let text = |v: &Option<String>| match v {
        Some(s) => Value::from(s.as_str()).to_string(),
        None => "null".to_owned(),
    };
    format!(
        "{{\"idx\":{idx},\"at\":{},\"kind\":{},\"referral_id\":{},\"delivery_id\":{},\"actor\":{},\"detail\":{detail}}}",
        e.at,
        Value::from(e.kind),
        text(&e.referral_id),
        text(&e.delivery_id),
        text(&e.actor),
    )
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
        let escaped = AuditRecord {
            actor: Some("a \"quoted\"\nname/é".into()),
            ..e.clone()
        };
        assert_eq!(
            canonical_leaf(7, &escaped),
            serde_json::json!({"idx": 7, "at": 1_795_000_000, "kind": "queued", "referral_id": "ref_1",
                "delivery_id": null, "actor": "a \"quoted\"\nname/é", "detail": {"to": "imara", "a": [1, 2]}})
            .to_string()
        );
        assert_eq!(
            canonical_leaf(7, &e),
            r#"{"idx":7,"at":1795000000,"kind":"queued","referral_id":"ref_1","delivery_id":null,"actor":"p/system:s","detail":{"to":"imara","a":[1,2]}}"#
        );
    }
}
