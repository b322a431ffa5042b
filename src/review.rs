//! Safeguarding review: disclosures without consent (and those an agreement always reviews)
//! wait for a designated safeguarding lead of the sending partner, who sees exactly what each
//! recipient would get and what is withheld, then approves or rejects each recipient. Who may
//! review is the permission policy's question (`policy`); this module decides the review.
//!
//! The decision is pure ([`preview`], [`decide`]): a release runs the same intake decision
//! again against the configuration in force (agreement, lawful basis, conditions), and is
//! bound to the preview the lead was shown, by a digest of what each recipient would receive
//! (agreement, view and its version, disclosed and withheld pointers). If minimising now would
//! give anything else, the lead is shown the new preview instead (`preview-stale`). Four eyes
//! compares people, not certificates: no certificate of the submitter can decide.
//!
//! [`Service`] loads a held referral, calls the core and commits its [`Plan`]: each release
//! sealed and queued, each rejection with its reason, `reviewed`/`minimised`/`queued` events,
//! and, when a correction is released, the original withdrawn — in one transaction.

use sha2::{Digest, Sha256};

use crate::audit::event::{
    self as ev, ActorRef, AuditEvent, AuditRecord, Consultation, PreviewShown, Verdict,
};
use crate::config::Config;
use crate::identity::{PartnerId, Principal};
use crate::ids::{DeliveryId, ReferralId};
use crate::intake::{self, Claims, IntakeError, Recipients};
use crate::lifecycle::DeliveryStatus;
use crate::runtime::Runtime;
use crate::schema::{Minimised, leaf_pointers, minimise};
use crate::store::StoreError;
use crate::store::records::{
    DecideOutcome, HeldRow, ReferralDetail, Rejection, Release, ReviewCommit,
};
use crate::timestamp::UnixTime;

/// Longest reason a lead may give: a paragraph, not a case file.
pub const MAX_REASON: usize = 2000;

/// Why a review request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No such held referral of the caller's partner (ids do not leak: 404).
    #[error("not found")]
    NotFound,
    /// The caller submitted this referral (with any of their certificates).
    #[error("four eyes: the person who submitted a referral cannot decide it")]
    FourEyes,
    /// It was already decided (or closed undecided).
    #[error("this referral has already been decided")]
    AlreadyDecided,
    /// The sender withdrew it before a decision.
    #[error("the sender withdrew this referral before it was decided")]
    Withdrawn,
    /// The decision does not say what to do with each held recipient, or is malformed.
    #[error("{0}")]
    Invalid(String),
    /// What a recipient would receive is not what the lead was shown (or nothing was shown).
    #[error(
        "what {} would receive has changed since the preview you were shown (or you have not been shown one): review the new preview and decide again",
        .recipients.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    PreviewStale {
        /// The recipients whose preview differs.
        recipients: Vec<PartnerId>,
    },
    /// The configuration in force no longer permits releasing to this recipient; the hold
    /// stays, to be rejected or withdrawn.
    #[error("releasing to {recipient} is no longer permitted: {reason}")]
    NoLongerPermitted {
        /// The recipient.
        recipient: PartnerId,
        /// What intake would say now.
        reason: IntakeError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hold could not be opened or a delivery sealed (a gateway fault).
    #[error("cannot release: {0}")]
    Release(String),
}

/// A held referral with what the review core needs about it.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Its record, deliveries and events.
    pub detail: ReferralDetail,
    /// Its claims, read back from the hold with intake's one reading.
    pub claims: Claims,
    /// For a correction: the recipients that acknowledged the original.
    pub acked_original: Vec<PartnerId>,
}

impl Pending {
    /// The held deliveries, in order.
    pub fn held(&self) -> impl Iterator<Item = &crate::store::records::DeliveryRow> {
        self.detail
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::HeldForReview)
    }
}

/// What one held recipient would receive if released now.
#[derive(Clone, Debug)]
pub struct RecipientPreview {
    /// The held delivery.
    pub delivery: DeliveryId,
    /// The recipient.
    pub to: PartnerId,
    /// Its display name (its id when it is no longer a partner).
    pub name: String,
    /// The agreement in force that covers it, or why none would now.
    pub permitted: Result<crate::identity::AgreementId, IntakeError>,
    /// The view, `<kind>/<type>`.
    pub view: String,
    /// The view schema's version.
    pub view_version: String,
    /// The copy it would receive.
    pub minimised: Minimised,
    /// Leaf pointers disclosed.
    pub disclosed: Vec<String>,
    /// The digest of all of the above: what an approval must present.
    pub digest: String,
}

/// The preview of every held recipient.
#[derive(Clone, Debug)]
pub struct Preview {
    /// One per held delivery, in order.
    pub recipients: Vec<RecipientPreview>,
}

impl Preview {
    /// One digest over every recipient's (what `{"decision": "approve", "preview": …}`
    /// presents).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for r in &self.recipients {
            h.update(r.digest.as_bytes());
            h.update(b"\n");
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The digests as shown, for the `consulted` event.
    pub fn shown(&self) -> Vec<PreviewShown> {
        self.recipients
            .iter()
            .map(|r| PreviewShown {
                to: r.to.clone(),
                preview: r.digest.clone(),
            })
            .collect()
    }
}

fn digest(parts: &[&str], disclosed: &[String], withheld: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"refex-review-preview-v1\n");
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    for d in disclosed {
        h.update(b"D ");
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    for w in withheld {
        h.update(b"W ");
        h.update(w.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// What each held recipient would receive if released under `config` now. Pure.
pub fn preview(pending: &Pending, config: &Config) -> Preview {
    let claims = &pending.claims;
    let sender = &pending.detail.referral.sender;
    let ty = &claims.referral.referral_type;
    let recipients = pending
        .held()
        .map(|d| {
            let partner = config.policy.partners.get(&d.recipient);
            let view = partner.and_then(|p| config.policy.schemas.view(&p.kind, ty));
            let permitted = intake::check_content(claims, &config.policy.schemas).and_then(|()| {
                let only = [d.recipient.clone()];
                let decision =
                    intake::authorise(claims, sender, &config.rules(), Recipients::Only(&only))?;
                decision
                    .routes
                    .into_iter()
                    .next()
                    .map(|r| r.agreement)
                    .ok_or_else(|| intake::refused(&config.rules(), sender, ty, &d.recipient))
            });
            let (view_name, version, minimised) = match (partner, view) {
                (Some(p), Some(v)) => (
                    format!("{}/{ty}", p.kind),
                    v.version.clone(),
                    minimise(&claims.referral.payload, &v.source),
                ),
                _ => (
                    String::new(),
                    String::new(),
                    Minimised {
                        value: serde_json::Value::Null,
                        withheld: Vec::new(),
                    },
                ),
            };
            let disclosed = if minimised.value.is_null() {
                Vec::new()
            } else {
                leaf_pointers(&minimised.value)
            };
            let agreement = permitted.as_ref().map_or("", |a| a.as_str());
            RecipientPreview {
                delivery: d.id.clone(),
                to: d.recipient.clone(),
                name: partner.map_or_else(|| d.recipient.to_string(), |p| p.name.clone()),
                digest: digest(
                    &[
                        pending.detail.referral.id.as_str(),
                        d.id.as_str(),
                        d.recipient.as_str(),
                        agreement,
                        &view_name,
                        &version,
                    ],
                    &disclosed,
                    &minimised.withheld,
                ),
                permitted,
                view: view_name,
                view_version: version,
                minimised,
                disclosed,
            }
        })
        .collect();
    Preview { recipients }
}

/// A lead's choice for one held recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Release, bound to the preview digest presented (or, when none is, to the last
    /// preview this lead was shown).
    Approve {
        /// The digest presented.
        preview: Option<String>,
    },
    /// Refuse, with a reason (shown to the sender's organisation).
    Reject {
        /// Why.
        reason: String,
    },
}

/// A lead's decision: one choice per held recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Each held recipient with its choice.
    pub choices: Vec<(PartnerId, Choice)>,
}

impl Request {
    /// The same choice for every held recipient (the v1 `{"decision": …}` form); an
    /// approval's `preview` is then the digest over all of them.
    pub fn for_all(pending: &Pending, choice: Choice, preview: &Preview) -> Self {
        let choices = pending
            .held()
            .map(|d| {
                let c = match &choice {
                    Choice::Approve { preview: Some(all) } => {
                        // The all-recipients digest stands for each recipient's digest when
                        // it matches what would be released now.
                        let each = preview
                            .recipients
                            .iter()
                            .find(|r| r.to == d.recipient)
                            .map(|r| r.digest.clone());
                        Choice::Approve {
                            preview: if *all == preview.digest() {
                                each
                            } else {
                                Some(all.clone())
                            },
                        }
                    }
                    other => other.clone(),
                };
                (d.recipient.clone(), c)
            })
            .collect();
        Self { choices }
    }
}

/// One release of a [`Plan`].
#[derive(Clone, Debug)]
pub struct Approval {
    /// The delivery.
    pub delivery: DeliveryId,
    /// The recipient.
    pub to: PartnerId,
    /// What it receives.
    pub preview: RecipientPreview,
}

/// What a decision does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Releases, in delivery order.
    pub approvals: Vec<Approval>,
    /// Rejections with their reasons.
    pub rejections: Vec<(DeliveryId, PartnerId, String)>,
}

/// Decides a lead's request on a held referral. Pure: the preview is computed against the
/// configuration in force; `shown` is every preview of this referral the store says this lead
/// was shown, newest first. An approval stands only if what would be released now was shown
/// to this lead: the digest it presents (or, presenting none, the last one shown) must be
/// the current one, and one this lead was shown.
pub fn decide(
    pending: &Pending,
    preview: &Preview,
    caller: &Principal,
    request: &Request,
    shown: &[Vec<PreviewShown>],
) -> Result<Plan, ReviewError> {
    if pending.detail.submitted_by() == Some(&ActorRef::from(caller)) {
        return Err(ReviewError::FourEyes);
    }
    let held: Vec<&crate::store::records::DeliveryRow> = pending.held().collect();
    for (to, _) in &request.choices {
        if !held.iter().any(|d| &d.recipient == to) {
            return Err(ReviewError::Invalid(format!(
                "{to} is not a recipient waiting for this decision"
            )));
        }
        if request.choices.iter().filter(|(t, _)| t == to).count() > 1 {
            return Err(ReviewError::Invalid(format!("{to} is decided twice")));
        }
    }
    let missing: Vec<String> = held
        .iter()
        .filter(|d| !request.choices.iter().any(|(t, _)| *t == d.recipient))
        .map(|d| d.recipient.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ReviewError::Invalid(format!(
            "decide every recipient waiting: missing {}",
            missing.join(", ")
        )));
    }
    let mut plan = Plan {
        approvals: Vec::new(),
        rejections: Vec::new(),
    };
    let mut stale = Vec::new();
    for d in held {
        let (_, choice) = request
            .choices
            .iter()
            .find(|(t, _)| *t == d.recipient)
            .ok_or_else(|| ReviewError::Invalid(format!("decide {}", d.recipient)))?;
        let now = preview
            .recipients
            .iter()
            .find(|r| r.delivery == d.id)
            .ok_or_else(|| ReviewError::Release("no preview for a held delivery".into()))?;
        match choice {
            Choice::Reject { reason } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(ReviewError::Invalid(format!(
                        "a rejection needs a reason ({})",
                        d.recipient
                    )));
                }
                if reason.chars().count() > MAX_REASON {
                    return Err(ReviewError::Invalid(format!(
                        "the reason for {} is longer than {MAX_REASON} characters",
                        d.recipient
                    )));
                }
                plan.rejections
                    .push((d.id.clone(), d.recipient.clone(), reason.to_owned()));
            }
            Choice::Approve { preview: presented } => {
                if let Err(reason) = &now.permitted {
                    return Err(ReviewError::NoLongerPermitted {
                        recipient: d.recipient.clone(),
                        reason: reason.clone(),
                    });
                }
                let digest_of = |set: &Vec<PreviewShown>| {
                    set.iter()
                        .find(|s| s.to == d.recipient)
                        .map(|s| s.preview.clone())
                };
                let approved = presented
                    .clone()
                    .or_else(|| shown.first().and_then(digest_of));
                let was_shown = shown
                    .iter()
                    .any(|set| digest_of(set).as_deref() == Some(now.digest.as_str()));
                if approved.as_deref() != Some(now.digest.as_str()) || !was_shown {
                    stale.push(d.recipient.clone());
                    continue;
                }
                plan.approvals.push(Approval {
                    delivery: d.id.clone(),
                    to: d.recipient.clone(),
                    preview: now.clone(),
                });
            }
        }
    }
    if !stale.is_empty() {
        return Err(ReviewError::PreviewStale { recipients: stale });
    }
    Ok(plan)
}

/// A held referral as a lead sees it: the record, the claims and the preview.
#[derive(Clone, Debug)]
pub struct Shown {
    /// The held referral.
    pub pending: Pending,
    /// What each recipient would receive now.
    pub preview: Preview,
    /// Whether the caller may decide it (not its submitter).
    pub can_decide: bool,
}

/// The outcome of a decision: each recipient's status afterwards.
#[derive(Clone, Debug)]
pub struct Decided {
    /// The referral.
    pub id: ReferralId,
    /// Each delivery's recipient and status.
    pub deliveries: Vec<(PartnerId, DeliveryStatus)>,
    /// What was approved and rejected.
    pub approved: Vec<PartnerId>,
    /// Rejected recipients.
    pub rejected: Vec<PartnerId>,
}

/// One field of a held referral as the lead reads it, with the recipients it would reach.
#[derive(Clone, Debug, serde::Serialize, schemars::JsonSchema)]
pub struct DocumentField {
    /// Where the value is (a JSON pointer into the payload).
    pub pointer: String,
    /// The label from the schema.
    pub label: String,
    /// The value in words.
    pub value: String,
    /// The held recipients minimisation would disclose it to (the others withhold it).
    pub disclosed_to: Vec<PartnerId>,
}

/// A section of the held referral's document.
#[derive(Clone, Debug, serde::Serialize, schemars::JsonSchema)]
pub struct DocumentSection {
    /// The heading.
    pub title: String,
    /// Its fields.
    pub fields: Vec<DocumentField>,
}

/// The held referral as a document for its reviewer: the payload rendered with the type's
/// labels (`schema::document`), each field marked with the recipients it would reach under
/// the preview. Pure; the API (`document`) and the console render the same.
pub fn document(pending: &Pending, preview: &Preview, config: &Config) -> Vec<DocumentSection> {
    let claims = &pending.claims.referral;
    let Some(schema) = config.policy.schemas.referral_type(&claims.referral_type) else {
        return Vec::new();
    };
    crate::schema::document(schema, &claims.payload)
        .sections
        .into_iter()
        .map(|s| DocumentSection {
            title: s.title,
            fields: s
                .rows
                .into_iter()
                .map(|row| DocumentField {
                    disclosed_to: preview
                        .recipients
                        .iter()
                        .filter(|p| {
                            !crate::schema::document::is_withheld(
                                &row.pointer,
                                &p.minimised.withheld,
                            )
                        })
                        .map(|p| p.to.clone())
                        .collect(),
                    pointer: row.pointer,
                    label: row.label,
                    value: row.value,
                })
                .collect(),
        })
        .collect()
}

/// The lead's reason for rejecting a recipient, opened from its sealed form (the API's
/// status and the console's sent page both show it to the sender); `None` when none was given
/// or it does not open under the storage key in force.
pub fn rejection_reason(
    key: &crate::envelope::at_rest::StorageKey,
    sealed: Option<&crate::envelope::sealed::Sealed>,
) -> Option<String> {
    sealed
        .and_then(|r| key.open(r).ok())
        .map(|text| String::from_utf8_lossy(&text).into_owned())
}

/// The review service over the runtime: loads, calls the core, commits.
pub struct Service<'a> {
    rt: &'a Runtime,
}

impl<'a> Service<'a> {
    /// The service of a runtime.
    pub fn new(rt: &'a Runtime) -> Self {
        Self { rt }
    }

    /// The held referrals of the caller's partner, oldest first.
    pub async fn queue(&self, caller: &Principal) -> Result<Vec<HeldRow>, ReviewError> {
        Ok(self.rt.store.held_referrals(&caller.partner).await?)
    }

    /// Loads a held referral of the caller's partner and reads its hold back.
    async fn load(
        &self,
        config: &Config,
        caller: &Principal,
        id: &ReferralId,
    ) -> Result<Pending, ReviewError> {
        let store = &self.rt.store;
        let detail = store
            .referral_detail(id)
            .await?
            .filter(|d| d.referral.sender == caller.partner)
            .ok_or(ReviewError::NotFound)?;
        let Some(sealed) = store.hold_sealed(id).await? else {
            // Read again: the hold may have gone after the first read (a decision or a
            // withdrawal committing meanwhile).
            let detail = store
                .referral_detail(id)
                .await?
                .ok_or(ReviewError::NotFound)?;
            let decided = detail.events.iter().any(|e| {
                matches!(
                    e.event,
                    AuditEvent::Reviewed(_) | AuditEvent::ClosedUndecided(_)
                )
            });
            let was_held = detail
                .events
                .iter()
                .any(|e| matches!(e.event, AuditEvent::Held(_)));
            let withdrawn = detail
                .deliveries
                .iter()
                .any(|d| d.status == DeliveryStatus::Withdrawn);
            return Err(if decided {
                ReviewError::AlreadyDecided
            } else if was_held && withdrawn {
                ReviewError::Withdrawn
            } else {
                ReviewError::NotFound
            });
        };
        let plain = config
            .storage_key
            .open(&sealed)
            .map_err(|e| ReviewError::Release(e.to_string()))?;
        // The one reading of claims that intake used: a hold always reads back.
        let claims = intake::read(&plain).map_err(|e| ReviewError::Release(e.to_string()))?;
        let acked_original = match &claims.referral.supersedes {
            Some(old) => store
                .delivery_states(old, &caller.partner)
                .await?
                .map(|s| crate::submit::acknowledged_by(&s))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Pending {
            detail,
            claims,
            acked_original,
        })
    }

    /// One held referral as its reviewer sees it; the reading is audited (`consulted`, with
    /// the preview digests shown, which an approval without a digest is bound to).
    pub async fn show(&self, caller: &Principal, id: &ReferralId) -> Result<Shown, ReviewError> {
        let snapshot = self.rt.snapshot();
        let config = &snapshot.config;
        let pending = self.load(config, caller, id).await?;
        let preview = preview(&pending, config);
        let can_decide = pending.detail.submitted_by() != Some(&ActorRef::from(caller));
        self.rt
            .store
            .record_event(
                &AuditRecord::new(
                    self.rt.clock.unix_time(),
                    Some(ActorRef::from(caller)),
                    AuditEvent::Consulted(ev::Consulted {
                        what: Consultation::ReviewPreview,
                        previews: preview.shown(),
                        matches: None,
                    }),
                )
                .about(id),
            )
            .await?;
        Ok(Shown {
            pending,
            preview,
            can_decide,
        })
    }

    /// Records a lead's decision. Returns each recipient's status afterwards.
    pub async fn decide(
        &self,
        caller: &Principal,
        id: &ReferralId,
        request: impl FnOnce(&Pending, &Preview) -> Request,
    ) -> Result<Decided, ReviewError> {
        let rt = self.rt;
        let snapshot = rt.snapshot();
        let config = &snapshot.config;
        let pending = self.load(config, caller, id).await?;
        let preview = preview(&pending, config);
        let request = request(&pending, &preview);
        let actor = ActorRef::from(caller);
        let shown = rt.store.previews_shown(id, &actor).await?;
        let now = rt.clock.unix_seconds();
        let at = UnixTime::from_secs(now as i64);
        let plan = match decide(&pending, &preview, caller, &request, &shown) {
            Ok(plan) => plan,
            Err(ReviewError::NoLongerPermitted { recipient, reason }) => {
                let event = AuditRecord::new(
                    at,
                    Some(actor.clone()),
                    AuditEvent::ReleaseRefused(ev::ReleaseRefused {
                        to: recipient.clone(),
                        reason: reason.slug().to_owned(),
                    }),
                )
                .about(id);
                if let Err(e) = rt.store.record_event(&event).await {
                    tracing::error!(error = %e, "could not record a refused release");
                }
                return Err(ReviewError::NoLongerPermitted { recipient, reason });
            }
            Err(e) => return Err(e),
        };
        let event = |e: AuditEvent, delivery: &DeliveryId| {
            AuditRecord::new(at, Some(actor.clone()), e)
                .about(id)
                .delivery(delivery)
        };
        let mut events = Vec::new();
        let mut releases = Vec::new();
        for a in &plan.approvals {
            let partner =
                config.policy.partners.get(&a.to).ok_or_else(|| {
                    ReviewError::Release(format!("{} is no longer a partner", a.to))
                })?;
            let view = config
                .policy
                .schemas
                .view(&partner.kind, &pending.claims.referral.referral_type)
                .ok_or_else(|| ReviewError::Release(format!("no view for {}", a.to)))?;
            let sealed = crate::submit::seal_delivery(
                config,
                &pending.claims,
                id,
                &a.delivery,
                partner,
                &a.preview.minimised.value,
                pending.acked_original.contains(&a.to),
                now,
            )
            .map_err(|e| ReviewError::Release(e.to_string()))?;
            events.push(event(
                AuditEvent::Reviewed(ev::Reviewed {
                    to: a.to.clone(),
                    decision: Verdict::Approve,
                    preview: Some(a.preview.digest.clone()),
                }),
                &a.delivery,
            ));
            events.push(event(
                crate::submit::minimised_event(
                    &a.to,
                    view,
                    a.preview.view.clone(),
                    &a.preview.minimised,
                ),
                &a.delivery,
            ));
            events.push(event(
                AuditEvent::Queued(ev::ToRecipient { to: a.to.clone() }),
                &a.delivery,
            ));
            releases.push(Release {
                delivery: a.delivery.clone(),
                recipient: a.to.clone(),
                sealed,
                subjects: config.subject_key.keys_in(&a.preview.minimised.value),
            });
        }
        let mut rejections = Vec::new();
        for (delivery, to, reason) in &plan.rejections {
            events.push(event(
                AuditEvent::Reviewed(ev::Reviewed {
                    to: to.clone(),
                    decision: Verdict::Reject,
                    preview: None,
                }),
                delivery,
            ));
            rejections.push(Rejection {
                delivery: delivery.clone(),
                recipient: to.clone(),
                reason_sealed: config
                    .storage_key
                    .seal(reason.as_bytes())
                    .map_err(|e| ReviewError::Release(e.to_string()))?,
            });
        }
        // A correction replaces the original for the recipients it is released to, only.
        let withdraws = pending
            .claims
            .referral
            .supersedes
            .clone()
            .filter(|_| !releases.is_empty())
            .map(|original| crate::store::records::Supersession {
                original,
                recipients: releases.iter().map(|r| r.recipient.clone()).collect(),
            });
        let outcome = rt
            .store
            .decide_hold(&ReviewCommit {
                referral_id: id.clone(),
                at,
                actor: actor.clone(),
                releases,
                rejections,
                events,
                withdraws,
            })
            .await?;
        match outcome {
            DecideOutcome::Decided => {}
            DecideOutcome::AlreadyDecided => return Err(ReviewError::AlreadyDecided),
            // A correction withdrew some of the held deliveries while the lead decided.
            DecideOutcome::Changed { recipients } => {
                return Err(ReviewError::PreviewStale { recipients });
            }
        }
        if !plan.approvals.is_empty() {
            rt.inbox_changed();
        }
        let states = rt
            .store
            .delivery_states(id, &caller.partner)
            .await?
            .unwrap_or_default();
        Ok(Decided {
            id: id.clone(),
            deliveries: states
                .into_iter()
                .map(|s| (s.recipient, s.status))
                .collect(),
            approved: plan.approvals.iter().map(|a| a.to.clone()).collect(),
            rejected: plan.rejections.iter().map(|r| r.1.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_digests_change_with_every_part() {
        let base = digest(&["imara", "isa", "chisva/t", "v1"], &["/a".into()], &[]);
        for other in [
            digest(&["imara", "isa2", "chisva/t", "v1"], &["/a".into()], &[]),
            digest(&["imara", "isa", "chisva/t", "v2"], &["/a".into()], &[]),
            digest(
                &["imara", "isa", "chisva/t", "v1"],
                &["/a".into(), "/b".into()],
                &[],
            ),
            digest(&["imara", "isa", "chisva/t", "v1"], &[], &["/a".into()]),
        ] {
            assert_ne!(base, other);
        }
    }
}
