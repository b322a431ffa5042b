//! The audit trail's pure parts: events and their canonical leaf text (`event`), RFC 6962
//! Merkle maths (`tree`), and offline verification of an export (`verify`). Events carry
//! ids, times, principals, lawful bases, reasons and field pointers, never a payload value.
//! Appending, checkpoints over the store and export live in the gateway.

pub mod event;
pub mod tree;
pub mod verify;

/// The JWS `typ` of a signed checkpoint.
pub const CHECKPOINT_TYP: &str = "checkpoint+jwt";

/// A stored hex hash.
pub fn parse_hash(hex_text: &str) -> Option<tree::Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}
