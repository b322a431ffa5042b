//! What the audit trail records: one [`AuditEvent`] variant per kind of event, each with typed
//! fields, and the one canonical serialiser that turns an event into the leaf text that is
//! hashed, stored and exported.
//!
//! The serialisation is explicit, never a map's iteration order: a leaf is
//! `{"idx","at","kind","referral_id","delivery_id","actor","detail"}` in that order, and
//! `detail` is the variant's struct serialised field by field in declaration order (serde
//! derives write struct fields in the order they are declared, whatever `serde_json`'s
//! `preserve_order` feature says; no detail holds a `serde_json::Value`). The field names and
//! shapes are the ones the trail has always written, so every stored event still parses and
//! every exported log still verifies (the verifier hashes the stored leaf text).
//!
//! Out of scope: appending (the store) and the tree maths (`tree`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identity::{
    AgreementId, IdError, OperatorTask, PartnerId, PersonId, Principal, ReferralType, SystemId,
};
use crate::ids::{DeliveryId, ReferralId};
use crate::intake::claims::{ConsentStatus, LawfulBasis, Override, SubjectInformed};
use crate::timestamp::UnixTime;

/// Who did something, as the trail names them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActorRef {
    /// A partner's system.
    System {
        /// Its organisation.
        partner: PartnerId,
        /// The system.
        id: SystemId,
    },
    /// A named person of a partner (whichever of their certificates they used).
    Person {
        /// Their organisation.
        partner: PartnerId,
        /// The person.
        id: PersonId,
    },
    /// The gateway's operator, running a command or sending a signal.
    Operator(OperatorTask),
}

impl ActorRef {
    /// The organisation the actor belongs to (none for the operator).
    pub fn partner(&self) -> Option<&PartnerId> {
        match self {
            ActorRef::System { partner, .. } | ActorRef::Person { partner, .. } => Some(partner),
            ActorRef::Operator(_) => None,
        }
    }

    /// The operator doing `task` (e.g. `admin-reload`).
    pub fn operator(task: &str) -> Result<Self, IdError> {
        Ok(ActorRef::Operator(task.parse()?))
    }
}

impl From<&Principal> for ActorRef {
    fn from(p: &Principal) -> Self {
        match &p.actor {
            crate::identity::Actor::System(id) => ActorRef::System {
                partner: p.partner.clone(),
                id: id.clone(),
            },
            crate::identity::Actor::Person { id, .. } => ActorRef::Person {
                partner: p.partner.clone(),
                id: id.clone(),
            },
        }
    }
}

impl fmt::Display for ActorRef {
    /// `partner/system:id`, `partner/person:id` or `operator:task`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorRef::System { partner, id } => write!(f, "{partner}/system:{id}"),
            ActorRef::Person { partner, id } => write!(f, "{partner}/person:{id}"),
            ActorRef::Operator(task) => write!(f, "operator:{task}"),
        }
    }
}

/// Why an actor's text did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} names no actor")]
pub struct BadActor(String);

impl FromStr for ActorRef {
    type Err = BadActor;
    fn from_str(s: &str) -> Result<Self, BadActor> {
        let bad = || BadActor(s.to_owned());
        if let Some(task) = s.strip_prefix("operator:") {
            return ActorRef::operator(task).map_err(|_| bad());
        }
        let (partner, rest) = s.split_once('/').ok_or_else(bad)?;
        let partner: PartnerId = partner.parse().map_err(|_| bad())?;
        match rest.split_once(':') {
            Some(("system", id)) => Ok(ActorRef::System {
                partner,
                id: id.parse().map_err(|_| bad())?,
            }),
            Some(("person", id)) => Ok(ActorRef::Person {
                partner,
                id: id.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// A recipient and the agreement that covers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientAgreement {
    /// The recipient.
    pub to: PartnerId,
    /// The agreement's id.
    pub agreement: AgreementId,
}

/// Consent as the trail records it: status and override, never the justification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConsentRecord {
    /// `consent.status`.
    pub status: ConsentStatus,
    /// The override relied on (`null` when consent was given).
    #[serde(rename = "override")]
    pub override_: Option<Override>,
}

/// `accepted`: a referral passed intake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// Its type.
    #[serde(rename = "type")]
    pub referral_type: ReferralType,
    /// The sending partner.
    pub sender: PartnerId,
    /// The lawful basis relied on, with its regime and every condition.
    pub lawful_basis: LawfulBasis,
    /// Consent.
    pub consent: ConsentRecord,
    /// Whether the person was told.
    pub subject_informed: SubjectInformed,
    /// Each recipient with its agreement.
    pub recipients: Vec<RecipientAgreement>,
}

/// `rejected`: a submission was refused; only the reason's slug.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The refusal's slug (the problem type's last segment).
    pub reason: String,
}

/// `minimised`: what one recipient's copy discloses and withholds (pointers, never values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minimised {
    /// The recipient.
    pub to: PartnerId,
    /// The view, `<recipient kind>/<type>`.
    pub view: String,
    /// The view schema's version (a digest of the file), where recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_version: Option<String>,
    /// Leaf pointers disclosed.
    pub disclosed: Vec<String>,
    /// Pointers withheld.
    pub withheld: Vec<String>,
}

/// Why a delivery was held, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldGround {
    /// Consent not given; the override relied on.
    #[serde(rename = "consent-override")]
    ConsentOverride(Override),
    /// The agreement reviews every disclosure.
    #[serde(rename = "agreement-requires-review")]
    AgreementRequiresReview,
}

/// `held`: a delivery waits for the sender's lead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The recipient.
    pub to: PartnerId,
    /// Why.
    pub reason: HoldGround,
}

/// A delivery's recipient (`queued`, `expired`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToRecipient {
    /// The recipient.
    pub to: PartnerId,
}

/// A lead's decision on one held delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Released to the recipient.
    Approve,
    /// Refused: never delivered.
    Reject,
}

impl Verdict {
    /// As the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// `reviewed`: a lead decided one held delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewed {
    /// The recipient.
    pub to: PartnerId,
    /// Approve or reject.
    pub decision: Verdict,
    /// The digest of the preview the lead approved (absent on rejections and on decisions
    /// recorded before previews were bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// `fetched`: the recipient's first fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// Always true: only the first fetch is recorded.
    pub first: bool,
}

/// `acknowledged`: nothing but the event itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {}

/// Why a delivery was withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WithdrawReason {
    /// The sender withdrew the referral.
    WithdrawnBySender,
    /// A correction of the referral was released.
    Superseded,
}

/// `withdrawn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    /// Why.
    pub reason: WithdrawReason,
    /// The correction that superseded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ReferralId>,
    /// The recipient.
    pub to: PartnerId,
}

/// `purged`: a referral's records reached the end of their retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// What went.
    pub what: String,
}

/// `escalated`: a hold waited past the review deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalated {
    /// Why.
    pub reason: String,
}

/// `subject-access`: a subject-access request was answered (never the identifiers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAccess {
    /// For which partner.
    pub partner: PartnerId,
    /// How many referrals matched.
    pub matches: u64,
}

/// `report`: an aggregate report was produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Its dimensions.
    pub by: Vec<String>,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Cells suppressed.
    pub suppressed: u64,
}

/// `config-loaded`: a configuration was put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigLoaded {
    /// Partners in it.
    pub partners: u64,
    /// Agreements in it.
    pub agreements: u64,
}

/// `key-rotated`: new gateway keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    /// New `enc` kid.
    pub enc: String,
    /// New `sig` kid.
    pub sig: String,
    /// Kids in their grace period.
    pub retiring: Vec<String>,
    /// When they retire (Unix seconds).
    pub retire_at: u64,
}

/// What a person read (DPA 2018 s.62 "consultation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consultation {
    /// A held referral's review preview.
    ReviewPreview,
    /// A referral's disclosure record.
    DisclosureRecord,
    /// A subject-access answer.
    SubjectAccess,
    /// A delivery's content, read in the console.
    Delivery,
}

/// One recipient's preview digest, as shown to a lead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewShown {
    /// The recipient.
    pub to: PartnerId,
    /// The digest of what it would receive.
    pub preview: String,
}

/// `consulted`: a person read something the trail must show they read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consulted {
    /// What.
    pub what: Consultation,
    /// For a review preview: each recipient's digest as shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previews: Vec<PreviewShown>,
    /// For a subject-access answer: how many referrals it listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<u64>,
}

/// `release-refused`: a lead approved a delivery that the configuration in force no longer
/// permits; the hold stays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRefused {
    /// The recipient.
    pub to: PartnerId,
    /// The refusal's slug (as intake would give it).
    pub reason: String,
}

macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident($detail:ty) = $kind:literal ),+ $(,)?) => {
        /// Every kind of audit event, each with its typed detail.
        #[derive(Clone, Debug, PartialEq)]
        pub enum AuditEvent {
            $( $(#[$doc])* $variant($detail), )+
        }

        /// An event's kind, as stored and as the leaf's `kind`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $( $(#[$doc])* $variant, )+
        }

        impl EventKind {
            /// Every kind (the store's `CHECK` constraint is generated from this).
            pub const ALL: &'static [EventKind] = &[ $( EventKind::$variant, )+ ];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $( EventKind::$variant => $kind, )+ }
            }

            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $( $kind => Some(EventKind::$variant), )+ _ => None }
            }
        }

        impl AuditEvent {
            /// Its kind.
            pub fn kind(&self) -> EventKind {
                match self { $( AuditEvent::$variant(_) => EventKind::$variant, )+ }
            }

            /// The detail as canonical JSON (fields in declaration order, no whitespace).
            pub fn detail_json(&self) -> String {
                let out = match self { $( AuditEvent::$variant(d) => serde_json::to_string(d), )+ };
                // Detail structs hold only strings, numbers, booleans, enums and sequences of
                // them: serialising one into a String cannot fail.
                out.unwrap_or_else(|e| unreachable!("audit detail serialises: {e}"))
            }

            /// Parses a stored `(kind, detail)` pair.
            pub fn parse(kind: &str, detail: &str) -> Result<Self, EventParseError> {
                let kind = EventKind::parse(kind).ok_or(EventParseError::Kind)?;
                match kind {
                    $( EventKind::$variant => serde_json::from_str(detail)
                        .map(AuditEvent::$variant)
                        .map_err(|_| EventParseError::Detail(kind)), )+
                }
            }
        }
    };
}

events! {
    /// A referral passed intake.
    Accepted(Accepted) = "accepted",
    /// A submission was refused.
    Rejected(Rejected) = "rejected",
    /// What one recipient's copy discloses and withholds.
    Minimised(Minimised) = "minimised",
    /// A delivery waits for the sender's lead.
    Held(Held) = "held",
    /// A delivery entered its recipient's inbox.
    Queued(ToRecipient) = "queued",
    /// A lead decided a held delivery.
    Reviewed(Reviewed) = "reviewed",
    /// The recipient fetched a delivery for the first time.
    Fetched(Fetched) = "fetched",
    /// The recipient acknowledged a delivery.
    Acknowledged(Acknowledged) = "acknowledged",
    /// A delivery was withdrawn.
    Withdrawn(Withdrawn) = "withdrawn",
    /// A delivery expired unacknowledged.
    Expired(ToRecipient) = "expired",
    /// A referral's records were purged.
    Purged(Purged) = "purged",
    /// A hold was escalated.
    Escalated(Escalated) = "escalated",
    /// A subject-access request was answered.
    SubjectAccess(SubjectAccess) = "subject-access",
    /// An aggregate report was produced.
    Report(Report) = "report",
    /// A configuration was put in force.
    ConfigLoaded(ConfigLoaded) = "config-loaded",
    /// Gateway keys were rotated.
    KeyRotated(KeyRotated) = "key-rotated",
    /// A person read a preview, record, answer or delivery.
    Consulted(Consulted) = "consulted",
    /// A release was refused because the configuration in force no longer permits it.
    ReleaseRefused(ReleaseRefused) = "release-refused",
    /// A hold undecided past the configured maximum was closed without release.
    ClosedUndecided(ToRecipient) = "closed-undecided",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored event that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventParseError {
    /// The kind is not one this build knows.
    #[error("unknown event kind")]
    Kind,
    /// The detail does not have the kind's shape.
    #[error("{0} detail does not parse")]
    Detail(EventKind),
    /// A stored leaf is not an event's canonical text.
    #[error("leaf does not parse")]
    Leaf,
}

/// A leaf's parts as a store keeps them: its place as columns and its detail's JSON text. The
/// one writer of leaf text: [`AuditRecord::leaf`] writes through it, and a store that keeps
/// only the parts rebuilds the exact text that was hashed with it. The parts are not checked
/// here: what is rebuilt is read back with [`AuditRecord::from_leaf`], and its hash proves it.
#[derive(Clone, Copy, Debug)]
pub struct LeafParts<'a> {
    /// The leaf's index.
    pub idx: i64,
    /// When.
    pub at: UnixTime,
    /// The kind's stored name.
    pub kind: &'a str,
    /// The referral concerned.
    pub referral_id: Option<&'a str>,
    /// The delivery concerned.
    pub delivery_id: Option<&'a str>,
    /// Who, as the trail names them.
    pub actor: Option<&'a str>,
    /// The detail's canonical JSON, exactly as [`AuditEvent::detail_json`] wrote it.
    pub detail: &'a str,
}

impl LeafParts<'_> {
    /// The leaf text (see the module doc for its field order).
    pub fn text(&self) -> String {
        let text = |v: Option<&str>| match v {
            Some(s) => serde_json::Value::from(s).to_string(),
            None => "null".to_owned(),
        };
        format!(
            "{{\"idx\":{},\"at\":{},\"kind\":{},\"referral_id\":{},\"delivery_id\":{},\"actor\":{},\"detail\":{}}}",
            self.idx,
            self.at,
            serde_json::Value::from(self.kind),
            text(self.referral_id),
            text(self.delivery_id),
            text(self.actor),
            self.detail,
        )
    }
}

/// An event with its place: when, which referral and delivery, who.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// When it happened.
    pub at: UnixTime,
    /// The referral concerned.
    pub referral_id: Option<ReferralId>,
    /// The delivery concerned.
    pub delivery_id: Option<DeliveryId>,
    /// Who did it (none for the gateway's own housekeeping).
    pub actor: Option<ActorRef>,
    /// What happened.
    pub event: AuditEvent,
}

impl AuditRecord {
    /// An event at `at` about nothing in particular, by `actor`.
    pub fn new(at: UnixTime, actor: Option<ActorRef>, event: AuditEvent) -> Self {
        Self {
            at,
            referral_id: None,
            delivery_id: None,
            actor,
            event,
        }
    }

    /// The same, about `referral`.
    pub fn about(mut self, referral: &ReferralId) -> Self {
        self.referral_id = Some(referral.clone());
        self
    }

    /// The same, about `delivery` (of the referral already set).
    pub fn delivery(mut self, delivery: &DeliveryId) -> Self {
        self.delivery_id = Some(delivery.clone());
        self
    }

    /// The exact text of leaf `idx` (see the module doc for its field order).
    pub fn leaf(&self, idx: i64) -> String {
        self.leaf_with(idx, &self.event.detail_json())
    }

    /// [`AuditRecord::leaf`] for a caller that has the detail's JSON already (a store that
    /// keeps the detail apart).
    pub fn leaf_with(&self, idx: i64, detail: &str) -> String {
        let actor = self.actor.as_ref().map(ToString::to_string);
        LeafParts {
            idx,
            at: self.at,
            kind: self.event.kind().as_str(),
            referral_id: self.referral_id.as_ref().map(ReferralId::as_str),
            delivery_id: self.delivery_id.as_ref().map(DeliveryId::as_str),
            actor: actor.as_deref(),
            detail,
        }
        .text()
    }

    /// Reads a stored leaf back: the leaf is the one stored copy of an event (its detail is
    /// nowhere else), so this is the reader beside [`AuditRecord::leaf`], its writer. Returns
    /// the leaf's index with the record.
    pub fn from_leaf(text: &str) -> Result<(u64, AuditRecord), EventParseError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Leaf<'a> {
            idx: u64,
            at: UnixTime,
            kind: &'a str,
            referral_id: Option<String>,
            delivery_id: Option<String>,
            actor: Option<String>,
            #[serde(borrow)]
            detail: &'a serde_json::value::RawValue,
        }
        let leaf: Leaf<'_> = serde_json::from_str(text).map_err(|_| EventParseError::Leaf)?;
        fn field<T: FromStr>(v: Option<String>) -> Result<Option<T>, EventParseError> {
            v.map(|s| s.parse().map_err(|_| EventParseError::Leaf))
                .transpose()
        }
        let record = AuditRecord {
            at: leaf.at,
            referral_id: field(leaf.referral_id)?,
            delivery_id: field(leaf.delivery_id)?,
            actor: field(leaf.actor)?,
            event: AuditEvent::parse(leaf.kind, leaf.detail.get())?,
        };
        Ok((leaf.idx, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> AuditRecord {
        AuditRecord {
            at: UnixTime::from_secs(1_795_000_000),
            referral_id: Some(ReferralId::parse("ref_01J00000000000000000000001").unwrap()),
            delivery_id: None,
            actor: Some("p/system:s".parse().unwrap()),
            event: AuditEvent::Queued(ToRecipient {
                to: "imara".parse().unwrap(),
            }),
        }
    }

    /// The leaf text is pinned: changing it would make every stored leaf unverifiable.
    #[test]
    fn the_leaf_text_is_canonical_and_stable() {
        assert_eq!(
            queued().leaf(7),
            r#"{"idx":7,"at":1795000000,"kind":"queued","referral_id":"ref_01J00000000000000000000001","delivery_id":null,"actor":"p/system:s","detail":{"to":"imara"}}"#
        );
    }

    /// A leaf reads back as the record that wrote it; anything else is an error, never a
    /// default.
    #[test]
    fn a_leaf_reads_back_as_its_record() {
        let mut record = queued();
        record.delivery_id = Some(DeliveryId::parse("dlv_01J00000000000000000000001").unwrap());
        assert_eq!(AuditRecord::from_leaf(&record.leaf(7)), Ok((7, record)));
        let leaf = queued().leaf(7);
        for bad in [
            String::new(),
            leaf.replace(r#""at""#, r#""when""#),
            leaf.replace(r#""actor":"p/system:s""#, r#""actor":"nobody""#),
            leaf.replace("ref_01J", "xyz_01J"),
            leaf.replace(r#""idx":7"#, r#""idx":-7"#),
            format!("{},\"extra\":1}}", &leaf[..leaf.len() - 1]),
        ] {
            assert_eq!(
                AuditRecord::from_leaf(&bad),
                Err(EventParseError::Leaf),
                "{bad}"
            );
        }
        assert_eq!(
            AuditRecord::from_leaf(&leaf.replace(r#""to":"imara""#, r#""to":1"#)),
            Err(EventParseError::Detail(EventKind::Queued))
        );
    }

    /// Details as earlier builds wrote them (with `json!`) still parse, and serialise back
    /// to the same text.
    #[test]
    fn stored_details_parse_and_round_trip() {
        let stored = [
            (
                "accepted",
                r#"{"type":"child-sexual-abuse-support","sender":"notts-police","lawful_basis":{"article6":"public-task","article9":"substantial-public-interest","dpa2018_schedule1":"para-18-safeguarding-children"},"consent":{"status":"not-sought","override":"risk-of-significant-harm"},"subject_informed":{"status":"no","reason":"would-increase-risk"},"recipients":[{"to":"imara","agreement":"isa-police-imara-csa"}]}"#,
            ),
            (
                "minimised",
                r#"{"to":"imara","view":"chisva/child-sexual-abuse-support","disclosed":["/child/name/given"],"withheld":["/offence/narrative"]}"#,
            ),
            (
                "held",
                r#"{"to":"imara","reason":{"consent-override":"risk-of-significant-harm"}}"#,
            ),
            (
                "held",
                r#"{"to":"imara","reason":"agreement-requires-review"}"#,
            ),
            ("reviewed", r#"{"to":"imara","decision":"approve"}"#),
            ("fetched", r#"{"first":true}"#),
            ("acknowledged", r#"{}"#),
            (
                "withdrawn",
                r#"{"reason":"superseded","by":"ref_01J00000000000000000000002","to":"imara"}"#,
            ),
            (
                "withdrawn",
                r#"{"reason":"withdrawn-by-sender","to":"imara"}"#,
            ),
            ("rejected", r#"{"reason":"stale-iat"}"#),
            ("subject-access", r#"{"partner":"imara","matches":2}"#),
            (
                "report",
                r#"{"by":["month","type"],"from":"2026-01-01","to":"2026-01-31","suppressed":3}"#,
            ),
            ("config-loaded", r#"{"partners":16,"agreements":30}"#),
            (
                "key-rotated",
                r#"{"enc":"e2","sig":"s2","retiring":["e1","s1"],"retire_at":1795000000}"#,
            ),
        ];
        for (kind, detail) in stored {
            let e = AuditEvent::parse(kind, detail).unwrap_or_else(|err| panic!("{kind}: {err}"));
            assert_eq!(e.kind().as_str(), kind);
            // A v1 lawful basis is written back with its regime named; nothing else changes.
            let written = detail.replace(
                r#""lawful_basis":{"article6""#,
                r#""lawful_basis":{"regime":"uk-gdpr","article6""#,
            );
            assert_eq!(e.detail_json(), written, "{kind}");
        }
        assert_eq!(
            AuditEvent::parse("nonsense", "{}"),
            Err(EventParseError::Kind)
        );
        assert_eq!(
            AuditEvent::parse("queued", "{}"),
            Err(EventParseError::Detail(EventKind::Queued))
        );
    }

    #[test]
    fn actors_round_trip_and_refuse_junk() {
        for text in [
            "notts-police/system:case-system",
            "notts-police/person:dsl-a",
            "operator:admin-reload",
        ] {
            assert_eq!(text.parse::<ActorRef>().unwrap().to_string(), text);
        }
        for junk in [
            "",
            "notts-police",
            "notts-police/robot:x",
            "Police/person:a",
            "operator:",
        ] {
            assert!(junk.parse::<ActorRef>().is_err(), "{junk}");
        }
    }
}
