//! GitHub Container Registry: an owner's packages through the (fake) GitHub REST API —
//! `Link` pagination on the API's origin only, org → user fallback (`/user/packages` for
//! the token's own user), PATs and installation tokens as a bearer token to the API only,
//! GitHub's JSON errors and rate limits — with a real registry behind `/v2/`; and a
//! GitHub App's renewed installation tokens (the `github_app` stored credential).

use std::sync::Arc;

use imagelib_testkit::github::FakeGitHub;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::vendor::ghcr::owner_packages;
use registry_client::{
    CredentialProvider, Credentials, ErrorKind, ProviderEndpoints, Reference, RegistryClient,
    StoredCredentials,
};
use secrecy::ExposeSecret as _;

use crate::common::{config, repo, tag};

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

// ---------------------------------------------------------------------------------------
// GitHub App: the app's JWT for renewed installation tokens

const APP_ID: &str = "123456";
const INSTALLATION_ID: &str = "7890";

fn app_keys() -> &'static (String, String) {
    static KEYS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    KEYS.get_or_init(imagelib_testkit::github::app_key)
}

fn other_keys() -> &'static (String, String) {
    static KEYS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    KEYS.get_or_init(imagelib_testkit::github::app_key)
}

fn github_app(app_id: &str, installation_id: &str, private_key: &str) -> StoredCredentials {
    serde_json::from_value(serde_json::json!({
        "kind": "github_app",
        "app_id": app_id,
        "installation_id": installation_id,
        "private_key": private_key,
    }))
    .expect("a github_app credential")
}

/// The provider the stored `github_app` credential makes for the fake's registry, with
/// the fake as the GitHub API.
fn app_provider(
    gh: &FakeGitHub,
    creds: &StoredCredentials,
) -> registry_client::Result<Arc<dyn CredentialProvider>> {
    let endpoints = ProviderEndpoints {
        github_api: Some(gh.api_url().parse().expect("URL")),
        ignore_ambient: true,
        ..Default::default()
    };
    let c = config(&gh.host(), true);
    creds.provider(&c.url, &c.guard, &endpoints, None)
}

fn b64_json(part: &str) -> serde_json::Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

fn exchanges(gh: &FakeGitHub) -> Vec<imagelib_testkit::proxy::Request> {
    gh.seen()
        .into_iter()
        .filter(|q| q.path().ends_with("/access_tokens"))
        .collect()
}

/// The Basic credentials sent to ghcr's token realm.
fn realm_logins(gh: &FakeGitHub) -> Vec<String> {
    use base64::Engine as _;
    gh.seen()
        .iter()
        .filter(|q| q.path() == "/token")
        .filter_map(|q| q.header("authorization")?.strip_prefix("Basic "))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .filter_map(|b| String::from_utf8(b).ok())
        .collect()
}

#[tokio::test]
async fn a_github_apps_installation_token_lists_private_packages_and_pulls() -> anyhow::Result<()> {
    let (registry, gh) = github().await?;
    gh.org("acme", &[("app", "public"), ("secret", "private")]);
    gh.app(APP_ID, &app_keys().1, INSTALLATION_ID, "acme");
    registry
        .push_image("acme/secret", "v1", &ImageSpec::linux_amd64())
        .await?;
    let creds = github_app(APP_ID, INSTALLATION_ID, &app_keys().0);
    assert!(!format!("{creds:?}").contains("PRIVATE KEY"));
    let provider = app_provider(&gh, &creds)?;
    assert!(!format!("{provider:?}").contains("PRIVATE KEY"));

    // Concurrent callers share one exchange.
    let (a, b) = tokio::join!(provider.credentials(), provider.credentials());
    let (a, b) = (a?, b?);
    let (Credentials::Basic { username, password }, Credentials::Basic { password: p2, .. }) =
        (&a.credentials, &b.credentials)
    else {
        panic!("Basic credentials");
    };
    assert_eq!(username, "x-access-token");
    assert_eq!(password.expose_secret(), p2.expose_secret());
    let token = password.expose_secret().to_owned();
    assert!(token.starts_with("ghs_"), "an installation token");
    assert_eq!(gh.installation_tokens(), std::slice::from_ref(&token));
    let left = a
        .expires_at
        .expect("an expiry")
        .duration_since(std::time::SystemTime::now())?;
    assert!(left.as_secs() > 3500 && left.as_secs() <= 3600, "{left:?}");

    // The exchange as GitHub documents it.
    let seen = exchanges(&gh);
    assert_eq!(seen.len(), 1);
    let q = &seen[0];
    assert_eq!(q.method, "POST");
    assert_eq!(q.path(), "/app/installations/7890/access_tokens");
    assert_eq!(q.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(q.header("x-github-api-version"), Some("2022-11-28"));
    let jwt = q
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("the JWT as a bearer")
        .to_owned();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(b64_json(parts[0])["alg"], "RS256");
    let claims = b64_json(parts[1]);
    assert_eq!(claims["iss"].to_string().trim_matches('"'), APP_ID);
    let (iat, exp) = (
        claims["iat"].as_u64().expect("iat"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, 600);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(now - iat >= 59 && now - iat <= 70, "iat {iat}, now {now}");

    // The organisation's private packages, listed with the installation token.
    let c = config(&gh.host(), true);
    let api = gh.api_url().parse()?;
    let packages = owner_packages(&c, &api, "acme", Some(&a.credentials)).await?;
    assert_eq!(
        packages.listing.items,
        ["acme/app", "acme/secret"].map(repo)
    );
    assert_eq!(
        packages
            .visibility
            .get(&repo("acme/secret"))
            .map(String::as_str),
        Some("private")
    );

    // The registry asks for a token (as ghcr.io does) and the installation token gets
    // one: the private image pulls.
    let anonymous = RegistryClient::new(config(&gh.host(), true), Credentials::Anonymous)?;
    let reference = Reference::Tag(tag("v1"));
    assert!(
        anonymous
            .get_manifest(&repo("acme/secret"), &reference)
            .await
            .is_err(),
        "the registry side needs a token"
    );
    let client = RegistryClient::with_provider(config(&gh.host(), true), provider.clone())?;
    client
        .get_manifest(&repo("acme/secret"), &reference)
        .await?;
    assert_eq!(client.tags(&repo("acme/secret")).await?.items, [tag("v1")]);
    assert_eq!(realm_logins(&gh), [format!("x-access-token:{token}")]);
    assert_eq!(exchanges(&gh).len(), 1, "the cached token served everyone");

    // The JWT went to the exchange only; the installation token to the token realm and
    // the API only, never to the registry's `/v2/` (which gets registry tokens).
    for q in gh.seen() {
        let authz = q.header("authorization").unwrap_or_default().to_owned();
        if authz.contains(&jwt) {
            assert!(q.path().ends_with("/access_tokens"), "{}", q.path());
        }
        if q.path().starts_with("/v2/") {
            assert!(!authz.contains(&token), "{}", q.path());
            assert!(!authz.starts_with("Basic"), "{}", q.path());
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_installation_token_is_renewed_across_its_expiry() -> anyhow::Result<()> {
    let (registry, gh) = github().await?;
    gh.org("acme", &[("app", "private")]);
    gh.app(APP_ID, &app_keys().1, INSTALLATION_ID, "acme");
    gh.installation_token_lifetime(std::time::Duration::from_secs(6));
    registry
        .push_image("acme/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    let provider = app_provider(&gh, &github_app(APP_ID, INSTALLATION_ID, &app_keys().0))?;
    let client = RegistryClient::with_provider(config(&gh.host(), true), provider.clone())?;
    let c = config(&gh.host(), true);
    let api = gh.api_url().parse()?;
    let reference = Reference::Tag(tag("v1"));

    client.get_manifest(&repo("acme/app"), &reference).await?;
    let login = provider.credentials().await?.credentials;
    owner_packages(&c, &api, "acme", Some(&login)).await?;
    assert_eq!(gh.installation_tokens().len(), 1);
    let first = gh.installation_tokens()[0].clone();

    // Past the renewal point (a third of the lifetime early) and the first token's
    // expiry: a second exchange, and the new token is what both sides get.
    tokio::time::sleep(std::time::Duration::from_millis(6500)).await;
    client.get_manifest(&repo("acme/app"), &reference).await?;
    let login = provider.credentials().await?.credentials;
    let listed = owner_packages(&c, &api, "acme", Some(&login)).await?;
    assert_eq!(
        listed.listing.items,
        [repo("acme/app")],
        "private, so the new token was accepted"
    );
    let issued = gh.installation_tokens();
    assert_eq!(issued.len(), 2, "one renewal");
    let second = issued[1].clone();
    assert_ne!(first, second);
    assert_eq!(exchanges(&gh).len(), 2);
    assert_eq!(
        realm_logins(&gh),
        [
            format!("x-access-token:{first}"),
            format!("x-access-token:{second}")
        ]
    );
    let last_api = gh
        .seen()
        .into_iter()
        .rfind(|q| q.path() == "/orgs/acme/packages")
        .expect("listed");
    assert_eq!(
        last_api.header("authorization"),
        Some(format!("Bearer {second}").as_str())
    );
    // The expired token is refused by the API now: the renewal was needed.
    let stale = Credentials::basic("x-access-token", &first);
    let err = owner_packages(&c, &api, "acme", Some(&stale))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    Ok(())
}

#[tokio::test]
async fn a_bad_key_or_an_unknown_installation_is_a_clear_error_without_the_key()
-> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.org("acme", &[("app", "private")]);
    gh.app(APP_ID, &app_keys().1, INSTALLATION_ID, "acme");
    let key_line = |pem: &str| pem.lines().nth(1).expect("a PEM line").to_owned();

    // A key that is not the app's: GitHub's 401, named as the JWT's.
    let provider = app_provider(&gh, &github_app(APP_ID, INSTALLATION_ID, &other_keys().0))?;
    let err = provider.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("JWT") && text.contains("could not be decoded"),
        "{text}"
    );
    assert!(!text.contains(&key_line(&other_keys().0)), "{text}");

    // An installation the app does not have: GitHub's 404, named as the installation's.
    let provider = app_provider(&gh, &github_app(APP_ID, "999", &app_keys().0))?;
    let err = provider.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no installation 999 of the app 123456"),
        "{text}"
    );
    assert!(!text.contains(&key_line(&app_keys().0)), "{text}");

    // An app GitHub does not know.
    let provider = app_provider(&gh, &github_app("42", INSTALLATION_ID, &app_keys().0))?;
    let err = provider.credentials().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("Integration not found"), "{err}");
    assert!(gh.installation_tokens().is_empty());

    // Not a key, not digits: refused before anything is sent.
    let before = gh.seen().len();
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nY2FuYXJ5\n-----END RSA PRIVATE KEY-----\n";
    for creds in [
        github_app(APP_ID, INSTALLATION_ID, pem),
        github_app(APP_ID, INSTALLATION_ID, "canary"),
        github_app("app", INSTALLATION_ID, &app_keys().0),
        github_app(APP_ID, "../7890", &app_keys().0),
    ] {
        let err = app_provider(&gh, &creds).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(
            !text.contains("Y2FuYXJ5") && !text.contains("canary"),
            "{text}"
        );
        assert!(!text.contains(&key_line(&app_keys().0)), "{text}");
    }
    assert_eq!(gh.seen().len(), before);
    Ok(())
}

#[tokio::test]
async fn the_jwt_and_the_token_stay_on_the_api_origin() -> anyhow::Result<()> {
    let (_r, gh) = github().await?;
    gh.org(
        "acme",
        &[("a", "private"), ("b", "private"), ("c", "private")],
    );
    gh.app(APP_ID, &app_keys().1, INSTALLATION_ID, "acme");
    let (_r2, elsewhere) = github().await?;
    gh.next_on(&format!("http://{}", elsewhere.host()));
    let provider = app_provider(&gh, &github_app(APP_ID, INSTALLATION_ID, &app_keys().0))?;
    let login = provider.credentials().await?.credentials;
    let mut c = config(&gh.host(), true);
    c.page_size = 2;
    let listed = owner_packages(&c, &gh.api_url().parse()?, "acme", Some(&login)).await?;
    assert!(!listed.listing.complete, "the next page is elsewhere");
    assert!(
        elsewhere.seen().is_empty(),
        "nothing sent to the other host"
    );

    // An API origin that is neither HTTPS nor loopback is refused for the exchange.
    let endpoints = ProviderEndpoints {
        github_api: Some("http://api.github.example/".parse()?),
        ignore_ambient: true,
        ..Default::default()
    };
    let err = github_app(APP_ID, INSTALLATION_ID, &app_keys().0)
        .provider(&c.url, &c.guard, &endpoints, None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    Ok(())
}
