//! Signed JSON statements from the gateway (audit checkpoints): a compact JWS with the
//! gateway's current `sig` key, and its verification against a published JWKS.

use serde_json::Value;

use super::jose::{self, JoseError};
use super::keys::{KeySet, KeyUse};

/// Why a statement could not be signed or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    /// The gateway has no signing key.
    #[error("no signing key")]
    NoKey,
    /// JOSE refused it.
    #[error(transparent)]
    Jose(#[from] JoseError),
    /// The `typ` is not the one expected.
    #[error("JWS \"typ\" must be {0:?}")]
    Typ(&'static str),
    /// The payload is not JSON.
    #[error("payload is not JSON")]
    Payload,
}

/// Signs `payload` with the gateway's current `sig` key.
pub fn sign(payload: &Value, gateway: &KeySet, typ: &str) -> Result<String, SignedError> {
    let key = gateway.current(KeyUse::Sig).ok_or(SignedError::NoKey)?;
    Ok(jose::sign(payload.to_string().as_bytes(), key, typ)?)
}

/// Verifies a statement against a JWKS (any of its `sig` keys, by `kid`).
pub fn verify(compact: &str, jwks: &KeySet, typ: &'static str) -> Result<Value, SignedError> {
    let header = jose::jws_header(compact)?;
    if header.get("typ") != Some(typ) {
        return Err(SignedError::Typ(typ));
    }
    let (_, payload) = jose::verify(compact, |kid| jwks.find(kid, KeyUse::Sig))?;
    serde_json::from_slice(&payload).map_err(|_| SignedError::Payload)
}
