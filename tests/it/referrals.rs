//! `POST /v1/referrals` and `GET /v1/referrals/{id}` through the real server over mutual TLS,
//! with a partner client that signs and encrypts as a partner would, on SQLite and on
//! PostgreSQL. Every refusal leaves nothing but a `rejected` audit event.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::partner::{Harness, claims, now};
use refex::envelope::referral::partner;
use serde_json::{Value, json};

async fn scenario(store_url: Option<String>) {
    let h = Harness::start(store_url).await;

    // Accepted and queued; the sender sees per-recipient status.
    let res = h
        .post_as(
            "notts-police",
            "notts-police",
            &claims("notts-police", "imara", "jti-ok-000001"),
        )
        .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(
        body["deliveries"],
        json!([{ "to": "imara", "status": "queued" }])
    );
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ref_"));
    let status: Value =
        h.gw.system("notts-police")
            .get(h.gw.url(&format!("/v1/referrals/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(status["deliveries"][0]["status"], "queued");
    // Anyone else gets 404, never 403.
    let res =
        h.gw.system("imara")
            .get(h.gw.url(&format!("/v1/referrals/{id}")))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 404);

    // At rest the delivery is ciphertext for imara only, and it is the minimised view.
    let sealed = h.sealed_deliveries().await;
    assert_eq!(sealed.len(), 1);
    assert!(!sealed[0].1.contains("Example Primary School"));
    let plain = partner::unwrap(&sealed[0].1, &h.keys("imara"), &h.gateway_public()).unwrap();
    let delivery: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(delivery["aud"], "imara");
    assert_eq!(delivery["delivery"]["referral_id"], id.as_str());
    assert_eq!(
        delivery["delivery"]["payload"]["child"]["name"]["given"],
        "Amy"
    );
    assert!(
        delivery["delivery"]["payload"]["offence"]
            .get("narrative")
            .is_none()
    );
    assert!(
        delivery["delivery"]["payload"]["offence"]
            .get("alleged_offender")
            .is_none()
    );
    assert!(partner::unwrap(&sealed[0].1, &h.keys("cambs-idva"), &h.gateway_public()).is_err());
    let kinds: Vec<String> = h.audit().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, vec!["accepted", "minimised", "queued"]);

    // An override is held: no delivery ciphertext, the hold encrypted at rest.
    let mut held = claims("notts-police", "imara", "jti-held-00001");
    held["referral"]["consent"] = json!({ "status": "not-sought", "override": "risk-of-significant-harm",
                                          "justification": "Immediate risk at home." });
    let res = h.post_as("notts-police", "notts-police", &held).await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "held-for-review");
    assert_eq!(h.sealed_deliveries().await.len(), 1);
    assert_eq!(h.count("holds").await, 1);
    let hold: String = h
        .sql(async |c| {
            sqlx::query_scalar("SELECT sealed FROM holds")
                .fetch_one(c)
                .await
                .unwrap()
        })
        .await;
    // Ciphertext is base64url, which has no spaces: look for phrases, not short words that
    // random base64 can spell.
    assert!(!hold.contains("Example Primary School") && !hold.contains("Immediate risk"));

    // Refusals: each a clear problem, nothing stored but a `rejected` event with its slug.
    let before = (
        h.count("referrals").await,
        h.count("deliveries").await,
        h.count("holds").await,
    );
    let audit_before = h.audit().await.len();
    let mut canary = claims("notts-police", "imara", "jti-invalid-01");
    canary["referral"]["payload"]["child"]["date_of_birth"] = json!("CANARY-Zebedee-1999");
    let wrong_key = partner::wrap(
        claims("notts-police", "imara", "jti-wrongkey-1")
            .to_string()
            .as_bytes(),
        &h.keys("notts-police"),
        &h.impostor_gateway(),
    )
    .unwrap();
    let refusals: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            h.post_raw(
                "notts-police",
                vec![b'e'; 1024 * 1024 + 1],
                "application/jose",
            )
            .await,
            413,
            "payload-too-large",
        ),
        (
            h.post_raw("notts-police", wrong_key.into_bytes(), "application/jose")
                .await,
            400,
            "undecryptable",
        ),
        (
            h.post_raw("notts-police", b"x".to_vec(), "application/json")
                .await,
            415,
            "unsupported-media-type",
        ),
        (
            h.post_raw("notts-police", b"garbage".to_vec(), "application/jose")
                .await,
            400,
            "malformed-envelope",
        ),
        (
            h.post_raw(
                "notts-police",
                partner::wrap(b"{}", &h.keys("notts-police"), &h.gateway_public())
                    .unwrap()
                    .as_bytes()[..100]
                    .to_vec(),
                "application/jose",
            )
            .await,
            400,
            "malformed-envelope",
        ),
        (
            // The same jti with other claims is a replay; the same claims again would be a
            // retry, answered with the original acceptance (tests/it/lifecycle.rs).
            h.post_as("notts-police", "notts-police", &{
                let mut c = claims("notts-police", "imara", "jti-ok-000001");
                c["referral"]["sender_ref"] = json!("NP/other");
                c
            })
            .await,
            409,
            "replay",
        ),
        (
            h.post_as(
                "notts-police",
                "imara",
                &claims("notts-police", "imara", "jti-signer-01"),
            )
            .await,
            403,
            "signer-not-sender",
        ),
        (
            h.post_as(
                "notts-police",
                "notts-police",
                &claims("imara", "childrens-social-care", "jti-issuer-01"),
            )
            .await,
            403,
            "issuer-mismatch",
        ),
        (
            h.post_as(
                "notts-police",
                "notts-police",
                &claims("notts-police", "gp-practice", "jti-noagree-1"),
            )
            .await,
            403,
            "no-agreement",
        ),
        (
            h.post_as("notts-police", "notts-police", &{
                let mut c = claims("notts-police", "imara", "jti-stale-001");
                c["iat"] = json!(now() - 3600);
                c
            })
            .await,
            400,
            "stale-iat",
        ),
        (
            h.post_as("notts-police", "notts-police", &canary).await,
            422,
            "invalid-referral",
        ),
    ];
    let expected_rejections = refusals.len();
    for (res, status, slug) in refusals {
        assert_eq!(res.status(), status, "{slug}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{slug}"
        );
        let text = res.text().await.unwrap();
        assert!(!text.contains("CANARY"), "{text}");
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:refex:problem:{slug}"),
            "{text}"
        );
        if status == 422 {
            assert_eq!(
                problem["errors"][0]["pointer"], "/payload/child/date_of_birth",
                "{text}"
            );
        }
    }
    assert_eq!(
        (
            h.count("referrals").await,
            h.count("deliveries").await,
            h.count("holds").await
        ),
        before
    );
    let audit = h.audit().await;
    let rejected: Vec<&(String, String)> = audit[audit_before..].iter().collect();
    assert_eq!(rejected.len(), expected_rejections, "{rejected:?}");
    assert!(rejected.iter().all(|(k, _)| k == "rejected"));
    assert!(rejected.iter().any(|(_, d)| d.contains("\"replay\"")));
    assert!(
        !audit
            .iter()
            .any(|(_, d)| d.contains("CANARY") || d.contains("Amy") || d.contains("Immediate"))
    );

    h.gw.stop().await;
}

crate::on_both_stores!(intake => scenario);

/// A control character in `sender_ref` (here a NUL, which PostgreSQL cannot hold in text and
/// once answered `503` "retry later" for ever, each try failing its whole group commit) is a
/// `422` naming the field, and leaves nothing behind; the same referral with a printable
/// reference is then accepted.
async fn a_sender_ref_with_a_control_character(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    let before = (h.count("referrals").await, h.count("deliveries").await);
    for (n, bad) in ["NP/\u{0}/1", "NP/\u{1b}[2J", "NP\n1", "NP\u{7f}"]
        .into_iter()
        .enumerate()
    {
        let mut c = claims("notts-police", "imara", &format!("jti-ctrl-ref-{n}"));
        c["referral"]["sender_ref"] = json!(bad);
        let res = h.post_as("notts-police", "notts-police", &c).await;
        assert_eq!(res.status(), 422, "{bad:?}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["type"], "urn:refex:problem:invalid-referral");
        assert_eq!(problem["errors"][0]["pointer"], "/sender_ref");
        assert_eq!(problem["errors"][0]["keyword"], "pattern");
    }
    assert_eq!(
        (h.count("referrals").await, h.count("deliveries").await),
        before
    );
    let res = h
        .post_as(
            "notts-police",
            "notts-police",
            &claims("notts-police", "imara", "jti-ctrl-ref-ok"),
        )
        .await;
    assert_eq!(res.status(), 202);
    h.gw.stop().await;
}

crate::on_both_stores!(control_characters_in_sender_ref => a_sender_ref_with_a_control_character);
