//! Pull notifications counted into `image.pulls_counted`, against a real `docker-registry`
//! whose notifications point at the service, a real NATS JetStream and a real PostgreSQL;
//! Harbor's `PULL_ARTIFACT` bodies (Default and CloudEvents) are posted as Harbor posts
//! them.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::{Env, Service};
use imagelib_events::EventPayload;
use imagelib_events::event::PullsCounted;
use imagelib_testkit::registry::{ImageSpec, OCI_MANIFEST, TestRegistry};
use reqwest::Method;
use serde_json::{Value, json};

async fn start(env: &Env, window_secs: u64, max_keys: Option<usize>) -> Service {
    let mut config = env.config();
    config.pulls_window_secs = Some(window_secs);
    config.pulls_max_keys = max_keys;
    env.start_with(config).await
}

/// Registers a registry that is not validated (its address may come later) and returns
/// its id and webhook secret.
async fn register(
    svc: &Service,
    registry_type: &str,
    report_pulls: Option<bool>,
) -> (String, String) {
    let mut body = json!({"label": "pulls", "url": "127.0.0.1:1", "registry_type": registry_type,
        "insecure": true, "validate": false});
    if let Some(r) = report_pulls {
        body["report_pulls"] = json!(r);
    }
    let (s, r) = svc.post("/v1/registries", body).await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, hook) = svc.get(&format!("/v1/registries/{id}/webhook")).await;
    assert_eq!(s, 200, "{hook}");
    (id, hook["secret"].as_str().unwrap().to_owned())
}

async fn notify(
    svc: &Service,
    id: &str,
    secret: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = svc
        .http
        .post(svc.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(secret)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A distribution envelope with one manifest pull.
fn distribution_pull(
    repo: &str,
    digest: &str,
    tag: Option<&str>,
    method: &str,
    agent: &str,
) -> String {
    let mut target = json!({"mediaType": OCI_MANIFEST, "size": 100, "digest": digest,
        "length": 100, "repository": repo,
        "url": format!("http://127.0.0.1:5000/v2/{repo}/manifests/{digest}")});
    if let Some(t) = tag {
        target["tag"] = json!(t);
    }
    json!({"events": [{"id": imagelib_testkit::unique_id(), "timestamp": Utc::now().to_rfc3339(),
        "action": "pull", "target": target,
        "request": {"id": "r", "addr": "127.0.0.1:1", "host": "127.0.0.1:5000", "method": method,
            "useragent": agent},
        "actor": {}, "source": {"addr": "registry:5000"}}]})
    .to_string()
}

fn pulls_counted(events: &[imagelib_events::Envelope]) -> Vec<PullsCounted> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::PullsCounted(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// The `image.pulls_counted` events once `done` holds of them (or the deadline passes).
async fn wait_for_pulls(
    env: &Env,
    within: Duration,
    done: impl Fn(&[PullsCounted]) -> bool,
) -> Vec<PullsCounted> {
    let deadline = Instant::now() + within;
    loop {
        let found = pulls_counted(&env.events().await);
        if done(&found) || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn key(p: &PullsCounted) -> (String, String, Option<String>) {
    (
        p.repository.to_string(),
        p.digest.to_string(),
        p.tag.as_ref().map(|t| t.to_string()),
    )
}

fn total(found: &[PullsCounted], k: &(String, String, Option<String>)) -> u64 {
    found.iter().filter(|p| key(p) == *k).map(|p| p.pulls).sum()
}

#[tokio::test]
async fn manifest_pulls_from_a_real_registry_are_one_event_per_window() {
    let env = Env::new();
    let svc = start(&env, 3, None).await;
    let (id, secret) = register(&svc, "generic", Some(true)).await;
    let (s, view) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(view["report_pulls"], true, "{view}");

    let registry = TestRegistry::builder()
        .notify(
            &svc.url(&format!("/v1/webhooks/{id}")),
            &[("Authorization", &format!("Bearer {secret}"))],
        )
        .start()
        .await
        .unwrap();
    let (s, moved, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(common::ADMIN),
            Some(json!({"url": registry.host()})),
        )
        .await;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(moved["report_pulls"], true, "{moved}");
    let pushed = registry
        .push_image("team/app", "v1", &ImageSpec::linux_amd64())
        .await
        .unwrap();

    let started = Utc::now();
    let http = reqwest::Client::new();
    let get = |reference: String, method: Method, agent: &'static str| {
        http.request(
            method,
            format!("{}/v2/team/app/manifests/{reference}", registry.base_url()),
        )
        .header("accept", OCI_MANIFEST)
        .header("user-agent", agent)
        .send()
    };
    // Three pulls by tag, one by digest: those count.
    for _ in 0..3 {
        let r = get("v1".into(), Method::GET, "containerd/1.7.0")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = get(pushed.digest.clone(), Method::GET, "containerd/1.7.0")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A HEAD (a check), imagelib's own read and a blob read are no pulls.
    for _ in 0..2 {
        let r = get("v1".into(), Method::HEAD, "flux-image-reflector/2.0")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = get("v1".into(), Method::GET, "imagelib-sync-scanner/0.1.0")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!(
            "{}/v2/team/app/blobs/{}",
            registry.base_url(),
            pushed.config_digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let by_tag = (
        "team/app".to_owned(),
        pushed.digest.clone(),
        Some("v1".to_owned()),
    );
    let by_digest = ("team/app".to_owned(), pushed.digest.clone(), None);
    let found = wait_for_pulls(&env, Duration::from_secs(60), |f| {
        total(f, &by_tag) >= 3 && total(f, &by_digest) >= 1
    })
    .await;
    assert_eq!(
        found.len(),
        2,
        "one event per key and window: {found:?}\n{}",
        registry.log_tail()
    );
    // Nothing more comes after the window (the ignored reads stay ignored).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let found = pulls_counted(&env.events().await);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(total(&found, &by_tag), 3, "{found:?}");
    assert_eq!(total(&found, &by_digest), 1, "{found:?}");
    let now = Utc::now();
    for p in &found {
        assert_eq!(p.registry_id.to_string(), id);
        assert!(p.first_pulled_at <= p.last_pulled_at, "{p:?}");
        assert!(
            p.first_pulled_at >= started - TimeDelta::seconds(1) && p.last_pulled_at <= now,
            "{p:?} between {started} and {now}"
        );
    }
    let envelopes = env.events().await;
    let actor = envelopes
        .iter()
        .find(|e| matches!(e.payload, EventPayload::PullsCounted(_)))
        .and_then(|e| e.actor.clone());
    assert_eq!(actor, Some(format!("webhook:{id}")));
    // The push still asked for a scan of its repository.
    assert!(envelopes.iter().any(|e| matches!(&e.payload,
        EventPayload::SyncRequested(s) if s.repository.as_ref().map(|r| r.as_str()) == Some("team/app"))));
}

#[tokio::test]
async fn harbor_pull_artifact_default_and_cloudevents_bodies_are_counted() {
    let env = Env::new();
    let svc = start(&env, 2, None).await;
    let (id, secret) = register(&svc, "harbor", Some(true)).await;
    let d = digest('d');
    let repository = json!({"date_created": 1680501893, "name": "llm", "namespace": "ai",
        "repo_full_name": "ai/llm", "repo_type": "private"});
    let sent = Utc::now();
    let ten_minutes_ago = (sent - TimeDelta::minutes(10)).timestamp();

    // Default: a pull by tag, ten minutes ago.
    let default = json!({"type": "PULL_ARTIFACT", "occur_at": ten_minutes_ago,
        "operator": "robot$ai+ci",
        "event_data": {"resources": [{"digest": d, "tag": "v1",
            "resource_url": format!("harbor.local/ai/llm:v1")}], "repository": repository}});
    let (s, b, _) = notify(
        &svc,
        &id,
        &secret,
        &[("content-type", "application/json")],
        default.to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["pulls"], 1, "{b}");
    assert_eq!(b["repositories"], json!([]), "{b}");
    // Default, pulled by digest (Harbor then names the digest as the tag), at a time
    // before the epoch's first day: clamped to a day before arrival.
    let by_digest = json!({"type": "PULL_ARTIFACT", "occur_at": 1, "operator": "admin",
        "event_data": {"resources": [{"digest": d, "tag": d,
            "resource_url": format!("harbor.local/ai/llm@{d}")}], "repository": repository}});
    let (s, b, _) = notify(&svc, &id, &secret, &[], by_digest.to_string()).await;
    assert_eq!(s, 202, "{b}");

    // CloudEvents, structured, twice.
    let five_minutes_ago = (sent - TimeDelta::minutes(5)).to_rfc3339();
    let structured = json!({"specversion": "1.0", "id": "718eab63", "requestid": "bb4b5b91",
        "source": "/projects/2/webhook/policies/15", "type": "harbor.artifact.pulled",
        "datacontenttype": "application/json", "time": five_minutes_ago,
        "data": {"resources": [{"digest": d, "tag": "v1",
            "resource_url": "harbor.local/ai/llm:v1"}], "repository": repository},
        "operator": "admin"});
    for _ in 0..2 {
        let (s, b, _) = notify(
            &svc,
            &id,
            &secret,
            &[("content-type", "application/cloudevents+json")],
            structured.to_string(),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        assert_eq!(b["pulls"], 1, "{b}");
    }
    // CloudEvents, binary, claiming a time in the future: clamped to its arrival.
    let binary = json!({"resources": [{"digest": d, "tag": "v1"}], "repository": repository});
    let (s, b, _) = notify(
        &svc,
        &id,
        &secret,
        &[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "x"),
            ("ce-source", "/projects/2/webhook/policies/15"),
            ("ce-type", "harbor.artifact.pulled"),
            ("ce-time", "2099-01-01T00:00:00Z"),
        ],
        binary.to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["pulls"], 1, "{b}");
    let arrived = Utc::now();

    let by_tag_key = ("ai/llm".to_owned(), d.clone(), Some("v1".to_owned()));
    let by_digest_key = ("ai/llm".to_owned(), d.clone(), None);
    let found = wait_for_pulls(&env, Duration::from_secs(30), |f| {
        total(f, &by_tag_key) >= 4 && total(f, &by_digest_key) >= 1
    })
    .await;
    assert_eq!(found.len(), 2, "{found:?}");
    let tagged = found.iter().find(|p| key(p) == by_tag_key).unwrap();
    assert_eq!(tagged.pulls, 4);
    assert_eq!(tagged.first_pulled_at.timestamp(), ten_minutes_ago);
    assert!(
        tagged.last_pulled_at >= sent && tagged.last_pulled_at <= arrived,
        "{tagged:?}"
    );
    let untagged = found.iter().find(|p| key(p) == by_digest_key).unwrap();
    assert_eq!(untagged.pulls, 1);
    let a_day_before: DateTime<Utc> = sent - TimeDelta::hours(24);
    assert!(
        (untagged.first_pulled_at - a_day_before)
            .num_seconds()
            .abs()
            < 60,
        "{untagged:?}"
    );
}

#[tokio::test]
async fn pulls_of_a_registry_that_does_not_report_them_are_accepted_and_ignored() {
    let env = Env::new();
    let svc = start(&env, 1, None).await;
    let (id, secret) = register(&svc, "generic", None).await;
    let (_, view) = svc.get(&format!("/v1/registries/{id}")).await;
    assert_eq!(view["report_pulls"], false, "{view}");
    let pull = distribution_pull("team/app", &digest('a'), Some("v1"), "GET", "docker/27.0");
    let (s, b, _) = notify(&svc, &id, &secret, &[], pull.clone()).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["pulls"], 0, "{b}");
    let harbor = json!({"type": "PULL_ARTIFACT", "occur_at": 1,
        "event_data": {"resources": [{"digest": digest('a'), "tag": "v1"}],
            "repository": {"repo_full_name": "team/app"}}});
    let (s, b, _) = notify(&svc, &id, &secret, &[], harbor.to_string()).await;
    assert_eq!(s, 202, "{b}");
    // Whatever the pulls look like.
    let odd = distribution_pull("team/app", "sha256:short", Some("v1"), "GET", "docker/27.0");
    let (s, b, _) = notify(&svc, &id, &secret, &[], odd).await;
    assert_eq!(s, 202, "{b}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pulls_counted(&env.events().await).is_empty());

    // Opting in with PATCH: the next pull counts, and the choice survives a restart.
    let (s, v, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(common::ADMIN),
            Some(json!({"report_pulls": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["report_pulls"], true, "{v}");
    let (s, b, _) = notify(&svc, &id, &secret, &[], pull.clone()).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["pulls"], 1, "{b}");
    let found = wait_for_pulls(&env, Duration::from_secs(30), |f| !f.is_empty()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].pulls, 1);
    let updated = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RegistryUpdated(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!(updated.report_pulls, Some(true));

    svc.stop().await;
    let svc = start(&env, 1, None).await;
    let (_, list) = svc.get("/v1/registries").await;
    assert_eq!(list["items"][0]["report_pulls"], true, "{list}");
    // And off again.
    let (s, v, _) = svc
        .call(
            Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(common::ADMIN),
            Some(json!({"report_pulls": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["report_pulls"], false, "{v}");
    let (s, b, _) = notify(&svc, &id, &secret, &[], pull).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["pulls"], 0, "{b}");
}

#[tokio::test]
async fn bad_notifications_are_refused_and_lose_no_counted_pull() {
    let env = Env::new();
    let svc = start(&env, 2, None).await;
    let (id, secret) = register(&svc, "generic", Some(true)).await;
    let d = digest('b');
    let good = distribution_pull("team/app", &d, Some("v2"), "GET", "docker/27.0");
    for _ in 0..2 {
        let (s, b, _) = notify(&svc, &id, &secret, &[], good.clone()).await;
        assert_eq!(s, 202, "{b}");
    }

    let bad_digest = distribution_pull("team/app", "sha256:nope", Some("v2"), "GET", "docker/27.0");
    let bad_tag = distribution_pull("team/app", &d, Some("not a tag!"), "GET", "docker/27.0");
    let bad_repo = distribution_pull("Team/App", &d, Some("v2"), "GET", "docker/27.0");
    // One good pull and one bad one: the notification is refused whole.
    let mixed = json!({"events": [
        serde_json::from_str::<Value>(&good).unwrap()["events"][0],
        serde_json::from_str::<Value>(&bad_digest).unwrap()["events"][0],
    ]})
    .to_string();
    let no_digest = json!({"events": [{"action": "pull", "request": {"method": "GET"},
        "target": {"mediaType": OCI_MANIFEST, "repository": "team/app", "tag": "v2"}}]})
    .to_string();
    let harbor_nothing = json!({"type": "PULL_ARTIFACT", "occur_at": 1,
        "event_data": {"repository": {"repo_full_name": "team/app"}}})
    .to_string();
    let harbor_garbage = json!({"specversion": "1.0", "type": "harbor.artifact.pulled",
        "data": {"resources": "everything"}})
    .to_string();
    let too_many = json!({"events": (0..1001).map(|_| {
        serde_json::from_str::<Value>(&good).unwrap()["events"][0].clone()
    }).collect::<Vec<_>>()})
    .to_string();
    for (what, body) in [
        ("not JSON", "{\"events\": [".to_owned()),
        ("unrecognised", "{\"hello\": 1}".to_owned()),
        ("bad digest", bad_digest),
        ("bad tag", bad_tag),
        ("bad repository", bad_repo),
        ("mixed", mixed),
        ("no digest", no_digest),
        ("harbor without resources", harbor_nothing),
        ("harbor garbage", harbor_garbage),
        ("too many", too_many),
    ] {
        let (s, b, h) = notify(&svc, &id, &secret, &[], body).await;
        assert_eq!(s, 400, "{what}: {b}");
        assert_eq!(b["code"], "bad-notification", "{what}: {b}");
        assert_eq!(
            h.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{what}"
        );
    }
    let (s, b, _) = notify(&svc, &id, &secret, &[], good).await;
    assert_eq!(s, 202, "{b}");

    let k = ("team/app".to_owned(), d.clone(), Some("v2".to_owned()));
    let found = wait_for_pulls(&env, Duration::from_secs(30), |f| total(f, &k) >= 3).await;
    assert_eq!(total(&found, &k), 3, "{found:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(total(&pulls_counted(&env.events().await), &k), 3);
}

#[tokio::test]
async fn many_keys_flush_early_and_shutdown_flushes_what_is_open() {
    let env = Env::new();
    // A window far longer than the test: only the bound and the shutdown flush.
    let svc = start(&env, 3600, Some(2)).await;
    let (id, secret) = register(&svc, "generic", Some(true)).await;
    for c in ['1', '2'] {
        let body = distribution_pull("team/app", &digest(c), None, "GET", "docker/27.0");
        let (s, b, _) = notify(&svc, &id, &secret, &[], body).await;
        assert_eq!(s, 202, "{b}");
    }
    let found = wait_for_pulls(&env, Duration::from_secs(30), |f| f.len() >= 2).await;
    assert_eq!(found.len(), 2, "max_keys reached: flushed early: {found:?}");

    let body = distribution_pull("team/app", &digest('3'), Some("v3"), "GET", "docker/27.0");
    for _ in 0..2 {
        let (s, b, _) = notify(&svc, &id, &secret, &[], body.clone()).await;
        assert_eq!(s, 202, "{b}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pulls_counted(&env.events().await).len(), 2);
    svc.stop().await;
    let found = pulls_counted(&env.events().await);
    assert_eq!(found.len(), 3, "{found:?}");
    let k = ("team/app".to_owned(), digest('3'), Some("v3".to_owned()));
    assert_eq!(total(&found, &k), 2);
}
