//! The gateway under test, as its own process (`refex serve` of this very binary) so that
//! its CPU time and resident memory can be read apart from the load generator's: from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`, and its counters from `/metrics`.
//!
//! Out of scope: generating load (`driver`, `net`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::BenchError;

/// How long the gateway may take to say it is ready (it migrates a fresh store first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running gateway process.
pub struct GatewayProcess {
    child: Child,
    /// The mutual-TLS API listener.
    pub api: SocketAddr,
    /// The plain-HTTP admin listener.
    pub admin: SocketAddr,
    ticks_per_second: f64,
}

impl GatewayProcess {
    /// Starts `refex serve` in `dir` (which holds `refex.toml`) on `store_url` and waits for
    /// its "ready" line.
    pub fn start(dir: &Path, store_url: &str) -> Result<Self, BenchError> {
        // The gateway binary beside this one (`refex bench` runs `refex-bench` from its own
        // directory; a workspace build puts both in the same one).
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Setup(e.to_string()))?
            .with_file_name("refex");
        if !exe.is_file() {
            return Err(BenchError::Setup(format!(
                "{} is not built (cargo build --release builds it)",
                exe.display()
            )));
        }
        let mut child = Command::new(exe)
            .current_dir(dir)
            .args(["serve", "--config", "refex.toml", "--store-url", store_url])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("starting the gateway: {e}")))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| BenchError::Setup("no stderr".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut sent = false;
            for line in lines.by_ref().map_while(Result::ok) {
                if !sent && line.contains("ready to accept") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::Setup(
                    "the gateway exited or did not become ready".into(),
                ));
            }
        };
        let ready: Value =
            serde_json::from_str(&line).map_err(|e| BenchError::Setup(e.to_string()))?;
        let addr = |key: &str| -> Result<SocketAddr, BenchError> {
            ready[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| BenchError::Setup(format!("no {key} address in the ready line")))
        };
        Ok(Self {
            api: addr("api")?,
            admin: addr("admin")?,
            child,
            ticks_per_second: clock_ticks(),
        })
    }

    /// The process's CPU time so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64, BenchError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map_err(|e| BenchError::Measure(format!("/proc stat: {e}")))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| BenchError::Measure("malformed /proc stat".into()))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ")".
        Ok((ticks(11) + ticks(12)) / self.ticks_per_second)
    }

    /// The process's resident set size, in bytes.
    pub fn rss_bytes(&self) -> Result<u64, BenchError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| BenchError::Measure(format!("/proc status: {e}")))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| BenchError::Measure("no VmRSS".into()))
    }

    /// The gateway's `/metrics` text.
    async fn metrics(&self) -> Result<String, BenchError> {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .map_err(|e| BenchError::Measure(format!("metrics: {e}")))?
            .text()
            .await
            .map_err(|e| BenchError::Measure(format!("metrics: {e}")))
    }

    /// Group-commit counters so far.
    pub async fn commit_counters(&self) -> Result<CommitCounters, BenchError> {
        let text = self.metrics().await?;
        Ok(CommitCounters::read(&text))
    }

    /// The gateway's own latency histogram for `route`: `(upper bound in seconds, cumulative
    /// count)` per bucket.
    pub async fn latency_buckets(&self, route: &str) -> Result<Vec<(f64, f64)>, BenchError> {
        let text = self.metrics().await?;
        Ok(histogram(
            &text,
            refex::telemetry::HTTP_DURATION,
            &format!("route=\"{route}\""),
        ))
    }

    /// The gateway's submission stage histograms (`telemetry::SUBMISSION_STAGE`), one per
    /// stage of [`STAGES`], in that order.
    pub async fn stage_buckets(&self) -> Result<Vec<Vec<(f64, f64)>>, BenchError> {
        let text = self.metrics().await?;
        Ok(STAGES
            .iter()
            .map(|stage| {
                histogram(
                    &text,
                    refex::telemetry::SUBMISSION_STAGE,
                    &format!("stage=\"{stage}\""),
                )
            })
            .collect())
    }

    /// Stops the gateway with SIGTERM (it drains and exits 0), or kills it after 30 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The stages of a submission the gateway times (`telemetry::SUBMISSION_STAGE`).
pub const STAGES: [&str; 3] = ["waiting-for-cpu", "cpu", "store"];

/// `(upper bound, cumulative count)` per bucket of the histogram `metric` whose labels
/// include `label`, in Prometheus text.
fn histogram(text: &str, metric: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// How many observations a histogram gained between two readings.
pub fn count_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let total = |h: &[(f64, f64)]| h.last().map_or(0.0, |(_, n)| *n);
    total(after) - total(before)
}

/// The upper bound (ms) of the bucket holding quantile `q` of the requests counted between
/// two readings of [`GatewayProcess::latency_buckets`].
pub fn quantile_bound_ms(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - was)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    counts
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
}

/// The store's group-commit counters, from Prometheus text.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitCounters {
    /// Transactions committed.
    pub commits: f64,
    /// Acceptances in them.
    pub acceptances: f64,
    /// Seconds spent writing and committing them.
    pub seconds: f64,
}

impl CommitCounters {
    /// Reads the counters from Prometheus text.
    pub fn read(text: &str) -> Self {
        Self {
            commits: counter(text, refex::telemetry::STORE_COMMITS),
            acceptances: counter(text, refex::telemetry::STORE_ACCEPTANCES),
            seconds: counter(
                text,
                &format!("{}_sum", refex::telemetry::STORE_COMMIT_DURATION),
            ),
        }
    }

    /// (acceptances per commit, milliseconds per commit) between two readings.
    pub fn since(&self, before: &Self) -> (f64, f64) {
        let commits = (self.commits - before.commits).max(1.0);
        (
            (self.acceptances - before.acceptances) / commits,
            (self.seconds - before.seconds) * 1000.0 / commits,
        )
    }
}

/// A counter's value in Prometheus text (0 when absent).
pub fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux if it cannot say).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
