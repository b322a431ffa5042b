//! `POST /v1/referrals` and `GET /v1/referrals/{id}` through the real server over mutual TLS,
//! with a partner client that signs and encrypts as a partner would, on SQLite and on
//! PostgreSQL. Every refusal leaves nothing but a `rejected` audit event.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Gateway, Project};
use refex::envelope::keys::KeySet;
use refex::envelope::referral::partner;
use serde_json::{Value, json};
use sqlx::Connection as _;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn example(ty: &str, name: &str) -> Value {
    let path = common::repo().join(format!("schemas/examples/{ty}/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn claims(iss: &str, to: &str, jti: &str) -> Value {
    json!({
        "iss": iss, "aud": "refex", "jti": jti, "iat": now(),
        "referral": {
            "type": "child-sexual-abuse-support",
            "to": [to],
            "sender_ref": "NP/2026/118822",
            "lawful_basis": { "article6": "public-task", "article9": "substantial-public-interest",
                              "dpa2018_schedule1": "para-18-safeguarding-children" },
            "consent": { "status": "given" },
            "subject_informed": { "status": "yes" },
            "court_order_ref": null,
            "payload": example("child-sexual-abuse-support", "police-referral")
        }
    })
}

struct Harness {
    project: Project,
    gw: Gateway,
    store_url: String,
}

impl Harness {
    async fn start(store_url: Option<String>) -> Self {
        let project = Project::new();
        let url = store_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                project.path().join("data/refex.db").display()
            )
        });
        let gw = project.start_with(Some(url.clone())).await;
        Self {
            project,
            gw,
            store_url: url,
        }
    }

    fn keys(&self, partner: &str) -> KeySet {
        KeySet::load_private(
            &self
                .project
                .pki()
                .join(format!("partners/{partner}/jwks.private.json")),
        )
        .unwrap()
    }

    fn gateway_public(&self) -> KeySet {
        let private = self.project.pki().join("gateway/jwks.private.json");
        let doc: Value = serde_json::from_slice(&std::fs::read(private).unwrap()).unwrap();
        let public = refex::envelope::keys::public_document(&doc).unwrap();
        KeySet::parse_public(public.to_string().as_bytes(), "gateway").unwrap()
    }

    /// A key set that claims the gateway's `enc` kid but is someone else's key.
    fn impostor_gateway(&self) -> KeySet {
        use refex::envelope::keys::{KeyUse, generate_p256, public_document};
        let public = self.gateway_public();
        let kid = public
            .kids()
            .find(|(u, _)| *u == KeyUse::Enc)
            .unwrap()
            .1
            .to_owned();
        let doc = json!({ "keys": [generate_p256(&kid, KeyUse::Enc).unwrap(),
                                   generate_p256("impostor-sig", KeyUse::Sig).unwrap()] });
        KeySet::parse_public(
            public_document(&doc).unwrap().to_string().as_bytes(),
            "impostor",
        )
        .unwrap()
    }

    /// Signs with `signer`'s key, encrypts to the gateway, posts with `sender`'s certificate.
    async fn post_as(&self, sender: &str, signer: &str, doc: &Value) -> reqwest::Response {
        let body = partner::wrap(
            doc.to_string().as_bytes(),
            &self.keys(signer),
            &self.gateway_public(),
        )
        .unwrap();
        self.post_raw(sender, body.into_bytes(), "application/jose")
            .await
    }

    async fn post_raw(&self, sender: &str, body: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.gw
            .system(sender)
            .post(self.gw.url("/v1/referrals"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn sql<T>(&self, f: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> T) -> T {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.store_url).await.unwrap();
        f(&mut conn).await
    }

    async fn count(&self, table: &str) -> i64 {
        let q = format!("SELECT COUNT(*) FROM {table}");
        self.sql(async |c| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(q))
                .fetch_one(c)
                .await
                .unwrap()
        })
        .await
    }

    async fn audit(&self) -> Vec<(String, String)> {
        self.sql(async |c| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT kind, detail FROM audit_events ORDER BY seq",
            )
            .fetch_all(c)
            .await
            .unwrap()
        })
        .await
    }

    async fn sealed_deliveries(&self) -> Vec<(String, String)> {
        self.sql(async |c| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT recipient, sealed FROM deliveries WHERE sealed IS NOT NULL ORDER BY seq",
            )
            .fetch_all(c)
            .await
            .unwrap()
        })
        .await
    }
}

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
            h.post_as(
                "notts-police",
                "notts-police",
                &claims("notts-police", "imara", "jti-ok-000001"),
            )
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

#[tokio::test]
async fn intake_on_sqlite() {
    scenario(None).await;
}

#[tokio::test]
async fn intake_on_postgres() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    scenario(Some(url.clone())).await;
    common::pg::drop_schema(&url).await;
}
