//! The Docker Hub profile in registration, against the fake Hub (imagelib-testkit) in
//! front of a real `docker-registry`: Hub's names are normalised, official images are under
//! `library/`, and a namespace validates through the Hub API (Hub has no `_catalog`).

mod common;

use common::Env;
use imagelib_testkit::dockerhub::FakeHub;
use imagelib_testkit::registry::TestRegistry;
use serde_json::json;

#[tokio::test]
async fn hubs_names_are_its_registry_api_and_official_images_are_under_library() {
    let env = Env::new();
    let svc = env.start().await;
    for (input, registry_type) in [
        ("docker.io", "dockerhub"),
        ("https://index.docker.io/", "generic"),
        ("hub.docker.com", "dockerhub"),
    ] {
        let (s, r) = svc
            .post(
                "/v1/registries",
                json!({"label": input, "url": input, "registry_type": registry_type,
                       "repositories": ["postgres", "bitnami/redis"], "validate": false}),
            )
            .await;
        assert_eq!(s, 201, "{input}: {r}");
        assert_eq!(r["url"], "registry-1.docker.io", "{input}: {r}");
        assert_eq!(
            r["repositories"],
            json!(["library/postgres", "bitnami/redis"]),
            "{input}: {r}"
        );
    }
    // Hub is HTTPS only.
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "x", "url": "http://docker.io", "registry_type": "dockerhub",
                   "insecure": true, "validate": false}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(p.to_string().contains("HTTPS only"), "{p}");
}

#[tokio::test]
async fn a_hub_namespace_validates_through_the_hub_api() {
    let registry = TestRegistry::start().await.unwrap();
    let hub = FakeHub::start(&registry, 100, 21600).await;
    hub.namespace("acme", &["web", "api"]);
    let env = Env::new();
    let mut config = env.config();
    config.providers.dockerhub_api = Some(hub.api_url().parse().unwrap());
    let svc = env.start_with(config).await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "Acme on Hub", "url": format!("{}/acme", hub.host()),
                   "registry_type": "dockerhub", "insecure": true}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["catalog_access"], false, "{r}");
    let seen: Vec<String> = hub.seen().iter().map(|q| q.path().to_owned()).collect();
    assert!(
        seen.iter().any(|p| p == "/v2/namespaces/acme/repositories"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|p| p == "/v2/_catalog"), "{seen:?}");

    // A namespace the Hub API does not know is refused, saying what to do.
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "Nobody", "url": format!("{}/nobody", hub.host()),
                   "registry_type": "dockerhub", "insecure": true}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("namespace `nobody`"),
        "{p}"
    );
}

#[tokio::test]
async fn a_hub_rules_exact_name_is_an_official_image() {
    let env = Env::new();
    let svc = env.start().await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "Hub", "url": "docker.io", "registry_type": "dockerhub", "validate": false}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, b, _) = svc
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{id}/rules/pg"),
            Some(common::ADMIN),
            Some(
                json!({"repositories": ["postgres", "bitnami/redis", "mongo*"],
                        "kind": "auto", "enabled": true}),
            ),
        )
        .await;
    assert!(s == 200 || s == 201, "{s}: {b}");
    let (_, got) = svc.get(&format!("/v1/registries/{id}/rules/pg")).await;
    let repos = got["repositories"].to_string();
    assert!(repos.contains("\"library/postgres\""), "{got}");
    assert!(!repos.contains("\"postgres\""), "{got}");
    assert!(repos.contains("\"bitnami/redis\""), "{got}");
    assert!(
        repos.contains("\"mongo*\"") && !repos.contains("library/mongo"),
        "{got}"
    );
}

#[tokio::test]
async fn hub_credentials_log_in_to_the_hub_api_in_validation() {
    let registry = TestRegistry::start().await.unwrap();
    let hub = FakeHub::start(&registry, 100, 21600).await;
    hub.namespace("acme", &[]);
    hub.private("acme", &["secret"]);
    hub.user("acme-bot", "dckr_pat_s3cret");
    let env = Env::new();
    let mut config = env.config();
    config.providers.dockerhub_api = Some(hub.api_url().parse().unwrap());
    let svc = env.start_with(config).await;
    let body = |password: &str| {
        json!({"label": "Acme", "url": format!("{}/acme", hub.host()), "registry_type": "dockerhub",
               "insecure": true,
               "credentials": {"kind": "basic", "username": "acme-bot", "password": password}})
    };
    let (s, p) = svc.post("/v1/registries", body("wrong")).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "unauthorized", "{p}");
    assert!(!p.to_string().contains("wrong\""), "{p}");
    let (s, r) = svc.post("/v1/registries", body("dckr_pat_s3cret")).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    let logins = hub
        .seen()
        .iter()
        .filter(|q| q.method == "POST" && q.path() == "/v2/users/login")
        .count();
    assert_eq!(logins, 2);
}

/// Docker Hub sends its repository webhooks with no header: a `dockerhub` registry's
/// webhook URL carries the secret as `?token=`, which no other registry type accepts.
#[tokio::test]
async fn hub_push_webhooks_carry_their_secret_in_the_url() {
    use imagelib_events::EventPayload;
    use imagelib_events::model::SyncReason;

    let env = Env::new();
    let svc = env.start().await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "Acme on Hub", "url": "docker.io/acme", "registry_type": "dockerhub",
                   "validate": false}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, hook) = svc.get(&format!("/v1/registries/{id}/webhook")).await;
    assert_eq!(s, 200, "{hook}");
    let url = hook["url"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("/v1/webhooks/{id}?token=")),
        "{url}"
    );

    let push = json!({"callback_url": "https://registry.hub.docker.com/u/acme/pg/hook/x/",
        "push_data": {"pushed_at": 1417566161, "pusher": "ci", "tag": "16.4"},
        "repository": {"repo_name": "acme/pg", "namespace": "acme", "name": "pg", "is_private": true}});
    let send = |path: String| {
        svc.http
            .post(svc.url(&path))
            .header("content-type", "application/json")
            .body(push.to_string())
            .send()
    };
    let res = send(url.clone()).await.unwrap();
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["acme/pg"]));
    // A wrong token, or none, is the same 401.
    for bad in [
        format!("/v1/webhooks/{id}?token=wrong"),
        format!("/v1/webhooks/{id}"),
    ] {
        assert_eq!(send(bad).await.unwrap().status(), 401);
    }

    // A registry of another type does not take its secret from the URL.
    let registry = TestRegistry::start().await.unwrap();
    let other = svc.register_open(&registry, "not hub").await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    let (_, other_hook) = svc.get(&format!("/v1/registries/{other_id}/webhook")).await;
    assert_eq!(other_hook["url"], format!("/v1/webhooks/{other_id}"));
    let other_secret = other_hook["secret"].as_str().unwrap();
    let token: String = url::form_urlencoded::byte_serialize(other_secret.as_bytes()).collect();
    let res = send(format!("/v1/webhooks/{other_id}?token={token}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_ne!(secret, other_secret);

    let syncs: Vec<_> = env
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::SyncRequested(s) if s.reason == SyncReason::Webhook => {
                Some(s.repository.map(|r| r.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(syncs, [Some("acme/pg".to_owned())]);
}
