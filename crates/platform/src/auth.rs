//! Bearer tokens with a role and teams (DESIGN section 4).
//!
//! Tokens come from `IMAGELIB_ADMIN_TOKEN` (a bootstrap admin) and `IMAGELIB_TOKENS_FILE`.
//! The file stores SHA-256 hashes of tokens, so a leaked file does not leak access; a
//! presented token is hashed and looked up.
//!
//! A request without a token is refused (401) unless `IMAGELIB_ANONYMOUS_READ` is on; then
//! a `GET` without a token is an anonymous viewer of no team, who sees only what is
//! visible to everyone and can change nothing. The catalog says which private registries,
//! images and deployments a team has, so reading it is not free for anyone on the network
//! by default.
//!
//! A presented credential that does not authenticate is an audit event: one structured
//! line on the `imagelib::security` target (the first 8 hex digits of the credential's
//! SHA-256, never the credential; the route template; the peer address) and one count of
//! `imagelib.auth.failures`. The hash prefix lets an operator tell one guessed token from
//! many, or match a leaked token they hold, without the log becoming a token store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::problem::Problem;

/// What a token may do. `admin` may do everything; the others may read and do their own
/// kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Curator,
    Deployer,
    Viewer,
}

impl Role {
    pub fn allows(self, required: Role) -> bool {
        self == Role::Admin || required == Role::Viewer || self == required
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as the `actor` of the events the call causes.
    pub subject: String,
    pub role: Role,
    pub teams: Vec<String>,
    pub authenticated: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            subject: "anonymous".into(),
            role: Role::Viewer,
            teams: Vec::new(),
            authenticated: false,
        }
    }

    /// The caller's role allows `role`, or a problem saying so (401 without a token).
    pub fn require(&self, role: Role) -> Result<(), Problem> {
        if role != Role::Viewer && !self.authenticated {
            return Err(Problem::unauthorized(
                "this needs a bearer token: send `Authorization: Bearer <token>`",
            ));
        }
        if self.role.allows(role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "the `{}` role cannot do this; it needs `{}`",
                role_name(self.role),
                role_name(role)
            )))
        }
    }

    /// Whether a thing visible to `visibility` (teams; empty = everyone) is visible to the
    /// caller. Admins see everything.
    pub fn sees(&self, visibility: &[String]) -> bool {
        self.role == Role::Admin
            || visibility.is_empty()
            || visibility.iter().any(|t| self.teams.contains(t))
    }

    /// `None` for admins (no filter), otherwise the teams whose things the caller sees.
    pub fn team_filter(&self) -> Option<&[String]> {
        (self.role != Role::Admin).then_some(self.teams.as_slice())
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Curator => "curator",
        Role::Deployer => "deployer",
        Role::Viewer => "viewer",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    subject: String,
    role: Role,
    #[serde(default)]
    teams: Vec<String>,
    /// Hex SHA-256 of the token (preferred).
    #[serde(default)]
    token_sha256: Option<String>,
    /// The token itself (for development only).
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("IMAGELIB_TOKENS_FILE {path}: {message}")]
    File { path: String, message: String },
}

/// The known tokens, by hash, and whether a request without one may read.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<HashMap<[u8; 32], Caller>>,
    anonymous_read: bool,
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// From the bootstrap admin token and the tokens file (YAML or JSON).
    pub fn load(admin_token: Option<&str>, file: Option<&Path>) -> Result<Self, TokensError> {
        let mut by_hash = HashMap::new();
        if let Some(t) = admin_token.filter(|t| !t.is_empty()) {
            by_hash.insert(
                sha256(t),
                Caller {
                    subject: "admin".into(),
                    role: Role::Admin,
                    teams: vec![],
                    authenticated: true,
                },
            );
        }
        if let Some(path) = file {
            let err = |message: String| TokensError::File {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let parsed: TokensFile =
                serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
            for (i, entry) in parsed.tokens.into_iter().enumerate() {
                let hash = match (&entry.token_sha256, &entry.token) {
                    (Some(h), None) => decode_hex32(h).ok_or_else(|| {
                        err(format!("tokens[{i}].token_sha256 is not 64 hex digits"))
                    })?,
                    (None, Some(t)) if !t.is_empty() => sha256(t),
                    _ => {
                        return Err(err(format!(
                            "tokens[{i}] needs exactly one of `token_sha256` or `token`"
                        )));
                    }
                };
                by_hash.insert(
                    hash,
                    Caller {
                        subject: entry.subject,
                        role: entry.role,
                        teams: entry.teams,
                        authenticated: true,
                    },
                );
            }
        }
        Ok(Tokens {
            by_hash: Arc::new(by_hash),
            anonymous_read: false,
        })
    }

    /// The token store a service starts with. Starting one also starts the
    /// `imagelib.auth.failures` series at zero (see [`zero_failures`]).
    pub fn from_config(c: &crate::config::CommonConfig) -> Result<Self, TokensError> {
        let tokens = Self::load(c.admin_token.as_deref(), c.tokens_file.as_deref())?
            .with_anonymous_read(c.anonymous_read);
        zero_failures();
        Ok(tokens)
    }

    /// Let requests without a token read (`IMAGELIB_ANONYMOUS_READ`).
    pub fn with_anonymous_read(mut self, on: bool) -> Self {
        self.anonymous_read = on;
        self
    }

    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    pub fn caller(&self, token: &str) -> Option<Caller> {
        self.by_hash.get(&sha256(token)).cloned()
    }

    /// The caller whose token hashes to `hash` (a console session holds the hash, never
    /// the token): a token removed from the store ends its sessions.
    pub fn caller_by_hash(&self, hash: &[u8; 32]) -> Option<Caller> {
        self.by_hash.get(hash).cloned()
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Why a presented credential was refused (the `reason` of the audit line and metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not `Bearer <token>`, not ASCII, or an empty token.
    Malformed,
    /// A well-formed bearer token that no configured token hashes to.
    UnknownToken,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "malformed",
            AuthFailure::UnknownToken => "unknown_token",
        }
    }
}

/// The first 8 hex digits of the SHA-256 of `bytes`: enough to correlate, far too little
/// to recover or replay anything.
pub fn hash_prefix(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The caller an `Authorization` header value names.
pub fn authenticate(tokens: &Tokens, value: &[u8]) -> Result<Caller, AuthFailure> {
    let value = std::str::from_utf8(value).map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !value.is_ascii() {
        return Err(AuthFailure::Malformed);
    }
    tokens.caller(token).ok_or(AuthFailure::UnknownToken)
}

/// The part of a header value the hash prefix is taken from: the token when the header
/// is `Bearer <token>`, else the whole value.
fn presented_credential(value: &[u8]) -> &[u8] {
    match value.iter().position(|b| *b == b' ') {
        Some(i) if value[..i].eq_ignore_ascii_case(b"bearer") => value[i + 1..].trim_ascii(),
        _ => value,
    }
}

fn failures_counter() -> &'static opentelemetry::metrics::Counter<u64> {
    static C: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    C.get_or_init(|| {
        crate::telemetry::meter()
            .u64_counter("imagelib.auth.failures")
            .with_unit("{failure}")
            .with_description("Requests whose credential did not authenticate, by route and reason")
            .build()
    })
}

/// Starts `imagelib.auth.failures` at zero for each reason, so "no credential refused"
/// is a value a dashboard and an alert can read rather than a missing series
/// (OpenTelemetry exports a series only once something was recorded on it). The route is
/// `unmatched`, a value real failures use too, so the zeroed series is a real one and no
/// route list has to be kept here. Adding zero counts nothing.
pub fn zero_failures() {
    for reason in [AuthFailure::Malformed, AuthFailure::UnknownToken] {
        failures_counter().add(
            0,
            &[
                opentelemetry::KeyValue::new("http.route", "unmatched"),
                opentelemetry::KeyValue::new("reason", reason.as_str()),
            ],
        );
    }
}

/// One audit line and one count for a refused credential.
fn audit_failure(parts: &Parts, value: &[u8], reason: AuthFailure) {
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let source = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let prefix = hash_prefix(presented_credential(value));
    tracing::warn!(
        target: "imagelib::security",
        event = "auth_failed",
        reason = reason.as_str(),
        token.sha256_prefix = %prefix,
        http.route = %route,
        http.request.method = %parts.method,
        source.address = %source,
        "authentication failed"
    );
    failures_counter().add(
        1,
        &[
            opentelemetry::KeyValue::new("http.route", route),
            opentelemetry::KeyValue::new("reason", reason.as_str()),
        ],
    );
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let tokens = parts
            .extensions
            .get::<Tokens>()
            .ok_or_else(|| Problem::internal(&"no token store on this route"))?;
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            let safe = matches!(
                parts.method,
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            return if tokens.anonymous_read && safe {
                Ok(Caller::anonymous())
            } else {
                Err(Problem::unauthorized(
                    "this needs a bearer token: send `Authorization: Bearer <token>`",
                ))
            };
        };
        authenticate(tokens, value.as_bytes()).map_err(|reason| {
            audit_failure(parts, value.as_bytes(), reason);
            match reason {
                AuthFailure::Malformed => {
                    Problem::unauthorized("use `Authorization: Bearer <token>`")
                }
                AuthFailure::UnknownToken => Problem::unauthorized("the bearer token is not valid"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert!(Role::Admin.allows(Role::Curator));
        assert!(Role::Curator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Admin));
        assert!(!Role::Deployer.allows(Role::Curator));
    }

    #[test]
    fn visibility() {
        let c = Caller {
            subject: "a".into(),
            role: Role::Viewer,
            teams: vec!["ml".into()],
            authenticated: true,
        };
        assert!(c.sees(&[]));
        assert!(c.sees(&["ml".into(), "db".into()]));
        assert!(!c.sees(&["db".into()]));
        assert!(Caller::anonymous().require(Role::Admin).is_err());
        assert_eq!(
            Caller::anonymous().require(Role::Admin).unwrap_err().status,
            401
        );
        assert_eq!(c.require(Role::Admin).unwrap_err().status, 403);
    }

    #[test]
    fn authorization_headers() {
        let t = Tokens::load(Some("boot"), None).unwrap();
        for ok in [
            "Bearer boot",
            "bearer boot",
            "BEARER  boot ",
            "Bearer\tboot",
        ] {
            let r = authenticate(&t, ok.as_bytes());
            if ok.contains('\t') {
                assert_eq!(r.unwrap_err(), AuthFailure::Malformed, "{ok:?}");
            } else {
                assert_eq!(r.unwrap().role, Role::Admin, "{ok:?}");
            }
        }
        for (bad, reason) in [
            ("Bearer nope", AuthFailure::UnknownToken),
            ("Bearer ", AuthFailure::Malformed),
            ("Bearer", AuthFailure::Malformed),
            ("Basic Ym9vdA==", AuthFailure::Malformed),
            ("boot", AuthFailure::Malformed),
        ] {
            assert_eq!(
                authenticate(&t, bad.as_bytes()).unwrap_err(),
                reason,
                "{bad:?}"
            );
        }
        assert_eq!(
            authenticate(&t, b"Bearer \xff\xfe").unwrap_err(),
            AuthFailure::Malformed
        );
        // The prefix is of the token alone, whatever the scheme's case or spacing.
        assert_eq!(
            hash_prefix(presented_credential(b"bearer  s3cret ")),
            hash_prefix(b"s3cret")
        );
        assert_eq!(hash_prefix(b"s3cret").len(), 8);
        assert_eq!(
            hash_prefix(presented_credential(b"Basic abc")),
            hash_prefix(b"Basic abc")
        );
    }

    #[test]
    fn tokens_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.yaml");
        let hash: String = sha256("s3cret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            &p,
            format!(
                "tokens:\n  - subject: alice\n    role: viewer\n    teams: [ml]\n    token_sha256: {hash}\n  - subject: bob\n    role: curator\n    token: dev-token\n"
            ),
        )
        .unwrap();
        let t = Tokens::load(Some("boot"), Some(&p)).unwrap();
        assert_eq!(t.caller("s3cret").unwrap().subject, "alice");
        assert_eq!(t.caller("dev-token").unwrap().role, Role::Curator);
        assert_eq!(t.caller("boot").unwrap().role, Role::Admin);
        assert!(t.caller("nope").is_none());
        std::fs::write(&p, "tokens:\n  - subject: x\n    role: viewer\n").unwrap();
        let e = Tokens::load(None, Some(&p)).unwrap_err().to_string();
        assert!(e.contains("exactly one"), "{e}");
    }
}
