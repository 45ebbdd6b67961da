//! The catalog's console pages: the Image Library, the Model Library, repository detail
//! and the activity, rendered from the catalog's own read model.
//!
//! Every page reads through the same code as the JSON API (`crate::api`: the same
//! parameter checks, the same statements, the same visibility: a viewer sees what the
//! same token sees on `/v1`), and every curator action calls the same [`Catalog`]
//! command the API calls, with the signed-in caller as the actor.
//!
//! - `GET /`: the Image Library ([`library`]);
//! - `GET /models`: the Model Library ([`library`]);
//! - `GET|POST /repositories/{registry_id}/{*name}`: a repository and its curator
//!   actions ([`repository`]);
//! - `GET /activity`, `GET /activity/stream`: the audit trail, live ([`activity`]).

mod activity;
mod library;
pub mod markdown;
mod repository;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use imagelib_console::layout::{error_page, field_error};
use imagelib_console::{Console, Markup, Viewer, html};
use imagelib_platform::Problem;

use crate::curate::Catalog;

pub fn router(catalog: Arc<Catalog>, console: Console) -> Router {
    let pages = Router::new()
        .route("/", get(library::image_library))
        .route("/models", get(library::model_library))
        .route(
            "/repositories/{registry_id}/{*name}",
            get(repository::show).post(repository::act),
        )
        .route("/activity", get(activity::show))
        .route("/activity/stream", get(activity::stream))
        .layer(axum::Extension(Arc::new(library::Around::default())))
        .with_state(catalog);
    imagelib_console::pages(pages, console)
}

/// A page's query string: a parameter sent empty (an untouched filter of a GET form) is
/// one not sent.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn new(map: HashMap<String, String>) -> Self {
        Params(map)
    }

    /// The value, trimmed; `None` when absent or blank.
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    pub(crate) fn owned(&self, k: &str) -> Option<String> {
        self.get(k).map(str::to_owned)
    }

    /// The value to show back in a form field.
    pub(crate) fn shown(&self, k: &str) -> &str {
        self.get(k).unwrap_or("")
    }

    /// `(name, value)` of these parameters that are set (for links keeping the filters).
    pub(crate) fn pairs<'a>(&'a self, names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
        names
            .iter()
            .filter_map(|n| self.get(n).map(|v| (*n, v)))
            .collect()
    }
}

/// A problem's field errors as `(field, message)`; a problem without any is one error on
/// no field (shown above the form).
pub(crate) fn field_errors(p: &Problem) -> Vec<(String, String)> {
    if p.errors.is_empty() {
        vec![(
            String::new(),
            p.detail.clone().unwrap_or_else(|| p.title.clone()),
        )]
    } else {
        p.errors
            .iter()
            .map(|e| {
                (
                    e.pointer.trim_start_matches('/').to_owned(),
                    e.detail.clone(),
                )
            })
            .collect()
    }
}

/// The page for a problem that is not about a field: its status, its words.
pub(crate) fn problem_page(v: &Viewer, p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        StatusCode::FORBIDDEN => "Not allowed",
        s if s.is_server_error() => "Something went wrong",
        _ => "Refused",
    };
    let detail = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        "The catalog could not answer; the error is in its log.".to_owned()
    } else {
        p.detail.clone().unwrap_or_else(|| p.title.clone())
    };
    error_page(v, status, title, &detail)
}

/// A labelled `select` with its error, like `layout::text_field` for text.
pub(crate) fn select_field(
    name: &str,
    label: &str,
    options: &[(&str, &str)],
    value: &str,
    errors: &[(String, String)],
) -> Markup {
    let id = format!("f-{name}");
    let err = field_error(errors, name);
    let err_id = format!("{id}-error");
    let known = options.iter().any(|(v, _)| *v == value);
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[err.map(|_| "true")]
                aria-describedby=[err.map(|_| err_id.as_str())] {
                @for (v, text) in options {
                    option value=(v) selected[*v == value] { (text) }
                }
                @if !known {
                    // A value sent by hand that is not an option: shown, so the error
                    // below names what was sent.
                    option value=(value) selected { (value) }
                }
            }
            @if let Some(e) = err { p.field-error id=(err_id) { (e) } }
        }
    }
}

/// Errors on no field of the form: shown above it.
pub(crate) fn form_errors(errors: &[(String, String)], fields: &[&str]) -> Markup {
    html! {
        @for (f, e) in errors.iter().filter(|(f, _)| !fields.contains(&f.as_str())) {
            p.error role="alert" {
                @if !f.is_empty() { code { (f) } ": " }
                (e)
            }
        }
    }
}

/// Where a link in the activity goes in the console, from the API path of the object.
pub(crate) fn console_href(api_link: Option<&str>) -> Option<String> {
    let rest = api_link?.strip_prefix("/v1")?;
    ["/repositories/", "/registries/", "/deployments/"]
        .iter()
        .any(|p| rest.starts_with(p))
        .then(|| rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_parameters_are_absent() {
        let p = Params::new(HashMap::from([
            ("kind".to_owned(), "".to_owned()),
            ("q".to_owned(), " pg ".to_owned()),
        ]));
        assert_eq!(p.get("kind"), None);
        assert_eq!(p.get("q"), Some("pg"));
        assert_eq!(p.pairs(&["kind", "q", "x"]), vec![("q", "pg")]);
    }

    #[test]
    fn api_links_become_console_links() {
        assert_eq!(
            console_href(Some("/v1/repositories/abc/pg")).as_deref(),
            Some("/repositories/abc/pg")
        );
        assert_eq!(console_href(Some("/v1/subscriptions/x")), None);
        assert_eq!(console_href(Some("https://evil.example/")), None);
        assert_eq!(console_href(None), None);
    }

    #[test]
    fn problems_map_to_fields() {
        let p = Problem::validation("/reason", "needed");
        assert_eq!(field_errors(&p), vec![("reason".into(), "needed".into())]);
        let s =
            select_field("kind", "Kind", &[("", "Any")], "<x>", &field_errors(&p)).into_string();
        assert!(s.contains("&lt;x&gt;") && !s.contains("<x>"), "{s}");
    }
}
