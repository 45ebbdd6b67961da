//! Reaching a registry: TLS, DNS, connections, things that are not registries, and the
//! network guard.

use std::time::{Duration, Instant};

use imagelib_events::model::ValidationReason;
use imagelib_testkit::registry::{ImageSpec, TestRegistry, free_port};
use registry_client::{Credentials, ErrorKind, NetworkGuard, RegistryClient};

use crate::common::{client, config, repo, upstream};
use crate::proxy::{Action, FaultProxy, Response};

#[tokio::test]
async fn tls_with_a_trusted_private_ca() -> anyhow::Result<()> {
    let registry = TestRegistry::builder().tls().start().await?;
    registry
        .push_image("secure", "v1", &ImageSpec::linux_amd64())
        .await?;
    assert!(registry.base_url().starts_with("https://"));
    let client = client(&registry, Credentials::Anonymous);
    client.ping().await?;
    assert_eq!(client.tags(&repo("secure")).await?.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn tls_without_the_ca_is_a_tls_failure() -> anyhow::Result<()> {
    let registry = TestRegistry::builder().tls().start().await?;
    let client = RegistryClient::new(config(&registry.host(), false), Credentials::Anonymous)?;
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert_eq!(err.validation_reason(), Some(ValidationReason::Tls));

    let mut wrong_ca = config(&registry.host(), false);
    wrong_ca.ca_pem = Some(
        TestRegistry::builder()
            .tls()
            .start()
            .await?
            .ca_pem()
            .unwrap()
            .to_owned(),
    );
    let err = RegistryClient::new(wrong_ca, Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "another CA does not do: {err}");

    let mut bad = config(&registry.host(), false);
    bad.ca_pem = Some("not a certificate".into());
    assert_eq!(
        RegistryClient::new(bad, Credentials::Anonymous)
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_host_is_a_dns_failure() -> anyhow::Result<()> {
    let client = RegistryClient::new(
        config("registry.imagelib.invalid", false),
        Credentials::Anonymous,
    )?;
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dns, "{err}");
    assert!(
        err.to_string().contains("registry.imagelib.invalid"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() -> anyhow::Result<()> {
    let port = free_port()?;
    let client = RegistryClient::new(
        config(&format!("127.0.0.1:{port}"), true),
        Credentials::Anonymous,
    )?;
    let started = Instant::now();
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert_eq!(client.requests(), 1, "a refused connection is not retried");
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn things_that_are_not_registries() -> anyhow::Result<()> {
    let html = FaultProxy::respond_always(Response::new(
        200,
        &[("Content-Type", "text/html")],
        "<!doctype html><html><body>Welcome to nginx!</body></html>",
    ))
    .await;
    let err = RegistryClient::new(config(&html.host(), true), Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotARegistry, "{err}");
    assert_eq!(
        err.validation_reason(),
        Some(ValidationReason::NotARegistry)
    );
    assert_eq!(html.seen()[0].target, "/v2/");

    let json_api = FaultProxy::respond_always(Response::new(
        200,
        &[("Content-Type", "application/json")],
        "{}",
    ))
    .await;
    let err = RegistryClient::new(config(&json_api.host(), true), Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotARegistry,
        "no Docker-Distribution-API-Version: {err}"
    );

    let login_page = FaultProxy::respond_always(Response::new(
        401,
        &[
            ("Content-Type", "text/html"),
            ("WWW-Authenticate", "Negotiate"),
        ],
        "<html>log in</html>",
    ))
    .await;
    let err = RegistryClient::new(config(&login_page.host(), true), Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotARegistry, "{err}");

    let not_found = FaultProxy::respond_always(Response::new(404, &[], "404 page not found")).await;
    let err = RegistryClient::new(config(&not_found.host(), true), Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotARegistry, "{err}");
    Ok(())
}

#[tokio::test]
async fn the_metadata_address_is_blocked_without_a_connection() -> anyhow::Result<()> {
    let started = Instant::now();
    for host in [
        "169.254.169.254",
        "169.254.169.254:80",
        "[fe80::1]:5000",
        "100.100.100.200",
    ] {
        let client = RegistryClient::new(config(host, true), Credentials::basic("u", "canary"))?;
        let err = client.ping().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Blocked, "{host}: {err}");
        assert!(err.to_string().starts_with("blocked"), "{err}");
        assert_eq!(err.validation_reason(), Some(ValidationReason::Blocked));
        assert_eq!(client.requests(), 0, "{host}: no request was sent");
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    Ok(())
}

/// `localhost` is refused when loopback is denied: the check is on what the name resolves
/// to, at connect time. The allow list overrides the deny list.
#[tokio::test]
async fn resolved_addresses_are_checked_and_the_allow_list_wins() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let host = format!("localhost:{}", registry.port());
    let deny_loopback = NetworkGuard::from_lists(Some("127.0.0.0/8,::1/128"), None)?;

    let mut cfg = config(&host, true);
    cfg.guard = deny_loopback.clone();
    let err = RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    assert!(err.to_string().contains("localhost"), "{err}");

    let mut cfg = config(&host, true);
    cfg.guard =
        NetworkGuard::from_lists(Some("127.0.0.0/8,::1/128"), Some("127.0.0.1/32,::1/128"))?;
    RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await?;

    let mut cfg = config(&registry.host(), true);
    cfg.guard = deny_loopback;
    let err = RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "an IP literal: {err}");
    Ok(())
}

#[tokio::test]
async fn a_redirect_to_the_metadata_address_is_blocked() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("r", "v1", &ImageSpec::linux_amd64())
        .await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req, _| {
        if req.path().ends_with("/tags/list") {
            Action::Respond(Response::new(
                302,
                &[("Location", "http://169.254.169.254/latest/meta-data/iam/")],
                "",
            ))
        } else {
            Action::Forward
        }
    })
    .await;
    let client = crate::common::client_via(&proxy, Credentials::Anonymous);
    let err = client.tags(&repo("r")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    assert_eq!(client.requests(), 1);
    Ok(())
}
