//! Disclosure records: for each delivery of a referral, what was disclosed (field pointers,
//! never values), to whom, when, by whom, why (regime, lawful basis and every condition,
//! consent, override) and who approved or refused it — folded from the referral's audit
//! events, so the record says what happened, not what was planned at intake. A delivery a
//! lead rejected discloses nothing and names who refused it; one withdrawn or expired before
//! its first fetch was never received. Shaped for who is asking: the override justification
//! only for the sender's leads and auditors; a recipient sees only the delivery it received
//! and only what that delivery carried.

use serde::Serialize;

use crate::audit::event::{ActorRef, AuditEvent, ConsentRecord, Verdict};
use crate::envelope::at_rest::StorageKey;
use crate::identity::{PartnerId, ReferralType};
use crate::ids::{DeliveryId, ReferralId};
use crate::intake::claims::SubjectInformed;
use crate::lawful::LawfulBasis;
use crate::lifecycle::DeliveryStatus;
use crate::store::records::{DeliveryRow, ReferralDetail};
use crate::timestamp::UnixTime;

/// Who a record is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// The sending partner's people; `justification` for leads and auditors only.
    Sender {
        /// Whether the override justification may be shown.
        justification: bool,
    },
    /// A receiving partner: only this delivery of the referral, as it was received.
    Recipient(PartnerId, DeliveryId),
}

/// What became of one delivery, in words a record can state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Waiting for the sender's lead: nothing has left the gateway.
    AwaitingReview,
    /// A lead refused it: nothing ever reached the recipient.
    Refused,
    /// In the recipient's inbox, not yet fetched.
    Available,
    /// The recipient fetched it.
    Received,
    /// Withdrawn or expired before the recipient fetched it: never received.
    NeverReceived,
}

/// One delivery's record.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeliveryRecord {
    /// `dlv_…`.
    pub delivery_id: DeliveryId,
    /// The recipient.
    pub to: PartnerId,
    /// The agreement it went under.
    pub agreement: crate::identity::AgreementId,
    /// Its status now.
    pub status: DeliveryStatus,
    /// What became of it.
    pub outcome: Outcome,
    /// The view its copy was minimised to.
    pub view: Option<String>,
    /// Leaf pointers the recipient was given (empty when nothing reached it).
    pub disclosed: Vec<String>,
    /// Pointers minimisation withheld (sender only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Vec<String>>,
    /// Whether the recipient fetched it.
    pub received: bool,
    /// When it entered the inbox.
    pub queued_at: Option<UnixTime>,
    /// First fetched.
    pub fetched_at: Option<UnixTime>,
    /// Acknowledged.
    pub acknowledged_at: Option<UnixTime>,
    /// Withdrawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn_at: Option<UnixTime>,
    /// Expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<UnixTime>,
    /// The lead who approved its release (sender only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The lead who refused it (sender only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<String>,
    /// When it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_at: Option<UnixTime>,
}

/// Consent as a record shows it.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ConsentShown {
    /// Status and override.
    #[serde(flatten)]
    pub consent: ConsentRecord,
    /// The justification, for the sender's leads and auditors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// One referral's disclosure record.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Record {
    /// The referral.
    pub referral_id: ReferralId,
    /// Its type.
    #[serde(rename = "type")]
    pub referral_type: ReferralType,
    /// The sender.
    pub from: PartnerId,
    /// The sender's reference.
    pub sender_ref: String,
    /// When it was received.
    pub received_at: UnixTime,
    /// Who submitted it (sender only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<String>,
    /// The lawful basis, with its regime and every condition, as stated.
    pub lawful_basis: LawfulBasis,
    /// The Article 10 basis in effect for criminal offence data (stated, or the Part 1/2
    /// Schedule 1 condition relied on; derived, so named apart from what was stated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub article10_in_effect: Option<crate::lawful::Article10>,
    /// Consent.
    pub consent: ConsentShown,
    /// Whether the person was told.
    pub subject_informed: SubjectInformed,
    /// The referral it corrects (sender only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<ReferralId>,
    /// Its deliveries, as far as the viewer may see them.
    pub deliveries: Vec<DeliveryRecord>,
    /// The parties of this record (the sender, the recipients shown) whose keys the gateway
    /// holds on their behalf (hosted partners): for a hosted sender the gateway signed the
    /// referral, for a hosted recipient it could read what was delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys_held_by_gateway: Vec<PartnerId>,
}

impl Record {
    /// Names the parties whose keys the gateway holds (`hosted` says which partners are).
    pub fn note_custody(mut self, hosted: impl Fn(&PartnerId) -> bool) -> Self {
        let mut held: Vec<PartnerId> = std::iter::once(&self.from)
            .chain(self.deliveries.iter().map(|d| &d.to))
            .filter(|p| hosted(p))
            .cloned()
            .collect();
        held.sort();
        held.dedup();
        self.keys_held_by_gateway = held;
        self
    }
}

/// One delivery's story, folded from the events about it.
fn delivery(detail: &ReferralDetail, d: &DeliveryRow, sender_view: bool) -> DeliveryRecord {
    let mut view = None;
    let mut offered = Vec::new();
    let mut withheld = Vec::new();
    let (mut queued_at, mut fetched_at, mut acknowledged_at) = (None, None, None);
    let (mut withdrawn_at, mut expired_at) = (None, None);
    let (mut approved_by, mut refused_by, mut refused_at) = (None, None, None);
    let name = |a: &Option<ActorRef>| a.as_ref().map(ToString::to_string);
    for e in detail
        .events
        .iter()
        .filter(|e| e.delivery_id.as_ref() == Some(&d.id))
    {
        match &e.event {
            // The latest minimisation is what was released (a release minimises again).
            AuditEvent::Minimised(m) => {
                view = Some(m.view.clone());
                offered = m.disclosed.clone();
                withheld = m.withheld.clone();
            }
            AuditEvent::Queued(_) => queued_at = Some(e.at),
            AuditEvent::Reviewed(r) => match r.decision {
                Verdict::Approve => approved_by = name(&e.actor),
                Verdict::Reject => {
                    refused_by = name(&e.actor);
                    refused_at = Some(e.at);
                }
            },
            AuditEvent::Fetched(_) => fetched_at = fetched_at.or(Some(e.at)),
            AuditEvent::Acknowledged(_) => acknowledged_at = Some(e.at),
            AuditEvent::Withdrawn(_) => withdrawn_at = Some(e.at),
            AuditEvent::Expired(_) => expired_at = Some(e.at),
            _ => {}
        }
    }
    let received = fetched_at.is_some();
    let outcome = match d.status {
        DeliveryStatus::HeldForReview => Outcome::AwaitingReview,
        DeliveryStatus::RejectedByReview => Outcome::Refused,
        DeliveryStatus::ExpiredUndecided => Outcome::NeverReceived,
        _ if received => Outcome::Received,
        DeliveryStatus::Queued => Outcome::Available,
        _ => Outcome::NeverReceived,
    };
    let disclosed = match outcome {
        Outcome::Received | Outcome::Available => offered,
        _ => Vec::new(),
    };
    DeliveryRecord {
        delivery_id: d.id.clone(),
        to: d.recipient.clone(),
        agreement: d.agreement.clone(),
        status: d.status,
        outcome,
        view,
        disclosed,
        withheld: sender_view.then_some(withheld),
        received,
        queued_at,
        fetched_at,
        acknowledged_at,
        withdrawn_at,
        expired_at,
        approved_by: approved_by.filter(|_| sender_view),
        refused_by: refused_by.filter(|_| sender_view),
        refused_at: refused_at.filter(|_| sender_view),
    }
}

/// The disclosure record of one referral for `viewer`.
pub fn record(detail: &ReferralDetail, viewer: &Viewer, storage_key: &StorageKey) -> Record {
    let r = &detail.referral;
    let sender_view = matches!(viewer, Viewer::Sender { .. });
    let deliveries = detail
        .deliveries
        .iter()
        .filter(|d| match viewer {
            Viewer::Sender { .. } => true,
            Viewer::Recipient(p, id) => d.recipient == *p && d.id == *id,
        })
        .map(|d| delivery(detail, d, sender_view))
        .collect();
    let justification = match (viewer, &r.justification_sealed) {
        (
            Viewer::Sender {
                justification: true,
            },
            Some(sealed),
        ) => storage_key
            .open(sealed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        _ => None,
    };
    Record {
        referral_id: r.id.clone(),
        referral_type: r.referral_type.clone(),
        from: r.sender.clone(),
        sender_ref: r.sender_ref.clone(),
        received_at: r.received_at,
        sent_by: detail
            .submitted_by()
            .map(ToString::to_string)
            .filter(|_| sender_view),
        lawful_basis: r.lawful_basis,
        article10_in_effect: r.lawful_basis.article10_in_effect(),
        consent: ConsentShown {
            consent: r.consent,
            justification,
        },
        subject_informed: r.subject_informed.clone(),
        supersedes: r.supersedes.clone().filter(|_| sender_view),
        deliveries,
        keys_held_by_gateway: Vec::new(),
    }
}

/// The CSV columns of [`to_csv`].
pub const CSV_HEADER: &[&str] = &[
    "referral_id",
    "type",
    "from",
    "to",
    "received_at",
    "delivery_status",
    "outcome",
    "received",
    "regime",
    "article6",
    "article9",
    "dpa2018_schedule1",
    "article10_in_effect",
    "section35",
    "sensitive_processing",
    "dpa2018_schedule8",
    "consent_status",
    "consent_override",
    "subject_informed",
    "approved_by",
    "refused_by",
    "disclosed_fields",
];

/// Disclosure records as CSV, one row per delivery (portability for subject access). It says
/// exactly what the records say.
pub fn to_csv(records: &[Record]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for r in records {
        let basis = crate::lawful::LawfulBasisWire::from(r.lawful_basis);
        let opt = |v: Option<&'static str>| v.unwrap_or("").to_owned();
        for d in &r.deliveries {
            let outcome = serde_json::to_value(d.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            w.write_record([
                r.referral_id.to_string(),
                r.referral_type.to_string(),
                r.from.to_string(),
                d.to.to_string(),
                r.received_at.to_string(),
                d.status.to_string(),
                outcome,
                d.received.to_string(),
                r.lawful_basis.regime().to_string(),
                opt(basis.article6.map(|a| a.as_str())),
                opt(basis.article9.map(|a| a.as_str())),
                opt(basis.dpa2018_schedule1.map(|a| a.as_str())),
                opt(r.lawful_basis.article10_in_effect().map(|a| a.as_str())),
                opt(basis.section35.map(|a| a.as_str())),
                opt(basis.sensitive_processing.map(|a| a.as_str())),
                opt(basis.dpa2018_schedule8.map(|a| a.as_str())),
                r.consent.consent.status.as_str().to_owned(),
                opt(r.consent.consent.override_.map(|o| o.as_str())),
                r.subject_informed.status_str().to_owned(),
                d.approved_by.clone().unwrap_or_default(),
                d.refused_by.clone().unwrap_or_default(),
                d.disclosed.join(";"),
            ])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
