//! Identifiers the gateway mints (`ref_…`, `dlv_…`), through an [`IdSource`] seam so tests
//! can make them predictable. Ids are ULID-shaped: 26 Crockford base32 characters of a
//! UUIDv7, so they sort by creation time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where new ids come from.
pub trait IdSource: Send + Sync + fmt::Debug {
    /// 128 fresh bits, time-ordered.
    fn next(&self) -> u128;
}

/// UUIDv7: millisecond time plus randomness.
#[derive(Debug, Default)]
pub struct Uuid7Ids;

impl IdSource for Uuid7Ids {
    fn next(&self) -> u128 {
        uuid::Uuid::now_v7().as_u128()
    }
}

/// 1, 2, 3, … (tests).
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdSource for SequentialIds {
    fn next(&self) -> u128 {
        u128::from(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn crockford(mut v: u128) -> String {
    let mut out = [b'0'; 26];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn valid_body(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| CROCKFORD.contains(&b)) && s.as_bytes()[0] <= b'7'
}

/// Why an id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid {0} id")]
pub struct BadId(&'static str);

macro_rules! minted_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A new id from `source`.
            pub fn mint(source: &dyn IdSource) -> Self {
                Self(format!(concat!($prefix, "{}"), crockford(source.next())))
            }

            /// Parses an id received from a client.
            pub fn parse(s: &str) -> Result<Self, BadId> {
                match s.strip_prefix($prefix) {
                    Some(body) if valid_body(body) => Ok(Self(s.to_owned())),
                    _ => Err(BadId($prefix)),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": concat!("^", $prefix, "[0-7][0-9A-HJKMNP-TV-Z]{25}$"),
                })
            }
        }
    };
}

minted_id!(
    /// A referral, `ref_…`.
    ReferralId,
    "ref_"
);
minted_id!(
    /// One recipient's delivery of a referral, `dlv_…`.
    DeliveryId,
    "dlv_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_sort_by_time_and_refuse_junk() {
        let src = Uuid7Ids;
        let a = ReferralId::mint(&src);
        let b = ReferralId::mint(&src);
        assert!(a < b);
        assert_eq!(ReferralId::parse(a.as_str()).unwrap(), a);
        assert!(ReferralId::parse("ref_../../etc").is_err());
        assert!(ReferralId::parse(DeliveryId::mint(&src).as_str()).is_err());
        assert_eq!(
            ReferralId::mint(&SequentialIds::default()).as_str(),
            "ref_00000000000000000000000001"
        );
    }
}

/// Text, borrowing and parsing for an id that is a checked string with a `parse`: the
/// same four lines each would otherwise repeat.
macro_rules! checked_text {
    ($name:ident) => {
        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_text!(Jti);
checked_text!(SubjectHash);

/// A sender's token for one referral (`jti`): replay protection and the key a retry is
/// recognised by. 8–128 characters of `A-Z a-z 0-9 . _ ~ : -`, as the claims schema says,
/// so it is safe in SQL, logs and audit details.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Jti(String);

impl Jti {
    /// Reads a `jti`.
    pub fn parse(s: &str) -> Result<Self, BadId> {
        let ok = (8..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_~:".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadId("jti"))
        }
    }
}

impl TryFrom<String> for Jti {
    type Error = BadId;
    fn try_from(s: String) -> Result<Self, BadId> {
        Self::parse(&s)
    }
}

impl From<Jti> for String {
    fn from(j: Jti) -> String {
        j.0
    }
}

#[cfg(test)]
mod jti_tests {
    use super::*;

    #[test]
    fn a_jti_is_what_the_claims_schema_allows() {
        assert!(Jti::parse("0b5d3c0e-a1b2").is_ok());
        assert!(Jti::parse("a.b_c~d:e-f").is_ok());
        assert!(Jti::parse("short").is_err());
        assert!(Jti::parse(&"x".repeat(129)).is_err());
        assert!(Jti::parse(&"x".repeat(128)).is_ok());
        assert!(Jti::parse("has space").is_err());
        assert!(Jti::parse("quote'quote").is_err());
        assert_eq!(
            serde_json::from_str::<Jti>("\"bad\"")
                .unwrap_err()
                .to_string(),
            "not a valid jti id"
        );
    }
}

/// A person's keyed hash (HMAC-SHA-256 of their normalised identifiers, 64 lower-case hex
/// digits): what a referral is indexed by for subject access, never the identifiers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectHash(String);

impl SubjectHash {
    /// Reads a keyed hash (64 lower-case hex digits).
    pub fn parse(s: &str) -> Result<Self, BadId> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadId("subject hash"))
        }
    }

    /// The hash of 32 bytes of MAC output.
    pub fn of_mac(bytes: &[u8; 32]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The 32 bytes of MAC output, as a store keeps them.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // `parse` and `of_mac` admit only 64 hex digits, which decode to exactly 32 bytes.
        if let Err(e) = hex::decode_to_slice(&self.0, &mut out) {
            unreachable!("a subject hash is 64 hex digits: {e}");
        }
        out
    }
}

/// One gateway process among the replicas sharing a store: how each announces itself and
/// counts the others (rate quotas are divided among the live ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaId(uuid::Uuid);

impl ReplicaId {
    /// A fresh id for this process (time-ordered, random).
    pub fn fresh() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}
