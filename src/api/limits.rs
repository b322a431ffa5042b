//! Request limits: rate limits per principal (governor; each quota divided among replicas) —
//! a partner's systems share its `rate_quota`, each of its people has their own
//! `person_rate_quota`, and certificates that map to no one share one small bucket — the body
//! size limit and the request timeout.

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
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, Limited};

use super::principal::{Caller, PeerCertificate, is_console};
use super::problem::{ApiError, respond, respond_to};
use crate::config::Config;
use crate::config::partners::RateQuota;
use crate::identity::{Actor, Fingerprint, PartnerId, PersonId, Principal};
use crate::runtime::Runtime;
use crate::telemetry;

/// Requests per minute (and burst) that all certificates mapping to no principal share, per
/// replica: an onboarding partner fetches the JWKS and the OpenAPI document a few times;
/// anything more from an unknown certificate is not onboarding.
const UNMAPPED_QUOTA: RateQuota = RateQuota {
    per_minute: 60,
    burst: 20,
};

/// The limiters of one configuration.
#[derive(Debug)]
pub struct RateLimits {
    systems: HashMap<PartnerId, DefaultDirectRateLimiter>,
    people: HashMap<PartnerId, DefaultKeyedRateLimiter<PersonId>>,
    /// One bucket per certificate no partner file names (one such certificate cannot use up
    /// another's onboarding checks); forgotten when idle ([`RateLimits::forget_idle`]).
    unmapped: DefaultKeyedRateLimiter<Fingerprint>,
}

/// A quota divided among `replicas`, as governor takes it.
fn quota(q: RateQuota, replicas: u32) -> Quota {
    let per_minute = (q.per_minute / replicas).max(1);
    let burst = (q.burst / replicas).max(1);
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl RateLimits {
    /// Limiters for every partner in `config`.
    /// Limiters for `config`'s partners, each quota divided among the replicas: the number
    /// the settings fix, else `live` (as counted in the store).
    pub fn new(config: &Config, live: u32) -> Self {
        let replicas = config.settings.replicas.unwrap_or(live).max(1);
        let systems = config
            .policy
            .partners
            .values()
            .map(|p| {
                (
                    p.id.clone(),
                    RateLimiter::direct(quota(p.rate_quota, replicas)),
                )
            })
            .collect();
        let people = config
            .policy
            .partners
            .values()
            .map(|p| {
                (
                    p.id.clone(),
                    RateLimiter::keyed(quota(p.person_rate_quota, replicas)),
                )
            })
            .collect();
        Self {
            systems,
            people,
            unmapped: RateLimiter::keyed(quota(UNMAPPED_QUOTA, replicas)),
        }
    }

    /// Drops the buckets of unmapped certificates that are full again (idle ones), so many
    /// different unknown certificates cannot grow the table without bound. Housekeeping
    /// calls it.
    pub fn forget_idle(&self) {
        self.unmapped.retain_recent();
        self.unmapped.shrink_to_fit();
    }

    /// `Ok` if `principal` (none: the unmapped `certificate`) may make a request now, else
    /// the seconds to wait.
    pub fn check(
        &self,
        principal: Option<&Principal>,
        certificate: &Fingerprint,
    ) -> Result<(), u64> {
        let wait = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        };
        match principal {
            None => self.unmapped.check_key(certificate).map_err(wait),
            Some(p) => match &p.actor {
                Actor::System(_) => match self.systems.get(&p.partner) {
                    Some(l) => l.check().map_err(wait),
                    None => Ok(()),
                },
                Actor::Person { id, .. } => match self.people.get(&p.partner) {
                    Some(l) => l.check_key(id).map_err(wait),
                    None => Ok(()),
                },
            },
        }
    }
}

/// Refuses a request when its principal's quota is used up (`429` with `Retry-After`): a
/// partner's systems share its quota, each person has their own, and each certificate no
/// partner file names has a small one, on every route.
pub async fn rate_limit(State(rt): State<Arc<Runtime>>, request: Request, next: Next) -> Response {
    let principal = request.extensions().get::<Caller>().map(|c| &c.0);
    let Some(certificate) = request.extensions().get::<PeerCertificate>().map(|c| c.0) else {
        // Every API request carries its verified certificate; refuse rather than serve.
        return respond_to(&request, ApiError::UnknownPrincipal);
    };
    if let Err(retry_after) = rt.snapshot().limits.load().check(principal, &certificate) {
        let partner = principal.map_or_else(|| "unmapped".to_owned(), |p| p.partner.to_string());
        metrics::counter!(telemetry::RATE_LIMITED, "partner" => partner).increment(1);
        return respond_to(&request, ApiError::RateLimited { retry_after });
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
        return respond_to(&request, ApiError::PayloadTooLarge { limit });
    }
    let request = request.map(|body| Body::new(Limited::new(body, limit)));
    next.run(request).await
}

/// Routes whose handlers read the body and audit a `413` themselves.
const AUDITED_BODY_ROUTES: &[&str] = &["/v1/referrals"];

/// `Ok` when the request's `Content-Type` is `media` (parameters and case aside), else the
/// `415` problem naming it.
pub fn require_media_type(
    headers: &axum::http::HeaderMap,
    media: &'static str,
) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(media)
        });
    if given {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(media))
    }
}

/// Reads a whole request body, mapping an over-limit body to `413` and one the client sent
/// malformed or cut short (a broken chunked encoding, a connection closed mid-body) to
/// `400`: the client's fault, never a `500` and an error in the gateway's log.
pub async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if is_length_limit(&*e.into_inner()) {
                Err(ApiError::PayloadTooLarge { limit })
            } else {
                Err(ApiError::BadRequest {
                    slug: crate::api::problem::BadInput::Request,
                    detail: "the request body could not be read: malformed or cut short".into(),
                })
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

/// Total bytes of a request's header names and values accepted: far above what a partner
/// system or a browser sends (a few hundred bytes to a few KiB), small enough to bound what
/// one request makes the gateway hold. The same on HTTP/1.1 and HTTP/2.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Header fields accepted in one request, on either protocol.
pub const MAX_HEADERS: usize = 64;

/// Longest request target accepted: ids are 30 characters; a query is a few parameters.
pub const MAX_URI_BYTES: usize = 4 * 1024;

/// The protocol parsers' own ceilings, above [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`] so that
/// this layer, not the parser, answers ordinary excess with a problem; past these the parser
/// refuses the connection's request outright.
pub const PARSER_HEADER_BYTES: usize = 64 * 1024;

/// See [`PARSER_HEADER_BYTES`].
pub const PARSER_MAX_HEADERS: usize = 128;

/// Refuses, with the same problem on HTTP/1.1 and HTTP/2, a request whose headers or target
/// are larger than the gateway accepts (`431`, `414`).
pub async fn head_limits(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return respond_to(&request, ApiError::HeadersTooLarge);
    }
    if request.uri().to_string().len() > MAX_URI_BYTES {
        return respond_to(&request, ApiError::UriTooLong);
    }
    next.run(request).await
}

/// Security headers on every API and console response: HSTS (the API is HTTPS only), and
/// `no-store` on everything under `/v1/` that did not say otherwise (referrals, inbox lists,
/// statuses and decisions are not to be cached by anything on the way).
pub async fn response_headers(request: Request, next: Next) -> Response {
    let v1 = request.uri().path().starts_with("/v1/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    if v1 && !headers.contains_key(axum::http::header::CACHE_CONTROL) {
        headers.insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// Ends a request that runs past the configured limit with a `503` problem.
pub async fn timeout(State(rt): State<Arc<Runtime>>, request: Request, next: Next) -> Response {
    let limit: Duration = rt.snapshot().config.settings.limits.request_timeout;
    // A console page names its caller; kept only for the console's requests.
    let console = is_console(request.uri().path()).then(|| {
        let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
        (request.uri().path().to_owned(), caller)
    });
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => match console {
            Some((path, caller)) => respond(&path, caller.as_ref(), ApiError::Timeout),
            None => ApiError::Timeout.into_response(),
        },
    }
}
