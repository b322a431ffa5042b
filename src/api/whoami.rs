//! `GET /v1/whoami`: which principal the caller's certificate maps to. An onboarding aid: a
//! partner checks its certificate is registered before sending anything.

use axum::Json;
use serde::Serialize;

use super::principal::Caller;
use crate::identity::Actor;

/// The caller as the gateway sees it.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    partner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    person: Option<String>,
    roles: Vec<&'static str>,
    fingerprint: String,
}

/// `GET /v1/whoami`.
pub async fn whoami(Caller(p): Caller) -> Json<WhoAmI> {
    let (system, person, roles) = match &p.actor {
        Actor::System(s) => (Some(s.to_string()), None, Vec::new()),
        Actor::Person { id, roles } => (
            None,
            Some(id.to_string()),
            roles.iter().map(|r| r.as_str()).collect(),
        ),
    };
    Json(WhoAmI {
        partner: p.partner.to_string(),
        system,
        person,
        roles,
        fingerprint: p.fingerprint.to_string(),
    })
}
