//! Housekeeping: expire deliveries left unacknowledged past their recipient's retention,
//! purge referral records with no activity for the retention period, drop replay markers
//! that the `iat` check makes redundant, escalate holds undecided past the review deadline,
//! close holds undecided past the maximum (never released),
//! and sign an audit checkpoint when the tree grew. Runs on an interval inside `serve` and once
//! from `refex purge`; time comes from the runtime's clock, so tests advance a clock rather
//! than wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::store::StoreError;
use crate::timestamp::UnixTime;

/// The least time a delivery to a partner no longer configured is kept before it expires.
pub const UNKNOWN_RECIPIENT_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Deliveries expired.
    pub expired: u64,
    /// Referral records purged.
    pub purged: u64,
    /// Replay markers dropped.
    pub markers: u64,
    /// Size of the audit checkpoint signed (or confirmed) by this pass.
    pub checkpoint: u64,
    /// Holds escalated by this pass.
    pub escalated: u64,
    /// Holds closed undecided (never released) by this pass.
    pub closed: u64,
}

/// Runs one pass.
pub async fn run_once(rt: &Runtime) -> Result<Report, StoreError> {
    let now = rt.clock.unix_time();
    let snapshot = rt.snapshot();
    snapshot.limits.load().forget_idle();
    // Refusals the store could not take when they happened.
    rt.replay_spool().await;
    let config = &snapshot.config;
    let mut report = Report::default();
    // Announce this replica and count the live ones (each announces every pass): rate quotas
    // are divided among them unless the settings fix the number.
    // Only serving gateways announce themselves (`refex purge` is not a replica).
    if rt.serving.load(std::sync::atomic::Ordering::Relaxed) {
        let interval = config
            .settings
            .retention
            .housekeeping_interval
            .max(std::time::Duration::from_secs(1));
        // Counting is best effort: on a failure the last count stands, the pass goes on.
        match rt
            .store
            .heartbeat(
                &rt.replica,
                now,
                now.before(interval.saturating_mul(3)),
                now.before(ONE_DAY),
            )
            .await
        {
            Ok(live) => {
                metrics::gauge!(crate::telemetry::REPLICAS_LIVE).set(f64::from(live));
                if config.settings.replicas.is_none() {
                    rt.replicas_counted(live);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not count the replicas this pass"),
        }
    }
    for partner in config.policy.partners.values() {
        let cutoff = now.before(partner.inbox_retention);
        report.expired += rt.store.expire_deliveries(&partner.id, cutoff, now).await?;
    }
    // A partner removed from the configuration can no longer fetch: what waits for it goes,
    // but only once no configured retention could still be keeping it (the longest, at
    // least 30 days), so a partner file removed or renamed by mistake and restored loses
    // nothing.
    let known: Vec<crate::identity::PartnerId> = config.policy.partners.keys().cloned().collect();
    let grace = config
        .policy
        .partners
        .values()
        .map(|p| p.inbox_retention)
        .max()
        .unwrap_or_default()
        .max(UNKNOWN_RECIPIENT_GRACE);
    report.expired += rt
        .store
        .expire_unknown_recipients(&known, now.before(grace), now)
        .await?;
    let review_cutoff = now.before(config.settings.review.escalate_after);
    report.escalated = rt.store.escalate_holds(review_cutoff, now).await?;
    let close_cutoff = now.before(config.settings.review.close_undecided_after);
    report.closed = rt.store.close_undecided_holds(close_cutoff, now).await?;
    metrics::gauge!(crate::telemetry::HOLDS_ESCALATED)
        .set(rt.store.count_escalated().await? as f64);
    notify_leads(rt, config, now, report.escalated > 0).await?;
    let records_cutoff = now.before(config.settings.retention.records);
    report.purged = rt.store.purge_records(records_cutoff, now).await?;
    if report.purged > 0 || report.expired > 0 {
        rt.store.reclaim_space().await?;
    }
    // A marker matters only while its referral's `iat` could still pass the skew check.
    // Measured by the database's clock (replicas' clocks may differ by up to the skew).
    report.markers = rt
        .store
        .purge_replay_markers(config.settings.limits.iat_skew.saturating_mul(2))
        .await?;
    // Sign a checkpoint whenever the tree has grown, so auditors always have a recent one.
    let checkpoint = crate::audit::log::checkpoint(rt)
        .await
        .map_err(|e| match e {
            crate::audit::log::AuditError::Store(s) => s,
            other => StoreError::Query {
                op: "checkpoint",
                reason: other.to_string(),
            },
        })?;
    report.checkpoint = checkpoint.size;
    // As of now a signed checkpoint covers the whole log (signed now, or earlier and the log
    // has not grown since).
    metrics::gauge!(crate::telemetry::CHECKPOINT_TIME).set(now.secs() as f64);
    observe(rt, config, now).await?;
    Ok(report)
}

/// The gauges operators alert on: each partner's inbox backlog, its oldest delivery's age
/// and its retention (a partner that stopped polling; deliveries near expiry), holds
/// waiting, and when the gateway's and its CAs' certificates expire.
async fn observe(
    rt: &Runtime,
    config: &crate::config::Config,
    now: UnixTime,
) -> Result<(), StoreError> {
    use crate::telemetry as t;
    let backlog = rt.store.inbox_backlog().await?;
    for p in config.policy.partners.values() {
        let (count, oldest) = backlog
            .iter()
            .find(|(id, _, _)| id == &p.id)
            .map_or((0, None), |(_, n, at)| (*n, *at));
        let partner = p.id.to_string();
        metrics::gauge!(t::INBOX_BACKLOG, "partner" => partner.clone()).set(count as f64);
        metrics::gauge!(t::INBOX_OLDEST, "partner" => partner.clone())
            .set(oldest.map_or(0, |at| now.since(at).as_secs()) as f64);
        metrics::gauge!(t::INBOX_RETENTION, "partner" => partner)
            .set(p.inbox_retention.as_secs() as f64);
    }
    metrics::gauge!(t::HOLDS_WAITING)
        .set(rt.store.count_rows(crate::store::Table::Holds).await? as f64);
    let snapshot = rt.snapshot();
    crate::server::certificates::prune(config);
    if let Some(at) = snapshot.transport.server_expiry {
        metrics::gauge!(t::SERVER_CERT_EXPIRY).set(at as f64);
    }
    for (ca, at) in &snapshot.transport.ca_expiries {
        metrics::gauge!(t::CA_CERT_EXPIRY, "ca" => ca.clone()).set(*at as f64);
    }
    Ok(())
}

/// How long a once-only notice's claim is kept (the day's digest needs one day; a margin).
const NOTICE_CLAIMS_KEPT: Duration = Duration::from_secs(40 * 86_400);

const ONE_DAY: Duration = Duration::from_secs(86_400);

/// Tells the leads of partners with `[notify]` targets what this pass escalated (the
/// replica whose pass escalated a hold is the one that stamped it `now`), and, once a day
/// after `notify.digest_hour` (UTC), what waits: the day's digest is claimed in the store,
/// so one replica sends it, once, even across restarts.
async fn notify_leads(
    rt: &Runtime,
    config: &crate::config::Config,
    now: UnixTime,
    escalated: bool,
) -> Result<(), StoreError> {
    let hour = (now.secs().rem_euclid(86_400) / 3600) as u8;
    let day = now.secs().div_euclid(86_400);
    let digest_due = hour >= config.settings.notify.digest_hour;
    for p in config.policy.partners.values() {
        if p.notify.email.is_empty() && p.notify.webhook.is_none() {
            continue;
        }
        if !escalated && !digest_due {
            continue;
        }
        let held = rt.store.held_referrals(&p.id).await?;
        if escalated {
            let count = held.iter().filter(|h| h.escalated_at == Some(now)).count();
            if count > 0 {
                rt.notifier.notify(
                    config,
                    crate::notify::Notice::Escalated {
                        partner: p.id.clone(),
                        count,
                    },
                );
            }
        }
        // Only a gateway that sends notices claims the day's digest (`refex purge` does not).
        if digest_due
            && rt.notifier.is_started()
            && !held.is_empty()
            && rt
                .store
                .claim_notice(
                    &crate::store::records::OnceNotice::DailyDigest {
                        partner: p.id.clone(),
                        day,
                    },
                    now,
                    now.before(NOTICE_CLAIMS_KEPT),
                )
                .await?
        {
            rt.notifier.notify(
                config,
                crate::notify::Notice::Digest {
                    partner: p.id.clone(),
                    waiting: held.len(),
                    escalated: held.iter().filter(|h| h.escalated_at.is_some()).count(),
                },
            );
        }
    }
    Ok(())
}

/// How often a CRL due or overdue, or a certificate expiring, is logged again (the metrics
/// and `/readyz` say it always).
const CRL_LOG_EVERY: Duration = Duration::from_secs(3600);

/// Updates the CRL metric and logs every CRL due or overdue and every gateway or CA
/// certificate expiring, at most once per [`CRL_LOG_EVERY`] unless there are more of them
/// than last time (a new warning is logged at once); returns when it last logged, and how
/// many.
fn warn_of_expiries(
    rt: &Runtime,
    last: Option<(tokio::time::Instant, usize)>,
) -> Option<(tokio::time::Instant, usize)> {
    let snapshot = rt.snapshot();
    let now = rt.clock.now();
    let mut lines: Vec<String> = crate::trust::observe(
        &snapshot.transport.crls,
        now,
        snapshot.config.settings.tls.crl_warn_before,
    )
    .into_iter()
    .map(|(_, line)| line)
    .collect();
    lines.extend(crate::readiness::certificate_warnings(
        &snapshot.transport,
        snapshot.config.settings.tls.certificate_warn_before,
        now,
    ));
    if lines.is_empty() {
        return None;
    }
    if last.is_some_and(|(t, n)| t.elapsed() < CRL_LOG_EVERY && lines.len() <= n) {
        return last;
    }
    let count = lines.len();
    for line in lines {
        tracing::warn!("{line}");
    }
    Some((tokio::time::Instant::now(), count))
}

/// Runs [`run_once`] every `interval` until `stop` turns true.
pub async fn run_every(rt: Arc<Runtime>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut crl_logged: Option<(tokio::time::Instant, usize)> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        crl_logged = warn_of_expiries(&rt, crl_logged);
        // Readiness kept current (refex_ready) where nothing probes /readyz.
        crate::readiness::assess(&rt).await;
        match run_once(&rt).await {
            Ok(r) => {
                use crate::telemetry as t;
                metrics::counter!(t::HOUSEKEEPING_RUNS, "outcome" => "ok").increment(1);
                metrics::gauge!(t::HOUSEKEEPING_LAST_SUCCESS).set(rt.clock.unix_seconds() as f64);
                for (what, n) in [
                    ("expired", r.expired),
                    ("purged", r.purged),
                    ("escalated", r.escalated),
                    ("closed", r.closed),
                ] {
                    metrics::counter!(t::HOUSEKEEPING_DONE, "what" => what).increment(n);
                }
                if r != Report::default() {
                    tracing::info!(
                        expired = r.expired,
                        purged = r.purged,
                        markers = r.markers,
                        "housekeeping"
                    );
                }
            }
            Err(e) => {
                metrics::counter!(crate::telemetry::HOUSEKEEPING_RUNS, "outcome" => "failed")
                    .increment(1);
                tracing::warn!(error = %e, "housekeeping failed; will retry");
            }
        }
    }
}
