//! The audit trail: events appended as the Merkle tree's next leaves (the maths is the
//! core's `audit::tree`), its nodes, leaves and checkpoints read back, and the report facts
//! derived from it.

use std::collections::HashMap;

use refex_core::audit::event as ev;
use refex_core::audit::tree::{self, Hash, leaf_hash};
use refex_core::ids::{DeliveryId, ReferralId};
use refex_core::timestamp::UnixTime;

use crate::common::{INSERT_CHUNK, SqlStore};
use crate::records::{self as rec, AuditRecord};
use crate::sql::{Arg, Dialect, Scalar, Stmt, Tx};
use crate::{StoreError, packed, rows};

#[async_trait::async_trait]
impl<D: Dialect> crate::AuditStore for SqlStore<D> {
    async fn record_event(&self, e: &AuditRecord) -> Result<(), StoreError> {
        // One transaction: the tree head, the leaf and its nodes move together.
        let mut tx = self.writer.begin().await?;
        insert_events(&mut tx, std::slice::from_ref(e)).await?;
        tx.commit().await
    }

    async fn audit_size(&self) -> Result<u64, StoreError> {
        let Scalar(size): Scalar<i64> = self
            .pool
            .fetch_one(Stmt::new(
                "audit size",
                "SELECT size FROM audit_head WHERE id = 1",
            ))
            .await?;
        Ok(size as u64)
    }

    async fn audit_nodes(
        &self,
        keys: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), Hash>, StoreError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(INSERT_CHUNK) {
            let found: Vec<(i64, i64, Vec<u8>)> = self.pool.fetch_all(nodes_at(chunk)).await?;
            for (level, idx, hash) in found {
                out.insert(node_key(level, idx)?, rows::hash("audit_nodes", &hash)?);
            }
        }
        Ok(out)
    }

    async fn audit_checkpoints(&self) -> Result<Vec<rec::CheckpointRecord>, StoreError> {
        let found: Vec<(i64, String, UnixTime, String)> = self
            .pool
            .fetch_all(Stmt::new(
                "audit checkpoints",
                "SELECT size, root, at, signed FROM audit_checkpoints ORDER BY size",
            ))
            .await?;
        Ok(found
            .into_iter()
            .map(|(size, root, at, signed)| rec::CheckpointRecord {
                size: size as u64,
                root,
                at,
                signed,
            })
            .collect())
    }

    async fn save_checkpoint(&self, c: &rec::CheckpointRecord) -> Result<(), StoreError> {
        self.writer
            .execute(
                Stmt::new(
                    "save checkpoint",
                    "INSERT INTO audit_checkpoints (size, root, at, signed) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING",
                )
                .bind(c.size as i64)
                .bind(&c.root)
                .bind(c.at)
                .bind(&c.signed),
            )
            .await
            .map(|_| ())
    }

    async fn audit_leaves(
        &self,
        from: u64,
        limit: u64,
    ) -> Result<Vec<rec::LeafRecord>, StoreError> {
        let sql = format!(
            // An event without its leaf hash is left out, as it always was: the offline
            // verifier names it as missing from the tree.
            "SELECT {} FROM audit_events WHERE idx >= $1 AND EXISTS (SELECT 1 FROM \
             audit_nodes n WHERE n.level = 0 AND n.idx = audit_events.idx) \
             ORDER BY idx LIMIT $2",
            rows::EVENT_COLUMNS
        );
        let found: Vec<rows::EventRowRaw> = self
            .pool
            .fetch_all(
                Stmt::new("audit leaves", sql)
                    .bind(from as i64)
                    .bind(limit as i64),
            )
            .await?;
        let mut leaves = Vec::with_capacity(found.len());
        for event in found {
            let idx = event.idx().ok_or(rows::corrupt("audit_events", "idx"))? as u64;
            let hash = event.node()?.ok_or(StoreError::Leaf { idx })?;
            let leaf = event.leaf_text().map_err(|_| StoreError::Leaf { idx })?;
            leaves.push(rec::LeafRecord { idx, leaf, hash });
        }
        Ok(leaves)
    }

    async fn report_facts(
        &self,
        from: UnixTime,
        to: UnixTime,
    ) -> Result<Vec<rec::FactRow>, StoreError> {
        // Each delivery as it stood at `to`: only events before it count, so a report of
        // ended months never changes.
        let found: Vec<rows::FactRowRaw> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "report",
                    "SELECT r.received_at, r.referral_type, r.sender, d.recipient, \
                     r.consent_status, \
                     (SELECT COALESCE(e.leaf, '') FROM audit_events e \
                      WHERE e.referral_id = d.referral_id AND e.delivery_id = d.id \
                      AND e.kind = $3 AND e.at < $2 ORDER BY e.seq LIMIT 1), \
                     (SELECT e.packed_detail FROM audit_events e \
                      WHERE e.referral_id = d.referral_id AND e.delivery_id = d.id \
                      AND e.kind = $3 AND e.at < $2 ORDER BY e.seq LIMIT 1), \
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
                .bind(ev::EventKind::Withdrawn.as_str()),
            )
            .await?;
        found.into_iter().map(rows::fact).collect()
    }
}

/// The stored hashes of the given perfect subtrees, in one statement.
fn nodes_at(keys: &[(u32, u64)]) -> Stmt<'static> {
    let mut sql = String::from("SELECT level, idx, hash FROM audit_nodes WHERE ");
    let mut stmt_args = Vec::with_capacity(keys.len() * 2);
    for (k, (level, idx)) in keys.iter().enumerate() {
        if k > 0 {
            sql.push_str(" OR ");
        }
        sql.push_str(&format!(
            "(level = ${} AND idx = ${})",
            2 * k + 1,
            2 * k + 2
        ));
        stmt_args.push(Arg::from(*level as i32));
        stmt_args.push(Arg::from(*idx as i64));
    }
    stmt_args
        .into_iter()
        .fold(Stmt::new("audit nodes", sql), Stmt::bind)
}

/// A stored node's `(level, index)`.
fn node_key(level: i64, idx: i64) -> Result<(u32, u64), StoreError> {
    Ok((
        u32::try_from(level).map_err(|_| rows::corrupt("audit_nodes", "level"))?,
        u64::try_from(idx).map_err(|_| rows::corrupt("audit_nodes", "idx"))?,
    ))
}

/// One event as [`insert_events`] writes it: its detail packed, or (longer than any packed
/// detail may be) its leaf text.
struct StoredEvent<'a> {
    record: &'a AuditRecord,
    idx: i64,
    actor: Option<String>,
    packed: Option<Vec<u8>>,
    leaf: Option<String>,
    hash: Hash,
}

/// Appends audit events, in order, as the next leaves of the Merkle tree: takes their
/// indices under the `audit_head` row lock (held until commit), stores each event (its
/// columns and packed detail, from which its leaf is rebuilt) with its leaf hash, and the
/// hash of every perfect subtree they complete. The existing tree's frontier (at most one
/// hash per level) is read in one query, the new hashes computed by the pure
/// `audit::tree::append`, and rows written with multi-row inserts.
pub(crate) async fn insert_events<D: Dialect>(
    tx: &mut Tx<D>,
    events: &[AuditRecord],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let Scalar(size): Scalar<i64> = tx
        .fetch_one(
            Stmt::new(
                "audit head",
                "UPDATE audit_head SET size = size + $1 WHERE id = 1 RETURNING size",
            )
            .bind(events.len() as i64),
        )
        .await?;
    let first = size - events.len() as i64;
    let mut frontier = HashMap::new();
    let keys = tree::frontier(first as u64);
    if !keys.is_empty() {
        for (level, idx, hash) in tx.fetch_all::<(i64, i64, Vec<u8>)>(nodes_at(&keys)).await? {
            frontier.insert(node_key(level, idx)?, rows::hash("audit_nodes", &hash)?);
        }
    }
    // An event is stored once: the columns that place it and its detail, packed. Its leaf
    // text is rebuilt from them (`LeafParts`), so only the hash needs the text here.
    let stored: Vec<StoredEvent<'_>> = events
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let idx = first + k as i64;
            let detail = e.event.detail_json();
            let actor = e.actor.as_ref().map(ToString::to_string);
            let leaf = e.leaf_with(idx, &detail);
            let hash = leaf_hash(leaf.as_bytes());
            let (packed, leaf) = if packed::packs(&detail) {
                (Some(packed::pack(&detail)), None)
            } else {
                (None, Some(leaf))
            };
            StoredEvent {
                record: e,
                idx,
                actor,
                packed,
                leaf,
                hash,
            }
        })
        .collect();
    let hashes: Vec<Hash> = stored.iter().map(|s| s.hash).collect();
    let nodes: Vec<(i32, i64, Hash)> = tree::append(first as u64, &frontier, &hashes)
        .map_err(|e| StoreError::Query {
            op: "audit append",
            reason: e.to_string(),
        })?
        .into_iter()
        .map(|((level, idx), hash)| (level as i32, idx as i64, hash))
        .collect();
    for chunk in stored.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "insert audit event",
            "INSERT INTO audit_events (at, kind, referral_id, delivery_id, actor, idx, \
             packed_detail, leaf) ",
            chunk,
            "",
            |s, args| {
                let e = s.record;
                args.extend([
                    e.at.into(),
                    e.event.kind().as_str().into(),
                    e.referral_id.as_ref().map(ReferralId::as_str).into(),
                    e.delivery_id.as_ref().map(DeliveryId::as_str).into(),
                    s.actor.as_deref().into(),
                    s.idx.into(),
                    Arg::Blob(s.packed.as_deref().map(std::borrow::Cow::Borrowed)),
                    s.leaf.as_deref().into(),
                ]);
            },
        );
        tx.execute(stmt).await?;
    }
    for chunk in nodes.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "audit node",
            "INSERT INTO audit_nodes (level, idx, hash) ",
            chunk,
            "",
            |(level, idx, hash), args| {
                args.extend([Arg::from(*level), (*idx).into(), Arg::from(&hash[..])]);
            },
        );
        tx.execute(stmt).await?;
    }
    Ok(())
}
