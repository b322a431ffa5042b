//! Who is on the other end of a connection: partner ids, people, roles, certificate
//! fingerprints and the [`Principal`] a verified client certificate maps to.
//!
//! Pure types only. Turning a TLS peer certificate into a [`Fingerprint`] happens in `tls`;
//! building the fingerprint → principal map from `partners/` happens in `config`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Identifiers are 1–64 characters of lower-case ASCII letters, digits and `-`,
    /// starting with a letter, so they are safe in paths, URLs and file names.
    #[error("{0:?} is not a valid identifier (1-64 of a-z, 0-9, '-', starting with a letter)")]
    Invalid(String),
    /// A fingerprint is 64 lower-case hex digits, no colons.
    #[error("{0:?} is not a SHA-256 fingerprint (64 lower-case hex digits, no colons)")]
    Fingerprint(String),
    /// An agreement reference that is empty, over 256 bytes or holds control characters.
    #[error("{0:?} is not an agreement reference (1-256 bytes, no control characters)")]
    Agreement(String),
    /// A role name not in the closed list of roles.
    #[error("unknown role {0:?}")]
    Role(String),
}

/// Longest identifier accepted: long enough for any organisation slug, short enough to keep
/// paths and log lines bounded.
const MAX_ID_LEN: usize = 64;

/// What [`check_id`] accepts, as a JSON Schema pattern.
pub const SLUG_PATTERN: &str = "^[a-z][a-z0-9-]{0,63}$";

fn check_id(s: &str) -> Result<(), IdError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(IdError::Invalid(s.to_owned()))
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_id(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "pattern": SLUG_PATTERN })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_id!(
    /// A partner organisation, e.g. `notts-police`; equals its `partners/<id>.toml` file stem.
    PartnerId
);
slug_id!(
    /// A named person within a partner, e.g. `dsl-jane-doe`; unique within that partner.
    PersonId
);
slug_id!(
    /// A partner system (a client application) within a partner, e.g. `case-system`.
    SystemId
);
slug_id!(
    /// A kind of organisation (`police`, `idva`, `gp`, …); selects the need-to-know views
    /// under `schemas/views/<kind>/`.
    PartnerKind
);
slug_id!(
    /// A referral type, e.g. `domestic-abuse`; its schema is `schemas/types/<type>.json`.
    ReferralType
);
slug_id!(
    /// What the gateway's operator did (`admin-reload`, `refex-subject-access`, …): the
    /// audit trail's actor for work that no certificate asked for.
    OperatorTask
);

/// An information sharing agreement's reference, e.g. `isa-police-imara-csa`: what
/// deliveries and audit events carry. Agreements keep the references their partnership
/// already uses (`ISA 2024/03` as well as a slug), and a store written under any earlier
/// configuration stays readable, so the rule is only what every earlier release accepted
/// and logs can carry: 1–256 bytes, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgreementId(String);

/// Longest agreement reference accepted.
const MAX_AGREEMENT_ID: usize = 256;

impl AgreementId {
    /// The reference as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Result<(), IdError> {
        if !s.is_empty() && s.len() <= MAX_AGREEMENT_ID && !s.chars().any(char::is_control) {
            Ok(())
        } else {
            Err(IdError::Agreement(s.chars().take(80).collect()))
        }
    }
}

impl FromStr for AgreementId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::check(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for AgreementId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::check(&s)?;
        Ok(Self(s))
    }
}

impl From<AgreementId> for String {
    fn from(id: AgreementId) -> String {
        id.0
    }
}

impl schemars::JsonSchema for AgreementId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AgreementId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "minLength": 1, "maxLength": MAX_AGREEMENT_ID })
    }
}

impl fmt::Display for AgreementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a certificate's DER encoding, as written in `partners/*.toml`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl FromStr for Fingerprint {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Fingerprint(s.to_owned());
        if s.len() != 64 || s.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// What a named person may do on behalf of their organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Decides on disclosures held for review (four eyes).
    DesignatedSafeguardingLead,
    /// Reads the audit trail and disclosure records.
    Auditor,
    /// Answers subject-access requests for the organisation.
    DataProtectionOfficer,
    /// Receives anonymised aggregate reports, never records.
    Commissioner,
    /// Acts for the organisation as its case system does: submits referrals, works the
    /// inbox (fetch, acknowledge) and withdraws referrals. Granted explicitly in the partner
    /// file; no other role implies it.
    Practitioner,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::DesignatedSafeguardingLead,
        Role::Auditor,
        Role::DataProtectionOfficer,
        Role::Commissioner,
        Role::Practitioner,
    ];

    /// The role's name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::DesignatedSafeguardingLead => "designated-safeguarding-lead",
            Role::Auditor => "auditor",
            Role::DataProtectionOfficer => "data-protection-officer",
            Role::Commissioner => "commissioner",
            Role::Practitioner => "practitioner",
        }
    }
}

impl FromStr for Role {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdError::Role(s.to_owned()))
    }
}

/// Who a verified client certificate speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The organisation the certificate belongs to.
    pub partner: PartnerId,
    /// Whether it is one of the organisation's systems or a named person.
    pub actor: Actor,
    /// The certificate that authenticated this principal.
    pub fingerprint: Fingerprint,
    /// Who holds the organisation's referral keys.
    pub custody: Custody,
}

/// Who holds an organisation's delivery-decryption and referral-signing keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Custody {
    /// The organisation's own system: the gateway never reads its deliveries.
    #[default]
    Own,
    /// The gateway, on the organisation's behalf (a hosted partner without a case system):
    /// its people read and compose in the console.
    Gateway,
}

/// The holder of a certificate within its organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A partner's system (system-to-system access).
    System(SystemId),
    /// A named person with roles.
    Person {
        /// The person's id within the partner.
        id: PersonId,
        /// What the person may do.
        roles: Vec<Role>,
    },
}

impl Principal {
    /// Whether this principal is a person holding `role`.
    pub fn has_role(&self, role: Role) -> bool {
        matches!(&self.actor, Actor::Person { roles, .. } if roles.contains(&role))
    }
}

impl fmt::Display for Principal {
    /// `partner/system:id` or `partner/person:id`: safe for logs (no personal data beyond a
    /// configured staff identifier).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.actor {
            Actor::System(s) => write!(f, "{}/system:{s}", self.partner),
            Actor::Person { id, .. } => write!(f, "{}/person:{id}", self.partner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_slugs_and_refuse_everything_else() {
        assert!("notts-police".parse::<PartnerId>().is_ok());
        for bad in ["", "Notts", "1abc", "a b", "a/b", "../etc", &"a".repeat(65)] {
            assert!(bad.parse::<PartnerId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fingerprint_round_trips_and_refuses_colons_and_upper_case() {
        let fp = Fingerprint::of_der(b"certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert!(text.to_uppercase().parse::<Fingerprint>().is_err());
        assert!("ab:cd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn roles_parse_from_their_configured_names() {
        assert_eq!(
            "designated-safeguarding-lead".parse::<Role>(),
            Ok(Role::DesignatedSafeguardingLead)
        );
        assert!("admin".parse::<Role>().is_err());
    }
}
