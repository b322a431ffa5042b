//! The organisation's sent referrals with each recipient's status in words, and withdrawal
//! (consent withdrawn, sent in error): every delivery not yet acknowledged leaves its
//! recipient's inbox, through the same store step as `POST /v1/referrals/{id}/withdraw`.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::{
    Posted, csrf_token, full_page, page, partner_name, posted_about, problem_page_in, render,
    see_other, type_title, when,
};
use crate::api::principal::{Caller, PathId};
use crate::api::problem::ApiError;
use crate::audit::event::ActorRef;
use crate::ids::ReferralId;
use crate::lifecycle::DeliveryStatus;
use crate::policy::{self, Permission};
use crate::runtime::Runtime;

/// How many referrals the page lists.
const SHOWN: i64 = 200;

struct SentView {
    id: String,
    sender_ref: String,
    about: String,
    received: String,
    states: Vec<(String, &'static str, &'static str, Option<String>)>,
    open: bool,
    highlight: bool,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<h1>Sent referrals</h1>
{% if let Some(n) = notice %}<div class="notice" role="status"><h2>{{ n.0 }}</h2><p>{{ n.1 }}</p></div>{% endif %}
{% if rows.is_empty() %}<p>Your organisation has sent no referrals.</p>{% else %}
<table><caption>Most recent first ({{ rows.len() }} shown, {{ shown }} at most)</caption>
<thead><tr><th scope="col">Your reference</th><th scope="col">About</th><th scope="col">Received</th><th scope="col">Recipients and status</th>{% if can_withdraw %}<th scope="col">Withdraw</th>{% endif %}</tr></thead>
<tbody>{% for r in rows %}<tr{% if r.highlight %} id="just-sent"{% endif %}>
<td>{{ r.sender_ref }}<br><span class="caption">{{ r.id }}</span></td><td>{{ r.about }}</td><td>{{ r.received }}</td>
<td><ul>{% for s in r.states %}<li>{{ s.0 }}: <span class="tag {{ s.2 }}">{{ s.1 }}</span>{% if let Some(reason) = s.3 %}<br><span class="caption">The lead's reason: {{ reason }}</span>{% endif %}</li>{% endfor %}</ul></td>
{% if can_withdraw %}<td>{% if r.open %}<a href="/console/sent/{{ r.id }}/withdraw">Withdraw<span class="visually-hidden"> {{ r.sender_ref }}</span>…</a>{% else %}—{% endif %}</td>{% endif %}
</tr>{% endfor %}</tbody></table>{% endif %}"#
)]
struct SentBody {
    notice: Option<(String, String)>,
    rows: Vec<SentView>,
    shown: i64,
    can_withdraw: bool,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<h1>Withdraw {{ sender_ref }}?</h1>
<dl class="summary"><dt>Referral</dt><dd>{{ id }}</dd><dt>About</dt><dd>{{ about }}</dd><dt>Received</dt><dd>{{ received }}</dd></dl>
<p>Every copy not yet acknowledged leaves its recipient's inbox: {{ reaches }}. Copies already acknowledged stay with their recipients. This cannot be undone.</p>
<form method="post" action="/console/sent/{{ id }}/withdraw"><input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="confirm" value="yes">
<p><button type="submit" class="warning">Withdraw {{ sender_ref }}</button> <a href="/console/sent">Keep it</a></p></form>"#
)]
struct ConfirmBody {
    id: String,
    sender_ref: String,
    about: String,
    received: String,
    reaches: String,
    csrf: String,
}

/// `?sent=` after composing, `?withdrawn=` after withdrawing.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SentQuery {
    /// A referral just sent (the page confirms it).
    sent: Option<String>,
    /// A referral just withdrawn (the page confirms it).
    withdrawn: Option<String>,
}

fn tag(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::HeldForReview | DeliveryStatus::Queued | DeliveryStatus::Delivered => {
            "held"
        }
        DeliveryStatus::Acknowledged => "done",
        DeliveryStatus::RejectedByReview
        | DeliveryStatus::Withdrawn
        | DeliveryStatus::Expired
        | DeliveryStatus::ExpiredUndecided => "withheld",
    }
}

/// `GET /console/sent`: the organisation's outbound history with statuses.
pub async fn sent(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    super::PageQuery(q): super::PageQuery<SentQuery>,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let list = match rt.store.sent_referrals(&caller.partner, SHOWN).await {
        Ok(list) => list,
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    };
    let focus = q.sent.as_deref().or(q.withdrawn.as_deref());
    let mut notice = None;
    let rows: Vec<SentView> = list
        .into_iter()
        .map(|s| {
            let id = s.id.to_string();
            let states: Vec<_> = s
                .states
                .iter()
                .map(|d| {
                    (
                        partner_name(config, &d.recipient),
                        d.status.words(),
                        tag(d.status),
                        crate::review::rejection_reason(
                            &config.storage_key,
                            d.reason_sealed.as_ref(),
                        ),
                    )
                })
                .collect();
            let highlight = focus == Some(id.as_str());
            if highlight {
                let summary = states
                    .iter()
                    .map(|(who, what, _, _)| format!("{who}: {}", what.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join("; ");
                notice = Some(if q.sent.is_some() {
                    (
                        "Referral sent".to_owned(),
                        format!("The gateway accepted it as {id}. {summary}."),
                    )
                } else {
                    (
                        "Referral withdrawn".to_owned(),
                        format!(
                            "{id}: every delivery not yet acknowledged was withdrawn. {summary}."
                        ),
                    )
                });
            }
            SentView {
                sender_ref: s.sender_ref.clone(),
                about: type_title(config, &s.referral_type),
                received: when(s.received_at),
                open: s.states.iter().any(|d| !d.status.is_final()),
                states,
                highlight,
                id,
            }
        })
        .collect();
    let body = render(&SentBody {
        notice,
        rows,
        shown: SHOWN,
        can_withdraw: policy::decide(Some(&caller), Permission::WithdrawReferral).is_ok(),
    });
    let html = full_page(
        Some(config),
        Some(&caller),
        "/console/sent",
        "Sent referrals",
        &body,
        false,
    );
    page(StatusCode::OK, html, None)
}

/// `GET /console/sent/{id}/withdraw`: what withdrawing would do, and the form that does it.
pub async fn confirm(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let Ok(id) = ReferralId::parse(&id) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    let found = match rt.store.referral_detail(&id).await {
        Ok(d) => d.filter(|d| d.referral.sender == caller.partner),
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    };
    let Some(d) = found.filter(|d| d.deliveries.iter().any(|x| !x.status.is_final())) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    let s = &d.referral;
    let reaches = d
        .deliveries
        .iter()
        .filter(|d| !d.status.is_final())
        .map(|d| partner_name(config, &d.recipient))
        .collect::<Vec<_>>()
        .join(", ");
    let (csrf, cookie) = csrf_token(&rt, &caller, &headers);
    let body = render(&ConfirmBody {
        id: id.to_string(),
        sender_ref: s.sender_ref.clone(),
        about: type_title(config, &s.referral_type),
        received: when(s.received_at),
        reaches,
        csrf,
    });
    let title = format!("Withdraw {}?", s.sender_ref);
    let html = full_page(
        Some(config),
        Some(&caller),
        "/console/sent",
        &title,
        &body,
        false,
    );
    page(StatusCode::OK, html, cookie)
}

/// `POST /console/sent/{id}/withdraw` (with `confirm=yes`; without it, the confirmation page).
pub async fn withdraw(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    uri: Uri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let (id, form) = match posted_about(
        &rt,
        &caller,
        &uri,
        &headers,
        &id,
        |s| ReferralId::parse(s).ok(),
        form,
    ) {
        Ok(posted) => posted,
        Err(refused) => return *refused,
    };
    if !form.iter().any(|(k, v)| k == "confirm" && v == "yes") {
        return see_other(&format!("/console/sent/{id}/withdraw"));
    }
    let at = rt.clock.unix_time();
    match rt
        .store
        .withdraw(&id, &caller.partner, at, &ActorRef::from(&caller))
        .await
    {
        Ok(Some(_)) => see_other(&format!("/console/sent?withdrawn={id}#just-sent")),
        Ok(None) => problem_page_in(Some(config), &ApiError::NotFound, Some(&caller)),
        Err(e) => problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    }
}
