//! `GET /openapi.json` describes exactly what the router serves: every documented operation is
//! routed (the server's own route label proves it), every table entry is documented, and an
//! undocumented path is not served.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "it/common/mod.rs"]
mod common;

use common::{Project, unmapped};
use refex::api::routes::ROUTES;
use serde_json::Value;

#[tokio::test]
async fn the_description_and_the_router_agree() {
    let project = Project::new();
    let gw = project.start().await;
    // Served to any verified certificate, and on the admin listener to anyone.
    let doc: Value = gw
        .with_cert(&unmapped(&project))
        .get(gw.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin: Value = reqwest::get(gw.admin_url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc, admin);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["components"]["schemas"]["referral:domestic-abuse"]["properties"]["victim"].is_object()
    );

    // Every table entry is documented, and nothing else is.
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut table: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    table.sort();
    assert_eq!(documented, table);

    // Every documented operation is routed: the server labels each request with the route it
    // matched ("unmatched" for the fallback).
    let client = gw.person("notts-police", "dsl-a");
    for (method, path) in &documented {
        let url = gw.url(&path.replace("{id}", "ref_00000000000000000000000001"));
        let req = match method.as_str() {
            "GET" => client.get(url),
            "POST" => client
                .post(url)
                .header("content-type", "application/json")
                .body("{}"),
            other => panic!("undocumented method {other}"),
        };
        req.send().await.unwrap();
    }
    client.get(gw.url("/v1/not-a-route")).send().await.unwrap();
    let metrics = gw.metrics().await;
    for (_, path) in &documented {
        assert!(
            metrics.contains(&format!("refex_http_requests_total{{route=\"{path}\"")),
            "{path} not routed"
        );
    }
    assert!(metrics.contains("route=\"unmatched\""));
    gw.stop().await;
}
