//! Reading the records: a referral's disclosure record for the sending partner's people,
//! anonymised aggregate reports for commissioners (each audited), and subject-access requests (which of a partner's disclosures, sent or received, concerned a
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

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportRequestError {
    /// Not a commissioner.
    #[error("aggregate reports are for commissioners only")]
    Forbidden,
    /// A bad date or dimension.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a principal may receive aggregate reports: the commissioner role, or a
/// commissioner organisation.
pub fn is_commissioner(config: &Config, p: &Principal) -> bool {
    p.has_role(Role::Commissioner)
        || config
            .partners
            .get(&p.partner)
            .is_some_and(|partner| partner.kind.as_str() == "commissioner")
}

/// Unix seconds at 00:00 UTC of a `YYYY-MM-DD` date.
pub fn day_start(date: &str) -> Result<i64, ReportRequestError> {
    let bad = || ReportRequestError::Invalid(format!("{date:?} is not a YYYY-MM-DD date"));
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d): (i32, u8, u8) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

/// An aggregate report over referrals received from `from` to `to` (dates, inclusive), by
/// the named dimensions; audited (who, which dimensions, which period).
pub async fn aggregate_report(
    store: &dyn Store,
    config: &Config,
    actor: &str,
    from: &str,
    to: &str,
    by: &str,
    now: i64,
) -> Result<crate::report::Table, ReportRequestError> {
    let dims =
        crate::report::parse_by(by).map_err(|e| ReportRequestError::Invalid(e.to_string()))?;
    let (start, end) = (day_start(from)?, day_start(to)? + 86_400);
    if end <= start {
        return Err(ReportRequestError::Invalid(
            "\"to\" is before \"from\"".into(),
        ));
    }
    let kind_of = |id: &str| {
        config
            .partners
            .iter()
            .find(|(pid, _)| pid.as_str() == id)
            .map(|(_, p)| p.kind.to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let facts: Vec<crate::report::Fact> = store
        .report_facts(start, end)
        .await?
        .iter()
        .map(|row| crate::report::fact(row, kind_of))
        .collect();
    let table = crate::report::tabulate(&facts, &dims, config.settings.reports.threshold);
    store
        .record_event(&AuditRecord {
            at: now,
            kind: "report",
            referral_id: None,
            delivery_id: None,
            actor: Some(actor.to_owned()),
            detail: json!({ "by": table.by, "from": from, "to": to, "suppressed": table.suppressed }),
        })
        .await?;
    Ok(table)
}
