//! The JOSE primitives refex allows, with the gaps josekit leaves closed here: compact
//! serialisation only, an algorithm allow-list checked before any key is touched, `zip`
//! refused before decrypting (no decompression bomb), every `crit` refused (refex
//! understands no extensions), unencoded payloads (`b64`) refused, and a key whose own `alg`
//! differs from the header's refused (no key confusion).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::{ECDH_ES_A256KW, JweDecrypter, JweEncrypter, JweHeader, RSA_OAEP_256};
use josekit::jwk::Jwk;
use josekit::jws::{ES256, EdDSA, JwsHeader, JwsSigner, JwsVerifier, PS256};
use serde_json::{Map, Value};

use super::keys::{ENC_ALGS, SIG_ALGS};

/// The one content encryption refex accepts and produces.
pub const ENC: &str = "A256GCM";

/// Longest protected header accepted: real headers are a few hundred bytes; this bounds the
/// JSON parse of untrusted input.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Why a JOSE object was refused. Texts name the rule broken, never content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoseError {
    /// Not a compact serialisation with the right number of parts, or a part is not base64url.
    #[error("malformed {0} compact serialisation")]
    Malformed(&'static str),
    /// The protected header is not a JSON object.
    #[error("{0} protected header is not a JSON object")]
    Header(&'static str),
    /// `alg` is missing or not allowed.
    #[error("{what} \"alg\" {alg:?} is not allowed")]
    Alg {
        /// JWE or JWS.
        what: &'static str,
        /// The header's value.
        alg: Option<String>,
    },
    /// `enc` is missing or not `A256GCM`.
    #[error("JWE \"enc\" {0:?} is not allowed (only A256GCM)")]
    Enc(Option<String>),
    /// Compression was requested.
    #[error("JWE \"zip\" is not allowed")]
    Zip,
    /// Critical header parameters were listed.
    #[error("{0} \"crit\" is not supported")]
    Crit(&'static str),
    /// RFC 7797 unencoded payload.
    #[error("JWS \"b64\" is not supported")]
    Unencoded,
    /// No key with the header's `kid` (or none given).
    #[error("{what} \"kid\" {kid:?} is not a known key")]
    UnknownKid {
        /// JWE or JWS.
        what: &'static str,
        /// The header's value.
        kid: Option<String>,
    },
    /// The key is registered for another algorithm.
    #[error("{0} key is registered for a different \"alg\"")]
    KeyAlg(&'static str),
    /// Decryption failed (wrong key, tampered, bad tag).
    #[error("JWE could not be decrypted")]
    Decrypt,
    /// Signature verification failed.
    #[error("JWS signature is not valid")]
    Signature,
    /// Producing a JWE or JWS failed.
    #[error("could not produce {0}")]
    Produce(&'static str),
}

/// A key the JOSE operations can use: a bare [`Jwk`] (its crypto object is built for each
/// use) or a [`PreparedKey`] (built once: importing a P-256 private key costs several times
/// more than signing with it).
pub trait JoseKey {
    /// The key as a JWK.
    fn jwk(&self) -> &Jwk;
    /// A ready signer, if one was prepared.
    fn signer(&self) -> Option<&dyn JwsSigner> {
        None
    }
    /// A ready verifier, if one was prepared.
    fn verifier(&self) -> Option<&dyn JwsVerifier> {
        None
    }
    /// A ready encrypter, if one was prepared.
    fn encrypter(&self) -> Option<&dyn JweEncrypter> {
        None
    }
    /// A ready decrypter, if one was prepared.
    fn decrypter(&self) -> Option<&dyn JweDecrypter> {
        None
    }
}

impl JoseKey for Jwk {
    fn jwk(&self) -> &Jwk {
        self
    }
}

/// The crypto objects a key is for, built when the key set is loaded: a private `sig` key
/// signs and verifies, a public one verifies; a private `enc` key decrypts and encrypts, a
/// public one encrypts.
#[derive(Default)]
struct Prepared {
    signer: Option<Box<dyn JwsSigner>>,
    verifier: Option<Box<dyn JwsVerifier>>,
    encrypter: Option<Box<dyn JweEncrypter>>,
    decrypter: Option<Box<dyn JweDecrypter>>,
}

/// A JWK with the crypto objects its `use`, `alg` and visibility call for, built once, so
/// no operation imports a key. Importing is also where OpenSSL 3.0 has been seen to fail
/// spuriously when several threads import keys at once (`X509_PUBKEY_get0: decode error`
/// for a valid RSA-PSS key), so a gateway that imported per operation could refuse a valid
/// referral under load.
#[derive(Clone)]
pub struct PreparedKey {
    jwk: Jwk,
    prepared: std::sync::Arc<Prepared>,
}

impl std::fmt::Debug for PreparedKey {
    /// Names the key, never its material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey")
            .field("kid", &self.jwk.key_id())
            .field("alg", &self.jwk.algorithm())
            .finish()
    }
}

/// Why a key could not be prepared. The text names the rule, never key material or the
/// library's message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrepareError {
    /// `use` or `alg` is missing or not one refex allows for that use.
    #[error("\"use\" {key_use:?} with \"alg\" {alg:?} is not a key refex can use")]
    Unsupported {
        /// The key's `use`.
        key_use: Option<String>,
        /// The key's `alg`.
        alg: Option<String>,
    },
    /// The parameters do not make a usable key for its `alg`.
    #[error("its parameters do not make a usable {alg} key{why}")]
    Import {
        /// The key's `alg`.
        alg: String,
        /// What is wrong, where refex can say (`: …`), else empty.
        why: String,
    },
}

impl PreparedKey {
    /// Prepares `jwk` for what it is for (`private`: it carries private material). Fails
    /// for a `use`/`alg` refex does not allow, or parameters the library cannot import.
    pub fn new(jwk: Jwk, private: bool) -> Result<Self, PrepareError> {
        let alg = jwk.algorithm().unwrap_or_default().to_owned();
        let unsupported = || PrepareError::Unsupported {
            key_use: jwk.key_use().map(str::to_owned),
            alg: jwk.algorithm().map(str::to_owned),
        };
        let import = |_| PrepareError::Import {
            alg: alg.clone(),
            why: String::new(),
        };
        let ecdh = |e: super::ecdh::EcdhError| PrepareError::Import {
            alg: alg.clone(),
            why: format!(": {e} (refex's ECDH-ES keys are P-256)"),
        };
        let es256 = |e: super::es256::Es256Error| PrepareError::Import {
            alg: alg.clone(),
            why: format!(": {e}"),
        };
        let public = if private {
            jwk.to_public_key().map_err(import)?
        } else {
            jwk.clone()
        };
        let mut prepared = Prepared::default();
        match jwk.key_use() {
            Some("sig") if SIG_ALGS.contains(&alg.as_str()) => {
                prepared.verifier = Some(match alg.as_str() {
                    "ES256" => {
                        // josekit's import checks the JWK's parameters; the verifying is
                        // `es256`'s, over the key imported once.
                        ES256.verifier_from_jwk(&public).map_err(import)?;
                        Box::new(super::es256::Verifier::from_jwk(&public).map_err(es256)?)
                    }
                    "EdDSA" => Box::new(EdDSA.verifier_from_jwk(&public).map_err(import)?),
                    "PS256" => Box::new(PS256.verifier_from_jwk(&public).map_err(import)?),
                    _ => return Err(unsupported()),
                });
                if private {
                    prepared.signer = Some(match alg.as_str() {
                        "ES256" => {
                            ES256.signer_from_jwk(&jwk).map_err(import)?;
                            Box::new(super::es256::Signer::from_jwk(&jwk).map_err(es256)?)
                        }
                        "EdDSA" => Box::new(EdDSA.signer_from_jwk(&jwk).map_err(import)?),
                        "PS256" => Box::new(PS256.signer_from_jwk(&jwk).map_err(import)?),
                        _ => return Err(unsupported()),
                    });
                }
            }
            Some("enc") if ENC_ALGS.contains(&alg.as_str()) => {
                prepared.encrypter = Some(match alg.as_str() {
                    "ECDH-ES+A256KW" => {
                        Box::new(super::ecdh::Encrypter::from_jwk(&public).map_err(ecdh)?)
                    }
                    "RSA-OAEP-256" => {
                        Box::new(RSA_OAEP_256.encrypter_from_jwk(&public).map_err(import)?)
                    }
                    _ => return Err(unsupported()),
                });
                if private {
                    prepared.decrypter = Some(match alg.as_str() {
                        "ECDH-ES+A256KW" => {
                            Box::new(super::ecdh::Decrypter::from_jwk(&jwk).map_err(ecdh)?)
                        }
                        "RSA-OAEP-256" => {
                            Box::new(RSA_OAEP_256.decrypter_from_jwk(&jwk).map_err(import)?)
                        }
                        _ => return Err(unsupported()),
                    });
                }
            }
            _ => return Err(unsupported()),
        }
        Ok(Self {
            jwk,
            prepared: std::sync::Arc::new(prepared),
        })
    }
}

impl JoseKey for PreparedKey {
    fn jwk(&self) -> &Jwk {
        &self.jwk
    }
    fn signer(&self) -> Option<&dyn JwsSigner> {
        self.prepared.signer.as_deref()
    }
    fn verifier(&self) -> Option<&dyn JwsVerifier> {
        self.prepared.verifier.as_deref()
    }
    fn encrypter(&self) -> Option<&dyn JweEncrypter> {
        self.prepared.encrypter.as_deref()
    }
    fn decrypter(&self) -> Option<&dyn JweDecrypter> {
        self.prepared.decrypter.as_deref()
    }
}

/// A parsed protected header.
#[derive(Clone, Debug)]
pub struct Header(Map<String, Value>);

impl Header {
    /// A string parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// Whether the parameter is present at all.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn parts<'a>(compact: &'a str, n: usize, what: &'static str) -> Result<Vec<&'a str>, JoseError> {
    let parts: Vec<&str> = compact.split('.').collect();
    if parts.len() != n {
        return Err(JoseError::Malformed(what));
    }
    Ok(parts)
}

fn header(encoded: &str, what: &'static str) -> Result<Header, JoseError> {
    if encoded.len() > MAX_HEADER_BYTES {
        return Err(JoseError::Header(what));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| JoseError::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Header(map)),
        _ => Err(JoseError::Header(what)),
    }
}

fn check_key_alg(jwk: &Jwk, alg: &str, what: &'static str) -> Result<(), JoseError> {
    match jwk.algorithm() {
        Some(a) if a != alg => Err(JoseError::KeyAlg(what)),
        _ => Ok(()),
    }
}

/// The protected header of a compact serialisation with `n` parts, unchecked.
pub fn raw_header(compact: &str, n: usize) -> Option<Header> {
    let p = parts(compact, n, "JOSE").ok()?;
    header(p[0], "JOSE").ok()
}

/// Reads a JWE's protected header and checks it against the allow-list, before any key is
/// touched.
pub fn jwe_header(compact: &str) -> Result<Header, JoseError> {
    let p = parts(compact, 5, "JWE")?;
    let h = header(p[0], "JWE")?;
    let alg = h.get("alg");
    if !alg.is_some_and(|a| ENC_ALGS.contains(&a)) {
        return Err(JoseError::Alg {
            what: "JWE",
            alg: alg.map(str::to_owned),
        });
    }
    if h.get("enc") != Some(ENC) {
        return Err(JoseError::Enc(h.get("enc").map(str::to_owned)));
    }
    if h.has("zip") {
        return Err(JoseError::Zip);
    }
    if h.has("crit") {
        return Err(JoseError::Crit("JWE"));
    }
    Ok(h)
}

/// Decrypts a compact JWE with the key `lookup` finds for its `kid` (required).
pub fn decrypt<'k, K: JoseKey + 'k>(
    compact: &str,
    lookup: impl FnOnce(&str) -> Option<&'k K>,
) -> Result<(Header, Vec<u8>), JoseError> {
    let h = jwe_header(compact)?;
    let alg = h.get("alg").unwrap_or_default();
    let unknown = || JoseError::UnknownKid {
        what: "JWE",
        kid: h.get("kid").map(str::to_owned),
    };
    let key = h.get("kid").and_then(lookup).ok_or_else(unknown)?;
    let jwk = key.jwk();
    check_key_alg(jwk, alg, "JWE")?;
    let open = |d: &dyn JweDecrypter| {
        josekit::jwe::deserialize_compact(compact, d).map_err(|_| JoseError::Decrypt)
    };
    let result = match (alg, key.decrypter()) {
        ("ECDH-ES+A256KW" | "RSA-OAEP-256", Some(d)) => open(d),
        ("ECDH-ES+A256KW", None) => ECDH_ES_A256KW
            .decrypter_from_jwk(jwk)
            .map_err(|_| JoseError::Decrypt)
            .and_then(|d| open(&d)),
        ("RSA-OAEP-256", None) => RSA_OAEP_256
            .decrypter_from_jwk(jwk)
            .map_err(|_| JoseError::Decrypt)
            .and_then(|d| open(&d)),
        _ => Err(JoseError::Alg {
            what: "JWE",
            alg: Some(alg.to_owned()),
        }),
    };
    let (plaintext, _) = result?;
    Ok((h, plaintext))
}

/// Reads a JWS's protected header and checks it against the allow-list.
pub fn jws_header(compact: &str) -> Result<Header, JoseError> {
    let p = parts(compact, 3, "JWS")?;
    let h = header(p[0], "JWS")?;
    let alg = h.get("alg");
    if !alg.is_some_and(|a| SIG_ALGS.contains(&a)) {
        return Err(JoseError::Alg {
            what: "JWS",
            alg: alg.map(str::to_owned),
        });
    }
    if h.has("crit") {
        return Err(JoseError::Crit("JWS"));
    }
    if h.has("b64") {
        return Err(JoseError::Unencoded);
    }
    Ok(h)
}

/// Verifies a compact JWS with the key `lookup` finds for its `kid` (required); returns the
/// payload.
pub fn verify<'k, K: JoseKey + 'k>(
    compact: &str,
    lookup: impl FnOnce(&str) -> Option<&'k K>,
) -> Result<(Header, Vec<u8>), JoseError> {
    let h = jws_header(compact)?;
    let alg = h.get("alg").unwrap_or_default();
    let unknown = || JoseError::UnknownKid {
        what: "JWS",
        kid: h.get("kid").map(str::to_owned),
    };
    let key = h.get("kid").and_then(lookup).ok_or_else(unknown)?;
    let jwk = key.jwk();
    check_key_alg(jwk, alg, "JWS")?;
    let check = |v: &dyn JwsVerifier| {
        josekit::jws::deserialize_compact(compact, v).map_err(|_| JoseError::Signature)
    };
    let verified = match (alg, key.verifier()) {
        ("ES256" | "EdDSA" | "PS256", Some(v)) => check(v),
        ("ES256", None) => ES256
            .verifier_from_jwk(jwk)
            .map_err(|_| JoseError::Signature)
            .and_then(|v| check(&v)),
        ("EdDSA", None) => EdDSA
            .verifier_from_jwk(jwk)
            .map_err(|_| JoseError::Signature)
            .and_then(|v| check(&v)),
        ("PS256", None) => PS256
            .verifier_from_jwk(jwk)
            .map_err(|_| JoseError::Signature)
            .and_then(|v| check(&v)),
        _ => Err(JoseError::Alg {
            what: "JWS",
            alg: Some(alg.to_owned()),
        }),
    };
    let (payload, _) = verified?;
    Ok((h, payload))
}

/// Signs `payload` as a compact JWS with `key` (its `alg` and `kid` go in the header).
pub fn sign(payload: &[u8], key: &impl JoseKey, typ: &str) -> Result<String, JoseError> {
    let jwk = key.jwk();
    let mut header = JwsHeader::new();
    header.set_token_type(typ);
    if let Some(kid) = jwk.key_id() {
        header.set_key_id(kid);
    }
    let fail = |_| JoseError::Produce("JWS");
    let produce = |s: &dyn JwsSigner| josekit::jws::serialize_compact(payload, &header, s);
    match (jwk.algorithm(), key.signer()) {
        (Some("ES256" | "EdDSA" | "PS256"), Some(s)) => produce(s),
        (Some("ES256"), None) => produce(&ES256.signer_from_jwk(jwk).map_err(fail)?),
        (Some("EdDSA"), None) => produce(&EdDSA.signer_from_jwk(jwk).map_err(fail)?),
        (Some("PS256"), None) => produce(&PS256.signer_from_jwk(jwk).map_err(fail)?),
        _ => return Err(JoseError::Produce("JWS")),
    }
    .map_err(fail)
}

/// Encrypts `plaintext` as a compact JWE (`cty` as given, `enc` A256GCM) to `key`.
pub fn encrypt(plaintext: &[u8], key: &impl JoseKey, cty: &str) -> Result<String, JoseError> {
    let jwk = key.jwk();
    let mut header = JweHeader::new();
    header.set_content_encryption(ENC);
    header.set_content_type(cty);
    if let Some(kid) = jwk.key_id() {
        header.set_key_id(kid);
    }
    let fail = |_| JoseError::Produce("JWE");
    let produce = |e: &dyn JweEncrypter| josekit::jwe::serialize_compact(plaintext, &header, e);
    match (jwk.algorithm(), key.encrypter()) {
        (Some("ECDH-ES+A256KW" | "RSA-OAEP-256"), Some(e)) => produce(e),
        (Some("ECDH-ES+A256KW"), None) => {
            produce(&ECDH_ES_A256KW.encrypter_from_jwk(jwk).map_err(fail)?)
        }
        (Some("RSA-OAEP-256"), None) => {
            produce(&RSA_OAEP_256.encrypter_from_jwk(jwk).map_err(fail)?)
        }
        _ => return Err(JoseError::Produce("JWE")),
    }
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::keys::{KeyUse, generate_p256};

    fn key(kid: &str, u: KeyUse) -> Jwk {
        let Value::Object(map) = generate_p256(kid, u).unwrap() else {
            panic!()
        };
        Jwk::from_map(map).unwrap()
    }

    fn with_header(compact: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut p: Vec<String> = compact.split('.').map(str::to_owned).collect();
        let mut h: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p[0]).unwrap()).unwrap();
        edit(&mut h);
        p[0] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap());
        p.join(".")
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_and_a_wrong_key_fails() {
        let k = key("enc-1", KeyUse::Enc);
        let other = key("enc-1", KeyUse::Enc);
        let jwe = encrypt(b"hello", &k, "JWT").unwrap();
        let (h, pt) = decrypt(&jwe, |kid| (kid == "enc-1").then_some(&k)).unwrap();
        assert_eq!(pt, b"hello");
        assert_eq!(h.get("cty"), Some("JWT"));
        assert_eq!(
            decrypt(&jwe, |_| Some(&other)).unwrap_err(),
            JoseError::Decrypt
        );
        assert!(matches!(
            decrypt::<Jwk>(&jwe, |_| None).unwrap_err(),
            JoseError::UnknownKid { .. }
        ));
    }

    #[test]
    fn zip_crit_and_disallowed_algorithms_are_refused_before_decrypting() {
        let k = key("enc-1", KeyUse::Enc);
        let jwe = encrypt(b"x", &k, "JWT").unwrap();
        let zipped = with_header(&jwe, |h| {
            h.insert("zip".into(), "DEF".into());
        });
        assert_eq!(decrypt(&zipped, |_| Some(&k)).unwrap_err(), JoseError::Zip);
        let crit = with_header(&jwe, |h| {
            h.insert("crit".into(), serde_json::json!(["exp"]));
        });
        assert_eq!(
            decrypt(&crit, |_| Some(&k)).unwrap_err(),
            JoseError::Crit("JWE")
        );
        for alg in ["dir", "none", "RSA1_5", "A256KW"] {
            let bad = with_header(&jwe, |h| {
                h.insert("alg".into(), alg.into());
            });
            assert!(
                matches!(decrypt(&bad, |_| Some(&k)), Err(JoseError::Alg { .. })),
                "{alg}"
            );
        }
        let enc = with_header(&jwe, |h| {
            h.insert("enc".into(), "A128CBC-HS256".into());
        });
        assert!(matches!(
            decrypt(&enc, |_| Some(&k)),
            Err(JoseError::Enc(_))
        ));
        assert_eq!(
            decrypt("a.b.c", |_| Some(&k)).unwrap_err(),
            JoseError::Malformed("JWE")
        );
    }

    #[test]
    fn sign_then_verify_round_trips_and_tampering_fails() {
        let k = key("sig-1", KeyUse::Sig);
        let jws = sign(b"{\"a\":1}", &k, "referral+jwt").unwrap();
        let (h, payload) = verify(&jws, |_| Some(&k)).unwrap();
        assert_eq!(payload, b"{\"a\":1}");
        assert_eq!(h.get("typ"), Some("referral+jwt"));
        let mut parts: Vec<&str> = jws.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(b"{\"a\":2}");
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), |_| Some(&k)).unwrap_err(),
            JoseError::Signature
        );
        let none = with_header(&jws, |h| {
            h.insert("alg".into(), "none".into());
        });
        assert!(matches!(
            verify(&none, |_| Some(&k)),
            Err(JoseError::Alg { .. })
        ));
    }

    #[test]
    fn a_key_registered_for_another_alg_is_refused() {
        let enc = key("k", KeyUse::Enc);
        let jws_key = key("k", KeyUse::Sig);
        let jws = sign(b"x", &jws_key, "t").unwrap();
        assert_eq!(
            verify(&jws, |_| Some(&enc)).unwrap_err(),
            JoseError::KeyAlg("JWS")
        );
    }
}
