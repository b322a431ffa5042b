//! The signed claims of a referral, parsed: first checked against the embedded claims schema
//! (so every structural fault is listed at once), then its payload against the type's
//! schema, then turned into typed values that cannot be invalid.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use crate::identity::{PartnerId, ReferralType};
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
    pub jti: crate::ids::Jti,
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
    pub supersedes: Option<crate::ids::ReferralId>,
    /// The referral's content, validated against `schemas/types/<type>.json`.
    pub payload: Value,
}

pub use crate::lawful::LawfulBasis;

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
#[derive(
    Clone, Copy, Debug, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq, Hash,
)]
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

impl ConsentStatus {
    /// Every status.
    pub const ALL: [ConsentStatus; 4] = [
        ConsentStatus::Given,
        ConsentStatus::Refused,
        ConsentStatus::NotSought,
        ConsentStatus::Withdrawn,
    ];

    /// As the wire and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Given => "given",
            ConsentStatus::Refused => "refused",
            ConsentStatus::NotSought => "not-sought",
            ConsentStatus::Withdrawn => "withdrawn",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// `consent.override`.
#[derive(
    Clone, Copy, Debug, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq,
)]
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

impl Override {
    /// Every override.
    pub const ALL: [Override; 4] = [
        Override::RiskOfSignificantHarm,
        Override::PreventionOrDetectionOfCrime,
        Override::CourtOrder,
        Override::UnableToConsent,
    ];

    /// As the wire and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Override::RiskOfSignificantHarm => "risk-of-significant-harm",
            Override::PreventionOrDetectionOfCrime => "prevention-or-detection-of-crime",
            Override::CourtOrder => "court-order",
            Override::UnableToConsent => "unable-to-consent",
        }
    }

    /// Parses a stored override.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// `subject_informed`.
#[derive(Clone, Debug, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq)]
pub struct SubjectInformed {
    /// Whether the person was told.
    pub status: InformedStatus,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SubjectInformed {
    /// The status as the wire spells it.
    pub fn status_str(&self) -> &'static str {
        match self.status {
            InformedStatus::Yes => "yes",
            InformedStatus::No => "no",
            InformedStatus::NotYet => "not-yet",
        }
    }
}

/// `subject_informed.status`.
#[derive(
    Clone, Copy, Debug, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq,
)]
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
            version: crate::schema::version_of(include_bytes!("claims.schema.json")),
            order: Default::default(),
        }
    })
}

/// Reads claims: the one strict JSON reading (a repeated member is refused, naming it), the
/// embedded claims schema (every structural fault listed at once), then typed values. The
/// payload is not checked against its type's schema here (see [`check_content`]); a held referral
/// is read back with this same function at review.
pub fn read(bytes: &[u8]) -> Result<Claims, IntakeError> {
    read_value(read_json(bytes)?)
}

/// The strict JSON reading of [`read`] on its own, as an intake error: what a caller that
/// also needs the raw document (intake's retry identity) parses once.
pub fn read_json(bytes: &[u8]) -> Result<Value, IntakeError> {
    match super::json::parse_strict(bytes) {
        Ok(v) => Ok(v),
        Err(super::json::StrictJsonError::Syntax) => Err(IntakeError::Malformed),
        Err(super::json::StrictJsonError::Duplicate { pointer }) => {
            Err(IntakeError::Invalid(vec![rule(
                referral_relative(&pointer),
                "duplicate-member",
                "appears more than once in its object; send each member once",
            )]))
        }
    }
}

/// The rest of [`read`], on a document [`read_json`] returned: the claims schema, then
/// typed values.
pub fn read_value(value: Value) -> Result<Claims, IntakeError> {
    let violations: Vec<Violation> = validate(claims_schema(), &value, "")
        .into_iter()
        .map(|mut v| {
            v.pointer = referral_relative(&v.pointer).to_owned();
            v
        })
        .collect();
    if !violations.is_empty() {
        return Err(IntakeError::Invalid(violations));
    }
    let basis = value
        .pointer("/referral/lawful_basis")
        .cloned()
        .unwrap_or_default();
    if let Err(unlawful) = serde_json::from_value::<crate::lawful::LawfulBasisWire>(basis)
        .map_err(|_| crate::lawful::Unlawful {
            field: "",
            why: "is not a lawful basis object".into(),
        })
        .and_then(LawfulBasis::try_from)
    {
        let pointer = if unlawful.field.is_empty() {
            "/lawful_basis".to_owned()
        } else {
            format!("/lawful_basis/{}", unlawful.field)
        };
        return Err(IntakeError::Invalid(vec![Violation {
            pointer,
            keyword: "lawful-basis".into(),
            message: unlawful.why,
        }]));
    }
    serde_json::from_value(value).map_err(|_| IntakeError::Malformed)
}

/// Pointers inside `referral` are reported relative to it (`/payload/child/...`), as the
/// contract's 422 examples show; claims-level members keep their own (`/aud`).
fn referral_relative(pointer: &str) -> &str {
    match pointer.strip_prefix("/referral") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => pointer,
    }
}

/// Checks read claims against the configuration's schema for their type and the rules that
/// tie fields together; every violation in one list. Intake and a release both run it.
pub fn check_content(claims: &Claims, schemas: &SchemaSet) -> Result<(), IntakeError> {
    let r = &claims.referral;
    let mut violations = Vec::new();
    match schemas.referral_type(&r.referral_type) {
        Some(schema) => violations.extend(validate(schema, &r.payload, "/payload")),
        None => violations.push(Violation {
            pointer: "/type".into(),
            keyword: "enum".into(),
            message: format!(
                "is not a referral type this gateway knows; the types are {}",
                schemas
                    .types()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
    violations.extend(rule_violations(r));
    if r.consent.status != ConsentStatus::Given {
        if let Some(member) = r.lawful_basis.relies_on_consent() {
            violations.push(Violation {
                pointer: format!("/lawful_basis/{member}"),
                keyword: "lawful-basis".into(),
                message: format!(
                    "relies on the person's consent, but consent.status is {}: give another \
                     basis, or consent",
                    r.consent.status.as_str()
                ),
            });
        }
    }
    let offence_data = schemas
        .referral_type(&r.referral_type)
        .is_some_and(Compiled::criminal_offence_data);
    if let Err(unlawful) = crate::lawful::check(&r.lawful_basis, offence_data) {
        violations.push(Violation {
            pointer: format!("/lawful_basis/{}", unlawful.field),
            keyword: "lawful-basis".into(),
            message: unlawful.why,
        });
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(IntakeError::Invalid(violations))
    }
}

/// Reads and checks claims as intake does: [`read`], then [`check_content`].
pub fn parse(bytes: &[u8], schemas: &SchemaSet) -> Result<Claims, IntakeError> {
    let claims = read(bytes)?;
    check_content(&claims, schemas)?;
    Ok(claims)
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
