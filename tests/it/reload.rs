//! Configuration reload without a restart (`POST /admin/reload`; `SIGHUP` runs the same
//! `refex::reload::reload`): a new person's certificate
//! maps after reload, a bad configuration is refused whole while the old one keeps serving,
//! and a certificate revoked in the reloaded CRL is refused on its next handshake and its
//! connections already open are closed.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::time::SystemTime;

use refex::devpki::IssueRequest;
use serde_json::Value;

async fn reload(gw: &common::Gateway) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn whoami(client: &reqwest::Client, gw: &common::Gateway) -> Result<u16, reqwest::Error> {
    client
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_onboards_refuses_bad_configurations_whole_and_applies_revocations() {
    let project = common::Project::with_copied_partners();
    let gw = project.start().await;
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "reloaded");

    // A new safeguarding lead: certificate issued, not yet in partners/ -> 403.
    let issued = project
        .ca()
        .issue(&IssueRequest::client(
            "dsl-new".into(),
            "notts-police",
            SystemTime::now(),
        ))
        .unwrap();
    let people = project.pki().join("partners/notts-police/people");
    std::fs::write(people.join("dsl-new.pem"), &issued.cert_pem).unwrap();
    let newcomer = gw.with_cert(&issued);
    assert_eq!(whoami(&newcomer, &gw).await.unwrap(), 403);

    // A broken partner file next to the addition: the whole reload is refused, with the
    // problem named, and the gateway keeps serving the old configuration.
    let police_toml = project.path().join("partners/notts-police.toml");
    let original = std::fs::read_to_string(&police_toml).unwrap();
    let added = format!(
        "{original}\n[[people]]\nid = \"dsl-new\"\nname = \"New lead (dev)\"\nroles = [\"designated-safeguarding-lead\"]\ncertificate = \"certs/dev/partners/notts-police/people/dsl-new.pem\"\n"
    );
    std::fs::write(&police_toml, &added).unwrap();
    let broken = project.path().join("partners/zz-broken.toml");
    std::fs::write(&broken, "name = \"Broken\"\nkind = \"no-such-kind\"\n").unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "urn:refex:problem:config-refused");
    assert!(
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("zz-broken")),
        "{body}"
    );
    assert_eq!(
        whoami(&newcomer, &gw).await.unwrap(),
        403,
        "nothing of it applied"
    );
    assert_eq!(
        whoami(&gw.system("notts-police"), &gw).await.unwrap(),
        200,
        "the old configuration still serves"
    );

    // Fixed: the reload applies, the newcomer maps, and the reload is audited.
    std::fs::remove_file(&broken).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    let res = newcomer.get(gw.url("/v1/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["person"], "dsl-new");
    let size = gw.running().runtime.store.audit_size().await.unwrap();
    let last = gw
        .running()
        .runtime
        .store
        .audit_leaves(size - 1, 1)
        .await
        .unwrap();
    let leaf = last[0].leaf.clone().unwrap();
    assert!(leaf.contains("\"kind\":\"config-loaded\""), "{leaf}");

    // Revoked in the CRL and reloaded: the next handshake with that certificate fails.
    project.revoke(std::slice::from_ref(&issued.serial));
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    let fresh = gw.with_cert(&issued);
    assert!(
        whoami(&fresh, &gw).await.is_err(),
        "a revoked certificate handshook"
    );
    assert_eq!(whoami(&gw.system("notts-police"), &gw).await.unwrap(), 200);
    gw.stop().await;
}

/// A connection that was verified before its certificate was revoked is closed by the reload
/// that brings the new CRL; other connections carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_revokes_a_certificate_closes_its_open_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let project = common::Project::with_copied_partners();
    let issued = project
        .ca()
        .issue(&IssueRequest::client(
            "dsl-live".into(),
            "notts-police",
            SystemTime::now(),
        ))
        .unwrap();
    let people = project.pki().join("partners/notts-police/people");
    std::fs::write(people.join("dsl-live.pem"), &issued.cert_pem).unwrap();
    std::fs::write(people.join("dsl-live.key"), &issued.key_pem).unwrap();
    let police_toml = project.path().join("partners/notts-police.toml");
    let original = std::fs::read_to_string(&police_toml).unwrap();
    std::fs::write(
        &police_toml,
        format!(
            "{original}\n[[people]]\nid = \"dsl-live\"\nname = \"Live lead (dev)\"\nroles = [\"designated-safeguarding-lead\"]\ncertificate = \"certs/dev/partners/notts-police/people/dsl-live.pem\"\n"
        ),
    )
    .unwrap();
    let gw = project.start().await;

    // A keep-alive HTTP/1.1 connection with the lead's certificate, one request answered.
    let identity = refex::partner_client::Identity {
        cert: people.join("dsl-live.pem"),
        key: people.join("dsl-live.key"),
        jwks_private: people.join("unused"),
        ca: project.pki().join("ca.pem"),
    };
    let mut tls = refex::partner_client::tls_config(&identity).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(gw.running().api_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // Revoked and reloaded: the server ends that connection.
    project.revoke(std::slice::from_ref(&issued.serial));
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the revoked certificate's connection stayed open");
    assert_eq!(whoami(&gw.system("notts-police"), &gw).await.unwrap(), 200);
    gw.stop().await;
}
