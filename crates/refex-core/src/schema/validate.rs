//! Validation that reports every violation by JSON pointer and keyword with a message written
//! here, never the validator's own text (which quotes the offending value).

use serde::Serialize;
use serde_json::Value;

use super::Compiled;

/// Most violations one answer lists: enough to fix a referral in a pass or two; a document
/// built to fail everywhere (hundreds of thousands of violations) costs the gateway no more
/// than this to describe, and the answer says how many more there were.
pub const MAX_LISTED: usize = 100;

/// Longest property name echoed in a pointer: enough for any real field name, short enough
/// that an attacker cannot smuggle a payload value into an error through a key.
const MAX_ECHOED_KEY: usize = 64;

/// One schema violation, safe to show the sender and to log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Violation {
    /// RFC 6901 pointer to the offending location, under `prefix`.
    pub pointer: String,
    /// The JSON Schema keyword that failed.
    pub keyword: String,
    /// What is wrong, without the value.
    pub message: String,
}

/// The violations of `schema` by `instance`, pointers prefixed with `prefix` (e.g.
/// `/payload`), in a stable order: at most [`MAX_LISTED`], then one `too-many` entry saying
/// how many more were found (they are counted, never collected).
pub fn validate(schema: &Compiled, instance: &Value, prefix: &str) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as K;
    let mut out = Vec::new();
    let mut unlisted = 0usize;
    for error in schema.validator.iter_errors(instance) {
        if out.len() >= MAX_LISTED {
            unlisted += match error.kind() {
                K::AdditionalProperties { unexpected } => unexpected.len(),
                _ => 1,
            };
            continue;
        }
        let at = format!("{prefix}{}", bounded(&error.instance_path().to_string()));
        let kind = error.kind();
        let keyword = kind.keyword().to_owned();
        match kind {
            K::Required { property } => out.push(Violation {
                pointer: child(&at, property.as_str().unwrap_or("?")),
                keyword,
                message: "is required".into(),
            }),
            K::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    out.push(Violation {
                        pointer: child(&at, name),
                        keyword: keyword.clone(),
                        message: "is not allowed here".into(),
                    });
                }
            }
            K::FalseSchema => out.push(Violation {
                pointer: at,
                keyword,
                message: "is not allowed here".into(),
            }),
            other => out.push(Violation {
                pointer: at,
                keyword,
                message: describe(other),
            }),
        }
    }
    out.sort_by(|a, b| (&a.pointer, &a.keyword).cmp(&(&b.pointer, &b.keyword)));
    out.dedup();
    if out.len() > MAX_LISTED {
        unlisted += out.len() - MAX_LISTED;
        out.truncate(MAX_LISTED);
    }
    if unlisted > 0 {
        out.push(Violation {
            pointer: prefix.to_owned(),
            keyword: "too-many".into(),
            message: format!("and {unlisted} more violations, not listed: fix these first"),
        });
    }
    out
}

fn child(at: &str, name: &str) -> String {
    format!("{at}/{}", segment(name))
}

/// A pointer segment: cut to [`MAX_ECHOED_KEY`] characters, then escaped (RFC 6901).
fn segment(name: &str) -> String {
    let name: String = name.chars().take(MAX_ECHOED_KEY).collect();
    name.replace('~', "~0").replace('/', "~1")
}

/// Re-cuts every segment of an instance pointer.
fn bounded(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|s| segment(&s.replace("~1", "/").replace("~0", "~")))
        .fold(String::new(), |acc, s| acc + "/" + &s)
}

/// "must be one of: a, b, c": the schema's allowed values (never the instance's), at most a
/// few dozen.
fn allowed(options: &Value) -> String {
    const MAX_SHOWN: usize = 24;
    let Some(values) = options.as_array() else {
        return "must be one of the allowed values".into();
    };
    let shown: Vec<String> = values
        .iter()
        .take(MAX_SHOWN)
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Null => "null".into(),
            other => other.to_string(),
        })
        .collect();
    let more = if values.len() > MAX_SHOWN {
        ", …"
    } else {
        ""
    };
    format!("must be one of: {}{more}", shown.join(", "))
}

/// A message for a violation that names the rule, never the instance value.
fn describe(kind: &jsonschema::error::ValidationErrorKind) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    match kind {
        K::Type { kind } => match kind {
            TypeKind::Single(t) => format!("must be of type {t}"),
            TypeKind::Multiple(ts) => format!("must be one of the types {ts:?}"),
        },
        K::Enum { options } => allowed(options),
        K::Constant { .. } => "must equal the required constant".into(),
        K::Format { format } => format!("must be a valid {format}"),
        K::Pattern { .. } => "does not have the required form".into(),
        K::MinLength { limit } => format!("must be at least {limit} characters"),
        K::MaxLength { limit } => format!("must be at most {limit} characters"),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::UniqueItems => "must not repeat items".into(),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        _ => "does not satisfy the schema".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled(schema: Value) -> Compiled {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        Compiled {
            source: std::sync::Arc::new(schema),
            validator: std::sync::Arc::new(validator),
            version: String::new(),
            order: Default::default(),
        }
    }

    #[test]
    fn every_violation_is_listed_by_pointer_without_its_value() {
        let schema = compiled(json!({
            "type": "object", "additionalProperties": false,
            "required": ["child"],
            "properties": {
                "child": { "type": "object", "additionalProperties": false,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "date_of_birth": {"type": "string", "format": "date"},
                        "nhs_number": {"type": "string", "pattern": "^[0-9]{10}$"}
                    } }
            }
        }));
        let instance = json!({
            "child": { "date_of_birth": "SECRET-2015-99-99", "nhs_number": "SECRET-NHS", "pet": "SECRET-PET" },
            "extra": "SECRET-EXTRA"
        });
        let v = validate(&schema, &instance, "/payload");
        let pointers: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        assert_eq!(
            pointers,
            vec![
                ("/payload/child/date_of_birth", "format"),
                ("/payload/child/name", "required"),
                ("/payload/child/nhs_number", "pattern"),
                ("/payload/child/pet", "additionalProperties"),
                ("/payload/extra", "additionalProperties"),
            ]
        );
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn long_or_odd_keys_are_escaped_and_cut() {
        let schema = compiled(
            json!({"type": "object", "properties": {"k": {}}, "additionalProperties": false}),
        );
        let key = format!("a/b~{}", "x".repeat(200));
        let v = validate(&schema, &json!({ key: 1 }), "");
        assert!(v[0].pointer.starts_with("/a~1b~0x"), "{v:?}");
        assert!(v[0].pointer.len() <= 1 + MAX_ECHOED_KEY + 2);
    }
}
