//! The partner side of the wire, as a library: an mTLS client with a partner's certificate
//! that fetches the gateway's JWKS, signs and encrypts referrals, reads and acknowledges its
//! inbox, and decrypts and verifies deliveries. `refex send`, `status`, `withdraw` and `inbox`
//! are built on it; a partner's own integration can be too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use refex_core::envelope::keys::KeySet;
use refex_core::envelope::referral::partner;

/// Longest a client waits for one response: above the inbox long-poll ceiling of 60 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// How many times `send` tries one referral when the gateway is unavailable or the
/// connection fails: enough to ride out a replica restart or a database failover.
pub const SEND_ATTEMPTS: u32 = 4;

/// Longest wait between tries, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Why a partner operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate, key or CA file could not be used.
    #[error("{0}")]
    Identity(String),
    /// The request failed in transport (TLS refused, connection lost).
    #[error("{}", transport_words(.0))]
    Transport(#[from] reqwest::Error),
    /// The gateway answered with a problem.
    #[error("{}", problem_words(*.status, .problem))]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem document (or body text).
        problem: String,
    },
    /// JOSE failed (sealing, opening, verifying).
    #[error("JOSE: {0}")]
    Jose(String),
}

/// A transport failure in words that say what to check: a TLS refusal is named as one
/// (the gateway refused the client certificate, or its own certificate is not from the CA
/// given), not as the socket error it surfaces as.
pub fn transport_words(e: &reqwest::Error) -> String {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_lowercase();
    let why = if lower.contains("unknownca")
        || lower.contains("unknown ca")
        || lower.contains("badcertificate")
        || lower.contains("bad certificate")
        || lower.contains("certificaterequired")
        || lower.contains("certificate required")
        || lower.contains("certificaterevoked")
        || lower.contains("certificateexpired")
    {
        "the gateway refused this client certificate (not issued by the partnership's CA, \
         revoked, or expired): check --cert and --key, or ask the gateway's operator"
    } else if lower.contains("invalid peer certificate") || lower.contains("unknownissuer") {
        "the gateway's certificate is not issued by the CA given with --ca (or has expired): \
         check --ca and the gateway address"
    } else if lower.contains("broken pipe")
        || lower.contains("connection reset")
        || lower.contains("connection closed")
        || lower.contains("channel closed")
        || lower.contains("unexpected eof")
        || lower.contains("unexpected-eof")
        || lower.contains("close_notify")
        || lower.contains("peer closed connection")
        // hyper's pool: the connection closed between the handshake and the request.
        || lower.contains("connection was not ready")
    {
        // TLS 1.3 ends the handshake before the server has judged the client certificate:
        // its refusal reaches the client as a closed connection on the first request.
        "the gateway closed the connection during the TLS handshake: most often it refused the \
         client certificate (untrusted, revoked or expired); check --cert and --key"
    } else if lower.contains("connection refused") {
        "nothing is listening at the gateway address: is the gateway running, and is --gateway right?"
    } else if e.is_timeout() {
        "the gateway did not answer in time: retry later"
    } else {
        return format!("request failed: {chain}");
    };
    format!("{why} ({chain})")
}

/// A problem document for people: title, status, detail, and each violation on its line.
pub fn problem_words(status: u16, body: &str) -> String {
    let Ok(p) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("the gateway answered {status}: {}", terminal_safe(body));
    };
    let text = |v: &serde_json::Value, or: &str| terminal_safe(v.as_str().unwrap_or(or));
    let mut out = format!(
        "the gateway refused it ({status} {}): {}",
        text(&p["title"], "error"),
        text(&p["detail"], "")
    );
    for e in p["errors"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {}: {}",
            text(&e["pointer"], "?"),
            text(&e["message"], "?")
        ));
    }
    if p["type"].is_string() {
        out.push_str(&format!("\n  (problem type {})", text(&p["type"], "")));
    }
    out
}

/// Text from the gateway made safe to print on a terminal: control characters (escape
/// sequences, carriage returns, line breaks) become `?`, so an answer cannot redraw the
/// screen or forge a line of output.
pub fn terminal_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            // Control characters, and the bidirectional controls that reorder what is shown.
            let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

/// Where a partner's files are.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The partner's private JWK set (`enc` and `sig`).
    pub jwks_private: PathBuf,
    /// The CA that issued the gateway's server certificate.
    pub ca: PathBuf,
}

impl Identity {
    /// The files the dev PKI (`refex dev-pki`) writes for `partner`.
    pub fn dev(pki: &Path, partner: &str) -> Self {
        let dir = pki.join("partners").join(partner);
        Self {
            cert: dir.join("system.pem"),
            key: dir.join("system.key"),
            jwks_private: dir.join("jwks.private.json"),
            ca: pki.join("ca.pem"),
        }
    }
}

/// The rustls client configuration of a partner: its client certificate, the gateway's CA,
/// TLS 1.3 and 1.2, ALPN h2 and HTTP/1.1. The session cache is rustls's default, so repeat
/// connections resume.
pub fn tls_config(identity: &Identity) -> Result<rustls::ClientConfig, ClientError> {
    // Ring's suites are all AEAD (as the gateway's own filtered provider is); a process
    // that installed a default already keeps it.
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let err = |what: &str, e: &dyn std::fmt::Display| {
        let path = match what {
            "CA" => &identity.ca,
            "certificate" => &identity.cert,
            _ => &identity.key,
        };
        ClientError::Identity(format!("{what} {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&identity.ca).map_err(|e| err("CA", &e))? {
        roots
            .add(c.map_err(|e| err("CA", &e))?)
            .map_err(|e| err("CA", &e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&identity.cert)
        .map_err(|e| err("certificate", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_file(&identity.key).map_err(|e| err("key", &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| err("certificate and key", &e))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// A partner connected to a gateway.
pub struct PartnerClient {
    http: reqwest::Client,
    base: String,
    keys: KeySet,
}

impl PartnerClient {
    /// A client for the gateway at `base` (e.g. `https://localhost:8443`).
    /// Only `https://`: over anything else there is no mutual TLS, the gateway's keys would
    /// come from whoever answers, and a referral sealed to them would be readable by it.
    pub fn new(identity: &Identity, base: &str) -> Result<Self, ClientError> {
        if !base
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(ClientError::Identity(format!(
                "the gateway address {base:?} is not https://: referrals and deliveries go only \
                 over mutual TLS to the gateway"
            )));
        }
        let tls = tls_config(identity)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            // A redirect could lead elsewhere; the gateway never answers with one.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let keys = KeySet::load_private(&identity.jwks_private)
            .map_err(|e| ClientError::Identity(format!("JWKS: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            keys,
        })
    }

    async fn check(res: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if res.status().is_success() {
            Ok(res)
        } else {
            let status = res.status().as_u16();
            Err(ClientError::Problem {
                status,
                problem: res.text().await.unwrap_or_default(),
            })
        }
    }

    /// The gateway's public keys.
    pub async fn gateway_keys(&self) -> Result<KeySet, ClientError> {
        let res = Self::check(
            self.http
                .get(format!("{}/.well-known/jwks.json", self.base))
                .send()
                .await?,
        )
        .await?;
        let text = res.text().await?;
        KeySet::parse_public(text.as_bytes(), "gateway JWKS")
            .map_err(|e| ClientError::Jose(e.to_string()))
    }

    /// Signs and encrypts `claims` and submits them; returns the gateway's answer. A `503`,
    /// a time-out or a lost connection is retried (up to [`SEND_ATTEMPTS`] tries, waiting as
    /// `Retry-After` says) with the very same claims, so the same `jti`: the gateway answers
    /// a retry of a referral it already accepted with that acceptance, never a second
    /// referral.
    pub async fn send(&self, claims: &Value) -> Result<Value, ClientError> {
        let gateway = self.gateway_keys().await?;
        let signed = claims.to_string();
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let body = partner::wrap(signed.as_bytes(), &self.keys, &gateway)
                .map_err(|e| ClientError::Jose(e.to_string()))?;
            let sent = self
                .http
                .post(format!("{}/v1/referrals", self.base))
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await;
            let last = attempt >= SEND_ATTEMPTS;
            match sent {
                Ok(res) if res.status().as_u16() == 503 && !last => {
                    let wait = res
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map_or(pause, Duration::from_secs);
                    tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
                }
                Ok(res) => return Ok(Self::check(res).await?.json().await?),
                Err(e) if (e.is_timeout() || e.is_connect() || e.is_request()) && !last => {
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e.into()),
            }
            pause = (pause * 2).min(MAX_RETRY_WAIT);
            attempt += 1;
        }
    }

    /// A referral's per-recipient status.
    pub async fn status(&self, id: &str) -> Result<Value, ClientError> {
        let res = self
            .http
            .get(format!("{}/v1/referrals/{id}", self.base))
            .send()
            .await?;
        Ok(Self::check(res).await?.json().await?)
    }

    /// Withdraws a referral's unacknowledged deliveries.
    pub async fn withdraw(&self, id: &str) -> Result<Value, ClientError> {
        let res = self
            .http
            .post(format!("{}/v1/referrals/{id}/withdraw", self.base))
            .send()
            .await?;
        Ok(Self::check(res).await?.json().await?)
    }

    /// One inbox page after `cursor` (a number the gateway issued), long-polling up to `wait`
    /// seconds.
    pub async fn inbox(&self, cursor: &str, wait: u64) -> Result<Value, ClientError> {
        let res = self
            .http
            .get(format!(
                "{}/v1/inbox?cursor={cursor}&wait={wait}",
                self.base
            ))
            .send()
            .await?;
        Ok(Self::check(res).await?.json().await?)
    }

    /// Fetches a delivery, decrypts it with the partner's key and verifies the gateway's
    /// signature; returns the delivery payload.
    pub async fn fetch(&self, id: &str, gateway: &KeySet) -> Result<Value, ClientError> {
        let res = self
            .http
            .get(format!("{}/v1/inbox/{id}", self.base))
            .send()
            .await?;
        let sealed = Self::check(res).await?.text().await?;
        let plain = partner::unwrap(&sealed, &self.keys, gateway)
            .map_err(|e| ClientError::Jose(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| ClientError::Jose(e.to_string()))
    }

    /// Acknowledges a delivery.
    pub async fn ack(&self, id: &str) -> Result<(), ClientError> {
        let res = self
            .http
            .post(format!("{}/v1/inbox/{id}/ack", self.base))
            .send()
            .await?;
        Self::check(res).await.map(|_| ())
    }
}

/// Writes `bytes` to `dir/name` durably and readable by its owner only (a decrypted delivery
/// is personal data): see [`refex_core::files::write_private_durably`]. Only after this
/// returns may a delivery be acknowledged.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    refex_core::files::write_private_durably(dir, name, bytes)
}
