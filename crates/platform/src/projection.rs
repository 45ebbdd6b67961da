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
    ConsumerSettings, EventBus, Exhausted, Handler, HandlerError, RecordedEvent,
};
use imagelib_events::{Aggregate, Envelope};
use sqlx::{PgPool, Postgres, Transaction};

use crate::service::{Readiness, Worker};

/// A read model the projector can drive.
pub trait Projection: Clone + Send + Sync + 'static {
    /// The last stream sequence `consumer` applied (0 when none).
    fn position(&self, consumer: &str) -> impl Future<Output = Result<u64, String>> + Send;
    /// Apply one event and record `consumer`'s position, atomically.
    fn apply_consumed(
        &self,
        consumer: &str,
        sequence: u64,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), String>> + Send;
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

/// A worker projecting one aggregate type (NATS 2.9 has one filter per consumer) into
/// `projection`; the consumer is named `<service>-<aggregate>` and its readiness check
/// `projection.<aggregate>`.
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
        let mut settings = ConsumerSettings::new(name.clone())
            .filter(bus.settings().aggregate_type_filter(aggregate));
        settings.max_deliver = 10;
        settings.backoff = vec![
            Duration::from_millis(200),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ];
        settings.on_exhausted = Exhausted::Stop;
        settings.resume_after = Some(projection.position(&name).await?);
        // A NATS cluster still electing leaders (a node just came back) times out or
        // refuses consumer creation for a while: wait for it instead of stopping.
        let consumer = loop {
            match bus.consumer(settings.clone()).await {
                Ok(c) => break c,
                Err(e) => {
                    readiness.set(&check, false, Some(format!("waiting for the stream: {e}")));
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let handler = Apply {
            projection,
            consumer: name,
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
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = consumer.run(&handler, cancel.cancelled()) => r.map_err(|e| e.to_string()),
            _ = watch => Ok(()),
        }
    })
}
