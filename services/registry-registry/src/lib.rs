//! registry-registry: registers container registries, validates their credentials and
//! keeps repository rules.
//!
//! It is the write side for registries and rules: commands arrive over HTTP (or the CLI),
//! are checked against its own projection of the stream, and become events. Credentials
//! are sealed with a per-registry data key before they reach any event (envelope
//! encryption, `imagelib-secrets`); removing a registry destroys that key.
//!
//! The crate is a library so that its binary, `imagelib serve` and the tests all start
//! the same thing: [`startup::Application`] for a process of its own, or
//! [`startup::service`] to run beside the other services on one listener.

pub mod api;
pub mod app;
pub mod bus;
pub mod config;
pub mod domain;
pub mod pages;
pub mod pulls;
pub mod startup;
pub mod store;
pub mod subscriptions;
pub mod validate;

/// The service's name: its CloudEvent `source` is `/imagelib/<NAME>`.
pub const NAME: &str = "registry-registry";
/// Its PostgreSQL schema: no other service reads it.
pub const SCHEMA: &str = "registry_registry";
