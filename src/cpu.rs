//! The threads that do submissions' CPU work (JOSE above all; parsing, validation,
//! minimisation): one per core, jobs taken first come first served.
//!
//! Each thread runs at a lower scheduling priority than the rest of the process (Linux's
//! per-thread nice value, raised by [`NICENESS`]; raising it needs no privilege). The rest is
//! what finishes work already begun: the store's writer, the write-ahead log's sync, the
//! reactor answering requests. Under load, a referral already prepared is then committed and
//! answered before the cores prepare the next, instead of every stage being time-sliced
//! against every other and each referral finishing late (issue 20: the acceptance p99 at 70 %
//! of the maximum rate). With no other work runnable the threads still get whole cores: a
//! nice value only weighs threads against each other when they compete.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much lower than the process's other threads a CPU thread runs (Linux nice levels: each
/// level is ~1.25× less CPU when competing; 5 is ~3× less). 10 measured a few per cent more
/// throughput in `refex bench`, but it would let a flood of TLS handshakes, which the reactor
/// does at normal priority, take ~90 % of the cores from submissions (two reactor threads
/// against two CPU threads); at 5 submissions keep ~25 %, against ~50 % at equal priority.
pub const NICENESS: i32 = 5;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job produced no result.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// No CPU thread is running and none could be started (a process or thread limit):
    /// the job was not run, and a later one tries to start the threads again.
    #[error("no CPU thread could be started")]
    NoThread,
    /// The job panicked (or its thread ended before answering).
    #[error("a CPU job failed before producing its result")]
    Failed,
}

/// The CPU threads and their one first-come-first-served queue. The threads start with the
/// first job (offline commands that submit nothing start none); while fewer than asked for
/// are running (a thread limit was met), each job tries to start the rest.
#[derive(Debug)]
pub struct CpuPool {
    threads: usize,
    niceness: i32,
    state: Mutex<Started>,
}

/// How often starting missing threads is tried again (each try that fails is logged).
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The queue and the threads taking from it.
#[derive(Debug)]
struct Started {
    queue: mpsc::Sender<Job>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    running: usize,
    /// When starting a thread last failed.
    failed_at: Option<Instant>,
}

impl CpuPool {
    /// A pool of `threads` threads (at least one), each lowering its priority by `niceness`.
    pub fn new(threads: usize, niceness: i32) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>();
        Self {
            threads: threads.max(1),
            niceness,
            state: Mutex::new(Started {
                queue,
                jobs: Arc::new(Mutex::new(jobs)),
                running: 0,
                failed_at: None,
            }),
        }
    }

    /// One thread per core this process may use, at [`NICENESS`].
    pub fn per_core() -> Self {
        Self::new(
            std::thread::available_parallelism().map_or(1, usize::from),
            NICENESS,
        )
    }

    /// How many threads the pool runs once started.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the next free CPU thread, after every job queued before it has started.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CpuError> {
        let (answer, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller that stopped waiting (its client hung up or timed out) is not worked
            // for: under overload, clients that give up and retry would otherwise fill the
            // queue with work nobody will read.
            if answer.is_closed() {
                return;
            }
            // A panic is the job's failure, not the thread's: the caller sees `Failed` (its
            // answer is dropped unsent) and the thread takes the next job.
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
                let _ = answer.send(value);
            }
        });
        self.queue()?.send(job).map_err(|_| CpuError::Failed)?;
        result.await.map_err(|_| CpuError::Failed)
    }

    /// The queue, starting threads while fewer than asked for are running (after a failure,
    /// at most once per [`RETRY_EVERY`]: a thread limit is not lifted per submission).
    fn queue(&self) -> Result<mpsc::Sender<Job>, CpuError> {
        let mut state = self.state.lock().map_err(|_| CpuError::Failed)?;
        let retry = state.failed_at.is_none_or(|at| at.elapsed() >= RETRY_EVERY);
        while retry && state.running < self.threads {
            let (jobs, niceness) = (state.jobs.clone(), self.niceness);
            let spawned = std::thread::Builder::new()
                .name(format!("refex-cpu-{}", state.running))
                .spawn(move || {
                    lower_priority(niceness);
                    work(&jobs);
                });
            match spawned {
                Ok(_) => {
                    state.running += 1;
                    state.failed_at = None;
                }
                Err(e) => {
                    state.failed_at = Some(Instant::now());
                    if state.running == 0 {
                        tracing::warn!(
                            error = %e,
                            "could not start a CPU thread; submissions are refused (503) until one starts"
                        );
                    } else {
                        tracing::warn!(
                            error = %e,
                            running = state.running,
                            wanted = self.threads,
                            "could not start a CPU thread; submissions run on fewer cores"
                        );
                    }
                    break;
                }
            }
        }
        if state.running == 0 {
            return Err(CpuError::NoThread);
        }
        Ok(state.queue.clone())
    }
}

/// A thread's loop: the next job, until the pool is dropped.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Raises the calling thread's nice value by `niceness` (Linux keeps one per thread: `None`
/// is the calling thread).
#[cfg(target_os = "linux")]
fn lower_priority(niceness: i32) {
    use rustix::process::{getpriority_process, setpriority_process};
    if niceness <= 0 {
        return;
    }
    let lowered = getpriority_process(None)
        .and_then(|now| setpriority_process(None, now.saturating_add(niceness)));
    if lowered.is_err() {
        tracing::warn!(
            niceness,
            "could not lower a CPU thread's priority; submissions' CPU work competes with \
             the store's writer at equal priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_niceness: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_the_order_they_were_queued() {
        let pool = CpuPool::new(1, 0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runs: Vec<_> = (0..50)
            .map(|i| {
                let seen = seen.clone();
                pool.run(move || seen.lock().expect("lock").push(i))
            })
            .collect();
        for run in runs {
            run.await.expect("job");
        }
        assert_eq!(*seen.lock().expect("lock"), (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_thread_goes_on() {
        let pool = CpuPool::new(1, 0);
        let failed = pool.run(|| -> u32 { panic!("a job's bug") }).await;
        assert!(failed.is_err());
        assert_eq!(pool.run(|| 7).await.expect("next job"), 7);
    }

    #[tokio::test]
    async fn a_job_whose_caller_stopped_waiting_is_not_run() {
        let pool = Arc::new(CpuPool::new(1, 0));
        let (release, held) = std::sync::mpsc::channel::<()>();
        // The one thread is busy until released.
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || held.recv().is_ok()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let abandoned = pool.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        // The caller gives up while the job waits in the queue.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), abandoned)
                .await
                .is_err()
        );
        release.send(()).expect("release");
        assert!(busy.await.expect("task").expect("job"));
        // A later job runs only after the abandoned one was taken from the queue.
        pool.run(|| ()).await.expect("next job");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_below_the_callers_priority() {
        let nice = || rustix::process::getpriority_process(None).expect("nice value");
        let caller = nice();
        let pool = CpuPool::new(2, 3);
        let worker = pool.run(nice).await.expect("job");
        assert_eq!(worker, (caller + 3).min(19));
        assert_eq!(pool.threads(), 2);
    }
}
