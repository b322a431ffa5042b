//! The housekeeping phase (issue 20): a purge pass over an embedded store seeded with a
//! million referrals, while acceptances keep arriving, and what the store costs per referral.
//!
//! The store is made by the real migrations and holds one real acceptance; the rest is
//! generated directly in SQL from that template (a recursive `INSERT … SELECT`, not through
//! the API): each seeded referral is past retention, with its template's deliveries
//! (acknowledged, ciphertext gone), audit events (their detail and canonical leaf, outside the
//! Merkle tree, which purge never reads) and subject keys. One `purge_records` call (its
//! bounded batches) then runs while acceptances are committed at a fixed rate through the
//! store's group commit, each timed from its scheduled start, so a pass that held the writer
//! shows up as acceptance latency.

use refex::timestamp::UnixTime;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Serialize;
use sqlx::{Connection as _, Row as _};

use super::BenchError;
use super::corpus::Corpus;
use refex::config::Config;
use refex::identity::Principal;
use refex::store::Store;
use refex::store::records::Acceptance;

/// Acceptances per second during the pass.
const ACCEPT_RATE: f64 = 100.0;
/// Seeded referrals per seeding transaction.
const SEED_CHUNK: u64 = 100_000;
/// How long before the cutoff the seeded referrals arrived (one per 10 ms before it).
const SEED_AGE_SECONDS: i64 = 400 * 86_400;

/// What the phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Housekeeping {
    /// Referrals generated past retention.
    pub seeded: u64,
    /// Seconds the seeding took (not a gateway figure).
    pub seed_seconds: f64,
    /// Store bytes per seeded referral (pages in use ÷ referrals).
    pub seeded_bytes_per_referral: f64,
    /// Referrals the pass purged (one call: its bounded batches).
    pub purged: u64,
    /// Seconds the pass took.
    pub pass_seconds: f64,
    /// Referrals purged per second.
    pub purged_per_second: f64,
    /// Acceptances committed while the pass ran.
    pub accepted_during: u64,
    /// Acceptance latency with no pass running (p50, p99), ms.
    pub baseline_ms: (f64, f64),
    /// Acceptance latency while the pass ran (p50, p99, max), ms.
    pub during_ms: (f64, f64, f64),
    /// Store file bytes before the pass, and after it and the space reclaim.
    pub file_bytes: (u64, u64),
    /// Seconds the reclaim step took.
    pub reclaim_seconds: f64,
}

/// Runs the phase in `dir` with `seeded` generated referrals and `prepared` acceptances to
/// commit during it.
pub async fn run(
    config: &Config,
    corpus: &Corpus,
    dir: &Path,
    seeded: u64,
    prepared: usize,
    now: u64,
) -> Result<Housekeeping, BenchError> {
    let measure = |what: &str| {
        let what = what.to_owned();
        move |e: refex::store::StoreError| BenchError::Measure(format!("{what}: {e}"))
    };
    let path = dir.join("housekeeping.db");
    let url = format!("sqlite://{}", path.display());
    let store = refex::store::open_with(&url, config.settings.store.group_commit())
        .await
        .map_err(|e| BenchError::Setup(format!("store: {e}")))?;
    let caller = super::micro::sender(config)?;
    let mut acceptances = prepare(config, corpus, &caller, prepared + 1, now)?;
    let template = acceptances
        .pop()
        .ok_or_else(|| BenchError::Setup("no template acceptance".into()))?;
    store.accept(template).await.map_err(measure("template"))?;

    let cutoff = now as i64 - 86_400;
    let started = Instant::now();
    seed(&url, seeded, cutoff - SEED_AGE_SECONDS).await?;
    let seed_seconds = started.elapsed().as_secs_f64();
    let held = bytes_in_use(&url).await?;
    let file_before = file_bytes(&path);

    // A few unmeasured acceptances first: the first commits after the seed pay a one-off
    // cost (the new write-ahead log, cold pages) that is neither baseline nor purge.
    let warm = acceptances.split_off(acceptances.len().saturating_sub(acceptances.len() / 20));
    for a in warm {
        store.accept(a).await.map_err(measure("warm-up"))?;
    }
    // A baseline of acceptances with nothing else running, then the pass beside the rest.
    let baseline_count = acceptances.len() / 5;
    let rest = acceptances.split_off(baseline_count);
    let baseline = accept_at_rate(&store, acceptances, None).await?;
    let pass_done = Arc::new(tokio::sync::Notify::new());
    let pass = {
        let (store, done) = (store.clone(), pass_done.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let purged = store
                .purge_records(UnixTime::from_secs(cutoff), UnixTime::from_secs(now as i64))
                .await;
            done.notify_one();
            purged.map(|n| (n, start.elapsed().as_secs_f64()))
        })
    };
    let during = accept_at_rate(&store, rest, Some(pass_done)).await?;
    let (purged, pass_seconds) = pass
        .await
        .map_err(|e| BenchError::Measure(e.to_string()))?
        .map_err(measure("purge"))?;
    let reclaim = Instant::now();
    store.reclaim_space().await.map_err(measure("reclaim"))?;
    let reclaim_seconds = reclaim.elapsed().as_secs_f64();
    store.close().await;
    let file_after = file_bytes(&path);
    let _ = std::fs::remove_file(&path);

    Ok(Housekeeping {
        seeded,
        seed_seconds,
        seeded_bytes_per_referral: held.per_referral(),
        purged,
        pass_seconds,
        purged_per_second: purged as f64 / pass_seconds.max(1e-9),
        accepted_during: during.len() as u64,
        baseline_ms: (percentile(&baseline, 0.5), percentile(&baseline, 0.99)),
        during_ms: (
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            percentile(&during, 1.0),
        ),
        file_bytes: (file_before, file_after),
        reclaim_seconds,
    })
}

/// `n` acceptances of 5 KiB referrals to two recipients, each with its own `jti`.
fn prepare(
    config: &Config,
    corpus: &Corpus,
    caller: &Principal,
    n: usize,
    now: u64,
) -> Result<Vec<Acceptance>, BenchError> {
    let bodies: Vec<Bytes> = corpus.bodies(n, 2, 5 * 1024, "housekeeping", now)?;
    super::micro::acceptances(config, caller, &bodies, now)
}

/// Commits `acceptances` at [`ACCEPT_RATE`], each in its own task, and returns each one's
/// latency in ms from its scheduled start. With `until`, stops scheduling once it fires (or
/// the acceptances run out).
async fn accept_at_rate(
    store: &Arc<dyn Store>,
    acceptances: Vec<Acceptance>,
    until: Option<Arc<tokio::sync::Notify>>,
) -> Result<Vec<f64>, BenchError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(until) = until {
        let stop = stop.clone();
        tokio::spawn(async move {
            until.notified().await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let interval = Duration::from_secs_f64(1.0 / ACCEPT_RATE);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(acceptances.len());
    for (k, a) in acceptances.into_iter().enumerate() {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let scheduled = start + interval * k as u32;
        tokio::time::sleep_until(scheduled).await;
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .accept(a)
                .await
                .map(|_| scheduled.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        let ms = t
            .await
            .map_err(|e| BenchError::Measure(e.to_string()))?
            .map_err(|e| BenchError::Measure(format!("acceptance during housekeeping: {e}")))?;
        latencies.push(ms);
    }
    Ok(latencies)
}

/// The `q` quantile (0..=1) of `values`, 0 for none.
fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn file_bytes(path: &Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

async fn connect(url: &str) -> Result<sqlx::SqliteConnection, BenchError> {
    use sqlx::ConnectOptions as _;
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
        .map_err(|e| BenchError::Setup(format!("seeding connection: {e}")))?
        // Seeding statements run for seconds by design: not worth a warning each.
        .disable_statement_logging();
    options
        .connect()
        .await
        .map_err(|e| BenchError::Setup(format!("seeding connection: {e}")))
}

/// What a store holds: referrals, the bytes of its pages in use (free pages left out), and
/// the bytes of the sealed deliveries among them.
#[derive(Clone, Debug)]
pub struct StoreBytes {
    /// Referrals.
    pub referrals: u64,
    /// Bytes of the pages in use.
    pub used: u64,
    /// Bytes of the sealed deliveries still held, as compact JWE text (what recipients
    /// fetch; the store keeps them packed).
    pub sealed: u64,
    /// Where the pages go: each table with its indexes, largest first (SQLite's `dbstat`).
    pub tables: Vec<TableBytes>,
}

/// One table's pages, its indexes' included.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableBytes {
    /// The table.
    pub table: String,
    /// Bytes of its pages and its indexes' pages.
    pub bytes: u64,
    /// Of those, bytes no row uses.
    pub unused: u64,
}

impl StoreBytes {
    /// Bytes in use per referral.
    pub fn per_referral(&self) -> f64 {
        self.used as f64 / self.referrals.max(1) as f64
    }

    /// Bytes in use ÷ the bytes of the sealed deliveries they hold.
    pub fn over_sealed(&self) -> f64 {
        self.used as f64 / self.sealed.max(1) as f64
    }
}

/// What the store at `url` holds (see [`StoreBytes`]).
pub async fn bytes_in_use(url: &str) -> Result<StoreBytes, BenchError> {
    let mut conn = connect(url).await?;
    let q = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let fail = |e: sqlx::Error| BenchError::Measure(format!("store size: {e}"));
    let referrals = q("SELECT COUNT(*) FROM referrals")
        .fetch_one(&mut conn)
        .await
        .map_err(fail)?;
    let pages = q("PRAGMA page_count")
        .fetch_one(&mut conn)
        .await
        .map_err(fail)?;
    let free = q("PRAGMA freelist_count")
        .fetch_one(&mut conn)
        .await
        .map_err(fail)?;
    let size = q("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .map_err(fail)?;
    // The ciphertext as recipients fetch it (compact JWE text), however the store keeps it.
    let sealed = q("SELECT COALESCE(SUM(bytes), 0) FROM deliveries \
                    WHERE sealed IS NOT NULL OR sealed_packed IS NOT NULL")
    .fetch_one(&mut conn)
    .await
    .map_err(fail)?;
    let tables: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize), SUM(d.unused) \
           FROM dbstat d LEFT JOIN sqlite_schema m ON m.name = d.name \
          GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(fail)?;
    let _ = conn.close().await;
    Ok(StoreBytes {
        referrals: referrals as u64,
        used: ((pages - free) * size) as u64,
        sealed: sealed as u64,
        tables: tables
            .into_iter()
            .map(|(table, bytes, unused)| TableBytes {
                table,
                bytes: bytes as u64,
                unused: unused as u64,
            })
            .collect(),
    })
}

/// The columns of `table`, in order.
async fn columns(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<Vec<String>, BenchError> {
    let rows = // `table` is one of this module's own table names, never input.
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({table})")))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| BenchError::Setup(format!("columns of {table}: {e}")))?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::Setup(format!("columns of {table}: {e}")))
}

/// An `INSERT … SELECT` cloning `table`'s template rows (`t`, filtered by `template`) once
/// per number `n.i` in `?1..=?2`; `exprs` replaces a column's value (others are copied, and
/// `skip` ones left to their defaults). `?3` is the seeded referrals' first arrival time.
async fn clone_statement(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    template: &str,
    exprs: &[(&str, &str)],
    skip: &[&str],
) -> Result<String, BenchError> {
    let cols: Vec<String> = columns(conn, table)
        .await?
        .into_iter()
        .filter(|c| !skip.contains(&c.as_str()))
        .collect();
    let values: Vec<String> = cols
        .iter()
        .map(|c| {
            exprs
                .iter()
                .find(|(name, _)| name == c)
                .map_or_else(|| format!("t.{c}"), |(_, e)| (*e).to_owned())
        })
        .collect();
    Ok(format!(
        "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         INSERT INTO {table} ({}) SELECT {} FROM n, {template}",
        cols.join(", "),
        values.join(", ")
    ))
}

/// Generates `count` referrals past retention from the store's one referral.
async fn seed(url: &str, count: u64, first_at: i64) -> Result<(), BenchError> {
    let mut conn = connect(url).await?;
    let fail = |e: sqlx::Error| BenchError::Setup(format!("seeding: {e}"));
    // The bench's throwaway store: durability does not matter while it is filled.
    sqlx::query("PRAGMA synchronous = OFF")
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    let template: String = sqlx::query_scalar("SELECT id FROM referrals LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .map_err(fail)?;
    let rid = "'ref_' || printf('%026d', n.i)";
    let at = "?3 + n.i / 100";
    let referrals = clone_statement(
        &mut conn,
        "referrals",
        "(SELECT * FROM referrals WHERE id = ?4) t",
        &[("id", rid), ("received_at", at), ("supersedes", "NULL")],
        &[],
    )
    .await?;
    let deliveries = clone_statement(
        &mut conn,
        "deliveries",
        "(SELECT *, ROW_NUMBER() OVER (ORDER BY seq) AS k FROM deliveries \
          WHERE referral_id = ?4) t",
        &[
            (
                "id",
                "'dlv_' || printf('%024d', n.i) || printf('%02d', t.k)",
            ),
            ("referral_id", rid),
            ("status", "'acknowledged'"),
            // Positions before every real one, unique per recipient.
            ("inbox_pos", "-(n.i * 100 + t.k)"),
            ("sealed", "NULL"),
            ("sealed_packed", "NULL"),
            ("created_at", at),
            ("updated_at", at),
        ],
        &["seq"],
    )
    .await?;
    let events = clone_statement(
        &mut conn,
        "audit_events",
        "(SELECT * FROM audit_events WHERE referral_id = ?4) t",
        &[
            ("referral_id", rid),
            ("delivery_id", "NULL"),
            ("at", at),
            ("idx", "NULL"),
        ],
        &["seq"],
    )
    .await?;
    let subjects = clone_statement(
        &mut conn,
        "subject_keys",
        "(SELECT * FROM subject_keys WHERE referral_id = ?4) t",
        &[("referral_id", rid)],
        &[],
    )
    .await?;
    let mut from = 1u64;
    while from <= count {
        let to = (from + SEED_CHUNK - 1).min(count);
        let mut tx = conn.begin().await.map_err(fail)?;
        for sql in [&referrals, &deliveries, &events, &subjects] {
            // Built from this module's own names and the store's column list.
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(from as i64)
                .bind(to as i64)
                .bind(first_at)
                .bind(&template)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        from = to + 1;
    }
    // The seed sits in the write-ahead log; folding it into the database now keeps that
    // work out of the baseline acceptances' latency.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    let _ = conn.close().await;
    Ok(())
}
