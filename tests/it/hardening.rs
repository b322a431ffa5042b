//! HTTP hardening through the real server over mutual TLS: HSTS and `no-store`; the same
//! header and target limits on HTTP/1.1 and HTTP/2, answered with problems; a `422` that
//! lists at most 100 violations however many there are; rate limits per principal (one
//! person cannot use up the case system's quota) and for unmapped certificates.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use common::partner::Harness;
use serde_json::{Value, json};

async fn problem(res: reqwest::Response, status: u16, slug: &str) {
    assert_eq!(res.status(), status, "{slug}");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["type"], format!("urn:refex:problem:{slug}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_is_hardened() {
    let h = Harness::start(None).await;
    let system = h.gw.system("imara");
    let res = system.get(h.gw.url("/v1/inbox")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");

    // The same limits on both protocols, answered with the same problem.
    for (name, client) in [
        ("h2", system.clone()),
        ("http/1.1", h.gw.system_http1("imara")),
    ] {
        let res = client
            .get(h.gw.url("/v1/inbox"))
            .header("x-big", "a".repeat(20 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.version() == reqwest::Version::HTTP_2,
            name == "h2",
            "{name}"
        );
        problem(res, 431, "headers-too-large").await;
        let mut req = client.get(h.gw.url("/v1/inbox"));
        for i in 0..80 {
            req = req.header(format!("x-h{i}"), "1");
        }
        problem(req.send().await.unwrap(), 431, "headers-too-large").await;
        let res = client
            .get(h.gw.url(&format!("/v1/inbox?cursor={}", "1".repeat(5000))))
            .send()
            .await
            .unwrap();
        problem(res, 414, "uri-too-long").await;
    }

    // A referral built to fail everywhere: 100 violations listed, and how many more.
    let mut doc = common::partner::claims("notts-police", "imara", "hard-jti-0001");
    let junk: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("x{i}"), json!(1))).collect();
    doc["referral"]["payload"]["child"] = Value::Object(junk);
    let res = h.post_as("notts-police", "notts-police", &doc).await;
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    let errors = p["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101);
    assert_eq!(errors[100]["keyword"], "too-many");
    assert!(
        errors[100]["message"]
            .as_str()
            .unwrap()
            .contains("more violations"),
        "{}",
        errors[100]
    );
    h.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_page_whose_query_cannot_be_read_says_so_as_a_page() {
    let h = Harness::start(None).await;
    let practitioner = h.gw.person("imara", "practitioner-1");
    let res = practitioner
        .get(h.gw.url("/console/inbox?after=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = res.text().await.unwrap();
    // Before: the web framework's own plain-text message ("Failed to deserialize query
    // string: ...").
    assert!(!body.contains("deserialize"), "{body}");
    assert!(body.contains("cannot read"), "{body}");
    // The console's own address without its slash is a console page too (before: JSON).
    let res = practitioner.get(h.gw.url("/console")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // A console form posted as something else is refused for its media type (before: 404).
    let res =
        h.gw.person("notts-police", "dsl-a")
            .post(h.gw.url("/console/sent/ref_01M8ETBK31EKBSFJT1JHE0MZHT/withdraw"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 415);
    assert!(res.text().await.unwrap().contains("Unsupported media type"));
    h.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_has_its_own_rate_limit() {
    let h = Harness::start(None).await;
    // A person's burst (60) is used up; the organisation's system is unaffected.
    let lead = h.gw.person("notts-police", "dsl-a");
    let mut limited = false;
    for _ in 0..80 {
        if lead
            .get(h.gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap()
            .status()
            == 429
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "a person's own quota ran out");
    // On the console the refusal is a page, as every console failure is (before: the API's
    // JSON problem), and it says when to retry.
    let mut page = None;
    for _ in 0..40 {
        let res = lead.get(h.gw.url("/console/")).send().await.unwrap();
        if res.status() == 429 {
            page = Some(res);
            break;
        }
    }
    let page = page.expect("the lead's quota is still used up");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers()
    );
    assert!(page.headers().contains_key("retry-after"));
    assert!(page.text().await.unwrap().contains("Too many requests"));
    let res =
        h.gw.system("notts-police")
            .get(h.gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200, "the case system keeps its quota");
    // A certificate that maps to no one has a small bucket of its own, on every route (before:
    // only the public documents were limited, and all such certificates shared one bucket).
    let stranger = h.gw.with_cert(&common::unmapped(&h.project));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            stranger
                .get(h.gw.url("/v1/inbox"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&403) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert_eq!(
        stranger
            .get(h.gw.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    // Another unknown certificate (a partner onboarding) is not held up by the first.
    let newcomer = h.gw.with_cert(&common::unmapped(&h.project));
    assert_eq!(
        newcomer
            .get(h.gw.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A decision body is a few KiB at most: a large one is refused before it is parsed.
    let lead = h.gw.person("notts-police", "dsl-b");
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(70 * 1024));
    let res = lead
        .post(h.gw.url("/v1/reviews/ref_01M8ETBK31EKBSFJT1JHE0MZHT/decision"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(res, 413, "payload-too-large").await;
    h.gw.stop().await;
}

/// A raw HTTP/1.1 connection over mutual TLS as `person` of `partner`.
pub(crate) async fn raw_as(
    h: &Harness,
    partner: &str,
    person: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let people = h
        .project
        .pki()
        .join("partners")
        .join(partner)
        .join("people");
    let identity = refex::partner_client::Identity {
        cert: people.join(format!("{person}.pem")),
        key: people.join(format!("{person}.key")),
        jwks_private: people.join("unused"),
        ca: h.project.pki().join("ca.pem"),
    };
    let mut tls = refex::partner_client::tls_config(&identity).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(h.gw.running().api_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Posts a JSON body over the limit in chunks (no length declared, so only reading it finds
/// the excess), raw HTTP/1.1 as `person` of `partner`, and returns the answer's text.
async fn chunked_over_limit(h: &Harness, partner: &str, person: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = raw_as(h, partner, person).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    // 1.25 MiB, over the 1 MiB limit; the server may answer and close before the end.
    for _ in 0..20 {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        };
        if sent.await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A body whose chunked encoding is broken is the client's fault: `400`, never a `500` and
/// an error in the gateway's log (an outside review sent one to every route that reads a
/// body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400_not_a_500() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(None).await;
    for (partner, person, path) in [
        ("imara", "practitioner-1", "/v1/inbox/ack"),
        ("notts-police", "dpo-1", "/v1/subject-access"),
    ] {
        let mut stream = raw_as(&h, partner, person).await;
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut out),
        )
        .await;
        let answer = String::from_utf8_lossy(&out);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("urn:refex:problem:bad-request")
                && answer.contains("could not be read"),
            "{path}: {answer}"
        );
    }
    h.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_the_gateways_413_on_every_route_that_reads_one() {
    let h = Harness::start(None).await;
    for (partner, person, path) in [
        (
            "notts-police",
            "dsl-a",
            "/v1/reviews/ref_01M8ETBK31EKBSFJT1JHE0MZHT/decision",
        ),
        ("notts-police", "dpo-1", "/v1/subject-access"),
    ] {
        let answer = chunked_over_limit(&h, partner, person, path).await;
        // Before: the decision answered the web framework's own text ("Failed to buffer the
        // request body: length limit exceeded"), subject access a 400.
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(
            answer.contains("application/problem+json")
                && answer.contains("urn:refex:problem:payload-too-large"),
            "{path}: {answer}"
        );
        assert!(!answer.contains("Failed to buffer"), "{path}: {answer}");
    }
    // A subject-access body that is not JSON is refused for its media type, as a decision is.
    let res =
        h.gw.person("notts-police", "dpo-1")
            .post(h.gw.url("/v1/subject-access"))
            .body("<nhs_number>9434765919</nhs_number>")
            .header("content-type", "application/xml")
            .send()
            .await
            .unwrap();
    problem(res, 415, "unsupported-media-type").await;
    // A console form declared larger than the limit is refused before it is read, as a page
    // that still names who is signed in (before: the caller was not yet known there).
    let res =
        h.gw.person("notts-police", "dsl-a")
            .post(h.gw.url("/console/reviews/ref_01M8ETBK31EKBSFJT1JHE0MZHT/decision"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'a'; 1024 * 1024 + 1])
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 413);
    let page = res.text().await.unwrap();
    assert!(page.contains("Signed in as"), "{page}");
    h.gw.stop().await;
}

/// Durations too long to add to a clock (a setting of centuries, mistyped or hostile) are
/// "never", not a panic: housekeeping still runs its pass (it counts replicas over three
/// intervals), and a connection still carries requests under an idle time that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_of_centuries_never_panic() {
    let project = common::Project::with_extra_toml(
        "[limits]\nidle_timeout = \"200000000000years\"\niat_skew = \"200000000000years\"\n\
         [retention]\nhousekeeping_interval = \"200000000000years\"",
    );
    let gw = project.start().await;
    let rt = gw.running().runtime.clone();
    let report = refex::housekeeping::run_once(&rt).await.unwrap();
    assert_eq!(report.expired, 0);
    let police = gw.system("notts-police");
    for _ in 0..2 {
        let res = police.get(gw.url("/v1/inbox")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// Issue 20 (p99 under load): a submission's CPU work runs on the gateway's CPU threads, one
/// per core, below the priority of the threads that finish work already begun (the store's
/// writer, the WAL's sync, the reactor). Before, it ran on the blocking pool at the same
/// priority as the writer, so under load every stage was time-sliced against every other.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submissions_cpu_work_runs_below_the_writers_priority() {
    let h = Harness::start(None).await;
    let res = h
        .post_as(
            "notts-police",
            "notts-police",
            &common::partner::claims("notts-police", "imara", "cpu-jti-0001"),
        )
        .await;
    assert_eq!(res.status(), 202);
    let nice_of = |stat: &str| -> i64 {
        // Fields after the command's closing parenthesis: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    let expected = (own + i64::from(refex::cpu::NICENESS)).min(19);
    let cores = std::thread::available_parallelism().unwrap().get();
    // Other tests' gateways start CPU threads too; one just named may not have lowered its
    // priority yet, so look again for a while before failing.
    let mut cpu_threads = Vec::new();
    for _ in 0..50 {
        cpu_threads = cpu_thread_nice_values(nice_of);
        if cpu_threads.len() >= cores && cpu_threads.iter().all(|&n| n == expected) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "expected at least {cores} CPU threads at nice {expected} (the test's own is {own}), \
         found {cpu_threads:?}"
    );
}

/// The nice value of each of this process's threads named `refex-cpu-…`.
#[cfg(target_os = "linux")]
fn cpu_thread_nice_values(nice_of: impl Fn(&str) -> i64) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // the thread has ended since the directory was read
        };
        if comm.starts_with("refex-cpu-") {
            found.push(nice_of(&stat));
        }
    }
    found
}
