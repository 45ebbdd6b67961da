//! Reaching a registry: TLS, DNS, connections, things that are not registries, and the
//! network guard.

use std::time::{Duration, Instant};

use imagelib_events::model::ValidationReason;
use imagelib_testkit::registry::{ImageSpec, TestRegistry, free_port};
use registry_client::{Credentials, ErrorKind, NetworkGuard, RegistryClient};

use crate::common::{client, config, repo, upstream};
use crate::proxy::{Action, FaultProxy, Response};
use imagelib_testkit::forward_proxy::ForwardProxy;

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

/// What the guard denies by default, as IP literals: refused before any request, with an
/// error that names the network and the variable that allows it.
#[tokio::test]
async fn private_and_special_addresses_are_denied_by_default() -> anyhow::Result<()> {
    for (host, network) in [
        ("127.0.0.1:5000", "127.0.0.0/8"),
        ("[::1]:5000", "::1/128"),
        ("10.0.0.1", "10.0.0.0/8"),
        ("172.20.1.1:5000", "172.16.0.0/12"),
        ("192.168.1.10:5000", "192.168.0.0/16"),
        ("100.64.0.1", "100.64.0.0/10"),
        ("0.0.0.0:5000", "0.0.0.0/8"),
        ("[fd12::1]:5000", "fc00::/7"),
        ("[::ffff:127.0.0.1]:5000", "127.0.0.0/8"),
        ("[64:ff9b::7f00:1]:5000", "127.0.0.0/8"),
        ("[64:ff9b::808:808]:5000", "64:ff9b::/96"),
        ("[::ffff:169.254.169.254]", "169.254.169.254/32"),
    ] {
        let mut cfg = config(host, true);
        cfg.guard = NetworkGuard::default();
        let client = RegistryClient::new(cfg, Credentials::basic("u", "canary"))?;
        let err = client.ping().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Blocked, "{host}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(network), "{host}: names {network}: {msg}");
        assert!(msg.contains("IMAGELIB_ALLOW_NETWORKS"), "{msg}");
        assert!(!msg.contains("canary"), "{msg}");
        assert_eq!(client.requests(), 0, "{host}: no request was sent");
    }
    Ok(())
}

/// `localhost` is refused by default: the check is on what the name resolves to, at
/// connect time. The allow list re-allows; a deny list adds to the defaults.
#[tokio::test]
async fn loopback_is_denied_by_default_and_the_allow_list_wins() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let host = format!("localhost:{}", registry.port());

    let mut cfg = config(&host, true);
    cfg.guard = NetworkGuard::default();
    let err = RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    assert!(err.to_string().contains("localhost"), "{err}");
    assert!(err.to_string().contains("127.0.0.0/8"), "{err}");

    let mut cfg = config(&host, true);
    cfg.guard = NetworkGuard::from_lists(None, Some("127.0.0.1/32"))?;
    RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await?;

    // IMAGELIB_DENY_NETWORKS adds: the defaults still deny loopback
    let mut cfg = config(&registry.host(), true);
    cfg.guard = NetworkGuard::from_lists(Some("192.0.2.0/24"), None)?;
    let err = RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "an IP literal: {err}");

    // … and an allowed network stays allowed even when also denied
    let mut cfg = config(&registry.host(), true);
    cfg.guard = NetworkGuard::from_lists(Some("127.0.0.1/32"), Some("127.0.0.0/8"))?;
    RegistryClient::new(cfg, Credentials::Anonymous)?
        .ping()
        .await?;
    Ok(())
}

/// With a proxy the resolver only sees the proxy's name, so the transport resolves and
/// checks each target itself: a denied one never reaches the proxy, not even as a
/// connection. The proxy's own address (127.0.0.2, denied by default and not allowed
/// here) is the operator's choice and is not checked.
#[tokio::test]
async fn a_proxy_does_not_bypass_the_guard() -> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .tls()
        .htpasswd("scanner", "canary-proxy-password")
        .start()
        .await?;
    registry
        .push_image("behind/proxy", "v1", &ImageSpec::linux_amd64())
        .await?;
    let proxy = ForwardProxy::start("127.0.0.2".parse()?).await?;
    let host = format!("localhost:{}", registry.port());
    let credentials = Credentials::basic("scanner", "canary-proxy-password");
    let proxied = |guard: NetworkGuard| {
        let mut cfg = config(&host, false);
        cfg.ca_pem = registry.ca_pem().map(str::to_owned);
        cfg.proxy = Some(proxy.url());
        cfg.guard = guard;
        cfg
    };

    let client = RegistryClient::new(proxied(NetworkGuard::default()), credentials.clone())?;
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    assert!(err.to_string().contains("127.0.0.0/8"), "{err}");
    assert_eq!(client.requests(), 0);
    assert_eq!(proxy.connections(), 0, "the proxy saw nothing");

    let client = RegistryClient::new(
        proxied(NetworkGuard::from_lists(None, Some("127.0.0.1/32"))?),
        credentials,
    )?;
    client.ping().await?;
    assert_eq!(client.tags(&repo("behind/proxy")).await?.items.len(), 1);
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    for line in &seen {
        assert!(line.starts_with(&format!("CONNECT {host} ")), "{line}");
    }
    Ok(())
}

/// A registry's own proxy (`guard_proxy`): unlike the operator's, its address passes the
/// guard, before each request and when it is resolved; `no_proxy` hosts go direct.
#[tokio::test]
async fn a_registrys_own_proxy_is_guarded_and_no_proxy_goes_direct() -> anyhow::Result<()> {
    let registry = TestRegistry::builder().tls().start().await?;
    registry
        .push_image("own/proxy", "v1", &ImageSpec::linux_amd64())
        .await?;
    let proxy = ForwardProxy::start("127.0.0.2".parse()?).await?;
    let host = format!("localhost:{}", registry.port());
    let own = |proxy_url: String, no_proxy: &[&str], guard: NetworkGuard| {
        let mut cfg = config(&host, false);
        cfg.ca_pem = registry.ca_pem().map(str::to_owned);
        cfg.proxy = Some(proxy_url);
        cfg.no_proxy = no_proxy.iter().map(|s| s.to_string()).collect();
        cfg.guard_proxy = true;
        cfg.guard = guard;
        RegistryClient::new(cfg, Credentials::Anonymous)
    };
    let registry_only = || NetworkGuard::from_lists(None, Some("127.0.0.1/32"));

    // The registry is allowed, the proxy's address is not: nothing is sent.
    let err = own(proxy.url(), &[], registry_only()?)?
        .ping()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    assert_eq!(proxy.connections(), 0);
    // By name too: `localhost` resolves into loopback, which only 127.0.0.1 is allowed of.
    let by_name = format!("http://localhost:{}", proxy.addr.port());
    let err = own(
        by_name,
        &[],
        NetworkGuard::from_lists(None, Some("127.0.0.2/32"))?,
    )?
    .ping()
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Blocked | ErrorKind::Dns),
        "{err}"
    );
    assert_eq!(proxy.connections(), 0);
    // The metadata address is never a proxy, whatever the allow list says.
    let err = own(
        "http://169.254.169.254:80".into(),
        &[],
        NetworkGuard::from_lists(None, Some("0.0.0.0/0"))?,
    )?
    .ping()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");

    // Allowed: through the proxy, in a tunnel.
    let allowed = || NetworkGuard::from_lists(None, Some("127.0.0.1/32,127.0.0.2/32"));
    let client = own(proxy.url(), &[".corp.internal"], allowed()?)?;
    assert_eq!(client.tags(&repo("own/proxy")).await?.items.len(), 1);
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    for line in &seen {
        assert!(line.starts_with(&format!("CONNECT {host} ")), "{line}");
    }
    // `no_proxy` names the registry's host: direct.
    let before = proxy.connections();
    let client = own(proxy.url(), &["localhost"], allowed()?)?;
    assert_eq!(client.tags(&repo("own/proxy")).await?.items.len(), 1);
    assert_eq!(proxy.connections(), before, "the proxy saw nothing");
    // A proxy URL with credentials is not one.
    assert!(own("http://u:p@127.0.0.2:3128".into(), &[], allowed()?).is_err());
    Ok(())
}

/// The same through `HTTPS_PROXY`, which reqwest reads from the environment. The
/// environment is process-wide, so the client runs in a child process (this test binary,
/// this test) while the registry and the proxy stay here and record what reached them.
#[tokio::test]
async fn the_proxy_environment_does_not_bypass_the_guard() -> anyhow::Result<()> {
    const TEST: &str = "network::the_proxy_environment_does_not_bypass_the_guard";
    if let Ok(host) = std::env::var("IMAGELIB_TEST_PROXIED_REGISTRY") {
        let ca = std::env::var("IMAGELIB_TEST_PROXIED_CA")?;
        let proxied = |guard: NetworkGuard| {
            let mut cfg = config(&host, false);
            cfg.ca_pem = Some(ca.clone());
            cfg.guard = guard;
            RegistryClient::new(cfg, Credentials::Anonymous)
        };
        let err = proxied(NetworkGuard::default())?.ping().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Blocked, "{err}");
        proxied(NetworkGuard::from_lists(None, Some("127.0.0.1/32"))?)?
            .ping()
            .await?;
        return Ok(());
    }

    let registry = TestRegistry::builder().tls().start().await?;
    let proxy = ForwardProxy::start("127.0.0.2".parse()?).await?;
    let host = format!("localhost:{}", registry.port());
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args([TEST, "--exact", "--nocapture"])
        .env("HTTPS_PROXY", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("IMAGELIB_TEST_PROXIED_REGISTRY", &host)
        .env(
            "IMAGELIB_TEST_PROXIED_CA",
            registry.ca_pem().unwrap_or_default(),
        )
        .output()
        .await?;
    assert!(
        child.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let seen = proxy.seen();
    assert!(
        !seen.is_empty(),
        "the allowed request went through the proxy"
    );
    for line in &seen {
        assert!(line.starts_with(&format!("CONNECT {host} ")), "{line}");
    }
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
