//! The store gate: while the store breaker is open, every request is answered `503` with
//! `Retry-After` at once instead of waiting for the store's time-out; a response whose
//! failure was an unreachable store (marked by the one problem mapping) opens it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::problem::{ApiError, StoreUnreachable};
use crate::runtime::Runtime;

/// Refuses at once while the breaker is open; opens it when a request met an unreachable
/// store.
pub async fn store_gate(State(rt): State<Arc<Runtime>>, request: Request, next: Next) -> Response {
    if rt.breaker.is_open() {
        metrics::counter!(crate::telemetry::STORE_GATE_REFUSED).increment(1);
        return super::problem::respond_to(&request, ApiError::StoreDown);
    }
    let response = next.run(request).await;
    if response.extensions().get::<StoreUnreachable>().is_some() {
        rt.store_unreachable();
    }
    response
}
