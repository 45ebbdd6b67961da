//! The kubernetes target: server-side apply (`PATCH` with
//! `Content-Type: application/apply-patch+yaml`, field manager `imagelib`, `force=true`)
//! of each manifest through the API server, and `DELETE` on removal.
//!
//! A service-account token file is re-read when it changes: the kubelet rotates projected
//! tokens (about hourly, by swapping a symlink), and a token read once at start stops
//! working after its expiry.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{Applied, Change, TargetError, plural};
use crate::render::Manifest;

#[derive(Debug, Clone)]
pub struct Kubernetes {
    http: reqwest::Client,
    api: String,
    token: Token,
}

/// Where the bearer token comes from.
#[derive(Clone)]
enum Token {
    None,
    Fixed(String),
    File {
        path: PathBuf,
        cached: Arc<Mutex<CachedToken>>,
    },
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::None => f.write_str("None"),
            Token::Fixed(_) => f.write_str("Fixed([redacted])"),
            Token::File { path, .. } => write!(f, "File({})", path.display()),
        }
    }
}

struct CachedToken {
    token: String,
    /// The file's modification time and length when read.
    stamp: Option<(SystemTime, u64)>,
    read_at: Instant,
}

/// A token file unchanged by its stamp is still read again after this long (a rewrite
/// within the file system's timestamp granularity keeps the stamp).
pub const TOKEN_REREAD: Duration = Duration::from_secs(60);

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_token(path: &std::path::Path) -> Result<CachedToken, TargetError> {
    let stamp = stamp(path);
    let token = std::fs::read_to_string(path)
        .map_err(|e| {
            TargetError::Kubernetes(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(TargetError::Kubernetes(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(CachedToken {
        token,
        stamp,
        read_at: Instant::now(),
    })
}

impl Token {
    /// The current token; a file is read again when its stamp changed or the last read is
    /// older than [`TOKEN_REREAD`]. A file that cannot be read keeps the last good token.
    fn current(&self) -> Option<String> {
        match self {
            Token::None => None,
            Token::Fixed(t) => Some(t.clone()),
            Token::File { path, cached } => {
                let mut c = cached.lock().unwrap_or_else(|p| p.into_inner());
                if c.read_at.elapsed() >= TOKEN_REREAD || stamp(path) != c.stamp {
                    match read_token(path) {
                        Ok(fresh) => *c = fresh,
                        Err(e) => {
                            tracing::warn!(error = %e, "keeping the last service-account token");
                            c.read_at = Instant::now();
                        }
                    }
                }
                Some(c.token.clone())
            }
        }
    }
}

pub const FIELD_MANAGER: &str = "imagelib";

impl Kubernetes {
    pub fn new(
        api: &str,
        token: Option<String>,
        ca_pem: Option<&str>,
    ) -> Result<Self, TargetError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| TargetError::Kubernetes(format!("bad CA: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Kubernetes {
            http: b
                .build()
                .map_err(|e| TargetError::Kubernetes(e.to_string()))?,
            api: api.trim_end_matches('/').to_owned(),
            token: token.map_or(Token::None, Token::Fixed),
        })
    }

    /// Take the bearer token from `path` (a service account's), read now and again whenever
    /// the file changes.
    pub fn with_token_file(mut self, path: PathBuf) -> Result<Self, TargetError> {
        let first = read_token(&path)?;
        self.token = Token::File {
            path,
            cached: Arc::new(Mutex::new(first)),
        };
        Ok(self)
    }

    fn url(&self, m: &Manifest) -> Result<String, TargetError> {
        let plural = plural(m.kind())
            .ok_or_else(|| TargetError::Kubernetes(format!("unknown kind {}", m.kind())))?;
        let path = match m.namespace() {
            Some(ns) => format!(
                "/apis/{}/namespaces/{ns}/{plural}/{}",
                m.api_version(),
                m.name()
            ),
            None => format!("/apis/{}/{plural}/{}", m.api_version(), m.name()),
        };
        Ok(format!("{}{path}", self.api))
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token.current() {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn apply(
        &self,
        _change: &Change<'_>,
        manifests: &[Manifest],
    ) -> Result<Applied, TargetError> {
        let mut revision = String::new();
        for m in manifests {
            let url = format!("{}?fieldManager={FIELD_MANAGER}&force=true", self.url(m)?);
            let res = self
                .auth(self.http.patch(&url))
                .header("Content-Type", "application/apply-patch+yaml")
                .header("Accept", "application/json")
                .body(m.yaml())
                .send()
                .await
                .map_err(|e| TargetError::Kubernetes(format!("{}: {e}", m.name())))?;
            let status = res.status();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            if !status.is_success() {
                return Err(TargetError::Kubernetes(format!(
                    "apply of {} {} answered {status}: {}",
                    m.kind(),
                    m.name(),
                    body["message"].as_str().unwrap_or("no message")
                )));
            }
            revision = body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        Ok(Applied {
            revision,
            changed: true,
        })
    }

    pub async fn delete(
        &self,
        _change: &Change<'_>,
        manifests: &[Manifest],
    ) -> Result<Applied, TargetError> {
        for m in manifests {
            let res = self
                .auth(self.http.delete(self.url(m)?))
                .send()
                .await
                .map_err(|e| TargetError::Kubernetes(format!("{}: {e}", m.name())))?;
            if !res.status().is_success() && res.status().as_u16() != 404 {
                return Err(TargetError::Kubernetes(format!(
                    "delete of {} {} answered {}",
                    m.kind(),
                    m.name(),
                    res.status()
                )));
            }
        }
        Ok(Applied {
            revision: String::new(),
            changed: true,
        })
    }
}
