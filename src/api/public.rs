//! Public documents: the gateway's JWKS (public halves of its `enc` and `sig` keys).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::runtime::Runtime;

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(rt.snapshot().jwks.clone()),
    )
}
