//! `/v1/images` (the Image Library) and `/v1/models` (the Model Library).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use imagelib_platform::Problem;
use imagelib_platform::auth::Caller;
use imagelib_platform::problem::ApiQuery;
use serde::Deserialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cache::Kept;
use super::params;
use super::rows::{self, ImageRows, Rendered};
use super::views::ImagePage;
use crate::curate::Catalog;
use crate::query::{self, Cursor, ImageFilter, Shape, Sort};

pub fn router() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new()
        .routes(routes!(list_images))
        .routes(routes!(list_models))
}

/// Filters, order and page of the image lists. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImagesQuery {
    /// Registry id.
    pub(crate) registry: Option<String>,
    /// Exact repository name, e.g. `nvidia/nim/llama-3.1-8b-instruct`.
    pub(crate) repository: Option<String>,
    /// `database`, `model` or `other`.
    pub(crate) kind: Option<String>,
    /// `text-completion`, `text-embedding`, `image-embedding`, `ocr` or `reranker`.
    pub(crate) model_type: Option<String>,
    /// An HM tag of the tag or of its repository.
    pub(crate) hm_tag: Option<String>,
    /// An architecture among the image's platforms, e.g. `arm64`.
    pub(crate) arch: Option<String>,
    /// `true`: only approved images (for their current digest); `false`: the others.
    pub(crate) approved: Option<String>,
    /// `true`: only images with a verified signature; `false`: the others.
    pub(crate) signed: Option<String>,
    /// `critical`, `high`, `medium`, `low` or `none`: images whose highest vulnerability
    /// severity is at most that (images without a report are left out).
    pub(crate) max_severity: Option<String>,
    /// `true`: only images with an SBOM (of the image or a platform manifest).
    pub(crate) has_sbom: Option<String>,
    /// `pass`, `fail` or `audit`: the trust policy verdict.
    pub(crate) policy: Option<String>,
    /// `true`: only tags ever found mutated (re-pushed although policy calls them
    /// immutable); `false`: the others.
    pub(crate) mutated: Option<String>,
    /// Words the repository name or description must contain (prefix match).
    pub(crate) q: Option<String>,
    /// RFC 3339 time: the catalog as it was then.
    pub(crate) as_of: Option<String>,
    /// `name` (default) or `updated` (most recently changed first).
    pub(crate) sort: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub(crate) limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

impl ImagesQuery {
    pub(crate) fn filter(&self, caller: &Caller) -> Result<(ImageFilter, i64), Problem> {
        let limit = params::limit(self.limit.as_deref())?;
        let sort = params::sort(self.sort.as_deref())?;
        let after = params::cursor(self.cursor.as_deref(), |c| {
            matches!(
                (sort, c),
                (Sort::Name, Cursor::Name { .. }) | (Sort::Updated, Cursor::Updated { .. })
            )
        })?;
        let f = ImageFilter {
            teams: caller.team_filter().map(<[String]>::to_vec),
            registry: params::uuid("registry", self.registry.as_deref())?,
            repository: params::repository(self.repository.as_deref())?,
            kind: params::kind(self.kind.as_deref())?,
            model_type: params::model_type(self.model_type.as_deref())?,
            hm_tag: params::hm_tag(self.hm_tag.as_deref())?,
            arch: params::arch(self.arch.as_deref())?,
            approved: params::boolean("approved", self.approved.as_deref())?,
            signed: params::boolean("signed", self.signed.as_deref())?,
            max_severity: params::max_severity(self.max_severity.as_deref())?,
            has_sbom: params::boolean("has_sbom", self.has_sbom.as_deref())?,
            policy: params::policy(self.policy.as_deref())?,
            mutated: params::boolean("mutated", self.mutated.as_deref())?,
            q: params::q(self.q.as_deref())?,
            as_of: params::as_of(self.as_of.as_deref())?,
            sort,
            after,
            fetch: limit + 1,
        };
        Ok((f, limit))
    }
}

/// A page of images as the catalog keeps it ([`super::cache`]).
pub(crate) type KeptPage = Kept<ImageRows>;

/// The page for `filter`: kept, or read and kept.
pub(crate) async fn page(
    catalog: &Catalog,
    filter: &ImageFilter,
    limit: i64,
) -> Result<Arc<KeptPage>, Problem> {
    let cache = catalog.image_pages();
    let seen = cache.open();
    if let Some(kept) = cache.get(seen, filter) {
        return Ok(kept);
    }
    let page = read_page(catalog, filter, limit).await?;
    let kept = Arc::new(page.kept(filter.teams.as_deref())?);
    cache.put(seen, filter.clone(), kept.clone());
    Ok(kept)
}

/// Read a page: by stamps when rows may be kept ([`super::rows`]), else (or when rows kept
/// changing under it) as one statement.
async fn read_page(
    catalog: &Catalog,
    filter: &ImageFilter,
    limit: i64,
) -> Result<ImageRows, Problem> {
    if filter.as_of.is_none()
        && let Some(epoch) = catalog.image_rows().open()
    {
        for _ in 0..rows::ATTEMPTS {
            if let Some(items) = read_by_stamps(catalog, filter, epoch).await? {
                return Ok(cut(filter, limit, items));
            }
        }
    }
    let statement_rows = list_rows(catalog, filter, Shape::Full).await?;
    let items = statement_rows
        .iter()
        .map(|row| Rendered::from_row(row).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::internal(&e))?;
    Ok(cut(filter, limit, items))
}

/// The rows of the page (and one more) by their stamps: the kept ones as kept, the others
/// read by tuple id. `None` when one of them changed between the two statements.
async fn read_by_stamps(
    catalog: &Catalog,
    filter: &ImageFilter,
    epoch: u64,
) -> Result<Option<Vec<Arc<Rendered>>>, Problem> {
    let stamps = stamps_of(&list_rows(catalog, filter, Shape::Stamps).await?)?;
    by_stamps(catalog, &stamps, epoch).await
}

/// The stamps (first column) of a statement's rows.
pub(crate) fn stamps_of(rows: &[PgRow]) -> Result<Vec<String>, Problem> {
    rows.iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::internal(&e))
}

/// The rows of `stamps`, in order: the kept ones as kept, the others read by tuple id (and
/// kept). `None` when one of them changed since its stamp was read.
pub(crate) async fn by_stamps(
    catalog: &Catalog,
    stamps: &[String],
    epoch: u64,
) -> Result<Option<Vec<Arc<Rendered>>>, Problem> {
    let cache = catalog.image_rows();
    let mut found = cache.get_all(epoch, stamps);
    let missing: Vec<String> = stamps
        .iter()
        .zip(&found)
        .filter(|(_, kept)| kept.is_none())
        .map(|(stamp, _)| {
            rows::tuple_id(stamp)
                .map(str::to_owned)
                .ok_or_else(|| Problem::internal(&format!("unreadable row stamp {stamp:?}")))
        })
        .collect::<Result<_, _>>()?;
    if missing.is_empty() {
        return Ok(found.into_iter().collect());
    }
    let mut read: HashMap<String, Arc<Rendered>> = HashMap::with_capacity(missing.len());
    let sql = query::image_rows_at(&missing);
    for row in catalog
        .reads()
        .fetch_all(sql.query().persistent(true))
        .await
        .map_err(|e| Problem::internal(&e))?
    {
        let stamp: String = row
            .try_get(query::IMAGE_COLUMN_COUNT)
            .map_err(|e| Problem::internal(&e))?;
        let rendered = Rendered::from_row(&row).map_err(|e| Problem::internal(&e))?;
        read.insert(stamp, Arc::new(rendered));
    }
    for (slot, stamp) in found.iter_mut().zip(stamps) {
        if slot.is_none() {
            *slot = read.get(stamp).cloned();
        }
    }
    let Some(items) = found.into_iter().collect::<Option<Vec<_>>>() else {
        return Ok(None);
    };
    // Only rows read at the stamp asked for (a tuple id may hold a newer version by now).
    let asked: HashSet<&str> = stamps.iter().map(String::as_str).collect();
    cache.put_all(
        epoch,
        read.into_iter()
            .filter(|(stamp, _)| asked.contains(stamp.as_str())),
    );
    Ok(Some(items))
}

/// The statement's rows for `filter` (page size plus one), read as `shape`.
async fn list_rows(
    catalog: &Catalog,
    filter: &ImageFilter,
    shape: Shape,
) -> Result<Vec<PgRow>, Problem> {
    if query::by_name_search(filter) {
        return search_rows(catalog, filter, shape).await;
    }
    let sql = query::images_shaped(filter, None, shape);
    match query::cacheable(filter) {
        true => catalog.reads().fetch_all(sql.query()).await,
        false => {
            sql.query()
                .persistent(false)
                .fetch_all(catalog.pool())
                .await
        }
    }
    .map_err(|e| Problem::internal(&e))
}

/// The page of `items` (the page size plus one when there is more) and its cursor.
fn cut(filter: &ImageFilter, limit: i64, mut items: Vec<Arc<Rendered>>) -> ImageRows {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = match (more, items.last()) {
        (true, Some(last)) => Some(
            match filter.sort {
                Sort::Name => Cursor::Name {
                    r: last.repository.clone(),
                    t: last.tag.clone(),
                    g: last.registry_id,
                },
                Sort::Updated => Cursor::Updated {
                    u: last.updated_at.timestamp_micros(),
                    i: last.repo_id(),
                    t: last.tag.clone(),
                },
            }
            .encode(),
        ),
        _ => None,
    };
    ImageRows { items, next_cursor }
}

/// The rows of a name-ordered search page: the next matching names, then the page from
/// their ranges; when those names hold too few rows the caller may see (other filters,
/// visibility), the names after them, four times as many each round.
async fn search_rows(
    catalog: &Catalog,
    filter: &ImageFilter,
    shape: Shape,
) -> Result<Vec<PgRow>, Problem> {
    let q = filter.q.as_deref().unwrap_or_default();
    // One term of ASCII letters and digits: the names and the page in one statement. Only
    // when that page comes back short (the term stands for too many words, a last page, or
    // filters that hide the names' rows) are the names looked for the other ways.
    if let Some([term]) = crate::search::word_terms(q).as_deref() {
        let sql = query::images_by_word(filter, term, shape);
        let rows = catalog
            .reads()
            .fetch_all(sql.query())
            .await
            .map_err(|e| Problem::internal(&e))?;
        if rows.len() as i64 >= filter.fetch {
            return Ok(rows);
        }
    }
    let mut from = filter
        .name_from()
        .map(|(r, inclusive)| (r.to_owned(), inclusive));
    let mut n = filter.fetch.max(1);
    let mut rows = Vec::new();
    loop {
        let names = crate::search::next_names(
            catalog.list_pool(),
            q,
            from.as_ref().map(|(r, i)| (r.as_str(), *i)),
            n,
            None,
        )
        .await
        .map_err(|e| Problem::internal(&e))?;
        let Some(last) = names.last().cloned() else {
            break;
        };
        let rest = ImageFilter {
            fetch: filter.fetch - rows.len() as i64,
            ..filter.clone()
        };
        let sql = query::images_shaped(&rest, Some(query::Names::Given(&names)), shape);
        rows.extend(
            catalog
                .reads()
                .fetch_all(sql.query())
                .await
                .map_err(|e| Problem::internal(&e))?,
        );
        if rows.len() as i64 >= filter.fetch || (names.len() as i64) < n {
            break;
        }
        from = Some((last, false));
        n = n.saturating_mul(4).min(MAX_SEARCH_NAMES);
    }
    Ok(rows)
}

/// The most names one round of a search page asks for.
const MAX_SEARCH_NAMES: i64 = 10_000;

/// The Image Library: one row per tag the caller may see.
#[utoipa::path(get, path = "/v1/images", tag = "catalog", params(ImagesQuery),
    responses((status = 200, body = ImagePage), (status = 400, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_images(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ImagesQuery>,
) -> Result<Response, Problem> {
    let (f, limit) = q.filter(&caller)?;
    Ok(page(&catalog, &f, limit).await?.response())
}

/// The Model Library: model images only (the same parameters; `kind` can only be `model`).
#[utoipa::path(get, path = "/v1/models", tag = "catalog", params(ImagesQuery),
    responses((status = 200, body = ImagePage), (status = 400, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_models(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ImagesQuery>,
) -> Result<Response, Problem> {
    let (mut f, limit) = q.filter(&caller)?;
    match f.kind.as_deref() {
        None | Some("model") => f.kind = Some("model".into()),
        Some(_) => {
            return Err(Problem::validation(
                "kind",
                "the Model Library holds model images only",
            ));
        }
    }
    Ok(page(&catalog, &f, limit).await?.response())
}
