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
        doc["components"]["schemas"]["referral.domestic-abuse"]["properties"]["victim"].is_object()
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

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// A schema that says something (before: every parameter was a bare `string`, every body and
/// answer `{}`).
fn says_something(schema: &Value) -> bool {
    schema.get("$ref").is_some()
        || schema.get("type").is_some()
        || schema.get("enum").is_some()
        || schema["allOf"]
            .as_array()
            .is_some_and(|all| all.iter().any(says_something))
}

#[test]
fn the_description_is_precise_enough_for_a_typed_client() {
    let doc = refex::api::openapi::describe("gw", serde_json::Map::new());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let name = format!("{method} {path}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(says_something(&p["schema"]), "{name}: {p}");
                assert_ne!(p["schema"]["type"], "null", "{name}: {p}");
            }
            if path.contains("{id}") {
                let id = op["parameters"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["in"] == "path"))
                    .unwrap_or_else(|| panic!("{name}: no path parameter"));
                let r = id["schema"]["$ref"].as_str().unwrap();
                let target = &schemas[r.rsplit('/').next().unwrap()];
                assert!(target["pattern"].is_string(), "{name}: {target}");
            }
            for content in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                assert!(says_something(&content.1["schema"]), "{name} body");
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                let code: u16 = status.parse().unwrap();
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    assert!(
                        says_something(&content["schema"]),
                        "{name} {status} {media}"
                    );
                    if code >= 400 {
                        // The console's failures are pages; the API's are problems.
                        let expected = if path.starts_with("/console/") {
                            "text/html"
                        } else {
                            "application/problem+json"
                        };
                        assert_eq!(media, expected, "{name} {status}");
                    }
                }
                if (200..300).contains(&code) && code != 204 {
                    assert!(
                        response["content"].is_object(),
                        "{name} {status} has no body"
                    );
                }
            }
            // What every route can answer is documented on every route.
            for status in refex::api::openapi::ANY_ROUTE {
                assert!(
                    op["responses"][status.to_string()].is_object(),
                    "{name} {status}"
                );
            }
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "{}", all.len());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside components.schemas"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    // Each problem carries its stable type.
    assert_eq!(
        schemas["Problem"]["properties"]["type"]["pattern"],
        "^urn:refex:problem:[a-z][a-z0-9-]*$"
    );
    // A type both read and written is described the same both ways.
    assert_eq!(
        refex::api::openapi::conflicting_definitions(),
        Vec::<String>::new()
    );
}

#[test]
fn every_link_names_a_documented_operation_with_an_id() {
    let doc = refex::api::openapi::describe("gw", serde_json::Map::new());
    let mut ids = std::collections::HashSet::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            ids.insert(op["operationId"].as_str().unwrap().to_owned());
        }
    }
    let mut links = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for op in ops.as_object().unwrap().values() {
            for response in op["responses"].as_object().unwrap().values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    links += 1;
                    let target = link["operationId"].as_str().unwrap();
                    assert!(ids.contains(target), "{path}: link {name} to {target}");
                    assert!(target.ends_with("{id}") || target.contains("{id}/"));
                    assert!(
                        link["parameters"]["id"]
                            .as_str()
                            .unwrap()
                            .starts_with("$response.body#/")
                    );
                }
            }
        }
    }
    assert_eq!(links, 7);
}

/// The partner guide's table of problem types and the gateway's own catalogue agree: every
/// slug the guide lists is one the gateway answers with that status, and every slug the
/// gateway can answer with is in the guide.
#[test]
fn the_partner_guide_lists_every_problem_type() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/partner-guide.md"),
    )
    .unwrap();
    let section = guide
        .split("\n## ")
        .find(|s| s.contains("Problems"))
        .unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let status: u16 = cells[2].parse().unwrap();
        for slug in cells[1].split(',') {
            documented.insert((status, slug.trim().trim_matches('`').to_owned()));
        }
    }
    let served: std::collections::BTreeSet<(u16, String)> = refex::api::problem::problem_types()
        .into_iter()
        .flat_map(|(status, slugs)| slugs.into_iter().map(move |s| (status, s.to_owned())))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in the guide: {undocumented:?}; in the guide but never served: {unserved:?}"
    );
}
