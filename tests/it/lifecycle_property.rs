//! A property test of the disclosure lifecycle through the real server over mutual TLS:
//! random sequences of intake, review, fetch, acknowledgement, withdrawal, correction,
//! expiry and reload, with the invariants checked after every step:
//!
//! - no delivery entered an inbox without an agreement in force at that moment;
//! - every field a recipient receives is in the `minimised` event of its release;
//! - every delivery has exactly one, known state;
//! - the audit tree verifies (an export checked offline);
//! - each referral's disclosure record matches its deliveries.
//!
//! Few cases (each starts a gateway), on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::partner::{Harness, claims};
use proptest::prelude::*;
use refex::clock::ManualClock;
use refex::envelope::referral::partner;
use serde_json::{Value, json};

const RECIPIENTS: [&str; 2] = ["imara", "childrens-social-care"];
/// The agreements a reload can take away and give back.
const AGREEMENT_IDS: [&str; 2] = ["isa-police-imara-csa", "isa-police-csc"];

#[derive(Clone, Debug)]
enum Op {
    /// Police send a referral to a non-empty subset of the recipients, held or not.
    Submit { to: u8, held: bool },
    /// A correction of an earlier referral.
    Correct { of: usize, held: bool },
    /// A lead views a held referral and decides each recipient (bit set: approve).
    Review { of: usize, approve: u8 },
    /// A recipient fetches (and, if `ack`, acknowledges) what is in its inbox.
    Work { recipient: usize, ack: bool },
    /// The sender withdraws a referral.
    Withdraw { of: usize },
    /// Time passes and housekeeping runs.
    Expire { days: u8 },
    /// The operator removes or restores an agreement, or widens or narrows imara's view.
    Reload {
        agreement: Option<usize>,
        widen: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4, any::<bool>()).prop_map(|(to, held)| Op::Submit { to, held }),
        1 => (0usize..8, any::<bool>()).prop_map(|(of, held)| Op::Correct { of, held }),
        3 => (0usize..8, 0u8..4).prop_map(|(of, approve)| Op::Review { of, approve }),
        2 => (0usize..2, any::<bool>()).prop_map(|(recipient, ack)| Op::Work { recipient, ack }),
        1 => (0usize..8).prop_map(|of| Op::Withdraw { of }),
        1 => (1u8..40).prop_map(|days| Op::Expire { days }),
        1 => (proptest::option::of(0usize..2), any::<bool>())
            .prop_map(|(agreement, widen)| Op::Reload { agreement, widen }),
    ]
}

/// What the test knows of the configuration in force.
struct Model {
    removed: BTreeSet<&'static str>,
    agreements_text: String,
    view_text: String,
    widened_view_text: String,
    referrals: Vec<String>,
    step: usize,
}

impl Model {
    fn permitted(&self, recipient: &str) -> bool {
        let id = match recipient {
            "imara" => AGREEMENT_IDS[0],
            _ => AGREEMENT_IDS[1],
        };
        !self.removed.contains(id)
    }
}

fn without(text: &str, id: &str) -> String {
    let start = text.find(&format!("[[agreement]]\nid = \"{id}\"")).unwrap();
    let end = start
        + 1
        + text[start + 1..]
            .find("[[agreement]]\n")
            .unwrap_or(text.len() - start - 1);
    format!("{}{}", &text[..start], &text[end..])
}

async fn reload(h: &Harness, model: &Model, widen: bool) {
    let mut agreements = model.agreements_text.clone();
    for id in &model.removed {
        agreements = without(&agreements, id);
    }
    let p = h.project.path();
    std::fs::write(p.join("partners/agreements.toml"), agreements).unwrap();
    std::fs::write(
        p.join("schemas/views/chisva/child-sexual-abuse-support.json"),
        if widen {
            &model.widened_view_text
        } else {
            &model.view_text
        },
    )
    .unwrap();
    let res = reqwest::Client::new()
        .post(h.gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn submit(
    h: &Harness,
    clock: &ManualClock,
    model: &mut Model,
    to: &[&str],
    held: bool,
    of: Option<String>,
) {
    let jti = format!("property-{:04}", model.step);
    let mut doc = claims("notts-police", to[0], &jti);
    doc["iat"] = json!(refex::clock::Clock::unix_seconds(clock));
    doc["referral"]["to"] = json!(to);
    if held {
        doc["referral"]["consent"] = json!({ "status": "not-sought",
            "override": "risk-of-significant-harm", "justification": "Risk." });
    }
    if let Some(of) = of {
        doc["referral"]["supersedes"] = json!(of);
    }
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    let status = res.status().as_u16();
    let v: Value = res.json().await.unwrap();
    let allowed = to.iter().all(|r| model.permitted(r));
    if allowed {
        assert_eq!(status, 202, "{v}");
        model.referrals.push(v["id"].as_str().unwrap().to_owned());
    } else {
        assert_eq!(status, 403, "{v}");
    }
}

async fn apply(h: &Harness, clock: &ManualClock, model: &mut Model, op: &Op) {
    let police = h.gw.system("notts-police");
    let pick = |of: usize, model: &Model| {
        (!model.referrals.is_empty()).then(|| model.referrals[of % model.referrals.len()].clone())
    };
    match op {
        Op::Submit { to, held } => {
            let to: Vec<&str> = RECIPIENTS
                .iter()
                .enumerate()
                .filter(|(i, _)| to & (1 << i) != 0)
                .map(|(_, r)| *r)
                .collect();
            submit(h, clock, model, &to, *held, None).await;
        }
        Op::Correct { of, held } => {
            if let Some(old) = pick(*of, model) {
                submit(h, clock, model, &["imara"], *held, Some(old)).await;
            }
        }
        Op::Review { of, approve } => {
            let Some(id) = pick(*of, model) else { return };
            let lead = h.gw.person("notts-police", "dsl-b");
            let res = lead
                .get(h.gw.url(&format!("/v1/reviews/{id}")))
                .send()
                .await
                .unwrap();
            if res.status() != 200 {
                return; // not held (any more)
            }
            let shown: Value = res.json().await.unwrap();
            let mut choices = serde_json::Map::new();
            for (i, r) in shown["recipients"].as_array().unwrap().iter().enumerate() {
                let to = r["to"].as_str().unwrap();
                let c = if approve & (1 << i) != 0 {
                    json!({ "decision": "approve", "preview": r["preview"] })
                } else {
                    json!({ "decision": "reject", "reason": "Not now." })
                };
                choices.insert(to.to_owned(), c);
            }
            let res = lead
                .post(h.gw.url(&format!("/v1/reviews/{id}/decision")))
                .json(&json!({ "recipients": choices }))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            let releasing_unpermitted = shown["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .any(|(i, r)| {
                    approve & (1 << i) != 0 && !model.permitted(r["to"].as_str().unwrap())
                });
            if releasing_unpermitted {
                assert_eq!(status, 409, "{body}");
                assert_eq!(body["type"], "urn:refex:problem:no-longer-permitted");
            } else {
                assert_eq!(status, 200, "{body}");
            }
        }
        Op::Work { recipient, ack } => {
            let who = RECIPIENTS[*recipient];
            let system = h.gw.system(who);
            let page = get(&system, h.gw.url("/v1/inbox?limit=500")).await;
            let own = h.keys(who);
            let gateway = h.gateway_public();
            for m in page["messages"].as_array().unwrap() {
                let id = m["id"].as_str().unwrap();
                let res = system
                    .get(h.gw.url(&format!("/v1/inbox/{id}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let plain = partner::unwrap(&res.text().await.unwrap(), &own, &gateway).unwrap();
                let delivery: Value = serde_json::from_slice(&plain).unwrap();
                released_fields_were_minimised(h, id, &delivery["delivery"]["payload"]).await;
                if *ack {
                    let res = system
                        .post(h.gw.url(&format!("/v1/inbox/{id}/ack")))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 204);
                }
            }
        }
        Op::Withdraw { of } => {
            if let Some(id) = pick(*of, model) {
                let res = police
                    .post(h.gw.url(&format!("/v1/referrals/{id}/withdraw")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            }
        }
        Op::Expire { days } => {
            clock.advance(Duration::from_secs(u64::from(*days) * 86_400));
            refex::housekeeping::run_once(&h.gw.running().runtime)
                .await
                .unwrap();
        }
        Op::Reload { agreement, widen } => {
            if let Some(a) = agreement {
                let id = AGREEMENT_IDS[*a];
                if !model.removed.remove(id) {
                    model.removed.insert(id);
                }
            }
            reload(h, model, *widen).await;
        }
    }
}

/// Every leaf pointer of a received payload is in the `minimised` event of its release (the
/// latest `minimised` event of the delivery).
async fn released_fields_were_minimised(h: &Harness, delivery: &str, payload: &Value) {
    let id = delivery.to_owned();
    let details: Vec<Vec<u8>> = h
        .sql(async |c| {
            sqlx::query_scalar(
                "SELECT packed_detail FROM audit_events WHERE delivery_id = $1 AND kind = 'minimised' ORDER BY idx",
            )
            .bind(id)
            .fetch_all(c)
            .await
            .unwrap()
        })
        .await;
    let last: Value = serde_json::from_str(&common::packed_detail_of(
        "minimised",
        details.last().unwrap(),
    ))
    .unwrap();
    let disclosed: BTreeSet<String> = last["disclosed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    for p in refex::schema::leaf_pointers(payload) {
        assert!(
            disclosed.contains(&p),
            "{p} delivered but not in the release's minimised event"
        );
    }
}

/// The invariants after a step.
async fn invariants(
    h: &Harness,
    model: &Model,
    before: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    // One known state per delivery.
    let rows: Vec<(String, String, String, String)> = h
        .sql(async |c| {
            sqlx::query_as(
                "SELECT d.id, d.status, d.recipient, r.id FROM deliveries d JOIN referrals r ON r.id = d.referral_id",
            )
            .fetch_all(c)
            .await
            .unwrap()
        })
        .await;
    let mut now = BTreeMap::new();
    for (id, status, recipient, _) in &rows {
        assert!(
            refex::lifecycle::DeliveryStatus::parse(status).is_some(),
            "{status}"
        );
        assert!(
            now.insert(id.clone(), status.clone()).is_none(),
            "{id} twice"
        );
        // Entered an inbox at this step: an agreement was in force.
        let entered = matches!(status.as_str(), "queued" | "delivered" | "acknowledged")
            && !matches!(
                before.get(id).map(String::as_str),
                Some("queued" | "delivered" | "acknowledged" | "withdrawn" | "expired")
            );
        if entered {
            assert!(
                model.permitted(recipient),
                "{id} entered {recipient}'s inbox without an agreement in force"
            );
        }
    }
    // Each referral's disclosure record matches its deliveries.
    let auditor = h.gw.person("notts-police", "auditor-1");
    for referral in &model.referrals {
        let record = get(&auditor, h.gw.url(&format!("/v1/disclosures/{referral}"))).await;
        for d in record["deliveries"].as_array().unwrap() {
            let id = d["delivery_id"].as_str().unwrap();
            assert_eq!(d["status"].as_str().unwrap(), now[id], "{record}");
            let disclosed = !d["disclosed"].as_array().unwrap().is_empty();
            match d["status"].as_str().unwrap() {
                "held-for-review" | "rejected-by-review" | "expired-undecided" => {
                    assert!(!disclosed, "{d}")
                }
                _ => {}
            }
            if d["outcome"] == "refused" {
                assert_eq!(d["status"], "rejected-by-review");
                assert!(d.get("approved_by").is_none());
            }
            if d["outcome"] == "never-received" {
                assert_eq!(d["received"], false);
                assert!(!disclosed);
            }
        }
    }
    // The audit trail verifies offline.
    let mut export = Vec::new();
    let origin = h.origin();
    refex::audit::export::export(h.gw.running().runtime.store.as_ref(), &origin, &mut export)
        .await
        .unwrap();
    refex::audit::verify::verify(
        &String::from_utf8(export).unwrap(),
        &h.gateway_public(),
        None,
    )
    .unwrap();
    now
}

async fn scenario(store: Option<String>, ops: Vec<Op>) {
    let clock = ManualClock::at(SystemTime::now());
    let project = common::Project::with_copied_partners();
    let agreements_text =
        std::fs::read_to_string(project.path().join("partners/agreements.toml")).unwrap();
    let view_path = project
        .path()
        .join("schemas/views/chisva/child-sexual-abuse-support.json");
    let view_text = std::fs::read_to_string(&view_path).unwrap();
    let ty: Value = serde_json::from_slice(
        &std::fs::read(
            project
                .path()
                .join("schemas/types/child-sexual-abuse-support.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut widened: Value = serde_json::from_str(&view_text).unwrap();
    widened["properties"]["offence"]["properties"]["narrative"] =
        ty["properties"]["offence"]["properties"]["narrative"].clone();
    let h = Harness::start_full(project, store, Arc::new(clock.clone())).await;
    let mut model = Model {
        removed: BTreeSet::new(),
        agreements_text,
        view_text,
        widened_view_text: serde_json::to_string_pretty(&widened).unwrap(),
        referrals: Vec::new(),
        step: 0,
    };
    let mut states = BTreeMap::new();
    for op in &ops {
        model.step += 1;
        apply(&h, &clock, &mut model, op).await;
        states = invariants(&h, &model, &states).await;
    }
    if std::env::var("PROPERTY_TRACE").is_ok() {
        eprintln!(
            "{} steps, {} referrals, states {:?}",
            ops.len(),
            model.referrals.len(),
            states.values().collect::<Vec<_>>()
        );
    }
    h.gw.stop().await;
}

fn run(postgres: bool, cases: u32) {
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 4..14))| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if postgres {
                // Unreachable: skipped, or under CI=true a failure (fresh_schema decides).
                if let Some(url) = common::pg::fresh_schema().await {
                    scenario(Some(url.clone()), ops).await;
                    common::pg::drop_schema(&url).await;
                }
            } else {
                scenario(None, ops).await;
            }
        });
    });
}

#[test]
fn the_lifecycle_keeps_its_invariants_on_sqlite() {
    run(false, 12);
}

#[test]
fn the_lifecycle_keeps_its_invariants_on_postgres() {
    run(true, 6);
}
