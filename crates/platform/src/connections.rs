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

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::query::Query;
use sqlx::{ConnectOptions, PgConnection, Postgres};
use tokio::sync::Semaphore;

/// A bounded set of connections for one statement at a time each.
#[derive(Debug)]
pub struct Connections {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    slots: Semaphore,
    acquire_timeout: Duration,
}

impl Connections {
    /// At most `max` connections made with `options`, waiting at most `acquire_timeout` for
    /// one.
    pub fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        Connections {
            options,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(usize::try_from(max.max(1)).unwrap_or(1)),
            acquire_timeout,
        }
    }

    /// The rows of `query`.
    pub async fn fetch_all<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let _slot = self.slot().await?;
        let mut conn = self.take().await?;
        let rows = query.fetch_all(&mut conn).await?;
        self.give_back(conn);
        Ok(rows)
    }

    /// The row of `query`, if any.
    pub async fn fetch_optional<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let _slot = self.slot().await?;
        let mut conn = self.take().await?;
        let row = query.fetch_optional(&mut conn).await?;
        self.give_back(conn);
        Ok(row)
    }

    /// How many connections are idle.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
