//! serving-deployer's console pages: deployments, their status and manifests, and the
//! forms that create them.
//!
//! Every page reads and every form acts through what the JSON API (`crate::api`) uses:
//! [`Deployer::deploy`] and [`Deployer::delete`] (the same validation, trust-policy and
//! tag-mutation gates, events, and the signed-in caller as their actor),
//! [`Deployer::visible`] for who sees a deployment, and
//! [`crate::api::DeploymentView::for_caller`] for which `env` values are shown.
//!
//! - `GET /deployments`: the list, keyset pages (`?cursor=`).
//! - `GET /deployments/{id}`: status timeline, the rendered manifest, flags, delete.
//! - `POST /deployments/{id}/delete`: remove its manifests from the target.
//! - `GET /deployments/new?image=…` and `POST /deployments`: a KServe model deployment.
//! - `GET /provisioning/postgres/new?image=…` and `POST /provisioning/postgres`: a
//!   CloudNativePG cluster.

mod deployments;
mod forms;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use imagelib_console::Console;
use imagelib_events::TraceParent;

use crate::app::Deployer;

pub fn router(app: Arc<Deployer>, console: Console) -> Router {
    let pages = Router::new()
        .route(
            "/deployments",
            get(deployments::list).post(forms::create_model),
        )
        .route("/deployments/new", get(forms::new_model))
        .route("/deployments/{id}", get(deployments::detail))
        .route("/deployments/{id}/delete", post(deployments::delete))
        .route("/provisioning/postgres", post(forms::create_postgres))
        .route("/provisioning/postgres/new", get(forms::new_postgres))
        .with_state(app);
    imagelib_console::pages(pages, console)
}

/// The trace a console action's events carry: the request's span, or a new root (a
/// browser sends no `traceparent`).
fn traceparent() -> Option<TraceParent> {
    imagelib_events::trace::current().or_else(|| Some(TraceParent::new_root()))
}
