//! A hosted organisation's inbox in the console: what reached it (new, opened,
//! acknowledged, withdrawn, expired), each delivery rendered as a printable document with
//! the labels of the organisation's view and a list of what its agreement never shares with
//! it, and acknowledgement. Reading goes through `hosted::open_delivery` (audited as a
//! consultation by the person, before anything is shown).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Posted, csrf_token, form_is_genuine, full_page, page, partner_name, problem_page_in, render,
    see_other, type_title, when,
};
use crate::api::principal::{Caller, PathId};
use crate::api::problem::ApiError;
use crate::audit::event::ActorRef;
use crate::hosted;
use crate::identity::PartnerId;
use crate::ids::DeliveryId;
use crate::runtime::Runtime;
use crate::schema::Section;
use crate::store::records::AckOutcome;

/// How many deliveries the inbox page lists.
const SHOWN: i64 = 200;

struct InboxRow {
    id: String,
    from: String,
    about: String,
    received: String,
    status: &'static str,
    readable: bool,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<h1>Inbox</h1>
{% if let Some(n) = notice %}<div class="notice" role="status"><h2>Acknowledged</h2><p>{{ n }}</p></div>{% endif %}
<p>Referrals other organisations sent to {{ org }}. The gateway holds your organisation's keys, so you can read them here. Once you acknowledge a referral the gateway deletes its copy: record it in your own files first (print it, or save it as a PDF).</p>
{% if rows.is_empty() %}<p>Nothing has been sent to your organisation yet.</p>{% else %}
<table><caption>Most recent first ({{ rows.len() }} shown)</caption>
<thead><tr><th scope="col">From</th><th scope="col">About</th><th scope="col">Received</th><th scope="col">Status</th><th scope="col">Open</th></tr></thead>
<tbody>{% for r in rows %}<tr><td>{{ r.from }}</td><td>{{ r.about }}</td><td>{{ r.received }}</td><td>{{ r.status }}</td>
<td>{% if r.readable %}<a href="/console/inbox/{{ r.id }}">Read<span class="visually-hidden"> the {{ r.about }} from {{ r.from }}, received {{ r.received }}</span></a>{% else %}—{% endif %}</td></tr>{% endfor %}</tbody></table>{% endif %}"#
)]
struct InboxBody {
    notice: Option<String>,
    org: String,
    rows: Vec<InboxRow>,
}

/// `?acknowledged=` after an acknowledgement.
#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    acknowledged: Option<String>,
}

/// `GET /console/inbox`.
pub async fn list(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    q: Query<InboxQuery>,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let rows = match rt.store.received(&caller.partner, SHOWN).await {
        Ok(rows) => rows,
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    };
    let notice = q
        .acknowledged
        .as_deref()
        .and_then(|id| DeliveryId::parse(id).ok())
        .map(|id| {
            format!("Delivery {id} is acknowledged: the sender sees that you have it, and the gateway has deleted its copy.")
        });
    let body = render(&InboxBody {
        notice,
        org: partner_name(config, &caller.partner),
        rows: rows
            .into_iter()
            .map(|r| InboxRow {
                id: r.id.to_string(),
                from: partner_name(config, &r.from),
                about: type_title(config, &r.referral_type),
                received: when(r.received_at),
                status: r.status.words(),
                readable: r.status.in_inbox(),
            })
            .collect(),
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
    let kind = config.partners.get(&caller.partner).map(|p| p.kind.clone());
    let (about, sections, withheld) =
        crate::printable::sections(&config.schemas, kind.as_ref(), delivery);
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
    let (Ok(id), Ok(axum::Form(form))) = (DeliveryId::parse(&id), form) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    if let Err(refused) = form_is_genuine(&rt, &caller, &uri, &headers, &form) {
        return *refused;
    }
    let at = rt.clock.unix_seconds() as i64;
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
