//! Durability off the writer's path (embedded store): a commit is made durable by syncing
//! SQLite's write-ahead log after the writer has moved on, and its caller is answered only
//! then.
//!
//! The writer connection runs with `synchronous=NORMAL`: its `COMMIT` appends the
//! transaction's frames to the WAL without waiting for the disk, and SQLite still syncs the
//! WAL before each checkpoint and the database after it, so the file is never inconsistent.
//! What `NORMAL` gives up (a commit may be lost at a power cut) is given back here: after
//! `COMMIT` returns, [`WalSync::durable`] waits until an `fdatasync` of the WAL that started
//! after that commit has finished. One sync covers every commit before it (the WAL is
//! appended in order, and recovery keeps only an unbroken prefix of its frames), so commits
//! waiting together share one; and while one batch waits for its sync the writer is already
//! running the next batch's statements (issue 20: two batches in flight).
//!
//! Everything answered as written is therefore as durable as under `synchronous=FULL`. What
//! changes is what a *reader* may see: a transaction is visible to other connections from
//! its `COMMIT`, up to one sync (a fraction of a millisecond) before it is durable. Every
//! write that depends on it (a fetch of a delivery, an acknowledgement) is itself answered
//! only after a later sync, which covers it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Mutex, watch};

use crate::StoreError;

/// Why a sync did not happen.
#[derive(Debug)]
pub enum SyncFailure {
    /// The log could not be opened (too many open files, permissions): nothing is known
    /// lost, and a later sync covers this commit too.
    Open(std::io::Error),
    /// `fdatasync` failed: the kernel may have dropped pages it could not write.
    Sync(std::io::Error),
}

/// How a file is synced.
pub type SyncFn = Arc<dyn Fn(&std::path::Path) -> Result<(), SyncFailure> + Send + Sync>;

/// Syncs one SQLite database's write-ahead log for the commits made before it.
///
/// Commits on the writer are numbered in the order they happen (the writer is one
/// connection): a commit takes its [`Ticket`] just before `COMMIT` and is marked done when
/// `COMMIT` returns. A sync covers every commit done when it began.
pub struct WalSync {
    /// `<database>-wal`.
    wal: PathBuf,
    /// The last ticket handed out.
    begun: AtomicU64,
    /// The last ticket whose `COMMIT` has returned (or failed, or was abandoned).
    done: watch::Sender<u64>,
    /// Every ticket up to this one is durable.
    synced: watch::Sender<u64>,
    /// One sync at a time; those waiting behind it usually find themselves covered.
    syncing: Mutex<()>,
    /// Set when a sync failed: after a failed `fdatasync` the kernel may have dropped the
    /// pages it could not write, so nothing later can be promised durable (fail-stop).
    failed: AtomicBool,
    /// The sync itself (a seam: tests count and order syncs).
    sync: SyncFn,
}

impl std::fmt::Debug for WalSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalSync").field("wal", &self.wal).finish()
    }
}

/// A commit's place in the writer's order; marks the commit done when dropped (after its
/// `COMMIT` returned, failed, or was abandoned with its request).
#[derive(Debug)]
pub struct Ticket<'a> {
    sync: &'a WalSync,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.sync.done.send_modify(|d| *d = (*d).max(self.number));
    }
}

impl WalSync {
    /// The sync for the database file at `database`.
    pub fn for_database(database: &std::path::Path) -> Self {
        Self::with_sync(wal_of(database), Arc::new(sync_file))
    }

    /// A sync of `wal` done by `sync`.
    pub fn with_sync(wal: PathBuf, sync: SyncFn) -> Self {
        Self {
            wal,
            begun: AtomicU64::new(0),
            done: watch::channel(0).0,
            synced: watch::channel(0).0,
            syncing: Mutex::new(()),
            failed: AtomicBool::new(false),
            sync,
        }
    }

    /// Take just before a write commits on the writer (no other can commit meanwhile);
    /// drop once its `COMMIT` has returned, then wait for [`WalSync::durable`].
    pub fn ticket(&self) -> Ticket<'_> {
        Ticket {
            sync: self,
            number: self.begun.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }

    /// Call once the ticket's `COMMIT` has returned: marks it done and returns once it is
    /// durable.
    pub async fn after(&self, ticket: Ticket<'_>) -> Result<(), StoreError> {
        let number = ticket.number;
        drop(ticket);
        self.durable(number).await
    }

    /// Returns once the commit numbered `number` (its ticket dropped) is durable: a sync
    /// begun after it has finished.
    async fn durable(&self, number: u64) -> Result<(), StoreError> {
        loop {
            self.check()?;
            if *self.synced.borrow() >= number {
                return Ok(());
            }
            let _turn = self.syncing.lock().await;
            self.check()?;
            if *self.synced.borrow() >= number {
                return Ok(());
            }
            // Every commit done by now has written its frames: this sync covers them all.
            let covers = *self.done.borrow();
            let wal = self.wal.clone();
            let sync = self.sync.clone();
            let outcome = tokio::task::spawn_blocking(move || sync(&wal))
                .await
                .unwrap_or_else(|e| Err(SyncFailure::Sync(std::io::Error::other(e.to_string()))));
            match outcome {
                Ok(()) => self.synced.send_modify(|s| *s = (*s).max(covers)),
                Err(SyncFailure::Open(e)) => {
                    tracing::warn!(error = %e, "the store's write-ahead log could not be opened to sync it");
                    return Err(StoreError::Unavailable(
                        "the store's write-ahead log could not be opened to sync it".into(),
                    ));
                }
                Err(SyncFailure::Sync(e)) => {
                    self.failed.store(true, Ordering::SeqCst);
                    tracing::error!(error = %e, "syncing the store's write-ahead log failed; refusing further writes");
                    return Err(Self::failure());
                }
            }
        }
    }

    /// Returns once every commit that has begun by now is durable: for an answer drawn from
    /// what a reader sees (a reader sees a commit from its `COMMIT`, before its sync), such as
    /// "this referral was accepted before".
    pub async fn barrier(&self) -> Result<(), StoreError> {
        let target = self.begun.load(Ordering::SeqCst);
        let mut done = self.done.subscribe();
        // A ticket is always dropped, so this ends; the sender lives as long as `self`.
        let _ = done.wait_for(|d| *d >= target).await;
        self.durable(target).await
    }

    /// Whether writes can still be made durable (no sync has failed).
    pub fn check(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            Err(Self::failure())
        } else {
            Ok(())
        }
    }

    fn failure() -> StoreError {
        StoreError::Stopped("its write-ahead log could not be synced".into())
    }
}

/// The write-ahead log of the SQLite database at `database` (`<database>-wal`).
pub fn wal_of(database: &std::path::Path) -> PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// `fdatasync` of the file at `path`, opened afresh so a WAL SQLite recreated is the one
/// synced. A WAL that is gone was removed after a complete checkpoint, which synced the
/// database: nothing is left to sync (the writer's connection is kept open, so SQLite does
/// not remove it while the store runs).
fn sync_file(path: &std::path::Path) -> Result<(), SyncFailure> {
    match std::fs::File::open(path) {
        Ok(f) => f.sync_data().map_err(SyncFailure::Sync),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SyncFailure::Open(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    type Log = Arc<StdMutex<Vec<&'static str>>>;

    /// A sync that logs when it starts and ends, and holds each sync until released.
    fn logged() -> (Arc<WalSync>, Log, Arc<std::sync::Barrier>) {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let (l, g) = (log.clone(), gate.clone());
        let s = WalSync::with_sync(
            PathBuf::from("unused"),
            Arc::new(move |_: &std::path::Path| {
                l.lock().expect("log").push("sync started");
                g.wait();
                l.lock().expect("log").push("sync done");
                Ok(())
            }),
        );
        (Arc::new(s), log, gate)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_answered_only_after_a_sync_that_began_after_it() {
        let (s, log, gate) = logged();
        // Commit 1 starts a sync and is held inside it.
        let first = {
            let (s, log) = (s.clone(), log.clone());
            tokio::spawn(async move {
                s.after(s.ticket()).await.expect("durable");
                log.lock().expect("log").push("first answered");
            })
        };
        while !log.lock().expect("log").contains(&"sync started") {
            tokio::task::yield_now().await;
        }
        // Commits 2 and 3 arrive while that sync runs: it does not cover them.
        let later: Vec<_> = (0..2)
            .map(|_| {
                let (s, log) = (s.clone(), log.clone());
                tokio::spawn(async move {
                    s.after(s.ticket()).await.expect("durable");
                    log.lock().expect("log").push("later answered");
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!log.lock().expect("log").contains(&"later answered"));
        gate.wait(); // the first sync ends
        first.await.expect("task");
        gate.wait(); // one more sync, for both later commits
        for t in later {
            t.await.expect("task");
        }
        let log = log.lock().expect("log").clone();
        let at = |what: &str, nth: usize| {
            log.iter()
                .enumerate()
                .filter(|(_, l)| **l == what)
                .nth(nth)
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("no {what} #{nth} in {log:?}"))
        };
        assert_eq!(log.len(), 7, "two syncs, three answers: {log:?}");
        assert!(at("first answered", 0) > at("sync done", 0), "{log:?}");
        assert!(at("sync started", 1) > at("sync done", 0), "{log:?}");
        assert!(at("later answered", 0) > at("sync done", 1), "{log:?}");
        assert!(at("later answered", 1) > at("sync done", 1), "{log:?}");
    }

    #[tokio::test]
    async fn after_a_failed_sync_nothing_is_called_durable() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let s = WalSync::with_sync(
            PathBuf::from("unused"),
            Arc::new(move |_: &std::path::Path| {
                c.fetch_add(1, Ordering::SeqCst);
                Err(SyncFailure::Sync(std::io::Error::other("EIO")))
            }),
        );
        assert!(matches!(
            s.after(s.ticket()).await,
            Err(StoreError::Stopped(_))
        ));
        assert!(matches!(
            s.after(s.ticket()).await,
            Err(StoreError::Stopped(_))
        ));
        assert!(matches!(s.barrier().await, Err(StoreError::Stopped(_))));
        assert!(matches!(s.check(), Err(StoreError::Stopped(_))));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no sync retried after a failure"
        );
    }

    #[tokio::test]
    async fn a_missing_log_was_checkpointed_away() {
        let dir = tempfile::tempdir().expect("dir");
        let s = WalSync::for_database(&dir.path().join("gone.db"));
        s.after(s.ticket()).await.expect("nothing to sync");
        std::fs::write(dir.path().join("gone.db-wal"), b"frames").expect("write");
        s.after(s.ticket()).await.expect("synced");
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_opened_fails_the_write_but_stops_nothing() {
        let fail = Arc::new(AtomicBool::new(true));
        let f = fail.clone();
        let s = WalSync::with_sync(
            PathBuf::from("unused"),
            Arc::new(move |_: &std::path::Path| {
                if f.load(Ordering::SeqCst) {
                    Err(SyncFailure::Open(std::io::Error::other("EMFILE")))
                } else {
                    Ok(())
                }
            }),
        );
        assert!(s.after(s.ticket()).await.is_err());
        assert!(s.check().is_ok(), "not a failed sync");
        fail.store(false, Ordering::SeqCst);
        s.after(s.ticket())
            .await
            .expect("the next sync covers both");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_barrier_waits_for_a_commit_in_progress_and_its_sync() {
        let syncs = Arc::new(AtomicU64::new(0));
        let c = syncs.clone();
        let s = Arc::new(WalSync::with_sync(
            PathBuf::from("unused"),
            Arc::new(move |_: &std::path::Path| {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        ));
        // Nothing committed: nothing to wait for, no sync.
        s.barrier().await.expect("barrier");
        assert_eq!(syncs.load(Ordering::SeqCst), 0);
        let ticket = s.ticket(); // a COMMIT under way: readers may already see it
        let barrier = {
            let s = s.clone();
            tokio::spawn(async move { s.barrier().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !barrier.is_finished(),
            "the barrier waits for the commit in progress"
        );
        drop(ticket);
        barrier.await.expect("task").expect("barrier");
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "and for a sync after it");
    }
}
