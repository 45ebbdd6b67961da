//! One registry: details, status, last scan, and for admins rename, rotate credentials,
//! validate, remove, the repository rules editor and Sync now.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use imagelib_console::layout::{FieldAttrs, csrf_field, notice, text_field, time};
use imagelib_console::{CsrfForm, Nav, Viewer, html, page_with_status};
use imagelib_events::event::RuleSet;
use imagelib_events::model::SyncReason;
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;
use serde::Deserialize;

use super::add::{RegistryForm, checkbox, credential_fields, kind_of};
use super::{error_summary, form_errors, last_scan, next_scan, status_badge, type_name, visible};
use crate::app::Registries;
use crate::domain::registry::{RotateRequest, UpdateRequest};
use crate::store::Registry;

/// What removal stops, said on the page and in the confirmation.
const REMOVAL_STOPS: &str = "Removing this registry stops its scans and its webhooks, its images leave the library, and its stored credentials are destroyed. This cannot be undone.";

#[derive(Debug, Default)]
struct Errors {
    rename: Vec<(String, String)>,
    rotate: Vec<(String, String)>,
    rules: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Shown<'a> {
    done: Option<&'static str>,
    sync: Option<u64>,
    errors: Errors,
    /// The rules text as sent, when it was refused.
    rules_text: Option<String>,
    label: Option<&'a str>,
    rotate: Option<&'a RegistryForm>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DetailQuery {
    done: Option<String>,
    sync: Option<String>,
}

fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "added" => "The registry was added.",
        "renamed" => "The registry was renamed.",
        "rotated" => "New credentials saved.",
        "validated" => "The connection was checked: it works.",
        "validation-failed" => "The connection was checked and failed: see its status.",
        "rules-saved" => "Rules saved.",
        _ => return None,
    })
}

fn rule_patterns(rule: &RuleSet) -> String {
    rule.repositories
        .iter()
        .map(|p| match p {
            imagelib_events::model::RepositoryPattern::Exact(n) => n.to_string(),
            imagelib_events::model::RepositoryPattern::Glob(g) => g.clone(),
            imagelib_events::model::RepositoryPattern::Regex(r) => format!("/{r}/"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn render(
    app: &Registries,
    v: &Viewer,
    r: &Registry,
    status: StatusCode,
    shown: Shown<'_>,
) -> Response {
    let rules = match app.store().rules(r.id).await {
        Ok(rules) => rules,
        Err(e) => return super::problem_page(v, &Problem::internal(&e)),
    };
    let (yaml, editable) = super::rules_yaml::editable(r.id, &rules);
    let admin = v.may(Role::Admin);
    let kind = kind_of(r.registry_type);
    // The rotate form starts at the kind the registry has now.
    let empty = RegistryForm {
        credential_kind: kind_str(&r.auth_kind),
        ..Default::default()
    };
    let rotate_form = shown.rotate.unwrap_or(&empty);
    let now = Utc::now();
    let id = r.id;
    let other_rules: Vec<&RuleSet> = rules
        .iter()
        .filter(|x| !editable.iter().any(|e| e == x.rule_id.as_str()))
        .collect();
    let body = html! {
        h1 { (r.label) }
        (notice(shown.done))
        dl {
            dt { "Type" } dd { (type_name(r.registry_type)) }
            dt { "URL" } dd { code { (r.url) } @if r.insecure { " (plain HTTP)" } }
            dt { "Credentials" } dd { (kind_str(&r.auth_kind)) }
            dt { "Status" } dd { (status_badge(r)) " " @if let Some(t) = &r.validated_at { "(checked " (time(t)) ")" } }
            dt { "Visible to" } dd {
                @if r.visibility.is_empty() { "everyone" } @else { (r.visibility.join(", ")) }
            }
            dt { "Scan interval" } dd {
                @match r.scan_interval_secs {
                    Some(s) => { (super::duration_ms(s.saturating_mul(1000))) }
                    None => { "the scanner's default" }
                }
            }
            @if !r.repositories.is_empty() {
                dt { "Repositories listed" } dd { (r.repositories.join(", ")) }
            }
            @if let Some(proxy) = &r.proxy_url {
                dt { "Proxy" } dd {
                    code { (proxy) }
                    @if !r.no_proxy.is_empty() { " (not for " (r.no_proxy.join(", ")) ")" }
                }
            }
            @if let Some(resource) = &r.artifact_registry {
                dt { "Artifact Registry repository" } dd { code { (resource) } }
            }
            dt { "Webhook" } dd { code { "/v1/webhooks/" (id) } }
            dt { "Added" } dd { (time(&r.created_at)) @if let Some(by) = &r.created_by { " by " (by) } }
        }

        section aria-labelledby="scan-h" {
            h2 #scan-h { "Scans" }
            dl {
                dt { "Last scan" } dd { (last_scan(r)) }
                dt { "Next scan" } dd {
                    @if rules.iter().any(|x| x.enabled) { (next_scan(r, now)) }
                    @else { "not scheduled: the registry has no enabled rule" }
                }
            }
            @if let Some(seq) = shown.sync {
                @let state = match (r.last_sync_started_sequence, r.last_sync_state.as_deref()) {
                    (Some(s), Some(st)) if s > seq => st,
                    _ => "requested",
                };
                div.live data-sse={ "/registries/" (id) "/sync/" (seq) "/events" } {
                    h3 { "Sync progress" }
                    p { "State: " strong data-sse-state { (state) } }
                    ol.log aria-live="polite" {}
                    p.hint { "Without JavaScript, reload this page to see the last scan's result above." }
                }
            }
            @if admin {
                form.actions method="post" action={ "/registries/" (id) "/sync" } {
                    (csrf_field(v))
                    button type="submit" { "Sync now" }
                }
            }
        }

        section aria-labelledby="rules-h" {
            h2 #rules-h { "Repository rules" }
            @if rules.is_empty() {
                p { "No rules: nothing of this registry is discovered until a rule selects its repositories." }
            } @else {
                div.table-wrap {
                    table {
                        caption.sr-only { "Rules" }
                        thead { tr {
                            th scope="col" { "Rule" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Repositories" }
                            th scope="col" .hide-narrow { "Description" }
                            th scope="col" { "Enabled" }
                        } }
                        tbody {
                            @for rule in &rules {
                                tr {
                                    th scope="row" { code { (rule.rule_id.as_str()) } }
                                    td { (kind_str(&rule.kind)) }
                                    td { code { (rule_patterns(rule)) } }
                                    td.hide-narrow { (rule.description) }
                                    td { @if rule.enabled { "yes" } @else { "no" } }
                                }
                            }
                        }
                    }
                }
            }
            @if admin {
                (error_summary(&shown.errors.rules))
                form method="post" action={ "/registries/" (id) "/rules" } {
                    (csrf_field(v))
                    (text_field("rules", "Rules (agent YAML)", shown.rules_text.as_deref().unwrap_or(&yaml), &shown.errors.rules, FieldAttrs {
                        multiline: true,
                        hint: Some("The beacon agent's YAML, as imagelib rules import takes it: dispatcher.capabilities.provisioning.images.discovery.registry with postgres_repositories (database rules) and model_repositories (model rules); each entry a name (exact, glob or /regex/) with optional description, tags, hm_tags, enabled, trust and retention. Saving sets every rule of the text and removes the rules taken out of it; an empty text removes them all."),
                        ..Default::default()
                    }))
                    @if !other_rules.is_empty() {
                        p.hint {
                            "Not in the editor (set through the API or the CLI; saving leaves them as they are): "
                            @for (i, x) in other_rules.iter().enumerate() {
                                @if i > 0 { ", " } code { (x.rule_id.as_str()) }
                            }
                        }
                    }
                    button type="submit" { "Save rules" }
                }
            } @else if !yaml.is_empty() {
                h3 { "As agent YAML" }
                pre { code { (yaml) } }
            }
        }

        @if admin {
            section aria-labelledby="settings-h" {
                h2 #settings-h { "Settings" }
                h3 { "Rename" }
                (error_summary(&shown.errors.rename))
                form method="post" action={ "/registries/" (id) "/rename" } {
                    (csrf_field(v))
                    (text_field("label", "Name", shown.label.unwrap_or(&r.label), &shown.errors.rename, FieldAttrs { required: true, ..Default::default() }))
                    button type="submit" { "Rename" }
                }
                h3 { "Rotate credentials" }
                (error_summary(&shown.errors.rotate))
                form method="post" action={ "/registries/" (id) "/credentials" } {
                    (csrf_field(v))
                    p.hint { "The stored credentials are replaced; they are checked first unless you tick the box. They are never shown again." }
                    (credential_fields(kind, rotate_form, &shown.errors.rotate))
                    (checkbox("skip_validation", "Save without checking the connection", false, None))
                    button type="submit" { "Rotate credentials" }
                }
                h3 { "Check the connection" }
                form method="post" action={ "/registries/" (id) "/validate" } {
                    (csrf_field(v))
                    button.secondary type="submit" { "Validate connection" }
                }
                h3 { "Remove" }
                p { (REMOVAL_STOPS) }
                form method="post" action={ "/registries/" (id) "/remove" } data-confirm=(REMOVAL_STOPS) {
                    (csrf_field(v))
                    button.danger type="submit" { "Remove registry" }
                }
            }
        }
        p { a href="/registries" { "Back to Manage Repositories" } }
    };
    page_with_status(status, v, Nav::Registries, &r.label, body)
}

pub(super) async fn show(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
    v: Viewer,
) -> Response {
    let r = match visible(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let shown = Shown {
        done: q.done.as_deref().and_then(done_text),
        sync: q.sync.as_deref().and_then(|s| s.parse().ok()),
        ..Default::default()
    };
    render(&app, &v, &r, StatusCode::OK, shown).await
}

/// The registry of an admin's form, or the response refusing it.
async fn admin_target(app: &Registries, v: &Viewer, id: &str) -> Result<Registry, Response> {
    v.require(Role::Admin)?;
    visible(app, v, id).await
}

fn back(id: impl std::fmt::Display, done: &str) -> Response {
    Redirect::to(&format!("/registries/{id}?done={done}")).into_response()
}

/// A refusal that is not about a field of the form: its own page.
fn not_a_field(p: &Problem) -> bool {
    p.status >= 500 || matches!(p.status, 404 | 409)
}

#[derive(Debug, Deserialize)]
pub(super) struct RenameForm {
    #[serde(default)]
    label: String,
}

pub(super) async fn rename(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    CsrfForm { viewer: v, form }: CsrfForm<RenameForm>,
) -> Response {
    let r = match admin_target(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let req = UpdateRequest {
        label: Some(form.label.clone()),
        ..Default::default()
    };
    match app
        .update(
            &v.caller,
            r.id,
            req,
            None,
            crate::api::traceparent(&headers),
        )
        .await
    {
        Ok(_) => back(r.id, "renamed"),
        Err(e) => {
            let p = Problem::from(e);
            if not_a_field(&p) {
                return super::problem_page(&v, &p);
            }
            let shown = Shown {
                errors: Errors {
                    rename: form_errors(&p, "label"),
                    ..Default::default()
                },
                label: Some(&form.label),
                ..Default::default()
            };
            render(&app, &v, &r, StatusCode::UNPROCESSABLE_ENTITY, shown).await
        }
    }
}

pub(super) async fn rotate(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    CsrfForm { viewer: v, form }: CsrfForm<RegistryForm>,
) -> Response {
    let r = match admin_target(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let kind = kind_of(r.registry_type);
    let credentials = match form.credentials(kind) {
        Ok(c) => c,
        Err(e) => {
            let shown = Shown {
                errors: Errors {
                    rotate: vec![e],
                    ..Default::default()
                },
                rotate: Some(&form),
                ..Default::default()
            };
            return render(&app, &v, &r, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    let req = RotateRequest {
        credentials,
        validate: !form
            .skip_validation
            .as_deref()
            .is_some_and(|s| !s.is_empty() && s != "false"),
    };
    match app
        .rotate(&v.caller, r.id, req, crate::api::traceparent(&headers))
        .await
    {
        Ok(_) => back(r.id, "rotated"),
        Err(e) => {
            let p = Problem::from(e);
            if not_a_field(&p) {
                return super::problem_page(&v, &p);
            }
            let shown = Shown {
                errors: Errors {
                    rotate: form_errors(&p, form.secret_field(kind)),
                    ..Default::default()
                },
                rotate: Some(&form),
                ..Default::default()
            };
            render(&app, &v, &r, StatusCode::UNPROCESSABLE_ENTITY, shown).await
        }
    }
}

pub(super) async fn remove(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    CsrfForm { viewer: v, .. }: CsrfForm<serde::de::IgnoredAny>,
) -> Response {
    let r = match admin_target(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    match app
        .remove(&v.caller, r.id, crate::api::traceparent(&headers))
        .await
    {
        Ok(()) => Redirect::to("/registries?done=removed").into_response(),
        Err(e) => super::problem_page(&v, &Problem::from(e)),
    }
}

pub(super) async fn validate(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    CsrfForm { viewer: v, .. }: CsrfForm<serde::de::IgnoredAny>,
) -> Response {
    let r = match admin_target(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    match app
        .revalidate(&v.caller, r.id, crate::api::traceparent(&headers))
        .await
    {
        Ok((_, report)) if report.result.is_ok() => back(r.id, "validated"),
        Ok(_) => back(r.id, "validation-failed"),
        Err(e) => super::problem_page(&v, &Problem::from(e)),
    }
}

pub(super) async fn sync_now(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    CsrfForm { viewer: v, .. }: CsrfForm<serde::de::IgnoredAny>,
) -> Response {
    let r = match admin_target(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    match app
        .request_sync(
            &v.caller,
            r.id,
            None,
            SyncReason::Manual,
            crate::api::traceparent(&headers),
        )
        .await
    {
        Ok(seq) => Redirect::to(&format!("/registries/{}?sync={seq}", r.id)).into_response(),
        Err(e) => super::problem_page(&v, &Problem::from(e)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RulesForm {
    #[serde(default)]
    rules: String,
}

pub(super) async fn save_rules(
    State(app): State<Arc<Registries>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    CsrfForm { viewer: v, form }: CsrfForm<RulesForm>,
) -> Response {
    let r = match admin_target(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let refuse = |message: String| Shown {
        errors: Errors {
            rules: vec![("rules".to_owned(), message)],
            ..Default::default()
        },
        rules_text: Some(form.rules.clone()),
        ..Default::default()
    };
    // Parsed and checked whole before anything is written.
    let sets: Result<Vec<RuleSet>, imagelib_rules::RuleError> = if form.rules.trim().is_empty() {
        Ok(vec![])
    } else {
        imagelib_rules::parse_agent_yaml(&form.rules)
            .and_then(|imported| imported.iter().map(|i| i.to_rule_set(r.id)).collect())
    };
    let sets = match sets {
        Ok(s) => s,
        Err(e) => {
            let shown = refuse(e.to_string());
            return render(&app, &v, &r, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    let current = match app.store().rules(r.id).await {
        Ok(c) => c,
        Err(e) => return super::problem_page(&v, &Problem::internal(&e)),
    };
    let (_, editable) = super::rules_yaml::editable(r.id, &current);
    let tp = crate::api::traceparent(&headers);
    for set in &sets {
        if current.iter().any(|c| c == set) {
            continue;
        }
        if let Err(e) = app.set_rule(&v.caller, r.id, set.clone(), None, tp).await {
            let p = Problem::from(e);
            if not_a_field(&p) {
                return super::problem_page(&v, &p);
            }
            let shown = refuse(p.detail.unwrap_or(p.title));
            return render(&app, &v, &r, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    }
    for gone in editable
        .iter()
        .filter(|e| !sets.iter().any(|s| s.rule_id.as_str() == e.as_str()))
    {
        let Ok(rule_id) = gone.parse() else { continue };
        if let Err(e) = app.remove_rule(&v.caller, r.id, rule_id, None, tp).await {
            return super::problem_page(&v, &Problem::from(e));
        }
    }
    back(r.id, "rules-saved")
}
