//! HTTP: routes, limits, identity resolution and problem responses. No business logic lives
//! here: handlers extract, call the core, and map the result.
//!
//! Layers, outermost first: observe (request id, span, log line, metrics) → timeout → body
//! limit → principal resolution → per-principal rate limit → store gate (`503` at once
//! while the store is unreachable) → (per route) the permission the
//! route table declares, decided by `policy` (`403` for unmapped certificates and principals
//! without the grant; cross-site state-changing requests refused).

pub mod admin;
pub mod audit;
pub mod gate;
pub mod inbox;
pub mod limits;
pub mod observe;
pub mod openapi;
pub mod principal;
pub mod problem;
pub mod public;
pub mod records;
pub mod referrals;
pub mod reports;
pub mod reviews;
pub mod routes;
pub mod whoami;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;

use crate::runtime::Runtime;

/// The mutual-TLS API routes with every layer applied.
pub fn router(rt: Arc<Runtime>) -> Router {
    routes::register(Router::new())
        .fallback(principal::not_found)
        .method_not_allowed_fallback(principal::method_not_allowed)
        .layer(from_fn_with_state(rt.clone(), gate::store_gate))
        .layer(from_fn_with_state(rt.clone(), limits::rate_limit))
        .layer(from_fn_with_state(rt.clone(), limits::body_limit))
        .layer(from_fn_with_state(rt.clone(), limits::timeout))
        // The caller is known before any limit refuses: a console page that says a form was
        // too large, or took too long, still names who is signed in.
        .layer(from_fn_with_state(rt.clone(), principal::resolve))
        .layer(axum::middleware::from_fn(limits::head_limits))
        .layer(axum::middleware::from_fn(limits::response_headers))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(rt)
}
