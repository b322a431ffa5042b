//! The development PKI (`refex dev-pki`): a throwaway root CA with an empty CRL, the
//! gateway's server certificate and JOSE keys, and for every partner in `partners/` a system
//! client certificate, its people's certificates and its JOSE keys, in the layout the wire
//! contract fixes. Everything it writes says DEVELOPMENT ONLY; none of it is committed.
//!
//! [`DevCa`] is also how tests issue extra certificates (expired, revoked, unmapped) from the
//! same CA.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::config::partners::{PartnerFile, partner_files};
use crate::envelope::at_rest::StorageKey;
use crate::envelope::keys::{KeyUse, generate_p256, public_document};

/// Marker placed in every subject name and in the directory's README.
pub const DEV_ONLY: &str = "DEVELOPMENT ONLY";

/// How long dev certificates and the dev CRL stay valid: long enough never to trip a
/// developer, short enough that a leaked dev PKI dies on its own.
const DEV_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the dev PKI could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// A dev PKI is already there and `--force` was not given.
    #[error("{0} already holds a dev PKI (use --force to replace it)")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A partner file could not be parsed.
    #[error("{path}: {reason}")]
    Partner {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] crate::ca::CaError),
    /// Key generation failed.
    #[error("key generation: {0}")]
    Key(#[from] crate::envelope::keys::KeyError),
    /// Storage key generation failed.
    #[error("storage key generation: {0}")]
    Storage(String),
    /// An offline command found no dev PKI, and only `refex serve` (development mode) or
    /// `refex dev-pki` may generate one.
    #[error("no development PKI in {}: start the gateway once (`refex serve`) or run `refex dev-pki`; offline commands never generate keys", .0.display())]
    Missing(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevPkiError + '_ {
    move |source| DevPkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What was written.
#[derive(Debug)]
pub struct Summary {
    /// The directory.
    pub dir: PathBuf,
    /// Partners that got certificates and keys.
    pub partners: Vec<String>,
    /// People's certificates written.
    pub people: usize,
}

/// Whether `dir` already holds a dev PKI.
pub fn exists(dir: &Path) -> bool {
    dir.join("ca.pem").exists()
}

/// Adds the gateway's secrets (`gateway/storage.key`, `gateway/subject.key`) to a dev PKI
/// that lacks them (one made by an older refex); `true` if it wrote any.
pub fn ensure_storage_key(dir: &Path) -> Result<bool, DevPkiError> {
    let mut wrote = false;
    for name in ["storage.key", "subject.key"] {
        let path = dir.join("gateway").join(name);
        if path.exists() {
            continue;
        }
        let key = StorageKey::generate_base64().map_err(|e| DevPkiError::Storage(e.to_string()))?;
        write(&path, format!("{key}\n").as_bytes(), true)?;
        wrote = true;
    }
    Ok(wrote)
}

/// Writes the dev PKI for every partner in `partners_dir` to `dir`. The whole tree is built
/// beside `dir` and moved into place at the end, so an interrupted run leaves no half PKI.
pub fn generate(
    dir: &Path,
    partners_dir: &Path,
    agreements: &Path,
    force: bool,
    now: SystemTime,
) -> Result<Summary, DevPkiError> {
    if exists(dir) && !force {
        return Err(DevPkiError::Exists(dir.to_owned()));
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let staging = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("dev"),
        std::process::id()
    ));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    let summary = write_tree(&staging, partners_dir, agreements, now)?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    fs::rename(&staging, dir).map_err(io_err(dir))?;
    Ok(Summary {
        dir: dir.to_owned(),
        ..summary
    })
}

fn write_tree(
    dir: &Path,
    partners_dir: &Path,
    agreements: &Path,
    now: SystemTime,
) -> Result<Summary, DevPkiError> {
    let ca = DevCa::create(now)?;
    write(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    write(&dir.join("ca.key"), ca.key_pem().as_bytes(), true)?;
    write(&dir.join("crl.pem"), ca.crl(&[], now)?.as_bytes(), false)?;
    write(
        &dir.join("README.txt"),
        format!(
            "{DEV_ONLY}: throwaway PKI generated by `refex dev-pki`.\n\
             Never use these certificates or keys for real referrals.\n"
        )
        .as_bytes(),
        false,
    )?;

    let gw = dir.join("gateway");
    let server = ca.issue(&IssueRequest::server(now))?;
    write(&gw.join("tls.pem"), server.cert_pem.as_bytes(), false)?;
    write(&gw.join("tls.key"), server.key_pem.as_bytes(), true)?;
    write_json(&gw.join("jwks.private.json"), &key_pair_doc("refex")?, true)?;
    ensure_storage_key(dir)?;

    let files = partner_files(partners_dir, agreements).map_err(io_err(partners_dir))?;
    let mut partners = Vec::new();
    let mut people = 0;
    for (path, id) in files {
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let file: PartnerFile = toml::from_str(&text).map_err(|e| DevPkiError::Partner {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let pdir = dir.join("partners").join(&id);
        let system = ca.issue(&IssueRequest::client(
            format!("{id} system ({DEV_ONLY})"),
            &file.name,
            now,
        ))?;
        write(&pdir.join("system.pem"), system.cert_pem.as_bytes(), false)?;
        write(&pdir.join("system.key"), system.key_pem.as_bytes(), true)?;
        let private = key_pair_doc(&id)?;
        write_json(&pdir.join("jwks.private.json"), &private, true)?;
        if file.hosted {
            // The gateway's copy of a hosted partner's keys, sealed under the dev storage key
            // (the plain copy above stays for tests that play the partner's system).
            let storage = StorageKey::load(&gw.join("storage.key"))
                .map_err(|e| DevPkiError::Storage(e.to_string()))?;
            let partner: crate::identity::PartnerId =
                id.parse()
                    .map_err(|e: crate::identity::IdError| DevPkiError::Partner {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
            let sealed = crate::hosted::seal_keys(&partner, &private, &storage)
                .map_err(|e| DevPkiError::Storage(e.to_string()))?;
            write(
                &pdir.join("hosted.keys"),
                format!("{sealed}\n").as_bytes(),
                true,
            )?;
        }
        write_json(&pdir.join("jwks.json"), &public_document(&private)?, false)?;
        for person in &file.people {
            // The person's own certificate, and one more for each further certificate file
            // the partner file names (a second device, a renewal), by that file's name.
            let extra = person.certificates.iter().filter_map(|p| p.file_stem());
            let stems = std::iter::once(std::ffi::OsStr::new(person.id.as_str())).chain(extra);
            for stem in stems {
                let cert = ca.issue(&IssueRequest::client(
                    format!("{} of {id} ({DEV_ONLY})", stem.to_string_lossy()),
                    &file.name,
                    now,
                ))?;
                let base = pdir.join("people").join(stem);
                write(&base.with_extension("pem"), cert.cert_pem.as_bytes(), false)?;
                write(&base.with_extension("key"), cert.key_pem.as_bytes(), true)?;
            }
            people += 1;
        }
        partners.push(id);
    }
    Ok(Summary {
        dir: dir.to_owned(),
        partners,
        people,
    })
}

/// An `enc` and a `sig` P-256 key for `owner`, with distinct `kid`s.
fn key_pair_doc(owner: &str) -> Result<serde_json::Value, DevPkiError> {
    let tag = &uuid::Uuid::now_v7().simple().to_string()[20..];
    Ok(json!({ "keys": [
        generate_p256(&format!("{owner}-enc-{tag}"), KeyUse::Enc)?,
        generate_p256(&format!("{owner}-sig-{tag}"), KeyUse::Sig)?,
    ]}))
}

fn write_json(path: &Path, value: &serde_json::Value, secret: bool) -> Result<(), DevPkiError> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    write(path, &text, secret)
}

/// Writes a file, creating parents; secrets are created with mode 0600.
fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), DevPkiError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}

pub use crate::ca::{IssueRequest, Issued};

impl IssueRequest {
    /// The gateway's development server certificate: localhost, 127.0.0.1 and ::1.
    pub fn server(now: SystemTime) -> Self {
        Self {
            common_name: format!("refex gateway ({DEV_ONLY})"),
            organisation: "refex".into(),
            subject_alt_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            server: true,
            not_before: now - Duration::from_secs(3600),
            not_after: now + DEV_VALIDITY,
        }
    }

    /// A client certificate valid from an hour ago for a year.
    pub fn client(common_name: String, organisation: &str, now: SystemTime) -> Self {
        Self {
            common_name,
            organisation: organisation.to_owned(),
            subject_alt_names: Vec::new(),
            server: false,
            not_before: now - Duration::from_secs(3600),
            not_after: now + DEV_VALIDITY,
        }
    }
}

/// The dev root CA: the partnership CA ([`crate::ca::Authority`]) with a throwaway name,
/// able to issue certificates and CRLs.
pub struct DevCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    authority: crate::ca::Authority,
}

impl DevCa {
    /// A new root CA for the dev PKI.
    pub fn create(now: SystemTime) -> Result<Self, DevPkiError> {
        Self::create_named("refex dev root CA", now)
    }

    /// A new root CA whose common name starts with `name`.
    pub fn create_named(name: &str, now: SystemTime) -> Result<Self, DevPkiError> {
        let authority = crate::ca::Authority::create(
            &format!("{name} ({DEV_ONLY})"),
            "refex",
            now - Duration::from_secs(3600),
            now + 2 * DEV_VALIDITY,
        )?;
        Ok(Self {
            cert_pem: authority.cert_pem.clone(),
            authority,
        })
    }

    /// Loads the CA written by [`generate`] from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DevPkiError> {
        let authority = crate::ca::Authority::load(&dir.join("ca.pem"), &dir.join("ca.key"))?;
        Ok(Self {
            cert_pem: authority.cert_pem.clone(),
            authority,
        })
    }

    /// Issues a certificate signed by this CA.
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued, DevPkiError> {
        Ok(self.authority.issue(req)?)
    }

    /// A CRL listing `revoked` serial numbers, valid from an hour ago for [`DEV_VALIDITY`].
    pub fn crl(&self, revoked: &[Vec<u8>], now: SystemTime) -> Result<String, DevPkiError> {
        self.crl_until(revoked, now, now + DEV_VALIDITY)
    }

    /// A CRL listing `revoked` serial numbers, issued an hour before `now`, whose
    /// `nextUpdate` is `next_update` (tests of a CRL falling due).
    pub fn crl_until(
        &self,
        revoked: &[Vec<u8>],
        now: SystemTime,
        next_update: SystemTime,
    ) -> Result<String, DevPkiError> {
        let at = (now - Duration::from_secs(60))
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let revoked: Vec<crate::ca::Revocation> = revoked
            .iter()
            .map(|serial| crate::ca::Revocation {
                serial: hex::encode(serial),
                at,
                reason: crate::ca::Reason::KeyCompromise,
            })
            .collect();
        Ok(self.authority.crl(
            &revoked,
            now - Duration::from_secs(3600),
            next_update,
            at.max(1),
        )?)
    }

    /// The CA's private key, PEM (only for writing `ca.key`).
    pub fn key_pem(&self) -> String {
        self.authority.key_pem()
    }
}
