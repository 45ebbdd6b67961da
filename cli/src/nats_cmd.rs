//! `imagelib nats config`: the NATS server's accounts and users for imagelib.
//!
//! The event log is the source of truth and drives deployments, and the key bucket holds
//! every registry's data key, so NATS must not be open to whoever reaches its port. Each
//! service gets a user that may publish only the subjects it owns (its aggregates, its
//! dead letters), use only its own durable consumers and buckets, and never delete or
//! purge a stream: a compromised scanner cannot forge a `registry.updated` or a
//! `catalog.approved`. The `reader` role replays the stream (`imagelib events tail`); the
//! `external-publisher` role may only request syncs (`<prefix>.sync.<id>.requested`).
//!
//! The output is a nats-server `accounts` block (one account, JetStream enabled) that the
//! server's main configuration includes; `--creds-dir` writes one credentials file per
//! user for `IMAGELIB_NATS_CREDS`. The tests start nats-server with exactly this output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Print the nats-server accounts, users and permissions for imagelib (and write each
    /// user's credentials file with --creds-dir).
    Config(ConfigArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The subject prefix (IMAGELIB_SUBJECT_PREFIX).
    #[arg(long, default_value = "imagelib")]
    pub prefix: String,
    /// The stream name (IMAGELIB_STREAM).
    #[arg(long, default_value = "IMAGELIB")]
    pub stream: String,
    /// The key bucket (IMAGELIB_KEYS_BUCKET; default `<stream>_KEYS`).
    #[arg(long)]
    pub keys_bucket: Option<String>,
    /// The NATS account the users live in.
    #[arg(long, default_value = "IMAGELIB")]
    pub account: String,
    /// How users authenticate: generated passwords or generated NKeys.
    #[arg(long, value_enum, default_value_t = AuthKind::Password)]
    pub auth: AuthKind,
    /// A sync-scanner instance name (IMAGELIB_SCANNER__INSTANCE) whose consumers must be
    /// allowed too; repeatable. The unnamed instance is always included.
    #[arg(long = "scanner-instance")]
    pub scanner_instances: Vec<String>,
    /// Write `<user>.creds` (mode 0600) for each user into this directory.
    #[arg(long)]
    pub creds_dir: Option<PathBuf>,
    /// Write the configuration to this file (mode 0600) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A cluster route (`host:port`, repeatable): generates a `cluster` block whose routes
    /// authenticate with a generated password, so nothing joins the cluster unasked.
    #[arg(long = "cluster-route", value_delimiter = ',')]
    pub cluster_routes: Vec<String>,
    /// The cluster's name.
    #[arg(long, default_value = "imagelib")]
    pub cluster_name: String,
    /// Write the `cluster` block to this file (mode 0600; with --cluster-route).
    #[arg(long)]
    pub cluster_out: Option<PathBuf>,
}

impl Default for ConfigArgs {
    fn default() -> Self {
        ConfigArgs {
            prefix: "imagelib".into(),
            stream: "IMAGELIB".into(),
            keys_bucket: None,
            account: "IMAGELIB".into(),
            auth: AuthKind::Password,
            scanner_instances: vec![],
            creds_dir: None,
            out: None,
            cluster_routes: vec![],
            cluster_name: "imagelib".into(),
            cluster_out: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// `user:password` credentials files.
    Password,
    /// NKey seeds as credentials files; the server holds only public keys.
    Nkey,
}

/// Every user the configuration defines.
pub const USERS: &[&str] = &[
    "registry-registry",
    "sync-scanner",
    "catalog-projector",
    "serving-deployer",
    "imagelib",
    "reader",
    "external-publisher",
];

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
}

impl Permissions {
    fn allow(&mut self, subjects: impl IntoIterator<Item = String>) {
        for s in subjects {
            if !self.publish_allow.contains(&s) {
                self.publish_allow.push(s);
            }
        }
    }

    fn deny(&mut self, subjects: impl IntoIterator<Item = String>) {
        for s in subjects {
            if !self.publish_deny.contains(&s) {
                self.publish_deny.push(s);
            }
        }
    }

    fn merge(&mut self, other: &Permissions) {
        self.allow(other.publish_allow.iter().cloned());
        self.deny(other.publish_deny.iter().cloned());
        for s in &other.subscribe_allow {
            if !self.subscribe_allow.contains(s) {
                self.subscribe_allow.push(s.clone());
            }
        }
    }
}

/// A generated user with its secret.
#[derive(Clone)]
pub struct GeneratedUser {
    pub name: String,
    pub permissions: Permissions,
    /// `user:password` or an NKey seed: the credentials file's content.
    pub creds: String,
    /// What the server holds: `user`/`password`, or `nkey` (public key).
    server_auth: String,
}

impl std::fmt::Debug for GeneratedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedUser")
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

/// The generated configuration: the server's block and each user's credentials.
#[derive(Debug, Clone)]
pub struct Generated {
    pub config: String,
    pub users: Vec<GeneratedUser>,
    /// The `cluster` block, when routes were given.
    pub cluster: Option<String>,
}

impl Generated {
    /// The credentials file content of `user`.
    pub fn creds(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.creds.as_str())
    }
}

/// What the permissions are built from.
struct Layout<'a> {
    p: &'a str,
    s: &'a str,
    keys: String,
    jobs: String,
    leases: String,
    /// What each registry's last scan published, beside its lease (sync-scanner).
    marks: String,
    /// The integrity sweep's positions (sync-scanner).
    integrity: String,
    scanner_instances: Vec<String>,
}

impl Layout<'_> {
    /// Read the event stream: info, message gets and ephemeral (ordered) consumers. An
    /// ephemeral consumer's name is the server's choice, hence `*` for info and next.
    fn read_stream(&self, stream: &str) -> Vec<String> {
        vec![
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            format!("$JS.FC.{stream}.>"),
        ]
    }

    /// Create the stream when missing (the first service to start does).
    fn create_stream(&self, stream: &str) -> Vec<String> {
        vec![format!("$JS.API.STREAM.CREATE.{stream}")]
    }

    /// A durable consumer of the service's own: create/update, delete (projections
    /// recreate theirs to resume), ack, and its dead-letter subject.
    fn durable(&self, stream: &str, consumer: &str) -> Vec<String> {
        vec![
            format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
            format!("$JS.ACK.{stream}.{consumer}.>"),
            format!("{}.dlq.{consumer}", self.p),
        ]
    }

    /// Read and write a KV bucket (no stream update: a shorter `max_age` would expire it).
    fn kv_write(&self, bucket: &str) -> Vec<String> {
        let mut v = self.kv_read(bucket);
        v.push(format!("$KV.{bucket}.>"));
        v
    }

    fn kv_read(&self, bucket: &str) -> Vec<String> {
        let stream = format!("KV_{bucket}");
        let mut v = self.read_stream(&stream);
        v.extend(self.create_stream(&stream));
        v.push(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        v
    }

    /// The service's own event subjects.
    fn own(&self, aggregates: &[&str]) -> Vec<String> {
        aggregates
            .iter()
            .map(|a| format!("{}.{a}.>", self.p))
            .collect()
    }

    fn event_stream(&self) -> Vec<String> {
        let mut v = self.read_stream(self.s);
        v.extend(self.create_stream(self.s));
        v.push("$JS.API.INFO".into());
        v
    }

    /// Only the stream's owner reconfigures it (adds the deny flags to an older stream,
    /// applies the byte limit): an update could also shorten its limits, and so expire
    /// history, so one service holds that right, not four.
    fn own_event_stream(&self) -> Vec<String> {
        let mut v = self.event_stream();
        v.push(format!("$JS.API.STREAM.UPDATE.{}", self.s));
        v
    }

    /// Never a stream delete, and no purge or message delete of the event log or the
    /// scanner's streams. Only the key owner's users may erase from the key bucket
    /// (crypto-shredding), so they get the narrow denies; everyone else the wide ones.
    fn denies(&self, key_owner: bool) -> Vec<String> {
        let mut v = vec!["$JS.API.STREAM.DELETE.>".to_owned()];
        if key_owner {
            for stream in [
                self.s.to_owned(),
                self.jobs.clone(),
                format!("KV_{}", self.leases),
                format!("KV_{}", self.marks),
                format!("KV_{}", self.integrity),
            ] {
                v.push(format!("$JS.API.STREAM.PURGE.{stream}"));
                v.push(format!("$JS.API.STREAM.MSG.DELETE.{stream}"));
            }
        } else {
            v.push("$JS.API.STREAM.PURGE.>".into());
            v.push("$JS.API.STREAM.MSG.DELETE.>".into());
        }
        v
    }

    fn service(&self, name: &str) -> Permissions {
        let mut p = Permissions {
            subscribe_allow: vec!["_INBOX.>".into()],
            ..Default::default()
        };
        let durables = |aggs: &[imagelib_events::Aggregate], service: &str| {
            aggs.iter()
                .map(|a| format!("{service}-{}", a.as_str()))
                .collect::<Vec<_>>()
        };
        match name {
            "registry-registry" => {
                p.allow(self.event_stream());
                p.allow(self.own(&["registry", "rule", "subscription"]));
                p.allow([format!("{}.sync.*.requested", self.p)]);
                for c in durables(&registry_registry::bus::AGGREGATES, registry_registry::NAME) {
                    p.allow(self.durable(self.s, &c));
                }
                // Subscription delivery reads the whole stream into its outbox.
                p.allow(self.durable(self.s, registry_registry::subscriptions::DELIVERY_CONSUMER));
                p.allow(self.kv_write(&self.keys));
                // Crypto-shredding: erase a data key's messages from its bucket.
                let kv = format!("KV_{}", self.keys);
                p.allow([
                    format!("$JS.API.STREAM.MSG.DELETE.{kv}"),
                    format!("$JS.API.STREAM.PURGE.{kv}"),
                ]);
                p.deny(self.denies(true));
            }
            "sync-scanner" => {
                p.allow(self.event_stream());
                p.allow(self.own(&["sync", "image"]));
                let mut instances = vec![String::new()];
                instances.extend(self.scanner_instances.iter().cloned());
                for instance in &instances {
                    for a in sync_scanner::bus::PROJECTED {
                        p.allow(
                            self.durable(self.s, &sync_scanner::bus::consumer_name(instance, a)),
                        );
                    }
                }
                // The scan-job work queue and the per-registry leases.
                p.allow(self.read_stream(&self.jobs));
                p.allow(self.create_stream(&self.jobs));
                p.allow([format!("{}_jobs.>", self.p)]);
                p.allow(self.durable(&self.jobs, sync_scanner::jobs::JOBS_CONSUMER));
                p.allow(self.kv_write(&self.leases));
                p.allow(self.kv_write(&self.marks));
                // The integrity sweep's positions, beside the leases.
                p.allow(self.kv_write(&self.integrity));
                // Opens sealed credentials: reads data keys, never writes or erases them.
                p.allow(self.kv_read(&self.keys));
                p.deny(self.denies(false));
            }
            "catalog-projector" => {
                p.allow(self.own_event_stream());
                p.allow(self.own(&["catalog"]));
                p.allow(self.durable(self.s, catalog_projector::projection::CONSUMER));
                p.deny(self.denies(false));
            }
            "serving-deployer" => {
                p.allow(self.event_stream());
                p.allow(self.own(&["deployment"]));
                for c in durables(&serving_deployer::bus::AGGREGATES, serving_deployer::NAME) {
                    p.allow(self.durable(self.s, &c));
                }
                p.deny(self.denies(false));
            }
            "imagelib" => {
                for s in [
                    "registry-registry",
                    "sync-scanner",
                    "catalog-projector",
                    "serving-deployer",
                ] {
                    let sp = self.service(s);
                    p.allow(sp.publish_allow.iter().cloned());
                }
                p.allow(self.own_event_stream());
                p.deny(self.denies(true));
            }
            "reader" => {
                p.allow(self.read_stream(self.s));
                p.deny(self.denies(false));
            }
            "external-publisher" => {
                p.allow([format!("{}.sync.*.requested", self.p)]);
                p.allow([format!("$JS.API.STREAM.INFO.{}", self.s)]);
                p.deny(self.denies(false));
            }
            _ => {}
        }
        p
    }
}

/// Build the users and the server configuration.
pub fn generate(args: &ConfigArgs) -> anyhow::Result<Generated> {
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    anyhow::ensure!(
        token_ok(&args.stream),
        "--stream must be letters, digits, `_` and `-`"
    );
    anyhow::ensure!(
        args.prefix.split('.').all(token_ok),
        "--prefix must be dot-separated tokens of letters, digits, `_` and `-`"
    );
    anyhow::ensure!(
        token_ok(&args.account),
        "--account must be letters, digits, `_` and `-`"
    );
    for i in &args.scanner_instances {
        anyhow::ensure!(
            token_ok(i),
            "--scanner-instance `{i}` must be letters, digits, `_` and `-`"
        );
    }
    let keys = args
        .keys_bucket
        .clone()
        .unwrap_or_else(|| imagelib_secrets::bucket_for_stream(&args.stream));
    anyhow::ensure!(
        token_ok(&keys),
        "--keys-bucket must be letters, digits, `_` and `-`"
    );
    let layout = Layout {
        p: &args.prefix,
        s: &args.stream,
        keys,
        jobs: format!("{}_JOBS", args.stream),
        leases: format!("{}_LEASES", args.stream),
        marks: format!("{}_SCANNED", args.stream),
        integrity: format!("{}_INTEGRITY", args.stream),
        scanner_instances: args.scanner_instances.clone(),
    };
    let mut users = Vec::new();
    for name in USERS {
        let mut permissions = Permissions::default();
        permissions.merge(&layout.service(name));
        let (creds, server_auth) = match args.auth {
            AuthKind::Password => {
                let password = random_password();
                (
                    format!("{name}:{password}\n"),
                    format!("user: {}, password: {}", quote(name), quote(&password)),
                )
            }
            AuthKind::Nkey => {
                let kp = nkeys::KeyPair::new_user();
                let seed = kp
                    .seed()
                    .map_err(|e| anyhow::anyhow!("generating an NKey: {e}"))?;
                (
                    format!("{seed}\n"),
                    format!("nkey: {}", quote(&kp.public_key())),
                )
            }
        };
        users.push(GeneratedUser {
            name: (*name).to_owned(),
            permissions,
            creds,
            server_auth,
        });
    }
    let config = render(args, &users);
    let cluster = if args.cluster_routes.is_empty() {
        None
    } else {
        anyhow::ensure!(
            token_ok(&args.cluster_name),
            "--cluster-name must be letters, digits, `_` and `-`"
        );
        let password = random_password();
        let mut routes = Vec::new();
        for r in &args.cluster_routes {
            let hostport = r.trim().trim_start_matches("nats://");
            anyhow::ensure!(
                !hostport.is_empty()
                    && hostport
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)),
                "--cluster-route `{r}` must be host:port"
            );
            routes.push(quote(&format!("nats://route:{password}@{hostport}")));
        }
        Some(format!(
            "# imagelib NATS cluster routes: generated by `imagelib nats config`. Routes\n\
             # authenticate with this password; keep the file mode 0600.\n\
             cluster {{\n  name: {}\n  listen: \"0.0.0.0:6222\"\n  \
             authorization {{ user: \"route\", password: {} }}\n  routes: [{}]\n}}\n",
            quote(&args.cluster_name),
            quote(&password),
            routes.join(", ")
        ))
    };
    Ok(Generated {
        config,
        users,
        cluster,
    })
}

fn render(args: &ConfigArgs, users: &[GeneratedUser]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# imagelib NATS accounts: generated by `imagelib nats config --prefix {} --stream {}`.\n\
         # Include it from the server configuration (`include ./auth.conf`). It holds\n\
         # credentials: keep it mode 0600. Users without a matching password are refused;\n\
         # there is no anonymous access.",
        args.prefix, args.stream
    );
    let _ = writeln!(
        out,
        "accounts {{\n  {} {{\n    jetstream: enabled\n    users: [",
        args.account
    );
    for u in users {
        let list = |v: &[String]| v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
        let p = &u.permissions;
        let _ = writeln!(out, "      # {}", describe(&u.name));
        let _ = writeln!(out, "      {{");
        let _ = writeln!(out, "        {}", u.server_auth);
        let _ = writeln!(out, "        permissions: {{");
        let _ = writeln!(
            out,
            "          publish: {{\n            allow: [{}]\n            deny: [{}]\n          }}",
            list(&p.publish_allow),
            list(&p.publish_deny)
        );
        let _ = writeln!(
            out,
            "          subscribe: {{ allow: [{}] }}",
            list(&p.subscribe_allow)
        );
        let _ = writeln!(out, "        }}\n      }}");
    }
    let _ = writeln!(out, "    ]\n  }}\n}}");
    out
}

fn describe(user: &str) -> &'static str {
    match user {
        "registry-registry" => {
            "registry-registry: registries, rules, subscriptions, the syncs it requests, the key bucket"
        }
        "sync-scanner" => {
            "sync-scanner: syncs and images, its job queue, leases and integrity sweep positions; reads data keys"
        }
        "catalog-projector" => "catalog-projector: curation (catalog events)",
        "serving-deployer" => "serving-deployer: deployments",
        "imagelib" => "imagelib serve (all four services in one process) and `imagelib keys`",
        "reader" => "reader: replays the stream (`imagelib events tail`), publishes nothing",
        "external-publisher" => {
            "external-publisher: may only request syncs (<prefix>.sync.<id>.requested)"
        }
        _ => "",
    }
}

/// A double-quoted NATS config string (subjects and secrets are plain ASCII).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// 32 random alphanumeric characters (about 190 bits).
fn random_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Write `content` readable by the owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

pub fn run(cmd: NatsCommand) -> anyhow::Result<()> {
    match cmd {
        NatsCommand::Config(args) => {
            use std::io::Write;
            anyhow::ensure!(
                args.cluster_out.is_none() || !args.cluster_routes.is_empty(),
                "--cluster-out needs --cluster-route"
            );
            let generated = generate(&args)?;
            if let Some(dir) = &args.creds_dir {
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                for u in &generated.users {
                    write_private(&dir.join(format!("{}.creds", u.name)), &u.creds)?;
                }
            }
            match &args.out {
                Some(path) => write_private(path, &generated.config)?,
                None => std::io::stdout().write_all(generated.config.as_bytes())?,
            }
            match (&generated.cluster, &args.cluster_out) {
                (Some(cluster), Some(path)) => write_private(path, cluster)?,
                (Some(cluster), None) => std::io::stdout().write_all(cluster.as_bytes())?,
                (None, _) => {}
            }
            if let Some(dir) = &args.creds_dir {
                eprintln!(
                    "credentials for {} users in {} (IMAGELIB_NATS_CREDS=<dir>/<user>.creds)",
                    generated.users.len(),
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_publishes_only_its_own_subjects() {
        let g = generate(&ConfigArgs::default()).unwrap();
        let perms = |u: &str| {
            g.users
                .iter()
                .find(|x| x.name == u)
                .unwrap()
                .permissions
                .clone()
        };
        let scanner = perms("sync-scanner");
        assert!(
            scanner
                .publish_allow
                .contains(&"imagelib.image.>".to_owned())
        );
        assert!(
            !scanner
                .publish_allow
                .iter()
                .any(|s| s.starts_with("imagelib.registry") || s.starts_with("imagelib.catalog"))
        );
        assert!(
            scanner
                .publish_deny
                .contains(&"$JS.API.STREAM.PURGE.>".to_owned())
        );
        let external = perms("external-publisher");
        assert_eq!(
            external
                .publish_allow
                .iter()
                .filter(|s| s.starts_with("imagelib."))
                .collect::<Vec<_>>(),
            vec!["imagelib.sync.*.requested"]
        );
        let update = "$JS.API.STREAM.UPDATE.IMAGELIB".to_owned();
        for (user, may) in [
            ("registry-registry", false),
            ("sync-scanner", false),
            ("serving-deployer", false),
            ("catalog-projector", true),
            ("imagelib", true),
        ] {
            assert_eq!(perms(user).publish_allow.contains(&update), may, "{user}");
        }
        let rr = perms("registry-registry");
        assert!(
            rr.publish_allow
                .contains(&"$JS.API.STREAM.PURGE.KV_IMAGELIB_KEYS".to_owned())
        );
        assert!(
            rr.publish_deny
                .contains(&"$JS.API.STREAM.PURGE.IMAGELIB".to_owned())
        );
        for allowed in [
            "imagelib.subscription.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.IMAGELIB.registry-registry-delivery",
            "$JS.ACK.IMAGELIB.registry-registry-delivery.>",
        ] {
            assert!(rr.publish_allow.contains(&allowed.to_owned()), "{allowed}");
        }
        for u in &g.users {
            assert!(
                u.permissions
                    .publish_deny
                    .contains(&"$JS.API.STREAM.DELETE.>".to_owned())
            );
            assert!(g.config.contains(&format!("# {}", describe(&u.name))));
            let secret = u.creds.trim().rsplit(':').next().unwrap();
            assert!(
                g.config.contains(secret),
                "the server holds {}'s password",
                u.name
            );
        }
        assert!(!format!("{:?}", g.users[0]).contains(g.users[0].creds.trim()));
    }

    #[test]
    fn nkey_users_hold_public_keys_only() {
        let g = generate(&ConfigArgs {
            auth: AuthKind::Nkey,
            ..Default::default()
        })
        .unwrap();
        for u in &g.users {
            assert!(u.creds.starts_with("SU"));
            assert!(!g.config.contains(u.creds.trim()));
        }
        assert!(g.config.contains("nkey: \"U"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(
            generate(&ConfigArgs {
                prefix: "a.>".into(),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            generate(&ConfigArgs {
                stream: "A B".into(),
                ..Default::default()
            })
            .is_err()
        );
    }
}
