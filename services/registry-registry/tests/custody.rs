//! Credentials bound to their host (issue 11, item 2), against real `docker-registry`
//! processes, a real NATS JetStream (its KV bucket included) and a real PostgreSQL: moves
//! need new credentials, token realms only on allowed hosts, removal shreds through a
//! step that survives a restart, a lost master key never stops the service.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{ADMIN, Env};
use imagelib_events::RegistryId;
use imagelib_secrets::{KeyStore, MasterKeyring};
use imagelib_testkit::proxy::{FaultProxy, Response as ProxyResponse};
use imagelib_testkit::registry::{TestRegistry, TokenAuth};
use reqwest::Method;
use serde_json::{Value, json};

fn canary() -> String {
    format!("canary-{}", imagelib_testkit::unique_id())
}

async fn htpasswd(user: &str, password: &str) -> TestRegistry {
    TestRegistry::builder()
        .htpasswd(user, password)
        .start()
        .await
        .unwrap()
}

fn basic(user: &str, password: &str) -> Value {
    json!({"kind": "basic", "username": user, "password": password})
}

async fn patch(svc: &common::Service, id: &str, body: Value) -> (u16, Value) {
    let (s, b, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            Some(body),
        )
        .await;
    (s, b)
}

async fn put_credentials(svc: &common::Service, id: &str, body: Value) -> (u16, Value) {
    let (s, b, _) = svc
        .call(
            Method::PUT,
            &format!("/v1/registries/{id}/credentials"),
            Some(ADMIN),
            Some(body),
        )
        .await;
    (s, b)
}

/// A key store of the test's own connection, as another process would see the bucket.
async fn key_store(env: &Env) -> KeyStore {
    let client = env.stream.client().await.unwrap();
    let js = jetstream::new(client);
    KeyStore::open(
        &js,
        &imagelib_secrets::bucket_for_stream(&env.stream.name),
        1,
    )
    .await
    .unwrap()
}

fn seen_text(proxy: &FaultProxy) -> String {
    proxy
        .seen()
        .iter()
        .map(|r| format!("{} {} {:?}", r.method, r.target, r.headers))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_move_needs_new_credentials_and_the_old_ones_never_reach_the_new_host() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let a = htpasswd("scanner", &secret).await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "a", "url": format!("127.0.0.1:{}", a.port()), "registry_type": "generic",
                   "insecure": true, "credentials": basic("scanner", &secret)}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let events_before = env.event_types().await.len();

    // Another host, which records everything it receives.
    let elsewhere = FaultProxy::respond_always(ProxyResponse::new(
        401,
        &[("www-authenticate", "Basic realm=\"elsewhere\"")],
        "",
    ))
    .await;
    let b64 = |u: &str, p: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    };
    for (body, field) in [
        (json!({"url": elsewhere.host()}), "url"),
        (json!({"insecure": false}), "insecure"),
        (json!({"registry_type": "harbor"}), "registry_type"),
        (json!({"auth_hosts": ["auth.example.com"]}), "auth_hosts"),
        (json!({"url": elsewhere.host(), "label": "moved"}), "url"),
    ] {
        let (s, p) = patch(&svc, &id, body.clone()).await;
        assert_eq!(s, 422, "{body}: {p}");
        assert_eq!(p["code"], "credentials-required", "{p}");
        assert!(p["detail"].as_str().unwrap().contains(field), "{p}");
        assert_eq!(p["errors"][0]["pointer"], "/credentials", "{p}");
    }
    assert!(elsewhere.seen().is_empty(), "{}", seen_text(&elsewhere));
    assert_eq!(
        env.event_types().await.len(),
        events_before,
        "nothing emitted"
    );

    // New credentials that do not work there: validated first, refused, nothing emitted.
    let (s, p) = patch(
        &svc,
        &id,
        json!({"url": elsewhere.host(), "credentials": basic("other", "other-pass")}),
    )
    .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "unauthorized", "{p}");
    assert_eq!(env.event_types().await.len(), events_before);
    let seen = seen_text(&elsewhere);
    assert!(seen.contains(&b64("other", "other-pass")), "{seen}");
    assert!(!seen.contains(&b64("scanner", &secret)) && !seen.contains(&secret));

    // A label or interval change needs nothing.
    let (s, p) = patch(&svc, &id, json!({"label": "renamed"})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "validated");

    // A move with the new registry's credentials: validated, one event carries both.
    let other_secret = canary();
    let b = htpasswd("robot", &other_secret).await;
    let (s, p) = patch(
        &svc,
        &id,
        json!({"url": format!("127.0.0.1:{}", b.port()), "credentials": basic("robot", &other_secret)}),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "validated", "{p}");
    assert_eq!(p["url"], format!("127.0.0.1:{}", b.port()));
    let events = env.events().await;
    let updated = events
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            imagelib_events::EventPayload::RegistryUpdated(u) if u.url.is_some() => Some(u),
            _ => None,
        })
        .unwrap();
    assert!(updated.credential.is_some() && updated.auth_kind.is_some());
    assert_eq!(
        env.event_types().await.last().unwrap(),
        "io.imagelib.registry.validated.v1"
    );
    // The stored credentials are the new ones.
    let (s, v) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["validation"]["ok"], true, "{v}");
    let raw = env.raw_stream().await;
    for c in [&secret, &other_secret] {
        assert!(!raw.windows(c.len()).any(|w| w == c.as_bytes()));
    }

    // A registry without credentials moves freely (and is validated there).
    let open = svc
        .register_open(&TestRegistry::start().await.unwrap(), "open")
        .await;
    let open_id = open["id"].as_str().unwrap();
    let (s, p) = patch(
        &svc,
        open_id,
        json!({"url": format!("127.0.0.1:{}", a.port())}),
    )
    .await;
    assert_eq!(s, 422, "validated there, and `a` wants a password: {p}");
    assert_eq!(p["code"], "unauthorized");
    let c = TestRegistry::start().await.unwrap();
    let (s, p) = patch(
        &svc,
        open_id,
        json!({"url": format!("127.0.0.1:{}", c.port())}),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "validated");
}

#[tokio::test]
async fn a_token_realm_on_another_host_is_refused_unless_listed() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let registry = TestRegistry::builder()
        .token_auth(TokenAuth {
            credentials: Some(("scanner".into(), secret.clone())),
            realm_host: Some("localhost".into()),
            ..TokenAuth::default()
        })
        .start()
        .await
        .unwrap();
    let url = format!("127.0.0.1:{}", registry.port());
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "t", "url": url, "registry_type": "generic", "insecure": true,
                   "credentials": basic("scanner", &secret)}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "realm_not_allowed", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("auth_hosts"), "{p}");
    assert!(!p.to_string().contains(&secret));
    let server = registry.token_server().unwrap();
    assert!(server.requests().is_empty(), "the other host got nothing");

    for bad in [json!(["https://localhost"]), json!(["localhost:80"])] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "t", "url": url, "registry_type": "generic", "insecure": true,
                       "auth_hosts": bad, "credentials": basic("scanner", &secret)}),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        assert_eq!(p["errors"][0]["pointer"], "/auth_hosts/0", "{p}");
    }

    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "t", "url": url, "registry_type": "generic", "insecure": true,
                   "auth_hosts": ["LocalHost"], "credentials": basic("scanner", &secret)}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated");
    assert_eq!(r["auth_hosts"], json!(["localhost"]));
    assert!(server.requests().iter().all(|r| r.authenticated));
    let registered = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            imagelib_events::EventPayload::RegistryRegistered(r) => Some(r),
            _ => None,
        });
    assert_eq!(registered.unwrap().auth_hosts, vec!["localhost".to_owned()]);

    // Dropping the host needs nothing; the realm is then refused again.
    let id = r["id"].as_str().unwrap();
    let (s, p) = patch(&svc, id, json!({"auth_hosts": []})).await;
    assert_eq!(s, 200, "{p}");
    let (s, v) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["validation"]["reason"], "realm_not_allowed", "{v}");
    assert_eq!(v["status_reason"], "realm_not_allowed", "{v}");
}

#[tokio::test]
async fn cloud_credentials_for_a_host_of_another_cloud_are_refused_before_any_exchange() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let url = format!("127.0.0.1:{}", registry.port());
    for (registry_type, credentials, needle) in [
        (
            "ecr",
            json!({"kind": "aws_ecr", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "canary-aws", "region": "eu-west-1"}),
            "dkr.ecr.eu-west-1",
        ),
        (
            "acr",
            json!({"kind": "azure_service_principal", "tenant_id": "t", "client_id": "c", "client_secret": "canary-aad"}),
            ".azurecr.io",
        ),
    ] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "cloud", "url": url, "registry_type": registry_type, "insecure": true,
                       "credentials": credentials}),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        assert_eq!(p["code"], "host_not_allowed", "{p}");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
        assert!(!p.to_string().contains("canary"));
    }
    assert!(env.event_types().await.is_empty());
}

#[tokio::test]
async fn a_failed_shred_is_retried_after_a_restart_until_the_key_is_gone() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let registry = htpasswd("scanner", &secret).await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "doomed", "url": format!("127.0.0.1:{}", registry.port()), "registry_type": "generic",
                   "insecure": true, "credentials": basic("scanner", &secret)}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id: RegistryId = r["id"].as_str().unwrap().parse().unwrap();
    let keyring = MasterKeyring::load(&svc.config.common.master_key_file).unwrap();
    let store = key_store(&env).await;
    assert!(store.check(&keyring, id).await.unwrap());

    // The key bucket is full (a real NATS limit, discard new): the shred's first write fails.
    let client = env.stream.client().await.unwrap();
    let js = jetstream::new(client);
    let bucket_stream = format!(
        "KV_{}",
        imagelib_secrets::bucket_for_stream(&env.stream.name)
    );
    let mut kv_stream = js.get_stream(&bucket_stream).await.unwrap();
    let info = kv_stream.info().await.unwrap().clone();
    let mut full = info.config.clone();
    full.max_messages = info.state.messages as i64;
    js.update_stream(full).await.unwrap();

    let (s, _, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204, "removal is accepted; the shred is retried");
    let (s, _) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        store.check(&keyring, id).await.unwrap(),
        "the key survived the failed shred (and the shredder's retry)"
    );
    svc.stop().await;

    // The bucket has room again; a restarted service finishes the job.
    let mut room = info.config.clone();
    room.max_messages = -1;
    js.update_stream(room).await.unwrap();
    let again = env.start().await;
    let mut gone = false;
    for _ in 0..100 {
        if !store.check(&keyring, id).await.unwrap() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the data key was destroyed after the restart");
    assert!(store.is_shredded(id).await.unwrap());
    let raw: Vec<String> = {
        let state = kv_stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = kv_stream.get_raw_message(seq).await {
                out.push(m.subject.to_string());
            }
        }
        out
    };
    let key_subject = format!(
        "$KV.{}.{id}",
        imagelib_secrets::bucket_for_stream(&env.stream.name)
    );
    assert!(
        !raw.contains(&key_subject),
        "no message of the key is left: {raw:?}"
    );
    again.stop().await;
}

#[tokio::test]
async fn a_lost_master_key_leaves_the_service_up_and_new_credentials_recover() {
    let env = Env::new();
    let svc = env.start().await;
    let secret = canary();
    let registry = htpasswd("scanner", &secret).await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "private", "url": format!("127.0.0.1:{}", registry.port()), "registry_type": "generic",
                   "insecure": true, "credentials": basic("scanner", &secret)}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let open = svc
        .register_open(&TestRegistry::start().await.unwrap(), "open")
        .await;
    let key_file = svc.config.common.master_key_file.clone();
    let lost_id = MasterKeyring::load(&key_file)
        .unwrap()
        .primary_id()
        .to_owned();
    svc.stop().await;

    // A second clone of the quickstart, or a deleted `.imagelib/`: a new key file.
    std::fs::remove_file(&key_file).unwrap();
    let svc = env.start().await;
    let new_id = MasterKeyring::load(&key_file)
        .unwrap()
        .primary_id()
        .to_owned();
    assert_ne!(new_id, lost_id);
    let (s, v) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "credentials_unavailable", "{v}");
    assert_eq!(v["status_reason"], "credentials_unavailable");
    let detail = v["status_detail"].as_str().unwrap();
    assert!(detail.contains(&lost_id), "{detail}");
    assert!(detail.contains("/credentials"), "{detail}");
    let (_, list) = svc.get("/v1/registries").await;
    let open_now = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == open["id"])
        .unwrap();
    assert_eq!(open_now["status"], "validated", "everything else runs");

    let (s, p) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["code"], "credentials-unavailable", "{p}");

    // Entering the credentials again: a new data key under the new master key.
    let (s, v) =
        put_credentials(&svc, &id, json!({"credentials": basic("scanner", &secret)})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "validated", "{v}");
    let (s, v) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["validation"]["ok"], true, "{v}");
    let (s, w) = svc.get(&format!("/v1/registries/{id}/webhook")).await;
    assert_eq!(s, 200, "a new webhook secret: {w}");
    assert!(!w["secret"].as_str().unwrap().is_empty());
    let store = key_store(&env).await;
    let keyring = MasterKeyring::load(&key_file).unwrap();
    assert!(store.check(&keyring, id.parse().unwrap()).await.unwrap());

    // Still recovered after a restart (the projection holds the new sealed values).
    svc.stop().await;
    let svc = env.start().await;
    let (_, v) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(v["status"], "validated", "{v}");
    svc.stop().await;
}
