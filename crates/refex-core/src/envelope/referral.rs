//! Opening an inbound referral: a compact JWE to one of the gateway's `enc` keys (`cty`
//! `JWT`), whose plaintext is a compact JWS (`typ` `referral+jwt`) signed with a key
//! registered to the partner the client certificate identifies.

use super::jose::{self, JoseError};
use super::keys::{KeySet, KeyUse};
use super::sealed::Sealed;

/// The `typ` of a referral JWS.
pub const REFERRAL_TYP: &str = "referral+jwt";
/// The `typ` of a delivery JWS.
pub const DELIVERY_TYP: &str = "delivery+jwt";

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not text.
    #[error("body is not a compact JOSE serialisation")]
    NotText,
    /// The JWE was refused.
    #[error(transparent)]
    Jwe(JoseError),
    /// The JWE's `cty` is not `JWT`.
    #[error("JWE \"cty\" must be \"JWT\"")]
    Cty,
    /// The JWS was refused.
    #[error(transparent)]
    Jws(JoseError),
    /// The JWS's `typ` is wrong.
    #[error("JWS \"typ\" must be \"{0}\"")]
    Typ(&'static str),
    /// The signing key is not one registered to the sending partner.
    #[error("the JWS signing key is not registered to the sending partner")]
    SignerNotSender,
}

impl EnvelopeError {
    /// A stable slug for problems and audit events.
    pub fn slug(&self) -> &'static str {
        match self {
            EnvelopeError::NotText => "malformed-envelope",
            EnvelopeError::Jwe(JoseError::Decrypt) => "undecryptable",
            EnvelopeError::Jwe(JoseError::UnknownKid { .. }) => "unknown-key",
            EnvelopeError::Jwe(JoseError::Malformed(_) | JoseError::Header(_)) => {
                "malformed-envelope"
            }
            EnvelopeError::Jwe(_) | EnvelopeError::Cty => "disallowed-jwe",
            EnvelopeError::Jws(JoseError::Signature) => "bad-signature",
            EnvelopeError::Jws(JoseError::Malformed(_) | JoseError::Header(_)) => {
                "malformed-envelope"
            }
            EnvelopeError::Jws(_) | EnvelopeError::Typ(_) => "disallowed-jws",
            EnvelopeError::SignerNotSender => "signer-not-sender",
        }
    }
}

/// Opens a referral envelope; returns the signed payload bytes (JSON, not yet parsed).
pub fn open(body: &[u8], gateway: &KeySet, sender: &KeySet) -> Result<Vec<u8>, EnvelopeError> {
    let compact = std::str::from_utf8(body)
        .map_err(|_| EnvelopeError::NotText)?
        .trim();
    let header = jose::jwe_header(compact).map_err(EnvelopeError::Jwe)?;
    if header.get("cty") != Some("JWT") {
        return Err(EnvelopeError::Cty);
    }
    let (_, inner) =
        jose::decrypt(compact, |kid| gateway.find(kid, KeyUse::Enc)).map_err(EnvelopeError::Jwe)?;
    let jws =
        std::str::from_utf8(&inner).map_err(|_| EnvelopeError::Jws(JoseError::Malformed("JWS")))?;
    let jws_header = jose::jws_header(jws).map_err(EnvelopeError::Jws)?;
    if jws_header.get("typ") != Some(REFERRAL_TYP) {
        return Err(EnvelopeError::Typ(REFERRAL_TYP));
    }
    let kid = jws_header.get("kid").unwrap_or_default();
    if sender.find(kid, KeyUse::Sig).is_none() {
        return Err(EnvelopeError::SignerNotSender);
    }
    let (_, payload) =
        jose::verify(jws, |kid| sender.find(kid, KeyUse::Sig)).map_err(EnvelopeError::Jws)?;
    Ok(payload)
}

/// Why sealing failed (a configuration fault: a key missing or unusable).
#[derive(Debug, thiserror::Error)]
#[error("cannot seal: {0}")]
pub struct SealError(pub String);

/// Seals a delivery: a JWS (`typ` `delivery+jwt`) signed with the gateway's current `sig`
/// key, inside a JWE (`cty` `JWT`) to the recipient's current `enc` key.
pub fn seal(payload: &[u8], gateway: &KeySet, recipient: &KeySet) -> Result<Sealed, SealError> {
    let sig = gateway
        .current(KeyUse::Sig)
        .ok_or_else(|| SealError("gateway has no signing key".into()))?;
    let enc = recipient
        .current(KeyUse::Enc)
        .ok_or_else(|| SealError("recipient has no encryption key".into()))?;
    let jws = jose::sign(payload, sig, DELIVERY_TYP).map_err(|e| SealError(e.to_string()))?;
    let jwe = jose::encrypt(jws.as_bytes(), enc, "JWT").map_err(|e| SealError(e.to_string()))?;
    Sealed::parse(jwe).map_err(|e| SealError(e.to_string()))
}

/// Partner-side helpers: what a partner system does to send and to read (used by the
/// `refex send`/`inbox` tools and by tests playing a partner).
pub mod partner {
    use super::*;

    /// Signs a referral payload with the partner's current `sig` key and encrypts it to the
    /// gateway's current `enc` key.
    pub fn wrap(
        payload: &[u8],
        own: &KeySet,
        gateway_public: &KeySet,
    ) -> Result<String, SealError> {
        let sig = own
            .current(KeyUse::Sig)
            .ok_or_else(|| SealError("partner has no signing key".into()))?;
        let enc = gateway_public
            .current(KeyUse::Enc)
            .ok_or_else(|| SealError("gateway has no encryption key".into()))?;
        let jws = jose::sign(payload, sig, REFERRAL_TYP).map_err(|e| SealError(e.to_string()))?;
        jose::encrypt(jws.as_bytes(), enc, "JWT").map_err(|e| SealError(e.to_string()))
    }

    /// Decrypts a delivery with the partner's own keys and verifies the gateway's signature.
    pub fn unwrap(
        compact: &str,
        own: &KeySet,
        gateway_public: &KeySet,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let (_, inner) =
            jose::decrypt(compact, |kid| own.find(kid, KeyUse::Enc)).map_err(EnvelopeError::Jwe)?;
        let jws = std::str::from_utf8(&inner)
            .map_err(|_| EnvelopeError::Jws(JoseError::Malformed("JWS")))?;
        let h = jose::jws_header(jws).map_err(EnvelopeError::Jws)?;
        if h.get("typ") != Some(DELIVERY_TYP) {
            return Err(EnvelopeError::Typ(DELIVERY_TYP));
        }
        let (_, payload) = jose::verify(jws, |kid| gateway_public.find(kid, KeyUse::Sig))
            .map_err(EnvelopeError::Jws)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::keys::{generate_p256, public_document};
    use serde_json::json;

    fn private(owner: &str) -> (KeySet, KeySet) {
        let doc = json!({ "keys": [
            generate_p256(&format!("{owner}-enc"), KeyUse::Enc).unwrap(),
            generate_p256(&format!("{owner}-sig"), KeyUse::Sig).unwrap(),
        ]});
        let text = doc.to_string();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        std::fs::write(&path, &text).unwrap();
        let private = KeySet::load_private(&path).unwrap();
        let public =
            KeySet::parse_public(public_document(&doc).unwrap().to_string().as_bytes(), "t")
                .unwrap();
        (private, public)
    }

    #[test]
    fn a_partner_referral_opens_and_a_delivery_unwraps() {
        let (gw, gw_pub) = private("gw");
        let (police, police_pub) = private("police");
        let (imara, imara_pub) = private("imara");
        let body = partner::wrap(b"{\"iss\":\"notts-police\"}", &police, &gw_pub).unwrap();
        assert_eq!(
            open(body.as_bytes(), &gw, &police_pub).unwrap(),
            b"{\"iss\":\"notts-police\"}"
        );
        // Signed by another partner's key: refused as not the sender's.
        assert_eq!(
            open(body.as_bytes(), &gw, &imara_pub).unwrap_err(),
            EnvelopeError::SignerNotSender
        );
        let sealed = seal(b"{\"delivery\":{}}", &gw, &imara_pub).unwrap();
        assert_eq!(
            partner::unwrap(sealed.as_str(), &imara, &gw_pub).unwrap(),
            b"{\"delivery\":{}}"
        );
        assert!(partner::unwrap(sealed.as_str(), &police, &gw_pub).is_err());
    }

    #[test]
    fn a_sealed_delivery_keeps_only_its_headers_fields_and_unwraps_after() {
        let (gw, gw_pub) = private("gw");
        let (imara, imara_pub) = private("imara");
        let sealed = seal(b"{\"delivery\":{}}", &gw, &imara_pub).unwrap();
        let packed = sealed.to_packed();
        assert_eq!(
            packed[0], 2,
            "the gateway's own header is kept as its fields"
        );
        let back = Sealed::from_packed(&packed).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(
            partner::unwrap(back.as_str(), &imara, &gw_pub).unwrap(),
            b"{\"delivery\":{}}"
        );
    }

    #[test]
    fn garbage_and_truncated_envelopes_are_refused() {
        let (gw, gw_pub) = private("gw");
        let (police, police_pub) = private("police");
        let body = partner::wrap(b"{}", &police, &gw_pub).unwrap();
        for bad in [
            &b"garbage"[..],
            &body.as_bytes()[..body.len() / 2],
            &[0xff, 0xfe][..],
        ] {
            assert!(open(bad, &gw, &police_pub).is_err());
        }
    }
}
