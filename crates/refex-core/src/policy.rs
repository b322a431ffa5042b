//! Who may do what: one table from each [`Permission`] to the principals it is granted to,
//! and one pure function that decides. Every API route and console page declares its
//! permission in the route table (`api::routes::ROUTES`); a router layer asks [`decide`]
//! before the handler runs, and the OpenAPI document prints the same grant. Nothing else
//! decides who may act; the core modules only scope what they answer to the caller's own
//! organisation (another partner's id is `404`) and apply four eyes.
//!
//! The rules, stated once:
//! - A partner's **systems** act as the organisation: submit, status, withdraw, inbox, fetch,
//!   acknowledge. A **person** does so only with the `practitioner` role, granted explicitly
//!   in the partner file; no other role implies it.
//! - **Designated safeguarding leads** review their organisation's held referrals and read
//!   its disclosure records and outbound history.
//! - **Auditors** and **data protection officers** read disclosure records, answer subject
//!   access and read the audit trail's proofs; they never act as the organisation.
//! - **Commissioners** are people with the `commissioner` role: they receive anonymised
//!   aggregates and nothing else. A commissioner organisation's *system* certificate gets no
//!   aggregates (they are read by people); like any system it may act for its organisation,
//!   which, with no agreements, can send and receive nothing.
//! - Public documents (JWKS, OpenAPI) are served to any verified certificate, mapped or not.

use crate::identity::{Actor, Custody, Principal, Role};

/// Everything a principal can ask to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// The gateway's public documents (JWKS, OpenAPI).
    ReadPublicDocuments,
    /// Which principal a certificate maps to; the console's stylesheet.
    Identify,
    /// Submit a referral for the organisation.
    SubmitReferral,
    /// Read the status of one of the organisation's referrals.
    ReadReferralStatus,
    /// Withdraw one of the organisation's referrals.
    WithdrawReferral,
    /// List the organisation's inbox.
    ReadInbox,
    /// Fetch a delivery from the inbox (marks it delivered).
    FetchDelivery,
    /// Acknowledge a delivery (deletes its ciphertext).
    AcknowledgeDelivery,
    /// See the organisation's held referrals and their previews.
    ReviewReferrals,
    /// Decide a held referral.
    DecideReview,
    /// Read a disclosure record of one of the organisation's referrals.
    ReadDisclosureRecord,
    /// Read the organisation's outbound history.
    ReadSentHistory,
    /// Ask which disclosures concerned a person.
    SubjectAccess,
    /// Read audit checkpoints and proofs.
    ReadAuditProofs,
    /// Receive anonymised aggregate reports.
    ReadAggregates,
    /// Read the organisation's deliveries in the console, decrypted by the gateway with the
    /// keys it holds for a hosted organisation.
    ReadHostedInbox,
    /// Compose a referral in the console, signed by the gateway with a hosted
    /// organisation's key.
    ComposeReferral,
}

impl Permission {
    /// Every permission (for the matrix test and the documentation).
    pub const ALL: [Permission; 17] = [
        Permission::ReadPublicDocuments,
        Permission::Identify,
        Permission::SubmitReferral,
        Permission::ReadReferralStatus,
        Permission::WithdrawReferral,
        Permission::ReadInbox,
        Permission::FetchDelivery,
        Permission::AcknowledgeDelivery,
        Permission::ReviewReferrals,
        Permission::DecideReview,
        Permission::ReadDisclosureRecord,
        Permission::ReadSentHistory,
        Permission::SubjectAccess,
        Permission::ReadAuditProofs,
        Permission::ReadAggregates,
        Permission::ReadHostedInbox,
        Permission::ComposeReferral,
    ];

    /// The permission's name (in problems and the OpenAPI document).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadPublicDocuments => "read-public-documents",
            Permission::Identify => "identify",
            Permission::SubmitReferral => "submit-referral",
            Permission::ReadReferralStatus => "read-referral-status",
            Permission::WithdrawReferral => "withdraw-referral",
            Permission::ReadInbox => "read-inbox",
            Permission::FetchDelivery => "fetch-delivery",
            Permission::AcknowledgeDelivery => "acknowledge-delivery",
            Permission::ReviewReferrals => "review-referrals",
            Permission::DecideReview => "decide-review",
            Permission::ReadDisclosureRecord => "read-disclosure-record",
            Permission::ReadSentHistory => "read-sent-history",
            Permission::SubjectAccess => "subject-access",
            Permission::ReadAuditProofs => "read-audit-proofs",
            Permission::ReadAggregates => "read-aggregates",
            Permission::ReadHostedInbox => "read-hosted-inbox",
            Permission::ComposeReferral => "compose-referral",
        }
    }
}

/// To whom a permission is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Any verified client certificate, mapped to a principal or not.
    AnyCertificate,
    /// Any mapped principal.
    AnyPrincipal,
    /// The organisation's systems, and people holding one of `roles`.
    SystemsAndRoles(&'static [Role]),
    /// People holding one of `roles` (never a system).
    Roles(&'static [Role]),
    /// People holding one of `roles` in an organisation whose keys the gateway holds.
    HostedRoles(&'static [Role]),
}

/// Acting for the organisation as its case system does.
const ACTS_FOR_ORGANISATION: Grant = Grant::SystemsAndRoles(&[Role::Practitioner]);

/// The policy table.
pub const fn grant(p: Permission) -> Grant {
    use Permission::*;
    use Role::*;
    match p {
        ReadPublicDocuments => Grant::AnyCertificate,
        Identify => Grant::AnyPrincipal,
        SubmitReferral | ReadReferralStatus | WithdrawReferral | ReadInbox | FetchDelivery
        | AcknowledgeDelivery => ACTS_FOR_ORGANISATION,
        ReviewReferrals | DecideReview => Grant::Roles(&[DesignatedSafeguardingLead]),
        ReadDisclosureRecord => {
            Grant::Roles(&[DesignatedSafeguardingLead, Auditor, DataProtectionOfficer])
        }
        ReadSentHistory => Grant::Roles(&[
            DesignatedSafeguardingLead,
            Auditor,
            DataProtectionOfficer,
            Practitioner,
        ]),
        SubjectAccess | ReadAuditProofs => Grant::Roles(&[DataProtectionOfficer, Auditor]),
        ReadAggregates => Grant::Roles(&[Commissioner]),
        ReadHostedInbox | ComposeReferral => Grant::HostedRoles(&[Practitioner]),
    }
}

impl Grant {
    /// The grant in words (problems, the OpenAPI document, the console).
    pub fn describe(self) -> String {
        let roles = |r: &[Role]| {
            r.iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        match self {
            Grant::AnyCertificate => "any verified client certificate".into(),
            Grant::AnyPrincipal => "a registered partner system or person".into(),
            Grant::SystemsAndRoles(r) => {
                format!(
                    "the organisation's systems, or a person with role {}",
                    roles(r)
                )
            }
            Grant::Roles(r) => format!("a person with role {}", roles(r)),
            Grant::HostedRoles(r) => format!(
                "a person with role {} in an organisation whose keys the gateway holds (hosted = true)",
                roles(r)
            ),
        }
    }
}

/// Why a principal may not do something.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The certificate maps to no principal.
    #[error("certificate is not registered to any partner")]
    UnknownPrincipal,
    /// The principal lacks the grant.
    #[error("{permission} is for {needs}")]
    NotGranted {
        /// What was asked.
        permission: &'static str,
        /// Who it is granted to, in words.
        needs: String,
    },
}

/// Whether `principal` (none: a verified certificate that maps to no one) may do
/// `permission`. Pure.
pub fn decide(principal: Option<&Principal>, permission: Permission) -> Result<(), Denied> {
    let g = grant(permission);
    let allowed = match (g, principal) {
        (Grant::AnyCertificate, _) => true,
        (_, None) => return Err(Denied::UnknownPrincipal),
        (Grant::AnyPrincipal, Some(_)) => true,
        (Grant::SystemsAndRoles(roles), Some(p)) => match &p.actor {
            Actor::System(_) => true,
            Actor::Person { roles: held, .. } => roles.iter().any(|r| held.contains(r)),
        },
        (Grant::Roles(roles), Some(p)) => match &p.actor {
            Actor::System(_) => false,
            Actor::Person { roles: held, .. } => roles.iter().any(|r| held.contains(r)),
        },
        (Grant::HostedRoles(roles), Some(p)) => match &p.actor {
            Actor::System(_) => false,
            Actor::Person { roles: held, .. } => {
                p.custody == Custody::Gateway && roles.iter().any(|r| held.contains(r))
            }
        },
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied::NotGranted {
            permission: permission.as_str(),
            needs: g.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Fingerprint;

    fn person(roles: &[Role]) -> Principal {
        Principal {
            partner: "p".parse().unwrap(),
            actor: Actor::Person {
                id: "x".parse().unwrap(),
                roles: roles.to_vec(),
            },
            fingerprint: Fingerprint::of_der(b"x"),
            custody: Default::default(),
        }
    }

    #[test]
    fn auditors_dpos_and_commissioners_never_act_as_the_organisation() {
        for role in [
            Role::Auditor,
            Role::DataProtectionOfficer,
            Role::Commissioner,
            Role::DesignatedSafeguardingLead,
        ] {
            for p in [
                Permission::SubmitReferral,
                Permission::ReadInbox,
                Permission::FetchDelivery,
                Permission::AcknowledgeDelivery,
                Permission::WithdrawReferral,
            ] {
                assert!(decide(Some(&person(&[role])), p).is_err(), "{role:?} {p:?}");
            }
        }
        assert!(
            decide(
                Some(&person(&[Role::Practitioner])),
                Permission::SubmitReferral
            )
            .is_ok()
        );
    }

    #[test]
    fn systems_never_hold_personal_roles() {
        let system = Principal {
            partner: "mopac".parse().unwrap(),
            actor: Actor::System("case-system".parse().unwrap()),
            fingerprint: Fingerprint::of_der(b"s"),
            custody: Default::default(),
        };
        for p in [
            Permission::ReadAggregates,
            Permission::DecideReview,
            Permission::SubjectAccess,
        ] {
            assert!(decide(Some(&system), p).is_err(), "{p:?}");
        }
        assert!(decide(Some(&system), Permission::SubmitReferral).is_ok());
        assert_eq!(
            decide(None, Permission::Identify),
            Err(Denied::UnknownPrincipal)
        );
        assert!(decide(None, Permission::ReadPublicDocuments).is_ok());
    }
}
