//! Ciphertext as the gateway keeps and hands it on: a JWE in compact serialisation. What
//! the store holds of a delivery, a hold, a justification or a rejection's reason is a
//! [`Sealed`], and only the envelope's sealing functions and [`Sealed::parse`] make one, so
//! plaintext cannot be stored where ciphertext is expected.

use std::fmt;

/// A JWE in compact serialisation: five base64url segments, the header non-empty.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(String);

/// A value that is not a compact JWE (it is never echoed: it might be plaintext).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a compact JWE")]
pub struct NotSealed;

impl Sealed {
    /// Checks that `text` is shaped as a compact JWE: five base64url segments, the first a
    /// JOSE header (a JSON object naming its `alg` and `enc`), the initialisation vector,
    /// ciphertext and tag present (the encrypted key is empty under `dir`). Its cryptography
    /// is checked when it is opened; this is what keeps plaintext (even plaintext split by
    /// dots) from being stored, or handed on, as a sealed value.
    pub fn parse(text: String) -> Result<Self, NotSealed> {
        let segments: Vec<&str> = text.split('.').collect();
        // Without short-circuits the compiler checks many bytes at a time: a delivery's
        // ciphertext is ~10 KB, checked each time one is sealed or read back.
        let base64url = |s: &str| {
            s.as_bytes().chunks(64).all(|chunk| {
                chunk.iter().fold(true, |ok, &b| {
                    ok & (b.is_ascii_uppercase()
                        | b.is_ascii_lowercase()
                        | b.is_ascii_digit()
                        | (b == b'-')
                        | (b == b'_'))
                })
            })
        };
        let [header, _key, iv, ciphertext, tag] = segments.as_slice() else {
            return Err(NotSealed);
        };
        let shaped = segments.iter().all(|s| base64url(s))
            && [iv, ciphertext, tag].iter().all(|s| !s.is_empty())
            && is_jwe_header(header);
        if shaped {
            Ok(Self(text))
        } else {
            Err(NotSealed)
        }
    }

    /// The compact serialisation.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (what the inbox lists as a delivery's size).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a compact JWE has at least its header (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The compact serialisation, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The form a store keeps it in: its five segments' bytes rather than their base64url
    /// text, three quarters of the size. Version byte 1, then the header, encrypted key,
    /// initialisation vector and ciphertext each as a LEB128 length and its bytes, then the
    /// tag; the header's JSON is deflated with [`HEADER_WORDS`] (to about three fifths: the
    /// ephemeral key, which does not compress, is most of it). Version byte 2 is the same
    /// but for a header exactly as the gateway's sealing writes it ([`GatewayHeader`]): then
    /// only its `kid` and the ephemeral key's 64 bytes are kept, with no deflate to run
    /// either way. A segment whose base64url is not
    /// canonical (none the gateway writes) would not come back as the same text, and a
    /// header longer than `MAX_HEADER` (16 KiB) would not unpack, so then the text itself is kept,
    /// under version byte 0. [`Sealed::from_packed`] reads each back.
    pub fn to_packed(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut out = Vec::with_capacity(self.0.len() * 3 / 4 + 16);
        out.push(PACKED_SEGMENTS);
        let segments: Vec<&str> = self.0.split('.').collect();
        for (k, segment) in segments.iter().enumerate() {
            // The engine refuses padding and set trailing bits, so whatever it decodes
            // encodes back to the same text (`the_packed_form_reads_back_as_the_same_text`).
            let canonical = b64.decode(segment).ok();
            // A header longer than unpacking allows (a very long `kid`) is kept as text too.
            let canonical = canonical.filter(|bytes| k != 0 || bytes.len() <= MAX_HEADER);
            let Some(bytes) = canonical else {
                let mut text = Vec::with_capacity(self.0.len() + 1);
                text.push(PACKED_TEXT);
                text.extend_from_slice(self.0.as_bytes());
                return text;
            };
            let bytes = if k != 0 {
                bytes
            } else if let Some(fields) = GatewayHeader::pack(&bytes) {
                out[0] = PACKED_GATEWAY_HEADER;
                fields
            } else {
                let mut deflated = Vec::with_capacity(bytes.len());
                crate::packing::deflate_into(HEADER_WORDS, HEADER_WINDOW, &bytes, &mut deflated);
                deflated
            };
            if k + 1 < segments.len() {
                let mut n = bytes.len();
                while n >= 0x80 {
                    out.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                out.push(n as u8);
            }
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Reads back what [`Sealed::to_packed`] wrote, and checks it as [`Sealed::parse`] does.
    pub fn from_packed(packed: &[u8]) -> Result<Self, NotSealed> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (&version, mut rest) = packed.split_first().ok_or(NotSealed)?;
        match version {
            PACKED_TEXT => {
                let text = std::str::from_utf8(rest).map_err(|_| NotSealed)?;
                Self::parse(text.to_owned())
            }
            PACKED_SEGMENTS | PACKED_GATEWAY_HEADER => {
                let mut text = String::with_capacity(packed.len() * 4 / 3 + 256);
                for k in 0..4 {
                    let mut n: usize = 0;
                    let mut shift = 0;
                    loop {
                        let (&b, tail) = rest.split_first().ok_or(NotSealed)?;
                        rest = tail;
                        if shift > 28 {
                            return Err(NotSealed);
                        }
                        n |= usize::from(b & 0x7f) << shift;
                        shift += 7;
                        if b & 0x80 == 0 {
                            break;
                        }
                    }
                    if n > rest.len() {
                        return Err(NotSealed);
                    }
                    let (segment, tail) = rest.split_at(n);
                    if k == 0 && version == PACKED_GATEWAY_HEADER {
                        let header = GatewayHeader::unpack(segment).ok_or(NotSealed)?;
                        b64.encode_string(header, &mut text);
                    } else if k == 0 {
                        let header = crate::packing::inflate(
                            HEADER_WORDS,
                            HEADER_WINDOW,
                            segment,
                            MAX_HEADER,
                        )
                        .map_err(|_| NotSealed)?;
                        b64.encode_string(header, &mut text);
                    } else {
                        b64.encode_string(segment, &mut text);
                    }
                    text.push('.');
                    rest = tail;
                }
                b64.encode_string(rest, &mut text);
                Self::parse(text)
            }
            _ => Err(NotSealed),
        }
    }
}

/// [`Sealed::to_packed`]'s version byte for the compact text kept as it is.
const PACKED_TEXT: u8 = 0;
/// [`Sealed::to_packed`]'s version byte for the segments' bytes.
const PACKED_SEGMENTS: u8 = 1;

/// [`Sealed::to_packed`]'s version byte for the segments' bytes with the header as
/// [`GatewayHeader`] keeps it.
const PACKED_GATEWAY_HEADER: u8 = 2;

/// The JWE header the gateway's sealing writes (`envelope::ecdh` under josekit), byte for
/// byte: `{"enc":"A256GCM","cty":"JWT","kid":KID,"epk":{"kty":"EC","crv":"P-256","x":X,"y":Y},"alg":"ECDH-ES+A256KW"}`.
/// Kept as the `kid`'s bytes followed by the ephemeral point's two 32-byte coordinates:
/// stored format, like [`HEADER_WORDS`]. Anything else (another library's header, other
/// members or another order) is deflated instead.
struct GatewayHeader;

impl GatewayHeader {
    const HEAD: &'static str = r#"{"enc":"A256GCM","cty":"JWT","kid":""#;
    const EPK: &'static str = r#"","epk":{"kty":"EC","crv":"P-256","x":""#;
    const Y: &'static str = r#"","y":""#;
    const TAIL: &'static str = r#""},"alg":"ECDH-ES+A256KW"}"#;
    /// A coordinate's base64url length (32 bytes).
    const COORDINATE: usize = 43;

    /// `header`'s `kid` and coordinates, when rebuilding from them gives `header` back
    /// exactly (so a packing can never change a header's bytes, which the JWE
    /// authenticates).
    fn pack(header: &[u8]) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let text = std::str::from_utf8(header).ok()?;
        let rest = text.strip_prefix(Self::HEAD)?;
        let tail_len = Self::EPK.len() + 2 * Self::COORDINATE + Self::Y.len() + Self::TAIL.len();
        let kid = rest.get(..rest.len().checked_sub(tail_len)?)?;
        let rest = rest[kid.len()..].strip_prefix(Self::EPK)?;
        let (x, rest) = rest.split_at_checked(Self::COORDINATE)?;
        let y = rest.strip_prefix(Self::Y)?.strip_suffix(Self::TAIL)?;
        let mut out = Vec::with_capacity(kid.len() + 64);
        out.extend_from_slice(kid.as_bytes());
        for coordinate in [x, y] {
            let bytes = b64.decode(coordinate).ok()?;
            if bytes.len() != 32 {
                return None;
            }
            out.extend_from_slice(&bytes);
        }
        (Self::unpack(&out)? == header).then_some(out)
    }

    /// The header [`GatewayHeader::pack`] kept.
    fn unpack(fields: &[u8]) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (kid, point) = fields.split_at_checked(fields.len().checked_sub(64)?)?;
        let kid = std::str::from_utf8(kid).ok()?;
        if kid.len() > MAX_HEADER {
            return None;
        }
        let mut text = String::with_capacity(kid.len() + 200);
        text.push_str(Self::HEAD);
        text.push_str(kid);
        text.push_str(Self::EPK);
        b64.encode_string(&point[..32], &mut text);
        text.push_str(Self::Y);
        b64.encode_string(&point[32..], &mut text);
        text.push_str(Self::TAIL);
        Some(text.into_bytes())
    }
}

/// What a JWE header the gateway writes is made of, the dictionary its packed header is
/// deflated with. Stored format: changing it makes every packed delivery unreadable (a test
/// pins it); a better one is a new version byte beside it.
const HEADER_WORDS: &[u8] = br#"{"alg":"dir","enc":"A128GCM","typ":"JWT","alg":"ECDH-ES","enc":"A256GCM","cty":"JWT","kid":"-enc-","epk":{"kty":"EC","crv":"P-256","x":"","y":""},"alg":"ECDH-ES+A256KW"}"#;

/// The window a packed header is deflated over: 1 KiB, room for the words and a header.
const HEADER_WINDOW: u8 = 10;

/// The longest header unpacking yields: more is a damaged or hostile row.
const MAX_HEADER: usize = 16 * 1024;

/// Whether a compact JWE's first segment is a JOSE header naming `alg` and `enc`.
fn is_jwe_header(segment: &str) -> bool {
    use base64::Engine as _;
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment) else {
        return false;
    };
    let Ok(serde_json::Value::Object(header)) = serde_json::from_slice(&json) else {
        return false;
    };
    ["alg", "enc"]
        .iter()
        .all(|k| header.get(*k).is_some_and(serde_json::Value::is_string))
}

impl fmt::Debug for Sealed {
    /// Its length only: logs and errors never carry ciphertext either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"alg":"dir","enc":"A256GCM"}`, base64url.
    const HEADER: &str = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0";

    #[test]
    fn only_a_compact_jwe_is_sealed() {
        let good = format!("{HEADER}..aXY.Y3Q.dGFn");
        assert!(Sealed::parse(good.clone()).is_ok());
        assert!(Sealed::parse(format!("{HEADER}.a2V5.aXY.Y3Q.dGFn")).is_ok());
        for bad in [
            String::new(),
            "{\"child\":{\"name\":\"A\"}}".into(),
            // Plaintext that happens to split into five base64url-looking parts.
            "Amy.Smith.2015-03-02.raped-by-stepfather.NP-2026-1".into(),
            "eyJhbGciOiJkaXIifQ..aXY.Y3Q.dGFn".into(), // no enc
            format!("{HEADER}..aXY..dGFn"),            // no ciphertext
            format!("{HEADER}.a.b.c"),
            format!("{HEADER}.a.b.c.d.e"),
            ".a.b.c.d".into(),
            format!("{HEADER}.a b.c.d.e"),
            format!("{HEADER}.a+b.c.d.e"),
        ] {
            assert_eq!(Sealed::parse(bad.clone()), Err(NotSealed), "{bad:?}");
        }
        // Every byte of a long segment is checked, the characters either side of each
        // base64url range included.
        let long = "QUJD".repeat(100);
        assert!(Sealed::parse(format!("{HEADER}..aXY.{long}-_09azAZ.dGFn")).is_ok());
        for at in [0, 63, 64, 130, 399] {
            for c in ['+', '/', '=', '@', '[', '`', '{', ':', ',', '\u{7f}', 'é'] {
                let mut ct = long.clone();
                ct.insert(at, c);
                let bad = format!("{HEADER}..aXY.{ct}.dGFn");
                assert_eq!(Sealed::parse(bad), Err(NotSealed), "{c:?} at {at}");
            }
        }
        let s = Sealed::parse(good).unwrap();
        assert_eq!(format!("{s:?}"), format!("Sealed({} bytes)", s.len()));
    }

    #[test]
    fn the_packed_form_reads_back_as_the_same_text() {
        let long = "QUJD".repeat(400);
        for text in [
            format!("{HEADER}..aXY.Y3Q.dGFn"),
            format!("{HEADER}.a2V5.aXY.{long}.dGFn"),
            // Not canonical base64url (trailing bits set): kept as text, still the same.
            format!("{HEADER}.a2V.aXY.Y3Q.dGFn"),
            // A header longer than unpacking allows: kept as text, still the same.
            long_header(),
        ] {
            let sealed = Sealed::parse(text.clone()).unwrap();
            let packed = sealed.to_packed();
            assert_eq!(Sealed::from_packed(&packed).unwrap().as_str(), text);
        }
        let big = Sealed::parse(format!("{HEADER}.a2V5.aXY.{long}.dGFn")).unwrap();
        assert!(big.to_packed().len() * 4 <= big.len() * 3 + 16);
        assert_eq!(
            Sealed::parse(format!("{HEADER}.a2V.aXY.Y3Q.dGFn"))
                .unwrap()
                .to_packed()[0],
            PACKED_TEXT
        );
    }

    /// The header words are stored format: every packed delivery needs them byte for byte.
    #[test]
    fn the_header_words_are_frozen() {
        use sha2::Digest as _;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(HEADER_WORDS)),
            "99e8a494885924eb417f47bd4032a1d392072adf7ad6304ad35799fb6e87ce15",
            "HEADER_WORDS changed: packed deliveries would no longer read; add a version instead"
        );
    }

    #[test]
    fn a_gateway_header_packs_to_two_thirds() {
        use base64::Engine as _;
        let header = br#"{"enc":"A256GCM","cty":"JWT","kid":"acute-hospital-enc-4299954183d9","epk":{"kty":"EC","crv":"P-256","x":"oJx3UzzigN2oeRqIZkz2PXF6gtApfAlB7ZS88eVbpDE","y":"DytZEZ4QUfPHRAuQllBVc1tTV0qR_n2fHEmyp1nGBQw"},"alg":"ECDH-ES+A256KW"}"#;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
        let text = format!("{b64}.a2V5.aXY.Y3Q.dGFn");
        let packed = Sealed::parse(text.clone()).unwrap().to_packed();
        assert_eq!(Sealed::from_packed(&packed).unwrap().as_str(), text);
        assert!(
            packed.len() < header.len() * 2 / 3 + 16,
            "{} bytes",
            packed.len()
        );
    }

    #[test]
    fn only_the_gateways_own_header_is_kept_as_fields() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = |kid: &str, x: &str| {
            format!(
                r#"{{"enc":"A256GCM","cty":"JWT","kid":"{kid}","epk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"DytZEZ4QUfPHRAuQllBVc1tTV0qR_n2fHEmyp1nGBQw"}},"alg":"ECDH-ES+A256KW"}}"#
            )
        };
        let x = "oJx3UzzigN2oeRqIZkz2PXF6gtApfAlB7ZS88eVbpDE";
        let gateway = header("acute-hospital-enc-4299954183d9", x);
        let reordered = gateway
            .replace(r#","alg":"ECDH-ES+A256KW"}"#, "}")
            .replacen('{', r#"{"alg":"ECDH-ES+A256KW","#, 1);
        for (json, version) in [
            (gateway.clone(), PACKED_GATEWAY_HEADER),
            // Whatever the kid, the header comes back byte for byte.
            (header(r#"k\"id\u0022"#, x), PACKED_GATEWAY_HEADER),
            (header("", x), PACKED_GATEWAY_HEADER),
            // Not as the gateway writes it: deflated.
            (reordered, PACKED_SEGMENTS),
            (gateway.replace(r#""JWT""#, r#""JWT" "#), PACKED_SEGMENTS),
            // A coordinate that is not 32 bytes of canonical base64url.
            (header("k", &x.replace("pDE", "pDF")), PACKED_SEGMENTS),
            (header("k", &x[1..]), PACKED_SEGMENTS),
        ] {
            let text = format!("{}.a2V5.aXY.Y3Q.dGFn", b64.encode(&json));
            let packed = Sealed::parse(text.clone()).unwrap().to_packed();
            assert_eq!(packed[0], version, "{json}");
            assert_eq!(Sealed::from_packed(&packed).unwrap().as_str(), text);
        }
        let packed = Sealed::parse(format!("{}.a2V5.aXY.Y3Q.dGFn", b64.encode(&gateway)))
            .unwrap()
            .to_packed();
        // The version; the kid (31 bytes) and the point (64); the key, iv and ciphertext
        // each with its length; the tag.
        assert_eq!(
            packed.len(),
            1 + (1 + 31 + 64) + (1 + 3) + (1 + 2) + (1 + 2) + 3
        );
        // Fields too short to hold a point, or a kid that is not UTF-8: not sealed.
        let mut short = vec![PACKED_GATEWAY_HEADER, 63];
        short.extend_from_slice(&[7; 63]);
        short.extend_from_slice(&[3, 1, 2, 3, 1, 9, 1, 9, 7]);
        assert_eq!(Sealed::from_packed(&short), Err(NotSealed));
        let mut not_text = vec![PACKED_GATEWAY_HEADER, 65, 0xff];
        not_text.extend_from_slice(&[7; 64]);
        not_text.extend_from_slice(&[3, 1, 2, 3, 1, 9, 1, 9, 7]);
        assert_eq!(Sealed::from_packed(&not_text), Err(NotSealed));
    }

    fn long_header() -> String {
        use base64::Engine as _;
        let kid = "k".repeat(MAX_HEADER);
        let header = format!(r#"{{"alg":"dir","enc":"A256GCM","kid":"{kid}"}}"#);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
        format!("{b64}..aXY.Y3Q.dGFn")
    }

    #[test]
    fn a_header_too_long_to_unpack_is_kept_as_text() {
        let sealed = Sealed::parse(long_header()).unwrap();
        assert_eq!(sealed.to_packed()[0], PACKED_TEXT);
    }

    #[test]
    fn a_damaged_packing_is_not_sealed() {
        let packed = Sealed::parse(format!("{HEADER}.a2V5.aXY.Y3Q.dGFn"))
            .unwrap()
            .to_packed();
        assert_eq!(Sealed::from_packed(&[]), Err(NotSealed));
        assert_eq!(Sealed::from_packed(&[7, 1, 2]), Err(NotSealed));
        assert_eq!(Sealed::from_packed(&packed[..5]), Err(NotSealed));
        // A length past the end, and one that never ends.
        assert_eq!(Sealed::from_packed(&[1, 0xff, 0x01, 1]), Err(NotSealed));
        assert_eq!(
            Sealed::from_packed(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(NotSealed)
        );
        // Plaintext stored as if it were a text packing is still refused.
        let mut plain = vec![PACKED_TEXT];
        plain.extend_from_slice(b"Amy.Smith.2015-03-02.raped-by-stepfather.NP-2026-1");
        assert_eq!(Sealed::from_packed(&plain), Err(NotSealed));
    }
}
