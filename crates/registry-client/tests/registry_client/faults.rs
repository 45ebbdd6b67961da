//! A real registry behind the fault-injecting proxy: rate limits, 5xx bursts, stalls,
//! broken bodies, pagination loops, redirects and HEAD refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use imagelib_testkit::registry::{ImageSpec, PushedManifest, TestRegistry};
use registry_client::{Credentials, ErrorKind, Reference, RegistryClient};

use crate::common::{basic, client_via, config, digest, repo, tag, upstream};
use crate::proxy::{Action, FaultProxy, Request, Response};

async fn registry_with_image() -> anyhow::Result<(TestRegistry, PushedManifest)> {
    let registry = TestRegistry::start().await?;
    let image = registry
        .push_image("app", "v1", &ImageSpec::linux_amd64().label("tier", "gold"))
        .await?;
    Ok((registry, image))
}

/// Answers `response` to the first `times` requests matching `path_suffix`, then forwards.
async fn fail_first(
    registry: &TestRegistry,
    path_suffix: &'static str,
    times: usize,
    response: impl Fn() -> Response + Send + Sync + 'static,
) -> FaultProxy {
    let hits = AtomicUsize::new(0);
    FaultProxy::start(Some(upstream(registry)), move |req: &Request, _| {
        if req.path().ends_with(path_suffix) && hits.fetch_add(1, Ordering::SeqCst) < times {
            Action::Respond(response())
        } else {
            Action::Forward
        }
    })
    .await
}

#[tokio::test]
async fn retry_after_in_seconds_is_waited_for() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = fail_first(&registry, "/tags/list", 1, || {
        Response::new(429, &[("Retry-After", "1")], "slow down")
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let started = Instant::now();
    assert_eq!(client.tags(&repo("app")).await?.items, [tag("v1")]);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.rate_limited(), 1);
    assert_eq!(client.requests(), 2);
    Ok(())
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_for() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = fail_first(&registry, "/tags/list", 1, || {
        let at = SystemTime::now() + Duration::from_secs(2);
        Response::new(429, &[("Retry-After", &httpdate::fmt_http_date(at))], "")
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let started = Instant::now();
    assert_eq!(client.tags(&repo("app")).await?.items, [tag("v1")]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(client.rate_limited(), 1);
    Ok(())
}

#[tokio::test]
async fn a_long_retry_after_is_handed_back_to_the_caller() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    for value in [
        "120",
        &httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600)),
    ] {
        let value = value.to_owned();
        let proxy = fail_first(&registry, "/tags/list", 100, move || {
            Response::new(429, &[("Retry-After", &value)], "")
        })
        .await;
        let client = client_via(&proxy, Credentials::Anonymous);
        let started = Instant::now();
        let err = client.tags(&repo("app")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
        let after = err.retry_after().expect("the wait is reported");
        assert!(after >= Duration::from_secs(110), "{after:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no waiting beyond the cap"
        );
        assert_eq!(client.requests(), 1);
        assert_eq!(
            err.validation_reason(),
            Some(imagelib_events::model::ValidationReason::RateLimited)
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_5xx_burst_is_retried_with_backoff() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = fail_first(&registry, "/tags/list", 2, || {
        Response::new(503, &[], "busy")
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    assert_eq!(client.tags(&repo("app")).await?.items, [tag("v1")]);
    assert_eq!(client.stats().retries, 2);
    assert_eq!(proxy.seen().len(), 3);

    let proxy = fail_first(&registry, "/tags/list", 100, || {
        Response::new(502, &[], "down")
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let err = client.tags(&repo("app")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert_eq!(proxy.seen().len(), 4, "first attempt plus max_retries (3)");
    Ok(())
}

#[tokio::test]
async fn a_dropped_connection_is_retried() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let hits = AtomicUsize::new(0);
    let proxy = FaultProxy::start(Some(upstream(&registry)), move |_, _| {
        if hits.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::Drop
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    assert_eq!(client.tags(&repo("app")).await?.items, [tag("v1")]);
    assert_eq!(proxy.seen().len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_retried() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let hits = AtomicUsize::new(0);
    let proxy = FaultProxy::start(Some(upstream(&registry)), move |_, _| {
        if hits.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"name\":\"app\",\"ta"
                    .to_vec(),
            )
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    assert_eq!(client.tags(&repo("app")).await?.items, [tag("v1")]);
    assert_eq!(client.stats().retries, 1);
    Ok(())
}

#[tokio::test]
async fn a_stalled_registry_times_out() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |_, _| Action::Stall).await;
    let mut cfg = config(&proxy.host(), true);
    cfg.request_timeout = Duration::from_millis(500);
    let client = RegistryClient::new(cfg, Credentials::Anonymous)?;
    let started = Instant::now();
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.requests(), 1, "a timeout is not retried");
    Ok(())
}

#[tokio::test]
async fn truncated_and_garbage_json_are_protocol_errors() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if req.path().ends_with("/tags/list") {
            Action::Rewrite(Box::new(|mut r| {
                let keep = r.body.len() / 2;
                r.body.truncate(keep);
                r
            }))
        } else if req.path() == "/v2/_catalog" {
            Action::Rewrite(Box::new(|mut r| {
                r.body = b"\x00\x13garbage{{".to_vec();
                r
            }))
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let err = client.tags(&repo("app")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("JSON"), "{err}");
    let err = client.catalog().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    Ok(())
}

/// The first page arrives, the second is garbage: the listing says it is partial and keeps
/// what it saw.
#[tokio::test]
async fn a_broken_later_page_gives_a_partial_listing() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for name in ["a", "b", "c", "d", "e"] {
        registry.push_blob(name, b"x").await?;
    }
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if req.target.contains("last=") {
            Action::Rewrite(Box::new(|mut r| {
                r.body = br#"{"repositories":["c","#.to_vec();
                r
            }))
        } else {
            Action::Forward
        }
    })
    .await;
    let mut cfg = config(&proxy.host(), true);
    cfg.page_size = 2;
    let client = RegistryClient::new(cfg, Credentials::Anonymous)?;
    let listing = client.catalog().await?;
    assert!(!listing.complete);
    assert_eq!(listing.pages, 1);
    assert_eq!(listing.items, [repo("a"), repo("b")]);
    assert_eq!(
        listing.error.as_ref().map(|e| e.kind()),
        Some(ErrorKind::Protocol)
    );
    assert!(listing.into_complete().is_err());
    Ok(())
}

#[tokio::test]
async fn a_garbage_manifest_fails_its_digest() -> anyhow::Result<()> {
    let (registry, image) = registry_with_image().await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if req.path().contains("/manifests/") && req.method == "GET" {
            Action::Rewrite(Box::new(|mut r| {
                r.body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#.to_vec();
                r
            }))
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let by_digest = Reference::Digest(digest(&image.digest));
    let err = client
        .get_manifest(&repo("app"), &by_digest)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    let err = client
        .get_manifest(&repo("app"), &Reference::Tag(tag("v1")))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::DigestMismatch,
        "against Docker-Content-Digest: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_link_loop_is_cut() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if !req.path().ends_with("/tags/list") {
            return Action::Forward;
        }
        let next = if req.target.contains("page=b") {
            "</v2/app/tags/list?n=100&page=a>; rel=\"next\""
        } else {
            "</v2/app/tags/list?n=100&page=b>; rel=\"next\""
        };
        Action::Rewrite(Box::new(move |mut r| {
            r.set_header("Link", next);
            r
        }))
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let listing = client.tags(&repo("app")).await?;
    assert!(!listing.complete);
    let err = listing.error.as_ref().expect("the loop is reported");
    assert!(err.to_string().contains("loop"), "{err}");
    assert_eq!(listing.pages, 3, "first page, page b, page a, then a again");
    assert_eq!(proxy.seen().len(), 3);

    let mut cfg = config(&proxy.host(), true);
    cfg.max_pages = 2;
    let listing = RegistryClient::new(cfg, Credentials::Anonymous)?
        .tags(&repo("app"))
        .await?;
    assert!(!listing.complete);
    assert!(
        listing
            .error
            .unwrap()
            .to_string()
            .contains("more than 2 pages")
    );
    Ok(())
}

#[tokio::test]
async fn a_link_to_another_host_is_not_followed() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let elsewhere = FaultProxy::respond_always(Response::new(200, &[], r#"{"tags":["x"]}"#)).await;
    let link = format!(
        "<http://{}/v2/app/tags/list?n=100&last=v1>; rel=\"next\"",
        elsewhere.host()
    );
    let proxy = FaultProxy::start(Some(upstream(&registry)), move |req: &Request, _| {
        let link = link.clone();
        if req.path().ends_with("/tags/list") {
            Action::Rewrite(Box::new(move |mut r| {
                r.set_header("Link", &link);
                r
            }))
        } else {
            Action::Forward
        }
    })
    .await;
    let listing = client_via(&proxy, Credentials::Anonymous)
        .tags(&repo("app"))
        .await?;
    assert!(!listing.complete);
    assert_eq!(listing.items, [tag("v1")]);
    assert!(elsewhere.seen().is_empty());
    Ok(())
}

/// Blob downloads are often redirected to storage; the storage host must not get the
/// registry's credentials, while a redirect within the registry keeps them.
#[tokio::test]
async fn a_redirect_to_another_host_does_not_carry_credentials() -> anyhow::Result<()> {
    let registry = TestRegistry::builder()
        .htpasswd("scanner", "canary-pw")
        .start()
        .await?;
    let image = registry
        .push_image("app", "v1", &ImageSpec::linux_amd64().label("tier", "gold"))
        .await?;
    let config_digest = image.config_digest.clone();
    let (_, config_blob) = {
        let client = crate::common::client(&registry, basic(&registry));
        let config = client
            .get_blob(&repo("app"), &digest(&config_digest))
            .await?;
        ((), config)
    };
    let storage = FaultProxy::respond_always(Response::new(
        200,
        &[("Content-Type", "application/octet-stream")],
        config_blob.to_vec(),
    ))
    .await;
    let storage_url = format!(
        "http://localhost:{}/blobs/{config_digest}?sig=abc",
        storage.addr.port()
    );
    let manifest_path = format!("/v2/app/manifests/{}", image.digest);
    let proxy = FaultProxy::start(Some(upstream(&registry)), move |req: &Request, _| {
        if req.path().contains("/blobs/") {
            Action::Respond(Response::new(307, &[("Location", &storage_url)], ""))
        } else if req.path() == "/v2/app/manifests/v1" && req.method == "GET" {
            Action::Respond(Response::new(302, &[("Location", &manifest_path)], ""))
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client_via(&proxy, basic(&registry));
    client.ping().await?;

    let fetched = client
        .get_manifest(&repo("app"), &Reference::Tag(tag("v1")))
        .await?;
    assert_eq!(
        fetched.digest,
        digest(&image.digest),
        "same-host redirect kept the credentials"
    );
    let config = client
        .get_config(&repo("app"), &digest(&config_digest))
        .await?;
    assert_eq!(config.labels["tier"], "gold");

    let got = storage.seen();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].header("authorization").is_none(),
        "credentials leaked: {:?}",
        got[0].headers
    );
    let proxied = proxy.seen();
    let followed: Vec<_> = proxied
        .iter()
        .filter(|r| r.target == format!("/v2/app/manifests/{}", image.digest))
        .collect();
    assert_eq!(
        followed.len(),
        1,
        "the same-host redirect was followed once"
    );
    assert!(
        followed[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );
    Ok(())
}

#[tokio::test]
async fn head_refused_or_without_digest_falls_back_to_get() -> anyhow::Result<()> {
    let (registry, image) = registry_with_image().await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if req.method == "HEAD" {
            Action::Respond(Response::new(405, &[], ""))
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let head = client
        .head_manifest(&repo("app"), &Reference::Tag(tag("v1")))
        .await?;
    assert_eq!(head.digest, digest(&image.digest));
    let methods: Vec<String> = proxy.seen().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["HEAD", "GET"]);

    let proxy = FaultProxy::start(Some(upstream(&registry)), |req: &Request, _| {
        if req.method == "HEAD" {
            Action::Rewrite(Box::new(|mut r| {
                r.remove_header("Docker-Content-Digest");
                r
            }))
        } else {
            Action::Rewrite(Box::new(|mut r| {
                r.remove_header("Docker-Content-Digest");
                r
            }))
        }
    })
    .await;
    let client = client_via(&proxy, Credentials::Anonymous);
    let head = client
        .head_manifest(&repo("app"), &Reference::Tag(tag("v1")))
        .await?;
    assert_eq!(head.digest, digest(&image.digest), "sha256 of the body");
    assert_eq!(proxy.seen().len(), 2);
    Ok(())
}

#[tokio::test]
async fn concurrency_is_capped_per_registry() -> anyhow::Result<()> {
    let (registry, _) = registry_with_image().await?;
    let proxy = FaultProxy::start(Some(upstream(&registry)), |_, _| {
        Action::Delay(Duration::from_millis(150))
    })
    .await;
    let mut cfg = config(&proxy.host(), true);
    cfg.max_concurrency = 2;
    let client = Arc::new(RegistryClient::new(cfg, Credentials::Anonymous)?);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .head_manifest(&repo("app"), &Reference::Tag(tag("v1")))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    assert_eq!(proxy.seen().len(), 8);
    assert_eq!(proxy.max_in_flight(), 2);
    Ok(())
}
