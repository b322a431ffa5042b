//! CSRF protection for the console's forms: a signed double-submit token (a random cookie,
//! and a form field that is an HMAC of that cookie and the client certificate's fingerprint
//! under a secret derived from the storage key), plus an `Origin` check and `SameSite=Strict`.
//! A mutual-TLS browser sends its certificate to any site's forms, so this is not optional.

use hmac::Mac as _;

use crate::envelope::at_rest::StorageKey;
use crate::identity::Fingerprint;

/// The cookie's name (`__Host-`: Secure, no Domain, Path=/).
pub const COOKIE: &str = "__Host-refex-csrf";

/// A fresh random cookie value.
pub fn new_cookie() -> String {
    format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    )
}

/// The `Set-Cookie` header value for `value`.
pub fn set_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; Secure; HttpOnly; SameSite=Strict; Path=/")
}

/// The form token for a cookie value and certificate.
pub fn token(key: &StorageKey, cookie: &str, who: &Fingerprint) -> String {
    let secret = key.derive("refex console csrf v1");
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(cookie.as_bytes());
    mac.update(b"|");
    mac.update(who.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The cookie's value from a `Cookie` header.
pub fn cookie_value(header: Option<&str>) -> Option<String> {
    header?
        .split(';')
        .map(str::trim)
        .find_map(|c| c.strip_prefix(&format!("{COOKIE}=")))
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

/// Whether a form post is genuine: the cookie is present, the token matches it for this
/// certificate (compared in constant time), and any `Origin` is this gateway's.
pub fn check(
    key: &StorageKey,
    cookie: Option<&str>,
    form_token: &str,
    who: &Fingerprint,
    origin: Option<&str>,
    host: Option<&str>,
) -> bool {
    let Some(cookie) = cookie else { return false };
    let expected = token(key, cookie, who);
    let same = expected.len() == form_token.len()
        && expected
            .bytes()
            .zip(form_token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    let origin_ok = match (origin, host) {
        (None, _) => true,
        (Some(o), Some(h)) => o == format!("https://{h}"),
        (Some(_), None) => false,
    };
    same && origin_ok
}
