//! The route table: every API route with its method, handler and documentation, in one
//! place. The router is built from this table and `GET /openapi.json` is generated from it,
//! so the description cannot drift from what is served.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::{Map, Value, json};

use super::{audit, inbox, public, records, referrals, reports, reviews, whoami};
use crate::policy::{Permission, grant};
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
    /// Query parameters: name, required, description.
    pub query: &'static [(&'static str, bool, &'static str)],
    /// Request body media type, if any.
    pub body: Option<&'static str>,
    /// Success status and media type.
    pub success: (u16, &'static str),
    /// Problem statuses it can answer with (besides 403 unknown certificate, 429, 503).
    pub problems: &'static [u16],
    make: fn(MethodFilter) -> MethodRouter<Arc<Runtime>>,
}

macro_rules! route {
    ($method:ident $path:literal => $handler:path, $summary:literal, $access:expr,
     query: $query:expr, body: $body:expr, ok: ($status:literal, $media:literal), problems: $problems:expr) => {
        RouteDoc {
            method: Method::$method,
            path: $path,
            summary: $summary,
            permission: $access,
            query: $query,
            body: $body,
            success: ($status, $media),
            problems: $problems,
            make: |filter| on(filter, $handler),
        }
    };
}

const JSON: &str = "application/json";
const JOSE: &str = "application/jose";

/// Every route the API serves.
pub static ROUTES: &[RouteDoc] = &[
    route!(GET "/.well-known/jwks.json" => public::jwks, "The gateway's public keys (enc and sig)",
        Permission::ReadPublicDocuments, query: &[], body: None, ok: (200, "application/json"), problems: &[]),
    route!(GET "/v1/whoami" => whoami::whoami, "Which principal the client certificate maps to",
        Permission::Identify, query: &[], body: None, ok: (200, "application/json"), problems: &[]),
    route!(POST "/v1/referrals" => referrals::create, "Submit a referral: JWE(JWS(claims)) to the gateway",
        Permission::SubmitReferral, query: &[], body: Some(JOSE), ok: (202, "application/json"),
        problems: &[400, 403, 404, 409, 413, 415, 422]),
    route!(GET "/v1/referrals/{id}" => referrals::status, "Per-recipient status of one of your referrals",
        Permission::ReadReferralStatus, query: &[], body: None, ok: (200, "application/json"), problems: &[404]),
    route!(POST "/v1/referrals/{id}/withdraw" => inbox::withdraw, "Withdraw every unacknowledged delivery of your referral",
        Permission::WithdrawReferral, query: &[], body: None, ok: (200, "application/json"), problems: &[404]),
    route!(GET "/v1/inbox" => inbox::list, "Your inbox: metadata in arrival order, cursor pages, long-poll",
        Permission::ReadInbox, query: &[("limit", false, "1-500, default 50"), ("cursor", false, "next_cursor of the previous page"),
                                   ("wait", false, "long-poll seconds, 0-60")],
        body: None, ok: (200, "application/json"), problems: &[400]),
    route!(GET "/v1/inbox/{id}" => inbox::fetch, "One delivery: JWE to your enc key of a JWS by the gateway",
        Permission::FetchDelivery, query: &[], body: None, ok: (200, "application/jose"), problems: &[404]),
    route!(POST "/v1/inbox/{id}/ack" => inbox::ack, "Acknowledge a delivery (idempotent); it leaves the inbox",
        Permission::AcknowledgeDelivery, query: &[], body: None, ok: (204, ""), problems: &[404]),
    route!(GET "/v1/reviews" => reviews::list, "Held referrals of your organisation, oldest first",
        Permission::ReviewReferrals, query: &[], body: None, ok: (200, "application/json"), problems: &[]),
    route!(GET "/v1/reviews/{id}" => reviews::show, "A held referral: per recipient, fields disclosed and withheld, and each preview digest",
        Permission::ReviewReferrals, query: &[], body: None, ok: (200, "application/json"), problems: &[404, 409]),
    route!(POST "/v1/reviews/{id}/decision" => reviews::decide, "Approve or reject each held recipient (four eyes; an approval is bound to its preview)",
        Permission::DecideReview, query: &[], body: Some(JSON), ok: (200, "application/json"),
        problems: &[400, 404, 409, 422]),
    route!(GET "/v1/disclosures/{id}" => records::disclosure, "The disclosure record of one of your referrals",
        Permission::ReadDisclosureRecord, query: &[], body: None,
        ok: (200, "application/json"), problems: &[404]),
    route!(POST "/v1/subject-access" => records::subject_access, "Your disclosures, sent or received, concerning a person",
        Permission::SubjectAccess, query: &[], body: Some(JSON), ok: (200, "application/json"),
        problems: &[400, 422]),
    route!(GET "/v1/audit/checkpoint" => audit::checkpoint, "The latest signed audit checkpoint",
        Permission::ReadAuditProofs, query: &[], body: None, ok: (200, "application/json"), problems: &[]),
    route!(GET "/v1/audit/proof/inclusion" => audit::inclusion, "Inclusion proof of one audit leaf",
        Permission::ReadAuditProofs,
        query: &[("index", true, "leaf index"), ("size", true, "tree size")], body: None, ok: (200, "application/json"),
        problems: &[400]),
    route!(GET "/v1/audit/proof/consistency" => audit::consistency, "Consistency proof between two tree sizes",
        Permission::ReadAuditProofs,
        query: &[("from", true, "earlier size"), ("to", true, "later size")], body: None, ok: (200, "application/json"),
        problems: &[400]),
    route!(GET "/v1/reports/aggregates" => reports::aggregates, "Anonymised aggregates, small numbers suppressed",
        Permission::ReadAggregates,
        query: &[("from", true, "YYYY-MM-DD"), ("to", true, "YYYY-MM-DD, inclusive"),
                 ("by", false, "month,type,sender_kind,recipient_kind,consent,review; the last across")],
        body: None, ok: (200, "application/json"), problems: &[400]),
    route!(GET "/console/" => crate::console::queue, "Console: held referrals awaiting review (HTML)",
        Permission::ReviewReferrals, query: &[], body: None, ok: (200, "text/html"), problems: &[]),
    route!(GET "/console/reviews/{id}" => crate::console::review::review, "Console: one held referral's preview and decision form (HTML)",
        Permission::ReviewReferrals, query: &[], body: None, ok: (200, "text/html"), problems: &[404]),
    route!(POST "/console/reviews/{id}/decision" => crate::console::decide, "Console: record a decision (form, CSRF-checked)",
        Permission::DecideReview, query: &[], body: Some("application/x-www-form-urlencoded"),
        ok: (303, ""), problems: &[404, 409, 422]),
    route!(GET "/console/sent" => crate::console::sent::sent, "Console: your organisation's sent referrals with each recipient's status (HTML)",
        Permission::ReadSentHistory, query: &[("sent", false, "a referral just sent"), ("withdrawn", false, "a referral just withdrawn")],
        body: None, ok: (200, "text/html"), problems: &[]),
    route!(GET "/console/sent/{id}/withdraw" => crate::console::sent::confirm, "Console: what withdrawing a referral would do, and the form that does it (HTML)",
        Permission::WithdrawReferral, query: &[], body: None, ok: (200, "text/html"), problems: &[404]),
    route!(POST "/console/sent/{id}/withdraw" => crate::console::sent::withdraw, "Console: withdraw a referral's unacknowledged deliveries (form, CSRF-checked)",
        Permission::WithdrawReferral, query: &[], body: Some("application/x-www-form-urlencoded"),
        ok: (303, ""), problems: &[404]),
    route!(GET "/console/inbox" => crate::console::inbox::list, "Console: a hosted organisation's inbox (HTML)",
        Permission::ReadHostedInbox, query: &[("acknowledged", false, "a delivery just acknowledged")], body: None,
        ok: (200, "text/html"), problems: &[]),
    route!(GET "/console/inbox/{id}" => crate::console::inbox::read, "Console: one delivery as a document, decrypted with the hosted organisation's key (audited)",
        Permission::ReadHostedInbox, query: &[], body: None, ok: (200, "text/html"), problems: &[404]),
    route!(POST "/console/inbox/{id}/ack" => crate::console::inbox::acknowledge, "Console: acknowledge a delivery (form, CSRF-checked)",
        Permission::AcknowledgeDelivery, query: &[], body: Some("application/x-www-form-urlencoded"),
        ok: (303, ""), problems: &[404]),
    route!(GET "/console/compose" => crate::console::compose::choose, "Console: choose a referral type to compose (HTML)",
        Permission::ComposeReferral, query: &[], body: None, ok: (200, "text/html"), problems: &[]),
    route!(GET "/console/compose/{id}" => crate::console::compose::form_page, "Console: the referral form of a type, from its schema (HTML)",
        Permission::ComposeReferral, query: &[], body: None, ok: (200, "text/html"), problems: &[404]),
    route!(POST "/console/compose/{id}" => crate::console::compose::send, "Console: send a composed referral through intake, signed with the hosted organisation's key (form, CSRF-checked)",
        Permission::ComposeReferral, query: &[], body: Some("application/x-www-form-urlencoded"),
        ok: (303, ""), problems: &[403, 404, 409, 422]),
    route!(GET "/console/style.css" => crate::console::style, "Console stylesheet",
        Permission::Identify, query: &[], body: None, ok: (200, "text/css"), problems: &[]),
    route!(GET "/openapi.json" => super::openapi::document, "This description",
        Permission::ReadPublicDocuments, query: &[], body: None, ok: (200, "application/json"), problems: &[]),
];

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

/// The OpenAPI 3.1 description of the table, with the referral type schemas embedded as
/// they are (JSON Schema 2020-12 is OpenAPI 3.1's schema dialect).
pub fn describe(gateway_id: &str, referral_types: Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut responses = Map::new();
        let mut ok = json!({ "description": "Success" });
        if !r.success.1.is_empty() {
            ok["content"] = json!({ r.success.1: { "schema": {} } });
        }
        responses.insert(r.success.0.to_string(), ok);
        let mut problems: Vec<u16> = r.problems.to_vec();
        problems.extend([403, 429, 503]);
        problems.sort_unstable();
        problems.dedup();
        for p in problems {
            responses.insert(
                p.to_string(),
                json!({ "description": "Problem (RFC 9457)",
                        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }),
            );
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "responses": responses,
            "x-refex-permission": r.permission.as_str(),
            "x-refex-access": grant(r.permission).describe(),
        });
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| json!({ "name": s.trim_matches(|c| c == '{' || c == '}'), "in": "path", "required": true,
                             "schema": { "type": "string" } }))
            .collect();
        params.extend(r.query.iter().map(|(name, required, desc)| {
            json!({ "name": name, "in": "query", "required": required, "description": desc, "schema": { "type": "string" } })
        }));
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(media) = r.body {
            op["requestBody"] = json!({ "required": true, "content": { media: { "schema": {} } } });
        }
        paths
            .entry(r.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(r.method.as_str().to_lowercase(), op));
    }
    let mut schemas = referral_types;
    schemas.insert(
        "Problem".into(),
        json!({ "type": "object", "required": ["type", "title", "status"],
                "properties": { "type": { "type": "string" }, "title": { "type": "string" },
                                "status": { "type": "integer" }, "detail": { "type": "string" },
                                "errors": { "type": "array", "items": { "type": "object",
                                    "properties": { "pointer": { "type": "string" }, "keyword": { "type": "string" },
                                                    "message": { "type": "string" } } } } } }),
    );
    json!({
        "openapi": "3.1.0",
        "info": { "title": format!("refex gateway ({gateway_id})"), "version": env!("CARGO_PKG_VERSION"),
                  "description": "Multi-agency referral exchange. Every route requires mutual TLS; see x-refex-access." },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "mutualTLS": { "type": "mutualTLS" } },
        },
        "security": [{ "mutualTLS": [] }],
        "paths": paths,
    })
}
