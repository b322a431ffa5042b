//! Reading the records: a referral's disclosure record for the sending partner's people, and
//! subject-access requests (which of a partner's disclosures, sent or received, concerned a
//! person). Each subject-access request is itself audited (who asked, how many matched;
//! never the identifiers).

use serde_json::{Value, json};

use crate::config::Config;
use crate::disclosure::{self, Viewer};
use crate::identity::{Principal, Role};
use crate::store::records::AuditRecord;
use crate::store::{Store, StoreError};
use crate::subject::Identifiers;

/// Why a request for records was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not the caller's to see (the API answers 404: ids do not leak).
    #[error("not found")]
    NotFound,
    /// The caller's role does not allow it.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No usable identifier was given.
    #[error("give an NHS number, or given name, family name and date of birth")]
    NoIdentifier,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The disclosure record of `referral_id` for a person of the sending partner.
pub async fn disclosure_record(
    store: &dyn Store,
    config: &Config,
    caller: &Principal,
    referral_id: &str,
) -> Result<Value, AccessError> {
    let detail = store
        .referral_detail(referral_id)
        .await?
        .filter(|d| d.referral.sender == caller.partner.as_str())
        .ok_or(AccessError::NotFound)?;
    let lead_or_auditor =
        caller.has_role(Role::DesignatedSafeguardingLead) || caller.has_role(Role::Auditor);
    if !lead_or_auditor && !caller.has_role(Role::DataProtectionOfficer) {
        return Err(AccessError::Forbidden(
            "disclosure records are for safeguarding leads, auditors and data protection officers",
        ));
    }
    Ok(disclosure::record(
        &detail,
        &Viewer::Sender {
            justification: lead_or_auditor,
        },
        &config.storage_key,
    ))
}

/// The disclosure records, sent or received by `caller`'s partner, that concern the person
/// `ids` identifies. For data protection officers and auditors.
pub async fn subject_access(
    store: &dyn Store,
    config: &Config,
    caller: &Principal,
    ids: &Identifiers,
    now: i64,
) -> Result<Vec<Value>, AccessError> {
    if !(caller.has_role(Role::DataProtectionOfficer) || caller.has_role(Role::Auditor)) {
        return Err(AccessError::Forbidden(
            "subject access is for data protection officers and auditors",
        ));
    }
    subject_access_for(
        store,
        config,
        &caller.partner,
        &caller.to_string(),
        ids,
        now,
    )
    .await
}

/// Subject access for a partner, on an operator's behalf (`refex subject-access`).
pub async fn subject_access_for(
    store: &dyn Store,
    config: &Config,
    partner: &crate::identity::PartnerId,
    actor: &str,
    ids: &Identifiers,
    now: i64,
) -> Result<Vec<Value>, AccessError> {
    let keys = config.subject_key.keys_for(ids);
    if keys.is_empty() {
        return Err(AccessError::NoIdentifier);
    }
    let mut out = Vec::new();
    for id in store
        .referrals_for_subjects(&keys, partner.as_str())
        .await?
    {
        let Some(detail) = store.referral_detail(&id).await? else {
            continue;
        };
        let viewer = if detail.referral.sender == partner.as_str() {
            Viewer::Sender {
                justification: false,
            }
        } else {
            Viewer::Recipient(partner.clone())
        };
        out.push(disclosure::record(&detail, &viewer, &config.storage_key));
    }
    store
        .record_event(&AuditRecord {
            at: now,
            kind: "subject-access",
            referral_id: None,
            delivery_id: None,
            actor: Some(actor.to_owned()),
            detail: json!({ "partner": partner, "matches": out.len() }),
        })
        .await?;
    Ok(out)
}
