//! The projection against a real NATS JetStream and PostgreSQL: given events, expected
//! catalog; duplicates and out-of-order deliveries; poison events; events PostgreSQL
//! refuses; time travel.

mod common;

use common::*;
use imagelib_events::model::{ImageKind, ModelType};
use imagelib_events::{DeploymentId, RegistryId};
use serde_json::json;

#[tokio::test]
async fn given_events_the_catalog_shows_registries_repositories_tags_and_usage() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let (started, completed) = sync_completed(reg, 3);
    let dep = DeploymentId::new();
    env.publish([
        registered(reg, "Acme Harbor", &[]),
        rule(
            reg,
            "nim",
            "nvidia/nim/*",
            "NVIDIA NIM models",
            &["gpu", "nim"],
        ),
        started,
        discovered(
            reg,
            "nvidia/nim/llama-3.1-8b-instruct",
            "1.0",
            1,
            model(ModelType::TextCompletion),
        ),
        discovered(
            reg,
            "nvidia/nim/llama-3.1-8b-instruct",
            "latest",
            1,
            model(ModelType::TextCompletion),
        ),
        discovered(reg, "postgresql", "16.4", 2, database()),
        completed,
        moved(
            reg,
            "nvidia/nim/llama-3.1-8b-instruct",
            "latest",
            1,
            3,
            model(ModelType::TextCompletion),
        ),
        deployment_requested(dep, reg, "nvidia/nim/llama-3.1-8b-instruct", "1.0", 1),
        envelope(
            "serving-deployer",
            imagelib_events::event::DeploymentApplied {
                deployment_id: dep,
                target: imagelib_events::model::DeploymentTarget::Gitops,
                revision: "abc123".into(),
            },
        ),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;

    // One row per tag, by name.
    let images = svc.get("/v1/images").await;
    let items = images["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{images}");
    assert_eq!(images["next_cursor"], serde_json::Value::Null);
    let llm = &items[0];
    assert_eq!(llm["repository"], "nvidia/nim/llama-3.1-8b-instruct");
    assert_eq!(llm["tag"], "1.0");
    assert_eq!(llm["registry"], "Acme Harbor");
    assert_eq!(llm["registry_id"], reg.to_string());
    assert_eq!(llm["digest"], digest(1).to_string());
    assert_eq!(llm["kind"], "model");
    assert_eq!(llm["model_type"], "text-completion");
    assert_eq!(llm["architectures"], json!(["amd64"]));
    assert_eq!(llm["size"], 4_000_000_000u64);
    assert_eq!(llm["description"], "NVIDIA NIM models");
    assert_eq!(llm["hm_tags"], json!(["gpu", "nim"]));
    assert_eq!(llm["approved"], false);
    assert_eq!(llm["labels"]["com.nvidia.nim.model"], "true");
    assert_eq!(
        llm["reference"],
        format!("{reg}/nvidia/nim/llama-3.1-8b-instruct:1.0")
    );
    assert_eq!(items[1]["tag"], "latest");
    assert_eq!(items[1]["digest"], digest(3).to_string(), "moved");
    let pg = &items[2];
    assert_eq!(pg["repository"], "postgresql");
    assert_eq!(pg["kind"], "database");
    assert_eq!(pg["architectures"], json!(["amd64", "arm64"]));
    assert_eq!(pg["extensions"][0]["name"], "pgvector");
    assert_eq!(pg["hm_tags"], json!([]), "no rule governs it");

    // The Model Library holds the models only.
    let models = svc.get("/v1/models").await;
    assert_eq!(models["items"].as_array().unwrap().len(), 2, "{models}");

    // Counters.
    let stats = svc.get("/v1/stats").await;
    assert_eq!(
        stats,
        json!({"tags": 3, "database_images": 1, "model_images": 2, "other_images": 0,
               "repositories": 2, "database_repositories": 1, "model_repositories": 1, "registries": 1,
               "signed": 0, "unsigned": 3, "with_sbom": 0,
               "by_max_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0, "none": 0},
               "policy": {"pass": 0, "fail": 0, "audit": 0}, "mutated_tags": 0})
    );

    // A repository with its tags and the deployments using it.
    let repo = svc
        .get(&format!(
            "/v1/repositories/{reg}/nvidia/nim/llama-3.1-8b-instruct"
        ))
        .await;
    assert_eq!(repo["name"], "nvidia/nim/llama-3.1-8b-instruct");
    assert_eq!(repo["rule_id"], "nim");
    assert_eq!(repo["rule_hm_tags"], json!(["gpu", "nim"]));
    assert_eq!(repo["tag_count"], 2);
    assert_eq!(repo["tags"].as_array().unwrap().len(), 2);
    assert_eq!(repo["used_by"][0]["deployment_id"], dep.to_string());
    assert_eq!(repo["used_by"][0]["status"], "applied");
    assert_eq!(repo["used_by"][0]["revision"], "abc123");
    assert_eq!(repo["used_by"][0]["requested_by"], "dave");
    assert_eq!(repo["tags"][0]["used_by"][0]["name"], "llama");
    assert_eq!(repo["tags"][1]["used_by"], json!([]));

    // The registry with its last sync, and never a secret.
    let r = svc.get(&format!("/v1/registries/{reg}")).await;
    assert_eq!(r["label"], "Acme Harbor");
    assert_eq!(r["registry_type"], "harbor");
    assert_eq!(r["repositories"], 2);
    assert_eq!(r["tags"], 3);
    assert_eq!(r["last_sync"]["status"], "completed");
    assert_eq!(r["last_sync"]["last_completed"]["added"], 3);
    let text = r.to_string();
    assert!(
        !text.contains("c2VjcmV0LXBhc3N3b3Jk") && !text.contains("credential"),
        "{text}"
    );
    let list = svc.get("/v1/registries").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // A rule change re-describes the repositories it governs; removal hides the tag.
    env.publish([
        rule(reg, "nim", "nvidia/**", "NIM, updated", &["gpu"]),
        removed(reg, "nvidia/nim/llama-3.1-8b-instruct", "latest", 3),
        envelope(
            "serving-deployer",
            imagelib_events::event::DeploymentDeleted {
                deployment_id: dep,
                revision: None,
            },
        ),
    ])
    .await;
    env.caught_up().await;
    let repo = svc
        .get(&format!(
            "/v1/repositories/{reg}/nvidia/nim/llama-3.1-8b-instruct"
        ))
        .await;
    assert_eq!(repo["description"], "NIM, updated");
    assert_eq!(repo["hm_tags"], json!(["gpu"]));
    assert_eq!(repo["tag_count"], 1);
    assert_eq!(
        repo["used_by"],
        json!([]),
        "deleted deployments use nothing"
    );
    assert_eq!(svc.get("/v1/stats").await["tags"], 2);

    // The registry removed: its images go with it.
    env.publish([envelope(
        "registry-registry",
        imagelib_events::event::RegistryRemoved { registry_id: reg },
    )])
    .await;
    env.caught_up().await;
    assert_eq!(svc.get("/v1/images").await["items"], json!([]));
    assert_eq!(svc.get("/v1/stats").await["registries"], 0);
    let (s, _) = svc
        .call(
            reqwest::Method::GET,
            &format!("/v1/registries/{reg}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);
    svc.stop().await;
}

#[tokio::test]
async fn duplicates_and_out_of_order_deliveries_converge() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let a = discovered(reg, "library/postgres", "16", 1, database());
    let mut a_again = a.clone();
    a_again.id = imagelib_events::EventId::new(); // the same fact, appended twice
    env.publish([
        registered(reg, "dockerhub", &[]),
        a,
        a_again,
        // A move of a tag the catalog never saw: it appears at the new digest.
        moved(reg, "library/postgres", "17", 7, 8, database()),
        // The same move twice.
        moved(reg, "library/postgres", "16", 1, 2, database()),
        moved(reg, "library/postgres", "16", 1, 2, database()),
        // Removing a tag that is not there changes nothing.
        removed(reg, "library/postgres", "15", 9),
        removed(reg, "library/postgres", "17", 8),
        removed(reg, "library/postgres", "17", 8),
        // Rediscovered after removal.
        discovered(reg, "library/postgres", "17", 8, database()),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;
    assert_eq!(
        svc.image_refs("/v1/images").await,
        [
            ("library/postgres:16".to_owned(), digest(2).to_string()),
            ("library/postgres:17".to_owned(), digest(8).to_string()),
        ]
    );
    let stats = svc.get("/v1/stats").await;
    assert_eq!(stats["tags"], 2, "{stats}");
    assert_eq!(stats["database_images"], 2, "{stats}");

    // History: 16 at 1 then 2; 17 at 8, removed, back at 8.
    let pool = env.catalog_pool().await;
    let versions: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT tag, digest, valid_to IS NULL FROM tag_versions ORDER BY tag, sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let d = |n| digest(n).to_string();
    assert_eq!(
        versions,
        [
            ("16".into(), d(1), false),
            ("16".into(), d(2), true),
            ("17".into(), d(8), false),
            ("17".into(), d(8), true),
        ]
    );

    // The same messages delivered again (the consumer recreated from an older position)
    // change nothing: the position says they are applied.
    let before = env.dump("catalog").await;
    sqlx::query("UPDATE catalog.stream_position SET sequence = sequence")
        .execute(&pool)
        .await
        .unwrap();
    svc.stop().await;
    let client = env.stream.client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_stream(&env.stream.name)
        .await
        .unwrap()
        .delete_consumer("catalog-projector")
        .await
        .unwrap();
    let svc = env.start().await;
    env.caught_up().await;
    eventually("the restarted projector is ready", || async {
        svc.readyz().await.0 == 200
    })
    .await;
    assert_eq!(env.dump("catalog").await, before);
    svc.stop().await;
}

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_subject_and_the_projector_goes_on() {
    let env = Env::new().await;
    let svc = env.start().await;
    let reg = RegistryId::new();
    env.publish([registered(reg, "harbor", &[])]).await;
    // Not JSON at all, on an image subject.
    let subject = format!(
        "{}.image.{}.tag_discovered",
        env.stream.prefix,
        uuid::Uuid::new_v4()
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json");
    env.bus
        .publish_raw(
            &subject,
            headers.clone(),
            bytes::Bytes::from_static(b"{not json"),
            "poison-1",
        )
        .await
        .unwrap();
    // A well-formed CloudEvent of a type nobody knows.
    let unknown = json!({"specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(),
        "source": "/elsewhere", "type": "io.imagelib.image.tag_exploded.v1",
        "datacontenttype": "application/json", "data": {"x": 1}});
    env.bus
        .publish_raw(
            &subject,
            headers,
            bytes::Bytes::from(unknown.to_string()),
            "poison-2",
        )
        .await
        .unwrap();
    env.publish([discovered(
        reg,
        "app",
        "1",
        1,
        details(ImageKind::Other, None, &["amd64"], 10),
    )])
    .await;
    env.caught_up().await;
    assert_eq!(
        svc.image_refs("/v1/images").await.len(),
        1,
        "the event after the poison is applied"
    );
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 2, "both poison messages are dead-lettered");
    assert_eq!(&dead[0].1[..], b"{not json");
    let h = &dead[0].0;
    assert_eq!(
        h.get("Imagelib-Dlq-Consumer").unwrap().as_str(),
        "catalog-projector"
    );
    assert_eq!(h.get("Imagelib-Dlq-Subject").unwrap().as_str(), subject);
    assert!(
        dead[1]
            .0
            .get("Imagelib-Dlq-Error")
            .unwrap()
            .as_str()
            .contains("tag_exploded"),
        "the error names the unknown type"
    );
    eventually("the projector is ready", || async {
        svc.readyz().await.0 == 200
    })
    .await;
    svc.stop().await;
}

#[tokio::test]
async fn an_event_postgresql_refuses_stops_the_projector_loudly() {
    let env = Env::new().await;
    let mut config = env.config();
    config.catalog.apply_attempts = 3;
    let svc = env.start_with(config.clone()).await;
    let reg = RegistryId::new();
    env.publish([registered(reg, "harbor", &[])]).await;
    env.caught_up().await;
    // The database refuses one tag (as it would a constraint it cannot meet).
    let pool = env.catalog_pool().await;
    sqlx::query(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.tag = 'boom' THEN RAISE EXCEPTION 'tag boom is refused'; END IF; RETURN NEW; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON tag_versions FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let other = || details(ImageKind::Other, None, &["amd64"], 10);
    let seqs = env
        .publish([
            discovered(reg, "app", "1", 1, other()),
            discovered(reg, "app", "boom", 2, other()),
            discovered(reg, "app", "3", 3, other()),
        ])
        .await;
    let boom = seqs[1];
    eventually("/readyz reports the stop", || async {
        let (s, b) = svc.readyz().await;
        s == 503
            && b["checks"]["catalog-projector.projection"]["detail"]
                .as_str()
                .is_some_and(|d| {
                    d.contains(&format!("sequence {boom}")) && d.contains("tag boom is refused")
                })
    })
    .await;
    // What came before was applied; the refused event and what follows were not skipped.
    assert_eq!(env.position().await, boom - 1);
    assert_eq!(
        svc.image_refs("/v1/images").await,
        [("app:1".to_owned(), digest(1).to_string())]
    );
    let (_, ready) = svc.readyz().await;
    assert_eq!(
        ready["checks"]["catalog-projector.worker.catalog-projector"]["ready"], false,
        "{ready}"
    );
    svc.stop().await;

    // Fixed, restarted: it resumes at the refused event.
    sqlx::query("DROP TRIGGER refuse_boom ON tag_versions")
        .execute(&pool)
        .await
        .unwrap();
    let svc = env.start_with(config).await;
    env.caught_up().await;
    assert_eq!(svc.image_refs("/v1/images").await.len(), 3);
    eventually("ready again", || async { svc.readyz().await.0 == 200 }).await;
    svc.stop().await;
}

#[tokio::test]
async fn as_of_answers_from_the_history_of_moves_and_removals() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let m = || model(ModelType::TextEmbedding);
    env.publish([
        timed(registered(reg, "ngc", &[]), "2025-01-01T00:00:00Z"),
        timed(
            discovered(reg, "nvidia/embed", "1", 1, m()),
            "2025-02-01T00:00:00Z",
        ),
        timed(
            discovered(reg, "nvidia/embed", "latest", 1, m()),
            "2025-02-01T00:00:00Z",
        ),
        timed(
            moved(reg, "nvidia/embed", "latest", 1, 2, m()),
            "2025-03-01T00:00:00Z",
        ),
        timed(
            discovered(reg, "nvidia/rerank", "1", 5, model(ModelType::Reranker)),
            "2025-04-01T00:00:00Z",
        ),
        timed(removed(reg, "nvidia/embed", "1", 1), "2025-05-01T00:00:00Z"),
        timed(
            moved(reg, "nvidia/embed", "latest", 2, 3, m()),
            "2025-06-01T00:00:00Z",
        ),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;
    let d = |n| digest(n).to_string();
    let s = |r: &str| r.to_owned();
    let at = |t: &str| format!("/v1/images?as_of={t}");
    assert_eq!(svc.image_refs(&at("2025-01-15T00:00:00Z")).await, []);
    assert_eq!(
        svc.image_refs(&at("2025-02-15T00:00:00Z")).await,
        [
            (s("nvidia/embed:1"), d(1)),
            (s("nvidia/embed:latest"), d(1))
        ]
    );
    // Exactly at a move, the new version holds.
    assert_eq!(
        svc.image_refs(&at("2025-03-01T00:00:00Z")).await,
        [
            (s("nvidia/embed:1"), d(1)),
            (s("nvidia/embed:latest"), d(2))
        ]
    );
    assert_eq!(
        svc.image_refs(&at("2025-04-15T00:00:00%2B02:00")).await,
        [
            (s("nvidia/embed:1"), d(1)),
            (s("nvidia/embed:latest"), d(2)),
            (s("nvidia/rerank:1"), d(5))
        ]
    );
    assert_eq!(
        svc.image_refs(&at("2025-05-15T00:00:00Z")).await,
        [
            (s("nvidia/embed:latest"), d(2)),
            (s("nvidia/rerank:1"), d(5))
        ]
    );
    let now = [
        (s("nvidia/embed:latest"), d(3)),
        (s("nvidia/rerank:1"), d(5)),
    ];
    assert_eq!(svc.image_refs(&at("2030-01-01T00:00:00Z")).await, now);
    assert_eq!(svc.image_refs("/v1/images").await, now);
    // Filters and pages work in the past too.
    assert_eq!(
        svc.image_refs("/v1/models?as_of=2025-04-15T00:00:00Z&model_type=reranker")
            .await,
        [(s("nvidia/rerank:1"), d(5))]
    );
    assert_eq!(
        svc.image_refs("/v1/images?as_of=2025-04-15T00:00:00Z&limit=1")
            .await
            .len(),
        3
    );
    // A closed version says when it ended.
    let page = svc.get(&at("2025-02-15T00:00:00Z")).await;
    assert_eq!(page["items"][1]["valid_to"], "2025-03-01T00:00:00Z");
    assert_eq!(page["items"][1]["updated_at"], "2025-02-01T00:00:00Z");
    assert_eq!(page["items"][1]["first_seen"], "2025-02-01T00:00:00Z");
    let page = svc.get("/v1/images").await;
    assert_eq!(
        page["items"][0]["first_seen"], "2025-02-01T00:00:00Z",
        "first seen survives moves"
    );
    assert_eq!(page["items"][0]["updated_at"], "2025-06-01T00:00:00Z");
    svc.stop().await;
}

#[tokio::test]
async fn trust_events_are_skipped_not_dead_lettered() {
    use imagelib_events::event::*;
    use imagelib_events::model::*;
    let env = Env::new().await;
    let svc = env.start().await;
    let reg = RegistryId::new();
    let repository: imagelib_events::RepositoryName = "app".parse().unwrap();
    let dep = DeploymentId::new();
    env.publish([
        registered(reg, "harbor", &[]),
        discovered(
            reg,
            "app",
            "1",
            1,
            details(ImageKind::Other, None, &["amd64"], 10),
        ),
        envelope(
            "trust",
            SignatureVerified {
                registry_id: reg,
                repository: repository.clone(),
                digest: digest(1),
                signer: "ci@example.com".into(),
                issuer: Some("https://issuer.example".into()),
                kind: SignatureKind::Cosign,
                policy: Some("prod".parse().unwrap()),
                source: digest(9),
            },
        ),
        envelope(
            "trust",
            PolicyEvaluated {
                registry_id: reg,
                repository: repository.clone(),
                digest: digest(1),
                verdict: PolicyVerdict::Fail,
                reasons: vec![PolicyReason::NoSbom],
                policy: None,
                findings: vec![],
            },
        ),
        envelope(
            "sync-scanner",
            TagMutated {
                seen_at: None,
                registry_id: reg,
                repository: repository.clone(),
                tag: "1".parse().unwrap(),
                old_digest: digest(1),
                new_digest: digest(2),
                found_by: MutationFoundBy::Scan,
            },
        ),
        envelope(
            "serving-deployer",
            DeploymentPolicyViolated {
                deployment_id: dep,
                digest: digest(1),
                reasons: vec![PolicyReason::Unsigned],
                stage: ViolationStage::Running,
                policy: None,
                findings: vec![],
            },
        ),
        discovered(
            reg,
            "app",
            "2",
            2,
            details(ImageKind::Other, None, &["amd64"], 10),
        ),
    ])
    .await;
    env.caught_up().await;
    let images = svc.get("/v1/images").await;
    let items = images["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{images}");
    assert_eq!(
        items[0]["digest"],
        digest(1).to_string(),
        "tag_mutated changes no tag"
    );
    assert_eq!(items[1]["digest"], digest(2).to_string());
    assert!(env.dead_letters().await.is_empty());
    svc.stop().await;
}
