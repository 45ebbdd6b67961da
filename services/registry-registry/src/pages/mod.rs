//! registry-registry's console pages: Manage Repositories (registries, credentials,
//! repository rules, sync now).
//!
//! Every change goes through the same [`Registries`] commands the JSON API calls (same
//! validation, same events, the signed-in viewer as the actor); refusals come back as the
//! API's problems and are shown at the form field their `errors[].pointer` names.

mod add;
mod detail;
mod rules_yaml;
mod sync;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use imagelib_console::layout::{error_page, notice, time, time_or_dash};
use imagelib_console::{Console, Markup, Nav, Viewer, html, page};
use imagelib_events::RegistryId;
use imagelib_events::model::RegistryType;
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;
use serde::Deserialize;

use crate::app::Registries;
use crate::store::{Registry, Status};

pub fn router(app: Arc<Registries>, console: Console) -> Router {
    let pages = Router::new()
        .route("/registries", get(manage).post(add::register))
        .route("/registries/new", get(add::new_form))
        .route("/registries/{id}", get(detail::show))
        .route("/registries/{id}/rename", post(detail::rename))
        .route("/registries/{id}/credentials", post(detail::rotate))
        .route("/registries/{id}/remove", post(detail::remove))
        .route("/registries/{id}/validate", post(detail::validate))
        .route("/registries/{id}/rules", post(detail::save_rules))
        .route("/registries/{id}/sync", post(detail::sync_now))
        .route("/registries/{id}/sync/{sequence}/events", get(sync::events))
        .with_state(app);
    imagelib_console::pages(pages, console)
}

/// How the console names a registry type (seed 004's names where it has them).
pub(crate) fn type_name(t: RegistryType) -> &'static str {
    match t {
        RegistryType::Generic => "Docker Registry",
        RegistryType::Harbor => "Harbor",
        RegistryType::Dockerhub => "Docker Hub",
        RegistryType::Ghcr => "GitHub",
        RegistryType::Ecr => "Amazon ECR",
        RegistryType::Acr => "Azure Container Registry",
        RegistryType::Gcr => "Google Artifact Registry",
    }
}

fn not_found(v: &Viewer) -> Response {
    error_page(
        v,
        StatusCode::NOT_FOUND,
        "Registry not found",
        "There is no registry with this id that you may see.",
    )
}

/// A problem that is not about a field the form has: its page.
fn problem_page(v: &Viewer, p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let detail = if status.is_server_error() {
        "Something went wrong on our side; try again shortly.".to_owned()
    } else {
        p.detail.clone().unwrap_or_else(|| p.title.clone())
    };
    error_page(v, status, &p.title, &detail)
}

/// The registry `id` if it exists and the viewer may see it (otherwise, as the API, it
/// does not exist for them).
async fn visible(app: &Registries, v: &Viewer, id: &str) -> Result<Registry, Response> {
    let Ok(id) = id.parse::<RegistryId>() else {
        return Err(not_found(v));
    };
    match app.live(id).await {
        Ok(r) if v.caller.sees(&r.visibility) => Ok(r),
        Ok(_) | Err(crate::app::CommandError::NotFound(_)) => Err(not_found(v)),
        Err(e) => Err(problem_page(v, &Problem::from(e))),
    }
}

/// The form field a problem's `errors[].pointer` names (`/credentials/username` →
/// `username`, `/repositories/2` → `repositories`).
fn field_of(pointer: &str) -> String {
    let mut parts = pointer.trim_start_matches('/').split('/');
    let first = parts.next().unwrap_or_default();
    let name = match first {
        "credentials" => match parts.next() {
            Some("kind") => "registry_type",
            Some("token") | None => "password",
            Some(other) => other,
        },
        "scan_interval_secs" => "scan_interval",
        other => other,
    };
    name.to_owned()
}

/// A problem as `(field, message)` pairs for the form: its field errors, or, for a
/// validation that failed with a reason, the field the reason is about.
fn form_errors(p: &Problem, secret_field: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = p
        .errors
        .iter()
        .map(|e| (field_of(&e.pointer), e.detail.clone()))
        .collect();
    if out.is_empty() {
        let detail = p.detail.clone().unwrap_or_else(|| p.title.clone());
        let field = match p.code.as_deref() {
            Some(
                "dns" | "tls" | "connect" | "timeout" | "not_a_registry" | "blocked"
                | "host_not_allowed" | "realm_not_allowed",
            ) => Some("url"),
            Some("unauthorized" | "forbidden") => Some(secret_field),
            _ => None,
        };
        out.push((field.unwrap_or("form").to_owned(), detail));
    }
    out
}

/// The summary of a refused form, above it (each error is also at its field).
fn error_summary(errors: &[(String, String)]) -> Markup {
    html! {
        @if !errors.is_empty() {
            div.error role="alert" {
                p { "Nothing was changed:" }
                ul { @for (_, e) in errors { li { (e) } } }
            }
        }
    }
}

fn status_badge(r: &Registry) -> Markup {
    let (class, text) = match r.status {
        Status::Validated => ("badge ok", "validated"),
        Status::Pending => ("badge warn", "pending"),
        Status::ValidationFailed => ("badge bad", "failed"),
        Status::CredentialsUnavailable => ("badge bad", "credentials unavailable"),
    };
    html! {
        span class=(class) { (text) }
        @if matches!(r.status, Status::ValidationFailed | Status::CredentialsUnavailable) {
            @if let Some(reason) = &r.status_reason { " " code { (reason) } }
            @if let Some(d) = &r.status_detail { br; small { (d) } }
        }
    }
}

pub(crate) fn duration_ms(ms: u64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn count(summary: &serde_json::Value, key: &str) -> u64 {
    summary.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The last scan: result, counts, duration and errors.
fn last_scan(r: &Registry) -> Markup {
    let Some(state) = r.last_sync_state.as_deref() else {
        return html! { span.muted { "never scanned" } };
    };
    let null = serde_json::Value::Null;
    let s = r.last_sync_summary.as_ref().unwrap_or(&null);
    let class = match state {
        "completed" => "badge ok",
        "failed" => "badge bad",
        _ => "badge warn",
    };
    html! {
        span class=(class) { (state) } " " (time_or_dash(r.last_sync_at.as_ref()))
        @if matches!(state, "completed" | "partial") {
            br;
            small {
                (count(s, "repositories")) " repositories, " (count(s, "tags_seen")) " tags: "
                (count(s, "added")) " added, " (count(s, "moved")) " moved, "
                (count(s, "removed")) " removed; " (duration_ms(count(s, "duration_ms")))
            }
            @let limited = s.get("rate_limited").and_then(|v| v.as_array()).map_or(0, Vec::len);
            @let incomplete = s.get("incomplete").and_then(|v| v.as_array());
            @if limited > 0 {
                br; small { (limited) " repositories deferred after a rate limit (429)" }
            }
            @if let Some(list) = incomplete.filter(|l| !l.is_empty()) {
                br;
                small {
                    "Incomplete: "
                    @for (i, e) in list.iter().take(5).enumerate() {
                        @if i > 0 { "; " }
                        (e.get("repository").and_then(|v| v.as_str()).unwrap_or("_catalog"))
                        " ("
                        (e.get("reason").map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).unwrap_or_default())
                        ")"
                    }
                    @if list.len() > 5 || count(s, "incomplete_more") > 0 { "; …" }
                }
            }
        }
        @if state == "failed" {
            @if let Some(reason) = s.get("reason").and_then(|v| v.as_str()) {
                br; small { "Error: " (reason) }
            }
        }
    }
}

/// When the next scheduled scan is due, from the interval and the last scan.
fn next_scan(r: &Registry, now: DateTime<Utc>) -> Markup {
    if r.last_sync_state.as_deref() == Some("running") {
        return html! { "after the running scan" };
    }
    match (r.scan_interval_secs, r.last_sync_at) {
        (Some(secs), Some(at)) => {
            let due = at + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64);
            if due <= now {
                html! { "due now" }
            } else {
                html! { "about " (time(&due)) }
            }
        }
        (Some(secs), None) => {
            html! { "within " (duration_ms(secs.saturating_mul(1000))) " of the first round" }
        }
        (None, _) => html! {
            "on the scanner's interval (" code { "IMAGELIB_SCANNER__INTERVAL_SECS" } ")"
        },
    }
}

#[derive(Debug, Default, Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

async fn manage(
    State(app): State<Arc<Registries>>,
    v: Viewer,
    Query(q): Query<DoneQuery>,
) -> Response {
    let all = match app.list().await {
        Ok(all) => all,
        Err(e) => return problem_page(&v, &Problem::from(e)),
    };
    let mut shown: Vec<Registry> = all
        .into_iter()
        .filter(|r| v.caller.sees(&r.visibility))
        .collect();
    shown.sort_by_key(|a| a.label.to_lowercase());
    // The scanner schedules only registries with an enabled rule.
    let mut scheduled = std::collections::HashSet::new();
    for r in &shown {
        match app.store().rules(r.id).await {
            Ok(rules) if rules.iter().any(|x| x.enabled) => {
                scheduled.insert(r.id);
            }
            Ok(_) => {}
            Err(e) => return problem_page(&v, &Problem::internal(&e)),
        }
    }
    let done = match q.done.as_deref() {
        Some("removed") => Some("The registry was removed: its scans and webhooks stopped."),
        _ => None,
    };
    let now = Utc::now();
    let admin = v.may(Role::Admin);
    page(
        &v,
        Nav::Registries,
        "Manage Repositories",
        html! {
            h1 { "Manage Repositories" }
            (notice(done))
            @if admin {
                p.actions { a.button href="/registries/new" { "Add registry" } }
            }
            @if shown.is_empty() {
                p { "No registries yet." @if admin { " Add one to start scanning it." } }
            } @else {
                div.table-wrap {
                    table {
                        caption.sr-only { "Registries" }
                        thead {
                            tr {
                                th scope="col" { "Registry" }
                                th scope="col" { "Type" }
                                th scope="col" .hide-narrow { "URL" }
                                th scope="col" { "Status" }
                                th scope="col" { "Last scan" }
                                th scope="col" .hide-narrow { "Next scan" }
                            }
                        }
                        tbody {
                            @for r in &shown {
                                tr {
                                    th scope="row" { a href={ "/registries/" (r.id) } { (r.label) } }
                                    td { (type_name(r.registry_type)) }
                                    td.hide-narrow { code { (r.url) } }
                                    td { (status_badge(r)) }
                                    td { (last_scan(r)) }
                                    td.hide-narrow {
                                        @if scheduled.contains(&r.id) { (next_scan(r, now)) }
                                        @else { "not scheduled: no enabled rule" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_name_form_fields() {
        assert_eq!(field_of("/credentials/username"), "username");
        assert_eq!(field_of("/credentials/token"), "password");
        assert_eq!(field_of("/credentials/kind"), "registry_type");
        assert_eq!(field_of("/repositories/3"), "repositories");
        assert_eq!(field_of("/url"), "url");
        assert_eq!(field_of("label"), "label");
    }

    #[test]
    fn a_failed_validation_lands_at_the_field_it_is_about() {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "dns", "no such host");
        assert_eq!(form_errors(&p, "password")[0].0, "url");
        p.code = Some("unauthorized".into());
        assert_eq!(form_errors(&p, "client_secret")[0].0, "client_secret");
        p.code = Some("rate_limited".into());
        assert_eq!(form_errors(&p, "password")[0].0, "form");
        assert_eq!(duration_ms(61_500), "1 min 1 s");
    }
}
