//! Scale-out: scan jobs on a JetStream work queue, and a lease per registry.
//!
//! Every scan runs as a job. Jobs are messages on a work-queue stream of their own,
//! `<stream>_JOBS`, subjects `<prefix>_jobs.scan.<registry-id>` (outside the event
//! stream's `<prefix>.>`, and not events: nothing projects them). All scanner replicas
//! pull from one durable consumer, so each job goes to one replica. Jobs are submitted
//! with a `Nats-Msg-Id` that names what caused them (the `sync.requested` event, the
//! schedule slot, the rules change), so replicas that all see the same cause submit it
//! once.
//!
//! A registry is scanned by one replica at a time: before scanning, a replica creates the
//! key `<registry-id>` in the KV bucket `<stream>_LEASES` (create fails when the key
//! exists), renews it by revision every third of its TTL while scanning, and deletes it
//! (expecting its revision) when done. The bucket's `max_age` is the TTL, so the lease of
//! a replica that died expires on its own. A replica that cannot renew its lease stops
//! the scan. A job whose registry is leased by someone else goes back to the queue with a
//! delay.
//!
//! Beside each lease, the KV bucket `<stream>_SCANNED` keeps the registry's **mark**: what
//! the last holder of the lease said about the image events it published. A holder writes
//! `open` when it takes the lease (before publishing anything), and on a clean finish the
//! stream's last image sequence then (every event it published is at or below it). The
//! next holder reads the mark and waits only until its projection holds that sequence,
//! not every image event published since by scans of other registries
//! ([`crate::runner::Runner::caught_up`]); `open` (a holder that died, failed or lost its
//! lease) means it waits for all of them, as does a mark that could not be read. A
//! registry without a mark was never leased, so no scan event of it exists. Marks are
//! written by compare-and-set on their own revision, so a holder that lost its lease
//! cannot overwrite the next holder's `open`. Replicas of a version without marks must
//! not scan beside replicas of this one (their scans leave no `open`).
//!
//! No job is delivered forever: the consumer has a finite `max_deliver`, a job that fails
//! (or panics) runs again after a doubling backoff, and after `job_max_failures` failures,
//! on its last delivery, or when it cannot be read, it goes to the dead-letter subject
//! `<prefix>.dlq.sync-scanner-jobs` of the event stream (with the reason in headers) and
//! leaves the queue.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, message::PublishMessage, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use imagelib_events::RegistryId;
use imagelib_events::bus::EventBus;
use serde::{Deserialize, Serialize};

use crate::scan::ScanRequest;

/// One scan to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    #[serde(flatten)]
    pub request: ScanRequest,
    /// When it was asked for: a complete scan of the whole registry started later serves it.
    pub requested_at: DateTime<Utc>,
    /// The W3C trace context of what caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("scan jobs: {0}")]
pub struct JobsError(pub String);

fn err(e: impl std::fmt::Display) -> JobsError {
    JobsError(e.to_string())
}

/// The work queue and the lease bucket.
#[derive(Clone)]
pub struct Jobs {
    js: jetstream::Context,
    stream_name: String,
    subject_root: String,
    leases: kv::Store,
    marks: kv::Store,
    holder: String,
    ttl: Duration,
    max_deliver: i64,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("stream", &self.stream_name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// A registry's lease, held by this process.
#[derive(Debug, Clone)]
pub struct Lease {
    pub registry_id: RegistryId,
    revision: u64,
    /// Every image event the registry's earlier holders published is at or below this
    /// stream sequence (`None`: not known, wait for every image event).
    pub mark: Option<u64>,
    /// The revision of this holder's `open` mark.
    mark_revision: u64,
}

/// A mark's value: `open`, or the stream sequence as decimal.
const OPEN: &str = "open";

/// What a stored mark says (`None`: open, or not a mark).
fn parse_mark(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Finds or creates the KV bucket `bucket` (one value per key, never deleted), its stream
/// configured by `edit` beyond that. By hand: `create_key_value` needs an account-info
/// reply that NATS 2.9 does not give.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    what: &str,
    replicas: usize,
    edit: impl FnOnce(&mut stream::Config),
) -> Result<kv::Store, String> {
    if let Ok(kv) = js.get_key_value(bucket).await {
        return Ok(kv);
    }
    let mut config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(format!("imagelib sync-scanner: {what}")),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    edit(&mut config);
    js.get_or_create_stream(config)
        .await
        .map_err(|e| e.to_string())?;
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

/// The durable consumer every replica pulls jobs from.
pub const JOBS_CONSUMER: &str = "sync-scanner-jobs";

impl Jobs {
    /// Creates (or finds) the jobs stream and the lease bucket of `bus`'s stream.
    pub async fn open(bus: &EventBus, holder: String, ttl: Duration) -> Result<Self, JobsError> {
        let js = bus.jetstream().clone();
        let settings = bus.settings();
        let stream_name = format!("{}_JOBS", settings.name);
        let subject_root = format!("{}_jobs.scan", settings.subject_prefix);
        let config = stream::Config {
            name: stream_name.clone(),
            description: Some("imagelib sync-scanner: scan jobs (work queue)".into()),
            subjects: vec![format!("{subject_root}.*")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas.max(1),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map_err(err)?;

        let leases = open_bucket(
            &js,
            &format!("{}_LEASES", settings.name),
            "registry scan leases",
            settings.replicas,
            |c| {
                c.max_age = ttl;
                c.duplicate_window = ttl.min(Duration::from_secs(120));
            },
        )
        .await
        .map_err(JobsError)?;
        // Reads go to the stream's leader (no direct get): a replica's copy could be a
        // write behind, and a mark read stale is a wait skipped.
        let marks = open_bucket(
            &js,
            &format!("{}_SCANNED", settings.name),
            "what each registry's last scan published",
            settings.replicas,
            |c| c.allow_direct = false,
        )
        .await
        .map_err(JobsError)?;
        Ok(Jobs {
            js,
            stream_name,
            subject_root,
            leases,
            marks,
            holder,
            ttl,
            max_deliver: crate::config::ScannerConfig::default().job_max_deliver,
        })
    }

    /// The consumer's `max_deliver` (at least 2; a non-positive value means the default).
    pub fn with_max_deliver(mut self, max_deliver: i64) -> Self {
        if max_deliver > 0 {
            self.max_deliver = max_deliver.max(2);
        }
        self
    }

    pub fn max_deliver(&self) -> i64 {
        self.max_deliver
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Queues `job`, once per `msg_id` within the duplicate window. True when it was new.
    pub async fn submit(&self, job: &Job, msg_id: &str) -> Result<bool, JobsError> {
        let subject = format!("{}.{}", self.subject_root, job.request.registry_id);
        let payload = serde_json::to_vec(job).map_err(err)?;
        let publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(msg_id);
        let ack = self
            .js
            .send_publish(subject, publish)
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        Ok(!ack.duplicate)
    }

    /// The shared durable consumer of the queue, created or updated to a finite
    /// `max_deliver` (a consumer of an older version had none).
    pub async fn consumer(&self) -> Result<jetstream::consumer::Consumer<pull::Config>, JobsError> {
        let stream = self.js.get_stream(&self.stream_name).await.map_err(err)?;
        let config = pull::Config {
            durable_name: Some(JOBS_CONSUMER.into()),
            description: Some("sync-scanner replicas: scan jobs".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_deliver: self.max_deliver,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        if let Ok(mut existing) = stream.get_consumer::<pull::Config>(JOBS_CONSUMER).await
            && existing
                .info()
                .await
                .is_ok_and(|i| i.config.max_deliver == self.max_deliver)
        {
            return Ok(existing);
        }
        stream.create_consumer(config).await.map_err(err)
    }

    /// Jobs waiting (not yet delivered, or delivered and not acknowledged).
    pub async fn pending(&self) -> Result<u64, JobsError> {
        let mut c = self.consumer().await?;
        let info = c.info().await.map_err(err)?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Jobs ever queued (the queue stream's last sequence).
    pub async fn queued(&self) -> Result<u64, JobsError> {
        let mut stream = self.js.get_stream(&self.stream_name).await.map_err(err)?;
        Ok(stream.info().await.map_err(err)?.state.last_sequence)
    }

    /// Takes the registry's lease, or `None` when another scanner holds it. The lease
    /// carries the registry's mark, now `open` until [`Self::release`] says otherwise.
    pub async fn acquire(&self, registry_id: RegistryId) -> Result<Option<Lease>, JobsError> {
        let revision = match self
            .leases
            .create(registry_id.to_string(), Bytes::from(self.holder.clone()))
            .await
        {
            Ok(revision) => revision,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let mut lease = Lease {
            registry_id,
            revision,
            mark: None,
            mark_revision: 0,
        };
        match self.open_mark(registry_id).await {
            Ok((mark, mark_revision)) => {
                lease.mark = mark;
                lease.mark_revision = mark_revision;
                Ok(Some(lease))
            }
            Err(e) => {
                // Nothing may be published without an `open` mark: give the lease back.
                self.release(lease, None).await;
                Err(e)
            }
        }
    }

    /// Reads the registry's mark and replaces it with `open`: (what it said, the
    /// revision of `open`).
    async fn open_mark(&self, registry_id: RegistryId) -> Result<(Option<u64>, u64), JobsError> {
        let key = registry_id.to_string();
        let entry = self.marks.entry(&key).await.map_err(err)?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            None => {
                let revision = self
                    .marks
                    .create(&key, Bytes::from_static(OPEN.as_bytes()))
                    .await
                    .map_err(err)?;
                Ok((Some(0), revision))
            }
            Some(e) => {
                let revision = self
                    .marks
                    .update(&key, Bytes::from_static(OPEN.as_bytes()), e.revision)
                    .await
                    .map_err(err)?;
                Ok((parse_mark(&e.value), revision))
            }
        }
    }

    /// Renews the lease; an error means it is lost (expired and maybe taken).
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), JobsError> {
        let revision = self
            .leases
            .update(
                lease.registry_id.to_string(),
                Bytes::from(self.holder.clone()),
                lease.revision,
            )
            .await
            .map_err(err)?;
        lease.revision = revision;
        Ok(())
    }

    /// Gives the lease back (if it is still ours). `published`: every image event this
    /// holder published is at or below that stream sequence (a clean finish); `None`
    /// leaves the mark `open`. A holder that published nothing passes the mark it found.
    pub async fn release(&self, lease: Lease, published: Option<u64>) {
        if let Some(sequence) = published
            && lease.mark_revision > 0
            && let Err(e) = self
                .marks
                .update(
                    lease.registry_id.to_string(),
                    Bytes::from(sequence.to_string()),
                    lease.mark_revision,
                )
                .await
        {
            // Left `open` (or someone else's since): the next holder waits for everything.
            tracing::debug!(registry = %lease.registry_id, error = %e, "scan mark not written");
        }
        if let Err(e) = self
            .leases
            .delete_expect_revision(lease.registry_id.to_string(), Some(lease.revision))
            .await
        {
            tracing::debug!(registry = %lease.registry_id, error = %e, "lease not released (expired?)");
        }
    }

    /// Who holds the registry's lease now, if anyone.
    pub async fn holder_of(&self, registry_id: RegistryId) -> Result<Option<String>, JobsError> {
        let entry = self
            .leases
            .entry(registry_id.to_string())
            .await
            .map_err(err)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }
}
