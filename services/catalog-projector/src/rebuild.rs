//! Rebuild: replay the whole stream into a fresh schema, then swap it in.
//!
//! 1. `catalog_next` is dropped if a failed rebuild left it, created and migrated.
//! 2. The stream is replayed from sequence 1 ([`EventBus::replay`]) into it, in batches
//!    (the same [`Projection::apply_batch`] as the live consumer), then again from where it
//!    ended until little is left.
//! 3. One transaction renames `catalog` to `catalog_old_<timestamp>` and `catalog_next` to
//!    `catalog`. Until then the live service reads (and writes) the old schema; from then on
//!    its connections, whose search path names `catalog`, read the new one. It never sees
//!    empty tables.
//! 4. The new schema carries the position the replay reached, so the live consumer notices
//!    its position moved and resumes right after it, applying what came since.
//! 5. The old schema is dropped (unless `keep_old_schema`).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use imagelib_events::bus::{EventBus, ReplayMessage};
use imagelib_platform::db::quote_ident;
use sqlx::{Connection, PgPool};
use tokio::sync::mpsc;

use crate::config::CatalogSettings;
use crate::projection::{ApplyError, Item, Projection};

/// The advisory lock held while a rebuild runs (one at a time).
const REBUILD_LOCK: i64 = 0x6361_7461_6c6f_6702;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("event stream: {0}")]
    Bus(#[from] imagelib_events::bus::BusError),
    #[error("database: {0}")]
    Db(#[from] imagelib_platform::db::DbError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("applying the replay: {0}")]
    Apply(#[from] ApplyError),
    #[error("another rebuild is running")]
    Busy,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The stream sequence the new schema is at.
    pub position: u64,
    /// Events applied (dead letters and undecodable messages not counted).
    pub events: u64,
    /// Messages skipped because they are not events of the contract.
    pub skipped: u64,
    /// The replaced schema, when kept.
    pub old_schema: Option<String>,
    pub elapsed: Duration,
    /// The indexes a bulk replay dropped before its load and built after it, by name
    /// ([`DeferIndexes`]).
    pub indexes_built_after: Vec<String>,
}

/// This process's peak resident memory so far, in KiB (`VmHWM`; `None` off Linux): what a
/// rebuild reports, since the replay's memory grows with the number of tags.
pub fn peak_rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Rebuild `schema` (normally [`crate::SCHEMA`]) of the database at `database_url` from the
/// stream of `bus`, and swap it in.
pub async fn rebuild(
    bus: &EventBus,
    database_url: &str,
    schema: &str,
    settings: &CatalogSettings,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let next = format!("{schema}_next");
    let admin = imagelib_platform::db::connect(database_url, "public", 2).await?;
    let mut lock = sqlx::PgConnection::connect_with(&admin.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(REBUILD_LOCK)
        .fetch_one(&mut lock)
        .await?;
    if !locked {
        return Err(RebuildError::Busy);
    }
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(&next)
    ))
    .execute(&admin)
    .await?;
    let pool = imagelib_platform::db::connect(database_url, &next, 4).await?;
    crate::startup::MIGRATOR
        .run(&pool)
        .await
        .map_err(imagelib_platform::db::DbError::from)?;
    // The only writer of the new schema: it may keep the current tags in memory.
    let projection = Projection::in_memory(pool.clone());
    tracing::info!(schema = %next, "rebuilding the catalog from the stream");

    let mut report = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    // Replay until what is left is at most a batch (appends keep coming meanwhile); the
    // first round into the empty schema with its secondary indexes built afterwards.
    for round in 0..5 {
        let last = bus.last_sequence().await?;
        if last <= report.position {
            break;
        }
        if round == 0 {
            bulk_replay(
                bus,
                &projection,
                settings,
                last,
                DeferIndexes::default(),
                &mut report,
            )
            .await?;
        } else {
            replay_into(bus, &projection, settings, last, &mut report).await?;
            projection.flush_deferred().await?;
        }
        tracing::info!(round, position = report.position, "replayed");
        if bus.last_sequence().await?.saturating_sub(report.position) <= settings.batch_size as u64
        {
            let last = bus.last_sequence().await?;
            if last > report.position {
                replay_into(bus, &projection, settings, last, &mut report).await?;
                projection.flush_deferred().await?;
            }
            break;
        }
    }
    pool.close().await;

    let old = format!(
        "{schema}_old_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S%6f")
    );
    let mut tx = admin.begin().await?;
    // No write transaction of the live service spans the rename (see `SWAP_LOCK`).
    // Readers in every process drop the pages they kept from the old schema.
    sqlx::query("SELECT pg_advisory_xact_lock($1), pg_notify($2, '')")
        .bind(crate::projection::SWAP_LOCK)
        .bind(crate::projection::changes::CHANNEL)
        .execute(&mut *tx)
        .await?;
    let live_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *tx)
            .await?;
    if live_exists {
        sqlx::query(&format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote_ident(schema),
            quote_ident(&old)
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!(
        "ALTER SCHEMA {} RENAME TO {}",
        quote_ident(&next),
        quote_ident(schema)
    ))
    .execute(&mut *tx)
    .await?;
    let counted = crate::projection::changes::committing();
    tx.commit().await?;
    drop(counted);
    tracing::info!(position = report.position, replaced = %old, "rebuilt catalog swapped in");
    if live_exists {
        if settings.keep_old_schema {
            report.old_schema = Some(old);
        } else {
            sqlx::query(&format!("DROP SCHEMA {} CASCADE", quote_ident(&old)))
                .execute(&admin)
                .await?;
        }
    }
    let _ = lock.close().await;
    admin.close().await;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Which secondary indexes a bulk replay drops before the load and builds after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeferIndexes {
    /// The large indexes of `tag_versions` (of every current version, or every version)
    /// and of the audit trail (its B-trees on almost every row: by registry, by
    /// repository). The partial ones on a trust or integrity flag (signed, SBOM, policy,
    /// severity, mutated) hold the few current versions with the flag, and the trail's by
    /// actor and by type leave out the scanner's events: they cost next to nothing to keep
    /// during the load and would each cost a scan of the whole table to build after it.
    /// The trail's own writer ([`crate::projection::audit::Writer`]) needs only its
    /// primary key.
    #[default]
    Large,
    /// Every non-unique index.
    All,
    /// None: every index is kept up row by row, as the live consumer does.
    None,
}

/// Replay into an empty schema: its large secondary indexes are dropped first and built
/// again at the end (one sort each instead of a row-by-row maintenance; see
/// [`DeferIndexes`]), and the tag versions are held back and written once, each with its
/// end, after the replay ([`Projection::start_holding`]), which is how a rebuild loads a
/// large stream fast. Nothing reads the schema meanwhile.
pub async fn bulk_replay(
    bus: &EventBus,
    projection: &Projection,
    settings: &CatalogSettings,
    until: u64,
    defer: DeferIndexes,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let pool = projection.pool();
    let deferred: Vec<Index> = match defer {
        DeferIndexes::None => Vec::new(),
        DeferIndexes::All => indexes(pool, IndexSet::NonUnique).await?,
        DeferIndexes::Large => indexes(pool, IndexSet::Large).await?,
    };
    for index in &deferred {
        sqlx::query(&format!("DROP INDEX {}", quote_ident(&index.name)))
            .execute(pool)
            .await?;
        report.indexes_built_after.push(index.name.clone());
    }
    projection.start_audit_writer().await?;
    projection.start_holding(report.position + 1).await?;
    let replayed = replay_into(bus, projection, settings, until, report).await;
    // The held versions and the trail's last batches go in at once, on two connections;
    // the unique current-version indexes, which the replay's own statements used, are
    // built after the held versions rather than kept up row by row.
    let unique = if defer == DeferIndexes::None || replayed.is_err() {
        Vec::new()
    } else {
        indexes(pool, IndexSet::UniqueOfVersions).await?
    };
    report
        .indexes_built_after
        .extend(unique.iter().map(|index| index.name.clone()));
    let (held, written) = tokio::join!(
        async {
            let t = std::time::Instant::now();
            for index in &unique {
                sqlx::query(&format!("DROP INDEX {}", quote_ident(&index.name)))
                    .execute(pool)
                    .await?;
            }
            let held = projection.finish_holding().await?;
            build_indexes(pool, unique).await?;
            crate::projection::images::prof(3, t);
            Ok::<_, sqlx::Error>(held)
        },
        projection.finish_audit_writer()
    );
    replayed?;
    held?;
    written?;
    let t = std::time::Instant::now();
    // What was deferred is written to the versions and the repositories while the audit
    // trail's indexes, on a table it does not touch, are built beside it.
    let (beside, after): (Vec<Index>, Vec<Index>) = deferred
        .into_iter()
        .partition(|index| index.table == "audit");
    let (flushed, built) = tokio::join!(projection.flush_deferred(), build_indexes(pool, beside));
    flushed?;
    built?;
    build_indexes(pool, after).await?;
    analyze_schema(pool).await?;
    // Its visibility map, so that a search reads a word's names by an index-only scan in
    // name order from the start (migration `0012`).
    sqlx::query("VACUUM search_words").execute(pool).await?;
    crate::projection::images::prof(5, t);
    Ok(())
}

/// Which indexes of the schema [`indexes`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexSet {
    /// Every non-unique index.
    NonUnique,
    /// The large non-unique indexes of `tag_versions` and of the audit trail
    /// ([`DeferIndexes::Large`]).
    Large,
    /// The unique indexes of `tag_versions` (its current version per tag, per digest).
    UniqueOfVersions,
}

/// One of the schema's indexes.
#[derive(Debug, sqlx::FromRow)]
struct Index {
    name: String,
    definition: String,
    table: String,
}

/// The names, definitions and tables of a set of the schema's indexes.
async fn indexes(pool: &PgPool, set: IndexSet) -> Result<Vec<Index>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.relname::text AS name, pg_get_indexdef(i.indexrelid) AS definition,
                t.relname::text AS \"table\"
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_class t ON t.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_am m ON m.oid = c.relam
         WHERE n.nspname = current_schema()
           AND CASE $1
               WHEN 'non-unique' THEN NOT i.indisunique
               WHEN 'large' THEN NOT i.indisunique AND (
                   (t.relname = 'tag_versions'
                    AND (i.indpred IS NULL
                         OR pg_get_expr(i.indpred, i.indrelid) = '(valid_to IS NULL)'))
                   OR (t.relname = 'audit' AND m.amname = 'btree'
                       AND (i.indpred IS NULL
                            OR pg_get_expr(i.indpred, i.indrelid) LIKE '(% IS NOT NULL)')))
               ELSE i.indisunique AND t.relname = 'tag_versions'
           END
         ORDER BY 1",
    )
    .bind(match set {
        IndexSet::NonUnique => "non-unique",
        IndexSet::Large => "large",
        IndexSet::UniqueOfVersions => "unique",
    })
    .fetch_all(pool)
    .await
}

/// `ANALYZE` the schema's own tables, the largest first, two at a time: not the whole
/// database, whose other schemas (the live catalog this one replaces, other services',
/// the bench's anchors) are not this replay's to analyze, and each of which costs a sample
/// of its table (about a second for a million tag versions).
async fn analyze_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
         ORDER BY c.relpages DESC, c.relname",
    )
    .fetch_all(pool)
    .await?;
    futures::stream::iter(tables)
        .map(|table| async move {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(pool)
                .await
                .map(drop)
        })
        .buffer_unordered(2)
        .try_collect::<()>()
        .await
}

/// Build indexes from their definitions, two at a time (the large ones are on one table),
/// each as soon as a build is done.
async fn build_indexes(pool: &PgPool, pending: Vec<Index>) -> Result<(), sqlx::Error> {
    futures::stream::iter(pending)
        .map(|index| async move {
            let mut conn = pool.acquire().await?;
            sqlx::query("SET maintenance_work_mem = '256MB'")
                .execute(&mut *conn)
                .await?;
            sqlx::query(&index.definition).execute(&mut *conn).await?;
            sqlx::query("RESET maintenance_work_mem")
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        })
        .buffer_unordered(2)
        .try_collect::<()>()
        .await
}

/// Replay `(report.position, until]` into `projection`, in batches, decoding ahead of the
/// writes: each batch's messages are decoded on every core at once (decoding costs more
/// than anything else the loop does per event) while the previous batch is applied.
pub async fn replay_into(
    bus: &EventBus,
    projection: &Projection,
    settings: &CatalogSettings,
    until: u64,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let mut replay = bus.replay(report.position + 1, Some(until), None).await?;
    let batch_size = settings.batch_size;
    let (raw_tx, mut raw_rx) = mpsc::channel::<Result<Vec<ReplayMessage>, RebuildError>>(1);
    let reader = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(batch_size);
        while let Some(message) = replay.next_undecoded().await {
            match message {
                Ok(m) => batch.push(m),
                Err(e) => {
                    let _ = raw_tx.send(Err(e.into())).await;
                    return;
                }
            }
            if batch.len() >= batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                if raw_tx.send(Ok(full)).await.is_err() {
                    return;
                }
            }
        }
        let _ = raw_tx.send(Ok(batch)).await;
    });
    let (tx, mut rx) = mpsc::channel::<Result<(Vec<Item>, u64), RebuildError>>(1);
    let decoder = tokio::spawn(async move {
        while let Some(raw) = raw_rx.recv().await {
            let decoded = match raw {
                Ok(raw) => decode_batch(raw).await,
                Err(e) => Err(e),
            };
            let failed = decoded.is_err();
            if tx.send(decoded).await.is_err() || failed {
                return;
            }
        }
    });
    loop {
        let t = std::time::Instant::now();
        let Some(msg) = rx.recv().await else { break };
        crate::projection::images::prof(4, t);
        let (items, skipped) = msg?;
        report.skipped += skipped;
        if items.is_empty() {
            continue;
        }
        report.events += items.iter().filter(|i| i.envelope.is_some()).count() as u64;
        report.position = projection
            .apply_owned_batch(items, Some(report.position))
            .await?;
    }
    let _ = reader.await;
    let _ = decoder.await;
    // Dead letters at the end (which a replay skips) still move the position.
    if report.position < until {
        report.position = projection
            .apply_batch(
                &[Item {
                    sequence: until,
                    envelope: None,
                }],
                Some(report.position),
            )
            .await?;
    }
    Ok(())
}

/// Decode a batch's messages, split across the machine's cores (this task's thread takes
/// the first part, blocking threads the others: each thread that allocates keeps an
/// allocator arena of its own, so as few as the cores): the items in stream order, and how
/// many messages were skipped as not events of the contract.
async fn decode_batch(raw: Vec<ReplayMessage>) -> Result<(Vec<Item>, u64), RebuildError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = raw.len().div_ceil(cores).max(1);
    let mut messages = raw.into_iter();
    let first: Vec<ReplayMessage> = messages.by_ref().take(chunk).collect();
    let mut others = Vec::with_capacity(cores);
    loop {
        let part: Vec<ReplayMessage> = messages.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        others.push(tokio::task::spawn_blocking(move || decode_items(part)));
    }
    let mut items = decode_items(first);
    for part in others {
        let part = part.await.map_err(|e| {
            RebuildError::Sql(sqlx::Error::Io(std::io::Error::other(format!(
                "a decoding thread stopped: {e}"
            ))))
        })?;
        items.extend(part);
    }
    let skipped = items.iter().filter(|i| i.envelope.is_none()).count() as u64;
    Ok((items, skipped))
}

fn decode_items(messages: Vec<ReplayMessage>) -> Vec<Item> {
    messages
        .into_iter()
        .map(|m| {
            let item = m.decode();
            let envelope = match item.event {
                Ok(env) => Some(env),
                Err(e) => {
                    tracing::warn!(sequence = item.sequence, error = %e, "not an event of the contract; skipped");
                    None
                }
            };
            Item {
                sequence: item.sequence,
                envelope,
            }
        })
        .collect()
}

/// The schemas a rebuild left behind (`<schema>_old_*`), newest first.
pub async fn old_schemas(pool: &PgPool, schema: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 ORDER BY nspname DESC",
    )
    .bind(format!("{schema}\\_old\\_%"))
    .fetch_all(pool)
    .await
}
