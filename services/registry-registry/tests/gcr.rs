//! A `gcr` registration that names its Artifact Registry repository (`artifact_registry`),
//! against the fake Artifact Registry (imagelib-testkit) in front of a real
//! `docker-registry`: reached at a loopback address (as a mirror or private endpoint
//! would be), `_catalog` refused, the repository is listed through the Artifact Registry
//! API with the access token; the field's rules as 422 problems at `/artifact_registry`;
//! PATCH sets and clears it, and the events carry it.

mod common;

use common::{ADMIN, Env};
use imagelib_events::EventPayload;
use imagelib_testkit::artifact_registry::FakeArtifactRegistry;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "ya29.a0AfB_canaryAccessTokenForImages";
/// An access token the API knows, granted no repository.
const STRANGER: &str = "ya29.a0AfB_canaryAccessTokenOfAStranger";
const IMAGES: &str = "projects/my-project/locations/us-central1/repositories/images";

fn pointers(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_named_artifact_registry_repository_validates_through_the_api() {
    let registry = TestRegistry::start().await.unwrap();
    registry
        .push_image("my-project/images/app", "v1", &ImageSpec::linux_amd64())
        .await
        .unwrap();
    let ar = FakeArtifactRegistry::start(&registry).await;
    ar.repository(
        "my-project",
        "us-central1",
        "images",
        "my-project/images",
        &[TOKEN],
    );
    ar.token(STRANGER);
    let env = Env::new();
    let mut config = env.config();
    config.providers.artifact_registry_api = Some(ar.api_url().parse().unwrap());
    let svc = env.start_with(config).await;
    let body = |token: &str, extra: Value| {
        let mut b = json!({"label": "Images mirror", "url": ar.host(), "registry_type": "gcr",
               "insecure": true, "credentials": {"kind": "token", "token": token}});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        b
    };

    // Without the repository named, the loopback address says nothing of Google: only
    // `_catalog`, which is refused.
    let (s, p) = svc.post("/v1/registries", body(TOKEN, json!({}))).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "forbidden", "{p}");
    assert_eq!(ar.api_requests(), 0);

    // A token the API refuses for the repository: what to grant.
    let (s, p) = svc
        .post(
            "/v1/registries",
            body(STRANGER, json!({"artifact_registry": IMAGES})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "forbidden", "{p}");
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("roles/artifactregistry.reader"), "{p}");
    assert!(detail.contains(IMAGES), "{p}");
    assert!(!p.to_string().contains(STRANGER), "{p}");

    let (s, r) = svc
        .post(
            "/v1/registries",
            body(TOKEN, json!({"artifact_registry": format!(" {IMAGES} ")})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["catalog_access"], false, "{r}");
    assert_eq!(r["artifact_registry"], IMAGES, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (_, shown) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(shown["artifact_registry"], IMAGES, "{shown}");

    let seen = ar.seen();
    let bearer = format!("Bearer {TOKEN}");
    let listed = seen.iter().any(|q| {
        q.path() == format!("/v1/{IMAGES}/packages")
            && q.header("authorization") == Some(bearer.as_str())
    });
    assert!(listed, "the packages API was asked with the token");
    // `_catalog` was asked and refused (403 DENIED); the API listing is what passed.
    assert!(seen.iter().any(|q| q.path() == "/v2/_catalog"));
    // The token went to the registry it was given for and to the packages API, nowhere else.
    for q in seen
        .iter()
        .filter(|q| q.header("authorization") == Some(bearer.as_str()))
    {
        assert!(
            q.path().starts_with("/v2/") || q.path() == format!("/v1/{IMAGES}/packages"),
            "{}",
            q.path()
        );
    }

    let registered = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RegistryRegistered(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(registered.artifact_registry.as_deref(), Some(IMAGES));

    // PATCH names another repository, then clears it.
    let team = "projects/example.com:my-project/locations/europe/repositories/team";
    let patch = |body: Value| {
        let path = format!("/v1/registries/{id}");
        let svc = &svc;
        async move {
            let (s, r, _) = svc
                .call(Method::PATCH, &path, Some(ADMIN), Some(body))
                .await;
            (s, r)
        }
    };
    let (s, r) = patch(json!({"artifact_registry": team})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["artifact_registry"], team, "{r}");
    let (s, r) = patch(json!({"artifact_registry": "projects/my-project"})).await;
    assert_eq!(s, 422, "{r}");
    assert_eq!(pointers(&r), ["/artifact_registry"], "{r}");
    let (s, r) = patch(json!({"label": "renamed"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["artifact_registry"], team, "an absent field is kept: {r}");
    let (s, r) = patch(json!({"artifact_registry": null})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["artifact_registry"], Value::Null, "{r}");
    let updates: Vec<Option<Option<String>>> = env
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::RegistryUpdated(u) => Some(u.artifact_registry),
            _ => None,
        })
        .collect();
    assert_eq!(updates, [Some(Some(team.to_owned())), None, Some(None)]);
    assert!(!env.db_dump().await.contains(TOKEN));
}

#[tokio::test]
async fn artifact_registry_is_refused_where_it_does_not_belong() {
    let registry = TestRegistry::start().await.unwrap();
    let env = Env::new();
    let svc = env.start().await;
    let host = format!("127.0.0.1:{}", registry.port());

    // Another type.
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "plain", "url": host, "registry_type": "generic", "insecure": true,
                   "artifact_registry": IMAGES}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(pointers(&p), ["/artifact_registry"], "{p}");
    assert!(p.to_string().contains("`gcr`"), "{p}");

    // Not a resource name (an address, a package, a bad id): each says why.
    for bad in [
        "us-central1-docker.pkg.dev/my-project/images",
        "projects/my-project/locations/us-central1/repositories/images/packages/app",
        "projects/My_Project/locations/us-central1/repositories/images",
        "https://artifactregistry.googleapis.com/v1/projects/my-project/locations/us/repositories/images",
    ] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "bad", "url": host, "registry_type": "gcr", "insecure": true,
                       "artifact_registry": bad, "validate": false}),
            )
            .await;
        assert_eq!(s, 422, "{bad}: {p}");
        assert_eq!(pointers(&p), ["/artifact_registry"], "{bad}: {p}");
    }

    // An Artifact Registry URL naming another repository: both are said.
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "mismatch", "url": "us-central1-docker.pkg.dev/my-project/images",
                   "registry_type": "gcr",
                   "artifact_registry": "projects/my-project/locations/europe/repositories/images"}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(pointers(&p), ["/artifact_registry"], "{p}");
    let said = p.to_string();
    assert!(said.contains(IMAGES), "{p}");
    assert!(said.contains("locations/europe"), "{p}");
    // The same repository is accepted (and may be left out).
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "same", "url": "us-central1-docker.pkg.dev/my-project/images",
                   "registry_type": "gcr", "artifact_registry": IMAGES, "validate": false}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["artifact_registry"], IMAGES, "{r}");
    let gcr_id = r["id"].as_str().unwrap().to_owned();

    // PATCH: not on another type; a stored repository must fit a new type.
    let plain = svc.register_open(&registry, "open").await;
    let plain_id = plain["id"].as_str().unwrap();
    let (s, p, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{plain_id}"),
            Some(ADMIN),
            Some(json!({"artifact_registry": IMAGES})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(pointers(&p), ["/artifact_registry"], "{p}");
    let (s, p, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{gcr_id}"),
            Some(ADMIN),
            Some(json!({"registry_type": "generic"})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(pointers(&p), ["/artifact_registry"], "{p}");
}
