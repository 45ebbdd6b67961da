//! `imagelib registry …` and `imagelib rules …`.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Body, Client, print, read_secret, s, table};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Register a registry (validated first unless --no-validate).
    Add {
        #[arg(long)]
        label: String,
        /// host[:port][/namespace]
        #[arg(long)]
        url: String,
        /// generic, harbor, dockerhub, ghcr, ecr, acr or gcr
        #[arg(long = "type", default_value = "generic")]
        registry_type: String,
        /// Plain HTTP.
        #[arg(long)]
        insecure: bool,
        /// A PEM file of CA certificates to trust for this registry.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A team that sees the registry (repeatable; none = everyone).
        #[arg(long = "team")]
        visibility: Vec<String>,
        /// Username for basic credentials; the password comes from --password-stdin or --password-file.
        #[arg(long)]
        username: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Read a bearer token from stdin.
        #[arg(long)]
        token_stdin: bool,
        /// A repository to scan when the registry has no usable catalog (repeatable).
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// Seconds between scheduled scans.
        #[arg(long)]
        interval: Option<u64>,
        /// Save without checking the connection.
        #[arg(long)]
        no_validate: bool,
    },
    /// List registries.
    Ls,
    /// Show one registry.
    Show { id: String },
    /// Remove a registry (its credentials become unrecoverable).
    Rm { id: String },
    /// Check the connection and credentials again.
    Validate { id: String },
    /// Scan now.
    Sync {
        id: String,
        #[arg(long)]
        repository: Option<String>,
        /// Wait for the scan to finish, showing its progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Create or replace a rule.
    Set {
        registry: String,
        rule_id: String,
        /// Repositories: an exact name, a glob (`nvidia/nim/*`) or a regex (`/…/`).
        #[arg(long, required_unless_present = "file")]
        repositories: Option<String>,
        /// A tag regex to include (repeatable).
        #[arg(long)]
        include: Vec<String>,
        /// A tag regex to exclude (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Keep only the newest N tags.
        #[arg(long)]
        newest: Option<u32>,
        /// database, model or auto
        #[arg(long, default_value = "auto")]
        kind: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long = "hm-tag")]
        hm_tags: Vec<String>,
        #[arg(long)]
        disabled: bool,
        /// The whole rule as a JSON file instead of flags.
        #[arg(long, conflicts_with = "repositories")]
        file: Option<PathBuf>,
    },
    /// List a registry's rules.
    Ls { registry: String },
    /// Remove a rule.
    Rm { registry: String, rule_id: String },
    /// Import the beacon agent's YAML (postgres_repositories, model_repositories).
    Import { registry: String, file: PathBuf },
}

fn registry_rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["label"]),
                s(&r["registry_type"]),
                s(&r["url"]),
                match (&r["status"], &r["status_reason"]) {
                    (st, Value::Null) => s(st),
                    (st, reason) => format!("{} ({})", s(st), s(reason)),
                },
            ]
        })
        .collect();
    table(&["ID", "LABEL", "TYPE", "URL", "STATUS"], &rows)
}

fn registry_detail(r: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "label",
        "url",
        "registry_type",
        "insecure",
        "auth_kind",
        "visibility",
        "status",
        "status_reason",
        "status_detail",
        "catalog_access",
        "scan_interval_secs",
        "repositories",
        "webhook_url",
        "validated_at",
        "created_at",
        "updated_at",
    ] {
        out.push_str(&format!("{key:<20} {}\n", s(&r[key])));
    }
    out
}

pub async fn run(client: &Client, cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Add {
            label,
            url,
            registry_type,
            insecure,
            ca_file,
            visibility,
            username,
            password_stdin,
            password_file,
            token_stdin,
            repositories,
            interval,
            no_validate,
        } => {
            let credentials = match (username, token_stdin) {
                (Some(_), true) => {
                    anyhow::bail!("give either --username or --token-stdin, not both")
                }
                (Some(u), false) => {
                    let p = read_secret(password_file.as_deref(), password_stdin, "password")?
                        .ok_or_else(|| anyhow::anyhow!("--username needs --password-stdin or --password-file (never a password on the command line)"))?;
                    json!({"kind": "basic", "username": u, "password": p})
                }
                (None, true) => {
                    let t = read_secret(None, true, "token")?.unwrap_or_default();
                    json!({"kind": "token", "token": t})
                }
                (None, false) => json!({"kind": "none"}),
            };
            let ca_pem = ca_file
                .map(|f| {
                    std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))
                })
                .transpose()?;
            let body = json!({
                "label": label, "url": url, "registry_type": registry_type, "insecure": insecure,
                "ca_pem": ca_pem, "visibility": visibility, "credentials": credentials,
                "repositories": repositories, "scan_interval_secs": interval, "validate": !no_validate,
            });
            let r = client
                .send(Method::POST, "/v1/registries", Some(Body::Json(body)))
                .await?;
            print(client.json(), &r, registry_detail)
        }
        RegistryCommand::Ls => {
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/registries?limit=500&cursor={c}"),
                    None => "/v1/registries?limit=500".into(),
                };
                let page = client.send(Method::GET, &path, None).await?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            print(client.json(), &Value::Array(items.clone()), |_| {
                registry_rows(&items)
            })
        }
        RegistryCommand::Show { id } => {
            let r = client
                .send(Method::GET, &format!("/v1/registries/{id}"), None)
                .await?;
            print(client.json(), &r, registry_detail)
        }
        RegistryCommand::Rm { id } => {
            client
                .send(Method::DELETE, &format!("/v1/registries/{id}"), None)
                .await?;
            print(client.json(), &json!({"removed": id}), |_| {
                format!("removed {id}")
            })
        }
        RegistryCommand::Validate { id } => {
            let r = client
                .send(Method::POST, &format!("/v1/registries/{id}/validate"), None)
                .await?;
            print(client.json(), &r, |r| {
                if r["validation"]["ok"] == true {
                    "validated".into()
                } else {
                    format!(
                        "validation failed ({}): {}",
                        s(&r["validation"]["reason"]),
                        s(&r["validation"]["detail"])
                    )
                }
            })
        }
        RegistryCommand::Sync {
            id,
            repository,
            wait,
            timeout,
        } => {
            let r = client
                .send(
                    Method::POST,
                    &format!("/v1/registries/{id}/sync"),
                    Some(Body::Json(json!({"repository": repository}))),
                )
                .await?;
            if !wait {
                return print(client.json(), &r, |r| {
                    format!("sync requested (event sequence {})", s(&r["sequence"]))
                });
            }
            let request_sequence = r["sequence"].as_u64().ok_or_else(|| {
                anyhow::anyhow!("the server did not say which sync request it recorded: {r}")
            })?;
            let last = wait_for_sync(client, &id, request_sequence, timeout).await?;
            let failed = last["state"] == "failed";
            print(client.json(), &last, |l| {
                let sum = &l["summary"];
                if failed {
                    format!("scan failed: {}", s(&sum["reason"]))
                } else {
                    format!(
                        "scan {}: {} repositories, {} tags seen, {} added, {} moved, {} removed, {} requests in {} ms",
                        s(&l["state"]),
                        s(&sum["repositories"]),
                        s(&sum["tags_seen"]),
                        s(&sum["added"]),
                        s(&sum["moved"]),
                        s(&sum["removed"]),
                        s(&sum["requests"]),
                        s(&sum["duration_ms"])
                    )
                }
            })?;
            if failed {
                anyhow::bail!("the scan failed");
            }
            Ok(())
        }
    }
}

/// Follow the registry's `last_sync` until a scan that started after the sync request
/// (stream sequence `request_sequence`) ends. A scan already running when the request was
/// made does not count: it may predate the rules the request was meant to apply.
pub async fn wait_for_sync(
    client: &Client,
    id: &str,
    request_sequence: u64,
    timeout: u64,
) -> anyhow::Result<Value> {
    let bar = indicatif::ProgressBar::new_spinner();
    if client.json() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message("waiting for the scanner to pick up the request");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        let r = client
            .send(Method::GET, &format!("/v1/registries/{id}"), None)
            .await?;
        let last = &r["last_sync"];
        let at = last["at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let fresh = last["started_sequence"]
            .as_u64()
            .is_some_and(|started| started > request_sequence);
        match (fresh, last["state"].as_str()) {
            (true, Some("running")) => bar.set_message(format!(
                "scanning {} (started {})",
                s(&r["label"]),
                at.map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default()
            )),
            (true, Some("completed" | "partial" | "failed")) => {
                bar.finish_and_clear();
                return Ok(last.clone());
            }
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            bar.finish_and_clear();
            anyhow::bail!(
                "no finished scan after {timeout} s; is sync-scanner running? (`imagelib registry show {id}` shows the last scan)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn rule_rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                s(&r["rule_id"]),
                s(&r["kind"]),
                r["repositories"].to_string(),
                s(&r["enabled"]),
                s(&r["description"]),
            ]
        })
        .collect();
    table(
        &["RULE", "KIND", "REPOSITORIES", "ENABLED", "DESCRIPTION"],
        &rows,
    )
}

pub async fn run_rules(client: &Client, cmd: RulesCommand) -> anyhow::Result<()> {
    match cmd {
        RulesCommand::Set {
            registry,
            rule_id,
            repositories,
            include,
            exclude,
            newest,
            kind,
            description,
            hm_tags,
            disabled,
            file,
        } => {
            let body = match file {
                Some(f) => serde_json::from_str(&std::fs::read_to_string(&f)?)
                    .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", f.display()))?,
                None => {
                    let mut tags = json!({"include": include, "exclude": exclude});
                    if let Some(n) = newest {
                        tags["newest"] = json!(n);
                    }
                    json!({"repositories": repositories, "tags": tags, "kind": kind,
                           "description": description, "hm_tags": hm_tags, "enabled": !disabled})
                }
            };
            let r = client
                .send(
                    Method::PUT,
                    &format!("/v1/registries/{registry}/rules/{rule_id}"),
                    Some(Body::Json(body)),
                )
                .await?;
            print(client.json(), &r, |r| rule_rows(std::slice::from_ref(r)))
        }
        RulesCommand::Ls { registry } => {
            let r = client
                .send(
                    Method::GET,
                    &format!("/v1/registries/{registry}/rules"),
                    None,
                )
                .await?;
            let items = r["items"].as_array().cloned().unwrap_or_default();
            print(client.json(), &r, |_| rule_rows(&items))
        }
        RulesCommand::Rm { registry, rule_id } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/registries/{registry}/rules/{rule_id}"),
                    None,
                )
                .await?;
            print(client.json(), &json!({"removed": rule_id}), |_| {
                format!("removed rule {rule_id}")
            })
        }
        RulesCommand::Import { registry, file } => {
            let yaml = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let r = client
                .send(
                    Method::POST,
                    &format!("/v1/registries/{registry}/rules/import"),
                    Some(Body::Yaml(yaml)),
                )
                .await?;
            let items = r["items"].as_array().cloned().unwrap_or_default();
            print(client.json(), &r, |_| rule_rows(&items))
        }
    }
}
