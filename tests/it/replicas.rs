//! Gateway replicas on one PostgreSQL: a long-poll waiting on one replica is woken by a
//! referral accepted on another (LISTEN/NOTIFY); three replica processes taking referrals and serving
//! inboxes at once deliver each referral exactly once, page without skips or repeats, refuse
//! a replay sent to two of them, and append to one audit tree; housekeeping run by every
//! replica at once does each job once (advisory locks).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::Arc;

use common::partner::claims;
use refex::envelope::keys::KeySet;
use refex::envelope::referral::partner;
use serde_json::Value;
use sqlx::Connection as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_replica_wakes_for_a_commit_on_another() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let project = common::Project::new();
    let a = Arc::new(project.start_with(Some(url.clone())).await);
    let b = project.start_with(Some(url.clone())).await;
    assert_ne!(a.running().api_addr, b.running().api_addr);

    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            a.system("imara")
                .get(a.url("/v1/inbox?wait=30"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::task::yield_now().await;

    // Accepted on replica B.
    let pki = project.pki();
    let police =
        KeySet::load_private(&pki.join("partners/notts-police/jwks.private.json")).unwrap();
    let jwks: Value = b
        .system("notts-police")
        .get(b.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gateway = KeySet::parse_public(jwks.to_string().as_bytes(), "jwks").unwrap();
    let body = partner::wrap(
        claims("notts-police", "imara", "replica-jti-01")
            .to_string()
            .as_bytes(),
        &police,
        &gateway,
    )
    .unwrap();
    let res = b
        .system("notts-police")
        .post(b.url("/v1/referrals"))
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // Replica A's long-poll answers with it (without NOTIFY it would wait out its 30 s, empty).
    let page = waiter.await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    // And either replica serves the same inbox.
    let via_b: Value = b
        .system("imara")
        .get(b.url("/v1/inbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(via_b["messages"], page["messages"]);
    b.stop().await;
    Arc::try_unwrap(a).ok().unwrap().stop().await;
    common::pg::drop_schema(&url).await;
}

/// A gateway replica, in this process or its own.
trait Replica: Send + Sync + 'static {
    fn system(&self, partner: &str) -> reqwest::Client;
    fn url(&self, path: &str) -> String;
}

impl Replica for common::Gateway {
    fn system(&self, partner: &str) -> reqwest::Client {
        common::Gateway::system(self, partner)
    }
    fn url(&self, path: &str) -> String {
        common::Gateway::url(self, path)
    }
}

impl Replica for common::process::Served {
    fn system(&self, partner: &str) -> reqwest::Client {
        common::process::Served::system(self, partner)
    }
    fn url(&self, path: &str) -> String {
        common::process::Served::url(self, path)
    }
}

/// The police's signing keys and the gateway's public keys, for building bodies.
async fn keys(project: &common::Project, gw: &impl Replica) -> (KeySet, KeySet) {
    let police = KeySet::load_private(
        &project
            .pki()
            .join("partners/notts-police/jwks.private.json"),
    )
    .unwrap();
    let jwks: Value = gw
        .system("notts-police")
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        police,
        KeySet::parse_public(jwks.to_string().as_bytes(), "jwks").unwrap(),
    )
}

async fn post(gw: &impl Replica, body: String) -> u16 {
    common::partner::post_jose(&gw.system("notts-police"), &gw.url("/v1/referrals"), body)
        .await
        .status()
        .as_u16()
}

/// Referrals to both recipients, accepted by whichever replica they reach.
const REFERRALS: usize = 45;
const RECIPIENTS: [&str; 2] = ["imara", "childrens-social-care"];

/// A receiving service that pages its inbox through the replicas in turn (small pages, so
/// cursors cross replicas often) and fetches and acknowledges each delivery through the
/// next replica. Returns every delivery id in the order the pages listed them.
async fn drain<R: Replica>(
    gws: Arc<Vec<R>>,
    recipient: &'static str,
    expect: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for turn in 0..400 {
        if seen.len() >= expect {
            break;
        }
        let gw = &gws[turn % gws.len()];
        let page: Value = gw
            .system(recipient)
            .get(gw.url(&format!("/v1/inbox?limit=7&wait=2&cursor={cursor}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["messages"].as_array().unwrap() {
            let id = m["id"].as_str().unwrap().to_owned();
            let other = &gws[(turn + 1) % gws.len()];
            let res = other
                .system(recipient)
                .get(other.url(&format!("/v1/inbox/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let res = other
                .system(recipient)
                .post(other.url(&format!("/v1/inbox/{id}/ack")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
            seen.push(id);
        }
        if let Some(next) = page["next_cursor"].as_str() {
            cursor = next.to_owned();
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_each_referral_once_hold_replay_and_never_fork_the_audit_tree() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    // Three gateway processes sharing the project's configuration and one PostgreSQL.
    let project = common::Project::new();
    common::process::write_toml(project.path(), "replicas = 3");
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(common::process::serve(project.path(), &url));
    }
    let gws = Arc::new(gws);
    let (police, gateway) = keys(&project, &gws[0]).await;
    let body = |jti: &str| {
        let mut c = claims("notts-police", RECIPIENTS[0], jti);
        c["referral"]["to"] = serde_json::json!(RECIPIENTS);
        partner::wrap(c.to_string().as_bytes(), &police, &gateway).unwrap()
    };

    // Receivers poll through all replicas while referrals arrive at all of them.
    let receivers: Vec<_> = RECIPIENTS
        .iter()
        .map(|r| tokio::spawn(drain(gws.clone(), r, REFERRALS + 1)))
        .collect();
    let mut senders = Vec::new();
    for i in 0..REFERRALS {
        let (gws, b) = (gws.clone(), body(&format!("three-replicas-{i:03}")));
        senders.push(tokio::spawn(async move { post(&gws[i % 3], b).await }));
    }
    // The same referral sent to two replicas at once: one is accepted, the other answered
    // with that acceptance (a retry); it is stored and delivered once.
    let twice = body("three-replicas-twice");
    let (a, b) = tokio::join!(post(&gws[1], twice.clone()), post(&gws[2], twice));
    assert_eq!([a, b], [202, 202]);
    for s in senders {
        assert_eq!(s.await.unwrap(), 202);
    }

    // Every delivery exactly once, none skipped: what the pages listed is exactly what the
    // store holds for the recipient, with no repeats.
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    for (recipient, receiver) in RECIPIENTS.iter().zip(receivers) {
        let seen = receiver.await.unwrap();
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{recipient}: a page repeated a delivery"
        );
        let mut stored: Vec<String> =
            sqlx::query_scalar("SELECT id FROM deliveries WHERE recipient = $1")
                .bind(*recipient)
                .fetch_all(&mut db)
                .await
                .unwrap();
        stored.sort();
        assert_eq!(stored.len(), REFERRALS + 1);
        assert_eq!(unique, stored, "{recipient}: a delivery was skipped");
        let acked: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE recipient = $1 AND status = 'acknowledged'",
        )
        .bind(*recipient)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(acked as usize, REFERRALS + 1);
    }

    // One audit tree: indices 0..n with no gap or repeat, and the export verifies against a
    // checkpoint signed by one replica over what all three wrote.
    let checkpoint = gws[0]
        .system("notts-police")
        .get(gws[0].url("/v1/audit/checkpoint"))
        .send()
        .await
        .unwrap();
    let _ = checkpoint.bytes().await;
    let gws = Arc::try_unwrap(gws).ok().unwrap();
    for gw in gws {
        gw.stop();
    }
    let store = refex::store::open(&url).await.unwrap();
    refex::audit::log::checkpoint(&refex::runtime::Runtime::new(
        refex::config::Config::load(project.settings(Some(url.clone()))).unwrap(),
        store.clone(),
        Arc::new(refex::clock::SystemClock),
        Arc::new(refex::ids::Uuid7Ids),
    ))
    .await
    .unwrap();
    let mut export = Vec::new();
    refex::audit::export::export(store.as_ref(), "refex", &mut export)
        .await
        .unwrap();
    store.close().await;
    let export = String::from_utf8(export).unwrap();
    let indices: Vec<u64> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["idx"].as_u64())
        .collect();
    assert!(!indices.is_empty());
    assert!(indices.iter().enumerate().all(|(i, idx)| *idx == i as u64));
    refex::audit::verify::verify(&export, &gateway, None).unwrap();
    common::pg::drop_schema(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_on_every_replica_expires_each_delivery_once() {
    use refex::clock::ManualClock;
    use std::time::{Duration, SystemTime};
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let project = common::Project::new();
    let clock = ManualClock::at(SystemTime::now());
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(
            project
                .start_with_clock(Some(url.clone()), Arc::new(clock.clone()))
                .await,
        );
    }
    let (police, gateway) = keys(&project, &gws[0]).await;
    for i in 0..12 {
        let c = claims("notts-police", "imara", &format!("expire-replicas-{i:03}"));
        let b = partner::wrap(c.to_string().as_bytes(), &police, &gateway).unwrap();
        assert_eq!(post(&gws[i % 3], b).await, 202);
    }
    // Past imara's retention, all three replicas run housekeeping at once.
    clock.advance(Duration::from_secs(31 * 86400));
    let runtimes: Vec<_> = gws.iter().map(|g| g.running().runtime.clone()).collect();
    let passes: Vec<_> = runtimes
        .into_iter()
        .map(|rt| tokio::spawn(async move { refex::housekeeping::run_once(&rt).await.unwrap() }))
        .collect();
    let mut expired = 0;
    for p in passes {
        expired += p.await.unwrap().expired;
    }
    assert_eq!(
        expired, 12,
        "the replicas shared the work, none did it twice"
    );
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE kind = 'expired'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(events, 12, "one expired event per delivery");
    for gw in gws {
        gw.stop().await;
    }
    common::pg::drop_schema(&url).await;
}

/// With `replicas` unset, each replica announces itself in the store and the partners'
/// rate quotas are divided among the live ones: a second replica halves what one replica
/// lets a partner burst (200 → 100 in the dev partner files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_counted_and_share_the_quotas() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let project = common::Project::new();
    let first = project.start_with(Some(url.clone())).await;
    let burst = |gw: &common::Gateway, partner: &str| {
        let client = gw.system(partner);
        let url = gw.url("/v1/whoami");
        async move {
            let mut limited = 0;
            for _ in 0..150 {
                if client.get(&url).send().await.unwrap().status() == 429 {
                    limited += 1;
                }
            }
            limited
        }
    };
    refex::housekeeping::run_once(&first.running().runtime)
        .await
        .unwrap();
    assert_eq!(
        burst(&first, "notts-police").await,
        0,
        "one replica: the whole burst of 200"
    );
    let second = project.start_with(Some(url.clone())).await;
    refex::housekeeping::run_once(&second.running().runtime)
        .await
        .unwrap();
    refex::housekeeping::run_once(&first.running().runtime)
        .await
        .unwrap();
    // Another partner, whose bucket nothing has touched: 150 at once is over its half.
    assert!(
        burst(&first, "cambs-idva").await > 0,
        "two replicas: at most 100 at once"
    );
    second.stop().await;
    first.stop().await;
    common::pg::drop_schema(&url).await;
}
