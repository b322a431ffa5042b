//! Hosted partners over real mutual TLS with personal certificates, on SQLite and on
//! PostgreSQL: an Imara practitioner composes a safeguarding concern in the console (a field
//! error shown beside its field, fixed, sent through intake with the hosted key), the police
//! system receives exactly what was typed; a police referral to Imara is read in Imara's
//! console as a document (audited per person) and acknowledged; people of organisations that
//! hold their own keys, and people without the practitioner role, get neither page; the
//! disclosure record says the gateway holds Imara's keys.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::partner::{Harness, claims};
use refex::envelope::referral::partner;
use serde_json::Value;

fn unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first input named `name` whose following label contains `label_has`.
fn option_value(html: &str, name: &str, label_has: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let mut rest = html;
    while let Some(at) = rest.find(&marker) {
        let tail = &rest[at + marker.len()..];
        let value = tail.split('"').next().unwrap();
        let label = tail
            .split("<label")
            .nth(1)
            .and_then(|l| l.split("</label>").next())
            .unwrap_or_default();
        if label.contains(label_has) {
            return unescape(value);
        }
        rest = tail;
    }
    panic!("no {name} option labelled {label_has:?}");
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).unwrap() + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

struct Browser<'a> {
    h: &'a Harness,
    client: reqwest::Client,
    cookie: Option<String>,
    origin: String,
}

impl<'a> Browser<'a> {
    fn new(h: &'a Harness, partner: &str, person: &str) -> Self {
        Self {
            h,
            client: h.gw.person(partner, person),
            cookie: None,
            origin: format!("https://localhost:{}", h.gw.running().api_addr.port()),
        }
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let mut req = self.client.get(self.h.gw.url(path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        if let Some(c) = res.headers().get("set-cookie") {
            self.cookie = Some(c.to_str().unwrap().split(';').next().unwrap().to_owned());
        }
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Posts a form; returns the status and the page (a 303 is followed by the client).
    async fn post(&mut self, path: &str, form: &[(&str, String)]) -> (u16, String, String) {
        let res = self
            .client
            .post(self.h.gw.url(path))
            .header("cookie", self.cookie.clone().unwrap_or_default())
            .header("origin", &self.origin)
            .form(form)
            .send()
            .await
            .unwrap();
        let url = res.url().to_string();
        (res.status().as_u16(), res.text().await.unwrap(), url)
    }
}

/// A page carrying a CSRF token for this browser (the compose form).
async fn list_csrf(b: &mut Browser<'_>) -> String {
    b.get("/console/compose/safeguarding-concern").await.1
}

async fn a_hosted_partner_works_in_the_console(store_url: Option<String>) {
    let h = Harness::start(store_url).await;
    let mut imara = Browser::new(&h, "imara", "practitioner-1");

    // Compose: the types Imara's agreements cover, then the form from the schema.
    let (status, html) = imara.get("/console/compose").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("href=\"/console/compose/safeguarding-concern\""),
        "{html}"
    );
    let (status, form) = imara.get("/console/compose/safeguarding-concern").await;
    assert_eq!(status, 200, "{form}");
    assert!(
        form.contains("Subject of the concern")
            && form.contains("<label for=\"field-subject-name-given\">Given name <span class=\"req\">(required)</span></label>")
            && form.contains("Add another: person at risk"),
        "{form}"
    );
    assert!(!form.contains("<script"), "no JavaScript");
    let basis = option_value(&form, "basis", "Nottinghamshire Police");
    let answers = |family: &str| -> Vec<(&str, String)> {
        let mut f = vec![
            ("csrf", hidden(&form, "csrf")),
            ("jti", hidden(&form, "jti")),
            ("sender_ref", "IM/2026/0042".into()),
            ("to", "notts-police".into()),
            ("basis", basis.clone()),
            ("consent", "given".into()),
            ("informed", "yes".into()),
            ("f/subject/name/given", "Noah".into()),
            ("f/subject/date_of_birth", "2019-02-02".into()),
            ("f/subject/is_child", "true".into()),
            ("f/concern/category", "neglect".into()),
            ("f/concern/summary", "Arrives at sessions hungry.".into()),
            ("f/immediate_risk", "false".into()),
            ("f/others_at_risk/0/relationship", String::new()),
            ("f/referrer/name", "Sam Worker".into()),
            ("f/referrer/role", "CHISVA".into()),
            ("f/referrer/organisation", "Imara".into()),
            ("send", "1".into()),
        ];
        if !family.is_empty() {
            f.push(("f/subject/name/family", family.to_owned()));
        }
        f
    };

    // A field left empty: 422, the error beside the field and linked from the summary;
    // nothing was accepted.
    let (status, page, _) = imara
        .post("/console/compose/safeguarding-concern", &answers(""))
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("<a href=\"#field-subject-name-family\">Family name: Is required</a>")
            && page.contains("id=\"field-subject-name-family-error\"")
            && page.contains("value=\"Noah\""),
        "{page}"
    );
    assert_eq!(h.count("referrals").await, 0);

    // A form whose id is not one this page makes (tampered, or too long to bind to its
    // answers): shown again with the answers kept and a fresh id, nothing sent.
    for bad in ["short", "has space in it", &"f".repeat(101)] {
        let mut tampered = answers("Example");
        tampered[1].1 = bad.to_owned();
        let (status, page, _) = imara
            .post("/console/compose/safeguarding-concern", &tampered)
            .await;
        assert_eq!(status, 422, "{bad:?}: {page}");
        assert!(
            page.contains("This form has expired; check the answers below and send again")
                && page.contains("value=\"Noah\""),
            "{page}"
        );
        assert!(hidden(&page, "jti") != bad, "a fresh form id");
    }
    assert_eq!(h.count("referrals").await, 0);

    // Fixed and sent: the sent page says what happened.
    let (status, page, url) = imara
        .post("/console/compose/safeguarding-concern", &answers("Example"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(url.contains("/console/sent?sent=ref_"), "{url}");
    assert!(
        page.contains("Referral sent")
            && page.contains(
                "Nottinghamshire Police - Public Protection Unit: in the inbox, not yet opened"
            ),
        "{page}"
    );
    // The same form sent again (a double click, or a retry a few seconds later, when the
    // claims' iat has moved on) is the same referral.
    let (_, _, again) = imara
        .post("/console/compose/safeguarding-concern", &answers("Example"))
        .await;
    assert_eq!(again, url);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, later) = imara
        .post("/console/compose/safeguarding-concern", &answers("Example"))
        .await;
    assert_eq!((status, later.as_str()), (200, url.as_str()));
    assert_eq!(h.count("referrals").await, 1);

    // The police system receives exactly what was typed, signed by Imara's hosted key.
    let police = h.gw.system("notts-police");
    let inbox: Value = police
        .get(h.gw.url("/v1/inbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = inbox["messages"][0]["id"].as_str().unwrap().to_owned();
    let sealed = police
        .get(h.gw.url(&format!("/v1/inbox/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let d: Value = serde_json::from_slice(
        &partner::unwrap(&sealed, &h.keys("notts-police"), &h.gateway_public()).unwrap(),
    )
    .unwrap();
    assert_eq!(d["delivery"]["from"], "imara");
    assert_eq!(d["delivery"]["sender_ref"], "IM/2026/0042");
    assert_eq!(
        d["delivery"]["payload"]["subject"]["name"]["family"],
        "Example"
    );
    assert_eq!(d["delivery"]["payload"]["concern"]["category"], "neglect");
    assert!(d["delivery"]["payload"].get("others_at_risk").is_none());
    let audit = h.audit_actors().await;
    assert!(
        audit
            .iter()
            .any(|(kind, actor)| kind == "accepted" && actor.contains("practitioner-1")),
        "the person is recorded as the submitter: {audit:?}"
    );

    // A police referral to Imara, read in Imara's console.
    let body = partner::wrap(
        claims("notts-police", "imara", "hosted-jti-0001")
            .to_string()
            .as_bytes(),
        &h.keys("notts-police"),
        &h.gateway_public(),
    )
    .unwrap();
    let res = police
        .post(h.gw.url("/v1/referrals"))
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let (status, list) = imara.get("/console/inbox").await;
    assert_eq!(status, 200, "{list}");
    let dlv = {
        let at = list.find("href=\"/console/inbox/dlv_").unwrap() + "href=\"/console/inbox/".len();
        list[at..].split('"').next().unwrap().to_owned()
    };
    assert!(list.contains("In the inbox, not yet opened"), "{list}");
    // Nothing is acknowledged unread: the gateway's copy is the organisation's only one.
    let token = hidden(&list_csrf(&mut imara).await, "csrf");
    let (status, page, _) = imara
        .post(&format!("/console/inbox/{dlv}/ack"), &[("csrf", token)])
        .await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("open and record this referral before acknowledging it"),
        "{page}"
    );
    // A notice is only shown for what is true.
    let (_, fake) = imara
        .get(&format!("/console/inbox?acknowledged={dlv}"))
        .await;
    assert!(!fake.contains("is acknowledged"), "{fake}");
    let consulted_before = h
        .audit_actors()
        .await
        .iter()
        .filter(|(k, _)| k == "consulted")
        .count();
    let (status, doc) = imara.get(&format!("/console/inbox/{dlv}")).await;
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc.contains("Nottinghamshire Police - Public Protection Unit")
            && doc.contains("NP/2026/118822")
            && doc.contains("Not shared with your organisation")
            && doc.contains("Acknowledge receipt"),
        "{doc}"
    );
    assert!(!doc.contains("\"payload\""), "a document, not JSON");
    let audit = h.audit_actors().await;
    assert_eq!(
        audit.iter().filter(|(k, _)| k == "consulted").count(),
        consulted_before + 1,
        "each read by a person is audited"
    );
    assert!(
        audit
            .iter()
            .any(|(k, a)| k == "fetched" && a.contains("practitioner-1"))
    );

    // Acknowledged: the copy is gone, the list says so.
    let (status, page, _) = imara
        .post(
            &format!("/console/inbox/{dlv}/ack"),
            &[("csrf", hidden(&doc, "csrf"))],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("is acknowledged") && page.contains(">Acknowledged<"),
        "{page}"
    );
    let (status, _) = imara.get(&format!("/console/inbox/{dlv}")).await;
    assert_eq!(status, 404);

    // Withdrawing asks first, naming the reference and who it leaves; then withdraws.
    let referral = url
        .split("sent=")
        .nth(1)
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .to_owned();
    let (status, sent_page) = imara.get("/console/sent").await;
    assert_eq!(status, 200);
    assert!(
        sent_page.contains("IM/2026/0042")
            && sent_page.contains(&format!("href=\"/console/sent/{referral}/withdraw\"")),
        "{sent_page}"
    );
    let (status, confirm) = imara
        .get(&format!("/console/sent/{referral}/withdraw"))
        .await;
    assert_eq!(status, 200, "{confirm}");
    assert!(
        confirm.contains("Withdraw IM/2026/0042?")
            && confirm.contains("Nottinghamshire Police - Public Protection Unit"),
        "{confirm}"
    );
    // Without the confirmation, nothing happens but the question.
    let (status, asked, _) = imara
        .post(
            &format!("/console/sent/{referral}/withdraw"),
            &[("csrf", hidden(&confirm, "csrf"))],
        )
        .await;
    assert!(
        status == 200 && asked.contains("This cannot be undone"),
        "{asked}"
    );
    let (status, done, _) = imara
        .post(
            &format!("/console/sent/{referral}/withdraw"),
            &[
                ("csrf", hidden(&confirm, "csrf")),
                ("confirm", "yes".into()),
            ],
        )
        .await;
    assert!(
        status == 200 && done.contains("Referral withdrawn"),
        "{done}"
    );

    // A forged form changes nothing.
    let (status, _, _) = Browser::new(&h, "imara", "practitioner-1")
        .post("/console/compose/safeguarding-concern", &answers("Forged"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(h.count("referrals").await, 2);

    // Who may not: a practitioner of an organisation that holds its own keys, a person of
    // the hosted organisation without the practitioner role, a system.
    for (partner, person) in [
        ("notts-police", "dsl-a"),
        ("imara", "dpo-1"),
        ("imara", "dsl-a"),
    ] {
        for path in [
            "/console/inbox",
            "/console/compose",
            &format!("/console/inbox/{dlv}"),
        ] {
            let (status, page) = Browser::new(&h, partner, person).get(path).await;
            assert_eq!(status, 403, "{partner}/{person} {path}: {page}");
        }
    }
    let res =
        h.gw.system("imara")
            .get(h.gw.url("/console/inbox"))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 403);

    // The disclosure record of Imara's referral says the gateway holds Imara's keys.
    let referral = url
        .split("sent=")
        .nth(1)
        .unwrap()
        .split('#')
        .next()
        .unwrap();
    let record: Value =
        h.gw.person("imara", "dsl-a")
            .get(h.gw.url(&format!("/v1/disclosures/{referral}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        record["keys_held_by_gateway"],
        serde_json::json!(["imara"]),
        "{record}"
    );
    h.gw.stop().await;
}

crate::on_both_stores!(a_hosted_partner_works_in_the_console => a_hosted_partner_works_in_the_console);
