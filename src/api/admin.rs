//! The admin listener (plain HTTP, loopback by default): liveness, readiness, Prometheus
//! metrics, configuration reload, and the public JWKS and OpenAPI description for anyone
//! without a client certificate yet. Whoever reaches this listener operates the gateway: keep
//! it on loopback or a management network.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::problem::ApiError;
use super::public::jwks;
use crate::runtime::Runtime;
use crate::telemetry;

/// The admin routes.
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/admin/reload", post(reload))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(super::openapi::document))
        .fallback(|| async { ApiError::NotFound })
        .with_state(rt)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers within [`crate::readiness::STORE_DEADLINE`] and no CRL is
/// past its `nextUpdate` (which would refuse every certificate of its CA). A CRL due soon or
/// a certificate expiring is a warning in the answer (and the log, and the metrics), not a
/// reason to stop serving.
async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    let crate::readiness::Assessment { reasons, warnings } = crate::readiness::assess(&rt).await;
    if reasons.is_empty() {
        Json(json!({ "status": "ready", "store": "ok", "config": "loaded", "warnings": warnings }))
            .into_response()
    } else {
        ApiError::NotReady(reasons).into_response()
    }
}

/// `POST /admin/reload`: partners, agreements, schemas, keys, certificates and CRLs read
/// again; `422 config-refused` with every problem if any, the old configuration staying in
/// force.
async fn reload(State(rt): State<Arc<Runtime>>, headers: axum::http::HeaderMap) -> Response {
    // Operators reload with curl or a signal; a browser page on any site could send a simple
    // cross-site POST to a loopback port, so any Origin, and any form or text body, is refused.
    let simple = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            matches!(
                m.as_str(),
                "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
            )
        });
    if headers.contains_key(header::ORIGIN) || simple {
        return ApiError::CrossSite(
            "a reload from a web page is refused: send SIGHUP, or POST with no Origin and no form or text body",
        )
        .into_response();
    }
    match crate::reload::reload(&rt, "operator:admin-reload").await {
        Ok(r) => Json(
            json!({ "status": "reloaded", "partners": r.partners, "agreements": r.agreements }),
        )
        .into_response(),
        Err(crate::reload::ReloadError::Refused(e)) => {
            ApiError::ConfigRefused(e.problems).into_response()
        }
        Err(crate::reload::ReloadError::Failed(e)) => {
            tracing::error!(error = %e, "configuration reload failed");
            ApiError::Internal.into_response()
        }
    }
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::metrics().render(),
    )
        .into_response()
}
