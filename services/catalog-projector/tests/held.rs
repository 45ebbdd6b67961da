//! A bulk replay holds the tag versions it opens and writes them once at its end, each
//! with its end (`projection::held`): in any batching its rows are the live consumer's,
//! versions closed while held, a held version refreshed, and what was held written by a
//! batch of another aggregate included.

mod common;

use common::*;
use imagelib_events::RegistryId;
use imagelib_events::model::ModelType;

#[tokio::test]
async fn held_versions_end_as_the_live_consumer_ends_them() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let other = RegistryId::new();
    let repos: Vec<String> = (0..6).map(|i| format!("held/svc-{i}")).collect();
    let mut events = vec![registered(reg, "Acme", &[])];
    for (i, r) in repos.iter().enumerate() {
        let d = 100 * i as u64;
        events.push(discovered(reg, r, "1.0", d + 1, database()));
        events.push(discovered(reg, r, "latest", d + 1, database()));
    }
    for (i, r) in repos.iter().enumerate() {
        let d = 100 * i as u64;
        // Ends of versions opened batches ago.
        events.push(moved(reg, r, "latest", d + 1, d + 2, database()));
        if i % 2 == 0 {
            events.push(removed(reg, r, "1.0", d + 1));
        } else if i == 3 {
            // The same digest seen again, with other details: a refresh.
            events.push(discovered(
                reg,
                r,
                "1.0",
                d + 1,
                multi_arch(&["amd64", "arm64"], d + 50),
            ));
        }
    }
    // Another aggregate's event: what is held is written first.
    events.push(registered(other, "Other", &[]));
    for (i, r) in repos.iter().enumerate() {
        let d = 100 * i as u64;
        events.push(moved(
            reg,
            r,
            "latest",
            d + 2,
            d + 3,
            model(ModelType::TextCompletion),
        ));
        events.push(discovered(reg, r, "2.0", d + 4, database()));
        events.push(moved(reg, r, "2.0", d + 4, d + 5, database()));
        if i == 1 {
            events.push(removed(reg, r, "latest", d + 3));
        }
    }
    env.publish(events).await;
    let svc = env.start().await;
    env.caught_up().await;
    let live = env.dump("catalog").await;
    svc.stop().await;
    let versions = live
        .lines()
        .filter(|l| l.contains("\"repo_id\"") && l.contains("\"valid_from\""))
        .collect::<Vec<_>>();
    let ended = versions
        .iter()
        .filter(|l| !l.contains("\"valid_to\": null"))
        .count();
    assert!(ended >= 20, "{ended} of {} versions ended", versions.len());
    for batch in [1, 3, 64] {
        same(
            &env.bulk_replay_in_batches(&format!("held_{batch}"), batch)
                .await,
            &live,
        );
    }
    // Every index the replay dropped (the large ones, the unique current-version ones
    // while the held versions went in) is back, as the migrations define it.
    let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
    let indexes = |schema: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT indexname || ': ' || replace(indexdef, schemaname || '.', '')
                 FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
            )
            .bind(schema)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let live_indexes = indexes("catalog").await;
    assert!(
        live_indexes
            .iter()
            .any(|i| i.starts_with("tag_versions_current: CREATE UNIQUE INDEX")),
        "{live_indexes:#?}"
    );
    assert_eq!(indexes("held_64").await, live_indexes);
    pool.close().await;
}
