//! The integration tests, one binary: the real gateway over real mutual TLS against both
//! stores, its command line as a child process, and the repository's own checks. One
//! binary links the crate once instead of once per file; each file is a module.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[macro_use]
mod common;

mod access;
mod audit;
mod browser;
mod cli;
mod config_validation;
mod console;
mod crash;
mod deploy;
mod golive;
mod hardening;
mod hosted;
mod inbox;
mod intake_rules;
mod keys;
mod lifecycle;
mod lifecycle_property;
mod merkle_vectors;
mod minimise;
mod notify;
mod production;
mod records;
mod referrals;
mod reload;
mod replicas;
mod report_suppression;
mod reports;
mod reviews;
mod schemas;
mod store_conformance;
mod store_migration;
mod tidy;
mod toolkit;
