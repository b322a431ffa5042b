//! The console: server-rendered HTML for people under `/console/`. No JavaScript; a strict
//! Content-Security-Policy; every form protected by `csrf`; `Cache-Control: no-store` on
//! every page; printable. Pages:
//!
//! - [`review`]: the lead's queue and a held referral rendered as a document, field by field,
//!   with what each recipient would get and what is withheld side by side, decided per
//!   recipient;
//! - [`inbox`]: a hosted organisation's inbox and each delivery as a readable document;
//! - [`compose`]: a referral form generated from the type's schema, for hosted organisations;
//! - [`sent`]: the organisation's sent referrals with their statuses, and withdrawal.
//!
//! Who may see a page is the permission policy's (the route layer); failures are rendered
//! from the same [`Problem`](crate::api::problem::Problem) the API sends as JSON
//! ([`problem_page`]). Every label comes from the schemas and the configuration: no slug
//! reaches a page where words exist.

pub mod compose;
pub mod csrf;
pub mod inbox;
pub mod review;
pub mod sent;

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::api::problem::ApiError;
use crate::audit::event::ActorRef;
use crate::config::Config;
use crate::identity::{Actor, PartnerId, Principal, ReferralType};
use crate::policy::{self, Permission};
use crate::runtime::Runtime;
use crate::schema::document::code_words;

pub use review::{decide, queue};

/// The console's Content-Security-Policy: nothing but our own stylesheet and forms.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("style.css");

/// Sets the headers every console page carries (and the CSRF cookie when one is new).
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

/// A redirect after a successful form post (to a page saying what happened).
fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a console page could not be rendered");
        "<!doctype html><html lang=\"en\"><title>refex</title><main><h1>Page could not be rendered</h1></main></html>".into()
    })
}

/// The wait from `since` to `now` in words: "25 minutes", "3 hours", "4 days".
fn waited(since: crate::timestamp::UnixTime, now: crate::timestamp::UnixTime) -> String {
    age(now.secs_since(since))
}

/// A wait in words: "25 minutes", "3 hours", "4 days".
fn age(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match seconds {
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 2 * 86_400 => plural(s / 3600, "hour"),
        s => plural(s / 86_400, "day"),
    }
}

/// A moment in words (UTC): "27 November 2026, 17:06 UTC".
fn when(at: crate::timestamp::UnixTime) -> String {
    let text = at.rfc3339();
    // 2026-11-27T17:06:00Z
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => {
            format!("{}, {time} UTC", crate::schema::document::date_words(date))
        }
        _ => text,
    }
}

/// One link of the navigation.
struct NavLink {
    href: &'static str,
    text: &'static str,
    current: bool,
}

/// One line of an error summary: a link to the field at fault.
pub struct ErrorLink {
    /// `#id` of the field.
    pub href: String,
    /// What is wrong and how to fix it.
    pub text: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% if has_errors %}Error: {% endif %}{{ title }} – refex</title>
<link rel="stylesheet" href="/console/style.css"></head>
<body><a class="skip" href="#main">Skip to main content</a>
<header class="site"><p class="service">refex <span>safeguarding referral exchange</span></p>
{% if !nav.is_empty() %}<nav aria-label="Console"><ul>{% for n in nav %}<li><a href="{{ n.href }}"{% if n.current %} aria-current="page"{% endif %}>{{ n.text }}</a></li>{% endfor %}</ul></nav>{% endif %}
{% if !who.is_empty() %}<p class="who">Signed in as {{ who }}</p>{% endif %}</header>
<main id="main" tabindex="-1">{{ body|safe }}</main>
<footer class="site"><p>Confidential: safeguarding information. Do not leave this page open unattended.</p></footer>
</body></html>"##
)]
struct Layout<'a> {
    title: &'a str,
    who: String,
    nav: Vec<NavLink>,
    body: &'a str,
    has_errors: bool,
}

/// The navigation a caller sees: only the pages the policy lets them open.
fn nav(caller: Option<&Principal>, current: &str) -> Vec<NavLink> {
    let Some(caller) = caller else {
        return vec![];
    };
    [
        ("/console/", "Reviews", Permission::ReviewReferrals),
        ("/console/inbox", "Inbox", Permission::ReadHostedInbox),
        (
            "/console/compose",
            "New referral",
            Permission::ComposeReferral,
        ),
        (
            "/console/sent",
            "Sent referrals",
            Permission::ReadSentHistory,
        ),
    ]
    .into_iter()
    .filter(|(_, _, p)| policy::decide(Some(caller), *p).is_ok())
    .map(|(href, text, _)| NavLink {
        href,
        text,
        current: href == current,
    })
    .collect()
}

/// Who the caller is, in words: "Designated Safeguarding Lead A (dev), Nottinghamshire
/// Police" (the configured name, never more).
fn who(config: Option<&Config>, caller: Option<&Principal>) -> String {
    match (config, caller) {
        (Some(config), Some(c)) => {
            let org = partner_name(config, &c.partner);
            match &c.actor {
                Actor::Person { id, .. } => {
                    let name = config
                        .policy
                        .partners
                        .get(&c.partner)
                        .and_then(|p| p.people.iter().find(|x| &x.id == id))
                        .map_or_else(|| id.to_string(), |p| p.name.clone());
                    format!("{name}, {org}")
                }
                Actor::System(s) => format!("system {s}, {org}"),
            }
        }
        (None, Some(c)) => c.to_string(),
        _ => String::new(),
    }
}

/// A whole page: the layout around `body`.
fn full_page(
    config: Option<&Config>,
    caller: Option<&Principal>,
    current: &str,
    title: &str,
    body: &str,
    has_errors: bool,
) -> String {
    render(&Layout {
        title,
        who: who(config, caller),
        nav: nav(caller, current),
        body,
        has_errors,
    })
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<h1>{{ title }}</h1>
<div class="problem" role="alert"><p>{{ detail }}</p></div>
{% if let Some(h) = home %}<p><a href="{{ h }}">Back to the console</a></p>{% endif %}"#
)]
struct ProblemBody<'a> {
    title: &'a str,
    detail: &'a str,
    home: Option<&'static str>,
}

/// A failure as an HTML page: the same status, title and detail the API would send as
/// `application/problem+json` (the one mapping is `ApiError::problem`).
pub fn problem_page(e: &ApiError, caller: Option<&Principal>) -> Response {
    problem_page_in(None, e, caller)
}

/// [`problem_page`] with the configuration for the caller's name.
fn problem_page_in(config: Option<&Config>, e: &ApiError, caller: Option<&Principal>) -> Response {
    let p = e.problem();
    let body = render(&ProblemBody {
        title: p.title,
        detail: &p.detail,
        // The first page this caller may open, if any.
        home: nav(caller, "").first().map(|n| n.href),
    });
    let html = full_page(config, caller, "", p.title, &body, true);
    let mut response = page(p.status, html, None);
    if let Some(seconds) = p.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    crate::api::problem::mark(e, &mut response);
    response
}

/// A page's query, or the page saying it could not be read (never the library's message).
#[derive(Debug)]
pub struct PageQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PageQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(q)) => Ok(PageQuery(q)),
            Err(_) => {
                let caller = parts
                    .extensions
                    .get::<crate::api::principal::Caller>()
                    .map(|c| &c.0);
                let e = ApiError::BadRequest {
                    slug: crate::api::problem::BadInput::Query,
                    detail: "this page's address has a query it cannot read; open the page from \
                             the console's menu"
                        .into(),
                };
                Err(crate::api::problem::respond(parts.uri.path(), caller, e))
            }
        }
    }
}

/// `GET /console/style.css`.
pub async fn style() -> Response {
    let mut res = STYLE.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    res
}

/// A partner's name (its id when it is no longer configured).
fn partner_name(config: &Config, id: &PartnerId) -> String {
    config
        .policy
        .partners
        .get(id)
        .map_or_else(|| id.to_string(), |p| p.name.clone())
}

/// A person's or system's name as configured, with the organisation's.
fn actor_name(config: &Config, actor: &ActorRef) -> String {
    match actor {
        ActorRef::Person { partner, id } => {
            let name = config
                .policy
                .partners
                .get(partner)
                .and_then(|p| p.people.iter().find(|x| &x.id == id))
                .map_or_else(|| id.to_string(), |p| p.name.clone());
            format!("{name} ({})", partner_name(config, partner))
        }
        ActorRef::System { partner, id } => {
            format!("case system {id} ({})", partner_name(config, partner))
        }
        ActorRef::Operator(task) => format!("the gateway's operators ({task:?})"),
    }
}

/// A referral type in words: its schema's title.
fn type_title(config: &Config, ty: &ReferralType) -> String {
    config
        .policy
        .schemas
        .referral_type(ty)
        .and_then(|s| {
            s.source
                .get("title")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| code_words(ty.as_str()))
}

/// The CSRF token for a page's forms, and the cookie to set when the browser has none yet.
fn csrf_token(rt: &Runtime, caller: &Principal, headers: &HeaderMap) -> (String, Option<String>) {
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
    (token, set)
}

/// Whether a posted form came from this console for this certificate (token, cookie and
/// `Origin`); the refusal page when it did not.
fn form_is_genuine(
    rt: &Runtime,
    caller: &Principal,
    uri: &Uri,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), Box<Response>> {
    let get = |name: header::HeaderName| headers.get(name).and_then(|h| h.to_str().ok());
    let form_token = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    let genuine = csrf::check(
        &rt.snapshot().config.storage_key,
        csrf::cookie_value(get(header::COOKIE)).as_deref(),
        form_token,
        &caller.fingerprint,
        get(header::ORIGIN),
        get(header::HOST).or_else(|| uri.authority().map(|a| a.as_str())),
    );
    if genuine {
        Ok(())
    } else {
        Err(Box::new(problem_page_in(
            Some(&rt.snapshot().config),
            &ApiError::CrossSite(
                "This form did not come from this console (CSRF check failed). Reload the page and try again.",
            ),
            Some(caller),
        )))
    }
}

/// A posted form's `(name, value)` pairs, in order.
type Fields = Vec<(String, String)>;

/// A form posted about one resource: its id parsed by `parse` (`404` when it does not
/// parse, ids do not leak), the fields read, the form genuine (CSRF); else the page to
/// answer with.
fn posted_about<T>(
    rt: &Runtime,
    caller: &Principal,
    uri: &Uri,
    headers: &HeaderMap,
    id: &str,
    parse: impl Fn(&str) -> Option<T>,
    form: Posted,
) -> Result<(T, Fields), Box<Response>> {
    let config = &rt.snapshot().config;
    let Some(id) = parse(id) else {
        return Err(Box::new(problem_page_in(
            Some(config),
            &ApiError::NotFound,
            Some(caller),
        )));
    };
    let fields = match form {
        Ok(axum::Form(fields)) => fields,
        Err(e) => {
            return Err(Box::new(problem_page_in(
                Some(config),
                &form_refusal(config, &e),
                Some(caller),
            )));
        }
    };
    form_is_genuine(rt, caller, uri, headers, &fields)?;
    Ok((id, fields))
}

/// Why a posted form could not be read, as the problem it is: not a form (`415`), larger than
/// the gateway accepts (`413`), or not readable (`400 bad-form`). Never the framework's text.
fn form_refusal(config: &Config, e: &axum::extract::rejection::FormRejection) -> ApiError {
    match e.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("application/x-www-form-urlencoded")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: config.settings.limits.max_body_bytes,
        },
        _ => ApiError::BadRequest {
            slug: crate::api::problem::BadInput::Form,
            detail: "the form could not be read; reload it and try again".into(),
        },
    }
}

/// A posted form's fields, or the page saying it could not be read.
type Posted = Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_moments_read_as_words() {
        assert_eq!(age(60), "1 minute");
        assert_eq!(age(7200), "2 hours");
        assert_eq!(age(3 * 86_400), "3 days");
        assert_eq!(
            when(crate::timestamp::UnixTime::EPOCH),
            "1 January 1970, 00:00 UTC"
        );
    }
}
