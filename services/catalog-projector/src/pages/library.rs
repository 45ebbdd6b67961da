//! `GET /` (the Image Library) and `GET /models` (the Model Library): the rows of
//! `/v1/images` and `/v1/models` for the same parameters, as a table with its filters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use imagelib_console::layout::{FieldAttrs, digest, next_link, text_field, time, with_query};
use imagelib_console::{Markup, Nav, PreEscaped, Viewer, html, page_with_status};
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;
use sqlx::Row;
use uuid::Uuid;

use super::{Params, field_errors, form_errors, problem_page, select_field};
use crate::api::images::{self, ImagesQuery, KeptPage};
use crate::api::rows::Rendered;
use crate::api::stats::{self, Counters};
use crate::curate::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Library {
    Images,
    Models,
}

impl Library {
    fn path(self) -> &'static str {
        match self {
            Library::Images => "/",
            Library::Models => "/models",
        }
    }

    /// Which of a kept page's HTML fragments its table is ([`crate::api::cache::Kept::html`]).
    fn variant(self, may_deploy: bool) -> usize {
        (self as usize) * 2 + usize::from(may_deploy)
    }

    fn title(self) -> &'static str {
        match self {
            Library::Images => "Image Library",
            Library::Models => "Model Library",
        }
    }

    /// The parameters its form has (and its links keep).
    fn params(self) -> &'static [&'static str] {
        match self {
            Library::Images => &[
                "q",
                "registry",
                "kind",
                "repository",
                "hm_tag",
                "arch",
                "signed",
                "max_severity",
                "policy",
                "mutated",
                "sort",
            ],
            Library::Models => &[
                "q",
                "registry",
                "model_type",
                "repository",
                "hm_tag",
                "arch",
                "signed",
                "max_severity",
                "policy",
                "mutated",
                "sort",
            ],
        }
    }
}

pub(super) async fn image_library(
    State(catalog): State<Arc<Catalog>>,
    Extension(cache): Extension<Arc<Around>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    library(&catalog, &cache, &v, &Params::new(q), Library::Images).await
}

pub(super) async fn model_library(
    State(catalog): State<Arc<Catalog>>,
    Extension(cache): Extension<Arc<Around>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    library(&catalog, &cache, &v, &Params::new(q), Library::Models).await
}

/// The registries of the filter: id and label.
type Registries = Arc<Vec<(Uuid, String)>>;

/// A visibility: `None` for all registries, else the sorted teams.
type Teams = Option<Vec<String>>;
/// When it was read, and what.
type Kept = (Instant, Counters, Registries);

/// How long the counters and the registry filter's options are reused.
pub const AROUND_TTL: Duration = Duration::from_secs(5);

/// What the libraries show around their table: the counters and the registries of the
/// filter, per visibility (the teams a caller sees, or all), kept [`AROUND_TTL`]. The
/// table itself is read on every request; these are not worth a query each (the
/// counters sum every repository the caller sees).
#[derive(Debug, Default)]
pub(crate) struct Around {
    by_teams: Mutex<HashMap<Teams, Kept>>,
}

impl Around {
    async fn get(&self, catalog: &Catalog, v: &Viewer) -> Result<(Counters, Registries), Problem> {
        let key = v.caller.team_filter().map(|t| {
            let mut t = t.to_vec();
            t.sort_unstable();
            t.dedup();
            t
        });
        if let Ok(map) = self.by_teams.lock()
            && let Some((at, c, r)) = map.get(&key)
            && at.elapsed() < AROUND_TTL
        {
            return Ok((*c, r.clone()));
        }
        let (c, r) = tokio::join!(stats::counters(catalog, &v.caller), registries(catalog, v));
        let (c, r) = (c?, Arc::new(r?));
        if let Ok(mut map) = self.by_teams.lock() {
            // Bounded: team sets are few; should they not be, start over.
            if map.len() >= 1024 {
                map.clear();
            }
            map.insert(key, (Instant::now(), c, r.clone()));
        }
        Ok((c, r))
    }
}

/// The API's query for these parameters (the page size is the API's default).
fn api_query(p: &Params, lib: Library) -> ImagesQuery {
    ImagesQuery {
        registry: p.owned("registry"),
        repository: p.owned("repository"),
        kind: match lib {
            Library::Images => p.owned("kind"),
            Library::Models => None,
        },
        model_type: match lib {
            Library::Images => None,
            Library::Models => p.owned("model_type"),
        },
        hm_tag: p.owned("hm_tag"),
        arch: p.owned("arch"),
        signed: p.owned("signed"),
        max_severity: p.owned("max_severity"),
        policy: p.owned("policy"),
        mutated: p.owned("mutated"),
        q: p.owned("q"),
        sort: p.owned("sort"),
        cursor: p.owned("cursor"),
        ..Default::default()
    }
}

/// Registries the viewer sees, for the registry filter (the catalog's visibility rule).
async fn registries(catalog: &Catalog, v: &Viewer) -> Result<Vec<(Uuid, String)>, Problem> {
    let rows = sqlx::query(
        "SELECT id, label FROM registries
         WHERE removed_at IS NULL
           AND ($1::text[] IS NULL OR cardinality(visibility) = 0 OR visibility && $1)
         ORDER BY label, id LIMIT 500",
    )
    .bind(v.caller.team_filter())
    .fetch_all(catalog.pool())
    .await
    .map_err(|e| Problem::internal(&e))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| Problem::internal(&e))
}

async fn library(
    catalog: &Catalog,
    around: &Around,
    v: &Viewer,
    p: &Params,
    lib: Library,
) -> Response {
    let query = api_query(p, lib);
    let checked = query.filter(&v.caller).map(|(mut f, limit)| {
        if lib == Library::Models {
            f.kind = Some("model".into());
        }
        (f, limit)
    });
    let (rows, errors) = match checked {
        Ok((f, limit)) => {
            let (rows, around) =
                tokio::join!(images::page(catalog, &f, limit), around.get(catalog, v));
            match (rows, around) {
                (Ok(kept), Ok((c, r))) => {
                    return render(v, p, lib, StatusCode::OK, Some(c), &r, Some(&kept), &[]);
                }
                (Err(e), _) | (_, Err(e)) => return problem_page(v, &e),
            }
        }
        Err(problem) if problem.status == 422 || problem.status == 400 => {
            (None, field_errors(&problem))
        }
        Err(problem) => return problem_page(v, &problem),
    };
    // A bad filter: the form again, the error at its field, no rows.
    let (counters, regs) = match around.get(catalog, v).await {
        Ok((c, r)) => (Some(c), r),
        Err(_) => (None, Arc::new(Vec::new())),
    };
    render(
        v,
        p,
        lib,
        StatusCode::UNPROCESSABLE_ENTITY,
        counters,
        &regs,
        rows,
        &errors,
    )
}

const BOOL: &[(&str, &str)] = &[("", "Any"), ("true", "Yes"), ("false", "No")];

#[allow(clippy::too_many_arguments)]
fn render(
    v: &Viewer,
    p: &Params,
    lib: Library,
    status: StatusCode,
    counters: Option<Counters>,
    registries: &[(Uuid, String)],
    rows: Option<&KeptPage>,
    errors: &[(String, String)],
) -> Response {
    let mut registry_options: Vec<(String, String)> = vec![(String::new(), "Any".into())];
    registry_options.extend(
        registries
            .iter()
            .map(|(id, label)| (id.to_string(), label.clone())),
    );
    let registry_options: Vec<(&str, &str)> = registry_options
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let may_deploy = v.may(Role::Deployer);
    let keep = p.pairs(lib.params());
    let body = html! {
        h1 { (lib.title()) }
        @if let Some(c) = counters {
            ul.counters aria-label="Counters" {
                li { strong { (c.tags) } "tags" }
                li { strong { (c.database_images) } "database images" }
                li { strong { (c.model_images) } "model images" }
            }
        }
        form.filters method="get" action=(lib.path()) role="search" data-autosubmit aria-label={ "Search and filter the " (lib.title()) } {
            (form_errors(errors, lib.params()))
            (text_field("q", "Search", p.shown("q"), errors, FieldAttrs { kind: "search", ..Default::default() }))
            (select_field("registry", "Registry", &registry_options, p.shown("registry"), errors))
            @match lib {
                Library::Images => {
                    (select_field("kind", "Kind", &[("", "Any"), ("database", "Database"), ("model", "Model"), ("other", "Other")], p.shown("kind"), errors))
                }
                Library::Models => {
                    (select_field("model_type", "Model type", &[("", "Any"), ("text-completion", "Text completion"), ("text-embedding", "Text embedding"), ("image-embedding", "Image embedding"), ("ocr", "OCR"), ("reranker", "Reranker")], p.shown("model_type"), errors))
                }
            }
            (text_field("repository", "Repository", p.shown("repository"), errors, FieldAttrs::default()))
            (text_field("hm_tag", "HM tag", p.shown("hm_tag"), errors, FieldAttrs::default()))
            (text_field("arch", "Architecture", p.shown("arch"), errors, FieldAttrs::default()))
            (select_field("signed", "Signed", BOOL, p.shown("signed"), errors))
            (select_field("max_severity", "Highest severity at most", &[("", "Any"), ("none", "None"), ("low", "Low"), ("medium", "Medium"), ("high", "High"), ("critical", "Critical")], p.shown("max_severity"), errors))
            (select_field("policy", "Policy verdict", &[("", "Any"), ("pass", "Pass"), ("audit", "Audit"), ("fail", "Fail")], p.shown("policy"), errors))
            (select_field("mutated", "Mutated", BOOL, p.shown("mutated"), errors))
            (select_field("sort", "Sort", &[("", "Name"), ("updated", "Recently updated")], p.shown("sort"), errors))
            div.actions {
                button type="submit" { "Apply" }
                a href=(lib.path()) { "Reset" }
            }
        }
        @if let Some(kept) = rows {
            @if kept.value.items.is_empty() {
                p { "No image matches." }
            } @else {
                (PreEscaped(kept.html(lib.variant(may_deploy), |page| {
                    table(lib, &page.items, may_deploy).into_string()
                })))
            }
            (next_link(lib.path(), &keep, kept.value.next_cursor.as_deref()))
        }
    };
    page_with_status(
        status,
        v,
        match lib {
            Library::Images => Nav::Images,
            Library::Models => Nav::Models,
        },
        lib.title(),
        body,
    )
}

/// The link of a repository's detail page.
pub(crate) fn repository_href(registry_id: &Uuid, repository: &str) -> String {
    format!("/repositories/{registry_id}/{repository}")
}

fn table(lib: Library, items: &[Arc<Rendered>], may_deploy: bool) -> Markup {
    let (id, caption) = match lib {
        Library::Images => ("images", "Images, one row per tag"),
        Library::Models => ("models", "Model images, one row per tag"),
    };
    html! {
        div.table-wrap {
            table id=(id) {
                caption.sr-only { (caption) }
                thead {
                    tr {
                        th scope="col" { "Repository" }
                        th scope="col" { "Tag" }
                        th scope="col" { "Digest" }
                        @match lib {
                            Library::Images => th scope="col" { "Kind" },
                            Library::Models => th scope="col" { "Model type" },
                        }
                        th.hide-narrow scope="col" { "Platforms" }
                        th.hide-narrow scope="col" { "Registry" }
                        th scope="col" { "Updated" }
                        @if lib == Library::Models && may_deploy {
                            th scope="col" { span.sr-only { "Actions" } }
                        }
                    }
                }
                tbody {
                    @for i in items {
                        tr {
                            td { a href=(repository_href(&i.registry_id, &i.repository)) { (i.repository) } }
                            td { code { (i.tag) } }
                            td { (digest(&i.digest)) }
                            @match lib {
                                Library::Images => td { (i.kind) },
                                Library::Models => td { (i.model_type.as_deref().unwrap_or("—")) },
                            }
                            td.hide-narrow { (i.architectures.join(", ")) }
                            td.hide-narrow { (i.registry) }
                            td { (time(&i.updated_at)) }
                            @if lib == Library::Models && may_deploy {
                                td {
                                    a.deploy.button href=(with_query("/deployments/new", &[("image", i.reference.as_str())], None)) {
                                        "Deploy to Model Serving"
                                        span.sr-only { " " (i.reference) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
