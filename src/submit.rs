//! The path of one submitted referral: open the envelope, parse and decide, minimise and
//! seal each recipient's copy (or encrypt the hold), and commit it all with its audit events
//! in one store transaction. A refusal writes only a `rejected` audit event with its reason.

use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::envelope::referral::{self, EnvelopeError, SealError};
use crate::identity::Principal;
use crate::ids::{DeliveryId, IdSource, ReferralId};
use crate::intake::{self, Claims, Decision, Disposition, HoldReason, IntakeError};
use crate::runtime::Runtime;
use crate::schema::minimise;
use crate::store::StoreError;
use crate::store::records::{
    Acceptance, AuditRecord, DeliveryRecord, DeliveryStatus, HoldRecord, ReferralRecord,
};

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The envelope was refused.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The referral was refused.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// The gateway could not seal (a key is missing: a configuration fault).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl SubmitError {
    /// The reason slug recorded in the `rejected` audit event.
    pub fn slug(&self) -> &'static str {
        match self {
            SubmitError::Envelope(e) => e.slug(),
            SubmitError::Intake(e) => e.slug(),
            SubmitError::Seal(_) => "seal-failed",
            SubmitError::Store(_) => "store-failed",
        }
    }
}

/// An accepted referral, as the `202` reports it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The new referral's id.
    pub id: ReferralId,
    /// Each recipient and its delivery status.
    pub deliveries: Vec<(String, DeliveryStatus)>,
}

/// Accepts one referral body from `caller`.
pub async fn submit(
    rt: &Arc<Runtime>,
    caller: &Principal,
    body: Bytes,
) -> Result<Submitted, SubmitError> {
    let outcome = run(rt, caller, body).await;
    if let Err(e) = &outcome {
        record_rejection(rt, caller, e.slug()).await;
    }
    outcome
}

/// Runs CPU work (JOSE, RSA above all; parsing; validation; minimisation) on the blocking
/// pool so the reactor keeps serving other connections. At most one submission per core
/// runs at a time (the runtime's CPU slots, handed out first come first served): with more,
/// the cores would be time-sliced among them and every submission would finish late.
async fn blocking<T: Send + 'static>(
    rt: &Runtime,
    f: impl FnOnce() -> Result<T, SubmitError> + Send + 'static,
) -> Result<T, SubmitError> {
    let _slot = rt.cpu_slot().await;
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(SubmitError::Seal(SealError("intake task failed".into()))))
}

/// The first CPU step's result: a finished acceptance, or, for a correction, the decision
/// (building it needs the superseded referral's recipients from the store first).
enum Step {
    Ready(Prepared),
    Correction(Decided),
}

async fn run(rt: &Arc<Runtime>, caller: &Principal, body: Bytes) -> Result<Submitted, SubmitError> {
    let now = rt.clock.unix_seconds();
    let step = {
        let (rt2, caller) = (rt.clone(), caller.clone());
        blocking(rt, move || {
            let snapshot = rt2.snapshot();
            let decided = decide(&snapshot.config, &caller, &body, now)?;
            if decided.claims.referral.supersedes.is_none() {
                let built = build(
                    &snapshot.config,
                    rt2.ids.as_ref(),
                    &caller,
                    &decided,
                    &[],
                    now,
                )?;
                Ok(Step::Ready(built))
            } else {
                Ok(Step::Correction(decided))
            }
        })
        .await?
    };
    let prepared = match step {
        Step::Ready(prepared) => prepared,
        Step::Correction(decided) => {
            let acked_old = superseded_recipients(rt, caller, &decided.claims).await?;
            let (rt2, caller) = (rt.clone(), caller.clone());
            blocking(rt, move || {
                let snapshot = rt2.snapshot();
                build(
                    &snapshot.config,
                    rt2.ids.as_ref(),
                    &caller,
                    &decided,
                    &acked_old,
                    now,
                )
            })
            .await?
        }
    };
    let deliveries: Vec<(String, DeliveryStatus)> = prepared
        .acceptance
        .deliveries
        .iter()
        .map(|d| (d.recipient.clone(), d.status))
        .collect();
    match rt.store.accept(prepared.acceptance).await {
        Ok(()) => {}
        Err(StoreError::Replay) => return Err(IntakeError::Replay.into()),
        Err(e) => return Err(SubmitError::Store(e)),
    }
    if deliveries.iter().any(|(_, s)| *s == DeliveryStatus::Queued) {
        rt.inbox_changed();
    }
    Ok(Submitted {
        id: prepared.id,
        deliveries,
    })
}

/// Appends a `rejected` audit event naming only the reason; used for every refusal of a
/// submission, including those decided before the body is read (media type, size).
pub async fn record_rejection(rt: &Runtime, caller: &Principal, reason: &'static str) {
    let event = AuditRecord {
        at: rt.clock.unix_seconds() as i64,
        kind: "rejected",
        referral_id: None,
        delivery_id: None,
        actor: Some(caller.to_string()),
        detail: json!({ "reason": reason }),
    };
    if let Err(store_err) = rt.store.record_event(&event).await {
        tracing::error!(error = %store_err, reason, "could not record a rejection");
    }
}

/// An acceptance with the id it was minted under.
struct Prepared {
    id: ReferralId,
    acceptance: Acceptance,
}

/// A referral opened, parsed and decided.
struct Decided {
    claims: Claims,
    decision: Decision,
    signed_payload: Vec<u8>,
}

/// For a correction: the recipients that already acknowledged the superseded referral (they
/// get the new one marked `supersedes`). It must be the sender's own referral, else `404`.
async fn superseded_recipients(
    rt: &Runtime,
    caller: &Principal,
    claims: &Claims,
) -> Result<Vec<String>, SubmitError> {
    let Some(old) = &claims.referral.supersedes else {
        return Ok(Vec::new());
    };
    match rt.store.delivery_states(old, caller.partner.as_str()).await {
        Ok(Some(states)) => Ok(states
            .into_iter()
            .filter(|s| s.status == DeliveryStatus::Acknowledged)
            .map(|s| s.recipient)
            .collect()),
        Ok(None) => Err(SubmitError::Intake(IntakeError::UnknownSuperseded)),
        Err(e) => Err(SubmitError::Store(e)),
    }
}

/// The whole CPU path of one referral that corrects nothing, without the store: open the
/// envelope, parse and decide, minimise and seal each recipient's copy (or encrypt the hold).
/// What [`submit`] commits; also what `refex bench` and the criterion benches time.
pub fn prepare(
    config: &crate::config::Config,
    ids: &dyn IdSource,
    caller: &Principal,
    body: &[u8],
    now: u64,
) -> Result<Acceptance, SubmitError> {
    let decided = decide(config, caller, body, now)?;
    Ok(build(config, ids, caller, &decided, &[], now)?.acceptance)
}

fn decide(
    config: &crate::config::Config,
    caller: &Principal,
    body: &[u8],
    now: u64,
) -> Result<Decided, SubmitError> {
    let sender_keys = config
        .partners
        .get(&caller.partner)
        .and_then(|p| p.keys.as_ref())
        .ok_or(EnvelopeError::SignerNotSender)?;
    let signed_payload = referral::open(body, &config.gateway_keys, sender_keys)?;
    let claims = intake::parse(&signed_payload, &config.schemas)?;
    let decision = intake::decide(&claims, caller, config, now)?;
    Ok(Decided {
        claims,
        decision,
        signed_payload,
    })
}

fn build(
    config: &crate::config::Config,
    ids: &dyn IdSource,
    caller: &Principal,
    decided: &Decided,
    acked_old: &[String],
    now: u64,
) -> Result<Prepared, SubmitError> {
    let Decided {
        claims,
        decision,
        signed_payload,
    } = decided;
    let r = &claims.referral;
    let referral_id = ReferralId::mint(ids);
    let at = now as i64;
    let actor = Some(caller.to_string());
    let lawful_basis = serde_json::to_value(&r.lawful_basis).unwrap_or(Value::Null);
    let consent = json!({ "status": r.consent.status, "override": r.consent.override_ });
    let subject_informed = serde_json::to_value(&r.subject_informed).unwrap_or(Value::Null);
    let event = |kind: &'static str, delivery: Option<&DeliveryId>, detail: Value| AuditRecord {
        at,
        kind,
        referral_id: Some(referral_id.to_string()),
        delivery_id: delivery.map(ToString::to_string),
        actor: actor.clone(),
        detail,
    };
    let mut events = vec![event(
        "accepted",
        None,
        json!({
            "type": r.referral_type,
            "sender": caller.partner,
            "lawful_basis": lawful_basis,
            "consent": consent,
            "subject_informed": subject_informed,
            "recipients": decision.routes.iter().map(|x| json!({"to": x.recipient, "agreement": x.agreement})).collect::<Vec<_>>(),
        }),
    )];
    let mut deliveries = Vec::with_capacity(decision.routes.len());
    for route in &decision.routes {
        let delivery_id = DeliveryId::mint(ids);
        let recipient = config.partners.get(&route.recipient);
        let view = recipient.and_then(|p| config.schemas.view(&p.kind, &r.referral_type));
        let (Some(recipient), Some(view)) = (recipient, view) else {
            return Err(SealError(format!("no view or partner for {}", route.recipient)).into());
        };
        let minimised = minimise(&r.payload, &view.source);
        events.push(event(
            "minimised",
            Some(&delivery_id),
            json!({ "to": route.recipient, "view": format!("{}/{}", recipient.kind, r.referral_type),
                    "disclosed": crate::schema::leaf_pointers(&minimised.value),
                    "withheld": minimised.withheld }),
        ));
        match route.disposition {
            Disposition::Hold(reason) => {
                events.push(event(
                    "held",
                    Some(&delivery_id),
                    json!({ "to": route.recipient, "reason": hold_reason(reason) }),
                ));
                deliveries.push(DeliveryRecord {
                    id: delivery_id.to_string(),
                    recipient: route.recipient.to_string(),
                    agreement: route.agreement.clone(),
                    status: DeliveryStatus::HeldForReview,
                    sealed: None,
                });
            }
            Disposition::Deliver => {
                let tell_supersedes = acked_old.iter().any(|a| a == route.recipient.as_str());
                let sealed = seal_delivery(
                    config,
                    claims,
                    &referral_id,
                    &delivery_id,
                    recipient,
                    &minimised.value,
                    tell_supersedes,
                    now,
                )?;
                events.push(event(
                    "queued",
                    Some(&delivery_id),
                    json!({ "to": route.recipient }),
                ));
                deliveries.push(DeliveryRecord {
                    id: delivery_id.to_string(),
                    recipient: route.recipient.to_string(),
                    agreement: route.agreement.clone(),
                    status: DeliveryStatus::Queued,
                    sealed: Some(sealed),
                });
            }
        }
    }
    let hold = if decision.any_held() {
        let sealed = config
            .storage_key
            .seal(signed_payload.as_slice())
            .map_err(|e| SealError(e.to_string()))?;
        Some(HoldRecord {
            sealed,
            storage_key_id: config.storage_key.id().to_owned(),
        })
    } else {
        None
    };
    let acceptance = Acceptance {
        referral: ReferralRecord {
            id: referral_id.to_string(),
            sender: caller.partner.to_string(),
            sender_ref: r.sender_ref.clone(),
            referral_type: r.referral_type.to_string(),
            received_at: at,
            lawful_basis: lawful_basis.to_string(),
            consent_status: json!(r.consent.status)
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            consent_override: r
                .consent
                .override_
                .and_then(|o| json!(o).as_str().map(str::to_owned)),
            subject_informed: subject_informed.to_string(),
            supersedes: r.supersedes.clone(),
            justification_sealed: match &r.consent.justification {
                Some(j) => Some(
                    config
                        .storage_key
                        .seal(j.as_bytes())
                        .map_err(|e| SealError(e.to_string()))?,
                ),
                None => None,
            },
        },
        jti: claims.jti.clone(),
        deliveries,
        hold,
        events,
        subjects: config.subject_key.keys_in(&r.payload),
    };
    Ok(Prepared {
        id: referral_id,
        acceptance,
    })
}

/// Seals one recipient's delivery of a referral: the contract's delivery payload with the
/// minimised view, signed by the gateway and encrypted to the recipient. `supersedes` is set
/// only when `tell_supersedes` (the recipient acknowledged the referral this one corrects).
/// Intake and review approval both seal through here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_delivery(
    config: &crate::config::Config,
    claims: &Claims,
    referral_id: &ReferralId,
    delivery_id: &DeliveryId,
    recipient: &crate::config::partners::Partner,
    minimised: &Value,
    tell_supersedes: bool,
    now: u64,
) -> Result<String, SubmitError> {
    let r = &claims.referral;
    let keys = recipient
        .keys
        .as_ref()
        .ok_or_else(|| SealError(format!("{} has no keys", recipient.id)))?;
    // Only a recipient that acknowledged the old referral is told of the link: to anyone
    // else it would disclose that an earlier referral existed.
    let supersedes = r.supersedes.as_deref().filter(|_| tell_supersedes);
    // Serialised from borrows: the minimised payload is not copied again.
    let delivery = DeliveryClaims {
        iss: &config.settings.gateway_id,
        aud: recipient.id.as_str(),
        jti: delivery_id.as_str(),
        iat: now,
        delivery: DeliveryBody {
            referral_id: referral_id.as_str(),
            from: claims.iss.as_str(),
            referral_type: r.referral_type.as_str(),
            sender_ref: &r.sender_ref,
            lawful_basis: &r.lawful_basis,
            consent: ConsentView {
                status: r.consent.status,
                override_: r.consent.override_,
            },
            subject_informed: &r.subject_informed,
            payload: minimised,
            supersedes,
        },
    };
    let bytes = serde_json::to_vec(&delivery).map_err(|e| SealError(e.to_string()))?;
    Ok(referral::seal(&bytes, &config.gateway_keys, keys)?)
}

/// The delivery JWS payload (contract: "Receiving: the inbox"), in the contract's key order.
#[derive(serde::Serialize)]
struct DeliveryClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    jti: &'a str,
    iat: u64,
    delivery: DeliveryBody<'a>,
}

/// The `delivery` object of [`DeliveryClaims`].
#[derive(serde::Serialize)]
struct DeliveryBody<'a> {
    referral_id: &'a str,
    from: &'a str,
    #[serde(rename = "type")]
    referral_type: &'a str,
    sender_ref: &'a str,
    lawful_basis: &'a crate::intake::claims::LawfulBasis,
    consent: ConsentView,
    subject_informed: &'a crate::intake::claims::SubjectInformed,
    payload: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    supersedes: Option<&'a str>,
}

/// Consent as a delivery shows it: status and override, never the justification.
#[derive(serde::Serialize)]
struct ConsentView {
    status: crate::intake::claims::ConsentStatus,
    #[serde(rename = "override")]
    override_: Option<crate::intake::claims::Override>,
}

fn hold_reason(reason: HoldReason) -> Value {
    match reason {
        HoldReason::ConsentOverride(o) => json!({ "consent-override": o }),
        HoldReason::AgreementRequiresReview => json!("agreement-requires-review"),
    }
}
