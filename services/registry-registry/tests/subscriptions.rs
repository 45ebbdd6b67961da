//! Notifications out (issue 14, item 2) against real parts: a real NATS JetStream, a real
//! PostgreSQL, and real HTTP receivers (axum servers in the test) that check the Standard
//! Webhooks signature of every delivery, fail the first attempts, hang, or answer at once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use common::{ADMIN, Env, VIEWER_ML};
use hmac::{Hmac, Mac};
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{RegistryRemoved, SyncRequested};
use imagelib_events::model::SyncReason;
use imagelib_events::{Envelope, RegistryId};
use registry_registry::config::Config;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------- the receiver

/// What a receiver does with a delivery.
#[derive(Debug, Clone)]
enum Behaviour {
    /// 204.
    Accept,
    /// 500 for the first `n` attempts of each event, then 204.
    FailFirst(usize),
    /// This status, always.
    Always(u16),
    /// Answer after this long (longer than the delivery timeout: the sender gives up).
    Hang(Duration),
    /// 500 with a body of this many bytes (`x`), and a redirect's `Location` header.
    Huge(usize),
}

/// One request as received.
#[derive(Debug, Clone)]
struct Received {
    at: DateTime<Utc>,
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    traceparent: Option<String>,
    body: bytes::Bytes,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = h("webhook-id");
    let behaviour = r.behaviour.lock().unwrap().clone();
    let seen = r.log.lock().unwrap().iter().filter(|x| x.id == id).count();
    let mut huge = None;
    let status = match behaviour {
        Behaviour::Huge(n) => {
            huge = Some(n);
            500
        }
        Behaviour::Accept => 204,
        Behaviour::FailFirst(n) if seen < n => 500,
        Behaviour::FailFirst(_) => 204,
        Behaviour::Always(s) => s,
        Behaviour::Hang(d) => {
            tokio::time::sleep(d).await;
            204
        }
    };
    r.log.lock().unwrap().push(Received {
        at: Utc::now(),
        id,
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        content_type: h("content-type"),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        status,
    });
    let status = StatusCode::from_u16(status).unwrap();
    match huge {
        Some(n) => (status, "x".repeat(n)).into_response(),
        None if status.is_redirection() => (
            status,
            [("location", "http://169.254.169.254/latest/meta-data")],
        )
            .into_response(),
        None => status.into_response(),
    }
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
        };
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(receive).fallback(|| async { StatusCode::IM_A_TEAPOT }),
            )
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Event ids answered 2xx, in the order they were.
    fn delivered(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.id)
            .collect()
    }

    async fn wait_delivered(&self, n: usize, within: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let d = self.delivered();
            if d.len() >= n || start.elapsed() > within {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies a Standard Webhooks signature the way a receiver would.
fn verify(secret: &str, r: &Received) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD.decode(b64).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

// ---------------------------------------------------------------- the service

fn config(env: &Env, schedule: &str, timeout_secs: u64) -> Config {
    let mut c = env.config();
    c.delivery.subscriptions_allow_http = true;
    c.delivery.subscriptions_retry_schedule = Some(schedule.parse().unwrap());
    c.delivery.subscriptions_timeout_secs = Some(timeout_secs);
    c
}

async fn bus(env: &Env) -> EventBus {
    EventBus::from_client(
        env.stream.client().await.unwrap(),
        StreamSettings::new(&env.stream.name, &env.stream.prefix),
    )
}

/// `sync.requested` for `registry` (the CloudEvent subject is `registry/<id>`).
async fn publish_sync(bus: &EventBus, registry: RegistryId) -> Envelope {
    let env = Envelope::new(
        "test",
        SyncRequested {
            registry_id: registry,
            repository: None,
            reason: SyncReason::Manual,
        },
    )
    .with_traceparent(Some(imagelib_events::TraceParent::new_root()));
    bus.publish(&env).await.unwrap();
    env
}

async fn subscribe(svc: &common::Service, url: &str, types: Value) -> Value {
    let (s, b) = svc
        .post(
            "/v1/subscriptions",
            json!({"url": url, "types": types, "description": "test"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

/// `DELETE /v1/subscriptions/{id}` as an admin: the status.
async fn unsubscribe(svc: &common::Service, id: &str) -> u16 {
    let (s, _, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/subscriptions/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    s
}

async fn show(svc: &common::Service, id: &str) -> Value {
    let (s, b) = svc.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// The payload of the stream message that carries event `id`.
async fn stream_payload(env: &Env, id: &str) -> bytes::Bytes {
    let js = async_nats::jetstream::new(env.stream.client().await.unwrap());
    let mut s = js.get_stream(&env.stream.name).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await
            && m.headers
                .get("Nats-Msg-Id")
                .is_some_and(|v| v.as_str() == id)
        {
            return m.payload;
        }
    }
    panic!("event {id} is not in the stream");
}

// ---------------------------------------------------------------- tests

/// Every delivery is the structured CloudEvent as on the bus, signed; the receiver fails
/// the first two attempts of every event, so each is retried, and the events of one subject
/// arrive strictly in stream order while subjects go concurrently; other types never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_and_ordered_per_subject() {
    let env = Env::new();
    let svc = env.start_with(config(&env, "100ms,100ms,100ms", 5)).await;
    let receiver = Receiver::start(Behaviour::FailFirst(2)).await;
    let created = subscribe(&svc, &receiver.url(), json!(["*.sync.requested.v1"])).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let bus = bus(&env).await;
    let registries: Vec<RegistryId> = (0..3).map(|_| RegistryId::new()).collect();
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..5 {
        for r in &registries {
            let e = publish_sync(&bus, *r).await;
            sent.entry(format!("registry/{r}"))
                .or_default()
                .push(e.id.to_string());
            // Not subscribed to: never delivered.
            bus.publish(&Envelope::new("test", RegistryRemoved { registry_id: *r }))
                .await
                .unwrap();
        }
    }
    let delivered = receiver.wait_delivered(15, Duration::from_secs(60)).await;
    assert_eq!(delivered.len(), 15, "{:?}", receiver.log().len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = receiver.log();
    assert_eq!(log.len(), 45, "three attempts each, nothing else");

    for r in &log {
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert!(verify(&secret, r), "the signature of {} verifies", r.id);
        assert!(!verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", r));
        let ts: i64 = r.timestamp.parse().unwrap();
        assert!((Utc::now().timestamp() - ts).abs() < 120, "{ts}");
        let event = r.event();
        assert_eq!(event["id"], r.id.as_str());
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "io.imagelib.sync.requested.v1");
        let tp = event["traceparent"].as_str().unwrap();
        assert_eq!(
            r.traceparent.as_deref().map(|t| &t[3..35]),
            Some(&tp[3..35]),
            "the delivery continues the event's trace"
        );
        assert_eq!(
            r.body,
            stream_payload(&env, &r.id).await,
            "the body is the event as on the bus"
        );
    }
    // Per subject: [e0, e0, e0, e1, e1, e1, …] — an event is never sent before the one
    // before it was delivered.
    let mut by_subject: HashMap<String, Vec<String>> = HashMap::new();
    for r in &log {
        by_subject
            .entry(r.event()["subject"].as_str().unwrap().to_owned())
            .or_default()
            .push(r.id.clone());
    }
    for (subject, ids) in &sent {
        let expected: Vec<String> = ids
            .iter()
            .flat_map(|i| std::iter::repeat_n(i.clone(), 3))
            .collect();
        assert_eq!(by_subject[subject], expected, "order of {subject}");
    }
    // Subjects went side by side: every subject's first event was sent before any
    // subject's last event was done.
    let first_finished = sent
        .values()
        .map(|ids| {
            log.iter()
                .find(|r| r.id == *ids.last().unwrap() && r.status == 204)
                .unwrap()
                .at
        })
        .min()
        .unwrap();
    for ids in sent.values() {
        let first = log.iter().find(|r| r.id == ids[0]).unwrap().at;
        assert!(
            first < first_finished,
            "subjects are delivered concurrently"
        );
    }

    let view = show(&svc, &id).await;
    assert!(view.get("secret").is_none(), "{view}");
    assert_eq!(view["delivery"]["pending"], 0, "{view}");
    assert_eq!(view["delivery"]["dead_letters"], 0, "{view}");
    assert!(view["delivery"]["last_delivered_at"].is_string(), "{view}");
    assert_eq!(view["delivery"]["last_failure"], "status 500", "{view}");
    svc.stop().await;
}

/// An endpoint that hangs past the timeout holds only its own subscription: the healthy
/// one gets every event at once, the hanging one's events end in its dead-letter list
/// after the schedule (keyset pages, newest first, with the last error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_dead_lettered_without_slowing_a_healthy_one() {
    let env = Env::new();
    let svc = env.start_with(config(&env, "100ms,100ms", 1)).await;
    let hanging = Receiver::start(Behaviour::Hang(Duration::from_secs(30))).await;
    let healthy = Receiver::start(Behaviour::Accept).await;
    let types = json!(["io.imagelib.sync.requested.v1"]);
    let bad = subscribe(&svc, &hanging.url(), types.clone()).await;
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    let good = subscribe(&svc, &healthy.url(), types).await;

    let bus = bus(&env).await;
    let mut events = Vec::new();
    for _ in 0..20 {
        events.push(publish_sync(&bus, RegistryId::new()).await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let delivered = healthy.wait_delivered(20, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 20);
    let log = healthy.log();
    let slowest = events
        .iter()
        .map(|e| {
            let r = log.iter().find(|r| r.id == e.id.to_string()).unwrap();
            (r.at - e.time).to_std().unwrap_or_default()
        })
        .max()
        .unwrap();
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy endpoint waited {slowest:?} behind the hanging one"
    );

    // Every event: 3 attempts of 1 s, then the dead-letter list.
    let start = Instant::now();
    let view = loop {
        let v = show(&svc, &bad_id).await;
        if v["delivery"]["dead_letters"] == 20 || start.elapsed() > Duration::from_secs(90) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(view["delivery"]["dead_letters"], 20, "{view}");
    assert_eq!(view["delivery"]["pending"], 0, "{view}");
    assert!(
        view["delivery"]["last_failure"]
            .as_str()
            .unwrap()
            .starts_with("timeout"),
        "{view}"
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/subscriptions/{bad_id}/dead-letters?limit=7&cursor={c}"),
            None => format!("/v1/subscriptions/{bad_id}/dead-letters?limit=7"),
        };
        let (s, page) = svc.get(&path).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        for d in page["items"].as_array().unwrap() {
            assert_eq!(d["attempts"], 3, "{d}");
            assert_eq!(d["event_type"], "io.imagelib.sync.requested.v1");
            assert!(
                d["last_error"].as_str().unwrap().starts_with("timeout"),
                "{d}"
            );
            assert!(d["last_status"].is_null());
            assert!(d["subject"].as_str().unwrap().starts_with("registry/"));
            seen.push((
                d["dead_at"].as_str().unwrap().to_owned(),
                d["event_id"].as_str().unwrap().to_owned(),
            ));
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 20);
    let mut ids: Vec<&String> = seen.iter().map(|(_, i)| i).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "no event twice");
    // Newest first (dead letters written at the same moment by concurrent attempts may
    // commit a millisecond out of step).
    let times: Vec<DateTime<Utc>> = seen.iter().map(|(t, _)| t.parse().unwrap()).collect();
    for pair in times.windows(2) {
        assert!(
            pair[1] <= pair[0] + chrono::Duration::milliseconds(50),
            "newest first: {times:?}"
        );
    }
    assert!(times[0] > times[19], "{times:?}");

    let good_view = show(&svc, good["id"].as_str().unwrap()).await;
    assert_eq!(good_view["delivery"]["dead_letters"], 0, "{good_view}");
    svc.stop().await;
}

/// A replay delivers again exactly the subscription's events appended in the range, with
/// their original `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_a_time_range_again() {
    let env = Env::new();
    let svc = env.start_with(config(&env, "100ms", 5)).await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    let created = subscribe(&svc, &receiver.url(), json!(["io.imagelib.sync.*"])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let bus = bus(&env).await;
    let registry = RegistryId::new();

    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut marks = Vec::new();
    for n in [3, 4, 2] {
        marks.push(Utc::now());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(publish_sync(&bus, registry).await.id.to_string());
        }
        batches.push(ids);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(
        receiver
            .wait_delivered(all, Duration::from_secs(30))
            .await
            .len(),
        all
    );

    let (s, accepted) = svc
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"from": marks[1], "to": marks[2]}),
        )
        .await;
    assert_eq!(s, 202, "{accepted}");
    assert!(accepted["sequence"].as_u64().unwrap() > 0);
    let delivered = receiver
        .wait_delivered(all + batches[1].len(), Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_now = receiver.delivered();
    assert_eq!(
        delivered_now.len(),
        delivered.len(),
        "nothing more than the range"
    );
    assert_eq!(
        delivered_now[all..],
        batches[1][..],
        "the middle batch again, in order"
    );

    // Bad ranges and unknown subscriptions are problems.
    let (s, p) = svc
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"from": marks[2], "to": marks[1]}),
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["pointer"].as_str()),
        (422, Some("/to")),
        "{p}"
    );
    let (s, p) = svc
        .post(
            &format!("/v1/subscriptions/{}/replay", uuid::Uuid::new_v4()),
            json!({"from": marks[0]}),
        )
        .await;
    assert_eq!(s, 404, "{p}");
    let types = env.event_types().await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "io.imagelib.subscription.replay_requested.v1")
            .count(),
        1
    );
    svc.stop().await;
}

/// Deliveries that fail while the service stops are delivered after it restarts, and so
/// are events appended while it was down: the outbox and the consumer position are durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    let env = Env::new();
    let c = config(
        &env,
        "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
        5,
    );
    let svc = env.start_with(c.clone()).await;
    let receiver = Receiver::start(Behaviour::Always(503)).await;
    subscribe(&svc, &receiver.url(), json!(["*"])).await;
    let bus = bus(&env).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(publish_sync(&bus, RegistryId::new()).await.id.to_string());
    }
    let start = Instant::now();
    while receiver.log().len() < 3 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.stop().await;
    for _ in 0..2 {
        ids.push(publish_sync(&bus, RegistryId::new()).await.id.to_string());
    }
    receiver.set(Behaviour::Accept);
    let svc = env.start_with(c).await;
    let mut delivered = receiver.wait_delivered(5, Duration::from_secs(30)).await;
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids);
    svc.stop().await;
}

/// Requests go through the network guard: with loopback denied, a subscription to a name
/// that resolves to loopback is created (names are checked when resolved) but never
/// reaches the receiver; its events are dead-lettered as `blocked`. An IP literal in a
/// denied network is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pass_the_network_guard() {
    let env = Env::new();
    let mut c = config(&env, "100ms", 2);
    c.common.allow_networks = None;
    let svc = env.start_with(c).await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    let (s, p) = svc
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url(), "types": ["*"]}),
        )
        .await;
    assert_eq!((s, p["code"].as_str()), (422, Some("blocked")), "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("IMAGELIB_ALLOW_NETWORKS"),
        "{p}"
    );

    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    let created = subscribe(&svc, &by_name, json!(["*"])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    publish_sync(&bus(&env).await, RegistryId::new()).await;
    let start = Instant::now();
    let view = loop {
        let v = show(&svc, &id).await;
        if v["delivery"]["dead_letters"] == 1 || start.elapsed() > Duration::from_secs(30) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["delivery"]["dead_letters"], 1, "{view}");
    let (_, page) = svc
        .get(&format!("/v1/subscriptions/{id}/dead-letters"))
        .await;
    let error = page["items"][0]["last_error"].as_str().unwrap();
    assert!(error.starts_with("blocked"), "{error}");
    assert!(
        error.contains("127.0.0.0/8") || error.contains("::1"),
        "{error}"
    );
    assert!(receiver.log().is_empty(), "nothing reached the receiver");
    svc.stop().await;
}

/// The signing secret is never in the clear: not in the stream, the database, a `GET`, or
/// the logs at TRACE level — only in the `201` that generated it. Removal destroys its
/// data key. A secret given by the caller signs too and is not echoed.
#[tokio::test(flavor = "current_thread")]
async fn the_secret_is_never_in_the_clear() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::new();
    let svc = env.start_with(config(&env, "100ms", 5)).await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    let given = format!(
        "given-secret-{}-0123456789abcdef",
        imagelib_testkit::unique_id()
    );
    let (s, with_given) = svc
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url(), "types": ["*.sync.requested.v1"], "secret": given}),
        )
        .await;
    assert_eq!(s, 201, "{with_given}");
    assert!(
        with_given.get("secret").is_none(),
        "a given secret is not echoed"
    );
    let generated = subscribe(&svc, &receiver.url(), json!(["*.sync.requested.v1"])).await;
    let generated_secret = generated["secret"].as_str().unwrap().to_owned();
    let key_b64 = generated_secret.trim_start_matches("whsec_").to_owned();

    publish_sync(&bus(&env).await, RegistryId::new()).await;
    assert_eq!(
        receiver
            .wait_delivered(2, Duration::from_secs(30))
            .await
            .len(),
        2
    );
    let log = receiver.log();
    assert!(
        log.iter().any(|r| verify(&given, r)),
        "the given secret signs"
    );
    assert!(
        log.iter().any(|r| verify(&generated_secret, r)),
        "the generated one too"
    );

    let (_, list) = svc.get("/v1/subscriptions").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let (_, one) = svc
        .get(&format!(
            "/v1/subscriptions/{}",
            generated["id"].as_str().unwrap()
        ))
        .await;
    let stream = env.raw_stream().await;
    let db = env.db_dump().await;
    for secret in [given.as_str(), generated_secret.as_str(), key_b64.as_str()] {
        assert!(!list.to_string().contains(secret), "GET list");
        assert!(!one.to_string().contains(secret), "GET one");
        assert!(
            !stream.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the stream holds a secret in the clear"
        );
        assert!(
            !db.contains(secret),
            "the database holds a secret in the clear"
        );
    }
    let sealed = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            imagelib_events::EventPayload::SubscriptionCreated(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(sealed.secret.algorithm, "AES-256-GCM", "{sealed:?}");

    // Removal destroys the subscription's data key.
    let gid = generated["id"].as_str().unwrap().to_owned();
    let s = unsubscribe(&svc, &gid).await;
    assert_eq!(s, 204);
    let js = async_nats::jetstream::new(env.stream.client().await.unwrap());
    let keys = imagelib_secrets::KeyStore::open(&js, &format!("{}_KEYS", env.stream.name), 1)
        .await
        .unwrap();
    assert!(
        keys.is_shredded(RegistryId(gid.parse().unwrap()))
            .await
            .unwrap(),
        "the secret's data key is destroyed"
    );
    let (s, _) = svc.get(&format!("/v1/subscriptions/{gid}")).await;
    assert_eq!(s, 404);

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("create_subscription"),
        "the handler's spans are there"
    );
    assert!(logs.contains("deliver"), "the delivery spans are there");
    for secret in [given.as_str(), generated_secret.as_str(), key_b64.as_str()] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
    svc.stop().await;
}

/// Bad input is an RFC 9457 problem naming the field; only admins manage subscriptions.
#[tokio::test]
async fn bad_input_is_a_problem() {
    let env = Env::new();
    let svc = env.start().await;
    let post = |body: Value| {
        let svc = &svc;
        async move { svc.post("/v1/subscriptions", body).await }
    };
    for (body, pointer) in [
        (
            json!({"url": "http://hooks.example.com/x", "types": ["*"]}),
            "/url",
        ),
        (
            json!({"url": "ftp://hooks.example.com/x", "types": ["*"]}),
            "/url",
        ),
        (
            json!({"url": "https://user:pw@hooks.example.com/x", "types": ["*"]}),
            "/url",
        ),
        (
            json!({"url": "https://hooks.example.com/x#f", "types": ["*"]}),
            "/url",
        ),
        (json!({"url": "not a url", "types": ["*"]}), "/url"),
        (
            json!({"url": "https://hooks.example.com/x", "types": []}),
            "/types",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "types": ["*", "io.imagelib.imgae.*"]}),
            "/types/1",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "types": ["io imagelib"]}),
            "/types/0",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "types": ["*"], "secret": "short"}),
            "/secret",
        ),
        (
            json!({"url": "https://hooks.example.com/x", "types": ["*"], "secret": "whsec_!!"}),
            "/secret",
        ),
    ] {
        let (s, p) = post(body.clone()).await;
        assert_eq!(s, 422, "{body} → {p}");
        assert_eq!(p["code"], "validation", "{p}");
        assert_eq!(p["errors"][0]["pointer"], pointer, "{body} → {p}");
        assert!(p["type"].as_str().unwrap().starts_with("https://"), "{p}");
    }
    let (s, p) =
        post(json!({"url": "https://hooks.example.com/x", "types": ["*"], "extra": 1})).await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = post(json!({"url": "https://hooks.example.com/x"})).await;
    assert_eq!(s, 422, "{p}");

    // Only admins, for reads too.
    let body = json!({"url": "https://hooks.example.com/x", "types": ["*"]});
    let (s, _, _) = svc
        .call(
            Method::POST,
            "/v1/subscriptions",
            Some(VIEWER_ML),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = svc
        .call(Method::GET, "/v1/subscriptions", Some(VIEWER_ML), None)
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = svc.call(Method::GET, "/v1/subscriptions", None, None).await;
    assert_eq!(s, 401);

    let (s, created) = post(body).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (s, p) = svc.get("/v1/subscriptions/not-a-uuid").await;
    assert_eq!((s, p["code"].as_str()), (400, Some("bad-path")), "{p}");
    let (s, _) = svc
        .get(&format!("/v1/subscriptions/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, 404);
    for q in ["limit=0", "limit=501", "cursor=zzz"] {
        let (s, p) = svc.get(&format!("/v1/subscriptions?{q}")).await;
        assert_eq!(s, 422, "{q}: {p}");
        let (s, p) = svc
            .get(&format!("/v1/subscriptions/{id}/dead-letters?{q}"))
            .await;
        assert_eq!(s, 422, "{q}: {p}");
    }
    let (s, p) = svc
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"from": "yesterday"}),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = svc
        .post(
            &format!("/v1/subscriptions/{id}/replay"),
            json!({"from": Utc::now() + chrono::Duration::hours(1), "to": Utc::now() + chrono::Duration::hours(2)}),
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["pointer"].as_str()),
        (422, Some("/from")),
        "{p}"
    );

    // A stale If-Match is a 412; a removed subscription is gone.
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("if-match", "\"999999\"".parse().unwrap());
    let res = svc
        .http
        .delete(svc.url(&format!("/v1/subscriptions/{id}")))
        .bearer_auth(ADMIN)
        .headers(h)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    let s = unsubscribe(&svc, &id).await;
    assert_eq!(s, 204);
    let s = unsubscribe(&svc, &id).await;
    assert_eq!(s, 404);
    let (_, list) = svc.get("/v1/subscriptions").await;
    assert_eq!(list["items"], json!([]), "{list}");
    let (_, api, _) = svc.call(Method::GET, "/openapi.json", None, None).await;
    for (path, method) in [
        ("/v1/subscriptions", "post"),
        ("/v1/subscriptions", "get"),
        ("/v1/subscriptions/{id}", "get"),
        ("/v1/subscriptions/{id}", "delete"),
        ("/v1/subscriptions/{id}/dead-letters", "get"),
        ("/v1/subscriptions/{id}/replay", "post"),
    ] {
        assert!(
            api["paths"][path][method].is_object(),
            "{method} {path} in the OpenAPI document"
        );
    }
    let types = env.event_types().await;
    assert!(types.contains(&"io.imagelib.subscription.created.v1".to_owned()));
    assert!(types.contains(&"io.imagelib.subscription.removed.v1".to_owned()));
    svc.stop().await;
}

/// A redirect is a failed attempt, never followed (here it points at the metadata
/// address); an answer is read only in part and kept as a bounded snippet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_answers_are_bounded() {
    let env = Env::new();
    let svc = env.start_with(config(&env, "100ms", 5)).await;
    let redirecting = Receiver::start(Behaviour::Always(307)).await;
    let huge = Receiver::start(Behaviour::Huge(8 * 1024 * 1024)).await;
    let types = json!(["io.imagelib.sync.requested.v1"]);
    let r = subscribe(&svc, &redirecting.url(), types.clone()).await;
    let h = subscribe(&svc, &huge.url(), types).await;
    publish_sync(&bus(&env).await, RegistryId::new()).await;
    for (sub, expected) in [
        (&r, "status 307 (redirects are not followed)".to_owned()),
        (&h, format!("status 500: {}", "x".repeat(256))),
    ] {
        let id = sub["id"].as_str().unwrap();
        let start = Instant::now();
        let page = loop {
            let (_, page) = svc
                .get(&format!("/v1/subscriptions/{id}/dead-letters"))
                .await;
            if !page["items"].as_array().unwrap().is_empty()
                || start.elapsed() > Duration::from_secs(30)
            {
                break page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let d = &page["items"][0];
        assert_eq!(d["last_error"].as_str(), Some(expected.as_str()), "{d}");
        assert_eq!(d["attempts"], 2, "{d}");
        assert!(d["last_status"].as_u64().is_some(), "{d}");
    }
    assert_eq!(
        redirecting.log().len(),
        2,
        "two attempts, no request followed the redirect"
    );
    svc.stop().await;
}

/// Two replicas on one database and stream: one queues the events (it holds the delivery
/// lock), both deliver, and every event arrives once, in order per subject; when one
/// stops, the other goes on (taking the lock over if it was the one that held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_event_once_and_take_over() {
    let env = Env::new();
    let c = config(&env, "100ms", 5);
    let a = env.start_with(c.clone()).await;
    let b = env.start_with(c).await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    subscribe(&a, &receiver.url(), json!(["*.sync.requested.v1"])).await;
    let bus = bus(&env).await;
    let registries: Vec<RegistryId> = (0..4).map(|_| RegistryId::new()).collect();
    let mut sent: Vec<Envelope> = Vec::new();
    for i in 0..40 {
        sent.push(publish_sync(&bus, registries[i % 4]).await);
    }
    assert_eq!(
        receiver
            .wait_delivered(40, Duration::from_secs(30))
            .await
            .len(),
        40
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = receiver.log();
    assert_eq!(log.len(), 40, "each event once");
    for r in &registries {
        let subject = format!("registry/{r}");
        let expected: Vec<String> = sent
            .iter()
            .filter(|e| e.payload.subject() == subject)
            .map(|e| e.id.to_string())
            .collect();
        let got: Vec<String> = log
            .iter()
            .filter(|x| x.event()["subject"] == subject.as_str())
            .map(|x| x.id.clone())
            .collect();
        assert_eq!(got, expected, "order of {subject}");
    }

    a.stop().await;
    for i in 0..8 {
        sent.push(publish_sync(&bus, registries[i % 4]).await);
    }
    let delivered = receiver.wait_delivered(48, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 48, "the other replica went on");
    let mut ids: Vec<String> = delivered.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 48, "no event twice");
    b.stop().await;
}

/// The ingest's consumer, once its filter is `want`.
async fn ingest_filter_becomes(
    stream: &async_nats::jetstream::stream::Stream,
    want: &str,
) -> async_nats::jetstream::consumer::Info {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = stream
            .consumer_info(registry_registry::subscriptions::DELIVERY_CONSUMER)
            .await
            && info.config.filter_subject == want
        {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "the ingest's filter never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With no subscription live, the ingest reads only `subscription.*` events (NATS delivers
/// it nothing else); the first subscription turns it to the whole stream from the
/// subscription's own event on, so what follows is delivered; removing the last one turns
/// it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_subscriptions_the_ingest_reads_only_their_events() {
    let env = Env::new();
    let svc = env.start_with(config(&env, "100ms", 5)).await;
    let bus = bus(&env).await;
    let stream = bus.jetstream().get_stream(&env.stream.name).await.unwrap();
    let only_subscriptions = format!("{}.subscription.>", env.stream.prefix);
    let everything = format!("{}.>", env.stream.prefix);
    let before = ingest_filter_becomes(&stream, &only_subscriptions).await;
    for _ in 0..5 {
        publish_sync(&bus, RegistryId::new()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = ingest_filter_becomes(&stream, &only_subscriptions).await;
    assert_eq!(
        after.delivered.consumer_sequence, before.delivered.consumer_sequence,
        "nothing delivered to the ingest without a subscription"
    );
    assert_eq!(after.num_pending, 0);

    // Subscribed: an event published right after the subscription is delivered.
    let receiver = Receiver::start(Behaviour::Accept).await;
    let created = subscribe(&svc, &receiver.url(), json!(["*.sync.requested.v1"])).await;
    let sent = publish_sync(&bus, RegistryId::new()).await;
    ingest_filter_becomes(&stream, &everything).await;
    let delivered = receiver.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(delivered, vec![sent.id.to_string()]);

    // The last subscription gone: back to its events alone.
    let id = created["id"].as_str().unwrap();
    let s = unsubscribe(&svc, id).await;
    assert_eq!(s, 204);
    ingest_filter_becomes(&stream, &only_subscriptions).await;
    svc.stop().await;
}
