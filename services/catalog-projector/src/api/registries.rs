//! `GET /v1/registries[/{id}]`: the catalog's view of registries, with their last sync.
//! Never a secret: the catalog does not even store sealed credentials.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use imagelib_platform::Problem;
use imagelib_platform::auth::Caller;
use imagelib_platform::problem::{ApiPath, ApiQuery};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::params;
use crate::curate::Catalog;
use crate::query::Cursor;

pub fn router() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new()
        .routes(routes!(list_registries))
        .routes(routes!(get_registry))
}

/// The latest sync of a registry.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncView {
    /// `requested`, `running`, `completed` or `failed`.
    pub status: String,
    /// `schedule`, `manual` or `webhook`.
    pub reason: Option<String>,
    pub sync_id: Option<Uuid>,
    /// Only this repository (a webhook push).
    pub repository: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The counts of the last completed sync (`repositories`, `tags_seen`, `added`,
    /// `moved`, `removed`, `requests`, `duration_ms`, `partial`).
    pub last_completed: Option<serde_json::Value>,
    pub last_completed_at: Option<DateTime<Utc>>,
}

/// A registry in the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogRegistry {
    pub id: Uuid,
    pub label: String,
    pub url: String,
    pub registry_type: String,
    pub insecure: bool,
    /// Whether the registry reports pulls to imagelib (opt-in): when false a tag's pull
    /// count says nothing.
    pub report_pulls: bool,
    pub visibility: Vec<String>,
    /// `pending`, `validated` or `validation_failed`.
    pub status: String,
    pub status_reason: Option<String>,
    pub status_detail: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Repositories with tags, and tags, in the catalog.
    pub repositories: i64,
    pub tags: i64,
    pub last_sync: Option<SyncView>,
}

const COLUMNS: &str = "g.id, g.label, g.url, g.registry_type, g.insecure, g.visibility, g.status, \
     g.status_reason, g.status_detail, g.registered_at, g.updated_at, \
     (SELECT count(*) FROM repositories r WHERE r.registry_id = g.id AND r.tag_count > 0)::int8, \
     (SELECT COALESCE(sum(r.tag_count), 0) FROM repositories r WHERE r.registry_id = g.id)::int8, \
     g.sync_status, g.sync_reason, g.sync_id, g.sync_repository, g.sync_requested_at, \
     g.sync_started_at, g.sync_finished_at, g.sync_error, g.sync_counts, g.sync_completed_at, \
     g.report_pulls";

impl CatalogRegistry {
    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        let sync_status: Option<String> = r.try_get(13)?;
        let last_sync = match sync_status {
            Some(status) => Some(SyncView {
                status,
                reason: r.try_get(14)?,
                sync_id: r.try_get(15)?,
                repository: r.try_get(16)?,
                requested_at: r.try_get(17)?,
                started_at: r.try_get(18)?,
                finished_at: r.try_get(19)?,
                error: r.try_get(20)?,
                last_completed: r.try_get(21)?,
                last_completed_at: r.try_get(22)?,
            }),
            None => None,
        };
        Ok(CatalogRegistry {
            id: r.try_get(0)?,
            label: r.try_get(1)?,
            url: r.try_get(2)?,
            registry_type: r.try_get(3)?,
            insecure: r.try_get(4)?,
            report_pulls: r.try_get(23)?,
            visibility: r.try_get(5)?,
            status: r.try_get(6)?,
            status_reason: r.try_get(7)?,
            status_detail: r.try_get(8)?,
            registered_at: r.try_get(9)?,
            updated_at: r.try_get(10)?,
            repositories: r.try_get(11)?,
            tags: r.try_get(12)?,
            last_sync,
        })
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegistriesQuery {
    /// Page size, 1 to 500 (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryPage {
    pub items: Vec<CatalogRegistry>,
    pub next_cursor: Option<String>,
}

/// The registries the caller may see, by label, with their last sync.
#[utoipa::path(get, path = "/v1/registries", tag = "catalog", params(RegistriesQuery),
    responses((status = 200, body = RegistryPage), (status = 400, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_registries(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RegistriesQuery>,
) -> Result<axum::Json<RegistryPage>, Problem> {
    let limit = params::limit(q.limit.as_deref())?;
    // Keyset on (label, id); the cursor reuses the repository shape (name = label).
    let after = params::cursor(q.cursor.as_deref(), |c| matches!(c, Cursor::Repo { .. }))?;
    let (label, id) = match after {
        Some(Cursor::Repo { n, g }) => (Some(n), Some(g)),
        _ => (None, None),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM registries g
         WHERE g.removed_at IS NULL
           AND ($1::text[] IS NULL OR cardinality(g.visibility) = 0 OR g.visibility && $1)
           AND ($2::text IS NULL OR (g.label, g.id) > ($2, $3))
         ORDER BY g.label, g.id LIMIT $4"
    ))
    .bind(caller.team_filter())
    .bind(label)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(catalog.pool())
    .await
    .map_err(|e| Problem::internal(&e))?;
    let more = rows.len() as i64 > limit;
    let items = rows
        .iter()
        .take(limit as usize)
        .map(CatalogRegistry::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::internal(&e))?;
    let next_cursor = more
        .then(|| {
            items.last().map(|r| {
                Cursor::Repo {
                    n: r.label.clone(),
                    g: r.id,
                }
                .encode()
            })
        })
        .flatten();
    Ok(axum::Json(RegistryPage { items, next_cursor }))
}

/// One registry (404 when removed or not visible to the caller).
#[utoipa::path(get, path = "/v1/registries/{id}", tag = "catalog",
    params(("id" = String, Path, description = "registry id")),
    responses((status = 200, body = CatalogRegistry), (status = 400, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registry.id = %id))]
async fn get_registry(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<CatalogRegistry>, Problem> {
    let uuid: Uuid = id.parse().map_err(|_| {
        Problem::bad_request(format!("`{id}` is not a registry id (a UUID)")).with_code("bad-path")
    })?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM registries g
         WHERE g.id = $1 AND g.removed_at IS NULL
           AND ($2::text[] IS NULL OR cardinality(g.visibility) = 0 OR g.visibility && $2)"
    ))
    .bind(uuid)
    .bind(caller.team_filter())
    .fetch_optional(catalog.pool())
    .await
    .map_err(|e| Problem::internal(&e))?
    .ok_or_else(|| Problem::not_found(format!("registry {id} not found")))?;
    Ok(axum::Json(
        CatalogRegistry::from_row(&row).map_err(|e| Problem::internal(&e))?,
    ))
}
