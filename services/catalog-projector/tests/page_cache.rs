//! Kept pages (the libraries' and a repository's detail): served until the catalog changes,
//! dropped when it does (the process's own commits at once, another writer's on its
//! `NOTIFY`), never shared between callers who see different registries, and not kept at
//! all when turned off.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use catalog_projector::projection::changes::CHANNEL;
use common::*;
use imagelib_events::RegistryId;
use imagelib_events::model::ImageKind;
use serde_json::Value;

/// The description on a page: its first image's, or the repository's on its detail.
fn description(page: &Value) -> String {
    page.pointer("/items/0/description")
        .or_else(|| page.pointer("/description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Change what the page shows behind the catalog's back: no event, no `NOTIFY`.
async fn describe_quietly(pool: &sqlx::PgPool, text: &str) {
    sqlx::query("UPDATE repositories SET rule_description = $1")
        .bind(text)
        .execute(pool)
        .await
        .unwrap();
}

async fn one_registry(env: &Env) -> RegistryId {
    let reg = RegistryId::new();
    env.publish([
        registered(reg, "Harbor", &[]),
        discovered(
            reg,
            "library/postgres",
            "16",
            1,
            details(ImageKind::Database, None, &["amd64"], 1_000),
        ),
    ])
    .await;
    reg
}

/// Wait until a page is served from the cache (its listener connected): two reads with a
/// quiet change between them answer the same. Returns what the kept page says and what the
/// database says now.
async fn until_kept(svc: &Service, pool: &sqlx::PgPool, path: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let seen = std::sync::Mutex::new((String::new(), String::new()));
    eventually("a page is kept", || async {
        let n = N.fetch_add(1, Ordering::Relaxed);
        describe_quietly(pool, &format!("before {n}")).await;
        let first = description(&svc.get(path).await);
        let now = format!("after {n}");
        describe_quietly(pool, &now).await;
        let second = description(&svc.get(path).await);
        *seen.lock().unwrap() = (second.clone(), now);
        first == second
    })
    .await;
    seen.into_inner().unwrap()
}

/// Notify as another writer would, then wait until `path` shows `now`.
async fn notified_shows(svc: &Service, pool: &sqlx::PgPool, path: &str, now: &str) {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(pool)
        .await
        .unwrap();
    eventually("the notified change is shown", || async {
        description(&svc.get(path).await) == now
    })
    .await;
}

#[tokio::test]
async fn a_kept_page_is_served_until_the_catalog_changes() {
    let env = Env::new().await;
    let reg = one_registry(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let pool = env.catalog_pool().await;

    let (kept, now) = until_kept(&svc, &pool, "/v1/images").await;
    assert_ne!(kept, now);
    // The same page under another caller's visibility was not read yet: it is read afresh.
    let other = description(&svc.get_as(Some(VIEWER_DB), "/v1/images").await);
    assert_eq!(other, now);

    // Another process's commit: its NOTIFY drops the kept pages.
    notified_shows(&svc, &pool, "/v1/images", &now).await;

    // This process's own commit: shown by the first read after the projection applied it,
    // with no wait.
    let (_, now) = until_kept(&svc, &pool, "/v1/images").await;
    env.publish([discovered(
        reg,
        "library/postgres",
        "17",
        2,
        details(ImageKind::Database, None, &["amd64"], 1_000),
    )])
    .await;
    env.caught_up().await;
    let page = svc.get("/v1/images").await;
    let tags: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["16", "17"]);
    assert_eq!(description(&page), now);
    svc.stop().await;
}

#[tokio::test]
async fn a_repository_detail_is_kept_and_a_command_reads_it_afresh() {
    let env = Env::new().await;
    let reg = one_registry(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let pool = env.catalog_pool().await;
    let path = format!("/v1/repositories/{reg}/library/postgres");

    let (kept, now) = until_kept(&svc, &pool, &path).await;
    assert_ne!(kept, now);
    notified_shows(&svc, &pool, &path, &now).await;

    // A curator's command answers with the repository as it now is, and so does the next
    // read, although a page from before it was kept.
    let (_, now) = until_kept(&svc, &pool, &path).await;
    let (status, body) = svc
        .call(
            reqwest::Method::PUT,
            &format!("{path}/readme"),
            Some(ADMIN),
            Some(serde_json::json!({"readme": "# Postgres"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["readme"]["readme"], "# Postgres", "{body}");
    assert_eq!(description(&body), now);
    let read = svc.get(&path).await;
    assert_eq!(read["readme"]["readme"], "# Postgres", "{read}");
    svc.stop().await;
}

#[tokio::test]
async fn a_projected_batch_notifies_every_listener() {
    let env = Env::new().await;
    let pool = env.catalog_pool().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(CHANNEL).await.unwrap();
    one_registry(&env).await;
    let svc = env.start().await;
    let heard = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .expect("a notification for the projected batch")
        .unwrap();
    assert_eq!(heard.channel(), CHANNEL);
    svc.stop().await;
}

#[tokio::test]
async fn with_the_cache_off_every_read_is_afresh() {
    let env = Env::new().await;
    one_registry(&env).await;
    let mut config = env.config();
    config.catalog.page_cache_mb = 0;
    let svc = env.start_with(config).await;
    env.caught_up().await;
    let pool = env.catalog_pool().await;
    for n in 0..20 {
        describe_quietly(&pool, &format!("read {n}")).await;
        assert_eq!(
            description(&svc.get("/v1/images").await),
            format!("read {n}")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.stop().await;
}
