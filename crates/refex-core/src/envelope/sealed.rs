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
    /// Checks that `text` has a compact JWE's shape (its cryptography is checked when it is
    /// opened).
    pub fn parse(text: String) -> Result<Self, NotSealed> {
        let segments: Vec<&str> = text.split('.').collect();
        let base64url = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if segments.len() == 5 && !segments[0].is_empty() && segments.iter().all(|s| base64url(s)) {
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

impl fmt::Debug for Sealed {
    /// Its length only: logs and errors never carry ciphertext either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_compact_jwe_is_sealed() {
        assert!(Sealed::parse("eyJhbGciOiJkaXIifQ..aXY.Y3Q.dGFn".into()).is_ok());
        for bad in [
            "",
            "{\"child\":{\"name\":\"A\"}}",
            "eyJ.a.b.c",
            "eyJ.a.b.c.d.e",
            ".a.b.c.d",
            "eyJ.a b.c.d.e",
            "eyJ.a+b.c.d.e",
        ] {
            assert_eq!(Sealed::parse(bad.into()), Err(NotSealed), "{bad:?}");
        }
        let s = Sealed::parse("eyJhbGciOiJkaXIifQ..aXY.Y3Q.dGFn".into()).unwrap();
        assert_eq!(format!("{s:?}"), "Sealed(32 bytes)");
    }
}
