//! The law on lawful bases, as `domain.md` states it, as types and two pure checks.
//!
//! Two regimes. Under **UK GDPR** (with DPA 2018 Part 2) a disclosure needs an Article 6
//! basis and, for special category data (every referral), an Article 9 condition; conditions
//! (b), (h), (i), (j) need the matching DPA 2018 Schedule 1 Part 1 condition, (g) needs a
//! Part 2 condition, and (a), (c), (d), (e), (f) need none. A referral that carries criminal
//! offence data also needs an Article 10 basis: official authority, or a Schedule 1
//! condition (Part 1, Part 2 as extended by paragraph 36, or Part 3); a Part 1 or Part 2
//! condition already relied on for Article 9 covers it. Under **DPA 2018 Part 3** (a
//! competent authority sharing for a law-enforcement purpose) processing is lawful under
//! s.35 (consent, or necessary for a law-enforcement task), and sensitive processing needs
//! consent, or strict necessity with a Schedule 8 condition.
//!
//! [`check`] says whether a stated basis is law; [`AcceptedBasis::check`] whether an
//! agreement's accepted combination is; [`AcceptedBasis::admits`] whether a basis is one an
//! agreement accepts. Out of scope: which agreement applies (that is `intake`).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $text:literal ),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vdoc])* $variant, )+ }

        impl $name {
            /// Every value, in the order the law lists them.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// As the wire and configuration spell it.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }

            /// Parses the wire spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $( $text => Some($name::$variant), )+ _ => None }
            }

            /// Every wire spelling (for messages that list the allowed values).
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{text:?} is not one of: {}", Self::names()
                    ))
                })
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                schemars::json_schema!({ "type": "string", "enum": names })
            }
        }
    };
}

vocabulary! {
    /// Which law the sharing is under.
    Regime {
        /// UK GDPR with DPA 2018 Part 2.
        UkGdpr = "uk-gdpr",
        /// DPA 2018 Part 3 (law enforcement by a competent authority).
        Dpa2018Part3 = "dpa2018-part3",
    }
}

vocabulary! {
    /// UK GDPR Article 6(1) lawful bases.
    Article6 {
        /// 6(1)(a).
        Consent = "consent",
        /// 6(1)(b).
        Contract = "contract",
        /// 6(1)(c).
        LegalObligation = "legal-obligation",
        /// 6(1)(d).
        VitalInterests = "vital-interests",
        /// 6(1)(e).
        PublicTask = "public-task",
        /// 6(1)(f).
        LegitimateInterests = "legitimate-interests",
    }
}

vocabulary! {
    /// UK GDPR Article 9(2) conditions for special category data.
    Article9 {
        /// 9(2)(a).
        ExplicitConsent = "explicit-consent",
        /// 9(2)(b).
        EmploymentSocialSecurity = "employment-social-security",
        /// 9(2)(c).
        VitalInterests = "vital-interests",
        /// 9(2)(d).
        NotForProfitBodies = "not-for-profit-bodies",
        /// 9(2)(e).
        MadePublic = "made-public",
        /// 9(2)(f).
        LegalClaimsOrCourtOrder = "legal-claims-or-court-order",
        /// 9(2)(g).
        SubstantialPublicInterest = "substantial-public-interest",
        /// 9(2)(h).
        HealthOrSocialCare = "health-or-social-care",
        /// 9(2)(i).
        PublicHealth = "public-health",
        /// 9(2)(j).
        ArchivingResearchStatistics = "archiving-research-statistics",
    }
}

vocabulary! {
    /// DPA 2018 Schedule 1 conditions. Two spellings earlier builds accepted are kept so
    /// that records made then still read; they are not Schedule 1 conditions and [`check`]
    /// refuses them.
    Schedule1 {
        /// Part 1 para 1: employment, social security and social protection.
        Para1Employment = "para-1-employment-social-security",
        /// Part 1 para 2: health or social care purposes.
        Para2HealthOrSocialCare = "para-2-health-or-social-care",
        /// Part 1 para 3: public health.
        Para3PublicHealth = "para-3-public-health",
        /// Part 1 para 4: research.
        Para4Research = "para-4-research",
        /// Part 2 para 6: statutory and government purposes.
        Para6StatutoryPurposes = "para-6-statutory-purposes",
        /// Part 2 para 7: administration of justice.
        Para7AdministrationOfJustice = "para-7-administration-of-justice",
        /// Part 2 para 10: preventing or detecting unlawful acts.
        Para10PreventingCrime = "para-10-preventing-crime",
        /// Part 2 para 11: protecting the public.
        Para11ProtectingThePublic = "para-11-protecting-the-public",
        /// Part 2 para 12: regulatory requirements.
        Para12RegulatoryRequirements = "para-12-regulatory-requirements",
        /// Part 2 para 14: preventing fraud.
        Para14PreventingFraud = "para-14-preventing-fraud",
        /// Part 2 para 16: support for individuals with a particular disability or condition.
        Para16Support = "para-16-support-for-individuals",
        /// Part 2 para 17: counselling.
        Para17Counselling = "para-17-counselling",
        /// Part 2 para 18: safeguarding of children and of individuals at risk.
        Para18SafeguardingChildren = "para-18-safeguarding-children",
        /// Part 2 para 19: safeguarding of economic well-being of certain individuals.
        Para19SafeguardingEconomicWellbeing = "para-19-safeguarding-economic-wellbeing",
        /// Part 3 para 29: consent (Article 10 only).
        Para29Consent = "para-29-consent",
        /// Part 3 para 30: protecting an individual's vital interests (Article 10 only).
        Para30VitalInterests = "para-30-vital-interests",
        /// Part 3 para 31: not-for-profit bodies (Article 10 only).
        Para31NotForProfit = "para-31-not-for-profit-bodies",
        /// Part 3 para 32: made public by the data subject (Article 10 only).
        Para32MadePublic = "para-32-made-public",
        /// Part 3 para 33: legal claims (Article 10 only).
        Para33LegalClaims = "para-33-legal-claims",
        /// Part 3 para 34: judicial acts (Article 10 only).
        Para34JudicialActs = "para-34-judicial-acts",
        /// Not a Schedule 1 condition: explicit consent is Article 9(2)(a), which needs
        /// none. Accepted by earlier builds; readable in old records, refused now.
        LegacyExplicitConsent = "explicit-consent",
        /// Not a Schedule 1 condition: Article 9(2)(f) needs none. Accepted by earlier
        /// builds; readable in old records, refused now.
        LegacyLegalClaims = "legal-claims-or-court-order",
    }
}

vocabulary! {
    /// DPA 2018 s.35(2): what makes Part 3 processing lawful.
    Section35 {
        /// s.35(2)(a): the data subject consented.
        Consent = "consent",
        /// s.35(2)(b): necessary for a task carried out for a law-enforcement purpose by a
        /// competent authority.
        LawEnforcementTask = "law-enforcement-task",
    }
}

vocabulary! {
    /// DPA 2018 s.35(3)-(5): how sensitive processing is allowed under Part 3.
    SensitiveProcessing {
        /// s.35(4): consent (with an appropriate policy document).
        Consent = "consent",
        /// s.35(5): strictly necessary, with a Schedule 8 condition.
        StrictlyNecessary = "strictly-necessary",
    }
}

vocabulary! {
    /// DPA 2018 Schedule 8 conditions for sensitive processing under Part 3.
    Schedule8 {
        /// Para 1: statutory purposes.
        Para1StatutoryPurposes = "para-1-statutory-purposes",
        /// Para 2: administration of justice.
        Para2AdministrationOfJustice = "para-2-administration-of-justice",
        /// Para 3: protecting individual's vital interests.
        Para3VitalInterests = "para-3-vital-interests",
        /// Para 4: safeguarding of children and of individuals at risk.
        Para4Safeguarding = "para-4-safeguarding-children-and-individuals-at-risk",
        /// Para 5: personal data already in the public domain.
        Para5AlreadyPublic = "para-5-already-public",
        /// Para 6: legal claims.
        Para6LegalClaims = "para-6-legal-claims",
        /// Para 7: judicial acts.
        Para7JudicialActs = "para-7-judicial-acts",
        /// Para 8: preventing fraud.
        Para8PreventingFraud = "para-8-preventing-fraud",
        /// Para 9: archiving.
        Para9Archiving = "para-9-archiving",
    }
}

/// Which Part of Schedule 1 a condition is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Part 1: employment, health and research.
    One,
    /// Part 2: substantial public interest.
    Two,
    /// Part 3: additional conditions for criminal offence data only.
    Three,
    /// Not a Schedule 1 condition at all (a legacy spelling).
    None,
}

impl Schedule1 {
    /// Its Part.
    pub fn part(self) -> Part {
        use Schedule1::*;
        match self {
            Para1Employment | Para2HealthOrSocialCare | Para3PublicHealth | Para4Research => {
                Part::One
            }
            Para6StatutoryPurposes
            | Para7AdministrationOfJustice
            | Para10PreventingCrime
            | Para11ProtectingThePublic
            | Para12RegulatoryRequirements
            | Para14PreventingFraud
            | Para16Support
            | Para17Counselling
            | Para18SafeguardingChildren
            | Para19SafeguardingEconomicWellbeing => Part::Two,
            Para29Consent | Para30VitalInterests | Para31NotForProfit | Para32MadePublic
            | Para33LegalClaims | Para34JudicialActs => Part::Three,
            LegacyExplicitConsent | LegacyLegalClaims => Part::None,
        }
    }
}

/// What Schedule 1 condition an Article 9 condition needs (DPA 2018 s.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// None: (a), (c), (d), (e), (f).
    Nothing,
    /// Exactly this Part 1 condition: (b), (h), (i), (j).
    Part1(Schedule1),
    /// Any Part 2 condition: (g).
    Part2,
}

impl Article9 {
    /// The Schedule 1 condition this condition needs.
    pub fn needs(self) -> Needs {
        use Article9::*;
        match self {
            ExplicitConsent
            | VitalInterests
            | NotForProfitBodies
            | MadePublic
            | LegalClaimsOrCourtOrder => Needs::Nothing,
            EmploymentSocialSecurity => Needs::Part1(Schedule1::Para1Employment),
            HealthOrSocialCare => Needs::Part1(Schedule1::Para2HealthOrSocialCare),
            PublicHealth => Needs::Part1(Schedule1::Para3PublicHealth),
            ArchivingResearchStatistics => Needs::Part1(Schedule1::Para4Research),
            SubstantialPublicInterest => Needs::Part2,
        }
    }
}

/// An Article 10 basis for criminal offence data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Article10 {
    /// Processing under the control of official authority.
    OfficialAuthority,
    /// A Schedule 1 condition (Part 1, Part 2 by para 36, or Part 3).
    Schedule1(Schedule1),
}

impl Article10 {
    /// As the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Article10::OfficialAuthority => "official-authority",
            Article10::Schedule1(c) => c.as_str(),
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "official-authority" => Some(Article10::OfficialAuthority),
            other => Schedule1::parse(other).map(Article10::Schedule1),
        }
    }
}

impl fmt::Display for Article10 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Article10 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for Article10 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Article10".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = std::iter::once("official-authority")
            .chain(Schedule1::ALL.iter().map(|c| c.as_str()))
            .collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl<'de> Deserialize<'de> for Article10 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not official-authority or a Schedule 1 condition"
            ))
        })
    }
}

/// A basis under UK GDPR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GdprBasis {
    /// Article 6.
    pub article6: Article6,
    /// Article 9.
    pub article9: Article9,
    /// The Schedule 1 condition (none where the Article 9 condition needs none).
    pub schedule1: Option<Schedule1>,
    /// The Article 10 basis stated for criminal offence data, if stated.
    pub article10: Option<Article10>,
}

/// A basis under DPA 2018 Part 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part3Basis {
    /// s.35(2).
    pub section35: Section35,
    /// How sensitive processing is allowed.
    pub sensitive: SensitiveProcessing,
    /// The Schedule 8 condition, with strict necessity.
    pub schedule8: Option<Schedule8>,
}

/// The lawful basis a referral relies on, in its regime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LawfulBasisWire", into = "LawfulBasisWire")]
pub enum LawfulBasis {
    /// UK GDPR.
    UkGdpr(GdprBasis),
    /// DPA 2018 Part 3.
    Part3(Part3Basis),
}

impl LawfulBasis {
    /// Its regime.
    pub fn regime(&self) -> Regime {
        match self {
            LawfulBasis::UkGdpr(_) => Regime::UkGdpr,
            LawfulBasis::Part3(_) => Regime::Dpa2018Part3,
        }
    }

    /// A UK GDPR basis with no stated Article 10 basis.
    pub fn uk_gdpr(article6: Article6, article9: Article9, schedule1: Option<Schedule1>) -> Self {
        LawfulBasis::UkGdpr(GdprBasis {
            article6,
            article9,
            schedule1,
            article10: None,
        })
    }

    /// The Article 10 basis in effect: the one stated, else a Part 1 or Part 2 Schedule 1
    /// condition already relied on (DPA 2018 s.10(5) and Schedule 1 para 36). Part 3 sharing
    /// needs none (Part 3 governs offence data itself).
    pub fn article10_in_effect(&self) -> Option<Article10> {
        match self {
            LawfulBasis::UkGdpr(b) => b.article10.or_else(|| {
                b.schedule1
                    .filter(|c| matches!(c.part(), Part::One | Part::Two))
                    .map(Article10::Schedule1)
            }),
            LawfulBasis::Part3(_) => None,
        }
    }

    /// The first member that relies on the person's consent (a consent basis is only lawful
    /// when consent was given), if any.
    pub fn relies_on_consent(&self) -> Option<&'static str> {
        match self {
            LawfulBasis::UkGdpr(b) => {
                if b.article6 == Article6::Consent {
                    Some("article6")
                } else if b.article9 == Article9::ExplicitConsent {
                    Some("article9")
                } else if b.article10 == Some(Article10::Schedule1(Schedule1::Para29Consent)) {
                    Some("article10")
                } else {
                    None
                }
            }
            LawfulBasis::Part3(b) => {
                if b.section35 == Section35::Consent {
                    Some("section35")
                } else if b.sensitive == SensitiveProcessing::Consent {
                    Some("sensitive_processing")
                } else {
                    None
                }
            }
        }
    }

    /// Every condition in words, for people (the review page, disclosure records).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        match self {
            LawfulBasis::UkGdpr(b) => {
                let mut out = vec![
                    ("Regime", "UK GDPR (with DPA 2018 Part 2)".to_owned()),
                    ("Article 6", words(b.article6.as_str())),
                    ("Article 9", words(b.article9.as_str())),
                    (
                        "DPA 2018 Schedule 1",
                        b.schedule1
                            .map_or_else(|| "none needed".to_owned(), |c| words(c.as_str())),
                    ),
                ];
                if let Some(a) = self.article10_in_effect() {
                    out.push(("Article 10 (criminal offence data)", words(a.as_str())));
                }
                out
            }
            LawfulBasis::Part3(b) => vec![
                ("Regime", "DPA 2018 Part 3 (law enforcement)".to_owned()),
                ("Section 35", words(b.section35.as_str())),
                ("Sensitive processing", words(b.sensitive.as_str())),
                (
                    "DPA 2018 Schedule 8",
                    b.schedule8
                        .map_or_else(|| "none needed".to_owned(), |c| words(c.as_str())),
                ),
            ],
        }
    }
}

/// A slug as words: `para-18-safeguarding-children` → `para 18 safeguarding children`.
pub fn words(slug: &str) -> String {
    slug.replace('-', " ")
}

/// The lawful basis as the wire and the store spell it: one object whose members depend on
/// `regime` (absent: `uk-gdpr`, as v1 clients send it).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LawfulBasisWire {
    /// The regime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regime: Option<Regime>,
    /// UK GDPR Article 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article6: Option<Article6>,
    /// UK GDPR Article 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article9: Option<Article9>,
    /// DPA 2018 Schedule 1 (null or absent where none is needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpa2018_schedule1: Option<Schedule1>,
    /// UK GDPR Article 10 basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article10: Option<Article10>,
    /// DPA 2018 s.35(2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section35: Option<Section35>,
    /// DPA 2018 s.35 sensitive processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_processing: Option<SensitiveProcessing>,
    /// DPA 2018 Schedule 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpa2018_schedule8: Option<Schedule8>,
}

/// Why a stated basis is not law, naming the member at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct Unlawful {
    /// The `lawful_basis` member at fault.
    pub field: &'static str,
    /// Why, and what would be right.
    pub why: String,
}

fn unlawful(field: &'static str, why: impl Into<String>) -> Unlawful {
    Unlawful {
        field,
        why: why.into(),
    }
}

/// A basis is described by its wire form (the checks [`check`] makes are not expressible
/// there: an agreement's refusal names them).
impl schemars::JsonSchema for LawfulBasis {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LawfulBasis".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        LawfulBasisWire::json_schema(g)
    }
}

impl TryFrom<LawfulBasisWire> for LawfulBasis {
    type Error = Unlawful;
    fn try_from(w: LawfulBasisWire) -> Result<Self, Unlawful> {
        match w.regime.unwrap_or(Regime::UkGdpr) {
            Regime::UkGdpr => {
                for (present, field) in [
                    (w.section35.is_some(), "section35"),
                    (w.sensitive_processing.is_some(), "sensitive_processing"),
                    (w.dpa2018_schedule8.is_some(), "dpa2018_schedule8"),
                ] {
                    if present {
                        return Err(unlawful(field, "belongs to the dpa2018-part3 regime only"));
                    }
                }
                Ok(LawfulBasis::UkGdpr(GdprBasis {
                    article6: w.article6.ok_or_else(|| {
                        unlawful(
                            "article6",
                            format!("is required: one of {}", Article6::names()),
                        )
                    })?,
                    article9: w.article9.ok_or_else(|| {
                        unlawful(
                            "article9",
                            format!("is required: one of {}", Article9::names()),
                        )
                    })?,
                    schedule1: w.dpa2018_schedule1,
                    article10: w.article10,
                }))
            }
            Regime::Dpa2018Part3 => {
                for (present, field) in [
                    (w.article6.is_some(), "article6"),
                    (w.article9.is_some(), "article9"),
                    (w.dpa2018_schedule1.is_some(), "dpa2018_schedule1"),
                    (w.article10.is_some(), "article10"),
                ] {
                    if present {
                        return Err(unlawful(field, "belongs to the uk-gdpr regime only"));
                    }
                }
                Ok(LawfulBasis::Part3(Part3Basis {
                    section35: w.section35.ok_or_else(|| {
                        unlawful(
                            "section35",
                            format!("is required: one of {}", Section35::names()),
                        )
                    })?,
                    sensitive: w.sensitive_processing.ok_or_else(|| {
                        unlawful(
                            "sensitive_processing",
                            format!("is required: one of {}", SensitiveProcessing::names()),
                        )
                    })?,
                    schedule8: w.dpa2018_schedule8,
                }))
            }
        }
    }
}

impl From<LawfulBasis> for LawfulBasisWire {
    fn from(b: LawfulBasis) -> Self {
        match b {
            LawfulBasis::UkGdpr(g) => LawfulBasisWire {
                regime: Some(Regime::UkGdpr),
                article6: Some(g.article6),
                article9: Some(g.article9),
                dpa2018_schedule1: g.schedule1,
                article10: g.article10,
                ..LawfulBasisWire::default()
            },
            LawfulBasis::Part3(p) => LawfulBasisWire {
                regime: Some(Regime::Dpa2018Part3),
                section35: Some(p.section35),
                sensitive_processing: Some(p.sensitive),
                dpa2018_schedule8: p.schedule8,
                ..LawfulBasisWire::default()
            },
        }
    }
}

/// Whether a stated basis is law for a referral that does (or does not) carry criminal
/// offence data; the first fault, naming its member, otherwise.
pub fn check(basis: &LawfulBasis, criminal_offence_data: bool) -> Result<(), Unlawful> {
    match basis {
        LawfulBasis::UkGdpr(b) => {
            if let Some(c) = b.schedule1.filter(|c| c.part() == Part::None) {
                return Err(unlawful(
                    "dpa2018_schedule1",
                    format!(
                        "{c} is not a DPA 2018 Schedule 1 condition (Article 9 {} needs {})",
                        b.article9,
                        needs_text(b.article9.needs())
                    ),
                ));
            }
            match (b.article9.needs(), b.schedule1) {
                (Needs::Nothing, None) => {}
                (Needs::Nothing, Some(_)) => {
                    return Err(unlawful(
                        "dpa2018_schedule1",
                        format!(
                            "must be null or absent: Article 9 {} needs no Schedule 1 condition \
                             (an Article 10 basis goes in article10)",
                            b.article9
                        ),
                    ));
                }
                (Needs::Part1(want), Some(c)) if c == want => {}
                (Needs::Part1(want), _) => {
                    return Err(unlawful(
                        "dpa2018_schedule1",
                        format!("Article 9 {} needs Schedule 1 Part 1 {want}", b.article9),
                    ));
                }
                (Needs::Part2, Some(c)) if c.part() == Part::Two => {}
                (Needs::Part2, _) => {
                    return Err(unlawful(
                        "dpa2018_schedule1",
                        format!(
                            "Article 9 {} needs a Schedule 1 Part 2 condition: one of {}",
                            b.article9,
                            part_names(Part::Two)
                        ),
                    ));
                }
            }
            if let Some(Article10::Schedule1(c)) = b.article10 {
                if c.part() == Part::None {
                    return Err(unlawful(
                        "article10",
                        format!("{c} is not a DPA 2018 Schedule 1 condition"),
                    ));
                }
            }
            if criminal_offence_data && basis.article10_in_effect().is_none() {
                return Err(unlawful(
                    "article10",
                    "is required: this referral type carries criminal offence data (UK GDPR \
                     Art. 10); give official-authority or a DPA 2018 Schedule 1 condition",
                ));
            }
            Ok(())
        }
        LawfulBasis::Part3(p) => match (p.sensitive, p.schedule8) {
            (SensitiveProcessing::StrictlyNecessary, None) => Err(unlawful(
                "dpa2018_schedule8",
                format!(
                    "is required with strictly-necessary sensitive processing: one of {}",
                    Schedule8::names()
                ),
            )),
            (SensitiveProcessing::Consent, Some(_)) => Err(unlawful(
                "dpa2018_schedule8",
                "must be absent when sensitive processing relies on consent",
            )),
            _ => Ok(()),
        },
    }
}

fn needs_text(n: Needs) -> String {
    match n {
        Needs::Nothing => "no Schedule 1 condition".to_owned(),
        Needs::Part1(c) => format!("Schedule 1 Part 1 {c}"),
        Needs::Part2 => "a Schedule 1 Part 2 condition".to_owned(),
    }
}

fn part_names(part: Part) -> String {
    Schedule1::ALL
        .iter()
        .filter(|c| c.part() == part)
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One combination an agreement accepts, as `partners/agreements.toml` writes it
/// (`[[agreement.basis]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedBasisFile {
    /// The regime (default `uk-gdpr`).
    #[serde(default)]
    pub regime: Option<Regime>,
    /// UK GDPR: the Article 6 bases.
    #[serde(default)]
    pub article6: Vec<Article6>,
    /// UK GDPR: the one Article 9 condition of this combination.
    #[serde(default)]
    pub article9: Option<Article9>,
    /// UK GDPR: the Schedule 1 conditions that go with it (none where it needs none).
    #[serde(default)]
    pub schedule1: Vec<Schedule1>,
    /// UK GDPR: Article 10 bases accepted when stated explicitly.
    #[serde(default)]
    pub article10: Vec<Article10>,
    /// Part 3: s.35(2) grounds.
    #[serde(default)]
    pub section35: Vec<Section35>,
    /// Part 3: how sensitive processing is allowed.
    #[serde(default)]
    pub sensitive_processing: Vec<SensitiveProcessing>,
    /// Part 3: Schedule 8 conditions.
    #[serde(default)]
    pub schedule8: Vec<Schedule8>,
}

/// One combination an agreement accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptedBasis {
    /// Under UK GDPR.
    UkGdpr {
        /// Article 6 bases.
        article6: Vec<Article6>,
        /// The Article 9 condition.
        article9: Article9,
        /// The Schedule 1 conditions accepted with it.
        schedule1: Vec<Schedule1>,
        /// Article 10 bases accepted when stated.
        article10: Vec<Article10>,
    },
    /// Under DPA 2018 Part 3.
    Part3 {
        /// s.35(2) grounds.
        section35: Vec<Section35>,
        /// Sensitive-processing grounds.
        sensitive: Vec<SensitiveProcessing>,
        /// Schedule 8 conditions.
        schedule8: Vec<Schedule8>,
    },
}

impl AcceptedBasis {
    /// Reads one `[[agreement.basis]]` table; a member of the other regime, or a missing
    /// one, is a problem named here.
    pub fn from_file(f: &AcceptedBasisFile) -> Result<Self, String> {
        match f.regime.unwrap_or(Regime::UkGdpr) {
            Regime::UkGdpr => {
                if !(f.section35.is_empty()
                    && f.sensitive_processing.is_empty()
                    && f.schedule8.is_empty())
                {
                    return Err("section35, sensitive_processing and schedule8 belong to \
                                regime = \"dpa2018-part3\""
                        .into());
                }
                let article9 = f
                    .article9
                    .ok_or("a uk-gdpr basis needs one article9 condition")?;
                if f.article6.is_empty() {
                    return Err("a uk-gdpr basis needs at least one article6 basis".into());
                }
                Ok(AcceptedBasis::UkGdpr {
                    article6: f.article6.clone(),
                    article9,
                    schedule1: f.schedule1.clone(),
                    article10: f.article10.clone(),
                })
            }
            Regime::Dpa2018Part3 => {
                if !(f.article6.is_empty()
                    && f.article9.is_none()
                    && f.schedule1.is_empty()
                    && f.article10.is_empty())
                {
                    return Err(
                        "article6, article9, schedule1 and article10 belong to regime = \"uk-gdpr\""
                            .into(),
                    );
                }
                if f.section35.is_empty() || f.sensitive_processing.is_empty() {
                    return Err(
                        "a dpa2018-part3 basis needs section35 and sensitive_processing".into(),
                    );
                }
                Ok(AcceptedBasis::Part3 {
                    section35: f.section35.clone(),
                    sensitive: f.sensitive_processing.clone(),
                    schedule8: f.schedule8.clone(),
                })
            }
        }
    }

    /// Its regime.
    pub fn regime(&self) -> Regime {
        match self {
            AcceptedBasis::UkGdpr { .. } => Regime::UkGdpr,
            AcceptedBasis::Part3 { .. } => Regime::Dpa2018Part3,
        }
    }

    /// Every way in which this combination is not law (empty when it is).
    pub fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            AcceptedBasis::UkGdpr {
                article9,
                schedule1,
                article10,
                ..
            } => {
                for c in schedule1.iter().filter(|c| c.part() == Part::None) {
                    out.push(format!(
                        "schedule1 {c} is not a DPA 2018 Schedule 1 condition (Article 9 \
                         {article9} needs {})",
                        needs_text(article9.needs())
                    ));
                }
                match article9.needs() {
                    Needs::Nothing => {
                        for c in schedule1.iter().filter(|c| c.part() != Part::None) {
                            out.push(format!(
                                "schedule1 {c} with article9 {article9}: it needs no Schedule 1 \
                                 condition (list Article 10 bases under article10)"
                            ));
                        }
                    }
                    Needs::Part1(want) => {
                        for c in schedule1
                            .iter()
                            .filter(|c| **c != want && c.part() != Part::None)
                        {
                            out.push(format!(
                                "schedule1 {c} with article9 {article9}: it needs Schedule 1 \
                                 Part 1 {want}"
                            ));
                        }
                        if !schedule1.contains(&want) {
                            out.push(format!("article9 {article9} needs schedule1 {want}"));
                        }
                    }
                    Needs::Part2 => {
                        for c in schedule1
                            .iter()
                            .filter(|c| !matches!(c.part(), Part::Two | Part::None))
                        {
                            out.push(format!(
                                "schedule1 {c} with article9 {article9}: it needs a Schedule 1 \
                                 Part 2 condition"
                            ));
                        }
                        if !schedule1.iter().any(|c| c.part() == Part::Two) {
                            out.push(format!(
                                "article9 {article9} needs at least one Schedule 1 Part 2 \
                                 condition"
                            ));
                        }
                    }
                }
                for a in article10 {
                    if let Article10::Schedule1(c) = a {
                        if c.part() == Part::None {
                            out.push(format!(
                                "article10 {c} is not a DPA 2018 Schedule 1 condition"
                            ));
                        }
                    }
                }
            }
            AcceptedBasis::Part3 {
                sensitive,
                schedule8,
                ..
            } => {
                if sensitive.contains(&SensitiveProcessing::StrictlyNecessary)
                    && schedule8.is_empty()
                {
                    out.push(
                        "strictly-necessary sensitive processing needs at least one schedule8 \
                         condition"
                            .into(),
                    );
                }
                if !sensitive.contains(&SensitiveProcessing::StrictlyNecessary)
                    && !schedule8.is_empty()
                {
                    out.push(
                        "schedule8 conditions apply only with strictly-necessary sensitive \
                         processing"
                            .into(),
                    );
                }
            }
        }
        out
    }

    /// Every concrete basis this combination admits (each Article 6 basis with each Schedule 1
    /// condition, and with each Article 10 basis accepted when stated; each s.35 ground with
    /// each sensitive-processing ground and Schedule 8 condition): the choices a form offers.
    pub fn combinations(&self) -> Vec<LawfulBasis> {
        let mut out = Vec::new();
        match self {
            AcceptedBasis::UkGdpr {
                article6,
                article9,
                schedule1,
                article10,
            } => {
                let conditions: Vec<Option<Schedule1>> = if schedule1.is_empty() {
                    vec![None]
                } else {
                    schedule1.iter().copied().map(Some).collect()
                };
                let stated: Vec<Option<Article10>> = std::iter::once(None)
                    .chain(article10.iter().copied().map(Some))
                    .collect();
                for a6 in article6 {
                    for s1 in &conditions {
                        for a10 in &stated {
                            out.push(LawfulBasis::UkGdpr(GdprBasis {
                                article6: *a6,
                                article9: *article9,
                                schedule1: *s1,
                                article10: *a10,
                            }));
                        }
                    }
                }
            }
            AcceptedBasis::Part3 {
                section35,
                sensitive,
                schedule8,
            } => {
                for s35 in section35 {
                    for sp in sensitive {
                        let conditions: Vec<Option<Schedule8>> =
                            if *sp == SensitiveProcessing::StrictlyNecessary {
                                schedule8.iter().copied().map(Some).collect()
                            } else {
                                vec![None]
                            };
                        for s8 in conditions {
                            out.push(LawfulBasis::Part3(Part3Basis {
                                section35: *s35,
                                sensitive: *sp,
                                schedule8: s8,
                            }));
                        }
                    }
                }
            }
        }
        out.retain(|b| self.admits(b));
        out
    }

    /// Whether a referral stating `basis` is covered by this combination.
    pub fn admits(&self, basis: &LawfulBasis) -> bool {
        match (self, basis) {
            (
                AcceptedBasis::UkGdpr {
                    article6,
                    article9,
                    schedule1,
                    article10,
                },
                LawfulBasis::UkGdpr(b),
            ) => {
                let schedule1_ok = match b.schedule1 {
                    None => article9.needs() == Needs::Nothing,
                    Some(c) => schedule1.contains(&c),
                };
                let article10_ok = match b.article10 {
                    None => true,
                    Some(a) => {
                        article10.contains(&a)
                            || matches!(a, Article10::Schedule1(c) if schedule1.contains(&c))
                    }
                };
                article6.contains(&b.article6)
                    && *article9 == b.article9
                    && schedule1_ok
                    && article10_ok
            }
            (
                AcceptedBasis::Part3 {
                    section35,
                    sensitive,
                    schedule8,
                },
                LawfulBasis::Part3(b),
            ) => {
                section35.contains(&b.section35)
                    && sensitive.contains(&b.sensitive)
                    && b.schedule8.is_none_or(|c| schedule8.contains(&c))
            }
            _ => false,
        }
    }

    /// The combination in words, for problems that list what an agreement allows.
    pub fn describe(&self) -> String {
        let list = |v: Vec<&str>| v.join("|");
        match self {
            AcceptedBasis::UkGdpr {
                article6,
                article9,
                schedule1,
                article10,
            } => {
                let mut s = format!(
                    "uk-gdpr: article6 {}, article9 {article9}, dpa2018_schedule1 {}",
                    list(article6.iter().map(|a| a.as_str()).collect()),
                    if schedule1.is_empty() {
                        "null".to_owned()
                    } else {
                        list(schedule1.iter().map(|a| a.as_str()).collect())
                    }
                );
                if !article10.is_empty() {
                    s.push_str(&format!(
                        ", article10 {}",
                        list(article10.iter().map(|a| a.as_str()).collect())
                    ));
                }
                s
            }
            AcceptedBasis::Part3 {
                section35,
                sensitive,
                schedule8,
            } => format!(
                "dpa2018-part3: section35 {}, sensitive_processing {}, dpa2018_schedule8 {}",
                list(section35.iter().map(|a| a.as_str()).collect()),
                list(sensitive.iter().map(|a| a.as_str()).collect()),
                if schedule8.is_empty() {
                    "absent".to_owned()
                } else {
                    list(schedule8.iter().map(|a| a.as_str()).collect())
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gdpr(a9: Article9, s1: Option<Schedule1>) -> LawfulBasis {
        LawfulBasis::uk_gdpr(Article6::PublicTask, a9, s1)
    }

    #[test]
    fn article9_conditions_take_exactly_the_schedule1_condition_they_need() {
        use Article9::*;
        use Schedule1::*;
        for a9 in [
            ExplicitConsent,
            VitalInterests,
            NotForProfitBodies,
            MadePublic,
            LegalClaimsOrCourtOrder,
        ] {
            assert!(check(&gdpr(a9, None), false).is_ok(), "{a9}");
            assert!(
                check(&gdpr(a9, Some(Para18SafeguardingChildren)), false).is_err(),
                "{a9}"
            );
        }
        assert!(
            check(
                &gdpr(HealthOrSocialCare, Some(Para2HealthOrSocialCare)),
                false
            )
            .is_ok()
        );
        assert!(
            check(
                &gdpr(HealthOrSocialCare, Some(Para18SafeguardingChildren)),
                false
            )
            .is_err()
        );
        assert!(check(&gdpr(HealthOrSocialCare, None), false).is_err());
        assert!(
            check(
                &gdpr(SubstantialPublicInterest, Some(Para18SafeguardingChildren)),
                false
            )
            .is_ok()
        );
        assert!(
            check(
                &gdpr(SubstantialPublicInterest, Some(Para2HealthOrSocialCare)),
                false
            )
            .is_err()
        );
        assert!(check(&gdpr(SubstantialPublicInterest, Some(Para29Consent)), false).is_err());
        assert!(check(&gdpr(SubstantialPublicInterest, None), false).is_err());
    }

    #[test]
    fn explicit_consent_is_never_a_schedule1_condition() {
        let e = check(
            &gdpr(
                Article9::ExplicitConsent,
                Some(Schedule1::LegacyExplicitConsent),
            ),
            false,
        )
        .unwrap_err();
        assert_eq!(e.field, "dpa2018_schedule1");
        assert!(e.why.contains("not a DPA 2018 Schedule 1 condition"), "{e}");
        let accepted = AcceptedBasis::UkGdpr {
            article6: vec![Article6::Consent],
            article9: Article9::ExplicitConsent,
            schedule1: vec![Schedule1::LegacyExplicitConsent],
            article10: vec![],
        };
        assert!(!accepted.check().is_empty());
    }

    #[test]
    fn criminal_offence_data_needs_an_article10_basis() {
        let consent = gdpr(Article9::ExplicitConsent, None);
        assert_eq!(check(&consent, true).unwrap_err().field, "article10");
        let LawfulBasis::UkGdpr(mut b) = consent else {
            unreachable!()
        };
        b.article10 = Some(Article10::Schedule1(Schedule1::Para29Consent));
        assert!(check(&LawfulBasis::UkGdpr(b), true).is_ok());
        // A Part 2 condition relied on for Article 9 covers Article 10 (para 36).
        let spi = gdpr(
            Article9::SubstantialPublicInterest,
            Some(Schedule1::Para10PreventingCrime),
        );
        assert!(check(&spi, true).is_ok());
        assert_eq!(
            spi.article10_in_effect(),
            Some(Article10::Schedule1(Schedule1::Para10PreventingCrime))
        );
    }

    #[test]
    fn part3_needs_schedule8_with_strict_necessity_only() {
        let p = |s, c| {
            LawfulBasis::Part3(Part3Basis {
                section35: Section35::LawEnforcementTask,
                sensitive: s,
                schedule8: c,
            })
        };
        assert!(
            check(
                &p(
                    SensitiveProcessing::StrictlyNecessary,
                    Some(Schedule8::Para4Safeguarding)
                ),
                false
            )
            .is_ok()
        );
        assert!(check(&p(SensitiveProcessing::StrictlyNecessary, None), false).is_err());
        assert!(check(&p(SensitiveProcessing::Consent, None), false).is_ok());
        assert!(
            check(
                &p(
                    SensitiveProcessing::Consent,
                    Some(Schedule8::Para1StatutoryPurposes)
                ),
                false
            )
            .is_err()
        );
    }

    #[test]
    fn the_wire_form_reads_v1_and_extended_bases() {
        let v1: LawfulBasis = serde_json::from_str(
            r#"{"article6":"consent","article9":"explicit-consent","dpa2018_schedule1":null}"#,
        )
        .unwrap();
        assert_eq!(v1, gdpr_consent());
        let part3: LawfulBasis = serde_json::from_str(
            r#"{"regime":"dpa2018-part3","section35":"law-enforcement-task","sensitive_processing":"strictly-necessary","dpa2018_schedule8":"para-4-safeguarding-children-and-individuals-at-risk"}"#,
        )
        .unwrap();
        assert_eq!(part3.regime(), Regime::Dpa2018Part3);
        assert_eq!(
            serde_json::to_string(&part3).unwrap(),
            r#"{"regime":"dpa2018-part3","section35":"law-enforcement-task","sensitive_processing":"strictly-necessary","dpa2018_schedule8":"para-4-safeguarding-children-and-individuals-at-risk"}"#
        );
        assert!(
            serde_json::from_str::<LawfulBasis>(
                r#"{"article6":"consent","section35":"consent","article9":"explicit-consent"}"#
            )
            .is_err()
        );
    }

    fn gdpr_consent() -> LawfulBasis {
        LawfulBasis::uk_gdpr(Article6::Consent, Article9::ExplicitConsent, None)
    }

    #[test]
    fn agreements_admit_only_their_combinations() {
        let a = AcceptedBasis::UkGdpr {
            article6: vec![Article6::PublicTask],
            article9: Article9::SubstantialPublicInterest,
            schedule1: vec![Schedule1::Para18SafeguardingChildren],
            article10: vec![Article10::OfficialAuthority],
        };
        assert!(a.check().is_empty());
        assert!(a.admits(&gdpr(
            Article9::SubstantialPublicInterest,
            Some(Schedule1::Para18SafeguardingChildren)
        )));
        assert!(!a.admits(&gdpr(
            Article9::SubstantialPublicInterest,
            Some(Schedule1::Para10PreventingCrime)
        )));
        assert!(!a.admits(&gdpr_consent()));
    }
}
