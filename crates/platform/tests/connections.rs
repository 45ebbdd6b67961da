//! Connections taken back without a round trip, against a real PostgreSQL: reused after a
//! completed statement, closed after a failed or abandoned one, bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imagelib_platform::connections::Connections;
use imagelib_testkit::TestDb;
use sqlx::Row;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

async fn backend(c: &Connections) -> anyhow::Result<i32> {
    let row = c
        .fetch_optional(sqlx::query("SELECT pg_backend_pid()"))
        .await?
        .expect("a row");
    Ok(row.try_get(0)?)
}

#[tokio::test]
async fn a_connection_is_reused_only_after_its_statement_completed() -> anyhow::Result<()> {
    let db = TestDb::new();
    let _pool = db.create().await?;
    let c = Connections::new(db.url.parse()?, 4, Duration::from_secs(5));
    assert_eq!(c.idle(), 0);
    let first = backend(&c).await?;
    assert_eq!(c.idle(), 1);
    assert_eq!(
        backend(&c).await?,
        first,
        "the idle connection is used again"
    );
    let rows = c
        .fetch_all(sqlx::query("SELECT generate_series(1, $1)").bind(3_i32))
        .await?;
    assert_eq!(rows.len(), 3);
    assert_eq!(c.idle(), 1);

    // A statement that fails: its connection is closed, not handed out again.
    assert!(c.fetch_all(sqlx::query("SELECT 1 / 0")).await.is_err());
    assert_eq!(c.idle(), 0);
    let second = backend(&c).await?;
    assert_ne!(second, first);

    // A statement abandoned half-way (the caller went away): closed too.
    let slow = c.fetch_all(sqlx::query("SELECT pg_sleep(5)"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err()
    );
    assert_eq!(c.idle(), 0);
    let third = backend(&c).await?;
    assert_ne!(third, second);
    assert_eq!(c.idle(), 1);
    Ok(())
}

#[tokio::test]
async fn no_more_connections_than_the_bound_and_a_caller_waits_at_most_the_timeout()
-> anyhow::Result<()> {
    let db = TestDb::new();
    let _pool = db.create().await?;
    let c = std::sync::Arc::new(Connections::new(
        db.url.parse()?,
        1,
        Duration::from_millis(300),
    ));
    let busy = {
        let c = c.clone();
        tokio::spawn(async move { c.fetch_all(sqlx::query("SELECT pg_sleep(2)")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    match backend(&c).await {
        Err(e) => assert!(
            matches!(
                e.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::PoolTimedOut)
            ),
            "{e}"
        ),
        Ok(pid) => panic!("a second connection ({pid}) beyond the bound of one"),
    }
    busy.await??;
    backend(&c).await?;
    assert_eq!(c.idle(), 1);
    Ok(())
}

/// Counts span entries and the warnings of `imagelib_platform::connections`.
#[derive(Clone, Default)]
struct Counts {
    enters: Arc<AtomicUsize>,
    warnings: Arc<AtomicUsize>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Counts {
    fn on_enter(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        self.enters.fetch_add(1, Ordering::Relaxed);
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN
            && meta.target() == "imagelib_platform::connections"
        {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// sqlx enters the span current when a statement starts once for every row it yields;
/// here the statement runs outside it (each entry goes through every layer, OpenTelemetry's
/// reading the clock), and a slow statement is still logged, by `Connections` itself.
#[tokio::test(flavor = "current_thread")]
async fn rows_do_not_enter_the_callers_span_each_and_slow_statements_are_logged()
-> anyhow::Result<()> {
    let db = TestDb::new();
    let _pool = db.create().await?;
    let c = Connections::new(db.url.parse()?, 1, Duration::from_secs(5))
        .slow_after(Duration::from_millis(100));
    let counts = Counts::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(counts.clone()));
    let rows = c
        .fetch_all(sqlx::query("SELECT generate_series(1, 1000)"))
        .instrument(tracing::info_span!("caller"))
        .await?;
    assert_eq!(rows.len(), 1000);
    let enters = counts.enters.load(Ordering::Relaxed);
    assert!(
        enters < 100,
        "the caller's span entered {enters} times for 1,000 rows"
    );
    assert_eq!(counts.warnings.load(Ordering::Relaxed), 0);

    c.fetch_optional(sqlx::query("SELECT pg_sleep(0.3)"))
        .await?;
    assert_eq!(
        counts.warnings.load(Ordering::Relaxed),
        1,
        "a slow statement"
    );
    c.fetch_all(sqlx::query("SELECT pg_sleep(0.3)")).await?;
    assert_eq!(
        counts.warnings.load(Ordering::Relaxed),
        2,
        "a slow statement"
    );
    c.fetch_optional(sqlx::query("SELECT 1")).await?;
    assert_eq!(counts.warnings.load(Ordering::Relaxed), 2);
    Ok(())
}
