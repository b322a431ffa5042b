//! Going live as `docs/OPERATIONS.md` ("Go live") tells an operator to, every step through
//! the built binary: production keys (`refex keys init`), the partnership CA (`refex ca
//! init`), a server certificate and two partners' system and personal certificates issued
//! from CSRs whose keys never left their holders (`refex ca request` / `issue`), the CRL
//! (`refex ca crl`), partner files naming fingerprints, a production-mode `refex.toml`; the
//! gateway starts, a referral goes from one partner to the other; a person renews from an
//! `openssl req` CSR and both certificates overlap until the old fingerprint is removed; a
//! hosted partner is onboarded (`refex keys hosted`); a certificate is revoked with a reason,
//! the CRL republished and reloaded, and the revoked certificate is refused.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::Path;
use std::process::Command;

use refex::envelope::keys::{KeySet, KeyUse, generate_p256, public_document};
use refex::envelope::referral::partner;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_refex");

/// Runs `refex args…` in `dir`; returns stdout, failing the test on a non-zero exit.
fn refex(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "refex {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A holder's key and certificate from the partnership CA; returns the fingerprint and
/// serial the issue command printed.
fn certificate(dir: &Path, name: &str, holder: &[&str]) -> (String, String) {
    refex(
        dir,
        &[
            "ca",
            "request",
            "--key-out",
            &format!("tls/{name}.key"),
            "--csr-out",
            &format!("tls/{name}.csr"),
        ],
    );
    issue(dir, name, holder)
}

/// The same from a CSR made with OpenSSL, as OPERATIONS gives for holders who have it.
fn openssl_certificate(dir: &Path, name: &str, holder: &[&str]) -> (String, String) {
    let (key, csr) = (format!("tls/{name}.key"), format!("tls/{name}.csr"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ])
        .current_dir(dir)
        .output()
        .expect("openssl, as OPERATIONS' CSR alternative uses");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    issue(dir, name, holder)
}

/// `refex ca crl` as OPERATIONS gives it.
fn publish_crl(dir: &Path) {
    refex(
        dir,
        &[
            "ca",
            "crl",
            "--dir",
            "ca",
            "--out",
            "tls/crl.pem",
            "--valid-for",
            "14d",
        ],
    );
}

/// `refex ca issue` for `tls/<name>.csr` with the default validity.
fn issue(dir: &Path, name: &str, holder: &[&str]) -> (String, String) {
    let (csr, out) = (format!("tls/{name}.csr"), format!("tls/{name}.pem"));
    let mut args = vec!["ca", "issue", "--dir", "ca", "--csr", &csr, "--out", &out];
    args.extend(holder);
    let said = refex(dir, &args);
    let fingerprint = said
        .split("fingerprints = [\"")
        .nth(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .unwrap_or_default();
    let serial = said
        .split("serial ")
        .nth(1)
        .unwrap()
        .split([',', ')'])
        .next()
        .unwrap()
        .to_owned();
    (fingerprint, serial)
}

fn jwks(dir: &Path, partner: &str) -> KeySet {
    let private = json!({ "keys": [
        generate_p256(&format!("{partner}-enc"), KeyUse::Enc).unwrap(),
        generate_p256(&format!("{partner}-sig"), KeyUse::Sig).unwrap(),
    ]});
    std::fs::write(
        dir.join(format!("partners/{partner}.jwks.json")),
        public_document(&private).unwrap().to_string(),
    )
    .unwrap();
    KeySet::parse_private(private.to_string().as_bytes(), partner).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_goes_live_with_a_partnership_ca() {
    let checkout = tempfile::tempdir().unwrap();
    let dir = checkout.path();
    std::os::unix::fs::symlink(common::repo().join("schemas"), dir.join("schemas")).unwrap();
    std::fs::create_dir_all(dir.join("partners")).unwrap();
    std::fs::create_dir_all(dir.join("tls")).unwrap();

    // Keys and the CA.
    let keys = refex(dir, &["keys", "init", "--dir", "keys"]);
    assert!(
        keys.contains("back up") && keys.contains("[keys]"),
        "{keys}"
    );
    let ca = refex(
        dir,
        &[
            "ca",
            "init",
            "--dir",
            "ca",
            "--name",
            "Test Safeguarding Partnership CA",
        ],
    );
    assert!(ca.contains("ca.key"), "{ca}");
    certificate(
        dir,
        "gateway",
        &[
            "--partner",
            "partnership",
            "--server",
            "localhost",
            "--server",
            "127.0.0.1",
        ],
    );
    let (police_fp, _) = certificate(
        dir,
        "police-system",
        &["--partner", "notts-police", "--system", "case-system"],
    );
    let (imara_fp, imara_serial) = certificate(
        dir,
        "imara-system",
        &["--partner", "imara", "--system", "case-system"],
    );
    let (lead_fp, _) = certificate(
        dir,
        "police-lead",
        &["--partner", "notts-police", "--person", "dsl-a"],
    );
    let (practitioner_fp, _) = certificate(
        dir,
        "sas-practitioner",
        &["--partner", "safe-and-sound", "--person", "practitioner-1"],
    );
    assert_eq!(police_fp.len(), 64);
    // Each certificate is recorded once, valid for the default 397 days.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let issued: Vec<Value> = std::fs::read_to_string(dir.join("ca/issued.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(issued.len(), 5, "{issued:?}");
    for fp in [&police_fp, &imara_fp, &lead_fp, &practitioner_fp] {
        let record = issued.iter().find(|r| r["fingerprint"] == **fp).unwrap();
        let days = (record["not_after"].as_u64().unwrap() - now) / 86_400;
        assert!((396..=397).contains(&days), "{record}");
    }
    publish_crl(dir);

    // Two partners, one agreement, production mode.
    let police_keys = jwks(dir, "notts-police");
    let imara_keys = jwks(dir, "imara");
    std::fs::write(
        dir.join("partners/notts-police.toml"),
        format!(
            "name = \"Nottinghamshire Police\"\nkind = \"police\"\nsector = \"statutory\"\n\
             contact = \"ops@police.example\"\njwks = \"partners/notts-police.jwks.json\"\n\
             [[systems]]\nid = \"case-system\"\nfingerprints = [\"{police_fp}\"]\n\
             [[people]]\nid = \"dsl-a\"\nname = \"Lead A\"\nroles = [\"designated-safeguarding-lead\"]\n\
             fingerprints = [\"{lead_fp}\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("partners/imara.toml"),
        format!(
            "name = \"Imara\"\nkind = \"chisva\"\nsector = \"voluntary\"\n\
             contact = \"ops@imara.example\"\njwks = \"partners/imara.jwks.json\"\n\
             [[systems]]\nid = \"case-system\"\nfingerprints = [\"{imara_fp}\"]\n"
        ),
    )
    .unwrap();
    // A hosted partner: no system of its own; the gateway holds its keys.
    std::fs::write(
        dir.join("partners/safe-and-sound.toml"),
        format!(
            "name = \"Safe and Sound\"\nkind = \"child-exploitation-service\"\n\
             sector = \"voluntary\"\ncontact = \"ops@sas.example\"\n\
             jwks = \"partners/safe-and-sound.jwks.json\"\nhosted = true\n\
             hosted_keys = \"partners/safe-and-sound.keys\"\n\
             [[people]]\nid = \"practitioner-1\"\nname = \"Practitioner\"\nroles = [\"practitioner\"]\n\
             fingerprints = [\"{practitioner_fp}\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("partners/agreements.toml"),
        "[[agreement]]\nid = \"isa-police-imara\"\npurpose = \"CHISVA support.\"\n\
         sender = \"notts-police\"\nrecipient = \"imara\"\ntypes = [\"child-sexual-abuse-support\"]\n\
         review = \"on-override\"\nroute_by_default = true\n\
         [[agreement.basis]]\narticle6 = [\"public-task\"]\narticle9 = \"substantial-public-interest\"\n\
         schedule1 = [\"para-18-safeguarding-children\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("refex.toml"),
        "mode = \"production\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [tls]\nserver_cert = \"tls/gateway.pem\"\nserver_key = \"tls/gateway.key\"\n\
         client_ca = \"ca/ca.pem\"\ncrls = [\"tls/crl.pem\"]\n\
         [keys]\ngateway_jwks = \"keys/gateway.jwks.json\"\nstorage_key = \"keys/storage.key\"\n\
         subject_key = \"keys/subject.key\"\n\
         [log]\nformat = \"json\"\nfilter = \"warn,refex::app=info\"\n",
    )
    .unwrap();
    let hosted = refex(dir, &["keys", "hosted", "--partner", "safe-and-sound"]);
    assert!(hosted.contains("safe-and-sound"), "{hosted}");
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode("partners/safe-and-sound.keys"), 0o600);

    let gw = common::process::serve(
        dir,
        &format!("sqlite://{}", dir.join("data/refex.db").display()),
    );
    let url = |p: &str| format!("https://localhost:{}{p}", gw.api);
    let client = |name: &str| {
        common::client(
            &dir.join("ca"),
            Some((
                &dir.join(format!("tls/{name}.pem")),
                &dir.join(format!("tls/{name}.key")),
            )),
            None,
        )
    };
    let who: Value = client("police-lead")
        .get(url("/v1/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["person"], "dsl-a", "{who}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let to_next_update: f64 = metrics
        .lines()
        .find(|l| l.starts_with("refex_crl_seconds_to_next_update"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (13.9 * 86_400.0..=14.0 * 86_400.0).contains(&to_next_update),
        "{to_next_update}"
    );
    // The hosted partner's person reads its inbox in the console.
    let inbox = client("sas-practitioner")
        .get(url("/console/inbox"))
        .send()
        .await
        .unwrap();
    assert_eq!(inbox.status(), 200);

    // A referral from one partner to the other.
    let gateway_keys = KeySet::parse_public(
        client("police-system")
            .get(url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .as_bytes(),
        "gateway",
    )
    .unwrap();
    let mut claims = common::partner::claims("notts-police", "imara", "golive-jti-0001");
    claims["aud"] = json!("refex");
    let body = partner::wrap(claims.to_string().as_bytes(), &police_keys, &gateway_keys).unwrap();
    let res = client("police-system")
        .post(url("/v1/referrals"))
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let inbox: Value = client("imara-system")
        .get(url("/v1/inbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = inbox["messages"][0]["id"].as_str().unwrap().to_owned();
    let sealed = client("imara-system")
        .get(url(&format!("/v1/inbox/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let delivery: Value =
        serde_json::from_slice(&partner::unwrap(&sealed, &imara_keys, &gateway_keys).unwrap())
            .unwrap();
    assert_eq!(delivery["delivery"]["from"], "notts-police");

    let reload = || async {
        let res = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/admin/reload", gw.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    };
    let person = |name: &'static str| {
        let client = client(name);
        let url = url("/v1/whoami");
        async move {
            let res = client.get(url).send().await.unwrap();
            let body: Value = res.json().await.unwrap_or_default();
            body["person"].as_str().map(str::to_owned)
        }
    };

    // Renewal: the lead's new certificate, from an OpenSSL CSR, beside the old one; both are
    // the same person until the old fingerprint is removed.
    let (renewed_fp, _) = openssl_certificate(
        dir,
        "police-lead-2",
        &["--partner", "notts-police", "--person", "dsl-a"],
    );
    let police_file = dir.join("partners/notts-police.toml");
    let police = std::fs::read_to_string(&police_file).unwrap();
    std::fs::write(
        &police_file,
        police.replace(
            &format!("[\"{lead_fp}\"]"),
            &format!("[\"{lead_fp}\", \"{renewed_fp}\"]"),
        ),
    )
    .unwrap();
    reload().await;
    assert_eq!(person("police-lead").await.as_deref(), Some("dsl-a"));
    assert_eq!(person("police-lead-2").await.as_deref(), Some("dsl-a"));
    std::fs::write(
        &police_file,
        police.replace(&format!("[\"{lead_fp}\"]"), &format!("[\"{renewed_fp}\"]")),
    )
    .unwrap();
    reload().await;
    assert_eq!(
        person("police-lead").await,
        None,
        "the old certificate is no one"
    );
    assert_eq!(person("police-lead-2").await.as_deref(), Some("dsl-a"));

    // Revoke Imara's system certificate, publish the CRL, reload: it is refused.
    let said = refex(
        dir,
        &[
            "ca",
            "revoke",
            "--dir",
            "ca",
            "--serial",
            &imara_serial,
            "--reason",
            "cessation-of-operation",
        ],
    );
    assert!(said.contains("refex ca crl"), "{said}");
    let revoked = std::fs::read_to_string(dir.join("ca/revoked.jsonl")).unwrap();
    assert!(revoked.contains("cessation-of-operation"), "{revoked}");
    std::fs::copy(dir.join("tls/crl.pem"), dir.join("tls/crl-before.pem")).unwrap();
    publish_crl(dir);
    reload().await;
    assert!(
        client("imara-system")
            .get(url("/v1/whoami"))
            .send()
            .await
            .is_err(),
        "a revoked certificate is refused"
    );
    assert!(
        client("police-system")
            .get(url("/v1/whoami"))
            .send()
            .await
            .is_ok()
    );
    // The CRL from before the revocation put back (a stale copy, an old backup): the reload
    // is refused and the certificate stays revoked.
    std::fs::copy(dir.join("tls/crl-before.pem"), dir.join("tls/crl.pem")).unwrap();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/admin/reload", gw.admin))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("older CRL would un-revoke"), "{body}");
    assert!(
        client("imara-system")
            .get(url("/v1/whoami"))
            .send()
            .await
            .is_err(),
        "still refused"
    );
    gw.stop();
}
