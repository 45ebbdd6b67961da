//! The deployments list, one deployment's page, and its delete action.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use imagelib_console::layout::{
    csrf_field, digest, error_page, next_link, notice, time, time_or_dash,
};
use imagelib_console::{CsrfForm, Markup, Nav, Viewer, html, page};
use imagelib_events::model::{ViolationStage, WorkloadKind};
use imagelib_events::{DeploymentId, RegistryId};
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;

use crate::api::DeploymentView;
use crate::app::{CommandError, Deployer, reason_words};
use crate::render::yaml_documents;
use crate::store::{DeploymentFlag, DeploymentRow, PolicyViolation};

/// Deployments per page.
const PAGE: usize = 50;
/// Rows read from the view at a time while filling a page with visible ones.
const BATCH: i64 = 200;

pub(super) fn kind_words(w: WorkloadKind) -> &'static str {
    match w {
        WorkloadKind::InferenceService => "KServe model",
        WorkloadKind::PostgresCluster => "CloudNativePG",
    }
}

/// The form that creates a deployment of this kind.
fn form_path(w: WorkloadKind) -> &'static str {
    match w {
        WorkloadKind::InferenceService => "/deployments/new",
        WorkloadKind::PostgresCluster => "/provisioning/postgres/new",
    }
}

fn state_badge(state: &str) -> Markup {
    let class = match state {
        "applied" => "badge ok",
        "failed" => "badge bad",
        "deleted" => "badge",
        _ => "badge warn",
    };
    html! { span class=(class) { (state) } }
}

/// A console error page for a command that failed (the API's problem, as a page).
pub(super) fn problem_page(v: &Viewer, e: CommandError) -> Response {
    let p = Problem::from(e);
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_page(
        v,
        status,
        &p.title,
        p.detail.as_deref().unwrap_or("Something went wrong."),
    )
}

fn not_found(v: &Viewer, what: &str) -> Response {
    error_page(v, StatusCode::NOT_FOUND, "Not found", what)
}

/// `GET /deployments`: the deployments of the registries the viewer sees, newest id order
/// as the API pages them.
pub(super) async fn list(
    State(app): State<Arc<Deployer>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut after: Option<DeploymentId> = match q.get("cursor").filter(|c| !c.is_empty()) {
        Some(c) => match c.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                return error_page(
                    &v,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Not a page of this list",
                    "The `cursor` in the address is not one this list made.",
                );
            }
        },
        None => None,
    };
    // `?limit=` as the API takes it (1 to 500); 50 a page otherwise.
    let limit_param = q.get("limit").filter(|l| !l.is_empty());
    let limit = match limit_param.map(|l| l.parse::<usize>()) {
        None => PAGE,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => {
            return error_page(
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not a page size",
                "`limit` is a number from 1 to 500.",
            );
        }
    };
    let mut rows: Vec<DeploymentRow> = Vec::new();
    let mut more = false;
    'pages: loop {
        let batch = match app.store().deployments(after, BATCH).await {
            Ok(b) => b,
            Err(e) => return problem_page(&v, e.into()),
        };
        let exhausted = (batch.len() as i64) < BATCH;
        for row in batch {
            after = Some(row.id);
            if app.visible(&v.caller, &row).await.is_err() {
                continue;
            }
            if rows.len() == limit {
                more = true;
                break 'pages;
            }
            rows.push(row);
        }
        if exhausted {
            break;
        }
    }
    let mut labels: HashMap<RegistryId, String> = HashMap::new();
    for row in &rows {
        let id = row.request.image.registry_id;
        if !labels.contains_key(&id)
            && let Ok(Some(r)) = app.store().registry(id).await
        {
            labels.insert(id, r.label);
        }
    }
    let next = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let body = html! {
        h1 { "Deployments" }
        @if v.may(Role::Deployer) {
            p.actions {
                a.button href="/deployments/new" { "Deploy a model" }
                a.button href="/provisioning/postgres/new" { "Provision PostgreSQL" }
            }
        }
        @if rows.is_empty() {
            p.muted { "No deployments." }
        } @else {
            div.table-wrap {
                table #deployments {
                    caption.sr-only { "Deployments" }
                    thead {
                        tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Namespace" }
                            th scope="col" { "Image" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Status" }
                            th scope="col" { "Flags" }
                            th scope="col" .hide-narrow { "Updated" }
                        }
                    }
                    tbody {
                        @for row in &rows {
                            tr {
                                th scope="row" {
                                    a href={ "/deployments/" (row.id) } { (row.name) }
                                }
                                td { (row.namespace) }
                                td {
                                    code { (row.request.image.repository) ":" (row.request.image.tag) }
                                    @if let Some(l) = labels.get(&row.request.image.registry_id) {
                                        " " span.muted { "(" (l) ")" }
                                    }
                                    br;
                                    (digest(row.request.digest.as_str()))
                                }
                                td { (kind_words(row.request.workload)) }
                                td { (state_badge(&row.state)) }
                                td { (flags(row)) }
                                td.hide-narrow { (time(&row.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
        (next_link("/deployments", &[("limit", limit_param.map(String::as_str).unwrap_or_default())], next.as_deref()))
    };
    page(&v, Nav::Deployments, "Deployments", body)
}

/// The flags of a deployment as badges (or a dash).
fn flags(row: &DeploymentRow) -> Markup {
    let mutated = row
        .flags
        .iter()
        .any(|f| matches!(f, DeploymentFlag::TagMutated { .. }));
    html! {
        @if row.policy_violations.is_empty() && !mutated && !row.registry_removed {
            span.muted { "—" }
        }
        @if !row.policy_violations.is_empty() {
            span.badge.bad { "policy violated" } " "
        }
        @if mutated {
            span.badge.warn { "tag mutated" } " "
        }
        @if row.registry_removed {
            span.badge.warn { "registry removed" }
        }
    }
}

async fn visible_row(app: &Deployer, v: &Viewer, id: &str) -> Result<DeploymentRow, Response> {
    let Ok(id) = id.parse::<DeploymentId>() else {
        return Err(not_found(v, "There is no deployment at this address."));
    };
    match app.store().deployment(id).await {
        Ok(Some(row)) => match app.visible(&v.caller, &row).await {
            Ok(()) => Ok(row),
            Err(CommandError::NotFound(_)) => Err(not_found(v, "There is no such deployment.")),
            Err(e) => Err(problem_page(v, e)),
        },
        Ok(None) => Err(not_found(v, "There is no such deployment.")),
        Err(e) => Err(problem_page(v, e.into())),
    }
}

/// What the deployment renders to, as YAML: re-rendered from its request with the same
/// renderer that applied it; `env` values masked as the API masks them.
async fn manifest_yaml(
    app: &Deployer,
    row: &DeploymentRow,
    view: &DeploymentView,
) -> Result<Option<(String, bool)>, CommandError> {
    if row.manifests.is_empty() {
        return Ok(None);
    }
    let req = &row.request;
    let Some(registry) = app.store().registry(req.image.registry_id).await? else {
        return Ok(None);
    };
    let image = format!(
        "{}/{}@{}",
        registry.host(),
        req.image.repository,
        req.digest
    );
    let tag = app
        .store()
        .tag(
            req.image.registry_id,
            req.image.repository.as_str(),
            req.image.tag.as_str(),
        )
        .await?;
    let rendered = app.render(req, &image, tag.as_ref());
    // The same as what was applied when each manifest's hash matches its reference.
    let same = rendered.len() == row.manifests.len()
        && rendered
            .iter()
            .zip(&row.manifests)
            .all(|(m, r)| m.reference().sha256 == r.sha256);
    let masked = if view.env == req.env {
        rendered
    } else {
        let mut shown = req.clone();
        shown.env = view.env.clone();
        app.render(&shown, &image, tag.as_ref())
    };
    Ok(Some((yaml_documents(&masked), same)))
}

/// `GET /deployments/{id}`.
pub(super) async fn detail(
    State(app): State<Arc<Deployer>>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let row = match visible_row(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let view = DeploymentView::for_caller(row.clone(), &v.caller);
    let manifest = match manifest_yaml(&app, &row, &view).await {
        Ok(m) => m,
        Err(e) => return problem_page(&v, e),
    };
    let registry_label = match app.store().registry(row.request.image.registry_id).await {
        Ok(r) => r.map(|r| r.label),
        Err(e) => return problem_page(&v, e.into()),
    };
    let done = match q.get("done").map(String::as_str) {
        Some("deployed") => Some("Deployment requested, rendered and handed to its target."),
        Some("unchanged") => Some("Nothing changed: this spec was already deployed."),
        Some("deleted") => Some("Deleted: its manifests were removed from the target."),
        _ => None,
    };
    let title = format!("Deployment {}/{}", row.namespace, row.name);
    let mutations: Vec<&DeploymentFlag> = row.flags.iter().collect();
    let body = html! {
        h1 { "Deployment " (row.namespace) "/" (row.name) }
        (notice(done))
        p { a href="/deployments" { "← All deployments" } }
        dl.facts {
            dt { "Status" } dd { (state_badge(&view.state)) @if let Some(r) = &view.reason { " " (r) } }
            dt { "Kind" } dd { (kind_words(row.request.workload)) }
            dt { "Image" } dd {
                code { (view.image) }
                @if let Some(l) = &registry_label { " " span.muted { "(registry " (l) ")" } }
                br; (digest(&view.digest))
            }
            dt { "Target" } dd { (view.target) @if let Some(r) = &view.revision { " · revision " code { (r) } } }
            dt { (if row.request.workload == WorkloadKind::PostgresCluster { "Instances" } else { "Replicas" }) }
            dd { (view.replicas) }
            dt { "Requested by" } dd { (view.requested_by.as_deref().unwrap_or("—")) }
            dt { "Created" } dd { (time(&view.created_at)) }
            dt { "Updated" } dd { (time(&view.updated_at)) }
        }
        @if view.registry_removed {
            p.notice role="status" { "The image's registry was removed: this deployment can no longer be updated." }
        }

        h2 { "Status" }
        ol.timeline {
            @for h in &view.history {
                li {
                    (state_badge(&h.state)) " " (time(&h.at))
                    @if let Some(d) = &h.detail { " — " (d) }
                }
            }
        }

        @if !view.resources.requests.is_empty() || !view.resources.limits.is_empty() {
            h2 { "Resources" }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Resource" } th scope="col" { "Request" } th scope="col" { "Limit" } } }
                    tbody {
                        @for k in resource_names(&view) {
                            tr {
                                th scope="row" { code { (k) } }
                                td { (quantity(view.resources.requests.get(&k))) }
                                td { (quantity(view.resources.limits.get(&k))) }
                            }
                        }
                    }
                }
            }
        }

        @if !view.env.is_empty() {
            h2 { "Environment" }
            @if !v.may(Role::Deployer) {
                p.hint { "Values are shown to deployers and admins only." }
            }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Variable" } th scope="col" { "Value" } } }
                    tbody {
                        @for (k, val) in &view.env {
                            tr { th scope="row" { code { (k) } } td { code { (val) } } }
                        }
                    }
                }
            }
        }

        @if !mutations.is_empty() || !view.policy_violations.is_empty() {
            h2 { "Flags" }
            @for f in &mutations {
                (flag(f))
            }
            @for pv in view.policy_violations.iter().rev() {
                (violation(pv))
            }
        }

        h2 { "Manifest" }
        @match &manifest {
            Some((yaml, same)) => {
                @if !same {
                    p.hint { "The image's labels changed since this was applied: this is what it renders to now." }
                }
                @if view.state == "deleted" {
                    p.hint { "Removed from the target; this is what was applied." }
                }
                pre.manifest { code { (yaml) } }
            }
            None => {
                p.muted { "Not rendered." }
            }
        }

        @if v.may(Role::Deployer) && !view.registry_removed {
            p.actions {
                a.button href={ (form_path(row.request.workload)) "?from=" (row.id) } {
                    @if view.state == "deleted" { "Deploy again…" } @else { "Change and redeploy…" }
                }
            }
        }

        @if v.may(Role::Deployer) && view.state != "deleted" {
            h2 { "Delete" }
            form method="post" action={ "/deployments/" (row.id) "/delete" }
                data-confirm={ "Delete " (row.namespace) "/" (row.name) "? Its manifests are removed from the " (view.target) " target and the workload stops." } {
                (csrf_field(&v))
                p { "Removes its manifests from the " (view.target) " target: the workload stops." }
                button.danger type="submit" { "Delete deployment" }
            }
        }
    };
    page(&v, Nav::Deployments, &title, body)
}

fn resource_names(view: &DeploymentView) -> Vec<String> {
    let mut names: Vec<String> = view
        .resources
        .requests
        .keys()
        .chain(view.resources.limits.keys())
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

fn quantity(v: Option<&serde_json::Value>) -> Markup {
    match v {
        Some(serde_json::Value::String(s)) => html! { (s) },
        Some(other) => html! { (other.to_string()) },
        None => html! { span.muted { "—" } },
    }
}

fn flag(f: &DeploymentFlag) -> Markup {
    match f {
        DeploymentFlag::TagMutated {
            tag,
            old_digest,
            new_digest,
            current_digest,
            found_by,
            seen_at,
            at,
        } => html! {
            section.flag {
                h3 { span.badge.warn { "tag mutated" } " Tag " code { (tag) } " was re-pushed" }
                p { "It keeps running the content it pins; the tag now points elsewhere." }
                dl.facts {
                    dt { "Pinned (before the mutation)" } dd { (digest(old_digest)) }
                    dt { "Moved to" } dd { (digest(new_digest)) }
                    dt { "Now" } dd { @match current_digest { Some(d) => (digest(d)), None => span.muted { "the tag was removed" } } }
                    dt { "Found by" } dd { (found_by) ", seen " (time_or_dash(seen_at.as_ref())) }
                    dt { "Flagged" } dd { (time(at)) }
                }
            }
        },
    }
}

fn violation(pv: &PolicyViolation) -> Markup {
    let stage = match pv.stage {
        ViolationStage::Audited => "deployed under an audit policy although the image fails it",
        ViolationStage::Running => "a new verdict made the running image fail its policy",
    };
    html! {
        section.flag {
            h3 {
                span.badge.bad { "policy violated" } " "
                @if let Some(p) = &pv.policy { "Trust policy " code { (p) } } @else { "Trust policy" }
            }
            p { (stage) ", " (time(&pv.at)) "; digest " (digest(&pv.digest)) }
            ul {
                @for r in &pv.reasons {
                    li {
                        (reason_words(*r))
                        @let seen: Vec<&str> = pv.findings.iter().filter(|f| f.reason == *r && !f.detail.is_empty()).map(|f| f.detail.as_str()).collect();
                        @if !seen.is_empty() {
                            ul { @for d in seen { li { (d) } } }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /deployments/{id}/delete`.
pub(super) async fn delete(
    State(app): State<Arc<Deployer>>,
    Path(id): Path<String>,
    CsrfForm { viewer: v, .. }: CsrfForm<serde::de::IgnoredAny>,
) -> Response {
    if let Err(res) = v.require(Role::Deployer) {
        return res;
    }
    let Ok(parsed) = id.parse::<DeploymentId>() else {
        return not_found(&v, "There is no deployment at this address.");
    };
    match app.delete(&v.caller, parsed, super::traceparent()).await {
        Ok(()) => Redirect::to(&format!("/deployments/{parsed}?done=deleted")).into_response(),
        Err(e) => problem_page(&v, e),
    }
}
