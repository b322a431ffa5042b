//! Crash safety: a stream of referrals, SIGKILL of the gateway process mid-stream, a restart
//! on the same store. Every referral that got `202` is intact; nothing is half-written (no
//! referral without its deliveries, replay marker and audit events). Group commit is on, and
//! the test checks from the gateway's own metrics that referrals did share commits before the
//! kill: batching never acknowledges what is not yet durable. And with two replicas on one
//! PostgreSQL, killing one mid-stream loses nothing either of them acknowledged.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use refex::envelope::keys::{KeySet, public_document};
use refex::envelope::referral::partner;
use serde_json::{Value, json};
use sqlx::Connection as _;

/// Referrals in the stream, and how many 202s arrive before the kill.
const STREAM: usize = 160;
const KILL_AFTER: usize = 25;

fn checkout() -> tempfile::TempDir {
    let dir = common::process::layout();
    common::process::write_toml(
        dir.path(),
        // Quotas are not what this tests: fixed at one replica's, not divided between two.
        "replicas = 1\n[store]\ngroup_commit_window = \"2ms\"\ngroup_commit_max = 64",
    );
    dir
}

/// The gateway process, its API port and its admin port.
fn serve(dir: &Path, store_url: &str) -> (Child, u16, u16) {
    common::process::serve(dir, store_url).into_parts()
}

fn body(dir: &Path, jti: usize) -> String {
    let pki = dir.join("certs/dev");
    let own = KeySet::load_private(&pki.join("partners/notts-police/jwks.private.json")).unwrap();
    let gw: Value =
        serde_json::from_slice(&std::fs::read(pki.join("gateway/jwks.private.json")).unwrap())
            .unwrap();
    let gw =
        KeySet::parse_public(public_document(&gw).unwrap().to_string().as_bytes(), "gw").unwrap();
    let payload: Value = serde_json::from_slice(
        &std::fs::read(
            common::repo().join("schemas/examples/domestic-abuse/police-high-risk.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut consent = json!({ "status": "given" });
    if jti % 3 == 0 {
        consent = json!({ "status": "not-sought", "override": "risk-of-significant-harm", "justification": "Risk." });
    }
    let claims = json!({
        "iss": "notts-police", "aud": "refex", "jti": format!("crash-jti-{jti:06}"), "iat": now,
        "referral": {
            "type": "domestic-abuse", "to": ["cambs-idva", "childrens-social-care"], "sender_ref": format!("NP/{jti}"),
            "lawful_basis": { "article6": "public-task", "article9": "substantial-public-interest", "dpa2018_schedule1": "para-18-safeguarding-children" },
            "consent": consent, "subject_informed": { "status": "yes" }, "payload": payload
        }
    });
    partner::wrap(claims.to_string().as_bytes(), &own, &gw).unwrap()
}

async fn crash_and_recover(store_url: Option<String>) {
    let store_url = store_url.unwrap_or_else(|| "sqlite://data/refex.db".to_owned());
    let dir = checkout();
    let (mut child, port, admin) = serve(dir.path(), &store_url);
    let pki = dir.path().join("certs/dev");
    let police = pki.join("partners/notts-police");
    let client = common::client(
        &pki,
        Some((&police.join("system.pem"), &police.join("system.key"))),
        None,
    );
    let bodies: Vec<String> = (0..STREAM).map(|i| body(dir.path(), i)).collect();

    let accepted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let metrics_at_kill = Arc::new(std::sync::Mutex::new(String::new()));
    let pid = child.id();
    let mut tasks = Vec::new();
    for b in bodies {
        let (client, accepted, count) = (client.clone(), accepted.clone(), count.clone());
        let metrics_at_kill = metrics_at_kill.clone();
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(format!("https://localhost:{port}/v1/referrals"))
                .header("content-type", "application/jose")
                .body(b)
                .send()
                .await;
            if let Ok(res) = res {
                if res.status() == 202 {
                    let v: Value = res.json().await.unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        accepted.lock().unwrap().push(id.to_owned());
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
                                .await
                                .unwrap()
                                .text()
                                .await
                                .unwrap();
                            *metrics_at_kill.lock().unwrap() = text;
                            Command::new("kill")
                                .args(["-KILL", &pid.to_string()])
                                .status()
                                .unwrap();
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    child.wait().unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= KILL_AFTER,
        "only {} accepted",
        accepted.len()
    );
    assert!(
        accepted.len() < STREAM,
        "the kill came after the whole stream; nothing was in flight"
    );

    // Referrals shared commits before the kill (more acceptances than transactions).
    let metrics = metrics_at_kill.lock().unwrap().clone();
    let (commits, acceptances) = (
        metric(&metrics, "refex_store_commits_total"),
        metric(&metrics, "refex_store_acceptances_total"),
    );
    assert!(
        acceptances > commits && commits > 0.0,
        "no group commit happened: {acceptances} acceptances in {commits} commits"
    );

    // Restart on the same store: every 202'd referral is there with its deliveries.
    let (mut child, port, _) = serve(dir.path(), &store_url);
    for id in &accepted {
        let res = client
            .get(format!("https://localhost:{port}/v1/referrals/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{id} lost");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["deliveries"].as_array().unwrap().len(), 2, "{v}");
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();

    // Nothing half-written: every referral has both deliveries, its replay marker, its
    // accepted event, and every delivery its queued/held event.
    sqlx::any::install_default_drivers();
    let url = if store_url.starts_with("sqlite://data") {
        store_url.replacen(
            "sqlite://",
            &format!("sqlite://{}/", dir.path().display()),
            1,
        )
    } else {
        store_url.clone()
    };
    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
    let scalar = async |c: &mut sqlx::AnyConnection, q: &'static str| -> i64 {
        sqlx::query_scalar::<_, i64>(q).fetch_one(c).await.unwrap()
    };
    let referrals = scalar(&mut c, "SELECT COUNT(*) FROM referrals").await;
    assert!(referrals as usize >= accepted.len());
    assert_eq!(
        scalar(&mut c, "SELECT COUNT(*) FROM deliveries").await,
        2 * referrals
    );
    assert_eq!(
        scalar(&mut c, "SELECT COUNT(*) FROM replay_markers").await,
        referrals
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'accepted'"
        )
        .await,
        referrals
    );
    // The audit tree's head counts exactly the events written: no batch half-appended.
    assert_eq!(
        scalar(&mut c, "SELECT size FROM audit_head WHERE id = 1").await,
        scalar(&mut c, "SELECT COUNT(*) FROM audit_events").await
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM audit_events e \
                        WHERE e.delivery_id = d.id AND e.kind IN ('queued', 'held'))"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT COUNT(*) FROM referrals r WHERE r.consent_status <> 'given' AND NOT EXISTS \
                        (SELECT 1 FROM holds h WHERE h.referral_id = r.id)"
        )
        .await,
        0
    );
}

/// A counter's value in Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

crate::on_both_stores!(sigkill_mid_stream_loses_no_accepted_referral => crash_and_recover);

/// Two replicas on one PostgreSQL take a stream of referrals; one is SIGKILLed mid-stream.
/// The other keeps accepting, and every referral either of them acknowledged is there, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_replica_loses_nothing_either_acknowledged() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let dir = checkout();
    let (mut a, port_a, _) = serve(dir.path(), &url);
    let (mut b, port_b, _) = serve(dir.path(), &url);
    let pki = dir.path().join("certs/dev");
    let police = pki.join("partners/notts-police");
    let client = common::client(
        &pki,
        Some((&police.join("system.pem"), &police.join("system.key"))),
        None,
    );
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<(u16, String)>::new()));
    let count_a = Arc::new(AtomicUsize::new(0));
    let pid_a = a.id();
    let mut tasks = Vec::new();
    for i in 0..STREAM {
        let port = if i % 2 == 0 { port_a } else { port_b };
        let (client, accepted, count_a) = (client.clone(), accepted.clone(), count_a.clone());
        let body = body(dir.path(), 10_000 + i);
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(format!("https://localhost:{port}/v1/referrals"))
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await;
            match res {
                Ok(res) if res.status() == 202 => {
                    let v: Value = res.json().await.unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        accepted.lock().unwrap().push((port, id.to_owned()));
                    }
                    if port == port_a && count_a.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                        Command::new("kill")
                            .args(["-KILL", &pid_a.to_string()])
                            .status()
                            .unwrap();
                    }
                    true
                }
                // Replica A's requests in flight at the kill fail in transport: not acknowledged.
                Err(_) if port == port_a => true,
                other => {
                    eprintln!("replica B answered {other:?}");
                    false
                }
            }
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap(), "the surviving replica refused a referral");
    }
    a.wait().unwrap();
    let accepted = accepted.lock().unwrap().clone();
    let from_a = accepted.iter().filter(|(p, _)| *p == port_a).count();
    assert!(from_a >= KILL_AFTER, "only {from_a} accepted by A");
    assert!(
        accepted.iter().filter(|(p, _)| *p == port_b).count() == STREAM / 2,
        "replica B lost work"
    );

    // Every acknowledged referral, from either replica, is whole as seen through B.
    for (_, id) in &accepted {
        let res = client
            .get(format!("https://localhost:{port_b}/v1/referrals/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{id} lost");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["deliveries"].as_array().unwrap().len(), 2, "{v}");
    }
    Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status()
        .unwrap();
    b.wait().unwrap();
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
    let scalar = async |c: &mut sqlx::AnyConnection, q: &'static str| -> i64 {
        sqlx::query_scalar::<_, i64>(q).fetch_one(c).await.unwrap()
    };
    let referrals = scalar(&mut c, "SELECT COUNT(*) FROM referrals").await;
    assert!(referrals as usize >= accepted.len());
    assert_eq!(
        scalar(&mut c, "SELECT COUNT(*) FROM deliveries").await,
        2 * referrals
    );
    assert_eq!(
        scalar(&mut c, "SELECT COUNT(*) FROM replay_markers").await,
        referrals
    );
    assert_eq!(
        scalar(&mut c, "SELECT size FROM audit_head WHERE id = 1").await,
        scalar(&mut c, "SELECT COUNT(*) FROM audit_events").await
    );
    drop(c);
    common::pg::drop_schema(&url).await;
}
