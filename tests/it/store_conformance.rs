//! One conformance suite for every store: the same checks, one function per port, against
//! SQLite, PostgreSQL and the embedded store in memory; and on the in-memory store, planned
//! failures of chosen statements showing that every operation is whole or nothing.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use refex::audit::event::{self as ev, ActorRef, AuditEvent, ConsentRecord, EventKind};
use refex::envelope::sealed::Sealed;
use refex::identity::PartnerId;
use refex::ids::{DeliveryId, Jti, ReferralId, ReplicaId, SubjectHash};
use refex::intake::ConsentStatus;
use refex::intake::claims::{InformedStatus, SubjectInformed};
use refex::lawful::{Article6, Article9, LawfulBasis, Schedule1};
use refex::lifecycle::DeliveryStatus;
use refex::store::records::{
    AcceptOutcome, Acceptance, AckOutcome, AuditRecord, CheckpointRecord, DecideOutcome,
    DeliveryRecord, HoldRecord, OnceNotice, PriorAcceptance, ReferralRecord, Rejection, Release,
    ReviewCommit, SubjectMatch,
};
use refex::store::sql::Faults;
use refex::store::{self, Backend, SqliteStore, Store, StoreError, Table};
use refex::timestamp::UnixTime;
use sqlx::Connection as _;

/// Every port's conformance, in turn, on one store.
async fn ports_conform(store: Arc<dyn Store>) {
    intake_port_conforms(store.clone()).await;
    review_port_conforms(store.as_ref()).await;
    housekeeping_port_conforms(store.as_ref()).await;
    inbox_port_conforms(store.clone()).await;
    audit_port_conforms(store.as_ref()).await;
}

/// The intake port: acceptances whole and replay-proof, alone and in groups; subject keys.
async fn intake_port_conforms(store: Arc<dyn Store>) {
    acceptance_is_atomic_and_replay_proof(store.as_ref()).await;
    subject_keys_are_scoped_to_what_reached_each_partner(store.as_ref()).await;
    group_commit_keeps_each_acceptance_whole(store).await;
}

/// The review port: a decision whole and final.
async fn review_port_conforms<S: Store + ?Sized>(store: &S) {
    a_decision_is_whole_and_final(store).await;
}

/// The housekeeping port: expiry, replay markers, replicas and notices, purge, space.
async fn housekeeping_port_conforms<S: Store + ?Sized>(store: &S) {
    expiry_counts_from_entering_the_inbox(store).await;
    replay_markers_are_purged_by_the_database_clock(store).await;
    replicas_are_counted_and_notices_claimed_once(store).await;
    a_purge_larger_than_a_batch_purges_everything_due(store).await;
    store.reclaim_space().await.unwrap();
}

/// The inbox port: fetches and acknowledgements sharing commits, each answered alone.
async fn inbox_port_conforms(store: Arc<dyn Store>) {
    inbox_writes_share_commits_and_each_gets_its_own_answer(store).await;
}

/// The audit port: every event a leaf of one tree, whose leaves and nodes read back;
/// checkpoints stored once per size.
async fn audit_port_conforms<S: Store + ?Sized>(store: &S) {
    let size = store.audit_size().await.unwrap();
    let e = AuditRecord::new(
        t(1_795_000_900),
        Some(police()),
        AuditEvent::Rejected(ev::Rejected {
            reason: "audit port".into(),
        }),
    );
    store.record_event(&e).await.unwrap();
    assert_eq!(store.audit_size().await.unwrap(), size + 1);
    let leaves = store.audit_leaves(size, 10).await.unwrap();
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].idx, size);
    assert_eq!(
        leaves[0].leaf.as_deref(),
        Some(e.leaf(size as i64).as_str())
    );
    let nodes = store
        .audit_nodes(&[(0, size), (0, size + 5)])
        .await
        .unwrap();
    assert_eq!(nodes.get(&(0, size)), Some(&leaves[0].hash));
    assert_eq!(
        nodes.len(),
        1,
        "a node never written is absent, not invented"
    );
    let checkpoint = CheckpointRecord {
        size: size + 1,
        root: "root".into(),
        at: t(1_795_000_901),
        signed: "eyJ.checkpoint".into(),
    };
    store.save_checkpoint(&checkpoint).await.unwrap();
    let again = CheckpointRecord {
        signed: "eyJ.other".into(),
        ..checkpoint.clone()
    };
    store.save_checkpoint(&again).await.unwrap();
    let stored = store.audit_checkpoints().await.unwrap();
    let of_size: Vec<_> = stored.iter().filter(|c| c.size == size + 1).collect();
    assert_eq!(of_size.len(), 1);
    assert_eq!(of_size[0].signed, "eyJ.checkpoint", "the first stands");
    // A detail longer than any packed one may be (a pointer per item of a very long array)
    // is kept as its leaf text, and reads back whole.
    let base = store.audit_size().await.unwrap();
    let long = AuditRecord::new(
        t(1_795_000_900),
        Some(police()),
        AuditEvent::Rejected(ev::Rejected {
            reason: "r".repeat(refex::store::packed::MAX_DETAIL + 1),
        }),
    );
    store.record_event(&long).await.unwrap();
    let kept = store.audit_leaves(base, 1).await.unwrap();
    let text = long.leaf(base as i64);
    assert_eq!(kept[0].leaf.as_deref(), Some(text.as_str()));
    assert_eq!(kept[0].hash, refex::audit::tree::leaf_hash(text.as_bytes()));
}

/// What only a store on disk (or a server) shows: migrations idempotent, space returned,
/// the schema's own constraints, unreadable rows refused.
async fn on_disk_conforms(url: &str, backend: Backend) {
    let store: Arc<dyn Store> = store::open(url).await.expect("open");
    assert_eq!(store.backend(), backend);
    store.ping().await.expect("ping after migrate");
    store.close().await;
    // Migrations are idempotent: a second open of the same store succeeds unchanged.
    let again = store::open(url).await.expect("reopen");
    again.ping().await.expect("ping after reopen");
    ports_conform(again.clone()).await;
    again.close().await;
    if backend == Backend::Sqlite {
        // The space the purge freed went back to the file system.
        let mut conn = raw(url).await;
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, 2, "incremental auto-vacuum");
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(free, 0, "freed pages returned");
    }
    the_database_refuses_unknown_statuses_and_kinds(url).await;
    unreadable_rows_are_errors_never_dropped(url).await;
}

/// The embedded store in memory, with a fault plan.
async fn in_memory(faults: &Faults) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::in_memory(store::group_commit::Options::default(), faults.clone())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn in_memory_store_conforms() {
    let store = in_memory(&Faults::armed()).await;
    assert_eq!(store.backend(), Backend::Sqlite);
    store.ping().await.unwrap();
    ports_conform(store.clone()).await;
    store.close().await;
}

/// An inbox batch reads a delivery's ciphertext only for a fetch by its own recipient:
/// naming another partner's delivery, or acknowledging one, costs what an unknown id does
/// (an outside review found a sender could make every inbox wait by acknowledging, in
/// pages of 500, the large deliveries it had sent to others). The statement that reads
/// ciphertext is made to fail: everything else still succeeds.
#[tokio::test]
async fn an_inbox_batch_reads_ciphertext_only_for_its_own_recipients_fetches() {
    let faults = Faults::armed();
    let store = in_memory(&faults).await;
    store.accept(acceptance(7, "jti-own", false)).await.unwrap();
    faults.fail(
        "SELECT id, sealed, sealed_packed",
        0,
        usize::MAX,
        StoreError::Full("ciphertext read".into()),
    );
    let (owner, other, at) = (
        p("cambs-idva"),
        p("childrens-social-care"),
        t(1_795_000_100),
    );
    let ids = [did(7, 1), did(7, 2)];
    let outcomes = store
        .ack_deliveries(&other, &ids, at, &police())
        .await
        .unwrap();
    assert_eq!(outcomes, [AckOutcome::NotFound, AckOutcome::NotFound]);
    assert_eq!(
        store
            .fetch_delivery(&other, &ids[0], at, &police())
            .await
            .unwrap(),
        None
    );
    // The owner's fetch is the one that reads it.
    assert!(
        store
            .fetch_delivery(&owner, &ids[0], at, &police())
            .await
            .is_err()
    );
    faults.clear();
    assert!(
        store
            .fetch_delivery(&owner, &ids[0], at, &police())
            .await
            .unwrap()
            .is_some()
    );
    faults.fail(
        "SELECT id, sealed, sealed_packed",
        0,
        usize::MAX,
        StoreError::Full("ciphertext read".into()),
    );
    let outcomes = store
        .ack_deliveries(&owner, &ids[..1], at, &police())
        .await
        .unwrap();
    assert_eq!(outcomes, [AckOutcome::Acknowledged]);
    faults.clear();
    store.close().await;
}

/// A planned failure of any statement an acceptance, a decision, a withdrawal, an
/// acknowledgement or an expiry makes leaves the store exactly as it was; the same
/// operation then succeeds once the fault has passed.
#[tokio::test]
async fn a_failed_statement_leaves_nothing_half_written() {
    let faults = Faults::armed();
    let store = in_memory(&faults).await;
    let full = || StoreError::Full("planned".into());
    // An acceptance: its batch fails, then its own savepoint fails too: refused whole.
    for needle in [
        "INSERT INTO replay_markers",
        "INSERT INTO referrals",
        "INSERT INTO subject_keys",
        "INSERT INTO deliveries",
        "INSERT INTO holds",
        "UPDATE audit_head",
        "INSERT INTO audit_events",
        "INSERT INTO audit_nodes",
    ] {
        let before = counts(store.as_ref()).await;
        let size = store.audit_size().await.unwrap();
        faults.fail(needle, 0, 2, full());
        let refused = store.accept(acceptance(1, "jti-f1", true)).await;
        assert!(refused.is_err(), "{needle}: {refused:?}");
        assert_eq!(counts(store.as_ref()).await, before, "{needle}");
        assert_eq!(store.audit_size().await.unwrap(), size, "{needle}");
        faults.clear();
    }
    // Failing once, the batch is written again one savepoint each, and stands.
    faults.fail("INSERT INTO deliveries", 0, 1, full());
    assert_eq!(
        store.accept(acceptance(1, "jti-f1", true)).await.unwrap(),
        AcceptOutcome::Accepted
    );
    // A failed commit: nothing written, the error reaches the caller.
    let before = counts(store.as_ref()).await;
    faults.fail("COMMIT", 0, 1, full());
    assert!(store.accept(acceptance(2, "jti-f2", false)).await.is_err());
    assert_eq!(counts(store.as_ref()).await, before);
    assert_eq!(
        store.accept(acceptance(2, "jti-f2", false)).await.unwrap(),
        AcceptOutcome::Accepted
    );

    // A decision failing at any statement leaves the referral held, undecided.
    let lead: ActorRef = "notts-police/person:dsl-b".parse().unwrap();
    let decision = ReviewCommit {
        referral_id: rid(1),
        actor: lead.clone(),
        at: t(1_795_000_050),
        releases: vec![Release {
            delivery: did(1, 1),
            recipient: p("cambs-idva"),
            sealed: jwe("released"),
            subjects: vec![sh("subject-idva")],
        }],
        rejections: vec![],
        events: vec![
            AuditRecord::new(
                t(1_795_000_050),
                Some(lead.clone()),
                AuditEvent::Rejected(ev::Rejected {
                    reason: "stand-in".into(),
                }),
            )
            .about(&rid(1)),
        ],
        withdraws: None,
    };
    for needle in [
        "DELETE FROM holds",
        "UPDATE deliveries SET status = $1, sealed = NULL, sealed_packed = $2",
        "INSERT INTO inbox_counters",
        "INSERT INTO subject_keys",
        "INSERT INTO audit_events",
        "COMMIT",
    ] {
        faults.fail(needle, 0, 1, full());
        assert!(store.decide_hold(&decision).await.is_err(), "{needle}");
        assert!(
            store.hold_sealed(&rid(1)).await.unwrap().is_some(),
            "{needle}: still held"
        );
        let states = store
            .delivery_states(&rid(1), &p("notts-police"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(states[0].status, DeliveryStatus::HeldForReview, "{needle}");
        faults.clear();
    }
    assert_eq!(
        store.decide_hold(&decision).await.unwrap(),
        DecideOutcome::Decided
    );

    // A withdrawal failing half-way (the second delivery) withdraws nothing.
    faults.fail(
        "UPDATE deliveries SET status = $1, sealed = NULL",
        1,
        1,
        full(),
    );
    let withdrawn = store
        .withdraw(&rid(2), &p("notts-police"), t(1_795_000_060), &police())
        .await;
    assert!(withdrawn.is_err());
    let states = store
        .delivery_states(&rid(2), &p("notts-police"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        states.iter().all(|s| s.status == DeliveryStatus::Queued),
        "{states:?}"
    );
    faults.clear();

    // An acknowledgement whose audit event cannot be written is not acknowledged.
    let reader = p("cambs-idva");
    faults.fail("INSERT INTO audit_events", 0, 2, full());
    assert!(
        store
            .ack_delivery(&reader, &did(2, 1), t(1_795_000_070), &police())
            .await
            .is_err()
    );
    let (status, sealed) = store
        .peek_delivery(&reader, &did(2, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, DeliveryStatus::Queued);
    assert!(sealed.is_some(), "the ciphertext is still there");
    faults.clear();

    // An expiry failing at its audit event expires nothing.
    faults.fail("INSERT INTO audit_events", 0, 1, full());
    assert!(
        store
            .expire_deliveries(&reader, t(1_795_100_000), t(1_795_100_000))
            .await
            .is_err()
    );
    let (status, _) = store
        .peek_delivery(&reader, &did(2, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, DeliveryStatus::Queued);
    faults.clear();
    assert_eq!(
        store
            .expire_deliveries(&reader, t(1_795_100_000), t(1_795_100_000))
            .await
            .unwrap(),
        2,
        "the released delivery and the queued one"
    );
    store.close().await;
}

/// Fetches and acknowledgements arriving together share commits (inbox group commit), and
/// each is applied as if alone, in order: of two acknowledgements of one delivery exactly
/// one acknowledges it; a fetch of another partner's delivery finds nothing; one event each.
async fn inbox_writes_share_commits_and_each_gets_its_own_answer(store: Arc<dyn Store>) {
    let reader = p("cambs-idva");
    for i in 0..24 {
        let mut a = acceptance(3000 + i, &format!("ib-jti-{i}"), false);
        a.deliveries.truncate(1);
        store.accept(a).await.unwrap();
    }
    let events_before = counts(store.as_ref()).await[4];
    let fetches: Vec<_> = (0..24)
        .map(|i| {
            let (s, reader) = (store.clone(), reader.clone());
            tokio::spawn(async move {
                s.fetch_delivery(&reader, &did(3000 + i, 1), t(1_795_000_200), &police())
                    .await
            })
        })
        .collect();
    for f in fetches {
        assert!(f.await.unwrap().unwrap().is_some(), "fetched");
    }
    // Someone else's inbox: nothing, whatever shares the commit.
    let stranger = store
        .fetch_delivery(
            &p("notts-police"),
            &did(3000, 1),
            t(1_795_000_201),
            &police(),
        )
        .await
        .unwrap();
    assert_eq!(stranger, None);
    let acks: Vec<_> = (0..24)
        .flat_map(|i| [i, i])
        .map(|i| {
            let (s, reader) = (store.clone(), reader.clone());
            tokio::spawn(async move {
                s.ack_delivery(&reader, &did(3000 + i, 1), t(1_795_000_300), &police())
                    .await
            })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for a in acks {
        let outcome = a.await.unwrap().unwrap();
        *outcomes.entry(format!("{outcome:?}")).or_insert(0) += 1;
    }
    assert_eq!(outcomes.get("Acknowledged"), Some(&24), "{outcomes:?}");
    assert_eq!(
        outcomes.get("AlreadyAcknowledged"),
        Some(&24),
        "{outcomes:?}"
    );
    let events_after = counts(store.as_ref()).await[4];
    assert_eq!(
        events_after - events_before,
        48,
        "one fetched and one acknowledged each"
    );
    assert_eq!(store.audit_size().await.unwrap() as i64, events_after);
    // Fetching an acknowledged delivery finds nothing.
    let gone = store
        .fetch_delivery(&reader, &did(3000, 1), t(1_795_000_400), &police())
        .await
        .unwrap();
    assert_eq!(gone, None);
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A test's subject, named, as the keyed hash the store indexes by.
fn sh(name: &str) -> SubjectHash {
    use sha2::Digest as _;
    SubjectHash::of_mac(&sha2::Sha256::digest(name.as_bytes()).into())
}

/// A test's ciphertext, named: shaped like a compact JWE, as the store requires.
fn jwe(name: &str) -> Sealed {
    Sealed::parse(format!(
        "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.{name}.aXY.Y3Q.dGFn"
    ))
    .unwrap()
}

/// A test's short token as a `jti` (padded with `-` to the 8 characters one needs).
fn j(token: &str) -> Jti {
    format!("{token:-<8}").parse().unwrap()
}

/// The instant `secs` seconds after the epoch.
fn t(secs: i64) -> UnixTime {
    UnixTime::from_secs(secs)
}

fn rid(n: u64) -> ReferralId {
    ReferralId::parse(&format!("ref_{n:026}")).unwrap()
}

fn did(n: u64, k: u64) -> DeliveryId {
    DeliveryId::parse(&format!("dlv_{:026}", n * 10 + k)).unwrap()
}

fn p(id: &str) -> PartnerId {
    id.parse().unwrap()
}

fn police() -> ActorRef {
    "notts-police/system:case-system".parse().unwrap()
}

fn acceptance(n: u64, jti: &str, held: bool) -> Acceptance {
    let id = rid(n);
    Acceptance {
        referral: ReferralRecord {
            id: id.clone(),
            sender: p("notts-police"),
            sender_ref: "NP/1".into(),
            referral_type: "domestic-abuse".parse().unwrap(),
            received_at: t(1_795_000_000),
            lawful_basis: LawfulBasis::uk_gdpr(
                Article6::PublicTask,
                Article9::SubstantialPublicInterest,
                Some(Schedule1::Para18SafeguardingChildren),
            ),
            consent: ConsentRecord {
                status: ConsentStatus::Given,
                override_: None,
            },
            subject_informed: SubjectInformed {
                status: InformedStatus::Yes,
                reason: None,
            },
            supersedes: None,
            justification_sealed: None,
        },
        jti: j(jti),
        digest: format!("digest-of-{jti}"),
        deliveries: vec![
            DeliveryRecord {
                id: did(n, 1),
                recipient: p("cambs-idva"),
                agreement: "isa".parse().unwrap(),
                status: if held {
                    DeliveryStatus::HeldForReview
                } else {
                    DeliveryStatus::Queued
                },
                sealed: (!held).then(|| jwe("ciphertext")),
                subjects: if held {
                    vec![]
                } else {
                    vec![sh("subject-idva")]
                },
            },
            DeliveryRecord {
                id: did(n, 2),
                recipient: p("gp-practice"),
                agreement: "isa2".parse().unwrap(),
                status: DeliveryStatus::Queued,
                sealed: Some(jwe("other")),
                subjects: vec![sh("subject-gp")],
            },
        ],
        hold: held.then(|| HoldRecord {
            sealed: jwe("held"),
            storage_key_id: "sk-1".into(),
        }),
        events: vec![
            AuditRecord::new(
                t(1_795_000_000),
                Some(police()),
                AuditEvent::Rejected(ev::Rejected {
                    reason: "stand-in".into(),
                }),
            )
            .about(&id),
        ],
        subjects: vec![sh("subject-full"), sh("subject-idva")],
        withdraws: None,
    }
}

/// A purge works in batches, each its own transaction: more records than one batch are all
/// purged by one call, each with its `purged` event. (Last: it purges everything.)
async fn a_purge_larger_than_a_batch_purges_everything_due<S: Store + ?Sized>(store: &S) {
    for n in 0..600u64 {
        store
            .accept(acceptance(
                70_000 + n,
                &format!("purge-batch-{n:04}"),
                false,
            ))
            .await
            .unwrap();
    }
    // A chain of corrections, each superseding the one before: a referral another points
    // at waits until that one is purged, and one call still purges the whole chain.
    for n in 0..4u64 {
        let mut a = acceptance(80_000 + n, &format!("purge-chain-{n}"), false);
        if n > 0 {
            a.referral.supersedes = Some(rid(80_000 + n - 1));
        }
        store.accept(a).await.unwrap();
    }
    let before = store
        .count_rows(refex::store::Table::Referrals)
        .await
        .unwrap();
    assert!(before >= 604, "{before}");
    let purged = store
        .purge_records(t(4_000_000_000), t(4_000_000_001))
        .await
        .unwrap();
    assert_eq!(purged as i64, before);
    assert_eq!(
        store
            .count_rows(refex::store::Table::Referrals)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .count_rows(refex::store::Table::Deliveries)
            .await
            .unwrap(),
        0
    );
}

/// Replicas announce themselves and are counted while seen lately; a once-only notice is
/// claimed by exactly one caller; the inbox backlog counts what waits per recipient.
async fn replicas_are_counted_and_notices_claimed_once<S: Store + ?Sized>(store: &S) {
    let (a, b) = (&ReplicaId::fresh(), &ReplicaId::fresh());
    let digest = |day| OnceNotice::DailyDigest {
        partner: p("imara"),
        day,
    };
    assert_eq!(store.heartbeat(a, t(1_000), t(900), t(0)).await.unwrap(), 1);
    assert_eq!(store.heartbeat(b, t(1_010), t(900), t(0)).await.unwrap(), 2);
    // Later, only b is still announcing: a is no longer counted, then forgotten.
    assert_eq!(
        store.heartbeat(b, t(2_000), t(1_900), t(0)).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .heartbeat(b, t(2_010), t(1_900), t(1_500))
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .claim_notice(&digest(20_000), t(5_000), t(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_notice(&digest(20_000), t(5_001), t(0))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_notice(&digest(20_001), t(5_002), t(0))
            .await
            .unwrap()
    );
    let backlog = store.inbox_backlog().await.unwrap();
    assert!(
        backlog.iter().all(|(_, n, at)| *n > 0 && at.is_some()),
        "{backlog:?}"
    );
}

/// The purge measures a marker's age by the database's clock: the caller passes an age, not
/// a cutoff computed from its own (possibly fast) clock.
async fn replay_markers_are_purged_by_the_database_clock<S: Store + ?Sized>(store: &S) {
    let now = UnixTime::of(std::time::SystemTime::now());
    let ten_minutes = std::time::Duration::from_secs(600);
    // Whatever earlier steps left (received in 2026-11 by their fixed clock) goes first.
    store.purge_replay_markers(ten_minutes).await.unwrap();
    let mut fresh = acceptance(901, "jti-fresh", false);
    fresh.referral.received_at = now;
    let mut old = acceptance(902, "jti-old", false);
    old.referral.received_at = now.before(HOUR);
    for a in [fresh, old] {
        assert_eq!(store.accept(a).await.unwrap(), AcceptOutcome::Accepted);
    }
    assert_eq!(store.purge_replay_markers(ten_minutes).await.unwrap(), 1);
    assert!(
        store
            .prior_acceptance(&p("notts-police"), &j("jti-fresh"))
            .await
            .unwrap()
            .is_some(),
        "a marker seen now is kept"
    );
    assert!(
        store
            .prior_acceptance(&p("notts-police"), &j("jti-old"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn acceptance_is_atomic_and_replay_proof<S: Store + ?Sized>(store: &S) {
    assert_eq!(
        store.accept(acceptance(1, "jti-1", true)).await.unwrap(),
        AcceptOutcome::Accepted
    );
    let states = store
        .delivery_states(&rid(1), &p("notts-police"))
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
            .delivery_states(&rid(1), &p("imara"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .delivery_states(&rid(99), &p("notts-police"))
            .await
            .unwrap()
            .is_none()
    );

    // Replay: same sender and jti under a new id writes nothing, and names the referral
    // the jti admitted with its digest (so an identical retry is answered with it).
    let before = counts(store).await;
    assert_eq!(
        store.accept(acceptance(2, "jti-1", false)).await.unwrap(),
        AcceptOutcome::Replay(Some(PriorAcceptance {
            referral_id: rid(1),
            digest: "digest-of-jti-1".into()
        }))
    );
    assert_eq!(counts(store).await, before);
    assert_eq!(
        store
            .prior_acceptance(&p("notts-police"), &j("jti-1"))
            .await
            .unwrap()
            .map(|a| a.referral_id),
        Some(rid(1))
    );
    assert_eq!(
        store
            .prior_acceptance(&p("notts-police"), &j("jti-never"))
            .await
            .unwrap(),
        None
    );

    // A failure half-way (duplicate delivery id) rolls everything back.
    let mut broken = acceptance(3, "jti-2", false);
    broken.deliveries[1].id = broken.deliveries[0].id.clone();
    assert!(store.accept(broken.clone()).await.is_err());
    assert_eq!(counts(store).await, before);
    assert!(
        store
            .delivery_states(&rid(3), &p("notts-police"))
            .await
            .unwrap()
            .is_none()
    );

    // The same jti from another sender is not a replay.
    let mut other = acceptance(4, "jti-1", false);
    other.referral.sender = p("imara");
    assert_eq!(store.accept(other).await.unwrap(), AcceptOutcome::Accepted);
}

/// A decision deletes the hold, moves each held delivery to where the lifecycle says, and
/// is refused whole when it leaves a held delivery undecided; a second decision changes
/// nothing.
async fn a_decision_is_whole_and_final<S: Store + ?Sized>(store: &S) {
    let mut a = acceptance(10, "jti-10", true);
    a.deliveries[1].status = DeliveryStatus::HeldForReview;
    a.deliveries[1].sealed = None;
    store.accept(a).await.unwrap();
    let lead: ActorRef = "notts-police/person:dsl-b".parse().unwrap();
    let reviewed = |to: &str, n: u64, k: u64, decision| {
        AuditRecord::new(
            t(1_795_000_100),
            Some(lead.clone()),
            AuditEvent::Reviewed(ev::Reviewed {
                to: p(to),
                decision,
                preview: None,
            }),
        )
        .about(&rid(n))
        .delivery(&did(n, k))
    };
    let partial = ReviewCommit {
        referral_id: rid(10),
        at: t(1_795_000_100),
        actor: lead.clone(),
        releases: vec![Release {
            delivery: did(10, 1),
            recipient: p("cambs-idva"),
            sealed: jwe("released"),
            subjects: vec![sh("subject-released")],
        }],
        rejections: vec![],
        events: vec![reviewed("cambs-idva", 10, 1, ev::Verdict::Approve)],
        withdraws: None,
    };
    let before = counts(store).await;
    assert!(
        store.decide_hold(&partial).await.is_err(),
        "one left undecided"
    );
    assert_eq!(counts(store).await, before);
    let whole = ReviewCommit {
        rejections: vec![Rejection {
            delivery: did(10, 2),
            recipient: p("gp-practice"),
            reason_sealed: jwe("sealed-reason"),
        }],
        events: vec![
            reviewed("cambs-idva", 10, 1, ev::Verdict::Approve),
            reviewed("gp-practice", 10, 2, ev::Verdict::Reject),
        ],
        ..partial
    };
    assert_eq!(
        store.decide_hold(&whole).await.unwrap(),
        DecideOutcome::Decided
    );
    let states = store
        .delivery_states(&rid(10), &p("notts-police"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Queued);
    assert_eq!(states[1].status, DeliveryStatus::RejectedByReview);
    assert_eq!(states[1].reason_sealed, Some(jwe("sealed-reason")));
    assert_eq!(
        store.decide_hold(&whole).await.unwrap(),
        DecideOutcome::AlreadyDecided
    );
    let page = store.inbox_page(&p("cambs-idva"), 0, 500).await.unwrap();
    assert!(
        page.iter().any(|i| i.id == did(10, 1)),
        "released to the inbox"
    );
    assert!(
        !store
            .inbox_page(&p("gp-practice"), 0, 500)
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == did(10, 2))
    );
}

/// The sender finds what it sent; a recipient finds only deliveries that reached it, by the
/// keys of the copy it received.
async fn subject_keys_are_scoped_to_what_reached_each_partner<S: Store + ?Sized>(store: &S) {
    store.accept(acceptance(20, "jti-20", true)).await.unwrap();
    let keys = |k: &str| vec![sh(k)];
    let sent = store
        .subject_matches(&keys("subject-full"), &p("notts-police"))
        .await
        .unwrap();
    assert!(sent.contains(&SubjectMatch::Sent(rid(20))));
    // The full payload's keys are the sender's only.
    assert!(
        store
            .subject_matches(&keys("subject-full"), &p("cambs-idva"))
            .await
            .unwrap()
            .is_empty()
    );
    // Held for cambs-idva: it has received nothing, so finds nothing, even by its own key.
    assert!(
        !store
            .subject_matches(&keys("subject-idva"), &p("cambs-idva"))
            .await
            .unwrap()
            .iter()
            .any(|m| matches!(m, SubjectMatch::Received(r, _) if *r == rid(20)))
    );
    // gp-practice's queued copy: found by its own keys only.
    assert_eq!(
        store
            .subject_matches(&keys("subject-gp"), &p("gp-practice"))
            .await
            .unwrap()
            .into_iter()
            .filter(|m| matches!(m, SubjectMatch::Received(r, _) if *r == rid(20)))
            .collect::<Vec<_>>(),
        vec![SubjectMatch::Received(rid(20), did(20, 2))]
    );
    // Withdrawn before it was fetched: never received, never found.
    store
        .withdraw(&rid(20), &p("notts-police"), t(1_795_000_200), &police())
        .await
        .unwrap();
    assert!(
        !store
            .subject_matches(&keys("subject-gp"), &p("gp-practice"))
            .await
            .unwrap()
            .iter()
            .any(|m| matches!(m, SubjectMatch::Received(r, _) if *r == rid(20)))
    );
}

/// Retention is counted from when a delivery entered the inbox, not from submission.
async fn expiry_counts_from_entering_the_inbox<S: Store + ?Sized>(store: &S) {
    let mut a = acceptance(30, "jti-30", true);
    a.deliveries.truncate(1);
    store.accept(a).await.unwrap();
    let lead: ActorRef = "notts-police/person:dsl-b".parse().unwrap();
    let released_at = t(1_795_000_000).after(40 * DAY);
    store
        .decide_hold(&ReviewCommit {
            referral_id: rid(30),
            at: released_at,
            actor: lead,
            releases: vec![Release {
                delivery: did(30, 1),
                recipient: p("cambs-idva"),
                sealed: jwe("late"),
                subjects: vec![],
            }],
            rejections: vec![],
            events: vec![],
            withdraws: None,
        })
        .await
        .unwrap();
    // 30 days after submission but one day after the release: not due.
    let cutoff = released_at.before(DAY);
    store
        .expire_deliveries(&p("cambs-idva"), cutoff, released_at.after(DAY))
        .await
        .unwrap();
    let states = store
        .delivery_states(&rid(30), &p("notts-police"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Queued);
    store
        .expire_deliveries(
            &p("cambs-idva"),
            released_at.after(SECOND),
            released_at.after(31 * DAY),
        )
        .await
        .unwrap();
    let states = store
        .delivery_states(&rid(30), &p("notts-police"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Expired);

    // A recipient no longer configured: its deliveries wait out the grace from entering the
    // inbox (a partner file removed by mistake and restored loses nothing), then expire.
    let mut b = acceptance(31, "jti-31", false);
    b.deliveries.truncate(1);
    store.accept(b).await.unwrap();
    let entered = t(1_795_000_000);
    let known = [p("notts-police"), p("gp-practice")];
    assert_eq!(
        store
            .expire_unknown_recipients(&known, entered, entered.after(60 * SECOND))
            .await
            .unwrap(),
        0,
        "within the grace"
    );
    assert_eq!(
        store
            .expire_unknown_recipients(&known, entered.after(SECOND), entered.after(31 * DAY))
            .await
            .unwrap(),
        1
    );
    let states = store
        .delivery_states(&rid(31), &p("notts-police"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Expired);
}

async fn raw(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.unwrap()
}

/// The database itself refuses a status or event kind the enums do not have, and accepts
/// every one they do: the migration's CHECK lists and the enums agree.
async fn the_database_refuses_unknown_statuses_and_kinds(url: &str) {
    let mut conn = raw(url).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, lawful_basis, \
         consent_status, subject_informed) VALUES ('ref_check', 's', 'r', 't', 0, '{}', 'given', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    for (i, status) in DeliveryStatus::ALL.iter().enumerate() {
        let q = format!(
            "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, created_at, \
             updated_at) VALUES ('dlv_check{i}', 'ref_check', 'r', 'a', '{}', 0, 0)",
            status.as_str()
        );
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{status} refused: {e}"));
    }
    for (i, kind) in EventKind::ALL.iter().enumerate() {
        let q = format!(
            "INSERT INTO audit_events (at, kind, idx) VALUES (0, '{}', {})",
            kind.as_str(),
            -1 - i as i64
        );
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{kind} refused: {e}"));
    }
    tx.rollback().await.unwrap();
    for bad in [
        "INSERT INTO deliveries (id, referral_id, recipient, agreement, status, created_at, updated_at) \
         VALUES ('dlv_bad', 'ref_check', 'r', 'a', 'released', 0, 0)",
        "INSERT INTO audit_events (at, kind, idx) VALUES (0, 'approved', -999)",
        "INSERT INTO audit_nodes (level, idx, hash) VALUES (0, -999, '\\x00')",
    ] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO referrals (id, sender, sender_ref, referral_type, received_at, lawful_basis, \
             consent_status, subject_informed) VALUES ('ref_check', 's', 'r', 't', 0, '{}', 'given', '{}')",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        assert!(
            sqlx::query(sqlx::AssertSqlSafe(bad))
                .execute(&mut *tx)
                .await
                .is_err(),
            "accepted: {bad}"
        );
        tx.rollback().await.ok();
    }
}

/// Runs one statement a test wrote itself on a raw connection.
async fn run(conn: &mut sqlx::AnyConnection, q: String) {
    sqlx::query(sqlx::AssertSqlSafe(q))
        .execute(conn)
        .await
        .unwrap();
}

/// A row this build cannot read is an error naming its table and column, never skipped.
async fn unreadable_rows_are_errors_never_dropped(url: &str) {
    let store = store::open(url).await.unwrap();
    store.accept(acceptance(40, "jti-40", false)).await.unwrap();
    let mut conn = raw(url).await;
    let q = format!(
        "UPDATE deliveries SET recipient = 'Not A Partner' WHERE id = '{}'",
        did(40, 2)
    );
    run(&mut conn, q).await;
    let err = store
        .delivery_states(&rid(40), &p("notts-police"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "deliveries",
                column: "recipient"
            }
        ),
        "{err}"
    );
    let leaf_corrupt = |e: StoreError| {
        matches!(
            e,
            StoreError::Corrupt {
                table: "audit_events",
                column: "leaf"
            }
        )
    };
    let q = format!(
        "UPDATE deliveries SET recipient = 'gp-practice' WHERE id = '{}'",
        did(40, 2)
    );
    run(&mut conn, q).await;
    // A `reviewed` event of a live delivery without its leaf (what only purge writes, and
    // purge deletes the delivery too) is an error in a report, never "no decision yet".
    let q = format!(
        "INSERT INTO audit_events (at, kind, referral_id, delivery_id, idx) \
         VALUES (1, 'reviewed', '{}', '{}', -5000)",
        rid(40),
        did(40, 1)
    );
    run(&mut conn, q).await;
    let err = store.report_facts(t(0), t(i64::MAX / 2)).await.unwrap_err();
    assert!(leaf_corrupt(err));
    sqlx::query("DELETE FROM audit_events WHERE idx = -5000")
        .execute(&mut conn)
        .await
        .unwrap();
    store.report_facts(t(0), t(i64::MAX / 2)).await.unwrap();
    // An event forged with leaf text and an index but no hash in the tree (what the
    // gateway never writes: every leaf it stores is in the tree) is not served.
    store.accept(acceptance(41, "jti-41", false)).await.unwrap();
    let forged = AuditRecord::new(
        t(1_795_000_900),
        Some(police()),
        AuditEvent::Acknowledged(ev::Acknowledged {}),
    )
    .about(&rid(41))
    .delivery(&did(41, 2));
    sqlx::query(
        "INSERT INTO audit_events (at, kind, referral_id, delivery_id, actor, idx, leaf) \
         VALUES ($1, 'acknowledged', $2, $3, $4, 999999, $5)",
    )
    .bind(1_795_000_900_i64)
    .bind(rid(41).as_str().to_owned())
    .bind(did(41, 2).as_str().to_owned())
    .bind(police().to_string())
    .bind(forged.leaf(999_999))
    .execute(&mut conn)
    .await
    .unwrap();
    assert!(leaf_corrupt(
        store.referral_detail(&rid(41)).await.unwrap_err()
    ));
    // So is a genuine packed event whose node was deleted.
    sqlx::query("DELETE FROM audit_events WHERE idx = 999999")
        .execute(&mut conn)
        .await
        .unwrap();
    store.referral_detail(&rid(41)).await.unwrap();
    let q = format!(
        "DELETE FROM audit_nodes WHERE level = 0 AND idx IN \
         (SELECT idx FROM audit_events WHERE referral_id = '{}')",
        rid(41)
    );
    run(&mut conn, q).await;
    assert!(leaf_corrupt(
        store.referral_detail(&rid(41)).await.unwrap_err()
    ));
    // A packed detail swapped for another that parses: its rebuilt leaf no longer hashes to
    // the tree's node, so the record is not served.
    store.referral_detail(&rid(40)).await.unwrap();
    sqlx::query("UPDATE audit_events SET packed_detail = $1 WHERE referral_id = $2")
        .bind(refex::store::packed::pack(r#"{"reason":"altered"}"#))
        .bind(rid(40).as_str().to_owned())
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(leaf_corrupt(
        store.referral_detail(&rid(40)).await.unwrap_err()
    ));
    // An index column changed: for an event stored packed its rebuilt leaf no longer hashes
    // to the tree's node; for one stored as leaf text it disagrees with the leaf. Either
    // way the record is not served.
    let q = format!(
        "UPDATE audit_events SET actor = 'notts-police/person:dsl-b' WHERE referral_id = '{}'",
        rid(40)
    );
    run(&mut conn, q).await;
    assert!(leaf_corrupt(
        store.referral_detail(&rid(40)).await.unwrap_err()
    ));
    let q = format!(
        "UPDATE audit_events SET leaf = '{{\"nonsense\":1}}' WHERE referral_id = '{}'",
        rid(40)
    );
    run(&mut conn, q).await;
    assert!(leaf_corrupt(
        store.referral_detail(&rid(40)).await.unwrap_err()
    ));
    // Plaintext where ciphertext belongs is never handed on, to its recipient or anyone:
    // JSON, or words that happen to split into five base64url-looking parts.
    let plaintext = |e: StoreError| {
        matches!(
            e,
            StoreError::Corrupt {
                table: "deliveries",
                column: "sealed"
            }
        )
    };
    for text in [
        r#"{"child":{"name":"A"}}"#,
        "Amy.Smith.2015-03-02.at-risk.NP-2026-1",
    ] {
        let q = format!(
            "UPDATE deliveries SET sealed = '{text}' WHERE id = '{}'",
            did(40, 2)
        );
        run(&mut conn, q).await;
        assert!(plaintext(
            store
                .peek_delivery(&p("gp-practice"), &did(40, 2))
                .await
                .unwrap_err()
        ));
        assert!(plaintext(
            store
                .fetch_delivery(&p("gp-practice"), &did(40, 2), t(1_795_000_500), &police())
                .await
                .unwrap_err()
        ));
        // The same plaintext where the packed ciphertext belongs (as the text packing, or
        // as bytes of any other shape): not a compact JWE, never handed on.
        let mut as_text = vec![0u8];
        as_text.extend_from_slice(text.as_bytes());
        for packed in [as_text, text.as_bytes().to_vec()] {
            sqlx::query("UPDATE deliveries SET sealed = NULL, sealed_packed = $1 WHERE id = $2")
                .bind(packed)
                .bind(did(40, 2).as_str().to_owned())
                .execute(&mut conn)
                .await
                .unwrap();
            let e = store
                .fetch_delivery(&p("gp-practice"), &did(40, 2), t(1_795_000_500), &police())
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::Corrupt {
                        table: "deliveries",
                        column: "sealed_packed"
                    }
                ),
                "{e}"
            );
        }
        let q = format!(
            "UPDATE deliveries SET sealed_packed = NULL WHERE id = '{}'",
            did(40, 2)
        );
        run(&mut conn, q).await;
    }
    store.close().await;
}

/// Many acceptances at once share transactions (group commit), yet each stands or falls on
/// its own: a replay inside the same batch and a broken acceptance are refused alone, and
/// every audit event of those that stood is a leaf of one gapless tree.
async fn group_commit_keeps_each_acceptance_whole(store: Arc<dyn Store>) {
    let before = counts(store.as_ref()).await;
    let mut tasks = Vec::new();
    for i in 0..48 {
        let mut a = acceptance(100 + i, &format!("g-jti-{i}"), i % 4 == 0);
        if i == 7 {
            a.jti = j("g-jti-6"); // the same sender and jti as its neighbour
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
        match result {
            Ok(AcceptOutcome::Accepted) => {}
            Ok(AcceptOutcome::Replay(_)) => refused.push((i, true)),
            Err(_) => refused.push((i, false)),
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
    // Concurrent batches, and the careful path's savepoints, hand out each inbox position
    // once and leave no gap: each batch moves every counter it needs in one upsert.
    for (recipient, k) in [("cambs-idva", 1), ("gp-practice", 2)] {
        let ours: std::collections::HashSet<DeliveryId> =
            (0..48).map(|i| did(100 + i, k)).collect();
        let page = store.inbox_page(&p(recipient), 0, 500).await.unwrap();
        let mut positions: Vec<i64> = page
            .iter()
            .filter(|item| ours.contains(&item.id))
            .map(|item| item.position)
            .collect();
        let queued = if k == 1 { stood - 12 } else { stood };
        assert_eq!(positions.len() as i64, queued, "{recipient}");
        positions.sort_unstable();
        positions.dedup();
        assert_eq!(
            positions.len() as i64,
            queued,
            "{recipient}: a position given twice"
        );
        assert_eq!(
            positions[positions.len() - 1] - positions[0] + 1,
            queued,
            "{recipient}: {positions:?}"
        );
    }
}

async fn counts<S: Store + ?Sized>(store: &S) -> Vec<i64> {
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
    on_disk_conforms(&url, Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    on_disk_conforms(&url, Backend::Postgres).await;
    common::pg::drop_schema(&url).await;
}

/// The embedded store syncs its write-ahead log (the real store, through the seam that
/// stands in for `fdatasync`) before it answers a write, and after a failed sync it stops:
/// every later write, the answer "accepted before" and readiness say `Stopped`, and no sync
/// is tried again. (SIGKILL keeps the page cache, so the crash tests cannot show this.)
#[tokio::test]
async fn the_embedded_store_answers_a_write_only_after_syncing_its_log_and_stops_when_it_cannot() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("synced.db");
    let calls = Arc::new(AtomicU64::new(0));
    let fail = Arc::new(AtomicBool::new(false));
    let wal = refex::store::durable::wal_of(&db);
    let (c, f) = (calls.clone(), fail.clone());
    let sync: refex::store::durable::SyncFn = Arc::new(move |path: &std::path::Path| {
        assert_eq!(path, wal, "the log synced is the database's");
        c.fetch_add(1, Ordering::SeqCst);
        if f.load(Ordering::SeqCst) {
            Err(refex::store::durable::SyncFailure::Sync(
                std::io::Error::other("EIO"),
            ))
        } else {
            Ok(())
        }
    });
    let url = format!("sqlite://{}", db.display());
    let store: Arc<dyn Store> = Arc::new(
        refex::store::SqliteStore::open_synced_by(&url, Default::default(), sync)
            .await
            .unwrap(),
    );
    let before = calls.load(Ordering::SeqCst);
    store.accept(acceptance(1, "jti-s1", false)).await.unwrap();
    let after_one = calls.load(Ordering::SeqCst);
    assert!(
        after_one > before,
        "an acceptance was answered without a sync"
    );
    store
        .fetch_delivery(&p("gp-practice"), &did(1, 2), t(1_795_000_100), &police())
        .await
        .unwrap();
    assert!(
        calls.load(Ordering::SeqCst) > after_one,
        "a fetch was answered without a sync"
    );
    fail.store(true, Ordering::SeqCst);
    let stopped = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Stopped(_)));
    assert!(stopped(
        store
            .accept(acceptance(2, "jti-s2", false))
            .await
            .map(|_| ())
    ));
    let tried = calls.load(Ordering::SeqCst);
    assert!(stopped(
        store
            .accept(acceptance(3, "jti-s3", false))
            .await
            .map(|_| ())
    ));
    assert!(stopped(
        store
            .prior_acceptance(&p("notts-police"), &j("jti-s1"))
            .await
            .map(|_| ())
    ));
    assert!(stopped(store.ping().await));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        tried,
        "a sync was tried after one failed"
    );
    store.close().await;
}

/// A purge erases: once the log is checkpointed, no copy of a purged person's subject key,
/// nor of a purged delivery's ciphertext, is left anywhere in the database file (SQLite's
/// `secure_delete`; without it the freed pages keep them).
#[tokio::test]
async fn a_purge_leaves_no_copy_in_the_embedded_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("erase.db");
    let url = format!("sqlite://{}", db.display());
    let store = store::open(&url).await.unwrap();
    for n in 0..40 {
        store
            .accept(acceptance(500 + n, &format!("jti-e{n}"), false))
            .await
            .unwrap();
    }
    let key = sh("subject-gp").to_bytes();
    let cipher = jwe("other").to_packed();
    let holds = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let checkpoint = async || {
        let mut c = raw(&url).await;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut c)
            .await
            .unwrap();
        std::fs::read(&db).unwrap()
    };
    let before = checkpoint().await;
    assert!(
        holds(&before, &key) && holds(&before, &cipher),
        "the test looks for what is there"
    );
    let purged = store
        .purge_records(t(1_795_000_001), t(1_795_000_002))
        .await
        .unwrap();
    assert_eq!(purged, 40);
    let after = checkpoint().await;
    assert!(
        !holds(&after, &key),
        "a purged subject key is still in the file"
    );
    assert!(
        !holds(&after, &cipher),
        "a purged delivery's ciphertext is still in the file"
    );
    store.close().await;
}

#[tokio::test]
async fn unknown_store_schemes_are_refused() {
    let err = store::open("mysql://localhost/refex").await.unwrap_err();
    assert!(err.to_string().contains("mysql"), "{err}");
}

/// Read-then-write transactions (a first fetch reads, then marks delivered) running beside
/// other writers must never fail: on SQLite a deferred transaction would get SQLITE_BUSY.
async fn concurrent_read_then_write(store: Arc<dyn Store>) {
    let reader = p("cambs-idva");
    for i in 0..40 {
        let mut a = acceptance(1000 + i, &format!("rw-jti-{i}"), false);
        a.deliveries.truncate(1);
        store.accept(a).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (s, reader) = (store.clone(), reader.clone());
        tasks.push(tokio::spawn(async move {
            s.fetch_delivery(&reader, &did(1000 + i, 1), t(1_795_000_100), &police())
                .await
                .map(|o| o.is_some())
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut a = acceptance(2000 + i, &format!("rx-jti-{i}"), false);
            a.deliveries.truncate(1);
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
