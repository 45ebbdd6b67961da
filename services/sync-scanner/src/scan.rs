//! One scan of one registry (or one repository of it): list, select by rules, compare
//! with what the scanner last said, and emit only the differences.
//!
//! - Repositories: `_catalog` (limited to the registry URL's namespace); the registry's
//!   explicit `repositories` when it has them; the rules' exact names when `_catalog` is
//!   forbidden or missing. Only repositories some enabled rule matches are looked at.
//! - Tags: `tags/list`, then the rules' selection ([`imagelib_rules::RuleSetIndex::select`]).
//!   A tag the scanner does not know is fetched (one `GET` by tag, no `HEAD` first, except
//!   where `GET`s are metered pulls), inspected (digest-addressed content from the cache
//!   first) and classified → `image.tag_discovered`. A known tag the rules call floating
//!   (by default `latest` and tags without a digit) costs one `HEAD`; a new digest → inspected →
//!   `image.tag_moved`. A known tag of another class costs nothing, except that a scan of
//!   one repository re-checks its immutable tags ([`Recheck`]: a push webhook, a manual
//!   request for the repository, the integrity sweep's follow-up): a moved immutable tag
//!   is `image.tag_mutated` (old and new digest, how it was found, when it was seen) and
//!   then the usual `image.tag_moved`. The mutation comes first so that a crash between
//!   the two leaves the tag's digest unchanged in the state, and the retry finds and
//!   emits both again (under the same ids).
//! - Removal: a known tag no longer selected (gone from the registry, or dropped by the
//!   rules) → `image.tag_removed`, but only when the repository's listing was complete; a
//!   repository gone from a complete catalog, or no longer in scope, loses all its tags.
//!   A scan that could not list everything ends `partial` and removes nothing it did not
//!   see.
//! - Limits: a `429` whose `Retry-After` is beyond the client's cap defers the repository
//!   to the next scan (`rate_limited`), 5xx are retried by the client with backoff, and
//!   the whole scan is bounded by a timeout (what it found until then is kept; it ends
//!   `partial`).
//! - A hostile registry: every listing, manifest, index and config blob is capped
//!   ([`ScannerConfig`]); a repository that hits a cap stops there, removes nothing, and
//!   is named in `sync.completed`'s `incomplete` with the reason, while the other
//!   repositories go on. A `404` on `tags/list` of a repository with known tags is not
//!   believed at once (registries answer it transiently): the repository is reported
//!   `missing`, and its tags go only when the next scan finds it missing again, or a
//!   complete `_catalog` no longer lists it. A `401` on `_catalog` is taken like a `403`:
//!   the registry's explicit repositories and the rules' exact names are still scanned.
//!
//! - Trust: a new digest's referrers are read while the repository's other tags are
//!   inspected; then [`crate::trust::Trust::after_repository`] lists the referrers of the
//!   repository's current digests and their platforms, reads what is new and evaluates
//!   the trust policies (its errors make the repository incomplete, never the scan fail).
//!
//! Image event ids are derived from the fact (registry, repository, tag, old and new
//! digest, and the sequence of the tag's previous event), so a scan that crashed after
//! publishing and re-emits the same fact is deduplicated by JetStream, while a tag that
//! really moves back and forth gets a new id each time.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use imagelib_events::bus::EventBus;
use imagelib_events::event::{
    SyncCompleted, SyncFailed, SyncStarted, TagDiscovered, TagMoved, TagMutated, TagRemoved,
};
use imagelib_events::model::{
    ImageDetails, IncompleteReason, IncompleteScan, MutationFoundBy, RuleKind, SyncReason,
};
use imagelib_events::{
    Digest, Envelope, EventId, EventPayload, RegistryId, RepositoryName, SyncId, Tag, TraceParent,
};
use imagelib_rules::{RuleSetIndex, TagClass};
use imagelib_secrets::Vault;
use registry_client::{
    Cap, ErrorKind, ImageInspection, InspectOptions, NetworkGuard, ProviderEndpoints, Reference,
    RegistryClient, RegistryConfig,
};
use tokio_util::sync::CancellationToken;

use crate::cache::ScanCache;
use crate::config::ScannerConfig;
use crate::metrics::{ScanOutcome, TagChange};
use crate::rules::AgentRules;
use crate::store::{KnownTag, Registry, Store, StoreError};
use crate::trust::{Current, RepoScan, Roots, Trust};

/// What to scan and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanRequest {
    pub registry_id: RegistryId,
    /// One repository only (a webhook push); the whole registry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryName>,
    pub reason: SyncReason,
}

/// Which immutable tags a scan re-checks by `HEAD`, and how a move it finds was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    pub found_by: MutationFoundBy,
    /// Only these tags; every immutable tag of the scanned repository when `None`.
    pub tags: Option<HashSet<Tag>>,
}

impl Recheck {
    /// What a request re-checks by itself: a scan of one repository asked by a push
    /// webhook (`webhook`) or by hand (`scan`) re-checks every immutable tag of it; a scan
    /// of the whole registry leaves them to the integrity sweep.
    pub fn for_request(request: &ScanRequest) -> Option<Recheck> {
        let found_by = match (request.reason, &request.repository) {
            (SyncReason::Webhook, Some(_)) => MutationFoundBy::Webhook,
            (SyncReason::Manual, Some(_)) => MutationFoundBy::Scan,
            _ => return None,
        };
        Some(Recheck {
            found_by,
            tags: None,
        })
    }

    fn covers(&self, tag: &Tag) -> bool {
        self.tags.as_ref().is_none_or(|t| t.contains(tag))
    }
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(SyncCompleted),
    Failed(SyncFailed),
}

/// Why a scan did not run at all (nothing was emitted; the job is retried).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] imagelib_events::bus::BusError),
    #[error("registry {0} is unknown or removed")]
    UnknownRegistry(RegistryId),
}

/// Scans registries; shared by every scan of the process.
#[derive(Debug, Clone)]
pub struct Scanner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    bus: EventBus,
    vault: Arc<Vault>,
    guard: NetworkGuard,
    endpoints: ProviderEndpoints,
    agent: Arc<AgentRules>,
    config: ScannerConfig,
    actor: String,
    trust: Trust,
}

/// A selected tag whose digest is not the one the scanner last announced.
struct Change<'t> {
    tag: &'t Tag,
    rule_kind: RuleKind,
    known: Option<&'t KnownTag>,
    digest: Digest,
    /// An immutable tag re-checked and found moved: how, and when the registry said so.
    mutation: Option<(MutationFoundBy, DateTime<Utc>)>,
}

/// Counts of one scan, shared by its repository tasks (and read after a timeout).
#[derive(Debug, Default)]
struct Tally {
    repositories: u64,
    tags_seen: u64,
    added: u64,
    moved: u64,
    removed: u64,
    partial: bool,
    rate_limited: BTreeSet<RepositoryName>,
    errors: Vec<String>,
    incomplete: Vec<IncompleteScan>,
    incomplete_more: u64,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.partial = true;
        if self.errors.len() < 20 {
            self.errors.push(what);
        }
    }

    /// Records why `repository` (or the catalog) is incomplete, once per pair and at most
    /// [`SyncCompleted::MAX_INCOMPLETE`] entries (the rest are counted).
    fn incomplete(&mut self, repository: Option<&RepositoryName>, reason: IncompleteReason) {
        self.partial = true;
        let entry = IncompleteScan {
            repository: repository.cloned(),
            reason,
        };
        if self.incomplete.contains(&entry) {
            return;
        }
        if self.incomplete.len() < SyncCompleted::MAX_INCOMPLETE {
            self.incomplete.push(entry);
        } else {
            self.incomplete_more = self.incomplete_more.saturating_add(1);
        }
    }
}

/// Why a registry error leaves a repository incomplete.
fn reason_of(e: &registry_client::Error) -> IncompleteReason {
    match e.cap() {
        Some(Cap::ManifestBytes) => IncompleteReason::ManifestTooLarge,
        Some(Cap::ConfigBytes) => IncompleteReason::ConfigTooLarge,
        Some(Cap::IndexChildren) => IncompleteReason::TooManyIndexChildren,
        Some(Cap::ListingItems) => IncompleteReason::TooManyTags,
        Some(Cap::ListingPages) => IncompleteReason::TooManyPages,
        Some(Cap::ListingBytes) => IncompleteReason::ListingTooLarge,
        None => match e.kind() {
            ErrorKind::RateLimited => IncompleteReason::RateLimited,
            ErrorKind::Protocol | ErrorKind::DigestMismatch | ErrorKind::NotARegistry => {
                IncompleteReason::Protocol
            }
            ErrorKind::BudgetExhausted => IncompleteReason::BudgetExhausted,
            ErrorKind::Timeout => IncompleteReason::Timeout,
            _ => IncompleteReason::Error,
        },
    }
}

/// What one scan works with.
struct Ctx<'a> {
    scanner: &'a Inner,
    registry: &'a Registry,
    client: &'a RegistryClient,
    index: &'a RuleSetIndex,
    tally: &'a Mutex<Tally>,
    traceparent: Option<TraceParent>,
    cancel: &'a CancellationToken,
    /// Repositories the previous scan found missing (`404` on `tags/list`).
    missing_before: HashSet<RepositoryName>,
    /// Referrer bytes the scan may still read.
    referrer_budget: std::sync::atomic::AtomicU64,
    /// Why the scan runs (a scheduled one re-lists known digests' referrers less often).
    reason: SyncReason,
    /// The immutable tags it re-checks.
    recheck: Option<Recheck>,
}

impl Scanner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        bus: EventBus,
        vault: Arc<Vault>,
        guard: NetworkGuard,
        endpoints: ProviderEndpoints,
        agent: Arc<AgentRules>,
        config: ScannerConfig,
        roots: Roots,
    ) -> Self {
        let actor = if config.instance.is_empty() {
            format!("system:{}", crate::NAME)
        } else {
            format!("system:{}/{}", crate::NAME, config.instance)
        };
        let trust = Trust::new(
            store.clone(),
            bus.clone(),
            actor.clone(),
            agent.clone(),
            roots,
            config.max_referrer_bytes,
            Duration::from_secs(config.referrers_recheck_secs),
        );
        Scanner {
            inner: Arc::new(Inner {
                store,
                bus,
                vault,
                guard,
                endpoints,
                agent,
                config,
                actor,
                trust,
            }),
        }
    }

    /// The trust side: evaluation from the store (re-evaluation on rule changes and on
    /// the timer).
    pub fn trust(&self) -> &Trust {
        &self.inner.trust
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn agent(&self) -> &AgentRules {
        &self.inner.agent
    }

    /// The `actor` of this process's events.
    pub fn actor(&self) -> &str {
        &self.inner.actor
    }

    /// Scans as `request` says: `sync.started`, the image events, then `sync.completed`
    /// or `sync.failed`. `cancel` stops the scan early (the lease was lost, or the process
    /// is stopping); it then ends `failed`. Immutable tags are re-checked as
    /// [`Recheck::for_request`] says.
    pub async fn scan(
        &self,
        request: &ScanRequest,
        traceparent: Option<TraceParent>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ScanError> {
        self.scan_with(request, Recheck::for_request(request), traceparent, cancel)
            .await
    }

    /// [`Self::scan`], re-checking the immutable tags `recheck` names (the integrity
    /// sweep's follow-up of a tag it found moved).
    #[tracing::instrument(skip_all, fields(registry.id = %request.registry_id, repository = ?request.repository, reason = ?request.reason))]
    pub async fn scan_with(
        &self,
        request: &ScanRequest,
        recheck: Option<Recheck>,
        traceparent: Option<TraceParent>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ScanError> {
        let started = Instant::now();
        let outcome = self.scan_once(request, recheck, traceparent, cancel).await;
        // A scan that did not run (the job is retried) has no outcome to record.
        if let Ok(o) = &outcome {
            let kind = match o {
                Outcome::Completed(c) if c.partial => ScanOutcome::Partial,
                Outcome::Completed(_) => ScanOutcome::Completed,
                Outcome::Failed(_) => ScanOutcome::Failed,
            };
            crate::metrics::scan_ended(request.registry_id, kind, started.elapsed());
        }
        outcome
    }

    /// A registry client as scans make them (network guard, credentials, caps), changed
    /// by `edit` (the integrity sweep makes one request at a time, without retries).
    pub async fn client_with(
        &self,
        registry: &Registry,
        edit: impl FnOnce(&mut RegistryConfig),
    ) -> Result<RegistryClient, String> {
        self.inner.client_with(registry, edit).await
    }

    async fn scan_once(
        &self,
        request: &ScanRequest,
        recheck: Option<Recheck>,
        traceparent: Option<TraceParent>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ScanError> {
        let s = &*self.inner;
        let registry = s
            .store
            .registry(request.registry_id)
            .await?
            .ok_or(ScanError::UnknownRegistry(request.registry_id))?;
        let sync_id = SyncId::new();
        let started = Instant::now();
        s.emit(
            SyncStarted {
                registry_id: registry.id,
                sync_id,
                repository: request.repository.clone(),
                reason: request.reason,
            },
            None,
            traceparent,
        )
        .await?;
        tracing::info!(registry = %registry.id, %sync_id, repository = ?request.repository, reason = ?request.reason, "scan started");

        let tally = Mutex::new(Tally::default());
        let t_client = Instant::now();
        let client = match s.client_for(&registry).await {
            Ok(c) => c,
            Err(reason) => return s.fail(&registry, sync_id, reason, traceparent).await,
        };
        let index = match crate::rules::index_for(&s.store, &s.agent, registry.id).await {
            Ok(i) => i,
            Err(e) => return s.fail(&registry, sync_id, e.to_string(), traceparent).await,
        };
        tracing::debug!(
            elapsed_ms = t_client.elapsed().as_millis() as u64,
            "client and rules ready"
        );
        let missing_before = match s.store.scan(registry.id).await {
            Ok(record) => missing_in(record.as_ref()),
            Err(e) => return s.fail(&registry, sync_id, e.to_string(), traceparent).await,
        };
        let ctx = Ctx {
            scanner: s,
            registry: &registry,
            client: &client,
            index: &index,
            tally: &tally,
            traceparent,
            cancel,
            missing_before,
            referrer_budget: std::sync::atomic::AtomicU64::new(s.config.max_scan_referrer_bytes),
            reason: request.reason,
            recheck,
        };
        let body = ctx.run(request.repository.as_ref());
        // The body also watches `cancel` and winds down early; an interrupted scan is
        // reported as such whichever branch completes first.
        let interrupted =
            || Err("the scan was interrupted (lease lost or shutting down)".to_owned());
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => interrupted(),
            r = tokio::time::timeout(s.config.scan_timeout(), body) => match r {
                Ok(_) if cancel.is_cancelled() => interrupted(),
                Ok(r) => r,
                Err(_) => {
                    let mut t = tally.lock();
                    t.error(format!("the scan took longer than {}s and was cut", s.config.scan_timeout().as_secs()));
                    t.incomplete(None, IncompleteReason::Timeout);
                    Ok(())
                }
            },
        };
        let requests = client.stats().requests;
        if let Some(rl) = client.rate_limit() {
            let status = crate::api::RateLimitStatus::from(rl);
            tracing::info!(registry = %registry.id, limit = rl.limit, remaining = rl.remaining, "the registry's pull budget");
            if let Err(e) = s
                .store
                .record_rate_limit(registry.id, serde_json::json!(status))
                .await
            {
                tracing::warn!(registry = %registry.id, error = %e, "could not keep the pull budget");
            }
        }
        match result {
            Err(reason) => s.fail(&registry, sync_id, reason, traceparent).await,
            Ok(()) => {
                let t = std::mem::take(&mut *tally.lock());
                if !t.errors.is_empty() {
                    tracing::warn!(registry = %registry.id, %sync_id, errors = ?t.errors, "scan ended partial");
                }
                let completed = SyncCompleted {
                    registry_id: registry.id,
                    sync_id,
                    repositories: t.repositories,
                    tags_seen: t.tags_seen,
                    added: t.added,
                    moved: t.moved,
                    removed: t.removed,
                    requests,
                    duration_ms: started.elapsed().as_millis() as u64,
                    partial: t.partial || !t.rate_limited.is_empty(),
                    rate_limited: t.rate_limited.into_iter().collect(),
                    incomplete: t.incomplete,
                    incomplete_more: t.incomplete_more,
                };
                tracing::info!(registry = %registry.id, %sync_id, added = completed.added, moved = completed.moved, removed = completed.removed, requests, partial = completed.partial, "scan completed");
                s.emit(completed.clone(), None, traceparent).await?;
                Ok(Outcome::Completed(completed))
            }
        }
    }
}

impl Inner {
    /// Publishes an event; true when it is new to the stream.
    async fn emit(
        &self,
        payload: impl Into<EventPayload>,
        id: Option<EventId>,
        traceparent: Option<TraceParent>,
    ) -> Result<bool, ScanError> {
        let mut env = Envelope::new(crate::NAME, payload)
            .with_actor(self.actor.clone())
            .with_traceparent(traceparent);
        if let Some(id) = id {
            env = env.with_id(id);
        }
        let receipt = self.bus.publish(&env).await?;
        // Image events reach the state through the projector (a scan never reads a tag it
        // wrote, and the next scan waits for the projector to catch up); scan events are
        // applied at once so the status is current.
        if env.payload.aggregate() != imagelib_events::Aggregate::Image {
            self.store.apply(receipt.sequence, &env).await?;
        }
        Ok(!receipt.duplicate)
    }

    async fn fail(
        &self,
        registry: &Registry,
        sync_id: SyncId,
        reason: String,
        traceparent: Option<TraceParent>,
    ) -> Result<Outcome, ScanError> {
        tracing::warn!(registry = %registry.id, %sync_id, %reason, "scan failed");
        let failed = SyncFailed {
            registry_id: registry.id,
            sync_id,
            reason,
        };
        self.emit(failed.clone(), None, traceparent).await?;
        Ok(Outcome::Failed(failed))
    }

    /// A registry client of its own for this scan: its budget and counts are the scan's.
    async fn client_for(&self, registry: &Registry) -> Result<RegistryClient, String> {
        self.client_with(registry, |_| {}).await
    }

    async fn client_with(
        &self,
        registry: &Registry,
        edit: impl FnOnce(&mut RegistryConfig),
    ) -> Result<RegistryClient, String> {
        let c = &self.config;
        let mut config =
            RegistryConfig::new(&registry.url, registry.insecure).map_err(|e| e.to_string())?;
        config.ca_pem = registry.ca_pem.clone();
        config.max_concurrency = c.max_concurrency.max(1);
        config.request_budget = c.request_budget;
        config.page_size = c.page_size;
        config.request_timeout = Duration::from_secs(c.request_timeout_secs.max(1));
        config.retry.max_retry_after = Duration::from_secs(c.max_retry_after_secs);
        config.rate_limit_reserve_percent = c.rate_limit_reserve_percent;
        config.max_manifest_bytes = c.max_manifest_bytes;
        config.max_blob_bytes = c.max_config_bytes;
        config.max_index_children = c.max_index_children;
        config.max_listing_items = c.max_tags;
        config.max_pages = c.max_pages;
        config.max_listing_bytes = c.max_listing_bytes;
        config.max_page_bytes = c.max_page_bytes;
        config.guard = self.guard.clone();
        config.auth_hosts = registry.auth_hosts.clone();
        if let Some(proxy) = &registry.proxy_url {
            // The registry's own proxy: its address passes the guard like the registry's.
            config.proxy = Some(proxy.clone());
            config.no_proxy = registry.no_proxy.clone();
            config.guard_proxy = true;
        }
        config.registry_id = Some(registry.id.to_string());
        config.user_agent = concat!("imagelib-sync-scanner/", env!("CARGO_PKG_VERSION")).into();
        edit(&mut config);
        let provider = crate::credentials::provider(
            &self.vault,
            registry.id,
            &registry.registry_type,
            registry.credential.as_ref(),
            &config.url,
            &self.guard,
            &self.endpoints,
            registry.ca_pem.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        RegistryClient::with_provider(config, provider).map_err(|e| e.to_string())
    }
}

/// How a registry client error is handled in a scan.
fn is_rate_limited(e: &registry_client::Error) -> bool {
    e.kind() == ErrorKind::RateLimited
}

/// Ends a repository's scan where it is, and removes nothing of it: a cap (the registry
/// is hostile or runaway) or a rate limit beyond the wait cap.
fn stops_repository(e: &registry_client::Error) -> bool {
    is_rate_limited(e) || e.cap().is_some()
}

/// The repositories a scan's `sync.completed` reported missing.
fn missing_in(record: Option<&crate::store::ScanRecord>) -> HashSet<RepositoryName> {
    let Some(summary) = record.and_then(|r| r.last_summary.clone()) else {
        return HashSet::new();
    };
    let Ok(completed) = serde_json::from_value::<SyncCompleted>(summary) else {
        return HashSet::new();
    };
    completed
        .incomplete
        .into_iter()
        .filter(|i| i.reason == IncompleteReason::Missing)
        .filter_map(|i| i.repository)
        .collect()
}

impl Ctx<'_> {
    fn tally(&self) -> parking_lot::MutexGuard<'_, Tally> {
        self.tally.lock()
    }

    /// The scan body. `Err` is a reason for `sync.failed` (nothing could be scanned).
    async fn run(&self, only: Option<&RepositoryName>) -> Result<(), String> {
        let registry = self.registry;
        let store = &self.scanner.store;
        let index = self.index;
        let (listed, complete): (Vec<RepositoryName>, bool) = match only {
            Some(repo) => (vec![repo.clone()], true),
            None => self.repositories().await?,
        };
        // Repositories whose known tags all go: gone from a complete listing, or no
        // longer matched by any enabled rule.
        let listed_set: HashSet<&RepositoryName> = listed.iter().collect();
        if only.is_none() {
            let known = store
                .known_repositories(registry.id)
                .await
                .map_err(|e| e.to_string())?;
            for repo in known {
                let gone = complete && !listed_set.contains(&repo);
                if gone || !index.in_scope(&repo) {
                    self.remove_all(&repo).await.map_err(|e| e.to_string())?;
                }
            }
        }
        if let Some(repo) = only
            && !index.in_scope(repo)
        {
            // A request for a repository no enabled rule covers (any more).
            self.remove_all(repo).await.map_err(|e| e.to_string())?;
        }
        let in_scope: Vec<RepositoryName> =
            listed.into_iter().filter(|r| index.in_scope(r)).collect();
        let concurrency = self.scanner.config.repository_concurrency.max(1);
        let tasks: Vec<Task<'_>> = in_scope
            .into_iter()
            .map(|repo| {
                Box::pin(async move {
                    if self.cancel.is_cancelled() {
                        return;
                    }
                    if let Err(e) = self.repository(&repo).await {
                        let mut t = self.tally();
                        t.error(format!("{repo}: {e}"));
                        t.incomplete(Some(&repo), IncompleteReason::Error);
                    }
                }) as Task<'_>
            })
            .collect();
        run_all(tasks, concurrency).await;
        Ok(())
    }

    /// The registry's stored credentials, for a vendor API that takes them too (Docker
    /// Hub's login, GitHub's PAT or installation token); `None` for an anonymous registry.
    /// They come from the scan's client, so an exchanged credential (a GitHub App's
    /// installation token) is the one the registry requests use, not a second exchange.
    async fn api_login(&self) -> Result<Option<registry_client::Credentials>, String> {
        if self.registry.credential.is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.client
                .provider()
                .credentials()
                .await
                .map_err(|e| e.to_string())?
                .credentials,
        ))
    }

    /// Keeps what a GitHub packages listing saw (the API budget, the packages'
    /// visibility) for the status API; failing to keep it does not fail the scan.
    async fn keep_api_listing(&self, packages: &registry_client::vendor::ghcr::Packages) {
        let registry = self.registry;
        let now = chrono::Utc::now();
        let visibility = crate::api::PackageVisibility::of(packages, now);
        tracing::info!(registry = %registry.id, by_visibility = ?visibility.counts, "ghcr packages listed through the GitHub API");
        let budget = packages.rate_limit.as_ref().map(|rl| {
            tracing::info!(registry = %registry.id, limit = rl.limit, remaining = rl.remaining, "the GitHub API budget");
            serde_json::json!(crate::api::ApiRateLimitStatus::new(rl, now))
        });
        if let Err(e) = self
            .scanner
            .store
            .record_api_listing(registry.id, budget, serde_json::json!(visibility))
            .await
        {
            tracing::warn!(registry = %registry.id, error = %e, "could not keep the GitHub listing's budget and visibility");
        }
    }

    /// The registry's repositories and whether that list is the whole truth.
    async fn repositories(&self) -> Result<(Vec<RepositoryName>, bool), String> {
        let registry = self.registry;
        let index = self.index;
        if !index.has_enabled() {
            return Ok((Vec::new(), true));
        }
        let exact: BTreeSet<RepositoryName> =
            index.exact_repositories().into_iter().cloned().collect();
        if !registry.repositories.is_empty() {
            let mut all: BTreeSet<RepositoryName> = registry.repositories.iter().cloned().collect();
            all.extend(exact);
            return Ok((all.into_iter().collect(), true));
        }
        let listed = if registry.registry_type == "dockerhub" {
            // Hub has no `_catalog`: a namespace's repositories come from the Hub API;
            // without a namespace, the rules' exact names.
            let Some(ns) = self.client.config().url.namespace() else {
                return Ok((exact.into_iter().collect(), false));
            };
            let api = self
                .scanner
                .endpoints
                .dockerhub_api()
                .map_err(|e| format!("the Hub API URL: {e}"))?;
            // The registry's credentials (a Docker ID and token) log in to the Hub API
            // too, which then lists private repositories as well.
            let login = self.api_login().await?;
            registry_client::vendor::dockerhub::namespace_repositories(
                self.client.config(),
                &api,
                ns,
                login.as_ref(),
            )
            .await
            .map(|mut listing| {
                // The rules' exact names of the namespace count too (private repositories
                // an anonymous listing does not show).
                for name in exact
                    .iter()
                    .filter(|n| n.as_str().starts_with(&format!("{ns}/")))
                {
                    if !listing.items.contains(name) {
                        listing.items.push(name.clone());
                    }
                }
                listing
            })
        } else if registry.registry_type == "ghcr" {
            // ghcr.io has no `_catalog`: an owner's container packages come from the
            // GitHub REST API (the credentials' PAT as its bearer token); without an
            // owner, the rules' exact names.
            let Some(owner) = self.client.config().url.namespace() else {
                return Ok((exact.into_iter().collect(), false));
            };
            let api = self
                .scanner
                .endpoints
                .github_api()
                .map_err(|e| format!("the GitHub API URL: {e}"))?;
            let login = self.api_login().await?;
            let listed = registry_client::vendor::ghcr::owner_packages(
                self.client.config(),
                &api,
                owner,
                login.as_ref(),
            )
            .await;
            if let Ok(packages) = &listed {
                self.keep_api_listing(packages).await;
            }
            listed.map(|packages| {
                let mut listing = packages.listing;
                let prefix = format!("{}/", owner.to_ascii_lowercase());
                for name in exact.iter().filter(|n| n.as_str().starts_with(&prefix)) {
                    if !listing.items.contains(name) {
                        listing.items.push(name.clone());
                    }
                }
                listing
            })
        } else if registry.registry_type == "gcr"
            && let Ok(location) = registry_client::vendor::gar::GarLocation::for_registry(
                registry.artifact_registry.as_deref(),
                &self.client.config().url,
            )
        {
            // Artifact Registry answers `_catalog` to a reader of the whole project; a
            // credential scoped to one repository is refused it, and then the Artifact
            // Registry API lists the repository's packages (with an access token only).
            // The repository is the registration's `artifact_registry` when the registry
            // is reached through another address (a mirror, a private endpoint).
            let api = self
                .scanner
                .endpoints
                .artifact_registry_api()
                .map_err(|e| format!("the Artifact Registry API URL: {e}"))?;
            let login = self.api_login().await?;
            registry_client::vendor::gar::catalog_or_api(
                self.client,
                &api,
                &location,
                login.as_ref(),
            )
            .await
        } else if registry.registry_type == "harbor" {
            // Harbor refuses `_catalog` to robot accounts. A project-scoped registration
            // goes straight to Harbor's API (nothing of another project is asked for);
            // otherwise `_catalog` first, and Harbor's API when it is refused.
            let scope = self.client.config().url.namespace();
            let catalog = match scope {
                Some(_) => None,
                None => Some(self.client.catalog().await),
            };
            match catalog {
                Some(Ok(listing)) => Ok(listing),
                Some(Err(e))
                    if !matches!(
                        e.kind(),
                        ErrorKind::Unauthorized | ErrorKind::Forbidden | ErrorKind::NotFound
                    ) =>
                {
                    Err(e)
                }
                _ => {
                    let login = self.api_login().await?;
                    let api = registry_client::vendor::harbor::HarborApi::new(
                        self.client.config(),
                        login.as_ref(),
                    )
                    .map_err(|e| e.to_string())?;
                    api.repositories().await.map(|mut listing| {
                        tracing::info!(registry = %registry.id, project = scope, repositories = listing.items.len(), "repositories listed through the Harbor API");
                        // The rules' exact names (within the project) count too.
                        let inside = |n: &RepositoryName| {
                            scope.is_none_or(|ns| {
                                n.as_str()
                                    .strip_prefix(ns)
                                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                            })
                        };
                        for name in exact.iter().filter(|n| inside(n)) {
                            if !listing.items.contains(name) {
                                listing.items.push(name.clone());
                            }
                        }
                        listing
                    })
                }
            }
        } else {
            self.client.catalog().await
        };
        match listed {
            Ok(listing) => {
                if !listing.complete {
                    let why = listing
                        .error
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "the catalog listing was cut".into());
                    let reason = listing
                        .error
                        .as_ref()
                        .map(reason_of)
                        .unwrap_or(IncompleteReason::Error);
                    let mut t = self.tally();
                    t.error(format!("_catalog: {why}"));
                    t.incomplete(None, reason);
                }
                Ok((listing.items, listing.complete))
            }
            Err(e) => match e.kind() {
                // No usable `_catalog` (Docker Hub, GHCR, ECR without the permission; a
                // plain 401 from registries that do not say 403): the rules' exact
                // names, and nothing else is known to exist or not.
                ErrorKind::Forbidden | ErrorKind::NotFound => {
                    tracing::info!(registry = %registry.id, error = %e, "no usable _catalog; scanning the rules' exact repositories");
                    Ok((exact.into_iter().collect(), false))
                }
                // Some registries say 401 where they mean 403; the credentials are fine
                // when `/v2/` accepts them, otherwise the scan fails as unauthorized.
                ErrorKind::Unauthorized => match self.client.ping().await {
                    Ok(_) => {
                        tracing::info!(registry = %registry.id, error = %e, "_catalog answered 401 to valid credentials; scanning the rules' exact repositories");
                        Ok((exact.into_iter().collect(), false))
                    }
                    Err(_) => Err(e.to_string()),
                },
                _ if e.kind() == ErrorKind::RateLimited || e.cap().is_some() => {
                    let mut t = self.tally();
                    t.error(format!("_catalog: {e}"));
                    t.incomplete(None, reason_of(&e));
                    Ok((exact.into_iter().collect(), false))
                }
                _ => Err(e.to_string()),
            },
        }
    }

    /// Harbor's scans of the repository's artifacts (the trust pass reports the completed
    /// ones of current digests). Not reading them (a robot without the artifact
    /// permission, Harbor down) leaves the scan as it is; the next scan asks again.
    async fn harbor_scans(
        &self,
        repo: &RepositoryName,
    ) -> Vec<registry_client::vendor::harbor::ArtifactScan> {
        let scans = match self.api_login().await {
            Ok(login) => {
                match registry_client::vendor::harbor::HarborApi::new(
                    self.client.config(),
                    login.as_ref(),
                ) {
                    Ok(api) => api.scan_overviews(repo).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        match scans {
            Ok(scans) => scans.items,
            Err(error) => {
                tracing::info!(registry = %self.registry.id, repository = %repo, %error, "Harbor scan overviews not read; next scan");
                Vec::new()
            }
        }
    }

    /// Emits `tag_removed` for every present tag of `repo`.
    async fn remove_all(&self, repo: &RepositoryName) -> Result<(), ScanError> {
        let known = self
            .scanner
            .store
            .known_tags(self.registry.id, repo)
            .await?;
        for (tag, k) in known.iter().filter(|(_, k)| k.present) {
            self.remove(repo, tag, k).await?;
        }
        Ok(())
    }

    async fn remove(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        k: &KnownTag,
    ) -> Result<(), ScanError> {
        let id = EventId::for_fact(&format!(
            "image/{}/{repo}:{tag}/removed/{}/after/{}",
            self.registry.id, k.digest, k.last_sequence
        ));
        let event = TagRemoved {
            registry_id: self.registry.id,
            repository: repo.clone(),
            tag: tag.clone(),
            digest: k.digest.clone(),
        };
        if self.scanner.emit(event, Some(id), self.traceparent).await? {
            self.tally().removed += 1;
            crate::metrics::tag_changed(self.registry.id, TagChange::Removed);
        }
        Ok(())
    }

    /// One repository: list, compare, emit.
    async fn repository(&self, repo: &RepositoryName) -> Result<(), ScanError> {
        let registry = self.registry;
        let store = &self.scanner.store;
        // What the scanner knows is read while the registry lists.
        let (listing, known) =
            tokio::join!(self.client.tags(repo), store.known_tags(registry.id, repo));
        let known = known?;
        let listing = match listing {
            Ok(l) => l,
            Err(e) if is_rate_limited(&e) => {
                let mut t = self.tally();
                t.rate_limited.insert(repo.clone());
                t.incomplete(Some(repo), IncompleteReason::RateLimited);
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let has_tags = known.values().any(|k| k.present);
                if has_tags && !self.missing_before.contains(repo) {
                    // Registries answer 404 transiently (a replica behind, a storage
                    // hiccup): believed only when the next scan sees it again.
                    tracing::info!(registry = %registry.id, repository = %repo, "tags/list answered 404; the repository is marked missing, its tags stay until the next scan agrees");
                    self.tally()
                        .incomplete(Some(repo), IncompleteReason::Missing);
                    return Ok(());
                }
                // Missing twice in a row (or nothing known): no tags, for sure.
                registry_client::Listing {
                    items: Vec::new(),
                    complete: true,
                    pages: 0,
                    skipped: Vec::new(),
                    error: None,
                }
            }
            Err(e) => {
                let mut t = self.tally();
                t.error(format!("{repo}: tags/list: {e}"));
                t.incomplete(Some(repo), reason_of(&e));
                return Ok(());
            }
        };
        let complete = listing.complete;
        if let Some(e) = &listing.error {
            let mut t = self.tally();
            if is_rate_limited(e) {
                t.rate_limited.insert(repo.clone());
            } else {
                t.error(format!("{repo}: tags/list: {e}"));
            }
            t.incomplete(Some(repo), reason_of(e));
            if stops_repository(e) {
                // A cap (or a long rate limit): the repository ends here, and what its
                // listing showed so far is not announced either.
                return Ok(());
            }
        }
        let tags = listing.items;
        {
            let mut t = self.tally();
            t.repositories += 1;
            t.tags_seen += tags.len() as u64;
        }
        let selected = self.index.select(repo, &tags);
        let selected_names: HashSet<&Tag> = selected.iter().map(|s| s.tag).collect();
        let cache = ScanCache::new();
        let deferred = std::sync::atomic::AtomicBool::new(false);
        // Several tags per request slot, so that publishing and the content cache's
        // reads overlap with requests (the client caps what is in flight).
        let concurrency = self.scanner.config.max_concurrency.max(1) * 4;
        let handle = |tag: &Tag, result: Result<(), TagError>| match result {
            Ok(()) => {}
            Err(TagError::Registry(e)) if stops_repository(&e) => {
                deferred.store(true, std::sync::atomic::Ordering::Relaxed);
                let mut t = self.tally();
                if is_rate_limited(&e) {
                    t.rate_limited.insert(repo.clone());
                } else {
                    t.error(format!("{repo}:{tag}: {e}"));
                }
                t.incomplete(Some(repo), reason_of(&e));
            }
            // Deleted between the listing and now: the next scan removes it.
            Err(TagError::Registry(e)) if e.kind() == ErrorKind::NotFound => {}
            Err(TagError::Registry(e)) => {
                let mut t = self.tally();
                t.error(format!("{repo}:{tag}: {e}"));
                t.incomplete(Some(repo), reason_of(&e));
            }
            Err(e) => {
                let mut t = self.tally();
                t.error(format!("{repo}:{tag}: {e}"));
                t.incomplete(Some(repo), IncompleteReason::Error);
            }
        };
        let stop =
            || deferred.load(std::sync::atomic::Ordering::Relaxed) || self.cancel.is_cancelled();

        // 1. Where each tag points. A tag not known is fetched at once (one `GET` by tag:
        //    its digest and its manifest, which a `HEAD` then a `GET` would cost twice),
        //    except where manifest `GET`s are metered and `HEAD`s are not (Docker Hub's
        //    pull limit): there a `HEAD`, then the content cache first. A known floating
        //    tag, and a known immutable one this scan re-checks, costs one `HEAD`.
        let metered =
            self.registry.registry_type == "dockerhub" || self.client.rate_limit().is_some();
        let changed: Mutex<Vec<Change<'_>>> = Mutex::new(Vec::new());
        let tasks: Vec<Task<'_>> = selected
            .iter()
            .map(|s| {
                let (known, changed, handle, stop, cache) =
                    (&known, &changed, &handle, &stop, &cache);
                Box::pin(async move {
                    let k = known.get(s.tag);
                    let present = k.filter(|k| k.present);
                    let rechecked = self
                        .recheck
                        .as_ref()
                        .filter(|r| s.class == TagClass::Immutable && r.covers(s.tag));
                    if stop() || (present.is_some() && !s.mutable && rechecked.is_none()) {
                        return;
                    }
                    let reference = Reference::Tag(s.tag.clone());
                    let found = if present.is_none() && !metered {
                        self.client.get_manifest(repo, &reference).await.map(|f| {
                            registry_client::ManifestCache::put(
                                cache,
                                &f.digest,
                                registry_client::CachedContent {
                                    media_type: f.media_type,
                                    bytes: f.raw,
                                },
                            );
                            f.digest
                        })
                    } else {
                        self.client
                            .head_manifest(repo, &reference)
                            .await
                            .map(|h| h.digest)
                    };
                    match found {
                        Ok(digest) if present.is_some_and(|k| k.digest == digest) => {}
                        Ok(digest) => changed.lock().push(Change {
                            tag: s.tag,
                            rule_kind: s.rule.kind(),
                            known: k,
                            digest,
                            mutation: rechecked
                                .filter(|_| present.is_some())
                                .map(|r| (r.found_by, Utc::now())),
                        }),
                        Err(e) => handle(s.tag, Err(e.into())),
                    }
                }) as Task<'_>
            })
            .collect();
        run_all(tasks, concurrency).await;
        let changed = changed.into_inner();

        // 2. What the content cache already holds about the new digests (and what the
        //    manifests fetched above refer to), in one go.
        let digests: Vec<Digest> = changed.iter().map(|c| c.digest.clone()).collect();
        if let Err(e) = cache.prefetch(store, &digests).await {
            tracing::warn!(error = %e, "content cache not read");
        }

        // 3. Inspect, classify, announce (and read the new digests' referrers meanwhile).
        let trust_scan = RepoScan {
            registry: registry.id,
            repository: repo,
            client: self.client,
            tags: &tags,
            index: self.index,
            budget: &self.referrer_budget,
            concurrency,
            traceparent: self.traceparent,
            recheck_all: self.reason != SyncReason::Schedule,
        };
        let trust_on = self.scanner.config.referrers;
        let fresh: Mutex<HashMap<Digest, Inspected>> = Mutex::new(HashMap::new());
        let tasks: Vec<Task<'_>> = changed
            .iter()
            .map(|c| {
                let (cache, tags, handle, stop, fresh, trust_scan) =
                    (&cache, &tags, &handle, &stop, &fresh, &trust_scan);
                Box::pin(async move {
                    if stop() {
                        return;
                    }
                    match self.announce(repo, c, tags, cache).await {
                        Ok(inspected) => {
                            if trust_on
                                && let Err(e) = self
                                    .scanner
                                    .trust
                                    .read_referrers(trust_scan, &inspected.referrers)
                                    .await
                            {
                                tracing::warn!(error = %e, "referrers not read; at the end of the repository");
                            }
                            fresh.lock().insert(c.digest.clone(), inspected);
                        }
                        Err(e) => handle(c.tag, Err(e)),
                    }
                }) as Task<'_>
            })
            .collect();
        run_all(tasks, concurrency).await;
        let fresh = fresh.into_inner();
        if let Err(e) = cache.flush(store).await {
            tracing::warn!(error = %e, "content cache not written");
        }
        let stopped = deferred.load(std::sync::atomic::Ordering::Relaxed);

        // 4. Trust: referrers of every current digest, read what is new, evaluate.
        if self.scanner.config.referrers && !stopped && !self.cancel.is_cancelled() {
            let changed_tags: HashMap<&Tag, &Digest> =
                changed.iter().map(|c| (c.tag, &c.digest)).collect();
            let current: Vec<Current> = selected
                .iter()
                .filter_map(|sel| {
                    let (digest, platforms) = match changed_tags.get(sel.tag) {
                        Some(d) => {
                            let inspected = fresh.get(*d)?;
                            ((*d).clone(), inspected.platforms.clone())
                        }
                        None => {
                            let k = known.get(sel.tag).filter(|k| k.present)?;
                            (k.digest.clone(), k.platforms.clone())
                        }
                    };
                    Some(Current {
                        tag: sel.tag.clone(),
                        digest,
                        platforms,
                    })
                })
                .collect();
            let listed: HashMap<Digest, Vec<imagelib_events::model::Referrer>> =
                fresh.into_iter().map(|(d, i)| (d, i.referrers)).collect();
            let harbor = if self.registry.registry_type == "harbor" && !current.is_empty() {
                self.harbor_scans(repo).await
            } else {
                Vec::new()
            };
            if let Err(e) = self
                .scanner
                .trust
                .after_repository(&trust_scan, &current, &listed, &harbor)
                .await
            {
                let mut t = self.tally();
                t.error(format!("{repo}: trust: {e}"));
                t.incomplete(Some(repo), IncompleteReason::Error);
            }
        }

        if complete && !stopped && !self.cancel.is_cancelled() {
            for (tag, k) in known.iter().filter(|(_, k)| k.present) {
                if !selected_names.contains(tag) {
                    self.remove(repo, tag, k).await?;
                }
            }
        }
        Ok(())
    }

    /// Announces a tag whose digest is new: `tag_discovered`, or `tag_moved` for a known
    /// tag.
    async fn announce(
        &self,
        repo: &RepositoryName,
        c: &Change<'_>,
        tags: &[Tag],
        cache: &ScanCache,
    ) -> Result<Inspected, TagError> {
        let registry = self.registry.id;
        let tag = c.tag;
        let details = self
            .inspect(repo, &c.digest, c.rule_kind, tags, cache)
            .await?;
        let inspected = Inspected {
            platforms: details
                .platforms
                .iter()
                .filter_map(|p| p.digest.clone())
                .filter(|d| *d != c.digest)
                .collect(),
            referrers: details.referrers.clone(),
        };
        match c.known.filter(|k| k.present) {
            Some(k) => {
                if let Some((found_by, seen_at)) = c.mutation {
                    self.mutated(repo, tag, k, &c.digest, found_by, seen_at)
                        .await?;
                }
                let id = EventId::for_fact(&format!(
                    "image/{registry}/{repo}:{tag}/moved/{}/{}/after/{}",
                    k.digest, c.digest, k.last_sequence
                ));
                let event = TagMoved {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag.clone(),
                    old_digest: k.digest.clone(),
                    new_digest: c.digest.clone(),
                    details,
                };
                if self.scanner.emit(event, Some(id), self.traceparent).await? {
                    self.tally().moved += 1;
                    crate::metrics::tag_changed(registry, TagChange::Moved);
                }
            }
            None => {
                // A tombstone's sequence makes a re-added tag a new fact.
                let after = c.known.map(|k| k.last_sequence).unwrap_or(0);
                let id = EventId::for_fact(&format!(
                    "image/{registry}/{repo}:{tag}/discovered/{}/after/{after}",
                    c.digest
                ));
                let event = TagDiscovered {
                    registry_id: registry,
                    repository: repo.clone(),
                    tag: tag.clone(),
                    digest: c.digest.clone(),
                    details,
                };
                if self.scanner.emit(event, Some(id), self.traceparent).await? {
                    self.tally().added += 1;
                    crate::metrics::tag_changed(registry, TagChange::Added);
                }
            }
        }
        Ok(inspected)
    }

    /// An immutable tag moved: `image.tag_mutated`, with an id derived from the fact (the
    /// tag, both digests and the tag's previous event) but not from how or when it was
    /// found, so the webhook and the sweep finding one move make one event.
    async fn mutated(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        k: &KnownTag,
        new_digest: &Digest,
        found_by: MutationFoundBy,
        seen_at: DateTime<Utc>,
    ) -> Result<(), ScanError> {
        let registry = self.registry.id;
        let id = EventId::for_fact(&format!(
            "image/{registry}/{repo}:{tag}/mutated/{}/{new_digest}/after/{}",
            k.digest, k.last_sequence
        ));
        let event = TagMutated {
            registry_id: registry,
            repository: repo.clone(),
            tag: tag.clone(),
            old_digest: k.digest.clone(),
            new_digest: new_digest.clone(),
            found_by,
            seen_at: Some(seen_at),
        };
        if self.scanner.emit(event, Some(id), self.traceparent).await? {
            tracing::warn!(registry = %registry, repository = %repo, %tag, old = %k.digest, new = %new_digest, ?found_by, "an immutable tag moved");
            crate::integrity::mutation_found(registry, found_by);
        }
        Ok(())
    }

    /// What `digest` is, with as much as possible from the content cache.
    async fn inspect(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        rule_kind: RuleKind,
        tags: &[Tag],
        cache: &ScanCache,
    ) -> Result<ImageDetails, TagError> {
        let _one_at_a_time = cache.lock(digest).await;
        let options = InspectOptions {
            referrers: self.scanner.config.referrers,
            known_tags: Some(tags),
        };
        let inspection = self
            .client
            .inspect_digest(repo, digest, cache, &options)
            .await?;
        Ok(details_of(inspection, rule_kind, repo))
    }
}

/// What an inspection in this scan found, for trust.
struct Inspected {
    platforms: Vec<Digest>,
    referrers: Vec<imagelib_events::model::Referrer>,
}

type Task<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Runs `tasks`, at most `concurrency` at a time.
async fn run_all(tasks: Vec<Task<'_>>, concurrency: usize) {
    futures::stream::iter(tasks)
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

#[derive(Debug, thiserror::Error)]
enum TagError {
    #[error(transparent)]
    Registry(#[from] registry_client::Error),
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// The event's view of an inspected image, classified.
pub fn details_of(i: ImageInspection, rule_kind: RuleKind, repo: &RepositoryName) -> ImageDetails {
    let artifact_type = i
        .artifact_type
        .as_deref()
        .or(i.config_media_type.as_deref());
    let (kind, model_type) = imagelib_rules::classify(
        rule_kind,
        artifact_type,
        &i.media_type,
        &i.labels,
        &i.annotations,
        repo,
    );
    let extensions = imagelib_rules::parse_extensions(&i.labels, &i.annotations).unwrap_or_else(|e| {
        tracing::warn!(repository = %repo, digest = %i.digest, error = %e, "extensions not readable");
        Vec::new()
    });
    ImageDetails {
        media_type: i.media_type,
        artifact_type: i.artifact_type,
        platforms: i.platforms,
        size: i.size,
        created: i.created,
        labels: i.labels,
        annotations: i.annotations,
        kind,
        model_type,
        extensions,
        referrers: i.referrers,
    }
}
