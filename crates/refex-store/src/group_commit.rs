//! Group commit: concurrent writes share one durable transaction.
//!
//! One committer task per kind of write (acceptances; inbox fetches and acknowledgements)
//! per store takes jobs from a queue, gathers those already
//! waiting (and, under load, those arriving within a short bounded window), commits them in
//! one transaction with one fsync, and only then answers each caller. A caller's `202` is
//! therefore still sent after its referral is durable; what is shared is the fsync.
//!
//! Two batches are in flight at once: a batch is gathered when the writer is free (its
//! [`Turn`] begins), and its turn ends at its `COMMIT`, so the next batch is gathered and
//! written while this one waits to be durable (on the embedded store, the write-ahead log's
//! sync: see [`crate::durable`]). An acceptance arriving under load therefore waits for the
//! statements of the batch ahead of it, not for that batch's fsync too.
//!
//! Out of scope: what a batch writes (the backend's `accept_batch`, where each acceptance
//! sits in its own savepoint so that one refused acceptance never takes the others down).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::StoreError;
use super::records::{AcceptOutcome, Acceptance};

/// Most acceptances one transaction commits: bounds the transaction's size and the time
/// the audit head stays locked, while already sharing one fsync among many referrals (the
/// gain flattens well before this).
pub const MAX_BATCH_CEILING: usize = 1024;

/// Longest batching window accepted: past a few milliseconds the window costs latency and
/// buys no throughput (one fsync is ~0.25 ms on an SSD, a few ms on slow disks).
pub const MAX_WINDOW: Duration = Duration::from_millis(20);

/// How acceptances are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Under load (the previous batch had company, or several are already waiting), how
    /// long the committer waits for more acceptances after the first. With no load the first
    /// commits at once, so a lone referral never waits for the window.
    pub window: Duration,
    /// Most acceptances in one transaction (1 turns group commit off).
    pub max_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(1),
            max_batch: 128,
        }
    }
}

impl Options {
    /// The options clamped to their ceilings (at least one acceptance per batch).
    pub fn clamped(self) -> Self {
        Self {
            window: self.window.min(MAX_WINDOW),
            max_batch: self.max_batch.clamp(1, MAX_BATCH_CEILING),
        }
    }
}

/// Batches of one committer in flight at once: one writing, one waiting to be durable.
const IN_FLIGHT: usize = 2;

/// A batch's turn at the writer: the committer gathers the next batch once it ends. The
/// batch's writer ends it when its transaction has committed ([`Turn::end`]; calling it
/// again does nothing), or it ends when dropped.
#[derive(Clone, Debug)]
pub struct Turn(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Turn {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }

    /// Ends the turn: the writer is free for the next batch.
    pub fn end(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

/// One write waiting for its commit.
struct Job<W, R> {
    work: W,
    done: oneshot::Sender<Result<R, StoreError>>,
}

/// The queue in front of a store's committer task for writes `W` answered with `R`.
pub struct GroupCommit<W, R> {
    jobs: mpsc::UnboundedSender<Job<W, R>>,
}

/// Acceptances, committed together.
pub type Acceptances = GroupCommit<Acceptance, AcceptOutcome>;

impl<W, R> Clone for GroupCommit<W, R> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<W, R> std::fmt::Debug for GroupCommit<W, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

/// Which metrics a committer's batches count under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meter {
    /// Acceptances: the commit metrics operators and the bench read.
    Acceptances,
    /// Inbox fetches and acknowledgements: counted apart, so referrals per commit stays
    /// what it says.
    Inbox,
}

impl<W: Send + 'static, R: Send + 'static> GroupCommit<W, R> {
    /// Starts the committer task. `commit` writes one batch in one transaction, ends its
    /// [`Turn`] when that transaction has committed, and returns one result per job, in
    /// order, once it is durable; the task ends when the last handle is dropped.
    pub fn spawn<F, Fut>(options: Options, meter: Meter, commit: F) -> Self
    where
        F: Fn(Vec<W>, Turn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, StoreError>>> + Send + 'static,
    {
        Self::spawn_placed(options, meter, Placement::Runtime, commit)
    }

    /// As [`GroupCommit::spawn`], its batches run where `placement` says.
    pub fn spawn_placed<F, Fut>(
        options: Options,
        meter: Meter,
        placement: Placement,
        commit: F,
    ) -> Self
    where
        F: Fn(Vec<W>, Turn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, StoreError>>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(queue, options.clamped(), meter, placement, commit));
        Self { jobs }
    }

    /// Queues a write and waits until the transaction holding it has committed (or
    /// failed).
    pub async fn submit(&self, work: W) -> Result<R, StoreError> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job { work, done })
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("store closed".into())))
    }

    /// Queues several writes at once, so that they share a batch where its ceiling allows,
    /// and waits until each has committed (or failed): one result per write, in order.
    pub async fn submit_all(&self, works: Vec<W>) -> Vec<Result<R, StoreError>> {
        let closed = || Err(StoreError::Unavailable("store closed".into()));
        let mut waiting = Vec::with_capacity(works.len());
        for work in works {
            let (done, result) = oneshot::channel();
            waiting.push(self.jobs.send(Job { work, done }).ok().map(|()| result));
        }
        let mut results = Vec::with_capacity(waiting.len());
        for result in waiting {
            results.push(match result {
                Some(result) => result.await.unwrap_or_else(|_| closed()),
                None => closed(),
            });
        }
        results
    }
}

/// Where a committer's batches run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// As tasks on the runtime, beside the requests (PostgreSQL: its connections' sockets
    /// are the runtime's, and a batch polled elsewhere would be woken through a worker, one
    /// more hop per statement; `refex bench` measured commits of one referral at 1.5 → 2.4
    /// ms).
    Runtime,
    /// On [`BatchThreads`] (SQLite, whose statements run on its own worker thread).
    Threads,
}

async fn run<W, R, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Job<W, R>>,
    options: Options,
    meter: Meter,
    placement: Placement,
    commit: F,
) where
    W: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<W>, Turn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<R, StoreError>>> + Send + 'static,
{
    let commit = Arc::new(commit);
    let writer = Arc::new(Semaphore::new(1));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let threads = match placement {
        Placement::Threads => BatchThreads::start(meter),
        Placement::Runtime => BatchThreads::none(),
    };
    let mut loaded = false;
    while let Some(first) = queue.recv().await {
        // Neither semaphore is ever closed.
        let Ok(flight) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let Ok(turn) = writer.clone().acquire_owned().await else {
            break;
        };
        // Gathered now, when the writer is free: everything that arrived while the batch
        // ahead was written joins this one.
        let batch = gather(&mut queue, first, options, loaded).await;
        loaded = batch.len() > 1;
        let commit = commit.clone();
        threads.run(Box::pin(async move {
            let turn = Turn::new(turn);
            finish(batch, meter, move |work| commit(work, turn)).await;
            drop(flight);
        }));
    }
}

/// A batch's work, run to its end on a batch thread.
type BatchFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The threads a committer's batches run on, one per batch in flight: each polls its
/// batch's future itself (`Handle::block_on`: the runtime's timers, I/O and spawned tasks
/// stay the runtime's), so the dozen statement round trips of a commit are not each queued
/// behind the reactor's requests (issue 20: the store stage held the acceptance p99; `refex
/// bench` on SQLite, same-hour A/B: a commit 15–30 % shorter at every load, one referral's
/// 1.84–1.94 → 1.35–1.58 ms). With no thread (none could be started), a batch runs as a task
/// on the runtime.
struct BatchThreads {
    batches: Option<std::sync::mpsc::Sender<BatchFuture>>,
}

impl BatchThreads {
    /// No threads: batches run as tasks on the runtime.
    fn none() -> Self {
        Self { batches: None }
    }

    fn start(meter: Meter) -> Self {
        let handle = tokio::runtime::Handle::current();
        let (batches, queue) = std::sync::mpsc::channel::<BatchFuture>();
        let queue = Arc::new(Mutex::new(queue));
        let name = match meter {
            Meter::Acceptances => "refex-commit",
            Meter::Inbox => "refex-inbox",
        };
        let mut started = 0;
        for _ in 0..IN_FLIGHT {
            let (handle, queue) = (handle.clone(), queue.clone());
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next batch.
                        let next = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(batch) = next else { return };
                        // A batch that panics has dropped its callers' answers (each gets
                        // "store closed"), its turn and its place in flight; the thread
                        // goes on with the next batch.
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            handle.block_on(batch)
                        }));
                        if ran.is_err() {
                            tracing::error!("a group commit's batch panicked; its writes were answered as failed");
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "no thread for the store's batches; they run on the runtime")
                }
            }
        }
        if started == 0 {
            return Self::none();
        }
        Self {
            batches: Some(batches),
        }
    }

    fn run(&self, batch: BatchFuture) {
        let batch = match &self.batches {
            Some(threads) => match threads.send(batch) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(batch)) => batch,
            },
            None => batch,
        };
        tokio::spawn(batch);
    }
}

/// Commits one gathered batch and answers each of its callers.
async fn finish<W, R, Fut>(batch: Vec<Job<W, R>>, meter: Meter, commit: impl FnOnce(Vec<W>) -> Fut)
where
    Fut: Future<Output = Vec<Result<R, StoreError>>>,
{
    let (work, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.work, j.done)).unzip();
    let count = work.len();
    let started = std::time::Instant::now();
    let results = commit(work).await;
    match meter {
        Meter::Acceptances => {
            metrics::histogram!(crate::metric::STORE_COMMIT_DURATION)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(crate::metric::STORE_COMMITS).increment(1);
            metrics::counter!(crate::metric::STORE_ACCEPTANCES).increment(count as u64);
            metrics::histogram!(crate::metric::STORE_BATCH_SIZE).record(count as f64);
        }
        Meter::Inbox => {
            metrics::counter!(crate::metric::STORE_INBOX_BATCHES).increment(1);
            metrics::counter!(crate::metric::STORE_INBOX_WRITES).increment(count as u64);
        }
    }
    let mut results = results.into_iter();
    for waiter in waiters {
        let result = results.next().unwrap_or_else(|| {
            Err(StoreError::Query {
                op: "group commit",
                reason: "batch returned too few results".into(),
            })
        });
        // A caller that went away (its connection closed) needs no answer; its
        // write is committed all the same.
        let _ = waiter.send(result);
    }
}

/// The first job plus whatever is already queued, and under load whatever arrives within
/// the window, up to the batch ceiling.
async fn gather<W, R>(
    queue: &mut mpsc::UnboundedReceiver<Job<W, R>>,
    first: Job<W, R>,
    options: Options,
    loaded: bool,
) -> Vec<Job<W, R>> {
    let mut batch = vec![first];
    while batch.len() < options.max_batch {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    let busy = loaded || batch.len() > 1;
    if !busy || options.window.is_zero() {
        return batch;
    }
    let deadline = tokio::time::Instant::now() + options.window;
    while batch.len() < options.max_batch {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(job)) => batch.push(job),
            _ => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn acceptance(jti: &str) -> Acceptance {
        use refex_core::audit::event::ConsentRecord;
        use refex_core::intake::claims::{InformedStatus, LawfulBasis, SubjectInformed};
        Acceptance {
            referral: crate::records::ReferralRecord {
                id: refex_core::ids::ReferralId::mint(&refex_core::ids::Uuid7Ids),
                sender: "s".parse().expect("id"),
                sender_ref: "r".into(),
                referral_type: "t".parse().expect("type"),
                received_at: refex_core::timestamp::UnixTime::EPOCH,
                lawful_basis: LawfulBasis::uk_gdpr(
                    refex_core::lawful::Article6::PublicTask,
                    refex_core::lawful::Article9::SubstantialPublicInterest,
                    None,
                ),
                consent: ConsentRecord {
                    status: refex_core::intake::ConsentStatus::Given,
                    override_: None,
                },
                subject_informed: SubjectInformed {
                    status: InformedStatus::Yes,
                    reason: None,
                },
                supersedes: None,
                justification_sealed: None,
            },
            jti: format!("{jti}-padding").parse().unwrap(),
            digest: String::new(),
            deliveries: vec![],
            hold: None,
            events: vec![],
            subjects: vec![],
            withdraws: None,
        }
    }

    /// A committer that records batch sizes, refuses jtis starting with `bad`, and commits
    /// only as the test hands out permits.
    fn recording(
        options: Options,
    ) -> (
        Acceptances,
        Arc<Mutex<Vec<usize>>>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (s, g) = (sizes.clone(), gate.clone());
        let gc = GroupCommit::spawn(
            options,
            Meter::Acceptances,
            move |batch: Vec<Acceptance>, turn: Turn| {
                let (s, g) = (s.clone(), g.clone());
                async move {
                    // The turn ends when the future does: batches one after another.
                    let _turn = turn;
                    g.acquire().await.expect("gate").forget();
                    s.lock().expect("lock").push(batch.len());
                    batch
                        .iter()
                        .map(|a| {
                            if a.jti.as_str().starts_with("bad") {
                                Ok(AcceptOutcome::Replay(None))
                            } else {
                                Ok(AcceptOutcome::Accepted)
                            }
                        })
                        .collect()
                }
            },
        );
        (gc, sizes, gate)
    }

    /// Queues `jtis` one by one (the first commit is held at the gate while the rest queue
    /// behind it), then opens the gate and collects every result.
    async fn run_all(
        gc: &Acceptances,
        gate: &tokio::sync::Semaphore,
        jtis: Vec<String>,
    ) -> Vec<Result<AcceptOutcome, StoreError>> {
        let mut tasks = Vec::new();
        for jti in jtis {
            let gc = gc.clone();
            tasks.push(tokio::spawn(
                async move { gc.submit(acceptance(&jti)).await },
            ));
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        results
    }

    #[tokio::test]
    async fn waiting_acceptances_share_a_commit_and_each_gets_its_own_result() {
        let (gc, sizes, gate) = recording(Options {
            window: Duration::ZERO,
            max_batch: 64,
        });
        let jtis = (0..10)
            .map(|i| {
                if i == 5 {
                    "bad-5".to_owned()
                } else {
                    format!("ok-{i}")
                }
            })
            .collect();
        let results = run_all(&gc, &gate, jtis).await;
        assert!(matches!(results[5], Ok(AcceptOutcome::Replay(None))));
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Ok(AcceptOutcome::Accepted)))
                .count(),
            9
        );
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.len() < 10, "no batching happened: {sizes:?}");
    }

    /// On threads, every batch is polled on a committer thread of its own, in order, and
    /// every caller is answered; in-flight batches finish after the last handle is gone.
    #[tokio::test]
    async fn batches_on_threads_run_there_and_answer_everyone() {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let seen = threads.clone();
        let gc: Acceptances = GroupCommit::spawn_placed(
            Options {
                window: Duration::ZERO,
                max_batch: 4,
            },
            Meter::Acceptances,
            Placement::Threads,
            move |batch: Vec<Acceptance>, turn: Turn| {
                let seen = seen.clone();
                async move {
                    let name = std::thread::current().name().map(str::to_owned);
                    seen.lock().expect("lock").push(name);
                    // Something the runtime drives, from a thread that is not its own.
                    tokio::task::yield_now().await;
                    tokio::spawn(async {})
                        .await
                        .expect("spawned on the runtime");
                    turn.end();
                    batch.iter().map(|_| Ok(AcceptOutcome::Accepted)).collect()
                }
            },
        );
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.submit(acceptance(&format!("ok-{i}"))).await })
            })
            .collect();
        drop(gc);
        for t in tasks {
            assert!(matches!(
                t.await.expect("task"),
                Ok(AcceptOutcome::Accepted)
            ));
        }
        let threads = threads.lock().expect("lock").clone();
        assert!(threads.len() >= 5, "{threads:?}");
        assert!(
            threads.iter().all(|n| n.as_deref() == Some("refex-commit")),
            "{threads:?}"
        );
    }

    /// A batch that panics fails its own callers ("store closed") and nothing else: the
    /// threads, more batches than there are of them later, still commit.
    #[tokio::test]
    async fn a_batch_that_panics_fails_its_callers_and_the_threads_go_on() {
        let gc: Acceptances = GroupCommit::spawn_placed(
            Options {
                window: Duration::ZERO,
                max_batch: 1,
            },
            Meter::Acceptances,
            Placement::Threads,
            move |batch: Vec<Acceptance>, turn: Turn| async move {
                let _turn = turn;
                assert!(!batch[0].jti.as_str().starts_with("boom"), "a faulty batch");
                let on_thread = std::thread::current().name() == Some("refex-commit");
                batch
                    .iter()
                    .map(|_| {
                        Ok(if on_thread {
                            AcceptOutcome::Accepted
                        } else {
                            AcceptOutcome::Replay(None)
                        })
                    })
                    .collect()
            },
        );
        for jti in ["boom-1", "boom-2", "boom-3"] {
            let failed = gc.submit(acceptance(jti)).await;
            assert!(
                matches!(failed, Err(StoreError::Unavailable(_))),
                "{failed:?}"
            );
        }
        for jti in ["ok-1", "ok-2", "ok-3"] {
            let ok = gc.submit(acceptance(jti)).await;
            assert!(matches!(ok, Ok(AcceptOutcome::Accepted)), "{ok:?}");
        }
    }

    #[tokio::test]
    async fn writes_queued_together_share_a_batch_and_answer_in_order() {
        let (gc, sizes, gate) = recording(Options {
            window: Duration::ZERO,
            max_batch: 4,
        });
        gate.add_permits(1000);
        let jtis = ["ok-0", "bad-1", "ok-2", "ok-3", "bad-4", "ok-5"];
        let results = gc
            .submit_all(jtis.iter().map(|j| acceptance(j)).collect())
            .await;
        let replays: Vec<bool> = results
            .iter()
            .map(|r| matches!(r, Ok(AcceptOutcome::Replay(None))))
            .collect();
        assert_eq!(replays, [false, true, false, false, true, false]);
        assert!(results.iter().all(Result::is_ok));
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 6, "{sizes:?}");
        assert!(
            sizes.len() <= 3 && sizes.iter().all(|&n| n <= 4),
            "{sizes:?}"
        );
    }

    #[tokio::test]
    async fn the_batch_ceiling_holds() {
        let (gc, sizes, gate) = recording(Options {
            window: Duration::ZERO,
            max_batch: 3,
        });
        let results = run_all(&gc, &gate, (0..10).map(|i| format!("ok-{i}")).collect()).await;
        assert!(results.iter().all(Result::is_ok));
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
        assert!(sizes.contains(&3), "{sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_the_window_gathers_late_arrivals() {
        let (gc, sizes, gate) = recording(Options {
            window: Duration::from_millis(5),
            max_batch: 64,
        });
        gate.add_permits(1000);
        // Two at once: the committer is "loaded" and waits out the window for more.
        let (a, b) = (gc.clone(), gc.clone());
        let t1 = tokio::spawn(async move { a.submit(acceptance("ok-1")).await });
        let t2 = tokio::spawn(async move { b.submit(acceptance("ok-2")).await });
        t1.await.expect("task").expect("ok");
        t2.await.expect("task").expect("ok");
        let c = gc.clone();
        let late = tokio::spawn(async move { c.submit(acceptance("ok-3")).await });
        tokio::time::advance(Duration::from_millis(2)).await;
        let d = gc.clone();
        let later = tokio::spawn(async move { d.submit(acceptance("ok-4")).await });
        late.await.expect("task").expect("ok");
        later.await.expect("task").expect("ok");
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 4, "{sizes:?}");
        assert_eq!(
            sizes.last(),
            Some(&2),
            "the window joined 3 and 4: {sizes:?}"
        );
    }

    /// The next batch is written while the one before waits to be durable, and at most two
    /// are in flight.
    #[tokio::test]
    async fn the_next_batch_is_written_while_one_waits_to_be_durable() {
        let durable = Arc::new(tokio::sync::Semaphore::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (d, l) = (durable.clone(), log.clone());
        let gc: Acceptances = GroupCommit::spawn(
            Options {
                window: Duration::ZERO,
                max_batch: 1,
            },
            Meter::Acceptances,
            move |batch: Vec<Acceptance>, turn: Turn| {
                let (d, l) = (d.clone(), l.clone());
                async move {
                    let jti = batch[0].jti.to_string();
                    l.lock().expect("log").push(format!("commit {jti}"));
                    turn.end();
                    d.acquire().await.expect("sync").forget();
                    vec![Ok(AcceptOutcome::Accepted)]
                }
            },
        );
        let tasks: Vec<_> = ["one", "two", "three"]
            .into_iter()
            .map(|j| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.submit(acceptance(j)).await })
            })
            .collect();
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        // Two committed, neither durable yet; the third waits for a place in flight.
        assert_eq!(log.lock().expect("log").len(), 2, "{:?}", log.lock());
        durable.add_permits(3);
        for t in tasks {
            t.await.expect("task").expect("accepted");
        }
        assert_eq!(log.lock().expect("log").len(), 3);
    }

    #[test]
    fn options_are_clamped() {
        let o = Options {
            window: Duration::from_secs(5),
            max_batch: 0,
        }
        .clamped();
        assert_eq!(o.window, MAX_WINDOW);
        assert_eq!(o.max_batch, 1);
    }
}
