//! A store written by the previous release (format 1) migrates to this one on open, on
//! SQLite and PostgreSQL: its rows still read as typed records (a lawful basis earlier builds
//! accepted included), retention starts from each delivery's `queued` event, a rejection's
//! referral-level reason moves to its delivery, the sender keeps its subject index, and its
//! audit log still verifies.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use refex::audit::tree;
use refex::lawful::{LawfulBasis, Schedule1};
use refex::store::{self, records::SubjectMatch};
use sqlx::Connection as _;

const REFERRAL: &str = "ref_01J00000000000000000000001";
/// A subject's keyed hash in the old release's index (64 hex digits, as the gateway writes them).
const SUBJECT: &str = "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";
const QUEUED: &str = "dlv_01J00000000000000000000002";
const REJECTED: &str = "dlv_01J00000000000000000000003";

/// An audit event as the previous release wrote it: at, kind, delivery, actor, detail.
type OldEvent = (
    i64,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

/// Audit events as the previous release wrote them.
fn old_events() -> Vec<OldEvent> {
    vec![
        (
            1_790_000_000,
            "accepted",
            None,
            Some("notts-police/system:case-system"),
            r#"{"type":"support-referral","sender":"notts-police","lawful_basis":{"article6":"consent","article9":"explicit-consent","dpa2018_schedule1":"explicit-consent"},"consent":{"status":"given","override":null},"subject_informed":{"status":"yes"},"recipients":[{"to":"empower-cic","agreement":"ISA 2024/03"},{"to":"imara","agreement":"isa2"}]}"#,
        ),
        (
            1_790_000_000,
            "minimised",
            Some(QUEUED),
            Some("notts-police/system:case-system"),
            r#"{"to":"empower-cic","view":"support-service/support-referral","disclosed":["/person/name/given"],"withheld":[]}"#,
        ),
        (
            1_790_000_100,
            "queued",
            Some(QUEUED),
            Some("notts-police/person:dsl-b"),
            r#"{"to":"empower-cic"}"#,
        ),
        (
            1_790_000_100,
            "reviewed",
            Some(REJECTED),
            Some("notts-police/person:dsl-b"),
            r#"{"to":"imara","decision":"reject"}"#,
        ),
    ]
}

/// Writes a format-1 store with one referral: one delivery released to empower-cic, one
/// rejected for imara, its events hash-chained into the tree as the previous release did.
async fn previous_release(url: &str) {
    sqlx::any::install_default_drivers();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(if url.starts_with("sqlite") {
        "migrations/sqlite"
    } else {
        "migrations/postgres"
    });
    let migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    migrator.run_to(6, &mut conn).await.unwrap();
    for sql in [
        format!(
            "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, lawful_basis, \
             consent_status, consent_override, subject_informed, supersedes, review_reason_sealed) VALUES \
             ('{REFERRAL}', 'notts-police', 'NP/1', 'support-referral', 1790000000, \
             '{{\"article6\":\"consent\",\"article9\":\"explicit-consent\",\"dpa2018_schedule1\":\"explicit-consent\"}}', \
             'given', NULL, '{{\"status\":\"yes\"}}', NULL, 'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.sealed-reason.aXY.Y3Q.dGFn')"
        ),
        format!(
            "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, sealed, bytes, created_at, \
             updated_at, inbox_pos) VALUES ('{QUEUED}', '{REFERRAL}', 'empower-cic', 'ISA 2024/03', 'queued', 'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.x.aXY.Y3Q.dGFn', 5, \
             1790000000, 1790000100, 1)"
        ),
        format!(
            "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, created_at, updated_at) \
             VALUES ('{REJECTED}', '{REFERRAL}', 'imara', 'isa2', 'rejected-by-review', 1790000000, 1790000100)"
        ),
        "INSERT INTO inbox_counters (recipient, next) VALUES ('empower-cic', 1)".to_owned(),
        format!(
            "INSERT INTO subject_index (referral_id, subject) VALUES ('{REFERRAL}', '{SUBJECT}')"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut hashes = Vec::new();
    for (idx, (at, kind, delivery, actor, detail)) in old_events().into_iter().enumerate() {
        let text = |v: Option<&str>| {
            v.map_or("null".to_owned(), |s| {
                serde_json::Value::from(s).to_string()
            })
        };
        let leaf = format!(
            "{{\"idx\":{idx},\"at\":{at},\"kind\":\"{kind}\",\"referral_id\":\"{REFERRAL}\",\"delivery_id\":{},\"actor\":{},\"detail\":{detail}}}",
            text(delivery),
            text(actor)
        );
        hashes.push(tree::leaf_hash(leaf.as_bytes()));
        let q = sqlx::query(
            "INSERT INTO audit_events (at, kind, referral_id, delivery_id, actor, detail, idx, leaf) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(at)
        .bind(kind)
        .bind(REFERRAL)
        .bind(delivery)
        .bind(actor)
        .bind(detail)
        .bind(idx as i64)
        .bind(leaf);
        q.execute(&mut conn).await.unwrap();
    }
    for ((level, idx), hash) in tree::append(0, &Default::default(), &hashes).unwrap() {
        sqlx::query("INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)")
            .bind(level as i32)
            .bind(idx as i64)
            .bind(hex::encode(hash))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 1")
        .bind(hashes.len() as i64)
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Migration 0011 drops nothing it cannot keep: a node that is not exactly 64 hex characters,
/// or an event of a live referral without a leaf, refuses it and 0011 changes nothing.
async fn store_format_refuses_what_it_would_lose(url: &str) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let node: String =
        sqlx::query_scalar("SELECT hash FROM audit_nodes WHERE level = 0 AND idx = 0")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let leaf: String = sqlx::query_scalar("SELECT leaf FROM audit_events WHERE idx = 0")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    for (tamper, what) in [
        (
            "UPDATE audit_nodes SET hash = ' ' || substr(hash, 2) WHERE level = 0 AND idx = 0",
            "a node with a space",
        ),
        (
            "UPDATE audit_events SET leaf = NULL WHERE idx = 0",
            "a live event without its leaf",
        ),
    ] {
        sqlx::query(tamper).execute(&mut conn).await.unwrap();
        assert!(store::open(url).await.is_err(), "migrated over {what}");
        // Still before 0011: the detail column is there.
        sqlx::query("SELECT detail FROM audit_events")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_nodes SET hash = $1 WHERE level = 0 AND idx = 0")
            .bind(&node)
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET leaf = $1 WHERE idx = 0")
            .bind(&leaf)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let _ = conn.close().await;
}

async fn migrates(url: String) {
    previous_release(&url).await;
    store_format_refuses_what_it_would_lose(&url).await;
    let store = store::open(&url).await.expect("migrates on open");
    store.ping().await.expect("at this build's format");
    let id = REFERRAL.parse().unwrap();
    let detail = store.referral_detail(&id).await.unwrap().unwrap();
    // A basis earlier builds accepted still reads (and `lawful::check` would refuse it now).
    let LawfulBasis::UkGdpr(basis) = detail.referral.lawful_basis else {
        panic!("uk-gdpr")
    };
    assert_eq!(basis.schedule1, Some(Schedule1::LegacyExplicitConsent));
    assert!(refex::lawful::check(&detail.referral.lawful_basis, false).is_err());
    assert_eq!(detail.events.len(), 4);
    let queued = detail
        .deliveries
        .iter()
        .find(|d| d.id.as_str() == QUEUED)
        .unwrap();
    assert_eq!(
        queued.queued_at,
        Some(refex::timestamp::UnixTime::from_secs(1_790_000_100)),
        "from its queued event"
    );
    // An agreement reference an earlier configuration used (not a slug) still reads, in
    // its row and in the events that carry it.
    assert_eq!(queued.agreement.as_str(), "ISA 2024/03");
    let states = store
        .delivery_states(&id, &"notts-police".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        states
            .iter()
            .find(|s| s.recipient.as_str() == "imara")
            .unwrap()
            .reason_sealed
            .as_ref()
            .map(refex::envelope::sealed::Sealed::as_str),
        Some("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.sealed-reason.aXY.Y3Q.dGFn")
    );
    assert_eq!(
        store
            .subject_matches(
                &[SUBJECT.parse().unwrap()],
                &"notts-police".parse().unwrap()
            )
            .await
            .unwrap(),
        vec![SubjectMatch::Sent(id.clone())]
    );
    assert!(
        store
            .subject_matches(&[SUBJECT.parse().unwrap()], &"empower-cic".parse().unwrap())
            .await
            .unwrap()
            .is_empty(),
        "old keys came from the full payload: kept for the sender only"
    );
    // The log written by the previous release still verifies.
    let mut export = Vec::new();
    refex::audit::export::export(store.as_ref(), "refex", &mut export)
        .await
        .unwrap();
    let jwks = refex::envelope::keys::KeySet::parse_public(br#"{"keys":[]}"#, "none").unwrap();
    let verified =
        refex::audit::verify::verify(&String::from_utf8(export).unwrap(), &jwks, None).unwrap();
    assert_eq!(verified.events, 4);
    store.close().await;
}

#[tokio::test]
async fn a_previous_release_store_migrates_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    migrates(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("old.db").display()
    ))
    .await;
}

#[tokio::test]
async fn a_previous_release_store_migrates_on_postgres() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    migrates(url.clone()).await;
    common::pg::drop_schema(&url).await;
}

/// `refex --version` names the store schema the binary migrates to, and it is the highest
/// migration of both backends, which have the same migrations.
#[test]
fn the_schema_version_is_the_highest_migration_of_both_backends() {
    let list = |backend: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(common::repo().join("migrations").join(backend))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (sqlite, postgres) = (list("sqlite"), list("postgres"));
    assert_eq!(sqlite, postgres, "both backends have the same migrations");
    let highest: u32 = sqlite.last().unwrap()[..4].parse().unwrap();
    assert_eq!(highest, refex::cli::STORE_SCHEMA);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refex"))
        .arg("--version")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("store schema {highest}")), "{said}");
}

/// The last migration of 0.2.0. 0.1.0 (schema 7) refuses a schema with migrations it does not
/// know, so the update to 0.2.0 cannot be rolling whatever its migrations do (CHANGELOG.md
/// says so); 0.2.0 is the first release that runs on a later release's schema, so from here
/// on every migration only adds. Raise this only when a major release says so.
const LAST_OF_0_2_0: u32 = 16;

/// Migrations after 0.2.0's only add: a rolling update runs the previous release on the new
/// schema, and a rollback runs it there for good.
#[test]
fn migrations_after_0_2_0_are_expand_only() {
    for backend in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(common::repo().join("migrations").join(backend)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let n: u32 = name[..4].parse().unwrap();
            if n <= LAST_OF_0_2_0 {
                continue;
            }
            let sql: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for forbidden in [
                "DROP TABLE",
                "DROP COLUMN",
                "RENAME",
                "ALTER COLUMN",
                "DROP INDEX",
                "DELETE FROM",
                "UPDATE ",
            ] {
                assert!(
                    !sql.contains(forbidden),
                    "{backend}/{name} uses {forbidden}: migrations after release 0.1 only add"
                );
            }
            for line in sql.lines().filter(|l| l.contains("ADD COLUMN")) {
                assert!(
                    !line.contains("NOT NULL") || line.contains("DEFAULT"),
                    "{backend}/{name}: a NOT NULL column added without a default breaks the previous release's inserts"
                );
            }
        }
    }
}

/// This release opens a store a newer release migrated further (expand-only): a rollback,
/// or an old replica restarting during a rolling update.
async fn runs_on_a_newer_schema(url: String) {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::repo().join("migrations").join(backend)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("0099_a_later_release.sql"),
        "CREATE TABLE later_release (id TEXT PRIMARY KEY);\nALTER TABLE referrals ADD COLUMN later_note TEXT;\n",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    migrator.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let store = store::open(&url)
        .await
        .expect("this release opens a newer, expand-only schema");
    store.ping().await.unwrap();
    let p: refex::identity::PartnerId = "notts-police".parse().unwrap();
    assert!(store.sent_referrals(&p, 10).await.unwrap().is_empty());
    assert!(store.held_referrals(&p).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn this_release_runs_on_a_newer_schema_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    runs_on_a_newer_schema(url).await;
}

#[tokio::test]
async fn this_release_runs_on_a_newer_schema_on_postgres() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    runs_on_a_newer_schema(url.clone()).await;
    common::pg::drop_schema(&url).await;
}
