//! `cargo bench -p sync-scanner --bench scanner-bench -- [--repos N] [--tags T]
//! [--concurrency C] [--rtt-ms MS] [--skopeo] [--signed]`, or `-- --memory-tags M [--repos N]`
//!
//! Fills a local `docker-registry` with N repositories × T tags (default 1000 × 20; every
//! fourth repository multi-arch), puts the test kit's latency proxy in front of it (MS of
//! round trip added, 0 by default; every client of the bench goes through it, and it
//! counts their requests by kind), runs a sync-scanner and a catalog-projector against it
//! (their own NATS stream and databases, as the tests do) and prints, side by side:
//! - cold sync, end to end: from the sync request until the catalog holds every tag,
//!   against the **minimal list** replayed by a plain HTTP client at the same concurrency
//!   (the catalog pages, one `tags/list` per repository, one GET per unique manifest and
//!   one per unique config: what any client must ask), with the requests per kind of
//!   both; and the scanner's own time to `sync.completed` against the same list; the
//!   registry's CPU per request, and the latency proxy's own (the minimal list once more,
//!   straight to the registry: what this process spends more through the proxy);
//! - warm re-sync (nothing changed): requests (catalog pages + one `tags/list` per
//!   repository + one HEAD per mutable tag, nothing else) and time, against a raw sweep of
//!   the catalog and every `tags/list` at the same concurrency;
//! - with `--signed`: every tag is signed with a key (cosign's `.sig` tag) and has a Trivy
//!   vulnerability attestation (`.att`), under a trust policy trusting the key: the extra
//!   requests per new digest, the cold sync's ratio to the raw rate of the scanner's own
//!   request list (which then holds the referrer requests), and the time to verify one
//!   signature;
//! - with `--skopeo`: `skopeo list-tags` + `skopeo inspect --raw` over the same tags with
//!   `xargs -P 8`, through the same proxy, on a sample of repositories, extrapolated;
//!   and beside its 10x target, the time the minimal list takes straight to the registry
//!   with no round trip (what this machine's registry allows any client at all).
//!
//! With `--memory-tags M` it measures memory instead: M tags over N repositories (default
//! 1000, so 100 tags each for 100,000), the tags of a repository sharing one manifest
//! (pushed once, then `PUT` under every tag: cheap to fill, and the scanner still lists,
//! `HEAD`s, diffs, announces and stores every tag). The scanner runs as its own process,
//! the `sync-scanner` binary of this build (`CARGO_BIN_EXE_sync-scanner`), so its
//! `/proc/<pid>/status` `VmHWM` (peak RSS) and `VmRSS` are the service's alone: a cold
//! sync (every tag new), then a warm re-sync (every tag known). The bench process's own
//! figures (filling the registry, counting events) are printed beside them.
//!
//! It needs what the tests need: NATS (`IMAGELIB_TEST_NATS_URL`), PostgreSQL
//! (`IMAGELIB_TEST_DATABASE_URL`) and the `docker-registry` binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{RegistryRegistered, RuleSet, SyncCompleted, SyncRequested};
use imagelib_events::model::{
    AuthKind, RegistryType, RepositoryPattern, RuleKind, SyncReason, TagSelector,
};
use imagelib_events::model::{PolicyMode, SeverityLimit, TrustPolicy, TrustedKey};
use imagelib_events::{Envelope, EventPayload, RegistryId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::latency::LatencyProxy;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::signing::{TestKey, cosign_payload, dsse_envelope};
use imagelib_testkit::{TestDb, TestStream};
use sync_scanner::config::{Config, ScannerConfig};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

struct Args {
    repos: usize,
    tags: usize,
    concurrency: usize,
    skopeo: bool,
    memory_tags: usize,
    signed: bool,
    /// Round-trip time the latency proxy adds, in ms.
    rtt_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        repos: 1000,
        tags: 20,
        concurrency: 8,
        skopeo: false,
        memory_tags: 0,
        signed: false,
        rtt_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = |d: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(d);
        match k.as_str() {
            "--repos" => a.repos = num(a.repos),
            "--tags" => a.tags = num(a.tags),
            "--concurrency" => a.concurrency = num(a.concurrency),
            "--skopeo" => a.skopeo = true,
            "--signed" => a.signed = true,
            "--memory-tags" => a.memory_tags = num(a.memory_tags),
            // Bounded: a minute per round trip is already no registry anyone waits for.
            "--rtt-ms" => a.rtt_ms = (num(a.rtt_ms as usize) as u64).min(60_000),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    a
}

fn repo_name(i: usize) -> String {
    format!("bench/r{i:05}")
}

fn tag_name(j: usize, tags: usize) -> String {
    if j + 1 == tags {
        "latest".into()
    } else {
        format!("1.{j}.0")
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args();
    imagelib_testkit::init_tracing();
    if a.memory_tags > 0 {
        return memory(&a).await;
    }
    let registry = TestRegistry::start().await?;
    let t = Instant::now();
    let key = TestKey::generate();
    fill(&registry, &a, a.signed.then_some(&key)).await?;
    println!(
        "registry: {} repositories × {} tags (every 4th multi-arch){}, filled in {:.1}s",
        a.repos,
        a.tags,
        if a.signed {
            ", every tag signed (.sig) with a vulnerability attestation (.att)"
        } else {
            ""
        },
        t.elapsed().as_secs_f64()
    );
    // Every client (scanner, raw client, skopeo) reaches the registry through the same
    // latency proxy, which also counts their requests by kind.
    let upstream = SocketAddr::from(([127, 0, 0, 1], registry.port()));
    let latency = LatencyProxy::start(upstream, Duration::from_millis(a.rtt_ms)).await?;
    let host = latency.host();
    println!(
        "round trip: {} ms added by a latency proxy in front of the registry (test kit), for the scanner, the raw client and skopeo alike",
        a.rtt_ms
    );

    let stream = TestStream::new();
    let db = TestDb::new();
    let catalog_db = TestDb::new();
    let dir = tempfile::tempdir()?;
    let client = stream.client().await?;
    let bus = EventBus::from_client(client, StreamSettings::new(&stream.name, &stream.prefix));
    bus.ensure_stream().await?;
    let common = CommonConfig {
        nats_url: stream.nats_url.clone(),
        database_url: db.url.clone(),
        stream: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        master_key_file: dir.path().join("master.key"),
        // The bench's registry listens on loopback, which the guard denies by default.
        allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
        ..Default::default()
    };
    let config = Config {
        common: common.clone(),
        keys_bucket: None,
        providers: Default::default(),
        scanner: ScannerConfig {
            schedule: false,
            max_concurrency: a.concurrency,
            repository_concurrency: 2 * a.concurrency,
            scan_timeout_secs: 3600,
            ..Default::default()
        },
    };
    let app = sync_scanner::startup::Application::build(config).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    // The catalog, projecting the same stream into a database of its own: the cold sync
    // is over for a user when the catalog shows every tag.
    let catalog_config = catalog_projector::config::Config {
        common: CommonConfig {
            database_url: catalog_db.url.clone(),
            master_key_file: dir.path().join("catalog.key"),
            gitops_dir: dir.path().join("gitops"),
            ..common
        },
        ..Default::default()
    };
    let catalog = catalog_projector::startup::Application::build(catalog_config).await?;
    let (catalog_stop, catalog_stopped) = tokio::sync::oneshot::channel::<()>();
    let catalog_server = tokio::spawn(catalog.run_until_stopped(async move {
        let _ = catalog_stopped.await;
    }));
    let catalog_pool = sqlx::PgPool::connect(&catalog_db.url).await?;

    let trust = a.signed.then(|| TrustPolicy {
        mode: PolicyMode::Audit,
        keys: vec![TrustedKey {
            name: "bench".into(),
            pem: key.public_pem(),
        }],
        identities: vec![],
        max_severity: Some(SeverityLimit::Critical),
        allow_cves: vec![],
        require_sbom: false,
    });
    let id = register_with(&bus, &host, trust).await?;

    // Cold, end to end: from the sync request until the catalog holds every tag.
    let cpu0 = Cpu::now(&[&db.name, &catalog_db.name]);
    let mark = latency.request_count();
    let started = Instant::now();
    let (cold, cold_wall, cold_events) = sync(&bus, id).await?;
    let expected_tags = (a.repos * a.tags) as i64;
    let cold_e2e = catalog_complete(&catalog_pool, id, expected_tags, started).await?;
    let cold_lines = latency.requests_since(mark);
    // The scanner's own image projector's work on these events counts too.
    let projected_after = projected(&bus).await?;
    let cold_cpu = Cpu::now(&[&db.name, &catalog_db.name]).since(&cpu0);
    // The minimal list (and the scanner's own mix), raw, through the same proxy.
    let direct = format!("http://{}", registry.host());
    let base = format!("http://{host}");
    let mix = request_mix(&direct, &base, a.signed).await?;
    let minimal: Vec<Req> = mix.iter().filter(|r| r.minimal).cloned().collect();
    let scanner_mix: Vec<Req> = mix.iter().filter(|r| r.scanner).cloned().collect();
    let cpu0 = Cpu::now(&[&db.name, &catalog_db.name]);
    let raw_minimal = replay(&minimal, a.concurrency).await?;
    let raw_cpu = Cpu::now(&[&db.name, &catalog_db.name]).since(&cpu0);
    // The latency proxy's own CPU: the same list again straight to the registry; what
    // this process spent more through the proxy is the proxy's (the client is the same).
    let direct_minimal: Vec<Req> = minimal
        .iter()
        .map(|r| Req {
            url: r.url.replacen(&base, &direct, 1),
            ..r.clone()
        })
        .collect();
    let cpu0 = Cpu::now(&[&db.name, &catalog_db.name]);
    let raw_direct = replay(&direct_minimal, a.concurrency).await?;
    let direct_cpu = Cpu::now(&[&db.name, &catalog_db.name]).since(&cpu0);
    let raw_mix = if a.signed {
        Some(replay(&scanner_mix, a.concurrency).await?)
    } else {
        None
    };
    // Warm.
    let mark = latency.request_count();
    let (warm, warm_wall, warm_events) = sync(&bus, id).await?;
    let warm_lines = latency.requests_since(mark);
    let sweep: Vec<Req> = mix
        .iter()
        .filter(|r| r.url.contains("/_catalog") || r.url.contains("/tags/list"))
        .cloned()
        .collect();
    let raw_sweep = replay(&sweep, a.concurrency).await?;
    let warm_mix: Vec<Req> = sweep
        .iter()
        .cloned()
        .chain((0..a.repos).map(|i| {
            Req::new(
                reqwest::Method::HEAD,
                format!("{base}/v2/{}/manifests/latest", repo_name(i)),
            )
        }))
        .collect();
    let raw_warm_mix = replay(&warm_mix, a.concurrency).await?;

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let cold_d = Duration::from_millis(cold.duration_ms);
    let warm_d = Duration::from_millis(warm.duration_ms);
    let pages = a.repos.div_ceil(100) as u64;
    // A last catalog page that is full is confirmed with one more request (`last=`):
    // a registry that leaves out the `Link` must not make a listing look complete.
    let scanner_pages = pages + u64::from(a.repos > 0 && a.repos.is_multiple_of(100));
    println!();
    println!(
        "concurrency {} (scanner: requests in flight per registry, {} repositories at once; raw client: the same requests in flight); {} ms round trip",
        a.concurrency,
        2 * a.concurrency,
        a.rtt_ms
    );
    println!(
        "cold sync, end to end: {:>8.2}s from the sync request to the catalog holding all {} tags | raw minimal list {:>8.2}s ({} requests) | ratio {:.2}x (target >= 0.8)",
        cold_e2e.as_secs_f64(),
        expected_tags,
        raw_minimal.as_secs_f64(),
        minimal.len(),
        raw_minimal.as_secs_f64() / cold_e2e.as_secs_f64().max(1e-9),
    );
    println!(
        "cold sync, scanner:    {:>8.2}s  {:>7} requests  {:>8.0} req/s | raw minimal list {:>8.0} req/s | ratio {:.2}x of its time",
        cold_d.as_secs_f64(),
        cold.requests,
        rate(cold.requests, cold_d),
        rate(minimal.len() as u64, raw_minimal),
        raw_minimal.as_secs_f64() / cold_d.as_secs_f64().max(1e-9),
    );
    println!(
        "            {} tags discovered, {} image events, {:.2}s from request to sync.completed, catalog complete {:.2}s later",
        cold.added,
        cold_events,
        cold_wall.as_secs_f64(),
        cold_e2e.saturating_sub(cold_wall).as_secs_f64(),
    );
    print_kinds(
        "scanner",
        &per_kind(cold_lines.iter().map(String::as_str)),
        "minimal",
        &per_kind(
            minimal
                .iter()
                .map(req_line)
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        ),
    );
    println!(
        "            CPU seconds, cold sync (until both projections are done, the scanner's {:.2}s after sync.completed): {cold_cpu}",
        projected_after.as_secs_f64()
    );
    println!("            CPU seconds, raw minimal list: {raw_cpu}");
    println!(
        "            the same list straight to the registry (no proxy, no added round trip): {:.2}s; CPU seconds: {direct_cpu}",
        raw_direct.as_secs_f64()
    );
    println!(
        "            registry CPU per request: scanner {:.2} ms, raw list {:.2} ms, raw list without the proxy {:.2} ms; the latency proxy's own CPU: {:.0} µs per request ({:.2}s through it against {:.2}s without, for this process)",
        1e3 * cold_cpu.registry / (cold_lines.len().max(1) as f64),
        1e3 * raw_cpu.registry / (minimal.len().max(1) as f64),
        1e3 * direct_cpu.registry / (minimal.len().max(1) as f64),
        1e6 * (raw_cpu.this - direct_cpu.this).max(0.0) / (minimal.len().max(1) as f64),
        raw_cpu.this,
        direct_cpu.this,
    );
    println!(
        "            connections opened through the proxy so far: {}",
        latency.connections()
    );
    if let Some(raw_mix) = raw_mix {
        let digests = cold.added as f64;
        let unsigned = scanner_mix.iter().filter(|r| !r.referrer).count() as f64;
        println!(
            "signed:     cold sync {:.2}s against the raw replay of the scanner's own list {:.2}s ({} requests): ratio {:.2}x",
            cold_d.as_secs_f64(),
            raw_mix.as_secs_f64(),
            scanner_mix.len(),
            raw_mix.as_secs_f64() / cold_d.as_secs_f64().max(1e-9),
        );
        println!(
            "            {:.2} extra requests per new digest (the list has {} referrer requests: a HEAD of each cosign tag, the referrer manifest and the blob its plan reads)",
            (cold.requests as f64 - unsigned) / digests.max(1.0),
            scanner_mix.iter().filter(|r| r.referrer).count(),
        );
        let (per_signature, checks) = verify_time(&key);
        println!(
            "            signature verification: {per_signature:.1} µs per signature (check_signature, key-based ECDSA P-256, {checks} checks), {cold_events} image events (trust events included)"
        );
    }
    println!(
        "warm sync:  {:>8.2}s  {:>7} requests (expected {} = {} catalog pages + {} tags/list + {} HEADs of `latest`), {} image events",
        warm_d.as_secs_f64(),
        warm.requests,
        scanner_pages + 2 * a.repos as u64,
        scanner_pages,
        a.repos,
        a.repos,
        warm_events,
    );
    println!(
        "            raw tags/list sweep {:>8.2}s ({} requests) | ratio {:.2}x of its time (target <= 1.3)",
        raw_sweep.as_secs_f64(),
        sweep.len(),
        warm_d.as_secs_f64() / raw_sweep.as_secs_f64().max(1e-9),
    );
    println!(
        "            raw same mix (sweep + HEADs) {:>8.2}s ({} requests) | ratio {:.2}x; {:.2}s from request to sync.completed",
        raw_warm_mix.as_secs_f64(),
        warm_mix.len(),
        warm_d.as_secs_f64() / raw_warm_mix.as_secs_f64().max(1e-9),
        warm_wall.as_secs_f64(),
    );
    print_kinds(
        "scanner",
        &per_kind(warm_lines.iter().map(String::as_str)),
        "raw",
        &per_kind(
            warm_mix
                .iter()
                .map(req_line)
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        ),
    );
    if a.signed {
        println!(
            "            (signed: a manual warm sync lists every digest's referrers again: a HEAD of its .sig and .att tags)"
        );
        let (sched, sched_wall, sched_events) = sync_as(&bus, id, SyncReason::Schedule).await?;
        println!(
            "scheduled:  {:>8.2}s  {:>7} requests, {sched_events} image events, {:.2}s from request to sync.completed (referrers listed within IMAGELIB_SCANNER__REFERRERS_RECHECK_SECS are not listed again)",
            sched.duration_ms as f64 / 1000.0,
            sched.requests,
            sched_wall.as_secs_f64()
        );
    }
    if a.skopeo {
        skopeo(
            &host,
            &a,
            cold_d,
            cold_e2e,
            (raw_direct, direct_cpu.registry),
        )
        .await?;
    }
    println!(
        "peak RSS of this process (scanner, catalog, registry client and harness): {} MB",
        peak_rss_mb()
    );

    let _ = stop.send(());
    let _ = server.await;
    let _ = catalog_stop.send(());
    let _ = catalog_server.await;
    delete_companions(&bus, &stream).await;
    Ok(())
}

/// Waits until the catalog shows `expected` current tags of the registry; the time since
/// `started`.
async fn catalog_complete(
    pool: &sqlx::PgPool,
    id: RegistryId,
    expected: i64,
    started: Instant,
) -> anyhow::Result<Duration> {
    let sql = format!(
        "SELECT count(*) FROM {}.tag_versions WHERE registry_id = $1 AND valid_to IS NULL",
        catalog_projector::SCHEMA
    );
    loop {
        // Until the catalog has migrated its schema, there is nothing to count.
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(id.0)
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if n >= expected {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!("the catalog holds {n} of {expected} tags after an hour");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The companion streams go with the test stream (which TestStream deletes).
async fn delete_companions(bus: &EventBus, stream: &TestStream) {
    for name in [
        format!("{}_JOBS", stream.name),
        format!("KV_{}_LEASES", stream.name),
        format!("KV_{}_SCANNED", stream.name),
        format!("KV_{}_KEYS", stream.name),
    ] {
        let _ = bus.jetstream().delete_stream(&name).await;
    }
}

/// Registers the registry at `host` (open, insecure) with one rule over `bench/*`, as
/// registry-registry would.
async fn register(bus: &EventBus, host: &str) -> anyhow::Result<RegistryId> {
    register_with(bus, host, None).await
}

/// [`register`] with the rule's trust policy.
async fn register_with(
    bus: &EventBus,
    host: &str,
    trust: Option<TrustPolicy>,
) -> anyhow::Result<RegistryId> {
    let id = RegistryId::new();
    publish(
        bus,
        RegistryRegistered {
            registry_id: id,
            label: "bench".into(),
            url: host.to_owned(),
            registry_type: RegistryType::Generic,
            insecure: true,
            auth_kind: AuthKind::None,
            credential: None,
            visibility: vec![],
            ca_pem: None,
            scan_interval_secs: None,
            repositories: vec![],
            webhook_secret: None,
            auth_hosts: vec![],
            report_pulls: false,
            proxy_url: None,
            no_proxy: Vec::new(),
            artifact_registry: None,
        },
    )
    .await?;
    publish(
        bus,
        RuleSet {
            registry_id: id,
            rule_id: "all".parse()?,
            repositories: vec![RepositoryPattern::Glob("bench/*".into())],
            // As the HTTP API defaults it: cosign's tags are not images.
            tags: TagSelector {
                exclude_artifact_tags: true,
                ..TagSelector::default()
            },
            kind: RuleKind::Auto,
            description: String::new(),
            hm_tags: vec![],
            enabled: true,
            trust,
            retention: None,
        },
    )
    .await?;
    Ok(id)
}

/// `--memory-tags`: the scanner process's peak RSS with that many known tags.
async fn memory(a: &Args) -> anyhow::Result<()> {
    let tags = a.memory_tags.div_ceil(a.repos).max(1);
    let registry = TestRegistry::start().await?;
    let t = Instant::now();
    fill_shared(&registry, a.repos, tags).await?;
    println!(
        "registry: {} repositories × {tags} tags = {} tags (one manifest per repository, under all its tags), filled in {:.1}s",
        a.repos,
        a.repos * tags,
        t.elapsed().as_secs_f64()
    );
    let harness_filled = Rss::of("self");

    let stream = TestStream::new();
    let db = TestDb::new();
    let dir = tempfile::tempdir()?;
    let client = stream.client().await?;
    let bus = EventBus::from_client(client, StreamSettings::new(&stream.name, &stream.prefix));
    bus.ensure_stream().await?;
    let log = std::fs::File::create(dir.path().join("sync-scanner.log"))?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sync-scanner"))
        .env("IMAGELIB_CONFIG", dir.path().join("none.toml"))
        .env("IMAGELIB_NATS_URL", &stream.nats_url)
        .env("IMAGELIB_DATABASE_URL", &db.url)
        .env("IMAGELIB_STREAM", &stream.name)
        .env("IMAGELIB_SUBJECT_PREFIX", &stream.prefix)
        .env("IMAGELIB_HTTP_ADDR", "127.0.0.1:0")
        .env("IMAGELIB_MASTER_KEY_FILE", dir.path().join("master.key"))
        .env("IMAGELIB_SCANNER__SCHEDULE", "false")
        .env(
            "IMAGELIB_SCANNER__MAX_CONCURRENCY",
            a.concurrency.to_string(),
        )
        .env(
            "IMAGELIB_SCANNER__REPOSITORY_CONCURRENCY",
            a.concurrency.to_string(),
        )
        .env("IMAGELIB_SCANNER__SCAN_TIMEOUT_SECS", "3600")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let id = register(&bus, &registry.host()).await?;
    // Idle, after projecting the registry and its rule.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Rss::of(&pid);

    let (cold, cold_wall, cold_events) = sync(&bus, id).await?;
    let after_cold = Rss::of(&pid);
    let (warm, warm_wall, warm_events) = sync(&bus, id).await?;
    let after_warm = Rss::of(&pid);
    let harness = Rss::of("self");
    if let Ok(Some(status)) = child.try_wait() {
        anyhow::bail!(
            "sync-scanner exited ({status}): {}",
            std::fs::read_to_string(dir.path().join("sync-scanner.log")).unwrap_or_default()
        );
    }

    println!();
    println!(
        "cold sync: {:.1}s, {} requests, {} tags discovered ({cold_events} image events), {:.1}s from request to sync.completed",
        cold.duration_ms as f64 / 1000.0,
        cold.requests,
        cold.added,
        cold_wall.as_secs_f64()
    );
    println!(
        "warm sync: {:.2}s, {} requests, {} tags seen, {warm_events} image events, {:.2}s from request to sync.completed",
        warm.duration_ms as f64 / 1000.0,
        warm.requests,
        warm.tags_seen,
        warm_wall.as_secs_f64()
    );
    println!(
        "sync-scanner process (pid {pid}, release binary, alone: HTTP API, projections, job runner, registry client, DB pool):"
    );
    println!("  started, idle (3 s), no scan yet:   {started}");
    println!("  after the cold sync:                {after_cold}");
    println!(
        "  after the warm re-sync:             {after_warm}   <- peak RSS with {} known tags (target <= 100 MB)",
        cold.added
    );
    println!(
        "bench process (harness: filling the registry, NATS client counting events; no scanner in it): after filling {harness_filled}; at the end {harness}"
    );

    let _ = child.start_kill();
    let _ = child.wait().await;
    delete_companions(&bus, &stream).await;
    Ok(())
}

/// `repos` repositories × `tags` tags, a repository's tags all on one manifest: the
/// image pushed once, then its manifest `PUT` under each other tag.
async fn fill_shared(registry: &TestRegistry, repos: usize, tags: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()?;
    let base = registry.base_url();
    futures::stream::iter(0..repos)
        .map(|i| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let repo = repo_name(i);
                let spec = ImageSpec::new("linux", "amd64").label("bench.repository", &repo);
                let pushed = registry
                    .push_image(&repo, &tag_name(0, tags), &spec)
                    .await?;
                for j in 1..tags {
                    let tag = tag_name(j, tags);
                    let resp = http
                        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
                        .header("content-type", &pushed.media_type)
                        .body(pushed.raw.clone())
                        .send()
                        .await?;
                    if resp.status().as_u16() != 201 {
                        anyhow::bail!("putting {repo}:{tag}: {}", resp.status());
                    }
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process (`self` or a pid).
struct Rss {
    hwm_kb: u64,
    rss_kb: u64,
}

impl Rss {
    fn of(pid: &str) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Rss {
            hwm_kb: field("VmHWM:"),
            rss_kb: field("VmRSS:"),
        }
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peak RSS (VmHWM) {:.1} MB, RSS (VmRSS) {:.1} MB",
            self.hwm_kb as f64 / 1024.0,
            self.rss_kb as f64 / 1024.0
        )
    }
}

async fn publish(bus: &EventBus, payload: impl Into<EventPayload>) -> anyhow::Result<u64> {
    Ok(bus
        .publish(&Envelope::new("bench", payload))
        .await?
        .sequence)
}

/// Waits until the scanner's image projector has applied every event in the stream; how
/// long that took.
async fn projected(bus: &EventBus) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let name = sync_scanner::bus::consumer_name("", imagelib_events::Aggregate::Image);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = bus
        .jetstream()
        .get_stream(&bus.settings().name)
        .await?
        .get_consumer(&name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    while t.elapsed() < Duration::from_secs(120) {
        let info = consumer.info().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(t.elapsed())
}

/// Requests a sync and waits for its `sync.completed`: the event, the wall time, and how
/// many image events it emitted (a core NATS subscription to the registry's sync events
/// only; the image events are counted from the stream afterwards).
async fn sync(bus: &EventBus, id: RegistryId) -> anyhow::Result<(SyncCompleted, Duration, u64)> {
    sync_as(bus, id, SyncReason::Manual).await
}

/// [`sync`] for a scan requested for `reason`.
async fn sync_as(
    bus: &EventBus,
    id: RegistryId,
    reason: SyncReason,
) -> anyhow::Result<(SyncCompleted, Duration, u64)> {
    let prefix = &bus.settings().subject_prefix;
    let mut ends = bus
        .client()
        .subscribe(format!("{prefix}.sync.{id}.*"))
        .await?;
    bus.client().flush().await?;
    let start = bus.last_sequence().await?;
    let t = Instant::now();
    publish(
        bus,
        SyncRequested {
            registry_id: id,
            repository: None,
            reason,
        },
    )
    .await?;
    while let Some(m) = ends.next().await {
        let env = imagelib_events::binding::decode_envelope(m.headers.as_ref(), &m.payload)?;
        match env.payload {
            EventPayload::SyncCompleted(c) => {
                let wall = t.elapsed();
                return Ok((c, wall, image_events_after(bus, start).await?));
            }
            EventPayload::SyncFailed(f) => anyhow::bail!("sync failed: {}", f.reason),
            _ => {}
        }
    }
    anyhow::bail!("the subscription ended before the sync did")
}

/// How many image events the stream holds after `start`: read from the stream once the
/// sync is over (an ephemeral consumer's pending count), so that counting them adds no
/// subscriber, and no CPU, to the run being measured.
async fn image_events_after(bus: &EventBus, start: u64) -> anyhow::Result<u64> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("counting image events: {e}");
    let stream = bus
        .jetstream()
        .get_stream(&bus.settings().name)
        .await
        .map_err(|e| err(&e))?;
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{}.image.>", bus.settings().subject_prefix),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start + 1,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let info = consumer.info().await.map_err(|e| err(&e))?;
    let (pending, name) = (info.num_pending, info.name.clone());
    let _ = stream.delete_consumer(&name).await;
    Ok(pending)
}

async fn fill(registry: &TestRegistry, a: &Args, key: Option<&TestKey>) -> anyhow::Result<()> {
    // Repositories in parallel, each repository's tags in order (distribution races on
    // concurrent uploads of one blob to one repository).
    futures::stream::iter(0..a.repos)
        .map(|i| async move {
            let repo = repo_name(i);
            for j in 0..a.tags {
                let tag = tag_name(j, a.tags);
                let spec = |os: &str, arch: &str| {
                    ImageSpec::new(os, arch)
                        .label("org.opencontainers.image.version", &tag)
                        .label("bench.repository", &repo)
                };
                let digest = if i % 4 == 0 {
                    registry
                        .push_index(
                            &repo,
                            &tag,
                            &[spec("linux", "amd64"), spec("linux", "arm64")],
                            &[],
                        )
                        .await?
                        .digest
                } else {
                    registry
                        .push_image(&repo, &tag, &spec("linux", "amd64"))
                        .await?
                        .digest
                };
                if let Some(key) = key {
                    sign(registry, &repo, &digest, key).await?;
                }
            }
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
struct Req {
    method: reqwest::Method,
    url: String,
    /// A request about a referrer (the signed run's extra).
    referrer: bool,
    /// The scanner makes it.
    scanner: bool,
    /// It is on the minimal list: what any client must ask to know every tag (the
    /// catalog, one `tags/list` per repository, one GET per unique manifest and per
    /// unique config).
    minimal: bool,
}

impl Req {
    fn new(method: reqwest::Method, url: String) -> Self {
        Req {
            method,
            url,
            referrer: false,
            scanner: true,
            minimal: true,
        }
    }
}

/// What kind of request a `METHOD /path?query` line is, for the per-kind counts.
fn kind_of(line: &str) -> &'static str {
    let (method, target) = line.split_once(' ').unwrap_or((line, ""));
    let path = target.split('?').next().unwrap_or_default();
    let head = method == "HEAD";
    if path.ends_with("/_catalog") {
        "GET _catalog"
    } else if path.ends_with("/tags/list") {
        "GET tags/list"
    } else if path.contains("/referrers/") {
        "GET referrers API"
    } else if path.contains("/manifests/sha256-") {
        if head {
            "HEAD cosign/referrer tag"
        } else {
            "GET cosign/referrer tag"
        }
    } else if path.contains("/manifests/sha256:") {
        if head {
            "HEAD manifest by digest"
        } else {
            "GET manifest by digest"
        }
    } else if path.contains("/manifests/") {
        if head {
            "HEAD manifest by tag"
        } else {
            "GET manifest by tag"
        }
    } else if path.contains("/blobs/") {
        "GET blob (config, referrer content)"
    } else {
        "other"
    }
}

/// Requests per kind, in a stable order.
fn per_kind<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut out = std::collections::BTreeMap::new();
    for l in lines {
        *out.entry(kind_of(l)).or_default() += 1;
    }
    out
}

fn req_line(r: &Req) -> String {
    let target = r
        .url
        .find("/v2/")
        .map(|i| &r.url[i..])
        .unwrap_or(r.url.as_str());
    format!("{} {target}", r.method)
}

/// Prints two per-kind tables side by side.
fn print_kinds(
    left_name: &str,
    left: &std::collections::BTreeMap<&'static str, u64>,
    right_name: &str,
    right: &std::collections::BTreeMap<&'static str, u64>,
) {
    println!(
        "            {:<38} {:>10} {:>10}",
        "requests per kind", left_name, right_name
    );
    let mut kinds: Vec<&&str> = left.keys().chain(right.keys()).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        println!(
            "            {:<38} {:>10} {:>10}",
            k,
            left.get(*k).copied().unwrap_or(0),
            right.get(*k).copied().unwrap_or(0)
        );
    }
    println!(
        "            {:<38} {:>10} {:>10}",
        "total",
        left.values().sum::<u64>(),
        right.values().sum::<u64>()
    );
}

/// cosign's layout of a key signature and a vuln attestation of `digest`: the manifests
/// under `sha256-<hex>.sig` and `.att`, as `cosign sign` / `cosign attest --type vuln`
/// push them to a registry without the referrers API.
async fn sign(
    registry: &TestRegistry,
    repo: &str,
    digest: &str,
    key: &TestKey,
) -> anyhow::Result<()> {
    let stem = digest.replacen(':', "-", 1);
    let config = registry.push_blob(repo, b"{}").await?;
    let manifest = |layer_type: &str, blob: &str, size: usize, annotations: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{blob}","size":{size},"annotations":{{{annotations}}}}}]}}"#
        )
    };
    let payload = cosign_payload(&format!("{}/{repo}", registry.host()), digest);
    let signature = key.sign(&payload);
    let blob = registry.push_blob(repo, &payload).await?;
    let sig = manifest(
        "application/vnd.dev.cosign.simplesigning.v1+json",
        &blob,
        payload.len(),
        &format!(r#""dev.cosignproject.cosign/signature":"{signature}""#),
    );
    registry
        .push_manifest(
            repo,
            &format!("{stem}.sig"),
            "application/vnd.oci.image.manifest.v1+json",
            sig.as_bytes(),
        )
        .await?;
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1",
        "subject": [{"name": repo, "digest": {"sha256": hex}}],
        "predicate": {
            "scanner": {
                "uri": "pkg:github/aquasecurity/trivy@v0.57.0",
                "version": "0.57.0",
                "db": {"uri": "", "version": "2026-11-30T06:00:00Z"},
                "result": {
                    "SchemaVersion": 2,
                    "ArtifactName": repo,
                    "ArtifactType": "container_image",
                    "Results": [{"Target": repo, "Class": "os-pkgs", "Type": "debian",
                        "Vulnerabilities": [
                            {"VulnerabilityID": "CVE-2024-0001", "PkgName": "openssl", "InstalledVersion": "3.0.1", "FixedVersion": "3.0.2", "Severity": "HIGH"},
                            {"VulnerabilityID": "CVE-2024-0002", "PkgName": "zlib", "InstalledVersion": "1.2", "Severity": "LOW"}
                        ]}],
                },
            },
            "metadata": {"scanStartedOn": "2026-11-30T10:00:00Z", "scanFinishedOn": "2026-11-30T10:00:05Z"},
        },
    });
    let envelope = dsse_envelope(
        "application/vnd.in-toto+json",
        statement.to_string().as_bytes(),
        key,
    );
    let blob = registry.push_blob(repo, &envelope).await?;
    let att = manifest(
        "application/vnd.dsse.envelope.v1+json",
        &blob,
        envelope.len(),
        r#""predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1""#,
    );
    registry
        .push_manifest(
            repo,
            &format!("{stem}.att"),
            "application/vnd.oci.image.manifest.v1+json",
            att.as_bytes(),
        )
        .await?;
    Ok(())
}

/// Time to check one key-based cosign signature (as the scanner does for each), in µs.
fn verify_time(key: &TestKey) -> (f64, u32) {
    use imagelib_trust::evidence::{
        SignatureEvidence, SignatureMaterial, Verifier, check_signature,
    };
    let digest = format!("sha256:{}", "ab".repeat(32));
    let payload = cosign_payload("bench/r00000", &digest);
    let evidence = SignatureEvidence {
        source: format!("sha256:{}", "cd".repeat(32)),
        material: SignatureMaterial::Cosign {
            signature: key.sign(&payload),
            payload,
            certificate: None,
            chain: None,
            bundle: None,
        },
    };
    let keys = [imagelib_trust::cosign::PublicKey::from_pem(&key.public_pem()).expect("key")];
    let verifier = Verifier::new(chrono::Utc::now()).keys(&keys);
    const N: u32 = 2000;
    let t = Instant::now();
    for _ in 0..N {
        let check = check_signature(&evidence, &digest, &verifier);
        assert!(matches!(
            check.outcome,
            imagelib_trust::evidence::Outcome::Trusted
        ));
    }
    (t.elapsed().as_secs_f64() * 1e6 / f64::from(N), N)
}

/// The requests of a cold sync, as a flat list, discovered through `base` and addressed
/// to `replay_base` (the latency proxy): catalog pages, `tags/list` per repository, a GET
/// per tag, a GET per platform manifest of an index, the configs, and the scanner's one
/// referrers-API question. Each is marked as made by the scanner (which reads only an
/// index's primary platform's config, and with `signed` a HEAD of each cosign tag, the
/// referrer manifest and the blob its plan reads) and/or on the minimal list.
async fn request_mix(base: &str, replay_base: &str, signed: bool) -> anyhow::Result<Vec<Req>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut repos: Vec<String> = Vec::new();
    let mut next = Some(format!("{base}/v2/_catalog?n=100"));
    while let Some(url) = next.take() {
        out.push(Req::new(reqwest::Method::GET, url.clone()));
        let resp = http.get(&url).send().await?;
        next = resp
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(target, _)| format!("{base}{target}"));
        let v: serde_json::Value = resp.json().await?;
        let page: Vec<String> = serde_json::from_value(v["repositories"].clone())?;
        repos.extend(page);
    }
    let lists: Vec<Vec<Req>> =
        futures::stream::iter(repos.iter().filter(|r| r.starts_with("bench/")))
            .map(|repo| {
                let http = http.clone();
                async move {
                    let mut reqs = vec![Req::new(
                        reqwest::Method::GET,
                        format!("{base}/v2/{repo}/tags/list?n=100"),
                    )];
                    let v: serde_json::Value = http
                        .get(format!("{base}/v2/{repo}/tags/list"))
                        .send()
                        .await?
                        .json()
                        .await?;
                    let tags: Vec<String> = serde_json::from_value(v["tags"].clone())?;
                    let artifact = |t: &str| {
                        t.starts_with("sha256-")
                            && (t.ends_with(".sig") || t.ends_with(".att") || t.len() == 71)
                    };
                    let get = |url: String| {
                        let http = http.clone();
                        async move {
                            let resp = http.get(&url).header("accept", ACCEPT).send().await?;
                            let digest = resp
                                .headers()
                                .get("docker-content-digest")
                                .and_then(|d| d.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body: serde_json::Value = resp.json().await?;
                            anyhow::Ok((digest, body))
                        }
                    };
                    for tag in tags.iter().filter(|t| !artifact(t)) {
                        let url = format!("{base}/v2/{repo}/manifests/{tag}");
                        let (digest, m) = get(url.clone()).await?;
                        reqs.push(Req::new(reqwest::Method::GET, url));
                        if signed {
                            // What reading its signature and attestation costs: a HEAD of
                            // each cosign tag, the manifest and the blob the plan reads.
                            let stem = digest.replacen(':', "-", 1);
                            for suffix in ["sig", "att"] {
                                let url = format!("{base}/v2/{repo}/manifests/{stem}.{suffix}");
                                let (_, r) = get(url.clone()).await?;
                                let extra = |method, url| Req {
                                    referrer: true,
                                    minimal: false,
                                    ..Req::new(method, url)
                                };
                                reqs.push(extra(reqwest::Method::HEAD, url.clone()));
                                reqs.push(extra(reqwest::Method::GET, url));
                                if let Some(d) = r["layers"][0]["digest"].as_str() {
                                    reqs.push(extra(
                                        reqwest::Method::GET,
                                        format!("{base}/v2/{repo}/blobs/{d}"),
                                    ));
                                }
                            }
                        }
                        // (manifest, is the one whose config the scanner reads)
                        let mut manifests = vec![(m, true)];
                        if let Some(children) = manifests[0].0["manifests"].as_array().cloned() {
                            manifests[0].1 = false;
                            let primary = children
                                .iter()
                                .position(|c| {
                                    c["platform"]["os"] == "linux"
                                        && c["platform"]["architecture"] == "amd64"
                                })
                                .unwrap_or(0);
                            for (i, c) in children.iter().enumerate() {
                                let d = c["digest"].as_str().unwrap_or_default();
                                let url = format!("{base}/v2/{repo}/manifests/{d}");
                                let (_, child) = get(url.clone()).await?;
                                reqs.push(Req::new(reqwest::Method::GET, url));
                                manifests.push((child, i == primary));
                            }
                        }
                        for (m, read) in &manifests {
                            if let Some(d) = m["config"]["digest"].as_str() {
                                reqs.push(Req {
                                    scanner: *read,
                                    ..Req::new(
                                        reqwest::Method::GET,
                                        format!("{base}/v2/{repo}/blobs/{d}"),
                                    )
                                });
                            }
                        }
                    }
                    anyhow::Ok(reqs)
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
    // Content-addressed requests are made once (the content cache); a repository's URL
    // names it, so the same digest in two repositories is two requests, for any client.
    let mut seen = std::collections::HashSet::new();
    for reqs in lists {
        for r in reqs {
            let by_digest = r.url.contains("/blobs/") || r.url.contains("/manifests/sha256:");
            if by_digest && !seen.insert((r.method.clone(), r.url.clone())) {
                continue;
            }
            out.push(r);
        }
    }
    out.push(Req {
        minimal: false,
        ..Req::new(
            reqwest::Method::GET,
            format!(
                "{base}/v2/{}/referrers/sha256:{}",
                repo_name(0),
                "0".repeat(64)
            ),
        )
    });
    for r in &mut out {
        r.url = r.url.replacen(base, replay_base, 1);
    }
    Ok(out)
}

/// Sends `reqs` with at most `concurrency` in flight; the time it took.
async fn replay(reqs: &[Req], concurrency: usize) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let t = Instant::now();
    futures::stream::iter(reqs)
        .map(|r| {
            let http = http.clone();
            async move {
                let resp = http
                    .request(r.method.clone(), &r.url)
                    .header("accept", ACCEPT)
                    .send()
                    .await?;
                resp.bytes().await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(t.elapsed())
}

/// `skopeo list-tags` + `skopeo inspect --raw` per tag with `xargs -P 8`, over a sample of
/// repositories, extrapolated to all of them; and beside the 10x target, what this machine
/// allows at all: `direct` is the minimal list straight to the registry (no proxy, no round
/// trip, nothing else running) and the registry's CPU seconds for it.
async fn skopeo(
    host: &str,
    a: &Args,
    scanner: Duration,
    e2e: Duration,
    direct: (Duration, f64),
) -> anyhow::Result<()> {
    let sample = a.repos.min(20);
    let script = format!(
        "for i in $(seq 0 {last}); do r=$(printf 'bench/r%05d' $i); echo $r; done | \
         xargs -P 8 -I{{}} sh -c 'skopeo list-tags --tls-verify=false docker://{host}/{{}} >/dev/null && \
         for j in $(seq 0 {tl}); do if [ $j = {tl} ]; then t=latest; else t=1.$j.0; fi; echo {{}}:$t; done' | \
         xargs -P 8 -I{{}} skopeo inspect --raw --tls-verify=false docker://{host}/{{}} >/dev/null",
        last = sample - 1,
        tl = a.tags - 1,
    );
    let t = Instant::now();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .await?;
    let took = t.elapsed();
    let all = took.as_secs_f64() * a.repos as f64 / sample as f64;
    println!(
        "skopeo:     {:>8.2}s for {sample} repositories ({}), ~{:.1}s for all {} (extrapolated) | scanner {:.1}x faster to sync.completed (target >= 10), {:.1}x to the catalog complete",
        took.as_secs_f64(),
        if status.success() { "ok" } else { "FAILED" },
        all,
        a.repos,
        all / scanner.as_secs_f64().max(1e-9),
        all / e2e.as_secs_f64().max(1e-9)
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "            10x skopeo is a cold sync in {:.2}s; here the minimal list alone, straight to the registry with no round trip, takes {:.2}s ({:.1}x skopeo), the registry's own CPU for it {:.1}s on {cores} cores",
        all / 10.0,
        direct.0.as_secs_f64(),
        all / direct.0.as_secs_f64().max(1e-9),
        direct.1,
    );
    Ok(())
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// CPU time (user + system, seconds) of the processes on this machine that take part:
/// this process, its own `docker-registry` (a child), the PostgreSQL backends of its
/// databases (the scanner's and the catalog's), and the NATS server (shared: other clients' work counts too). Other
/// engineers' registries and databases on the same machine are left out, so the split
/// holds under load (the wall times do not).
#[derive(Debug, Clone, Default)]
struct Cpu {
    registry: f64,
    nats: f64,
    postgres: f64,
    this: f64,
}

impl Cpu {
    fn now(databases: &[&str]) -> Self {
        let tick = 100.0; // USER_HZ
        let mut c = Cpu::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return c;
        };
        let me = std::process::id().to_string();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let t = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let secs = (t(11) + t(12)) / tick;
            let parent = fields.get(1).copied().unwrap_or_default();
            match comm {
                _ if name == me => c.this += secs,
                "docker-registry" | "registry" if parent == me => c.registry += secs,
                "nats-server" => c.nats += secs,
                "postgres" => {
                    // A backend's command line names its database.
                    let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    let cmdline = String::from_utf8_lossy(&cmdline);
                    if databases.iter().any(|d| cmdline.contains(d)) {
                        c.postgres += secs;
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            registry: self.registry - before.registry,
            nats: self.nats - before.nats,
            postgres: self.postgres - before.postgres,
            this: self.this - before.this,
        }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registry {:.1}, scanner, catalog and client process {:.1}, nats {:.1} (the whole server), postgres {:.1} (these databases' live backends)",
            self.registry, self.this, self.nats, self.postgres
        )
    }
}
