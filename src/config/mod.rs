//! Configuration: `refex.toml` with `REFEX_*` overrides, the `partners/` directory, the
//! information sharing agreements and `schemas/`, loaded and cross-checked as one immutable
//! [`Config`] snapshot. Any inconsistency refuses the whole snapshot, with every problem
//! listed at once, so a gateway never starts (or reloads into) a half-valid configuration.

pub use refex_core::{agreements, partners};
pub mod safety;
pub mod settings;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::envelope::at_rest::StorageKey;
use crate::envelope::keys::{KeySet, KeyUse};
use crate::identity::{Actor, Custody, Fingerprint, PartnerId, Principal, Role};
use crate::schema::SchemaSet;
use crate::subject::SubjectKey;
use crate::tls;

use agreements::{Agreement, AgreementsFile, Condition, Review};
use partners::{Partner, PartnerFile, Person, Sector};
use settings::Settings;

/// Every problem found in a configuration, in the order found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, each naming its file.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        let plural = if n == 1 { "" } else { "s" };
        writeln!(f, "configuration refused ({n} problem{plural}):")?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// Values from the command line, which win over the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--store-url`.
    pub store_url: Option<String>,
}

/// Loads `refex.toml` (optional when absent at its default place), then `REFEX_*`
/// environment variables, then `overrides`; resolves relative paths against the file's
/// The `REFEX_*` environment variables that are settings: not the command line's own
/// (`REFEX_CONFIG_FILE`) nor the test suite's (`REFEX_TEST_*`, `REFEX_TESTDATA`), which would
/// otherwise be read as unknown settings and refuse every configuration.
fn setting_variables(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(k, _)| {
        k.starts_with("REFEX_") && k != "REFEX_CONFIG_FILE" && !k.starts_with("REFEX_TEST")
    })
    .collect()
}

/// directory.
pub fn load_settings(
    file: &Path,
    required: bool,
    overrides: &Overrides,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(
            config::File::from(file)
                .format(config::FileFormat::Toml)
                .required(required),
        )
        .add_source(
            config::Environment::with_prefix("REFEX")
                .prefix_separator("_")
                .separator("__")
                .source(Some(setting_variables(std::env::vars()))),
        );
    let set = |b: config::ConfigBuilder<_>, key: &str, v: Option<String>| match v {
        Some(v) => b.set_override(key, v),
        None => Ok(b),
    };
    let err = |e: config::ConfigError| ConfigError::one(format!("{}: {e}", file.display()));
    builder = set(builder, "listen", overrides.listen.clone()).map_err(err)?;
    builder = set(builder, "admin_listen", overrides.admin_listen.clone()).map_err(err)?;
    builder = set(
        builder,
        "data_dir",
        overrides.data_dir.as_ref().map(|p| p.display().to_string()),
    )
    .map_err(err)?;
    builder = set(builder, "store_url", overrides.store_url.clone()).map_err(err)?;
    let mut settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(err)?;
    let base = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    settings.resolve_paths(&base);
    if settings.replicas == Some(0) {
        return Err(ConfigError::one("replicas must be at least 1"));
    }
    Ok(settings)
}

/// What the partnership agreed: its partners (with the principals their certificates map
/// to), its information sharing agreements and the schemas. Every decision reads it; none
/// of it is a secret. [`Config::load`] builds it from the project's files;
/// [`Policy::from_toml`] builds it in memory from TOML text, so a pure decision is tested
/// without files or a PKI.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Partners by id.
    pub partners: BTreeMap<PartnerId, Partner>,
    /// The information sharing agreements.
    pub agreements: Vec<Agreement>,
    /// Compiled schemas and views.
    pub schemas: SchemaSet,
    /// Certificate fingerprint → principal.
    pub principals: HashMap<Fingerprint, Principal>,
}

impl Policy {
    /// A policy from partner files' text (`(id, toml)`), the agreements file's text and
    /// compiled schemas, cross-checked exactly as [`Config::load`] checks the files; what a
    /// partner file names (a JWKS, a certificate) is read from `files`.
    pub fn from_toml(
        partners: &[(&str, &str)],
        agreements: &str,
        schemas: SchemaSet,
        files: &InMemoryFiles,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let texts = partners
            .iter()
            .map(|(id, text)| PartnerText {
                shown: format!("partners/{id}.toml"),
                stem: (*id).to_owned(),
                text: Ok((*text).to_owned()),
            })
            .collect();
        let (partners, principals) = partners_from(texts, files, None, &mut problems);
        let agreements = agreements_from_text(agreements, "agreements.toml", &mut problems);
        check_agreements(&agreements, &partners, Some(&schemas), &mut problems);
        if problems.is_empty() {
            Ok(Self {
                partners,
                agreements,
                schemas,
                principals,
            })
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The view of this policy the intake decision reads, for a gateway named `gateway_id`
    /// allowing `iat_skew_seconds` of clock skew.
    pub fn rules<'a>(
        &'a self,
        gateway_id: &'a str,
        iat_skew_seconds: u64,
    ) -> crate::intake::Rules<'a> {
        crate::intake::Rules {
            gateway_id,
            iat_skew_seconds,
            partners: &self.partners,
            agreements: &self.agreements,
        }
    }

    /// The principal a verified certificate maps to, if any.
    pub fn principal(&self, fingerprint: &Fingerprint) -> Option<&Principal> {
        self.principals.get(fingerprint)
    }
}

/// One validated configuration snapshot: the settings, the [`Policy`], and the keys.
#[derive(Debug)]
pub struct Config {
    /// The gateway's settings.
    pub settings: Settings,
    /// Partners, agreements, schemas and principals.
    pub policy: Policy,
    /// The gateway's own keys.
    pub gateway_keys: KeySet,
    /// The key held referrals are encrypted under.
    pub storage_key: StorageKey,
    /// The subject-access HMAC secret.
    pub subject_key: SubjectKey,
    /// What is unsafe but allowed in this mode; logged at start and reload.
    pub warnings: Vec<String>,
}

/// What the listener needs of a loaded configuration: kept apart from [`Config`], which
/// every decision reads, so that no decision can reach a TLS type (`tests/it/tidy.rs`:
/// only `tls` and `server` name rustls).
#[derive(Debug)]
pub struct Transport {
    /// The TLS server configuration.
    pub tls: tls::ServerTls,
    /// Certificates the CRLs revoke (connections verified before a reload are checked
    /// against it and closed).
    pub revoked: tls::Revocations,
    /// The CRLs in force, for warning before one falls due.
    pub crls: Vec<crate::trust::Crl>,
    /// When the server certificate in force expires (Unix seconds), read when it was loaded:
    /// readiness and the metrics describe what the listener serves, never re-read a file.
    pub server_expiry: Option<i64>,
    /// When each client CA's certificate in force expires (Unix seconds), by name.
    pub ca_expiries: Vec<(String, i64)>,
}

/// A configuration loaded and checked whole: the policy and keys, and the transport.
#[derive(Debug)]
pub struct Loaded {
    /// Partners, agreements, schemas, principals, settings and keys.
    pub config: Config,
    /// TLS, revocations and CRLs.
    pub transport: Transport,
}

impl Config {
    /// The view of this snapshot the intake decision reads (`intake::Rules`).
    pub fn rules(&self) -> crate::intake::Rules<'_> {
        self.policy.rules(
            &self.settings.gateway_id,
            self.settings.limits.iat_skew.as_secs(),
        )
    }
}

impl Config {
    /// Loads and cross-checks everything the settings point at, as of now.
    pub fn load(settings: Settings) -> Result<Loaded, ConfigError> {
        Self::load_at(settings, std::time::SystemTime::now())
    }

    /// [`Config::load`] as of `now`: gateway keys whose rotation grace period has ended by
    /// then are left out.
    pub fn load_at(settings: Settings, now: std::time::SystemTime) -> Result<Loaded, ConfigError> {
        let now_unix = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        // A setting production needs is named as missing, and what depends on it is not read
        // (rather than reported as an unreadable empty path); everything else still is, so
        // every problem is listed at once.
        let mut problems = safety::missing_settings(&settings);
        let pki = settings.pki();
        let set = |p: &Path| !p.as_os_str().is_empty();
        // An unreadable CRL is reported by the TLS configuration below.
        let crls = crate::trust::read_crls(&pki.crls).unwrap_or_default();
        let safety::Findings {
            problems: unsafe_files,
            warnings,
        } = safety::check(&settings, &pki, &crls, now);
        problems.extend(unsafe_files);
        let tls = (set(&pki.server_cert) && set(&pki.server_key))
            .then(|| {
                tls::server_tls(&pki)
                    .map_err(|errs| problems.extend(errs.into_iter().map(|e| e.to_string())))
                    .ok()
            })
            .flatten();
        let gateway_keys = set(&pki.gateway_jwks)
            .then(|| {
                load_gateway_keys(&pki.gateway_jwks, now_unix)
                    .map_err(|e| problems.push(e))
                    .ok()
            })
            .flatten();
        let storage_key = set(&pki.storage_key)
            .then(|| {
                StorageKey::load(&pki.storage_key)
                    .map_err(|e| problems.push(e.to_string()))
                    .ok()
            })
            .flatten();
        let subject_key = set(&pki.subject_key)
            .then(|| {
                SubjectKey::load(&pki.subject_key)
                    .map_err(|e| problems.push(e.to_string()))
                    .ok()
            })
            .flatten();
        let schemas = SchemaSet::load(&settings.schemas_dir)
            .map_err(|errs| problems.extend(errs.into_iter().map(|e| e.to_string())))
            .ok();
        let (partners, principals) = load_partners(&settings, storage_key.as_ref(), &mut problems);
        problems.extend(crate::notify::check(
            &settings.notify,
            &partners,
            settings.mode == settings::Mode::Production,
        ));
        let agreements = load_agreements(&settings.agreements, &mut problems);
        check_agreements(&agreements, &partners, schemas.as_ref(), &mut problems);

        match (tls, gateway_keys, storage_key, subject_key, schemas) {
            (
                Some(tls),
                Some(gateway_keys),
                Some(storage_key),
                Some(subject_key),
                Some(schemas),
            ) if problems.is_empty() => Ok(Loaded {
                config: Config {
                    settings,
                    policy: Policy {
                        partners,
                        agreements,
                        schemas,
                        principals,
                    },
                    gateway_keys,
                    storage_key,
                    subject_key,
                    warnings,
                },
                transport: Transport {
                    tls,
                    revoked: tls::Revocations::load(&pki.crls),
                    crls,
                    server_expiry: tls::expiry_of_file(&pki.server_cert),
                    ca_expiries: tls::expiries_of_bundle(&pki.client_ca),
                },
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    /// The principal a verified certificate maps to, if any.
    pub fn principal(&self, fingerprint: &Fingerprint) -> Option<&Principal> {
        self.policy.principals.get(fingerprint)
    }
}

fn load_gateway_keys(path: &Path, now_unix: u64) -> Result<KeySet, String> {
    let keys = KeySet::load_private(path)
        .map_err(|e| format!("gateway keys: {e}"))?
        .without_retired(now_unix);
    keys.require(KeyUse::Enc, path)
        .and_then(|_| keys.require(KeyUse::Sig, path))
        .map_err(|e| format!("gateway keys: {e}"))?;
    Ok(keys)
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_owned()
    }
}

/// Where the files a partner file names (its JWKS, certificates, sealed hosted keys) are
/// read from: the project on disk, or memory.
pub trait PartnerSource {
    /// The public key set at `path`.
    fn public_keys(&self, path: &Path) -> Result<KeySet, String>;
    /// The fingerprint of the certificate at `path`.
    fn fingerprint(&self, path: &Path) -> Result<Fingerprint, String>;
    /// `path` as a file on disk, for what only a file can hold (a hosted partner's sealed
    /// keys, opened with the storage key); `None` where there is no disk.
    fn on_disk(&self, path: &Path) -> Option<PathBuf>;
}

/// The project on disk: paths in partner files are relative to the project root, like every
/// other path in refex.toml (the parent of the partners directory).
struct Disk {
    base: PathBuf,
}

impl PartnerSource for Disk {
    fn public_keys(&self, path: &Path) -> Result<KeySet, String> {
        KeySet::load_public(&resolve(&self.base, path)).map_err(|e| e.to_string())
    }
    fn fingerprint(&self, path: &Path) -> Result<Fingerprint, String> {
        tls::fingerprint_of_file(&resolve(&self.base, path)).map_err(|e| e.to_string())
    }
    fn on_disk(&self, path: &Path) -> Option<PathBuf> {
        Some(resolve(&self.base, path))
    }
}

/// Files held in memory, by the path a partner file names them with (tests).
#[derive(Clone, Debug, Default)]
pub struct InMemoryFiles(BTreeMap<PathBuf, Vec<u8>>);

impl InMemoryFiles {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the file `path` with `bytes`.
    pub fn with(mut self, path: impl Into<PathBuf>, bytes: impl Into<Vec<u8>>) -> Self {
        self.0.insert(path.into(), bytes.into());
        self
    }

    fn read(&self, path: &Path) -> Result<&[u8], String> {
        self.0
            .get(path)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("{}: no such file", path.display()))
    }
}

impl PartnerSource for InMemoryFiles {
    fn public_keys(&self, path: &Path) -> Result<KeySet, String> {
        KeySet::parse_public(self.read(path)?, &path.display().to_string())
            .map_err(|e| e.to_string())
    }
    fn fingerprint(&self, path: &Path) -> Result<Fingerprint, String> {
        tls::fingerprint_of_pem(self.read(path)?, path).map_err(|e| e.to_string())
    }
    fn on_disk(&self, _path: &Path) -> Option<PathBuf> {
        None
    }
}

/// A partner file's text as read, named for messages.
struct PartnerText {
    /// How messages name the file.
    shown: String,
    /// Its stem: the partner's id.
    stem: String,
    /// Its text, or why it could not be read.
    text: Result<String, String>,
}

/// Reads every partner file and builds the fingerprint map.
fn load_partners(
    settings: &Settings,
    storage_key: Option<&StorageKey>,
    problems: &mut Vec<String>,
) -> (
    BTreeMap<PartnerId, Partner>,
    HashMap<Fingerprint, Principal>,
) {
    let disk = Disk {
        base: settings
            .partners_dir
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default(),
    };
    let files = match partners::partner_files(&settings.partners_dir, &settings.agreements) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!(
                "cannot read partners directory {}: {e}",
                settings.partners_dir.display()
            ));
            return (BTreeMap::new(), HashMap::new());
        }
    };
    if files.is_empty() {
        problems.push(format!(
            "no partner files in {}",
            settings.partners_dir.display()
        ));
    }
    let texts = files
        .into_iter()
        .map(|(path, stem)| PartnerText {
            shown: path.display().to_string(),
            stem,
            text: std::fs::read_to_string(&path).map_err(|e| e.to_string()),
        })
        .collect();
    partners_from(texts, &disk, storage_key, problems)
}

/// Partners and the fingerprint map from partner files' text, every problem listed.
fn partners_from(
    texts: Vec<PartnerText>,
    source: &dyn PartnerSource,
    storage_key: Option<&StorageKey>,
    problems: &mut Vec<String>,
) -> (
    BTreeMap<PartnerId, Partner>,
    HashMap<Fingerprint, Principal>,
) {
    let mut partners = BTreeMap::new();
    let mut principals: HashMap<Fingerprint, Principal> = HashMap::new();
    for PartnerText { shown, stem, text } in texts {
        let id: PartnerId = match stem.parse() {
            Ok(id) => id,
            Err(e) => {
                problems.push(format!("{shown}: file name: {e}"));
                continue;
            }
        };
        let file: PartnerFile =
            match text.and_then(|t| toml::from_str(&t).map_err(|e| e.to_string())) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(format!("{shown}: {e}"));
                    continue;
                }
            };
        let keys = file.jwks.as_ref().and_then(|p| {
            source
                .public_keys(p)
                .map_err(|e| problems.push(format!("{shown}: jwks: {e}")))
                .ok()
        });
        let hosted = hosted_keys(&file, &id, source, keys.as_ref(), storage_key)
            .map_err(|e| problems.push(format!("{shown}: {e}")))
            .ok()
            .flatten();
        let mut holders: Vec<(Vec<partners::CertificateRef>, Actor, String)> = Vec::new();
        let mut seen = HashSet::new();
        for s in &file.systems {
            if !seen.insert(format!("system:{}", s.id)) {
                problems.push(format!("{shown}: system {} listed twice", s.id));
            }
            holders.push((
                s.certificate_refs(),
                Actor::System(s.id.clone()),
                format!("system {}", s.id),
            ));
        }
        for p in &file.people {
            if !seen.insert(format!("person:{}", p.id)) {
                problems.push(format!("{shown}: person {} listed twice", p.id));
            }
            if p.roles.is_empty() {
                problems.push(format!("{shown}: person {} has no roles", p.id));
            }
            if p.roles.contains(&Role::Practitioner) && p.roles.contains(&Role::Commissioner) {
                problems.push(format!(
                    "{shown}: person {}: a commissioner sees only aggregates and cannot also be a practitioner acting for the organisation",
                    p.id
                ));
            }
            holders.push((
                p.certificate_refs(),
                Actor::Person {
                    id: p.id.clone(),
                    roles: p.roles.clone(),
                },
                format!("person {}", p.id),
            ));
        }
        for (certs, actor, who) in holders {
            if certs.is_empty() {
                problems.push(format!(
                    "{shown}: {who}: give at least one fingerprint or certificate"
                ));
            }
            for cert in certs {
                let fingerprint = match &cert {
                    partners::CertificateRef::Fingerprint(fp) => {
                        fp.parse::<Fingerprint>().map_err(|e| e.to_string())
                    }
                    partners::CertificateRef::File(path) => source.fingerprint(path),
                };
                let fingerprint = match fingerprint {
                    Ok(f) => f,
                    Err(e) => {
                        problems.push(format!("{shown}: {who}: {e}"));
                        continue;
                    }
                };
                if let Some(other) = principals.get(&fingerprint) {
                    problems.push(format!(
                        "{shown}: {who}: certificate fingerprint {fingerprint} is already used by {other}"
                    ));
                    continue;
                }
                principals.insert(
                    fingerprint,
                    Principal {
                        partner: id.clone(),
                        actor: actor.clone(),
                        fingerprint,
                        custody: if file.hosted {
                            Custody::Gateway
                        } else {
                            Custody::Own
                        },
                    },
                );
            }
        }
        if file.person_rate_quota.per_minute == 0 || file.person_rate_quota.burst == 0 {
            problems.push(format!(
                "{shown}: person_rate_quota values must be at least 1"
            ));
        }
        if file.rate_quota.per_minute == 0 || file.rate_quota.burst == 0 {
            problems.push(format!("{shown}: rate_quota values must be at least 1"));
        }
        partners.insert(
            id.clone(),
            Partner {
                id,
                name: file.name,
                kind: file.kind,
                sector: file.sector,
                competent_authority: file.competent_authority,
                contact: file.contact,
                inbox_retention: file.inbox_retention,
                rate_quota: file.rate_quota,
                person_rate_quota: file.person_rate_quota,
                jwks_path: file.jwks.map(|p| source.on_disk(&p).unwrap_or(p)),
                keys,
                hosted,
                notify: file.notify.clone().unwrap_or_default(),
                systems: file.systems.into_iter().map(|s| s.id).collect(),
                people: file
                    .people
                    .into_iter()
                    .map(|p| Person {
                        id: p.id,
                        name: p.name,
                        roles: p.roles,
                    })
                    .collect(),
            },
        );
    }
    (partners, principals)
}

/// A hosted partner's private keys, opened with the storage key; `None` for a partner that
/// holds its own. Every hosted key must be one its public JWKS lists (the JWKS is what other
/// parties verify and encrypt with).
fn hosted_keys(
    file: &PartnerFile,
    id: &PartnerId,
    source: &dyn PartnerSource,
    public: Option<&KeySet>,
    storage_key: Option<&StorageKey>,
) -> Result<Option<Arc<KeySet>>, String> {
    let path = match (file.hosted, &file.hosted_keys) {
        (false, None) => return Ok(None),
        (false, Some(_)) => return Err("hosted_keys is set, but hosted is not true".into()),
        (true, None) => {
            return Err(format!(
                "hosted = true needs hosted_keys (write them with `refex keys hosted --partner {id}`)"
            ));
        }
        (true, Some(p)) => source
            .on_disk(p)
            .ok_or("a hosted partner's sealed keys are a file: load this policy from disk")?,
    };
    // A missing storage key is reported on its own.
    let Some(storage_key) = storage_key else {
        return Ok(None);
    };
    let keys = crate::hosted::open_keys(&path, id, storage_key).map_err(|e| e.to_string())?;
    let public = public.ok_or("hosted = true needs jwks (the public half of the hosted keys)")?;
    for (key_use, kid) in keys.kids() {
        if public.find(kid, key_use).is_none() {
            return Err(format!(
                "hosted key {kid} ({}) is not in the partner's jwks",
                key_use.as_str()
            ));
        }
    }
    Ok(Some(Arc::new(keys)))
}

fn load_agreements(path: &Path, problems: &mut Vec<String>) -> Vec<Agreement> {
    match std::fs::read_to_string(path) {
        Ok(text) => agreements_from_text(&text, &path.display().to_string(), problems),
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            Vec::new()
        }
    }
}

/// The agreements in an agreements file's text (`shown` names it in messages).
fn agreements_from_text(text: &str, shown: &str, problems: &mut Vec<String>) -> Vec<Agreement> {
    match toml::from_str::<AgreementsFile>(text).map_err(|e| e.to_string()) {
        Ok(f) => f
            .agreements
            .into_iter()
            .map(|mut a| {
                a.basis = a
                    .basis_file
                    .iter()
                    .filter_map(|b| {
                        crate::lawful::AcceptedBasis::from_file(b)
                            .map_err(|e| {
                                problems.push(format!("{shown}: agreement {:?}: basis: {e}", a.id))
                            })
                            .ok()
                    })
                    .collect();
                a
            })
            .collect(),
        Err(e) => {
            problems.push(format!("{shown}: {e}"));
            Vec::new()
        }
    }
}

/// Cross-checks agreements against partners, schemas and each other.
fn check_agreements(
    agreements: &[Agreement],
    partners: &BTreeMap<PartnerId, Partner>,
    schemas: Option<&SchemaSet>,
    problems: &mut Vec<String>,
) {
    let mut ids = HashSet::new();
    let mut covered = HashSet::new();
    for a in agreements {
        let at = format!("agreement {:?}", a.id);
        if !ids.insert(a.id.clone()) {
            problems.push(format!("{at}: id used twice"));
        }
        let sender = partners.get(&a.sender);
        let recipient = partners.get(&a.recipient);
        if sender.is_none() {
            problems.push(format!(
                "{at}: unknown sender partner {:?}",
                a.sender.as_str()
            ));
        }
        if recipient.is_none() {
            problems.push(format!(
                "{at}: unknown recipient partner {:?}",
                a.recipient.as_str()
            ));
        }
        if a.sender == a.recipient {
            problems.push(format!("{at}: sender and recipient are the same partner"));
        }
        if a.types.is_empty() {
            problems.push(format!("{at}: no referral types"));
        }
        if a.basis.is_empty() {
            problems.push(format!(
                "{at}: needs at least one [[agreement.basis]] combination"
            ));
        }
        for b in &a.basis {
            for p in b.check() {
                problems.push(format!("{at}: basis {}: not law: {p}", b.describe()));
            }
            if b.regime() == crate::lawful::Regime::Dpa2018Part3
                && sender.is_some_and(|s| !s.competent_authority)
            {
                problems.push(format!(
                    "{at}: a dpa2018-part3 basis needs a competent authority as sender; {} is not \
                     (competent_authority = true in its partner file)",
                    a.sender
                ));
            }
        }
        if a.review == Review::Never && !a.has(Condition::ConsentRequired) {
            problems.push(format!(
                "{at}: review = \"never\" is only allowed with the consent-required condition \
                 (overrides must be held for a safeguarding lead)"
            ));
        }
        if let (Some(s), true) = (sender, a.has(Condition::ProfessionalReferralsOnly)) {
            if s.sector != Sector::Statutory {
                problems.push(format!(
                    "{at}: recipient takes professional referrals only, but sender {} is not statutory",
                    s.id
                ));
            }
        }
        if let Some(s) = sender {
            if !s.keys.as_ref().is_some_and(|k| k.has(KeyUse::Sig)) {
                problems.push(format!(
                    "{at}: sender {} has no registered signing key",
                    s.id
                ));
            }
            if s.systems.is_empty() {
                problems.push(format!("{at}: sender {} has no system certificate", s.id));
            }
            if a.review != Review::Never && !s.has_person_with(Role::DesignatedSafeguardingLead) {
                problems.push(format!(
                    "{at}: sender {} has no designated-safeguarding-lead to review held referrals",
                    s.id
                ));
            }
        }
        if let Some(r) = recipient {
            if !r.keys.as_ref().is_some_and(|k| k.has(KeyUse::Enc)) {
                problems.push(format!(
                    "{at}: recipient {} has no registered encryption key",
                    r.id
                ));
            }
        }
        for ty in &a.types {
            if !covered.insert((a.sender.clone(), a.recipient.clone(), ty.clone())) {
                problems.push(format!(
                    "{at}: {} → {} for {ty} is covered by another agreement too",
                    a.sender, a.recipient
                ));
            }
            let Some(schemas) = schemas else { continue };
            if schemas.referral_type(ty).is_none() {
                problems.push(format!("{at}: unknown referral type {:?}", ty.as_str()));
                continue;
            }
            if let Some(r) = recipient {
                if schemas.view(&r.kind, ty).is_none() {
                    problems.push(format!(
                        "{at}: missing view schema views/{}/{ty}.json for recipient {}",
                        r.kind, r.id
                    ));
                }
            }
        }
    }
}
