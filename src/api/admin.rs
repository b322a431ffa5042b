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
use crate::{telemetry, trust};

/// The longest `/readyz` waits for the store: a probe gets an answer, not a hang.
const READY_STORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

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

/// Ready when the store answers within [`READY_STORE_DEADLINE`] and no CRL is past its
/// `nextUpdate` (which would refuse every certificate of its CA). A CRL due soon is a
/// warning in the answer (and the log, and the metrics), not a reason to stop serving.
async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    let snapshot = rt.snapshot();
    let tls = &snapshot.config.settings.tls;
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    for (health, line) in trust::observe(
        &snapshot.transport.crls,
        rt.clock.now(),
        tls.crl_warn_before,
    ) {
        match health {
            trust::CrlHealth::Overdue => reasons.push(line),
            _ => warnings.push(line),
        }
    }
    let pinged = match rt.breaker.open_for() {
        // Known unreachable: say so at once; the breaker's prober is asking already.
        Some(down) => {
            reasons.push(format!(
                "the store has been unreachable for {} s; probing",
                down.as_secs()
            ));
            None
        }
        None => Some(tokio::time::timeout(READY_STORE_DEADLINE, rt.store.ping()).await),
    };
    match pinged {
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) if matches!(e, crate::store::StoreError::Unavailable(_)) => {
            tracing::warn!(error = %e, "readiness check: store unreachable");
            rt.store_unreachable();
            reasons.push("the store does not answer".into());
        }
        Some(Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness check: store not ready");
            reasons.push("the store is not ready".into());
        }
        Some(Err(_)) => reasons.push(format!(
            "the store did not answer within {} s",
            READY_STORE_DEADLINE.as_secs()
        )),
    }
    let spooled = rt.spool.len();
    if spooled > 0 {
        warnings.push(format!(
            "{spooled} audit events wait in the local spool for the store"
        ));
    }
    metrics::gauge!(crate::telemetry::READY).set(if reasons.is_empty() { 1.0 } else { 0.0 });
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
