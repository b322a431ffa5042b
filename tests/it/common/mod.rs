//! Test harness: a gateway on random ports over a throwaway dev PKI, and HTTPS clients that
//! present a given principal's certificate, as a partner system would.
#![allow(dead_code, clippy::unwrap_used)]

pub mod partner;
pub mod pg;
pub mod pgproxy;
pub mod prereq;
pub mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use refex::app::{self, Running};
use refex::clock::SystemClock;
use refex::config::{self, Overrides};
use refex::devpki::{self, DevCa, IssueRequest, Issued};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An audit leaf's detail, as the canonical JSON the gateway wrote inside it.
#[allow(dead_code)]
pub fn detail_of(leaf: &str) -> String {
    refex::audit::event::AuditRecord::from_leaf(leaf)
        .unwrap_or_else(|e| panic!("a stored leaf does not parse ({e}): {leaf}"))
        .1
        .event
        .detail_json()
}

/// A packed audit detail (store format 4), as the canonical JSON the gateway packed.
#[allow(dead_code)]
pub fn packed_detail_of(kind: &str, packed: &[u8]) -> String {
    let detail = refex::store::packed::unpack(packed)
        .unwrap_or_else(|e| panic!("a stored detail does not unpack ({e})"));
    refex::audit::event::AuditEvent::parse(kind, &detail)
        .unwrap_or_else(|e| panic!("a stored detail does not parse ({e}): {detail}"))
        .detail_json()
}

/// The repository root (where `partners/` and `schemas/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A project directory for one test: links to the shipped `partners/` and `schemas/`, a
/// freshly generated dev PKI, and a `refex.toml` with random ports.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// Links the shipped sample configuration and generates a dev PKI.
    pub fn new() -> Self {
        Self::with_extra_toml("")
    }

    /// As [`Project::new`], with extra top-level TOML lines (before any table).
    pub fn with_extra_toml(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(repo().join("partners"), dir.path().join("partners")).unwrap();
        std::os::unix::fs::symlink(repo().join("schemas"), dir.path().join("schemas")).unwrap();
        let project = Self { dir };
        project.write_toml(extra);
        devpki::generate(
            &project.pki(),
            &project.path().join("partners"),
            &project.path().join("partners/agreements.toml"),
            false,
            SystemTime::now(),
        )
        .expect("dev PKI");
        project
    }

    /// A project whose `partners/` is a copy the test may edit.
    pub fn with_copied_partners() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&repo().join("partners"), &dir.path().join("partners"));
        copy_dir(&repo().join("schemas"), &dir.path().join("schemas"));
        let project = Self { dir };
        project.write_toml("");
        devpki::generate(
            &project.pki(),
            &project.path().join("partners"),
            &project.path().join("partners/agreements.toml"),
            false,
            SystemTime::now(),
        )
        .expect("dev PKI");
        project
    }

    fn write_toml(&self, extra: &str) {
        std::fs::write(
            self.path().join("refex.toml"),
            format!(
                "mode = \"development\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}\n[log]\nformat = \"text\"\nfilter = \"warn\"\n"
            ),
        )
        .unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The dev PKI directory.
    pub fn pki(&self) -> PathBuf {
        self.path().join("certs/dev")
    }

    /// The settings `refex serve` would use here, with an optional store URL.
    pub fn settings(&self, store_url: Option<String>) -> refex::config::settings::Settings {
        config::load_settings(
            &self.path().join("refex.toml"),
            true,
            &Overrides {
                store_url,
                ..Overrides::default()
            },
        )
        .expect("settings")
    }

    /// Starts a gateway on SQLite under the project.
    pub async fn start(&self) -> Gateway {
        self.start_with(None).await
    }

    /// Starts a gateway on the given store.
    pub async fn start_with(&self, store_url: Option<String>) -> Gateway {
        self.start_with_clock(store_url, Arc::new(SystemClock))
            .await
    }

    /// Starts a gateway on the given store and clock.
    pub async fn start_with_clock(
        &self,
        store_url: Option<String>,
        clock: Arc<dyn refex::clock::Clock>,
    ) -> Gateway {
        let running = app::start(self.settings(store_url), clock)
            .await
            .expect("gateway starts");
        Gateway {
            running: Some(running),
            pki: self.pki(),
        }
    }

    /// The dev CA, to issue extra certificates.
    pub fn ca(&self) -> DevCa {
        DevCa::load(&self.pki()).expect("dev CA")
    }

    /// Replaces the dev CRL with one revoking `serials`.
    pub fn revoke(&self, serials: &[Vec<u8>]) {
        let crl = self.ca().crl(serials, SystemTime::now()).unwrap();
        std::fs::write(self.pki().join("crl.pem"), crl).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A running gateway.
pub struct Gateway {
    running: Option<Running>,
    pki: PathBuf,
}

impl Gateway {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// `https://localhost:<port>` of the API listener.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.running().api_addr.port())
    }

    /// `http://127.0.0.1:<port>` of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().admin_addr)
    }

    /// A client presenting `partner`'s system certificate.
    pub fn system(&self, partner: &str) -> reqwest::Client {
        let dir = self.pki.join("partners").join(partner);
        client(
            &self.pki,
            Some((&dir.join("system.pem"), &dir.join("system.key"))),
            None,
        )
    }

    /// A client presenting a named person's certificate.
    pub fn person(&self, partner: &str, person: &str) -> reqwest::Client {
        let dir = self.pki.join("partners").join(partner).join("people");
        client(
            &self.pki,
            Some((
                &dir.join(format!("{person}.pem")),
                &dir.join(format!("{person}.key")),
            )),
            None,
        )
    }

    /// A client presenting an arbitrary issued certificate.
    pub fn with_cert(&self, issued: &Issued) -> reqwest::Client {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &issued.cert_pem).unwrap();
        std::fs::write(&k, &issued.key_pem).unwrap();
        client(&self.pki, Some((&c, &k)), None)
    }

    /// A client with no certificate.
    pub fn anonymous(&self) -> reqwest::Client {
        client(&self.pki, None, None)
    }

    /// A client presenting `partner`'s system certificate that speaks HTTP/1.1 only (no h2
    /// in ALPN).
    pub fn system_http1(&self, partner: &str) -> reqwest::Client {
        let dir = self.pki.join("partners").join(partner);
        client_with(
            &self.pki,
            Some((&dir.join("system.pem"), &dir.join("system.key"))),
            None,
            &[b"http/1.1"],
        )
    }

    /// A client that only speaks TLS 1.2.
    pub fn system_tls12(&self, partner: &str) -> reqwest::Client {
        let dir = self.pki.join("partners").join(partner);
        client(
            &self.pki,
            Some((&dir.join("system.pem"), &dir.join("system.key"))),
            Some(&rustls::version::TLS12),
        )
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// An HTTPS client trusting the dev CA, optionally with a client certificate.
pub fn client(
    pki: &Path,
    identity: Option<(&Path, &Path)>,
    only: Option<&'static rustls::SupportedProtocolVersion>,
) -> reqwest::Client {
    client_with(pki, identity, only, &[b"h2", b"http/1.1"])
}

/// As [`client`], offering exactly `alpn`.
pub fn client_with(
    pki: &Path,
    identity: Option<(&Path, &Path)>,
    only: Option<&'static rustls::SupportedProtocolVersion>,
    alpn: &[&[u8]],
) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(pki, identity, only, alpn))
        .build()
        .unwrap()
}

/// The rustls client configuration [`client_with`] uses (for tests that speak TLS or HTTP/2
/// frames themselves).
pub fn tls_config(
    pki: &Path,
    identity: Option<(&Path, &Path)>,
    only: Option<&'static rustls::SupportedProtocolVersion>,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    refex::tls::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match only {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ClientConfig::builder_with_protocol_versions(&versions)
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A client certificate from the project's CA that no partner file names.
pub fn unmapped(project: &Project) -> Issued {
    project
        .ca()
        .issue(&IssueRequest::client(
            "stranger".into(),
            "Nobody Ltd",
            SystemTime::now(),
        ))
        .unwrap()
}

/// Runs each scenario (an `async fn(Option<String>)` taking a store URL, `None` for the
/// embedded SQLite) as two tests, `<name>::on_sqlite` and `<name>::on_postgres`; the second
/// gets its own PostgreSQL schema (and fails under `CI=true` when PostgreSQL is unreachable).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident => $scenario:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$scenario(None).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    let Some(url) = $crate::common::pg::fresh_schema().await else {
                        return;
                    };
                    super::$scenario(Some(url.clone())).await;
                    $crate::common::pg::drop_schema(&url).await;
                }
            }
        )+
    };
}
