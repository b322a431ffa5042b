//! `refex bench --quick` (here its `refex-bench` binary) runs every phase against a real gateway process (SQLite, and
//! PostgreSQL when reachable; under `CI=true` it must be) and writes a complete report.
//! Speed is never asserted here: the numbers of a debug build on a shared machine mean
//! nothing. What is asserted is that each phase ran, without errors, and that the report
//! holds every measurement and every target.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

// The gateway tests' PostgreSQL helpers (each test its own schema; unreachable fails under
// `CI=true`), shared by path.
#[path = "../../../tests/it/common/pg.rs"]
mod pg;
#[allow(dead_code)] // the gateway tests use more of it
#[path = "../../../tests/it/common/prereq.rs"]
mod prereq;

/// The repository root (where `partners/` and `schemas/` live).
fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use std::process::Command;

use serde_json::Value;

/// The benchmark's binary (`refex bench` runs it): it drives the `refex` binary built beside
/// it, as a workspace `cargo test` builds both.
const BIN: &str = env!("CARGO_BIN_EXE_refex-bench");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_bench_runs_every_phase_and_reports_every_target() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(repo())
        .args(["bench", "--quick", "--json"])
        .arg(&json);
    // Reachability is checked the tests' way (a failure under CI=true); the bench makes
    // and drops its own schema.
    let pg = pg::fresh_schema().await;
    if let Some(url) = &pg {
        pg::drop_schema(url).await;
        cmd.args(["--store", &pg::base_url()]);
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();

    // In-process: nine pipeline cells, each part, the store and fdatasync.
    let cells = report["micro"]["pipeline"].as_array().unwrap();
    assert_eq!(cells.len(), 9);
    assert!(
        cells
            .iter()
            .all(|c| c["us_per_referral"].as_f64().unwrap() > 0.0)
    );
    for part in [
        "open_us",
        "seal_us",
        "validate_us",
        "minimise_us",
        "fdatasync_per_second",
    ] {
        assert!(report["micro"][part].as_f64().unwrap() > 0.0, "{part}");
    }
    assert!(
        report["micro"]["store"]["concurrent_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // End to end: every phase accepted referrals and none failed.
    let mut stores = vec![&report["sqlite"]];
    if pg.is_some() {
        stores.push(&report["postgres"]);
    }
    for e2e in stores {
        let closed = e2e["closed"].as_array().unwrap();
        assert_eq!(closed.len(), 3);
        for phase in closed {
            assert!(
                phase["result"]["completed"].as_u64().unwrap() > 0,
                "{phase}"
            );
            assert_eq!(phase["result"]["errors"], 0, "{phase}");
        }
        // At 64 connections the store shared commits.
        assert!(
            closed[2]["referrals_per_commit"].as_f64().unwrap() > 1.0,
            "{e2e}"
        );
    }
    let sqlite = &report["sqlite"];
    assert_eq!(sqlite["open"].as_array().unwrap().len(), 3);
    for phase in sqlite["open"].as_array().unwrap() {
        assert_eq!(phase["result"]["errors"], 0, "{phase}");
        assert!(phase["result"]["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
        // The gateway timed every stage of the phase's submissions.
        let stages = phase["stages"].as_array().unwrap();
        let names: Vec<&str> = stages
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["waiting-for-cpu", "cpu", "store"], "{phase}");
        for s in stages {
            assert!(s["samples"].as_f64().unwrap() >= 1.0, "{phase}");
        }
    }
    let matrix = sqlite["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 9);
    assert!(
        matrix
            .iter()
            .all(|c| c["errors"] == 0 && c["per_second"].as_f64().unwrap() > 0.0)
    );

    // Receiving, handshakes (resumption really resumed), idle connections.
    for drain in ["inbox_few", "inbox"] {
        assert!(report[drain]["completed"].as_u64().unwrap() > 0, "{drain}");
        assert_eq!(report[drain]["errors"], 0, "{drain}");
    }
    assert!(report["handshakes"]["full"]["completed"].as_u64().unwrap() > 0);
    assert_eq!(report["handshakes"]["full"]["resumed_share"], 0.0);
    assert!(
        report["handshakes"]["resumed"]["resumed_share"]
            .as_f64()
            .unwrap()
            > 0.5
    );
    assert_eq!(report["idle"]["connections"], 50);

    // Every target is there, judged or marked not run; the table says the same.
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 12);
    let judged = targets.iter().filter(|t| !t["met"].is_null()).count();
    assert_eq!(judged, if pg.is_some() { 12 } else { 10 });
    // The housekeeping phase purged generated referrals while acceptances were committed,
    // and the store's size per referral is reported.
    let hk = &report["housekeeping"];
    assert_eq!(hk["seeded"], 2000);
    assert!(hk["purged"].as_u64().unwrap() >= 2000, "{hk}");
    assert!(
        hk["seeded_bytes_per_referral"].as_f64().unwrap() > 0.0,
        "{hk}"
    );
    assert!(report["store_bytes_per_referral"].as_f64().unwrap() > 0.0);
    assert!(report["sealed_bytes_per_referral"].as_f64().unwrap() > 0.0);
    // The bare rustls server beside the gateway completed handshakes with the same client.
    let bare = &report["handshakes"]["bare_rustls_full"];
    assert!(bare["completed"].as_u64().unwrap() > 0, "{bare}");
    assert_eq!(bare["errors"], 0, "{bare}");
    // The physical limit comes from the primitives measured in the same run.
    let primitives = &report["micro"]["primitives"];
    for p in ["sign_us", "verify_us", "ecdh_us", "keygen_us"] {
        assert!(primitives[p].as_f64().unwrap() > 0.0, "{primitives}");
    }
    assert!(
        report["ratios"]["physical_limit_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(stdout.contains("physical limit, 2 recipients"), "{stdout}");
    assert!(stdout.contains("targets:"), "{stdout}");
    // A gap always says why, from the same run.
    for t in targets {
        if t["met"] == false {
            assert!(t["why"].as_str().is_some_and(|w| !w.is_empty()), "{t}");
        }
    }
    for name in [
        "e2e_over_crypto_capacity",
        "e2e_over_store_only",
        "us_per_extra_recipient",
        "p99_over_p50",
    ] {
        assert!(report["ratios"][name].is_number(), "{name}");
    }
}
