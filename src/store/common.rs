//! The SQL both backends share, generated for each pool type by one macro: sqlx accepts `$N`
//! placeholders on SQLite too, so the statements are written once.

/// Implements [`Store`](super::Store) for a backend type with a `pool` field, and defines
/// `insert_event` for its connection type.
macro_rules! store_impl {
    ($store:ty, $backend:expr, $conn:ty) => {
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
                self.pool.close().await;
            }

        async fn accept(&self, a: &crate::store::records::Acceptance) -> Result<(), crate::store::StoreError> {
            use crate::store::{StoreError, query_err};
            let mut tx = self.pool.begin().await.map_err(query_err("begin"))?;
            let r = &a.referral;
            let marker = sqlx::query("INSERT INTO replay_markers (sender, jti, seen_at) VALUES ($1, $2, $3)")
                .bind(&r.sender)
                .bind(&a.jti)
                .bind(r.received_at)
                .execute(&mut *tx)
                .await;
            match marker {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::Replay),
                other => {
                    other.map_err(query_err("replay marker"))?;
                }
            }
            sqlx::query(
                "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, lawful_basis, \
                 consent_status, consent_override, subject_informed, supersedes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            .execute(&mut *tx)
            .await
            .map_err(query_err("insert referral"))?;
            for d in &a.deliveries {
                sqlx::query(
                    "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, sealed, bytes, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(&d.id)
                .bind(&r.id)
                .bind(&d.recipient)
                .bind(&d.agreement)
                .bind(d.status.as_str())
                .bind(&d.sealed)
                .bind(d.sealed.as_ref().map(|s| s.len() as i64))
                .bind(r.received_at)
                .execute(&mut *tx)
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
                .execute(&mut *tx)
                .await
                .map_err(query_err("insert hold"))?;
            }
            for e in &a.events {
                insert_event(&mut *tx, e).await?;
            }
            tx.commit().await.map_err(query_err("commit"))
        }

        async fn record_event(&self, e: &crate::store::records::AuditRecord) -> Result<(), crate::store::StoreError> {
            let mut conn = self.pool.acquire().await.map_err(crate::store::query_err("acquire"))?;
            insert_event(&mut *conn, e).await
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

        async fn count_rows(&self, table: crate::store::Table) -> Result<i64, crate::store::StoreError> {
            sqlx::query_scalar(table.count_sql())
                .fetch_one(&self.pool)
                .await
                .map_err(crate::store::query_err("count"))
        }
        }

        async fn insert_event(
            conn: &mut $conn,
            e: &crate::store::records::AuditRecord,
        ) -> Result<(), crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO audit_events (at, kind, referral_id, delivery_id, actor, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(e.at)
            .bind(e.kind)
            .bind(&e.referral_id)
            .bind(&e.delivery_id)
            .bind(&e.actor)
            .bind(e.detail.to_string())
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(crate::store::query_err("insert audit event"))
        }
    };
}

pub(crate) use store_impl;
