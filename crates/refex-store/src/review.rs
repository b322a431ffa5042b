//! Held disclosures: what a lead reviews, the decision committed whole and final, and holds
//! escalated or closed when nobody decides.

use refex_core::audit::event::{self as ev, ActorRef, AuditEvent};
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::PartnerId;
use refex_core::ids::{DeliveryId, ReferralId};
use refex_core::lifecycle::{DeliveryStatus, Step};
use refex_core::timestamp::UnixTime;

use crate::common::{
    Closing, SqlStore, close_each, insert_subject_keys, job_lock, moved, notify_inbox,
};
use crate::intake::{Withdrawal, withdraw_open};
use crate::records::{self as rec, AuditRecord};
use crate::sql::{Dialect, Scalar, Stmt, Tx};
use crate::{StoreError, rows};

#[async_trait::async_trait]
impl<D: Dialect> crate::ReviewStore for SqlStore<D> {
    async fn held_referrals(&self, sender: &PartnerId) -> Result<Vec<rec::HeldRow>, StoreError> {
        let found: Vec<rows::HeldColumns> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "held referrals",
                    "SELECT r.id, r.referral_type, r.sender_ref, r.received_at, \
                     r.consent_override, h.escalated_at \
                     FROM holds h JOIN referrals r ON r.id = h.referral_id WHERE r.sender = $1 \
                     ORDER BY r.received_at, r.id",
                )
                .bind(sender.as_str()),
            )
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for row in found {
            let recipients: Vec<Scalar<String>> = self
                .pool
                .fetch_all(
                    Stmt::new(
                        "held referrals",
                        "SELECT recipient FROM deliveries WHERE referral_id = $1 \
                         AND status = $2 ORDER BY seq",
                    )
                    .bind(&row.0)
                    .bind(DeliveryStatus::HeldForReview.as_str()),
                )
                .await?;
            let submitted_by: Option<Scalar<Option<String>>> = self
                .pool
                .fetch_optional(
                    Stmt::new(
                        "held referrals",
                        "SELECT actor FROM audit_events WHERE referral_id = $1 AND kind = $2 \
                         ORDER BY idx LIMIT 1",
                    )
                    .bind(&row.0)
                    .bind(ev::EventKind::Accepted.as_str()),
                )
                .await?;
            out.push(rows::held_row(
                row,
                recipients.into_iter().map(|s| s.0).collect(),
                submitted_by.and_then(|s| s.0),
            )?);
        }
        Ok(out)
    }

    async fn hold_sealed(&self, referral: &ReferralId) -> Result<Option<Sealed>, StoreError> {
        let sealed: Option<Scalar<String>> = self
            .pool
            .fetch_optional(
                Stmt::new("hold", "SELECT sealed FROM holds WHERE referral_id = $1")
                    .bind(referral.as_str()),
            )
            .await?;
        sealed
            .map(|s| rows::sealed("holds", "sealed", s.0))
            .transpose()
    }

    async fn decide_hold(&self, d: &rec::ReviewCommit) -> Result<rec::DecideOutcome, StoreError> {
        let mut tx = self.writer.begin().await?;
        // Deleting the hold first takes its row lock: a concurrent decision waits, then finds
        // nothing to delete and changes nothing. A decision is final.
        let gone = tx
            .execute(
                Stmt::new("decide", "DELETE FROM holds WHERE referral_id = $1")
                    .bind(d.referral_id.as_str()),
            )
            .await?;
        if gone == 0 {
            return Ok(rec::DecideOutcome::AlreadyDecided);
        }
        let refused = |why: String| StoreError::Query {
            op: "decide",
            reason: why,
        };
        // Every decided delivery must still be held (locked here, in id order); one a
        // correction withdrew meanwhile sends the lead back to the new preview, with nothing
        // changed (the transaction is dropped).
        let mut decided: Vec<(&DeliveryId, &PartnerId)> = d
            .releases
            .iter()
            .map(|r| (&r.delivery, &r.recipient))
            .chain(d.rejections.iter().map(|j| (&j.delivery, &j.recipient)))
            .collect();
        decided.sort();
        let mut changed = Vec::new();
        for (delivery, recipient) in decided {
            let from = held_status(&mut tx, &d.referral_id, delivery)
                .await?
                .ok_or_else(|| refused("a decided delivery is not the referral's".into()))?;
            if from != DeliveryStatus::HeldForReview {
                changed.push(recipient.clone());
            }
        }
        if !changed.is_empty() {
            return Ok(rec::DecideOutcome::Changed {
                recipients: changed,
            });
        }
        // The original's hold and deliveries before any inbox counter: the lock order
        // acceptances keep (hold, deliveries, inbox counters).
        let mut withdrawals = Vec::new();
        if let Some(s) = &d.withdraws {
            let withdrawal = Withdrawal {
                referral: &s.original,
                at: d.at,
                actor: Some(&d.actor),
                reason: ev::WithdrawReason::Superseded,
                by: Some(&d.referral_id),
                only: Some(&s.recipients),
            };
            withdrawals = withdraw_open(&mut tx, withdrawal).await?;
        }
        let mut keys = Vec::new();
        // Inbox counters are locked in recipient order, as acceptances lock them.
        let mut releases: Vec<&rec::Release> = d.releases.iter().collect();
        releases.sort_by(|a, b| a.recipient.cmp(&b.recipient));
        for r in releases {
            let to = decided_status(&mut tx, &d.referral_id, &r.delivery, Step::Release).await?;
            let position = inbox_position(&mut tx, &r.recipient).await?;
            tx.execute(
                Stmt::new(
                    "release",
                    "UPDATE deliveries SET status = $1, sealed = NULL, sealed_packed = $2, \
                     bytes = $3, inbox_pos = $4, queued_at = $5, updated_at = $5 WHERE id = $6",
                )
                .bind(to.as_str())
                .bind(r.sealed.to_packed())
                .bind(r.sealed.len() as i64)
                .bind(position)
                .bind(d.at)
                .bind(r.delivery.as_str()),
            )
            .await?;
            keys.extend(
                r.subjects
                    .iter()
                    .map(|s| (&d.referral_id, &r.recipient, Some(&r.delivery), s)),
            );
        }
        for j in &d.rejections {
            let to = decided_status(&mut tx, &d.referral_id, &j.delivery, Step::Reject).await?;
            tx.execute(
                Stmt::new(
                    "reject",
                    "UPDATE deliveries SET status = $1, review_reason_sealed = $2, \
                     updated_at = $3 WHERE id = $4",
                )
                .bind(to.as_str())
                .bind(&j.reason_sealed)
                .bind(d.at)
                .bind(j.delivery.as_str()),
            )
            .await?;
        }
        // A decision decides every held delivery: none may be left without one.
        let Scalar(left): Scalar<i64> = tx
            .fetch_one(
                Stmt::new(
                    "decide",
                    "SELECT COUNT(*) FROM deliveries WHERE referral_id = $1 AND status = $2",
                )
                .bind(d.referral_id.as_str())
                .bind(DeliveryStatus::HeldForReview.as_str()),
            )
            .await?;
        if left != 0 {
            return Err(refused(format!("{left} held deliveries left undecided")));
        }
        insert_subject_keys(&mut tx, &keys).await?;
        let mut events = d.events.clone();
        events.extend(withdrawals);
        crate::audit::insert_events(&mut tx, &events).await?;
        if !d.releases.is_empty() {
            notify_inbox(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(rec::DecideOutcome::Decided)
    }

    async fn previews_shown(
        &self,
        referral: &ReferralId,
        actor: &ActorRef,
    ) -> Result<Vec<Vec<ev::PreviewShown>>, StoreError> {
        let sql = format!(
            "SELECT {} FROM audit_events WHERE referral_id = $1 AND kind = $2 AND actor = $3 \
             ORDER BY idx DESC",
            rows::EVENT_COLUMNS
        );
        let events: Vec<rows::EventRowRaw> = self
            .pool
            .fetch_all(
                Stmt::new("last preview", sql)
                    .bind(referral.as_str())
                    .bind(ev::EventKind::Consulted.as_str())
                    .bind(actor.to_string()),
            )
            .await?;
        let mut out = Vec::new();
        for event in events {
            match AuditRecord::try_from(event)?.event {
                AuditEvent::Consulted(c) if c.what == ev::Consultation::ReviewPreview => {
                    out.push(c.previews);
                }
                AuditEvent::Consulted(_) => {}
                _ => return Err(rows::corrupt("audit_events", "leaf")),
            }
        }
        Ok(out)
    }

    async fn escalate_holds(&self, cutoff: UnixTime, at: UnixTime) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        // Of several replicas, one does this job at a time; the next finds it done.
        if !job_lock(&mut tx, "escalate").await? {
            return Ok(0);
        }
        let due: Vec<Scalar<String>> = tx
            .fetch_all(
                Stmt::new(
                    "escalate",
                    "SELECT referral_id FROM holds WHERE escalated_at IS NULL AND held_at < $1 \
                     ORDER BY held_at",
                )
                .bind(cutoff),
            )
            .await?;
        let mut events = Vec::with_capacity(due.len());
        for Scalar(id) in &due {
            let referral = rows::referral_id("holds", id)?;
            tx.execute(
                Stmt::new(
                    "escalate",
                    "UPDATE holds SET escalated_at = $1 WHERE referral_id = $2",
                )
                .bind(at)
                .bind(id),
            )
            .await?;
            events.push(
                AuditRecord::new(
                    at,
                    None,
                    AuditEvent::Escalated(ev::Escalated {
                        reason: "undecided past the review deadline".into(),
                    }),
                )
                .about(&referral),
            );
        }
        crate::audit::insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(due.len() as u64)
    }

    async fn close_undecided_holds(
        &self,
        cutoff: UnixTime,
        at: UnixTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        // Of several replicas, one does this job at a time; the next finds it done.
        if !job_lock(&mut tx, "close-undecided").await? {
            return Ok(0);
        }
        let due: Vec<Scalar<String>> = tx
            .fetch_all(
                Stmt::new(
                    "close undecided",
                    "SELECT referral_id FROM holds WHERE held_at < $1 ORDER BY held_at",
                )
                .bind(cutoff),
            )
            .await?;
        let mut events = Vec::new();
        let mut closed = 0;
        for Scalar(id) in &due {
            // The hold first (the lock order): a decision that got there first wins.
            let gone = tx
                .execute(
                    Stmt::new(
                        "close undecided",
                        "DELETE FROM holds WHERE referral_id = $1",
                    )
                    .bind(id),
                )
                .await?;
            if gone == 0 {
                continue;
            }
            closed += 1;
            let held: Vec<(String, String, String, String)> = tx
                .fetch_all(
                    Stmt::new(
                        "close undecided",
                        format!(
                            "SELECT id, referral_id, recipient, status FROM deliveries \
                             WHERE referral_id = $1 AND status = $2 ORDER BY seq{}",
                            D::FOR_UPDATE
                        ),
                    )
                    .bind(id)
                    .bind(DeliveryStatus::HeldForReview.as_str()),
                )
                .await?;
            let held = held
                .into_iter()
                .map(Closing::read)
                .collect::<Result<Vec<_>, _>>()?;
            events.extend(
                close_each(&mut tx, &held, Step::ExpireUndecided, at, None, |to| {
                    AuditEvent::ClosedUndecided(ev::ToRecipient { to: to.clone() })
                })
                .await?,
            );
        }
        crate::audit::insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(closed)
    }

    async fn count_escalated(&self) -> Result<i64, StoreError> {
        let Scalar(n) = self
            .pool
            .fetch_one(Stmt::new(
                "count escalated",
                "SELECT COUNT(*) FROM holds WHERE escalated_at IS NOT NULL",
            ))
            .await?;
        Ok(n)
    }
}

/// The status of one of a referral's deliveries (locked), if it is the referral's.
async fn held_status<D: Dialect>(
    tx: &mut Tx<D>,
    referral: &ReferralId,
    id: &DeliveryId,
) -> Result<Option<DeliveryStatus>, StoreError> {
    let status: Option<Scalar<String>> = tx
        .fetch_optional(
            Stmt::new(
                "decide",
                format!(
                    "SELECT status FROM deliveries WHERE id = $1 AND referral_id = $2{}",
                    D::FOR_UPDATE
                ),
            )
            .bind(id.as_str())
            .bind(referral.as_str()),
        )
        .await?;
    status.map(|s| rows::status(&s.0)).transpose()
}

/// The status a lead's `step` (release or reject) moves a held delivery to, or the refusal
/// naming why it cannot.
async fn decided_status<D: Dialect>(
    tx: &mut Tx<D>,
    referral: &ReferralId,
    id: &DeliveryId,
    step: Step,
) -> Result<DeliveryStatus, StoreError> {
    let refused = |why: String| StoreError::Query {
        op: "decide",
        reason: why,
    };
    let from = held_status(tx, referral, id)
        .await?
        .ok_or_else(|| refused("a decided delivery is not the referral's".into()))?;
    moved(from, step)
        .map_err(|e| refused(e.to_string()))?
        .ok_or_else(|| refused("the decision changes nothing".into()))
}

/// The next position in `recipient`'s inbox. The counter row stays locked until commit, so
/// positions become visible in order.
async fn inbox_position<D: Dialect>(
    tx: &mut Tx<D>,
    recipient: &PartnerId,
) -> Result<i64, StoreError> {
    let Scalar(next) = tx
        .fetch_one(
            Stmt::new(
                "inbox position",
                "INSERT INTO inbox_counters (recipient, next) VALUES ($1, 1) \
                 ON CONFLICT (recipient) DO UPDATE SET next = inbox_counters.next + 1 \
                 RETURNING next",
            )
            .bind(recipient.as_str()),
        )
        .await?;
    Ok(next)
}
