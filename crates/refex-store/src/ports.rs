//! The store's ports, one per aggregate: what the gateway may ask of durable state. Each is
//! narrow enough to fake; [`crate::Store`] is all of them over one backend. Ids are typed;
//! every status change a method makes is one [`refex_core::lifecycle::next`] allows, with
//! its audit event in the same transaction.

use refex_core::audit::event::ActorRef;
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::PartnerId;
use refex_core::ids::{DeliveryId, ReferralId};
use refex_core::timestamp::UnixTime;

use crate::StoreError;

/// Referrals as their senders see them: acceptance (group-committed), replay lookups,
/// status, withdrawal and corrections' links.
#[async_trait::async_trait]
pub trait IntakeStore: Send + Sync {
    /// Commits an accepted referral: replay marker (with the referral id and digest),
    /// referral, deliveries, hold, subject keys and audit events in one transaction; and, when
    /// the acceptance says so, the open deliveries of the referral it corrects are withdrawn
    /// in the same transaction. [`crate::records::AcceptOutcome::Replay`] if the sender used the
    /// `jti` before (nothing is written). Concurrent acceptances share a transaction
    /// ([`group_commit`]); each returns only once its transaction is durable, and each
    /// succeeds or fails on its own.
    async fn accept(
        &self,
        acceptance: crate::records::Acceptance,
    ) -> Result<crate::records::AcceptOutcome, StoreError>;

    /// The referral that `sender`'s `jti` admitted, if any: how a submission whose commit
    /// outcome was lost learns whether it committed, and how a retry finds its original.
    async fn prior_acceptance(
        &self,
        sender: &PartnerId,
        jti: &refex_core::ids::Jti,
    ) -> Result<Option<crate::records::PriorAcceptance>, StoreError>;

    /// The recipients and statuses of a referral's deliveries, if `sender` sent it; `None`
    /// for an unknown referral or someone else's (the caller answers both with 404).
    async fn delivery_states(
        &self,
        referral: &ReferralId,
        sender: &PartnerId,
    ) -> Result<Option<Vec<crate::records::DeliveryState>>, StoreError>;

    /// Withdraws every open delivery of `sender`'s referral (held ones included):
    /// ciphertext and hold deleted, a `withdrawn` event each. `None` if the referral is not
    /// `sender`'s.
    async fn withdraw(
        &self,
        referral: &ReferralId,
        sender: &PartnerId,
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<Option<Vec<crate::records::DeliveryState>>, StoreError>;

    /// The referral a referral corrects, and the latest referral that corrects it.
    async fn referral_links(
        &self,
        referral: &ReferralId,
    ) -> Result<(Option<ReferralId>, Option<ReferralId>), StoreError>;

    /// `sender`'s most recent referrals (id, type, received) with their delivery states.
    async fn sent_referrals(
        &self,
        sender: &PartnerId,
        limit: i64,
    ) -> Result<Vec<crate::records::SentRow>, StoreError>;

    /// Everything recorded about a referral (record, deliveries, audit events), if it exists.
    async fn referral_detail(
        &self,
        referral: &ReferralId,
    ) -> Result<Option<crate::records::ReferralDetail>, StoreError>;

    /// The referrals concerning any of the keyed `subjects` that `partner` may be shown:
    /// those it sent (indexed from the full payload), and its deliveries that reached its
    /// inbox (indexed from the copy it received; never held, rejected, or withdrawn or
    /// expired before their first fetch).
    async fn subject_matches(
        &self,
        subjects: &[refex_core::ids::SubjectHash],
        partner: &PartnerId,
    ) -> Result<Vec<crate::records::SubjectMatch>, StoreError>;
}

/// Recipients' inboxes: pages, fetches, acknowledgements and their backlog.
#[async_trait::async_trait]
pub trait InboxStore: Send + Sync {
    /// A page of `recipient`'s inbox (queued or fetched, not acknowledged): deliveries with
    /// position after `after`, in position order, at most `limit`.
    async fn inbox_page(
        &self,
        recipient: &PartnerId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::records::InboxItem>, StoreError>;

    /// A delivery of `recipient` as it stands, without touching it: its status, and its
    /// sealed copy while it has one (for a hosted recipient's console, which opens the copy
    /// before marking it fetched, and checks the status before an acknowledgement).
    async fn peek_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
    ) -> Result<Option<(crate::records::DeliveryStatus, Option<Sealed>)>, StoreError>;

    /// The sealed delivery `id` if it is in `recipient`'s inbox; the first fetch marks it
    /// `delivered` with a `fetched` audit event, in one transaction.
    async fn fetch_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<Option<Sealed>, StoreError>;

    /// Acknowledges a delivery: its ciphertext is deleted and it leaves the inbox, with an
    /// `acknowledged` audit event. Idempotent.
    async fn ack_delivery(
        &self,
        recipient: &PartnerId,
        id: &DeliveryId,
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<crate::records::AckOutcome, StoreError>;

    /// Acknowledges several deliveries of `recipient`'s at once, each as
    /// [`ack_delivery`](Self::ack_delivery) would, sharing commits: one outcome per id, in
    /// order. On an error some may be acknowledged already; acknowledging again is safe.
    async fn ack_deliveries(
        &self,
        recipient: &PartnerId,
        ids: &[DeliveryId],
        at: UnixTime,
        actor: &ActorRef,
    ) -> Result<Vec<crate::records::AckOutcome>, StoreError>;

    /// The deliveries that reached `recipient`'s inbox, most recent first (at most `limit`),
    /// whatever their status now (new, read, acknowledged, withdrawn, expired): metadata
    /// only, for a hosted organisation's console.
    async fn received(
        &self,
        recipient: &PartnerId,
        limit: i64,
    ) -> Result<Vec<crate::records::ReceivedRow>, StoreError>;

    /// Each recipient's inbox backlog: deliveries waiting (queued or fetched, not
    /// acknowledged) and when the oldest of them entered the inbox.
    async fn inbox_backlog(&self) -> Result<Vec<(PartnerId, i64, Option<UnixTime>)>, StoreError>;

    /// Calls `on_change` whenever another process (a replica) commits deliveries to an inbox,
    /// until the store closes. PostgreSQL `LISTEN`s (reconnecting by itself); the embedded
    /// store has no other processes and does nothing.
    fn watch_inbox_changes(&self, on_change: std::sync::Arc<dyn Fn() + Send + Sync>);
}

/// Held disclosures and the lead's decision on them.
#[async_trait::async_trait]
pub trait ReviewStore: Send + Sync {
    /// `sender`'s held referrals, oldest first.
    async fn held_referrals(
        &self,
        sender: &PartnerId,
    ) -> Result<Vec<crate::records::HeldRow>, StoreError>;

    /// The sealed hold of a referral, while undecided.
    async fn hold_sealed(&self, referral: &ReferralId) -> Result<Option<Sealed>, StoreError>;

    /// Commits a lead's decision in one transaction: the hold is deleted, each held delivery
    /// released (queued with its ciphertext, inbox position and the recipient's subject keys)
    /// or rejected (with its sealed reason), the decision's events appended, and a released
    /// correction's original withdrawn. [`crate::records::DecideOutcome::AlreadyDecided`] if the
    /// hold was gone.
    async fn decide_hold(
        &self,
        decision: &crate::records::ReviewCommit,
    ) -> Result<crate::records::DecideOutcome, StoreError>;

    /// Every set of review preview digests shown to `actor` for a referral, newest first
    /// (from the `consulted` events the review pages write).
    async fn previews_shown(
        &self,
        referral: &ReferralId,
        actor: &ActorRef,
    ) -> Result<Vec<Vec<refex_core::audit::event::PreviewShown>>, StoreError>;

    /// Marks holds undecided since before `cutoff` as escalated (an `escalated` event each);
    /// they stay held. Returns how many.
    async fn escalate_holds(&self, cutoff: UnixTime, at: UnixTime) -> Result<u64, StoreError>;

    /// Closes holds undecided since before `cutoff`: each held delivery becomes
    /// `expired-undecided` (never released) with a `closed-undecided` event, and the hold
    /// (the claims under the storage key) is deleted. Returns how many holds.
    async fn close_undecided_holds(
        &self,
        cutoff: UnixTime,
        at: UnixTime,
    ) -> Result<u64, StoreError>;

    /// How many holds are escalated and still undecided.
    async fn count_escalated(&self) -> Result<i64, StoreError>;
}

/// The tamper-evident audit trail: events appended as Merkle leaves, nodes, checkpoints,
/// and the facts reports are built from.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one audit event on its own (a rejection, a consultation, a report).
    async fn record_event(&self, event: &crate::records::AuditRecord) -> Result<(), StoreError>;

    /// How many leaves the audit tree has.
    async fn audit_size(&self) -> Result<u64, StoreError>;

    /// The stored hashes of the given perfect subtrees (`(level, index)`; level 0 = leaves).
    async fn audit_nodes(
        &self,
        keys: &[(u32, u64)],
    ) -> Result<std::collections::HashMap<(u32, u64), refex_core::audit::tree::Hash>, StoreError>;

    /// Every signed checkpoint, smallest first.
    async fn audit_checkpoints(&self) -> Result<Vec<crate::records::CheckpointRecord>, StoreError>;

    /// Stores a signed checkpoint (a second one for the same size is ignored).
    async fn save_checkpoint(
        &self,
        checkpoint: &crate::records::CheckpointRecord,
    ) -> Result<(), StoreError>;

    /// Audit leaves from index `from`, at most `limit`, in order.
    async fn audit_leaves(
        &self,
        from: u64,
        limit: u64,
    ) -> Result<Vec<crate::records::LeafRecord>, StoreError>;

    /// Every delivery of referrals received in `[from, to)`, as report dimensions.
    async fn report_facts(
        &self,
        from: UnixTime,
        to: UnixTime,
    ) -> Result<Vec<crate::records::FactRow>, StoreError>;
}

/// Retention and the gateway's own bookkeeping: expiry, purge, replicas, once-only
/// notices, space.
#[async_trait::async_trait]
pub trait HousekeepingStore: Send + Sync {
    /// Expires `recipient`'s deliveries still unacknowledged that entered its inbox before
    /// `cutoff`: status `expired`, ciphertext deleted, an `expired` event each. Returns how
    /// many.
    async fn expire_deliveries(
        &self,
        recipient: &PartnerId,
        cutoff: UnixTime,
        at: UnixTime,
    ) -> Result<u64, StoreError>;

    /// Expires every delivery that entered an inbox before `cutoff` and is still there, of a
    /// recipient that is not in `known` (a partner removed from the configuration can no
    /// longer fetch): ciphertext deleted, an `expired` event each. Returns how many.
    async fn expire_unknown_recipients(
        &self,
        known: &[PartnerId],
        cutoff: UnixTime,
        at: UnixTime,
    ) -> Result<u64, StoreError>;

    /// Deletes referral, delivery and hold records with no activity since `cutoff` (and not
    /// linked from a later correction), with a `purged` event each. Returns how many.
    async fn purge_records(&self, cutoff: UnixTime, at: UnixTime) -> Result<u64, StoreError>;

    /// Deletes replay markers seen more than `max_age` ago by the database's clock (a `jti`
    /// that old is refused by the `iat` check anyway). Returns how many.
    async fn purge_replay_markers(&self, max_age: std::time::Duration) -> Result<u64, StoreError>;

    /// Records that replica `id` is alive at `at`, forgets replicas not seen since
    /// `forget_before`, and returns how many were seen since `live_after` (itself included).
    async fn heartbeat(
        &self,
        id: &refex_core::ids::ReplicaId,
        at: UnixTime,
        live_after: UnixTime,
        forget_before: UnixTime,
    ) -> Result<u32, StoreError>;

    /// Forgets replica `id` (it is stopping gracefully), so the others stop counting it at
    /// once rather than after the live window.
    async fn forget_replica(&self, id: &refex_core::ids::ReplicaId) -> Result<(), StoreError>;

    /// Returns space freed by expiry and purge to the file system, a bounded amount per call
    /// (SQLite's incremental vacuum; PostgreSQL's autovacuum needs nothing).
    async fn reclaim_space(&self) -> Result<(), StoreError>;

    /// Claims the once-only `notice` at `at`: `true` for the first claim (send it),
    /// `false` if any process claimed it before. Claims older than `forget_before` are
    /// dropped on the way.
    async fn claim_notice(
        &self,
        notice: &crate::records::OnceNotice,
        at: UnixTime,
        forget_before: UnixTime,
    ) -> Result<bool, StoreError>;

    /// How many rows a table holds (operations and tests: proving nothing half-written).
    async fn count_rows(&self, table: crate::Table) -> Result<i64, StoreError>;
}
