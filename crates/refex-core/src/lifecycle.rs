//! The disclosure lifecycle: the states one recipient's delivery of a referral can be in, the
//! steps that move it, and the one pure function that says where a step leads from a state.
//! The store persists states and never decides them: every statement that changes a delivery's
//! status asks [`next`] first, and the SQL lists of states are generated from the enum here.
//!
//! ```text
//!            intake (deliver)                    intake (hold)
//!                  │                                   │
//!                  ▼          release (lead)           ▼
//!               Queued ◄──────────────────────── HeldForReview ──reject (lead)──► RejectedByReview
//!                  │ first fetch (recipient)           │
//!                  ▼                                   ├─withdraw (sender)──► Withdrawn
//!              Delivered                               └─past the hold limit (housekeeping)──► ExpiredUndecided
//!                  │ ack (recipient)
//!                  ▼
//!             Acknowledged
//!   Queued, Delivered ──withdraw (sender, correction released)──► Withdrawn
//!   Queued, Delivered ──expire (housekeeping, retention from entering the inbox)──► Expired
//! ```
//!
//! Out of scope: who may take a step (that is `policy`), and whether a release is still
//! lawful (that is `intake`, called again by `review`).

use std::fmt;

/// A delivery's status, as the contract spells it for the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryStatus {
    /// Waiting for the sender's designated safeguarding lead.
    HeldForReview,
    /// The lead refused the disclosure: nothing ever reached the recipient.
    RejectedByReview,
    /// In the recipient's inbox, not yet fetched.
    Queued,
    /// Fetched at least once.
    Delivered,
    /// Acknowledged by the recipient; its ciphertext is gone.
    Acknowledged,
    /// Withdrawn by the sender (or superseded by a released correction).
    Withdrawn,
    /// Not acknowledged within the recipient's retention.
    Expired,
    /// Held, and never decided within the configured maximum: closed, never released.
    ExpiredUndecided,
}

impl DeliveryStatus {
    /// Every status, in the order the contract lists them.
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::HeldForReview,
        DeliveryStatus::RejectedByReview,
        DeliveryStatus::Queued,
        DeliveryStatus::Delivered,
        DeliveryStatus::Acknowledged,
        DeliveryStatus::Withdrawn,
        DeliveryStatus::Expired,
        DeliveryStatus::ExpiredUndecided,
    ];

    /// The statuses of a delivery that is in its recipient's inbox (listed, fetchable).
    pub const IN_INBOX: [DeliveryStatus; 2] = [DeliveryStatus::Queued, DeliveryStatus::Delivered];

    /// The statuses a sender's withdrawal (or a released correction) still reaches.
    pub const OPEN: [DeliveryStatus; 3] = [
        DeliveryStatus::HeldForReview,
        DeliveryStatus::Queued,
        DeliveryStatus::Delivered,
    ];

    /// The status as the contract and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::HeldForReview => "held-for-review",
            DeliveryStatus::RejectedByReview => "rejected-by-review",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Acknowledged => "acknowledged",
            DeliveryStatus::Withdrawn => "withdrawn",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::ExpiredUndecided => "expired-undecided",
        }
    }

    /// The status in words, for people (the console, printed renderings).
    pub fn words(self) -> &'static str {
        match self {
            DeliveryStatus::HeldForReview => "Held for a designated safeguarding lead's review",
            DeliveryStatus::RejectedByReview => "Not released: the lead rejected it",
            DeliveryStatus::Queued => "In the inbox, not yet opened",
            DeliveryStatus::Delivered => "Opened, not yet acknowledged",
            DeliveryStatus::Acknowledged => "Acknowledged",
            DeliveryStatus::Withdrawn => "Withdrawn by the sender",
            DeliveryStatus::Expired => "Expired before it was acknowledged",
            DeliveryStatus::ExpiredUndecided => "Closed: not decided in time",
        }
    }

    /// Parses a stored or wire status; `None` for anything else (the store turns that into
    /// a corruption error, never a default).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether the delivery is in its recipient's inbox now.
    pub fn in_inbox(self) -> bool {
        Self::IN_INBOX.contains(&self)
    }

    /// Whether the delivery is final: no step moves it any more.
    pub fn is_final(self) -> bool {
        !Self::OPEN.contains(&self)
    }
}

impl serde::Serialize for DeliveryStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for DeliveryStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeliveryStatus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status text that names no status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a delivery status")]
pub struct UnknownStatus;

impl std::str::FromStr for DeliveryStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Self::parse(s).ok_or(UnknownStatus)
    }
}

/// What can happen to a delivery after intake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A lead approves a held delivery: it is sealed and enters the inbox.
    Release,
    /// A lead refuses a held delivery.
    Reject,
    /// The recipient fetches it.
    Fetch,
    /// The recipient acknowledges it.
    Acknowledge,
    /// The sender withdraws it (or a released correction supersedes it).
    Withdraw,
    /// Housekeeping: unacknowledged past the recipient's retention, counted from when it
    /// entered the inbox.
    Expire,
    /// Housekeeping: a hold undecided past the configured maximum (never released).
    ExpireUndecided,
}

impl Step {
    /// Every step (for exhaustive tests).
    pub const ALL: [Step; 7] = [
        Step::Release,
        Step::Reject,
        Step::Fetch,
        Step::Acknowledge,
        Step::Withdraw,
        Step::Expire,
        Step::ExpireUndecided,
    ];
}

/// Where a step leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The delivery moves to a new status; the step is audited.
    Moves(DeliveryStatus),
    /// The step is allowed and changes nothing (a second fetch, a repeated ack): nothing is
    /// written.
    Unchanged,
}

/// A step that the delivery's status does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {from} delivery cannot take the step {step:?}")]
pub struct Refusal {
    /// The status it is in.
    pub from: DeliveryStatus,
    /// The step refused.
    pub step: Step,
}

/// Where `step` leads from `from`, or why it cannot be taken.
pub fn next(from: DeliveryStatus, step: Step) -> Result<Outcome, Refusal> {
    use DeliveryStatus as S;
    use Outcome::{Moves, Unchanged};
    match (from, step) {
        (S::HeldForReview, Step::Release) => Ok(Moves(S::Queued)),
        (S::HeldForReview, Step::Reject) => Ok(Moves(S::RejectedByReview)),
        (S::HeldForReview, Step::ExpireUndecided) => Ok(Moves(S::ExpiredUndecided)),
        (S::Queued, Step::Fetch) => Ok(Moves(S::Delivered)),
        (S::Delivered, Step::Fetch) => Ok(Unchanged),
        (S::Queued | S::Delivered, Step::Acknowledge) => Ok(Moves(S::Acknowledged)),
        (S::Acknowledged, Step::Acknowledge) => Ok(Unchanged),
        (S::HeldForReview | S::Queued | S::Delivered, Step::Withdraw) => Ok(Moves(S::Withdrawn)),
        (S::Queued | S::Delivered, Step::Expire) => Ok(Moves(S::Expired)),
        _ => Err(Refusal { from, step }),
    }
}

/// Whether a delivery moving to `to` keeps its ciphertext: only while it is in the inbox.
/// Acknowledgement, withdrawal, expiry and rejection leave nothing readable behind.
pub fn keeps_ciphertext(to: DeliveryStatus) -> bool {
    to.in_inbox()
}

/// The statuses as a SQL list (`'queued', 'delivered'`) for the store's statements and
/// `CHECK` constraints: generated here so the store cannot name a status the enum lacks.
pub fn sql_list(statuses: &[DeliveryStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_refuse_unknown_text() {
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("released"), None);
        assert_eq!(DeliveryStatus::parse(""), None);
    }

    #[test]
    fn final_states_take_no_step_that_moves_them() {
        for from in DeliveryStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for step in Step::ALL {
                assert!(
                    !matches!(next(from, step), Ok(Outcome::Moves(_))),
                    "{from} moved by {step:?}"
                );
            }
        }
    }

    #[test]
    fn only_a_release_puts_a_held_delivery_in_an_inbox() {
        for step in Step::ALL {
            if let Ok(Outcome::Moves(to)) = next(DeliveryStatus::HeldForReview, step) {
                assert_eq!(to.in_inbox(), step == Step::Release, "{step:?}");
            }
        }
    }

    #[test]
    fn ciphertext_lives_only_in_the_inbox() {
        for from in DeliveryStatus::ALL {
            for step in Step::ALL {
                if let Ok(Outcome::Moves(to)) = next(from, step) {
                    assert_eq!(keeps_ciphertext(to), to.in_inbox());
                }
            }
        }
        assert_eq!(sql_list(&DeliveryStatus::IN_INBOX), "'queued', 'delivered'");
    }
}
