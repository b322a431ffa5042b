//! The route table: every API route with its method, handler and documentation, in one
//! place. The router is built from this table and `GET /openapi.json` is generated from it,
//! so the description cannot drift from what is served.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::openapi::{
    CompactJwe, CsvTable, Describe, FormFields, HtmlPage, JwkSet, OpenApiDocument, Stylesheet, of,
};
use super::{audit, inbox, public, records, referrals, reports, reviews, whoami};
use crate::identity::ReferralType;
use crate::ids::{DeliveryId, ReferralId};
use crate::policy::Permission;
use crate::runtime::Runtime;

/// One documented route.
pub struct RouteDoc {
    /// HTTP method.
    pub method: Method,
    /// Path template (`{id}` segments).
    pub path: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// What the caller must be allowed to do (the policy decides who; a layer enforces it
    /// before the handler runs).
    pub permission: Permission,
    /// The `{id}` segment: the type it must parse as (anything else is `404`).
    pub id: Option<Describe>,
    /// The query: the type the handler reads it into (each member is one parameter).
    pub query: Option<Describe>,
    /// Request body: media type and the type the handler reads it as.
    pub body: Option<(&'static str, Describe)>,
    /// Success status, and each media type it may answer with and its type (none: no body).
    pub success: (u16, &'static [(&'static str, Describe)]),
    /// Other statuses it answers with a page rather than a problem (a console form shown
    /// again, `200`).
    pub also: &'static [u16],
    /// Problem statuses it can answer with, besides those every route can
    /// ([`openapi::ANY_ROUTE`](super::openapi::ANY_ROUTE)).
    pub problems: &'static [u16],
    make: fn(MethodFilter) -> MethodRouter<Arc<Runtime>>,
}

macro_rules! route {
    ($method:ident $path:literal => $handler:path, $summary:literal, $access:expr,
     id: $id:expr, query: $query:expr, body: $body:expr, ok: ($status:literal, $ok:expr), problems: $problems:expr) => {
        route!($method $path => $handler, $summary, $access, id: $id, query: $query, body: $body,
               ok: ($status, $ok), also: &[], problems: $problems)
    };
    ($method:ident $path:literal => $handler:path, $summary:literal, $access:expr,
     id: $id:expr, query: $query:expr, body: $body:expr, ok: ($status:literal, $ok:expr), also: $also:expr,
     problems: $problems:expr) => {
        RouteDoc {
            method: Method::$method,
            path: $path,
            summary: $summary,
            permission: $access,
            id: $id,
            query: $query,
            body: $body,
            success: ($status, $ok),
            also: $also,
            problems: $problems,
            make: |filter| on(filter, $handler),
        }
    };
}

const JSON: &str = "application/json";
const JOSE: &str = "application/jose";
const HTML: &str = "text/html";
const CSV: &str = "text/csv";
const FORM: &str = "application/x-www-form-urlencoded";

/// Every route the API serves.
pub static ROUTES: &[RouteDoc] = &[
    route!(GET "/.well-known/jwks.json" => public::jwks, "The gateway's public keys (enc and sig)",
        Permission::ReadPublicDocuments, id: None, query: None, body: None,
        ok: (200, &[(JSON, of::<JwkSet>)]), problems: &[]),
    route!(GET "/v1/whoami" => whoami::whoami, "Which principal the client certificate maps to",
        Permission::Identify, id: None, query: None, body: None,
        ok: (200, &[(JSON, of::<whoami::WhoAmI>)]), problems: &[]),
    route!(POST "/v1/referrals" => referrals::create, "Submit a referral: JWE(JWS(claims)) to the gateway",
        Permission::SubmitReferral, id: None, query: None, body: Some((JOSE, of::<CompactJwe>)),
        ok: (202, &[(JSON, of::<referrals::Accepted>)]),
        problems: &[400, 404, 409, 413, 415, 422]),
    route!(GET "/v1/referrals/{id}" => referrals::status, "Per-recipient status of one of your referrals",
        Permission::ReadReferralStatus, id: Some(of::<ReferralId>), query: None, body: None,
        ok: (200, &[(JSON, of::<referrals::ReferralStatus>)]), problems: &[404]),
    route!(POST "/v1/referrals/{id}/withdraw" => inbox::withdraw, "Withdraw every unacknowledged delivery of your referral",
        Permission::WithdrawReferral, id: Some(of::<ReferralId>), query: None, body: None,
        ok: (200, &[(JSON, of::<inbox::Withdrawn>)]), problems: &[404]),
    route!(GET "/v1/inbox" => inbox::list, "Your inbox: metadata in arrival order, cursor pages, long-poll",
        Permission::ReadInbox, id: None, query: Some(of::<inbox::InboxQuery>), body: None,
        ok: (200, &[(JSON, of::<inbox::InboxPage>)]), problems: &[400]),
    route!(GET "/v1/inbox/{id}" => inbox::fetch, "One delivery: JWE to your enc key of a JWS by the gateway",
        Permission::FetchDelivery, id: Some(of::<DeliveryId>), query: None, body: None,
        ok: (200, &[(JOSE, of::<CompactJwe>)]), problems: &[404]),
    route!(POST "/v1/inbox/{id}/ack" => inbox::ack, "Acknowledge a delivery (idempotent); it leaves the inbox",
        Permission::AcknowledgeDelivery, id: Some(of::<DeliveryId>), query: None, body: None,
        ok: (204, &[]), problems: &[404]),
    route!(POST "/v1/inbox/ack" => inbox::ack_many, "Acknowledge up to 500 deliveries at once (idempotent); each leaves the inbox",
        Permission::AcknowledgeDelivery, id: None, query: None, body: Some((JSON, of::<inbox::AckRequest>)),
        ok: (200, &[(JSON, of::<inbox::AckAnswer>)]), problems: &[400, 413, 415]),
    route!(GET "/v1/reviews" => reviews::list, "Held referrals of your organisation, oldest first",
        Permission::ReviewReferrals, id: None, query: None, body: None,
        ok: (200, &[(JSON, of::<reviews::ReviewQueue>)]), problems: &[]),
    route!(GET "/v1/reviews/{id}" => reviews::show, "A held referral: per recipient, fields disclosed and withheld, and each preview digest",
        Permission::ReviewReferrals, id: Some(of::<ReferralId>), query: None, body: None,
        ok: (200, &[(JSON, of::<reviews::ReviewView>)]), problems: &[404, 409]),
    route!(POST "/v1/reviews/{id}/decision" => reviews::decide, "Approve or reject each held recipient (four eyes; an approval is bound to its preview)",
        Permission::DecideReview, id: Some(of::<ReferralId>), query: None, body: Some((JSON, of::<reviews::DecisionBody>)),
        ok: (200, &[(JSON, of::<reviews::DecisionOutcome>)]),
        problems: &[400, 404, 409, 413, 415, 422]),
    route!(GET "/v1/disclosures/{id}" => records::disclosure, "The disclosure record of one of your referrals",
        Permission::ReadDisclosureRecord, id: Some(of::<ReferralId>), query: None, body: None,
        ok: (200, &[(JSON, of::<crate::disclosure::Record>)]), problems: &[404]),
    route!(POST "/v1/subject-access" => records::subject_access, "Your disclosures, sent or received, concerning a person (JSON, or CSV with Accept: text/csv)",
        Permission::SubjectAccess, id: None, query: None, body: Some((JSON, of::<records::SubjectAccessRequest>)),
        ok: (200, &[(JSON, of::<records::SubjectAccessAnswer>), (CSV, of::<CsvTable>)]),
        problems: &[400, 413, 415, 422]),
    route!(GET "/v1/audit/checkpoint" => audit::checkpoint, "The latest signed audit checkpoint",
        Permission::ReadAuditProofs, id: None, query: None, body: None,
        ok: (200, &[(JSON, of::<audit::Checkpoint>)]), problems: &[]),
    route!(GET "/v1/audit/proof/inclusion" => audit::inclusion, "Inclusion proof of one audit leaf",
        Permission::ReadAuditProofs, id: None, query: Some(of::<audit::InclusionQuery>), body: None,
        ok: (200, &[(JSON, of::<crate::audit::log::InclusionProof>)]), problems: &[400]),
    route!(GET "/v1/audit/proof/consistency" => audit::consistency, "Consistency proof between two tree sizes",
        Permission::ReadAuditProofs, id: None, query: Some(of::<audit::ConsistencyQuery>), body: None,
        ok: (200, &[(JSON, of::<crate::audit::log::ConsistencyProof>)]), problems: &[400]),
    route!(GET "/v1/reports/aggregates" => reports::aggregates, "Anonymised aggregates, small numbers suppressed (JSON, or CSV with Accept: text/csv)",
        Permission::ReadAggregates, id: None, query: Some(of::<reports::ReportQuery>), body: None,
        ok: (200, &[(JSON, of::<crate::report::Table>), (CSV, of::<CsvTable>)]), problems: &[400]),
    route!(GET "/console/" => crate::console::queue, "Console: held referrals awaiting review (HTML)",
        Permission::ReviewReferrals, id: None, query: Some(of::<crate::console::review::NoticeQuery>), body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[400]),
    route!(GET "/console/reviews/{id}" => crate::console::review::review, "Console: one held referral's preview and decision form (HTML)",
        Permission::ReviewReferrals, id: Some(of::<ReferralId>), query: None, body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[404, 409]),
    route!(POST "/console/reviews/{id}/decision" => crate::console::decide, "Console: record a decision (form, CSRF-checked)",
        Permission::DecideReview, id: Some(of::<ReferralId>), query: None, body: Some((FORM, of::<FormFields>)),
        ok: (303, &[]), problems: &[400, 404, 409, 413, 415, 422]),
    route!(GET "/console/sent" => crate::console::sent::sent, "Console: your organisation's sent referrals with each recipient's status (HTML)",
        Permission::ReadSentHistory, id: None, query: Some(of::<crate::console::sent::SentQuery>), body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[400]),
    route!(GET "/console/sent/{id}/withdraw" => crate::console::sent::confirm, "Console: what withdrawing a referral would do, and the form that does it (HTML)",
        Permission::WithdrawReferral, id: Some(of::<ReferralId>), query: None, body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[404]),
    route!(POST "/console/sent/{id}/withdraw" => crate::console::sent::withdraw, "Console: withdraw a referral's unacknowledged deliveries (form, CSRF-checked)",
        Permission::WithdrawReferral, id: Some(of::<ReferralId>), query: None, body: Some((FORM, of::<FormFields>)),
        ok: (303, &[]), problems: &[400, 404, 413, 415]),
    route!(GET "/console/inbox" => crate::console::inbox::list, "Console: a hosted organisation's inbox (HTML)",
        Permission::ReadHostedInbox, id: None, query: Some(of::<crate::console::inbox::InboxQuery>), body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[400]),
    route!(GET "/console/inbox/{id}" => crate::console::inbox::read, "Console: one delivery as a document, decrypted with the hosted organisation's key (audited)",
        Permission::ReadHostedInbox, id: Some(of::<DeliveryId>), query: None, body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[404]),
    route!(POST "/console/inbox/{id}/ack" => crate::console::inbox::acknowledge, "Console: acknowledge a delivery (form, CSRF-checked)",
        Permission::AcknowledgeDelivery, id: Some(of::<DeliveryId>), query: None, body: Some((FORM, of::<FormFields>)),
        ok: (303, &[]), problems: &[400, 404, 413, 415]),
    route!(GET "/console/compose" => crate::console::compose::choose, "Console: choose a referral type to compose (HTML)",
        Permission::ComposeReferral, id: None, query: None, body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[]),
    route!(GET "/console/compose/{id}" => crate::console::compose::form_page, "Console: the referral form of a type, from its schema (HTML)",
        Permission::ComposeReferral, id: Some(of::<ReferralType>), query: None, body: None,
        ok: (200, &[(HTML, of::<HtmlPage>)]), problems: &[404]),
    route!(POST "/console/compose/{id}" => crate::console::compose::send, "Console: send a composed referral through intake, signed with the hosted organisation's key (form, CSRF-checked)",
        Permission::ComposeReferral, id: Some(of::<ReferralType>), query: None, body: Some((FORM, of::<FormFields>)),
        ok: (303, &[]), also: &[200], problems: &[400, 404, 409, 413, 415, 422]),
    route!(GET "/console/style.css" => crate::console::style, "Console stylesheet",
        Permission::Identify, id: None, query: None, body: None,
        ok: (200, &[("text/css", of::<Stylesheet>)]), problems: &[]),
    route!(GET "/openapi.json" => super::openapi::document, "This description",
        Permission::ReadPublicDocuments, id: None, query: None, body: None,
        ok: (200, &[(JSON, of::<OpenApiDocument>)]), problems: &[]),
];

/// An operation: method and path template.
pub type Operation = (&'static str, &'static str);

/// From an operation's success, the JSON pointer of the `{id}` in its answer, and the
/// operations that take it.
pub type Link = (Operation, &'static str, &'static [Operation]);

/// How an answer leads to the next request (OpenAPI links): from `(method, path)`'s success,
/// the `{id}` of each operation named, taken from the answer by a JSON pointer. A generated
/// client (or a fuzzer's stateful phase) follows them from a listing to its items.
pub static LINKS: &[Link] = &[
    (
        ("GET", "/v1/inbox"),
        "/messages/0/id",
        &[("GET", "/v1/inbox/{id}"), ("POST", "/v1/inbox/{id}/ack")],
    ),
    (
        ("POST", "/v1/referrals"),
        "/id",
        &[
            ("GET", "/v1/referrals/{id}"),
            ("POST", "/v1/referrals/{id}/withdraw"),
            ("GET", "/v1/disclosures/{id}"),
        ],
    ),
    (
        ("GET", "/v1/reviews"),
        "/reviews/0/id",
        &[
            ("GET", "/v1/reviews/{id}"),
            ("POST", "/v1/reviews/{id}/decision"),
        ],
    ),
];

/// The methods the table serves at a concrete `path` (`HEAD` is never among them: the
/// gateway refuses it everywhere), for a `405`'s `Allow`.
pub fn methods_at(path: &str) -> Vec<&'static Method> {
    let matches = |template: &str| {
        let (mut t, mut p) = (template.split('/'), path.split('/'));
        loop {
            match (t.next(), p.next()) {
                (None, None) => return true,
                (Some(t), Some(p)) if t == p || (t.starts_with('{') && !p.is_empty()) => {}
                _ => return false,
            }
        }
    };
    // As the router matches: a path some route names literally (`/v1/inbox/ack`) is that
    // route's alone, never also a `{id}` template's (`/v1/inbox/{id}`).
    let literal = ROUTES.iter().any(|r| r.path == path);
    ROUTES
        .iter()
        .filter(|r| {
            if literal {
                r.path == path
            } else {
                matches(r.path)
            }
        })
        .map(|r| &r.method)
        .collect()
}

/// Registers every route of the table on `router`, each behind the layer that enforces its
/// permission (so no handler runs for a caller the policy refuses).
pub fn register(mut router: axum::Router<Arc<Runtime>>) -> axum::Router<Arc<Runtime>> {
    for r in ROUTES {
        let filter = MethodFilter::try_from(r.method.clone())
            .unwrap_or_else(|_| unreachable!("the table only uses standard methods"));
        let route = (r.make)(filter).route_layer(axum::middleware::from_fn_with_state(
            r.permission,
            super::principal::enforce,
        ));
        router = router.route(r.path, route);
    }
    router
}
