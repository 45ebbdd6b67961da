//! A registry's own proxy (`proxy_url`, `no_proxy`) and the registration form per type
//! (`GET /v1/registry-types`, the default address of a type with one): against a real
//! `docker-registry` (TLS, htpasswd) and a real forwarding proxy that records every byte.

mod common;

use common::{ADMIN, Env};
use imagelib_events::EventPayload;
use imagelib_testkit::forward_proxy::ForwardProxy;
use imagelib_testkit::registry::TestRegistry;
use reqwest::Method;
use serde_json::{Value, json};

fn canary() -> String {
    format!("canary-{}", imagelib_testkit::unique_id())
}

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
async fn the_registry_types_are_served_with_their_fields() {
    let env = Env::new();
    let svc = env.start().await;
    let (s, _, _) = svc
        .call(Method::GET, "/v1/registry-types", None, None)
        .await;
    assert_eq!(s, 401);
    let (s, types) = svc.get("/v1/registry-types").await;
    assert_eq!(s, 200, "{types}");
    let types = types.as_array().unwrap();
    let keys: Vec<&str> = types.iter().map(|t| t["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "generic",
            "dockerhub",
            "ghcr",
            "harbor",
            "ecr",
            "acr",
            "gcr"
        ]
    );
    let by = |k: &str| types.iter().find(|t| t["key"] == k).unwrap().clone();
    let labels = |t: &Value| {
        t["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["label"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let hub = by("dockerhub");
    assert_eq!(hub["label"], "Docker Hub");
    assert_eq!(hub["defaults"]["url"], "registry-1.docker.io");
    assert_eq!(hub["defaults"]["token_hosts"], json!(["auth.docker.io"]));
    for l in ["Name", "Namespace", "Docker Hub Username", "Access Token"] {
        assert!(labels(&hub).contains(&l.to_owned()), "{l}");
    }
    let gh = by("ghcr");
    assert_eq!(gh["defaults"]["url"], "ghcr.io");
    assert_eq!(gh["url_placeholder"], "ghcr.io/<owner>");
    let pat = gh["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "Personal Access Token")
        .unwrap();
    assert!(pat["help"].as_str().unwrap().contains("read:packages"));
    assert_eq!(pat["input"], "password");
    assert_eq!(pat["pointer"], "/credentials/password");
    assert_eq!(
        by("gcr")["url_placeholder"],
        "<location>-docker.pkg.dev/<project>/<repo>"
    );
    assert_eq!(
        by("ecr")["url_placeholder"],
        "<account>.dkr.ecr.<region>.amazonaws.com"
    );
    assert_eq!(by("acr")["url_placeholder"], "<name>.azurecr.io");
    assert_eq!(by("harbor")["url_placeholder"], "harbor.example/<project>");
    assert_eq!(by("ecr")["defaults"]["credential_kind"], "aws_ecr");
    assert!(
        by("acr")["credential_kinds"]
            .as_array()
            .unwrap()
            .contains(&json!("azure_service_principal"))
    );
    assert_eq!(by("generic")["defaults"]["url"], Value::Null);
    let (_, openapi) = svc.get("/openapi.json").await;
    assert!(
        openapi["paths"]["/v1/registry-types"]["get"].is_object(),
        "documented in the OpenAPI"
    );
}

#[tokio::test]
async fn a_type_with_one_address_needs_no_url() {
    let env = Env::new();
    let svc = env.start().await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"registry_type": "dockerhub", "validate": false,
                "credentials": {"kind": "basic", "username": "u", "password": canary()}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["url"], "registry-1.docker.io");
    assert_eq!(r["label"], "Docker Hub (registry-1.docker.io)");
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "Acme on GitHub", "registry_type": "ghcr", "namespace": "acme", "validate": false}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["url"], "ghcr.io/acme");
    assert_eq!(r["label"], "Acme on GitHub");

    for t in ["generic", "harbor", "ecr", "acr", "gcr"] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "x", "registry_type": t, "validate": false}),
            )
            .await;
        assert_eq!(s, 422, "{t}: {p}");
        assert_eq!(pointers(&p), ["/url"], "{t}: {p}");
        assert!(p.to_string().contains("required"), "{p}");
    }
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"registry_type": "dockerhub", "namespace": "Not A Name", "validate": false}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(pointers(&p), ["/namespace"]);
}

#[tokio::test]
async fn a_bad_proxy_is_refused_at_its_field() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    for (proxy, no_proxy, pointer) in [
        (
            format!("http://user:{secret}@proxy.internal:3128"),
            json!([]),
            "/proxy_url",
        ),
        (
            "socks5://proxy.internal:1080".to_owned(),
            json!([]),
            "/proxy_url",
        ),
        (
            "http://proxy.internal:3128/path".to_owned(),
            json!([]),
            "/proxy_url",
        ),
        // The cloud metadata address, whatever the allow list says.
        (
            "http://169.254.169.254:80".to_owned(),
            json!([]),
            "/proxy_url",
        ),
        (
            "http://[fd00:ec2::254]:80".to_owned(),
            json!([]),
            "/proxy_url",
        ),
        (
            "http://proxy.internal:3128".to_owned(),
            json!(["ok.internal", "*"]),
            "/no_proxy/1",
        ),
        (
            "http://proxy.internal:3128".to_owned(),
            json!(vec!["a.internal"; 33]),
            "/no_proxy",
        ),
    ] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "x", "url": "registry.internal", "registry_type": "generic",
                    "proxy_url": proxy, "no_proxy": no_proxy}),
            )
            .await;
        assert_eq!(s, 422, "{proxy}: {p}");
        assert_eq!(pointers(&p), [pointer], "{proxy}: {p}");
        assert!(!p.to_string().contains(&secret), "{p}");
    }
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "x", "url": "registry.internal", "registry_type": "generic",
                "proxy_url": "http://169.254.169.254:80"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        p["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("network guard"),
        "{p}"
    );
    assert!(env.event_types().await.is_empty(), "nothing registered");
}

/// Validation goes through the registry's proxy: HTTPS in a `CONNECT` tunnel, so the proxy
/// never reads the credentials; a host in `no_proxy`, and a registry without a proxy, are
/// reached directly. The proxy is saved, shown and published, and can be removed.
#[tokio::test]
async fn validation_goes_through_the_registrys_own_proxy() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let registry = TestRegistry::builder()
        .tls()
        .htpasswd("scanner", &secret)
        .start()
        .await
        .unwrap();
    let proxy = ForwardProxy::start("127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let host = format!("localhost:{}", registry.port());
    let body = |extra: Value| {
        let mut b = json!({"label": "proxied", "url": host, "registry_type": "generic",
            "ca_pem": registry.ca_pem(),
            "credentials": {"kind": "basic", "username": "scanner", "password": secret}});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };

    let (s, r) = svc
        .post(
            "/v1/registries",
            body(json!({"proxy_url": proxy.url(), "no_proxy": [".corp.internal"]})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["validation"]["ok"], true, "{r}");
    assert_eq!(r["proxy_url"], proxy.url());
    assert_eq!(r["no_proxy"], json!([".corp.internal"]));
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "validated through the proxy");
    for line in &seen {
        assert!(line.starts_with(&format!("CONNECT {host} ")), "{line}");
    }
    let received = String::from_utf8_lossy(&proxy.received()).into_owned();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("scanner:{secret}"))
    };
    assert!(!received.contains(&secret) && !received.contains(&basic));
    let id = r["id"].as_str().unwrap().to_owned();
    let registered = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RegistryRegistered(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(registered.proxy_url.as_deref(), Some(proxy.url().as_str()));
    assert_eq!(registered.no_proxy, [".corp.internal"]);

    // `no_proxy` takes the registry's host off the proxy; no proxy at all goes direct too.
    let before = proxy.connections();
    let (s, r) = svc
        .post(
            "/v1/registries",
            body(json!({"label": "direct", "proxy_url": proxy.url(), "no_proxy": ["localhost"]})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["validation"]["ok"], true, "{r}");
    let (s, r) = svc
        .post("/v1/registries", body(json!({"label": "no proxy"})))
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["proxy_url"], Value::Null);
    assert_eq!(proxy.connections(), before, "the proxy saw neither");

    // Removing the proxy.
    let (s, r, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            Some(json!({"proxy_url": null})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["proxy_url"], Value::Null);
    let updated = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RegistryUpdated(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!(updated.proxy_url, Some(None));
    // A proxy at a blocked address is refused on update too.
    let (s, p, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            Some(json!({"proxy_url": "http://169.254.169.254"})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(pointers(&p), ["/proxy_url"]);
    assert!(!env.db_dump().await.contains(&secret));
}

/// Over plain HTTP a proxy reads every request, credentials included: giving an insecure
/// registry with credentials another proxy needs the credentials again, and is validated
/// through the new proxy before it is saved.
#[tokio::test]
async fn a_new_proxy_of_a_plain_http_registry_needs_its_credentials_again() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let registry = TestRegistry::builder()
        .htpasswd("scanner", &secret)
        .start()
        .await
        .unwrap();
    let proxy = ForwardProxy::start("127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let host = format!("localhost:{}", registry.port());
    let creds = json!({"kind": "basic", "username": "scanner", "password": secret});
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "plain", "url": host, "registry_type": "generic", "insecure": true,
                "credentials": creds}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/registries/{id}");
    let (s, p, _) = svc
        .call(
            Method::PATCH,
            &path,
            Some(ADMIN),
            Some(json!({"proxy_url": proxy.url()})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "credentials-required", "{p}");
    assert_eq!(proxy.connections(), 0);
    let (s, r, _) = svc
        .call(
            Method::PATCH,
            &path,
            Some(ADMIN),
            Some(json!({"proxy_url": proxy.url(), "credentials": creds})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["proxy_url"], proxy.url());
    assert_eq!(r["status"], "validated", "{r}");
    assert!(
        proxy
            .seen()
            .iter()
            .any(|l| l.starts_with(&format!("GET http://{host}/v2/"))),
        "validated through the new proxy: {:?}",
        proxy.seen()
    );
}
