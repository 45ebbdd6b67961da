//! Subscriptions in PostgreSQL: the projection of the `subscription` aggregate, and the
//! delivery state beside it (outbox, dead letters, replays), in the service's schema.
//!
//! The projection is applied idempotently (an event at or below a subscription's
//! `last_sequence` is skipped), by the command handlers (read-your-writes) and by the
//! delivery consumer, which meets every event in stream order. The outbox is written in
//! the delivery consumer's transaction with its position. Beside it, one row per
//! subscription and subject with events waiting (`subscription_subjects`) names the oldest
//! and when it may go: dispatchers take due subjects in one indexed step, and a subject is
//! leased while its event is sent, so a crashed sender's event is simply sent again once
//! the lease runs out, and no two events of a subject are ever in flight.

use chrono::{DateTime, Utc};
use imagelib_events::model::SealedCredential;
use imagelib_events::{Envelope, EventPayload, SubscriptionId};
use sqlx::{PgPool, Postgres, Row, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// A subscription row.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub url: String,
    pub types: Vec<String>,
    pub description: String,
    pub secret: Option<SealedCredential>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_sequence: u64,
    pub last_sequence: u64,
    pub removed_at: Option<DateTime<Utc>>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub last_failure: Option<String>,
}

impl Subscription {
    fn from_row(r: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        let secret: Option<serde_json::Value> = r.try_get("secret")?;
        Ok(Subscription {
            id: SubscriptionId(r.try_get("id")?),
            url: r.try_get("url")?,
            types: r.try_get("types")?,
            description: r.try_get("description")?,
            secret: secret
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("sealed secret: {e}")))?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            created_sequence: r.try_get::<i64, _>("created_sequence")? as u64,
            last_sequence: r.try_get::<i64, _>("last_sequence")? as u64,
            removed_at: r.try_get("removed_at")?,
            last_delivered_at: r.try_get("last_delivered_at")?,
            last_failed_at: r.try_get("last_failed_at")?,
            last_failure: r.try_get("last_failure")?,
        })
    }
}

/// An event waiting for one subscription, as the outbox holds it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub sequence: u64,
    /// The CloudEvent subject: rows of one subject go out in sequence order.
    pub subject: String,
    pub event_id: String,
    pub event_type: String,
    pub event_time: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub body: bytes::Bytes,
    /// Attempts made before this one.
    pub attempts: u32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub replayed: bool,
}

/// A row for the outbox, from the delivery consumer or a replay.
#[derive(Debug, Clone)]
pub struct NewPending {
    pub subscription_id: SubscriptionId,
    pub sequence: u64,
    pub subject: String,
    pub event_id: String,
    pub event_type: String,
    pub event_time: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub body: bytes::Bytes,
}

/// A dead-lettered event.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The position in the list (the page cursor).
    #[serde(skip)]
    pub id: i64,
    /// The event's stream sequence.
    pub sequence: u64,
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub event_time: DateTime<Utc>,
    pub attempts: u32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub dead_at: DateTime<Utc>,
    /// The last HTTP status, when the endpoint answered.
    pub last_status: Option<u16>,
    /// What went wrong the last time: `status 503: <start of the body>`, `timeout`,
    /// `connect: …`, `blocked: …`.
    pub last_error: Option<String>,
}

/// A replay to carry out.
#[derive(Debug, Clone)]
pub struct Replay {
    pub request_sequence: u64,
    pub subscription_id: SubscriptionId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The stream sequence to go on from (0: from `from`).
    pub next_sequence: u64,
}

/// Per-subscription counts for the gauges and the view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Clone)]
pub struct SubscriptionStore {
    pool: PgPool,
}

impl SubscriptionStore {
    pub fn new(pool: PgPool) -> Self {
        SubscriptionStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn get(&self, id: SubscriptionId) -> Result<Option<Subscription>, StoreError> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Subscription::from_row).transpose()
    }

    /// Live subscriptions after `after` by id, at most `limit`.
    pub async fn page(
        &self,
        after: Option<SubscriptionId>,
        limit: i64,
    ) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM subscriptions WHERE removed_at IS NULL AND ($1::uuid IS NULL OR id > $1)
             ORDER BY id LIMIT $2",
        )
        .bind(after.map(|a| a.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Subscription::from_row).collect()
    }

    /// Every live subscription.
    pub async fn live(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query("SELECT * FROM subscriptions WHERE removed_at IS NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Subscription::from_row).collect()
    }

    /// Removed subscriptions whose data key is not known to be destroyed.
    pub async fn unshredded(&self) -> Result<Vec<SubscriptionId>, StoreError> {
        let ids: Vec<sqlx::types::Uuid> = sqlx::query_scalar(
            "SELECT id FROM subscriptions WHERE removed_at IS NOT NULL AND key_shredded_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(SubscriptionId).collect())
    }

    pub async fn mark_shredded(&self, id: SubscriptionId) -> Result<(), StoreError> {
        sqlx::query("UPDATE subscriptions SET key_shredded_at = now() WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Pending and dead-lettered counts of the given subscriptions (all live ones when
    /// `None`); subscriptions with neither are there with zeros.
    pub async fn counts(
        &self,
        ids: Option<&[SubscriptionId]>,
    ) -> Result<Vec<(SubscriptionId, Counts)>, StoreError> {
        let ids: Option<Vec<sqlx::types::Uuid>> = ids.map(|i| i.iter().map(|s| s.0).collect());
        let rows = sqlx::query(
            "SELECT s.id,
                    (SELECT count(*) FROM subscription_outbox o WHERE o.subscription_id = s.id) AS pending,
                    (SELECT count(*) FROM subscription_dead_letters d WHERE d.subscription_id = s.id) AS dead
             FROM subscriptions s
             WHERE s.removed_at IS NULL AND ($1::uuid[] IS NULL OR s.id = ANY($1))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    SubscriptionId(r.try_get("id")?),
                    Counts {
                        pending: r.try_get::<i64, _>("pending")? as u64,
                        dead_letters: r.try_get::<i64, _>("dead")? as u64,
                    },
                ))
            })
            .collect()
    }

    /// Apply an event a command handler just appended (read-your-writes).
    pub async fn apply(&self, seq: u64, env: &Envelope) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        apply_in(&mut tx, seq, env).await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------ outbox

    /// Lease up to `limit` subjects whose head event is due, the longest-waiting first, for
    /// `lease`; returns their head events. A leased subject is not taken again until its
    /// event is recorded (or the lease runs out), so no two events of one subject are ever
    /// in flight.
    pub async fn claim(
        &self,
        id: SubscriptionId,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<Pending>, StoreError> {
        // A lease lost in a crash is no lease: nothing to wait for on disk.
        let mut tx = self.outcome_tx().await?;
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT subscription_id, subject FROM subscription_subjects
                 WHERE subscription_id = $1 AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE subscription_subjects s
             SET next_attempt_at = now() + make_interval(secs => $3)
             FROM due, subscription_outbox o
             WHERE s.subscription_id = due.subscription_id AND s.subject = due.subject
               AND o.subscription_id = s.subscription_id AND o.sequence = s.head_sequence
             RETURNING o.sequence, o.subject, o.event_id, o.event_type, o.event_time,
                       o.traceparent, o.body, o.attempts, o.first_attempt_at, o.replayed",
        )
        .bind(id.0)
        .bind(limit as i64)
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(pending_from_row)
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|p| p.sequence);
        Ok(out)
    }

    /// How long until a subject is due (`None`: nothing waits).
    pub async fn next_due(
        &self,
        id: SubscriptionId,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (min(next_attempt_at) - now()))::float8
             FROM subscription_subjects WHERE subscription_id = $1",
        )
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(secs.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
    }

    /// Lifts the leases of subjects a stopping dispatcher was sending.
    pub async fn release(&self, id: SubscriptionId, subjects: &[String]) -> Result<(), StoreError> {
        if subjects.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE subscription_subjects SET next_attempt_at = now()
             WHERE subscription_id = $1 AND subject = ANY($2)",
        )
        .bind(id.0)
        .bind(subjects)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The head event of `subject` is done with (delivered or dead-lettered) and gone from
    /// the outbox in this transaction: the subject moves on to its next event, due now, or
    /// leaves the queue, and the subscription's delivery time or failure is noted. The
    /// caller locked the subject row first, so an event the delivery consumer queues
    /// meanwhile waits for this transaction and then finds (or makes) the row: this
    /// statement, with a snapshot taken after the lock, sees every event queued before.
    async fn advance(
        tx: &mut Transaction<'_, Postgres>,
        id: SubscriptionId,
        subject: &str,
        failure: Option<&str>,
        lease: Option<std::time::Duration>,
    ) -> Result<Option<Pending>, StoreError> {
        let next = sqlx::query(
            "WITH nxt AS (
                 SELECT min(sequence) AS seq FROM subscription_outbox
                 WHERE subscription_id = $1 AND subject = $2),
             moved AS (
                 UPDATE subscription_subjects s SET head_sequence = nxt.seq,
                     next_attempt_at = CASE WHEN $4::float8 IS NULL THEN now()
                                            ELSE now() + make_interval(secs => $4::float8) END
                 FROM nxt WHERE s.subscription_id = $1 AND s.subject = $2 AND nxt.seq IS NOT NULL
                 RETURNING s.head_sequence),
             gone AS (
                 DELETE FROM subscription_subjects s USING nxt
                 WHERE s.subscription_id = $1 AND s.subject = $2 AND nxt.seq IS NULL),
             touched AS (
                 UPDATE subscriptions SET
                     last_delivered_at = CASE WHEN $3::text IS NULL THEN now() ELSE last_delivered_at END,
                     last_failed_at = CASE WHEN $3::text IS NULL THEN last_failed_at ELSE now() END,
                     last_failure = COALESCE($3::text, last_failure)
                 WHERE id = $1 AND ($3::text IS NOT NULL OR last_delivered_at IS NULL
                                    OR last_delivered_at < now() - interval '1 second'))
             SELECT o.sequence, o.subject, o.event_id, o.event_type, o.event_time,
                    o.traceparent, o.body, o.attempts, o.first_attempt_at, o.replayed
             FROM moved JOIN subscription_outbox o
               ON o.subscription_id = $1 AND o.sequence = moved.head_sequence
             WHERE $4::float8 IS NOT NULL",
        )
        .bind(id.0)
        .bind(subject)
        .bind(failure)
        .bind(lease.map(|l| l.as_secs_f64()))
        .fetch_optional(&mut **tx)
        .await?;
        next.as_ref().map(pending_from_row).transpose()
    }

    /// A transaction recording a delivery attempt's outcome, committed without waiting for
    /// the WAL flush: a record lost in a crash only means the event is sent once more,
    /// which at-least-once delivery allows, and waiting for the disk on every delivery
    /// would bound a subscription's throughput by it.
    async fn outcome_tx(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A delivered event leaves the outbox; its subject moves on. With `lease`, the
    /// subject's next event (if one waits) is leased to the caller and returned, so the
    /// sender goes straight on with it.
    pub async fn delivered(
        &self,
        id: SubscriptionId,
        p: &Pending,
        lease: Option<std::time::Duration>,
    ) -> Result<Option<Pending>, StoreError> {
        let mut tx = self.outcome_tx().await?;
        sqlx::query(
            "WITH locked AS (
                 SELECT 1 FROM subscription_subjects
                 WHERE subscription_id = $1 AND subject = $3 FOR UPDATE),
             gone AS (
                 DELETE FROM subscription_outbox WHERE subscription_id = $1 AND sequence = $2)
             SELECT count(*) FROM locked",
        )
        .bind(id.0)
        .bind(p.sequence as i64)
        .bind(&p.subject)
        .execute(&mut *tx)
        .await?;
        let next = Self::advance(&mut tx, id, &p.subject, None, lease).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// A failed attempt (begun at `at`): the subject waits `retry_in`, its later events
    /// behind it.
    #[allow(clippy::too_many_arguments)]
    pub async fn failed(
        &self,
        id: SubscriptionId,
        p: &Pending,
        attempts: u32,
        at: DateTime<Utc>,
        retry_in: std::time::Duration,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.outcome_tx().await?;
        sqlx::query(
            "UPDATE subscription_outbox
             SET attempts = $3, first_attempt_at = COALESCE(first_attempt_at, $4),
                 last_status = $5, last_error = $6
             WHERE subscription_id = $1 AND sequence = $2",
        )
        .bind(id.0)
        .bind(p.sequence as i64)
        .bind(attempts as i32)
        .bind(at)
        .bind(status.map(i32::from))
        .bind(error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subscription_subjects SET next_attempt_at = now() + make_interval(secs => $3)
             WHERE subscription_id = $1 AND subject = $2",
        )
        .bind(id.0)
        .bind(&p.subject)
        .bind(retry_in.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subscriptions SET last_failed_at = now(), last_failure = $2 WHERE id = $1",
        )
        .bind(id.0)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The last attempt (begun at `at`) failed too: the event moves to the dead-letter
    /// list, and its subject moves on.
    pub async fn dead_letter(
        &self,
        id: SubscriptionId,
        p: &Pending,
        attempts: u32,
        at: DateTime<Utc>,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.outcome_tx().await?;
        sqlx::query(
            "SELECT 1 FROM subscription_subjects WHERE subscription_id = $1 AND subject = $2 FOR UPDATE",
        )
        .bind(id.0)
        .bind(&p.subject)
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query(
            "WITH gone AS (
                 DELETE FROM subscription_outbox WHERE subscription_id = $1 AND sequence = $2
                 RETURNING *)
             INSERT INTO subscription_dead_letters (subscription_id, sequence, event_id, event_type,
                 subject, event_time, attempts, first_attempt_at, dead_at, last_status, last_error)
             SELECT subscription_id, sequence, event_id, event_type, subject, event_time, $3,
                    COALESCE(first_attempt_at, $4), clock_timestamp(), $5, $6
             FROM gone",
        )
        .bind(id.0)
        .bind(p.sequence as i64)
        .bind(attempts as i32)
        .bind(at)
        .bind(status.map(i32::from))
        .bind(error)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() > 0 {
            Self::advance(&mut tx, id, &p.subject, Some(error), None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Repairs the subject queue: a subject row whose head event is gone moves on (or
    /// leaves), and events without a subject row get one. Neither happens in normal
    /// operation; this keeps a subscription from stalling if it ever did. Returns how many
    /// rows it fixed.
    pub async fn repair(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "WITH heads AS (
                 SELECT s.subscription_id, s.subject,
                        (SELECT min(o.sequence) FROM subscription_outbox o
                         WHERE o.subscription_id = s.subscription_id AND o.subject = s.subject) AS seq
                 FROM subscription_subjects s
                 WHERE NOT EXISTS (SELECT 1 FROM subscription_outbox o
                                   WHERE o.subscription_id = s.subscription_id AND o.sequence = s.head_sequence)
                 FOR UPDATE OF s SKIP LOCKED)
             UPDATE subscription_subjects s SET head_sequence = heads.seq, next_attempt_at = now()
             FROM heads
             WHERE s.subscription_id = heads.subscription_id AND s.subject = heads.subject
               AND heads.seq IS NOT NULL",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let gone = sqlx::query(
            "DELETE FROM subscription_subjects s
             WHERE NOT EXISTS (SELECT 1 FROM subscription_outbox o
                               WHERE o.subscription_id = s.subscription_id AND o.subject = s.subject)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let added = sqlx::query(
            "INSERT INTO subscription_subjects (subscription_id, subject, head_sequence, next_attempt_at)
             SELECT subscription_id, subject, min(sequence), now() FROM subscription_outbox o
             WHERE NOT EXISTS (SELECT 1 FROM subscription_subjects s
                               WHERE s.subscription_id = o.subscription_id AND s.subject = o.subject)
             GROUP BY subscription_id, subject
             ON CONFLICT (subscription_id, subject) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(moved + gone + added)
    }

    /// A page of the dead-letter list, newest first, after the cursor `before`.
    pub async fn dead_letters(
        &self,
        id: SubscriptionId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM subscription_dead_letters
             WHERE subscription_id = $1 AND ($2::bigint IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(id.0)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get("id")?,
                    sequence: r.try_get::<i64, _>("sequence")? as u64,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    subject: r.try_get("subject")?,
                    event_time: r.try_get("event_time")?,
                    attempts: r.try_get::<i32, _>("attempts")?.max(0) as u32,
                    first_attempt_at: r.try_get("first_attempt_at")?,
                    dead_at: r.try_get("dead_at")?,
                    last_status: r
                        .try_get::<Option<i32>, _>("last_status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------ replays

    /// Replays not finished yet, oldest request first.
    pub async fn open_replays(&self) -> Result<Vec<Replay>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.* FROM subscription_replays r JOIN subscriptions s ON s.id = r.subscription_id
             WHERE r.done_at IS NULL AND s.removed_at IS NULL ORDER BY r.request_sequence",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Replay {
                    request_sequence: r.try_get::<i64, _>("request_sequence")? as u64,
                    subscription_id: SubscriptionId(r.try_get("subscription_id")?),
                    from: r.try_get("from_time")?,
                    to: r.try_get("to_time")?,
                    next_sequence: r.try_get::<i64, _>("next_sequence")? as u64,
                })
            })
            .collect()
    }

    /// Queue replayed rows and record how far the replay got, atomically; `done` ends it.
    pub async fn replay_progress(
        &self,
        replay: &Replay,
        rows: &[NewPending],
        next_sequence: u64,
        done: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = enqueue(&mut tx, rows, true).await?;
        sqlx::query(
            "UPDATE subscription_replays SET next_sequence = $2, enqueued = enqueued + $3,
                 done_at = CASE WHEN $4 THEN now() ELSE NULL END
             WHERE request_sequence = $1",
        )
        .bind(replay.request_sequence as i64)
        .bind(next_sequence as i64)
        .bind(n as i64)
        .bind(done)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn pending_from_row(r: &sqlx::postgres::PgRow) -> Result<Pending, StoreError> {
    Ok(Pending {
        sequence: r.try_get::<i64, _>("sequence")? as u64,
        subject: r.try_get("subject")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        event_time: r.try_get("event_time")?,
        traceparent: r.try_get("traceparent")?,
        body: bytes::Bytes::from(r.try_get::<Vec<u8>, _>("body")?),
        attempts: r.try_get::<i32, _>("attempts")?.max(0) as u32,
        first_attempt_at: r.try_get("first_attempt_at")?,
        replayed: r.try_get("replayed")?,
    })
}

/// Put rows in the outbox (a row already there, e.g. replayed while still pending, is left
/// alone). Returns how many were added.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[NewPending],
    replayed: bool,
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    let mut subjects = Vec::with_capacity(rows.len());
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut tps = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for r in rows {
        ids.push(r.subscription_id.0);
        seqs.push(r.sequence as i64);
        subjects.push(r.subject.clone());
        event_ids.push(r.event_id.clone());
        types.push(r.event_type.clone());
        times.push(r.event_time);
        tps.push(r.traceparent.clone());
        bodies.push(r.body.to_vec());
    }
    let done: Vec<(sqlx::types::Uuid, String, i64)> = sqlx::query_as(
        "INSERT INTO subscription_outbox (subscription_id, sequence, subject, event_id, event_type,
             event_time, traceparent, body, replayed)
         SELECT u.*, $9 FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[],
             $5::text[], $6::timestamptz[], $7::text[], $8::bytea[])
             AS u(subscription_id, sequence, subject, event_id, event_type, event_time, traceparent, body)
         WHERE NOT EXISTS (SELECT 1 FROM subscriptions s
                           WHERE s.id = u.subscription_id AND s.removed_at IS NOT NULL)
         ON CONFLICT (subscription_id, sequence) DO NOTHING
         RETURNING subscription_id, subject, sequence",
    )
    .bind(ids)
    .bind(seqs)
    .bind(subjects)
    .bind(event_ids)
    .bind(types)
    .bind(times)
    .bind(tps)
    .bind(bodies)
    .bind(replayed)
    .fetch_all(&mut **tx)
    .await?;
    // Each subject with new events is queued, its head the oldest waiting (a replayed
    // event may be older than the head).
    sqlx::query(
        "INSERT INTO subscription_subjects (subscription_id, subject, head_sequence, next_attempt_at)
         SELECT subscription_id, subject, min(sequence), now()
         FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS n(subscription_id, subject, sequence)
         GROUP BY subscription_id, subject
         ORDER BY subscription_id, subject
         ON CONFLICT (subscription_id, subject) DO UPDATE
         SET head_sequence = LEAST(subscription_subjects.head_sequence, EXCLUDED.head_sequence)",
    )
    .bind(done.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(done.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
    .bind(done.iter().map(|r| r.2).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(done.len() as u64)
}

/// The subscription's last sequence moves to `seq`: false when it already saw it.
async fn newer(
    tx: &mut Transaction<'_, Postgres>,
    id: SubscriptionId,
    seq: u64,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE subscriptions SET last_sequence = $2 WHERE id = $1 AND last_sequence < $2",
    )
    .bind(id.0)
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Apply a `subscription.*` event (others are ignored).
pub(crate) async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    seq: u64,
    env: &Envelope,
) -> Result<(), StoreError> {
    match &env.payload {
        EventPayload::SubscriptionCreated(e) => {
            let secret = serde_json::to_value(&e.secret)
                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
            sqlx::query(
                "INSERT INTO subscriptions (id, url, types, description, secret, created_by,
                     created_at, created_sequence, last_sequence)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.subscription_id.0)
            .bind(&e.url)
            .bind(&e.types)
            .bind(&e.description)
            .bind(secret)
            .bind(&env.actor)
            .bind(env.time)
            .bind(seq as i64)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::SubscriptionRemoved(e) => {
            if newer(tx, e.subscription_id, seq).await? {
                // The sealed secret is dead once the data key is destroyed; drop it anyway.
                sqlx::query(
                    "UPDATE subscriptions SET removed_at = $2, secret = NULL WHERE id = $1",
                )
                .bind(e.subscription_id.0)
                .bind(env.time)
                .execute(&mut **tx)
                .await?;
            }
            // Whatever is still queued for the endpoint goes, every time this is applied:
            // the delivery consumer may have queued rows after a command handler applied it.
            for table in [
                "subscription_subjects",
                "subscription_outbox",
                "subscription_dead_letters",
                "subscription_replays",
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE subscription_id = $1"))
                    .bind(e.subscription_id.0)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        EventPayload::SubscriptionReplayRequested(e) => {
            if !newer(tx, e.subscription_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO subscription_replays (request_sequence, subscription_id, from_time, to_time)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (request_sequence) DO NOTHING",
            )
            .bind(seq as i64)
            .bind(e.subscription_id.0)
            .bind(e.from)
            .bind(e.to)
            .execute(&mut **tx)
            .await?;
        }
        _ => {}
    }
    Ok(())
}
