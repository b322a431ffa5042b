//! The SQL both backends share, generated for each pool type by one macro: sqlx accepts `$N`
//! placeholders on SQLite too, so the statements are written once.

/// Rows per multi-row `INSERT`: 8 columns × 500 rows stays far below SQLite's 32,766 bound
/// variables and PostgreSQL's 65,535, while one statement carries a whole typical batch.
pub(crate) const INSERT_CHUNK: usize = 500;

/// Implements [`Store`](super::Store) for a backend type with a `pool` field, and defines
/// `insert_event` for its connection type.
macro_rules! store_impl {
    ($store:ty, $backend:expr, $conn:ty, $begin:literal, $notify:literal, $job_lock:literal) => {
        use crate::store::common::INSERT_CHUNK;

        impl $store {
            /// Begins a transaction that will write. On SQLite this is `BEGIN IMMEDIATE`: a
            /// deferred transaction that reads and then writes fails at once (`SQLITE_BUSY`,
            /// which no busy timeout waits out) if another writer committed in between.
            async fn begin_write(
                &self,
            ) -> Result<sqlx::Transaction<'static, <$conn as sqlx::Connection>::Database>, sqlx::Error> {
                begin_fresh(&self.writer).await
            }
        }

        /// Takes a housekeeping job's lock until the transaction ends (PostgreSQL: a
        /// transaction-scoped advisory lock, waited for), so that of several replicas one does
        /// the job at a time: the next finds the work already done. The embedded store has
        /// one process and needs none.
        async fn job_lock(conn: &mut $conn, job: &str) -> Result<bool, crate::store::StoreError> {
            if $job_lock.is_empty() {
                return Ok(true);
            }
            sqlx::query_scalar::<_, bool>($job_lock)
                .bind(job)
                .fetch_one(conn)
                .await
                .map_err(crate::store::query_err("job lock"))
        }

        /// Begins a write transaction. A `COMMIT` that failed (a full disk, a lost server)
        /// can hand its connection back still inside the transaction, and every later `BEGIN`
        /// on it would fail: such a connection is closed here and the transaction begun on a
        /// fresh one. (Checking every released connection in a pool hook instead cost ~15 %
        /// of throughput: the hook delays each release.)
        async fn begin_fresh(
            pool: &sqlx::Pool<<$conn as sqlx::Connection>::Database>,
        ) -> Result<sqlx::Transaction<'static, <$conn as sqlx::Connection>::Database>, sqlx::Error> {
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
        async fn notify_inbox(conn: &mut $conn) -> Result<(), crate::store::StoreError> {
            if $notify.is_empty() {
                return Ok(());
            }
            sqlx::query($notify)
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(crate::store::query_err("notify"))
        }

        #[async_trait::async_trait]
        impl crate::store::Store for $store {
            fn backend(&self) -> crate::store::Backend {
                $backend
            }

            async fn ping(&self) -> Result<(), crate::store::StoreError> {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT value FROM refex_meta WHERE key = 'store_format'")
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(crate::store::query_err("ping"))?;
                crate::store::check_format(found)
            }

            async fn close(&self) {
                self.writer.close().await;
                self.pool.close().await;
            }

            fn watch_inbox_changes(&self, on_change: std::sync::Arc<dyn Fn() + Send + Sync>) {
                self.watch_inbox(on_change);
            }

        async fn accept(&self, a: crate::store::records::Acceptance) -> Result<(), crate::store::StoreError> {
            self.group.accept(a).await
        }

        async fn expire_deliveries(
            &self,
            recipient: &str,
            cutoff: i64,
            at: i64,
        ) -> Result<u64, crate::store::StoreError> {
            use crate::store::query_err;
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            // Of several replicas, one does this job at a time; the next finds it done.
            if !job_lock(&mut *tx, &format!("expire:{recipient}")).await? {
                return Ok(0);
            }
            let due: Vec<(String, String)> = sqlx::query_as(
                "SELECT id, referral_id FROM deliveries WHERE recipient = $1 \
                 AND status IN ('queued', 'delivered') AND created_at < $2 ORDER BY seq",
            )
            .bind(recipient)
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("expire"))?;
            for (id, referral_id) in &due {
                sqlx::query("UPDATE deliveries SET status = 'expired', sealed = NULL, updated_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("expire"))?;
                insert_event(&mut *tx, &crate::store::records::AuditRecord {
                    at,
                    kind: "expired",
                    referral_id: Some(referral_id.clone()),
                    delivery_id: Some(id.clone()),
                    actor: None,
                    detail: serde_json::json!({ "to": recipient }),
                })
                .await?;
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(due.len() as u64)
        }

        async fn purge_records(&self, cutoff: i64, at: i64) -> Result<u64, crate::store::StoreError> {
            use crate::store::query_err;
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            // Of several replicas, one does this job at a time; the next finds it done.
            if !job_lock(&mut *tx, "purge").await? {
                return Ok(0);
            }
            let due: Vec<String> = sqlx::query_scalar(
                "SELECT r.id FROM referrals r WHERE r.received_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM deliveries d WHERE d.referral_id = r.id AND d.updated_at >= $1) \
                 AND NOT EXISTS (SELECT 1 FROM referrals n WHERE n.supersedes = r.id)",
            )
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("purge"))?;
            for id in &due {
                for sql in [
                    "DELETE FROM holds WHERE referral_id = $1",
                    "DELETE FROM deliveries WHERE referral_id = $1",
                    "DELETE FROM subject_index WHERE referral_id = $1",
                    "DELETE FROM referrals WHERE id = $1",
                    // The events' content goes; their leaf hashes stay in audit_nodes, so the
                    // tree and every checkpoint still verify.
                    "UPDATE audit_events SET leaf = NULL, detail = '{}', actor = NULL WHERE referral_id = $1",
                ] {
                    sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(query_err("purge"))?;
                }
                insert_event(&mut *tx, &crate::store::records::AuditRecord {
                    at,
                    kind: "purged",
                    referral_id: Some(id.clone()),
                    delivery_id: None,
                    actor: None,
                    detail: serde_json::json!({ "what": "referral and delivery records" }),
                })
                .await?;
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(due.len() as u64)
        }

        async fn purge_replay_markers(&self, cutoff: i64) -> Result<u64, crate::store::StoreError> {
            sqlx::query("DELETE FROM replay_markers WHERE seen_at < $1")
                .bind(cutoff)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected())
                .map_err(crate::store::query_err("purge replay markers"))
        }

        async fn audit_size(&self) -> Result<u64, crate::store::StoreError> {
            let size: i64 = sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(crate::store::query_err("audit size"))?;
            Ok(size as u64)
        }

        async fn audit_nodes(
            &self,
            keys: &[(u32, u64)],
        ) -> Result<std::collections::HashMap<(u32, u64), crate::audit::tree::Hash>, crate::store::StoreError> {
            use crate::store::query_err;
            let mut out = std::collections::HashMap::with_capacity(keys.len());
            let mut conn = self.pool.acquire().await.map_err(query_err("acquire"))?;
            for &(level, idx) in keys {
                let hash: Option<String> =
                    sqlx::query_scalar("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
                        .bind(level as i32)
                        .bind(idx as i64)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(query_err("audit nodes"))?;
                if let Some(h) = hash.as_deref().and_then(crate::audit::parse_hash) {
                    out.insert((level, idx), h);
                }
            }
            Ok(out)
        }

        async fn audit_checkpoints(&self) -> Result<Vec<crate::store::records::CheckpointRecord>, crate::store::StoreError> {
            let rows: Vec<(i64, String, i64, String)> =
                sqlx::query_as("SELECT size, root, at, signed FROM audit_checkpoints ORDER BY size")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(crate::store::query_err("audit checkpoints"))?;
            Ok(rows
                .into_iter()
                .map(|(size, root, at, signed)| crate::store::records::CheckpointRecord {
                    size: size as u64,
                    root,
                    at,
                    signed,
                })
                .collect())
        }

        async fn save_checkpoint(&self, c: &crate::store::records::CheckpointRecord) -> Result<(), crate::store::StoreError> {
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
            .map_err(crate::store::query_err("save checkpoint"))
        }

        async fn audit_leaves(
            &self,
            from: u64,
            limit: u64,
        ) -> Result<Vec<crate::store::records::LeafRecord>, crate::store::StoreError> {
            let rows: Vec<(i64, Option<String>, String)> = sqlx::query_as(
                "SELECT e.idx, e.leaf, n.hash FROM audit_events e JOIN audit_nodes n \
                 ON n.level = 0 AND n.idx = e.idx WHERE e.idx >= $1 ORDER BY e.idx LIMIT $2",
            )
            .bind(from as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(crate::store::query_err("audit leaves"))?;
            Ok(rows
                .into_iter()
                .map(|(idx, leaf, hash)| crate::store::records::LeafRecord { idx: idx as u64, leaf, hash })
                .collect())
        }

        async fn referral_detail(
            &self,
            referral_id: &str,
        ) -> Result<Option<crate::store::records::ReferralDetail>, crate::store::StoreError> {
            use crate::store::query_err;
            use crate::store::records::{DeliveryRow, DeliveryStatus, EventRow, ReferralDetail, ReferralRecord};
            type RefRow = (String, String, String, String, i64, String, String, Option<String>, String, Option<String>, Option<String>);
            let row: Option<RefRow> = sqlx::query_as(
                "SELECT id, sender, sender_ref, referral_type, received_at, lawful_basis, consent_status, \
                 consent_override, subject_informed, supersedes, justification_sealed FROM referrals WHERE id = $1",
            )
            .bind(referral_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("referral detail"))?;
            let Some(r) = row else { return Ok(None) };
            let deliveries: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
                "SELECT id, recipient, agreement, status, created_at, updated_at FROM deliveries \
                 WHERE referral_id = $1 ORDER BY seq",
            )
            .bind(referral_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("referral detail"))?;
            let events: Vec<(String, i64, Option<String>, Option<String>, String)> = sqlx::query_as(
                "SELECT kind, at, delivery_id, actor, detail FROM audit_events WHERE referral_id = $1 ORDER BY idx",
            )
            .bind(referral_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("referral detail"))?;
            Ok(Some(ReferralDetail {
                referral: ReferralRecord {
                    id: r.0, sender: r.1, sender_ref: r.2, referral_type: r.3, received_at: r.4,
                    lawful_basis: r.5, consent_status: r.6, consent_override: r.7, subject_informed: r.8,
                    supersedes: r.9, justification_sealed: r.10,
                },
                deliveries: deliveries
                    .into_iter()
                    .filter_map(|d| {
                        Some(DeliveryRow {
                            status: DeliveryStatus::parse(&d.3)?,
                            id: d.0, recipient: d.1, agreement: d.2, created_at: d.4, updated_at: d.5,
                        })
                    })
                    .collect(),
                events: events
                    .into_iter()
                    .map(|e| EventRow {
                        kind: e.0, at: e.1, delivery_id: e.2, actor: e.3,
                        detail: serde_json::from_str(&e.4).unwrap_or(serde_json::Value::Null),
                    })
                    .collect(),
            }))
        }

        async fn referrals_for_subjects(
            &self,
            subjects: &[String],
            partner: &str,
        ) -> Result<Vec<String>, crate::store::StoreError> {
            let mut out: Vec<String> = Vec::new();
            for subject in subjects {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT r.id FROM subject_index s JOIN referrals r ON r.id = s.referral_id \
                     WHERE s.subject = $1 AND (r.sender = $2 OR EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.referral_id = r.id AND d.recipient = $2)) \
                     ORDER BY r.id",
                )
                .bind(subject)
                .bind(partner)
                .fetch_all(&self.pool)
                .await
                .map_err(crate::store::query_err("subject access"))?;
                out.extend(ids);
            }
            out.sort();
            out.dedup();
            Ok(out)
        }

        async fn held_referrals(&self, sender: &str) -> Result<Vec<crate::store::records::HeldRow>, crate::store::StoreError> {
            use crate::store::query_err;
            let rows: Vec<(String, String, i64, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT r.id, r.referral_type, r.received_at, r.consent_override, h.escalated_at \
                 FROM holds h JOIN referrals r ON r.id = h.referral_id WHERE r.sender = $1 \
                 ORDER BY r.received_at, r.id",
            )
            .bind(sender)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("held referrals"))?;
            let mut out = Vec::with_capacity(rows.len());
            for (referral_id, referral_type, received_at, consent_override, escalated_at) in rows {
                let recipients: Vec<String> = sqlx::query_scalar(
                    "SELECT recipient FROM deliveries WHERE referral_id = $1 AND status = 'held-for-review' ORDER BY seq",
                )
                .bind(&referral_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("held referrals"))?;
                out.push(crate::store::records::HeldRow {
                    referral_id, referral_type, received_at, consent_override, escalated_at, recipients,
                });
            }
            Ok(out)
        }

        async fn hold_sealed(&self, referral_id: &str) -> Result<Option<String>, crate::store::StoreError> {
            sqlx::query_scalar("SELECT sealed FROM holds WHERE referral_id = $1")
                .bind(referral_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(crate::store::query_err("hold"))
        }

        async fn decide_hold(
            &self,
            d: &crate::store::records::ReviewDecision,
        ) -> Result<crate::store::records::DecideOutcome, crate::store::StoreError> {
            use crate::store::query_err;
            use crate::store::records::{AuditRecord, DecideOutcome};
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            // Deleting the hold first takes its row lock: a concurrent decision waits, then
            // finds nothing to delete and changes nothing. A decision is final.
            let gone = sqlx::query("DELETE FROM holds WHERE referral_id = $1")
                .bind(&d.referral_id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("decide"))?
                .rows_affected();
            if gone == 0 {
                return Ok(DecideOutcome::AlreadyDecided);
            }
            sqlx::query("UPDATE referrals SET review_reason_sealed = $1 WHERE id = $2")
                .bind(&d.reason_sealed)
                .bind(&d.referral_id)
                .execute(&mut *tx)
                .await
                .map_err(query_err("decide"))?;
            let held: Vec<(String, String)> = sqlx::query_as(
                "SELECT id, recipient FROM deliveries WHERE referral_id = $1 AND status = 'held-for-review' ORDER BY seq",
            )
            .bind(&d.referral_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("decide"))?;
            let decision = if d.approve { "approve" } else { "reject" };
            for (id, recipient) in &held {
                insert_event(&mut *tx, &AuditRecord {
                    at: d.at,
                    kind: "reviewed",
                    referral_id: Some(d.referral_id.clone()),
                    delivery_id: Some(id.clone()),
                    actor: Some(d.actor.clone()),
                    detail: serde_json::json!({ "to": recipient, "decision": decision }),
                })
                .await?;
                let sealed = d.released.iter().find(|(rid, _)| rid == id).map(|(_, s)| s);
                match (d.approve, sealed) {
                    (true, Some(sealed)) => {
                        let position: i64 = sqlx::query_scalar(
                            "INSERT INTO inbox_counters (recipient, next) VALUES ($1, 1) \
                             ON CONFLICT (recipient) DO UPDATE SET next = inbox_counters.next + 1 RETURNING next",
                        )
                        .bind(recipient)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(query_err("inbox position"))?;
                        sqlx::query(
                            "UPDATE deliveries SET status = 'queued', sealed = $1, bytes = $2, inbox_pos = $3, \
                             updated_at = $4 WHERE id = $5",
                        )
                        .bind(sealed)
                        .bind(sealed.len() as i64)
                        .bind(position)
                        .bind(d.at)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("release"))?;
                        insert_event(&mut *tx, &AuditRecord {
                            at: d.at,
                            kind: "queued",
                            referral_id: Some(d.referral_id.clone()),
                            delivery_id: Some(id.clone()),
                            actor: Some(d.actor.clone()),
                            detail: serde_json::json!({ "to": recipient }),
                        })
                        .await?;
                    }
                    (true, None) => {
                        return Err(crate::store::StoreError::Query {
                            op: "release",
                            reason: "an approved delivery has no ciphertext".into(),
                        });
                    }
                    (false, _) => {
                        sqlx::query("UPDATE deliveries SET status = 'rejected-by-review', updated_at = $1 WHERE id = $2")
                            .bind(d.at)
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(query_err("reject"))?;
                    }
                }
            }
            if d.approve {
                notify_inbox(&mut *tx).await?;
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(DecideOutcome::Decided)
        }

        async fn review_reason(&self, referral_id: &str) -> Result<Option<String>, crate::store::StoreError> {
            let r: Option<Option<String>> = sqlx::query_scalar("SELECT review_reason_sealed FROM referrals WHERE id = $1")
                .bind(referral_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(crate::store::query_err("review reason"))?;
            Ok(r.flatten())
        }

        async fn escalate_holds(&self, cutoff: i64, at: i64) -> Result<u64, crate::store::StoreError> {
            use crate::store::query_err;
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
            for id in &due {
                sqlx::query("UPDATE holds SET escalated_at = $1 WHERE referral_id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("escalate"))?;
                insert_event(&mut *tx, &crate::store::records::AuditRecord {
                    at,
                    kind: "escalated",
                    referral_id: Some(id.clone()),
                    delivery_id: None,
                    actor: None,
                    detail: serde_json::json!({ "reason": "undecided past the review deadline" }),
                })
                .await?;
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(due.len() as u64)
        }

        async fn count_escalated(&self) -> Result<i64, crate::store::StoreError> {
            sqlx::query_scalar("SELECT COUNT(*) FROM holds WHERE escalated_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(crate::store::query_err("count escalated"))
        }

        async fn report_facts(
            &self,
            from: i64,
            to: i64,
        ) -> Result<Vec<crate::store::records::FactRow>, crate::store::StoreError> {
            use crate::store::records::{DeliveryStatus, FactRow};
            let rows: Vec<(i64, String, String, String, String, String, Option<String>)> = sqlx::query_as(
                "SELECT r.received_at, r.referral_type, r.sender, d.recipient, r.consent_status, d.status, \
                 (SELECT e.detail FROM audit_events e WHERE e.delivery_id = d.id AND e.kind = 'reviewed' LIMIT 1) \
                 FROM deliveries d JOIN referrals r ON r.id = d.referral_id \
                 WHERE r.received_at >= $1 AND r.received_at < $2",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(crate::store::query_err("report"))?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    Some(FactRow {
                        received_at: r.0,
                        referral_type: r.1,
                        sender: r.2,
                        recipient: r.3,
                        consent_status: r.4,
                        status: DeliveryStatus::parse(&r.5)?,
                        decision: r.6.and_then(|d| {
                            serde_json::from_str::<serde_json::Value>(&d)
                                .ok()
                                .and_then(|v| v["decision"].as_str().map(str::to_owned))
                        }),
                    })
                })
                .collect())
        }

        async fn sent_referrals(
            &self,
            sender: &str,
            limit: i64,
        ) -> Result<Vec<(String, String, i64, Vec<crate::store::records::DeliveryState>)>, crate::store::StoreError> {
            use crate::store::query_err;
            let rows: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT id, referral_type, received_at FROM referrals WHERE sender = $1 \
                 ORDER BY received_at DESC, id DESC LIMIT $2",
            )
            .bind(sender)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("sent referrals"))?;
            let mut out = Vec::with_capacity(rows.len());
            for (id, ty, at) in rows {
                let states = self.delivery_states(&id, sender).await?.unwrap_or_default();
                out.push((id, ty, at, states));
            }
            Ok(out)
        }

        async fn referral_links(
            &self,
            referral_id: &str,
        ) -> Result<(Option<String>, Option<String>), crate::store::StoreError> {
            use crate::store::query_err;
            let supersedes: Option<Option<String>> =
                sqlx::query_scalar("SELECT supersedes FROM referrals WHERE id = $1")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("referral links"))?;
            let superseded_by: Option<String> = sqlx::query_scalar(
                "SELECT id FROM referrals WHERE supersedes = $1 ORDER BY received_at DESC, id DESC LIMIT 1",
            )
            .bind(referral_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("referral links"))?;
            Ok((supersedes.flatten(), superseded_by))
        }

        async fn record_event(&self, e: &crate::store::records::AuditRecord) -> Result<(), crate::store::StoreError> {
            use crate::store::query_err;
            // One transaction: the tree head, the leaf and its nodes move together.
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            insert_event(&mut *tx, e).await?;
            tx.commit().await.map_err(query_err("commit"))
        }

        async fn delivery_states(
            &self,
            referral_id: &str,
            sender: &str,
        ) -> Result<Option<Vec<crate::store::records::DeliveryState>>, crate::store::StoreError> {
            use crate::store::records::{DeliveryState, DeliveryStatus};
            use crate::store::query_err;
            use sqlx::Row as _;
            let owner: Option<String> = sqlx::query_scalar("SELECT sender FROM referrals WHERE id = $1")
                .bind(referral_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("referral owner"))?;
            if owner.as_deref() != Some(sender) {
                return Ok(None);
            }
            let rows = sqlx::query("SELECT recipient, status FROM deliveries WHERE referral_id = $1 ORDER BY seq")
                .bind(referral_id)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("delivery states"))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let status: String = row.try_get("status").map_err(query_err("delivery states"))?;
                out.push(DeliveryState {
                    recipient: row.try_get("recipient").map_err(query_err("delivery states"))?,
                    status: DeliveryStatus::parse(&status).ok_or(crate::store::StoreError::Query {
                        op: "delivery states",
                        reason: "unknown status in store".into(),
                    })?,
                });
            }
            Ok(Some(out))
        }

        async fn inbox_page(
            &self,
            recipient: &str,
            after: i64,
            limit: i64,
        ) -> Result<Vec<crate::store::records::InboxItem>, crate::store::StoreError> {
            use crate::store::query_err;
            use sqlx::Row as _;
            let rows = sqlx::query(
                "SELECT d.id, r.sender, r.referral_type, r.received_at, d.bytes, d.inbox_pos \
                 FROM deliveries d JOIN referrals r ON r.id = d.referral_id \
                 WHERE d.recipient = $1 AND d.status IN ('queued', 'delivered') AND d.inbox_pos > $2 \
                 ORDER BY d.inbox_pos LIMIT $3",
            )
            .bind(recipient)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("inbox page"))?;
            rows.into_iter()
                .map(|row| {
                    Ok(crate::store::records::InboxItem {
                        id: row.try_get(0)?,
                        from: row.try_get(1)?,
                        referral_type: row.try_get(2)?,
                        received_at: row.try_get(3)?,
                        bytes: row.try_get::<Option<i64>, _>(4)?.unwrap_or_default(),
                        position: row.try_get::<Option<i64>, _>(5)?.unwrap_or_default(),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(query_err("inbox page"))
        }

        async fn fetch_delivery(
            &self,
            recipient: &str,
            id: &str,
            at: i64,
            actor: &str,
        ) -> Result<Option<String>, crate::store::StoreError> {
            use crate::store::query_err;
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            let row: Option<(String, Option<String>, String)> = sqlx::query_as(
                "SELECT status, sealed, referral_id FROM deliveries WHERE id = $1 AND recipient = $2",
            )
            .bind(id)
            .bind(recipient)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_err("fetch delivery"))?;
            let Some((status, Some(sealed), referral_id)) = row else { return Ok(None) };
            match status.as_str() {
                "queued" => {
                    sqlx::query(
                        "UPDATE deliveries SET status = 'delivered', fetched_at = $1, updated_at = $1 \
                         WHERE id = $2 AND status = 'queued'",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("mark delivered"))?;
                    insert_event(&mut *tx, &crate::store::records::AuditRecord {
                        at,
                        kind: "fetched",
                        referral_id: Some(referral_id),
                        delivery_id: Some(id.to_owned()),
                        actor: Some(actor.to_owned()),
                        detail: serde_json::json!({ "first": true }),
                    })
                    .await?;
                }
                "delivered" => {}
                _ => return Ok(None),
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(Some(sealed))
        }

        async fn ack_delivery(
            &self,
            recipient: &str,
            id: &str,
            at: i64,
            actor: &str,
        ) -> Result<crate::store::records::AckOutcome, crate::store::StoreError> {
            use crate::store::query_err;
            use crate::store::records::AckOutcome;
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT status, referral_id FROM deliveries WHERE id = $1 AND recipient = $2",
            )
            .bind(id)
            .bind(recipient)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_err("ack delivery"))?;
            let Some((status, referral_id)) = row else { return Ok(AckOutcome::NotFound) };
            match status.as_str() {
                "acknowledged" => return Ok(AckOutcome::AlreadyAcknowledged),
                "queued" | "delivered" => {}
                _ => return Ok(AckOutcome::NotFound),
            }
            sqlx::query(
                "UPDATE deliveries SET status = 'acknowledged', sealed = NULL, acked_at = $1, updated_at = $1 \
                 WHERE id = $2",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query_err("ack delivery"))?;
            insert_event(&mut *tx, &crate::store::records::AuditRecord {
                at,
                kind: "acknowledged",
                referral_id: Some(referral_id),
                delivery_id: Some(id.to_owned()),
                actor: Some(actor.to_owned()),
                detail: serde_json::json!({}),
            })
            .await?;
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(AckOutcome::Acknowledged)
        }

        async fn withdraw(
            &self,
            referral_id: &str,
            sender: &str,
            at: i64,
            actor: &str,
        ) -> Result<Option<Vec<crate::store::records::DeliveryState>>, crate::store::StoreError> {
            use crate::store::query_err;
            let mut tx = self.begin_write().await.map_err(query_err("begin"))?;
            let owner: Option<String> = sqlx::query_scalar("SELECT sender FROM referrals WHERE id = $1")
                .bind(referral_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err("referral owner"))?;
            if owner.as_deref() != Some(sender) {
                return Ok(None);
            }
            let events = withdraw_open(&mut tx, referral_id, at, actor, serde_json::json!({ "reason": "withdrawn-by-sender" })).await?;
            insert_events(&mut *tx, &events).await?;
            tx.commit().await.map_err(query_err("commit"))?;
            self.delivery_states(referral_id, sender).await
        }

        async fn count_rows(&self, table: crate::store::Table) -> Result<i64, crate::store::StoreError> {
            sqlx::query_scalar(table.count_sql())
                .fetch_one(&self.pool)
                .await
                .map_err(crate::store::query_err("count"))
        }
        }

        /// Commits a batch of acceptances in one transaction (group commit). Each acceptance
        /// is written inside its own savepoint: a replay, or any failure of one acceptance,
        /// rolls back that acceptance alone and is reported to its caller; the audit events of
        /// those that stood are then appended together and everything commits at once. If
        /// the transaction itself fails, every acceptance in it gets the error.
        async fn accept_batch(
            pool: &sqlx::Pool<<$conn as sqlx::Connection>::Database>,
            batch: Vec<crate::store::records::Acceptance>,
        ) -> Vec<Result<(), crate::store::StoreError>> {
            match accept_batch_tx(pool, &batch).await {
                Ok(results) => results,
                Err(e) => batch
                    .iter()
                    .map(|_| Err(match &e {
                        crate::store::StoreError::Unavailable(m) => crate::store::StoreError::Unavailable(m.clone()),
                        crate::store::StoreError::Full(m) => crate::store::StoreError::Full(m.clone()),
                        other => crate::store::StoreError::Query { op: "group commit", reason: other.to_string() },
                    }))
                    .collect(),
            }
        }

        /// The batch as whole-batch statements (one multi-row `INSERT` per table); if any
        /// statement fails before the commit, the transaction is rolled back and the batch
        /// is written again one savepoint per acceptance, so that only the acceptance at
        /// fault fails. A failed commit is reported to every acceptance (it is ambiguous,
        /// so it is never retried here).
        async fn accept_batch_tx(
            pool: &sqlx::Pool<<$conn as sqlx::Connection>::Database>,
            batch: &[crate::store::records::Acceptance],
        ) -> Result<Vec<Result<(), crate::store::StoreError>>, crate::store::StoreError> {
            let mut tx = begin_fresh(pool).await.map_err(crate::store::query_err("begin"))?;
            match write_batch(&mut tx, batch).await {
                Ok((results, notify)) => {
                    if notify {
                        notify_inbox(&mut *tx).await?;
                    }
                    tx.commit().await.map_err(crate::store::query_err("commit"))?;
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
        /// the first), referrals, subject index, inbox positions (one counter update per
        /// recipient, in recipient order so concurrent writers lock counters alike),
        /// deliveries, holds, corrections' withdrawals, then the audit events. Returns each
        /// acceptance's result and whether an inbox was filled.
        async fn write_batch(
            tx: &mut sqlx::Transaction<'static, <$conn as sqlx::Connection>::Database>,
            batch: &[crate::store::records::Acceptance],
        ) -> Result<(Vec<Result<(), crate::store::StoreError>>, bool), crate::store::StoreError> {
            use crate::store::records::DeliveryStatus;
            use crate::store::{StoreError, query_err};
            let mut results: Vec<Result<(), StoreError>> = batch.iter().map(|_| Ok(())).collect();
            let mut first_of = std::collections::HashSet::new();
            let mut candidates = Vec::new();
            for (i, a) in batch.iter().enumerate() {
                if first_of.insert((a.referral.sender.as_str(), a.jti.as_str())) {
                    candidates.push(i);
                } else {
                    results[i] = Err(StoreError::Replay);
                }
            }
            let mut fresh = std::collections::HashSet::new();
            for chunk in candidates.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO replay_markers (sender, jti, seen_at) ");
                q.push_values(chunk, |mut row, &i| {
                    let a = &batch[i];
                    row.push_bind(&a.referral.sender).push_bind(&a.jti).push_bind(a.referral.received_at);
                });
                q.push(" ON CONFLICT (sender, jti) DO NOTHING RETURNING sender, jti");
                let rows: Vec<(String, String)> =
                    q.build_query_as().fetch_all(&mut **tx).await.map_err(query_err("replay marker"))?;
                fresh.extend(rows);
            }
            let mut live = Vec::new();
            for i in candidates {
                let a = &batch[i];
                if fresh.contains(&(a.referral.sender.clone(), a.jti.clone())) {
                    live.push(i);
                } else {
                    results[i] = Err(StoreError::Replay);
                }
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
                    row.push_bind(&r.id)
                        .push_bind(&r.sender)
                        .push_bind(&r.sender_ref)
                        .push_bind(&r.referral_type)
                        .push_bind(r.received_at)
                        .push_bind(&r.lawful_basis)
                        .push_bind(&r.consent_status)
                        .push_bind(&r.consent_override)
                        .push_bind(&r.subject_informed)
                        .push_bind(&r.supersedes)
                        .push_bind(&r.justification_sealed);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("insert referral"))?;
            }
            let subjects: Vec<(&String, &String)> = live
                .iter()
                .flat_map(|&i| batch[i].subjects.iter().map(move |s| (&batch[i].referral.id, s)))
                .collect();
            for chunk in subjects.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO subject_index (referral_id, subject) ");
                q.push_values(chunk, |mut row, (id, subject)| {
                    row.push_bind(*id).push_bind(*subject);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("subject index"))?;
            }
            // Inbox positions: each recipient's counter moves once by its count in this
            // batch; positions are handed out in batch order.
            let deliveries: Vec<(usize, &crate::store::records::DeliveryRecord)> = live
                .iter()
                .flat_map(|&i| batch[i].deliveries.iter().map(move |d| (i, d)))
                .collect();
            let mut per_recipient: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
            for (_, d) in &deliveries {
                if d.status == DeliveryStatus::Queued {
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
            let mut rows = Vec::with_capacity(deliveries.len());
            for (i, d) in deliveries {
                let position = if d.status == DeliveryStatus::Queued {
                    let p = next_position.get_mut(d.recipient.as_str()).ok_or(StoreError::Query {
                        op: "inbox position",
                        reason: "no counter for a queued delivery".into(),
                    })?;
                    *p += 1;
                    Some(*p - 1)
                } else {
                    None
                };
                rows.push((i, d, position));
            }
            for chunk in rows.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, sealed, bytes, \
                     created_at, updated_at, inbox_pos) ",
                );
                q.push_values(chunk, |mut row, (i, d, position)| {
                    let r = &batch[*i].referral;
                    row.push_bind(&d.id)
                        .push_bind(&r.id)
                        .push_bind(&d.recipient)
                        .push_bind(&d.agreement)
                        .push_bind(d.status.as_str())
                        .push_bind(&d.sealed)
                        .push_bind(d.sealed.as_ref().map(|s| s.len() as i64))
                        .push_bind(r.received_at)
                        .push_bind(r.received_at)
                        .push_bind(*position);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("insert delivery"))?;
            }
            let holds: Vec<(&crate::store::records::ReferralRecord, &crate::store::records::HoldRecord)> = live
                .iter()
                .filter_map(|&i| batch[i].hold.as_ref().map(|h| (&batch[i].referral, h)))
                .collect();
            for chunk in holds.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO holds (referral_id, sealed, storage_key_id, held_at) ");
                q.push_values(chunk, |mut row, (r, h)| {
                    row.push_bind(&r.id).push_bind(&h.sealed).push_bind(&h.storage_key_id).push_bind(r.received_at);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("insert hold"))?;
            }
            let mut events = Vec::new();
            let mut notify = false;
            for &i in &live {
                let a = &batch[i];
                if let Some(old) = &a.referral.supersedes {
                    events.extend(
                        withdraw_open(
                            tx,
                            old,
                            a.referral.received_at,
                            a.events.first().and_then(|e| e.actor.as_deref()).unwrap_or_default(),
                            serde_json::json!({ "reason": "superseded", "by": a.referral.id }),
                        )
                        .await?,
                    );
                }
                events.extend(a.events.iter().cloned());
                notify |= a.deliveries.iter().any(|d| d.status == DeliveryStatus::Queued);
            }
            insert_events(&mut **tx, &events).await?;
            Ok((results, notify))
        }

        /// The careful path: one savepoint per acceptance, so a failing acceptance is rolled
        /// back alone and the rest still commit.
        async fn accept_each(
            pool: &sqlx::Pool<<$conn as sqlx::Connection>::Database>,
            batch: &[crate::store::records::Acceptance],
        ) -> Result<Vec<Result<(), crate::store::StoreError>>, crate::store::StoreError> {
            use crate::store::query_err;
            let mut tx = begin_fresh(pool).await.map_err(query_err("begin"))?;
            let mut results = Vec::with_capacity(batch.len());
            let mut events = Vec::new();
            let mut notify = false;
            for a in batch {
                sqlx::query("SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                match accept_one(&mut tx, a).await {
                    Ok(withdrawn) => {
                        sqlx::query("RELEASE SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                        events.extend(withdrawn);
                        events.extend(a.events.iter().cloned());
                        notify |= a.deliveries.iter().any(|d| d.status == crate::store::records::DeliveryStatus::Queued);
                        results.push(Ok(()));
                    }
                    Err(e) => {
                        sqlx::query("ROLLBACK TO SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                        sqlx::query("RELEASE SAVEPOINT acceptance").execute(&mut *tx).await.map_err(query_err("savepoint"))?;
                        results.push(Err(e));
                    }
                }
            }
            insert_events(&mut *tx, &events).await?;
            if notify {
                notify_inbox(&mut *tx).await?;
            }
            tx.commit().await.map_err(query_err("commit"))?;
            Ok(results)
        }

        /// Writes one acceptance's rows (not its audit events); returns the events of the
        /// withdrawals a correction makes, which come before the acceptance's own.
        async fn accept_one(
            tx: &mut sqlx::Transaction<'static, <$conn as sqlx::Connection>::Database>,
            a: &crate::store::records::Acceptance,
        ) -> Result<Vec<crate::store::records::AuditRecord>, crate::store::StoreError> {
            use crate::store::{StoreError, query_err};
            let r = &a.referral;
            // ON CONFLICT DO NOTHING rather than a unique violation: the replay is seen
            // without an error, so nothing else in the batch is disturbed.
            let marker = sqlx::query(
                "INSERT INTO replay_markers (sender, jti, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (sender, jti) DO NOTHING",
            )
            .bind(&r.sender)
            .bind(&a.jti)
            .bind(r.received_at)
            .execute(&mut **tx)
            .await
            .map_err(query_err("replay marker"))?;
            if marker.rows_affected() == 0 {
                return Err(StoreError::Replay);
            }
            sqlx::query(
                "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, lawful_basis, \
                 consent_status, consent_override, subject_informed, supersedes, justification_sealed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&r.id)
            .bind(&r.sender)
            .bind(&r.sender_ref)
            .bind(&r.referral_type)
            .bind(r.received_at)
            .bind(&r.lawful_basis)
            .bind(&r.consent_status)
            .bind(&r.consent_override)
            .bind(&r.subject_informed)
            .bind(&r.supersedes)
            .bind(&r.justification_sealed)
            .execute(&mut **tx)
            .await
            .map_err(query_err("insert referral"))?;
            if !a.subjects.is_empty() {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO subject_index (referral_id, subject) ");
                q.push_values(&a.subjects, |mut row, subject| {
                    row.push_bind(&r.id).push_bind(subject);
                });
                q.build().execute(&mut **tx).await.map_err(query_err("subject index"))?;
            }
            for d in &a.deliveries {
                // Queued deliveries take the recipient's next inbox position; the counter row
                // stays locked until commit, so positions become visible in order.
                let position: Option<i64> = if d.status == crate::store::records::DeliveryStatus::Queued {
                    Some(
                        sqlx::query_scalar(
                            "INSERT INTO inbox_counters (recipient, next) VALUES ($1, 1) \
                             ON CONFLICT (recipient) DO UPDATE SET next = inbox_counters.next + 1 \
                             RETURNING next",
                        )
                        .bind(&d.recipient)
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(query_err("inbox position"))?,
                    )
                } else {
                    None
                };
                sqlx::query(
                    "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, sealed, bytes, \
                     created_at, updated_at, inbox_pos) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
                )
                .bind(&d.id)
                .bind(&r.id)
                .bind(&d.recipient)
                .bind(&d.agreement)
                .bind(d.status.as_str())
                .bind(&d.sealed)
                .bind(d.sealed.as_ref().map(|s| s.len() as i64))
                .bind(r.received_at)
                .bind(position)
                .execute(&mut **tx)
                .await
                .map_err(query_err("insert delivery"))?;
            }
            if let Some(h) = &a.hold {
                sqlx::query(
                    "INSERT INTO holds (referral_id, sealed, storage_key_id, held_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&r.id)
                .bind(&h.sealed)
                .bind(&h.storage_key_id)
                .bind(r.received_at)
                .execute(&mut **tx)
                .await
                .map_err(query_err("insert hold"))?;
            }
            match &r.supersedes {
                Some(old) => {
                    withdraw_open(
                        tx,
                        old,
                        r.received_at,
                        a.events.first().and_then(|e| e.actor.as_deref()).unwrap_or_default(),
                        serde_json::json!({ "reason": "superseded", "by": r.id }),
                    )
                    .await
                }
                None => Ok(Vec::new()),
            }
        }

        /// Appends one audit event as the next leaf of the Merkle tree (see
        /// [`insert_events`]).
        async fn insert_event(
            conn: &mut $conn,
            e: &crate::store::records::AuditRecord,
        ) -> Result<(), crate::store::StoreError> {
            insert_events(conn, std::slice::from_ref(e)).await
        }

        /// Appends audit events, in order, as the next leaves of the Merkle tree: takes
        /// their indices under the `audit_head` row lock (held until commit), stores each
        /// canonical leaf and its hash, and the hash of every perfect subtree they complete.
        /// The existing tree's frontier (at most one hash per level) is read in one query,
        /// the new hashes computed by the pure `audit::tree::append`, and rows written with
        /// multi-row inserts.
        async fn insert_events(
            conn: &mut $conn,
            events: &[crate::store::records::AuditRecord],
        ) -> Result<(), crate::store::StoreError> {
            use crate::audit::tree::leaf_hash;
            use crate::store::query_err;
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
            let keys = crate::audit::tree::frontier(first as u64);
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
                let rows: Vec<(i32, i64, String)> = q
                    .build_query_as()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(query_err("audit frontier"))?;
                for (level, idx, hash) in rows {
                    let hash = crate::audit::parse_hash(&hash).ok_or(crate::store::StoreError::Query {
                        op: "audit frontier",
                        reason: "malformed stored hash".into(),
                    })?;
                    frontier.insert((level as u32, idx as u64), hash);
                }
            }
            // Each detail is serialised once, for its column and inside its leaf.
            let leaves: Vec<(i64, String, String)> = events
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let idx = first + k as i64;
                    let detail = e.detail.to_string();
                    (idx, crate::audit::leaf_with_detail(idx, e, &detail), detail)
                })
                .collect();
            let hashes: Vec<crate::audit::tree::Hash> =
                leaves.iter().map(|(_, leaf, _)| leaf_hash(leaf.as_bytes())).collect();
            let nodes: Vec<(i32, i64, String)> = crate::audit::tree::append(first as u64, &frontier, &hashes)
                .map_err(|e| crate::store::StoreError::Query { op: "audit append", reason: e.to_string() })?
                .into_iter()
                .map(|((level, idx), hash)| (level as i32, idx as i64, hex::encode(hash)))
                .collect();
            for chunk in events.iter().zip(&leaves).collect::<Vec<_>>().chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_events (at, kind, referral_id, delivery_id, actor, detail, idx, leaf) ",
                );
                q.push_values(chunk, |mut row, (e, (idx, leaf, detail))| {
                    row.push_bind(e.at)
                        .push_bind(e.kind)
                        .push_bind(&e.referral_id)
                        .push_bind(&e.delivery_id)
                        .push_bind(&e.actor)
                        .push_bind(detail)
                        .push_bind(*idx)
                        .push_bind(leaf);
                });
                q.build().execute(&mut *conn).await.map_err(query_err("insert audit event"))?;
            }
            for chunk in nodes.chunks(INSERT_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO audit_nodes (level, idx, hash) ");
                q.push_values(chunk, |mut row, (level, idx, hash)| {
                    row.push_bind(*level).push_bind(*idx).push_bind(hash);
                });
                q.build().execute(&mut *conn).await.map_err(query_err("audit node"))?;
            }
            Ok(())
        }

        /// Withdraws every delivery of a referral that is not yet acknowledged (held ones
        /// included): status `withdrawn`, ciphertext deleted, a `withdrawn` event each with
        /// `detail`; and deletes its hold.
        async fn withdraw_open(
            tx: &mut sqlx::Transaction<'_, <$conn as sqlx::Connection>::Database>,
            referral_id: &str,
            at: i64,
            actor: &str,
            detail: serde_json::Value,
        ) -> Result<Vec<crate::store::records::AuditRecord>, crate::store::StoreError> {
            use crate::store::query_err;
            let mut events = Vec::new();
            let open: Vec<(String, String)> = sqlx::query_as(
                "SELECT id, recipient FROM deliveries WHERE referral_id = $1 \
                 AND status IN ('queued', 'delivered', 'held-for-review') ORDER BY seq",
            )
            .bind(referral_id)
            .fetch_all(&mut **tx)
            .await
            .map_err(query_err("withdraw"))?;
            for (id, recipient) in &open {
                sqlx::query(
                    "UPDATE deliveries SET status = 'withdrawn', sealed = NULL, updated_at = $1 WHERE id = $2",
                )
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(query_err("withdraw"))?;
                let mut detail = detail.clone();
                detail["to"] = serde_json::json!(recipient);
                events.push(crate::store::records::AuditRecord {
                    at,
                    kind: "withdrawn",
                    referral_id: Some(referral_id.to_owned()),
                    delivery_id: Some(id.clone()),
                    actor: Some(actor.to_owned()),
                    detail,
                });
            }
            sqlx::query("DELETE FROM holds WHERE referral_id = $1")
                .bind(referral_id)
                .execute(&mut **tx)
                .await
                .map_err(query_err("withdraw hold"))?;
            Ok(events)
        }
    };
}

pub(crate) use store_impl;
