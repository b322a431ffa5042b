//! A local, durable spool for audit events the store could not take: a refusal answered
//! while the store was unreachable still happened, and its `rejected` event must reach the
//! audit log. Each event is appended as one JSON line to `<data_dir>/spool/audit.jsonl`
//! (0600, synced before the answer goes out); when the store answers again (the breaker's
//! prober, or the next start) the spool is replayed into the audit log in order and
//! removed. Nothing in it is a payload value: rejection events name only a reason.
//!
//! A crash between appending the replayed events and removing the spool could append them
//! twice; the audit log then shows a refusal twice, never loses one.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::audit::event::{ActorRef, AuditEvent, AuditRecord};
use crate::ids::{DeliveryId, ReferralId};
use crate::store::{Store, StoreError};

/// Why the spool could not be written or replayed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool file could not be written or read.
    #[error("audit spool {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the spool does not read back as an audit event (it is kept).
    #[error("audit spool {path}, line {line}: not an audit event this build can read")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
    },
    /// The store refused a replayed event (the rest stay spooled).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One spooled event as a line.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    at: i64,
    referral_id: Option<String>,
    delivery_id: Option<String>,
    actor: Option<String>,
    kind: String,
    detail: String,
}

impl Line {
    fn of(record: &AuditRecord) -> Self {
        Self {
            at: record.at,
            referral_id: record.referral_id.as_ref().map(|i| i.as_str().to_owned()),
            delivery_id: record.delivery_id.as_ref().map(|i| i.as_str().to_owned()),
            actor: record.actor.as_ref().map(ToString::to_string),
            kind: record.event.kind().as_str().to_owned(),
            detail: record.event.detail_json(),
        }
    }

    fn record(&self) -> Option<AuditRecord> {
        Some(AuditRecord {
            at: self.at,
            referral_id: match &self.referral_id {
                Some(s) => Some(ReferralId::parse(s).ok()?),
                None => None,
            },
            delivery_id: match &self.delivery_id {
                Some(s) => Some(DeliveryId::parse(s).ok()?),
                None => None,
            },
            actor: match &self.actor {
                Some(s) => Some(ActorRef::from_str(s).ok()?),
                None => None,
            },
            event: AuditEvent::parse(&self.kind, &self.detail).ok()?,
        })
    }
}

/// The spool of one gateway process.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Spool {
    /// The spool under `data_dir` (created on first append).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("spool").join("audit.jsonl"),
            lock: Mutex::new(()),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
        |source| SpoolError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `record` durably (synced before returning).
    pub fn append(&self, record: &AuditRecord) -> Result<(), SpoolError> {
        let _one_writer = self.guard();
        if let Some(dir) = self.path.parent() {
            crate::files::create_private_dir_all(dir).map_err(self.io())?;
        }
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(crate::files::FILE_MODE)
                .open(&self.path)
                .map_err(self.io())?
        };
        let mut line = serde_json::to_vec(&Line::of(record)).unwrap_or_default();
        line.push(b'\n');
        file.write_all(&line).map_err(self.io())?;
        file.sync_data().map_err(self.io())?;
        metrics::gauge!(crate::telemetry::AUDIT_SPOOLED).increment(1.0);
        Ok(())
    }

    /// How many events wait in the spool.
    pub fn len(&self) -> usize {
        let _one_writer = self.guard();
        std::fs::File::open(&self.path)
            .map(|f| std::io::BufReader::new(f).lines().count())
            .unwrap_or(0)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends every spooled event to the audit log, in order, then removes the spool.
    /// Stops at the first event the store refuses or a line that does not read, keeping it
    /// and everything after it. Returns how many were replayed.
    pub async fn replay(&self, store: &dyn Store) -> Result<usize, SpoolError> {
        let lines: Vec<String> = {
            let _one_writer = self.guard();
            match std::fs::File::open(&self.path) {
                Ok(f) => std::io::BufReader::new(f)
                    .lines()
                    .collect::<Result<_, _>>()
                    .map_err(self.io())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(self.io()(e)),
            }
        };
        let mut done = 0;
        let mut failure = None;
        for (i, text) in lines.iter().enumerate() {
            let record = serde_json::from_str::<Line>(text)
                .ok()
                .and_then(|l| l.record());
            let Some(record) = record else {
                failure = Some(SpoolError::Unreadable {
                    path: self.path.clone(),
                    line: i + 1,
                });
                break;
            };
            if let Err(e) = store.record_event(&record).await {
                failure = Some(e.into());
                break;
            }
            done += 1;
        }
        {
            // Keep what was not replayed, and whatever was appended meanwhile.
            let _one_writer = self.guard();
            let now: Vec<String> = std::fs::File::open(&self.path)
                .map(|f| {
                    std::io::BufReader::new(f)
                        .lines()
                        .map_while(Result::ok)
                        .collect()
                })
                .unwrap_or_default();
            let rest = now.get(done..).unwrap_or_default();
            if rest.is_empty() {
                std::fs::remove_file(&self.path).map_err(self.io())?;
            } else {
                let mut text = rest.join("\n");
                text.push('\n');
                let dir = self.path.parent().unwrap_or(Path::new("."));
                let name = self
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                crate::files::write_private_durably(dir, &name, text.as_bytes())
                    .map_err(self.io())?;
            }
            metrics::gauge!(crate::telemetry::AUDIT_SPOOLED).set(rest.len() as f64);
        }
        match failure {
            None => Ok(done),
            Some(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Rejected;

    #[test]
    fn a_spooled_line_reads_back_as_the_same_event() {
        let record = AuditRecord::new(
            1_795_000_000,
            Some("notts-police/system:case-system".parse().unwrap()),
            AuditEvent::Rejected(Rejected {
                reason: "malformed-envelope".into(),
            }),
        );
        let text = serde_json::to_string(&Line::of(&record)).unwrap();
        let back = serde_json::from_str::<Line>(&text)
            .unwrap()
            .record()
            .unwrap();
        assert_eq!(back, record);
        let mut bad: Line = serde_json::from_str(&text).unwrap();
        bad.kind = "no-such-kind".into();
        assert!(
            bad.record().is_none(),
            "an unreadable line is never a default"
        );
    }
}
