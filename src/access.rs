//! Reading the records: a referral's disclosure record for the sending partner's people,
//! subject-access requests, and anonymised aggregate reports. Who may ask is the permission
//! policy's question (`policy`); this module answers only what the asking partner may be
//! shown, and audits every reading (a `consulted` event for a record or a subject-access
//! answer, a `subject-access` event, a `report` event — never the identifiers).
//!
//! Subject access answers only what was disclosed, to whom it was disclosed: a sender finds
//! its own referrals (indexed from the full payload); a recipient finds only deliveries that
//! reached its inbox, indexed from the copy it received, never a held, rejected, or
//! withdrawn- or expired-before-fetch one. "No such person" and "not yours" are the same
//! empty answer.

use crate::audit::event::{self as ev, ActorRef, AuditEvent, AuditRecord, Consultation};
use crate::config::Config;
use crate::disclosure::{self, Viewer};
use crate::identity::{PartnerId, Principal, Role};
use crate::ids::ReferralId;
use crate::store::records::SubjectMatch;
use crate::store::{Store, StoreError};
use crate::subject::{IdentifierProblem, Identifiers};
use crate::timestamp::UnixTime;

/// Why a request for records was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not the caller's to see (the API answers 404: ids do not leak).
    #[error("not found")]
    NotFound,
    /// The identifiers given are not usable, field by field.
    #[error("the identifiers are not usable")]
    BadIdentifiers(Vec<IdentifierProblem>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether the gateway holds `partner`'s keys (a hosted partner).
fn hosted(config: &Config, partner: &crate::identity::PartnerId) -> bool {
    config
        .policy
        .partners
        .get(partner)
        .is_some_and(|p| p.hosted.is_some())
}

/// The disclosure record of `referral` for a person of the sending partner; the reading is
/// audited. The override justification is shown to leads and auditors only.
pub async fn disclosure_record(
    store: &dyn Store,
    config: &Config,
    caller: &Principal,
    referral: &ReferralId,
    now: UnixTime,
) -> Result<disclosure::Record, AccessError> {
    let detail = store
        .referral_detail(referral)
        .await?
        .filter(|d| d.referral.sender == caller.partner)
        .ok_or(AccessError::NotFound)?;
    let justification =
        caller.has_role(Role::DesignatedSafeguardingLead) || caller.has_role(Role::Auditor);
    let record = disclosure::record(
        &detail,
        &Viewer::Sender { justification },
        &config.storage_key,
    )
    .note_custody(|p| hosted(config, p));
    store
        .record_event(
            &AuditRecord::new(
                now,
                Some(ActorRef::from(caller)),
                AuditEvent::Consulted(ev::Consulted {
                    what: Consultation::DisclosureRecord,
                    previews: Vec::new(),
                    matches: None,
                }),
            )
            .about(referral),
        )
        .await?;
    Ok(record)
}

/// The disclosure records, sent or received by `caller`'s partner, that concern the person
/// `ids` identifies; audited as a consultation by the caller.
pub async fn subject_access(
    store: &dyn Store,
    config: &Config,
    caller: &Principal,
    ids: &Identifiers,
    now: UnixTime,
) -> Result<Vec<disclosure::Record>, AccessError> {
    let out = subject_access_for(
        store,
        config,
        &caller.partner,
        &ActorRef::from(caller),
        ids,
        now,
    )
    .await?;
    store
        .record_event(&AuditRecord::new(
            now,
            Some(ActorRef::from(caller)),
            AuditEvent::Consulted(ev::Consulted {
                what: Consultation::SubjectAccess,
                previews: Vec::new(),
                matches: Some(out.len() as u64),
            }),
        ))
        .await?;
    Ok(out)
}

/// Subject access for a partner, by a person or on an operator's behalf (`refex
/// subject-access`); audited (`subject-access`: who asked, for which partner, how many
/// matched).
pub async fn subject_access_for(
    store: &dyn Store,
    config: &Config,
    partner: &PartnerId,
    actor: &ActorRef,
    ids: &Identifiers,
    now: UnixTime,
) -> Result<Vec<disclosure::Record>, AccessError> {
    let today = time::OffsetDateTime::from_unix_timestamp(now.secs())
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    ids.validate(today).map_err(AccessError::BadIdentifiers)?;
    let keys = config.subject_key.keys_for(ids);
    let mut out = Vec::new();
    for found in store.subject_matches(&keys, partner).await? {
        let (referral, viewer) = match found {
            SubjectMatch::Sent(r) => (
                r,
                Viewer::Sender {
                    justification: false,
                },
            ),
            SubjectMatch::Received(r, d) => (r, Viewer::Recipient(partner.clone(), d)),
        };
        let Some(detail) = store.referral_detail(&referral).await? else {
            continue;
        };
        if matches!(viewer, Viewer::Sender { .. }) && detail.referral.sender != *partner {
            continue;
        }
        out.push(
            disclosure::record(&detail, &viewer, &config.storage_key)
                .note_custody(|p| hosted(config, p)),
        );
    }
    store
        .record_event(&AuditRecord::new(
            now,
            Some(actor.clone()),
            AuditEvent::SubjectAccess(ev::SubjectAccess {
                partner: partner.clone(),
                matches: out.len() as u64,
            }),
        ))
        .await?;
    Ok(out)
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportRequestError {
    /// A bad date or dimension.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An aggregate report over referrals received from `from` to `to` (dates, inclusive), by
/// the named dimensions; audited (who, which dimensions, which period).
pub async fn aggregate_report(
    store: &dyn Store,
    config: &Config,
    actor: &ActorRef,
    from: &str,
    to: &str,
    by: &str,
    now: UnixTime,
) -> Result<crate::report::Table, ReportRequestError> {
    let dims =
        crate::report::parse_by(by).map_err(|e| ReportRequestError::Invalid(e.to_string()))?;
    let period = crate::report::Period::parse(from, to, now)
        .map_err(|e| ReportRequestError::Invalid(e.to_string()))?;
    let kind_of = |id: &PartnerId| {
        config
            .policy
            .partners
            .get(id)
            .map(|p| p.kind.to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let facts: Vec<crate::report::Fact> = store
        .report_facts(period.start, period.end)
        .await?
        .iter()
        .map(|row| crate::report::fact(row, kind_of))
        .collect();
    let table = crate::report::tabulate(&facts, &dims, config.settings.reports.threshold);
    store
        .record_event(&AuditRecord::new(
            now,
            Some(actor.clone()),
            AuditEvent::Report(ev::Report {
                by: table.by.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
                suppressed: table.suppressed as u64,
            }),
        ))
        .await?;
    Ok(table)
}
