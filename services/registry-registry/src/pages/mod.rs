//! registry-registry's console pages: Manage Repositories (registries, credentials,
//! repository rules, sync now).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use imagelib_console::{Console, Nav, Viewer, html, page};

use crate::app::Registries;

pub fn router(app: Arc<Registries>, console: Console) -> Router {
    let pages = Router::new()
        .route("/registries", get(manage))
        .with_state(app);
    imagelib_console::pages(pages, console)
}

async fn manage(_: State<Arc<Registries>>, v: Viewer) -> Response {
    page(
        &v,
        Nav::Registries,
        "Manage Repositories",
        html! { h1 { "Manage Repositories" } },
    )
}
