//! `partners/agreements.toml`: the information sharing agreements. Each says who may send
//! which referral types to whom, on which lawful bases, and when a disclosure is held for
//! the sender's designated safeguarding lead. No agreement, no sharing; it is also the
//! routing table.

use serde::Deserialize;

use crate::identity::{AgreementId, PartnerId, ReferralType};
use crate::lawful::{AcceptedBasis, AcceptedBasisFile, LawfulBasis};

/// The agreements file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementsFile {
    /// The agreements.
    #[serde(default, rename = "agreement")]
    pub agreements: Vec<Agreement>,
}

/// One information sharing agreement between a sender and a recipient.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// A stable id for audit records, e.g. `isa-police-imara-csa`.
    pub id: AgreementId,
    /// Why the sharing happens, in the words the data protection officer signed.
    pub purpose: String,
    /// The partner that discloses.
    pub sender: PartnerId,
    /// The partner that receives.
    pub recipient: PartnerId,
    /// Referral types covered.
    pub types: Vec<ReferralType>,
    /// The lawful-basis combinations the sender may rely on, one `[[agreement.basis]]` each
    /// (the loader refuses a combination that is not law, naming it).
    #[serde(rename = "basis")]
    pub basis_file: Vec<AcceptedBasisFile>,
    /// [`Agreement::basis_file`] read and checked by the loader.
    #[serde(skip)]
    pub basis: Vec<AcceptedBasis>,
    /// When a disclosure is held for review.
    pub review: Review,
    /// Extra conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Whether, when a referral names no recipient, this agreement routes it to its
    /// recipient (default: no; routing is opt-in so an omitted `to` never over-shares).
    #[serde(default)]
    pub route_by_default: bool,
}

/// When a disclosure under an agreement waits for the sender's safeguarding lead.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Review {
    /// Held only when consent is overridden.
    OnOverride,
    /// Always held.
    Always,
    /// Never held (only for `consent-required` agreements, where no override is possible).
    Never,
}

/// Conditions an agreement may carry.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The recipient accepts referrals from statutory partners only.
    ProfessionalReferralsOnly,
    /// Only `consent.status: given` is accepted; overrides are refused, never held.
    ConsentRequired,
}

impl Agreement {
    /// Whether the agreement carries `condition`.
    pub fn has(&self, condition: Condition) -> bool {
        self.conditions.contains(&condition)
    }

    /// Whether one of its combinations admits `basis`.
    pub fn admits(&self, basis: &LawfulBasis) -> bool {
        self.basis.iter().any(|b| b.admits(basis))
    }

    /// Its combinations in words (for a refusal that says what would be accepted).
    pub fn describe_bases(&self) -> String {
        self.basis
            .iter()
            .map(AcceptedBasis::describe)
            .collect::<Vec<_>>()
            .join("; or ")
    }
}
