//! `/v1/registries/{id}/rules`: which repositories and tags are discovered, and as what.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use imagelib_events::RuleId;
use imagelib_events::event::RuleSet;
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role};
use imagelib_platform::problem::ApiPath;
use imagelib_rules::RuleInput;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<RuleSet>,
}

/// The registry's rules, by rule id.
#[utoipa::path(get, path = "/v1/registries/{id}/rules", tag = "rules",
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = RuleList), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn list_rules(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<RuleList>, Problem> {
    let id = registry_id(&id)?;
    visible(&app, &caller, id).await?;
    let items = app
        .store()
        .rules(id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(axum::Json(RuleList { items }))
}

/// One rule.
#[utoipa::path(get, path = "/v1/registries/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path, description = "registry id"), ("rule_id" = String, Path, description = "rule id")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id, rule.id = %rule_id))]
async fn get_rule(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    ApiPath((id, rule_id)): ApiPath<(String, String)>,
) -> Result<axum::Json<RuleSet>, Problem> {
    let (id, rule) = (registry_id(&id)?, parse_rule_id(&rule_id)?);
    visible(&app, &caller, id).await?;
    app.store()
        .rule(id, rule.as_str())
        .await
        .map_err(|e| Problem::internal(&e))?
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("rule `{rule}` not found")))
}

/// Create or replace a rule.
#[utoipa::path(put, path = "/v1/registries/{id}/rules/{rule_id}", tag = "rules", request_body = Object,
    params(("id" = String, Path, description = "registry id"), ("rule_id" = String, Path, description = "rule id")),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id, rule.id = %rule_id))]
async fn put_rule(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((id, rule_id)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<RuleSet>, Problem> {
    caller.require(Role::Admin)?;
    let (id, rule) = (registry_id(&id)?, parse_rule_id(&rule_id)?);
    let input = RuleInput::from_json_slice(&body)
        .map_err(|e| Problem::validation(e.pointer().to_owned(), e.to_string()))?;
    let set = input
        .into_rule_set(id, rule)
        .map_err(|e| Problem::validation(e.pointer().to_owned(), e.to_string()))?;
    let saved = app
        .set_rule(&caller, id, set, super::traceparent(&headers))
        .await?;
    Ok(axum::Json(saved))
}

/// Remove a rule.
#[utoipa::path(delete, path = "/v1/registries/{id}/rules/{rule_id}", tag = "rules",
    params(("id" = String, Path, description = "registry id"), ("rule_id" = String, Path, description = "rule id")),
    responses((status = 204), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id, rule.id = %rule_id))]
async fn delete_rule(
    State(app): State<Arc<Registries>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((id, rule_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require(Role::Admin)?;
    let (id, rule) = (registry_id(&id)?, parse_rule_id(&rule_id)?);
    app.remove_rule(&caller, id, rule, super::traceparent(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    #[schema(value_type = Vec<Object>)]
    items: Vec<RuleSet>,
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
        items.push(
            app.set_rule(&caller, id, set, super::traceparent(&headers))
                .await?,
        );
    }
    Ok(axum::Json(ImportResult { items }))
}
