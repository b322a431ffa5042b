//! What the store keeps, as plain rows: the boundary between the domain types and SQL. No
//! field here ever holds payload plaintext; deliveries hold ciphertext for their recipient
//! and holds hold ciphertext under the storage key.

use serde_json::Value;

/// A delivery's status, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for the sender's safeguarding lead.
    HeldForReview,
    /// The lead refused the disclosure.
    RejectedByReview,
    /// In the recipient's inbox, not yet fetched.
    Queued,
    /// Fetched at least once.
    Delivered,
    /// Acknowledged by the recipient.
    Acknowledged,
    /// Withdrawn by the sender.
    Withdrawn,
    /// Not acknowledged within the recipient's retention.
    Expired,
}

impl DeliveryStatus {
    /// The status as the contract spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::HeldForReview => "held-for-review",
            DeliveryStatus::RejectedByReview => "rejected-by-review",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Acknowledged => "acknowledged",
            DeliveryStatus::Withdrawn => "withdrawn",
            DeliveryStatus::Expired => "expired",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeliveryStatus::HeldForReview,
            DeliveryStatus::RejectedByReview,
            DeliveryStatus::Queued,
            DeliveryStatus::Delivered,
            DeliveryStatus::Acknowledged,
            DeliveryStatus::Withdrawn,
            DeliveryStatus::Expired,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// The referral record: who, what type, on what basis; never the payload.
#[derive(Clone, Debug)]
pub struct ReferralRecord {
    /// `ref_…`.
    pub id: String,
    /// Sending partner.
    pub sender: String,
    /// The sender's own reference.
    pub sender_ref: String,
    /// Referral type.
    pub referral_type: String,
    /// Unix seconds.
    pub received_at: i64,
    /// The lawful basis, as JSON.
    pub lawful_basis: String,
    /// `consent.status`.
    pub consent_status: String,
    /// `consent.override`.
    pub consent_override: Option<String>,
    /// `subject_informed`, as JSON.
    pub subject_informed: String,
    /// The referral this one corrects.
    pub supersedes: Option<String>,
    /// The override justification, sealed under the storage key.
    pub justification_sealed: Option<String>,
}

/// One recipient's delivery.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    /// `dlv_…`.
    pub id: String,
    /// The recipient.
    pub recipient: String,
    /// The agreement that allows it.
    pub agreement: String,
    /// Its status.
    pub status: DeliveryStatus,
    /// The JWE for the recipient (absent while held).
    pub sealed: Option<String>,
}

/// A held referral, encrypted at rest.
#[derive(Clone, Debug)]
pub struct HoldRecord {
    /// The claims, sealed under the storage key.
    pub sealed: String,
    /// Which storage key.
    pub storage_key_id: String,
}

/// An audit event. `detail` holds ids, reasons, pointers and lawful bases, never values.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// What happened (`accepted`, `rejected`, `minimised`, `held`, `queued`, …).
    pub kind: &'static str,
    /// The referral concerned.
    pub referral_id: Option<String>,
    /// The delivery concerned.
    pub delivery_id: Option<String>,
    /// Who did it (a principal's display form).
    pub actor: Option<String>,
    /// Structured detail.
    pub detail: Value,
}

/// Everything an accepted referral writes, committed together or not at all.
#[derive(Clone, Debug)]
pub struct Acceptance {
    /// The referral.
    pub referral: ReferralRecord,
    /// Its `jti` (the replay marker).
    pub jti: String,
    /// Its deliveries.
    pub deliveries: Vec<DeliveryRecord>,
    /// The encrypted hold, when any delivery is held.
    pub hold: Option<HoldRecord>,
    /// Its audit events.
    pub events: Vec<AuditRecord>,
    /// Keyed hashes of the people it concerns (subject access).
    pub subjects: Vec<String>,
}

/// A delivery's recipient and status, for the sender's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    /// The recipient.
    pub recipient: String,
    /// Its status.
    pub status: DeliveryStatus,
}

/// One line of an inbox listing: metadata only, no personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxItem {
    /// `dlv_…`.
    pub id: String,
    /// The sending partner.
    pub from: String,
    /// The referral type.
    pub referral_type: String,
    /// When the gateway accepted it (Unix seconds).
    pub received_at: i64,
    /// Size of the sealed delivery.
    pub bytes: i64,
    /// Position in the recipient's inbox (the cursor).
    pub position: i64,
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

/// A signed audit checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Tree size.
    pub size: u64,
    /// Root hash, hex.
    pub root: String,
    /// When it was signed (Unix seconds).
    pub at: i64,
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
    /// The leaf hash, hex.
    pub hash: String,
}

/// Everything recorded about one referral, for disclosure records (no payload: there is none).
#[derive(Clone, Debug)]
pub struct ReferralDetail {
    /// The referral record.
    pub referral: ReferralRecord,
    /// Its deliveries: id, recipient, agreement, status, created, last changed.
    pub deliveries: Vec<DeliveryRow>,
    /// Its audit events, in order.
    pub events: Vec<EventRow>,
}

/// A delivery row for disclosure records.
#[derive(Clone, Debug)]
pub struct DeliveryRow {
    /// `dlv_…`.
    pub id: String,
    /// Recipient.
    pub recipient: String,
    /// Agreement id.
    pub agreement: String,
    /// Status.
    pub status: DeliveryStatus,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Last changed (Unix seconds).
    pub updated_at: i64,
}

/// An audit event row for disclosure records.
#[derive(Clone, Debug)]
pub struct EventRow {
    /// Kind.
    pub kind: String,
    /// When.
    pub at: i64,
    /// Delivery concerned.
    pub delivery_id: Option<String>,
    /// Who.
    pub actor: Option<String>,
    /// Detail (JSON).
    pub detail: serde_json::Value,
}

/// A held referral in a safeguarding lead's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRow {
    /// `ref_…`.
    pub referral_id: String,
    /// Referral type.
    pub referral_type: String,
    /// When it was received (Unix seconds).
    pub received_at: i64,
    /// The consent override relied on, if any.
    pub consent_override: Option<String>,
    /// When it was escalated for being undecided too long.
    pub escalated_at: Option<i64>,
    /// The recipients waiting on the decision.
    pub recipients: Vec<String>,
}

/// A lead's decision on a held referral, ready to commit.
#[derive(Clone, Debug)]
pub struct ReviewDecision {
    /// The referral.
    pub referral_id: String,
    /// Approve (release) or reject.
    pub approve: bool,
    /// When.
    pub at: i64,
    /// The deciding lead (principal display form).
    pub actor: String,
    /// The reason, sealed under the storage key.
    pub reason_sealed: Option<String>,
    /// For an approval: each held delivery's id and its sealed ciphertext.
    pub released: Vec<(String, String)>,
}

/// What committing a decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecideOutcome {
    /// Decided now.
    Decided,
    /// Someone decided first (or the hold is gone): nothing changed.
    AlreadyDecided,
}

/// One delivery as a report counts it: dimensions only, no ids, no content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactRow {
    /// When the referral was received (Unix seconds).
    pub received_at: i64,
    /// Referral type.
    pub referral_type: String,
    /// Sending partner.
    pub sender: String,
    /// Receiving partner.
    pub recipient: String,
    /// `consent.status`.
    pub consent_status: String,
    /// Delivery status.
    pub status: DeliveryStatus,
    /// The review decision (`approve`/`reject`), if reviewed.
    pub decision: Option<String>,
}
