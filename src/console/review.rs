//! The lead's pages: the queue of held referrals and one held referral as a document.
//!
//! The document reads the referral once, section by section with the schema's labels, and
//! shows beside each field, for every recipient, whether minimisation discloses or
//! withholds it; then the agreement and lawful basis in words, the override and its
//! justification, and a decision per recipient. The page is the review core's preview
//! (`review::Service::show`, audited as a consultation); a decision is bound to the
//! preview digests the page carried.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::{
    ErrorLink, Posted, actor_name, csrf_token, form_is_genuine, form_refusal, full_page, page,
    partner_name, problem_page_in, render, see_other, type_title, waited, when,
};
use crate::api::principal::{Caller, PathId};
use crate::api::problem::ApiError;
use crate::config::Config;
use crate::identity::{PartnerId, Principal};
use crate::ids::ReferralId;
use crate::lifecycle::DeliveryStatus;
use crate::review::{Choice, Request, ReviewError, Service, Shown};
use crate::runtime::Runtime;
use crate::schema::document::code_words;

struct QueueRow {
    id: String,
    sender_ref: String,
    about: String,
    override_: String,
    submitted_by: String,
    recipients: String,
    waiting: String,
    escalated: bool,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<h1>Held referrals awaiting your decision</h1>
{% if let Some(n) = notice %}<div class="notice" role="status"><h2>Decision recorded</h2><p>{{ n }}</p></div>{% endif %}
{% if rows.is_empty() %}<p>Nothing is waiting for review.</p>{% else %}
<table><caption>{{ rows.len() }} waiting, oldest first</caption>
<thead><tr><th scope="col">Your reference</th><th scope="col">About</th><th scope="col">Why it is held</th><th scope="col">Submitted by</th><th scope="col">To</th><th scope="col">Waiting</th></tr></thead>
<tbody>{% for r in rows %}<tr>
<td><a href="/console/reviews/{{ r.id }}">{{ r.sender_ref }}</a><br><span class="caption">{{ r.id }}</span></td>
<td>{{ r.about }}</td><td>{{ r.override_ }}</td><td>{{ r.submitted_by }}</td><td>{{ r.recipients }}</td>
<td{% if r.escalated %} class="escalated"{% endif %}>{{ r.waiting }}{% if r.escalated %} (escalated: overdue){% endif %}</td>
</tr>{% endfor %}</tbody></table>{% endif %}"#
)]
struct QueueBody {
    notice: Option<String>,
    rows: Vec<QueueRow>,
}

/// `?decided=` after a decision.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NoticeQuery {
    /// Set after a decision: the page then says what it did.
    decided: Option<String>,
}

/// What a decision did, in words: who now receives the referral and who does not.
async fn decided_notice(rt: &Runtime, caller: &Principal, id: &str) -> Option<String> {
    let id = ReferralId::parse(id).ok()?;
    let states = rt
        .store
        .delivery_states(&id, &caller.partner)
        .await
        .ok()
        .flatten()?;
    let config = &rt.snapshot().config;
    let mut released = Vec::new();
    let mut refused = Vec::new();
    for s in states {
        let name = partner_name(config, &s.recipient);
        match s.status {
            DeliveryStatus::RejectedByReview => refused.push(name),
            DeliveryStatus::HeldForReview => {}
            _ => released.push(name),
        }
    }
    let mut parts = Vec::new();
    if !released.is_empty() {
        parts.push(format!(
            "Released to {} (now in their inbox).",
            released.join(", ")
        ));
    }
    if !refused.is_empty() {
        parts.push(format!(
            "Not released to {}: nothing was disclosed to them, and your reason is recorded.",
            refused.join(", ")
        ));
    }
    Some(format!("Referral {id}: {}", parts.join(" ")))
}

/// `GET /console/`: the review queue, oldest first.
pub async fn queue(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    super::PageQuery(q): super::PageQuery<NoticeQuery>,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let now = rt.clock.unix_time();
    let items = match Service::new(&rt).queue(&caller).await {
        Ok(items) => items,
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    };
    let rows = items
        .into_iter()
        .map(|r| QueueRow {
            id: r.referral_id.to_string(),
            sender_ref: r.sender_ref,
            about: type_title(config, &r.referral_type),
            override_: r.consent_override.map_or_else(
                || "The agreement reviews every disclosure".into(),
                |o| {
                    format!(
                        "Consent override: {}",
                        code_words(o.as_str()).to_lowercase()
                    )
                },
            ),
            submitted_by: r
                .submitted_by
                .as_ref()
                .map_or_else(|| "—".into(), |a| actor_name(config, a)),
            recipients: r
                .recipients
                .iter()
                .map(|p| partner_name(config, p))
                .collect::<Vec<_>>()
                .join(", "),
            waiting: waited(r.received_at, now),
            escalated: r.escalated_at.is_some(),
        })
        .collect();
    let notice = match q.decided.as_deref() {
        Some(id) => decided_notice(&rt, &caller, id).await,
        None => None,
    };
    let body = render(&QueueBody { notice, rows });
    let html = full_page(
        Some(config),
        Some(&caller),
        "/console/",
        "Held referrals awaiting your decision",
        &body,
        false,
    );
    page(StatusCode::OK, html, None)
}

/// One field of the referral with, per recipient, whether it is disclosed.
struct FieldRow {
    label: String,
    value: String,
    disclosed: Vec<bool>,
}

struct SectionView {
    title: String,
    rows: Vec<FieldRow>,
}

struct RecipientView {
    to: String,
    name: String,
    agreement: String,
    purpose: String,
    blocked: Option<String>,
    disclosed: usize,
    withheld: usize,
    preview: String,
    /// The decision already chosen (a form shown again), and the reason typed.
    chosen: String,
    reason: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<p class="caption">{{ about }}</p>
<h1>Review: {{ sender_ref }}</h1>
{% if !errors.is_empty() %}<div class="error-summary" role="alert" aria-labelledby="error-summary-title" tabindex="-1">
<h2 id="error-summary-title">There is a problem</h2><ul>{% for e in errors %}<li><a href="{{ e.href }}">{{ e.text }}</a></li>{% endfor %}</ul></div>{% endif %}
<dl class="summary">
<dt>Referral</dt><dd>{{ id }}</dd>
<dt>Received</dt><dd>{{ received }} ({{ waiting }} ago)</dd>
<dt>Submitted by</dt><dd>{{ submitted_by }}</dd>
<dt>To</dt><dd>{{ recipient_names }}</dd>
</dl>
<h2>Why this needs your decision</h2>
<dl class="summary">
<dt>Consent</dt><dd>{{ consent }}</dd>
<dt>Override relied on</dt><dd>{{ override_ }}</dd>
<dt>Justification given</dt><dd class="value">{{ justification }}</dd>
<dt>Has the person been told?</dt><dd>{{ informed }}</dd>
</dl>
<h2>Lawful basis stated</h2>
<dl class="summary">{% for b in basis %}<dt>{{ b.0 }}</dt><dd>{{ b.1 }}</dd>{% endfor %}</dl>
<h2>Recipients</h2>
<table><caption>What each recipient would receive if you approve</caption>
<thead><tr><th scope="col">Recipient</th><th scope="col">Agreement</th><th scope="col">Fields disclosed</th><th scope="col">Fields withheld</th></tr></thead>
<tbody>{% for r in recipients %}<tr><th scope="row">{{ r.name }}</th>
<td>{% if let Some(w) = r.blocked %}<strong class="escalated">Release no longer permitted: {{ w }}</strong>{% else %}{{ r.purpose }}<br><span class="caption">Agreement reference {{ r.agreement }}</span>{% endif %}</td>
<td>{{ r.disclosed }}</td><td>{{ r.withheld }}</td></tr>{% endfor %}</tbody></table>
<h2>The referral, field by field</h2>
<p>Every field your organisation sent, and for each recipient whether minimisation discloses it or withholds it.</p>
{% for s in sections %}
<table><caption>{{ s.title }}</caption>
<thead><tr><th scope="col">Field</th><th scope="col">Value</th>{% for r in recipients %}<th scope="col">{{ r.name }}</th>{% endfor %}</tr></thead>
<tbody>{% for f in s.rows %}<tr><th scope="row">{{ f.label }}</th><td class="value">{{ f.value }}</td>
{% for d in f.disclosed %}{% if *d %}<td class="disclosed"><span class="tag disclosed">Disclosed</span></td>{% else %}<td class="withheld"><span class="tag withheld">Withheld</span></td>{% endif %}{% endfor %}
</tr>{% endfor %}</tbody></table>
{% endfor %}
<h2>Your decision</h2>
{% if can_decide %}<form method="post" action="/console/reviews/{{ id }}/decision" novalidate>
<input type="hidden" name="csrf" value="{{ csrf }}">
{% for r in recipients %}
<input type="hidden" name="preview_{{ r.to }}" value="{{ r.preview }}">
<fieldset id="decide-{{ r.to }}"{% if r.error.is_some() %} class="invalid"{% endif %}><legend>Release to {{ r.name }}?</legend>
{% if let Some(e) = r.error %}<p class="field-error" id="error-{{ r.to }}"><span class="visually-hidden">Error:</span> {{ e }}</p>{% endif %}
<div class="choice"><input type="radio" id="decision-{{ r.to }}-approve" name="decision_{{ r.to }}" value="approve"{% if r.chosen == "approve" %} checked{% endif %}{% if r.blocked.is_some() %} disabled{% endif %}>
<label for="decision-{{ r.to }}-approve">Approve: disclose the {{ r.disclosed }} fields marked "Disclosed" to {{ r.name }}</label></div>
<div class="choice"><input type="radio" id="decision-{{ r.to }}-reject" name="decision_{{ r.to }}" value="reject"{% if r.chosen == "reject" %} checked{% endif %}>
<label for="decision-{{ r.to }}-reject">Reject: disclose nothing to {{ r.name }}</label></div>
<div class="field"><label for="reason-{{ r.to }}">Reason for rejecting</label>
<p class="hint" id="reason-{{ r.to }}-hint">Required to reject, and only then. Your organisation's sender sees it.</p>
<textarea id="reason-{{ r.to }}" name="reason_{{ r.to }}" maxlength="2000" aria-describedby="reason-{{ r.to }}-hint">{{ r.reason }}</textarea></div>
</fieldset>
{% endfor %}
<p><button type="submit">Record decisions</button></p>
</form>
{% else %}
<p class="problem" role="note">You submitted this referral, so another designated safeguarding lead must decide it (four eyes).</p>
{% endif %}"##
)]
struct ReviewBody {
    id: String,
    about: String,
    errors: Vec<ErrorLink>,
    sender_ref: String,
    received: String,
    waiting: String,
    submitted_by: String,
    recipient_names: String,
    consent: String,
    override_: String,
    justification: String,
    informed: String,
    basis: Vec<(&'static str, String)>,
    recipients: Vec<RecipientView>,
    sections: Vec<SectionView>,
    can_decide: bool,
    csrf: String,
}

/// What the lead posted, to show again beside an error.
#[derive(Default)]
struct Posting {
    chosen: HashMap<String, (String, String)>,
    errors: Vec<FieldError>,
    general: Option<String>,
}

/// A refused decision field: which recipient, what is wrong.
struct FieldError {
    to: String,
    message: String,
}

fn review_body(
    config: &Config,
    now: crate::timestamp::UnixTime,
    shown: &Shown,
    posting: &Posting,
    csrf: String,
) -> (String, String) {
    let claims = &shown.pending.claims.referral;
    let record = &shown.pending.detail.referral;
    let recipients: Vec<RecipientView> = shown
        .preview
        .recipients
        .iter()
        .map(|p| {
            let agreement = p.permitted.as_ref().ok();
            let purpose = config
                .policy
                .agreements
                .iter()
                .find(|a| Some(&a.id) == agreement)
                .map_or_else(String::new, |a| a.purpose.clone());
            let agreement = agreement.map(ToString::to_string).unwrap_or_default();
            let to = p.to.to_string();
            let (chosen, reason) = posting.chosen.get(&to).cloned().unwrap_or_default();
            RecipientView {
                name: p.name.clone(),
                agreement,
                purpose,
                blocked: p.permitted.as_ref().err().map(ToString::to_string),
                disclosed: p.disclosed.len(),
                withheld: p.minimised.withheld.len(),
                preview: p.digest.clone(),
                error: posting
                    .errors
                    .iter()
                    .find(|e| e.to == to)
                    .map(|e| e.message.clone()),
                chosen,
                reason,
                to,
            }
        })
        .collect();
    let sections = crate::review::document(&shown.pending, &shown.preview, config)
        .into_iter()
        .map(|s| SectionView {
            title: s.title,
            rows: s
                .fields
                .into_iter()
                .map(|f| FieldRow {
                    disclosed: shown
                        .preview
                        .recipients
                        .iter()
                        .map(|p| f.disclosed_to.contains(&p.to))
                        .collect(),
                    label: f.label,
                    value: f.value,
                })
                .collect(),
        })
        .collect();
    let mut errors: Vec<ErrorLink> = posting
        .general
        .iter()
        .map(|g| ErrorLink {
            href: "#decide-".to_owned()
                + &recipients.first().map(|r| r.to.clone()).unwrap_or_default(),
            text: g.clone(),
        })
        .collect();
    errors.extend(posting.errors.iter().map(|e| ErrorLink {
        href: format!("#decide-{}", e.to),
        text: e.message.clone(),
    }));
    let title = format!("Review: {}", claims.sender_ref);
    let body = ReviewBody {
        id: record.id.to_string(),
        about: type_title(config, &claims.referral_type),
        errors,
        sender_ref: claims.sender_ref.clone(),
        received: when(record.received_at),
        waiting: waited(record.received_at, now),
        submitted_by: shown
            .pending
            .detail
            .submitted_by()
            .map_or_else(|| "—".into(), |a| actor_name(config, a)),
        recipient_names: recipients
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
            .join(", "),
        consent: code_words(claims.consent.status.as_str()),
        override_: claims
            .consent
            .override_
            .map_or_else(|| "None".into(), |o| code_words(o.as_str())),
        justification: claims
            .consent
            .justification
            .clone()
            .unwrap_or_else(|| "None given".into()),
        informed: match claims.subject_informed.reason.as_deref() {
            Some(reason) => format!(
                "{}: {}",
                code_words(claims.subject_informed.status_str()),
                code_words(reason).to_lowercase()
            ),
            None => code_words(claims.subject_informed.status_str()),
        },
        basis: claims
            .lawful_basis
            .describe()
            .into_iter()
            .map(|(k, v)| (k, sentence(&v)))
            .collect(),
        recipients,
        sections,
        can_decide: shown.can_decide,
        csrf,
    };
    (title, render(&body))
}

fn sentence(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Shows a held referral (audited as a consultation), with what was posted and what was
/// wrong with it when a decision was refused; failures render as a problem page.
async fn review_page(
    rt: &Runtime,
    caller: &Principal,
    id: &ReferralId,
    headers: &HeaderMap,
    posting: Posting,
    status: StatusCode,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    match Service::new(rt).show(caller, id).await {
        Ok(shown) => {
            let (token, cookie) = csrf_token(rt, caller, headers);
            let now = rt.clock.unix_time();
            let has_errors = !posting.errors.is_empty() || posting.general.is_some();
            let (title, body) = review_body(config, now, &shown, &posting, token);
            let html = full_page(
                Some(config),
                Some(caller),
                "/console/",
                &title,
                &body,
                has_errors,
            );
            page(status, html, cookie)
        }
        Err(e) => problem_page_in(Some(config), &ApiError::from(e), Some(caller)),
    }
}

/// `GET /console/reviews/{id}`: the held referral as a document and the decision form.
pub async fn review(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Response {
    match ReferralId::parse(&id) {
        Ok(id) => {
            review_page(
                &rt,
                &caller,
                &id,
                &headers,
                Posting::default(),
                StatusCode::OK,
            )
            .await
        }
        Err(_) => problem_page_in(
            Some(&rt.snapshot().config),
            &ApiError::NotFound,
            Some(&caller),
        ),
    }
}

/// The choices a decision form carries: `decision_<partner>`, `reason_<partner>` and
/// `preview_<partner>` for each recipient shown; a field sent twice is refused, never
/// resolved silently. What is wrong is said per recipient, to be shown beside its fields.
fn choices(
    fields: &[(String, String)],
    posting: &mut Posting,
    name_of: impl Fn(&str) -> String,
) -> Vec<(PartnerId, Choice)> {
    let mut form: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in fields {
        if form.insert(name.clone(), value.clone()).is_some() {
            posting.general =
                Some("The form sent a field twice; reload the page and decide again.".into());
            return vec![];
        }
    }
    let mut out = Vec::new();
    // Every recipient the page showed carries a preview field (one left undecided is named);
    // a decision may also come without one (a rejection needs no preview).
    let mut shown: Vec<&str> = form
        .keys()
        .filter_map(|k| {
            k.strip_prefix("preview_")
                .or_else(|| k.strip_prefix("decision_"))
        })
        .collect();
    shown.sort_unstable();
    shown.dedup();
    for to in shown {
        let field = |prefix: &str| form.get(&format!("{prefix}_{to}")).cloned();
        let reason = field("reason").unwrap_or_default();
        let decision = field("decision").unwrap_or_default();
        posting
            .chosen
            .insert(to.to_owned(), (decision.clone(), reason.clone()));
        let Ok(partner) = to.parse::<PartnerId>() else {
            posting.general = Some("The form names an unknown recipient; reload the page.".into());
            continue;
        };
        let name = name_of(to);
        let mut refuse = |message: String| {
            posting.errors.push(FieldError {
                to: to.to_owned(),
                message,
            })
        };
        match decision.as_str() {
            "approve" if !reason.trim().is_empty() => refuse(format!(
                "A reason is given only to reject: clear the reason for {name}, or choose reject"
            )),
            "approve" => out.push((
                partner,
                Choice::Approve {
                    preview: field("preview"),
                },
            )),
            "reject" if reason.trim().is_empty() => refuse(format!(
                "Give a reason for not releasing to {name}: your organisation's sender sees it"
            )),
            "reject" => out.push((partner, Choice::Reject { reason })),
            _ => refuse(format!("Choose approve or reject for {name}")),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `POST /console/reviews/{id}/decision`.
pub async fn decide(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    uri: Uri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let Ok(id) = ReferralId::parse(&id) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    let form = match form {
        Ok(axum::Form(form)) => form,
        // Not a form, or too large for one: the problem page (a decision is never guessed).
        Err(e)
            if e.status() != StatusCode::BAD_REQUEST
                && e.status() != StatusCode::UNPROCESSABLE_ENTITY =>
        {
            return problem_page_in(Some(config), &form_refusal(config, &e), Some(&caller));
        }
        Err(_) => {
            let posting = Posting {
                general: Some("The form was incomplete; reload the page and decide again.".into()),
                ..Posting::default()
            };
            return review_page(
                &rt,
                &caller,
                &id,
                &headers,
                posting,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    if let Err(refused) = form_is_genuine(&rt, &caller, &uri, &headers, &form) {
        return *refused;
    }
    let mut posting = Posting::default();
    let chosen = choices(&form, &mut posting, |to| match to.parse::<PartnerId>() {
        Ok(p) => partner_name(config, &p),
        Err(_) => to.to_owned(),
    });
    if !posting.errors.is_empty() || posting.general.is_some() {
        return review_page(
            &rt,
            &caller,
            &id,
            &headers,
            posting,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match Service::new(&rt)
        .decide(&caller, &id, |_, _| Request { choices: chosen })
        .await
    {
        Ok(_) => see_other(&format!("/console/?decided={id}")),
        Err(
            e @ (ReviewError::Invalid(_)
            | ReviewError::PreviewStale { .. }
            | ReviewError::NoLongerPermitted { .. }),
        ) => {
            // The page is shown again as it is now (with the new preview, when it changed),
            // with what went wrong above the form, recipients named in words.
            let said = match &e {
                ReviewError::PreviewStale { recipients } => format!(
                    "What {} would receive has changed since this page was shown: read the \
                     new preview below and decide again",
                    recipients
                        .iter()
                        .map(|r| partner_name(config, r))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ReviewError::NoLongerPermitted { recipient, reason } => format!(
                    "Releasing to {} is no longer permitted: {reason}",
                    partner_name(config, recipient)
                ),
                other => sentence(&other.to_string()),
            };
            let status = ApiError::from(e).problem().status;
            posting.general = Some(said);
            review_page(&rt, &caller, &id, &headers, posting, status).await
        }
        Err(e) => problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    }
}
