//! A local, durable spool for audit events the store could not take: a refusal answered
//! while the store was unreachable still happened, and its `rejected` event must reach the
//! audit log. Each event is appended as one JSON line to `<data_dir>/spool/audit.jsonl`
//! (0600, synced before the answer goes out); when the store answers again (the breaker's
//! prober, or the next start) the spool is replayed into the audit log in order and
//! removed. Nothing in it is a payload value: rejection events name only a reason.
//!
//! One replay runs at a time. It first moves what is spooled aside (`audit.replaying`), so
//! appends made while it runs go to a fresh file and wait for the next replay; a line that
//! does not read back is moved to `audit.unreadable` (kept, logged) and the rest go on. A
//! crash between appending the replayed events and trimming the batch could append them
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
            at: record.at.secs(),
            referral_id: record.referral_id.as_ref().map(|i| i.as_str().to_owned()),
            delivery_id: record.delivery_id.as_ref().map(|i| i.as_str().to_owned()),
            actor: record.actor.as_ref().map(ToString::to_string),
            kind: record.event.kind().as_str().to_owned(),
            detail: record.event.detail_json(),
        }
    }

    fn record(&self) -> Option<AuditRecord> {
        Some(AuditRecord {
            at: crate::timestamp::UnixTime::from_secs(self.at),
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
    replaying: tokio::sync::Mutex<()>,
}

impl Spool {
    /// The spool under `data_dir` (created on first append).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("spool").join("audit.jsonl"),
            lock: Mutex::new(()),
            replaying: tokio::sync::Mutex::new(()),
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

    /// The batch a replay is working through.
    fn batch(&self) -> PathBuf {
        self.path.with_file_name("audit.replaying")
    }

    /// How many events wait in the spool (appended, or in a batch being replayed).
    pub fn len(&self) -> usize {
        let _one_writer = self.guard();
        [self.path.clone(), self.batch()]
            .iter()
            .map(|p| {
                std::fs::File::open(p)
                    .map(|f| std::io::BufReader::new(f).lines().count())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends every spooled event to the audit log, in order, then removes what it
    /// replayed. One replay at a time; it stops at the first event the store refuses,
    /// keeping it and everything after it. Returns how many were replayed.
    pub async fn replay(&self, store: &dyn Store) -> Result<usize, SpoolError> {
        let _one_replay = self.replaying.lock().await;
        let mut done = 0;
        // A batch left by an interrupted replay first, then what was appended since.
        for _ in 0..2 {
            let batch = self.batch();
            {
                let _one_writer = self.guard();
                if !batch.exists() {
                    match std::fs::rename(&self.path, &batch) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                        Err(e) => return Err(self.io()(e)),
                    }
                }
            }
            done += self.replay_batch(&batch, store).await?;
        }
        metrics::gauge!(crate::telemetry::AUDIT_SPOOLED).set(self.len() as f64);
        Ok(done)
    }

    /// Replays one batch file; removes it when every line is in the audit log (or set
    /// aside as unreadable), else keeps what is left.
    async fn replay_batch(&self, batch: &Path, store: &dyn Store) -> Result<usize, SpoolError> {
        let io = |source| SpoolError::Io {
            path: batch.to_owned(),
            source,
        };
        let text = match std::fs::read_to_string(batch) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut done = 0;
        let mut failure = None;
        for (i, text) in lines.iter().enumerate() {
            let record = serde_json::from_str::<Line>(text)
                .ok()
                .and_then(|l| l.record());
            let Some(record) = record else {
                self.set_aside(text).map_err(io)?;
                tracing::error!(
                    line = i + 1,
                    "an audit spool line does not read back as an event: moved to audit.unreadable"
                );
                done += 1;
                continue;
            };
            if let Err(e) = store.record_event(&record).await {
                failure = Some(e.into());
                break;
            }
            done += 1;
        }
        let rest = lines.get(done..).unwrap_or_default();
        if rest.is_empty() {
            std::fs::remove_file(batch).map_err(io)?;
        } else {
            let mut text = rest.join("\n");
            text.push('\n');
            let dir = batch.parent().unwrap_or(Path::new("."));
            let name = batch
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            crate::files::write_private_durably(dir, &name, text.as_bytes()).map_err(io)?;
        }
        match failure {
            None => Ok(done),
            Some(e) => Err(e),
        }
    }

    /// Keeps a line that does not read back, for an operator to look at.
    fn set_aside(&self, line: &str) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::files::FILE_MODE)
            .open(self.path.with_file_name("audit.unreadable"))?;
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Rejected;

    #[test]
    fn a_spooled_line_reads_back_as_the_same_event() {
        let record = AuditRecord::new(
            crate::timestamp::UnixTime::from_secs(1_795_000_000),
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

    /// Two replays at once (the breaker's prober and a housekeeping pass) append each event
    /// once; a line that does not read back is set aside, not in the way of the rest.
    #[tokio::test]
    async fn replays_at_once_append_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("refex.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let before = store
            .count_rows(crate::store::Table::AuditEvents)
            .await
            .unwrap();
        let spool = Spool::new(dir.path());
        let record = |n: u64| {
            AuditRecord::new(
                crate::timestamp::UnixTime::from_secs(1_795_000_000 + n as i64),
                None,
                AuditEvent::Rejected(Rejected {
                    reason: format!("r{n}"),
                }),
            )
        };
        for n in 0..50 {
            spool.append(&record(n)).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spool.path)
            .unwrap()
            .write_all(b"{torn\n")
            .unwrap();
        for n in 50..60 {
            spool.append(&record(n)).unwrap();
        }
        let (a, b) = tokio::join!(spool.replay(store.as_ref()), spool.replay(store.as_ref()));
        assert_eq!(
            a.unwrap() + b.unwrap(),
            61,
            "60 events and the torn line, once"
        );
        let after = store
            .count_rows(crate::store::Table::AuditEvents)
            .await
            .unwrap();
        assert_eq!(after - before, 60);
        assert!(spool.is_empty());
        assert!(dir.path().join("spool/audit.unreadable").exists());
        store.close().await;
    }
}
