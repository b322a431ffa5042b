//! Gateway key rotation (`refex keys rotate`): after a reload the JWKS lists old and new keys,
//! a referral encrypted to the old `enc` key still opens, new deliveries are signed with the
//! new `sig` key, the rotation is audited; once the grace period has passed (a clock the test
//! moves), a reload drops the old keys and a referral to the old key is refused.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::partner::claims;
use refex::clock::ManualClock;
use refex::envelope::jose;
use refex::envelope::keys::{KeySet, KeyUse};
use refex::envelope::referral::partner;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_refex");

async fn jwks(gw: &common::Gateway) -> (Value, KeySet) {
    let doc: Value = reqwest::get(gw.admin_url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let set = KeySet::parse_public(doc.to_string().as_bytes(), "jwks").unwrap();
    (doc, set)
}

fn kids(doc: &Value) -> Vec<String> {
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn reload(gw: &common::Gateway) {
    let res = reqwest::Client::new()
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Posts a referral encrypted to `gateway`'s current `enc` key: status and problem type.
async fn send(gw: &common::Gateway, police: &KeySet, gateway: &KeySet, jti: &str) -> (u16, String) {
    let body = partner::wrap(
        claims("notts-police", "imara", jti).to_string().as_bytes(),
        police,
        gateway,
    )
    .unwrap();
    let res =
        common::partner::post_jose(&gw.system("notts-police"), &gw.url("/v1/referrals"), body)
            .await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    (status, body["type"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_keys_for_the_grace_period_then_drops_them() {
    let project = common::Project::new();
    let clock = ManualClock::at(SystemTime::now());
    let gw = project
        .start_with_clock(None, Arc::new(clock.clone()))
        .await;
    let police = KeySet::load_private(
        &project
            .pki()
            .join("partners/notts-police/jwks.private.json"),
    )
    .unwrap();
    let (before_doc, before) = jwks(&gw).await;
    assert_eq!(kids(&before_doc).len(), 2);

    let out = Command::new(BIN)
        .current_dir(project.path())
        .args(["keys", "rotate", "--grace", "1d"])
        .env_remove("REFEX_STORE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let new_sig = words[words.iter().position(|w| *w == "sig").unwrap() + 1].trim_end_matches(';');
    assert!(new_sig.starts_with("gw-sig-"), "{stdout}");

    // Until reloaded, the running gateway serves the old set; after, both.
    assert_eq!(kids(&jwks(&gw).await.0), kids(&before_doc));
    reload(&gw).await;
    let (during_doc, during) = jwks(&gw).await;
    assert_eq!(kids(&during_doc).len(), 4, "{during_doc}");
    assert!(kids(&during_doc).iter().any(|k| k == new_sig));

    // A partner still on the old JWKS: its referral opens. One on the new JWKS: too.
    assert_eq!(send(&gw, &police, &before, "rotation-old-key").await.0, 202);
    assert_eq!(send(&gw, &police, &during, "rotation-new-key").await.0, 202);

    // New deliveries are signed with the new signing key.
    let page: Value = gw
        .system("imara")
        .get(gw.url("/v1/inbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = page["messages"][0]["id"].as_str().unwrap();
    let sealed = gw
        .system("imara")
        .get(gw.url(&format!("/v1/inbox/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let imara =
        KeySet::load_private(&project.pki().join("partners/imara/jwks.private.json")).unwrap();
    let (_, jws) = jose::decrypt(&sealed, |kid| imara.find(kid, KeyUse::Enc)).unwrap();
    let header = jose::jws_header(std::str::from_utf8(&jws).unwrap()).unwrap();
    assert_eq!(header.get("kid"), Some(new_sig));

    // The rotation is in the audit trail.
    let store = &gw.running().runtime.store;
    let size = store.audit_size().await.unwrap();
    let leaves = store.audit_leaves(0, size).await.unwrap();
    assert!(leaves.iter().any(|l| {
        l.leaf
            .as_deref()
            .is_some_and(|t| t.contains("\"kind\":\"key-rotated\""))
    }),);

    // Past the grace period, the next load leaves the old keys out.
    clock.advance(Duration::from_secs(2 * 86400));
    reload(&gw).await;
    let (after_doc, _) = jwks(&gw).await;
    assert_eq!(kids(&after_doc).len(), 2, "{after_doc}");
    assert!(
        kids(&after_doc)
            .iter()
            .all(|k| !kids(&before_doc).contains(k))
    );
    assert_eq!(
        send(&gw, &police, &before, "rotation-too-late").await,
        (400, "urn:refex:problem:unknown-key".to_owned())
    );
    gw.stop().await;
}
