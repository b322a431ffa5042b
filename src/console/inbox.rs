//! A hosted organisation's inbox in the console: what reached it (new, opened,
//! acknowledged, withdrawn, expired), each delivery rendered as a printable document with
//! the labels of the organisation's view and a list of what its agreement never shares with
//! it, and acknowledgement. Reading goes through `hosted::open_delivery` (audited as a
//! consultation by the person, before anything is shown).

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Posted, csrf_token, full_page, page, partner_name, posted_about, problem_page_in, render,
    see_other, type_title, when,
};
use crate::api::principal::{Caller, PathId};
use crate::api::problem::ApiError;
use crate::audit::event::ActorRef;
use crate::hosted;
use crate::identity::PartnerId;
use crate::ids::DeliveryId;
use crate::lifecycle::DeliveryStatus;
use crate::runtime::Runtime;
use crate::schema::Section;
use crate::store::records::AckOutcome;

/// How many waiting deliveries one inbox page lists (then a link to the next page).
const PAGE: i64 = 100;
/// How many finished deliveries (acknowledged, withdrawn, expired) the page recalls.
const RECENT: i64 = 50;

struct InboxRow {
    id: String,
    from: String,
    about: String,
    received: String,
    status: &'static str,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<h1>Inbox</h1>
{% if let Some(n) = notice %}<div class="notice" role="status"><h2>Acknowledged</h2><p>{{ n }}</p></div>{% endif %}
<p>Referrals other organisations sent to {{ org }}. The gateway holds your organisation's keys, so you can read them here. Once you acknowledge a referral the gateway deletes its copy: record it in your own files first (print it, or save it as a PDF). A referral can be acknowledged only after it has been opened.</p>
<h2>Waiting for you</h2>
{% if waiting.is_empty() %}<p>{% if paged %}No more referrals are waiting.{% else %}Nothing is waiting for you.{% endif %}</p>{% else %}
<table><caption>Oldest first{% if paged %} (continued){% endif %}: {{ waiting.len() }} shown</caption>
<thead><tr><th scope="col">From</th><th scope="col">About</th><th scope="col">Received</th><th scope="col">Status</th><th scope="col">Open</th></tr></thead>
<tbody>{% for r in waiting %}<tr><td>{{ r.from }}</td><td>{{ r.about }}</td><td>{{ r.received }}</td><td>{{ r.status }}</td>
<td><a href="/console/inbox/{{ r.id }}">Read<span class="visually-hidden"> the {{ r.about }} from {{ r.from }}, received {{ r.received }}</span></a></td></tr>{% endfor %}</tbody></table>
{% if let Some(next) = next %}<p><a href="/console/inbox?after={{ next }}">More waiting referrals</a></p>{% endif %}{% endif %}
<h2>Recently finished</h2>
{% if done.is_empty() %}<p>None yet.</p>{% else %}
<table><caption>Most recent first ({{ done.len() }} shown)</caption>
<thead><tr><th scope="col">From</th><th scope="col">About</th><th scope="col">Received</th><th scope="col">Status</th></tr></thead>
<tbody>{% for r in done %}<tr><td>{{ r.from }}</td><td>{{ r.about }}</td><td>{{ r.received }}</td><td>{{ r.status }}</td></tr>{% endfor %}</tbody></table>{% endif %}"#
)]
struct InboxBody {
    notice: Option<String>,
    org: String,
    waiting: Vec<InboxRow>,
    done: Vec<InboxRow>,
    next: Option<i64>,
    paged: bool,
}

/// `?acknowledged=` after an acknowledgement; `?after=` for the next page of waiting ones.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ConsoleInboxQuery")]
pub struct InboxQuery {
    /// A delivery just acknowledged (the page confirms it).
    acknowledged: Option<String>,
    /// The position after which the next page of waiting deliveries starts.
    after: Option<i64>,
}

/// `GET /console/inbox`: every delivery waiting (oldest first, a page at a time) and the
/// recently finished ones.
pub async fn list(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    super::PageQuery(q): super::PageQuery<InboxQuery>,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let after = q.after.unwrap_or(0).max(0);
    let (waiting, recent) = match (
        rt.store.inbox_page(&caller.partner, after, PAGE).await,
        rt.store.received(&caller.partner, RECENT).await,
    ) {
        (Ok(w), Ok(r)) => (w, r),
        (Err(e), _) | (_, Err(e)) => {
            return problem_page_in(Some(config), &ApiError::from(e), Some(&caller));
        }
    };
    // A notice only for what is true: the delivery is the caller's and acknowledged.
    let mut notice = None;
    if let Some(id) = q
        .acknowledged
        .as_deref()
        .and_then(|id| DeliveryId::parse(id).ok())
    {
        if let Ok(Some((DeliveryStatus::Acknowledged, _))) =
            rt.store.peek_delivery(&caller.partner, &id).await
        {
            notice = Some(format!(
                "Delivery {id} is acknowledged: the sender sees that you have it, and the gateway has deleted its copy."
            ));
        }
    }
    let next = (waiting.len() as i64 == PAGE)
        .then(|| waiting.last().map(|w| w.position))
        .flatten();
    let body = render(&InboxBody {
        notice,
        org: partner_name(config, &caller.partner),
        waiting: waiting
            .iter()
            .map(|w| InboxRow {
                id: w.id.to_string(),
                from: partner_name(config, &w.from),
                about: type_title(config, &w.referral_type),
                received: when(w.received_at),
                status: w.status.words(),
            })
            .collect(),
        done: recent
            .into_iter()
            .filter(|r| !r.status.in_inbox())
            .map(|r| InboxRow {
                id: r.id.to_string(),
                from: partner_name(config, &r.from),
                about: type_title(config, &r.referral_type),
                received: when(r.received_at),
                status: r.status.words(),
            })
            .collect(),
        next,
        paged: after > 0,
    });
    let html = full_page(
        Some(config),
        Some(&caller),
        "/console/inbox",
        "Inbox",
        &body,
        false,
    );
    page(StatusCode::OK, html, None)
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<p class="caption">{{ about }} from {{ from }}</p>
<h1>{{ about }}: {{ sender_ref }}</h1>
<dl class="summary">
<dt>From</dt><dd>{{ from }}</dd>
<dt>Their reference</dt><dd>{{ sender_ref }}</dd>
<dt>Referral</dt><dd>{{ referral_id }}{% if let Some(s) = supersedes %} (corrects {{ s }}: replace what you recorded from it){% endif %}</dd>
<dt>Delivery</dt><dd>{{ id }}</dd>
<dt>Consent</dt><dd>{{ consent }}</dd>
<dt>Has the person been told?</dt><dd>{{ informed }}</dd>
{% for b in basis %}<dt>{{ b.0 }}</dt><dd>{{ b.1 }}</dd>{% endfor %}
</dl>
{% for s in sections %}<table><caption>{{ s.title }}</caption><tbody>
{% for r in s.rows %}<tr><th scope="row">{{ r.label }}</th><td class="value">{{ r.value }}</td></tr>{% endfor %}
</tbody></table>{% endfor %}
<h2>Not shared with your organisation</h2>
{% if withheld.is_empty() %}<p>Your organisation's agreement shares every field of this referral type.</p>{% else %}
<p>Under its information sharing agreement, your organisation does not receive these parts of a {{ about_lower }} (whether or not the sender filled them in):</p>
<ul>{% for w in withheld %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
{% if can_ack %}<h2>Acknowledge</h2>
<form method="post" action="/console/inbox/{{ id }}/ack"><input type="hidden" name="csrf" value="{{ csrf }}">
<p>Acknowledge once you have recorded this referral in your own files. The sender sees it is acknowledged, and the gateway deletes its copy: you cannot open it here again.</p>
<p><button type="submit">Acknowledge receipt</button></p></form>{% endif %}"#
)]
struct DeliveryBody {
    id: String,
    about: String,
    about_lower: String,
    from: String,
    sender_ref: String,
    referral_id: String,
    supersedes: Option<String>,
    consent: String,
    informed: String,
    basis: Vec<(&'static str, String)>,
    sections: Vec<Section>,
    withheld: Vec<String>,
    can_ack: bool,
    csrf: String,
}

/// `GET /console/inbox/{id}`: one delivery as a document (audited as a consultation).
pub async fn read(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let Ok(id) = DeliveryId::parse(&id) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    let opened = match hosted::open_delivery(&rt, &caller, &id).await {
        Ok(o) => o,
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    };
    let delivery = &opened.claims["delivery"];
    let kind = config
        .policy
        .partners
        .get(&caller.partner)
        .map(|p| p.kind.clone());
    let (about, sections, withheld) =
        crate::printable::sections(&config.policy.schemas, kind.as_ref(), delivery);
    let withheld = withheld.unwrap_or_default();
    let (consent, informed, basis) = crate::printable::terms(delivery);
    let from = delivery["from"]
        .as_str()
        .and_then(|f| f.parse::<PartnerId>().ok())
        .map_or_else(|| "Unknown sender".into(), |f| partner_name(config, &f));
    let (csrf, cookie) = csrf_token(&rt, &caller, &headers);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let title = format!("{about}: {}", text(&delivery["sender_ref"]));
    let body = render(&DeliveryBody {
        id: id.to_string(),
        about_lower: about.to_lowercase(),
        from,
        sender_ref: text(&delivery["sender_ref"]),
        referral_id: text(&delivery["referral_id"]),
        supersedes: delivery["supersedes"].as_str().map(str::to_owned),
        consent,
        informed,
        basis,
        sections,
        withheld,
        can_ack: crate::policy::decide(
            Some(&caller),
            crate::policy::Permission::AcknowledgeDelivery,
        )
        .is_ok(),
        csrf,
        about,
    });
    let html = full_page(
        Some(config),
        Some(&caller),
        "/console/inbox",
        &title,
        &body,
        false,
    );
    page(StatusCode::OK, html, cookie)
}

/// `POST /console/inbox/{id}/ack`.
pub async fn acknowledge(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(id): PathId,
    uri: Uri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let id = match posted_about(
        &rt,
        &caller,
        &uri,
        &headers,
        &id,
        |s| DeliveryId::parse(s).ok(),
        form,
    ) {
        Ok((id, _)) => id,
        Err(refused) => return *refused,
    };
    // A hosted organisation has no copy but this one: it is acknowledged (and deleted) only
    // once someone has opened it.
    match rt.store.peek_delivery(&caller.partner, &id).await {
        Ok(Some((DeliveryStatus::Queued, _))) => {
            return problem_page_in(
                Some(config),
                &ApiError::BadRequest {
                    slug: crate::api::problem::BadInput::NotOpened,
                    detail: "open and record this referral before acknowledging it: acknowledging deletes the gateway's copy".into(),
                },
                Some(&caller),
            );
        }
        Ok(_) => {}
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    }
    let at = rt.clock.unix_time();
    match rt
        .store
        .ack_delivery(&caller.partner, &id, at, &ActorRef::from(&caller))
        .await
    {
        Ok(AckOutcome::Acknowledged | AckOutcome::AlreadyAcknowledged) => {
            see_other(&format!("/console/inbox?acknowledged={id}"))
        }
        Ok(AckOutcome::NotFound) => {
            problem_page_in(Some(config), &ApiError::NotFound, Some(&caller))
        }
        Err(e) => problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    }
}
