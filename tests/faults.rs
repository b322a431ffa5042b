//! Faults: the PostgreSQL store goes away under load (its database stops accepting
//! connections and every gateway connection is terminated, as in a server restart). Requests
//! meanwhile get `503` with `Retry-After`, never a `500` or a dropped connection; nothing is
//! half-written; and the gateway recovers by itself once the database is back. And the
//! embedded store's disk fills up (a small tmpfs): `507`, no corruption, recovery once freed.
//! (SIGKILL of a replica is in `tests/it/crash.rs`.)

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "it/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use sqlx::Connection as _;

/// A fresh database of its own (the outage must not touch other tests' schemas); its URL.
async fn fresh_database() -> Option<(String, String)> {
    // Reachability the tests' way (skip outside CI, fail under CI=true).
    let probe = common::pg::fresh_schema().await?;
    common::pg::drop_schema(&probe).await;
    let base = common::pg::base_url();
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    let name = format!("refex_fault_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let rest = base
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Some((format!("{prefix}/{name}{rest}"), name))
}

async fn admin(sql: String) {
    let mut conn = sqlx::PgConnection::connect(&common::pg::base_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Posts as the police: status, `Retry-After`, and the id of an accepted referral.
async fn post(gw: &common::Gateway, body: String) -> (u16, Option<String>, Option<String>) {
    let res =
        common::partner::post_jose(&gw.system("notts-police"), &gw.url("/v1/referrals"), body)
            .await;
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let v: Value = res.json().await.unwrap_or_default();
    (status, retry, v["id"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_gives_503s_writes_nothing_half_and_recovers_by_itself() {
    let Some((url, db)) = fresh_database().await else {
        return;
    };
    let project = common::Project::new();
    let gw = Arc::new(project.start_with(Some(url.clone())).await);
    let gateway = common::partner::gateway_keys(&gw.admin_url("/.well-known/jwks.json")).await;
    let pki = project.pki();
    let body =
        |i: usize| common::partner::police_body(&pki, &gateway, "imara", &format!("outage-{i:03}"));
    let mut accepted = Vec::new();
    for i in 0..5 {
        let (status, _, id) = post(&gw, body(i)).await;
        assert_eq!(status, 202);
        accepted.push(id.unwrap());
    }

    // The outage: no new connections, and every open one terminated, while requests arrive.
    admin(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await;
    let during: Vec<_> = (5..11)
        .map(|i| {
            let (gw, b) = (gw.clone(), body(i));
            tokio::spawn(async move { post(&gw, b).await })
        })
        .collect();
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
    let mut unavailable = 0;
    for t in during {
        let (status, retry, id) = t.await.unwrap();
        match status {
            202 => accepted.push(id.unwrap()),
            503 => {
                assert!(retry.is_some(), "503 without Retry-After");
                unavailable += 1;
            }
            other => panic!("during the outage a request got {other}"),
        }
    }
    let ready = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while the store is away");
    let (status, retry, _) = post(&gw, body(11)).await;
    assert_eq!((status, retry.is_some()), (503, true));
    eprintln!("{unavailable} of 6 requests in flight at the cut got 503");

    // Back: the gateway reconnects by itself (no restart, no operator).
    admin(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    // (503s now come at once from the breaker: the gateway notices within a probe or two.)
    let mut recovered = false;
    for i in 12..60 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let (status, _, id) = post(&gw, body(i)).await;
        if status == 202 {
            accepted.push(id.unwrap());
            recovered = true;
            break;
        }
        assert_eq!(status, 503);
    }
    assert!(recovered, "the gateway did not recover");
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Every 202 is whole; nothing is half-written.
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    for id in &accepted {
        let deliveries: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE referral_id = $1")
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert_eq!(deliveries, 1, "{id}");
    }
    let scalar = async |c: &mut sqlx::PgConnection, q: &'static str| -> i64 {
        sqlx::query_scalar::<_, i64>(q).fetch_one(c).await.unwrap()
    };
    let referrals = scalar(&mut c, "SELECT COUNT(*) FROM referrals").await;
    assert_eq!(
        scalar(&mut c, "SELECT COUNT(*) FROM deliveries").await,
        referrals
    );
    assert_eq!(
        scalar(&mut c, "SELECT COUNT(*) FROM replay_markers").await,
        referrals
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'accepted'"
        )
        .await,
        referrals
    );
    assert_eq!(
        scalar(&mut c, "SELECT size FROM audit_head WHERE id = 1").await,
        scalar(&mut c, "SELECT COUNT(*) FROM audit_events").await
    );
    drop(c);
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
    admin(format!("DROP DATABASE {db} WITH (FORCE)")).await;
}

/// Mounts a small tmpfs (root only); `None` where the machine does not allow it.
fn small_disk(dir: &std::path::Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Bytes free on the file system holding `path` (`df`).
fn available_bytes(path: &std::path::Path) -> usize {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the bytes available")
}

/// A tmpfs of `size` mounted at `dir` for the test, unmounted when the guard drops; `None`
/// when it cannot be mounted (and tmpfs is not required: outside `CI=true`).
fn mounted_small_disk(dir: &std::path::Path, size: &str) -> Option<Unmount> {
    let mounted = small_disk(dir, size);
    common::prereq::available(
        "tmpfs",
        if mounted {
            Ok(())
        } else {
            Err("cannot mount a tmpfs here (needs root)".into())
        },
    )
    .then(|| Unmount(dir.to_path_buf()))
}

/// Unmounts a test's tmpfs when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk filling up under many submissions at once (an outside review saw `500`s: a
/// writer connection whose `COMMIT` failed came back inside its transaction, and another
/// writer's failed `COMMIT` could leave the next one so before a second `BEGIN`): every
/// refusal is still `507` or `503` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_concurrent_submissions_is_never_a_500() {
    let project = common::Project::new();
    let disk = project.path().join("small-disk");
    let Some(_unmount) = mounted_small_disk(&disk, "6m") else {
        return;
    };
    let url = format!("sqlite://{}", disk.join("refex.db").display());
    let gw = Arc::new(project.start_with(Some(url)).await);
    let gateway = common::partner::gateway_keys(&gw.admin_url("/.well-known/jwks.json")).await;
    let pki = project.pki();
    let left = available_bytes(&disk);
    std::fs::write(
        disk.join("filler"),
        vec![0u8; left.saturating_sub(300 * 1024)],
    )
    .unwrap();
    let senders: Vec<Vec<String>> = (0..12)
        .map(|t| {
            (0..40)
                .map(|i| {
                    common::partner::police_body(&pki, &gateway, "imara", &format!("busy-{t}-{i}"))
                })
                .collect()
        })
        .collect();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|bodies| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for body in bodies {
                    let (status, retry, _) = post(&gw, body).await;
                    seen.push((status, retry.is_some()));
                    if status != 202 {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    assert!(seen.iter().any(|(s, _)| *s != 202), "the disk never filled");
    assert!(
        seen.iter()
            .all(|&(s, retry)| s == 202 || (matches!(s, 503 | 507) && retry)),
        "{seen:?}"
    );
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

/// SQLite on a disk that fills up: refusals are `507 store-full` (or `503`), each with
/// `Retry-After`, never a `500`; once space is freed the gateway accepts again by itself,
/// and the database is intact with every acknowledged referral whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_507_and_corrupts_nothing() {
    let project = common::Project::new();
    let disk = project.path().join("small-disk");
    let Some(_unmount) = mounted_small_disk(&disk, "4m") else {
        return;
    };
    let url = format!("sqlite://{}", disk.join("refex.db").display());
    let gw = project.start_with(Some(url.clone())).await;
    // All but 256 KiB of what the migrated store left is taken by a file the test frees
    // later (the store at start, with its migrations still in the write-ahead log, takes
    // ~1.6 MB, which grows with each migration).
    let filler = disk.join("filler");
    let left = available_bytes(&disk);
    std::fs::write(&filler, vec![0u8; left.saturating_sub(256 * 1024)]).unwrap();
    let gateway = common::partner::gateway_keys(&gw.admin_url("/.well-known/jwks.json")).await;
    let pki = project.pki();
    let body =
        |i: usize| common::partner::police_body(&pki, &gateway, "imara", &format!("full-{i:04}"));
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let (status, retry, id) = post(&gw, body(i)).await;
        match status {
            202 => accepted.push(id.unwrap()),
            507 | 503 => {
                assert!(retry.is_some(), "{status} without Retry-After");
                refused = Some(status);
                break;
            }
            other => panic!("a full disk gave {other}"),
        }
    }
    assert!(refused.is_some(), "the disk never filled");
    assert!(!accepted.is_empty());

    // Space again: the next referral is accepted without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, _, id) = post(&gw, body(5000)).await;
    assert_eq!(status, 202);
    accepted.push(id.unwrap());
    gw.stop().await;

    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    for id in &accepted {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE referral_id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 1, "{id}");
    }
    let referrals: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM referrals")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        referrals as usize,
        accepted.len(),
        "a refused referral was written"
    );
    let (size, events): (i64, i64) = (
        sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
            .fetch_one(&mut c)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
            .fetch_one(&mut c)
            .await
            .unwrap(),
    );
    assert_eq!(size, events);
}

/// The metric's value in a Prometheus text page (0 when absent).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Finding 11: while PostgreSQL is unreachable, requests are answered `503` at once by the
/// gate (before: each held for the pool's 5 s time-out, most until the database returned),
/// `/readyz` says why without waiting, and a refusal answered meanwhile is spooled and
/// reaches the audit log once the database is back (before: "could not record a rejection").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_answered_at_once_and_refusals_are_kept() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    let proxy = common::pgproxy::PgProxy::start("127.0.0.1:5432").await;
    let project = common::Project::new();
    let gw = project.start_with(Some(proxy.url(&url))).await;
    let gateway = common::partner::gateway_keys(&gw.admin_url("/.well-known/jwks.json")).await;
    let body = common::partner::police_body(&project.pki(), &gateway, "imara", "unreach-001");
    assert_eq!(post(&gw, body).await.0, 202);

    proxy.set_down(true);
    // A refusal decided without the store (not a JWE at all): answered, and its rejection
    // event kept although the store cannot take it.
    let res = common::partner::post_jose(
        &gw.system("notts-police"),
        &gw.url("/v1/referrals"),
        "not a JWE".into(),
    )
    .await;
    assert_eq!(res.status(), 400);
    let slug = res.json::<Value>().await.unwrap()["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:refex:problem:")
        .to_owned();
    let spool = project.path().join("data/spool/audit.jsonl");
    assert!(spool.exists(), "the rejection waits in the spool");
    assert_eq!(
        metric(&gw.metrics().await, "refex_store_breaker_open"),
        1.0,
        "meeting the unreachable store opened the breaker"
    );

    // While it is open: every request is refused by the gate, none waits for the store.
    let gated = metric(&gw.metrics().await, "refex_store_gate_refused_total");
    for path in ["/v1/inbox", "/v1/reviews", "/v1/whoami"] {
        let res = gw.system("imara").get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 503, "{path}");
        assert!(res.headers().contains_key("retry-after"));
    }
    assert_eq!(
        metric(&gw.metrics().await, "refex_store_gate_refused_total") - gated,
        3.0,
        "answered by the gate, without asking the store"
    );
    let ready = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let p: Value = ready.json().await.unwrap();
    assert!(
        p["problems"][0].as_str().unwrap().contains("unreachable"),
        "{p}"
    );

    // Back: the prober closes the breaker, and the spooled rejection reaches the audit log.
    proxy.set_down(false);
    let mut back = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status()
            == 200
            && !spool.exists()
            && !spool.with_file_name("audit.replaying").exists()
        {
            back = true;
            break;
        }
    }
    assert!(
        back,
        "the gateway did not notice the store was back and replay its spool"
    );
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let packed: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT packed_detail FROM audit_events WHERE kind = 'rejected'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    let details: Vec<String> = packed
        .iter()
        .map(|p| refex::store::packed::unpack(p).unwrap())
        .collect();
    assert!(
        details.iter().any(|d| d.contains(&slug)),
        "the spooled rejection ({slug}) is in the audit log: {details:?}"
    );
    drop(c);
    gw.stop().await;
    common::pg::drop_schema(&url).await;
}
