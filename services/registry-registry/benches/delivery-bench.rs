//! Subscription delivery to a local receiver: throughput and the latency added between an
//! event's append and its delivery. Not run by the tests:
//!
//! ```sh
//! cargo bench -p registry-registry --bench delivery-bench -- [--events 20000] [--subjects 1000] \
//!     [--rate 200] [--seconds 10] [--in-flight 8] [--subscriptions 1]
//! ```
//!
//! Against the NATS and PostgreSQL of the tests (`IMAGELIB_TEST_NATS_URL`,
//! `IMAGELIB_TEST_DATABASE_URL`): registry-registry in-process with a stream and database of
//! its own, and an axum receiver on loopback that answers 204 and records when each event
//! arrived. Two phases:
//! 1. **burst**: `--events` `image.tag_removed` events over `--subjects` subjects, published
//!    64 at a time; events/s from the first append to the last delivery (and the append rate
//!    alone, the anchor: delivery cannot beat it);
//! 2. **steady**: `--rate` events/s for `--seconds`; latency from each event's `time` (set
//!    when it is appended) to its arrival at the receiver, p50 / p99 / max.
//!
//! With `--subscriptions N` every event goes to N subscriptions (N receivers' worth of
//! deliveries, one receiver).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::TagRemoved;
use imagelib_events::{Envelope, RegistryId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};
use registry_registry::config::Config;
use registry_registry::startup::Application;

#[derive(Debug, Clone)]
struct Args {
    events: usize,
    subjects: usize,
    rate: usize,
    seconds: u64,
    in_flight: usize,
    subscriptions: usize,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            events: 20_000,
            subjects: 1000,
            rate: 200,
            seconds: 10,
            in_flight: 8,
            subscriptions: 1,
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < argv.len() {
            let value = || {
                argv.get(i + 1)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("{} needs a number", argv[i]))
            };
            match argv[i].as_str() {
                "--events" => a.events = value(),
                "--subjects" => a.subjects = value().max(1),
                "--rate" => a.rate = value().max(1),
                "--seconds" => a.seconds = value() as u64,
                "--in-flight" => a.in_flight = value(),
                "--subscriptions" => a.subscriptions = value().max(1),
                // cargo bench passes --bench
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        a
    }
}

/// When an event first arrived, and how many times it did.
type Arrival = (DateTime<Utc>, usize);

/// Arrivals by event id.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<String, Arrival>>>);

async fn receive(State(a): State<Arrivals>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let now = Utc::now();
    a.0.lock()
        .unwrap()
        .entry(id)
        .and_modify(|(_, n)| *n += 1)
        .or_insert((now, 1));
    StatusCode::NO_CONTENT
}

impl Arrivals {
    fn deliveries(&self) -> usize {
        self.0.lock().unwrap().values().map(|(_, n)| n).sum()
    }

    fn at(&self, id: &str) -> Option<DateTime<Utc>> {
        self.0.lock().unwrap().get(id).map(|(t, _)| *t)
    }
}

fn event(registry: RegistryId, k: usize) -> Envelope {
    Envelope::new(
        "bench",
        TagRemoved {
            registry_id: registry,
            repository: "bench/app".parse().unwrap(),
            tag: format!("t{k}").parse().unwrap(),
            digest: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
        },
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_for(arrivals: &Arrivals, n: usize, limit: Duration) -> Instant {
    let start = Instant::now();
    while arrivals.deliveries() < n && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let stream = TestStream::new();
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        common: CommonConfig {
            nats_url: stream.nats_url.clone(),
            database_url: db.url.clone(),
            stream: stream.name.clone(),
            subject_prefix: stream.prefix.clone(),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            master_key_file: dir.path().join("master.key"),
            admin_token: Some("bench".into()),
            allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
            stream_max_bytes: 1024 * 1024 * 1024,
            ..Default::default()
        },
        ..Default::default()
    };
    config.delivery.subscriptions_allow_http = true;
    config.delivery.subscriptions_max_in_flight = Some(args.in_flight);
    let app = Application::build(config).await.unwrap();
    let api = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let arrivals = Arrivals::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let http = reqwest::Client::new();
    for _ in 0..args.subscriptions {
        let res = http
            .post(format!("{api}/v1/subscriptions"))
            .bearer_auth("bench")
            .json(&serde_json::json!({"url": hook, "types": ["io.imagelib.image.tag_removed.v1"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let bus = EventBus::from_client(
        stream.client().await.unwrap(),
        StreamSettings::new(&stream.name, &stream.prefix),
    );
    let registry = RegistryId::new();
    let fanout = args.subscriptions;

    // Warm-up: connections, statements, the dispatcher.
    for k in 0..50 {
        bus.publish(&event(registry, k)).await.unwrap();
    }
    wait_for(&arrivals, 50 * fanout, Duration::from_secs(60)).await;
    let base = arrivals.deliveries();

    // 1. burst
    let started = Instant::now();
    let publish_done = {
        let bus = bus.clone();
        let (events, subjects) = (args.events, args.subjects);
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..events {
                if set.len() >= 64 {
                    set.join_next().await;
                }
                let bus = bus.clone();
                let e = event(registry, i % subjects);
                set.spawn(async move { bus.publish(&e).await.unwrap() });
            }
            while set.join_next().await.is_some() {}
            Instant::now()
        })
    };
    let publish_done = publish_done.await.unwrap();
    let done = wait_for(
        &arrivals,
        base + args.events * fanout,
        Duration::from_secs(600),
    )
    .await;
    let delivered = arrivals.deliveries() - base;
    let append_secs = (publish_done - started).as_secs_f64();
    let total_secs = (done - started).as_secs_f64();
    println!(
        "burst: {} events × {} subscription(s) over {} subjects, {} in flight per subscription",
        args.events, fanout, args.subjects, args.in_flight
    );
    println!(
        "  append rate (anchor)      {:>9.0} events/s ({:.2} s)",
        args.events as f64 / append_secs,
        append_secs
    );
    println!(
        "  delivery throughput       {:>9.0} deliveries/s ({delivered} in {:.2} s, first append to last delivery) = {:.2} of the append rate",
        delivered as f64 / total_secs,
        total_secs,
        (delivered as f64 / total_secs) / (args.events as f64 * fanout as f64 / append_secs)
    );

    // 2. steady
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let n = (args.rate as u64 * args.seconds) as usize;
    let base = arrivals.deliveries();
    let mut sent: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        let e = event(registry, i % args.subjects);
        bus.publish(&e).await.unwrap();
        sent.push((e.id.to_string(), e.time));
    }
    wait_for(&arrivals, base + n * fanout, Duration::from_secs(120)).await;
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t)| {
            arrivals
                .at(id)
                .map(|a| (a - *t).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "steady: {} events/s for {} s ({} events, {} delivered)",
        args.rate,
        args.seconds,
        n,
        latencies.len()
    );
    println!(
        "  append → delivery latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    let _ = stop.send(());
    let _ = server.await;
}
