//! `imagelib audit`: the audit trail (`GET /v1/audit`), newest first, as a table or JSON.
//!
//! The server filters and decides what the caller may see (admins and curators everything,
//! other tokens the registries of their teams); the command only turns flags into the query
//! (a relative `--since 24h` into an RFC 3339 time) and follows `next_cursor` with `--all`.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{CliError, Client, print, s, table};

/// The longest WHAT cell of the table, in characters (`--json` has it all).
const MAX_WHAT: usize = 100;

/// Filters of the trail.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuditArgs {
    /// Who caused the events: a token's subject (`alice`) or `system:<service>`; a trailing
    /// `*` matches a prefix (`system:*`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Event types: `catalog.approved`, `image.*`, `*.tag_mutated.*` or a full type
    /// (`io.imagelib.registry.registered.v1`); repeatable.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only this registry (its id, from `imagelib registry ls`).
    #[arg(long)]
    pub registry: Option<String>,
    /// Only this repository (the exact name, e.g. `library/postgres`).
    #[arg(long)]
    pub repository: Option<String>,
    /// Events at or after this: an RFC 3339 time, or a span back from now (`30m`, `24h`,
    /// `7d`, `2w`).
    #[arg(long, visible_alias = "from", value_name = "TIME", value_parser = parse_time)]
    pub since: Option<String>,
    /// Events before this: an RFC 3339 time or a span back from now.
    #[arg(long, visible_alias = "to", value_name = "TIME", value_parser = parse_time)]
    pub until: Option<String>,
    /// Page size, 1 to 500 (the server's default is 50; with --all, 500).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Follow `next_cursor` and list every entry that matches.
    #[arg(long)]
    pub all: bool,
}

/// An RFC 3339 time as given, or `now - span` for `<n>{s,m,h,d,w}`.
fn parse_time(s: &str) -> Result<String, String> {
    parse_time_at(s, Utc::now())
}

fn parse_time_at(s: &str, now: DateTime<Utc>) -> Result<String, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    let bad = || {
        format!(
            "`{s}` is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a span back from now (30m, 24h, 7d, 2w)"
        )
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    let span = match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        'w' => Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(span)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .ok_or_else(bad)
}

impl AuditArgs {
    fn query(&self, limit: Option<u32>, cursor: Option<&str>) -> String {
        let mut q = reqwest::Url::parse("http://x/").expect("a constant URL");
        {
            let mut p = q.query_pairs_mut();
            let mut add = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    p.append_pair(k, v);
                }
            };
            add("actor", self.actor.as_deref());
            let types = self.types.join(",");
            add("type", (!types.is_empty()).then_some(types.as_str()));
            add("registry", self.registry.as_deref());
            add("repository", self.repository.as_deref());
            add("from", self.since.as_deref());
            add("to", self.until.as_deref());
            add("limit", limit.map(|l| l.to_string()).as_deref());
            add("cursor", cursor);
        }
        q.query().unwrap_or("").to_owned()
    }
}

/// `io.imagelib.catalog.approved.v1` → `catalog.approved`.
pub fn short_type(t: &str) -> &str {
    let t = t.strip_prefix("io.imagelib.").unwrap_or(t);
    match t.rsplit_once(".v") {
        Some((name, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => t,
    }
}

/// `2025-01-31 12:00:05` (UTC) from an RFC 3339 time.
fn when(v: &Value) -> String {
    match v.as_str() {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| {
                t.with_timezone(&Utc)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|_| t.to_owned()),
        None => "-".into(),
    }
}

fn clip(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The table: WHEN, WHO, WHAT, SUBJECT, TRACE ID.
pub fn rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            let who = match e["actor"].as_str() {
                Some(a) => a.to_owned(),
                None => format!("({})", s(&e["source"])),
            };
            let what = format!(
                "{}: {}",
                short_type(e["type"].as_str().unwrap_or("")),
                s(&e["summary"])
            );
            vec![
                when(&e["time"]),
                who,
                clip(what, MAX_WHAT),
                s(&e["subject"]),
                s(&e["trace_id"]),
            ]
        })
        .collect();
    table(&["WHEN (UTC)", "WHO", "WHAT", "SUBJECT", "TRACE ID"], &rows)
}

/// `imagelib audit`.
pub async fn run(client: &Client, args: AuditArgs) -> anyhow::Result<()> {
    check(&args)?;
    let limit = args.limit.or(args.all.then_some(500));
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let page = loop {
        let query = args.query(limit, cursor.as_deref());
        let path = if query.is_empty() {
            "/v1/audit".to_owned()
        } else {
            format!("/v1/audit?{query}")
        };
        let page = client.send(Method::GET, &path, None).await.map_err(|e| {
            if crate::client::exit_code(&e) == crate::client::exit::NOT_FOUND {
                e.context("this server has no audit trail (GET /v1/audit); is it imagelib 14 or later, or the catalog's port?")
            } else {
                e
            }
        })?;
        if !args.all {
            break page;
        }
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break json!({"items": items, "next_cursor": null}),
        }
    };
    let shown = page["items"].as_array().cloned().unwrap_or_default();
    print(client.output(), &page, |_| rows(&shown))?;
    if !client.json() {
        use std::io::Write;
        let mut err = std::io::stderr();
        if shown.is_empty() {
            writeln!(err, "no audit entries match")?;
        } else if page["next_cursor"].is_string() {
            writeln!(
                err,
                "the newest {} entries shown; more match: add --all (or a larger --limit)",
                shown.len()
            )?;
        }
    }
    Ok(())
}

/// Refuse flags that cannot work together before asking the server.
pub fn check(args: &AuditArgs) -> Result<(), CliError> {
    if let (Some(since), Some(until)) = (&args.since, &args.until)
        && let (Ok(a), Ok(b)) = (
            DateTime::parse_from_rfc3339(since),
            DateTime::parse_from_rfc3339(until),
        )
        && a >= b
    {
        return Err(CliError::usage(format!(
            "--since ({since}) must be earlier than --until ({until})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_spans_back_from_now() {
        let now = DateTime::parse_from_rfc3339("2025-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time_at("24h", now).unwrap(), "2025-03-09T12:00:00Z");
        assert_eq!(parse_time_at("7d", now).unwrap(), "2025-03-03T12:00:00Z");
        assert_eq!(parse_time_at("30m", now).unwrap(), "2025-03-10T11:30:00Z");
        assert_eq!(
            parse_time_at("2025-03-01T01:00:00+01:00", now).unwrap(),
            "2025-03-01T00:00:00Z"
        );
        for bad in ["", "h", "-1h", "3y", "yesterday", "1.5h"] {
            assert!(parse_time_at(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_are_shortened_and_flags_become_the_query() {
        assert_eq!(
            short_type("io.imagelib.catalog.approved.v1"),
            "catalog.approved"
        );
        assert_eq!(
            short_type("io.imagelib.image.tag_mutated.v12"),
            "image.tag_mutated"
        );
        assert_eq!(short_type("other"), "other");
        let args = AuditArgs {
            actor: Some("system:*".into()),
            types: vec!["image.*".into(), "catalog.approved".into()],
            since: Some("2025-03-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            args.query(Some(10), Some("abc")),
            "actor=system%3A*&type=image.*%2Ccatalog.approved&from=2025-03-01T00%3A00%3A00Z&limit=10&cursor=abc"
        );
        assert!(
            check(&AuditArgs {
                since: Some("2025-03-02T00:00:00Z".into()),
                until: Some("2025-03-01T00:00:00Z".into()),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn the_table_names_who_what_when_subject_and_trace() {
        let out = rows(&[json!({
            "time": "2025-03-01T10:00:05Z", "actor": null, "source": "/imagelib/sync-scanner",
            "type": "io.imagelib.image.tag_moved.v1", "summary": "tag 1.0 moved from a to b",
            "subject": "r/x:1.0", "trace_id": "0af7651916cd43dd8448eb211c80319c"
        })]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("WHEN (UTC)"), "{out}");
        assert!(lines[1].starts_with("2025-03-01 10:00:05  (/imagelib/sync-scanner)  image.tag_moved: tag 1.0 moved from a to b  r/x:1.0  0af7651916cd43dd8448eb211c80319c"), "{out}");
    }
}
