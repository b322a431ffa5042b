//! Turns the verified peer certificate of a connection into the request's [`Caller`], and
//! enforces each route's permission (declared in the route table, decided by `policy`)
//! before its handler runs. State-changing API requests must not be simple cross-site
//! requests: a `POST` with a CORS-simple content type or a foreign `Origin` is refused.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::problem::ApiError;
use crate::identity::{Fingerprint, Principal};
use crate::policy::{self, Denied, Permission};
use crate::runtime::Runtime;

/// The fingerprint of the client certificate that the connection's handshake verified;
/// set by the server on every request of the connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerCertificate(pub Fingerprint);

/// The principal making the request, resolved against the configuration in force when the
/// request arrived (so a reload applies to connections already open).
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

/// Resolves the caller, if the certificate maps to one; refusing is the permission layer's
/// job (public documents are served to unmapped certificates). `HEAD` is refused here, for
/// every route: a fetch must never happen without its body being sent.
pub async fn resolve(State(rt): State<Arc<Runtime>>, mut request: Request, next: Next) -> Response {
    let fingerprint = request.extensions().get::<PeerCertificate>().map(|p| p.0);
    let principal = fingerprint.and_then(|fp| rt.snapshot().config.principal(&fp).cloned());
    if let Some(p) = principal {
        tracing::Span::current().record("principal", tracing::field::display(&p));
        request.extensions_mut().insert(Caller(p));
    }
    if request.method() == Method::HEAD {
        // Refused where something is served (`405`, with what is allowed); elsewhere there is
        // nothing to refuse (`404`, as for any method).
        let e = if super::routes::methods_at(request.uri().path()).is_empty() {
            ApiError::NotFound
        } else {
            ApiError::MethodNotAllowed
        };
        return not_served(request, e).await;
    }
    next.run(request).await
}

/// Whether a path is a console page (its failures are rendered as HTML).
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// Media types a cross-site form or `fetch` can send without a CORS preflight.
const CORS_SIMPLE: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Refuses a state-changing API request that a browser on another site could have sent
/// without the gateway's consent: a simple content type, or an `Origin` that is not this
/// gateway's. Partner systems send neither. Console forms are checked by `console::csrf`.
fn cross_site(request: &Request) -> Option<ApiError> {
    if request.method() != Method::POST || is_console(request.uri().path()) {
        return None;
    }
    let headers = request.headers();
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if media.as_deref().is_some_and(|m| CORS_SIMPLE.contains(&m)) {
        return Some(ApiError::CrossSite(
            "a form or text/plain body is refused on state-changing requests; send application/json or application/jose",
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match (origin, host) {
        (None, _) => None,
        (Some(o), Some(h)) if o == format!("https://{h}") => None,
        _ => Some(ApiError::CrossSite(
            "a request from another site's page is refused; partner systems send no Origin",
        )),
    }
}

/// Refuses what a browser fetched for another site's page (`Sec-Fetch-Site` other than
/// `same-origin` or `none`): partner systems send no such header, and a person's certificate
/// must not let an `<img>` or a script on another site read a preview (which is audited as
/// read, and binds an approval) or change anything. A console page may still be opened from a
/// link elsewhere (a top-level navigation to a document).
fn fetched_for_another_site(request: &Request) -> Option<ApiError> {
    let headers = request.headers();
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())?;
    if matches!(site, "same-origin" | "none") {
        return None;
    }
    let navigation = request.method() == Method::GET
        && is_console(request.uri().path())
        && headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate")
        && headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) == Some("document");
    (!navigation).then_some(ApiError::CrossSite(
        "a request a page on another site made is refused",
    ))
}

/// The permission layer of one route: asks the policy (and, for an unmapped certificate on
/// a public document, the shared rate limit), refuses with a problem (HTML on the console)
/// before the handler runs.
pub async fn enforce(
    State(permission): State<Permission>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request.extensions().get::<Caller>().map(|c| &c.0);
    // Every principal, and every unmapped certificate, was rate-limited before routing.
    let refused = match policy::decide(caller, permission) {
        // An unmapped certificate reaches only the public documents.
        Ok(()) if caller.is_none() => None,
        Ok(()) => fetched_for_another_site(&request).or_else(|| cross_site(&request)),
        Err(Denied::UnknownPrincipal) => Some(ApiError::UnknownPrincipal),
        Err(Denied::NotGranted { .. }) => Some(ApiError::NotPermitted(permission)),
    };
    match refused {
        None => next.run(request).await,
        Some(e) => refuse(request, e).await,
    }
}

/// Most of a refused request's body read (and dropped) before the refusal is sent.
const DRAIN_BYTES: usize = 1024 * 1024;

/// Longest wait for it.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers `request` with `e` once what remains of its body (up to [`DRAIN_BYTES`], for at
/// most [`DRAIN_WAIT`]) has been read and dropped. Refused before its body was read, a
/// request left data unread on its connection, which the server then closed under a client
/// still sending (a reset, and the refusal lost: an outside API fuzzer met it as `EOF
/// occurred in violation of protocol`).
async fn refuse(request: Request, e: ApiError) -> Response {
    use http_body_util::BodyExt as _;
    let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
    let (parts, mut body) = request.into_parts();
    let drained = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, drained).await;
    super::problem::respond(parts.uri.path(), caller.as_ref(), e)
}

/// The answer for a path no route serves: `403` to an unmapped certificate (it learns
/// nothing about paths), `404` otherwise.
pub async fn not_found(request: Request) -> Response {
    not_served(request, ApiError::NotFound).await
}

/// The answer for a known path with another method.
pub async fn method_not_allowed(request: Request) -> Response {
    not_served(request, ApiError::MethodNotAllowed).await
}

async fn not_served(request: Request, e: ApiError) -> Response {
    let e = if request.extensions().get::<Caller>().is_none() {
        ApiError::UnknownPrincipal
    } else {
        e
    };
    let not_allowed = matches!(e, ApiError::MethodNotAllowed);
    let path = request.uri().path().to_owned();
    let mut response = refuse(request, e).await;
    if not_allowed {
        // What the table serves there: never HEAD, which is refused everywhere (the router's
        // own list would name it beside GET).
        let allow = super::routes::methods_at(&path)
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match axum::http::HeaderValue::from_str(&allow) {
            Ok(v) if !allow.is_empty() => {
                response.headers_mut().insert(axum::http::header::ALLOW, v);
            }
            _ => {
                response.headers_mut().remove(axum::http::header::ALLOW);
            }
        }
    }
    response
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

/// A route's `{id}` path segment. A segment that is not text (invalid UTF-8, bad escapes) is
/// `404` like any unknown id — as a problem, or a console page — never axum's plain-text
/// rejection.
#[derive(Clone, Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(PathId(id)),
            Err(_) => {
                let caller = parts.extensions.get::<Caller>().map(|c| &c.0);
                Err(super::problem::respond(
                    parts.uri.path(),
                    caller,
                    ApiError::NotFound,
                ))
            }
        }
    }
}
