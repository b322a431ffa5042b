//! JOSE, and only JOSE: key sets with `kid` lookup and the algorithm allow-lists.
//!
//! Nothing outside this module touches josekit. Opening inbound referrals (JWE → JWS) and
//! sealing deliveries (JWS → JWE) build on the key sets defined here.

pub mod jose;
pub mod keys;
