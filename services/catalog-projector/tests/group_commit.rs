//! Group commit: events that arrive one by one within the batch linger are applied in one
//! transaction (each applied batch sends one `NOTIFY`), not one transaction per fetch.

mod common;

use std::time::Duration;

use catalog_projector::projection::changes::CHANNEL;
use common::*;
use imagelib_events::RegistryId;
use imagelib_events::model::ImageKind;

#[tokio::test]
async fn events_arriving_within_the_linger_are_applied_together() {
    let env = Env::new().await;
    let mut config = env.config();
    config.catalog.batch_linger_ms = 1000;
    let svc = env.start_with(config).await;
    let reg = RegistryId::new();
    env.publish([registered(reg, "Harbor", &[])]).await;
    env.caught_up().await;

    let pool = env.catalog_pool().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(CHANNEL).await.unwrap();
    // Ten tags 30 ms apart, as a scan publishes them: 300 ms, within the linger.
    for i in 0..10u64 {
        env.publish([discovered(
            reg,
            "library/postgres",
            &format!("16.{i}"),
            i + 1,
            details(ImageKind::Database, None, &["amd64"], 1_000),
        )])
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    env.caught_up().await;
    let mut batches = 0;
    while let Ok(heard) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        heard.unwrap();
        batches += 1;
    }
    assert!(
        (1..=2).contains(&batches),
        "{batches} transactions for ten events that came within the linger"
    );
    let shown = svc.get("/v1/images?repository=library/postgres").await;
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(10), "{shown}");
    drop(listener);
    pool.close().await;
    svc.stop().await;
}
