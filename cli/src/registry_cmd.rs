//! `imagelib registry …` and `imagelib rules …`.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Body, CliError, Client, print, read_secret, s, table};

/// Which credentials: `--auth`, or what the identity flags imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    None,
    /// `--username`, the password from stdin or a file.
    Basic,
    /// A bearer token from stdin or a file.
    Token,
    /// `--aws-access-key-id`, `--region`, the secret access key from stdin or a file.
    AwsEcr,
    /// `--tenant-id`, `--client-id`, the client secret from stdin or a file.
    AzureServicePrincipal,
    /// An Artifact Registry service-account key JSON from stdin or a file (sent as
    /// `_json_key` basic credentials).
    GcpServiceAccountKey,
    /// A GitHub App (ghcr): `--github-app-id`, `--github-installation-id`, the app's
    /// private key PEM from `--github-app-key-file` (or stdin / --secret-file).
    GithubApp,
}

/// Registry credentials. Secrets come from stdin or a file only: argv is world-readable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// The credential kind; implied by --username, --aws-access-key-id, --tenant-id or
    /// --token-stdin when not given.
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,
    /// Username for basic credentials.
    #[arg(long)]
    pub username: Option<String>,
    /// AWS access key id (ECR); the secret access key comes from stdin or --secret-file.
    #[arg(long)]
    pub aws_access_key_id: Option<String>,
    /// AWS region (ECR), e.g. eu-west-1.
    #[arg(long)]
    pub region: Option<String>,
    /// A file holding an AWS session token (temporary ECR credentials).
    #[arg(long)]
    pub session_token_file: Option<PathBuf>,
    /// Azure AD tenant (ACR service principal); the client secret comes from stdin or --secret-file.
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// Azure AD application (client) id.
    #[arg(long)]
    pub client_id: Option<String>,
    /// GitHub App ID (ghcr); the app's private key comes from --github-app-key-file.
    #[arg(long)]
    pub github_app_id: Option<String>,
    /// The GitHub App's installation ID on the owner (the number ending the
    /// installation's URL).
    #[arg(long)]
    pub github_installation_id: Option<String>,
    /// The GitHub App's private key, the .pem file downloaded from the app's settings.
    #[arg(long, conflicts_with_all = ["stdin_secret", "secret_file"])]
    pub github_app_key_file: Option<PathBuf>,
    /// Read the secret (password, token, secret key, client secret, key JSON) from stdin.
    #[arg(long, visible_aliases = ["password-stdin", "secret-stdin"])]
    pub stdin_secret: bool,
    /// Read the secret from this file.
    #[arg(long, visible_alias = "password-file", conflicts_with = "stdin_secret")]
    pub secret_file: Option<PathBuf>,
    /// A bearer token from stdin (the same as `--auth token --password-stdin`).
    #[arg(long, conflicts_with = "secret_file")]
    pub token_stdin: bool,
    /// Refused: a secret on the command line shows in `ps`.
    #[arg(long, hide = true, value_name = "REFUSED")]
    pub password: Option<String>,
}

impl CredentialArgs {
    fn given(&self) -> bool {
        self.auth.is_some()
            || self.username.is_some()
            || self.aws_access_key_id.is_some()
            || self.tenant_id.is_some()
            || self.client_id.is_some()
            || self.github_app_id.is_some()
            || self.github_installation_id.is_some()
            || self.github_app_key_file.is_some()
            || self.token_stdin
            || self.stdin_secret
            || self.secret_file.is_some()
    }

    /// The `credentials` object the API takes, or `None` when no credential flag was given.
    pub fn to_json(&self) -> anyhow::Result<Option<Value>> {
        let usage = |m: String| -> anyhow::Error { CliError::usage(m).into() };
        if self.password.is_some() {
            return Err(usage(
                "--password is not accepted: a password on the command line is visible to every user in `ps`.\n\
                 Pipe it with --password-stdin, or name a file with --secret-file."
                    .into(),
            ));
        }
        if !self.given() {
            return Ok(None);
        }
        let implied = [
            (self.username.is_some(), AuthArg::Basic),
            (self.token_stdin, AuthArg::Token),
            (self.aws_access_key_id.is_some(), AuthArg::AwsEcr),
            (
                self.tenant_id.is_some() || self.client_id.is_some(),
                AuthArg::AzureServicePrincipal,
            ),
            (
                self.github_app_id.is_some()
                    || self.github_installation_id.is_some()
                    || self.github_app_key_file.is_some(),
                AuthArg::GithubApp,
            ),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect::<Vec<_>>();
        let kind = match (self.auth, implied.as_slice()) {
            (Some(k), []) => k,
            (Some(k), [i]) if *i == k => k,
            (None, [i]) => *i,
            (None, []) => {
                return Err(usage(
                    "a secret without a kind: add --username, --aws-access-key-id, --tenant-id/--client-id, --github-app-id or --auth".into(),
                ));
            }
            _ => {
                return Err(usage(
                    "credential flags of different kinds: give the flags of one kind only (see `imagelib registry add --help`)".into(),
                ));
            }
        };
        let stdin = self.stdin_secret || self.token_stdin;
        let secret = |what: &str| -> anyhow::Result<String> {
            read_secret(self.secret_file.as_deref(), stdin, what)?.ok_or_else(|| {
                usage(format!(
                    "the {what} comes from stdin (--password-stdin) or a file (--secret-file), never the command line"
                ))
            })
        };
        let required = |v: &Option<String>, flag: &str| -> anyhow::Result<String> {
            v.clone()
                .ok_or_else(|| usage(format!("{kind:?} credentials need {flag}")))
        };
        let credentials = match kind {
            AuthArg::None => {
                if stdin || self.secret_file.is_some() {
                    return Err(usage("--auth none takes no secret".into()));
                }
                json!({"kind": "none"})
            }
            AuthArg::Basic => {
                let username = required(&self.username, "--username")?;
                json!({"kind": "basic", "username": username, "password": secret("password")?})
            }
            AuthArg::Token => json!({"kind": "token", "token": secret("token")?}),
            AuthArg::AwsEcr => {
                let mut c = json!({
                    "kind": "aws_ecr",
                    "access_key_id": required(&self.aws_access_key_id, "--aws-access-key-id")?,
                    "secret_access_key": secret("AWS secret access key")?,
                    "region": required(&self.region, "--region")?,
                });
                if let Some(t) = read_secret(
                    self.session_token_file.as_deref(),
                    false,
                    "AWS session token",
                )? {
                    c["session_token"] = json!(t);
                }
                c
            }
            AuthArg::AzureServicePrincipal => json!({
                "kind": "azure_service_principal",
                "tenant_id": required(&self.tenant_id, "--tenant-id")?,
                "client_id": required(&self.client_id, "--client-id")?,
                "client_secret": secret("client secret")?,
            }),
            AuthArg::GcpServiceAccountKey => {
                let key = secret("service-account key JSON")?;
                let parsed: Value = serde_json::from_str(&key).map_err(|e| {
                    usage(format!(
                        "the service-account key is not JSON ({e}); give the key file downloaded from the Google Cloud console"
                    ))
                })?;
                if parsed["type"] != "service_account" {
                    return Err(usage(
                        "the key JSON is not a service-account key (its \"type\" is not \"service_account\")".into(),
                    ));
                }
                json!({"kind": "basic", "username": "_json_key", "password": key})
            }
            AuthArg::GithubApp => {
                let key = match &self.github_app_key_file {
                    Some(file) => read_secret(Some(file), false, "GitHub App private key")?
                        .ok_or_else(|| usage("the GitHub App private key file is empty".into()))?,
                    None => secret("GitHub App private key (--github-app-key-file)")?,
                };
                if !key.contains("PRIVATE KEY-----") {
                    return Err(usage(
                        "the GitHub App private key is not a PEM private key; give the .pem file downloaded from the app's settings".into(),
                    ));
                }
                json!({
                    "kind": "github_app",
                    "app_id": required(&self.github_app_id, "--github-app-id")?,
                    "installation_id": required(&self.github_installation_id, "--github-installation-id")?,
                    "private_key": key,
                })
            }
        };
        if self.session_token_file.is_some() && kind != AuthArg::AwsEcr {
            return Err(usage("--session-token-file is for ECR credentials".into()));
        }
        if self.region.is_some() && kind != AuthArg::AwsEcr {
            return Err(usage("--region is for ECR credentials".into()));
        }
        Ok(Some(credentials))
    }
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Register a registry (validated first unless --no-validate).
    Add {
        /// A display name; the type's name and the address when left out.
        #[arg(long)]
        label: Option<String>,
        /// host[:port][/namespace]; optional for the types with one address (dockerhub,
        /// ghcr: see `imagelib registry types`).
        #[arg(long)]
        url: Option<String>,
        /// generic, harbor, dockerhub, ghcr, ecr, acr or gcr
        #[arg(long = "type", default_value = "generic")]
        registry_type: String,
        /// Appended to the URL (or the type's default address): the Docker Hub user or
        /// organisation, the GitHub owner, the Harbor project.
        #[arg(long)]
        namespace: Option<String>,
        /// The registry's own forward proxy, http[s]://host[:port] (no credentials).
        #[arg(long)]
        proxy_url: Option<String>,
        /// A host, .suffix, address or CIDR reached directly despite --proxy-url
        /// (repeatable).
        #[arg(long = "no-proxy")]
        no_proxy: Vec<String>,
        /// gcr only: the Artifact Registry repository listed through the Artifact Registry
        /// API, projects/PROJECT/locations/LOCATION/repositories/REPOSITORY (for a URL that
        /// is a mirror, private endpoint or proxy host).
        #[arg(long)]
        artifact_registry: Option<String>,
        /// Plain HTTP.
        #[arg(long)]
        insecure: bool,
        /// A PEM file of CA certificates to trust for this registry.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A team that sees the registry (repeatable; none = everyone).
        #[arg(long = "team")]
        visibility: Vec<String>,
        #[command(flatten)]
        credentials: Box<CredentialArgs>,
        /// A repository to scan when the registry has no usable catalog (repeatable).
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// A host besides the registry's own whose token realm may receive the credentials
        /// (repeatable).
        #[arg(long = "auth-host")]
        auth_hosts: Vec<String>,
        /// Seconds between scheduled scans.
        #[arg(long)]
        interval: Option<u64>,
        /// Count the registry's pull notifications (`image.pulls_counted`).
        #[arg(long)]
        report_pulls: bool,
        /// Save without checking the connection.
        #[arg(long)]
        no_validate: bool,
    },
    /// Change a registry (`PATCH`, guarded by the ETag of a `GET` made just before). A move
    /// (--url, --insecure, --type) or a new --auth-host needs the credentials again.
    Update {
        id: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        url: Option<String>,
        /// Plain HTTP (`--insecure` or `--insecure=false`).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        insecure: Option<bool>,
        #[arg(long = "type")]
        registry_type: Option<String>,
        /// A PEM file of CA certificates (replaces the custom CA).
        #[arg(long, conflicts_with = "no_ca")]
        ca_file: Option<PathBuf>,
        /// Remove the custom CA.
        #[arg(long)]
        no_ca: bool,
        /// Teams that see the registry (replaces the list; repeatable).
        #[arg(long = "team")]
        visibility: Vec<String>,
        /// Replaces the repositories scanned without a catalog (repeatable).
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// Replaces the hosts whose token realm may receive the credentials (repeatable).
        #[arg(long = "auth-host")]
        auth_hosts: Vec<String>,
        #[arg(long)]
        interval: Option<u64>,
        /// Count pull notifications (`--report-pulls` or `--report-pulls=false`).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        report_pulls: Option<bool>,
        /// The registry's own forward proxy, http[s]://host[:port].
        #[arg(long, conflicts_with = "no_proxy_url")]
        proxy_url: Option<String>,
        /// Remove the registry's proxy.
        #[arg(long)]
        no_proxy_url: bool,
        /// Replaces the hosts reached directly despite the proxy (repeatable).
        #[arg(long = "no-proxy")]
        no_proxy: Vec<String>,
        /// gcr only: the Artifact Registry repository,
        /// projects/PROJECT/locations/LOCATION/repositories/REPOSITORY.
        #[arg(long, conflicts_with = "no_artifact_registry")]
        artifact_registry: Option<String>,
        /// Forget the Artifact Registry repository (the URL's location is used again).
        #[arg(long)]
        no_artifact_registry: bool,
        /// The ETag to send as If-Match instead of the one a fresh GET returns.
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        credentials: Box<CredentialArgs>,
    },
    /// Replace a registry's credentials (`PUT …/credentials`, validated first unless
    /// --no-validate).
    RotateCredentials {
        id: String,
        #[command(flatten)]
        credentials: Box<CredentialArgs>,
        #[arg(long)]
        no_validate: bool,
    },
    /// The registry types, what each asks for and its default address
    /// (`GET /v1/registry-types`).
    Types,
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
        wait_timeout: u64,
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
        /// The whole rule as a JSON file instead of flags (its `trust` included: a file
        /// without one removes the rule's policy). From flags, the policy is kept.
        #[arg(long, conflicts_with = "repositories")]
        file: Option<PathBuf>,
    },
    /// List a registry's rules.
    Ls { registry: String },
    /// Show one rule, its trust policy included.
    Show { registry: String, rule_id: String },
    /// Show or set a rule's trust policy: which signers it trusts, the highest tolerated
    /// vulnerability severity and its exceptions, whether an SBOM is required.
    Trust {
        registry: String,
        rule_id: String,
        #[command(flatten)]
        args: crate::trust_cmd::TrustArgs,
    },
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
        "report_pulls",
        "proxy_url",
        "no_proxy",
        "artifact_registry",
        "webhook_url",
        "validated_at",
        "created_at",
        "updated_at",
    ] {
        out.push_str(&format!("{key:<20} {}\n", s(&r[key])));
    }
    out
}

/// One row a type: its key, name, default address (or the address's shape), the
/// credential kinds it accepts and the form's fields.
fn type_rows(v: &Value) -> String {
    let items = v.as_array().cloned().unwrap_or_default();
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            let address = match &t["defaults"]["url"] {
                Value::Null => s(&t["url_placeholder"]),
                default => format!("{} (default)", s(default)),
            };
            let fields = t["fields"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .map(|f| s(&f["label"]))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                s(&t["key"]),
                s(&t["label"]),
                address,
                list(&t["credential_kinds"]),
                fields,
            ]
        })
        .collect();
    table(&["TYPE", "NAME", "URL", "CREDENTIALS", "FIELDS"], &rows)
}

fn read_ca(f: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))
}

pub async fn run(client: &Client, cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Add {
            label,
            url,
            registry_type,
            namespace,
            proxy_url,
            no_proxy,
            artifact_registry,
            insecure,
            ca_file,
            visibility,
            credentials,
            repositories,
            auth_hosts,
            interval,
            report_pulls,
            no_validate,
        } => {
            let credentials = credentials
                .to_json()?
                .unwrap_or_else(|| json!({"kind": "none"}));
            let ca_pem = ca_file.as_deref().map(read_ca).transpose()?;
            let mut body = json!({
                "registry_type": registry_type, "insecure": insecure,
                "ca_pem": ca_pem, "visibility": visibility, "credentials": credentials,
                "repositories": repositories, "auth_hosts": auth_hosts,
                "scan_interval_secs": interval, "report_pulls": report_pulls,
                "validate": !no_validate,
            });
            for (key, value) in [
                ("label", label),
                ("url", url),
                ("namespace", namespace),
                ("proxy_url", proxy_url),
                ("artifact_registry", artifact_registry),
            ] {
                if let Some(v) = value {
                    body[key] = json!(v);
                }
            }
            if !no_proxy.is_empty() {
                body["no_proxy"] = json!(no_proxy);
            }
            let r = client
                .send(Method::POST, "/v1/registries", Some(Body::Json(body)))
                .await?;
            print(client.output(), &r, registry_detail)
        }
        RegistryCommand::Update {
            id,
            label,
            url,
            insecure,
            registry_type,
            ca_file,
            no_ca,
            visibility,
            repositories,
            auth_hosts,
            interval,
            report_pulls,
            proxy_url,
            no_proxy_url,
            no_proxy,
            artifact_registry,
            no_artifact_registry,
            if_match,
            credentials,
        } => {
            let mut body = serde_json::Map::new();
            let mut set = |k: &str, v: Value| {
                body.insert(k.to_owned(), v);
            };
            if let Some(v) = label {
                set("label", json!(v));
            }
            if let Some(v) = url {
                set("url", json!(v));
            }
            if let Some(v) = insecure {
                set("insecure", json!(v));
            }
            if let Some(v) = registry_type {
                set("registry_type", json!(v));
            }
            if let Some(f) = ca_file {
                set("ca_pem", json!(read_ca(&f)?));
            }
            if no_ca {
                set("ca_pem", Value::Null);
            }
            if !visibility.is_empty() {
                set("visibility", json!(visibility));
            }
            if !repositories.is_empty() {
                set("repositories", json!(repositories));
            }
            if !auth_hosts.is_empty() {
                set("auth_hosts", json!(auth_hosts));
            }
            if let Some(v) = interval {
                set("scan_interval_secs", json!(v));
            }
            if let Some(v) = report_pulls {
                set("report_pulls", json!(v));
            }
            if let Some(v) = proxy_url {
                set("proxy_url", json!(v));
            }
            if no_proxy_url {
                set("proxy_url", Value::Null);
            }
            if !no_proxy.is_empty() {
                set("no_proxy", json!(no_proxy));
            }
            if let Some(v) = artifact_registry {
                set("artifact_registry", json!(v));
            }
            if no_artifact_registry {
                set("artifact_registry", Value::Null);
            }
            if let Some(c) = credentials.to_json()? {
                set("credentials", c);
            }
            if body.is_empty() {
                return Err(CliError::usage(
                    "nothing to change: give at least one of --label, --url, --insecure, --type, --ca-file, --no-ca, --team, --repository, --auth-host, --interval, --report-pulls, --proxy-url, --no-proxy-url, --no-proxy, --artifact-registry, --no-artifact-registry or credentials",
                )
                .into());
            }
            let path = format!("/v1/registries/{id}");
            let etag = match if_match {
                Some(e) => Some(e),
                None => client.send_with(Method::GET, &path, None, &[]).await?.etag,
            };
            let headers: Vec<_> = etag
                .into_iter()
                .map(|e| (reqwest::header::IF_MATCH, e))
                .collect();
            let r = client
                .send_with(
                    Method::PATCH,
                    &path,
                    Some(Body::Json(Value::Object(body))),
                    &headers,
                )
                .await?;
            print(client.output(), &r.value, registry_detail)
        }
        RegistryCommand::RotateCredentials {
            id,
            credentials,
            no_validate,
        } => {
            let credentials = credentials.to_json()?.ok_or_else(|| {
                CliError::usage(
                    "no credentials given: e.g. --username U --password-stdin, --token-stdin, --aws-access-key-id/--region, --tenant-id/--client-id, --github-app-id/--github-installation-id/--github-app-key-file or --auth gcp-service-account-key",
                )
            })?;
            let r = client
                .send(
                    Method::PUT,
                    &format!("/v1/registries/{id}/credentials"),
                    Some(Body::Json(
                        json!({"credentials": credentials, "validate": !no_validate}),
                    )),
                )
                .await?;
            print(client.output(), &r, registry_detail)
        }
        RegistryCommand::Types => {
            let r = client.send(Method::GET, "/v1/registry-types", None).await?;
            print(client.output(), &r, type_rows)
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
            print(client.output(), &Value::Array(items.clone()), |_| {
                registry_rows(&items)
            })
        }
        RegistryCommand::Show { id } => {
            let r = client
                .send(Method::GET, &format!("/v1/registries/{id}"), None)
                .await?;
            print(client.output(), &r, registry_detail)
        }
        RegistryCommand::Rm { id } => {
            client
                .send(Method::DELETE, &format!("/v1/registries/{id}"), None)
                .await?;
            print(client.output(), &json!({"removed": id}), |_| {
                format!("removed {id}")
            })
        }
        RegistryCommand::Validate { id } => {
            let r = client
                .send(Method::POST, &format!("/v1/registries/{id}/validate"), None)
                .await?;
            print(client.output(), &r, |r| {
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
            wait_timeout: timeout,
        } => {
            let r = client
                .send(
                    Method::POST,
                    &format!("/v1/registries/{id}/sync"),
                    Some(Body::Json(json!({"repository": repository}))),
                )
                .await?;
            if !wait {
                return print(client.output(), &r, |r| {
                    format!("sync requested (event sequence {})", s(&r["sequence"]))
                });
            }
            let request_sequence = r["sequence"].as_u64().ok_or_else(|| {
                anyhow::anyhow!("the server did not say which sync request it recorded: {r}")
            })?;
            let last = wait_for_sync(client, &id, request_sequence, timeout).await?;
            let failed = last["state"] == "failed";
            print(client.output(), &last, |l| {
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
                crate::trust_cmd::policy_summary(&r["trust"]),
                s(&r["description"]),
            ]
        })
        .collect();
    table(
        &[
            "RULE",
            "KIND",
            "REPOSITORIES",
            "ENABLED",
            "TRUST",
            "DESCRIPTION",
        ],
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
            let (body, headers) = match file {
                Some(f) => (
                    serde_json::from_str(&std::fs::read_to_string(&f)?)
                        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", f.display()))?,
                    vec![],
                ),
                None => {
                    let mut tags = json!({"include": include, "exclude": exclude});
                    if let Some(n) = newest {
                        tags["newest"] = json!(n);
                    }
                    let mut body = json!({"repositories": repositories, "tags": tags, "kind": kind,
                           "description": description, "hm_tags": hm_tags, "enabled": !disabled});
                    let headers =
                        crate::trust_cmd::keep_policy(client, &registry, &rule_id, &mut body)
                            .await?;
                    (body, headers)
                }
            };
            let r = client
                .send_with(
                    Method::PUT,
                    &format!("/v1/registries/{registry}/rules/{rule_id}"),
                    Some(Body::Json(body)),
                    &headers,
                )
                .await?
                .value;
            print(client.output(), &r, |r| rule_rows(std::slice::from_ref(r)))
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
            print(client.output(), &r, |_| rule_rows(&items))
        }
        RulesCommand::Show { registry, rule_id } => {
            crate::trust_cmd::run_show(client, &registry, &rule_id).await
        }
        RulesCommand::Trust {
            registry,
            rule_id,
            args,
        } => crate::trust_cmd::run_trust(client, &registry, &rule_id, args).await,
        RulesCommand::Rm { registry, rule_id } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/v1/registries/{registry}/rules/{rule_id}"),
                    None,
                )
                .await?;
            print(client.output(), &json!({"removed": rule_id}), |_| {
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
            print(client.output(), &r, |_| rule_rows(&items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_github_app_comes_from_its_ids_and_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.pem");
        let pem = "-----BEGIN RSA PRIVATE KEY-----\ncanary\n-----END RSA PRIVATE KEY-----\n";
        std::fs::write(&file, pem).unwrap();
        let args = CredentialArgs {
            github_app_id: Some("123456".into()),
            github_installation_id: Some("7890".into()),
            github_app_key_file: Some(file.clone()),
            ..Default::default()
        };
        let c = args.to_json().unwrap().unwrap();
        assert_eq!(c["kind"], "github_app");
        assert_eq!(c["app_id"], "123456");
        assert_eq!(c["installation_id"], "7890");
        assert_eq!(c["private_key"], pem.trim_end());

        let missing = CredentialArgs {
            github_app_id: Some("123456".into()),
            github_app_key_file: Some(file.clone()),
            ..Default::default()
        };
        let err = missing.to_json().unwrap_err().to_string();
        assert!(err.contains("--github-installation-id"), "{err}");

        std::fs::write(&file, "not a key canary").unwrap();
        let err = args.to_json().unwrap_err().to_string();
        assert!(
            err.contains("not a PEM private key") && !err.contains("canary"),
            "{err}"
        );

        let mixed = CredentialArgs {
            username: Some("octocat".into()),
            github_app_id: Some("1".into()),
            ..Default::default()
        };
        assert!(mixed.to_json().is_err());
    }
}
