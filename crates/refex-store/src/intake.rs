//! Referrals as their senders see them: acceptances committed in groups (whole-batch
//! statements, falling back to one savepoint each), replay lookups, status, withdrawal,
//! corrections and subject access.

use std::collections::{BTreeMap, HashMap, HashSet, hash_map::Entry};

use refex_core::audit::event::{self as ev, ActorRef, AuditEvent};
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::PartnerId;
use refex_core::ids::{DeliveryId, Jti, ReferralId, SubjectHash};
use refex_core::lifecycle::Step;
use refex_core::timestamp::UnixTime;

use crate::common::{
    Closing, INSERT_CHUNK, OPEN_DELIVERIES, SUBJECT_MATCHES, SqlStore, close_each,
    insert_subject_keys, notify_inbox,
};
use crate::group_commit::Turn;
use crate::records::{self as rec, AuditRecord};
use crate::sql::{Arg, Dialect, Pool, Scalar, Stmt, Tx};
use crate::{StoreError, rows};

#[async_trait::async_trait]
impl<D: Dialect> crate::IntakeStore for SqlStore<D> {
    async fn accept(&self, a: rec::Acceptance) -> Result<rec::AcceptOutcome, StoreError> {
        // Details packed here, on this acceptance's own task, not by the one writer (see
        // `packed`).
        crate::packed::pack_ahead(a.events.iter().map(|e| e.event.detail_json()));
        self.group.submit(a).await
    }

    async fn prior_acceptance(
        &self,
        sender: &PartnerId,
        jti: &Jti,
    ) -> Result<Option<rec::PriorAcceptance>, StoreError> {
        let row = self.pool.fetch_optional(replay_marker(sender, jti)).await?;
        let found = prior(row)?;
        if found.is_some() {
            // A reader sees a commit before it is durable: "accepted before" is an answer
            // only once it is.
            self.writer.barrier().await?;
        }
        Ok(found)
    }

    async fn delivery_states(
        &self,
        referral: &ReferralId,
        sender: &PartnerId,
    ) -> Result<Option<Vec<rec::DeliveryState>>, StoreError> {
        let owner: Option<Scalar<String>> = self.pool.fetch_optional(owner_of(referral)).await?;
        if owner.map(|s| s.0).as_deref() != Some(sender.as_str()) {
            return Ok(None);
        }
        let found: Vec<(String, String, Option<String>)> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "delivery states",
                    "SELECT recipient, status, review_reason_sealed FROM deliveries \
                     WHERE referral_id = $1 ORDER BY seq",
                )
                .bind(referral.as_str()),
            )
            .await?;
        found
            .into_iter()
            .map(rows::delivery_state)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn withdraw(
        &self,
        referral: &ReferralId,
        sender: &PartnerId,
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<Option<Vec<rec::DeliveryState>>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let owner: Option<Scalar<String>> = tx.fetch_optional(owner_of(referral)).await?;
        if owner.map(|s| s.0).as_deref() != Some(sender.as_str()) {
            return Ok(None);
        }
        let withdrawal = Withdrawal {
            referral,
            at,
            actor: Some(actor),
            reason: ev::WithdrawReason::WithdrawnBySender,
            by: None,
            only: None,
        };
        let events = withdraw_open(&mut tx, withdrawal).await?;
        crate::audit::insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        self.delivery_states(referral, sender).await
    }

    async fn referral_links(
        &self,
        referral: &ReferralId,
    ) -> Result<(Option<ReferralId>, Option<ReferralId>), StoreError> {
        let supersedes: Option<Scalar<Option<String>>> = self
            .pool
            .fetch_optional(
                Stmt::new(
                    "referral links",
                    "SELECT supersedes FROM referrals WHERE id = $1",
                )
                .bind(referral.as_str()),
            )
            .await?;
        // Only a correction that reached an inbox has replaced anything.
        let superseded_by: Option<Scalar<String>> = self
            .pool
            .fetch_optional(
                Stmt::new(
                    "referral links",
                    "SELECT r.id FROM referrals r WHERE r.supersedes = $1 AND EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.referral_id = r.id \
                     AND d.queued_at IS NOT NULL) \
                     ORDER BY r.received_at DESC, r.id DESC LIMIT 1",
                )
                .bind(referral.as_str()),
            )
            .await?;
        Ok((
            rows::parse_opt(
                "referrals",
                "supersedes",
                supersedes.and_then(|s| s.0).as_deref(),
            )?,
            rows::parse_opt("referrals", "id", superseded_by.map(|s| s.0).as_deref())?,
        ))
    }

    async fn sent_referrals(
        &self,
        sender: &PartnerId,
        limit: i64,
    ) -> Result<Vec<rec::SentRow>, StoreError> {
        let found: Vec<(String, String, UnixTime, String)> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "sent referrals",
                    "SELECT id, referral_type, received_at, sender_ref FROM referrals \
                     WHERE sender = $1 ORDER BY received_at DESC, id DESC LIMIT $2",
                )
                .bind(sender.as_str())
                .bind(limit),
            )
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for row in found {
            let (id, referral_type, received_at, sender_ref) = rows::sent_row(row)?;
            let states = crate::IntakeStore::delivery_states(self, &id, sender)
                .await?
                .unwrap_or_default();
            out.push(rec::SentRow {
                id,
                referral_type,
                received_at,
                sender_ref,
                states,
            });
        }
        Ok(out)
    }

    async fn referral_detail(
        &self,
        referral: &ReferralId,
    ) -> Result<Option<rec::ReferralDetail>, StoreError> {
        let sql = format!(
            "SELECT {} FROM referrals WHERE id = $1",
            rows::REFERRAL_COLUMNS
        );
        let row: Option<rows::ReferralRow> = self
            .pool
            .fetch_optional(Stmt::new("referral detail", sql).bind(referral.as_str()))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sql = format!(
            "SELECT {} FROM deliveries WHERE referral_id = $1 ORDER BY seq",
            rows::DELIVERY_COLUMNS
        );
        let deliveries: Vec<rows::DeliveryRowRaw> = self
            .pool
            .fetch_all(Stmt::new("referral detail", sql).bind(referral.as_str()))
            .await?;
        let sql = format!(
            "SELECT {} FROM audit_events WHERE referral_id = $1 ORDER BY idx",
            rows::EVENT_COLUMNS
        );
        let events: Vec<rows::EventRowRaw> = self
            .pool
            .fetch_all(Stmt::new("referral detail", sql).bind(referral.as_str()))
            .await?;
        Ok(Some(rec::ReferralDetail {
            referral: row.try_into()?,
            deliveries: deliveries
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            events: events
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn subject_matches(
        &self,
        subjects: &[SubjectHash],
        partner: &PartnerId,
    ) -> Result<Vec<rec::SubjectMatch>, StoreError> {
        let mut out: Vec<rec::SubjectMatch> = Vec::new();
        for subject in subjects {
            let found: Vec<(String, Option<String>)> = self
                .pool
                .fetch_all(
                    Stmt::new("subject access", SUBJECT_MATCHES.as_str())
                        .bind(subject.to_bytes().to_vec())
                        .bind(partner.as_str()),
                )
                .await?;
            for (referral, delivery) in found {
                let referral = rows::referral_id("subject_keys", &referral)?;
                out.push(match delivery {
                    None => rec::SubjectMatch::Sent(referral),
                    Some(d) => {
                        rec::SubjectMatch::Received(referral, rows::parse("deliveries", "id", &d)?)
                    }
                });
            }
        }
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out.dedup();
        Ok(out)
    }
}

/// The referral's sender.
fn owner_of(referral: &ReferralId) -> Stmt<'_> {
    Stmt::new(
        "referral owner",
        "SELECT sender FROM referrals WHERE id = $1",
    )
    .bind(referral.as_str())
}

/// A sender's replay marker for a `jti`.
fn replay_marker<'a>(sender: &'a PartnerId, jti: &'a Jti) -> Stmt<'a> {
    Stmt::new(
        "replay marker",
        "SELECT referral_id, digest FROM replay_markers WHERE sender = $1 AND jti = $2",
    )
    .bind(sender.as_str())
    .bind(jti.as_str())
}

/// A replay marker's row as the prior acceptance it records (a marker written before
/// markers kept them has none).
fn prior(
    row: Option<(Option<String>, Option<String>)>,
) -> Result<Option<rec::PriorAcceptance>, StoreError> {
    match row {
        Some((Some(id), Some(digest))) => Ok(Some(rec::PriorAcceptance {
            referral_id: rows::referral_id("replay_markers", &id)?,
            digest,
        })),
        _ => Ok(None),
    }
}

/// A withdrawal of a referral's open deliveries.
pub(crate) struct Withdrawal<'a> {
    /// The referral withdrawn.
    pub referral: &'a ReferralId,
    /// When.
    pub at: UnixTime,
    /// Who (none for the gateway's own).
    pub actor: Option<&'a ActorRef>,
    /// Why.
    pub reason: ev::WithdrawReason,
    /// The correction that replaces it, if that is why.
    pub by: Option<&'a ReferralId>,
    /// Only these recipients' deliveries (a correction replaces those it reaches).
    pub only: Option<&'a [PartnerId]>,
}

/// Withdraws every open delivery of a referral (held ones included): status `withdrawn`,
/// ciphertext deleted, a `withdrawn` event each; and deletes its hold once nothing of it is
/// held. Returns the events (the caller appends them).
pub(crate) async fn withdraw_open<D: Dialect>(
    tx: &mut Tx<D>,
    w: Withdrawal<'_>,
) -> Result<Vec<AuditRecord>, StoreError> {
    // The hold first (the lock order), then the deliveries, locked.
    tx.fetch_optional::<Scalar<String>>(
        Stmt::new(
            "withdraw hold",
            format!(
                "SELECT referral_id FROM holds WHERE referral_id = $1{}",
                D::FOR_UPDATE
            ),
        )
        .bind(w.referral.as_str()),
    )
    .await?;
    let open: Vec<(String, String, String, String)> = tx
        .fetch_all(
            Stmt::new("withdraw", format!("{}{}", *OPEN_DELIVERIES, D::FOR_UPDATE))
                .bind(w.referral.as_str()),
        )
        .await?;
    let mut due = Vec::with_capacity(open.len());
    for row in open {
        let d = Closing::read(row)?;
        if w.only.is_none_or(|only| only.contains(&d.recipient)) {
            due.push(d);
        }
    }
    let events = close_each(tx, &due, Step::Withdraw, w.at, w.actor, |to| {
        AuditEvent::Withdrawn(ev::Withdrawn {
            reason: w.reason,
            by: w.by.cloned(),
            to: to.clone(),
        })
    })
    .await?;
    tx.execute(
        Stmt::new(
            "withdraw hold",
            "DELETE FROM holds WHERE referral_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM deliveries WHERE referral_id = $1 AND status = $2)",
        )
        .bind(w.referral.as_str())
        .bind(rec::DeliveryStatus::HeldForReview.as_str()),
    )
    .await?;
    Ok(events)
}

/// Commits a batch of acceptances in one transaction (group commit). If the transaction
/// itself fails, every acceptance in it gets the error.
pub(crate) async fn accept_batch<D: Dialect>(
    pool: &Pool<D>,
    batch: Vec<rec::Acceptance>,
    turn: &Turn,
) -> Vec<Result<rec::AcceptOutcome, StoreError>> {
    match accept_batch_tx(pool, &batch, turn).await {
        Ok(results) => results,
        Err(e) => batch
            .iter()
            .map(|_| {
                Err(match &e {
                    StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                    StoreError::Full(m) => StoreError::Full(m.clone()),
                    StoreError::Stopped(m) => StoreError::Stopped(m.clone()),
                    StoreError::Contended(m) => StoreError::Contended(m.clone()),
                    other => StoreError::Query {
                        op: "group commit",
                        reason: other.to_string(),
                    },
                })
            })
            .collect(),
    }
}

/// The batch as whole-batch statements (one multi-row `INSERT` per table); if any statement
/// fails before the commit, the transaction is rolled back and the batch is written again
/// one savepoint per acceptance, so that only the acceptance at fault fails. A failed
/// commit is reported to every acceptance (it is ambiguous: the submitter finds out from the
/// replay marker).
async fn accept_batch_tx<D: Dialect>(
    pool: &Pool<D>,
    batch: &[rec::Acceptance],
    turn: &Turn,
) -> Result<Vec<Result<rec::AcceptOutcome, StoreError>>, StoreError> {
    let mut tx = pool.begin().await?;
    match write_batch(&mut tx, batch).await {
        Ok((results, notify)) => {
            if notify {
                notify_inbox(&mut tx).await?;
            }
            tx.commit_then(|| turn.end()).await?;
            Ok(results)
        }
        Err(_) => {
            drop(tx);
            accept_each(pool, batch, turn).await
        }
    }
}

/// The careful path: one savepoint per acceptance, each written as a batch of one, so a
/// failing acceptance is rolled back alone and the rest still commit.
async fn accept_each<D: Dialect>(
    pool: &Pool<D>,
    batch: &[rec::Acceptance],
    turn: &Turn,
) -> Result<Vec<Result<rec::AcceptOutcome, StoreError>>, StoreError> {
    let savepoint = |sql: &'static str| Stmt::new("savepoint", sql);
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut notify = false;
    for a in batch {
        tx.execute(savepoint("SAVEPOINT acceptance")).await?;
        match write_batch(&mut tx, std::slice::from_ref(a)).await {
            Ok((mut one, filled)) => {
                tx.execute(savepoint("RELEASE SAVEPOINT acceptance"))
                    .await?;
                notify |= filled;
                results.push(one.pop().unwrap_or(Err(StoreError::Query {
                    op: "group commit",
                    reason: "a batch of one returned no result".into(),
                })));
            }
            Err(e) => {
                tx.execute(savepoint("ROLLBACK TO SAVEPOINT acceptance"))
                    .await?;
                tx.execute(savepoint("RELEASE SAVEPOINT acceptance"))
                    .await?;
                results.push(Err(e));
            }
        }
    }
    if notify {
        notify_inbox(&mut tx).await?;
    }
    tx.commit_then(|| turn.end()).await?;
    Ok(results)
}

/// Each acceptance's result so far, and which of them are new (not replays).
struct Screened {
    results: Vec<Result<rec::AcceptOutcome, StoreError>>,
    live: Vec<usize>,
}

/// Writes the batch's replay markers (`ON CONFLICT DO NOTHING RETURNING` tells which are
/// new; duplicates within the batch are replays of the first) and answers every replay.
async fn screen_replays<D: Dialect>(
    tx: &mut Tx<D>,
    batch: &[rec::Acceptance],
) -> Result<Screened, StoreError> {
    let mut results: Vec<Result<rec::AcceptOutcome, StoreError>> = batch
        .iter()
        .map(|_| Ok(rec::AcceptOutcome::Accepted))
        .collect();
    // The first acceptance of each (sender, jti) in the batch is a candidate; later ones are
    // replays of it.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut candidates = Vec::new();
    let mut duplicates = Vec::new();
    for (i, a) in batch.iter().enumerate() {
        match first_of.entry((a.referral.sender.as_str(), a.jti.as_str())) {
            Entry::Vacant(v) => {
                v.insert(i);
                candidates.push(&batch[i]);
            }
            Entry::Occupied(o) => duplicates.push((i, *o.get())),
        }
    }
    let mut fresh = HashSet::new();
    for chunk in candidates.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "replay marker",
            "INSERT INTO replay_markers (sender, jti, seen_at, referral_id, digest) ",
            chunk,
            " ON CONFLICT (sender, jti) DO NOTHING RETURNING sender, jti",
            |a, args| {
                args.push(a.referral.sender.as_str().into());
                args.push(a.jti.as_str().into());
                args.push(a.referral.received_at.into());
                args.push(a.referral.id.as_str().into());
                args.push((&a.digest).into());
            },
        );
        let rows: Vec<(String, String)> = tx.fetch_all(stmt).await?;
        fresh.extend(rows);
    }
    let mut live = Vec::new();
    for (i, a) in batch.iter().enumerate() {
        if first_of.get(&(a.referral.sender.as_str(), a.jti.as_str())) != Some(&i) {
            continue;
        }
        if fresh.contains(&(a.referral.sender.to_string(), a.jti.to_string())) {
            live.push(i);
        } else {
            let row = tx
                .fetch_optional(replay_marker(&a.referral.sender, &a.jti))
                .await?;
            results[i] = Ok(rec::AcceptOutcome::Replay(prior(row)?));
        }
    }
    for (i, first) in duplicates {
        results[i] = match &results[first] {
            Ok(rec::AcceptOutcome::Accepted) => {
                Ok(rec::AcceptOutcome::Replay(Some(rec::PriorAcceptance {
                    referral_id: batch[first].referral.id.clone(),
                    digest: batch[first].digest.clone(),
                })))
            }
            other => other.clone(),
        };
    }
    Ok(Screened { results, live })
}

/// Writes a batch with whole-batch statements: replay markers, referrals, subject keys,
/// corrections' withdrawals, inbox positions (one statement moving each recipient's
/// counter, in recipient order so concurrent writers lock counters alike), deliveries,
/// holds, then the audit events. Returns each acceptance's result and whether an inbox was
/// filled.
async fn write_batch<D: Dialect>(
    tx: &mut Tx<D>,
    batch: &[rec::Acceptance],
) -> Result<(Vec<Result<rec::AcceptOutcome, StoreError>>, bool), StoreError> {
    let Screened { results, live } = screen_replays(tx, batch).await?;
    if live.is_empty() {
        return Ok((results, false));
    }
    let accepted: Vec<&rec::Acceptance> = live.iter().map(|&i| &batch[i]).collect();
    for chunk in accepted.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "insert referral",
            "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, \
             lawful_basis, consent_status, consent_override, subject_informed, supersedes, \
             justification_sealed) ",
            chunk,
            "",
            |a, args| {
                let r = &a.referral;
                args.extend([
                    r.id.as_str().into(),
                    r.sender.as_str().into(),
                    (&r.sender_ref).into(),
                    r.referral_type.as_str().into(),
                    r.received_at.into(),
                    rows::to_json(&r.lawful_basis).into(),
                    r.consent.status.as_str().into(),
                    r.consent.override_.map(|o| o.as_str()).into(),
                    rows::to_json(&r.subject_informed).into(),
                    r.supersedes.as_ref().map(ReferralId::as_str).into(),
                    (&r.justification_sealed).into(),
                ]);
            },
        );
        tx.execute(stmt).await?;
    }
    let mut keys: Vec<(&ReferralId, &PartnerId, Option<&DeliveryId>, &SubjectHash)> = Vec::new();
    for a in &accepted {
        keys.extend(
            a.subjects
                .iter()
                .map(|s| (&a.referral.id, &a.referral.sender, None, s)),
        );
        for d in &a.deliveries {
            keys.extend(
                d.subjects
                    .iter()
                    .map(|s| (&a.referral.id, &d.recipient, Some(&d.id), s)),
            );
        }
    }
    insert_subject_keys(tx, &keys).await?;
    // Corrections replace their originals first: holds and deliveries are locked before
    // inbox counters, the order every writer takes them in.
    let mut events = Vec::new();
    for a in &accepted {
        if let Some(s) = &a.withdraws {
            let withdrawal = Withdrawal {
                referral: &s.original,
                at: a.referral.received_at,
                actor: a.events.first().and_then(|e| e.actor.as_ref()),
                reason: ev::WithdrawReason::Superseded,
                by: Some(&a.referral.id),
                only: Some(&s.recipients),
            };
            events.extend(withdraw_open(tx, withdrawal).await?);
        }
    }
    let deliveries: Vec<(&rec::Acceptance, &rec::DeliveryRecord)> = accepted
        .iter()
        .flat_map(|&a| a.deliveries.iter().map(move |d| (a, d)))
        .collect();
    let positions = inbox_positions(tx, deliveries.iter().map(|(_, d)| *d)).await?;
    let to_insert: Vec<_> = deliveries.into_iter().zip(positions).collect();
    for chunk in to_insert.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "insert delivery",
            "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, \
             sealed_packed, bytes, created_at, updated_at, inbox_pos, queued_at) ",
            chunk,
            "",
            |((a, d), position), args| {
                let r = &a.referral;
                args.extend([
                    d.id.as_str().into(),
                    r.id.as_str().into(),
                    d.recipient.as_str().into(),
                    d.agreement.as_str().into(),
                    d.status.as_str().into(),
                    d.sealed.as_ref().map(Sealed::to_packed).into(),
                    d.sealed.as_ref().map(|s| s.len() as i64).into(),
                    r.received_at.into(),
                    r.received_at.into(),
                    (*position).into(),
                    position.map(|_| r.received_at).into(),
                ]);
            },
        );
        tx.execute(stmt).await?;
    }
    let holds: Vec<(&rec::ReferralRecord, &rec::HoldRecord)> = accepted
        .iter()
        .filter_map(|a| a.hold.as_ref().map(|h| (&a.referral, h)))
        .collect();
    for chunk in holds.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "insert hold",
            "INSERT INTO holds (referral_id, sealed, storage_key_id, held_at) ",
            chunk,
            "",
            |(r, h), args| {
                args.extend([
                    Arg::from(r.id.as_str()),
                    (&h.sealed).into(),
                    (&h.storage_key_id).into(),
                    r.received_at.into(),
                ]);
            },
        );
        tx.execute(stmt).await?;
    }
    let mut notify = false;
    for a in &accepted {
        events.extend(a.events.iter().cloned());
        notify |= a.deliveries.iter().any(|d| d.status.in_inbox());
    }
    crate::audit::insert_events(tx, &events).await?;
    Ok((results, notify))
}

/// Each delivery's inbox position (`None` for one not entering an inbox): each recipient's
/// counter moves once by its count, counters in recipient order, positions handed out in
/// the deliveries' order.
async fn inbox_positions<'d, D: Dialect>(
    tx: &mut Tx<D>,
    deliveries: impl Iterator<Item = &'d rec::DeliveryRecord> + Clone,
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut per_recipient: BTreeMap<&str, i64> = BTreeMap::new();
    for d in deliveries.clone() {
        if d.status.in_inbox() {
            *per_recipient.entry(d.recipient.as_str()).or_default() += 1;
        }
    }
    let counts: Vec<(&str, i64)> = per_recipient.into_iter().collect();
    let mut next: HashMap<String, i64> = HashMap::new();
    for chunk in counts.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "inbox position",
            "INSERT INTO inbox_counters (recipient, next) ",
            chunk,
            " ON CONFLICT (recipient) DO UPDATE SET next = inbox_counters.next + excluded.next \
             RETURNING recipient, next",
            |(recipient, count), args| {
                args.push((*recipient).into());
                args.push((*count).into());
            },
        );
        let moved: Vec<(String, i64)> = tx.fetch_all(stmt).await?;
        for (recipient, last) in moved {
            let count = chunk
                .binary_search_by(|(r, _)| (*r).cmp(recipient.as_str()))
                .map(|i| chunk[i].1)
                .map_err(|_| StoreError::Query {
                    op: "inbox position",
                    reason: "a counter moved for no queued delivery".into(),
                })?;
            next.insert(recipient, last - count + 1);
        }
    }
    deliveries
        .map(|d| {
            if !d.status.in_inbox() {
                return Ok(None);
            }
            let p = next
                .get_mut(d.recipient.as_str())
                .ok_or(StoreError::Query {
                    op: "inbox position",
                    reason: "no counter for a queued delivery".into(),
                })?;
            *p += 1;
            Ok(Some(*p - 1))
        })
        .collect()
}
