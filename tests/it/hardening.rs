//! HTTP hardening through the real server over mutual TLS: HSTS and `no-store`; the same
//! header and target limits on HTTP/1.1 and HTTP/2, answered with problems; a `422` that
//! lists at most 100 violations however many there are; rate limits per principal (one
//! person cannot use up the case system's quota) and for unmapped certificates.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::partner::Harness;
use serde_json::{Value, json};

async fn problem(res: reqwest::Response, status: u16, slug: &str) {
    assert_eq!(res.status(), status, "{slug}");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["type"], format!("urn:refex:problem:{slug}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_is_hardened() {
    let h = Harness::start(None).await;
    let system = h.gw.system("imara");
    let res = system.get(h.gw.url("/v1/inbox")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");

    // The same limits on both protocols, answered with the same problem.
    for (name, client) in [
        ("h2", system.clone()),
        ("http/1.1", h.gw.system_http1("imara")),
    ] {
        let res = client
            .get(h.gw.url("/v1/inbox"))
            .header("x-big", "a".repeat(20 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.version() == reqwest::Version::HTTP_2,
            name == "h2",
            "{name}"
        );
        problem(res, 431, "headers-too-large").await;
        let mut req = client.get(h.gw.url("/v1/inbox"));
        for i in 0..80 {
            req = req.header(format!("x-h{i}"), "1");
        }
        problem(req.send().await.unwrap(), 431, "headers-too-large").await;
        let res = client
            .get(h.gw.url(&format!("/v1/inbox?cursor={}", "1".repeat(5000))))
            .send()
            .await
            .unwrap();
        problem(res, 414, "uri-too-long").await;
    }

    // A referral built to fail everywhere: 100 violations listed, and how many more.
    let mut doc = common::partner::claims("notts-police", "imara", "hard-jti-0001");
    let junk: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("x{i}"), json!(1))).collect();
    doc["referral"]["payload"]["child"] = Value::Object(junk);
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    let errors = p["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101);
    assert_eq!(errors[100]["keyword"], "too-many");
    assert!(
        errors[100]["message"]
            .as_str()
            .unwrap()
            .contains("more violations"),
        "{}",
        errors[100]
    );
    h.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_page_whose_query_cannot_be_read_says_so_as_a_page() {
    let h = Harness::start(None).await;
    let practitioner = h.gw.person("imara", "practitioner-1");
    let res = practitioner
        .get(h.gw.url("/console/inbox?after=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = res.text().await.unwrap();
    // Before: the web framework's own plain-text message ("Failed to deserialize query
    // string: ...").
    assert!(!body.contains("deserialize"), "{body}");
    assert!(body.contains("cannot read"), "{body}");
    h.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_has_its_own_rate_limit() {
    let h = Harness::start(None).await;
    // A person's burst (60) is used up; the organisation's system is unaffected.
    let lead = h.gw.person("notts-police", "dsl-a");
    let mut limited = false;
    for _ in 0..80 {
        if lead
            .get(h.gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap()
            .status()
            == 429
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "a person's own quota ran out");
    // On the console the refusal is a page, as every console failure is (before: the API's
    // JSON problem), and it says when to retry.
    let mut page = None;
    for _ in 0..40 {
        let res = lead.get(h.gw.url("/console/")).send().await.unwrap();
        if res.status() == 429 {
            page = Some(res);
            break;
        }
    }
    let page = page.expect("the lead's quota is still used up");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers()
    );
    assert!(page.headers().contains_key("retry-after"));
    assert!(page.text().await.unwrap().contains("Too many requests"));
    let res =
        h.gw.system("notts-police")
            .get(h.gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200, "the case system keeps its quota");
    // A certificate that maps to no one has a small bucket of its own, on every route (before:
    // only the public documents were limited, and all such certificates shared one bucket).
    let stranger = h.gw.with_cert(&common::unmapped(&h.project));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            stranger
                .get(h.gw.url("/v1/inbox"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&403) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert_eq!(
        stranger
            .get(h.gw.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    // Another unknown certificate (a partner onboarding) is not held up by the first.
    let newcomer = h.gw.with_cert(&common::unmapped(&h.project));
    assert_eq!(
        newcomer
            .get(h.gw.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A decision body is a few KiB at most: a large one is refused before it is parsed.
    let lead = h.gw.person("notts-police", "dsl-b");
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(70 * 1024));
    let res = lead
        .post(h.gw.url("/v1/reviews/ref_01M8ETBK31EKBSFJT1JHE0MZHT/decision"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(res, 413, "payload-too-large").await;
    h.gw.stop().await;
}
