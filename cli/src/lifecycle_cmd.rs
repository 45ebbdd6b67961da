//! `imagelib lifecycle …`: a rule's retention policy, and what it would delete.
//!
//! imagelib never deletes anything from a registry (its credentials are for reading), so
//! `preview` is a dry run (`GET /v1/lifecycle/preview`), printed as a table or, with
//! `--script`, as a shell script of the Registry API calls that would delete those tags,
//! for a person to review and run with their own credentials. The script never holds a
//! credential: it reads the `Authorization` value from `$REGISTRY_AUTH`. Registries delete
//! manifests, not tags, so a call deletes a digest and every tag pointing at it: a going tag
//! whose digest a kept tag shares is left out (commented, with the reason), and tags that go
//! together at one digest are one call.
//!
//! `policy` shows or sets the `retention` object of a rule the way `rules trust` does the
//! trust policy: read the rule and its `ETag`, replace `retention`, write it back with
//! `If-Match`, so a concurrent change is refused rather than overwritten.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use imagelib_events::{Digest, RepositoryName};
use reqwest::Method;
use reqwest::header::IF_MATCH;
use serde_json::Value;

use crate::client::{Body, CliError, Client, print, s, table};

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// What a rule's retention policy would delete, and why. Nothing is deleted.
    Preview {
        /// The registry id.
        #[arg(long)]
        registry: String,
        /// The rule whose retention policy is evaluated over its tags.
        #[arg(long)]
        rule: String,
        /// Only this repository (one of the rule's).
        #[arg(long)]
        repository: Option<String>,
        /// Also list the kept tags with the reasons they are kept.
        #[arg(long)]
        kept: bool,
        /// Print a shell script of the Registry API calls that would delete the tags (for a
        /// person to review and run with REGISTRY_AUTH set; it holds no credential).
        #[arg(long, conflicts_with = "kept")]
        script: bool,
    },
    /// Show a rule's retention policy, or set it from a JSON or YAML file (or remove it).
    Policy {
        /// The registry id.
        #[arg(long)]
        registry: String,
        #[arg(long)]
        rule: String,
        /// The `retention` object (`{"rules": [...], "protect_hm_tags": [...]}`) as JSON or
        /// YAML.
        #[arg(long, conflicts_with = "remove")]
        file: Option<PathBuf>,
        /// Remove the rule's retention policy.
        #[arg(long)]
        remove: bool,
    },
}

pub async fn run(client: &Client, cmd: LifecycleCommand) -> anyhow::Result<()> {
    match cmd {
        LifecycleCommand::Preview {
            registry,
            rule,
            repository,
            kept,
            script,
        } => {
            let path = preview_path(&registry, &rule, repository.as_deref(), kept);
            let preview = client.send(Method::GET, &path, None).await?;
            if script {
                use std::io::Write;
                let text = self::script(&preview);
                write!(std::io::stdout(), "{text}")?;
                return Ok(());
            }
            print(client.output(), &preview, render)
        }
        LifecycleCommand::Policy {
            registry,
            rule,
            file,
            remove,
        } => run_policy(client, &registry, &rule, file, remove).await,
    }
}

fn preview_path(registry: &str, rule: &str, repository: Option<&str>, kept: bool) -> String {
    let mut q = reqwest::Url::parse("http://x/").expect("a constant URL");
    {
        let mut p = q.query_pairs_mut();
        p.append_pair("registry", registry);
        p.append_pair("rule", rule);
        if let Some(r) = repository {
            p.append_pair("repository", r);
        }
        if kept {
            p.append_pair("include", "kept");
        }
    }
    format!("/v1/lifecycle/preview?{}", q.query().unwrap_or(""))
}

async fn run_policy(
    client: &Client,
    registry: &str,
    rule: &str,
    file: Option<PathBuf>,
    remove: bool,
) -> anyhow::Result<()> {
    let path = format!("/v1/registries/{registry}/rules/{rule}");
    let current = client.send_with(Method::GET, &path, None, &[]).await?;
    if file.is_none() && !remove {
        let policy = current
            .value
            .get("retention")
            .cloned()
            .unwrap_or(Value::Null);
        return print(client.output(), &policy, policy_lines);
    }
    let policy = match &file {
        Some(f) => Some(read_document(f)?),
        None => None,
    };
    let mut rule_body = current.value;
    let Some(fields) = rule_body.as_object_mut() else {
        anyhow::bail!("the server answered with something that is not a rule: {rule_body}");
    };
    // The PUT body is the rule as written; the ids come from the path.
    fields.remove("registry_id");
    fields.remove("rule_id");
    match policy {
        Some(p) => fields.insert("retention".into(), p),
        None => fields.remove("retention"),
    };
    let headers: Vec<_> = current
        .etag
        .map(|etag| (IF_MATCH, etag))
        .into_iter()
        .collect();
    let saved = client
        .send_with(Method::PUT, &path, Some(Body::Json(rule_body)), &headers)
        .await?
        .value;
    print(client.output(), &saved, |r| {
        format!(
            "rule {}\n{}",
            s(&r["rule_id"]),
            policy_lines(r.get("retention").unwrap_or(&Value::Null))
        )
    })
}

fn read_document(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .or_else(|_| serde_norway::from_str(&text))
        .map_err(|e| {
            CliError::usage(format!("{} is neither JSON nor YAML: {e}", path.display())).into()
        })
}

/// One line per retention rule, for people.
pub fn policy_lines(policy: &Value) -> String {
    if !policy.is_object() {
        return "  no retention policy".into();
    }
    let mut lines = Vec::new();
    for (i, r) in policy["rules"].as_array().into_iter().flatten().enumerate() {
        let mut line = format!("  rule {i}  {}", s(&r["template"]));
        if let Some(n) = r.get("count") {
            line.push_str(&format!(" {n}"));
        }
        if let Some(d) = r.get("days") {
            line.push_str(&format!(" {d} days"));
        }
        if r["per"] == "major" {
            line.push_str(" per major version");
        }
        for (field, word) in [("include", "tags"), ("exclude", "except")] {
            let patterns: Vec<String> = r["tags"][field]
                .as_array()
                .into_iter()
                .flatten()
                .map(pattern)
                .collect();
            if !patterns.is_empty() {
                line.push_str(&format!(", {word} {}", patterns.join(" ")));
            }
        }
        lines.push(line);
    }
    let protected: Vec<String> = policy["protect_hm_tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    lines.push(format!(
        "  always kept: deployed, approved{}",
        if protected.is_empty() {
            String::new()
        } else {
            format!(", HM tags {}", protected.join(" "))
        }
    ));
    lines.join("\n")
}

/// `{"regex": "^1\\."}` → `regex:^1\.`; a plain string as it is.
fn pattern(v: &Value) -> String {
    match v.as_object().and_then(|o| o.iter().next()) {
        Some((kind, value)) => format!("{kind}:{}", s(value)),
        None => s(v),
    }
}

/// Bytes in KiB, MiB, GiB.
fn size(v: &Value) -> String {
    let Some(n) = v.as_u64() else { return s(v) };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

fn day(v: &Value) -> String {
    match v.as_str() {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d").to_string())
            .unwrap_or_else(|_| t.to_owned()),
        None => s(v),
    }
}

fn reasons(t: &Value) -> String {
    t["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| s(&r["message"]))
        .collect::<Vec<_>>()
        .join("; ")
}

fn rows(items: &Value) -> Vec<Vec<String>> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                s(&t["repository"]),
                s(&t["tag"]),
                crate::catalog_cmd::short_digest(t["digest"].as_str().unwrap_or("-")),
                size(&t["size"]),
                day(&t["pushed_at"]),
                day(&t["last_pulled_at"]),
                reasons(t),
            ]
        })
        .collect()
}

const HEADERS: [&str; 7] = [
    "REPOSITORY",
    "TAG",
    "DIGEST",
    "SIZE",
    "PUSHED",
    "PULLED",
    "WHY",
];

/// The preview as tables and a summary.
fn render(p: &Value) -> String {
    let sum = &p["summary"];
    let mut out = format!(
        "rule {} on {} ({}), evaluated {}: nothing was deleted\n\n",
        s(&p["rule_id"]),
        s(&p["registry"]),
        s(&p["registry_url"]),
        s(&p["evaluated_at"])
    );
    if sum["going"].as_u64() == Some(0) {
        out.push_str("nothing would go\n");
    } else {
        out.push_str("WOULD GO\n");
        out.push_str(&table(&HEADERS, &rows(&p["going"])));
    }
    if let Some(kept) = p.get("kept") {
        out.push_str("\nKEPT\n");
        out.push_str(&table(&HEADERS, &rows(kept)));
    }
    out.push_str(&format!(
        "\n{} of {} tags would go, freeing {} in {} digests; {} kept; {} not the rule's (left alone)\n",
        s(&sum["going"]),
        s(&sum["tags"]),
        size(&sum["bytes_freed"]),
        s(&sum["digests_freed"]),
        s(&sum["kept"]),
        s(&sum["not_selected"]),
    ));
    for t in p["going"].as_array().into_iter().flatten() {
        let kept_by: Vec<String> = t["digest_kept_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        if !kept_by.is_empty() {
            out.push_str(&format!(
                "note: {}:{} shares its digest with {}, which stay: deleting the digest would \
                 delete them too, so it frees nothing (--script leaves it out)\n",
                s(&t["repository"]),
                s(&t["tag"]),
                kept_by.join(", ")
            ));
        }
    }
    for w in p["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", s(w)));
    }
    out
}

/// Text safe in a shell comment: one line, no control characters.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `'…'` with `'` escaped: safe as one shell word whatever it holds.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The registry's API base, `https://host[:port]` (the URL's namespace, if any, only limits
/// what imagelib lists; repository names are full paths). `None` for anything that is not
/// a plain host and port.
fn api_base(url: &str, insecure: bool) -> Option<String> {
    let host = url.trim().split('/').next().unwrap_or_default();
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| format!("{}://{host}", if insecure { "http" } else { "https" }))
}

/// The shell script of the Registry API calls that would delete the going tags (see the
/// module docs).
pub fn script(p: &Value) -> String {
    let mut out = String::from("#!/bin/sh\n");
    out.push_str(&format!(
        "# Deletes what retention rule {} of registry {} ({}) would remove, as previewed by\n\
         # imagelib at {}. imagelib itself deletes nothing: review this, then run it.\n",
        comment(&s(&p["rule_id"])),
        comment(&s(&p["registry"])),
        comment(&s(&p["registry_url"])),
        comment(&s(&p["evaluated_at"])),
    ));
    out.push_str(
        "#\n\
         # Each call deletes a manifest by digest: the registry removes EVERY tag pointing at\n\
         # it, so a digest that a kept tag shares is left out below. Space comes back only\n\
         # when the registry's garbage collection runs (distribution needs\n\
         # REGISTRY_STORAGE_DELETE_ENABLED=true; Harbor deletes the artifact and its tags).\n\
         #\n\
         # REGISTRY_AUTH is the Authorization header value of an account allowed to delete,\n\
         # e.g. REGISTRY_AUTH=\"Bearer $TOKEN\" or \"Basic $(printf %s \"$USER:$PASSWORD\" | base64)\".\n\
         # It is read from the environment; nothing in this file is a credential.\n\
         set -eu\n\
         : \"${REGISTRY_AUTH:?set REGISTRY_AUTH to the Authorization header value}\"\n",
    );
    let insecure = p["insecure"].as_bool().unwrap_or(false);
    let url = p["registry_url"].as_str().unwrap_or_default();
    let Some(base) = api_base(url, insecure) else {
        out.push_str(&format!(
            "echo {} >&2\nexit 1\n",
            quote(&format!(
                "registry URL `{}` is not host[:port]",
                comment(url)
            ))
        ));
        return out;
    };
    out.push_str(&format!("REGISTRY={}\n", quote(&base)));

    // One call per (repository, digest), in the order the preview lists them.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut at: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for t in p["going"].as_array().into_iter().flatten() {
        let key = (s(&t["repository"]), s(&t["digest"]));
        if !at.contains_key(&key) {
            order.push(key.clone());
        }
        at.entry(key).or_default().push(t);
    }
    let (mut calls, mut bytes, mut skipped) = (0usize, 0u64, 0usize);
    for key in order {
        let tags = at.get(&key).cloned().unwrap_or_default();
        let (repository, digest) = &key;
        let names: Vec<String> = tags.iter().map(|t| s(&t["tag"])).collect();
        let why: Vec<String> = tags.iter().map(|t| comment(&reasons(t))).collect();
        let kept_by: Vec<String> = tags
            .iter()
            .flat_map(|t| t["digest_kept_by"].as_array().cloned().unwrap_or_default())
            .map(|v| s(&v))
            .collect();
        let size_value = tags.first().map(|t| t["size"].clone()).unwrap_or_default();
        out.push_str(&format!(
            "\n# {}: {} ({})\n",
            comment(repository),
            comment(&names.join(", ")),
            size(&size_value)
        ));
        for w in &why {
            out.push_str(&format!("#   {w}\n"));
        }
        let valid =
            repository.parse::<RepositoryName>().is_ok() && digest.parse::<Digest>().is_ok();
        if !valid {
            skipped += 1;
            out.push_str("# SKIPPED: the preview named no valid repository and digest here\n");
            continue;
        }
        let call = format!(
            "curl -fsS -X DELETE -H \"Authorization: $REGISTRY_AUTH\" \"$REGISTRY\"{}",
            quote(&format!("/v2/{repository}/manifests/{digest}"))
        );
        if kept_by.is_empty() {
            calls += 1;
            bytes += size_value.as_u64().unwrap_or(0);
            out.push_str(&call);
            out.push('\n');
        } else {
            skipped += 1;
            out.push_str(&format!(
                "# SKIPPED: {digest} is also {}, which stay; deleting it would delete them too\n# {call}\n",
                comment(&kept_by.join(", ")),
            ));
        }
    }
    out.push_str(&format!(
        "\n# {calls} deletions ({} at most, once garbage-collected); {skipped} left out\n",
        size(&Value::from(bytes))
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(n: u64) -> String {
        format!("sha256:{n:064x}")
    }

    fn preview() -> Value {
        json!({
            "registry_id": "0190f1d2-3c4b-7a5e-8f90-123456789abc",
            "registry": "Acme",
            "registry_url": "harbor.acme.internal:8443/ai",
            "insecure": false,
            "rule_id": "apps",
            "rule_enabled": true,
            "evaluated_at": "2026-06-01T00:00:00Z",
            "summary": {"tags": 5, "kept": 2, "going": 3, "not_selected": 0,
                        "digests_freed": 1, "bytes_freed": 2048},
            "going": [
                {"repository": "ai/web", "tag": "1.0.0", "digest": d(1), "size": 2048,
                 "pushed_at": "2025-11-13T00:00:00Z", "pushed_from": "created", "last_pulled_at": null,
                 "reasons": [{"code": "latest_pushed", "rule": 0, "message": "rule 0 (latest_pushed 2 per repository): 3rd most recently pushed of 3 in ai/web, after the 2 it keeps"}],
                 "frees_digest": true, "digest_shared_with": ["1.0"]},
                {"repository": "ai/web", "tag": "1.0", "digest": d(1), "size": 2048,
                 "pushed_at": "2025-11-13T00:00:00Z", "pushed_from": "created", "last_pulled_at": null,
                 "reasons": [{"code": "no_rule", "message": "no retention rule looks at this tag"}],
                 "frees_digest": true, "digest_shared_with": ["1.0.0"]},
                {"repository": "ai/web", "tag": "candidate", "digest": d(2), "size": 10,
                 "pushed_at": "2026-05-01T00:00:00Z", "pushed_from": "first_seen", "last_pulled_at": null,
                 "reasons": [{"code": "no_rule", "message": "no retention rule looks at this tag;\n$(rm -rf /)"}],
                 "frees_digest": false, "digest_kept_by": ["2.1.0"]},
            ],
            "warnings": ["no pull of these tags was ever counted"],
        })
    }

    #[test]
    fn the_script_deletes_each_freed_digest_once_and_skips_shared_ones() {
        let text = script(&preview());
        assert!(text.starts_with("#!/bin/sh\n"), "{text}");
        assert!(text.contains("set -eu\n"));
        assert!(text.contains(": \"${REGISTRY_AUTH:?"), "{text}");
        // The namespace is not part of the API base: repository names are full paths.
        assert!(
            text.contains("REGISTRY='https://harbor.acme.internal:8443'\n"),
            "{text}"
        );
        let calls: Vec<&str> = text.lines().filter(|l| l.starts_with("curl ")).collect();
        assert_eq!(
            calls,
            [format!(
                "curl -fsS -X DELETE -H \"Authorization: $REGISTRY_AUTH\" \"$REGISTRY\"'/v2/ai/web/manifests/{}'",
                d(1)
            )]
        );
        assert!(text.contains("# ai/web: 1.0.0, 1.0 (2.0 KiB)\n"), "{text}");
        assert!(
            text.contains(&format!(
                "# SKIPPED: {} is also 2.1.0, which stay; deleting it would delete them too\n# curl",
                d(2)
            )),
            "{text}"
        );
        // A reason cannot break out of its comment.
        assert!(
            text.contains("#   no retention rule looks at this tag; $(rm -rf /)\n"),
            "{text}"
        );
        assert!(text.contains("# 1 deletions (2.0 KiB at most"), "{text}");
        // No credential, ever: only the variable.
        assert!(!text.to_lowercase().contains("password="), "{text}");
    }

    #[test]
    fn the_script_refuses_what_is_not_a_name_or_a_digest() {
        let mut p = preview();
        p["going"][0]["repository"] = json!("ai/web'; rm -rf / #");
        p["going"][1]["digest"] = json!("sha256:nothex");
        p["insecure"] = json!(true);
        let text = script(&p);
        assert!(
            text.contains("REGISTRY='http://harbor.acme.internal:8443'"),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("curl ")).count(),
            0,
            "{text}"
        );
        assert_eq!(
            text.matches("SKIPPED: the preview named no valid").count(),
            2,
            "{text}"
        );
        let mut p = preview();
        p["registry_url"] = json!("evil.example\"; rm -rf /");
        let text = script(&p);
        assert!(text.contains("exit 1"), "{text}");
        assert!(!text.contains("curl "), "{text}");
    }

    #[test]
    fn the_table_says_what_goes_why_and_what_is_shared() {
        let text = render(&preview());
        assert!(text.contains("nothing was deleted"), "{text}");
        assert!(text.contains("WOULD GO\nREPOSITORY"), "{text}");
        assert!(
            text.contains("3rd most recently pushed of 3 in ai/web, after the 2 it keeps"),
            "{text}"
        );
        assert!(
            text.contains("3 of 5 tags would go, freeing 2.0 KiB in 1 digests"),
            "{text}"
        );
        assert!(
            text.contains("note: ai/web:candidate shares its digest with 2.1.0"),
            "{text}"
        );
        assert!(text.contains("warning: no pull of these tags"), "{text}");
        assert!(!text.contains("KEPT"), "{text}");
    }

    #[test]
    fn policies_print_one_line_per_rule() {
        let text = policy_lines(&json!({
            "rules": [
                {"template": "latest_pushed", "count": 3, "per": "major",
                 "tags": {"include": [{"regex": "^[0-9]"}], "exclude": [{"exact": "1.0-rc1"}]}},
                {"template": "pulled_within_days", "days": 30, "per": "repository",
                 "tags": {"include": [], "exclude": []}},
            ],
            "protect_hm_tags": ["approved-production"],
        }));
        assert_eq!(
            text,
            "  rule 0  latest_pushed 3 per major version, tags regex:^[0-9], except exact:1.0-rc1\n  \
             rule 1  pulled_within_days 30 days\n  \
             always kept: deployed, approved, HM tags approved-production"
        );
        assert_eq!(policy_lines(&Value::Null), "  no retention policy");
    }

    #[test]
    fn preview_queries_encode() {
        assert_eq!(
            preview_path("r1", "apps", Some("ai/web"), true),
            "/v1/lifecycle/preview?registry=r1&rule=apps&repository=ai%2Fweb&include=kept"
        );
        assert_eq!(
            preview_path("r1", "a b", None, false),
            "/v1/lifecycle/preview?registry=r1&rule=a+b"
        );
    }
}
