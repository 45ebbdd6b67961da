//! The scanner's metrics, recorded where the work happens: a scan's duration when it ends
//! (with its outcome), a tag change when its event is appended (a duplicate append is not
//! counted), the job gauges from the job worker. The registry's id is the only
//! per-registry attribute; repositories and tags never are (unbounded).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use imagelib_events::RegistryId;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};

/// How a scan ended, as the `outcome` attribute says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOutcome {
    Completed,
    Partial,
    Failed,
}

impl ScanOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanOutcome::Completed => "completed",
            ScanOutcome::Partial => "partial",
            ScanOutcome::Failed => "failed",
        }
    }
}

/// A tag change, as the `change` attribute says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagChange {
    Added,
    Moved,
    Removed,
}

impl TagChange {
    pub fn as_str(self) -> &'static str {
        match self {
            TagChange::Added => "added",
            TagChange::Moved => "moved",
            TagChange::Removed => "removed",
        }
    }
}

struct Instruments {
    scan_duration: Histogram<f64>,
    tag_changes: Counter<u64>,
    signatures: Counter<u64>,
    verify_duration: Histogram<f64>,
    referrer_bytes: Counter<u64>,
    verdicts: Counter<u64>,
    _jobs: (ObservableGauge<i64>, ObservableGauge<i64>),
}

/// Jobs waiting on the queue (all replicas), as last observed; -1 before the first look.
static QUEUED: AtomicI64 = AtomicI64::new(-1);
/// Scan jobs this process is running now.
static RUNNING: AtomicI64 = AtomicI64::new(0);

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = opentelemetry::global::meter("imagelib");
        let i = Instruments {
            scan_duration: meter
                .f64_histogram("imagelib.scan.duration")
                .with_unit("s")
                .with_description("Duration of a registry scan, by registry and outcome")
                .with_boundaries(vec![
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    3600.0,
                ])
                .build(),
            tag_changes: meter
                .u64_counter("imagelib.tags.changes")
                .with_unit("{tag}")
                .with_description("Tags added, moved and removed by scans (events appended)")
                .build(),
            signatures: meter
                .u64_counter("imagelib.trust.signatures")
                .with_unit("{signature}")
                .with_description("Signatures checked against a trust policy, by outcome")
                .build(),
            verify_duration: meter
                .f64_histogram("imagelib.trust.verify.duration")
                .with_unit("s")
                .with_description("Time to check one signature")
                .with_boundaries(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                ])
                .build(),
            referrer_bytes: meter
                .u64_counter("imagelib.trust.referrer.bytes")
                .with_unit("By")
                .with_description("Bytes of referrer manifests and blobs read from registries")
                .build(),
            verdicts: meter
                .u64_counter("imagelib.trust.policy.verdicts")
                .with_unit("{verdict}")
                .with_description("Trust policy verdicts emitted, by verdict")
                .build(),
            _jobs: (
                meter
                    .i64_observable_gauge("imagelib.scan.jobs.queued")
                    .with_unit("{job}")
                    .with_description("Scan jobs waiting on the queue, across replicas")
                    .with_callback(|o| {
                        let queued = QUEUED.load(Ordering::Relaxed);
                        if queued >= 0 {
                            o.observe(queued, &[]);
                        }
                    })
                    .build(),
                meter
                    .i64_observable_gauge("imagelib.scan.jobs.running")
                    .with_unit("{job}")
                    .with_description("Scan jobs this process is running")
                    .with_callback(|o| o.observe(RUNNING.load(Ordering::Relaxed), &[]))
                    .build(),
            ),
        };
        // Known label sets start at zero, so a dashboard query has a series before the
        // first signature or verdict.
        for outcome in ["trusted", "untrusted", "invalid"] {
            i.signatures.add(0, &[KeyValue::new("outcome", outcome)]);
        }
        for verdict in ["pass", "fail", "audit"] {
            i.verdicts.add(0, &[KeyValue::new("verdict", verdict)]);
        }
        i
    })
}

/// Creates the instruments (the trust counters with their zero series) at start.
pub fn init() {
    instruments();
}

/// A scan ended.
pub fn scan_ended(registry: RegistryId, outcome: ScanOutcome, took: Duration) {
    instruments().scan_duration.record(
        took.as_secs_f64(),
        &[
            KeyValue::new("imagelib.registry.id", registry.to_string()),
            KeyValue::new("outcome", outcome.as_str()),
        ],
    );
}

/// A tag change was appended to the stream.
pub fn tag_changed(registry: RegistryId, change: TagChange) {
    instruments().tag_changes.add(
        1,
        &[
            KeyValue::new("imagelib.registry.id", registry.to_string()),
            KeyValue::new("change", change.as_str()),
        ],
    );
}

/// The jobs waiting on the queue, as just observed.
pub fn jobs_queued(n: u64) {
    instruments();
    QUEUED.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// A scan job running in this process: counted until dropped.
#[derive(Debug)]
pub struct RunningJob(());

impl RunningJob {
    pub fn start() -> Self {
        instruments();
        RUNNING.fetch_add(1, Ordering::Relaxed);
        RunningJob(())
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One signature was checked.
pub fn signature_verified(outcome: &imagelib_trust::evidence::Outcome, took: Duration) {
    use imagelib_trust::evidence::Outcome;
    let i = instruments();
    let outcome = match outcome {
        Outcome::Trusted => "trusted",
        Outcome::Untrusted(_) => "untrusted",
        Outcome::Invalid(_) => "invalid",
    };
    i.signatures.add(1, &[KeyValue::new("outcome", outcome)]);
    i.verify_duration.record(took.as_secs_f64(), &[]);
}

/// Referrer content was read from a registry.
pub fn referrer_bytes(registry: RegistryId, bytes: u64) {
    instruments().referrer_bytes.add(
        bytes,
        &[KeyValue::new("imagelib.registry.id", registry.to_string())],
    );
}

/// A policy verdict was emitted.
pub fn policy_verdict(verdict: imagelib_events::model::PolicyVerdict) {
    let v = match verdict {
        imagelib_events::model::PolicyVerdict::Pass => "pass",
        imagelib_events::model::PolicyVerdict::Fail => "fail",
        imagelib_events::model::PolicyVerdict::Audit => "audit",
    };
    instruments()
        .verdicts
        .add(1, &[KeyValue::new("verdict", v)]);
}
