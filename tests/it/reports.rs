//! Aggregate reports for commissioners through the real server on SQLite and PostgreSQL:
//! correct, suppressed, rounded tables for seeded referrals; complete months only, each as
//! it stood at the month's end (a commissioner polling before and after a referral or a
//! decision learns nothing); everyone else refused; every report audited; the command
//! line's table and chart.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::partner::{Harness, claims, example};
use refex::clock::ManualClock;
use serde_json::{Value, json};

/// Noon on the 10th of last month (UTC): a month that has ended (and been published: more
/// than `PUBLICATION_DELAY` ago), as `(unix, "YYYY-MM")`.
fn last_month() -> (u64, String) {
    let now = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let first = now.date().replace_day(1).unwrap();
    let prev = first.previous_day().unwrap().replace_day(10).unwrap();
    let at = prev.with_hms(12, 0, 0).unwrap().assume_utc();
    (
        at.unix_timestamp() as u64,
        format!("{:04}-{:02}", prev.year(), u8::from(prev.month())),
    )
}

/// Seeds referrals received at `at`; returns the ids of those held for review.
async fn seed(h: &Harness, at: u64) -> Vec<String> {
    let mut n = 0;
    let mut held = Vec::new();
    let mut send = async |sender: &str, doc: Value| {
        n += 1;
        let mut doc = doc;
        doc["jti"] = json!(format!("report-jti-{n:05}"));
        doc["iat"] = json!(at);
        let res = h.post_as(sender, sender, &doc).await;
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.unwrap();
        if v["status"] == "held-for-review" {
            held.push(v["id"].as_str().unwrap().to_owned());
        }
    };
    for _ in 0..7 {
        send("notts-police", claims("notts-police", "imara", "x")).await;
    }
    for _ in 0..6 {
        let mut c = claims("notts-police", "cambs-idva", "x");
        c["referral"]["type"] = json!("domestic-abuse");
        c["referral"]["payload"] = example("domestic-abuse", "police-high-risk");
        send("notts-police", c).await;
    }
    for _ in 0..3 {
        let mut c = claims("imara", "childrens-social-care", "x");
        c["referral"]["type"] = json!("safeguarding-concern");
        c["referral"]["payload"] = example("safeguarding-concern", "child-neglect");
        send("imara", c).await;
    }
    for _ in 0..2 {
        let mut c = claims("notts-police", "childrens-social-care", "x");
        c["referral"]["consent"] = json!({ "status": "not-sought", "override": "risk-of-significant-harm",
                                           "justification": "Risk." });
        send("notts-police", c).await;
    }
    held
}

async fn reports(store_url: Option<String>) {
    let (at, month) = last_month();
    let clock = Arc::new(ManualClock::at(UNIX_EPOCH + Duration::from_secs(at)));
    let h = Harness::start_full(common::Project::new(), store_url, clock.clone()).await;
    let held = seed(&h, at).await;
    assert_eq!(held.len(), 2);
    let get = |who: reqwest::Client, q: String, csv: bool| {
        let url = h.gw.url(&format!("/v1/reports/aggregates?{q}"));
        async move {
            let mut r = who.get(url);
            if csv {
                r = r.header("accept", "text/csv");
            }
            r.send().await.unwrap()
        }
    };
    let analyst = h.gw.person("mopac", "analyst-1");
    // While the month is still running, it cannot be reported: polling it before and after
    // each referral would tell the commissioner about that referral.
    let res = get(
        analyst.clone(),
        format!("from={month}&to={month}&by=type"),
        false,
    )
    .await;
    assert_eq!(res.status(), 400);
    let p: Value = res.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("must be a month that has ended"),
        "{p}"
    );
    // The month has ended.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    clock.advance(Duration::from_secs(now - at));
    let res = get(
        analyst.clone(),
        format!("from={month}&to={month}&by=type"),
        false,
    )
    .await;
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(
        t["columns"],
        json!([
            "child-sexual-abuse-support",
            "domestic-abuse",
            "safeguarding-concern"
        ])
    );
    // 9 CSA deliveries are published rounded (10); 3 safeguarding concerns are suppressed,
    // and so is the smallest other cell so the rounded row total cannot give them away.
    assert_eq!(t["rows"][0]["cells"], json!([10, null, null]));
    assert_eq!(t["rows"][0]["total"], 20);
    assert_eq!(t["grand_total"], 20);
    assert_eq!(t["suppressed"], 2);
    assert_eq!(t["rounded_to"], 5);
    let text = t.to_string();
    assert!(
        !text.contains("notts-police") && !text.contains("ref_"),
        "{text}"
    );

    // By recipient kind and review outcome: kinds, never partner ids.
    let by_review = async || -> Value {
        get(
            analyst.clone(),
            format!("from={month}&to={month}&by=recipient_kind,review"),
            false,
        )
        .await
        .json()
        .await
        .unwrap()
    };
    let t = by_review().await;
    let keys: Vec<String> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"][0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, vec!["childrens-social-care", "chisva", "idva"]);
    assert!(t["columns"].as_array().unwrap().contains(&json!("pending")));

    // A decision and a new referral after the month ended do not move its report: it is
    // taken as it stood at the month's end (before, "pending" turned "rejected" in place).
    let res =
        h.gw.person("notts-police", "dsl-a")
            .post(h.gw.url(&format!("/v1/reviews/{}/decision", held[0])))
            .json(&json!({ "decision": "reject", "reason": "Threshold not met." }))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let mut late = claims("notts-police", "imara", "report-jti-late");
    late["iat"] = json!(now);
    assert_eq!(
        h.post_as("notts-police", "notts-police", &late)
            .await
            .status(),
        202
    );
    assert_eq!(by_review().await, t, "a published month changed");

    // CSV, long form.
    let res = get(
        analyst.clone(),
        format!("from={month}&to={month}&by=type"),
        true,
    )
    .await;
    assert_eq!(res.status(), 200);
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().next(), Some("type,count"));
    assert!(csv.contains("safeguarding-concern,suppressed"), "{csv}");

    // Nobody but people with the commissioner role: not even the commissioner
    // organisation's system certificate.
    for who in [
        h.gw.system("mopac"),
        h.gw.system("notts-police"),
        h.gw.person("notts-police", "dpo-1"),
        h.gw.person("imara", "dsl-a"),
    ] {
        assert_eq!(
            get(who, format!("from={month}&to={month}"), false)
                .await
                .status(),
            403
        );
    }
    assert_eq!(
        get(
            analyst.clone(),
            format!("from={month}&to={month}&by=postcode"),
            false
        )
        .await
        .status(),
        400
    );
    for (q, says) in [
        ("from=2026-02-30&to=2026-03-31", "not a month"),
        ("from=2026-02-02&to=2026-03-31", "first day"),
        ("from=2026-02&to=2026-03-30", "last day"),
        ("from=2026-03&to=2026-02", "before"),
    ] {
        let res = get(analyst.clone(), q.into(), false).await;
        assert_eq!(res.status(), 400, "{q}");
        let p: Value = res.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(says), "{q}: {p}");
    }
    let audit = h.audit().await;
    let reports: Vec<&(String, String)> = audit.iter().filter(|(k, _)| k == "report").collect();
    assert_eq!(reports.len(), 4, "{reports:?}");

    // The command line: a readable table and an SVG chart.
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.svg");
    let (config, url, chart_path) = (
        h.project.path().join("refex.toml"),
        h.store_url.clone(),
        chart.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_refex"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "report",
                "--from",
                &month,
                "--to",
                &month,
                "--by",
                "type",
                "--chart",
                chart_path.to_str().unwrap(),
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
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("suppressed") && table.contains("20") && !table.contains("<5"),
        "{table}"
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("suppressed"),
        "{svg}"
    );
    // A title, axes with values, a legend, and the whole table as its text alternative.
    assert!(
        svg.contains("<title id=\"chart-title\">Referrals by month and type</title>")
            && svg.contains("<desc id=\"chart-desc\">")
            && svg.contains(">Referrals</text>")
            && svg.contains(">Month</text>")
            && svg.contains(">Referral type</text>")
            && svg.contains(">0</text>"),
        "{svg}"
    );
    h.gw.stop().await;
}

crate::on_both_stores!(reports => reports);
