//! The scanner against a hostile registry (the test kit's, speaking the Registry HTTP API):
//! every case ends with a clear status — `sync.completed` partial with the reason, or
//! `sync.failed` with the reason — no panic, and nothing removed that still exists.

use std::time::Duration;

use imagelib_events::EventPayload;
use imagelib_events::event::SyncCompleted;
use imagelib_events::model::{IncompleteReason, IncompleteScan, RuleKind};
use imagelib_testkit::hostile::{Behaviour, HostileRegistry};
use serde_json::json;
use sync_scanner::config::Config;
use sync_scanner::scan::Outcome;

use crate::common::{Env, Running, pairs, repo, summary};

async fn hostile(repos: &[(&str, &[&str])]) -> HostileRegistry {
    let registry = HostileRegistry::start().await;
    for (r, tags) in repos {
        registry.add_tags(r, tags.iter().copied());
    }
    registry
}

async fn scanner(env: &Env, f: impl FnOnce(&mut Config)) -> Running {
    let mut config = env.config();
    f(&mut config);
    env.start_with(config).await
}

fn incomplete(done: &SyncCompleted) -> Vec<(Option<String>, IncompleteReason)> {
    let mut v: Vec<_> = done
        .incomplete
        .iter()
        .map(|IncompleteScan { repository, reason }| {
            (repository.as_ref().map(|r| r.to_string()), *reason)
        })
        .collect();
    v.sort_by_key(|(r, _)| r.clone());
    v
}

fn entry(r: Option<&str>, reason: IncompleteReason) -> (Option<String>, IncompleteReason) {
    (r.map(str::to_owned), reason)
}

fn no_removal(events: &[imagelib_events::Envelope]) {
    let removed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.payload, EventPayload::TagRemoved(_)))
        .collect();
    assert!(removed.is_empty(), "nothing may be removed: {removed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_token_lifetime_is_clamped_and_the_scan_completes() -> anyhow::Result<()> {
    let registry = hostile(&[("h/app", &["1.0", "1.1"])]).await;
    registry.set(Behaviour::HugeTokenLifetime);
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{:?}", done.incomplete);
    assert_eq!(
        summary(&events),
        pairs(&[("discovered", "h/app:1.0"), ("discovered", "h/app:1.1")])
    );
    let tokens = registry
        .seen()
        .iter()
        .filter(|r| r.path() == "/token")
        .count();
    assert!(tokens >= 1, "the token endpoint was used");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overflowing_sizes_saturate_instead_of_panicking() -> anyhow::Result<()> {
    let registry = hostile(&[("h/big", &["1.0"])]).await;
    registry.set_for(Behaviour::OverflowingSizes, &["h/big"]);
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{:?}", done.incomplete);
    let [event] = events.as_slice() else {
        panic!("one event expected: {events:?}")
    };
    let EventPayload::TagDiscovered(d) = &event.payload else {
        panic!("a discovery expected: {event:?}")
    };
    assert_eq!(d.details.size, u64::MAX, "summed sizes saturate");
    assert_eq!(d.details.platforms.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_index_children_end_that_repository_partial() -> anyhow::Result<()> {
    let registry = hostile(&[("h/wide", &["1.0"]), ("h/ok", &["1.0"])]).await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 2);

    registry.add_tags("h/wide", ["2.0"]);
    registry.add_tags("h/ok", ["2.0"]);
    registry.set_for(Behaviour::IndexChildren(10_000), &["h/wide"]);
    let before = registry.seen().len();
    let (done, events) = env.scan_ok(id, None).await;
    assert!(done.partial);
    assert_eq!(
        incomplete(&done),
        [entry(
            Some("h/wide"),
            IncompleteReason::TooManyIndexChildren
        )]
    );
    assert_eq!(
        summary(&events),
        pairs(&[("discovered", "h/ok:2.0")]),
        "the other repository goes on"
    );
    no_removal(&events);
    let wide: Vec<String> = registry.seen()[before..]
        .iter()
        .filter(|r| r.path().starts_with("/v2/h/wide/manifests/"))
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert_eq!(
        wide,
        ["GET /v2/h/wide/manifests/2.0"],
        "the index itself (one GET of the new tag), and none of its children"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endless_pages_end_that_repository_partial_and_remove_nothing() -> anyhow::Result<()> {
    let registry = hostile(&[("h/endless", &["1.0"]), ("h/ok", &["1.0"])]).await;
    let env = Env::new().await;
    let _scanner = scanner(&env, |c| c.scanner.max_pages = 20).await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 2);

    registry.add_tags("h/ok", ["2.0"]);
    registry.set_for(Behaviour::EndlessPages, &["h/endless"]);
    let (done, events) = env.scan_ok(id, None).await;
    assert!(done.partial);
    assert_eq!(
        incomplete(&done),
        [entry(Some("h/endless"), IncompleteReason::TooManyPages)]
    );
    assert_eq!(summary(&events), pairs(&[("discovered", "h/ok:2.0")]));
    no_removal(&events);
    let pages = registry
        .seen()
        .iter()
        .filter(|r| r.path() == "/v2/h/endless/tags/list")
        .count();
    assert!((20..=21).contains(&pages), "{pages} pages fetched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_many_tags_end_that_repository_partial() -> anyhow::Result<()> {
    let registry = hostile(&[("h/endless", &["1.0"])]).await;
    let env = Env::new().await;
    let _scanner = scanner(&env, |c| c.scanner.max_tags = 250).await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    env.scan_ok(id, None).await;
    registry.set_for(Behaviour::EndlessPages, &["h/endless"]);
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(
        incomplete(&done),
        [entry(Some("h/endless"), IncompleteReason::TooManyTags)]
    );
    assert!(events.is_empty(), "{events:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_realm_on_another_host_fails_the_scan_cleanly() -> anyhow::Result<()> {
    let elsewhere = imagelib_testkit::proxy::FaultProxy::respond_always(
        imagelib_testkit::proxy::Response::new(
            200,
            &[("Content-Type", "application/json")],
            r#"{"token":"stolen"}"#,
        ),
    )
    .await;
    let registry = hostile(&[("h/app", &["1.0"])]).await;
    registry.set(Behaviour::ForeignRealm(format!(
        "https://localhost:{}/token",
        elsewhere.addr.port()
    )));
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env
        .register(
            &registry.host(),
            Some(json!({"kind": "basic", "username": "scanner", "password": "canary-hostile-pw"})),
        )
        .await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    let (outcome, events) = env.scan(id, None).await;
    match outcome {
        Outcome::Failed(f) => assert!(f.reason.contains("realm"), "{}", f.reason),
        Outcome::Completed(c) => panic!("the scan must fail: {c:?}"),
    }
    assert!(events.is_empty());
    for r in elsewhere.seen() {
        let all = format!("{r:?}");
        assert!(
            !all.contains("canary") && r.header("authorization").is_none(),
            "{all}"
        );
    }
    Ok(())
}

/// `Retry-After` on every request, beyond the cap: the first answer closes the gate and no
/// other request reaches the registry; the scan ends partial, `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_on_every_request_pauses_every_request() -> anyhow::Result<()> {
    let registry = hostile(&[("h/app", &["1.0"]), ("h/exact", &["1.0"])]).await;
    registry.set(Behaviour::RetryAfterAlways(3600));
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    env.rule(id, "x", &["h/exact"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(done.partial);
    assert_eq!(
        incomplete(&done),
        [
            entry(None, IncompleteReason::RateLimited),
            entry(Some("h/exact"), IncompleteReason::RateLimited),
        ]
    );
    assert_eq!(
        done.rate_limited
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
        ["h/exact"]
    );
    assert!(events.is_empty());
    assert_eq!(
        registry.seen().len(),
        1,
        "once told to wait an hour, nothing more is sent: {:?}",
        registry
            .seen()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// A full page without `Link` is confirmed with `last=`: the listing is complete, the tags
/// beyond the first page stay, and a tag really deleted goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_page_without_link_is_confirmed_before_anything_is_removed() -> anyhow::Result<()> {
    let tags: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let registry = HostileRegistry::start().await;
    registry.add_tags("h/many", tags.iter().cloned());
    let env = Env::new().await;
    let _scanner = scanner(&env, |c| {
        c.scanner.page_size = 10;
        c.scanner.referrers = false;
    })
    .await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/many"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 25);

    registry.set(Behaviour::FullPageWithoutLink);
    registry.remove_tag("h/many", "t05");
    registry.remove_tag("h/many", "t24");
    let before = registry.seen().len();
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{:?}", done.incomplete);
    assert_eq!(
        summary(&events),
        pairs(&[("removed", "h/many:t05"), ("removed", "h/many:t24")])
    );
    let confirms: Vec<String> = registry.seen()[before..]
        .iter()
        .filter(|r| r.path() == "/v2/h/many/tags/list")
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        confirms,
        [
            "/v2/h/many/tags/list?n=10",
            "/v2/h/many/tags/list?n=10&last=t10",
            "/v2/h/many/tags/list?n=10&last=t20",
        ]
    );
    Ok(())
}

/// A `404` on `tags/list` marks the repository missing; only a second scan in a row that
/// finds it missing removes its tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_404_on_tags_list_removes_nothing_until_seen_twice() -> anyhow::Result<()> {
    let registry = hostile(&[("h/flaky", &["1.0", "1.1"]), ("h/ok", &["1.0"])]).await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&registry.host(), None).await;
    env.rule(id, "h", &["h/*"], RuleKind::Auto).await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 3);

    registry.set_for(Behaviour::TagsNotFound, &["h/flaky"]);
    let (done, events) = env.scan_ok(id, None).await;
    assert!(done.partial);
    assert_eq!(
        incomplete(&done),
        [entry(Some("h/flaky"), IncompleteReason::Missing)]
    );
    no_removal(&events);

    // Back: the mark is gone with the next scan.
    registry.set(Behaviour::Honest);
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial && events.is_empty(), "{done:?} {events:?}");

    // Missing once more: marked again, still nothing removed.
    registry.set_for(Behaviour::TagsNotFound, &["h/flaky"]);
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(
        incomplete(&done),
        [entry(Some("h/flaky"), IncompleteReason::Missing)]
    );
    no_removal(&events);

    // Missing twice in a row: now it is believed.
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{:?}", done.incomplete);
    assert_eq!(
        summary(&events),
        pairs(&[("removed", "h/flaky:1.0"), ("removed", "h/flaky:1.1")])
    );
    Ok(())
}

/// A plain `401` on `_catalog` is taken like a `403`: the explicit repositories are still
/// scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_401_on_the_catalog_still_scans_explicit_repositories() -> anyhow::Result<()> {
    let registry = hostile(&[("h/app", &["1.0"])]).await;
    let proxy =
        imagelib_testkit::proxy::FaultProxy::start(Some(registry.host().parse()?), |req, _| {
            if req.path() == "/v2/_catalog" {
                imagelib_testkit::proxy::Action::Respond(imagelib_testkit::proxy::Response::new(
                    401,
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#,
                ))
            } else {
                imagelib_testkit::proxy::Action::Forward
            }
        })
        .await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    env.rule(id, "h", &["h/app"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(summary(&events), pairs(&[("discovered", "h/app:1.0")]));
    assert_eq!(done.repositories, 1);
    let _ = repo("h/app");
    Ok(())
}

/// A scan job nobody can read goes to the dead-letter subject instead of being dropped,
/// and the jobs consumer delivers a job a finite number of times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_jobs_have_a_finite_max_deliver_and_a_dead_letter_subject() -> anyhow::Result<()> {
    let env = Env::new().await;
    let _scanner = env.start().await;
    let js = env.bus.jetstream().clone();
    let subject = format!("{}_jobs.scan.{}", env.stream.prefix, uuid::Uuid::new_v4());
    js.publish(subject.clone(), "{not a job".into())
        .await?
        .await?;
    let dlq = format!("{}.dlq.sync-scanner-jobs", env.stream.prefix);
    let stream = js.get_stream(&env.stream.name).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        match stream.get_last_raw_message_by_subject(&dlq).await {
            Ok(m) => break m,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("nothing on {dlq}: {e}"),
        }
    };
    assert_eq!(message.payload.as_ref(), b"{not a job");
    let headers = message.headers;
    let error = headers
        .get("Imagelib-Dlq-Error")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(error.contains("not readable"), "{error}");
    assert_eq!(
        headers
            .get("Imagelib-Dlq-Subject")
            .map(|v| v.to_string())
            .as_deref(),
        Some(subject.as_str())
    );

    let jobs = js.get_stream(format!("{}_JOBS", env.stream.name)).await?;
    let mut consumer = jobs
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
            sync_scanner::jobs::JOBS_CONSUMER,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    assert_eq!(info.config.max_deliver, 1_000);
    Ok(())
}

/// A jobs consumer of an older version (no `max_deliver`) is updated to a finite one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_jobs_consumer_gets_a_finite_max_deliver() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let env = Env::new().await;
    let jobs = sync_scanner::jobs::Jobs::open(&env.bus, "test".into(), Duration::from_secs(6))
        .await?
        .with_max_deliver(50);
    let stream = env
        .bus
        .jetstream()
        .get_stream(format!("{}_JOBS", env.stream.name))
        .await?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(sync_scanner::jobs::JOBS_CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut consumer = jobs.consumer().await?;
    assert_eq!(consumer.info().await?.config.max_deliver, 50);
    Ok(())
}
