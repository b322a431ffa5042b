//! `refex bench`: how fast this gateway is on this machine, measured end to end.
//!
//! A throwaway project (the configured partners with unlimited rate quotas, the shipped
//! schemas, a freshly generated dev PKI) in a temporary directory; the real gateway as a
//! child process on `127.0.0.1:0` with a temporary store; pre-built unique referral bodies so
//! the load generator does no crypto; and these phases:
//!
//! 1. microbenchmarks in-process (`micro`): the crypto pipeline per referral for 1–3
//!    recipients at 2, 5 and 10 KiB, its parts, store commits, a raw `fdatasync`;
//! 2. closed-loop submission at 1, 8 and 64 connections for the maximum rate;
//! 3. open-loop (Poisson) submission at 25, 50 and 70 % of it, for latency percentiles;
//! 4. the recipients × payload-size matrix end to end;
//! 5. a receiving service draining its inbox (list, fetch, ack);
//! 6. full and resumed mTLS handshakes per second; RSS per idle mTLS connection;
//! 7. optionally the submission phases again on PostgreSQL (`--store postgres://…`).
//!
//! Every phase is bounded in requests and seconds. The report (`report`) puts each target
//! beside its measurement. Out of scope: pass/fail in tests (speed is never asserted there).

pub mod corpus;
pub mod driver;
pub mod gateway;
pub mod housekeeping;
pub mod micro;
pub mod net;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use refex::config::settings::Settings;
use refex::config::{self, Config, Overrides};
use refex::partner_client::{self, Identity};

use corpus::{Corpus, SENDER};
use driver::{Acks, PhaseResult, Target};
use gateway::GatewayProcess;
use report::{ClosedPhase, EndToEnd, MatrixCell, OpenPhase, Report, StageBounds};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Preparing the workspace, the gateway or the load failed.
    #[error("bench set-up: {0}")]
    Setup(String),
    /// A measurement failed.
    #[error("bench measurement: {0}")]
    Measure(String),
}

/// Rate quota given to every partner in the bench project: far above anything one machine
/// can send, so the limiter never shapes the measurement.
const UNLIMITED_PER_MINUTE: u32 = 60_000_000;
/// Burst to match.
const UNLIMITED_BURST: u32 = 1_000_000;

/// The submission route's label in the gateway's metrics.
const SUBMIT_ROUTE: &str = "/v1/referrals";

/// How much work each phase may do.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Longest a submission phase runs.
    pub phase: Duration,
    /// Bodies for the closed-loop phase at 64 connections (others scale from it).
    pub closed_bodies: usize,
    /// Bodies per microbenchmark cell.
    pub micro: usize,
    /// Longest a matrix cell runs.
    pub cell: Duration,
    /// Idle connections for the memory phase.
    pub idle_connections: usize,
    /// Referrals generated for the housekeeping phase.
    pub seeded: u64,
    /// Acceptances prepared to commit during the housekeeping phase (at 100/s).
    pub housekeeping_acceptances: usize,
}

impl Budget {
    /// The full run: a few seconds per phase, about two minutes on 2 cores.
    pub fn full() -> Self {
        Self {
            phase: Duration::from_secs(5),
            closed_bodies: 20_000,
            micro: 400,
            cell: Duration::from_secs(3),
            idle_connections: 2_000,
            seeded: 1_000_000,
            housekeeping_acceptances: 8_000,
        }
    }

    /// A smoke run (tests, CI): every phase, tiny.
    pub fn quick() -> Self {
        Self {
            phase: Duration::from_millis(500),
            closed_bodies: 150,
            micro: 8,
            cell: Duration::from_millis(300),
            idle_connections: 50,
            seeded: 2_000,
            housekeeping_acceptances: 50,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The gateway settings whose partners, schemas and store settings are benchmarked.
    pub settings: Settings,
    /// Also run the submission phases on this PostgreSQL server (a fresh schema is made
    /// and dropped).
    pub postgres: Option<String>,
    /// The work per phase.
    pub budget: Budget,
}

/// Connections of the first inbox drain, as a partner's system polling one at a time per
/// worker might use.
pub const INBOX_FEW: usize = 8;
/// Connections of the second inbox drain: past this the rate stops rising on 2 cores
/// (measured: 8 → ~1,100/s, 16 → ~1,750/s, 32 → ~2,200/s, 64 → ~2,100/s).
pub const INBOX_MANY: usize = 32;

/// Runs every phase and returns the report.
pub async fn run(options: Options) -> Result<Report, BenchError> {
    refex::tls::install_default_provider();
    let budget = options.budget;
    let work = tempfile::Builder::new()
        .prefix("refex-bench-")
        .tempdir()
        .map_err(|e| BenchError::Setup(format!("temporary directory: {e}")))?;
    let settings = prepare_project(work.path(), &options.settings)?;
    let refex::config::Loaded { config, transport } =
        Config::load(settings).map_err(|e| BenchError::Setup(e.to_string()))?;
    let pki = work.path().join("certs/dev");
    let corpus = Corpus::load(&pki, &config.settings.schemas_dir)?;
    let now = unix_now();
    let mut report = Report::new(&config, budget);

    tracing::info!("bench: microbenchmarks");
    let micro_dir = work.path().join("micro");
    std::fs::create_dir_all(&micro_dir).map_err(|e| BenchError::Setup(e.to_string()))?;
    let micro_url = format!("sqlite://{}", micro_dir.join("store.db").display());
    report.micro = micro::run(&config, &corpus, &micro_url, &micro_dir, budget.micro, now).await?;

    let sqlite_url = format!("sqlite://{}", work.path().join("data/refex.db").display());
    let gateway = GatewayProcess::start(work.path(), &sqlite_url)?;
    let sender = target(&pki, SENDER, &gateway)?;
    report.sqlite = end_to_end("sqlite", &gateway, &sender, &corpus, budget, true).await?;
    let held = housekeeping::bytes_in_use(&sqlite_url).await?;
    report.store_bytes_per_referral = held.per_referral();
    report.sealed_bytes_per_referral = held.sealed as f64 / held.referrals.max(1) as f64;
    report.store_referrals = held.referrals;
    report.store_tables = held.tables;

    tracing::info!("bench: inbox");
    let receiver = target(&pki, corpus::RECIPIENTS[0], &gateway)?;
    // Few connections first (latency-bound: each delivery is two writes in turn), then as
    // many as keep the store's one writer busy; the target is judged on the second.
    report.inbox_few = driver::drain_inbox(
        &receiver,
        INBOX_FEW,
        Acks::EachDelivery,
        budget.closed_bodies / 2,
        budget.phase / 2,
    )
    .await?;
    report.inbox = driver::drain_inbox(
        &receiver,
        INBOX_MANY,
        Acks::EachDelivery,
        budget.closed_bodies,
        budget.phase,
    )
    .await?;
    // Then as a receiving system that acknowledges each page at once (`POST /v1/inbox/ack`):
    // one write per delivery instead of two.
    report.inbox_paged = driver::drain_inbox(
        &receiver,
        INBOX_MANY,
        Acks::PerPage,
        budget.closed_bodies,
        budget.phase,
    )
    .await?;

    tracing::info!("bench: handshakes");
    let h = budget.closed_bodies as u64;
    report.handshakes.full =
        net::handshakes(gateway.api, &sender.tls, false, 8, h, budget.phase).await;
    report.handshakes.resumed =
        net::handshakes(gateway.api, &sender.tls, true, 8, h, budget.phase).await;
    {
        let bare = net::BareRustls::start(transport.tls.shared(), report.machine.cores)?;
        report.handshakes.bare_rustls_full =
            net::handshakes(bare.addr, &sender.tls, false, 8, h, budget.phase).await;
    }

    tracing::info!("bench: idle connections");
    report.idle = net::idle_memory(&gateway, &sender.tls, budget.idle_connections).await?;
    gateway.stop();

    tracing::info!(
        "bench: housekeeping over {} generated referrals",
        budget.seeded
    );
    report.housekeeping = housekeeping::run(
        &config,
        &corpus,
        work.path(),
        budget.seeded,
        budget.housekeeping_acceptances,
        now,
    )
    .await?;

    if let Some(base) = &options.postgres {
        tracing::info!("bench: PostgreSQL");
        let (url, schema) = postgres_schema(base).await?;
        let outcome = async {
            let gateway = GatewayProcess::start(work.path(), &url)?;
            let sender = target(&pki, SENDER, &gateway)?;
            let e2e = end_to_end("postgres", &gateway, &sender, &corpus, budget, false).await;
            gateway.stop();
            e2e
        }
        .await;
        drop_postgres_schema(base, &schema).await;
        report.postgres = Some(outcome?);
    }
    report.evaluate();
    Ok(report)
}

/// The submission phases against one gateway: closed loop at 1, 8 and 64 connections; with
/// `full`, open loop at 25/50/70 % of the best closed-loop rate and the recipients × size
/// matrix.
async fn end_to_end(
    store: &str,
    gateway: &GatewayProcess,
    target: &Target,
    corpus: &Corpus,
    budget: Budget,
    full: bool,
) -> Result<EndToEnd, BenchError> {
    let mut e2e = EndToEnd {
        store: store.to_owned(),
        ..EndToEnd::default()
    };
    for connections in [1usize, 8, 64] {
        tracing::info!("bench: {store}: closed loop, {connections} connections");
        let n = match connections {
            1 => budget.closed_bodies / 6,
            8 => budget.closed_bodies / 2,
            _ => budget.closed_bodies,
        };
        let bodies = corpus.bodies(
            n,
            2,
            5 * 1024,
            &format!("{store}-closed-{connections}"),
            unix_now(),
        )?;
        let (result, cpu, (per_commit, commit_ms)) = measured(gateway, async {
            driver::closed_loop(target, bodies, connections, budget.phase).await
        })
        .await?;
        e2e.closed.push(ClosedPhase {
            connections,
            server_cpu_us_per_referral: cpu * 1e6 / result.completed.max(1) as f64,
            referrals_per_commit: per_commit,
            ms_per_commit: commit_ms,
            result,
        });
    }
    e2e.max_per_second = e2e
        .closed
        .iter()
        .map(|c| c.result.per_second)
        .fold(0.0, f64::max);
    if !full {
        return Ok(e2e);
    }
    for (i, share) in [0.25, 0.50, 0.70].into_iter().enumerate() {
        let rate = (e2e.max_per_second * share).max(1.0);
        tracing::info!(
            "bench: {store}: open loop at {:.0}/s ({:.0} %)",
            rate,
            share * 100.0
        );
        let n = (rate * budget.phase.as_secs_f64() * 1.05).ceil() as usize + 1;
        let bodies = corpus.bodies(n, 2, 5 * 1024, &format!("{store}-open-{i}"), unix_now())?;
        let before = gateway.latency_buckets(SUBMIT_ROUTE).await?;
        let stages_before = gateway.stage_buckets().await?;
        let result =
            driver::open_loop(target, bodies, rate, budget.phase, 0x5eed + i as u64).await?;
        let after = gateway.latency_buckets(SUBMIT_ROUTE).await?;
        let stages_after = gateway.stage_buckets().await?;
        let stages = gateway::STAGES
            .iter()
            .zip(stages_before.iter().zip(&stages_after))
            .map(|(stage, (before, after))| StageBounds {
                stage: (*stage).to_owned(),
                p50_ms_at_most: gateway::quantile_bound_ms(before, after, 0.50),
                p99_ms_at_most: gateway::quantile_bound_ms(before, after, 0.99),
                samples: gateway::count_between(before, after),
            })
            .collect();
        e2e.open.push(OpenPhase {
            load_share: share,
            offered_per_second: rate,
            result,
            server_p50_ms_at_most: gateway::quantile_bound_ms(&before, &after, 0.50),
            server_p99_ms_at_most: gateway::quantile_bound_ms(&before, &after, 0.99),
            stages,
        });
    }
    for recipients in 1..=corpus::RECIPIENTS.len() {
        for kib in [2usize, 5, 10] {
            tracing::info!("bench: {store}: {recipients} recipient(s), {kib} KiB");
            let n = ((e2e.max_per_second * budget.cell.as_secs_f64() * 1.3) as usize)
                .clamp(16, budget.closed_bodies);
            let bodies = corpus.bodies(
                n,
                recipients,
                kib * 1024,
                &format!("{store}-m-{recipients}-{kib}"),
                unix_now(),
            )?;
            let (result, cpu, _) = measured(gateway, async {
                driver::closed_loop(target, bodies, 64, budget.cell).await
            })
            .await?;
            e2e.matrix.push(MatrixCell {
                recipients,
                payload_kib: kib,
                per_second: result.per_second,
                server_cpu_us_per_referral: cpu * 1e6 / result.completed.max(1) as f64,
                errors: result.errors,
            });
        }
    }
    Ok(e2e)
}

/// Runs a phase and reads, around it, the gateway's CPU seconds and its acceptances and
/// milliseconds per commit.
async fn measured(
    gateway: &GatewayProcess,
    phase: impl std::future::Future<Output = Result<PhaseResult, BenchError>>,
) -> Result<(PhaseResult, f64, (f64, f64)), BenchError> {
    let (cpu0, before) = (gateway.cpu_seconds()?, gateway.commit_counters().await?);
    let result = phase.await?;
    let (cpu1, after) = (gateway.cpu_seconds()?, gateway.commit_counters().await?);
    Ok((result, cpu1 - cpu0, after.since(&before)))
}

/// A partner's client to the gateway, from the bench's dev PKI.
fn target(pki: &Path, partner: &str, gateway: &GatewayProcess) -> Result<Target, BenchError> {
    let tls = partner_client::tls_config(&Identity::dev(pki, partner))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(Target {
        base: format!("https://localhost:{}", gateway.api.port()),
        tls,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Lays out the bench project in `dir`: partners copied with unlimited quotas, schemas
/// linked, a dev PKI, and a `refex.toml` carrying the benchmarked settings' store options.
/// Returns the project's settings (the criterion benches load their configuration so too).
pub fn prepare_project(dir: &Path, source: &Settings) -> Result<Settings, BenchError> {
    let io = |what: &str, e: std::io::Error| BenchError::Setup(format!("{what}: {e}"));
    let partners = dir.join("partners");
    std::fs::create_dir_all(&partners).map_err(|e| io("partners", e))?;
    for entry in std::fs::read_dir(&source.partners_dir).map_err(|e| io("partners", e))? {
        let path = entry.map_err(|e| io("partners", e))?.path();
        if path.extension().is_some_and(|x| x == "toml")
            && path.file_name() != source.agreements.file_name()
        {
            let text = std::fs::read_to_string(&path).map_err(|e| io("partner file", e))?;
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            std::fs::write(partners.join(name), unlimited(&text))
                .map_err(|e| io("partner file", e))?;
        }
    }
    std::fs::copy(&source.agreements, partners.join("agreements.toml"))
        .map_err(|e| io("agreements", e))?;
    let schemas = std::fs::canonicalize(&source.schemas_dir).map_err(|e| io("schemas", e))?;
    std::os::unix::fs::symlink(schemas, dir.join("schemas")).map_err(|e| io("schemas", e))?;
    refex::devpki::generate(
        &dir.join("certs/dev"),
        &partners,
        &partners.join("agreements.toml"),
        false,
        SystemTime::now(),
    )
    .map_err(|e| BenchError::Setup(e.to_string()))?;
    let toml = format!(
        "mode = \"development\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [limits]\nidle_timeout = \"10m\"\n\
         max_connections = 100000\nmax_handshakes = 100000\nmax_handshakes_per_network = 100000\n\
         max_connections_per_network = 100000\nmax_connections_per_certificate = 100000\n\
         [store]\ngroup_commit_window = \"{}us\"\ngroup_commit_max = {}\n\
         [log]\nformat = \"json\"\nfilter = \"warn,refex::app=info\"\n",
        source.store.group_commit_window.as_micros(),
        source.store.group_commit_max,
    );
    let file = dir.join("refex.toml");
    std::fs::write(&file, toml).map_err(|e| io("refex.toml", e))?;
    config::load_settings(&file, true, &Overrides::default())
        .map_err(|e| BenchError::Setup(e.to_string()))
}

/// A partner file with its rate quota replaced by an unlimited one.
fn unlimited(text: &str) -> String {
    let mut out = String::new();
    let mut in_quota = false;
    let mut inserted = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_quota = trimmed == "[rate_quota]";
            if !inserted {
                out.push_str(&format!(
                    "[rate_quota]\nper_minute = {UNLIMITED_PER_MINUTE}\nburst = {UNLIMITED_BURST}\n\n"
                ));
                inserted = true;
            }
            if in_quota {
                continue;
            }
        }
        if in_quota {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !inserted {
        out.push_str(&format!(
            "[rate_quota]\nper_minute = {UNLIMITED_PER_MINUTE}\nburst = {UNLIMITED_BURST}\n"
        ));
    }
    out
}

/// Makes a fresh schema on the PostgreSQL server and returns a store URL that selects it.
async fn postgres_schema(base: &str) -> Result<(String, String), BenchError> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .map_err(|e| BenchError::Setup(format!("PostgreSQL: {e}")))?;
    // Generated here from a UUID, never taken from input.
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .map_err(|e| BenchError::Setup(format!("PostgreSQL: {e}")))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok((
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

async fn drop_postgres_schema(base: &str, schema: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_replaced_or_added() {
        let with =
            "name = \"x\"\n[rate_quota]\nper_minute = 10\nburst = 2\n\n[[systems]]\nid = \"a\"\n";
        let out = unlimited(with);
        assert!(out.contains(&format!("per_minute = {UNLIMITED_PER_MINUTE}")));
        assert!(!out.contains("per_minute = 10"));
        assert!(out.contains("[[systems]]\nid = \"a\""));
        let without = "name = \"x\"\n[[systems]]\nid = \"a\"\n";
        let out = unlimited(without);
        assert_eq!(out.matches("[rate_quota]").count(), 1);
        assert!(out.find("[rate_quota]") < out.find("[[systems]]"));
        let toml: toml::Value = toml::from_str(&out).expect("still TOML");
        assert!(toml.get("rate_quota").is_some());
    }
}
