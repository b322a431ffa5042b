//! Mutual TLS and identity through the real server: who gets in, who is refused at the
//! handshake, and who is refused with `403`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "it/common/mod.rs"]
mod common;

use std::time::{Duration, SystemTime};

use common::{Project, unmapped};
use refex::devpki::IssueRequest;
use serde_json::Value;

#[tokio::test]
async fn a_partner_system_certificate_maps_to_its_partner() {
    let project = Project::new();
    let gw = project.start().await;
    let res = gw
        .system("imara")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["partner"], "imara");
    assert_eq!(body["system"], "case-system");
    gw.stop().await;
}

#[tokio::test]
async fn a_named_persons_certificate_carries_their_roles() {
    let project = Project::new();
    let gw = project.start().await;
    let body: Value = gw
        .person("notts-police", "dsl-a")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["partner"], "notts-police");
    assert_eq!(body["person"], "dsl-a");
    assert_eq!(
        body["roles"],
        serde_json::json!(["designated-safeguarding-lead", "practitioner"])
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_chaining_but_unmapped_certificate_gets_403_problem() {
    let project = Project::new();
    let gw = project.start().await;
    let stranger = gw.with_cert(&unmapped(&project));
    let res = stranger.get(gw.url("/v1/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:refex:problem:unknown-principal");
    assert_eq!(body["status"], 403);
    // Unknown routes are refused the same way: an unmapped certificate learns nothing.
    let res = stranger.get(gw.url("/v1/inbox")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    // The public JWKS is still there for it (onboarding needs it).
    let res = stranger
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn no_certificate_fails_the_handshake() {
    let project = Project::new();
    let gw = project.start().await;
    let err = gw
        .anonymous()
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "got an HTTP answer: {err}");
    assert!(
        gw.metrics()
            .await
            .contains(r#"refex_tls_handshake_failures_total{reason="no-certificate"}"#)
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_issuer_fails_the_handshake() {
    let project = Project::new();
    let other_ca = refex::devpki::DevCa::create_named("some other CA", SystemTime::now()).unwrap();
    let foreign = other_ca
        .issue(&IssueRequest::client(
            "imposter".into(),
            "Elsewhere",
            SystemTime::now(),
        ))
        .unwrap();
    let gw = project.start().await;
    let err = gw
        .with_cert(&foreign)
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "got an HTTP answer: {err}");
    let text = gw.metrics().await;
    assert!(
        text.contains(r#"refex_tls_handshake_failures_total{reason="unknown-issuer"}"#),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_fails_the_handshake() {
    let project = Project::new();
    let now = SystemTime::now();
    let mut req = IssueRequest::client("lapsed".into(), "Imara", now);
    req.not_before = now - Duration::from_secs(10 * 86400);
    req.not_after = now - Duration::from_secs(86400);
    let expired = project.ca().issue(&req).unwrap();
    let gw = project.start().await;
    let err = gw
        .with_cert(&expired)
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "got an HTTP answer: {err}");
    assert!(
        gw.metrics()
            .await
            .contains(r#"refex_tls_handshake_failures_total{reason="expired"}"#)
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_fails_the_handshake() {
    let project = Project::new();
    let revoked = unmapped(&project);
    let kept = unmapped(&project);
    project.revoke(std::slice::from_ref(&revoked.serial));
    let gw = project.start().await;
    let err = gw
        .with_cert(&revoked)
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "got an HTTP answer: {err}");
    assert!(
        gw.metrics()
            .await
            .contains(r#"refex_tls_handshake_failures_total{reason="revoked"}"#)
    );
    // A certificate the CRL does not list still completes the handshake (and is 403: unmapped).
    let res = gw
        .with_cert(&kept)
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    gw.stop().await;
}

#[tokio::test]
async fn tls12_with_aead_and_http2_are_negotiated() {
    let project = Project::new();
    let gw = project.start().await;
    let res = gw
        .system_tls12("imara")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = gw
        .system("imara")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let project = Project::with_extra_toml("[limits]\nheader_timeout = \"300ms\"");
    let gw = project.start().await;
    let pki = project.pki();
    let partner = pki.join("partners/imara");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls::pki_types::pem::PemObject::pem_file_iter(partner.join("system.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::pem::PemObject::from_pem_file(partner.join("system.key")).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.running().api_addr)
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // The server must close the connection by itself; the outer bound only keeps a broken
    // server from hanging the suite.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open after the header timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    gw.stop().await;
}
