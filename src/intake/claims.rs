//! The signed claims of a referral, parsed: first checked against the embedded claims schema
//! (so every structural fault is listed at once), then its payload against the type's
//! schema, then turned into typed values that cannot be invalid.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use crate::identity::{PartnerId, ReferralType};
use crate::lawful::Article6;
use crate::schema::{Compiled, SchemaSet, Violation, validate};

use super::IntakeError;

/// Referral claims as the sender signed them.
#[derive(Clone, Debug, Deserialize)]
pub struct Claims {
    /// The sending partner.
    pub iss: PartnerId,
    /// The gateway id.
    pub aud: String,
    /// Unique per sender: replay protection.
    pub jti: String,
    /// Issued-at, Unix seconds.
    pub iat: u64,
    /// The referral.
    pub referral: ReferralBody,
}

/// The referral inside the claims.
#[derive(Clone, Debug, Deserialize)]
pub struct ReferralBody {
    /// Its type.
    #[serde(rename = "type")]
    pub referral_type: ReferralType,
    /// Named recipients; routing rules choose when absent.
    #[serde(default)]
    pub to: Option<Vec<PartnerId>>,
    /// The sender's own reference.
    pub sender_ref: String,
    /// The lawful basis relied on.
    pub lawful_basis: LawfulBasis,
    /// Consent and any override.
    pub consent: Consent,
    /// Whether the person was told.
    pub subject_informed: SubjectInformed,
    /// Court order reference, required for `court-order` overrides.
    #[serde(default)]
    pub court_order_ref: Option<String>,
    /// An earlier referral of the sender's that this one corrects.
    #[serde(default)]
    pub supersedes: Option<String>,
    /// The referral's content, validated against `schemas/types/<type>.json`.
    pub payload: Value,
}

/// Lawful basis as stated by the sender.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct LawfulBasis {
    /// Article 6 basis.
    pub article6: Article6,
    /// Article 9 condition.
    pub article9: String,
    /// DPA 2018 Schedule 1 condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpa2018_schedule1: Option<String>,
}

/// Consent state.
#[derive(Clone, Debug, Deserialize)]
pub struct Consent {
    /// Whether consent was given.
    pub status: ConsentStatus,
    /// The override relied on when it was not.
    #[serde(default, rename = "override")]
    pub override_: Option<Override>,
    /// Why the override applies (readable only by leads and auditors; never delivered).
    #[serde(default)]
    pub justification: Option<String>,
}

/// `consent.status`.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    /// Consent given.
    Given,
    /// Consent refused.
    Refused,
    /// Not asked.
    NotSought,
    /// Given, then withdrawn.
    Withdrawn,
}

/// `consent.override`.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Override {
    /// Risk of significant harm.
    RiskOfSignificantHarm,
    /// Prevention or detection of crime.
    PreventionOrDetectionOfCrime,
    /// A court order.
    CourtOrder,
    /// The person is unable to consent.
    UnableToConsent,
}

/// `subject_informed`.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct SubjectInformed {
    /// Whether the person was told.
    pub status: InformedStatus,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `subject_informed.status`.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InformedStatus {
    /// Told.
    Yes,
    /// Not told (a reason is required).
    No,
    /// Not told yet.
    NotYet,
}

/// The embedded claims schema, compiled once. It ships inside the binary and a unit test
/// compiles it, so failing here is a build defect, not a runtime condition.
fn claims_schema() -> &'static Compiled {
    static SCHEMA: OnceLock<Compiled> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let source: Value = serde_json::from_str(include_str!("claims.schema.json"))
            .unwrap_or_else(|e| panic!("embedded claims schema is not JSON: {e}"));
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&source)
            .unwrap_or_else(|e| panic!("embedded claims schema does not compile: {e}"));
        Compiled {
            source: Arc::new(source),
            validator: Arc::new(validator),
        }
    })
}

/// Parses and validates claims; every violation (structure, payload, and the rules that tie
/// fields together) is reported in one `422`.
pub fn parse(bytes: &[u8], schemas: &SchemaSet) -> Result<Claims, IntakeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| IntakeError::Malformed)?;
    let mut violations: Vec<Violation> = validate(claims_schema(), &value, "")
        .into_iter()
        .map(|mut v| {
            if let Some(rest) = v.pointer.strip_prefix("/referral") {
                v.pointer = rest.to_owned();
            }
            v
        })
        .collect();
    if !violations.is_empty() {
        return Err(IntakeError::Invalid(violations));
    }
    let claims: Claims = serde_json::from_value(value).map_err(|_| IntakeError::Malformed)?;
    let r = &claims.referral;
    match schemas.referral_type(&r.referral_type) {
        Some(schema) => violations.extend(validate(schema, &r.payload, "/payload")),
        None => violations.push(rule(
            "/type",
            "enum",
            "is not a referral type this gateway knows",
        )),
    }
    violations.extend(rule_violations(r));
    if violations.is_empty() {
        Ok(claims)
    } else {
        Err(IntakeError::Invalid(violations))
    }
}

fn rule(pointer: &str, keyword: &str, message: &str) -> Violation {
    Violation {
        pointer: pointer.into(),
        keyword: keyword.into(),
        message: message.into(),
    }
}

/// domain.md's rules that tie fields together.
fn rule_violations(r: &ReferralBody) -> Vec<Violation> {
    let mut out = Vec::new();
    let c = &r.consent;
    match (c.status, c.override_) {
        (ConsentStatus::Given, Some(_)) => out.push(rule(
            "/consent/override",
            "consent",
            "must be absent when consent is given",
        )),
        (ConsentStatus::Given, None) => {}
        (_, None) => out.push(rule(
            "/consent/override",
            "consent",
            "is required when consent is not given",
        )),
        (_, Some(_)) => {
            if c.justification.is_none() {
                out.push(rule(
                    "/consent/justification",
                    "consent",
                    "is required with an override",
                ));
            }
        }
    }
    if c.override_ == Some(Override::CourtOrder) && r.court_order_ref.is_none() {
        out.push(rule(
            "/court_order_ref",
            "consent",
            "is required with a court-order override",
        ));
    }
    let s = &r.subject_informed;
    if s.status == InformedStatus::No && s.reason.is_none() {
        out.push(rule(
            "/subject_informed/reason",
            "subject_informed",
            "is required when the person was not told",
        ));
    }
    if s.status != InformedStatus::No && s.reason.is_some() {
        out.push(rule(
            "/subject_informed/reason",
            "subject_informed",
            "is only given when the person was not told",
        ));
    }
    out
}
