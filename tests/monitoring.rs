//! `deploy/monitoring/`: the Prometheus alert rules parse, each names a severity, a summary
//! and a description, and every metric the rules and the Grafana dashboard use is one the
//! gateway exports (declared in `src/telemetry.rs`); a running gateway's `/metrics` carries
//! the ones that do not wait for an event. Prometheus's own `promtool` checks the rules, runs
//! their unit tests (`alerts_test.yml`) and parses every dashboard query.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "it/common/mod.rs"]
mod common;

use std::collections::BTreeSet;

use common::partner::{Harness, claims};
use refex::envelope::referral::partner;
use serde_json::Value;

/// Every metric name declared in `src/telemetry.rs` (and the store's, which it re-exports),
/// with the series a histogram adds.
fn declared() -> BTreeSet<String> {
    let text = ["src/telemetry.rs", "crates/refex-store/src/metric.rs"]
        .map(|f| std::fs::read_to_string(common::repo().join(f)).unwrap())
        .join("\n");
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with("pub const") {
            continue;
        }
        if let Some(name) = line.split('"').nth(1).filter(|n| n.starts_with("refex_")) {
            for suffix in ["", "_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
    }
    out
}

/// The `refex_…` names in a PromQL expression.
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("refex_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn rules() -> Vec<Value> {
    let text =
        std::fs::read_to_string(common::repo().join("deploy/monitoring/alerts.yml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn alert_rules_and_the_dashboard_name_only_exported_metrics() {
    let declared = declared();
    assert!(declared.len() > 40, "{declared:?}");
    let rules = rules();
    let mut alerts = BTreeSet::new();
    for r in &rules {
        let name = r["alert"].as_str().unwrap();
        assert!(alerts.insert(name.to_owned()), "{name} twice");
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}"
        );
        assert!(r["annotations"]["summary"].as_str().is_some(), "{name}");
        assert!(r["annotations"]["description"].as_str().is_some(), "{name}");
        for m in names(r["expr"].as_str().unwrap()) {
            assert!(
                declared.contains(&m),
                "{name} uses {m}, which the gateway does not export"
            );
        }
    }
    // What the issue asks to be alerted on.
    for wanted in [
        "RefexDown",
        "RefexNotReady",
        "RefexStoreUnreachable",
        "RefexPartnerNotPolling",
        "RefexDeliveriesNearExpiry",
        "RefexHoldsEscalated",
        "RefexCheckpointStale",
        "RefexCrlDueSoon",
        "RefexClientCertificateExpiring",
        "RefexHandshakeFailuresSpike",
    ] {
        assert!(alerts.contains(wanted), "no {wanted}");
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("deploy/monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            for m in names(t["expr"].as_str().unwrap()) {
                assert!(declared.contains(&m), "panel {} uses {m}", p["title"]);
            }
        }
    }
}

/// Prometheus's `promtool`: on PATH, or where `.ci/run` extracts it.
fn promtool() -> Option<std::path::PathBuf> {
    let extracted = common::repo().join("target/promtool/promtool");
    if extracted.is_file() {
        return Some(extracted);
    }
    std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "promtool".into())
}

fn run_promtool(tool: &std::path::Path, args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules_their_tests_and_the_dashboard_queries() {
    let tool = promtool();
    if !common::prereq::available(
        "promtool",
        tool.as_ref()
            .map(|_| ())
            .ok_or_else(|| "promtool not found".to_owned()),
    ) {
        return;
    }
    let tool = tool.unwrap();
    let monitoring = common::repo().join("deploy/monitoring");
    run_promtool(&tool, &["check", "rules", "alerts.yml"], &monitoring);
    run_promtool(&tool, &["test", "rules", "alerts_test.yml"], &monitoring);
    // Each dashboard query as a recording rule, so promtool parses it as Prometheus would.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring.join("dashboard.json")).unwrap())
            .unwrap();
    let mut rules = Vec::new();
    for (i, p) in dashboard["panels"].as_array().unwrap().iter().enumerate() {
        for (j, t) in p["targets"].as_array().unwrap().iter().enumerate() {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                !expr.contains('$'),
                "panel {}: a variable promtool cannot parse",
                p["title"]
            );
            rules.push(
                serde_json::json!({ "record": format!("dashboard:panel_{i}_{j}"), "expr": expr }),
            );
        }
    }
    assert!(rules.len() >= 10);
    let dir = tempfile::tempdir().unwrap();
    let doc = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(dir.path().join("dashboard.yml"), doc.to_string()).unwrap();
    run_promtool(&tool, &["check", "rules", "dashboard.yml"], dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_exports_what_the_alerts_watch() {
    let h = Harness::start(None).await;
    // Some traffic: a referral (HTTP metrics, a mapped certificate's first handshake).
    let body = partner::wrap(
        claims("notts-police", "imara", "monitoring-jti-0001")
            .to_string()
            .as_bytes(),
        &h.keys("notts-police"),
        &h.gateway_public(),
    )
    .unwrap();
    let res =
        h.gw.system("notts-police")
            .post(h.gw.url("/v1/referrals"))
            .header("content-type", "application/jose")
            .body(body)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 202);
    refex::housekeeping::run_once(&h.gw.running().runtime)
        .await
        .unwrap();
    // Nothing asks /readyz here: refex_ready comes from the housekeeping loop's assessment.
    let metrics = h.gw.metrics().await;
    for name in [
        "refex_ready",
        "refex_inbox_backlog{partner=\"imara\"} 1",
        "refex_inbox_oldest_seconds",
        "refex_inbox_retention_seconds",
        "refex_holds_waiting",
        "refex_replicas_live 1",
        "refex_audit_checkpoint_timestamp_seconds",
        "refex_server_certificate_expiry_timestamp_seconds",
        "refex_ca_certificate_expiry_timestamp_seconds",
        "refex_client_certificate_expiry_timestamp_seconds",
        "refex_crl_seconds_to_next_update",
        "refex_http_requests_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    h.gw.stop().await;
}
