//! The projection: events in, catalog rows out.
//!
//! [`Projection::apply_batch`] is the consumer's (and the rebuild's) only writer. One call
//! is one PostgreSQL transaction that locks the consumer's position row, skips what the
//! position says is already applied, applies the rest and records the new position, so a
//! crash at any point leaves either the whole batch or none of it: the same catalog as a
//! clean replay.
//!
//! Image events, the bulk of the stream, are folded in memory per tag against the current
//! rows and written set-wise (`UPDATE … FROM UNNEST`, `COPY`); the other events are applied
//! one by one between those folds, in stream order.
//!
//! Curator commands apply the `catalog.*` event they appended straight away
//! ([`Projection::apply_out_of_band`]) for read-your-writes; those rows are last-writer-wins
//! by stream sequence, so applying one early, late or twice gives the same result.
//!
//! Every event of a batch is also written to the audit trail ([`audit`]) in the same
//! transaction, with one `COPY` per batch.

pub mod audit;
pub mod changes;
mod held;
pub mod images;
pub mod integrity;
mod other;
mod statistics;
mod tags;
pub mod trust;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use imagelib_events::event::RuleSet;
use imagelib_events::{Aggregate, Envelope, RegistryId};
use imagelib_rules::RuleSetIndex;
use sqlx::{PgPool, Postgres, Transaction};

/// The durable consumer's name, and the key of its position in `stream_position`.
pub const CONSUMER: &str = "catalog-projector";

/// The advisory lock that keeps a rebuild's schema swap out of write transactions: each
/// one takes it shared before touching a table, the swap takes it exclusively. A
/// transaction that spanned the rename would go on using the tables it already locked in
/// the old schema while resolving the others in the new one.
pub const SWAP_LOCK: i64 = 0x6361_7461_6c6f_6703;

/// One message of a batch. `envelope` is `None` for what is not applied (dead letters,
/// undecodable messages already dead-lettered): its sequence still moves the position.
#[derive(Debug, Clone)]
pub struct Item {
    pub sequence: u64,
    pub envelope: Option<Envelope>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Someone else moved the position (a rebuild swapped the schema, or another replica
    /// wrote): the caller must resume from the recorded position.
    #[error(
        "the recorded position is {found}, not {expected}: it was moved by a rebuild or another writer"
    )]
    Moved { expected: u64, found: u64 },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl ApplyError {
    /// The database could not be reached or asked for a retry; the event itself is fine.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ApplyError::Moved { .. } => false,
            ApplyError::Sql(e) => is_unavailable(e),
        }
    }
}

/// A failure of the connection rather than a refusal of the statement.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // connection exceptions, serialization failure / deadlock, insufficient
            // resources, operator intervention (shutdown, cancel).
            c.starts_with("08") || c.starts_with("40") || c.starts_with("53") || c.starts_with("57")
        }),
        _ => false,
    }
}

/// The catalog projection over one schema (the pool's search path).
#[derive(Debug, Clone)]
pub struct Projection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    consumer: String,
    /// Compiled rules per registry, as committed.
    rules: Mutex<HashMap<RegistryId, Arc<RuleSetIndex>>>,
    /// The current tags and known repositories, when this projection is the only writer of
    /// its schema and started it empty (a bulk replay): lookups skip the database.
    memory: Option<Mutex<Memory>>,
    /// Whether batches write the audit trail (always, but for the bench's comparison).
    audit: std::sync::atomic::AtomicBool,
    /// In a bulk replay: the audit trail's own writer ([`audit::Writer`]).
    audit_writer: Mutex<Option<audit::Writer>>,
    /// The live writer's: keeps the tables' statistics current while they fill (a bulk
    /// replay analyzes once, after its load).
    statistics: Option<statistics::Statistics>,
}

/// A tag, as a batch's changes name it.
pub(crate) type TagKey = (uuid::Uuid, Box<str>);

/// What a bulk replay keeps in memory (as committed).
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// The current version of every tag ([`tags::TagMap`]).
    pub(crate) tags: tags::TagMap,
    pub(crate) repos: HashSet<uuid::Uuid>,
    /// The repositories that any trust or integrity row may name (a superset: every
    /// repository an image event other than a tag event was about). A version opened in
    /// another repository has nothing to look up in those tables, so its batch skips the
    /// lookups.
    pub(crate) evidence_repos: HashSet<uuid::Uuid>,
    /// Hashes of the (repository, digest) pairs a tag event listed referrers for: only
    /// those (and the repositories above) may have a recorded list that an empty one
    /// replaces. A collision costs a lookup, never a list.
    pub(crate) listed: HashSet<u64>,
    /// Repository counters and details not written yet ([`Projection::flush_deferred`]).
    pub(crate) repos_updates: HashMap<uuid::Uuid, images::RepoUpdate>,
    /// The versions held back while [`Projection::start_holding`] is in effect.
    pub(crate) held: Option<held::Held>,
}

/// What a batch changed in [`Memory`] terms, merged after its commit.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The current version each changed tag has now (`None`: none), the last change of it.
    pub(crate) tags: HashMap<TagKey, Option<images::Current>>,
    pub(crate) repos: Vec<uuid::Uuid>,
    pub(crate) repos_updates: Vec<images::RepoUpdate>,
}

/// Rules as seen inside one transaction: the committed cache plus what this transaction
/// loaded or changed, merged into the cache only after commit.
pub(crate) struct RulesCtx<'p> {
    projection: &'p Projection,
    local: HashMap<RegistryId, Arc<RuleSetIndex>>,
    changed: HashSet<RegistryId>,
    /// With [`Memory`]: what this batch changed.
    pub(crate) changes: Option<Changes>,
    /// This batch holds its new versions back ([`held`]).
    pub(crate) hold: bool,
}

impl<'p> RulesCtx<'p> {
    fn new(projection: &'p Projection) -> Self {
        RulesCtx {
            projection,
            local: HashMap::new(),
            changed: HashSet::new(),
            changes: projection.inner.memory.as_ref().map(|_| Changes::default()),
            hold: false,
        }
    }

    pub(crate) fn memory(&self) -> Option<&Mutex<Memory>> {
        self.projection.inner.memory.as_ref()
    }
}

impl RulesCtx<'_> {
    pub(crate) async fn get(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        registry: RegistryId,
    ) -> Result<Arc<RuleSetIndex>, sqlx::Error> {
        if let Some(i) = self.local.get(&registry) {
            return Ok(i.clone());
        }
        if !self.changed.contains(&registry)
            && let Some(i) = self.projection.cached_rules(registry)
        {
            return Ok(i);
        }
        let bodies: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT body FROM rules WHERE registry_id = $1 ORDER BY rule_id")
                .bind(registry.0)
                .fetch_all(&mut **tx)
                .await?;
        let mut index = RuleSetIndex::new();
        for body in bodies {
            match serde_json::from_value::<RuleSet>(body) {
                Ok(rule) => {
                    if let Err(e) = index.apply_set(&rule) {
                        tracing::warn!(%registry, rule = %rule.rule_id, error = %e, "rule does not compile; ignored by the catalog");
                    }
                }
                Err(e) => tracing::warn!(%registry, error = %e, "stored rule unreadable; ignored"),
            }
        }
        let index = Arc::new(index);
        self.local.insert(registry, index.clone());
        Ok(index)
    }

    pub(crate) fn invalidate(&mut self, registry: RegistryId) {
        self.local.remove(&registry);
        self.changed.insert(registry);
    }

    fn commit(self) {
        if let Ok(mut cache) = self.projection.inner.rules.lock() {
            for r in &self.changed {
                cache.remove(r);
            }
            cache.extend(self.local);
        }
        if let (Some(memory), Some(changes)) = (self.projection.inner.memory.as_ref(), self.changes)
            && let Ok(mut m) = memory.lock()
        {
            for ((repo, tag), current) in changes.tags {
                match current {
                    Some(c) => m.tags.insert(repo, &tag, &c),
                    None => m.tags.remove(repo, &tag),
                }
            }
            m.repos.extend(changes.repos);
            for u in changes.repos_updates {
                match m.repos_updates.entry(u.id) {
                    std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(u),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(u);
                    }
                }
            }
        }
    }
}

impl Projection {
    pub fn new(pool: PgPool) -> Self {
        Self::with_consumer(pool, CONSUMER)
    }

    pub fn with_consumer(pool: PgPool, consumer: &str) -> Self {
        Projection {
            inner: Arc::new(Inner {
                pool,
                consumer: consumer.to_owned(),
                rules: Mutex::new(HashMap::new()),
                memory: None,
                audit: std::sync::atomic::AtomicBool::new(true),
                audit_writer: Mutex::new(None),
                statistics: Some(statistics::Statistics::default()),
            }),
        }
    }

    /// A projection of an empty schema nothing else writes (a rebuild): it keeps the
    /// current tags in memory instead of looking them up (about 100 bytes per tag), and
    /// defers repository counters to [`Projection::flush_deferred`], so its schema is only
    /// consistent after that.
    pub fn in_memory(pool: PgPool) -> Self {
        Projection {
            inner: Arc::new(Inner {
                pool,
                consumer: CONSUMER.to_owned(),
                rules: Mutex::new(HashMap::new()),
                memory: Some(Mutex::new(Memory::default())),
                audit: std::sync::atomic::AtomicBool::new(true),
                audit_writer: Mutex::new(None),
                statistics: None,
            }),
        }
    }

    /// Write the audit trail on a connection of its own from now on, beside the batches'
    /// transactions instead of in them (a bulk replay: see [`audit::Writer`]), until
    /// [`Projection::finish_audit_writer`].
    pub async fn start_audit_writer(&self) -> Result<(), sqlx::Error> {
        let writer = audit::Writer::start(&self.inner.pool).await?;
        let old = self
            .inner
            .audit_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(writer);
        if let Some(old) = old {
            old.finish().await?;
        }
        Ok(())
    }

    /// Wait for the audit trail's own writer to write everything sent to it, and go back to
    /// writing the trail in the batches' transactions.
    pub async fn finish_audit_writer(&self) -> Result<(), sqlx::Error> {
        let writer = self
            .inner
            .audit_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match writer {
            Some(w) => w.finish().await,
            None => Ok(()),
        }
    }

    /// Hold back the versions opened from sequence `from` on ([`held`]) until
    /// [`Projection::finish_holding`]. Only for a bulk replay ([`Projection::in_memory`]).
    pub async fn start_holding(&self, from: u64) -> Result<(), sqlx::Error> {
        let Some(memory) = &self.inner.memory else {
            return Ok(());
        };
        let held = held::Held::new(from)?;
        let old = memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .replace(held);
        if let Some(old) = old {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            old.flush_all(&self.inner.pool, cores).await?;
        }
        Ok(())
    }

    /// Write what is held into the table, each version with its end, and hold no more:
    /// with one `COPY` per core at once, each in a transaction of its own (a bulk replay's
    /// schema is not read before it ends). The versions written.
    pub async fn finish_holding(&self) -> Result<u64, sqlx::Error> {
        let held = self
            .inner
            .memory
            .as_ref()
            .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).held.take());
        match held {
            Some(held) => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                held.flush_all(&self.inner.pool, cores).await
            }
            None => Ok(0),
        }
    }

    /// While holding: whether this batch may hold its new versions (tag events alone, none
    /// of a repository a trust or integrity event named); if not, what is held is written
    /// first, within `tx`.
    async fn hold_or_flush(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        fresh: &[&Item],
        last: u64,
    ) -> Result<bool, sqlx::Error> {
        let Some(memory) = &self.inner.memory else {
            return Ok(false);
        };
        let mut held = {
            let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
            if m.held.is_none() {
                return Ok(false);
            }
            let may_hold = fresh.iter().all(|i| {
                i.envelope.as_ref().is_none_or(|e| {
                    images::tag_event_repository(&e.payload).is_some_and(|(g, r)| {
                        m.evidence_repos.is_empty()
                            || !m
                                .evidence_repos
                                .contains(&imagelib_events::ImageId::derive(g, r).0)
                    })
                })
            });
            if may_hold {
                return Ok(true);
            }
            match m.held.take() {
                Some(h) => h,
                None => return Ok(false),
            }
        };
        let flushed = held.flush(tx, last.saturating_add(1)).await;
        memory.lock().unwrap_or_else(|e| e.into_inner()).held = Some(held);
        flushed?;
        Ok(false)
    }

    fn audit_sender(&self) -> Option<tokio::sync::mpsc::Sender<Vec<Item>>> {
        self.inner
            .audit_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(audit::Writer::sender)
    }

    /// Switch the audit trail off (`catalog-bench` measures the catalog with and without
    /// it); a projection without it is not a complete catalog.
    pub fn set_audit(&self, on: bool) {
        self.inner
            .audit
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    fn cached_rules(&self, registry: RegistryId) -> Option<Arc<RuleSetIndex>> {
        self.inner
            .rules
            .lock()
            .ok()
            .and_then(|c| c.get(&registry).cloned())
    }

    /// Write what an in-memory projection deferred (repository counters and details, the
    /// listed referrers of current versions).
    pub async fn flush_deferred(&self) -> Result<(), sqlx::Error> {
        let Some(memory) = &self.inner.memory else {
            return Ok(());
        };
        let mut tx = self.inner.pool.begin().await?;
        trust::sync_all_listed(&mut tx).await?;
        let counted = changes::committing();
        tx.commit().await?;
        drop(counted);
        let updates: Vec<images::RepoUpdate> = {
            let m = memory.lock().unwrap_or_else(|e| e.into_inner());
            m.repos_updates.values().cloned().collect()
        };
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.inner.pool.begin().await?;
        for chunk in updates.chunks(10_000) {
            images::update_repositories(&mut tx, chunk).await?;
        }
        let counted = changes::committing();
        tx.commit().await?;
        drop(counted);
        if let Ok(mut m) = memory.lock() {
            m.repos_updates.clear();
        }
        Ok(())
    }

    /// Forget cached rules (a new writer takes over, or tests).
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.inner.rules.lock() {
            c.clear();
        }
    }

    /// The last stream sequence applied (0 when none).
    pub async fn position(&self) -> Result<u64, sqlx::Error> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT sequence FROM stream_position WHERE consumer = $1")
                .bind(&self.inner.consumer)
                .fetch_optional(&self.inner.pool)
                .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Apply a batch in one transaction and record its last sequence as the position.
    /// Items at or below the recorded position are skipped (a redelivery). With
    /// `expected`, the recorded position must be exactly that, or nothing is applied
    /// ([`ApplyError::Moved`]). Returns the new position.
    pub async fn apply_batch(
        &self,
        items: &[Item],
        expected: Option<u64>,
    ) -> Result<u64, ApplyError> {
        let mut conn = Guarded::acquire(&self.inner.pool).await?;
        let result = self.apply_batch_on(conn.get(), items, expected, true).await;
        conn.settled();
        result
    }

    /// [`Projection::apply_batch`] of a batch the caller is done with: while the audit
    /// trail has a writer of its own ([`Projection::start_audit_writer`]), the batch goes
    /// to it once applied instead of being audited in the transaction.
    pub async fn apply_owned_batch(
        &self,
        items: Vec<Item>,
        expected: Option<u64>,
    ) -> Result<u64, ApplyError> {
        // Without an expected position the events skipped as already applied are not
        // known here: those batches are audited in their transaction.
        let (Some(sender), Some(_)) = (self.audit_sender(), expected) else {
            return self.apply_batch(&items, expected).await;
        };
        let mut conn = Guarded::acquire(&self.inner.pool).await?;
        let result = self
            .apply_batch_on(conn.get(), &items, expected, false)
            .await;
        conn.settled();
        let position = result?;
        // The recorded position was the one expected, so every item after it was applied
        // (and the writer leaves alone any sequence already in the trail).
        if sender.send(items).await.is_err() {
            // The writer failed: its error says why.
            self.finish_audit_writer().await?;
            return Err(ApplyError::Sql(sqlx::Error::WorkerCrashed));
        }
        Ok(position)
    }

    async fn apply_batch_on(
        &self,
        conn: &mut sqlx::PgConnection,
        items: &[Item],
        expected: Option<u64>,
        audited_here: bool,
    ) -> Result<u64, ApplyError> {
        use sqlx::Connection;
        let t = std::time::Instant::now();
        let mut tx = conn.begin().await?;
        // The batch statements join a few thousand keys (UNNEST) to large tables: index
        // lookups are right whatever the statistics say (a schema filled since its last
        // ANALYZE looks tiny to the planner and would get hash joins over full scans; the
        // join order is what [`statistics`] keeps right).
        // The swap lock first, before any table: see [`SWAP_LOCK`]. The commit need not
        // wait for the WAL flush: rows and position are one transaction, so a database
        // crash loses both together and the consumer resumes from the older position (it
        // always restarts from the recorded one), re-applying from the stream.
        sqlx::query(
            "SELECT pg_advisory_xact_lock_shared($1), \
                    set_config('synchronous_commit', 'off', true), \
                    set_config('enable_hashjoin', 'off', true), \
                    set_config('enable_mergejoin', 'off', true), \
                    set_config('enable_seqscan', 'off', true), \
                    pg_notify($2, '')",
        )
        .bind(SWAP_LOCK)
        .bind(changes::CHANNEL)
        .execute(&mut *tx)
        .await?;
        // The position, locked for this transaction (one round trip).
        let found: i64 = sqlx::query_scalar(
            "INSERT INTO stream_position (consumer, sequence) VALUES ($1, 0)
             ON CONFLICT (consumer) DO UPDATE SET sequence = stream_position.sequence
             RETURNING sequence",
        )
        .bind(&self.inner.consumer)
        .fetch_one(&mut *tx)
        .await?;
        let found = found as u64;
        if let Some(expected) = expected
            && expected != found
        {
            return Err(ApplyError::Moved { expected, found });
        }
        let fresh: Vec<&Item> = items.iter().filter(|i| i.sequence > found).collect();
        let Some(last) = fresh.iter().map(|i| i.sequence).max() else {
            return Ok(found);
        };
        images::prof(7, t);
        let mut rules = RulesCtx::new(self);
        rules.hold = self.hold_or_flush(&mut tx, &fresh, last).await?;
        let mut trail = (audited_here
            && self.inner.audit.load(std::sync::atomic::Ordering::Relaxed))
        .then(audit::Trail::new);
        let mut segment: Vec<(u64, &Envelope)> = Vec::new();
        let mut image_events = 0u64;
        for item in fresh {
            let Some(env) = &item.envelope else { continue };
            if let Some(trail) = trail.as_mut() {
                trail.push(item.sequence, env);
            }
            if env.payload.aggregate() == Aggregate::Image {
                image_events += 1;
                segment.push((item.sequence, env));
                continue;
            }
            if !segment.is_empty() {
                images::flush(&mut tx, &segment, &mut rules).await?;
                segment.clear();
            }
            other::apply(&mut tx, item.sequence, env, &mut rules).await?;
        }
        if !segment.is_empty() {
            images::flush(&mut tx, &segment, &mut rules).await?;
        }
        if let Some(trail) = trail {
            trail.write(&mut tx).await?;
        }
        let t = std::time::Instant::now();
        sqlx::query(
            "UPDATE stream_position SET sequence = $2, updated_at = now() WHERE consumer = $1",
        )
        .bind(&self.inner.consumer)
        .bind(last as i64)
        .execute(&mut *tx)
        .await?;
        let counted = changes::committing();
        tx.commit().await?;
        drop(counted);
        images::prof(7, t);
        rules.commit();
        if let Some(statistics) = &self.inner.statistics {
            statistics.applied(image_events, &self.inner.pool);
        }
        Ok(last)
    }

    /// Apply a `catalog.*` event a curator command just appended (read-your-writes). The
    /// position is left alone; the consumer applies the event again later, to no effect.
    pub async fn apply_out_of_band(
        &self,
        sequence: u64,
        env: &Envelope,
    ) -> Result<(), sqlx::Error> {
        debug_assert_eq!(env.payload.aggregate(), Aggregate::Catalog);
        if env.payload.aggregate() != Aggregate::Catalog {
            return Ok(());
        }
        let mut conn = Guarded::acquire(&self.inner.pool).await?;
        let result = async {
            use sqlx::Connection;
            let mut tx = conn.get().begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1), pg_notify($2, '')")
                .bind(SWAP_LOCK)
                .bind(changes::CHANNEL)
                .execute(&mut *tx)
                .await?;
            let mut rules = RulesCtx::new(self);
            other::apply(&mut tx, sequence, env, &mut rules).await?;
            let _counted = changes::committing();
            tx.commit().await
        }
        .await;
        conn.settled();
        result
    }
}

/// A pooled connection that is closed, not returned to the pool, when the work on it is
/// dropped half-way (an aborted task): a `COPY` cut off mid-protocol would leave it out of
/// step with the server.
struct Guarded {
    conn: sqlx::pool::PoolConnection<Postgres>,
    settled: bool,
}

impl Guarded {
    async fn acquire(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Guarded {
            conn: pool.acquire().await?,
            settled: false,
        })
    }

    fn get(&mut self) -> &mut sqlx::PgConnection {
        &mut self.conn
    }

    /// The work finished (successfully or not) at a protocol boundary.
    fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.close_on_drop();
        }
    }
}

/// Event times as PostgreSQL keeps them (microseconds), so comparisons made here and in
/// SQL agree.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos % 1000))
}

/// The string form of a serde enum value (`ImageKind::Model` → `model`).
pub(crate) fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
