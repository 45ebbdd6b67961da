//! `imagelib rules trust …` and `imagelib rules show …`: a rule's trust policy.
//!
//! The policy is set on the rule as a whole: the command reads the rule (and its `ETag`),
//! replaces `trust` with what the flags say and writes it back with `If-Match`, so a change
//! made meanwhile by someone else is refused (`412`) rather than overwritten. Validation
//! is the server's (one place, the same for HTTP, CLI and agent YAML); its errors name the
//! field (`/trust/keys/0`), which is the n-th `--key`.

use std::path::{Path, PathBuf};

use reqwest::Method;
use reqwest::header::IF_MATCH;
use serde_json::{Map, Value, json};

use crate::client::{Body, CliError, Client, print, s, table};

/// The trust policy flags. Without any, the current policy is shown.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    /// enforce (a failing image is not deployed), audit (deployed, violation recorded) or
    /// off. Default: audit.
    #[arg(long, value_parser = ["enforce", "audit", "off"])]
    pub mode: Option<String>,
    /// A trusted public key, a PEM file (cosign.pub); repeatable. Named after the file.
    #[arg(long = "key", value_name = "PEM_FILE")]
    pub keys: Vec<PathBuf>,
    /// A trusted keyless signer, `ISSUER=SUBJECT_REGEX`
    /// (`https://token.actions.githubusercontent.com=^https://github\.com/acme/.*$`);
    /// repeatable.
    #[arg(long = "identity", value_name = "ISSUER=SUBJECT")]
    pub identities: Vec<String>,
    /// A trusted Notation signer: a regex over the certificate subject DN; repeatable.
    #[arg(long = "x509-subject", value_name = "REGEX")]
    pub x509_subjects: Vec<String>,
    /// The highest tolerated vulnerability severity: critical, high, medium, low or none.
    #[arg(long, value_parser = ["critical", "high", "medium", "low", "none"])]
    pub max_severity: Option<String>,
    /// A tolerated vulnerability until a date, `ID:YYYY-MM-DD` or `"ID until YYYY-MM-DD"`;
    /// repeatable.
    #[arg(long = "allow-cve", value_name = "ID:DATE")]
    pub allow_cves: Vec<String>,
    /// Require an SBOM (artifact or attestation).
    #[arg(long)]
    pub require_sbom: bool,
    /// The whole policy from a JSON or YAML file instead of flags.
    #[arg(long, conflicts_with_all = ["mode", "keys", "identities", "x509_subjects", "max_severity", "allow_cves", "require_sbom", "off", "remove"])]
    pub file: Option<PathBuf>,
    /// Switch the current policy off, keeping what it lists (the gate lifts).
    #[arg(long, conflicts_with_all = ["mode", "keys", "identities", "x509_subjects", "max_severity", "allow_cves", "require_sbom", "remove"])]
    pub off: bool,
    /// Remove the policy from the rule.
    #[arg(long, conflicts_with_all = ["mode", "keys", "identities", "x509_subjects", "max_severity", "allow_cves", "require_sbom"])]
    pub remove: bool,
}

impl TrustArgs {
    fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.keys.is_empty()
            && self.identities.is_empty()
            && self.x509_subjects.is_empty()
            && self.max_severity.is_none()
            && self.allow_cves.is_empty()
            && !self.require_sbom
            && self.file.is_none()
            && !self.off
            && !self.remove
    }

    /// The policy the flags describe (`None`: remove it), given the current one.
    fn policy(&self, current: Option<&Value>) -> anyhow::Result<Option<Value>> {
        if self.remove {
            return Ok(None);
        }
        if self.off {
            let mut policy = current
                .filter(|v| v.is_object())
                .cloned()
                .ok_or_else(|| CliError::usage("the rule has no trust policy to switch off"))?;
            policy["mode"] = json!("off");
            return Ok(Some(policy));
        }
        if let Some(file) = &self.file {
            return read_document(file).map(Some);
        }
        let mut policy = Map::new();
        if let Some(mode) = &self.mode {
            policy.insert("mode".into(), json!(mode));
        }
        let keys = self
            .keys
            .iter()
            .map(|path| {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    CliError::usage(format!("cannot read key {}: {e}", path.display()))
                })?;
                let name = path
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok(json!({"name": name, "pem": pem}))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !keys.is_empty() {
            policy.insert("keys".into(), Value::Array(keys));
        }
        let mut identities = Vec::new();
        for raw in &self.identities {
            let (issuer, subject) = raw.split_once('=').ok_or_else(|| {
                CliError::usage(format!(
                    "--identity `{raw}`: write it as ISSUER=SUBJECT_REGEX, e.g. \
                     'https://accounts.google.com=^ci@acme\\.com$'"
                ))
            })?;
            identities.push(json!({"issuer": issuer, "subject": subject}));
        }
        identities.extend(
            self.x509_subjects
                .iter()
                .map(|x| json!({"x509_subject": x})),
        );
        if !identities.is_empty() {
            policy.insert("identities".into(), Value::Array(identities));
        }
        if let Some(limit) = &self.max_severity {
            policy.insert("max_severity".into(), json!(limit));
        }
        if !self.allow_cves.is_empty() {
            policy.insert("allow_cves".into(), json!(self.allow_cves));
        }
        if self.require_sbom {
            policy.insert("require_sbom".into(), json!(true));
        }
        Ok(Some(Value::Object(policy)))
    }
}

fn read_document(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .or_else(|_| serde_norway::from_str(&text))
        .map_err(|e| {
            CliError::usage(format!("{} is neither JSON nor YAML: {e}", path.display())).into()
        })
}

fn rule_path(registry: &str, rule_id: &str) -> String {
    format!("/v1/registries/{registry}/rules/{rule_id}")
}

/// `imagelib rules trust`: show the policy, or set it from the flags.
pub async fn run_trust(
    client: &Client,
    registry: &str,
    rule_id: &str,
    args: TrustArgs,
) -> anyhow::Result<()> {
    let path = rule_path(registry, rule_id);
    let current = client.send_with(Method::GET, &path, None, &[]).await?;
    if args.is_empty() {
        let policy = current.value.get("trust").cloned().unwrap_or(Value::Null);
        return print(client.output(), &policy, policy_lines);
    }
    let mut rule = current.value;
    let policy = args.policy(rule.get("trust"))?;
    let Some(fields) = rule.as_object_mut() else {
        anyhow::bail!("the server answered with something that is not a rule: {rule}");
    };
    // The PUT body is the rule as written; the ids come from the path.
    fields.remove("registry_id");
    fields.remove("rule_id");
    match policy {
        Some(p) => fields.insert("trust".into(), p),
        None => fields.remove("trust"),
    };
    let headers: Vec<_> = current
        .etag
        .map(|etag| (IF_MATCH, etag))
        .into_iter()
        .collect();
    let saved = client
        .send_with(Method::PUT, &path, Some(Body::Json(rule)), &headers)
        .await?
        .value;
    print(client.output(), &saved, |r| {
        format!(
            "rule {}\n{}",
            s(&r["rule_id"]),
            policy_lines(r.get("trust").unwrap_or(&Value::Null))
        )
    })
}

/// For `rules set` from flags: carries the rule's current trust and retention policies over
/// into `body` (flags describe discovery only, and a policy must not lift because a pattern
/// changed)
/// and returns the `If-Match` that guards the replacement. Nothing when the rule is new.
pub async fn keep_policy(
    client: &Client,
    registry: &str,
    rule_id: &str,
    body: &mut Value,
) -> anyhow::Result<Vec<(reqwest::header::HeaderName, String)>> {
    let current = match client
        .send_with(Method::GET, &rule_path(registry, rule_id), None, &[])
        .await
    {
        Ok(reply) => reply,
        Err(e) if crate::client::exit_code(&e) == crate::client::exit::NOT_FOUND => {
            return Ok(vec![]);
        }
        Err(e) => return Err(e),
    };
    for policy in ["trust", "retention"] {
        if let (Some(p), Some(fields)) = (current.value.get(policy), body.as_object_mut()) {
            fields.insert(policy.into(), p.clone());
        }
    }
    Ok(current.etag.map(|e| (IF_MATCH, e)).into_iter().collect())
}

/// `imagelib rules show`: one rule, its trust policy included.
pub async fn run_show(client: &Client, registry: &str, rule_id: &str) -> anyhow::Result<()> {
    let rule = client
        .send(Method::GET, &rule_path(registry, rule_id), None)
        .await?;
    print(client.output(), &rule, |r| {
        let rows = vec![
            vec!["rule".into(), s(&r["rule_id"])],
            vec!["kind".into(), s(&r["kind"])],
            vec!["repositories".into(), r["repositories"].to_string()],
            vec!["tags".into(), r["tags"].to_string()],
            vec!["enabled".into(), s(&r["enabled"])],
            vec!["description".into(), s(&r["description"])],
            vec!["hm tags".into(), r["hm_tags"].to_string()],
        ];
        let mut out = table(&["FIELD", "VALUE"], &rows);
        out.push_str("\ntrust policy\n");
        out.push_str(&policy_lines(r.get("trust").unwrap_or(&Value::Null)));
        out
    })
}

/// One line per part of a policy, for people.
pub fn policy_lines(policy: &Value) -> String {
    if policy.is_null() {
        return "  none".into();
    }
    let mut lines = vec![format!("  mode          {}", s(&policy["mode"]))];
    for key in policy["keys"].as_array().into_iter().flatten() {
        let name = key["name"].as_str().unwrap_or("");
        lines.push(format!(
            "  key           {}{} ({})",
            if name.is_empty() {
                String::new()
            } else {
                format!("{name} ")
            },
            s(&key["key_id"]),
            s(&key["algorithm"])
        ));
    }
    for identity in policy["identities"].as_array().into_iter().flatten() {
        let line = match identity.get("x509_subject") {
            Some(x) => format!("x509 subject {}", s(x)),
            None => format!("{} {}", s(&identity["issuer"]), s(&identity["subject"])),
        };
        lines.push(format!("  identity      {line}"));
    }
    if let Some(limit) = policy.get("max_severity") {
        lines.push(format!("  max severity  {}", s(limit)));
    }
    for allowance in policy["allow_cves"].as_array().into_iter().flatten() {
        let reason = allowance["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        lines.push(format!(
            "  allow         {} until {}{reason}",
            s(&allowance["id"]),
            s(&allowance["expires"])
        ));
    }
    lines.push(format!(
        "  require sbom  {}",
        if policy["require_sbom"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    ));
    lines.join("\n")
}

/// A short summary for the rules table: `enforce: 2 keys, ≤high, sbom`.
pub fn policy_summary(policy: &Value) -> String {
    if !policy.is_object() {
        return "-".into();
    }
    let count = |field: &str, one: &str, many: &str| match policy[field].as_array().map(Vec::len) {
        Some(1) => Some(format!("1 {one}")),
        Some(n) if n > 1 => Some(format!("{n} {many}")),
        _ => None,
    };
    let parts: Vec<String> = [
        count("keys", "key", "keys"),
        count("identities", "identity", "identities"),
        policy
            .get("max_severity")
            .and_then(Value::as_str)
            .map(|l| format!("max {l}")),
        count("allow_cves", "allowed CVE", "allowed CVEs"),
        (policy["require_sbom"].as_bool() == Some(true)).then(|| "sbom".to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!("{}: {}", s(&policy["mode"]), parts.join(", "))
}
