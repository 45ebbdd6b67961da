//! `/v1/repositories`, one repository, and the curator commands on it.
//!
//! A repository name holds `/`, so everything under `/v1/repositories/{registry_id}/` is
//! one wildcard route, split here: `GET …/{name}` is the repository;
//! `PUT|DELETE …/{name}/hm-tags/{hm_tag}`, `PUT …/{name}/readme` and
//! `POST …/{name}/approve|reject` are the commands.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::MethodRouter;
use imagelib_events::model::HmTag;
use imagelib_events::{RegistryId, RepositoryName, Tag};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role};
use imagelib_platform::problem::{ApiPath, ApiQuery};
use serde::Deserialize;
use sqlx::Row;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::cache::Kept;
use super::params;
use super::rows::{Rendered, TagRow};
use super::views::{
    ApprovalView, DeploymentView, MutationView, ReadmeView, RepositoryDetail, RepositoryPage,
    RepositoryView,
};

/// The mutations listed per tag in a repository's detail (its newest).
const MAX_MUTATIONS_SHOWN: i64 = 100;
use crate::curate::{Catalog, RepoRef};
use crate::query::{self, Cursor, RepositoryFilter, Shape};

#[derive(OpenApi)]
#[openapi(paths(get_repository, put_hm_tag, delete_hm_tag, put_readme, approve, reject))]
struct RepositoryDocs;

pub fn router() -> OpenApiRouter<Arc<Catalog>> {
    let wildcard: MethodRouter<Arc<Catalog>> = axum::routing::get(dispatch)
        .put(dispatch)
        .post(dispatch)
        .delete(dispatch);
    OpenApiRouter::with_openapi(RepositoryDocs::openapi())
        .routes(routes!(list_repositories))
        .route("/v1/repositories/{registry_id}/{*rest}", wildcard)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RepositoriesQuery {
    /// Registry id.
    registry: Option<String>,
    /// `database`, `model` or `other` (the kind of its latest tag).
    kind: Option<String>,
    /// An HM tag of the repository.
    hm_tag: Option<String>,
    /// Words the name or description must contain (prefix match).
    q: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Repositories the caller may see that have tags, by name.
#[utoipa::path(get, path = "/v1/repositories", tag = "catalog", params(RepositoriesQuery),
    responses((status = 200, body = RepositoryPage), (status = 400, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_repositories(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RepositoriesQuery>,
) -> Result<axum::Json<RepositoryPage>, Problem> {
    let limit = params::limit(q.limit.as_deref())?;
    let f = RepositoryFilter {
        teams: caller.team_filter().map(<[String]>::to_vec),
        registry: params::uuid("registry", q.registry.as_deref())?,
        kind: params::kind(q.kind.as_deref())?,
        hm_tag: params::hm_tag(q.hm_tag.as_deref())?,
        q: params::q(q.q.as_deref())?,
        after: params::cursor(q.cursor.as_deref(), |c| matches!(c, Cursor::Repo { .. }))?,
        fetch: limit + 1,
    };
    let sql = query::repositories(&f);
    let rows = sql
        .query()
        .fetch_all(catalog.pool())
        .await
        .map_err(|e| Problem::internal(&e))?;
    let more = rows.len() as i64 > limit;
    let items = rows
        .iter()
        .take(limit as usize)
        .map(RepositoryView::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::internal(&e))?;
    let next_cursor = more
        .then(|| {
            items.last().map(|r| {
                Cursor::Repo {
                    n: r.name.clone(),
                    g: r.registry_id,
                }
                .encode()
            })
        })
        .flatten();
    Ok(axum::Json(RepositoryPage { items, next_cursor }))
}

/// What a path under `/v1/repositories/{registry_id}/` addresses.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Repository(RepositoryName),
    HmTag(RepositoryName, String),
    Readme(RepositoryName),
    Approve(RepositoryName),
    Reject(RepositoryName),
}

fn repo_name(s: &str) -> Result<RepositoryName, Problem> {
    s.parse().map_err(|e: imagelib_events::OciParseError| {
        Problem::bad_request(format!("`{s}` is not a repository name: {e}")).with_code("bad-path")
    })
}

/// Split the wildcard by method: reads take the whole rest as the name, commands the
/// suffix they end with.
fn parse_target(method: &Method, rest: &str) -> Result<Target, Problem> {
    let rest = rest.trim_matches('/');
    let unknown = || Problem::not_found(format!("no {method} route for this repository path"));
    match *method {
        Method::GET => Ok(Target::Repository(repo_name(rest)?)),
        Method::PUT | Method::DELETE => {
            if *method == Method::PUT
                && let Some(name) = rest.strip_suffix("/readme")
            {
                return Ok(Target::Readme(repo_name(name)?));
            }
            let (head, hm) = rest.rsplit_once('/').ok_or_else(unknown)?;
            let name = head.strip_suffix("/hm-tags").ok_or_else(unknown)?;
            Ok(Target::HmTag(repo_name(name)?, hm.to_owned()))
        }
        Method::POST => {
            if let Some(name) = rest.strip_suffix("/approve") {
                Ok(Target::Approve(repo_name(name)?))
            } else if let Some(name) = rest.strip_suffix("/reject") {
                Ok(Target::Reject(repo_name(name)?))
            } else {
                Err(unknown())
            }
        }
        _ => Err(Problem::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("`{method}` is not allowed here"),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagParam {
    /// An image tag of the repository: the command applies to that tag only.
    tag: Option<String>,
}

fn registry_id(s: &str) -> Result<RegistryId, Problem> {
    s.parse().map_err(|_| {
        Problem::bad_request(format!("`{s}` is not a registry id (a UUID)")).with_code("bad-path")
    })
}

fn image_tag(pointer: &str, s: Option<String>) -> Result<Option<Tag>, Problem> {
    s.map(|t| {
        t.parse::<Tag>()
            .map_err(|e| Problem::validation(pointer, e.to_string()))
    })
    .transpose()
}

/// A JSON body (malformed: 400; not the expected shape: 422; not JSON: 415).
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Problem> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct
            .to_str()
            .map(|c| c.split(';').next().unwrap_or("").trim().ends_with("json"))
            .unwrap_or(false)
    {
        return Err(Problem::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::validation("/", e.to_string()),
        _ => Problem::bad_request(format!("the body is not valid JSON: {e}"))
            .with_code("malformed-json"),
    })
}

async fn dispatch(
    State(catalog): State<Arc<Catalog>>,
    method: Method,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((registry, rest)): ApiPath<(String, String)>,
    ApiQuery(tag): ApiQuery<TagParam>,
    body: Bytes,
) -> Result<Response, Problem> {
    let registry = registry_id(&registry)?;
    let target = parse_target(&method, &rest)?;
    let tp = super::traceparent(&headers);
    if !matches!(target, Target::Repository(_)) {
        // Who may do it is answered before what was sent.
        caller.require(Role::Curator)?;
    }
    match target {
        Target::Repository(name) => {
            if tag.tag.is_some() {
                return Err(Problem::validation("tag", "not a parameter of this route"));
            }
            let repo = RepoRef {
                registry_id: registry,
                name,
            };
            Ok(repository(&catalog, &caller, &repo).await?.response())
        }
        Target::HmTag(name, hm) => {
            let repo = RepoRef {
                registry_id: registry,
                name,
            };
            let tag = image_tag("tag", tag.tag)?;
            if method == Method::PUT {
                put_hm_tag(&catalog, &caller, &repo, tag, &hm, tp).await
            } else {
                delete_hm_tag(&catalog, &caller, &repo, tag, &hm, tp).await
            }
        }
        Target::Readme(name) => {
            let repo = RepoRef {
                registry_id: registry,
                name,
            };
            let req: ReadmeRequest = json_body(&headers, &body)?;
            put_readme(&catalog, &caller, &repo, req, tp).await
        }
        Target::Approve(name) => {
            let repo = RepoRef {
                registry_id: registry,
                name,
            };
            approve(
                &catalog,
                &caller,
                &repo,
                decision_body(&headers, &body)?,
                tp,
            )
            .await
        }
        Target::Reject(name) => {
            let repo = RepoRef {
                registry_id: registry,
                name,
            };
            reject(
                &catalog,
                &caller,
                &repo,
                decision_body(&headers, &body)?,
                tp,
            )
            .await
        }
    }
}

/// An approval body is optional (approving a repository needs no reason).
fn decision_body(headers: &HeaderMap, body: &Bytes) -> Result<DecisionRequest, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(DecisionRequest::default())
    } else {
        json_body(headers, body)
    }
}

/// The repository after a command: what the caller just changed, read back.
async fn answer(catalog: &Catalog, caller: &Caller, repo: &RepoRef) -> Result<Response, Problem> {
    Ok(repository(catalog, caller, repo).await?.response())
}

/// A repository's detail as the catalog keeps it ([`super::cache`]), by the teams the
/// caller sees and the repository.
pub(crate) type KeptRepository = Kept<RepositoryDetail>;

/// [`get_repository`], kept until the catalog changes.
pub(crate) async fn repository(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
) -> Result<Arc<KeptRepository>, Problem> {
    let key = (caller.team_filter().map(<[String]>::to_vec), repo.id());
    let cache = catalog.repository_pages();
    let seen = cache.open();
    if let Some(kept) = cache.get(seen, &key) {
        return Ok(kept);
    }
    let detail = get_repository(catalog, caller, repo).await?;
    let kept = Arc::new(detail.kept(key.0.as_deref())?);
    cache.put(seen, key, kept.clone());
    Ok(kept)
}

/// One repository: its tags, README, HM tags, approval and the deployments using it.
#[utoipa::path(get, path = "/v1/repositories/{registry_id}/{name}", tag = "catalog",
    params(("registry_id" = String, Path, description = "registry id"),
        ("name" = String, Path, description = "repository name, `/` included, e.g. `nvidia/nim/llm`")),
    responses((status = 200, body = RepositoryDetail), (status = 404, body = Problem)))]
pub(crate) async fn get_repository(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
) -> Result<RepositoryDetail, Problem> {
    // One statement of fixed shape, by repository id, planned once
    // ([`Catalog::list_pool`]): the repository, whether the caller sees it, what it keeps
    // per tag (READMEs, decisions, referrer lists, mutations), its deployments, and, when
    // rows may be kept, its current tags' stamps in tag order ([`super::rows`]).
    let reads = catalog.reads();
    let internal = |e: sqlx::Error| Problem::internal(&e);
    let epoch = catalog.image_rows().open();
    let stamps = if epoch.is_some() {
        format!(
            "ARRAY(SELECT {} FROM tag_versions t
                   WHERE t.repo_id = r.id AND t.valid_to IS NULL ORDER BY t.tag)",
            query::IMAGE_STAMP
        )
    } else {
        "NULL::text[]".to_owned()
    };
    let detail = format!(
        "SELECT {}, r.rule_id, r.rule_hm_tags, r.curator_hm_tags,
            (SELECT json_agg(json_build_object('tag', x.tag, 'readme', x.readme,
                    'updated_by', x.actor, 'updated_at', x.at))
             FROM readmes x WHERE x.repo_id = r.id)::text,
            (SELECT json_agg(json_build_object('tag', x.tag, 'decision', x.decision,
                    'digest', x.digest, 'reason', x.reason, 'by', x.actor, 'at', x.at))
             FROM approvals x WHERE x.repo_id = r.id AND x.tag <> '')::text,
            (SELECT json_agg(json_build_array(x.digest, x.referrers) ORDER BY x.digest COLLATE \"C\")
             FROM trust_referrers x WHERE x.repo_id = r.id)::text,
            (SELECT json_agg(json_build_object('tag', m.tag, 'old_digest', m.old_digest,
                    'new_digest', m.new_digest, 'found_by', m.found_by, 'seen_at', m.seen_at,
                    'at', m.at) ORDER BY m.tag, m.sequence DESC)
             FROM (SELECT x.*, row_number() OVER (PARTITION BY x.tag ORDER BY x.sequence DESC) AS n
                   FROM tag_mutations x WHERE x.repo_id = r.id) m
             WHERE m.n <= {MAX_MUTATIONS_SHOWN})::text,
            (SELECT json_agg(json_build_object('deployment_id', x.id, 'name', x.name,
                    'namespace', x.namespace, 'tag', x.tag, 'digest', x.digest,
                    'workload', x.workload, 'target', x.target, 'replicas', x.replicas,
                    'status', x.status, 'status_detail', x.status_detail,
                    'revision', x.revision, 'requested_by', x.requested_by,
                    'requested_at', x.requested_at, 'updated_at', x.updated_at,
                    'policy_violation', x.policy_violation) ORDER BY x.requested_at, x.id)
             FROM deployments x WHERE x.repo_id = r.id AND x.status <> 'deleted')::text,
            {stamps}
         FROM repositories r
         JOIN registries g ON g.id = r.registry_id
         LEFT JOIN approvals a ON a.repo_id = r.id AND a.tag = ''
         WHERE r.id = $1 AND g.removed_at IS NULL
           AND ($2::text[] IS NULL OR cardinality(g.visibility) = 0 OR g.visibility && $2)",
        query::REPOSITORY_COLUMNS
    );
    let row = reads
        .fetch_optional(
            sqlx::query(&detail)
                .bind(repo.id())
                .bind(caller.team_filter()),
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Problem::from(crate::curate::CommandError::NotFound(format!(
                "repository `{}` of registry {} not found",
                repo.name, repo.registry_id
            )))
        })?;
    let view = RepositoryView::from_row(&row).map_err(internal)?;
    let repo_id = repo.id();
    let rule_id: Option<String> = row.try_get(17).map_err(internal)?;
    let rule_hm_tags: Vec<String> = row.try_get(18).map_err(internal)?;
    let curator_hm_tags: Vec<String> = row.try_get(19).map_err(internal)?;
    let listed = |i: usize| -> Result<Option<String>, Problem> { row.try_get(i).map_err(internal) };
    let mut readme_of: HashMap<String, ReadmeView> = by_tag(listed(20)?)?;
    let mut decision_of: HashMap<String, ApprovalView> = by_tag(listed(21)?)?;
    let lists = super::rows::KeptLists::new(json_list(listed(22)?)?);
    let mut mutations_of: HashMap<String, Vec<MutationView>> = HashMap::new();
    for Tagged { tag, view } in json_list::<Tagged<MutationView>>(listed(23)?)? {
        mutations_of.entry(tag).or_default().push(view);
    }
    let deployments: Vec<DeploymentView> = json_list(listed(24)?)?;
    let stamps: Option<Vec<String>> = row.try_get(25).map_err(internal)?;

    let tag_rows = repository_rows(catalog, repo_id, epoch.zip(stamps)).await?;

    let referrers = super::rows::listing(&tag_rows, &lists);
    let mut tags = Vec::with_capacity(tag_rows.len());
    for image in tag_rows {
        let used_by = deployments
            .iter()
            .filter(|d| d.tag == image.tag)
            .cloned()
            .collect();
        tags.push(TagRow {
            tag_approval: decision_of.remove(&image.tag),
            mutations: mutations_of.remove(&image.tag).unwrap_or_default(),
            readme: readme_of.remove(&image.tag),
            used_by,
            image,
        });
    }
    Ok(RepositoryDetail {
        repository: view,
        rule_id,
        rule_hm_tags,
        curator_hm_tags,
        readme: readme_of.remove(""),
        tags,
        used_by: deployments,
        referrers,
    })
}

/// A view listed with the tag it belongs to (a JSON object with `tag` beside its members).
#[derive(Deserialize)]
struct Tagged<T> {
    tag: String,
    #[serde(flatten)]
    view: T,
}

/// The elements of a JSON array PostgreSQL aggregated (`NULL` when there were none).
fn json_list<T: serde::de::DeserializeOwned>(json: Option<String>) -> Result<Vec<T>, Problem> {
    match json {
        Some(json) => serde_json::from_str(&json).map_err(|e| Problem::internal(&e)),
        None => Ok(Vec::new()),
    }
}

/// [`json_list`] of [`Tagged`] views, by tag.
fn by_tag<T: serde::de::DeserializeOwned>(
    json: Option<String>,
) -> Result<HashMap<String, T>, Problem> {
    Ok(json_list::<Tagged<T>>(json)?
        .into_iter()
        .map(|t| (t.tag, t.view))
        .collect())
}

/// A repository's current tags in tag order: by their stamps when rows may be kept
/// ([`super::rows`]; `read` is the epoch and the stamps the detail's statement read under
/// it), else (or when they kept changing under it) as one statement.
async fn repository_rows(
    catalog: &Catalog,
    repo_id: Uuid,
    read: Option<(u64, Vec<String>)>,
) -> Result<Vec<Arc<Rendered>>, Problem> {
    let reads = catalog.reads();
    let internal = |e: sqlx::Error| Problem::internal(&e);
    if let Some((epoch, stamps)) = read {
        if let Some(rows) = super::images::by_stamps(catalog, &stamps, epoch).await? {
            return Ok(rows);
        }
        for _ in 1..super::rows::ATTEMPTS {
            let Some(epoch) = catalog.image_rows().open() else {
                break;
            };
            let sql = query::repository_tags_shaped(repo_id, Shape::Stamps);
            let stamps = reads.fetch_all(sql.query()).await.map_err(internal)?;
            let stamps = super::images::stamps_of(&stamps)?;
            if let Some(rows) = super::images::by_stamps(catalog, &stamps, epoch).await? {
                return Ok(rows);
            }
        }
    }
    let sql = query::repository_tags(repo_id);
    reads
        .fetch_all(sql.query())
        .await
        .map_err(internal)?
        .iter()
        .map(|row| Rendered::from_row(row).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)
}

fn hm(s: &str) -> Result<HmTag, Problem> {
    s.parse::<HmTag>()
        .map_err(|e| Problem::validation("hm_tag", e.to_string()))
}

/// Put an HM tag on the repository (or, with `?tag=`, on one of its tags). Curators only.
#[utoipa::path(put, path = "/v1/repositories/{registry_id}/{name}/hm-tags/{hm_tag}", tag = "curation",
    params(("registry_id" = String, Path, description = "registry id"),
        ("name" = String, Path, description = "repository name, `/` included"),
        ("hm_tag" = String, Path, description = "the HM tag, e.g. `approved-production`"),
        ("tag" = Option<String>, Query, description = "an image tag: label that tag only")),
    responses((status = 200, body = RepositoryDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_hm_tag(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
    tag: Option<Tag>,
    hm_tag: &str,
    tp: Option<imagelib_events::TraceParent>,
) -> Result<Response, Problem> {
    caller.require(Role::Curator)?;
    catalog
        .label(caller, repo, tag, hm(hm_tag)?, true, tp)
        .await?;
    answer(catalog, caller, repo).await
}

/// Remove an HM tag from the repository (or, with `?tag=`, from one of its tags).
#[utoipa::path(delete, path = "/v1/repositories/{registry_id}/{name}/hm-tags/{hm_tag}", tag = "curation",
    params(("registry_id" = String, Path, description = "registry id"),
        ("name" = String, Path, description = "repository name, `/` included"),
        ("hm_tag" = String, Path, description = "the HM tag"),
        ("tag" = Option<String>, Query, description = "an image tag: unlabel that tag only")),
    responses((status = 200, body = RepositoryDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn delete_hm_tag(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
    tag: Option<Tag>,
    hm_tag: &str,
    tp: Option<imagelib_events::TraceParent>,
) -> Result<Response, Problem> {
    caller.require(Role::Curator)?;
    catalog
        .label(caller, repo, tag, hm(hm_tag)?, false, tp)
        .await?;
    answer(catalog, caller, repo).await
}

/// A README (Markdown) for the repository, or for one of its tags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadmeRequest {
    readme: String,
    /// An image tag: the README of that tag.
    #[serde(default)]
    tag: Option<String>,
}

/// Set the README. Curators only.
#[utoipa::path(put, path = "/v1/repositories/{registry_id}/{name}/readme", tag = "curation",
    request_body = ReadmeRequest,
    params(("registry_id" = String, Path, description = "registry id"),
        ("name" = String, Path, description = "repository name, `/` included")),
    responses((status = 200, body = RepositoryDetail), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_readme(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
    req: ReadmeRequest,
    tp: Option<imagelib_events::TraceParent>,
) -> Result<Response, Problem> {
    caller.require(Role::Curator)?;
    let tag = image_tag("/tag", req.tag)?;
    catalog
        .set_readme(caller, repo, tag, req.readme, tp)
        .await?;
    answer(catalog, caller, repo).await
}

/// An approval or rejection of the repository, or of one tag at its current digest.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// An image tag: decide on that tag's current digest only.
    #[serde(default)]
    tag: Option<String>,
    /// With `tag`: the digest the curator reviewed. The decision is made only if the tag
    /// still points at it (`409 digest-mismatch` otherwise), so a tag re-pushed again
    /// meanwhile is never approved unseen.
    #[serde(default)]
    digest: Option<String>,
    /// Why (required to reject).
    #[serde(default)]
    reason: String,
}

/// The `digest` of a decision: a digest, and only with a tag.
fn expected_digest(
    tag: Option<&Tag>,
    digest: Option<String>,
) -> Result<Option<imagelib_events::Digest>, Problem> {
    let Some(d) = digest else { return Ok(None) };
    if tag.is_none() {
        return Err(Problem::validation(
            "/digest",
            "a digest is decided on with its `tag`; a repository decision names none",
        ));
    }
    d.parse()
        .map(Some)
        .map_err(|e: imagelib_events::OciParseError| Problem::validation("/digest", e.to_string()))
}

/// Approve. Curators only.
#[utoipa::path(post, path = "/v1/repositories/{registry_id}/{name}/approve", tag = "curation",
    request_body = DecisionRequest,
    params(("registry_id" = String, Path, description = "registry id"),
        ("name" = String, Path, description = "repository name, `/` included")),
    responses((status = 200, body = RepositoryDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "`digest-mismatch`: the tag no longer points at `digest`"),
        (status = 422, body = Problem)))]
async fn approve(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
    req: DecisionRequest,
    tp: Option<imagelib_events::TraceParent>,
) -> Result<Response, Problem> {
    caller.require(Role::Curator)?;
    let tag = image_tag("/tag", req.tag)?;
    let digest = expected_digest(tag.as_ref(), req.digest)?;
    catalog
        .decide(caller, repo, tag, digest, true, req.reason, tp)
        .await?;
    answer(catalog, caller, repo).await
}

/// Reject (a reason is required). Curators only.
#[utoipa::path(post, path = "/v1/repositories/{registry_id}/{name}/reject", tag = "curation",
    request_body = DecisionRequest,
    params(("registry_id" = String, Path, description = "registry id"),
        ("name" = String, Path, description = "repository name, `/` included")),
    responses((status = 200, body = RepositoryDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "`digest-mismatch`: the tag no longer points at `digest`"),
        (status = 422, body = Problem)))]
async fn reject(
    catalog: &Catalog,
    caller: &Caller,
    repo: &RepoRef,
    req: DecisionRequest,
    tp: Option<imagelib_events::TraceParent>,
) -> Result<Response, Problem> {
    caller.require(Role::Curator)?;
    let tag = image_tag("/tag", req.tag)?;
    let digest = expected_digest(tag.as_ref(), req.digest)?;
    catalog
        .decide(caller, repo, tag, digest, false, req.reason, tp)
        .await?;
    answer(catalog, caller, repo).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_by_method() {
        let name = |s: &str| s.parse::<RepositoryName>().unwrap();
        assert_eq!(
            parse_target(&Method::GET, "nvidia/nim/llm").unwrap(),
            Target::Repository(name("nvidia/nim/llm"))
        );
        // A repository may be called `readme`: reads take the whole path.
        assert_eq!(
            parse_target(&Method::GET, "team/readme").unwrap(),
            Target::Repository(name("team/readme"))
        );
        assert_eq!(
            parse_target(&Method::PUT, "nvidia/nim/llm/readme").unwrap(),
            Target::Readme(name("nvidia/nim/llm"))
        );
        assert_eq!(
            parse_target(&Method::PUT, "a/hm-tags/b/hm-tags/gpu").unwrap(),
            Target::HmTag(name("a/hm-tags/b"), "gpu".into())
        );
        assert_eq!(
            parse_target(&Method::DELETE, "pg/hm-tags/deprecated").unwrap(),
            Target::HmTag(name("pg"), "deprecated".into())
        );
        assert_eq!(
            parse_target(&Method::POST, "pg/approve").unwrap(),
            Target::Approve(name("pg"))
        );
        assert_eq!(
            parse_target(&Method::POST, "pg/reject").unwrap(),
            Target::Reject(name("pg"))
        );
        assert_eq!(parse_target(&Method::POST, "pg").unwrap_err().status, 404);
        assert_eq!(parse_target(&Method::PUT, "pg").unwrap_err().status, 404);
        assert_eq!(
            parse_target(&Method::GET, "Bad//name").unwrap_err().status,
            400
        );
    }
}
