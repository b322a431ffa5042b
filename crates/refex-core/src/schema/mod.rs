//! JSON Schemas for referral types and need-to-know views: load every file under
//! `schemas/types/` and `schemas/views/<recipient-kind>/`, check the house rules and compile
//! each once (draft 2020-12, formats checked, no remote `$ref`s).
//!
//! [`validate`] checks an instance and reports violations without their values; [`minimise`]
//! projects an instance onto a need-to-know view.
//! Out of scope: which view a recipient gets (that is the agreement, in `config`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::identity::{PartnerKind, ReferralType};

pub mod document;
pub mod form;
mod minimise;
mod order;
mod validate;

pub use document::{Document, Row, Section, document};
pub use minimise::{Minimised, leaf_pointers, minimise};
pub use order::PropertyOrder;
pub use validate::{Violation, validate};

/// The only dialect refex accepts; declared by every schema's `$schema`.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A schema file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file name is not a valid type or kind identifier.
    #[error("{path}: {reason}")]
    Name {
        /// The path.
        path: PathBuf,
        /// Why the name was refused.
        reason: String,
    },
    /// The file is not JSON.
    #[error("{path} is not JSON: {reason}")]
    Json {
        /// The path.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The schema breaks a house rule (dialect, `additionalProperties: false`).
    #[error("{path}: {reason}")]
    Rule {
        /// The path.
        path: PathBuf,
        /// The rule broken.
        reason: String,
    },
    /// The schema does not compile.
    #[error("{path} does not compile: {reason}")]
    Compile {
        /// The path.
        path: PathBuf,
        /// The compiler's message.
        reason: String,
    },
}

/// The annotation a type schema carries when its referrals hold criminal offence data (UK
/// GDPR Article 10): such a referral needs an Article 10 basis too.
pub const CRIMINAL_OFFENCE_DATA: &str = "x-refex-criminal-offence-data";

/// One compiled schema and its source (minimisation walks the source).
#[derive(Clone)]
pub struct Compiled {
    /// The schema document as written.
    pub source: Arc<Value>,
    /// The compiled validator.
    pub validator: Arc<jsonschema::Validator>,
    /// The file's version: the first 16 hex digits of the SHA-256 of its bytes. A review
    /// preview names the view's version, so a view changed by a reload is noticed.
    pub version: String,
    /// The order in which the file writes each object's properties (documents and forms
    /// follow it).
    pub order: Arc<PropertyOrder>,
}

impl Compiled {
    /// Whether the schema says its instances carry criminal offence data.
    pub fn criminal_offence_data(&self) -> bool {
        self.source.get(CRIMINAL_OFFENCE_DATA) == Some(&Value::Bool(true))
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled(..)")
    }
}

/// Every referral type schema and every view schema, compiled.
#[derive(Clone, Debug, Default)]
pub struct SchemaSet {
    types: BTreeMap<ReferralType, Compiled>,
    views: BTreeMap<(PartnerKind, ReferralType), Compiled>,
}

impl SchemaSet {
    /// Loads `dir/types/*.json` and `dir/views/*/*.json`, reporting every bad file.
    pub fn load(dir: &Path) -> Result<Self, Vec<SchemaError>> {
        let mut set = SchemaSet::default();
        let mut problems = Vec::new();
        for (path, stem) in json_files(&dir.join("types"), &mut problems) {
            match stem.parse::<ReferralType>() {
                Ok(ty) => {
                    if let Some(c) = compile_file(&path, &mut problems) {
                        set.types.insert(ty, c);
                    }
                }
                Err(e) => problems.push(SchemaError::Name {
                    path,
                    reason: e.to_string(),
                }),
            }
        }
        let views_dir = dir.join("views");
        for (kind_dir, kind) in subdirs(&views_dir, &mut problems) {
            let Ok(kind) = kind.parse::<PartnerKind>() else {
                problems.push(SchemaError::Name {
                    path: kind_dir,
                    reason: "not a valid recipient kind".into(),
                });
                continue;
            };
            for (path, stem) in json_files(&kind_dir, &mut problems) {
                let Ok(ty) = stem.parse::<ReferralType>() else {
                    problems.push(SchemaError::Name {
                        path,
                        reason: "not a valid referral type".into(),
                    });
                    continue;
                };
                if !set.types.contains_key(&ty)
                    && !dir.join("types").join(format!("{ty}.json")).exists()
                {
                    problems.push(SchemaError::Name {
                        path: path.clone(),
                        reason: format!("a view for unknown referral type {ty:?}"),
                    });
                }
                if let Some(c) = compile_file(&path, &mut problems) {
                    set.views.insert((kind.clone(), ty), c);
                }
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// The schema of a referral type.
    pub fn referral_type(&self, ty: &ReferralType) -> Option<&Compiled> {
        self.types.get(ty)
    }

    /// The view a recipient of `kind` gets of `ty`.
    pub fn view(&self, kind: &PartnerKind, ty: &ReferralType) -> Option<&Compiled> {
        self.views.get(&(kind.clone(), ty.clone()))
    }

    /// Every referral type with a schema.
    pub fn types(&self) -> impl Iterator<Item = &ReferralType> {
        self.types.keys()
    }

    /// Every partner kind some view is for, each once, in order.
    pub fn kinds(&self) -> Vec<&PartnerKind> {
        let mut kinds: Vec<&PartnerKind> = self.views.keys().map(|(k, _)| k).collect();
        kinds.dedup();
        kinds
    }
}

/// The entries of `dir` that `keep` accepts, with the name `name` gives them, sorted; an
/// unreadable directory is reported as a problem.
fn listing(
    dir: &Path,
    problems: &mut Vec<SchemaError>,
    keep: fn(&Path) -> bool,
    name: fn(&Path) -> Option<&std::ffi::OsStr>,
) -> Vec<(PathBuf, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            problems.push(SchemaError::Read {
                path: dir.to_owned(),
                source,
            });
            return Vec::new();
        }
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| keep(p))
        .filter_map(|p| {
            let n = name(&p)?.to_str()?.to_owned();
            Some((p, n))
        })
        .collect();
    out.sort();
    out
}

/// `dir/*.json` with their stems.
fn json_files(dir: &Path, problems: &mut Vec<SchemaError>) -> Vec<(PathBuf, String)> {
    listing(
        dir,
        problems,
        |p| p.extension().is_some_and(|x| x == "json"),
        Path::file_stem,
    )
}

/// The subdirectories of `dir` with their names.
fn subdirs(dir: &Path, problems: &mut Vec<SchemaError>) -> Vec<(PathBuf, String)> {
    listing(dir, problems, Path::is_dir, Path::file_name)
}

fn compile_file(path: &Path, problems: &mut Vec<SchemaError>) -> Option<Compiled> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(source) => {
            problems.push(SchemaError::Read {
                path: path.to_owned(),
                source,
            });
            return None;
        }
    };
    let source: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(SchemaError::Json {
                path: path.to_owned(),
                reason: e.to_string(),
            });
            return None;
        }
    };
    match compile(&source) {
        Ok(validator) => Some(Compiled {
            source: Arc::new(source),
            validator: Arc::new(validator),
            version: version_of(&text),
            order: Arc::new(PropertyOrder::read(&text)),
        }),
        Err(reason) => {
            problems.push(match reason {
                CompileFailure::Rule(reason) => SchemaError::Rule {
                    path: path.to_owned(),
                    reason,
                },
                CompileFailure::Compile(reason) => SchemaError::Compile {
                    path: path.to_owned(),
                    reason,
                },
            });
            None
        }
    }
}

/// A schema file's version: the first 16 hex digits of the SHA-256 of its bytes.
pub fn version_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..8])
}

enum CompileFailure {
    Rule(String),
    Compile(String),
}

/// Checks the house rules and compiles one schema document.
fn compile(source: &Value) -> Result<jsonschema::Validator, CompileFailure> {
    if source.get("$schema").and_then(Value::as_str) != Some(DIALECT) {
        return Err(CompileFailure::Rule(format!(
            "\"$schema\" must be {DIALECT:?}"
        )));
    }
    let mut open = Vec::new();
    find_open_objects(source, String::new(), &mut open);
    if !open.is_empty() {
        return Err(CompileFailure::Rule(format!(
            "object schemas without \"additionalProperties\": false at {}",
            open.join(", ")
        )));
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(source)
        .map_err(|e| CompileFailure::Compile(e.to_string()))
}

/// Collects the schema locations (JSON pointers into the schema) of object schemas that do
/// not close themselves with `additionalProperties: false`.
fn find_open_objects(node: &Value, at: String, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            let is_object_schema = map.contains_key("properties")
                || map.get("type").and_then(Value::as_str) == Some("object");
            if is_object_schema && map.get("additionalProperties") != Some(&Value::Bool(false)) {
                out.push(if at.is_empty() {
                    "/".into()
                } else {
                    at.clone()
                });
            }
            for (k, v) in map {
                // `properties`, `$defs` are maps of names to schemas; their keys are names.
                let child = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                if k == "enum" || k == "const" || k == "examples" || k == "default" {
                    continue;
                }
                find_open_objects(v, child, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                find_open_objects(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_objects_are_found_recursively() {
        let schema = json!({
            "$schema": DIALECT, "type": "object", "additionalProperties": false,
            "properties": { "child": { "type": "object", "properties": { "name": {"type": "string"} } } }
        });
        let Err(CompileFailure::Rule(reason)) = compile(&schema) else {
            panic!("open object accepted")
        };
        assert!(reason.contains("/properties/child"), "{reason}");
    }

    #[test]
    fn closed_schema_compiles_and_checks_formats() {
        let schema = json!({
            "$schema": DIALECT, "type": "object", "additionalProperties": false,
            "properties": { "dob": { "type": "string", "format": "date" } }
        });
        let Ok(v) = compile(&schema) else {
            panic!("did not compile")
        };
        assert!(v.is_valid(&json!({"dob": "2015-02-28"})));
        assert!(!v.is_valid(&json!({"dob": "2015-02-30"})));
    }

    #[test]
    fn wrong_dialect_is_refused() {
        let schema = json!({"$schema": "http://json-schema.org/draft-07/schema#"});
        assert!(matches!(compile(&schema), Err(CompileFailure::Rule(_))));
    }
}
