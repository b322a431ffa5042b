//! Exporting the audit log as JSON lines (`refex audit export`): a `log` header, every event
//! with its canonical leaf text (or only its hash once purged), and every signed checkpoint.
//! The export is the log at the size its header states, read first: events appended and
//! checkpoints signed while it is written are left to the next export, so a busy gateway's
//! export still verifies.

use std::io::Write;

use serde_json::json;

use crate::store::{Store, StoreError};

/// Events read per store query while exporting.
const PAGE: u64 = 1000;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing failed.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the whole log; returns how many events were written.
pub async fn export(
    store: &dyn Store,
    origin: &str,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let size = store.audit_size().await?;
    writeln!(
        out,
        "{}",
        json!({ "type": "log", "origin": origin, "size": size })
    )?;
    let mut from = 0;
    while from < size {
        let page = store.audit_leaves(from, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for leaf in page.iter().take_while(|l| l.idx < size) {
            writeln!(
                out,
                "{}",
                json!({ "type": "event", "idx": leaf.idx, "leaf": leaf.leaf, "leaf_hash": hex::encode(leaf.hash) })
            )?;
        }
        from = page.last().map(|l| l.idx + 1).unwrap_or(size);
    }
    for c in store
        .audit_checkpoints()
        .await?
        .into_iter()
        .filter(|c| c.size <= size)
    {
        writeln!(
            out,
            "{}",
            json!({ "type": "checkpoint", "size": c.size, "signed": c.signed })
        )?;
    }
    out.flush()?;
    Ok(size)
}
