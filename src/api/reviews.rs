//! `GET /v1/reviews`, `GET /v1/reviews/{id}`, `POST /v1/reviews/{id}/decision`: thin handlers
//! over `review`, for the sending partner's designated safeguarding leads.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::principal::Caller;
use super::problem::ApiError;
use crate::ids::ReferralId;
use crate::review::{self, ReviewError};
use crate::runtime::Runtime;

/// The one place review refusals become statuses.
pub fn review_error(e: ReviewError) -> ApiError {
    let refused = |status, slug, detail: String| ApiError::Refused {
        status,
        slug,
        detail,
    };
    match e {
        ReviewError::NotFound => ApiError::NotFound,
        ReviewError::NotALead => refused(StatusCode::FORBIDDEN, "not-a-lead", e.to_string()),
        ReviewError::FourEyes => refused(StatusCode::FORBIDDEN, "four-eyes", e.to_string()),
        ReviewError::AlreadyDecided => {
            refused(StatusCode::CONFLICT, "already-decided", e.to_string())
        }
        ReviewError::Invalid(why) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-decision",
            why.into(),
        ),
        ReviewError::Store(s) => ApiError::from(s),
        ReviewError::Release(why) => {
            tracing::error!(error = %why, "review release failure");
            ApiError::Internal
        }
    }
}

/// `GET /v1/reviews`.
pub async fn list(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let reviews = review::queue(&rt, &caller).await.map_err(review_error)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "reviews": reviews })),
    )
        .into_response())
}

/// `GET /v1/reviews/{id}`.
pub async fn show(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let detail = review::show(&rt, &caller, id.as_str())
        .await
        .map_err(review_error)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(detail)).into_response())
}

/// A decision body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/reviews/{id}/decision`.
pub async fn decide(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = ReferralId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let Json(body) = body.map_err(|_| ApiError::Refused {
        status: StatusCode::BAD_REQUEST,
        slug: "bad-request",
        detail: "expected {\"decision\": \"approve\"|\"reject\", \"reason\": \"…\"}".into(),
    })?;
    let approve = match body.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return Err(review_error(ReviewError::Invalid(
                "decision must be \"approve\" or \"reject\"",
            )));
        }
    };
    let out = review::decide(&rt, &caller, id.as_str(), approve, body.reason.as_deref())
        .await
        .map_err(review_error)?;
    Ok(Json(out).into_response())
}
