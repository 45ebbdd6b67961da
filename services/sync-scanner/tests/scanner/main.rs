//! sync-scanner against real parts: a real NATS JetStream, PostgreSQL and `docker-registry`
//! processes, with a fault-injecting proxy in front where the registry must misbehave.
//! Every test has its own stream, database and registries; events are asserted by reading
//! the stream back.

mod access;
mod common;
mod custody;
mod discovery;
mod dockerhub;
mod gcr;
mod ghcr;
mod guard;
mod harbor;
mod hostile;
mod integrity;
mod limits;
mod minimal;
mod registry_proxy;
use imagelib_testkit::proxy;
mod restart;
mod scale;
mod signed;
mod triggers;
mod trust;

/// The address of a test registry, for a proxy in front of it.
pub fn upstream(registry: &imagelib_testkit::registry::TestRegistry) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", registry.port())
        .parse()
        .expect("address")
}
