//! Docker Hub's pull budget, against the fake Hub (imagelib-testkit) in front of a real
//! registry: the rate-limit headers are read, HEADs cost nothing, and manifest GETs are
//! paced, then held back, before the budget runs out — the registry never has to answer
//! `429`.

use std::time::{Duration, Instant};

use imagelib_testkit::dockerhub::FakeHub;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::{Credentials, ErrorKind, MemoryCache, Reference, RegistryClient};

use crate::common::{config, repo, tag};

fn client(hub: &FakeHub, reserve_percent: u8) -> RegistryClient {
    let mut c = config(&hub.host(), true);
    c.rate_limit_reserve_percent = reserve_percent;
    RegistryClient::new(c, Credentials::Anonymous).expect("client")
}

#[tokio::test]
async fn hubs_rate_limit_headers_are_read_and_heads_are_free() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("library/postgres", "16", &ImageSpec::linux_amd64())
        .await?;
    let hub = FakeHub::start(&registry, 100, 21600).await;
    let client = client(&hub, 20);
    assert_eq!(client.rate_limit(), None, "nothing said yet");

    let r = repo("library/postgres");
    let reference = Reference::Tag(tag("16"));
    for _ in 0..3 {
        client.head_manifest(&r, &reference).await?;
    }
    assert_eq!(hub.counted_pulls(), 0, "HEADs are not counted");
    let rl = client.rate_limit().expect("announced on every answer");
    assert_eq!((rl.limit, rl.remaining), (100, 100));
    assert_eq!(rl.window, Some(Duration::from_secs(21600)));

    let image = client
        .inspect(&r, &tag("16"), &MemoryCache::default(), &Default::default())
        .await?;
    assert!(!image.platforms.is_empty());
    // The manifest by digest, and the referrers tag schema's fallback (a manifest GET
    // too, as Hub counts it); the config blob and the referrers API are free.
    let gets = hub
        .seen()
        .iter()
        .filter(|q| q.method == "GET" && q.path().contains("/manifests/"))
        .count() as u64;
    assert!(gets >= 1);
    assert_eq!(hub.counted_pulls(), gets);
    let rl = client.rate_limit().expect("still known");
    assert_eq!(rl.remaining, 100 - gets);
    assert_eq!(rl.remaining, hub.remaining());
    Ok(())
}

#[tokio::test]
async fn a_low_budget_paces_manifest_gets_and_an_empty_one_sends_none() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("acme/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    // 10 pulls per 5 s: one every 500 ms once the budget is low.
    let hub = FakeHub::start(&registry, 10, 5).await;
    hub.set_remaining(2);
    let client = client(&hub, 20);
    let r = repo("acme/app");
    let reference = Reference::Tag(tag("v1"));
    client.head_manifest(&r, &reference).await?;
    assert_eq!(client.rate_limit().map(|rl| rl.remaining), Some(2));

    let started = Instant::now();
    client.get_manifest(&r, &reference).await?;
    client.get_manifest(&r, &reference).await?;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "paced: {took:?}");
    assert_eq!(hub.counted_pulls(), 2);
    assert_eq!(hub.remaining(), 0);

    // Nothing left: the GET is held back, not sent, and no 429 is ever met.
    let requests = client.requests();
    let err = client.get_manifest(&r, &reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert_eq!(client.requests(), requests, "not sent");
    assert_eq!(hub.refused_pulls(), 0);
    assert_eq!(client.rate_limited(), 0, "no 429 received");
    // HEADs still go (Hub does not count them).
    client.head_manifest(&r, &reference).await?;
    Ok(())
}

#[tokio::test]
async fn a_budget_far_from_its_reserve_is_not_paced() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("acme/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    // One pull per hour on average, but plenty left: no waiting.
    let hub = FakeHub::start(&registry, 100, 360_000).await;
    let client = client(&hub, 20);
    let r = repo("acme/app");
    let reference = Reference::Tag(tag("v1"));
    let started = Instant::now();
    for _ in 0..5 {
        client.get_manifest(&r, &reference).await?;
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(hub.counted_pulls(), 5);
    assert_eq!(client.rate_limit().map(|rl| rl.remaining), Some(95));
    Ok(())
}

#[tokio::test]
async fn when_hub_refuses_anyway_the_429_stops_further_gets() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("acme/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    let hub = FakeHub::start(&registry, 100, 21600).await;
    // Another client (a kubelet on the same address) spent the budget behind our back.
    let client = client(&hub, 0);
    let r = repo("acme/app");
    let reference = Reference::Tag(tag("v1"));
    client.get_manifest(&r, &reference).await?;
    hub.set_remaining(0);
    let err = client.get_manifest(&r, &reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert!(hub.refused_pulls() >= 1);
    assert_eq!(client.rate_limit().map(|rl| rl.remaining), Some(0));
    let refused = hub.refused_pulls();
    let err = client.get_manifest(&r, &reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert_eq!(hub.refused_pulls(), refused, "held back, not sent");
    Ok(())
}

mod listing {
    //! A namespace's repositories through the Hub API (Hub has no `_catalog`).

    use imagelib_testkit::dockerhub::FakeHub;
    use imagelib_testkit::registry::TestRegistry;
    use registry_client::vendor::dockerhub::namespace_repositories;
    use registry_client::{Credentials, ErrorKind};

    use crate::common::{config, repo};

    async fn hub(names: &[&str]) -> anyhow::Result<(TestRegistry, FakeHub)> {
        let registry = TestRegistry::start().await?;
        let hub = FakeHub::start(&registry, 100, 21600).await;
        hub.namespace("acme", names);
        Ok((registry, hub))
    }

    #[tokio::test]
    async fn pages_are_followed_by_next_on_the_same_host() -> anyhow::Result<()> {
        let (_r, hub) = hub(&["a", "b", "c", "d", "e", "Not Valid"]).await?;
        let mut c = config(&hub.host(), true);
        c.page_size = 2;
        let api = hub.api_url().parse()?;
        let listing = namespace_repositories(&c, &api, "acme", None).await?;
        assert!(listing.complete, "{:?}", listing.error);
        assert_eq!(listing.pages, 3);
        assert_eq!(
            listing.items,
            ["acme/a", "acme/b", "acme/c", "acme/d", "acme/e"].map(repo)
        );
        assert_eq!(listing.skipped, ["Not Valid"]);
        let pages: Vec<String> = hub
            .seen()
            .iter()
            .filter(|q| q.path() == "/v2/namespaces/acme/repositories")
            .map(|q| q.target.clone())
            .collect();
        assert_eq!(pages.len(), 3, "{pages:?}");
        assert!(pages.iter().all(|p| p.contains("page_size=2")), "{pages:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_next_on_another_host_is_not_followed() -> anyhow::Result<()> {
        let (_r, hub) = hub(&["a", "b", "c"]).await?;
        let (_r2, elsewhere) = hub_elsewhere().await?;
        hub.next_on(&format!("http://{}", elsewhere.host()));
        let mut c = config(&hub.host(), true);
        c.page_size = 2;
        let listing = namespace_repositories(&c, &hub.api_url().parse()?, "acme", None).await?;
        assert!(!listing.complete);
        assert_eq!(listing.items, ["acme/a", "acme/b"].map(repo));
        let why = listing.error.map(|e| e.to_string()).unwrap_or_default();
        assert!(why.contains("leaves the Hub API"), "{why}");
        assert!(
            elsewhere.seen().is_empty(),
            "nothing sent to the other host"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_login_lists_private_repositories_and_its_token_stays_on_the_api()
    -> anyhow::Result<()> {
        let (_r, hub) = hub(&["a"]).await?;
        hub.user("acme-bot", "dckr_pat_s3cret");
        hub.private("acme", &["secret"]);
        let c = config(&hub.host(), true);
        let api = hub.api_url().parse()?;
        let anonymous = namespace_repositories(&c, &api, "acme", None).await?;
        assert_eq!(anonymous.items, [repo("acme/a")]);
        let creds = Credentials::basic("acme-bot", "dckr_pat_s3cret");
        let listing = namespace_repositories(&c, &api, "acme", Some(&creds)).await?;
        assert_eq!(listing.items, ["acme/a", "acme/secret"].map(repo));
        let seen = hub.seen();
        let login: Vec<_> = seen
            .iter()
            .filter(|q| q.path() == "/v2/users/login")
            .collect();
        assert_eq!(login.len(), 1);
        assert_eq!(login[0].method, "POST");
        assert!(login[0].header("authorization").is_none());
        // The password is in the login body only, never in a header.
        for q in &seen {
            for (_, v) in &q.headers {
                assert!(!v.contains("dckr_pat_s3cret"), "{} {}", q.method, q.target);
            }
        }

        // A `next` elsewhere is not followed: the session token goes nowhere else.
        let (_r2, elsewhere) = hub_elsewhere().await?;
        hub.next_on(&format!("http://{}", elsewhere.host()));
        let mut c = c.clone();
        c.page_size = 1;
        let listing = namespace_repositories(&c, &api, "acme", Some(&creds)).await?;
        assert!(!listing.complete);
        assert!(elsewhere.seen().is_empty());

        let wrong = Credentials::basic("acme-bot", "nope");
        let err = namespace_repositories(&c, &api, "acme", Some(&wrong))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
        assert!(!err.to_string().contains("nope"), "{err}");
        Ok(())
    }

    async fn hub_elsewhere() -> anyhow::Result<(TestRegistry, FakeHub)> {
        let registry = TestRegistry::start().await?;
        let hub = FakeHub::start(&registry, 100, 21600).await;
        hub.namespace("acme", &["z"]);
        Ok((registry, hub))
    }

    #[tokio::test]
    async fn an_unknown_namespace_is_not_found_and_a_bad_one_is_refused() -> anyhow::Result<()> {
        let (_r, hub) = hub(&["a"]).await?;
        let c = config(&hub.host(), true);
        let api = hub.api_url().parse()?;
        let err = namespace_repositories(&c, &api, "nobody", None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        for bad in ["a", "../x", "ACME", "a/b"] {
            let err = namespace_repositories(&c, &api, bad, None)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
        }
        Ok(())
    }

    /// The Hub API's own allowance (smaller for anonymous callers): a listing reads its
    /// `X-RateLimit-Remaining` and stops, incomplete and rate limited, instead of asking
    /// for a page Hub would refuse; a logged-in listing has the larger allowance.
    #[tokio::test]
    async fn the_api_allowance_stops_a_listing_before_hub_refuses_it() -> anyhow::Result<()> {
        let names: Vec<String> = (0..7).map(|i| format!("r{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_r, hub) = hub(&names).await?;
        hub.api_limit(2, 10);
        hub.user("acme-bot", "dckr_pat_s3cret");
        let mut c = config(&hub.host(), true);
        c.page_size = 2;
        let api = hub.api_url().parse()?;

        let anonymous = namespace_repositories(&c, &api, "acme", None).await?;
        assert!(!anonymous.complete);
        assert_eq!(anonymous.pages, 2);
        assert_eq!(anonymous.items.len(), 4);
        let err = anonymous.error.expect("why it stopped");
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
        assert!(
            err.retry_after().is_some_and(|d| d.as_secs() <= 60),
            "{err}"
        );
        assert_eq!(hub.api_refused(), 0, "no call was refused: none was sent");

        let login = Credentials::Basic {
            username: "acme-bot".into(),
            password: "dckr_pat_s3cret".to_owned().into(),
        };
        let logged_in = namespace_repositories(&c, &api, "acme", Some(&login)).await?;
        assert!(logged_in.complete, "{:?}", logged_in.error);
        assert_eq!(logged_in.items.len(), 7);

        // Spent by someone else: the first page is refused, with Hub's 429.
        let again = namespace_repositories(&c, &api, "acme", None).await;
        let err = again.expect_err("nothing left");
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
        assert_eq!(hub.api_refused(), 1);
        Ok(())
    }
}
