//! Logs and metrics set-up: tracing to JSON lines (or text) on stderr, and the Prometheus
//! recorder whose text `/metrics` serves. Metric names are defined here so they are spelt
//! once.
//!
//! Never log a request or response body, or any payload value: log ids, routes, statuses,
//! principals and reason slugs only.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::settings::{LogFormat, LogSettings};

/// Requests served, by route template and status.
pub const HTTP_REQUESTS: &str = "refex_http_requests_total";
/// Request latency in seconds, by route template.
pub const HTTP_DURATION: &str = "refex_http_request_duration_seconds";
/// Where submissions' time went, in seconds, by `stage`: `waiting-for-cpu` (queued for a CPU
/// thread) and `cpu` (opening, checking, minimising and sealing), observed for each CPU step
/// a submission took (a refused one too; a correction takes two; a job whose client had
/// gone is skipped unobserved), and `store` (queued for, written in and synced with its
/// group commit), observed for each submission that reached the store. The rest of a
/// request's time is the connection's own (reading the body, answering).
pub const SUBMISSION_STAGE: &str = "refex_submission_stage_seconds";
/// Failed TLS handshakes, by reason.
pub const TLS_HANDSHAKE_FAILURES: &str = "refex_tls_handshake_failures_total";
/// Completed TLS handshakes.
pub const TLS_HANDSHAKES: &str = "refex_tls_handshakes_total";
/// Held referrals escalated for being undecided past the review deadline.
pub const HOLDS_ESCALATED: &str = "refex_holds_escalated";
/// Sockets closed at accept because a connection cap was reached, by cap.
pub const CONNECTIONS_REFUSED: &str = "refex_connections_refused_total";
/// Open API connections.
pub const CONNECTIONS_OPEN: &str = "refex_connections_open";
/// Seconds until each CRL's `nextUpdate` (negative once past it), by issuer.
pub const CRL_SECONDS_TO_NEXT_UPDATE: &str = "refex_crl_seconds_to_next_update";
/// 1 while the store breaker is open (the store unreachable), else 0.
pub const STORE_BREAKER_OPEN: &str = "refex_store_breaker_open";
/// Requests answered `503` at once by the store gate while the breaker was open.
pub const STORE_GATE_REFUSED: &str = "refex_store_gate_refused_total";
/// Audit events waiting in the local spool for the store to come back.
pub const AUDIT_SPOOLED: &str = "refex_audit_spooled";
/// Requests refused by a partner's rate limit.
pub const RATE_LIMITED: &str = "refex_rate_limited_total";

// The store records these (`crates/refex-store/src/metric.rs`).
pub use crate::store::metric::{
    STORE_ACCEPTANCES, STORE_BATCH_SIZE, STORE_COMMIT_DURATION, STORE_COMMITS, STORE_INBOX_BATCHES,
    STORE_INBOX_WRITES,
};
/// Notices to leads, by outcome (`sent`, `failed`, `dropped`).
pub const NOTIFICATIONS: &str = "refex_notifications_total";
/// Deliveries waiting in each partner's inbox (queued or fetched, not acknowledged).
pub const INBOX_BACKLOG: &str = "refex_inbox_backlog";
/// Age in seconds of the oldest delivery waiting in each partner's inbox (0 when none): a
/// partner that stopped polling shows here first.
pub const INBOX_OLDEST: &str = "refex_inbox_oldest_seconds";
/// Each partner's inbox retention in seconds (deliveries older expire unacknowledged).
pub const INBOX_RETENTION: &str = "refex_inbox_retention_seconds";
/// Replicas seen alive in the store by this replica's last housekeeping pass (itself
/// included): what rate quotas are divided among unless the `replicas` setting fixes it.
pub const REPLICAS_LIVE: &str = "refex_replicas_live";
/// Held referrals waiting for a lead's decision.
pub const HOLDS_WAITING: &str = "refex_holds_waiting";
/// When a signed audit checkpoint last covered the whole audit log (Unix seconds; set by
/// each housekeeping pass that confirms or signs one).
pub const CHECKPOINT_TIME: &str = "refex_audit_checkpoint_timestamp_seconds";
/// Housekeeping passes by outcome (`ok`, `failed`).
pub const HOUSEKEEPING_RUNS: &str = "refex_housekeeping_runs_total";
/// When a housekeeping pass last succeeded (Unix seconds).
pub const HOUSEKEEPING_LAST_SUCCESS: &str = "refex_housekeeping_last_success_timestamp_seconds";
/// What each housekeeping pass did, by `what` (expired, purged, escalated, closed).
pub const HOUSEKEEPING_DONE: &str = "refex_housekeeping_items_total";
/// 1 when the last readiness assessment (`/readyz`, and every housekeeping pass) found this
/// replica ready, 0 when not.
pub const READY: &str = "refex_ready";
/// When the gateway's server certificate expires (Unix seconds).
pub const SERVER_CERT_EXPIRY: &str = "refex_server_certificate_expiry_timestamp_seconds";
/// When each trusted client CA's certificate expires (Unix seconds), by `ca`.
pub const CA_CERT_EXPIRY: &str = "refex_ca_certificate_expiry_timestamp_seconds";
/// When each partner system's or person's certificate expires (Unix seconds), by `partner`
/// and `holder`: the latest among the certificates the holder has presented to this replica
/// that the configuration still maps (NaN when none is left; `server::certificates`).
pub const CLIENT_CERT_EXPIRY: &str = "refex_client_certificate_expiry_timestamp_seconds";

/// Batch-size buckets: from a lone referral to the batch ceiling.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Latency buckets (seconds): from a cached JWKS read to a long-poll's full minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Submission stage buckets (seconds): fine around the 25 ms latency target (issue 20), so
/// that what takes a slow acceptance's time can be told from `/metrics`.
const STAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03,
    0.04, 0.05, 0.1, 0.25, 1.0, 5.0,
];

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Log lines per second about refused or failed connections: a flood of bad handshakes is
/// counted in full by the metrics, and logged only this often so the log cannot be flooded.
const CONNECTION_LOG_PER_SECOND: u32 = 5;

/// Whether a line about a refused or failed connection may be logged now (see
/// [`CONNECTION_LOG_PER_SECOND`]).
pub fn connection_log_allowed() -> bool {
    static LIMITER: OnceLock<governor::DefaultDirectRateLimiter> = OnceLock::new();
    LIMITER
        .get_or_init(|| {
            governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::new(CONNECTION_LOG_PER_SECOND)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ))
        })
        .check()
        .is_ok()
}

/// Whether the line for a rate-limited request may be logged now: a client hammering past
/// its quota is answered `429` (and counted in `refex_rate_limited_total`) without writing a
/// log line each time.
pub fn rate_limited_log_allowed() -> bool {
    static LIMITER: OnceLock<governor::DefaultDirectRateLimiter> = OnceLock::new();
    LIMITER
        .get_or_init(|| {
            governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::new(CONNECTION_LOG_PER_SECOND)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ))
        })
        .check()
        .is_ok()
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STORE_BATCH_SIZE.into()), BATCH_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(STORE_COMMIT_DURATION.into()),
                    LATENCY_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(SUBMISSION_STAGE.into()), STAGE_BUCKETS)
            })
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then our
        // handle renders what this recorder saw, which is nothing, and says so by omission.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Installs the tracing subscriber; `RUST_LOG` overrides the configured filter. Safe to
/// call more than once (later calls do nothing).
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
