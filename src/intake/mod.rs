//! The decision for one referral: does the sender's certificate match `iss`, is it for this
//! gateway and fresh, which recipients does an information sharing agreement allow, on
//! which lawful basis, and is each disclosure delivered now or held for the sender's
//! designated safeguarding lead. Pure: no I/O, no crypto, no HTTP.
//!
//! Replay (`jti`) is checked by the store in the acceptance transaction, where it is atomic.

pub mod claims;

use crate::config::Config;
use crate::config::agreements::{Agreement, Condition, Review};
use crate::config::partners::Sector;
use crate::identity::{PartnerId, Principal};
use crate::schema::Violation;

pub use claims::{Claims, ConsentStatus, Override, parse};

/// Why a referral was refused. Each maps to one problem type; none carries payload values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
    #[error("\"aud\" is not this gateway")]
    WrongAudience,
    /// `iat` is outside the allowed clock skew.
    #[error("\"iat\" is outside the allowed clock skew")]
    StaleIat,
    /// A named recipient is not covered by an agreement for this sender and type.
    #[error("no information sharing agreement allows this referral to {0}")]
    NoAgreement(String),
    /// No recipient was named and no agreement routes this type by default.
    #[error("no recipient named and no agreement routes this referral type by default")]
    NoRoute,
    /// The lawful basis is not one the agreement allows.
    #[error("the agreement with {0} does not allow the stated lawful basis")]
    LawfulBasis(String),
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
            IntakeError::WrongAudience => "wrong-audience",
            IntakeError::StaleIat => "stale-iat",
            IntakeError::NoAgreement(_) => "no-agreement",
            IntakeError::NoRoute => "no-route",
            IntakeError::LawfulBasis(_) => "lawful-basis-not-agreed",
            IntakeError::ProfessionalOnly(_) => "professional-referrals-only",
            IntakeError::ConsentRequired(_) => "consent-required",
            IntakeError::UnknownSuperseded => "unknown-superseded",
            IntakeError::Replay => "replay",
        }
    }
}

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
    pub agreement: String,
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

/// Decides a parsed referral from `sender` at `now` (Unix seconds).
pub fn decide(
    claims: &Claims,
    sender: &Principal,
    config: &Config,
    now: u64,
) -> Result<Decision, IntakeError> {
    if claims.iss != sender.partner {
        return Err(IntakeError::IssuerMismatch);
    }
    if claims.aud != config.settings.gateway_id {
        return Err(IntakeError::WrongAudience);
    }
    let skew = config.settings.limits.iat_skew.as_secs();
    if claims.iat.abs_diff(now) > skew {
        return Err(IntakeError::StaleIat);
    }
    let r = &claims.referral;
    let covering = |recipient: &PartnerId| {
        config.agreements.iter().find(|a| {
            a.sender == sender.partner
                && a.recipient == *recipient
                && a.types.contains(&r.referral_type)
        })
    };
    let agreements: Vec<&Agreement> = match &r.to {
        Some(to) => to
            .iter()
            .map(|recipient| {
                covering(recipient).ok_or_else(|| IntakeError::NoAgreement(recipient.to_string()))
            })
            .collect::<Result<_, _>>()?,
        None => {
            let routed: Vec<&Agreement> = config
                .agreements
                .iter()
                .filter(|a| {
                    a.sender == sender.partner
                        && a.route_by_default
                        && a.types.contains(&r.referral_type)
                })
                .collect();
            if routed.is_empty() {
                return Err(IntakeError::NoRoute);
            }
            routed
        }
    };
    let sender_sector = config.partners.get(&sender.partner).map(|p| p.sector);
    let mut routes = Vec::with_capacity(agreements.len());
    for a in agreements {
        let who = a.recipient.to_string();
        let lb = &r.lawful_basis;
        let basis_ok = a.article6.contains(&lb.article6)
            && a.article9.contains(&lb.article9)
            && lb
                .dpa2018_schedule1
                .as_ref()
                .is_none_or(|s| a.schedule1.contains(s));
        if !basis_ok {
            return Err(IntakeError::LawfulBasis(who));
        }
        if a.has(Condition::ProfessionalReferralsOnly) && sender_sector != Some(Sector::Statutory) {
            return Err(IntakeError::ProfessionalOnly(who));
        }
        let overridden = r.consent.status != ConsentStatus::Given;
        if a.has(Condition::ConsentRequired) && overridden {
            return Err(IntakeError::ConsentRequired(who));
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
