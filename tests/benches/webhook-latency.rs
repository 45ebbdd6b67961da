//! `cargo bench -p imagelib-e2e --bench webhook-latency -- [--pushes 200] [--repos 4]
//! [--gap-ms 200]`
//!
//! Push → `io.imagelib.image.tag_discovered.v1` latency through the real path: a real
//! `docker-registry` whose `notifications` endpoint is `imagelib serve`'s
//! `POST /v1/webhooks/{registry_id}` (Bearer secret from `GET /v1/registries/{id}/webhook`)
//! → registry-registry publishes `sync.requested` scoped to the repository → sync-scanner
//! scans that repository → `tag_discovered`.
//!
//! The bench registers the registry through the HTTP API (`validate: false`, then a
//! `PATCH` with the registry's address once the registry, which needs the webhook URL in
//! its configuration, has started), sets a rule for `bench/*`, waits for the first (empty)
//! scan, then pushes `--pushes` images one by one, as `docker push` does: the layer and
//! config blobs, then the manifest under a new tag `v{i}` of one of `--repos`
//! repositories (round robin), waiting for each tag's `tag_discovered` and `--gap-ms`
//! before the next push. For each push it records, from the moment the manifest `PUT`
//! returned `201`:
//! - the registry's own delivery: when the push notification reached a second endpoint
//!   of the same registry (a listener in this process; distribution delivers to each
//!   endpoint on its own queue), the anchor;
//! - when `sync.requested` for the repository, the scan's `sync.started` and the tag's
//!   `tag_discovered` were on the stream (a core NATS subscription to the test stream's
//!   subjects, which sees each event as the stream stores it).
//!
//! It needs what the e2e tests need: NATS (`IMAGELIB_TEST_NATS_URL`), PostgreSQL
//! (`IMAGELIB_TEST_DATABASE_URL`) and the `docker-registry` binary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use imagelib_e2e::TestServer;
use imagelib_events::EventPayload;
use imagelib_testkit::registry::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, TestRegistry};
use serde_json::json;

const ADMIN: &str = "test-admin-token";
const TARGET_P99_MS: f64 = 500.0;

struct Args {
    pushes: usize,
    repos: usize,
    gap: Duration,
}

fn args() -> Args {
    let mut a = Args {
        pushes: 200,
        repos: 4,
        gap: Duration::from_millis(200),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = |d: u64| it.next().and_then(|v| v.parse().ok()).unwrap_or(d);
        match k.as_str() {
            "--pushes" => a.pushes = num(a.pushes as u64) as usize,
            "--repos" => a.repos = num(a.repos as u64).max(1) as usize,
            "--gap-ms" => a.gap = Duration::from_millis(num(a.gap.as_millis() as u64)),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    a
}

/// What was seen, and when (all on this process's monotonic clock).
#[derive(Default)]
struct Seen {
    /// Push notifications at the listener: (repository, tag) → first arrival.
    notified: HashMap<(String, String), Instant>,
    /// `sync.requested` per repository, in order.
    requested: HashMap<String, Vec<Instant>>,
    /// `sync.started` of repository scans, in order.
    started: HashMap<String, Vec<Instant>>,
    /// Whole-registry scans started (their sync ids).
    full_scans: std::collections::HashSet<imagelib_events::SyncId>,
    /// `sync.completed` of whole-registry scans.
    full_completed: usize,
    /// (repository, tag) → `tag_discovered`.
    discovered: HashMap<(String, String), Instant>,
}

type Shared = (Arc<Mutex<Seen>>, Arc<tokio::sync::Notify>);

fn lock(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The second notification endpoint: records when each tagged manifest push arrived.
async fn notification(
    axum::extract::State((seen, notify)): axum::extract::State<Shared>,
    body: axum::body::Bytes,
) -> &'static str {
    let at = Instant::now();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        let mut s = lock(&seen);
        for e in v["events"].as_array().into_iter().flatten() {
            if let (Some("push"), Some(repo), Some(tag)) = (
                e["action"].as_str(),
                e["target"]["repository"].as_str(),
                e["target"]["tag"].as_str(),
            ) {
                s.notified
                    .entry((repo.to_owned(), tag.to_owned()))
                    .or_insert(at);
            }
        }
    }
    notify.notify_waiters();
    "{}"
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let server = TestServer::start().await?;
    server.wait_ready().await?;
    let shared: Shared = Default::default();

    // The stream, observed from before anything happens.
    let nats = server.stream.client().await?;
    let mut events = nats
        .subscribe(format!("{}.>", server.stream.prefix))
        .await?;
    nats.flush().await?;
    let (seen, notify) = shared.clone();
    tokio::spawn(async move {
        while let Some(m) = events.next().await {
            let at = Instant::now();
            let Ok(env) = imagelib_events::binding::decode_envelope(m.headers.as_ref(), &m.payload)
            else {
                continue;
            };
            let mut s = lock(&seen);
            match env.payload {
                EventPayload::TagDiscovered(t) => {
                    s.discovered
                        .entry((t.repository.to_string(), t.tag.to_string()))
                        .or_insert(at);
                }
                EventPayload::SyncRequested(r) => {
                    if let Some(repo) = r.repository {
                        s.requested.entry(repo.to_string()).or_default().push(at);
                    }
                }
                EventPayload::SyncStarted(r) => match r.repository {
                    Some(repo) => s.started.entry(repo.to_string()).or_default().push(at),
                    None => {
                        s.full_scans.insert(r.sync_id);
                    }
                },
                EventPayload::SyncCompleted(c) if s.full_scans.contains(&c.sync_id) => {
                    s.full_completed += 1
                }
                _ => {}
            }
            drop(s);
            notify.notify_waiters();
        }
    });

    // The listener standing for the registry's delivery.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tap = format!("http://{}/notifications", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/notifications", axum::routing::post(notification))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Register (the address comes once the registry runs), learn the webhook, start the
    // registry with it, move the registration to the registry's address.
    let http = &server.http;
    let res = http
        .post(server.url("/v1/registries"))
        .bearer_auth(ADMIN)
        .json(
            &json!({"label": "webhook-bench", "url": "127.0.0.1:1", "registry_type": "generic",
                      "insecure": true, "validate": false}),
        )
        .send()
        .await?;
    let status = res.status();
    let body: serde_json::Value = res.json().await?;
    if status != 201 {
        bail!("registering: {status}: {body}");
    }
    let id = body["id"].as_str().context("no id")?.to_owned();
    let hook: serde_json::Value = http
        .get(server.url(&format!("/v1/registries/{id}/webhook")))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let hook_url = server.url(hook["url"].as_str().context("no webhook url")?);
    let secret = hook["secret"].as_str().context("no webhook secret")?;
    let registry = TestRegistry::builder()
        .notify(&hook_url, &[("Authorization", &format!("Bearer {secret}"))])
        .notify(&tap, &[])
        .start()
        .await?;
    http.patch(server.url(&format!("/v1/registries/{id}")))
        .bearer_auth(ADMIN)
        .json(&json!({"url": registry.host()}))
        .send()
        .await?
        .error_for_status()?;
    http.put(server.url(&format!("/v1/registries/{id}/rules/bench")))
        .bearer_auth(ADMIN)
        .json(&json!({"repositories": "bench/*", "kind": "auto", "enabled": true}))
        .send()
        .await?
        .error_for_status()?;
    let (seen, notify) = shared.clone();
    wait_for(&notify, Duration::from_secs(30), || {
        lock(&seen).full_completed >= 1
    })
    .await
    .context("the first scan after the rule did not complete")?;
    println!(
        "registry {} (notifications → {hook_url} and → {tap}), rule `bench/*`, first scan done",
        registry.host()
    );

    // Push, one at a time.
    let put_client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(a.pushes);
    let started_run = Instant::now();
    let full_before = lock(&seen).full_scans.len();
    for i in 0..a.pushes {
        let repo = format!("bench/app{}", i % a.repos);
        let tag = format!("v{i}");
        let layer = format!("layer of push {i} ({})", imagelib_testkit::unique_id());
        let layer_digest = registry.push_blob(&repo, layer.as_bytes()).await?;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"2024-05-01T10:00:00Z","config":{{"Labels":{{"org.opencontainers.image.version":"{tag}"}}}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        );
        let config_digest = registry.push_blob(&repo, config.as_bytes()).await?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let sent = Instant::now();
        let res = put_client
            .put(format!("{}/v2/{repo}/manifests/{tag}", registry.base_url()))
            .header("content-type", OCI_MANIFEST)
            .body(manifest)
            .send()
            .await?;
        let pushed = Instant::now();
        if res.status() != 201 {
            bail!("pushing {repo}:{tag}: {}", res.status());
        }
        let key = (repo.clone(), tag.clone());
        let found = wait_for(&notify, Duration::from_secs(30), || {
            lock(&seen).discovered.contains_key(&key)
        })
        .await;
        if found.is_err() {
            bail!(
                "{repo}:{tag} not discovered 30 s after its push; registry log: {}",
                registry.log_tail()
            );
        }
        // The listener's notification may trail the event; give it a moment.
        let _ = wait_for(&notify, Duration::from_secs(5), || {
            lock(&seen).notified.contains_key(&key)
        })
        .await;
        samples.push(sample(&lock(&seen), &key, sent, pushed));
        tokio::time::sleep(a.gap).await;
    }
    let run = started_run.elapsed();

    let (requests, scans, full) = {
        let s = lock(&seen);
        let since = |m: &HashMap<String, Vec<Instant>>| -> usize {
            m.values()
                .map(|v| v.iter().filter(|t| **t >= started_run).count())
                .sum()
        };
        (
            since(&s.requested),
            since(&s.started),
            s.full_scans.len() - full_before,
        )
    };

    let pick =
        |f: fn(&Sample) -> Option<f64>| -> Vec<f64> { samples.iter().filter_map(f).collect() };
    let discovered = pick(|s| Some(s.discovered));
    let notified = pick(|s| s.notified);
    let requested = pick(|s| s.requested);
    let started = pick(|s| s.started);
    println!();
    println!(
        "{} pushes (new tag v<i> round robin over {} repositories, {} ms between pushes) in {:.1}s; \
         {requests} sync.requested, {scans} repository scans, {full} whole-registry scans meanwhile",
        samples.len(),
        a.repos,
        a.gap.as_millis(),
        run.as_secs_f64()
    );
    println!("latency from the manifest PUT's 201, ms:      p50      p90      p99      max   (n)");
    let p99 = print_row("push -> tag_discovered on the stream", &discovered);
    print_row("push -> notification at the 2nd endpoint", &notified);
    print_row("push -> sync.requested on the stream", &requested);
    print_row("push -> sync.started of the scan", &started);
    println!(
        "p99 push -> tag_discovered / target ({TARGET_P99_MS:.0} ms): {:.2}",
        p99 / TARGET_P99_MS
    );

    drop(registry);
    if let Err(e) = server.stop().await {
        eprintln!("stopping the server: {e:#}");
    }
    Ok(())
}

/// The push of `key` (manifest `PUT` sent at `sent`, `201` at `pushed`) as seen.
fn sample(s: &Seen, key: &(String, String), sent: Instant, pushed: Instant) -> Sample {
    let after = |v: Option<&Vec<Instant>>, from: Instant| {
        v.and_then(|v| v.iter().find(|t| **t >= from).copied())
    };
    let repo = &key.0;
    // The first `sync.requested` of the repository once the manifest was on its way
    // (blobs are not notified as changes), and the first scan of it after that.
    let requested = after(s.requested.get(repo), sent);
    Sample {
        discovered: ms(s.discovered[key], pushed),
        notified: s.notified.get(key).map(|t| ms(*t, pushed)),
        requested: requested.map(|t| ms(t, pushed)),
        started: requested
            .and_then(|r| after(s.started.get(repo), r))
            .map(|t| ms(t, pushed)),
    }
}

struct Sample {
    discovered: f64,
    notified: Option<f64>,
    requested: Option<f64>,
    started: Option<f64>,
}

/// `t - from` in milliseconds (negative when `t` came first).
fn ms(t: Instant, from: Instant) -> f64 {
    if t >= from {
        (t - from).as_secs_f64() * 1000.0
    } else {
        -((from - t).as_secs_f64() * 1000.0)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Prints p50/p90/p99/max; returns p99.
fn print_row(name: &str, values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let p99 = percentile(&v, 99.0);
    println!(
        "  {name:<42} {:>8.1} {:>8.1} {:>8.1} {:>8.1}   ({})",
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        p99,
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    );
    p99
}

/// Waits until `done()` (re-checked on every notification), at most `timeout`.
async fn wait_for(
    notify: &tokio::sync::Notify,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            bail!("timed out");
        }
    }
}
