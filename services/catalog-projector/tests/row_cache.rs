//! Image rows kept rendered (README, "Kept rows"), against a real NATS JetStream and
//! PostgreSQL: a service whose pages are not kept but whose rows are answers every list
//! exactly as a service that keeps nothing, after each kind of change to what a row shows:
//! the version's own columns, its repository's, its registry's, written with no event and
//! no notification (nothing but the rows' stamps can tell), and the projection's own
//! changes (tags moved, removed, trust evidence).

mod common;

use catalog_projector::synth::{Generator, Mix};
use common::*;
use serde_json::Value;
use sqlx::Row;

fn mix(seed: u64, events: usize) -> Mix {
    Mix {
        registries: 2,
        repositories: 30,
        events,
        seed,
        trust_pct: 15,
        integrity_pct: 15,
        ..Default::default()
    }
}

const LISTS: &[&str] = &[
    "/v1/images?limit=500",
    "/v1/images?limit=7",
    "/v1/images?limit=9&sort=updated",
    "/v1/models?limit=20",
    "/v1/images?kind=database&limit=20",
    "/v1/images?q=cnpg&limit=11",
    "/v1/images?signed=true&limit=13",
];

/// Every list, every page, from both services: equal, and not empty.
async fn same_answers(rows_kept: &Service, afresh: &Service, when: &str) {
    for list in LISTS {
        let kept = rows_kept.all_pages(Some(ADMIN), list).await;
        let fresh = afresh.all_pages(Some(ADMIN), list).await;
        assert!(!fresh.is_empty(), "{when}: {list} is empty");
        assert_eq!(kept.len(), fresh.len(), "{when}: {list}");
        for (k, f) in kept.iter().zip(&fresh) {
            assert_eq!(k, f, "{when}: {list}");
        }
    }
    // Every repository's detail: its tags are kept rows too, with the tag's own members.
    let mut repositories: Vec<(String, String)> = afresh
        .all_pages(Some(ADMIN), "/v1/images?limit=500")
        .await
        .iter()
        .map(|i| {
            (
                i["registry_id"].as_str().unwrap().to_owned(),
                i["repository"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    repositories.sort();
    repositories.dedup();
    assert!(repositories.len() > 10, "{when}: {repositories:?}");
    for (registry, name) in &repositories {
        let path = format!("/v1/repositories/{registry}/{name}");
        let kept = rows_kept.get_as(Some(ADMIN), &path).await;
        let fresh = afresh.get_as(Some(ADMIN), &path).await;
        assert!(
            fresh["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{when}: {path}: {fresh}"
        );
        assert_eq!(kept, fresh, "{when}: {path}");
    }
    // A team's view too: rows are shared between callers, their visibility is not.
    let kept = rows_kept
        .all_pages(Some(VIEWER_DB), "/v1/images?limit=50")
        .await;
    let fresh = afresh
        .all_pages(Some(VIEWER_DB), "/v1/images?limit=50")
        .await;
    assert_eq!(kept, fresh, "{when}: a team's view");
}

fn item_of<'a>(items: &'a [Value], repository: &str, tag: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["repository"] == repository && i["tag"] == tag)
        .unwrap_or_else(|| panic!("{repository}:{tag} listed"))
}

#[tokio::test]
async fn rows_kept_rendered_answer_as_rows_read_afresh_through_every_change() {
    let env = Env::new().await;
    env.publish(Generator::new(mix(42, 1500))).await;
    let mut config = env.config();
    config.catalog.page_cache_mb = 0;
    let rows_kept = env.start_with(config.clone()).await;
    config.catalog.row_cache_mb = 0;
    let afresh = env.start_with(config).await;
    env.caught_up().await;
    let pool = env.catalog_pool().await;

    same_answers(&rows_kept, &afresh, "at first").await;
    // Read again: now from kept rows.
    same_answers(&rows_kept, &afresh, "read again").await;

    // The version's own column, written behind the projection's back.
    let row = sqlx::query(
        "UPDATE tag_versions SET size = size + 12345 WHERE ctid = \
         (SELECT ctid FROM tag_versions WHERE valid_to IS NULL ORDER BY repository, tag LIMIT 1) \
         RETURNING repository, tag, size",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (repository, tag, size): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
    let listed = rows_kept
        .all_pages(Some(ADMIN), "/v1/images?limit=500")
        .await;
    assert_eq!(item_of(&listed, &repository, &tag)["size"], size);
    same_answers(&rows_kept, &afresh, "a version changed").await;

    // Its repository's description.
    sqlx::query("UPDATE repositories SET rule_description = 'described quietly' WHERE name = $1")
        .bind(&repository)
        .execute(&pool)
        .await
        .unwrap();
    let listed = rows_kept
        .all_pages(Some(ADMIN), "/v1/images?limit=500")
        .await;
    assert_eq!(
        item_of(&listed, &repository, &tag)["description"],
        "described quietly"
    );
    same_answers(&rows_kept, &afresh, "a repository changed").await;

    // Every registry's label.
    sqlx::query("UPDATE registries SET label = label || ' (renamed)'")
        .execute(&pool)
        .await
        .unwrap();
    let listed = rows_kept
        .all_pages(Some(ADMIN), "/v1/images?limit=500")
        .await;
    assert!(
        listed
            .iter()
            .all(|i| i["registry"].as_str().unwrap().ends_with(" (renamed)")),
        "every row shows its registry's new label"
    );
    same_answers(&rows_kept, &afresh, "the registries changed").await;

    // The projection's own changes: tags moved and removed, trust evidence, pulls.
    env.publish(Generator::new(Mix {
        tag_prefix: "later-".into(),
        ..mix(7, 1500)
    }))
    .await;
    env.caught_up().await;
    same_answers(&rows_kept, &afresh, "after more events").await;

    rows_kept.stop().await;
    afresh.stop().await;
}
