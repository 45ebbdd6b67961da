//! Google Artifact Registry: repositories listed through the (fake) Artifact Registry REST
//! API's packages, from the repositories that exist in a real registry — `pageToken`
//! pagination, caps, Google's error bodies, garbage, and the access token sent as a bearer
//! to the API's origin only.

use imagelib_testkit::artifact_registry::{FakeArtifactRegistry, error_response};
use imagelib_testkit::proxy::Response;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::vendor::gar::{GarLocation, catalog_or_api, list_repositories};
use registry_client::{Credentials, ErrorKind, RegistryClient};

use crate::common::{config, repo};

const TOKEN: &str = "ya29.a0AfB_canaryAccessToken";

fn login() -> Credentials {
    Credentials::basic("oauth2accesstoken", TOKEN)
}

async fn registry_with(repos: &[&str]) -> anyhow::Result<TestRegistry> {
    let registry = TestRegistry::start().await?;
    for r in repos {
        registry
            .push_image(r, "v1", &ImageSpec::linux_amd64())
            .await?;
    }
    Ok(registry)
}

fn images() -> GarLocation {
    GarLocation::new("us-central1", "my-project", "images").expect("location")
}

#[tokio::test]
async fn packages_are_listed_across_page_tokens_with_the_token_on_the_api_only()
-> anyhow::Result<()> {
    let registry = registry_with(&[
        "my-project/images/app",
        "my-project/images/team/tool",
        "my-project/images/c",
        "my-project/other/x",
        "other-project/images/y",
    ])
    .await?;
    // The registry side and the API on two servers: the token must reach the API only.
    let side = FakeArtifactRegistry::start(&registry).await;
    let api = FakeArtifactRegistry::start(&registry).await;
    api.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    let mut c = config(&format!("{}/my-project/images", side.host()), true);
    c.page_size = 2;
    let listing = list_repositories(&c, &api.api_url().parse()?, &images(), Some(&login())).await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(listing.pages, 2);
    assert_eq!(
        listing.items,
        [
            "my-project/images/app",
            "my-project/images/c",
            "my-project/images/team/tool"
        ]
        .map(repo)
    );
    assert_eq!(api.api_requests(), 2);
    let calls: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|q| q.path().starts_with("/v1/"))
        .collect();
    assert_eq!(calls.len(), 2);
    for q in &calls {
        assert_eq!(
            q.path(),
            "/v1/projects/my-project/locations/us-central1/repositories/images/packages"
        );
        assert!(q.target.contains("pageSize=2"), "{}", q.target);
        assert_eq!(
            q.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    assert!(!calls[0].target.contains("pageToken"));
    assert!(
        calls[1].target.contains("pageToken="),
        "{}",
        calls[1].target
    );

    // The registry side: `_catalog` refused, the listed repositories there, and the
    // access token never sent as a bearer to it.
    let client = RegistryClient::new(c.clone(), login())?;
    let refused = client.catalog().await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Forbidden, "{refused}");
    for name in &listing.items {
        assert_eq!(client.tags(name).await?.items.len(), 1, "{name}");
    }
    assert!(side.seen().iter().all(|q| {
        !q.path().starts_with("/v1/")
            && q.header("authorization")
                .is_none_or(|a| !a.contains(&format!("Bearer {TOKEN}")))
    }));
    Ok(())
}

#[tokio::test]
async fn a_gcr_io_project_is_listed_under_the_namespace() -> anyhow::Result<()> {
    let registry = registry_with(&[
        "my-project/app",
        "my-project/team/tool",
        "my-project/team/other",
        "elsewhere/x",
    ])
    .await?;
    let ar = FakeArtifactRegistry::start(&registry).await;
    ar.repository("my-project", "us", "gcr.io", "my-project", &[TOKEN]);
    let gcr = GarLocation::parse("gcr.io", "my-project/team")?;
    assert_eq!(gcr.repository, "gcr.io");
    let api = ar.api_url().parse()?;
    let whole = config(&format!("{}/my-project", ar.host()), true);
    let listing = list_repositories(&whole, &api, &gcr, Some(&login())).await?;
    assert_eq!(
        listing.items,
        [
            "my-project/app",
            "my-project/team/other",
            "my-project/team/tool"
        ]
        .map(repo)
    );
    let team = config(&format!("{}/my-project/team", ar.host()), true);
    let bearer = Credentials::bearer(TOKEN);
    let listing = list_repositories(&team, &api, &gcr, Some(&bearer)).await?;
    assert!(listing.complete);
    assert_eq!(
        listing.items,
        ["my-project/team/other", "my-project/team/tool"].map(repo)
    );
    Ok(())
}

#[tokio::test]
async fn listing_caps_apply() -> anyhow::Result<()> {
    let names: Vec<String> = (0..7).map(|i| format!("my-project/images/p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let registry = registry_with(&refs).await?;
    let ar = FakeArtifactRegistry::start(&registry).await;
    ar.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    let api = ar.api_url().parse()?;
    let mut c = config(&ar.host(), true);
    c.page_size = 2;
    c.max_pages = 2;
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 4);
    assert_eq!(
        listing.error.as_ref().and_then(|e| e.cap()),
        Some(registry_client::Cap::ListingPages)
    );
    c.max_pages = 100;
    c.max_listing_items = 3;
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 3);
    c.max_listing_items = 100;
    c.max_listing_bytes = 300;
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(!listing.complete);
    assert_eq!(
        listing.error.as_ref().and_then(|e| e.cap()),
        Some(registry_client::Cap::ListingBytes)
    );
    Ok(())
}

#[tokio::test]
async fn googles_errors_are_read_and_no_token_is_quoted() -> anyhow::Result<()> {
    let registry = registry_with(&["my-project/images/app"]).await?;
    let ar = FakeArtifactRegistry::start(&registry).await;
    ar.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    ar.token("ya29.not-granted");
    let api = ar.api_url().parse()?;
    let c = config(&ar.host(), true);

    let wrong = Credentials::basic("oauth2accesstoken", "ya29.unknown-canary");
    let err = list_repositories(&c, &api, &images(), Some(&wrong))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("UNAUTHENTICATED"), "{err}");
    assert!(!err.to_string().contains("canary"), "{err}");

    let other = Credentials::basic("oauth2accesstoken", "ya29.not-granted");
    let err = list_repositories(&c, &api, &images(), Some(&other))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("PERMISSION_DENIED"), "{err}");
    assert!(
        err.to_string().contains("artifactregistry.packages.list"),
        "{err}"
    );

    let missing = GarLocation::new("us-central1", "my-project", "nothing-here")?;
    let err = list_repositories(&c, &api, &missing, Some(&login()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A `_json_key` login, or none, cannot call the API: nothing is sent.
    let before = ar.api_requests();
    let key = Credentials::basic(
        "_json_key",
        r#"{"type":"service_account","private_key":"canary"}"#,
    );
    let err = list_repositories(&c, &api, &images(), Some(&key))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("_catalog"), "{err}");
    assert!(!err.to_string().contains("canary"), "{err}");
    let err = list_repositories(&c, &api, &images(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(ar.api_requests(), before);
    Ok(())
}

#[tokio::test]
async fn garbage_loops_and_hostile_entries_end_the_listing_not_the_process() -> anyhow::Result<()> {
    let registry = registry_with(&[
        "my-project/images/a",
        "my-project/images/b",
        "my-project/images/c",
    ])
    .await?;
    let ar = FakeArtifactRegistry::start(&registry).await;
    ar.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    let api = ar.api_url().parse()?;
    let mut c = config(&ar.host(), true);
    c.page_size = 2;
    let json = [("Content-Type", "application/json")];

    // Garbage as the first page is the error; as a later page, an incomplete listing.
    ar.fault(0, Response::new(200, &json, "<html>not json"));
    let err = list_repositories(&c, &api, &images(), Some(&login()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    let n = ar.api_requests();
    ar.fault(n + 1, Response::new(200, &json, r#"{"packages":"nope"}"#));
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 2);

    // A later page that is a 429 with a long Retry-After: incomplete, rate limited.
    let n = ar.api_requests();
    let mut limited = error_response(429, "RESOURCE_EXHAUSTED", "Quota exceeded.");
    limited.set_header("Retry-After", "3600");
    ar.fault(n + 1, limited);
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(!listing.complete);
    assert_eq!(
        listing.error.as_ref().map(|e| e.kind()),
        Some(ErrorKind::RateLimited)
    );

    // Entries of another repository, broken escapes and bad names are skipped.
    ar.extra_packages(&[
        "projects/evil/locations/us/repositories/x/packages/stolen",
        "projects/my-project/locations/us-central1/repositories/images/packages/%zz",
        "projects/my-project/locations/us-central1/repositories/images/packages/Not%20Valid",
        "projects/my-project/locations/us-central1/repositories/images/packages/a",
    ]);
    c.page_size = 100;
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(
        listing.items,
        [
            "my-project/images/a",
            "my-project/images/b",
            "my-project/images/c"
        ]
        .map(repo)
    );
    assert_eq!(listing.skipped.len(), 3, "{:?}", listing.skipped);

    // A page token that comes back: the loop is cut after the second page.
    ar.stuck_token();
    c.page_size = 1;
    let before = ar.api_requests();
    let listing = list_repositories(&c, &api, &images(), Some(&login())).await?;
    assert!(!listing.complete);
    assert_eq!(ar.api_requests() - before, 2);
    let why = listing.error.map(|e| e.to_string()).unwrap_or_default();
    assert!(why.contains("loops"), "{why}");
    Ok(())
}

#[tokio::test]
async fn the_api_is_asked_only_when_the_catalog_is_refused_or_cut() -> anyhow::Result<()> {
    let registry = registry_with(&[
        "my-project/images/a",
        "my-project/images/b",
        "my-project/images/c",
    ])
    .await?;
    let ar = FakeArtifactRegistry::start(&registry).await;
    ar.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    ar.token("ya29.not-granted");
    let api = ar.api_url().parse()?;
    let c = config(&format!("{}/my-project/images", ar.host()), true);
    let all = [
        "my-project/images/a",
        "my-project/images/b",
        "my-project/images/c",
    ]
    .map(repo);

    // `_catalog` refused: the API lists.
    let client = RegistryClient::new(c.clone(), login())?;
    let listing = catalog_or_api(&client, &api, &images(), Some(&login())).await?;
    assert!(listing.complete);
    assert_eq!(listing.items, all);
    assert_eq!(ar.api_requests(), 1);

    // Refused, and a `_json_key` login: `_catalog`'s refusal, no API request.
    let key = Credentials::basic("_json_key", r#"{"private_key":"canary"}"#);
    let client = RegistryClient::new(c.clone(), key.clone())?;
    let err = catalog_or_api(&client, &api, &images(), Some(&key))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert_eq!(ar.api_requests(), 1);

    // Refused by both: the API's error, which names the permission.
    let other = Credentials::basic("oauth2accesstoken", "ya29.not-granted");
    let client = RegistryClient::new(c.clone(), other.clone())?;
    let err = catalog_or_api(&client, &api, &images(), Some(&other))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("artifactregistry.packages.list"),
        "{err}"
    );

    // `_catalog` served in full: the API is not asked.
    ar.serve_catalog();
    let client = RegistryClient::new(c.clone(), login())?;
    let before = ar.api_requests();
    let listing = catalog_or_api(&client, &api, &images(), Some(&login())).await?;
    assert!(listing.complete);
    assert_eq!(listing.items, all);
    assert_eq!(ar.api_requests(), before);

    // `_catalog` cut short by the page cap: the API is asked; it is bounded by the same
    // caps, so the listing stays incomplete (and says so).
    let mut capped = c.clone();
    capped.page_size = 2;
    capped.max_pages = 1;
    let client = RegistryClient::new(capped, login())?;
    let listing = catalog_or_api(&client, &api, &images(), Some(&login())).await?;
    assert_eq!(ar.api_requests(), before + 1);
    assert!(!listing.complete);
    assert_eq!(
        listing.error.as_ref().and_then(|e| e.cap()),
        Some(registry_client::Cap::ListingPages)
    );
    assert_eq!(listing.items.len(), 2);
    Ok(())
}
