//! Recipients' inboxes: pages and backlog, and fetches and acknowledgements committed in
//! groups (each applied in order as if alone, their audit events appended together).

use std::sync::Arc;

use refex_core::audit::event::{self as ev, ActorRef, AuditEvent};
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::PartnerId;
use refex_core::ids::DeliveryId;
use refex_core::lifecycle::{DeliveryStatus, Step};
use refex_core::timestamp::UnixTime;

use crate::common::{INBOX_BACKLOG, INBOX_PAGE, SqlStore, moved, watch};
use crate::group_commit::Turn;
use crate::records::{self as rec, AuditRecord};
use crate::sql::{Arg, Dialect, Pool, Scalar, Stmt, Tx};
use crate::{StoreError, rows};

#[async_trait::async_trait]
impl<D: Dialect> crate::InboxStore for SqlStore<D> {
    async fn inbox_page(
        &self,
        recipient: &PartnerId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<rec::InboxItem>, StoreError> {
        let found: Vec<(
            String,
            String,
            String,
            UnixTime,
            Option<i64>,
            Option<i64>,
            String,
        )> = self
            .pool
            .fetch_all(
                Stmt::new("inbox page", INBOX_PAGE.as_str())
                    .bind(recipient.as_str())
                    .bind(after)
                    .bind(limit),
            )
            .await?;
        found.into_iter().map(rows::inbox_item).collect()
    }

    async fn peek_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
    ) -> Result<Option<(DeliveryStatus, Option<Sealed>)>, StoreError> {
        let row: Option<(String, Option<String>, Option<Vec<u8>>)> = self
            .pool
            .fetch_optional(
                Stmt::new(
                    "peek delivery",
                    "SELECT status, sealed, sealed_packed FROM deliveries \
                     WHERE id = $1 AND recipient = $2",
                )
                .bind(id.as_str())
                .bind(recipient.as_str()),
            )
            .await?;
        match row {
            Some((status, sealed, packed)) => Ok(Some((
                rows::status(&status)?,
                rows::delivery_sealed(sealed, packed)?,
            ))),
            None => Ok(None),
        }
    }

    async fn fetch_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<Option<Sealed>, StoreError> {
        let write = rec::InboxWrite::Fetch {
            recipient: recipient.clone(),
            id: id.clone(),
            at,
            actor: actor.clone(),
        };
        match self.inbox.submit(write).await? {
            rec::InboxWritten::Fetched(sealed) => Ok(sealed),
            rec::InboxWritten::Acked(_) => Err(rows::corrupt("inbox group commit", "answer")),
        }
    }

    async fn ack_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<rec::AckOutcome, StoreError> {
        let write = rec::InboxWrite::Ack {
            recipient: recipient.clone(),
            id: id.clone(),
            at,
            actor: actor.clone(),
        };
        match self.inbox.submit(write).await? {
            rec::InboxWritten::Acked(outcome) => Ok(outcome),
            rec::InboxWritten::Fetched(_) => Err(rows::corrupt("inbox group commit", "answer")),
        }
    }

    async fn received(
        &self,
        recipient: &PartnerId,
        limit: i64,
    ) -> Result<Vec<rec::ReceivedRow>, StoreError> {
        let found: Vec<(String, String, String, String, UnixTime, String)> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "received",
                    "SELECT d.id, d.referral_id, r.sender, r.referral_type, r.received_at, \
                     d.status FROM deliveries d JOIN referrals r ON r.id = d.referral_id \
                     WHERE d.recipient = $1 AND d.inbox_pos IS NOT NULL \
                     ORDER BY d.inbox_pos DESC LIMIT $2",
                )
                .bind(recipient.as_str())
                .bind(limit),
            )
            .await?;
        found.into_iter().map(rows::received_row).collect()
    }

    async fn inbox_backlog(&self) -> Result<Vec<(PartnerId, i64, Option<UnixTime>)>, StoreError> {
        let found: Vec<(String, i64, Option<UnixTime>)> = self
            .pool
            .fetch_all(Stmt::new("inbox backlog", INBOX_BACKLOG.as_str()))
            .await?;
        found
            .into_iter()
            .map(|(p, n, at)| Ok((rows::parse("deliveries", "recipient", &p)?, n, at)))
            .collect()
    }

    fn watch_inbox_changes(&self, on_change: Arc<dyn Fn() + Send + Sync>) {
        watch(self, on_change);
    }
}

/// Commits a batch of inbox fetches and acknowledgements in one transaction (group commit),
/// each applied in order as if alone, their audit events appended together. If the batch's
/// transaction fails (a lost connection, or on PostgreSQL a deadlock with a housekeeping
/// batch holding the same rows), each write is tried again in a transaction of its own, so
/// one write's trouble is only its own.
pub(crate) async fn inbox_batch<D: Dialect>(
    pool: &Pool<D>,
    batch: Vec<rec::InboxWrite>,
    turn: &Turn,
) -> Vec<Result<rec::InboxWritten, StoreError>> {
    if let Ok(results) = inbox_batch_tx(pool, &batch, turn).await {
        return results.into_iter().map(Ok).collect();
    }
    let mut results = Vec::with_capacity(batch.len());
    for write in &batch {
        results.push(
            inbox_batch_tx(pool, std::slice::from_ref(write), turn)
                .await
                .and_then(|mut r| r.pop().ok_or(rows::corrupt("inbox group commit", "answer"))),
        );
    }
    results
}

async fn inbox_batch_tx<D: Dialect>(
    pool: &Pool<D>,
    batch: &[rec::InboxWrite],
    turn: &Turn,
) -> Result<Vec<rec::InboxWritten>, StoreError> {
    let mut tx = pool.begin().await?;
    // Every row the batch may write, locked up front in `seq` order, the order a
    // withdrawal, an expiry and a correction lock a referral's deliveries in: locking them
    // one by one in arrival order could deadlock with those on PostgreSQL. (On SQLite,
    // whose one writer needs no row locks, this is a short indexed read.)
    let ids: Vec<Arg<'_>> = batch
        .iter()
        .map(|w| {
            let (rec::InboxWrite::Fetch { id, .. } | rec::InboxWrite::Ack { id, .. }) = w;
            Arg::from(id.as_str())
        })
        .collect();
    let tail = format!(") ORDER BY seq{}", D::FOR_UPDATE);
    tx.fetch_all::<Scalar<i64>>(Stmt::list(
        "inbox locks",
        "SELECT seq FROM deliveries WHERE id IN (",
        ids,
        ", ",
        &tail,
    ))
    .await?;
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        let (done, event) = match write {
            rec::InboxWrite::Fetch {
                recipient,
                id,
                at,
                actor,
            } => {
                let (sealed, event) = fetch_in(&mut tx, recipient, id, *at, actor).await?;
                (rec::InboxWritten::Fetched(sealed), event)
            }
            rec::InboxWrite::Ack {
                recipient,
                id,
                at,
                actor,
            } => {
                let (outcome, event) = ack_in(&mut tx, recipient, id, *at, actor).await?;
                (rec::InboxWritten::Acked(outcome), event)
            }
        };
        results.push(done);
        events.extend(event);
    }
    if events.is_empty() {
        // Only reads (fetches of deliveries already delivered, acknowledgements repeated):
        // nothing to commit, but what they read may be a commit not yet durable.
        drop(tx);
        turn.end();
        pool.barrier().await?;
        return Ok(results);
    }
    crate::audit::insert_events(&mut tx, &events).await?;
    tx.commit_then(|| turn.end()).await?;
    Ok(results)
}

/// `columns` of a delivery of `recipient`'s, locked.
fn locked_delivery<'a, D: Dialect>(
    op: &'static str,
    columns: &str,
    recipient: &'a PartnerId,
    id: &'a DeliveryId,
) -> Stmt<'a> {
    Stmt::new(
        op,
        format!(
            "SELECT {columns} FROM deliveries WHERE id = $1 AND recipient = $2{}",
            D::FOR_UPDATE
        ),
    )
    .bind(id.as_str())
    .bind(recipient.as_str())
}

/// A delivery as a fetch reads it: status, ciphertext (as text or packed), referral.
type FetchRow = (String, Option<String>, Option<Vec<u8>>, String);

/// A fetch inside a batch: the sealed delivery if it is in `recipient`'s inbox, and for the
/// first fetch the `delivered` mark made and its `fetched` event.
async fn fetch_in<D: Dialect>(
    tx: &mut Tx<D>,
    recipient: &PartnerId,
    id: &DeliveryId,
    at: UnixTime,
    actor: &ActorRef,
) -> Result<(Option<Sealed>, Option<AuditRecord>), StoreError> {
    let row: Option<FetchRow> = tx
        .fetch_optional(locked_delivery::<D>(
            "fetch delivery",
            "status, sealed, sealed_packed, referral_id",
            recipient,
            id,
        ))
        .await?;
    let Some((status, sealed, packed, referral)) = row else {
        return Ok((None, None));
    };
    let referral = rows::referral_id("deliveries", &referral)?;
    let Ok(to) = moved(rows::status(&status)?, Step::Fetch) else {
        return Ok((None, None));
    };
    // In the inbox, a delivery always has its ciphertext.
    let sealed =
        rows::delivery_sealed(sealed, packed)?.ok_or(rows::corrupt("deliveries", "sealed"))?;
    let Some(to) = to else {
        return Ok((Some(sealed), None));
    };
    tx.execute(
        Stmt::new(
            "mark delivered",
            "UPDATE deliveries SET status = $1, fetched_at = $2, updated_at = $2 WHERE id = $3",
        )
        .bind(to.as_str())
        .bind(at)
        .bind(id.as_str()),
    )
    .await?;
    let event = AuditRecord::new(
        at,
        Some(actor.clone()),
        AuditEvent::Fetched(ev::Fetched { first: true }),
    )
    .about(&referral)
    .delivery(id);
    Ok((Some(sealed), Some(event)))
}

/// An acknowledgement inside a batch: the ciphertext deleted and the delivery out of the
/// inbox, with its `acknowledged` event; idempotent.
async fn ack_in<D: Dialect>(
    tx: &mut Tx<D>,
    recipient: &PartnerId,
    id: &DeliveryId,
    at: UnixTime,
    actor: &ActorRef,
) -> Result<(rec::AckOutcome, Option<AuditRecord>), StoreError> {
    let row: Option<(String, String)> = tx
        .fetch_optional(locked_delivery::<D>(
            "ack delivery",
            "status, referral_id",
            recipient,
            id,
        ))
        .await?;
    let Some((status, referral)) = row else {
        return Ok((rec::AckOutcome::NotFound, None));
    };
    let referral = rows::referral_id("deliveries", &referral)?;
    let to = match moved(rows::status(&status)?, Step::Acknowledge) {
        Ok(Some(to)) => to,
        Ok(None) => return Ok((rec::AckOutcome::AlreadyAcknowledged, None)),
        Err(_) => return Ok((rec::AckOutcome::NotFound, None)),
    };
    tx.execute(
        Stmt::new(
            "ack delivery",
            "UPDATE deliveries SET status = $1, sealed = NULL, sealed_packed = NULL, \
             acked_at = $2, updated_at = $2 WHERE id = $3",
        )
        .bind(to.as_str())
        .bind(at)
        .bind(id.as_str()),
    )
    .await?;
    let event = AuditRecord::new(
        at,
        Some(actor.clone()),
        AuditEvent::Acknowledged(ev::Acknowledged {}),
    )
    .about(&referral)
    .delivery(id);
    Ok((rec::AckOutcome::Acknowledged, Some(event)))
}
