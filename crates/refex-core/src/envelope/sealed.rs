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
        let base64url = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
}

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
        let s = Sealed::parse(good).unwrap();
        assert_eq!(format!("{s:?}"), format!("Sealed({} bytes)", s.len()));
    }
}
