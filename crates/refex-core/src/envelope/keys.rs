//! Key sets: the gateway's private keys (`jwks.private.json`) and each partner's published
//! public keys. Every key must carry `kid`, `use` and an allowed `alg`; a public set that
//! contains private material is refused rather than trusted.

use std::path::Path;

use josekit::jwk::{Jwk, JwkSet};

use super::jose::{JoseKey as _, PreparedKey};
use serde_json::{Map, Value};

/// Algorithms a partner may encrypt to the gateway with, and the gateway to a partner.
pub const ENC_ALGS: &[&str] = &["ECDH-ES+A256KW", "RSA-OAEP-256"];
/// Algorithms a referral or delivery may be signed with.
pub const SIG_ALGS: &[&str] = &["ES256", "EdDSA", "PS256"];

/// A key's retirement time (Unix seconds), set by `refex keys rotate` on the keys it
/// replaces: until then the key stays listed and usable (its grace period); a configuration
/// loaded after it leaves the key out.
pub const RETIRE_AT: &str = "refex_retire_at";

/// Parameters that carry private key material in a JWK (RFC 7518 §6, RFC 8037).
const PRIVATE_PARAMS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a key set could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key set {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a JWK set.
    #[error("{path} is not a JWK set: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (never key material).
        reason: String,
    },
    /// A key breaks the rules for refex key sets.
    #[error("{path}: key {index}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Position of the key in the set.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The set lacks a key it needs.
    #[error("{path}: {reason}")]
    Missing {
        /// The file.
        path: String,
        /// Which key is missing.
        reason: String,
    },
}

/// What a key is for (`use`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// Encryption (`use: "enc"`).
    Enc,
    /// Signing (`use: "sig"`).
    Sig,
}

/// Whether a set is expected to hold private or public keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Visibility {
    Private,
    Public,
}

/// A checked key set, each key prepared once for what it is for (see
/// [`PreparedKey`]).
#[derive(Clone, Debug)]
pub struct KeySet {
    keys: Vec<(KeyUse, PreparedKey)>,
}

impl KeySet {
    /// Loads a private key set (the gateway's own keys, or a partner's in its onboarding kit).
    pub fn load_private(path: &Path) -> Result<Self, KeyError> {
        Self::load(path, Visibility::Private)
    }

    /// Loads a public key set (a partner's registered keys).
    pub fn load_public(path: &Path) -> Result<Self, KeyError> {
        Self::load(path, Visibility::Public)
    }

    /// Parses a private key set from JSON text (a hosted partner's keys, once unsealed);
    /// `origin` names it in errors.
    pub fn parse_private(bytes: &[u8], origin: &str) -> Result<Self, KeyError> {
        Self::parse(bytes, origin, Visibility::Private)
    }

    /// Parses a public key set from JSON text; `origin` names it in errors.
    pub fn parse_public(bytes: &[u8], origin: &str) -> Result<Self, KeyError> {
        Self::parse(bytes, origin, Visibility::Public)
    }

    fn load(path: &Path, visibility: Visibility) -> Result<Self, KeyError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::parse(&bytes, &origin, visibility)
    }

    fn parse(bytes: &[u8], origin: &str, visibility: Visibility) -> Result<Self, KeyError> {
        let set = JwkSet::from_bytes(bytes).map_err(|e| KeyError::Parse {
            path: origin.to_owned(),
            reason: e.to_string(),
        })?;
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (index, jwk) in set.keys().into_iter().enumerate() {
            let bad = |reason: String| KeyError::Key {
                path: origin.to_owned(),
                index,
                reason,
            };
            let kid = jwk.key_id().ok_or_else(|| bad("no \"kid\"".into()))?;
            if !kid_is_sound(kid) {
                return Err(bad(format!(
                    "\"kid\" must be 1 to {MAX_KID} printable ASCII characters"
                )));
            }
            if !seen.insert(kid.to_owned()) {
                return Err(bad(format!("\"kid\" {kid:?} used twice")));
            }
            let key_use = match jwk.key_use() {
                Some("enc") => KeyUse::Enc,
                Some("sig") => KeyUse::Sig,
                other => {
                    return Err(bad(format!(
                        "\"use\" must be \"enc\" or \"sig\", not {other:?}"
                    )));
                }
            };
            let allowed = match key_use {
                KeyUse::Enc => ENC_ALGS,
                KeyUse::Sig => SIG_ALGS,
            };
            match jwk.algorithm() {
                Some(alg) if allowed.contains(&alg) => {}
                other => {
                    return Err(bad(format!(
                        "\"alg\" {other:?} is not one of {allowed:?} for its \"use\""
                    )));
                }
            }
            let has_private = PRIVATE_PARAMS.iter().any(|p| jwk.parameter(p).is_some());
            match (visibility, has_private) {
                (Visibility::Public, true) => {
                    return Err(bad("private key material in a public key set".into()));
                }
                (Visibility::Private, false) => {
                    return Err(bad("no private key material in a private key set".into()));
                }
                _ => {}
            }
            let key = PreparedKey::new(jwk.clone(), has_private).map_err(|e| bad(e.to_string()))?;
            keys.push((key_use, key));
        }
        Ok(Self { keys })
    }

    /// Fails unless the set holds at least one key for `key_use`.
    pub fn require(&self, key_use: KeyUse, origin: &Path) -> Result<(), KeyError> {
        if self.has(key_use) {
            Ok(())
        } else {
            Err(KeyError::Missing {
                path: origin.display().to_string(),
                reason: format!("no key with \"use\": \"{}\"", key_use.as_str()),
            })
        }
    }

    /// Whether the set holds at least one key for `key_use`.
    pub fn has(&self, key_use: KeyUse) -> bool {
        self.keys.iter().any(|(u, _)| *u == key_use)
    }

    /// The public halves as a JWKS document (`{"keys": [...]}`), safe to publish.
    pub fn public_jwks(&self) -> Value {
        let keys = self
            .keys
            .iter()
            .filter_map(|(_, key)| public_half(key.jwk()))
            .map(Value::Object)
            .collect();
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        Value::Object(doc)
    }

    /// The key with `kid` for `key_use`, if the set has it.
    pub fn find(&self, kid: &str, key_use: KeyUse) -> Option<&PreparedKey> {
        self.keys
            .iter()
            .find(|(u, key)| *u == key_use && key.jwk().key_id() == Some(kid))
            .map(|(_, key)| key)
    }

    /// The key to use for new signatures or encryptions: the last listed for `key_use`
    /// (rotation appends the new key; old ones stay listed while in their grace period).
    pub fn current(&self, key_use: KeyUse) -> Option<&PreparedKey> {
        self.keys
            .iter()
            .rev()
            .find(|(u, _)| *u == key_use)
            .map(|(_, key)| key)
    }

    /// The set without the keys whose [`RETIRE_AT`] time has come.
    pub fn without_retired(self, now_unix: u64) -> Self {
        let keys = self
            .keys
            .into_iter()
            .filter(|(_, key)| {
                key.jwk()
                    .parameter(RETIRE_AT)
                    .and_then(Value::as_u64)
                    .is_none_or(|at| at > now_unix)
            })
            .collect();
        Self { keys }
    }

    /// The `kid`s in the set, with their use.
    pub fn kids(&self) -> impl Iterator<Item = (KeyUse, &str)> {
        self.keys
            .iter()
            .filter_map(|(u, key)| key.jwk().key_id().map(|k| (*u, k)))
    }
}

impl KeyUse {
    /// The JWK `use` value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Enc => "enc",
            KeyUse::Sig => "sig",
        }
    }
}

/// Longest `kid` a key set may carry. A `kid` travels in every JWE and JWS header the key
/// makes and in audit details; one of kilobytes would make headers that partners' JOSE
/// libraries refuse (the toolkit's refuses headers over 8 KiB), so it is refused when the
/// set is loaded instead.
pub const MAX_KID: usize = 128;

/// Whether `kid` is 1 to [`MAX_KID`] printable ASCII characters (no spaces or controls: it
/// is written into logs and file names).
fn kid_is_sound(kid: &str) -> bool {
    (1..=MAX_KID).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_graphic())
}

/// The public half of a JWK with its `kid`, `use` and `alg` kept.
fn public_half(jwk: &Jwk) -> Option<Map<String, Value>> {
    let public = jwk.to_public_key().ok()?;
    let mut map: Map<String, Value> = public.as_ref().clone();
    for param in ["kid", "use", "alg", RETIRE_AT] {
        if let Some(v) = jwk.parameter(param) {
            map.insert(param.into(), v.clone());
        }
    }
    for p in PRIVATE_PARAMS {
        map.remove(*p);
    }
    Some(map)
}

/// Generates a fresh P-256 key pair as a private JWK with `kid`, `use` and `alg` set.
/// Used by the dev PKI and by tests; production keys come from the operator.
pub fn generate_p256(kid: &str, key_use: KeyUse) -> Result<Value, KeyError> {
    let mut jwk = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).map_err(|e| {
        KeyError::Parse {
            path: "<generated>".into(),
            reason: e.to_string(),
        }
    })?;
    jwk.set_key_id(kid);
    jwk.set_key_use(key_use.as_str());
    jwk.set_algorithm(match key_use {
        KeyUse::Enc => "ECDH-ES+A256KW",
        KeyUse::Sig => "ES256",
    });
    Ok(Value::Object(jwk.as_ref().clone()))
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The new encryption key's `kid`.
    pub enc: String,
    /// The new signing key's `kid`.
    pub sig: String,
    /// The `kid`s now in their grace period.
    pub retiring: Vec<String>,
    /// When they retire (Unix seconds).
    pub retire_at: u64,
}

/// Rotates a private JWKS document: every key not already retiring is marked to retire at
/// `retire_at`, and a new P-256 `enc` and `sig` key is appended (the last listed of each use is
/// the one used for new work). `stamp` makes the new `kid`s unique (e.g. a date and a random
/// suffix). Pure: the caller reads and writes the file.
pub fn rotate(private: &Value, stamp: &str, retire_at: u64) -> Result<(Value, Rotation), KeyError> {
    let bad = |reason: &str| KeyError::Parse {
        path: "<rotation>".into(),
        reason: reason.to_owned(),
    };
    let mut doc = private.clone();
    let keys = doc
        .get_mut("keys")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("not a JWK set"))?;
    let mut retiring = Vec::new();
    for key in keys.iter_mut() {
        let Some(map) = key.as_object_mut() else {
            return Err(bad("a key is not an object"));
        };
        if !map.contains_key(RETIRE_AT) {
            map.insert(RETIRE_AT.into(), Value::from(retire_at));
            if let Some(kid) = map.get("kid").and_then(Value::as_str) {
                retiring.push(kid.to_owned());
            }
        }
    }
    let (enc, sig) = (format!("gw-enc-{stamp}"), format!("gw-sig-{stamp}"));
    keys.push(generate_p256(&enc, KeyUse::Enc)?);
    keys.push(generate_p256(&sig, KeyUse::Sig)?);
    // The result must still be a valid private set (kids unique, algs allowed).
    KeySet::parse(
        doc.to_string().as_bytes(),
        "<rotation>",
        Visibility::Private,
    )?;
    Ok((
        doc,
        Rotation {
            enc,
            sig,
            retiring,
            retire_at,
        },
    ))
}

/// The public halves of a private JWKS document, for writing a partner's `jwks.json`.
pub fn public_document(private: &Value) -> Result<Value, KeyError> {
    let set = KeySet::parse(
        serde_json::to_vec(private)
            .map_err(|e| KeyError::Parse {
                path: "<generated>".into(),
                reason: e.to_string(),
            })?
            .as_slice(),
        "<generated>",
        Visibility::Private,
    )?;
    Ok(set.public_jwks())
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    #[test]
    fn rotation_appends_new_current_keys_and_retires_the_old_after_grace() {
        let doc = serde_json::json!({ "keys": [
            generate_p256("old-enc", KeyUse::Enc).expect("key"),
            generate_p256("old-sig", KeyUse::Sig).expect("key"),
        ]});
        let (rotated, r) = rotate(&doc, "20261126-a1", 1_000).expect("rotate");
        assert_eq!(r.retiring, vec!["old-enc", "old-sig"]);
        let set =
            KeySet::parse(rotated.to_string().as_bytes(), "t", Visibility::Private).expect("valid");
        assert_eq!(
            set.current(KeyUse::Enc).and_then(|k| k.jwk().key_id()),
            Some("gw-enc-20261126-a1")
        );
        assert_eq!(
            set.current(KeyUse::Sig).and_then(|k| k.jwk().key_id()),
            Some("gw-sig-20261126-a1")
        );
        // In grace: the old keys still open and are still published.
        let during = set.clone().without_retired(999);
        assert!(during.find("old-enc", KeyUse::Enc).is_some());
        assert_eq!(
            during.public_jwks()["keys"].as_array().map(Vec::len),
            Some(4)
        );
        // After: gone.
        let after = set.without_retired(1_000);
        assert!(after.find("old-enc", KeyUse::Enc).is_none());
        assert_eq!(
            after.public_jwks()["keys"].as_array().map(Vec::len),
            Some(2)
        );
        // A second rotation retires only the keys not already retiring.
        let (_, again) = rotate(&rotated, "20261127-b2", 2_000).expect("rotate");
        assert_eq!(
            again.retiring,
            vec!["gw-enc-20261126-a1", "gw-sig-20261126-a1"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_doc() -> Value {
        serde_json::json!({ "keys": [
            generate_p256("enc-1", KeyUse::Enc).unwrap(),
            generate_p256("sig-1", KeyUse::Sig).unwrap(),
        ]})
    }

    #[test]
    fn public_document_strips_private_material_and_keeps_kid_use_alg() {
        let public = public_document(&private_doc()).unwrap();
        let text = public.to_string();
        assert!(!text.contains("\"d\""), "{text}");
        for key in public["keys"].as_array().unwrap() {
            assert!(key["kid"].is_string() && key["use"].is_string() && key["alg"].is_string());
        }
        let set = KeySet::parse_public(text.as_bytes(), "t").unwrap();
        assert!(set.has(KeyUse::Enc) && set.has(KeyUse::Sig));
    }

    /// A key that cannot be prepared is refused when its set loads, saying why; it is
    /// never kept to be imported on each use.
    #[test]
    fn a_key_that_cannot_be_prepared_is_refused_at_load() {
        let key = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P384)
            .unwrap();
        let mut jwk = key.to_jwk_public_key();
        jwk.set_key_id("p384");
        jwk.set_key_use("enc");
        jwk.set_algorithm("ECDH-ES+A256KW");
        let text = serde_json::json!({ "keys": [jwk.as_ref()] }).to_string();
        let err = KeySet::parse_public(text.as_bytes(), "t").unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
        // A point off the curve is refused the same way.
        let mut doc = public_document(&private_doc()).unwrap();
        for key in doc["keys"].as_array_mut().unwrap() {
            if key["use"] == "enc" {
                key["y"] = key["x"].clone();
            }
        }
        let err = KeySet::parse_public(doc.to_string().as_bytes(), "t").unwrap_err();
        assert!(err.to_string().contains("usable"), "{err}");
    }

    #[test]
    fn private_material_in_a_public_set_is_refused() {
        let text = private_doc().to_string();
        let err = KeySet::parse_public(text.as_bytes(), "t").unwrap_err();
        assert!(err.to_string().contains("private key material"), "{err}");
    }

    #[test]
    fn keys_without_allowed_alg_or_kid_are_refused() {
        let mut doc = private_doc();
        doc["keys"][0]["alg"] = "RSA1_5".into();
        let err = KeySet::parse(doc.to_string().as_bytes(), "t", Visibility::Private).unwrap_err();
        assert!(err.to_string().contains("RSA1_5"), "{err}");
        let mut doc = private_doc();
        doc["keys"][1].as_object_mut().unwrap().remove("kid");
        let err = KeySet::parse(doc.to_string().as_bytes(), "t", Visibility::Private).unwrap_err();
        assert!(err.to_string().contains("kid"), "{err}");
    }

    #[test]
    fn a_kid_too_long_or_with_controls_is_refused_without_echoing_it() {
        for kid in [
            "x".repeat(MAX_KID + 1),
            String::new(),
            "a b".into(),
            "a\nb".into(),
        ] {
            let mut doc = private_doc();
            doc["keys"][0]["kid"] = kid.clone().into();
            let err =
                KeySet::parse(doc.to_string().as_bytes(), "t", Visibility::Private).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("printable ASCII"), "{text}");
            assert!(kid.len() < 3 || !text.contains(&kid), "{text}");
        }
        let mut doc = private_doc();
        doc["keys"][0]["kid"] = "k".repeat(MAX_KID).into();
        KeySet::parse(doc.to_string().as_bytes(), "t", Visibility::Private).unwrap();
    }
}
