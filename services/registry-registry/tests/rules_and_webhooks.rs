//! Repository rules, sync now and registry webhooks.

mod common;

use common::{ADMIN, Env};
use imagelib_events::EventPayload;
use imagelib_events::model::SyncReason;
use imagelib_testkit::registry::TestRegistry;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn rules_are_validated_stored_listed_and_removed() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "rules").await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/v1/registries/{id}/rules/nim");
    let (s, rule, _) = svc
        .call(
            Method::PUT,
            &path,
            Some(ADMIN),
            Some(json!({"repositories": "nvidia/nim/*", "tags": {"include": ["^1\\."], "exclude": []},
                        "kind": "auto", "description": "NIM models", "hm_tags": ["gpu"], "enabled": true})),
        )
        .await;
    assert_eq!(s, 200, "{rule}");
    assert_eq!(rule["rule_id"], "nim");
    let (s, got) = svc.get(&path).await;
    assert_eq!(s, 200);
    assert_eq!(got, rule);

    let (s, p, _) = svc
        .call(
            Method::PUT,
            &format!("/v1/registries/{id}/rules/bad"),
            Some(ADMIN),
            Some(json!({"repositories": "/(unclosed/"})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["errors"][0]["pointer"], "/repositories", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("unclosed"), "{p}");
    let (s, _, _) = svc
        .call(
            Method::PUT,
            &format!("/v1/registries/{id}/rules/Bad%20Id"),
            Some(ADMIN),
            Some(json!({"repositories": "x"})),
        )
        .await;
    assert_eq!(s, 422);

    let yaml = "dispatcher:\n  capabilities:\n    provisioning:\n      images:\n        discovery:\n          registry:\n            postgres_repositories:\n              - name: postgresql\n                description: Community PostgreSQL\n";
    let res = svc
        .http
        .post(svc.url(&format!("/v1/registries/{id}/rules/import")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let imported: serde_json::Value = res.json().await.unwrap();
    assert_eq!(imported["items"][0]["kind"], "database");

    let (_, list) = svc.get(&format!("/v1/registries/{id}/rules")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (s, _, _) = svc.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(s, 204);
    let (s, _) = svc.get(&path).await;
    assert_eq!(s, 404);
    let types = env.event_types().await;
    assert_eq!(
        types
            .iter()
            .filter(|t| t.as_str() == "io.imagelib.rule.set.v1")
            .count(),
        2
    );
    assert_eq!(types.last().unwrap(), "io.imagelib.rule.removed.v1");
}

#[tokio::test]
async fn sync_now_and_webhooks_emit_scoped_sync_requests() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "hooks").await;
    let id = r["id"].as_str().unwrap().to_owned();

    let (s, a) = svc
        .post(&format!("/v1/registries/{id}/sync"), json!({}))
        .await;
    assert_eq!(s, 202, "{a}");
    let (s, _) = svc
        .post(
            &format!("/v1/registries/{id}/sync"),
            json!({"repository": "Not Valid"}),
        )
        .await;
    assert_eq!(s, 422);

    let (s, hook) = svc.get(&format!("/v1/registries/{id}/webhook")).await;
    assert_eq!(s, 200);
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let envelope = json!({"events": [
        {"id": "1", "action": "push", "target": {"repository": "nvidia/nim/llm", "tag": "1.0"}},
        {"id": "2", "action": "pull", "target": {"repository": "ignored"}}
    ]});
    let send = |auth: Option<String>| {
        let mut req = svc
            .http
            .post(svc.url(&format!("/v1/webhooks/{id}")))
            .header(
                "content-type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(envelope.to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401);
    assert_eq!(
        send(Some("Bearer wrong".into())).await.unwrap().status(),
        401
    );
    let res = send(Some(format!("Bearer {secret}"))).await.unwrap();
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["nvidia/nim/llm"]));

    let syncs: Vec<_> = env
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::SyncRequested(s) => {
                Some((s.reason, s.repository.map(|r| r.to_string()), e.actor))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        syncs,
        [
            (SyncReason::Manual, None, Some("admin".to_owned())),
            (
                SyncReason::Webhook,
                Some("nvidia/nim/llm".to_owned()),
                Some(format!("webhook:{id}"))
            ),
        ]
    );
    // A webhook for a registry that does not exist looks the same as a wrong secret.
    let res = svc
        .http
        .post(svc.url(&format!("/v1/webhooks/{}", uuid::Uuid::now_v7())))
        .header("authorization", format!("Bearer {secret}"))
        .body(envelope.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn rule_changes_honour_if_match() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "rules").await;
    let id = r["id"].as_str().unwrap();
    let rules = format!("/v1/registries/{id}/rules");
    let send = |method: Method, path: String, if_match: Option<String>| {
        let mut req = svc.http.request(method, svc.url(&path)).bearer_auth(ADMIN);
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        async move {
            let res = req
                .json(&json!({"repositories": "nvidia/nim/*", "kind": "auto"}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let etag = res
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = res.text().await.unwrap();
            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            (status, etag, body)
        }
    };
    // No rules yet: the list's ETag is the empty version, and it guards the first rule.
    let (s, empty, _) = send(Method::GET, rules.clone(), None).await;
    assert_eq!(s, 200);
    let empty = empty.unwrap();
    assert_eq!(empty, "\"0\"");
    let (s, first, body) = send(Method::PUT, format!("{rules}/a"), Some(empty.clone())).await;
    assert_eq!(s, 200, "{body}");
    let first = first.unwrap();
    assert_ne!(first, empty);
    let (_, got, _) = send(Method::GET, format!("{rules}/a"), None).await;
    assert_eq!(got.as_ref(), Some(&first), "GET shows the same version");

    // A stale ETag: 412, nothing appended, the rule unchanged.
    let events = env.event_types().await.len();
    let (s, _, p) = send(Method::PUT, format!("{rules}/b"), Some(empty.clone())).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (412, Some("precondition-failed")),
        "{p}"
    );
    let (s, _, p) = send(Method::DELETE, format!("{rules}/a"), Some(empty.clone())).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (412, Some("precondition-failed")),
        "{p}"
    );
    assert_eq!(env.event_types().await.len(), events);
    let (s, _, _) = send(Method::GET, format!("{rules}/b"), None).await;
    assert_eq!(s, 404);

    // Malformed: 400.
    let (s, _, p) = send(Method::PUT, format!("{rules}/b"), Some("1".into())).await;
    assert_eq!((s, p["code"].as_str()), (400, Some("bad-if-match")), "{p}");

    // The current ETag: the delete goes through.
    let (s, _, _) = send(Method::DELETE, format!("{rules}/a"), Some(first)).await;
    assert_eq!(s, 204);
    let (s, _, _) = send(Method::GET, format!("{rules}/a"), None).await;
    assert_eq!(s, 404);
}
