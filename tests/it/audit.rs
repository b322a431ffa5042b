//! The tamper-evident audit trail through the real server on SQLite and PostgreSQL:
//! checkpoints signed with the key the JWKS publishes, inclusion and consistency proofs
//! checked against an independent implementation written here from RFC 6962's definitions,
//! offline verification of an export, and every kind of tampering caught and named.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::partner::{Harness, claims};
use refex::audit::verify::{Fault, verify};
use refex::envelope::keys::KeySet;
use serde_json::Value;
use sha2::{Digest, Sha256};

type H = [u8; 32];

// ---- An independent RFC 6962 implementation, straight from the definitions. ----

fn leaf(data: &[u8]) -> H {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}
fn node(l: &H, r: &H) -> H {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(l)
        .chain_update(r)
        .finalize()
        .into()
}
fn k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}
fn mth(d: &[H]) -> H {
    match d.len() {
        0 => Sha256::digest([]).into(),
        1 => d[0],
        n => node(&mth(&d[..k(n)]), &mth(&d[k(n)..])),
    }
}
fn path(m: usize, d: &[H]) -> Vec<H> {
    if d.len() <= 1 {
        return vec![];
    }
    let k = k(d.len());
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}
fn subproof(m: usize, d: &[H], whole: bool) -> Vec<H> {
    let n = d.len();
    if m == n {
        return if whole { vec![] } else { vec![mth(d)] };
    }
    let k = k(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], whole);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn b64s(v: &Value) -> Vec<H> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            STANDARD
                .decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

async fn export(h: &Harness) -> String {
    let mut out = Vec::new();
    refex::audit::export::export(h.gw.running().runtime.store.as_ref(), "refex", &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn events(export: &str) -> Vec<Value> {
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "event")
        .collect()
}

async fn trail(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    for i in 0..5 {
        let res = h
            .post_as(
                "notts-police",
                "notts-police",
                &claims("notts-police", "imara", &format!("audit-jti-{i:04}")),
            )
            .await;
        assert_eq!(res.status(), 202);
    }
    let res = h
        .post_raw("notts-police", b"garbage".to_vec(), "application/jose")
        .await;
    assert_eq!(res.status(), 400);

    let auditor = h.gw.person("notts-police", "auditor-1");
    // Systems and people without the role are refused.
    for who in [
        h.gw.system("notts-police"),
        h.gw.person("notts-police", "dsl-a"),
    ] {
        assert_eq!(
            who.get(h.gw.url("/v1/audit/checkpoint"))
                .send()
                .await
                .unwrap()
                .status(),
            403
        );
    }
    let jwks: Value = auditor
        .get(h.gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks = KeySet::parse_public(jwks.to_string().as_bytes(), "jwks").unwrap();

    let first: Value = auditor
        .get(h.gw.url("/v1/audit/checkpoint"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size1 = first["size"].as_u64().unwrap() as usize;
    // 5 × (accepted, minimised, queued) + 1 rejected.
    assert_eq!(size1, 16);
    let stmt =
        refex::envelope::signed::verify(first["signed"].as_str().unwrap(), &jwks, "checkpoint+jwt")
            .unwrap();
    assert_eq!(stmt["size"], size1);
    assert_eq!(
        stmt["checkpoint"],
        format!("refex\n{size1}\n{}\n", stmt["root"].as_str().unwrap())
    );

    // The leaves, hashed here from the exported events.
    let exported = export(&h).await;
    let leaves: Vec<H> = events(&exported)
        .iter()
        .map(|e| leaf(e["leaf"].as_str().unwrap().as_bytes()))
        .collect();
    assert_eq!(leaves.len(), size1);
    assert_eq!(
        STANDARD.encode(mth(&leaves)),
        stmt["root"].as_str().unwrap()
    );
    // No event carries a payload value (the events' text only: a checkpoint's base64
    // signature can spell anything).
    let texts: String = events(&exported)
        .iter()
        .map(|e| e["leaf"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!texts.contains("Amy") && !texts.contains("Example Primary School"));

    // More activity, a second checkpoint, proofs for every leaf and a consistency proof.
    h.post_as(
        "notts-police",
        "notts-police",
        &claims("notts-police", "imara", "audit-jti-late"),
    )
    .await;
    let second: Value = auditor
        .get(h.gw.url("/v1/audit/checkpoint"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size2 = second["size"].as_u64().unwrap() as usize;
    assert_eq!(size2, size1 + 3);
    let exported = export(&h).await;
    let leaves: Vec<H> = events(&exported)
        .iter()
        .map(|e| leaf(e["leaf"].as_str().unwrap().as_bytes()))
        .collect();
    for i in 0..size2 {
        let p: Value = auditor
            .get(h.gw.url(&format!("/v1/audit/proof/inclusion?index={i}&size={size2}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(b64s(&p["proof"]), path(i, &leaves), "inclusion {i}");
        assert_eq!(
            STANDARD.decode(p["root"].as_str().unwrap()).unwrap(),
            mth(&leaves)
        );
    }
    let c: Value = auditor
        .get(h.gw.url(&format!(
            "/v1/audit/proof/consistency?from={size1}&to={size2}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b64s(&c["proof"]), subproof(size1, &leaves, true));
    assert_eq!(
        STANDARD.decode(c["root_from"].as_str().unwrap()).unwrap(),
        mth(&leaves[..size1])
    );
    let bad = auditor
        .get(h.gw.url(&format!(
            "/v1/audit/proof/inclusion?index={size2}&size={size2}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Offline verification passes on the untouched export...
    let ok = verify(&exported, &jwks, Some(second["signed"].as_str().unwrap())).unwrap();
    // The housekeeping pass at start-up may have signed the empty tree too.
    assert_eq!((ok.events, ok.latest), (size2 as u64, size2 as u64));
    assert!(ok.checkpoints >= 2, "{ok:?}");
    // The checkpoint exactly as `GET /v1/audit/checkpoint` serves it is accepted as trusted.
    let served = refex::audit::verify::trusted_checkpoint(&second.to_string());
    assert_eq!(served, second["signed"].as_str().unwrap());
    assert!(verify(&exported, &jwks, Some(&served)).is_ok());

    // ...and names each tampering.
    let lines: Vec<&str> = exported.lines().collect();
    let event_line = |i: usize| {
        lines
            .iter()
            .position(|l| l.contains(&format!("\"idx\":{i},")))
            .unwrap()
    };
    let altered = {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let at = event_line(3);
        l[at] = l[at]
            .replacen("accepted", "accepteD", 1)
            .replacen("minimised", "minimiseD", 1)
            .replacen("queued", "queueD", 1);
        l.join("\n")
    };
    assert_eq!(
        verify(&altered, &jwks, None).unwrap_err(),
        Fault::Altered(3)
    );
    let dropped = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != event_line(4))
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        verify(&dropped, &jwks, None).unwrap_err(),
        Fault::Missing(4)
    );
    let reordered = {
        let mut l = lines.clone();
        l.swap(event_line(5), event_line(6));
        l.join("\n")
    };
    assert_eq!(
        verify(&reordered, &jwks, None).unwrap_err(),
        Fault::OutOfOrder {
            found: 6,
            expected: 5
        }
    );
    // Rolled back: the log as it was at the first checkpoint, against the newer one the
    // auditor holds.
    let rolled: String = lines
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["type"] != "event" || (v["idx"].as_u64().unwrap() as usize) < size1
        })
        .filter(|l| !l.contains(second["signed"].as_str().unwrap()))
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        verify(&rolled, &jwks, Some(second["signed"].as_str().unwrap())).unwrap_err(),
        Fault::BeyondLog {
            size: size2 as u64,
            log: size1 as u64
        }
    );
    // Rewriting an event and its recorded hash together is caught by the signed root.
    let rewritten = {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let at = event_line(2);
        let mut v: Value = serde_json::from_str(&l[at]).unwrap();
        let text = v["leaf"].as_str().unwrap().replace("\"at\":", "\"at\":1");
        v["leaf_hash"] = Value::from(hex::encode(leaf(text.as_bytes())));
        v["leaf"] = Value::from(text);
        l[at] = v.to_string();
        l.join("\n")
    };
    // The first checkpoint that covers event 2 names it.
    let fault = verify(&rewritten, &jwks, None).unwrap_err();
    assert!(
        matches!(fault, Fault::Root(s) if s > 2 && s <= size1 as u64),
        "{fault:?}"
    );
    // A checkpoint signed by another key is refused.
    let other = {
        use refex::envelope::keys::{KeyUse, generate_p256, public_document};
        let doc = serde_json::json!({ "keys": [generate_p256("x", KeyUse::Sig).unwrap()] });
        KeySet::parse_public(
            public_document(&doc).unwrap().to_string().as_bytes(),
            "other",
        )
        .unwrap()
    };
    assert!(matches!(
        verify(&exported, &other, None).unwrap_err(),
        Fault::Signature { .. }
    ));

    // The binary: exits 0 on the untouched log and non-zero naming the first fault.
    let dir = tempfile::tempdir().unwrap();
    let (good, bad, jwks_file) = (
        dir.path().join("good.jsonl"),
        dir.path().join("bad.jsonl"),
        dir.path().join("jwks.json"),
    );
    std::fs::write(&good, &exported).unwrap();
    std::fs::write(&bad, &dropped).unwrap();
    let served: Value = auditor
        .get(h.gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::fs::write(&jwks_file, served.to_string()).unwrap();
    let run = |log: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_refex"))
            .args([
                "audit",
                "verify",
                "--log",
                log.to_str().unwrap(),
                "--jwks",
                jwks_file.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let out = run(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("event 4 is missing"));
    // And against the JWKS by URL, from the admin listener. The child fetches from this
    // process's server, so wait for it off the runtime's threads.
    let url = h.gw.admin_url("/.well-known/jwks.json");
    let good_path = good.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_refex"))
            .args([
                "audit",
                "verify",
                "--log",
                good_path.to_str().unwrap(),
                "--jwks",
                &url,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.gw.stop().await;
}

/// Concurrent writers never fork the tree: indices are exactly 0..n, and the root matches.
async fn no_fork(store_url: Option<String>) {
    let h = std::sync::Arc::new(Harness::start(store_url).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.post_as(
                "notts-police",
                "notts-police",
                &claims("notts-police", "imara", &format!("fork-jti-{i:04}")),
            )
            .await
            .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    let exported = export(&h).await;
    let ev = events(&exported);
    assert_eq!(ev.len(), 72);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["idx"].as_u64().unwrap() as usize, i);
    }
    let leaves: Vec<H> = ev
        .iter()
        .map(|e| leaf(e["leaf"].as_str().unwrap().as_bytes()))
        .collect();
    let root = refex::audit::log::root(h.gw.running().runtime.store.as_ref(), 72)
        .await
        .unwrap();
    assert_eq!(root, mth(&leaves));
}

crate::on_both_stores!(audit_trail => trail);

crate::on_both_stores!(concurrent_writers_never_fork_the_tree => no_fork);

/// An export taken while referrals are accepted and checkpoints signed is one consistent
/// log: no event past the size its header states and no checkpoint beyond it, so it
/// verifies offline (the export read the size first and then pages and checkpoints that
/// could already hold later appends: a checkpoint signed during the export made
/// `refex audit verify` fail with "beyond the log").
async fn export_under_appends(store_url: Option<String>) {
    let h = std::sync::Arc::new(Harness::start(store_url).await);
    let origin = h.origin();
    // Three writers, each accepting 40 referrals and signing a checkpoint after each, while
    // exports are taken back to back until they are done.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let h = h.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let jti = format!("race-jti-{w}-{i:05}");
                    let res = h
                        .post_as(
                            "notts-police",
                            "notts-police",
                            &claims("notts-police", "imara", &jti),
                        )
                        .await;
                    assert_eq!(res.status(), 202);
                    refex::audit::log::checkpoint(&h.gw.running().runtime)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut exports = 0;
    while exports == 0 || writers.iter().any(|w| !w.is_finished()) {
        let mut out = Vec::new();
        refex::audit::export::export(h.gw.running().runtime.store.as_ref(), &origin, &mut out)
            .await
            .unwrap();
        let exported = String::from_utf8(out).unwrap();
        let size = exported
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["type"] == "log")
            .unwrap()["size"]
            .as_u64()
            .unwrap();
        for line in exported.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            match v["type"].as_str() {
                Some("event") => assert!(v["idx"].as_u64().unwrap() < size, "{line}"),
                Some("checkpoint") => assert!(v["size"].as_u64().unwrap() <= size, "{line}"),
                _ => {}
            }
        }
        verify(&exported, &h.gateway_public(), None).unwrap();
        exports += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
}

crate::on_both_stores!(an_export_taken_under_appends_is_one_consistent_log => export_under_appends);
