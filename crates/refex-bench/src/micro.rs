//! In-process microbenchmarks, timed on one thread: the CPU path of one referral (open,
//! parse, validate, decide, minimise and seal per recipient) by recipients × payload size;
//! its parts; store commits with the gateway's own settings; and a raw `fdatasync`.
//!
//! Out of scope: anything over the network (`driver`, `net`).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Serialize;

use super::BenchError;
use super::corpus::{Corpus, RECIPIENTS, REFERRAL_TYPE, SENDER};
use super::gateway::CommitCounters;
use refex::config::Config;
use refex::envelope::referral;
use refex::identity::{Actor, Principal, ReferralType};
use refex::ids::Uuid7Ids;
use refex::store::records::Acceptance;

/// One cell of the crypto-pipeline matrix.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineCell {
    /// Recipients per referral.
    pub recipients: usize,
    /// Payload size in KiB.
    pub payload_kib: usize,
    /// CPU microseconds per referral on one core.
    pub us_per_referral: f64,
    /// Referrals per second on one core.
    pub per_second_per_core: f64,
}

/// Store commit rates.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreRates {
    /// One acceptance at a time (each its own transaction and fsync).
    pub sequential_per_second: f64,
    /// 64 concurrent acceptances (group commit shares transactions).
    pub concurrent_per_second: f64,
    /// Acceptances per transaction in the concurrent run.
    pub referrals_per_commit: f64,
    /// Milliseconds per transaction (write and commit) in the concurrent run.
    pub ms_per_commit: f64,
}

/// The P-256 primitives, measured through OpenSSL (the library JOSE runs on here), µs each.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Primitives {
    /// ECDSA P-256 sign (SHA-256 of a small message).
    pub sign_us: f64,
    /// ECDSA P-256 verify.
    pub verify_us: f64,
    /// ECDH P-256 key agreement.
    pub ecdh_us: f64,
    /// P-256 key-pair generation (each sealed delivery's ephemeral key).
    pub keygen_us: f64,
}

impl Primitives {
    /// CPU µs the primitives alone take for one referral to `recipients`: opening it (one
    /// ECDH, one verify) and, per recipient, an ephemeral key, an ECDH and a signature.
    pub fn us_per_referral(&self, recipients: usize) -> f64 {
        self.ecdh_us
            + self.verify_us
            + recipients as f64 * (self.sign_us + self.keygen_us + self.ecdh_us)
    }

    /// The physical limit: referrals per second `cores` could do if they did nothing but the
    /// primitives.
    pub fn limit_per_second(&self, recipients: usize, cores: usize) -> f64 {
        let us = self.us_per_referral(recipients);
        if us > 0.0 {
            cores as f64 * 1e6 / us
        } else {
            0.0
        }
    }
}

/// Times each primitive on one thread over `n` operations.
pub fn primitives(n: usize) -> Result<Primitives, BenchError> {
    use openssl::derive::Deriver;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    let e = |e: openssl::error::ErrorStack| BenchError::Measure(format!("primitives: {e}"));
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
    let key = PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?;
    let peer = PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?;
    let message = [7u8; 200];
    let n = n.max(50);
    let time = |f: &mut dyn FnMut() -> Result<(), openssl::error::ErrorStack>| {
        let start = Instant::now();
        for _ in 0..n {
            f()?;
        }
        Ok::<f64, openssl::error::ErrorStack>(start.elapsed().as_secs_f64() * 1e6 / n as f64)
    };
    // The signature as the gateway makes and checks it (`envelope::es256`): ECDSA over the
    // SHA-256 digest with the key imported once, no EVP context per operation (`openssl
    // speed ecdsap256` times the same thing).
    let ec = key.ec_key().map_err(e)?;
    let public = EcKey::from_public_key(&group, ec.public_key()).map_err(e)?;
    let mut signature = None;
    let sign_us = time(&mut || {
        let digest = openssl::sha::sha256(&message);
        signature = Some(EcdsaSig::sign(&digest, &ec)?);
        Ok(())
    })
    .map_err(e)?;
    let signature =
        signature.ok_or_else(|| BenchError::Measure("primitives: no signature".into()))?;
    let verify_us = time(&mut || {
        let digest = openssl::sha::sha256(&message);
        if !signature.verify(&digest, &public)? {
            return Err(openssl::error::ErrorStack::get());
        }
        Ok(())
    })
    .map_err(e)?;
    // The agreement alone, as the gateway does it: OpenSSL 3's `set_peer` would also run a
    // full public-key check on the peer (one more scalar multiplication, doubling the
    // cost), where P-256's cofactor 1 makes the on-curve check, done while decoding the
    // point, enough (`envelope::ecdh`); `openssl speed ecdhp256` times the same thing.
    let ecdh_us = time(&mut || {
        let mut d = Deriver::new(&key)?;
        d.set_peer_ex(&peer, false)?;
        d.derive_to_vec()?;
        Ok(())
    })
    .map_err(e)?;
    let keygen_us = time(&mut || {
        EcKey::generate(&group)?;
        Ok(())
    })
    .map_err(e)?;
    Ok(Primitives {
        sign_us,
        verify_us,
        ecdh_us,
        keygen_us,
    })
}

/// Everything measured in-process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Micro {
    /// The full CPU path per referral, by recipients × size.
    pub pipeline: Vec<PipelineCell>,
    /// Opening one referral envelope (JWE decrypt + JWS verify), µs.
    pub open_us: f64,
    /// Sealing one small delivery (one signature + one ephemeral ECDH), µs: the crypto cost
    /// of one more recipient.
    pub seal_us: f64,
    /// Validating one 5 KiB payload against its type schema, µs.
    pub validate_us: f64,
    /// Minimising one 5 KiB payload onto one view, µs.
    pub minimise_us: f64,
    /// Store commits on the embedded store with the gateway's settings.
    pub store: StoreRates,
    /// Raw `write` + `fdatasync` of 4 KiB in the data directory, per second.
    pub fdatasync_per_second: f64,
    /// The P-256 primitives, for the physical limit.
    pub primitives: Primitives,
}

/// The principal of the sending partner's system, as the TLS layer would map it.
pub fn sender(config: &Config) -> Result<Principal, BenchError> {
    config
        .policy
        .principals
        .values()
        .find(|p| p.partner.as_str() == SENDER && matches!(p.actor, Actor::System(_)))
        .cloned()
        .ok_or_else(|| BenchError::Setup(format!("no system certificate for {SENDER}")))
}

/// The store writes `bodies` would make, each through the gateway's own pipeline.
pub fn acceptances(
    config: &Config,
    caller: &Principal,
    bodies: &[Bytes],
    now: u64,
) -> Result<Vec<Acceptance>, BenchError> {
    bodies
        .iter()
        .map(|b| {
            refex::submit::prepare(config, &Uuid7Ids, caller, b, now)
                .map_err(|e| BenchError::Measure(e.to_string()))
        })
        .collect()
}

/// Times `f` over `items`, returning microseconds per item.
fn per_item<T>(items: &[T], mut f: impl FnMut(&T)) -> f64 {
    let start = Instant::now();
    for item in items {
        f(item);
    }
    start.elapsed().as_secs_f64() * 1e6 / items.len().max(1) as f64
}

/// Runs the microbenchmarks. `n` bodies per pipeline cell (more is steadier).
pub async fn run(
    config: &Config,
    corpus: &Corpus,
    store_url: &str,
    data_dir: &Path,
    n: usize,
    now: u64,
) -> Result<Micro, BenchError> {
    let caller = sender(config)?;
    let mut micro = Micro::default();
    for recipients in 1..=RECIPIENTS.len() {
        for kib in [2, 5, 10] {
            let bodies = corpus.bodies(
                n,
                recipients,
                kib * 1024,
                &format!("micro-{recipients}-{kib}"),
                now,
            )?;
            let mut failure = None;
            let us = per_item(&bodies, |b| {
                if let Err(e) = refex::submit::prepare(config, &Uuid7Ids, &caller, b, now) {
                    failure.get_or_insert(e.to_string());
                }
            });
            if let Some(e) = failure {
                return Err(BenchError::Measure(format!(
                    "pipeline refused a bench referral: {e}"
                )));
            }
            micro.pipeline.push(PipelineCell {
                recipients,
                payload_kib: kib,
                us_per_referral: us,
                per_second_per_core: 1e6 / us,
            });
        }
    }
    micro.primitives = primitives(n.max(500))?;
    parts(config, corpus, &mut micro, n, now)?;
    micro.store = store_rates(config, corpus, &caller, store_url, n, now).await?;
    micro.fdatasync_per_second = fdatasync_rate(data_dir, Duration::from_millis(500))?;
    Ok(micro)
}

/// The pieces of the pipeline, each on its own.
fn parts(
    config: &Config,
    corpus: &Corpus,
    micro: &mut Micro,
    n: usize,
    now: u64,
) -> Result<(), BenchError> {
    let sender_keys = config
        .policy
        .partners
        .values()
        .find(|p| p.id.as_str() == SENDER)
        .and_then(|p| p.keys.as_ref())
        .ok_or_else(|| BenchError::Setup("sender has no keys".into()))?;
    let bodies = corpus.bodies(n, 2, 5 * 1024, "micro-open", now)?;
    micro.open_us = per_item(&bodies, |b| {
        let _ = referral::open(b, &config.gateway_keys, sender_keys);
    });
    let recipient = config
        .policy
        .partners
        .values()
        .find(|p| p.id.as_str() == RECIPIENTS[0])
        .ok_or_else(|| BenchError::Setup("no recipient".into()))?;
    let recipient_keys = recipient
        .keys
        .as_ref()
        .ok_or_else(|| BenchError::Setup("recipient has no keys".into()))?;
    let small = vec![b"{\"delivery\":{\"payload\":{}}}".to_vec(); n];
    micro.seal_us = per_item(&small, |p| {
        let _ = referral::seal(p, &config.gateway_keys, recipient_keys);
    });
    let ty: ReferralType = REFERRAL_TYPE
        .parse()
        .map_err(|e: refex::identity::IdError| BenchError::Setup(e.to_string()))?;
    let schema = config
        .policy
        .schemas
        .referral_type(&ty)
        .ok_or_else(|| BenchError::Setup("no schema".into()))?;
    let view = config
        .policy
        .schemas
        .view(&recipient.kind, &ty)
        .ok_or_else(|| BenchError::Setup("no view".into()))?;
    let payloads = vec![corpus.payload(5 * 1024); n];
    micro.validate_us = per_item(&payloads, |p| {
        let _ = refex::schema::validate(schema, p, "/payload");
    });
    micro.minimise_us = per_item(&payloads, |p| {
        let _ = refex::schema::minimise(p, &view.source);
    });
    Ok(())
}

/// Commits prepared acceptances to a fresh embedded store opened with the gateway's
/// group-commit settings: first one at a time, then 64 at once.
async fn store_rates(
    config: &Config,
    corpus: &Corpus,
    caller: &Principal,
    store_url: &str,
    n: usize,
    now: u64,
) -> Result<StoreRates, BenchError> {
    let store = refex::store::open_with(store_url, config.settings.store.group_commit())
        .await
        .map_err(|e| BenchError::Setup(format!("store: {e}")))?;
    let prepare = |bodies: Vec<Bytes>| acceptances(config, caller, &bodies, now);
    let sequential = prepare(corpus.bodies(n / 4 + 1, 2, 5 * 1024, "store-seq", now)?)?;
    let count = sequential.len();
    let start = Instant::now();
    for a in sequential {
        store
            .accept(a)
            .await
            .map_err(|e| BenchError::Measure(format!("store: {e}")))?;
    }
    let sequential_per_second = count as f64 / start.elapsed().as_secs_f64();

    let concurrent = prepare(corpus.bodies(n * 2, 2, 5 * 1024, "store-par", now)?)?;
    let count = concurrent.len();
    let metrics = refex::telemetry::metrics();
    let before = CommitCounters::read(&metrics.render());
    let queue = Arc::new(std::sync::Mutex::new(concurrent));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, queue) = (store.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(a) = next else { break };
                store.accept(a).await?;
            }
            Ok::<(), refex::store::StoreError>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Measure(e.to_string()))?
            .map_err(|e| BenchError::Measure(format!("store: {e}")))?;
    }
    let concurrent_per_second = count as f64 / start.elapsed().as_secs_f64();
    let (referrals_per_commit, ms_per_commit) =
        CommitCounters::read(&metrics.render()).since(&before);
    store.close().await;
    Ok(StoreRates {
        sequential_per_second,
        concurrent_per_second,
        referrals_per_commit,
        ms_per_commit,
    })
}

/// `write` + `fdatasync` of one 4 KiB block, repeated for `limit`.
fn fdatasync_rate(dir: &Path, limit: Duration) -> Result<f64, BenchError> {
    let path = dir.join("fdatasync.probe");
    let mut file = std::fs::File::create(&path).map_err(|e| BenchError::Measure(e.to_string()))?;
    let block = [0x5au8; 4096];
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < limit {
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .map_err(|e| BenchError::Measure(e.to_string()))?;
        count += 1;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}
