//! The projector: the service's own aggregates (registries, rules, and the scans of its
//! registries) from the stream into its schema.
//!
//! The command handlers already apply what they append; these consumers make the
//! projection complete after a restart, a rebuild, or events appended by another replica.

use imagelib_events::Aggregate;
use imagelib_events::bus::EventBus;
use imagelib_platform::{Readiness, Worker};

use crate::store::Store;

/// The aggregates this service projects.
pub const AGGREGATES: [Aggregate; 3] = [Aggregate::Registry, Aggregate::Rule, Aggregate::Sync];

pub fn projectors(bus: &EventBus, store: &Store, readiness: &Readiness) -> Vec<Worker> {
    AGGREGATES
        .into_iter()
        .map(|a| {
            imagelib_platform::projection::projector(
                bus,
                crate::NAME,
                store.clone(),
                readiness.clone(),
                a,
            )
        })
        .collect()
}
