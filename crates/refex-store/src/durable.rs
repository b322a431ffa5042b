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

/// How a file is synced.
type SyncFn = Arc<dyn Fn(&std::path::Path) -> std::io::Result<()> + Send + Sync>;

/// Syncs one SQLite database's write-ahead log for the commits made before it.
pub struct WalSync {
    /// `<database>-wal`.
    wal: PathBuf,
    /// Commits counted so far (each counted after its `COMMIT` returned).
    committed: AtomicU64,
    /// Commits known durable: every commit counted before the last finished sync began.
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

impl WalSync {
    /// The sync for the database file at `database`.
    pub fn for_database(database: &std::path::Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Self::with_sync(PathBuf::from(wal), Arc::new(sync_file))
    }

    /// A sync of `wal` done by `sync`.
    pub fn with_sync(wal: PathBuf, sync: SyncFn) -> Self {
        Self {
            wal,
            committed: AtomicU64::new(0),
            synced: watch::channel(0).0,
            syncing: Mutex::new(()),
            failed: AtomicBool::new(false),
            sync,
        }
    }

    /// Call after a `COMMIT` returned: returns once a sync begun after it has finished.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            self.check()?;
            if *self.synced.borrow() >= mine {
                return Ok(());
            }
            let _turn = self.syncing.lock().await;
            self.check()?;
            if *self.synced.borrow() >= mine {
                return Ok(());
            }
            // Every commit counted by now has written its frames: this sync covers them all.
            let covers = self.committed.load(Ordering::SeqCst);
            let wal = self.wal.clone();
            let sync = self.sync.clone();
            let done = tokio::task::spawn_blocking(move || sync(&wal))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(e) = done {
                self.failed.store(true, Ordering::SeqCst);
                tracing::error!(error = %e, "syncing the store's write-ahead log failed; refusing further writes");
                return Err(Self::failure());
            }
            self.synced.send_modify(|s| *s = (*s).max(covers));
        }
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
        StoreError::Unavailable("the store's write-ahead log could not be synced".into())
    }
}

/// `fdatasync` of the file at `path`, opened afresh so a WAL SQLite recreated is the one
/// synced. A WAL that is gone was removed after a complete checkpoint, which synced the
/// database: nothing is left to sync.
fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
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
                s.durable().await.expect("durable");
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
                    s.durable().await.expect("durable");
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
                Err(std::io::Error::other("EIO"))
            }),
        );
        assert!(matches!(s.durable().await, Err(StoreError::Unavailable(_))));
        assert!(matches!(s.durable().await, Err(StoreError::Unavailable(_))));
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
        s.durable().await.expect("nothing to sync");
        std::fs::write(dir.path().join("gone.db-wal"), b"frames").expect("write");
        s.durable().await.expect("synced");
    }
}
