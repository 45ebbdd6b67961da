//! `/v1/stats`: the library's counters, over what the caller may see.

use std::sync::Arc;

use axum::extract::State;
use imagelib_platform::Problem;
use imagelib_platform::auth::Caller;
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::curate::Catalog;

pub fn router() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// Counters of the catalog the caller sees (registries of other teams are not counted).
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Tags (one image per tag).
    pub tags: i64,
    /// Tags of kind `database`.
    pub database_images: i64,
    /// Tags of kind `model`.
    pub model_images: i64,
    /// Tags of kind `other`.
    pub other_images: i64,
    /// Repositories with at least one tag.
    pub repositories: i64,
    pub database_repositories: i64,
    pub model_repositories: i64,
    /// Registries (not removed).
    pub registries: i64,
}

/// The library's counters.
#[utoipa::path(get, path = "/v1/stats", tag = "catalog",
    responses((status = 200, body = Stats)))]
#[tracing::instrument(skip_all)]
async fn stats(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
) -> Result<axum::Json<Stats>, Problem> {
    let row = sqlx::query(
        "WITH g AS (
            SELECT id FROM registries
            WHERE removed_at IS NULL
              AND ($1::text[] IS NULL OR cardinality(visibility) = 0 OR visibility && $1)
         ), r AS (
            SELECT r.* FROM repositories r JOIN g ON g.id = r.registry_id WHERE r.tag_count > 0
         )
         SELECT (SELECT COALESCE(sum(tag_count), 0) FROM r)::int8,
                (SELECT COALESCE(sum(database_tags), 0) FROM r)::int8,
                (SELECT COALESCE(sum(model_tags), 0) FROM r)::int8,
                (SELECT count(*) FROM r)::int8,
                (SELECT count(*) FROM r WHERE kind = 'database')::int8,
                (SELECT count(*) FROM r WHERE kind = 'model')::int8,
                (SELECT count(*) FROM g)::int8",
    )
    .bind(caller.team_filter())
    .fetch_one(catalog.pool())
    .await
    .map_err(|e| Problem::internal(&e))?;
    let get = |i: usize| row.try_get::<i64, _>(i).map_err(|e| Problem::internal(&e));
    let (tags, database_images, model_images) = (get(0)?, get(1)?, get(2)?);
    Ok(axum::Json(Stats {
        tags,
        database_images,
        model_images,
        other_images: tags - database_images - model_images,
        repositories: get(3)?,
        database_repositories: get(4)?,
        model_repositories: get(5)?,
        registries: get(6)?,
    }))
}
