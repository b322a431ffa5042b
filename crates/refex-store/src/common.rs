//! The SQL both backends share, generated for each pool type by one macro: sqlx accepts `$N`
//! placeholders on SQLite too, so the statements are written once. Every list of delivery
//! statuses in a statement is generated from `lifecycle::DeliveryStatus` (the statics below);
//! every status change asks `lifecycle::next` first; rows become typed records in `rows`.

use std::sync::LazyLock;

use refex_core::lifecycle::{DeliveryStatus, sql_list};

/// Rows per multi-row `INSERT`: 10 columns × 500 rows stays far below SQLite's 32,766 bound
/// variables and PostgreSQL's 65,535, while one statement carries a whole typical batch.
pub(crate) const INSERT_CHUNK: usize = 500;

/// Statuses of deliveries in their recipient's inbox.
static IN_INBOX: LazyLock<String> = LazyLock::new(|| sql_list(&DeliveryStatus::IN_INBOX));

/// Statuses a withdrawal reaches.
static OPEN: LazyLock<String> = LazyLock::new(|| sql_list(&DeliveryStatus::OPEN));

/// Each recipient's inbox backlog.
pub(crate) static INBOX_BACKLOG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT recipient, COUNT(*), MIN(queued_at) FROM deliveries \
         WHERE status IN ({}) GROUP BY recipient",
        *IN_INBOX
    )
});

/// A recipient's inbox page.
pub(crate) static INBOX_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.id, r.sender, r.referral_type, r.received_at, d.bytes, d.inbox_pos, d.status \
         FROM deliveries d JOIN referrals r ON r.id = d.referral_id \
         WHERE d.recipient = $1 AND d.status IN ({}) AND d.inbox_pos > $2 \
         ORDER BY d.inbox_pos LIMIT $3",
        *IN_INBOX
    )
});

/// A recipient's deliveries due to expire: in the inbox since before the cutoff.
pub(crate) static EXPIRY_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, referral_id, status FROM deliveries WHERE recipient = $1 \
         AND status IN ({}) AND COALESCE(queued_at, created_at) < $2 ORDER BY seq",
        *IN_INBOX
    )
});

/// Rows one housekeeping transaction handles at most: each batch is its own short
/// transaction, so an expiry or purge of any size never holds the writer (SQLite's one
/// writer above all) long enough to delay an acceptance by more than a batch.
pub(crate) const HOUSEKEEPING_BATCH: usize = 500;

/// Batches one housekeeping call works through at most; the rest waits for the next pass.
pub(crate) const HOUSEKEEPING_MAX_BATCHES: usize = 200;

/// Longest one purge transaction keeps adding referrals: purging one costs a few hundred
/// microseconds on a large store (its rows are spread over pages not in cache), so a batch
/// of 500 held the writer ~150 ms and an acceptance arriving meanwhile waited it out
/// (`refex bench`, 10⁶ referrals; with 10 ms batches the p99 was still 31 ms, the batch's
/// own commit adding to its work). A batch stops at this budget and commits.
pub(crate) const PURGE_BATCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(4);

/// Purge batches one call works through at most (each within [`PURGE_BATCH_BUDGET`]).
pub(crate) const PURGE_MAX_BATCHES: usize = 4_000;

/// A referral's deliveries that a withdrawal reaches.
pub(crate) static OPEN_DELIVERIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, recipient, status FROM deliveries WHERE referral_id = $1 \
         AND status IN ({}) ORDER BY seq",
        *OPEN
    )
});

/// The referrals a partner may find by subject: those it sent, and its deliveries that
/// reached it: in its inbox now, or fetched (whatever became of them since). One
/// acknowledged, withdrawn or expired without ever being fetched was never received.
/// Recipient keys are only ever written when a delivery enters the inbox.
pub(crate) static SUBJECT_MATCHES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.referral_id, s.delivery_id FROM subject_keys s \
         LEFT JOIN deliveries d ON d.id = s.delivery_id \
         WHERE s.subject = $1 AND s.partner = $2 AND (s.delivery_id IS NULL OR \
         (d.recipient = $2 AND (d.status IN ({}) OR d.fetched_at IS NOT NULL)))",
        sql_list(&DeliveryStatus::IN_INBOX)
    )
});

/// Implements [`Store`](super::Store) for a backend type with `pool`, `writer` and `group`
/// fields, and defines the batch writer `accept_batch` for its pool type.
macro_rules! store_impl {
    ($store:ty, $backend:expr, $conn:ty, $begin:literal, $notify:literal, $job_lock:literal, $for_update:literal, $db_now:literal, $reclaim:literal) => {
        use refex_core::audit::event::{self as ev, ActorRef, AuditEvent};
        use refex_core::identity::PartnerId;
        use refex_core::ids::{DeliveryId, ReferralId};
        use refex_core::lifecycle::{self, DeliveryStatus, Outcome, Step};
        use crate::common::INSERT_CHUNK;
        use crate::records::{self as rec, AuditRecord};
        use crate::rows;
        use crate::{StoreError, query_err};

        type Db = <$conn as sqlx::Connection>::Database;
        type Tx = sqlx::Transaction<'static, Db>;

        // Every read of a delivery that decides its next status locks its row (PostgreSQL
        // `FOR UPDATE`; SQLite's one writer already serialises), so two steps on the same
        // delivery never both act on the status they read. Locks are taken in one order:
        // a referral's hold, then its deliveries, then inbox counters (by recipient).
        static EXPIRY_DUE_LOCKED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{} LIMIT {}{}",
                *crate::common::EXPIRY_DUE,
                crate::common::HOUSEKEEPING_BATCH,
                $for_update
            )
        });
        static OPEN_DELIVERIES_LOCKED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("{}{}", *crate::common::OPEN_DELIVERIES, $for_update)
        });

        impl $store {
            /// One purge batch, in its own transaction: at most [`HOUSEKEEPING_BATCH`]
            /// referrals past the cutoff with no activity since and no correction pointing at
            /// them, and no more than [`PURGE_BATCH_BUDGET`] of work, their records deleted
            /// and their events' content cleared. Returns how many, and whether more may be
            /// due.
            async fn purge_batch(&self, cutoff: i64, at: i64) -> Result<(u64, bool), StoreError> {
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                // Of several replicas, one does this job at a time; the next finds it done.
                if !job_lock(&mut *tx, "purge").await? {
                    return Ok((0, false));
                }
                // The budget counts this batch's own work, not the wait for the writer or for
                // another replica's batch (which would leave one referral per transaction).
                let started = std::time::Instant::now();
                let due: Vec<String> = sqlx::query_scalar(
                    "SELECT r.id FROM referrals r WHERE r.received_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.referral_id = r.id AND d.updated_at >= $1) \
                     AND NOT EXISTS (SELECT 1 FROM referrals n WHERE n.supersedes = r.id) \
                     ORDER BY r.received_at LIMIT $2",
                )
                .bind(cutoff)
                .bind(crate::common::HOUSEKEEPING_BATCH as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err("purge"))?;
                let mut events = Vec::with_capacity(due.len());
                for id in &due {
                    if !events.is_empty() && started.elapsed() >= crate::common::PURGE_BATCH_BUDGET {
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
                        "UPDATE audit_events SET leaf = NULL, actor = NULL WHERE referral_id = $1",
                    ] {
                        sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(query_err("purge"))?;
                    }
                    events.push(
                        AuditRecord::new(
                            at,
                            None,
                            AuditEvent::Purged(ev::Purged { what: "referral and delivery records".into() }),
                        )
                        .about(&referral),
                    );
                }
                insert_events(&mut *tx, &events).await?;
                tx.commit().await.map_err(query_err("commit"))?;
                // Purging a correction can make the referral it corrected due: keep going until
                // a batch finds nothing (a chain no longer waits a pass per link).
                let more = !events.is_empty();
                Ok((events.len() as u64, more))
            }


            /// Begins a transaction that will write. On SQLite this is `BEGIN IMMEDIATE`: a
            /// deferred transaction that reads and then writes fails at once (`SQLITE_BUSY`,
            /// which no busy timeout waits out) if another writer committed in between.
            async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
                begin_fresh(&self.writer).await
            }
        }

        /// Takes a housekeeping job's lock until the transaction ends (PostgreSQL: a
        /// transaction-scoped advisory lock, waited for), so that of several replicas one does
        /// the job at a time: the next finds the work already done. The embedded store has
        /// one process and needs none.
        async fn job_lock(conn: &mut $conn, job: &str) -> Result<bool, StoreError> {
            if $job_lock.is_empty() {
                return Ok(true);
            }
            sqlx::query_scalar::<_, bool>($job_lock)
                .bind(job)
                .fetch_one(conn)
                .await
                .map_err(query_err("job lock"))
        }

        /// Begins a write transaction. A `COMMIT` that failed (a full disk, a lost server)
        /// can hand its connection back still inside the transaction, and every later `BEGIN`
        /// on it would fail: such a connection is closed here and the transaction begun on a
        /// fresh one. (Checking every released connection in a pool hook instead cost ~15 %
        /// of throughput: the hook delays each release.)
        async fn begin_fresh(pool: &sqlx::Pool<Db>) -> Result<Tx, sqlx::Error> {
            match pool.begin_with($begin).await {
                Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::BeginFailed) => {
                    let stale = pool.acquire().await?;
                    if sqlx::Connection::is_in_transaction(&*stale) {
                        let _ = stale.close().await;
                    } else {
                        drop(stale);
                    }
                    pool.begin_with($begin).await
                }
                other => other,
            }
        }

        /// Tells other replicas, at commit, that an inbox changed (PostgreSQL `NOTIFY`; the
        /// embedded store has no other replicas and no statement).
        async fn notify_inbox(conn: &mut $conn) -> Result<(), StoreError> {
            if $notify.is_empty() {
                return Ok(());
            }
            sqlx::query($notify)
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(query_err("notify"))
        }

        /// The next position in `recipient`'s inbox. The counter row stays locked until
        /// commit, so positions become visible in order.
        async fn inbox_position(conn: &mut $conn, recipient: &PartnerId) -> Result<i64, StoreError> {
            sqlx::query_scalar(
                "INSERT INTO inbox_counters (recipient, next) VALUES ($1, 1) \
                 ON CONFLICT (recipient) DO UPDATE SET next = inbox_counters.next + 1 RETURNING next",
            )
            .bind(recipient.as_str())
            .fetch_one(conn)
            .await
            .map_err(query_err("inbox position"))
        }

        /// Writes subject keys for `partner` (a recipient's from its delivery, or the
        /// sender's with no delivery).
        async fn insert_subject_keys(
            conn: &mut $conn,
            rows: &[(&ReferralId, &PartnerId, Option<&DeliveryId>, &String)],
        ) -> Result<(), StoreError> {
            for chunk in rows.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO subject_keys (referral_id, partner, delivery_id, subject) ",
                );
                q.push_values(chunk, |mut row, (referral, partner, delivery, subject)| {
                    row.push_bind(referral.as_str())
                        .push_bind(partner.as_str())
                        .push_bind(delivery.map(DeliveryId::as_str))
                        .push_bind(subject.as_str());
                });
                q.build().execute(&mut *conn).await.map_err(query_err("subject keys"))?;
            }
            Ok(())
        }

        /// The status of one of a referral's deliveries, if it is the referral's.
        /// Expires each `(id, referral, status, recipient)` row the lifecycle lets expire:
        /// ciphertext deleted, an `expired` event each. Returns how many.
        async fn expire_each(
            tx: &mut Tx,
            due: &[(String, String, String, String)],
            at: i64,
        ) -> Result<u64, StoreError> {
            let mut events = Vec::with_capacity(due.len());
            for (id, referral_id, status, recipient) in due {
                let id = rows::delivery_id(id)?;
                let referral = rows::referral_id("deliveries", referral_id)?;
                let Ok(Some(to)) = moved(rows::status(status)?, Step::Expire) else {
                    continue;
                };
                sqlx::query("UPDATE deliveries SET status = $1, sealed = NULL, updated_at = $2 WHERE id = $3")
                    .bind(to.as_str())
                    .bind(at)
                    .bind(id.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(query_err("expire"))?;
                events.push(
                    AuditRecord::new(
                        at,
                        None,
                        AuditEvent::Expired(ev::ToRecipient { to: rows::parse("deliveries", "recipient", recipient)? }),
                    )
                    .about(&referral)
                    .delivery(&id),
                );
            }
            insert_events(&mut **tx, &events).await?;
            Ok(events.len() as u64)
        }

        async fn held_status(
            tx: &mut Tx,
            referral: &ReferralId,
            id: &DeliveryId,
        ) -> Result<Option<DeliveryStatus>, StoreError> {
            let status: Option<String> =
                sqlx::query_scalar(concat!("SELECT status FROM deliveries WHERE id = $1 AND referral_id = $2", $for_update))
                    .bind(id.as_str())
                    .bind(referral.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(query_err("decide"))?;
            status.as_deref().map(rows::status).transpose()
        }

        /// The status a step leads to, or the store's refusal to take it.
        fn moved(from: DeliveryStatus, step: Step) -> Result<Option<DeliveryStatus>, lifecycle::Refusal> {
            lifecycle::next(from, step).map(|o| match o {
                Outcome::Moves(to) => Some(to),
                Outcome::Unchanged => None,
            })
        }

        #[async_trait::async_trait]
        impl crate::Store for $store {
            fn backend(&self) -> crate::Backend {
                $backend
            }

            async fn ping(&self) -> Result<(), StoreError> {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT value FROM refex_meta WHERE key = 'store_format'")
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_err("ping"))?;
                crate::check_format(found)
            }

            async fn close(&self) {
                self.writer.close().await;
                self.pool.close().await;
            }

            fn watch_inbox_changes(&self, on_change: std::sync::Arc<dyn Fn() + Send + Sync>) {
                self.watch_inbox(on_change);
            }

            async fn accept(&self, a: rec::Acceptance) -> Result<rec::AcceptOutcome, StoreError> {
                self.group.submit(a).await
            }

            async fn prior_acceptance(
                &self,
                sender: &PartnerId,
                jti: &str,
            ) -> Result<Option<rec::PriorAcceptance>, StoreError> {
                let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT referral_id, digest FROM replay_markers WHERE sender = $1 AND jti = $2",
                )
                .bind(sender.as_str())
                .bind(jti)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("prior acceptance"))?;
                prior(row)
            }

            async fn expire_deliveries(
                &self,
                recipient: &PartnerId,
                cutoff: i64,
                at: i64,
            ) -> Result<u64, StoreError> {
                let mut total = 0;
                for _ in 0..crate::common::HOUSEKEEPING_MAX_BATCHES {
                    let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                    // Of several replicas, one does this job at a time; the next finds it done.
                    if !job_lock(&mut *tx, &format!("expire:{recipient}")).await? {
                        return Ok(total);
                    }
                    let due: Vec<(String, String, String)> = sqlx::query_as(EXPIRY_DUE_LOCKED.as_str())
                    .bind(recipient.as_str())
                    .bind(cutoff)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_err("expire"))?;
                    let batch = due.len();
                    let due: Vec<(String, String, String, String)> = due
                        .into_iter()
                        .map(|(id, referral, status)| (id, referral, status, recipient.to_string()))
                        .collect();
                    total += expire_each(&mut tx, &due, at).await?;
                    tx.commit().await.map_err(query_err("commit"))?;
                    if batch < crate::common::HOUSEKEEPING_BATCH {
                        break;
                    }
                    // Let waiting acceptances take the writer between batches.
                    tokio::task::yield_now().await;
                }
                Ok(total)
            }

            async fn expire_unknown_recipients(&self, known: &[PartnerId], cutoff: i64, at: i64) -> Result<u64, StoreError> {
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                if !job_lock(&mut *tx, "expire-unknown").await? {
                    return Ok(0);
                }
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT id, referral_id, status, recipient FROM deliveries WHERE status IN (",
                );
                let mut statuses = q.separated(", ");
                for s in DeliveryStatus::IN_INBOX {
                    statuses.push_bind(s.as_str());
                }
                q.push(") AND COALESCE(queued_at, created_at) < ");
                q.push_bind(cutoff);
                if !known.is_empty() {
                    q.push(" AND recipient NOT IN (");
                    let mut names = q.separated(", ");
                    for p in known {
                        names.push_bind(p.as_str());
                    }
                    q.push(")");
                }
                q.push(" ORDER BY seq");
                q.push($for_update);
                let due: Vec<(String, String, String, String)> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_err("expire unknown"))?;
                let expired = expire_each(&mut tx, &due, at).await?;
                tx.commit().await.map_err(query_err("commit"))?;
                Ok(expired)
            }

            async fn purge_records(&self, cutoff: i64, at: i64) -> Result<u64, StoreError> {
                let mut total = 0;
                for _ in 0..crate::common::PURGE_MAX_BATCHES {
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

            async fn purge_replay_markers(&self, max_age: std::time::Duration) -> Result<u64, StoreError> {
                // The database's clock, not this replica's: a replica whose clock runs ahead
                // cannot purge markers another replica still needs to refuse a replay.
                sqlx::query(concat!("DELETE FROM replay_markers WHERE seen_at < ", $db_now, " - $1"))
                    .bind(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX))
                    .execute(&self.writer)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(query_err("purge replay markers"))
            }

            async fn audit_size(&self) -> Result<u64, StoreError> {
                let size: i64 = sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("audit size"))?;
                Ok(size as u64)
            }

            async fn audit_nodes(
                &self,
                keys: &[(u32, u64)],
            ) -> Result<std::collections::HashMap<(u32, u64), refex_core::audit::tree::Hash>, StoreError> {
                let mut out = std::collections::HashMap::with_capacity(keys.len());
                let mut conn = self.pool.acquire().await.map_err(query_err("acquire"))?;
                for &(level, idx) in keys {
                    let hash: Option<Vec<u8>> =
                        sqlx::query_scalar("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
                            .bind(level as i32)
                            .bind(idx as i64)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(query_err("audit nodes"))?;
                    if let Some(h) = hash {
                        out.insert((level, idx), rows::hash("audit_nodes", &h)?);
                    }
                }
                Ok(out)
            }

            async fn audit_checkpoints(&self) -> Result<Vec<rec::CheckpointRecord>, StoreError> {
                let rows: Vec<(i64, String, i64, String)> =
                    sqlx::query_as("SELECT size, root, at, signed FROM audit_checkpoints ORDER BY size")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_err("audit checkpoints"))?;
                Ok(rows
                    .into_iter()
                    .map(|(size, root, at, signed)| rec::CheckpointRecord { size: size as u64, root, at, signed })
                    .collect())
            }

            async fn save_checkpoint(&self, c: &rec::CheckpointRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO audit_checkpoints (size, root, at, signed) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (size) DO NOTHING",
                )
                .bind(c.size as i64)
                .bind(&c.root)
                .bind(c.at)
                .bind(&c.signed)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(query_err("save checkpoint"))
            }

            async fn audit_leaves(&self, from: u64, limit: u64) -> Result<Vec<rec::LeafRecord>, StoreError> {
                let rows: Vec<(i64, Option<String>, Vec<u8>)> = sqlx::query_as(
                    "SELECT e.idx, e.leaf, n.hash FROM audit_events e JOIN audit_nodes n \
                     ON n.level = 0 AND n.idx = e.idx WHERE e.idx >= $1 ORDER BY e.idx LIMIT $2",
                )
                .bind(from as i64)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("audit leaves"))?;
                rows.into_iter()
                    .map(|(idx, leaf, hash)| {
                        Ok(rec::LeafRecord { idx: idx as u64, leaf, hash: rows::hash("audit_nodes", &hash)? })
                    })
                    .collect()
            }

            async fn referral_detail(&self, referral: &ReferralId) -> Result<Option<rec::ReferralDetail>, StoreError> {
                let sql = format!("SELECT {} FROM referrals WHERE id = $1", rows::REFERRAL_COLUMNS);
                let row: Option<rows::ReferralRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(referral.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("referral detail"))?;
                let Some(row) = row else { return Ok(None) };
                let sql = format!(
                    "SELECT {} FROM deliveries WHERE referral_id = $1 ORDER BY seq",
                    rows::DELIVERY_COLUMNS
                );
                let deliveries: Vec<rows::DeliveryRowRaw> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(referral.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("referral detail"))?;
                let sql = format!(
                    "SELECT {} FROM audit_events WHERE referral_id = $1 ORDER BY idx",
                    rows::EVENT_COLUMNS
                );
                let events: Vec<rows::EventRowRaw> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(referral.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("referral detail"))?;
                Ok(Some(rec::ReferralDetail {
                    referral: row.try_into()?,
                    deliveries: deliveries.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
                    events: events.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
                }))
            }

            async fn subject_matches(
                &self,
                subjects: &[String],
                partner: &PartnerId,
            ) -> Result<Vec<rec::SubjectMatch>, StoreError> {
                let mut out: Vec<rec::SubjectMatch> = Vec::new();
                for subject in subjects {
                    let found: Vec<(String, Option<String>)> =
                        sqlx::query_as(crate::common::SUBJECT_MATCHES.as_str())
                            .bind(subject)
                            .bind(partner.as_str())
                            .fetch_all(&self.pool)
                            .await
                            .map_err(query_err("subject access"))?;
                    for (referral, delivery) in found {
                        let referral = rows::referral_id("subject_keys", &referral)?;
                        out.push(match delivery {
                            None => rec::SubjectMatch::Sent(referral),
                            Some(d) => rec::SubjectMatch::Received(
                                referral,
                                rows::parse("subject_keys", "delivery_id", &d)?,
                            ),
                        });
                    }
                }
                out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                out.dedup();
                Ok(out)
            }

            async fn held_referrals(&self, sender: &PartnerId) -> Result<Vec<rec::HeldRow>, StoreError> {
                let found: Vec<(String, String, String, i64, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT r.id, r.referral_type, r.sender_ref, r.received_at, r.consent_override, h.escalated_at \
                     FROM holds h JOIN referrals r ON r.id = h.referral_id WHERE r.sender = $1 \
                     ORDER BY r.received_at, r.id",
                )
                .bind(sender.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("held referrals"))?;
                let mut out = Vec::with_capacity(found.len());
                for row in found {
                    let recipients: Vec<String> = sqlx::query_scalar(
                        "SELECT recipient FROM deliveries WHERE referral_id = $1 AND status = $2 ORDER BY seq",
                    )
                    .bind(&row.0)
                    .bind(DeliveryStatus::HeldForReview.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("held referrals"))?;
                    let submitted_by: Option<Option<String>> = sqlx::query_scalar(
                        "SELECT actor FROM audit_events WHERE referral_id = $1 AND kind = $2 ORDER BY idx LIMIT 1",
                    )
                    .bind(&row.0)
                    .bind(ev::EventKind::Accepted.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("held referrals"))?;
                    out.push(rows::held_row(row, recipients, submitted_by.flatten())?);
                }
                Ok(out)
            }

            async fn hold_sealed(&self, referral: &ReferralId) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("SELECT sealed FROM holds WHERE referral_id = $1")
                    .bind(referral.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("hold"))
            }

            async fn decide_hold(&self, d: &rec::ReviewCommit) -> Result<rec::DecideOutcome, StoreError> {
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                // Deleting the hold first takes its row lock: a concurrent decision waits, then
                // finds nothing to delete and changes nothing. A decision is final.
                let gone = sqlx::query("DELETE FROM holds WHERE referral_id = $1")
                    .bind(d.referral_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("decide"))?
                    .rows_affected();
                if gone == 0 {
                    return Ok(rec::DecideOutcome::AlreadyDecided);
                }
                let refused = |why: String| StoreError::Query { op: "decide", reason: why };
                // Every decided delivery must still be held (locked here, in id order); one a
                // correction withdrew meanwhile sends the lead back to the new preview, with
                // nothing changed (the transaction is dropped).
                let mut decided: Vec<(&DeliveryId, &PartnerId)> = d
                    .releases
                    .iter()
                    .map(|r| (&r.delivery, &r.recipient))
                    .chain(d.rejections.iter().map(|j| (&j.delivery, &j.recipient)))
                    .collect();
                decided.sort();
                let mut changed = Vec::new();
                for (delivery, recipient) in decided {
                    let from = held_status(&mut tx, &d.referral_id, delivery).await?
                        .ok_or_else(|| refused("a decided delivery is not the referral's".into()))?;
                    if from != DeliveryStatus::HeldForReview {
                        changed.push(recipient.clone());
                    }
                }
                if !changed.is_empty() {
                    return Ok(rec::DecideOutcome::Changed { recipients: changed });
                }
                // The original's hold and deliveries before any inbox counter: the lock order
                // acceptances keep (hold, deliveries, inbox counters).
                let mut withdrawals = Vec::new();
                if let Some(s) = &d.withdraws {
                    withdrawals = withdraw_open(
                        &mut tx,
                        &s.original,
                        d.at,
                        Some(&d.actor),
                        ev::WithdrawReason::Superseded,
                        Some(&d.referral_id),
                        Some(&s.recipients),
                    )
                    .await?;
                }
                let mut keys = Vec::new();
                // Inbox counters are locked in recipient order, as acceptances lock them.
                let mut releases: Vec<&rec::Release> = d.releases.iter().collect();
                releases.sort_by(|a, b| a.recipient.cmp(&b.recipient));
                for r in releases {
                    let from = held_status(&mut tx, &d.referral_id, &r.delivery).await?
                        .ok_or_else(|| refused("a released delivery is not the referral's".into()))?;
                    let to = moved(from, Step::Release)
                        .map_err(|e| refused(e.to_string()))?
                        .ok_or_else(|| refused("release changes nothing".into()))?;
                    let position = inbox_position(&mut *tx, &r.recipient).await?;
                    sqlx::query(
                        "UPDATE deliveries SET status = $1, sealed = $2, bytes = $3, inbox_pos = $4, \
                         queued_at = $5, updated_at = $5 WHERE id = $6",
                    )
                    .bind(to.as_str())
                    .bind(&r.sealed)
                    .bind(r.sealed.len() as i64)
                    .bind(position)
                    .bind(d.at)
                    .bind(r.delivery.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("release"))?;
                    keys.extend(r.subjects.iter().map(|s| (&d.referral_id, &r.recipient, Some(&r.delivery), s)));
                }
                for j in &d.rejections {
                    let from = held_status(&mut tx, &d.referral_id, &j.delivery).await?
                        .ok_or_else(|| refused("a rejected delivery is not the referral's".into()))?;
                    let to = moved(from, Step::Reject)
                        .map_err(|e| refused(e.to_string()))?
                        .ok_or_else(|| refused("rejection changes nothing".into()))?;
                    sqlx::query(
                        "UPDATE deliveries SET status = $1, review_reason_sealed = $2, updated_at = $3 WHERE id = $4",
                    )
                    .bind(to.as_str())
                    .bind(&j.reason_sealed)
                    .bind(d.at)
                    .bind(j.delivery.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("reject"))?;
                }
                // A decision decides every held delivery: none may be left without one.
                let left: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM deliveries WHERE referral_id = $1 AND status = $2",
                )
                .bind(d.referral_id.as_str())
                .bind(DeliveryStatus::HeldForReview.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("decide"))?;
                if left != 0 {
                    return Err(refused(format!("{left} held deliveries left undecided")));
                }
                insert_subject_keys(&mut *tx, &keys).await?;
                let mut events = d.events.clone();
                events.extend(withdrawals);
                insert_events(&mut *tx, &events).await?;
                if !d.releases.is_empty() {
                    notify_inbox(&mut *tx).await?;
                }
                tx.commit().await.map_err(query_err("commit"))?;
                Ok(rec::DecideOutcome::Decided)
            }

            async fn previews_shown(
                &self,
                referral: &ReferralId,
                actor: &ActorRef,
            ) -> Result<Vec<Vec<ev::PreviewShown>>, StoreError> {
                let leaves: Vec<Option<String>> = sqlx::query_scalar(
                    "SELECT leaf FROM audit_events WHERE referral_id = $1 AND kind = $2 AND actor = $3 \
                     ORDER BY idx DESC",
                )
                .bind(referral.as_str())
                .bind(ev::EventKind::Consulted.as_str())
                .bind(actor.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("last preview"))?;
                let mut out = Vec::new();
                for leaf in leaves {
                    let leaf = leaf.ok_or(rows::corrupt("audit_events", "leaf"))?;
                    match rows::leaf_record(&leaf)?.event {
                        AuditEvent::Consulted(c) if c.what == ev::Consultation::ReviewPreview => {
                            out.push(c.previews);
                        }
                        AuditEvent::Consulted(_) => {}
                        _ => return Err(rows::corrupt("audit_events", "leaf")),
                    }
                }
                Ok(out)
            }

            async fn escalate_holds(&self, cutoff: i64, at: i64) -> Result<u64, StoreError> {
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                // Of several replicas, one does this job at a time; the next finds it done.
                if !job_lock(&mut *tx, "escalate").await? {
                    return Ok(0);
                }
                let due: Vec<String> = sqlx::query_scalar(
                    "SELECT referral_id FROM holds WHERE escalated_at IS NULL AND held_at < $1 ORDER BY held_at",
                )
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err("escalate"))?;
                let mut events = Vec::with_capacity(due.len());
                for id in &due {
                    let referral = rows::referral_id("holds", id)?;
                    sqlx::query("UPDATE holds SET escalated_at = $1 WHERE referral_id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("escalate"))?;
                    events.push(
                        AuditRecord::new(
                            at,
                            None,
                            AuditEvent::Escalated(ev::Escalated { reason: "undecided past the review deadline".into() }),
                        )
                        .about(&referral),
                    );
                }
                insert_events(&mut *tx, &events).await?;
                tx.commit().await.map_err(query_err("commit"))?;
                Ok(due.len() as u64)
            }

            async fn close_undecided_holds(&self, cutoff: i64, at: i64) -> Result<u64, StoreError> {
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                // Of several replicas, one does this job at a time; the next finds it done.
                if !job_lock(&mut *tx, "close-undecided").await? {
                    return Ok(0);
                }
                let due: Vec<String> = sqlx::query_scalar(
                    "SELECT referral_id FROM holds WHERE held_at < $1 ORDER BY held_at",
                )
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err("close undecided"))?;
                let mut events = Vec::new();
                let mut closed = 0;
                for id in &due {
                    let referral = rows::referral_id("holds", id)?;
                    // The hold first (the lock order): a decision that got there first wins.
                    let gone = sqlx::query("DELETE FROM holds WHERE referral_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("close undecided"))?
                        .rows_affected();
                    if gone == 0 {
                        continue;
                    }
                    closed += 1;
                    let held: Vec<(String, String, String)> = sqlx::query_as(concat!(
                        "SELECT id, recipient, status FROM deliveries WHERE referral_id = $1 AND status = $2 ORDER BY seq",
                        $for_update
                    ))
                    .bind(id)
                    .bind(DeliveryStatus::HeldForReview.as_str())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_err("close undecided"))?;
                    for (delivery, recipient, status) in &held {
                        let delivery = rows::delivery_id(delivery)?;
                        let Ok(Some(to)) = moved(rows::status(status)?, Step::ExpireUndecided) else {
                            continue;
                        };
                        sqlx::query("UPDATE deliveries SET status = $1, updated_at = $2 WHERE id = $3")
                            .bind(to.as_str())
                            .bind(at)
                            .bind(delivery.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(query_err("close undecided"))?;
                        events.push(
                            AuditRecord::new(
                                at,
                                None,
                                AuditEvent::ClosedUndecided(ev::ToRecipient {
                                    to: rows::parse("deliveries", "recipient", recipient)?,
                                }),
                            )
                            .about(&referral)
                            .delivery(&delivery),
                        );
                    }
                }
                insert_events(&mut *tx, &events).await?;
                tx.commit().await.map_err(query_err("commit"))?;
                Ok(closed)
            }

            async fn count_escalated(&self) -> Result<i64, StoreError> {
                sqlx::query_scalar("SELECT COUNT(*) FROM holds WHERE escalated_at IS NOT NULL")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("count escalated"))
            }

            async fn report_facts(&self, from: i64, to: i64) -> Result<Vec<rec::FactRow>, StoreError> {
                // Each delivery as it stood at `to`: only events before it count, so a report
                // of ended months never changes.
                #[allow(clippy::type_complexity)]
                let found: Vec<(i64, String, String, String, String, Option<String>, bool, bool, bool)> = sqlx::query_as(
                    "SELECT r.received_at, r.referral_type, r.sender, d.recipient, r.consent_status, \
                     (SELECT COALESCE(e.leaf, '') FROM audit_events e WHERE e.referral_id = d.referral_id \
                      AND e.delivery_id = d.id AND e.kind = $3 AND e.at < $2 ORDER BY e.seq LIMIT 1), \
                     EXISTS (SELECT 1 FROM audit_events e WHERE e.referral_id = d.referral_id \
                      AND e.delivery_id = d.id AND e.kind = $4 AND e.at < $2), \
                     EXISTS (SELECT 1 FROM audit_events e WHERE e.referral_id = d.referral_id \
                      AND e.delivery_id = d.id AND e.kind = $5 AND e.at < $2), \
                     EXISTS (SELECT 1 FROM audit_events e WHERE e.referral_id = d.referral_id \
                      AND e.delivery_id = d.id AND e.kind = $6 AND e.at < $2) \
                     FROM deliveries d JOIN referrals r ON r.id = d.referral_id \
                     WHERE r.received_at >= $1 AND r.received_at < $2",
                )
                .bind(from)
                .bind(to)
                .bind(ev::EventKind::Reviewed.as_str())
                .bind(ev::EventKind::Held.as_str())
                .bind(ev::EventKind::ClosedUndecided.as_str())
                .bind(ev::EventKind::Withdrawn.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("report"))?;
                found.into_iter().map(rows::fact).collect()
            }

            async fn sent_referrals(&self, sender: &PartnerId, limit: i64) -> Result<Vec<rec::SentRow>, StoreError> {
                let found: Vec<(String, String, i64, String)> = sqlx::query_as(
                    "SELECT id, referral_type, received_at, sender_ref FROM referrals WHERE sender = $1 \
                     ORDER BY received_at DESC, id DESC LIMIT $2",
                )
                .bind(sender.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("sent referrals"))?;
                let mut out = Vec::with_capacity(found.len());
                for row in found {
                    let (id, referral_type, received_at, sender_ref) = rows::sent_row(row)?;
                    let states = self.delivery_states(&id, sender).await?.unwrap_or_default();
                    out.push(rec::SentRow { id, referral_type, received_at, sender_ref, states });
                }
                Ok(out)
            }

            async fn received(
                &self,
                recipient: &PartnerId,
                limit: i64,
            ) -> Result<Vec<rec::ReceivedRow>, StoreError> {
                let found: Vec<(String, String, String, String, i64, String)> = sqlx::query_as(
                    "SELECT d.id, d.referral_id, r.sender, r.referral_type, r.received_at, d.status \
                     FROM deliveries d JOIN referrals r ON r.id = d.referral_id \
                     WHERE d.recipient = $1 AND d.inbox_pos IS NOT NULL \
                     ORDER BY d.inbox_pos DESC LIMIT $2",
                )
                .bind(recipient.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("received"))?;
                found.into_iter().map(rows::received_row).collect()
            }

            async fn inbox_backlog(&self) -> Result<Vec<(PartnerId, i64, Option<i64>)>, StoreError> {
                let found: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
                    crate::common::INBOX_BACKLOG.as_str(),
                )
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("inbox backlog"))?;
                found
                    .into_iter()
                    .map(|(p, n, at)| Ok((rows::parse("deliveries", "recipient", &p)?, n, at)))
                    .collect()
            }

            async fn heartbeat(&self, id: &str, at: i64, live_after: i64, forget_before: i64) -> Result<u32, StoreError> {
                // Each statement on its own: replicas announcing at once (and forgetting each
                // other after a clock jump) never hold one row while waiting for another.
                sqlx::query(
                    "INSERT INTO replicas (id, seen_at) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                )
                .bind(id)
                .bind(at)
                .execute(&self.writer)
                .await
                .map_err(query_err("heartbeat"))?;
                sqlx::query("DELETE FROM replicas WHERE seen_at < $1 AND id <> $2")
                    .bind(forget_before)
                    .bind(id)
                    .execute(&self.writer)
                    .await
                    .map_err(query_err("heartbeat"))?;
                let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE seen_at >= $1")
                    .bind(live_after)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("heartbeat"))?;
                Ok(u32::try_from(live).unwrap_or(u32::MAX).max(1))
            }

            async fn forget_replica(&self, id: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM replicas WHERE id = $1")
                    .bind(id)
                    .execute(&self.writer)
                    .await
                    .map(|_| ())
                    .map_err(query_err("forget replica"))
            }

            async fn reclaim_space(&self) -> Result<(), StoreError> {
                // PostgreSQL's autovacuum does this by itself; SQLite returns freed pages to
                // the file system a bounded number at a time (incremental auto-vacuum).
                if $reclaim.is_empty() {
                    return Ok(());
                }
                sqlx::query($reclaim)
                    .execute(&self.writer)
                    .await
                    .map(|_| ())
                    .map_err(query_err("reclaim space"))
            }

            async fn claim_notice(&self, key: &str, at: i64, forget_before: i64) -> Result<bool, StoreError> {
                // Each statement on its own (no lock held while waiting for another).
                sqlx::query("DELETE FROM notices WHERE at < $1")
                    .bind(forget_before)
                    .execute(&self.writer)
                    .await
                    .map_err(query_err("claim notice"))?;
                let done = sqlx::query("INSERT INTO notices (key, at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(at)
                    .execute(&self.writer)
                    .await
                    .map_err(query_err("claim notice"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn referral_links(
                &self,
                referral: &ReferralId,
            ) -> Result<(Option<ReferralId>, Option<ReferralId>), StoreError> {
                let supersedes: Option<Option<String>> =
                    sqlx::query_scalar("SELECT supersedes FROM referrals WHERE id = $1")
                        .bind(referral.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_err("referral links"))?;
                // Only a correction that reached an inbox has replaced anything.
                let superseded_by: Option<String> = sqlx::query_scalar(
                    "SELECT r.id FROM referrals r WHERE r.supersedes = $1 AND EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.referral_id = r.id AND d.queued_at IS NOT NULL) \
                     ORDER BY r.received_at DESC, r.id DESC LIMIT 1",
                )
                .bind(referral.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("referral links"))?;
                Ok((
                    rows::parse_opt("referrals", "supersedes", supersedes.flatten().as_deref())?,
                    rows::parse_opt("referrals", "id", superseded_by.as_deref())?,
                ))
            }

            async fn record_event(&self, e: &AuditRecord) -> Result<(), StoreError> {
                // One transaction: the tree head, the leaf and its nodes move together.
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                insert_events(&mut *tx, std::slice::from_ref(e)).await?;
                tx.commit().await.map_err(query_err("commit"))
            }

            async fn delivery_states(
                &self,
                referral: &ReferralId,
                sender: &PartnerId,
            ) -> Result<Option<Vec<rec::DeliveryState>>, StoreError> {
                let owner: Option<String> = sqlx::query_scalar("SELECT sender FROM referrals WHERE id = $1")
                    .bind(referral.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("referral owner"))?;
                if owner.as_deref() != Some(sender.as_str()) {
                    return Ok(None);
                }
                let found: Vec<(String, String, Option<String>)> = sqlx::query_as(
                    "SELECT recipient, status, review_reason_sealed FROM deliveries WHERE referral_id = $1 ORDER BY seq",
                )
                .bind(referral.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("delivery states"))?;
                found.into_iter().map(rows::delivery_state).collect::<Result<_, _>>().map(Some)
            }

            async fn inbox_page(
                &self,
                recipient: &PartnerId,
                after: i64,
                limit: i64,
            ) -> Result<Vec<rec::InboxItem>, StoreError> {
                #[allow(clippy::type_complexity)]
                let found: Vec<(String, String, String, i64, Option<i64>, Option<i64>, String)> =
                    sqlx::query_as(crate::common::INBOX_PAGE.as_str())
                        .bind(recipient.as_str())
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_err("inbox page"))?;
                found.into_iter().map(rows::inbox_item).collect()
            }

            async fn peek_delivery(
                &self,
                recipient: &PartnerId,
                id: &DeliveryId,
            ) -> Result<Option<(DeliveryStatus, Option<String>)>, StoreError> {
                let row: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT status, sealed FROM deliveries WHERE id = $1 AND recipient = $2",
                )
                .bind(id.as_str())
                .bind(recipient.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("peek delivery"))?;
                match row {
                    Some((status, sealed)) => Ok(Some((rows::status(&status)?, sealed))),
                    None => Ok(None),
                }
            }

            async fn fetch_delivery(
                &self,
                recipient: &PartnerId,
                id: &DeliveryId,
                at: i64,
                actor: &ActorRef,
            ) -> Result<Option<String>, StoreError> {
                let write = rec::InboxWrite::Fetch { recipient: recipient.clone(), id: id.clone(), at, actor: actor.clone() };
                match self.inbox.submit(write).await? {
                    rec::InboxWritten::Fetched(sealed) => Ok(sealed),
                    rec::InboxWritten::Acked(_) => Err(rows::corrupt("inbox group commit", "answer")),
                }
            }

            async fn ack_delivery(
                &self,
                recipient: &PartnerId,
                id: &DeliveryId,
                at: i64,
                actor: &ActorRef,
            ) -> Result<rec::AckOutcome, StoreError> {
                let write = rec::InboxWrite::Ack { recipient: recipient.clone(), id: id.clone(), at, actor: actor.clone() };
                match self.inbox.submit(write).await? {
                    rec::InboxWritten::Acked(outcome) => Ok(outcome),
                    rec::InboxWritten::Fetched(_) => Err(rows::corrupt("inbox group commit", "answer")),
                }
            }

            async fn withdraw(
                &self,
                referral: &ReferralId,
                sender: &PartnerId,
                at: i64,
                actor: &ActorRef,
            ) -> Result<Option<Vec<rec::DeliveryState>>, StoreError> {
                let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
                let owner: Option<String> = sqlx::query_scalar("SELECT sender FROM referrals WHERE id = $1")
                    .bind(referral.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_err("referral owner"))?;
                if owner.as_deref() != Some(sender.as_str()) {
                    return Ok(None);
                }
                let events = withdraw_open(
                    &mut tx,
                    referral,
                    at,
                    Some(actor),
                    ev::WithdrawReason::WithdrawnBySender,
                    None,
                    None,
                )
                .await?;
                insert_events(&mut *tx, &events).await?;
                tx.commit().await.map_err(query_err("commit"))?;
                self.delivery_states(referral, sender).await
            }

            async fn count_rows(&self, table: crate::Table) -> Result<i64, StoreError> {
                sqlx::query_scalar(table.count_sql())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("count"))
            }
        }

        /// A replay marker's row as the prior acceptance it records (a marker written before
        /// markers kept them has none).
        fn prior(row: Option<(Option<String>, Option<String>)>) -> Result<Option<rec::PriorAcceptance>, StoreError> {
            match row {
                Some((Some(id), Some(digest))) => Ok(Some(rec::PriorAcceptance {
                    referral_id: rows::referral_id("replay_markers", &id)?,
                    digest,
                })),
                _ => Ok(None),
            }
        }

        /// The store's two committer tasks on `pool` (its writer): acceptances, and inbox
        /// fetches and acknowledgements.
        fn committers(
            pool: &sqlx::Pool<Db>,
            batching: crate::group_commit::Options,
        ) -> (
            crate::group_commit::Acceptances,
            crate::group_commit::GroupCommit<rec::InboxWrite, rec::InboxWritten>,
        ) {
            use crate::group_commit::{GroupCommit, Meter};
            let committer = pool.clone();
            let acceptances = GroupCommit::spawn(batching, Meter::Acceptances, move |batch| {
                let pool = committer.clone();
                async move { accept_batch(&pool, batch).await }
            });
            let committer = pool.clone();
            // Inbox writes never wait for company: a receiving system's next request waits on
            // this one's answer, so a window only added to every delivery's latency (refex
            // bench, 8 connections: ~1,100 -> ~1,400 deliveries/s without it); under load the
            // writes queued during a commit still share the next.
            let inbox_batching = crate::group_commit::Options {
                window: std::time::Duration::ZERO,
                ..batching
            };
            let inbox = GroupCommit::spawn(inbox_batching, Meter::Inbox, move |batch| {
                let pool = committer.clone();
                async move { inbox_batch(&pool, batch).await }
            });
            (acceptances, inbox)
        }

        /// Commits a batch of acceptances in one transaction (group commit). If the
        /// transaction itself fails, every acceptance in it gets the error.
        async fn accept_batch(
            pool: &sqlx::Pool<Db>,
            batch: Vec<rec::Acceptance>,
        ) -> Vec<Result<rec::AcceptOutcome, StoreError>> {
            match accept_batch_tx(pool, &batch).await {
                Ok(results) => results,
                Err(e) => batch
                    .iter()
                    .map(|_| {
                        Err(match &e {
                            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                            StoreError::Full(m) => StoreError::Full(m.clone()),
                            other => StoreError::Query { op: "group commit", reason: other.to_string() },
                        })
                    })
                    .collect(),
            }
        }

        /// Commits a batch of inbox fetches and acknowledgements in one transaction (group
        /// commit), each applied in order as if alone, their audit events appended together.
        /// If the batch's transaction fails (a lost connection, or on PostgreSQL a deadlock
        /// with a housekeeping batch holding the same rows), each write is tried again in a
        /// transaction of its own, so one write's trouble is only its own.
        async fn inbox_batch(
            pool: &sqlx::Pool<Db>,
            batch: Vec<rec::InboxWrite>,
        ) -> Vec<Result<rec::InboxWritten, StoreError>> {
            if let Ok(results) = inbox_batch_tx(pool, &batch).await {
                return results.into_iter().map(Ok).collect();
            }
            let mut results = Vec::with_capacity(batch.len());
            for write in &batch {
                results.push(
                    inbox_batch_tx(pool, std::slice::from_ref(write))
                        .await
                        .and_then(|mut r| r.pop().ok_or(rows::corrupt("inbox group commit", "answer"))),
                );
            }
            results
        }

        async fn inbox_batch_tx(
            pool: &sqlx::Pool<Db>,
            batch: &[rec::InboxWrite],
        ) -> Result<Vec<rec::InboxWritten>, StoreError> {
            let mut tx = begin_fresh(pool).await.map_err(query_err("begin"))?;
            // Every row the batch may write, locked up front in `seq` order, the order a
            // withdrawal, an expiry and a correction lock a referral's deliveries in: locking
            // them one by one in arrival order could deadlock with those on PostgreSQL. (On
            // SQLite, whose one writer needs no row locks, this is a short indexed read.)
            {
                let mut q = sqlx::QueryBuilder::new("SELECT seq FROM deliveries WHERE id IN (");
                let mut ids = q.separated(", ");
                for write in batch {
                    let (rec::InboxWrite::Fetch { id, .. } | rec::InboxWrite::Ack { id, .. }) = write;
                    ids.push_bind(id.as_str());
                }
                q.push(") ORDER BY seq");
                q.push($for_update);
                q.build().fetch_all(&mut *tx).await.map_err(query_err("inbox locks"))?;
            }
            let mut events = Vec::new();
            let mut results = Vec::with_capacity(batch.len());
            for write in batch {
                let (done, event) = match write {
                    rec::InboxWrite::Fetch { recipient, id, at, actor } => {
                        let (sealed, event) = fetch_in(&mut tx, recipient, id, *at, actor).await?;
                        (rec::InboxWritten::Fetched(sealed), event)
                    }
                    rec::InboxWrite::Ack { recipient, id, at, actor } => {
                        let (outcome, event) = ack_in(&mut tx, recipient, id, *at, actor).await?;
                        (rec::InboxWritten::Acked(outcome), event)
                    }
                };
                results.push(done);
                events.extend(event);
            }
            if events.is_empty() {
                // Only reads (fetches of deliveries already delivered): nothing to commit.
                drop(tx);
                return Ok(results);
            }
            insert_events(&mut *tx, &events).await?;
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(results)
        }

        /// A fetch inside a batch: the sealed delivery if it is in `recipient`'s inbox, and
        /// for the first fetch the `delivered` mark made and its `fetched` event.
        async fn fetch_in(
            tx: &mut Tx,
            recipient: &PartnerId,
            id: &DeliveryId,
            at: i64,
            actor: &ActorRef,
        ) -> Result<(Option<String>, Option<AuditRecord>), StoreError> {
            let row: Option<(String, Option<String>, String)> = sqlx::query_as(concat!(
                "SELECT status, sealed, referral_id FROM deliveries WHERE id = $1 AND recipient = $2",
                $for_update
            ))
            .bind(id.as_str())
            .bind(recipient.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(query_err("fetch delivery"))?;
            let Some((status, sealed, referral)) = row else { return Ok((None, None)) };
            let referral = rows::referral_id("deliveries", &referral)?;
            let to = match moved(rows::status(&status)?, Step::Fetch) {
                Ok(to) => to,
                Err(_) => return Ok((None, None)),
            };
            // In the inbox, a delivery always has its ciphertext.
            let sealed = sealed.ok_or(rows::corrupt("deliveries", "sealed"))?;
            let Some(to) = to else { return Ok((Some(sealed), None)) };
            sqlx::query(
                "UPDATE deliveries SET status = $1, fetched_at = $2, updated_at = $2 WHERE id = $3",
            )
            .bind(to.as_str())
            .bind(at)
            .bind(id.as_str())
            .execute(&mut **tx)
            .await
            .map_err(query_err("mark delivered"))?;
            let event = AuditRecord::new(at, Some(actor.clone()), AuditEvent::Fetched(ev::Fetched { first: true }))
                .about(&referral)
                .delivery(id);
            Ok((Some(sealed), Some(event)))
        }

        /// An acknowledgement inside a batch: the ciphertext deleted and the delivery out of
        /// the inbox, with its `acknowledged` event; idempotent.
        async fn ack_in(
            tx: &mut Tx,
            recipient: &PartnerId,
            id: &DeliveryId,
            at: i64,
            actor: &ActorRef,
        ) -> Result<(rec::AckOutcome, Option<AuditRecord>), StoreError> {
            let row: Option<(String, String)> = sqlx::query_as(concat!(
                "SELECT status, referral_id FROM deliveries WHERE id = $1 AND recipient = $2",
                $for_update
            ))
            .bind(id.as_str())
            .bind(recipient.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(query_err("ack delivery"))?;
            let Some((status, referral)) = row else { return Ok((rec::AckOutcome::NotFound, None)) };
            let referral = rows::referral_id("deliveries", &referral)?;
            let to = match moved(rows::status(&status)?, Step::Acknowledge) {
                Ok(Some(to)) => to,
                Ok(None) => return Ok((rec::AckOutcome::AlreadyAcknowledged, None)),
                Err(_) => return Ok((rec::AckOutcome::NotFound, None)),
            };
            sqlx::query(
                "UPDATE deliveries SET status = $1, sealed = NULL, acked_at = $2, updated_at = $2 WHERE id = $3",
            )
            .bind(to.as_str())
            .bind(at)
            .bind(id.as_str())
            .execute(&mut **tx)
            .await
            .map_err(query_err("ack delivery"))?;
            let event = AuditRecord::new(at, Some(actor.clone()), AuditEvent::Acknowledged(ev::Acknowledged {}))
                .about(&referral)
                .delivery(id);
            Ok((rec::AckOutcome::Acknowledged, Some(event)))
        }

        /// The batch as whole-batch statements (one multi-row `INSERT` per table); if any
        /// statement fails before the commit, the transaction is rolled back and the batch
        /// is written again one savepoint per acceptance, so that only the acceptance at
        /// fault fails. A failed commit is reported to every acceptance (it is ambiguous:
        /// the submitter finds out from the replay marker).
        async fn accept_batch_tx(
            pool: &sqlx::Pool<Db>,
            batch: &[rec::Acceptance],
        ) -> Result<Vec<Result<rec::AcceptOutcome, StoreError>>, StoreError> {
            let mut tx = begin_fresh(pool).await.map_err(query_err("begin"))?;
            match write_batch(&mut tx, batch).await {
                Ok((results, notify)) => {
                    if notify {
                        notify_inbox(&mut *tx).await?;
                    }
                    tx.commit().await.map_err(query_err("commit"))?;
                    Ok(results)
                }
                Err(_) => {
                    drop(tx);
                    accept_each(pool, batch).await
                }
            }
        }

        /// Writes a batch with whole-batch statements: replay markers (`ON CONFLICT DO
        /// NOTHING RETURNING` tells which are new; duplicates within the batch are replays of
        /// the first), referrals, subject keys, inbox positions (one counter update per
        /// recipient, in recipient order so concurrent writers lock counters alike),
        /// deliveries, holds, corrections' withdrawals, then the audit events. Returns each
        /// acceptance's result and whether an inbox was filled.
        async fn write_batch(
            tx: &mut Tx,
            batch: &[rec::Acceptance],
        ) -> Result<(Vec<Result<rec::AcceptOutcome, StoreError>>, bool), StoreError> {
            let mut results: Vec<Result<rec::AcceptOutcome, StoreError>> =
                batch.iter().map(|_| Ok(rec::AcceptOutcome::Accepted)).collect();
            // The first acceptance of each (sender, jti) in the batch is a candidate; later
            // ones are replays of it.
            let mut first_of: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
            let mut candidates = Vec::new();
            let mut duplicates = Vec::new();
            for (i, a) in batch.iter().enumerate() {
                match first_of.entry((a.referral.sender.as_str(), a.jti.as_str())) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        candidates.push(i);
                    }
                    std::collections::hash_map::Entry::Occupied(o) => duplicates.push((i, *o.get())),
                }
            }
            let mut fresh = std::collections::HashSet::new();
            for chunk in candidates.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO replay_markers (sender, jti, seen_at, referral_id, digest) ",
                );
                q.push_values(chunk, |mut row, &i| {
                    let a = &batch[i];
                    row.push_bind(a.referral.sender.as_str())
                        .push_bind(&a.jti)
                        .push_bind(a.referral.received_at)
                        .push_bind(a.referral.id.as_str())
                        .push_bind(&a.digest);
                });
                q.push(" ON CONFLICT (sender, jti) DO NOTHING RETURNING sender, jti");
                let rows: Vec<(String, String)> =
                    q.build_query_as().fetch_all(&mut **tx).await.map_err(query_err("replay marker"))?;
                fresh.extend(rows);
            }
            let mut live = Vec::new();
            for i in candidates {
                let a = &batch[i];
                if fresh.contains(&(a.referral.sender.to_string(), a.jti.clone())) {
                    live.push(i);
                } else {
                    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                        "SELECT referral_id, digest FROM replay_markers WHERE sender = $1 AND jti = $2",
                    )
                    .bind(a.referral.sender.as_str())
                    .bind(&a.jti)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(query_err("replay marker"))?;
                    results[i] = Ok(rec::AcceptOutcome::Replay(prior(row)?));
                }
            }
            for (i, first) in duplicates {
                results[i] = match &results[first] {
                    Ok(rec::AcceptOutcome::Accepted) => Ok(rec::AcceptOutcome::Replay(Some(rec::PriorAcceptance {
                        referral_id: batch[first].referral.id.clone(),
                        digest: batch[first].digest.clone(),
                    }))),
                    other => other.clone(),
                };
            }
            if live.is_empty() {
                return Ok((results, false));
            }
            for chunk in live.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, lawful_basis, \
                     consent_status, consent_override, subject_informed, supersedes, justification_sealed) ",
                );
                q.push_values(chunk, |mut row, &i| {
                    let r = &batch[i].referral;
                    row.push_bind(r.id.as_str())
                        .push_bind(r.sender.as_str())
                        .push_bind(&r.sender_ref)
                        .push_bind(r.referral_type.as_str())
                        .push_bind(r.received_at)
                        .push_bind(rows::to_json(&r.lawful_basis))
                        .push_bind(r.consent.status.as_str())
                        .push_bind(r.consent.override_.map(|o| o.as_str()))
                        .push_bind(rows::to_json(&r.subject_informed))
                        .push_bind(r.supersedes.as_ref().map(ReferralId::as_str))
                        .push_bind(&r.justification_sealed);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("insert referral"))?;
            }
            let mut keys: Vec<(&ReferralId, &PartnerId, Option<&DeliveryId>, &String)> = Vec::new();
            for &i in &live {
                let a = &batch[i];
                keys.extend(a.subjects.iter().map(|s| (&a.referral.id, &a.referral.sender, None, s)));
                for d in &a.deliveries {
                    keys.extend(d.subjects.iter().map(|s| (&a.referral.id, &d.recipient, Some(&d.id), s)));
                }
            }
            insert_subject_keys(&mut **tx, &keys).await?;
            // Corrections replace their originals first: holds and deliveries are locked
            // before inbox counters, the order every writer takes them in.
            let mut events = Vec::new();
            let mut notify = false;
            for &i in &live {
                let a = &batch[i];
                if let Some(s) = &a.withdraws {
                    let actor = a.events.first().and_then(|e| e.actor.as_ref());
                    events.extend(
                        withdraw_open(
                            tx,
                            &s.original,
                            a.referral.received_at,
                            actor,
                            ev::WithdrawReason::Superseded,
                            Some(&a.referral.id),
                            Some(&s.recipients),
                        )
                        .await?,
                    );
                }
            }
            // Inbox positions: each recipient's counter moves once by its count in this
            // batch; positions are handed out in batch order.
            let deliveries: Vec<(usize, &rec::DeliveryRecord)> = live
                .iter()
                .flat_map(|&i| batch[i].deliveries.iter().map(move |d| (i, d)))
                .collect();
            let mut per_recipient: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
            for (_, d) in &deliveries {
                if d.status.in_inbox() {
                    *per_recipient.entry(d.recipient.as_str()).or_default() += 1;
                }
            }
            let mut next_position: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
            for (recipient, count) in &per_recipient {
                let last: i64 = sqlx::query_scalar(
                    "INSERT INTO inbox_counters (recipient, next) VALUES ($1, $2) \
                     ON CONFLICT (recipient) DO UPDATE SET next = inbox_counters.next + $2 \
                     RETURNING next",
                )
                .bind(*recipient)
                .bind(*count)
                .fetch_one(&mut **tx)
                .await
                .map_err(query_err("inbox position"))?;
                next_position.insert(recipient, last - count + 1);
            }
            let mut to_insert = Vec::with_capacity(deliveries.len());
            for (i, d) in deliveries {
                let position = if d.status.in_inbox() {
                    let p = next_position.get_mut(d.recipient.as_str()).ok_or(StoreError::Query {
                        op: "inbox position",
                        reason: "no counter for a queued delivery".into(),
                    })?;
                    *p += 1;
                    Some(*p - 1)
                } else {
                    None
                };
                to_insert.push((i, d, position));
            }
            for chunk in to_insert.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, sealed, bytes, \
                     created_at, updated_at, inbox_pos, queued_at) ",
                );
                q.push_values(chunk, |mut row, (i, d, position)| {
                    let r = &batch[*i].referral;
                    row.push_bind(d.id.as_str())
                        .push_bind(r.id.as_str())
                        .push_bind(d.recipient.as_str())
                        .push_bind(&d.agreement)
                        .push_bind(d.status.as_str())
                        .push_bind(&d.sealed)
                        .push_bind(d.sealed.as_ref().map(|s| s.len() as i64))
                        .push_bind(r.received_at)
                        .push_bind(r.received_at)
                        .push_bind(*position)
                        .push_bind(position.map(|_| r.received_at));
                });
                q.build().execute(&mut **tx).await.map_err(query_err("insert delivery"))?;
            }
            let holds: Vec<(&rec::ReferralRecord, &rec::HoldRecord)> = live
                .iter()
                .filter_map(|&i| batch[i].hold.as_ref().map(|h| (&batch[i].referral, h)))
                .collect();
            for chunk in holds.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO holds (referral_id, sealed, storage_key_id, held_at) ");
                q.push_values(chunk, |mut row, (r, h)| {
                    row.push_bind(r.id.as_str()).push_bind(&h.sealed).push_bind(&h.storage_key_id).push_bind(r.received_at);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("insert hold"))?;
            }
            for &i in &live {
                let a = &batch[i];
                events.extend(a.events.iter().cloned());
                notify |= a.deliveries.iter().any(|d| d.status.in_inbox());
            }
            insert_events(&mut **tx, &events).await?;
            Ok((results, notify))
        }

        /// The careful path: one savepoint per acceptance, each written as a batch of one, so
        /// a failing acceptance is rolled back alone and the rest still commit.
        async fn accept_each(
            pool: &sqlx::Pool<Db>,
            batch: &[rec::Acceptance],
        ) -> Result<Vec<Result<rec::AcceptOutcome, StoreError>>, StoreError> {
            let mut tx = begin_fresh(pool).await.map_err(query_err("begin"))?;
            let mut results = Vec::with_capacity(batch.len());
            let mut notify = false;
            for a in batch {
                sqlx::query("SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                match write_batch(&mut tx, std::slice::from_ref(a)).await {
                    Ok((mut one, filled)) => {
                        sqlx::query("RELEASE SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                        notify |= filled;
                        results.push(one.pop().unwrap_or(Err(StoreError::Query {
                            op: "group commit",
                            reason: "a batch of one returned no result".into(),
                        })));
                    }
                    Err(e) => {
                        sqlx::query("ROLLBACK TO SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                        sqlx::query("RELEASE SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                        results.push(Err(e));
                    }
                }
            }
            if notify {
                notify_inbox(&mut *tx).await?;
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(results)
        }

        /// Appends audit events, in order, as the next leaves of the Merkle tree: takes
        /// their indices under the `audit_head` row lock (held until commit), stores each
        /// canonical leaf and its hash, and the hash of every perfect subtree they complete.
        /// The existing tree's frontier (at most one hash per level) is read in one query,
        /// the new hashes computed by the pure `audit::tree::append`, and rows written with
        /// multi-row inserts.
        async fn insert_events(conn: &mut $conn, events: &[AuditRecord]) -> Result<(), StoreError> {
            use refex_core::audit::tree::leaf_hash;
            if events.is_empty() {
                return Ok(());
            }
            let size: i64 = sqlx::query_scalar("UPDATE audit_head SET size = size + $1 WHERE id = 1 RETURNING size")
                .bind(events.len() as i64)
                .fetch_one(&mut *conn)
                .await
                .map_err(query_err("audit head"))?;
            let first = size - events.len() as i64;
            let mut frontier = std::collections::HashMap::new();
            let keys = refex_core::audit::tree::frontier(first as u64);
            if !keys.is_empty() {
                let mut q = sqlx::QueryBuilder::new("SELECT level, idx, hash FROM audit_nodes WHERE ");
                let mut sep = q.separated(" OR ");
                for (level, idx) in &keys {
                    sep.push("(level = ");
                    sep.push_bind_unseparated(*level as i32);
                    sep.push_unseparated(" AND idx = ");
                    sep.push_bind_unseparated(*idx as i64);
                    sep.push_unseparated(")");
                }
                let rows: Vec<(i32, i64, Vec<u8>)> = q
                    .build_query_as()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(query_err("audit frontier"))?;
                for (level, idx, hash) in rows {
                    frontier.insert((level as u32, idx as u64), rows::hash("audit_nodes", &hash)?);
                }
            }
            // The leaf is the event's one stored copy; the other columns index it.
            let leaves: Vec<(i64, String)> = events
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let idx = first + k as i64;
                    (idx, e.leaf(idx))
                })
                .collect();
            let hashes: Vec<refex_core::audit::tree::Hash> =
                leaves.iter().map(|(_, leaf)| leaf_hash(leaf.as_bytes())).collect();
            let nodes: Vec<(i32, i64, refex_core::audit::tree::Hash)> =
                refex_core::audit::tree::append(first as u64, &frontier, &hashes)
                    .map_err(|e| StoreError::Query { op: "audit append", reason: e.to_string() })?
                    .into_iter()
                    .map(|((level, idx), hash)| (level as i32, idx as i64, hash))
                    .collect();
            for chunk in events.iter().zip(&leaves).collect::<Vec<_>>().chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_events (at, kind, referral_id, delivery_id, actor, idx, leaf) ",
                );
                q.push_values(chunk, |mut row, (e, (idx, leaf))| {
                    row.push_bind(e.at)
                        .push_bind(e.event.kind().as_str())
                        .push_bind(e.referral_id.as_ref().map(ReferralId::as_str))
                        .push_bind(e.delivery_id.as_ref().map(DeliveryId::as_str))
                        .push_bind(e.actor.as_ref().map(ToString::to_string))
                        .push_bind(*idx)
                        .push_bind(leaf);
                });
                q.build().execute(&mut *conn).await.map_err(query_err("insert audit event"))?;
            }
            for chunk in nodes.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO audit_nodes (level, idx, hash) ");
                q.push_values(chunk, |mut row, (level, idx, hash)| {
                    row.push_bind(*level).push_bind(*idx).push_bind(&hash[..]);
                });
                q.build().execute(&mut *conn).await.map_err(query_err("audit node"))?;
            }
            Ok(())
        }

        /// Withdraws every open delivery of a referral (held ones included): status
        /// `withdrawn`, ciphertext deleted, a `withdrawn` event each; and deletes its hold.
        /// Returns the events (the caller appends them).
        async fn withdraw_open(
            tx: &mut Tx,
            referral: &ReferralId,
            at: i64,
            actor: Option<&ActorRef>,
            reason: ev::WithdrawReason,
            by: Option<&ReferralId>,
            only: Option<&[PartnerId]>,
        ) -> Result<Vec<AuditRecord>, StoreError> {
            // The hold first (the lock order), then the deliveries, locked.
            sqlx::query(concat!("SELECT referral_id FROM holds WHERE referral_id = $1", $for_update))
                .bind(referral.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(query_err("withdraw hold"))?;
            let open: Vec<(String, String, String)> = sqlx::query_as(OPEN_DELIVERIES_LOCKED.as_str())
                .bind(referral.as_str())
                .fetch_all(&mut **tx)
                .await
                .map_err(query_err("withdraw"))?;
            let mut events = Vec::with_capacity(open.len());
            for (id, recipient, status) in &open {
                let id = rows::delivery_id(id)?;
                let recipient: PartnerId = rows::parse("deliveries", "recipient", recipient)?;
                if only.is_some_and(|only| !only.contains(&recipient)) {
                    continue;
                }
                let Ok(Some(to)) = moved(rows::status(status)?, Step::Withdraw) else {
                    continue;
                };
                sqlx::query("UPDATE deliveries SET status = $1, sealed = NULL, updated_at = $2 WHERE id = $3")
                    .bind(to.as_str())
                    .bind(at)
                    .bind(id.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(query_err("withdraw"))?;
                events.push(
                    AuditRecord::new(
                        at,
                        actor.cloned(),
                        AuditEvent::Withdrawn(ev::Withdrawn { reason, by: by.cloned(), to: recipient }),
                    )
                    .about(referral)
                    .delivery(&id),
                );
            }
            // The hold goes once nothing of the referral is held any more.
            sqlx::query(
                "DELETE FROM holds WHERE referral_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM deliveries WHERE referral_id = $1 AND status = $2)",
            )
            .bind(referral.as_str())
            .bind(DeliveryStatus::HeldForReview.as_str())
            .execute(&mut **tx)
            .await
            .map_err(query_err("withdraw hold"))?;
            Ok(events)
        }
    };
}

pub(crate) use store_impl;
