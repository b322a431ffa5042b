//! transparency-dev's RFC 6962 inclusion and consistency proof vectors, read in place from the
//! shared test data: refex's verifiers give each vector's verdict (happy paths accepted;
//! flipped bits, garbage, wrong sizes and swapped roots refused).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::PathBuf;

use base64::Engine as _;
use refex::audit::tree::{verify_consistency, verify_inclusion};
use serde_json::Value;

fn dir(kind: &str) -> Option<PathBuf> {
    let d = common::prereq::testdata()
        .join("merkle/testdata")
        .join(kind);
    if d.is_dir() {
        return Some(d);
    }
    common::prereq::available("vectors", Err(format!("{} not found", d.display())));
    None
}

fn vectors(kind: &str) -> Vec<(String, Value)> {
    fn walk(d: &std::path::Path, out: &mut Vec<(String, Value)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "json") {
                let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                out.push((p.display().to_string(), v));
            }
        }
    }
    let mut out = Vec::new();
    if let Some(root) = dir(kind) {
        walk(&root, &mut out);
    }
    out
}

fn b64(v: &Value) -> Vec<u8> {
    match v.as_str() {
        Some(s) => base64::engine::general_purpose::STANDARD.decode(s).unwrap(),
        None => Vec::new(),
    }
}

fn proof(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .map(|a| a.iter().map(b64).collect())
        .unwrap_or_default()
}

#[test]
fn inclusion_vectors() {
    let all = vectors("inclusion");
    for (name, v) in &all {
        let result = verify_inclusion(
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
            &b64(&v["leafHash"]),
            &proof(&v["proof"]),
            &b64(&v["root"]),
        );
        assert_eq!(
            result.is_err(),
            v["wantErr"].as_bool().unwrap(),
            "{name}: {result:?}"
        );
    }
    assert!(all.is_empty() || all.len() > 50, "{}", all.len());
}

#[test]
fn consistency_vectors() {
    let all = vectors("consistency");
    for (name, v) in &all {
        let result = verify_consistency(
            v["size1"].as_u64().unwrap(),
            v["size2"].as_u64().unwrap(),
            &proof(&v["proof"]),
            &b64(&v["root1"]),
            &b64(&v["root2"]),
        );
        assert_eq!(
            result.is_err(),
            v["wantErr"].as_bool().unwrap(),
            "{name}: {result:?}"
        );
    }
    assert!(all.is_empty() || all.len() > 50, "{}", all.len());
}
