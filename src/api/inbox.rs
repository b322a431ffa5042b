//! The receiving side over HTTP: `GET /v1/inbox` (cursor pages, long-poll), `GET
//! /v1/inbox/{id}` (the sealed delivery), `POST /v1/inbox/{id}/ack` and `POST /v1/inbox/ack`
//! (a page of them at once), and the sender's `POST /v1/referrals/{id}/withdraw`. Another partner's id is always `404`, never `403`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::principal::{Caller, PathId};
use super::problem::ApiError;
use super::referrals::{APPLICATION_JOSE, DeliveryLine};
use crate::audit::event::ActorRef;
use crate::identity::{PartnerId, ReferralType};
use crate::ids::{DeliveryId, ReferralId};
use crate::runtime::Runtime;
use crate::store::records::{AckOutcome, InboxItem};

/// Page size when the client names none (the contract's default).
const DEFAULT_LIMIT: i64 = 50;
/// Largest page: big enough to drain a busy inbox quickly, small enough to bound one
/// response's size and the query behind it.
const MAX_LIMIT: i64 = 500;
/// Longest long-poll (contract: `wait` 0–60 s).
const MAX_WAIT_SECS: u64 = 60;

/// `GET /v1/inbox` query parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct InboxQuery {
    /// Page size, 1-500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (absent or empty: from the start).
    #[schemars(regex(pattern = "^[0-9]{0,18}$"))]
    cursor: Option<String>,
    /// Long-poll: seconds to wait for a delivery when the page would be empty, 0-60.
    #[schemars(range(min = 0, max = 60))]
    wait: Option<u64>,
}

/// One delivery in an inbox page: metadata only, no personal data.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct InboxMessage {
    /// The delivery (`GET /v1/inbox/{id}` fetches it).
    id: DeliveryId,
    /// The sending partner.
    from: PartnerId,
    /// The referral type.
    #[serde(rename = "type")]
    referral_type: ReferralType,
    /// When the gateway accepted the referral (RFC 3339, UTC).
    #[schemars(extend("format" = "date-time"))]
    received_at: String,
    /// Size of the sealed delivery in bytes.
    bytes: u64,
}

/// `GET /v1/inbox`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct InboxPage {
    /// Deliveries in arrival order.
    messages: Vec<InboxMessage>,
    /// The cursor for the next page (the same one again when this page is empty).
    #[schemars(regex(pattern = "^[0-9]+$"))]
    next_cursor: String,
}

/// `POST /v1/referrals/{id}/withdraw`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Withdrawn {
    /// The referral's id.
    id: ReferralId,
    /// Every recipient's status after the withdrawal.
    deliveries: Vec<DeliveryLine>,
}

fn bad_request(slug: crate::api::problem::BadInput, detail: &str) -> ApiError {
    ApiError::BadRequest {
        slug,
        detail: detail.to_owned(),
    }
}

/// `GET /v1/inbox?limit&cursor&wait`.
pub async fn list(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    query: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|_| {
        bad_request(
            crate::api::problem::BadInput::Query,
            "limit, cursor and wait must be numbers",
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad_request(
            crate::api::problem::BadInput::Limit,
            "limit must be between 1 and 500",
        ));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(bad_request(
            crate::api::problem::BadInput::Wait,
            "wait must be between 0 and 60 seconds",
        ));
    }
    let after: i64 = match q.cursor.as_deref() {
        None | Some("") => 0,
        // Exactly what `next_cursor` writes (the documented `^[0-9]{0,18}$`): no sign, no
        // 19th digit.
        Some(c) => (c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()))
            .then(|| c.parse::<i64>().ok())
            .flatten()
            .ok_or_else(|| {
                bad_request(
                    crate::api::problem::BadInput::Cursor,
                    "cursor is not one this gateway issued",
                )
            })?,
    };
    let recipient = &caller.partner;
    // Subscribe before the first read, so a commit between the read and the wait still wakes us.
    let mut changes = rt.watch_inboxes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut page = rt.store.inbox_page(recipient, after, limit).await?;
    while page.is_empty() && wait > 0 {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {
                page = rt.store.inbox_page(recipient, after, limit).await?;
            }
            _ => break,
        }
    }
    let next = page.last().map(|m| m.position).unwrap_or(after);
    let messages = page
        .into_iter()
        .map(|m: InboxItem| InboxMessage {
            id: m.id,
            from: m.from,
            referral_type: m.referral_type,
            received_at: m.received_at.rfc3339(),
            bytes: m.bytes.max(0) as u64,
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(InboxPage {
            messages,
            next_cursor: next.to_string(),
        }),
    )
        .into_response())
}

/// `GET /v1/inbox/{id}`: the sealed delivery; the first fetch marks it `delivered`.
pub async fn fetch(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let at = rt.clock.unix_time();
    let sealed = rt
        .store
        .fetch_delivery(&caller.partner, &id, at, &ActorRef::from(&caller))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, APPLICATION_JOSE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        sealed.into_string(),
    )
        .into_response())
}

/// `POST /v1/inbox/{id}/ack`: `204`, idempotent.
pub async fn ack(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let at = rt.clock.unix_time();
    match rt
        .store
        .ack_delivery(&caller.partner, &id, at, &ActorRef::from(&caller))
        .await?
    {
        AckOutcome::Acknowledged | AckOutcome::AlreadyAcknowledged => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        AckOutcome::NotFound => Err(ApiError::NotFound),
    }
}

/// Most deliveries one `POST /v1/inbox/ack` acknowledges: a whole inbox page.
pub const MAX_ACK_IDS: usize = MAX_LIMIT as usize;

/// The largest acknowledgement body: [`MAX_ACK_IDS`] ids with their quotes and commas fit
/// in half of it.
const MAX_ACK_BODY: usize = 64 * 1024;

/// `POST /v1/inbox/ack` body: the deliveries to acknowledge.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Delivery ids from your inbox, 1-500, each once. Read as text and checked here, so
    /// that a bad one is named (`ids[3] is not a delivery id`); described as what is
    /// accepted.
    #[schemars(
        with = "Vec<DeliveryId>",
        length(min = 1, max = 500),
        extend("uniqueItems" = true)
    )]
    ids: Vec<String>,
}

/// `POST /v1/inbox/ack` answer: every id of the request in one of the two lists, in the
/// request's order.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AckAnswer {
    /// Acknowledged now or before: out of the inbox, their ciphertext gone.
    acknowledged: Vec<DeliveryId>,
    /// Not in your inbox: unknown, another partner's, withdrawn or expired (as `404` for
    /// one).
    not_found: Vec<DeliveryId>,
}

/// The ids of an acknowledgement body: JSON with one member, `ids`, 1–[`MAX_ACK_IDS`]
/// well-formed delivery ids, each once. Anything else is refused whole, naming what is
/// wrong, before anything is acknowledged.
fn ack_ids(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Result<Vec<DeliveryId>, ApiError> {
    if bytes.len() > MAX_ACK_BODY {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_ACK_BODY,
        });
    }
    super::limits::require_media_type(headers, "application/json")?;
    let bad = |detail: &str| bad_request(crate::api::problem::BadInput::Request, detail);
    let expected = "expected {\"ids\": [\"dlv_…\", …]} with 1 to 500 delivery ids";
    let value = crate::intake::json::parse_strict(bytes).map_err(|e| match &e {
        // A member named twice says which (the pointer, never a value) when the name is
        // short and printable; the caller's own input, but an answer echoes no more.
        crate::intake::json::StrictJsonError::Duplicate { pointer }
            if pointer.len() <= 64 && pointer.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            bad(&e.to_string())
        }
        crate::intake::json::StrictJsonError::Duplicate { .. } => {
            bad("a member appears more than once")
        }
        crate::intake::json::StrictJsonError::Syntax => bad(expected),
    })?;
    let body: AckRequest = serde_json::from_value(value).map_err(|_| bad(expected))?;
    if body.ids.is_empty() || body.ids.len() > MAX_ACK_IDS {
        return Err(bad(expected));
    }
    let mut seen = std::collections::HashSet::with_capacity(body.ids.len());
    let mut ids = Vec::with_capacity(body.ids.len());
    for (n, raw) in body.ids.iter().enumerate() {
        let id =
            DeliveryId::parse(raw).map_err(|_| bad(&format!("ids[{n}] is not a delivery id")))?;
        if !seen.insert(id.clone()) {
            return Err(bad(&format!("ids[{n}] repeats an earlier id")));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// `POST /v1/inbox/ack`: acknowledges up to a page of deliveries in one request (each as
/// `POST /v1/inbox/{id}/ack` would, with its own audit event), sharing commits.
pub async fn ack_many(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let limit = rt.snapshot().config.settings.limits.max_body_bytes;
    let body = super::limits::read_body(body, limit).await?;
    let ids = ack_ids(&headers, &body)?;
    let at = rt.clock.unix_time();
    let outcomes = rt
        .store
        .ack_deliveries(&caller.partner, &ids, at, &ActorRef::from(&caller))
        .await?;
    let mut answer = AckAnswer {
        acknowledged: Vec::new(),
        not_found: Vec::new(),
    };
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            AckOutcome::Acknowledged | AckOutcome::AlreadyAcknowledged => {
                answer.acknowledged.push(id)
            }
            AckOutcome::NotFound => answer.not_found.push(id),
        }
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}

/// `POST /v1/referrals/{id}/withdraw` (sender only): every delivery not yet acknowledged is
/// withdrawn and leaves the inbox; the answer lists every recipient's status.
pub async fn withdraw(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let at = rt.clock.unix_time();
    let states = rt
        .store
        .withdraw(&id, &caller.partner, at, &ActorRef::from(&caller))
        .await?
        .ok_or(ApiError::NotFound)?;
    let body = Withdrawn {
        id,
        deliveries: states
            .into_iter()
            .map(|s| DeliveryLine {
                to: s.recipient,
                status: s.status,
            })
            .collect(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
