//! Credentials and the pieces of the registry auth protocol: `WWW-Authenticate` challenges,
//! token-endpoint answers and the per-scope token cache.
//!
//! The exchange itself (when to ask, where credentials may go) lives in
//! [`crate::transport`], because it needs the guarded, counted HTTP path like any request.
//! Secrets stay in [`SecretString`] from the moment they enter: `Debug` prints them redacted
//! and nothing here formats them into a message.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::Error;

/// What the client presents to a registry.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// Username and password: sent as Basic auth, or to the token realm for a Bearer registry.
    Basic {
        username: String,
        password: SecretString,
    },
    /// A ready token sent as `Authorization: Bearer` to the registry itself.
    Bearer(SecretString),
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Basic {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }

    pub fn bearer(token: impl Into<String>) -> Self {
        Credentials::Bearer(SecretString::from(token.into()))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"[redacted]")
                .finish(),
            Credentials::Bearer(_) => f.write_str("Bearer([redacted])"),
        }
    }
}

/// Credentials with the time they stop working, as a provider hands them out.
#[derive(Debug, Clone)]
pub struct ProvidedCredentials {
    pub credentials: Credentials,
    /// `None` for credentials that do not expire (a password, a robot token).
    pub expires_at: Option<SystemTime>,
}

/// Where credentials come from. Static credentials implement it directly; provider
/// exchangers (ECR `GetAuthorizationToken`, ACR `/oauth2/exchange`, Artifact Registry
/// OAuth) implement it to hand out short-lived credentials, which the client asks for again
/// shortly before `expires_at`.
pub trait CredentialProvider: Send + Sync + fmt::Debug {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>>;

    /// Forgets credentials held for reuse, so the next [`Self::credentials`] exchanges
    /// again (the registry refused them before they expired).
    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl CredentialProvider for Credentials {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, Error>> {
        let provided = ProvidedCredentials {
            credentials: self.clone(),
            expires_at: None,
        };
        Box::pin(async move { Ok(provided) })
    }
}

/// Token services that live on another host than their registry, built in because the
/// public registries use them: `(registry host, token host)`. Every other registry type
/// (GHCR, ACR, ECR, Artifact Registry and Container Registry, Quay, Harbor) answers with a
/// realm on its own host, which is always allowed.
pub const KNOWN_TOKEN_HOSTS: &[(&str, &str)] = &[
    ("docker.io", "auth.docker.io"),
    ("index.docker.io", "auth.docker.io"),
    ("registry-1.docker.io", "auth.docker.io"),
    ("registry.hub.docker.com", "auth.docker.io"),
    ("registry.gitlab.com", "gitlab.com"),
];

/// Whether credentials may go to the token realm `realm` of the registry at
/// `registry_host`: the realm is on the registry's own host, on one of `auth_hosts` (the
/// registry's configuration), or on a [`KNOWN_TOKEN_HOSTS`] host of that registry. Host
/// names compare case-insensitively and without a trailing dot; the port is not part of the
/// rule (the scheme rule, HTTPS, is checked separately).
pub fn realm_host_allowed(registry_host: &str, realm: &url::Url, auth_hosts: &[String]) -> bool {
    let Some(realm_host) = realm.host_str() else {
        return false;
    };
    let norm = |h: &str| h.trim().trim_end_matches('.').to_ascii_lowercase();
    let realm_host = norm(realm_host);
    let registry_host = norm(registry_host);
    if realm_host == registry_host {
        return true;
    }
    if auth_hosts.iter().any(|h| norm(h) == realm_host) {
        return true;
    }
    KNOWN_TOKEN_HOSTS
        .iter()
        .any(|(registry, token)| *registry == registry_host && *token == realm_host)
}

/// Provider credentials are refreshed this long before they expire (ECR's 12 h tokens are
/// refreshed after ~11 h).
pub(crate) const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(15 * 60);

/// What an access token is for, in the registry token protocol's words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The `/v2/` ping: a token with no scope.
    Registry,
    /// `repository:<name>:pull`
    Pull(String),
    /// `registry:catalog:*`
    Catalog,
}

impl Scope {
    pub fn as_param(&self) -> Option<String> {
        match self {
            Scope::Registry => None,
            Scope::Pull(name) => Some(format!("repository:{name}:pull")),
            Scope::Catalog => Some("registry:catalog:*".to_owned()),
        }
    }

    pub(crate) fn cache_key(&self) -> String {
        self.as_param().unwrap_or_default()
    }
}

/// One challenge of a `WWW-Authenticate` header; scheme and parameter names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses `WWW-Authenticate` (RFC 9110 §11.6.1): several challenges, parameters whose quoted
/// values hold commas, `=` and escaped quotes, any case for the scheme.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip = |i: &mut usize, chars: &[u8]| {
        while *i < b.len() && chars.contains(&b[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        header[start..*i].to_owned()
    };
    loop {
        skip(&mut i, b" \t,");
        let scheme = token(&mut i);
        if scheme.is_empty() {
            break;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        loop {
            skip(&mut i, b" \t,");
            let mark = i;
            let name = token(&mut i);
            skip(&mut i, b" \t");
            if name.is_empty() || i >= b.len() || b[i] != b'=' {
                i = mark;
                break;
            }
            i += 1;
            skip(&mut i, b" \t");
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i]);
                    i += 1;
                }
                // Past the closing quote; an unterminated value ends the header.
                i = (i + 1).min(b.len());
                String::from_utf8_lossy(&v).into_owned()
            } else {
                let start = i;
                while i < b.len() && !matches!(b[i], b',' | b' ' | b'\t') {
                    i += 1;
                }
                header[start..i].to_owned()
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(challenge);
    }
    out
}

/// The answer of a token endpoint (Docker token spec and OAuth2 flavours).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    /// Any JSON: a registry may send a float, a string, `1e300` or `-5`; see
    /// [`token_lifetime`].
    expires_in: Option<serde_json::Value>,
    issued_at: Option<String>,
}

pub(crate) struct IssuedToken {
    pub token: SecretString,
    /// When to stop using it (expiry minus a safety margin).
    pub refresh_at: Instant,
}

/// The shortest token lifetime believed: a token said to live less is still used this
/// long (a 401 then fetches a new one), so a registry cannot make us fetch a token per request.
pub(crate) const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(30);
/// The longest token lifetime believed: a huge `expires_in` must not overflow `Instant`
/// arithmetic nor keep a token cached for years.
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The token spec's default when `expires_in` is absent.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// `expires_in` as the registry sent it, clamped to
/// [[`MIN_TOKEN_LIFETIME`], [`MAX_TOKEN_LIFETIME`]]; absent, zero, negative or not a
/// number means the spec's default of 60 s.
pub(crate) fn token_lifetime(expires_in: Option<&serde_json::Value>) -> Duration {
    let secs = match expires_in {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => {
            let max = MAX_TOKEN_LIFETIME.as_secs_f64();
            Duration::from_secs_f64(s.min(max)).max(MIN_TOKEN_LIFETIME)
        }
        _ => DEFAULT_TOKEN_LIFETIME,
    }
}

impl TokenResponse {
    /// The token and when to stop using it: the clamped lifetime counted from `issued_at`
    /// when that is in the past, minus a margin so a token is not sent as it dies.
    pub(crate) fn into_issued(self) -> Option<IssuedToken> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = token_lifetime(self.expires_in.as_ref());
        let age = self
            .issued_at
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
            .and_then(|issued| {
                chrono::Utc::now()
                    .signed_duration_since(issued.to_utc())
                    .to_std()
                    .ok()
            })
            .unwrap_or_default();
        // An `issued_at` far in the past (or a wrong clock) never makes a token
        // single-use: whatever it says, a token is kept for the minimum lifetime.
        let remaining = lifetime.saturating_sub(age).max(MIN_TOKEN_LIFETIME);
        let margin = (remaining / 5).min(Duration::from_secs(30));
        let usable = remaining.saturating_sub(margin);
        let now = Instant::now();
        Some(IssuedToken {
            token: SecretString::from(token),
            refresh_at: now.checked_add(usable).unwrap_or(now),
        })
    }
}

/// How long the token in a token endpoint's JSON answer would be used, as the transport
/// reads it; `None` when the answer holds no token. Public for the property tests and
/// fuzz targets (a registry's token server writes these bytes).
#[doc(hidden)]
pub fn token_response_lifetime(body: &[u8]) -> Option<Duration> {
    let issued = serde_json::from_slice::<TokenResponse>(body)
        .ok()
        .and_then(TokenResponse::into_issued)?;
    Some(issued.refresh_at.saturating_duration_since(Instant::now()))
}

/// A token ready to send, as an `Authorization` value marked sensitive.
pub(crate) struct CachedToken {
    pub id: u64,
    pub value: reqwest::header::HeaderValue,
    pub refresh_at: Instant,
}

/// Tokens by scope. Each scope has its own async lock so that many concurrent requests for
/// a new scope make one token request, not one each.
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
}

impl TokenCache {
    pub(crate) fn slot(&self, scope: &Scope) -> Arc<tokio::sync::Mutex<Option<CachedToken>>> {
        self.slots
            .lock()
            .entry(scope.cache_key())
            .or_default()
            .clone()
    }

    pub(crate) fn clear(&self) {
        self.slots.lock().clear();
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.slots.lock().len();
        write!(f, "TokenCache({n} scopes)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn parses_bearer_with_quoted_commas() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example.io/token",service="registry.example.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.example.io"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn parses_several_challenges_spacing_and_escapes() {
        let c = parse_challenges(
            r#"basic realm="Registry \"R\"" , BEARER  realm = "https://t/x?a=1,b=2" ,error="insufficient_scope", Negotiate"#,
        );
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"Registry "R""#));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://t/x?a=1,b=2"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[2].scheme, "negotiate");
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn token_response_forms_and_expiry() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":300}"#).unwrap();
        let t = r.into_issued().unwrap();
        assert_eq!(t.token.expose_secret(), "abc");
        let left = t.refresh_at - Instant::now();
        assert!(
            left > Duration::from_secs(260) && left <= Duration::from_secs(270),
            "{left:?}"
        );

        let r: TokenResponse = serde_json::from_str(r#"{"token":"t","access_token":"u"}"#).unwrap();
        let t = r.into_issued().unwrap();
        assert_eq!(t.token.expose_secret(), "t");
        assert!(t.refresh_at - Instant::now() <= Duration::from_secs(48));

        let issued = (chrono::Utc::now() - chrono::Duration::seconds(100)).to_rfc3339();
        let r: TokenResponse = serde_json::from_str(&format!(
            r#"{{"token":"t","expires_in":120,"issued_at":"{issued}"}}"#
        ))
        .unwrap();
        let t = r.into_issued().unwrap();
        assert!(t.refresh_at <= Instant::now() + Duration::from_secs(24));

        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(r.into_issued().is_none());
    }

    #[test]
    fn hostile_lifetimes_are_clamped_never_overflow() {
        let day = MAX_TOKEN_LIFETIME;
        for (expires_in, lo, hi) in [
            ("18446744073709551615", day - Duration::from_secs(31), day),
            ("1e308", day - Duration::from_secs(31), day),
            ("9223372036854775807", day - Duration::from_secs(31), day),
            (
                "\"300\"",
                Duration::from_secs(260),
                Duration::from_secs(270),
            ),
            ("1", Duration::from_secs(20), Duration::from_secs(24)),
            ("0", Duration::from_secs(40), Duration::from_secs(48)),
            (
                "-9223372036854775808",
                Duration::from_secs(40),
                Duration::from_secs(48),
            ),
            ("\"soon\"", Duration::from_secs(40), Duration::from_secs(48)),
            ("null", Duration::from_secs(40), Duration::from_secs(48)),
        ] {
            let r: TokenResponse =
                serde_json::from_str(&format!(r#"{{"token":"t","expires_in":{expires_in}}}"#))
                    .unwrap();
            let t = r.into_issued().unwrap();
            let left = t.refresh_at.saturating_duration_since(Instant::now());
            assert!(left > lo && left <= hi, "{expires_in}: {left:?}");
        }
        // An issued_at far in the past or the future neither panics nor extends the life.
        for issued in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            let r: TokenResponse = serde_json::from_str(&format!(
                r#"{{"token":"t","expires_in":1e20,"issued_at":"{issued}"}}"#
            ))
            .unwrap();
            let t = r.into_issued().unwrap();
            let left = t.refresh_at.saturating_duration_since(Instant::now());
            assert!(left <= day, "{issued}: {left:?}");
            assert!(
                left >= Duration::from_secs(20),
                "never single-use: {left:?}"
            );
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = Credentials::basic("robot$ai+scanner", "canary-pw-123");
        let d = format!("{c:?}");
        assert!(
            d.contains("robot$ai+scanner") && !d.contains("canary"),
            "{d}"
        );
        let d = format!("{:?}", Credentials::bearer("canary-token"));
        assert!(!d.contains("canary"), "{d}");
    }
    #[test]
    fn realms_only_on_the_registrys_host_its_auth_hosts_or_known_token_hosts() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let none: &[String] = &[];
        assert!(realm_host_allowed(
            "harbor.acme.io",
            &url("https://harbor.acme.io/service/token"),
            none
        ));
        assert!(realm_host_allowed(
            "Harbor.Acme.io.",
            &url("https://HARBOR.acme.io:8443/t"),
            none
        ));
        assert!(realm_host_allowed(
            "registry-1.docker.io",
            &url("https://auth.docker.io/token"),
            none
        ));
        assert!(realm_host_allowed(
            "registry.gitlab.com",
            &url("https://gitlab.com/jwt/auth"),
            none
        ));
        assert!(!realm_host_allowed(
            "ghcr.io",
            &url("https://auth.docker.io/token"),
            none
        ));
        assert!(!realm_host_allowed(
            "harbor.acme.io",
            &url("https://evil.example/token"),
            none
        ));
        assert!(!realm_host_allowed(
            "harbor.acme.io",
            &url("https://harbor.acme.io.evil.example/t"),
            none
        ));
        let listed = vec!["Auth.Acme.io".to_owned()];
        assert!(realm_host_allowed(
            "harbor.acme.io",
            &url("https://auth.acme.io/token"),
            &listed
        ));
        assert!(!realm_host_allowed(
            "harbor.acme.io",
            &url("https://other.acme.io/token"),
            &listed
        ));
    }
}
