//! refex-core: the decisions and formats of the refex gateway that need no network, no
//! database and no async runtime — identities and ids, lawful bases, the permission policy,
//! the delivery lifecycle, the JOSE envelope, referral schemas and minimisation, the claims
//! of a referral, and the audit trail's events, Merkle maths and offline verification.
//!
//! The crate boundary is the rule: its `Cargo.toml` has no tokio, axum, hyper, sqlx or
//! reqwest, so nothing here can reach the network or a store (`tests/it/tidy.rs` in the gateway
//! checks the dependency graph). The gateway (`refex`) re-exports these modules under the
//! same paths (`refex::identity`, `refex::audit::event`, …).

pub mod agreements;
pub mod audit;
pub mod clock;
pub mod envelope;
pub mod files;
pub mod identity;
pub mod ids;
pub mod intake;
pub mod lawful;
pub mod lifecycle;
pub mod packing;
pub mod partners;
pub mod policy;
pub mod schema;
pub mod timestamp;
