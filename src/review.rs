//! Safeguarding review: disclosures without consent (and those an agreement always reviews)
//! wait for a designated safeguarding lead of the sending partner, who sees exactly which
//! fields each recipient would get and which are withheld, then approves or rejects. Four
//! eyes: the certificate that submitted a referral can never decide it. A decision is final;
//! approval seals and queues every held delivery in the decision's own transaction.

use serde_json::{Value, json};

use crate::config::Config;
use crate::identity::{Principal, Role};
use crate::ids::{DeliveryId, ReferralId};
use crate::intake::Claims;
use crate::runtime::Runtime;
use crate::schema::{leaf_pointers, minimise};
use crate::store::StoreError;
use crate::store::records::{DecideOutcome, DeliveryStatus, ReferralDetail, ReviewDecision};
use crate::submit::{SubmitError, seal_delivery};

/// Longest reason a lead may give: a paragraph, not a case file.
pub const MAX_REASON: usize = 2000;

/// Why a review request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No such held referral for the caller's partner (ids do not leak: 404).
    #[error("not found")]
    NotFound,
    /// The caller is not a designated safeguarding lead of the sending partner.
    #[error("only the sending partner's designated safeguarding leads review held referrals")]
    NotALead,
    /// The caller submitted this referral.
    #[error("four eyes: the certificate that submitted a referral cannot decide it")]
    FourEyes,
    /// It was already decided.
    #[error("this referral has already been decided")]
    AlreadyDecided,
    /// The decision body is not acceptable.
    #[error("{0}")]
    Invalid(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hold could not be opened or a delivery sealed.
    #[error("cannot release: {0}")]
    Release(String),
}

fn require_lead(caller: &Principal) -> Result<(), ReviewError> {
    if caller.has_role(Role::DesignatedSafeguardingLead) {
        Ok(())
    } else {
        Err(ReviewError::NotALead)
    }
}

/// The held referrals of the caller's partner, oldest first, with their age.
pub async fn queue(rt: &Runtime, caller: &Principal) -> Result<Vec<Value>, ReviewError> {
    require_lead(caller)?;
    let now = rt.clock.unix_seconds() as i64;
    let rows = rt.store.held_referrals(caller.partner.as_str()).await?;
    Ok(rows
        .into_iter()
        .map(|h| {
            json!({
                "id": h.referral_id, "type": h.referral_type, "received_at": h.received_at,
                "age_seconds": (now - h.received_at).max(0), "override": h.consent_override,
                "escalated": h.escalated_at.is_some(), "recipients": h.recipients,
            })
        })
        .collect())
}

/// Loads a held referral of the caller's partner, opens its hold and checks four eyes.
async fn load(
    rt: &Runtime,
    config: &Config,
    caller: &Principal,
    id: &str,
) -> Result<(ReferralDetail, Claims), ReviewError> {
    require_lead(caller)?;
    let detail = rt
        .store
        .referral_detail(id)
        .await?
        .filter(|d| d.referral.sender == caller.partner.as_str())
        .ok_or(ReviewError::NotFound)?;
    let Some(sealed) = rt.store.hold_sealed(id).await? else {
        return Err(if detail.events.iter().any(|e| e.kind == "reviewed") {
            ReviewError::AlreadyDecided
        } else {
            ReviewError::NotFound
        });
    };
    let plain = config
        .storage_key
        .open(&sealed)
        .map_err(|e| ReviewError::Release(e.to_string()))?;
    let claims: Claims =
        serde_json::from_slice(&plain).map_err(|e| ReviewError::Release(e.to_string()))?;
    Ok((detail, claims))
}

fn submitter(detail: &ReferralDetail) -> Option<&str> {
    detail
        .events
        .iter()
        .find(|e| e.kind == "accepted")
        .and_then(|e| e.actor.as_deref())
}

/// One held referral as its reviewer sees it: per recipient, exactly which fields would be
/// disclosed and which withheld, with the lawful basis, override and its justification.
pub async fn show(rt: &Runtime, caller: &Principal, id: &str) -> Result<Value, ReviewError> {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let (detail, claims) = load(rt, config, caller, id).await?;
    let r = &claims.referral;
    let now = rt.clock.unix_seconds() as i64;
    let recipients: Vec<Value> = detail
        .deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::HeldForReview)
        .map(|d| {
            let view = config
                .partners
                .iter()
                .find(|(id, _)| id.as_str() == d.recipient)
                .and_then(|(_, p)| config.schemas.view(&p.kind, &r.referral_type).map(|v| (p, v)));
            match view {
                Some((p, v)) => {
                    let m = minimise(&r.payload, &v.source);
                    json!({ "to": d.recipient, "recipient_name": p.name, "agreement": d.agreement,
                            "view": format!("{}/{}", p.kind, r.referral_type),
                            "disclosed": leaf_pointers(&m.value), "withheld": m.withheld })
                }
                None => json!({ "to": d.recipient, "agreement": d.agreement, "disclosed": [], "withheld": [] }),
            }
        })
        .collect();
    Ok(json!({
        "id": detail.referral.id,
        "type": r.referral_type,
        "sender_ref": r.sender_ref,
        "received_at": detail.referral.received_at,
        "age_seconds": (now - detail.referral.received_at).max(0),
        "submitted_by": submitter(&detail),
        "lawful_basis": r.lawful_basis,
        "consent": { "status": r.consent.status, "override": r.consent.override_,
                     "justification": r.consent.justification },
        "subject_informed": r.subject_informed,
        "court_order_ref": r.court_order_ref,
        "recipients": recipients,
        "can_decide": submitter(&detail) != Some(caller.to_string().as_str()),
    }))
}

/// Records a lead's decision. Approval seals each held delivery and queues it; rejection
/// means no delivery ever exists. Returns each recipient's status.
pub async fn decide(
    rt: &Runtime,
    caller: &Principal,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) -> Result<Value, ReviewError> {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if !approve && reason.is_none() {
        return Err(ReviewError::Invalid("a rejection needs a reason"));
    }
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ReviewError::Invalid(
            "the reason is longer than 2000 characters",
        ));
    }
    let (detail, claims) = load(rt, config, caller, id).await?;
    if submitter(&detail) == Some(caller.to_string().as_str()) {
        return Err(ReviewError::FourEyes);
    }
    let now = rt.clock.unix_seconds();
    let referral_id = ReferralId::parse(id).map_err(|_| ReviewError::NotFound)?;
    let mut released = Vec::new();
    if approve {
        let acked_old: Vec<String> = match &claims.referral.supersedes {
            Some(old) => rt
                .store
                .delivery_states(old, caller.partner.as_str())
                .await?
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.status == DeliveryStatus::Acknowledged)
                .map(|s| s.recipient)
                .collect(),
            None => Vec::new(),
        };
        for d in detail
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::HeldForReview)
        {
            let partner = config
                .partners
                .values()
                .find(|p| p.id.as_str() == d.recipient)
                .ok_or_else(|| {
                    ReviewError::Release(format!("{} is no longer a partner", d.recipient))
                })?;
            let view = config
                .schemas
                .view(&partner.kind, &claims.referral.referral_type)
                .ok_or_else(|| ReviewError::Release(format!("no view for {}", d.recipient)))?;
            let minimised = minimise(&claims.referral.payload, &view.source);
            let delivery_id = DeliveryId::parse(&d.id)
                .map_err(|_| ReviewError::Release("bad delivery id".into()))?;
            let sealed = seal_delivery(
                config,
                &claims,
                &referral_id,
                &delivery_id,
                partner,
                &minimised.value,
                acked_old.iter().any(|a| a == &d.recipient),
                now,
            )
            .map_err(|e: SubmitError| ReviewError::Release(e.to_string()))?;
            released.push((d.id.clone(), sealed));
        }
    }
    let reason_sealed = match reason {
        Some(r) => Some(
            config
                .storage_key
                .seal(r.as_bytes())
                .map_err(|e| ReviewError::Release(e.to_string()))?,
        ),
        None => None,
    };
    let outcome = rt
        .store
        .decide_hold(&ReviewDecision {
            referral_id: id.to_owned(),
            approve,
            at: now as i64,
            actor: caller.to_string(),
            reason_sealed,
            released,
        })
        .await?;
    if outcome == DecideOutcome::AlreadyDecided {
        return Err(ReviewError::AlreadyDecided);
    }
    if approve {
        rt.inbox_changed();
    }
    let states = rt
        .store
        .delivery_states(id, caller.partner.as_str())
        .await?
        .unwrap_or_default();
    Ok(json!({
        "id": id,
        "decision": if approve { "approve" } else { "reject" },
        "deliveries": states.iter().map(|s| json!({ "to": s.recipient, "status": s.status.as_str() })).collect::<Vec<_>>(),
    }))
}
