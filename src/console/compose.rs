//! Composing a referral in the console, for people of a hosted organisation: a form
//! generated from the referral type's schema (`schema::form`), the recipients and lawful
//! bases the organisation's agreements allow for the type, consent and any override with its
//! justification, whether the person was told. The claims are signed with the
//! organisation's key and go through exactly the intake of `POST /v1/referrals`
//! (`hosted::submit`): the same validation, agreement check, hold for the lead on an
//! override, and audit, with the person recorded as the submitter. What intake refuses is
//! shown beside the field that caused it, with a linked summary.
//!
//! Each form carries its own id, made when the form is first shown; the `jti` sent is that id
//! bound to the answers (`form id.digest of the referral`). Sending the same form with the
//! same answers twice (a double click, a retry after a lost answer) is answered with the
//! first acceptance, never a second referral; sending it again with answers changed is a
//! referral of its own (never the first one shown as if it carried the change), and the sent
//! page lists both.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    ErrorLink, Posted, csrf_token, form_is_genuine, form_refusal, full_page, page, partner_name,
    problem_page_in, render, see_other, type_title,
};
use crate::api::principal::{Caller, PathId};
use crate::api::problem::ApiError;
use crate::config::Config;
use crate::hosted;
use crate::identity::{PartnerId, Principal, ReferralType};
use crate::ids::{BadId, Jti};
use crate::intake::{ConsentStatus, IntakeError, Override};
use crate::lawful::{self, LawfulBasis};
use crate::runtime::Runtime;
use crate::schema::document::code_words;
use crate::schema::form::{self, Input, Item, Kind};
use crate::submit::SubmitError;

/// One option of a choice.
struct Opt {
    value: String,
    label: String,
    checked: bool,
}

/// One thing the form shows, flattened for the template.
struct FormRow {
    /// open, close, add, text, textarea, date, number, select, radios, checkboxes.
    kind: &'static str,
    label: String,
    help: Option<String>,
    name: String,
    id: String,
    value: String,
    required: bool,
    error: Option<String>,
    max: String,
    options: Vec<Opt>,
}

impl FormRow {
    fn new(kind: &'static str, label: impl Into<String>) -> Self {
        FormRow {
            kind,
            label: label.into(),
            help: None,
            name: String::new(),
            id: String::new(),
            value: String::new(),
            required: false,
            error: None,
            max: String::new(),
            options: vec![],
        }
    }

    /// Where an error summary links: the input, or a choice group's first option.
    fn anchor(&self) -> String {
        match self.kind {
            "radios" | "checkboxes" => format!("#{}-0", self.id),
            _ => format!("#{}", self.id),
        }
    }
}

fn input_row(input: Input) -> FormRow {
    let options = |o: &[(String, String)], chosen: &dyn Fn(&str) -> bool| {
        o.iter()
            .map(|(v, l)| Opt {
                value: v.clone(),
                label: l.clone(),
                checked: chosen(v),
            })
            .collect::<Vec<_>>()
    };
    let value = input.value.clone();
    let (kind, opts) = match &input.kind {
        Kind::Text => ("text", vec![]),
        Kind::TextArea | Kind::Lines => ("textarea", vec![]),
        Kind::Date => ("date", vec![]),
        Kind::Number => ("number", vec![]),
        Kind::YesNo => (
            "radios",
            options(
                &[("true".into(), "Yes".into()), ("false".into(), "No".into())],
                &|v| v == value,
            ),
        ),
        Kind::Choice(o) if o.len() <= 5 => ("radios", options(o, &|v| v == value)),
        Kind::Choice(o) => ("select", options(o, &|v| v == value)),
        Kind::Several(o) => (
            "checkboxes",
            options(o, &|v| input.chosen.iter().any(|c| c == v)),
        ),
    };
    FormRow {
        kind,
        label: input.label,
        help: input.help,
        name: input.name,
        id: input.id,
        value: input.value,
        required: input.required,
        error: input.error,
        max: input.max_length.map(|m| m.to_string()).unwrap_or_default(),
        options: opts,
    }
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<h1>New referral</h1>
<p>Choose what sort of referral to make. Only the types your organisation's information sharing agreements cover are listed.</p>
{% if types.is_empty() %}<p>Your organisation has no agreement to send referrals.</p>{% else %}
<ul>{% for t in types %}<li><a href="/console/compose/{{ t.0 }}">{{ t.1 }}</a>{% if !t.2.is_empty() %}: {{ t.2 }}{% endif %}</li>{% endfor %}</ul>{% endif %}"##
)]
struct ChooseBody {
    types: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<p class="caption">New referral</p>
<h1>{{ title }}</h1>
{% if let Some(d) = description %}<p>{{ d }}</p>{% endif %}
{% if !errors.is_empty() %}<div class="error-summary" role="alert" aria-labelledby="error-summary-title" tabindex="-1">
<h2 id="error-summary-title">There is a problem</h2><ul>{% for e in errors %}<li><a href="{{ e.href }}">{{ e.text }}</a></li>{% endfor %}</ul></div>{% endif %}
<p>Fields marked (required) must be filled in. The referral goes only to the recipients you choose, each receiving only what its agreement allows.</p>
<form method="post" action="/console/compose/{{ ty }}" novalidate>
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="jti" value="{{ jti }}">
{% for r in rows %}
{% if r.kind == "open" %}<fieldset><legend>{{ r.label }}</legend>{% if let Some(h) = r.help %}<p class="hint">{{ h }}</p>{% endif %}
{% else if r.kind == "close" %}</fieldset>
{% else if r.kind == "add" %}<p><button type="submit" class="secondary" name="add" value="{{ r.name }}">{{ r.label }}</button></p>
{% else if r.kind == "radios" || r.kind == "checkboxes" %}<div class="field{% if r.error.is_some() %} invalid{% endif %}"><fieldset class="inline"{% if r.help.is_some() || r.error.is_some() %} aria-describedby="{% if r.help.is_some() %}{{ r.id }}-hint {% endif %}{% if r.error.is_some() %}{{ r.id }}-error{% endif %}"{% endif %}>
<legend>{{ r.label }}{% if r.required %} <span class="req">(required)</span>{% endif %}</legend>
{% if let Some(h) = r.help %}<p class="hint" id="{{ r.id }}-hint">{{ h }}</p>{% endif %}
{% if let Some(e) = r.error %}<p class="field-error" id="{{ r.id }}-error"><span class="visually-hidden">Error:</span> {{ e }}</p>{% endif %}
{% for o in r.options %}<div class="choice"><input type="{% if r.kind == "radios" %}radio{% else %}checkbox{% endif %}" id="{{ r.id }}-{{ loop.index0 }}" name="{{ r.name }}" value="{{ o.value }}"{% if o.checked %} checked{% endif %}> <label for="{{ r.id }}-{{ loop.index0 }}">{{ o.label }}</label></div>{% endfor %}
</fieldset></div>
{% else %}<div class="field{% if r.error.is_some() %} invalid{% endif %}">
<label for="{{ r.id }}">{{ r.label }}{% if r.required %} <span class="req">(required)</span>{% endif %}</label>
{% if let Some(h) = r.help %}<p class="hint" id="{{ r.id }}-hint">{{ h }}</p>{% endif %}
{% if let Some(e) = r.error %}<p class="field-error" id="{{ r.id }}-error"><span class="visually-hidden">Error:</span> {{ e }}</p>{% endif %}
{% if r.kind == "textarea" %}<textarea id="{{ r.id }}" name="{{ r.name }}"{% if !r.max.is_empty() %} maxlength="{{ r.max }}"{% endif %}{% if r.help.is_some() || r.error.is_some() %} aria-describedby="{% if r.help.is_some() %}{{ r.id }}-hint {% endif %}{% if r.error.is_some() %}{{ r.id }}-error{% endif %}"{% endif %}{% if r.error.is_some() %} aria-invalid="true"{% endif %}>{{ r.value }}</textarea>
{% else if r.kind == "select" %}<select id="{{ r.id }}" name="{{ r.name }}"{% if r.help.is_some() || r.error.is_some() %} aria-describedby="{% if r.help.is_some() %}{{ r.id }}-hint {% endif %}{% if r.error.is_some() %}{{ r.id }}-error{% endif %}"{% endif %}{% if r.error.is_some() %} aria-invalid="true"{% endif %}><option value="">Choose…</option>{% for o in r.options %}<option value="{{ o.value }}"{% if o.checked %} selected{% endif %}>{{ o.label }}</option>{% endfor %}</select>
{% else %}<input type="{% if r.kind == "date" %}date{% else if r.kind == "number" %}number{% else %}text{% endif %}" id="{{ r.id }}" name="{{ r.name }}" value="{{ r.value }}"{% if !r.max.is_empty() %} maxlength="{{ r.max }}"{% endif %}{% if r.help.is_some() || r.error.is_some() %} aria-describedby="{% if r.help.is_some() %}{{ r.id }}-hint {% endif %}{% if r.error.is_some() %}{{ r.id }}-error{% endif %}"{% endif %}{% if r.error.is_some() %} aria-invalid="true"{% endif %}>{% endif %}
</div>{% endif %}
{% endfor %}
<p><button type="submit" name="send" value="1">Send referral</button></p>
</form>"##
)]
struct ComposeBody {
    ty: String,
    title: String,
    description: Option<String>,
    errors: Vec<ErrorLink>,
    rows: Vec<FormRow>,
    csrf: String,
    jti: String,
}

/// The referral types `sender`'s agreements cover.
fn sendable(config: &Config, sender: &PartnerId) -> Vec<ReferralType> {
    let mut types: Vec<ReferralType> = config
        .policy
        .agreements
        .iter()
        .filter(|a| &a.sender == sender)
        .flat_map(|a| a.types.iter().cloned())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// `GET /console/compose`: choose a referral type.
pub async fn choose(State(rt): State<Arc<Runtime>>, Caller(caller): Caller) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let types = sendable(config, &caller.partner)
        .into_iter()
        .map(|t| {
            let about = config
                .policy
                .schemas
                .referral_type(&t)
                .and_then(|s| s.source.get("description").and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned();
            (t.to_string(), type_title(config, &t), about)
        })
        .collect();
    let body = render(&ChooseBody { types });
    let html = full_page(
        Some(config),
        Some(&caller),
        "/console/compose",
        "New referral",
        &body,
        false,
    );
    page(StatusCode::OK, html, None)
}

/// What the person has entered so far (the claims part), to show again.
#[derive(Default)]
struct Entered {
    sender_ref: String,
    to: Vec<String>,
    basis: String,
    consent: String,
    override_: String,
    justification: String,
    informed: String,
    informed_reason: String,
    jti: String,
}

impl Entered {
    fn read(fields: &[(String, String)]) -> Self {
        let mut e = Entered::default();
        for (k, v) in fields {
            let v = v.trim().to_owned();
            match k.as_str() {
                "sender_ref" => e.sender_ref = v,
                "to" => e.to.push(v),
                "basis" => e.basis = v,
                "consent" => e.consent = v,
                "override" => e.override_ = v,
                "justification" => e.justification = v,
                "informed" => e.informed = v,
                "informed_reason" => e.informed_reason = v,
                "jti" => e.jti = v,
                _ => {}
            }
        }
        e
    }
}

/// The lawful bases the sender's agreements for `ty` accept, each once, with the
/// recipients that accept it, lawful for the type as written.
fn bases(
    config: &Config,
    sender: &PartnerId,
    ty: &ReferralType,
) -> Vec<(LawfulBasis, Vec<String>)> {
    let offence = config
        .policy
        .schemas
        .referral_type(ty)
        .is_some_and(|s| s.criminal_offence_data());
    let mut out: Vec<(LawfulBasis, Vec<String>)> = Vec::new();
    for a in config
        .policy
        .agreements
        .iter()
        .filter(|a| &a.sender == sender && a.types.contains(ty))
    {
        for b in a.basis.iter().flat_map(|b| b.combinations()) {
            if lawful::check(&b, offence).is_err() {
                continue;
            }
            let name = partner_name(config, &a.recipient);
            match out.iter_mut().find(|(x, _)| *x == b) {
                Some((_, who)) if !who.contains(&name) => who.push(name),
                Some(_) => {}
                None => out.push((b, vec![name])),
            }
        }
    }
    out
}

fn basis_words(b: &LawfulBasis) -> String {
    b.describe()
        .into_iter()
        .filter(|(k, _)| *k != "Regime")
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The claims part of the form, as rows, with `errors` by field name.
fn claims_rows(
    config: &Config,
    sender: &PartnerId,
    ty: &ReferralType,
    e: &Entered,
    errors: &BTreeMap<String, String>,
) -> Vec<FormRow> {
    let err = |name: &str| errors.get(name).cloned();
    let mut rows = vec![FormRow {
        help: Some("Who is sending this and how the law allows it.".into()),
        ..FormRow::new("open", "About this referral")
    }];
    rows.push(FormRow {
        name: "sender_ref".into(),
        id: "sender_ref".into(),
        value: e.sender_ref.clone(),
        required: true,
        error: err("sender_ref"),
        max: "100".into(),
        help: Some(
            "Your organisation's own reference for this case, so you can recognise it later."
                .into(),
        ),
        ..FormRow::new("text", "Your reference")
    });
    let mut recipients: Vec<PartnerId> = config
        .policy
        .agreements
        .iter()
        .filter(|a| &a.sender == sender && a.types.contains(ty))
        .map(|a| a.recipient.clone())
        .collect();
    recipients.sort();
    recipients.dedup();
    rows.push(FormRow {
        name: "to".into(),
        id: "to".into(),
        required: true,
        error: err("to"),
        help: Some("Only organisations your agreements cover for this type are listed.".into()),
        options: recipients
            .iter()
            .map(|r| Opt {
                value: r.to_string(),
                label: partner_name(config, r),
                checked: e.to.iter().any(|t| t == r.as_str()),
            })
            .collect(),
        ..FormRow::new("checkboxes", "Send to")
    });
    rows.push(FormRow {
        name: "basis".into(),
        id: "basis".into(),
        required: true,
        error: err("basis"),
        help: Some("The lawful basis your organisation relies on; each is one your agreements accept (the recipients that accept it are named).".into()),
        options: bases(config, sender, ty)
            .into_iter()
            .filter_map(|(b, who)| {
                let value = serde_json::to_string(&b).ok()?;
                Some(Opt {
                    checked: value == e.basis,
                    label: format!("{} (accepted by {})", basis_words(&b), who.join(", ")),
                    value,
                })
            })
            .collect(),
        ..FormRow::new("radios", "Lawful basis")
    });
    let codes = |all: &[&'static str], chosen: &str| {
        all.iter()
            .map(|c| Opt {
                value: (*c).to_owned(),
                label: code_words(c),
                checked: *c == chosen,
            })
            .collect::<Vec<_>>()
    };
    rows.push(FormRow {
        name: "consent".into(),
        id: "consent".into(),
        required: true,
        error: err("consent"),
        options: codes(&ConsentStatus::ALL.map(ConsentStatus::as_str), &e.consent),
        ..FormRow::new("radios", "Has the person consented to this referral?")
    });
    rows.push(FormRow {
        name: "override".into(),
        id: "override".into(),
        error: err("override"),
        help: Some("Only when consent was not given: the reason sharing is justified without it. A designated safeguarding lead of your organisation reviews it before anything is sent.".into()),
        options: codes(&Override::ALL.map(Override::as_str), &e.override_),
        ..FormRow::new("select", "Reason for sharing without consent")
    });
    rows.push(FormRow {
        name: "justification".into(),
        id: "justification".into(),
        value: e.justification.clone(),
        error: err("justification"),
        max: "4000".into(),
        help: Some("Why sharing without consent is necessary and proportionate. Your lead reads this; recipients do not.".into()),
        ..FormRow::new("textarea", "Justification for the override")
    });
    rows.push(FormRow {
        name: "informed".into(),
        id: "informed".into(),
        required: true,
        error: err("informed"),
        options: codes(&["yes", "no", "not-yet"], &e.informed),
        ..FormRow::new("radios", "Has the person been told about this referral?")
    });
    rows.push(FormRow {
        name: "informed_reason".into(),
        id: "informed_reason".into(),
        error: err("informed_reason"),
        help: Some("Only when they have not been told.".into()),
        options: codes(
            &[
                "would-increase-risk",
                "would-prejudice-investigation",
                "unable-to-contact",
            ],
            &e.informed_reason,
        ),
        ..FormRow::new("select", "Why they have not been told")
    });
    rows.push(FormRow::new("close", ""));
    rows
}

/// Everything the compose page needs to be drawn.
struct Draft<'a> {
    ty: &'a ReferralType,
    entered: Entered,
    payload: Value,
    extra: BTreeMap<String, usize>,
    /// Errors by field name (`sender_ref`, … or `f/…` for the payload).
    errors: BTreeMap<String, String>,
    /// Errors with no field of their own.
    general: Vec<String>,
}

fn compose_page(
    rt: &Runtime,
    caller: &Principal,
    headers: &HeaderMap,
    draft: Draft<'_>,
    status: StatusCode,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let Some(schema) = config.policy.schemas.referral_type(draft.ty) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(caller));
    };
    let payload_errors: BTreeMap<String, String> = draft
        .errors
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(form::FIELD_PREFIX)
                .map(|p| (p.to_owned(), v.clone()))
        })
        .collect();
    let mut rows = claims_rows(
        config,
        &caller.partner,
        draft.ty,
        &draft.entered,
        &draft.errors,
    );
    for item in form::form(schema, &draft.payload, &draft.extra, &payload_errors) {
        rows.push(match item {
            Item::Open { legend, help, .. } => FormRow {
                help,
                ..FormRow::new("open", legend)
            },
            Item::Close => FormRow::new("close", ""),
            Item::Add { pointer, label } => FormRow {
                name: pointer,
                ..FormRow::new("add", label)
            },
            Item::Input(input) => input_row(input),
        });
    }
    let mut errors: Vec<ErrorLink> = draft
        .general
        .iter()
        .map(|g| ErrorLink {
            href: "#sender_ref".into(),
            text: g.clone(),
        })
        .collect();
    for r in &rows {
        if let Some(e) = &r.error {
            errors.push(ErrorLink {
                href: r.anchor(),
                text: format!("{}: {e}", r.label),
            });
        }
    }
    let (csrf, cookie) = csrf_token(rt, caller, headers);
    let jti = if draft.entered.jti.is_empty() {
        format!("console-{}", uuid::Uuid::now_v7())
    } else {
        draft.entered.jti.clone()
    };
    let title = type_title(config, draft.ty);
    let has_errors = !errors.is_empty();
    let body = render(&ComposeBody {
        ty: draft.ty.to_string(),
        title: title.clone(),
        description: schema
            .source
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        errors,
        rows,
        csrf,
        jti,
    });
    let html = full_page(
        Some(config),
        Some(caller),
        "/console/compose",
        &format!("New referral: {title}"),
        &body,
        has_errors,
    );
    page(status, html, cookie)
}

fn sendable_type(config: &Config, caller: &Principal, ty: &str) -> Option<ReferralType> {
    let ty: ReferralType = ty.parse().ok()?;
    sendable(config, &caller.partner)
        .contains(&ty)
        .then_some(ty)
}

/// `GET /console/compose/{type}`: the empty form.
pub async fn form_page(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(ty): PathId,
    headers: HeaderMap,
) -> Response {
    let snapshot = rt.snapshot();
    let Some(ty) = sendable_type(&snapshot.config, &caller, &ty) else {
        return problem_page_in(Some(&snapshot.config), &ApiError::NotFound, Some(&caller));
    };
    let draft = Draft {
        ty: &ty,
        entered: Entered::default(),
        payload: json!({}),
        extra: BTreeMap::new(),
        errors: BTreeMap::new(),
        general: vec![],
    };
    compose_page(&rt, &caller, &headers, draft, StatusCode::OK)
}

/// The claims the form describes.
fn claims(
    config: &Config,
    caller: &Principal,
    ty: &ReferralType,
    e: &Entered,
    payload: &Value,
    now: u64,
) -> Result<Value, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let basis: Option<Value> = match serde_json::from_str::<LawfulBasis>(&e.basis) {
        Ok(b) => serde_json::to_value(b).ok(),
        Err(_) => {
            errors.insert(
                "basis".into(),
                "Choose the lawful basis your organisation relies on".into(),
            );
            None
        }
    };
    if e.to.is_empty() {
        errors.insert(
            "to".into(),
            "Choose at least one organisation to send the referral to".into(),
        );
    }
    if e.consent.is_empty() {
        errors.insert(
            "consent".into(),
            "Say whether the person has consented".into(),
        );
    }
    if e.informed.is_empty() {
        errors.insert(
            "informed".into(),
            "Say whether the person has been told".into(),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut consent = json!({ "status": e.consent });
    if !e.override_.is_empty() {
        consent["override"] = json!(e.override_);
    }
    if !e.justification.is_empty() {
        consent["justification"] = json!(e.justification);
    }
    let mut informed = json!({ "status": e.informed });
    if !e.informed_reason.is_empty() {
        informed["reason"] = json!(e.informed_reason);
    }
    Ok(json!({
        "iss": caller.partner, "aud": config.settings.gateway_id, "jti": e.jti, "iat": now,
        "referral": {
            "type": ty, "to": e.to, "sender_ref": e.sender_ref, "lawful_basis": basis,
            "consent": consent, "subject_informed": informed, "payload": payload,
        }
    }))
}

/// The form field a claims violation belongs to.
fn claims_field(pointer: &str) -> Option<String> {
    // Claims violations are under `/referral`, the payload's under `/payload`.
    let rest = pointer.strip_prefix("/referral").unwrap_or(pointer);
    if let Some(p) = rest.strip_prefix("/payload") {
        return Some(format!("{}{p}", form::FIELD_PREFIX));
    }
    let field = match rest.split('/').nth(1)? {
        "sender_ref" => "sender_ref",
        "to" => "to",
        "lawful_basis" => "basis",
        "consent" if rest.starts_with("/consent/override") => "override",
        "consent" if rest.starts_with("/consent/justification") => "justification",
        "consent" => "consent",
        "subject_informed" if rest.starts_with("/subject_informed/reason") => "informed_reason",
        "subject_informed" => "informed",
        _ => return None,
    };
    Some(field.to_owned())
}

/// Where intake's refusal belongs on the form, in words that say what to change.
fn place_refusal(
    e: &ApiError,
    errors: &mut BTreeMap<String, String>,
    general: &mut Vec<String>,
    items: &[Item],
) {
    let intake = match e {
        ApiError::Submit(SubmitError::Intake(i)) => i,
        other => {
            general.push(sentence(&other.problem().detail));
            return;
        }
    };
    let mut put = |field: &str, message: String| {
        errors.entry(field.to_owned()).or_insert(message);
    };
    match intake {
        IntakeError::Invalid(violations) => {
            for v in violations {
                let field =
                    claims_field(&v.pointer).map(|f| match f.strip_prefix(form::FIELD_PREFIX) {
                        // A payload pointer with no input of its own (a missing group) goes to
                        // the nearest input inside it.
                        Some(p) => form::input_for(p, items)
                            .map_or(f.clone(), |i| format!("{}{i}", form::FIELD_PREFIX)),
                        None => f,
                    });
                match field {
                    Some(f) => put(&f, sentence(&v.message)),
                    None => general.push(format!("{}: {}", v.pointer, v.message)),
                }
            }
        }
        IntakeError::NoAgreement { .. }
        | IntakeError::UnknownRecipient(_)
        | IntakeError::NoRoute
        | IntakeError::ProfessionalOnly(_) => put("to", sentence(&intake.to_string())),
        IntakeError::LawfulBasis { .. } => put("basis", sentence(&intake.to_string())),
        IntakeError::ConsentRequired(_) => put("consent", sentence(&intake.to_string())),
        other => general.push(sentence(&other.to_string())),
    }
}

fn sentence(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `POST /console/compose/{type}`: one more entry of a group (`add`), or send.
pub async fn send(
    State(rt): State<Arc<Runtime>>,
    Caller(caller): Caller,
    PathId(ty): PathId,
    uri: Uri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    let snapshot = rt.snapshot();
    let config = &snapshot.config;
    let Some(ty) = sendable_type(config, &caller, &ty) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    let fields = match form {
        Ok(axum::Form(fields)) => fields,
        Err(e) => {
            return problem_page_in(Some(config), &form_refusal(config, &e), Some(&caller));
        }
    };
    if let Err(refused) = form_is_genuine(&rt, &caller, &uri, &headers, &fields) {
        return *refused;
    }
    let Some(schema) = config.policy.schemas.referral_type(&ty) else {
        return problem_page_in(Some(config), &ApiError::NotFound, Some(&caller));
    };
    let entered = Entered::read(&fields);
    let mut draft = Draft {
        ty: &ty,
        entered,
        payload: json!({}),
        extra: BTreeMap::new(),
        errors: BTreeMap::new(),
        general: vec![],
    };
    match form::read(schema, &fields) {
        Ok(p) => draft.payload = p,
        Err(e) => {
            draft.general.push(sentence(&e.to_string()));
            return compose_page(
                &rt,
                &caller,
                &headers,
                draft,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    }
    if let Some((_, group)) = fields.iter().find(|(k, _)| k == "add") {
        // One more entry of a group: the same form again, nothing sent.
        draft.extra.insert(group.clone(), 1);
        return compose_page(&rt, &caller, &headers, draft, StatusCode::OK);
    }
    let form_id = Jti::parse(&draft.entered.jti)
        .ok()
        .filter(|_| draft.entered.jti.len() <= FORM_ID_MAX);
    let Some(form_id) = form_id else {
        return form_expired(&rt, &caller, &headers, draft);
    };
    let now = rt.clock.unix_seconds();
    let mut claims = match claims(config, &caller, &ty, &draft.entered, &draft.payload, now) {
        Ok(c) => c,
        Err(errors) => {
            draft.errors = errors;
            return compose_page(
                &rt,
                &caller,
                &headers,
                draft,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    // This form with these answers was sent before (a double click, a retry after a lost
    // answer, a reload that posts again): the acceptance under its jti is this one.
    let Ok(jti) = bound_jti(&form_id, &claims["referral"]) else {
        return form_expired(&rt, &caller, &headers, draft);
    };
    claims["jti"] = serde_json::Value::String(jti.to_string());
    match rt.store.prior_acceptance(&caller.partner, &jti).await {
        Ok(Some(prior)) => {
            return see_other(&format!(
                "/console/sent?sent={}#just-sent",
                prior.referral_id
            ));
        }
        Ok(None) => {}
        Err(e) => return problem_page_in(Some(config), &ApiError::from(e), Some(&caller)),
    }
    match hosted::submit(&rt, &caller, &claims).await {
        Ok(done) => see_other(&format!("/console/sent?sent={}#just-sent", done.id)),
        Err(e) => {
            let api = ApiError::from(e);
            let status = api.problem().status;
            // What intake refused is shown on the form, the answers kept; anything else (the
            // store, the organisation's keys) is a problem page.
            if !matches!(api, ApiError::Submit(SubmitError::Intake(_))) {
                return problem_page_in(Some(config), &api, Some(&caller));
            }
            let items = form::form(schema, &draft.payload, &BTreeMap::new(), &BTreeMap::new());
            place_refusal(&api, &mut draft.errors, &mut draft.general, &items);
            compose_page(&rt, &caller, &headers, draft, status)
        }
    }
}

/// The longest form id accepted: with the answers' digest it stays within the contract's
/// 128-character `jti`.
const FORM_ID_MAX: usize = 100;

/// The `jti` of a form's referral: the form's id and a digest of the referral's answers,
/// members in sorted order (the form's fields may come in any order; equal answers give
/// equal digests).
fn bound_jti(form_id: &Jti, referral: &serde_json::Value) -> Result<Jti, BadId> {
    use sha2::{Digest as _, Sha256};
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    let digest = hex::encode(Sha256::digest(sorted(referral).to_string().as_bytes()));
    Jti::parse(&format!("{form_id}.{}", &digest[..16]))
}

/// A form whose id is missing or not one this page made: its answers are kept and it is
/// shown again with a new id, to be sent again.
fn form_expired(
    rt: &Runtime,
    caller: &Principal,
    headers: &HeaderMap,
    mut draft: Draft<'_>,
) -> Response {
    draft.entered.jti.clear();
    draft
        .general
        .push("This form has expired; check the answers below and send again".into());
    compose_page(rt, caller, headers, draft, StatusCode::UNPROCESSABLE_ENTITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_id_is_bound_to_its_answers() {
        let a = serde_json::json!({ "sender_ref": "A", "payload": { "x": 1 } });
        let b = serde_json::json!({ "sender_ref": "B", "payload": { "x": 1 } });
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{ "payload": { "x": 1 }, "sender_ref": "A" }"#).unwrap();
        let form: Jti = "form-1234".parse().unwrap();
        assert_eq!(bound_jti(&form, &a), bound_jti(&form, &reordered));
        assert_eq!(bound_jti(&form, &a), bound_jti(&form, &a.clone()));
        assert_ne!(bound_jti(&form, &a), bound_jti(&form, &b));
        let longest: Jti = "f".repeat(FORM_ID_MAX).parse().unwrap();
        assert!(
            bound_jti(&longest, &a).is_ok(),
            "within the 128 characters of a jti"
        );
    }

    #[test]
    fn claims_violations_name_their_form_fields() {
        for (pointer, field) in [
            ("/referral/payload/child/name", "f/child/name"),
            ("/referral/sender_ref", "sender_ref"),
            ("/referral/consent/justification", "justification"),
            ("/referral/consent/status", "consent"),
            ("/referral/subject_informed/reason", "informed_reason"),
            ("/payload/child/name", "f/child/name"),
        ] {
            assert_eq!(claims_field(pointer).as_deref(), Some(field), "{pointer}");
        }
        assert_eq!(claims_field("/jti"), None);
    }
}
