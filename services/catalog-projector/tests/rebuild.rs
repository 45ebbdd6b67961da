//! Rebuild: a fresh schema filled from the stream and swapped in while the live service
//! keeps answering, and keeps projecting.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use catalog_projector::config::CatalogSettings;
use catalog_projector::projection::Projection;
use catalog_projector::rebuild::{RebuildReport, old_schemas, rebuild, replay_into};
use catalog_projector::synth::{Generator, Mix};
use common::*;
use imagelib_events::model::ImageKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_swaps_in_a_fresh_catalog_while_reads_and_writes_go_on() {
    let env = Env::new().await;
    let generator = Generator::new(Mix {
        registries: 2,
        repositories: 60,
        events: 3000,
        seed: 11,
        // Trust evidence among the tag events (issue 13).
        trust_pct: 20,
        // Mutations and pulls too (issue 14).
        integrity_pct: 10,
        ..Default::default()
    });
    let registry = generator.registry_ids[0];
    env.publish(generator).await;
    let svc = Arc::new(env.start().await);
    env.caught_up().await;
    let baseline = svc.get("/v1/stats").await["tags"].as_i64().unwrap();
    assert!(baseline > 1000, "{baseline}");
    let before = env.dump("catalog").await;

    // Readers: every answer complete, never an error, never an empty catalog.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (svc, stop, reads) = (svc.clone(), stop.clone(), reads.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let stats = svc.get("/v1/stats").await;
                let tags = stats["tags"].as_i64().unwrap();
                assert!(
                    tags >= baseline,
                    "a read saw {tags} tags (< {baseline}): {stats}"
                );
                let page = svc.get("/v1/images?limit=50").await;
                assert_eq!(page["items"].as_array().unwrap().len(), 50, "{page}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    eventually("reads are flowing", || async {
        reads.load(Ordering::Relaxed) > 3
    })
    .await;

    // Writers keep appending meanwhile.
    let rebuilt = Arc::new(AtomicBool::new(false));
    let writer = {
        let (bus, rebuilt) = (env.bus.clone(), rebuilt.clone());
        tokio::spawn(async move {
            // Until after the swap, so that the live projector is ahead of the rebuilt
            // schema when it is swapped in.
            let mut after = 0;
            let mut i = 0u64;
            while after < 20 {
                if rebuilt.load(Ordering::Relaxed) {
                    after += 1;
                }
                let e = discovered(
                    registry,
                    "apps/during-rebuild",
                    &format!("v{i}"),
                    10_000 + i,
                    details(ImageKind::Other, None, &["amd64"], 1000),
                );
                bus.publish(&e).await.unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    let settings = CatalogSettings {
        batch_size: 200,
        ..Default::default()
    };
    let report = rebuild(&env.bus, &env.db.url, catalog_projector::SCHEMA, &settings)
        .await
        .unwrap();
    assert!(report.events >= 3000, "{report:?}");
    rebuilt.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap() as usize;
    let reads_before_swap_settled = reads.load(Ordering::Relaxed);
    eventually("reads go on after the swap", || async {
        reads.load(Ordering::Relaxed) > reads_before_swap_settled + 3
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();

    // The old schema is gone; the live projector resumed on the new one.
    let pool = env.catalog_pool().await;
    assert_eq!(
        old_schemas(&pool, "catalog").await.unwrap(),
        Vec::<String>::new()
    );
    env.caught_up().await;
    assert_eq!(
        svc.all_pages(
            Some(ADMIN),
            "/v1/images?repository=apps/during-rebuild&limit=500"
        )
        .await
        .len(),
        written
    );
    eventually("ready", || async { svc.readyz().await.0 == 200 }).await;

    // And it equals a clean replay of everything.
    let clean = imagelib_platform::db::connect(&env.db.url, "clean_replay", 4)
        .await
        .unwrap();
    catalog_projector::startup::migrate(&clean).await.unwrap();
    let mut r = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    let last = env.bus.last_sequence().await.unwrap();
    replay_into(&env.bus, &Projection::new(clean), &settings, last, &mut r)
        .await
        .unwrap();
    assert_eq!(env.dump("catalog").await, env.dump("clean_replay").await);
    assert_ne!(env.dump("catalog").await, before, "the new tags are there");

    // A second rebuild, keeping the old schema this time, changes nothing.
    let keep = CatalogSettings {
        keep_old_schema: true,
        ..settings
    };
    let dump = env.dump("catalog").await;
    let report = rebuild(&env.bus, &env.db.url, catalog_projector::SCHEMA, &keep)
        .await
        .unwrap();
    let old = report.old_schema.clone().unwrap();
    assert_eq!(
        old_schemas(&pool, "catalog").await.unwrap(),
        vec![old.clone()]
    );
    assert_eq!(env.dump("catalog").await, dump);
    assert_eq!(env.dump(&old).await, dump);
    Arc::into_inner(svc).unwrap().stop().await;
}

/// When each table of `schema` was last analyzed by hand (`ANALYZE`, not autovacuum).
async fn hand_analyzed(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT relname::text, last_analyze IS NOT NULL FROM pg_stat_user_tables
         WHERE schemaname = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A stream of 300 events over ten repositories of one registry.
async fn small_stream(seed: u64) -> Env {
    let env = Env::new().await;
    env.publish(Generator::new(Mix {
        registries: 1,
        repositories: 10,
        events: 300,
        seed,
        ..Default::default()
    }))
    .await;
    env
}

async fn rebuilt_in_batches_of_100(env: &Env) -> RebuildReport {
    let settings = CatalogSettings {
        batch_size: 100,
        ..Default::default()
    };
    rebuild(&env.bus, &env.db.url, catalog_projector::SCHEMA, &settings)
        .await
        .unwrap()
}

/// A rebuild analyzes the tables it filled, and only those: not the database's other
/// schemas (the live catalog it replaces, other services' tables), each of which would
/// cost the rebuild a sample of its rows.
#[tokio::test]
async fn a_rebuild_analyzes_its_own_tables_and_no_others() {
    let env = small_stream(5).await;
    let bystander = imagelib_platform::db::connect(&env.db.url, "bystander", 1)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE rows AS SELECT g AS n FROM generate_series(1, 1000) g")
        .execute(&bystander)
        .await
        .unwrap();
    let report = rebuilt_in_batches_of_100(&env).await;
    assert!(report.events >= 300, "{report:?}");
    eventually("every table of the rebuilt catalog analyzed", || async {
        let tables = hand_analyzed(&bystander, catalog_projector::SCHEMA).await;
        tables.len() > 10 && tables.iter().all(|(_, analyzed)| *analyzed)
    })
    .await;
    assert_eq!(
        hand_analyzed(&bystander, "bystander").await,
        vec![("rows".to_owned(), false)]
    );
    bystander.close().await;
}

/// A rebuild builds the large indexes after its load, the audit trail's by registry and
/// by repository among them (one sort each instead of a million row-by-row inserts beside
/// the load), keeps up the small partial ones (each would cost a scan of its table to
/// build), and leaves every index as the migrations define it.
#[tokio::test]
async fn a_rebuild_builds_the_large_indexes_after_its_load_and_keeps_up_the_small_ones() {
    let env = small_stream(6).await;
    let pool = imagelib_platform::db::connect(&env.db.url, catalog_projector::SCHEMA, 1)
        .await
        .unwrap();
    catalog_projector::startup::migrate(&pool).await.unwrap();
    let defined = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT indexname || ': ' || replace(indexdef, schemaname || '.', '')
             FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let migrated = defined(pool.clone()).await;
    let report = rebuilt_in_batches_of_100(&env).await;
    let after: Vec<&str> = report
        .indexes_built_after
        .iter()
        .map(String::as_str)
        .collect();
    for large in [
        "audit_registry",
        "audit_repository",
        "tag_versions_current",
        "tag_versions_name",
        "tag_versions_history",
    ] {
        assert!(after.contains(&large), "{large} not in {after:?}");
    }
    for small in [
        "audit_pkey",
        "audit_actor",
        "audit_type",
        "audit_at",
        "tag_versions_signed",
    ] {
        assert!(!after.contains(&small), "{small} in {after:?}");
    }
    assert_eq!(defined(pool.clone()).await, migrated);
    pool.close().await;
}
