//! RFC 9457 problem details: every error a client sees is one of [`ApiError`]'s variants,
//! and this is the one place that chooses its status code, `type` slug and title.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let body = ProblemBody {
            type_: format!("urn:refex:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::RateLimited { retry_after } | ApiError::Unavailable { retry_after } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}
