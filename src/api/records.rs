//! `GET /v1/disclosures/{id}` (the sending partner's leads, auditors and DPOs) and `POST
//! /v1/subject-access` (a partner's DPO or auditor; JSON, or CSV with `Accept: text/csv`).
//! Thin: who may ask is the policy's; what is answered is `access`'s.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::principal::{Caller, PathId};
use super::problem::ApiError;
use crate::access;
use crate::disclosure;
use crate::identity::PartnerId;
use crate::ids::ReferralId;
use crate::runtime::Runtime;
use crate::subject::Identifiers;

/// `GET /v1/disclosures/{id}`.
pub async fn disclosure(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let snapshot = rt.snapshot();
    let now = rt.clock.unix_time();
    let record =
        access::disclosure_record(rt.store.as_ref(), &snapshot.config, &caller, &id, now).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(record)).into_response())
}

/// The identifiers a request must give: an NHS number, or a name and date of birth (whether
/// the number's check digit holds or the date is real, only the gateway says: `422`).
fn identifier_shapes(schema: &mut schemars::Schema) {
    schema.insert(
        "anyOf".into(),
        serde_json::json!([
            { "required": ["nhs_number"], "properties": { "nhs_number": { "type": "string" } } },
            { "required": ["given", "family", "date_of_birth"],
              "properties": { "given": { "type": "string" }, "family": { "type": "string" },
                              "date_of_birth": { "type": "string" } } },
        ]),
    );
    // A name is given whole or not at all.
    schema.insert(
        "dependentRequired".into(),
        serde_json::json!({
            "given": ["family", "date_of_birth"],
            "family": ["given", "date_of_birth"],
            "date_of_birth": ["given", "family"],
        }),
    );
}

/// A subject-access request body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = identifier_shapes)]
pub struct SubjectAccessRequest {
    /// The person's NHS number (10 digits, spaces allowed, passing its check digit), or
    #[schemars(regex(pattern = "^[0-9\\s]+$"))]
    nhs_number: Option<String>,
    /// their given name,
    given: Option<String>,
    /// family name
    family: Option<String>,
    /// and date of birth (YYYY-MM-DD).
    #[schemars(extend("format" = "date"))]
    date_of_birth: Option<String>,
}

/// A subject-access answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SubjectAccessAnswer {
    /// The partner whose disclosures these are.
    partner: PartnerId,
    /// Its disclosure records concerning the person, sent or received.
    referrals: Vec<disclosure::Record>,
}

/// Reads a subject-access body: JSON (`415` otherwise), within the body limit (`413`), each
/// member once and of the request's shape (`400`). Never the framework's text.
async fn subject_access_body(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Body,
) -> Result<SubjectAccessRequest, ApiError> {
    super::limits::require_media_type(headers, "application/json")?;
    let limit = rt.snapshot().config.settings.limits.max_body_bytes;
    let bytes = super::limits::read_body(body, limit).await?;
    let bad = || ApiError::BadRequest {
        slug: crate::api::problem::BadInput::Request,
        detail: "expected a JSON object with nhs_number, or given, family and date_of_birth".into(),
    };
    let value = crate::intake::json::parse_strict(&bytes).map_err(|_| bad())?;
    serde_json::from_value(value).map_err(|_| bad())
}

/// `POST /v1/subject-access`.
pub async fn subject_access(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req = subject_access_body(&rt, &headers, body).await?;
    let ids = Identifiers {
        nhs_number: req.nhs_number,
        given: req.given,
        family: req.family,
        date_of_birth: req.date_of_birth,
    };
    let snapshot = rt.snapshot();
    let now = rt.clock.unix_time();
    let records =
        access::subject_access(rt.store.as_ref(), &snapshot.config, &caller, &ids, now).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        let csv = disclosure::to_csv(&records).map_err(|_| ApiError::Internal)?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            csv,
        )
            .into_response());
    }
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(SubjectAccessAnswer {
            partner: caller.partner,
            referrals: records,
        }),
    )
        .into_response())
}
