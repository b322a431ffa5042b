//! Rotating the gateway's own keys (`refex keys rotate`): a new `enc` and `sig` key appended
//! to the gateway's private JWKS file, the keys they replace kept for a grace period (listed
//! in the JWKS, still opening referrals encrypted to them), and a `key-rotated` audit event.
//! Running gateways take the new keys on their next reload (`SIGHUP`, `POST /admin/reload`)
//! and drop the old ones from the first load after their grace period.
//!
//! Out of scope: the key maths (`envelope::keys::rotate`, pure) and partners' keys (theirs to
//! rotate; they publish a new JWKS and the operator reloads).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::audit::event::{ActorRef, AuditEvent, AuditRecord, KeyRotated};
use crate::clock::Clock;
use crate::envelope::keys::{self, Rotation};
use crate::store::Store;
use crate::timestamp::UnixTime;

/// Why a rotation did not happen. The key file is either rewritten whole or left as it was.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The key file could not be read or written.
    #[error("gateway key file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The key set could not be rotated.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The rotation was written but its audit event was not.
    #[error("keys rotated, but the audit event failed: {0}")]
    Audit(#[from] crate::store::StoreError),
}

/// Rotates the keys in the private JWKS at `path`, the old ones retiring `grace` from now,
/// and records who did it.
pub async fn rotate(
    path: &Path,
    grace: Duration,
    clock: &dyn Clock,
    store: &dyn Store,
    actor: &str,
) -> Result<Rotation, RotationError> {
    let file_err = |reason: String| RotationError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| file_err(e.to_string()))?;
    let now = clock.unix_seconds();
    let stamp = format!(
        "{}-{}",
        time::OffsetDateTime::from_unix_timestamp(now as i64)
            .map(|t| format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()))
            .unwrap_or_default(),
        &uuid::Uuid::now_v7().simple().to_string()[26..]
    );
    let (rotated, rotation) = keys::rotate(&doc, &stamp, now + grace.as_secs())?;
    write_private(path, rotated.to_string().as_bytes()).map_err(|e| file_err(e.to_string()))?;
    store
        .record_event(&AuditRecord::new(
            UnixTime::from_secs(now as i64),
            ActorRef::operator(actor).ok(),
            AuditEvent::KeyRotated(KeyRotated {
                enc: rotation.enc.clone(),
                sig: rotation.sig.clone(),
                retiring: rotation.retiring.clone(),
                retire_at: rotation.retire_at,
            }),
        ))
        .await?;
    Ok(rotation)
}

/// Replaces a private key file durably and readable by its owner only: a temporary file
/// (mode 0600) written and synced, renamed over the old one, the directory synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rotating"));
    {
        // Created 0600 by the open itself: never a moment readable by others.
        let mut file = crate::files::create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
