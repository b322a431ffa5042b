//! The review console in a real browser: headless Chromium, driven through chromedriver
//! (W3C WebDriver over HTTP), presenting a designated safeguarding lead's client certificate
//! over mutual TLS. It approves one held referral and rejects another, then the recipient's
//! inbox is checked. Screenshots of each page are saved under `target/console-screenshots/`.
//!
//! Needs `chromium`, `chromium-driver` and `libnss3-tools` (`.ci/run` installs them); fails
//! without them unless the run opts out (`REFEX_TEST_SKIP=browser`, never under CI). The lead's certificate goes into an NSS database under a
//! throwaway HOME, and a managed policy makes Chromium pick it for localhost without asking.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use common::partner::{Harness, override_claims};
use refex::envelope::referral::partner;
use serde_json::{Value, json};

fn tools_present() -> bool {
    let ok = [
        "chromium",
        "chromedriver",
        "certutil",
        "pk12util",
        "openssl",
    ]
    .iter()
    .all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    common::prereq::available(
        "browser",
        if ok {
            Ok(())
        } else {
            Err("chromium, chromedriver, certutil, pk12util or openssl not installed".into())
        },
    )
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An NSS database under `home` holding the lead's certificate and key.
fn nss_with_client_cert(home: &Path, cert: &Path, key: &Path) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let p12 = home.join("lead.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:", "-out"])
        .arg(&p12)
        .arg("-inkey")
        .arg(key)
        .arg("-in")
        .arg(cert));
    run(Command::new("certutil")
        .args(["-N", "--empty-password", "-d"])
        .arg(format!("sql:{}", db.display())));
    run(Command::new("pk12util")
        .args(["-W", "", "-i"])
        .arg(&p12)
        .arg("-d")
        .arg(format!("sql:{}", db.display())));
}

/// Chromium reads managed policies from here; this one selects a client certificate for
/// localhost without a prompt (headless has no prompt to answer).
fn client_cert_policy() {
    let dir = Path::new("/etc/chromium/policies/managed");
    std::fs::create_dir_all(dir).unwrap();
    let pattern = json!({ "pattern": "https://localhost", "filter": {} }).to_string();
    std::fs::write(
        dir.join("refex-test-client-cert.json"),
        json!({ "AutoSelectCertificateForUrls": [pattern] }).to_string(),
    )
    .unwrap();
}

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Driver {
    async fn start(home: &Path, profile: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // chromedriver is ready when it answers /status.
        for _ in 0..200 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--ignore-certificate-errors", "--window-size=1200,1400",
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Self {
            child,
            base,
            session,
            http,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let v: Value = self
            .http
            .request(method, url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["value"].get("error").is_none(), "{path}: {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", json!({}))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn selected(&self, css: &str) -> bool {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{id}/selected"),
            json!({}),
        )
        .await
            == json!(true)
    }

    /// The page source once it contains `needle` (a navigation may still be completing after a
    /// click); bounded, so a broken page fails the test rather than hanging it.
    async fn source_containing(&self, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            last = self.source().await;
            if last.contains(needle) {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("page never showed {needle:?}:\n{last}")
    }

    async fn screenshot(&self, dir: &Path, name: &str) {
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_approves_and_rejects_in_a_real_browser() {
    if !tools_present() {
        return;
    }
    let h = Harness::start(None).await;
    let approve_me = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "browser-jti-0001"),
        )
        .await;
    let reject_me = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "browser-jti-0002"),
        )
        .await;

    let home = tempfile::tempdir().unwrap();
    let people = h.project.pki().join("partners/notts-police/people");
    nss_with_client_cert(
        home.path(),
        &people.join("dsl-a.pem"),
        &people.join("dsl-a.key"),
    );
    client_cert_policy();
    let shots: PathBuf = common::repo().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let browser = Driver::start(home.path(), profile.path()).await;
    let base = format!("https://localhost:{}", h.gw.running().api_addr.port());

    browser.goto(&format!("{base}/console/")).await;
    let queue = browser.source().await;
    assert!(
        queue.contains("Held referrals awaiting review") && queue.contains(&approve_me),
        "{queue}"
    );
    browser.screenshot(&shots, "1-queue").await;

    browser
        .click(&format!("a[href='/console/reviews/{approve_me}']"))
        .await;
    let preview = browser.source().await;
    assert!(preview.contains("Withheld by minimisation") && preview.contains("/offence/narrative"));
    browser.screenshot(&shots, "2-review").await;
    browser.click("input[value='approve']").await;
    assert!(
        browser.selected("input[value='approve']").await,
        "the radio button took the click"
    );
    browser.click("button[type='submit']").await;
    browser
        .source_containing(&format!("Decision recorded for {approve_me}"))
        .await;
    browser.screenshot(&shots, "3-approved").await;

    browser
        .goto(&format!("{base}/console/reviews/{reject_me}"))
        .await;
    browser.click("input[value='reject']").await;
    browser
        .type_into(
            "#reason-1",
            "Threshold not met; advice given to the officer.",
        )
        .await;
    browser.click("button[type='submit']").await;
    browser
        .source_containing(&format!("Decision recorded for {reject_me}"))
        .await;
    browser.goto(&format!("{base}/console/sent")).await;
    let sent = browser.source().await;
    assert!(
        sent.contains("imara: queued") && sent.contains("imara: rejected-by-review"),
        "{sent}"
    );
    browser.screenshot(&shots, "4-sent").await;
    browser.quit().await;

    // What the recipient's inbox then holds: the approved referral only.
    let inbox: Value =
        h.gw.system("imara")
            .get(h.gw.url("/v1/inbox"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let messages = inbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let id = messages[0]["id"].as_str().unwrap();
    let sealed =
        h.gw.system("imara")
            .get(h.gw.url(&format!("/v1/inbox/{id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    let d: Value = serde_json::from_slice(
        &partner::unwrap(&sealed, &h.keys("imara"), &h.gateway_public()).unwrap(),
    )
    .unwrap();
    assert_eq!(d["delivery"]["referral_id"], approve_me.as_str());
    h.gw.stop().await;
}
