//! RFC 9457 problem details: every error a client sees is one of [`ApiError`]'s variants,
//! and this is the one place that chooses its status code, `type` slug and title.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::envelope::referral::EnvelopeError;
use crate::intake::IntakeError;
use crate::schema::Violation;
use crate::store::StoreError;
use crate::submit::SubmitError;

/// Seconds after which a client should retry when the store is unavailable.
const STORE_RETRY_AFTER: u64 = 5;

/// The media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error as the API reports it. Variants carry only what may be shown to the caller:
/// never a payload value, never a store or library message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The certificate chains to the trust bundle but maps to no principal.
    #[error("certificate is not registered to any partner")]
    UnknownPrincipal,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
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
    /// The partner's rate quota is used up.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until a request will be accepted.
        retry_after: u64,
    },
    /// The request took longer than the configured limit.
    #[error("request timed out")]
    Timeout,
    /// A dependency (the store) is unavailable.
    #[error("service unavailable")]
    Unavailable {
        /// Seconds after which a retry is sensible.
        retry_after: u64,
    },
    /// The body's media type is not the one the route takes.
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// A referral or envelope was refused; the status, slug and text come from the refusal.
    #[error("{detail}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The stable slug.
        slug: &'static str,
        /// What failed (never a payload value).
        detail: String,
    },
    /// Schema or rule violations, each by pointer.
    #[error("the referral is invalid: {} violations", .0.len())]
    Invalid(Vec<Violation>),
    /// The store has no space left; nothing was written.
    #[error("the gateway's store is full; nothing was written; retry later")]
    StoreFull {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// A new configuration was refused whole (reload); the old one stays in force.
    #[error("the new configuration has {} problems; the previous one stays in force", .0.len())]
    ConfigRefused(Vec<String>),
    /// Something failed inside the gateway; the log has the detail under the request id.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Status, `type` slug and title.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::UnknownPrincipal => (
                StatusCode::FORBIDDEN,
                "unknown-principal",
                "Certificate not registered",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            ApiError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::Refused { status, slug, .. } => (*status, slug, "Referral refused"),
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-referral",
                "Referral does not validate",
            ),
            ApiError::StoreFull { .. } => {
                (StatusCode::INSUFFICIENT_STORAGE, "store-full", "Store full")
            }
            ApiError::ConfigRefused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "config-refused",
                "Configuration refused",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The stable slug of this error's `type`.
    pub fn slug(&self) -> &'static str {
        self.parts().1
    }
}

/// The JSON body of a problem response.
#[derive(Debug, Serialize)]
struct ProblemBody {
    #[serde(rename = "type")]
    type_: String,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<Violation>>,
    /// A refused configuration's problems (admin listener only; they name files and keys,
    /// never payload values).
    #[serde(skip_serializing_if = "Option::is_none")]
    problems: Option<Vec<String>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = self.to_string();
        let errors = match self {
            ApiError::Invalid(ref v) => Some(v.clone()),
            _ => None,
        };
        let problems = match self {
            ApiError::ConfigRefused(ref p) => Some(p.clone()),
            _ => None,
        };
        let body = ProblemBody {
            type_: format!("urn:refex:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
            problems,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::RateLimited { retry_after }
        | ApiError::Unavailable { retry_after }
        | ApiError::StoreFull { retry_after } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

impl From<SubmitError> for ApiError {
    /// The status for each refusal: envelope and freshness faults are `400`, authority faults
    /// (issuer, agreement, basis, consent) `403`, replay `409`, schema and rules `422`.
    fn from(e: SubmitError) -> Self {
        let refused = |status, slug, detail: String| ApiError::Refused {
            status,
            slug,
            detail,
        };
        match e {
            SubmitError::Envelope(e @ EnvelopeError::SignerNotSender) => {
                refused(StatusCode::FORBIDDEN, e.slug(), e.to_string())
            }
            SubmitError::Envelope(e) => refused(StatusCode::BAD_REQUEST, e.slug(), e.to_string()),
            SubmitError::Intake(IntakeError::Invalid(v)) => ApiError::Invalid(v),
            SubmitError::Intake(e @ IntakeError::Replay) => {
                refused(StatusCode::CONFLICT, e.slug(), e.to_string())
            }
            SubmitError::Intake(e @ IntakeError::UnknownSuperseded) => {
                refused(StatusCode::NOT_FOUND, e.slug(), e.to_string())
            }
            SubmitError::Intake(
                e @ (IntakeError::Malformed | IntakeError::WrongAudience | IntakeError::StaleIat),
            ) => refused(StatusCode::BAD_REQUEST, e.slug(), e.to_string()),
            SubmitError::Intake(e) => refused(StatusCode::FORBIDDEN, e.slug(), e.to_string()),
            SubmitError::Store(e) => ApiError::from(e),
            SubmitError::Seal(e) => {
                tracing::error!(error = %e, "sealing failed");
                ApiError::Internal
            }
        }
    }
}

impl From<StoreError> for ApiError {
    /// A store failure: `503` with `Retry-After` when the store is unreachable, `500`
    /// otherwise. Logged here; the client never sees the store's message.
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable {
                retry_after: STORE_RETRY_AFTER,
            },
            StoreError::Full(_) => ApiError::StoreFull {
                retry_after: STORE_RETRY_AFTER,
            },
            _ => ApiError::Internal,
        }
    }
}
