//! Referral bodies for the benchmark: a shipped example payload padded to a chosen size,
//! wrapped in claims with a unique `jti`, signed and encrypted ahead of time (on every core)
//! so that the load generator does no crypto while it measures.
//!
//! Out of scope: sending them (`driver`).

use std::path::Path;

use axum::body::Bytes;
use serde_json::{Value, json};

use super::BenchError;
use refex::envelope::keys::{KeySet, public_document};
use refex::envelope::referral::partner;

/// The sending partner: its agreements route domestic-abuse referrals to three recipients.
pub const SENDER: &str = "cambs-idva";
/// The recipients, in the order a referral to `n` recipients takes them.
pub const RECIPIENTS: [&str; 3] = ["gp-practice", "acute-hospital", "housing"];
/// The referral type.
pub const REFERRAL_TYPE: &str = "domestic-abuse";
/// The example payload the sizes are built from.
const EXAMPLE: &str = "examples/domestic-abuse/police-high-risk.json";
/// Free-text fields the padding goes into, with their schema's `maxLength`.
const PADDABLE: [(&str, usize); 3] = [
    ("/incident/narrative", 4000),
    ("/police_intelligence/intelligence_summary", 4000),
    ("/perpetrators/0/history", 2000),
];

/// What the load generator sends: keys to sign and encrypt with, and the payload sizes.
pub struct Corpus {
    own: KeySet,
    gateway: KeySet,
    example: Value,
    run: String,
}

impl Corpus {
    /// Loads the sender's private keys and the gateway's public keys from a dev PKI, and
    /// the example payload from the schemas directory.
    pub fn load(pki: &Path, schemas: &Path) -> Result<Self, BenchError> {
        let own =
            KeySet::load_private(&pki.join("partners").join(SENDER).join("jwks.private.json"))
                .map_err(|e| BenchError::Setup(e.to_string()))?;
        let gw: Value = read_json(&pki.join("gateway/jwks.private.json"))?;
        let public = public_document(&gw).map_err(|e| BenchError::Setup(e.to_string()))?;
        let gateway = KeySet::parse_public(public.to_string().as_bytes(), "gateway")
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let example = read_json(&schemas.join(EXAMPLE))?;
        let run = uuid::Uuid::now_v7().simple().to_string();
        Ok(Self {
            own,
            gateway,
            example,
            run,
        })
    }

    /// The example payload padded to about `bytes` of compact JSON (never past a field's
    /// `maxLength`, so it stays valid).
    pub fn payload(&self, bytes: usize) -> Value {
        padded(&self.example, bytes)
    }

    /// The claims of one referral to the first `recipients` of [`RECIPIENTS`].
    pub fn claims(&self, payload: &Value, recipients: usize, jti: &str, iat: u64) -> Value {
        let to: Vec<&str> = RECIPIENTS.iter().take(recipients).copied().collect();
        json!({
            "iss": SENDER, "aud": "refex", "jti": jti, "iat": iat,
            "referral": {
                "type": REFERRAL_TYPE, "to": to, "sender_ref": jti,
                "lawful_basis": { "article6": "public-task", "article9": "substantial-public-interest",
                                  "dpa2018_schedule1": "para-18-safeguarding-children" },
                "consent": { "status": "given" },
                "subject_informed": { "status": "yes" },
                "payload": payload
            }
        })
    }

    /// `n` distinct bodies (JWE compact), built on every core. `tag` keeps `jti`s of
    /// different phases apart.
    pub fn bodies(
        &self,
        n: usize,
        recipients: usize,
        payload_bytes: usize,
        tag: &str,
        iat: u64,
    ) -> Result<Vec<Bytes>, BenchError> {
        let payload = self.payload(payload_bytes);
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let per = n.div_ceil(threads);
        let chunks: Vec<Result<Vec<Bytes>, BenchError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let payload = &payload;
                    scope.spawn(move || {
                        (t * per..((t + 1) * per).min(n))
                            .map(|i| {
                                let jti = format!("bench-{}-{tag}-{i}", self.run);
                                let people = distinct_people(payload, &format!("{tag}-{i}"));
                                let claims = self.claims(&people, recipients, &jti, iat);
                                partner::wrap(
                                    claims.to_string().as_bytes(),
                                    &self.own,
                                    &self.gateway,
                                )
                                .map(Bytes::from)
                                .map_err(|e| BenchError::Setup(e.to_string()))
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(BenchError::Setup("body builder panicked".into())))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(n);
        for chunk in chunks {
            out.extend(chunk?);
        }
        Ok(out)
    }
}

fn read_json(path: &Path) -> Result<Value, BenchError> {
    let bytes =
        std::fs::read(path).map_err(|e| BenchError::Setup(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", path.display())))
}

/// `example` with its free-text fields filled until its compact JSON is about `bytes` long.
fn padded(example: &Value, bytes: usize) -> Value {
    let mut value = example.clone();
    for (pointer, max) in PADDABLE {
        let size = value.to_string().len();
        if size >= bytes {
            break;
        }
        let Some(field) = value.pointer_mut(pointer) else {
            continue;
        };
        let current = field.as_str().map_or(0, str::len);
        let want = (current + bytes - size).min(max);
        *field = Value::String(filler(want));
    }
    value
}

/// `payload` about people no other referral of the run names: every family name gets the
/// letters of a hash of `salt`, and the NHS number becomes another valid one. A partnership's
/// referrals name different people, whose subject keys land on different pages of the
/// store's subject index; the same example every time would put a whole batch's keys on the
/// same few pages and flatter the store.
fn distinct_people(payload: &Value, salt: &str) -> Value {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(salt);
    let letters: String = (0..8)
        .map(|k| char::from(b'a' + ((h >> (k * 5)) % 26) as u8))
        .collect();
    let mut value = payload.clone();
    rename(&mut value, &letters);
    if let Some(nhs) = value.pointer_mut("/victim/nhs_number") {
        *nhs = Value::String(nhs_number(h));
    }
    value
}

/// Appends `letters` to every `family` name in `v`.
fn rename(v: &mut Value, letters: &str) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match (k.as_str(), child) {
                    ("family", Value::String(name)) => {
                        name.push('-');
                        name.push_str(letters);
                    }
                    (_, child) => rename(child, letters),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rename(c, letters)),
        _ => {}
    }
}

/// A valid NHS number (modulus 11 check digit) from `seed`.
fn nhs_number(mut seed: u64) -> String {
    loop {
        let digits: Vec<u32> = (0..9).map(|k| ((seed >> (k * 4)) % 10) as u32).collect();
        let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => {
                seed = seed.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
                continue;
            }
            c => c,
        };
        return digits
            .iter()
            .chain(std::iter::once(&check))
            .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
            .collect();
    }
}

/// Plain words, `len` bytes long.
fn filler(len: usize) -> String {
    const WORDS: &str =
        "Observed during the visit and recorded by the referrer for the receiving service. ";
    WORDS.chars().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join("schemas")
            .join(EXAMPLE);
        read_json(&path).expect("example")
    }

    #[test]
    fn payloads_reach_the_requested_size_within_a_few_bytes() {
        let e = example();
        for kb in [2, 5, 10] {
            let size = padded(&e, kb * 1024).to_string().len();
            assert!(size.abs_diff(kb * 1024) <= 8, "{kb} KB -> {size}");
        }
    }

    #[test]
    fn every_referral_names_other_people_still_valid() {
        let e = padded(&example(), 5 * 1024);
        let (a, b) = (distinct_people(&e, "x-1"), distinct_people(&e, "x-2"));
        assert_ne!(a["victim"]["name"], b["victim"]["name"]);
        assert_ne!(a["perpetrators"][0]["name"], b["perpetrators"][0]["name"]);
        assert_ne!(a["victim"]["nhs_number"], b["victim"]["nhs_number"]);
        for v in [&a, &b] {
            let nhs = v["victim"]["nhs_number"].as_str().unwrap();
            let d: Vec<u32> = nhs.chars().map(|c| c.to_digit(10).unwrap()).collect();
            let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
            assert_eq!(d.len(), 10);
            assert_eq!((11 - sum % 11) % 11, d[9], "{nhs}");
        }
    }

    #[test]
    fn padding_never_passes_a_fields_max_length() {
        let p = padded(&example(), 1_000_000);
        for (pointer, max) in PADDABLE {
            let len = p
                .pointer(pointer)
                .and_then(Value::as_str)
                .map_or(0, str::len);
            assert!(len <= max, "{pointer}: {len}");
        }
    }
}
