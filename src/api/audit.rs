//! Auditors' endpoints: `GET /v1/audit/checkpoint`, `GET /v1/audit/proof/inclusion?index&size`,
//! `GET /v1/audit/proof/consistency?from&to`. Hashes only, never events; for people holding
//! the auditor or data protection officer role (`policy`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::problem::ApiError;
use crate::audit::log::{self, AuditError};
use crate::runtime::Runtime;

fn audit_error(e: AuditError) -> ApiError {
    match e {
        AuditError::Range(detail) => ApiError::AuditRange(detail),
        AuditError::Store(s) => ApiError::from(s),
        other => {
            tracing::error!(error = %other, "audit operation failed");
            ApiError::Internal
        }
    }
}

fn bad_query(_: QueryRejection) -> ApiError {
    ApiError::BadRequest {
        slug: "bad-query",
        detail: "query parameters must be non-negative integers".into(),
    }
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint (signing one if the tree grew).
pub async fn checkpoint(State(rt): State<Arc<Runtime>>) -> Result<Response, ApiError> {
    let c = log::checkpoint(&rt).await.map_err(audit_error)?;
    Ok(
        Json(json!({ "size": c.size, "root": c.root, "time": c.at, "signed": c.signed }))
            .into_response(),
    )
}

/// Inclusion proof query.
#[derive(Debug, Deserialize)]
pub struct InclusionQuery {
    index: u64,
    size: u64,
}

/// `GET /v1/audit/proof/inclusion?index&size`.
pub async fn inclusion(
    State(rt): State<Arc<Runtime>>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let proof = log::inclusion(rt.store.as_ref(), q.index, q.size)
        .await
        .map_err(audit_error)?;
    Ok(Json(proof).into_response())
}

/// Consistency proof query.
#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/audit/proof/consistency?from&to`.
pub async fn consistency(
    State(rt): State<Arc<Runtime>>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let proof = log::consistency(rt.store.as_ref(), q.from, q.to)
        .await
        .map_err(audit_error)?;
    Ok(Json(proof).into_response())
}
