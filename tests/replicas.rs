//! Two gateway replicas on one PostgreSQL: a long-poll waiting on one replica is woken by a
//! referral accepted on the other (PostgreSQL LISTEN/NOTIFY), and both serve the same inbox.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::partner::claims;
use refex::envelope::keys::KeySet;
use refex::envelope::referral::partner;
use serde_json::Value;

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
