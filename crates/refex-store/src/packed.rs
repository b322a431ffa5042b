//! How the store packs an audit event's detail: raw deflate with a preset dictionary.
//!
//! An event is stored once, as the columns that place it (index, time, kind, referral,
//! delivery, actor) and its detail's canonical JSON, packed; its leaf text is rebuilt from
//! those parts (`refex_core::audit::event::LeafParts`) and its hash in `audit_nodes` proves the
//! rebuild. A detail is short (20–900 bytes) and made of the same few hundred words every time
//! (field names, lawful bases, schema pointers), so on its own deflate saves little; primed
//! with a dictionary of those words it keeps about an eighth of a `minimised` detail.
//!
//! Packed form: one version byte, then the raw deflate stream; or, for a detail too short for
//! deflate to pay (under [`SHORT`] bytes: `{"to":"imara"}`, `{}`), version 0 and the text
//! itself. Version 1 is primed with
//! `audit_dictionary_v1.txt`: the detail skeletons, the lawful-basis vocabulary, and the
//! type and view names and JSON pointers of the schemas shipped with 0.2.0. That file is part
//! of the stored format: changing it makes every detail packed with it unreadable (a test pins
//! its digest). A deployment whose schemas differ packs less well, never wrongly; a better
//! dictionary is a version 2 beside it.
//!
//! Deflating with a dictionary costs ~30–40 µs a detail, nearly all of it setting the
//! dictionary up, and a referral's events and deliveries are written by the store's one
//! writer: packed there, they lengthened every group commit by ~12 ms in 30 (`refex bench`).
//! So an acceptance packs its details ahead, on its own task before it queues
//! ([`pack_ahead`]), and the writer takes those packings ([`pack`]), packing itself only what
//! was not packed ahead (a withdrawal's events, say). And a detail is packed once however
//! often it recurs: a partnership's acceptances repeat the same few (the same sender, type,
//! basis and recipients; the same view of the same fields), so the packings of details are
//! kept, by content, up to [`MEMO_BYTES`]; a packing is a pure function of the text, so a
//! kept one is the one packing would make. A ciphertext is packed by the writer
//! (`Sealed::to_packed`: base64url decoding and a header deflated with a 170-byte dictionary):
//! held for the writer instead, the packing of a retried or refused acceptance, which writes
//! no delivery, was never taken (an outside review grew a gateway by 200 MB with 100 retries
//! of one large referral).
//!
//! Out of scope: which columns hold the parts (the audit module) and the leaf's text.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use refex_core::packing::{self, InflateError};

/// The version byte of a detail kept as its text.
const V0: u8 = 0;

/// Details shorter than this are kept as text: deflate's own framing and the dictionary's
/// set-up cost more than they save.
pub const SHORT: usize = 64;

/// Details' packings made ahead of the writer, by content, kept for the next acceptance with
/// the same detail; emptied when they would pass [`MEMO_BYTES`].
static AHEAD: LazyLock<Mutex<Ahead>> = LazyLock::new(Mutex::default);

/// The most bytes of details and their packings kept (counted by capacity).
pub const MEMO_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Ahead {
    details: HashMap<String, Vec<u8>>,
    detail_bytes: usize,
}

fn ahead() -> std::sync::MutexGuard<'static, Ahead> {
    AHEAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Packs `details` now, on the caller's task, for the writer to take.
pub(crate) fn pack_ahead(details: impl IntoIterator<Item = String>) {
    let new: Vec<String> = {
        let ahead = ahead();
        details
            .into_iter()
            .filter(|d| packs(d) && d.len() >= SHORT && !ahead.details.contains_key(d))
            .collect()
    };
    let details: Vec<(String, Vec<u8>)> = new
        .into_iter()
        .map(|mut d| {
            let mut p = pack_now(&d);
            d.shrink_to_fit();
            p.shrink_to_fit();
            (d, p)
        })
        .collect();
    let mut ahead = ahead();
    let adding: usize = details
        .iter()
        .map(|(d, p)| d.capacity() + p.capacity())
        .sum();
    if ahead.detail_bytes + adding > MEMO_BYTES {
        ahead.details.clear();
        ahead.detail_bytes = 0;
    }
    for (d, p) in details {
        let size = d.capacity() + p.capacity();
        // Two acceptances may have packed the same detail at once: counted once.
        if ahead.details.insert(d, p).is_none() {
            ahead.detail_bytes += size;
        }
    }
}

/// The dictionary of version 1 (see the module doc): frozen.
const DICTIONARY_V1: &[u8] = include_bytes!("audit_dictionary_v1.txt");

/// The version byte of details packed with [`DICTIONARY_V1`].
const V1: u8 = 1;

/// Deflate's window, as a power of two: 16 KiB, room for the dictionary and a detail.
const WINDOW_BITS: u8 = 14;

/// The longest detail packed, and so the most unpacking yields: more is a damaged or hostile
/// row, never an answer to build (an export holds a page of 1,000 leaves in memory). A
/// detail is a few KiB at most for the shipped types; a longer one (a pointer per item of a
/// very long array) is stored as its leaf text instead (see [`packs`]).
pub const MAX_DETAIL: usize = 64 * 1024;

/// Whether `detail` is stored packed: if it is at most [`MAX_DETAIL`] bytes, so that every
/// packed detail unpacks within the bound.
pub fn packs(detail: &str) -> bool {
    detail.len() <= MAX_DETAIL
}

/// A packed detail that does not unpack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnpackError {
    /// Empty, or a version this build does not know.
    #[error("unknown packing")]
    Version,
    /// The deflate stream is damaged or truncated.
    #[error("damaged deflate stream")]
    Stream,
    /// It would unpack to more than [`MAX_DETAIL`] bytes.
    #[error("unpacks to more than the longest detail")]
    TooLong,
    /// It unpacks to bytes that are not UTF-8.
    #[error("not UTF-8")]
    Text,
}

/// `detail` packed: as it was packed ahead, if it was. Only a detail that [`packs`] reads
/// back.
pub fn pack(detail: &str) -> Vec<u8> {
    if detail.len() >= SHORT {
        if let Some(packed) = ahead().details.get(detail) {
            return packed.clone();
        }
    }
    pack_now(detail)
}

/// `detail` packed here and now: as text if short, else deflated (version 1).
fn pack_now(detail: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(detail.len() / 4 + 16);
    if detail.len() < SHORT {
        out.push(V0);
        out.extend_from_slice(detail.as_bytes());
        return out;
    }
    out.push(V1);
    packing::deflate_into(DICTIONARY_V1, WINDOW_BITS, detail.as_bytes(), &mut out);
    out
}

/// A packed detail's JSON text, at most [`MAX_DETAIL`] bytes.
pub fn unpack(packed: &[u8]) -> Result<String, UnpackError> {
    let (&version, stream) = packed.split_first().ok_or(UnpackError::Version)?;
    if version == V0 {
        if stream.len() > MAX_DETAIL {
            return Err(UnpackError::TooLong);
        }
        return String::from_utf8(stream.to_vec()).map_err(|_| UnpackError::Text);
    }
    if version != V1 {
        return Err(UnpackError::Version);
    }
    let bytes =
        packing::inflate(DICTIONARY_V1, WINDOW_BITS, stream, MAX_DETAIL).map_err(|e| match e {
            InflateError::Stream => UnpackError::Stream,
            InflateError::TooLong => UnpackError::TooLong,
        })?;
    String::from_utf8(bytes).map_err(|_| UnpackError::Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMISED: &str = r#"{"to":"gp-practice","view":"gp/domestic-abuse","view_version":"92dabe17bc105d53","disclosed":["/victim/name/given","/victim/name/family","/victim/date_of_birth","/victim/nhs_number","/victim/address/line1","/victim/address/town","/victim/address/postcode","/risk_level"],"withheld":["/victim/gender","/victim/sexuality","/perpetrators","/dash","/marac_referral","/incident","/referrer"]}"#;

    #[test]
    fn a_detail_unpacks_to_exactly_its_text() {
        for detail in [
            MINIMISED,
            r#"{"to":"imara"}"#,
            "{}",
            "",
            r#"{"reason":"caf\u00e9 \"quoted\" ünïcödé"}"#,
        ] {
            assert_eq!(unpack(&pack(detail)).unwrap(), detail);
        }
        let long = format!("[{}]", vec![MINIMISED; 100].join(","));
        assert!(packs(&long));
        assert_eq!(unpack(&pack(&long)).unwrap(), long);
    }

    #[test]
    fn the_dictionary_packs_a_minimised_detail_to_a_fraction() {
        let packed = pack(MINIMISED);
        assert!(packed.len() * 4 < MINIMISED.len(), "{} bytes", packed.len());
    }

    /// The dictionary is stored format: every detail packed with it needs it byte for byte.
    #[test]
    fn the_version_1_dictionary_is_frozen() {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(DICTIONARY_V1));
        assert_eq!(
            digest, "52d6e1608ee408b5ab2c41239adf0aec21875937cf5c7f409d48cd050da58453",
            "audit_dictionary_v1.txt changed: packed details would no longer unpack; add a version 2 instead"
        );
    }

    #[test]
    fn a_short_detail_is_kept_as_text_and_reads_back() {
        let short = r#"{"to":"imara"}"#;
        let packed = pack(short);
        assert_eq!(packed[0], V0);
        assert_eq!(&packed[1..], short.as_bytes());
        assert_eq!(unpack(&packed).unwrap(), short);
        let mut bad = vec![V0];
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(unpack(&bad), Err(UnpackError::Text));
    }

    #[test]
    fn what_is_packed_ahead_is_what_the_writer_would_pack() {
        let detail = MINIMISED.replace("gp-practice", "ahead-test");
        pack_ahead([detail.clone()]);
        let taken = pack(&detail);
        assert_eq!(taken, pack_now(&detail));
        assert_eq!(unpack(&taken).unwrap(), detail);
        assert_eq!(
            pack(&detail),
            taken,
            "a detail's packing is kept for the next"
        );
        let before = ahead().detail_bytes;
        pack_ahead([detail.clone()]);
        assert_eq!(ahead().detail_bytes, before, "a detail is kept once");
    }

    #[test]
    fn damaged_packings_are_refused_not_guessed() {
        let packed = pack(MINIMISED);
        assert_eq!(unpack(&[]), Err(UnpackError::Version));
        assert_eq!(unpack(&[2, 0, 0]), Err(UnpackError::Version));
        assert_eq!(
            unpack(&packed[..packed.len() / 2]),
            Err(UnpackError::Stream)
        );
        let mut trailing = packed.clone();
        trailing.push(0);
        assert_eq!(unpack(&trailing), Err(UnpackError::Stream));
        let mut flipped = packed;
        flipped[3] ^= 0xff;
        assert_ne!(unpack(&flipped).ok().as_deref(), Some(MINIMISED));
    }

    #[test]
    fn a_bomb_stops_at_the_longest_detail() {
        let zeros = "0".repeat(MAX_DETAIL + 1);
        assert_eq!(unpack(&pack(&zeros)), Err(UnpackError::TooLong));
        let most = "0".repeat(MAX_DETAIL);
        assert_eq!(unpack(&pack(&most)).unwrap().len(), MAX_DETAIL);
    }
}
