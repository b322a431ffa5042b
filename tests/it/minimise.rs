//! Minimisation against the shipped views: the need-to-know cases domain.md pins down, and
//! properties that hold for any instance.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use proptest::prelude::*;
use refex::identity::{PartnerKind, ReferralType};
use refex::schema::{Compiled, SchemaSet, minimise, validate};
use serde_json::{Value, json};

fn set() -> SchemaSet {
    SchemaSet::load(&common::repo().join("schemas")).expect("schemas")
}

fn example(ty: &str, name: &str) -> Value {
    let path = common::repo().join(format!("schemas/examples/{ty}/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn view(set: &SchemaSet, kind: &str, ty: &str) -> Compiled {
    set.view(
        &kind.parse::<PartnerKind>().unwrap(),
        &ty.parse::<ReferralType>().unwrap(),
    )
    .unwrap_or_else(|| panic!("no view {kind}/{ty}"))
    .clone()
}

/// Minimises and checks the result validates against the view.
fn minimised(set: &SchemaSet, kind: &str, ty: &str, instance: &Value) -> (Value, Vec<String>) {
    let v = view(set, kind, ty);
    let m = minimise(instance, &v.source);
    let errors = validate(&v, &m.value, "");
    assert!(
        errors.is_empty(),
        "{kind}/{ty}: minimised result invalid: {errors:#?}"
    );
    (m.value, m.withheld)
}

#[test]
fn domestic_abuse_to_the_idva_keeps_risk_and_people_but_not_narrative_or_intelligence() {
    let set = set();
    let (out, withheld) = minimised(
        &set,
        "idva",
        "domestic-abuse",
        &example("domestic-abuse", "police-high-risk"),
    );
    for kept in [
        "/victim/name",
        "/victim/safe_contact/phone",
        "/risk_level",
        "/dash/total_score",
        "/children_in_household/0/name",
        "/perpetrators/0/name",
        "/incident/summary",
    ] {
        assert!(out.pointer(kept).is_some(), "{kept} withheld");
    }
    assert!(out.pointer("/incident/narrative").is_none());
    assert!(out.get("police_intelligence").is_none());
    assert!(
        withheld.contains(&"/incident/narrative".to_owned()),
        "{withheld:?}"
    );
    assert!(
        withheld.contains(&"/police_intelligence".to_owned()),
        "{withheld:?}"
    );
}

#[test]
fn domestic_abuse_to_a_gp_is_identity_risk_and_idva_contact_only() {
    let set = set();
    let (out, _) = minimised(
        &set,
        "gp",
        "domestic-abuse",
        &example("domestic-abuse", "police-high-risk"),
    );
    let mut keys: Vec<&str> = out
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["idva_contact", "risk_level", "victim"]);
    let mut victim: Vec<&str> = out["victim"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    victim.sort();
    assert_eq!(
        victim,
        vec!["address", "date_of_birth", "name", "nhs_number"]
    );
    assert_eq!(out["risk_level"], "high");
}

#[test]
fn domestic_abuse_to_housing_has_safe_address_need_and_only_the_number_of_children() {
    let set = set();
    let (out, _) = minimised(
        &set,
        "housing",
        "domestic-abuse",
        &example("domestic-abuse", "police-high-risk"),
    );
    assert_eq!(out["victim"]["safe_address_needed"], true);
    assert_eq!(out["number_of_children_in_household"], 2);
    assert!(out.get("children_in_household").is_none());
    assert!(out.get("perpetrators").is_none());
    assert!(
        out["victim"].get("disabilities").is_none(),
        "clinical detail reached housing"
    );
}

#[test]
fn csa_support_to_imara_keeps_the_childs_circle_but_not_offence_narrative_or_offender() {
    let set = set();
    let (out, withheld) = minimised(
        &set,
        "chisva",
        "child-sexual-abuse-support",
        &example("child-sexual-abuse-support", "police-referral"),
    );
    for kept in [
        "/child/name",
        "/school/name",
        "/gp/practice_name",
        "/carers/0/name",
        "/family_members_seeking_support/0/relationship",
        "/offence/case_stage",
        "/offence/police_crime_reference",
    ] {
        assert!(out.pointer(kept).is_some(), "{kept} withheld");
    }
    assert!(out.pointer("/offence/narrative").is_none());
    assert!(out.pointer("/offence/alleged_offender").is_none());
    assert!(
        withheld.contains(&"/offence/alleged_offender".to_owned()),
        "{withheld:?}"
    );
}

#[test]
fn every_example_minimises_to_a_valid_view_for_every_view_of_its_type() {
    let set = set();
    let views = std::fs::read_dir(common::repo().join("schemas/views")).unwrap();
    for kind_dir in views {
        let kind_dir = kind_dir.unwrap().path();
        let kind = kind_dir.file_name().unwrap().to_str().unwrap().to_owned();
        for view_file in std::fs::read_dir(&kind_dir).unwrap() {
            let ty = view_file
                .unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            for ex in std::fs::read_dir(common::repo().join("schemas/examples").join(&ty)).unwrap()
            {
                let instance: Value =
                    serde_json::from_slice(&std::fs::read(ex.unwrap().path()).unwrap()).unwrap();
                minimised(&set, &kind, &ty, &instance);
            }
        }
    }
}

/// Declared property names at each level of a view, for checking outputs.
fn undeclared(value: &Value, view: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let declared = view.get("properties").and_then(Value::as_object);
            for (k, v) in map {
                match declared.and_then(|d| d.get(k)) {
                    Some(sub) => undeclared(v, sub, &format!("{at}/{k}"), out),
                    None => out.push(format!("{at}/{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_view) = view.get("items") {
                for (i, v) in items.iter().enumerate() {
                    undeclared(v, item_view, &format!("{at}/{i}"), out);
                }
            }
        }
        _ => {}
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("victim".to_owned()),
                    Just("name".to_owned()),
                    Just("risk_level".to_owned()),
                    Just("children_in_household".to_owned()),
                    Just("incident".to_owned()),
                    Just("narrative".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn output_never_holds_an_undeclared_property_and_minimising_is_idempotent(
        instance in arb_json(),
        kind in prop::sample::select(vec!["idva", "gp", "housing", "police", "childrens-social-care"]),
    ) {
        let set = set();
        let v = view(&set, kind, "domestic-abuse");
        let once = minimise(&instance, &v.source);
        let mut extra = Vec::new();
        undeclared(&once.value, &v.source, "", &mut extra);
        prop_assert!(extra.is_empty(), "undeclared kept: {extra:?}");
        let twice = minimise(&once.value, &v.source);
        prop_assert_eq!(&twice.value, &once.value);
        prop_assert!(twice.withheld.is_empty());
    }

    #[test]
    fn an_example_with_planted_fields_loses_exactly_those_fields(
        key in "[a-z]{3,8}_planted",
        value in "[a-z]{1,12}",
    ) {
        let set = set();
        let v = view(&set, "idva", "domestic-abuse");
        let mut instance = example("domestic-abuse", "police-high-risk");
        instance["victim"][&key] = json!(value);
        instance["perpetrators"][0][&key] = json!(value);
        let clean = minimise(&example("domestic-abuse", "police-high-risk"), &v.source);
        let planted = minimise(&instance, &v.source);
        prop_assert_eq!(&planted.value, &clean.value);
        let (victim_key, perp_key) = (format!("/victim/{key}"), format!("/perpetrators/0/{key}"));
        prop_assert!(planted.withheld.contains(&victim_key));
        prop_assert!(planted.withheld.contains(&perp_key));
    }
}
