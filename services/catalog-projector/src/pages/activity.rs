//! `GET /activity`: the audit trail (the catalog's audit projection, the rows and
//! visibility of `GET /v1/audit`), newest first, filterable by type and subject; and
//! `GET /activity/stream`: the same filters as server-sent events, polled from the
//! trail about once a second, for as long as the browser listens.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use imagelib_console::layout::{FieldAttrs, next_link, text_field, time, with_query};
use imagelib_console::{Markup, Nav, Viewer, html, page_with_status};
use serde::Serialize;

use super::{Params, console_href, field_errors, form_errors, problem_page};
use crate::api::audit::{self, AuditEntry, AuditFilter, AuditQuery};
use crate::curate::Catalog;

/// The filters of the page (and of its stream).
const FILTERS: &[&str] = &["type", "actor", "registry", "repository"];
/// The most rows one poll of the stream sends.
pub const ROWS_PER_POLL: i64 = 100;
/// How often the stream looks for new rows.
pub const POLL: Duration = Duration::from_secs(1);

fn api_query(p: &Params, cursor: bool) -> AuditQuery {
    AuditQuery {
        actor: p.owned("actor"),
        event_type: p.owned("type"),
        registry: p.owned("registry"),
        repository: p.owned("repository"),
        cursor: if cursor { p.owned("cursor") } else { None },
        ..Default::default()
    }
}

pub(super) async fn show(
    State(catalog): State<Arc<Catalog>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = Params::new(q);
    match api_query(&p, true).filter(&v.caller) {
        Ok(f) => match audit::page(catalog.pool(), &f).await {
            Ok(page) => render(
                &v,
                &p,
                StatusCode::OK,
                &page.items,
                page.next_cursor.as_deref(),
                &[],
            ),
            Err(e) => problem_page(&v, &db_problem(e)),
        },
        Err(problem) if problem.status == 422 || problem.status == 400 => render(
            &v,
            &p,
            StatusCode::UNPROCESSABLE_ENTITY,
            &[],
            None,
            &field_errors(&problem),
        ),
        Err(problem) => problem_page(&v, &problem),
    }
}

fn db_problem(e: sqlx::Error) -> imagelib_platform::Problem {
    if crate::projection::is_unavailable(&e) {
        imagelib_platform::Problem::unavailable("the database is unavailable; retry shortly")
    } else {
        imagelib_platform::Problem::internal(&e)
    }
}

/// `<time> <actor> <type> <subject>`: one line of the trail.
fn line(e: &AuditEntry) -> String {
    format!(
        "{} {} {} {}",
        e.time.format("%Y-%m-%d %H:%M:%S UTC"),
        e.actor.as_deref().unwrap_or("-"),
        short_type(&e.event_type),
        e.subject
    )
}

/// `io.imagelib.catalog.approved.v1` → `catalog.approved`.
fn short_type(t: &str) -> &str {
    let t = t.strip_prefix("io.imagelib.").unwrap_or(t);
    match t.rsplit_once(".v") {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => t,
    }
}

fn entry(e: &AuditEntry) -> Markup {
    let href = console_href(e.link.as_deref());
    html! {
        li {
            (time(&e.time)) " "
            span.actor { (e.actor.as_deref().unwrap_or("-")) } " "
            code { (short_type(&e.event_type)) } " "
            @match &href {
                Some(h) => a href=(h) { (e.subject) },
                None => span { (e.subject) },
            }
            @if !e.summary.is_empty() { br; span.muted { (e.summary) } }
        }
    }
}

fn render(
    v: &Viewer,
    p: &Params,
    status: StatusCode,
    items: &[AuditEntry],
    next: Option<&str>,
    errors: &[(String, String)],
) -> Response {
    let keep = p.pairs(FILTERS);
    let first_page = p.get("cursor").is_none();
    let newest = items.first().map_or(0, |e| e.sequence);
    let mut stream_params = keep.clone();
    let after = newest.to_string();
    stream_params.push(("after", after.as_str()));
    let stream = with_query("/activity/stream", &stream_params, None);
    let body = html! {
        h1 { "Activity" }
        form.filters method="get" action="/activity" role="search" aria-label="Filter the activity" {
            (form_errors(errors, FILTERS))
            (text_field("type", "Event type", p.shown("type"), errors,
                FieldAttrs { hint: Some("e.g. catalog.approved, image.*"), ..Default::default() }))
            (text_field("actor", "Actor", p.shown("actor"), errors,
                FieldAttrs { hint: Some("e.g. alice, system:*"), ..Default::default() }))
            (text_field("registry", "Registry id", p.shown("registry"), errors, FieldAttrs::default()))
            (text_field("repository", "Repository", p.shown("repository"), errors, FieldAttrs::default()))
            div.actions {
                button type="submit" { "Apply" }
                a href="/activity" { "Reset" }
            }
        }
        @if errors.is_empty() {
            @if first_page {
                div.live data-sse=(stream) data-sse-mode="prepend" {
                    p.muted { "Newest first. New events appear at the top while this page is open: "
                        span data-sse-state aria-live="polite" { "live" } }
                    ol.log #activity reversed { @for e in items { (entry(e)) } }
                }
            } @else {
                ol.log #activity { @for e in items { (entry(e)) } }
            }
            @if items.is_empty() { p { "No event matches." } }
            (next_link("/activity", &keep, next))
        }
    };
    page_with_status(status, v, Nav::Activity, "Activity", body)
}

#[derive(Serialize)]
struct Message {
    line: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    href: Option<String>,
}

struct Tail {
    pool: sqlx::PgPool,
    filter: AuditFilter,
    pending: VecDeque<AuditEntry>,
    first: bool,
}

/// The trail after `filter.after`, as it grows: one poll per [`POLL`], at most
/// [`ROWS_PER_POLL`] rows each, oldest first. Dropped (and so ended) when the client goes.
fn tail(t: Tail) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(t, |mut t| async move {
        loop {
            if let Some(e) = t.pending.pop_front() {
                t.filter.after = Some(e.sequence.max(t.filter.after.unwrap_or(0)));
                let msg = Message {
                    line: line(&e),
                    href: console_href(e.link.as_deref()),
                };
                let data = serde_json::to_string(&msg).unwrap_or_default();
                return Some((Ok(Event::default().data(data)), t));
            }
            if !t.first {
                tokio::time::sleep(POLL).await;
            }
            t.first = false;
            match audit::page(&t.pool, &t.filter).await {
                Ok(page) => t.pending.extend(page.items),
                Err(e) => {
                    tracing::warn!(error = %e, "activity stream: the trail could not be read")
                }
            }
        }
    })
}

pub(super) async fn stream(
    State(catalog): State<Arc<Catalog>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = Params::new(q);
    let mut filter = match api_query(&p, false).filter(&v.caller) {
        Ok(f) => f,
        Err(problem) => return problem_page(&v, &problem),
    };
    let after = match p.get("after").map(str::parse::<i64>) {
        Some(Ok(n)) if n >= 0 => n,
        Some(_) => {
            return problem_page(
                &v,
                &imagelib_platform::Problem::validation("after", "a stream sequence (a number)"),
            );
        }
        None => {
            // From now on.
            match sqlx::query_scalar::<_, Option<i64>>("SELECT max(sequence) FROM audit")
                .fetch_one(catalog.pool())
                .await
            {
                Ok(n) => n.unwrap_or(0),
                Err(e) => return problem_page(&v, &db_problem(e)),
            }
        }
    };
    filter.after = Some(after);
    filter.before = None;
    filter.limit = ROWS_PER_POLL;
    let t = Tail {
        pool: catalog.pool().clone(),
        filter,
        pending: VecDeque::new(),
        first: true,
    };
    Sse::new(tail(t))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_shown_short() {
        assert_eq!(
            short_type("io.imagelib.catalog.approved.v1"),
            "catalog.approved"
        );
        assert_eq!(
            short_type("io.imagelib.image.tag_moved.v12"),
            "image.tag_moved"
        );
        assert_eq!(short_type("other"), "other");
    }
}
