//! `ECDH-ES+A256KW` on P-256 at the cost of its primitives: josekit stays the JOSE format
//! layer (headers, the compact form, A256GCM), and the key agreement it delegates to a
//! [`JweEncrypter`] / [`JweDecrypter`] is done here over OpenSSL's low-level EC, with the
//! group, the recipient's point and the private scalar imported once, when the key set
//! loads.
//!
//! josekit's own ECDH-ES imports every ephemeral public key through OpenSSL's decoders and a
//! full key check, and builds a derivation context per operation, which cost several times
//! the ECDH itself. Here the ephemeral point is decoded straight from its coordinates with
//! OpenSSL's on-curve check (`EC_POINT_oct2point` refuses a point off the curve or a
//! coordinate not below p); P-256 has cofactor 1, so on the curve and not at infinity is the
//! whole validation (SP 800-56A 5.6.2.3.4), and invalid-curve points are refused as before.
//! The scalar multiplication is OpenSSL's constant-time one, as its own ECDH uses
//! (`EC_POINT_mul` with the scalar flagged constant-time).

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::JoseError as LibError;
use josekit::jwe::{
    ECDH_ES_A256KW, JweAlgorithm, JweContentEncryption, JweDecrypter, JweEncrypter, JweHeader,
};
use josekit::jwk::Jwk;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use serde_json::{Map, Value};
use sha2::Digest as _;
use zeroize::Zeroizing;

/// Bytes in a P-256 coordinate or scalar.
pub(super) const COORD: usize = 32;
/// The algorithm name, which the Concat KDF binds.
const ALG: &str = "ECDH-ES+A256KW";
/// A256KW wraps the content key under a 256-bit key.
const WRAP_KEY_BITS: u32 = 256;

/// Why a key could not be imported, or an agreement failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EcdhError(&'static str);

fn lib(what: &'static str) -> LibError {
    LibError::InvalidJweFormat(anyhow::anyhow!(what))
}

/// The P-256 group, shared by every key.
pub(super) fn group() -> Result<Arc<EcGroup>, EcdhError> {
    static GROUP: std::sync::OnceLock<Option<Arc<EcGroup>>> = std::sync::OnceLock::new();
    GROUP
        .get_or_init(|| {
            EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .ok()
                .map(Arc::new)
        })
        .clone()
        .ok_or(EcdhError("P-256 is not available"))
}

/// A coordinate or scalar: base64url, exactly 32 bytes.
pub(super) fn field(map: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, &'static str> {
    let text = map.get(name).and_then(Value::as_str).ok_or(name)?;
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| name)?;
    if bytes.len() == COORD {
        Ok(bytes)
    } else {
        Err(name)
    }
}

/// A private key's `d`: base64url, 1 to 32 bytes, wiped when dropped. RFC 7518 §6.2.2.1 says
/// the full 32 bytes; josekit also took a shorter one (a tool that drops leading zero bytes
/// writes one key in 256 so), and so does refex. Zero and values not below the order are
/// refused by the key check that follows.
pub(super) fn private_scalar(map: &Map<String, Value>) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    map.get("d")
        .and_then(Value::as_str)
        .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        .map(Zeroizing::new)
        .filter(|d| (1..=COORD).contains(&d.len()))
        .ok_or("\"d\" is not a P-256 scalar of at most 32 bytes")
}

/// A P-256 point from a JWK-shaped map (`kty` EC, `crv` P-256, `x`, `y`), checked on the
/// curve by the decoder.
pub(super) fn point(group: &EcGroup, map: &Map<String, Value>) -> Result<EcPoint, &'static str> {
    if map.get("kty").and_then(Value::as_str) != Some("EC") {
        return Err("kty");
    }
    if map.get("crv").and_then(Value::as_str) != Some("P-256") {
        return Err("crv");
    }
    let mut octets = Vec::with_capacity(1 + 2 * COORD);
    octets.push(0x04);
    octets.extend_from_slice(&field(map, "x")?);
    octets.extend_from_slice(&field(map, "y")?);
    let mut ctx = BigNumContext::new().map_err(|_| "context")?;
    let p = EcPoint::from_bytes(group, &octets, &mut ctx).map_err(|_| "point")?;
    if p.is_infinity(group) {
        return Err("point");
    }
    Ok(p)
}

/// A private scalar, flagged for OpenSSL's constant-time arithmetic and wiped when dropped.
struct Scalar(BigNum);

impl Scalar {
    fn new(mut n: BigNum) -> Self {
        n.set_const_time();
        Self(n)
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// `x` of `scalar · peer`, the ECDH shared secret Z (wiped when dropped).
fn agree(
    group: &EcGroup,
    peer: &EcPoint,
    scalar: &Scalar,
) -> Result<Zeroizing<[u8; COORD]>, &'static str> {
    let scalar = &scalar.0;
    let mut ctx = BigNumContext::new().map_err(|_| "context")?;
    let mut shared = EcPoint::new(group).map_err(|_| "point")?;
    shared
        .mul2(group, peer, scalar, &mut ctx)
        .map_err(|_| "agreement")?;
    if shared.is_infinity(group) {
        return Err("agreement");
    }
    let (mut x, mut y) = (
        BigNum::new().map_err(|_| "context")?,
        BigNum::new().map_err(|_| "context")?,
    );
    shared
        .affine_coordinates(group, &mut x, &mut y, &mut ctx)
        .map_err(|_| "agreement")?;
    let bytes = Zeroizing::new(x.to_vec_padded(COORD as i32).map_err(|_| "agreement")?);
    x.clear();
    let mut z = Zeroizing::new([0u8; COORD]);
    z.copy_from_slice(&bytes);
    Ok(z)
}

/// RFC 7518 §4.6.2: the key-wrapping key from Z, with the header's party information.
fn concat_kdf(z: &[u8], apu: &[u8], apv: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = sha2::Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [ALG.as_bytes(), apu, apv] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(WRAP_KEY_BITS.to_be_bytes());
    Zeroizing::new(h.finalize().into())
}

/// `apu` / `apv` from the header: absent is empty, present must be base64url text.
fn party(header: &JweHeader, name: &'static str) -> Result<Vec<u8>, &'static str> {
    match header.claim(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => URL_SAFE_NO_PAD.decode(s).map_err(|_| name),
        Some(_) => Err(name),
    }
}

/// A recipient's public key, ready to encrypt to.
#[derive(Clone)]
pub struct Encrypter {
    key_id: Option<String>,
    group: Arc<EcGroup>,
    peer: Arc<EcPoint>,
}

impl std::fmt::Debug for Encrypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encrypter")
            .field("kid", &self.key_id)
            .finish()
    }
}

impl Encrypter {
    /// Imports a public (or private) P-256 JWK's point, fully checked once.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, EcdhError> {
        let group = group()?;
        let peer = point(&group, jwk.as_ref()).map_err(|_| EcdhError("not a P-256 point"))?;
        EcKey::from_public_key(&group, &peer)
            .and_then(|k| k.check_key())
            .map_err(|_| EcdhError("not a valid P-256 public key"))?;
        Ok(Self {
            key_id: jwk.key_id().map(str::to_owned),
            group,
            peer: Arc::new(peer),
        })
    }
}

impl JweEncrypter for Encrypter {
    fn algorithm(&self) -> &dyn JweAlgorithm {
        &ECDH_ES_A256KW
    }

    fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    fn compute_content_encryption_key(
        &self,
        _cencryption: &dyn JweContentEncryption,
        _in_header: &JweHeader,
        _out_header: &mut JweHeader,
    ) -> Result<Option<Cow<'_, [u8]>>, LibError> {
        // Key wrapping: the content key is random (josekit draws it), not agreed.
        Ok(None)
    }

    fn encrypt(
        &self,
        key: &[u8],
        in_header: &JweHeader,
        out_header: &mut JweHeader,
    ) -> Result<Option<Vec<u8>>, LibError> {
        let group = &self.group;
        let ephemeral = EcKey::generate(group).map_err(|_| lib("ephemeral key"))?;
        let scalar = Scalar::new(
            ephemeral
                .private_key()
                .to_owned()
                .map_err(|_| lib("scalar"))?,
        );
        let z = agree(group, &self.peer, &scalar).map_err(lib)?;
        drop(scalar);
        let mut ctx = BigNumContext::new().map_err(|_| lib("context"))?;
        let public = ephemeral
            .public_key()
            .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .map_err(|_| lib("ephemeral key"))?;
        let mut epk = Map::new();
        epk.insert("kty".into(), "EC".into());
        epk.insert("crv".into(), "P-256".into());
        epk.insert(
            "x".into(),
            URL_SAFE_NO_PAD.encode(&public[1..=COORD]).into(),
        );
        epk.insert(
            "y".into(),
            URL_SAFE_NO_PAD.encode(&public[1 + COORD..]).into(),
        );
        out_header
            .set_claim("epk", Some(Value::Object(epk)))
            .map_err(|_| lib("epk"))?;
        let apu = party(in_header, "apu").map_err(lib)?;
        let apv = party(in_header, "apv").map_err(lib)?;
        let kek = concat_kdf(&z[..], &apu, &apv);
        let aes = openssl::aes::AesKey::new_encrypt(&kek[..]).map_err(|_| lib("key wrap"))?;
        let mut wrapped = vec![0; key.len() + 8];
        let len =
            openssl::aes::wrap_key(&aes, None, &mut wrapped, key).map_err(|_| lib("key wrap"))?;
        wrapped.truncate(len);
        Ok(Some(wrapped))
    }

    fn box_clone(&self) -> Box<dyn JweEncrypter> {
        Box::new(self.clone())
    }
}

/// A private key, ready to decrypt with.
#[derive(Clone)]
pub struct Decrypter {
    key_id: Option<String>,
    group: Arc<EcGroup>,
    scalar: Arc<Scalar>,
}

impl std::fmt::Debug for Decrypter {
    /// Names the key, never its material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypter")
            .field("kid", &self.key_id)
            .finish()
    }
}

impl Decrypter {
    /// Imports a private P-256 JWK, checked once: `d` is the full 32 bytes (RFC 7518
    /// §6.2.2.1) and gives the JWK's point (`x` and `y` are required).
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, EcdhError> {
        let group = group()?;
        let map = jwk.as_ref();
        let public = point(&group, map).map_err(|_| EcdhError("not a P-256 point"))?;
        let d = private_scalar(map).map_err(EcdhError)?;
        let scalar = Scalar::new(
            BigNum::from_slice(&d[..]).map_err(|_| EcdhError("\"d\" is not a P-256 scalar"))?,
        );
        EcKey::from_private_components(&group, &scalar.0, &public)
            .and_then(|k| k.check_key())
            .map_err(|_| EcdhError("\"d\" does not match the point"))?;
        Ok(Self {
            key_id: jwk.key_id().map(str::to_owned),
            group,
            scalar: Arc::new(scalar),
        })
    }
}

impl JweDecrypter for Decrypter {
    fn algorithm(&self) -> &dyn JweAlgorithm {
        &ECDH_ES_A256KW
    }

    fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    fn decrypt(
        &self,
        encrypted_key: Option<&[u8]>,
        _cencryption: &dyn JweContentEncryption,
        header: &JweHeader,
    ) -> Result<Cow<'_, [u8]>, LibError> {
        // A256KW of a 32-byte content key is 40 bytes; anything else is refused before
        // any arithmetic.
        let wrapped = encrypted_key
            .filter(|k| k.len() == 40)
            .ok_or_else(|| lib("encrypted key"))?;
        let epk = match header.claim("epk") {
            Some(Value::Object(map)) => map,
            _ => return Err(lib("epk")),
        };
        let peer = point(&self.group, epk).map_err(lib)?;
        let z = agree(&self.group, &peer, &self.scalar).map_err(lib)?;
        let apu = party(header, "apu").map_err(lib)?;
        let apv = party(header, "apv").map_err(lib)?;
        let kek = concat_kdf(&z[..], &apu, &apv);
        let aes = openssl::aes::AesKey::new_decrypt(&kek[..]).map_err(|_| lib("key wrap"))?;
        let mut key = vec![0; wrapped.len() - 8];
        let len = openssl::aes::unwrap_key(&aes, None, &mut key, wrapped)
            .map_err(|_| lib("key unwrap"))?;
        key.truncate(len);
        Ok(Cow::Owned(key))
    }

    fn box_clone(&self) -> Box<dyn JweDecrypter> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair as a private JWK (with `x` and `y`, or `d` alone) and a public one.
    fn pair_with(public_in_private: bool) -> (Jwk, Jwk) {
        let key = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256)
            .expect("P-256 key");
        let private = if public_in_private {
            key.to_jwk_key_pair()
        } else {
            key.to_jwk_private_key()
        };
        let (mut private, mut public) = (private, key.to_jwk_public_key());
        for k in [&mut private, &mut public] {
            k.set_key_id("k");
            k.set_algorithm(ALG);
            k.set_key_use("enc");
        }
        (private, public)
    }

    fn pair() -> (Jwk, Jwk) {
        pair_with(true)
    }

    fn header(party_info: bool) -> JweHeader {
        let mut h = JweHeader::new();
        h.set_content_encryption("A256GCM");
        h.set_key_id("k");
        if party_info {
            h.set_claim("apu", Some("QWxpY2U".into())).expect("apu");
            h.set_claim("apv", Some("Qm9i".into())).expect("apv");
        }
        h
    }

    /// Agrees with josekit's own ECDH-ES+A256KW both ways, with and without party info.
    #[test]
    fn interoperates_with_josekit_both_ways() {
        let (private, public) = pair();
        let ours_enc = Encrypter::from_jwk(&public).expect("encrypter");
        let ours_dec = Decrypter::from_jwk(&private).expect("decrypter");
        let (scalar_only, _) = pair_with(false);
        assert!(
            Decrypter::from_jwk(&scalar_only).is_err(),
            "x and y are required"
        );
        let lib_enc = ECDH_ES_A256KW
            .encrypter_from_jwk(&public)
            .expect("lib encrypter");
        let lib_dec = ECDH_ES_A256KW
            .decrypter_from_jwk(&private)
            .expect("lib decrypter");
        for party_info in [false, true] {
            let h = header(party_info);
            let a = josekit::jwe::serialize_compact(b"one", &h, &ours_enc).expect("ours");
            let (pt, _) = josekit::jwe::deserialize_compact(&a, &lib_dec).expect("lib opens ours");
            assert_eq!(pt, b"one");
            let b = josekit::jwe::serialize_compact(b"two", &h, &lib_enc).expect("lib");
            let (pt, _) = josekit::jwe::deserialize_compact(&b, &ours_dec).expect("ours opens lib");
            assert_eq!(pt, b"two");
        }
    }

    /// A point off the curve, a short coordinate, another curve and a mismatched private
    /// scalar are all refused.
    #[test]
    fn refuses_bad_points_and_keys() {
        let (private, public) = pair();
        let group = group().expect("group");
        let mut map = public.as_ref().clone();
        let mut y = field(&map, "y").expect("y");
        y[31] ^= 1;
        map.insert("y".into(), URL_SAFE_NO_PAD.encode(&y).into());
        assert_eq!(point(&group, &map).err(), Some("point"));
        map.insert("y".into(), URL_SAFE_NO_PAD.encode(&y[1..]).into());
        assert_eq!(point(&group, &map).err(), Some("y"));
        let mut other = public.as_ref().clone();
        other.insert("crv".into(), "P-384".into());
        assert_eq!(point(&group, &other).err(), Some("crv"));
        let (stranger, _) = pair();
        let mut mixed = private.as_ref().clone();
        mixed.insert("d".into(), stranger.as_ref()["d"].clone());
        let mixed = Jwk::from_map(mixed).expect("jwk");
        assert!(Decrypter::from_jwk(&mixed).is_err());
    }
}
