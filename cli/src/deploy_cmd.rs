//! `imagelib deploy …` and `imagelib postgres …`: deployments through serving-deployer.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Body, CliError, Client, print, s, table};

/// The exit code of a deploy refused because the tag was re-pushed and its new digest is
/// not approved (`409 tag-mutated`): distinct from a policy violation (4) and from other
/// conflicts (5), so a pipeline can tell "wait for a curator" from "fix the image".
pub const EXIT_TAG_MUTATED: u8 = 7;

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Deploy a model image as a KServe InferenceService, pinned by digest.
    Create {
        /// `<registry-id>/<repository>:<tag>` or `<image-id>:<tag>`; `…:<tag>@sha256:…` pins
        /// the content a re-pushed tag had before (or its current digest).
        image: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// GPUs per replica (`nvidia.com/gpu` limit).
        #[arg(long)]
        gpus: Option<u32>,
        /// CPU request, e.g. `4` or `500m`.
        #[arg(long)]
        cpu: Option<String>,
        /// Memory request and limit, e.g. `32Gi`.
        #[arg(long)]
        memory: Option<String>,
        /// `KEY=VALUE` runtime environment (repeatable).
        #[arg(long = "env", value_parser = parse_kv)]
        env: Vec<(String, String)>,
        /// `gitops` or `kubernetes` (the server's default when absent).
        #[arg(long)]
        target: Option<String>,
        /// Provision PostgreSQL (a CloudNativePG Cluster) from a database image instead.
        #[arg(long)]
        postgres: bool,
        /// Postgres storage size.
        #[arg(long)]
        storage: Option<String>,
    },
    /// List deployments.
    Ls,
    /// Show a deployment, its manifests, history and trust policy violations.
    Show { id: String },
    /// Remove a deployment's manifests from its target.
    Rm { id: String },
    /// Print the CloudNativePG ClusterImageCatalog of a database repository.
    ImageCatalog {
        /// `<registry-id>/<repository>`
        repository: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn detail(d: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "name",
        "namespace",
        "workload",
        "target",
        "image",
        "digest",
        "replicas",
        "state",
        "reason",
        "revision",
        "registry_removed",
        "requested_by",
        "updated_at",
    ] {
        out.push_str(&format!("{key:<16} {}\n", s(&d[key])));
    }
    out.push_str("history:\n");
    for h in d["history"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<10} {} {}\n",
            s(&h["state"]),
            s(&h["at"]),
            h["detail"].as_str().unwrap_or("")
        ));
    }
    for f in d["flags"].as_array().into_iter().flatten() {
        out.push_str(&format!("flag             {}\n", flag_line(f)));
    }
    let violations = d["policy_violations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !violations.is_empty() {
        out.push_str("policy violations:\n");
    }
    for v in &violations {
        let reasons: Vec<String> = v["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        out.push_str(&format!(
            "  {:<10} {} policy {} digest {}: {}\n",
            s(&v["stage"]),
            s(&v["at"]),
            s(&v["policy"]),
            s(&v["digest"]),
            reasons.join(", ")
        ));
        for f in v["findings"].as_array().into_iter().flatten() {
            out.push_str(&format!("    - {}: {}\n", s(&f["reason"]), s(&f["detail"])));
        }
    }
    out
}

/// A flag in words.
fn flag_line(f: &Value) -> String {
    match f["kind"].as_str() {
        Some("tag_mutated") => {
            let now = match f["current_digest"].as_str() {
                Some(c) => format!("now points at {c}"),
                None => "was removed since".to_owned(),
            };
            format!(
                "tag_mutated: tag {} was re-pushed from the digest this deployment runs ({}) to {} (found by {}, {}); it {now}. The deployment keeps running; redeploy the tag once a curator approves the new digest.",
                s(&f["tag"]),
                s(&f["old_digest"]),
                s(&f["new_digest"]),
                s(&f["found_by"]),
                s(&f["at"]),
            )
        }
        _ => f.to_string(),
    }
}

/// The FLAGS column: `-`, or the kinds of the deployment's flags.
fn flags(d: &Value) -> String {
    let kinds: Vec<String> = d["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| s(&f["kind"]))
        .collect();
    if kinds.is_empty() {
        "-".into()
    } else {
        kinds.join(",")
    }
}

/// The POLICY column: `-`, or the reasons of the latest violation recorded on it.
fn violations(d: &Value) -> String {
    let Some(last) = d["policy_violations"].as_array().and_then(|v| v.last()) else {
        return "-".into();
    };
    let reasons: Vec<String> = last["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    format!("{}: {}", s(&last["stage"]), reasons.join(","))
}

/// A refusal by the deploy gate says what to do next.
fn gate_hint(e: anyhow::Error) -> anyhow::Error {
    let Some(c) = e.downcast_ref::<CliError>() else {
        return e;
    };
    if c.message.contains("[tag-mutated]") {
        return CliError {
            code: EXIT_TAG_MUTATED,
            message: format!(
                "{}\nhint: the tag was re-pushed although policy calls it immutable; a curator reviews the new digest and approves it with the command above, then deploy again — or deploy the old content with `<image>@<old digest>`",
                c.message
            ),
        }
        .into();
    }
    let hint = if c.message.contains("[policy-violation]") {
        "hint: the image fails its trust policy; fix each reason above (sign it with a trusted key, attach a scan report or SBOM, fix or allow the CVEs), then scan the registry again"
    } else if c.message.contains("[policy-pending]") {
        "hint: run `imagelib registry sync <registry-id>` and deploy again once it is evaluated"
    } else {
        return e;
    };
    CliError {
        code: c.code,
        message: format!("{}\n{hint}", c.message),
    }
    .into()
}

pub async fn run(client: &Client, cmd: DeployCommand) -> anyhow::Result<()> {
    match cmd {
        DeployCommand::Create {
            image,
            name,
            namespace,
            replicas,
            gpus,
            cpu,
            memory,
            env,
            target,
            postgres,
            storage,
        } => {
            let mut requests = serde_json::Map::new();
            let mut limits = serde_json::Map::new();
            if let Some(c) = cpu {
                requests.insert("cpu".into(), json!(c));
            }
            if let Some(m) = memory {
                requests.insert("memory".into(), json!(m));
                limits.insert("memory".into(), json!(m));
            }
            if let Some(g) = gpus {
                limits.insert("nvidia.com/gpu".into(), json!(g));
            }
            let mut body = json!({
                "image": image, "name": name, "namespace": namespace, "replicas": replicas,
                "resources": {"requests": requests, "limits": limits},
                "env": env.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<String, Value>>(),
            });
            if let Some(t) = target {
                body["target"] = json!(t);
            }
            if let Some(size) = storage {
                body["options"] = json!({"storage": size});
            }
            let path = if postgres {
                "/v1/provisioning/postgres"
            } else {
                "/v1/deployments"
            };
            let d = client
                .send(Method::POST, path, Some(Body::Json(body)))
                .await
                .map_err(gate_hint)?;
            print(client.output(), &d, detail)
        }
        DeployCommand::Ls => {
            let page = client
                .send(Method::GET, "/v1/deployments?limit=500", None)
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            print(client.output(), &page, |_| {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|d| {
                        vec![
                            s(&d["id"]),
                            format!("{}/{}", s(&d["namespace"]), s(&d["name"])),
                            s(&d["workload"]),
                            s(&d["state"]),
                            s(&d["image"]),
                            violations(d),
                            flags(d),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "NAME", "WORKLOAD", "STATE", "IMAGE", "POLICY", "FLAGS",
                    ],
                    &rows,
                )
            })
        }
        DeployCommand::Show { id } => {
            let d = client
                .send(Method::GET, &format!("/v1/deployments/{id}"), None)
                .await?;
            print(client.output(), &d, detail)
        }
        DeployCommand::Rm { id } => {
            client
                .send(Method::DELETE, &format!("/v1/deployments/{id}"), None)
                .await?;
            print(client.output(), &json!({"deleted": id}), |_| {
                format!("deleted {id}")
            })
        }
        DeployCommand::ImageCatalog { repository } => {
            let c = client
                .send(
                    Method::GET,
                    &format!("/v1/provisioning/cnpg/image-catalog?repository={repository}"),
                    None,
                )
                .await?;
            print(client.output(), &c, |c| {
                serde_norway::to_string(c).unwrap_or_default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_mutated_refusal_exits_7_with_a_hint_and_flags_read_in_words() {
        let refused: anyhow::Error = CliError {
            code: crate::client::exit::CONFLICT,
            message: "409 Conflict [tag-mutated]: tag `1.0` … `imagelib images approve r/acme/llm:1.0 --digest sha256:bb …`".into(),
        }
        .into();
        let e = gate_hint(refused);
        assert_eq!(crate::client::exit_code(&e), EXIT_TAG_MUTATED);
        let text = e.to_string();
        assert!(text.contains("imagelib images approve"), "{text}");
        assert!(text.contains("hint: the tag was re-pushed"), "{text}");
        let pending: anyhow::Error = CliError {
            code: crate::client::exit::CONFLICT,
            message: "409 Conflict [policy-pending]: …".into(),
        }
        .into();
        assert_eq!(
            crate::client::exit_code(&gate_hint(pending)),
            crate::client::exit::CONFLICT
        );

        let d = json!({"flags": [{"kind": "tag_mutated", "tag": "1.0", "old_digest": "sha256:aa",
            "new_digest": "sha256:bb", "current_digest": "sha256:bb", "found_by": "webhook",
            "seen_at": null, "at": "2025-03-01T12:00:00Z"}]});
        assert_eq!(flags(&d), "tag_mutated");
        assert_eq!(flags(&json!({"flags": []})), "-");
        let shown = detail(&d);
        assert!(
            shown.contains("flag             tag_mutated: tag 1.0 was re-pushed from the digest this deployment runs (sha256:aa) to sha256:bb (found by webhook"),
            "{shown}"
        );
        assert!(shown.contains("it now points at sha256:bb"), "{shown}");
    }
}
