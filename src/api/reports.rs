//! `GET /v1/reports/aggregates?from&to&by`: anonymised aggregates for commissioners, as JSON
//! or CSV (`Accept: text/csv`). Everyone else gets `403`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::principal::Caller;
use super::problem::ApiError;
use crate::access::{self, ReportRequestError};
use crate::runtime::Runtime;

/// Query parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReportQuery {
    /// The first month, `YYYY-MM` (or its first day, `YYYY-MM-DD`).
    #[schemars(regex(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?$"))]
    from: String,
    /// The last month, inclusive, `YYYY-MM` (or its last day); before the current month.
    #[schemars(regex(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?$"))]
    to: String,
    /// Dimensions, comma-separated, the last across: `month`, `type`, `sender_kind`,
    /// `recipient_kind`, `consent`, `review` (default `month,type`).
    #[serde(default = "default_by")]
    #[schemars(regex(
        pattern = "^(month|type|sender_kind|recipient_kind|consent|review)(,(month|type|sender_kind|recipient_kind|consent|review))*$"
    ))]
    by: String,
}

fn default_by() -> String {
    "month,type".into()
}

/// `GET /v1/reports/aggregates`.
pub async fn aggregates(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    headers: HeaderMap,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let snapshot = rt.snapshot();
    let Query(q) = q.map_err(|_| ApiError::BadRequest {
        slug: crate::api::problem::BadInput::Query,
        detail: "from and to (months, YYYY-MM) are required; by is optional".into(),
    })?;
    let now = rt.clock.unix_time();
    let table = access::aggregate_report(
        rt.store.as_ref(),
        &snapshot.config,
        &crate::audit::event::ActorRef::from(&caller),
        &q.from,
        &q.to,
        &q.by,
        now,
    )
    .await
    .map_err(|e| match e {
        ReportRequestError::Invalid(detail) => ApiError::Report(detail),
        ReportRequestError::Store(s) => ApiError::from(s),
    })?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        let csv = crate::report::to_csv(&table).map_err(|_| ApiError::Internal)?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            csv,
        )
            .into_response());
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(table)).into_response())
}
