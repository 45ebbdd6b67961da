//! Tag integrity and pulls in the catalog (issue 14) against a real NATS JetStream and
//! PostgreSQL: `image.tag_mutated` marks the tag, keeps both digests and is filtered and
//! counted; `image.pulls_counted` is summed per tag and per digest; a replay one event per
//! transaction, a rebuild and a redelivery past the recorded position give the same rows.

mod common;

use std::time::Duration;

use catalog_projector::config::CatalogSettings;
use catalog_projector::projection::{Item, Projection};
use catalog_projector::rebuild::{RebuildReport, rebuild, replay_into};
use common::*;
use imagelib_events::event::{PullsCounted, TagMutated};
use imagelib_events::model::{ImageKind, MutationFoundBy};
use imagelib_events::{Envelope, RegistryId};
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "apps/web";

fn single() -> imagelib_events::model::ImageDetails {
    details(ImageKind::Other, None, &["amd64"], 1000)
}

fn mutated(
    reg: RegistryId,
    tag: &str,
    old: u64,
    new: u64,
    found_by: MutationFoundBy,
    seen_at: Option<&str>,
) -> Envelope {
    envelope(
        "sync-scanner",
        TagMutated {
            registry_id: reg,
            repository: repo(REPO),
            tag: tag.parse().unwrap(),
            old_digest: digest(old),
            new_digest: digest(new),
            found_by,
            seen_at: seen_at.map(at),
        },
    )
}

fn pulled(
    reg: RegistryId,
    tag: Option<&str>,
    d: u64,
    pulls: u64,
    first: &str,
    last: &str,
) -> Envelope {
    envelope(
        "registry-registry",
        PullsCounted {
            registry_id: reg,
            repository: repo(REPO),
            tag: tag.map(|t| t.parse().unwrap()),
            digest: digest(d),
            pulls,
            first_pulled_at: at(first),
            last_pulled_at: at(last),
        },
    )
}

async fn items(svc: &Service, query: &str) -> Vec<Value> {
    svc.all_pages(Some(ADMIN), &format!("/v1/images?repository={REPO}{query}"))
        .await
}

async fn item(svc: &Service, tag: &str) -> Value {
    items(svc, "")
        .await
        .into_iter()
        .find(|i| i["tag"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag}"))
}

fn tags(list: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = list
        .iter()
        .map(|i| i["tag"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn a_mutated_tag_is_marked_keeps_both_digests_and_is_filtered_and_counted() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let hidden = RegistryId::new();
    env.publish([
        registered(reg, "Acme", &[]),
        registered(hidden, "DB team", &["db"]),
        timed(
            discovered(reg, REPO, "1.0", 1, single()),
            "2025-01-10T00:00:00Z",
        ),
        timed(
            discovered(reg, REPO, "1.1", 3, single()),
            "2025-01-10T00:00:00Z",
        ),
        timed(
            discovered(reg, REPO, "latest", 1, single()),
            "2025-01-10T00:00:00Z",
        ),
        // The usual move, then the mutation (webhook path).
        timed(
            moved(reg, REPO, "1.0", 1, 2, single()),
            "2025-02-01T00:00:00Z",
        ),
        timed(
            mutated(
                reg,
                "1.0",
                1,
                2,
                MutationFoundBy::Webhook,
                Some("2025-02-01T00:00:00Z"),
            ),
            "2025-02-01T00:00:01Z",
        ),
        // The mutation first, then the move (sweep path): the mark lands on the new version.
        timed(
            mutated(reg, "1.1", 3, 4, MutationFoundBy::Sweep, None),
            "2025-02-02T00:00:00Z",
        ),
        timed(
            moved(reg, REPO, "1.1", 3, 4, single()),
            "2025-02-02T00:00:01Z",
        ),
        discovered(hidden, REPO, "9.9", 9, single()),
        envelope(
            "sync-scanner",
            TagMutated {
                registry_id: hidden,
                repository: repo(REPO),
                tag: "9.9".parse().unwrap(),
                old_digest: digest(8),
                new_digest: digest(9),
                found_by: MutationFoundBy::Scan,
                seen_at: None,
            },
        ),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;

    let one = item(&svc, "1.0").await;
    assert_eq!(one["digest"], digest(2).to_string(), "{one}");
    assert_eq!(
        one["mutated"],
        json!({"old_digest": digest(1).to_string(), "new_digest": digest(2).to_string(),
               "found_by": "webhook", "seen_at": "2025-02-01T00:00:00Z", "at": "2025-02-01T00:00:01Z"}),
        "{one}"
    );
    let eleven = item(&svc, "1.1").await;
    assert_eq!(eleven["digest"], digest(4).to_string());
    assert_eq!(eleven["mutated"]["found_by"], "sweep");
    assert_eq!(eleven["mutated"]["seen_at"], Value::Null);
    assert_eq!(eleven["mutated"]["old_digest"], digest(3).to_string());
    assert_eq!(item(&svc, "latest").await["mutated"], Value::Null);

    // The filter, and a bad value.
    assert_eq!(
        tags(&items(&svc, "&mutated=true").await),
        ["1.0", "1.1", "9.9"]
    );
    assert_eq!(tags(&items(&svc, "&mutated=false").await), ["latest"]);
    let (status, problem) = svc
        .call(Method::GET, "/v1/images?mutated=yes", Some(ADMIN), None)
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "mutated", "{problem}");

    // Counted over what the caller sees.
    assert_eq!(svc.get("/v1/stats").await["mutated_tags"], 3);
    assert_eq!(
        svc.get_as(Some(VIEWER_ML), "/v1/stats").await["mutated_tags"],
        2
    );
    assert_eq!(
        svc.all_pages(Some(VIEWER_ML), "/v1/images?mutated=true")
            .await
            .len(),
        2
    );

    // History: before the re-push the tag was at the old digest.
    let then = svc
        .all_pages(
            Some(ADMIN),
            &format!("/v1/images?repository={REPO}&as_of=2025-01-20T00:00:00Z"),
        )
        .await;
    let old = then.iter().find(|i| i["tag"] == "1.0").unwrap();
    assert_eq!(old["digest"], digest(1).to_string());
    assert_eq!(old["valid_to"], "2025-02-01T00:00:00Z");

    // Mutated again: the item shows the latest, the repository every one, newest first.
    env.publish([
        timed(
            moved(reg, REPO, "1.0", 2, 5, single()),
            "2025-03-01T00:00:00Z",
        ),
        timed(
            mutated(reg, "1.0", 2, 5, MutationFoundBy::Scan, None),
            "2025-03-01T00:00:00Z",
        ),
    ])
    .await;
    env.caught_up().await;
    assert_eq!(
        item(&svc, "1.0").await["mutated"]["new_digest"],
        digest(5).to_string()
    );
    let detail = svc.get(&format!("/v1/repositories/{reg}/{REPO}")).await;
    let t = detail["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "1.0")
        .unwrap();
    let pairs: Vec<(String, String)> = t["mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["old_digest"].as_str().unwrap().to_owned(),
                m["new_digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            (digest(2).to_string(), digest(5).to_string()),
            (digest(1).to_string(), digest(2).to_string()),
        ]
    );
    assert_eq!(t["mutated"]["new_digest"], digest(5).to_string());
    assert_eq!(svc.get("/v1/stats").await["mutated_tags"], 3);

    // A removed and rediscovered tag is still the tag that was mutated.
    env.publish([
        removed(reg, REPO, "1.1", 4),
        discovered(reg, REPO, "1.1", 6, single()),
    ])
    .await;
    env.caught_up().await;
    assert_eq!(item(&svc, "1.1").await["mutated"]["found_by"], "sweep");
    svc.stop().await;
}

#[tokio::test]
async fn an_approval_names_the_digest_it_was_reviewed_at() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    env.publish([
        registered(reg, "Acme", &[]),
        discovered(reg, REPO, "1.0", 1, single()),
        moved(reg, REPO, "1.0", 1, 2, single()),
        mutated(reg, "1.0", 1, 2, MutationFoundBy::Webhook, None),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;
    let path = format!("/v1/repositories/{reg}/{REPO}/approve");

    // Reviewed at the old digest: the tag has moved since, nothing is decided.
    let (status, p) = svc
        .call(
            Method::POST,
            &path,
            Some(ADMIN),
            Some(json!({"tag": "1.0", "digest": digest(1).to_string(), "reason": "ok"})),
        )
        .await;
    assert_eq!(status, 409, "{p}");
    assert_eq!(p["code"], "digest-mismatch");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(&digest(2).to_string()),
        "{p}"
    );
    assert_eq!(item(&svc, "1.0").await["approval"], Value::Null);

    // A digest without a tag, and a malformed one, are bad input.
    let (status, p) = svc
        .call(
            Method::POST,
            &path,
            Some(ADMIN),
            Some(json!({"digest": digest(2).to_string()})),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["errors"][0]["pointer"], "/digest");
    let (status, _) = svc
        .call(
            Method::POST,
            &path,
            Some(ADMIN),
            Some(json!({"tag": "1.0", "digest": "sha256:short"})),
        )
        .await;
    assert_eq!(status, 422);

    // At the digest it points at: approved, pinned to it.
    let (status, detail) = svc
        .call(
            Method::POST,
            &path,
            Some(ADMIN),
            Some(json!({"tag": "1.0", "digest": digest(2).to_string(), "reason": "re-push reviewed"})),
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    let t = &detail["tags"][0];
    assert_eq!(t["approval"], "approved");
    assert_eq!(t["tag_approval"]["digest"], digest(2).to_string());
    // Still marked: the mark says what happened, the approval what a curator decided.
    assert_eq!(t["mutated"]["new_digest"], digest(2).to_string());

    // The OpenAPI document describes the fields, the filter and the reviewed digest.
    let api = svc.get("/openapi.json").await;
    let params = api["paths"]["/v1/images"]["get"]["parameters"].to_string();
    assert!(params.contains("\"mutated\""), "{params}");
    let image = api["components"]["schemas"]["ImageView"]["properties"].to_string();
    for field in [
        "mutated",
        "pulls",
        "last_pulled_at",
        "digest_pulls",
        "digest_last_pulled_at",
    ] {
        assert!(image.contains(&format!("\"{field}\"")), "{field}: {image}");
    }
    let mutation = api["components"]["schemas"]["MutationView"].to_string();
    assert!(
        mutation.contains("old_digest") && mutation.contains("found_by"),
        "{mutation}"
    );
    let decision = api["components"]["schemas"]["DecisionRequest"].to_string();
    assert!(decision.contains("digest"), "{decision}");
    let stats = api["components"]["schemas"]["Stats"].to_string();
    assert!(stats.contains("mutated_tags"), "{stats}");
    svc.stop().await;
}

#[tokio::test]
async fn pulls_are_summed_per_tag_and_digest_and_every_replay_counts_them_once() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let seqs = env
        .publish([
            registered(reg, "Acme", &[]),
            // Pulls counted before the catalog knows the tag are kept for it.
            pulled(
                reg,
                Some("1.0"),
                1,
                3,
                "2025-01-01T10:00:00Z",
                "2025-01-01T10:05:00Z",
            ),
            discovered(reg, REPO, "1.0", 1, single()),
            discovered(reg, REPO, "latest", 1, single()),
            pulled(
                reg,
                Some("latest"),
                1,
                2,
                "2025-01-01T11:00:00Z",
                "2025-01-01T11:01:00Z",
            ),
            // By digest: the digest's count, no tag's.
            pulled(
                reg,
                None,
                1,
                5,
                "2025-01-02T00:00:00Z",
                "2025-01-02T00:10:00Z",
            ),
            pulled(
                reg,
                Some("1.0"),
                1,
                1,
                "2025-01-03T00:00:00Z",
                "2025-01-03T00:00:00Z",
            ),
            moved(reg, REPO, "1.0", 1, 2, single()),
            mutated(reg, "1.0", 1, 2, MutationFoundBy::Webhook, None),
            pulled(
                reg,
                Some("1.0"),
                2,
                4,
                "2025-01-04T00:00:00Z",
                "2025-01-04T08:00:00Z",
            ),
            // A window whose times came out of order still counts its later bound.
            pulled(
                reg,
                Some("latest"),
                1,
                1,
                "2025-01-05T00:00:00Z",
                "2025-01-04T23:00:00Z",
            ),
        ])
        .await;
    let svc = env.start().await;
    env.caught_up().await;

    let one = item(&svc, "1.0").await;
    assert_eq!(one["pulls"], 3 + 1 + 4, "{one}");
    assert_eq!(one["last_pulled_at"], "2025-01-04T08:00:00Z");
    assert_eq!(one["digest_pulls"], 4, "the current digest, 2: {one}");
    assert_eq!(one["digest_last_pulled_at"], "2025-01-04T08:00:00Z");
    let latest = item(&svc, "latest").await;
    assert_eq!(latest["pulls"], 2 + 1, "{latest}");
    assert_eq!(latest["last_pulled_at"], "2025-01-05T00:00:00Z");
    assert_eq!(latest["digest_pulls"], 3 + 2 + 5 + 1 + 1, "{latest}");
    // The repository's tags carry the same.
    let detail = svc.get(&format!("/v1/repositories/{reg}/{REPO}")).await;
    assert_eq!(detail["tags"][0]["tag"], "1.0");
    assert_eq!(detail["tags"][0]["pulls"], 8);
    assert_eq!(detail["tags"][1]["digest_pulls"], 12);
    let live = env.dump("catalog").await;
    svc.stop().await;

    // One event per transaction into a fresh schema: the same rows.
    let one_by_one = imagelib_platform::db::connect(&env.db.url, "pulls_one_by_one", 4)
        .await
        .unwrap();
    catalog_projector::startup::migrate(&one_by_one)
        .await
        .unwrap();
    let settings = CatalogSettings {
        batch_size: 1,
        ..Default::default()
    };
    let mut r = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    let last = env.bus.last_sequence().await.unwrap();
    replay_into(
        &env.bus,
        &Projection::new(one_by_one.clone()),
        &settings,
        last,
        &mut r,
    )
    .await
    .unwrap();
    same(&env.dump("pulls_one_by_one").await, &live);

    // A rebuild (in memory, large batches) swapped in: the same rows.
    let keep = CatalogSettings {
        keep_old_schema: true,
        ..Default::default()
    };
    let report = rebuild(&env.bus, &env.db.url, catalog_projector::SCHEMA, &keep)
        .await
        .unwrap();
    same(&env.dump("catalog").await, &live);
    same(&env.dump(&report.old_schema.unwrap()).await, &live);
    // The rebuild's load one event per batch: the same rows.
    same(&env.bulk_replay_by_one("pulls_bulk_by_one").await, &live);
    same(
        &env.bulk_replay_in_batches("pulls_bulk_batched", 64).await,
        &live,
    );

    // Redelivery of everything after the registration, past the recorded position (a
    // consumer recreated from older state): nothing is counted twice, nothing marked twice.
    let mut replay = env.bus.replay(seqs[1], Some(last), None).await.unwrap();
    let mut redelivered = Vec::new();
    while let Some(i) = replay.next().await {
        let i = i.unwrap();
        if let Ok(e) = i.event
            && catalog_projector::projection::integrity::is_integrity(&e.payload)
        {
            redelivered.push(Item {
                sequence: i.sequence,
                envelope: Some(e),
            });
        }
    }
    assert_eq!(redelivered.len(), 7);
    sqlx::query("UPDATE stream_position SET sequence = $1")
        .bind(seqs[1] as i64 - 1)
        .execute(&one_by_one)
        .await
        .unwrap();
    // In one batch, then one by one.
    let projection = Projection::new(one_by_one.clone());
    projection.apply_batch(&redelivered, None).await.unwrap();
    for item in &redelivered {
        sqlx::query("UPDATE stream_position SET sequence = $1")
            .bind(item.sequence as i64 - 1)
            .execute(&one_by_one)
            .await
            .unwrap();
        projection
            .apply_batch(std::slice::from_ref(item), None)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE stream_position SET sequence = $1")
        .bind(last as i64)
        .execute(&one_by_one)
        .await
        .unwrap();
    same(&env.dump("pulls_one_by_one").await, &live);

    // And the live service on the rebuilt schema answers as before.
    let svc = env.start().await;
    env.caught_up().await;
    assert_eq!(item(&svc, "1.0").await["pulls"], 8);
    assert_eq!(item(&svc, "1.0").await["mutated"]["found_by"], "webhook");
    svc.stop().await;
}
