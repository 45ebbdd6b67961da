//! A registry's own proxy (`proxy_url`, `no_proxy` of `registry.registered`): the scanner
//! builds that registry's client with it. HTTPS goes through a `CONNECT` tunnel, so the
//! proxy never reads the credentials; a host in `no_proxy`, and a registry without a
//! proxy, are reached directly; a proxy in a blocked network (the metadata address) is
//! refused before anything is sent.

use imagelib_events::model::RuleKind;
use imagelib_testkit::forward_proxy::ForwardProxy;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use serde_json::json;
use sync_scanner::scan::Outcome;

use crate::common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_is_scanned_through_its_own_proxy() -> anyhow::Result<()> {
    let secret = format!("canary-{}", imagelib_testkit::unique_id());
    let tls = TestRegistry::builder()
        .tls()
        .htpasswd("scanner", &secret)
        .start()
        .await?;
    tls.push_image("proxied/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let plain = TestRegistry::start().await?;
    plain
        .push_image("direct/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let proxy = ForwardProxy::start("127.0.0.2".parse()?).await?;
    let env = Env::new().await;
    let scanner = env.start().await;

    let host = format!("localhost:{}", tls.port());
    let proxied = env
        .register_with(
            &host,
            Some(json!({"kind": "basic", "username": "scanner", "password": secret})),
            |e| {
                e.insecure = false;
                e.ca_pem = tls.ca_pem().map(str::to_owned);
                e.proxy_url = Some(proxy.url());
                e.no_proxy = vec![".corp.internal".into()];
            },
        )
        .await;
    env.rule(proxied, "proxied", &["proxied/*"], RuleKind::Auto)
        .await;
    let (done, _) = env.scan_ok(proxied, None).await;
    assert_eq!(done.added, 1);
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "scanned through the proxy");
    for line in &seen {
        assert!(line.starts_with(&format!("CONNECT {host} ")), "{line}");
    }
    let received = String::from_utf8_lossy(&proxy.received()).into_owned();
    assert!(!received.contains(&secret), "the password in the clear");
    assert!(
        !received.to_ascii_lowercase().contains("authorization:"),
        "an Authorization header in the clear"
    );

    // A plain-HTTP registry through the proxy: absolute-form requests.
    let plain_host = format!("localhost:{}", plain.port());
    let through = env
        .register_with(&plain_host, None, |e| e.proxy_url = Some(proxy.url()))
        .await;
    env.rule(through, "direct", &["direct/*"], RuleKind::Auto)
        .await;
    let before = proxy.seen().len();
    let (done, _) = env.scan_ok(through, None).await;
    assert_eq!(done.added, 1);
    let new: Vec<String> = proxy.seen()[before..].to_vec();
    assert!(
        new.iter()
            .any(|l| l.starts_with(&format!("GET http://{plain_host}/v2/"))),
        "{new:?}"
    );

    // The same registry with its host in `no_proxy`, and without a proxy: direct.
    let connections = proxy.connections();
    let bypass = env
        .register_with(&plain_host, None, |e| {
            e.proxy_url = Some(proxy.url());
            e.no_proxy = vec!["localhost".into()];
        })
        .await;
    env.rule(bypass, "direct", &["direct/*"], RuleKind::Auto)
        .await;
    let (done, _) = env.scan_ok(bypass, None).await;
    assert_eq!(done.added, 1);
    let direct = env.register(&plain_host, None).await;
    env.rule(direct, "direct", &["direct/*"], RuleKind::Auto)
        .await;
    let (done, _) = env.scan_ok(direct, None).await;
    assert_eq!(done.added, 1);
    assert_eq!(proxy.connections(), connections, "the proxy saw neither");
    scanner.stop().await;
    Ok(())
}

/// A proxy registered straight into the log (past registry-registry's check) at the cloud
/// metadata address: the scan fails `blocked` at connect time and nothing reaches the
/// registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_in_a_blocked_network_is_refused_at_connect_time() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("guarded/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let front = crate::proxy::FaultProxy::start(Some(crate::upstream(&registry)), |_, _| {
        crate::proxy::Action::Forward
    })
    .await;
    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env
        .register_with(&format!("localhost:{}", front.addr.port()), None, |e| {
            e.proxy_url = Some("http://169.254.169.254:80".into());
        })
        .await;
    env.rule(id, "guarded", &["guarded/*"], RuleKind::Auto)
        .await;
    match env.scan(id, None).await.0 {
        Outcome::Failed(f) => {
            assert!(f.reason.contains("blocked"), "{}", f.reason);
            assert!(f.reason.contains("169.254.169.254"), "{}", f.reason);
        }
        other => panic!("the scan must fail blocked: {other:?}"),
    }
    assert!(front.seen().is_empty(), "the registry saw nothing");
    scanner.stop().await;
    Ok(())
}
