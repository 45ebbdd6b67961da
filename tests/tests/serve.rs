//! `imagelib serve` and each service binary start, connect, ensure the stream, answer
//! health, readiness and OpenAPI, refuse bad requests with problems, and drain on stop.

use imagelib_e2e::TestServer;
use imagelib_platform::http::HttpOptions;

#[tokio::test]
async fn all_in_one_serves_health_readiness_and_openapi() {
    let server = TestServer::start().await.unwrap();
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let ready = server.wait_ready().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    for service in [
        "registry-registry",
        "sync-scanner",
        "catalog-projector",
        "serving-deployer",
    ] {
        assert_eq!(
            ready["checks"][format!("{service}.stream")]["ready"],
            true,
            "{ready}"
        );
    }

    let api: serde_json::Value = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3.1"), "{api}");
    assert_eq!(api["info"]["title"], "imagelib");
    // The bearer scheme, on every /v1 operation but the webhook (its own secret).
    assert_eq!(
        api["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer",
            "description": api["components"]["securitySchemes"]["bearer"]["description"]})
    );
    let paths = api["paths"].as_object().unwrap();
    assert!(paths.len() > 20, "{}", paths.len());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let security = &op["security"];
            if path.starts_with("/v1/webhooks/") || !path.starts_with("/v1/") {
                assert!(security.is_null(), "{method} {path}: {security}");
            } else {
                assert_eq!(
                    security,
                    &serde_json::json!([{"bearer": []}]),
                    "{method} {path}"
                );
            }
        }
    }
    assert!(paths["/v1/webhooks/{registry_id}"]["post"].is_object());

    // The stream exists with the configured name and subjects.
    let client = server.stream.client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&server.stream.name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        vec![format!("{}.>", server.stream.prefix)]
    );

    // Each service has its own schema, migrated.
    let pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'stream_position' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        schemas,
        [
            "catalog",
            "registry_registry",
            "serving_deployer",
            "sync_scanner"
        ]
    );
    pool.close().await;

    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let server = TestServer::start().await.unwrap();
    let res = server.http.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["code"], "not-found");

    let res = server
        .http
        .post(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "method-not-allowed");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_configuration_is_refused_at_start() {
    let stream = imagelib_testkit::TestStream::new();
    let db = imagelib_testkit::TestDb::new();
    let mut config = TestServer::config(&stream, &db, std::path::Path::new("/tmp"));
    config.subject_prefix = "bad.>".into();
    let err = imagelib::serve::build(imagelib::serve::Configs::from_common(config))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("IMAGELIB_SUBJECT_PREFIX"), "{err}");
}

/// Every service also runs as a process of its own, on its own port.
#[tokio::test]
#[allow(clippy::needless_update)] // not every service has settings of its own yet
async fn each_service_starts_alone_and_stops_gracefully() {
    macro_rules! check {
        ($krate:ident) => {{
            let stream = imagelib_testkit::TestStream::new();
            let db = imagelib_testkit::TestDb::new();
            let common = TestServer::config(&stream, &db, std::path::Path::new("/tmp"));
            let config = $krate::config::Config {
                common,
                ..Default::default()
            };
            let app = $krate::startup::Application::build(config).await.unwrap();
            let addr = app.local_addr();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(app.run_until_stopped(async move {
                let _ = rx.await;
            }));
            let ready = imagelib_e2e::wait_ready(&reqwest::Client::new(), addr)
                .await
                .unwrap();
            assert_eq!(ready["status"], "ready");
            assert!(
                ready["checks"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .all(|k| k.starts_with($krate::NAME)),
                "{ready}"
            );
            tx.send(()).unwrap();
            task.await.unwrap().unwrap();
            assert!(
                reqwest::get(format!("http://{addr}/healthz"))
                    .await
                    .is_err(),
                "stopped listening"
            );
        }};
    }
    check!(registry_registry);
    check!(sync_scanner);
    check!(catalog_projector);
    check!(serving_deployer);
    let _ = HttpOptions::default();
}
