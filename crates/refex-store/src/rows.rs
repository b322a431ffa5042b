//! Rows as SQL returns them, and the one conversion of each into its typed record. Strings
//! become ids, statuses and events here or the read fails with
//! [`StoreError::Corrupt`] naming the table and column: never a default, never a dropped row.

use std::str::FromStr;

use super::StoreError;
use super::records::{
    AuditRecord, DeliveryRow, DeliveryState, DeliveryStatus, FactRow, HeldRow, InboxItem,
    ReceivedRow, ReferralRecord,
};
use crate::sql::{FromRow, Row};
use refex_core::audit::event::{AuditEvent, ConsentRecord, LeafParts};
use refex_core::envelope::sealed::Sealed;
use refex_core::identity::{PartnerId, ReferralType};
use refex_core::ids::{DeliveryId, ReferralId};
use refex_core::intake::claims::{ConsentStatus, LawfulBasis, Override, SubjectInformed};
use refex_core::timestamp::UnixTime;

/// A column's text that does not parse into its type.
pub(crate) fn corrupt(table: &'static str, column: &'static str) -> StoreError {
    StoreError::Corrupt { table, column }
}

/// A column holding ciphertext: a compact JWE, or the row is corrupt (plaintext where
/// ciphertext belongs is never handed on).
pub(crate) fn sealed(
    table: &'static str,
    column: &'static str,
    text: String,
) -> Result<Sealed, StoreError> {
    Sealed::parse(text).map_err(|_| corrupt(table, column))
}

/// A delivery's ciphertext: packed (`sealed_packed`, since store format 4; see
/// `Sealed::to_packed`), or as compact text (`sealed`, before); none once closed. A row with
/// both was written by neither.
pub(crate) fn delivery_sealed(
    text: Option<String>,
    packed: Option<Vec<u8>>,
) -> Result<Option<Sealed>, StoreError> {
    match (text, packed) {
        (Some(_), Some(_)) => Err(corrupt("deliveries", "sealed")),
        (None, Some(packed)) => Sealed::from_packed(&packed)
            .map(Some)
            .map_err(|_| corrupt("deliveries", "sealed_packed")),
        (text, None) => sealed_opt("deliveries", "sealed", text),
    }
}

/// An optional column holding ciphertext.
pub(crate) fn sealed_opt(
    table: &'static str,
    column: &'static str,
    text: Option<String>,
) -> Result<Option<Sealed>, StoreError> {
    text.map(|t| sealed(table, column, t)).transpose()
}

/// Parses a required column.
pub(crate) fn parse<T: FromStr>(
    table: &'static str,
    column: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse().map_err(|_| corrupt(table, column))
}

/// Parses an optional column.
pub(crate) fn parse_opt<T: FromStr>(
    table: &'static str,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| parse(table, column, t)).transpose()
}

/// Parses a JSON column.
fn json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    column: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt(table, column))
}

/// Serialises a typed value into its JSON column. The value types here are plain structs and
/// enums; serialising them cannot fail.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("column value serialises: {e}"))
}

/// `referrals` as selected by [`REFERRAL_COLUMNS`].
pub(crate) struct ReferralRow {
    id: String,
    sender: String,
    sender_ref: String,
    referral_type: String,
    received_at: UnixTime,
    lawful_basis: String,
    consent_status: String,
    consent_override: Option<String>,
    subject_informed: String,
    supersedes: Option<String>,
    justification_sealed: Option<String>,
}

impl FromRow for ReferralRow {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.column()?,
            sender: r.column()?,
            sender_ref: r.column()?,
            referral_type: r.column()?,
            received_at: r.column()?,
            lawful_basis: r.column()?,
            consent_status: r.column()?,
            consent_override: r.column()?,
            subject_informed: r.column()?,
            supersedes: r.column()?,
            justification_sealed: r.column()?,
        })
    }
}

/// The columns [`ReferralRow`] reads.
pub(crate) const REFERRAL_COLUMNS: &str = "id, sender, sender_ref, referral_type, received_at, \
     lawful_basis, consent_status, consent_override, subject_informed, supersedes, \
     justification_sealed";

impl TryFrom<ReferralRow> for ReferralRecord {
    type Error = StoreError;
    fn try_from(r: ReferralRow) -> Result<Self, StoreError> {
        const T: &str = "referrals";
        Ok(ReferralRecord {
            id: parse(T, "id", &r.id)?,
            sender: parse(T, "sender", &r.sender)?,
            sender_ref: r.sender_ref,
            referral_type: parse(T, "referral_type", &r.referral_type)?,
            received_at: r.received_at,
            lawful_basis: json::<LawfulBasis>(T, "lawful_basis", &r.lawful_basis)?,
            consent: ConsentRecord {
                status: ConsentStatus::parse(&r.consent_status)
                    .ok_or(corrupt(T, "consent_status"))?,
                override_: r
                    .consent_override
                    .as_deref()
                    .map(|o| Override::parse(o).ok_or(corrupt(T, "consent_override")))
                    .transpose()?,
            },
            subject_informed: json::<SubjectInformed>(T, "subject_informed", &r.subject_informed)?,
            supersedes: parse_opt(T, "supersedes", r.supersedes.as_deref())?,
            justification_sealed: sealed_opt(T, "justification_sealed", r.justification_sealed)?,
        })
    }
}

/// `deliveries` as selected by [`DELIVERY_COLUMNS`].
pub(crate) struct DeliveryRowRaw {
    id: String,
    recipient: String,
    agreement: String,
    status: String,
    created_at: UnixTime,
    updated_at: UnixTime,
    queued_at: Option<UnixTime>,
    fetched_at: Option<UnixTime>,
}

impl FromRow for DeliveryRowRaw {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.column()?,
            recipient: r.column()?,
            agreement: r.column()?,
            status: r.column()?,
            created_at: r.column()?,
            updated_at: r.column()?,
            queued_at: r.column()?,
            fetched_at: r.column()?,
        })
    }
}

/// The columns [`DeliveryRowRaw`] reads.
pub(crate) const DELIVERY_COLUMNS: &str =
    "id, recipient, agreement, status, created_at, updated_at, queued_at, fetched_at";

impl TryFrom<DeliveryRowRaw> for DeliveryRow {
    type Error = StoreError;
    fn try_from(d: DeliveryRowRaw) -> Result<Self, StoreError> {
        const T: &str = "deliveries";
        Ok(DeliveryRow {
            id: parse(T, "id", &d.id)?,
            recipient: parse(T, "recipient", &d.recipient)?,
            agreement: parse(T, "agreement", &d.agreement)?,
            status: parse(T, "status", &d.status)?,
            created_at: d.created_at,
            updated_at: d.updated_at,
            queued_at: d.queued_at,
            fetched_at: d.fetched_at,
        })
    }
}

/// `audit_events` as selected by [`EVENT_COLUMNS`], with its leaf's hash in the tree. An
/// event is stored once: since store format 4 as the columns that place it and its detail
/// packed (`crate::packed`), its leaf text rebuilt from them; before, as its leaf text, which
/// the columns index and must agree with. A purged event has neither.
pub(crate) struct EventRowRaw {
    idx: Option<i64>,
    at: UnixTime,
    kind: String,
    referral_id: Option<String>,
    delivery_id: Option<String>,
    actor: Option<String>,
    leaf: Option<String>,
    packed: Option<Vec<u8>>,
    node: Option<Vec<u8>>,
}

impl EventRowRaw {
    /// Reads the [`EVENT_COLUMNS`] from `r`.
    fn read(mut r: Row) -> Result<Self, StoreError> {
        Ok(Self {
            idx: r.column()?,
            at: r.column()?,
            kind: r.column()?,
            referral_id: r.column()?,
            delivery_id: r.column()?,
            actor: r.column()?,
            leaf: r.column()?,
            packed: r.column()?,
            node: r.column()?,
        })
    }

    /// The hash the tree holds for its leaf (none for an event from before the tree).
    pub(crate) fn node(&self) -> Result<Option<refex_core::audit::tree::Hash>, StoreError> {
        self.node
            .as_deref()
            .map(|h| hash("audit_nodes", h))
            .transpose()
    }

    /// Its leaf index (none for an event written before the tree).
    pub(crate) fn idx(&self) -> Option<i64> {
        self.idx
    }

    /// The leaf text that was hashed: as stored, or rebuilt from the parts; `None` once the
    /// event was purged.
    pub(crate) fn leaf_text(&self) -> Result<Option<String>, StoreError> {
        const T: &str = "audit_events";
        let packed = match (&self.leaf, &self.packed) {
            // No writer leaves both: one of them was put there by something else.
            (Some(_), Some(_)) => return Err(corrupt(T, "leaf")),
            (Some(leaf), None) => return Ok(Some(leaf.clone())),
            (None, None) => return Ok(None),
            (None, Some(packed)) => packed,
        };
        let detail = crate::packed::unpack(packed).map_err(|_| corrupt(T, "packed_detail"))?;
        let parts = LeafParts {
            idx: self.idx.ok_or(corrupt(T, "idx"))?,
            at: self.at,
            kind: &self.kind,
            referral_id: self.referral_id.as_deref(),
            delivery_id: self.delivery_id.as_deref(),
            actor: self.actor.as_deref(),
            detail: &detail,
        };
        Ok(Some(parts.text()))
    }
}

impl FromRow for EventRowRaw {
    fn from_row(r: Row) -> Result<Self, StoreError> {
        Self::read(r)
    }
}

/// The columns [`EventRowRaw`] reads, from `audit_events` (not aliased).
pub(crate) const EVENT_COLUMNS: &str = "idx, at, kind, referral_id, delivery_id, actor, leaf, \
     packed_detail, (SELECT n.hash FROM audit_nodes n WHERE n.level = 0 AND n.idx = audit_events.idx)";

impl TryFrom<EventRowRaw> for AuditRecord {
    type Error = StoreError;
    fn try_from(e: EventRowRaw) -> Result<Self, StoreError> {
        const T: &str = "audit_events";
        // A purged event has no leaf: one is never asked for as a record.
        let leaf = e.leaf_text()?.ok_or(corrupt(T, "leaf"))?;
        let (idx, record) = AuditRecord::from_leaf(&leaf).map_err(|_| corrupt(T, "leaf"))?;
        // A leaf that does not hash to the tree's node for it, or has no node (every leaf
        // has an index, so it is in the tree), is a tampered or broken row; so is an index
        // column that disagrees with the stored leaf it indexes. The record is not served.
        let hashed = e
            .node()?
            .is_some_and(|node| refex_core::audit::tree::leaf_hash(leaf.as_bytes()) == node);
        let agrees = hashed
            && e.idx == i64::try_from(idx).ok()
            && e.at == record.at
            && e.kind == record.event.kind().as_str()
            && e.referral_id.as_deref() == record.referral_id.as_ref().map(ReferralId::as_str)
            && e.delivery_id.as_deref() == record.delivery_id.as_ref().map(DeliveryId::as_str)
            && e.actor == record.actor.as_ref().map(ToString::to_string);
        if agrees {
            Ok(record)
        } else {
            Err(corrupt(T, "leaf"))
        }
    }
}

/// A stored leaf read back as its record (see `AuditRecord::from_leaf`).
pub(crate) fn leaf_record(leaf: &str) -> Result<AuditRecord, StoreError> {
    AuditRecord::from_leaf(leaf)
        .map(|(_, record)| record)
        .map_err(|_| corrupt("audit_events", "leaf"))
}

/// A hash as stored: 32 bytes.
pub(crate) fn hash(
    table: &'static str,
    bytes: &[u8],
) -> Result<refex_core::audit::tree::Hash, StoreError> {
    bytes.try_into().map_err(|_| corrupt(table, "hash"))
}

/// A `(recipient, status, review_reason_sealed)` row.
pub(crate) fn delivery_state(
    (recipient, status, reason_sealed): (String, String, Option<String>),
) -> Result<DeliveryState, StoreError> {
    Ok(DeliveryState {
        recipient: parse("deliveries", "recipient", &recipient)?,
        status: parse("deliveries", "status", &status)?,
        reason_sealed: sealed_opt("deliveries", "review_reason_sealed", reason_sealed)?,
    })
}

/// An inbox listing row: `(id, sender, referral_type, received_at, bytes, inbox_pos)`.
/// A received delivery: `(id, referral_id, sender, type, received_at, status)`.
pub(crate) fn received_row(
    (id, referral, from, ty, received_at, status): (
        String,
        String,
        String,
        String,
        UnixTime,
        String,
    ),
) -> Result<ReceivedRow, StoreError> {
    Ok(ReceivedRow {
        id: parse("deliveries", "id", &id)?,
        referral_id: referral_id("deliveries", &referral)?,
        from: parse("referrals", "sender", &from)?,
        referral_type: parse("referrals", "referral_type", &ty)?,
        received_at,
        status: self::status(&status)?,
    })
}

pub(crate) fn inbox_item(
    (id, from, ty, received_at, bytes, position, status): (
        String,
        String,
        String,
        UnixTime,
        Option<i64>,
        Option<i64>,
        String,
    ),
) -> Result<InboxItem, StoreError> {
    Ok(InboxItem {
        status: self::status(&status)?,
        id: parse("deliveries", "id", &id)?,
        from: parse("referrals", "sender", &from)?,
        referral_type: parse("referrals", "referral_type", &ty)?,
        received_at,
        bytes: bytes.ok_or(corrupt("deliveries", "bytes"))?,
        position: position.ok_or(corrupt("deliveries", "inbox_pos"))?,
    })
}

/// A report fact row as `report_facts` selects it.
pub(crate) struct FactRowRaw {
    received_at: UnixTime,
    ty: String,
    sender: String,
    recipient: String,
    consent: String,
    reviewed: Option<String>,
    reviewed_packed: Option<Vec<u8>>,
    held: bool,
    closed_undecided: bool,
    withdrawn: bool,
}

impl FromRow for FactRowRaw {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok(Self {
            received_at: r.column()?,
            ty: r.column()?,
            sender: r.column()?,
            recipient: r.column()?,
            consent: r.column()?,
            reviewed: r.column()?,
            reviewed_packed: r.column()?,
            held: r.column()?,
            closed_undecided: r.column()?,
            withdrawn: r.column()?,
        })
    }
}

/// A report fact row read as its dimensions.
pub(crate) fn fact(
    FactRowRaw {
        received_at,
        ty,
        sender,
        recipient,
        consent,
        reviewed,
        reviewed_packed,
        held,
        closed_undecided,
        withdrawn,
    }: FactRowRaw,
) -> Result<FactRow, StoreError> {
    // The delivery's first `reviewed` event, if it has one: its leaf (before store format 4;
    // '' when it has none) or its packed detail. One with neither is only ever a purged
    // event, and purge deletes the delivery too: here it is a broken row.
    let event = match (reviewed.as_deref(), reviewed_packed) {
        (None, _) => None,
        (Some(""), Some(packed)) => {
            let detail = crate::packed::unpack(&packed)
                .map_err(|_| corrupt("audit_events", "packed_detail"))?;
            let kind = refex_core::audit::event::EventKind::Reviewed.as_str();
            let event = AuditEvent::parse(kind, &detail)
                .map_err(|_| corrupt("audit_events", "packed_detail"))?;
            Some(event)
        }
        (Some(leaf), _) => Some(leaf_record(leaf)?.event),
    };
    let decision = match event {
        Some(AuditEvent::Reviewed(r)) => Some(r.decision),
        Some(_) => return Err(corrupt("audit_events", "leaf")),
        None => None,
    };
    Ok(FactRow {
        received_at,
        referral_type: parse("referrals", "referral_type", &ty)?,
        sender: parse("referrals", "sender", &sender)?,
        recipient: parse("deliveries", "recipient", &recipient)?,
        consent: ConsentStatus::parse(&consent).ok_or(corrupt("referrals", "consent_status"))?,
        decision,
        held,
        closed_undecided,
        withdrawn,
    })
}

/// A held-referral row as selected: `(id, type, sender_ref, received_at, override,
/// escalated_at)`.
pub(crate) type HeldColumns = (
    String,
    String,
    String,
    UnixTime,
    Option<String>,
    Option<UnixTime>,
);

/// A held-referral row, read.
pub(crate) fn held_row(
    (id, ty, sender_ref, received_at, consent_override, escalated_at): HeldColumns,
    recipients: Vec<String>,
    submitted_by: Option<String>,
) -> Result<HeldRow, StoreError> {
    Ok(HeldRow {
        referral_id: parse("referrals", "id", &id)?,
        referral_type: parse("referrals", "referral_type", &ty)?,
        sender_ref,
        received_at,
        consent_override: consent_override
            .as_deref()
            .map(|o| Override::parse(o).ok_or(corrupt("referrals", "consent_override")))
            .transpose()?,
        escalated_at,
        recipients: recipients
            .iter()
            .map(|r| parse::<PartnerId>("deliveries", "recipient", r))
            .collect::<Result<_, _>>()?,
        submitted_by: parse_opt("audit_events", "actor", submitted_by.as_deref())?,
    })
}

/// A sent-referral row: `(id, type, received_at)`.
pub(crate) fn sent_row(
    (id, ty, at, sender_ref): (String, String, UnixTime, String),
) -> Result<(ReferralId, ReferralType, UnixTime, String), StoreError> {
    Ok((
        parse("referrals", "id", &id)?,
        parse("referrals", "referral_type", &ty)?,
        at,
        sender_ref,
    ))
}

/// A delivery id column.
pub(crate) fn delivery_id(text: &str) -> Result<DeliveryId, StoreError> {
    parse("deliveries", "id", text)
}

/// A referral id column of `table`.
pub(crate) fn referral_id(table: &'static str, text: &str) -> Result<ReferralId, StoreError> {
    parse(table, "referral_id", text)
}

/// The SQL list of every delivery status (for statements that need "any status").
pub(crate) fn status(text: &str) -> Result<DeliveryStatus, StoreError> {
    parse("deliveries", "status", text)
}
