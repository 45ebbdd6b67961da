//! How a process reaches NATS: the server URLs, the credentials and the CA.
//!
//! The event log drives deployments and the key bucket holds every registry's data key,
//! so a production NATS requires authentication and each service gets a user of its own
//! (`imagelib nats config`). Credentials come from a file (`IMAGELIB_NATS_CREDS`) or the
//! URL's user-info; a CA file (`IMAGELIB_NATS_CA`) turns TLS on and verifies the server
//! with it. Without either, the connection is anonymous, as the quickstart's loopback NATS
//! expects.
//!
//! Credentials are taken out of the URLs before async-nats sees them (it logs server
//! addresses), and every URL this module prints has its password replaced by `***`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};

/// The largest credentials file read (a `.creds` file is about 1 KiB).
const MAX_CREDS_BYTES: u64 = 64 * 1024;

/// Where NATS is and how to authenticate to it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NatsConnect {
    /// One URL or a comma-separated list (a cluster); may carry `user:password@` or a
    /// `token@`.
    pub url: String,
    /// A NATS `.creds` file (JWT and seed), an NKey user seed (`SU…`), or `user:password`
    /// on the first line.
    pub creds_file: Option<PathBuf>,
    /// PEM CA certificates: TLS is then required and verified against them.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConnect")
            .field("url", &redact_urls(&self.url))
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Why a connection could not be set up or was refused. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("IMAGELIB_NATS_URL `{url}` is not a NATS URL: {message}")]
    Url { url: String, message: String },
    #[error("NATS credentials file {path}: {message}")]
    Credentials { path: PathBuf, message: String },
    #[error("NATS CA file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    /// `detail` is the transport's own message (e.g. why a certificate was not trusted),
    /// never anything the server or the credentials file said.
    #[error("cannot connect to NATS at {url}: {kind}{detail}{hint}")]
    Refused {
        url: String,
        kind: ConnectErrorKind,
        detail: String,
        hint: &'static str,
    },
}

impl ConnectError {
    /// The server refused the credentials (or their absence).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ConnectError::Refused {
                kind: ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication,
                ..
            }
        )
    }
}

/// What a credentials file holds.
enum Credentials {
    Creds(String),
    Seed(String),
    UserPassword(String, String),
}

impl NatsConnect {
    pub fn new(url: impl Into<String>) -> Self {
        NatsConnect {
            url: url.into(),
            ..Default::default()
        }
    }

    pub fn creds_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.creds_file = Some(path.into());
        self
    }

    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The URLs with any password or token replaced by `***`: safe to log.
    pub fn redacted_url(&self) -> String {
        redact_urls(&self.url)
    }

    /// Connect, failing fast on refused credentials or TLS. A server that is not up yet is
    /// waited for (reconnects in the background), as services start before NATS in a
    /// compose stack.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        let addrs = self.addrs()?;
        ensure_crypto_provider();
        match self.options(name)?.connect(addrs.clone()).await {
            Ok(client) => Ok(client),
            Err(e) if is_unreachable(&e) => {
                tracing::warn!(url = %self.redacted_url(), error = %e.kind(), "NATS not reachable yet; retrying in the background");
                self.options(name)?
                    .retry_on_initial_connect()
                    .connect(addrs)
                    .await
                    .map_err(|e| self.refused(&e))
            }
            Err(e) => Err(self.refused(&e)),
        }
    }

    fn refused(&self, e: &async_nats::ConnectError) -> ConnectError {
        // A failed TLS handshake surfaces as an I/O error carrying rustls' reason.
        let io = io_source(e);
        let kind = match io {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => ConnectErrorKind::Tls,
            _ => e.kind(),
        };
        let detail = match io {
            Some(io) if matches!(kind, ConnectErrorKind::Tls | ConnectErrorKind::Io) => {
                format!(" ({io})")
            }
            _ => String::new(),
        };
        let hint = match kind {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                if self.creds_file.is_none() && !self.has_url_credentials() {
                    " (the server requires credentials: set IMAGELIB_NATS_CREDS)"
                } else {
                    " (check IMAGELIB_NATS_CREDS)"
                }
            }
            ConnectErrorKind::Tls => {
                if self.ca_file.is_none() {
                    " (set IMAGELIB_NATS_CA to the server's CA certificate)"
                } else {
                    " (is IMAGELIB_NATS_CA the CA that signed the server's certificate?)"
                }
            }
            _ => "",
        };
        ConnectError::Refused {
            url: self.redacted_url(),
            kind,
            detail,
            hint,
        }
    }

    fn has_url_credentials(&self) -> bool {
        self.url
            .split(',')
            .filter_map(|u| url::Url::parse(u.trim()).ok())
            .any(|u| !u.username().is_empty())
    }

    /// The server addresses without user-info.
    fn addrs(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        let mut out = Vec::new();
        for raw in self.url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let with_scheme = if raw.contains("://") {
                raw.to_owned()
            } else {
                format!("nats://{raw}")
            };
            let bad = |message: String| ConnectError::Url {
                url: redact_urls(raw),
                message,
            };
            let mut url = url::Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
            let _ = url.set_username("");
            let _ = url.set_password(None);
            out.push(ServerAddr::from_url(url).map_err(|e| bad(e.to_string()))?);
        }
        if out.is_empty() {
            return Err(ConnectError::Url {
                url: String::new(),
                message: "no server URL".into(),
            });
        }
        Ok(out)
    }

    /// User-info of the first URL that has it: `(user, Some(password))`, or a token as
    /// `(token, None)`.
    fn url_credentials(&self) -> Option<(String, Option<String>)> {
        self.url.split(',').find_map(|raw| {
            let raw = raw.trim();
            let with_scheme = if raw.contains("://") {
                raw.to_owned()
            } else {
                format!("nats://{raw}")
            };
            let url = url::Url::parse(&with_scheme).ok()?;
            if url.username().is_empty() {
                return None;
            }
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((decode(url.username()), url.password().map(decode)))
        })
    }

    fn options(&self, name: &str) -> Result<ConnectOptions, ConnectError> {
        let mut options = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &self.creds_file {
            options = match read_credentials(path)? {
                Credentials::Creds(text) => {
                    options
                        .credentials(&text)
                        .map_err(|_| ConnectError::Credentials {
                            path: path.clone(),
                            message: "not a valid NATS .creds file (JWT and seed)".into(),
                        })?
                }
                Credentials::Seed(seed) => options.nkey(seed),
                Credentials::UserPassword(user, password) => {
                    options.user_and_password(user, password)
                }
            };
        } else if let Some((user, password)) = self.url_credentials() {
            options = match password {
                Some(password) => options.user_and_password(user, password),
                None => options.token(user),
            };
        }
        if let Some(ca) = &self.ca_file {
            options = options
                .tls_client_config(tls_trusting_only(ca)?)
                .require_tls(true);
        }
        Ok(options)
    }
}

/// A TLS client configuration that trusts only the CA certificates in `ca` (not the
/// system's roots), with an explicit crypto provider: the process may link more than one
/// rustls provider (reqwest brings another), and then none is the default.
fn tls_trusting_only(ca: &Path) -> Result<async_nats::rustls::ClientConfig, ConnectError> {
    use async_nats::rustls::pki_types::CertificateDer;
    use async_nats::rustls::pki_types::pem::PemObject;
    let err = |message: String| ConnectError::Ca {
        path: ca.to_owned(),
        message,
    };
    let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
    let mut roots = async_nats::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(format!("not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    let provider = std::sync::Arc::new(async_nats::rustls::crypto::ring::default_provider());
    Ok(
        async_nats::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A server may require TLS without the URL or `IMAGELIB_NATS_CA` saying so; async-nats
/// then builds its TLS configuration on the process's default crypto provider, which does
/// not exist when several are linked. Install one unless the process chose already.
fn ensure_crypto_provider() {
    use async_nats::rustls::crypto::CryptoProvider;
    if CryptoProvider::get_default().is_none() {
        let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    }
}

fn read_credentials(path: &Path) -> Result<Credentials, ConnectError> {
    let err = |message: String| ConnectError::Credentials {
        path: path.to_owned(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_CREDS_BYTES {
        return Err(err(format!("larger than {MAX_CREDS_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_credentials(&text).map_err(|m| err(m.into()))
}

fn parse_credentials(text: &str) -> Result<Credentials, &'static str> {
    if text.contains("-----BEGIN NATS USER JWT-----") {
        return Ok(Credentials::Creds(text.to_owned()));
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("is empty")?;
    if first.starts_with("SU") && !first.contains(':') {
        return Ok(Credentials::Seed(first.to_owned()));
    }
    match first.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(
            Credentials::UserPassword(user.to_owned(), password.to_owned()),
        ),
        _ => Err("is neither a NATS .creds file, an NKey seed (SU…) nor `user:password`"),
    }
}

fn io_source(e: &async_nats::ConnectError) -> Option<&std::io::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>())
}

/// The server is not (yet) there, as opposed to there and refusing us.
fn is_unreachable(e: &async_nats::ConnectError) -> bool {
    use std::io::ErrorKind as K;
    match e.kind() {
        ConnectErrorKind::TimedOut | ConnectErrorKind::Dns => true,
        ConnectErrorKind::Io => io_source(e).is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::TimedOut
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
                    | K::NotFound
            )
        }),
        _ => false,
    }
}

/// A URL list with passwords and tokens replaced by `***`.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|raw| redact_url(raw.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_url(raw: &str) -> String {
    // Anything before the last `@` of the authority is user-info.
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, raw),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_urls("nats://svc:s3cr3t@nats:4222"),
            "nats://svc:***@nats:4222"
        );
        assert_eq!(
            redact_urls("nats://tok3n@a:4222, tls://u:p:q@b:4222/x"),
            "nats://***@a:4222,tls://u:***@b:4222/x"
        );
        assert_eq!(redact_urls("127.0.0.1:4222"), "127.0.0.1:4222");
        let c = NatsConnect::new("nats://svc:s3cr3t@nats:4222");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn user_info_leaves_the_addresses() {
        let c = NatsConnect::new("nats://svc:p%40ss@127.0.0.1:4222,nats://127.0.0.1:4223");
        let addrs = c.addrs().unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|a| !a.has_user_pass()));
        assert_eq!(
            c.url_credentials(),
            Some(("svc".into(), Some("p@ss".into())))
        );
        assert_eq!(
            NatsConnect::new("nats://tok@h:1").url_credentials(),
            Some(("tok".into(), None))
        );
        assert!(NatsConnect::new("http://h:1").addrs().is_err());
    }

    #[test]
    fn credential_formats() {
        assert!(matches!(
            parse_credentials("# comment\nsvc:pa:ss\n"),
            Ok(Credentials::UserPassword(u, p)) if u == "svc" && p == "pa:ss"
        ));
        assert!(matches!(
            parse_credentials("SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\n"),
            Ok(Credentials::Seed(_))
        ));
        assert!(matches!(
            parse_credentials("-----BEGIN NATS USER JWT-----\nx\n"),
            Ok(Credentials::Creds(_))
        ));
        assert!(parse_credentials("").is_err());
        assert!(parse_credentials("just-a-word").is_err());
        let e = parse_credentials(":secret").err().unwrap();
        assert!(!e.contains("secret"));
    }
}
