//! A day in the console in a real browser: headless Chromium driven through chromedriver (W3C
//! WebDriver over HTTP), each person presenting their own client certificate over mutual TLS.
//! An Imara practitioner (a hosted partner) composes a safeguarding concern in the form, is
//! shown a field error beside the field, fixes it and sends it; a police practitioner's
//! override referral is held; the police lead reads the review document, approves one
//! recipient and rejects another; the Imara practitioner reads the delivery and acknowledges
//! it; the police sender sees the statuses. Every page is checked by axe-core (WCAG 2.2 A and
//! AA rules) with no serious or critical violation, and screenshotted under
//! `target/console-screenshots/`.
//!
//! Needs `chromium`, `chromium-driver`, `libnss3-tools` and `npm` (`.ci/run` installs them;
//! axe-core is installed from npm into `target/axe` on first use); fails without them unless
//! the run opts out (`REFEX_TEST_SKIP=browser`, never under CI). Each person's certificate
//! goes into an NSS database under their own throwaway HOME, and a managed policy makes
//! Chromium pick it for localhost without asking.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use common::partner::{Harness, override_claims};
use serde_json::{Value, json};

fn tools_present() -> bool {
    let ok = [
        "chromium",
        "chromedriver",
        "certutil",
        "pk12util",
        "openssl",
        "npm",
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
            Err("chromium, chromedriver, certutil, pk12util, openssl or npm not installed".into())
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

/// axe-core's browser bundle, installed from npm into `target/axe` when missing.
fn axe_source() -> String {
    let dir = common::repo().join("target/axe");
    let file = dir.join("node_modules/axe-core/axe.min.js");
    if !file.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "axe-core@4",
            ])
            .current_dir(&dir));
    }
    std::fs::read_to_string(file).unwrap()
}

/// An NSS database under `home` holding one person's certificate and key.
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

    async fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Runs axe-core on the page; fails the test on any serious or critical violation of
    /// the WCAG 2.0-2.2 A and AA rules. Returns how many rules ran clean.
    async fn axe(&self, axe: &str, page: &str) {
        self.execute(&format!("{axe}\nreturn true;"), json!([]))
            .await;
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/execute/async",
                json!({ "args": [], "script": "const done = arguments[arguments.length - 1];
                    axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] } })
                      .then(r => done(JSON.stringify({ passes: r.passes.length, violations: r.violations.map(v => ({
                          id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map(n => n.target.join(' ')) })) })))
                      .catch(e => done(JSON.stringify({ error: String(e) })));" }),
            )
            .await;
        let report: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
        assert!(
            report.get("error").is_none(),
            "{page}: axe failed: {report}"
        );
        let bad: Vec<&Value> = report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            bad.is_empty(),
            "{page}: axe found serious or critical violations: {bad:#?}"
        );
        assert!(
            report["passes"].as_u64().unwrap() > 5,
            "{page}: axe ran: {report}"
        );
        let all = report["violations"].as_array().unwrap();
        if !all.is_empty() {
            eprintln!("{page}: minor or moderate axe findings: {all:#?}");
        }
    }

    /// Clicks the radio or checkbox whose label contains `text` in the group `name`.
    async fn choose_labelled(&self, name: &str, text: &str) {
        let found = self
            .execute(
                "for (const i of document.querySelectorAll(`input[name='${arguments[0]}']`)) {
                   const l = document.querySelector(`label[for='${i.id}']`);
                   if (l && l.textContent.includes(arguments[1])) { i.click(); return i.checked; }
                 } return false;",
                json!([name, text]),
            )
            .await;
        assert_eq!(found, json!(true), "no {name} labelled {text:?}");
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

/// A browser for one person: their certificate in their own NSS database and profile.
struct Person {
    driver: Driver,
    _home: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

async fn person(h: &Harness, partner: &str, id: &str) -> Person {
    let home = tempfile::tempdir().unwrap();
    let people = h.project.pki().join(format!("partners/{partner}/people"));
    nss_with_client_cert(
        home.path(),
        &people.join(format!("{id}.pem")),
        &people.join(format!("{id}.key")),
    );
    let profile = tempfile::tempdir().unwrap();
    Person {
        driver: Driver::start(home.path(), profile.path()).await,
        _home: home,
        _profile: profile,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_in_the_console_in_a_real_browser() {
    if !tools_present() {
        return;
    }
    let axe = axe_source();
    client_cert_policy();
    let h = Harness::start(None).await;
    let base = format!("https://localhost:{}", h.gw.running().api_addr.port());
    let shots: PathBuf = common::repo().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // 1. An Imara practitioner composes a safeguarding concern.
    let imara = person(&h, "imara", "practitioner-1").await;
    let b = &imara.driver;
    b.goto(&format!("{base}/console/compose")).await;
    b.screenshot(&shots, "00-compose-choose-type").await;
    b.axe(&axe, "compose: choose a type").await;
    // A page this practitioner may not open is a readable refusal, as accessible as the rest.
    b.goto(&format!("{base}/console/")).await;
    b.source_containing("Not permitted").await;
    b.screenshot(&shots, "00-refused").await;
    b.axe(&axe, "a refusal (403)").await;
    b.goto(&format!("{base}/console/compose")).await;
    b.click("a[href='/console/compose/safeguarding-concern']")
        .await;
    b.source_containing("Subject of the concern").await;
    b.screenshot(&shots, "01-compose-form").await;
    b.axe(&axe, "compose: the form").await;
    b.type_into("#sender_ref", "IM/2026/0042").await;
    b.click("input[name='to'][value='notts-police']").await;
    b.choose_labelled("basis", "Nottinghamshire Police").await;
    b.click("input[name='consent'][value='given']").await;
    b.click("input[name='informed'][value='yes']").await;
    b.type_into("#field-subject-name-given", "Noah").await;
    b.click("input[name='f/subject/is_child'][value='true']")
        .await;
    b.click("select[name='f/concern/category'] option[value='neglect']")
        .await;
    b.type_into(
        "#field-concern-summary",
        "Arrives at sessions hungry and unkempt.",
    )
    .await;
    b.click("input[name='f/immediate_risk'][value='false']")
        .await;
    b.type_into("#field-referrer-name", "Sam Worker").await;
    b.type_into("#field-referrer-role", "CHISVA").await;
    b.type_into("#field-referrer-organisation", "Imara").await;
    b.click("button[name='send']").await;
    // The family name was left out: the error is beside the field and in a linked summary.
    let page = b.source_containing("There is a problem").await;
    assert!(
        page.contains("href=\"#field-subject-name-family\"")
            && page.contains("id=\"field-subject-name-family-error\""),
        "{page}"
    );
    b.screenshot(&shots, "02-compose-field-error").await;
    b.axe(&axe, "compose: with a field error").await;
    b.click("a[href='#field-subject-name-family']").await;
    b.type_into("#field-subject-name-family", "Example").await;
    b.click("button[name='send']").await;
    let page = b.source_containing("Referral sent").await;
    assert!(page.contains("In the inbox, not yet opened"), "{page}");
    b.screenshot(&shots, "03-compose-sent").await;
    b.axe(&axe, "sent referrals after sending").await;

    // 2. A police practitioner's override referral to two recipients is held.
    let held = h
        .submit_held(
            &h.gw.person("notts-police", "dsl-a"),
            &override_claims(&["imara", "childrens-social-care"], "browser-jti-0001"),
        )
        .await;

    // 3. Another police lead reads the review document and decides each recipient.
    let lead = person(&h, "notts-police", "dsl-b").await;
    let b = &lead.driver;
    b.goto(&format!("{base}/console/")).await;
    let queue = b.source().await;
    assert!(
        queue.contains("NP/2026/118822")
            && queue.contains("Designated Safeguarding Lead A (dev)")
            && queue.contains("Consent override: risk of significant harm"),
        "{queue}"
    );
    b.screenshot(&shots, "04-review-queue").await;
    b.axe(&axe, "review queue").await;
    b.click(&format!("a[href='/console/reviews/{held}']")).await;
    let doc = b.source_containing("The referral, field by field").await;
    assert!(
        doc.contains("Account of the abuse") && !doc.contains("/offence/narrative"),
        "{doc}"
    );
    b.screenshot(&shots, "05-review-document").await;
    b.axe(&axe, "review document").await;
    b.click("#decision-imara-approve").await;
    assert!(
        b.selected("#decision-imara-approve").await,
        "the radio button took the click"
    );
    b.click("#decision-childrens-social-care-reject").await;
    // Rejecting without a reason: the error sits at that recipient, linked from a summary.
    b.click("button[type='submit']").await;
    let page = b.source_containing("There is a problem").await;
    assert!(
        page.contains("Give a reason for not releasing to Children"),
        "{page}"
    );
    b.screenshot(&shots, "05-review-decision-error").await;
    b.axe(&axe, "review document with a decision error").await;
    if !b.selected("#decision-imara-approve").await {
        b.click("#decision-imara-approve").await;
    }
    if !b.selected("#decision-childrens-social-care-reject").await {
        b.click("#decision-childrens-social-care-reject").await;
    }
    b.type_into(
        "#reason-childrens-social-care",
        "Already known to the family's social worker; no new information.",
    )
    .await;
    b.click("button[type='submit']").await;
    let page = b.source_containing("Decision recorded").await;
    assert!(
        page.contains("Released to Imara") && page.contains("Not released to Children"),
        "{page}"
    );
    b.screenshot(&shots, "06-review-decided").await;
    b.axe(&axe, "queue after a decision").await;
    // A referral that is not (or no longer) there: the problem page.
    b.goto(&format!("{base}/console/reviews/{held}")).await;
    b.source_containing("already").await;
    b.screenshot(&shots, "06-review-already-decided").await;
    b.axe(&axe, "a problem page (already decided)").await;
    lead.driver.quit().await;

    // 4. The Imara practitioner reads the delivery and acknowledges it.
    let b = &imara.driver;
    b.goto(&format!("{base}/console/inbox")).await;
    b.source_containing("In the inbox, not yet opened").await;
    b.screenshot(&shots, "07-inbox").await;
    b.axe(&axe, "inbox").await;
    b.click("a[href^='/console/inbox/dlv_']").await;
    let doc = b
        .source_containing("Not shared with your organisation")
        .await;
    assert!(doc.contains("NP/2026/118822"), "{doc}");
    b.screenshot(&shots, "08-delivery").await;
    b.axe(&axe, "delivery document").await;
    b.click("form[action$='/ack'] button").await;
    b.source_containing("is acknowledged").await;
    b.screenshot(&shots, "09-acknowledged").await;
    b.axe(&axe, "inbox after acknowledging").await;
    // Its own referral to the police is still open: withdrawing asks first.
    b.goto(&format!("{base}/console/sent")).await;
    b.click("a[href$='/withdraw']").await;
    b.source_containing("This cannot be undone").await;
    b.screenshot(&shots, "09-withdraw-confirm").await;
    b.axe(&axe, "withdrawal confirmation").await;
    b.click("form[action$='/withdraw'] button").await;
    b.source_containing("Referral withdrawn").await;
    b.screenshot(&shots, "09-withdrawn").await;
    b.axe(&axe, "sent referrals after withdrawing").await;
    imara.driver.quit().await;

    // 5. The police sender sees each recipient's status.
    let sender = person(&h, "notts-police", "dsl-a").await;
    let b = &sender.driver;
    b.goto(&format!("{base}/console/sent")).await;
    let sent = b.source().await;
    assert!(
        sent.contains(&held)
            && sent.contains("Acknowledged")
            && sent.contains("Not released: the lead rejected it")
            && sent.contains("Already known to the family"),
        "the sender sees each status and the lead's reason: {sent}"
    );
    b.screenshot(&shots, "10-sent-statuses").await;
    b.axe(&axe, "sent referrals").await;
    sender.driver.quit().await;
    h.gw.stop().await;
}
