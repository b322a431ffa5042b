//! Aggregate reports for commissioners through the real server on SQLite and PostgreSQL:
//! correct, suppressed tables for seeded referrals; everyone else refused; every report
//! audited; the command line's table and chart.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::partner::{Harness, claims, example};
use serde_json::{Value, json};

fn today() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

async fn seed(h: &Harness) {
    let mut n = 0;
    let mut send = async |sender: &str, doc: Value| {
        n += 1;
        let mut doc = doc;
        doc["jti"] = json!(format!("report-jti-{n:05}"));
        let res = h.post_as(sender, sender, &doc).await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
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
}

async fn reports(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    seed(&h).await;
    let day = today();
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
    let res = get(
        analyst.clone(),
        format!("from={day}&to={day}&by=type"),
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
    // 9 CSA deliveries are published; 3 safeguarding concerns are suppressed, and so is the
    // smallest other cell so the rounded row total cannot give them away.
    assert_eq!(t["rows"][0]["cells"], json!([9, null, null]));
    assert_eq!(t["rows"][0]["total"], 20);
    assert_eq!(t["grand_total"], 20);
    assert_eq!(t["suppressed"], 2);
    let text = t.to_string();
    assert!(
        !text.contains("notts-police") && !text.contains("ref_"),
        "{text}"
    );

    // By recipient kind and review outcome: kinds, never partner ids.
    let t: Value = get(
        analyst.clone(),
        format!("from={day}&to={day}&by=recipient_kind,review"),
        false,
    )
    .await
    .json()
    .await
    .unwrap();
    let keys: Vec<String> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"][0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, vec!["childrens-social-care", "chisva", "idva"]);
    assert!(t["columns"].as_array().unwrap().contains(&json!("pending")));

    // CSV, long form.
    let res = get(
        analyst.clone(),
        format!("from={day}&to={day}&by=type"),
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
            get(who, format!("from={day}&to={day}"), false)
                .await
                .status(),
            403
        );
    }
    assert_eq!(
        get(
            analyst.clone(),
            format!("from={day}&to={day}&by=postcode"),
            false
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        get(
            analyst.clone(),
            "from=2026-02-30&to=2026-03-01".into(),
            false
        )
        .await
        .status(),
        400
    );
    let audit = h.audit().await;
    let reports: Vec<&(String, String)> = audit.iter().filter(|(k, _)| k == "report").collect();
    assert_eq!(reports.len(), 3, "{reports:?}");

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
                &day,
                "--to",
                &day,
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
    assert!(table.contains("<5") && table.contains("~20"), "{table}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("suppressed"),
        "{svg}"
    );
    h.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_sqlite() {
    reports(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_postgres() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    reports(Some(url.clone())).await;
    common::pg::drop_schema(&url).await;
}
