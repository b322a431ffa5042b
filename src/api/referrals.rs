//! `POST /v1/referrals` and `GET /v1/referrals/{id}`: thin handlers over `submit` and the
//! store.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::limits::read_body;
use super::principal::{Caller, PathId};
use super::problem::ApiError;
use crate::identity::PartnerId;
use crate::ids::ReferralId;
use crate::runtime::Runtime;
use crate::store::records::DeliveryStatus;
use crate::submit;

/// The media type of JOSE compact serialisations.
pub const APPLICATION_JOSE: &str = "application/jose";

/// One recipient's delivery and its status.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeliveryLine {
    /// The recipient.
    pub to: PartnerId,
    /// Its delivery's status.
    pub status: DeliveryStatus,
}

/// Whether an accepted referral went to inboxes or waits for a lead.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Acceptance {
    /// At least one recipient waits for the sender's designated safeguarding lead.
    HeldForReview,
    /// Every recipient's copy is in its inbox.
    Queued,
}

/// `202` to `POST /v1/referrals`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Accepted {
    /// The referral's id.
    id: ReferralId,
    /// Held or queued.
    status: Acceptance,
    /// Each recipient's delivery.
    deliveries: Vec<DeliveryLine>,
    /// Present (true) when this answers a retry of a referral accepted before (same `jti`
    /// and claims): the original acceptance, not a new one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    repeated: bool,
}

/// One recipient's status as the sender sees it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatusLine {
    /// The recipient.
    to: PartnerId,
    /// Its delivery's status.
    status: DeliveryStatus,
    /// The lead's reason, when the lead rejected this recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    review_reason: Option<String>,
}

/// `GET /v1/referrals/{id}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReferralStatus {
    /// The referral's id.
    id: ReferralId,
    /// Each recipient's status.
    deliveries: Vec<StatusLine>,
    /// The referral this one corrects.
    #[serde(skip_serializing_if = "Option::is_none")]
    supersedes: Option<ReferralId>,
    /// The lead's reason when every rejection gave the same one (the v1 field).
    #[serde(skip_serializing_if = "Option::is_none")]
    review_reason: Option<String>,
    /// The correction that replaced this referral.
    #[serde(skip_serializing_if = "Option::is_none")]
    superseded_by: Option<ReferralId>,
}

/// `POST /v1/referrals`: `202` once the referral is committed.
pub async fn create(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Err(e) = super::limits::require_media_type(&headers, APPLICATION_JOSE) {
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
    let body = Accepted {
        id: submitted.id,
        status: if held {
            Acceptance::HeldForReview
        } else {
            Acceptance::Queued
        },
        deliveries: submitted
            .deliveries
            .into_iter()
            .map(|(to, status)| DeliveryLine { to, status })
            .collect(),
        repeated: submitted.repeated,
    };
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
    let reasons: Vec<Option<String>> = states
        .iter()
        .map(|s| crate::review::rejection_reason(key, s.reason_sealed.as_ref()))
        .collect();
    // The v1 field: the lead's reason when every rejection gave the same one.
    let mut given: Vec<&String> = reasons.iter().flatten().collect();
    given.dedup();
    let review_reason = match given.as_slice() {
        [only] => Some((*only).clone()),
        _ => None,
    };
    let body = ReferralStatus {
        id,
        deliveries: states
            .iter()
            .zip(reasons.iter().cloned())
            .map(|(s, review_reason)| StatusLine {
                to: s.recipient.clone(),
                status: s.status,
                review_reason,
            })
            .collect(),
        supersedes,
        review_reason,
        superseded_by,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
