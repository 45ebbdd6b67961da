//! The Harbor profile in registration, against the fake Harbor (imagelib-testkit) in front
//! of a real `docker-registry`: a robot account validates through Harbor's API (Harbor
//! refuses it `_catalog`), a project-scoped registration checks its project, and Harbor's
//! push webhooks (Default and CloudEvents, posted over HTTP as Harbor posts them) request
//! a scan of their repository only.

mod common;

use common::Env;
use imagelib_events::EventPayload;
use imagelib_events::model::SyncReason;
use imagelib_testkit::harbor::FakeHarbor;
use imagelib_testkit::registry::TestRegistry;
use serde_json::json;

const ROBOT: &str = "robot$ai+scanner";
const SECRET: &str = "harborRobotS3cret";

fn registration(host: &str, path: &str, secret: &str) -> serde_json::Value {
    json!({"label": "Acme Harbor", "url": format!("{host}{path}"), "registry_type": "harbor",
           "insecure": true,
           "credentials": {"kind": "basic", "username": ROBOT, "password": secret}})
}

#[tokio::test]
async fn a_robot_validates_through_harbors_api_and_its_project_is_checked() {
    let registry = TestRegistry::start().await.unwrap();
    let harbor = FakeHarbor::start(&registry).await;
    harbor.project("ai", false, &["llm"]);
    harbor.project("web", false, &["site"]);
    harbor.robot(ROBOT, SECRET, &["ai"]);
    let env = Env::new();
    let svc = env.start().await;
    let host = harbor.host();

    // The whole Harbor: `_catalog` is refused, the robot's projects are listed.
    let (s, r) = svc
        .post("/v1/registries", registration(&host, "", SECRET))
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["catalog_access"], false, "{r}");
    let paths: Vec<String> = harbor.seen().iter().map(|q| q.path().to_owned()).collect();
    assert!(paths.iter().any(|p| p == "/v2/_catalog"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "/api/v2.0/projects"), "{paths:?}");

    // Its project: only that project is asked for.
    let before = harbor.seen().len();
    let (s, r) = svc
        .post("/v1/registries", registration(&host, "/ai", SECRET))
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "validated", "{r}");
    let paths: Vec<String> = harbor.seen()[before..]
        .iter()
        .map(|q| q.path().to_owned())
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/api/v2.0/projects/ai/repositories"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "/v2/_catalog"), "{paths:?}");

    // Another project, and one that does not exist: refused, saying what to do.
    for project in ["web", "nope"] {
        let (s, p) = svc
            .post(
                "/v1/registries",
                registration(&host, &format!("/{project}"), SECRET),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        assert_eq!(p["code"], "forbidden", "{p}");
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&format!("project `{project}`")), "{p}");
    }

    // A wrong secret: unauthorized, and the secret is not repeated.
    let (s, p) = svc
        .post("/v1/registries", registration(&host, "/ai", "wrongS3cret"))
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["code"], "unauthorized", "{p}");
    assert!(!p.to_string().contains("wrongS3cret"), "{p}");
}

#[tokio::test]
async fn harbor_push_webhooks_in_both_formats_request_a_scan_of_their_repository() {
    let env = Env::new();
    let svc = env.start().await;
    let (s, r) = svc
        .post(
            "/v1/registries",
            json!({"label": "hooks", "url": "127.0.0.1:1/ai", "registry_type": "harbor",
                   "insecure": true, "validate": false}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, hook) = svc.get(&format!("/v1/registries/{id}/webhook")).await;
    assert_eq!(s, 200, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let data = |repo: &str, name: &str| {
        json!({"resources": [{"digest": format!("sha256:{}", "a".repeat(64)), "tag": "v1",
                              "resource_url": format!("harbor.local/{repo}:v1")}],
               "repository": {"date_created": 1700000000, "name": name, "namespace": "ai",
                              "repo_full_name": repo, "repo_type": "private"}})
    };
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let mut req = svc
            .http
            .post(svc.url(&format!("/v1/webhooks/{id}")))
            .header("authorization", format!("Bearer {secret}"))
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (status, body)
        }
    };
    // Default.
    let default = json!({"type": "PUSH_ARTIFACT", "occur_at": 1700000000, "operator": "robot$ai+ci",
                         "event_data": data("ai/llm", "llm")});
    let (s, b) = post(
        vec![("content-type", "application/json".into())],
        default.to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["repositories"], json!(["ai/llm"]));
    // CloudEvents, structured.
    let structured = json!({"specversion": "1.0", "id": "e1", "requestid": "r1",
        "source": "/projects/2/webhook/policies/15", "type": "harbor.artifact.pushed",
        "datacontenttype": "application/json", "time": "2026-12-04T08:00:00Z",
        "operator": "robot$ai+ci", "data": data("ai/models/embed", "models/embed")});
    let (s, b) = post(
        vec![("content-type", "application/cloudevents+json".into())],
        structured.to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["repositories"], json!(["ai/models/embed"]));
    // CloudEvents, binary.
    let (s, b) = post(
        vec![
            ("content-type", "application/json".into()),
            ("ce-specversion", "1.0".into()),
            ("ce-id", "e2".into()),
            ("ce-source", "/projects/2/webhook/policies/15".into()),
            ("ce-type", "harbor.artifact.deleted".into()),
        ],
        data("ai/old", "old").to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["repositories"], json!(["ai/old"]));

    let syncs: Vec<_> = env
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::SyncRequested(s) => Some((s.reason, s.repository.map(|r| r.to_string()))),
            _ => None,
        })
        .collect();
    assert_eq!(
        syncs,
        [
            (SyncReason::Webhook, Some("ai/llm".to_owned())),
            (SyncReason::Webhook, Some("ai/models/embed".to_owned())),
            (SyncReason::Webhook, Some("ai/old".to_owned())),
        ]
    );
}
