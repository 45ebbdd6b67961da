//! GitHub Container Registry: an owner's packages through the (fake) GitHub REST API —
//! `Link` pagination on the API's origin only, org → user fallback, the PAT as a bearer
//! token to the API only, GitHub's JSON errors — with a real registry behind `/v2/`.

use imagelib_testkit::github::FakeGitHub;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::vendor::ghcr::owner_packages;
use registry_client::{Credentials, ErrorKind, RegistryClient};

use crate::common::{config, repo};

const PAT: &str = "ghp_s3cretTokenValue";

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
async fn a_user_is_listed_after_the_orgs_404_and_private_packages_need_the_pat()
-> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.user("octocat", &[("hello", "public"), ("secret", "private")]);
    gh.token(PAT);
    let c = config(&gh.host(), true);
    let api = gh.api_url().parse()?;
    let anonymous = owner_packages(&c, &api, "octocat", None).await?;
    assert_eq!(anonymous.listing.items, [repo("octocat/hello")]);
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
    let paths: Vec<String> = gh.seen().iter().map(|q| q.path().to_owned()).collect();
    assert_eq!(
        paths,
        [
            "/orgs/octocat/packages",
            "/users/octocat/packages",
            "/orgs/octocat/packages",
            "/users/octocat/packages"
        ]
    );

    let err = owner_packages(&c, &api, "nobody", Some(&creds))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
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
