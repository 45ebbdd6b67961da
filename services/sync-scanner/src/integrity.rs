//! The integrity sweep: every immutable tag of every registry re-verified by `HEAD` within
//! a period, evenly, under a per-registry request budget (issue 14).
//!
//! Why: a registry lets anyone with push rights re-point `1.0`. A scan never re-checks a
//! tag the rules call immutable (that is what makes a rescan cheap), and a push webhook
//! only covers registries that send them, to the repository they name. Without a sweep a
//! re-pushed version would go unseen for good, and the catalog would keep the old digest.
//!
//! What:
//! - **Candidates**: the present tags the scanner announced whose class under the
//!   registry's rules is immutable ([`imagelib_rules::RuleSetIndex::tag_class`]), in
//!   (repository, tag) byte order. Read from the store, at most once a minute.
//! - **Cycle and position**: a cycle walks the candidates in that order. Its start, the
//!   last tag verified (the cursor), how many were verified and when the last request was
//!   made are kept in the NATS KV bucket `<stream>_INTEGRITY` under the registry's id —
//!   beside the scan leases, shared by every replica — so a restart, or another replica,
//!   goes on where the sweep stopped, and replicas together keep to one budget. A tag
//!   discovered behind the cursor waits for the next cycle (its discovery just read it).
//! - **Pacing** ([`SweepState::next_due`]): the next verification is due at
//!   `last + max(time left in the cycle / tags left, requests of the last verification /
//!   budget)`. The requests go one at a time, spread evenly over the period; when the
//!   budget cannot cover `tags / period`, the sweep runs at the budget and the cycle
//!   overruns the period (`imagelib.integrity.sweep.lag`). A cycle that ends starts the
//!   next one at once. After a long stop the sweep catches up at the budget, never faster.
//! - **A verification** is a session under the registry's scan lease
//!   ([`crate::runner::Runner::with_lease`]), so it never runs beside a scan of the
//!   registry (a busy registry is tried again a second later): one `HEAD` by a client built
//!   as the scans build theirs ([`crate::scan::Scanner::client_with`]: network guard,
//!   sealed credentials, caps), one request at a time and without retries (a failed `HEAD`
//!   is tried again at a later session, within the budget; after three failures the tag
//!   waits for the next cycle). Its `User-Agent` ends in `(integrity sweep)`.
//! - **A moved tag**: the sweep waits for the projections to hold every image event, then
//!   scans that repository itself, still under the lease, re-checking that tag
//!   ([`crate::scan::Recheck`] with `found_by: sweep`): `image.tag_mutated` and then
//!   `image.tag_moved`, with ids derived from the fact, so the webhook and the sweep
//!   finding one move, or a retry, make one event.
//!
//! Metrics (units given): `imagelib.integrity.mutations` {`found_by`} (scans count theirs
//! too), `imagelib.integrity.sweep.requests` (HTTP requests of the sweep, token requests
//! included), `imagelib.integrity.sweep.verified` {`outcome` = `unchanged` | `moved` |
//! `missing` | `error`}, and the gauges `imagelib.integrity.sweep.lag` (s behind the
//! period) and `imagelib.integrity.sweep.coverage` (share of the cycle verified), per
//! registry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use imagelib_events::bus::EventBus;
use imagelib_events::model::{MutationFoundBy, SyncReason};
use imagelib_events::{RegistryId, RepositoryName, Tag};
use imagelib_platform::Worker;
use imagelib_rules::{RuleSetIndex, TagClass};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};
use registry_client::{ErrorKind, Reference, RegistryClient};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::config::ScannerConfig;
use crate::runner::Runner;
use crate::scan::{Outcome, Recheck, ScanRequest};
use crate::store::{Registry, Store, StoreError};

/// The longest a registry's sweep sleeps before looking again (new tags, new rules), and
/// how long it keeps the candidates it read; a quarter of the period when that is less.
const IDLE: Duration = Duration::from_secs(60);
/// How often the list of registries is read (at most [`IDLE`] apart).
const REGISTRIES_EVERY: Duration = Duration::from_secs(10);
/// A registry being scanned is tried again after this long.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// After an error of the sweep itself (store, bucket).
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Failed verifications of one tag before it waits for the next cycle.
const MAX_FAILURES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("integrity sweep state: {0}")]
    State(String),
    #[error("registry client: {0}")]
    Client(String),
    #[error(transparent)]
    Scan(#[from] crate::scan::ScanError),
}

fn state_err(e: impl std::fmt::Display) -> SweepError {
    SweepError::State(e.to_string())
}

// ---------------------------------------------------------------- state and pacing

/// One immutable tag, as the sweep orders them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Candidate {
    pub repository: String,
    pub tag: String,
}

/// A finished cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedCycle {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub verified: u64,
}

/// Where a registry's sweep is: the value of its key in `<stream>_INTEGRITY`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepState {
    pub cycle: u64,
    pub cycle_started_at: DateTime<Utc>,
    /// The last tag verified (or given up on) in this cycle.
    #[serde(default)]
    pub cursor: Option<Candidate>,
    /// Tags verified in this cycle.
    #[serde(default)]
    pub verified: u64,
    /// When the sweep last sent a request to the registry.
    #[serde(default)]
    pub last_at: Option<DateTime<Utc>>,
    /// How many requests that verification took (a token request counts).
    #[serde(default)]
    pub last_requests: u64,
    /// Failed verifications of the tag after the cursor.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_cycle: Option<FinishedCycle>,
}

/// The period and the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    pub period: Duration,
    /// Requests per second, per registry (positive).
    pub max_rps: f64,
}

impl Pacing {
    /// `None` when the sweep is off.
    pub fn from_config(c: &ScannerConfig) -> Option<Self> {
        Some(Pacing {
            period: c.integrity_period()?,
            max_rps: c.integrity_max_rps(),
        })
    }

    /// How long a registry's sweep sleeps at most, and keeps its candidates.
    pub fn idle(&self) -> Duration {
        IDLE.min(self.period / 4).max(Duration::from_millis(100))
    }

    /// The least time `requests` requests take within the budget.
    pub fn floor(&self, requests: u64) -> Duration {
        Duration::from_secs_f64(requests.max(1) as f64 / self.max_rps)
    }
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl SweepState {
    pub fn new(now: DateTime<Utc>) -> Self {
        SweepState {
            cycle: 1,
            cycle_started_at: now,
            cursor: None,
            verified: 0,
            last_at: None,
            last_requests: 0,
            failures: 0,
            last_cycle: None,
        }
    }

    /// How many of `candidates` (sorted) come after the cursor.
    pub fn remaining(&self, candidates: &[Candidate]) -> usize {
        match &self.cursor {
            None => candidates.len(),
            Some(c) => candidates.len() - candidates.partition_point(|x| x <= c),
        }
    }

    /// The next tag to verify.
    pub fn next<'c>(&self, candidates: &'c [Candidate]) -> Option<&'c Candidate> {
        candidates.get(candidates.len() - self.remaining(candidates))
    }

    /// When the next verification is due, with `remaining` tags left in the cycle: the
    /// time left until the cycle's end shared evenly by what is left, but never sooner
    /// than the budget allows after the last verification's requests.
    pub fn next_due(&self, remaining: usize, pacing: &Pacing) -> DateTime<Utc> {
        let from = self.last_at.unwrap_or(self.cycle_started_at);
        let end = self.cycle_started_at + chrono(pacing.period);
        let left = (end - from).to_std().unwrap_or_default();
        let even = left.div_f64(remaining.max(1) as f64);
        let floor = match self.last_at {
            Some(_) => pacing.floor(self.last_requests),
            None => Duration::ZERO,
        };
        from + chrono(even.max(floor))
    }

    /// `to` was verified.
    pub fn advance(&mut self, to: Candidate) {
        self.cursor = Some(to);
        self.verified += 1;
        self.failures = 0;
    }

    /// `to` is passed over without being verified (gone, or failing).
    pub fn pass(&mut self, to: Candidate) {
        self.cursor = Some(to);
        self.failures = 0;
    }

    /// The cycle ended; the next starts now.
    pub fn roll_over(&mut self, now: DateTime<Utc>) {
        self.last_cycle = Some(FinishedCycle {
            started_at: self.cycle_started_at,
            finished_at: now,
            verified: self.verified,
        });
        self.cycle += 1;
        self.cycle_started_at = now;
        self.cursor = None;
        self.verified = 0;
        self.failures = 0;
    }

    /// How far the cycle is behind its period, with `remaining` tags left.
    pub fn lag(&self, now: DateTime<Utc>, remaining: usize, pacing: &Pacing) -> Duration {
        if remaining == 0 {
            return Duration::ZERO;
        }
        (now - (self.cycle_started_at + chrono(pacing.period)))
            .to_std()
            .unwrap_or_default()
    }

    /// The share of this cycle's tags verified so far.
    pub fn coverage(&self, remaining: usize) -> f64 {
        let total = self.verified + remaining as u64;
        if total == 0 {
            1.0
        } else {
            self.verified as f64 / total as f64
        }
    }
}

// ---------------------------------------------------------------- the bucket

/// The KV bucket of the sweep positions.
#[derive(Clone)]
pub struct Positions {
    kv: kv::Store,
}

impl std::fmt::Debug for Positions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Positions").finish_non_exhaustive()
    }
}

impl Positions {
    /// Finds or creates `<stream>_INTEGRITY` (by hand, as the lease bucket: NATS 2.9 does
    /// not answer what `create_key_value` asks first).
    pub async fn open(bus: &EventBus) -> Result<Self, SweepError> {
        let settings = bus.settings();
        let kv = crate::jobs::open_bucket(
            bus.jetstream(),
            &format!("{}_INTEGRITY", settings.name),
            "integrity sweep positions",
            settings.replicas,
            |c| c.duplicate_window = Duration::from_secs(120),
        )
        .await
        .map_err(state_err)?;
        Ok(Positions { kv })
    }

    /// The registry's state and its revision.
    pub async fn load(&self, id: RegistryId) -> Result<Option<(SweepState, u64)>, SweepError> {
        let entry = self.kv.entry(id.to_string()).await.map_err(state_err)?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        match serde_json::from_slice(&entry.value) {
            Ok(state) => Ok(Some((state, entry.revision))),
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "unreadable integrity sweep state; starting a new cycle");
                Ok(Some((SweepState::new(Utc::now()), entry.revision)))
            }
        }
    }

    /// Stores `state`: a new key when `revision` is `None`, else only over that revision
    /// (another replica's write in between wins).
    pub async fn save(
        &self,
        id: RegistryId,
        state: &SweepState,
        revision: Option<u64>,
    ) -> Result<u64, SweepError> {
        let value = Bytes::from(serde_json::to_vec(state).map_err(state_err)?);
        let key = id.to_string();
        match revision {
            Some(r) => self.kv.update(key, value, r).await.map_err(state_err),
            None => self.kv.create(key, value).await.map_err(state_err),
        }
    }

    /// The state, created (cycle starting now) when there is none.
    async fn load_or_start(&self, id: RegistryId) -> Result<(SweepState, u64), SweepError> {
        if let Some(found) = self.load(id).await? {
            return Ok(found);
        }
        let state = SweepState::new(Utc::now());
        match self.save(id, &state, None).await {
            Ok(revision) => Ok((state, revision)),
            // Created by another replica meanwhile.
            Err(_) => self
                .load(id)
                .await?
                .ok_or_else(|| SweepError::State("the state vanished".into())),
        }
    }
}

// ---------------------------------------------------------------- the store

/// The registry's immutable tags under `index`, sorted.
pub async fn candidates(
    store: &Store,
    index: &RuleSetIndex,
    registry: RegistryId,
) -> Result<Vec<Candidate>, StoreError> {
    let rows =
        sqlx::query("SELECT repository, tag FROM known_tags WHERE registry_id = $1 AND present")
            .bind(registry.0)
            .fetch_all(store.pool())
            .await?;
    let mut out = Vec::new();
    for r in rows {
        let repository: String = r.try_get("repository")?;
        let tag: String = r.try_get("tag")?;
        let (Ok(repo), Ok(t)) = (repository.parse::<RepositoryName>(), tag.parse::<Tag>()) else {
            continue;
        };
        if index.tag_class(&repo, &t) == Some(TagClass::Immutable) {
            out.push(Candidate { repository, tag });
        }
    }
    out.sort();
    Ok(out)
}

/// The digest the scanner last announced for a present tag.
async fn known_digest(
    store: &Store,
    registry: RegistryId,
    c: &Candidate,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT digest FROM known_tags WHERE registry_id = $1 AND repository = $2 AND tag = $3 AND present",
    )
    .bind(registry.0)
    .bind(&c.repository)
    .bind(&c.tag)
    .fetch_optional(store.pool())
    .await?)
}

// ---------------------------------------------------------------- metrics

struct Instruments {
    mutations: Counter<u64>,
    requests: Counter<u64>,
    verified: Counter<u64>,
    _gauges: (ObservableGauge<f64>, ObservableGauge<f64>),
}

/// Per registry: lag (s) and coverage, as last computed.
static GAUGES: Mutex<Option<HashMap<RegistryId, (f64, f64)>>> = Mutex::new(None);

fn gauge_values() -> Vec<(RegistryId, f64, f64)> {
    GAUGES
        .lock()
        .ok()
        .and_then(|g| {
            g.as_ref()
                .map(|m| m.iter().map(|(k, v)| (*k, v.0, v.1)).collect())
        })
        .unwrap_or_default()
}

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = opentelemetry::global::meter("imagelib");
        let registry = |id: RegistryId| [KeyValue::new("imagelib.registry.id", id.to_string())];
        let i = Instruments {
            mutations: meter
                .u64_counter("imagelib.integrity.mutations")
                .with_unit("{tag}")
                .with_description("Immutable tags found moved (image.tag_mutated appended), by how they were found")
                .build(),
            requests: meter
                .u64_counter("imagelib.integrity.sweep.requests")
                .with_unit("{request}")
                .with_description("HTTP requests of the integrity sweep, per registry (token requests included)")
                .build(),
            verified: meter
                .u64_counter("imagelib.integrity.sweep.verified")
                .with_unit("{tag}")
                .with_description("Immutable tags re-verified by the integrity sweep, by outcome")
                .build(),
            _gauges: (
                meter
                    .f64_observable_gauge("imagelib.integrity.sweep.lag")
                    .with_unit("s")
                    .with_description("How far a registry's integrity sweep cycle is behind its period")
                    .with_callback(move |o| {
                        for (id, lag, _) in gauge_values() {
                            o.observe(lag, &registry(id));
                        }
                    })
                    .build(),
                meter
                    .f64_observable_gauge("imagelib.integrity.sweep.coverage")
                    .with_unit("1")
                    .with_description("Share of a registry's immutable tags verified in the current sweep cycle")
                    .with_callback(move |o| {
                        for (id, _, coverage) in gauge_values() {
                            o.observe(coverage, &registry(id));
                        }
                    })
                    .build(),
            ),
        };
        // Every way a mutation is found starts at zero, so "no mutation" is a value a
        // dashboard can read rather than a missing series.
        for found_by in [
            MutationFoundBy::Scan,
            MutationFoundBy::Webhook,
            MutationFoundBy::Sweep,
        ] {
            i.mutations
                .add(0, &[KeyValue::new("found_by", found_by_str(found_by))]);
        }
        i
    })
}

/// `found_by` as the event says it.
pub fn found_by_str(f: MutationFoundBy) -> &'static str {
    match f {
        MutationFoundBy::Scan => "scan",
        MutationFoundBy::Webhook => "webhook",
        MutationFoundBy::Deploy => "deploy",
        MutationFoundBy::Sweep => "sweep",
    }
}

/// Creates the instruments (the mutation counter with its zero series).
pub fn init_metrics() {
    instruments();
}

/// An `image.tag_mutated` was appended.
pub fn mutation_found(registry: RegistryId, found_by: MutationFoundBy) {
    instruments().mutations.add(
        1,
        &[
            KeyValue::new("found_by", found_by_str(found_by)),
            KeyValue::new("imagelib.registry.id", registry.to_string()),
        ],
    );
}

fn sweep_requests(registry: RegistryId, n: u64) {
    instruments().requests.add(
        n,
        &[KeyValue::new("imagelib.registry.id", registry.to_string())],
    );
}

fn sweep_verified(registry: RegistryId, outcome: &'static str) {
    instruments().verified.add(
        1,
        &[
            KeyValue::new("imagelib.registry.id", registry.to_string()),
            KeyValue::new("outcome", outcome),
        ],
    );
}

fn set_gauges(registry: RegistryId, lag: Duration, coverage: f64) {
    instruments();
    if let Ok(mut g) = GAUGES.lock() {
        g.get_or_insert_with(HashMap::new)
            .insert(registry, (lag.as_secs_f64(), coverage));
    }
}

fn clear_gauges(registry: RegistryId) {
    if let Ok(mut g) = GAUGES.lock()
        && let Some(m) = g.as_mut()
    {
        m.remove(&registry);
    }
}

// ---------------------------------------------------------------- the worker

/// What one registry's sweep keeps between sessions.
#[derive(Default)]
struct Local {
    /// The client, and the registry settings it was built for.
    client: Option<(String, RegistryClient)>,
    candidates: Option<(tokio::time::Instant, Arc<Vec<Candidate>>)>,
}

/// The registry settings a client depends on.
fn fingerprint(r: &Registry) -> String {
    format!(
        "{}|{}|{:?}|{}|{}|{:?}",
        r.url,
        r.insecure,
        r.ca_pem,
        r.auth_kind,
        r.credential
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok())
            .unwrap_or_default(),
        r.auth_hosts
    )
}

impl Local {
    async fn candidates(
        &mut self,
        runner: &Runner,
        id: RegistryId,
        ttl: Duration,
    ) -> Result<Arc<Vec<Candidate>>, SweepError> {
        if let Some((at, c)) = &self.candidates
            && at.elapsed() < ttl
        {
            return Ok(c.clone());
        }
        let index = crate::rules::index_for(&runner.store, runner.scanner.agent(), id).await?;
        let c = Arc::new(candidates(&runner.store, &index, id).await?);
        self.candidates = Some((tokio::time::Instant::now(), c.clone()));
        Ok(c)
    }

    async fn client(
        &mut self,
        runner: &Runner,
        registry: &Registry,
    ) -> Result<RegistryClient, SweepError> {
        let print = fingerprint(registry);
        if let Some((p, c)) = &self.client
            && *p == print
        {
            return Ok(c.clone());
        }
        let client = runner
            .scanner
            .client_with(registry, |config| {
                config.max_concurrency = 1;
                config.request_budget = None;
                config.retry.max_retries = 0;
                config.user_agent = concat!(
                    "imagelib-sync-scanner/",
                    env!("CARGO_PKG_VERSION"),
                    " (integrity sweep)"
                )
                .into();
            })
            .await
            .map_err(SweepError::Client)?;
        self.client = Some((print, client.clone()));
        Ok(client)
    }
}

/// What the sweep of one registry shares.
struct Sweep {
    positions: Positions,
    pacing: Pacing,
}

impl Runner {
    /// The integrity sweep ([`crate::integrity`]): one task per registry.
    pub fn integrity_worker(self: &Arc<Self>) -> Worker {
        let me = self.clone();
        Worker::new("integrity-sweep", move |cancel| async move {
            init_metrics();
            let Some(pacing) = Pacing::from_config(&me.config) else {
                tracing::info!("integrity sweep off (IMAGELIB_SCANNER__INTEGRITY_PERIOD_SECS=0)");
                return Ok(());
            };
            if !me.until_projections_ready(&cancel).await {
                return Ok(());
            }
            let positions = loop {
                match Positions::open(&me.bus).await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::warn!(error = %e, "integrity sweep bucket unavailable; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(ERROR_RETRY) => {}
                        }
                    }
                }
            };
            let sweep = Arc::new(Sweep { positions, pacing });
            let mut tasks: HashMap<RegistryId, (CancellationToken, tokio::task::JoinHandle<()>)> =
                HashMap::new();
            loop {
                match me.store.registries().await {
                    Ok(all) => {
                        let ids: HashSet<RegistryId> = all.iter().map(|r| r.id).collect();
                        tasks.retain(|id, (token, _)| {
                            let keep = ids.contains(id);
                            if !keep {
                                token.cancel();
                                clear_gauges(*id);
                            }
                            keep
                        });
                        for id in ids {
                            tasks.entry(id).or_insert_with(|| {
                                let token = cancel.child_token();
                                let task = tokio::spawn(sweep_registry(
                                    me.clone(),
                                    sweep.clone(),
                                    id,
                                    token.clone(),
                                ));
                                (token, task)
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registries not read for the integrity sweep")
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(REGISTRIES_EVERY.min(pacing.idle())) => {}
                }
            }
            for (_, (token, task)) in tasks {
                token.cancel();
                let _ = task.await;
            }
            Ok(())
        })
    }
}

/// One registry's sweep, until `cancel`.
async fn sweep_registry(
    runner: Arc<Runner>,
    sweep: Arc<Sweep>,
    id: RegistryId,
    cancel: CancellationToken,
) {
    let mut local = Local::default();
    // The registry's request series exists from now on, at zero until the first request.
    sweep_requests(id, 0);
    loop {
        let wait = match sweep.plan(&runner, id, &mut local).await {
            Ok(None) => {
                let session = runner
                    .with_lease(id, &cancel, |token| {
                        sweep.session(&runner, id, &mut local, token)
                    })
                    .await;
                match session {
                    None => BUSY_RETRY,
                    Some(Ok(wait)) => wait,
                    Some(Err(e)) => {
                        tracing::warn!(registry = %id, error = %e, "integrity sweep session failed; retrying");
                        ERROR_RETRY
                    }
                }
            }
            Ok(Some(wait)) => wait,
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "integrity sweep not planned; retrying");
                ERROR_RETRY
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long until `at` (zero when past).
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

impl Sweep {
    /// How long to wait before the next session (`None`: one is due now), from the shared
    /// state; no lease, no request.
    async fn plan(
        &self,
        runner: &Runner,
        id: RegistryId,
        local: &mut Local,
    ) -> Result<Option<Duration>, SweepError> {
        let candidates = local.candidates(runner, id, self.pacing.idle()).await?;
        let (state, _) = self.positions.load_or_start(id).await?;
        let now = Utc::now();
        let remaining = state.remaining(&candidates);
        set_gauges(
            id,
            state.lag(now, remaining, &self.pacing),
            state.coverage(remaining),
        );
        if candidates.is_empty() {
            return Ok(Some(self.pacing.idle()));
        }
        if remaining == 0 {
            return Ok(None);
        }
        let wait = until(state.next_due(remaining, &self.pacing), now);
        Ok((!wait.is_zero()).then(|| wait.min(self.pacing.idle())))
    }

    /// One verification, under the registry's lease; how long until the next.
    #[tracing::instrument(skip_all, fields(registry.id = %id))]
    async fn session(
        &self,
        runner: &Runner,
        id: RegistryId,
        local: &mut Local,
        token: CancellationToken,
    ) -> Result<Duration, SweepError> {
        let Some(registry) = runner.store.registry(id).await? else {
            return Ok(self.pacing.idle());
        };
        let (mut state, revision) = self.positions.load_or_start(id).await?;
        let candidates = local.candidates(runner, id, self.pacing.idle()).await?;
        let now = Utc::now();
        if candidates.is_empty() {
            return Ok(self.pacing.idle());
        }
        if state.remaining(&candidates) == 0 {
            state.roll_over(now);
            local.candidates = None;
            self.positions.save(id, &state, Some(revision)).await?;
            tracing::info!(registry = %id, cycle = state.cycle, "integrity sweep cycle started");
            return Ok(Duration::ZERO);
        }
        // Another replica may have just verified one.
        let due = state.next_due(state.remaining(&candidates), &self.pacing);
        if due > now {
            return Ok(until(due, now).min(self.pacing.idle()));
        }
        let Some(next) = state.next(&candidates).cloned() else {
            return Ok(Duration::ZERO);
        };
        let parsed = (
            next.repository.parse::<RepositoryName>(),
            next.tag.parse::<Tag>(),
        );
        let known = known_digest(&runner.store, id, &next).await?;
        let (Some(known), (Ok(repo), Ok(tag))) = (known, parsed) else {
            // Removed since the candidates were read: nothing to verify.
            state.pass(next);
            self.positions.save(id, &state, Some(revision)).await?;
            return Ok(Duration::ZERO);
        };
        let client = local.client(runner, &registry).await?;
        let before = client.requests();
        let head = client
            .head_manifest(&repo, &Reference::Tag(tag.clone()))
            .await;
        let used = client.requests().saturating_sub(before);
        sweep_requests(id, used);
        state.last_at = Some(Utc::now());
        state.last_requests = used.max(1);
        let outcome = match head {
            Ok(h) if h.digest.as_str() == known => {
                state.advance(next);
                "unchanged"
            }
            Ok(h) => {
                tracing::warn!(registry = %id, repository = %repo, %tag, old = %known, new = %h.digest, "integrity sweep: an immutable tag moved; scanning its repository");
                if self.follow_up(runner, id, &repo, &tag, &token).await? {
                    state.advance(next);
                    "moved"
                } else {
                    self.failed(&mut state, next);
                    "error"
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Deleted: the next scan removes it.
                state.advance(next);
                "missing"
            }
            Err(e) => {
                tracing::info!(registry = %id, repository = %repo, %tag, error = %e, "integrity sweep: HEAD failed; tried again later");
                self.failed(&mut state, next);
                "error"
            }
        };
        sweep_verified(id, outcome);
        let remaining = state.remaining(&candidates);
        if remaining == 0 {
            tracing::info!(registry = %id, cycle = state.cycle, verified = state.verified, "integrity sweep cycle done");
            state.roll_over(Utc::now());
            local.candidates = None;
        }
        if let Err(e) = self.positions.save(id, &state, Some(revision)).await {
            tracing::warn!(registry = %id, error = %e, "integrity sweep position not saved (another replica wrote it?)");
        }
        let now = Utc::now();
        let remaining = state.remaining(&candidates).max(1);
        set_gauges(
            id,
            state.lag(now, remaining, &self.pacing),
            state.coverage(remaining),
        );
        Ok(until(state.next_due(remaining, &self.pacing), now).min(self.pacing.idle()))
    }

    /// A failed verification of `next`: tried again, or passed over after
    /// [`MAX_FAILURES`].
    fn failed(&self, state: &mut SweepState, next: Candidate) {
        state.failures += 1;
        if state.failures >= MAX_FAILURES {
            tracing::warn!(repository = %next.repository, tag = %next.tag, "integrity sweep: verification failed {MAX_FAILURES} times; the tag waits for the next cycle");
            state.pass(next);
        }
    }

    /// The tag moved: scan its repository re-checking it, once the projections hold every
    /// image event (the move may be one a scan just announced). True when the scan
    /// completed.
    async fn follow_up(
        &self,
        runner: &Runner,
        id: RegistryId,
        repo: &RepositoryName,
        tag: &Tag,
        token: &CancellationToken,
    ) -> Result<bool, SweepError> {
        if !runner.caught_up(id, None, token).await {
            return Ok(false);
        }
        let request = ScanRequest {
            registry_id: id,
            repository: Some(repo.clone()),
            reason: SyncReason::Schedule,
        };
        let recheck = Recheck {
            found_by: MutationFoundBy::Sweep,
            tags: Some(HashSet::from([tag.clone()])),
        };
        match runner
            .scanner
            .scan_with(&request, Some(recheck), None, token)
            .await?
        {
            Outcome::Completed(c) => Ok(!c.partial),
            Outcome::Failed(f) => {
                tracing::warn!(registry = %id, reason = %f.reason, "integrity sweep follow-up scan failed");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(items: &[(&str, &str)]) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = items
            .iter()
            .map(|(r, t)| Candidate {
                repository: (*r).into(),
                tag: (*t).into(),
            })
            .collect();
        v.sort();
        v
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn secs(s: f64) -> chrono::Duration {
        chrono::Duration::milliseconds((s * 1000.0) as i64)
    }

    #[test]
    fn cursor_walks_the_candidates_in_order_and_new_ones_behind_it_wait() {
        let all = cands(&[("a", "1.0"), ("a", "2.0"), ("b", "1.0")]);
        let mut s = SweepState::new(t0());
        assert_eq!(s.remaining(&all), 3);
        assert_eq!(s.next(&all).unwrap().tag, "1.0");
        s.advance(s.next(&all).unwrap().clone());
        s.advance(s.next(&all).unwrap().clone());
        assert_eq!(s.next(&all), Some(&all[2]));
        // `a:1.5` appears behind the cursor, `c:1` ahead of it.
        let grown = cands(&[
            ("a", "1.0"),
            ("a", "1.5"),
            ("a", "2.0"),
            ("b", "1.0"),
            ("c", "1"),
        ]);
        assert_eq!(s.remaining(&grown), 2);
        // The cursor's own tag was removed: the walk goes on after where it was.
        let shrunk = cands(&[("a", "1.0"), ("b", "1.0")]);
        assert_eq!(s.next(&shrunk).unwrap().repository, "b");
        s.advance(s.next(&all).unwrap().clone());
        assert_eq!(s.remaining(&all), 0);
        assert_eq!(s.coverage(0), 1.0);
        s.roll_over(t0() + secs(10.0));
        assert_eq!((s.cycle, s.verified, s.remaining(&all)), (2, 0, 3));
        assert_eq!(s.last_cycle.as_ref().unwrap().verified, 3);
    }

    #[test]
    fn verifications_spread_over_the_period() {
        let pacing = Pacing {
            period: Duration::from_secs(100),
            max_rps: 2.0,
        };
        let all = cands(&[("a", "1"), ("a", "2"), ("a", "3"), ("a", "4")]);
        let mut s = SweepState::new(t0());
        // 4 tags over 100 s: one every 25 s, the first 25 s after the start.
        let mut at = Vec::new();
        for _ in 0..4 {
            let due = s.next_due(s.remaining(&all), &pacing);
            at.push((due - t0()).num_milliseconds());
            s.last_at = Some(due);
            s.last_requests = 1;
            s.advance(s.next(&all).unwrap().clone());
        }
        assert_eq!(at, vec![25_000, 50_000, 75_000, 100_000]);
        assert_eq!(s.lag(t0() + secs(100.0), 0, &pacing), Duration::ZERO);
    }

    #[test]
    fn the_budget_bounds_the_rate_and_the_lag_shows_the_overrun() {
        let pacing = Pacing {
            period: Duration::from_secs(10),
            max_rps: 2.0,
        };
        let all: Vec<Candidate> = (0..100)
            .map(|i| Candidate {
                repository: "r".into(),
                tag: format!("{i:03}"),
            })
            .collect();
        let mut s = SweepState::new(t0());
        let mut last = t0();
        for i in 0..60 {
            let due = s.next_due(s.remaining(&all), &pacing);
            if i > 0 {
                assert!(due - last >= secs(0.5), "{i}: {:?}", due - last);
            }
            // A verification that needed a token: three requests, 1.5 s.
            s.last_requests = if i == 10 { 3 } else { 1 };
            s.last_at = Some(due);
            last = due;
            s.advance(s.next(&all).unwrap().clone());
        }
        // 60 verifications (one of 3 requests) at 2/s: 30.5 s after the 0.1 s first.
        assert_eq!((last - t0()).num_milliseconds(), 100 + 59 * 500 + 1000);
        let lag = s.lag(last, s.remaining(&all), &pacing);
        assert_eq!(lag.as_millis(), 30_600 - 10_000);
        assert!((s.coverage(s.remaining(&all)) - 0.6).abs() < 1e-9);
    }

    #[test]
    fn after_a_long_stop_the_sweep_catches_up_at_the_budget() {
        let pacing = Pacing {
            period: Duration::from_secs(3600),
            max_rps: 0.5,
        };
        let all = cands(&[("a", "1"), ("a", "2"), ("a", "3")]);
        let mut s = SweepState::new(t0());
        s.last_at = Some(t0() + secs(10.0));
        s.last_requests = 1;
        s.advance(all[0].clone());
        // Two left in the 3,590 s to the cycle's end: due 1,795 s after the last. The
        // scanner stops for two hours, past the end: due at once, then every 2 s.
        assert_eq!(s.next_due(2, &pacing), t0() + secs(1805.0));
        let back = t0() + secs(7200.0);
        s.last_at = Some(back);
        s.advance(all[1].clone());
        assert_eq!(s.next_due(1, &pacing), back + secs(2.0));
    }

    #[test]
    fn state_round_trips_and_tolerates_missing_fields() {
        let mut s = SweepState::new(t0());
        s.advance(Candidate {
            repository: "a".into(),
            tag: "1".into(),
        });
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<SweepState>(&json).unwrap(), s);
        let minimal: SweepState =
            serde_json::from_str(r#"{"cycle":3,"cycle_started_at":"2027-01-15T08:00:00Z"}"#)
                .unwrap();
        assert_eq!(
            (minimal.cycle, minimal.verified, minimal.cursor),
            (3, 0, None)
        );
    }
}
