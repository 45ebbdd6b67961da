//! Configuration: defaults that work on a developer machine, then a TOML file, then
//! `IMAGELIB_*` environment variables (DESIGN section 10; the names are a contract).
//!
//! Each service has its own typed config struct that embeds [`CommonConfig`]; they are
//! all read through [`load`] so the precedence is the same everywhere.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Settings every service reads. `Debug` redacts what may be secret (the NATS URL's
/// password, the admin token).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CommonConfig {
    /// `IMAGELIB_NATS_URL`: one URL or a comma-separated list of cluster URLs; may carry
    /// `user:password@`.
    pub nats_url: String,
    /// `IMAGELIB_NATS_CREDS`: a file with this process's NATS credentials (a `.creds`
    /// file, an NKey seed, or `user:password`); anonymous without it.
    pub nats_creds: Option<PathBuf>,
    /// `IMAGELIB_NATS_CA`: PEM CA certificates; TLS to NATS is then required and verified.
    pub nats_ca: Option<PathBuf>,
    /// `IMAGELIB_DATABASE_URL`: created if missing.
    pub database_url: String,
    /// `IMAGELIB_STREAM`: the JetStream stream name.
    pub stream: String,
    /// `IMAGELIB_SUBJECT_PREFIX`: the first token of every subject.
    pub subject_prefix: String,
    /// `IMAGELIB_STREAM_REPLICAS`: 3 in a NATS cluster.
    pub stream_replicas: usize,
    /// `IMAGELIB_STREAM_MAX_BYTES`: the stream's byte limit; appends are refused beyond it.
    pub stream_max_bytes: i64,
    /// `IMAGELIB_HTTP_ADDR`: where the HTTP API listens (each service has its own default).
    pub http_addr: Option<SocketAddr>,
    /// `IMAGELIB_METRICS_ADDR`: a Prometheus `/metrics` endpoint on a listener of its own
    /// (off by default; OTLP needs no port).
    pub metrics_addr: Option<SocketAddr>,
    /// `IMAGELIB_MASTER_KEY_FILE`: the key that wraps every registry's data key.
    pub master_key_file: PathBuf,
    /// `IMAGELIB_ADMIN_TOKEN`: a bootstrap admin bearer token.
    pub admin_token: Option<String>,
    /// `IMAGELIB_TOKENS_FILE`: bearer tokens with roles and teams.
    pub tokens_file: Option<PathBuf>,
    /// `IMAGELIB_ANONYMOUS_READ`: requests without a token may read (GET) as a viewer of
    /// no team. Off by default: without it every `/v1` route needs a bearer token.
    pub anonymous_read: bool,
    /// `IMAGELIB_DENY_NETWORKS`: CIDRs registries may never resolve to.
    pub deny_networks: Option<String>,
    /// `IMAGELIB_ALLOW_NETWORKS`: CIDRs allowed even when inside a denied network.
    pub allow_networks: Option<String>,
    /// `IMAGELIB_GITOPS_DIR`: the gitops target's repository.
    pub gitops_dir: PathBuf,
    /// `IMAGELIB_LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `IMAGELIB_MAX_BODY_BYTES`: largest accepted request body.
    pub max_body_bytes: usize,
    /// `IMAGELIB_CONSOLE__*`: the web console's sessions.
    pub console: ConsoleConfig,
}

/// The web console's sessions (`IMAGELIB_CONSOLE__*`). `Debug` redacts the key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConsoleConfig {
    /// `IMAGELIB_CONSOLE__SESSION_KEY`: the secret that signs session cookies (at least 32
    /// characters). Unset: a random key per process, so sessions end at a restart and
    /// services run apart do not share them.
    pub session_key: Option<String>,
    /// `IMAGELIB_CONSOLE__SESSION_TTL_SECS`: how long a sign-in lasts (default 8 hours).
    pub session_ttl_secs: u64,
    /// `IMAGELIB_CONSOLE__SECURE_COOKIE`: mark the session cookie `Secure` always (it is
    /// anyway when the request came over TLS, as `X-Forwarded-Proto: https` says).
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_key: None,
            session_ttl_secs: 8 * 3600,
            secure_cookie: false,
        }
    }
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("session_key", &self.session_key.as_ref().map(|_| "***"))
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("secure_cookie", &self.secure_cookie)
            .finish()
    }
}

impl std::fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonConfig")
            .field(
                "nats_url",
                &imagelib_events::connect::redact_urls(&self.nats_url),
            )
            .field("nats_creds", &self.nats_creds)
            .field("nats_ca", &self.nats_ca)
            .field("database_url", &redact_password(&self.database_url))
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("stream_replicas", &self.stream_replicas)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .field("http_addr", &self.http_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("master_key_file", &self.master_key_file)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("tokens_file", &self.tokens_file)
            .field("anonymous_read", &self.anonymous_read)
            .field("deny_networks", &self.deny_networks)
            .field("allow_networks", &self.allow_networks)
            .field("gitops_dir", &self.gitops_dir)
            .field("log_format", &self.log_format)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("console", &self.console)
            .finish_non_exhaustive()
    }
}

/// A URL with its password replaced by `***` (unparseable: withheld entirely).
fn redact_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<not a URL>".into(),
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

impl Default for CommonConfig {
    fn default() -> Self {
        let state = default_state_dir();
        CommonConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_ca: None,
            database_url: "postgres://postgres@127.0.0.1:5432/imagelib".into(),
            stream: "IMAGELIB".into(),
            subject_prefix: "imagelib".into(),
            stream_replicas: 1,
            stream_max_bytes: DEFAULT_STREAM_MAX_BYTES,
            http_addr: None,
            metrics_addr: None,
            master_key_file: state.join("master.key"),
            admin_token: None,
            tokens_file: None,
            anonymous_read: false,
            deny_networks: None,
            allow_networks: None,
            gitops_dir: state.join("gitops"),
            log_format: LogFormat::Json,
            max_body_bytes: 1024 * 1024,
            console: ConsoleConfig::default(),
        }
    }
}

/// `$XDG_STATE_HOME/imagelib`, `~/.local/state/imagelib`, or `./.imagelib`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("imagelib");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/state/imagelib");
    }
    PathBuf::from(".imagelib")
}

/// 1 GiB: several hundred thousand events. NATS reserves it on disk when the stream is
/// created; the `imagelib_stream_bytes` alert fires at 80 %.
pub const DEFAULT_STREAM_MAX_BYTES: i64 = 1024 * 1024 * 1024;

impl CommonConfig {
    pub fn stream_settings(&self) -> imagelib_events::bus::StreamSettings {
        imagelib_events::bus::StreamSettings {
            name: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.stream_replicas,
            max_bytes: self.stream_max_bytes,
            ..Default::default()
        }
    }

    /// How this process reaches NATS.
    pub fn nats_connect(&self) -> imagelib_events::connect::NatsConnect {
        imagelib_events::connect::NatsConnect {
            url: self.nats_url.clone(),
            creds_file: self.nats_creds.clone(),
            ca_file: self.nats_ca.clone(),
        }
    }

    /// Refuse values that would only fail later and obscurely.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token_ok(&self.stream) {
            return Err(ConfigError::Invalid(format!(
                "IMAGELIB_STREAM `{}` must be letters, digits, `_` and `-`",
                self.stream
            )));
        }
        if !self.subject_prefix.split('.').all(token_ok) {
            return Err(ConfigError::Invalid(format!(
                "IMAGELIB_SUBJECT_PREFIX `{}` must be dot-separated tokens of letters, digits, `_` and `-`",
                self.subject_prefix
            )));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ConfigError::Invalid(
                "IMAGELIB_STREAM_REPLICAS must be between 1 and 5".into(),
            ));
        }
        if self.stream_max_bytes < 1024 * 1024 && self.stream_max_bytes != -1 {
            return Err(ConfigError::Invalid(
                "IMAGELIB_STREAM_MAX_BYTES must be at least 1048576 (1 MiB), or -1 for no limit"
                    .into(),
            ));
        }
        url::Url::parse(&self.database_url).map_err(|e| {
            ConfigError::Invalid(format!("IMAGELIB_DATABASE_URL is not a URL: {e}"))
        })?;
        if self
            .console
            .session_key
            .as_ref()
            .is_some_and(|k| k.chars().count() < 32)
        {
            return Err(ConfigError::Invalid(
                "IMAGELIB_CONSOLE__SESSION_KEY must be at least 32 characters".into(),
            ));
        }
        if !(60..=30 * 86_400).contains(&self.console.session_ttl_secs) {
            return Err(ConfigError::Invalid(
                "IMAGELIB_CONSOLE__SESSION_TTL_SECS must be between 60 and 2592000 (30 days)"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Load a config struct: `T::default()`, then the TOML file named by `IMAGELIB_CONFIG`
/// (or `imagelib.toml` in the working directory, if present), then `IMAGELIB_*`
/// variables (`IMAGELIB_SCANNER__INTERVAL_SECS` reaches a nested field).
pub fn load<T>() -> Result<T, ConfigError>
where
    T: Default + Serialize + for<'de> Deserialize<'de>,
{
    let file = std::env::var("IMAGELIB_CONFIG").unwrap_or_else(|_| "imagelib.toml".into());
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::file(file))
        .merge(Env::prefixed("IMAGELIB_").split("__").ignore(&["config"]))
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature (figment::Error)
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMAGELIB_NATS_URL", "nats://10.0.0.1:4222");
            jail.set_env("IMAGELIB_STREAM", "OTHER");
            jail.set_env("IMAGELIB_HTTP_ADDR", "0.0.0.0:9000");
            let c: CommonConfig = load().map_err(|e| e.to_string())?;
            assert_eq!(c.nats_url, "nats://10.0.0.1:4222");
            assert_eq!(c.stream, "OTHER");
            assert_eq!(c.http_addr, Some("0.0.0.0:9000".parse().unwrap()));
            assert_eq!(c.subject_prefix, "imagelib");
            Ok(())
        });
    }

    #[test]
    fn file_then_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "imagelib.toml",
                "stream = \"FROMFILE\"\nsubject_prefix = \"a.b\"",
            )?;
            jail.set_env("IMAGELIB_SUBJECT_PREFIX", "env");
            let c: CommonConfig = load().map_err(|e| e.to_string())?;
            assert_eq!(c.stream, "FROMFILE");
            assert_eq!(c.subject_prefix, "env");
            Ok(())
        });
    }

    #[test]
    fn nats_credentials_and_stream_limit_from_env() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMAGELIB_NATS_URL", "nats://svc:s3cr3t@10.0.0.1:4222");
            jail.set_env("IMAGELIB_NATS_CREDS", "/run/secrets/nats.creds");
            jail.set_env("IMAGELIB_NATS_CA", "/etc/nats/ca.pem");
            jail.set_env("IMAGELIB_STREAM_MAX_BYTES", "2147483648");
            let c: CommonConfig = load().map_err(|e| e.to_string())?;
            let nats = c.nats_connect();
            assert_eq!(
                nats.creds_file.as_deref(),
                Some(std::path::Path::new("/run/secrets/nats.creds"))
            );
            assert_eq!(
                nats.ca_file.as_deref(),
                Some(std::path::Path::new("/etc/nats/ca.pem"))
            );
            assert!(!format!("{nats:?}").contains("s3cr3t"));
            assert!(!format!("{c:?}").contains("s3cr3t"));
            let with_pg_password = CommonConfig {
                database_url: "postgres://u:pg-s3cr3t@db/imagelib".into(),
                ..c.clone()
            };
            assert!(!format!("{with_pg_password:?}").contains("pg-s3cr3t"));
            assert_eq!(c.stream_settings().max_bytes, 2 * 1024 * 1024 * 1024);
            assert!(c.validate().is_ok());
            Ok(())
        });
        let tiny = CommonConfig {
            stream_max_bytes: 1000,
            ..Default::default()
        };
        assert!(tiny.validate().is_err());
        let unlimited = CommonConfig {
            stream_max_bytes: -1,
            ..Default::default()
        };
        assert!(unlimited.validate().is_ok());
        assert_eq!(
            CommonConfig::default().stream_settings().max_bytes,
            DEFAULT_STREAM_MAX_BYTES
        );
    }

    #[test]
    fn anonymous_reads_are_off_unless_configured() {
        assert!(!CommonConfig::default().anonymous_read);
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMAGELIB_ANONYMOUS_READ", "true");
            let c: CommonConfig = load().map_err(|e| e.to_string())?;
            assert!(c.anonymous_read);
            jail.set_env("IMAGELIB_ANONYMOUS_READ", "false");
            let c: CommonConfig = load().map_err(|e| e.to_string())?;
            assert!(!c.anonymous_read);
            Ok(())
        });
    }

    #[test]
    fn validation_refuses_bad_names() {
        let c = CommonConfig {
            stream: "a.b".into(),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = CommonConfig {
            subject_prefix: "a.>".into(),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        assert!(CommonConfig::default().validate().is_ok());
    }
}
