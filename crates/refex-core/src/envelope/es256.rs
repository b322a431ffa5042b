//! `ES256` (ECDSA on P-256 with SHA-256, RFC 7518 §3.4) at the cost of its primitives:
//! josekit stays the JWS format layer, and the signature it delegates to a [`JwsSigner`] /
//! [`JwsVerifier`] is made here over OpenSSL's low-level ECDSA, with the key imported and
//! checked once, when the key set loads.
//!
//! josekit's own ES256 builds an EVP signing or verifying context per signature (OpenSSL 3
//! fetches the algorithm from its provider store under a lock for each), then converts the
//! signature between DER and the JOSE form through its own DER codec. Here the digest is
//! signed as it is (`ECDSA_do_sign`, the function the EVP path ends in: constant-time, with
//! a fresh random nonce) and the JOSE form is the two 32-byte integers `r ‖ s`. A signature
//! to verify must be exactly 64 bytes; OpenSSL refuses `r` or `s` of zero or not below the
//! group order.

use std::sync::Arc;

use josekit::JoseError as LibError;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsAlgorithm, JwsSigner, JwsVerifier};
use openssl::bn::BigNum;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::{Private, Public};
use sha2::Digest as _;

use super::ecdh::{COORD, group, point, private_scalar};

/// The JOSE form of an ES256 signature: `r` then `s`, each 32 bytes.
const SIGNATURE_LEN: usize = 2 * COORD;

/// Why a key could not be imported. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Es256Error(&'static str);

/// A refusal in words of our own. OpenSSL's error queue is emptied first: the low-level
/// calls leave their errors on the thread's queue, where a later, unrelated failure on the
/// same thread would report them.
fn invalid(what: &'static str) -> LibError {
    drop(openssl::error::ErrorStack::get());
    LibError::InvalidSignature(anyhow::anyhow!(what))
}

/// A P-256 private key, ready to sign with.
#[derive(Clone)]
pub struct Signer {
    key_id: Option<String>,
    key: Arc<EcKey<Private>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("es256::Signer")
            .field("kid", &self.key_id)
            .finish()
    }
}

impl Signer {
    /// Imports a private P-256 JWK, checked once: `d` is a scalar of at most 32 bytes that
    /// gives the JWK's point (`x` and `y` are required).
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Es256Error> {
        let group = group().map_err(|_| Es256Error("P-256 is not available"))?;
        let map = jwk.as_ref();
        let public = point(&group, map).map_err(|_| Es256Error("not a P-256 point"))?;
        let d = private_scalar(map).map_err(Es256Error)?;
        let mut scalar =
            BigNum::from_slice(&d[..]).map_err(|_| Es256Error("\"d\" is not a P-256 scalar"))?;
        scalar.set_const_time();
        let key = EcKey::from_private_components(&group, &scalar, &public)
            .and_then(|k| k.check_key().map(|()| k))
            .map_err(|_| Es256Error("\"d\" does not match the point"));
        // The key holds its own copy of the scalar.
        scalar.clear();
        Ok(Self {
            key_id: jwk.key_id().map(str::to_owned),
            key: Arc::new(key?),
        })
    }
}

impl JwsSigner for Signer {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    fn signature_len(&self) -> usize {
        SIGNATURE_LEN
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, LibError> {
        let digest = sha2::Sha256::digest(message);
        let sig = EcdsaSig::sign(&digest, &self.key).map_err(|_| invalid("signing failed"))?;
        let mut out = Vec::with_capacity(SIGNATURE_LEN);
        for n in [sig.r(), sig.s()] {
            out.extend_from_slice(
                &n.to_vec_padded(COORD as i32)
                    .map_err(|_| invalid("signing failed"))?,
            );
        }
        Ok(out)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// A P-256 public key, ready to verify with.
#[derive(Clone)]
pub struct Verifier {
    key_id: Option<String>,
    key: Arc<EcKey<Public>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("es256::Verifier")
            .field("kid", &self.key_id)
            .finish()
    }
}

impl Verifier {
    /// Imports a public (or private) P-256 JWK's point, fully checked once.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Es256Error> {
        let group = group().map_err(|_| Es256Error("P-256 is not available"))?;
        let public = point(&group, jwk.as_ref()).map_err(|_| Es256Error("not a P-256 point"))?;
        let key = EcKey::from_public_key(&group, &public)
            .and_then(|k| k.check_key().map(|()| k))
            .map_err(|_| Es256Error("not a valid P-256 public key"))?;
        Ok(Self {
            key_id: jwk.key_id().map(str::to_owned),
            key: Arc::new(key),
        })
    }
}

impl JwsVerifier for Verifier {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), LibError> {
        if signature.len() != SIGNATURE_LEN {
            return Err(invalid("an ES256 signature is 64 bytes"));
        }
        let (r, s) = signature.split_at(COORD);
        let sig = BigNum::from_slice(r)
            .and_then(|r| BigNum::from_slice(s).map(|s| (r, s)))
            .and_then(|(r, s)| EcdsaSig::from_private_components(r, s))
            .map_err(|_| invalid("the signature does not match"))?;
        let digest = sha2::Sha256::digest(message);
        match sig.verify(&digest, &self.key) {
            Ok(true) => Ok(()),
            _ => Err(invalid("the signature does not match")),
        }
    }

    fn box_clone(&self) -> Box<dyn JwsVerifier> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    fn key() -> Jwk {
        let mut jwk = ES256.generate_key_pair().unwrap().to_jwk_key_pair();
        jwk.set_key_id("k1");
        jwk
    }

    #[test]
    fn signatures_verify_both_ways_with_josekit() {
        let jwk = key();
        let public = jwk.to_public_key().unwrap();
        let ours = Signer::from_jwk(&jwk).unwrap();
        let theirs = ES256.signer_from_jwk(&jwk).unwrap();
        let message = b"header.payload";
        let sig = ours.sign(message).unwrap();
        assert_eq!(sig.len(), 64);
        ES256
            .verifier_from_jwk(&public)
            .unwrap()
            .verify(message, &sig)
            .unwrap();
        let verifier = Verifier::from_jwk(&public).unwrap();
        verifier
            .verify(message, &theirs.sign(message).unwrap())
            .unwrap();
        verifier.verify(message, &sig).unwrap();
        assert!(verifier.verify(b"header.payloaD", &sig).is_err());
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let jwk = key();
        let verifier = Verifier::from_jwk(&jwk.to_public_key().unwrap()).unwrap();
        let message = b"m";
        let good = Signer::from_jwk(&jwk).unwrap().sign(message).unwrap();
        let order = hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
            .unwrap();
        let mut r_is_order = order.clone();
        r_is_order.extend_from_slice(&good[32..]);
        let s_is_order = [good[..32].to_vec(), order.clone()].concat();
        for bad in [
            Vec::new(),
            good[..63].to_vec(),
            [good.clone(), vec![0]].concat(),
            vec![0; 64],
            [vec![0; 32], good[32..].to_vec()].concat(),
            [good[..32].to_vec(), vec![0; 32]].concat(),
            r_is_order,
            s_is_order,
        ] {
            assert!(verifier.verify(message, &bad).is_err(), "{bad:?}");
        }
        verifier.verify(message, &good).unwrap();
    }

    #[test]
    fn a_private_key_written_without_its_leading_zero_bytes_still_signs() {
        // One key in 256 has a scalar below 2^248; some tools write it in 31 bytes.
        let (jwk, short) = loop {
            let jwk = key();
            let d = URL_SAFE_NO_PAD
                .decode(jwk.parameter("d").unwrap().as_str().unwrap())
                .unwrap();
            if d[0] == 0 {
                break (jwk, URL_SAFE_NO_PAD.encode(&d[1..]));
            }
        };
        let mut map: serde_json::Map<String, Value> = jwk.clone().into();
        map.insert("d".into(), Value::String(short));
        let signer = Signer::from_jwk(&Jwk::from_map(map).unwrap()).unwrap();
        let sig = signer.sign(b"m").unwrap();
        Verifier::from_jwk(&jwk.to_public_key().unwrap())
            .unwrap()
            .verify(b"m", &sig)
            .unwrap();
    }

    #[test]
    fn a_scalar_of_zero_or_past_32_bytes_is_refused() {
        for d in [vec![0u8], vec![0u8; 32], vec![1u8; 33]] {
            let mut map: serde_json::Map<String, Value> = key().into();
            map.insert("d".into(), Value::String(URL_SAFE_NO_PAD.encode(&d)));
            assert!(Signer::from_jwk(&Jwk::from_map(map).unwrap()).is_err());
        }
    }

    #[test]
    fn a_private_key_whose_scalar_is_not_its_point_is_refused() {
        let mut a: serde_json::Map<String, serde_json::Value> = key().into();
        let b: serde_json::Map<String, serde_json::Value> = key().into();
        a.insert("d".into(), b["d"].clone());
        let jwk = Jwk::from_map(a).unwrap();
        assert!(Signer::from_jwk(&jwk).is_err());
    }
}
