//! Recipients' inboxes: pages and backlog, and fetches and acknowledgements committed in
//! groups (each applied in order as if alone, their audit events appended together).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use refex_core::audit::event::{self as ev, ActorRef, AuditEvent};
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::PartnerId;
use refex_core::ids::{DeliveryId, ReferralId};
use refex_core::lifecycle::{DeliveryStatus, Step};
use refex_core::timestamp::UnixTime;

use crate::common::{INBOX_BACKLOG, INBOX_PAGE, SqlStore, moved, watch};
use crate::group_commit::Turn;
use crate::records::{self as rec, AuditRecord};
use crate::sql::{Arg, Dialect, Pool, Stmt};
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

    async fn ack_deliveries(
        &self,
        recipient: &PartnerId,
        ids: &[DeliveryId],
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<Vec<rec::AckOutcome>, StoreError> {
        let writes = ids
            .iter()
            .map(|id| rec::InboxWrite::Ack {
                recipient: recipient.clone(),
                id: id.clone(),
                at,
                actor: actor.clone(),
            })
            .collect();
        self.inbox
            .submit_all(writes)
            .await
            .into_iter()
            .map(|done| match done? {
                rec::InboxWritten::Acked(outcome) => Ok(outcome),
                rec::InboxWritten::Fetched(_) => Err(rows::corrupt("inbox group commit", "answer")),
            })
            .collect()
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
    // Every row the batch may write, read and locked up front in `seq` order, the order a
    // withdrawal, an expiry and a correction lock a referral's deliveries in: locking them
    // one by one in arrival order could deadlock with those on PostgreSQL. (On SQLite,
    // whose one writer needs no row locks, this is one indexed read.)
    let ids: Vec<Arg<'_>> = batch.iter().map(|w| Arg::from(w.id().as_str())).collect();
    let tail = format!(") ORDER BY seq{}", D::FOR_UPDATE);
    let found: Vec<BatchRow> = tx
        .fetch_all(Stmt::list(
            "inbox batch",
            "SELECT id, recipient, status, referral_id FROM deliveries WHERE id IN (",
            ids,
            ", ",
            &tail,
        ))
        .await?;
    let mut rows = HashMap::with_capacity(found.len());
    for (id, recipient, status, referral) in found {
        let current = Current {
            recipient: rows::parse("deliveries", "recipient", &recipient)?,
            status: rows::status(&status)?,
            sealed: None,
            packed: None,
            referral: rows::referral_id("deliveries", &referral)?,
        };
        rows.insert(rows::delivery_id(&id)?, current);
    }
    // The ciphertext only of the deliveries fetched by their own recipient: naming another
    // partner's delivery, or acknowledging one, never reads one (an id a caller does not
    // own costs what an unknown one does).
    let mut wanted: Vec<&DeliveryId> = batch
        .iter()
        .filter_map(|w| match w {
            rec::InboxWrite::Fetch { recipient, id, .. } => rows
                .get(id)
                .filter(|row| row.recipient == *recipient)
                .map(|_| id),
            rec::InboxWrite::Ack { .. } => None,
        })
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    if !wanted.is_empty() {
        let sealed: Vec<SealedRow> = tx
            .fetch_all(Stmt::list(
                "inbox batch",
                "SELECT id, sealed, sealed_packed FROM deliveries WHERE id IN (",
                wanted
                    .into_iter()
                    .map(|id| Arg::from(id.as_str()))
                    .collect(),
                ", ",
                ")",
            ))
            .await?;
        for (id, text, packed) in sealed {
            if let Some(row) = rows.get_mut(&rows::delivery_id(&id)?) {
                (row.sealed, row.packed) = (text, packed);
            }
        }
    }
    // Each write applied in order to the rows as they stand after the ones before it.
    let mut plan = Plan::default();
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        results.push(plan.apply(&mut rows, write)?);
    }
    if plan.events.is_empty() {
        // Only reads (fetches of deliveries already delivered, acknowledgements repeated):
        // nothing to commit, but what they read may be a commit not yet durable.
        drop(tx);
        turn.end();
        pool.barrier().await?;
        return Ok(results);
    }
    // A delivery fetched and acknowledged in one batch moved to `delivered` before it
    // moved on: the fetches' updates go first.
    for ((at, to), ids) in plan.delivered {
        tx.execute(moves(false, to, at, ids)).await?;
    }
    for ((at, to), ids) in plan.acknowledged {
        tx.execute(moves(true, to, at, ids)).await?;
    }
    crate::audit::insert_events(&mut tx, &plan.events).await?;
    tx.commit_then(|| turn.end()).await?;
    Ok(results)
}

/// A delivery as a batch reads it: id, recipient, status, referral.
type BatchRow = (String, String, String, String);

/// A delivery's ciphertext as a batch reads it: id, as text or packed.
type SealedRow = (String, Option<String>, Option<Vec<u8>>);

/// A delivery as it stands within a batch, after the writes applied so far.
struct Current {
    recipient: PartnerId,
    status: DeliveryStatus,
    sealed: Option<String>,
    packed: Option<Vec<u8>>,
    referral: ReferralId,
}

/// What a batch writes: the deliveries each kind of move updates, by time and new status,
/// and the events.
#[derive(Default)]
struct Plan {
    /// First fetches: `fetched_at` set.
    delivered: BTreeMap<(UnixTime, DeliveryStatus), Vec<DeliveryId>>,
    /// Acknowledgements: `acked_at` set, the ciphertext deleted.
    acknowledged: BTreeMap<(UnixTime, DeliveryStatus), Vec<DeliveryId>>,
    events: Vec<AuditRecord>,
}

impl Plan {
    /// Applies one write to `rows`: its answer, and the update and event it makes, if any.
    fn apply(
        &mut self,
        rows: &mut HashMap<DeliveryId, Current>,
        write: &rec::InboxWrite,
    ) -> Result<rec::InboxWritten, StoreError> {
        match write {
            rec::InboxWrite::Fetch {
                recipient,
                id,
                at,
                actor,
            } => {
                let Some(row) = own(rows, recipient, id) else {
                    return Ok(rec::InboxWritten::Fetched(None));
                };
                let Ok(to) = moved(row.status, Step::Fetch) else {
                    return Ok(rec::InboxWritten::Fetched(None));
                };
                // In the inbox, a delivery always has its ciphertext.
                let sealed = rows::delivery_sealed(row.sealed.clone(), row.packed.clone())?
                    .ok_or(rows::corrupt("deliveries", "sealed"))?;
                if let Some(to) = to {
                    row.status = to;
                    self.note(Move::FirstFetch, row, id, *at, actor);
                }
                Ok(rec::InboxWritten::Fetched(Some(sealed)))
            }
            rec::InboxWrite::Ack {
                recipient,
                id,
                at,
                actor,
            } => {
                let Some(row) = own(rows, recipient, id) else {
                    return Ok(rec::InboxWritten::Acked(rec::AckOutcome::NotFound));
                };
                let to = match moved(row.status, Step::Acknowledge) {
                    Ok(Some(to)) => to,
                    Ok(None) => {
                        return Ok(rec::InboxWritten::Acked(
                            rec::AckOutcome::AlreadyAcknowledged,
                        ));
                    }
                    Err(_) => return Ok(rec::InboxWritten::Acked(rec::AckOutcome::NotFound)),
                };
                row.status = to;
                (row.sealed, row.packed) = (None, None);
                self.note(Move::Acknowledgement, row, id, *at, actor);
                Ok(rec::InboxWritten::Acked(rec::AckOutcome::Acknowledged))
            }
        }
    }
}

/// A move a batch writes.
#[derive(Clone, Copy, Debug)]
enum Move {
    /// A first fetch: `delivered`, with its `fetched` event.
    FirstFetch,
    /// An acknowledgement: `acknowledged`, with its event.
    Acknowledgement,
}

impl Plan {
    /// Notes that `row` (delivery `id`, its status already moved) moved at `at`, and the
    /// move's event.
    fn note(&mut self, kind: Move, row: &Current, id: &DeliveryId, at: UnixTime, actor: &ActorRef) {
        let (moves, event) = match kind {
            Move::FirstFetch => (
                &mut self.delivered,
                AuditEvent::Fetched(ev::Fetched { first: true }),
            ),
            Move::Acknowledgement => (
                &mut self.acknowledged,
                AuditEvent::Acknowledged(ev::Acknowledged {}),
            ),
        };
        moves.entry((at, row.status)).or_default().push(id.clone());
        self.events.push(
            AuditRecord::new(at, Some(actor.clone()), event)
                .about(&row.referral)
                .delivery(id),
        );
    }
}

/// The delivery `id` if it is `recipient`'s (another partner's is as absent as an unknown
/// one).
fn own<'r>(
    rows: &'r mut HashMap<DeliveryId, Current>,
    recipient: &PartnerId,
    id: &DeliveryId,
) -> Option<&'r mut Current> {
    rows.get_mut(id).filter(|row| row.recipient == *recipient)
}

/// One statement moving `ids` to status `to` at `at`: a first fetch's (`fetched_at`) or,
/// `acknowledged`, an acknowledgement's (`acked_at`, the ciphertext deleted).
fn moves(
    acknowledged: bool,
    to: DeliveryStatus,
    at: UnixTime,
    ids: Vec<DeliveryId>,
) -> Stmt<'static> {
    let n = ids.len();
    let set = if acknowledged {
        "sealed = NULL, sealed_packed = NULL, acked_at"
    } else {
        "fetched_at"
    };
    let head = format!(
        "UPDATE deliveries SET status = ${}, {set} = ${}, updated_at = ${} WHERE id IN (",
        n + 1,
        n + 2,
        n + 2
    );
    let args = ids
        .into_iter()
        .map(|id| Arg::from(id.as_str().to_owned()))
        .collect();
    Stmt::list("inbox moves", &head, args, ", ", ")")
        .bind(to.as_str())
        .bind(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fetch: bool, who: &str, id: &DeliveryId) -> rec::InboxWrite {
        let (recipient, at) = (who.parse().expect("partner"), UnixTime::from_secs(100));
        let actor = ActorRef::System {
            partner: who.parse().expect("partner"),
            id: "system".parse().expect("system"),
        };
        let id = id.clone();
        if fetch {
            rec::InboxWrite::Fetch {
                recipient,
                id,
                at,
                actor,
            }
        } else {
            rec::InboxWrite::Ack {
                recipient,
                id,
                at,
                actor,
            }
        }
    }

    /// Each write of a batch sees the ones before it, as if alone: fetched then
    /// acknowledged moves in that order, nothing after an acknowledgement reads the
    /// ciphertext, and another partner's delivery is as absent as an unknown one.
    #[test]
    fn a_batch_applies_each_write_in_order_as_if_alone() {
        let (a, b) = (
            DeliveryId::parse("dlv_00000000000000000000000001").expect("id"),
            DeliveryId::parse("dlv_00000000000000000000000002").expect("id"),
        );
        let unknown = DeliveryId::parse("dlv_00000000000000000000000003").expect("id");
        let referral = ReferralId::parse("ref_00000000000000000000000001").expect("id");
        let row = |who: &str| Current {
            recipient: who.parse().expect("partner"),
            status: DeliveryStatus::Queued,
            sealed: Some("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.a2V5.aXY.Y3Q.dGFn".into()),
            packed: None,
            referral: referral.clone(),
        };
        let mut rows = HashMap::from([
            (a.clone(), row("imara")),
            (b.clone(), row("childrens-social-care")),
        ]);
        let mut plan = Plan::default();
        let answers: Vec<rec::InboxWritten> = [
            write(true, "imara", &a),
            write(false, "imara", &a),
            write(true, "imara", &a),
            write(false, "imara", &a),
            write(true, "imara", &b),
            write(false, "imara", &b),
            write(false, "imara", &unknown),
        ]
        .iter()
        .map(|w| plan.apply(&mut rows, w).expect("applies"))
        .collect();
        assert!(matches!(answers[0], rec::InboxWritten::Fetched(Some(_))));
        assert_eq!(
            answers[1..],
            [
                rec::InboxWritten::Acked(rec::AckOutcome::Acknowledged),
                rec::InboxWritten::Fetched(None),
                rec::InboxWritten::Acked(rec::AckOutcome::AlreadyAcknowledged),
                rec::InboxWritten::Fetched(None),
                rec::InboxWritten::Acked(rec::AckOutcome::NotFound),
                rec::InboxWritten::Acked(rec::AckOutcome::NotFound),
            ]
        );
        let at = UnixTime::from_secs(100);
        let one = |status: DeliveryStatus| BTreeMap::from([((at, status), vec![a.clone()])]);
        assert_eq!(plan.delivered, one(DeliveryStatus::Delivered));
        assert_eq!(plan.acknowledged, one(DeliveryStatus::Acknowledged));
        let kinds: Vec<_> = plan.events.iter().map(|e| e.event.kind()).collect();
        assert_eq!(kinds, [ev::EventKind::Fetched, ev::EventKind::Acknowledged]);
        let left = &rows[&a];
        assert_eq!(left.status, DeliveryStatus::Acknowledged);
        assert!(left.sealed.is_none() && left.packed.is_none());
        assert_eq!(rows[&b].status, DeliveryStatus::Queued);
    }
}
