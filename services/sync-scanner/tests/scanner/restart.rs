//! State comes back after a restart (or from the stream alone) without re-emitting, and an
//! interrupted scan neither loses nor duplicates a change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use imagelib_events::EventPayload;
use imagelib_events::model::RuleKind;
use imagelib_testkit::TestDb;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::{Env, summary};
use crate::proxy::{Action, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_or_a_rebuild_re_emits_nothing() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("app/web", "1.0", &ImageSpec::linux_amd64())
        .await?;
    registry
        .push_index(
            "app/web",
            "latest",
            &[ImageSpec::linux_amd64(), ImageSpec::new("linux", "arm64")],
            &[],
        )
        .await?;
    let env = Env::new().await;
    let first = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "app", &["app/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 2);
    first.stop().await;

    // The same database: nothing is new.
    let second = env.start().await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty(), "{:?}", summary(&events));
    assert_eq!((done.added, done.moved, done.removed), (0, 0, 0));
    second.stop().await;

    // An empty database: the state is rebuilt from the stream, and still nothing is new.
    let fresh = TestDb::new();
    let third = env.start_with(env.config_for(&fresh)).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty(), "{:?}", summary(&events));
    assert_eq!(done.added, 0);
    let (_, status) = third.get("/v1/scanner/status").await;
    assert_eq!(status["registries"][0]["known_tags"], 2, "{status}");
    third.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_scan_neither_loses_nor_duplicates() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let repos: Vec<String> = (0..8).map(|i| format!("svc/s{i}")).collect();
    for (i, r) in repos.iter().enumerate() {
        let spec = ImageSpec::linux_amd64().layer(format!("layer {i}").as_bytes());
        registry.push_image(r, "1.0", &spec).await?;
    }
    // Slow manifests while `slow` is set: the scan is stopped in the middle.
    let slow = Arc::new(AtomicBool::new(true));
    let flag = slow.clone();
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), move |req, _| {
        if flag.load(Ordering::SeqCst) && req.path().contains("/manifests/") {
            Action::Delay(Duration::from_millis(400))
        } else {
            Action::Forward
        }
    })
    .await;
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.repository_concurrency = 1;
    let first = env.start_with(config.clone()).await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "svc", &["svc/*"], RuleKind::Auto).await;
    let seq = env.request(id, None).await;
    // Stop once some, not all, tags were announced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = summary(
            &env.events_after(seq)
                .await
                .into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>(),
        )
        .len();
        if found >= 2 {
            assert!(
                found < repos.len(),
                "the scan was not slow enough to interrupt"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;
    let events = env.events_after(seq).await;
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(&e.payload, EventPayload::SyncFailed(f) if f.reason.contains("interrupted"))),
        "the interrupted scan says so"
    );

    slow.store(false, Ordering::SeqCst);
    let _second = env.start_with(config).await;
    // (The interrupted job comes back first; either way, the scan after this request
    // finds the state complete.)
    let (done, _) = env.scan_ok(id, None).await;
    assert!(!done.partial);
    // Across both runs: every tag announced exactly once.
    let all: Vec<_> = env.events().await;
    let discovered = summary(&all);
    let mut want: Vec<(String, String)> = repos
        .iter()
        .map(|r| ("discovered".to_owned(), format!("{r}:1.0")))
        .collect();
    want.sort();
    assert_eq!(discovered, want);
    Ok(())
}
