//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the route table and from
//! the very types the handlers read and answer with (each derives its JSON Schema), so a
//! generated client is typed and a fuzzer's checks mean something. `tests/interop/api_fuzz.sh`
//! runs one (schemathesis) against a real gateway and holds every answer to this document.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use super::principal::is_console;
use super::problem::ProblemBody;
use super::routes::{LINKS, ROUTES};
use crate::policy::grant;
use crate::runtime::Runtime;

/// Describes a type for the document: a `$ref` into `components.schemas` for a named type.
pub type Describe = fn(&mut SchemaGenerator) -> Schema;

/// [`Describe`] for `T`.
pub fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Problem statuses any route can answer with: an unregistered certificate or a refused
/// permission or cross-site request (`403`), a body over the limit whatever the route
/// (`413`), an over-long target (`414`) or headers (`431`), the caller's quota (`429`), a
/// failure inside the gateway (`500`), a store unavailable or a request timed out (`503`), a
/// full store (`507`).
pub const ANY_ROUTE: &[u16] = &[403, 413, 414, 429, 431, 500, 503, 507];

macro_rules! document_type {
    ($(#[$doc:meta])* $name:ident, $inline:literal, $schema:tt) => {
        $(#[$doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                $inline
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

document_type!(
    /// A JOSE compact serialisation of a JWE: five base64url parts (the key part empty for
    /// direct encryption).
    CompactJwe,
    false,
    {
        "type": "string",
        "description": "JWE compact serialisation (RFC 7516): five base64url parts",
        "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"
    }
);
document_type!(
    /// A console page (the console's failures are pages too, from the same problem mapping).
    HtmlPage,
    true,
    { "type": "string", "contentMediaType": "text/html" }
);
document_type!(
    /// The console's stylesheet.
    Stylesheet,
    true,
    { "type": "string", "contentMediaType": "text/css" }
);
document_type!(
    /// A table as CSV (RFC 4180), a header line first.
    CsvTable,
    true,
    { "type": "string", "contentMediaType": "text/csv" }
);
document_type!(
    /// A console form's fields (its CSRF token among them).
    FormFields,
    true,
    { "type": "object", "additionalProperties": { "type": "string" } }
);
document_type!(
    /// This document.
    OpenApiDocument,
    true,
    { "type": "object", "required": ["openapi", "info", "paths"] }
);
document_type!(
    /// A JWK set (RFC 7517) of public EC P-256 keys, each with `kid`, `use` and `alg`.
    JwkSet,
    false,
    {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kty", "kid", "use", "alg", "crv", "x", "y"],
                    "properties": {
                        "kty": { "const": "EC" },
                        "crv": { "const": "P-256" },
                        "kid": { "type": "string" },
                        "use": { "enum": ["enc", "sig"] },
                        "alg": { "enum": ["ECDH-ES+A256KW", "ES256"] },
                        "x": { "type": "string" },
                        "y": { "type": "string" }
                    }
                }
            }
        }
    }
);

/// The description as JSON text, for a configuration (rendered once per snapshot).
pub fn render(config: &crate::config::Config) -> String {
    let mut types = Map::new();
    for ty in config.policy.schemas.types() {
        if let Some(schema) = config.policy.schemas.referral_type(ty) {
            // `referral.<type>`: a component name is letters, digits, `.`, `-` and `_`.
            types.insert(format!("referral.{ty}"), (*schema.source).clone());
        }
    }
    describe(&config.settings.gateway_id, types).to_string()
}

/// `GET /openapi.json`: the description rendered when the configuration was loaded.
pub async fn document(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        rt.snapshot().openapi.as_str().to_owned(),
    )
        .into_response()
}

/// A generator whose definitions land in `components.schemas`; requests are described as
/// the handlers read them, answers as they write them.
fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.contract = contract;
            s.meta_schema = None;
        })
        .into_generator()
}

/// The object schema behind `schema` (following a `$ref` to the generator's definitions).
fn resolve(schema: Schema, generator: &SchemaGenerator) -> Value {
    let value = schema.to_value();
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .rsplit('/')
            .next()
            .and_then(|name| generator.definitions().get(name))
            .cloned()
            .unwrap_or(value),
        None => value,
    }
}

/// A parameter's schema: a query member that may be absent is never `null` on the wire.
fn without_null(mut schema: Value) -> Value {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema["type"] = only;
        }
    }
    schema
}

/// The problem responses of a route: `application/problem+json` from the API, the same
/// problem as an HTML page from the console.
fn problem_responses(path: &str, statuses: &[u16], problem: &Schema) -> Map<String, Value> {
    let mut all: Vec<u16> = statuses.iter().chain(ANY_ROUTE).copied().collect();
    all.sort_unstable();
    all.dedup();
    let types = super::problem::problem_types();
    all.into_iter()
        .map(|status| {
            let content = if is_console(path) {
                json!({ "text/html": { "schema": { "type": "string", "contentMediaType": "text/html" } } })
            } else {
                // The problem, narrowed to this status and the types it can carry.
                let mut narrowed = json!({ "properties": { "status": { "const": status } } });
                if let Some(slugs) = types.get(&status) {
                    let urns: Vec<String> =
                        slugs.iter().map(|s| format!("urn:refex:problem:{s}")).collect();
                    narrowed["properties"]["type"] = json!({ "enum": urns });
                }
                json!({ "application/problem+json": { "schema": { "allOf": [problem, narrowed] } } })
            };
            let mut response = json!({ "description": "Problem (RFC 9457)", "content": content });
            if matches!(status, 429 | 503 | 507) {
                response["headers"] = json!({ "Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "required": true, "schema": { "type": "integer", "minimum": 0 } } });
            }
            (status.to_string(), response)
        })
        .collect()
}

/// The names of the types described differently as read (a request) and as written (an
/// answer): the document can hold only one of each, so this must be empty (a test says so).
pub fn conflicting_definitions() -> Vec<String> {
    let mut answers = generator(Contract::Serialize);
    let mut requests = generator(Contract::Deserialize);
    for r in ROUTES {
        for of in
            r.id.iter()
                .chain(&r.query)
                .chain(r.body.iter().map(|(_, of)| of))
        {
            of(&mut requests);
        }
        for (_, of) in r.success.1 {
            of(&mut answers);
        }
    }
    let written = answers.take_definitions(true);
    requests
        .take_definitions(true)
        .into_iter()
        .filter(|(name, schema)| written.get(name).is_some_and(|w| w != schema))
        .map(|(name, _)| name)
        .collect()
}

/// The OpenAPI 3.1 description of the route table, with the referral type schemas embedded
/// as they are (JSON Schema 2020-12 is OpenAPI 3.1's schema dialect).
pub fn describe(gateway_id: &str, referral_types: Map<String, Value>) -> Value {
    let mut answers = generator(Contract::Serialize);
    let mut requests = generator(Contract::Deserialize);
    let problem = answers.subschema_for::<ProblemBody<'static>>();
    let mut paths = Map::new();
    for r in ROUTES {
        let mut responses = problem_responses(r.path, r.problems, &problem);
        let mut ok = json!({ "description": "Success" });
        if !r.success.1.is_empty() {
            let content: Map<String, Value> = r
                .success
                .1
                .iter()
                .map(|(media, of)| ((*media).to_owned(), json!({ "schema": of(&mut answers) })))
                .collect();
            ok["content"] = Value::Object(content);
        }
        if r.success.0 == 303 {
            ok["description"] = json!("Done: see the page this redirects to");
            ok["headers"] =
                json!({ "Location": { "required": true, "schema": { "type": "string" } } });
        }
        let links: Map<String, Value> = LINKS
            .iter()
            .filter(|((method, path), _, _)| *method == r.method.as_str() && *path == r.path)
            .flat_map(|(_, pointer, to)| {
                to.iter().map(move |(method, path)| {
                    let id = format!("{method} {path}");
                    let link = json!({ "operationId": id,
                                       "parameters": { "id": format!("$response.body#{pointer}") } });
                    (id, link)
                })
            })
            .collect();
        if !links.is_empty() {
            ok["links"] = Value::Object(links);
        }
        responses.insert(r.success.0.to_string(), ok);
        for status in r.also {
            responses.insert(
                status.to_string(),
                json!({ "description": "The form again, changed as asked (a repeatable group added or removed)",
                        "content": { "text/html": { "schema": of::<HtmlPage>(&mut answers) } } }),
            );
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "responses": responses,
            "x-refex-permission": r.permission.as_str(),
            "x-refex-access": grant(r.permission).describe(),
        });
        let mut params = Vec::new();
        if let Some(id) = r.id {
            params.push(json!({ "name": "id", "in": "path", "required": true, "schema": id(&mut requests) }));
        }
        if let Some(query) = r.query {
            let schema = query(&mut requests);
            let object = resolve(schema, &requests);
            let required: Vec<&str> = object["required"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = object["properties"].as_object() {
                for (name, schema) in props {
                    let mut p = json!({ "name": name, "in": "query",
                                        "required": required.contains(&name.as_str()),
                                        "schema": without_null(schema.clone()) });
                    if let Some(d) = schema.get("description") {
                        p["description"] = d.clone();
                    }
                    params.push(p);
                }
            }
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some((media, of)) = r.body {
            op["requestBody"] =
                json!({ "required": true, "content": { media: { "schema": of(&mut requests) } } });
        }
        paths
            .entry(r.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(r.method.as_str().to_lowercase(), op));
    }
    let mut schemas = referral_types;
    // A type both read and written is described once ([`conflicting_definitions`] is empty).
    for (name, schema) in requests.take_definitions(true) {
        schemas.insert(name, schema);
    }
    for (name, schema) in answers.take_definitions(true) {
        schemas.insert(name, schema);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": format!("refex gateway ({gateway_id})"), "version": env!("CARGO_PKG_VERSION"),
                  "description": "Multi-agency referral exchange. Every route requires mutual TLS; see x-refex-access. \
                                  A method a path does not document is answered 405 with Allow (a problem, or a page under /console/)." },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "mutualTLS": { "type": "mutualTLS" } },
        },
        "security": [{ "mutualTLS": [] }],
        "paths": paths,
    })
}
