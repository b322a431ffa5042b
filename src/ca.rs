//! The partnership's certificate authority, run offline by the lead agency (`refex ca`): create
//! the CA (or use an existing one), issue system and personal client certificates from a
//! certificate signing request with the profile the gateway accepts (X.509 v3, clientAuth,
//! strict DER: no default-valued fields encoded), revoke, and publish the CRL with its
//! `nextUpdate`. Requesters keep their private keys; the CA only ever sees CSRs.
//!
//! A CA directory holds `ca.pem`, `ca.key` (0600), `issued.jsonl` (one line per certificate
//! issued: serial, fingerprint, subject, expiry) and `revoked.jsonl` (serial, when, why). The
//! development PKI (`devpki`) is this same authority with throwaway names.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA directory already holds a CA.
    #[error("{0} already holds a CA: a CA is never overwritten")]
    Exists(PathBuf),
    /// Certificate or CRL generation failed, or a CSR does not parse or verify.
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    /// No certificate with that serial was issued here.
    #[error(
        "no certificate with serial {0} was issued by this CA (one an existing CA issued before \
         refex: add --issued-elsewhere)"
    )]
    UnknownSerial(String),
    /// A serial that is not lower-case or upper-case hex.
    #[error("serial {0}")]
    BadSerial(String),
    /// The CA's certificate or key cannot issue what the gateway accepts (an adopted CA).
    #[error("{0}")]
    Unusable(String),
    /// A CRL validity out of bounds.
    #[error(
        "--valid-for {0}: a CRL must be valid for at least a day and at most a year (publish a \
         new one well before it ends)"
    )]
    Validity(String),
}

/// What `ca.pem` says of itself that issuing depends on.
struct Profile {
    /// The subject's DER: every certificate and CRL issued must name exactly this issuer.
    subject_der: Vec<u8>,
    /// Its subject key identifier, which issued CRLs name as their authority key.
    key_id: Option<Vec<u8>>,
    /// Its public key (the subjectPublicKey bits): `ca.key` must be its private half.
    public_key: Vec<u8>,
}

/// Reads the CA certificate's profile; refuses one that is not a CA able to sign
/// certificates and CRLs.
fn profile(cert_pem: &str) -> Result<Profile, CaError> {
    use rustls_pki_types::pem::PemObject as _;
    use x509_parser::extensions::ParsedExtension;
    let unusable = |why: &str| CaError::Unusable(format!("ca.pem: {why}"));
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| unusable("not a PEM certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| unusable("not an X.509 certificate"))?;
    if !cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca)
    {
        return Err(unusable(
            "not a CA certificate (basicConstraints cA is not true)",
        ));
    }
    if let Ok(Some(usage)) = cert.key_usage() {
        if !usage.value.key_cert_sign() || !usage.value.crl_sign() {
            return Err(unusable(
                "its key usage must include keyCertSign and cRLSign (it signs certificates and CRLs)",
            ));
        }
    }
    let key_id = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    Ok(Profile {
        subject_der: cert.subject().as_raw().to_vec(),
        key_id,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// The issuer name `der` (a certificate's or a CRL's) carries.
fn issuer_of(der: &[u8], crl: bool) -> Option<Vec<u8>> {
    if crl {
        let (_, c) = x509_parser::parse_x509_crl(der).ok()?;
        Some(c.issuer().as_raw().to_vec())
    } else {
        let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(c.issuer().as_raw().to_vec())
    }
}

/// A serial as the CRL lists it: lower-case hex of the positive integer's bytes, without
/// separators or leading zero bytes (`00:B2:A1` and `b2a1` are one serial). A negative serial
/// (`-4D5E…`, which RFC 5280 forbids) cannot be listed in a CRL this CA writes: refused with
/// that reason rather than recorded as some other number.
fn normal_serial(serial: &str) -> Result<String, CaError> {
    let mut s = serial.trim().to_lowercase().replace([':', ' '], "");
    if s.starts_with('-') {
        return Err(CaError::BadSerial(format!(
            "{serial} is negative (RFC 5280 forbids it): a CRL written here cannot list it; \
             revoke it with the tool that issued it, or reissue the certificate"
        )));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CaError::BadSerial(format!("{serial:?} is not hexadecimal")));
    }
    if s.len() % 2 == 1 {
        s.insert(0, '0'); // whole bytes, as the CRL lists them
    }
    while s.len() > 2 && s.starts_with("00") {
        s.drain(..2);
    }
    Ok(s)
}

/// The longest and shortest a CRL may be valid for.
const CRL_VALIDITY: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(86_400)..=Duration::from_secs(366 * 86_400);

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |e| CaError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// A certificate (and, when the CA generated it, its key) as PEM, with its serial.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM (empty when issued from a CSR: the requester holds the key).
    pub key_pem: String,
    /// Serial number (for revocation).
    pub serial: Vec<u8>,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Subject common name.
    pub common_name: String,
    /// Subject organisation.
    pub organisation: String,
    /// DNS names and IP addresses (server certificates).
    pub subject_alt_names: Vec<String>,
    /// Server or client authentication.
    pub server: bool,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// A certificate authority able to issue certificates and CRLs.
pub struct Authority {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    key: KeyPair,
    issuer: Issuer<'static, KeyPair>,
    profile: Profile,
}

fn to_time(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// A positive, unique 16-byte serial number.
fn fresh_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::now_v7().as_bytes();
    let random = uuid::Uuid::now_v7();
    // Mix in the random tail of a second v7 id so two serials in one millisecond differ.
    for (b, r) in bytes.iter_mut().zip(random.as_bytes().iter().rev()) {
        *b ^= r;
    }
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The leaf profile: no basicConstraints at all (DER forbids encoding the default cA=FALSE,
/// and strict parsers refuse a leaf that does), digitalSignature, one EKU, the authority key
/// identifier, a fresh serial.
fn leaf_params(req: &IssueRequest) -> Result<(CertificateParams, SerialNumber), CaError> {
    let mut params = CertificateParams::new(req.subject_alt_names.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, req.common_name.clone());
    params
        .distinguished_name
        .push(DnType::OrganizationName, req.organisation.clone());
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if req.server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.not_before = to_time(req.not_before);
    params.not_after = to_time(req.not_after);
    params.use_authority_key_identifier_extension = true;
    let serial = fresh_serial();
    params.serial_number = Some(serial.clone());
    Ok((params, serial))
}

impl Authority {
    /// A new self-signed root CA named `common_name`, valid from `not_before` to `not_after`.
    pub fn create(
        common_name: &str,
        organisation: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, organisation);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_time(not_before);
        params.not_after = to_time(not_after);
        params.serial_number = Some(fresh_serial());
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let issuer = Issuer::new(params, KeyPair::from_pem(&key.serialize_pem())?);
        let cert_pem = cert.pem();
        Ok(Self {
            profile: profile(&cert_pem)?,
            cert_pem,
            key,
            issuer,
        })
    }

    /// Loads a CA from its certificate and key (PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(file_err(cert_path))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(file_err(key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            CaError::Unusable(format!(
                "{}: {e}: the CA key must be an unencrypted PKCS#8 PEM key (not the traditional \
                 EC or RSA form); convert one with `openssl pkcs8 -topk8 -nocrypt -in old.key -out {}`",
                key_path.display(),
                key_path.display()
            ))
        })?;
        let profile = profile(&cert_pem)?;
        if key.der_bytes() != profile.public_key.as_slice() {
            return Err(CaError::Unusable(format!(
                "{} is not the private key of {}: certificates it signed would not chain",
                key_path.display(),
                cert_path.display()
            )));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?;
        Ok(Self {
            cert_pem,
            key,
            issuer,
            profile,
        })
    }

    /// Refuses what this CA signed when it does not name the CA exactly as `ca.pem` does
    /// (rcgen rebuilds the name, and drops e.g. a repeated attribute): it would not chain.
    fn names_this_ca(&self, der: &[u8], crl: bool) -> Result<(), CaError> {
        if issuer_of(der, crl).as_deref() == Some(self.profile.subject_der.as_slice()) {
            Ok(())
        } else {
            Err(CaError::Unusable(
                "this CA's name cannot be reproduced exactly (a repeated or multi-valued \
                 attribute?): what it signed would not chain to ca.pem; nothing was written"
                    .into(),
            ))
        }
    }

    /// Issues a certificate for a key the CA generates (development and tests).
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued, CaError> {
        let (params, serial) = leaf_params(req)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        self.names_this_ca(cert.der(), false)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// Issues a certificate for the public key of a CSR (PEM), whose signature is checked;
    /// the subject and profile are the CA's (`req`), never the CSR's.
    pub fn issue_for_csr(&self, csr_pem: &str, req: &IssueRequest) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let (params, serial) = leaf_params(req)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        self.names_this_ca(cert.der(), false)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: String::new(),
            serial: serial.to_bytes(),
        })
    }

    /// A CRL listing `revoked`, issued at `this_update`, due again at `next_update`, with
    /// the CRL number `number` (each CRL of a CA a larger one).
    pub fn crl(
        &self,
        revoked: &[Revocation],
        this_update: SystemTime,
        next_update: SystemTime,
        number: u64,
    ) -> Result<String, CaError> {
        let params = CertificateRevocationListParams {
            this_update: to_time(this_update),
            next_update: to_time(next_update),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            // A recorded serial that is not hex is refused, never left off the list.
            revoked_certs: revoked
                .iter()
                .map(|r| {
                    Ok(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&hex::decode(&r.serial).map_err(
                            |_| {
                                CaError::BadSerial(format!(
                                    "{:?} in revoked.jsonl is not hexadecimal",
                                    r.serial
                                ))
                            },
                        )?),
                        revocation_time: to_time(
                            SystemTime::UNIX_EPOCH + Duration::from_secs(r.at),
                        ),
                        reason_code: Some(r.reason.rcgen()),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, CaError>>()?,
            // The authority key identifier is the CA certificate's own subject key identifier
            // (an adopted CA's may be SHA-1 of its key), so path builders find the CA.
            key_identifier_method: self
                .profile
                .key_id
                .clone()
                .map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified),
        };
        let crl = params.signed_by(&self.issuer)?;
        self.names_this_ca(crl.der(), true)?;
        Ok(crl.pem()?)
    }

    /// The CA's private key, PEM (only for writing its key file).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA key's public half (DER SubjectPublicKeyInfo), for tests.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }
}

/// Why a certificate was revoked (RFC 5280 reason codes the partnership uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The private key is (or may be) known to someone else.
    KeyCompromise,
    /// The holder left, or the system was retired.
    CessationOfOperation,
    /// Replaced by a renewal.
    Superseded,
    /// The holder's details changed.
    AffiliationChanged,
}

impl Reason {
    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Reason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Reason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Reason::Superseded => rcgen::RevocationReason::Superseded,
            Reason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        }
    }
}

/// One revocation, as `revoked.jsonl` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The serial, lower-case hex.
    pub serial: String,
    /// When (Unix seconds).
    pub at: u64,
    /// Why.
    pub reason: Reason,
}

/// One certificate issued, as `issued.jsonl` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The serial, lower-case hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lower-case hex (what partner files name).
    pub fingerprint: String,
    /// The partner.
    pub partner: String,
    /// `system:<id>` or `person:<id>`.
    pub holder: String,
    /// Expiry (Unix seconds).
    pub not_after: u64,
}

/// The longest validity `refex ca issue` grants, in days (a little over two years: renewals
/// overlap; nothing lives for ever).
pub const MAX_DAYS: u64 = 825;

/// Who a client certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A partner's case system.
    System(String),
    /// A named person.
    Person(String),
    /// A gateway's server certificate for these names.
    Server(Vec<String>),
}

/// A CA directory: the authority with its issuance and revocation records.
pub struct Directory {
    dir: PathBuf,
}

impl Directory {
    /// The CA directory at `dir`.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates a new CA here; refuses when one exists.
    pub fn init(&self, name: &str, years: u64, now: SystemTime) -> Result<Authority, CaError> {
        if self.path("ca.key").exists() || self.path("ca.pem").exists() {
            return Err(CaError::Exists(self.dir.clone()));
        }
        let ca = Authority::create(
            name,
            name,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(years * 365 * 86_400),
        )?;
        crate::files::create_private_dir_all(&self.dir).map_err(file_err(&self.dir))?;
        let key = self.path("ca.key");
        crate::files::write_new(&key, ca.key_pem().as_bytes(), true).map_err(file_err(&key))?;
        let cert = self.path("ca.pem");
        crate::files::write_new(&cert, ca.cert_pem.as_bytes(), false).map_err(file_err(&cert))?;
        Ok(ca)
    }

    /// The authority kept here.
    pub fn authority(&self) -> Result<Authority, CaError> {
        Authority::load(&self.path("ca.pem"), &self.path("ca.key"))
    }

    fn append(&self, name: &str, line: &impl Serialize) -> Result<(), CaError> {
        let path = self.path(name);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(file_err(&path))?;
        let mut text = serde_json::to_string(line).map_err(|e| CaError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(file_err(&path))?;
        f.sync_all().map_err(file_err(&path))
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Vec<T>, CaError> {
        let path = self.path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(file_err(&path)(e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| CaError::File {
                    path: path.clone(),
                    reason: format!(
                        "line {}: {e} (a write cut short leaves an incomplete last line: \
                         check it against your backup and remove it)",
                        i + 1
                    ),
                })
            })
            .collect()
    }

    /// Issues a client certificate from a CSR for `holder` of `partner`, valid `days`;
    /// records it.
    pub fn issue(
        &self,
        csr_pem: &str,
        partner: &str,
        holder: &Holder,
        days: u64,
        now: SystemTime,
    ) -> Result<(Issued, Record), CaError> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(CaError::File {
                path: PathBuf::from("--days"),
                reason: format!("must be 1 to {MAX_DAYS} (renew rather than issue for longer)"),
            });
        }
        if partner.parse::<crate::identity::PartnerId>().is_err() {
            return Err(CaError::File {
                path: PathBuf::from("--partner"),
                reason: format!(
                    "{partner:?} is not a partner id (lower-case letters, digits, '-')"
                ),
            });
        }
        match holder {
            Holder::System(id) if id.parse::<crate::identity::SystemId>().is_err() => {
                return Err(CaError::File {
                    path: PathBuf::from("--system"),
                    reason: format!("{id:?} is not a system id"),
                });
            }
            Holder::Person(id) if id.parse::<crate::identity::PersonId>().is_err() => {
                return Err(CaError::File {
                    path: PathBuf::from("--person"),
                    reason: format!("{id:?} is not a person id"),
                });
            }
            _ => {}
        }
        let ca = self.authority()?;
        let ca_end = crate::tls::expiry_of_file(&self.path("ca.pem")).unwrap_or(i64::MAX);
        let (kind, id, names) = match holder {
            Holder::System(id) => ("system", id.clone(), vec![]),
            Holder::Person(id) => ("person", id.clone(), vec![]),
            Holder::Server(names) => (
                "server",
                names.first().cloned().unwrap_or_default(),
                names.clone(),
            ),
        };
        let not_after = now + Duration::from_secs(days * 86_400);
        let end = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(i64::MAX);
        if end > ca_end {
            return Err(CaError::File {
                path: self.path("ca.pem"),
                reason: "the certificate would outlive the CA: issue for fewer days, or renew the CA first".into(),
            });
        }
        let issued = ca.issue_for_csr(
            csr_pem,
            &IssueRequest {
                common_name: if names.is_empty() {
                    format!("{kind} {id} of {partner}")
                } else {
                    id.clone()
                },
                organisation: partner.to_owned(),
                server: !names.is_empty(),
                subject_alt_names: names,
                not_before: now - Duration::from_secs(300),
                not_after,
            },
        )?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(issued.cert_pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .map_err(|e| CaError::File {
                path: PathBuf::from("<issued>"),
                reason: e.to_string(),
            })?;
        use sha2::Digest as _;
        let record = Record {
            serial: hex::encode(&issued.serial),
            fingerprint: hex::encode(sha2::Sha256::digest(&der)),
            partner: partner.to_owned(),
            holder: format!("{kind}:{id}"),
            not_after: not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        Ok((issued, record))
    }

    /// Records a certificate issued here (after it was written out).
    pub fn record(&self, record: &Record) -> Result<(), CaError> {
        self.append("issued.jsonl", record)
    }

    /// Records the revocation of `serial` (hex) for `reason`; returns what `issued.jsonl`
    /// recorded of it. A serial this directory did not issue is refused unless
    /// `issued_elsewhere` (an existing CA adopted with its earlier certificates), when there
    /// is no record to return.
    pub fn revoke(
        &self,
        serial: &str,
        reason: Reason,
        issued_elsewhere: bool,
        now: SystemTime,
    ) -> Result<Option<Record>, CaError> {
        let serial = normal_serial(serial)?;
        let issued: Vec<Record> = self.read("issued.jsonl")?;
        let record = issued
            .into_iter()
            .find(|r| normal_serial(&r.serial).is_ok_and(|s| s == serial));
        if record.is_none() && !issued_elsewhere {
            return Err(CaError::UnknownSerial(serial));
        }
        let revoked: Vec<Revocation> = self.read("revoked.jsonl")?;
        if !revoked
            .iter()
            .any(|r| normal_serial(&r.serial).is_ok_and(|s| s == serial))
        {
            self.append(
                "revoked.jsonl",
                &Revocation {
                    serial,
                    at: now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    reason,
                },
            )?;
        }
        Ok(record)
    }

    /// The CRL of every revocation recorded here, valid until `now + valid_for` (a day to a
    /// year), numbered above every CRL this directory wrote before (`crlnumber`), so two CRLs
    /// written in one second still differ in number.
    pub fn crl(&self, valid_for: Duration, now: SystemTime) -> Result<String, CaError> {
        if !CRL_VALIDITY.contains(&valid_for) {
            return Err(CaError::Validity(
                humantime::format_duration(valid_for).to_string(),
            ));
        }
        let revoked: Vec<Revocation> = self.read("revoked.jsonl")?;
        let authority = self.authority()?;
        let path = self.path("crlnumber");
        let last = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| CaError::File {
                path: path.clone(),
                reason: "not a number: it holds the last CRL number written".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(file_err(&path)(e)),
        };
        let seconds = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let number = seconds.max(last.checked_add(1).ok_or_else(|| CaError::File {
            path: path.clone(),
            reason:
                "holds the largest CRL number there is: set it to the last number written".into(),
        })?);
        let crl = authority.crl(
            &revoked,
            now - Duration::from_secs(60),
            now + valid_for,
            number,
        )?;
        let tmp = self.path("crlnumber.partial");
        std::fs::write(&tmp, number.to_string()).map_err(file_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(file_err(&path))?;
        Ok(crl)
    }
}

/// A key pair and CSR for a requester (`refex ca request`): the key stays with them, the CSR
/// goes to the CA. Returns `(key_pem, csr_pem)`.
pub fn request(common_name: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Runs one `refex ca` command; returns what to print.
pub fn run(cmd: &crate::cli::CaCommand, now: SystemTime) -> Result<String, CaError> {
    use crate::cli::CaCommand as C;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(file_err(p));
    match cmd {
        C::Init { dir, name, years } => {
            Directory::at(dir).init(name, *years, now)?;
            Ok(format!(
                "CA {name:?} created in {}: ca.pem (give it to every gateway as a client CA, \
                 tls.client_ca), ca.key (0600: keep it offline and backed up)",
                dir.display()
            ))
        }
        C::Request {
            key_out,
            csr_out,
            name,
        } => {
            let (key, csr) = request(name)?;
            crate::files::write_new(key_out, key.as_bytes(), true).map_err(file_err(key_out))?;
            crate::files::write_new(csr_out, csr.as_bytes(), false).map_err(file_err(csr_out))?;
            Ok(format!(
                "private key {} (0600: it never leaves you); send {} to the partnership CA",
                key_out.display(),
                csr_out.display()
            ))
        }
        C::Issue {
            dir,
            csr,
            partner,
            system,
            person,
            server,
            days,
            out,
        } => {
            let holder = match (system, person) {
                (Some(s), _) => Holder::System(s.clone()),
                (None, Some(p)) => Holder::Person(p.clone()),
                (None, None) => Holder::Server(server.clone()),
            };
            if std::fs::symlink_metadata(out).is_ok() {
                return Err(CaError::File {
                    path: out.clone(),
                    reason: "exists: a certificate is never written over another file".into(),
                });
            }
            let directory = Directory::at(dir);
            let (issued, record) = directory.issue(&read(csr)?, partner, &holder, *days, now)?;
            crate::files::write_new(out, issued.cert_pem.as_bytes(), false)
                .map_err(file_err(out))?;
            directory.record(&record)?;
            let (table, id) = match &holder {
                Holder::System(id) => ("[[systems]]", id.clone()),
                Holder::Person(id) => ("[[people]]", id.clone()),
                Holder::Server(names) => {
                    return Ok(format!(
                        "server certificate {} for {} (serial {}): set tls.server_cert to it and \
                         tls.server_key to the key made with its request",
                        out.display(),
                        names.join(", "),
                        record.serial
                    ));
                }
            };
            Ok(format!(
                "certificate {} (serial {}, expires at {} Unix time)\n\
                 in partners/{partner}.toml, under {table} id = \"{id}\", add:\n\
                 fingerprints = [\"{}\"]   # or fingerprint = \"…\" for the first one\n\
                 keep the old certificate's fingerprint until the holder has switched, then remove it",
                out.display(),
                record.serial,
                record.not_after,
                record.fingerprint
            ))
        }
        C::Revoke {
            dir,
            serial,
            reason,
            issued_elsewhere,
        } => {
            let Some(record) =
                Directory::at(dir).revoke(serial, *reason, *issued_elsewhere, now)?
            else {
                return Ok(format!(
                    "revoked {} (issued before this CA directory kept records); now write \
                     and publish the CRL: refex ca crl --dir {} --out crl.pem, and remove its \
                     fingerprint from the partner file that names it",
                    normal_serial(serial)?,
                    dir.display()
                ));
            };
            Ok(format!(
                "revoked {} ({} of {}); now write and publish the CRL: refex ca crl --dir {} --out crl.pem, \
                 and remove fingerprint {} from partners/{}.toml",
                record.serial,
                record.holder,
                record.partner,
                dir.display(),
                record.fingerprint,
                record.partner
            ))
        }
        C::Crl {
            dir,
            out,
            valid_for,
        } => {
            // Replaces only a CRL: never the CA's own files, never anything else.
            if std::fs::symlink_metadata(out).is_ok() {
                let existing = std::fs::read_to_string(out).unwrap_or_default();
                if !existing
                    .trim_start()
                    .starts_with("-----BEGIN X509 CRL-----")
                {
                    return Err(CaError::File {
                        path: out.clone(),
                        reason: "exists and is not a CRL: refusing to overwrite it".into(),
                    });
                }
            }
            let crl = Directory::at(dir).crl(*valid_for, now)?;
            let tmp = out.with_extension("partial");
            std::fs::write(&tmp, crl.as_bytes()).map_err(file_err(&tmp))?;
            std::fs::rename(&tmp, out).map_err(file_err(out))?;
            Ok(format!(
                "CRL {} written; nextUpdate in {}: copy it to every gateway (tls.crls) and reload \
                 (SIGHUP or POST /admin/reload) well before then",
                out.display(),
                humantime::format_duration(*valid_for)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer as _;

    /// A CA made by OpenSSL in `base/sub` (`ca.pem`, `ca.key`) with these key usages, valid for a
    /// year: longer than any certificate a test issues under it, whichever second the test reaches.
    fn openssl_ca(base: &Path, sub: &str, subject: &str, usage: &str) {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "365", "-subj", subject])
            .args([
                "-keyout",
                &format!("{sub}/ca.key"),
                "-out",
                &format!("{sub}/ca.pem"),
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", &format!("keyUsage=critical,{usage}")])
            .current_dir(base)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An existing CA (here made with OpenSSL) adopted as `ca.pem` and `ca.key`: refex issues
    /// under it, and revokes a certificate it issued before refex kept records.
    #[test]
    fn an_existing_ca_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        openssl_ca(
            dir.path(),
            "ca",
            "/CN=Existing Partnership CA",
            "keyCertSign,cRLSign",
        );
        let now = SystemTime::now();
        let ca_dir = Directory::at(&ca);
        let (_, csr) = request("someone").unwrap();
        let (issued, record) = ca_dir
            .issue(
                &csr,
                "imara",
                &Holder::System("case-system".into()),
                30,
                now,
            )
            .unwrap();
        ca_dir.record(&record).unwrap();
        let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
        let ca_der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(&ca_pem).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());

        // A serial from before: refused unless said to be issued elsewhere; odd hex padded.
        assert!(matches!(
            ca_dir.revoke("abc", Reason::CessationOfOperation, false, now),
            Err(CaError::UnknownSerial(_))
        ));
        assert_eq!(
            ca_dir
                .revoke("ab:c", Reason::CessationOfOperation, true, now)
                .unwrap(),
            None
        );
        ca_dir
            .revoke(&record.serial, Reason::Superseded, false, now)
            .unwrap();
        let crl = ca_dir.crl(Duration::from_secs(86_400), now).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(crl.as_bytes())
            .map(|c: rustls_pki_types::CertificateRevocationListDer<'static>| c.to_vec())
            .unwrap();
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert!(serials.contains(&"0abc".to_owned()), "{serials:?}");
        assert!(serials.contains(&record.serial), "{serials:?}");
        assert_eq!(parsed.issuer(), ca_cert.subject());
        // The CRL names the CA's own key identifier (OpenSSL's is SHA-1 of the key).
        let ski = ca_cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(aki, ski);
        // A serial written with leading zero bytes is the same serial; a negative one is
        // refused with the reason.
        assert_eq!(
            ca_dir
                .revoke(
                    &format!("00{}", record.serial),
                    Reason::Superseded,
                    false,
                    now
                )
                .unwrap(),
            Some(record.clone())
        );
        assert!(matches!(
            ca_dir.revoke("-4D5E6F7A", Reason::KeyCompromise, true, now),
            Err(CaError::BadSerial(why)) if why.contains("negative")
        ));
        // CRLs written in one second are numbered apart; a validity out of bounds is refused.
        let number = |pem: &str| {
            let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                .map(|c: rustls_pki_types::CertificateRevocationListDer<'static>| c.to_vec())
                .unwrap();
            let (_, c) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
            c.crl_number().unwrap().clone()
        };
        let again = ca_dir.crl(Duration::from_secs(86_400), now).unwrap();
        assert!(number(&again) > number(&crl));
        for bad in [420, 2 * 366 * 86_400] {
            assert!(matches!(
                ca_dir.crl(Duration::from_secs(bad), now),
                Err(CaError::Validity(_))
            ));
        }

        // A key that is not the certificate's, and a CA that may not sign CRLs, are refused.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::copy(ca.join("ca.pem"), other.join("ca.pem")).unwrap();
        std::fs::write(
            other.join("ca.key"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        assert!(matches!(
            Directory::at(&other).authority(),
            Err(CaError::Unusable(why)) if why.contains("not the private key")
        ));
        openssl_ca(dir.path(), "other", "/CN=No CRL CA", "keyCertSign");
        assert!(matches!(
            Directory::at(&other).authority(),
            Err(CaError::Unusable(why)) if why.contains("cRLSign")
        ));
    }

    #[test]
    fn a_csr_becomes_a_client_certificate_that_can_be_revoked_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = Directory::at(&dir.path().join("ca"));
        let now = SystemTime::now();
        ca_dir.init("Test Partnership CA", 10, now).unwrap();
        assert!(matches!(
            ca_dir.init("again", 10, now),
            Err(CaError::Exists(_))
        ));
        let (key, csr) = request("whoever").unwrap();
        assert!(key.contains("PRIVATE KEY") && csr.contains("CERTIFICATE REQUEST"));
        let (issued, record) = ca_dir
            .issue(&csr, "imara", &Holder::Person("dsl-a".into()), 397, now)
            .unwrap();
        ca_dir.record(&record).unwrap();
        // Validity is bounded, ids are ids.
        assert!(
            ca_dir
                .issue(&csr, "imara", &Holder::Person("dsl-a".into()), 0, now)
                .is_err()
        );
        assert!(
            ca_dir
                .issue(&csr, "imara", &Holder::Person("dsl-a".into()), 700, now)
                .is_ok()
        );
        assert!(
            ca_dir
                .issue(
                    &csr,
                    "imara",
                    &Holder::Person("x".into()),
                    MAX_DAYS + 1,
                    now
                )
                .is_err()
        );
        assert!(
            ca_dir
                .issue(&csr, "Imara\n", &Holder::Person("x".into()), 30, now)
                .is_err()
        );
        assert!(
            ca_dir
                .issue(&csr, "imara", &Holder::System("a\nb".into()), 30, now)
                .is_err()
        );
        assert!(issued.key_pem.is_empty(), "the CA never holds the key");
        assert_eq!(record.holder, "person:dsl-a");
        assert_eq!(record.fingerprint.len(), 64);
        let der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        assert!(cert.basic_constraints().unwrap().is_none());
        assert!(matches!(
            ca_dir.revoke("00", Reason::KeyCompromise, false, now),
            Err(CaError::UnknownSerial(_))
        ));
        assert!(matches!(
            ca_dir.revoke("zz", Reason::KeyCompromise, true, now),
            Err(CaError::BadSerial(_))
        ));
        assert_eq!(
            ca_dir
                .revoke(&record.serial, Reason::KeyCompromise, false, now)
                .unwrap(),
            Some(record.clone())
        );
        let crl = ca_dir.crl(Duration::from_secs(7 * 86_400), now).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(crl.as_bytes())
            .map(|c: rustls_pki_types::CertificateRevocationListDer<'static>| c.to_vec())
            .unwrap();
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        assert_eq!(parsed.iter_revoked_certificates().count(), 1);
        assert!(parsed.next_update().is_some());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("ca/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
