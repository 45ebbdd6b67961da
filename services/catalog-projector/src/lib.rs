//! catalog-projector: the Image and Model Library, projected from the event log into PostgreSQL.
//!
//! It is the read side users query; every row can be rebuilt by replaying the stream.
//!
//! - [`projection`]: events in, catalog rows out, one transaction per batch with the
//!   stream position (exactly-once effect);
//! - [`worker`]: the durable consumer that feeds it, dead-letters what it cannot decode
//!   and stops loudly on what PostgreSQL refuses;
//! - [`api`]: `/v1/images`, `/v1/models`, `/v1/repositories`, `/v1/stats`,
//!   `/v1/registries` and the curator commands ([`curate`]);
//! - [`lifecycle`]: retention policies previewed over the catalog (a dry run);
//! - [`rebuild`]: replay into a fresh schema and swap it in.
//!
//! The crate is a library so that its binary, `imagelib serve` and the tests all start
//! the same thing: [`startup::Application`] for a process of its own, or
//! [`startup::service`] to run beside the other services on one listener.

pub mod api;
pub mod config;
pub mod copy;
pub mod curate;
pub mod lifecycle;
pub mod pages;
pub mod projection;
pub mod query;
pub mod rebuild;
pub mod search;
pub mod startup;
pub mod synth;
pub mod worker;

/// The service's name: its CloudEvent `source` is `/imagelib/<NAME>`.
pub const NAME: &str = "catalog-projector";
/// Its PostgreSQL schema: no other service reads it.
pub const SCHEMA: &str = "catalog";
