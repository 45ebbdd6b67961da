//! serving-deployer: deploys model images to KServe and provisions Postgres from database
//! images.
//!
//! It renders manifests pinned by digest — a KServe `InferenceService` (plus the
//! `ClusterServingRuntime` NVIDIA NIM needs), a CloudNativePG `Cluster` or
//! `ClusterImageCatalog` — and hands them to a GitOps repository or a Kubernetes API
//! server. It decides from its own projection of the stream (registries, tags, approvals)
//! and never reads another service's database.
//!
//! The crate is a library so that its binary, `imagelib serve` and the tests all start
//! the same thing: [`startup::Application`] for a process of its own, or
//! [`startup::service`] to run beside the other services on one listener.

pub mod api;
pub mod app;
pub mod bus;
pub mod config;
pub mod pages;
pub mod render;
pub mod startup;
pub mod store;
pub mod target;

/// The service's name: its CloudEvent `source` is `/imagelib/<NAME>`.
pub const NAME: &str = "serving-deployer";
/// Its PostgreSQL schema: no other service reads it.
pub const SCHEMA: &str = "serving_deployer";
