//! Request limits: per-partner rate limits (governor; the quota divided among replicas),
//! the body size limit and the request timeout.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, Limited};

use super::principal::Caller;
use super::problem::ApiError;
use crate::config::Config;
use crate::identity::PartnerId;
use crate::runtime::Runtime;
use crate::telemetry;

/// One limiter per partner, sized from its quota and the replica count.
#[derive(Debug, Default)]
pub struct RateLimits {
    by_partner: HashMap<PartnerId, DefaultDirectRateLimiter>,
}

impl RateLimits {
    /// Limiters for every partner in `config`.
    pub fn new(config: &Config) -> Self {
        let replicas = config.settings.replicas.max(1);
        let by_partner = config
            .partners
            .values()
            .map(|p| {
                let per_minute = (p.rate_quota.per_minute / replicas).max(1);
                let burst = (p.rate_quota.burst / replicas).max(1);
                let quota =
                    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
                        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                (p.id.clone(), RateLimiter::direct(quota))
            })
            .collect();
        Self { by_partner }
    }

    /// `Ok` if `partner` may make a request now, else the seconds to wait.
    pub fn check(&self, partner: &PartnerId) -> Result<(), u64> {
        let Some(limiter) = self.by_partner.get(partner) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Refuses a request when its partner's quota is used up (`429` with `Retry-After`).
pub async fn rate_limit(State(rt): State<Arc<Runtime>>, request: Request, next: Next) -> Response {
    if let Some(Caller(principal)) = request.extensions().get::<Caller>() {
        if let Err(retry_after) = rt.snapshot().limits.check(&principal.partner) {
            metrics::counter!(telemetry::RATE_LIMITED, "partner" => principal.partner.to_string())
                .increment(1);
            return ApiError::RateLimited { retry_after }.into_response();
        }
    }
    next.run(request).await
}

/// Refuses bodies over the configured limit. A declared `Content-Length` over it is refused
/// at once, except on routes that read their body (they answer `413` themselves, so that
/// the refusal is audited); every body is wrapped so that reading past the limit fails
/// (a lying or absent length included) without reading the rest.
pub async fn body_limit(State(rt): State<Arc<Runtime>>, request: Request, next: Next) -> Response {
    let limit = rt.snapshot().config.settings.limits.max_body_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let audited = AUDITED_BODY_ROUTES.contains(&request.uri().path());
    if !audited && declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    let request = request.map(|body| Body::new(Limited::new(body, limit)));
    next.run(request).await
}

/// Routes whose handlers read the body and audit a `413` themselves.
const AUDITED_BODY_ROUTES: &[&str] = &["/v1/referrals"];

/// Reads a whole request body, mapping an over-limit body to `413`.
pub async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if is_length_limit(&*e.into_inner()) {
                Err(ApiError::PayloadTooLarge { limit })
            } else {
                Err(ApiError::Internal)
            }
        }
    }
}

fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Ends a request that runs past the configured limit with a `503` problem.
pub async fn timeout(State(rt): State<Arc<Runtime>>, request: Request, next: Next) -> Response {
    let limit: Duration = rt.snapshot().config.settings.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}
