//! The receiving side through the real server on SQLite and PostgreSQL: a recipient's whole
//! day, isolation between partners by every route, withdraw, long-poll wake-up, and cursor
//! pagination under concurrent arrivals.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;

use common::partner::{Harness, claims};
use refex::audit::event::ConsentRecord;
use refex::envelope::keys::KeySet;
use refex::envelope::referral::partner;
use refex::identity::{PartnerKind, ReferralType};
use refex::ids::{DeliveryId, ReferralId};
use refex::intake::ConsentStatus;
use refex::intake::claims::{InformedStatus, SubjectInformed};
use refex::lawful::{Article6, Article9, LawfulBasis, Schedule1};
use refex::schema::validate;
use refex::store::records::{Acceptance, DeliveryRecord, DeliveryStatus, ReferralRecord};
use serde_json::{Value, json};

async fn send(h: &Harness, to: &str, jti: &str) -> String {
    let res = h
        .post_as(
            "notts-police",
            "notts-police",
            &claims("notts-police", to, jti),
        )
        .await;
    assert_eq!(res.status(), 202);
    let v: Value = res.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn list(h: &Harness, who: &str, query: &str) -> Value {
    let res =
        h.gw.system(who)
            .get(h.gw.url(&format!("/v1/inbox{query}")))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn status(h: &Harness, id: &str) -> Vec<(String, String)> {
    let v: Value =
        h.gw.system("notts-police")
            .get(h.gw.url(&format!("/v1/referrals/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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

async fn day(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    let first = send(&h, "imara", "day-jti-00001").await;
    let second = send(&h, "imara", "day-jti-00002").await;
    let for_csc = send(&h, "childrens-social-care", "day-jti-00003").await;

    // The gateway's public keys, as a partner fetches them.
    let jwks: Value =
        h.gw.system("imara")
            .get(h.gw.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let gateway = KeySet::parse_public(jwks.to_string().as_bytes(), "jwks").unwrap();
    let own = h.keys("imara");
    let view = refex::schema::SchemaSet::load(&common::repo().join("schemas")).unwrap();
    let view = view
        .view(
            &"chisva".parse::<PartnerKind>().unwrap(),
            &"child-sexual-abuse-support"
                .parse::<ReferralType>()
                .unwrap(),
        )
        .unwrap()
        .clone();

    // List: two messages, metadata only, in arrival order.
    let page = list(&h, "imara", "").await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let text = page.to_string();
    assert!(!text.contains("Amy") && !text.contains("NP/2026"), "{text}");
    for m in messages {
        assert_eq!(m["from"], "notts-police");
        assert_eq!(m["type"], "child-sexual-abuse-support");
        assert!(m["bytes"].as_i64().unwrap() > 0 && m["received_at"].is_string());
    }

    // Fetch, decrypt with imara's key, verify the gateway's signature, check the view, ack.
    for (m, referral) in messages.iter().zip([&first, &second]) {
        let id = m["id"].as_str().unwrap();
        let res =
            h.gw.system("imara")
                .get(h.gw.url(&format!("/v1/inbox/{id}")))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/jose");
        let sealed = res.text().await.unwrap();
        let plain = partner::unwrap(&sealed, &own, &gateway).unwrap();
        let d: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(d["aud"], "imara");
        assert_eq!(d["jti"], id);
        assert_eq!(d["delivery"]["referral_id"], referral.as_str());
        assert!(validate(&view, &d["delivery"]["payload"], "").is_empty());
        assert!(
            d["delivery"]["payload"]["offence"]
                .get("narrative")
                .is_none()
        );
        assert_eq!(
            status(&h, referral).await,
            vec![("imara".into(), "delivered".into())]
        );
        for _ in 0..2 {
            let res =
                h.gw.system("imara")
                    .post(h.gw.url(&format!("/v1/inbox/{id}/ack")))
                    .send()
                    .await
                    .unwrap();
            assert_eq!(res.status(), 204);
        }
        assert_eq!(
            status(&h, referral).await,
            vec![("imara".into(), "acknowledged".into())]
        );
        // Acknowledged deliveries leave the inbox and their ciphertext is gone.
        let res =
            h.gw.system("imara")
                .get(h.gw.url(&format!("/v1/inbox/{id}")))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 404);
    }
    assert_eq!(list(&h, "imara", "").await["messages"], json!([]));

    // Isolation: a third partner sees nothing of the others by any route.
    let csc_page = list(&h, "childrens-social-care", "").await;
    let csc_id = csc_page["messages"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(csc_page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(list(&h, "cambs-idva", "").await["messages"], json!([]));
    for who in ["imara", "cambs-idva"] {
        let c = h.gw.system(who);
        assert_eq!(
            c.get(h.gw.url(&format!("/v1/inbox/{csc_id}")))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            c.post(h.gw.url(&format!("/v1/inbox/{csc_id}/ack")))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            c.get(h.gw.url(&format!("/v1/referrals/{for_csc}")))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            c.post(h.gw.url(&format!("/v1/referrals/{for_csc}/withdraw")))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
    }
    assert_eq!(
        status(&h, &for_csc).await,
        vec![("childrens-social-care".into(), "queued".into())]
    );

    // Withdraw: unacknowledged deliveries disappear; acknowledged ones are reported as such.
    let res =
        h.gw.system("notts-police")
            .post(h.gw.url(&format!("/v1/referrals/{for_csc}/withdraw")))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["deliveries"],
        json!([{ "to": "childrens-social-care", "status": "withdrawn" }])
    );
    assert_eq!(
        list(&h, "childrens-social-care", "").await["messages"],
        json!([])
    );
    let c = h.gw.system("childrens-social-care");
    assert_eq!(
        c.get(h.gw.url(&format!("/v1/inbox/{csc_id}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let res =
        h.gw.system("notts-police")
            .post(h.gw.url(&format!("/v1/referrals/{first}/withdraw")))
            .send()
            .await
            .unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["deliveries"],
        json!([{ "to": "imara", "status": "acknowledged" }])
    );

    // Bad parameters are problems.
    for q in [
        "?limit=0",
        "?limit=501",
        "?wait=61",
        "?cursor=abc",
        "?cursor=%2B3",
        "?cursor=-0",
        "?cursor=9223372036854775807",
        "?limit=x",
    ] {
        let res =
            h.gw.system("imara")
                .get(h.gw.url(&format!("/v1/inbox{q}")))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 400, "{q}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }

    let kinds: Vec<String> = h.audit().await.into_iter().map(|(k, _)| k).collect();
    for k in ["fetched", "acknowledged", "withdrawn"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    h.gw.stop().await;
}

async fn long_poll(store_url: Option<String>) {
    let h = Arc::new(Harness::start(store_url).await);
    let cursor = list(&h, "imara", "").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { list(&h, "imara", &format!("?cursor={cursor}&wait=30")).await })
    };
    // Let the waiter reach its wait; if it has not, it still finds the delivery on its read.
    tokio::task::yield_now().await;
    send(&h, "imara", "poll-jti-00001").await;
    let page = waiter.await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    // An empty wait=0 answers at once with the same cursor.
    let next = page["next_cursor"].as_str().unwrap();
    let empty = list(&h, "imara", &format!("?cursor={next}")).await;
    assert_eq!(empty["messages"], json!([]));
    assert_eq!(empty["next_cursor"], next);
}

/// Thousands of deliveries arriving from several writers while a reader pages with a small
/// limit: every delivery is seen exactly once, in position order.
async fn pagination(store_url: Option<String>) {
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 500;
    // The reader long-polls and answers as soon as one delivery lands, so it makes far more
    // requests than pages: give this recipient a quota that never throttles the test.
    let project = common::Project::with_copied_partners();
    let imara = project.path().join("partners/imara.toml");
    let text = std::fs::read_to_string(&imara).unwrap();
    std::fs::write(
        &imara,
        text.replace("per_minute = 3000", "per_minute = 1000000")
            .replace("burst = 200", "burst = 100000"),
    )
    .unwrap();
    let h = Arc::new(Harness::start_in(project, store_url).await);
    let store = h.gw.running().runtime.store.clone();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let rt = h.gw.running().runtime.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let n = (w * PER_WRITER + i) as u64;
                let id = ReferralId::parse(&format!("ref_{n:026}")).unwrap();
                store
                    .accept(Acceptance {
                        referral: ReferralRecord {
                            id: id.clone(),
                            sender: "notts-police".parse().unwrap(),
                            sender_ref: "x".into(),
                            referral_type: "child-sexual-abuse-support".parse().unwrap(),
                            received_at: refex::timestamp::UnixTime::from_secs(
                                common::partner::now() as i64,
                            ),
                            lawful_basis: LawfulBasis::uk_gdpr(
                                Article6::PublicTask,
                                Article9::SubstantialPublicInterest,
                                Some(Schedule1::Para18SafeguardingChildren),
                            ),
                            consent: ConsentRecord {
                                status: ConsentStatus::Given,
                                override_: None,
                            },
                            subject_informed: SubjectInformed {
                                status: InformedStatus::Yes,
                                reason: None,
                            },
                            supersedes: None,
                            justification_sealed: None,
                        },
                        jti: format!("page-{w}-{i}-jti").parse().unwrap(),
                        digest: String::new(),
                        deliveries: vec![DeliveryRecord {
                            id: DeliveryId::parse(&format!("dlv_{n:026}")).unwrap(),
                            recipient: "imara".parse().unwrap(),
                            agreement: "isa".parse().unwrap(),
                            status: DeliveryStatus::Queued,
                            sealed: Some(
                                refex::envelope::sealed::Sealed::parse(
                                    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.x.aXY.Y3Q.dGFn".into(),
                                )
                                .unwrap(),
                            ),
                            subjects: vec![],
                        }],
                        hold: None,
                        events: vec![],
                        subjects: vec![],
                        withdraws: None,
                    })
                    .await
                    .unwrap();
                rt.inbox_changed();
            }
        }));
    }
    let total = WRITERS * PER_WRITER;
    let mut seen = HashSet::new();
    let mut cursor = "0".to_owned();
    let mut last_position_order = Vec::new();
    while seen.len() < total {
        let page = list(&h, "imara", &format!("?cursor={cursor}&limit=50&wait=10")).await;
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() && seen.len() < total {
            let rows: Vec<(String, Option<i64>, String)> = h
                .sql(async |c| {
                    sqlx::query_as("SELECT id, inbox_pos, status FROM deliveries WHERE recipient = 'imara' ORDER BY inbox_pos")
                        .fetch_all(c)
                        .await
                        .unwrap()
                })
                .await;
            let unseen: Vec<_> = rows.iter().filter(|r| !seen.contains(&r.0)).collect();
            panic!(
                "stalled at {} with cursor {cursor}; unseen: {unseen:?}",
                seen.len()
            );
        }
        for m in messages {
            let id = m["id"].as_str().unwrap().to_owned();
            assert!(seen.insert(id.clone()), "{id} repeated");
            last_position_order.push(id);
        }
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(seen.len(), total);
    // Nothing left after the end.
    assert_eq!(
        list(&h, "imara", &format!("?cursor={cursor}")).await["messages"],
        json!([])
    );
    // Each writer's deliveries appear in the order that writer committed them.
    for w in 0..WRITERS {
        let mine: Vec<usize> = last_position_order
            .iter()
            .filter_map(|id| {
                id.strip_prefix(&format!("dlv_w{w}_"))
                    .map(|n| n.parse().unwrap())
            })
            .collect();
        assert!(
            mine.windows(2).all(|p| p[0] < p[1]),
            "writer {w} out of order"
        );
    }
}

async fn correct(h: &Harness, old: &str, to: &[&str], jti: &str) -> reqwest::Response {
    let mut c = claims("notts-police", to[0], jti);
    c["referral"]["to"] = json!(to);
    c["referral"]["supersedes"] = json!(old);
    h.post_as("notts-police", "notts-police", &c).await
}

async fn open_only(h: &Harness, who: &str) -> Vec<Value> {
    let jwks: Value =
        h.gw.system(who)
            .get(h.gw.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let gateway = KeySet::parse_public(jwks.to_string().as_bytes(), "jwks").unwrap();
    let page = list(h, who, "").await;
    let mut out = Vec::new();
    for m in page["messages"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let res =
            h.gw.system(who)
                .get(h.gw.url(&format!("/v1/inbox/{id}")))
                .send()
                .await
                .unwrap();
        let status = res.status();
        let sealed = res.text().await.unwrap();
        assert_eq!(status, 200, "fetch {id} listed in {page}: {sealed}");
        out.push(
            serde_json::from_slice(&partner::unwrap(&sealed, &h.keys(who), &gateway).unwrap())
                .unwrap(),
        );
    }
    out
}

async fn corrections(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    // A is fetched and acknowledged by imara; B corrects it, to imara and social care.
    let a = send(&h, "imara", "fix-jti-00001").await;
    for d in open_only(&h, "imara").await {
        let id = d["jti"].as_str().unwrap();
        h.gw.system("imara")
            .post(h.gw.url(&format!("/v1/inbox/{id}/ack")))
            .send()
            .await
            .unwrap();
    }
    let res = correct(&h, &a, &["imara", "childrens-social-care"], "fix-jti-00002").await;
    assert_eq!(res.status(), 202);
    let b: Value = res.json().await.unwrap();
    let b = b["id"].as_str().unwrap().to_owned();
    let imara = open_only(&h, "imara").await;
    assert_eq!(imara.len(), 1);
    assert_eq!(
        imara[0]["delivery"]["supersedes"],
        a.as_str(),
        "the recipient that acknowledged A is told"
    );
    let csc = open_only(&h, "childrens-social-care").await;
    assert!(
        csc[0]["delivery"].get("supersedes").is_none(),
        "a recipient that never had A is not told of it"
    );

    // Statuses link both ways.
    let get = |id: String| {
        let h = &h;
        async move {
            h.gw.system("notts-police")
                .get(h.gw.url(&format!("/v1/referrals/{id}")))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(get(a.clone()).await["superseded_by"], b.as_str());
    assert_eq!(get(b.clone()).await["supersedes"], a.as_str());

    // C is still unacknowledged when D corrects it: C leaves the inbox as withdrawn.
    let before: Vec<String> = list(&h, "imara", "").await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let c = send(&h, "imara", "fix-jti-00004").await;
    assert_eq!(
        list(&h, "imara", "").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        before.len() + 1
    );
    let res = correct(&h, &c, &["imara"], "fix-jti-00005").await;
    assert_eq!(res.status(), 202);
    assert_eq!(
        get(c.clone()).await["deliveries"],
        json!([{ "to": "imara", "status": "withdrawn" }])
    );
    let now_listed: Vec<String> = list(&h, "imara", "").await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(now_listed.len(), before.len() + 1, "C withdrawn, D queued");

    // Another partner's referral cannot be superseded: 404, nothing written.
    let theirs = {
        let mut cl = claims("imara", "childrens-social-care", "fix-jti-imara1");
        cl["referral"]["type"] = json!("safeguarding-concern");
        cl["referral"]["payload"] =
            common::partner::example("safeguarding-concern", "child-neglect");
        let res = h.post_as("imara", "imara", &cl).await;
        assert_eq!(res.status(), 202);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let res = correct(&h, &theirs, &["imara"], "fix-jti-00006").await;
    assert_eq!(res.status(), 404);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "urn:refex:problem:unknown-superseded");
    h.gw.stop().await;
}

/// `POST /v1/inbox/ack` as `imara` with `body` (JSON).
async fn ack_page(h: &Harness, body: &Value) -> reqwest::Response {
    h.gw.system("imara")
        .post(h.gw.url("/v1/inbox/ack"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A page acknowledged at once: each id its own outcome and audit event, another
/// partner's id as unknown as a made-up one, idempotent; a body with one bad id changes
/// nothing and names the id.
async fn page_acks(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    let referrals: Vec<String> = [1, 2, 3]
        .iter()
        .map(|n| format!("pack-jti-0000{n}"))
        .collect();
    let mut sent = Vec::new();
    for jti in &referrals {
        sent.push(send(&h, "imara", jti).await);
    }
    send(&h, "childrens-social-care", "pack-jti-00004").await;
    let ids: Vec<String> = list(&h, "imara", "").await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let csc = list(&h, "childrens-social-care", "").await["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let made_up = "dlv_00000000000000000000000000";
    // The first was fetched; the second never was: both may be acknowledged.
    let res =
        h.gw.system("imara")
            .get(h.gw.url(&format!("/v1/inbox/{}", ids[0])))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200);

    // Refused whole, naming what is wrong, before anything is acknowledged.
    let long: Vec<String> = (0..501).map(|_| made_up.to_owned()).collect();
    for (body, says) in [
        (
            json!({"ids": [ids[2], "ref_nope"]}),
            "ids[1] is not a delivery id",
        ),
        (
            json!({"ids": [ids[2], ids[2]]}),
            "ids[1] repeats an earlier id",
        ),
        (json!({"ids": []}), "1 to 500 delivery ids"),
        (json!({"ids": long}), "1 to 500 delivery ids"),
        (json!({"ids": [ids[2]], "also": 1}), "1 to 500 delivery ids"),
        (json!([ids[2]]), "1 to 500 delivery ids"),
    ] {
        let res = ack_page(&h, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
    }
    let res =
        h.gw.system("imara")
            .post(h.gw.url("/v1/inbox/ack"))
            .header("content-type", "application/xml")
            .body(json!({"ids": [ids[2]]}).to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 415);
    // A member named twice says which.
    let res =
        h.gw.system("imara")
            .post(h.gw.url("/v1/inbox/ack"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"ids": ["{}"], "ids": []}}"#, ids[2]))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("member /ids appears more than once"),
        "{problem}"
    );
    // A long or unprintable name is not echoed.
    let long = "x".repeat(100);
    for name in [long.as_str(), "a\\nb"] {
        let res =
            h.gw.system("imara")
                .post(h.gw.url("/v1/inbox/ack"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"{name}": 1, "{name}": 2}}"#))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 400);
        let problem: Value = res.json().await.unwrap();
        assert_eq!(
            problem["detail"], "a member appears more than once",
            "{problem}"
        );
    }
    // The path is the page acknowledgement's alone, not also `GET /v1/inbox/{id}`'s.
    let res =
        h.gw.system("imara")
            .get(h.gw.url("/v1/inbox/ack"))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(
        list(&h, "imara", "").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "a refused body acknowledged something"
    );

    // Two of imara's, csc's and a made-up one: each in its list, in the request's order.
    let body = json!({"ids": [ids[1], csc, ids[0], made_up]});
    for _ in 0..2 {
        let res = ack_page(&h, &body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(
            answer,
            json!({"acknowledged": [ids[1], ids[0]], "not_found": [csc, made_up]})
        );
    }
    for (referral, now) in sent.iter().zip(["acknowledged", "acknowledged", "queued"]) {
        assert_eq!(
            status(&h, referral).await,
            vec![("imara".into(), now.into())]
        );
    }
    let left = list(&h, "imara", "").await;
    assert_eq!(left["messages"].as_array().unwrap().len(), 1);
    assert_eq!(left["messages"][0]["id"], ids[2].as_str());
    // csc's delivery is untouched, and each acknowledgement has one event, however often
    // it was asked for.
    assert_eq!(
        list(&h, "childrens-social-care", "").await["messages"][0]["id"],
        csc.as_str()
    );
    let acks = h
        .audit()
        .await
        .into_iter()
        .filter(|(kind, _)| kind == "acknowledged")
        .count();
    assert_eq!(acks, 2);
    for id in &ids[..2] {
        let res =
            h.gw.system("imara")
                .get(h.gw.url(&format!("/v1/inbox/{id}")))
                .send()
                .await
                .unwrap();
        assert_eq!(res.status(), 404, "an acknowledged delivery is gone");
    }
    h.gw.stop().await;
}

crate::on_both_stores!(a_page_of_deliveries_acknowledged_at_once => page_acks);

crate::on_both_stores!(corrections => corrections);

crate::on_both_stores!(a_recipients_day => day);

crate::on_both_stores!(long_poll_wakes_on_commit => long_poll);

crate::on_both_stores!(pagination_never_skips_or_repeats_under_concurrent_arrivals => pagination);

async fn expiry_and_purge(store_url: Option<String>) {
    use refex::clock::{Clock as _, ManualClock};
    use std::time::{Duration, SystemTime};
    let clock = ManualClock::at(SystemTime::now());
    let h = Harness::start_full(common::Project::new(), store_url, Arc::new(clock.clone())).await;
    let rt = h.gw.running().runtime.clone();
    let kept = send(&h, "imara", "exp-jti-00001").await;
    let acked = send(&h, "imara", "exp-jti-00002").await;
    let page = list(&h, "imara", "").await;
    let acked_delivery = page["messages"][1]["id"].as_str().unwrap().to_owned();
    let ack =
        h.gw.system("imara")
            .post(h.gw.url(&format!("/v1/inbox/{acked_delivery}/ack")))
            .send()
            .await
            .unwrap();
    assert_eq!(ack.status(), 204, "{}", ack.text().await.unwrap());

    // Within imara's 30-day retention nothing expires.
    clock.advance(Duration::from_secs(29 * 86400));
    let report = refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(report.expired, 0);
    assert_eq!(
        report.markers, 0,
        "replay markers are purged by the database's clock, never by a replica's own \
         (this one runs 29 days ahead; before, it purged both)"
    );
    // Past it, the unacknowledged delivery expires and its ciphertext is deleted.
    clock.advance(Duration::from_secs(2 * 86400));
    let report = refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(
        status(&h, &kept).await,
        vec![("imara".into(), "expired".into())]
    );
    assert_eq!(
        status(&h, &acked).await,
        vec![("imara".into(), "acknowledged".into())]
    );
    assert_eq!(list(&h, "imara", "").await["messages"], json!([]));
    let sealed: i64 = h
        .sql(async |c| {
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE sealed IS NOT NULL")
                .fetch_one(c)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(sealed, 0);

    // Seven years after the last activity the records are purged, with a `purged` event.
    clock.advance(Duration::from_secs(7 * 366 * 86400));
    let report = refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(report.purged, 2, "{report:?}");
    let res =
        h.gw.system("notts-police")
            .get(h.gw.url(&format!("/v1/referrals/{kept}")))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 404);
    let kinds: Vec<String> = h.audit().await.into_iter().map(|(k, _)| k).collect();
    assert!(
        kinds.contains(&"expired".to_owned()) && kinds.contains(&"purged".to_owned()),
        "{kinds:?}"
    );
    assert!(clock.unix_seconds() > 0);
    h.gw.stop().await;
}

crate::on_both_stores!(expiry_and_purge => expiry_and_purge);
