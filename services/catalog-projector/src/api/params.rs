//! Query parameters: parsed once, refused with a problem naming the parameter.

use chrono::{DateTime, Utc};
use imagelib_events::RepositoryName;
use imagelib_events::model::{HmTag, ModelType};
use imagelib_platform::Problem;
use uuid::Uuid;

use crate::query::{Cursor, Sort};

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// Longest search text.
pub const MAX_Q: usize = 200;

fn bad(param: &str, detail: impl Into<String>) -> Problem {
    Problem::validation(param, detail)
}

pub fn limit(v: Option<&str>) -> Result<i64, Problem> {
    match v {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(bad(
                "limit",
                format!("an integer between 1 and {MAX_LIMIT}"),
            )),
        },
    }
}

pub fn uuid(param: &str, v: Option<&str>) -> Result<Option<Uuid>, Problem> {
    v.map(|s| {
        s.parse::<Uuid>()
            .map_err(|_| bad(param, format!("`{s}` is not a registry id (a UUID)")))
    })
    .transpose()
}

pub fn repository(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| {
        s.parse::<RepositoryName>()
            .map(|r| r.as_str().to_owned())
            .map_err(|e| bad("repository", e.to_string()))
    })
    .transpose()
}

pub fn kind(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| match s {
        "database" | "model" | "other" => Ok(s.to_owned()),
        _ => Err(bad(
            "kind",
            format!("unknown kind `{s}`; expected database, model or other"),
        )),
    })
    .transpose()
}

pub fn model_type(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| {
        s.parse::<ModelType>()
            .map(|m| m.as_str().to_owned())
            .map_err(|e| bad("model_type", e))
    })
    .transpose()
}

pub fn hm_tag(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| {
        s.parse::<HmTag>()
            .map(|h| h.as_str().to_owned())
            .map_err(|e| bad("hm_tag", e.to_string()))
    })
    .transpose()
}

pub fn arch(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(s.to_owned())
        } else {
            Err(bad(
                "arch",
                format!("`{s}` is not an architecture (e.g. amd64, arm64)"),
            ))
        }
    })
    .transpose()
}

pub fn boolean(param: &str, v: Option<&str>) -> Result<Option<bool>, Problem> {
    v.map(|s| match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(param, format!("`{s}` is not `true` or `false`"))),
    })
    .transpose()
}

/// `max_severity`: `critical`, `high`, `medium`, `low` or `none`, as a level.
pub fn max_severity(v: Option<&str>) -> Result<Option<i16>, Problem> {
    v.map(|s| {
        crate::projection::trust::severity_level(s).ok_or_else(|| {
            bad(
                "max_severity",
                format!("unknown severity `{s}`; expected critical, high, medium, low or none"),
            )
        })
    })
    .transpose()
}

/// `policy`: a verdict.
pub fn policy(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| match s {
        "pass" | "fail" | "audit" => Ok(s.to_owned()),
        _ => Err(bad(
            "policy",
            format!("unknown verdict `{s}`; expected pass, fail or audit"),
        )),
    })
    .transpose()
}

pub fn q(v: Option<&str>) -> Result<Option<String>, Problem> {
    v.map(|s| {
        if s.chars().count() > MAX_Q {
            return Err(bad("q", format!("at most {MAX_Q} characters")));
        }
        crate::query::tsquery(s).ok_or_else(|| bad("q", "has no word to search for"))
    })
    .transpose()
}

pub fn as_of(v: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                bad(
                    "as_of",
                    format!("`{s}` is not an RFC 3339 time (e.g. 2025-01-31T12:00:00Z): {e}"),
                )
            })
    })
    .transpose()
}

pub fn sort(v: Option<&str>) -> Result<Sort, Problem> {
    match v {
        None | Some("name") => Ok(Sort::Name),
        Some("updated") => Ok(Sort::Updated),
        Some(s) => Err(bad(
            "sort",
            format!("unknown sort `{s}`; expected name or updated"),
        )),
    }
}

/// A cursor of this API for this kind of list.
pub fn cursor(v: Option<&str>, fits: impl Fn(&Cursor) -> bool) -> Result<Option<Cursor>, Problem> {
    v.map(|s| match Cursor::decode(s) {
        Some(c) if fits(&c) => Ok(c),
        Some(_) => Err(bad(
            "cursor",
            "this cursor belongs to a list in another order; start again without it",
        )),
        None => Err(bad("cursor", "not a cursor from this API")),
    })
    .transpose()
}
