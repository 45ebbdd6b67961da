//! `GET /v1/audit`: the audit trail ([`crate::projection::audit`]), newest first.
//!
//! Why keyset on the stream sequence: the projection writes the trail in stream order, a
//! whole batch per transaction, so what is visible is always every event up to a position.
//! A page that starts below the previous page's last sequence therefore never repeats nor
//! misses a row, however many events arrive meanwhile (they land above the first page).
//!
//! Who sees what: admins and curators the whole trail; every other caller only entries of
//! registries visible to one of their teams (or to every team), as the catalog decides for
//! images. Entries about no registry (subscriptions) are for admins and curators only. A
//! registry's removal does not hide its history.
//!
//! Bad filters are `422` problems naming the parameter (`errors[0].pointer`).

use std::sync::Arc;

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use imagelib_events::{EventPayload, RepositoryName};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Role};
use imagelib_platform::problem::ApiQuery;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::params::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::curate::Catalog;

/// The longest `actor` filter, in characters.
pub const MAX_ACTOR: usize = 256;
/// The most `type` patterns one query takes.
pub const MAX_TYPES: usize = 20;

pub fn router() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Filters and page of the audit trail. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Who caused the events: a token's subject (`alice`), `system:<service>`; exact, or
    /// a prefix ending in `*` (`system:*`).
    pub(crate) actor: Option<String>,
    /// Event types, comma-separated: the full type (`io.imagelib.catalog.approved.v1`),
    /// the short form (`catalog.approved`), or a pattern where `*` matches any run of
    /// characters (`image.*`, `*.tag_mutated.*`). A pattern that matches no type of the
    /// contract is refused.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub(crate) event_type: Option<String>,
    /// Registry id.
    pub(crate) registry: Option<String>,
    /// Exact repository name, e.g. `nvidia/nim/llama-3.1-8b-instruct`.
    pub(crate) repository: Option<String>,
    /// RFC 3339 time: events at or after it (event time).
    pub(crate) from: Option<String>,
    /// RFC 3339 time: events before it (event time).
    pub(crate) to: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub(crate) limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// One event of the trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// The stream sequence: the trail's order.
    pub sequence: i64,
    /// The CloudEvent `id`.
    pub id: Uuid,
    /// When it happened (the CloudEvent `time`).
    pub time: DateTime<Utc>,
    /// Who caused it: a token's subject, `system:<service>`, or absent when the producer
    /// did not say.
    pub actor: Option<String>,
    /// The producing service (`/imagelib/<service>`).
    pub source: String,
    /// The CloudEvent `type`, e.g. `io.imagelib.catalog.approved.v1`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub event_type: String,
    /// The CloudEvent `subject`: `registry/<id>`, `<registry-id>/<repository>:<tag>`,
    /// `deployment/<id>`, `subscription/<id>` …
    pub subject: String,
    /// What happened, in a sentence (never a secret).
    pub summary: String,
    /// The W3C trace id of the event's `traceparent`: the request that caused it.
    pub trace_id: Option<String>,
    pub registry_id: Option<Uuid>,
    /// The registry's label, while the catalog knows it.
    pub registry: Option<String>,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// The API path of the object: `/v1/registries/{id}`, `/v1/repositories/{registry_id}/{name}`,
    /// `/v1/deployments/{id}`, `/v1/subscriptions/{id}` …
    pub link: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "a.sequence, a.event_id, a.at, a.actor, a.source, a.event_type, a.subject, \
     a.summary, a.trace_id, a.registry_id, g.label, a.repository, a.tag, a.digest";

impl AuditEntry {
    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        let event_type: String = r.try_get(5)?;
        let subject: String = r.try_get(6)?;
        let registry_id: Option<Uuid> = r.try_get(9)?;
        let repository: Option<String> = r.try_get(11)?;
        Ok(AuditEntry {
            link: crate::projection::audit::link(
                &event_type,
                &subject,
                registry_id,
                repository.as_deref(),
            ),
            sequence: r.try_get(0)?,
            id: r.try_get(1)?,
            time: r.try_get(2)?,
            actor: r.try_get(3)?,
            source: r.try_get(4)?,
            event_type,
            subject,
            summary: r.try_get(7)?,
            trace_id: r.try_get(8)?,
            registry_id,
            registry: r.try_get(10)?,
            repository,
            tag: r.try_get(12)?,
            digest: r.try_get(13)?,
        })
    }
}

/// Where the previous page ended (opaque to clients: base64url JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct AuditCursor {
    /// Always `audit`: a cursor of another list is refused.
    s: CursorKind,
    /// The last sequence shown.
    q: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CursorKind {
    Audit,
}

impl AuditCursor {
    fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self).unwrap_or_default())
    }

    fn decode(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A `422` naming the parameter, as every other catalog list answers a bad filter.
fn bad(param: &str, detail: impl Into<String>) -> Problem {
    Problem::validation(param, detail)
}

/// The parsed filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// `None`: every entry; otherwise entries of registries visible to these teams.
    pub teams: Option<Vec<String>>,
    /// Exact actor, or a prefix (`prefix` true).
    pub actor: Option<(String, bool)>,
    /// Exact types; `None` for every type.
    pub types: Option<Vec<String>>,
    pub registry: Option<Uuid>,
    pub repository: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only sequences below this.
    pub before: Option<i64>,
    /// Only sequences above this, oldest first (a live tail: the console's activity stream).
    pub after: Option<i64>,
    pub limit: i64,
}

impl AuditQuery {
    pub(crate) fn filter(&self, caller: &Caller) -> Result<AuditFilter, Problem> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(bad(
                        "limit",
                        format!("`{s}` is not an integer between 1 and {MAX_LIMIT}"),
                    ));
                }
            },
        };
        let actor = match self.actor.as_deref() {
            None => None,
            Some("") => return Err(bad("actor", "is empty")),
            Some(a) if a.chars().count() > MAX_ACTOR => {
                return Err(bad("actor", format!("at most {MAX_ACTOR} characters")));
            }
            Some(a) => match a.strip_suffix('*') {
                Some(prefix) if prefix.contains('*') => {
                    return Err(bad("actor", "`*` is only allowed at the end (a prefix)"));
                }
                Some(prefix) => Some((prefix.to_owned(), true)),
                None if a.contains('*') => {
                    return Err(bad("actor", "`*` is only allowed at the end (a prefix)"));
                }
                None => Some((a.to_owned(), false)),
            },
        };
        let types = match self.event_type.as_deref() {
            None => None,
            Some(s) => types(s)?,
        };
        let registry = self
            .registry
            .as_deref()
            .map(|s| {
                s.parse::<Uuid>()
                    .map_err(|_| bad("registry", format!("`{s}` is not a registry id (a UUID)")))
            })
            .transpose()?;
        let repository = self
            .repository
            .as_deref()
            .map(|s| {
                s.parse::<RepositoryName>()
                    .map(|r| r.as_str().to_owned())
                    .map_err(|e| bad("repository", e.to_string()))
            })
            .transpose()?;
        let from = time("from", self.from.as_deref())?;
        let to = time("to", self.to.as_deref())?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(bad("to", "must be later than `from`"));
        }
        let before = self
            .cursor
            .as_deref()
            .map(|c| {
                AuditCursor::decode(c).map(|c| c.q).ok_or_else(|| {
                    bad(
                        "cursor",
                        "not a cursor of the audit trail; start again without it",
                    )
                })
            })
            .transpose()?;
        let teams = match caller.role {
            Role::Admin | Role::Curator => None,
            Role::Deployer | Role::Viewer => Some(caller.teams.clone()),
        };
        Ok(AuditFilter {
            teams,
            actor,
            types,
            registry,
            repository,
            from,
            to,
            before,
            after: None,
            limit,
        })
    }
}

fn time(param: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                bad(
                    param,
                    format!("`{s}` is not an RFC 3339 time (e.g. 2025-01-31T12:00:00Z): {e}"),
                )
            })
    })
    .transpose()
}

/// The contract's types a `type` parameter selects (`None`: all of them).
pub fn types(param: &str) -> Result<Option<Vec<String>>, Problem> {
    let patterns: Vec<&str> = param.split(',').map(str::trim).collect();
    if patterns.len() > MAX_TYPES {
        return Err(bad("type", format!("at most {MAX_TYPES} patterns")));
    }
    let mut selected: Vec<&'static str> = Vec::new();
    for p in patterns {
        if p.is_empty() {
            return Err(bad("type", "an empty pattern"));
        }
        let full = if p.starts_with("io.") || p.starts_with('*') {
            p.to_owned()
        } else {
            format!("io.imagelib.{p}")
        };
        // `catalog.approved` means any version of it.
        let full = if full.contains('*') || has_version(&full) {
            full
        } else {
            format!("{full}.v*")
        };
        let mut matched = false;
        for t in EventPayload::TYPES {
            if glob(&full, t.type_name) {
                matched = true;
                if !selected.contains(&t.type_name) {
                    selected.push(t.type_name);
                }
            }
        }
        if !matched {
            return Err(bad(
                "type",
                format!(
                    "`{p}` matches no event type (e.g. `catalog.approved`, `image.*`, `io.imagelib.registry.registered.v1`)"
                ),
            ));
        }
    }
    if selected.len() == EventPayload::TYPES.len() {
        return Ok(None);
    }
    Ok(Some(selected.into_iter().map(str::to_owned).collect()))
}

/// Ends in `.v<digits>`.
fn has_version(t: &str) -> bool {
    t.rsplit_once(".v")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// An SQL statement under construction: conditions and their parameters.
#[derive(Default)]
struct Statement {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

enum Bind {
    Int(i64),
    Text(String),
    Texts(Vec<String>),
    Uuid(Uuid),
    Time(DateTime<Utc>),
}

impl Statement {
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }
}

/// `%`, `_` and `\` taken literally in a `LIKE` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One page of the trail.
pub async fn page(pool: &sqlx::PgPool, f: &AuditFilter) -> Result<AuditPage, sqlx::Error> {
    let mut st = Statement::default();
    if let Some(before) = f.before {
        let p = st.bind(Bind::Int(before));
        st.conditions.push(format!("a.sequence < {p}"));
    }
    if let Some(after) = f.after {
        let p = st.bind(Bind::Int(after));
        st.conditions.push(format!("a.sequence > {p}"));
    }
    if let Some(teams) = &f.teams {
        let p = st.bind(Bind::Texts(teams.clone()));
        st.conditions.push(format!(
            "a.registry_id IN (SELECT v.id FROM registries v \
             WHERE cardinality(v.visibility) = 0 OR v.visibility && {p})"
        ));
    }
    match &f.actor {
        Some((a, false)) => {
            let p = st.bind(Bind::Text(a.clone()));
            st.conditions.push(format!("a.actor = {p}"));
        }
        Some((a, true)) => {
            let p = st.bind(Bind::Text(like_prefix(a)));
            st.conditions.push(format!("a.actor LIKE {p}"));
        }
        None => {}
    }
    match f.types.as_deref() {
        Some([one]) => {
            let p = st.bind(Bind::Text(one.clone()));
            st.conditions.push(format!("a.event_type = {p}"));
        }
        Some(types) => {
            let p = st.bind(Bind::Texts(types.to_vec()));
            st.conditions.push(format!("a.event_type = ANY({p})"));
        }
        None => {}
    }
    if let Some(g) = f.registry {
        let p = st.bind(Bind::Uuid(g));
        st.conditions.push(format!("a.registry_id = {p}"));
    }
    if let Some(r) = &f.repository {
        let p = st.bind(Bind::Text(r.clone()));
        st.conditions.push(format!("a.repository = {p}"));
    }
    if let Some(t) = f.from {
        let p = st.bind(Bind::Time(t));
        st.conditions.push(format!("a.at >= {p}"));
    }
    if let Some(t) = f.to {
        let p = st.bind(Bind::Time(t));
        st.conditions.push(format!("a.at < {p}"));
    }
    let limit = st.bind(Bind::Int(f.limit + 1));
    let wh = if st.conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", st.conditions.join(" AND "))
    };
    let order = if f.after.is_some() { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT {COLUMNS} FROM audit a LEFT JOIN registries g ON g.id = a.registry_id \
         {wh} ORDER BY a.sequence {order} LIMIT {limit}"
    );
    // Planned with its values every time (an unnamed statement): the actor and type
    // indexes leave the scanner's tag events out, and only a plan that sees the value can
    // tell that a filter falls inside them (migration 0008).
    let mut q = sqlx::query(&sql).persistent(false);
    for b in &st.binds {
        q = match b {
            Bind::Int(n) => q.bind(*n),
            Bind::Text(s) => q.bind(s.as_str()),
            Bind::Texts(v) => q.bind(v.as_slice()),
            Bind::Uuid(u) => q.bind(*u),
            Bind::Time(t) => q.bind(*t),
        };
    }
    let rows = q.fetch_all(pool).await?;
    let more = rows.len() as i64 > f.limit;
    let items = rows
        .iter()
        .take(f.limit as usize)
        .map(AuditEntry::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = more
        .then(|| {
            items.last().map(|e| {
                AuditCursor {
                    s: CursorKind::Audit,
                    q: e.sequence,
                }
                .encode()
            })
        })
        .flatten();
    Ok(AuditPage { items, next_cursor })
}

/// The audit trail, newest first: who did what, when, with the trace id and a link to
/// the object. Admins and curators see every entry; other callers those of registries
/// visible to their teams.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_audit(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<AuditPage>, Problem> {
    let f = q.filter(&caller)?;
    let page = page(catalog.pool(), &f).await.map_err(|e| {
        if crate::projection::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            Problem::unavailable("the database is unavailable; retry shortly")
        } else {
            Problem::internal(&e)
        }
    })?;
    Ok(axum::Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob(
            "io.imagelib.image.*",
            "io.imagelib.image.tag_moved.v1"
        ));
        assert!(glob("*.tag_mutated.*", "io.imagelib.image.tag_mutated.v1"));
        assert!(glob("*", "anything"));
        assert!(!glob(
            "io.imagelib.image.*",
            "io.imagelib.catalog.approved.v1"
        ));
        assert!(!glob("a*a", "a"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxcyyb"));
    }

    #[test]
    fn type_patterns_expand_to_the_contract() {
        assert_eq!(
            types("catalog.approved").unwrap(),
            Some(vec!["io.imagelib.catalog.approved.v1".to_owned()])
        );
        assert_eq!(
            types("io.imagelib.catalog.approved.v1").unwrap(),
            Some(vec!["io.imagelib.catalog.approved.v1".to_owned()])
        );
        let image = types("image.*").unwrap().unwrap();
        assert!(image.iter().all(|t| t.starts_with("io.imagelib.image.")));
        assert!(image.len() >= 10, "{image:?}");
        let two = types("catalog.approved, catalog.rejected")
            .unwrap()
            .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(types("*").unwrap(), None);
        for bad in ["catalog", "nope.*", "", "a,,b"] {
            let p = types(bad).unwrap_err();
            assert_eq!(
                (p.status, p.errors[0].pointer.as_str()),
                (422, "type"),
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_are_the_trails_own() {
        let c = AuditCursor {
            s: CursorKind::Audit,
            q: 42,
        };
        assert_eq!(AuditCursor::decode(&c.encode()), Some(c));
        let other = crate::query::Cursor::Repo {
            n: "x".into(),
            g: Uuid::nil(),
        }
        .encode();
        assert_eq!(AuditCursor::decode(&other), None);
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
