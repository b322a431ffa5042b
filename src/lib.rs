//! refex: a multi-agency referral exchange gateway for UK safeguarding partnerships.
//!
//! Layout follows the path a referral takes; each module says its one job in its `//!`.
//! See `docs/ARCHITECTURE.md` for the invariants that hold between them.

pub use refex_core::{
    clock, envelope, files, identity, ids, intake, lawful, lifecycle, policy, schema, timestamp,
};
/// The partner SDK (its own crate), under the name the toolkit and tests know.
pub use refex_partner as partner_client;
pub use refex_store as store;

pub mod access;
pub mod api;
pub mod app;
pub mod audit;
pub mod breaker;
pub mod ca;
pub mod cli;
pub mod config;
pub mod console;
pub mod cpu;
pub mod devpki;
pub mod disclosure;
pub mod hosted;
pub mod housekeeping;
pub mod notify;
pub mod printable;
pub mod provision;
pub mod readiness;
pub mod reload;
pub mod report;
pub mod review;
pub mod rotation;
pub mod runtime;
pub mod server;
pub mod spool;
pub mod subject;
pub mod submit;
pub mod telemetry;
pub mod tls;
pub mod toolkit;
pub mod trust;
