//! The imagelib event contract (DESIGN section 3).
//!
//! Services talk only through these events, so this crate is the one thing they all share:
//! the typed events ([`event`]), the identifiers they are made of ([`ids`], [`oci`],
//! [`model`]), the CloudEvents envelope and its NATS binding ([`envelope`], [`binding`]),
//! and the JetStream plumbing every producer and consumer uses ([`bus`]). It depends on no
//! service.

pub mod binding;
pub mod bus;
pub mod connect;
pub mod envelope;
pub mod event;
mod flatten;
pub mod ids;
pub mod model;
pub mod oci;
pub mod schema;
pub mod trace;

pub use envelope::{DecodeError, Envelope};
pub use event::{Aggregate, EventData, EventPayload, EventType, PayloadError};
pub use ids::{DeploymentId, EventId, ImageId, RegistryId, RuleId, SubscriptionId, SyncId};
pub use oci::{Digest, OciParseError, RepositoryName, Tag};
pub use trace::TraceParent;
