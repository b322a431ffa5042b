//! A partner's side of the wire for tests: claims built from the shipped examples, signed and
//! encrypted with a partner's dev keys, posted over mutual TLS; and direct reads of the store
//! (tests may speak SQL; the gateway's code outside `store` may not).

use std::time::{SystemTime, UNIX_EPOCH};

use refex::envelope::keys::KeySet;
use refex::envelope::referral::partner;
use serde_json::{Value, json};
use sqlx::Connection as _;

use super::{Gateway, Project};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn example(ty: &str, name: &str) -> Value {
    let path = super::repo().join(format!("schemas/examples/{ty}/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn claims(iss: &str, to: &str, jti: &str) -> Value {
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

/// Police claims to `to` that rely on a consent override, so they are held for review.
pub fn override_claims(to: &[&str], jti: &str) -> Value {
    let mut c = claims("notts-police", to[0], jti);
    c["referral"]["to"] = json!(to);
    c["referral"]["consent"] = json!({ "status": "not-sought", "override": "risk-of-significant-harm",
                                       "justification": "Disclosed at school today; risk at home tonight." });
    c
}

pub struct Harness {
    pub project: Project,
    pub gw: Gateway,
    pub store_url: String,
}

impl Harness {
    /// Submits police claims with `client`'s certificate, signed with the police key; expects
    /// `202 held-for-review` and returns the referral id.
    pub async fn submit_held(&self, client: &reqwest::Client, doc: &Value) -> String {
        let body = partner::wrap(
            doc.to_string().as_bytes(),
            &self.keys("notts-police"),
            &self.gateway_public(),
        )
        .unwrap();
        let res = client
            .post(self.gw.url("/v1/referrals"))
            .header("content-type", "application/jose")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["status"], "held-for-review");
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn start(store_url: Option<String>) -> Self {
        Self::start_in(Project::new(), store_url).await
    }

    /// Starts on a prepared project (e.g. one with edited partner files).
    pub async fn start_in(project: Project, store_url: Option<String>) -> Self {
        Self::start_full(
            project,
            store_url,
            std::sync::Arc::new(refex::clock::SystemClock),
        )
        .await
    }

    /// Starts on a prepared project with a given clock.
    pub async fn start_full(
        project: Project,
        store_url: Option<String>,
        clock: std::sync::Arc<dyn refex::clock::Clock>,
    ) -> Self {
        let url = store_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                project.path().join("data/refex.db").display()
            )
        });
        let gw = project.start_with_clock(Some(url.clone()), clock).await;
        Self {
            project,
            gw,
            store_url: url,
        }
    }

    /// The gateway's id, the origin its audit log is exported under.
    pub fn origin(&self) -> String {
        self.gw
            .running()
            .runtime
            .snapshot()
            .config
            .settings
            .gateway_id
            .clone()
    }

    pub fn keys(&self, partner: &str) -> KeySet {
        KeySet::load_private(
            &self
                .project
                .pki()
                .join(format!("partners/{partner}/jwks.private.json")),
        )
        .unwrap()
    }

    pub fn gateway_public(&self) -> KeySet {
        let private = self.project.pki().join("gateway/jwks.private.json");
        let doc: Value = serde_json::from_slice(&std::fs::read(private).unwrap()).unwrap();
        let public = refex::envelope::keys::public_document(&doc).unwrap();
        KeySet::parse_public(public.to_string().as_bytes(), "gateway").unwrap()
    }

    /// A key set that claims the gateway's `enc` kid but is someone else's key.
    pub fn impostor_gateway(&self) -> KeySet {
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
    pub async fn post_as(&self, sender: &str, signer: &str, doc: &Value) -> reqwest::Response {
        let body = partner::wrap(
            doc.to_string().as_bytes(),
            &self.keys(signer),
            &self.gateway_public(),
        )
        .unwrap();
        self.post_raw(sender, body.into_bytes(), "application/jose")
            .await
    }

    pub async fn post_raw(
        &self,
        sender: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::Response {
        self.gw
            .system(sender)
            .post(self.gw.url("/v1/referrals"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn sql<T>(&self, f: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> T) -> T {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.store_url).await.unwrap();
        f(&mut conn).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        let q = format!("SELECT COUNT(*) FROM {table}");
        self.sql(async |c| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(q))
                .fetch_one(c)
                .await
                .unwrap()
        })
        .await
    }

    /// Every audit event's kind and detail (as canonical JSON read from its leaf; `{}` once
    /// purged).
    pub async fn audit(&self) -> Vec<(String, String)> {
        let rows = self
            .sql(async |c| {
                sqlx::query_as::<_, (String, Option<String>, Option<Vec<u8>>)>(
                    "SELECT kind, leaf, packed_detail FROM audit_events ORDER BY seq",
                )
                .fetch_all(c)
                .await
                .unwrap()
            })
            .await;
        rows.into_iter()
            .map(|(kind, leaf, packed)| {
                let detail = match (leaf, packed) {
                    (Some(l), _) => super::detail_of(&l),
                    (None, Some(p)) => super::packed_detail_of(&kind, &p),
                    (None, None) => "{}".into(),
                };
                (kind, detail)
            })
            .collect()
    }

    /// Every audit event's kind and actor (empty for the gateway's own).
    pub async fn audit_actors(&self) -> Vec<(String, String)> {
        self.sql(async |c| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT kind, COALESCE(actor, '') FROM audit_events ORDER BY seq",
            )
            .fetch_all(c)
            .await
            .unwrap()
        })
        .await
    }

    /// Every delivery still holding its ciphertext: its recipient and the compact JWE.
    pub async fn sealed_deliveries(&self) -> Vec<(String, String)> {
        let rows = self
            .sql(async |c| {
                sqlx::query_as::<_, (String, Vec<u8>)>(
                    "SELECT recipient, sealed_packed FROM deliveries \
                     WHERE sealed_packed IS NOT NULL ORDER BY seq",
                )
                .fetch_all(c)
                .await
                .unwrap()
            })
            .await;
        rows.into_iter()
            .map(|(to, packed)| {
                let sealed = refex::envelope::sealed::Sealed::from_packed(&packed).unwrap();
                (to, sealed.into_string())
            })
            .collect()
    }
}

/// The gateway's public keys, read from its admin listener (`…/.well-known/jwks.json`).
pub async fn gateway_keys(jwks_url: &str) -> KeySet {
    let doc: Value = reqwest::get(jwks_url).await.unwrap().json().await.unwrap();
    KeySet::parse_public(doc.to_string().as_bytes(), "gateway jwks").unwrap()
}

/// A police referral to `to` with `jti`, signed with the police key from `pki` and encrypted
/// to `gateway`.
pub fn police_body(pki: &std::path::Path, gateway: &KeySet, to: &str, jti: &str) -> String {
    let police =
        KeySet::load_private(&pki.join("partners/notts-police/jwks.private.json")).unwrap();
    partner::wrap(
        claims("notts-police", to, jti).to_string().as_bytes(),
        &police,
        gateway,
    )
    .unwrap()
}

/// Posts a referral body as `client` to the gateway at `url` (`…/v1/referrals`).
pub async fn post_jose(client: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap()
}
