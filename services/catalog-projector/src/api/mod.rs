//! The catalog's HTTP API (DESIGN section 4): the Image and Model Library, repositories,
//! counters, the catalog view of registries, and the curator commands.

mod images;
mod params;
mod registries;
mod repositories;
mod stats;
mod views;

use std::sync::Arc;

use axum::http::HeaderMap;
use imagelib_events::TraceParent;
use imagelib_platform::auth::Tokens;
use utoipa_axum::router::OpenApiRouter;

use crate::curate::Catalog;

pub use views::{ImagePage, ImageView, RepositoryDetail, RepositoryView};

/// Every route of the service. `serve_registries` adds `GET /v1/registries` and
/// `GET /v1/registries/{id}` (left out in `imagelib serve`, where registry-registry serves
/// those paths).
pub fn router(catalog: Arc<Catalog>, serve_registries: bool) -> OpenApiRouter {
    let tokens: Tokens = catalog.tokens().clone();
    let mut r = OpenApiRouter::new()
        .merge(images::router())
        .merge(repositories::router())
        .merge(stats::router());
    if serve_registries {
        r = r.merge(registries::router());
    }
    r.with_state(catalog).layer(axum::Extension(tokens))
}

/// The W3C trace context of the request, or a new root.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| Some(TraceParent::new_root()))
}
