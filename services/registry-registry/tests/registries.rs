//! registry-registry over HTTP against real `docker-registry` processes, a real NATS
//! JetStream and a real PostgreSQL.

mod common;

use common::{ADMIN, Env, VIEWER_DB, VIEWER_ML};
use imagelib_testkit::proxy::{Action, FaultProxy, Response as ProxyResponse};
use imagelib_testkit::registry::TestRegistry;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn registers_an_open_registry_validated_and_published() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "Local registry").await;
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["auth_kind"], "none");
    assert_eq!(r["catalog_access"], true);
    assert_eq!(r["validation"]["ok"], true);
    let id = r["id"].as_str().unwrap();

    let (s, got) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(got["label"], "Local registry");
    assert_eq!(got["url"], format!("127.0.0.1:{}", registry.port()));
    let (_, list) = svc.get("/v1/registries").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    assert_eq!(
        env.event_types().await,
        [
            "io.imagelib.registry.registered.v1",
            "io.imagelib.registry.validated.v1"
        ]
    );
    let events = env.events().await;
    assert_eq!(events[0].actor.as_deref(), Some("admin"));
    assert!(events[0].traceparent.is_some());
}

#[tokio::test]
async fn validation_failures_refuse_the_add_with_a_precise_reason() {
    let env = Env::new();
    let svc = env.start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let cases = [
        (
            json!({"url": format!("127.0.0.1:{closed_port}"), "insecure": true}),
            "connect",
        ),
        (json!({"url": "no-such-registry.invalid"}), "dns"),
        // This very service is an HTTP server, but not a registry.
        (
            json!({"url": svc.addr.to_string(), "insecure": true}),
            "not_a_registry",
        ),
        (
            json!({"url": "169.254.169.254", "insecure": true}),
            "blocked",
        ),
    ];
    for (extra, reason) in cases {
        let mut body = json!({"label": "x", "registry_type": "generic"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, p) = svc.post("/v1/registries", body).await;
        assert_eq!(s, 422, "{reason}: {p}");
        assert_eq!(p["code"], reason, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("validate"), "{p}");
    }
    // Nothing was registered.
    assert!(env.event_types().await.is_empty());

    // Saved without validation: pending.
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "later", "url": format!("127.0.0.1:{closed_port}"), "registry_type": "generic", "insecure": true, "validate": false}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "pending");
    // Revalidating records the failure as an event.
    let id = r["id"].as_str().unwrap();
    let (s, r) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "validation_failed");
    assert_eq!(r["status_reason"], "connect");
    assert_eq!(
        env.event_types().await.last().unwrap(),
        "io.imagelib.registry.validation_failed.v1"
    );
}

/// The reasons a misbehaving registry gives, through a fault-injecting proxy in front of
/// a real registry: no catalog scope, a stalled answer, a `429` that lasts too long.
#[tokio::test]
async fn forbidden_timeout_and_rate_limited_refuse_the_add() {
    let env = Env::new();
    let mut config = env.config();
    config.validation_timeout_secs = Some(1);
    let svc = env.start_with(config).await;
    let registry = TestRegistry::start().await.unwrap();
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", registry.port()).parse().unwrap();
    let denied = FaultProxy::start(Some(upstream), |req, _| {
        if req.path().starts_with("/v2/_catalog") {
            Action::Respond(ProxyResponse::new(
                403,
                &[("content-type", "application/json")],
                r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
            ))
        } else {
            Action::Forward
        }
    })
    .await;
    let stalled = FaultProxy::start(Some(upstream), |_, _| Action::Stall).await;
    let limited = FaultProxy::respond_always(ProxyResponse::new(
        429,
        &[("retry-after", "3600")],
        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
    ))
    .await;
    for (proxy, reason) in [
        (&denied, "forbidden"),
        (&stalled, "timeout"),
        (&limited, "rate_limited"),
    ] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": reason, "url": proxy.host(), "registry_type": "generic", "insecure": true}),
            )
            .await;
        assert_eq!(s, 422, "{reason}: {p}");
        assert_eq!(p["code"], reason, "{p}");
        assert!(
            !proxy.seen().is_empty(),
            "{reason}: the proxy was not asked"
        );
    }
    assert!(env.event_types().await.is_empty());
}

#[tokio::test]
async fn basic_auth_is_validated_and_the_password_is_never_in_the_clear() {
    let env = Env::new();
    let svc = env.start().await;
    let canary = format!("canary-{}", imagelib_testkit::unique_id());
    let registry = TestRegistry::builder()
        .htpasswd("scanner", &canary)
        .start()
        .await
        .unwrap();
    let url = format!("127.0.0.1:{}", registry.port());

    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "auth", "url": url, "registry_type": "generic", "insecure": true,
                   "credentials": {"kind": "basic", "username": "scanner", "password": "wrong-password"}}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "unauthorized");

    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "auth", "url": url, "registry_type": "generic", "insecure": true,
                   "credentials": {"kind": "basic", "username": "scanner", "password": canary}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated");
    assert_eq!(r["auth_kind"], "basic");
    let id = r["id"].as_str().unwrap().to_owned();

    // Revalidation opens the sealed credential and still passes.
    let (s, v) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["validation"]["ok"], true, "{v}");

    // The canary is nowhere: stream bytes, database, API responses.
    let mut responses = String::new();
    for path in [
        format!("/v1/registries/{id}"),
        "/v1/registries".into(),
        format!("/v1/registries/{id}/rules"),
    ] {
        responses.push_str(&svc.get(&path).await.1.to_string());
    }
    responses.push_str(&r.to_string());
    responses.push_str(&v.to_string());
    responses.push_str(&p.to_string());
    let raw = env.raw_stream().await;
    let dump = env.db_dump().await;
    assert!(
        !raw.windows(canary.len()).any(|w| w == canary.as_bytes()),
        "canary in the stream"
    );
    assert!(!dump.contains(&canary), "canary in the database");
    assert!(!responses.contains(&canary), "canary in an API response");
    assert!(
        dump.contains("AES-256-GCM"),
        "the credential is stored sealed"
    );
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_never_a_500() {
    let env = Env::new();
    let svc = env.start().await;
    let raw = |body: &'static str| {
        svc.http
            .post(svc.url("/v1/registries"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
    };
    let res = raw("{not json").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let res = raw(r#"{"label":"x","url":"r.io","registry_type":"quay"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let p: serde_json::Value = res.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("registry_type"),
        "{p}"
    );

    let res = raw(r#"{"label":"x","url":"r.io","registry_type":"generic","surprise":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);

    let res = svc
        .http
        .post(svc.url("/v1/registries"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    for (url, needle) in [
        ("https://user:pw@r.io", "user-info"),
        ("r.io/?q=1", "query"),
        ("http://r.io", "insecure"),
    ] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                json!({"label": "x", "url": url, "registry_type": "generic"}),
            )
            .await;
        assert_eq!(s, 422, "{url}: {p}");
        assert_eq!(p["errors"][0]["pointer"], "/url");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
        assert!(!p.to_string().contains("pw@"), "{p}");
    }

    let (s, _) = svc.get("/v1/registries/not-a-uuid").await;
    assert_eq!(s, 400);
    let (s, _) = svc
        .get(&format!("/v1/registries/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(s, 404);
    let (s, _) = svc.get("/v1/registries?limit=0").await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn roles_and_team_visibility() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let url = format!("127.0.0.1:{}", registry.port());
    let body = |label: &str, team: &str| json!({"label": label, "url": url, "registry_type": "generic", "insecure": true, "visibility": [team]});

    let (s, p, _) = svc
        .call(Method::POST, "/v1/registries", None, Some(body("x", "ml")))
        .await;
    assert_eq!(s, 401, "{p}");
    let (s, _, _) = svc
        .call(
            Method::POST,
            "/v1/registries",
            Some(VIEWER_ML),
            Some(body("x", "ml")),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = svc
        .call(
            Method::POST,
            "/v1/registries",
            Some("bogus"),
            Some(body("x", "ml")),
        )
        .await;
    assert_eq!(s, 401);

    let (_, ml) = svc.post("/v1/registries", body("ML registry", "ml")).await;
    let (_, db) = svc.post("/v1/registries", body("DB registry", "db")).await;
    let labels = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["label"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, l, _) = svc
        .call(Method::GET, "/v1/registries", Some(VIEWER_ML), None)
        .await;
    assert_eq!(labels(&l), ["ML registry"]);
    let (_, l, _) = svc
        .call(Method::GET, "/v1/registries", Some(VIEWER_DB), None)
        .await;
    assert_eq!(labels(&l), ["DB registry"]);
    // No token: a 401 (anonymous reads are off unless IMAGELIB_ANONYMOUS_READ).
    let (s, p, h) = svc.call(Method::GET, "/v1/registries", None, None).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (401, Some("unauthenticated")),
        "{p}"
    );
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let (_, l) = svc.get("/v1/registries").await;
    assert_eq!(labels(&l).len(), 2);
    let (s, _, _) = svc
        .call(
            Method::GET,
            &format!("/v1/registries/{}", db["id"].as_str().unwrap()),
            Some(VIEWER_ML),
            None,
        )
        .await;
    assert_eq!(s, 404, "another team's registry does not exist for you");
    let (s, _, _) = svc
        .call(
            Method::GET,
            &format!("/v1/registries/{}", ml["id"].as_str().unwrap()),
            Some(VIEWER_ML),
            None,
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn racing_updates_give_one_success_and_the_others_refused() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "before").await;
    let id = r["id"].as_str().unwrap().to_owned();
    let version = r["version"].as_u64().unwrap();
    let patch = |label: &'static str| {
        svc.http
            .patch(svc.url(&format!("/v1/registries/{id}")))
            .bearer_auth(ADMIN)
            .header("if-match", format!("\"{version}\""))
            .json(&json!({"label": label}))
            .send()
    };
    // Each loser was either checked after the winner landed (412) or passed the check and
    // lost at the append (409).
    let (a, b, c) = tokio::join!(patch("first"), patch("second"), patch("third"));
    let mut statuses = [a, b, c].map(|r| r.unwrap().status().as_u16());
    statuses.sort_unstable();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses[1..].iter().all(|s| [409, 412].contains(s)),
        "{statuses:?}"
    );
    let (_, now) = svc.get(&format!("/v1/registries/{id}")).await;
    assert!(["first", "second", "third"].contains(&now["label"].as_str().unwrap()));
}

#[tokio::test]
async fn if_match_preconditions_follow_rfc_9110() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "before").await;
    let id = r["id"].as_str().unwrap().to_owned();
    let patch = |if_match: Option<String>, label: &'static str| {
        let mut req = svc
            .http
            .patch(svc.url(&format!("/v1/registries/{id}")))
            .bearer_auth(ADMIN)
            .json(&json!({"label": label}));
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let etag = res
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let ctype = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = res.json().await.unwrap();
            (status, etag, ctype, body)
        }
    };
    let (s, _, headers) = svc
        .call(
            Method::GET,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", r["version"]));

    // The current ETag: applied, with a new ETag.
    let (s, new_etag, _, body) = patch(Some(etag.clone()), "one").await;
    assert_eq!(s, 200, "{body}");
    let new_etag = new_etag.unwrap();
    assert_ne!(new_etag, etag);
    assert_eq!(body["label"], "one");

    // The old ETag is stale: 412, a problem, nothing appended.
    let events = env.event_types().await.len();
    let (s, _, ctype, p) = patch(Some(etag.clone()), "stale").await;
    assert_eq!(s, 412, "{p}");
    assert_eq!(p["code"], "precondition-failed", "{p}");
    assert_eq!(p["status"], 412);
    assert_eq!(ctype.as_deref(), Some("application/problem+json"));
    assert!(p["detail"].as_str().unwrap().contains(&new_etag), "{p}");
    // A weak tag never matches (strong comparison), even with the current version.
    let (s, _, _, p) = patch(Some(format!("W/{new_etag}")), "weak").await;
    assert_eq!(s, 412, "{p}");
    assert_eq!(
        env.event_types().await.len(),
        events,
        "a failed precondition appends nothing"
    );

    // A list matches when any tag does; `*` matches the existing registry.
    let (s, listed, _, p) = patch(Some(format!("{etag}, {new_etag}")), "two").await;
    assert_eq!(s, 200, "{p}");
    let (s, _, _, p) = patch(Some("*".into()), "three").await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["label"], "three");
    assert_ne!(listed, Some(new_etag));

    // Malformed: a 400 problem, not a 412.
    for bad in ["7", "\"7", "W/7", "\"a\"b\""] {
        let (s, _, _, p) = patch(Some(bad.into()), "bad").await;
        assert_eq!(
            (s, p["code"].as_str()),
            (400, Some("bad-if-match")),
            "{bad}: {p}"
        );
    }

    // Without If-Match the current version is used.
    let (s, _, _, p) = patch(None, "unconditional").await;
    assert_eq!(s, 200, "{p}");
}

#[tokio::test]
async fn removal_shreds_the_credentials_and_state_survives_a_restart() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::builder()
        .htpasswd("u", "p4ss")
        .start()
        .await
        .unwrap();
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "gone soon", "url": format!("127.0.0.1:{}", registry.port()), "registry_type": "generic",
                   "insecure": true, "credentials": {"kind": "basic", "username": "u", "password": "p4ss"}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let keep = svc
        .register_open(&TestRegistry::start().await.unwrap(), "kept")
        .await;
    let id: imagelib_events::RegistryId = r["id"].as_str().unwrap().parse().unwrap();
    let (s, _, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(s, 404);
    let (s, _, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // The sealed credential is still in the append-only log, but cannot be opened.
    let events = env.events().await;
    let sealed = events
        .iter()
        .find_map(|e| match &e.payload {
            imagelib_events::EventPayload::RegistryRegistered(r) if r.registry_id == id => {
                r.credential.clone()
            }
            _ => None,
        })
        .unwrap();
    let client = env.stream.client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let keyring = std::sync::Arc::new(
        imagelib_secrets::MasterKeyring::load(&svc.config.common.master_key_file).unwrap(),
    );
    let vault = imagelib_secrets::Vault::connect(
        &js,
        &imagelib_secrets::bucket_for_stream(&env.stream.name),
        1,
        keyring,
    )
    .await
    .unwrap();
    let err = vault.open_for(id, &sealed).await.unwrap_err();
    assert!(
        matches!(err, imagelib_secrets::SecretsError::Shredded(_)),
        "{err}"
    );
    assert_eq!(
        env.event_types().await.last().unwrap(),
        "io.imagelib.registry.removed.v1"
    );
    svc.stop().await;

    // Same database: state is there. Fresh database: rebuilt from the stream.
    let again = env.start().await;
    let (_, list) = again.get("/v1/registries").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    again.stop().await;
    let fresh_db = imagelib_testkit::TestDb::new();
    let mut config = env.config();
    config.common.database_url = fresh_db.url.clone();
    let rebuilt = env.start_with(config).await;
    for _ in 0..100 {
        let (s, _, _) = rebuilt.call(Method::GET, "/readyz", None, None).await;
        if s == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, list) = rebuilt.get("/v1/registries").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], keep["id"]);
    assert_eq!(items[0]["status"], "validated");
}

#[tokio::test]
async fn the_last_scan_shows_on_the_registry() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "scanned").await;
    assert!(r["last_sync"].is_null());
    let id: imagelib_events::RegistryId = r["id"].as_str().unwrap().parse().unwrap();
    let bus = imagelib_events::bus::EventBus::from_client(
        env.stream.client().await.unwrap(),
        imagelib_events::bus::StreamSettings::new(&env.stream.name, &env.stream.prefix),
    );
    let sync_id = imagelib_events::SyncId::new();
    for payload in [
        imagelib_events::EventPayload::from(imagelib_events::event::SyncStarted {
            registry_id: id,
            sync_id,
            repository: None,
            reason: imagelib_events::model::SyncReason::Manual,
        }),
        imagelib_events::event::SyncCompleted {
            registry_id: id,
            sync_id,
            repositories: 3,
            tags_seen: 40,
            added: 40,
            moved: 0,
            removed: 0,
            requests: 47,
            duration_ms: 120,
            partial: false,
            rate_limited: vec![],
            incomplete: vec![],
            incomplete_more: 0,
        }
        .into(),
    ] {
        bus.publish(&imagelib_events::Envelope::new("sync-scanner", payload))
            .await
            .unwrap();
    }
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = svc.get(&format!("/v1/registries/{id}")).await.1;
        if last["last_sync"]["state"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last["last_sync"]["state"], "completed", "{last}");
    assert_eq!(last["last_sync"]["summary"]["tags_seen"], 40);
    // A sync event changes nothing of the registry's own version.
    assert_eq!(last["version"], r["version"]);
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_for_its_registry() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::builder().tls().start().await.unwrap();
    let url = registry.host();
    let (s, p) = svc
        .post(
            "/v1/registries",
            json!({"label": "tls", "url": url, "registry_type": "generic"}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "tls");
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "tls", "url": url, "registry_type": "generic", "ca_pem": registry.ca_pem().unwrap()}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated");
    assert_eq!(r["has_custom_ca"], true);
}

/// The logs of a whole registration, validation, revalidation and removal at TRACE level
/// never hold the password. The server runs on this test's thread so the subscriber sees
/// every task.
#[tokio::test(flavor = "current_thread")]
async fn the_password_is_never_in_the_logs() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::new();
    let svc = env.start().await;
    let canary = format!("log-canary-{}", imagelib_testkit::unique_id());
    let registry = TestRegistry::builder()
        .htpasswd("scanner", &canary)
        .start()
        .await
        .unwrap();
    let body = json!({"label": "logged", "url": format!("127.0.0.1:{}", registry.port()), "registry_type": "generic",
                      "insecure": true, "credentials": {"kind": "basic", "username": "scanner", "password": canary}});
    let (s, r) = svc.post("/v1/registries", body).await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, _) = svc
        .post(&format!("/v1/registries/{id}/validate"), json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/registries/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.len() > 1000,
        "the subscriber captured the service's logs: {} bytes",
        logs.len()
    );
    assert!(
        logs.contains("register_registry"),
        "spans of the handler are there"
    );
    assert!(!logs.contains(&canary), "the password is in the logs");
}
