//! `/v1/registries/{id}/rules`: which repositories and tags are discovered, as what, the
//! trust policy their images must meet, and the retention policy previewed for them. Rules are returned as [`RuleView`]s: the
//! `rule.set` data with each trusted key's derived `key_id` and `algorithm`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use imagelib_events::RuleId;
use imagelib_events::event::RuleSet;
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role};
use imagelib_platform::problem::ApiPath;
use imagelib_rules::{RuleInput, RuleView};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::IfMatch;
use crate::app::Registries;

pub fn router() -> OpenApiRouter<Arc<Registries>> {
    OpenApiRouter::new()
        .routes(routes!(list_rules))
        .routes(routes!(import_rules))
        .routes(routes!(get_rule, put_rule, delete_rule))
}

fn registry_id(id: &str) -> Result<imagelib_events::RegistryId, Problem> {
    id.parse().map_err(|_| {
        Problem::bad_request(format!("`{id}` is not a registry id (a UUID)")).with_code("bad-path")
    })
}

fn parse_rule_id(rule_id: &str) -> Result<RuleId, Problem> {
    rule_id
        .parse::<RuleId>()
        .map_err(|e| Problem::validation("rule_id", e.to_string()))
}

async fn visible(
    app: &Registries,
    caller: &Caller,
    id: imagelib_events::RegistryId,
) -> Result<(), Problem> {
    let r = app.live(id).await?;
    if caller.sees(&r.visibility) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("registry {id} not found")))
    }
}

/// The ETag of a registry's rules: the sequence of their last change. One version covers
/// all the registry's rules (they are one aggregate), so it guards each of them.
async fn rules_etag(app: &Registries, id: imagelib_events::RegistryId) -> Result<u64, Problem> {
    app.store()
        .rules_version(id)
        .await
        .map_err(|e| Problem::internal(&e))
}

fn with_etag(version: u64, body: impl Serialize) -> Response {
    let mut res = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// Checks `If-Match` against the rules' version: the version the append must still find.
async fn precondition(
    app: &Registries,
    headers: &HeaderMap,
    id: imagelib_events::RegistryId,
) -> Result<Option<u64>, Problem> {
    let Some(condition) = IfMatch::parse(headers)? else {
        return Ok(None);
    };
    app.live(id).await?;
    let current = rules_etag(app, id).await?;
    condition.check(&format!("the rules of registry {id}"), current)?;
    Ok(Some(current))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    #[schema(value_type = Vec<RuleDoc>)]
    items: Vec<RuleView>,
}

fn views(rules: &[RuleSet]) -> Vec<RuleView> {
    rules.iter().map(RuleView::from).collect()
}

/// A rule as `PUT` takes it (documentation; the body is validated by `imagelib-rules`,
/// which also accepts a rule exactly as `GET` returns it).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RuleInputDoc {
    /// An exact repository name, a glob (`nvidia/*`), a regex (`/…/` or `^…`), a list of
    /// them, or `{"exact"|"glob"|"regex": …}` objects.
    #[schema(value_type = Object)]
    repositories: serde_json::Value,
    /// `include`, `exclude`, `mutable` (floating tags), `immutable` (tags that must never
    /// move; default: version tags) — tag patterns — `semver`, `newest`,
    /// `exclude_artifact_tags`.
    #[schema(value_type = Option<Object>)]
    tags: Option<serde_json::Value>,
    /// `database`, `model` or `auto` (default).
    kind: Option<String>,
    description: Option<String>,
    hm_tags: Option<Vec<String>>,
    /// Default `true`.
    enabled: Option<bool>,
    trust: Option<TrustPolicyDoc>,
    retention: Option<RetentionPolicyDoc>,
    /// Optional (a rule as `GET` returns it is a valid body); must be the path's.
    registry_id: Option<String>,
    /// Optional; must be the path's.
    rule_id: Option<String>,
}

/// A rule as stored and returned.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RuleDoc {
    registry_id: String,
    rule_id: String,
    #[schema(value_type = Vec<Object>)]
    repositories: Vec<serde_json::Value>,
    #[schema(value_type = Object)]
    tags: serde_json::Value,
    kind: String,
    description: String,
    hm_tags: Vec<String>,
    enabled: bool,
    trust: Option<TrustPolicyDoc>,
    retention: Option<RetentionPolicyDoc>,
}

/// The retention policy of a rule's tags, in Harbor's shape, only ever previewed
/// (`GET /v1/lifecycle/preview`; imagelib deletes nothing): a tag is kept when any rule keeps
/// it or it is deployed, approved or carries a protected HM tag.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RetentionPolicyDoc {
    /// 1 to 15 rules.
    rules: Vec<RetentionRuleDoc>,
    /// HM tags that always keep an image (default `["approved-production"]`).
    protect_hm_tags: Option<Vec<String>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RetentionRuleDoc {
    /// `latest_pushed`, `latest_pulled` (with `count`), `pushed_within_days`,
    /// `pulled_within_days` (with `days`) or `always`.
    template: String,
    /// 1 to 10000: how many of the most recently pushed or pulled to keep.
    count: Option<u32>,
    /// 1 to 36500.
    days: Option<u32>,
    /// `repository` (default) or `major` (count per major version; `latest_*` only).
    per: Option<String>,
    /// `include` and `exclude` tag patterns (as a rule's `tags`); all tags when no include.
    #[schema(value_type = Option<Object>)]
    tags: Option<serde_json::Value>,
}

/// The trust policy of the images a rule selects. A policy in `enforce` or `audit` mode
/// must ask for something (`keys`, `identities`, `max_severity` or `require_sbom`); with
/// `keys` or `identities` an image needs a signature by one of them.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TrustPolicyDoc {
    /// `enforce` (a failing image is not deployed), `audit` (default: deployed, violation
    /// recorded) or `off`.
    mode: Option<String>,
    /// At most 32 public keys (ECDSA P-256/P-384, Ed25519, RSA ≥ 2048; PEM ≤ 16 KiB): a PEM string
    /// or `{name, pem}`. Returned with their derived `key_id` and `algorithm`.
    keys: Option<Vec<TrustedKeyDoc>>,
    /// At most 32 signers: keyless `{issuer: https URL, subject: anchored regex}` or
    /// Notation `{x509_subject: anchored regex}`.
    #[schema(value_type = Option<Vec<Object>>)]
    identities: Option<Vec<serde_json::Value>>,
    /// The highest tolerated severity: `critical`, `high`, `medium`, `low` or `none`.
    max_severity: Option<String>,
    /// At most 1000 entries `{id, expires: YYYY-MM-DD, reason}` (or `"<id> until
    /// <YYYY-MM-DD>"`), each id once; needs `max_severity`.
    allow_cves: Option<Vec<CveAllowanceDoc>>,
    require_sbom: Option<bool>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TrustedKeyDoc {
    name: Option<String>,
    pem: String,
    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo (output; checked when sent back).
    key_id: Option<String>,
    /// `ecdsa-p256-sha256`, `ecdsa-p384-sha384`, `ed25519` or `rsa-sha256` (output).
    algorithm: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CveAllowanceDoc {
    id: String,
    expires: String,
    reason: Option<String>,
}

/// The registry's rules, by rule id. `ETag`: the rules' version, for `If-Match`.
#[utoipa::path(get, path = "/v1/registries/{id}/rules", tag = "rules",
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = RuleList), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn list_rules(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Problem> {
    let id = registry_id(&id)?;
    visible(&app, &caller, id).await?;
    let version = rules_etag(&app, id).await?;
    let items = app
        .store()
        .rules(id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(with_etag(
        version,
        RuleList {
            items: views(&items),
        },
    ))
}

/// One rule. `ETag`: the rules' version, for `If-Match`.
#[utoipa::path(get, path = "/v1/registries/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path, description = "registry id"), ("rule_id" = String, Path, description = "rule id")),
    responses((status = 200, body = RuleDoc), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id, rule.id = %rule_id))]
async fn get_rule(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiPath((id, rule_id)): ApiPath<(String, String)>,
) -> Result<Response, Problem> {
    let (id, rule) = (registry_id(&id)?, parse_rule_id(&rule_id)?);
    visible(&app, &caller, id).await?;
    let version = rules_etag(&app, id).await?;
    let found = app
        .store()
        .rule(id, rule.as_str())
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found(format!("rule `{rule}` not found")))?;
    Ok(with_etag(version, RuleView::from(&found)))
}

/// Create or replace a rule. `If-Match` with the rules' ETag guards lost updates (`412`
/// when stale, `409` when another change lands while this one is appended).
#[utoipa::path(put, path = "/v1/registries/{id}/rules/{rule_id}", tag = "rules", request_body = RuleInputDoc,
    params(("id" = String, Path, description = "registry id"), ("rule_id" = String, Path, description = "rule id"),
        ("If-Match" = Option<String>, Header, description = "the rules' ETag as read (`*`, or a list of entity tags, compared strongly)")),
    responses((status = 200, body = RuleDoc), (status = 400, body = Problem, description = "malformed `If-Match`"),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem, description = "`precondition-failed`"),
        (status = 422, body = Problem, description = "an invalid rule or trust policy; `errors[0].pointer` names the field")))]
#[tracing::instrument(skip_all, fields(registry.id = %id, rule.id = %rule_id))]
async fn put_rule(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((id, rule_id)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let (id, rule) = (registry_id(&id)?, parse_rule_id(&rule_id)?);
    let input = RuleInput::from_json_slice(&body)
        .map_err(|e| Problem::validation(e.pointer().to_owned(), e.to_string()))?;
    let set = input
        .into_rule_set(id, rule)
        .map_err(|e| Problem::validation(e.pointer().to_owned(), e.to_string()))?;
    let expected = precondition(&app, &headers, id).await?;
    let saved = app
        .set_rule(&caller, id, set, expected, super::traceparent(&headers))
        .await?;
    Ok(with_etag(
        rules_etag(&app, id).await?,
        RuleView::from(&saved),
    ))
}

/// Remove a rule (`If-Match` as for `PUT`).
#[utoipa::path(delete, path = "/v1/registries/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path, description = "registry id"), ("rule_id" = String, Path, description = "rule id"),
        ("If-Match" = Option<String>, Header, description = "the rules' ETag as read")),
    responses((status = 204), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 412, body = Problem, description = "`precondition-failed`")))]
#[tracing::instrument(skip_all, fields(registry.id = %id, rule.id = %rule_id))]
async fn delete_rule(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((id, rule_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require(Role::Admin)?;
    let (id, rule) = (registry_id(&id)?, parse_rule_id(&rule_id)?);
    let expected = precondition(&app, &headers, id).await?;
    app.remove_rule(&caller, id, rule, expected, super::traceparent(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    #[schema(value_type = Vec<RuleDoc>)]
    items: Vec<RuleView>,
}

/// Import the beacon agent's YAML (`postgres_repositories` → database rules,
/// `model_repositories` → model rules). The body is the YAML document.
#[utoipa::path(post, path = "/v1/registries/{id}/rules/import", tag = "rules",
    request_body(content = String, content_type = "application/yaml"),
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = ImportResult), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn import_rules(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: String,
) -> Result<axum::Json<ImportResult>, Problem> {
    caller.require(Role::Admin)?;
    let id = registry_id(&id)?;
    app.live(id).await?;
    let imported = imagelib_rules::parse_agent_yaml(&body)
        .map_err(|e| Problem::validation(e.pointer().to_owned(), e.to_string()))?;
    let mut items = Vec::with_capacity(imported.len());
    for rule in imported {
        let set = rule
            .to_rule_set(id)
            .map_err(|e| Problem::validation(e.pointer().to_owned(), e.to_string()))?;
        items.push(RuleView::from(
            &app.set_rule(&caller, id, set, None, super::traceparent(&headers))
                .await?,
        ));
    }
    Ok(axum::Json(ImportResult { items }))
}
