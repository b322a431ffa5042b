//! Disclosure records: for each delivery of a referral, what was disclosed (field pointers,
//! never values), to whom, when, by whom, why (lawful basis, consent, override) and who
//! approved it, assembled from the referral record and its audit events and shaped for who
//! is asking. The override justification is shown only to the sender's leads and auditors;
//! a recipient sees only what it received.

use serde_json::{Value, json};

use crate::envelope::at_rest::StorageKey;
use crate::identity::PartnerId;
use crate::store::records::ReferralDetail;

/// Who a record is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// The sending partner's people; `justification` for leads and auditors only.
    Sender {
        /// Whether the override justification may be shown.
        justification: bool,
    },
    /// A receiving partner (subject access): only its own deliveries, nothing withheld shown.
    Recipient(PartnerId),
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The disclosure record of one referral for `viewer`.
pub fn record(detail: &ReferralDetail, viewer: &Viewer, storage_key: &StorageKey) -> Value {
    let r = &detail.referral;
    let event_for = |kind: &str, delivery: &str| {
        detail
            .events
            .iter()
            .find(|e| e.kind == kind && e.delivery_id.as_deref() == Some(delivery))
    };
    let deliveries: Vec<Value> = detail
        .deliveries
        .iter()
        .filter(|d| match viewer {
            Viewer::Sender { .. } => true,
            Viewer::Recipient(p) => d.recipient == p.as_str(),
        })
        .map(|d| {
            let minimised = event_for("minimised", &d.id);
            let disclosed = minimised
                .map(|e| e.detail["disclosed"].clone())
                .unwrap_or(Value::Null);
            let mut out = json!({
                "delivery_id": d.id,
                "to": d.recipient,
                "agreement": d.agreement,
                "status": d.status.as_str(),
                "view": minimised.map(|e| e.detail["view"].clone()).unwrap_or(Value::Null),
                "disclosed": disclosed,
                "queued_at": event_for("queued", &d.id).map(|e| e.at),
                "fetched_at": event_for("fetched", &d.id).map(|e| e.at),
                "acknowledged_at": event_for("acknowledged", &d.id).map(|e| e.at),
                "approved_by": event_for("reviewed", &d.id).and_then(|e| e.actor.clone()),
            });
            if matches!(viewer, Viewer::Sender { .. }) {
                out["withheld"] = minimised
                    .map(|e| e.detail["withheld"].clone())
                    .unwrap_or(Value::Null);
            }
            out
        })
        .collect();
    let accepted = detail.events.iter().find(|e| e.kind == "accepted");
    let mut consent = json!({ "status": r.consent_status, "override": r.consent_override });
    if let (
        Viewer::Sender {
            justification: true,
        },
        Some(sealed),
    ) = (viewer, &r.justification_sealed)
    {
        consent["justification"] = storage_key
            .open(sealed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Value::from)
            .unwrap_or(Value::Null);
    }
    json!({
        "referral_id": r.id,
        "type": r.referral_type,
        "from": r.sender,
        "sender_ref": r.sender_ref,
        "received_at": r.received_at,
        "sent_by": accepted.and_then(|e| e.actor.clone()),
        "lawful_basis": parsed(&r.lawful_basis),
        "consent": consent,
        "subject_informed": parsed(&r.subject_informed),
        "supersedes": r.supersedes,
        "deliveries": deliveries,
    })
}

/// The CSV columns of [`to_csv`].
pub const CSV_HEADER: &[&str] = &[
    "referral_id",
    "type",
    "from",
    "to",
    "received_at",
    "delivery_status",
    "article6",
    "article9",
    "consent_status",
    "consent_override",
    "subject_informed",
    "approved_by",
    "disclosed_fields",
];

/// Disclosure records as CSV, one row per delivery (portability for subject access).
pub fn to_csv(records: &[Value]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let s = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for r in records {
        for d in r["deliveries"].as_array().into_iter().flatten() {
            let disclosed = d["disclosed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(";")
                })
                .unwrap_or_default();
            w.write_record([
                s(&r["referral_id"]),
                s(&r["type"]),
                s(&r["from"]),
                s(&d["to"]),
                s(&r["received_at"]),
                s(&d["status"]),
                s(&r["lawful_basis"]["article6"]),
                s(&r["lawful_basis"]["article9"]),
                s(&r["consent"]["status"]),
                s(&r["consent"]["override"]),
                s(&r["subject_informed"]["status"]),
                s(&d["approved_by"]),
                disclosed,
            ])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
