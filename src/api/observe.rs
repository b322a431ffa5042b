//! Per-request observability: a request id (echoed as `x-request-id`), a tracing span with
//! the route template and principal, one log line when the request ends, and the request
//! metrics. Bodies are never looked at.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry;

/// The response header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Wraps a request in its span, logs its outcome and records metrics.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = uuid::Uuid::now_v7().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        principal = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if status != 429 || telemetry::rate_limited_log_allowed() {
        span.in_scope(|| {
            tracing::info!(
                status,
                latency_ms = elapsed.as_secs_f64() * 1e3,
                "request finished"
            );
        });
    }
    metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(telemetry::HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}
