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

pub use crate::ids::SubjectHash;

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

/// Longest name accepted in a subject-access request: longer than any real name, short
/// enough that a request stays small.
pub const MAX_NAME_CHARS: usize = 100;

/// One problem with the identifiers a DPO gave, by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifierProblem {
    /// The field (`nhs_number`, `given`, `family`, `date_of_birth`).
    pub field: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
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

impl Identifiers {
    /// Checks a request's identifiers: an NHS number that passes the Modulus 11 check, or
    /// given name, family name and a real past date of birth; names non-empty, at most
    /// [`MAX_NAME_CHARS`] characters, no control characters. Every problem at once.
    pub fn validate(&self, today: time::Date) -> Result<(), Vec<IdentifierProblem>> {
        let mut out = Vec::new();
        let mut problem = |field, message: &str| {
            out.push(IdentifierProblem {
                field,
                message: message.to_owned(),
            })
        };
        if let Some(n) = &self.nhs_number {
            if nhs(n).is_none() {
                problem("nhs_number", "must be 10 digits (spaces allowed)");
            } else if !nhs_check_digit_ok(n) {
                problem(
                    "nhs_number",
                    "fails the NHS number check digit (Modulus 11): check it was copied correctly",
                );
            }
        }
        let name_form = [&self.given, &self.family, &self.date_of_birth];
        let given = name_form.iter().filter(|f| f.is_some()).count();
        if given > 0 && given < 3 {
            for (field, v) in [
                ("given", &self.given),
                ("family", &self.family),
                ("date_of_birth", &self.date_of_birth),
            ] {
                if v.is_none() {
                    problem(
                        field,
                        "is required with the other name fields (given, family, date_of_birth)",
                    );
                }
            }
        }
        for (field, v) in [("given", &self.given), ("family", &self.family)] {
            if let Some(name) = v {
                let trimmed = name.trim();
                if trimmed.is_empty() {
                    problem(field, "must not be empty");
                } else if trimmed.chars().count() > MAX_NAME_CHARS {
                    problem(field, "is longer than 100 characters");
                } else if trimmed.chars().any(char::is_control) {
                    problem(field, "must not contain control characters");
                }
            }
        }
        if let Some(dob) = &self.date_of_birth {
            match parse_date(dob.trim()) {
                None => problem("date_of_birth", "must be a real date, YYYY-MM-DD"),
                Some(d) if d > today => problem("date_of_birth", "must not be in the future"),
                Some(d) if d.year() < 1900 => problem("date_of_birth", "must be after 1900-01-01"),
                Some(_) => {}
            }
        }
        if self.nhs_number.is_none() && given == 0 {
            problem(
                "nhs_number",
                "give an NHS number, or given name, family name and date of birth",
            );
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}

/// A `YYYY-MM-DD` calendar date, if it is one.
fn parse_date(s: &str) -> Option<time::Date> {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

/// The NHS number Modulus 11 check: weights 10 to 2 on the first nine digits, the check
/// digit is 11 minus the remainder (11 becomes 0; 10 means no valid number).
fn nhs_check_digit_ok(raw: &str) -> bool {
    let digits: Vec<u32> = raw.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 10 {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    match 11 - sum % 11 {
        11 => digits[9] == 0,
        10 => false,
        check => digits[9] == check,
    }
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

    fn mac(&self, normalised: &str) -> SubjectHash {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(normalised.as_bytes());
        SubjectHash::of_mac(&mac.finalize().into_bytes().into())
    }

    /// The keyed hashes of the identifiers a DPO gave (one per identifier form present).
    pub fn keys_for(&self, ids: &Identifiers) -> Vec<SubjectHash> {
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
    pub fn keys_in(&self, payload: &Value) -> Vec<SubjectHash> {
        let mut found = Vec::new();
        collect(payload, 0, &mut found);
        let mut out: Vec<SubjectHash> = found.iter().map(|n| self.mac(n)).collect();
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
    fn requests_are_checked_field_by_field() {
        let today = time::Date::from_calendar_date(2026, time::Month::November, 27).unwrap();
        let ok = Identifiers {
            nhs_number: Some("943 476 5919".into()),
            ..Default::default()
        };
        assert_eq!(ok.validate(today), Ok(()));
        let bad_check = Identifiers {
            nhs_number: Some("9434765918".into()),
            ..Default::default()
        };
        assert_eq!(
            bad_check.validate(today).unwrap_err()[0].field,
            "nhs_number"
        );
        let bad = Identifiers {
            given: Some("".into()),
            family: Some("x".repeat(100_000)),
            date_of_birth: Some("2013-02-30".into()),
            ..Default::default()
        };
        let fields: Vec<_> = bad
            .validate(today)
            .unwrap_err()
            .iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["given", "family", "date_of_birth"]);
        let future = Identifiers {
            given: Some("Amy".into()),
            family: Some("Example".into()),
            date_of_birth: Some("2030-01-01".into()),
            ..Default::default()
        };
        assert!(future.validate(today).is_err());
        assert!(Identifiers::default().validate(today).is_err());
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
        assert!(!keys.iter().any(|k| k.as_str().contains("943")));
        assert!(!SubjectKey([8; 32]).keys_in(&payload).contains(&keys[0]));
    }
}
