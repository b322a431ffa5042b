//! The shipped schemas: every example payload validates against its type, every type has at
//! least two examples, and every agreement's recipient has its view.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use refex::identity::ReferralType;
use refex::schema::SchemaSet;

#[test]
fn every_type_has_two_valid_examples() {
    let root = common::repo().join("schemas");
    let set = SchemaSet::load(&root).expect("schemas load");
    let types: Vec<ReferralType> = set.types().cloned().collect();
    assert_eq!(types.len(), 6, "{types:?}");
    for ty in types {
        let dir = root.join("examples").join(ty.as_str());
        let examples: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(examples.len() >= 2, "{ty}: {} examples", examples.len());
        let schema = set.referral_type(&ty).unwrap();
        for path in examples {
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let errors: Vec<String> = schema
                .validator
                .iter_errors(&doc)
                .map(|e| format!("{} {}", e.instance_path(), e))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        }
    }
}

#[test]
fn formats_are_checked() {
    let root = common::repo().join("schemas");
    let set = SchemaSet::load(&root).unwrap();
    let ty: ReferralType = "court-disclosure".parse().unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("examples/court-disclosure/police-records.json")).unwrap(),
    )
    .unwrap();
    doc["order"]["date_made"] = "2026-02-30".into();
    assert!(!set.referral_type(&ty).unwrap().validator.is_valid(&doc));
}
