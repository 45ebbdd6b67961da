//! The projectors (registries, rules, images and their trust verdicts, approvals and
//! deployments into the deployer's own view), the recovery of requests that crashed before
//! they were rendered, and the policy watch that flags running deployments whose image a
//! new verdict made fail.

use std::sync::Arc;
use std::time::Duration;

use imagelib_events::Aggregate;
use imagelib_events::bus::EventBus;
use imagelib_platform::{Readiness, Worker};

use crate::app::Deployer;
use crate::store::Store;

/// The aggregates the deployer's view is made of.
pub const AGGREGATES: [Aggregate; 5] = [
    Aggregate::Registry,
    Aggregate::Rule,
    Aggregate::Image,
    Aggregate::Catalog,
    Aggregate::Deployment,
];

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

/// Requests still `requested` a while after they were made crashed before rendering:
/// finish them (rendering and the targets are idempotent).
pub fn recovery(app: Arc<Deployer>, grace: Duration) -> Worker {
    Worker::new("recovery", move |cancel| async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(grace) => {}
            }
            let before = chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
            match app.store().stalled(before).await {
                Ok(rows) => {
                    for row in rows {
                        let actor = row
                            .requested_by
                            .clone()
                            .unwrap_or_else(|| "system:serving-deployer".into());
                        if let Err(e) = app.reconcile(row.id, &actor, None, None).await {
                            tracing::warn!(deployment = %row.id, error = %e, "recovery of a stalled deployment failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list stalled deployments"),
            }
        }
    })
}

/// Flags running deployments whose image a new `image.policy_evaluated` turned fail/audit
/// (`deployment.policy_violated`, stage `running`), woken by each applied verdict and every
/// `every` besides. It waits until the view has caught up, so a rebuild replaying old
/// verdicts against a half-built view flags nothing that was already flagged.
pub fn policy_watch(app: Arc<Deployer>, readiness: Readiness, every: Duration) -> Worker {
    Worker::new("policy-watch", move |cancel| async move {
        let changed = app.store().verdicts_changed().clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = changed.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            if !readiness.is_ready() {
                continue;
            }
            match app.flag_running_violations().await {
                // A full batch may have left more: look again at once.
                Ok(n) if n >= 100 => changed.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "policy watch failed; retrying"),
            }
        }
    })
}
