//! `partners/<id>.toml`: one file per partner organisation, its systems and people with the
//! certificates that identify them, its public JWKs, inbox retention and rate quota.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::envelope::keys::KeySet;
use crate::identity::{PartnerId, PartnerKind, PersonId, Role, SystemId};

/// A partner file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerFile {
    /// Display name.
    pub name: String,
    /// Organisation kind; selects the views it receives.
    pub kind: PartnerKind,
    /// Statutory body or voluntary sector.
    pub sector: Sector,
    /// A competent authority for DPA 2018 Part 3 (police, probation, courts' law-enforcement
    /// functions): only such a sender's agreements may name a `dpa2018-part3` basis.
    #[serde(default)]
    pub competent_authority: bool,
    /// Who to contact about this partner's connection.
    pub contact: String,
    /// How long unacknowledged deliveries wait in its inbox (default 30 days).
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub inbox_retention: Duration,
    /// Request rate quota across the partner's systems.
    #[serde(default)]
    pub rate_quota: RateQuota,
    /// Request rate quota of each of the partner's people, apart from the systems' (so one
    /// person's certificate cannot use up the case system's quota, nor the reverse).
    #[serde(default = "RateQuota::person")]
    pub person_rate_quota: RateQuota,
    /// Its public JWK set (`enc` for deliveries to it, `sig` for its referrals).
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// The gateway holds this partner's keys and its people use the console (a partner
    /// without a case system). Stated in every disclosure record of the partner.
    #[serde(default)]
    pub hosted: bool,
    /// For a hosted partner: its private keys, sealed under the storage key (`refex keys
    /// hosted` writes them).
    #[serde(default)]
    pub hosted_keys: Option<PathBuf>,
    /// Where its designated safeguarding leads are told that a referral waits for them.
    #[serde(default)]
    pub notify: Option<NotifyFile>,
    /// Its systems (client applications).
    #[serde(default)]
    pub systems: Vec<SystemFile>,
    /// Its named people.
    #[serde(default)]
    pub people: Vec<PersonFile>,
}

/// Statutory body (police, local authority, NHS, court, …) or voluntary-sector organisation.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Sector {
    /// A statutory body.
    Statutory,
    /// A charity, community interest company or other voluntary-sector service.
    Voluntary,
}

/// Requests per minute with a burst allowance.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    /// Sustained requests per minute across the whole partner.
    pub per_minute: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl RateQuota {
    /// 600/min with a burst of 60 for each person: a lead working a queue in the console
    /// makes a request every few seconds; this leaves room for a busy morning and none for a
    /// script.
    pub fn person() -> Self {
        Self {
            per_minute: 600,
            burst: 60,
        }
    }
}

impl Default for RateQuota {
    /// 3000/min with a burst of 200: a receiving system draining a backlog makes about three
    /// requests per delivery (list, fetch, ack), so fifty a second lets it clear thousands in
    /// a minute or two, while still bounding what a runaway client can do.
    fn default() -> Self {
        Self {
            per_minute: 3000,
            burst: 200,
        }
    }
}

/// One certificate of a holder, as named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateRef {
    /// By fingerprint.
    Fingerprint(String),
    /// By PEM file.
    File(PathBuf),
}

/// Every certificate a system or person entry names, in order: one certificate each
/// overlaps with the one it replaces during a renewal, or serves a second device; all map to
/// the same principal.
fn certificate_refs(
    fingerprint: &Option<String>,
    fingerprints: &[String],
    certificate: &Option<PathBuf>,
    certificates: &[PathBuf],
) -> Vec<CertificateRef> {
    fingerprint
        .iter()
        .chain(fingerprints)
        .cloned()
        .map(CertificateRef::Fingerprint)
        .chain(
            certificate
                .iter()
                .chain(certificates)
                .cloned()
                .map(CertificateRef::File),
        )
        .collect()
}

impl SystemFile {
    /// Every certificate named.
    pub fn certificate_refs(&self) -> Vec<CertificateRef> {
        certificate_refs(
            &self.fingerprint,
            &self.fingerprints,
            &self.certificate,
            &self.certificates,
        )
    }
}

impl PersonFile {
    /// Every certificate named.
    pub fn certificate_refs(&self) -> Vec<CertificateRef> {
        certificate_refs(
            &self.fingerprint,
            &self.fingerprints,
            &self.certificate,
            &self.certificates,
        )
    }
}

/// A partner system (a client application).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemFile {
    /// The system's id within the partner.
    pub id: SystemId,
    /// SHA-256 fingerprint of the DER certificate, lower-case hex.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// More fingerprints (a renewal overlapping the old certificate, a second device).
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// A PEM certificate file to fingerprint instead (dev).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// More certificate files.
    #[serde(default)]
    pub certificates: Vec<PathBuf>,
}

/// A named person, with roles and certificate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonFile {
    /// The person's id within the partner (a staff identifier, not a name).
    pub id: PersonId,
    /// Display name for the console.
    pub name: String,
    /// What the person may do.
    pub roles: Vec<Role>,
    /// SHA-256 fingerprint of the DER certificate, lower-case hex.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// More fingerprints (a renewal overlapping the old certificate, a second device).
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// A PEM certificate file to fingerprint instead (dev).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// More certificate files.
    #[serde(default)]
    pub certificates: Vec<PathBuf>,
}

/// A validated partner.
#[derive(Clone, Debug)]
pub struct Partner {
    /// Its id (the file stem).
    pub id: PartnerId,
    /// Display name.
    pub name: String,
    /// Organisation kind.
    pub kind: PartnerKind,
    /// Sector.
    pub sector: Sector,
    /// A competent authority for DPA 2018 Part 3.
    pub competent_authority: bool,
    /// Contact.
    pub contact: String,
    /// Inbox retention.
    pub inbox_retention: Duration,
    /// Rate quota of the partner's systems (before dividing among replicas).
    pub rate_quota: RateQuota,
    /// Rate quota of each of its people (before dividing among replicas).
    pub person_rate_quota: RateQuota,
    /// Public keys, where registered.
    pub keys: Option<KeySet>,
    /// The file the keys came from, for messages.
    pub jwks_path: Option<PathBuf>,
    /// For a hosted partner, its private keys (the gateway holds them on its behalf).
    pub hosted: Option<std::sync::Arc<KeySet>>,
    /// Where its leads are notified (empty: nowhere).
    pub notify: NotifyFile,
    /// Systems.
    pub systems: Vec<SystemId>,
    /// People.
    pub people: Vec<Person>,
}

/// `[notify]` in a partner file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// E-mail addresses (a team mailbox of the leads, typically).
    #[serde(default)]
    pub email: Vec<String>,
    /// A webhook the partner runs (HTTPS in production): `POST`ed a small JSON notice.
    #[serde(default)]
    pub webhook: Option<String>,
}

/// A validated person.
#[derive(Clone, Debug)]
pub struct Person {
    /// Id within the partner.
    pub id: PersonId,
    /// Display name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
}

impl Partner {
    /// Whether any of the partner's people holds `role`.
    pub fn has_person_with(&self, role: Role) -> bool {
        self.people.iter().any(|p| p.roles.contains(&role))
    }
}

/// Lists `dir/*.toml` except the agreements file, sorted, with their stems.
pub fn partner_files(dir: &Path, agreements: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "toml") || path == agreements {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            out.push((path.clone(), stem.to_owned()));
        }
    }
    out.sort();
    Ok(out)
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
