//! The path of one submitted referral: open the envelope, parse and decide, minimise and
//! seal each recipient's copy (or encrypt the hold), and commit it all with its audit events
//! in one store transaction. A refusal writes only a `rejected` audit event with its reason.
//!
//! Submission is idempotent by `jti`: a retry of the same referral (same sender, `jti` and
//! signed claims) is answered with the original acceptance; and when a commit's outcome is
//! lost (the database connection died during `COMMIT`), the replay marker says whether it
//! committed before the sender is answered.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::event::{
    self as ev, ActorRef, AuditEvent, AuditRecord, ConsentRecord, RecipientAgreement,
};
use crate::cpu::CpuError;
use crate::envelope::referral::{self, EnvelopeError, SealError};
use crate::identity::{PartnerId, Principal};
use crate::ids::{DeliveryId, IdSource, Jti, ReferralId};
use crate::intake::{self, Claims, Decision, Disposition, HoldReason, IntakeError};
use crate::runtime::Runtime;
use crate::schema::minimise;
use crate::store::StoreError;
use crate::store::records::{
    AcceptOutcome, Acceptance, DeliveryRecord, DeliveryStatus, HoldRecord, ReferralRecord,
};

/// How long a submission whose commit outcome was lost keeps asking the store whether it
/// committed, before answering `503`: well inside the request timeout, long enough to ride
/// out a database restart.
pub const COMMIT_OUTCOME_DEADLINE: Duration = Duration::from_secs(10);

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
    /// The `jti` was used before for a different referral (or before the gateway kept
    /// which).
    #[error("this \"jti\" has been used before for a different referral")]
    Replay,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// No thread could be started to do the submission's CPU work on (a process or thread
    /// limit was met): nothing was done, and a retry can succeed.
    #[error("the gateway could not start a thread for this submission's work; retry later")]
    Busy,
}

impl SubmitError {
    /// The reason slug recorded in the `rejected` audit event.
    pub fn slug(&self) -> &'static str {
        match self {
            SubmitError::Envelope(e) => e.slug(),
            SubmitError::Intake(e) => e.slug(),
            SubmitError::Seal(_) => "seal-failed",
            SubmitError::Replay => IntakeError::Replay.slug(),
            SubmitError::Store(_) => "store-failed",
            SubmitError::Busy => "gateway-busy",
        }
    }
}

/// An accepted referral, as the `202` reports it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The referral's id.
    pub id: ReferralId,
    /// Each recipient and its delivery status.
    pub deliveries: Vec<(PartnerId, DeliveryStatus)>,
    /// Whether this answers a retry of an earlier, identical submission.
    pub repeated: bool,
}

/// Accepts one referral body from `caller`.
pub async fn submit(
    rt: &Arc<Runtime>,
    caller: &Principal,
    body: Vec<u8>,
) -> Result<Submitted, SubmitError> {
    let outcome = run(rt, caller, body).await;
    if let Err(e) = &outcome {
        record_rejection(rt, caller, e.slug()).await;
    }
    outcome
}

/// Runs CPU work (JOSE, RSA above all; parsing; validation; minimisation) on the CPU
/// threads (`cpu::CpuPool`: one per core, first come first served, below the priority of
/// the store's writer and the reactor) so the reactor keeps serving other connections and
/// a referral already prepared is committed before the next is prepared.
async fn blocking<T: Send + 'static>(
    rt: &Runtime,
    f: impl FnOnce() -> Result<T, SubmitError> + Send + 'static,
) -> Result<T, SubmitError> {
    let queued = std::time::Instant::now();
    let timed = move || {
        let started = std::time::Instant::now();
        stage("waiting-for-cpu", started - queued);
        let done = f();
        stage("cpu", started.elapsed());
        done
    };
    match rt.cpu.run(timed).await {
        Ok(outcome) => outcome,
        Err(CpuError::NoThread) => Err(SubmitError::Busy),
        Err(CpuError::Failed) => Err(SubmitError::Seal(SealError("intake task failed".into()))),
    }
}

/// Records how long a submission spent in `name` (`telemetry::SUBMISSION_STAGE`).
fn stage(name: &'static str, took: Duration) {
    metrics::histogram!(crate::telemetry::SUBMISSION_STAGE, "stage" => name)
        .record(took.as_secs_f64());
}

/// The first CPU step's result: a finished acceptance, or, for a correction, the decision
/// (building it needs the superseded referral's recipients from the store first).
enum Step {
    Ready(Acceptance),
    Correction(Decided),
    /// Refused after the claims were read: if it is a retry of a referral already accepted
    /// (the same `jti` and claims), the answer is that acceptance, not this refusal (the
    /// `iat` may have aged, or the agreement gone, since).
    Refused(SubmitError, Retry),
}

/// What identifies a submission as a retry of an earlier one.
#[derive(Clone)]
struct Retry {
    jti: Jti,
    digest: String,
}

/// A refusal, with what identifies the submission when its claims could be read.
struct Refusal {
    error: SubmitError,
    retry: Option<Retry>,
}

impl<E: Into<SubmitError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal {
            error: e.into(),
            retry: None,
        }
    }
}

async fn run(
    rt: &Arc<Runtime>,
    caller: &Principal,
    body: Vec<u8>,
) -> Result<Submitted, SubmitError> {
    let now = rt.clock.unix_seconds();
    let step = {
        let (rt2, caller) = (rt.clone(), caller.clone());
        blocking(rt, move || {
            let snapshot = rt2.snapshot();
            let decided = match decide(&snapshot.config, &caller, &body, now) {
                Ok(d) => d,
                Err(Refusal {
                    error,
                    retry: Some(retry),
                }) => return Ok(Step::Refused(error, retry)),
                Err(Refusal { error, .. }) => return Err(error),
            };
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
    let acceptance = match step {
        Step::Ready(acceptance) => acceptance,
        Step::Refused(error, retry) => {
            // Whether it is a retry must be known before refusing: a store that cannot say is
            // a 503 (retry later), never a refusal of what may be an accepted referral.
            return match rt.store.prior_acceptance(&caller.partner, &retry.jti).await {
                Ok(Some(prior)) if prior.digest == retry.digest => {
                    original(rt, &caller.partner, prior.referral_id).await
                }
                Ok(_) => Err(error),
                Err(store) => Err(SubmitError::Store(store)),
            };
        }
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
    let submitted = Submitted {
        id: acceptance.referral.id.clone(),
        deliveries: acceptance
            .deliveries
            .iter()
            .map(|d| (d.recipient.clone(), d.status))
            .collect(),
        repeated: false,
    };
    let (sender, jti, digest) = (
        acceptance.referral.sender.clone(),
        acceptance.jti.clone(),
        acceptance.digest.clone(),
    );
    let committing = std::time::Instant::now();
    let accepted = rt.store.accept(acceptance).await;
    stage("store", committing.elapsed());
    match accepted {
        Ok(AcceptOutcome::Accepted) => {}
        Ok(AcceptOutcome::Replay(Some(prior))) if prior.digest == digest => {
            return original(rt, &sender, prior.referral_id).await;
        }
        Ok(AcceptOutcome::Replay(_)) => return Err(SubmitError::Replay),
        Err(StoreError::Unavailable(reason)) => {
            // The store may have committed before the failure reached us (a connection lost
            // during COMMIT): the replay marker says which, once the store answers again.
            match commit_outcome(rt, &sender, &jti).await {
                Some(prior) if prior.referral_id == submitted.id => {
                    tracing::warn!(referral = %submitted.id, "commit outcome was lost; the replay marker shows it committed");
                }
                Some(prior) if prior.digest == digest => {
                    return original(rt, &sender, prior.referral_id).await;
                }
                Some(_) => return Err(SubmitError::Replay),
                None => return Err(SubmitError::Store(StoreError::Unavailable(reason))),
            }
        }
        Err(e) => return Err(SubmitError::Store(e)),
    }
    if submitted.deliveries.iter().any(|(_, s)| s.in_inbox()) {
        rt.inbox_changed();
    }
    if submitted
        .deliveries
        .iter()
        .any(|(_, s)| *s == DeliveryStatus::HeldForReview)
    {
        rt.notifier.notify(
            &rt.snapshot().config,
            crate::notify::Notice::Held { partner: sender },
        );
    }
    Ok(submitted)
}

/// After a lost commit outcome: asks the store for the `jti`'s replay marker until it
/// answers or [`COMMIT_OUTCOME_DEADLINE`] passes. `None`: not committed, or still unknown.
async fn commit_outcome(
    rt: &Runtime,
    sender: &PartnerId,
    jti: &Jti,
) -> Option<crate::store::records::PriorAcceptance> {
    let deadline = tokio::time::Instant::now() + COMMIT_OUTCOME_DEADLINE;
    let mut pause = Duration::from_millis(50);
    loop {
        match rt.store.prior_acceptance(sender, jti).await {
            Ok(found) => return found,
            Err(e) => {
                if tokio::time::Instant::now() + pause > deadline {
                    tracing::warn!(error = %e, "commit outcome still unknown at the deadline");
                    return None;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The answer to a retry of a referral that was accepted before: its id and its deliveries'
/// statuses now.
async fn original(
    rt: &Runtime,
    sender: &PartnerId,
    id: ReferralId,
) -> Result<Submitted, SubmitError> {
    let states = rt
        .store
        .delivery_states(&id, sender)
        .await
        .map_err(SubmitError::Store)?
        .ok_or(SubmitError::Replay)?;
    Ok(Submitted {
        id,
        deliveries: states
            .into_iter()
            .map(|s| (s.recipient, s.status))
            .collect(),
        repeated: true,
    })
}

/// Appends a `rejected` audit event naming only the reason; used for every refusal of a
/// submission, including those decided before the body is read (media type, size).
pub async fn record_rejection(rt: &Runtime, caller: &Principal, reason: &'static str) {
    let event = AuditRecord::new(
        rt.clock.unix_time(),
        Some(ActorRef::from(caller)),
        AuditEvent::Rejected(ev::Rejected {
            reason: reason.to_owned(),
        }),
    );
    // The refusal happened whatever the store says: an event it cannot take now is spooled
    // durably and appended when it is back.
    let recorded = if rt.breaker.is_open() {
        Err(None)
    } else {
        rt.store.record_event(&event).await.map_err(Some)
    };
    if let Err(store_err) = recorded {
        if matches!(store_err, Some(StoreError::Unavailable(_))) {
            rt.store_unreachable();
        }
        match rt.spool.append(&event) {
            Ok(()) => tracing::warn!(
                reason,
                "store unavailable: the rejection is spooled for the audit log"
            ),
            Err(e) => {
                tracing::error!(error = %e, store = ?store_err, reason, "could not record a rejection, nor spool it")
            }
        }
    }
}

/// A referral opened, parsed and decided.
struct Decided {
    claims: Claims,
    decision: Decision,
    signed_payload: Vec<u8>,
    /// [`claims_digest`] of `signed_payload`.
    digest: String,
}

/// For a correction: the recipients that already acknowledged the superseded referral (they
/// get the new one marked `supersedes`). It must be the sender's own referral, else `404`.
async fn superseded_recipients(
    rt: &Runtime,
    caller: &Principal,
    claims: &Claims,
) -> Result<Vec<PartnerId>, SubmitError> {
    let Some(old) = &claims.referral.supersedes else {
        return Ok(Vec::new());
    };
    match rt.store.delivery_states(old, &caller.partner).await {
        Ok(Some(states)) => Ok(acknowledged_by(&states)),
        Ok(None) => Err(SubmitError::Intake(IntakeError::UnknownSuperseded)),
        Err(e) => Err(SubmitError::Store(e)),
    }
}

/// The recipients that acknowledged a referral (a correction tells only them of the link).
pub(crate) fn acknowledged_by(states: &[crate::store::records::DeliveryState]) -> Vec<PartnerId> {
    states
        .iter()
        .filter(|s| s.status == DeliveryStatus::Acknowledged)
        .map(|s| s.recipient.clone())
        .collect()
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
    let decided = decide(config, caller, body, now).map_err(|r| r.error)?;
    build(config, ids, caller, &decided, &[], now)
}

fn decide(
    config: &crate::config::Config,
    caller: &Principal,
    body: &[u8],
    now: u64,
) -> Result<Decided, Refusal> {
    let sender_keys = config
        .policy
        .partners
        .get(&caller.partner)
        .and_then(|p| p.keys.as_ref())
        .ok_or(EnvelopeError::SignerNotSender)?;
    let signed_payload = referral::open(body, &config.gateway_keys, sender_keys)?;
    // Signed by the sender: from here on, a refusal may be of a retry of a referral accepted
    // before under rules since changed (a schema, an agreement, the `iat` window), and the
    // answer to a retry is its acceptance. Its identity is read before any rule is applied.
    // Claims that are not strict JSON have none (nothing with them was ever accepted).
    let value = intake::claims::read_json(&signed_payload)?;
    let digest = claims_digest(&signed_payload);
    let retry = retry_identity(&value, &digest);
    let refusal = |e: IntakeError| Refusal {
        error: e.into(),
        retry: retry.clone(),
    };
    let claims = intake::claims::read_value(value).map_err(refusal)?;
    intake::check_content(&claims, &config.policy.schemas).map_err(refusal)?;
    let decision = intake::decide(&claims, caller, &config.rules(), now).map_err(refusal)?;
    Ok(Decided {
        claims,
        decision,
        signed_payload,
        digest,
    })
}

/// The `jti` of signed claims, when they have a string one, with their digest.
fn retry_identity(claims: &Value, digest: &str) -> Option<Retry> {
    let jti = Jti::parse(claims.get("jti")?.as_str()?).ok()?;
    Some(Retry {
        jti,
        digest: digest.to_owned(),
    })
}

/// SHA-256 (hex) of a referral's signed claims: what tells a retry from a different referral
/// under the same `jti`.
pub fn claims_digest(signed_payload: &[u8]) -> String {
    hex::encode(Sha256::digest(signed_payload))
}

/// The `minimised` event of one recipient's copy.
pub(crate) fn minimised_event(
    to: &PartnerId,
    view: &crate::schema::Compiled,
    view_name: String,
    minimised: &crate::schema::Minimised,
) -> AuditEvent {
    AuditEvent::Minimised(ev::Minimised {
        to: to.clone(),
        view: view_name,
        view_version: Some(view.version.clone()),
        disclosed: crate::schema::leaf_pointers(&minimised.value),
        withheld: minimised.withheld.clone(),
    })
}

fn build(
    config: &crate::config::Config,
    ids: &dyn IdSource,
    caller: &Principal,
    decided: &Decided,
    acked_old: &[PartnerId],
    now: u64,
) -> Result<Acceptance, SubmitError> {
    let Decided {
        claims,
        decision,
        signed_payload,
        digest,
    } = decided;
    let r = &claims.referral;
    let referral_id = ReferralId::mint(ids);
    let at = crate::timestamp::UnixTime::from_secs(now as i64);
    let actor = Some(ActorRef::from(caller));
    let consent = ConsentRecord {
        status: r.consent.status,
        override_: r.consent.override_,
    };
    let event = |e: AuditEvent| AuditRecord::new(at, actor.clone(), e).about(&referral_id);
    let mut events = vec![event(AuditEvent::Accepted(ev::Accepted {
        referral_type: r.referral_type.clone(),
        sender: caller.partner.clone(),
        lawful_basis: r.lawful_basis,
        consent,
        subject_informed: r.subject_informed.clone(),
        recipients: decision
            .routes
            .iter()
            .map(|x| RecipientAgreement {
                to: x.recipient.clone(),
                agreement: x.agreement.clone(),
            })
            .collect(),
    }))];
    let mut deliveries = Vec::with_capacity(decision.routes.len());
    for route in &decision.routes {
        let delivery_id = DeliveryId::mint(ids);
        let recipient = config.policy.partners.get(&route.recipient);
        let view = recipient.and_then(|p| config.policy.schemas.view(&p.kind, &r.referral_type));
        let (Some(recipient), Some(view)) = (recipient, view) else {
            return Err(SealError(format!("no view or partner for {}", route.recipient)).into());
        };
        let minimised = minimise(&r.payload, &view.source);
        let view_name = format!("{}/{}", recipient.kind, r.referral_type);
        events.push(
            event(minimised_event(
                &route.recipient,
                view,
                view_name,
                &minimised,
            ))
            .delivery(&delivery_id),
        );
        match route.disposition {
            Disposition::Hold(reason) => {
                events.push(
                    event(AuditEvent::Held(ev::Held {
                        to: route.recipient.clone(),
                        reason: hold_ground(reason),
                    }))
                    .delivery(&delivery_id),
                );
                deliveries.push(DeliveryRecord {
                    id: delivery_id,
                    recipient: route.recipient.clone(),
                    agreement: route.agreement.clone(),
                    status: DeliveryStatus::HeldForReview,
                    sealed: None,
                    subjects: Vec::new(),
                });
            }
            Disposition::Deliver => {
                let tell_supersedes = acked_old.contains(&route.recipient);
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
                events.push(
                    event(AuditEvent::Queued(ev::ToRecipient {
                        to: route.recipient.clone(),
                    }))
                    .delivery(&delivery_id),
                );
                deliveries.push(DeliveryRecord {
                    id: delivery_id,
                    recipient: route.recipient.clone(),
                    agreement: route.agreement.clone(),
                    status: DeliveryStatus::Queued,
                    sealed: Some(sealed),
                    subjects: config.subject_key.keys_in(&minimised.value),
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
    // A correction replaces the original for a recipient once its own copy enters that
    // recipient's inbox; a copy held for review does it when a lead releases it (never if it
    // is rejected).
    let replaced: Vec<PartnerId> = deliveries
        .iter()
        .filter(|d| d.status.in_inbox())
        .map(|d| d.recipient.clone())
        .collect();
    let withdraws = r
        .supersedes
        .clone()
        .filter(|_| !replaced.is_empty())
        .map(|original| crate::store::records::Supersession {
            original,
            recipients: replaced,
        });
    Ok(Acceptance {
        referral: ReferralRecord {
            id: referral_id,
            sender: caller.partner.clone(),
            sender_ref: r.sender_ref.clone(),
            referral_type: r.referral_type.clone(),
            received_at: at,
            lawful_basis: r.lawful_basis,
            consent,
            subject_informed: r.subject_informed.clone(),
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
        digest: digest.clone(),
        deliveries,
        hold,
        events,
        subjects: config.subject_key.keys_in(&r.payload),
        withdraws,
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
) -> Result<crate::envelope::sealed::Sealed, SubmitError> {
    let r = &claims.referral;
    let keys = recipient
        .keys
        .as_ref()
        .ok_or_else(|| SealError(format!("{} has no keys", recipient.id)))?;
    // Only a recipient that acknowledged the old referral is told of the link: to anyone
    // else it would disclose that an earlier referral existed.
    let supersedes = r
        .supersedes
        .as_ref()
        .map(ReferralId::as_str)
        .filter(|_| tell_supersedes);
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
    lawful_basis: &'a crate::lawful::LawfulBasis,
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

/// How a hold's reason is recorded.
pub(crate) fn hold_ground(reason: HoldReason) -> ev::HoldGround {
    match reason {
        HoldReason::ConsentOverride(o) => ev::HoldGround::ConsentOverride(o),
        HoldReason::AgreementRequiresReview => ev::HoldGround::AgreementRequiresReview,
    }
}
