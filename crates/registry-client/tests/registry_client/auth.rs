//! htpasswd basic auth and token auth against real registries.

use imagelib_testkit::registry::{ImageSpec, TestRegistry, TokenAuth};
use registry_client::{AuthScheme, Credentials, ErrorKind, Reference, RegistryClient};

use crate::common::{basic, client, config, repo, tag};

const PASSWORD: &str = "canary-Pa55word!";

async fn htpasswd_registry() -> anyhow::Result<TestRegistry> {
    let registry = TestRegistry::builder()
        .htpasswd("scanner", PASSWORD)
        .start()
        .await?;
    registry
        .push_image("private/app", "v1", &ImageSpec::linux_amd64())
        .await?;
    Ok(registry)
}

#[tokio::test]
async fn htpasswd_basic_auth_with_the_right_password() -> anyhow::Result<()> {
    let registry = htpasswd_registry().await?;
    let client = client(&registry, basic(&registry));
    let ping = client.ping().await?;
    assert_eq!(ping.auth, AuthScheme::Basic);
    assert!(ping.authenticated);
    client.check_catalog_access().await?;
    let repos = client.catalog().await?.into_complete()?;
    assert_eq!(repos, [repo("private/app")]);
    let tags = client.tags(&repo("private/app")).await?.into_complete()?;
    assert_eq!(tags, [tag("v1")]);
    // ping: 401 then 200; afterwards basic is sent up front
    assert_eq!(client.requests(), 2 + 1 + 1 + 1);
    Ok(())
}

#[tokio::test]
async fn htpasswd_wrong_password_or_none_is_unauthorized() -> anyhow::Result<()> {
    let registry = htpasswd_registry().await?;
    let wrong = client(&registry, Credentials::basic("scanner", "not-the-canary"));
    let err = wrong.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(
        err.validation_reason(),
        Some(imagelib_events::model::ValidationReason::Unauthorized)
    );
    assert!(!err.to_string().contains("not-the-canary"));
    assert!(err.to_string().contains("refused the credentials"), "{err}");
    assert_eq!(wrong.requests(), 2, "one challenge, one attempt, no loop");

    let anonymous = client(&registry, Credentials::Anonymous);
    let err = anonymous.tags(&repo("private/app")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(err.to_string().contains("requires credentials"), "{err}");
    Ok(())
}

async fn token_registry(token: TokenAuth) -> anyhow::Result<TestRegistry> {
    let registry = TestRegistry::builder().token_auth(token).start().await?;
    registry
        .push_image("team/a", "v1", &ImageSpec::linux_amd64())
        .await?;
    registry
        .push_image("team/b", "v1", &ImageSpec::new("linux", "arm64"))
        .await?;
    Ok(registry)
}

fn with_credentials() -> TokenAuth {
    TokenAuth {
        credentials: Some(("robot$scanner".into(), PASSWORD.into())),
        ..TokenAuth::default()
    }
}

fn token_scopes(registry: &TestRegistry) -> Vec<String> {
    registry
        .token_server()
        .unwrap()
        .requests()
        .into_iter()
        .map(|r| r.scopes.join(" "))
        .collect()
}

#[tokio::test]
async fn bearer_tokens_are_cached_per_scope() -> anyhow::Result<()> {
    let registry = token_registry(with_credentials()).await?;
    let client = client(&registry, Credentials::basic("robot$scanner", PASSWORD));
    let ping = client.ping().await?;
    let AuthScheme::Bearer { realm, service } = &ping.auth else {
        panic!("expected a bearer challenge, got {:?}", ping.auth);
    };
    assert_eq!(realm, &registry.token_server().unwrap().realm());
    assert_eq!(service.as_deref(), Some("imagelib-test-registry"));

    let repos = client.catalog().await?.into_complete()?;
    assert_eq!(repos, [repo("team/a"), repo("team/b")]);
    for _ in 0..3 {
        assert_eq!(client.tags(&repo("team/a")).await?.items, [tag("v1")]);
    }
    client
        .head_manifest(&repo("team/a"), &Reference::Tag(tag("v1")))
        .await?;
    let (b_name, v1) = (repo("team/b"), Reference::Tag(tag("v1")));
    let (a, b) = tokio::join!(client.tags(&b_name), client.head_manifest(&b_name, &v1));
    a?;
    b?;

    assert_eq!(
        token_scopes(&registry),
        [
            "",
            "registry:catalog:*",
            "repository:team/a:pull",
            "repository:team/b:pull"
        ],
        "one token per scope, concurrent requests share one"
    );
    let server_requests = registry.token_server().unwrap().requests();
    assert!(server_requests.iter().all(|r| r.authenticated && r.granted));
    assert_eq!(client.stats().token_requests, 4);
    Ok(())
}

#[tokio::test]
async fn an_expired_token_is_replaced_once() -> anyhow::Result<()> {
    let registry = token_registry(TokenAuth {
        expired_tokens: 1,
        ..with_credentials()
    })
    .await?;
    let client = client(&registry, Credentials::basic("robot$scanner", PASSWORD));
    assert_eq!(client.tags(&repo("team/a")).await?.items, [tag("v1")]);
    assert_eq!(
        token_scopes(&registry),
        ["repository:team/a:pull", "repository:team/a:pull"],
        "the dead token was replaced, once"
    );
    // challenge, dead token, fresh token (+ 2 token requests)
    assert_eq!(client.requests(), 5);
    Ok(())
}

#[tokio::test]
async fn tokens_that_keep_failing_give_unauthorized_after_one_retry() -> anyhow::Result<()> {
    let registry = token_registry(TokenAuth {
        expired_tokens: 1000,
        ..with_credentials()
    })
    .await?;
    let client = client(&registry, Credentials::basic("robot$scanner", PASSWORD));
    let err = client.tags(&repo("team/a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(
        token_scopes(&registry).len(),
        2,
        "exactly one re-authentication"
    );
    Ok(())
}

#[tokio::test]
async fn the_token_endpoint_refusing_credentials_is_unauthorized() -> anyhow::Result<()> {
    let registry = token_registry(with_credentials()).await?;
    let client = client(
        &registry,
        Credentials::basic("robot$scanner", "wrong-canary"),
    );
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.to_string().contains("wrong-canary"));
    let requests = registry.token_server().unwrap().requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].authenticated);
    Ok(())
}

#[tokio::test]
async fn a_token_without_catalog_scope_is_forbidden() -> anyhow::Result<()> {
    let registry = token_registry(TokenAuth {
        grant_catalog: false,
        ..with_credentials()
    })
    .await?;
    let client = client(&registry, Credentials::basic("robot$scanner", PASSWORD));
    client.ping().await?;
    client.check_pull_access(&repo("team/a")).await?;
    let err = client.check_catalog_access().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert_eq!(
        err.validation_reason(),
        Some(imagelib_events::model::ValidationReason::Forbidden)
    );
    Ok(())
}

#[tokio::test]
async fn anonymous_tokens_and_the_access_token_field() -> anyhow::Result<()> {
    let registry = token_registry(TokenAuth {
        access_token_field: true,
        ..TokenAuth::default()
    })
    .await?;
    let client = client(&registry, Credentials::Anonymous);
    assert_eq!(client.tags(&repo("team/b")).await?.items, [tag("v1")]);
    let requests = registry.token_server().unwrap().requests();
    assert_eq!(requests.len(), 1);
    Ok(())
}

/// The realm is plain HTTP on 127.0.0.1 while the registry was given as `localhost`: the
/// password must not go there.
#[tokio::test]
async fn credentials_never_go_to_a_plain_http_realm_on_another_host() -> anyhow::Result<()> {
    let registry = token_registry(with_credentials()).await?;
    let cfg = config(&format!("localhost:{}", registry.port()), true);
    let client = RegistryClient::new(cfg, Credentials::basic("robot$scanner", PASSWORD))?;
    let err = client.tags(&repo("team/a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RealmNotAllowed, "{err}");
    assert!(err.to_string().contains("token realm"), "{err}");
    assert!(registry.token_server().unwrap().requests().is_empty());
    Ok(())
}

/// A realm on another host name (`localhost`, while the registry is `127.0.0.1`) never
/// receives the credentials, unless the registry's `auth_hosts` lists it.
#[tokio::test]
async fn a_realm_on_another_host_never_receives_the_password() -> anyhow::Result<()> {
    let registry = token_registry(TokenAuth {
        realm_host: Some("localhost".into()),
        ..with_credentials()
    })
    .await?;
    let server = registry.token_server().unwrap();
    assert!(server.realm().starts_with("http://localhost:"));
    let mut c = config(&registry.host(), true);
    assert_eq!(c.url.host(), "127.0.0.1");
    let refused = RegistryClient::new(c.clone(), Credentials::basic("robot$scanner", PASSWORD))?;
    let err = refused.tags(&repo("team/a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RealmNotAllowed, "{err}");
    assert_eq!(
        err.validation_reason(),
        Some(imagelib_events::model::ValidationReason::RealmNotAllowed)
    );
    let text = err.to_string();
    assert!(
        text.contains("localhost") && text.contains("auth_hosts"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        server.requests().is_empty(),
        "nothing, not even a token request, went to the other host"
    );

    // Listed in the registry's auth_hosts: the same realm is trusted.
    c.auth_hosts = vec!["LOCALHOST".into()];
    let allowed = RegistryClient::new(c, Credentials::basic("robot$scanner", PASSWORD))?;
    assert_eq!(allowed.tags(&repo("team/a")).await?.items, [tag("v1")]);
    let requests = server.requests();
    assert!(!requests.is_empty() && requests.iter().all(|r| r.authenticated));
    Ok(())
}
