//! GitHub Container Registry: an owner's packages through the (fake) GitHub REST API —
//! `Link` pagination on the API's origin only, org → user fallback (`/user/packages` for
//! the token's own user), PATs and installation tokens as a bearer token to the API only,
//! GitHub's JSON errors and rate limits — with a real registry behind `/v2/`.

use imagelib_testkit::github::FakeGitHub;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::vendor::ghcr::owner_packages;
use registry_client::{Credentials, ErrorKind, RegistryClient};

use crate::common::{config, repo};

const PAT: &str = "ghp_s3cretTokenValue";
const GHS: &str = "ghs_installationTokenValue";

async fn github() -> anyhow::Result<(TestRegistry, FakeGitHub)> {
    let registry = TestRegistry::start().await?;
    let gh = FakeGitHub::start(&registry).await;
    Ok((registry, gh))
}

#[tokio::test]
async fn an_orgs_packages_are_listed_across_link_pages() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.org(
        "acme",
        &[
            ("app", "public"),
            ("tools/builder", "public"),
            ("c", "public"),
            ("d", "internal"),
            ("e", "public"),
            ("Not Valid", "public"),
        ],
    );
    gh.token(PAT);
    let mut c = config(&gh.host(), true);
    c.page_size = 2;
    let api = gh.api_url().parse()?;
    let creds = Credentials::basic("octocat", PAT);
    let packages = owner_packages(&c, &api, "acme", Some(&creds)).await?;
    let listing = &packages.listing;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(listing.pages, 3);
    assert_eq!(
        listing.items,
        [
            "acme/app",
            "acme/tools/builder",
            "acme/c",
            "acme/d",
            "acme/e"
        ]
        .map(repo)
    );
    assert_eq!(listing.skipped, ["Not Valid"]);
    assert_eq!(
        packages.visibility.get(&repo("acme/d")).map(String::as_str),
        Some("internal")
    );
    let seen = gh.seen();
    let pages: Vec<_> = seen
        .iter()
        .filter(|q| q.path() == "/orgs/acme/packages")
        .collect();
    assert_eq!(pages.len(), 3);
    for q in &pages {
        assert!(q.target.contains("package_type=container"), "{}", q.target);
        assert!(q.target.contains("per_page=2"), "{}", q.target);
        assert_eq!(q.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(q.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(
            q.header("authorization"),
            Some(format!("Bearer {PAT}").as_str())
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_user_is_listed_after_the_orgs_404_and_own_private_packages_need_user_packages()
-> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.user("octocat", &[("hello", "public"), ("secret", "private")]);
    gh.user_token(PAT, "octocat");
    gh.user_token("ghp_someoneElse", "someone");
    gh.token(GHS);
    let c = config(&gh.host(), true);
    let api = gh.api_url().parse()?;
    let paths = |gh: &FakeGitHub| -> Vec<String> {
        gh.seen().iter().map(|q| q.path().to_owned()).collect()
    };

    let anonymous = owner_packages(&c, &api, "octocat", None).await?;
    assert_eq!(anonymous.listing.items, [repo("octocat/hello")]);
    assert_eq!(
        paths(&gh),
        ["/orgs/octocat/packages", "/users/octocat/packages"]
    );

    // The user's own PAT: `GET /user` says it is octocat, so `/user/packages`, which
    // lists the private packages too.
    let creds = Credentials::basic("octocat", PAT);
    let packages = owner_packages(&c, &api, "octocat", Some(&creds)).await?;
    assert_eq!(
        packages.listing.items,
        ["octocat/hello", "octocat/secret"].map(repo)
    );
    assert_eq!(
        packages
            .visibility
            .get(&repo("octocat/secret"))
            .map(String::as_str),
        Some("private")
    );
    assert_eq!(
        paths(&gh)[2..],
        ["/orgs/octocat/packages", "/user", "/user/packages"]
    );
    let own = gh.seen().into_iter().last().unwrap();
    assert!(
        own.target.contains("package_type=container"),
        "{}",
        own.target
    );
    assert_eq!(
        own.header("authorization"),
        Some(format!("Bearer {PAT}").as_str())
    );

    // Another user's PAT, and an installation token (`GET /user` is 403 for it): the
    // public packages of `/users/{owner}`.
    for token in ["ghp_someoneElse", GHS] {
        let before = gh.seen().len();
        let creds = Credentials::basic("x-access-token", token);
        let packages = owner_packages(&c, &api, "octocat", Some(&creds)).await?;
        assert_eq!(packages.listing.items, [repo("octocat/hello")], "{token}");
        assert_eq!(
            paths(&gh)[before..],
            ["/orgs/octocat/packages", "/user", "/users/octocat/packages"],
            "{token}"
        );
    }

    let err = owner_packages(&c, &api, "nobody", Some(&creds))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    Ok(())
}

#[tokio::test]
async fn an_installation_token_lists_an_orgs_private_packages_as_a_bearer() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.org("acme", &[("app", "public"), ("secret", "private")]);
    gh.token(GHS);
    let c = config(&gh.host(), true);
    let api = gh.api_url().parse()?;
    for creds in [
        Credentials::basic("x-access-token", GHS),
        Credentials::bearer(GHS),
    ] {
        let packages = owner_packages(&c, &api, "acme", Some(&creds)).await?;
        assert_eq!(
            packages.listing.items,
            ["acme/app", "acme/secret"].map(repo)
        );
    }
    assert!(
        gh.seen()
            .iter()
            .all(|q| q.header("authorization") == Some(format!("Bearer {GHS}").as_str()))
    );
    let wrong = Credentials::basic("x-access-token", "ghs_expiredCanary");
    let err = owner_packages(&c, &api, "acme", Some(&wrong))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("installation token"), "{err}");
    assert!(!err.to_string().contains("Canary"), "{err}");
    Ok(())
}

fn api_calls(gh: &FakeGitHub) -> usize {
    gh.seen()
        .iter()
        .filter(|q| !q.path().starts_with("/v2/"))
        .count()
}

#[tokio::test]
async fn githubs_rate_limit_stops_the_paging_instead_of_asking_again() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    let names: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let packages: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "public")).collect();
    gh.org("acme", &packages);
    gh.token(PAT);
    let creds = Credentials::basic("octocat", PAT);
    let mut c = config(&gh.host(), true);
    c.page_size = 2;
    let api = gh.api_url().parse()?;

    // Plenty left: the whole listing, and the budget it saw.
    let listed = owner_packages(&c, &api, "acme", Some(&creds)).await?;
    assert!(listed.listing.complete);
    let limit = listed.rate_limit.expect("the budget is read");
    assert_eq!((limit.limit, limit.remaining), (5000, 4997));
    assert_eq!(limit.resource.as_deref(), Some("core"));

    // Two requests left: two pages, then the listing stops rate limited until the reset
    // (not a third request refused).
    gh.rate_limit(5000, 2, 600);
    let before = api_calls(&gh);
    let listed = owner_packages(&c, &api, "acme", Some(&creds)).await?;
    assert_eq!(api_calls(&gh) - before, 2);
    assert!(!listed.listing.complete);
    assert_eq!(listed.listing.items.len(), 4);
    let e = listed.listing.error.expect("why it stopped");
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    let wait = e.retry_after().expect("until the reset");
    assert!(wait.as_secs() <= 600 && wait.as_secs() > 500, "{wait:?}");
    assert_eq!(listed.rate_limit.map(|l| l.remaining), Some(0));

    // Nothing left: GitHub's 403 is rate_limited, not unauthorized, after one request.
    gh.rate_limit(60, 0, 120);
    let before = api_calls(&gh);
    let err = owner_packages(&c, &api, "acme", Some(&creds))
        .await
        .unwrap_err();
    assert_eq!(api_calls(&gh) - before, 1);
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert!(err.retry_after().is_some_and(|w| w.as_secs() <= 120));
    Ok(())
}

#[tokio::test]
async fn secondary_rate_limits_are_rate_limited_and_retry_after_is_bounded() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.org("acme", &[("a", "public"), ("b", "public"), ("c", "public")]);
    let mut c = config(&gh.host(), true);
    c.page_size = 2;
    let api = gh.api_url().parse()?;

    // A 403 with retry-after on the first page: the error, at once.
    gh.secondary_limit(403, "30");
    let err = owner_packages(&c, &api, "acme", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert_eq!(err.retry_after().map(|d| d.as_secs()), Some(30));

    // A hostile retry-after is bounded to an hour.
    gh.secondary_limit(403, "99999999999");
    let err = owner_packages(&c, &api, "acme", None).await.unwrap_err();
    assert_eq!(err.retry_after().map(|d| d.as_secs()), Some(3600));

    // A 429 asking for longer than the client waits: not retried, rate limited.
    gh.secondary_limit(429, "7200");
    let before = api_calls(&gh);
    let err = owner_packages(&c, &api, "acme", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert_eq!(api_calls(&gh) - before, 1);

    // The listing still works afterwards.
    let listed = owner_packages(&c, &api, "acme", None).await?;
    assert!(listed.listing.complete);
    assert_eq!(listed.listing.items.len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_refused_pat_is_unauthorized_with_githubs_message() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.org("acme", &[("app", "public")]);
    let c = config(&gh.host(), true);
    let api = gh.api_url().parse()?;
    let wrong = Credentials::basic("octocat", "ghp_wrong");
    let err = owner_packages(&c, &api, "acme", Some(&wrong))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("Bad credentials"), "{err}");
    assert!(!err.to_string().contains("ghp_wrong"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_next_on_another_host_is_not_followed_and_the_pat_stays_on_the_api() -> anyhow::Result<()>
{
    let (_r, gh) = github().await?;
    gh.org(
        "acme",
        &[("a", "public"), ("b", "private"), ("c", "public")],
    );
    gh.token(PAT);
    let (_r2, elsewhere) = github().await?;
    elsewhere.org("acme", &[("z", "public")]);
    gh.next_on(&format!("http://{}", elsewhere.host()));
    let mut c = config(&gh.host(), true);
    c.page_size = 2;
    let creds = Credentials::basic("octocat", PAT);
    let packages = owner_packages(&c, &gh.api_url().parse()?, "acme", Some(&creds)).await?;
    assert!(!packages.listing.complete);
    assert_eq!(packages.listing.items, ["acme/a", "acme/b"].map(repo));
    let why = packages
        .listing
        .error
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(why.contains("leaves the GitHub API"), "{why}");
    assert!(
        elsewhere.seen().is_empty(),
        "nothing sent to the other host"
    );

    // The registry side: the same PAT as Basic credentials goes to the registry, and the
    // catalog is refused as on ghcr.io.
    _r.push_image("acme/a", "v1", &ImageSpec::linux_amd64())
        .await?;
    let client = RegistryClient::new(config(&gh.host(), true), creds)?;
    client.ping().await?;
    assert!(client.catalog().await.is_err(), "ghcr.io serves no catalog");
    Ok(())
}

#[tokio::test]
async fn listing_caps_apply() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    let packages: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "public")).collect();
    gh.org("acme", &packages);
    let mut c = config(&gh.host(), true);
    c.page_size = 2;
    c.max_pages = 2;
    let api = gh.api_url().parse()?;
    let listed = owner_packages(&c, &api, "acme", None).await?;
    assert!(!listed.listing.complete);
    assert_eq!(listed.listing.items.len(), 4);
    c.max_pages = 100;
    c.max_listing_items = 3;
    let listed = owner_packages(&c, &api, "acme", None).await?;
    assert!(!listed.listing.complete);
    assert_eq!(listed.listing.items.len(), 3);
    let err = owner_packages(&c, &api, "not/an-owner", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    Ok(())
}
