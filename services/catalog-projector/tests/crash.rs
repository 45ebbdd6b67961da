//! Exactly-once effect: a projector killed again and again, at random points (mid-batch,
//! mid-transaction, between commit and ack), ends with the same catalog as a clean replay.

mod common;

use std::time::Duration;

use catalog_projector::config::CatalogSettings;
use catalog_projector::projection::Projection;
use catalog_projector::rebuild::{RebuildReport, replay_into};
use catalog_projector::synth::{Generator, Mix};
use catalog_projector::worker::Projector;
use common::*;
use imagelib_events::event::{CatalogApproved, CatalogLabeled};
use imagelib_events::model::CatalogTarget;
use rand::Rng;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_batch_converges_to_a_clean_replay() {
    let env = Env::new().await;
    let mut generator = Generator::new(Mix {
        registries: 2,
        repositories: 40,
        events: 2500,
        seed: 7,
        // Trust evidence among the tag events (issue 13).
        trust_pct: 20,
        // Mutations and pulls too (issue 14).
        integrity_pct: 10,
        ..Default::default()
    });
    let registries = generator.registry_ids.clone();
    let mut events: Vec<_> = generator.by_ref().collect();
    // Some curation and rules in the middle of it.
    let reg = registries[0];
    let name = catalog_projector::synth::repo_name(0);
    events.insert(
        1200,
        envelope(
            "catalog-projector",
            CatalogLabeled {
                target: CatalogTarget {
                    registry_id: reg,
                    repository: name.parse().unwrap(),
                    tag: None,
                },
                hm_tag: "approved-production".parse().unwrap(),
            },
        ),
    );
    events.insert(
        1500,
        envelope(
            "catalog-projector",
            CatalogApproved {
                target: CatalogTarget {
                    registry_id: reg,
                    repository: name.parse().unwrap(),
                    tag: None,
                },
                digest: None,
                reason: "reviewed".into(),
            },
        ),
    );
    events.insert(
        1800,
        rule(reg, "models", "nvidia/nim/*", "NIM models", &["gpu"]),
    );
    env.publish(events).await;
    let last = env.bus.last_sequence().await.unwrap();

    let pool = env.catalog_pool().await;
    catalog_projector::startup::migrate(&pool).await.unwrap();
    let projection = Projection::new(pool.clone());
    let settings = CatalogSettings {
        batch_size: 40,
        fetch_wait_ms: 50,
        retry_backoff_ms: 10,
        ..Default::default()
    };

    let mut kills = 0;
    let mut mid_transaction = 0;
    let mut rng = rand::rng();
    loop {
        let position = projection.position().await.unwrap();
        if position >= last {
            break;
        }
        let projector = Projector::new(env.bus.clone(), projection.clone(), settings.clone());
        let task = tokio::spawn(async move { projector.run(CancellationToken::new()).await });
        // Let it make some progress, then kill it a random moment later: mostly while a
        // batch is being fetched, applied or acknowledged.
        let target = (position + rng.random_range(1..150)).min(last);
        eventually("the projector makes progress", || async {
            projection.position().await.unwrap() >= target || task.is_finished()
        })
        .await;
        if kills % 2 == 0 {
            tokio::time::sleep(Duration::from_micros(rng.random_range(0..15_000))).await;
        } else {
            // Right while a batch's transaction is open.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !task.is_finished() && tokio::time::Instant::now() < deadline {
                if open_transactions(&pool).await > 0 {
                    mid_transaction += 1;
                    break;
                }
            }
        }
        task.abort();
        let _ = task.await;
        kills += 1;
    }
    assert!(
        mid_transaction >= 5,
        "only {mid_transaction} kills hit an open transaction"
    );
    assert!(
        kills >= 10,
        "killed only {kills} times: the batches are too large"
    );

    // A clean replay into a schema of its own.
    let clean = imagelib_platform::db::connect(&env.db.url, "clean_replay", 4)
        .await
        .unwrap();
    catalog_projector::startup::migrate(&clean).await.unwrap();
    let mut report = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    replay_into(
        &env.bus,
        &Projection::new(clean.clone()),
        &CatalogSettings::default(),
        last,
        &mut report,
    )
    .await
    .unwrap();
    assert_eq!(report.position, last);

    let killed = env.dump("catalog").await;
    let replayed = env.dump("clean_replay").await;
    assert!(killed.contains("== tag_versions"), "{killed}");
    assert!(
        killed.contains("approved-production"),
        "the curation was projected"
    );
    assert!(
        killed.contains("SHA256:key-") && killed.contains("\"max_severity\": \""),
        "trust evidence was projected onto tags"
    );
    if killed != replayed {
        let diff: Vec<_> = killed
            .lines()
            .zip(replayed.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        panic!("after {kills} kills the catalog differs from a clean replay: {diff:#?}");
    }
}

/// Transactions of the projector open right now (other than this query's).
async fn open_transactions(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND xact_start IS NOT NULL AND state <> 'idle'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}
