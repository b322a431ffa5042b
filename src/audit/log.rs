//! The audit log over the store: roots, proofs and signed checkpoints. The tree maths is in
//! `tree`; this module fetches the subtree hashes a computation needs (it records which ones
//! on a dry run, since which nodes are needed depends only on sizes, then reads them all).

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::tree::{self, Hash, Nodes};
use crate::envelope::signed;
use crate::runtime::Runtime;
use crate::store::records::CheckpointRecord;
use crate::store::{Store, StoreError};
use crate::timestamp::UnixTime;

/// The `typ` of a checkpoint JWS.
pub use refex_core::audit::CHECKPOINT_TYP;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node the tree needs is missing from the store.
    #[error("audit tree node ({0}, {1}) is missing")]
    MissingNode(u32, u64),
    /// The requested sizes or index are out of range.
    #[error("{0}")]
    Range(String),
    /// Signing failed.
    #[error("cannot sign checkpoint: {0}")]
    Sign(String),
}

/// Subtree hashes for one computation: on the dry run it records which nodes are asked for
/// (answering zeros); on the real run it answers from what was fetched.
enum Lookup {
    Recording(RefCell<Vec<(u32, u64)>>),
    Fetched(HashMap<(u32, u64), Hash>),
}

impl Nodes for Lookup {
    type Error = AuditError;
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, AuditError> {
        match self {
            Lookup::Recording(asked) => {
                asked.borrow_mut().push((level, index));
                Ok([0; 32])
            }
            Lookup::Fetched(nodes) => nodes
                .get(&(level, index))
                .copied()
                .ok_or(AuditError::MissingNode(level, index)),
        }
    }
}

/// Runs `compute` twice: a dry run to learn which nodes it needs (that depends only on sizes
/// and indices, never on hash values), then with exactly those nodes read from the store.
async fn with_nodes<T>(
    store: &dyn Store,
    compute: impl Fn(&Lookup) -> Result<T, AuditError>,
) -> Result<T, AuditError> {
    let dry = Lookup::Recording(RefCell::new(Vec::new()));
    let _ = compute(&dry);
    let Lookup::Recording(asked) = dry else {
        unreachable!("constructed as Recording above")
    };
    let mut keys = asked.into_inner();
    keys.sort_unstable();
    keys.dedup();
    compute(&Lookup::Fetched(store.audit_nodes(&keys).await?))
}

/// The root of the first `size` leaves.
pub async fn root(store: &dyn Store, size: u64) -> Result<Hash, AuditError> {
    with_nodes(store, |n| tree::root(n, size)).await
}

/// An inclusion proof (RFC 6962 §2.1.1), every hash standard base64.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct InclusionProof {
    /// The leaf's index.
    pub index: u64,
    /// The tree's size.
    pub size: u64,
    /// The leaf's hash.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub leaf_hash: String,
    /// The root of the first `size` leaves.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub root: String,
    /// The audit path, leaf to root.
    pub proof: Vec<String>,
}

/// A consistency proof (RFC 6962 §2.1.2), every hash standard base64.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ConsistencyProof {
    /// The earlier size.
    pub from: u64,
    /// The later size.
    pub to: u64,
    /// The root of the first `from` leaves.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub root_from: String,
    /// The root of the first `to` leaves.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub root_to: String,
    /// The proof's hashes.
    pub proof: Vec<String>,
}

/// An inclusion proof for leaf `index` in the tree of `size`, with the leaf hash and root.
pub async fn inclusion(
    store: &dyn Store,
    index: u64,
    size: u64,
) -> Result<InclusionProof, AuditError> {
    let current = store.audit_size().await?;
    if size == 0 || size > current || index >= size {
        return Err(AuditError::Range(format!(
            "need index < size <= {current} (the tree's size)"
        )));
    }
    let (proof, leaf, root) = with_nodes(store, |n| {
        Ok((
            tree::inclusion_proof(n, index, size)?,
            n.perfect(0, index)?,
            tree::root(n, size)?,
        ))
    })
    .await?;
    Ok(InclusionProof {
        index,
        size,
        leaf_hash: STANDARD.encode(leaf),
        root: STANDARD.encode(root),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    })
}

/// A consistency proof between the trees of `from` and `to` leaves, with both roots.
pub async fn consistency(
    store: &dyn Store,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, AuditError> {
    let current = store.audit_size().await?;
    if from == 0 || from > to || to > current {
        return Err(AuditError::Range(format!(
            "need 0 < from <= to <= {current} (the tree's size)"
        )));
    }
    let (proof, r1, r2) = with_nodes(store, |n| {
        Ok((
            tree::consistency_proof(n, from, to)?,
            tree::root(n, from)?,
            tree::root(n, to)?,
        ))
    })
    .await?;
    Ok(ConsistencyProof {
        from,
        to,
        root_from: STANDARD.encode(r1),
        root_to: STANDARD.encode(r2),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    })
}

/// The checkpoint statement for a tree: JSON with the C2SP tlog-checkpoint body
/// (`origin\nsize\nbase64(root)\n`) alongside its fields.
pub fn statement(origin: &str, size: u64, root: &Hash, time: UnixTime) -> Value {
    let root = STANDARD.encode(root);
    json!({
        "origin": origin,
        "size": size,
        "root": root,
        "time": time.secs(),
        "checkpoint": format!("{origin}\n{size}\n{root}\n"),
    })
}

/// The latest checkpoint, signing a new one first if the tree has grown since.
pub async fn checkpoint(rt: &Runtime) -> Result<CheckpointRecord, AuditError> {
    let size = rt.store.audit_size().await?;
    let existing = rt.store.audit_checkpoints().await?;
    if let Some(last) = existing.last() {
        if last.size == size {
            return Ok(last.clone());
        }
    }
    let root = root(rt.store.as_ref(), size).await?;
    let snapshot = rt.snapshot();
    let at = rt.clock.unix_time();
    let payload = statement(&snapshot.config.settings.gateway_id, size, &root, at);
    let signed = signed::sign(&payload, &snapshot.config.gateway_keys, CHECKPOINT_TYP)
        .map_err(|e| AuditError::Sign(e.to_string()))?;
    let record = CheckpointRecord {
        size,
        root: hex::encode(root),
        at,
        signed,
    };
    rt.store.save_checkpoint(&record).await?;
    // Another replica may have signed this size first; either is valid, return the stored one.
    Ok(rt
        .store
        .audit_checkpoints()
        .await?
        .into_iter()
        .find(|c| c.size == size)
        .unwrap_or(record))
}
