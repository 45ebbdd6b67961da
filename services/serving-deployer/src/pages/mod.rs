//! serving-deployer's console pages: deployments, their status and manifests, and the
//! forms that create them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use imagelib_console::{Console, Nav, Viewer, html, page};

use crate::app::Deployer;

pub fn router(app: Arc<Deployer>, console: Console) -> Router {
    let pages = Router::new()
        .route("/deployments", get(deployments))
        .with_state(app);
    imagelib_console::pages(pages, console)
}

async fn deployments(_: State<Arc<Deployer>>, v: Viewer) -> Response {
    page(
        &v,
        Nav::Deployments,
        "Deployments",
        html! { h1 { "Deployments" } },
    )
}
