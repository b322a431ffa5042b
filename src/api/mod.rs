//! HTTP: routes, limits, identity resolution and problem responses. No business logic lives
//! here: handlers extract, call the core, and map the result.
//!
//! Layers, outermost first: observe (request id, span, log line, metrics) → timeout → body
//! limit → principal resolution (`403` for unmapped certificates) → per-partner rate limit.

pub mod admin;
pub mod audit;
pub mod inbox;
pub mod limits;
pub mod observe;
pub mod principal;
pub mod problem;
pub mod public;
pub mod records;
pub mod referrals;
pub mod reports;
pub mod reviews;
pub mod whoami;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;

use crate::runtime::Runtime;
use problem::ApiError;

/// The mutual-TLS API routes with every layer applied.
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(public::jwks))
        .route("/v1/whoami", get(whoami::whoami))
        .route("/v1/referrals", axum::routing::post(referrals::create))
        .route("/v1/referrals/{id}", get(referrals::status))
        .route(
            "/v1/referrals/{id}/withdraw",
            axum::routing::post(inbox::withdraw),
        )
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/proof/inclusion", get(audit::inclusion))
        .route("/v1/audit/proof/consistency", get(audit::consistency))
        .route("/v1/disclosures/{id}", get(records::disclosure))
        .route(
            "/v1/subject-access",
            axum::routing::post(records::subject_access),
        )
        .route("/v1/reviews", get(reviews::list))
        .route("/v1/reviews/{id}", get(reviews::show))
        .route(
            "/v1/reviews/{id}/decision",
            axum::routing::post(reviews::decide),
        )
        .route("/v1/reports/aggregates", get(reports::aggregates))
        .route("/v1/inbox", get(inbox::list))
        .route("/v1/inbox/{id}", get(inbox::fetch))
        .route("/v1/inbox/{id}/ack", axum::routing::post(inbox::ack))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(rt.clone(), limits::rate_limit))
        .layer(from_fn_with_state(rt.clone(), principal::resolve))
        .layer(from_fn_with_state(rt.clone(), limits::body_limit))
        .layer(from_fn_with_state(rt.clone(), limits::timeout))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(rt)
}
