//! Delivery: from the stream to the subscribers' endpoints.
//!
//! - The **ingest** worker is a durable consumer of the whole stream
//!   ([`super::DELIVERY_CONSUMER`]; of the `subscription.*` events alone while no
//!   subscription is live, see [`Delivery::consumer`]). For each event it finds the live subscriptions that
//!   want it (created before it, a type pattern matching) and writes one outbox row per
//!   subscription, in one transaction with its own position; then it acks. It meets the
//!   `subscription.*` events in stream order and applies them itself, so which
//!   subscriptions exist is exactly what the stream said at that event.
//! - The **supervisor** keeps one **dispatcher** per live subscription, destroys the data
//!   keys of removed ones, carries out replays and refreshes the gauges.
//! - A dispatcher leases the due rows at the head of their subject (never two of one
//!   subject, so per-subject order holds), at most `max_in_flight` at once, and POSTs each:
//!   the structured CloudEvent as it is on the bus (`Content-Type:
//!   application/cloudevents+json`) with Standard Webhooks headers (`webhook-id` = the event
//!   id, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`). A 2xx delivers
//!   it; anything else is retried on the schedule (±20 % jitter; `Retry-After` on 429/503
//!   is honoured), and after the last attempt the row moves to the dead-letter list.
//!   Requests go through the network guard (the resolver of the registry client), have a
//!   bounded timeout, follow no redirect, and read at most a few KiB of the answer.
//!
//! Each dispatcher has its own rows, slots and timers: an endpoint that hangs or fails
//! holds only its own subscription's slots. Delivery is at least once: a row sent but not
//! recorded (a crash in between) is sent again when its lease runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use imagelib_events::bus::{ConsumerSettings, Delivery as Message};
use imagelib_events::{Aggregate, Envelope, EventPayload, SubscriptionId};
use imagelib_platform::Worker;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{SubscriptionError, Subscriptions};
use super::store::{NewPending, Pending, Replay, Subscription};
use super::{DELIVERY_CONSUMER, DeliveryConfig, RetrySchedule, SigningKey};

/// What a dispatcher keeps of an answer that failed, at most.
const SNIPPET: usize = 256;
/// What is read of any answer before the connection is given up.
const MAX_ANSWER: usize = 4096;
/// Messages per ingest batch.
const BATCH: usize = 256;
/// Events of one subject a sender delivers in a row before it gives its slot back.
const CHAIN: u32 = 32;

/// Everything delivery needs, shared by its workers.
#[derive(Debug)]
pub struct Delivery {
    subs: Arc<Subscriptions>,
    sender: Sender,
    schedule: RetrySchedule,
    max_in_flight: usize,
    /// How long a row stays leased to its sender: the timeout and a margin.
    lease: Duration,
    /// Wakes a subscription's dispatcher when rows arrive for it.
    wakers: Mutex<HashMap<SubscriptionId, Arc<tokio::sync::Notify>>>,
    /// This replica holds the delivery lock: it ingests and carries out replays.
    leading: std::sync::atomic::AtomicBool,
}

/// The advisory lock of the replica that ingests (`'imgl-dlv'` as a number).
const LOCK_KEY: i64 = 0x696d_676c_2d64_6c76;

/// The delivery workers: ingest and supervisor.
pub fn workers(subs: Arc<Subscriptions>, config: &DeliveryConfig) -> Result<Vec<Worker>, String> {
    let sender = Sender::new(
        subs.guard.clone(),
        config.timeout(),
        config.subscriptions_allow_http,
    )?;
    let delivery = Arc::new(Delivery {
        subs,
        sender,
        schedule: config.schedule(),
        max_in_flight: config.max_in_flight(),
        lease: config.timeout() + Duration::from_secs(30),
        wakers: Mutex::default(),
        leading: std::sync::atomic::AtomicBool::new(false),
    });
    metrics::start();
    let ingest = delivery.clone();
    let supervise = delivery;
    Ok(vec![
        Worker::new(format!("{DELIVERY_CONSUMER}.ingest"), move |cancel| {
            ingest.ingest(cancel)
        }),
        Worker::new(format!("{DELIVERY_CONSUMER}.dispatch"), move |cancel| {
            supervise.supervise(cancel)
        }),
    ])
}

/// A live subscription as the ingest matches events against it.
#[derive(Debug, Clone)]
struct Active {
    id: SubscriptionId,
    types: Vec<String>,
    created_sequence: u64,
}

impl From<&Subscription> for Active {
    fn from(s: &Subscription) -> Self {
        Active {
            id: s.id,
            types: s.types.clone(),
            created_sequence: s.created_sequence,
        }
    }
}

/// The body delivered: the structured CloudEvent as the producer put it on the bus, or
/// (an outside producer in binary mode) the same event in structured mode.
fn structured_body(m: &Message, env: &Envelope) -> bytes::Bytes {
    let structured = m
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case("content-type"))
                .and_then(|(_, v)| v.first())
                .map(|v| {
                    v.as_str()
                        .trim()
                        .to_ascii_lowercase()
                        .starts_with("application/cloudevents+json")
                })
        })
        .unwrap_or(false);
    if structured {
        m.payload().clone()
    } else {
        imagelib_events::binding::encode_structured(env).payload
    }
}

fn pending_row(s: &Active, sequence: u64, env: &Envelope, body: &bytes::Bytes) -> NewPending {
    NewPending {
        subscription_id: s.id,
        sequence,
        subject: env.payload.subject(),
        event_id: env.id.to_string(),
        event_type: env.event_type().to_owned(),
        event_time: env.time,
        traceparent: env.traceparent.map(|t| t.to_string()),
        body: body.clone(),
    }
}

/// Waits `d`, or less if cancelled; false when cancelled.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

impl Delivery {
    fn waker(&self, id: SubscriptionId) -> Arc<tokio::sync::Notify> {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    fn wake(&self, id: SubscriptionId) {
        if let Some(n) = self
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            n.notify_one();
        }
    }

    // ------------------------------------------------------------ ingest

    /// Runs the ingest in the one replica that holds the delivery lock (a PostgreSQL
    /// advisory lock on a connection of its own): the durable consumer would otherwise
    /// split the stream between replicas, and each would match events against a list of
    /// subscriptions that missed the `subscription.*` events the other one got. The others
    /// wait and take over within seconds when the holder stops (its connection, and so
    /// its lock, goes with it). Dispatchers run in every replica: they share the work by
    /// leases.
    async fn ingest(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        loop {
            match self.try_lead().await {
                Ok(Some(mut lock)) => {
                    self.leading
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        "this replica queues the subscriptions' events (it holds the delivery lock)"
                    );
                    let result = self.lead(&cancel, &mut lock).await;
                    self.leading
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    // A pooled connection must not keep the lock.
                    if sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(LOCK_KEY)
                        .execute(&mut *lock)
                        .await
                        .is_err()
                    {
                        drop(lock.detach());
                    }
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "delivery ingest stopped; retrying");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the delivery lock could not be tried; retrying")
                }
            }
            if !pause(&cancel, Duration::from_secs(5)).await {
                return Ok(());
            }
        }
    }

    async fn try_lead(
        &self,
    ) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Postgres>>, sqlx::Error> {
        let mut conn = self.subs.store.pool().acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(conn))
    }

    /// The ingest loop, while `lock` (the connection holding the delivery lock) lives.
    async fn lead(
        &self,
        cancel: &CancellationToken,
        lock: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    ) -> Result<(), String> {
        let store = &self.subs.store;
        let mut active: Vec<Active> = store
            .live()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(Active::from)
            .collect();
        loop {
            let everything = !active.is_empty();
            let consumer = self.consumer(everything).await?;
            if !self
                .ingest_with(&consumer, everything, &mut active, cancel, lock)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// The ingest's durable consumer, resuming after the recorded position: of the whole
    /// stream while a subscription is live, else of the `subscription.*` events alone.
    /// Without a subscription no event is queued, so nothing else needs reading: NATS then
    /// neither delivers every event to this consumer nor replicates its acknowledgements
    /// (at R3, for each of the thousands of events a scan publishes). A subscription
    /// created at sequence `s` wants what comes after `s`, which is where the whole-stream
    /// consumer starts.
    async fn consumer(&self, everything: bool) -> Result<imagelib_events::bus::Consumer, String> {
        let bus = &self.subs.bus;
        let position =
            imagelib_platform::projection::position(self.subs.store.pool(), DELIVERY_CONSUMER)
                .await
                .map_err(|e| e.to_string())?;
        let filter = if everything {
            bus.settings().all_subjects()
        } else {
            bus.settings()
                .aggregate_type_filter(Aggregate::Subscription)
        };
        // NATS 2.9 cannot change a consumer's filter: start it again from the position.
        let stream = bus
            .jetstream()
            .get_stream(&bus.settings().name)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(info) = stream.consumer_info(DELIVERY_CONSUMER).await
            && info.config.filter_subject != filter
        {
            stream
                .delete_consumer(DELIVERY_CONSUMER)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut settings = ConsumerSettings::new(DELIVERY_CONSUMER).filter(filter);
        settings.resume_after = Some(position);
        settings.max_ack_pending = (BATCH * 4) as i64;
        bus.consumer(settings).await.map_err(|e| e.to_string())
    }

    /// Ingests from `consumer` until the filter it needs changes (true) or the worker
    /// stops (false).
    async fn ingest_with(
        &self,
        consumer: &imagelib_events::bus::Consumer,
        everything: bool,
        active: &mut Vec<Active>,
        cancel: &CancellationToken,
        lock: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    ) -> Result<bool, String> {
        let mut observed: Option<Instant> = None;
        loop {
            if observed.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                observed = Some(Instant::now());
                if let Err(e) = consumer.observe_lag().await {
                    tracing::debug!(error = %e, "delivery consumer lag not observed");
                }
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut **lock).await {
                    // The connection, and with it the lock, is gone: another replica may
                    // be leading now.
                    return Err(format!("the delivery lock's connection failed: {e}"));
                }
            }
            let batch = tokio::select! {
                _ = cancel.cancelled() => return Ok(false),
                b = consumer.fetch(BATCH, Duration::from_secs(1)) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "delivery consumer fetch failed; retrying");
                    if !pause(cancel, Duration::from_millis(500)).await {
                        return Ok(false);
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            if !self
                .ingest_batch(consumer, everything, active, batch, cancel)
                .await?
            {
                return Ok(false);
            }
            if everything == active.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Queues what `batch` holds for the live subscriptions and acknowledges it; false when
    /// cancelled first. Read with the `subscription.*` filter (`everything` false), the
    /// batch ends at the first subscription that goes live: what follows it in the stream
    /// is read again with the whole-stream filter.
    async fn ingest_batch(
        &self,
        consumer: &imagelib_events::bus::Consumer,
        everything: bool,
        active: &mut Vec<Active>,
        mut batch: Vec<Message>,
        cancel: &CancellationToken,
    ) -> Result<bool, String> {
        let settings = self.subs.bus.settings();
        let mut rows: Vec<NewPending> = Vec::new();
        let mut own: Vec<(u64, Envelope)> = Vec::new();
        let mut undecodable: Vec<(usize, String)> = Vec::new();
        let mut last = 0;
        let mut cut = None;
        for (i, m) in batch.iter().enumerate() {
            last = last.max(m.sequence);
            if settings.is_dlq_subject(&m.subject) {
                continue;
            }
            let env = match m.decode() {
                Ok(env) => env,
                Err(e) => {
                    undecodable.push((i, e.to_string()));
                    continue;
                }
            };
            let ty = env.event_type();
            let mut body: Option<bytes::Bytes> = None;
            for s in active.iter() {
                if m.sequence > s.created_sequence && super::wants(&s.types, ty) {
                    let b = body.get_or_insert_with(|| structured_body(m, &env));
                    rows.push(pending_row(s, m.sequence, &env, b));
                }
            }
            if env.payload.aggregate() == Aggregate::Subscription {
                match &env.payload {
                    EventPayload::SubscriptionCreated(e)
                        if !active.iter().any(|a| a.id == e.subscription_id) =>
                    {
                        active.push(Active {
                            id: e.subscription_id,
                            types: e.types.clone(),
                            created_sequence: m.sequence,
                        });
                    }
                    EventPayload::SubscriptionRemoved(e) => {
                        active.retain(|a| a.id != e.subscription_id);
                        rows.retain(|r| r.subscription_id != e.subscription_id);
                    }
                    _ => {}
                }
                own.push((m.sequence, env));
                if !everything && !active.is_empty() {
                    cut = Some(i + 1);
                    break;
                }
            }
        }
        if let Some(n) = cut {
            batch.truncate(n);
        }
        // The database part is retried until it lands (or the worker stops): the rows and
        // the position go together, so a retry after a half-failure repeats nothing.
        let mut failures = 0u32;
        loop {
            match self.commit_batch(&own, &rows, last).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "delivery outbox write failed; retrying");
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    if !pause(cancel, wait).await {
                        return Ok(false);
                    }
                }
            }
        }
        for (i, m) in batch.iter().enumerate() {
            let result = match undecodable.iter().find(|(j, _)| *j == i) {
                Some((_, error)) => consumer.dead_letter(m, error).await,
                None => m.ack().await,
            };
            if let Err(e) = result {
                // Acked later by a redelivery, which finds the rows already there.
                tracing::debug!(error = %e, sequence = m.sequence, "delivery ack failed");
            }
        }
        let mut woken: Vec<SubscriptionId> = rows.iter().map(|r| r.subscription_id).collect();
        woken.sort();
        woken.dedup();
        for id in woken {
            self.wake(id);
        }
        if !own.is_empty() {
            self.subs.changed.notify_one();
        }
        Ok(true)
    }

    async fn commit_batch(
        &self,
        own: &[(u64, Envelope)],
        rows: &[NewPending],
        last: u64,
    ) -> Result<(), super::store::StoreError> {
        let mut tx = self.subs.store.pool().begin().await?;
        for (seq, env) in own {
            super::store::apply_in(&mut tx, *seq, env).await?;
        }
        super::store::enqueue(&mut tx, rows, false).await?;
        imagelib_platform::projection::record_position(&mut tx, DELIVERY_CONSUMER, last).await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------ supervisor

    async fn supervise(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        let mut dispatchers: HashMap<
            SubscriptionId,
            (CancellationToken, tokio::task::JoinHandle<()>),
        > = HashMap::new();
        let mut replaying: Option<tokio::task::JoinHandle<()>> = None;
        let mut last_housekeeping: Option<Instant> = None;
        loop {
            match self.subs.store.live().await {
                Ok(live) => {
                    dispatchers.retain(|id, (token, handle)| {
                        let keep = live.iter().any(|s| s.id == *id) && !handle.is_finished();
                        if !keep {
                            token.cancel();
                        }
                        keep
                    });
                    self.wakers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|id, _| live.iter().any(|s| s.id == *id));
                    for s in live {
                        if dispatchers.contains_key(&s.id) {
                            continue;
                        }
                        let token = cancel.child_token();
                        let notify = self.waker(s.id);
                        let me = self.clone();
                        let t = token.clone();
                        let id = s.id;
                        let span = tracing::info_span!("dispatcher", subscription.id = %id);
                        let handle = tokio::spawn(
                            async move { me.dispatch(s, notify, t).await }.instrument(span),
                        );
                        dispatchers.insert(id, (token, handle));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "subscriptions not read; retrying"),
            }
            if self.leading.load(std::sync::atomic::Ordering::Relaxed)
                && replaying.as_ref().is_none_or(|h| h.is_finished())
            {
                let me = self.clone();
                let token = cancel.clone();
                replaying = Some(tokio::spawn(async move { me.run_replays(token).await }));
            }
            if last_housekeeping.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                last_housekeeping = Some(Instant::now());
                self.housekeeping().await;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.subs.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
        for (_, (token, handle)) in dispatchers {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        if let Some(h) = replaying {
            h.abort();
        }
        Ok(())
    }

    /// Destroys the data keys of removed subscriptions that still have one; repairs the
    /// subject queue; refreshes the queue-depth and dead-letter gauges.
    async fn housekeeping(&self) {
        match self.subs.store.repair().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(repaired = n, "delivery queue rows repaired"),
            Err(e) => tracing::debug!(error = %e, "delivery queue not checked"),
        }
        match self.subs.store.unshredded().await {
            Ok(ids) => {
                for id in ids {
                    match self.subs.vault.shred(super::commands::key_id(id)).await {
                        Ok(()) => {
                            if let Err(e) = self.subs.store.mark_shredded(id).await {
                                tracing::warn!(subscription = %id, error = %e, "shred not recorded");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(subscription = %id, error = %e, "destroying the data key failed; retrying")
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "unshredded subscriptions not read"),
        }
        match self.subs.store.counts(None).await {
            Ok(counts) => metrics::set_counts(counts),
            Err(e) => tracing::debug!(error = %e, "delivery gauges not refreshed"),
        }
    }

    // ------------------------------------------------------------ dispatchers

    async fn dispatch(
        self: Arc<Self>,
        s: Subscription,
        notify: Arc<tokio::sync::Notify>,
        cancel: CancellationToken,
    ) {
        let url = match url::Url::parse(&s.url) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(subscription = %s.id, error = %e, "stored subscription URL unreadable; nothing is delivered");
                return;
            }
        };
        let mut failures = 0u32;
        let key = loop {
            match self.subs.signing_key(&s).await {
                Ok(k) => break k,
                Err(SubscriptionError::NotFound(_))
                | Err(SubscriptionError::Secrets(imagelib_secrets::SecretsError::Shredded(_))) => {
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(subscription = %s.id, error = %e, "the subscription's secret cannot be opened; retrying");
                    let wait = Duration::from_secs(u64::from(failures.min(60)));
                    if !pause(&cancel, wait).await {
                        return;
                    }
                }
            }
        };
        let mut inflight: JoinSet<String> = JoinSet::new();
        let mut sending: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            let free = self.max_in_flight.saturating_sub(inflight.len());
            let mut wait = Duration::from_secs(5);
            if free > 0 {
                match self.subs.store.claim(s.id, free, self.lease).await {
                    Ok(rows) => {
                        let filled = rows.len() == free;
                        for row in rows {
                            let me = self.clone();
                            let (url, key) = (url.clone(), key.clone());
                            sending.insert(row.subject.clone());
                            inflight.spawn(async move {
                                let subject = row.subject.clone();
                                // A delivered event hands over the subject's next one, up
                                // to a bound, so a busy subject does not wait for a claim
                                // per event; then the slot is given back.
                                let mut row = Some(row);
                                let mut chained = 0;
                                while let Some(r) = row.take() {
                                    chained += 1;
                                    row = me.attempt(s.id, &url, &key, r, chained < CHAIN).await;
                                }
                                subject
                            });
                        }
                        if !filled {
                            match self.subs.store.next_due(s.id).await {
                                Ok(Some(d)) => wait = d.min(wait),
                                Ok(None) => {}
                                Err(e) => tracing::debug!(error = %e, "next due time not read"),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %s.id, error = %e, "outbox not read; retrying");
                        wait = Duration::from_secs(1);
                    }
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // Stopping: the rows in flight are sent again by whoever runs next
                    // (their lease is lifted now rather than left to run out).
                    inflight.abort_all();
                    let left: Vec<String> = sending.into_iter().collect();
                    if let Err(e) = self.subs.store.release(s.id, &left).await {
                        tracing::debug!(error = %e, "leases not lifted; they run out");
                    }
                    return;
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(subject) = done {
                        sending.remove(&subject);
                    }
                    // Take every other finished attempt before claiming again.
                    while let Some(Some(done)) = inflight.join_next().now_or_never() {
                        if let Ok(subject) = done {
                            sending.remove(&subject);
                        }
                    }
                }
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt at one event, recorded. Delivered and `go_on`: the subject's next event,
    /// leased to the caller.
    async fn attempt(
        &self,
        id: SubscriptionId,
        url: &url::Url,
        key: &SigningKey,
        row: Pending,
        go_on: bool,
    ) -> Option<Pending> {
        let attempt = row.attempts + 1;
        let span = tracing::info_span!(
            "deliver",
            otel.name = %format!("deliver {}", row.event_type),
            otel.kind = "client",
            subscription.id = %id,
            cloudevents.event_id = %row.event_id,
            cloudevents.event_type = %row.event_type,
            messaging.message.id = %row.event_id,
            url.full = %url,
            http.request.method = "POST",
            http.response.status_code = tracing::field::Empty,
            attempt,
        );
        if let Some(tp) = row
            .traceparent
            .as_deref()
            .and_then(|t| t.parse::<imagelib_events::TraceParent>().ok())
        {
            imagelib_events::trace::set_parent(&span, &tp);
        }
        async {
            let started = Instant::now();
            let started_at = Utc::now();
            let result = self.sender.send(url, key, &row).await;
            let elapsed = started.elapsed();
            let store = &self.subs.store;
            let recorded = match &result {
                Ok(status) => {
                    tracing::Span::current().record("http.response.status_code", status);
                    tracing::debug!(attempt, status, "delivered");
                    metrics::delivered(id, elapsed, (!row.replayed).then_some(row.event_time));
                    store
                        .delivered(id, &row, go_on.then_some(self.lease))
                        .await
                }
                Err(f) => {
                    if let Some(status) = f.status {
                        tracing::Span::current().record("http.response.status_code", status);
                    }
                    match self.schedule.after(attempt) {
                        Some(delay) => {
                            let delay = match f.retry_after {
                                Some(ra) => delay.max(ra.min(Duration::from_secs(3600))),
                                None => delay,
                            };
                            tracing::info!(attempt, error = %f.error, retry_in = ?delay, "delivery failed; retrying");
                            metrics::failed(id, elapsed, "failed");
                            store
                                .failed(id, &row, attempt, started_at, delay, f.status, &f.error)
                                .await
                                .map(|()| None)
                        }
                        None => {
                            tracing::warn!(attempt, error = %f.error, "delivery failed on every attempt; dead-lettered");
                            metrics::failed(id, elapsed, "dead_lettered");
                            store
                                .dead_letter(id, &row, attempt, started_at, f.status, &f.error)
                                .await
                                .map(|()| None)
                        }
                    }
                }
            };
            match recorded {
                Ok(next) => next,
                Err(e) => {
                    // The lease runs out and the row is sent again: at least once.
                    tracing::warn!(error = %e, "delivery outcome not recorded; the event will be sent again");
                    None
                }
            }
        }
        .instrument(span)
        .await
    }

    // ------------------------------------------------------------ replays

    async fn run_replays(&self, cancel: CancellationToken) {
        let replays = match self.subs.store.open_replays().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "replays not read");
                return;
            }
        };
        for r in replays {
            if cancel.is_cancelled() {
                return;
            }
            let span = tracing::info_span!("replay", subscription.id = %r.subscription_id, request = r.request_sequence);
            if let Err(e) = self.replay(&r, &cancel).instrument(span).await {
                tracing::warn!(subscription = %r.subscription_id, error = %e, "replay interrupted; it resumes where it stopped");
                return;
            }
        }
    }

    /// Reads the stream from `from` (or where the replay stopped) up to the replay request
    /// itself, queueing the subscription's matching events appended before `to`.
    async fn replay(&self, r: &Replay, cancel: &CancellationToken) -> Result<(), String> {
        let Some(s) = self
            .subs
            .store
            .get(r.subscription_id)
            .await
            .map_err(|e| e.to_string())?
            .filter(|s| s.removed_at.is_none())
        else {
            return Ok(());
        };
        let active = Active::from(&s);
        let bus = &self.subs.bus;
        let deliver_policy = if r.next_sequence > 0 {
            DeliverPolicy::ByStartSequence {
                start_sequence: r.next_sequence,
            }
        } else {
            DeliverPolicy::ByStartTime {
                start_time: to_offset(r.from)?,
            }
        };
        let stream = bus
            .jetstream()
            .get_stream(&bus.settings().name)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy,
                filter_subject: bus.settings().all_subjects(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut next = r.next_sequence;
        let mut done = false;
        let mut queued = 0usize;
        while !done {
            let item = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                m = tokio::time::timeout(Duration::from_secs(5), messages.next()) => m,
            };
            let m = match item {
                // Nothing more in the stream (the request itself is always there, so this
                // only happens when `from` is after it).
                Err(_) | Ok(None) => {
                    done = true;
                    None
                }
                Ok(Some(Ok(m))) => Some(m),
                Ok(Some(Err(e))) => return Err(e.to_string()),
            };
            if let Some(m) = m {
                let info = m.info().map_err(|e| e.to_string())?;
                let (sequence, published) = (info.stream_sequence, from_offset(info.published));
                next = sequence + 1;
                if sequence >= r.request_sequence || published >= r.to {
                    done = true;
                } else if !bus.settings().is_dlq_subject(m.subject.as_str()) {
                    let decoded =
                        imagelib_events::binding::decode_envelope(m.headers.as_ref(), &m.payload);
                    if let Ok(env) = decoded
                        && super::wants(&active.types, env.event_type())
                    {
                        let structured = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Content-Type"))
                            .is_some_and(|v| {
                                v.as_str().starts_with("application/cloudevents+json")
                            });
                        let body = if structured {
                            m.payload.clone()
                        } else {
                            imagelib_events::binding::encode_structured(&env).payload
                        };
                        rows.push(pending_row(&active, sequence, &env, &body));
                    }
                }
            }
            if done || rows.len() >= BATCH {
                queued += rows.len();
                self.subs
                    .store
                    .replay_progress(r, &rows, next, done)
                    .await
                    .map_err(|e| e.to_string())?;
                rows.clear();
                self.wake(s.id);
            }
        }
        tracing::info!(queued, "replay queued");
        Ok(())
    }
}

fn to_offset(t: DateTime<Utc>) -> Result<time::OffsetDateTime, String> {
    let nanos = t
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("{t} is out of range"))?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(|e| e.to_string())
}

fn from_offset(t: time::OffsetDateTime) -> DateTime<Utc> {
    let nanos = t.unix_timestamp_nanos();
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    DateTime::from_timestamp(secs, sub).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

// ---------------------------------------------------------------- sending

/// The HTTP client of deliveries.
#[derive(Debug)]
struct Sender {
    client: reqwest::Client,
    guard: registry_client::NetworkGuard,
    /// A proxy may resolve the targets: the guard then checks each before sending.
    proxied: bool,
    timeout: Duration,
}

/// Why an attempt failed.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    /// `status 503: <snippet>`, `timeout after 10s`, `connect: …`, `blocked: …`.
    error: String,
    retry_after: Option<Duration>,
}

impl Failure {
    fn error(error: String) -> Self {
        Failure {
            status: None,
            error,
            retry_after: None,
        }
    }
}

/// Printable, single-line, at most `max` characters.
fn snippet(raw: &[u8], max: usize) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

impl Sender {
    fn new(
        guard: registry_client::NetworkGuard,
        timeout: Duration,
        allow_http: bool,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(guard.resolver())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .https_only(!allow_http)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("imagelib-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the delivery HTTP client: {e}"))?;
        Ok(Sender {
            client,
            guard,
            proxied: registry_client::NetworkGuard::proxy_in_environment(),
            timeout,
        })
    }

    async fn send(&self, url: &url::Url, key: &SigningKey, row: &Pending) -> Result<u16, Failure> {
        self.guard
            .check_url(url)
            .map_err(|e| Failure::error(e.to_string()))?;
        if self.proxied {
            self.guard
                .check_target(url, self.timeout)
                .await
                .map_err(|e| Failure::error(e.to_string()))?;
        }
        let timestamp = Utc::now().timestamp();
        let signature = key.sign(&row.event_id, timestamp, &row.body);
        let mut request = self
            .client
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                imagelib_events::binding::STRUCTURED_CONTENT_TYPE,
            )
            .header("webhook-id", &row.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(row.body.clone());
        // The delivery's own span when tracing runs, else the event's context.
        let traceparent = imagelib_events::trace::current()
            .map(|t| t.to_string())
            .or_else(|| row.traceparent.clone());
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        let mut response = request.send().await.map_err(|e| self.classify(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read a little of the answer (a snippet for the record, and a short body lets
        // the connection be reused); the rest is never read.
        let mut head = Vec::new();
        while head.len() < MAX_ANSWER {
            match response.chunk().await {
                Ok(Some(c)) => head.extend_from_slice(&c[..c.len().min(MAX_ANSWER - head.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        drop(response);
        let code = status.as_u16();
        if status.is_success() {
            return Ok(code);
        }
        let what = if status.is_redirection() {
            " (redirects are not followed)".to_owned()
        } else {
            let s = snippet(&head, SNIPPET);
            if s.is_empty() {
                String::new()
            } else {
                format!(": {s}")
            }
        };
        Err(Failure {
            status: Some(code),
            error: format!("status {code}{what}"),
            retry_after: matches!(code, 429 | 503).then_some(retry_after).flatten(),
        })
    }

    /// A transport failure, named by what went wrong (the guard's refusal verbatim).
    fn classify(&self, e: &reqwest::Error) -> Failure {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        let mut root = e.to_string();
        while let Some(s) = source {
            let text = s.to_string();
            if text.starts_with("blocked") {
                return Failure::error(snippet(text.as_bytes(), 400));
            }
            root = text;
            source = s.source();
        }
        let error = if e.is_timeout() {
            format!("timeout after {}s", self.timeout.as_secs())
        } else if e.is_connect() {
            format!("connect: {}", snippet(root.as_bytes(), 300))
        } else {
            format!("request: {}", snippet(root.as_bytes(), 300))
        };
        Failure::error(error)
    }
}

// ---------------------------------------------------------------- metrics

/// Delivery metrics, recorded where deliveries happen.
mod metrics {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use imagelib_events::SubscriptionId;
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};

    use super::super::store::Counts;

    struct Instruments {
        deliveries: Counter<u64>,
        duration: Histogram<f64>,
        latency: Histogram<f64>,
        _gauges: (ObservableGauge<u64>, ObservableGauge<u64>),
    }

    static COUNTS: Mutex<BTreeMap<SubscriptionId, Counts>> = Mutex::new(BTreeMap::new());

    fn subscription(id: SubscriptionId) -> KeyValue {
        KeyValue::new("imagelib.subscription.id", id.to_string())
    }

    fn instruments() -> &'static Instruments {
        static I: OnceLock<Instruments> = OnceLock::new();
        I.get_or_init(|| {
            let meter = imagelib_platform::telemetry::meter();
            let snapshot = || {
                COUNTS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect::<Vec<_>>()
            };
            Instruments {
                deliveries: meter
                    .u64_counter("imagelib.subscriptions.deliveries")
                    .with_unit("{delivery}")
                    .with_description(
                        "Delivery attempts to subscription endpoints, by outcome (delivered, \
                         failed = will be retried, dead_lettered) and subscription",
                    )
                    .build(),
                duration: meter
                    .f64_histogram("imagelib.subscriptions.delivery.duration")
                    .with_unit("s")
                    .with_description("Duration of one delivery attempt, by outcome")
                    .with_boundaries(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ])
                    .build(),
                latency: meter
                    .f64_histogram("imagelib.subscriptions.delivery.latency")
                    .with_unit("s")
                    .with_description(
                        "From an event's time (its append) to its delivery, retries included \
                         (replays not counted)",
                    )
                    .with_boundaries(vec![
                        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                        1800.0, 3600.0, 14400.0, 86400.0,
                    ])
                    .build(),
                _gauges: (
                    meter
                        .u64_observable_gauge("imagelib.subscriptions.queue.depth")
                        .with_unit("{event}")
                        .with_description(
                            "Events waiting to be delivered to a subscription (retrying ones included)",
                        )
                        .with_callback(move |o| {
                            for (id, c) in snapshot() {
                                o.observe(c.pending, &[subscription(id)]);
                            }
                        })
                        .build(),
                    meter
                        .u64_observable_gauge("imagelib.subscriptions.dead_letters")
                        .with_unit("{event}")
                        .with_description("Events in a subscription's dead-letter list")
                        .with_callback(move |o| {
                            for (id, c) in snapshot() {
                                o.observe(c.dead_letters, &[subscription(id)]);
                            }
                        })
                        .build(),
                ),
            }
        })
    }

    /// The delivery series start at zero when delivery starts, so "no failure" is a value a
    /// dashboard can read, not a missing series. Adding zero counts nothing.
    pub(super) fn start() {
        for outcome in ["delivered", "failed", "dead_lettered"] {
            instruments()
                .deliveries
                .add(0, &[KeyValue::new("outcome", outcome)]);
        }
    }

    pub(super) fn delivered(id: SubscriptionId, took: Duration, event_time: Option<DateTime<Utc>>) {
        let i = instruments();
        i.deliveries.add(
            1,
            &[KeyValue::new("outcome", "delivered"), subscription(id)],
        );
        i.duration
            .record(took.as_secs_f64(), &[KeyValue::new("outcome", "delivered")]);
        if let Some(t) = event_time {
            let lag = (Utc::now() - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            i.latency.record(lag, &[]);
        }
    }

    pub(super) fn failed(id: SubscriptionId, took: Duration, outcome: &'static str) {
        let i = instruments();
        i.deliveries
            .add(1, &[KeyValue::new("outcome", outcome), subscription(id)]);
        i.duration
            .record(took.as_secs_f64(), &[KeyValue::new("outcome", "failed")]);
    }

    pub(super) fn set_counts(counts: Vec<(SubscriptionId, Counts)>) {
        instruments();
        *COUNTS.lock().unwrap_or_else(|e| e.into_inner()) = counts.into_iter().collect();
    }
}
