//! Criterion microbenchmarks of the hot path, so that a regression shows in review:
//! envelope open and seal, schema validation, minimisation, the whole CPU path of one
//! referral, and Merkle appends. `cargo bench`; `refex bench` measures the whole gateway.
#![allow(missing_docs, clippy::unwrap_used)] // a bench harness, not library code

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use refex::audit::tree;
use refex::config::{self, Config, Overrides};
use refex::envelope::referral;
use refex::identity::ReferralType;
use refex::ids::Uuid7Ids;
use refex_bench::corpus::{Corpus, RECIPIENTS, REFERRAL_TYPE, SENDER};

struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    corpus: Corpus,
}

impl Fixture {
    fn partner(&self, id: &str) -> &refex::config::partners::Partner {
        self.config
            .policy
            .partners
            .values()
            .find(|p| p.id.as_str() == id)
            .unwrap()
    }
}

/// The gateway's allocator, as in `refex-bench` and the gateway binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixture() -> Fixture {
    refex::tls::install_default_provider();
    let repo = &Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let settings =
        config::load_settings(&repo.join("refex.toml"), true, &Overrides::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = refex_bench::prepare_project(dir.path(), &settings).unwrap();
    let config = Config::load(settings).unwrap().config;
    let corpus = Corpus::load(&dir.path().join("certs/dev"), &config.settings.schemas_dir).unwrap();
    Fixture {
        _dir: dir,
        config,
        corpus,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn envelope(c: &mut Criterion) {
    let f = fixture();
    let sender = f.partner(SENDER);
    let recipient = f.partner(RECIPIENTS[0]);
    let bodies = f
        .corpus
        .bodies(1, 2, 5 * 1024, "criterion-open", now())
        .unwrap();
    c.bench_function("envelope/open 5 KiB referral", |b| {
        b.iter(|| {
            referral::open(
                black_box(&bodies[0]),
                &f.config.gateway_keys,
                sender.keys.as_ref().unwrap(),
            )
            .unwrap()
        })
    });
    let delivery = serde_json::to_vec(&f.corpus.payload(2 * 1024)).unwrap();
    c.bench_function("envelope/seal 2 KiB delivery", |b| {
        b.iter(|| {
            referral::seal(
                black_box(&delivery),
                &f.config.gateway_keys,
                recipient.keys.as_ref().unwrap(),
            )
            .unwrap()
        })
    });
}

fn schema(c: &mut Criterion) {
    let f = fixture();
    let ty: ReferralType = REFERRAL_TYPE.parse().unwrap();
    let compiled = f.config.policy.schemas.referral_type(&ty).unwrap();
    let recipient = f.partner(RECIPIENTS[0]);
    let view = f.config.policy.schemas.view(&recipient.kind, &ty).unwrap();
    let payload = f.corpus.payload(5 * 1024);
    c.bench_function("schema/validate 5 KiB", |b| {
        b.iter(|| refex::schema::validate(compiled, black_box(&payload), "/payload"))
    });
    c.bench_function("schema/minimise 5 KiB onto a view", |b| {
        b.iter(|| refex::schema::minimise(black_box(&payload), &view.source))
    });
}

fn pipeline(c: &mut Criterion) {
    let f = fixture();
    let caller = refex_bench::micro::sender(&f.config).unwrap();
    let mut group = c.benchmark_group("pipeline");
    for recipients in 1..=RECIPIENTS.len() {
        let bodies = f
            .corpus
            .bodies(
                512,
                recipients,
                5 * 1024,
                &format!("criterion-{recipients}"),
                now(),
            )
            .unwrap();
        let mut next = 0usize;
        group.bench_function(format!("{recipients} recipient(s), 5 KiB"), |b| {
            b.iter_batched(
                || {
                    next = (next + 1) % bodies.len();
                    &bodies[next]
                },
                |body| refex::submit::prepare(&f.config, &Uuid7Ids, &caller, body, now()).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn merkle(c: &mut Criterion) {
    let leaves: Vec<tree::Hash> = (0..64u32)
        .map(|i| tree::leaf_hash(&i.to_be_bytes()))
        .collect();
    // A tree of 1,000,003 leaves: its frontier has one hash per set bit.
    let size = 1_000_003u64;
    let frontier = tree::frontier(size)
        .into_iter()
        .map(|k| (k, tree::leaf_hash(&k.1.to_be_bytes())))
        .collect();
    c.bench_function("merkle/append 64 leaves to a 1M-leaf tree", |b| {
        b.iter(|| tree::append(black_box(size), &frontier, &leaves).unwrap())
    });
    c.bench_function("merkle/leaf hash of a 600-byte event", |b| {
        let event = vec![b'x'; 600];
        b.iter(|| tree::leaf_hash(black_box(&event)))
    });
}

/// `a` with fresh ids and `jti`, so it can be committed again.
fn renamed(a: &refex::store::records::Acceptance, n: u64) -> refex::store::records::Acceptance {
    use refex::ids::{DeliveryId, ReferralId};
    let mut a = a.clone();
    a.referral.id = ReferralId::parse(&format!("ref_{:026}", n)).expect("id");
    a.jti = format!("jti-bench-{n}").parse().expect("a valid jti");
    let mut renames = Vec::new();
    for (k, d) in a.deliveries.iter_mut().enumerate() {
        let new = DeliveryId::parse(&format!("dlv_{:025}{k}", n)).expect("id");
        renames.push((d.id.clone(), new.clone()));
        d.id = new;
    }
    for e in &mut a.events {
        e.referral_id = Some(a.referral.id.clone());
        if let Some(d) = &e.delivery_id {
            e.delivery_id = renames.iter().find(|(o, _)| o == d).map(|(_, n)| n.clone());
        }
    }
    a
}

fn store(c: &mut Criterion) {
    let f = fixture();
    let caller = refex_bench::micro::sender(&f.config).unwrap();
    let body = f
        .corpus
        .bodies(1, 2, 5 * 1024, "criterion-store", now())
        .unwrap();
    let template = refex::submit::prepare(&f.config, &Uuid7Ids, &caller, &body[0], now()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime
        .block_on(refex::store::open_with(
            &url,
            f.config.settings.store.group_commit(),
        ))
        .unwrap();
    let mut n = 0u64;
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    group.bench_function("SQLite: 32 acceptances (2 recipients) at once", |b| {
        b.iter_batched(
            || {
                (0..32)
                    .map(|_| {
                        n += 1;
                        renamed(&template, n)
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                runtime.block_on(async {
                    let tasks: Vec<_> = batch
                        .into_iter()
                        .map(|a| {
                            let s = store.clone();
                            tokio::spawn(async move { s.accept(a).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, envelope, schema, pipeline, merkle, store);
criterion_main!(benches);
