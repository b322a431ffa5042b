//! refex: a multi-agency referral exchange gateway for UK safeguarding partnerships.
//!
//! Layout follows the path a referral takes; each module says its one job in its `//!`.
//! See `docs/ARCHITECTURE.md` for the invariants that hold between them.

pub mod access;
pub mod api;
pub mod app;
pub mod audit;
pub mod bench;
pub mod breaker;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod devpki;
pub mod disclosure;
pub mod envelope;
pub mod files;
pub mod hosted;
pub mod housekeeping;
pub mod identity;
pub mod ids;
pub mod intake;
pub mod lawful;
pub mod lifecycle;
pub mod notify;
pub mod partner_client;
pub mod policy;
pub mod printable;
pub mod provision;
pub mod reload;
pub mod report;
pub mod review;
pub mod rotation;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod spool;
pub mod store;
pub mod subject;
pub mod submit;
pub mod telemetry;
pub mod tls;
pub mod toolkit;
pub mod trust;
