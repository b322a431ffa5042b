//! Safeguarding review through the real server on SQLite and PostgreSQL: the lead's queue and
//! disclosure preview, approval releasing deliveries, rejection with a reason, four eyes,
//! cross-partner and role refusals, final decisions, and escalation of undecided holds.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::Arc;

use common::partner::{Harness, override_claims};
use refex::envelope::referral::partner;
use serde_json::{Value, json};

async fn decide(h: &Harness, who: reqwest::Client, id: &str, body: Value) -> reqwest::Response {
    who.post(h.gw.url(&format!("/v1/reviews/{id}/decision")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn inbox_ids(h: &Harness, who: &str) -> Vec<String> {
    let v: Value =
        h.gw.system(who)
            .get(h.gw.url("/v1/inbox"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn reviews(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    let police = h.gw.system("notts-police");
    let a = h
        .submit_held(
            &police,
            &override_claims(&["imara", "childrens-social-care"], "rev-jti-00001"),
        )
        .await;
    let b = h
        .submit_held(&police, &override_claims(&["imara"], "rev-jti-00002"))
        .await;
    assert!(
        inbox_ids(&h, "imara").await.is_empty(),
        "nothing is delivered before review"
    );

    // The queue: the sending partner's leads only, oldest first.
    let dsl_a = h.gw.person("notts-police", "dsl-a");
    let q: Value = dsl_a
        .get(h.gw.url("/v1/reviews"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = q["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str(), b.as_str()]);
    assert_eq!(
        q["reviews"][0]["recipients"],
        json!(["imara", "childrens-social-care"])
    );
    let q: Value =
        h.gw.person("imara", "dsl-a")
            .get(h.gw.url("/v1/reviews"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(q["reviews"], json!([]));
    for who in [police.clone(), h.gw.person("notts-police", "dpo-1")] {
        assert_eq!(
            who.get(h.gw.url("/v1/reviews"))
                .send()
                .await
                .unwrap()
                .status(),
            403
        );
    }

    // The preview: per recipient, what would be disclosed and withheld; the justification.
    let v: Value = dsl_a
        .get(h.gw.url(&format!("/v1/reviews/{a}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["consent"]["justification"],
        "Disclosed at school today; risk at home tonight."
    );
    let imara = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"] == "imara")
        .unwrap();
    assert!(
        imara["withheld"]
            .as_array()
            .unwrap()
            .contains(&json!("/offence/narrative"))
    );
    assert!(
        imara["disclosed"]
            .as_array()
            .unwrap()
            .contains(&json!("/child/name/given"))
    );
    // The same as a document: labelled fields with values, each with the recipients it
    // would reach.
    let fields: Vec<&Value> = v["document"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["fields"].as_array().unwrap())
        .collect();
    let narrative = fields
        .iter()
        .find(|f| f["pointer"] == "/offence/narrative")
        .unwrap();
    assert_eq!(narrative["label"], "Account of the abuse");
    assert!(
        !narrative["disclosed_to"]
            .as_array()
            .unwrap()
            .contains(&json!("imara"))
    );
    let given = fields
        .iter()
        .find(|f| f["pointer"] == "/child/name/given")
        .unwrap();
    assert_eq!(given["value"], "Amy");
    assert!(
        given["disclosed_to"]
            .as_array()
            .unwrap()
            .contains(&json!("imara"))
    );
    let csc = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"] == "childrens-social-care")
        .unwrap();
    assert!(
        csc["disclosed"]
            .as_array()
            .unwrap()
            .contains(&json!("/offence/narrative"))
    );
    assert_eq!(v["can_decide"], true);
    assert_eq!(
        h.gw.person("imara", "dsl-a")
            .get(h.gw.url(&format!("/v1/reviews/{a}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        decide(
            &h,
            h.gw.person("imara", "dsl-a"),
            &a,
            json!({"decision": "approve"})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        decide(&h, police.clone(), &a, json!({"decision": "approve"}))
            .await
            .status(),
        403
    );

    // Approve: deliveries appear in both inboxes, minimised; the decision is final.
    let res = decide(&h, dsl_a.clone(), &a, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 200);
    let out: Value = res.json().await.unwrap();
    assert_eq!(
        out["deliveries"],
        json!([{ "to": "imara", "status": "queued" }, { "to": "childrens-social-care", "status": "queued" }])
    );
    let got = inbox_ids(&h, "imara").await;
    assert_eq!(got.len(), 1);
    let sealed =
        h.gw.system("imara")
            .get(h.gw.url(&format!("/v1/inbox/{}", got[0])))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    let d: Value = serde_json::from_slice(
        &partner::unwrap(&sealed, &h.keys("imara"), &h.gateway_public()).unwrap(),
    )
    .unwrap();
    assert_eq!(d["delivery"]["referral_id"], a.as_str());
    assert_eq!(
        d["delivery"]["consent"]["override"],
        "risk-of-significant-harm"
    );
    assert!(
        d["delivery"]["payload"]["offence"]
            .get("narrative")
            .is_none()
    );
    assert!(
        !d.to_string().contains("risk at home tonight"),
        "the justification is never delivered"
    );
    assert_eq!(inbox_ids(&h, "childrens-social-care").await.len(), 1);
    let res = decide(
        &h,
        h.gw.person("notts-police", "dsl-b"),
        &a,
        json!({ "decision": "reject", "reason": "late" }),
    )
    .await;
    assert_eq!(res.status(), 409);
    assert_eq!(h.count("holds").await, 1);
    let rec: Value =
        h.gw.person("notts-police", "auditor-1")
            .get(h.gw.url(&format!("/v1/disclosures/{a}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        rec["deliveries"][0]["approved_by"],
        "notts-police/person:dsl-a"
    );

    // Reject: a reason is required; no delivery ever exists; the sender sees why.
    assert_eq!(
        decide(&h, dsl_a.clone(), &b, json!({ "decision": "reject" }))
            .await
            .status(),
        422
    );
    let res = decide(
        &h,
        dsl_a.clone(),
        &b,
        json!({ "decision": "reject", "reason": "Threshold not met; advice given." }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let status: Value = police
        .get(h.gw.url(&format!("/v1/referrals/{b}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["deliveries"],
        json!([{ "to": "imara", "status": "rejected-by-review",
                 "review_reason": "Threshold not met; advice given." }])
    );
    assert_eq!(status["review_reason"], "Threshold not met; advice given.");
    assert_eq!(inbox_ids(&h, "imara").await.len(), 1);
    let sealed_for_b: i64 = h
        .sql(async |c| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM deliveries WHERE referral_id = $1 AND sealed IS NOT NULL",
            )
            .bind(b.clone())
            .fetch_one(c)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(sealed_for_b, 0);
    assert_eq!(h.count("holds").await, 0);
    let audit = h.audit().await;
    assert!(
        !audit
            .iter()
            .any(|(_, d)| d.contains("Threshold") || d.contains("risk at home")),
        "reasons stay out of the audit log"
    );

    // Four eyes: a lead who submitted with their own certificate cannot decide it.
    let c = h
        .submit_held(&dsl_a, &override_claims(&["imara"], "rev-jti-00003"))
        .await;
    let v: Value = dsl_a
        .get(h.gw.url(&format!("/v1/reviews/{c}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["can_decide"], false);
    let res = decide(&h, dsl_a.clone(), &c, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["type"],
        "urn:refex:problem:four-eyes"
    );
    // The same person with another of their certificates is still the submitter.
    let laptop = h.gw.person("notts-police", "dsl-a-laptop");
    let res = decide(&h, laptop, &c, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["type"],
        "urn:refex:problem:four-eyes"
    );
    // An approval is bound to a preview: a lead who was shown none cannot approve.
    let dsl_b = h.gw.person("notts-police", "dsl-b");
    let res = decide(&h, dsl_b.clone(), &c, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 409);
    assert_eq!(
        res.json::<Value>().await.unwrap()["type"],
        "urn:refex:problem:preview-stale"
    );
    let shown: Value = dsl_b
        .get(h.gw.url(&format!("/v1/reviews/{c}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["can_decide"], true);
    assert_eq!(
        decide(&h, dsl_b, &c, json!({ "decision": "approve" }))
            .await
            .status(),
        200
    );
    h.gw.stop().await;
}

async fn escalation(store_url: Option<String>) {
    use refex::clock::ManualClock;
    use std::time::{Duration, SystemTime};
    let clock = ManualClock::at(SystemTime::now());
    let h = Harness::start_full(common::Project::new(), store_url, Arc::new(clock.clone())).await;
    let rt = h.gw.running().runtime.clone();
    let a = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "esc-jti-00001"),
        )
        .await;
    clock.advance(Duration::from_secs(23 * 3600));
    assert_eq!(
        refex::housekeeping::run_once(&rt).await.unwrap().escalated,
        0
    );
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        refex::housekeeping::run_once(&rt).await.unwrap().escalated,
        1
    );
    assert_eq!(
        refex::housekeeping::run_once(&rt).await.unwrap().escalated,
        0,
        "escalated once"
    );
    let q: Value =
        h.gw.person("notts-police", "dsl-a")
            .get(h.gw.url("/v1/reviews"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(q["reviews"][0]["id"], a.as_str());
    assert_eq!(q["reviews"][0]["escalated"], true);
    assert!(q["reviews"][0]["age_seconds"].as_i64().unwrap() >= 25 * 3600);
    assert!(
        inbox_ids(&h, "imara").await.is_empty(),
        "escalation never releases"
    );
    // The gauge is process-wide and other tests' gateways set it too: check it is exported.
    assert!(h.gw.metrics().await.contains("refex_holds_escalated"));
    assert!(h.audit().await.iter().any(|(k, _)| k == "escalated"));
    h.gw.stop().await;
}

crate::on_both_stores!(reviews => reviews);

crate::on_both_stores!(escalation => escalation);
