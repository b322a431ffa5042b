//! What the store keeps, as typed records: the boundary between the domain and SQL. Ids are
//! newtypes, statuses and events enums; a stored row that does not parse into these is a
//! [`StoreError::Corrupt`](super::StoreError::Corrupt), never a default or a dropped row.
//! No field here ever holds payload plaintext: deliveries hold ciphertext for their
//! recipient, holds ciphertext under the storage key, each a
//! [`Sealed`](refex_core::envelope::sealed::Sealed) (only the envelope makes one).

use refex_core::audit::event::{ActorRef, ConsentRecord};
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::{AgreementId, PartnerId, ReferralType};
use refex_core::ids::{DeliveryId, ReferralId, SubjectHash};
use refex_core::intake::claims::{LawfulBasis, Override, SubjectInformed};
use refex_core::timestamp::UnixTime;

pub use refex_core::audit::event::AuditRecord;
pub use refex_core::lifecycle::DeliveryStatus;

/// The referral record: who, what type, on what basis; never the payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferralRecord {
    /// `ref_…`.
    pub id: ReferralId,
    /// Sending partner.
    pub sender: PartnerId,
    /// The sender's own reference.
    pub sender_ref: String,
    /// Referral type.
    pub referral_type: ReferralType,
    /// Unix seconds.
    pub received_at: UnixTime,
    /// The lawful basis relied on.
    pub lawful_basis: LawfulBasis,
    /// Consent status and override.
    pub consent: ConsentRecord,
    /// Whether the person was told.
    pub subject_informed: SubjectInformed,
    /// The referral this one corrects.
    pub supersedes: Option<ReferralId>,
    /// The override justification, sealed under the storage key.
    pub justification_sealed: Option<Sealed>,
}

/// A notice sent once across every replica and restart, claimed in the store before it
/// is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnceNotice {
    /// A partner's daily digest of held referrals, for one UTC day (days since the epoch).
    DailyDigest {
        /// The partner whose leads it goes to.
        partner: PartnerId,
        /// The day.
        day: i64,
    },
}

impl OnceNotice {
    /// The claim's key as stored (`digest:<partner>:<day>`).
    pub fn key(&self) -> String {
        match self {
            OnceNotice::DailyDigest { partner, day } => format!("digest:{partner}:{day}"),
        }
    }
}

/// One recipient's delivery, as an acceptance writes it.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    /// `dlv_…`.
    pub id: DeliveryId,
    /// The recipient.
    pub recipient: PartnerId,
    /// The agreement that allows it.
    pub agreement: AgreementId,
    /// Held or queued.
    pub status: DeliveryStatus,
    /// The JWE for the recipient (absent while held).
    pub sealed: Option<Sealed>,
    /// Keyed hashes of the people in the copy the recipient gets (written with it when it
    /// enters the inbox; empty while held).
    pub subjects: Vec<SubjectHash>,
}

/// A held referral, encrypted at rest.
#[derive(Clone, Debug)]
pub struct HoldRecord {
    /// The signed claims, sealed under the storage key.
    pub sealed: Sealed,
    /// Which storage key.
    pub storage_key_id: String,
}

/// Everything an accepted referral writes, committed together or not at all.
#[derive(Clone, Debug)]
pub struct Acceptance {
    /// The referral.
    pub referral: ReferralRecord,
    /// Its `jti` (the replay marker).
    pub jti: refex_core::ids::Jti,
    /// SHA-256 (hex) of the signed claims: a retry of the same referral has the same.
    pub digest: String,
    /// Its deliveries.
    pub deliveries: Vec<DeliveryRecord>,
    /// The encrypted hold, when any delivery is held.
    pub hold: Option<HoldRecord>,
    /// Its audit events.
    pub events: Vec<AuditRecord>,
    /// Keyed hashes of the people it concerns, for the sender's subject access (full
    /// payload).
    pub subjects: Vec<SubjectHash>,
    /// The earlier referral this correction replaces now, for the recipients whose copy of
    /// the correction enters an inbox now (a held copy replaces the original at its
    /// release; a rejected one never does).
    pub withdraws: Option<Supersession>,
}

/// A correction replacing its original for some recipients: the original's open deliveries
/// to exactly those recipients are withdrawn (`superseded`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Supersession {
    /// The referral corrected.
    pub original: ReferralId,
    /// The recipients whose copy of the correction enters an inbox now.
    pub recipients: Vec<PartnerId>,
}

/// What the store says about a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Committed.
    Accepted,
    /// The sender used this `jti` before: nothing was written.
    Replay(Option<PriorAcceptance>),
}

/// The referral a replay marker admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorAcceptance {
    /// The referral.
    pub referral_id: ReferralId,
    /// The digest of its signed claims.
    pub digest: String,
}

/// A delivery's recipient and status, for the sender's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    /// The recipient.
    pub recipient: PartnerId,
    /// Its status.
    pub status: DeliveryStatus,
    /// The lead's reason when the delivery was rejected (sealed under the storage key).
    pub reason_sealed: Option<Sealed>,
}

/// One line of an inbox listing: metadata only, no personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxItem {
    /// `dlv_…`.
    pub id: DeliveryId,
    /// The sending partner.
    pub from: PartnerId,
    /// The referral type.
    pub referral_type: ReferralType,
    /// When the gateway accepted it (Unix seconds).
    pub received_at: UnixTime,
    /// Size of the sealed delivery.
    pub bytes: i64,
    /// Position in the recipient's inbox (the cursor).
    pub position: i64,
    /// `queued` (not yet fetched) or `delivered` (fetched at least once).
    pub status: DeliveryStatus,
}

/// The outcome of an acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged now.
    Acknowledged,
    /// Already acknowledged earlier (idempotent).
    AlreadyAcknowledged,
    /// Not one of the recipient's deliveries in its inbox.
    NotFound,
}

/// A write to a recipient's inbox, committed with others waiting (group commit).
#[derive(Clone, Debug)]
pub enum InboxWrite {
    /// The first fetch marks a delivery `delivered` (later ones only read it).
    Fetch {
        /// Whose inbox.
        recipient: PartnerId,
        /// The delivery.
        id: DeliveryId,
        /// When.
        at: UnixTime,
        /// Who fetched it.
        actor: ActorRef,
    },
    /// An acknowledgement deletes the ciphertext.
    Ack {
        /// Whose inbox.
        recipient: PartnerId,
        /// The delivery.
        id: DeliveryId,
        /// When.
        at: UnixTime,
        /// Who acknowledged it.
        actor: ActorRef,
    },
}

impl InboxWrite {
    /// The delivery written.
    pub fn id(&self) -> &DeliveryId {
        let (InboxWrite::Fetch { id, .. } | InboxWrite::Ack { id, .. }) = self;
        id
    }
}

/// What an [`InboxWrite`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxWritten {
    /// The sealed delivery, or `None` if it is not in the recipient's inbox.
    Fetched(Option<Sealed>),
    /// The acknowledgement's outcome.
    Acked(AckOutcome),
}

/// A signed audit checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Tree size.
    pub size: u64,
    /// Root hash, hex.
    pub root: String,
    /// When it was signed (Unix seconds).
    pub at: UnixTime,
    /// The compact JWS.
    pub signed: String,
}

/// One audit leaf for export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRecord {
    /// Leaf index.
    pub idx: u64,
    /// The canonical leaf text (None once purged).
    pub leaf: Option<String>,
    /// The leaf hash.
    pub hash: refex_core::audit::tree::Hash,
}

/// Everything recorded about one referral, for disclosure records and reviews (no payload:
/// there is none).
#[derive(Clone, Debug)]
pub struct ReferralDetail {
    /// The referral record.
    pub referral: ReferralRecord,
    /// Its deliveries.
    pub deliveries: Vec<DeliveryRow>,
    /// Its audit events, in order.
    pub events: Vec<AuditRecord>,
}

impl ReferralDetail {
    /// Who submitted it (the `accepted` event's actor).
    pub fn submitted_by(&self) -> Option<&ActorRef> {
        self.events
            .iter()
            .find(|e| matches!(e.event, refex_core::audit::event::AuditEvent::Accepted(_)))
            .and_then(|e| e.actor.as_ref())
    }
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    /// `dlv_…`.
    pub id: DeliveryId,
    /// Recipient.
    pub recipient: PartnerId,
    /// Agreement id.
    pub agreement: AgreementId,
    /// Status.
    pub status: DeliveryStatus,
    /// Created (Unix seconds).
    pub created_at: UnixTime,
    /// Last changed (Unix seconds).
    pub updated_at: UnixTime,
    /// When it entered the recipient's inbox.
    pub queued_at: Option<UnixTime>,
    /// First fetched.
    pub fetched_at: Option<UnixTime>,
}

/// A held referral in a safeguarding lead's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRow {
    /// `ref_…`.
    pub referral_id: ReferralId,
    /// Referral type.
    pub referral_type: ReferralType,
    /// The sender's reference.
    pub sender_ref: String,
    /// When it was received (Unix seconds).
    pub received_at: UnixTime,
    /// The consent override relied on, if any.
    pub consent_override: Option<Override>,
    /// When it was escalated for being undecided too long.
    pub escalated_at: Option<UnixTime>,
    /// The recipients waiting on the decision.
    pub recipients: Vec<PartnerId>,
    /// Who submitted it.
    pub submitted_by: Option<ActorRef>,
}

/// One held delivery that a lead's decision releases.
#[derive(Clone, Debug)]
pub struct Release {
    /// The delivery.
    pub delivery: DeliveryId,
    /// Its recipient.
    pub recipient: PartnerId,
    /// Its JWE.
    pub sealed: Sealed,
    /// Keyed hashes of the people in the released copy (the recipient's subject access).
    pub subjects: Vec<SubjectHash>,
}

/// One held delivery that a lead's decision refuses.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// The delivery.
    pub delivery: DeliveryId,
    /// Its recipient.
    pub recipient: PartnerId,
    /// The lead's reason, sealed under the storage key.
    pub reason_sealed: Sealed,
}

/// A lead's decision on a held referral, planned by `review` and ready to commit.
#[derive(Clone, Debug)]
pub struct ReviewCommit {
    /// The referral.
    pub referral_id: ReferralId,
    /// When.
    pub at: UnixTime,
    /// Who decided.
    pub actor: ActorRef,
    /// The deliveries released.
    pub releases: Vec<Release>,
    /// The deliveries refused.
    pub rejections: Vec<Rejection>,
    /// The events the decision writes (`reviewed`, `minimised`, `queued`), in order.
    pub events: Vec<AuditRecord>,
    /// For a correction released now: the original, for the recipients released to.
    pub withdraws: Option<Supersession>,
}

/// What committing a decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecideOutcome {
    /// Decided now.
    Decided,
    /// Someone decided first (or the hold is gone): nothing changed.
    AlreadyDecided,
    /// Deliveries of these recipients stopped being held meanwhile (a correction withdrew
    /// them): nothing changed; the lead decides again on what is held now.
    Changed {
        /// The recipients whose delivery is no longer held.
        recipients: Vec<PartnerId>,
    },
}

/// One delivery as a report counts it: dimensions only, no ids, no content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactRow {
    /// When the referral was received (Unix seconds).
    pub received_at: UnixTime,
    /// Referral type.
    pub referral_type: ReferralType,
    /// Sending partner.
    pub sender: PartnerId,
    /// Receiving partner.
    pub recipient: PartnerId,
    /// `consent.status`.
    pub consent: refex_core::intake::ConsentStatus,
    /// The lead's decision, if one was made before the end of the reported period.
    pub decision: Option<refex_core::audit::event::Verdict>,
    /// Whether it was held for review.
    pub held: bool,
    /// Whether the hold was closed undecided before the end of the reported period.
    pub closed_undecided: bool,
    /// Whether the delivery was withdrawn before the end of the reported period.
    pub withdrawn: bool,
}

/// A referral a subject-access search found, and what the asking partner may see of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectMatch {
    /// The asking partner sent it (its index comes from the full payload).
    Sent(ReferralId),
    /// The asking partner received this delivery of it (its index comes from the copy it
    /// received, and only deliveries that reached it count).
    Received(ReferralId, DeliveryId),
}

/// A delivery that reached a recipient's inbox, for the recipient's console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRow {
    /// The delivery.
    pub id: DeliveryId,
    /// Its referral.
    pub referral_id: ReferralId,
    /// The sending partner.
    pub from: PartnerId,
    /// The referral type.
    pub referral_type: ReferralType,
    /// When the gateway accepted the referral (Unix seconds).
    pub received_at: UnixTime,
    /// Its status now.
    pub status: DeliveryStatus,
}

/// One of a sender's referrals for its outbound history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentRow {
    /// The referral.
    pub id: ReferralId,
    /// Its type.
    pub referral_type: ReferralType,
    /// When it was received.
    pub received_at: UnixTime,
    /// The sender's own reference.
    pub sender_ref: String,
    /// Each delivery's state.
    pub states: Vec<DeliveryState>,
}
