//! Subject identifiers, keyed: a referral is indexed by HMAC-SHA-256 (secret from
//! configuration) of the normalised identifiers of every person in its payload — an NHS
//! number, or name and date of birth — so a data protection officer can later ask "which
//! disclosures concerned this person?" without the gateway ever keeping the identifiers.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Bytes in the HMAC secret.
const KEY_BYTES: usize = 32;
/// Deepest nesting searched for identifiers (payload schemas nest a few levels).
const MAX_DEPTH: usize = 16;

/// Why the subject key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("subject key {0}: must hold 32 random bytes, base64-encoded")]
pub struct SubjectKeyError(pub String);

/// The HMAC secret. Never printed.
#[derive(Clone)]
pub struct SubjectKey([u8; KEY_BYTES]);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

/// A person's identifiers as a DPO gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identifiers {
    /// NHS number.
    pub nhs_number: Option<String>,
    /// Given name.
    pub given: Option<String>,
    /// Family name.
    pub family: Option<String>,
    /// Date of birth, `YYYY-MM-DD`.
    pub date_of_birth: Option<String>,
}

impl SubjectKey {
    /// Reads a base64 secret from a file.
    pub fn load(path: &Path) -> Result<Self, SubjectKeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|_| SubjectKeyError(shown.clone()))?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SubjectKeyError(shown.clone()))?;
        Ok(Self(bytes.try_into().map_err(|_| SubjectKeyError(shown))?))
    }

    fn mac(&self, normalised: &str) -> String {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(normalised.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The keyed hashes of the identifiers a DPO gave (one per identifier form present).
    pub fn keys_for(&self, ids: &Identifiers) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = ids.nhs_number.as_deref().and_then(nhs) {
            out.push(self.mac(&n));
        }
        if let (Some(g), Some(f), Some(d)) = (&ids.given, &ids.family, &ids.date_of_birth) {
            out.push(self.mac(&name_dob(g, f, d)));
        }
        out
    }

    /// The keyed hashes of every person identifiable in a payload, deduplicated.
    pub fn keys_in(&self, payload: &Value) -> Vec<String> {
        let mut found = Vec::new();
        collect(payload, 0, &mut found);
        let mut out: Vec<String> = found.iter().map(|n| self.mac(n)).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `nhs:<10 digits>`, spaces removed; `None` unless it is 10 digits.
fn nhs(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("nhs:{digits}"))
}

/// `person:<given>|<family>|<dob>`, names trimmed, lower-cased, inner spaces collapsed.
fn name_dob(given: &str, family: &str, dob: &str) -> String {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    format!("person:{}|{}|{}", norm(given), norm(family), dob.trim())
}

fn collect(v: &Value, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(map) => {
            if let Some(n) = map.get("nhs_number").and_then(Value::as_str).and_then(nhs) {
                out.push(n);
            }
            let name = map.get("name");
            let given = name.and_then(|n| n.get("given")).and_then(Value::as_str);
            let family = name.and_then(|n| n.get("family")).and_then(Value::as_str);
            let dob = map.get("date_of_birth").and_then(Value::as_str);
            if let (Some(g), Some(f), Some(d)) = (given, family, dob) {
                out.push(name_dob(g, f, d));
            }
            for child in map.values() {
                collect(child, depth + 1, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, depth + 1, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SubjectKey {
        SubjectKey([7; 32])
    }

    #[test]
    fn every_person_in_a_payload_is_found_and_normalised() {
        let payload = json!({
            "child": { "name": {"given": "Amy", "family": "Example"}, "date_of_birth": "2013-05-14",
                       "nhs_number": "943 476 5919" },
            "carers": [ { "name": {"given": " beth ", "family": "EXAMPLE"}, "date_of_birth": "1985-01-01" } ]
        });
        let keys = key().keys_in(&payload);
        assert_eq!(keys.len(), 3);
        let asked = key().keys_for(&Identifiers {
            nhs_number: Some("9434765919".into()),
            ..Default::default()
        });
        assert!(keys.contains(&asked[0]));
        let carer = key().keys_for(&Identifiers {
            given: Some("Beth".into()),
            family: Some("Example".into()),
            date_of_birth: Some("1985-01-01".into()),
            ..Default::default()
        });
        assert!(keys.contains(&carer[0]));
        // Hashes, not identifiers, and keyed: another key gives other values.
        assert!(!keys.iter().any(|k| k.contains("943")));
        assert!(!SubjectKey([8; 32]).keys_in(&payload).contains(&keys[0]));
    }
}
