//! The shipped schemas: every example payload validates against its type, every type has at
//! least two examples, and every agreement's recipient has its view.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

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

/// Every property of every type and view schema has a label (its `title`), and a view labels
/// a field as its type does: pages and printed deliveries read words, never keys.
#[test]
fn every_field_has_a_label_and_views_agree_with_their_types() {
    fn walk(node: &serde_json::Value, at: String, out: &mut Vec<(String, Option<String>)>) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                let here = format!("{at}/{k}");
                out.push((
                    here.clone(),
                    v.get("title").and_then(|t| t.as_str()).map(str::to_owned),
                ));
                walk(v, here.clone(), out);
                if let Some(items) = v.get("items") {
                    walk(items, format!("{here}/[]"), out);
                }
            }
        }
    }
    let root = common::repo().join("schemas");
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("types")).unwrap() {
        let path = entry.unwrap().path();
        let mut fields = Vec::new();
        walk(&read(&path), String::new(), &mut fields);
        for (at, title) in &fields {
            assert!(
                title.as_deref().is_some_and(|t| !t.trim().is_empty()),
                "{}: {at} has no title",
                path.display()
            );
        }
        checked += fields.len();
        let ty = path.file_name().unwrap();
        for kind in std::fs::read_dir(root.join("views")).unwrap() {
            let view = kind.unwrap().path().join(ty);
            if !view.exists() {
                continue;
            }
            let mut shown = Vec::new();
            walk(&read(&view), String::new(), &mut shown);
            for (at, title) in shown {
                let of_type = fields
                    .iter()
                    .find(|(p, _)| *p == at)
                    .map(|(_, t)| t.clone());
                assert_eq!(
                    Some(title),
                    of_type,
                    "{}: {at} is labelled unlike its type",
                    view.display()
                );
            }
        }
    }
    assert!(checked > 200, "{checked} fields checked");
}
