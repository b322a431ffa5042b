//! Production mode fails loudly (issue 17, findings 3, 5, 6, 10): no PKI, no key, a CA with no
//! CRL or a CRL past its `nextUpdate` refuse the start; a CRL falling due is warned about
//! (log, metric, `/readyz`); offline commands never generate keys; key files readable by
//! others are refused (production) or warned about (development); what the gateway and its
//! tools write is private; readiness is announced only once the signal handlers exist; the
//! README's "stranger" recipe makes a certificate that gets the documented 403.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::Project;
use refex::clock::ManualClock;
use refex::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_refex");
const DAY: Duration = Duration::from_secs(86_400);

/// A checkout with the shipped partners and schemas, no PKI, and `refex.toml` as given.
fn checkout(toml: &str) -> tempfile::TempDir {
    let dir = common::process::layout();
    std::fs::write(dir.path().join("refex.toml"), toml).unwrap();
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

/// Runs `cmd` for at most 30 s: a gateway that starts when it should refuse is a failure,
/// not a hang.
fn run_bounded(cmd: &mut Command) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after 30 s: it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A production `refex.toml` over the project's dev PKI files (as an operator would point
/// at real ones), with the given CRL list and client CA bundle.
fn production_toml(project: &Project, crls: &[&Path], client_ca: &Path) -> String {
    let p = project.pki();
    let p = p.display();
    let crls: Vec<String> = crls
        .iter()
        .map(|c| format!("\"{}\"", c.display()))
        .collect();
    format!(
        "mode = \"production\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [tls]\nserver_cert = \"{p}/gateway/tls.pem\"\nserver_key = \"{p}/gateway/tls.key\"\n\
         client_ca = \"{}\"\ncrls = [{}]\n\
         [keys]\ngateway_jwks = \"{p}/gateway/jwks.private.json\"\n\
         storage_key = \"{p}/gateway/storage.key\"\nsubject_key = \"{p}/gateway/subject.key\"\n\
         [log]\nformat = \"text\"\nfilter = \"warn\"\n",
        client_ca.display(),
        crls.join(", ")
    )
}

fn write_production(project: &Project, crls: &[&Path]) {
    let toml = production_toml(project, crls, &project.pki().join("ca.pem"));
    std::fs::write(project.path().join("refex.toml"), toml).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn production_without_a_pki_refuses_to_start_and_generates_nothing() {
    // No `mode` key: production is the default.
    let dir = checkout("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n");
    let (ok, err) = run_bounded(refex(dir.path()).args(["serve", "--data-dir", "data"]));
    assert!(!ok);
    for key in [
        "tls.server_cert is not set",
        "tls.server_key is not set",
        "keys.gateway_jwks is not set",
        "keys.storage_key is not set",
        "keys.subject_key is not set",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(err.contains("mode = \\\"development\\\"") || err.contains("mode = \"development\""));
    assert!(!dir.path().join("certs/dev").exists(), "generated a PKI");
    assert!(!dir.path().join("data").exists(), "touched the store");
}

#[test]
fn offline_commands_never_generate_keys() {
    let dir = checkout("mode = \"development\"\n");
    for args in [
        vec!["purge", "--data-dir", "data"],
        vec!["keys", "rotate", "--data-dir", "data"],
        vec![
            "report",
            "--data-dir",
            "data",
            "--from",
            "2026-01",
            "--to",
            "2026-02",
        ],
    ] {
        let (ok, err) = run_bounded(refex(dir.path()).args(&args));
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains("no development PKI"), "{args:?}: {err}");
        assert!(
            err.contains("offline commands never generate keys"),
            "{err}"
        );
        assert!(
            !dir.path().join("certs/dev").exists(),
            "{args:?} generated a PKI"
        );
    }
}

#[test]
fn production_needs_a_crl_from_every_issuing_ca() {
    let project = Project::new();
    let now = SystemTime::now();
    // A second partner CA in the bundle, with no CRL.
    let other = refex::devpki::DevCa::create_named("refex other partner CA", now).unwrap();
    let bundle = project.path().join("bundle.pem");
    let dev_ca = std::fs::read_to_string(project.pki().join("ca.pem")).unwrap();
    std::fs::write(&bundle, format!("{dev_ca}{}", other.cert_pem)).unwrap();
    let crl = project.pki().join("crl.pem");

    // No CRL at all: refused, naming the CA (before: revocation silently off).
    let settings_for = |toml: String| {
        std::fs::write(project.path().join("refex.toml"), toml).unwrap();
        project.settings(None)
    };
    let err = Config::load(settings_for(production_toml(
        &project,
        &[],
        &project.pki().join("ca.pem"),
    )))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no CRL in tls.crls is issued by"), "{text}");
    assert!(text.contains("refex dev root CA"), "{text}");

    // Two CAs, a CRL from one: refused, naming the other.
    let err = Config::load(settings_for(production_toml(&project, &[&crl], &bundle))).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(err.problems[0].contains("refex other partner CA"), "{err}");

    // Every CA covered: loads, with nothing to warn about.
    let other_crl = project.path().join("other.crl.pem");
    std::fs::write(&other_crl, other.crl(&[], now).unwrap()).unwrap();
    let config = Config::load(settings_for(production_toml(
        &project,
        &[&crl, &other_crl],
        &bundle,
    )))
    .unwrap()
    .config;
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // The same gap in development mode is a warning, not a refusal.
    let mut settings = settings_for(production_toml(&project, &[&crl], &bundle));
    settings.mode = refex::config::settings::Mode::Development;
    let config = Config::load(settings).unwrap().config;
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("refex other partner CA")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn key_files_others_can_read_are_refused_in_production_and_warned_in_development() {
    let project = Project::new();
    let crl = project.pki().join("crl.pem");
    write_production(&project, &[&crl]);
    assert!(Config::load(project.settings(None)).is_ok());
    let key = project.pki().join("gateway/storage.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load(project.settings(None)).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.contains("keys.storage_key")
            && p.contains("644")
            && p.contains("chmod 600")),
        "{err}"
    );
    let mut settings = project.settings(None);
    settings.mode = refex::config::settings::Mode::Development;
    let config = Config::load(settings).unwrap().config;
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("keys.storage_key")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_crl_past_its_next_update_refuses_a_production_start() {
    let project = Project::new();
    let now = SystemTime::now();
    let crl = project.path().join("stale.crl.pem");
    let stale = project
        .ca()
        .crl_until(&[], now - 10 * DAY, now - DAY)
        .unwrap();
    std::fs::write(&crl, stale).unwrap();
    write_production(&project, &[&crl]);
    let err = Config::load(project.settings(None)).unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.contains("past its nextUpdate")),
        "{err}"
    );
}

#[tokio::test]
async fn a_crl_falling_due_is_warned_about_and_past_it_the_gateway_is_not_ready() {
    let project = Project::new();
    let now = SystemTime::now();
    let crl = project.path().join("weekly.crl.pem");
    std::fs::write(
        &crl,
        project.ca().crl_until(&[], now, now + 3 * DAY).unwrap(),
    )
    .unwrap();
    write_production(&project, &[&crl]);
    let clock = Arc::new(ManualClock::at(now));
    let gw = project.start_with_clock(None, clock.clone()).await;
    assert!(
        gw.running()
            .runtime
            .snapshot()
            .config
            .warnings
            .iter()
            .any(|w| w.contains("must be replaced within")),
        "logged at start"
    );
    let http = reqwest::Client::new();
    let ready = http.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("must be replaced within")
    );
    assert!(
        gw.metrics()
            .await
            .contains("refex_crl_seconds_to_next_update")
    );

    // Four days on, the CRL is past its nextUpdate: not ready, and why.
    clock.advance(4 * DAY);
    let ready = http.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().contains_key("retry-after"));
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["type"], "urn:refex:problem:not-ready");
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("past its nextUpdate"),
        "{body}"
    );
    gw.stop().await;
}

/// Outside systemd, with the usual umask 022: the data directory, the database and its WAL
/// are private (before: 0755 and 0644).
#[test]
fn the_store_the_gateway_writes_is_private() {
    let dir = checkout("");
    common::process::write_toml(dir.path(), "");
    refex(dir.path()).arg("dev-pki").output().unwrap();
    let served = common::process::serve(dir.path(), "sqlite://data/refex.db");
    let data = dir.path().join("data");
    assert_eq!(mode_of(&data), 0o700, "data directory");
    for file in ["refex.db", "refex.db-wal", "refex.db-shm"] {
        let path = data.join(file);
        if path.exists() || file == "refex.db" {
            assert_eq!(mode_of(&path), 0o600, "{file}");
        }
    }
    assert!(data.join("refex.db-wal").exists(), "WAL mode");
    served.stop();
}

/// `SIGHUP` the moment the gateway says it is ready reloads it (before: 1 start in 8 was
/// killed, exit 129, because the handler was installed after the ready line).
#[test]
fn a_sighup_right_after_ready_reloads_and_never_kills() {
    let dir = checkout("");
    common::process::write_toml(dir.path(), "");
    refex(dir.path()).arg("dev-pki").output().unwrap();
    for round in 0..4 {
        let mut child = refex(dir.path())
            .args(["serve", "--data-dir", "data"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early");
            if line.contains("ready to accept") {
                break;
            }
        }
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: SIGHUP after ready killed the gateway"
        );
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success(), "round {round}");
    }
}

/// The README's recipe for a certificate no partner file names, run as written (paths and
/// port swapped for the test's): openssl makes a v3 clientAuth certificate the handshake
/// accepts, and the answer is the documented `403 unknown-principal`.
#[test]
fn the_readme_stranger_recipe_gets_the_documented_403() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme.find("openssl req -new").expect("recipe in README");
    let end = start + readme[start..].find("/v1/whoami").unwrap() + "/v1/whoami".len();
    let recipe = &readme[start..end];
    assert!(recipe.contains("extendedKeyUsage=clientAuth"));

    let dir = checkout("");
    common::process::write_toml(dir.path(), "");
    refex(dir.path()).arg("dev-pki").output().unwrap();
    let served = common::process::serve(dir.path(), "sqlite://data/refex.db");
    let tmp = tempfile::tempdir().unwrap();
    let script = recipe
        .replace("/tmp/", &format!("{}/", tmp.path().display()))
        .replace("localhost:8443", &format!("localhost:{}", served.api));
    let out = Command::new("bash")
        .args(["-ec", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("urn:refex:problem:unknown-principal") && stdout.contains("403"),
        "{stdout}"
    );
    served.stop();
}
