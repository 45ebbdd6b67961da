//! The scanner's state in its PostgreSQL schema: a projection of the stream.
//!
//! - registries and their rules (registry-registry's events),
//! - the tags it knows ([`KnownTag`]), from its own `image.*` events: what it last said
//!   is what it compares the registry with, so a restart re-emits nothing unchanged and a
//!   crash between publishing and recording is repaired by the projector,
//! - its scans (its own `sync.*` events), for scheduling and `GET /v1/scanner/status`,
//! - and a content-addressed cache of manifests and config blobs (not a projection: what
//!   a digest names never changes).
//!
//! [`Store::apply`] is the only writer of the projections. It is idempotent and
//! order-independent where it must be: a registry or rule event at or below the
//! aggregate's recorded sequence is skipped, and each tag row keeps the sequence of the
//! last event about it (removed tags stay as tombstones), so the scanner (which applies
//! what it just published) and the durable consumers (which apply everything) can apply
//! the same events in any order.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use imagelib_events::event::RuleSet;
use imagelib_events::model::{Platform, SealedCredential};
use imagelib_events::{Digest, Envelope, EventPayload, RegistryId, RepositoryName, SyncId, Tag};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::trust::state::{Pushed, TrustRows};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// A registry as the scanner needs it.
#[derive(Debug, Clone)]
pub struct Registry {
    pub id: RegistryId,
    pub url: String,
    pub insecure: bool,
    pub ca_pem: Option<String>,
    pub auth_kind: String,
    pub credential: Option<SealedCredential>,
    pub visibility: Vec<String>,
    pub scan_interval_secs: Option<u64>,
    /// Repositories to scan where `_catalog` is unusable.
    pub repositories: Vec<RepositoryName>,
    pub rules_changed_at: Option<DateTime<Utc>>,
    /// Hosts besides the registry's whose token realm may receive its credentials.
    pub auth_hosts: Vec<String>,
    /// `generic`, `dockerhub`, `harbor`, … (the contract's `registry_type`).
    pub registry_type: String,
    /// The registry's own forward proxy, and the hosts reached directly despite it.
    pub proxy_url: Option<String>,
    pub no_proxy: Vec<String>,
    /// `gcr` only: the Artifact Registry repository (its resource name) listed through
    /// the Artifact Registry API when `_catalog` is refused, instead of the URL's.
    pub artifact_registry: Option<String>,
}

/// What the scanner last said about a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownTag {
    pub digest: Digest,
    /// False for a tombstone: the tag was removed.
    pub present: bool,
    /// The stream sequence of the last event about the tag.
    pub last_sequence: u64,
    /// The platform manifests of an index (their referrers count for it).
    pub platforms: Vec<Digest>,
}

/// One registry's scans, from the sync events.
#[derive(Debug, Clone, Default)]
pub struct ScanRecord {
    pub running_sync_id: Option<SyncId>,
    pub running_since: Option<DateTime<Utc>>,
    pub running_repository: Option<String>,
    pub running_actor: Option<String>,
    pub last_sync_id: Option<SyncId>,
    pub last_started_at: Option<DateTime<Utc>>,
    /// When the last complete whole-registry scan started: requests older than it are
    /// already served.
    pub last_full_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_state: Option<String>,
    pub last_summary: Option<serde_json::Value>,
    /// The pull budget the registry announced last ([`crate::api::RateLimitStatus`]).
    pub rate_limit: Option<serde_json::Value>,
    /// GitHub's API budget the last packages listing saw ([`crate::api::ApiRateLimitStatus`]).
    pub api_rate_limit: Option<serde_json::Value>,
    /// The visibility of the last packages listing ([`crate::api::PackageVisibility`]).
    pub package_visibility: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| corrupt(format!("`{s}`: {e}")))
}

impl Registry {
    fn from_row(r: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        let repositories: Vec<String> = r.try_get("repositories")?;
        Ok(Registry {
            id: RegistryId(r.try_get("id")?),
            url: r.try_get("url")?,
            insecure: r.try_get("insecure")?,
            ca_pem: r.try_get("ca_pem")?,
            auth_kind: r.try_get("auth_kind")?,
            credential: r
                .try_get::<Option<serde_json::Value>, _>("credential")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(corrupt)?,
            visibility: r.try_get("visibility")?,
            scan_interval_secs: r
                .try_get::<Option<i64>, _>("scan_interval_secs")?
                .map(|v| v.max(0) as u64),
            repositories: repositories
                .iter()
                .map(|s| parse(s))
                .collect::<Result<_, _>>()?,
            rules_changed_at: r.try_get("rules_changed_at")?,
            auth_hosts: r.try_get("auth_hosts")?,
            registry_type: r.try_get("registry_type")?,
            proxy_url: r.try_get("proxy_url")?,
            no_proxy: r.try_get("no_proxy")?,
            artifact_registry: r.try_get("artifact_registry")?,
        })
    }
}

impl ScanRecord {
    fn from_row(r: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        Ok(ScanRecord {
            running_sync_id: r
                .try_get::<Option<uuid::Uuid>, _>("running_sync_id")?
                .map(SyncId),
            running_since: r.try_get("running_since")?,
            running_repository: r.try_get("running_repository")?,
            running_actor: r.try_get("running_actor")?,
            last_sync_id: r
                .try_get::<Option<uuid::Uuid>, _>("last_sync_id")?
                .map(SyncId),
            last_started_at: r.try_get("last_started_at")?,
            last_full_started_at: r.try_get("last_full_started_at")?,
            last_finished_at: r.try_get("last_finished_at")?,
            last_state: r.try_get("last_state")?,
            last_summary: r.try_get("last_summary")?,
            rate_limit: r.try_get("rate_limit")?,
            api_rate_limit: r.try_get("api_rate_limit")?,
            package_visibility: r.try_get("package_visibility")?,
        })
    }
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    // ------------------------------------------------------------ registries and rules

    pub async fn registry(&self, id: RegistryId) -> Result<Option<Registry>, StoreError> {
        let row = sqlx::query("SELECT * FROM registries WHERE id = $1 AND NOT removed")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Registry::from_row).transpose()
    }

    /// Whether the registry was registered and then removed.
    pub async fn is_removed(&self, id: RegistryId) -> Result<bool, StoreError> {
        let v: Option<bool> = sqlx::query_scalar("SELECT removed FROM registries WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.unwrap_or(false))
    }

    /// Registries with at least one enabled rule from the stream.
    pub async fn registries_with_enabled_rules(
        &self,
    ) -> Result<std::collections::HashSet<RegistryId>, StoreError> {
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT registry_id FROM rules WHERE (body->>'enabled')::boolean",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(RegistryId).collect())
    }

    /// Registries not removed.
    pub async fn registries(&self) -> Result<Vec<Registry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM registries WHERE NOT removed ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Registry::from_row).collect()
    }

    /// The rules of a registry, from `rule.set` events, in rule-id order.
    pub async fn rules(&self, id: RegistryId) -> Result<Vec<RuleSet>, StoreError> {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT body FROM rules WHERE registry_id = $1 ORDER BY rule_id")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|v| serde_json::from_value(v).map_err(corrupt))
            .collect()
    }

    // ------------------------------------------------------------ known tags

    /// Every tag row of a repository, tombstones included.
    pub async fn known_tags(
        &self,
        registry: RegistryId,
        repository: &RepositoryName,
    ) -> Result<HashMap<Tag, KnownTag>, StoreError> {
        let rows = sqlx::query(
            "SELECT tag, digest, present, last_sequence, platforms FROM known_tags
             WHERE registry_id = $1 AND repository = $2",
        )
        .bind(registry.0)
        .bind(repository.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let tag: String = r.try_get("tag")?;
            let digest: String = r.try_get("digest")?;
            let platforms: Vec<Platform> =
                serde_json::from_value(r.try_get("platforms")?).unwrap_or_default();
            out.insert(
                parse(&tag)?,
                KnownTag {
                    digest: parse(&digest)?,
                    present: r.try_get("present")?,
                    last_sequence: r.try_get::<i64, _>("last_sequence")?.max(0) as u64,
                    platforms: platforms
                        .into_iter()
                        .filter_map(|p| p.digest)
                        .filter(|d| d.as_str() != digest)
                        .collect(),
                },
            );
        }
        Ok(out)
    }

    /// Repositories of a registry with at least one present tag.
    pub async fn known_repositories(
        &self,
        registry: RegistryId,
    ) -> Result<Vec<RepositoryName>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT repository FROM known_tags WHERE registry_id = $1 AND present ORDER BY 1",
        )
        .bind(registry.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|s| parse(s)).collect()
    }

    /// Present tags per registry (for the status API).
    pub async fn known_tag_counts(&self) -> Result<HashMap<RegistryId, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT registry_id, count(*) AS n FROM known_tags WHERE present GROUP BY registry_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    RegistryId(r.try_get("registry_id")?),
                    r.try_get::<i64, _>("n")?.max(0) as u64,
                ))
            })
            .collect()
    }

    // ------------------------------------------------------------ content cache

    /// Cached content of these digests: (digest, media type, bytes).
    pub async fn blobs(
        &self,
        digests: &[String],
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT digest, media_type, body FROM blobs WHERE digest = ANY($1)")
            .bind(digests)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("digest")?,
                    r.try_get("media_type")?,
                    r.try_get("body")?,
                ))
            })
            .collect()
    }

    /// Keeps fetched content. It commits without waiting for the WAL flush: what a
    /// digest names never changes, and a row lost in a crash is fetched again (a flush
    /// per repository was most of a cold scan's database wait).
    pub async fn put_blobs(&self, items: &[(String, String, Vec<u8>)]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let digests: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
        let types: Vec<&str> = items.iter().map(|i| i.1.as_str()).collect();
        let bodies: Vec<&[u8]> = items.iter().map(|i| i.2.as_slice()).collect();
        sqlx::query(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
             INSERT INTO blobs (digest, media_type, body)
             SELECT u.* FROM relaxed, UNNEST($1::text[], $2::text[], $3::bytea[]) AS u
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&digests)
        .bind(&types)
        .bind(&bodies)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------ scans

    pub async fn scans(&self) -> Result<HashMap<RegistryId, ScanRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM scans")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    RegistryId(r.try_get("registry_id")?),
                    ScanRecord::from_row(r)?,
                ))
            })
            .collect()
    }

    /// Keeps the pull budget a scan of `id` saw last (its scan row exists from
    /// `sync.started` on).
    pub async fn record_rate_limit(
        &self,
        id: RegistryId,
        rate_limit: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE scans SET rate_limit = $2 WHERE registry_id = $1")
            .bind(id.0)
            .bind(rate_limit)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps what a scan of `id`'s GitHub packages listing saw: the API budget (kept from
    /// before when this listing was told none) and the packages' visibility.
    pub async fn record_api_listing(
        &self,
        id: RegistryId,
        api_rate_limit: Option<serde_json::Value>,
        package_visibility: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE scans SET api_rate_limit = COALESCE($2, api_rate_limit), \
             package_visibility = $3 WHERE registry_id = $1",
        )
        .bind(id.0)
        .bind(api_rate_limit)
        .bind(package_visibility)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn scan(&self, id: RegistryId) -> Result<Option<ScanRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM scans WHERE registry_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ScanRecord::from_row).transpose()
    }

    // ------------------------------------------------------------ applying events

    /// A transaction for projection writes. They commit without waiting for the WAL
    /// flush (`synchronous_commit = off`): a crash can lose only the last few
    /// milliseconds of commits, never consistency (rows and consumer positions commit
    /// together), and the stream, the source of truth, replays what was lost. That
    /// keeps a scan of thousands of tags from waiting on thousands of fsyncs.
    /// `BEGIN` and the setting go in one round trip.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?)
    }

    /// The last stream sequence `consumer` applied (0 when none).
    pub async fn position(&self, consumer: &str) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT sequence FROM stream_position WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// How far the schema's image projection is: the furthest position any replica's image
    /// consumer recorded in it (0 when none). Each consumer applies in stream order and
    /// records its position with the rows, and the rows are last-writer-wins by sequence,
    /// so every image event at or below this is in the schema, whichever replica wrote it
    /// ([`crate::bus::projector`] runs one image projector per schema).
    pub async fn image_position(&self) -> Result<u64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM stream_position WHERE consumer LIKE $1 OR consumer = $2",
        )
        .bind(format!("{}-%-image", crate::NAME))
        .bind(format!("{}-image", crate::NAME))
        .fetch_one(&self.pool)
        .await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Apply an event the scanner just published (read-your-writes). Consumer positions
    /// are left alone: events before it may not be applied yet.
    pub async fn apply(&self, seq: u64, env: &Envelope) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        apply_in(&mut tx, seq, env).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Apply an event delivered to `consumer`, recording its position in the same
    /// transaction (a tag or trust event and the position in one statement).
    pub async fn apply_consumed(
        &self,
        consumer: &str,
        seq: u64,
        env: &Envelope,
    ) -> Result<(), StoreError> {
        self.apply_consumed_batch(consumer, &[(seq, env)]).await
    }

    /// Apply events delivered together to `consumer`, in one transaction with the last
    /// position: what [`Self::apply_consumed`] does for each, the rows of consecutive tag
    /// and trust events written with one statement per table (a key seen twice writes
    /// what is pending first, so the rows end up as if applied one by one).
    pub async fn apply_consumed_batch(
        &self,
        consumer: &str,
        events: &[(u64, &Envelope)],
    ) -> Result<(), StoreError> {
        let Some(last) = events.iter().map(|(seq, _)| *seq).max() else {
            return Ok(());
        };
        if let Some((tags, trust)) = at_once(events) {
            return self.apply_at_once(consumer, last, &tags, &trust).await;
        }
        let mut tx = self.begin().await?;
        let mut tags = TagRows::default();
        let mut trust = TrustRows::default();
        for (seq, env) in events {
            let seq = *seq;
            if let Some(row) = tag_row(seq, env) {
                trust.add(&mut tx, seq, &env.payload).await?;
                if !tags.push(&row) {
                    tags.flush(&mut tx).await?;
                    tags.push(&row);
                }
            } else if !trust.add(&mut tx, seq, &env.payload).await? {
                tags.flush(&mut tx).await?;
                trust.flush(&mut tx).await?;
                apply_in(&mut tx, seq, env).await?;
            }
        }
        tags.flush(&mut tx).await?;
        trust.flush(&mut tx).await?;
        record_position(&mut tx, consumer, last).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rows of tag and trust events, each key once, and the consumer's position: one
    /// statement (its own transaction, committed without waiting for the WAL flush, as
    /// [`Self::begin`]'s), so a batch of one costs one round trip.
    async fn apply_at_once(
        &self,
        consumer: &str,
        last: u64,
        tags: &TagRows,
        trust: &TrustRows,
    ) -> Result<(), StoreError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
                 {}, {}, {},
                 p AS (INSERT INTO stream_position (consumer, sequence) SELECT $21, $22 FROM relaxed
                    ON CONFLICT (consumer) DO UPDATE SET
                        sequence = GREATEST(stream_position.sequence, EXCLUDED.sequence), updated_at = now()
                    RETURNING 1)
                 SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM r)
                    + (SELECT count(*) FROM f) + (SELECT count(*) FROM p)",
                TagRows::upsert(1),
                crate::trust::state::upsert_referrers(10),
                crate::trust::state::upsert_facts(15),
            )
        });
        trust
            .bind(tags.bind(sqlx::query(SQL.as_str())))
            .bind(consumer)
            .bind(last as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record that `consumer` is past `seq` without applying anything (events it only
    /// reacts to, such as `sync.requested`).
    pub async fn advance(&self, consumer: &str, seq: u64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        record_position(&mut tx, consumer, seq).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn record_position(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    seq: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stream_position (consumer, sequence) VALUES ($1, $2)
         ON CONFLICT (consumer) DO UPDATE SET sequence = GREATEST(stream_position.sequence, EXCLUDED.sequence), updated_at = now()",
    )
    .bind(consumer)
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    json(v).as_str().map(str::to_owned).unwrap_or_default()
}

/// The event is newer than what the registry row has seen (and the row exists).
async fn registry_newer(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
) -> Result<bool, StoreError> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT last_sequence FROM registries WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(v.is_some_and(|last| seq > last as u64))
}

async fn touch_registry(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE registries SET last_sequence = $2 WHERE id = $1")
        .bind(id.0)
        .bind(seq as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn rules_newer(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
) -> Result<bool, StoreError> {
    Ok(
        imagelib_platform::projection::advance_watermark(tx, "rule_sets", "registry_id", id.0, seq)
            .await?,
    )
}

async fn scans_newer(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "INSERT INTO scans (registry_id, last_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING",
    )
    .bind(id.0)
    .execute(&mut **tx)
    .await?;
    let last: i64 =
        sqlx::query_scalar("SELECT last_sequence FROM scans WHERE registry_id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_one(&mut **tx)
            .await?;
    if seq <= last as u64 {
        return Ok(false);
    }
    sqlx::query("UPDATE scans SET last_sequence = $2 WHERE registry_id = $1")
        .bind(id.0)
        .bind(seq as i64)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Upserts a tag row unless it already reflects a later event.
#[allow(clippy::too_many_arguments)]
async fn put_tag(
    tx: &mut Transaction<'_, Postgres>,
    registry: RegistryId,
    repository: &RepositoryName,
    tag: &Tag,
    digest: &Digest,
    present: bool,
    kind: Option<&str>,
    platforms: &[Platform],
    seq: u64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO known_tags (registry_id, repository, tag, digest, present, kind, platforms, last_sequence, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (registry_id, repository, tag) DO UPDATE SET
            digest = EXCLUDED.digest, present = EXCLUDED.present,
            kind = COALESCE(EXCLUDED.kind, known_tags.kind),
            platforms = CASE WHEN EXCLUDED.present THEN EXCLUDED.platforms ELSE known_tags.platforms END,
            last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at
         WHERE known_tags.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(registry.0)
    .bind(repository.as_str())
    .bind(tag.as_str())
    .bind(digest.as_str())
    .bind(present)
    .bind(kind)
    .bind(json(&platforms))
    .bind(seq as i64)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One tag row of a batch.
struct TagRow<'a> {
    registry: RegistryId,
    repository: &'a RepositoryName,
    tag: &'a Tag,
    digest: &'a Digest,
    present: bool,
    kind: Option<&'a str>,
    platforms: &'a [Platform],
    seq: u64,
    at: DateTime<Utc>,
}

/// Tag rows of a batch by column, each key once ([`put_tag`] for many).
#[derive(Default)]
struct TagRows {
    keys: std::collections::HashSet<(uuid::Uuid, String, String)>,
    registry: Vec<uuid::Uuid>,
    repository: Vec<String>,
    tag: Vec<String>,
    digest: Vec<String>,
    present: Vec<bool>,
    kind: Vec<Option<String>>,
    platforms: Vec<serde_json::Value>,
    seq: Vec<i64>,
    at: Vec<DateTime<Utc>>,
}

impl TagRows {
    /// Takes the row unless its tag is pending already (false: flush first).
    fn push(&mut self, r: &TagRow<'_>) -> bool {
        let key = (r.registry.0, r.repository.to_string(), r.tag.to_string());
        if !self.keys.insert(key) {
            return false;
        }
        self.registry.push(r.registry.0);
        self.repository.push(r.repository.to_string());
        self.tag.push(r.tag.to_string());
        self.digest.push(r.digest.to_string());
        self.present.push(r.present);
        self.kind.push(r.kind.map(str::to_owned));
        self.platforms.push(json(&r.platforms));
        self.seq.push(r.seq as i64);
        self.at.push(r.at);
        true
    }

    async fn flush(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        if self.registry.is_empty() {
            return Ok(());
        }
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("WITH {} SELECT count(*) FROM t", TagRows::upsert(1))
        });
        let c = std::mem::take(self);
        c.bind(sqlx::query(SQL.as_str())).execute(&mut **tx).await?;
        Ok(())
    }

    /// `t AS (...)`, for a `WITH` clause: the upsert of these rows ([`put_tag`] for
    /// each), nine array parameters from `$first`, as [`Self::bind`] binds them.
    fn upsert(first: usize) -> String {
        let p = |i: usize| first + i;
        format!(
            "t AS (INSERT INTO known_tags (registry_id, repository, tag, digest, present, kind, platforms, last_sequence, updated_at)
             SELECT * FROM UNNEST(${}::uuid[], ${}::text[], ${}::text[], ${}::text[], ${}::bool[], ${}::text[], ${}::jsonb[], ${}::int8[], ${}::timestamptz[])
             ON CONFLICT (registry_id, repository, tag) DO UPDATE SET
                digest = EXCLUDED.digest, present = EXCLUDED.present,
                kind = COALESCE(EXCLUDED.kind, known_tags.kind),
                platforms = CASE WHEN EXCLUDED.present THEN EXCLUDED.platforms ELSE known_tags.platforms END,
                last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at
             WHERE known_tags.last_sequence < EXCLUDED.last_sequence
             RETURNING 1)",
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8)
        )
    }

    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.registry)
            .bind(&self.repository)
            .bind(&self.tag)
            .bind(&self.digest)
            .bind(&self.present)
            .bind(&self.kind)
            .bind(&self.platforms)
            .bind(&self.seq)
            .bind(&self.at)
    }
}

/// The tag row of a tag event.
fn tag_row(seq: u64, env: &Envelope) -> Option<TagRow<'_>> {
    let (registry, repository, tag, digest, present, kind, platforms) = match &env.payload {
        EventPayload::TagDiscovered(e) => (
            e.registry_id,
            &e.repository,
            &e.tag,
            &e.digest,
            true,
            Some(e.details.kind.as_str()),
            e.details.platforms.as_slice(),
        ),
        EventPayload::TagMoved(e) => (
            e.registry_id,
            &e.repository,
            &e.tag,
            &e.new_digest,
            true,
            Some(e.details.kind.as_str()),
            e.details.platforms.as_slice(),
        ),
        EventPayload::TagRemoved(e) => (
            e.registry_id,
            &e.repository,
            &e.tag,
            &e.digest,
            false,
            None,
            &[][..],
        ),
        _ => return None,
    };
    Some(TagRow {
        registry,
        repository,
        tag,
        digest,
        present,
        kind,
        platforms,
        seq,
        at: env.time,
    })
}

/// The rows of a batch of tag and trust events that touches each key once, for one
/// statement; none when it holds another event or a key twice.
fn at_once(events: &[(u64, &Envelope)]) -> Option<(TagRows, TrustRows)> {
    let mut tags = TagRows::default();
    let mut trust = TrustRows::default();
    for (seq, env) in events {
        let tag = tag_row(*seq, env);
        if let Some(row) = &tag
            && !tags.push(row)
        {
            return None;
        }
        match trust.push(*seq, &env.payload) {
            Pushed::Taken => {}
            Pushed::Nothing if tag.is_some() => {}
            Pushed::Nothing | Pushed::Repeated => return None,
        }
    }
    Some((tags, trust))
}

async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    seq: u64,
    env: &Envelope,
) -> Result<(), StoreError> {
    let at = env.time;
    match &env.payload {
        EventPayload::RegistryRegistered(e) => {
            sqlx::query(
                "INSERT INTO registries (id, url, insecure, ca_pem, auth_kind, credential, visibility,
                    scan_interval_secs, repositories, last_sequence, auth_hosts, registry_type,
                    proxy_url, no_proxy, artifact_registry)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.registry_id.0)
            .bind(&e.url)
            .bind(e.insecure)
            .bind(&e.ca_pem)
            .bind(enum_str(&e.auth_kind))
            .bind(e.credential.as_ref().map(json))
            .bind(&e.visibility)
            .bind(e.scan_interval_secs.map(|v| v as i64))
            .bind(e.repositories.iter().map(|r| r.to_string()).collect::<Vec<_>>())
            .bind(seq as i64)
            .bind(&e.auth_hosts)
            .bind(enum_str(&e.registry_type))
            .bind(&e.proxy_url)
            .bind(&e.no_proxy)
            .bind(&e.artifact_registry)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryUpdated(e) => {
            if !registry_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "UPDATE registries SET
                    url = COALESCE($2, url),
                    insecure = COALESCE($3, insecure),
                    visibility = COALESCE($4, visibility),
                    ca_pem = CASE WHEN $5 THEN $6 ELSE ca_pem END,
                    scan_interval_secs = COALESCE($7, scan_interval_secs),
                    repositories = COALESCE($8, repositories),
                    auth_hosts = COALESCE($9, auth_hosts),
                    auth_kind = COALESCE($10, auth_kind),
                    credential = CASE WHEN $10 IS NULL THEN credential ELSE $11 END,
                    registry_type = COALESCE($12, registry_type),
                    proxy_url = CASE WHEN $13 THEN $14 ELSE proxy_url END,
                    no_proxy = COALESCE($15, no_proxy),
                    artifact_registry = CASE WHEN $16 THEN $17 ELSE artifact_registry END
                 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(&e.url)
            .bind(e.insecure)
            .bind(&e.visibility)
            .bind(e.ca_pem.is_some())
            .bind(e.ca_pem.clone().flatten())
            .bind(e.scan_interval_secs.map(|v| v as i64))
            .bind(
                e.repositories
                    .as_ref()
                    .map(|r| r.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
            )
            .bind(&e.auth_hosts)
            .bind(e.auth_kind.as_ref().map(enum_str))
            .bind(e.credential.as_ref().map(json))
            .bind(e.registry_type.as_ref().map(enum_str))
            .bind(e.proxy_url.is_some())
            .bind(e.proxy_url.clone().flatten())
            .bind(&e.no_proxy)
            .bind(e.artifact_registry.is_some())
            .bind(e.artifact_registry.clone().flatten())
            .execute(&mut **tx)
            .await?;
            touch_registry(tx, e.registry_id, seq).await?;
        }
        EventPayload::RegistryCredentialsRotated(e) => {
            if !registry_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query("UPDATE registries SET auth_kind = $2, credential = $3 WHERE id = $1")
                .bind(e.registry_id.0)
                .bind(enum_str(&e.auth_kind))
                .bind(e.credential.as_ref().map(json))
                .execute(&mut **tx)
                .await?;
            touch_registry(tx, e.registry_id, seq).await?;
        }
        EventPayload::RegistryRemoved(e) => {
            if !registry_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query("UPDATE registries SET removed = TRUE, credential = NULL WHERE id = $1")
                .bind(e.registry_id.0)
                .execute(&mut **tx)
                .await?;
            for table in ["rules", "known_tags", "subject_referrers", "trust_facts"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE registry_id = $1"))
                    .bind(e.registry_id.0)
                    .execute(&mut **tx)
                    .await?;
            }
            touch_registry(tx, e.registry_id, seq).await?;
        }
        EventPayload::RuleSet(e) => {
            if !rules_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO rules (registry_id, rule_id, body) VALUES ($1, $2, $3)
                 ON CONFLICT (registry_id, rule_id) DO UPDATE SET body = EXCLUDED.body",
            )
            .bind(e.registry_id.0)
            .bind(e.rule_id.as_str())
            .bind(json(e))
            .execute(&mut **tx)
            .await?;
            rules_changed(tx, e.registry_id, at).await?;
        }
        EventPayload::RuleRemoved(e) => {
            if !rules_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query("DELETE FROM rules WHERE registry_id = $1 AND rule_id = $2")
                .bind(e.registry_id.0)
                .bind(e.rule_id.as_str())
                .execute(&mut **tx)
                .await?;
            rules_changed(tx, e.registry_id, at).await?;
        }
        EventPayload::TagDiscovered(e) => {
            crate::trust::state::put_referrers(
                tx,
                e.registry_id,
                &e.repository,
                &e.digest,
                &e.details.referrers,
                seq,
            )
            .await?;
            put_tag(
                tx,
                e.registry_id,
                &e.repository,
                &e.tag,
                &e.digest,
                true,
                Some(e.details.kind.as_str()),
                &e.details.platforms,
                seq,
                at,
            )
            .await?;
        }
        EventPayload::TagMoved(e) => {
            crate::trust::state::put_referrers(
                tx,
                e.registry_id,
                &e.repository,
                &e.new_digest,
                &e.details.referrers,
                seq,
            )
            .await?;
            put_tag(
                tx,
                e.registry_id,
                &e.repository,
                &e.tag,
                &e.new_digest,
                true,
                Some(e.details.kind.as_str()),
                &e.details.platforms,
                seq,
                at,
            )
            .await?;
        }
        EventPayload::TagRemoved(e) => {
            put_tag(
                tx,
                e.registry_id,
                &e.repository,
                &e.tag,
                &e.digest,
                false,
                None,
                &[],
                seq,
                at,
            )
            .await?;
        }
        EventPayload::SyncStarted(e) => {
            if !scans_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "UPDATE scans SET running_sync_id = $2, running_since = $3, running_repository = $4,
                    running_actor = $5, last_started_at = $3
                 WHERE registry_id = $1",
            )
            .bind(e.registry_id.0)
            .bind(e.sync_id.0)
            .bind(at)
            .bind(e.repository.as_ref().map(|r| r.to_string()))
            .bind(&env.actor)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::SyncCompleted(e) => {
            if !scans_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            finish_scan(
                tx,
                e.registry_id,
                e.sync_id,
                if e.partial { "partial" } else { "completed" },
                json(e),
                !e.partial,
                at,
            )
            .await?;
        }
        EventPayload::SyncFailed(e) => {
            if !scans_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            finish_scan(tx, e.registry_id, e.sync_id, "failed", json(e), false, at).await?;
        }
        other => crate::trust::state::apply(tx, seq, other).await?,
    }
    Ok(())
}

async fn rules_changed(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE registries SET rules_changed_at = GREATEST(COALESCE(rules_changed_at, $2), $2) WHERE id = $1",
    )
    .bind(id.0)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn finish_scan(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    sync_id: SyncId,
    state: &str,
    summary: serde_json::Value,
    complete: bool,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    // A complete scan of the whole registry serves every request made before it started.
    sqlx::query(
        "UPDATE scans SET
            last_full_started_at = CASE
                WHEN $5 AND running_sync_id = $2 AND running_repository IS NULL
                THEN running_since ELSE last_full_started_at END,
            running_sync_id = CASE WHEN running_sync_id = $2 THEN NULL ELSE running_sync_id END,
            running_since = CASE WHEN running_sync_id = $2 THEN NULL ELSE running_since END,
            running_repository = CASE WHEN running_sync_id = $2 THEN NULL ELSE running_repository END,
            running_actor = CASE WHEN running_sync_id = $2 THEN NULL ELSE running_actor END,
            last_sync_id = $2, last_finished_at = $3, last_state = $4, last_summary = $6
         WHERE registry_id = $1",
    )
    .bind(id.0)
    .bind(sync_id.0)
    .bind(at)
    .bind(state)
    .bind(complete)
    .bind(summary)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The image projector's batches against a real PostgreSQL: a batch leaves the same
    //! rows as its events applied one by one.

    use super::*;
    use imagelib_events::event::{
        PolicyEvaluated, ReferrersChanged, SyncStarted, TagDiscovered, TagMoved, TagRemoved,
    };
    use imagelib_events::model::{ImageDetails, PolicyVerdict, Referrer, ReferrerKind, SyncReason};

    static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

    fn digest(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .expect("digest")
    }

    fn details(kind: &str, platform: Option<u8>, referrers: &[u8]) -> ImageDetails {
        let platforms: Vec<serde_json::Value> = platform
            .map(|p| serde_json::json!({"os": "linux", "architecture": "amd64", "digest": digest(p)}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "media_type": "application/vnd.oci.image.index.v1+json",
            "platforms": platforms,
            "size": 1,
            "kind": kind,
            "referrers": referrers.iter().map(|r| referrer(*r)).collect::<Vec<_>>(),
        }))
        .expect("details")
    }

    fn referrer(n: u8) -> Referrer {
        Referrer {
            digest: digest(n),
            kind: ReferrerKind::Signature,
            artifact_type: None,
        }
    }

    fn verdict(registry: RegistryId, d: u8, verdict: PolicyVerdict) -> EventPayload {
        PolicyEvaluated {
            registry_id: registry,
            repository: "team/app".parse().expect("repository"),
            digest: digest(d),
            verdict,
            reasons: Vec::new(),
            policy: None,
            findings: Vec::new(),
        }
        .into()
    }

    /// A stretch of image events with every case a batch must get right: a tag, a fact
    /// and a referrer list each written twice, a tombstone, a tag moved, an event older
    /// than what is stored, and a non-image event in between.
    fn events(registry: RegistryId) -> Vec<(u64, Envelope)> {
        let repo: RepositoryName = "team/app".parse().expect("repository");
        let tag = |t: &str| t.parse::<Tag>().expect("tag");
        let payloads: Vec<(u64, EventPayload)> = vec![
            (
                1,
                TagDiscovered {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag("1.0"),
                    digest: digest(1),
                    details: details("database", Some(9), &[31]),
                }
                .into(),
            ),
            (2, verdict(registry, 1, PolicyVerdict::Fail)),
            (
                3,
                ReferrersChanged {
                    registry_id: registry,
                    repository: repo.clone(),
                    digest: digest(1),
                    referrers: vec![referrer(31), referrer(32)],
                }
                .into(),
            ),
            (
                4,
                TagRemoved {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag("1.0"),
                    digest: digest(1),
                }
                .into(),
            ),
            (5, verdict(registry, 1, PolicyVerdict::Pass)),
            (
                6,
                SyncStarted {
                    registry_id: registry,
                    sync_id: SyncId(uuid::Uuid::from_u128(6)),
                    repository: None,
                    reason: SyncReason::Manual,
                }
                .into(),
            ),
            (
                7,
                TagDiscovered {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag("1.0"),
                    digest: digest(2),
                    details: details("other", None, &[]),
                }
                .into(),
            ),
            (
                8,
                TagMoved {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag("latest"),
                    old_digest: digest(1),
                    new_digest: digest(2),
                    details: details("other", None, &[33]),
                }
                .into(),
            ),
            (
                9,
                TagRemoved {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag("never-seen"),
                    digest: digest(3),
                }
                .into(),
            ),
            // Older than the verdict stored at 100 (below): not applied.
            (10, verdict(registry, 2, PolicyVerdict::Fail)),
        ];
        let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
        payloads
            .into_iter()
            .map(|(seq, payload)| {
                let mut env = Envelope::new("test", payload);
                env.time = at;
                (seq, env)
            })
            .collect()
    }

    /// Every projected row of `registry`, as text, without the registry's id.
    async fn rows(store: &Store, registry: RegistryId) -> Vec<String> {
        let id = registry.0.to_string();
        let mut out = Vec::new();
        for table in ["known_tags", "subject_referrers", "trust_facts", "scans"] {
            let all: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT (to_jsonb(t) - 'registry_id')::text FROM {table} t
                 WHERE registry_id = $1 ORDER BY 1"
            ))
            .bind(registry.0)
            .fetch_all(store.pool())
            .await
            .expect("rows");
            out.extend(
                all.into_iter()
                    .map(|r| format!("{table}: {}", r.replace(&id, "R"))),
            );
        }
        out
    }

    #[tokio::test]
    async fn a_batch_leaves_the_rows_its_events_leave_one_by_one() {
        let db = imagelib_testkit::TestDb::new();
        let pool = db.create().await.expect("database");
        MIGRATOR.run(&pool).await.expect("migrations");
        let store = Store::new(pool);
        let (one, each, batch) = (RegistryId::new(), RegistryId::new(), RegistryId::new());
        for registry in [one, each, batch] {
            let mut later = Envelope::new("test", verdict(registry, 2, PolicyVerdict::Audit));
            later.time = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
            store.apply(100, &later).await.expect("later verdict");
        }

        // The reference: each event's own statements ([`apply_in`]).
        for (seq, env) in events(one) {
            store.apply(seq, &env).await.expect("apply");
        }
        // Consumed one by one: each tag or trust event in one statement.
        for (seq, env) in events(each) {
            store
                .apply_consumed("each", seq, &env)
                .await
                .expect("apply");
        }
        let batched = events(batch);
        let refs: Vec<(u64, &Envelope)> = batched.iter().map(|(s, e)| (*s, e)).collect();
        store
            .apply_consumed_batch("batch", &refs)
            .await
            .expect("apply batch");

        let expected = rows(&store, one).await;
        for table in ["known_tags", "subject_referrers", "trust_facts", "scans"] {
            assert!(
                expected.iter().any(|r| r.starts_with(table)),
                "{table}: {expected:#?}"
            );
        }
        assert!(
            expected.iter().any(|r| r.contains("\"never-seen\"")),
            "{expected:#?}"
        );
        assert!(
            expected.iter().any(|r| r.contains("audit")),
            "the older verdict is not applied: {expected:#?}"
        );
        assert_eq!(rows(&store, each).await, expected);
        assert_eq!(rows(&store, batch).await, expected);
        assert_eq!(store.position("each").await.expect("position"), 10);
        assert_eq!(store.position("batch").await.expect("position"), 10);

        // A batch without a repeated key or another event: one statement.
        let (at_once_registry, reference) = (RegistryId::new(), RegistryId::new());
        let plain: Vec<(u64, Envelope)> = events(at_once_registry)
            .into_iter()
            .filter(|(seq, _)| [2, 3, 7, 9, 10].contains(seq))
            .collect();
        let refs: Vec<(u64, &Envelope)> = plain.iter().map(|(s, e)| (*s, e)).collect();
        assert!(at_once(&refs).is_some());
        store
            .apply_consumed_batch("at-once", &refs)
            .await
            .expect("apply at once");
        for (seq, env) in events(reference)
            .into_iter()
            .filter(|(seq, _)| [2, 3, 7, 9, 10].contains(seq))
        {
            store.apply(seq, &env).await.expect("apply");
        }
        assert_eq!(
            rows(&store, at_once_registry).await,
            rows(&store, reference).await
        );
        assert_eq!(store.position("at-once").await.expect("position"), 10);
    }
}
