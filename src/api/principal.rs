//! Turns the verified peer certificate of a connection into the request's [`Caller`], and
//! refuses every non-public route to a certificate that maps to no principal (`403`).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use crate::identity::{Fingerprint, Principal};
use crate::runtime::Runtime;

/// The fingerprint of the client certificate that the connection's handshake verified;
/// set by the server on every request of the connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerCertificate(pub Fingerprint);

/// The principal making the request, resolved against the configuration in force when the
/// request arrived (so a reload applies to connections already open).
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

/// Paths served to any verified certificate, mapped or not: public documents a partner
/// needs while onboarding.
const PUBLIC_PATHS: &[&str] = &["/.well-known/jwks.json", "/openapi.json"];

/// Resolves the caller; refuses unmapped certificates except on public paths.
pub async fn resolve(State(rt): State<Arc<Runtime>>, mut request: Request, next: Next) -> Response {
    let fingerprint = request.extensions().get::<PeerCertificate>().map(|p| p.0);
    let principal = fingerprint.and_then(|fp| rt.snapshot().config.principal(&fp).cloned());
    match principal {
        Some(p) => {
            tracing::Span::current().record("principal", tracing::field::display(&p));
            request.extensions_mut().insert(Caller(p));
        }
        None if PUBLIC_PATHS.contains(&request.uri().path()) => {}
        None => return ApiError::UnknownPrincipal.into_response(),
    }
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::UnknownPrincipal)
    }
}
