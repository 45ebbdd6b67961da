//! Issue 14, immutable tags watched, end to end through `imagelib serve`: a real
//! `docker-registry` whose notifications go to imagelib's `POST /v1/webhooks/{registry_id}`
//! (with the registry's webhook secret); re-pushing `1.0` with new content makes an
//! `image.tag_mutated` found by the webhook's repository scan, with the old and the new
//! digest, while re-pushing `latest` is only a `tag_moved`.

use std::time::Duration;

use imagelib_e2e::TestServer;
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::model::MutationFoundBy;
use imagelib_events::{Envelope, EventPayload};
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use serde_json::json;

async fn events(server: &TestServer) -> Vec<Envelope> {
    let client = server.stream.client().await.unwrap();
    let bus = EventBus::from_client(
        client,
        StreamSettings::new(&server.stream.name, &server.stream.prefix),
    );
    let mut replay = bus.replay(1, None, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(item) = replay.next().await {
        if let Ok(e) = item.unwrap().event {
            out.push(e);
        }
    }
    out
}

/// The stream's events once `pred` holds for them (at most 60 s).
async fn until(
    server: &TestServer,
    what: &str,
    pred: impl Fn(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = events(server).await;
        if pred(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            all.iter().map(|e| e.event_type()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn image(layer: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(layer.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repushed_version_is_a_mutation_within_the_webhook_path() {
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();

    // Register (the registry's address comes once it runs), learn the webhook, start the
    // registry notifying it, move the registration to the registry's address.
    let (s, r) = server
        .call(
            reqwest::Method::POST,
            "/v1/registries",
            Some(
                json!({"label": "integrity", "url": "127.0.0.1:1", "registry_type": "generic",
                        "insecure": true, "validate": false}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, hook) = server
        .call(
            reqwest::Method::GET,
            &format!("/v1/registries/{id}/webhook"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{hook}");
    let registry = TestRegistry::builder()
        .notify(
            &server.url(hook["url"].as_str().unwrap()),
            &[(
                "Authorization",
                &format!("Bearer {}", hook["secret"].as_str().unwrap()),
            )],
        )
        .start()
        .await
        .unwrap();
    let (s, r) = server
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/registries/{id}"),
            Some(json!({"url": registry.host()})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = server
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{id}/rules/app"),
            Some(json!({"repositories": "app/*"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let first = server.sync(&id).await;
    assert_eq!(first["state"], "completed", "{first}");

    // Pushed: the notifications alone make them known.
    let v1 = registry
        .push_image("app/web", "1.0", &image("one"))
        .await
        .unwrap();
    registry
        .push_image("app/web", "latest", &image("latest"))
        .await
        .unwrap();
    until(&server, "1.0 and latest discovered by the webhook", |all| {
        all.iter()
            .filter(|e| matches!(&e.payload, EventPayload::TagDiscovered(d) if d.repository.as_str() == "app/web"))
            .count()
            == 2
    })
    .await;

    // Re-pushed with other content: the webhook's scan re-checks the immutable tag.
    let v2 = registry
        .push_image("app/web", "1.0", &image("two"))
        .await
        .unwrap();
    registry
        .push_image("app/web", "latest", &image("latest, again"))
        .await
        .unwrap();
    let all = until(&server, "1.0 mutated and latest moved", |all| {
        let moved = all
            .iter()
            .filter(|e| matches!(e.payload, EventPayload::TagMoved(_)))
            .count();
        moved == 2
            && all
                .iter()
                .any(|e| matches!(e.payload, EventPayload::TagMutated(_)))
    })
    .await;
    let mutations: Vec<_> = all
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::TagMutated(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(mutations.len(), 1, "only the version, never latest");
    let m = mutations[0];
    assert_eq!(
        (
            m.tag.as_str(),
            m.old_digest.as_str(),
            m.new_digest.as_str(),
            m.found_by
        ),
        (
            "1.0",
            v1.digest.as_str(),
            v2.digest.as_str(),
            MutationFoundBy::Webhook
        )
    );
    assert!(m.seen_at.is_some());
    // The scan that found it was a webhook's, for the repository.
    let started = all.iter().rev().find_map(|e| match &e.payload {
        EventPayload::SyncStarted(s) if s.repository.is_some() => Some(s),
        _ => None,
    });
    assert_eq!(
        started.map(|s| s.reason),
        Some(imagelib_events::model::SyncReason::Webhook)
    );
}
