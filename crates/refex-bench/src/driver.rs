//! The load generator: keep-alive mutual-TLS HTTP/1.1 clients posting pre-built referral
//! bodies, closed-loop (N connections, each sends as soon as its last answer came) and
//! open-loop (Poisson arrivals at a fixed rate, latency timed from the *scheduled* send so a
//! slow server cannot hide its queueing), and a receiving service draining its inbox.
//! Every phase is bounded both in requests (the bodies it is given) and in seconds.
//!
//! Out of scope: building bodies (`corpus`), the gateway process (`gateway`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hdrhistogram::Histogram;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::BenchError;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Histogram range: 1 µs to 60 s at 3 significant figures.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What one load phase did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseResult {
    /// Requests answered with the expected status.
    pub completed: u64,
    /// Requests refused, failed or timed out.
    pub errors: u64,
    /// Wall time of the phase, in seconds.
    pub seconds: f64,
    /// `completed / seconds`.
    pub per_second: f64,
    /// Latency of the completed requests.
    pub latency: Latency,
    /// The first error's description, if any (statuses and transport errors only).
    pub first_error: Option<String>,
}

/// Where to send, and as whom.
#[derive(Clone)]
pub struct Target {
    /// `https://localhost:<port>`.
    pub base: String,
    /// The partner's TLS client configuration.
    pub tls: rustls::ClientConfig,
}

impl Target {
    /// A keep-alive HTTP/1.1 client holding at most `connections` idle connections.
    pub fn client(&self, connections: usize) -> Result<reqwest::Client, BenchError> {
        let mut tls = self.tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .pool_max_idle_per_host(connections)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| BenchError::Setup(format!("client: {e}")))
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant bounds are valid")
}

/// Tallies of a phase, shared by its tasks.
struct Tally {
    histogram: Histogram<u64>,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: histogram(),
            completed: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, outcome: Result<(), String>, latency: Duration) {
        match outcome {
            Ok(()) => {
                self.completed += 1;
                let _ = self
                    .histogram
                    .record((latency.as_micros() as u64).clamp(1, HISTOGRAM_MAX_US));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// A request that completes no delivery by itself (a fetch whose acknowledgement comes
    /// with its page's): its latency only.
    fn record_request(&mut self, latency: Duration) {
        let _ = self
            .histogram
            .record((latency.as_micros() as u64).clamp(1, HISTOGRAM_MAX_US));
    }

    fn finish(self, seconds: f64) -> PhaseResult {
        PhaseResult {
            completed: self.completed,
            errors: self.errors,
            seconds,
            per_second: self.completed as f64 / seconds.max(1e-9),
            latency: Latency::of(&self.histogram),
            first_error: self.first_error,
        }
    }
}

/// Waits for a phase's tasks, then turns its tally into the phase's result.
async fn conclude(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tally: Arc<Mutex<Tally>>,
    started: impl Fn() -> Duration,
) -> Result<PhaseResult, BenchError> {
    for t in tasks {
        let _ = t.await;
    }
    let seconds = started().as_secs_f64();
    let tally = Arc::try_unwrap(tally)
        .map_err(|_| BenchError::Measure("tally still shared".into()))?
        .into_inner();
    Ok(tally.finish(seconds))
}

async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> Result<(), String> {
    let res = client
        .post(url)
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    // Read the whole answer so the connection goes back to the pool.
    let _ = res.bytes().await;
    if status == 202 {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Opens `connections` keep-alive connections before a phase, so that handshakes are not
/// counted as submission latency.
async fn warm(client: &reqwest::Client, base: &str, connections: usize) {
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url) = (client.clone(), format!("{base}/v1/whoami"));
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = client.get(url).send().await {
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Closed loop: `connections` clients, each posting the next unsent body as soon as its
/// previous one was answered, until the bodies run out or `limit` has passed.
pub async fn closed_loop(
    target: &Target,
    bodies: Vec<Bytes>,
    connections: usize,
    limit: Duration,
) -> Result<PhaseResult, BenchError> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::new()));
    let url = format!("{}/v1/referrals", target.base);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = target.client(1)?;
        warm(&client, &target.base, 1).await;
        clients.push(client);
    }
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::with_capacity(connections);
    for client in clients {
        let (bodies, next, tally, url) = (bodies.clone(), next.clone(), tally.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Tally::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() || Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let outcome = post(&client, &url, bodies[i].clone()).await;
                local.record(outcome, sent.elapsed());
            }
            let mut t = tally.lock().await;
            let _ = t.histogram.add(&local.histogram);
            t.completed += local.completed;
            t.errors += local.errors;
            if t.first_error.is_none() {
                t.first_error = local.first_error;
            }
        }));
    }
    conclude(tasks, tally, || start.elapsed()).await
}

/// Open loop: requests scheduled as a Poisson process at `rate` per second (a fixed seed, so
/// runs are comparable), each timed from its scheduled send, until the bodies run out or
/// `limit` has passed. Late sends are sent at once and still timed from their schedule.
pub async fn open_loop(
    target: &Target,
    bodies: Vec<Bytes>,
    rate: f64,
    limit: Duration,
    seed: u64,
) -> Result<PhaseResult, BenchError> {
    let client = target.client(512)?;
    warm(&client, &target.base, 64).await;
    let url = format!("{}/v1/referrals", target.base);
    let tally = Arc::new(Mutex::new(Tally::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = tokio::time::Instant::now();
    let mut at = start;
    let mut tasks = Vec::with_capacity(bodies.len());
    for body in bodies {
        // Exponential inter-arrival times: -ln(1 - U) / rate.
        let u: f64 = rng.random();
        at += Duration::from_secs_f64(-(1.0 - u).ln() / rate);
        if at.duration_since(start) >= limit {
            break;
        }
        tokio::time::sleep_until(at).await;
        let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
        let scheduled = at;
        tasks.push(tokio::spawn(async move {
            let outcome = post(&client, &url, body).await;
            let latency = scheduled.elapsed();
            tally.lock().await.record(outcome, latency);
        }));
    }
    conclude(tasks, tally, || start.elapsed()).await
}

/// How a draining receiver acknowledges what it fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// `POST /v1/inbox/{id}/ack` after each fetch; latency is per delivery (fetch + ack).
    EachDelivery,
    /// One `POST /v1/inbox/ack` for the page's deliveries after fetching them all;
    /// latency is per request (each fetch, and each page's acknowledgement), and a
    /// delivery counts once its page's acknowledgement names it acknowledged.
    PerPage,
}

/// A receiving service draining its inbox with `connections` workers: each lists a page,
/// then fetches and acknowledges every delivery on it (as `acks` says), until the inbox is
/// empty, `max` deliveries were taken or `limit` has passed.
pub async fn drain_inbox(
    target: &Target,
    connections: usize,
    acks: Acks,
    max: usize,
    limit: Duration,
) -> Result<PhaseResult, BenchError> {
    let client = target.client(connections)?;
    warm(&client, &target.base, connections).await;
    let base = target.base.clone();
    // Workers split the inbox by taking pages from a shared cursor.
    let cursor = Arc::new(Mutex::new(0i64));
    let taken = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::new()));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, base, cursor, taken, tally) = (
            client.clone(),
            base.clone(),
            cursor.clone(),
            taken.clone(),
            tally.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                if Instant::now() >= deadline || taken.load(Ordering::Relaxed) >= max {
                    break;
                }
                let ids = {
                    let mut c = cursor.lock().await;
                    let page = list(&client, &base, *c).await;
                    match page {
                        Ok((ids, next)) => {
                            if let Some(n) = next {
                                *c = n;
                            }
                            ids
                        }
                        Err(e) => {
                            tally.lock().await.record(Err(e), Duration::ZERO);
                            break;
                        }
                    }
                };
                if ids.is_empty() {
                    break;
                }
                let mut fetched = Vec::with_capacity(ids.len());
                for id in ids {
                    // The budget holds per delivery, not per page of 50.
                    if Instant::now() >= deadline || taken.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                    let sent = Instant::now();
                    match acks {
                        Acks::EachDelivery => {
                            let outcome = fetch_and_ack(&client, &base, &id).await;
                            tally.lock().await.record(outcome, sent.elapsed());
                        }
                        Acks::PerPage => match fetch(&client, &base, &id).await {
                            Ok(()) => {
                                tally.lock().await.record_request(sent.elapsed());
                                fetched.push(id);
                            }
                            Err(e) => tally.lock().await.record(Err(e), Duration::ZERO),
                        },
                    }
                }
                if !fetched.is_empty() {
                    let sent = Instant::now();
                    let outcome = ack_page(&client, &base, &fetched).await;
                    let latency = sent.elapsed();
                    let mut tally = tally.lock().await;
                    match outcome {
                        Ok(()) => {
                            tally.record_request(latency);
                            tally.completed += fetched.len() as u64;
                        }
                        Err(e) => tally.record(Err(e), latency),
                    }
                }
            }
        }));
    }
    conclude(tasks, tally, || start.elapsed()).await
}

/// Most deliveries one inbox page lists (the contract's default page size).
const PAGE: usize = 50;

async fn list(
    client: &reqwest::Client,
    base: &str,
    after: i64,
) -> Result<(Vec<String>, Option<i64>), String> {
    let res = client
        .get(format!("{base}/v1/inbox?limit={PAGE}&cursor={after}"))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    if res.status() != 200 {
        return Err(format!("inbox list status {}", res.status().as_u16()));
    }
    let v: Value = res.json().await.map_err(|e| format!("inbox list: {e}"))?;
    let ids = v["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let next = v["next_cursor"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .or_else(|| v["next_cursor"].as_i64());
    Ok((ids, next))
}

async fn fetch(client: &reqwest::Client, base: &str, id: &str) -> Result<(), String> {
    let res = client
        .get(format!("{base}/v1/inbox/{id}"))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("fetch status {status}"))
    }
}

/// One `POST /v1/inbox/ack` for `ids`: every one must come back acknowledged.
async fn ack_page(client: &reqwest::Client, base: &str, ids: &[String]) -> Result<(), String> {
    let res = client
        .post(format!("{base}/v1/inbox/ack"))
        .json(&serde_json::json!({ "ids": ids }))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    if status != 200 {
        let _ = res.bytes().await;
        return Err(format!("page ack status {status}"));
    }
    let v: Value = res.json().await.map_err(|e| format!("page ack: {e}"))?;
    let acknowledged = v["acknowledged"].as_array().map_or(0, Vec::len);
    if acknowledged == ids.len() {
        Ok(())
    } else {
        Err(format!(
            "page ack: {acknowledged} of {} acknowledged",
            ids.len()
        ))
    }
}

async fn fetch_and_ack(client: &reqwest::Client, base: &str, id: &str) -> Result<(), String> {
    fetch(client, base, id).await?;
    let res = client
        .post(format!("{base}/v1/inbox/{id}/ack"))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    if status == 204 {
        Ok(())
    } else {
        Err(format!("ack status {status}"))
    }
}
