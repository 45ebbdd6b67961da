//! The projectors: registries, rules, the scanner's own image and sync events, from the
//! stream into its schema; and `sync.requested` into scan jobs.
//!
//! One durable consumer per aggregate type (NATS 2.9 has one filter per consumer), named
//! `sync-scanner[-<instance>]-<aggregate>`: replicas with their own instance names each
//! project the registries, rules and syncs (into one shared schema, idempotently, or into
//! schemas of their own), and one replica per schema the image events (an advisory lock,
//! [`image_lock`]). Each consumer resumes after the position its projection recorded (the
//! image consumer after the schema's, [`Store::image_position`]). The image
//! consumer applies what each fetch brings together, in one statement when it can (a
//! scan publishes thousands of tag and trust events, and a transaction of five round
//! trips each was most of the database's work); the others handle one event at a time,
//! as they react to each.

use std::time::Duration;

use chrono::Utc;
use imagelib_events::bus::{
    BatchHandler, ConsumerSettings, EventBus, Exhausted, Handler, HandlerError, RecordedEvent,
};
use imagelib_events::{Aggregate, EventPayload};
use imagelib_platform::{Readiness, Worker};

use crate::jobs::{Job, Jobs};
use crate::scan::ScanRequest;
use crate::store::Store;

/// The aggregate types the scanner projects.
pub const PROJECTED: [Aggregate; 4] = [
    Aggregate::Registry,
    Aggregate::Rule,
    Aggregate::Image,
    Aggregate::Sync,
];

/// Image events applied in one transaction at most.
const IMAGE_BATCH: usize = 256;

/// How long the image projector holds trust events for more to come
/// ([`BatchHandler::may_wait`]): a scan publishes a repository's trust events together
/// and its tag events one by one, so trust events go with the next tag event or after
/// this long, and a cold scan's thousands of events take a few hundred statements. Tag
/// events are applied as soon as they are fetched (the status API and the next scan
/// read them right after a scan's `sync.completed`).
const IMAGE_LINGER: Duration = Duration::from_millis(200);

/// The durable consumer name of `aggregate` for `instance`.
pub fn consumer_name(instance: &str, aggregate: Aggregate) -> String {
    if instance.is_empty() {
        format!("{}-{}", crate::NAME, aggregate.as_str())
    } else {
        format!("{}-{}-{}", crate::NAME, instance, aggregate.as_str())
    }
}

/// The readiness check of a projection.
pub fn check_name(aggregate: Aggregate) -> String {
    format!("projection.{}", aggregate.as_str())
}

struct Apply {
    store: Store,
    consumer: String,
    /// Turns `sync.requested` into jobs (the sync consumer only).
    requests: Option<(Jobs, chrono::Duration)>,
    /// Told the registries whose trust policies a rule event changed (the rule consumer).
    reevaluate: Option<tokio::sync::mpsc::UnboundedSender<imagelib_events::RegistryId>>,
}

impl Handler for Apply {
    async fn handle(&self, event: RecordedEvent) -> Result<(), HandlerError> {
        let transient = |e: &dyn std::fmt::Display| HandlerError::Transient(e.to_string());
        if let (EventPayload::SyncRequested(e), Some((jobs, max_age))) =
            (&event.envelope.payload, &self.requests)
        {
            let env = &event.envelope;
            if Utc::now() - env.time <= *max_age {
                let job = Job {
                    request: ScanRequest {
                        registry_id: e.registry_id,
                        repository: e.repository.clone(),
                        reason: e.reason,
                    },
                    requested_at: env.time,
                    traceparent: env.traceparent.map(|t| t.to_string()),
                };
                jobs.submit(&job, &format!("request:{}", env.id))
                    .await
                    .map_err(|e| transient(&e))?;
            } else {
                tracing::debug!(id = %env.id, "stale sync request not turned into a scan");
            }
            return self
                .store
                .advance(&self.consumer, event.sequence)
                .await
                .map_err(|e| transient(&e));
        }
        let trust_before = match (&self.reevaluate, &event.envelope.payload) {
            (Some(_), EventPayload::RuleSet(e)) => Some((
                e.registry_id,
                self.trust_of(e.registry_id, &e.rule_id).await?,
            )),
            (Some(_), EventPayload::RuleRemoved(e)) => Some((
                e.registry_id,
                self.trust_of(e.registry_id, &e.rule_id).await?,
            )),
            _ => None,
        };
        self.store
            .apply_consumed(&self.consumer, event.sequence, &event.envelope)
            .await
            .map_err(|e| transient(&e))?;
        if let (Some(tx), Some((registry, before))) = (&self.reevaluate, trust_before) {
            let after = match &event.envelope.payload {
                EventPayload::RuleSet(e) => self.trust_of(e.registry_id, &e.rule_id).await?,
                _ => None,
            };
            // A rule with a policy before or after may change which digests it covers.
            if before.is_some() || after.is_some() {
                let _ = tx.send(registry);
            }
        }
        Ok(())
    }
}

impl BatchHandler for Apply {
    /// The image projector's batches: one transaction for what one fetch brought (the
    /// scanner's own tag and trust events, thousands in a cold scan).
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        if self.requests.is_some() || self.reevaluate.is_some() {
            // These react to single events: never batched ([`projector`]).
            return Err(HandlerError::Transient("not a batching projector".into()));
        }
        let events: Vec<(u64, &imagelib_events::Envelope)> =
            events.iter().map(|e| (e.sequence, &e.envelope)).collect();
        self.store
            .apply_consumed_batch(&self.consumer, &events)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))
    }

    /// Trust events and referrer lists may wait for others ([`IMAGE_LINGER`]): they
    /// are read only by the next trust pass, which waits for the projection to catch up.
    /// Tag events may not: the status API counts the tags right after a scan.
    fn may_wait(&self, subject: &str) -> bool {
        const WAITING: [&str; 6] = [
            "signature_verified",
            "signature_failed",
            "vulnerabilities_reported",
            "sbom_found",
            "policy_evaluated",
            "referrers_changed",
        ];
        subject
            .rsplit_once('.')
            .is_some_and(|(_, name)| WAITING.contains(&name))
    }
}

impl Apply {
    async fn trust_of(
        &self,
        registry: imagelib_events::RegistryId,
        rule: &imagelib_events::RuleId,
    ) -> Result<Option<imagelib_events::model::TrustPolicy>, HandlerError> {
        let rules = self
            .store
            .rules(registry)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        Ok(rules
            .into_iter()
            .find(|r| &r.rule_id == rule)
            .and_then(|r| r.trust))
    }
}

/// The projector of one aggregate type.
pub fn projector(
    bus: &EventBus,
    store: Store,
    readiness: Readiness,
    aggregate: Aggregate,
    instance: &str,
    jobs: Option<(Jobs, Duration)>,
    reevaluate: Option<tokio::sync::mpsc::UnboundedSender<imagelib_events::RegistryId>>,
) -> Worker {
    let bus = bus.clone();
    let name = consumer_name(instance, aggregate);
    let check = check_name(aggregate);
    readiness.set(&check, false, Some("catching up".into()));
    Worker::new(name.clone(), move |cancel| async move {
        let mut settings = ConsumerSettings::new(name.clone())
            .filter(bus.settings().aggregate_type_filter(aggregate));
        settings.max_deliver = 10;
        // No server-side `backoff` list: with one, NATS reports `ack_wait` as its first
        // step, `EventBus::consumer` then sees a config change on every restart and its
        // update (which carries a new start sequence) is refused. Naks carry their own
        // exponential delays instead.
        settings.on_exhausted = Exhausted::Stop;
        // One image projector per schema: the replicas sharing it wait while one applies.
        let _lock = if aggregate == Aggregate::Image {
            match image_lock(&store, &readiness, &check, &cancel).await {
                Some(lock) => Some(lock),
                None => return Ok(()),
            }
        } else {
            None
        };
        let position = if aggregate == Aggregate::Image {
            // Resume where the schema is, whichever replica brought it there.
            store.image_position().await
        } else {
            store.position(&name).await
        }
        .map_err(|e| e.to_string())?;
        if position == 0 {
            // An empty projection replays from the start. `EventBus::consumer` compares the
            // server's ack floor with the position, and a consumer that never acked
            // anything reports 0 too, so it would be kept, starting wherever it was
            // created: delete it instead.
            if let Ok(stream) = bus.jetstream().get_stream(&bus.settings().name).await {
                let _ = stream.delete_consumer(&name).await;
            }
        }
        settings.resume_after = Some(position);
        // A NATS cluster still electing leaders (a node just came back) times out or
        // refuses consumer creation for a while: wait for it instead of stopping.
        let consumer = loop {
            match bus.consumer(settings.clone()).await {
                Ok(c) => break c,
                Err(e) => {
                    readiness.set(&check, false, Some(format!("waiting for the stream: {e}")));
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let handler = Apply {
            store,
            consumer: name,
            reevaluate,
            requests: jobs.map(|(j, age)| {
                (
                    j,
                    chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX),
                )
            }),
        };
        let watch = async {
            loop {
                match consumer.pending().await {
                    Ok(0) => {
                        readiness.set(&check, true, None);
                        break;
                    }
                    Ok(n) => readiness.set(&check, false, Some(format!("{n} events to apply"))),
                    Err(e) => readiness.set(&check, false, Some(e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await
        };
        // The image events come by the thousand in a scan: applied a batch per
        // transaction. The others react to single events (jobs, re-evaluations).
        let run = async {
            if aggregate == Aggregate::Image {
                consumer
                    .run_batched(&handler, IMAGE_BATCH, IMAGE_LINGER, cancel.cancelled())
                    .await
            } else {
                consumer.run(&handler, cancel.cancelled()).await
            }
        };
        tokio::select! {
            r = run => r.map_err(|e| e.to_string()),
            _ = watch => Ok(()),
        }
    })
}

/// The advisory lock of the schema's image projector (`'scanimg'` and a version byte).
pub const IMAGE_PROJECTOR_LOCK: i64 = 0x7363_616e_696d_6701;

/// Waits until this replica is the one projecting image events into the schema: holds
/// [`IMAGE_PROJECTOR_LOCK`] on a connection of its own (closing it, or this process
/// dying, releases it). Replicas sharing one schema would otherwise each apply every image
/// event, thousands per scan, and each have NATS deliver and replicate its acks, for rows
/// the first one already wrote. The others are ready meanwhile: what they need of the
/// projection, [`crate::runner::Runner::caught_up`] reads from the schema whoever wrote
/// it ([`Store::image_position`]). Losing the connection later is harmless: a second
/// projector writes the same rows, as every replica did before this lock.
async fn image_lock(
    store: &Store,
    readiness: &Readiness,
    check: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<sqlx::PgConnection> {
    let mut lock = imagelib_platform::db::AdvisoryLock::new(
        (*store.pool().connect_options()).clone(),
        IMAGE_PROJECTOR_LOCK,
    );
    imagelib_platform::projection::take_lock(
        &mut lock,
        readiness,
        check,
        "another replica projects image events into the shared schema",
        cancel,
    )
    .await
}

/// Whether the projections have caught up with the stream once (after a start).
pub fn projections_ready(readiness: &Readiness) -> bool {
    let report = readiness.report();
    PROJECTED
        .iter()
        .all(|a| report.get(&check_name(*a)).is_some_and(|c| c.ready))
}
