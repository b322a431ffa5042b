//! Mutual TLS: the rustls server configuration (client certificates required, chained to the
//! partner trust bundle, checked against CRLs; TLS 1.3, or 1.2 with AEAD suites only; ALPN h2
//! and http/1.1) and the peer certificate's fingerprint after a handshake.
//!
//! Mapping a fingerprint to a principal is a lookup in `config`; this module only proves who
//! holds the certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::settings::PkiPaths;
use crate::identity::Fingerprint;

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing of the expected kind.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// What was expected (certificate, key, CRL).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The crypto provider for every TLS use in refex (ring: small, fast to build).
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // AEAD suites only. rustls ships no CBC suites, but say so in code rather than rely on it.
    p.cipher_suites.retain(|s| match s {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(s) => {
            let name = format!("{:?}", s.common.suite);
            name.contains("GCM") || name.contains("CHACHA20_POLY1305")
        }
    });
    Arc::new(p)
}

/// Installs [`provider`] as the process default, so that reqwest and sqlx agree on it.
/// Idempotent.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        what: "certificates",
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate in file".into()));
    }
    Ok(certs)
}

/// The fingerprint of the first certificate in PEM text (`path` names it in errors).
pub fn fingerprint_of_pem(pem: &[u8], path: &Path) -> Result<Fingerprint, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        what: "certificates",
        path: path.to_owned(),
        reason,
    };
    let first = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| pem_err("no certificate in file".into()))?
        .map_err(|e| pem_err(e.to_string()))?;
    Ok(Fingerprint::of_der(first.as_ref()))
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint_of_file(path: &Path) -> Result<Fingerprint, TlsError> {
    let certs = read_certs(path)?;
    Ok(Fingerprint::of_der(certs[0].as_ref()))
}

/// The listener's TLS server configuration, built and checked when a configuration loads:
/// opaque outside this module and `server`, so nothing that decides can reach a TLS type.
#[derive(Clone, Debug)]
pub struct ServerTls(Arc<ServerConfig>);

impl ServerTls {
    /// The rustls configuration, for the listener's acceptor (and the benchmark's bare
    /// rustls server).
    pub fn shared(&self) -> Arc<ServerConfig> {
        self.0.clone()
    }
}

/// [`server_config`] as the opaque [`ServerTls`] a loaded configuration keeps.
pub fn server_tls(pki: &PkiPaths) -> Result<ServerTls, Vec<TlsError>> {
    server_config(pki).map(ServerTls)
}

/// Builds the server configuration from the PKI files, reporting every unreadable file.
pub fn server_config(pki: &PkiPaths) -> Result<Arc<ServerConfig>, Vec<TlsError>> {
    let mut problems = Vec::new();
    let chain = read_certs(&pki.server_cert)
        .map_err(|e| problems.push(e))
        .ok();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key)
        .map_err(|e| {
            problems.push(TlsError::Pem {
                what: "private key",
                path: pki.server_key.clone(),
                reason: e.to_string(),
            })
        })
        .ok();
    let roots = read_certs(&pki.client_ca)
        .map_err(|e| problems.push(e))
        .ok();
    let mut crls = Vec::new();
    for path in &pki.crls {
        match CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        {
            Ok(list) if !list.is_empty() => crls.extend(list),
            Ok(_) => problems.push(TlsError::Pem {
                what: "CRL",
                path: path.clone(),
                reason: "no CRL in file".into(),
            }),
            Err(e) => problems.push(TlsError::Pem {
                what: "CRL",
                path: path.clone(),
                reason: e.to_string(),
            }),
        }
    }
    let (Some(chain), Some(key), Some(roots)) = (chain, key, roots) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    build(chain, key, roots, crls).map_err(|e| vec![e])
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| TlsError::Config(format!("trust bundle: {e}")))?;
    }
    // Defaults kept on purpose: the whole chain is checked and an unknown revocation status
    // is an error, so every issuing CA needs a CRL; an expired CRL is refused too.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .with_crls(crls)
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate as a CRL names it: its issuer's DER-encoded name and its serial number.
pub type CertId = (Vec<u8>, Vec<u8>);

/// Every certificate the configured CRLs revoke, for checking connections that were
/// verified before a reload brought a newer CRL.
#[derive(Clone, Debug, Default)]
pub struct Revocations(std::collections::HashSet<CertId>);

impl Revocations {
    /// Reads the CRL files (already checked by [`server_config`]; an unreadable one adds
    /// nothing here).
    pub fn load(paths: &[std::path::PathBuf]) -> Self {
        let mut set = std::collections::HashSet::new();
        for path in paths {
            let Ok(iter) = CertificateRevocationListDer::pem_file_iter(path) else {
                continue;
            };
            for der in iter.flatten() {
                if let Ok((_, crl)) = x509_parser::parse_x509_crl(der.as_ref()) {
                    let issuer = crl.issuer().as_raw().to_vec();
                    for revoked in crl.iter_revoked_certificates() {
                        set.insert((issuer.clone(), revoked.raw_serial().to_vec()));
                    }
                }
            }
        }
        Self(set)
    }

    /// Whether the certificate is revoked.
    pub fn contains(&self, id: &CertId) -> bool {
        self.0.contains(id)
    }
}

/// A TLS client configuration for the gateway's own outbound calls (webhooks): the
/// system's roots plus `extra` (a PEM bundle), no client certificate.
pub fn outbound_client_config(extra: Option<&Path>) -> Option<rustls::ClientConfig> {
    install_default_provider();
    let mut roots = RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = extra {
        for c in CertificateDer::pem_file_iter(path).ok()?.flatten() {
            let _ = roots.add(c);
        }
    }
    Some(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// How many certificates a PEM file holds; 0 when it cannot be read or any block is not one.
pub fn certificates_in(path: &Path) -> usize {
    CertificateDer::pem_file_iter(path)
        .ok()
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>().ok())
        .map_or(0, |c| c.len())
}

/// When a PEM certificate file's first certificate expires (Unix seconds), if readable.
pub fn expiry_of_file(path: &Path) -> Option<i64> {
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    not_after(der.as_ref())
}

/// Each certificate of a PEM bundle by subject common name (or its position), with when it
/// expires (Unix seconds).
pub fn expiries_of_bundle(path: &Path) -> Vec<(String, i64)> {
    let Ok(iter) = CertificateDer::pem_file_iter(path) else {
        return Vec::new();
    };
    iter.flatten()
        .enumerate()
        .filter_map(|(i, der)| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let name = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map_or_else(|| format!("ca-{i}"), str::to_owned);
            Some((name, cert.validity().not_after.timestamp()))
        })
        .collect()
}

fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// When the client certificate a completed handshake verified expires (Unix seconds).
pub fn peer_expiry(conn: &ServerConnection) -> Option<i64> {
    not_after(conn.peer_certificates()?.first()?.as_ref())
}

/// The issuer and serial of the client certificate a completed handshake verified.
pub fn peer_cert_id(conn: &ServerConnection) -> Option<CertId> {
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some((
        cert.issuer().as_raw().to_vec(),
        cert.tbs_certificate.raw_serial().to_vec(),
    ))
}

/// The fingerprint of the client certificate a completed handshake verified.
pub fn peer_fingerprint(conn: &ServerConnection) -> Option<Fingerprint> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Fingerprint::of_der(c.as_ref()))
}

/// Why a handshake failed, as a metrics label: a short closed set, never peer data.
pub fn handshake_failure_reason(err: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "eof",
            _ => "io",
        };
    };
    match tls {
        Error::NoCertificatesPresented => "no-certificate",
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown-issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not-yet-valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownRevocationStatus => "unknown-revocation-status",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "expired-crl",
            CertificateError::BadSignature => "bad-signature",
            _ => "invalid-certificate",
        },
        Error::PeerIncompatible(_) => "incompatible",
        Error::NoApplicationProtocol => "no-alpn",
        Error::AlertReceived(_) => "alert-received",
        _ => "protocol",
    }
}
