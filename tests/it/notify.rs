//! Notices to designated safeguarding leads, received by a real SMTP server (Python's
//! aiosmtpd, started here) and a webhook listener: a held referral produces an e-mail and a
//! webhook call that say only that something waits, with the console's address, and carry no
//! personal data: each e-mail's body is exactly the pure template's text, its headers are
//! only the envelope's, and the webhook body is exactly the template's JSON. A hold that waits
//! past the review deadline is escalated by housekeeping and the leads are told; the daily
//! digest is sent once however many housekeeping passes run.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Project;
use common::partner::{Harness, override_claims};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PYTHON: &str = "/usr/bin/python3";
const CONSOLE: &str = "https://refex.partnership.example/console/";

fn smtp_available() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    common::prereq::available(
        "smtp",
        if ok {
            Ok(())
        } else {
            Err("python3-aiosmtpd is not installed".into())
        },
    )
}

struct Smtp {
    child: Child,
    port: u16,
    received: Arc<Mutex<String>>,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiosmtpd with its debugging handler, which prints every message it receives.
fn smtp_server() -> Smtp {
    smtp_server_with(&[])
}

/// As [`smtp_server`], with more aiosmtpd flags (e.g. STARTTLS with a certificate).
fn smtp_server_with(extra: &[&str]) -> Smtp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(PYTHON)
        .args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Debugging",
            "-l",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let received = Arc::new(Mutex::new(String::new()));
    let out = BufReader::new(child.stdout.take().unwrap());
    let sink = received.clone();
    // Whole messages only: a test that waits for a subject line must not then read a
    // message cut off mid-body (seen once: the body ended at "…a designated safeguarding
    // lea").
    std::thread::spawn(move || {
        let mut message = String::new();
        for line in out.lines().map_while(Result::ok) {
            message.push_str(&line);
            message.push('\n');
            if line.starts_with("------------ END MESSAGE ------------") {
                sink.lock().unwrap().push_str(&std::mem::take(&mut message));
            }
        }
    });
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Smtp {
        child,
        port,
        received,
    }
}

/// A webhook listener answering 204 and keeping each request it receives.
async fn webhook() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut n = 0;
                // Read until the headers and the declared body are in.
                loop {
                    let m = s.read(&mut buf[n..]).await.unwrap_or(0);
                    if m == 0 {
                        break;
                    }
                    n += m;
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if n >= end + 4 + length {
                            sink.lock().unwrap().push(text);
                            break;
                        }
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (port, got)
}

/// Each message the Debugging handler printed: its headers (name, value) and its body with
/// quoted-printable undone.
fn messages(received: &str) -> Vec<(Vec<(String, String)>, String)> {
    received
        .split("---------- MESSAGE FOLLOWS ----------\n")
        .skip(1)
        .map(|m| {
            let m = m
                .split("------------ END MESSAGE ------------")
                .next()
                .unwrap();
            let (head, body) = m.split_once("\n\n").unwrap();
            let mut headers: Vec<(String, String)> = Vec::new();
            for line in head.lines() {
                if line.starts_with([' ', '\t']) {
                    headers.last_mut().unwrap().1.push_str(line);
                } else if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.to_owned(), value.trim().to_owned()));
                }
            }
            (headers, quoted_printable(body))
        })
        .collect()
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The one message whose subject is `subject`: its body must be the template's text exactly,
/// and its headers only the envelope's (nothing of a referral can ride in one).
fn exactly(received: &str, notice: &refex::notify::Notice, console: &str) {
    let expected = refex::notify::message(notice, console);
    let all = messages(received);
    let (headers, body) = all
        .iter()
        .find(|(h, _)| {
            h.iter()
                .any(|(n, v)| n == "Subject" && *v == expected.subject)
        })
        .unwrap_or_else(|| panic!("no e-mail {:?} in {received}", expected.subject));
    assert_eq!(body.trim_end(), expected.text.trim_end(), "{received}");
    for (name, value) in headers {
        match name.as_str() {
            "From" => assert_eq!(value, "refex@partnership.example"),
            "To" => assert_eq!(value, "safeguarding-leads@police.example"),
            "Subject"
            | "Date"
            | "Message-ID"
            | "MIME-Version"
            | "Content-Type"
            | "Content-Transfer-Encoding"
            | "X-Peer"
            | "X-MailFrom"
            | "X-RcptTo" => {}
            other => panic!("unexpected header {other}: {value}"),
        }
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_tells_the_leads_without_personal_data() {
    if !smtp_available() {
        return;
    }
    let smtp = smtp_server();
    let (hook_port, hooks) = webhook().await;
    let project = Project::with_copied_partners();
    let police = project.path().join("partners/notts-police.toml");
    let mut text = std::fs::read_to_string(&police).unwrap();
    text.push_str(&format!(
        "\n[notify]\nemail = [\"safeguarding-leads@police.example\"]\nwebhook = \"http://127.0.0.1:{hook_port}/refex\"\n"
    ));
    std::fs::write(&police, text).unwrap();
    let toml = project.path().join("refex.toml");
    let mut settings = std::fs::read_to_string(&toml).unwrap();
    settings.push_str(&format!(
        "\n[notify]\nsmtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"refex@partnership.example\"\n\
         console_url = \"{CONSOLE}\"\ndigest_hour = 0\n[review]\nescalate_after = \"1s\"\n",
        smtp.port
    ));
    std::fs::write(&toml, settings).unwrap();
    let h = Harness::start_in(project, None).await;

    h.submit_held(
        &h.gw.system("notts-police"),
        &override_claims(&["imara"], "notify-jti-0001"),
    )
    .await;
    until("the e-mail", || {
        smtp.received
            .lock()
            .unwrap()
            .contains("waiting for your review")
    })
    .await;
    until("the webhook", || !hooks.lock().unwrap().is_empty()).await;
    // Quoted-printable: soft line breaks joined again.
    let mail = smtp.received.lock().unwrap().replace("=\n", "");
    assert!(
        mail.contains("safeguarding-leads@police.example")
            && mail.contains("https://refex.partnership.example/console/"),
        "{mail}"
    );
    let hook = hooks.lock().unwrap()[0].clone();
    let police_id: refex::identity::PartnerId = "notts-police".parse().unwrap();
    let held = refex::notify::Notice::Held {
        partner: police_id.clone(),
    };
    exactly(&smtp.received.lock().unwrap().clone(), &held, CONSOLE);
    let hook_body: serde_json::Value =
        serde_json::from_str(hook.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(hook_body, refex::notify::message(&held, CONSOLE).json);
    // Nothing of the referral: no names, no reference, no justification, no payload value,
    // no recipient.
    for secret in [
        "Amy",
        "Example",
        "NP/2026/118822",
        "risk at home tonight",
        "Test Street",
        "imara",
    ] {
        assert!(
            !mail.contains(secret),
            "the e-mail carries {secret:?}: {mail}"
        );
        assert!(
            !hook.contains(secret),
            "the webhook carries {secret:?}: {hook}"
        );
    }

    // Past the review deadline (1 s here), housekeeping escalates the hold and the leads are
    // told; the daily digest: once, however many passes run.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let rt = h.gw.running().runtime.clone();
    refex::housekeeping::run_once(&rt).await.unwrap();
    refex::housekeeping::run_once(&rt).await.unwrap();
    until("the escalation", || {
        smtp.received
            .lock()
            .unwrap()
            .contains("now overdue for review")
    })
    .await;
    until("the digest", || {
        smtp.received
            .lock()
            .unwrap()
            .contains("1 referral(s) waiting for review")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mail = smtp.received.lock().unwrap().clone();
    assert_eq!(
        mail.matches("1 referral(s) waiting for review").count(),
        1,
        "one digest a day: {mail}"
    );
    exactly(
        &mail,
        &refex::notify::Notice::Escalated {
            partner: police_id.clone(),
            count: 1,
        },
        CONSOLE,
    );
    // The gateway's own housekeeping may have sent the day's digest before the deadline
    // passed (nothing overdue yet) or after: either way exactly the template.
    let overdue = if quoted_printable(&mail).contains("(0 overdue)") {
        0
    } else {
        1
    };
    exactly(
        &mail,
        &refex::notify::Notice::Digest {
            partner: police_id,
            waiting: 1,
            escalated: overdue,
        },
        CONSOLE,
    );
    h.gw.stop().await;
}

/// A relay that requires STARTTLS, with a certificate from the partnership's own CA: the
/// notice reaches it over TLS when `notify.ca_file` names that CA, and not in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_is_reached_over_tls_verified_against_the_configured_ca() {
    if !smtp_available() {
        return;
    }
    let project = Project::with_copied_partners();
    let gateway = project.pki().join("gateway");
    let (cert, key) = (gateway.join("tls.pem"), gateway.join("tls.key"));
    let smtp = smtp_server_with(&[
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let police = project.path().join("partners/notts-police.toml");
    let mut text = std::fs::read_to_string(&police).unwrap();
    text.push_str("\n[notify]\nemail = [\"safeguarding-leads@police.example\"]\n");
    std::fs::write(&police, text).unwrap();
    let toml = project.path().join("refex.toml");
    let mut settings = std::fs::read_to_string(&toml).unwrap();
    settings.push_str(&format!(
        "\n[notify]\nsmtp_url = \"smtp://localhost:{}?tls=required\"\n\
         from = \"refex@partnership.example\"\nconsole_url = \"{CONSOLE}\"\nca_file = \"{}\"\n",
        smtp.port,
        project.pki().join("ca.pem").display()
    ));
    std::fs::write(&toml, settings).unwrap();
    let h = Harness::start_in(project, None).await;
    h.submit_held(
        &h.gw.system("notts-police"),
        &override_claims(&["imara"], "tls-relay-jti-0001"),
    )
    .await;
    until("the e-mail over STARTTLS", || {
        smtp.received
            .lock()
            .unwrap()
            .contains("waiting for your review")
    })
    .await;
    exactly(
        &smtp.received.lock().unwrap().clone(),
        &refex::notify::Notice::Held {
            partner: "notts-police".parse().unwrap(),
        },
        CONSOLE,
    );
    h.gw.stop().await;
}

/// A relay that accepts the connection and never speaks (a port mix-up, a stuck relay)
/// holds up neither intake nor the other targets: the partner's webhook is still told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_relay_does_not_hold_up_the_other_notices() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let (hook_port, hooks) = webhook().await;
    let project = Project::with_copied_partners();
    let police = project.path().join("partners/notts-police.toml");
    let mut text = std::fs::read_to_string(&police).unwrap();
    text.push_str(&format!(
        "\n[notify]\nemail = [\"a@police.example\", \"b@police.example\", \"c@police.example\", \"d@police.example\", \"e@police.example\", \"f@police.example\", \"g@police.example\", \"h@police.example\", \"i@police.example\"]\nwebhook = \"http://127.0.0.1:{hook_port}/refex\"\n"
    ));
    std::fs::write(&police, text).unwrap();
    let toml = project.path().join("refex.toml");
    let mut settings = std::fs::read_to_string(&toml).unwrap();
    settings.push_str(&format!(
        "\n[notify]\nsmtp_url = \"smtp://127.0.0.1:{silent_port}\"\nfrom = \"refex@partnership.example\"\n"
    ));
    std::fs::write(&toml, settings).unwrap();
    let h = Harness::start_in(project, None).await;
    let started = std::time::Instant::now();
    h.submit_held(
        &h.gw.system("notts-police"),
        &override_claims(&["imara"], "stuck-relay-jti-0001"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "intake is not delayed"
    );
    until("the webhook despite nine stuck e-mails", || {
        !hooks.lock().unwrap().is_empty()
    })
    .await;
    h.gw.stop().await;
}
