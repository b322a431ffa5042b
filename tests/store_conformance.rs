//! One conformance suite for every store backend: the same checks against SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use refex::store::records::{
    Acceptance, AuditRecord, DeliveryRecord, DeliveryStatus, HoldRecord, ReferralRecord,
};
use refex::store::{self, Backend, Store, StoreError, Table};

async fn conformance(url: &str, backend: Backend) {
    let store: Arc<dyn Store> = store::open(url).await.expect("open");
    assert_eq!(store.backend(), backend);
    store.ping().await.expect("ping after migrate");
    store.close().await;
    // Migrations are idempotent: a second open of the same store succeeds unchanged.
    let again = store::open(url).await.expect("reopen");
    again.ping().await.expect("ping after reopen");
    acceptance_is_atomic_and_replay_proof(again.as_ref()).await;
    again.close().await;
    group_commit_keeps_each_acceptance_whole(store::open(url).await.expect("reopen")).await;
}

fn acceptance(id: &str, jti: &str, held: bool) -> Acceptance {
    Acceptance {
        referral: ReferralRecord {
            id: id.into(),
            sender: "notts-police".into(),
            sender_ref: "NP/1".into(),
            referral_type: "domestic-abuse".into(),
            received_at: 1_795_000_000,
            lawful_basis: r#"{"article6":"public-task"}"#.into(),
            consent_status: "given".into(),
            consent_override: None,
            subject_informed: r#"{"status":"yes"}"#.into(),
            supersedes: None,
            justification_sealed: None,
        },
        jti: jti.into(),
        deliveries: vec![
            DeliveryRecord {
                id: format!("dlv_{id}_1"),
                recipient: "cambs-idva".into(),
                agreement: "isa".into(),
                status: if held {
                    DeliveryStatus::HeldForReview
                } else {
                    DeliveryStatus::Queued
                },
                sealed: (!held).then(|| "eyJ.ciphertext".into()),
            },
            DeliveryRecord {
                id: format!("dlv_{id}_2"),
                recipient: "gp-practice".into(),
                agreement: "isa2".into(),
                status: DeliveryStatus::Queued,
                sealed: Some("eyJ.other".into()),
            },
        ],
        hold: held.then(|| HoldRecord {
            sealed: "eyJ.held".into(),
            storage_key_id: "sk-1".into(),
        }),
        events: vec![AuditRecord {
            at: 1_795_000_000,
            kind: "accepted",
            referral_id: Some(id.into()),
            delivery_id: None,
            actor: Some("notts-police/system:case-system".into()),
            detail: serde_json::json!({ "type": "domestic-abuse" }),
        }],
        subjects: vec![],
    }
}

async fn acceptance_is_atomic_and_replay_proof(store: &dyn Store) {
    store
        .accept(acceptance("ref_A", "jti-1", true))
        .await
        .expect("accept");
    let states = store
        .delivery_states("ref_A", "notts-police")
        .await
        .unwrap()
        .unwrap();
    let statuses: Vec<(&str, DeliveryStatus)> = states
        .iter()
        .map(|s| (s.recipient.as_str(), s.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("cambs-idva", DeliveryStatus::HeldForReview),
            ("gp-practice", DeliveryStatus::Queued)
        ]
    );
    // Someone else's referral, or no referral: None (the API answers 404 to both).
    assert!(
        store
            .delivery_states("ref_A", "imara")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .delivery_states("ref_nope", "notts-police")
            .await
            .unwrap()
            .is_none()
    );

    // Replay: same sender and jti under a new id writes nothing at all.
    let before = counts(store).await;
    let err = store
        .accept(acceptance("ref_B", "jti-1", false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Replay), "{err}");
    assert_eq!(counts(store).await, before);

    // A failure half-way (duplicate delivery id) rolls everything back.
    let mut broken = acceptance("ref_C", "jti-2", false);
    broken.deliveries[1].id = broken.deliveries[0].id.clone();
    assert!(store.accept(broken.clone()).await.is_err());
    assert_eq!(counts(store).await, before);
    assert!(
        store
            .delivery_states("ref_C", "notts-police")
            .await
            .unwrap()
            .is_none()
    );

    // The same jti from another sender is not a replay.
    let mut other = acceptance("ref_D", "jti-1", false);
    other.referral.sender = "imara".into();
    store.accept(other).await.expect("other sender's jti");
}

/// Many acceptances at once share transactions (group commit), yet each stands or falls on
/// its own: a replay inside the same batch and a broken acceptance are refused alone, and
/// every audit event of those that stood is a leaf of one gapless tree.
async fn group_commit_keeps_each_acceptance_whole(store: Arc<dyn Store>) {
    let before = counts(store.as_ref()).await;
    let mut tasks = Vec::new();
    for i in 0..48 {
        let mut a = acceptance(&format!("ref_g{i}"), &format!("g-jti-{i}"), i % 4 == 0);
        if i == 7 {
            a.jti = "g-jti-6".into(); // the same sender and jti as its neighbour
        }
        if i == 9 {
            a.deliveries[1].id = a.deliveries[0].id.clone(); // fails half-way
        }
        let s = store.clone();
        tasks.push(tokio::spawn(async move { (i, s.accept(a).await) }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        let (i, result) = t.await.unwrap();
        if let Err(e) = result {
            refused.push((i, matches!(e, StoreError::Replay)));
        }
    }
    refused.sort();
    // Exactly one of 6 and 7 is the replay (whichever committed second); 9 is broken.
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|&(i, replay)| (i == 6 || i == 7) && replay)
    );
    assert!(refused.contains(&(9, false)), "{refused:?}");
    let after = counts(store.as_ref()).await;
    let stood = 46;
    assert_eq!(after[0] - before[0], stood, "referrals");
    assert_eq!(after[1] - before[1], 2 * stood, "deliveries");
    assert_eq!(after[3] - before[3], stood, "replay markers");
    assert_eq!(after[4] - before[4], stood, "one audit event each");
    assert_eq!(store.audit_size().await.unwrap() as i64, after[4]);
    store.close().await;
}

async fn counts(store: &dyn Store) -> Vec<i64> {
    let mut out = Vec::new();
    for t in [
        Table::Referrals,
        Table::Deliveries,
        Table::Holds,
        Table::ReplayMarkers,
        Table::AuditEvents,
    ] {
        out.push(store.count_rows(t).await.unwrap());
    }
    out
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/refex.db").display()
    );
    conformance(&url, Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    conformance(&url, Backend::Postgres).await;
    common::pg::drop_schema(&url).await;
}

#[tokio::test]
async fn unknown_store_schemes_are_refused() {
    let err = store::open("mysql://localhost/refex").await.unwrap_err();
    assert!(err.to_string().contains("mysql"), "{err}");
}

/// Read-then-write transactions (a first fetch reads, then marks delivered) running beside
/// other writers must never fail: on SQLite a deferred transaction would get SQLITE_BUSY.
async fn concurrent_read_then_write(store: Arc<dyn Store>) {
    for i in 0..40 {
        let mut a = acceptance(&format!("ref_rw{i}"), &format!("rw-jti-{i}"), false);
        a.deliveries.truncate(1);
        a.deliveries[0].id = format!("dlv_rw{i}");
        store.accept(a).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.fetch_delivery("cambs-idva", &format!("dlv_rw{i}"), 1_795_000_100, "t")
                .await
                .map(|o| o.is_some())
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut a = acceptance(&format!("ref_rx{i}"), &format!("rx-jti-{i}"), false);
            a.deliveries.truncate(1);
            a.deliveries[0].id = format!("dlv_rx{i}");
            s.accept(a).await.map(|_| true)
        }));
    }
    for t in tasks {
        assert!(
            t.await
                .unwrap()
                .expect("no transaction may fail under concurrency")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_then_write_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("rw.db").display());
    concurrent_read_then_write(store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_then_write_under_concurrency() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    concurrent_read_then_write(store::open(&url).await.unwrap()).await;
    common::pg::drop_schema(&url).await;
}
