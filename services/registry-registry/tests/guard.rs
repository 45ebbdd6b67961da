//! The network guard as a deployment gets it: with no `IMAGELIB_ALLOW_NETWORKS`, a registry
//! on loopback or a private network is refused at validation with `blocked`, even when a
//! real registry answers there, and `IMAGELIB_DENY_NETWORKS` only adds to the defaults.

mod common;

use common::Env;
use imagelib_testkit::proxy::{Action, FaultProxy};
use imagelib_testkit::registry::TestRegistry;
use serde_json::json;

/// A real registry behind a recording proxy, so a test can tell whether it was reached.
async fn recorded_registry() -> (TestRegistry, FaultProxy) {
    let registry = TestRegistry::start().await.unwrap();
    let upstream = format!("127.0.0.1:{}", registry.port()).parse().unwrap();
    let front = FaultProxy::start(Some(upstream), |_, _| Action::Forward).await;
    (registry, front)
}

#[tokio::test]
async fn private_and_loopback_registries_are_refused_by_default() {
    let (_registry, front) = recorded_registry().await;
    let port = front.addr.port();
    let env = Env::new();
    let mut config = env.config();
    config.common.allow_networks = None;
    config.common.deny_networks = Some("192.0.2.0/24".into());
    let svc = env.start_with(config).await;

    for (url, network) in [
        (format!("127.0.0.1:{port}"), "127.0.0.0/8"),
        (format!("localhost:{port}"), "127.0.0.0/8"),
        (format!("[::ffff:127.0.0.1]:{port}"), "127.0.0.0/8"),
        (format!("[64:ff9b::7f00:1]:{port}"), "127.0.0.0/8"),
        ("10.1.2.3:5000".to_owned(), "10.0.0.0/8"),
        ("100.64.0.1".to_owned(), "100.64.0.0/10"),
        ("192.0.2.10".to_owned(), "192.0.2.0/24"),
    ] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "x", "url": url, "registry_type": "generic", "insecure": true}),
            )
            .await;
        assert_eq!(s, 422, "{url}: {p}");
        assert_eq!(p["code"], "blocked", "{url}: {p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(network), "{url}: names {network}: {detail}");
        assert!(detail.contains("IMAGELIB_ALLOW_NETWORKS"), "{detail}");
    }
    assert!(env.event_types().await.is_empty(), "nothing registered");
    assert!(front.seen().is_empty(), "the registry saw nothing");
}

/// The same registry, allowed explicitly, validates.
#[tokio::test]
async fn an_allowed_network_is_reachable() {
    let (_registry, front) = recorded_registry().await;
    let env = Env::new();
    let mut config = env.config();
    config.common.allow_networks = Some("127.0.0.1/32".into());
    let svc = env.start_with(config).await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "x", "url": format!("localhost:{}", front.addr.port()), "registry_type": "generic", "insecure": true}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["validation"]["ok"], true, "{r}");
    assert!(!front.seen().is_empty(), "the registry was asked");
}
