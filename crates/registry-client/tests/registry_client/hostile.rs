//! The client against the test kit's hostile registry: every cap holds, a `Retry-After`
//! pauses every request to the registry, a full page without `Link` is confirmed, and
//! exchanged credentials a registry refuses are exchanged again once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::{BoxFuture, join_all};
use imagelib_testkit::hostile::{Behaviour, HostileRegistry};
use registry_client::{
    Cap, CredentialProvider, Credentials, ErrorKind, MemoryCache, ProvidedCredentials, Reference,
    RegistryClient, RegistryConfig,
};

use crate::common::{config, repo, tag};
use crate::proxy::{Action, FaultProxy, Response};

async fn hostile(tags: &[&str]) -> HostileRegistry {
    let registry = HostileRegistry::start().await;
    registry.add_tags("h/app", tags.iter().copied());
    registry
}

fn client(host: &str, f: impl FnOnce(&mut RegistryConfig)) -> RegistryClient {
    let mut c = config(host, true);
    f(&mut c);
    RegistryClient::new(c, Credentials::Anonymous).expect("client")
}

/// While a `Retry-After` runs, no request at all reaches the registry, whichever
/// request was told.
#[tokio::test]
async fn a_retry_after_pauses_every_request_to_the_registry() -> anyhow::Result<()> {
    let tags: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
    let registry = HostileRegistry::start().await;
    registry.add_tags("h/app", tags.iter().cloned());
    let arrivals: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let log = arrivals.clone();
    let proxy = FaultProxy::start(Some(registry.host().parse()?), move |req, n| {
        log.lock()
            .unwrap()
            .push((Instant::now(), req.target.clone()));
        if n == 0 {
            Action::Respond(Response::new(429, &[("Retry-After", "2")], "slow down"))
        } else {
            Action::Forward
        }
    })
    .await;
    let client = client(&proxy.host(), |_| {});
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.tags(&repo("h/app")).await })
    };
    while proxy.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heads = join_all(tags.iter().map(|t| {
        let client = client.clone();
        let t = tag(t);
        async move {
            client
                .head_manifest(&repo("h/app"), &Reference::Tag(t))
                .await
        }
    }))
    .await;
    assert!(heads.iter().all(Result::is_ok), "{heads:?}");
    assert_eq!(first.await??.items.len(), 8);

    let arrivals = arrivals.lock().unwrap().clone();
    let (told, _) = arrivals[0];
    for (at, target) in &arrivals[1..] {
        let after = at.duration_since(told);
        assert!(
            after >= Duration::from_millis(1900),
            "{target} reached the registry {after:?} after the 429 said to wait 2 s"
        );
    }
    assert_eq!(arrivals.len(), 1 + 1 + 8);
    Ok(())
}

/// A `Retry-After` beyond the cap: every request fails `rate_limited` at once, and only
/// the first ever reaches the registry.
#[tokio::test]
async fn a_long_retry_after_fails_every_request_without_sending_it() -> anyhow::Result<()> {
    let registry = hostile(&["1.0"]).await;
    registry.set(Behaviour::RetryAfterAlways(3600));
    let client = client(&registry.host(), |_| {});
    let started = Instant::now();
    for _ in 0..5 {
        let err = client.tags(&repo("h/app")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
        assert!(err.retry_after().unwrap() > Duration::from_secs(3000));
    }
    let err = client
        .head_manifest(&repo("h/app"), &Reference::Tag(tag("1.0")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(registry.seen().len(), 1);
    Ok(())
}

#[tokio::test]
async fn endless_pages_stop_at_the_page_entry_and_byte_caps() -> anyhow::Result<()> {
    let registry = hostile(&["1.0"]).await;
    registry.set(Behaviour::EndlessPages);

    let listing = client(&registry.host(), |c| c.max_pages = 5)
        .tags(&repo("h/app"))
        .await?;
    assert!(!listing.complete);
    assert_eq!(listing.pages, 5);
    assert_eq!(listing.items.len(), 500);
    assert_eq!(listing.error.unwrap().cap(), Some(Cap::ListingPages));

    let listing = client(&registry.host(), |c| c.max_listing_items = 150)
        .tags(&repo("h/app"))
        .await?;
    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 150);
    assert_eq!(listing.error.unwrap().cap(), Some(Cap::ListingItems));

    let listing = client(&registry.host(), |c| c.max_listing_bytes = 3000)
        .tags(&repo("h/app"))
        .await?;
    assert!(!listing.complete);
    assert_eq!(listing.pages, 2, "a page is about 1.3 kB");
    let err = listing.error.unwrap();
    assert_eq!(err.cap(), Some(Cap::ListingBytes), "{err}");
    assert_eq!(err.kind(), ErrorKind::TooLarge);

    let err = client(&registry.host(), |c| c.max_page_bytes = 500)
        .tags(&repo("h/app"))
        .await
        .unwrap_err();
    assert_eq!(err.cap(), Some(Cap::ListingBytes), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_full_page_without_link_is_confirmed_with_last() -> anyhow::Result<()> {
    let tags: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let registry = HostileRegistry::start().await;
    registry.add_tags("h/app", tags.iter().cloned());
    registry.set(Behaviour::FullPageWithoutLink);
    let listing = client(&registry.host(), |c| c.page_size = 10)
        .tags(&repo("h/app"))
        .await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(listing.items.len(), 25);
    assert_eq!(listing.pages, 3);
    let targets: Vec<String> = registry.seen().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        [
            "/v2/h/app/tags/list?n=10",
            "/v2/h/app/tags/list?n=10&last=t09",
            "/v2/h/app/tags/list?n=10&last=t19",
        ]
    );

    // Exactly a multiple of n: the confirmation comes back empty, and that is the end.
    registry.remove_tag("h/app", "t20");
    registry.remove_tag("h/app", "t21");
    registry.remove_tag("h/app", "t22");
    registry.remove_tag("h/app", "t23");
    registry.remove_tag("h/app", "t24");
    let listing = client(&registry.host(), |c| c.page_size = 10)
        .tags(&repo("h/app"))
        .await?;
    assert!(listing.complete);
    assert_eq!((listing.items.len(), listing.pages), (20, 3));
    Ok(())
}

#[tokio::test]
async fn index_children_and_manifest_bytes_are_capped_sizes_saturate() -> anyhow::Result<()> {
    let registry = hostile(&["1.0"]).await;
    let cache = MemoryCache::default();
    let options = registry_client::InspectOptions {
        referrers: false,
        known_tags: None,
    };

    registry.set(Behaviour::IndexChildren(10_000));
    let err = client(&registry.host(), |_| {})
        .inspect(&repo("h/app"), &tag("1.0"), &cache, &options)
        .await
        .unwrap_err();
    assert_eq!(err.cap(), Some(Cap::IndexChildren), "{err}");
    let children = registry
        .seen()
        .iter()
        .filter(|r| r.method == "GET" && r.path().contains("/manifests/sha256:"))
        .count();
    assert_eq!(children, 1, "the index only, none of its 10,000 children");

    registry.set(Behaviour::IndexChildren(100));
    let err = client(&registry.host(), |c| c.max_manifest_bytes = 2000)
        .inspect(
            &repo("h/app"),
            &tag("1.0"),
            &MemoryCache::default(),
            &options,
        )
        .await
        .unwrap_err();
    assert_eq!(err.cap(), Some(Cap::ManifestBytes), "{err}");

    registry.set(Behaviour::OverflowingSizes);
    let inspection = client(&registry.host(), |_| {})
        .inspect(
            &repo("h/app"),
            &tag("1.0"),
            &MemoryCache::default(),
            &options,
        )
        .await?;
    assert_eq!(inspection.size, u64::MAX);
    assert!(
        inspection
            .platforms
            .iter()
            .all(|p| p.size == Some(u64::MAX))
    );

    registry.set(Behaviour::Honest);
    let err = client(&registry.host(), |c| c.max_blob_bytes = 10)
        .inspect(
            &repo("h/app"),
            &tag("1.0"),
            &MemoryCache::default(),
            &options,
        )
        .await
        .unwrap_err();
    assert_eq!(err.cap(), Some(Cap::ConfigBytes), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_huge_token_lifetime_is_clamped() -> anyhow::Result<()> {
    let registry = hostile(&["1.0", "1.1"]).await;
    registry.set(Behaviour::HugeTokenLifetime);
    let client = client(&registry.host(), |_| {});
    assert_eq!(client.tags(&repo("h/app")).await?.items.len(), 2);
    client
        .head_manifest(&repo("h/app"), &Reference::Tag(tag("1.0")))
        .await?;
    assert_eq!(
        client.stats().token_requests,
        1,
        "the token is kept, not refetched"
    );
    Ok(())
}

/// A provider handing out a new password on every exchange; the registry accepts only
/// `good_from` and later.
#[derive(Debug)]
struct Exchanging {
    exchanges: AtomicU32,
    invalidated: AtomicU32,
}

impl CredentialProvider for Exchanging {
    fn credentials(&self) -> BoxFuture<'_, Result<ProvidedCredentials, registry_client::Error>> {
        let n = self.exchanges.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(ProvidedCredentials {
                credentials: Credentials::basic("AWS", format!("token-{n}")),
                expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
            })
        })
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

fn basic_registry(accepted: &'static str) -> impl Fn(&crate::proxy::Request, usize) -> Action {
    use base64::Engine as _;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{accepted}"))
    );
    move |req, _| {
        if req.header("authorization") == Some(good.as_str()) {
            Action::Respond(Response::new(
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("Docker-Distribution-API-Version", "registry/2.0"),
                ],
                r#"{"repositories":["a"]}"#,
            ))
        } else {
            Action::Respond(Response::new(
                401,
                &[("WWW-Authenticate", "Basic realm=\"registry\"")],
                "",
            ))
        }
    }
}

#[tokio::test]
async fn refused_exchanged_credentials_are_exchanged_again_once() -> anyhow::Result<()> {
    // The first exchanged password was revoked early; the second works.
    let proxy = FaultProxy::start(None, basic_registry("token-2")).await;
    let provider = Arc::new(Exchanging {
        exchanges: AtomicU32::new(0),
        invalidated: AtomicU32::new(0),
    });
    let client = RegistryClient::with_provider(config(&proxy.host(), true), provider.clone())?;
    assert_eq!(client.catalog().await?.items, [repo("a")]);
    assert_eq!(provider.exchanges.load(Ordering::SeqCst), 2);
    assert_eq!(provider.invalidated.load(Ordering::SeqCst), 1);

    // Refused again after the new exchange: one retry only, then unauthorized.
    let proxy = FaultProxy::start(None, basic_registry("never")).await;
    let provider = Arc::new(Exchanging {
        exchanges: AtomicU32::new(0),
        invalidated: AtomicU32::new(0),
    });
    let client = RegistryClient::with_provider(config(&proxy.host(), true), provider.clone())?;
    let err = client.catalog().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(provider.exchanges.load(Ordering::SeqCst), 2);
    assert_eq!(
        proxy.seen().len(),
        3,
        "challenge, first password, second password"
    );

    // Static credentials are not retried: a second attempt could not differ.
    let proxy = FaultProxy::start(None, basic_registry("never")).await;
    let client = RegistryClient::new(
        config(&proxy.host(), true),
        Credentials::basic("AWS", "static"),
    )?;
    let err = client.catalog().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(proxy.seen().len(), 2);
    Ok(())
}
