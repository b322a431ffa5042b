//! `GET /v1/whoami`: which principal the caller's certificate maps to. An onboarding aid: a
//! partner checks its certificate is registered before sending anything.

use axum::Json;
use serde::Serialize;

use super::principal::Caller;
use crate::identity::{Actor, PartnerId, PersonId, SystemId};

/// The caller as the gateway sees it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WhoAmI {
    /// The partner organisation.
    partner: PartnerId,
    /// The partner system, when the certificate is a system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<SystemId>,
    /// The person, when the certificate is a person's.
    #[serde(skip_serializing_if = "Option::is_none")]
    person: Option<PersonId>,
    /// The person's roles (none for a system).
    roles: Vec<&'static str>,
    /// SHA-256 of the certificate's DER, lower-case hex.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    fingerprint: String,
}

/// `GET /v1/whoami`.
pub async fn whoami(Caller(p): Caller) -> Json<WhoAmI> {
    let (system, person, roles) = match &p.actor {
        Actor::System(s) => (Some(s.clone()), None, Vec::new()),
        Actor::Person { id, roles } => (
            None,
            Some(id.clone()),
            roles.iter().map(|r| r.as_str()).collect(),
        ),
    };
    Json(WhoAmI {
        partner: p.partner.clone(),
        system,
        person,
        roles,
        fingerprint: p.fingerprint.to_string(),
    })
}
