//! `GET /v1/lifecycle/preview?registry=&rule=`: what a rule's retention policy would delete,
//! and why, as a dry run ([`crate::lifecycle`]). imagelib never deletes anything from a
//! registry; the CLI turns the answer into a script a person may choose to run.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagelib_events::model::RetentionTemplate;
use imagelib_events::{RegistryId, RepositoryName, RuleId};
use imagelib_platform::Problem;
use imagelib_platform::auth::Caller;
use imagelib_platform::problem::ApiQuery;
use imagelib_rules::lifecycle::{Outcome, Reason};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::curate::Catalog;
use crate::lifecycle::{Evaluated, LifecycleError};

pub fn router() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new().routes(routes!(preview))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// Registry id (required).
    registry: Option<String>,
    /// Rule id (required): its retention policy is evaluated over its tags.
    rule: Option<String>,
    /// Only this repository (one of the rule's).
    repository: Option<String>,
    /// `kept`: also list every kept tag with the reasons it is kept.
    include: Option<String>,
}

/// Why a tag is kept or would go.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonView {
    /// `deployed`, `approved`, `protected_hm_tag` (kept whatever the rules say), a template
    /// (`latest_pushed`, `latest_pulled`, `pushed_within_days`, `pulled_within_days`,
    /// `always`: what that retention rule decided), or `no_rule` (no retention rule looks at
    /// the tag).
    #[schema(value_type = String)]
    pub code: serde_json::Value,
    /// The retention rule (index in `retention.rules`) the reason comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    pub message: String,
}

impl From<&Reason> for ReasonView {
    fn from(r: &Reason) -> Self {
        ReasonView {
            code: serde_json::to_value(r.code).unwrap_or_default(),
            rule: r.rule,
            message: r.message.clone(),
        }
    }
}

/// One of the rule's tags, with the verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewTag {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// Bytes: manifest, config and layers (of every platform for an index).
    pub size: u64,
    /// When it was pushed, as far as imagelib can tell (`pushed_from` says how).
    pub pushed_at: DateTime<Utc>,
    /// `created` (the image's creation time) or `first_seen` (when imagelib first saw the
    /// tag at this digest; used when the image has no plausible creation time).
    pub pushed_from: String,
    /// The latest pull of its digest, from registries that report pulls.
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// Kept: every protection and retention rule that keeps it. Going: what each retention
    /// rule that looked at it decided, or `no_rule`.
    pub reasons: Vec<ReasonView>,
    /// Going only: whether deleting its digest frees it (no staying tag points at it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frees_digest: Option<bool>,
    /// Going only: tags that stay (kept, or not the rule's) at the same digest. Deleting
    /// the digest would delete them too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub digest_kept_by: Vec<String>,
    /// Going only: the other going tags at the same digest (one deletion removes them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub digest_shared_with: Vec<String>,
}

/// The counts of a preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewSummary {
    /// The rule's tags evaluated.
    pub tags: usize,
    pub kept: usize,
    pub going: usize,
    /// Tags of the rule's repositories its tag filters leave out: left alone.
    pub not_selected: usize,
    /// Digests every tag of which would go, and their total size: an upper bound of what
    /// the registry's garbage collection would reclaim (layers shared with kept images
    /// stay).
    pub digests_freed: usize,
    pub bytes_freed: u64,
}

/// A dry run of a rule's retention policy. Nothing is deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct LifecyclePreview {
    pub registry_id: Uuid,
    pub registry: String,
    /// `host[:port][/namespace]`, without scheme: where the Registry API calls would go.
    pub registry_url: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub rule_id: String,
    pub rule_enabled: bool,
    /// The policy evaluated, as set on the rule.
    #[schema(value_type = Object)]
    pub retention: serde_json::Value,
    pub evaluated_at: DateTime<Utc>,
    pub summary: PreviewSummary,
    /// Every tag that would go, by repository and tag.
    pub going: Vec<PreviewTag>,
    /// Every kept tag (only with `include=kept`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<PreviewTag>>,
    /// What the reader should know (pull-based rules without pull data, a disabled rule).
    pub warnings: Vec<String>,
}

fn bad(param: &str, detail: impl Into<String>) -> Problem {
    Problem::validation(param, detail)
}

impl From<LifecycleError> for Problem {
    fn from(e: LifecycleError) -> Self {
        match &e {
            LifecycleError::RegistryNotFound(_) | LifecycleError::RuleNotFound { .. } => {
                Problem::not_found(e.to_string())
            }
            LifecycleError::NoRetention(_) => {
                Problem::new(StatusCode::CONFLICT, "no-retention", e.to_string())
            }
            LifecycleError::Invalid { .. } => {
                Problem::new(StatusCode::CONFLICT, "invalid-rule", e.to_string())
            }
            LifecycleError::Stored { .. } | LifecycleError::Db(_) => Problem::internal(&e),
        }
    }
}

/// A dry run of a rule's retention policy over the rule's tags in the catalog: every tag
/// that would go with the reasons and its size, the bytes freed, and (`include=kept`) every
/// kept tag with the reasons it is kept. Nothing is ever deleted.
#[utoipa::path(get, path = "/v1/lifecycle/preview", tag = "lifecycle", params(PreviewQuery),
    responses((status = 200, body = LifecyclePreview),
              (status = 404, description = "no such registry (or not visible), or no such rule", body = Problem),
              (status = 409, description = "the rule has no retention policy", body = Problem),
              (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id, rule.id))]
async fn preview(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<axum::Json<LifecyclePreview>, Problem> {
    let registry: RegistryId = match q.registry.as_deref() {
        None => return Err(bad("registry", "required: the registry id (a UUID)")),
        Some(s) => s
            .parse()
            .map_err(|_| bad("registry", format!("`{s}` is not a registry id (a UUID)")))?,
    };
    let rule: RuleId = match q.rule.as_deref() {
        None => {
            return Err(bad(
                "rule",
                "required: the id of one of the registry's rules",
            ));
        }
        Some(s) => s.parse().map_err(|e| bad("rule", format!("{e}")))?,
    };
    let repository = q
        .repository
        .as_deref()
        .map(|s| s.parse::<RepositoryName>())
        .transpose()
        .map_err(|e| bad("repository", e.to_string()))?;
    let include_kept = match q.include.as_deref() {
        None => false,
        Some("kept") => true,
        Some(other) => {
            return Err(bad(
                "include",
                format!("unknown value `{other}`; `include=kept` lists the kept tags too"),
            ));
        }
    };
    let span = tracing::Span::current();
    span.record("registry.id", tracing::field::display(registry));
    span.record("rule.id", tracing::field::display(&rule));

    let pool = catalog.pool();
    let facts = crate::lifecycle::registry(pool, registry).await?;
    if !caller.sees(&facts.visibility) {
        return Err(LifecycleError::RegistryNotFound(registry).into());
    }
    let evaluated =
        crate::lifecycle::evaluate(pool, facts, &rule, repository.as_ref(), Utc::now()).await?;
    Ok(axum::Json(view(&evaluated, include_kept)))
}

fn view(e: &Evaluated, include_kept: bool) -> LifecyclePreview {
    let tag_view = |o: &Outcome| {
        let t = &e.tags[o.index];
        let going = !o.kept;
        PreviewTag {
            repository: t.repository.to_string(),
            tag: t.tag.to_string(),
            digest: t.digest.clone(),
            size: t.size,
            pushed_at: t.pushed_at,
            pushed_from: e
                .pushed_from
                .get(o.index)
                .map_or("first_seen", |p| p.as_str())
                .to_owned(),
            last_pulled_at: t.last_pulled_at,
            reasons: o.reasons.iter().map(ReasonView::from).collect(),
            frees_digest: going.then(|| o.frees_digest()),
            digest_kept_by: o.digest_kept_by.iter().map(ToString::to_string).collect(),
            digest_shared_with: o
                .digest_shared_with
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    };
    let p = &e.preview;
    let going = p
        .outcomes
        .iter()
        .filter(|o| !o.kept)
        .map(tag_view)
        .collect();
    let kept = include_kept.then(|| p.outcomes.iter().filter(|o| o.kept).map(tag_view).collect());
    let mut warnings = Vec::new();
    let policy = e.rule.retention.as_ref();
    let pull_based = policy.is_some_and(|r| {
        r.rules.iter().any(|x| {
            matches!(
                x.template,
                RetentionTemplate::LatestPulled | RetentionTemplate::PulledWithinDays
            )
        })
    });
    if pull_based && !p.pulls_known() && !p.outcomes.is_empty() {
        warnings.push(
            "no pull of these tags was ever counted (the registry does not report pulls, or \
             nothing was pulled yet): `latest_pulled` and `pulled_within_days` keep nothing"
                .to_owned(),
        );
    }
    if !e.rule.enabled {
        warnings.push(
            "the rule is disabled: the tags are those it selects among what the catalog still \
             holds"
                .to_owned(),
        );
    }
    LifecyclePreview {
        registry_id: e.registry.id,
        registry: e.registry.label.clone(),
        registry_url: e.registry.url.clone(),
        insecure: e.registry.insecure,
        rule_id: e.rule.rule_id.to_string(),
        rule_enabled: e.rule.enabled,
        retention: policy
            .and_then(|r| serde_json::to_value(r).ok())
            .unwrap_or_default(),
        evaluated_at: e.evaluated_at,
        summary: PreviewSummary {
            tags: p.outcomes.len(),
            kept: p.kept,
            going: p.going,
            not_selected: p.not_selected,
            digests_freed: p.digests_freed,
            bytes_freed: p.bytes_freed,
        },
        going,
        kept,
        warnings,
    }
}
