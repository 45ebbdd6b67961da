//! A Registry HTTP API v2 / OCI distribution client (DESIGN section 5), shared by
//! registry-registry (credential validation) and sync-scanner (discovery).
//!
//! Built on reqwest directly rather than `oci-client` (see the README for why): the
//! behaviours that matter here — a network guard on resolved addresses, redirects that never
//! carry credentials to another host, `Link` pagination, `Retry-After`, a per-registry
//! concurrency cap, budget and request counts — all sit in the request path, which
//! [`transport`] owns.
//!
//! ```no_run
//! # async fn f() -> Result<(), registry_client::Error> {
//! use registry_client::{Credentials, RegistryClient, RegistryConfig, MemoryCache, InspectOptions};
//! let client = RegistryClient::new(
//!     RegistryConfig::new("harbor.acme.internal/ai", false)?,
//!     Credentials::basic("robot$ai+scanner", "…"),
//! )?;
//! client.ping().await?;
//! let repos = client.catalog().await?;
//! let cache = MemoryCache::default();
//! for repo in &repos.items {
//!     for tag in client.tags(repo).await?.items {
//!         let image = client.inspect(repo, &tag, &cache, &InspectOptions::default()).await?;
//!         println!("{repo}:{tag} {} {:?}", image.digest, image.platforms);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod guard;
pub mod inspect;
pub mod manifest;
pub mod metrics;
pub mod pagination;
pub mod providers;
pub mod ratelimit;
pub mod referrers;
pub mod stored;
pub mod transport;
pub mod vendor;

pub use auth::{Challenge, CredentialProvider, Credentials, ProvidedCredentials, Scope};
pub use client::{AuthScheme, PingOutcome, RegistryClient};
pub use config::{RegistryConfig, RegistryUrl, RetryPolicy};
pub use error::{Cap, Error, ErrorKind, Result};
pub use guard::NetworkGuard;
pub use inspect::{
    CachedContent, ImageInspection, InspectOptions, ManifestCache, MemoryCache, NoCache,
};
pub use manifest::{
    Descriptor, FetchedManifest, ImageConfig, ImageIndex, ImageManifest, Manifest, ManifestHead,
    Reference,
};
pub use pagination::Listing;
pub use providers::{
    AcrConfig, AcrProvider, EcrConfig, EcrProvider, ExchangeTimeouts, GcpServiceAccountConfig,
    GcpServiceAccountProvider, GitHubAppConfig, GitHubAppProvider,
};
pub use ratelimit::RateLimit;
pub use referrers::{FoundBy, ReferrerDescriptor, Referrers, ReferrersOptions, referrer_kind};
pub use stored::{ProviderEndpoints, StoredCredentials};
pub use transport::RequestStats;
