//! Keeps the planner's picture of a filling catalog current.
//!
//! A batch's statements join its keys (`UNNEST`) to `tag_versions` and `repositories`.
//! PostgreSQL plans a prepared statement once for the connection (a generic plan) when
//! its custom plans cost no less, and keeps that plan until something invalidates it. In
//! a catalog that was empty when the writer's connections first planned them (a new
//! installation's first sync, a test) the plan takes `tag_versions` for a one-row table
//! and reads all of its current rows for every batch as the outer side of the join,
//! which no `enable_*` setting prevents; autovacuum's `ANALYZE` comes a minute or more
//! later. In the scanner bench's cold sync (4,000 tags in 1,251 batches) those two
//! lookups took 1.7 s of PostgreSQL's CPU, more than every other statement together.
//!
//! So the live writer analyzes the tables that grow with the image events itself, on a
//! connection of its own beside the batches: when the image events applied since the
//! last `ANALYZE` reach the table's size at that `ANALYZE` (at least [`FIRST`]). That is
//! a doubling, a handful of `ANALYZE`s while a catalog fills; a large catalog (whose
//! statistics already count more rows than were added) is left to autovacuum.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::PgPool;

/// Image events applied before the first `ANALYZE` of an unanalyzed catalog.
pub(crate) const FIRST: u64 = 256;

/// The tables whose size the batches' plans depend on.
const TABLES: &str = "tag_versions, repositories";

#[derive(Debug, Clone)]
pub(crate) struct Statistics {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    /// Image events applied since the last `ANALYZE` (or the start).
    applied: AtomicU64,
    /// How many to apply before the next one.
    threshold: AtomicU64,
    /// An `ANALYZE` (or the check before it) is under way.
    running: AtomicBool,
}

impl Default for Statistics {
    fn default() -> Self {
        Statistics {
            state: Arc::new(State {
                applied: AtomicU64::new(0),
                threshold: AtomicU64::new(FIRST),
                running: AtomicBool::new(false),
            }),
        }
    }
}

/// What to do once the events applied reach the threshold, from the rows the last
/// `ANALYZE` counted in `tag_versions` (`reltuples`: -1 when never analyzed).
pub(crate) fn decide(applied: u64, reltuples: f64) -> Decision {
    let known = if reltuples.is_finite() && reltuples > 0.0 {
        reltuples as u64
    } else {
        0
    };
    if known > applied.saturating_mul(2) {
        // Statistics of a table much larger than what was added since: still right.
        Decision::Skip { next: known }
    } else {
        Decision::Analyze
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Analyze,
    Skip { next: u64 },
}

impl Statistics {
    /// Counts a committed batch's image events; past the threshold, analyzes the tables
    /// in the background (one at a time; a failure is logged and tried again later).
    pub(crate) fn applied(&self, events: u64, pool: &PgPool) {
        let s = &self.state;
        if events == 0 {
            return;
        }
        let total = s.applied.fetch_add(events, Ordering::Relaxed) + events;
        if total < s.threshold.load(Ordering::Relaxed) || s.running.swap(true, Ordering::AcqRel) {
            return;
        }
        s.applied.store(0, Ordering::Relaxed);
        let (pool, state) = (pool.clone(), s.clone());
        tokio::spawn(async move {
            let next = match analyze(&pool, total).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "catalog statistics not refreshed");
                    total
                }
            };
            state.threshold.store(next.max(FIRST), Ordering::Relaxed);
            state.running.store(false, Ordering::Release);
        });
    }
}

async fn analyze(pool: &PgPool, applied: u64) -> Result<u64, sqlx::Error> {
    let reltuples: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'tag_versions'::regclass")
            .fetch_one(pool)
            .await?;
    match decide(applied, f64::from(reltuples)) {
        Decision::Skip { next } => Ok(next),
        Decision::Analyze => {
            let t = std::time::Instant::now();
            sqlx::query(&format!("ANALYZE {TABLES}"))
                .execute(pool)
                .await?;
            let rows: f32 = sqlx::query_scalar(
                "SELECT reltuples FROM pg_class WHERE oid = 'tag_versions'::regclass",
            )
            .fetch_one(pool)
            .await?;
            tracing::debug!(rows, elapsed = ?t.elapsed(), "catalog statistics refreshed");
            Ok(rows.max(0.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_never_analyzed_or_small_table_is_analyzed() {
        assert_eq!(decide(256, -1.0), Decision::Analyze);
        assert_eq!(decide(256, 0.0), Decision::Analyze);
        assert_eq!(decide(600, 512.0), Decision::Analyze);
        assert_eq!(decide(300, f64::NAN), Decision::Analyze);
    }

    #[test]
    fn statistics_of_a_much_larger_table_are_left_to_autovacuum() {
        assert_eq!(decide(256, 1_000_000.0), Decision::Skip { next: 1_000_000 });
        assert_eq!(decide(1_000, 2_001.0), Decision::Skip { next: 2_001 });
    }
}
