//! The review console over real mutual TLS with a lead's certificate (HTTP client; the
//! real-browser run is still to come): strict headers on every page, the queue, the preview,
//! CSRF-checked decisions that approve and reject, four eyes, and the sent history.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::partner::{Harness, override_claims};
use serde_json::Value;

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_lead_reviews_in_the_console() {
    let h = Harness::start(None).await;
    let a = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "con-jti-00001"),
        )
        .await;
    let b = h
        .submit_held(
            &h.gw.system("notts-police"),
            &override_claims(&["imara"], "con-jti-00002"),
        )
        .await;
    let lead = h.gw.person("notts-police", "dsl-a");
    let origin = format!("https://localhost:{}", h.gw.running().api_addr.port());

    // The queue, with the console's headers.
    let res = lead.get(h.gw.url("/console/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-security-policy"], refex::console::CSP);
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"en\">")
            && html.contains(&format!("href=\"/console/reviews/{a}\"")),
        "{html}"
    );
    assert!(!html.contains("<script"), "no JavaScript");

    // The preview: per recipient, disclosed and withheld; a CSRF cookie and token.
    let res = lead
        .get(h.gw.url(&format!("/console/reviews/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();
    let html = res.text().await.unwrap();
    // A document, not JSON pointers: labels from the schema, the values the lead's own
    // organisation sent, and per recipient whether each is disclosed or withheld.
    assert!(
        html.contains("<th scope=\"row\">Account of the abuse</th>")
            && html.contains("<span class=\"tag withheld\">Withheld</span>")
            && html.contains("<span class=\"tag disclosed\">Disclosed</span>")
            && html
                .contains("Refer children after sexual abuse to CHISVA and therapeutic support."),
        "{html}"
    );
    assert!(
        !html.contains("/offence/narrative"),
        "no JSON pointers: {html}"
    );
    assert!(
        html.contains("<label for=\"reason-imara\">")
            && html.contains("<legend>Release to ")
            && html.contains("name=\"preview_imara\""),
        "{html}"
    );
    let preview = {
        let at = html.find("name=\"preview_imara\" value=\"").unwrap()
            + "name=\"preview_imara\" value=\"".len();
        html[at..].split('"').next().unwrap().to_owned()
    };
    assert!(preview.starts_with("sha256:"), "{preview}");
    assert!(html.contains("risk at home tonight."));
    let token = hidden_csrf(&html);

    let post = |id: &str, form: Vec<(&str, String)>, cookie: Option<&str>, origin: Option<&str>| {
        let mut req = lead
            .post(h.gw.url(&format!("/console/reviews/{id}/decision")))
            .form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let approve = || {
        vec![
            ("decision_imara", "approve".to_string()),
            ("reason_imara", String::new()),
            ("preview_imara", preview.clone()),
            ("csrf", token.clone()),
        ]
    };
    // No cookie, a forged token, or a foreign origin: refused, nothing decided.
    assert_eq!(
        post(&a, approve(), None, Some(&origin))
            .await
            .unwrap()
            .status(),
        403
    );
    let forged = vec![
        ("decision_imara", "approve".to_string()),
        ("csrf", "00".repeat(32)),
    ];
    assert_eq!(
        post(&a, forged, Some(&cookie_pair), Some(&origin))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(
            &a,
            approve(),
            Some(&cookie_pair),
            Some("https://evil.example")
        )
        .await
        .unwrap()
        .status(),
        403
    );
    assert_eq!(h.count("holds").await, 2);
    // An approval bound to a preview that is not the one shown: refused, the page says which
    // recipient in words, nothing decided.
    let mut stale = approve();
    stale[2].1 = format!("sha256:{}", "0".repeat(64));
    let res = post(&a, stale, Some(&cookie_pair), Some(&origin))
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("What Imara") && page.contains("has changed since this page was shown"),
        "{page}"
    );
    assert_eq!(h.count("holds").await, 2);

    // Approve: 303 back to the queue (the client follows it); the delivery is in imara's inbox.
    let res = post(&a, approve(), Some(&cookie_pair), Some(&origin))
        .await
        .unwrap();
    assert!(
        res.status() == 303 || res.url().path() == "/console/",
        "{}",
        res.status()
    );
    let inbox: Value =
        h.gw.system("imara")
            .get(h.gw.url("/v1/inbox"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 1);

    // Reject needs a reason; with one, nothing is ever delivered.
    let reject = |reason: &str| {
        vec![
            ("decision_imara", "reject".to_string()),
            ("reason_imara", reason.to_string()),
            ("csrf", token.clone()),
        ]
    };
    let res = post(&b, reject(""), Some(&cookie_pair), Some(&origin))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Give a reason for not releasing to Imara")
    );
    let res = post(
        &b,
        reject("Threshold not met."),
        Some(&cookie_pair),
        Some(&origin),
    )
    .await
    .unwrap();
    assert!(res.status().is_success() || res.status() == 303);
    let status: Value =
        h.gw.system("notts-police")
            .get(h.gw.url(&format!("/v1/referrals/{b}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(status["deliveries"][0]["status"], "rejected-by-review");

    // Four eyes: the submitting lead gets no form.
    let c = h
        .submit_held(&lead, &override_claims(&["imara"], "con-jti-00003"))
        .await;
    let html = lead
        .get(h.gw.url(&format!("/console/reviews/{c}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("another designated safeguarding lead must decide")
            && !html.contains("<form")
    );

    // The outbound history; systems and other partners see nothing.
    let html = lead
        .get(h.gw.url("/console/sent"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&a)
            && html.contains("In the inbox, not yet opened")
            && html.contains("Not released: the lead rejected it")
            && html.contains("Imara - CHISVA and therapy service"),
        "{html}"
    );
    assert!(
        !html.contains("rejected-by-review"),
        "statuses in words: {html}"
    );
    assert_eq!(
        h.gw.system("notts-police")
            .get(h.gw.url("/console/sent"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        h.gw.person("imara", "dsl-a")
            .get(h.gw.url(&format!("/console/reviews/{c}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    h.gw.stop().await;
}
