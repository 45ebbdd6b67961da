//! Projections: read models kept in PostgreSQL from the stream.
//!
//! Every service keeps its own view of the aggregates it cares about. The pattern is the
//! same everywhere, so it lives here: a durable consumer per aggregate type whose position
//! is stored in the same transaction as the rows it changes (a restart resumes exactly
//! there; an emptied database makes the consumer start over), an idempotent apply, a loud
//! stop when an event keeps failing, and a readiness check that turns true once caught up.

use std::future::Future;
use std::time::Duration;

use imagelib_events::bus::{
    BatchHandler, ConsumerSettings, EventBus, Exhausted, Handler, HandlerError, RecordedEvent,
};
use imagelib_events::{Aggregate, Envelope};
use sqlx::{PgPool, Postgres, Transaction};

use crate::db::AdvisoryLock;
use crate::service::{Readiness, Worker};

/// A read model the projector can drive.
pub trait Projection: Clone + Send + Sync + 'static {
    /// The projection's database.
    fn pool(&self) -> &PgPool;
    /// How to open a connection of its own to the projection's database (the projector's
    /// lock, see [`projector`]).
    fn connect_options(&self) -> sqlx::postgres::PgConnectOptions {
        (*self.pool().connect_options()).clone()
    }
    /// The last stream sequence `consumer` applied (0 when none).
    fn position(&self, consumer: &str) -> impl Future<Output = Result<u64, String>> + Send {
        async move {
            position(self.pool(), consumer)
                .await
                .map_err(|e| e.to_string())
        }
    }
    /// Apply one event and record `consumer`'s position, atomically.
    fn apply_consumed(
        &self,
        consumer: &str,
        sequence: u64,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), String>> + Send {
        async move {
            self.apply_consumed_batch(consumer, &[(sequence, envelope)])
                .await
        }
    }
    /// Apply one event inside `tx` (idempotently: a redelivered event changes nothing).
    fn apply_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        sequence: u64,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Called after `events` were committed (to wake what waits for them); nothing by
    /// default.
    fn applied(&self, events: &[(u64, &Envelope)]) {
        let _ = events;
    }
    /// Apply events delivered together (in stream order) and record `consumer`'s position
    /// at the last, in one transaction: all of them or, on an error, none.
    fn apply_consumed_batch(
        &self,
        consumer: &str,
        events: &[(u64, &Envelope)],
    ) -> impl Future<Output = Result<(), String>> + Send {
        async move {
            let Some(last) = events.iter().map(|(seq, _)| *seq).max() else {
                return Ok(());
            };
            let mut tx = self.pool().begin().await.map_err(|e| e.to_string())?;
            for (seq, env) in events {
                self.apply_in(&mut tx, *seq, env).await?;
            }
            record_position(&mut tx, consumer, last)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            self.applied(events);
            Ok(())
        }
    }
}

/// The recorded position of `consumer` (table `stream_position`).
pub async fn position(pool: &PgPool, consumer: &str) -> Result<u64, sqlx::Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT sequence FROM stream_position WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(pool)
            .await?;
    Ok(v.unwrap_or(0) as u64)
}

/// Record `consumer`'s position inside the transaction that applied the event.
pub async fn record_position(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    sequence: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stream_position (consumer, sequence) VALUES ($1, $2)
         ON CONFLICT (consumer) DO UPDATE
         SET sequence = GREATEST(stream_position.sequence, EXCLUDED.sequence), updated_at = now()",
    )
    .bind(consumer)
    .bind(sequence as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves one aggregate's watermark in `table` (columns `key_column`, `last_sequence`) to
/// `sequence`, in the applying transaction: false when the aggregate already saw that
/// event or a later one (a redelivery), so its effect is applied once. `table` and
/// `key_column` are the caller's constants, never input.
pub async fn advance_watermark(
    tx: &mut Transaction<'_, Postgres>,
    table: &'static str,
    key_column: &'static str,
    id: sqlx::types::Uuid,
    sequence: u64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(&format!(
        "INSERT INTO {table} ({key_column}, last_sequence) VALUES ($1, $2)
         ON CONFLICT ({key_column}) DO UPDATE SET last_sequence = EXCLUDED.last_sequence
         WHERE {table}.last_sequence < EXCLUDED.last_sequence"
    ))
    .bind(id)
    .bind(sequence as i64)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// At most this many events per transaction. No event waits for others: a batch is what
/// is already there when the consumer fetches.
const BATCH: usize = 256;

struct Apply<P> {
    projection: P,
    consumer: String,
}

impl<P: Projection> Handler for Apply<P> {
    async fn handle(&self, event: RecordedEvent) -> Result<(), HandlerError> {
        self.projection
            .apply_consumed(&self.consumer, event.sequence, &event.envelope)
            .await
            .map_err(HandlerError::Transient)
    }
}

impl<P: Projection> BatchHandler for Apply<P> {
    /// What one fetch brought, in one transaction: a scan's image events come by the
    /// thousand, and a transaction each cost every replica's projection a commit per event.
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        let events: Vec<(u64, &Envelope)> =
            events.iter().map(|e| (e.sequence, &e.envelope)).collect();
        self.projection
            .apply_consumed_batch(&self.consumer, &events)
            .await
            .map_err(HandlerError::Transient)
    }
}

/// A worker projecting one aggregate type (NATS 2.9 has one filter per consumer) into
/// `projection`; the consumer is named `<service>-<aggregate>` and its readiness check
/// `projection.<aggregate>`.
///
/// Replicas of a service share its schema and this durable consumer, so one of them
/// applies at a time: the one holding the consumer's advisory lock ([`lock_key`]) on a
/// connection of its own. Two appliers pulling from one consumer would each get part of
/// the events and commit them in any order, and the per-aggregate watermarks would then
/// skip an earlier event of an aggregate whose later one the other replica committed
/// first. The others stand by (ready; the check says `standby: …`) and the first to take
/// the lock when the holder stops, dies or loses its connection resumes after the
/// position the schema records.
pub fn projector<P: Projection>(
    bus: &EventBus,
    service: &str,
    projection: P,
    readiness: Readiness,
    aggregate: Aggregate,
) -> Worker {
    let bus = bus.clone();
    let name = format!("{service}-{}", aggregate.as_str());
    let check = format!("projection.{}", aggregate.as_str());
    readiness.set(&check, false, Some("catching up".into()));
    Worker::new(name.clone(), move |cancel| async move {
        let mut lock = AdvisoryLock::new(projection.connect_options(), lock_key(&name));
        loop {
            let others = "another replica applies these events to the shared schema";
            let Some(conn) = take_lock(&mut lock, &readiness, &check, others, &cancel).await else {
                return Ok(());
            };
            let filter = bus.settings().aggregate_type_filter(aggregate);
            let run = Run {
                bus: &bus,
                name: &name,
                filter,
                readiness: &readiness,
                check: &check,
                cancel: &cancel,
            };
            match run.apply_while_held(&projection, conn).await? {
                Held::Cancelled => return Ok(()),
                Held::Lost(e) => {
                    tracing::warn!(consumer = %name, error = %e, "lost the projector's lock; taking it again");
                    readiness.set(&check, false, Some(format!("lock lost: {e}")));
                }
            }
        }
    })
}

/// Why [`Run::apply_while_held`] returned without an error.
enum Held {
    Cancelled,
    Lost(sqlx::Error),
}

/// The advisory lock key of consumer `name`: a 64-bit FNV-1a hash of it, so that every
/// replica derives the same key and consumers of different names (in one database) do
/// not share one.
pub fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"imagelib projector:".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Waits until `lock` is taken, trying every [`LOCK_RETRY`] on one kept connection; until
/// then the replica stands by: `check` is ready and reads `standby: <what_others_do>`.
/// `None` when cancelled first.
pub async fn take_lock(
    lock: &mut AdvisoryLock,
    readiness: &Readiness,
    check: &str,
    what_others_do: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<sqlx::PgConnection> {
    let mut standby = false;
    loop {
        match lock.try_take().await {
            Ok(Some(conn)) => {
                if standby {
                    tracing::info!(
                        check,
                        "the lock is taken: this replica applies the events now"
                    );
                }
                readiness.set(check, false, Some("catching up".into()));
                return Some(conn);
            }
            Ok(None) => {
                if !standby {
                    tracing::info!(check, "{what_others_do}; standing by");
                    standby = true;
                }
                readiness.set(check, true, Some(format!("standby: {what_others_do}")));
            }
            Err(e) => readiness.set(check, false, Some(format!("database unavailable: {e}"))),
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(LOCK_RETRY) => {}
        }
    }
}

/// How often a standby tries the lock, and the holder checks that its connection lives.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// One projector's context while it holds the lock.
struct Run<'a> {
    bus: &'a EventBus,
    name: &'a str,
    filter: String,
    readiness: &'a Readiness,
    check: &'a str,
    cancel: &'a tokio_util::sync::CancellationToken,
}

impl Run<'_> {
    /// Applies the events until cancelled or until the lock's connection fails.
    async fn apply_while_held<P: Projection>(
        &self,
        projection: &P,
        mut lock: sqlx::PgConnection,
    ) -> Result<Held, String> {
        let Run {
            bus,
            name,
            readiness,
            check,
            cancel,
            ..
        } = *self;
        let mut settings = ConsumerSettings::new(name.to_owned()).filter(self.filter.clone());
        settings.max_deliver = 10;
        settings.backoff = vec![
            Duration::from_millis(200),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ];
        settings.on_exhausted = Exhausted::Stop;
        settings.resume_after = Some(projection.position(name).await?);
        // A NATS cluster still electing leaders (a node just came back) times out or
        // refuses consumer creation for a while: wait for it instead of stopping.
        let consumer = loop {
            match bus.consumer(settings.clone()).await {
                Ok(c) => break c,
                Err(e) => {
                    readiness.set(check, false, Some(format!("waiting for the stream: {e}")));
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(Held::Cancelled),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let handler = Apply {
            projection: projection.clone(),
            consumer: name.to_owned(),
        };
        let watch = async {
            loop {
                match consumer.pending().await {
                    Ok(0) => {
                        readiness.set(check, true, None);
                        break;
                    }
                    Ok(n) => readiness.set(check, false, Some(format!("{n} events to apply"))),
                    Err(e) => readiness.set(check, false, Some(e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            std::future::pending::<Held>().await
        };
        let held = async {
            loop {
                tokio::time::sleep(LOCK_RETRY).await;
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut lock).await {
                    return e;
                }
            }
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let run = consumer.run_batched(&handler, BATCH, Duration::ZERO, stop.cancelled());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r.map(|()| Held::Cancelled).map_err(|e| e.to_string()),
            _ = cancel.cancelled() => {
                stop.cancel();
                run.await.map(|()| Held::Cancelled).map_err(|e| e.to_string())
            }
            e = held => {
                stop.cancel();
                run.await.map_err(|e| e.to_string())?;
                Ok(Held::Lost(e))
            }
            h = watch => Ok(h),
        }
    }
}
