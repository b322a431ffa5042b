//! Minimisation: project an instance onto a recipient's view schema. Every property the view
//! does not declare is withheld, recursively, arrays included; the withheld locations are
//! reported as JSON pointers (never their values) for the audit trail and the reviewer.
//!
//! The view is read structurally: `properties` selects an object's keys, `items` applies to
//! every array element, and a local `$ref` (`#/...`) is followed. Anything else in a view is a
//! constraint on a kept value, checked by validating the result against the view.

use serde_json::{Map, Value};

/// How deep a view may nest before minimisation refuses it (guards against `$ref` cycles).
const MAX_DEPTH: usize = 64;

/// A minimised instance with what was withheld.
#[derive(Clone, Debug, PartialEq)]
pub struct Minimised {
    /// The projection, containing only what the view declares.
    pub value: Value,
    /// Pointers (into the original instance) of every withheld property.
    pub withheld: Vec<String>,
}

/// Projects `instance` onto `view`.
pub fn minimise(instance: &Value, view: &Value) -> Minimised {
    let mut withheld = Vec::new();
    let value = project(instance, view, view, String::new(), &mut withheld, 0);
    Minimised { value, withheld }
}

fn resolve<'a>(node: &'a Value, root: &'a Value, depth: usize) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) if depth < MAX_DEPTH => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(target) => resolve(target, root, depth + 1),
            None => node,
        },
        _ => node,
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn project(
    instance: &Value,
    view: &Value,
    root: &Value,
    at: String,
    withheld: &mut Vec<String>,
    depth: usize,
) -> Value {
    let view = resolve(view, root, 0);
    if depth >= MAX_DEPTH {
        withheld.push(at);
        return Value::Null;
    }
    match instance {
        Value::Object(fields) => {
            let Some(declared) = view.get("properties").and_then(Value::as_object) else {
                // An object where the view declares no properties: nothing in it is needed.
                if !fields.is_empty() {
                    withheld.extend(fields.keys().map(|k| format!("{at}/{}", escape(k))));
                }
                return Value::Object(Map::new());
            };
            let mut kept = Map::new();
            for (key, value) in fields {
                let here = format!("{at}/{}", escape(key));
                match declared.get(key) {
                    Some(sub) => {
                        kept.insert(
                            key.clone(),
                            project(value, sub, root, here, withheld, depth + 1),
                        );
                    }
                    None => withheld.push(here),
                }
            }
            Value::Object(kept)
        }
        Value::Array(items) => match view.get("items") {
            Some(item_view) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        project(v, item_view, root, format!("{at}/{i}"), withheld, depth + 1)
                    })
                    .collect(),
            ),
            None => instance.clone(),
        },
        scalar => scalar.clone(),
    }
}

/// The pointers of every scalar (leaf) value in `value`: what a disclosure actually contains,
/// for the disclosure record. Array elements are listed by index.
pub fn leaf_pointers(value: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    walk(child, format!("{at}/{}", escape(k)), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => out.push(at),
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> Value {
        json!({
            "type": "object",
            "properties": {
                "victim": { "type": "object", "properties": { "name": {"type": "string"} } },
                "children": { "type": "array", "items": { "$ref": "#/$defs/child" } },
                "risk_level": { "type": "string" }
            },
            "$defs": { "child": { "type": "object", "properties": { "age": {"type": "integer"} } } }
        })
    }

    #[test]
    fn undeclared_properties_are_withheld_recursively_and_in_arrays() {
        let instance = json!({
            "victim": { "name": "V", "address": "A" },
            "children": [ { "age": 3, "school": "S" }, { "age": 5 } ],
            "risk_level": "high",
            "narrative": "N"
        });
        let m = minimise(&instance, &view());
        assert_eq!(
            m.value,
            json!({ "victim": {"name": "V"}, "children": [{"age": 3}, {"age": 5}], "risk_level": "high" })
        );
        let mut w = m.withheld.clone();
        w.sort();
        assert_eq!(
            w,
            vec!["/children/0/school", "/narrative", "/victim/address"]
        );
    }

    #[test]
    fn minimising_twice_changes_nothing() {
        let instance = json!({ "victim": { "name": "V", "x": 1 }, "y": [1, 2] });
        let once = minimise(&instance, &view());
        let twice = minimise(&once.value, &view());
        assert_eq!(once.value, twice.value);
        assert!(twice.withheld.is_empty());
    }
}
