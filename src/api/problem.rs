//! RFC 9457 problem details: every failure a client sees is one of [`ApiError`]'s variants,
//! and this is the one place that chooses its status code, `type` slug, title and detail —
//! for the API (rendered here as `application/problem+json`) and for the console (rendered
//! as an HTML page by `console::problem_page` from the same [`Problem`]). No store or library
//! message ever reaches a client: such failures are logged here under the request id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AccessError;
use crate::envelope::referral::EnvelopeError;
use crate::hosted::HostedError;
use crate::identity::PartnerId;
use crate::intake::IntakeError;
use crate::policy::{Permission, grant};
use crate::review::ReviewError;
use crate::schema::Violation;
use crate::store::StoreError;
use crate::submit::SubmitError;

/// Seconds after which a client should retry when the store is unavailable.
const STORE_RETRY_AFTER: u64 = 5;

/// The media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A failure as the API reports it. Variants carry only what may be shown to the caller:
/// never a payload value, never a store or library message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The certificate chains to the trust bundle but maps to no principal.
    #[error("certificate is not registered to any partner")]
    UnknownPrincipal,
    /// The policy does not grant the caller this permission.
    #[error("{} is for {}", .0.as_str(), grant(*.0).describe())]
    NotPermitted(Permission),
    /// A state-changing request a browser on another site could have sent.
    #[error("{0}")]
    CrossSite(&'static str),
    /// No such resource (or not the caller's: ids do not leak).
    #[error("not found")]
    NotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The caller's rate quota is used up.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until a request will be accepted.
        retry_after: u64,
    },
    /// The request took longer than the configured limit.
    #[error("request timed out")]
    Timeout,
    /// The store failed (unreachable, contended, full, or a fault): `503`, `507` or `500`.
    #[error(transparent)]
    Store(StoreError),
    /// The store was unreachable moments ago and has not answered a probe since: refused
    /// at once rather than held for the store's time-out.
    #[error("the gateway's store is unreachable")]
    StoreDown,
    /// The request's headers are larger than the gateway accepts.
    #[error(
        "the request's headers are larger than this gateway accepts (at most 64 fields, 16 KiB in all)"
    )]
    HeadersTooLarge,
    /// The request target is longer than the gateway accepts.
    #[error("the request target is longer than this gateway accepts (4 KiB)")]
    UriTooLong,
    /// The body's media type is not the one the route takes.
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// A query or body that does not have the route's shape.
    #[error("{detail}")]
    BadRequest {
        /// What was wrong with it (its stable slug).
        slug: BadInput,
        /// What is wrong and what would be right.
        detail: String,
    },
    /// A referral or envelope was refused.
    #[error(transparent)]
    Submit(SubmitError),
    /// A review request was refused.
    #[error(transparent)]
    Review(ReviewError),
    /// A records request was refused.
    #[error(transparent)]
    Access(AccessError),
    /// A hosted organisation's console request was refused.
    #[error(transparent)]
    Hosted(HostedError),
    /// A report request was refused.
    #[error("{0}")]
    Report(String),
    /// An audit proof request is out of range.
    #[error("{0}")]
    AuditRange(String),
    /// A new configuration was refused whole (reload); the old one stays in force.
    #[error("the new configuration has {} problems; the previous one stays in force", .0.len())]
    ConfigRefused(Vec<String>),
    /// `/readyz`: the gateway cannot serve partners now, for these reasons (operators only:
    /// the admin listener).
    #[error("not ready: {}", .0.join("; "))]
    NotReady(Vec<String>),
    /// Something failed inside the gateway; the log has the detail under the request id.
    #[error("internal error")]
    Internal,
}

/// A failure as a client is shown it, for either renderer.
#[derive(Debug)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable slug (`urn:refex:problem:<slug>`).
    pub slug: &'static str,
    /// A short title.
    pub title: &'static str,
    /// What happened and what would fix it (never a payload value).
    pub detail: String,
    /// Violations by pointer (422).
    pub errors: Option<Vec<Violation>>,
    /// Recipients concerned (a stale preview).
    pub recipients: Option<Vec<PartnerId>>,
    /// A refused configuration's problems.
    pub problems: Option<Vec<String>>,
    /// Seconds to wait before retrying.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Status, slug and title: the one table.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::UnknownPrincipal => (
                S::FORBIDDEN,
                "unknown-principal",
                "Certificate not registered",
            ),
            ApiError::NotPermitted(_) => (S::FORBIDDEN, "not-permitted", "Not permitted"),
            ApiError::CrossSite(_) => (
                S::FORBIDDEN,
                "cross-site-request",
                "Cross-site request refused",
            ),
            ApiError::NotFound => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::PayloadTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::RateLimited { .. } => {
                (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            }
            ApiError::Timeout => (S::SERVICE_UNAVAILABLE, "timeout", "Request timed out"),
            ApiError::Store(e) => store_parts(e),
            ApiError::StoreDown => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            ApiError::HeadersTooLarge => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
            ),
            ApiError::UriTooLong => (S::URI_TOO_LONG, "uri-too-long", "Request target too long"),
            ApiError::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::BadRequest { slug, .. } => (S::BAD_REQUEST, slug.slug(), "Bad request"),
            ApiError::Submit(e) => submit_parts(e),
            ApiError::Review(e) => review_parts(e),
            ApiError::Access(e) => match e {
                AccessError::NotFound => (S::NOT_FOUND, "not-found", "Not found"),
                AccessError::BadIdentifiers(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "bad-identifiers",
                    "Identifiers not usable",
                ),
                AccessError::Store(e) => store_parts(e),
            },
            ApiError::Hosted(e) => match e {
                HostedError::NotHosted => (
                    S::FORBIDDEN,
                    "not-hosted",
                    "Your organisation uses its own case system",
                ),
                HostedError::NotFound => (S::NOT_FOUND, "not-found", "Not found"),
                HostedError::Store(e) => store_parts(e),
                HostedError::File { .. }
                | HostedError::Keys(_)
                | HostedError::Exists(_)
                | HostedError::Unreadable => {
                    (S::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                }
            },
            ApiError::Report(_) => (S::BAD_REQUEST, "bad-query", "Bad request"),
            ApiError::AuditRange(_) => (S::BAD_REQUEST, "bad-range", "Bad request"),
            ApiError::ConfigRefused(_) => (
                S::UNPROCESSABLE_ENTITY,
                "config-refused",
                "Configuration refused",
            ),
            ApiError::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not-ready", "Not ready"),
            ApiError::Internal => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// The stable slug of this error's `type`.
    pub fn slug(&self) -> &'static str {
        self.parts().1
    }

    /// The problem as a client is shown it. Failures inside the gateway are logged here and
    /// shown only as "internal error" or "unavailable".
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self.log_text(), slug, "request failed");
        }
        let detail = match status {
            StatusCode::INTERNAL_SERVER_ERROR => ApiError::Internal.to_string(),
            StatusCode::SERVICE_UNAVAILABLE if self.store_is_why() => {
                "the gateway's store is unavailable; retry later (a referral with the same jti and claims: a retry of one that was in fact accepted is answered with that acceptance)".into()
            }
            StatusCode::INSUFFICIENT_STORAGE => {
                "the gateway's store is full; nothing was written; retry later".into()
            }
            _ => self.to_string(),
        };
        let retry_after = match status {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => {
                Some(STORE_RETRY_AFTER)
            }
            _ => None,
        };
        Problem {
            status,
            slug,
            title,
            detail,
            errors: match self {
                ApiError::Submit(SubmitError::Intake(IntakeError::Invalid(v))) => Some(v.clone()),
                ApiError::Review(ReviewError::NoLongerPermitted {
                    reason: IntakeError::Invalid(v),
                    ..
                }) => Some(v.clone()),
                ApiError::Access(AccessError::BadIdentifiers(p)) => Some(
                    p.iter()
                        .map(|p| Violation {
                            pointer: format!("/{}", p.field),
                            keyword: "identifier".into(),
                            message: p.message.clone(),
                        })
                        .collect(),
                ),
                _ => None,
            },
            recipients: match self {
                ApiError::Review(ReviewError::PreviewStale { recipients }) => {
                    Some(recipients.clone())
                }
                ApiError::Review(ReviewError::NoLongerPermitted { recipient, .. }) => {
                    Some(vec![recipient.clone()])
                }
                _ => None,
            },
            problems: match self {
                ApiError::ConfigRefused(p) | ApiError::NotReady(p) => Some(p.clone()),
                _ => None,
            },
            retry_after: match self {
                ApiError::RateLimited { retry_after } => Some(*retry_after),
                _ => retry_after,
            },
        }
    }

    /// The full text for the log (it may name a store's message; a client never sees it).
    fn log_text(&self) -> String {
        self.to_string()
    }

    /// The store failure under this error, wherever it was met.
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            ApiError::Store(e)
            | ApiError::Submit(SubmitError::Store(e))
            | ApiError::Review(ReviewError::Store(e))
            | ApiError::Access(AccessError::Store(e))
            | ApiError::Hosted(HostedError::Store(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether the store is why this failed (its own error, or the breaker held open for
    /// it): such a `503` says so, and that a retry of an accepted referral is answered with
    /// its acceptance; any other `503` (a timeout, not ready, no CPU thread) says its own.
    fn store_is_why(&self) -> bool {
        matches!(self, ApiError::StoreDown) || self.store_error().is_some()
    }

    /// Whether this says the store could not be reached (what opens the store breaker; a
    /// contended or full store does not).
    pub fn store_unreachable(&self) -> bool {
        matches!(self.store_error(), Some(StoreError::Unavailable(_)))
    }
}

/// The one place a refusal becomes a response, for every layer and extractor: under
/// `/console/` the problem as a page (naming the caller, when known), elsewhere
/// `application/problem+json`. Handlers of either kind render their own the same way.
pub fn respond(path: &str, caller: Option<&crate::identity::Principal>, e: ApiError) -> Response {
    if super::principal::is_console(path) {
        crate::console::problem_page(&e, caller)
    } else {
        e.into_response()
    }
}

/// [`respond`] for a request not yet handled (its path and the caller its layers found).
pub fn respond_to(request: &axum::extract::Request, e: ApiError) -> Response {
    let caller = request
        .extensions()
        .get::<super::principal::Caller>()
        .map(|c| &c.0);
    respond(request.uri().path(), caller, e)
}

/// Marks a response whose failure was an unreachable store, for the store gate (clients
/// never see it: a response extension).
#[derive(Clone, Copy, Debug)]
pub struct StoreUnreachable;

/// Adds [`StoreUnreachable`] to `response` when `e` says so: every renderer of a problem
/// (the API's JSON, the console's page) calls it.
pub fn mark(e: &ApiError, response: &mut Response) {
    if e.store_unreachable() {
        response.extensions_mut().insert(StoreUnreachable);
    }
}

fn store_parts(e: &StoreError) -> (StatusCode, &'static str, &'static str) {
    match e {
        StoreError::Unavailable(_) | StoreError::Contended(_) | StoreError::Stopped(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        ),
        StoreError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "store-full", "Store full"),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        ),
    }
}

/// The status for each refusal of a submission: envelope and freshness faults are `400`,
/// authority faults (issuer, agreement, basis, consent) `403`, replay `409`, schema and
/// rules `422`.
fn submit_parts(e: &SubmitError) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    const REFUSED: &str = "Referral refused";
    match e {
        SubmitError::Envelope(e @ EnvelopeError::SignerNotSender) => {
            (S::FORBIDDEN, e.slug(), REFUSED)
        }
        SubmitError::Envelope(e) => (S::BAD_REQUEST, e.slug(), REFUSED),
        SubmitError::Intake(IntakeError::Invalid(_)) => (
            S::UNPROCESSABLE_ENTITY,
            "invalid-referral",
            "Referral does not validate",
        ),
        SubmitError::Intake(e @ IntakeError::Replay) => (S::CONFLICT, e.slug(), REFUSED),
        SubmitError::Replay => (S::CONFLICT, IntakeError::Replay.slug(), REFUSED),
        SubmitError::Intake(e @ IntakeError::UnknownSuperseded) => {
            (S::NOT_FOUND, e.slug(), REFUSED)
        }
        SubmitError::Intake(
            e @ (IntakeError::Malformed
            | IntakeError::WrongAudience(_)
            | IntakeError::StaleIat { .. }),
        ) => (S::BAD_REQUEST, e.slug(), REFUSED),
        SubmitError::Intake(e) => (S::FORBIDDEN, e.slug(), REFUSED),
        SubmitError::Store(e) => store_parts(e),
        SubmitError::Seal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        SubmitError::Busy => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
    }
}

fn review_parts(e: &ReviewError) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match e {
        ReviewError::NotFound => (S::NOT_FOUND, "not-found", "Not found"),
        ReviewError::FourEyes => (S::FORBIDDEN, "four-eyes", "Four eyes"),
        ReviewError::AlreadyDecided => (S::CONFLICT, "already-decided", "Already decided"),
        ReviewError::Withdrawn => (S::CONFLICT, "referral-withdrawn", "Withdrawn by the sender"),
        ReviewError::Invalid(_) => (
            S::UNPROCESSABLE_ENTITY,
            "invalid-decision",
            "Decision not valid",
        ),
        ReviewError::PreviewStale { .. } => (S::CONFLICT, "preview-stale", "Preview changed"),
        ReviewError::NoLongerPermitted { .. } => (
            S::CONFLICT,
            "no-longer-permitted",
            "Release no longer permitted",
        ),
        ReviewError::Store(e) => store_parts(e),
        ReviewError::Release(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
    }
}

/// What was wrong with a request the gateway could not read as the route's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadInput {
    /// A query string (`bad-query`).
    Query,
    /// A body (`bad-request`).
    Request,
    /// A console form (`bad-form`).
    Form,
    /// A hosted delivery that could not be opened for reading (`not-opened`).
    NotOpened,
    /// An inbox page size (`bad-limit`).
    Limit,
    /// A long-poll wait (`bad-wait`).
    Wait,
    /// An inbox cursor (`bad-cursor`).
    Cursor,
}

impl BadInput {
    /// Every kind.
    pub const ALL: [BadInput; 7] = [
        BadInput::Query,
        BadInput::Request,
        BadInput::Form,
        BadInput::NotOpened,
        BadInput::Limit,
        BadInput::Wait,
        BadInput::Cursor,
    ];

    /// The problem type's slug.
    pub fn slug(self) -> &'static str {
        match self {
            BadInput::Query => "bad-query",
            BadInput::Request => "bad-request",
            BadInput::Form => "bad-form",
            BadInput::NotOpened => "not-opened",
            BadInput::Limit => "bad-limit",
            BadInput::Wait => "bad-wait",
            BadInput::Cursor => "bad-cursor",
        }
    }
}

impl ApiError {
    /// One of every refusal a client can be answered with: each variant, each kind of the
    /// errors it carries, each store failure. The OpenAPI document lists the problem types
    /// each status can carry from it (`problem_types`); the match below lists every variant
    /// without a wildcard, so a new one does not compile until it is placed here too.
    pub fn catalogue() -> Vec<ApiError> {
        use crate::envelope::jose::JoseError as J;
        use EnvelopeError as E;
        use IntakeError as I;
        let partner: PartnerId = "partner".parse().unwrap_or_else(|_| unreachable!());
        let store = || {
            [
                StoreError::Unavailable(String::new()),
                StoreError::Full(String::new()),
                StoreError::Corrupt {
                    table: "t",
                    column: "c",
                },
                StoreError::Unreadable {
                    op: "o",
                    column: 0,
                    expected: "e",
                },
            ]
        };
        let mut all = vec![
            ApiError::UnknownPrincipal,
            ApiError::NotPermitted(Permission::SubmitReferral),
            ApiError::CrossSite(""),
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge { limit: 0 },
            ApiError::RateLimited { retry_after: 0 },
            ApiError::Timeout,
            ApiError::StoreDown,
            ApiError::HeadersTooLarge,
            ApiError::UriTooLong,
            ApiError::UnsupportedMediaType(""),
            ApiError::Report(String::new()),
            ApiError::AuditRange(String::new()),
            ApiError::ConfigRefused(Vec::new()),
            ApiError::NotReady(Vec::new()),
            ApiError::Internal,
            ApiError::Access(AccessError::NotFound),
            ApiError::Access(AccessError::BadIdentifiers(Vec::new())),
            ApiError::Hosted(HostedError::NotHosted),
            ApiError::Hosted(HostedError::NotFound),
            ApiError::Hosted(HostedError::Unreadable),
            ApiError::Review(ReviewError::NotFound),
            ApiError::Review(ReviewError::FourEyes),
            ApiError::Review(ReviewError::AlreadyDecided),
            ApiError::Review(ReviewError::Withdrawn),
            ApiError::Review(ReviewError::Invalid(String::new())),
            ApiError::Review(ReviewError::PreviewStale {
                recipients: Vec::new(),
            }),
            ApiError::Review(ReviewError::NoLongerPermitted {
                recipient: partner.clone(),
                reason: I::NoRoute,
            }),
            ApiError::Review(ReviewError::Release(String::new())),
            ApiError::Submit(SubmitError::Replay),
            ApiError::Submit(SubmitError::Busy),
        ];
        all.extend(BadInput::ALL.map(|slug| ApiError::BadRequest {
            slug,
            detail: String::new(),
        }));
        all.extend(store().map(ApiError::Store));
        all.extend(store().map(|e| ApiError::Submit(SubmitError::Store(e))));
        for e in [
            E::NotText,
            E::Cty,
            E::Typ(""),
            E::SignerNotSender,
            E::Jwe(J::Decrypt),
            E::Jwe(J::UnknownKid {
                what: "",
                kid: None,
            }),
            E::Jwe(J::Malformed("")),
            E::Jwe(J::Zip),
            E::Jws(J::Signature),
            E::Jws(J::Malformed("")),
            E::Jws(J::Unencoded),
        ] {
            all.push(ApiError::Submit(SubmitError::Envelope(e)));
        }
        for e in [
            I::Malformed,
            I::Invalid(Vec::new()),
            I::IssuerMismatch,
            I::WrongAudience(String::new()),
            I::StaleIat {
                iat: 0,
                now: 0,
                skew: 0,
            },
            I::UnknownRecipient(String::new()),
            I::NoAgreement {
                recipient: String::new(),
                covered: String::new(),
            },
            I::NoRoute,
            I::LawfulBasis {
                recipient: String::new(),
                allowed: String::new(),
            },
            I::ProfessionalOnly(String::new()),
            I::ConsentRequired(String::new()),
            I::UnknownSuperseded,
            I::Replay,
        ] {
            all.push(ApiError::Submit(SubmitError::Intake(e)));
        }
        // Every variant has its place above (no wildcard: a new variant fails here).
        for e in &all {
            match e {
                ApiError::UnknownPrincipal
                | ApiError::NotPermitted(_)
                | ApiError::CrossSite(_)
                | ApiError::NotFound
                | ApiError::MethodNotAllowed
                | ApiError::PayloadTooLarge { .. }
                | ApiError::RateLimited { .. }
                | ApiError::Timeout
                | ApiError::Store(_)
                | ApiError::StoreDown
                | ApiError::HeadersTooLarge
                | ApiError::UriTooLong
                | ApiError::UnsupportedMediaType(_)
                | ApiError::BadRequest { .. }
                | ApiError::Submit(_)
                | ApiError::Review(_)
                | ApiError::Access(_)
                | ApiError::Hosted(_)
                | ApiError::Report(_)
                | ApiError::AuditRange(_)
                | ApiError::ConfigRefused(_)
                | ApiError::NotReady(_)
                | ApiError::Internal => {}
            }
        }
        all
    }

    /// The status and `type` slug this refusal is answered with.
    pub fn status_and_slug(&self) -> (u16, &'static str) {
        let (status, slug, _) = self.parts();
        (status.as_u16(), slug)
    }
}

/// The problem type slugs each status can carry, from [`ApiError::catalogue`].
pub fn problem_types() -> std::collections::BTreeMap<u16, std::collections::BTreeSet<&'static str>>
{
    let mut out: std::collections::BTreeMap<u16, std::collections::BTreeSet<&'static str>> =
        std::collections::BTreeMap::new();
    for e in ApiError::catalogue() {
        let (status, slug) = e.status_and_slug();
        out.entry(status).or_default().insert(slug);
    }
    out
}

/// The JSON body of a problem response (RFC 9457).
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Problem")]
pub struct ProblemBody<'a> {
    /// `urn:refex:problem:<slug>`: the stable identifier a client branches on.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = "^urn:refex:problem:[a-z][a-z0-9-]*$"))]
    type_: String,
    /// A short title.
    title: &'static str,
    /// The HTTP status.
    #[schemars(range(min = 400, max = 599))]
    status: u16,
    /// What happened and what would fix it (never a payload value).
    detail: &'a str,
    /// Each schema violation by JSON pointer (`422`).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [Violation]>,
    /// The recipients a review refusal concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<&'a [PartnerId]>,
    /// A refused configuration's problems (admin listener only; they name files and keys,
    /// never payload values).
    #[serde(skip_serializing_if = "Option::is_none")]
    problems: Option<&'a [String]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = self.problem();
        let body = ProblemBody {
            type_: format!("urn:refex:problem:{}", p.slug),
            title: p.title,
            status: p.status.as_u16(),
            detail: &p.detail,
            errors: p.errors.as_deref(),
            recipients: p.recipients.as_deref(),
            problems: p.problems.as_deref(),
        };
        let mut response = (p.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(retry_after) = p.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        mark(&self, &mut response);
        response
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        ApiError::Submit(e)
    }
}

impl From<ReviewError> for ApiError {
    fn from(e: ReviewError) -> Self {
        ApiError::Review(e)
    }
}

impl From<HostedError> for ApiError {
    fn from(e: HostedError) -> Self {
        ApiError::Hosted(e)
    }
}

impl From<crate::hosted::ComposeError> for ApiError {
    fn from(e: crate::hosted::ComposeError) -> Self {
        match e {
            crate::hosted::ComposeError::Hosted(e) => ApiError::Hosted(e),
            crate::hosted::ComposeError::Submit(e) => ApiError::Submit(e),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        ApiError::Access(e)
    }
}

impl From<StoreError> for ApiError {
    /// A store failure: `503` with `Retry-After` when the store is unreachable or contended,
    /// `507` when full, `500` otherwise (logged by [`ApiError::problem`]). The client never
    /// sees the store's message.
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `503` blames the store only when the store is why; every `503` says when to retry.
    #[test]
    fn a_503_says_its_own_cause() {
        const STORE: &str = "the gateway's store is unavailable";
        for e in ApiError::catalogue() {
            let p = e.problem();
            if p.status != StatusCode::SERVICE_UNAVAILABLE {
                continue;
            }
            assert_eq!(p.detail.starts_with(STORE), e.store_is_why(), "{e:?}");
            assert!(p.retry_after.is_some(), "{e:?}");
        }
        let busy = ApiError::Submit(SubmitError::Busy).problem();
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            busy.detail.contains("could not start a thread"),
            "{}",
            busy.detail
        );
        assert!(ApiError::StoreDown.problem().detail.starts_with(STORE));
    }
}
