//! The vocabulary of lawful sharing: UK GDPR Article 6 bases, Article 9 conditions and the
//! DPA 2018 Schedule 1 conditions that refex recognises.
//!
//! Agreements name which of these a sender may rely on; referrals state which they do rely
//! on. Out of scope: deciding whether a referral's basis fits an agreement (that is intake).

use serde::{Deserialize, Serialize};

/// UK GDPR Article 6(1) lawful bases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Article6 {
    /// 6(1)(a).
    Consent,
    /// 6(1)(c).
    LegalObligation,
    /// 6(1)(d).
    VitalInterests,
    /// 6(1)(e).
    PublicTask,
    /// 6(1)(f).
    LegitimateInterests,
}

/// UK GDPR Article 9(2) conditions for special category data, by their refex names.
pub const ARTICLE9: &[&str] = &[
    "explicit-consent",
    "employment-social-security",
    "vital-interests",
    "not-for-profit-bodies",
    "made-public",
    "legal-claims-or-court-order",
    "substantial-public-interest",
    "health-or-social-care",
    "public-health",
    "archiving-research-statistics",
];

/// DPA 2018 Schedule 1 conditions, by their refex names.
pub const SCHEDULE1: &[&str] = &[
    "para-2-health-or-social-care",
    "para-6-statutory-purposes",
    "para-10-preventing-crime",
    "para-17-counselling",
    "para-18-safeguarding-children",
    "para-19-safeguarding-economic-wellbeing",
    "explicit-consent",
    "legal-claims-or-court-order",
];
