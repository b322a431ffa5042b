//! The disclosure lifecycle after intake, through the real server over mutual TLS on SQLite
//! and PostgreSQL: each finding of the outside review as a regression test.
//!
//! 1. a release after the agreement was removed is refused (`409 no-longer-permitted`), the
//!    hold stays; 2. an approval is bound to the preview the lead saw (`409 preview-stale`
//!    when a reload widened the view), and the release records what it released; 3.
//!    retention counts from entering the inbox; 4. a held correction withdraws the original
//!    only when released; 5. disclosure records say what happened (refused, never received);
//!    6. a duplicated member is refused at intake; 7. a retry of the same referral is answered
//!    with the original acceptance.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::partner::{Harness, claims, override_claims};
use refex::clock::ManualClock;
use refex::envelope::referral::partner;
use serde_json::{Value, json};

async fn json_of(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    json_of(client.get(url).send().await.unwrap()).await
}

async fn decide(h: &Harness, who: &reqwest::Client, id: &str, body: Value) -> reqwest::Response {
    who.post(h.gw.url(&format!("/v1/reviews/{id}/decision")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn inbox(h: &Harness, who: &str) -> Vec<String> {
    let v = get(&h.gw.system(who), h.gw.url("/v1/inbox")).await;
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn statuses(h: &Harness, id: &str) -> Vec<(String, String)> {
    let v = get(
        &h.gw.system("notts-police"),
        h.gw.url(&format!("/v1/referrals/{id}")),
    )
    .await;
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["to"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn reload(h: &Harness) {
    let res = reqwest::Client::new()
        .post(h.gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

fn kinds_of(audit: &[(String, String)], kind: &str) -> Vec<Value> {
    audit
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect()
}

/// Finding 1: The operator off-boards a sharing agreement; a held referral under it cannot then be
/// released, and says why; the hold stays to be rejected.
async fn release_after_the_agreement_is_gone(store: Option<String>) {
    let h = Harness::start_in(common::Project::with_copied_partners(), store).await;
    let police = h.gw.system("notts-police");
    let id = h
        .submit_held(&police, &override_claims(&["imara"], "lc1-jti-0001"))
        .await;
    let agreements = h.project.path().join("partners/agreements.toml");
    let text = std::fs::read_to_string(&agreements).unwrap();
    let start = text
        .find("[[agreement]]\nid = \"isa-police-imara-csa\"")
        .unwrap();
    let end = start + 1 + text[start + 1..].find("[[agreement]]\n").unwrap();
    std::fs::write(&agreements, format!("{}{}", &text[..start], &text[end..])).unwrap();
    reload(&h).await;
    let res = h
        .post_as(
            "notts-police",
            "notts-police",
            &claims("notts-police", "imara", "lc1-jti-0002"),
        )
        .await;
    assert_eq!(res.status(), 403, "new referrals are refused");

    let lead = h.gw.person("notts-police", "dsl-b");
    let shown = get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
    assert_eq!(shown["recipients"][0]["release"]["permitted"], false);
    assert_eq!(shown["recipients"][0]["release"]["reason"], "no-agreement");
    let preview = shown["recipients"][0]["preview"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = decide(
        &h,
        &lead,
        &id,
        json!({ "recipients": { "imara": { "decision": "approve", "preview": preview } } }),
    )
    .await;
    assert_eq!(res.status(), 409);
    let problem = json_of(res).await;
    assert_eq!(problem["type"], "urn:refex:problem:no-longer-permitted");
    assert_eq!(problem["recipients"], json!(["imara"]));
    assert!(inbox(&h, "imara").await.is_empty(), "nothing released");
    assert_eq!(h.count("holds").await, 1, "the hold stays");
    assert!(h.audit().await.iter().any(|(k, _)| k == "release-refused"));
    // It can still be rejected.
    let res = decide(
        &h,
        &lead,
        &id,
        json!({ "decision": "reject", "reason": "No agreement in force." }),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        statuses(&h, &id).await,
        vec![("imara".into(), "rejected-by-review".into())]
    );
    h.gw.stop().await;
}

/// Finding 2: A reload widens the recipient's view between the lead's preview and the decision: the
/// decision is refused as stale; shown the new preview, the lead can decide on it; the
/// release records exactly what was released.
async fn approval_is_bound_to_the_preview(store: Option<String>) {
    let h = Harness::start_in(common::Project::with_copied_partners(), store).await;
    let id = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "lc2-jti-0001"),
        )
        .await;
    let lead = h.gw.person("notts-police", "dsl-b");
    let first = get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
    let withheld: Vec<Value> = first["recipients"][0]["withheld"]
        .as_array()
        .unwrap()
        .clone();
    assert!(withheld.contains(&json!("/offence/narrative")));

    // The operator widens imara's view to the offence narrative.
    let view = h
        .project
        .path()
        .join("schemas/views/chisva/child-sexual-abuse-support.json");
    let ty: Value = serde_json::from_slice(
        &std::fs::read(
            h.project
                .path()
                .join("schemas/types/child-sexual-abuse-support.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut v: Value = serde_json::from_slice(&std::fs::read(&view).unwrap()).unwrap();
    v["properties"]["offence"]["properties"]["narrative"] =
        ty["properties"]["offence"]["properties"]["narrative"].clone();
    std::fs::write(&view, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    reload(&h).await;

    // Approving what was seen (named, or bound to the last preview shown) is refused.
    let stale = first["preview"].as_str().unwrap();
    for body in [
        json!({ "decision": "approve", "preview": stale }),
        json!({ "decision": "approve" }),
    ] {
        let res = decide(&h, &lead, &id, body).await;
        assert_eq!(res.status(), 409);
        assert_eq!(
            json_of(res).await["type"],
            "urn:refex:problem:preview-stale"
        );
    }
    assert!(inbox(&h, "imara").await.is_empty());

    // Shown again, the lead sees the narrative would be disclosed, and approves that.
    let second = get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
    assert_ne!(second["preview"], first["preview"]);
    assert!(
        second["recipients"][0]["disclosed"]
            .as_array()
            .unwrap()
            .contains(&json!("/offence/narrative"))
    );
    let res = decide(&h, &lead, &id, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 200);
    assert_eq!(inbox(&h, "imara").await.len(), 1);

    // The release's own `minimised` event says what went; the record agrees.
    let audit = h.audit().await;
    let minimised = kinds_of(&audit, "minimised");
    let released = minimised.last().unwrap();
    assert!(
        released["disclosed"]
            .as_array()
            .unwrap()
            .contains(&json!("/offence/narrative"))
    );
    assert_eq!(
        kinds_of(&audit, "reviewed").last().unwrap()["preview"],
        second["recipients"][0]["preview"]
    );
    let record = get(
        &h.gw.person("notts-police", "auditor-1"),
        h.gw.url(&format!("/v1/disclosures/{id}")),
    )
    .await;
    assert_eq!(
        record["deliveries"][0]["disclosed"], released["disclosed"],
        "the record shows what was released"
    );
    assert_eq!(
        record["deliveries"][0]["approved_by"],
        "notts-police/person:dsl-b"
    );
    h.gw.stop().await;
}

/// Finding 3: A hold decided after the recipient's retention has passed is not expired by the next
/// housekeeping pass: retention counts from entering the inbox.
async fn retention_counts_from_the_inbox(store: Option<String>) {
    let clock = ManualClock::at(SystemTime::now());
    let h = Harness::start_full(common::Project::new(), store, Arc::new(clock.clone())).await;
    let rt = h.gw.running().runtime.clone();
    let id = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "lc3-jti-0001"),
        )
        .await;
    clock.advance(Duration::from_secs(40 * 86_400));
    let lead = h.gw.person("notts-police", "dsl-b");
    get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
    let res = decide(&h, &lead, &id, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 200);
    refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(
        statuses(&h, &id).await,
        vec![("imara".into(), "queued".into())],
        "released 40 days after submission, still within imara's 30 days"
    );
    clock.advance(Duration::from_secs(31 * 86_400));
    refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(
        statuses(&h, &id).await,
        vec![("imara".into(), "expired".into())]
    );
    h.gw.stop().await;
}

/// Finding 4: A correction held for review leaves the original alone until it is released; a
/// rejected correction never withdraws it.
async fn a_held_correction_withdraws_only_when_released(store: Option<String>) {
    let h = Harness::start(store).await;
    let res = h
        .post_as(
            "notts-police",
            "notts-police",
            &claims("notts-police", "imara", "lc4-jti-0001"),
        )
        .await;
    assert_eq!(res.status(), 202);
    let original = json_of(res).await["id"].as_str().unwrap().to_owned();
    let correction = |jti: &str| {
        let mut c = override_claims(&["imara"], jti);
        c["referral"]["supersedes"] = json!(original);
        c
    };
    let police = h.gw.system("notts-police");
    let rejected = h.submit_held(&police, &correction("lc4-jti-0002")).await;
    assert_eq!(
        statuses(&h, &original).await,
        vec![("imara".into(), "queued".into())],
        "held correction: the original stays in the inbox"
    );
    let lead = h.gw.person("notts-police", "dsl-b");
    let res = decide(
        &h,
        &lead,
        &rejected,
        json!({ "decision": "reject", "reason": "Not needed." }),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        statuses(&h, &original).await,
        vec![("imara".into(), "queued".into())],
        "rejected correction: the original still stands"
    );
    let released = h.submit_held(&police, &correction("lc4-jti-0003")).await;
    get(&lead, h.gw.url(&format!("/v1/reviews/{released}"))).await;
    let res = decide(&h, &lead, &released, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        statuses(&h, &original).await,
        vec![("imara".into(), "withdrawn".into())],
        "released correction: the original is withdrawn"
    );
    let withdrawn = kinds_of(&h.audit().await, "withdrawn");
    assert_eq!(withdrawn.last().unwrap()["reason"], "superseded");
    assert_eq!(withdrawn.last().unwrap()["by"], json!(released));
    h.gw.stop().await;
}

/// Finding 5: Disclosure records come from the events: a rejected delivery shows nothing disclosed
/// and who refused it (never `approved_by`); one withdrawn before its first fetch was never
/// received; the subject-access CSV says the same.
async fn records_say_what_happened(store: Option<String>) {
    let h = Harness::start(store).await;
    let police = h.gw.system("notts-police");
    let id = h
        .submit_held(
            &police,
            &override_claims(&["imara", "childrens-social-care"], "lc5-jti-0001"),
        )
        .await;
    let lead = h.gw.person("notts-police", "dsl-b");
    let shown = get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
    let preview = |to: &str| {
        shown["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["to"] == to)
            .unwrap()["preview"]
            .clone()
    };
    let res = decide(
        &h,
        &lead,
        &id,
        json!({ "recipients": {
            "imara": { "decision": "approve", "preview": preview("imara") },
            "childrens-social-care": { "decision": "reject", "reason": "Already known to the MASH." }
        } }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let outcome = json_of(res).await;
    assert_eq!(outcome["decision"], "mixed");
    assert_eq!(inbox(&h, "imara").await.len(), 1);
    assert!(inbox(&h, "childrens-social-care").await.is_empty());
    // The sender withdraws before imara fetched it.
    let res = police
        .post(h.gw.url(&format!("/v1/referrals/{id}/withdraw")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let record = get(
        &h.gw.person("notts-police", "auditor-1"),
        h.gw.url(&format!("/v1/disclosures/{id}")),
    )
    .await;
    let delivery = |to: &str| {
        record["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["to"] == to)
            .unwrap()
            .clone()
    };
    let csc = delivery("childrens-social-care");
    assert_eq!(csc["status"], "rejected-by-review");
    assert_eq!(csc["outcome"], "refused");
    assert_eq!(csc["disclosed"], json!([]));
    assert_eq!(csc["refused_by"], "notts-police/person:dsl-b");
    assert!(csc.get("approved_by").is_none(), "{csc}");
    let imara = delivery("imara");
    assert_eq!(imara["outcome"], "never-received");
    assert_eq!(imara["received"], false);
    assert_eq!(imara["disclosed"], json!([]));
    assert_eq!(imara["approved_by"], "notts-police/person:dsl-b");

    // The subject-access CSV says the same, row by row.
    let res =
        h.gw.person("notts-police", "dpo-1")
            .post(h.gw.url("/v1/subject-access"))
            .header("accept", "text/csv")
            .json(&json!({ "nhs_number": "9434765919" }))
            .send()
            .await
            .unwrap();
    let csv = res.text().await.unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row = |to: &str| -> Vec<String> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>())
            .find(|r| r[col("referral_id")] == id && r[col("to")] == to)
            .unwrap()
    };
    let csc = row("childrens-social-care");
    assert_eq!(csc[col("outcome")], "refused");
    assert_eq!(csc[col("approved_by")], "");
    assert_eq!(csc[col("refused_by")], "notts-police/person:dsl-b");
    assert_eq!(csc[col("disclosed_fields")], "");
    assert_eq!(row("imara")[col("outcome")], "never-received");
    h.gw.stop().await;
}

/// Finding 6: A referral with a duplicated member is refused at intake, naming it; nothing is held.
async fn duplicate_members_are_refused_at_intake(store: Option<String>) {
    let h = Harness::start(store).await;
    let doc = override_claims(&["imara"], "lc6-jti-0001");
    let text = doc.to_string();
    let duplicated = text.replacen(
        "\"aud\":\"refex\"",
        "\"aud\":\"refex\",\"aud\":\"refex\"",
        1,
    );
    assert_ne!(duplicated, text);
    let body = partner::wrap(
        duplicated.as_bytes(),
        &h.keys("notts-police"),
        &h.gateway_public(),
    )
    .unwrap();
    let res = h
        .post_raw("notts-police", body.into_bytes(), "application/jose")
        .await;
    assert_eq!(res.status(), 422);
    let problem = json_of(res).await;
    assert_eq!(problem["errors"][0]["pointer"], "/aud");
    assert_eq!(problem["errors"][0]["keyword"], "duplicate-member");
    assert_eq!(h.count("holds").await, 0);
    assert_eq!(h.count("referrals").await, 0);
    h.gw.stop().await;
}

/// Finding 7: The same referral sent again (a retry with the same `jti` and claims) is answered with
/// the original acceptance; different claims under a used `jti` are still `409`.
async fn a_retry_gets_the_original_acceptance(store: Option<String>) {
    let h = Harness::start(store).await;
    let doc = claims("notts-police", "imara", "lc7-jti-0001");
    let first = json_of(h.post_as("notts-police", "notts-police", &doc).await).await;
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    assert_eq!(res.status(), 202);
    let again = json_of(res).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["repeated"], true);
    assert_eq!(h.count("referrals").await, 1);
    assert_eq!(inbox(&h, "imara").await.len(), 1, "delivered once");
    let mut other = doc.clone();
    other["referral"]["sender_ref"] = json!("NP/other");
    let res = h.post_as("notts-police", "notts-police", &other).await;
    assert_eq!(res.status(), 409);
    h.gw.stop().await;
}

on_both_stores! {
    release_after_agreement_removed => release_after_the_agreement_is_gone,
    approval_bound_to_preview => approval_is_bound_to_the_preview,
    retention_from_inbox => retention_counts_from_the_inbox,
    held_correction => a_held_correction_withdraws_only_when_released,
    records_from_events => records_say_what_happened,
    duplicate_members => duplicate_members_are_refused_at_intake,
    retry_is_idempotent => a_retry_gets_the_original_acceptance,
}

/// Finding 7 on PostgreSQL: The connection dies during `COMMIT` after the server committed: the
/// gateway finds out from the replay marker and answers `202` with the id, not `503`; the
/// sender's retry is answered with the same acceptance. Nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_outcome_is_found_out_before_answering_on_postgres() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let proxy = common::pgproxy::PgProxy::start("127.0.0.1:5432").await;
    let h = Harness::start(Some(proxy.url(&url))).await;
    let doc = claims("notts-police", "imara", "lc8-jti-0001");
    proxy.arm();
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    assert_eq!(proxy.cuts(), 1, "the COMMIT's answer was lost");
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let first = json_of(res).await;
    let retry = json_of(h.post_as("notts-police", "notts-police", &doc).await).await;
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(h.count("referrals").await, 1);
    assert_eq!(inbox(&h, "imara").await.len(), 1);
    h.gw.stop().await;
    common::pg::drop_schema(&url).await;
}

/// A hold nobody decides within the configured maximum is closed without release: the
/// sender sees `expired-undecided`, the trail records it, the claims held under the storage
/// key are gone, and a late approval finds it already decided.
async fn undecided_holds_close_without_release(store: Option<String>) {
    let clock = ManualClock::at(SystemTime::now());
    let h = Harness::start_full(common::Project::new(), store, Arc::new(clock.clone())).await;
    let rt = h.gw.running().runtime.clone();
    let id = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "lc9-jti-0001"),
        )
        .await;
    clock.advance(Duration::from_secs(29 * 86_400));
    assert_eq!(refex::housekeeping::run_once(&rt).await.unwrap().closed, 0);
    clock.advance(Duration::from_secs(2 * 86_400));
    assert_eq!(refex::housekeeping::run_once(&rt).await.unwrap().closed, 1);
    assert_eq!(
        statuses(&h, &id).await,
        vec![("imara".into(), "expired-undecided".into())]
    );
    assert_eq!(h.count("holds").await, 0);
    assert!(inbox(&h, "imara").await.is_empty());
    assert!(h.audit().await.iter().any(|(k, _)| k == "closed-undecided"));
    let lead = h.gw.person("notts-police", "dsl-b");
    let res = decide(&h, &lead, &id, json!({ "decision": "approve" })).await;
    assert_eq!(res.status(), 409);
    h.gw.stop().await;
}

on_both_stores! {
    undecided_holds_close => undecided_holds_close_without_release,
}

/// Concurrent steps on one delivery never both act on the status they read: a fetch racing a
/// withdrawal or an acknowledgement, and a decision racing a withdrawal, end in one coherent
/// state, with no server error.
async fn concurrent_steps_stay_coherent(store: Option<String>) {
    let h = Arc::new(Harness::start(store).await);
    let police = h.gw.system("notts-police");
    let imara = h.gw.system("imara");
    let mut pairs = Vec::new();
    for i in 0..48 {
        let res = h
            .post_as(
                "notts-police",
                "notts-police",
                &claims("notts-police", "imara", &format!("race-jti-{i:04}")),
            )
            .await;
        pairs.push(json_of(res).await["id"].as_str().unwrap().to_owned());
    }
    let page = get(&imara, h.gw.url("/v1/inbox?limit=500")).await;
    let deliveries: Vec<String> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deliveries.len(), pairs.len());
    let mut tasks = Vec::new();
    for (i, (referral, delivery)) in pairs.iter().zip(&deliveries).enumerate() {
        let (imara, police, h2) = (imara.clone(), police.clone(), h.clone());
        let (referral, delivery) = (referral.clone(), delivery.clone());
        tasks.push(tokio::spawn(async move {
            let fetch = imara
                .get(h2.gw.url(&format!("/v1/inbox/{delivery}")))
                .send();
            let other = if i % 2 == 0 {
                police.post(h2.gw.url(&format!("/v1/referrals/{referral}/withdraw")))
            } else {
                imara.post(h2.gw.url(&format!("/v1/inbox/{delivery}/ack")))
            }
            .send();
            let (a, b) = tokio::join!(fetch, other);
            (a.unwrap().status().as_u16(), b.unwrap().status().as_u16())
        }));
    }
    for t in tasks {
        let (a, b) = t.await.unwrap();
        assert!(a == 200 || a == 404, "fetch: {a}");
        assert!(b == 200 || b == 204, "withdraw or ack: {b}");
    }
    // Decisions racing withdrawals.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let id = h
            .submit_held(
                &police,
                &override_claims(&["imara"], &format!("race-held-{i:04}")),
            )
            .await;
        let lead = h.gw.person("notts-police", "dsl-b");
        get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
        let (police, h2) = (police.clone(), h.clone());
        tasks.push(tokio::spawn(async move {
            let decide = lead
                .post(h2.gw.url(&format!("/v1/reviews/{id}/decision")))
                .json(&json!({ "decision": "approve" }))
                .send();
            let withdraw = police
                .post(h2.gw.url(&format!("/v1/referrals/{id}/withdraw")))
                .send();
            let (a, b) = tokio::join!(decide, withdraw);
            (a.unwrap().status().as_u16(), b.unwrap().status().as_u16())
        }));
    }
    for t in tasks {
        let (a, b) = t.await.unwrap();
        assert!(matches!(a, 200 | 409), "decision: {a}");
        assert_eq!(b, 200, "withdrawal");
    }
    // Every delivery in an inbox has its ciphertext; no fetch follows a withdrawal or ack.
    let rows: Vec<(String, Option<Vec<u8>>)> = h
        .sql(async |c| {
            sqlx::query_as("SELECT status, sealed_packed FROM deliveries")
                .fetch_all(c)
                .await
                .unwrap()
        })
        .await;
    for (status, sealed) in &rows {
        assert_eq!(
            sealed.is_some(),
            matches!(status.as_str(), "queued" | "delivered"),
            "{status} with sealed {}",
            sealed.is_some()
        );
    }
    let events: Vec<(String, Option<String>)> = h
        .sql(async |c| {
            sqlx::query_as("SELECT kind, delivery_id FROM audit_events ORDER BY idx")
                .fetch_all(c)
                .await
                .unwrap()
        })
        .await;
    let mut ended = std::collections::HashSet::new();
    for (kind, delivery) in events {
        let Some(d) = delivery else { continue };
        match kind.as_str() {
            "withdrawn" | "acknowledged" | "expired" => {
                ended.insert(d);
            }
            "fetched" | "queued" => assert!(!ended.contains(&d), "{kind} after the end of {d}"),
            _ => {}
        }
    }
    match Arc::try_unwrap(h) {
        Ok(h) => h.gw.stop().await,
        Err(_) => panic!("harness still shared"),
    }
}

/// A correction replaces the original only for the recipients its own copy reaches: a lead
/// who approves it for one recipient and rejects it for another leaves the other with the
/// original.
async fn a_partly_released_correction_replaces_only_what_it_reaches(store: Option<String>) {
    let h = Harness::start(store).await;
    let mut original = claims("notts-police", "imara", "part-jti-0001");
    original["referral"]["to"] = json!(["imara", "childrens-social-care"]);
    let first = json_of(h.post_as("notts-police", "notts-police", &original).await).await;
    let original_id = first["id"].as_str().unwrap().to_owned();
    let mut correction = override_claims(&["imara", "childrens-social-care"], "part-jti-0002");
    correction["referral"]["supersedes"] = json!(original_id);
    let id = h
        .submit_held(&h.gw.system("notts-police"), &correction)
        .await;
    let lead = h.gw.person("notts-police", "dsl-b");
    let shown = get(&lead, h.gw.url(&format!("/v1/reviews/{id}"))).await;
    let imara_preview = shown["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"] == "imara")
        .unwrap()["preview"]
        .clone();
    let res = decide(
        &h,
        &lead,
        &id,
        json!({ "recipients": {
            "imara": { "decision": "approve", "preview": imara_preview },
            "childrens-social-care": { "decision": "reject", "reason": "Must not get the update." }
        } }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut now = statuses(&h, &original_id).await;
    now.sort();
    assert_eq!(
        now,
        vec![
            ("childrens-social-care".into(), "queued".into()),
            ("imara".into(), "withdrawn".into())
        ]
    );
    // The original's status names the correction that replaced it.
    let status = get(
        &h.gw.system("notts-police"),
        h.gw.url(&format!("/v1/referrals/{original_id}")),
    )
    .await;
    assert_eq!(status["superseded_by"], json!(id));
    h.gw.stop().await;
}

/// An approval stands only on a preview of this referral that this lead was shown: neither
/// another referral's digest nor one computed offline will do.
async fn an_approval_needs_a_preview_of_this_referral_shown_to_this_lead(store: Option<String>) {
    let h = Harness::start(store).await;
    let police = h.gw.system("notts-police");
    let a = h
        .submit_held(&police, &override_claims(&["imara"], "shown-jti-0001"))
        .await;
    let b = h
        .submit_held(&police, &override_claims(&["imara"], "shown-jti-0002"))
        .await;
    let lead = h.gw.person("notts-police", "dsl-b");
    let shown_a = get(&lead, h.gw.url(&format!("/v1/reviews/{a}"))).await;
    let res = decide(
        &h,
        &lead,
        &b,
        json!({ "decision": "approve", "preview": shown_a["preview"] }),
    )
    .await;
    assert_eq!(res.status(), 409, "A's digest does not approve B");
    // Another lead sees B; this lead presents B's digest without having been shown it.
    let other = h.gw.person("notts-police", "dsl-a");
    let shown_b = get(&other, h.gw.url(&format!("/v1/reviews/{b}"))).await;
    let res = decide(
        &h,
        &lead,
        &b,
        json!({ "decision": "approve", "preview": shown_b["preview"] }),
    )
    .await;
    assert_eq!(res.status(), 409, "a digest this lead was never shown");
    assert!(inbox(&h, "imara").await.is_empty());
    h.gw.stop().await;
}

/// A retry of an accepted referral is answered with the acceptance even when intake would
/// refuse the same claims now (its `iat` has aged past the skew).
async fn a_late_retry_still_gets_the_acceptance(store: Option<String>) {
    let clock = ManualClock::at(SystemTime::now());
    let h = Harness::start_full(common::Project::new(), store, Arc::new(clock.clone())).await;
    let doc = claims("notts-police", "imara", "late-jti-0001");
    let first = json_of(h.post_as("notts-police", "notts-police", &doc).await).await;
    clock.advance(Duration::from_secs(6 * 60));
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    assert_eq!(res.status(), 202);
    let again = json_of(res).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["repeated"], true);
    h.gw.stop().await;
}

/// A lead's decision racing the sender's correction: the decision either lands whole or is
/// sent back to the new preview (`409`), never a `500` (a release of a delivery the
/// correction withdrew) and never a `503` (a deadlock between the decision, which released
/// into inboxes before withdrawing the original, and the correction, which withdraws first).
async fn a_decision_racing_a_correction_is_never_a_failure(store: Option<String>) {
    let h = Arc::new(Harness::start(store).await);
    let lead = h.gw.person("notts-police", "dsl-b");
    for round in 0..12 {
        // O is queued to imara; C1 corrects it and is held; the lead has seen C1's preview.
        let o_doc = claims("notts-police", "imara", &format!("race-o-{round:04}"));
        let o = json_of(h.post_as("notts-police", "notts-police", &o_doc).await).await;
        let o_id = o["id"].as_str().unwrap().to_owned();
        let mut c1 = override_claims(
            &["imara", "childrens-social-care"],
            &format!("race-c1-{round:04}"),
        );
        c1["referral"]["supersedes"] = json!(o_id);
        let c1_id = h.submit_held(&h.gw.system("notts-police"), &c1).await;
        let _ = get(&lead, h.gw.url(&format!("/v1/reviews/{c1_id}"))).await;
        // At once: approve C1, and correct O again (C2, consent given, straight to imara).
        let mut c2 = claims("notts-police", "imara", &format!("race-c2-{round:04}"));
        c2["referral"]["supersedes"] = json!(o_id);
        let (h1, h2, lead1) = (h.clone(), h.clone(), lead.clone());
        let approve = tokio::spawn(async move {
            decide(&h1, &lead1, &c1_id, json!({ "decision": "approve" }))
                .await
                .status()
                .as_u16()
        });
        let correct = tokio::spawn(async move {
            h2.post_as("notts-police", "notts-police", &c2)
                .await
                .status()
                .as_u16()
        });
        let (approved, corrected) = (approve.await.unwrap(), correct.await.unwrap());
        assert!(
            matches!(approved, 200 | 409),
            "round {round}: decision answered {approved}"
        );
        assert!(
            matches!(corrected, 202 | 404),
            "round {round}: correction answered {corrected}"
        );
    }
    // And the partial race: O held for two recipients, a correction to one of them arrives
    // while the lead approves both.
    for round in 0..12 {
        let o_doc = override_claims(
            &["imara", "childrens-social-care"],
            &format!("race-h-{round:04}"),
        );
        let o_id = h.submit_held(&h.gw.system("notts-police"), &o_doc).await;
        let _ = get(&lead, h.gw.url(&format!("/v1/reviews/{o_id}"))).await;
        let mut c = claims("notts-police", "imara", &format!("race-hc-{round:04}"));
        c["referral"]["supersedes"] = json!(o_id);
        let (h1, h2, lead1, id) = (h.clone(), h.clone(), lead.clone(), o_id.clone());
        let approve = tokio::spawn(async move {
            let res = decide(&h1, &lead1, &id, json!({ "decision": "approve" })).await;
            (res.status().as_u16(), json_of(res).await)
        });
        let correct = tokio::spawn(async move {
            h2.post_as("notts-police", "notts-police", &c)
                .await
                .status()
                .as_u16()
        });
        let ((approved, body), corrected) = (approve.await.unwrap(), correct.await.unwrap());
        assert!(
            matches!(approved, 200 | 409),
            "round {round}: decision answered {approved}: {body}"
        );
        if approved == 409 {
            assert!(
                matches!(
                    body["type"].as_str(),
                    Some(
                        "urn:refex:problem:preview-stale" | "urn:refex:problem:referral-withdrawn"
                    )
                ),
                "{body}"
            );
        }
        assert_eq!(corrected, 202, "round {round}");
    }
    match Arc::try_unwrap(h) {
        Ok(h) => h.gw.stop().await,
        Err(_) => panic!("harness still shared"),
    }
}

/// A retry is answered with its acceptance even when a rule applied before the agreement
/// check has changed since: here the referral type's schema now requires a field the
/// original lacks (before: `422 invalid-referral` for a referral that was accepted).
async fn a_retry_after_a_schema_change_gets_its_acceptance(store: Option<String>) {
    let project = common::Project::with_copied_partners();
    let h = Harness::start_in(project, store).await;
    let doc = claims("notts-police", "imara", "schema-jti-0001");
    let first = json_of(h.post_as("notts-police", "notts-police", &doc).await).await;
    let path = h
        .project
        .path()
        .join("schemas/types/child-sexual-abuse-support.json");
    let mut schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    schema["properties"]["new_field"] = json!({ "type": "string" });
    schema["required"]
        .as_array_mut()
        .unwrap()
        .push(json!("new_field"));
    std::fs::write(&path, serde_json::to_vec_pretty(&schema).unwrap()).unwrap();
    reload(&h).await;
    // A new referral without the field is refused; the retry of the accepted one is not.
    let fresh = claims("notts-police", "imara", "schema-jti-0002");
    assert_eq!(
        h.post_as("notts-police", "notts-police", &fresh)
            .await
            .status(),
        422
    );
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    assert_eq!(res.status(), 202);
    let again = json_of(res).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["repeated"], true);
    h.gw.stop().await;
}

on_both_stores! {
    retry_after_schema_change => a_retry_after_a_schema_change_gets_its_acceptance,
    decision_racing_correction => a_decision_racing_a_correction_is_never_a_failure,
    concurrent_steps => concurrent_steps_stay_coherent,
    partly_released_correction => a_partly_released_correction_replaces_only_what_it_reaches,
    approval_needs_its_own_preview => an_approval_needs_a_preview_of_this_referral_shown_to_this_lead,
    late_retry => a_late_retry_still_gets_the_acceptance,
}
