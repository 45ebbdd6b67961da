//! A good citizen under limits: `429` defers the registry's repositories, a cut listing removes nothing,
//! and a dead registry never holds up another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use imagelib_events::EventPayload;
use imagelib_events::model::RuleKind;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use sync_scanner::scan::Outcome;

use crate::common::{Env, pairs, summary};
use crate::proxy::{Action, FaultProxy, Response};

fn image(n: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(n.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_repository_is_deferred_not_emptied() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for r in ["lim/a", "lim/b", "lim/c"] {
        registry
            .push_image(r, "1.0", &image(&format!("{r} 1")))
            .await?;
    }
    let limited = Arc::new(AtomicBool::new(false));
    let flag = limited.clone();
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), move |req, _| {
        if !flag.load(Ordering::SeqCst) {
            return Action::Forward;
        }
        // b: Retry-After in seconds, c: as an HTTP-date; both beyond the 2 s the test
        // scanner waits in place.
        if req.path() == "/v2/lim/b/tags/list" {
            return Action::Respond(Response::new(429, &[("Retry-After", "120")], "slow down"));
        }
        if req.path() == "/v2/lim/c/tags/list" {
            let later = chrono::Utc::now() + chrono::Duration::hours(1);
            let date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            return Action::Respond(Response::new(429, &[("Retry-After", date.as_str())], ""));
        }
        Action::Forward
    })
    .await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "lim", &["lim/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 3);

    for r in ["lim/a", "lim/b", "lim/c"] {
        registry
            .push_image(r, "2.0", &image(&format!("{r} 2")))
            .await?;
    }
    registry.delete_tag("lim/b", "1.0").await?;
    limited.store(true, Ordering::SeqCst);
    let (done, events) = env.scan_ok(id, None).await;
    assert!(done.partial);
    // The `Retry-After` pauses every request to the registry, not only b's: a repository
    // whose turn came after it is deferred too (a's may have come before).
    let deferred: Vec<&str> = done.rate_limited.iter().map(|r| r.as_str()).collect();
    assert!(deferred.ends_with(&["lim/b", "lim/c"]), "{deferred:?}");
    let a_deferred = deferred.contains(&"lim/a");
    if a_deferred {
        assert!(events.is_empty(), "{:?}", summary(&events));
    } else {
        assert_eq!(summary(&events), pairs(&[("discovered", "lim/a:2.0")]));
    }

    // The next cycle, without the limit, catches up: b's deleted tag goes only now.
    limited.store(false, Ordering::SeqCst);
    let (done, events) = env.scan_ok(id, None).await;
    let mut expected = vec![
        ("discovered", "lim/b:2.0"),
        ("discovered", "lim/c:2.0"),
        ("removed", "lim/b:1.0"),
    ];
    if a_deferred {
        expected.push(("discovered", "lim/a:2.0"));
    }
    assert_eq!(summary(&events), pairs(&expected));
    assert!(!done.partial && done.rate_limited.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_listing_removes_nothing() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for t in ["1.0", "1.1", "1.2", "1.3", "1.4"] {
        registry.push_image("paged/app", t, &image(t)).await?;
    }
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), move |req, _| {
        if req.path().ends_with("/tags/list") {
            // Pages of two; with `broken`, every page after the first answers 500.
            let fail_after = flag.load(Ordering::SeqCst).then_some(1);
            crate::proxy::paginate_tags(req, fail_after)
        } else {
            Action::Forward
        }
    })
    .await;
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.page_size = 2;
    let _scanner = env.start_with(config).await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "paged", &["paged/app"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!((done.added, done.tags_seen), (5, 5));

    // 1.4 is deleted, but the listing breaks after its first page: nothing is removed.
    registry.delete_tag("paged/app", "1.4").await?;
    broken.store(true, Ordering::SeqCst);
    let (done, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty(), "{:?}", summary(&events));
    assert!(done.partial);
    assert_eq!(done.tags_seen, 2);

    broken.store(false, Ordering::SeqCst);
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(summary(&events), pairs(&[("removed", "paged/app:1.4")]));
    assert!(!done.partial, "{:?}", done.incomplete);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_registry_never_delays_another() -> anyhow::Result<()> {
    let healthy = TestRegistry::start().await?;
    healthy
        .push_image("ok/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let stalled = FaultProxy::start(None, |_, _| Action::Stall).await;
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.request_timeout_secs = 5;
    let _scanner = env.start_with(config).await;
    let dead = env.register(&stalled.host(), None).await;
    env.rule(dead, "all", &["**"], RuleKind::Auto).await;
    let alive = env.register(&healthy.host(), None).await;
    env.rule(alive, "all", &["**"], RuleKind::Auto).await;

    let seq = env.request(dead, None).await;
    // The dead registry's scan is under way before the healthy one is asked for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !env
        .events_after(seq)
        .await
        .iter()
        .any(|(_, e)| matches!(&e.payload, EventPayload::SyncStarted(s) if s.registry_id == dead))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead registry's scan never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.request(alive, None).await;
    let (outcome, _) = env.outcome_after(alive, seq).await;
    assert!(matches!(outcome, Outcome::Completed(_)));
    let (outcome, _) = env.outcome_after(dead, seq).await;
    match outcome {
        Outcome::Failed(f) => assert!(f.reason.starts_with("timeout"), "{}", f.reason),
        other => panic!("{other:?}"),
    }
    // In the stream: the healthy registry's scan ended while the dead one's still ran.
    let order: Vec<String> = env
        .events_after(seq)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e.payload {
            EventPayload::SyncStarted(s) => Some(format!("started {}", s.registry_id == dead)),
            EventPayload::SyncCompleted(c) => Some(format!("ended {}", c.registry_id == dead)),
            EventPayload::SyncFailed(f) => Some(format!("ended {}", f.registry_id == dead)),
            _ => None,
        })
        .collect();
    let dead_end = order.iter().position(|s| s == "ended true").unwrap();
    let alive_end = order.iter().position(|s| s == "ended false").unwrap();
    let dead_start = order.iter().position(|s| s == "started true").unwrap();
    assert!(dead_start < alive_end && alive_end < dead_end, "{order:?}");
    Ok(())
}
