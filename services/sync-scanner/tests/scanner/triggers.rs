//! What starts scans besides requests: the schedule, rule changes; the agent YAML as a
//! rule source; and a removed registry that is no longer scanned.

use std::time::Duration;

use imagelib_events::model::{ImageKind, RuleKind, SyncReason};
use imagelib_events::{EventPayload, RegistryId};
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use sync_scanner::jobs::Jobs;

use crate::common::{Env, pairs, summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registries_are_scanned_on_their_interval() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("sched/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.schedule = true;
    config.scanner.interval_secs = 3600;
    config.scanner.jitter_secs = 0;
    config.scanner.rules_debounce_ms = 100;
    let _scanner = env.start_with(config).await;
    // The registry's own interval (2 s) wins over the default (1 h).
    let id = env
        .register_with(&registry.host(), None, |r| r.scan_interval_secs = Some(2))
        .await;
    env.rule(id, "sched", &["sched/*"], RuleKind::Auto).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let starts = loop {
        let starts: Vec<(SyncReason, chrono::DateTime<chrono::Utc>)> = env
            .events()
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                EventPayload::SyncStarted(s) if s.registry_id == id => Some((s.reason, e.time)),
                _ => None,
            })
            .collect();
        if starts.len() >= 3 {
            break starts;
        }
        assert!(tokio::time::Instant::now() < deadline, "{starts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(starts.iter().all(|(r, _)| *r == SyncReason::Schedule));
    // About one per interval, not a busy loop: the second and third are a slot apart.
    let gap = starts[2].1 - starts[1].1;
    assert!(gap >= chrono::Duration::milliseconds(1500), "{starts:?}");
    let discovered = summary(&env.events().await);
    assert_eq!(discovered, pairs(&[("discovered", "sched/app:1.0")]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_yaml_rules_apply_to_their_registry() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("library/postgres", "16.2", &ImageSpec::linux_amd64())
        .await?;
    registry
        .push_image("nvidia/nim/llama", "1.0", &ImageSpec::linux_amd64())
        .await?;
    registry
        .push_image("unrelated", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    let id = RegistryId::new();
    let yaml = env.dir.path().join("agent.yaml");
    std::fs::write(
        &yaml,
        "dispatcher:\n  name: beacon\n  capabilities:\n    provisioning:\n      images:\n        discovery:\n          registry:\n            postgres_repositories:\n              - name: library/postgres\n                description: Community PostgreSQL\n            model_repositories:\n              - name: nvidia/nim/*\n",
    )?;
    let mut config = env.config();
    config.scanner.agent_config = Some(yaml);
    config.scanner.agent_registry = Some(id);
    let _scanner = env.start_with(config).await;
    env.register_as(id, &registry.host(), None, |_| {}).await;

    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[
            ("discovered", "library/postgres:16.2"),
            ("discovered", "nvidia/nim/llama:1.0"),
        ])
    );
    for e in &events {
        let EventPayload::TagDiscovered(d) = &e.payload else {
            panic!()
        };
        let want = if d.repository.as_str() == "library/postgres" {
            ImageKind::Database
        } else {
            ImageKind::Model
        };
        assert_eq!(d.details.kind, want);
    }

    // A rule from the stream with the file's rule id replaces it: disabled, its
    // repository goes out of scope and its tags are removed.
    env.rule_with(
        id,
        "db-library-postgres",
        &["library/postgres"],
        RuleKind::Database,
        |r| r.enabled = false,
    )
    .await;
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(
        summary(&events),
        pairs(&[("removed", "library/postgres:16.2")])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_registry_is_not_scanned() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("gone/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "gone", &["gone/*"], RuleKind::Auto).await;
    env.scan_ok(id, None).await;

    env.remove(id).await;
    let jobs = Jobs::open(&env.bus, "test".into(), Duration::from_secs(6)).await?;
    let queued = jobs.queued().await?;
    let seq = env.request(id, None).await;
    // The job is queued, taken and dropped: the queue drains without a scan.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while jobs.queued().await? == queued || jobs.pending().await? > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = env.events_after(seq).await;
    assert!(
        after
            .iter()
            .all(|(_, e)| !matches!(e.payload, EventPayload::SyncStarted(_))),
        "{after:?}"
    );
    let (_, status) = scanner.get("/v1/scanner/status").await;
    assert_eq!(
        status["registries"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    Ok(())
}
