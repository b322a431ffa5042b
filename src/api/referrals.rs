//! `POST /v1/referrals` and `GET /v1/referrals/{id}`: thin handlers over `submit` and the
//! store.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::limits::read_body;
use super::principal::{Caller, PathId};
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
    let submitted = submit::submit(&rt, &caller, bytes.to_vec()).await?;
    let held = submitted
        .deliveries
        .iter()
        .any(|(_, s)| *s == DeliveryStatus::HeldForReview);
    let mut body = json!({
        "id": submitted.id.to_string(),
        "status": if held { "held-for-review" } else { "queued" },
        "deliveries": submitted.deliveries.iter()
            .map(|(to, status)| json!({ "to": to, "status": status.as_str() }))
            .collect::<Vec<_>>(),
    });
    if submitted.repeated {
        // A retry of a referral accepted before: the original acceptance, not a new one.
        body["repeated"] = json!(true);
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// `GET /v1/referrals/{id}`: per-recipient status, for the sender only (`404` otherwise).
/// A recipient a lead rejected carries the lead's reason (sealed at rest, shown only to the
/// sending organisation).
pub async fn status(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let states = rt
        .store
        .delivery_states(&id, &caller.partner)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (supersedes, superseded_by) = rt.store.referral_links(&id).await?;
    let key = &rt.snapshot().config.storage_key;
    let reason = |sealed: &Option<String>| {
        sealed
            .as_ref()
            .and_then(|r| key.open(r).ok())
            .map(|text| String::from_utf8_lossy(&text).into_owned())
    };
    let reasons: Vec<Option<String>> = states.iter().map(|s| reason(&s.reason_sealed)).collect();
    let mut body = json!({
        "id": id.to_string(),
        "deliveries": states.iter().zip(&reasons)
            .map(|(s, r)| {
                let mut d = json!({ "to": s.recipient, "status": s.status.as_str() });
                if let Some(r) = r {
                    d["review_reason"] = json!(r);
                }
                d
            })
            .collect::<Vec<_>>(),
    });
    if let Some(old) = supersedes {
        body["supersedes"] = json!(old);
    }
    // The v1 field: the lead's reason when every rejection gave the same one.
    let mut given: Vec<&String> = reasons.iter().flatten().collect();
    given.dedup();
    if let [only] = given.as_slice() {
        body["review_reason"] = json!(only);
    }
    if let Some(new) = superseded_by {
        body["superseded_by"] = json!(new);
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
