//! `GET /v1/reviews`, `GET /v1/reviews/{id}`, `POST /v1/reviews/{id}/decision`: thin
//! handlers over `review` for the sending partner's designated safeguarding leads. The wire
//! shapes (DTOs) are here; the decisions are `review`'s.
//!
//! A decision is either the v1 form for every held recipient,
//! `{"decision": "approve"|"reject", "reason": "…", "preview": "sha256:…"}`, or one choice
//! per recipient, `{"recipients": {"imara": {"decision": "approve", "preview": "sha256:…"},
//! "housing": {"decision": "reject", "reason": "…"}}}`. An approval is bound to the preview
//! it names, or (when it names none) to the preview this lead was last shown.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::principal::{Caller, PathId};
use super::problem::ApiError;
use super::referrals::DeliveryLine;
use crate::identity::PartnerId;
use crate::ids::ReferralId;
use crate::intake::claims::{ConsentStatus, Override, SubjectInformed};
use crate::lawful::LawfulBasis;
use crate::review::{Choice, Request, Service, Shown};
use crate::runtime::Runtime;
use crate::store::records::HeldRow;
use crate::timestamp::UnixTime;

/// One held referral in the queue.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct QueueItem {
    id: ReferralId,
    #[serde(rename = "type")]
    referral_type: crate::identity::ReferralType,
    sender_ref: String,
    received_at: i64,
    age_seconds: i64,
    #[serde(rename = "override")]
    override_: Option<Override>,
    escalated: bool,
    recipients: Vec<PartnerId>,
    submitted_by: Option<String>,
}

impl QueueItem {
    /// The queue line of a held referral at `now`.
    pub fn of(h: HeldRow, now: UnixTime) -> Self {
        Self {
            id: h.referral_id,
            referral_type: h.referral_type,
            sender_ref: h.sender_ref,
            received_at: h.received_at.secs(),
            age_seconds: now.secs_since(h.received_at),
            override_: h.consent_override,
            escalated: h.escalated_at.is_some(),
            recipients: h.recipients,
            submitted_by: h.submitted_by.map(|a| a.to_string()),
        }
    }
}

/// `GET /v1/reviews`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReviewQueue {
    /// Held referrals of the caller's organisation, oldest first.
    reviews: Vec<QueueItem>,
}

/// `GET /v1/reviews`.
pub async fn list(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let now = rt.clock.unix_time();
    let rows = Service::new(&rt).queue(&caller).await?;
    let reviews: Vec<QueueItem> = rows.into_iter().map(|h| QueueItem::of(h, now)).collect();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(ReviewQueue { reviews }),
    )
        .into_response())
}

/// Whether releasing to a recipient is still permitted, as the preview shows it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct Permitted {
    permitted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// One recipient's preview.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct RecipientView {
    to: PartnerId,
    recipient_name: String,
    agreement: Option<crate::identity::AgreementId>,
    view: String,
    view_version: String,
    disclosed: Vec<String>,
    withheld: Vec<String>,
    preview: String,
    release: Permitted,
}

/// Consent as the lead sees it (with the justification).
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct ConsentView {
    status: ConsentStatus,
    #[serde(rename = "override")]
    override_: Option<Override>,
    justification: Option<String>,
}

/// A held referral as its reviewer sees it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReviewView {
    id: ReferralId,
    #[serde(rename = "type")]
    referral_type: crate::identity::ReferralType,
    sender_ref: String,
    received_at: i64,
    age_seconds: i64,
    submitted_by: Option<String>,
    lawful_basis: LawfulBasis,
    consent: ConsentView,
    subject_informed: SubjectInformed,
    court_order_ref: Option<String>,
    supersedes: Option<ReferralId>,
    preview: String,
    recipients: Vec<RecipientView>,
    /// The referral as a document: sections, labelled fields with values, and per field the
    /// recipients it would be disclosed to.
    document: Vec<crate::review::DocumentSection>,
    can_decide: bool,
}

impl ReviewView {
    /// The wire form of what `review` shows.
    pub fn of(s: &Shown, now: UnixTime, config: &crate::config::Config) -> Self {
        let r = &s.pending.claims.referral;
        let record = &s.pending.detail.referral;
        Self {
            id: record.id.clone(),
            referral_type: r.referral_type.clone(),
            sender_ref: r.sender_ref.clone(),
            received_at: record.received_at.secs(),
            age_seconds: now.secs_since(record.received_at),
            submitted_by: s.pending.detail.submitted_by().map(ToString::to_string),
            lawful_basis: r.lawful_basis,
            consent: ConsentView {
                status: r.consent.status,
                override_: r.consent.override_,
                justification: r.consent.justification.clone(),
            },
            subject_informed: r.subject_informed.clone(),
            court_order_ref: r.court_order_ref.clone(),
            supersedes: r.supersedes.clone(),
            preview: s.preview.digest(),
            recipients: s
                .preview
                .recipients
                .iter()
                .map(|p| RecipientView {
                    to: p.to.clone(),
                    recipient_name: p.name.clone(),
                    agreement: p.permitted.as_ref().ok().cloned(),
                    view: p.view.clone(),
                    view_version: p.view_version.clone(),
                    disclosed: p.disclosed.clone(),
                    withheld: p.minimised.withheld.clone(),
                    preview: p.digest.clone(),
                    release: match &p.permitted {
                        Ok(_) => Permitted {
                            permitted: true,
                            reason: None,
                            detail: None,
                        },
                        Err(e) => Permitted {
                            permitted: false,
                            reason: Some(e.slug()),
                            detail: Some(e.to_string()),
                        },
                    },
                })
                .collect(),
            document: crate::review::document(&s.pending, &s.preview, config),
            can_decide: s.can_decide,
        }
    }
}

/// `GET /v1/reviews/{id}`: the preview (audited as a consultation).
pub async fn show(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let shown = Service::new(&rt).show(&caller, &id).await?;
    let now = rt.clock.unix_time();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(ReviewView::of(&shown, now, &rt.snapshot().config)),
    )
        .into_response())
}

/// `approve` or `reject`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Verdict {
    Approve,
    Reject,
}

/// One recipient's choice.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = verdict_rules)]
struct RecipientChoice {
    decision: Verdict,
    /// Why (a rejection only; at most 2,000 characters).
    #[serde(default)]
    reason: Option<String>,
    /// The preview digest this approval is bound to (`GET /v1/reviews/{id}` shows it).
    #[serde(default)]
    #[schemars(regex(pattern = "^sha256:[0-9a-f]{64}$"))]
    preview: Option<String>,
}

/// What Rust's `str::trim` takes away (Unicode White_Space), as a JSON Schema class: a reason
/// of only these is no reason. (ECMA-262's `\s` differs: it has U+FEFF and lacks U+0085.)
const BLANK: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// What serde's shape cannot say of a verdict: an approval takes no reason (it records who
/// approved), a rejection needs one.
fn verdict_rules(schema: &mut schemars::Schema) {
    schema.insert(
        "allOf".into(),
        serde_json::json!([
            { "if": { "required": ["decision"], "properties": { "decision": { "const": "approve" } } },
              "then": { "properties": { "reason": { "type": ["string", "null"],
                                                    "pattern": format!("^[{BLANK}]*$") } } } },
            { "if": { "required": ["decision"], "properties": { "decision": { "const": "reject" } } },
              "then": { "required": ["reason"],
                        "properties": { "reason": { "type": "string", "pattern": format!("[^{BLANK}]"),
                                                    "maxLength": crate::review::MAX_REASON } } } },
        ]),
    );
}

/// A decision body is one of two shapes, and each verdict follows [`verdict_rules`].
fn decision_shapes(schema: &mut schemars::Schema) {
    verdict_rules(schema);
    schema.insert(
        "oneOf".into(),
        serde_json::json!([
            { "required": ["decision"],
              "properties": { "decision": { "enum": ["approve", "reject"] },
                              "recipients": { "type": "null" } } },
            { "required": ["recipients"],
              "properties": { "recipients": { "type": "object", "minProperties": 1 },
                              "decision": { "type": "null" }, "reason": { "type": "null" },
                              "preview": { "type": "null" } } },
        ]),
    );
}

/// A decision body: the v1 form (one verdict for every held recipient) or one per recipient.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = decision_shapes)]
pub struct DecisionBody {
    /// One verdict for every held recipient (the v1 form).
    #[serde(default)]
    decision: Option<Verdict>,
    /// Why (a rejection only; at most 2,000 characters).
    #[serde(default)]
    reason: Option<String>,
    /// The preview digest the approval is bound to (`GET /v1/reviews/{id}` shows it).
    #[serde(default)]
    #[schemars(regex(pattern = "^sha256:[0-9a-f]{64}$"))]
    preview: Option<String>,
    /// One choice per held recipient, by partner id.
    #[serde(default)]
    recipients: Option<BTreeMap<PartnerId, RecipientChoice>>,
}

fn choice(
    decision: Verdict,
    reason: Option<String>,
    preview: Option<String>,
) -> Result<Choice, ApiError> {
    match decision {
        Verdict::Approve if reason.as_deref().is_some_and(|r| !r.trim().is_empty()) => {
            Err(ApiError::Review(crate::review::ReviewError::Invalid(
                "a reason is given with a rejection only; an approval records who approved".into(),
            )))
        }
        Verdict::Approve => Ok(Choice::Approve { preview }),
        Verdict::Reject => Ok(Choice::Reject {
            reason: reason.unwrap_or_default(),
        }),
    }
}

/// The decision as the review core takes it, or why the body is not one.
fn request_of(body: DecisionBody) -> Result<RequestShape, ApiError> {
    let bad = |detail: &str| ApiError::BadRequest {
        slug: crate::api::problem::BadInput::Request,
        detail: detail.to_owned(),
    };
    match (body.decision, body.recipients) {
        (Some(d), None) => Ok(RequestShape::All(choice(d, body.reason, body.preview)?)),
        (None, Some(map)) if body.reason.is_none() && body.preview.is_none() => {
            Ok(RequestShape::Each(
                map.into_iter()
                    .map(|(to, c)| Ok((to, choice(c.decision, c.reason, c.preview)?)))
                    .collect::<Result<_, ApiError>>()?,
            ))
        }
        _ => Err(bad(
            "expected {\"decision\": \"approve\"|\"reject\", \"reason\": \"…\", \"preview\": \"…\"} \
             or {\"recipients\": {\"<partner>\": {\"decision\": …, \"reason\": …, \"preview\": …}}}",
        )),
    }
}

/// A decision body's shape, before the held recipients are known.
enum RequestShape {
    All(Choice),
    Each(Vec<(PartnerId, Choice)>),
}

/// Every held recipient approved, every one rejected, or some of each.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every recipient decided was approved.
    Approve,
    /// Every recipient decided was rejected.
    Reject,
    /// Some approved, some rejected.
    Mixed,
}

/// The outcome of a decision.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DecisionOutcome {
    id: ReferralId,
    decision: Outcome,
    approved: Vec<PartnerId>,
    rejected: Vec<PartnerId>,
    deliveries: Vec<DeliveryLine>,
}

/// The largest decision body: a reason for each of a few dozen recipients (a reason is at
/// most [`crate::review::MAX_REASON`] characters) fits many times over; anything near the
/// request limit is not a decision.
pub const MAX_DECISION_BODY: usize = 64 * 1024;

/// Reads a decision body: JSON, each member once (a recipient named twice is refused, never
/// resolved silently), in one of the two shapes, at most [`MAX_DECISION_BODY`] bytes.
fn decision_body(headers: &HeaderMap, bytes: &[u8]) -> Result<DecisionBody, ApiError> {
    if bytes.len() > MAX_DECISION_BODY {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_DECISION_BODY,
        });
    }
    super::limits::require_media_type(headers, "application/json")?;
    let bad = |detail: String| ApiError::BadRequest {
        slug: crate::api::problem::BadInput::Request,
        detail,
    };
    let value = crate::intake::json::parse_strict(bytes).map_err(|e| bad(e.to_string()))?;
    serde_json::from_value(value).map_err(|_| {
        bad("expected {\"decision\": \"approve\"|\"reject\", \"reason\": \"…\", \"preview\": \"…\"} \
             or {\"recipients\": {\"<partner>\": {\"decision\": …, \"reason\": …, \"preview\": …}}}"
            .into())
    })
}

/// `POST /v1/reviews/{id}/decision`.
pub async fn decide(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    // Read here, not by an extractor: an over-long body is this gateway's 413 problem, never
    // the framework's text.
    let limit = rt.snapshot().config.settings.limits.max_body_bytes;
    let body = super::limits::read_body(body, limit).await?;
    let shape = request_of(decision_body(&headers, &body)?)?;
    let decided = Service::new(&rt)
        .decide(&caller, &id, |pending, preview| match shape {
            RequestShape::All(c) => Request::for_all(pending, c, preview),
            RequestShape::Each(choices) => Request { choices },
        })
        .await?;
    let decision = match (decided.approved.is_empty(), decided.rejected.is_empty()) {
        (false, true) => Outcome::Approve,
        (true, false) => Outcome::Reject,
        _ => Outcome::Mixed,
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(DecisionOutcome {
            id: decided.id,
            decision,
            approved: decided.approved,
            rejected: decided.rejected,
            deliveries: decided
                .deliveries
                .into_iter()
                .map(|(to, status)| DeliveryLine { to, status })
                .collect(),
        }),
    )
        .into_response())
}
