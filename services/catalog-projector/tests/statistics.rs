//! A filling catalog: its writer analyzes the tables its batches join once they have
//! grown, so that the plans its connections made while the catalog was empty do not
//! outlive it (see `projection::statistics`).

mod common;

use common::*;
use imagelib_events::RegistryId;
use imagelib_events::model::ImageKind;

/// When `table` of the catalog was last analyzed by hand (`ANALYZE`, not autovacuum), and
/// the rows that `ANALYZE` counted.
async fn analyzed(pool: &sqlx::PgPool, table: &str) -> (bool, f32) {
    sqlx::query_as(
        "SELECT s.last_analyze IS NOT NULL, c.reltuples
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.schemaname = current_schema() AND s.relname = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn tags(reg: RegistryId, from: u64, to: u64) -> Vec<imagelib_events::Envelope> {
    (from..to)
        .map(|i| {
            discovered(
                reg,
                &format!("library/app-{}", i % 40),
                &format!("1.{i}"),
                i,
                details(ImageKind::Database, None, &["amd64"], 1_000),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_writer_analyzes_a_filling_catalog_once_it_has_grown() {
    let env = Env::new().await;
    let svc = env.start().await;
    let pool = env.catalog_pool().await;
    let reg = RegistryId::new();
    env.publish([registered(reg, "Harbor", &[])]).await;
    env.publish(tags(reg, 0, 100)).await;
    env.caught_up().await;
    // A hundred tags: not yet worth an ANALYZE.
    assert!(!analyzed(&pool, "tag_versions").await.0);

    env.publish(tags(reg, 100, 400)).await;
    env.caught_up().await;
    eventually("tag_versions and repositories analyzed", || async {
        let (tags, rows) = analyzed(&pool, "tag_versions").await;
        let (repos, _) = analyzed(&pool, "repositories").await;
        tags && repos && rows >= 256.0
    })
    .await;
    pool.close().await;
    svc.stop().await;
}
