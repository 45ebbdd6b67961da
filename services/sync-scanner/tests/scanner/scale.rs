//! Two scanner processes on one stream: they share the scan jobs, and never scan one
//! registry at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use imagelib_events::model::RuleKind;
use imagelib_events::{EventPayload, RegistryId};
use imagelib_testkit::TestDb;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use sync_scanner::jobs::Jobs;

use crate::common::Env;
use crate::proxy::{Action, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scanners_share_the_work_and_never_scan_a_registry_at_once() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for r in ["fleet/a", "fleet/b", "fleet/c"] {
        registry
            .push_image(r, "1.0", &ImageSpec::linux_amd64().layer(r.as_bytes()))
            .await?;
    }
    // Slow answers, so scans overlap in time when they can.
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| {
        Action::Delay(Duration::from_millis(60))
    })
    .await;
    let env = Env::new().await;
    let other_db = TestDb::new();
    let mut a = env.config();
    a.scanner.instance = "a".into();
    a.scanner.concurrent_scans = 1;
    let mut b = env.config_for(&other_db);
    b.scanner.instance = "b".into();
    b.scanner.concurrent_scans = 1;
    let _a = env.start_with(a).await;
    let _b = env.start_with(b).await;

    // Two registry entries for the same registry: two leases, two sets of tags.
    let mut ids: Vec<RegistryId> = Vec::new();
    for _ in 0..2 {
        let id = env.register(&proxy.host(), None).await;
        env.rule(id, "fleet", &["fleet/*"], RuleKind::Auto).await;
        ids.push(id);
    }
    let first = env.bus.last_sequence().await?;
    for id in &ids {
        env.request(*id, None).await;
        for r in ["fleet/a", "fleet/b", "fleet/c"] {
            env.request(*id, Some(r)).await;
        }
    }
    // Wait until no job is left and every scan that started has ended.
    let jobs = Jobs::open(&env.bus, "test".into(), Duration::from_secs(6)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let events = loop {
        let events = env.events_after(first).await;
        let started = events
            .iter()
            .filter(|(_, e)| matches!(e.payload, EventPayload::SyncStarted(_)))
            .count();
        let ended = events
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e.payload,
                    EventPayload::SyncCompleted(_) | EventPayload::SyncFailed(_)
                )
            })
            .count();
        if started > 0 && started == ended && jobs.pending().await? == 0 {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "jobs did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Per registry, scans follow each other: a start is always followed by its own end.
    let mut running: BTreeMap<RegistryId, imagelib_events::SyncId> = BTreeMap::new();
    let mut actors = BTreeSet::new();
    for (_, e) in &events {
        match &e.payload {
            EventPayload::SyncStarted(s) => {
                assert!(
                    running.insert(s.registry_id, s.sync_id).is_none(),
                    "two scans of {} at once",
                    s.registry_id
                );
                actors.insert(e.actor.clone().unwrap_or_default());
            }
            EventPayload::SyncCompleted(c) => {
                assert_eq!(running.remove(&c.registry_id), Some(c.sync_id));
                assert!(!c.partial, "{c:?}");
            }
            EventPayload::SyncFailed(f) => panic!("{f:?}"),
            _ => {}
        }
    }
    assert_eq!(
        actors,
        BTreeSet::from([
            "system:sync-scanner/a".to_owned(),
            "system:sync-scanner/b".to_owned()
        ]),
        "both scanners did some of the work"
    );
    // Every tag of each registry announced exactly once, whoever scanned it.
    let mut discovered: Vec<(RegistryId, String)> = events
        .iter()
        .filter_map(|(_, e)| match &e.payload {
            EventPayload::TagDiscovered(d) => {
                Some((d.registry_id, format!("{}:{}", d.repository, d.tag)))
            }
            EventPayload::TagMoved(_) | EventPayload::TagRemoved(_) => panic!("{e:?}"),
            _ => None,
        })
        .collect();
    discovered.sort();
    let mut want: Vec<(RegistryId, String)> = ids
        .iter()
        .flat_map(|id| ["fleet/a:1.0", "fleet/b:1.0", "fleet/c:1.0"].map(|t| (*id, t.to_owned())))
        .collect();
    want.sort();
    assert_eq!(discovered, want);
    // Leases are given back.
    for id in &ids {
        assert_eq!(jobs.holder_of(*id).await?, None);
    }
    Ok(())
}

/// A registry's lease carries its mark: what the last holder published, so the next scan
/// waits for that and not for every image event of other registries.
#[tokio::test]
async fn a_lease_carries_what_the_registrys_last_holder_published() -> anyhow::Result<()> {
    let env = Env::new().await;
    let ttl = Duration::from_secs(1);
    let a = Jobs::open(&env.bus, "a".into(), ttl).await?;
    let b = Jobs::open(&env.bus, "b".into(), ttl).await?;
    let id = RegistryId::new();

    // Never leased: no scan event of it exists.
    let lease = a.acquire(id).await?.expect("a free lease");
    assert_eq!(lease.mark, Some(0));
    assert!(b.acquire(id).await?.is_none(), "the lease is held");
    a.release(lease, Some(42)).await;
    // A clean finish: the next holder waits for that sequence.
    let lease = b.acquire(id).await?.expect("a free lease");
    assert_eq!(lease.mark, Some(42));
    // A holder that did not finish cleanly leaves it open: wait for every image event.
    b.release(lease, None).await;
    let lease = a.acquire(id).await?.expect("a free lease");
    assert_eq!(lease.mark, None);
    a.release(lease, Some(50)).await;

    // A holder whose lease expired cannot write over the next holder's mark.
    let stale = a.acquire(id).await?.expect("a free lease");
    assert_eq!(stale.mark, Some(50));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let next = loop {
        if let Some(lease) = b.acquire(id).await? {
            break lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(next.mark, None, "the expired holder's mark is open");
    a.release(stale, Some(99)).await;
    b.release(next, Some(7)).await;
    let lease = a.acquire(id).await?.expect("a free lease");
    assert_eq!(lease.mark, Some(7), "the expired holder's 99 did not land");
    a.release(lease, None).await;
    Ok(())
}

/// A tag event as another scanner would publish it.
fn discovered(registry: RegistryId, tag: &str) -> imagelib_events::event::TagDiscovered {
    let details = serde_json::from_value(serde_json::json!({
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "platforms": [],
        "size": 1,
        "kind": "other",
    }))
    .expect("details");
    imagelib_events::event::TagDiscovered {
        registry_id: registry,
        repository: "team/app".parse().expect("repository"),
        tag: tag.parse().expect("tag"),
        digest: format!("sha256:{:064x}", tag.len())
            .parse()
            .expect("digest"),
        details,
    }
}

/// The image consumers' recorded positions, by name.
async fn image_positions(pool: &sqlx::PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT consumer, sequence FROM sync_scanner.stream_position
         WHERE consumer LIKE '%-image' ORDER BY consumer",
    )
    .fetch_all(pool)
    .await
}

/// Waits until the shared schema holds `tag` of `registry` (`team/app`).
async fn projected(env: &Env, registry: RegistryId, tag: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&env.db.url).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_scanner.known_tags
             WHERE registry_id = $1 AND repository = 'team/app' AND tag = $2",
        )
        .bind(registry.0)
        .bind(tag)
        .fetch_one(&pool)
        .await?;
        if n == 1 {
            pool.close().await;
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{tag} not projected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replicas sharing one schema: one applies the image events, the other stands by (and
/// is ready), and takes over from where the schema is when the first one stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_sharing_a_schema_project_image_events_once() -> anyhow::Result<()> {
    let env = Env::new().await;
    let mut a = env.config();
    a.scanner.instance = "a".into();
    let mut b = env.config();
    b.scanner.instance = "b".into();
    let a = env.start_with(a).await;
    let b = env.start_with(b).await;
    let (status, ready) = b.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.to_string().contains("standby"),
        "b stands by: {ready}"
    );

    let registry = RegistryId::new();
    let first = env.publish(discovered(registry, "1.0")).await;
    projected(&env, registry, "1.0").await?;
    let pool = sqlx::PgPool::connect(&env.db.url).await?;
    assert_eq!(
        image_positions(&pool).await?,
        vec![("sync-scanner-a-image".to_owned(), first as i64)],
        "only a applies image events"
    );
    let stream = env.bus.jetstream().get_stream(&env.stream.name).await?;
    assert!(
        stream.consumer_info("sync-scanner-b-image").await.is_err(),
        "b has no image consumer while it stands by"
    );

    // a stops: b takes over where the schema is, not from the start of the stream.
    a.stop().await;
    let second = env.publish(discovered(registry, "2.0")).await;
    projected(&env, registry, "2.0").await?;
    let info = stream.consumer_info("sync-scanner-b-image").await?;
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: first + 1
        },
        "b resumed after what a had applied"
    );
    assert_eq!(
        image_positions(&pool).await?,
        vec![
            ("sync-scanner-a-image".to_owned(), first as i64),
            ("sync-scanner-b-image".to_owned(), second as i64)
        ]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = b.get("/readyz").await;
        if status == 200 && !ready.to_string().contains("standby") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b does not report itself the projector: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    b.stop().await;
    Ok(())
}

/// A replica standing by for the image projection scans once the shared schema holds what
/// came before: it waits for the furthest image position any replica recorded there, not
/// for a consumer of its own, which a standby does not have (waiting for it would defer
/// every scan it takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_replica_scans_once_the_shared_schema_is_caught_up() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("fleet/a", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    // Another replica ("x", played by this test) projects the schema's image events: it
    // holds the projector's lock and has applied the stream's image events so far.
    env.db.create().await?.close().await;
    let options: sqlx::postgres::PgConnectOptions = env.db.url.parse()?;
    let mut lock =
        imagelib_platform::db::AdvisoryLock::new(options, sync_scanner::bus::IMAGE_PROJECTOR_LOCK);
    let _held = lock.try_take().await?.expect("the lock is free");
    let mut b = env.config();
    b.scanner.instance = "b".into();
    let _b = env.start_with(b).await;
    let elsewhere = env.publish(discovered(RegistryId::new(), "1.0")).await;
    let pool = sqlx::PgPool::connect(&env.db.url).await?;
    sqlx::query(
        "INSERT INTO sync_scanner.stream_position (consumer, sequence) VALUES ('sync-scanner-x-image', $1)",
    )
    .bind(elsewhere as i64)
    .execute(&pool)
    .await?;
    assert_eq!(
        image_positions(&pool).await?,
        vec![("sync-scanner-x-image".to_owned(), elsewhere as i64)],
        "b stands by: it has no image consumer"
    );

    let id = env.register(&registry.host(), None).await;
    env.rule(id, "fleet", &["fleet/*"], RuleKind::Auto).await;
    // The first scan of a registry has nothing to wait for; it leaves the registry's
    // mark at the stream's last image event, which "x" then applies.
    completed(&env, id, env.request(id, None).await).await;
    let last = env.bus.last_sequence().await?;
    sqlx::query(
        "UPDATE sync_scanner.stream_position SET sequence = $1 WHERE consumer = 'sync-scanner-x-image'",
    )
    .bind(last as i64)
    .execute(&pool)
    .await?;
    // The next waits for the schema to reach the mark: "x"'s position says it has.
    completed(&env, id, env.request(id, None).await).await;
    pool.close().await;
    Ok(())
}

/// Waits for the scan of `id` requested at `requested` to complete. A scan deferred for want
/// of its replica's own image position would wait 20 s and then be deferred again.
async fn completed(env: &Env, id: RegistryId, requested: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let done = env.events_after(requested).await.into_iter().any(
            |(_, e)| matches!(&e.payload, EventPayload::SyncCompleted(c) if c.registry_id == id),
        );
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby's scan did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
