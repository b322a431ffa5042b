//! A delivery as a standalone, printable HTML document, for people who receive referrals
//! without the console (`refex inbox --html`): the same labels and words as the console
//! (`schema::document`), the sender, references, consent and lawful basis in words, and
//! what the organisation's view never includes. Pure: delivery claims and schemas in, HTML
//! out; the styles are inline so the file stands alone.

use askama::Template;
use serde_json::Value;

use crate::identity::{PartnerKind, ReferralType};
use crate::schema::document::{code_words, document, not_in_view};
use crate::schema::{SchemaSet, Section};

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ about }}: {{ sender_ref }} – refex delivery</title>
<style>body{font-family:system-ui,Arial,sans-serif;line-height:1.5;color:#0b0c0c;max-width:60rem;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.7rem}table{border-collapse:collapse;width:100%;margin:0 0 1.25rem}th,td{border:1px solid #b1b4b6;padding:.4rem .6rem;text-align:left;vertical-align:top}
th[scope=row]{width:35%}caption{text-align:left;font-weight:700;font-size:1.1rem;padding:.4rem 0}td{white-space:pre-wrap;overflow-wrap:anywhere}
.note{border-left:6px solid #1d4f91;padding:.5rem 1rem;background:#f3f2f1}@media print{body{margin:0;max-width:none}}</style></head>
<body><main>
<p>Confidential: safeguarding information, delivered through refex.</p>
<h1>{{ about }}: {{ sender_ref }}</h1>
<table><caption>Delivery</caption><tbody>
<tr><th scope="row">From</th><td>{{ from }}</td></tr>
<tr><th scope="row">Their reference</th><td>{{ sender_ref }}</td></tr>
<tr><th scope="row">Referral</th><td>{{ referral_id }}{% if let Some(s) = supersedes %} (corrects {{ s }}: replace what you recorded from it){% endif %}</td></tr>
<tr><th scope="row">Delivery</th><td>{{ delivery_id }}</td></tr>
<tr><th scope="row">Consent</th><td>{{ consent }}</td></tr>
<tr><th scope="row">Has the person been told?</th><td>{{ informed }}</td></tr>
{% for b in basis %}<tr><th scope="row">{{ b.0 }}</th><td>{{ b.1 }}</td></tr>{% endfor %}
</tbody></table>
{% for s in sections %}<table><caption>{{ s.title }}</caption><tbody>
{% for r in s.rows %}<tr><th scope="row">{{ r.label }}</th><td>{{ r.value }}</td></tr>{% endfor %}
</tbody></table>{% endfor %}
<h2>Not shared with your organisation</h2>
{% if let Some(w) = withheld %}{% if w.is_empty() %}<p>Your organisation's agreement shares every field of this referral type.</p>{% else %}
<p class="note">Under its information sharing agreement, your organisation does not receive these parts of this referral type (whether or not the sender filled them in):</p>
<ul>{% for x in w %}<li>{{ x }}</li>{% endfor %}</ul>{% endif %}
{% else %}<p>Not known here: give <code>--kind</code> (your organisation's kind) to list what your view leaves out.</p>{% endif %}
</main></body></html>
"#
)]
struct Page {
    about: String,
    from: String,
    sender_ref: String,
    referral_id: String,
    supersedes: Option<String>,
    delivery_id: String,
    consent: String,
    informed: String,
    basis: Vec<(&'static str, String)>,
    sections: Vec<Section>,
    withheld: Option<Vec<String>>,
}

/// The consent, "told" and lawful basis lines of a delivery, in words.
pub fn terms(delivery: &Value) -> (String, String, Vec<(&'static str, String)>) {
    let sentence = |v: String| {
        let mut c = v.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    let consent = &delivery["consent"];
    let consent_words = match (consent["status"].as_str(), consent["override"].as_str()) {
        (Some(s), Some(o)) => format!(
            "{} (override relied on: {})",
            code_words(s),
            code_words(o).to_lowercase()
        ),
        (Some(s), None) => code_words(s),
        _ => "Not stated".into(),
    };
    let informed = &delivery["subject_informed"];
    let informed_words = match (informed["status"].as_str(), informed["reason"].as_str()) {
        (Some(s), Some(r)) => format!("{}: {}", code_words(s), code_words(r).to_lowercase()),
        (Some(s), None) => code_words(s),
        _ => "Not stated".into(),
    };
    let basis =
        serde_json::from_value::<crate::lawful::LawfulBasis>(delivery["lawful_basis"].clone())
            .map(|b| {
                b.describe()
                    .into_iter()
                    .map(|(k, v)| (k, sentence(v)))
                    .collect()
            })
            .unwrap_or_default();
    (consent_words, informed_words, basis)
}

/// What a delivery (its `delivery` member) says, in sections with labels: against the view of
/// `kind` where known (its labels), else the type's; and what that view leaves out (`None`
/// when the kind is not known).
pub fn sections(
    schemas: &SchemaSet,
    kind: Option<&PartnerKind>,
    delivery: &Value,
) -> (String, Vec<Section>, Option<Vec<String>>) {
    let ty: Option<ReferralType> = delivery["type"].as_str().and_then(|t| t.parse().ok());
    let type_schema = ty.as_ref().and_then(|t| schemas.referral_type(t));
    let view = match (kind, &ty) {
        (Some(k), Some(t)) => schemas.view(k, t),
        _ => None,
    };
    let about = type_schema
        .and_then(|s| s.source.get("title").and_then(Value::as_str))
        .map(str::to_owned)
        .or_else(|| ty.as_ref().map(|t| code_words(t.as_str())))
        .unwrap_or_else(|| "Referral".into());
    let payload = &delivery["payload"];
    let sections = match view.or(type_schema) {
        Some(schema) => document(schema, payload).sections,
        None => vec![],
    };
    let withheld = match (type_schema, view) {
        (Some(t), Some(v)) => Some(not_in_view(t, v)),
        _ => None,
    };
    (about, sections, withheld)
}

/// The whole page for delivery claims `claims` (`jti` and `delivery`); `names` gives a
/// partner's name from its id where known.
pub fn delivery_page(
    schemas: &SchemaSet,
    kind: Option<&PartnerKind>,
    names: &dyn Fn(&str) -> Option<String>,
    claims: &Value,
) -> String {
    let d = &claims["delivery"];
    let (about, sections, withheld) = self::sections(schemas, kind, d);
    let (consent, informed, basis) = terms(d);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let page = Page {
        about,
        from: names(&text(&d["from"])).unwrap_or_else(|| text(&d["from"])),
        sender_ref: text(&d["sender_ref"]),
        referral_id: text(&d["referral_id"]),
        supersedes: d["supersedes"].as_str().map(str::to_owned),
        delivery_id: text(&claims["jti"]),
        consent,
        informed,
        basis,
        sections,
        withheld,
    };
    page.render().unwrap_or_else(|_| {
        "<!doctype html><html lang=\"en\"><title>refex delivery</title><p>This delivery could not be rendered; see the JSON file beside it.</p></html>".into()
    })
}
