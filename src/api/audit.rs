//! Auditors' endpoints: `GET /v1/audit/checkpoint`, `GET /v1/audit/proof/inclusion?index&size`,
//! `GET /v1/audit/proof/consistency?from&to`. Hashes only, never events; for people holding
//! the auditor or data protection officer role (`policy`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

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
        slug: crate::api::problem::BadInput::Query,
        detail: "query parameters must be non-negative integers".into(),
    }
}

/// The latest signed checkpoint.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Checkpoint {
    /// The tree's size (number of leaves).
    size: u64,
    /// Its root, lower-case hex SHA-256.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    root: String,
    /// When it was signed, seconds since the Unix epoch.
    time: i64,
    /// The signed statement: a compact JWS by the gateway's signing key (`refex audit verify
    /// --checkpoint` checks it offline).
    #[schemars(regex(pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"))]
    signed: String,
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint (signing one if the tree grew).
pub async fn checkpoint(State(rt): State<Arc<Runtime>>) -> Result<Response, ApiError> {
    let c = log::checkpoint(&rt).await.map_err(audit_error)?;
    Ok(Json(Checkpoint {
        size: c.size,
        root: c.root,
        time: c.at.secs(),
        signed: c.signed,
    })
    .into_response())
}

/// Inclusion proof query.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct InclusionQuery {
    /// The leaf's index (0-based, below `size`).
    index: u64,
    /// The tree size the proof is for (at most the current size).
    #[schemars(range(min = 1))]
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ConsistencyQuery {
    /// The earlier tree size.
    #[schemars(range(min = 1))]
    from: u64,
    /// The later tree size (at least `from`, at most the current size).
    #[schemars(range(min = 1))]
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
