//! The projector: a durable JetStream consumer feeding [`Projection::apply_batch`].
//!
//! - It resumes right after the position recorded in PostgreSQL (`resume_after`), so the
//!   database, not the server-side consumer, says what is applied.
//! - A fetch task pulls and decodes the next batch while the current one is applied.
//! - Each batch is one transaction; messages are acknowledged after the commit (the last
//!   one with a double ack). A crash anywhere re-delivers at most what was not committed,
//!   and the position check skips what was.
//! - Messages it cannot decode (or of unknown types) go to `<prefix>.dlq.catalog-projector`
//!   and the position moves past them. A batch PostgreSQL refuses is retried event by
//!   event; an event still refused after `apply_attempts` stops the projector loudly:
//!   `/readyz` turns false with the reason and an error is logged. It is never skipped.
//! - Only one replica writes: the writer holds a PostgreSQL advisory lock; the others
//!   serve reads and wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imagelib_events::bus::{
    Consumer, ConsumerSettings, Delivery, EventBus, Exhausted, consumer_metrics,
};
use imagelib_events::{DecodeError, Envelope};
use imagelib_platform::{Readiness, Worker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::CatalogSettings;
use crate::projection::{ApplyError, Item, Projection};

/// The readiness check the projector reports under.
pub const CHECK: &str = "projection";
/// The advisory lock the writing replica holds.
const WRITER_LOCK: i64 = 0x6361_7461_6c6f_6701;

/// What the projector is doing, shared with `/readyz` and tests.
#[derive(Debug, Default)]
pub struct Status {
    /// The last sequence applied.
    pub applied: AtomicU64,
    /// The stream's last sequence, as last seen.
    pub stream_last: AtomicU64,
    /// Reached the end of the stream at least once.
    pub caught_up: AtomicBool,
    /// Waiting for the writer lock held by another replica.
    pub standby: AtomicBool,
    /// Why it cannot make progress right now (a database outage), while retrying.
    pub degraded: Mutex<Option<String>>,
    /// Why it stopped for good.
    pub failed: Mutex<Option<String>>,
    /// Events dead-lettered, batches applied, and refused attempts.
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub refusals: AtomicU64,
}

impl Status {
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn set_degraded(&self, reason: Option<String>) {
        if let Ok(mut d) = self.degraded.lock() {
            *d = reason;
        }
    }

    /// The readiness of the projection, with the lag in the detail.
    pub fn check(&self) -> (bool, String) {
        let applied = self.applied();
        let last = self.stream_last.load(Ordering::Relaxed).max(applied);
        let lag = last - applied;
        let mut position = format!("applied {applied} of {last} (lag {lag})");
        let dead = self.dead_lettered.load(Ordering::Relaxed);
        if dead > 0 {
            position.push_str(&format!("; {dead} dead-lettered"));
        }
        let refused = self.refusals.load(Ordering::Relaxed);
        if refused > 0 {
            position.push_str(&format!("; {refused} refused attempts"));
        }
        if let Some(f) = self.failure() {
            return (false, format!("stopped: {f}; {position}"));
        }
        if self.standby.load(Ordering::Relaxed) {
            return (
                true,
                format!("standby: another replica writes the catalog; {position}"),
            );
        }
        if let Some(d) = self.degraded.lock().ok().and_then(|d| d.clone()) {
            return (false, format!("retrying: {d}; {position}"));
        }
        if self.caught_up.load(Ordering::Relaxed) {
            (true, format!("caught up; {position}"))
        } else {
            (false, format!("catching up; {position}"))
        }
    }
}

/// Everything the projector loop needs.
#[derive(Debug, Clone)]
pub struct Projector {
    pub bus: EventBus,
    pub projection: Projection,
    pub settings: CatalogSettings,
    pub status: Arc<Status>,
}

/// Aborts a spawned task when dropped, so a cancelled or aborted projector leaves nothing
/// running behind it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Outcome {
    Cancelled,
    Resync { allow_gap: bool },
    Fatal(String),
}

type Decoded = (Delivery, Result<Envelope, DecodeError>);

impl Projector {
    pub fn new(bus: EventBus, projection: Projection, settings: CatalogSettings) -> Self {
        Projector {
            bus,
            projection,
            settings,
            status: Arc::new(Status::default()),
        }
    }

    /// The service worker: the projector loop plus its readiness reporter.
    pub fn worker(self, readiness: Readiness) -> Worker {
        readiness.set(CHECK, false, Some("starting".into()));
        Worker::new(crate::NAME, move |cancel| async move {
            let reporter = {
                let (bus, status, readiness) =
                    (self.bus.clone(), self.status.clone(), readiness.clone());
                let consumer = self.projection.consumer().to_owned();
                AbortOnDrop(tokio::spawn(async move {
                    loop {
                        if let Ok(last) = bus.last_sequence().await {
                            status.stream_last.store(last, Ordering::Relaxed);
                            if status.applied() >= last {
                                status.caught_up.store(true, Ordering::Relaxed);
                            }
                            // A standby replica applies nothing: the writer reports the lag.
                            if !status.standby.load(Ordering::Relaxed) {
                                consumer_metrics::observe_lag(
                                    &consumer,
                                    last.saturating_sub(status.applied()),
                                );
                            }
                        }
                        let (ready, detail) = status.check();
                        readiness.set(CHECK, ready, Some(detail));
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }))
            };
            let result = self.run(cancel).await;
            drop(reporter);
            let (ready, detail) = self.status.check();
            readiness.set(CHECK, ready, Some(detail));
            result
        })
    }

    /// Project until cancelled, or until an event cannot be applied (the error says which).
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), String> {
        let Some(_lock) = self.writer_lock(&cancel).await else {
            return Ok(());
        };
        self.projection.clear_cache();
        let mut allow_gap = false;
        // The database says what is applied: messages the server still counts as
        // delivered to a previous run (a crash, a stop) must not wait out their ack wait.
        let mut recreate = true;
        loop {
            let Some(position) = self
                .until_available(&cancel, "reading the position", || {
                    self.projection.position()
                })
                .await
            else {
                return Ok(());
            };
            self.status.applied.store(position, Ordering::Relaxed);
            let consumer = match self.consumer(position, recreate, &cancel).await {
                Some(c) => Arc::new(c),
                None => return Ok(()),
            };
            match self.pump(consumer, position, allow_gap, &cancel).await {
                Outcome::Cancelled => return Ok(()),
                Outcome::Resync { allow_gap: a } => {
                    allow_gap = a;
                    recreate = true;
                }
                Outcome::Fatal(reason) => {
                    tracing::error!(consumer = %self.projection.consumer(), error = %reason, "the catalog projector stopped: an event cannot be applied");
                    if let Ok(mut f) = self.status.failed.lock() {
                        *f = Some(reason.clone());
                    }
                    return Err(reason);
                }
            }
        }
    }

    /// Hold the writer lock on a connection of its own (closing it releases the lock); a
    /// standby tries every 200 ms on one connection ([`imagelib_platform::db::AdvisoryLock`]).
    async fn writer_lock(&self, cancel: &CancellationToken) -> Option<sqlx::PgConnection> {
        let mut lock = imagelib_platform::db::AdvisoryLock::new(
            (*self.projection.pool().connect_options()).clone(),
            WRITER_LOCK,
        );
        loop {
            match lock.try_take().await {
                Ok(Some(conn)) => {
                    self.status.standby.store(false, Ordering::Relaxed);
                    self.status.set_degraded(None);
                    return Some(conn);
                }
                Ok(None) => self.status.standby.store(true, Ordering::Relaxed),
                Err(e) => self
                    .status
                    .set_degraded(Some(format!("database unavailable: {e}"))),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Retry a database read until it works (or we are cancelled).
    async fn until_available<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        what: &str,
        f: F,
    ) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => {
                    self.status.set_degraded(None);
                    return Some(v);
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                    self.status
                        .set_degraded(Some(format!("database unavailable: {e}")));
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.settings.backoff(attempt)) => {}
            }
        }
    }

    /// The durable consumer, resuming after `position`. With `recreate`, the server-side
    /// consumer is deleted first, so nothing delivered to it before comes back out of order.
    async fn consumer(
        &self,
        position: u64,
        recreate: bool,
        cancel: &CancellationToken,
    ) -> Option<Consumer> {
        let batch = self.settings.batch_size as i64;
        let mut settings = ConsumerSettings::new(self.projection.consumer())
            .filter(self.bus.settings().all_subjects());
        settings.ack_wait = Duration::from_secs(60);
        settings.max_deliver = -1;
        settings.max_ack_pending = (batch * 4).max(1000);
        settings.on_exhausted = Exhausted::Stop;
        settings.resume_after = Some(position);
        let mut attempt = 0;
        loop {
            if recreate {
                let name = self.bus.settings().name.clone();
                if let Ok(stream) = self.bus.jetstream().get_stream(&name).await {
                    let _ = stream.delete_consumer(self.projection.consumer()).await;
                }
            }
            match self.bus.consumer(settings.clone()).await {
                Ok(c) => {
                    self.status.set_degraded(None);
                    return Some(c);
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot create the consumer; retrying");
                    self.status
                        .set_degraded(Some(format!("stream unavailable: {e}")));
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.settings.backoff(attempt)) => {}
            }
        }
    }

    async fn pump(
        &self,
        consumer: Arc<Consumer>,
        mut position: u64,
        mut allow_gap: bool,
        cancel: &CancellationToken,
    ) -> Outcome {
        let (tx, mut rx) = mpsc::channel::<Vec<Decoded>>(2);
        let fetcher = {
            let consumer = consumer.clone();
            let (max, wait) = (self.settings.batch_size, self.settings.fetch_wait());
            let status = self.status.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut failures = 0u32;
                loop {
                    match consumer.fetch(max, wait).await {
                        Ok(batch) if batch.is_empty() => {
                            failures = 0;
                            status.caught_up.store(true, Ordering::Relaxed);
                        }
                        Ok(batch) => {
                            failures = 0;
                            let decoded: Vec<Decoded> = batch
                                .into_iter()
                                .map(|d| {
                                    let e = d.decode();
                                    (d, e)
                                })
                                .collect();
                            if tx.send(decoded).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // A deleted or replaced consumer does not come back: start over
                            // from the recorded position (the channel closing says so).
                            failures += 1;
                            let text = e.to_string();
                            if failures >= 3
                                || text.contains("Deleted")
                                || text.contains("not found")
                            {
                                tracing::warn!(error = %text, "the consumer is gone; recreating it");
                                return;
                            }
                            tracing::warn!(error = %text, "fetch failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }))
        };
        let dlq = self.bus.settings().clone();
        let (max, linger) = (self.settings.batch_size, self.settings.batch_linger());
        loop {
            let mut batch = tokio::select! {
                _ = cancel.cancelled() => return Outcome::Cancelled,
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => return Outcome::Resync { allow_gap: false },
                },
            };
            // Group commit: a scan publishes its events one by one, and a transaction per
            // fetch (a few events each) costs PostgreSQL more than the events themselves.
            // What comes within the linger joins the batch (one fetch more at most past
            // the batch size); a closed channel is seen at the next receive.
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < max && !linger.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return Outcome::Cancelled,
                    _ = tokio::time::sleep_until(deadline) => break,
                    more = rx.recv() => match more {
                        Some(more) => batch.extend(more),
                        None => break,
                    },
                }
            }
            let mut items: Vec<(Item, Option<Delivery>)> = Vec::with_capacity(batch.len());
            for (d, decoded) in batch {
                if d.sequence <= position {
                    // Already applied: a redelivery.
                    let _ = d.ack().await;
                    continue;
                }
                if dlq.is_dlq_subject(&d.subject) {
                    items.push((
                        Item {
                            sequence: d.sequence,
                            envelope: None,
                        },
                        Some(d),
                    ));
                    continue;
                }
                match decoded {
                    Ok(env) => items.push((
                        Item {
                            sequence: d.sequence,
                            envelope: Some(env),
                        },
                        Some(d),
                    )),
                    Err(e) => {
                        if let Err(err) = consumer.dead_letter(&d, &e.to_string()).await {
                            tracing::warn!(error = %err, sequence = d.sequence, "dead-lettering failed; resuming from the recorded position");
                            return Outcome::Resync { allow_gap: false };
                        }
                        self.status.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        consumer_metrics::processed(self.projection.consumer(), "dead_lettered", 1);
                        items.push((
                            Item {
                                sequence: d.sequence,
                                envelope: None,
                            },
                            None,
                        ));
                    }
                }
            }
            let Some(first) = items.first().map(|(i, _)| i.sequence) else {
                continue;
            };
            if first != position + 1 {
                if allow_gap {
                    tracing::warn!(
                        position,
                        first,
                        "events between are no longer in the stream"
                    );
                } else {
                    tracing::info!(
                        position,
                        first,
                        "delivery out of order; resuming from the recorded position"
                    );
                    return Outcome::Resync { allow_gap: true };
                }
            }
            allow_gap = false;
            match self.apply(&items, position, cancel).await {
                Ok(p) => position = p,
                Err(outcome) => {
                    drop(fetcher);
                    return outcome;
                }
            }
        }
    }

    /// Apply and acknowledge a batch; on a refusal, event by event.
    async fn apply(
        &self,
        items: &[(Item, Option<Delivery>)],
        position: u64,
        cancel: &CancellationToken,
    ) -> Result<u64, Outcome> {
        let plain: Vec<Item> = items.iter().map(|(i, _)| i.clone()).collect();
        let mut attempt: u32 = 0;
        loop {
            let result = self.projection.apply_batch(&plain, Some(position)).await;
            match result {
                Ok(p) => {
                    self.status.set_degraded(None);
                    self.status.applied.store(p, Ordering::Relaxed);
                    self.status.batches.fetch_add(1, Ordering::Relaxed);
                    let applied = items.iter().filter(|(i, _)| i.envelope.is_some()).count();
                    consumer_metrics::processed(
                        self.projection.consumer(),
                        "applied",
                        applied as u64,
                    );
                    ack_all(items).await;
                    return Ok(p);
                }
                Err(ApplyError::Moved { expected, found }) => {
                    tracing::info!(
                        expected,
                        found,
                        "the position moved (rebuild or another writer); resuming from it"
                    );
                    return Err(Outcome::Resync { allow_gap: false });
                }
                Err(e) if e.is_unavailable() => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "database unavailable; retrying the batch");
                    self.status
                        .set_degraded(Some(format!("database unavailable: {e}")));
                }
                Err(e) if items.len() > 1 => {
                    tracing::warn!(error = %e, "batch refused; applying it event by event");
                    let mut pos = position;
                    for one in items {
                        pos = Box::pin(self.apply(std::slice::from_ref(one), pos, cancel)).await?;
                    }
                    return Ok(pos);
                }
                Err(e) => {
                    attempt += 1;
                    self.status.refusals.fetch_add(1, Ordering::Relaxed);
                    let (item, _) = &items[0];
                    let what = item
                        .envelope
                        .as_ref()
                        .map(|e| format!("{} ({})", e.event_type(), e.payload.subject()))
                        .unwrap_or_else(|| "message".into());
                    if attempt >= self.settings.apply_attempts {
                        consumer_metrics::processed(self.projection.consumer(), "failed", 1);
                        return Err(Outcome::Fatal(format!(
                            "event at sequence {} {what} cannot be applied after {attempt} attempts: {e}",
                            item.sequence
                        )));
                    }
                    consumer_metrics::processed(self.projection.consumer(), "retried", 1);
                    tracing::warn!(sequence = item.sequence, error = %e, attempt, "event refused by PostgreSQL; retrying");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(Outcome::Cancelled),
                _ = tokio::time::sleep(self.settings.backoff(attempt)) => {}
            }
        }
    }
}

/// Acknowledge after the commit: plain acks, then a double ack of the last one, which the
/// server confirms after the others (one connection, in order).
async fn ack_all(items: &[(Item, Option<Delivery>)]) {
    let deliveries: Vec<&Delivery> = items.iter().filter_map(|(_, d)| d.as_ref()).collect();
    let Some((last, rest)) = deliveries.split_last() else {
        return;
    };
    for d in rest {
        if let Err(e) = d.ack().await {
            tracing::debug!(error = %e, sequence = d.sequence, "ack failed (the position is recorded; a redelivery is skipped)");
        }
    }
    if let Err(e) = last.double_ack().await {
        tracing::debug!(error = %e, sequence = last.sequence, "double ack failed (the position is recorded; a redelivery is skipped)");
    }
}

/// Start a projector worker for the service.
pub fn worker(
    bus: EventBus,
    projection: Projection,
    settings: CatalogSettings,
    readiness: Readiness,
) -> (Worker, Arc<Status>) {
    let p = Projector::new(bus, projection, settings);
    let status = p.status.clone();
    (p.worker(readiness), status)
}
