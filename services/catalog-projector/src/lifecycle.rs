//! Lifecycle previews (issue 14): a rule's retention policy evaluated, as a dry run, over the
//! rule's tags in the catalog. Nothing is ever deleted — imagelib has no credentials that
//! could, and the preview is a read of the projection like any other.
//!
//! The semantics (which tags a policy keeps, why, what deleting the others frees) are
//! `imagelib_rules::lifecycle`'s, shared with the validation of the policy; this module
//! gathers the catalog's facts for it:
//! - the rule as last set (`rules.body`, the whole `rule.set`, so its `retention` too);
//! - the current tags of the registry's repositories the rule matches, with their digest and
//!   size;
//! - **pushed**: the image's `created` time when it has a plausible one (on or after
//!   [`PLAUSIBLE_SINCE`] and not after imagelib first saw the tag at its digest), else when
//!   imagelib first saw the tag at its digest (`tag_versions.valid_from`): `created` is known
//!   from the first scan on, whereas a registry imagelib starts watching would otherwise
//!   look pushed all at once; reproducible builds (epoch or no `created`) fall back;
//! - **pulled**: the latest `image.pulls_counted` of the tag's digest, under any tag or by
//!   digest (`pulls`), from registries that report pulls;
//! - **protected**: used by a deployment that is not deleted (of the tag or of its digest),
//!   approved for its digest, or carrying a protected HM tag (its own or its repository's).

use chrono::{DateTime, NaiveDate, Utc};
use imagelib_events::event::RuleSet;
use imagelib_events::{RegistryId, RepositoryName, RuleId, Tag};
use imagelib_rules::lifecycle::{Preview, TagFacts, preview};
use imagelib_rules::{CompiledRetention, CompiledRule, RuleError};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A `created` time before this is not believed (reproducible builds write the epoch).
pub const PLAUSIBLE_SINCE: &str = "2000-01-01";

/// Why a preview could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("registry {0} not found")]
    RegistryNotFound(RegistryId),
    #[error("registry {registry} has no rule `{rule}`")]
    RuleNotFound { registry: RegistryId, rule: RuleId },
    #[error(
        "rule `{0}` has no retention policy: set `retention` on the rule \
         (PUT /v1/registries/{{id}}/rules/{0}) to preview one"
    )]
    NoRetention(RuleId),
    /// A stored rule that no longer compiles (a limit tightened since it was set).
    #[error("rule `{rule}` no longer compiles: {error}")]
    Invalid { rule: RuleId, error: RuleError },
    #[error("the stored rule `{rule}` cannot be read: {error}")]
    Stored {
        rule: RuleId,
        error: serde_json::Error,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The registry a preview is about, as the catalog shows it.
#[derive(Debug, Clone)]
pub struct RegistryFacts {
    pub id: Uuid,
    pub label: String,
    /// `host[:port][/namespace]`, without scheme.
    pub url: String,
    pub insecure: bool,
    pub visibility: Vec<String>,
}

/// Where each tag's push time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushedFrom {
    Created,
    FirstSeen,
}

impl PushedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            PushedFrom::Created => "created",
            PushedFrom::FirstSeen => "first_seen",
        }
    }
}

/// A preview with everything needed to show it.
#[derive(Debug)]
pub struct Evaluated {
    pub registry: RegistryFacts,
    pub rule: RuleSet,
    pub tags: Vec<TagFacts>,
    /// Per tag (same index): where its push time comes from.
    pub pushed_from: Vec<PushedFrom>,
    pub preview: Preview,
    pub evaluated_at: DateTime<Utc>,
}

/// The registry, when it exists and is not removed (visibility is the caller's to check).
pub async fn registry(pool: &PgPool, id: RegistryId) -> Result<RegistryFacts, LifecycleError> {
    let row = sqlx::query(
        "SELECT id, label, url, insecure, visibility FROM registries
         WHERE id = $1 AND removed_at IS NULL",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?
    .ok_or(LifecycleError::RegistryNotFound(id))?;
    Ok(RegistryFacts {
        id: row.try_get(0)?,
        label: row.try_get(1)?,
        url: row.try_get(2)?,
        insecure: row.try_get(3)?,
        visibility: row.try_get(4)?,
    })
}

/// Evaluates the retention policy of `rule` over its tags (of `repository` only, when
/// given) at `now`.
pub async fn evaluate(
    pool: &PgPool,
    registry: RegistryFacts,
    rule_id: &RuleId,
    repository: Option<&RepositoryName>,
    now: DateTime<Utc>,
) -> Result<Evaluated, LifecycleError> {
    let registry_id = RegistryId(registry.id);
    let body: serde_json::Value =
        sqlx::query_scalar("SELECT body FROM rules WHERE registry_id = $1 AND rule_id = $2")
            .bind(registry.id)
            .bind(rule_id.as_str())
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| LifecycleError::RuleNotFound {
                registry: registry_id,
                rule: rule_id.clone(),
            })?;
    let rule: RuleSet = serde_json::from_value(body).map_err(|error| LifecycleError::Stored {
        rule: rule_id.clone(),
        error,
    })?;
    let invalid = |error| LifecycleError::Invalid {
        rule: rule_id.clone(),
        error,
    };
    let policy = rule
        .retention
        .as_ref()
        .ok_or_else(|| LifecycleError::NoRetention(rule_id.clone()))?;
    let compiled = CompiledRule::compile(&rule).map_err(invalid)?;
    let retention = CompiledRetention::compile(policy, "/retention").map_err(invalid)?;

    // The repositories the rule matches: names are matched here, with the rule's own
    // matchers, not in SQL.
    let repositories: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, name FROM repositories
         WHERE registry_id = $1 AND tag_count > 0 AND ($2::text IS NULL OR name = $2)",
    )
    .bind(registry.id)
    .bind(repository.map(RepositoryName::as_str))
    .fetch_all(pool)
    .await?;
    let matched: Vec<Uuid> = repositories
        .into_iter()
        .filter(|(_, name)| {
            name.parse::<RepositoryName>()
                .is_ok_and(|n| compiled.matches_repository(&n))
        })
        .map(|(id, _)| id)
        .collect();

    let rows = sqlx::query(
        "SELECT t.repository, t.tag, t.digest, t.size, t.created, t.valid_from,
                t.approval = 'approved',
                ARRAY(SELECT DISTINCT h FROM unnest(t.hm_tags || r.hm_tags) AS h ORDER BY h),
                (SELECT max(p.last_pulled_at) FROM pulls p
                  WHERE p.repo_id = t.repo_id AND p.digest = t.digest),
                ARRAY(SELECT DISTINCT d.namespace || '/' || d.name FROM deployments d
                      WHERE d.repo_id = t.repo_id AND d.status <> 'deleted'
                        AND (d.digest = t.digest OR d.tag = t.tag)
                      ORDER BY 1)
         FROM tag_versions t JOIN repositories r ON r.id = t.repo_id
         WHERE t.valid_to IS NULL AND t.repo_id = ANY($1)
         ORDER BY t.repository, t.tag",
    )
    .bind(&matched)
    .fetch_all(pool)
    .await?;
    let plausible_since = NaiveDate::parse_from_str(PLAUSIBLE_SINCE, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or_default();
    let mut tags = Vec::with_capacity(rows.len());
    let mut pushed_from = Vec::with_capacity(rows.len());
    for row in rows {
        let repository: String = row.try_get(0)?;
        let tag: String = row.try_get(1)?;
        // The projection only stores names that parsed; a row that does not is skipped
        // rather than failing the preview.
        let (Ok(repository), Ok(tag)) = (repository.parse::<RepositoryName>(), tag.parse::<Tag>())
        else {
            continue;
        };
        let size: i64 = row.try_get(3)?;
        let created: Option<DateTime<Utc>> = row.try_get(4)?;
        let first_seen: DateTime<Utc> = row.try_get(5)?;
        let (pushed_at, from) = match created {
            Some(c) if c >= plausible_since && c <= first_seen => (c, PushedFrom::Created),
            _ => (first_seen, PushedFrom::FirstSeen),
        };
        let approved: Option<bool> = row.try_get(6)?;
        tags.push(TagFacts {
            repository,
            tag,
            digest: row.try_get(2)?,
            size: u64::try_from(size).unwrap_or(0),
            pushed_at,
            last_pulled_at: row.try_get(8)?,
            deployments: row.try_get(9)?,
            approved: approved.unwrap_or(false),
            hm_tags: row.try_get(7)?,
        });
        pushed_from.push(from);
    }
    let preview = preview(&compiled, &retention, &tags, now);
    Ok(Evaluated {
        registry,
        rule,
        tags,
        pushed_from,
        preview,
        evaluated_at: now,
    })
}
