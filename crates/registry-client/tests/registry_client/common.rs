use std::time::Duration;

use imagelib_events::{Digest, RepositoryName, Tag};
use imagelib_testkit::registry::TestRegistry;
use registry_client::{Credentials, NetworkGuard, RegistryClient, RegistryConfig};

use crate::proxy::FaultProxy;

/// A config with short backoffs so retry tests run fast, and loopback (where the test
/// registries and proxies listen) allowed through the network guard.
pub fn config(host: &str, insecure: bool) -> RegistryConfig {
    imagelib_testkit::init_tracing();
    let mut c = RegistryConfig::new(host, insecure).expect("test registry URL");
    c.guard = loopback_allowed();
    c.retry.base_delay = Duration::from_millis(20);
    c.retry.max_delay = Duration::from_millis(200);
    c.retry.max_retry_after = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(5);
    c.request_timeout = Duration::from_secs(10);
    c
}

pub fn client(registry: &TestRegistry, credentials: Credentials) -> RegistryClient {
    let mut c = config(&registry.host(), !registry.is_tls());
    c.ca_pem = registry.ca_pem().map(str::to_owned);
    RegistryClient::new(c, credentials).expect("client")
}

pub fn client_via(proxy: &FaultProxy, credentials: Credentials) -> RegistryClient {
    RegistryClient::new(config(&proxy.host(), true), credentials).expect("client")
}

pub fn basic(registry: &TestRegistry) -> Credentials {
    let (u, p) = registry.credentials().expect("a basic-auth registry");
    Credentials::basic(u, p)
}

pub fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repository name")
}

pub fn tag(s: &str) -> Tag {
    s.parse().expect("tag")
}

pub fn digest(s: &str) -> Digest {
    s.parse().expect("digest")
}

/// The upstream address of a test registry, for a proxy.
pub fn upstream(registry: &TestRegistry) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", registry.port())
        .parse()
        .expect("address")
}

/// The default guard with loopback allowed, as `IMAGELIB_ALLOW_NETWORKS` would.
pub fn loopback_allowed() -> NetworkGuard {
    NetworkGuard::from_lists(None, Some(imagelib_testkit::LOOPBACK_NETWORKS))
        .expect("loopback networks parse")
}
