//! Connections for short statements, taken back without a round trip.
//!
//! sqlx's pool (0.8) tests every connection it takes back: it sends PostgreSQL a `Sync` and
//! waits for its answer, so that a connection a cancelled future left in the middle of a
//! statement is not handed out again. A page of the catalog is one short statement, and
//! that round trip wakes the backend and the service a second time for each (5 % of the
//! catalog's CPU on a list page, measured with `perf`, and PostgreSQL's wake-up beside it
//! on the same cores). Here a connection goes back to the idle ones only when its statement
//! completed; one whose statement failed, or whose future was dropped before it completed
//! (a client that went away), is closed with it and never handed out again.
//!
//! Bounded like a pool: at most `max` connections at once, a caller waits up to the
//! acquire timeout for one. Idle connections are kept until one fails: a statement on a
//! connection the server closed meanwhile (a restarted PostgreSQL) fails once, as with the
//! sqlx pool without `test_before_acquire`, and the next one connects afresh.
//!
//! A statement runs without the caller's `tracing` span ([`Untraced`]): sqlx (0.8) runs its
//! row stream in the span current when it starts (`in_current_span`), entering and leaving
//! it again for every row it yields, each time through every layer, OpenTelemetry's reading
//! the clock on each exit: 13 % of the catalog's CPU on a search page of 51 rows (measured
//! with `perf`). What sqlx would log from inside, a slow statement, is logged here instead
//! (a server notice, which the read-only statements run here do not raise, is not).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::query::Query;
use sqlx::{ConnectOptions, Execute, PgConnection, Postgres};
use tokio::sync::Semaphore;

/// A bounded set of connections for one statement at a time each.
#[derive(Debug)]
pub struct Connections {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    slots: Semaphore,
    acquire_timeout: Duration,
    slow: Duration,
}

/// A statement slower than this is logged as slow (sqlx's own default).
pub const SLOW_STATEMENT: Duration = Duration::from_secs(1);

impl Connections {
    /// At most `max` connections made with `options`, waiting at most `acquire_timeout` for
    /// one.
    pub fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        Connections {
            options,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(usize::try_from(max.max(1)).unwrap_or(1)),
            acquire_timeout,
            slow: SLOW_STATEMENT,
        }
    }

    /// Log statements slower than `slow` (rather than [`SLOW_STATEMENT`]).
    pub fn slow_after(mut self, slow: Duration) -> Self {
        self.slow = slow;
        self
    }

    /// The rows of `query`.
    pub async fn fetch_all<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let _slot = self.slot().await?;
        let mut conn = self.take().await?;
        let (sql, started) = (query.sql(), Instant::now());
        let rows = Untraced(std::pin::pin!(query.fetch_all(&mut conn))).await;
        self.finish(conn, sql, started, rows)
    }

    /// The row of `query`, if any.
    pub async fn fetch_optional<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let _slot = self.slot().await?;
        let mut conn = self.take().await?;
        let (sql, started) = (query.sql(), Instant::now());
        let row = Untraced(std::pin::pin!(query.fetch_optional(&mut conn))).await;
        self.finish(conn, sql, started, row)
    }

    /// How many connections are idle.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// After a statement completed: log it if it was slow, and give its connection back
    /// only if it succeeded (a failed one's connection is closed with it).
    fn finish<T>(
        &self,
        conn: PgConnection,
        sql: &str,
        started: Instant,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let elapsed = started.elapsed();
        if elapsed >= self.slow {
            let statement: String = sql.chars().take(160).collect();
            tracing::warn!(
                elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                %statement,
                "slow statement"
            );
        }
        let value = result?;
        self.give_back(conn);
        Ok(value)
    }

    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, sqlx::Error> {
        match tokio::time::timeout(self.acquire_timeout, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(sqlx::Error::PoolClosed),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    async fn take(&self) -> Result<PgConnection, sqlx::Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.options.connect().await,
        }
    }

    fn give_back(&self, conn: PgConnection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }
}

/// Polls a statement with no `tracing` subscriber, so that sqlx's row stream finds no span
/// to enter for each row (see the module's docs).
struct Untraced<F>(F);

impl<F: Future + Unpin> Future for Untraced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let none = tracing::Dispatch::none();
        tracing::dispatcher::with_default(&none, || Pin::new(&mut self.0).poll(cx))
    }
}
