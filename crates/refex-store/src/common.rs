//! The store over any [`Dialect`]: its pools and committers, and what several aggregates
//! share. Both backends accept `$N` placeholders, so every statement is written once. Every
//! list of delivery statuses in a statement is generated from `lifecycle::DeliveryStatus`
//! (the statics below); every status change asks `lifecycle::next` first ([`moved`]); rows
//! become typed records in `rows`.

use std::sync::{Arc, LazyLock};

use refex_core::audit::event::{ActorRef, AuditEvent};
use refex_core::identity::PartnerId;
use refex_core::ids::{DeliveryId, ReferralId, SubjectHash};
use refex_core::lifecycle::{self, DeliveryStatus, Outcome, Step, sql_list};
use refex_core::timestamp::UnixTime;

use crate::group_commit::{self, Acceptances, GroupCommit, Meter};
use crate::records::{AuditRecord, InboxWrite, InboxWritten};
use crate::sql::{Arg, Dialect, Pool, Scalar, Stmt, Tx};
use crate::{Backend, StoreError};

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
        "SELECT id, referral_id, recipient, status FROM deliveries WHERE recipient = $1 \
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
        "SELECT id, referral_id, recipient, status FROM deliveries WHERE referral_id = $1 \
         AND status IN ({}) ORDER BY seq",
        *OPEN
    )
});

/// The referrals a partner may find by subject: those it sent, and its deliveries that
/// reached it: in its inbox now, or fetched (whatever became of them since). One
/// acknowledged, withdrawn or expired without ever being fetched was never received.
/// Recipient keys are only ever written when a delivery enters the inbox, and name no
/// delivery: a referral has one per recipient, found by the pair.
pub(crate) static SUBJECT_MATCHES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.referral_id, d.id FROM subject_keys s \
         LEFT JOIN deliveries d ON s.received = 1 AND d.referral_id = s.referral_id \
         AND d.recipient = s.partner \
         WHERE s.subject = $1 AND s.partner = $2 AND (s.received = 0 OR \
         (d.recipient = $2 AND (d.status IN ({}) OR d.fetched_at IS NOT NULL)))",
        sql_list(&DeliveryStatus::IN_INBOX)
    )
});

/// The store over backend `D`: its readers, its writer, and its two committers.
pub struct SqlStore<D: Dialect> {
    /// Readers (on SQLite, WAL lets them run beside the writer).
    pub(crate) pool: Pool<D>,
    /// The writer (SQLite: its one connection, writers queued first come first served;
    /// PostgreSQL: the same pool).
    pub(crate) writer: Pool<D>,
    /// Acceptances, committed together.
    pub(crate) group: Acceptances,
    /// Inbox fetches and acknowledgements, committed together the same way.
    pub(crate) inbox: GroupCommit<InboxWrite, InboxWritten>,
}

impl<D: Dialect> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &D::BACKEND)
            .finish()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// The store on opened pools, with its committer tasks on `writer`: acceptances, and
    /// inbox fetches and acknowledgements.
    pub(crate) fn new(pool: Pool<D>, writer: Pool<D>, batching: group_commit::Options) -> Self {
        let committer = writer.clone();
        let group = GroupCommit::spawn_placed(
            batching,
            Meter::Acceptances,
            D::BATCHES,
            move |batch, turn| {
                let pool = committer.clone();
                async move { crate::intake::accept_batch(&pool, batch, &turn).await }
            },
        );
        let committer = writer.clone();
        // Inbox writes never wait for company: a receiving system's next request waits on
        // this one's answer, so a window only added to every delivery's latency (refex
        // bench, 8 connections: ~1,100 -> ~1,400 deliveries/s without it); under load the
        // writes queued during a commit still share the next.
        let inbox_batching = group_commit::Options {
            window: std::time::Duration::ZERO,
            ..batching
        };
        let inbox = GroupCommit::spawn_placed(
            inbox_batching,
            Meter::Inbox,
            D::BATCHES,
            move |batch, turn| {
                let pool = committer.clone();
                async move { crate::inbox::inbox_batch(&pool, batch, &turn).await }
            },
        );
        Self {
            pool,
            writer,
            group,
            inbox,
        }
    }
}

#[async_trait::async_trait]
impl<D: Dialect> crate::Store for SqlStore<D> {
    fn backend(&self) -> Backend {
        D::BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.writer.check_durable()?;
        let found: Option<Scalar<String>> = self
            .pool
            .fetch_optional(Stmt::new(
                "ping",
                "SELECT value FROM refex_meta WHERE key = 'store_format'",
            ))
            .await?;
        crate::check_format(found.map(|s| s.0))
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// The status a step leads to, or the lifecycle's refusal to take it.
pub(crate) fn moved(
    from: DeliveryStatus,
    step: Step,
) -> Result<Option<DeliveryStatus>, lifecycle::Refusal> {
    lifecycle::next(from, step).map(|o| match o {
        Outcome::Moves(to) => Some(to),
        Outcome::Unchanged => None,
    })
}

/// A delivery a closing step (withdrawal, expiry, closing an undecided hold) may reach.
pub(crate) struct Closing {
    /// The delivery.
    pub id: DeliveryId,
    /// Its referral.
    pub referral: ReferralId,
    /// Its recipient.
    pub recipient: PartnerId,
    /// Its status as read, locked.
    pub status: DeliveryStatus,
}

impl Closing {
    /// A `(id, referral, recipient, status)` row read as typed values.
    pub(crate) fn read(
        (id, referral, recipient, status): (String, String, String, String),
    ) -> Result<Self, StoreError> {
        Ok(Self {
            id: crate::rows::delivery_id(&id)?,
            referral: crate::rows::referral_id("deliveries", &referral)?,
            recipient: crate::rows::parse("deliveries", "recipient", &recipient)?,
            status: crate::rows::status(&status)?,
        })
    }
}

/// Takes `step` on each delivery the lifecycle lets it reach: its new status, its
/// ciphertext deleted, and an event each (`event` given the recipient). Deliveries the step
/// does not move are left as they are. Returns the events (the caller appends them).
/// Withdrawal, expiry and closing an undecided hold all end deliveries this one way.
pub(crate) async fn close_each<D: Dialect>(
    tx: &mut Tx<D>,
    due: &[Closing],
    step: Step,
    at: UnixTime,
    actor: Option<&ActorRef>,
    event: impl Fn(&PartnerId) -> AuditEvent,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut events = Vec::with_capacity(due.len());
    for d in due {
        let Ok(Some(to)) = moved(d.status, step) else {
            continue;
        };
        tx.execute(
            Stmt::new(
                "close delivery",
                "UPDATE deliveries SET status = $1, sealed = NULL, sealed_packed = NULL, \
                 updated_at = $2 WHERE id = $3",
            )
            .bind(to.as_str())
            .bind(at)
            .bind(d.id.as_str()),
        )
        .await?;
        events.push(
            AuditRecord::new(at, actor.cloned(), event(&d.recipient))
                .about(&d.referral)
                .delivery(&d.id),
        );
    }
    Ok(events)
}

/// Takes a housekeeping job's lock until the transaction ends (PostgreSQL: a
/// transaction-scoped advisory lock, waited for), so that of several replicas one does the
/// job at a time: the next finds the work already done. The embedded store has one process
/// and needs none.
pub(crate) async fn job_lock<D: Dialect>(tx: &mut Tx<D>, job: &str) -> Result<bool, StoreError> {
    if D::JOB_LOCK.is_empty() {
        return Ok(true);
    }
    let Scalar(held) = tx
        .fetch_one(Stmt::new("job lock", D::JOB_LOCK).bind(job))
        .await?;
    Ok(held)
}

/// Tells other replicas, at commit, that an inbox changed (PostgreSQL `NOTIFY`; the embedded
/// store has no other replicas and no statement).
pub(crate) async fn notify_inbox<D: Dialect>(tx: &mut Tx<D>) -> Result<(), StoreError> {
    if D::NOTIFY.is_empty() {
        return Ok(());
    }
    tx.fetch_all::<Scalar<Option<String>>>(Stmt::new("notify", D::NOTIFY))
        .await
        .map(|_| ())
}

/// Writes subject keys for a partner (a recipient's, with its delivery, or the sender's with
/// none). A key is stored once per holder: the same person twice in one payload is one key.
pub(crate) async fn insert_subject_keys<D: Dialect>(
    tx: &mut Tx<D>,
    rows: &[(&ReferralId, &PartnerId, Option<&DeliveryId>, &SubjectHash)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let stmt = Stmt::values(
            "subject keys",
            "INSERT INTO subject_keys (referral_id, partner, received, subject) ",
            chunk,
            " ON CONFLICT DO NOTHING",
            |(referral, partner, delivery, subject), a| {
                a.push(referral.as_str().into());
                a.push(partner.as_str().into());
                a.push(Arg::Int32(i32::from(delivery.is_some())));
                a.push(subject.to_bytes().to_vec().into());
            },
        );
        tx.execute(stmt).await?;
    }
    Ok(())
}

/// Registers `on_change` with the backend's inbox notifications.
pub(crate) fn watch<D: Dialect>(store: &SqlStore<D>, on_change: Arc<dyn Fn() + Send + Sync>) {
    D::watch_inbox(store.pool.inner(), on_change);
}
