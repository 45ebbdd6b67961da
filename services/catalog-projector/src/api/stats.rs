//! `/v1/stats`: the library's counters, over what the caller may see.

use std::collections::HashMap;
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
    /// Tags whose digest has a verified signature, and the others.
    pub signed: i64,
    pub unsigned: i64,
    /// Tags with an SBOM (of the digest or a platform manifest).
    pub with_sbom: i64,
    /// Tags by the highest severity of their vulnerability reports (tags without a report
    /// are not counted).
    pub by_max_severity: SeverityStats,
    /// Tags by trust policy verdict (tags never evaluated are not counted).
    pub policy: PolicyStats,
    /// Tags ever found mutated: moved although policy calls them immutable.
    pub mutated_tags: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeverityStats {
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub none: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyStats {
    pub pass: i64,
    pub fail: i64,
    pub audit: i64,
}

/// The counters kept on repositories (cheap at any size): what the console's Image
/// Library shows above its table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub tags: i64,
    pub database_images: i64,
    pub model_images: i64,
    pub repositories: i64,
    pub database_repositories: i64,
    pub model_repositories: i64,
    pub registries: i64,
}

/// The repository counters over what `caller` may see.
pub(crate) async fn counters(catalog: &Catalog, caller: &Caller) -> Result<Counters, Problem> {
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
    Ok(Counters {
        tags: get(0)?,
        database_images: get(1)?,
        model_images: get(2)?,
        repositories: get(3)?,
        database_repositories: get(4)?,
        model_repositories: get(5)?,
        registries: get(6)?,
    })
}

/// The library's counters.
#[utoipa::path(get, path = "/v1/stats", tag = "catalog",
    responses((status = 200, body = Stats)))]
#[tracing::instrument(skip_all)]
async fn stats(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
) -> Result<axum::Json<Stats>, Problem> {
    let c = counters(&catalog, &caller).await?;
    let (tags, database_images, model_images) = (c.tags, c.database_images, c.model_images);
    // Each count reads only the partial index of its column: tags without trust data
    // cost nothing.
    let trust = sqlx::query(
        "WITH g AS (
            SELECT id FROM registries
            WHERE removed_at IS NULL
              AND ($1::text[] IS NULL OR cardinality(visibility) = 0 OR visibility && $1)
         )
         SELECT (SELECT count(*) FROM tag_versions t
                 WHERE t.valid_to IS NULL AND t.signed AND t.registry_id IN (SELECT id FROM g))::int8,
                (SELECT count(*) FROM tag_versions t
                 WHERE t.valid_to IS NULL AND t.has_sbom AND t.registry_id IN (SELECT id FROM g))::int8,
                (SELECT COALESCE(jsonb_object_agg(s, n), '{}') FROM (
                    SELECT t.max_severity AS s, count(*) AS n FROM tag_versions t
                    WHERE t.valid_to IS NULL AND t.max_severity IS NOT NULL
                      AND t.registry_id IN (SELECT id FROM g)
                    GROUP BY t.max_severity) x)::text,
                (SELECT COALESCE(jsonb_object_agg(p, n), '{}') FROM (
                    SELECT t.policy AS p, count(*) AS n FROM tag_versions t
                    WHERE t.valid_to IS NULL AND t.policy IS NOT NULL
                      AND t.registry_id IN (SELECT id FROM g)
                    GROUP BY t.policy) x)::text,
                (SELECT count(*) FROM tag_versions t
                 WHERE t.valid_to IS NULL AND t.mutated AND t.registry_id IN (SELECT id FROM g))::int8",
    )
    .bind(caller.team_filter())
    .fetch_one(catalog.pool())
    .await
    .map_err(|e| Problem::internal(&e))?;
    let tget = |i: usize| {
        trust
            .try_get::<i64, _>(i)
            .map_err(|e| Problem::internal(&e))
    };
    let (signed, with_sbom, mutated_tags) = (tget(0)?, tget(1)?, tget(4)?);
    let counts = |i: usize| -> Result<HashMap<String, i64>, Problem> {
        let text: String = trust.try_get(i).map_err(|e| Problem::internal(&e))?;
        serde_json::from_str(&text).map_err(|e| Problem::internal(&e))
    };
    let severity = counts(2)?;
    let level = |l: usize| severity.get(&l.to_string()).copied().unwrap_or(0);
    let policy = counts(3)?;
    let verdict = |v: &str| policy.get(v).copied().unwrap_or(0);
    Ok(axum::Json(Stats {
        tags,
        database_images,
        model_images,
        other_images: tags - database_images - model_images,
        repositories: c.repositories,
        database_repositories: c.database_repositories,
        model_repositories: c.model_repositories,
        registries: c.registries,
        signed,
        unsigned: tags - signed,
        with_sbom,
        by_max_severity: SeverityStats {
            critical: level(4),
            high: level(3),
            medium: level(2),
            low: level(1),
            none: level(0),
        },
        policy: PolicyStats {
            pass: verdict("pass"),
            fail: verdict("fail"),
            audit: verdict("audit"),
        },
        mutated_tags,
    }))
}
