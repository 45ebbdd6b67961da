//! The JetStream plumbing against a real NATS server: each test has its own stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use imagelib_events::bus::{
    BatchHandler, ConsumerSettings, EventBus, Exhausted, Expect, Handler, HandlerError,
    RecordedEvent, StreamSettings,
};
use imagelib_events::event::{RegistryRemoved, RegistryValidated, SyncRequested};
use imagelib_events::model::SyncReason;
use imagelib_events::{Envelope, EventId, RegistryId, TraceParent};
use imagelib_testkit::TestStream;
use tokio::sync::Mutex;

async fn bus(ts: &TestStream) -> EventBus {
    let bus = EventBus::connect(
        &imagelib_events::connect::NatsConnect::new(&ts.nats_url),
        "test",
        StreamSettings::new(&ts.name, &ts.prefix),
    )
    .await
    .unwrap();
    bus.ensure_stream().await.unwrap();
    bus
}

fn validated(id: RegistryId) -> Envelope {
    Envelope::new(
        "test",
        RegistryValidated {
            registry_id: id,
            auth_scheme: None,
            catalog_access: true,
        },
    )
}

#[tokio::test]
async fn ensure_stream_is_idempotent_and_follows_config() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let info = bus.ensure_stream().await.unwrap();
    assert_eq!(info.config.subjects, vec![format!("{}.>", ts.prefix)]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    // A changed duplicate window is applied to the existing stream.
    let mut s = StreamSettings::new(&ts.name, &ts.prefix);
    s.duplicate_window = Duration::from_secs(300);
    let bus2 = EventBus::from_client(ts.client().await.unwrap(), s);
    let info = bus2.ensure_stream().await.unwrap();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(300));
}

/// A process configured with a smaller byte limit than the stream holds (a one-off
/// `rebuild` with the default) must not make NATS delete the oldest events to fit.
#[tokio::test]
async fn a_smaller_configured_limit_never_deletes_events() {
    let ts = TestStream::new();
    let mut big = StreamSettings::new(&ts.name, &ts.prefix);
    big.max_bytes = 8 * 1024 * 1024;
    let writer = EventBus::from_client(ts.client().await.unwrap(), big);
    writer.ensure_stream().await.unwrap();
    // A little over 1 MiB of events.
    let mut published = 0u64;
    while writer.ensure_stream().await.unwrap().state.bytes <= 1024 * 1024 + 64 * 1024 {
        for _ in 0..200 {
            let env = Envelope::new(
                "test",
                SyncRequested {
                    registry_id: RegistryId::new(),
                    repository: None,
                    reason: SyncReason::Manual,
                },
            );
            writer.publish(&env).await.unwrap();
            published += 1;
        }
    }
    let mut small = StreamSettings::new(&ts.name, &ts.prefix);
    small.max_bytes = 1024 * 1024;
    let other = EventBus::from_client(ts.client().await.unwrap(), small);
    let info = other.ensure_stream().await.unwrap();
    assert_eq!(info.config.max_bytes, 8 * 1024 * 1024, "the limit is kept");
    assert_eq!(info.state.messages, published, "no event deleted");
    assert_eq!(info.state.first_sequence, 1);
    // Raising it is applied.
    let mut bigger = StreamSettings::new(&ts.name, &ts.prefix);
    bigger.max_bytes = 16 * 1024 * 1024;
    let info = EventBus::from_client(ts.client().await.unwrap(), bigger)
        .ensure_stream()
        .await
        .unwrap();
    assert_eq!(info.config.max_bytes, 16 * 1024 * 1024);
}

#[tokio::test]
async fn a_retried_publish_is_deduplicated_by_event_id() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let id = RegistryId::new();
    let env = validated(id).with_id(EventId::for_fact("same fact"));
    let first = bus.publish(&env).await.unwrap();
    let again = bus.publish(&env).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.sequence, again.sequence);
    assert_eq!(bus.last_sequence().await.unwrap(), 1);
    let subject = bus.subject_of(&env);
    assert_eq!(subject, format!("{}.registry.{}.validated", ts.prefix, id));
}

#[tokio::test]
async fn append_checks_the_aggregate_sequence() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let id = RegistryId::new();
    let r1 = bus.append(&validated(id), Expect::NoEvents).await.unwrap();
    // Someone who has not seen r1 loses.
    let err = bus
        .append(&validated(id), Expect::NoEvents)
        .await
        .unwrap_err();
    assert!(
        matches!(err, imagelib_events::bus::BusError::Conflict { .. }),
        "{err}"
    );
    // A different event type of the same aggregate also counts.
    let removed = Envelope::new("test", RegistryRemoved { registry_id: id });
    let err = bus.append(&removed, Expect::NoEvents).await.unwrap_err();
    assert!(matches!(
        err,
        imagelib_events::bus::BusError::Conflict { .. }
    ));
    let r2 = bus
        .append(&removed, Expect::LastSequence(r1.sequence))
        .await
        .unwrap();
    assert!(r2.sequence > r1.sequence);
    // Other aggregates are independent.
    bus.append(&validated(RegistryId::new()), Expect::NoEvents)
        .await
        .unwrap();
}

#[tokio::test]
async fn racing_appends_give_one_winner() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let id = RegistryId::new();
    let r = bus.append(&validated(id), Expect::NoEvents).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            bus.append(&validated(id), Expect::LastSequence(r.sequence))
                .await
                .is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

struct Recorder {
    seen: Mutex<Vec<RecordedEvent>>,
    fail_first: AtomicU32,
    permanent: bool,
}

impl Handler for Recorder {
    async fn handle(&self, event: RecordedEvent) -> Result<(), HandlerError> {
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err(if self.permanent {
                HandlerError::Permanent("cannot apply".into())
            } else {
                HandlerError::Transient("database hiccup".into())
            });
        }
        self.seen.lock().await.push(event);
        Ok(())
    }
}

async fn wait_for<F: Fn() -> bool>(f: F) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn consumer_dead_letters_garbage_and_goes_on() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let client = ts.client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    // Garbage, a structured event of an unknown type, and an event with a bad attribute.
    js.publish(format!("{}.registry.x.junk", ts.prefix), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Content-Type", "application/cloudevents+json");
    js.publish_with_headers(
        format!("{}.registry.x.bad", ts.prefix),
        h,
        r#"{"specversion":"1.0","id":"1","source":"/x","type":"t","Bad_Name":1,"data":{}}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let tp = TraceParent::new_root();
    let good = validated(RegistryId::new()).with_traceparent(Some(tp));
    bus.publish(&good).await.unwrap();

    let recorder = Arc::new(Recorder {
        seen: Mutex::new(vec![]),
        fail_first: AtomicU32::new(0),
        permanent: false,
    });
    let consumer = bus
        .consumer(ConsumerSettings::new("catalog"))
        .await
        .unwrap();
    let r = recorder.clone();
    let stop = tokio_util_like_stop();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move {
            consumer
                .run(&*r, async move { stop.notified().await })
                .await
        }
    });
    let r2 = recorder.clone();
    wait_for(|| r2.seen.try_lock().map(|s| s.len() == 1).unwrap_or(false)).await;
    stop.notify_waiters();
    run.await.unwrap().unwrap();
    let seen = recorder.seen.lock().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].envelope, good);
    assert_eq!(seen[0].envelope.traceparent, Some(tp));

    // Both bad messages are on the dead-letter subject, with the reason.
    let mut replay = bus
        .replay(1, None, Some(format!("{}.dlq.catalog", ts.prefix)))
        .await
        .unwrap();
    let stream = js.get_stream(&ts.name).await.unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&format!("{}.dlq.catalog", ts.prefix))
        .await
        .unwrap();
    assert!(
        last.headers
            .get("Imagelib-Dlq-Error")
            .unwrap()
            .as_str()
            .contains("Bad_Name")
    );
    // Replay skips dead letters.
    assert!(replay.next().await.is_none());
    let count = js
        .get_stream(&ts.name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(count, 5, "3 originals + 2 dead letters");
}

fn tokio_util_like_stop() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

#[tokio::test]
async fn transient_failures_are_retried_then_succeed() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let env = Envelope::new(
        "test",
        SyncRequested {
            registry_id: RegistryId::new(),
            repository: None,
            reason: SyncReason::Manual,
        },
    );
    bus.publish(&env).await.unwrap();
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(vec![]),
        fail_first: AtomicU32::new(2),
        permanent: false,
    });
    let mut settings = ConsumerSettings::new("scanner");
    settings.backoff = vec![Duration::from_millis(50), Duration::from_millis(100)];
    let consumer = bus.consumer(settings).await.unwrap();
    let stop = tokio_util_like_stop();
    let r = recorder.clone();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move {
            consumer
                .run(&*r, async move { stop.notified().await })
                .await
        }
    });
    let r2 = recorder.clone();
    wait_for(|| r2.seen.try_lock().map(|s| s.len() == 1).unwrap_or(false)).await;
    stop.notify_waiters();
    run.await.unwrap().unwrap();
    assert_eq!(recorder.seen.lock().await.len(), 1);
    assert_eq!(recorder.fail_first.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn exhausted_retries_stop_a_projection_loudly() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    bus.publish(&validated(RegistryId::new())).await.unwrap();
    let recorder = Recorder {
        seen: Mutex::new(vec![]),
        fail_first: AtomicU32::new(100),
        permanent: false,
    };
    let mut settings = ConsumerSettings::new("projector");
    settings.max_deliver = 3;
    settings.backoff = vec![Duration::from_millis(20)];
    settings.on_exhausted = Exhausted::Stop;
    let consumer = bus.consumer(settings).await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        consumer.run(&recorder, std::future::pending()),
    )
    .await
    .expect("the consumer stops by itself");
    let err = result.unwrap_err().to_string();
    assert!(err.contains("failed 3 times"), "{err}");
    assert!(recorder.seen.lock().await.is_empty());
}

#[tokio::test]
async fn replay_reads_in_order_up_to_the_last_sequence() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let mut sent = Vec::new();
    for _ in 0..50 {
        let e = validated(RegistryId::new());
        bus.publish(&e).await.unwrap();
        sent.push(e);
    }
    let mut replay = bus.replay(1, None, None).await.unwrap();
    assert_eq!(replay.until(), 50);
    // Published after the replay started: not part of it.
    bus.publish(&validated(RegistryId::new())).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = replay.next().await {
        let item = item.unwrap();
        assert_eq!(item.sequence as usize, got.len() + 1);
        got.push(item.event.unwrap());
    }
    assert_eq!(got, sent);
    // An empty range ends at once.
    let mut empty = bus.replay(100, Some(60), None).await.unwrap();
    assert!(empty.next().await.is_none());
}

#[tokio::test]
async fn binary_mode_messages_from_other_producers_are_read() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let env = validated(RegistryId::new()).with_actor("ci-pipeline über");
    let m = imagelib_events::binding::encode_binary(&env);
    let subject = bus.subject_of(&env);
    bus.publish_raw(&subject, m.headers, m.payload, &env.id.to_string())
        .await
        .unwrap();
    let mut replay = bus.replay(1, None, None).await.unwrap();
    let item = replay.next().await.unwrap().unwrap();
    assert_eq!(item.event.unwrap(), env);
}

#[tokio::test]
async fn a_consumer_with_backoff_resumes_where_its_owner_says() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    for _ in 0..5 {
        bus.publish(&validated(RegistryId::new())).await.unwrap();
    }
    let settings = |after: u64| {
        let mut s = ConsumerSettings::new("owner");
        s.backoff = vec![Duration::from_millis(100), Duration::from_secs(1)];
        s.max_deliver = 5;
        s.resume_after = Some(after);
        s
    };
    // The owner applied up to 3: the consumer starts at 4.
    let c = bus.consumer(settings(3)).await.unwrap();
    let batch = c.fetch(10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(batch.iter().map(|d| d.sequence).collect::<Vec<_>>(), [4, 5]);
    for d in &batch {
        d.double_ack().await.unwrap();
    }
    // Same settings and position after a restart: the same consumer, nothing redelivered.
    let c = bus.consumer(settings(5)).await.unwrap();
    assert!(
        c.fetch(10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    // The owner's database was emptied: everything again.
    let c = bus.consumer(settings(0)).await.unwrap();
    let batch = c.fetch(10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(batch.len(), 5);
    // A consumer created at 3 that never acked, then an owner at 0: starts over too.
    drop(batch);
    let c = bus.consumer(settings(3)).await.unwrap();
    drop(c);
    let c = bus.consumer(settings(0)).await.unwrap();
    assert_eq!(
        c.fetch(10, Duration::from_millis(500)).await.unwrap().len(),
        5
    );
}

#[tokio::test]
async fn publish_all_pipelines_in_order_and_deduplicates_each_event() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let id = RegistryId::new();
    let fact = |f: &str| validated(id).with_id(EventId::for_fact(f));
    let first = bus.publish(&fact("a")).await.unwrap();
    let receipts = bus
        .publish_all(&[fact("b"), fact("a"), fact("c")])
        .await
        .unwrap();
    let seqs: Vec<(u64, bool)> = receipts.iter().map(|r| (r.sequence, r.duplicate)).collect();
    assert_eq!(
        seqs,
        vec![(2, false), (first.sequence, true), (3, false)],
        "in order; the one already published is a duplicate"
    );
    assert_eq!(bus.last_sequence().await.unwrap(), 3);
    assert!(bus.publish_all(&[]).await.unwrap().is_empty());
    let mut replay = bus.replay(1, None, None).await.unwrap();
    let mut ids = Vec::new();
    while let Some(item) = replay.next().await {
        ids.push(item.unwrap().event.unwrap().id);
    }
    let expected: Vec<EventId> = ["a", "b", "c"]
        .iter()
        .map(|f| EventId::for_fact(f))
        .collect();
    assert_eq!(ids, expected);
}

/// Takes batches, refusing any with a poison event (whose lone handling fails once).
struct Batches {
    batches: Mutex<Vec<Vec<u64>>>,
    alone: Mutex<Vec<u64>>,
    poison: u64,
    poison_fails: AtomicU32,
}

impl Handler for Batches {
    async fn handle(&self, event: RecordedEvent) -> Result<(), HandlerError> {
        if event.sequence == self.poison && self.poison_fails.load(Ordering::SeqCst) > 0 {
            self.poison_fails.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::Transient("not yet".into()));
        }
        self.alone.lock().await.push(event.sequence);
        Ok(())
    }
}

impl BatchHandler for Batches {
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        if seqs.contains(&self.poison) {
            return Err(HandlerError::Transient("refused".into()));
        }
        self.batches.lock().await.push(seqs);
        Ok(())
    }
}

#[tokio::test]
async fn batches_are_handled_together_and_a_refused_one_event_by_event() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let id = RegistryId::new();
    let all: Vec<Envelope> = (0..6).map(|_| validated(id)).collect();
    bus.publish_all(&all).await.unwrap();
    let handler = Arc::new(Batches {
        batches: Mutex::new(vec![]),
        alone: Mutex::new(vec![]),
        poison: 4,
        poison_fails: AtomicU32::new(1),
    });
    let mut settings = ConsumerSettings::new("batched");
    settings.backoff = vec![Duration::from_millis(20)];
    let consumer = bus.consumer(settings).await.unwrap();
    let stop = tokio_util_like_stop();
    let h = handler.clone();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move {
            consumer
                .run_batched(&*h, 3, Duration::from_millis(10), async move {
                    stop.notified().await
                })
                .await
        }
    });
    let done = || async {
        let mut seen: Vec<u64> = handler.batches.lock().await.concat();
        seen.extend(handler.alone.lock().await.iter());
        seen.sort();
        seen
    };
    for _ in 0..100 {
        if done().await == vec![1, 2, 3, 4, 5, 6] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_waiters();
    run.await.unwrap().unwrap();
    assert_eq!(
        done().await,
        vec![1, 2, 3, 4, 5, 6],
        "each event handled once"
    );
    let batches = handler.batches.lock().await.clone();
    assert_eq!(batches[0], vec![1, 2, 3], "up to `max` together");
    assert!(
        handler.alone.lock().await.contains(&4),
        "the refused batch went event by event, the poison retried: {batches:?}"
    );
    assert_eq!(handler.poison_fails.load(Ordering::SeqCst), 0);
}

/// Records batches; events of `may_wait` subjects may wait for others.
struct Holding {
    batches: Mutex<Vec<(std::time::Instant, Vec<u64>)>>,
}

impl Handler for Holding {
    async fn handle(&self, event: RecordedEvent) -> Result<(), HandlerError> {
        self.batches
            .lock()
            .await
            .push((std::time::Instant::now(), vec![event.sequence]));
        Ok(())
    }
}

impl BatchHandler for Holding {
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        let seqs = events.iter().map(|e| e.sequence).collect();
        self.batches
            .lock()
            .await
            .push((std::time::Instant::now(), seqs));
        Ok(())
    }

    fn may_wait(&self, subject: &str) -> bool {
        subject.ends_with(".validated")
    }
}

#[tokio::test]
async fn events_that_may_wait_are_held_until_the_linger_or_an_event_that_may_not() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let id = RegistryId::new();
    let handler = Arc::new(Holding {
        batches: Mutex::new(vec![]),
    });
    let consumer = bus
        .consumer(ConsumerSettings::new("holding"))
        .await
        .unwrap();
    let stop = tokio_util_like_stop();
    let h = handler.clone();
    let linger = Duration::from_millis(800);
    let run = tokio::spawn({
        let stop = stop.clone();
        async move {
            consumer
                .run_batched(&*h, 100, linger, async move { stop.notified().await })
                .await
        }
    });
    // Three that may wait, a little apart: one batch, once the linger is over.
    let first = std::time::Instant::now();
    for _ in 0..3 {
        bus.publish(&validated(id)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..60 {
        if !handler.batches.lock().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let batches = handler.batches.lock().await;
        assert_eq!(batches.len(), 1, "{batches:?}");
        assert_eq!(batches[0].1, vec![1, 2, 3]);
        assert!(batches[0].0 - first >= Duration::from_millis(700));
    }
    // One that may wait, then one that may not: both at once, without the linger.
    bus.publish(&validated(id)).await.unwrap();
    let sent = std::time::Instant::now();
    bus.publish(&Envelope::new("test", RegistryRemoved { registry_id: id }))
        .await
        .unwrap();
    for _ in 0..60 {
        if handler.batches.lock().await.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.notify_waiters();
    run.await.unwrap().unwrap();
    let batches = handler.batches.lock().await;
    let seen: Vec<u64> = batches[1..].iter().flat_map(|(_, s)| s.clone()).collect();
    assert_eq!(seen, vec![4, 5], "{batches:?}");
    assert!(
        batches[1].0 - sent < Duration::from_millis(500),
        "not held for the linger"
    );
}

/// A consumer `name` running with a recorder, once it has handled `first` (published here).
struct Running {
    consumer: Arc<imagelib_events::bus::Consumer>,
    recorder: Arc<Recorder>,
    stop: Arc<tokio::sync::Notify>,
    run: tokio::task::JoinHandle<Result<(), imagelib_events::bus::BusError>>,
}

async fn running(bus: &EventBus, name: &str, first: &Envelope) -> Running {
    bus.publish(first).await.unwrap();
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(vec![]),
        fail_first: AtomicU32::new(0),
        permanent: false,
    });
    let consumer = Arc::new(bus.consumer(ConsumerSettings::new(name)).await.unwrap());
    let stop = tokio_util_like_stop();
    let run = tokio::spawn({
        let (stop, r, c) = (stop.clone(), recorder.clone(), consumer.clone());
        async move { c.run(&*r, async move { stop.notified().await }).await }
    });
    let r2 = recorder.clone();
    wait_for(|| r2.seen.try_lock().map(|s| s.len() == 1).unwrap_or(false)).await;
    assert_eq!(recorder.seen.lock().await.len(), 1);
    Running {
        consumer,
        recorder,
        stop,
        run,
    }
}

#[tokio::test]
async fn a_consumer_deleted_on_the_server_is_created_again_and_goes_on() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let first = validated(RegistryId::new());
    let Running {
        consumer,
        recorder,
        stop,
        run,
    } = running(&bus, "projector", &first).await;

    // Gone from the server under the running consumer (what a NATS cluster losing it
    // looks like to its owner); what is published next still arrives, once.
    let js = async_nats::jetstream::new(ts.client().await.unwrap());
    js.get_stream(&ts.name)
        .await
        .unwrap()
        .delete_consumer("projector")
        .await
        .unwrap();
    let second = validated(RegistryId::new());
    bus.publish(&second).await.unwrap();
    let r2 = recorder.clone();
    for _ in 0..3 {
        wait_for(|| r2.seen.try_lock().map(|s| s.len() >= 2).unwrap_or(false)).await;
    }
    let mut pending = u64::MAX;
    for _ in 0..40 {
        pending = consumer.pending().await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0, "caught up");
    stop.notify_waiters();
    run.await.unwrap().unwrap();
    let seen = recorder.seen.lock().await;
    let envelopes: Vec<_> = seen.iter().map(|e| e.envelope.clone()).collect();
    assert_eq!(
        envelopes,
        vec![first, second],
        "each event handled once, in order"
    );
}

#[tokio::test]
async fn pending_recreates_a_consumer_that_is_gone() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    bus.publish(&validated(RegistryId::new())).await.unwrap();
    let consumer = bus
        .consumer(ConsumerSettings::new("watched"))
        .await
        .unwrap();
    assert_eq!(consumer.pending().await.unwrap(), 1);
    let js = async_nats::jetstream::new(ts.client().await.unwrap());
    let stream = js.get_stream(&ts.name).await.unwrap();
    stream.delete_consumer("watched").await.unwrap();
    assert_eq!(
        consumer.pending().await.unwrap(),
        1,
        "created again from the start: it handled nothing yet"
    );
    assert!(stream.consumer_info("watched").await.is_ok());
}

#[tokio::test]
async fn a_peer_that_recreates_the_consumer_at_its_own_position_is_not_raced() {
    let ts = TestStream::new();
    let bus = bus(&ts).await;
    let first = validated(RegistryId::new());
    let Running {
        recorder,
        stop,
        run,
        ..
    } = running(&bus, "shared", &first).await;

    // A peer starting on an empty database deletes the consumer and, a moment later,
    // creates it again from the start of the stream: the running owner finds it gone in
    // between, and must take the peer's consumer instead of creating one at its own
    // position (which would leave the peer's creation refused, or the peer's view empty).
    let js = async_nats::jetstream::new(ts.client().await.unwrap());
    let stream = js.get_stream(&ts.name).await.unwrap();
    stream.delete_consumer("shared").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let created = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("shared".into()),
            filter_subject: format!("{}.>", ts.prefix),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await;
    assert!(created.is_ok(), "the peer's creation: {created:?}");
    let r2 = recorder.clone();
    for _ in 0..3 {
        wait_for(|| r2.seen.try_lock().map(|s| s.len() >= 2).unwrap_or(false)).await;
    }
    let info = stream.consumer_info("shared").await.unwrap();
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::All,
        "still the peer's consumer"
    );
    stop.notify_waiters();
    run.await.unwrap().unwrap();
    // The peer's consumer starts at the beginning: the owner sharing it gets the first
    // event again (handlers are idempotent), and loses nothing.
    let seen = recorder.seen.lock().await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|e| e.envelope == first));
}
