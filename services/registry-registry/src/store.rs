//! The service's projection of its own aggregates (registries and their rules) in its
//! PostgreSQL schema.
//!
//! [`Store::apply`] is the only writer. It is idempotent per aggregate (an event at or
//! below the aggregate's recorded sequence is skipped), so the durable consumer and the
//! command handlers (which apply what they just appended, for read-your-writes) can both
//! apply the same event safely, and a replay from sequence 1 rebuilds the same rows.

use chrono::{DateTime, Utc};
use imagelib_events::event::RuleSet;
use imagelib_events::model::{AuthKind, RegistryType, SealedCredential};
use imagelib_events::{Envelope, EventPayload, RegistryId};
use sqlx::{PgPool, Postgres, Row, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Where a registry stands after its last validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Saved without validation, or not validated since its last change.
    Pending,
    Validated,
    ValidationFailed,
    /// Its sealed credentials cannot be opened with this process's master keys (the key
    /// file was lost or replaced): enter the credentials again, or restore the key file.
    CredentialsUnavailable,
}

/// A registry row.
#[derive(Debug, Clone)]
pub struct Registry {
    pub id: RegistryId,
    pub label: String,
    pub url: String,
    pub registry_type: RegistryType,
    pub insecure: bool,
    pub auth_kind: AuthKind,
    pub credential: Option<SealedCredential>,
    pub webhook_secret: Option<SealedCredential>,
    pub visibility: Vec<String>,
    pub ca_pem: Option<String>,
    pub scan_interval_secs: Option<u64>,
    pub repositories: Vec<String>,
    pub auth_hosts: Vec<String>,
    /// Whether pull notifications are counted (`image.pulls_counted`).
    pub report_pulls: bool,
    /// The registry's own forward proxy, and the hosts reached directly despite it.
    pub proxy_url: Option<String>,
    pub no_proxy: Vec<String>,
    /// `gcr` only: the Artifact Registry repository's resource name, when given.
    pub artifact_registry: Option<String>,
    pub status: Status,
    pub status_reason: Option<String>,
    pub status_detail: Option<String>,
    pub auth_scheme: Option<String>,
    pub catalog_access: Option<bool>,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
    pub last_sequence: u64,
    /// `running`, `completed`, `partial` or `failed`.
    pub last_sync_state: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Counts of the last completed scan, or the failure reason.
    pub last_sync_summary: Option<serde_json::Value>,
    /// The stream sequence of the last scan's `sync.started`.
    pub last_sync_started_sequence: Option<u64>,
}

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("`{s}`: {e}")))
}

fn json_opt<T: serde::de::DeserializeOwned>(
    v: Option<serde_json::Value>,
) -> Result<Option<T>, StoreError> {
    v.map(|v| serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

impl Registry {
    fn from_row(r: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        let status: String = r.try_get("status")?;
        Ok(Registry {
            id: RegistryId(r.try_get("id")?),
            label: r.try_get("label")?,
            url: r.try_get("url")?,
            registry_type: parse_enum(&r.try_get::<String, _>("registry_type")?)?,
            insecure: r.try_get("insecure")?,
            auth_kind: parse_enum(&r.try_get::<String, _>("auth_kind")?)?,
            credential: json_opt(r.try_get("credential")?)?,
            webhook_secret: json_opt(r.try_get("webhook_secret")?)?,
            visibility: r.try_get("visibility")?,
            ca_pem: r.try_get("ca_pem")?,
            scan_interval_secs: r
                .try_get::<Option<i64>, _>("scan_interval_secs")?
                .map(|v| v as u64),
            repositories: r.try_get("repositories")?,
            auth_hosts: r.try_get("auth_hosts")?,
            report_pulls: r.try_get("report_pulls")?,
            proxy_url: r.try_get("proxy_url")?,
            no_proxy: r.try_get("no_proxy")?,
            artifact_registry: r.try_get("artifact_registry")?,
            status: match status.as_str() {
                "validated" => Status::Validated,
                "validation_failed" => Status::ValidationFailed,
                _ => Status::Pending,
            },
            status_reason: r.try_get("status_reason")?,
            status_detail: r.try_get("status_detail")?,
            auth_scheme: r.try_get("auth_scheme")?,
            catalog_access: r.try_get("catalog_access")?,
            validated_at: r.try_get("validated_at")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            removed_at: r.try_get("removed_at")?,
            last_sequence: r.try_get::<i64, _>("last_sequence")? as u64,
            last_sync_state: r.try_get("last_sync_state")?,
            last_sync_at: r.try_get("last_sync_at")?,
            last_sync_summary: r.try_get("last_sync_summary")?,
            last_sync_started_sequence: r
                .try_get::<Option<i64>, _>("last_sync_started_sequence")?
                .map(|s| s as u64),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn get(&self, id: RegistryId) -> Result<Option<Registry>, StoreError> {
        let row = sqlx::query("SELECT * FROM registries WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Registry::from_row).transpose()
    }

    /// Removed registries whose data key is not known to be destroyed yet.
    pub async fn unshredded(&self) -> Result<Vec<RegistryId>, StoreError> {
        let ids: Vec<sqlx::types::Uuid> = sqlx::query_scalar(
            "SELECT id FROM registries WHERE removed_at IS NOT NULL AND key_shredded_at IS NULL ORDER BY removed_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(RegistryId).collect())
    }

    pub async fn mark_shredded(&self, id: RegistryId) -> Result<(), StoreError> {
        sqlx::query("UPDATE registries SET key_shredded_at = now() WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Registries not removed, by label.
    pub async fn list(&self) -> Result<Vec<Registry>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM registries WHERE removed_at IS NULL ORDER BY lower(label), id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Registry::from_row).collect()
    }

    pub async fn rules(&self, id: RegistryId) -> Result<Vec<RuleSet>, StoreError> {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT body FROM rules WHERE registry_id = $1 ORDER BY rule_id")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|v| serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    pub async fn rule(&self, id: RegistryId, rule_id: &str) -> Result<Option<RuleSet>, StoreError> {
        let v: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT body FROM rules WHERE registry_id = $1 AND rule_id = $2")
                .bind(id.0)
                .bind(rule_id)
                .fetch_optional(&self.pool)
                .await?;
        json_opt(v)
    }

    /// The last stream sequence of the registry's rule aggregate (0 when none).
    pub async fn rules_version(&self, id: RegistryId) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT last_sequence FROM rule_sets WHERE registry_id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Apply an event a command handler just appended (read-your-writes). The consumer's
    /// position is left alone: events before it may not be applied yet.
    pub async fn apply(&self, seq: u64, env: &Envelope) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        apply_in(&mut tx, seq, env).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl imagelib_platform::projection::Projection for Store {
    fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    async fn apply_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        seq: u64,
        env: &Envelope,
    ) -> Result<(), String> {
        apply_in(tx, seq, env).await.map_err(|e| e.to_string())
    }
}

async fn registry_seq(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT last_sequence FROM registries WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(v.map(|v| v as u64))
}

async fn touch(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE registries SET last_sequence = $2, updated_at = $3 WHERE id = $1")
        .bind(id.0)
        .bind(seq as i64)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn sealed_json(s: &Option<SealedCredential>) -> Option<serde_json::Value> {
    s.as_ref().and_then(|s| serde_json::to_value(s).ok())
}

async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    seq: u64,
    env: &Envelope,
) -> Result<(), StoreError> {
    let at = env.time;
    match &env.payload {
        EventPayload::RegistryRegistered(e) => {
            if registry_seq(tx, e.registry_id).await?.is_some() {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO registries (id, label, url, registry_type, insecure, auth_kind, credential,
                    webhook_secret, visibility, ca_pem, scan_interval_secs, repositories, status,
                    created_by, created_at, updated_at, last_sequence, auth_hosts, report_pulls,
                    proxy_url, no_proxy, artifact_registry)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,'pending',$13,$14,$14,$15,$16,$17,$18,$19,$20)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.registry_id.0)
            .bind(&e.label)
            .bind(&e.url)
            .bind(enum_str(&e.registry_type))
            .bind(e.insecure)
            .bind(enum_str(&e.auth_kind))
            .bind(sealed_json(&e.credential))
            .bind(sealed_json(&e.webhook_secret))
            .bind(&e.visibility)
            .bind(&e.ca_pem)
            .bind(e.scan_interval_secs.map(|v| v as i64))
            .bind(e.repositories.iter().map(|r| r.to_string()).collect::<Vec<_>>())
            .bind(&env.actor)
            .bind(at)
            .bind(seq as i64)
            .bind(&e.auth_hosts)
            .bind(e.report_pulls)
            .bind(&e.proxy_url)
            .bind(&e.no_proxy)
            .bind(&e.artifact_registry)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryUpdated(e) => {
            if !newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            let changes_connection = e.url.is_some()
                || e.insecure.is_some()
                || e.ca_pem.is_some()
                || e.registry_type.is_some()
                || e.auth_kind.is_some()
                || e.auth_hosts.is_some()
                || e.proxy_url.is_some()
                || e.no_proxy.is_some()
                || e.artifact_registry.is_some();
            sqlx::query(
                "UPDATE registries SET
                    label = COALESCE($2, label),
                    url = COALESCE($3, url),
                    insecure = COALESCE($4, insecure),
                    visibility = COALESCE($5, visibility),
                    ca_pem = CASE WHEN $6 THEN $7 ELSE ca_pem END,
                    scan_interval_secs = COALESCE($8, scan_interval_secs),
                    repositories = COALESCE($9, repositories),
                    status = CASE WHEN $10 THEN 'pending' ELSE status END,
                    auth_hosts = COALESCE($11, auth_hosts),
                    registry_type = COALESCE($12, registry_type),
                    auth_kind = COALESCE($13, auth_kind),
                    credential = CASE WHEN $13 IS NULL THEN credential ELSE $14 END,
                    report_pulls = COALESCE($15, report_pulls),
                    proxy_url = CASE WHEN $16 THEN $17 ELSE proxy_url END,
                    no_proxy = COALESCE($18, no_proxy),
                    artifact_registry = CASE WHEN $19 THEN $20 ELSE artifact_registry END
                 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(&e.label)
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
            .bind(changes_connection)
            .bind(&e.auth_hosts)
            .bind(e.registry_type.as_ref().map(enum_str))
            .bind(e.auth_kind.as_ref().map(enum_str))
            .bind(sealed_json(&e.credential))
            .bind(e.report_pulls)
            .bind(e.proxy_url.is_some())
            .bind(e.proxy_url.clone().flatten())
            .bind(&e.no_proxy)
            .bind(e.artifact_registry.is_some())
            .bind(e.artifact_registry.clone().flatten())
            .execute(&mut **tx)
            .await?;
            touch(tx, e.registry_id, seq, at).await?;
        }
        EventPayload::RegistryCredentialsRotated(e) => {
            if !newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "UPDATE registries SET auth_kind = $2, credential = $3, status = 'pending',
                    webhook_secret = COALESCE($4, webhook_secret) WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(enum_str(&e.auth_kind))
            .bind(sealed_json(&e.credential))
            .bind(sealed_json(&e.webhook_secret))
            .execute(&mut **tx)
            .await?;
            touch(tx, e.registry_id, seq, at).await?;
        }
        EventPayload::RegistryValidated(e) => {
            if !newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "UPDATE registries SET status = 'validated', status_reason = NULL, status_detail = NULL,
                    auth_scheme = $2, catalog_access = $3, validated_at = $4 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(&e.auth_scheme)
            .bind(e.catalog_access)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            touch(tx, e.registry_id, seq, at).await?;
        }
        EventPayload::RegistryValidationFailed(e) => {
            if !newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            sqlx::query(
                "UPDATE registries SET status = 'validation_failed', status_reason = $2,
                    status_detail = $3, validated_at = $4 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(enum_str(&e.reason))
            .bind(&e.detail)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            touch(tx, e.registry_id, seq, at).await?;
        }
        EventPayload::RegistryRemoved(e) => {
            if !newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            // The sealed values are dead once the data key is shredded; drop them anyway.
            sqlx::query(
                "UPDATE registries SET removed_at = $2, credential = NULL, webhook_secret = NULL WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM rules WHERE registry_id = $1")
                .bind(e.registry_id.0)
                .execute(&mut **tx)
                .await?;
            touch(tx, e.registry_id, seq, at).await?;
        }
        EventPayload::SyncStarted(e) => {
            sync_state(tx, e.registry_id, seq, "running", at, None).await?;
        }
        EventPayload::SyncCompleted(e) => {
            let state = if e.partial { "partial" } else { "completed" };
            let summary = serde_json::to_value(e).ok();
            sync_state(tx, e.registry_id, seq, state, at, summary).await?;
        }
        EventPayload::SyncFailed(e) => {
            let summary = serde_json::json!({"reason": e.reason});
            sync_state(tx, e.registry_id, seq, "failed", at, Some(summary)).await?;
        }
        EventPayload::RuleSet(e) => {
            if !rules_newer(tx, e.registry_id, seq).await? {
                return Ok(());
            }
            let body = serde_json::to_value(e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO rules (registry_id, rule_id, body, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (registry_id, rule_id) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at",
            )
            .bind(e.registry_id.0)
            .bind(e.rule_id.as_str())
            .bind(body)
            .bind(at)
            .execute(&mut **tx)
            .await?;
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
        }
        _ => {}
    }
    Ok(())
}

async fn sync_state(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
    state: &str,
    at: DateTime<Utc>,
    summary: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE registries SET last_sync_state = $3, last_sync_at = $4,
            last_sync_summary = COALESCE($5, last_sync_summary), sync_sequence = $2,
            last_sync_started_sequence = CASE WHEN $3 = 'running' THEN $2
                                              ELSE last_sync_started_sequence END
         WHERE id = $1 AND sync_sequence < $2",
    )
    .bind(id.0)
    .bind(seq as i64)
    .bind(state)
    .bind(at)
    .bind(summary)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The event is newer than what the registry row has seen (and the row exists).
async fn newer(
    tx: &mut Transaction<'_, Postgres>,
    id: RegistryId,
    seq: u64,
) -> Result<bool, StoreError> {
    Ok(registry_seq(tx, id).await?.is_some_and(|last| seq > last))
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

/// The aggregates this service projects.
pub fn is_ours(env: &Envelope) -> bool {
    use imagelib_events::Aggregate;
    matches!(
        env.payload.aggregate(),
        Aggregate::Registry | Aggregate::Rule
    )
}
