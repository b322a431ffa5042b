//! A bad configuration is refused whole, with every problem named at once.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::fs;

use common::Project;
use refex::config::{Config, ConfigError};

fn load(project: &Project) -> Result<Config, ConfigError> {
    Config::load(project.settings(None)).map(|loaded| loaded.config)
}

fn problems(project: &Project) -> Vec<String> {
    match load(project) {
        Ok(_) => panic!("configuration accepted"),
        Err(e) => e.problems,
    }
}

fn edit(project: &Project, file: &str, from: &str, to: &str) {
    let path = project.path().join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn the_shipped_configuration_loads() {
    let project = Project::new();
    let config = load(&project).expect("shipped configuration is valid");
    assert_eq!(config.policy.partners.len(), 16);
    assert!(config.policy.agreements.len() >= 20);
}

#[test]
fn an_agreement_naming_an_unknown_partner_is_refused() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/agreements.toml",
        "recipient = \"imara\"",
        "recipient = \"nobody\"",
    );
    assert!(has(
        &problems(&project),
        "unknown recipient partner \"nobody\""
    ));
}

/// An agreement's id is the reference deliveries and audit events carry: any the
/// partnership uses (a slug or `ISA 2024/03`), never empty or holding control characters.
#[test]
fn an_agreement_id_is_any_reference_but_an_empty_one() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/agreements.toml",
        "id = \"isa-police-imara-csa\"",
        "id = \"ISA 2024/03\"",
    );
    let config = load(&project).expect("a reference with capitals, a space and a slash");
    assert!(
        config
            .policy
            .agreements
            .iter()
            .any(|a| a.id.as_str() == "ISA 2024/03")
    );
    edit(
        &project,
        "partners/agreements.toml",
        "id = \"ISA 2024/03\"",
        "id = \"\"",
    );
    assert!(has(
        &problems(&project),
        "\"\" is not an agreement reference"
    ));
}

#[test]
fn an_agreement_naming_an_unknown_type_is_refused() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/agreements.toml",
        "types = [\"child-sexual-abuse-support\"]",
        "types = [\"gossip\"]",
    );
    assert!(has(&problems(&project), "unknown referral type \"gossip\""));
}

#[test]
fn a_missing_view_schema_is_refused() {
    let project = Project::with_copied_partners();
    fs::remove_file(project.path().join("schemas/views/gp/domestic-abuse.json")).unwrap();
    assert!(has(
        &problems(&project),
        "missing view schema views/gp/domestic-abuse.json"
    ));
}

#[test]
fn a_schema_that_does_not_compile_is_refused() {
    let project = Project::with_copied_partners();
    fs::write(
        project.path().join("schemas/types/court-disclosure.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "objekt"}"#,
    )
    .unwrap();
    assert!(has(
        &problems(&project),
        "court-disclosure.json does not compile"
    ));
}

#[test]
fn a_schema_with_open_objects_is_refused() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "schemas/types/court-disclosure.json",
        "\"additionalProperties\": false",
        "\"additionalProperties\": true",
    );
    assert!(has(
        &problems(&project),
        "without \"additionalProperties\": false"
    ));
}

#[test]
fn a_fingerprint_used_by_two_principals_is_refused() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/imara.toml",
        "certificate = \"certs/dev/partners/imara/people/dpo-1.pem\"",
        "certificate = \"certs/dev/partners/imara/people/dsl-a.pem\"",
    );
    assert!(has(
        &problems(&project),
        "is already used by imara/person:dsl-a"
    ));
}

#[test]
fn unreadable_certificate_and_key_files_are_refused() {
    let project = Project::with_copied_partners();
    fs::remove_file(project.pki().join("partners/housing/system.pem")).unwrap();
    fs::remove_file(project.pki().join("partners/probation/jwks.json")).unwrap();
    fs::write(project.pki().join("gateway/jwks.private.json"), "not json").unwrap();
    let p = problems(&project);
    assert!(has(&p, "partners/housing/system.pem"), "{p:#?}");
    assert!(
        has(&p, "probation.toml: jwks: cannot read key set"),
        "{p:#?}"
    );
    assert!(has(&p, "gateway keys:"), "{p:#?}");
}

#[test]
fn every_problem_is_listed_at_once() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/agreements.toml",
        "sender = \"cyp-sas\"",
        "sender = \"ghost\"",
    );
    fs::remove_file(
        project
            .path()
            .join("schemas/views/housing/domestic-abuse.json"),
    )
    .unwrap();
    fs::remove_file(project.pki().join("gateway/tls.key")).unwrap();
    edit(
        &project,
        "partners/mopac.toml",
        "kind = \"commissioner\"",
        "kind = \"Commissioner!\"",
    );
    let p = problems(&project);
    assert!(has(&p, "unknown sender partner \"ghost\""), "{p:#?}");
    assert!(has(&p, "views/housing/domestic-abuse.json"), "{p:#?}");
    assert!(has(&p, "tls.key"), "{p:#?}");
    assert!(has(&p, "mopac.toml"), "{p:#?}");
    assert!(p.len() >= 4, "{p:#?}");
}

#[test]
fn professional_referrals_only_refuses_a_voluntary_sender_in_the_agreement() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/agreements.toml",
        "sender = \"adult-social-care\"\nrecipient = \"cambs-idva\"",
        "sender = \"safer-london\"\nrecipient = \"cambs-idva\"",
    );
    assert!(has(&problems(&project), "professional referrals only"));
}

#[test]
fn unknown_keys_in_refex_toml_are_refused() {
    let project = Project::new();
    fs::write(
        project.path().join("refex.toml"),
        "listn = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let err = refex::config::load_settings(
        &project.path().join("refex.toml"),
        true,
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("listn"), "{err}");
}

#[test]
fn a_lawful_basis_combination_that_is_not_law_is_refused_by_name() {
    let project = Project::with_copied_partners();
    // Explicit consent is Article 9(2)(a), never a Schedule 1 condition.
    edit(
        &project,
        "partners/agreements.toml",
        "article9 = \"explicit-consent\"\n",
        "article9 = \"explicit-consent\"\nschedule1 = [\"explicit-consent\"]\n",
    );
    // (g) needs a Schedule 1 Part 2 condition, not a Part 1 one.
    edit(
        &project,
        "partners/agreements.toml",
        "schedule1 = [\"para-18-safeguarding-children\"]",
        "schedule1 = [\"para-2-health-or-social-care\"]",
    );
    let p = problems(&project);
    assert!(
        has(&p, "not law") && has(&p, "is not a DPA 2018 Schedule 1 condition"),
        "{p:?}"
    );
    assert!(
        has(&p, "needs at least one Schedule 1 Part 2 condition"),
        "{p:?}"
    );
}

#[test]
fn only_a_competent_authority_may_share_under_part_3() {
    let project = Project::with_copied_partners();
    edit(
        &project,
        "partners/notts-police.toml",
        "competent_authority = true",
        "competent_authority = false",
    );
    assert!(has(
        &problems(&project),
        "a dpa2018-part3 basis needs a competent authority as sender"
    ));
}
