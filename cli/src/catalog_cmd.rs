//! `imagelib images …`, `imagelib models ls` and `imagelib stats`: the Image and Model
//! Library (catalog-projector's read API).

use std::fmt::Write as _;

use clap::{Subcommand, ValueEnum};
use imagelib_events::{RegistryId, RepositoryName, Tag};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Body, CliError, Client, print, s, table};

/// The model types the catalog knows.
const MODEL_TYPES: [&str; 5] = [
    "text-completion",
    "text-embedding",
    "image-embedding",
    "ocr",
    "reranker",
];

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List catalog images, one row per tag (`GET /v1/images`).
    Ls(ListArgs),
    /// Show a repository and its tags, or one tag with `:<tag>`.
    Show {
        /// `<registry-id>/<repository>[:<tag>]`, e.g.
        /// `0190d5c2-…/library/postgres:16.1` (the REFERENCE of `imagelib images ls --json`).
        #[arg(value_parser = parse_image_ref)]
        image: ImageRef,
    },
    /// Put an HM tag on a repository, or on one tag with `:<tag>` (curators).
    Label {
        /// `<registry-id>/<repository>[:<tag>]`
        #[arg(value_parser = parse_image_ref)]
        image: ImageRef,
        /// The HM tag, e.g. `approved-production`.
        hm_tag: String,
    },
    /// Remove an HM tag from a repository, or from one tag with `:<tag>` (curators).
    Unlabel {
        #[arg(value_parser = parse_image_ref)]
        image: ImageRef,
        hm_tag: String,
    },
    /// Set the README (Markdown) of a repository, or of one tag, from a file or stdin (curators).
    Readme {
        #[arg(value_parser = parse_image_ref)]
        image: ImageRef,
        /// A Markdown file; `-` or nothing reads stdin.
        file: Option<std::path::PathBuf>,
    },
    /// Approve a repository, or one tag at its current digest (curators).
    Approve {
        #[arg(value_parser = parse_image_ref)]
        image: ImageRef,
        #[arg(long, default_value = "")]
        reason: String,
        /// With `:<tag>`: the digest you reviewed; refused (exit 5) if the tag points
        /// elsewhere now. How a re-pushed (mutated) tag's new digest is approved.
        #[arg(long, value_name = "sha256:…")]
        digest: Option<String>,
    },
    /// Reject a repository, or one tag at its current digest; a reason is required (curators).
    Reject {
        #[arg(value_parser = parse_image_ref)]
        image: ImageRef,
        #[arg(long)]
        reason: String,
        /// With `:<tag>`: the digest you reviewed (refused if the tag points elsewhere now).
        #[arg(long, value_name = "sha256:…")]
        digest: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the Model Library: model images only (`GET /v1/models`).
    Ls(ListArgs),
}

/// An image kind, as the catalog names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Database,
    Model,
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Database => "database",
            Kind::Model => "model",
            Kind::Other => "other",
        }
    }
}

/// The order of an image list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sort {
    /// Repository, tag, registry.
    Name,
    /// The latest digest change first.
    Updated,
}

/// Filters, order and paging of `images ls` and `models ls`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListArgs {
    /// Only this registry (its id, from `imagelib registry ls`).
    #[arg(long)]
    pub registry: Option<String>,
    /// Only this repository (the exact name, e.g. `library/postgres`).
    #[arg(long)]
    pub repository: Option<String>,
    /// Only this kind of image.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Only models of this type.
    #[arg(long, value_parser = MODEL_TYPES)]
    pub model_type: Option<String>,
    /// Only images with this HM tag (on the tag or its repository).
    #[arg(long)]
    pub hm_tag: Option<String>,
    /// Only images with a platform of this architecture, e.g. `arm64`.
    #[arg(long)]
    pub arch: Option<String>,
    /// `true`: only images approved for their current digest; `false`: the others.
    #[arg(long, value_name = "true|false")]
    pub approved: Option<bool>,
    /// `true`: only images with a verified signature; `false`: the others.
    #[arg(long, value_name = "true|false")]
    pub signed: Option<bool>,
    /// Only images whose highest vulnerability severity is at most this (images without a
    /// vulnerability report are left out).
    #[arg(long, value_parser = ["critical", "high", "medium", "low", "none"])]
    pub max_severity: Option<String>,
    /// `true`: only images with an SBOM; `false`: the others.
    #[arg(long, value_name = "true|false")]
    pub has_sbom: Option<bool>,
    /// Only images with this trust policy verdict.
    #[arg(long, value_parser = ["pass", "fail", "audit"])]
    pub policy: Option<String>,
    /// `true`: only tags ever found mutated (re-pushed although policy calls them
    /// immutable); `false`: the others.
    #[arg(long, value_name = "true|false")]
    pub mutated: Option<bool>,
    /// Words the repository name or description must contain (prefix match).
    #[arg(long, value_name = "TEXT")]
    pub q: Option<String>,
    /// The catalog as it was at this RFC 3339 time, e.g. `2025-01-31T12:00:00Z`.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub as_of: Option<String>,
    /// `name` (repository, tag; the default) or `updated` (latest change first).
    #[arg(long, value_enum)]
    pub sort: Option<Sort>,
    /// Page size, 1 to 500 (the server's default is 50; with --all, 500).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Follow `next_cursor` and list every page.
    #[arg(long)]
    pub all: bool,
}

fn parse_rfc3339(s: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not an RFC 3339 time ({e}); e.g. 2025-01-31T12:00:00Z"))
}

/// `<registry-id>/<repository>[:<tag>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry_id: String,
    pub repository: String,
    pub tag: Option<String>,
}

const IMAGE_REF_HELP: &str = "expected <registry-id>/<repository>[:<tag>], e.g. \
     0190d5c2-7a1e-7c3b-9f00-5d1e2f3a4b5c/library/postgres:16.1 \
     (`imagelib images ls --json` shows each image's `reference`)";

/// Parse `<registry-id>/<repository>[:<tag>]`, saying what to type when it is not.
pub fn parse_image_ref(s: &str) -> Result<ImageRef, String> {
    let (registry, rest) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` has no `/`; {IMAGE_REF_HELP}"))?;
    registry.parse::<RegistryId>().map_err(|_| {
        format!("`{registry}` is not a registry id (a UUID, see `imagelib registry ls`); {IMAGE_REF_HELP}")
    })?;
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (rest, None),
    };
    repository
        .parse::<RepositoryName>()
        .map_err(|e| format!("`{repository}` is not a repository name: {e}; {IMAGE_REF_HELP}"))?;
    if let Some(t) = tag {
        t.parse::<Tag>()
            .map_err(|e| format!("`{t}` is not a tag: {e}; {IMAGE_REF_HELP}"))?;
    }
    Ok(ImageRef {
        registry_id: registry.to_owned(),
        repository: repository.to_owned(),
        tag: tag.map(str::to_owned),
    })
}

impl ImageRef {
    /// `<registry-id>/<repository>[:<tag>]`, as typed.
    pub fn display(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}", self.registry_id, self.repository),
            None => format!("{}/{}", self.registry_id, self.repository),
        }
    }
}

impl ListArgs {
    /// The query string (without `?`) of one page.
    fn query(&self, limit: Option<u32>, cursor: Option<&str>) -> String {
        let mut q = reqwest::Url::parse("http://x/").expect("a constant URL");
        {
            let mut p = q.query_pairs_mut();
            let mut add = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    p.append_pair(k, v);
                }
            };
            add("registry", self.registry.as_deref());
            add("repository", self.repository.as_deref());
            add("kind", self.kind.map(Kind::as_str));
            add("model_type", self.model_type.as_deref());
            add("hm_tag", self.hm_tag.as_deref());
            add("arch", self.arch.as_deref());
            add(
                "approved",
                self.approved.map(|b| if b { "true" } else { "false" }),
            );
            let flag = |b: bool| if b { "true" } else { "false" };
            add("signed", self.signed.map(flag));
            add("max_severity", self.max_severity.as_deref());
            add("has_sbom", self.has_sbom.map(flag));
            add("policy", self.policy.as_deref());
            add("mutated", self.mutated.map(flag));
            add("q", self.q.as_deref());
            add("as_of", self.as_of.as_deref());
            add(
                "sort",
                self.sort.map(|s| match s {
                    Sort::Name => "name",
                    Sort::Updated => "updated",
                }),
            );
            add("limit", limit.map(|l| l.to_string()).as_deref());
            add("cursor", cursor);
        }
        q.query().unwrap_or("").to_owned()
    }
}

/// One page, or every page with `--all`, as `{"items": […], "next_cursor": …}`.
async fn list(client: &Client, route: &str, args: &ListArgs) -> anyhow::Result<Value> {
    let limit = args.limit.or(args.all.then_some(500));
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = args.query(limit, cursor.as_deref());
        let path = if query.is_empty() {
            route.to_owned()
        } else {
            format!("{route}?{query}")
        };
        let page = client.send(Method::GET, &path, None).await?;
        if !args.all {
            return Ok(page);
        }
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(json!({"items": items, "next_cursor": null})),
        }
    }
}

/// `sha256:` and the first 12 hex digits.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.to_owned(),
    }
}

/// `2025-01-31 12:00` (UTC) from an RFC 3339 time; anything else as it is.
fn when(v: &Value) -> String {
    match v.as_str() {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_else(|_| t.to_owned()),
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

fn strings(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(s).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    }
}

fn registry_name(label: &Value, id: &Value) -> String {
    match label.as_str() {
        Some(l) if !l.is_empty() => l.to_owned(),
        _ => s(id).chars().take(8).collect(),
    }
}

fn image_rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                registry_name(&i["registry"], &i["registry_id"]),
                s(&i["repository"]),
                s(&i["tag"]),
                s(&i["kind"]),
                s(&i["model_type"]),
                short_digest(&s(&i["digest"])),
                i["architectures"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "-".into()),
                when(&i["updated_at"]),
                signed(&i["trust"]),
                s(&i["trust"]["max_severity"]),
                strings(&i["trust"]["sbom"]),
                s(&i["trust"]["policy"]["verdict"]),
                mutated_marker(&i["mutated"]),
                pulls(&i["pulls"]),
                when_or_dash(&i["last_pulled_at"]),
            ]
        })
        .collect();
    table(
        &[
            "REGISTRY",
            "REPOSITORY",
            "TAG",
            "KIND",
            "MODEL TYPE",
            "DIGEST",
            "ARCH",
            "UPDATED",
            "SIGNED",
            "SEVERITY",
            "SBOM",
            "POLICY",
            "MUTATED",
            "PULLS",
            "LAST PULL",
        ],
        &rows,
    )
}

/// The MUTATED column: `-`, or `yes (<old> → <new>)` with shortened digests.
fn mutated_marker(m: &Value) -> String {
    if m.is_null() {
        return "-".into();
    }
    format!(
        "yes({}→{})",
        short_hex(&s(&m["old_digest"])),
        short_hex(&s(&m["new_digest"]))
    )
}

/// The first 8 hex digits of a digest (no algorithm), for narrow columns.
fn short_hex(d: &str) -> String {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    hex.chars().take(8).collect()
}

/// A pull count: `-` when none was counted.
fn pulls(v: &Value) -> String {
    match v.as_i64() {
        Some(0) | None => "-".into(),
        Some(n) => n.to_string(),
    }
}

fn when_or_dash(v: &Value) -> String {
    if v.is_null() { "-".into() } else { when(v) }
}

/// The mutation lines of a tag: the latest on one line, then every one (newest first).
fn mutation_lines(out: &mut String, t: &Value) {
    let m = &t["mutated"];
    if m.is_null() {
        let _ = writeln!(out, "{:<13} -", "mutated");
        return;
    }
    let list = t["mutations"].as_array().cloned().unwrap_or_default();
    let all = if list.is_empty() {
        vec![m.clone()]
    } else {
        list
    };
    let _ = writeln!(
        out,
        "mutated:      re-pushed although policy calls the tag immutable ({} time{})",
        all.len(),
        if all.len() == 1 { "" } else { "s" }
    );
    for x in &all {
        let mut line = format!(
            "  {} {} → {} (found by {}",
            when(&x["at"]),
            s(&x["old_digest"]),
            s(&x["new_digest"]),
            s(&x["found_by"])
        );
        if !x["seen_at"].is_null() {
            let _ = write!(line, ", seen {}", when(&x["seen_at"]));
        }
        line.push(')');
        let _ = writeln!(out, "{line}");
    }
}

/// The pull lines of a tag: under the tag, and of its current digest.
fn pull_lines(out: &mut String, t: &Value) {
    let line = |n: &Value, last: &Value| match n.as_i64() {
        Some(0) | None => "-".to_owned(),
        Some(n) => format!("{n} (last {})", when(last)),
    };
    let _ = writeln!(
        out,
        "{:<13} {}",
        "pulls",
        line(&t["pulls"], &t["last_pulled_at"])
    );
    let _ = writeln!(
        out,
        "{:<13} {}",
        "digest pulls",
        line(&t["digest_pulls"], &t["digest_last_pulled_at"])
    );
}

/// `yes`, `no` (signatures, none verified) or `-` (no signature) for a `trust` object.
fn signed(trust: &Value) -> String {
    match (
        trust["signed"].as_bool(),
        trust["signatures"].as_array().map(Vec::is_empty),
    ) {
        (Some(true), _) => "yes".into(),
        (_, Some(false)) => "no".into(),
        _ => "-".into(),
    }
}

/// The trust lines of a tag: who signed, what was found, the verdict.
fn trust_lines(out: &mut String, t: &Value) {
    let field = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{k:<13} {v}");
    };
    let sigs = t["signatures"].as_array().cloned().unwrap_or_default();
    if sigs.is_empty() {
        field(out, "signatures", "-".into());
    } else {
        out.push_str("signatures:\n");
        for g in &sigs {
            let mut line = format!(
                "  {:<8} {:<12} {}",
                s(&g["kind"]),
                if g["verified"] == true {
                    "verified"
                } else {
                    "not verified"
                },
                s(&g["signer"])
            );
            if let Some(i) = g["issuer"].as_str() {
                let _ = write!(line, " ({i})");
            }
            if let Some(r) = g["reason"].as_str() {
                let _ = write!(line, ": {r}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let v = &t["vulnerabilities"];
    if v.is_null() {
        field(out, "vulns", "- (no report)".into());
    } else {
        field(
            out,
            "vulns",
            format!(
                "{} critical, {} high, {} medium, {} low, {} unknown; {} fixable ({} {}, db {}, scanned {})",
                s(&v["critical"]),
                s(&v["high"]),
                s(&v["medium"]),
                s(&v["low"]),
                s(&v["unknown"]),
                s(&v["fixable"]),
                s(&v["scanner"]),
                s(&v["scanner_version"]),
                s(&v["db"]),
                when(&v["scanned_at"]),
            ),
        );
    }
    field(out, "max severity", s(&t["max_severity"]));
    field(out, "sbom", strings(&t["sbom"]));
    let p = &t["policy"];
    if p.is_null() {
        field(out, "policy", "-".into());
    } else {
        let mut line = s(&p["verdict"]);
        if let Some(rule) = p["rule"].as_str() {
            let _ = write!(line, " (rule {rule})");
        }
        field(out, "policy", line);
        for f in p["findings"].as_array().cloned().unwrap_or_default() {
            let _ = writeln!(out, "  {}: {}", s(&f["reason"]), s(&f["detail"]));
        }
    }
}

fn print_list(client: &Client, page: &Value, what: &str) -> anyhow::Result<()> {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    print(client.output(), page, |_| image_rows(&items))?;
    if !client.json() {
        use std::io::Write;
        let mut err = std::io::stderr();
        if items.is_empty() {
            writeln!(err, "no {what} match")?;
        } else if page["next_cursor"].is_string() {
            writeln!(
                err,
                "the first {} {what} shown; more match: add --all (or a larger --limit)",
                items.len()
            )?;
        }
    }
    Ok(())
}

fn approval(a: &Value) -> String {
    if a.is_null() {
        return "-".into();
    }
    let mut out = s(&a["decision"]);
    if let Some(by) = a["by"].as_str() {
        let _ = write!(out, " by {by}");
    }
    let _ = write!(out, " at {}", when(&a["at"]));
    if let Some(d) = a["digest"].as_str() {
        let _ = write!(out, " for {}", short_digest(d));
    }
    match a["reason"].as_str() {
        Some(r) if !r.is_empty() => {
            let _ = write!(out, ": {r}");
        }
        _ => {}
    }
    out
}

/// The first lines of a README, at most ~400 characters.
fn excerpt(readme: &Value) -> Option<String> {
    let text = readme["readme"].as_str()?.trim();
    if text.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        if n >= 8 || out.chars().count() + line.chars().count() > 400 {
            out.push_str("  …\n");
            break;
        }
        let _ = writeln!(out, "  {line}");
    }
    Some(out)
}

fn used_by(out: &mut String, v: &Value) {
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push_str("used by       -\n");
        return;
    }
    out.push_str("used by:\n");
    for d in items {
        let _ = writeln!(
            out,
            "  {}/{}  {}  {}  {} ({} replicas, {})",
            s(&d["namespace"]),
            s(&d["name"]),
            s(&d["workload"]),
            s(&d["tag"]),
            s(&d["status"]),
            s(&d["replicas"]),
            s(&d["target"]),
        );
        let v = &d["policy_violation"];
        if !v.is_null() {
            let _ = writeln!(
                out,
                "    policy violation ({}): {}",
                s(&v["stage"]),
                strings(&v["reasons"])
            );
        }
    }
}

fn kind_line(v: &Value) -> String {
    match v["model_type"].as_str() {
        Some(m) => format!("{} ({m})", s(&v["kind"])),
        None => s(&v["kind"]),
    }
}

fn repository_detail(r: &Value) -> String {
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{k:<13} {v}");
    };
    field(
        &mut out,
        "repository",
        format!("{}/{}", s(&r["registry_id"]), s(&r["name"])),
    );
    field(
        &mut out,
        "registry",
        format!("{} ({})", s(&r["registry"]), s(&r["registry_id"])),
    );
    field(&mut out, "kind", kind_line(r));
    field(
        &mut out,
        "description",
        match r["description"].as_str() {
            Some(d) if !d.is_empty() => d.to_owned(),
            _ => "-".into(),
        },
    );
    let mut hm = strings(&r["hm_tags"]);
    if hm != "-" {
        let _ = write!(
            hm,
            " (rule: {}; curators: {})",
            strings(&r["rule_hm_tags"]),
            strings(&r["curator_hm_tags"])
        );
    }
    field(&mut out, "hm tags", hm);
    field(&mut out, "rule", s(&r["rule_id"]));
    field(&mut out, "approval", approval(&r["approval"]));
    field(
        &mut out,
        "tags",
        format!(
            "{} ({} database, {} model)",
            s(&r["tag_count"]),
            s(&r["database_tags"]),
            s(&r["model_tags"])
        ),
    );
    field(&mut out, "first seen", when(&r["first_seen"]));
    field(&mut out, "updated", when(&r["updated_at"]));
    match excerpt(&r["readme"]) {
        Some(e) => {
            out.push_str("readme:\n");
            out.push_str(&e);
        }
        None => field(&mut out, "readme", "-".into()),
    }
    used_by(&mut out, &r["used_by"]);
    out.push('\n');
    let tags = r["tags"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = tags
        .iter()
        .map(|t| {
            vec![
                s(&t["tag"]),
                s(&t["kind"]),
                s(&t["model_type"]),
                short_digest(&s(&t["digest"])),
                t["architectures"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "-".into()),
                size(&t["size"]),
                s(&t["approval"]),
                when(&t["updated_at"]),
                signed(&t["trust"]),
                s(&t["trust"]["max_severity"]),
                s(&t["trust"]["policy"]["verdict"]),
                mutated_marker(&t["mutated"]),
                pulls(&t["pulls"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TAG",
            "KIND",
            "MODEL TYPE",
            "DIGEST",
            "ARCH",
            "SIZE",
            "APPROVAL",
            "UPDATED",
            "SIGNED",
            "SEVERITY",
            "POLICY",
            "MUTATED",
            "PULLS",
        ],
        &rows,
    ));
    let with_referrers: Vec<&Value> = r["referrers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["referrers"].as_array().is_some_and(|l| !l.is_empty()))
                .collect()
        })
        .unwrap_or_default();
    if !with_referrers.is_empty() {
        out.push_str("\nreferrers:\n");
        for d in with_referrers {
            let mut head = format!("  {}", short_digest(&s(&d["digest"])));
            if let Some(p) = d["platform"].as_str() {
                let _ = write!(head, " ({p})");
            }
            let _ = writeln!(out, "{head} [{}]", strings(&d["tags"]));
            for x in d["referrers"].as_array().cloned().unwrap_or_default() {
                let mut line = format!(
                    "    {:<12} {}",
                    s(&x["kind"]),
                    short_digest(&s(&x["digest"]))
                );
                if let Some(a) = x["artifact_type"].as_str() {
                    let _ = write!(line, " {a}");
                }
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

fn map_lines(out: &mut String, title: &str, v: &Value) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            let _ = writeln!(out, "{title}:");
            for (k, val) in m {
                let _ = writeln!(out, "  {k}={}", s(val));
            }
        }
        _ => {
            let _ = writeln!(out, "{title:<13} -");
        }
    }
}

fn tag_detail(t: &Value) -> String {
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{k:<13} {v}");
    };
    field(&mut out, "reference", s(&t["reference"]));
    field(
        &mut out,
        "registry",
        format!("{} ({})", s(&t["registry"]), s(&t["registry_id"])),
    );
    field(&mut out, "digest", s(&t["digest"]));
    field(&mut out, "media type", s(&t["media_type"]));
    if !t["artifact_type"].is_null() {
        field(&mut out, "artifact type", s(&t["artifact_type"]));
    }
    field(&mut out, "kind", kind_line(t));
    if let Some(d) = t["description"].as_str().filter(|d| !d.is_empty()) {
        field(&mut out, "description", d.to_owned());
    }
    field(
        &mut out,
        "size",
        match t["size"].as_u64() {
            Some(n) => format!("{} ({n} bytes)", size(&t["size"])),
            None => s(&t["size"]),
        },
    );
    field(&mut out, "created", s(&t["created"]));
    field(&mut out, "first seen", s(&t["first_seen"]));
    field(&mut out, "updated", s(&t["updated_at"]));
    field(&mut out, "last seen", s(&t["last_seen"]));
    field(&mut out, "hm tags", strings(&t["hm_tags"]));
    field(&mut out, "approval", s(&t["approval"]));
    if !t["tag_approval"].is_null() {
        field(&mut out, "tag decision", approval(&t["tag_approval"]));
    }
    let platforms = t["platforms"].as_array().cloned().unwrap_or_default();
    if platforms.is_empty() {
        field(&mut out, "platforms", "-".into());
    } else {
        out.push_str("platforms:\n");
        for p in &platforms {
            let mut name = format!("{}/{}", s(&p["os"]), s(&p["architecture"]));
            if let Some(v) = p["variant"].as_str() {
                let _ = write!(name, "/{v}");
            }
            let mut line = format!("  {name:<16}");
            if let Some(d) = p["digest"].as_str() {
                let _ = write!(line, " {d}");
            }
            if !p["size"].is_null() {
                let _ = write!(line, " {}", size(&p["size"]));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    map_lines(&mut out, "labels", &t["labels"]);
    map_lines(&mut out, "annotations", &t["annotations"]);
    let extensions = t["extensions"].as_array().cloned().unwrap_or_default();
    if extensions.is_empty() {
        field(&mut out, "extensions", "-".into());
    } else {
        out.push_str("extensions:\n");
        for e in &extensions {
            let mut line = format!("  {}", s(&e["name"]));
            if let Some(v) = e["version"].as_str() {
                let _ = write!(line, " {v}");
            }
            if let Some(d) = e["description"].as_str() {
                let _ = write!(line, ": {d}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let referrers = t["referrers"].as_array().cloned().unwrap_or_default();
    if referrers.is_empty() {
        field(&mut out, "referrers", "-".into());
    } else {
        out.push_str("referrers:\n");
        for r in &referrers {
            let mut line = format!("  {:<12} {}", s(&r["kind"]), s(&r["digest"]));
            if let Some(a) = r["artifact_type"].as_str() {
                let _ = write!(line, " {a}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    trust_lines(&mut out, &t["trust"]);
    mutation_lines(&mut out, t);
    pull_lines(&mut out, t);
    match excerpt(&t["readme"]) {
        Some(e) => {
            out.push_str("readme:\n");
            out.push_str(&e);
        }
        None => field(&mut out, "readme", "-".into()),
    }
    used_by(&mut out, &t["used_by"]);
    out
}

fn stats_table(v: &Value) -> String {
    let counts = table(
        &[
            "TAGS",
            "DATABASE IMAGES",
            "MODEL IMAGES",
            "OTHER",
            "REPOSITORIES",
            "REGISTRIES",
            "MUTATED",
        ],
        &[vec![
            s(&v["tags"]),
            s(&v["database_images"]),
            s(&v["model_images"]),
            s(&v["other_images"]),
            s(&v["repositories"]),
            s(&v["registries"]),
            s(&v["mutated_tags"]),
        ]],
    );
    let sev = &v["by_max_severity"];
    let pol = &v["policy"];
    let trust = table(
        &[
            "SIGNED",
            "UNSIGNED",
            "WITH SBOM",
            "CRITICAL",
            "HIGH",
            "MEDIUM",
            "LOW",
            "NONE",
            "PASS",
            "FAIL",
            "AUDIT",
        ],
        &[vec![
            s(&v["signed"]),
            s(&v["unsigned"]),
            s(&v["with_sbom"]),
            s(&sev["critical"]),
            s(&sev["high"]),
            s(&sev["medium"]),
            s(&sev["low"]),
            s(&sev["none"]),
            s(&pol["pass"]),
            s(&pol["fail"]),
            s(&pol["audit"]),
        ]],
    );
    format!("{counts}\n{trust}")
}

/// `/v1/repositories/{registry_id}/{name}` and `suffix`, the name's `/` kept as they are.
fn repository_path(image: &ImageRef, suffix: &str) -> String {
    format!(
        "/v1/repositories/{}/{}{suffix}",
        image.registry_id, image.repository
    )
}

/// `?tag=<tag>` for a tag-level HM tag, nothing for the repository.
fn tag_query(image: &ImageRef) -> String {
    match &image.tag {
        Some(t) => {
            let mut q = reqwest::Url::parse("http://x/").expect("a constant URL");
            q.query_pairs_mut().append_pair("tag", t);
            format!("?{}", q.query().unwrap_or(""))
        }
        None => String::new(),
    }
}

async fn curate(
    client: &Client,
    method: Method,
    path: String,
    body: Option<Value>,
    done: String,
) -> anyhow::Result<()> {
    let r = client.send(method, &path, body.map(Body::Json)).await?;
    print(client.output(), &r, |_| done)
}

/// The body of an approval or rejection; `--digest` only with a tag.
fn decision_body(image: &ImageRef, reason: &str, digest: Option<String>) -> anyhow::Result<Value> {
    let mut body = json!({"tag": image.tag, "reason": reason});
    if let Some(d) = digest {
        if image.tag.is_none() {
            return Err(CliError::usage(format!(
                "--digest decides on one tag's digest: name the tag, e.g. {}:<tag>",
                image.display()
            ))
            .into());
        }
        body["digest"] = json!(d);
    }
    Ok(body)
}

pub async fn run_images(client: &Client, cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {
        ImagesCommand::Label { image, hm_tag } => {
            let path = format!(
                "{}{}",
                repository_path(&image, &format!("/hm-tags/{hm_tag}")),
                tag_query(&image)
            );
            let done = format!("labelled {} {hm_tag}", image.display());
            curate(client, Method::PUT, path, None, done).await
        }
        ImagesCommand::Unlabel { image, hm_tag } => {
            let path = format!(
                "{}{}",
                repository_path(&image, &format!("/hm-tags/{hm_tag}")),
                tag_query(&image)
            );
            let done = format!("removed {hm_tag} from {}", image.display());
            curate(client, Method::DELETE, path, None, done).await
        }
        ImagesCommand::Readme { image, file } => {
            use std::io::Read;
            let readme = match file.filter(|f| f.as_os_str() != "-") {
                Some(f) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                None => {
                    let mut t = String::new();
                    std::io::stdin().read_to_string(&mut t)?;
                    t
                }
            };
            let body = json!({"readme": readme, "tag": image.tag});
            let done = format!("README of {} set", image.display());
            curate(
                client,
                Method::PUT,
                repository_path(&image, "/readme"),
                Some(body),
                done,
            )
            .await
        }
        ImagesCommand::Approve {
            image,
            reason,
            digest,
        } => {
            let body = decision_body(&image, &reason, digest)?;
            let done = format!("approved {}", image.display());
            curate(
                client,
                Method::POST,
                repository_path(&image, "/approve"),
                Some(body),
                done,
            )
            .await
        }
        ImagesCommand::Reject {
            image,
            reason,
            digest,
        } => {
            if reason.trim().is_empty() {
                return Err(CliError::usage("a rejection needs a --reason").into());
            }
            let body = decision_body(&image, &reason, digest)?;
            let done = format!("rejected {}", image.display());
            curate(
                client,
                Method::POST,
                repository_path(&image, "/reject"),
                Some(body),
                done,
            )
            .await
        }
        ImagesCommand::Ls(args) => {
            let page = list(client, "/v1/images", &args).await?;
            print_list(client, &page, "images")
        }
        ImagesCommand::Show { image } => {
            let r = client
                .send(
                    Method::GET,
                    &format!("/v1/repositories/{}/{}", image.registry_id, image.repository),
                    None,
                )
                .await
                .map_err(|e| {
                    if e.to_string().starts_with("404") {
                        e.context(format!(
                            "the catalog has no repository {}/{} (find images with `imagelib images ls --repository {}`)",
                            image.registry_id, image.repository, image.repository
                        ))
                    } else {
                        e
                    }
                })?;
            let Some(tag) = image.tag else {
                return print(client.output(), &r, repository_detail);
            };
            let tags = r["tags"].as_array().cloned().unwrap_or_default();
            match tags.iter().find(|t| t["tag"] == tag.as_str()) {
                Some(t) => print(client.output(), t, tag_detail),
                None => Err(CliError::not_found(format!(
                    "{}/{} has no tag `{tag}`; its tags: {} (`imagelib images show {}/{}` lists them)",
                    image.registry_id,
                    image.repository,
                    if tags.is_empty() {
                        "none".to_owned()
                    } else {
                        tags.iter()
                            .map(|t| s(&t["tag"]))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    image.registry_id,
                    image.repository
                ))
                .into()),
            }
        }
    }
}

pub async fn run_models(client: &Client, cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Ls(args) => {
            if args.kind.is_some_and(|k| k != Kind::Model) {
                return Err(CliError::usage(
                    "the Model Library holds model images only; drop --kind, or use `imagelib images ls --kind …`",
                )
                .into());
            }
            let page = list(client, "/v1/models", &args).await?;
            print_list(client, &page, "models")
        }
    }
}

pub async fn run_stats(client: &Client) -> anyhow::Result<()> {
    let v = client.send(Method::GET, "/v1/stats", None).await?;
    print(client.output(), &v, stats_table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_parse_or_say_what_to_type() {
        let id = "0190d5c2-7a1e-7c3b-9f00-5d1e2f3a4b5c";
        assert_eq!(
            parse_image_ref(&format!("{id}/nvidia/nim/llm:1.0")).unwrap(),
            ImageRef {
                registry_id: id.into(),
                repository: "nvidia/nim/llm".into(),
                tag: Some("1.0".into())
            }
        );
        assert_eq!(
            parse_image_ref(&format!("{id}/library/postgres"))
                .unwrap()
                .tag,
            None
        );
        let e = parse_image_ref("nosuchformat").unwrap_err();
        assert!(e.contains("<registry-id>/<repository>[:<tag>]"), "{e}");
        let e = parse_image_ref("acme/library/postgres").unwrap_err();
        assert!(e.contains("not a registry id"), "{e}");
        let e = parse_image_ref(&format!("{id}/Library/Postgres")).unwrap_err();
        assert!(e.contains("not a repository name"), "{e}");
        let e = parse_image_ref(&format!("{id}/library/postgres:")).unwrap_err();
        assert!(e.contains("not a tag"), "{e}");
        assert!(parse_image_ref(&format!("{id}/")).is_err());
    }

    #[test]
    fn digests_shorten_and_queries_encode() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123456789abcdef"),
            "sha256:0123456789ab"
        );
        let args = ListArgs {
            kind: Some(Kind::Model),
            as_of: Some("2025-01-31T12:00:00+01:00".into()),
            approved: Some(false),
            q: Some("llama instruct".into()),
            ..Default::default()
        };
        assert_eq!(
            args.query(Some(10), Some("abc")),
            "kind=model&approved=false&q=llama+instruct&as_of=2025-01-31T12%3A00%3A00%2B01%3A00&limit=10&cursor=abc"
        );
        assert_eq!(ListArgs::default().query(None, None), "");
    }

    #[test]
    fn trust_filters_encode_and_trust_renders() {
        let args = ListArgs {
            signed: Some(true),
            max_severity: Some("high".into()),
            has_sbom: Some(false),
            policy: Some("fail".into()),
            ..Default::default()
        };
        assert_eq!(
            args.query(None, None),
            "signed=true&max_severity=high&has_sbom=false&policy=fail"
        );
        let item = json!({
            "registry": "acme", "repository": "apps/web", "tag": "1.0", "kind": "other",
            "digest": "sha256:0123456789abcdef", "architectures": ["amd64"],
            "updated_at": "2025-01-31T12:00:00Z",
            "trust": {"signed": true, "signatures": [{"kind": "cosign", "verified": true,
                "signer": "SHA256:key"}], "vulnerabilities": {"critical": 0, "high": 2,
                "medium": 1, "low": 0, "unknown": 3, "fixable": 2, "scanner": "trivy",
                "scanner_version": "0.58.1", "db": "2025-01-14", "scanned_at": "2025-01-15T00:00:00Z"},
                "max_severity": "high", "sbom": ["spdx"],
                "policy": {"verdict": "fail", "reasons": ["severity_above_limit"], "rule": "apps",
                    "findings": [{"reason": "severity_above_limit", "detail": "CVE-1 (high)"}]}}
        });
        let out = image_rows(std::slice::from_ref(&item));
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert!(
            header.ends_with(&[
                "SIGNED", "SEVERITY", "SBOM", "POLICY", "MUTATED", "PULLS", "LAST", "PULL"
            ]),
            "{out}"
        );
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert!(
            row.ends_with(&["yes", "high", "spdx", "fail", "-", "-", "-"]),
            "{out}"
        );
        let mut text = String::new();
        trust_lines(&mut text, &item["trust"]);
        assert!(text.contains("cosign   verified     SHA256:key"), "{text}");
        assert!(text.contains("0 critical, 2 high, 1 medium"), "{text}");
        assert!(text.contains("fail (rule apps)"), "{text}");
        assert!(
            text.contains("severity_above_limit: CVE-1 (high)"),
            "{text}"
        );
        let none = json!({"signed": false, "signatures": [], "vulnerabilities": null,
            "max_severity": null, "sbom": [], "policy": null});
        assert_eq!(signed(&none), "-");
        assert_eq!(signed(&json!({"signed": false, "signatures": [{}]})), "no");
    }

    #[test]
    fn mutations_and_pulls_render_and_filter() {
        let args = ListArgs {
            mutated: Some(true),
            ..Default::default()
        };
        assert_eq!(args.query(None, None), "mutated=true");
        let old = format!("sha256:{}", "a".repeat(64));
        let new = format!("sha256:{}", "b".repeat(64));
        let item = json!({
            "registry": "acme", "repository": "apps/web", "tag": "1.0", "kind": "other",
            "digest": new, "architectures": ["amd64"], "updated_at": "2025-02-01T00:00:00Z",
            "trust": {}, "pulls": 42, "last_pulled_at": "2025-02-03T04:05:00Z",
            "digest_pulls": 7, "digest_last_pulled_at": "2025-02-03T04:05:00Z",
            "mutated": {"old_digest": old, "new_digest": new, "found_by": "webhook",
                "seen_at": "2025-02-01T00:00:00Z", "at": "2025-02-01T00:00:01Z"},
            "mutations": [
                {"old_digest": old, "new_digest": new, "found_by": "webhook",
                 "seen_at": "2025-02-01T00:00:00Z", "at": "2025-02-01T00:00:01Z"},
                {"old_digest": new, "new_digest": old, "found_by": "sweep",
                 "seen_at": null, "at": "2025-01-01T00:00:00Z"}]
        });
        let out = image_rows(std::slice::from_ref(&item));
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert!(
            row.ends_with(&["yes(aaaaaaaa→bbbbbbbb)", "42", "2025-02-03", "04:05"]),
            "{out}"
        );
        let text = tag_detail(&item);
        assert!(
            text.contains("re-pushed although policy calls the tag immutable (2 times)"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "2025-02-01 00:00 {old} → {new} (found by webhook, seen 2025-02-01 00:00)"
            )),
            "{text}"
        );
        assert!(text.contains("(found by sweep)"), "{text}");
        assert!(
            text.contains("pulls         42 (last 2025-02-03 04:05)"),
            "{text}"
        );
        assert!(
            text.contains("digest pulls  7 (last 2025-02-03 04:05)"),
            "{text}"
        );
        let plain = tag_detail(&json!({"mutated": null, "pulls": 0, "digest_pulls": 0}));
        assert!(plain.contains("mutated       -"), "{plain}");
        assert!(plain.contains("pulls         -"), "{plain}");
        let image = parse_image_ref(&format!("{}/apps/web", uuid_like())).unwrap();
        assert!(decision_body(&image, "ok", Some(new.clone())).is_err());
        let tagged = parse_image_ref(&format!("{}/apps/web:1.0", uuid_like())).unwrap();
        assert_eq!(
            decision_body(&tagged, "ok", Some(new.clone())).unwrap(),
            json!({"tag": "1.0", "reason": "ok", "digest": new})
        );
    }

    fn uuid_like() -> &'static str {
        "0190d5c2-7a1e-7c3b-9f00-5d1e2f3a4b5c"
    }
}
