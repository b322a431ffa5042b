//! Offline verification of an exported audit log (`refex audit verify`): every leaf hash
//! recomputed from its event, every signed checkpoint's signature checked against the JWKS
//! and its root recomputed from the leaves, checkpoints consistent with each other and with a
//! checkpoint the auditor trusts from elsewhere. The first fault is named.
//!
//! The export is JSON lines: one `log` header, `event` lines in index order, then
//! `checkpoint` lines.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::CHECKPOINT_TYP;
use super::tree::{self, Hash, Leaves};
use crate::envelope::keys::KeySet;
use crate::envelope::signed;

/// The first fault found in an exported log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fault {
    /// A line is not the expected JSON.
    #[error("line {0} is not a valid export line")]
    Malformed(usize),
    /// An index is skipped.
    #[error("event {0} is missing")]
    Missing(u64),
    /// Events are out of order or repeated.
    #[error("event {found} is out of order (expected event {expected})")]
    OutOfOrder {
        /// The index found.
        found: u64,
        /// The index expected.
        expected: u64,
    },
    /// An event's content does not match its recorded hash, or names another index.
    #[error("event {0} has been altered")]
    Altered(u64),
    /// A checkpoint's signature does not verify against the JWKS.
    #[error("checkpoint at size {size} has a bad signature: {reason}")]
    Signature {
        /// The checkpoint's size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// A checkpoint covers more events than the log holds.
    #[error(
        "checkpoint at size {size} covers more than the {log} events in the log (rolled back or truncated)"
    )]
    BeyondLog {
        /// The checkpoint's size.
        size: u64,
        /// Events in the log.
        log: u64,
    },
    /// A checkpoint's root does not match the log.
    #[error("checkpoint at size {0} does not match the log's root at that size")]
    Root(u64),
    /// Checkpoints go backwards.
    #[error("checkpoint at size {later} comes after a larger checkpoint at size {earlier}")]
    Backwards {
        /// The earlier (larger) size.
        earlier: u64,
        /// The later (smaller) size.
        later: u64,
    },
    /// A checkpoint names another log.
    #[error("checkpoint at size {0} is for another log")]
    Origin(u64),
}

/// What a successful verification covered.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Events checked.
    pub events: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// The largest checkpoint size.
    pub latest: u64,
}

struct Checkpoint {
    size: u64,
    root: Vec<u8>,
    origin: String,
}

fn open_checkpoint(signed_jws: &str, jwks: &KeySet, size_hint: u64) -> Result<Checkpoint, Fault> {
    let v = signed::verify(signed_jws, jwks, CHECKPOINT_TYP).map_err(|e| Fault::Signature {
        size: size_hint,
        reason: e.to_string(),
    })?;
    let size = v["size"].as_u64().ok_or(Fault::Signature {
        size: size_hint,
        reason: "no size".into(),
    })?;
    let root = v["root"]
        .as_str()
        .and_then(|r| STANDARD.decode(r).ok())
        .ok_or(Fault::Signature {
            size,
            reason: "no root".into(),
        })?;
    Ok(Checkpoint {
        size,
        root,
        origin: v["origin"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Verifies an export. `trusted` is a checkpoint JWS the auditor obtained independently
/// (e.g. from `GET /v1/audit/checkpoint` earlier): the log must extend it.
pub fn verify(export: &str, jwks: &KeySet, trusted: Option<&str>) -> Result<Verified, Fault> {
    let mut entries: Vec<(usize, Value)> = Vec::new();
    let mut checkpoints: Vec<(u64, String)> = Vec::new();
    let mut origin = String::new();
    for (n, line) in export
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = n + 1;
        let v: Value = serde_json::from_str(line).map_err(|_| Fault::Malformed(line_no))?;
        match v["type"].as_str() {
            Some("log") => origin = v["origin"].as_str().unwrap_or_default().to_owned(),
            Some("event") => entries.push((line_no, v)),
            Some("checkpoint") => {
                let size = v["size"].as_u64().unwrap_or(0);
                let jws = v["signed"].as_str().ok_or(Fault::Malformed(line_no))?;
                checkpoints.push((size, jws.to_owned()));
            }
            _ => return Err(Fault::Malformed(line_no)),
        }
    }
    let present: std::collections::HashSet<u64> = entries
        .iter()
        .filter_map(|(_, v)| v["idx"].as_u64())
        .collect();
    let mut leaves: Vec<Hash> = Vec::with_capacity(entries.len());
    for (line_no, v) in &entries {
        let idx = v["idx"].as_u64().ok_or(Fault::Malformed(*line_no))?;
        let expected = leaves.len() as u64;
        if idx != expected {
            // Later in the file → reordered; nowhere → missing.
            return Err(if present.contains(&expected) {
                Fault::OutOfOrder {
                    found: idx,
                    expected,
                }
            } else {
                Fault::Missing(expected)
            });
        }
        let recorded = v["leaf_hash"]
            .as_str()
            .and_then(super::parse_hash)
            .ok_or(Fault::Malformed(*line_no))?;
        let hash = match v["leaf"].as_str() {
            // A purged event keeps only its hash; the checkpoints vouch for it.
            None => recorded,
            Some(leaf) => {
                let inner: Value = serde_json::from_str(leaf).map_err(|_| Fault::Altered(idx))?;
                let hash = tree::leaf_hash(leaf.as_bytes());
                if hash != recorded || inner["idx"].as_u64() != Some(idx) {
                    return Err(Fault::Altered(idx));
                }
                hash
            }
        };
        leaves.push(hash);
    }
    let log = leaves.len() as u64;
    let nodes = Leaves(&leaves);
    let mut latest = 0u64;
    let check = |c: &Checkpoint| -> Result<(), Fault> {
        if !origin.is_empty() && c.origin != origin {
            return Err(Fault::Origin(c.size));
        }
        if c.size > log {
            return Err(Fault::BeyondLog { size: c.size, log });
        }
        let root = tree::root(&nodes, c.size).unwrap_or_else(|never| match never {});
        if root.as_slice() != c.root.as_slice() {
            return Err(Fault::Root(c.size));
        }
        Ok(())
    };
    for (size_hint, jws) in &checkpoints {
        let c = open_checkpoint(jws, jwks, *size_hint)?;
        if c.size < latest {
            return Err(Fault::Backwards {
                earlier: latest,
                later: c.size,
            });
        }
        check(&c)?;
        latest = c.size;
    }
    if let Some(jws) = trusted {
        let c = open_checkpoint(jws, jwks, 0)?;
        check(&c)?;
        latest = latest.max(c.size);
    }
    Ok(Verified {
        events: log,
        checkpoints: checkpoints.len(),
        latest,
    })
}
/// The signed checkpoint an auditor trusts, from the text they hold: the compact JWS as
/// the export writes it, or the JSON `GET /v1/audit/checkpoint` answers with (its `signed`
/// member), surrounding whitespace ignored.
pub fn trusted_checkpoint(text: &str) -> String {
    let text = text.trim();
    if text.starts_with('{') {
        if let Some(signed) = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("signed").and_then(|s| s.as_str()).map(str::to_owned))
        {
            return signed;
        }
    }
    text.to_owned()
}
