//! JetStream plumbing: the stream, publishing, aggregate appends, durable consumers,
//! dead-lettering and ordered replay.
//!
//! The stream is the system's source of truth, so every producer goes through
//! [`EventBus::publish`] (acknowledged, retried with the same `Nats-Msg-Id`, so a retry
//! never appends twice) or [`EventBus::append`] (the same plus optimistic concurrency on
//! the aggregate). Every consumer goes through [`Consumer`], which decides ack, nak with
//! backoff, progress or term from the handler's error kind and dead-letters what it
//! cannot parse instead of wedging or dropping it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    context::PublishErrorKind,
    message::AckKind,
    message::PublishMessage,
    stream,
};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::binding::{self, EncodedMessage};
use crate::envelope::{DecodeError, Envelope};
use crate::event::Aggregate;
use crate::trace::TraceParent;

/// Where the stream lives and how it is named. Tests give each run its own name and
/// prefix so that they never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub name: String,
    pub subject_prefix: String,
    pub replicas: usize,
    pub duplicate_window: Duration,
    /// The stream's byte limit. Appends beyond it are refused (`DiscardNew`): the log is
    /// the source of truth, so nothing old is ever dropped to make room. NATS reserves
    /// this much file storage per stream up front.
    pub max_bytes: i64,
}

/// The byte limit [`StreamSettings::default`] and the test suite use: small, because one
/// test server holds many streams at once and reserves `max_bytes` for each.
pub const DEFAULT_TEST_MAX_BYTES: i64 = 256 * 1024 * 1024;

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: "IMAGELIB".into(),
            subject_prefix: "imagelib".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_bytes: DEFAULT_TEST_MAX_BYTES,
        }
    }
}

impl StreamSettings {
    pub fn new(name: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        StreamSettings {
            name: name.into(),
            subject_prefix: subject_prefix.into(),
            ..Default::default()
        }
    }

    /// `<prefix>.<aggregate>.<id>.<event>`.
    pub fn subject(&self, aggregate: Aggregate, id: uuid::Uuid, event: &str) -> String {
        format!(
            "{}.{}.{}.{}",
            self.subject_prefix,
            aggregate.as_str(),
            id.hyphenated(),
            event
        )
    }

    /// `<prefix>.<aggregate>.<id>.*`: every event of one aggregate instance.
    pub fn aggregate_filter(&self, aggregate: Aggregate, id: uuid::Uuid) -> String {
        format!(
            "{}.{}.{}.*",
            self.subject_prefix,
            aggregate.as_str(),
            id.hyphenated()
        )
    }

    /// `<prefix>.<aggregate>.>`.
    pub fn aggregate_type_filter(&self, aggregate: Aggregate) -> String {
        format!("{}.{}.>", self.subject_prefix, aggregate.as_str())
    }

    /// `<prefix>.>`: everything in the stream.
    pub fn all_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// `<prefix>.dlq.<consumer>`.
    pub fn dlq_subject(&self, consumer: &str) -> String {
        format!("{}.dlq.{}", self.subject_prefix, consumer)
    }

    pub fn is_dlq_subject(&self, subject: &str) -> bool {
        subject
            .strip_prefix(&self.subject_prefix)
            .is_some_and(|rest| rest.starts_with(".dlq."))
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some("imagelib: the append-only event log (source of truth)".into()),
            subjects: vec![self.all_subjects()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            allow_direct: true,
            // Append-only: no message deletes, no purges (NATS refuses to lift either
            // flag once set), and a full stream refuses appends rather than dropping
            // history.
            deny_delete: true,
            deny_purge: true,
            discard: stream::DiscardPolicy::New,
            max_bytes: self.max_bytes,
            ..Default::default()
        }
    }
}

/// Failures talking to JetStream.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Carries no credential: URLs are redacted.
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    #[error("stream `{stream}`: {message}")]
    Stream { stream: String, message: String },
    #[error("publish to `{subject}` failed: {message}")]
    Publish { subject: String, message: String },
    #[error(
        "concurrent change of `{subject}`: expected last sequence {expected:?}, another writer got there first"
    )]
    Conflict {
        subject: String,
        expected: Option<u64>,
    },
    #[error("consumer `{consumer}`: {message}")]
    Consumer { consumer: String, message: String },
}

/// The acknowledgement of an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub sequence: u64,
    /// JetStream recognised the `Nats-Msg-Id` within the duplicate window: nothing new
    /// was appended.
    pub duplicate: bool,
}

/// What an aggregate must look like for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No check.
    Any,
    /// The aggregate has no events yet.
    NoEvents,
    /// The aggregate's last event is at this stream sequence.
    LastSequence(u64),
}

/// An event read back from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub sequence: u64,
    pub subject: String,
    pub envelope: Envelope,
}

/// A handle on the stream for one service.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: Arc<StreamSettings>,
    /// Server ≥ 2.11 checks expected sequences across a subject filter.
    aggregate_wide_expect: bool,
}

const PUBLISH_ATTEMPTS: u32 = 5;

impl EventBus {
    /// Connect to NATS (authenticated as `nats` says, with reconnects) and bind to the
    /// stream (not yet ensured).
    pub async fn connect(
        nats: &crate::connect::NatsConnect,
        name: &str,
        settings: StreamSettings,
    ) -> Result<Self, BusError> {
        let client = nats.connect(name).await?;
        Ok(Self::from_client(client, settings))
    }

    pub fn from_client(client: async_nats::Client, settings: StreamSettings) -> Self {
        let version = client.server_info().version;
        let js = jetstream::new(client.clone());
        EventBus {
            aggregate_wide_expect: version_at_least(&version, (2, 11)),
            client,
            js,
            settings: Arc::new(settings),
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Create the stream, or bring an existing one's config in line; idempotent.
    pub async fn ensure_stream(&self) -> Result<stream::Info, BusError> {
        let wanted = self.settings.stream_config();
        let err = |message: String| BusError::Stream {
            stream: self.settings.name.clone(),
            message,
        };
        match self.js.get_stream(&self.settings.name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| err(e.to_string()))?.clone();
                let c = &info.config;
                let max_bytes = safe_max_bytes(c.max_bytes, wanted.max_bytes, info.state.bytes);
                if max_bytes != wanted.max_bytes {
                    tracing::error!(
                        stream = %self.settings.name,
                        configured = wanted.max_bytes,
                        held = info.state.bytes,
                        kept = max_bytes,
                        "IMAGELIB_STREAM_MAX_BYTES is below what the stream holds: not applied, since NATS would delete the oldest events to fit and the stream is the source of truth; raise it, or lower the stream's limit by hand once its events are archived"
                    );
                }
                let differs = c.subjects != wanted.subjects
                    || c.duplicate_window != wanted.duplicate_window
                    || c.num_replicas != wanted.num_replicas
                    || c.allow_direct != wanted.allow_direct
                    || !c.deny_delete
                    || !c.deny_purge
                    || c.discard != wanted.discard
                    || c.max_bytes != max_bytes;
                if differs {
                    // A stream made by an older version gains the deny flags here; they are
                    // never lifted (NATS refuses that anyway).
                    let mut updated = c.clone();
                    updated.subjects = wanted.subjects;
                    updated.duplicate_window = wanted.duplicate_window;
                    updated.num_replicas = wanted.num_replicas;
                    updated.allow_direct = wanted.allow_direct;
                    updated.deny_delete = true;
                    updated.deny_purge = true;
                    updated.discard = wanted.discard;
                    updated.max_bytes = max_bytes;
                    match self.js.update_stream(updated).await {
                        Ok(info) => Ok(info),
                        // On a closed NATS only the stream's owner (catalog-projector, or
                        // `imagelib serve`) may reconfigure it; the others use it as it is.
                        Err(e) => {
                            warn!(stream = %self.settings.name, error = %e, "the stream's configuration differs from this process's and could not be updated; using it as it is (its owner, catalog-projector or imagelib serve, brings it in line)");
                            Ok(info)
                        }
                    }
                } else {
                    Ok(info)
                }
            }
            Err(_) => match self.js.create_stream(wanted).await {
                Ok(mut s) => Ok(s.info().await.map_err(|e| err(e.to_string()))?.clone()),
                // Another process created it between our get and create.
                Err(_) => {
                    let mut s = self
                        .js
                        .get_stream(&self.settings.name)
                        .await
                        .map_err(|e| err(e.to_string()))?;
                    Ok(s.info().await.map_err(|e| err(e.to_string()))?.clone())
                }
            },
        }
    }

    /// The stream's last sequence: what a projection is caught up to when it has applied it.
    pub async fn last_sequence(&self) -> Result<u64, BusError> {
        let mut s = self.stream().await?;
        let info = s.info().await.map_err(|e| BusError::Stream {
            stream: self.settings.name.clone(),
            message: e.to_string(),
        })?;
        Ok(info.state.last_sequence)
    }

    async fn stream(&self) -> Result<stream::Stream, BusError> {
        self.js
            .get_stream(&self.settings.name)
            .await
            .map_err(|e| BusError::Stream {
                stream: self.settings.name.clone(),
                message: e.to_string(),
            })
    }

    /// The subject an envelope is published on.
    pub fn subject_of(&self, envelope: &Envelope) -> String {
        let p = &envelope.payload;
        self.settings
            .subject(p.aggregate(), p.aggregate_id(), p.name())
    }

    /// Publish a fact, waiting for the stream's acknowledgement. A timed-out attempt is
    /// retried with the same `Nats-Msg-Id`, so the fact lands once.
    pub async fn publish(&self, envelope: &Envelope) -> Result<Receipt, BusError> {
        self.append(envelope, Expect::Any).await
    }

    /// Publishes several facts pipelined: a window of messages is sent before any of
    /// their acknowledgements is awaited, so `n` events cost about one round trip instead
    /// of `n`. Each is published as [`Self::publish`] would (its own `Nats-Msg-Id`; a
    /// message whose acknowledgement does not come is retried alone under that id, so it
    /// still lands once). The receipts are in the order given; events sent in one window
    /// reach the stream in that order.
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<Vec<Receipt>, BusError> {
        /// Messages in flight per window: well under the context's acknowledgement
        /// permits (5,000), which the futures below hold until awaited.
        const WINDOW: usize = 256;
        let span = info_span!(
            "publish batch",
            otel.name = "send batch",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.batch.message_count = envelopes.len(),
        );
        async move {
            let mut receipts = Vec::with_capacity(envelopes.len());
            for window in envelopes.chunks(WINDOW) {
                let mut sent = Vec::with_capacity(window.len());
                for envelope in window {
                    let subject = self.subject_of(envelope);
                    let traced;
                    let envelope = match crate::trace::current() {
                        Some(tp) if envelope.traceparent != Some(tp) => {
                            traced = envelope.clone().with_traceparent(Some(tp));
                            &traced
                        }
                        _ => envelope,
                    };
                    let EncodedMessage { headers, payload } =
                        binding::encode_structured(envelope);
                    let publish = PublishMessage::build()
                        .payload(payload)
                        .headers(headers)
                        .message_id(envelope.id.to_string());
                    let ack = self
                        .js
                        .send_publish(subject.clone(), publish.clone())
                        .await;
                    sent.push((subject, publish, ack));
                }
                for (subject, publish, ack) in sent {
                    let acked = match ack {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                    let receipt = match acked {
                        Ok(ack) => Receipt {
                            sequence: ack.sequence,
                            duplicate: ack.duplicate,
                        },
                        Err(e) => {
                            warn!(%subject, error = %e, "pipelined publish not acknowledged, retrying it alone with the same Nats-Msg-Id");
                            self.send_with_retries(&subject, publish, Expect::Any)
                                .await?
                        }
                    };
                    receipts.push(receipt);
                }
            }
            Ok(receipts)
        }
        .instrument(span)
        .await
    }

    /// Publish a fact after checking the aggregate is where the caller last saw it.
    pub async fn append(&self, envelope: &Envelope, expect: Expect) -> Result<Receipt, BusError> {
        let subject = self.subject_of(envelope);
        let span = info_span!(
            "publish",
            otel.name = %format!("send {}", envelope.event_type()),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.message.id = %envelope.id,
            cloudevents.event_type = envelope.event_type(),
        );
        // The current span's context wins: it is the caller's own child of whatever the
        // envelope was created under.
        let traced;
        let envelope = match crate::trace::current() {
            Some(tp) if envelope.traceparent != Some(tp) => {
                traced = envelope.clone().with_traceparent(Some(tp));
                &traced
            }
            _ => envelope,
        };
        async move {
            let EncodedMessage { headers, payload } = binding::encode_structured(envelope);
            let mut publish = PublishMessage::build()
                .payload(payload)
                .headers(headers)
                .message_id(envelope.id.to_string());
            match expect {
                Expect::Any => {}
                Expect::NoEvents | Expect::LastSequence(_) => {
                    let expected = match expect {
                        Expect::LastSequence(s) => s,
                        _ => 0,
                    };
                    let p = &envelope.payload;
                    let filter = self
                        .settings
                        .aggregate_filter(p.aggregate(), p.aggregate_id());
                    if self.aggregate_wide_expect {
                        publish = publish.expected_last_subject_sequence(expected).header(
                            "Nats-Expected-Last-Subject-Sequence-Subject",
                            filter.as_str(),
                        );
                    } else {
                        return self
                            .append_compare_and_set(&subject, &filter, publish, expected)
                            .await;
                    }
                }
            }
            self.send_with_retries(&subject, publish, expect).await
        }
        .instrument(span)
        .await
    }

    /// Aggregate-wide optimistic concurrency for servers before 2.11, whose expected
    /// subject sequence covers one exact subject and ignores `0`: read the stream's last
    /// sequence, check the aggregate, and publish only if nothing at all was appended
    /// since (`Nats-Expected-Last-Sequence`). Unrelated appends in between make the
    /// attempt fail harmlessly and it is retried; only a change of the aggregate itself is
    /// a conflict.
    async fn append_compare_and_set(
        &self,
        subject: &str,
        aggregate_filter: &str,
        publish: PublishMessage,
        expected: u64,
    ) -> Result<Receipt, BusError> {
        const ATTEMPTS: u32 = 50;
        for attempt in 0..ATTEMPTS {
            let stream_last = self.last_sequence().await?;
            let aggregate_last = self.last_sequence_of(aggregate_filter).await?.unwrap_or(0);
            if aggregate_last != expected {
                return Err(BusError::Conflict {
                    subject: aggregate_filter.to_owned(),
                    expected: Some(expected),
                });
            }
            let attempt_msg = publish.clone().expected_last_sequence(stream_last);
            match self
                .send_with_retries(subject, attempt_msg, Expect::Any)
                .await
            {
                Err(BusError::Conflict { .. }) => {
                    let jitter = rand::random::<u64>() % (5 * (u64::from(attempt) + 1));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                other => return other,
            }
        }
        Err(BusError::Conflict {
            subject: aggregate_filter.to_owned(),
            expected: Some(expected),
        })
    }

    async fn send_with_retries(
        &self,
        subject: &str,
        publish: PublishMessage,
        expect: Expect,
    ) -> Result<Receipt, BusError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self
                .js
                .send_publish(subject.to_owned(), publish.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => {
                    return Ok(Receipt {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(BusError::Conflict {
                        subject: subject.to_owned(),
                        expected: match expect {
                            Expect::LastSequence(s) => Some(s),
                            Expect::NoEvents => Some(0),
                            Expect::Any => None,
                        },
                    });
                }
                Err(e)
                    if attempt < PUBLISH_ATTEMPTS
                        && matches!(
                            e.kind(),
                            PublishErrorKind::TimedOut
                                | PublishErrorKind::BrokenPipe
                                | PublishErrorKind::StreamNotFound
                                | PublishErrorKind::Other
                        ) =>
                {
                    let delay = Duration::from_millis(50 * 2u64.pow(attempt));
                    warn!(%subject, attempt, error = %e, "publish not acknowledged, retrying with the same Nats-Msg-Id");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(BusError::Publish {
                        subject: subject.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// The stream sequence of the last message on `subject` (which may be a filter).
    pub async fn last_sequence_of(&self, subject: &str) -> Result<Option<u64>, BusError> {
        let stream = self.stream().await?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(BusError::Stream {
                stream: self.settings.name.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Publish a raw message to a subject of the stream (used for dead letters and by
    /// `imagelib events publish` for externally built events).
    pub async fn publish_raw(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
        msg_id: &str,
    ) -> Result<Receipt, BusError> {
        let publish = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(msg_id);
        self.send_with_retries(subject, publish, Expect::Any).await
    }

    /// Send a message a consumer cannot use to `<prefix>.dlq.<consumer>`, with the
    /// original subject, sequence and the error in headers.
    pub async fn dead_letter(
        &self,
        consumer: &str,
        original_subject: &str,
        sequence: u64,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        error: &str,
    ) -> Result<Receipt, BusError> {
        let mut h = headers.cloned().unwrap_or_default();
        h.insert("Imagelib-Dlq-Consumer", consumer);
        h.insert("Imagelib-Dlq-Subject", original_subject);
        h.insert("Imagelib-Dlq-Sequence", sequence.to_string().as_str());
        let error_value: String = error
            .chars()
            .filter(|c| !c.is_control())
            .take(1000)
            .collect();
        h.insert(
            "Imagelib-Dlq-Error",
            HeaderValue::from(error_value.as_str()),
        );
        // Deduplicated per consumer and original sequence: a redelivery dead-letters once.
        let msg_id = format!("dlq:{consumer}:{}:{sequence}", self.settings.name);
        let receipt = self
            .publish_raw(&self.settings.dlq_subject(consumer), h, payload, &msg_id)
            .await?;
        if !receipt.duplicate {
            consumer_metrics::dead_lettered(consumer);
        }
        Ok(receipt)
    }

    /// A durable pull consumer (created or updated to `settings`).
    pub async fn consumer(&self, settings: ConsumerSettings) -> Result<Consumer, BusError> {
        let stream = self.stream().await?;
        let filter_subject = settings
            .filter_subject
            .clone()
            .unwrap_or_else(|| self.settings.all_subjects());
        let deliver_policy = match settings.resume_after {
            Some(after) => DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            None => DeliverPolicy::All,
        };
        let config = pull::Config {
            durable_name: Some(settings.durable_name.clone()),
            description: Some(format!("imagelib consumer {}", settings.durable_name)),
            ack_policy: AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: settings.max_deliver,
            backoff: settings.backoff.clone(),
            filter_subject,
            deliver_policy,
            max_ack_pending: settings.max_ack_pending,
            ..Default::default()
        };
        let recreate_config = config.clone();
        let err = |message: String| BusError::Consumer {
            consumer: settings.durable_name.clone(),
            message,
        };
        let consumer = match stream
            .get_consumer::<pull::Config>(&settings.durable_name)
            .await
        {
            Ok(existing)
                if settings.resume_after.is_some_and(|after| {
                    // A consumer that never acked reports an ack floor of 0 whatever its
                    // start; the delivered position tells where it really is.
                    let i = existing.cached_info();
                    i.ack_floor.stream_sequence != after || i.delivered.stream_sequence != after
                }) =>
            {
                debug!(consumer = %settings.durable_name, "consumer position differs from its owner's; recreating");
                stream
                    .delete_consumer(&settings.durable_name)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                get_or_create_retrying(&stream, &settings.durable_name, config)
                    .await
                    .map_err(err)?
            }
            Ok(existing) => {
                let c = &existing.cached_info().config;
                // With a backoff list the server reports its first step as the ack wait.
                let ack_wait = config.backoff.first().copied().unwrap_or(config.ack_wait);
                if c.ack_wait != ack_wait
                    || c.max_deliver != config.max_deliver
                    || c.backoff != config.backoff
                    || c.filter_subject != config.filter_subject
                    || c.max_ack_pending != config.max_ack_pending
                {
                    // The start position cannot be updated; keep the consumer's own.
                    let config = pull::Config {
                        deliver_policy: c.deliver_policy,
                        ..config
                    };
                    self.js
                        .update_consumer_on_stream(config, &self.settings.name)
                        .await
                        .map_err(|e| err(e.to_string()))?;
                    stream
                        .get_consumer::<pull::Config>(&settings.durable_name)
                        .await
                        .map_err(|e| err(e.to_string()))?
                } else {
                    existing
                }
            }
            Err(_) => get_or_create_retrying(&stream, &settings.durable_name, config)
                .await
                .map_err(err)?,
        };
        consumer_metrics::started(&settings.durable_name);
        Ok(Consumer {
            bus: self.clone(),
            inner: std::sync::Mutex::new(consumer),
            config: recreate_config,
            applied: AtomicU64::new(settings.resume_after.unwrap_or(0)),
            settings,
        })
    }

    /// Replay the stream in order from `start_sequence` up to and including
    /// `until_sequence` (the stream's last sequence when `None`, taken now). Used for
    /// rebuilds: no durable state, no acks, gaps from other subjects are skipped.
    pub async fn replay(
        &self,
        start_sequence: u64,
        until_sequence: Option<u64>,
        filter_subject: Option<String>,
    ) -> Result<Replay, BusError> {
        let until = match until_sequence {
            Some(s) => s,
            None => self.last_sequence().await?,
        };
        let stream = self.stream().await?;
        let err = |message: String| BusError::Consumer {
            consumer: "replay".into(),
            message,
        };
        let messages = if until < start_sequence.max(1) {
            None
        } else {
            let consumer = stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start_sequence.max(1),
                    },
                    filter_subject: filter_subject.unwrap_or_else(|| self.settings.all_subjects()),
                    ..Default::default()
                })
                .await
                .map_err(|e| err(e.to_string()))?;
            Some(consumer.messages().await.map_err(|e| err(e.to_string()))?)
        };
        Ok(Replay {
            messages,
            until,
            settings: self.settings.clone(),
        })
    }
}

/// The byte limit an existing stream gets: the configured one, unless the stream holds
/// more than it allows. NATS applies a lowered limit by deleting the oldest messages,
/// whatever the discard policy and the deny-purge flag, so a process started with a smaller
/// `IMAGELIB_STREAM_MAX_BYTES` (a one-off `rebuild` with the default, a mistyped value)
/// would destroy the start of the log; the stream keeps its current limit instead. A
/// limit that still holds everything may be lowered; raising one is always applied.
fn safe_max_bytes(current: i64, wanted: i64, held: u64) -> i64 {
    let fits = wanted < 0 || u64::try_from(wanted).is_ok_and(|w| held <= w);
    if fits { wanted } else { current }
}

fn version_at_least(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut it = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// An ordered read of the stream, ending at the sequence that was last when it started.
pub struct Replay {
    messages: Option<pull::Ordered>,
    until: u64,
    settings: Arc<StreamSettings>,
}

/// One message of a replay: its position, and the event or why it is not one.
#[derive(Debug)]
pub struct ReplayItem {
    pub sequence: u64,
    pub subject: String,
    pub event: Result<Envelope, DecodeError>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// The sequence this replay ends at.
    pub fn until(&self) -> u64 {
        self.until
    }

    /// The next message, `None` once `until` is reached. Dead letters are skipped.
    pub async fn next(&mut self) -> Option<Result<ReplayItem, BusError>> {
        Some(self.next_undecoded().await?.map(ReplayMessage::decode))
    }

    /// [`Replay::next`] without decoding the event: for a caller that decodes on other
    /// threads (decoding costs far more than receiving).
    pub async fn next_undecoded(&mut self) -> Option<Result<ReplayMessage, BusError>> {
        loop {
            let messages = self.messages.as_mut()?;
            let msg = match messages.next().await? {
                Ok(m) => m,
                Err(e) => {
                    return Some(Err(BusError::Consumer {
                        consumer: "replay".into(),
                        message: e.to_string(),
                    }));
                }
            };
            let Ok(info) = msg.info() else { continue };
            let sequence = info.stream_sequence;
            if sequence >= self.until {
                self.messages = None;
            }
            if sequence > self.until {
                return None;
            }
            let subject = msg.subject.to_string();
            if self.settings.is_dlq_subject(&subject) {
                continue;
            }
            let msg = msg.split().0;
            return Some(Ok(ReplayMessage {
                sequence,
                subject,
                headers: msg.headers,
                payload: msg.payload,
            }));
        }
    }
}

/// A message of a replay, not decoded yet ([`Replay::next_undecoded`]).
#[derive(Debug)]
pub struct ReplayMessage {
    pub sequence: u64,
    pub subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
}

impl ReplayMessage {
    pub fn decode(self) -> ReplayItem {
        let event = binding::decode_envelope(self.headers.as_ref(), &self.payload);
        ReplayItem {
            sequence: self.sequence,
            subject: self.subject,
            event,
        }
    }
}

/// How a durable consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub durable_name: String,
    /// Defaults to every subject of the stream.
    pub filter_subject: Option<String>,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    /// Redelivery delays for naks without an explicit delay (length ≤ `max_deliver`).
    pub backoff: Vec<Duration>,
    pub max_ack_pending: i64,
    /// What to do once a message still fails on its last delivery.
    pub on_exhausted: Exhausted,
    /// The stream sequence the consumer's owner has durably applied (its projection's
    /// recorded position). The server-side consumer is recreated to resume right after it
    /// when its ack floor says otherwise, e.g. after the projection's database was
    /// restored or rebuilt empty. `None` lets the server-side position rule.
    pub resume_after: Option<u64>,
}

/// What a consumer does with a message that failed on every delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Dead-letter it and go on.
    DeadLetter,
    /// Stop the consumer with an error: a projection that skipped an event would be wrong
    /// forever, so it must fail loudly instead.
    Stop,
}

impl ConsumerSettings {
    pub fn new(durable_name: impl Into<String>) -> Self {
        ConsumerSettings {
            durable_name: durable_name.into(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![],
            max_ack_pending: 1000,
            on_exhausted: Exhausted::DeadLetter,
            resume_after: None,
        }
    }

    pub fn filter(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = Some(subject.into());
        self
    }
}

/// Why a handler could not take an event; decides what the consumer tells the server.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (a database or network hiccup): `Nak` with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// This event can never be handled (it contradicts the handler's state in a way a
    /// retry cannot fix): dead-letter it and `Term`.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A message delivered to a durable consumer.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    pub sequence: u64,
    pub delivered: i64,
    pub subject: String,
}

impl Delivery {
    fn new(message: jetstream::Message) -> Option<Self> {
        let info = message.info().ok()?;
        let (sequence, delivered) = (info.stream_sequence, info.delivered);
        Some(Delivery {
            subject: message.subject.to_string(),
            message,
            sequence,
            delivered,
        })
    }

    pub fn decode(&self) -> Result<Envelope, DecodeError> {
        binding::decode_envelope(self.message.headers.as_ref(), &self.message.payload)
    }

    pub fn headers(&self) -> Option<&HeaderMap> {
        self.message.headers.as_ref()
    }

    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    /// The W3C trace context the producer sent, from the header or the CloudEvent.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.message
            .headers
            .as_ref()
            .and_then(|h| h.get(binding::HEADER_TRACEPARENT))
            .and_then(|v| v.as_str().parse().ok())
    }

    pub async fn ack(&self) -> Result<(), BusError> {
        self.ack_with(AckKind::Ack).await
    }

    /// Acknowledge and wait for the server to confirm (for exactly-once effects, after a
    /// commit).
    pub async fn double_ack(&self) -> Result<(), BusError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| BusError::Consumer {
                consumer: String::new(),
                message: e.to_string(),
            })
    }

    pub async fn ack_with(&self, kind: AckKind) -> Result<(), BusError> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|e| BusError::Consumer {
                consumer: String::new(),
                message: e.to_string(),
            })
    }
}

/// The last observed usage of each stream this process watches, for the stream gauges.
#[derive(Debug, Default, Clone, Copy)]
struct StreamUsage {
    bytes: u64,
    messages: u64,
    max_bytes: i64,
}

fn watched_streams() -> &'static usage::Watched {
    static W: std::sync::OnceLock<usage::Watched> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        let meter = opentelemetry::global::meter("imagelib");
        let attrs = |name: &str| {
            [opentelemetry::KeyValue::new(
                "messaging.destination.name",
                name.to_owned(),
            )]
        };
        let bytes = meter
            .u64_observable_gauge("imagelib.stream.bytes")
            .with_unit("By")
            .with_description("Bytes stored in the event stream")
            .with_callback(move |o| {
                for (name, u) in usage::snapshot() {
                    o.observe(u.bytes, &attrs(&name));
                }
            })
            .build();
        let messages = meter
            .u64_observable_gauge("imagelib.stream.messages")
            .with_unit("{message}")
            .with_description("Messages stored in the event stream")
            .with_callback(move |o| {
                for (name, u) in usage::snapshot() {
                    o.observe(u.messages, &attrs(&name));
                }
            })
            .build();
        let max_bytes = meter
            .i64_observable_gauge("imagelib.stream.max_bytes")
            .with_unit("By")
            .with_description(
                "The event stream's byte limit (appends are refused beyond it; -1 = none)",
            )
            .with_callback(move |o| {
                for (name, u) in usage::snapshot() {
                    o.observe(u.max_bytes, &attrs(&name));
                }
            })
            .build();
        usage::Watched {
            _gauges: (bytes, messages, max_bytes),
        }
    })
}

/// The watched streams' usage behind a std mutex (never held across an await).
mod usage {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::StreamUsage;

    pub(super) struct Watched {
        pub(super) _gauges: (
            opentelemetry::metrics::ObservableGauge<u64>,
            opentelemetry::metrics::ObservableGauge<u64>,
            opentelemetry::metrics::ObservableGauge<i64>,
        ),
    }

    impl std::fmt::Debug for Watched {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Watched")
        }
    }

    static USAGE: Mutex<BTreeMap<String, StreamUsage>> = Mutex::new(BTreeMap::new());

    pub(super) fn snapshot() -> Vec<(String, StreamUsage)> {
        USAGE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// True when the stream was not watched yet.
    pub(super) fn set(name: &str, usage: StreamUsage) -> bool {
        USAGE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), usage)
            .is_none()
    }

    pub(super) fn contains(name: &str) -> bool {
        USAGE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }
}

impl EventBus {
    /// Export the stream's bytes, messages and byte limit as gauges
    /// (`imagelib.stream.bytes`, `imagelib.stream.messages`, `imagelib.stream.max_bytes`),
    /// refreshed from stream info every `every`. Once per stream and process; the owner of
    /// the stream (catalog-projector, in `imagelib serve` too) calls it, so one series
    /// exists per stream.
    pub fn watch_stream_usage(&self, every: Duration) {
        if usage::contains(&self.settings.name) {
            return;
        }
        watched_streams();
        usage::set(
            &self.settings.name,
            StreamUsage {
                max_bytes: self.settings.max_bytes,
                ..Default::default()
            },
        );
        let bus = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match bus.stream().await {
                    Ok(mut s) => match s.info().await {
                        Ok(info) => {
                            usage::set(
                                &bus.settings.name,
                                StreamUsage {
                                    bytes: info.state.bytes,
                                    messages: info.state.messages,
                                    max_bytes: info.config.max_bytes,
                                },
                            );
                        }
                        Err(e) => debug!(error = %e, "stream info for the usage gauges"),
                    },
                    Err(e) => debug!(error = %e, "stream for the usage gauges"),
                }
            }
        });
    }
}

/// `get_or_create_consumer`, retried while a NATS cluster answers "consumer name already
/// in use" (10013): a deletion, or the consumer itself, has not reached every node through
/// the meta leader yet (a node just restarted, a consumer just deleted). Bounded: 5 s.
async fn get_or_create_retrying(
    stream: &stream::Stream,
    name: &str,
    config: pull::Config,
) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
    let mut attempt = 0;
    loop {
        match stream.get_or_create_consumer(name, config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 50 && e.to_string().contains("10013") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How long a consumer found gone waits for a peer to create it before creating it itself.
const RECREATE_GRACE: Duration = Duration::from_secs(2);

/// Whether a JetStream error says the consumer does not exist (API error 10014).
fn consumer_gone(message: &str) -> bool {
    message.contains("10014") || message.contains("consumer not found")
}

/// Consumer metrics recorded where consumers work: the apply rate (by outcome), the
/// dead letters and the lag, each by `messaging.consumer.group.name`. Public so that a
/// consumer with a loop of its own (catalog-projector's batches) records the same series.
pub mod consumer_metrics {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};

    use opentelemetry::KeyValue;
    use opentelemetry::metrics::{Counter, ObservableGauge};

    fn group(consumer: &str) -> KeyValue {
        KeyValue::new("messaging.consumer.group.name", consumer.to_owned())
    }

    /// `n` events handled by `consumer` with `outcome` (`applied`, `retried`,
    /// `dead_lettered`, `failed`).
    pub fn processed(consumer: &str, outcome: &'static str, n: u64) {
        super::processed_counter().add(n, &[group(consumer), KeyValue::new("outcome", outcome)]);
    }

    fn dead_lettered_counter() -> &'static Counter<u64> {
        static C: OnceLock<Counter<u64>> = OnceLock::new();
        C.get_or_init(|| {
            opentelemetry::global::meter("imagelib")
                .u64_counter("imagelib.events.dead_lettered")
                .with_unit("{message}")
                .with_description("Messages a consumer gave up on, sent to its dead-letter subject")
                .build()
        })
    }

    /// One message sent to `consumer`'s dead-letter subject.
    pub fn dead_lettered(consumer: &str) {
        dead_lettered_counter().add(1, &[group(consumer)]);
    }

    /// `consumer` started: its dead-letter series starts at zero, so "nothing
    /// dead-lettered" is a value and not a missing series (OpenTelemetry exports a series
    /// only once something was recorded on it). Adding zero counts nothing.
    pub fn started(consumer: &str) {
        dead_lettered_counter().add(0, &[group(consumer)]);
    }

    static LAG: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

    /// The lag of `consumer` as just observed: the stream's last sequence minus the last
    /// sequence it applied (0 when nothing is waiting for it).
    pub fn observe_lag(consumer: &str, lag: u64) {
        static G: OnceLock<ObservableGauge<u64>> = OnceLock::new();
        G.get_or_init(|| {
            opentelemetry::global::meter("imagelib")
                .u64_observable_gauge("imagelib.projector.lag")
                .with_unit("{event}")
                .with_description(
                    "Events in the stream a consumer has not applied yet: stream last \
                     sequence minus applied sequence, observed by the consumer",
                )
                .with_callback(|o| {
                    let lags = LAG.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for (consumer, lag) in lags {
                        o.observe(lag, &[group(&consumer)]);
                    }
                })
                .build()
        });
        LAG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(consumer.to_owned(), lag);
    }
}

/// How often a consumer observes its lag while running.
const LAG_OBSERVED_EVERY: Duration = Duration::from_secs(5);

/// Events handled by consumers, by consumer and outcome: the apply rate.
fn processed_counter() -> &'static opentelemetry::metrics::Counter<u64> {
    static C: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    C.get_or_init(|| {
        opentelemetry::global::meter("imagelib")
            .u64_counter("imagelib.events.processed")
            .with_unit("{event}")
            .with_description(
                "Events handled by a consumer, by outcome (applied, retried, dead_lettered)",
            )
            .build()
    })
}

/// A durable pull consumer of the stream.
#[derive(Debug)]
pub struct Consumer {
    bus: EventBus,
    /// Replaced when the server-side consumer is found gone ([`Consumer::recover`]).
    inner: std::sync::Mutex<jetstream::consumer::Consumer<pull::Config>>,
    /// What the consumer was created with, to create it again.
    config: pull::Config,
    settings: ConsumerSettings,
    /// The last stream sequence this consumer handled, for its lag.
    applied: AtomicU64,
}

/// A handler of decoded events.
pub trait Handler: Send + Sync {
    fn handle(&self, event: RecordedEvent)
    -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A handler that can also take several events at once, e.g. to apply a fetched batch in
/// one database transaction instead of one per event ([`Consumer::run_batched`]).
pub trait BatchHandler: Handler {
    /// Handles `events` (in stream order) together: `Ok` settles every one of them. On
    /// an error nothing of it may have taken effect (roll back): each event is then
    /// handled again alone by [`Handler::handle`], so a bad event is retried, dead-lettered
    /// or stops the consumer exactly as without batching.
    fn handle_batch(
        &self,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether an event on `subject` may wait a little for others to be applied with
    /// ([`Consumer::run_batched`]'s `linger`): none by default.
    fn may_wait(&self, subject: &str) -> bool {
        let _ = subject;
        false
    }
}

impl Consumer {
    pub fn name(&self) -> &str {
        &self.settings.durable_name
    }

    /// Messages not yet delivered plus delivered and not yet acknowledged: zero when the
    /// consumer has caught up with the stream.
    pub async fn pending(&self) -> Result<u64, BusError> {
        let info = match self.info().await {
            Err(e) if self.recover(&e).await => self.info().await?,
            other => other?,
        };
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    fn current(&self) -> jetstream::consumer::Consumer<pull::Config> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn info(&self) -> Result<jetstream::consumer::Info, BusError> {
        let mut c = self.current();
        c.info().await.cloned().map_err(|e| BusError::Consumer {
            consumer: self.settings.durable_name.clone(),
            message: e.to_string(),
        })
    }

    /// Creates the server-side consumer again when `error` (or, for an error that does
    /// not say, the consumer's info) shows it is gone: deleted by hand, by a peer process
    /// that recreated it at an old position and lost the race, or lost by a NATS cluster
    /// whose meta leader changed while it was being created. Without this, every fetch
    /// fails for as long as the process lives. It resumes right after the last event this
    /// process handled (handlers are idempotent, so a redelivery is harmless), or where
    /// it was first created to start when it handled none. True when it was recreated.
    async fn recover(&self, error: &BusError) -> bool {
        let gone = consumer_gone(&error.to_string())
            || matches!(self.info().await, Err(e) if consumer_gone(&e.to_string()));
        if !gone {
            return false;
        }
        // A peer that deletes the consumer to create it again at its own position (a
        // process starting on a restored or empty database) does so within milliseconds:
        // give it that time and take its consumer, rather than race it with one at ours.
        tokio::time::sleep(RECREATE_GRACE).await;
        match self.info().await {
            Ok(_) => return true,
            Err(e) if !consumer_gone(&e.to_string()) => return false,
            Err(_) => {}
        }
        let mut config = self.config.clone();
        let applied = self.applied.load(Ordering::Relaxed);
        if applied > 0 {
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            };
        }
        let created = match self.bus.stream().await {
            Ok(stream) => {
                get_or_create_retrying(&stream, &self.settings.durable_name, config).await
            }
            Err(e) => Err(e.to_string()),
        };
        match created {
            Ok(c) => {
                warn!(consumer = %self.settings.durable_name, resume_after = applied, "the consumer was gone from the server; created it again");
                *self
                    .inner
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
                true
            }
            Err(e) => {
                warn!(consumer = %self.settings.durable_name, error = %e, "the consumer is gone from the server and could not be created again");
                false
            }
        }
    }

    /// Up to `max` messages, waiting at most `wait` for the first.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let err = |message: String| BusError::Consumer {
            consumer: self.settings.durable_name.clone(),
            message,
        };
        let mut batch = self
            .current()
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut out = Vec::with_capacity(max);
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| err(e.to_string()))?;
            if let Some(d) = Delivery::new(m) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Send an undecodable message to the dead-letter subject and stop its redelivery.
    pub async fn dead_letter(&self, d: &Delivery, error: &str) -> Result<(), BusError> {
        warn!(consumer = %self.settings.durable_name, subject = %d.subject, sequence = d.sequence, %error, "dead-lettering message");
        self.bus
            .dead_letter(
                &self.settings.durable_name,
                &d.subject,
                d.sequence,
                d.headers(),
                d.payload().clone(),
                error,
            )
            .await?;
        d.ack_with(AckKind::Term).await
    }

    /// The redelivery delay after the `delivered`-th failed attempt.
    fn backoff_for(&self, delivered: i64) -> Duration {
        if self.settings.backoff.is_empty() {
            let exp = delivered.clamp(1, 10) as u32;
            return Duration::from_millis(100 * 2u64.pow(exp - 1)).min(Duration::from_secs(30));
        }
        let i = (delivered.max(1) as usize - 1).min(self.settings.backoff.len() - 1);
        self.settings.backoff[i]
    }

    /// Observes the lag (`imagelib.projector.lag`): 0 when nothing waits for this
    /// consumer, otherwise the stream's last sequence minus the last one it handled.
    pub async fn observe_lag(&self) -> Result<u64, BusError> {
        let info = self.info().await?;
        let lag = if info.num_pending == 0 && info.num_ack_pending == 0 {
            0
        } else {
            let applied = self
                .applied
                .load(Ordering::Relaxed)
                .max(info.ack_floor.stream_sequence);
            self.bus.last_sequence().await?.saturating_sub(applied)
        };
        consumer_metrics::observe_lag(&self.settings.durable_name, lag);
        Ok(lag)
    }

    /// Handle messages one at a time until `shutdown` resolves.
    pub async fn run<H: Handler>(
        &self,
        handler: &H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BusError> {
        tokio::pin!(shutdown);
        let mut observed: Option<std::time::Instant> = None;
        loop {
            if observed.is_none_or(|at| at.elapsed() >= LAG_OBSERVED_EVERY) {
                observed = Some(std::time::Instant::now());
                if let Err(e) = self.observe_lag().await {
                    debug!(error = %e, "consumer lag not observed");
                }
            }
            let batch = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                b = self.fetch(64, Duration::from_secs(1)) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "fetch failed; retrying");
                    if !self.recover(&e).await {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
            };
            for d in batch {
                self.process(handler, d).await?;
            }
        }
    }

    /// Like [`Self::run`], but hands what each fetch brings (up to `max` messages) to
    /// [`BatchHandler::handle_batch`]. Messages whose subject the handler says
    /// [may wait](BatchHandler::may_wait) are held (unacknowledged) for up to `linger`
    /// while more come, and go with the next batch that holds one that may not (which is
    /// handled at once): a steady trickle of such events is applied many at a time, and
    /// every other event as soon as it is fetched. A batch with a dead-letter-subject or
    /// undecodable message, or a batch the handler refuses, is handled message by message
    /// as [`Self::run`] would.
    pub async fn run_batched<H: BatchHandler>(
        &self,
        handler: &H,
        max: usize,
        linger: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BusError> {
        tokio::pin!(shutdown);
        let max = max.max(1);
        let mut observed: Option<std::time::Instant> = None;
        let mut held: Vec<Delivery> = Vec::new();
        let mut held_since: Option<std::time::Instant> = None;
        loop {
            if observed.is_none_or(|at| at.elapsed() >= LAG_OBSERVED_EVERY) {
                observed = Some(std::time::Instant::now());
                if let Err(e) = self.observe_lag().await {
                    debug!(error = %e, "consumer lag not observed");
                }
            }
            let wait = match held_since {
                Some(since) => linger
                    .saturating_sub(since.elapsed())
                    .max(Duration::from_millis(5)),
                None => Duration::from_secs(1),
            };
            let batch = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                b = self.fetch(max - held.len(), wait) => b,
            };
            match batch {
                Ok(b) => held.extend(b),
                Err(e) => {
                    warn!(error = %e, "fetch failed; retrying");
                    if !self.recover(&e).await {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
            }
            if held.is_empty() {
                continue;
            }
            let may_wait = held.len() < max
                && !linger.is_zero()
                && held.iter().all(|d| handler.may_wait(&d.subject));
            if may_wait {
                let since = *held_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < linger {
                    continue;
                }
            }
            held_since = None;
            self.process_batch(handler, std::mem::take(&mut held))
                .await?;
        }
    }

    async fn process_batch<H: BatchHandler>(
        &self,
        handler: &H,
        batch: Vec<Delivery>,
    ) -> Result<(), BusError> {
        let decoded: Option<Vec<Envelope>> = if batch.len() < 2 {
            None
        } else {
            batch
                .iter()
                .map(|d| {
                    (!self.bus.settings.is_dlq_subject(&d.subject))
                        .then(|| d.decode().ok())
                        .flatten()
                })
                .collect()
        };
        let Some(envelopes) = decoded else {
            for d in batch {
                self.process(handler, d).await?;
            }
            return Ok(());
        };
        let events: Vec<RecordedEvent> = batch
            .iter()
            .zip(envelopes)
            .map(|(d, envelope)| RecordedEvent {
                sequence: d.sequence,
                subject: d.subject.clone(),
                envelope,
            })
            .collect();
        // One span per event, continuing its producer's trace, lasting the batch.
        let spans: Vec<tracing::Span> = events
            .iter()
            .map(|e| {
                let span = info_span!(
                    "process",
                    otel.name = %format!("process {}", e.envelope.event_type()),
                    otel.kind = "consumer",
                    messaging.system = "nats",
                    messaging.consumer.group.name = %self.settings.durable_name,
                    messaging.destination.name = %e.subject,
                    messaging.message.id = %e.envelope.id,
                    messaging.batch.message_count = events.len(),
                    cloudevents.event_type = e.envelope.event_type(),
                );
                if let Some(tp) = &e.envelope.traceparent {
                    crate::trace::set_parent(&span, tp);
                }
                span
            })
            .collect();
        let progress_every = (self.settings.ack_wait / 2).max(Duration::from_millis(500));
        let work = handler.handle_batch(&events);
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tokio::time::sleep(progress_every) => {
                    for d in &batch {
                        let _ = d.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        drop(spans);
        match result {
            Ok(()) => {
                consumer_metrics::processed(
                    &self.settings.durable_name,
                    "applied",
                    batch.len() as u64,
                );
                if let Some(last) = batch.iter().map(|d| d.sequence).max() {
                    self.applied.fetch_max(last, Ordering::Relaxed);
                }
                for d in &batch {
                    d.ack().await?;
                }
                Ok(())
            }
            Err(e) => {
                debug!(error = %e, n = batch.len(), "batch not handled; event by event");
                for d in batch {
                    self.process(handler, d).await?;
                }
                Ok(())
            }
        }
    }

    async fn process<H: Handler>(&self, handler: &H, d: Delivery) -> Result<(), BusError> {
        if self.bus.settings.is_dlq_subject(&d.subject) {
            self.applied.fetch_max(d.sequence, Ordering::Relaxed);
            return d.ack().await;
        }
        let envelope = match d.decode() {
            Ok(e) => e,
            Err(e) => {
                consumer_metrics::processed(&self.settings.durable_name, "dead_lettered", 1);
                self.applied.fetch_max(d.sequence, Ordering::Relaxed);
                return self.dead_letter(&d, &e.to_string()).await;
            }
        };
        let span = info_span!(
            "process",
            otel.name = %format!("process {}", envelope.event_type()),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.consumer.group.name = %self.settings.durable_name,
            messaging.destination.name = %d.subject,
            messaging.message.id = %envelope.id,
            cloudevents.event_type = envelope.event_type(),
        );
        if let Some(tp) = &envelope.traceparent {
            crate::trace::set_parent(&span, tp);
        }
        let event = RecordedEvent {
            sequence: d.sequence,
            subject: d.subject.clone(),
            envelope,
        };
        // Long handlers keep the message: tell the server work is ongoing.
        let progress_every = (self.settings.ack_wait / 2).max(Duration::from_millis(500));
        let work = handler.handle(event).instrument(span);
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tokio::time::sleep(progress_every) => {
                    let _ = d.ack_with(AckKind::Progress).await;
                }
            }
        };
        let outcome = match &result {
            Ok(()) => "applied",
            Err(HandlerError::Permanent(_)) => "dead_lettered",
            Err(HandlerError::Transient(_)) => "retried",
        };
        consumer_metrics::processed(&self.settings.durable_name, outcome, 1);
        if !matches!(result, Err(HandlerError::Transient(_))) {
            self.applied.fetch_max(d.sequence, Ordering::Relaxed);
        }
        match result {
            Ok(()) => d.ack().await,
            Err(HandlerError::Permanent(msg)) => self.dead_letter(&d, &msg).await,
            Err(HandlerError::Transient(msg)) => {
                if d.delivered >= self.settings.max_deliver {
                    match self.settings.on_exhausted {
                        Exhausted::DeadLetter => self.dead_letter(&d, &msg).await,
                        Exhausted::Stop => {
                            error!(consumer = %self.settings.durable_name, sequence = d.sequence, error = %msg, "event failed on every delivery; stopping");
                            Err(BusError::Consumer {
                                consumer: self.settings.durable_name.clone(),
                                message: format!(
                                    "event at sequence {} failed {} times: {msg}",
                                    d.sequence, d.delivered
                                ),
                            })
                        }
                    }
                } else {
                    let delay = self.backoff_for(d.delivered);
                    debug!(sequence = d.sequence, ?delay, error = %msg, "transient failure; nak with backoff");
                    d.ack_with(AckKind::Nak(Some(delay))).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_limit_is_never_lowered_below_what_it_holds() {
        const MIB: i64 = 1024 * 1024;
        // Raised, or unlimited: applied.
        assert_eq!(safe_max_bytes(MIB, 2 * MIB, 900_000), 2 * MIB);
        assert_eq!(safe_max_bytes(MIB, -1, 900_000), -1);
        // Lowered while everything still fits: applied.
        assert_eq!(safe_max_bytes(4 * MIB, 2 * MIB, 2 * MIB as u64), 2 * MIB);
        // Lowered below what it holds: the current limit stays.
        assert_eq!(safe_max_bytes(4 * MIB, 2 * MIB, 3 * MIB as u64), 4 * MIB);
        assert_eq!(safe_max_bytes(-1, 2 * MIB, 3 * MIB as u64), -1);
    }

    #[test]
    fn subjects_follow_the_contract() {
        let s = StreamSettings::default();
        let id = uuid::Uuid::from_u128(7);
        assert_eq!(
            s.subject(Aggregate::Registry, id, "registered"),
            "imagelib.registry.00000000-0000-0000-0000-000000000007.registered"
        );
        assert_eq!(s.dlq_subject("catalog"), "imagelib.dlq.catalog");
        assert!(s.is_dlq_subject("imagelib.dlq.catalog"));
        assert!(!s.is_dlq_subject("imagelib.registry.x.dlq"));
    }

    #[test]
    fn versions() {
        assert!(version_at_least("2.11.0", (2, 11)));
        assert!(version_at_least("v2.12.1-beta", (2, 11)));
        assert!(!version_at_least("2.9.10", (2, 11)));
        assert!(!version_at_least("garbage", (2, 11)));
    }
}
