//! Immutable tags, watched (issue 14): a re-pushed version is `image.tag_mutated` (besides
//! `tag_moved`) when a push webhook's repository scan or the integrity sweep re-checks it;
//! a floating tag that moves is only `tag_moved`; the sweep keeps to its request budget,
//! never runs beside a scan of the registry, and resumes where it was after a restart.
//! The sweep's requests are told apart at the proxy by their `User-Agent`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagelib_events::event::{SyncRequested, TagMutated};
use imagelib_events::model::{MutationFoundBy, RuleKind, SyncReason};
use imagelib_events::{Envelope, EventId, EventPayload, RegistryId};
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::{Env, pairs, summary};
use crate::proxy::{Action, FaultProxy};

/// One request as the proxy saw it arrive.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    sweep: bool,
}

#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn sweep(&self) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.sweep)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// A recording proxy in front of `registry`; while `slow_scans` is set, a scan's
/// `tags/list` answers 1.5 s late (the sweep's requests are never delayed).
async fn recorded(registry: &TestRegistry, slow_scans: Arc<AtomicBool>) -> (FaultProxy, Log) {
    let log = Log::default();
    let l = log.clone();
    let proxy = FaultProxy::start(Some(crate::upstream(registry)), move |req, _| {
        let sweep = req
            .header("user-agent")
            .is_some_and(|ua| ua.ends_with("(integrity sweep)"));
        l.0.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: req.method.clone(),
            path: req.path().to_owned(),
            sweep,
        });
        if !sweep && req.path().ends_with("/tags/list") && slow_scans.load(Ordering::SeqCst) {
            Action::Delay(Duration::from_millis(1500))
        } else {
            Action::Forward
        }
    })
    .await;
    (proxy, log)
}

fn mutations(events: &[Envelope]) -> Vec<TagMutated> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::TagMutated(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Waits (at most `secs`) for an `image.tag_mutated` of `id` on the stream.
async fn mutation_of(env: &Env, id: RegistryId, secs: u64) -> TagMutated {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let events = env.events().await;
        if let Some(m) = mutations(&events).into_iter().find(|m| m.registry_id == id) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tag_mutated within {secs} s: {:?}",
            summary(&events)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn image(layer: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(layer.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repushed_version_is_a_mutation_found_by_the_webhook_scan() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let v1 = registry.push_image("app/web", "1.0", &image("one")).await?;
    let w1 = registry
        .push_image("app/web", "1.1", &image("eleven"))
        .await?;
    registry
        .push_image("app/web", "latest", &image("latest"))
        .await?;
    let env = Env::new().await;
    let mut config = env.config();
    // No sweep: what is found here is the scans' doing.
    config.scanner.integrity_period_secs = 0;
    let _scanner = env.start_with(config).await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "app", &["app/*"], RuleKind::Auto).await;
    env.scan_ok(id, None).await;

    // `1.0` is re-pushed with other content, and `latest` moves as it may.
    let v2 = registry.push_image("app/web", "1.0", &image("two")).await?;
    registry
        .push_image("app/web", "latest", &image("latest, again"))
        .await?;
    // A scan of the whole registry HEADs floating tags only: the floating move is a
    // plain tag_moved, and the re-pushed version is left to the sweep.
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(summary(&events), pairs(&[("moved", "app/web:latest")]));
    assert!(mutations(&events).is_empty(), "{events:?}");

    // A push webhook's repository scan re-checks every immutable tag of it.
    let (_, events) = env.scan_ok(id, Some("app/web")).await;
    assert_eq!(summary(&events), pairs(&[("moved", "app/web:1.0")]));
    let found = mutations(&events);
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert_eq!(
        (
            m.tag.as_str(),
            m.old_digest.as_str(),
            m.new_digest.as_str(),
            m.found_by
        ),
        (
            "1.0",
            v1.digest.as_str(),
            v2.digest.as_str(),
            MutationFoundBy::Webhook
        )
    );
    let seen_at = m.seen_at.expect("seen_at");
    assert!(chrono::Utc::now() - seen_at < chrono::Duration::seconds(60));
    // The mutation comes first, then the move it is about.
    let position = |f: &dyn Fn(&EventPayload) -> bool| events.iter().position(|e| f(&e.payload));
    let mutated_at = position(&|p| matches!(p, EventPayload::TagMutated(_)));
    let moved_at = position(&|p| matches!(p, EventPayload::TagMoved(t) if t.tag.as_str() == "1.0"));
    assert!(mutated_at < moved_at, "{events:?}");
    // Its id is the fact's: the tag, both digests and the tag's previous event, so a
    // retry (or the sweep finding the same move) is deduplicated by the stream.
    let discovered_seq = env
        .events_after(0)
        .await
        .into_iter()
        .find_map(|(seq, e)| match e.payload {
            EventPayload::TagDiscovered(d) if d.tag.as_str() == "1.0" => Some(seq),
            _ => None,
        })
        .expect("1.0 discovered");
    let mutated = events
        .iter()
        .find(|e| matches!(e.payload, EventPayload::TagMutated(_)))
        .expect("the event");
    assert_eq!(
        mutated.id,
        EventId::for_fact(&format!(
            "image/{id}/app/web:1.0/mutated/{}/{}/after/{discovered_seq}",
            v1.digest, v2.digest
        ))
    );

    // A second webhook finds nothing new.
    let (_, events) = env.scan_ok(id, Some("app/web")).await;
    assert!(events.is_empty(), "{:?}", summary(&events));

    // A scan of one repository asked by hand re-checks them too: `found_by: scan`.
    let w2 = registry
        .push_image("app/web", "1.1", &image("twelve"))
        .await?;
    let seq = env
        .publish(SyncRequested {
            registry_id: id,
            repository: Some("app/web".parse()?),
            reason: SyncReason::Manual,
        })
        .await;
    let (_, events) = env.outcome_after(id, seq).await;
    let found = mutations(&events);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (
            found[0].old_digest.as_str(),
            found[0].new_digest.as_str(),
            found[0].found_by
        ),
        (
            w1.digest.as_str(),
            w2.digest.as_str(),
            MutationFoundBy::Scan
        )
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_finds_a_repushed_version_without_a_webhook() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let v1 = registry.push_image("app/web", "1.0", &image("one")).await?;
    registry
        .push_image("app/web", "1.1", &image("eleven"))
        .await?;
    registry
        .push_image("app/web", "latest", &image("latest"))
        .await?;
    let (proxy, log) = recorded(&registry, Arc::default()).await;
    let env = Env::new().await;
    let mut config = env.config();
    // Both immutable tags re-verified every 3 s.
    config.scanner.integrity_period_secs = 3;
    config.scanner.integrity_max_rps = 10.0;
    let _scanner = env.start_with(config).await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "app", &["app/*"], RuleKind::Auto).await;
    env.scan_ok(id, None).await;

    let v2 = registry.push_image("app/web", "1.0", &image("two")).await?;
    registry
        .push_image("app/web", "latest", &image("latest, again"))
        .await?;
    let m = mutation_of(&env, id, 30).await;
    assert_eq!(
        (
            m.tag.as_str(),
            m.old_digest.as_str(),
            m.new_digest.as_str(),
            m.found_by
        ),
        (
            "1.0",
            v1.digest.as_str(),
            v2.digest.as_str(),
            MutationFoundBy::Sweep
        )
    );
    assert!(m.seen_at.is_some());
    // The sweep's follow-up scans the repository: the move of 1.0, and that of `latest`
    // (a floating tag, so no mutation).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = env.events().await;
        let moved = summary(&events)
            .iter()
            .filter(|(k, _)| k == "moved")
            .count();
        if moved >= 2 {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            summary(&events)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved: Vec<(String, String)> = summary(&events)
        .into_iter()
        .filter(|(k, _)| k == "moved")
        .collect();
    assert_eq!(
        moved,
        pairs(&[("moved", "app/web:1.0"), ("moved", "app/web:latest")])
    );
    assert_eq!(mutations(&events).len(), 1, "{:?}", mutations(&events));
    let follow_up = events.iter().find_map(|e| match &e.payload {
        EventPayload::SyncStarted(s) if s.repository.is_some() => Some(s.clone()),
        _ => None,
    });
    assert_eq!(
        follow_up.map(|s| (s.repository.map(|r| r.to_string()), s.reason)),
        Some((Some("app/web".into()), SyncReason::Schedule))
    );
    // What the sweep itself sends: HEADs of the immutable tags, nothing else.
    let sweep = log.sweep();
    assert!(!sweep.is_empty());
    for s in &sweep {
        assert_eq!(s.method, "HEAD", "{s:?}");
        assert!(
            s.path == "/v2/app/web/manifests/1.0" || s.path == "/v2/app/web/manifests/1.1",
            "{s:?}"
        );
    }
    Ok(())
}

/// 24 immutable tags to verify every 2 s need 12 requests a second; the budget is 4: the
/// sweep runs at the budget, requests one at a time, and stops while a scan holds the
/// registry's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_keeps_to_its_budget_and_waits_for_scans() -> anyhow::Result<()> {
    const TAGS: usize = 24;
    const BUDGET: f64 = 4.0;
    let registry = TestRegistry::start().await?;
    registry
        .push_image("load/app", "0.1.0", &image("load"))
        .await?;
    for i in 1..TAGS {
        registry
            .tag("load/app", "0.1.0", &format!("0.1.{i}"))
            .await?;
    }
    let slow_scans = Arc::new(AtomicBool::new(false));
    let (proxy, log) = recorded(&registry, slow_scans.clone()).await;
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.integrity_period_secs = 2;
    config.scanner.integrity_max_rps = BUDGET;
    let _scanner = env.start_with(config).await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "load", &["load/*"], RuleKind::Auto).await;
    env.scan_ok(id, None).await;

    // Let it run 6 s, with a scan (held 1.5 s by its listing) in the middle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.sweep().len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    slow_scans.store(true, Ordering::SeqCst);
    let scan_from = Instant::now();
    env.scan_ok(id, None).await;
    let scan_to = Instant::now();
    slow_scans.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sweep = log.sweep();
    let times: Vec<Instant> = sweep.iter().map(|s| s.at).collect();
    let n = times.len();
    let span = (times[n - 1] - times[0]).as_secs_f64();
    let rate = (n - 1) as f64 / span;
    let min_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .unwrap_or_default();
    let busiest = times
        .iter()
        .map(|t| {
            times
                .iter()
                .filter(|u| **u >= *t && **u - *t < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    // The steady part, before the scan.
    let steady: Vec<Instant> = times.iter().copied().filter(|t| *t < scan_from).collect();
    let steady_rate =
        (steady.len() - 1) as f64 / (steady[steady.len() - 1] - steady[0]).as_secs_f64();
    println!(
        "integrity sweep: {n} requests in {span:.2} s = {rate:.2}/s including a 1.5-s scan \
         ({steady_rate:.2}/s before it; budget {BUDGET}/s, while {TAGS} tags every 2 s would \
         need {}/s); busiest 1-s window {busiest}, smallest gap {} ms",
        TAGS / 2,
        min_gap.as_millis()
    );
    // One at a time, never faster than the budget, in any second.
    assert!(
        min_gap >= Duration::from_secs_f64(1.0 / BUDGET),
        "{min_gap:?}"
    );
    assert!(busiest <= BUDGET as usize, "{busiest}");
    assert!(rate <= BUDGET, "{rate}");
    // And it does use the budget, not the period's 12/s nor much less (generously: the
    // machine is shared, and every verification takes the lease first).
    assert!(steady_rate >= BUDGET / 4.0, "{steady_rate}");
    // Nothing of the sweep reached the registry while the scan held the lease: from the
    // scan's first request to its (late) listing's answer.
    let scan_requests: Vec<Instant> = log
        .all()
        .iter()
        .filter(|s| !s.sweep && s.at >= scan_from && s.at <= scan_to)
        .map(|s| s.at)
        .collect();
    let (first, last) = (scan_requests[0], scan_requests[scan_requests.len() - 1]);
    let during: Vec<&Seen> = sweep
        .iter()
        .filter(|s| s.at > first && s.at < last + Duration::from_millis(1400))
        .collect();
    assert!(
        during.is_empty(),
        "sweep requests during the scan: {during:?}"
    );
    // Every request was a HEAD of a manifest.
    assert!(sweep.iter().all(|s| s.method == "HEAD"));
    // Nothing moved: no event but the scan's own.
    assert!(mutations(&env.events().await).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_resumes_the_sweep_where_it_was() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry.push_image("app/db", "1.0", &image("db")).await?;
    registry.tag("app/db", "1.0", "1.1").await?;
    registry.tag("app/db", "1.0", "1.2").await?;
    let (proxy, log) = recorded(&registry, Arc::default()).await;
    let env = Env::new().await;
    let mut config = env.config();
    // Three tags over 9 s: one every 3 s.
    config.scanner.integrity_period_secs = 9;
    let first = env.start_with(config.clone()).await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "app", &["app/*"], RuleKind::Auto).await;
    env.scan_ok(id, None).await;
    let before = swept_tags(&log, 1).await;
    first.stop().await;
    let stopped = log.sweep().len();
    let _second = env.start_with(config).await;
    let after = swept_tags(&log, stopped + 1).await;
    assert_eq!(before[0], "1.0", "a cycle starts at the beginning");
    let after = swept_tags(&log, after.len().max(3)).await;
    assert_eq!(
        after[..3],
        ["1.0", "1.1", "1.2"],
        "the restarted scanner went on where the first stopped ({stopped} verified) rather than starting over: {after:?}"
    );
    Ok(())
}

/// The tags the sweep HEADed, in order, once there are at least `n`.
async fn swept_tags(log: &Log, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen: Vec<String> = log
            .sweep()
            .iter()
            .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        if seen.len() >= n {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
