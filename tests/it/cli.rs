//! The `refex` binary as operators and outside suites drive it: `dev-pki`, first start on a
//! fresh checkout, a refused configuration, reload on SIGHUP, and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStderr, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_refex");

/// A fresh checkout's layout: partners and schemas, a refex.toml on random ports, no PKI.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(common::repo().join("partners"), dir.path().join("partners"))
        .unwrap();
    std::os::unix::fs::symlink(common::repo().join("schemas"), dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("refex.toml"),
        "mode = \"development\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    dir
}

fn refex(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("REFEX_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Reads `stderr` until a line contains `needle`; returns everything read. One reader per
/// child, so nothing buffered is lost between calls.
fn read_until(stderr: &mut BufReader<ChildStderr>, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("stderr closed before {needle:?}:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
}

#[test]
fn dev_pki_writes_the_contract_layout_and_refuses_to_overwrite() {
    let dir = checkout();
    let out = refex(dir.path())
        .args(["dev-pki", "--out", "certs/dev"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEVELOPMENT ONLY"));
    let pki = dir.path().join("certs/dev");
    for file in [
        "ca.pem",
        "ca.key",
        "crl.pem",
        "gateway/tls.pem",
        "gateway/tls.key",
        "gateway/jwks.private.json",
        "partners/notts-police/system.pem",
        "partners/notts-police/system.key",
        "partners/notts-police/jwks.private.json",
        "partners/notts-police/jwks.json",
        "partners/notts-police/people/dsl-a.pem",
        "partners/notts-police/people/dsl-a.key",
        "partners/mopac/system.pem",
    ] {
        assert!(pki.join(file).is_file(), "{file} missing");
    }
    let partners = std::fs::read_dir(pki.join("partners")).unwrap().count();
    assert_eq!(partners, 16);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pki.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "ca.key readable by others: {mode:o}");
    // Partner JWKs: EC P-256, one enc and one sig, each with kid/use/alg; public file has no "d".
    let public: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pki.join("partners/imara/jwks.json")).unwrap())
            .unwrap();
    for key in public["keys"].as_array().unwrap() {
        assert_eq!(key["crv"], "P-256");
        assert!(key["kid"].is_string() && key["use"].is_string() && key["alg"].is_string());
        assert!(key.get("d").is_none());
    }

    let again = refex(dir.path())
        .args(["dev-pki", "--out", "certs/dev"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = refex(dir.path())
        .args(["dev-pki", "--out", "certs/dev", "--force"])
        .output()
        .unwrap();
    assert!(forced.status.success());
}

#[test]
fn first_serve_generates_the_dev_pki_and_sigterm_exits_cleanly() {
    let dir = checkout();
    let mut child = refex(dir.path())
        .args(["serve", "--data-dir", "data"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let log = read_until(&mut stderr, "ready to accept");
    assert!(log.contains("DEVELOPMENT-ONLY"), "{log}");
    assert!(dir.path().join("certs/dev/ca.pem").is_file());
    assert!(dir.path().join("data/refex.db").is_file());
    // The ready line is one JSON object naming both listeners.
    let ready = log.lines().find(|l| l.contains("ready to accept")).unwrap();
    let ready: serde_json::Value = serde_json::from_str(ready).expect("JSON log line");
    assert!(
        ready["api"].is_string() && ready["admin"].is_string(),
        "{ready}"
    );

    // A request with a body carrying a distinctive value: the log names the request, never the body.
    let api = ready["api"].as_str().unwrap().to_owned();
    let pki = dir.path().join("certs/dev");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let partner = pki.join("partners/imara");
        let client = common::client(
            &pki,
            Some((&partner.join("system.pem"), &partner.join("system.key"))),
            None,
        );
        let port = api.rsplit(':').next().unwrap();
        let res = client
            .get(format!("https://localhost:{port}/v1/whoami"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let res = client
            .post(format!("https://localhost:{port}/v1/whoami"))
            .body(r#"{"child":{"name":"CANARY-Zebedee-7731"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405);

        // An invalid referral with a planted value: 422, and the value reaches no log line.
        let keys = |p: &str| refex::envelope::keys::KeySet::load_private(&pki.join(p)).unwrap();
        let gw_private: serde_json::Value =
            serde_json::from_slice(&std::fs::read(pki.join("gateway/jwks.private.json")).unwrap()).unwrap();
        let gw_public = refex::envelope::keys::KeySet::parse_public(
            refex::envelope::keys::public_document(&gw_private).unwrap().to_string().as_bytes(),
            "gw",
        )
        .unwrap();
        let mut payload: serde_json::Value = serde_json::from_slice(
            &std::fs::read(common::repo().join("schemas/examples/safeguarding-concern/child-neglect.json")).unwrap(),
        )
        .unwrap();
        payload["subject"]["date_of_birth"] = "CANARY-Zebedee-7731".into();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({
            "iss": "imara", "aud": "refex", "jti": "cli-canary-0001", "iat": now,
            "referral": { "type": "safeguarding-concern", "to": ["childrens-social-care"], "sender_ref": "IM/1",
                "lawful_basis": { "article6": "public-task", "article9": "substantial-public-interest", "dpa2018_schedule1": "para-18-safeguarding-children" },
                "consent": { "status": "given" }, "subject_informed": { "status": "yes" }, "payload": payload }
        });
        let body = refex::envelope::referral::partner::wrap(
            claims.to_string().as_bytes(),
            &keys("partners/imara/jwks.private.json"),
            &gw_public,
        )
        .unwrap();
        let res = client
            .post(format!("https://localhost:{port}/v1/referrals"))
            .header("content-type", "application/jose")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422);
        assert!(!res.text().await.unwrap().contains("CANARY"));
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest = read_until(&mut stderr, "refex stopped");
    assert!(rest.contains("shutdown requested"), "{rest}");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");

    let finished: Vec<serde_json::Value> = rest
        .lines()
        .filter(|l| l.contains("request finished"))
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    assert_eq!(finished.len(), 3, "{rest}");
    for line in &finished {
        assert_eq!(
            line["span"]["principal"], "imara/system:case-system",
            "{line}"
        );
        assert!(line["span"]["request_id"].is_string(), "{line}");
    }
    let routes: Vec<&str> = finished
        .iter()
        .map(|l| l["span"]["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes, vec!["/v1/whoami", "/v1/whoami", "/v1/referrals"]);
    assert!(
        !rest.contains("CANARY"),
        "a body value reached the log:\n{rest}"
    );
}

#[test]
fn serve_refuses_a_bad_configuration_naming_every_problem() {
    let dir = checkout();
    std::fs::write(
        dir.path().join("refex.toml"),
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nschemas_dir = \"missing-schemas\"\n[tls]\nserver_cert = \"nope.pem\"\nserver_key = \"nokey.pem\"\n",
    )
    .unwrap();
    let out = refex(dir.path())
        .args(["serve", "--data-dir", "data"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("configuration refused"), "{err}");
    assert!(err.contains("nope.pem"), "{err}");
    assert!(err.contains("missing-schemas"), "{err}");
    assert!(err.contains("nokey.pem"), "{err}");
    assert!(err.contains("keys.gateway_jwks is not set"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start touched the store"
    );
}

#[test]
fn purge_runs_one_housekeeping_pass_and_reports_it() {
    let dir = checkout();
    let out = refex(dir.path()).args(["dev-pki"]).output().unwrap();
    assert!(out.status.success());
    let out = refex(dir.path())
        .args(["purge", "--data-dir", "data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("expired 0 deliveries"), "{stdout}");
    assert!(dir.path().join("data/refex.db").is_file());
}

/// `SIGHUP` reloads: a broken partner file is refused (logged, the process keeps serving),
/// and once it is fixed the next `SIGHUP` puts the configuration in force.
#[test]
fn sighup_reloads_and_a_bad_configuration_is_refused_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let partners = dir.path().join("partners");
    std::fs::create_dir_all(&partners).unwrap();
    for entry in std::fs::read_dir(common::repo().join("partners")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), partners.join(entry.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(common::repo().join("schemas"), dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("refex.toml"),
        "mode = \"development\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = refex(dir.path())
        .args(["serve", "--data-dir", "data"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    read_until(&mut stderr, "ready to accept");
    let pid = child.id().to_string();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };

    let broken = partners.join("zz-broken.toml");
    std::fs::write(&broken, "name = \"Broken\"\nkind = \"no-such-kind\"\n").unwrap();
    hup();
    let refused = read_until(&mut stderr, "configuration reload refused");
    assert!(refused.contains("zz-broken"), "{refused}");
    assert!(child.try_wait().unwrap().is_none(), "the gateway stopped");

    std::fs::remove_file(&broken).unwrap();
    hup();
    read_until(&mut stderr, "configuration reloaded");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    read_until(&mut stderr, "refex stopped");
    assert!(child.wait().unwrap().success());
}
