//! The `imagelib` binary's library half, so the end-to-end tests start exactly what
//! `imagelib serve` starts.

pub mod audit_cmd;
pub mod catalog_cmd;
pub mod client;
pub mod demo;
pub mod deploy_cmd;
pub mod events_cmd;
pub mod healthcheck;
pub mod keys_cmd;
pub mod lifecycle_cmd;
pub mod nats_cmd;
pub mod registry_cmd;
pub mod serve;
pub mod subscriptions_cmd;
pub mod trust_cmd;
