//! `catalog-bench`: replay and query throughput of the catalog, each against a raw anchor
//! measured in the same run (README, "Performance").
//!
//! 1. Publishes N synthetic events (the real mix: tags discovered, moved and removed across
//!    10,000 repositories) into a fresh stream.
//! 2. Anchors: (a) consuming every message from JetStream without applying it (an ordered
//!    consumer, no decoding); (b) loading the rows the catalog ends with (one per tag
//!    version) into an identical `tag_versions` table with `COPY`.
//! 3. Replay: the rebuild path (`replay_into`) into an empty catalog; events/s and the
//!    ratio to the lower anchor (target ≥ 0.5). Once without the audit trail (the catalog
//!    alone, into a schema dropped afterwards) and once with it (`--audit-first` swaps the
//!    order), printed side by side: what the trail costs the projection.
//! 4. Query: tops the catalog up to `--query-tags` current tags, starts the service and runs
//!    `/v1/images?repository=…&kind=…&limit=50` with 8 closed-loop connections, then the
//!    same SQL through `pgbench -f` (target ≥ 0.7 × pgbench, p99 ≤ 10 ms).
//! 5. Console: on the same service and connections, the Image Library page of the same
//!    query, `/?repository=…&kind=database` (target ≥ 0.8 × the JSON rate, p99 ≤ 20 ms,
//!    timed by the load generator), and the first-load transfer of `/`, `/models`, a
//!    repository, `/activity` and `/login`: the HTML and the stylesheet and script it
//!    loads, each asked for with `Accept-Encoding: gzip`, headers included (target ≤ 100 KB).
//!
//! 6. Lists against their floor (issue 17): for every list the API and the console serve
//!    (default page, repository, repository and kind, kind, registry, the Model Library,
//!    signed, max_severity, has_sbom, policy, search, a repository's tags), 16 pages over
//!    HTTP (as configured by default, pages kept until the catalog changes, and again from
//!    a service that keeps none: every page read afresh), the same statements in pgbench,
//!    and the floor: the same pages in pgbench from a
//!    flat table holding exactly the page's columns with one covering index, built from the
//!    same catalog in the same run (target HTTP >= 0.7 x floor, p99 <= 10 ms); `--explain`
//!    prints each plan.
//!
//! The replay also prints its ratio to the `COPY` anchor (target >= 0.9) and the process's
//! peak RSS while it ran (`VmHWM`, reset just before; target <= 200 MB).
//!
//! Run it in release mode: `cargo run --release -p catalog-projector --bin catalog-bench`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use catalog_projector::config::{CatalogSettings, Config};
use catalog_projector::copy::{BinaryRows, CopyBuf};
use catalog_projector::projection::Projection;
use catalog_projector::projection::images::{
    NewVersion, binary_copy_statement, copy_statement, encode_version, encode_version_binary,
};
use catalog_projector::query::{Cursor, IMAGE_COLUMNS, ImageFilter, STAMP_COLUMNS, images};
use catalog_projector::rebuild::{DeferIndexes, RebuildReport, bulk_replay, replay_into};
use catalog_projector::synth::{Generator, Mix, repo_kind, repo_name};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::model::ImageKind;
use imagelib_events::{EventPayload, ImageId};
use imagelib_platform::config::CommonConfig;

#[derive(Debug, Parser)]
#[command(
    name = "catalog-bench",
    about = "Replay and query throughput of the catalog against raw anchors"
)]
struct Args {
    /// Image events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 10_000)]
    repositories: usize,
    #[arg(long, default_value_t = 4)]
    registries: usize,
    /// Current tags in the catalog for the query phase (topped up with new tags).
    #[arg(long, default_value_t = 1_000_000)]
    query_tags: usize,
    /// Percent of the generated image events that are trust evidence (signatures,
    /// reports, SBOMs, verdicts, referrer lists) about an existing tag's digest.
    #[arg(long, default_value_t = 0)]
    trust_pct: u32,
    /// Events per transaction during replay.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Closed-loop connections of the query phase.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds of each query measurement.
    #[arg(long, default_value_t = 15)]
    query_seconds: u64,
    #[arg(
        long,
        env = "IMAGELIB_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// A PostgreSQL server URL; the bench creates (and drops) a database of its own.
    #[arg(
        long,
        env = "IMAGELIB_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Keep the stream and the database afterwards.
    #[arg(long)]
    keep: bool,
    /// Skip the query phase.
    #[arg(long)]
    no_query: bool,
    /// Skip the replay without the audit trail (the comparison).
    #[arg(long)]
    no_audit_compare: bool,
    /// Skip `catalog-projector rebuild` in a process of its own (its peak memory is the
    /// projector's alone, not this process's with the generator's and the anchors').
    #[arg(long)]
    no_rebuild_process: bool,
    /// Replay with the audit trail first, then the catalog alone (the default is the
    /// other way round): run both orders to see what the order itself does.
    #[arg(long)]
    audit_first: bool,
    /// Percent of the query phase's top-up events that are trust evidence, and that are
    /// pulls and mutations, so that the trust filters have pages to show.
    #[arg(long, default_value_t = 10)]
    query_trust_pct: u32,
    #[arg(long, default_value_t = 5)]
    query_integrity_pct: u32,
    /// The lists measured against their floor (comma-separated; `none` for none): default,
    /// repository, repository-kind, kind, registry, models, signed, max-severity, has-sbom,
    /// policy, search, tags.
    #[arg(long, default_value = "all")]
    lists: String,
    /// Print each list's `EXPLAIN (ANALYZE, BUFFERS)` (its first variant).
    #[arg(long)]
    explain: bool,
    /// Internal: run as the lists' HTTP load generator against this address (the bench
    /// starts itself so), reading the paths from `--http-load-paths`, and print the result.
    #[arg(long, hide = true)]
    http_load: Option<SocketAddr>,
    #[arg(long, hide = true)]
    http_load_paths: Option<std::path::PathBuf>,
    /// Which secondary indexes the replay builds after its load: `large` (what a rebuild
    /// does), `all` or `none` (every index kept up row by row, as the live consumer does).
    #[arg(long, default_value = "large", value_parser = parse_defer)]
    defer_indexes: DeferIndexes,
}

fn parse_defer(s: &str) -> Result<DeferIndexes, String> {
    match s {
        "large" => Ok(DeferIndexes::Large),
        "all" => Ok(DeferIndexes::All),
        "none" => Ok(DeferIndexes::None),
        other => Err(format!("`{other}`: expected large, all or none")),
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (Some(addr), Some(paths)) = (args.http_load, &args.http_load_paths) {
        let paths: Vec<String> = std::fs::read_to_string(paths)?
            .lines()
            .map(str::to_owned)
            .collect();
        let load = lean_load::run(addr, &paths, args.connections, args.query_seconds)?;
        println!(
            "{} {} {} {}",
            load.requests,
            load.elapsed.as_micros(),
            load.p50.as_micros(),
            load.p99.as_micros()
        );
        return Ok(());
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut stream = StreamSettings::new(format!("CATBENCH_{id}"), format!("catbench{id}"));
    // Room for the events and the query phase's top-up (about 1 KB each, generously): the
    // default limit is the test suite's, far too small for a million events.
    stream.max_bytes = ((args.events + args.query_tags) as i64 * 2048)
        .max(imagelib_events::bus::DEFAULT_TEST_MAX_BYTES);
    let db_name = format!("imagelib_bench_{id}");
    let db_url = with_database(&args.database_url, &db_name);
    let bus = EventBus::connect(
        &imagelib_events::connect::NatsConnect::new(&args.nats_url),
        "catalog-bench",
        stream.clone(),
    )
    .await?;
    bus.ensure_stream().await?;
    println!(
        "catalog-bench: {} events over {} repositories; stream {}, database {}",
        args.events, args.repositories, stream.name, db_name
    );
    let result = run(&args, &bus, &db_url).await;
    if !args.keep {
        let _ = bus.jetstream().delete_stream(&stream.name).await;
        if let Ok(admin) = sqlx::PgPool::connect(&args.database_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
            ))
            .execute(&admin)
            .await;
        }
    }
    result
}

async fn run(args: &Args, bus: &EventBus, db_url: &str) -> anyhow::Result<()> {
    let mix = Mix {
        registries: args.registries,
        repositories: args.repositories,
        events: args.events,
        trust_pct: args.trust_pct,
        ..Default::default()
    };

    // 1. Publish.
    let started = Instant::now();
    let total = publish(bus, Generator::new(mix.clone())).await?;
    let last = bus.last_sequence().await?;
    println!(
        "published   {total} events in {:.1} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        rate(total, started.elapsed())
    );

    // 2a. Raw consume.
    decode_alone(&mix);
    let consume = raw_consume(bus, last).await?;
    let consume_rate = rate(total, consume);
    println!(
        "anchor (a)  JetStream consume without applying: {consume_rate:.0} msgs/s ({:.2} s)",
        consume.as_secs_f64()
    );

    // 2b. COPY of the equivalent rows, as text (the anchor of the earlier figures) and in
    // the binary format the replay writes its rows in.
    let (rows, copy) = copy_anchor(db_url, &mix, CopyFormat::Text).await?;
    let copy_rate = rate(total, copy);
    println!(
        "anchor (b)  COPY of the {rows} equivalent tag_versions rows: {:.0} rows/s = {copy_rate:.0} events/s ({:.2} s)",
        rate(rows, copy),
        copy.as_secs_f64()
    );
    let (rows, binary) = copy_anchor(db_url, &mix, CopyFormat::Binary).await?;
    let binary_rate = rate(total, binary);
    println!(
        "anchor (b') the same rows as binary COPY: {:.0} rows/s = {binary_rate:.0} events/s ({:.2} s)",
        rate(rows, binary),
        binary.as_secs_f64()
    );

    // 3. Replay: the catalog alone and with the audit trail (in the order asked for), each
    // after a checkpoint.
    let settings = CatalogSettings {
        batch_size: args.batch,
        ..Default::default()
    };
    let compare = !args.no_audit_compare;
    let mut without = None;
    if compare && !args.audit_first {
        without = Some(replay_alone(bus, db_url, &settings, last).await?);
    }
    let pool = imagelib_platform::db::connect(db_url, catalog_projector::SCHEMA, 4).await?;
    catalog_projector::startup::migrate(&pool).await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let projection = Projection::in_memory(pool.clone());
    let mut report = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    catalog_projector::projection::audit::WRITE_MICROS
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let rss_at_start = status_kb("VmRSS:");
    let rss_before = reset_peak_rss();
    let sampler = RssSampler::start();
    let started = Instant::now();
    bulk_replay(
        bus,
        &projection,
        &settings,
        last,
        args.defer_indexes,
        &mut report,
    )
    .await?;
    let replay = started.elapsed();
    let sampled = sampler.stop().await;
    let hwm = peak_rss_kb();
    let audit_ms = catalog_projector::projection::audit::WRITE_MICROS
        .load(std::sync::atomic::Ordering::Relaxed)
        / 1000;
    print_profile("with the audit trail", &format!(" audit rows {audit_ms}"));
    println!(
        "built after the load ({}): {}",
        report.indexes_built_after.len(),
        report.indexes_built_after.join(", ")
    );
    if compare && args.audit_first {
        without = Some(replay_alone(bus, db_url, &settings, last).await?);
    }
    let replay_rate = rate(total, replay);
    let lower = consume_rate.min(copy_rate);
    if let Some(alone) = without {
        let alone_rate = rate(total, alone);
        println!(
            "replay      catalog alone {alone_rate:.0} events/s ({:.2} s) | with the audit trail {replay_rate:.0} events/s ({:.2} s): the trail costs {:.1} % of the rate",
            alone.as_secs_f64(),
            replay.as_secs_f64(),
            (1.0 - replay_rate / alone_rate) * 100.0
        );
    }
    println!(
        "replay      {replay_rate:.0} events/s ({:.2} s, batches of {}, audit trail included, {} events applied, {} skipped): {:.2} x the lower anchor ({lower:.0}/s); target >= 0.5",
        replay.as_secs_f64(),
        args.batch,
        report.events,
        report.skipped,
        replay_rate / lower
    );
    println!(
        "replay      {:.2} x the COPY anchor ({copy_rate:.0}/s); target >= 0.9",
        replay_rate / copy_rate
    );
    println!(
        "replay      {:.2} x the binary COPY anchor ({binary_rate:.0}/s); target >= 0.9",
        replay_rate / binary_rate
    );
    if let Some(kb) = rss_at_start {
        println!(
            "replay      RSS of this process when the replay started {:.1} MB (what the earlier phases left: the generator, the anchors' connections, the allocator's free lists)",
            kb as f64 / 1024.0
        );
    }
    println!(
        "replay      peak RSS during the replay {} (VmHWM{}), highest sampled every 50 ms {:.1} MB; target <= 200 MB",
        match hwm {
            Some(kb) => format!("{:.1} MB", kb as f64 / 1024.0),
            None => "unknown".into(),
        },
        if rss_before {
            ", reset before it"
        } else {
            " of the whole process: it could not be reset"
        },
        sampled as f64 / 1024.0,
    );

    if !args.no_rebuild_process {
        rebuild_process(args, bus, db_url, total).await?;
    }

    if args.no_query {
        return Ok(());
    }

    // 4. Query.
    let current: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tag_versions WHERE valid_to IS NULL")
            .fetch_one(&pool)
            .await?;
    if (current as usize) < args.query_tags {
        // Trust and integrity events do not add tags: generate that many more.
        let other = (args.query_trust_pct + args.query_integrity_pct).min(90) as usize;
        let extra = (args.query_tags - current as usize) * 100 / (100 - other);
        let more = Generator::continuing(
            Mix {
                events: extra,
                moved_pct: 0,
                removed_pct: 0,
                trust_pct: args.query_trust_pct,
                integrity_pct: args.query_integrity_pct,
                seed: mix.seed + 1,
                tag_prefix: "q".into(),
                start: mix.start + chrono::Duration::days(30),
                ..mix.clone()
            },
            Generator::new(mix.clone()).registry_ids,
        );
        publish(bus, more).await?;
        let last = bus.last_sequence().await?;
        replay_into(bus, &projection, &settings, last, &mut report).await?;
        projection.flush_deferred().await?;
    }
    sqlx::query("VACUUM ANALYZE tag_versions")
        .execute(&pool)
        .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let current: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tag_versions WHERE valid_to IS NULL")
            .fetch_one(&pool)
            .await?;
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM tag_versions")
        .fetch_one(&pool)
        .await?;
    println!("catalog     {current} current tags, {versions} tag versions");

    // The repositories queried: databases, each with at least a page of tags.
    let mut names = Vec::new();
    for i in 0..args.repositories {
        if repo_kind(i).0 == ImageKind::Database {
            names.push(repo_name(i));
        }
        if names.len() == 16 {
            break;
        }
    }
    let (http, console) = http_load(args, bus, db_url, &names).await?;
    println!(
        "query HTTP  {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} connections, {} s, {} requests)",
        http.rps,
        http.p50.as_secs_f64() * 1e3,
        http.p99.as_secs_f64() * 1e3,
        args.connections,
        args.query_seconds,
        http.requests
    );
    print_console(args, &http, &console);
    match pgbench(args, db_url, &names).await {
        Ok(pg) => {
            println!(
                "query SQL   pgbench {:.0} tps, p99 {:.2} ms",
                pg.rps,
                pg.p99.as_secs_f64() * 1e3
            );
            println!(
                "query       {:.2} x pgbench; target >= 0.7; p99 {:.2} ms, target <= 10 ms",
                http.rps / pg.rps,
                http.p99.as_secs_f64() * 1e3
            );
        }
        Err(e) => println!("query SQL   pgbench not run: {e:#}"),
    }
    floors(args, bus, db_url, &pool, &mix).await?;
    pool.close().await;
    Ok(())
}

/// Print and reset the projection's profile counters.
fn print_profile(what: &str, extra: &str) {
    let p: Vec<u64> = catalog_projector::projection::images::PROFILE
        .iter()
        .map(|a| a.swap(0, std::sync::atomic::Ordering::Relaxed) / 1000)
        .collect();
    println!(
        "profile ms ({what}): lookup {} repos {} closes {} copy {} after the copy {} begin and commit {} waiting for decode {} indexes {}{extra}",
        p[0], p[1], p[2], p[3], p[6], p[7], p[4], p[5]
    );
}

/// The replay without the audit trail, into a schema of its own dropped afterwards.
async fn replay_alone(
    bus: &EventBus,
    db_url: &str,
    settings: &CatalogSettings,
    last: u64,
) -> anyhow::Result<Duration> {
    let alone = "catalog_without_audit";
    let pool = imagelib_platform::db::connect(db_url, alone, 4).await?;
    catalog_projector::startup::migrate(&pool).await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let projection = Projection::in_memory(pool.clone());
    projection.set_audit(false);
    let mut report = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    let started = Instant::now();
    bulk_replay(
        bus,
        &projection,
        settings,
        last,
        DeferIndexes::default(),
        &mut report,
    )
    .await?;
    let took = started.elapsed();
    sqlx::query(&format!("DROP SCHEMA {alone} CASCADE"))
        .execute(&pool)
        .await?;
    pool.close().await;
    print_profile("catalog alone", "");
    Ok(took)
}

/// Publish in order with many acknowledgements in flight.
async fn publish(
    bus: &EventBus,
    events: impl Iterator<Item = imagelib_events::Envelope>,
) -> anyhow::Result<usize> {
    let js = bus.jetstream().clone();
    let mut inflight = futures::stream::FuturesOrdered::new();
    let mut n = 0;
    for env in events {
        let subject = bus.subject_of(&env);
        let msg = imagelib_events::binding::encode_structured(&env);
        let ack = js
            .publish_with_headers(subject, msg.headers, msg.payload)
            .await
            .context("publish")?;
        inflight.push_back(ack.into_future());
        n += 1;
        if inflight.len() >= 4096
            && let Some(r) = inflight.next().await
        {
            r.context("publish ack")?;
        }
    }
    while let Some(r) = inflight.next().await {
        r.context("publish ack")?;
    }
    Ok(n)
}

/// The decoding alone, on this thread with nothing else running: the first 50,000 events
/// as the bus encodes them, decoded straight into their type and through the SDK's event.
fn decode_alone(mix: &Mix) {
    use imagelib_events::binding::{decode_cloudevent, decode_envelope, encode_binary};
    let messages: Vec<_> = Generator::new(mix.clone())
        .take(50_000)
        .map(|env| encode_binary(&env))
        .collect();
    let time = |f: &dyn Fn(&imagelib_events::binding::EncodedMessage) -> bool| {
        let t = Instant::now();
        let ok = messages.iter().filter(|m| f(m)).count();
        (
            t.elapsed().as_secs_f64() * 1e6 / messages.len().max(1) as f64,
            ok,
        )
    };
    let (direct, ok) =
        time(&|m| std::hint::black_box(decode_envelope(Some(&m.headers), &m.payload)).is_ok());
    let (sdk, sdk_ok) = time(&|m| {
        std::hint::black_box(
            decode_cloudevent(Some(&m.headers), &m.payload)
                .and_then(|ce| imagelib_events::Envelope::from_cloudevent(&ce)),
        )
        .is_ok()
    });
    println!(
        "decode      alone, {} messages on one thread: straight into the type {direct:.2} us each ({ok} ok), through the SDK's event {sdk:.2} us ({sdk_ok} ok): {:.2} x as fast",
        messages.len(),
        sdk / direct.max(1e-9)
    );
}

async fn raw_consume(bus: &EventBus, last: u64) -> anyhow::Result<Duration> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    let stream = bus.jetstream().get_stream(&bus.settings().name).await?;
    let started = Instant::now();
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            filter_subject: bus.settings().all_subjects(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut bytes = 0usize;
    let mut decoding = Duration::ZERO;
    let mut decoded = 0usize;
    // The anchor of the decoding: the same message through the CloudEvents SDK's event
    // (its body parsed into a `serde_json::Value`, then into the type), every 8th message.
    let mut through_sdk = Duration::ZERO;
    let mut sdk_decoded = 0usize;
    while let Some(m) = messages.next().await {
        let m = m?;
        bytes += m.payload.len();
        let t = Instant::now();
        let env = imagelib_events::binding::decode_envelope(m.headers.as_ref(), &m.payload);
        decoding += t.elapsed();
        decoded += usize::from(env.is_ok());
        std::hint::black_box(env.ok());
        if decoded.is_multiple_of(8) {
            let t = Instant::now();
            let env = imagelib_events::binding::decode_cloudevent(m.headers.as_ref(), &m.payload)
                .and_then(|ce| imagelib_events::Envelope::from_cloudevent(&ce));
            through_sdk += t.elapsed();
            sdk_decoded += usize::from(env.is_ok());
            std::hint::black_box(env.ok());
        }
        if m.info().map(|i| i.stream_sequence).unwrap_or(0) >= last {
            break;
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    println!(
        "decode      {decoded} envelopes decoded from the messages in {:.2} s of this consumer's time ({:.2} us each; what every consumer spends per event)",
        decoding.as_secs_f64(),
        decoding.as_secs_f64() * 1e6 / decoded.max(1) as f64
    );
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "decode      through the CloudEvents SDK's event instead (every 8th message, {sdk_decoded}): {:.2} us each; straight into the type is {:.2} x as fast",
        per(through_sdk, sdk_decoded),
        per(through_sdk, sdk_decoded) / per(decoding, decoded).max(1e-9)
    );
    Ok(elapsed - decoding - through_sdk)
}

/// Load the tag versions the stream ends with into an identical table, with `COPY`; only
/// the time PostgreSQL takes is counted.
/// The format of anchor (b)'s `COPY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyFormat {
    Text,
    Binary,
}

async fn copy_anchor(
    db_url: &str,
    mix: &Mix,
    format: CopyFormat,
) -> anyhow::Result<(usize, Duration)> {
    let schema = match format {
        CopyFormat::Text => "copy_anchor",
        CopyFormat::Binary => "copy_anchor_binary",
    };
    let pool = imagelib_platform::db::connect(db_url, schema, 2).await?;
    catalog_projector::startup::migrate(&pool).await?;
    // Pass 1: when each version ends.
    let mut current: HashMap<(uuid::Uuid, String), usize> = HashMap::new();
    let mut valid_to: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut row_of_event: Vec<Option<usize>> = Vec::new();
    for env in Generator::new(mix.clone()) {
        let t = catalog_projector_micros(env.time);
        let (key, opens) = match &env.payload {
            EventPayload::TagDiscovered(e) => (
                (
                    ImageId::derive(e.registry_id, &e.repository).0,
                    e.tag.to_string(),
                ),
                true,
            ),
            EventPayload::TagMoved(e) => (
                (
                    ImageId::derive(e.registry_id, &e.repository).0,
                    e.tag.to_string(),
                ),
                true,
            ),
            EventPayload::TagRemoved(e) => (
                (
                    ImageId::derive(e.registry_id, &e.repository).0,
                    e.tag.to_string(),
                ),
                false,
            ),
            _ => {
                row_of_event.push(None);
                continue;
            }
        };
        if let Some(prev) = current.remove(&key) {
            valid_to[prev] = Some(t);
        }
        if opens {
            valid_to.push(None);
            current.insert(key, valid_to.len() - 1);
            row_of_event.push(Some(valid_to.len() - 1));
        } else {
            row_of_event.push(None);
        }
    }
    drop(current);
    // Pass 2: the rows, in chunks.
    let mut conn = pool.acquire().await?;
    let mut buf = CopyBuf::new();
    let mut binary = BinaryRows::new();
    let mut spent = Duration::ZERO;
    let mut rows = 0usize;
    let mut first_seen: HashMap<(uuid::Uuid, String), DateTime<Utc>> = HashMap::new();
    let statement = match format {
        CopyFormat::Text => copy_statement(),
        CopyFormat::Binary => binary_copy_statement(),
    };
    for (i, env) in Generator::new(mix.clone()).enumerate() {
        let Some(row) = row_of_event[i] else { continue };
        let t = catalog_projector_micros(env.time);
        let (registry_id, repository, tag, digest, details) = match &env.payload {
            EventPayload::TagDiscovered(e) => {
                (e.registry_id, &e.repository, &e.tag, &e.digest, &e.details)
            }
            EventPayload::TagMoved(e) => (
                e.registry_id,
                &e.repository,
                &e.tag,
                &e.new_digest,
                &e.details,
            ),
            _ => continue,
        };
        let repo_id = ImageId::derive(registry_id, repository).0;
        let first = *first_seen.entry((repo_id, tag.to_string())).or_insert(t);
        let version = NewVersion {
            repo_id,
            registry_id,
            repository,
            tag: tag.as_str(),
            sequence: i as u64 + 1,
            digest: digest.as_str(),
            valid_from: t,
            valid_to: valid_to[row],
            first_seen: first,
            last_seen: t,
            details,
        };
        match format {
            CopyFormat::Text => encode_version(&mut buf, &version, &[], None),
            CopyFormat::Binary => {
                encode_version_binary(&mut binary, &version, &[], None);
            }
        }
        if buf.rows() + binary.rows() >= 5000 {
            rows += buf.rows() + binary.rows();
            spent += copy_chunk(&mut conn, &statement, &mut buf, &mut binary).await?;
        }
    }
    if buf.rows() + binary.rows() > 0 {
        rows += buf.rows() + binary.rows();
        spent += copy_chunk(&mut conn, &statement, &mut buf, &mut binary).await?;
    }
    drop(conn);
    pool.close().await;
    Ok((rows, spent))
}

fn catalog_projector_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Send the rows encoded so far (text or binary, whichever has them) and clear them.
async fn copy_chunk(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    text: &mut CopyBuf,
    binary: &mut BinaryRows,
) -> anyhow::Result<Duration> {
    let payload = if binary.rows() > 0 {
        std::mem::replace(binary, BinaryRows::new()).finish()
    } else {
        text.as_bytes().to_vec()
    };
    text.clear();
    let started = Instant::now();
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(payload).await?;
    copy.finish().await?;
    Ok(started.elapsed())
}

struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
    requests: usize,
}

fn query_path(name: &str) -> String {
    format!("/v1/images?repository={name}&kind=database&limit=50")
}

/// The console's Image Library for the same query (its page size is the API's default,
/// 50).
fn page_path(name: &str) -> String {
    format!("/?repository={name}&kind=database")
}

/// What the console measurement found: the Image Library page under the JSON load's
/// conditions, and each page's first-load transfer.
struct ConsoleLoad {
    page: Load,
    /// Page, then bytes on the wire (headers and gzip body) of its HTML and of the
    /// stylesheet and script it loads.
    sizes: Vec<(String, usize, usize)>,
}

fn print_console(args: &Args, json: &Load, c: &ConsoleLoad) {
    println!(
        "console     Image Library page {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} connections, {} s, {} requests; timed by the load generator over loopback)",
        c.page.rps,
        c.page.p50.as_secs_f64() * 1e3,
        c.page.p99.as_secs_f64() * 1e3,
        args.connections,
        args.query_seconds,
        c.page.requests
    );
    println!(
        "console     {:.2} x JSON; target >= 0.8; p99 {:.2} ms, target <= 20 ms",
        c.page.rps / json.rps.max(1e-9),
        c.page.p99.as_secs_f64() * 1e3
    );
    for (path, html, assets) in &c.sizes {
        println!(
            "console     first load {:<28} HTML {:>6.1} KB + assets {:>5.1} KB = {:>6.1} KB gzip; target <= 100 KB",
            path,
            *html as f64 / 1e3,
            *assets as f64 / 1e3,
            (html + assets) as f64 / 1e3
        );
    }
}

/// `n` connections asking `urls` in turn for `secs` seconds, after 2 s of warm-up.
async fn closed_loop(
    client: &reqwest::Client,
    urls: Arc<Vec<String>>,
    connections: usize,
    secs: u64,
) -> anyhow::Result<Load> {
    let run = |secs: u64| {
        let (client, urls) = (client.clone(), urls.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut tasks = Vec::new();
            for c in 0..connections {
                let (client, urls) = (client.clone(), urls.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(100_000);
                    let mut i = c;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let res = client.get(&urls[i % urls.len()]).send().await?;
                        let status = res.status();
                        let body = res.bytes().await?;
                        if !status.is_success() {
                            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
                        }
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    Ok::<_, anyhow::Error>(lat)
                }));
            }
            let started = Instant::now();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            Ok::<_, anyhow::Error>((all, started.elapsed()))
        }
    };
    run(2).await?; // warm-up
    let (mut lat, elapsed) = run(secs).await?;
    lat.sort_unstable();
    Ok(Load {
        rps: rate(lat.len(), elapsed),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        requests: lat.len(),
    })
}

/// `paths` on `addr` at `connections` closed-loop connections for `secs` seconds (after 2 s
/// of warm-up), from a process of its own: the lean HTTP/1.1 client of [`lean_load`], which
/// does per request about what pgbench does per statement (write it, read the answer
/// whole), so that the lists' HTTP figures and their floor's are measured alike.
async fn lean_closed_loop(
    addr: SocketAddr,
    paths: &[String],
    connections: usize,
    secs: u64,
) -> anyhow::Result<Load> {
    let file = std::env::temp_dir().join(format!(
        "catalog-bench-paths-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, paths.join("\n"))?;
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--http-load")
        .arg(addr.to_string())
        .arg("--http-load-paths")
        .arg(&file)
        .arg("--connections")
        .arg(connections.to_string())
        .arg("--query-seconds")
        .arg(secs.to_string())
        .output()
        .await;
    let _ = std::fs::remove_file(&file);
    let out = out?;
    if !out.status.success() {
        bail!(
            "the HTTP load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u128> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("the HTTP load generator said {text:?}"))?;
    let [requests, elapsed, p50, p99] = f[..] else {
        bail!("the HTTP load generator said {text:?}");
    };
    let us = |n: u128| Duration::from_micros(u64::try_from(n).unwrap_or(u64::MAX));
    Ok(Load {
        rps: rate(requests as usize, us(elapsed)),
        p50: us(p50),
        p99: us(p99),
        requests: requests as usize,
    })
}

/// A closed-loop HTTP/1.1 load generator on plain threads and blocking sockets: one
/// keep-alive connection per thread, each request written whole and its answer read whole
/// (headers, then exactly `Content-Length` bytes), its latency recorded.
mod lean_load {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};

    pub struct Measured {
        pub requests: usize,
        pub elapsed: Duration,
        pub p50: Duration,
        pub p99: Duration,
    }

    pub fn run(
        addr: SocketAddr,
        paths: &[String],
        connections: usize,
        secs: u64,
    ) -> anyhow::Result<Measured> {
        if paths.is_empty() {
            bail!("no path to ask for");
        }
        let round = |secs: u64| -> anyhow::Result<(Vec<Duration>, Duration)> {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let started = Instant::now();
            let lat = std::thread::scope(|s| {
                let threads: Vec<_> = (0..connections.max(1))
                    .map(|c| s.spawn(move || one_connection(addr, paths, c, deadline)))
                    .collect();
                let mut all = Vec::new();
                for t in threads {
                    all.extend(
                        t.join()
                            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??,
                    );
                }
                Ok::<_, anyhow::Error>(all)
            })?;
            Ok((lat, started.elapsed()))
        };
        round(2)?;
        let (mut lat, elapsed) = round(secs)?;
        lat.sort_unstable();
        Ok(Measured {
            requests: lat.len(),
            elapsed,
            p50: super::percentile(&lat, 0.50),
            p99: super::percentile(&lat, 0.99),
        })
    }

    fn one_connection(
        addr: SocketAddr,
        paths: &[String],
        first: usize,
        deadline: Instant,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_nodelay(true)?;
        let requests: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes())
            .collect();
        let mut buf = vec![0u8; 1 << 20];
        let mut lat = Vec::with_capacity(100_000);
        let mut i = first;
        while Instant::now() < deadline {
            let t = Instant::now();
            conn.write_all(&requests[i % requests.len()])?;
            read_response(&mut conn, &mut buf)
                .with_context(|| format!("GET {}", paths[i % paths.len()]))?;
            lat.push(t.elapsed());
            i += 1;
        }
        Ok(lat)
    }

    /// Read one response: its head up to the blank line, then its `Content-Length` body.
    fn read_response(conn: &mut TcpStream, buf: &mut [u8]) -> anyhow::Result<()> {
        let mut have = 0;
        let head_end = loop {
            if have == buf.len() {
                bail!("a response head over {} bytes", buf.len());
            }
            let n = conn.read(&mut buf[have..])?;
            if n == 0 {
                bail!("the connection closed mid-response");
            }
            have += n;
            if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("a response head")?;
        let status = head.split(' ').nth(1).unwrap_or_default();
        if status != "200" {
            bail!("HTTP {status}");
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .context("a response without Content-Length")?;
        let mut left = (head_end + length).saturating_sub(have);
        while left > 0 {
            let n = conn.read(&mut buf[..left.min(1 << 20)])?;
            if n == 0 {
                bail!("the connection closed mid-body");
            }
            left -= n;
        }
        Ok(())
    }
}

/// Bytes on the wire of one response asked for with `Accept-Encoding: gzip`: the status
/// line, the headers and the (compressed) body.
async fn wire_bytes(client: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    let res = client
        .get(url)
        .header(reqwest::header::ACCEPT_ENCODING, "gzip")
        .send()
        .await?;
    let status = res.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    let headers: usize = res
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + "HTTP/1.1 200 OK\r\n\r\n".len();
    Ok(headers + res.bytes().await?.len())
}

/// A page's first load: its HTML and every `/assets/…` it names, each gzip.
async fn first_load(
    client: &reqwest::Client,
    base: &str,
    path: &str,
) -> anyhow::Result<(usize, usize)> {
    let html = wire_bytes(client, &format!("{base}{path}")).await?;
    // The plain text, to find the assets (the client does not decompress).
    let text = client
        .get(format!("{base}{path}"))
        .send()
        .await?
        .text()
        .await?;
    let mut assets = Vec::new();
    for marker in ["href=\"/assets/", "src=\"/assets/"] {
        for (i, _) in text.match_indices(marker) {
            let from = i + marker.len() - "/assets/".len();
            if let Some(end) = text[from..].find('"') {
                let href = &text[from..from + end];
                if !assets.iter().any(|a: &String| a == href) {
                    assets.push(href.to_owned());
                }
            }
        }
    }
    if assets.is_empty() {
        bail!("{path} names no stylesheet or script");
    }
    let mut asset_bytes = 0;
    for a in &assets {
        asset_bytes += wire_bytes(client, &format!("{base}{a}")).await?;
    }
    Ok((html, asset_bytes))
}

async fn http_load(
    args: &Args,
    bus: &EventBus,
    db_url: &str,
    names: &[String],
) -> anyhow::Result<(Load, ConsoleLoad)> {
    let config = Config {
        common: CommonConfig {
            nats_url: args.nats_url.clone(),
            database_url: db_url.to_owned(),
            stream: bus.settings().name.clone(),
            subject_prefix: bus.settings().subject_prefix.clone(),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            log_format: imagelib_platform::config::LogFormat::Pretty,
            // The load is an anonymous reader's (pgbench runs the anonymous SQL); the
            // console's pages are read by the same anonymous reader.
            anonymous_read: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let app = catalog_projector::startup::Application::build(config).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let urls: Arc<Vec<String>> = Arc::new(
        names
            .iter()
            .map(|n| format!("http://{addr}{}", query_path(n)))
            .collect(),
    );
    // Check the answer once.
    let first = client.get(&urls[0]).send().await?;
    let status = first.status();
    let first: serde_json::Value = first.json().await?;
    if !status.is_success() {
        bail!("the catalog answered {status}: {first}");
    }
    let n = first["items"].as_array().map_or(0, Vec::len);
    if n != 50 {
        bail!("expected a page of 50 images, got {n}: use more events per repository");
    }
    let json = closed_loop(&client, urls, args.connections, args.query_seconds).await?;

    // The console: the same query as a page, on the same service and connections.
    let pages: Arc<Vec<String>> = Arc::new(
        names
            .iter()
            .map(|n| format!("http://{addr}{}", page_path(n)))
            .collect(),
    );
    let res = client.get(&pages[0]).send().await?;
    let status = res.status();
    let html = res.text().await?;
    let rows = html
        .split("<tbody>")
        .nth(1)
        .map_or(0, |b| b.matches("<tr>").count());
    if !status.is_success() || rows != 50 {
        bail!("the Image Library page answered {status} with {rows} rows, not 50");
    }
    let page = closed_loop(&client, pages, args.connections, args.query_seconds).await?;
    let base = format!("http://{addr}");
    let detail = format!(
        "/repositories/{}/{}",
        first["items"][0]["registry_id"]
            .as_str()
            .unwrap_or_default(),
        first["items"][0]["repository"].as_str().unwrap_or_default()
    );
    let mut sizes = Vec::new();
    for path in ["/", "/models", detail.as_str(), "/activity", "/login"] {
        let (html, assets) = first_load(&client, &base, path).await?;
        let shown = if path == detail {
            "/repositories/…"
        } else {
            path
        };
        sizes.push((shown.to_owned(), html, assets));
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok((json, ConsoleLoad { page, sizes }))
}

async fn pgbench(args: &Args, db_url: &str, names: &[String]) -> anyhow::Result<Load> {
    let sqls: Vec<String> = names
        .iter()
        .map(|name| {
            // Exactly what the API runs for an anonymous caller.
            images(&ImageFilter {
                teams: Some(vec![]),
                repository: Some(name.clone()),
                kind: Some("database".into()),
                fetch: 51,
                ..Default::default()
            })
            .literal()
        })
        .collect();
    pgbench_files(args, db_url, &sqls).await
}

/// pgbench of `sqls` in turn (one script each), at the bench's connections, after a warm-up.
async fn pgbench_files(args: &Args, db_url: &str, sqls: &[String]) -> anyhow::Result<Load> {
    let dir = std::env::temp_dir().join(format!(
        "catalog-bench-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.env(
        "PGOPTIONS",
        format!("-c search_path={}", catalog_projector::SCHEMA),
    )
    .arg("-n")
    .arg("-M")
    .arg("prepared")
    .arg("-c")
    .arg(args.connections.to_string())
    .arg("-j")
    .arg("2")
    .arg("-T")
    .arg(args.query_seconds.to_string())
    .arg("-l")
    .arg("--log-prefix")
    .arg(dir.join("log"));
    for (i, sql) in sqls.iter().enumerate() {
        let file = dir.join(format!("q{i}.sql"));
        std::fs::write(&file, format!("{sql};\n"))?;
        cmd.arg("-f").arg(&file);
    }
    // Warm-up, then the measured run.
    let mut warm = tokio::process::Command::new("pgbench");
    warm.env(
        "PGOPTIONS",
        format!("-c search_path={}", catalog_projector::SCHEMA),
    )
    .args(["-n", "-M", "prepared", "-c", "2", "-T", "2", "-f"])
    .arg(dir.join("q0.sql"))
    .arg(db_url);
    let _ = warm.output().await;
    let out = cmd.arg(db_url).output().await.context("running pgbench")?;
    if !out.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps: f64 = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no tps in pgbench output")?;
    let lat = pgbench_latencies(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Load {
        rps: tps,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        requests: lat.len(),
    })
}

/// Per-transaction latencies from pgbench's `-l` logs (third field, microseconds).
fn pgbench_latencies(dir: &Path) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("log"))
        {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                lat.push(Duration::from_micros(us));
            }
        }
    }
    lat.sort_unstable();
    Ok(lat)
}

/// `catalog-projector rebuild` (the binary built beside this one) on the same stream and
/// database: the replay as an operator runs it, in a process that holds nothing else, so
/// its peak memory is the projector's own.
async fn rebuild_process(
    args: &Args,
    bus: &EventBus,
    db_url: &str,
    total: usize,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?.with_file_name("catalog-projector");
    if !exe.exists() {
        println!(
            "rebuild     not run: {} is not built (cargo build --release -p catalog-projector)",
            exe.display()
        );
        return Ok(());
    }
    let started = Instant::now();
    let out = tokio::process::Command::new(&exe)
        .arg("rebuild")
        .env_clear()
        .env("IMAGELIB_NATS_URL", &args.nats_url)
        .env("IMAGELIB_DATABASE_URL", db_url)
        .env("IMAGELIB_STREAM", &bus.settings().name)
        .env("IMAGELIB_SUBJECT_PREFIX", &bus.settings().subject_prefix)
        .env(
            "IMAGELIB_STREAM_MAX_BYTES",
            bus.settings().max_bytes.to_string(),
        )
        .env("IMAGELIB_CATALOG__BATCH_SIZE", args.batch.to_string())
        .env(
            "RUST_LOG",
            std::env::var("IMAGELIB_BENCH_REBUILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .output()
        .await?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "catalog-projector rebuild failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("rebuild     {}", stdout.trim());
    println!(
        "rebuild     `catalog-projector rebuild` in its own process: {:.0} events/s ({:.2} s, the schema swap included); its peak RSS above; target <= 200 MB",
        rate(total, elapsed),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Whether the kernel's peak RSS (`VmHWM`) of this process was reset (`clear_refs` 5).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn peak_rss_kb() -> Option<u64> {
    status_kb("VmHWM:")
}

/// RSS sampled every 50 ms while a phase runs (the highest seen), next to `VmHWM`.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start() -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(status_kb("VmRSS:").unwrap_or(0));
                tokio::select! {
                    _ = &mut stopped => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}

/// One request of a list: its path, what the API runs for it (rendered), and the same page
/// from the list's flat table.
struct Variant {
    path: String,
    own: String,
    /// What a page not kept runs instead of `own` (its rows' stamps), when not `own` with
    /// the stamp for the columns.
    stamps: Option<String>,
    floor: String,
}

/// A list the API and the console serve, with its floor: a flat table holding exactly the
/// page's columns for the rows the list can show, with one covering index in the list's order.
struct List {
    name: &'static str,
    /// The rows of the flat table: the list's statement without its per-request parameter,
    /// cursor or limit.
    source: String,
    /// The flat table's index key (the per-request parameter first, then the page order).
    key: &'static str,
    variants: Vec<Variant>,
}

const PAGE_ORDER: &str = "c2, c3, c0";

fn anonymous() -> ImageFilter {
    ImageFilter {
        teams: Some(vec![]),
        fetch: 51,
        ..Default::default()
    }
}

fn cursor_at(name: &str) -> Cursor {
    Cursor::Name {
        r: name.to_owned(),
        t: String::new(),
        g: uuid::Uuid::nil(),
    }
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The floor's page: `WHERE` the parameter and the cursor, in `order`, `limit` rows.
fn floor_sql(table: &str, conds: &[String], order: &str, limit: Option<i64>) -> String {
    let wh = if conds.is_empty() {
        "true".to_owned()
    } else {
        conds.join(" AND ")
    };
    let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
    format!("SELECT * FROM {table} WHERE {wh} ORDER BY {order}{limit}")
}

fn cursor_cond(name: &str) -> String {
    format!(
        "({PAGE_ORDER}) > ({}, '', '{}'::uuid)",
        lit(name),
        uuid::Uuid::nil()
    )
}

/// A list paged from 16 cursors spread over the catalog, with `fixed` filters and `query`
/// parameters.
fn cursor_list(
    name: &'static str,
    base: &str,
    query: &str,
    fixed: ImageFilter,
    spread: &[String],
) -> List {
    let table = format!("floor_{}", name.replace('-', "_"));
    let variants = spread
        .iter()
        .map(|at| {
            let c = cursor_at(at);
            let own = images(&ImageFilter {
                after: Some(c.clone()),
                ..fixed.clone()
            })
            .literal();
            let sep = if query.is_empty() { "" } else { "&" };
            Variant {
                path: format!("{base}?{query}{sep}limit=50&cursor={}", c.encode()),
                own,
                stamps: None,
                floor: floor_sql(&table, &[cursor_cond(at)], PAGE_ORDER, Some(51)),
            }
        })
        .collect();
    List {
        name,
        source: images(&ImageFilter {
            fetch: i64::MAX,
            ..fixed
        })
        .literal(),
        key: PAGE_ORDER,
        variants,
    }
}

async fn lists(args: &Args, pool: &sqlx::PgPool, mix: &Mix) -> anyhow::Result<Vec<List>> {
    let registry_ids = Generator::new(mix.clone()).registry_ids;
    let n = args.repositories.max(16);
    let spread: Vec<String> = (0..16).map(|k| repo_name(k * n / 16)).collect();
    // Repositories with tags: 16 of every kind, and 16 databases.
    let mut any = Vec::new();
    let mut databases = Vec::new();
    for i in 0..args.repositories {
        if any.len() < 16 && i % 3 == 0 {
            any.push(i);
        }
        if databases.len() < 16 && repo_kind(i).0 == ImageKind::Database {
            databases.push(i);
        }
    }
    let mut out = Vec::new();
    out.push(cursor_list(
        "default",
        "/v1/images",
        "",
        anonymous(),
        &spread,
    ));
    let by_repository = |name: &'static str, repos: &[usize], kind: Option<&str>| {
        let table = format!("floor_{}", name.replace('-', "_"));
        let fixed = ImageFilter {
            kind: kind.map(str::to_owned),
            ..anonymous()
        };
        let variants = repos
            .iter()
            .map(|i| {
                let r = repo_name(*i);
                let k = kind.map(|k| format!("&kind={k}")).unwrap_or_default();
                Variant {
                    path: format!("/v1/images?repository={r}{k}&limit=50"),
                    own: images(&ImageFilter {
                        repository: Some(r.clone()),
                        ..fixed.clone()
                    })
                    .literal(),
                    stamps: None,
                    floor: floor_sql(&table, &[format!("c2 = {}", lit(&r))], PAGE_ORDER, Some(51)),
                }
            })
            .collect();
        List {
            name,
            source: images(&ImageFilter {
                fetch: i64::MAX,
                ..fixed
            })
            .literal(),
            key: PAGE_ORDER,
            variants,
        }
    };
    out.push(by_repository("repository", &any, None));
    out.push(by_repository(
        "repository-kind",
        &databases,
        Some("database"),
    ));
    out.push(cursor_list(
        "kind",
        "/v1/images",
        "kind=database",
        ImageFilter {
            kind: Some("database".into()),
            ..anonymous()
        },
        &spread,
    ));
    // The registry filter: 16 pages, over the registries in turn.
    let variants = spread
        .iter()
        .enumerate()
        .map(|(k, at)| {
            let g = registry_ids[k % registry_ids.len()].0;
            let c = cursor_at(at);
            Variant {
                path: format!("/v1/images?registry={g}&limit=50&cursor={}", c.encode()),
                own: images(&ImageFilter {
                    registry: Some(g),
                    after: Some(c),
                    ..anonymous()
                })
                .literal(),
                stamps: None,
                floor: floor_sql(
                    "floor_registry",
                    &[format!("c0 = '{g}'::uuid"), cursor_cond(at)],
                    "c0, c2, c3",
                    Some(51),
                ),
            }
        })
        .collect();
    out.push(List {
        name: "registry",
        source: images(&ImageFilter {
            fetch: i64::MAX,
            ..anonymous()
        })
        .literal(),
        key: "c0, c2, c3",
        variants,
    });
    out.push(cursor_list(
        "models",
        "/v1/models",
        "",
        ImageFilter {
            kind: Some("model".into()),
            ..anonymous()
        },
        &spread,
    ));
    out.push(cursor_list(
        "signed",
        "/v1/images",
        "signed=true",
        ImageFilter {
            signed: Some(true),
            ..anonymous()
        },
        &spread,
    ));
    out.push(cursor_list(
        "max-severity",
        "/v1/images",
        "max_severity=high",
        ImageFilter {
            max_severity: catalog_projector::projection::trust::severity_level("high"),
            ..anonymous()
        },
        &spread,
    ));
    out.push(cursor_list(
        "has-sbom",
        "/v1/images",
        "has_sbom=true",
        ImageFilter {
            has_sbom: Some(true),
            ..anonymous()
        },
        &spread,
    ));
    out.push(cursor_list(
        "policy",
        "/v1/images",
        "policy=pass",
        ImageFilter {
            policy: Some("pass".into()),
            ..anonymous()
        },
        &spread,
    ));
    let search = ImageFilter {
        q: catalog_projector::query::tsquery("cnpg"),
        ..anonymous()
    };
    let mut list = cursor_list("search", "/v1/images", "q=cnpg", search.clone(), &spread);
    // What the API runs for a search page: for one term of letters and digits, the names
    // and the page in one statement when that fills the page; else the next matching
    // names (by word, or the scan of the name index and the search index after it), then
    // the page from their ranges (one round: the unfiltered search fills its page in one).
    for (v, at) in list.variants.iter_mut().zip(&spread) {
        let words = search.q.as_deref().unwrap_or_default();
        if let Some([term]) = catalog_projector::search::word_terms(words).as_deref() {
            let page = catalog_projector::query::images_by_word(
                &ImageFilter {
                    after: Some(cursor_at(at)),
                    ..search.clone()
                },
                term,
                catalog_projector::query::Shape::Full,
            );
            let rows = page.query().fetch_all(pool).await?;
            if rows.len() as i64 >= search.fetch {
                v.own = page.literal();
                v.stamps = Some(
                    catalog_projector::query::images_by_word(
                        &ImageFilter {
                            after: Some(cursor_at(at)),
                            ..search.clone()
                        },
                        term,
                        catalog_projector::query::Shape::Stamps,
                    )
                    .literal(),
                );
                continue;
            }
        }
        let mut ran = Vec::new();
        let names = catalog_projector::search::next_names(
            pool,
            words,
            Some((at, true)),
            search.fetch,
            Some(&mut ran),
        )
        .await?;
        let first = ran
            .iter()
            .map(|s| s.literal())
            .collect::<Vec<_>>()
            .join(";\n");
        let filter = ImageFilter {
            after: Some(cursor_at(at)),
            ..search.clone()
        };
        let page = catalog_projector::query::images_named(&filter, &names);
        v.own = format!("{first};\n{}", page.literal());
        let stamps = catalog_projector::query::images_shaped(
            &filter,
            Some(catalog_projector::query::Names::Given(&names)),
            catalog_projector::query::Shape::Stamps,
        );
        v.stamps = Some(format!("{first};\n{}", stamps.literal()));
    }
    out.push(list);
    // A repository's tags: its detail (`/v1/repositories/{registry}/{name}`), whose list
    // is every current tag in tag order.
    let mut variants = Vec::new();
    for i in &databases {
        let r = repo_name(*i);
        let g = registry_ids[i % registry_ids.len()].0;
        let id: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE registry_id = $1 AND name = $2")
                .bind(g)
                .bind(&r)
                .fetch_optional(pool)
                .await?;
        let Some(id) = id else { continue };
        variants.push(Variant {
            path: format!("/v1/repositories/{g}/{r}"),
            own: catalog_projector::query::repository_tags(id).literal(),
            stamps: None,
            floor: floor_sql(
                "floor_tags",
                &[format!("c0 = '{g}'::uuid"), format!("c2 = {}", lit(&r))],
                "c0, c2, c3",
                None,
            ),
        });
    }
    out.push(List {
        name: "tags",
        source: images(&ImageFilter {
            fetch: i64::MAX,
            ..anonymous()
        })
        .literal(),
        key: "c0, c2, c3",
        variants,
    });
    let wanted: Vec<&str> = args.lists.split(',').map(str::trim).collect();
    Ok(out
        .into_iter()
        .filter(|l| wanted.contains(&"all") || wanted.contains(&l.name))
        .collect())
}

/// Build a list's flat table: its rows, one index on `key` including every other column
/// (an index-only scan), or, when a row is too wide for a B-tree entry, the index on the
/// key alone with the table clustered on it. Returns how it was built.
async fn build_floor(pool: &sqlx::PgPool, list: &List) -> anyhow::Result<String> {
    let table = format!("floor_{}", list.name.replace('-', "_"));
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(pool)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {table} AS SELECT * FROM ({}) s",
        list.source
    ))
    .execute(pool)
    .await?;
    let key: Vec<&str> = list.key.split(',').map(str::trim).collect();
    let others: Vec<String> = (0..32)
        .map(|i| format!("c{i}"))
        .filter(|c| !key.contains(&c.as_str()))
        .collect();
    let covering = sqlx::query(&format!(
        "CREATE INDEX {table}_page ON {table} ({}) INCLUDE ({})",
        list.key,
        others.join(", ")
    ))
    .execute(pool)
    .await;
    let how = match covering {
        Ok(_) => "covering index, index-only scan".to_owned(),
        Err(e) => {
            sqlx::query(&format!(
                "CREATE INDEX {table}_page ON {table} ({})",
                list.key
            ))
            .execute(pool)
            .await?;
            sqlx::query(&format!("CLUSTER {table} USING {table}_page"))
                .execute(pool)
                .await?;
            format!("key index, table clustered on it (covering index refused: {e})")
        }
    };
    sqlx::query(&format!("VACUUM ANALYZE {table}"))
        .execute(pool)
        .await?;
    Ok(how)
}

/// The plans of the statements of `sql` (a list's own SQL may be several, one per line).
async fn explain(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for statement in sql.split(";\n") {
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS) {statement}"))
                .fetch_all(pool)
                .await?;
        out.extend(plan);
    }
    Ok(out)
}

/// Each list over HTTP, its own SQL in pgbench and its floor in pgbench, side by side.
async fn floors(
    args: &Args,
    bus: &EventBus,
    db_url: &str,
    pool: &sqlx::PgPool,
    mix: &Mix,
) -> anyhow::Result<()> {
    let lists = lists(args, pool, mix).await?;
    if lists.is_empty() {
        return Ok(());
    }
    let defaults = CatalogSettings::default();
    let service = Service::start(
        args,
        bus,
        db_url,
        defaults.page_cache_mb,
        defaults.row_cache_mb,
    )
    .await?;
    // The same service with no page kept: what a page costs when it is not kept (the first
    // read after a change, a cursor nobody asked for since), its unchanged rows kept
    // rendered as they are by default.
    let afresh = Service::start(args, bus, db_url, 0, defaults.row_cache_mb).await?;
    // And with nothing kept: every row of every page read and rendered afresh.
    let nothing_kept = Service::start(args, bus, db_url, 0, 0).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    println!(
        "lists       each at {} connections for {} s: HTTP, its SQL in pgbench, and the floor (the same pages from a flat table of exactly the page's columns) in pgbench",
        args.connections, args.query_seconds
    );
    for list in &lists {
        if list.variants.is_empty() {
            println!("list {:<15} no variant (no such repository)", list.name);
            continue;
        }
        let t = Instant::now();
        let how = build_floor(pool, list).await?;
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM floor_{}",
            list.name.replace('-', "_")
        ))
        .fetch_one(pool)
        .await?;
        // The first page, checked once: its rows over HTTP.
        let first = client
            .get(format!("http://{}{}", service.addr, list.variants[0].path))
            .send()
            .await?;
        let status = first.status();
        let body: serde_json::Value = first.json().await?;
        if !status.is_success() {
            bail!("{}: the catalog answered {status}: {body}", list.name);
        }
        let shown = body["items"]
            .as_array()
            .or_else(|| body["tags"].as_array())
            .map_or(0, Vec::len);
        println!(
            "list {:<15} floor table {rows} rows ({how}, {:.1} s); first page {shown} rows",
            list.name,
            t.elapsed().as_secs_f64()
        );
        if args.explain {
            for line in explain(pool, &list.variants[0].own).await? {
                println!("plan {:<15} {line}", list.name);
            }
            for line in explain(pool, &list.variants[0].floor).await? {
                println!("floorplan {:<10} {line}", list.name);
            }
        }
        let paths: Vec<String> = list.variants.iter().map(|v| v.path.clone()).collect();
        let load = |addr| lean_closed_loop(addr, &paths, args.connections, args.query_seconds);
        let http = load(service.addr).await?;
        let rows_kept = load(afresh.addr).await?;
        let cold = load(nothing_kept.addr).await?;
        let own: Vec<String> = list.variants.iter().map(|v| v.own.clone()).collect();
        // The statement of a page not kept: the rows' stamps (the same plan, narrow rows).
        let stamps: Vec<String> = list
            .variants
            .iter()
            .map(|v| {
                v.stamps
                    .clone()
                    .unwrap_or_else(|| v.own.replace(IMAGE_COLUMNS, STAMP_COLUMNS))
            })
            .collect();
        let floor: Vec<String> = list.variants.iter().map(|v| v.floor.clone()).collect();
        let own = pgbench_files(args, db_url, &own).await;
        let stamps = if stamps
            == list
                .variants
                .iter()
                .map(|v| v.own.clone())
                .collect::<Vec<_>>()
        {
            Err(anyhow::anyhow!("not a list of image rows"))
        } else {
            pgbench_files(args, db_url, &stamps).await
        };
        let floor = pgbench_files(args, db_url, &floor).await?;
        let x = |rps: f64| rps / floor.rps.max(1e-9);
        let sql = |load: &anyhow::Result<Load>| match load {
            Ok(o) => format!(
                "{:>6.0} tps p99 {:>5.2} ms ({:.2} x floor)",
                o.rps,
                o.p99.as_secs_f64() * 1e3,
                x(o.rps)
            ),
            Err(e) => format!("not run: {e:#}"),
        };
        println!(
            "list {:<15} floor {:>6.0} tps p99 {:>5.2} ms | HTTP kept pages {:>6.0} req/s p99 {:>6.2} ms ({:.2} x floor) | pages not kept, rows kept {:>6.0} req/s p99 {:>6.2} ms ({:.2} x floor) | nothing kept {:>6.0} req/s p99 {:>6.2} ms ({:.2} x floor) (target >= 0.7, p99 <= 10 ms)",
            list.name,
            floor.rps,
            floor.p99.as_secs_f64() * 1e3,
            http.rps,
            http.p99.as_secs_f64() * 1e3,
            x(http.rps),
            rows_kept.rps,
            rows_kept.p99.as_secs_f64() * 1e3,
            x(rows_kept.rps),
            cold.rps,
            cold.p99.as_secs_f64() * 1e3,
            x(cold.rps),
        );
        println!(
            "list {:<15} SQL in pgbench: the full statement {} | the stamps {}",
            list.name,
            sql(&own),
            sql(&stamps)
        );
    }
    service.stop().await;
    afresh.stop().await;
    nothing_kept.stop().await;
    Ok(())
}

/// The catalog service on an ephemeral port of this process.
struct Service {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(
        args: &Args,
        bus: &EventBus,
        db_url: &str,
        page_cache_mb: usize,
        row_cache_mb: usize,
    ) -> anyhow::Result<Self> {
        let config = Config {
            common: CommonConfig {
                nats_url: args.nats_url.clone(),
                database_url: db_url.to_owned(),
                stream: bus.settings().name.clone(),
                subject_prefix: bus.settings().subject_prefix.clone(),
                http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                log_format: imagelib_platform::config::LogFormat::Pretty,
                // An anonymous reader, as pgbench's SQL is the anonymous caller's.
                anonymous_read: true,
                ..Default::default()
            },
            catalog: CatalogSettings {
                page_cache_mb,
                row_cache_mb,
                ..Default::default()
            },
        };
        let app = catalog_projector::startup::Application::build(config).await?;
        let addr = app.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
