//! JOSE, and only JOSE: key sets with `kid` lookup and the algorithm allow-lists (`keys`),
//! the allow-listed primitives (`jose`), opening referrals and sealing deliveries
//! (`referral`), signed gateway statements such as audit checkpoints (`signed`), and
//! encryption at rest of held referrals (`at_rest`), and the ciphertext they make (`sealed`).
//!
//! Nothing outside this module touches josekit.

pub mod at_rest;
pub mod ecdh;
pub mod es256;
pub mod jose;
pub mod keys;
pub mod referral;
pub mod sealed;
pub mod signed;
