//! The partner toolkit against a real gateway: `refex send` as the police, `refex inbox` as
//! the recipient (the delivered file is the minimised view), `refex status` and `withdraw`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::PathBuf;

use common::Project;
use serde_json::Value;

async fn refex(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_refex"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn who(partner: &str, gateway: &str, pki: &std::path::Path) -> Vec<String> {
    vec![
        "--as".into(),
        partner.into(),
        "--gateway".into(),
        gateway.into(),
        "--pki".into(),
        pki.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_then_inbox_delivers_the_minimised_view() {
    let project = Project::new();
    let gw = project.start().await;
    let gateway = gw.url("");
    let pki = project.pki();
    let example =
        common::repo().join("schemas/examples/child-sexual-abuse-support/police-referral.json");

    let mut args = vec!["send".to_string()];
    args.extend(who("notts-police", &gateway, &pki));
    args.extend(
        [
            "--type",
            "child-sexual-abuse-support",
            "--to",
            "imara",
            "--file",
            example.to_str().unwrap(),
            "--sender-ref",
            "NP/2026/1",
            "--schedule1",
            "para-18-safeguarding-children",
        ]
        .map(String::from),
    );
    let (ok, stdout, stderr) = refex(args).await;
    assert!(ok, "{stderr}");
    let id = stdout.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        id.starts_with("ref_") && stdout.contains("to imara: In the inbox, not yet opened"),
        "{stdout}"
    );

    let out: PathBuf = project.path().join("received");
    let mut args = vec!["inbox".to_string()];
    args.extend(who("imara", &gateway, &pki));
    args.extend([
        "--out".to_string(),
        out.display().to_string(),
        "--json".to_string(),
        "--html".to_string(),
    ]);
    // A kind no view is for is refused before anything is fetched, naming the kinds.
    let mut wrong = args.clone();
    wrong.extend(["--kind".to_string(), "chisva-service".to_string()]);
    let (ok, _, stderr) = refex(wrong).await;
    assert!(
        !ok && stderr.contains("no view") && stderr.contains("chisva"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = refex(args).await;
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let file = PathBuf::from(line["file"].as_str().unwrap());
    // Beside it, a readable document: labels, values in words, what the view leaves out.
    let html = std::fs::read_to_string(file.with_extension("html")).unwrap();
    assert!(
        html.contains("<th scope=\"row\">Name › Given name</th><td>Amy</td>")
            && html.contains("Not shared with your organisation")
            && html.contains("Article 6</th><td>Public task")
            && html.contains("<td>Nottinghamshire Police - Public Protection Unit</td>"),
        "{html}"
    );
    assert!(!html.contains("\"payload\""), "a document, not JSON");
    let delivery: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(delivery["delivery"]["referral_id"], id.as_str());
    // A decrypted delivery is personal data: readable by its owner only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "decrypted delivery file mode"
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700,
        "output directory mode"
    );
    assert_eq!(
        delivery["delivery"]["payload"]["child"]["name"]["given"],
        "Amy"
    );
    assert!(
        delivery["delivery"]["payload"]["offence"]
            .get("narrative")
            .is_none(),
        "the minimised view"
    );
    assert!(std::fs::read_dir(&out).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));

    // Acknowledged only after it was written: the sender sees it, the inbox is empty.
    let mut args = vec!["status".to_string()];
    args.extend(who("notts-police", &gateway, &pki));
    args.push(id.clone());
    let (ok, stdout, _) = refex(args.clone()).await;
    assert!(ok);
    assert!(stdout.contains("to imara: Acknowledged"), "{stdout}");
    args.push("--json".into());
    let (ok, stdout, _) = refex(args.clone()).await;
    assert!(ok);
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["deliveries"][0]["status"], "acknowledged");
    // A refusal with --json is the problem document, on standard output, and a failure.
    let unknown = args
        .iter()
        .map(|a| {
            if *a == id {
                "ref_00000000000000000000000000".to_owned()
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>();
    let (ok, stdout, _) = refex(unknown.clone()).await;
    assert!(!ok);
    let problem: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(problem["status"], 404, "{problem}");
    let (ok, stdout, stderr) = refex(unknown[..unknown.len() - 1].to_vec()).await;
    assert!(
        !ok && stdout.is_empty() && stderr.contains("Not found"),
        "{stderr}"
    );
    let mut args = vec!["inbox".to_string()];
    args.extend(who("imara", &gateway, &pki));
    args.extend(["--out".to_string(), out.display().to_string()]);
    let (ok, _, stderr) = refex(args).await;
    assert!(ok && stderr.contains("0 deliveries saved"), "{stderr}");

    // A refused referral is reported with the gateway's problem, non-zero.
    let mut args = vec!["send".to_string()];
    args.extend(who("notts-police", &gateway, &pki));
    args.extend(
        [
            "--type",
            "child-sexual-abuse-support",
            "--to",
            "gp-practice",
            "--file",
            example.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let (ok, _, stderr) = refex(args).await;
    assert!(
        !ok && stderr.contains("403") && stderr.contains("no-agreement"),
        "{stderr}"
    );
    assert!(
        stderr.contains("your agreements for it cover: childrens-social-care, imara"),
        "the refusal says what would be allowed: {stderr}"
    );
    // A certificate the gateway does not trust: the refusal is named as one, in words.
    let stranger =
        refex::devpki::DevCa::create_named("some other CA", std::time::SystemTime::now())
            .unwrap()
            .issue(&refex::devpki::IssueRequest::client(
                "stranger".into(),
                "Nobody",
                std::time::SystemTime::now(),
            ))
            .unwrap();
    let (cert, key) = (
        project.path().join("stranger.pem"),
        project.path().join("stranger.key"),
    );
    std::fs::write(&cert, &stranger.cert_pem).unwrap();
    std::fs::write(&key, &stranger.key_pem).unwrap();
    let mut args = vec!["status".to_string()];
    args.extend(who("notts-police", &gateway, &pki));
    args.extend([
        "--cert".to_string(),
        cert.display().to_string(),
        "--key".to_string(),
        key.display().to_string(),
        id.clone(),
    ]);
    let (ok, _, stderr) = refex(args).await;
    assert!(
        !ok && (stderr.contains("the gateway refused this client certificate")
            || stderr.contains("closed the connection during the TLS handshake")),
        "{stderr}"
    );
    // A gateway address that is not https:// is refused before anything is sent: there
    // would be no mutual TLS, and the gateway's keys would come from whoever answered.
    let mut args = vec!["status".to_string()];
    args.extend(who(
        "notts-police",
        &gateway.replacen("https://", "http://", 1),
        &pki,
    ));
    args.push(id.clone());
    let (ok, stdout, stderr) = refex(args).await;
    assert!(
        !ok && stdout.is_empty() && stderr.contains("is not https://"),
        "{stderr}"
    );
    // A mistyped --as names the directory it looked in and the partners there.
    let mut args = vec!["status".to_string()];
    args.extend(who("imaar", &gateway, &pki));
    args.push(id.clone());
    let (ok, _, stderr) = refex(args).await;
    assert!(
        !ok && stderr.contains("--as imaar: no such partner") && stderr.contains("imara"),
        "{stderr}"
    );
    gw.stop().await;
}

/// A delivery the recipient cannot open (its ciphertext damaged at rest, so the recipient's
/// AEAD check fails) is left in the inbox, unacknowledged and named; the deliveries after it
/// are still saved and acknowledged, and the run fails so that someone looks.
async fn an_unopenable_delivery_holds_back_nothing(store_url: Option<String>) {
    let h = common::partner::Harness::start(store_url).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let res = h
            .post_as(
                "notts-police",
                "notts-police",
                &common::partner::claims("notts-police", "imara", &format!("unopenable-{i}")),
            )
            .await;
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // The middle delivery's last byte (in its authentication tag) flipped in the store.
    let damaged: String = h
        .sql(async |c| {
            let (id, mut sealed): (String, Vec<u8>) =
                sqlx::query_as("SELECT id, sealed_packed FROM deliveries WHERE referral_id = $1")
                    .bind(ids[1].as_str())
                    .fetch_one(&mut *c)
                    .await
                    .unwrap();
            *sealed.last_mut().unwrap() ^= 1;
            sqlx::query("UPDATE deliveries SET sealed_packed = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id.as_str())
                .execute(&mut *c)
                .await
                .unwrap();
            id
        })
        .await;

    let out = h.project.path().join("received");
    let mut args = vec!["inbox".to_string()];
    args.extend(who("imara", &h.gw.url(""), &h.project.pki()));
    args.extend(["--out".to_string(), out.display().to_string()]);
    let (ok, _, stderr) = refex(args.clone()).await;
    assert!(!ok, "a delivery left unopened is a failure: {stderr}");
    assert!(
        stderr.contains("2 deliveries saved and acknowledged")
            && stderr.contains(&format!("could not open {damaged}"))
            && stderr.contains("left in the inbox, not acknowledged"),
        "{stderr}"
    );
    let saved: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(saved.len(), 2, "{saved:?}");
    assert!(!saved.contains(&format!("{damaged}.json")), "{saved:?}");
    // The gateway still holds it for the recipient; the others are acknowledged.
    let states: Vec<(String, String)> = h
        .sql(async |c| {
            sqlx::query_as("SELECT id, status FROM deliveries ORDER BY inbox_pos")
                .fetch_all(c)
                .await
                .unwrap()
        })
        .await;
    for (id, status) in &states {
        if *id == damaged {
            assert_ne!(status, "acknowledged", "{states:?}");
        } else {
            assert_eq!(status, "acknowledged", "{states:?}");
        }
    }
    // With --json, each one left is a line of its own on standard output.
    args.push("--json".into());
    let (ok, stdout, _) = refex(args).await;
    assert!(!ok);
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["id"], damaged.as_str(), "{stdout}");
    assert_eq!(line["left"], "in the inbox, not acknowledged");
}

crate::on_both_stores!(unopenable_deliveries => an_unopenable_delivery_holds_back_nothing);
