//! The trust tables: referrer content (a content-addressed cache) and two projections of
//! the scanner's own image events — each digest's referrers as last announced, and what
//! each trust event last said (so an event is emitted only when its fact changes).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use imagelib_events::model::Referrer;
use imagelib_events::{Digest, EventPayload, RegistryId, RepositoryName};
use sqlx::{Postgres, Row, Transaction};

use crate::store::{Store, StoreError};

/// A referrer manifest and the blobs read for it.
#[derive(Debug, Clone)]
pub struct StoredReferrer {
    pub digest: Digest,
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub blobs: HashMap<String, Vec<u8>>,
    /// Blobs not read, with why (each a finding).
    pub skipped: Vec<String>,
    pub stored_at: DateTime<Utc>,
}

impl StoredReferrer {
    pub fn bytes(&self) -> u64 {
        let blobs: usize = self.blobs.values().map(Vec::len).sum();
        (self.manifest.len() + blobs) as u64
    }
}

/// The fact key of a trust event and the value that is compared.
pub fn fact_of(payload: &EventPayload) -> Option<(RegistryId, &RepositoryName, &Digest, String)> {
    let (registry, repository, digest, key) = match payload {
        EventPayload::SignatureVerified(e) => (
            e.registry_id,
            &e.repository,
            &e.digest,
            sig_key(&e.source, e.policy.as_ref().map(|p| p.as_str())),
        ),
        EventPayload::SignatureFailed(e) => (
            e.registry_id,
            &e.repository,
            &e.digest,
            sig_key(&e.source, e.policy.as_ref().map(|p| p.as_str())),
        ),
        EventPayload::VulnerabilitiesReported(e) => (
            e.registry_id,
            &e.repository,
            &e.digest,
            format!("vuln/{}", e.source),
        ),
        EventPayload::SbomFound(e) => (
            e.registry_id,
            &e.repository,
            &e.digest,
            format!("sbom/{}", e.source),
        ),
        EventPayload::PolicyEvaluated(e) => {
            (e.registry_id, &e.repository, &e.digest, "policy".to_owned())
        }
        _ => return None,
    };
    Some((registry, repository, digest, key))
}

pub fn sig_key(source: &Digest, policy: Option<&str>) -> String {
    format!("sig/{source}/{}", policy.unwrap_or("-"))
}

/// The stored value of a trust event: its type and body.
pub fn fact_value(payload: &EventPayload) -> serde_json::Value {
    serde_json::json!({
        "type": payload.event_type(),
        "event": payload.to_json(),
    })
}

pub(crate) async fn put_referrers(
    tx: &mut Transaction<'_, Postgres>,
    registry: RegistryId,
    repository: &RepositoryName,
    digest: &Digest,
    referrers: &[Referrer],
    seq: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subject_referrers (registry_id, repository, digest, referrers, last_sequence)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (registry_id, repository, digest) DO UPDATE SET
            referrers = EXCLUDED.referrers, last_sequence = EXCLUDED.last_sequence
         WHERE subject_referrers.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(registry.0)
    .bind(repository.as_str())
    .bind(digest.as_str())
    .bind(serde_json::to_value(referrers).unwrap_or_default())
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The trust rows of consecutive events, written with one statement per table
/// ([`crate::store::Store::apply_consumed_batch`]). A row whose key is already pending
/// writes the pending ones first, so each statement touches a key once and the rows land
/// as if applied one by one.
#[derive(Debug, Default)]
pub(crate) struct TrustRows {
    facts: Columns,
    referrers: Columns,
}

/// Rows of `trust_facts` or `subject_referrers`, by column (`key` unused for the latter).
#[derive(Debug, Default)]
struct Columns {
    keys: HashSet<(uuid::Uuid, String, String, String)>,
    registry: Vec<uuid::Uuid>,
    repository: Vec<String>,
    digest: Vec<String>,
    key: Vec<String>,
    value: Vec<serde_json::Value>,
    seq: Vec<i64>,
}

impl Columns {
    fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    /// Takes the row unless its key is pending already (false: write first).
    fn push(
        &mut self,
        registry: RegistryId,
        repository: &RepositoryName,
        digest: &Digest,
        key: String,
        value: serde_json::Value,
        seq: u64,
    ) -> bool {
        let id = (
            registry.0,
            repository.to_string(),
            digest.to_string(),
            key.clone(),
        );
        if !self.keys.insert(id) {
            return false;
        }
        self.registry.push(registry.0);
        self.repository.push(repository.to_string());
        self.digest.push(digest.to_string());
        self.key.push(key);
        self.value.push(value);
        self.seq.push(seq as i64);
        true
    }

    fn take(&mut self) -> Columns {
        std::mem::take(self)
    }
}

/// What [`TrustRows::push`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Its row is pending.
    Taken,
    /// It has no trust row.
    Nothing,
    /// A row with its key is pending already: write those first (nothing was taken).
    Repeated,
}

impl TrustRows {
    /// Takes the trust row of an event (a tag event's referrers, `referrers_changed`, a
    /// trust fact).
    pub(crate) fn push(&mut self, seq: u64, payload: &EventPayload) -> Pushed {
        let referrers = match payload {
            EventPayload::TagDiscovered(e) => Some((
                e.registry_id,
                &e.repository,
                &e.digest,
                &e.details.referrers,
            )),
            EventPayload::TagMoved(e) => Some((
                e.registry_id,
                &e.repository,
                &e.new_digest,
                &e.details.referrers,
            )),
            EventPayload::ReferrersChanged(e) => {
                Some((e.registry_id, &e.repository, &e.digest, &e.referrers))
            }
            _ => None,
        };
        let taken = if let Some((registry, repository, digest, list)) = referrers {
            let value = serde_json::to_value(list).unwrap_or_default();
            self.referrers
                .push(registry, repository, digest, String::new(), value, seq)
        } else if let Some((registry, repository, digest, key)) = fact_of(payload) {
            self.facts
                .push(registry, repository, digest, key, fact_value(payload), seq)
        } else {
            return Pushed::Nothing;
        };
        if taken {
            Pushed::Taken
        } else {
            Pushed::Repeated
        }
    }

    /// [`Self::push`], writing what is pending first when the key repeats: false when
    /// the event has no trust row.
    pub(crate) async fn add(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        seq: u64,
        payload: &EventPayload,
    ) -> Result<bool, StoreError> {
        match self.push(seq, payload) {
            Pushed::Taken => Ok(true),
            Pushed::Nothing => Ok(false),
            Pushed::Repeated => {
                self.flush(tx).await?;
                Ok(self.push(seq, payload) == Pushed::Taken)
            }
        }
    }

    /// Binds the pending rows as [`upsert_referrers`] and [`upsert_facts`] number their
    /// parameters (five arrays, then six).
    pub(crate) fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        let (r, f) = (&self.referrers, &self.facts);
        q.bind(&r.registry)
            .bind(&r.repository)
            .bind(&r.digest)
            .bind(&r.value)
            .bind(&r.seq)
            .bind(&f.registry)
            .bind(&f.repository)
            .bind(&f.digest)
            .bind(&f.key)
            .bind(&f.value)
            .bind(&f.seq)
    }

    /// Writes what is pending.
    pub(crate) async fn flush(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<(), StoreError> {
        self.flush_referrers(tx).await?;
        self.flush_facts(tx).await
    }

    async fn flush_referrers(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<(), StoreError> {
        if self.referrers.is_empty() {
            return Ok(());
        }
        let c = self.referrers.take();
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("WITH {} SELECT count(*) FROM r", upsert_referrers(1))
        });
        sqlx::query(SQL.as_str())
            .bind(&c.registry)
            .bind(&c.repository)
            .bind(&c.digest)
            .bind(&c.value)
            .bind(&c.seq)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn flush_facts(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        if self.facts.is_empty() {
            return Ok(());
        }
        let c = self.facts.take();
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("WITH {} SELECT count(*) FROM f", upsert_facts(1)));
        sqlx::query(SQL.as_str())
            .bind(&c.registry)
            .bind(&c.repository)
            .bind(&c.digest)
            .bind(&c.key)
            .bind(&c.value)
            .bind(&c.seq)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// `r AS (...)`, for a `WITH` clause: the upsert of pending `subject_referrers` rows
/// (five array parameters from `$first`, as [`TrustRows::bind`] binds them).
pub(crate) fn upsert_referrers(first: usize) -> String {
    let p = |i: usize| first + i;
    format!(
        "r AS (INSERT INTO subject_referrers (registry_id, repository, digest, referrers, last_sequence)
             SELECT * FROM UNNEST(${}::uuid[], ${}::text[], ${}::text[], ${}::jsonb[], ${}::int8[])
             ON CONFLICT (registry_id, repository, digest) DO UPDATE SET
                referrers = EXCLUDED.referrers, last_sequence = EXCLUDED.last_sequence
             WHERE subject_referrers.last_sequence < EXCLUDED.last_sequence
             RETURNING 1)",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4)
    )
}

/// `f AS (...)`, for a `WITH` clause: the upsert of pending `trust_facts` rows (six
/// array parameters from `$first`, after the referrers' in [`TrustRows::bind`]).
pub(crate) fn upsert_facts(first: usize) -> String {
    let p = |i: usize| first + i;
    format!(
        "f AS (INSERT INTO trust_facts (registry_id, repository, digest, key, value, last_sequence)
             SELECT * FROM UNNEST(${}::uuid[], ${}::text[], ${}::text[], ${}::text[], ${}::jsonb[], ${}::int8[])
             ON CONFLICT (registry_id, repository, digest, key) DO UPDATE SET
                value = EXCLUDED.value, last_sequence = EXCLUDED.last_sequence
             WHERE trust_facts.last_sequence < EXCLUDED.last_sequence
             RETURNING 1)",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

/// Applies the trust events (the other image events are the store's).
pub(crate) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    seq: u64,
    payload: &EventPayload,
) -> Result<(), StoreError> {
    if let EventPayload::ReferrersChanged(e) = payload {
        return put_referrers(
            tx,
            e.registry_id,
            &e.repository,
            &e.digest,
            &e.referrers,
            seq,
        )
        .await;
    }
    let Some((registry, repository, digest, key)) = fact_of(payload) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO trust_facts (registry_id, repository, digest, key, value, last_sequence)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (registry_id, repository, digest, key) DO UPDATE SET
            value = EXCLUDED.value, last_sequence = EXCLUDED.last_sequence
         WHERE trust_facts.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(registry.0)
    .bind(repository.as_str())
    .bind(digest.as_str())
    .bind(&key)
    .bind(fact_value(payload))
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The referrers last announced for these digests of a repository, with the sequence
    /// of the event that announced them.
    pub async fn subject_referrers(
        &self,
        registry: RegistryId,
        repository: &RepositoryName,
        digests: &[String],
    ) -> Result<HashMap<String, (Vec<Referrer>, u64)>, StoreError> {
        if digests.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT digest, referrers, last_sequence FROM subject_referrers
             WHERE registry_id = $1 AND repository = $2 AND digest = ANY($3)",
        )
        .bind(registry.0)
        .bind(repository.as_str())
        .bind(digests)
        .fetch_all(self.pool())
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let digest: String = r.try_get("digest")?;
            let referrers: Vec<Referrer> =
                serde_json::from_value(r.try_get("referrers")?).unwrap_or_default();
            let seq: i64 = r.try_get("last_sequence")?;
            out.insert(digest, (referrers, seq.max(0) as u64));
        }
        Ok(out)
    }

    /// The trust facts of these digests of a repository: (digest, key) → (value, the
    /// sequence of the event that said it).
    pub async fn trust_facts(
        &self,
        registry: RegistryId,
        repository: &RepositoryName,
        digests: &[String],
    ) -> Result<HashMap<(String, String), (serde_json::Value, u64)>, StoreError> {
        if digests.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT digest, key, value, last_sequence FROM trust_facts
             WHERE registry_id = $1 AND repository = $2 AND digest = ANY($3)",
        )
        .bind(registry.0)
        .bind(repository.as_str())
        .bind(digests)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("last_sequence")?;
                Ok((
                    (r.try_get("digest")?, r.try_get("key")?),
                    (r.try_get("value")?, seq.max(0) as u64),
                ))
            })
            .collect()
    }

    /// Which of these referrer digests are stored.
    pub async fn stored_referrers(
        &self,
        digests: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        if digests.is_empty() {
            return Ok(HashSet::new());
        }
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT digest FROM referrer_content WHERE digest = ANY($1)")
                .bind(digests)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The stored content of these referrer digests.
    pub async fn referrer_content(
        &self,
        digests: &[String],
    ) -> Result<Vec<StoredReferrer>, StoreError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT digest, media_type, manifest, blob_digests, blob_bodies, skipped, stored_at
             FROM referrer_content WHERE digest = ANY($1)",
        )
        .bind(digests)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let digest: String = r.try_get("digest")?;
            let Ok(digest) = digest.parse::<Digest>() else {
                continue;
            };
            let names: Vec<String> = r.try_get("blob_digests")?;
            let bodies: Vec<Vec<u8>> = r.try_get("blob_bodies")?;
            out.push(StoredReferrer {
                digest,
                media_type: r.try_get("media_type")?,
                manifest: r.try_get("manifest")?,
                blobs: names.into_iter().zip(bodies).collect(),
                skipped: serde_json::from_value(r.try_get("skipped")?).unwrap_or_default(),
                stored_at: r.try_get("stored_at")?,
            });
        }
        Ok(out)
    }

    /// Keeps referrers read from a registry: one statement, which commits without
    /// waiting for the WAL flush (content-addressed and read again if lost) — no
    /// transaction round trips around it.
    pub async fn put_referrer_content(&self, items: &[&StoredReferrer]) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        let items: Vec<&StoredReferrer> = items
            .iter()
            .copied()
            .filter(|r| seen.insert(r.digest.as_str()))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let mut q = sqlx::QueryBuilder::<Postgres>::new(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
             INSERT INTO referrer_content
                (digest, media_type, manifest, blob_digests, blob_bodies, skipped, bytes)
             SELECT v.* FROM relaxed, (",
        );
        q.push_values(&items, |mut row, r| {
            let (names, bodies): (Vec<&str>, Vec<&[u8]>) = r
                .blobs
                .iter()
                .map(|(d, b)| (d.as_str(), b.as_slice()))
                .unzip();
            row.push_bind(r.digest.as_str())
                .push_bind(r.media_type.as_str())
                .push_bind(r.manifest.as_slice())
                .push_bind(names)
                .push_bind(bodies)
                .push_bind(serde_json::to_value(&r.skipped).unwrap_or_default())
                .push_bind(r.bytes() as i64);
        });
        q.push(
            ") AS v (digest, media_type, manifest, blob_digests, blob_bodies, skipped, bytes)
             ON CONFLICT (digest) DO NOTHING",
        );
        q.build().persistent(false).execute(self.pool()).await?;
        Ok(())
    }

    /// Every present tag of a registry: (repository, tag, digest, platform digests).
    pub async fn present_tags(
        &self,
        registry: RegistryId,
    ) -> Result<Vec<(RepositoryName, String, String, Vec<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT repository, tag, digest, platforms FROM known_tags
             WHERE registry_id = $1 AND present ORDER BY repository, tag",
        )
        .bind(registry.0)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let repo: String = r.try_get("repository")?;
            let Ok(repo) = repo.parse::<RepositoryName>() else {
                continue;
            };
            let platforms: Vec<imagelib_events::model::Platform> =
                serde_json::from_value(r.try_get("platforms")?).unwrap_or_default();
            out.push((
                repo,
                r.try_get("tag")?,
                r.try_get("digest")?,
                platforms
                    .into_iter()
                    .filter_map(|p| p.digest.map(|d| d.to_string()))
                    .collect(),
            ));
        }
        Ok(out)
    }
}
