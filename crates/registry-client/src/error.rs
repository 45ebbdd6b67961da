//! Errors, classified the way callers act on them.
//!
//! registry-registry turns a failed validation into a precise reason (`dns`, `tls`, …) and
//! sync-scanner decides from the class whether to defer a repository (`rate_limited`), end a
//! scan `partial`, or give up on a registry. So every failure carries an [`ErrorKind`], and no
//! message ever holds a credential or a token: they only ever name URLs (which never carry
//! user-info, see [`crate::config`]) and server-side reasons.

use std::fmt;
use std::time::Duration;

use imagelib_events::model::ValidationReason;

/// The class of a failure; the first eleven are the validation reasons of the HTTP contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Dns,
    Tls,
    Connect,
    Timeout,
    NotARegistry,
    Unauthorized,
    Forbidden,
    RateLimited,
    Blocked,
    /// A token realm on a host the registry's credentials may not go to.
    RealmNotAllowed,
    /// A cloud exchange (ACR, ECR) asked for a host that is not one of that cloud's
    /// registry hosts.
    HostNotAllowed,
    /// The repository, manifest or blob does not exist.
    NotFound,
    /// The registry kept answering 5xx after the retries.
    Server,
    /// An answer that breaks the protocol: bad JSON, a pagination loop, a redirect loop, …
    Protocol,
    /// Content whose sha256 is not the digest it was asked for or announced with.
    DigestMismatch,
    /// A manifest or blob larger than the configured cap.
    TooLarge,
    /// The per-registry request budget is spent.
    BudgetExhausted,
    /// The client was configured with something it cannot use (bad URL, bad CA, …).
    Config,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotARegistry => "not_a_registry",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Blocked => "blocked",
            ErrorKind::RealmNotAllowed => "realm_not_allowed",
            ErrorKind::HostNotAllowed => "host_not_allowed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Server => "server",
            ErrorKind::Protocol => "protocol",
            ErrorKind::DigestMismatch => "digest_mismatch",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::BudgetExhausted => "budget_exhausted",
            ErrorKind::Config => "config",
        }
    }

    /// The contract's validation reason for this class, if it is one.
    pub fn validation_reason(self) -> Option<ValidationReason> {
        Some(match self {
            ErrorKind::Dns => ValidationReason::Dns,
            ErrorKind::Tls => ValidationReason::Tls,
            ErrorKind::Connect => ValidationReason::Connect,
            ErrorKind::Timeout => ValidationReason::Timeout,
            ErrorKind::NotARegistry => ValidationReason::NotARegistry,
            ErrorKind::Unauthorized => ValidationReason::Unauthorized,
            ErrorKind::Forbidden => ValidationReason::Forbidden,
            ErrorKind::RateLimited => ValidationReason::RateLimited,
            ErrorKind::Blocked => ValidationReason::Blocked,
            ErrorKind::RealmNotAllowed => ValidationReason::RealmNotAllowed,
            ErrorKind::HostNotAllowed => ValidationReason::HostNotAllowed,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caps of [`crate::RegistryConfig`] that bound what a registry can make us read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    /// `max_manifest_bytes`
    ManifestBytes,
    /// `max_blob_bytes` (config blobs)
    ConfigBytes,
    /// `max_index_children`
    IndexChildren,
    /// `max_listing_items`
    ListingItems,
    /// `max_pages`
    ListingPages,
    /// `max_listing_bytes`, or `max_page_bytes` for one page
    ListingBytes,
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cap::ManifestBytes => "manifest bytes",
            Cap::ConfigBytes => "config blob bytes",
            Cap::IndexChildren => "index children",
            Cap::ListingItems => "listed entries",
            Cap::ListingPages => "pages",
            Cap::ListingBytes => "listing bytes",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "blocked: {}{} is in the denied network {network}; {}",
        .host,
        resolved_to(.host, .addr),
        blocked_advice(.network, .addr)
    )]
    Blocked {
        host: String,
        addr: std::net::IpAddr,
        /// The deny-list entry that matched.
        network: ipnet::IpNet,
    },
    /// Credentials were about to go to a token realm on another host.
    #[error(
        "realm_not_allowed: the token realm {realm} is not on the registry's host {registry} \
         nor a known token host; credentials are not sent there (list the realm's host in \
         the registry's auth_hosts if it is the registry's token service)"
    )]
    RealmNotAllowed { realm: String, registry: String },
    /// A provider exchange refused before any request: `reason` says which hosts it serves.
    #[error("host_not_allowed: {host}: {reason}")]
    HostNotAllowed { host: String, reason: String },
    #[error("dns: cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("tls: {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("connect: {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("timeout: {url} did not answer in time")]
    Timeout { url: String },
    #[error("not_a_registry: {url}: {reason}")]
    NotARegistry { url: String, reason: String },
    #[error("unauthorized: {url}: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("forbidden: {url}: {reason}")]
    Forbidden { url: String, reason: String },
    #[error("rate_limited: {url}{}", match .retry_after { Some(d) => format!(", retry after {}s", d.as_secs()), None => String::new() })]
    RateLimited {
        url: String,
        retry_after: Option<Duration>,
    },
    #[error("not_found: {url}")]
    NotFound { url: String },
    #[error("server: {url} answered {status}")]
    Server { url: String, status: u16 },
    #[error("protocol: {url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("digest_mismatch: {url}: expected {expected}, content is {actual}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("too_large: {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// A configured cap was reached (a hostile or runaway registry): what was read until
    /// then is kept, nothing is concluded from what was not.
    #[error("too_large: {url}: more than {limit} {cap}")]
    Capped { url: String, cap: Cap, limit: u64 },
    #[error("budget_exhausted: the request budget of {budget} is spent")]
    BudgetExhausted { budget: u64 },
    #[error("config: {0}")]
    Config(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Blocked { .. } => ErrorKind::Blocked,
            Error::RealmNotAllowed { .. } => ErrorKind::RealmNotAllowed,
            Error::HostNotAllowed { .. } => ErrorKind::HostNotAllowed,
            Error::Dns { .. } => ErrorKind::Dns,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::NotARegistry { .. } => ErrorKind::NotARegistry,
            Error::Unauthorized { .. } => ErrorKind::Unauthorized,
            Error::Forbidden { .. } => ErrorKind::Forbidden,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Server { .. } => ErrorKind::Server,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Error::TooLarge { .. } | Error::Capped { .. } => ErrorKind::TooLarge,
            Error::BudgetExhausted { .. } => ErrorKind::BudgetExhausted,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// The contract's validation reason, for registry-registry.
    pub fn validation_reason(&self) -> Option<ValidationReason> {
        self.kind().validation_reason()
    }

    /// The cap this error hit, if it is one.
    pub fn cap(&self) -> Option<Cap> {
        match self {
            Error::Capped { cap, .. } => Some(*cap),
            _ => None,
        }
    }

    /// A body over its size cap, said as the cap of what was being read.
    pub(crate) fn into_cap(self, cap: Cap) -> Self {
        match self {
            Error::TooLarge { url, limit } => Error::Capped { url, cap, limit },
            other => other,
        }
    }

    /// How long the registry asked us to wait, for a `rate_limited` error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn protocol(url: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Protocol {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to reach a blocked address: an allow list, except for the cloud metadata endpoints,
/// which only their own credential providers reach.
fn blocked_advice(network: &ipnet::IpNet, addr: &std::net::IpAddr) -> String {
    let metadata = crate::guard::NetworkGuard::METADATA_NETWORKS
        .iter()
        .any(|m| m.parse::<ipnet::IpNet>().is_ok_and(|m| m == *network));
    if metadata {
        "it is a cloud metadata endpoint, which IMAGELIB_ALLOW_NETWORKS does not re-allow: \
         no registry request reaches it (only a workload identity provider, its own endpoint)"
            .to_owned()
    } else {
        format!(
            "if this registry is meant to be reached, add {network} (or {addr}) to \
             IMAGELIB_ALLOW_NETWORKS"
        )
    }
}

/// ` (10.0.0.7)` after a name; nothing after an IP literal, which is its own address.
fn resolved_to(host: &str, addr: &std::net::IpAddr) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<std::net::IpAddr>() {
        Ok(_) => String::new(),
        Err(_) => format!(" ({addr})"),
    }
}
