//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the route table.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::runtime::Runtime;

/// The description as JSON text, for a configuration (rendered once per snapshot).
pub fn render(config: &crate::config::Config) -> String {
    let mut types = Map::new();
    for ty in config.schemas.types() {
        if let Some(schema) = config.schemas.referral_type(ty) {
            types.insert(format!("referral:{ty}"), (*schema.source).clone());
        }
    }
    let doc: Value = super::routes::describe(&config.settings.gateway_id, types);
    doc.to_string()
}

/// `GET /openapi.json`: the description rendered when the configuration was loaded.
pub async fn document(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        rt.snapshot().openapi.as_str().to_owned(),
    )
        .into_response()
}
