//! Encryption at rest for what the gateway must keep readable (held referrals): AES-256-GCM
//! under the storage key from configuration, as a compact JWE (`alg` `dir`) whose `kid`
//! names the storage key, so keys can be rotated while old holds stay readable.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use josekit::jwe::{Dir, JweHeader};

use super::jose::ENC;
use super::sealed::Sealed;

/// Bytes in an AES-256 key.
const KEY_BYTES: usize = 32;

/// Why the storage key or a sealed value could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AtRestError {
    /// The key file is missing, unreadable or not 32 bytes of base64.
    #[error("storage key {0}: must hold 32 random bytes, base64-encoded")]
    Key(String),
    /// Encryption failed.
    #[error("could not encrypt at rest")]
    Seal,
    /// The value was not sealed with this key, or was altered.
    #[error("could not decrypt a value at rest")]
    Open,
}

/// The key that protects held referrals at rest. Never printed.
#[derive(Clone)]
pub struct StorageKey {
    id: String,
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageKey({})", self.id)
    }
}

impl StorageKey {
    /// Reads a base64 key from a file; its id is derived from the key (a SHA-256 prefix), so
    /// the file needs nothing but the key.
    pub fn load(path: &Path) -> Result<Self, AtRestError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|_| AtRestError::Key(shown.clone()))?;
        Self::from_base64(text.trim()).map_err(|_| AtRestError::Key(shown))
    }

    /// A key from base64 text.
    pub fn from_base64(text: &str) -> Result<Self, AtRestError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| AtRestError::Key("<inline>".into()))?;
        let key: [u8; KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| AtRestError::Key("<inline>".into()))?;
        use sha2::Digest as _;
        let id = format!("sk-{}", &hex::encode(sha2::Sha256::digest(key))[..16]);
        Ok(Self { id, key })
    }

    /// A fresh random key as base64 (for the dev PKI and operators' key generation).
    pub fn generate_base64() -> Result<String, AtRestError> {
        let jwk =
            josekit::jwk::Jwk::generate_oct_key(KEY_BYTES as u8).map_err(|_| AtRestError::Seal)?;
        let raw = jwk.key_value().ok_or(AtRestError::Seal)?;
        Ok(STANDARD.encode(raw))
    }

    /// A 32-byte secret for another purpose (e.g. signing CSRF tokens), derived from this key
    /// by HMAC-SHA-256 over `label`, so configuration holds one secret, not many.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Sealed, AtRestError> {
        let mut header = JweHeader::new();
        header.set_content_encryption(ENC);
        header.set_key_id(&self.id);
        let encrypter = Dir
            .encrypter_from_bytes(self.key)
            .map_err(|_| AtRestError::Seal)?;
        josekit::jwe::serialize_compact(plaintext, &header, &encrypter)
            .ok()
            .and_then(|jwe| Sealed::parse(jwe).ok())
            .ok_or(AtRestError::Seal)
    }

    /// Decrypts a value this key sealed.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, AtRestError> {
        let sealed = sealed.as_str();
        let h = super::jose::raw_header(sealed, 5).ok_or(AtRestError::Open)?;
        if h.get("alg") != Some("dir")
            || h.get("enc") != Some(ENC)
            || h.get("kid") != Some(&self.id)
            || h.has("zip")
            || h.has("crit")
        {
            return Err(AtRestError::Open);
        }
        let decrypter = Dir
            .decrypter_from_bytes(self.key)
            .map_err(|_| AtRestError::Open)?;
        josekit::jwe::deserialize_compact(sealed, &decrypter)
            .map(|(pt, _)| pt)
            .map_err(|_| AtRestError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_another_key_cannot_open() {
        let k = StorageKey::from_base64(&StorageKey::generate_base64().unwrap()).unwrap();
        let other = StorageKey::from_base64(&StorageKey::generate_base64().unwrap()).unwrap();
        let sealed = k.seal(b"held referral").unwrap();
        assert!(!sealed.as_str().contains("held referral"));
        assert_eq!(k.open(&sealed).unwrap(), b"held referral");
        assert_eq!(other.open(&sealed).unwrap_err(), AtRestError::Open);
        assert!(!format!("{k:?}").contains(&STANDARD.encode(k.key)));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(StorageKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }
}
