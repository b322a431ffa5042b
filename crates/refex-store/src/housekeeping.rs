//! Retention and the gateway's own bookkeeping: expiry and purge in short bounded batches
//! (never holding the writer long enough to delay an acceptance), replay markers, replicas'
//! heartbeats, once-only notices, returning space.

use std::time::{Duration, Instant};

use refex_core::audit::event::{self as ev, AuditEvent};
use refex_core::identity::PartnerId;
use refex_core::ids::ReplicaId;
use refex_core::lifecycle::{DeliveryStatus, Step};
use refex_core::timestamp::UnixTime;

use crate::common::{
    Closing, EXPIRY_DUE, HOUSEKEEPING_BATCH, HOUSEKEEPING_MAX_BATCHES, PURGE_BATCH_BUDGET,
    PURGE_MAX_BATCHES, SqlStore, close_each, job_lock,
};
use crate::records::AuditRecord;
use crate::sql::{Arg, Dialect, Scalar, Stmt, Tx};
use crate::{StoreError, Table, rows};

#[async_trait::async_trait]
impl<D: Dialect> crate::HousekeepingStore for SqlStore<D> {
    async fn expire_deliveries(
        &self,
        recipient: &PartnerId,
        cutoff: UnixTime,
        at: UnixTime,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "{} LIMIT {HOUSEKEEPING_BATCH}{}",
            *EXPIRY_DUE,
            D::FOR_UPDATE
        );
        let mut total = 0;
        for _ in 0..HOUSEKEEPING_MAX_BATCHES {
            let mut tx = self.writer.begin().await?;
            // Of several replicas, one does this job at a time; the next finds it done.
            if !job_lock(&mut tx, &format!("expire:{recipient}")).await? {
                return Ok(total);
            }
            let due: Vec<(String, String, String, String)> = tx
                .fetch_all(
                    Stmt::new("expire", sql.clone())
                        .bind(recipient.as_str())
                        .bind(cutoff),
                )
                .await?;
            let batch = due.len();
            total += expire_each(&mut tx, due, at).await?;
            tx.commit().await?;
            if batch < HOUSEKEEPING_BATCH {
                break;
            }
            // Let waiting acceptances take the writer between batches.
            tokio::task::yield_now().await;
        }
        Ok(total)
    }

    async fn expire_unknown_recipients(
        &self,
        known: &[PartnerId],
        cutoff: UnixTime,
        at: UnixTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        if !job_lock(&mut tx, "expire-unknown").await? {
            return Ok(0);
        }
        let statuses = DeliveryStatus::IN_INBOX.len();
        let mut args: Vec<Arg<'_>> = DeliveryStatus::IN_INBOX
            .iter()
            .map(|s| Arg::from(s.as_str()))
            .collect();
        args.push(cutoff.into());
        let list = |from: usize, n: usize| {
            (from..from + n)
                .map(|k| format!("${k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!(
            "SELECT id, referral_id, recipient, status FROM deliveries WHERE status IN ({}) \
             AND COALESCE(queued_at, created_at) < ${}",
            list(1, statuses),
            statuses + 1
        );
        if !known.is_empty() {
            sql.push_str(&format!(
                " AND recipient NOT IN ({})",
                list(statuses + 2, known.len())
            ));
            args.extend(known.iter().map(|p| Arg::from(p.as_str())));
        }
        sql.push_str(" ORDER BY seq");
        sql.push_str(D::FOR_UPDATE);
        let stmt = args
            .into_iter()
            .fold(Stmt::new("expire unknown", sql), Stmt::bind);
        let due: Vec<(String, String, String, String)> = tx.fetch_all(stmt).await?;
        let expired = expire_each(&mut tx, due, at).await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn purge_records(&self, cutoff: UnixTime, at: UnixTime) -> Result<u64, StoreError> {
        let mut total = 0;
        for _ in 0..PURGE_MAX_BATCHES {
            let (done, more) = self.purge_batch(cutoff, at).await?;
            total += done;
            if !more || done == 0 {
                break;
            }
            // Let waiting acceptances take the writer between batches.
            tokio::task::yield_now().await;
        }
        Ok(total)
    }

    async fn purge_replay_markers(&self, max_age: Duration) -> Result<u64, StoreError> {
        // The database's clock, not this replica's: a replica whose clock runs ahead cannot
        // purge markers another replica still needs to refuse a replay.
        self.writer
            .execute(
                Stmt::new(
                    "purge replay markers",
                    format!(
                        "DELETE FROM replay_markers WHERE seen_at < {} - $1",
                        D::DB_NOW
                    ),
                )
                .bind(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)),
            )
            .await
    }

    async fn heartbeat(
        &self,
        id: &ReplicaId,
        at: UnixTime,
        live_after: UnixTime,
        forget_before: UnixTime,
    ) -> Result<u32, StoreError> {
        // Each statement on its own: replicas announcing at once (and forgetting each other
        // after a clock jump) never hold one row while waiting for another.
        self.writer
            .execute(
                Stmt::new(
                    "heartbeat",
                    "INSERT INTO replicas (id, seen_at) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                )
                .bind(id.to_string())
                .bind(at),
            )
            .await?;
        self.writer
            .execute(
                Stmt::new(
                    "heartbeat",
                    "DELETE FROM replicas WHERE seen_at < $1 AND id <> $2",
                )
                .bind(forget_before)
                .bind(id.to_string()),
            )
            .await?;
        let Scalar(live): Scalar<i64> = self
            .pool
            .fetch_one(
                Stmt::new(
                    "heartbeat",
                    "SELECT COUNT(*) FROM replicas WHERE seen_at >= $1",
                )
                .bind(live_after),
            )
            .await?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX).max(1))
    }

    async fn forget_replica(&self, id: &ReplicaId) -> Result<(), StoreError> {
        self.writer
            .execute(
                Stmt::new("forget replica", "DELETE FROM replicas WHERE id = $1")
                    .bind(id.to_string()),
            )
            .await
            .map(|_| ())
    }

    async fn reclaim_space(&self) -> Result<(), StoreError> {
        // PostgreSQL's autovacuum does this by itself; SQLite returns freed pages to the file
        // system a bounded number at a time (incremental auto-vacuum).
        if D::RECLAIM.is_empty() {
            return Ok(());
        }
        self.writer
            .execute(Stmt::new("reclaim space", D::RECLAIM))
            .await
            .map(|_| ())
    }

    async fn claim_notice(
        &self,
        notice: &crate::records::OnceNotice,
        at: UnixTime,
        forget_before: UnixTime,
    ) -> Result<bool, StoreError> {
        // Each statement on its own (no lock held while waiting for another).
        self.writer
            .execute(
                Stmt::new("claim notice", "DELETE FROM notices WHERE at < $1").bind(forget_before),
            )
            .await?;
        let done = self
            .writer
            .execute(
                Stmt::new(
                    "claim notice",
                    "INSERT INTO notices (key, at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(notice.key())
                .bind(at),
            )
            .await?;
        Ok(done == 1)
    }

    async fn count_rows(&self, table: Table) -> Result<i64, StoreError> {
        let Scalar(n) = self
            .pool
            .fetch_one(Stmt::new("count", table.count_sql()))
            .await?;
        Ok(n)
    }
}

impl<D: Dialect> SqlStore<D> {
    /// One purge batch, in its own transaction: at most [`HOUSEKEEPING_BATCH`] referrals past
    /// the cutoff with no activity since and no correction pointing at them, and no more than
    /// [`PURGE_BATCH_BUDGET`] of work, their records deleted and their events' content
    /// cleared. Returns how many, and whether more may be due.
    async fn purge_batch(&self, cutoff: UnixTime, at: UnixTime) -> Result<(u64, bool), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Of several replicas, one does this job at a time; the next finds it done.
        if !job_lock(&mut tx, "purge").await? {
            return Ok((0, false));
        }
        // The budget counts this batch's own work, not the wait for the writer or for
        // another replica's batch (which would leave one referral per transaction).
        let started = Instant::now();
        let due: Vec<Scalar<String>> = tx
            .fetch_all(
                Stmt::new(
                    "purge",
                    "SELECT r.id FROM referrals r WHERE r.received_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.referral_id = r.id \
                     AND d.updated_at >= $1) \
                     AND NOT EXISTS (SELECT 1 FROM referrals n WHERE n.supersedes = r.id) \
                     ORDER BY r.received_at LIMIT $2",
                )
                .bind(cutoff)
                .bind(HOUSEKEEPING_BATCH as i64),
            )
            .await?;
        let mut events = Vec::with_capacity(due.len());
        for Scalar(id) in &due {
            if !events.is_empty() && started.elapsed() >= PURGE_BATCH_BUDGET {
                break;
            }
            let referral = rows::referral_id("referrals", id)?;
            for sql in [
                "DELETE FROM holds WHERE referral_id = $1",
                "DELETE FROM deliveries WHERE referral_id = $1",
                "DELETE FROM subject_keys WHERE referral_id = $1",
                "DELETE FROM referrals WHERE id = $1",
                // The events' content goes; their leaf hashes stay in audit_nodes, so the
                // tree and every checkpoint still verify.
                "UPDATE audit_events SET leaf = NULL, packed_detail = NULL, actor = NULL \
                 WHERE referral_id = $1",
            ] {
                tx.execute(Stmt::new("purge", sql).bind(id)).await?;
            }
            events.push(
                AuditRecord::new(
                    at,
                    None,
                    AuditEvent::Purged(ev::Purged {
                        what: "referral and delivery records".into(),
                    }),
                )
                .about(&referral),
            );
        }
        crate::audit::insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        // Purging a correction can make the referral it corrected due: keep going until a
        // batch finds nothing (a chain no longer waits a pass per link).
        let more = !events.is_empty();
        Ok((events.len() as u64, more))
    }
}

/// Expires each `(id, referral, recipient, status)` row the lifecycle lets expire:
/// ciphertext deleted, an `expired` event each. Returns how many.
async fn expire_each<D: Dialect>(
    tx: &mut Tx<D>,
    due: Vec<(String, String, String, String)>,
    at: UnixTime,
) -> Result<u64, StoreError> {
    let due = due
        .into_iter()
        .map(Closing::read)
        .collect::<Result<Vec<_>, _>>()?;
    let events = close_each(tx, &due, Step::Expire, at, None, |to| {
        AuditEvent::Expired(ev::ToRecipient { to: to.clone() })
    })
    .await?;
    crate::audit::insert_events(tx, &events).await?;
    Ok(events.len() as u64)
}
