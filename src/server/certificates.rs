//! Partners' client certificates as this replica has seen them, for the expiry gauge: each
//! holder's series (`refex_client_certificate_expiry_timestamp_seconds{partner,holder}`) is
//! the latest expiry among the certificates it has presented that the configuration in force
//! still maps. A renewal presented raises it; a fingerprint removed from its partner file
//! (renewed away, revoked, the holder gone) stops counting at the next housekeeping pass, and
//! a holder with none left reads NaN, which no alert compares true.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::config::Config;
use crate::identity::{Actor, Fingerprint, Principal};
use crate::telemetry;

/// One certificate seen: whose, and until when.
struct Seen {
    partner: String,
    holder: String,
    expiry: i64,
}

/// Bounded by the certificates partner files name (only mapped principals are noted).
fn seen() -> &'static Mutex<HashMap<Fingerprint, Seen>> {
    static SEEN: OnceLock<Mutex<HashMap<Fingerprint, Seen>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

/// A holder as the gauge labels it: `system:<id>` or `person:<id>`.
pub fn holder(principal: &Principal) -> String {
    match &principal.actor {
        Actor::System(id) => format!("system:{id}"),
        Actor::Person { id, .. } => format!("person:{id}"),
    }
}

/// Notes a certificate a mapped principal presented, expiring at `expiry` (Unix seconds);
/// `true` the first time this replica sees it.
pub fn note(principal: &Principal, expiry: i64) -> bool {
    let Ok(mut map) = seen().lock() else {
        return false;
    };
    let first = !map.contains_key(&principal.fingerprint);
    if first {
        map.insert(
            principal.fingerprint,
            Seen {
                partner: principal.partner.to_string(),
                holder: holder(principal),
                expiry,
            },
        );
        publish(&map, &principal.partner.to_string(), &holder(principal));
    }
    first
}

/// Forgets the certificates `config` no longer maps and republishes their holders' series.
pub fn prune(config: &Config) {
    let Ok(mut map) = seen().lock() else {
        return;
    };
    let gone: Vec<(String, String)> = map
        .iter()
        .filter(|(fp, _)| config.principal(fp).is_none())
        .map(|(_, s)| (s.partner.clone(), s.holder.clone()))
        .collect();
    if gone.is_empty() {
        return;
    }
    map.retain(|fp, _| config.principal(fp).is_some());
    for (partner, holder) in gone {
        publish(&map, &partner, &holder);
    }
}

fn publish(map: &HashMap<Fingerprint, Seen>, partner: &str, holder: &str) {
    let latest = map
        .values()
        .filter(|s| s.partner == partner && s.holder == holder)
        .map(|s| s.expiry)
        .max();
    metrics::gauge!(
        telemetry::CLIENT_CERT_EXPIRY,
        "partner" => partner.to_owned(),
        "holder" => holder.to_owned()
    )
    .set(latest.map_or(f64::NAN, |at| at as f64));
}
