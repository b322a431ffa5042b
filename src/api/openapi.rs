//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the route table.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};

use crate::runtime::Runtime;

/// `GET /openapi.json`.
pub async fn document(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let mut types = Map::new();
    for ty in config.schemas.types() {
        if let Some(schema) = config.schemas.referral_type(ty) {
            types.insert(format!("referral:{ty}"), (*schema.source).clone());
        }
    }
    Json(super::routes::describe(&config.settings.gateway_id, types))
}
