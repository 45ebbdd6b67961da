//! Cold-sync throughput with one and with two scanner processes on a three-node NATS
//! cluster (stream at R3), sharing one PostgreSQL database: how well scans spread over
//! scanner replicas (issue 17, item 5; target ≥ 1.7×).
//!
//! `cargo bench -p imagelib-e2e --bench cluster-scale -- [--registries 8]
//! [--repositories 10] [--tags 20] [--concurrent-scans 1] [--rtt-ms 0]`. Not run by the
//! tests. With `CLUSTER_BENCH_LOGS=<dir>` each process's log of each round is kept there
//! (`s<process>-<processes>.log`; `scan started` / `scan completed` time each scan).
//!
//! Each round starts a fresh stream and database, registers every registry through the
//! first process and requests a scan of each; two times run until the catalog holds every
//! tag (projection included): from the sync requests (the cold sync, whose ratio is the
//! target's) and from the first registration (validation and rules included, which the
//! first process does alone). With `--rtt-ms` each registry
//! is reached through the test kit's latency proxy (that round trip added to every
//! request, as for a remote registry); without it the registries are on loopback, the
//! processes compete for the same cores, and the figure is a floor.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use imagelib_e2e::cluster::{Node, Shared};
use imagelib_testkit::nats_cluster::NatsCluster;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::{TestDb, unique_id};
use reqwest::Method;
use serde_json::json;

struct Args {
    registries: usize,
    repositories: usize,
    tags: usize,
    concurrent_scans: usize,
    rtt_ms: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        registries: 8,
        repositories: 10,
        tags: 20,
        concurrent_scans: 1,
        rtt_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<usize> {
            let v: usize = it.next().context("a value")?.parse()?;
            let allowed = (1..=10_000).contains(&v) || (flag == "--rtt-ms" && v == 0);
            if !allowed {
                bail!("{flag} must be 1 to 10000");
            }
            Ok(v)
        };
        match flag.as_str() {
            "--registries" => a.registries = value()?,
            "--repositories" => a.repositories = value()?,
            "--tags" => a.tags = value()?,
            "--concurrent-scans" => a.concurrent_scans = value()?,
            "--rtt-ms" => a.rtt_ms = value()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

async fn fixture(registry: &TestRegistry, index: usize, a: &Args) -> anyhow::Result<()> {
    for r in 0..a.repositories {
        let repo = format!("bench{index}/app{r}");
        let image = ImageSpec::linux_amd64().layer(format!("{repo} layer").as_bytes());
        registry.push_image(&repo, "t0", &image).await?;
        for t in 1..a.tags {
            registry.tag(&repo, "t0", &format!("t{t}")).await?;
        }
    }
    Ok(())
}

/// One round with `scanners` processes: the time from the first registration and the
/// time from the sync requests (the cold sync proper) until the catalog holds every tag,
/// and the number of tags.
async fn round(
    cluster: &NatsCluster,
    registries: &[String],
    scanners: usize,
    a: &Args,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let db = TestDb::new();
    db.create().await?.close().await;
    let dir = tempfile::tempdir()?;
    let id = unique_id();
    let shared = Shared {
        database_url: db.url.clone(),
        stream: format!("BENCH_{id}"),
        subject_prefix: format!("bench{id}"),
        replicas: 3,
        master_key_file: dir.path().join("master.key"),
        extra: vec![
            ("IMAGELIB_SCANNER__SCHEDULE".into(), "false".into()),
            (
                "IMAGELIB_SCANNER__CONCURRENT_SCANS".into(),
                a.concurrent_scans.to_string(),
            ),
        ],
    };
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_imagelib-node"));
    let mut nodes = Vec::new();
    for i in 0..scanners {
        let mut node = Node::new(
            &bin,
            &format!("s{i}"),
            &cluster.urls_from(i),
            &shared,
            dir.path(),
        )?;
        node.start()?;
        node.wait_ready(Duration::from_secs(60)).await?;
        nodes.push(node);
    }
    let expected = registries.len() * a.repositories * a.tags;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for (i, registry) in registries.iter().enumerate() {
        let (s, r) = nodes[0]
            .call(
                Method::POST,
                "/v1/registries",
                Some(json!({"label": format!("bench-{i}"), "url": registry,
                            "registry_type": "generic", "insecure": true})),
            )
            .await?;
        if s != 201 {
            bail!("registering: {s} {r}");
        }
        let rid = r["id"].as_str().context("an id")?.to_owned();
        nodes[0]
            .call(
                Method::PUT,
                &format!("/v1/registries/{rid}/rules/all"),
                Some(json!({"repositories": "**", "kind": "auto", "enabled": true})),
            )
            .await?;
        ids.push(rid);
    }
    let synced = Instant::now();
    for rid in &ids {
        nodes[0]
            .call(Method::POST, &format!("/v1/registries/{rid}/sync"), None)
            .await?;
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM catalog.tag_versions WHERE valid_to IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
        if n as usize >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("{n} of {expected} tags after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let sync = synced.elapsed();
    pool.close().await;
    // How the scans were shared: each process's completed scans, from its log.
    let shares: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("s{i} {}", n.log().matches("scan completed").count()))
        .collect();
    println!("  scans completed per process: {}", shares.join(", "));
    if let Ok(dir) = std::env::var("CLUSTER_BENCH_LOGS") {
        for (i, n) in nodes.iter().enumerate() {
            let _ = std::fs::write(format!("{dir}/s{i}-{scanners}.log"), n.log());
        }
    }
    drop(nodes);
    Ok((elapsed, sync, expected))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let cluster = NatsCluster::start().await?;
    let mut registries = Vec::new();
    let mut proxies = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..a.registries {
        let registry = TestRegistry::start().await?;
        fixture(&registry, i, &a).await?;
        if a.rtt_ms > 0 {
            let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], registry.port()));
            let proxy = imagelib_testkit::latency::LatencyProxy::start(
                upstream,
                Duration::from_millis(a.rtt_ms as u64),
            )
            .await?;
            hosts.push(proxy.host());
            proxies.push(proxy);
        } else {
            hosts.push(registry.host());
        }
        registries.push(registry);
    }
    println!(
        "cold sync of {} registries x {} repositories x {} tags, {} concurrent scans per process, \
         3-node NATS cluster (R3), {}",
        a.registries,
        a.repositories,
        a.tags,
        a.concurrent_scans,
        if a.rtt_ms > 0 {
            format!(
                "{} ms round trip to each registry (latency proxy)",
                a.rtt_ms
            )
        } else {
            "no added round-trip time".to_owned()
        }
    );
    let mut rates = Vec::new();
    for scanners in [1, 2] {
        let (elapsed, sync, tags) = round(&cluster, &hosts, scanners, &a).await?;
        let rate = tags as f64 / elapsed.as_secs_f64();
        let sync_rate = tags as f64 / sync.as_secs_f64();
        println!(
            "{scanners} scanner process(es): {tags} tags in {:.2} s from the first registration = {rate:.0} tags/s; \
             {:.2} s from the sync requests (the cold sync) = {sync_rate:.0} tags/s",
            elapsed.as_secs_f64(),
            sync.as_secs_f64()
        );
        rates.push((rate, sync_rate));
    }
    println!(
        "two processes / one: cold sync {:.2}x (target >= 1.7x); with the registrations {:.2}x",
        rates[1].1 / rates[0].1,
        rates[1].0 / rates[0].0
    );
    Ok(())
}
