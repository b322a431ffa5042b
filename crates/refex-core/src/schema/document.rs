//! A referral as a document people read: sections and labels from its schema's `title`s,
//! values in words (dates written out, choices and yes/no spelt), in the order the schema's
//! author wrote the fields. Pure: the review page, the hosted inbox and `refex inbox --html`
//! all render from the same [`Document`], so a field reads the same wherever it is shown.
//!
//! Each row keeps the JSON pointer of its value, so a page can say, per recipient, whether
//! minimisation disclosed or withheld it ([`is_withheld`]); [`not_in_view`] lists what a
//! view leaves out by label, from the schemas alone (never from a referral's values).

use serde_json::Value;

use super::Compiled;
use super::order::PropertyOrder;

/// How deep a document nests before the rest is shown as one row (schemas are shallow;
/// this only bounds a hostile one).
const MAX_DEPTH: usize = 16;

/// A referral rendered for reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The schema's title (the referral type in words).
    pub title: String,
    /// One section per top-level group, in schema order.
    pub sections: Vec<Section>,
}

/// A group of fields under one heading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The heading.
    pub title: String,
    /// The schema's description of the group, if any.
    pub help: Option<String>,
    /// Its fields that have values, in schema order.
    pub rows: Vec<Row>,
}

/// One field with its value in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Where the value is in the referral (a JSON pointer).
    pub pointer: String,
    /// The label: the titles below the section's, joined by " › ".
    pub label: String,
    /// The value in words.
    pub value: String,
}

/// Renders `instance` (valid against `schema`, or close to it) as a document.
pub fn document(schema: &Compiled, instance: &Value) -> Document {
    let root = schema.source.as_ref();
    let walker = Walker {
        root,
        order: &schema.order,
    };
    let mut sections: Vec<Section> = Vec::new();
    // Top-level values that are not groups share one "Details" section, placed where the
    // first of them comes in the schema.
    let mut details: Option<usize> = None;
    if let Value::Object(fields) = instance {
        for key in walker.ordered_keys(root, "", fields.keys()) {
            let Some(value) = fields.get(&key) else {
                continue;
            };
            let (sub, at) = walker.property(root, "", &key);
            let pointer = format!("/{}", escape(&key));
            let title = label(sub, &key);
            let group = value.is_object()
                || value
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i.is_object() || i.is_array()));
            if group {
                let mut rows = Vec::new();
                // The section's title names the group; an array's entries are numbered
                // under it ("Carer 1 › Name").
                walker.walk(value, sub, &at, &pointer, &mut Vec::new(), &mut rows, 1);
                if !rows.is_empty() {
                    sections.push(Section {
                        title,
                        help: text(sub, "description"),
                        rows,
                    });
                }
            } else {
                let at_section = *details.get_or_insert_with(|| {
                    sections.push(Section {
                        title: "Details".into(),
                        help: None,
                        rows: Vec::new(),
                    });
                    sections.len() - 1
                });
                walker.walk(
                    value,
                    sub,
                    &at,
                    &pointer,
                    &mut vec![title],
                    &mut sections[at_section].rows,
                    1,
                );
            }
        }
    }
    Document {
        title: text(root, "title").unwrap_or_else(|| "Referral".into()),
        sections,
    }
}

/// Whether the value at `pointer` is withheld, given minimisation's withheld pointers (a
/// withheld object or array withholds everything in it).
pub fn is_withheld(pointer: &str, withheld: &[String]) -> bool {
    withheld.iter().any(|w| {
        pointer == w
            || pointer
                .strip_prefix(w.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The fields of `ty` that `view` does not include, by label ("Child › Safe contact"), at the
/// highest level that is left out. From the schemas alone: it says what a recipient of this
/// view never receives, not whether a referral had a value there.
pub fn not_in_view(ty: &Compiled, view: &Compiled) -> Vec<String> {
    let t = Walker {
        root: &ty.source,
        order: &ty.order,
    };
    let v = Walker {
        root: &view.source,
        order: &view.order,
    };
    let mut out = Vec::new();
    missing(&t, &v, t.root, "", v.root, "", &mut Vec::new(), &mut out, 0);
    out
}

#[allow(clippy::too_many_arguments)] // two walkers in step, each with its place
fn missing(
    t: &Walker<'_>,
    v: &Walker<'_>,
    tnode: &Value,
    tat: &str,
    vnode: &Value,
    vat: &str,
    labels: &mut Vec<String>,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let (tnode, tat) = t.resolve(tnode, tat);
    let (vnode, vat) = v.resolve(vnode, vat);
    if let (Some(tp), Some(_)) = (
        tnode.get("properties").and_then(Value::as_object),
        vnode.get("properties").and_then(Value::as_object),
    ) {
        for key in t.ordered_keys(tnode, &tat, tp.keys()) {
            let (tsub, tsub_at) = t.property(tnode, &tat, &key);
            labels.push(label(tsub, &key));
            match vnode.pointer(&format!("/properties/{}", escape(&key))) {
                None => out.push(labels.join(" › ")),
                Some(_) => {
                    let (vsub, vsub_at) = v.property(vnode, &vat, &key);
                    missing(t, v, tsub, &tsub_at, vsub, &vsub_at, labels, out, depth + 1);
                }
            }
            labels.pop();
        }
    } else if let (Some(ti), Some(vi)) = (tnode.get("items"), vnode.get("items")) {
        missing(
            t,
            v,
            ti,
            &format!("{tat}/items"),
            vi,
            &format!("{vat}/items"),
            labels,
            out,
            depth + 1,
        );
    } else if tnode.get("properties").is_some() && vnode.get("properties").is_none() {
        // The view keeps the object but none of its fields.
        out.push(labels.join(" › "));
    }
}

struct Walker<'a> {
    root: &'a Value,
    order: &'a PropertyOrder,
}

impl<'a> Walker<'a> {
    /// Follows a local `$ref` (a few hops at most), with the schema pointer of where it led.
    fn resolve(&self, node: &'a Value, at: &str) -> (&'a Value, String) {
        let mut node = node;
        let mut at = at.to_owned();
        for _ in 0..8 {
            match node.get("$ref").and_then(Value::as_str) {
                Some(r) => match r.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                    Some(target) => {
                        at = r.trim_start_matches('#').to_owned();
                        node = target;
                    }
                    None => break,
                },
                None => break,
            }
        }
        (node, at)
    }

    /// The schema of property `key` of the object schema `node` (at `at`), with its pointer.
    fn property(&self, node: &'a Value, at: &str, key: &str) -> (&'a Value, String) {
        let (node, at) = self.resolve(node, at);
        let here = format!("{at}/properties/{}", escape(key));
        match node.get("properties").and_then(|p| p.get(key)) {
            Some(sub) => self.resolve(sub, &here),
            None => (&Value::Null, here),
        }
    }

    /// `keys` in the schema's written order, unknown keys last (sorted).
    fn ordered_keys<'k>(
        &self,
        node: &Value,
        at: &str,
        keys: impl Iterator<Item = &'k String>,
    ) -> Vec<String> {
        let (_, at) = self.resolve(node, at);
        let written = self.order.keys(&at);
        let mut present: Vec<String> = keys.cloned().collect();
        let mut out: Vec<String> = written
            .iter()
            .filter(|k| present.contains(k))
            .cloned()
            .collect();
        present.retain(|k| !out.contains(k));
        present.sort();
        out.extend(present);
        out
    }

    #[allow(clippy::too_many_arguments)] // the walk's place: value, schema, pointers, labels
    fn walk(
        &self,
        value: &Value,
        schema: &Value,
        at: &str,
        pointer: &str,
        labels: &mut Vec<String>,
        rows: &mut Vec<Row>,
        depth: usize,
    ) {
        let (schema, at) = self.resolve(schema, at);
        match value {
            Value::Object(fields) if depth <= MAX_DEPTH => {
                for key in self.ordered_keys(schema, &at, fields.keys()) {
                    let Some(child) = fields.get(&key) else {
                        continue;
                    };
                    let (sub, sub_at) = self.property(schema, &at, &key);
                    labels.push(label(sub, &key));
                    let here = format!("{pointer}/{}", escape(&key));
                    self.walk(child, sub, &sub_at, &here, labels, rows, depth + 1);
                    labels.pop();
                }
            }
            Value::Array(items)
                if depth <= MAX_DEPTH && items.iter().any(|i| i.is_object() || i.is_array()) =>
            {
                let item_schema = schema.get("items").unwrap_or(&Value::Null);
                let item_at = format!("{at}/items");
                let name = text(item_schema, "title")
                    .or_else(|| labels.last().cloned())
                    .unwrap_or_else(|| "Item".into());
                for (i, item) in items.iter().enumerate() {
                    labels.push(format!("{name} {}", i + 1));
                    let here = format!("{pointer}/{i}");
                    self.walk(item, item_schema, &item_at, &here, labels, rows, depth + 1);
                    labels.pop();
                }
            }
            _ => rows.push(Row {
                pointer: pointer.to_owned(),
                label: if labels.is_empty() {
                    "Value".into()
                } else {
                    labels.join(" › ")
                },
                value: words(value, schema),
            }),
        }
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn text(node: &Value, keyword: &str) -> Option<String> {
    node.get(keyword)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A property's label: its `title`, else its name in words.
pub fn label(schema: &Value, key: &str) -> String {
    text(schema, "title").unwrap_or_else(|| sentence(&key.replace(['_', '-'], " ")))
}

fn sentence(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A code (`physical-abuse`, `not-yet`) in words (`Physical abuse`, `Not yet`).
pub fn code_words(code: &str) -> String {
    sentence(&code.replace('-', " "))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `2015-03-04` → `4 March 2015`; anything else as it is.
pub fn date_words(s: &str) -> String {
    let parts: Vec<&str> = s.split('-').collect();
    if let [y, m, d] = parts.as_slice() {
        if let (Ok(_), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<usize>(), d.parse::<u32>()) {
            if (1..=12).contains(&m) && (1..=31).contains(&d) && y.len() == 4 {
                return format!("{d} {} {y}", MONTHS[m - 1]);
            }
        }
    }
    s.to_owned()
}

/// A value in words, as its schema describes it.
fn words(value: &Value, schema: &Value) -> String {
    let is_code = schema.get("enum").is_some()
        || schema.get("items").is_some_and(|i| i.get("enum").is_some());
    match value {
        Value::String(s) if schema.get("format").and_then(Value::as_str) == Some("date") => {
            date_words(s)
        }
        Value::String(s) if is_code => code_words(s),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "Yes".into(),
        Value::Bool(false) => "No".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "None".into(),
        Value::Array(items) => {
            let item = schema.get("items").unwrap_or(&Value::Null);
            items
                .iter()
                .map(|i| words(i, item))
                .collect::<Vec<_>>()
                .join("; ")
        }
        // Only past the depth bound.
        Value::Object(_) => "(nested too deeply to show)".into(),
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

    const SCHEMA: &str = r#"{"title":"Safeguarding concern","type":"object","properties":{
        "subject":{"title":"The person","description":"Who the concern is about","type":"object","properties":{
            "name":{"title":"Name","type":"object","properties":{"given":{"title":"Given name"},"family":{"title":"Family name"}}},
            "date_of_birth":{"title":"Date of birth","format":"date"},
            "is_child":{"title":"Is a child"}}},
        "concern":{"type":"object","properties":{"category":{"title":"Category","enum":["physical-abuse","neglect"]}}},
        "carers":{"title":"Carers","type":"array","items":{"title":"Carer","type":"object","properties":{"name":{"title":"Name"}}}},
        "sender_note":{"title":"Note"}}}"#;

    #[test]
    fn sections_labels_and_values_read_as_words_in_schema_order() {
        let doc = document(
            &compiled(SCHEMA),
            &json!({"subject": {"is_child": true, "date_of_birth": "2015-03-04",
                                "name": {"family": "Doe", "given": "Jo"}},
                    "concern": {"category": "physical-abuse"},
                    "carers": [{"name": "A"}, {"name": "B"}], "sender_note": "n"}),
        );
        assert_eq!(doc.title, "Safeguarding concern");
        let titles: Vec<_> = doc.sections.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["The person", "Concern", "Carers", "Details"]);
        let person: Vec<_> = doc.sections[0]
            .rows
            .iter()
            .map(|r| (r.pointer.as_str(), r.label.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            person,
            [
                ("/subject/name/given", "Name › Given name", "Jo"),
                ("/subject/name/family", "Name › Family name", "Doe"),
                ("/subject/date_of_birth", "Date of birth", "4 March 2015"),
                ("/subject/is_child", "Is a child", "Yes"),
            ]
        );
        assert_eq!(
            doc.sections[0].help.as_deref(),
            Some("Who the concern is about")
        );
        assert_eq!(doc.sections[1].rows[0].value, "Physical abuse");
        let carers: Vec<_> = doc.sections[2]
            .rows
            .iter()
            .map(|r| r.label.as_str())
            .collect();
        assert_eq!(carers, ["Carer 1 › Name", "Carer 2 › Name"]);
        assert_eq!(doc.sections[3].rows[0].label, "Note");
    }

    #[test]
    fn withheld_covers_everything_below_a_withheld_object() {
        let w = vec!["/subject/name".to_owned()];
        assert!(is_withheld("/subject/name/given", &w));
        assert!(is_withheld("/subject/name", &w));
        assert!(!is_withheld("/subject/names", &w));
        assert!(!is_withheld("/subject", &w));
    }

    #[test]
    fn what_a_view_leaves_out_is_named_by_label() {
        let view = compiled(
            r#"{"type":"object","properties":{"subject":{"type":"object","properties":{
                "name":{"type":"object","properties":{"given":{}}}}},
                "concern":{"type":"object","properties":{"category":{}}}}}"#,
        );
        assert_eq!(
            not_in_view(&compiled(SCHEMA), &view),
            [
                "The person › Name › Family name",
                "The person › Date of birth",
                "The person › Is a child",
                "Carers",
                "Note"
            ]
        );
    }

    #[test]
    fn codes_and_dates_in_words() {
        assert_eq!(code_words("not-yet"), "Not yet");
        assert_eq!(date_words("2026-11-27"), "27 November 2026");
        assert_eq!(date_words("27/11/2026"), "27/11/2026");
    }
}
