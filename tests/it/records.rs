//! Disclosure records and subject access through the real server on SQLite and PostgreSQL,
//! and retention: purged records leave a tree that still verifies.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::Arc;

use common::partner::{Harness, claims, example};
use serde_json::{Value, json};

async fn post(h: &Harness, doc: &Value) -> String {
    let res = h.post_as("notts-police", "notts-police", doc).await;
    assert_eq!(res.status(), 202);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn records(store_url: Option<String>) {
    let h = Arc::new(Harness::start(store_url).await);
    let a = post(&h, &claims("notts-police", "imara", "rec-jti-00001")).await;
    let mut held = claims("notts-police", "childrens-social-care", "rec-jti-00002");
    held["referral"]["consent"] = json!({ "status": "refused", "override": "risk-of-significant-harm",
                                          "justification": "Mother's partner lives at the address." });
    let b = post(&h, &held).await;
    let mut other = claims("notts-police", "cambs-idva", "rec-jti-00003");
    other["referral"]["type"] = json!("domestic-abuse");
    other["referral"]["payload"] = example("domestic-abuse", "police-high-risk");
    post(&h, &other).await;

    // Disclosure records: for the sender's leads, auditors and DPOs.
    let get = |who: reqwest::Client, id: &str| {
        let url = h.gw.url(&format!("/v1/disclosures/{id}"));
        async move { who.get(url).send().await.unwrap() }
    };
    let res = get(h.gw.person("notts-police", "auditor-1"), &a).await;
    assert_eq!(res.status(), 200);
    let rec: Value = res.json().await.unwrap();
    let d = &rec["deliveries"][0];
    assert_eq!(d["to"], "imara");
    assert_eq!(d["view"], "chisva/child-sexual-abuse-support");
    let disclosed: Vec<&str> = d["disclosed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(disclosed.contains(&"/child/name/given") && disclosed.contains(&"/offence/case_stage"));
    let withheld: Vec<&str> = d["withheld"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(withheld.contains(&"/offence/narrative"), "{withheld:?}");
    assert_eq!(rec["sent_by"], "notts-police/system:case-system");
    assert_eq!(rec["lawful_basis"]["article6"], "public-task");
    assert!(
        !rec.to_string().contains("Amy"),
        "a disclosure record holds no values"
    );

    // The override justification: leads and auditors yes, the DPO no.
    for (who, sees) in [("dsl-a", true), ("auditor-1", true), ("dpo-1", false)] {
        let rec: Value = get(h.gw.person("notts-police", who), &b)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(rec["consent"]["override"], "risk-of-significant-harm");
        assert_eq!(rec["consent"].get("justification").is_some(), sees, "{who}");
        if sees {
            assert_eq!(
                rec["consent"]["justification"],
                "Mother's partner lives at the address."
            );
        }
    }
    assert_eq!(get(h.gw.system("notts-police"), &a).await.status(), 403);
    assert_eq!(get(h.gw.person("imara", "dpo-1"), &a).await.status(), 404);

    // Subject access by NHS number: the sender's DPO sees both referrals about Amy.
    let ask = |who: reqwest::Client, body: Value, csv: bool| {
        let url = h.gw.url("/v1/subject-access");
        async move {
            let mut req = who.post(url).json(&body);
            if csv {
                req = req.header("accept", "text/csv");
            }
            req.send().await.unwrap()
        }
    };
    let amy = json!({ "nhs_number": "943 476 5919" });
    let res: Value = ask(h.gw.person("notts-police", "dpo-1"), amy.clone(), false)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = res["referrals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["referral_id"].as_str().unwrap())
        .collect();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        res["referrals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["consent"].get("justification").is_none())
    );
    // The same person by name and date of birth.
    let by_name = json!({ "given": "amy", "family": " Example", "date_of_birth": "2013-05-14" });
    let res: Value = ask(h.gw.person("notts-police", "auditor-1"), by_name, false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["referrals"].as_array().unwrap().len(), 2);
    // CSV for portability.
    let res = ask(h.gw.person("notts-police", "dpo-1"), amy.clone(), true).await;
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = res.text().await.unwrap();
    assert!(text.starts_with("referral_id,type,from,to,"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    // A recipient's DPO sees only what it received, and nothing withheld.
    let res: Value = ask(h.gw.person("imara", "dpo-1"), amy.clone(), false)
        .await
        .json()
        .await
        .unwrap();
    let recs = res["referrals"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["referral_id"], a.as_str());
    assert!(recs[0]["deliveries"][0].get("withheld").is_none());
    // Nobody else, no identifier, or the wrong role.
    let res: Value = ask(
        h.gw.person("notts-police", "dpo-1"),
        json!({ "nhs_number": "1234567814" }),
        false,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(res["referrals"], json!([]));
    // An NHS number that fails its check digit is refused, by field.
    let res = ask(
        h.gw.person("notts-police", "dpo-1"),
        json!({ "nhs_number": "1234567890" }),
        false,
    )
    .await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/nhs_number");
    assert_eq!(
        ask(
            h.gw.person("notts-police", "dpo-1"),
            json!({ "given": "Amy" }),
            false
        )
        .await
        .status(),
        422
    );
    assert_eq!(
        ask(h.gw.system("notts-police"), amy.clone(), false)
            .await
            .status(),
        403
    );
    assert_eq!(
        ask(h.gw.person("notts-police", "dsl-a"), amy.clone(), false)
            .await
            .status(),
        403
    );
    // Requests are audited, identifiers never.
    let audit = h.audit().await;
    assert!(audit.iter().any(|(k, _)| k == "subject-access"));
    assert!(
        !audit
            .iter()
            .any(|(_, d)| d.contains("9434765919") || d.contains("943 476"))
    );

    // The command line does the same for an operator.
    let (config, url) = (h.project.path().join("refex.toml"), h.store_url.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_refex"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "subject-access",
                "--partner",
                "notts-police",
                "--nhs-number",
                "9434765919",
                "--format",
                "csv",
                "--store-url",
                &url,
            ])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.contains(&a) && csv.contains(&b), "{csv}");
}

async fn retention(store_url: Option<String>) {
    use refex::clock::ManualClock;
    use std::time::{Duration, SystemTime};
    let clock = ManualClock::at(SystemTime::now());
    let h = Harness::start_full(common::Project::new(), store_url, Arc::new(clock.clone())).await;
    let rt = h.gw.running().runtime.clone();
    let a = post(&h, &claims("notts-police", "imara", "ret-jti-00001")).await;
    let jwks = refex::envelope::keys::KeySet::parse_public(
        rt.snapshot().jwks.to_string().as_bytes(),
        "jwks",
    )
    .unwrap();
    let before = refex::audit::log::checkpoint(&rt).await.unwrap();

    // The delivery expires after imara's 30 days (itself activity); seven years on, purge.
    clock.advance(Duration::from_secs(31 * 86400));
    assert_eq!(refex::housekeeping::run_once(&rt).await.unwrap().expired, 1);
    clock.advance(Duration::from_secs(7 * 366 * 86400));
    let report = refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(report.purged, 1);
    assert_eq!(
        h.gw.person("notts-police", "auditor-1")
            .get(h.gw.url(&format!("/v1/disclosures/{a}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let res: Value =
        h.gw.person("notts-police", "dpo-1")
            .post(h.gw.url("/v1/subject-access"))
            .json(&json!({ "nhs_number": "9434765919" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(res["referrals"], json!([]));

    // The tree still verifies: purged events keep their hashes, lose their content.
    let mut out = Vec::new();
    refex::audit::export::export(rt.store.as_ref(), "refex", &mut out)
        .await
        .unwrap();
    let export = String::from_utf8(out).unwrap();
    let purged = export
        .lines()
        .filter(|l| l.contains("\"leaf\":null"))
        .count();
    assert_eq!(
        purged, 4,
        "accepted, minimised, queued and expired of the purged referral"
    );
    assert!(!export.contains(&format!("\"referral_id\":\"{a}\",\"sender")));
    let ok = refex::audit::verify::verify(&export, &jwks, Some(&before.signed)).unwrap();
    assert!(ok.events > 3);
    assert!(
        export.contains("\\\"kind\\\":\\\"purged\\\""),
        "a purged event is logged"
    );
}

crate::on_both_stores!(records => records);

crate::on_both_stores!(retention_keeps_the_tree_verifiable => retention);
