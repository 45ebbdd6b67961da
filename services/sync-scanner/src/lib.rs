//! sync-scanner: the beacon agent that discovers images through the Registry HTTP API v2.
//!
//! It learns registries, rules and sync requests from the stream, scans on a schedule, on
//! demand and on webhooks, and emits only what changed.
//!
//! - [`store`]: its state, a projection of the stream (registries, rules, the tags it
//!   announced, its scans) plus the content cache ([`cache`]);
//! - [`bus`]: the projectors, and `sync.requested` → scan jobs;
//! - [`scan`]: one scan of one registry: list, select by rules, diff, emit;
//! - [`jobs`] and [`runner`]: scan jobs on a JetStream work queue and a KV lease per
//!   registry (replicas share the work, never scan one registry at once), the schedule;
//! - [`trust`]: referrers of every digest, their content read once, trust policies
//!   evaluated on scans, on rule changes and on a timer;
//! - [`integrity`]: the rolling sweep that re-verifies every immutable tag by `HEAD`
//!   within a period, under a per-registry request budget (a moved one is
//!   `image.tag_mutated`);
//! - [`api`]: `GET /v1/scanner/status`.
//!
//! The crate is a library so that its binary, `imagelib serve` and the tests all start
//! the same thing: [`startup::Application`] for a process of its own, or
//! [`startup::service`] to run beside the other services on one listener.

pub mod api;
pub mod bus;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod integrity;
pub mod jobs;
pub mod metrics;
pub mod rules;
pub mod runner;
pub mod scan;
pub mod startup;
pub mod store;
pub mod trust;

/// The service's name: its CloudEvent `source` is `/imagelib/<NAME>`.
pub const NAME: &str = "sync-scanner";
/// Its PostgreSQL schema: no other service reads it.
pub const SCHEMA: &str = "sync_scanner";
