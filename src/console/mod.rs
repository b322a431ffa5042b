//! The console: server-rendered HTML for people (designated safeguarding leads and their
//! colleagues) under `/console/`. No JavaScript; a strict Content-Security-Policy; forms
//! protected by `csrf`; `Cache-Control: no-store` on every page. Pages: the review queue
//! (oldest first, with age), one held referral's disclosure preview per recipient with the
//! decision form, and the organisation's outbound history.

pub mod csrf;

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::api::principal::Caller;
use crate::identity::{Actor, Role};
use crate::ids::ReferralId;
use crate::review::{self, ReviewError};
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
code{font-size:.9em}a:focus,button:focus,input:focus,textarea:focus{outline:3px solid #ffbf47}";

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
<dt>Received</dt><dd>{{ received }} ({{ age }} ago)</dd>
<dt>Submitted by</dt><dd>{{ submitted_by }}</dd>
<dt>Lawful basis</dt><dd>{{ basis }}</dd>
<dt>Consent</dt><dd>{{ consent }}</dd>
<dt>Override justification</dt><dd>{{ justification }}</dd>
<dt>Person told</dt><dd>{{ informed }}</dd>
</dl>
{% for r in recipients %}
<section aria-labelledby="to-{{ loop.index }}"><h2 id="to-{{ loop.index }}">To {{ r.name }} ({{ r.to }})</h2>
<p>Agreement <code>{{ r.agreement }}</code>; view <code>{{ r.view }}</code>.</p>
<table><caption>Would be disclosed ({{ r.disclosed.len() }} fields)</caption><tbody>
{% for p in r.disclosed %}<tr><td><code>{{ p }}</code></td></tr>{% endfor %}</tbody></table>
<table><caption>Withheld by minimisation ({{ r.withheld.len() }} fields)</caption><tbody>
{% for p in r.withheld %}<tr><td><code>{{ p }}</code></td></tr>{% endfor %}</tbody></table>
</section>
{% endfor %}
{% if can_decide %}
<form method="post" action="/console/reviews/{{ id }}/decision">
<input type="hidden" name="csrf" value="{{ csrf }}">
<fieldset><legend>Decision</legend>
<label><input type="radio" name="decision" value="approve" required> Approve: disclose to every recipient above</label>
<label><input type="radio" name="decision" value="reject"> Reject: disclose to no one</label>
</fieldset>
<label for="reason">Reason (required to reject; shown to your organisation's sender)</label>
<textarea id="reason" name="reason" maxlength="2000"></textarea>
<p><button type="submit">Record decision</button></p>
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
    received: String,
    age: String,
    submitted_by: String,
    basis: String,
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
    disclosed: Vec<String>,
    withheld: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn error_page(rt: &Runtime, who: &str, status: StatusCode, message: String) -> Response {
    let _ = rt;
    let t = ListPage {
        title: "Console".into(),
        who: who.into(),
        notice: None,
        error: Some(message),
        empty: "",
        caption: "",
        headings: vec![],
        rows: vec![],
    };
    page(status, render(&t), None)
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
    let who = caller.to_string();
    match review::queue(&rt, &caller).await {
        Ok(items) => {
            let rows = items
                .iter()
                .map(|r| TableRow {
                    cells: vec![
                        TableCell {
                            text: r["id"].as_str().unwrap_or_default().to_owned(),
                            link: Some(format!(
                                "/console/reviews/{}",
                                r["id"].as_str().unwrap_or_default()
                            )),
                            alert: false,
                        },
                        cell(text(&r["type"])),
                        cell(strings(&r["recipients"]).join(", ")),
                        cell(text(&r["override"])),
                        TableCell {
                            text: format!(
                                "{}{}",
                                age(r["age_seconds"].as_i64().unwrap_or(0)),
                                if r["escalated"] == true {
                                    " — escalated"
                                } else {
                                    ""
                                }
                            ),
                            link: None,
                            alert: r["escalated"] == true,
                        },
                    ],
                })
                .collect();
            let t = ListPage {
                title: "Held referrals awaiting review".into(),
                who,
                notice: q
                    .decided
                    .as_ref()
                    .map(|id| format!("Decision recorded for {id}.")),
                error: None,
                empty: "Nothing is waiting for review.",
                caption: "Oldest first",
                headings: vec!["Referral", "Type", "Recipients", "Override", "Waiting"],
                rows,
            };
            page(StatusCode::OK, render(&t), None)
        }
        Err(e) => error_page(&rt, &who, StatusCode::FORBIDDEN, e.to_string()),
    }
}

/// `?decided=` after a decision.
#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    decided: Option<String>,
}

async fn review_page(
    rt: &Runtime,
    caller: &crate::identity::Principal,
    id: &str,
    headers: &HeaderMap,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let who = caller.to_string();
    let v = match review::show(rt, caller, id).await {
        Ok(v) => v,
        Err(ReviewError::NotFound) => {
            return error_page(
                rt,
                &who,
                StatusCode::NOT_FOUND,
                "No such held referral.".into(),
            );
        }
        Err(e) => return error_page(rt, &who, StatusCode::FORBIDDEN, e.to_string()),
    };
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
    let lb = &v["lawful_basis"];
    let t = ReviewPage {
        id: id.to_owned(),
        who,
        error,
        kind: text(&v["type"]),
        received: when(v["received_at"].as_i64().unwrap_or(0)),
        age: age(v["age_seconds"].as_i64().unwrap_or(0)),
        submitted_by: text(&v["submitted_by"]),
        basis: format!(
            "Article 6: {}; Article 9: {}; Schedule 1: {}",
            text(&lb["article6"]),
            text(&lb["article9"]),
            text(&lb["dpa2018_schedule1"])
        ),
        consent: format!(
            "{} (override: {})",
            text(&v["consent"]["status"]),
            text(&v["consent"]["override"])
        ),
        justification: text(&v["consent"]["justification"]),
        informed: format!(
            "{} {}",
            text(&v["subject_informed"]["status"]),
            text(&v["subject_informed"]["reason"])
        ),
        recipients: v["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| RecipientView {
                to: text(&r["to"]),
                name: text(&r["recipient_name"]),
                agreement: text(&r["agreement"]),
                view: text(&r["view"]),
                disclosed: strings(&r["disclosed"]),
                withheld: strings(&r["withheld"]),
            })
            .collect(),
        can_decide: v["can_decide"] == true,
        csrf: token,
    };
    page(status, render(&t), set)
}

/// `GET /console/reviews/{id}`: the disclosure preview and the decision form.
pub async fn review(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match ReferralId::parse(&id) {
        Ok(id) => review_page(&rt, &caller, id.as_str(), &headers, None, StatusCode::OK).await,
        Err(_) => error_page(
            &rt,
            &caller.to_string(),
            StatusCode::NOT_FOUND,
            "No such held referral.".into(),
        ),
    }
}

/// The decision form.
#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    decision: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/reviews/{id}/decision`.
pub async fn decide(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    form: Result<Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let who = caller.to_string();
    let Ok(id) = ReferralId::parse(&id) else {
        return error_page(
            &rt,
            &who,
            StatusCode::NOT_FOUND,
            "No such held referral.".into(),
        );
    };
    let Ok(Form(form)) = form else {
        return review_page(
            &rt,
            &caller,
            id.as_str(),
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
    let genuine = csrf::check(
        &rt.snapshot().config.storage_key,
        csrf::cookie_value(get(header::COOKIE.as_str())).as_deref(),
        &form.csrf,
        &caller.fingerprint,
        get(header::ORIGIN.as_str()),
        get(header::HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str())),
    );
    if !genuine {
        return error_page(&rt, &who, StatusCode::FORBIDDEN, "This form did not come from this console (CSRF check failed). Reload the page and try again.".into());
    }
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("reject") => false,
        _ => {
            return review_page(
                &rt,
                &caller,
                id.as_str(),
                &headers,
                Some("Choose approve or reject.".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let reason = Some(form.reason.as_str()).filter(|r| !r.trim().is_empty());
    match review::decide(&rt, &caller, id.as_str(), approve, reason).await {
        Ok(_) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/console/?decided={id}")) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(ReviewError::Invalid(why)) => {
            review_page(
                &rt,
                &caller,
                id.as_str(),
                &headers,
                Some(why.into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(ReviewError::AlreadyDecided) => error_page(
            &rt,
            &who,
            StatusCode::CONFLICT,
            "This referral has already been decided.".into(),
        ),
        Err(ReviewError::NotFound) => error_page(
            &rt,
            &who,
            StatusCode::NOT_FOUND,
            "No such held referral.".into(),
        ),
        Err(e) => error_page(&rt, &who, StatusCode::FORBIDDEN, e.to_string()),
    }
}

/// `GET /console/sent`: the organisation's outbound history with statuses.
pub async fn sent(State(rt): State<Arc<Runtime>>, Caller(caller): Caller) -> Response {
    let who = caller.to_string();
    let is_person = matches!(caller.actor, Actor::Person { .. });
    if !is_person
        || !(caller.has_role(Role::DesignatedSafeguardingLead)
            || caller.has_role(Role::Auditor)
            || caller.has_role(Role::DataProtectionOfficer))
    {
        return error_page(&rt, &who, StatusCode::FORBIDDEN, "The outbound history is for safeguarding leads, auditors and data protection officers.".into());
    }
    match rt.store.sent_referrals(caller.partner.as_str(), 200).await {
        Ok(list) => {
            let rows = list
                .into_iter()
                .map(|(id, ty, at, states)| TableRow {
                    cells: vec![
                        cell(id),
                        cell(ty),
                        cell(when(at)),
                        cell(
                            states
                                .iter()
                                .map(|s| format!("{}: {}", s.recipient, s.status.as_str()))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                    ],
                })
                .collect();
            let t = ListPage {
                title: "Sent referrals".into(),
                who,
                notice: None,
                error: None,
                empty: "Your organisation has sent no referrals.",
                caption: "Most recent first (200 at most)",
                headings: vec!["Referral", "Type", "Received", "Recipients and status"],
                rows,
            };
            page(StatusCode::OK, render(&t), None)
        }
        Err(e) => {
            tracing::error!(error = %e, "sent referrals lookup failed");
            error_page(
                &rt,
                &who,
                StatusCode::SERVICE_UNAVAILABLE,
                "The store is unavailable; try again shortly.".into(),
            )
        }
    }
}
