//! serving-deployer's projection: what it needs to decide and to show, from the stream.
//!
//! Like every projection here, [`Store::apply`] is idempotent per aggregate so command
//! handlers (read-your-writes) and the durable consumers can both apply an event.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use imagelib_events::event::{DeploymentRequested, RuleSet};
use imagelib_events::model::{
    ImageKind, ManifestRef, MutationFoundBy, PolicyFinding, PolicyReason, PolicyVerdict,
    ViolationStage,
};
use imagelib_events::{Aggregate, DeploymentId, Envelope, EventPayload, ImageId, RegistryId};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;

/// At most this many findings of one verdict or violation are kept (each reason appears
/// once, so a well-formed verdict has at most [`PolicyReason::ALL`]`.len()`).
pub const MAX_FINDINGS: usize = 32;
/// The violations shown on one deployment: its most recent ones.
pub const MAX_VIOLATIONS_SHOWN: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct RegistryRow {
    pub id: RegistryId,
    pub label: String,
    pub url: String,
    pub visibility: Vec<String>,
    pub removed: bool,
}

impl RegistryRow {
    /// `host[:port]`: where images of this registry are pulled from.
    pub fn host(&self) -> &str {
        self.url.split('/').next().unwrap_or(&self.url)
    }
}

#[derive(Debug, Clone)]
pub struct TagRow {
    pub registry_id: RegistryId,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub kind: ImageKind,
    pub model_type: Option<String>,
    pub media_type: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub annotations: serde_json::Map<String, serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

/// One step of a deployment's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub state: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub sequence: u64,
}

/// The latest trust verdict of a digest, as the scanner published it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRow {
    pub verdict: PolicyVerdict,
    pub reasons: Vec<PolicyReason>,
    pub findings: Vec<PolicyFinding>,
    /// The rule whose policy was applied.
    pub policy: Option<String>,
    /// The stream sequence at which it turned fail/audit from pass or from no verdict.
    pub violated_since: Option<u64>,
    pub last_sequence: u64,
}

/// A `deployment.policy_violated` recorded on a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PolicyViolation {
    /// `audited` (deployed anyway under an audit policy) or `running` (a new verdict made
    /// the running image fail; left running).
    #[schema(value_type = String)]
    pub stage: ViolationStage,
    pub digest: String,
    /// `unsigned`, `signature_invalid`, `signer_not_trusted`, `severity_above_limit`,
    /// `cve_not_allowed`, `no_sbom`, `no_vulnerability_report`.
    #[schema(value_type = Vec<String>)]
    pub reasons: Vec<PolicyReason>,
    /// Each reason with what was seen: `{"reason": …, "detail": …}`.
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<PolicyFinding>,
    /// The rule whose trust policy was violated.
    pub policy: Option<String>,
    pub at: DateTime<Utc>,
    pub sequence: u64,
}

#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub id: DeploymentId,
    pub name: String,
    pub namespace: String,
    pub state: String,
    pub reason: Option<String>,
    pub request: DeploymentRequested,
    pub manifests: Vec<ManifestRef>,
    pub revision: Option<String>,
    pub history: Vec<HistoryEntry>,
    pub registry_removed: bool,
    pub requested_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_sequence: u64,
    /// The sequence of its latest `deployment.requested`.
    pub requested_sequence: u64,
    /// Its most recent policy violations, oldest first.
    pub policy_violations: Vec<PolicyViolation>,
    /// What is wrong with it now without it having changed (read from the view, never an
    /// event): its tag was mutated away from the digest it pins.
    pub flags: Vec<DeploymentFlag>,
}

/// A condition of a deployment worth a look, computed from the view when it is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeploymentFlag {
    /// The deployment pins a digest its tag was moved away from by a mutation (the tag is
    /// immutable by policy, yet points elsewhere now). It keeps running what it ran.
    TagMutated {
        tag: String,
        /// The digest the tag pointed at before: the one the deployment pins.
        old_digest: String,
        /// The digest the mutation moved the tag to.
        new_digest: String,
        /// Where the tag points now (absent when it was removed since).
        current_digest: Option<String>,
        /// `scan`, `webhook`, `deploy` or `sweep`.
        found_by: String,
        seen_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
}

/// An `image.tag_mutated` as the view keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MutationRow {
    pub tag: String,
    pub old_digest: String,
    pub new_digest: String,
    pub found_by: String,
    pub seen_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    pub sequence: u64,
}

fn mutation_row(r: &sqlx::postgres::PgRow) -> Result<MutationRow, StoreError> {
    Ok(MutationRow {
        tag: r.try_get("tag")?,
        old_digest: r.try_get("old_digest")?,
        new_digest: r.try_get("new_digest")?,
        found_by: r.try_get("found_by")?,
        seen_at: r.try_get("seen_at")?,
        at: r.try_get("at")?,
        sequence: r.try_get::<i64, _>("sequence")?.max(0) as u64,
    })
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl DeploymentRow {
    fn from_row(r: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        Ok(DeploymentRow {
            id: DeploymentId(r.try_get("id")?),
            name: r.try_get("name")?,
            namespace: r.try_get("namespace")?,
            state: r.try_get("state")?,
            reason: r.try_get("reason")?,
            request: serde_json::from_value(r.try_get("request")?).map_err(corrupt)?,
            manifests: serde_json::from_value(r.try_get("manifests")?).map_err(corrupt)?,
            revision: r.try_get("revision")?,
            history: serde_json::from_value(r.try_get("history")?).map_err(corrupt)?,
            registry_removed: r.try_get("registry_removed")?,
            requested_by: r.try_get("requested_by")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            last_sequence: r.try_get::<i64, _>("last_sequence")? as u64,
            requested_sequence: r.try_get::<i64, _>("requested_sequence")?.max(0) as u64,
            policy_violations: Vec::new(),
            flags: Vec::new(),
        })
    }
}

fn verdict_str(v: PolicyVerdict) -> &'static str {
    match v {
        PolicyVerdict::Pass => "pass",
        PolicyVerdict::Fail => "fail",
        PolicyVerdict::Audit => "audit",
    }
}

fn parse_verdict(s: &str) -> Result<PolicyVerdict, StoreError> {
    match s {
        "pass" => Ok(PolicyVerdict::Pass),
        "fail" => Ok(PolicyVerdict::Fail),
        "audit" => Ok(PolicyVerdict::Audit),
        other => Err(StoreError::Corrupt(format!("verdict `{other}`"))),
    }
}

fn stage_str(s: ViolationStage) -> &'static str {
    match s {
        ViolationStage::Audited => "audited",
        ViolationStage::Running => "running",
    }
}

fn parse_stage(s: &str) -> Result<ViolationStage, StoreError> {
    match s {
        "audited" => Ok(ViolationStage::Audited),
        "running" => Ok(ViolationStage::Running),
        other => Err(StoreError::Corrupt(format!("violation stage `{other}`"))),
    }
}

/// Each reason once, in the order given.
pub fn dedup_reasons(reasons: &[PolicyReason]) -> Vec<PolicyReason> {
    let mut out: Vec<PolicyReason> = Vec::with_capacity(PolicyReason::ALL.len());
    for r in reasons {
        if !out.contains(r) {
            out.push(*r);
        }
    }
    out
}

/// At most [`MAX_FINDINGS`] findings, each detail at most [`PolicyFinding::MAX_DETAIL`]
/// characters: a verdict comes from the stream and is not trusted to be small.
pub fn bound_findings(findings: &[PolicyFinding]) -> Vec<PolicyFinding> {
    findings
        .iter()
        .take(MAX_FINDINGS)
        .map(|f| PolicyFinding {
            reason: f.reason,
            detail: f
                .detail
                .chars()
                .filter(|c| !c.is_control())
                .take(PolicyFinding::MAX_DETAIL)
                .collect(),
        })
        .collect()
}

fn verdict_row(r: &sqlx::postgres::PgRow) -> Result<VerdictRow, StoreError> {
    Ok(VerdictRow {
        verdict: parse_verdict(&r.try_get::<String, _>("verdict")?)?,
        reasons: serde_json::from_value(r.try_get("reasons")?).map_err(corrupt)?,
        findings: serde_json::from_value(r.try_get("findings")?).map_err(corrupt)?,
        policy: r.try_get("policy")?,
        violated_since: r
            .try_get::<Option<i64>, _>("violated_since")?
            .map(|v| v.max(0) as u64),
        last_sequence: r.try_get::<i64, _>("last_sequence")?.max(0) as u64,
    })
}

fn violation_row(r: &sqlx::postgres::PgRow) -> Result<PolicyViolation, StoreError> {
    Ok(PolicyViolation {
        stage: parse_stage(&r.try_get::<String, _>("stage")?)?,
        digest: r.try_get("digest")?,
        reasons: serde_json::from_value(r.try_get("reasons")?).map_err(corrupt)?,
        findings: serde_json::from_value(r.try_get("findings")?).map_err(corrupt)?,
        policy: r.try_get("policy")?,
        at: r.try_get("at")?,
        sequence: r.try_get::<i64, _>("sequence")?.max(0) as u64,
    })
}

fn found_by_str(f: MutationFoundBy) -> &'static str {
    match f {
        MutationFoundBy::Scan => "scan",
        MutationFoundBy::Webhook => "webhook",
        MutationFoundBy::Deploy => "deploy",
        MutationFoundBy::Sweep => "sweep",
    }
}

fn kind_str(k: ImageKind) -> &'static str {
    k.as_str()
}

fn parse_kind(s: &str) -> ImageKind {
    match s {
        "database" => ImageKind::Database,
        "model" => ImageKind::Model,
        _ => ImageKind::Other,
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Signalled after a consumed `image.policy_evaluated` is applied: the policy watch
    /// looks for running deployments it turned.
    verdicts_changed: Arc<Notify>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store {
            pool,
            verdicts_changed: Arc::new(Notify::new()),
        }
    }

    pub fn verdicts_changed(&self) -> &Arc<Notify> {
        &self.verdicts_changed
    }

    /// The latest verdict of `digest` in `repository`.
    pub async fn verdict(
        &self,
        registry: RegistryId,
        repository: &str,
        digest: &str,
    ) -> Result<Option<VerdictRow>, StoreError> {
        let r = sqlx::query(
            "SELECT * FROM policy_verdicts WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        )
        .bind(registry.0)
        .bind(repository)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(verdict_row).transpose()
    }

    /// A registry's rules as last set, in rule-id order; a stored rule that no longer
    /// parses is skipped (and logged).
    pub async fn rules(&self, registry: RegistryId) -> Result<Vec<RuleSet>, StoreError> {
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT rule_id, rule FROM rules WHERE registry_id = $1 ORDER BY rule_id",
        )
        .bind(registry.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, v)| match serde_json::from_value(v) {
                Ok(rule) => Some(rule),
                Err(e) => {
                    tracing::warn!(rule = %id, error = %e, "stored rule does not parse; ignored");
                    None
                }
            })
            .collect())
    }

    /// The deployments with their latest violations and their flags.
    async fn with_violations(
        &self,
        mut rows: Vec<DeploymentRow>,
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        if rows.is_empty() {
            return Ok(rows);
        }
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id.0).collect();
        let found = sqlx::query(
            "SELECT * FROM (
                SELECT v.*, row_number() OVER (PARTITION BY deployment_id ORDER BY sequence DESC) AS n
                FROM deployment_violations v WHERE deployment_id = ANY($1)
             ) x WHERE n <= $2 ORDER BY deployment_id, sequence",
        )
        .bind(&ids)
        .bind(MAX_VIOLATIONS_SHOWN)
        .fetch_all(&self.pool)
        .await?;
        for r in &found {
            let id: uuid::Uuid = r.try_get("deployment_id")?;
            let v = violation_row(r)?;
            if let Some(row) = rows.iter_mut().find(|d| d.id.0 == id) {
                row.policy_violations.push(v);
            }
        }
        // A tag mutated away from the pinned digest, and not back: the latest such mutation.
        let mutated = sqlx::query(
            "SELECT DISTINCT ON (d.id) d.id, m.*, t.digest AS current_digest
             FROM deployments d
             JOIN tag_mutations m ON m.registry_id = d.registry_id AND m.repository = d.repository
                AND m.tag = d.tag AND m.old_digest = d.digest
             LEFT JOIN tags t ON t.registry_id = d.registry_id AND t.repository = d.repository
                AND t.tag = d.tag
             WHERE d.id = ANY($1) AND d.state <> 'deleted' AND t.digest IS DISTINCT FROM d.digest
             ORDER BY d.id, m.sequence DESC",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        for r in &mutated {
            let id: uuid::Uuid = r.try_get("id")?;
            let m = mutation_row(r)?;
            let flag = DeploymentFlag::TagMutated {
                tag: m.tag,
                old_digest: m.old_digest,
                new_digest: m.new_digest,
                current_digest: r.try_get("current_digest")?,
                found_by: m.found_by,
                seen_at: m.seen_at,
                at: m.at,
            };
            if let Some(row) = rows.iter_mut().find(|d| d.id.0 == id) {
                row.flags.push(flag);
            }
        }
        Ok(rows)
    }

    /// The latest mutation that moved `tag` to `digest`: `digest` came into the tag by a
    /// mutation, so it waits for a curator's approval.
    pub async fn mutation_into(
        &self,
        registry: RegistryId,
        repository: &str,
        tag: &str,
        digest: &str,
    ) -> Result<Option<MutationRow>, StoreError> {
        let r = sqlx::query(
            "SELECT * FROM tag_mutations WHERE registry_id = $1 AND repository = $2 AND tag = $3
                AND new_digest = $4 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(registry.0)
        .bind(repository)
        .bind(tag)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(mutation_row).transpose()
    }

    /// The digests `tag` pointed at before a mutation moved it away, newest first.
    pub async fn mutated_from(
        &self,
        registry: RegistryId,
        repository: &str,
        tag: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT old_digest, max(sequence) FROM tag_mutations
             WHERE registry_id = $1 AND repository = $2 AND tag = $3
             GROUP BY old_digest ORDER BY 2 DESC",
        )
        .bind(registry.0)
        .bind(repository)
        .bind(tag)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(d, _)| d).collect())
    }

    /// The tags of a repository whose current digest came in by a mutation and is not
    /// approved (the image catalog leaves them out, like the deploy gate refuses them).
    pub async fn unapproved_mutated_tags(
        &self,
        registry: RegistryId,
        repository: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT t.tag FROM tags t
             WHERE t.registry_id = $1 AND t.repository = $2
               AND EXISTS (SELECT 1 FROM tag_mutations m WHERE m.registry_id = t.registry_id
                    AND m.repository = t.repository AND m.tag = t.tag AND m.new_digest = t.digest)
               AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.registry_id = t.registry_id
                    AND a.repository = t.repository AND a.tag = t.tag AND a.digest = t.digest
                    AND a.approved)",
        )
        .bind(registry.0)
        .bind(repository)
        .fetch_all(&self.pool)
        .await?;
        Ok(tags.into_iter().collect())
    }

    /// Whether a curator approved `digest` of `tag` itself: the tag's latest decision is an
    /// approval pinned to that digest (a repository decision names no digest, so it does
    /// not vouch for content that came in by a mutation).
    pub async fn digest_approved(
        &self,
        registry: RegistryId,
        repository: &str,
        tag: &str,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<bool> = sqlx::query_scalar(
            "SELECT approved FROM approvals WHERE registry_id = $1 AND repository = $2 AND tag = $3
                AND digest = $4",
        )
        .bind(registry.0)
        .bind(repository)
        .bind(tag)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found == Some(true))
    }

    /// Running deployments (applied) whose digest turned fail/audit after they were
    /// requested, with no violation recorded on them since: each needs a `running`
    /// `deployment.policy_violated`.
    pub async fn newly_violated(
        &self,
        limit: i64,
    ) -> Result<Vec<(DeploymentRow, VerdictRow)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, v.verdict, v.reasons, v.findings, v.policy, v.violated_since, v.last_sequence AS verdict_sequence
             FROM deployments d
             JOIN policy_verdicts v
               ON v.registry_id = d.registry_id AND v.repository = d.repository AND v.digest = d.digest
             WHERE d.state = 'applied' AND v.violated_since IS NOT NULL
               AND v.violated_since > d.requested_sequence
               AND NOT EXISTS (SELECT 1 FROM deployment_violations x
                   WHERE x.deployment_id = d.id AND x.digest = d.digest AND x.sequence > v.violated_since)
             ORDER BY d.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let verdict = VerdictRow {
                verdict: parse_verdict(&r.try_get::<String, _>("verdict")?)?,
                reasons: serde_json::from_value(r.try_get("reasons")?).map_err(corrupt)?,
                findings: serde_json::from_value(r.try_get("findings")?).map_err(corrupt)?,
                policy: r.try_get("policy")?,
                violated_since: r
                    .try_get::<Option<i64>, _>("violated_since")?
                    .map(|v| v.max(0) as u64),
                last_sequence: r.try_get::<i64, _>("verdict_sequence")?.max(0) as u64,
            };
            if let Some(d) = self.deployment(DeploymentId(r.try_get("id")?)).await? {
                out.push((d, verdict));
            }
        }
        Ok(out)
    }

    pub async fn registry(&self, id: RegistryId) -> Result<Option<RegistryRow>, StoreError> {
        let r = sqlx::query("SELECT * FROM registries WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| -> Result<_, StoreError> {
            Ok(RegistryRow {
                id: RegistryId(r.try_get("id")?),
                label: r.try_get("label")?,
                url: r.try_get("url")?,
                visibility: r.try_get("visibility")?,
                removed: r.try_get("removed")?,
            })
        })
        .transpose()
    }

    pub async fn tag(
        &self,
        registry: RegistryId,
        repository: &str,
        tag: &str,
    ) -> Result<Option<TagRow>, StoreError> {
        let r = sqlx::query(
            "SELECT * FROM tags WHERE registry_id = $1 AND repository = $2 AND tag = $3",
        )
        .bind(registry.0)
        .bind(repository)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(tag_row).transpose()
    }

    pub async fn tags_of(
        &self,
        registry: RegistryId,
        repository: &str,
    ) -> Result<Vec<TagRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM tags WHERE registry_id = $1 AND repository = $2 ORDER BY tag",
        )
        .bind(registry.0)
        .bind(repository)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tag_row).collect()
    }

    /// The repository of an image id (the catalog's id for it).
    pub async fn repository_of(
        &self,
        image: ImageId,
    ) -> Result<Option<(RegistryId, String)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT DISTINCT registry_id, repository FROM tags")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().find_map(|(r, repo)| {
            let reg = RegistryId(r);
            let name = repo.parse().ok()?;
            (ImageId::derive(reg, &name) == image).then_some((reg, repo))
        }))
    }

    /// Whether the tag (at `digest`) is approved: a tag decision pinned to this digest, or
    /// a repository decision; a rejection wins over an approval at the same level.
    pub async fn approved(
        &self,
        registry: RegistryId,
        repository: &str,
        tag: &str,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let rows: Vec<(String, Option<String>, bool)> = sqlx::query_as(
            "SELECT tag, digest, approved FROM approvals WHERE registry_id = $1 AND repository = $2 AND (tag = $3 OR tag = '')",
        )
        .bind(registry.0)
        .bind(repository)
        .bind(tag)
        .fetch_all(&self.pool)
        .await?;
        let tag_level = rows
            .iter()
            .find(|(t, d, _)| t == tag && d.as_deref().is_none_or(|d| d == digest));
        if let Some((_, _, approved)) = tag_level {
            return Ok(*approved);
        }
        Ok(rows
            .iter()
            .any(|(t, _, approved)| t.is_empty() && *approved))
    }

    pub async fn deployment(&self, id: DeploymentId) -> Result<Option<DeploymentRow>, StoreError> {
        let r = sqlx::query("SELECT * FROM deployments WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        let row = r.as_ref().map(DeploymentRow::from_row).transpose()?;
        Ok(self.with_violations(row.into_iter().collect()).await?.pop())
    }

    /// Deployments ordered by id, after `after`, at most `limit`.
    pub async fn deployments(
        &self,
        after: Option<DeploymentId>,
        limit: i64,
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM deployments WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(after.map(|a| a.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(DeploymentRow::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.with_violations(rows).await
    }

    /// Deployments stuck in `requested` since before `before` (a crash between the request
    /// and its rendering).
    pub async fn stalled(&self, before: DateTime<Utc>) -> Result<Vec<DeploymentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM deployments WHERE state = 'requested' AND updated_at < $1 ORDER BY id",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(DeploymentRow::from_row).collect()
    }

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

    fn applied(&self, events: &[(u64, &Envelope)]) {
        if events
            .iter()
            .any(|(_, env)| matches!(env.payload, EventPayload::PolicyEvaluated(_)))
        {
            self.verdicts_changed.notify_one();
        }
    }
}

fn tag_row(r: &sqlx::postgres::PgRow) -> Result<TagRow, StoreError> {
    let obj = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => m,
        _ => Default::default(),
    };
    Ok(TagRow {
        registry_id: RegistryId(r.try_get("registry_id")?),
        repository: r.try_get("repository")?,
        tag: r.try_get("tag")?,
        digest: r.try_get("digest")?,
        kind: parse_kind(&r.try_get::<String, _>("kind")?),
        model_type: r.try_get("model_type")?,
        media_type: r.try_get("media_type")?,
        labels: obj(r.try_get("labels")?),
        annotations: obj(r.try_get("annotations")?),
        updated_at: r.try_get("updated_at")?,
    })
}

/// Advance an aggregate's recorded sequence; false when `seq` was already applied.
async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    aggregate: Aggregate,
    id: uuid::Uuid,
    seq: u64,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "INSERT INTO aggregate_sequences (aggregate, id, last_sequence) VALUES ($1, $2, $3)
         ON CONFLICT (aggregate, id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence
         WHERE aggregate_sequences.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(aggregate.as_str())
    .bind(id)
    .bind(seq as i64)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

async fn history(
    tx: &mut Transaction<'_, Postgres>,
    id: DeploymentId,
    entry: HistoryEntry,
    state: &str,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let entry = serde_json::to_value(vec![entry]).map_err(corrupt)?;
    sqlx::query(
        "UPDATE deployments SET state = $2, reason = $3, history = history || $4::jsonb, updated_at = now() WHERE id = $1",
    )
    .bind(id.0)
    .bind(state)
    .bind(reason)
    .bind(entry)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    seq: u64,
    env: &Envelope,
) -> Result<(), StoreError> {
    let p = &env.payload;
    if !advance(tx, p.aggregate(), p.aggregate_id(), seq).await? {
        return Ok(());
    }
    let at = env.time;
    let entry = |state: &str, detail: Option<String>| HistoryEntry {
        state: state.to_owned(),
        at,
        detail,
        sequence: seq,
    };
    match p {
        EventPayload::RegistryRegistered(e) => {
            sqlx::query(
                "INSERT INTO registries (id, label, url, visibility, last_sequence) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.registry_id.0)
            .bind(&e.label)
            .bind(&e.url)
            .bind(&e.visibility)
            .bind(seq as i64)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryUpdated(e) => {
            sqlx::query(
                "UPDATE registries SET label = COALESCE($2, label), url = COALESCE($3, url), visibility = COALESCE($4, visibility) WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(&e.label)
            .bind(&e.url)
            .bind(&e.visibility)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryRemoved(e) => {
            sqlx::query("UPDATE registries SET removed = true WHERE id = $1")
                .bind(e.registry_id.0)
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE deployments SET registry_removed = true WHERE registry_id = $1")
                .bind(e.registry_id.0)
                .execute(&mut **tx)
                .await?;
        }
        EventPayload::TagDiscovered(e) => {
            upsert_tag(
                tx,
                e.registry_id,
                e.repository.as_str(),
                e.tag.as_str(),
                e.digest.as_str(),
                &e.details,
                at,
            )
            .await?;
        }
        EventPayload::TagMoved(e) => {
            upsert_tag(
                tx,
                e.registry_id,
                e.repository.as_str(),
                e.tag.as_str(),
                e.new_digest.as_str(),
                &e.details,
                at,
            )
            .await?;
        }
        EventPayload::TagRemoved(e) => {
            sqlx::query("DELETE FROM tags WHERE registry_id = $1 AND repository = $2 AND tag = $3")
                .bind(e.registry_id.0)
                .bind(e.repository.as_str())
                .bind(e.tag.as_str())
                .execute(&mut **tx)
                .await?;
        }
        EventPayload::TagMutated(e) => {
            sqlx::query(
                "INSERT INTO tag_mutations (registry_id, repository, tag, sequence, old_digest, new_digest,
                    found_by, seen_at, at)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
            )
            .bind(e.registry_id.0)
            .bind(e.repository.as_str())
            .bind(e.tag.as_str())
            .bind(seq as i64)
            .bind(e.old_digest.as_str())
            .bind(e.new_digest.as_str())
            .bind(found_by_str(e.found_by))
            .bind(e.seen_at)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::CatalogApproved(e) => {
            decide(
                tx,
                &e.target,
                e.digest.as_ref().map(|d| d.as_str()),
                true,
                &e.reason,
                at,
            )
            .await?;
        }
        EventPayload::CatalogRejected(e) => {
            decide(
                tx,
                &e.target,
                e.digest.as_ref().map(|d| d.as_str()),
                false,
                &e.reason,
                at,
            )
            .await?;
        }
        EventPayload::RuleSet(e) => {
            sqlx::query(
                "INSERT INTO rules (registry_id, rule_id, rule) VALUES ($1, $2, $3)
                 ON CONFLICT (registry_id, rule_id) DO UPDATE SET rule = EXCLUDED.rule",
            )
            .bind(e.registry_id.0)
            .bind(e.rule_id.as_str())
            .bind(serde_json::to_value(e).map_err(corrupt)?)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RuleRemoved(e) => {
            sqlx::query("DELETE FROM rules WHERE registry_id = $1 AND rule_id = $2")
                .bind(e.registry_id.0)
                .bind(e.rule_id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        EventPayload::PolicyEvaluated(e) => {
            // violated_since: set when it turns fail/audit from pass or from nothing, kept
            // while it stays fail/audit, cleared when it passes.
            sqlx::query(
                "INSERT INTO policy_verdicts (registry_id, repository, digest, verdict, reasons, findings, policy,
                    violated_since, last_sequence, updated_at)
                 VALUES ($1,$2,$3,$4,$5,$6,$7, CASE WHEN $4 = 'pass' THEN NULL ELSE $8 END, $8, $9)
                 ON CONFLICT (registry_id, repository, digest) DO UPDATE SET
                    verdict = EXCLUDED.verdict, reasons = EXCLUDED.reasons, findings = EXCLUDED.findings,
                    policy = EXCLUDED.policy,
                    violated_since = CASE
                        WHEN EXCLUDED.verdict = 'pass' THEN NULL
                        WHEN policy_verdicts.verdict = 'pass' OR policy_verdicts.violated_since IS NULL THEN EXCLUDED.last_sequence
                        ELSE policy_verdicts.violated_since END,
                    last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at
                 WHERE policy_verdicts.last_sequence < EXCLUDED.last_sequence",
            )
            .bind(e.registry_id.0)
            .bind(e.repository.as_str())
            .bind(e.digest.as_str())
            .bind(verdict_str(e.verdict))
            .bind(serde_json::to_value(dedup_reasons(&e.reasons)).map_err(corrupt)?)
            .bind(serde_json::to_value(bound_findings(&e.findings)).map_err(corrupt)?)
            .bind(e.policy.as_ref().map(|p| p.as_str()))
            .bind(seq as i64)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::DeploymentPolicyViolated(e) => {
            sqlx::query(
                "INSERT INTO deployment_violations (deployment_id, sequence, digest, stage, reasons, findings, policy, at)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (deployment_id, sequence) DO NOTHING",
            )
            .bind(e.deployment_id.0)
            .bind(seq as i64)
            .bind(e.digest.as_str())
            .bind(stage_str(e.stage))
            .bind(serde_json::to_value(dedup_reasons(&e.reasons)).map_err(corrupt)?)
            .bind(serde_json::to_value(bound_findings(&e.findings)).map_err(corrupt)?)
            .bind(e.policy.as_ref().map(|p| p.as_str()))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::DeploymentRequested(e) => {
            let request = serde_json::to_value(e).map_err(corrupt)?;
            let hist = serde_json::to_value(vec![entry("requested", None)]).map_err(corrupt)?;
            sqlx::query(
                "INSERT INTO deployments (id, name, namespace, workload, target, registry_id, repository, tag, digest,
                    request, state, history, requested_by, created_at, updated_at, last_sequence, requested_sequence)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,'requested',$11,$12,$13,$13,$14,$14)
                 ON CONFLICT (id) DO UPDATE SET
                    workload = EXCLUDED.workload, target = EXCLUDED.target, registry_id = EXCLUDED.registry_id,
                    repository = EXCLUDED.repository, tag = EXCLUDED.tag, digest = EXCLUDED.digest,
                    request = EXCLUDED.request, state = 'requested', reason = NULL,
                    history = deployments.history || EXCLUDED.history, requested_by = EXCLUDED.requested_by,
                    updated_at = EXCLUDED.updated_at, last_sequence = EXCLUDED.last_sequence,
                    requested_sequence = EXCLUDED.requested_sequence",
            )
            .bind(e.deployment_id.0)
            .bind(e.name.as_str())
            .bind(e.namespace.as_str())
            .bind(serde_json::to_value(e.workload).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .bind(serde_json::to_value(e.target).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .bind(e.image.registry_id.0)
            .bind(e.image.repository.as_str())
            .bind(e.image.tag.as_str())
            .bind(e.digest.as_str())
            .bind(request)
            .bind(hist)
            .bind(&env.actor)
            .bind(at)
            .bind(seq as i64)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE deployments d SET registry_removed = r.removed FROM registries r WHERE d.id = $1 AND r.id = d.registry_id",
            )
            .bind(e.deployment_id.0)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::DeploymentRendered(e) => {
            sqlx::query("UPDATE deployments SET manifests = $2 WHERE id = $1")
                .bind(e.deployment_id.0)
                .bind(serde_json::to_value(&e.manifests).map_err(corrupt)?)
                .execute(&mut **tx)
                .await?;
            history(
                tx,
                e.deployment_id,
                entry("rendered", None),
                "rendered",
                None,
            )
            .await?;
        }
        EventPayload::DeploymentApplied(e) => {
            sqlx::query("UPDATE deployments SET revision = $2 WHERE id = $1")
                .bind(e.deployment_id.0)
                .bind(&e.revision)
                .execute(&mut **tx)
                .await?;
            history(
                tx,
                e.deployment_id,
                entry("applied", Some(e.revision.clone())),
                "applied",
                None,
            )
            .await?;
        }
        EventPayload::DeploymentFailed(e) => {
            history(
                tx,
                e.deployment_id,
                entry("failed", Some(e.reason.clone())),
                "failed",
                Some(&e.reason),
            )
            .await?;
        }
        EventPayload::DeploymentDeleted(e) => {
            history(
                tx,
                e.deployment_id,
                entry("deleted", e.revision.clone()),
                "deleted",
                None,
            )
            .await?;
        }
        _ => {}
    }
    if p.aggregate() == Aggregate::Deployment {
        sqlx::query("UPDATE deployments SET last_sequence = $2 WHERE id = $1")
            .bind(p.aggregate_id())
            .bind(seq as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn upsert_tag(
    tx: &mut Transaction<'_, Postgres>,
    registry: RegistryId,
    repository: &str,
    tag: &str,
    digest: &str,
    d: &imagelib_events::model::ImageDetails,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tags (registry_id, repository, tag, digest, kind, model_type, media_type, labels, annotations, extensions, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
         ON CONFLICT (registry_id, repository, tag) DO UPDATE SET digest = EXCLUDED.digest, kind = EXCLUDED.kind,
            model_type = EXCLUDED.model_type, media_type = EXCLUDED.media_type, labels = EXCLUDED.labels,
            annotations = EXCLUDED.annotations, extensions = EXCLUDED.extensions, updated_at = EXCLUDED.updated_at",
    )
    .bind(registry.0)
    .bind(repository)
    .bind(tag)
    .bind(digest)
    .bind(kind_str(d.kind))
    .bind(d.model_type.map(|m| m.as_str()))
    .bind(&d.media_type)
    .bind(serde_json::to_value(&d.labels).map_err(corrupt)?)
    .bind(serde_json::to_value(&d.annotations).map_err(corrupt)?)
    .bind(serde_json::to_value(&d.extensions).map_err(corrupt)?)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn decide(
    tx: &mut Transaction<'_, Postgres>,
    target: &imagelib_events::model::CatalogTarget,
    digest: Option<&str>,
    approved: bool,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approvals (registry_id, repository, tag, digest, approved, reason, at) VALUES ($1,$2,$3,$4,$5,$6,$7)
         ON CONFLICT (registry_id, repository, tag) DO UPDATE SET digest = EXCLUDED.digest, approved = EXCLUDED.approved,
            reason = EXCLUDED.reason, at = EXCLUDED.at",
    )
    .bind(target.registry_id.0)
    .bind(target.repository.as_str())
    .bind(target.tag.as_ref().map(|t| t.as_str()).unwrap_or(""))
    .bind(digest)
    .bind(approved)
    .bind(reason)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
