//! A referral type's JSON Schema as a form for people, and the form's answers back as the
//! payload the schema describes. Pure; the console renders [`Item`]s and posts the fields
//! back to [`read`].
//!
//! Every input is named `f` + the JSON pointer of its value (`f/child/name/given`), so a
//! violation's pointer names the input it belongs to. Groups that repeat (carers, children in
//! the household) show one set of inputs per entry plus an empty one; "add another" posts the
//! form back for one more (no script needed). Empty inputs are left out of the payload, and
//! an entry whose inputs are all empty is dropped, so the payload's indices are the entries
//! actually filled in; the form is shown again from that payload, so errors stay beside
//! their inputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Compiled;
use super::document::{code_words, label};
use super::order::PropertyOrder;

/// The prefix of every payload input's name.
pub const FIELD_PREFIX: &str = "f";

/// How many entries a repeating group may have in the form.
pub const MAX_ENTRIES: usize = 20;

/// Deepest nesting the form follows.
const MAX_DEPTH: usize = 12;

/// One thing the form shows, in order: templates render the list without recursion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A group of inputs begins (a `<fieldset>` with its legend).
    Open {
        /// The legend.
        legend: String,
        /// Help text.
        help: Option<String>,
        /// Nesting level from 1 (for headings).
        level: usize,
    },
    /// The group opened last ends.
    Close,
    /// One input.
    Input(Input),
    /// A button asking for one more entry of a repeating group.
    Add {
        /// The group's pointer.
        pointer: String,
        /// "Add another carer".
        label: String,
    },
}

/// One input of the form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The input's name: [`FIELD_PREFIX`] + the value's pointer.
    pub name: String,
    /// An HTML id derived from the pointer.
    pub id: String,
    /// The label.
    pub label: String,
    /// Help text (the schema's description).
    pub help: Option<String>,
    /// Whether the schema requires it (when its group is filled in).
    pub required: bool,
    /// What sort of input.
    pub kind: Kind,
    /// The value to show (what was entered).
    pub value: String,
    /// Values chosen, for several choices.
    pub chosen: Vec<String>,
    /// Why the value was refused, if it was.
    pub error: Option<String>,
    /// The longest value accepted, if limited.
    pub max_length: Option<u64>,
}

/// The sorts of input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One line of text.
    Text,
    /// Several lines of text.
    TextArea,
    /// A list of short texts, one per line.
    Lines,
    /// A date.
    Date,
    /// A whole number or a number.
    Number,
    /// One of several codes, each with its words.
    Choice(Vec<(String, String)>),
    /// Any of several codes.
    Several(Vec<(String, String)>),
    /// Yes or no.
    YesNo,
}

impl Kind {
    /// The choices, for `Choice` and `Several`.
    pub fn options(&self) -> &[(String, String)] {
        match self {
            Kind::Choice(o) | Kind::Several(o) => o,
            _ => &[],
        }
    }
}

/// The form for `schema`, showing `values` (a payload, possibly partial), `extra` more entries
/// of the repeating groups named (by pointer), and `errors` (messages by pointer) beside their
/// inputs.
pub fn form(
    schema: &Compiled,
    values: &Value,
    extra: &BTreeMap<String, usize>,
    errors: &BTreeMap<String, String>,
) -> Vec<Item> {
    let b = Builder {
        root: &schema.source,
        order: &schema.order,
        extra,
        errors,
    };
    let mut out = Vec::new();
    b.object(&schema.source, "", "", values, &mut out, 0, true);
    out
}

/// The pointers (`/a/b`) of every input a form for `schema` can have, for mapping violations
/// that name a pointer no input has (a missing group) to the nearest one.
pub fn input_for(pointer: &str, items: &[Item]) -> Option<String> {
    let inputs: Vec<&str> = items
        .iter()
        .filter_map(|i| match i {
            Item::Input(input) => input.name.strip_prefix(FIELD_PREFIX),
            _ => None,
        })
        .collect();
    if inputs.contains(&pointer) {
        return Some(pointer.to_owned());
    }
    inputs
        .iter()
        .find(|p| p.starts_with(&format!("{pointer}/")))
        .map(|p| (*p).to_owned())
}

struct Builder<'a> {
    root: &'a Value,
    order: &'a PropertyOrder,
    extra: &'a BTreeMap<String, usize>,
    errors: &'a BTreeMap<String, String>,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn html_id(pointer: &str) -> String {
    let mut id = String::from("field");
    for c in pointer.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    id
}

fn text(node: &Value, keyword: &str) -> Option<String> {
    node.get(keyword).and_then(Value::as_str).map(str::to_owned)
}

fn codes(values: &Value) -> Vec<(String, String)> {
    values
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .map(|c| (c.to_owned(), code_words(c)))
                .collect()
        })
        .unwrap_or_default()
}

fn is_type(node: &Value, ty: &str) -> bool {
    match node.get("type") {
        Some(Value::String(t)) => t == ty,
        Some(Value::Array(ts)) => ts.iter().any(|t| t == ty),
        _ => false,
    }
}

impl<'a> Builder<'a> {
    fn resolve(&self, node: &'a Value, at: &str) -> (&'a Value, String) {
        let mut node = node;
        let mut at = at.to_owned();
        for _ in 0..8 {
            match node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
            {
                Some(p) => match self.root.pointer(p) {
                    Some(target) => {
                        at = p.to_owned();
                        node = target;
                    }
                    None => break,
                },
                None => break,
            }
        }
        (node, at)
    }

    /// `chain`: whether every group above is required too (a field is marked required
    /// only when filling in the form needs it, not when only its optional group does).
    #[allow(clippy::too_many_arguments)] // one object's place and content
    fn object(
        &self,
        node: &'a Value,
        at: &str,
        pointer: &str,
        value: &Value,
        out: &mut Vec<Item>,
        depth: usize,
        chain: bool,
    ) {
        let (node, at) = self.resolve(node, at);
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut keys: Vec<String> = self.order.keys(&at).to_vec();
        let mut rest: Vec<String> = props
            .keys()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        rest.sort();
        keys.extend(rest);
        for key in keys {
            let Some(sub) = props.get(&key) else { continue };
            let sub_at = format!("{at}/properties/{}", escape(&key));
            let (sub, sub_at) = self.resolve(sub, &sub_at);
            let here = format!("{pointer}/{}", escape(&key));
            let child = value.get(&key).unwrap_or(&Value::Null);
            let title = label(sub, &key);
            let is_required = chain && required.contains(&key.as_str());
            if depth >= MAX_DEPTH {
                continue;
            }
            if sub.get("properties").is_some() {
                out.push(Item::Open {
                    legend: title,
                    help: text(sub, "description"),
                    level: depth + 1,
                });
                self.object(sub, &sub_at, &here, child, out, depth + 1, is_required);
                out.push(Item::Close);
            } else if is_type(sub, "array")
                && sub
                    .get("items")
                    .map(|i| self.resolve(i, &format!("{sub_at}/items")).0)
                    .is_some_and(|i| i.get("properties").is_some())
            {
                self.repeating(sub, &sub_at, &here, &title, child, out, depth);
            } else {
                out.push(Item::Input(self.input(
                    sub,
                    &here,
                    &title,
                    is_required,
                    child,
                )));
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one group's place and content
    fn repeating(
        &self,
        sub: &'a Value,
        sub_at: &str,
        here: &str,
        title: &str,
        child: &Value,
        out: &mut Vec<Item>,
        depth: usize,
    ) {
        let items_at = format!("{sub_at}/items");
        let (items, items_at) = self.resolve(&sub["items"], &items_at);
        let entry = text(items, "title").unwrap_or_else(|| title.to_owned());
        let filled = child.as_array().map_or(0, Vec::len);
        let shown = (filled + 1 + self.extra.get(here).copied().unwrap_or(0))
            .min(MAX_ENTRIES)
            .max(filled.min(MAX_ENTRIES));
        out.push(Item::Open {
            legend: title.to_owned(),
            help: text(sub, "description"),
            level: depth + 1,
        });
        for i in 0..shown {
            out.push(Item::Open {
                legend: format!("{entry} {}", i + 1),
                help: None,
                level: depth + 2,
            });
            let value = child.get(i).unwrap_or(&Value::Null);
            self.object(
                items,
                &items_at,
                &format!("{here}/{i}"),
                value,
                out,
                depth + 2,
                false,
            );
            out.push(Item::Close);
        }
        if shown < MAX_ENTRIES {
            out.push(Item::Add {
                pointer: here.to_owned(),
                label: format!("Add another: {}", entry.to_lowercase()),
            });
        }
        out.push(Item::Close);
    }

    fn input(
        &self,
        sub: &Value,
        pointer: &str,
        title: &str,
        required: bool,
        value: &Value,
    ) -> Input {
        let items = sub.get("items").unwrap_or(&Value::Null);
        let kind = if let Some(e) = sub.get("enum") {
            Kind::Choice(codes(e))
        } else if is_type(sub, "array") && items.get("enum").is_some() {
            Kind::Several(codes(&items["enum"]))
        } else if is_type(sub, "array") {
            Kind::Lines
        } else if is_type(sub, "boolean") {
            Kind::YesNo
        } else if is_type(sub, "integer") || is_type(sub, "number") {
            Kind::Number
        } else if sub.get("format").and_then(Value::as_str) == Some("date") {
            Kind::Date
        } else if sub
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| m > 200)
        {
            Kind::TextArea
        } else {
            Kind::Text
        };
        let (shown, chosen) = match value {
            Value::Null => (String::new(), vec![]),
            Value::String(s) => (s.clone(), vec![]),
            Value::Bool(b) => (if *b { "true" } else { "false" }.into(), vec![]),
            Value::Number(n) => (n.to_string(), vec![]),
            Value::Array(a) if matches!(kind, Kind::Several(_)) => (
                String::new(),
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Value::Array(a) => (
                a.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("\n"),
                vec![],
            ),
            Value::Object(_) => (String::new(), vec![]),
        };
        let mut help = text(sub, "description");
        if matches!(kind, Kind::Lines) {
            help = Some(help.map_or_else(
                || "One per line.".to_owned(),
                |h| format!("{h} One per line."),
            ));
        }
        Input {
            name: format!("{FIELD_PREFIX}{pointer}"),
            id: html_id(pointer),
            label: title.to_owned(),
            help,
            required,
            kind,
            value: shown,
            chosen,
            error: self.errors.get(pointer).cloned(),
            max_length: sub.get("maxLength").and_then(Value::as_u64),
        }
    }
}

/// Why a form's fields could not be read as a payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    /// An input names no field of the schema (a forged or stale form).
    #[error("the form has an input this referral type does not have; reload the form")]
    UnknownInput,
    /// A repeating group has more entries than the form allows.
    #[error("at most {MAX_ENTRIES} entries are accepted in one group")]
    TooMany,
}

/// The payload the form's fields describe: `fields` are the posted `(name, value)` pairs;
/// names without [`FIELD_PREFIX`] + `/` are ignored (they are the caller's).
pub fn read(schema: &Compiled, fields: &[(String, String)]) -> Result<Value, FormError> {
    let mut root = Value::Object(Map::new());
    for (name, raw) in fields {
        let Some(pointer) = name
            .strip_prefix(FIELD_PREFIX)
            .filter(|p| p.starts_with('/'))
        else {
            continue;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let segments: Vec<String> = pointer[1..]
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        // An index is written one way only (`0`, never `00`): aliases would count as more
        // entries than the form allows.
        if segments
            .iter()
            .any(|s| s.parse::<usize>().is_ok_and(|n| n.to_string() != *s))
        {
            return Err(FormError::UnknownInput);
        }
        let leaf = schema_at(&schema.source, &segments).ok_or(FormError::UnknownInput)?;
        let value = typed(leaf, raw);
        place(&mut root, &segments, value, leaf)?;
    }
    compact(&mut root);
    Ok(root)
}

/// The schema of the value at `segments` (numeric segments step into `items`).
fn schema_at<'a>(root: &'a Value, segments: &[String]) -> Option<&'a Value> {
    let mut node = root;
    for s in segments {
        node = resolve_plain(root, node);
        node = match node.get("properties").and_then(|p| p.get(s)) {
            Some(sub) => sub,
            None if s.parse::<usize>().is_ok() => node.get("items")?,
            None => return None,
        };
    }
    Some(resolve_plain(root, node))
}

fn resolve_plain<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p))
        {
            Some(t) => node = t,
            None => break,
        }
    }
    node
}

/// A posted text as the JSON its schema expects; what does not parse stays text, so
/// validation reports it at its input.
fn typed(schema: &Value, raw: &str) -> Value {
    if is_type(schema, "boolean") {
        match raw {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    if is_type(schema, "integer") {
        if let Ok(n) = raw.parse::<i64>() {
            return Value::from(n);
        }
    }
    if is_type(schema, "number") {
        if let Some(n) = raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    if is_type(schema, "array") && schema.get("items").is_some_and(|i| i.get("enum").is_none()) {
        return Value::Array(
            raw.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| Value::String(l.to_owned()))
                .collect(),
        );
    }
    Value::String(raw.to_owned())
}

fn place(
    node: &mut Value,
    segments: &[String],
    value: Value,
    leaf: &Value,
) -> Result<(), FormError> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(());
    };
    // Arrays are built as objects keyed by index first, then compacted.
    let Value::Object(map) = node else {
        return Err(FormError::UnknownInput);
    };
    if let Ok(i) = first.parse::<usize>() {
        if i >= MAX_ENTRIES {
            return Err(FormError::TooMany);
        }
    }
    if rest.is_empty() {
        // Several choices of one input arrive as repeated names.
        let several =
            is_type(leaf, "array") && leaf.get("items").is_some_and(|i| i.get("enum").is_some());
        match (map.get_mut(first), several) {
            (Some(Value::Array(list)), true) => list.push(value),
            (None, true) => {
                map.insert(first.clone(), Value::Array(vec![value]));
            }
            _ => {
                map.insert(first.clone(), value);
            }
        }
        return Ok(());
    }
    let child = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    place(child, rest, value, leaf)
}

/// Turns objects whose keys are all indices into arrays in index order (the entries filled
/// in, renumbered from 0).
fn compact(node: &mut Value) {
    if let Value::Object(map) = node {
        for v in map.values_mut() {
            compact(v);
        }
        if !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok()) {
            let mut entries: Vec<(usize, Value)> = std::mem::take(map)
                .into_iter()
                .filter_map(|(k, v)| k.parse().ok().map(|i| (i, v)))
                .collect();
            entries.sort_by_key(|(i, _)| *i);
            *node = Value::Array(entries.into_iter().map(|(_, v)| v).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled(schema: &str) -> Compiled {
        let source: Value = serde_json::from_str(schema).unwrap();
        Compiled {
            validator: std::sync::Arc::new(jsonschema::validator_for(&source).unwrap()),
            source: std::sync::Arc::new(source),
            version: "test".into(),
            order: std::sync::Arc::new(PropertyOrder::read(schema.as_bytes())),
        }
    }

    const SCHEMA: &str = r#"{"type":"object","required":["child"],"properties":{
        "child":{"title":"Child","type":"object","required":["name"],"properties":{
            "name":{"title":"Name","type":"string","maxLength":100},
            "dob":{"title":"Date of birth","type":"string","format":"date"},
            "is_looked_after":{"title":"Looked after","type":"boolean"},
            "age":{"type":"integer"},
            "needs":{"type":"array","items":{"enum":["housing","counselling"]}},
            "history":{"type":"string","maxLength":4000}}},
        "carers":{"title":"Carers","type":"array","items":{"title":"Carer","type":"object","properties":{
            "name":{"title":"Name","type":"string"}}}}}}"#;

    fn inputs(items: &[Item]) -> Vec<(&str, &Kind, bool)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Input(x) => Some((x.name.as_str(), &x.kind, x.required)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_form_follows_the_schema_with_one_empty_entry_per_group() {
        let s = compiled(SCHEMA);
        let items = form(&s, &json!({}), &BTreeMap::new(), &BTreeMap::new());
        let found = inputs(&items);
        assert_eq!(found[0], ("f/child/name", &Kind::Text, true));
        assert_eq!(found[1], ("f/child/dob", &Kind::Date, false));
        assert_eq!(found[2].1, &Kind::YesNo);
        assert_eq!(found[3].1, &Kind::Number);
        assert!(
            matches!(found[4].1, Kind::Several(o) if o[0] == ("housing".into(), "Housing".into()))
        );
        assert_eq!(found[5].1, &Kind::TextArea);
        assert_eq!(found[6].0, "f/carers/0/name");
        assert!(items.contains(&Item::Add {
            pointer: "/carers".into(),
            label: "Add another: carer".into()
        }));
        let more = form(
            &s,
            &json!({}),
            &BTreeMap::from([("/carers".to_owned(), 1)]),
            &BTreeMap::new(),
        );
        assert_eq!(inputs(&more).len(), 8);
    }

    #[test]
    fn answers_become_the_payload_typed_and_without_empty_entries() {
        let s = compiled(SCHEMA);
        let fields: Vec<(String, String)> = [
            ("csrf", "x"),
            ("f/child/name", " Jo "),
            ("f/child/dob", ""),
            ("f/child/is_looked_after", "true"),
            ("f/child/age", "7"),
            ("f/child/needs", "housing"),
            ("f/child/needs", "counselling"),
            ("f/carers/0/name", ""),
            ("f/carers/1/name", "Sam"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(
            read(&s, &fields).unwrap(),
            json!({"child": {"name": "Jo", "is_looked_after": true, "age": 7,
                             "needs": ["housing", "counselling"]},
                   "carers": [{"name": "Sam"}]})
        );
        let forged = vec![("f/child/password".to_owned(), "x".to_owned())];
        assert_eq!(read(&s, &forged), Err(FormError::UnknownInput));
        let many = vec![("f/carers/20/name".to_owned(), "x".to_owned())];
        assert_eq!(read(&s, &many), Err(FormError::TooMany));
        let alias = vec![("f/carers/00/name".to_owned(), "x".to_owned())];
        assert_eq!(read(&s, &alias), Err(FormError::UnknownInput));
    }

    #[test]
    fn a_value_that_does_not_parse_stays_text_for_validation_to_report() {
        let s = compiled(SCHEMA);
        let fields = vec![("f/child/age".to_owned(), "seven".to_owned())];
        assert_eq!(
            read(&s, &fields).unwrap(),
            json!({"child": {"age": "seven"}})
        );
    }

    #[test]
    fn errors_stand_beside_their_inputs() {
        let s = compiled(SCHEMA);
        let errors = BTreeMap::from([("/child/name".to_owned(), "is required".to_owned())]);
        let items = form(&s, &json!({}), &BTreeMap::new(), &errors);
        let named = items.iter().find_map(|i| match i {
            Item::Input(x) if x.name == "f/child/name" => Some(x.error.clone()),
            _ => None,
        });
        assert_eq!(named, Some(Some("is required".into())));
        assert_eq!(
            input_for("/carers", &items).as_deref(),
            Some("/carers/0/name")
        );
    }
}
