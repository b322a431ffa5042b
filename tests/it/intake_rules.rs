//! The intake decision against the shipped partners and agreements: routing, agreements,
//! lawful basis, consent, overrides, and the 422 rules, each named.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::Project;
use refex::config::Config;
use refex::identity::{Actor, Principal};
use refex::intake::{self, Disposition, HoldReason, IntakeError, Override};
use serde_json::{Value, json};

const NOW: u64 = 1_795_000_000;

fn example(ty: &str, name: &str) -> Value {
    let path = common::repo().join(format!("schemas/examples/{ty}/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn claims(iss: &str, ty: &str, to: Option<&[&str]>, payload: Value) -> Value {
    let mut referral = json!({
        "type": ty,
        "sender_ref": "NP/2026/118822",
        "lawful_basis": { "article6": "public-task", "article9": "substantial-public-interest",
                          "dpa2018_schedule1": "para-18-safeguarding-children" },
        "consent": { "status": "given" },
        "subject_informed": { "status": "yes" },
        "payload": payload
    });
    if let Some(to) = to {
        referral["to"] = json!(to);
    }
    json!({ "iss": iss, "aud": "refex", "jti": "jti-0001-abcdef", "iat": NOW, "referral": referral })
}

fn system(config: &Config, partner: &str) -> Principal {
    config
        .policy
        .principals
        .values()
        .find(|p| p.partner.as_str() == partner && matches!(p.actor, Actor::System(_)))
        .cloned()
        .unwrap()
}

fn run(config: &Config, sender: &str, doc: &Value) -> Result<intake::Decision, IntakeError> {
    let claims = intake::parse(doc.to_string().as_bytes(), &config.policy.schemas)?;
    intake::decide(&claims, &system(config, sender), &config.rules(), NOW)
}

fn csa() -> Value {
    example("child-sexual-abuse-support", "police-referral")
}

#[test]
fn a_consented_referral_to_an_agreed_recipient_is_delivered() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let d = run(
        &config,
        "notts-police",
        &claims(
            "notts-police",
            "child-sexual-abuse-support",
            Some(&["imara"]),
            csa(),
        ),
    )
    .unwrap();
    assert_eq!(d.routes.len(), 1);
    assert_eq!(d.routes[0].recipient.as_str(), "imara");
    assert_eq!(d.routes[0].agreement.as_str(), "isa-police-imara-csa");
    assert_eq!(d.routes[0].disposition, Disposition::Deliver);
}

#[test]
fn without_to_the_default_routes_choose() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let d = run(
        &config,
        "notts-police",
        &claims("notts-police", "child-sexual-abuse-support", None, csa()),
    )
    .unwrap();
    let to: Vec<&str> = d.routes.iter().map(|r| r.recipient.as_str()).collect();
    assert_eq!(to, vec!["imara"]);
    let e = run(
        &config,
        "notts-police",
        &claims(
            "notts-police",
            "court-disclosure",
            None,
            example("court-disclosure", "police-records"),
        ),
    )
    .unwrap_err();
    assert_eq!(e, IntakeError::NoRoute);
}

#[test]
fn an_override_is_held_for_the_senders_lead() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let mut doc = claims(
        "notts-police",
        "child-sexual-abuse-support",
        Some(&["imara", "childrens-social-care"]),
        csa(),
    );
    doc["referral"]["consent"] = json!({ "status": "not-sought", "override": "risk-of-significant-harm",
                                         "justification": "Child at immediate risk." });
    let d = run(&config, "notts-police", &doc).unwrap();
    assert!(d.routes.iter().all(|r| r.disposition
        == Disposition::Hold(HoldReason::ConsentOverride(Override::RiskOfSignificantHarm))));
}

#[test]
fn refusals_name_what_failed() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let ok = claims(
        "notts-police",
        "child-sexual-abuse-support",
        Some(&["imara"]),
        csa(),
    );

    assert_eq!(
        run(&config, "imara", &ok).unwrap_err(),
        IntakeError::IssuerMismatch
    );

    let mut doc = ok.clone();
    doc["aud"] = json!("another-gateway");
    assert_eq!(
        run(&config, "notts-police", &doc).unwrap_err(),
        IntakeError::WrongAudience("refex".into())
    );

    let mut doc = ok.clone();
    doc["iat"] = json!(NOW - 301);
    assert_eq!(
        run(&config, "notts-police", &doc).unwrap_err(),
        IntakeError::StaleIat {
            iat: NOW - 301,
            now: NOW,
            skew: 300
        }
    );

    let mut doc = ok.clone();
    doc["referral"]["to"] = json!(["gp-practice"]);
    assert_eq!(
        run(&config, "notts-police", &doc).unwrap_err(),
        IntakeError::NoAgreement {
            recipient: "gp-practice".into(),
            covered: "childrens-social-care, imara".into()
        }
    );
    // A misspelt recipient is named as no such partner, not as a missing agreement.
    doc["referral"]["to"] = json!(["notts-polise"]);
    let e = run(&config, "notts-police", &doc).unwrap_err();
    assert_eq!(e, IntakeError::UnknownRecipient("notts-polise".into()));
    assert!(e.to_string().contains("check the recipient's id"), "{e}");

    // An unknown type is refused with the types there are.
    let mut doc = ok.clone();
    doc["referral"]["type"] = json!("child-sexual-abuse-suport");
    let e = run(&config, "notts-police", &doc).unwrap_err();
    let IntakeError::Invalid(violations) = &e else {
        panic!("{e:?}")
    };
    assert!(
        violations.iter().any(|v| v.pointer == "/type"
            && v.message.contains("the types are ")
            && v.message.contains("child-sexual-abuse-support")),
        "{violations:?}"
    );

    let mut doc = ok.clone();
    doc["referral"]["lawful_basis"]["article6"] = json!("legitimate-interests");
    assert!(matches!(
        run(&config, "notts-police", &doc).unwrap_err(),
        IntakeError::LawfulBasis { recipient, allowed } if recipient == "imara" && allowed.contains("public-task")
    ));
}

#[test]
fn consent_required_agreements_refuse_overrides_rather_than_hold() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let mut doc = claims(
        "probation",
        "support-referral",
        Some(&["empower-cic"]),
        example("support-referral", "probation-employability"),
    );
    doc["referral"]["lawful_basis"] =
        json!({ "article6": "consent", "article9": "explicit-consent" });
    assert_eq!(
        run(&config, "probation", &doc).unwrap().routes[0].disposition,
        Disposition::Deliver
    );
    doc["referral"]["consent"] = json!({ "status": "not-sought", "override": "risk-of-significant-harm",
                                         "justification": "x" });
    // A consent basis without consent is not law (refused before any agreement is asked);
    // on another basis, the agreement refuses the override as consent-required.
    assert!(matches!(
        run(&config, "probation", &doc).unwrap_err(),
        IntakeError::Invalid(v) if v[0].pointer == "/lawful_basis/article6"
    ));
    doc["referral"]["lawful_basis"] = json!({ "article6": "public-task",
        "article9": "substantial-public-interest", "dpa2018_schedule1": "para-6-statutory-purposes" });
    assert_eq!(
        run(&config, "probation", &doc).unwrap_err(),
        IntakeError::ConsentRequired("empower-cic".into())
    );
}

#[test]
fn invalid_referrals_list_every_violation_by_pointer_without_values() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let mut payload = csa();
    payload["child"]["date_of_birth"] = json!("CANARY-not-a-date");
    payload["child"]["nhs_number"] = json!("CANARY-123");
    payload.as_object_mut().unwrap().remove("referrer");
    let mut doc = claims(
        "notts-police",
        "child-sexual-abuse-support",
        Some(&["imara"]),
        payload,
    );
    doc["referral"]["consent"] = json!({ "status": "refused" });
    doc["referral"]["subject_informed"] = json!({ "status": "no" });
    let IntakeError::Invalid(v) = run(&config, "notts-police", &doc).unwrap_err() else {
        panic!()
    };
    let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
    for expected in [
        "/payload/child/date_of_birth",
        "/payload/child/nhs_number",
        "/payload/referrer",
        "/consent/override",
        "/subject_informed/reason",
    ] {
        assert!(
            pointers.contains(&expected),
            "{expected} missing from {pointers:?}"
        );
    }
    assert!(!serde_json::to_string(&v).unwrap().contains("CANARY"));
}

#[test]
fn court_order_overrides_need_a_court_order_reference() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let mut doc = claims(
        "notts-police",
        "court-disclosure",
        Some(&["family-court"]),
        example("court-disclosure", "police-records"),
    );
    doc["referral"]["lawful_basis"] =
        json!({ "article6": "legal-obligation", "article9": "legal-claims-or-court-order" });
    doc["referral"]["consent"] = json!({ "status": "not-sought", "override": "court-order", "justification": "Order FC-2026-0042." });
    let IntakeError::Invalid(v) = run(&config, "notts-police", &doc).unwrap_err() else {
        panic!()
    };
    assert_eq!(v[0].pointer, "/court_order_ref");
    doc["referral"]["court_order_ref"] = json!("FC-2026-0042");
    let d = run(&config, "notts-police", &doc).unwrap();
    assert_eq!(
        d.routes[0].disposition,
        Disposition::Hold(HoldReason::ConsentOverride(Override::CourtOrder))
    );
}

#[test]
fn unknown_envelope_fields_and_garbage_are_refused() {
    let project = Project::new();
    let config = Config::load(project.settings(None)).unwrap().config;
    let mut doc = claims(
        "notts-police",
        "child-sexual-abuse-support",
        Some(&["imara"]),
        csa(),
    );
    doc["referral"]["notes"] = json!("free text outside the payload");
    let IntakeError::Invalid(v) = run(&config, "notts-police", &doc).unwrap_err() else {
        panic!()
    };
    assert_eq!(v[0].pointer, "/notes");
    assert_eq!(
        intake::parse(b"not json", &config.policy.schemas).unwrap_err(),
        IntakeError::Malformed
    );
}

/// A partner's public JWKS (an `enc` and a `sig` key), generated in memory.
fn public_jwks(owner: &str) -> String {
    use refex::envelope::keys::{KeyUse, generate_p256};
    let mut keys = Vec::new();
    for (key_use, tag) in [(KeyUse::Enc, "enc"), (KeyUse::Sig, "sig")] {
        let mut jwk = generate_p256(&format!("{owner}-{tag}"), key_use).unwrap();
        jwk.as_object_mut().unwrap().remove("d");
        keys.push(jwk);
    }
    json!({ "keys": keys }).to_string()
}

/// A partner file's text: a system and a lead identified by fingerprint, its keys in memory.
fn partner_toml(id: &str, kind: &str, n: u8) -> String {
    format!(
        "name = \"{id}\"\nkind = \"{kind}\"\nsector = \"statutory\"\n\
         competent_authority = true\ncontact = \"x@{id}.example\"\njwks = \"{id}.jwks\"\n\
         [[systems]]\nid = \"case-system\"\nfingerprint = \"{}\"\n\
         [[people]]\nid = \"dsl-1\"\nname = \"Lead\"\nroles = [\"designated-safeguarding-lead\"]\n\
         fingerprint = \"{}\"\n",
        format!("{n:02x}").repeat(32),
        format!("{:02x}", n + 100).repeat(32),
    )
}

/// The intake decision on a policy built in memory from TOML text (no project on disk, no
/// PKI): the same cross-checks as a load from files, and the same decision.
#[test]
fn the_intake_decision_runs_on_a_policy_built_in_memory() {
    use refex::config::{InMemoryFiles, Policy};
    let schemas = refex::schema::SchemaSet::load(&common::repo().join("schemas")).unwrap();
    let files = InMemoryFiles::new()
        .with("notts-police.jwks", public_jwks("notts-police"))
        .with("imara.jwks", public_jwks("imara"));
    let agreement = "[[agreement]]\nid = \"isa-police-imara-csa\"\npurpose = \"Refer children.\"\n\
                     sender = \"notts-police\"\nrecipient = \"imara\"\n\
                     types = [\"child-sexual-abuse-support\"]\nreview = \"on-override\"\n\
                     route_by_default = true\n[[agreement.basis]]\narticle6 = [\"public-task\"]\n\
                     article9 = \"substantial-public-interest\"\n\
                     schedule1 = [\"para-18-safeguarding-children\"]\n";
    let police = partner_toml("notts-police", "police", 1);
    let imara = partner_toml("imara", "chisva", 2);
    let policy = Policy::from_toml(
        &[("notts-police", &police), ("imara", &imara)],
        agreement,
        schemas.clone(),
        &files,
    )
    .unwrap();
    let sender = policy
        .principals
        .values()
        .find(|p| p.partner.as_str() == "notts-police" && matches!(p.actor, Actor::System(_)))
        .cloned()
        .unwrap();
    let doc = claims("notts-police", "child-sexual-abuse-support", None, csa());
    let parsed = intake::parse(doc.to_string().as_bytes(), &policy.schemas).unwrap();
    let d = intake::decide(&parsed, &sender, &policy.rules("refex", 300), NOW).unwrap();
    assert_eq!(d.routes.len(), 1);
    assert_eq!(d.routes[0].recipient.as_str(), "imara");
    assert_eq!(d.routes[0].disposition, Disposition::Deliver);

    // The cross-checks are the files' own: an agreement naming an unknown partner, and a
    // partner whose key file is missing, are each named.
    let broken = agreement.replace("recipient = \"imara\"", "recipient = \"nobody\"");
    let err = Policy::from_toml(
        &[("notts-police", &police), ("imara", &imara)],
        &broken,
        schemas.clone(),
        &InMemoryFiles::new().with("notts-police.jwks", public_jwks("notts-police")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown recipient partner \"nobody\""),
        "{err}"
    );
    assert!(
        err.contains("partners/imara.toml: jwks: imara.jwks: no such file"),
        "{err}"
    );
}
