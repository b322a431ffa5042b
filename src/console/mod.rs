//! The console: server-rendered HTML for people (designated safeguarding leads and their
//! colleagues) under `/console/`. No JavaScript; a strict Content-Security-Policy; forms
//! protected by `csrf`; `Cache-Control: no-store` on every page. Pages: the review queue
//! (oldest first, with age), one held referral's disclosure preview per recipient with a
//! decision per recipient, and the organisation's outbound history.
//!
//! Who may see a page is the permission policy's (the route layer); failures are rendered
//! from the same [`Problem`] the API sends as JSON ([`problem_page`]).

pub mod csrf;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::principal::{Caller, PathId};
use crate::api::problem::ApiError;
use crate::identity::{PartnerId, Principal};
use crate::ids::ReferralId;
use crate::review::{Choice, Request, ReviewError, Service, Shown};
use crate::runtime::Runtime;

/// The console's Content-Security-Policy: nothing but our own stylesheet and forms.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fafafa}\
header{background:#1b3a5c;color:#fff;padding:.75rem 1.5rem}header a{color:#fff;margin-right:1rem}\
main{max-width:64rem;margin:1.5rem auto;padding:0 1.5rem}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border:1px solid #ccc;padding:.4rem .6rem;text-align:left;vertical-align:top}caption{text-align:left;font-weight:bold;padding:.4rem 0}\
.escalated{color:#a00;font-weight:bold}.notice{background:#e8f4e8;border-left:4px solid #2e7d32;padding:.6rem 1rem}\
.error{background:#fbe9e9;border-left:4px solid #b00020;padding:.6rem 1rem}fieldset{margin:1rem 0}\
label{display:block;margin:.3rem 0}textarea{width:100%;min-height:5rem}button{padding:.5rem 1.2rem;font-size:1rem}\
code{font-size:.9em}a:focus,button:focus,input:focus,textarea:focus{outline:3px solid #ffbf47}\
section.recipient{background:#fff;border:1px solid #ccc;padding:.5rem 1rem;margin:1rem 0}";

fn page(status: StatusCode, html: String, cookie: Option<String>) -> Response {
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null`
        // on form posts (Fetch standard), defeating the Origin check. No referrer still leaves
        // for other sites.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&csrf::set_cookie(&c)).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    res
}

fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|_| {
        "<!doctype html><title>refex</title><p>Page could not be rendered.</p>".into()
    })
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn when(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} – refex</title>
<link rel="stylesheet" href="/console/style.css"></head>
<body><header><nav aria-label="Console"><a href="/console/">Reviews</a><a href="/console/sent">Sent referrals</a></nav>
<span>{{ who }}</span></header><main>
<h1>{{ title }}</h1>
{% if let Some(n) = notice %}<p class="notice" role="status">{{ n }}</p>{% endif %}
{% if let Some(e) = error %}<p class="error" role="alert">{{ e }}</p>{% endif %}
{% if rows.is_empty() %}<p>{{ empty }}</p>{% else %}
<table><caption>{{ caption }}</caption><thead><tr>{% for h in headings %}<th scope="col">{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in rows %}<tr>{% for c in r.cells %}<td{% if c.alert %} class="escalated"{% endif %}>{% if let Some(l) = c.link %}<a href="{{ l }}">{{ c.text }}</a>{% else %}{{ c.text }}{% endif %}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% endif %}
</main></body></html>"#
)]
struct ListPage {
    title: String,
    who: String,
    notice: Option<String>,
    error: Option<String>,
    empty: &'static str,
    caption: &'static str,
    headings: Vec<&'static str>,
    rows: Vec<TableRow>,
}

struct TableRow {
    cells: Vec<TableCell>,
}

struct TableCell {
    text: String,
    link: Option<String>,
    alert: bool,
}

fn cell(text: impl Into<String>) -> TableCell {
    TableCell {
        text: text.into(),
        link: None,
        alert: false,
    }
}

/// A failure as an HTML page: the same status, title and detail the API would send as
/// `application/problem+json` (the one mapping is `ApiError::problem`).
pub fn problem_page(e: &ApiError, caller: Option<&Principal>) -> Response {
    let p = e.problem();
    let t = ListPage {
        title: p.title.into(),
        who: caller.map(ToString::to_string).unwrap_or_default(),
        notice: None,
        error: Some(p.detail),
        empty: "",
        caption: "",
        headings: vec![],
        rows: vec![],
    };
    let mut response = page(p.status, render(&t), None);
    crate::api::problem::mark(e, &mut response);
    response
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Review {{ id }} – refex</title>
<link rel="stylesheet" href="/console/style.css"></head>
<body><header><nav aria-label="Console"><a href="/console/">Reviews</a><a href="/console/sent">Sent referrals</a></nav>
<span>{{ who }}</span></header><main>
<h1>Review held referral <code>{{ id }}</code></h1>
{% if let Some(e) = error %}<p class="error" role="alert">{{ e }}</p>{% endif %}
<dl>
<dt>Type</dt><dd>{{ kind }}</dd>
<dt>Sender's reference</dt><dd>{{ sender_ref }}</dd>
<dt>Received</dt><dd>{{ received }} ({{ age }} ago)</dd>
<dt>Submitted by</dt><dd>{{ submitted_by }}</dd>
{% for b in basis %}<dt>{{ b.0 }}</dt><dd>{{ b.1 }}</dd>{% endfor %}
<dt>Consent</dt><dd>{{ consent }}</dd>
<dt>Override justification</dt><dd>{{ justification }}</dd>
<dt>Person told</dt><dd>{{ informed }}</dd>
</dl>
{% if can_decide %}<form method="post" action="/console/reviews/{{ id }}/decision">
<input type="hidden" name="csrf" value="{{ csrf }}">{% endif %}
{% for r in recipients %}
<section class="recipient" aria-labelledby="to-{{ loop.index }}"><h2 id="to-{{ loop.index }}">To {{ r.name }} ({{ r.to }})</h2>
{% if let Some(w) = r.blocked %}<p class="error" role="alert" id="blocked-{{ loop.index }}">Release is no longer permitted: {{ w }}</p>{% else %}
<p>Agreement <code>{{ r.agreement }}</code>; view <code>{{ r.view }}</code> (version <code>{{ r.version }}</code>).</p>{% endif %}
<table><caption>Would be disclosed ({{ r.disclosed.len() }} fields)</caption><tbody>
{% for p in r.disclosed %}<tr><td><code>{{ p }}</code></td></tr>{% endfor %}</tbody></table>
<table><caption>Withheld by minimisation ({{ r.withheld.len() }} fields)</caption><tbody>
{% for p in r.withheld %}<tr><td><code>{{ p }}</code></td></tr>{% endfor %}</tbody></table>
{% if can_decide %}
<input type="hidden" name="preview_{{ r.to }}" value="{{ r.preview }}">
<fieldset><legend>Decision for {{ r.name }}</legend>
<label><input type="radio" name="decision_{{ r.to }}" value="approve" required{% if r.blocked.is_some() %} disabled{% endif %}> Approve: disclose the fields above to {{ r.name }}</label>
<label><input type="radio" name="decision_{{ r.to }}" value="reject"> Reject: disclose nothing to {{ r.name }}</label>
<label for="reason-{{ loop.index }}">Reason (required to reject; shown to your organisation's sender)</label>
<textarea id="reason-{{ loop.index }}" name="reason_{{ r.to }}" maxlength="2000"></textarea>
</fieldset>{% endif %}
</section>
{% endfor %}
{% if can_decide %}<p><button type="submit">Record decisions</button></p>
</form>
{% else %}
<p class="error" role="note">You submitted this referral, so another designated safeguarding lead must decide it (four eyes).</p>
{% endif %}
</main></body></html>"#
)]
struct ReviewPage {
    id: String,
    who: String,
    error: Option<String>,
    kind: String,
    sender_ref: String,
    received: String,
    age: String,
    submitted_by: String,
    basis: Vec<(&'static str, String)>,
    consent: String,
    justification: String,
    informed: String,
    recipients: Vec<RecipientView>,
    can_decide: bool,
    csrf: String,
}

struct RecipientView {
    to: String,
    name: String,
    agreement: String,
    view: String,
    version: String,
    blocked: Option<String>,
    disclosed: Vec<String>,
    withheld: Vec<String>,
    preview: String,
}

/// `GET /console/style.css`.
pub async fn style() -> Response {
    let mut res = STYLE.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css"));
    res
}

/// `GET /console/`: the review queue, oldest first.
pub async fn queue(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    q: axum::extract::Query<NoticeQuery>,
) -> Response {
    let now = rt.clock.unix_seconds() as i64;
    let items = match Service::new(&rt).queue(&caller).await {
        Ok(items) => items,
        Err(e) => return problem_page(&ApiError::from(e), Some(&caller)),
    };
    let rows = items
        .into_iter()
        .map(|r| {
            let escalated = r.escalated_at.is_some();
            TableRow {
                cells: vec![
                    TableCell {
                        text: r.referral_id.to_string(),
                        link: Some(format!("/console/reviews/{}", r.referral_id)),
                        alert: false,
                    },
                    cell(r.sender_ref),
                    cell(r.referral_type.to_string()),
                    cell(
                        r.recipients
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    cell(r.consent_override.map_or("—", |o| o.as_str())),
                    TableCell {
                        text: format!(
                            "{}{}",
                            age((now - r.received_at).max(0)),
                            if escalated { " — escalated" } else { "" }
                        ),
                        link: None,
                        alert: escalated,
                    },
                ],
            }
        })
        .collect();
    let t = ListPage {
        title: "Held referrals awaiting review".into(),
        who: caller.to_string(),
        notice: q
            .decided
            .as_deref()
            .and_then(|id| ReferralId::parse(id).ok())
            .map(|id| format!("Decision recorded for {id}.")),
        error: None,
        empty: "Nothing is waiting for review.",
        caption: "Oldest first",
        headings: vec![
            "Referral",
            "Sender's reference",
            "Type",
            "Recipients",
            "Override",
            "Waiting",
        ],
        rows,
    };
    page(StatusCode::OK, render(&t), None)
}

/// `?decided=` after a decision.
#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    decided: Option<String>,
}

fn review_document(
    rt: &Runtime,
    caller: &Principal,
    shown: &Shown,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let existing = csrf::cookie_value(headers.get(header::COOKIE).and_then(|h| h.to_str().ok()));
    let (cookie, set) = match existing {
        Some(c) => (c, None),
        None => {
            let c = csrf::new_cookie();
            (c.clone(), Some(c))
        }
    };
    let token = csrf::token(
        &rt.snapshot().config.storage_key,
        &cookie,
        &caller.fingerprint,
    );
    let now = rt.clock.unix_seconds() as i64;
    let r = &shown.pending.claims.referral;
    let record = &shown.pending.detail.referral;
    let t = ReviewPage {
        id: record.id.to_string(),
        who: caller.to_string(),
        error,
        kind: r.referral_type.to_string(),
        sender_ref: r.sender_ref.clone(),
        received: when(record.received_at),
        age: age((now - record.received_at).max(0)),
        submitted_by: shown
            .pending
            .detail
            .submitted_by()
            .map_or_else(|| "—".into(), ToString::to_string),
        basis: r.lawful_basis.describe(),
        consent: format!(
            "{} (override: {})",
            r.consent.status.as_str(),
            r.consent.override_.map_or("none", |o| o.as_str())
        ),
        justification: r
            .consent
            .justification
            .clone()
            .unwrap_or_else(|| "—".into()),
        informed: format!(
            "{} {}",
            r.subject_informed.status_str(),
            r.subject_informed.reason.as_deref().unwrap_or("")
        ),
        recipients: shown
            .preview
            .recipients
            .iter()
            .map(|p| RecipientView {
                to: p.to.to_string(),
                name: p.name.clone(),
                agreement: p.permitted.clone().unwrap_or_default(),
                view: p.view.clone(),
                version: p.view_version.clone(),
                blocked: p.permitted.as_ref().err().map(ToString::to_string),
                disclosed: p.disclosed.clone(),
                withheld: p.minimised.withheld.clone(),
                preview: p.digest.clone(),
            })
            .collect(),
        can_decide: shown.can_decide,
        csrf: token,
    };
    page(status, render(&t), set)
}

/// Shows a held referral (audited as a consultation), with an error message when a decision
/// was refused; failures render as a problem page.
async fn review_page(
    rt: &Runtime,
    caller: &Principal,
    id: &ReferralId,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    match Service::new(rt).show(caller, id).await {
        Ok(shown) => review_document(rt, caller, &shown, headers, error, status),
        Err(e) => problem_page(&ApiError::from(e), Some(caller)),
    }
}

/// `GET /console/reviews/{id}`: the disclosure preview and the decision form.
pub async fn review(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Response {
    match ReferralId::parse(&id) {
        Ok(id) => review_page(&rt, &caller, &id, &headers, None, StatusCode::OK).await,
        Err(_) => problem_page(&ApiError::NotFound, Some(&caller)),
    }
}

/// The choices a decision form carries: `decision_<partner>`, `reason_<partner>` and
/// `preview_<partner>` for each recipient shown; a field sent twice is refused, never
/// resolved silently.
fn choices(fields: &[(String, String)]) -> Result<Vec<(PartnerId, Choice)>, String> {
    let mut form: HashMap<String, String> = HashMap::new();
    for (name, value) in fields {
        if form.insert(name.clone(), value.clone()).is_some() {
            return Err("The form sent a field twice; reload the page and decide again.".into());
        }
    }
    let mut out = Vec::new();
    for (name, value) in &form {
        let Some(to) = name.strip_prefix("decision_") else {
            continue;
        };
        let to: PartnerId = to
            .parse()
            .map_err(|_| "The form names an unknown recipient.".to_owned())?;
        let field = |prefix: &str| form.get(&format!("{prefix}_{to}")).cloned();
        let choice = match value.as_str() {
            "approve" if field("reason").is_some_and(|r| !r.trim().is_empty()) => {
                return Err(format!(
                    "A reason is given only to reject: clear the reason for {to}, or choose reject."
                ));
            }
            "approve" => Choice::Approve {
                preview: field("preview"),
            },
            "reject" => Choice::Reject {
                reason: field("reason").unwrap_or_default(),
            },
            _ => return Err(format!("Choose approve or reject for {to}.")),
        };
        out.push((to, choice));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `POST /console/reviews/{id}/decision`.
pub async fn decide(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    uri: axum::http::Uri,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(id) = ReferralId::parse(&id) else {
        return problem_page(&ApiError::NotFound, Some(&caller));
    };
    let Ok(Form(form)) = form else {
        return review_page(
            &rt,
            &caller,
            &id,
            &headers,
            Some("The form was incomplete.".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let get = |name| {
        headers
            .get(name)
            .and_then(|h: &HeaderValue| h.to_str().ok())
    };
    let form_token = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    let genuine = csrf::check(
        &rt.snapshot().config.storage_key,
        csrf::cookie_value(get(header::COOKIE.as_str())).as_deref(),
        form_token,
        &caller.fingerprint,
        get(header::ORIGIN.as_str()),
        get(header::HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str())),
    );
    if !genuine {
        return problem_page(
            &ApiError::CrossSite(
                "This form did not come from this console (CSRF check failed). Reload the page and try again.",
            ),
            Some(&caller),
        );
    }
    let chosen = match choices(&form) {
        Ok(c) => c,
        Err(why) => {
            return review_page(
                &rt,
                &caller,
                &id,
                &headers,
                Some(why),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    match Service::new(&rt)
        .decide(&caller, &id, |_, _| Request { choices: chosen })
        .await
    {
        Ok(_) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/console/?decided={id}")) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(
            e @ (ReviewError::Invalid(_)
            | ReviewError::PreviewStale { .. }
            | ReviewError::NoLongerPermitted { .. }),
        ) => {
            // The page is shown again as it is now (with the new preview, when it changed),
            // with what went wrong above the form.
            let e = ApiError::from(e);
            let p = e.problem();
            review_page(&rt, &caller, &id, &headers, Some(p.detail), p.status).await
        }
        Err(e) => problem_page(&ApiError::from(e), Some(&caller)),
    }
}

/// `GET /console/sent`: the organisation's outbound history with statuses.
pub async fn sent(State(rt): State<Arc<Runtime>>, Caller(caller): Caller) -> Response {
    match rt.store.sent_referrals(&caller.partner, 200).await {
        Ok(list) => {
            let rows = list
                .into_iter()
                .map(|s| TableRow {
                    cells: vec![
                        cell(s.id.to_string()),
                        cell(s.referral_type.to_string()),
                        cell(when(s.received_at)),
                        cell(
                            s.states
                                .iter()
                                .map(|d| format!("{}: {}", d.recipient, d.status))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                    ],
                })
                .collect();
            let t = ListPage {
                title: "Sent referrals".into(),
                who: caller.to_string(),
                notice: None,
                error: None,
                empty: "Your organisation has sent no referrals.",
                caption: "Most recent first (200 at most)",
                headings: vec!["Referral", "Type", "Received", "Recipients and status"],
                rows,
            };
            page(StatusCode::OK, render(&t), None)
        }
        Err(e) => problem_page(&ApiError::from(e), Some(&caller)),
    }
}
