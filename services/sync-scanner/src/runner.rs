//! The workers that run scans: the job runner (pulls scan jobs, takes the registry's
//! lease, makes sure the state has caught up, scans) and the scheduler (submits a job
//! when a registry is due). The trust re-evaluator and the integrity sweep
//! ([`crate::integrity`]) take the same lease ([`Runner::with_lease`]), so neither ever
//! runs beside a scan of the registry.
//!
//! Scheduling is deterministic so that every replica agrees: a registry's scans are due
//! at `phase + k × interval`, where `interval` is the registry's `scan_interval_secs` (or
//! the configured default) and `phase` is a stable offset in `[0, jitter)` derived from
//! the registry id (the jitter that spreads registries over the interval). A slot's job
//! is submitted with the id `schedule:<registry>:<slot>`, so replicas submit it once. A
//! registry whose rules changed is rescanned shortly after the last change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, message::AckKind};
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt};
use imagelib_events::bus::EventBus;
use imagelib_events::model::SyncReason;
use imagelib_events::{Aggregate, RegistryId, RepositoryName};
use imagelib_platform::{Readiness, Worker};
use tokio_util::sync::CancellationToken;

use crate::bus::{consumer_name, projections_ready};
use crate::config::ScannerConfig;
use crate::jobs::{Job, Jobs};
use crate::scan::{Outcome, ScanRequest, Scanner};
use crate::store::{Registry, ScanRecord, Store};

/// How often the job worker looks at the queue for `imagelib.scan.jobs.queued`.
const QUEUE_OBSERVED_EVERY: Duration = Duration::from_secs(5);

/// What the workers share.
#[derive(Debug)]
pub struct Runner {
    pub scanner: Scanner,
    pub jobs: Jobs,
    pub bus: EventBus,
    pub store: Store,
    pub readiness: Readiness,
    pub config: ScannerConfig,
    /// Repository scans that completed, by when they started (coalesces webhook bursts).
    recent: Mutex<HashMap<(RegistryId, RepositoryName), DateTime<Utc>>>,
    /// Failures of the jobs this process ran, by their stream sequence.
    failures: Mutex<HashMap<u64, u32>>,
}

impl Runner {
    pub fn new(
        scanner: Scanner,
        jobs: Jobs,
        bus: EventBus,
        store: Store,
        readiness: Readiness,
        config: ScannerConfig,
    ) -> Arc<Self> {
        Arc::new(Runner {
            scanner,
            jobs,
            bus,
            store,
            readiness,
            config,
            recent: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    pub(crate) async fn until_projections_ready(&self, cancel: &CancellationToken) -> bool {
        while !projections_ready(&self.readiness) {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        true
    }

    // ------------------------------------------------------------ jobs

    pub fn job_worker(self: &Arc<Self>) -> Worker {
        let me = self.clone();
        Worker::new(
            "jobs",
            move |cancel| async move { me.run_jobs(cancel).await },
        )
    }

    async fn run_jobs(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        self.readiness
            .set("jobs", false, Some("waiting for the projections".into()));
        if !self.until_projections_ready(&cancel).await {
            return Ok(());
        }
        let consumer = loop {
            match self.jobs.consumer().await {
                Ok(c) => {
                    imagelib_events::bus::consumer_metrics::started(crate::jobs::JOBS_CONSUMER);
                    break c;
                }
                Err(e) => {
                    self.readiness.set("jobs", false, Some(e.to_string()));
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        self.readiness.set("jobs", true, None);
        let slots = self.config.concurrent_scans.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        let mut observed: Option<std::time::Instant> = None;
        loop {
            while tasks.try_join_next().is_some() {}
            if observed.is_none_or(|at| at.elapsed() >= QUEUE_OBSERVED_EVERY) {
                observed = Some(std::time::Instant::now());
                match consumer.clone().info().await {
                    Ok(info) => crate::metrics::jobs_queued(info.num_pending),
                    Err(e) => {
                        tracing::debug!(error = %e, "jobs consumer info for the queued gauge")
                    }
                }
            }
            if tasks.len() >= slots {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tasks.join_next() => continue,
                }
            }
            let want = slots - tasks.len();
            let batch = tokio::select! {
                _ = cancel.cancelled() => break,
                b = fetch(&consumer, want) => b,
            };
            match batch {
                Ok(messages) => {
                    for msg in messages {
                        let me = self.clone();
                        let token = cancel.child_token();
                        tasks.spawn(async move {
                            let _running = crate::metrics::RunningJob::start();
                            me.handle(msg, token).await
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetching scan jobs failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Whether what `job` asks for was already done after it was asked. A scan of the
    /// whole registry serves a request for one repository only when that request re-checks
    /// nothing ([`crate::scan::Recheck::for_request`]): it does not re-check immutable
    /// tags, so a push webhook must still run (a later scan of the repository serves it).
    async fn served(&self, job: &Job) -> bool {
        let id = job.request.registry_id;
        if crate::scan::Recheck::for_request(&job.request).is_none()
            && let Ok(Some(scan)) = self.store.scan(id).await
            && scan
                .last_full_started_at
                .is_some_and(|t| t > job.requested_at)
        {
            return true;
        }
        if let Some(repo) = &job.request.repository
            && let Ok(recent) = self.recent.lock()
            && recent
                .get(&(id, repo.clone()))
                .is_some_and(|t| *t > job.requested_at)
        {
            return true;
        }
        false
    }

    async fn handle(&self, msg: jetstream::Message, cancel: CancellationToken) {
        let job: Job = match serde_json::from_slice(&msg.payload) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable scan job dead-lettered");
                self.dead_letter(&msg, &format!("the job is not readable: {e}"))
                    .await;
                return;
            }
        };
        let id = job.request.registry_id;
        let age = Utc::now() - job.requested_at;
        let too_old = age.to_std().unwrap_or_default()
            > Duration::from_secs(self.config.request_max_age_secs.max(60));
        match self.store.registry(id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Not projected yet (retry shortly), removed, or unknown for too long.
                if too_old || self.store.is_removed(id).await.unwrap_or(false) {
                    tracing::info!(registry = %id, "scan job for an unknown or removed registry dropped");
                    let _ = msg.ack().await;
                } else {
                    self.requeue(&msg, Some(Duration::from_secs(1))).await;
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable; job retried");
                self.requeue(&msg, Some(Duration::from_secs(2))).await;
                return;
            }
        }
        if self.served(&job).await {
            let _ = msg.ack().await;
            return;
        }
        let lease = match self.jobs.acquire(id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                // Someone is scanning it: try again after that scan (it may serve us),
                // backing off while it lasts. A repository scan (a webhook push) takes
                // milliseconds and a whole registry minutes, so start short and double
                // (25 ms, 50 ms, … up to 5 s): a fixed 250 ms step made every push that
                // met another scan of its registry wait a quarter of a second or more.
                self.requeue(
                    &msg,
                    Some(lease_busy_delay(msg.info().map(|i| i.delivered).ok())),
                )
                .await;
                return;
            }
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "lease unavailable; job retried");
                self.requeue(&msg, Some(Duration::from_secs(2))).await;
                return;
            }
        };
        let found = lease.mark;
        if !self.caught_up(id, found, &cancel).await {
            self.jobs.release(lease, found).await;
            self.requeue(&msg, Some(Duration::from_secs(1))).await;
            return;
        }
        if self.served(&job).await {
            self.jobs.release(lease, found).await;
            let _ = msg.ack().await;
            return;
        }

        let scan_cancel = cancel.child_token();
        let done = CancellationToken::new();
        let every = self.jobs.ttl() / 3;
        let renew = async {
            let mut lease = lease;
            loop {
                tokio::select! {
                    _ = done.cancelled() => return lease,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = self.jobs.renew(&mut lease).await {
                    tracing::error!(registry = %id, error = %e, "scan lease lost; stopping the scan");
                    scan_cancel.cancel();
                    return lease;
                }
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        };
        let traceparent = job.traceparent.as_deref().and_then(|t| t.parse().ok());
        let started = Utc::now();
        let scan = async {
            let r = std::panic::AssertUnwindSafe(self.scanner.scan(
                &job.request,
                traceparent,
                &scan_cancel,
            ))
            .catch_unwind()
            .await;
            done.cancel();
            r
        };
        let (lease, result) = tokio::join!(renew, scan);
        let clean = matches!(result, Ok(Ok(Outcome::Completed(_)))) && !scan_cancel.is_cancelled();
        let published = if clean { self.published().await } else { None };
        self.jobs.release(lease, published).await;
        let result = match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(registry = %id, panic = %what, "the scan panicked");
                Err(format!("the scan panicked: {what}"))
            }
        };
        match result {
            Ok(outcome) => {
                if let (Outcome::Completed(c), Some(repo)) = (&outcome, &job.request.repository)
                    && !c.partial
                    && let Ok(mut recent) = self.recent.lock()
                {
                    recent.insert((id, repo.clone()), started);
                }
                if cancel.is_cancelled() {
                    // Stopping: another replica (or the next start) does it again.
                    self.requeue(&msg, None).await;
                } else {
                    let _ = msg.double_ack().await;
                }
            }
            Err(e) => self.failed(&msg, &e).await,
        }
    }

    /// A job that failed: again after a backoff, or to the dead-letter subject after
    /// `job_max_failures` failures or on its last delivery.
    async fn failed(&self, msg: &jetstream::Message, error: &str) {
        let info = msg.info().ok();
        let sequence = info.as_ref().map(|i| i.stream_sequence).unwrap_or(0);
        let delivered = info.as_ref().map(|i| i.delivered).unwrap_or(1);
        let failures = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(sequence).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        match job_disposition(&self.config, self.jobs.max_deliver(), failures, delivered) {
            Some(delay) => {
                tracing::warn!(error, failures, ?delay, "scan could not run; job retried");
                nak(msg, Some(delay)).await;
            }
            None => {
                tracing::error!(
                    error,
                    failures,
                    delivered,
                    "scan job failed for good; dead-lettered"
                );
                self.dead_letter(msg, error).await;
            }
        }
    }

    /// Puts a job back (it could not run yet), unless this was its last delivery: then it
    /// is dead-lettered rather than dropped silently by the consumer.
    async fn requeue(&self, msg: &jetstream::Message, delay: Option<Duration>) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let max = self.jobs.max_deliver();
        if max > 0 && delivered >= max {
            self.dead_letter(msg, &format!("delivered {delivered} times without running"))
                .await;
        } else {
            nak(msg, delay).await;
        }
    }

    /// Moves a job to `<prefix>.dlq.sync-scanner-jobs` and off the queue.
    async fn dead_letter(&self, msg: &jetstream::Message, error: &str) {
        let sequence = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        match self
            .bus
            .dead_letter(
                crate::jobs::JOBS_CONSUMER,
                msg.subject.as_str(),
                sequence,
                msg.headers.as_ref(),
                msg.payload.clone(),
                error,
            )
            .await
        {
            Ok(_) => {
                let _ = msg.ack_with(AckKind::Term).await;
                if let Ok(mut f) = self.failures.lock() {
                    f.remove(&sequence);
                }
            }
            Err(e) => {
                // Not lost: redelivered (max_deliver still bounds it).
                tracing::error!(error = %e, "dead-lettering a scan job failed");
                nak(msg, Some(Duration::from_secs(5))).await;
            }
        }
    }

    /// Waits (bounded) until the projections hold every event about the registry, its
    /// rules and the image events its earlier scans published: the scan compares the
    /// registry with that state, so it must not miss what another replica just emitted.
    /// `mark` is the lease's ([`crate::jobs::Lease::mark`]): every image event of the
    /// registry is at or below it; without one, every image event published so far.
    pub(crate) async fn caught_up(
        &self,
        id: RegistryId,
        mark: Option<u64>,
        cancel: &CancellationToken,
    ) -> bool {
        let s = self.bus.settings();
        let checks = [
            (
                Aggregate::Registry,
                s.aggregate_filter(Aggregate::Registry, id.0),
            ),
            (Aggregate::Rule, s.aggregate_filter(Aggregate::Rule, id.0)),
            (Aggregate::Image, s.aggregate_type_filter(Aggregate::Image)),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for (aggregate, filter) in checks {
            let last = match (aggregate, mark) {
                (Aggregate::Image, Some(mark)) => mark,
                _ => match self.bus.last_sequence_of(&filter).await {
                    Ok(last) => last.unwrap_or(0),
                    Err(_) => return false,
                },
            };
            let name = consumer_name(&self.config.instance, aggregate);
            loop {
                let position = if aggregate == Aggregate::Image {
                    self.store.image_position().await
                } else {
                    self.store.position(&name).await
                };
                match position {
                    Ok(p) if p >= last => break,
                    Ok(_) => {}
                    Err(_) => return false,
                }
                if tokio::time::Instant::now() > deadline || cancel.is_cancelled() {
                    tracing::warn!(registry = %id, aggregate = aggregate.as_str(), "state behind the stream; scan deferred");
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        true
    }

    /// Runs `work` under the registry's scan lease, renewed every third of its TTL while
    /// `work` runs; the token `work` gets is cancelled when the lease is lost (or `cancel`
    /// is). `None`: another holder has the lease (a scan is running), or the lease bucket
    /// did not answer; nothing ran.
    pub(crate) async fn with_lease<T, Fut>(
        &self,
        id: RegistryId,
        cancel: &CancellationToken,
        work: impl FnOnce(CancellationToken) -> Fut,
    ) -> Option<T>
    where
        Fut: std::future::Future<Output = T>,
    {
        let lease = match self.jobs.acquire(id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "lease unavailable");
                return None;
            }
        };
        let token = cancel.child_token();
        let done = CancellationToken::new();
        let every = self.jobs.ttl() / 3;
        let renew = async {
            let mut lease = lease;
            loop {
                tokio::select! {
                    _ = done.cancelled() => return lease,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = self.jobs.renew(&mut lease).await {
                    tracing::warn!(registry = %id, error = %e, "lease lost; stopping");
                    token.cancel();
                    done.cancelled().await;
                    return lease;
                }
            }
        };
        let run = async {
            let r = work(token.clone()).await;
            done.cancel();
            r
        };
        let (lease, result) = tokio::join!(renew, run);
        // What `work` published is not known here: the mark stays `open`.
        self.jobs.release(lease, None).await;
        Some(result)
    }

    /// The mark of a clean finish: the stream's last image event now, at or above every
    /// one this holder published (all acknowledged). `None` when it cannot be read.
    async fn published(&self) -> Option<u64> {
        let filter = self.bus.settings().aggregate_type_filter(Aggregate::Image);
        match self.bus.last_sequence_of(&filter).await {
            Ok(last) => Some(last.unwrap_or(0)),
            Err(e) => {
                tracing::debug!(error = %e, "last image sequence not read; the scan mark stays open");
                None
            }
        }
    }

    // ------------------------------------------------------------ trust re-evaluation

    /// Re-evaluates trust policies from the store: a registry whose trust rules changed
    /// (told by the rule projector through `changes`, coalesced for a moment), and every
    /// registry each `reevaluate_interval` seconds. No registry request is made.
    pub fn reevaluate_worker(
        self: &Arc<Self>,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<RegistryId>,
    ) -> Worker {
        let me = self.clone();
        Worker::new("trust-reevaluate", move |cancel| async move {
            if !me.until_projections_ready(&cancel).await {
                return Ok(());
            }
            let every = (me.config.reevaluate_interval > 0)
                .then(|| Duration::from_secs(me.config.reevaluate_interval));
            let mut next = every.map(|d| tokio::time::Instant::now() + d);
            // Registries whose re-evaluation could not run yet (the state was behind).
            let mut due: std::collections::BTreeSet<RegistryId> = Default::default();
            loop {
                let timer = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let retry = async {
                    if due.is_empty() {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                };
                tokio::select! {
                    _ = retry => {}
                    _ = cancel.cancelled() => return Ok(()),
                    id = changes.recv() => match id {
                        Some(id) => {
                            due.insert(id);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            while let Ok(id) = changes.try_recv() {
                                due.insert(id);
                            }
                        }
                        None => return Ok(()),
                    },
                    _ = timer => {
                        next = every.map(|d| tokio::time::Instant::now() + d);
                        match self_registries(&me.store).await {
                            Ok(all) => due.extend(all),
                            Err(e) => tracing::warn!(error = %e, "registries not read for re-evaluation"),
                        }
                    }
                }
                for id in std::mem::take(&mut due) {
                    if !me.reevaluate_leased(id, &cancel).await {
                        due.insert(id);
                    }
                }
            }
        })
    }

    /// Re-evaluates one registry under its scan lease; false when it must be retried.
    ///
    /// A scan of the registry stores its tags before the referrers it reads for them, so
    /// an evaluation running beside it would judge a signed digest on half its evidence
    /// (and say `unsigned` until the scan's own evaluation said otherwise). The lease makes
    /// the two take turns, across replicas; the scan uses the rules it started with, and
    /// the re-evaluation after it applies the new ones.
    async fn reevaluate_leased(&self, id: RegistryId, cancel: &CancellationToken) -> bool {
        let lease = match self.jobs.acquire(id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(registry = %id, "registry being scanned; re-evaluation after it");
                return false;
            }
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "lease unavailable; re-evaluation retried");
                return false;
            }
        };
        // What was last said is read from the projections: let them catch up with the
        // trust events already published (a scan's, or the last re-evaluation's).
        let found = lease.mark;
        if !self.caught_up(id, found, cancel).await {
            tracing::warn!(registry = %id, "state behind the stream; re-evaluation retried");
            self.jobs.release(lease, found).await;
            return false;
        }
        let done = CancellationToken::new();
        let every = self.jobs.ttl() / 3;
        let renew = async {
            let mut lease = lease;
            loop {
                tokio::select! {
                    _ = done.cancelled() => return lease,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = self.jobs.renew(&mut lease).await {
                    // Nothing to stop: the evaluation only reads the store, and what it
                    // emits is keyed by fact, so a scan that now overlaps it re-derives
                    // the same events or corrects them.
                    tracing::warn!(registry = %id, error = %e, "re-evaluation lease lost");
                    done.cancelled().await;
                    return lease;
                }
            }
        };
        let work = async {
            let r = self.scanner.trust().reevaluate(id).await;
            done.cancel();
            r
        };
        let (lease, result) = tokio::join!(renew, work);
        let published = match &result {
            Ok(_) => self.published().await,
            Err(_) => None,
        };
        self.jobs.release(lease, published).await;
        match result {
            Ok(n) => {
                tracing::debug!(registry = %id, digests = n, "trust re-evaluated");
                true
            }
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "trust re-evaluation failed; retried");
                false
            }
        }
    }

    // ------------------------------------------------------------ schedule

    pub fn schedule_worker(self: &Arc<Self>) -> Worker {
        let me = self.clone();
        Worker::new("schedule", move |cancel| async move {
            me.run_schedule(cancel).await
        })
    }

    async fn run_schedule(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        if !self.until_projections_ready(&cancel).await {
            return Ok(());
        }
        let mut submitted: HashMap<RegistryId, String> = HashMap::new();
        loop {
            if let Err(e) = self.tick(&mut submitted).await {
                tracing::warn!(error = %e, "schedule tick failed");
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn tick(&self, submitted: &mut HashMap<RegistryId, String>) -> Result<(), String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let registries = self.store.registries().await.map_err(|x| e(&x))?;
        let scans = self.store.scans().await.map_err(|x| e(&x))?;
        let mut enabled = self
            .store
            .registries_with_enabled_rules()
            .await
            .map_err(|x| e(&x))?;
        if let Some(a) = self.scanner.agent().registry() {
            enabled.insert(a);
        }
        let now = Utc::now();
        for r in &registries {
            let scan = scans.get(&r.id);
            let Some(msg_id) = due(&self.config, r, scan, enabled.contains(&r.id), now) else {
                continue;
            };
            if submitted.get(&r.id) == Some(&msg_id) {
                continue;
            }
            let job = Job {
                request: ScanRequest {
                    registry_id: r.id,
                    repository: None,
                    reason: SyncReason::Schedule,
                },
                requested_at: now,
                traceparent: None,
            };
            match self.jobs.submit(&job, &msg_id).await {
                Ok(_) => {
                    tracing::debug!(registry = %r.id, %msg_id, "scan scheduled");
                    submitted.insert(r.id, msg_id);
                }
                Err(x) => tracing::warn!(registry = %r.id, error = %x, "scheduling failed"),
            }
        }
        Ok(())
    }
}

async fn self_registries(store: &Store) -> Result<Vec<RegistryId>, crate::store::StoreError> {
    Ok(store
        .registries()
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// What to do with a job that failed `failures` times in `delivered` deliveries: run it
/// again after the returned delay, or (`None`) dead-letter it.
fn job_disposition(
    config: &ScannerConfig,
    max_deliver: i64,
    failures: u32,
    delivered: i64,
) -> Option<Duration> {
    let last_delivery = max_deliver > 0 && delivered >= max_deliver;
    (failures < config.job_max_failures.max(1) && !last_delivery)
        .then(|| config.job_backoff(failures))
}

/// The redelivery delay of a job whose registry is being scanned, after its
/// `delivered`-th delivery: 25 ms doubling to at most 5 s.
fn lease_busy_delay(delivered: Option<i64>) -> Duration {
    let n = delivered.unwrap_or(1).clamp(1, 16) as u32;
    Duration::from_millis(25u64 << (n - 1)).min(Duration::from_secs(5))
}

async fn nak(msg: &jetstream::Message, delay: Option<Duration>) {
    let _ = msg.ack_with(AckKind::Nak(delay)).await;
}

async fn fetch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    max: usize,
) -> Result<Vec<jetstream::Message>, String> {
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The scan interval of a registry.
pub fn interval_of(config: &ScannerConfig, r: &Registry) -> u64 {
    r.scan_interval_secs
        .filter(|s| *s > 0)
        .unwrap_or(config.interval_secs)
        .max(1)
}

/// A registry's stable offset within its interval.
pub fn phase_of(config: &ScannerConfig, r: &Registry) -> u64 {
    let span = config.jitter_secs.min(interval_of(config, r));
    if span == 0 {
        return 0;
    }
    (r.id.0.as_u128() % u128::from(span)) as u64
}

/// The schedule slot `now` falls in, and when it started.
pub fn slot_of(config: &ScannerConfig, r: &Registry, now: DateTime<Utc>) -> (i64, DateTime<Utc>) {
    let interval = interval_of(config, r) as i64;
    let phase = phase_of(config, r) as i64;
    let slot = (now.timestamp() - phase).div_euclid(interval);
    let start = DateTime::from_timestamp(slot * interval + phase, 0).unwrap_or(now);
    (slot, start)
}

/// When the registry's next scheduled scan is due (now or earlier when it is due).
pub fn next_due(
    config: &ScannerConfig,
    r: &Registry,
    scan: Option<&ScanRecord>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let (_, start) = slot_of(config, r, now);
    if covered(scan, start) {
        start + chrono::Duration::seconds(interval_of(config, r) as i64)
    } else {
        start
    }
}

/// The job id of the scan the registry is due for, if any.
fn due(
    config: &ScannerConfig,
    r: &Registry,
    scan: Option<&ScanRecord>,
    has_rules: bool,
    now: DateTime<Utc>,
) -> Option<String> {
    if !config.schedule {
        return None;
    }
    if let Some(changed) = r.rules_changed_at {
        let since = scan.and_then(|s| s.last_started_at);
        let settled =
            now - changed >= chrono::Duration::milliseconds(config.rules_debounce_ms as i64);
        if since.is_none_or(|s| s < changed) && settled {
            return Some(format!("rules:{}:{}", r.id, changed.timestamp_millis()));
        }
    }
    if !has_rules {
        return None;
    }
    let (slot, start) = slot_of(config, r, now);
    (!covered(scan, start)).then(|| format!("schedule:{}:{slot}", r.id))
}

/// Whether a whole-registry scan completed, or is running, since `start`.
fn covered(scan: Option<&ScanRecord>, start: DateTime<Utc>) -> bool {
    let Some(s) = scan else { return false };
    let since = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t >= start);
    since(s.last_full_started_at)
        || (s.running_sync_id.is_some() && s.running_repository.is_none() && since(s.running_since))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(interval: Option<u64>) -> Registry {
        Registry {
            id: RegistryId(uuid::Uuid::from_u128(1000 + 37)),
            url: "r.example".into(),
            insecure: false,
            ca_pem: None,
            auth_kind: "none".into(),
            credential: None,
            visibility: vec![],
            scan_interval_secs: interval,
            repositories: vec![],
            rules_changed_at: None,
            auth_hosts: vec![],
            registry_type: "generic".into(),
            proxy_url: None,
            no_proxy: vec![],
            artifact_registry: None,
        }
    }

    #[test]
    fn slots_follow_interval_and_phase() {
        let config = ScannerConfig {
            interval_secs: 300,
            jitter_secs: 60,
            ..Default::default()
        };
        let r = registry(Some(100));
        assert_eq!(interval_of(&config, &r), 100);
        let phase = phase_of(&config, &r);
        assert_eq!(phase, 1037 % 60);
        let now = DateTime::from_timestamp(1_000_000 + phase as i64 + 50, 0).unwrap();
        let (slot, start) = slot_of(&config, &r, now);
        assert_eq!(slot, 10_000);
        assert_eq!(start.timestamp(), 1_000_000 + phase as i64);
        assert!(due(&config, &r, None, true, now).is_some());
        assert!(
            due(&config, &r, None, false, now).is_none(),
            "no rules, no scan"
        );
        let scan = ScanRecord {
            last_full_started_at: Some(start),
            last_started_at: Some(start),
            ..Default::default()
        };
        assert!(due(&config, &r, Some(&scan), true, now).is_none());
        assert_eq!(
            next_due(&config, &r, Some(&scan), now).timestamp(),
            start.timestamp() + 100
        );
    }

    #[test]
    fn failed_jobs_back_off_then_go_to_the_dead_letter_subject() {
        let config = ScannerConfig {
            job_max_failures: 3,
            job_backoff_secs: 5,
            ..Default::default()
        };
        let secs = |f, d| job_disposition(&config, 100, f, d).map(|d| d.as_secs());
        assert_eq!(secs(1, 1), Some(5));
        assert_eq!(secs(2, 7), Some(10));
        assert_eq!(secs(3, 9), None, "third failure: dead letter");
        assert_eq!(secs(1, 100), None, "the last delivery: dead letter");
        let long = ScannerConfig {
            job_max_failures: 100,
            ..config
        };
        assert_eq!(
            job_disposition(&long, 1_000, 40, 40),
            Some(Duration::from_secs(300)),
            "capped at 5 minutes, no overflow"
        );
    }

    #[test]
    fn a_busy_registry_is_retried_soon_then_less_often() {
        let ms = |d: Option<i64>| lease_busy_delay(d).as_millis();
        assert_eq!(ms(None), 25);
        assert_eq!(ms(Some(1)), 25);
        assert_eq!(ms(Some(2)), 50);
        assert_eq!(ms(Some(5)), 400);
        assert_eq!(ms(Some(8)), 3200);
        assert_eq!(ms(Some(9)), 5000);
        assert_eq!(ms(Some(1000)), 5000);
    }

    #[test]
    fn rule_changes_trigger_a_debounced_scan() {
        let config = ScannerConfig {
            rules_debounce_ms: 1000,
            ..Default::default()
        };
        let mut r = registry(None);
        let now = Utc::now();
        r.rules_changed_at = Some(now - chrono::Duration::milliseconds(500));
        assert!(due(&config, &r, None, false, now).is_none(), "not settled");
        r.rules_changed_at = Some(now - chrono::Duration::seconds(2));
        assert!(
            due(&config, &r, None, false, now)
                .unwrap()
                .starts_with("rules:")
        );
        let scan = ScanRecord {
            last_started_at: Some(now - chrono::Duration::seconds(1)),
            ..Default::default()
        };
        assert!(due(&config, &r, Some(&scan), false, now).is_none());
        let off = ScannerConfig {
            schedule: false,
            ..config
        };
        r.rules_changed_at = Some(now - chrono::Duration::seconds(2));
        assert!(
            due(&off, &r, None, false, now).is_none(),
            "schedule off: requests only"
        );
    }
}
