//! What every imagelib service stands on.
//!
//! The four services differ in what they do, not in how they start, answer HTTP, report
//! health, read configuration or stop; keeping that here means `imagelib serve` can run
//! them in one process with the same behaviour as four separate binaries.

pub mod auth;
pub mod config;
pub mod connections;
pub mod db;
pub mod http;
pub mod problem;
pub mod projection;
pub mod prometheus;
pub mod runtime;
pub mod service;
pub mod shutdown;
pub mod stream_health;
pub mod telemetry;

pub use config::{CommonConfig, ConfigError};
pub use problem::Problem;
pub use runtime::{Application, Infra, StartupError};
pub use service::{Readiness, Service, Worker};
