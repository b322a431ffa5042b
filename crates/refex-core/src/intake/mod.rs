//! The decision for one referral: does the sender's certificate match `iss`, is it for this
//! gateway and fresh, which recipients does an information sharing agreement allow, on
//! which lawful basis, and is each disclosure delivered now or held for the sender's
//! designated safeguarding lead. Pure: no I/O, no crypto, no HTTP.
//!
//! Replay (`jti`) is checked by the store in the acceptance transaction, where it is atomic.
//!
//! What a referral claims is read strictly by `claims`, over the strict JSON reader `json`
//! (duplicate keys refused). The decision reads the configuration through [`Rules`], a
//! borrowed view the gateway takes of its snapshot (or a test builds in memory).

pub mod claims;
pub mod json;

use std::collections::BTreeMap;

use crate::agreements::{Agreement, Condition, Review};
use crate::identity::{AgreementId, PartnerId, Principal};
use crate::partners::{Partner, Sector};
use crate::schema::Violation;

/// What the intake decision reads of the configuration in force.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// This gateway's id (`aud` must be it).
    pub gateway_id: &'a str,
    /// How far `iat` may be from the gateway's time, in seconds.
    pub iat_skew_seconds: u64,
    /// The partners, by id.
    pub partners: &'a BTreeMap<PartnerId, Partner>,
    /// The information sharing agreements.
    pub agreements: &'a [Agreement],
}

/// Why a referral was refused. Each maps to one problem type; none carries payload values.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntakeError {
    /// The signed payload is not a JSON object of the right shape.
    #[error("the signed payload is not valid JSON claims")]
    Malformed,
    /// Schema or rule violations, each by pointer.
    #[error("the referral is invalid ({} violations)", .0.len())]
    Invalid(Vec<Violation>),
    /// `iss` is not the partner the certificate identifies.
    #[error("\"iss\" does not match the client certificate's partner")]
    IssuerMismatch,
    /// `aud` is not this gateway.
    #[error("\"aud\" is not this gateway: it must be {0:?}")]
    WrongAudience(String),
    /// `iat` is outside the allowed clock skew.
    #[error(
        "\"iat\" ({iat}) is {} seconds from the gateway's time ({now}, Unix seconds); at most {skew} seconds are allowed: sign with the current time, and check the sending system's clock",
        .iat.abs_diff(*.now)
    )]
    StaleIat {
        /// What the claims said.
        iat: u64,
        /// The gateway's time.
        now: u64,
        /// The allowed skew in seconds.
        skew: u64,
    },
    /// A named recipient is not a partner of this gateway at all (a misspelt id).
    #[error(
        "no partner {0:?} is registered with this gateway: check the recipient's id (partners are named by their id, such as notts-police)"
    )]
    UnknownRecipient(String),
    /// A named recipient is not covered by an agreement for this sender and type.
    #[error(
        "no information sharing agreement allows this referral type to {recipient}; your agreements for it cover: {covered}"
    )]
    NoAgreement {
        /// The recipient named.
        recipient: String,
        /// The recipients the sender's agreements for the type do cover (or "none").
        covered: String,
    },
    /// No recipient was named and no agreement routes this type by default.
    #[error("no recipient named and no agreement routes this referral type by default")]
    NoRoute,
    /// The lawful basis is not one the agreement allows.
    #[error(
        "the agreement with {recipient} does not allow the stated lawful basis; it accepts {allowed}"
    )]
    LawfulBasis {
        /// The recipient.
        recipient: String,
        /// The combinations it accepts, in words.
        allowed: String,
    },
    /// The recipient accepts referrals from statutory partners only.
    #[error("{0} accepts referrals from professionals (statutory partners) only")]
    ProfessionalOnly(String),
    /// The agreement needs consent and none was given.
    #[error("the agreement with {0} requires the person's consent; overrides are not accepted")]
    ConsentRequired(String),
    /// `supersedes` names no referral of this sender's.
    #[error("\"supersedes\" does not name one of your referrals")]
    UnknownSuperseded,
    /// This `jti` was seen from this sender before.
    #[error("this \"jti\" has been used before")]
    Replay,
}

impl IntakeError {
    /// The stable slug of the problem type and of the `rejected` audit event.
    pub fn slug(&self) -> &'static str {
        match self {
            IntakeError::Malformed => "malformed-claims",
            IntakeError::Invalid(_) => "invalid-referral",
            IntakeError::IssuerMismatch => "issuer-mismatch",
            IntakeError::WrongAudience(_) => "wrong-audience",
            IntakeError::StaleIat { .. } => "stale-iat",
            IntakeError::UnknownRecipient(_) => "unknown-recipient",
            IntakeError::NoAgreement { .. } => "no-agreement",
            IntakeError::NoRoute => "no-route",
            IntakeError::LawfulBasis { .. } => "lawful-basis-not-agreed",
            IntakeError::ProfessionalOnly(_) => "professional-referrals-only",
            IntakeError::ConsentRequired(_) => "consent-required",
            IntakeError::UnknownSuperseded => "unknown-superseded",
            IntakeError::Replay => "replay",
        }
    }
}

pub use claims::{Claims, ConsentStatus, Override, check_content, parse, read};

/// Why a disclosure waits for a safeguarding lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// Consent was not given and an override is relied on.
    ConsentOverride(Override),
    /// The agreement says every disclosure is reviewed.
    AgreementRequiresReview,
}

/// What happens to one recipient's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Minimise, seal and queue now.
    Deliver,
    /// Hold for the sender's designated safeguarding lead.
    Hold(HoldReason),
}

/// One recipient, the agreement that allows it, and what happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The recipient.
    pub recipient: PartnerId,
    /// The agreement's id (for the audit trail).
    pub agreement: AgreementId,
    /// Deliver or hold.
    pub disposition: Disposition,
}

/// The decision for an acceptable referral.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// One route per recipient, in the order named (or agreement order when routed).
    pub routes: Vec<Route>,
}

impl Decision {
    /// Whether any recipient's copy is held.
    pub fn any_held(&self) -> bool {
        self.routes
            .iter()
            .any(|r| matches!(r.disposition, Disposition::Hold(_)))
    }
}

/// Decides a parsed referral from `sender` at `now` (Unix seconds): is it from the partner
/// the certificate names, for this gateway and fresh ([`check_fresh`]), and which recipients
/// may have it, how ([`authorise`]).
pub fn decide(
    claims: &Claims,
    sender: &Principal,
    rules: &Rules<'_>,
    now: u64,
) -> Result<Decision, IntakeError> {
    check_fresh(claims, sender, rules, now)?;
    authorise(claims, &sender.partner, rules, Recipients::AsClaimed)
}

/// The envelope-level checks that hold at the moment of submission only: `iss` is the
/// certificate's partner, `aud` this gateway, `iat` within the allowed skew.
pub fn check_fresh(
    claims: &Claims,
    sender: &Principal,
    rules: &Rules<'_>,
    now: u64,
) -> Result<(), IntakeError> {
    if claims.iss != sender.partner {
        return Err(IntakeError::IssuerMismatch);
    }
    if claims.aud != rules.gateway_id {
        return Err(IntakeError::WrongAudience(rules.gateway_id.to_owned()));
    }
    let skew = rules.iat_skew_seconds;
    if claims.iat.abs_diff(now) > skew {
        return Err(IntakeError::StaleIat {
            iat: claims.iat,
            now,
            skew,
        });
    }
    Ok(())
}

/// Why `recipient` is not covered: not a partner at all, or no agreement for this type (with
/// the recipients the sender's agreements for the type do cover).
pub fn refused(
    rules: &Rules<'_>,
    sender: &PartnerId,
    ty: &crate::identity::ReferralType,
    recipient: &PartnerId,
) -> IntakeError {
    if !rules.partners.contains_key(recipient) {
        return IntakeError::UnknownRecipient(recipient.to_string());
    }
    let mut covered: Vec<&str> = rules
        .agreements
        .iter()
        .filter(|a| a.sender == *sender && a.types.contains(ty))
        .map(|a| a.recipient.as_str())
        .collect();
    covered.sort_unstable();
    covered.dedup();
    IntakeError::NoAgreement {
        recipient: recipient.to_string(),
        covered: if covered.is_empty() {
            "none".into()
        } else {
            covered.join(", ")
        },
    }
}

/// Which recipients [`authorise`] decides for.
#[derive(Clone, Copy, Debug)]
pub enum Recipients<'a> {
    /// Those the referral names, or the default routes when it names none (intake).
    AsClaimed,
    /// Exactly these (a lead releasing held deliveries).
    Only(&'a [PartnerId]),
}

/// Which recipients an information sharing agreement in `rules` lets `sender` give this
/// referral to, on its lawful basis and conditions, and whether each copy is delivered now or
/// held. The rule that every step after intake applies again: a lead's release calls it with
/// the rules in force at the release.
pub fn authorise(
    claims: &Claims,
    sender: &PartnerId,
    rules: &Rules<'_>,
    recipients: Recipients<'_>,
) -> Result<Decision, IntakeError> {
    let r = &claims.referral;
    let covering = |recipient: &PartnerId| {
        rules.agreements.iter().find(|a| {
            a.sender == *sender && a.recipient == *recipient && a.types.contains(&r.referral_type)
        })
    };
    let named = match recipients {
        Recipients::Only(only) => Some(only),
        Recipients::AsClaimed => r.to.as_deref(),
    };
    let agreements: Vec<&Agreement> = match named {
        Some(to) => to
            .iter()
            .map(|recipient| {
                covering(recipient)
                    .ok_or_else(|| refused(rules, sender, &r.referral_type, recipient))
            })
            .collect::<Result<_, _>>()?,
        None => {
            let routed: Vec<&Agreement> = rules
                .agreements
                .iter()
                .filter(|a| {
                    a.sender == *sender && a.route_by_default && a.types.contains(&r.referral_type)
                })
                .collect();
            if routed.is_empty() {
                return Err(IntakeError::NoRoute);
            }
            routed
        }
    };
    let sender_sector = rules.partners.get(sender).map(|p| p.sector);
    let mut routes = Vec::with_capacity(agreements.len());
    for a in agreements {
        let who = a.recipient.to_string();
        // The agreement's conditions first: they say more than the basis would (a
        // consent-required agreement refuses an override, whatever basis it states).
        let overridden = r.consent.status != ConsentStatus::Given;
        if a.has(Condition::ConsentRequired) && overridden {
            return Err(IntakeError::ConsentRequired(who));
        }
        if a.has(Condition::ProfessionalReferralsOnly) && sender_sector != Some(Sector::Statutory) {
            return Err(IntakeError::ProfessionalOnly(who));
        }
        if !a.admits(&r.lawful_basis) {
            return Err(IntakeError::LawfulBasis {
                recipient: who,
                allowed: a.describe_bases(),
            });
        }
        let disposition = match (r.consent.override_, a.review) {
            (Some(o), _) if overridden => Disposition::Hold(HoldReason::ConsentOverride(o)),
            (_, Review::Always) => Disposition::Hold(HoldReason::AgreementRequiresReview),
            _ => Disposition::Deliver,
        };
        routes.push(Route {
            recipient: a.recipient.clone(),
            agreement: a.id.clone(),
            disposition,
        });
    }
    Ok(Decision { routes })
}
