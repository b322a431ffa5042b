//! Hosted partners: organisations without a case system (a small charity) whose
//! delivery-decryption and referral-signing keys the gateway holds on their behalf, so their
//! people can read deliveries and compose referrals in the console with their personal
//! certificates. Opt-in per partner file (`hosted = true`); stated in the partner file, the
//! partner guide and every disclosure record of that partner. A partner that is not hosted
//! keeps its own keys, and its deliveries stay ciphertext the gateway cannot read.
//!
//! The keys are a private JWKS sealed under the storage key ([`seal_keys`]), bound to the
//! partner's id so one partner's file cannot stand in for another's; their public halves are
//! the partner's `jwks` as for any partner.
//!
//! Reading ([`open_delivery`]) goes through the store's fetch like a partner system's (the
//! first read marks it delivered) and records a `consulted` event naming the person before
//! the content is shown. Composing ([`submit`]) signs the claims with the partner's key and
//! encrypts them to the gateway, then takes exactly the intake path of `POST /v1/referrals`:
//! the person is recorded as the submitter, an override is held for the partner's lead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::event::{self as ev, ActorRef, AuditEvent, AuditRecord, Consultation};
use crate::envelope::at_rest::StorageKey;
use crate::envelope::keys::{KeySet, KeyUse, generate_p256, public_document};
use crate::envelope::referral::partner;
use crate::envelope::sealed::Sealed;
use crate::identity::{PartnerId, Principal};
use crate::ids::{DeliveryId, ReferralId};
use crate::runtime::Runtime;
use crate::store::StoreError;
use crate::submit::{SubmitError, Submitted};

/// What the sealed file says it is, so a file sealed for another use is refused.
const PURPOSE: &str = "refex-hosted-partner-keys-v1";

/// Why hosted keys or a hosted read failed.
#[derive(Debug, thiserror::Error)]
pub enum HostedError {
    /// The sealed key file cannot be read.
    #[error("hosted keys {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Keys could not be generated or sealed.
    #[error("hosted keys: {0}")]
    Keys(String),
    /// The file would be overwritten.
    #[error("{0} exists: hosted keys are never overwritten (move it aside to replace it)")]
    Exists(PathBuf),
    /// The partner's keys are not held by the gateway.
    #[error("the gateway does not hold this organisation's keys")]
    NotHosted,
    /// No such delivery in the partner's inbox (or no longer: acknowledged, withdrawn).
    #[error("not found")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A delivery could not be opened with the partner's key (a gateway fault).
    #[error("the delivery could not be opened with the organisation's key")]
    Unreadable,
}

#[derive(Serialize, Deserialize)]
struct SealedKeys {
    purpose: String,
    partner: String,
    keys: Value,
}

/// Fresh keys for a hosted partner: an `enc` and a `sig` P-256 key (a private JWKS).
pub fn generate(partner: &PartnerId) -> Result<Value, HostedError> {
    let tag = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let key = |kid: String, key_use| {
        generate_p256(&kid, key_use).map_err(|e| HostedError::Keys(e.to_string()))
    };
    Ok(json!({ "keys": [
        key(format!("{partner}-hosted-enc-{tag}"), KeyUse::Enc)?,
        key(format!("{partner}-hosted-sig-{tag}"), KeyUse::Sig)?,
    ]}))
}

/// Seals a private JWKS for `partner` under the storage key.
pub fn seal_keys(
    partner: &PartnerId,
    private: &Value,
    storage_key: &StorageKey,
) -> Result<String, HostedError> {
    let doc = SealedKeys {
        purpose: PURPOSE.into(),
        partner: partner.to_string(),
        keys: private.clone(),
    };
    let bytes = serde_json::to_vec(&doc).map_err(|e| HostedError::Keys(e.to_string()))?;
    storage_key
        .seal(&bytes)
        .map(Sealed::into_string)
        .map_err(|e| HostedError::Keys(e.to_string()))
}

/// Opens `path` (written by [`seal_keys`]) for `partner`.
pub fn open_keys(
    path: &Path,
    partner: &PartnerId,
    storage_key: &StorageKey,
) -> Result<KeySet, HostedError> {
    let bad = |reason: String| HostedError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let sealed = Sealed::parse(text.trim().to_owned())
        .map_err(|_| bad("is not a sealed key file (a compact JWE)".into()))?;
    let plain = storage_key.open(&sealed).map_err(|_| {
        bad(
            "does not open with the storage key in force (sealed under another key, or altered)"
                .into(),
        )
    })?;
    let doc: SealedKeys =
        serde_json::from_slice(&plain).map_err(|_| bad("is not a hosted key file".into()))?;
    if doc.purpose != PURPOSE {
        return Err(bad("is not a hosted key file".into()));
    }
    if doc.partner != partner.as_str() {
        return Err(bad(format!(
            "holds the keys of {}, not of {partner}",
            doc.partner
        )));
    }
    let bytes = serde_json::to_vec(&doc.keys).map_err(|e| bad(e.to_string()))?;
    let keys = KeySet::parse_private(&bytes, &path.display().to_string())
        .map_err(|e| bad(e.to_string()))?;
    for key_use in [KeyUse::Enc, KeyUse::Sig] {
        if !keys.has(key_use) {
            return Err(bad(format!("has no {} key", key_use.as_str())));
        }
    }
    Ok(keys)
}

/// Writes a hosted partner's keys: the sealed private keys to `sealed` (mode 0600) and
/// their public halves to `public` (the partner's `jwks`); refuses to overwrite either.
/// Returns the key ids written.
pub fn write_new(
    partner: &PartnerId,
    private: &Value,
    sealed: &Path,
    public: &Path,
    storage_key: &StorageKey,
) -> Result<Vec<String>, HostedError> {
    if sealed == public {
        return Err(HostedError::File {
            path: sealed.to_owned(),
            reason: "hosted_keys and jwks name the same file: the private keys need their own"
                .into(),
        });
    }
    for p in [sealed, public] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(HostedError::Exists(p.to_owned()));
        }
    }
    let text = seal_keys(partner, private, storage_key)?;
    let public_doc = public_document(private).map_err(|e| HostedError::File {
        path: public.to_owned(),
        reason: e.to_string(),
    })?;
    let write = |path: &Path, bytes: &[u8], secret: bool| {
        crate::files::write_new(path, bytes, secret).map_err(|e| HostedError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    };
    write(sealed, format!("{text}\n").as_bytes(), true)?;
    let mut json = serde_json::to_vec_pretty(&public_doc).unwrap_or_default();
    json.push(b'\n');
    write(public, &json, false)?;
    Ok(public_doc["keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// What `refex keys hosted` wrote.
#[derive(Debug)]
pub struct Onboarded {
    /// The partner.
    pub partner: PartnerId,
    /// The sealed private keys.
    pub sealed: PathBuf,
    /// The public JWKS.
    pub public: PathBuf,
    /// The key ids.
    pub kids: Vec<String>,
}

impl std::fmt::Display for Onboarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "hosted keys for {} written:", self.partner)?;
        writeln!(
            f,
            "  {} (private, sealed under the storage key; back it up with the storage key)",
            self.sealed.display()
        )?;
        writeln!(
            f,
            "  {} (public: the partner's jwks)",
            self.public.display()
        )?;
        writeln!(f, "  key ids: {}", self.kids.join(", "))?;
        write!(
            f,
            "reload every gateway (SIGHUP or POST /admin/reload) to put them in force"
        )
    }
}

/// Generates and writes the keys of the hosted partner `partner`, at the paths its partner
/// file names, sealed under the storage key the settings name.
pub fn onboard(
    settings: &crate::config::settings::Settings,
    partner: &PartnerId,
) -> Result<Onboarded, HostedError> {
    let file_path = settings.partners_dir.join(format!("{partner}.toml"));
    let bad = |reason: String| HostedError::File {
        path: file_path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&file_path).map_err(|e| bad(e.to_string()))?;
    let file: crate::config::partners::PartnerFile =
        toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let base = settings
        .partners_dir
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let (Some(sealed), Some(public), true) = (&file.hosted_keys, &file.jwks, file.hosted) else {
        return Err(bad(
            "set hosted = true, hosted_keys = \"<path>\" and jwks = \"<path>\" in the partner file first"
                .into(),
        ));
    };
    let resolve = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_owned()
        }
    };
    let (sealed, public) = (resolve(sealed), resolve(public));
    let key_path = settings.pki().storage_key;
    let storage_key = StorageKey::load(&key_path).map_err(|e| HostedError::File {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let private = generate(partner)?;
    let kids = write_new(partner, &private, &sealed, &public, &storage_key)?;
    Ok(Onboarded {
        partner: partner.clone(),
        sealed,
        public,
        kids,
    })
}

fn hosted_keys(rt: &Runtime, partner: &PartnerId) -> Result<Arc<KeySet>, HostedError> {
    rt.snapshot()
        .config
        .policy
        .partners
        .get(partner)
        .and_then(|p| p.hosted.clone())
        .ok_or(HostedError::NotHosted)
}

/// A delivery opened for a person of a hosted recipient.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The delivery.
    pub id: DeliveryId,
    /// The delivery payload as the gateway signed it (`delivery` member and all).
    pub claims: Value,
}

/// Opens a delivery of the caller's (hosted) organisation for the caller to read: the sealed
/// copy is decrypted with the organisation's key and the gateway's signature verified first
/// (a copy that does not open is a gateway fault and leaves the delivery as it was); then it
/// is fetched through the store (the first read marks it delivered, `fetched` by the person)
/// and a `consulted` event naming the person is recorded. Nothing is shown unless both were.
pub async fn open_delivery(
    rt: &Runtime,
    caller: &Principal,
    id: &DeliveryId,
) -> Result<Opened, HostedError> {
    let keys = hosted_keys(rt, &caller.partner)?;
    let at = rt.clock.unix_time();
    let actor = ActorRef::from(caller);
    let sealed = match rt.store.peek_delivery(&caller.partner, id).await? {
        Some((status, Some(sealed))) if status.in_inbox() => sealed,
        _ => return Err(HostedError::NotFound),
    };
    let gateway = rt.snapshot().config.gateway_keys.clone();
    let plain =
        partner::unwrap(sealed.as_str(), &keys, &gateway).map_err(|_| HostedError::Unreadable)?;
    let claims: Value = serde_json::from_slice(&plain).map_err(|_| HostedError::Unreadable)?;
    let referral = claims["delivery"]["referral_id"]
        .as_str()
        .and_then(|r| ReferralId::parse(r).ok())
        .ok_or(HostedError::Unreadable)?;
    // It may have been withdrawn or expired since the peek: the fetch says.
    rt.store
        .fetch_delivery(&caller.partner, id, at, &actor)
        .await?
        .ok_or(HostedError::NotFound)?;
    let event = AuditRecord::new(
        at,
        Some(actor),
        AuditEvent::Consulted(ev::Consulted {
            what: Consultation::Delivery,
            previews: vec![],
            matches: None,
        }),
    )
    .about(&referral)
    .delivery(id);
    rt.store.record_event(&event).await?;
    Ok(Opened {
        id: id.clone(),
        claims,
    })
}

/// Submits a referral composed in the console by a person of a hosted organisation: the
/// claims are signed with the organisation's key, encrypted to the gateway and taken through
/// exactly the intake path of `POST /v1/referrals`.
pub async fn submit(
    rt: &Arc<Runtime>,
    caller: &Principal,
    claims: &Value,
) -> Result<Submitted, ComposeError> {
    let keys = hosted_keys(rt, &caller.partner).map_err(ComposeError::Hosted)?;
    let gateway = rt.snapshot().config.gateway_keys.clone();
    let body = partner::wrap(claims.to_string().as_bytes(), &keys, &gateway)
        .map_err(|_| ComposeError::Hosted(HostedError::Unreadable))?;
    crate::submit::submit(rt, caller, body.into_bytes())
        .await
        .map_err(ComposeError::Submit)
}

/// Why a composed referral was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The organisation is not hosted, or its keys failed.
    #[error(transparent)]
    Hosted(HostedError),
    /// Intake refused it (or the store failed), as for any submission.
    #[error(transparent)]
    Submit(SubmitError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> StorageKey {
        StorageKey::from_base64(&StorageKey::generate_base64().unwrap()).unwrap()
    }

    #[test]
    fn sealed_keys_open_only_for_their_partner_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let imara: PartnerId = "imara".parse().unwrap();
        let key = storage();
        let private = generate(&imara).unwrap();
        let (sealed, public) = (dir.path().join("hosted.keys"), dir.path().join("jwks.json"));
        let kids = write_new(&imara, &private, &sealed, &public, &key).unwrap();
        assert_eq!(kids.len(), 2);
        let keys = open_keys(&sealed, &imara, &key).unwrap();
        assert!(keys.has(KeyUse::Enc) && keys.has(KeyUse::Sig));
        let other: PartnerId = "empower-cic".parse().unwrap();
        let e = open_keys(&sealed, &other, &key).unwrap_err().to_string();
        assert!(e.contains("holds the keys of imara"), "{e}");
        assert!(open_keys(&sealed, &imara, &storage()).is_err());
        assert!(matches!(
            write_new(&imara, &private, &sealed, &public, &key),
            Err(HostedError::Exists(_))
        ));
        let text = std::fs::read_to_string(&sealed).unwrap();
        assert!(
            !text.contains("\"d\""),
            "the private key is not readable at rest"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&sealed).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "sealed keys are private to the gateway's user"
        );
    }
}
