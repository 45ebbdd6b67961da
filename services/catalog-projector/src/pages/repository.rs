//! `GET /repositories/{registry_id}/{*name}`: a repository, its tags, README, HM tags,
//! approvals, history and trust; `POST` to the same path: the curator actions (HM tags,
//! README, approve, reject), through the same [`Catalog`] commands as the API.
//!
//! A form names its action in the field `action` rather than in the path, so that no
//! repository name (which may end in `/approve`) is ever mistaken for a command.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use imagelib_console::layout::{
    FieldAttrs, bytes, csrf_field, digest, error_page, field_error, notice, text_field, time,
    time_or_dash, with_query,
};
use imagelib_console::{CsrfForm, Markup, Nav, PreEscaped, Viewer, html, page_with_status};
use imagelib_events::model::HmTag;
use imagelib_events::{RegistryId, RepositoryName, Tag};
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;
use serde::Deserialize;
use sqlx::Row;

use super::markdown;
use super::{Params, problem_page};
use crate::api::images::{self, KeptPage};
use crate::api::repositories::repository;
use crate::api::rows::TagRow;
use crate::api::views::RepositoryDetail;
use crate::curate::{Catalog, CommandError, RepoRef};
use crate::query::ImageFilter;

/// Moves listed in the history.
const HISTORY_ROWS: i64 = 200;
/// Tags listed as of a time.
const AS_OF_ROWS: i64 = 500;
/// Tags shown with their details unless `?tags=all` (the Image Library pages the rest).
const DETAIL_TAGS: usize = 100;
/// Digests listed with their referrers.
const REFERRER_ROWS: usize = 200;

/// What a form changed (`?done=`), in the page's words.
fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "approved" => "Approved.",
        "rejected" => "Rejected.",
        "labeled" => "HM tag added.",
        "unlabeled" => "HM tag removed.",
        "readme" => "README saved.",
        _ => return None,
    })
}

/// The repository a path names, or a `404` page that names what was asked, escaped.
fn target(v: &Viewer, registry: &str, name: &str) -> Result<RepoRef, Response> {
    let not_found = || {
        error_page(
            v,
            StatusCode::NOT_FOUND,
            "Repository not found",
            &format!("There is no repository `{name}` in registry `{registry}` that you can see."),
        )
    };
    let registry_id: RegistryId = registry.parse().map_err(|_| not_found())?;
    let name: RepositoryName = name.trim_matches('/').parse().map_err(|_| not_found())?;
    Ok(RepoRef { registry_id, name })
}

fn detail_href(repo: &RepoRef) -> String {
    format!("/repositories/{}/{}", repo.registry_id, repo.name)
}

/// `as_of`: RFC 3339, or what a `datetime-local` input sends (taken as UTC).
fn parse_as_of(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "`{s}` is not a time: give RFC 3339 (2025-01-31T12:00:00Z) or pick a date and time (UTC)"
    ))
}

/// What the page shows beside the repository: its history, the tags as of a time, and
/// the state of a form sent with errors.
#[derive(Default)]
struct Extra {
    history: Vec<Move>,
    as_of: Option<(DateTime<Utc>, Arc<KeptPage>)>,
    as_of_value: String,
    errors: Vec<(String, String)>,
    /// The form the errors belong to: its action and tag.
    failed: Option<(String, Option<String>)>,
    readme_value: Option<String>,
    done: Option<&'static str>,
    /// `?tags=all`: every tag, not the first [`DETAIL_TAGS`].
    all_tags: bool,
}

struct Move {
    tag: String,
    digest: String,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

async fn history(catalog: &Catalog, repo: &RepoRef) -> Result<Vec<Move>, Problem> {
    let rows = sqlx::query(
        "SELECT tag, digest, valid_from, valid_to FROM tag_versions
         WHERE repo_id = $1 ORDER BY valid_from DESC, tag LIMIT $2",
    )
    .bind(repo.id())
    .bind(HISTORY_ROWS)
    .fetch_all(catalog.pool())
    .await
    .map_err(|e| Problem::internal(&e))?;
    rows.iter()
        .map(|r| {
            Ok(Move {
                tag: r.try_get(0)?,
                digest: r.try_get(1)?,
                from: r.try_get(2)?,
                to: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| Problem::internal(&e))
}

pub(super) async fn show(
    State(catalog): State<Arc<Catalog>>,
    v: Viewer,
    Path((registry, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let repo = match target(&v, &registry, &name) {
        Ok(r) => r,
        Err(res) => return res,
    };
    let p = Params::new(q);
    let mut extra = Extra {
        done: p.get("done").and_then(done_text),
        as_of_value: p.shown("as_of").to_owned(),
        all_tags: p.get("tags") == Some("all"),
        ..Default::default()
    };
    let mut status = StatusCode::OK;
    let as_of = match p.get("as_of").map(parse_as_of) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            extra.errors.push(("as_of".into(), e));
            status = StatusCode::UNPROCESSABLE_ENTITY;
            None
        }
    };
    render(&catalog, &v, &repo, status, extra, as_of).await
}

/// Read the repository and everything the page shows, then the page.
async fn render(
    catalog: &Catalog,
    v: &Viewer,
    repo: &RepoRef,
    status: StatusCode,
    mut extra: Extra,
    as_of: Option<DateTime<Utc>>,
) -> Response {
    let kept = match repository(catalog, &v.caller, repo).await {
        Ok(d) => d,
        Err(p) if p.status == 404 => {
            return error_page(
                v,
                StatusCode::NOT_FOUND,
                "Repository not found",
                &format!(
                    "There is no repository `{}` in registry `{}` that you can see.",
                    repo.name, repo.registry_id
                ),
            );
        }
        Err(p) => return problem_page(v, &p),
    };
    match history(catalog, repo).await {
        Ok(h) => extra.history = h,
        Err(p) => return problem_page(v, &p),
    }
    if let Some(t) = as_of {
        let f = ImageFilter {
            teams: v.caller.team_filter().map(<[String]>::to_vec),
            registry: Some(repo.registry_id.0),
            repository: Some(repo.name.as_str().to_owned()),
            as_of: Some(t),
            fetch: AS_OF_ROWS + 1,
            ..Default::default()
        };
        match images::page(catalog, &f, AS_OF_ROWS).await {
            Ok(page) => extra.as_of = Some((t, page)),
            Err(p) => return problem_page(v, &p),
        }
    }
    let detail = &kept.value;
    let title = detail.repository.name.clone();
    page_with_status(
        status,
        v,
        Nav::Images,
        &title,
        body(v, repo, detail, &extra),
    )
}

fn badge_for_decision(d: &str) -> Markup {
    html! {
        @match d {
            "approved" => span.badge.ok { "approved" },
            "rejected" => span.badge.bad { "rejected" },
            other => span.badge { (other) },
        }
    }
}

/// A JSON object of strings (labels, annotations) as a description list.
fn key_values(json: &str) -> Markup {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    html! {
        @if map.is_empty() {
            span.muted { "none" }
        } @else {
            dl.kv {
                @for (k, val) in &map {
                    dt { code { (k) } }
                    dd { @match val { serde_json::Value::String(s) => (s), other => (other.to_string()) } }
                }
            }
        }
    }
}

/// The Postgres extensions an image declares.
fn extensions(json: &str) -> Markup {
    let list: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    html! {
        @if list.is_empty() {
            span.muted { "none" }
        } @else {
            ul {
                @for e in &list {
                    li {
                        @if let Some(n) = e.get("name").and_then(|n| n.as_str()) {
                            code { (n) }
                            @if let Some(ver) = e.get("version").and_then(|n| n.as_str()) { " " (ver) }
                        } @else {
                            code { (e.to_string()) }
                        }
                    }
                }
            }
        }
    }
}

fn trust(t: &TagRow) -> Markup {
    let tr = &t.image.trust;
    html! {
        @if tr.signed { span.badge.ok { "signed" } } @else { span.badge { "unsigned" } }
        @if let Some(s) = &tr.max_severity {
            " "
            @match s.as_str() {
                "critical" | "high" => span.badge.bad { "severity " (s) },
                "medium" => span.badge.warn { "severity " (s) },
                _ => span.badge.ok { "severity " (s) },
            }
        }
        @if let Some(p) = &tr.policy {
            " "
            @match p.verdict.as_str() {
                "pass" => span.badge.ok { "policy pass" },
                "fail" => span.badge.bad { "policy fail" },
                other => span.badge.warn { "policy " (other) },
            }
        }
        @if t.image.mutated.is_some() {
            " " span.badge.bad title="Moved although policy calls it immutable" { "mutated" }
        }
    }
}

/// The error of the form `(action, tag)` at `field`, if that form was the one sent.
fn error_at<'a>(extra: &'a Extra, action: &str, tag: Option<&str>, field: &str) -> Option<&'a str> {
    match &extra.failed {
        Some((a, t)) if a == action && t.as_deref() == tag => field_error(&extra.errors, field),
        _ => None,
    }
}

/// A reason input with a unique id and its error.
fn reason_input(id: &str, label: &str, required: bool, err: Option<&str>) -> Markup {
    let err_id = format!("{id}-error");
    html! {
        label for=(id) { (label) }
        input id=(id) name="reason" type="text" maxlength="2000" required[required]
            aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| err_id.as_str())];
        @if let Some(e) = err { p.field-error id=(err_id) { (e) } }
    }
}

/// Approve and reject forms for the repository (`tag` none) or a tag at its digest.
fn decision_forms(
    v: &Viewer,
    href: &str,
    extra: &Extra,
    tag: Option<(&str, &str)>,
    n: usize,
) -> Markup {
    let t = tag.map(|(t, _)| t);
    let what = match t {
        Some(t) => format!("tag {t}"),
        None => "the repository".to_owned(),
    };
    html! {
        div.actions {
            form method="post" action=(href) {
                (csrf_field(v))
                input type="hidden" name="action" value="approve";
                @if let Some((t, d)) = tag {
                    input type="hidden" name="tag" value=(t);
                    input type="hidden" name="digest" value=(d);
                }
                button type="submit" { "Approve" span.sr-only { " " (what) } }
            }
            form method="post" action=(href) {
                (csrf_field(v))
                input type="hidden" name="action" value="reject";
                @if let Some((t, d)) = tag {
                    input type="hidden" name="tag" value=(t);
                    input type="hidden" name="digest" value=(d);
                }
                (reason_input(&format!("reject-reason-{n}"), "Reason", true, error_at(extra, "reject", t, "reason")))
                button.danger type="submit" { "Reject" span.sr-only { " " (what) } }
            }
            @if let Some(e) = error_at(extra, "approve", t, "reason").or(error_at(extra, "approve", t, "digest")) {
                p.field-error role="alert" { (e) }
            }
        }
    }
}

fn body(v: &Viewer, repo: &RepoRef, d: &RepositoryDetail, extra: &Extra) -> Markup {
    let r = &d.repository;
    let href = detail_href(repo);
    let curator = v.may(Role::Curator);
    let general: Vec<&(String, String)> = extra
        .errors
        .iter()
        .filter(|(f, _)| f.is_empty() || f == "tag" || f == "digest" || f == "action")
        .collect();
    let shown = if extra.all_tags {
        d.tags.len()
    } else {
        d.tags.len().min(DETAIL_TAGS)
    };
    let tags = &d.tags[..shown];
    html! {
        h1 { (r.name) }
        p.muted {
            "Registry " strong { (r.registry) } " · " (r.kind)
            @if let Some(m) = &r.model_type { " · " (m) }
            " · " (r.tag_count) " tags · first seen " (time(&r.first_seen)) " · updated " (time(&r.updated_at))
        }
        @if !r.description.is_empty() { p { (r.description) } }
        (notice(extra.done))
        @for (_, e) in &general { p.error role="alert" { (e) } }

        section aria-labelledby="tags-h" {
            h2 #tags-h { "Tags" }
            @if d.tags.is_empty() {
                p { "No tag now." }
            } @else {
                div.table-wrap {
                    table #tags {
                        caption.sr-only { "Tags of " (r.name) }
                        thead { tr {
                            th scope="col" { "Tag" }
                            th scope="col" { "Digest" }
                            th scope="col" { "Platforms" }
                            th scope="col" { "Size" }
                            th.hide-narrow scope="col" { "Created" }
                            th.hide-narrow scope="col" { "First seen" }
                            th.hide-narrow scope="col" { "Last seen" }
                            th scope="col" { "HM tags" }
                            th scope="col" { "Approval" }
                            th scope="col" { "Trust" }
                            @if curator { th scope="col" { "Curate" } }
                        } }
                        tbody {
                            @for (n, t) in tags.iter().enumerate() {
                                @let i = &t.image;
                                tr {
                                    th scope="row" { a href={ "#tag-" (n) } { code { (i.tag) } } }
                                    td { (digest(&i.digest)) }
                                    td { (i.architectures.join(", ")) }
                                    td { (bytes(i.size)) }
                                    td.hide-narrow { (time_or_dash(i.created.as_ref())) }
                                    td.hide-narrow { (time(&i.first_seen)) }
                                    td.hide-narrow { (time(&i.last_seen)) }
                                    td { @for h in &i.hm_tags { span.badge { (h) } " " } }
                                    td {
                                        @match &i.approval { Some(a) => (badge_for_decision(a)), None => span.muted { "—" } }
                                    }
                                    td { (trust(t)) }
                                    @if curator {
                                        td { (decision_forms(v, &href, extra, Some((&i.tag, &i.digest)), n + 1)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if shown < d.tags.len() {
                    p.notice {
                        "Showing the first " (shown) " of " (d.tags.len()) " tags: "
                        a href=(with_query(&href, &[("tags", "all")], None)) { "show all of them here" }
                        ", or "
                        a href=(with_query("/", &[("registry", &repo.registry_id.to_string()), ("repository", repo.name.as_str())], None)) {
                            "page through them in the Image Library"
                        }
                        "."
                    }
                }
                @for (n, t) in tags.iter().enumerate() {
                    (tag_section(n, t))
                }
            }
        }

        section aria-labelledby="readme-h" {
            h2 #readme-h { "README" }
            @match &d.readme {
                Some(rd) => {
                    div.readme { (PreEscaped(markdown::render(&rd.readme))) }
                    p.muted { "Updated " (time(&rd.updated_at)) @if let Some(by) = &rd.updated_by { " by " (by) } }
                }
                None => p.muted { "No README." },
            }
            @if curator {
                details open[extra.readme_value.is_some()] {
                    summary { "Edit the README" }
                    form method="post" action=(href) {
                        (csrf_field(v))
                        input type="hidden" name="action" value="readme";
                        (text_field("readme", "README (Markdown)",
                            extra.readme_value.as_deref().or(d.readme.as_ref().map(|r| r.readme.as_str())).unwrap_or(""),
                            if matches!(&extra.failed, Some((a, _)) if a == "readme") { &extra.errors } else { &[] },
                            FieldAttrs { multiline: true, ..Default::default() }))
                        button type="submit" { "Save README" }
                    }
                }
            }
        }

        section aria-labelledby="hm-h" {
            h2 #hm-h { "HM tags" }
            @if r.hm_tags.is_empty() { p.muted { "None." } }
            ul.actions {
                @for h in &d.rule_hm_tags {
                    li { span.badge { (h) } " " span.muted { "from rule " (d.rule_id.as_deref().unwrap_or("")) } }
                }
                @for h in &d.curator_hm_tags {
                    li {
                        span.badge { (h) }
                        @if curator {
                            form method="post" action=(href) {
                                (csrf_field(v))
                                input type="hidden" name="action" value="unlabel";
                                input type="hidden" name="hm_tag" value=(h);
                                button.link type="submit" { "Remove" span.sr-only { " HM tag " (h) } }
                            }
                        }
                    }
                }
            }
            @if curator {
                form method="post" action=(href) {
                    (csrf_field(v))
                    input type="hidden" name="action" value="label";
                    (text_field("hm_tag", "Add an HM tag",
                        "",
                        if matches!(&extra.failed, Some((a, _)) if a == "label" || a == "unlabel") { &extra.errors } else { &[] },
                        FieldAttrs { hint: Some("Lower case, e.g. approved-production."), ..Default::default() }))
                    button type="submit" { "Add HM tag" }
                }
            }
        }

        section aria-labelledby="approval-h" {
            h2 #approval-h { "Approval" }
            @match &r.approval {
                Some(a) => p {
                    (badge_for_decision(&a.decision)) " "
                    @if let Some(by) = &a.by { "by " (by) " " }
                    (time(&a.at))
                    @if !a.reason.is_empty() { ": " (a.reason) }
                },
                None => p.muted { "No decision on the repository." },
            }
            @for t in d.tags.iter().filter(|t| t.tag_approval.is_some()) {
                @if let Some(a) = &t.tag_approval {
                    p {
                        "Tag " code { (t.image.tag) } " " (badge_for_decision(&a.decision))
                        @if let Some(dg) = &a.digest { " at " (digest(dg)) }
                        @if let Some(by) = &a.by { " by " (by) }
                        " " (time(&a.at))
                        @if !a.reason.is_empty() { ": " (a.reason) }
                    }
                }
            }
            @if curator { (decision_forms(v, &href, extra, None, 0)) }
        }

        section aria-labelledby="history-h" {
            h2 #history-h { "History" }
            form method="get" action=(href) {
                (text_field("as_of", "Tags as of (UTC)", &extra.as_of_value, &extra.errors,
                    FieldAttrs { hint: Some("RFC 3339, e.g. 2025-01-31T12:00:00Z, or YYYY-MM-DDTHH:MM."), ..Default::default() }))
                button type="submit" { "Show" }
            }
            @if let Some((at, kept)) = &extra.as_of {
                @let items = &kept.value.items;
                h3 { "Tags as of " (time(at)) }
                @if items.is_empty() { p { "No tag then." } } @else {
                    div.table-wrap { table #as-of {
                        thead { tr { th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "Since" } th scope="col" { "Until" } } }
                        tbody { @for i in items { tr {
                            td { code { (i.tag) } } td { (digest(&i.digest)) } td { (time(&i.updated_at)) } td { (time_or_dash(i.valid_to.as_ref())) }
                        } } }
                    } }
                }
            }
            h3 { "Moves" }
            @if extra.history.is_empty() { p.muted { "None." } } @else {
                div.table-wrap { table #history {
                    caption.sr-only { "Each digest a tag pointed at, newest first" }
                    thead { tr { th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "From" } th scope="col" { "Until" } } }
                    tbody { @for m in &extra.history { tr {
                        td { code { (m.tag) } } td { (digest(&m.digest)) } td { (time(&m.from)) }
                        td { @match &m.to { Some(t) => (time(t)), None => "now" } }
                    } } }
                } }
            }
        }

        section aria-labelledby="referrers-h" {
            h2 #referrers-h { "Referrers" }
            @if d.referrers.iter().all(|x| x.referrers.is_empty()) { p.muted { "No signature, SBOM or attestation attached." } } @else {
                div.table-wrap { table #referrers {
                    thead { tr { th scope="col" { "Digest" } th scope="col" { "Tags" } th scope="col" { "Platform" } th scope="col" { "Attached" } } }
                    tbody { @for x in d.referrers.iter().filter(|x| !x.referrers.is_empty()).take(REFERRER_ROWS) { tr {
                        td { (digest(&x.digest)) }
                        td { (x.tags.join(", ")) }
                        td { (x.platform.as_deref().unwrap_or("—")) }
                        td { ul { @for rf in &x.referrers { li { (rf.kind) " " (digest(&rf.digest)) } } } }
                    } } }
                } }
            }
        }

        section aria-labelledby="used-h" {
            h2 #used-h { "Used by" }
            @if d.used_by.is_empty() { p.muted { "No deployment the catalog knows of." } } @else {
                ul { @for dp in &d.used_by {
                    li {
                        a href={ "/deployments/" (dp.deployment_id) } { (dp.namespace) "/" (dp.name) }
                        " (" (dp.workload) ", tag " code { (dp.tag) } ", " (dp.status) ")"
                    }
                } }
            }
        }
    }
}

/// A tag's labels, annotations, extensions, signatures and mutations.
fn tag_section(n: usize, t: &TagRow) -> Markup {
    let i = &t.image;
    html! {
        section.tag id={ "tag-" (n) } aria-labelledby={ "tag-h-" (n) } {
            h3 id={ "tag-h-" (n) } { "Tag " code { (i.tag) } }
            details {
                summary { "Labels, annotations, extensions and trust of " (i.tag) }
                h4 { "Labels" } (key_values(i.labels.get()))
                h4 { "Annotations" } (key_values(i.annotations.get()))
                h4 { "Postgres extensions" } (extensions(i.extensions.get()))
                h4 { "Trust" }
                p { (trust(t)) }
                @if !i.trust.signatures.is_empty() {
                    ul { @for s in &i.trust.signatures { li {
                        @if s.verified { span.badge.ok { "verified" } } @else { span.badge.bad { "not verified" } }
                        " " (s.kind) " signed by " strong { (s.signer) }
                        @if let Some(iss) = &s.issuer { " (issuer " (iss) ")" }
                        @if let Some(why) = &s.reason { ": " (why) }
                    } } }
                }
                @if let Some(vu) = &i.trust.vulnerabilities {
                    p { "Vulnerabilities: " (vu.critical) " critical, " (vu.high) " high, " (vu.medium) " medium, " (vu.low) " low" }
                }
                @if let Some(p) = &i.trust.policy {
                    p { "Policy verdict " strong { (p.verdict) } " " (time(&p.at))
                        @if !p.reasons.is_empty() { ": " (p.reasons.join("; ")) } }
                }
                @if !t.mutations.is_empty() {
                    h4 { "Mutations" }
                    ul { @for m in &t.mutations { li {
                        (time(&m.at)) " moved from " (digest(&m.old_digest)) " to " (digest(&m.new_digest)) " (found by " (m.found_by) ")"
                    } } }
                }
                @if let Some(rd) = &t.readme {
                    h4 { "README of this tag" }
                    div.readme { (PreEscaped(markdown::render(&rd.readme))) }
                }
            }
        }
    }
}

/// A curator's form. Fields are optional so that a form missing one gets an error at
/// that field, not a refusal of the whole request.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    action: String,
    tag: Option<String>,
    digest: Option<String>,
    reason: Option<String>,
    hm_tag: Option<String>,
    readme: Option<String>,
}

fn blank(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

pub(super) async fn act(
    State(catalog): State<Arc<Catalog>>,
    Path((registry, name)): Path<(String, String)>,
    headers: HeaderMap,
    CsrfForm { viewer: v, form }: CsrfForm<ActionForm>,
) -> Response {
    if let Err(res) = v.require(Role::Curator) {
        return res;
    }
    let repo = match target(&v, &registry, &name) {
        Ok(r) => r,
        Err(res) => return res,
    };
    let tp = crate::api::traceparent(&headers);
    let action = form.action.clone();
    let tag_text = blank(form.tag.clone());
    let invalid = |field: &str, msg: String| CommandError::Invalid {
        pointer: field.to_owned(),
        message: msg,
    };
    let tag: Result<Option<Tag>, CommandError> = tag_text
        .as_deref()
        .map(|t| t.parse::<Tag>().map_err(|e| invalid("tag", e.to_string())))
        .transpose();
    let result: Result<&'static str, CommandError> = async {
        let tag = tag?;
        match action.as_str() {
            "label" | "unlabel" => {
                let present = action == "label";
                let text = blank(form.hm_tag.clone()).unwrap_or_default();
                let hm = text
                    .parse::<HmTag>()
                    .map_err(|e| invalid("hm_tag", e.to_string()))?;
                catalog
                    .label(&v.caller, &repo, tag, hm, present, tp)
                    .await?;
                Ok(if present { "labeled" } else { "unlabeled" })
            }
            "readme" => {
                let text = form
                    .readme
                    .clone()
                    .unwrap_or_default()
                    .replace("\r\n", "\n");
                catalog.set_readme(&v.caller, &repo, tag, text, tp).await?;
                Ok("readme")
            }
            "approve" | "reject" => {
                let approve = action == "approve";
                let expected = match blank(form.digest.clone()) {
                    None => None,
                    Some(_) if tag.is_none() => {
                        return Err(invalid(
                            "digest",
                            "a digest is decided on with its tag".into(),
                        ));
                    }
                    Some(d) => Some(d.parse().map_err(|e: imagelib_events::OciParseError| {
                        invalid("digest", e.to_string())
                    })?),
                };
                let reason = form.reason.clone().unwrap_or_default();
                catalog
                    .decide(&v.caller, &repo, tag, expected, approve, reason, tp)
                    .await?;
                Ok(if approve { "approved" } else { "rejected" })
            }
            other => Err(invalid(
                "action",
                format!("`{other}` is not an action of this page"),
            )),
        }
    }
    .await;
    match result {
        Ok(code) => {
            Redirect::to(&with_query(&detail_href(&repo), &[("done", code)], None)).into_response()
        }
        Err(e) => {
            let (status, errors) = match e {
                CommandError::Invalid { pointer, message } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    vec![(pointer.trim_start_matches('/').to_owned(), message)],
                ),
                CommandError::DigestMismatch(m) => (StatusCode::CONFLICT, vec![(String::new(), m)]),
                other => return problem_page(&v, &Problem::from(other)),
            };
            let extra = Extra {
                errors,
                failed: Some((action.clone(), tag_text)),
                readme_value: (action == "readme").then(|| form.readme.clone().unwrap_or_default()),
                ..Default::default()
            };
            render(&catalog, &v, &repo, status, extra, None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_takes_rfc3339_and_the_browsers_local_form() {
        assert_eq!(
            parse_as_of("2025-01-31T12:00:00Z").unwrap().to_rfc3339(),
            "2025-01-31T12:00:00+00:00"
        );
        assert_eq!(
            parse_as_of("2025-01-31T12:00").unwrap().to_rfc3339(),
            "2025-01-31T12:00:00+00:00"
        );
        assert!(parse_as_of("yesterday").is_err());
    }

    #[test]
    fn done_codes_are_the_pages_own_words() {
        assert_eq!(done_text("approved"), Some("Approved."));
        assert_eq!(done_text("<script>"), None);
    }
}
