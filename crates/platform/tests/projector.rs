//! The shared projector (`imagelib_platform::projection::projector`) against a real NATS
//! server and a real PostgreSQL: batches of events in one transaction, and replicas
//! sharing one schema and one durable consumer applying them one replica at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::RegistryValidated;
use imagelib_events::{Aggregate, Envelope, RegistryId};
use imagelib_platform::Readiness;
use imagelib_platform::projection::{Projection, projector};
use imagelib_testkit::{TestDb, TestStream};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A projection that records which replica applied each event, in which transaction.
#[derive(Clone)]
struct Recorder {
    pool: PgPool,
    replica: &'static str,
    transactions: Arc<AtomicI32>,
}

impl Projection for Recorder {
    fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    async fn apply_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        seq: u64,
        _: &Envelope,
    ) -> Result<(), String> {
        sqlx::query("INSERT INTO applied (seq, replica, tx) VALUES ($1, $2, $3)")
            .bind(seq as i64)
            .bind(self.replica)
            .bind(self.transactions.load(Ordering::SeqCst))
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Each transaction gets a number of its own: the next one.
    fn applied(&self, _: &[(u64, &Envelope)]) {
        self.transactions.fetch_add(1, Ordering::SeqCst);
    }
}

async fn bus(ts: &TestStream) -> anyhow::Result<EventBus> {
    let bus = EventBus::connect(
        &imagelib_events::connect::NatsConnect::new(&ts.nats_url),
        "test",
        StreamSettings::new(&ts.name, &ts.prefix),
    )
    .await?;
    bus.ensure_stream().await?;
    Ok(bus)
}

async fn publish(bus: &EventBus, n: usize) -> anyhow::Result<()> {
    let events: Vec<Envelope> = (0..n)
        .map(|_| {
            Envelope::new(
                "test",
                RegistryValidated {
                    registry_id: RegistryId::new(),
                    auth_scheme: None,
                    catalog_access: true,
                },
            )
        })
        .collect();
    bus.publish_all(&events).await?;
    Ok(())
}

/// Waits until `n` events are applied; returns (seq, replica, tx) in the order applied.
async fn applied(pool: &PgPool, n: usize) -> anyhow::Result<Vec<(i64, String, i32)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Vec<(i64, String, i32)> =
            sqlx::query_as("SELECT seq, replica, tx FROM applied ORDER BY id")
                .fetch_all(pool)
                .await?;
        if rows.len() >= n {
            return Ok(rows);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} events applied",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check_of(readiness: &Readiness, check: &str, want: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = readiness.report().get(check).cloned();
        if let Some(c) = &c
            && c.ready
            && want(c.detail.as_deref().unwrap_or(""))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{check} never became what was expected: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn replicas_apply_each_event_once_in_order_in_batches() -> anyhow::Result<()> {
    let ts = TestStream::new();
    let bus = bus(&ts).await?;
    let db = TestDb::new();
    let pool = db.create().await?;
    sqlx::raw_sql(
        "CREATE TABLE stream_position (consumer text PRIMARY KEY, sequence bigint NOT NULL,
                                       updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE applied (id bigserial PRIMARY KEY, seq bigint NOT NULL UNIQUE,
                               replica text NOT NULL, tx int NOT NULL);",
    )
    .execute(&pool)
    .await?;
    let transactions = Arc::new(AtomicI32::new(0));
    let replica = |name| Recorder {
        pool: pool.clone(),
        replica: name,
        transactions: transactions.clone(),
    };
    let check = "projection.registry";

    // Events already in the stream when the projector starts are applied in batches.
    publish(&bus, 300).await?;
    let (ready_a, stop_a) = (Readiness::new(), CancellationToken::new());
    let a = tokio::spawn(
        projector(
            &bus,
            "test",
            replica("a"),
            ready_a.clone(),
            Aggregate::Registry,
        )
        .run(stop_a.clone()),
    );
    let rows = applied(&pool, 300).await?;
    let batches = rows
        .iter()
        .map(|r| r.2)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        batches.len() <= 30,
        "300 events in {} transactions: not batched",
        batches.len()
    );
    check_of(&ready_a, check, |d| d.is_empty()).await;

    // A second replica on the same schema and consumer stands by, ready.
    let (ready_b, stop_b) = (Readiness::new(), CancellationToken::new());
    let b = tokio::spawn(
        projector(
            &bus,
            "test",
            replica("b"),
            ready_b.clone(),
            Aggregate::Registry,
        )
        .run(stop_b.clone()),
    );
    check_of(&ready_b, check, |d| d.starts_with("standby")).await;
    for _ in 0..5 {
        publish(&bus, 20).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = applied(&pool, 400).await?;
    assert!(
        rows.iter().all(|r| r.1 == "a"),
        "only the lock's holder applies"
    );

    // The holder stops: the standby resumes where the schema is.
    stop_a.cancel();
    a.await?.map_err(anyhow::Error::msg)?;
    publish(&bus, 50).await?;
    let rows = applied(&pool, 450).await?;
    check_of(&ready_b, check, |d| d.is_empty()).await;
    assert!(rows[400..].iter().all(|r| r.1 == "b"), "b took over");
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        seqs,
        (1..=450).collect::<Vec<i64>>(),
        "every event once, in stream order"
    );

    // The lock's session dies (a PostgreSQL restart, a network cut): the replica stops
    // applying, takes the lock again and goes on from the recorded position.
    const HOLDERS: &str = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let holders: Vec<i32> = sqlx::query_scalar(HOLDERS).fetch_all(&pool).await?;
    assert_eq!(holders.len(), 1, "one session holds the projector's lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holders[0])
        .execute(&pool)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<i32> = sqlx::query_scalar(HOLDERS).fetch_all(&pool).await?;
        if now.len() == 1 && now[0] != holders[0] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock was not taken again: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&bus, 50).await?;
    let rows = applied(&pool, 500).await?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<i64>>());
    check_of(&ready_b, check, |d| d.is_empty()).await;
    let position: i64 =
        sqlx::query_scalar("SELECT sequence FROM stream_position WHERE consumer = 'test-registry'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(position, 500);
    stop_b.cancel();
    b.await?.map_err(anyhow::Error::msg)?;
    pool.close().await;
    Ok(())
}
