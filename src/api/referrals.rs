//! `POST /v1/referrals` and `GET /v1/referrals/{id}`: thin handlers over `submit` and the
//! store.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::limits::read_body;
use super::principal::Caller;
use super::problem::ApiError;
use crate::ids::ReferralId;
use crate::runtime::Runtime;
use crate::store::records::DeliveryStatus;
use crate::submit;

/// The media type of JOSE compact serialisations.
pub const APPLICATION_JOSE: &str = "application/jose";

/// `POST /v1/referrals`: `202` once the referral is committed.
pub async fn create(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
    if media.as_deref() != Some(APPLICATION_JOSE) {
        let e = ApiError::UnsupportedMediaType(APPLICATION_JOSE);
        submit::record_rejection(&rt, &caller, e.slug()).await;
        return Err(e);
    }
    let limit = rt.snapshot().config.settings.limits.max_body_bytes;
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            submit::record_rejection(&rt, &caller, e.slug()).await;
            return Err(e);
        }
    };
    let submitted = submit::submit(&rt, &caller, bytes).await?;
    let held = submitted
        .deliveries
        .iter()
        .any(|(_, s)| *s == DeliveryStatus::HeldForReview);
    let body = json!({
        "id": submitted.id.to_string(),
        "status": if held { "held-for-review" } else { "queued" },
        "deliveries": submitted.deliveries.iter()
            .map(|(to, status)| json!({ "to": to, "status": status.as_str() }))
            .collect::<Vec<_>>(),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /v1/referrals/{id}`: per-recipient status, for the sender only (`404` otherwise).
pub async fn status(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let states = rt
        .store
        .delivery_states(id.as_str(), caller.partner.as_str())
        .await?
        .ok_or(ApiError::NotFound)?;
    let (supersedes, superseded_by) = rt.store.referral_links(id.as_str()).await?;
    let mut body = json!({
        "id": id.to_string(),
        "deliveries": states.iter()
            .map(|s| json!({ "to": s.recipient, "status": s.status.as_str() }))
            .collect::<Vec<_>>(),
    });
    if let Some(old) = supersedes {
        body["supersedes"] = json!(old);
    }
    // A lead's reason is shown to its own organisation's sender (sealed at rest).
    let reason = rt.store.review_reason(id.as_str()).await.ok().flatten();
    if let Some(text) = reason.and_then(|r| rt.snapshot().config.storage_key.open(&r).ok()) {
        body["review_reason"] = json!(String::from_utf8_lossy(&text));
    }
    if let Some(new) = superseded_by {
        body["superseded_by"] = json!(new);
    }
    Ok(Json(body).into_response())
}
