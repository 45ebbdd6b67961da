//! The catalog's console pages: the Image Library, the Model Library, repository detail
//! and the activity, rendered from the catalog's own read model.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use imagelib_console::{Console, Nav, Viewer, html, page};

use crate::curate::Catalog;

pub fn router(catalog: Arc<Catalog>, console: Console) -> Router {
    let pages = Router::new()
        .route("/", get(image_library))
        .with_state(catalog);
    imagelib_console::pages(pages, console)
}

async fn image_library(_: State<Arc<Catalog>>, v: Viewer) -> Response {
    page(
        &v,
        Nav::Images,
        "Image Library",
        html! { h1 { "Image Library" } },
    )
}
