//! Telling designated safeguarding leads that something waits for them: when a referral of
//! their organisation is held for review, when holds escalate, and a daily digest of what
//! waits. By e-mail (SMTP over TLS, `lettre`) and/or a webhook, as each partner file's
//! `[notify]` says. A notice carries **no personal data**: only that something waits, how
//! many, and the console's address ([`message`] is pure and tested for it).
//!
//! Sending never delays or fails a referral: notices go to a bounded queue; each is sent on
//! its own task, at most two at a time per target (the relay, each webhook), each attempt
//! bounded in time, a few attempts; a target that failed them all rests for ten minutes (its
//! notices fail at once), so a stuck relay or webhook holds up only itself; a webhook's
//! redirect is a failure, never followed. One that cannot be sent is logged and counted
//! (`refex_notifications_total{outcome}`). The daily digest is the backstop: it is derived
//! from the store (what waits now), sent once a day per partner across replicas and restarts
//! (a claim in the store), so a notice lost to a crash is covered the next morning.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::config::settings::NotifySettings;
use crate::identity::PartnerId;

/// What a notice is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A referral of `partner` was held for its leads' review.
    Held {
        /// The sending partner.
        partner: PartnerId,
    },
    /// `count` of `partner`'s holds were escalated (undecided past the review deadline).
    Escalated {
        /// The sending partner.
        partner: PartnerId,
        /// How many escalated in this pass.
        count: usize,
    },
    /// The daily digest: `waiting` holds, `escalated` of them overdue.
    Digest {
        /// The sending partner.
        partner: PartnerId,
        /// Holds waiting.
        waiting: usize,
        /// Of which escalated.
        escalated: usize,
    },
}

impl Notice {
    /// The partner whose leads it is for.
    pub fn partner(&self) -> &PartnerId {
        match self {
            Notice::Held { partner }
            | Notice::Escalated { partner, .. }
            | Notice::Digest { partner, .. } => partner,
        }
    }

    /// Its kind, for webhooks and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Held { .. } => "held",
            Notice::Escalated { .. } => "escalated",
            Notice::Digest { .. } => "digest",
        }
    }
}

/// A notice as people and webhooks receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The e-mail subject.
    pub subject: String,
    /// The e-mail text.
    pub text: String,
    /// The webhook body.
    pub json: serde_json::Value,
}

/// The message for `notice`: counts and the console's address, nothing about any referral's
/// content, sender reference, person or recipient. Pure.
pub fn message(notice: &Notice, console_url: &str) -> Message {
    let (subject, lead) = match notice {
        Notice::Held { .. } => (
            "refex: a referral is waiting for your review".to_owned(),
            "A referral from your organisation is held for a designated safeguarding lead's review. \
             Nothing reaches any recipient until a lead decides."
                .to_owned(),
        ),
        Notice::Escalated { count, .. } => (
            format!("refex: {count} held referral(s) now overdue for review"),
            format!(
                "{count} referral(s) from your organisation have waited past the review deadline \
                 and are escalated."
            ),
        ),
        Notice::Digest {
            waiting, escalated, ..
        } => (
            format!("refex: {waiting} referral(s) waiting for review"),
            format!(
                "{waiting} referral(s) from your organisation wait for a designated safeguarding \
                 lead's review ({escalated} overdue)."
            ),
        ),
    };
    let text = format!(
        "{lead}\n\nOpen the review console (with your personal certificate): {console_url}\n\n\
         This message says only that something waits; the referral is in the console."
    );
    let (waiting, count) = match notice {
        Notice::Held { .. } => (None, None),
        Notice::Escalated { count, .. } => (None, Some(*count)),
        Notice::Digest {
            waiting, escalated, ..
        } => (Some(*waiting), Some(*escalated)),
    };
    Message {
        subject,
        text,
        json: json!({
            "event": notice.kind(), "partner": notice.partner(), "waiting": waiting,
            "escalated": count, "console": console_url,
        }),
    }
}

/// Why notification settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The SMTP URL or an address does not parse.
    #[error("{0}")]
    Settings(String),
}

/// Checks the gateway's `[notify]` and every partner's targets; `production` refuses what
/// would send in the clear. Returns every problem.
pub fn check(
    settings: &NotifySettings,
    partners: &std::collections::BTreeMap<PartnerId, crate::config::partners::Partner>,
    production: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(url) = &settings.smtp_url {
        let parsed = url::Url::parse(url).ok();
        let tls_required = parsed
            .as_ref()
            .is_some_and(|u| u.query_pairs().any(|(k, v)| k == "tls" && v == "required"));
        match parsed.as_ref().map(url::Url::scheme) {
            Some("smtps") => {}
            Some("smtp") if tls_required || !production => {}
            Some("smtp") => out.push(
                "notify.smtp_url: production needs TLS to the relay: smtps://… or smtp://…?tls=required"
                    .into(),
            ),
            _ => out.push("notify.smtp_url must be an smtps:// or smtp:// URL".into()),
        }
        if AsyncSmtpTransport::<Tokio1Executor>::from_url(url).is_err() {
            out.push("notify.smtp_url does not parse as an SMTP URL".into());
        }
    }
    if let Some(ca_file) = &settings.ca_file {
        if crate::tls::certificates_in(ca_file) == 0 {
            out.push(format!(
                "notify.ca_file {}: not a readable PEM file of certificates",
                ca_file.display()
            ));
        }
    }
    if settings.from.parse::<Mailbox>().is_err() {
        out.push(format!(
            "notify.from {:?} is not an e-mail address",
            settings.from
        ));
    }
    if settings.digest_hour > 23 {
        out.push("notify.digest_hour must be 0-23".into());
    }
    for p in partners.values() {
        for e in &p.notify.email {
            if e.parse::<Mailbox>().is_err() {
                out.push(format!(
                    "partner {}: notify.email {e:?} is not an e-mail address",
                    p.id
                ));
            }
        }
        if !p.notify.email.is_empty() && settings.smtp_url.is_none() {
            out.push(format!(
                "partner {}: notify.email is set but the gateway has no notify.smtp_url",
                p.id
            ));
        }
        if let Some(w) = &p.notify.webhook {
            let https = w.starts_with("https://");
            if !(https || (!production && w.starts_with("http://"))) {
                out.push(format!(
                    "partner {}: notify.webhook must be an https:// URL{}",
                    p.id,
                    if production { " in production" } else { "" }
                ));
            }
        }
    }
    out
}

/// One send: a message to one target.
#[derive(Debug)]
enum Job {
    Mail { to: String, message: Message },
    Webhook { url: String, message: Message },
}

/// The notifier a runtime owns: a queue and the task that drains it (once started).
#[derive(Debug, Default)]
pub struct Notifier {
    queue: OnceLock<mpsc::Sender<Job>>,
}

/// How many notices may wait to be sent; past it new ones are dropped (and counted): the
/// digest covers them.
const QUEUE: usize = 1024;
/// Tries per notice.
const ATTEMPTS: u32 = 4;

impl Notifier {
    /// Whether notices are being sent (only `serve` starts the notifier).
    pub fn is_started(&self) -> bool {
        self.queue.get().is_some()
    }

    /// Starts the sending task (in `serve`); until then notices are dropped.
    pub fn start(&self, settings: &NotifySettings) {
        let (tx, rx) = mpsc::channel(QUEUE);
        if self.queue.set(tx).is_ok() {
            tokio::spawn(run(rx, Arc::new(settings.clone())));
        }
    }

    /// Queues `notice` for every target of its partner in `config`.
    pub fn notify(&self, config: &Config, notice: Notice) {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let Some(p) = config.policy.partners.get(notice.partner()) else {
            return;
        };
        let message = message(&notice, &config.settings.notify.console_url);
        let mut jobs: Vec<Job> = p
            .notify
            .email
            .iter()
            .map(|to| Job::Mail {
                to: to.clone(),
                message: message.clone(),
            })
            .collect();
        if let Some(url) = &p.notify.webhook {
            jobs.push(Job::Webhook {
                url: url.clone(),
                message,
            });
        }
        for job in jobs {
            if queue.try_send(job).is_err() {
                metrics::counter!(crate::telemetry::NOTIFICATIONS, "outcome" => "dropped")
                    .increment(1);
                tracing::warn!(
                    kind = notice.kind(),
                    "notification queue full: notice dropped (the daily digest covers it)"
                );
            }
        }
    }
}

/// Longest one attempt to send may take (connect, talk, answer): a relay or webhook that
/// hangs costs this, never the queue.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Notices sent to one target (the relay, one webhook) at once: a slow target holds up only
/// its own notices.
const PER_TARGET: usize = 2;
/// After a target failed every attempt, its notices fail at once for this long (counted;
/// the daily digest repeats what waits) rather than queue up behind it.
const TARGET_REST: Duration = Duration::from_secs(600);

/// Per-target sending slots and rest periods.
#[derive(Default)]
struct Targets {
    slots: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    resting: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

impl Targets {
    fn slot(&self, target: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .entry(target.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PER_TARGET)))
            .clone()
    }

    fn resting(&self, target: &str) -> bool {
        let resting = self
            .resting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        resting
            .get(target)
            .is_some_and(|until| tokio::time::Instant::now() < *until)
    }

    fn rest(&self, target: &str) {
        self.resting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(target.to_owned(), tokio::time::Instant::now() + TARGET_REST);
    }
}

impl Job {
    /// Where it goes: the relay (one for all e-mail) or the webhook's URL.
    fn target(&self) -> String {
        match self {
            Job::Mail { .. } => "smtp".into(),
            Job::Webhook { url, .. } => url.clone(),
        }
    }
}

/// The relay's transport as `smtp_url` says (`smtps://` TLS from the start, `?tls=required`
/// STARTTLS), verifying the relay against the system's roots and `ca_file`'s certificates.
fn relay(settings: &NotifySettings) -> Option<AsyncSmtpTransport<Tokio1Executor>> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let url = settings.smtp_url.as_deref()?;
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .ok()?
        .timeout(Some(Duration::from_secs(20)));
    let Some(ca_file) = &settings.ca_file else {
        return Some(builder.build());
    };
    let parsed = url::Url::parse(url).ok()?;
    let mut params = TlsParameters::builder(parsed.host_str()?.to_owned());
    let pem = std::fs::read(ca_file).ok()?;
    params = params.add_root_certificate(Certificate::from_pem(&pem).ok()?);
    let params = params.build_rustls().ok()?;
    let tls = if parsed.scheme() == "smtps" {
        Tls::Wrapper(params)
    } else if parsed
        .query_pairs()
        .any(|(k, v)| k == "tls" && v == "required")
    {
        Tls::Required(params)
    } else {
        Tls::Opportunistic(params)
    };
    Some(builder.tls(tls).build())
}

async fn run(mut rx: mpsc::Receiver<Job>, settings: Arc<NotifySettings>) {
    let smtp = relay(&settings);
    let http = webhook_client(&settings);
    let targets = Arc::new(Targets::default());
    while let Some(job) = rx.recv().await {
        let (smtp, http, settings, targets) = (
            smtp.clone(),
            http.clone(),
            settings.clone(),
            targets.clone(),
        );
        tokio::spawn(async move {
            let target = job.target();
            if targets.resting(&target) {
                metrics::counter!(crate::telemetry::NOTIFICATIONS, "outcome" => "failed")
                    .increment(1);
                return;
            }
            let slot = targets.slot(&target);
            let Ok(_slot) = slot.acquire().await else {
                return;
            };
            if !deliver(&job, smtp.as_ref(), http.as_ref(), &settings).await {
                targets.rest(&target);
            }
        });
    }
}

/// Sends one notice, retrying; each attempt bounded by [`ATTEMPT_TIMEOUT`]. `false` when
/// every attempt failed.
async fn deliver(
    job: &Job,
    smtp: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    http: Option<&reqwest::Client>,
    settings: &NotifySettings,
) -> bool {
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let attempt_result = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            match job {
                Job::Mail { to, message } => send_mail(smtp, settings, to, message).await,
                Job::Webhook { url, message } => send_webhook(http, url, message).await,
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        match attempt_result {
            Ok(()) => {
                metrics::counter!(crate::telemetry::NOTIFICATIONS, "outcome" => "sent")
                    .increment(1);
                return true;
            }
            Err(e) if attempt == ATTEMPTS => {
                metrics::counter!(crate::telemetry::NOTIFICATIONS, "outcome" => "failed")
                    .increment(1);
                tracing::warn!(error = %e, "a notification could not be sent (the daily digest covers it)");
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    false
}

async fn send_mail(
    smtp: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    settings: &NotifySettings,
    to: &str,
    message: &Message,
) -> Result<(), String> {
    let smtp = smtp.ok_or("no SMTP relay configured")?;
    let mail = Mail::builder()
        .from(
            settings
                .from
                .parse::<Mailbox>()
                .map_err(|e| e.to_string())?,
        )
        .to(to.parse::<Mailbox>().map_err(|e| e.to_string())?)
        .subject(message.subject.clone())
        .body(message.text.clone())
        .map_err(|e| e.to_string())?;
    smtp.send(mail).await.map(|_| ()).map_err(|e| e.to_string())
}

fn webhook_client(settings: &NotifySettings) -> Option<reqwest::Client> {
    let tls = crate::tls::outbound_client_config(settings.ca_file.as_deref())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // A redirect would take the notice somewhere the partner file does not name (an
        // internal address, or plain HTTP): a 3xx is a failure.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .ok()
}

async fn send_webhook(
    http: Option<&reqwest::Client>,
    url: &str,
    message: &Message,
) -> Result<(), String> {
    let http = http.ok_or("no HTTP client")?;
    let res = http
        .post(url)
        .json(&message.json)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {}", res.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> NotifySettings {
        NotifySettings {
            smtp_url: Some(url.into()),
            ..NotifySettings::default()
        }
    }

    #[test]
    fn production_refuses_a_relay_without_tls_however_the_url_is_spelt() {
        let none = std::collections::BTreeMap::new();
        for plain in [
            "smtp://relay:25",
            "smtp://relay:25/tls=required",
            "smtp://relay:25?tls=opportunistic",
            "smtp://relay:25#tls=required",
        ] {
            assert!(!check(&settings(plain), &none, true).is_empty(), "{plain}");
        }
        for tls in ["smtps://relay:465", "smtp://relay:587?tls=required"] {
            assert!(check(&settings(tls), &none, true).is_empty(), "{tls}");
        }
    }

    #[tokio::test]
    async fn a_webhook_redirect_is_a_failure_never_followed() {
        let hop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = hop.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = hop.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/admin/reload\r\ncontent-length: 0\r\n\r\n",
                    )
                    .await;
            }
        });
        let http = webhook_client(&NotifySettings::default()).unwrap();
        let m = message(
            &Notice::Held {
                partner: "imara".parse().unwrap(),
            },
            "https://x/console/",
        );
        let sent = send_webhook(Some(&http), &format!("http://127.0.0.1:{port}/hook"), &m).await;
        assert!(
            sent.is_err_and(|e| e.contains("307")),
            "a 3xx is not followed"
        );
    }

    #[test]
    fn a_notice_says_only_that_something_waits() {
        let partner: PartnerId = "notts-police".parse().unwrap();
        for n in [
            Notice::Held {
                partner: partner.clone(),
            },
            Notice::Escalated {
                partner: partner.clone(),
                count: 2,
            },
            Notice::Digest {
                partner: partner.clone(),
                waiting: 3,
                escalated: 1,
            },
        ] {
            let m = message(&n, "https://refex.example/console/");
            assert!(m.text.contains("https://refex.example/console/"), "{m:?}");
            assert_eq!(m.json["event"], n.kind());
            // Nothing but counts, the partner's own id and the link.
            let keys: Vec<&String> = m.json.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 5, "{keys:?}");
        }
    }
}
