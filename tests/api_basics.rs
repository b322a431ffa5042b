//! The API's common behaviour through the real server: JWKS, admin endpoints, problem
//! responses, body limit, rate limits and request ids.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "it/common/mod.rs"]
mod common;

use common::Project;
use serde_json::Value;

#[tokio::test]
async fn jwks_publishes_public_enc_and_sig_keys_only() {
    let project = Project::new();
    let gw = project.start().await;
    for url in [gw.url("/.well-known/jwks.json")] {
        let body: Value = gw
            .system("imara")
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        check_jwks(&body);
    }
    // Without any client certificate, on the admin listener.
    let body: Value = reqwest::get(gw.admin_url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check_jwks(&body);
    gw.stop().await;
}

fn check_jwks(body: &Value) {
    let keys = body["keys"].as_array().expect("keys");
    let uses: Vec<&str> = keys.iter().map(|k| k["use"].as_str().unwrap()).collect();
    assert!(uses.contains(&"enc") && uses.contains(&"sig"), "{uses:?}");
    for k in keys {
        assert!(k["kid"].is_string() && k["alg"].is_string(), "{k}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                k.get(private).is_none(),
                "private parameter {private} published"
            );
        }
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_on_the_admin_listener() {
    let project = Project::new();
    let gw = project.start().await;
    let res = reqwest::get(gw.admin_url("/healthz")).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["store"], "ok");
    gw.system("imara")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    let text = gw.metrics().await;
    assert!(
        text.contains(r#"refex_http_requests_total{route="/v1/whoami",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains("refex_http_request_duration_seconds_bucket{route=\"/v1/whoami\""),
        "{text}"
    );
    assert!(text.contains("refex_tls_handshakes_total"), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn readiness_fails_when_the_store_is_gone() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let project = Project::new();
    let gw = project.start_with(Some(url.clone())).await;
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    common::pg::drop_schema(&url).await;
    let res = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    gw.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let project = Project::new();
    let gw = project.start().await;
    let client = gw.system("imara");
    let res = client.get(gw.url("/v1/nowhere")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:refex:problem:not-found");
    let res = client.delete(gw.url("/v1/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:refex:problem:method-not-allowed");
    gw.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let project = Project::new();
    let gw = project.start().await;
    let res = gw
        .system("notts-police")
        .post(gw.url("/v1/referrals"))
        .header("content-type", "application/jose")
        .body(vec![b'a'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:refex:problem:payload-too-large");
    gw.stop().await;
}

#[tokio::test]
async fn a_partner_over_its_quota_gets_429_with_retry_after() {
    // 600 replicas share the 3000/min, burst 200 quota: five a minute, burst of one.
    let project = Project::with_extra_toml("replicas = 600");
    let gw = project.start().await;
    let client = gw.system("imara");
    assert_eq!(
        client
            .get(gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = client.get(gw.url("/v1/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:refex:problem:rate-limited");
    // Quotas are per partner: another partner is unaffected.
    let other = gw.system("notts-police");
    assert_eq!(
        other
            .get(gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let project = Project::new();
    let gw = project.start().await;
    let res = gw
        .system("imara")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    gw.stop().await;
}
