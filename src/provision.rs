//! Production key material (`refex keys init`): the gateway's JOSE keys (an `enc` and a `sig`
//! P-256 key), the storage key (held referrals and hosted partners' keys at rest, CSRF
//! secrets) and the subject-access HMAC key, each written 0600 into a directory, never over an
//! existing file. What it prints is what to put in `[keys]` and what to back up; the keys
//! themselves are never printed.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::envelope::at_rest::StorageKey;
use crate::envelope::keys::{KeyUse, generate_p256};

/// Why the keys could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A key file is already there.
    #[error(
        "{0} exists: keys are never overwritten (rotate the gateway keys with `refex keys rotate`)"
    )]
    Exists(PathBuf),
    /// Generation or writing failed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What `refex keys init` wrote.
#[derive(Debug)]
pub struct Provisioned {
    /// The gateway's private JWKS.
    pub gateway_jwks: PathBuf,
    /// The storage key.
    pub storage_key: PathBuf,
    /// The subject-access key.
    pub subject_key: PathBuf,
    /// The gateway keys' ids.
    pub kids: Vec<String>,
    /// The storage key's id (derived from it; names it in sealed values).
    pub storage_key_id: String,
}

impl std::fmt::Display for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "wrote (each 0600, readable by this user only):")?;
        writeln!(
            f,
            "  {}  gateway JOSE keys: {}",
            self.gateway_jwks.display(),
            self.kids.join(", ")
        )?;
        writeln!(
            f,
            "  {}  storage key {}",
            self.storage_key.display(),
            self.storage_key_id
        )?;
        writeln!(f, "  {}  subject-access key", self.subject_key.display())?;
        writeln!(f, "in refex.toml:")?;
        writeln!(f, "  [keys]")?;
        writeln!(f, "  gateway_jwks = \"{}\"", self.gateway_jwks.display())?;
        writeln!(f, "  storage_key = \"{}\"", self.storage_key.display())?;
        writeln!(f, "  subject_key = \"{}\"", self.subject_key.display())?;
        write!(
            f,
            "back up all three now, encrypted and offline: without the storage key, held referrals \
             and hosted partners' keys cannot be read; without the subject key, subject-access \
             look-ups miss earlier referrals; the gateway keys can be rotated but not recovered"
        )
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    crate::files::write_new(path, bytes, true).map_err(|e| ProvisionError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes fresh keys into `dir` (created 0700 if missing); refuses if any file exists.
pub fn init_keys(dir: &Path) -> Result<Provisioned, ProvisionError> {
    let gateway_jwks = dir.join("gateway.jwks.json");
    let storage_key = dir.join("storage.key");
    let subject_key = dir.join("subject.key");
    for p in [&gateway_jwks, &storage_key, &subject_key] {
        // A dangling symlink counts as there: nothing is written through it.
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(ProvisionError::Exists(p.clone()));
        }
    }
    let failed = |path: &Path, reason: String| ProvisionError::File {
        path: path.to_owned(),
        reason,
    };
    let tag = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let kids = vec![format!("refex-enc-{tag}"), format!("refex-sig-{tag}")];
    let doc = json!({ "keys": [
        generate_p256(&kids[0], KeyUse::Enc).map_err(|e| failed(&gateway_jwks, e.to_string()))?,
        generate_p256(&kids[1], KeyUse::Sig).map_err(|e| failed(&gateway_jwks, e.to_string()))?,
    ]});
    let storage = StorageKey::generate_base64().map_err(|e| failed(&storage_key, e.to_string()))?;
    let subject = StorageKey::generate_base64().map_err(|e| failed(&subject_key, e.to_string()))?;
    let storage_key_id = StorageKey::from_base64(&storage)
        .map_err(|e| failed(&storage_key, e.to_string()))?
        .id()
        .to_owned();
    let mut jwks = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    jwks.push(b'\n');
    write(&gateway_jwks, &jwks)?;
    write(&storage_key, format!("{storage}\n").as_bytes())?;
    write(&subject_key, format!("{subject}\n").as_bytes())?;
    Ok(Provisioned {
        gateway_jwks,
        storage_key,
        subject_key,
        kids,
        storage_key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_loadable_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let done = init_keys(&keys).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for p in [&done.gateway_jwks, &done.storage_key, &done.subject_key] {
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o077,
                0
            );
        }
        let set = crate::envelope::keys::KeySet::load_private(&done.gateway_jwks).unwrap();
        assert!(set.has(KeyUse::Enc) && set.has(KeyUse::Sig));
        StorageKey::load(&done.storage_key).unwrap();
        crate::subject::SubjectKey::load(&done.subject_key).unwrap();
        assert!(matches!(init_keys(&keys), Err(ProvisionError::Exists(_))));
        let shown = done.to_string();
        let secret = std::fs::read_to_string(&done.storage_key).unwrap();
        assert!(!shown.contains(secret.trim()), "keys are never printed");
    }
}
