//! Trust (issue 13): what the referrers of the scanner's digests say, and whether each
//! digest passes the trust policy of its rule.
//!
//! - [`Trust::after_repository`], at the end of each repository's scan: lists the
//!   referrers of every current tag digest and of each platform manifest of an index
//!   (a new digest's were listed by its inspection), emits `image.referrers_changed` when
//!   a list differs from the one last announced, reads each referrer never seen
//!   ([`content`]), and evaluates the digests whose evidence may have changed.
//! - [`Trust::reevaluate`]: every stored digest of a registry again, from the store only
//!   (a trust policy changed, or the timer: allow-list expiry and certificate validity
//!   move with the clock). It never talks to the registry.
//! - Emission: `image.sbom_found` / `image.vulnerabilities_reported` once per (digest,
//!   referrer), `image.signature_verified` / `image.signature_failed` per (digest,
//!   signature, rule) when the outcome changes, `image.policy_evaluated` when verdict,
//!   reasons or findings change ([`state`] keeps what was last said, from the events).

mod coalesce;
pub mod content;
pub mod harbor;
pub mod policy;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::Utc;
use futures::StreamExt;
use imagelib_events::bus::EventBus;
use imagelib_events::event::{
    PolicyEvaluated, ReferrersChanged, SbomFound, SignatureFailed, SignatureVerified,
    VulnerabilitiesReported,
};
use imagelib_events::model::{
    PolicyMode, PolicyVerdict, Referrer, SbomFormat, ScannerInfo, SeverityCounts, SignatureKind,
};
use imagelib_events::{
    Digest, Envelope, EventId, EventPayload, RegistryId, RepositoryName, RuleId, Tag, TraceParent,
};
use imagelib_rules::RuleSetIndex;
use imagelib_trust::evidence::{Evidence, Outcome, Scheme, Verifier};
use imagelib_trust::notation::NotationTrustStore;
use imagelib_trust::trust_root::TrustRoot;
use registry_client::RegistryClient;

use crate::rules::AgentRules;
use crate::store::{Store, StoreError};
use policy::CompiledPolicy;
use state::{fact_value, sig_key};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] imagelib_events::bus::BusError),
}

/// A trust file named in the configuration that cannot be used: the process does not
/// start.
#[derive(Debug, thiserror::Error)]
pub enum TrustConfigError {
    #[error("IMAGELIB_SCANNER__TRUST_ROOT {path}: {message}")]
    TrustRoot { path: String, message: String },
    #[error("IMAGELIB_SCANNER__NOTATION_TRUST_STORE {path}: {message}")]
    NotationTrustStore { path: String, message: String },
}

/// The largest trust file read.
const MAX_TRUST_FILE_BYTES: u64 = 4 << 20;

/// The trust anchors of keyless and Notation verification, loaded at start.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    /// The Sigstore `trusted_root.json` (Fulcio CAs, Rekor keys).
    pub trust_root: Option<Arc<TrustRoot>>,
    /// The Notation trust store: a PEM bundle of CA certificates.
    pub notation: Option<Arc<NotationTrustStore>>,
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TRUST_FILE_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_TRUST_FILE_BYTES}-byte limit",
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

impl Roots {
    pub fn load(
        trust_root: Option<&Path>,
        notation: Option<&Path>,
    ) -> Result<Self, TrustConfigError> {
        let mut roots = Roots::default();
        if let Some(path) = trust_root {
            let err = |message: String| TrustConfigError::TrustRoot {
                path: path.display().to_string(),
                message,
            };
            let bytes = read_bounded(path).map_err(err)?;
            let root = TrustRoot::from_json(&bytes).map_err(|e| {
                err(format!(
                    "not a Sigstore trusted root (application/vnd.dev.sigstore.trustedroot+json;version=0.1): {e}"
                ))
            })?;
            roots.trust_root = Some(Arc::new(root));
        }
        if let Some(path) = notation {
            let err = |message: String| TrustConfigError::NotationTrustStore {
                path: path.display().to_string(),
                message,
            };
            let bytes = read_bounded(path).map_err(err)?;
            let text = String::from_utf8(bytes).map_err(|_| err("not PEM text".into()))?;
            let store = NotationTrustStore::from_pem(&text)
                .map_err(|e| err(format!("not a PEM bundle of CA certificates: {e}")))?;
            if store.is_empty() {
                return Err(err("no certificate in it".into()));
            }
            roots.notation = Some(Arc::new(store));
        }
        Ok(roots)
    }

    /// `verifier` with these anchors.
    pub fn apply<'a>(&'a self, mut verifier: Verifier<'a>) -> Verifier<'a> {
        if let Some(root) = &self.trust_root {
            verifier = verifier.trust_root(root);
        }
        if let Some(store) = &self.notation {
            verifier = verifier.notation_roots(store);
        }
        verifier
    }
}

/// The trust side of the scanner, shared by scans and the re-evaluator.
#[derive(Debug, Clone)]
pub struct Trust {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    bus: EventBus,
    actor: String,
    agent: Arc<AgentRules>,
    roots: Roots,
    max_referrer_bytes: u64,
    /// Whether each registry had the referrers API when last asked.
    api: parking_lot::Mutex<HashMap<RegistryId, bool>>,
    /// When each (registry, repository, digest), hashed, was last listed by this process.
    listed: parking_lot::Mutex<HashMap<u64, std::time::Instant>>,
    /// Referrers a new digest's inspection is reading now: two tags of one new digest
    /// (`1.2.3` and `latest`) read its referrers once.
    reading: parking_lot::Mutex<HashSet<Digest>>,
    /// Concurrent inspections' "which of these referrers are stored?", one query.
    stored_check: coalesce::Coalescer<Arc<Vec<String>>, HashSet<String>>,
    /// Concurrent inspections' referrer content, one statement.
    keeper: coalesce::Coalescer<Arc<Vec<state::StoredReferrer>>, ()>,
    recheck: std::time::Duration,
}

/// Entries of [`Inner::listed`] kept at most (about 32 bytes each); past it the map starts
/// over, and the next scheduled scans list everything once.
const MAX_LISTED: usize = 1_000_000;

fn listed_key(registry: RegistryId, repository: &RepositoryName, digest: &Digest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (registry.0, repository.as_str(), digest.as_str()).hash(&mut h);
    h.finish()
}

/// One repository's scan, as trust needs it.
#[allow(missing_debug_implementations)]
pub struct RepoScan<'a> {
    pub registry: RegistryId,
    pub repository: &'a RepositoryName,
    pub client: &'a RegistryClient,
    /// The repository's listing (fallback referrer tags are looked up in it).
    pub tags: &'a [Tag],
    pub index: &'a RuleSetIndex,
    /// Referrer bytes this scan may still read.
    pub budget: &'a AtomicU64,
    pub concurrency: usize,
    pub traceparent: Option<TraceParent>,
    /// List the referrers of every current digest; else (a scheduled scan) only those
    /// not listed within `referrers_recheck_secs`.
    pub recheck_all: bool,
}

type ListTask<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (Digest, registry_client::Result<registry_client::Referrers>),
            > + Send
            + 'a,
    >,
>;

async fn list_one<'a>(
    scan: &'a RepoScan<'a>,
    d: Digest,
    options: registry_client::ReferrersOptions<'a>,
) -> (Digest, registry_client::Result<registry_client::Referrers>) {
    let r = scan
        .client
        .list_referrers(scan.repository, &d, &options)
        .await;
    (d, r)
}

type FetchTask<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<state::StoredReferrer>> + Send + 'a>>;

/// A current tag: its digest and the platform manifests of an index.
#[derive(Debug, Clone)]
pub struct Current {
    pub tag: Tag,
    pub digest: Digest,
    pub platforms: Vec<Digest>,
}

/// One tag digest to evaluate: its platforms and the trust rule of its tags (the first
/// tag, by name, that has one).
struct Subject<'a> {
    digest: &'a Digest,
    platforms: &'a [Digest],
    rule: Option<(&'a RuleId, &'a imagelib_events::model::TrustPolicy)>,
}

/// The tag digests of `current` (each once), with the policy that applies to them.
fn subjects_of<'a>(
    index: &'a RuleSetIndex,
    repository: &RepositoryName,
    current: &'a [Current],
) -> Vec<Subject<'a>> {
    let mut by_tag: Vec<&Current> = current.iter().collect();
    by_tag.sort_by(|a, b| a.tag.as_str().cmp(b.tag.as_str()));
    let mut out: BTreeMap<&Digest, Subject<'a>> = BTreeMap::new();
    for c in by_tag {
        let rule = index
            .trust_rule(repository, &c.tag)
            .and_then(|r| r.trust().map(|t| (r.id(), t)));
        let entry = out.entry(&c.digest).or_insert(Subject {
            digest: &c.digest,
            platforms: &c.platforms,
            rule: None,
        });
        if entry.rule.is_none() {
            entry.rule = rule;
        }
    }
    out.into_values().collect()
}

/// Referrers claimed in [`Inner::reading`], released when dropped (also when the scan's
/// task is cancelled).
struct Reading<'a> {
    set: &'a parking_lot::Mutex<HashSet<Digest>>,
    digests: Vec<Digest>,
}

impl<'a> Reading<'a> {
    /// Claims those of `digests` no one is reading.
    fn claim<'d>(
        set: &'a parking_lot::Mutex<HashSet<Digest>>,
        digests: impl Iterator<Item = &'d Digest>,
    ) -> Self {
        let mut reading = set.lock();
        let digests = digests
            .filter(|d| reading.insert((*d).clone()))
            .cloned()
            .collect();
        drop(reading);
        Reading { set, digests }
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut reading = self.set.lock();
        for d in &self.digests {
            reading.remove(d);
        }
    }
}

/// Compiled policies of one pass, by rule.
#[derive(Default)]
struct Compiled(HashMap<RuleId, Option<CompiledPolicy>>);

impl Compiled {
    /// Compiles the policy of `rule` unless it is compiled already (or `off`).
    fn prepare(&mut self, rule: Option<(&RuleId, &imagelib_events::model::TrustPolicy)>) {
        if let Some((id, trust)) = rule.filter(|(_, t)| t.mode != PolicyMode::Off) {
            self.0
                .entry(id.clone())
                .or_insert_with(|| CompiledPolicy::compile(id, trust));
        }
    }

    /// The compiled policy of `rule` (after [`Self::prepare`]); none for `off`.
    fn get(
        &self,
        rule: Option<(&RuleId, &imagelib_events::model::TrustPolicy)>,
    ) -> Option<&CompiledPolicy> {
        let (id, _) = rule.filter(|(_, t)| t.mode != PolicyMode::Off)?;
        self.0.get(id).and_then(Option::as_ref)
    }
}

/// What the trust events last said about some digests of a repository: (digest, key) →
/// (value, the sequence of the event that said it).
type Facts = HashMap<(String, String), (serde_json::Value, u64)>;

/// Stored referrer content by digest.
type Contents = HashMap<String, state::StoredReferrer>;

/// The events one pass decided to publish, published together
/// ([`Trust::publish`]).
#[derive(Default)]
struct Outbox {
    envelopes: Vec<Envelope>,
    verdicts: Vec<PolicyVerdict>,
}

fn sorted(list: &[Referrer]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|r| {
            (
                r.digest.to_string(),
                r.artifact_type.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Trust {
    pub fn new(
        store: Store,
        bus: EventBus,
        actor: String,
        agent: Arc<AgentRules>,
        roots: Roots,
        max_referrer_bytes: u64,
        recheck: std::time::Duration,
    ) -> Self {
        Trust {
            inner: Arc::new(Inner {
                store,
                bus,
                actor,
                agent,
                roots,
                max_referrer_bytes,
                api: Default::default(),
                listed: Default::default(),
                reading: Default::default(),
                stored_check: Default::default(),
                keeper: Default::default(),
                recheck,
            }),
        }
    }

    /// A trust event under a fact-derived id, to publish with the others of its pass.
    fn emit(
        &self,
        out: &mut Outbox,
        payload: EventPayload,
        id: EventId,
        traceparent: Option<TraceParent>,
    ) {
        if let EventPayload::PolicyEvaluated(e) = &payload {
            out.verdicts.push(e.verdict);
        }
        out.envelopes.push(
            Envelope::new(crate::NAME, payload)
                .with_actor(self.inner.actor.clone())
                .with_traceparent(traceparent)
                .with_id(id),
        );
    }

    /// Publishes what a pass decided, pipelined (one round trip for a repository's
    /// events, not one each). Like the tag events, they reach the state through the image
    /// projector (scans wait for it to catch up); an evaluation that runs before it did
    /// re-derives the same ids, which JetStream drops.
    async fn publish(&self, out: Outbox) -> Result<(), TrustError> {
        if out.envelopes.is_empty() {
            return Ok(());
        }
        self.inner.bus.publish_all(&out.envelopes).await?;
        for verdict in out.verdicts {
            crate::metrics::policy_verdict(verdict);
        }
        Ok(())
    }

    /// The stored content of the referrers `lists` name for `subjects`, and what was
    /// last said about the subjects: two queries for a whole repository.
    async fn evidence_of(
        &self,
        registry: RegistryId,
        repo: &RepositoryName,
        subjects: &[Subject<'_>],
        lists: &HashMap<Digest, Vec<Referrer>>,
    ) -> Result<(Contents, Facts), TrustError> {
        let s = &*self.inner;
        let digests: Vec<&Digest> = subjects
            .iter()
            .flat_map(|s| std::iter::once(s.digest).chain(s.platforms))
            .collect();
        let keys: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let mut sources: Vec<String> = digests
            .iter()
            .filter_map(|d| lists.get(*d))
            .flatten()
            .map(|r| r.digest.to_string())
            .collect();
        sources.sort();
        sources.dedup();
        let (contents, facts) = futures::try_join!(
            s.store.referrer_content(&sources),
            s.store.trust_facts(registry, repo, &keys)
        )?;
        let contents = contents
            .into_iter()
            .map(|c| (c.digest.to_string(), c))
            .collect();
        Ok((contents, facts))
    }

    /// Lists, reads and evaluates what changed for the current tags of one repository.
    /// `fresh` holds the referrers of digests inspected in this scan (their tag events
    /// carry them); `harbor` Harbor's scans of the repository's artifacts (empty for other
    /// registries), reported and judged like report referrers ([`harbor`]). Registry errors
    /// on one digest or referrer skip it (retried on the next scan); only the store and the
    /// bus fail the call.
    #[tracing::instrument(skip_all, fields(registry = %scan.registry, repository = %scan.repository))]
    pub async fn after_repository(
        &self,
        scan: &RepoScan<'_>,
        current: &[Current],
        fresh: &HashMap<Digest, Vec<Referrer>>,
        harbor: &[registry_client::vendor::harbor::ArtifactScan],
    ) -> Result<(), TrustError> {
        let s = &*self.inner;
        let repo = scan.repository;
        // Every digest whose referrers count: the tag digests and their platforms.
        let mut subjects: Vec<&Digest> = current
            .iter()
            .flat_map(|c| std::iter::once(&c.digest).chain(&c.platforms))
            .collect();
        subjects.sort();
        subjects.dedup();
        // Without the referrers API (as last seen), a digest with no fallback tag in the
        // listing has no referrers: it costs nothing.
        let api = scan
            .client
            .referrers_api()
            .or_else(|| s.api.lock().get(&scan.registry).copied());
        let fallback: HashSet<&str> = scan
            .tags
            .iter()
            .map(Tag::as_str)
            .filter(|t| t.starts_with("sha256-"))
            .map(|t| t.split('.').next().unwrap_or(t))
            .collect();
        let recent = |d: &Digest| {
            !scan.recheck_all
                && s.listed
                    .lock()
                    .get(&listed_key(scan.registry, repo, d))
                    .is_some_and(|at| at.elapsed() < s.recheck)
        };
        let to_list: Vec<Digest> = subjects
            .iter()
            .filter(|d| !fresh.contains_key(**d) && !recent(d))
            .filter(|d| {
                api != Some(false)
                    || fallback.contains(format!("{}-{}", d.algorithm(), d.encoded()).as_str())
            })
            .map(|d| (*d).clone())
            .collect();
        let options = registry_client::referrers::ReferrersOptions {
            known_tags: Some(scan.tags),
            ..Default::default()
        };
        // While the API's presence is unknown the first subject is asked alone, so a
        // registry without it costs one API request, not one per subject.
        let mut listed = Vec::with_capacity(to_list.len());
        let mut rest = to_list.as_slice();
        if scan.client.referrers_api().is_none()
            && let Some((first, tail)) = to_list.split_first()
        {
            listed.push((
                first.clone(),
                scan.client.list_referrers(repo, first, &options).await,
            ));
            rest = tail;
        }
        let tasks: Vec<ListTask<'_>> = rest
            .iter()
            .map(|d| Box::pin(list_one(scan, d.clone(), options)) as ListTask<'_>)
            .collect();
        listed.extend(
            futures::stream::iter(tasks)
                .buffer_unordered(scan.concurrency.max(1))
                .collect::<Vec<_>>()
                .await,
        );
        if let Some(api) = scan.client.referrers_api() {
            s.api.lock().insert(scan.registry, api);
        }
        let asked: HashSet<&Digest> = to_list.iter().collect();
        let mut lists: HashMap<Digest, Vec<Referrer>> = HashMap::new();
        for d in subjects {
            if let Some(list) = fresh.get(d) {
                s.listed.lock().insert(
                    listed_key(scan.registry, repo, d),
                    std::time::Instant::now(),
                );
                lists.insert(d.clone(), list.clone());
            } else if api == Some(false) && !asked.contains(d) && !recent(d) {
                lists.insert(d.clone(), Vec::new());
            }
        }
        for (d, result) in listed {
            match result {
                Ok(r) if r.complete => {
                    let mut seen = s.listed.lock();
                    if seen.len() >= MAX_LISTED {
                        seen.clear();
                    }
                    seen.insert(
                        listed_key(scan.registry, repo, &d),
                        std::time::Instant::now(),
                    );
                    drop(seen);
                    lists.insert(d, r.to_referrers());
                }
                Ok(r) => {
                    tracing::info!(digest = %d, error = ?r.error, "referrers listing incomplete; next scan")
                }
                Err(e) => {
                    tracing::info!(digest = %d, error = %e, "referrers not listed; next scan")
                }
            }
        }
        let keys: Vec<String> = lists.keys().map(|d| d.to_string()).collect();
        let before = s
            .store
            .subject_referrers(scan.registry, repo, &keys)
            .await?;
        let mut changed: HashSet<&Digest> = HashSet::new();
        let mut announced = Outbox::default();
        for (digest, list) in &lists {
            let previous = before.get(digest.as_str());
            let same = previous.is_some_and(|(p, _)| sorted(p) == sorted(list))
                || (previous.is_none() && list.is_empty());
            if same {
                continue;
            }
            changed.insert(digest);
            if fresh.contains_key(digest) {
                continue; // the tag event carries the list
            }
            let after = previous.map(|(_, seq)| *seq).unwrap_or(0);
            let listing: Vec<String> = sorted(list).into_iter().map(|(d, _)| d).collect();
            let id = EventId::for_fact(&format!(
                "image/{}/{repo}@{digest}/referrers/{}/after/{after}",
                scan.registry,
                listing.join(",")
            ));
            let event = ReferrersChanged {
                registry_id: scan.registry,
                repository: repo.clone(),
                digest: digest.clone(),
                referrers: list.clone(),
            };
            self.emit(&mut announced, event.into(), id, scan.traceparent);
        }
        self.publish(announced).await?;

        // Referrers never read: read them now (once, whoever else refers to them).
        let mut referrers: Vec<String> = lists
            .values()
            .flatten()
            .map(|r| r.digest.to_string())
            .collect();
        referrers.sort();
        referrers.dedup();
        let stored = self.stored(referrers.clone()).await?;
        let missing: Vec<Digest> = referrers
            .iter()
            .filter(|d| !stored.contains(*d))
            .filter_map(|d| d.parse().ok())
            .collect();
        let fetches: Vec<FetchTask<'_>> = missing
            .into_iter()
            .map(|d| Box::pin(self.read_referrer(scan, d)) as FetchTask<'_>)
            .collect();
        let fetched: Vec<state::StoredReferrer> = futures::stream::iter(fetches)
            .buffer_unordered(scan.concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        let read = self.keep(fetched).await;
        let read: HashSet<&str> = read.iter().map(Digest::as_str).collect();
        let fetched_for = |d: &Digest| {
            lists
                .get(d)
                .is_some_and(|l| l.iter().any(|r| read.contains(r.digest.as_str())))
        };

        // Harbor's scans: reported when new, and their digests evaluated again.
        let harbor = harbor::reports_of(scan.registry, repo, current, harbor);
        let harbor_new = self
            .harbor_pass(scan.registry, repo, &harbor, scan.traceparent)
            .await?;

        // Evaluate the tag digests whose evidence may differ.
        let dirty: Vec<Subject<'_>> = subjects_of(scan.index, repo, current)
            .into_iter()
            .filter(|subject| {
                let mut digests = std::iter::once(subject.digest).chain(subject.platforms);
                // No policy and nothing attached: nothing to say (a policy's removal is
                // the re-evaluator's to lift).
                let something = subject.rule.is_some()
                    || digests.clone().any(|d| {
                        lists.get(d).is_some_and(|l| !l.is_empty()) || harbor.contains_key(d)
                    });
                something
                    && digests.any(|d| {
                        changed.contains(d)
                            || fetched_for(d)
                            || fresh.contains_key(d)
                            || harbor_new.contains(d)
                    })
            })
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let mut compiled = Compiled::default();
        for subject in &dirty {
            compiled.prepare(subject.rule);
        }
        let (contents, facts) = self
            .evidence_of(scan.registry, repo, &dirty, &lists)
            .await?;
        let mut out = Outbox::default();
        for subject in &dirty {
            self.evaluate(
                scan.registry,
                repo,
                subject,
                compiled.get(subject.rule),
                &lists,
                (&contents, &facts, &harbor),
                scan.traceparent,
                &mut out,
            );
            // Signature checks are CPU work: let the scan's other tasks run between.
            tokio::task::yield_now().await;
        }
        self.publish(out).await
    }

    /// Reads the referrers a new digest's inspection listed, while the scan goes on with
    /// other tags (the evaluation at the end of the repository then finds them stored).
    pub async fn read_referrers(
        &self,
        scan: &RepoScan<'_>,
        referrers: &[Referrer],
    ) -> Result<(), TrustError> {
        if referrers.is_empty() {
            return Ok(());
        }
        let digests: Vec<String> = referrers.iter().map(|r| r.digest.to_string()).collect();
        let stored = self.stored(digests).await?;
        // Those another task is reading are left to it (if it fails, the end of the
        // repository reads them).
        let mine = Reading::claim(
            &self.inner.reading,
            referrers
                .iter()
                .filter(|r| !stored.contains(r.digest.as_str()))
                .map(|r| &r.digest),
        );
        let tasks: Vec<FetchTask<'_>> = mine
            .digests
            .iter()
            .map(|d| Box::pin(self.read_referrer(scan, d.clone())) as FetchTask<'_>)
            .collect();
        let fetched: Vec<state::StoredReferrer> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.keep(fetched).await;
        Ok(())
    }

    /// Which of these referrer digests are stored (one query with the other tasks'
    /// that ask meanwhile).
    async fn stored(&self, digests: Vec<String>) -> Result<HashSet<String>, StoreError> {
        if digests.is_empty() {
            return Ok(HashSet::new());
        }
        let store = &self.inner.store;
        self.inner
            .stored_check
            .run(
                Arc::new(digests),
                |asks: Vec<Arc<Vec<String>>>| async move {
                    let mut all: Vec<String> =
                        asks.iter().flat_map(|a| a.iter().cloned()).collect();
                    all.sort();
                    all.dedup();
                    let stored = store.stored_referrers(&all).await?;
                    Ok(asks
                        .iter()
                        .map(|a| a.iter().filter(|d| stored.contains(*d)).cloned().collect())
                        .collect())
                },
            )
            .await
    }

    /// Stores what was read (one statement with the other tasks' that store meanwhile);
    /// the digests stored.
    async fn keep(&self, fetched: Vec<state::StoredReferrer>) -> Vec<Digest> {
        if fetched.is_empty() {
            return Vec::new();
        }
        let digests: Vec<Digest> = fetched.iter().map(|r| r.digest.clone()).collect();
        let store = &self.inner.store;
        let kept = self
            .inner
            .keeper
            .run(
                Arc::new(fetched),
                |batches: Vec<Arc<Vec<state::StoredReferrer>>>| async move {
                    let all: Vec<&state::StoredReferrer> =
                        batches.iter().flat_map(|b| b.iter()).collect();
                    store.put_referrer_content(&all).await?;
                    Ok(vec![(); batches.len()])
                },
            )
            .await;
        match kept {
            Ok(()) => digests,
            Err(e) => {
                tracing::warn!(error = %e, "referrer content not stored; read again next scan");
                Vec::new()
            }
        }
    }

    /// Reads one referrer (stored by the caller).
    #[tracing::instrument(skip(self, scan), fields(repository = %scan.repository))]
    async fn read_referrer(&self, scan: &RepoScan<'_>, d: Digest) -> Option<state::StoredReferrer> {
        let s = &*self.inner;
        match content::fetch(
            scan.client,
            scan.repository,
            &d,
            s.max_referrer_bytes,
            scan.budget,
        )
        .await
        {
            Ok(stored) => {
                crate::metrics::referrer_bytes(scan.registry, stored.bytes());
                Some(stored)
            }
            Err(e) => {
                tracing::info!(error = %e, "referrer not read; next scan");
                None
            }
        }
    }

    /// Re-evaluates every present tag digest of `registry` from the store: no registry
    /// request. Returns how many digests were evaluated.
    #[tracing::instrument(skip(self))]
    pub async fn reevaluate(&self, registry: RegistryId) -> Result<u64, TrustError> {
        let s = &*self.inner;
        let index = crate::rules::index_for(&s.store, &s.agent, registry).await?;
        let rows = s.store.present_tags(registry).await?;
        let mut by_repo: BTreeMap<RepositoryName, Vec<Current>> = BTreeMap::new();
        for (repo, tag, digest, platforms) in rows {
            let (Ok(tag), Ok(digest)) = (tag.parse::<Tag>(), digest.parse::<Digest>()) else {
                continue;
            };
            by_repo.entry(repo).or_default().push(Current {
                tag,
                digest,
                platforms: platforms.iter().filter_map(|p| p.parse().ok()).collect(),
            });
        }
        let mut evaluated = 0u64;
        let mut compiled = Compiled::default();
        for (repo, current) in &by_repo {
            let subjects = subjects_of(&index, repo, current);
            let keys: Vec<String> = subjects
                .iter()
                .flat_map(|s| {
                    std::iter::once(s.digest.to_string())
                        .chain(s.platforms.iter().map(|p| p.to_string()))
                })
                .collect();
            let lists: HashMap<Digest, Vec<Referrer>> = s
                .store
                .subject_referrers(registry, repo, &keys)
                .await?
                .into_iter()
                .filter_map(|(d, (l, _))| Some((d.parse().ok()?, l)))
                .collect();
            for subject in &subjects {
                compiled.prepare(subject.rule);
            }
            let (contents, facts) = self.evidence_of(registry, repo, &subjects, &lists).await?;
            let mut out = Outbox::default();
            for subject in &subjects {
                let policy = compiled.get(subject.rule);
                self.evaluate(
                    registry,
                    repo,
                    subject,
                    policy,
                    &lists,
                    (&contents, &facts, &harbor::HarborReports::new()),
                    None,
                    &mut out,
                );
                evaluated += 1;
                tokio::task::yield_now().await;
            }
            self.publish(out).await?;
        }
        Ok(evaluated)
    }

    /// Evaluates one tag digest with the referrer lists given (its own and its
    /// platforms'), from stored content and what was last said (`evidence`, read for
    /// the whole repository), and puts what changed in `out`.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(skip_all, fields(digest = %subject.digest))]
    fn evaluate(
        &self,
        registry: RegistryId,
        repo: &RepositoryName,
        subject: &Subject<'_>,
        policy: Option<&CompiledPolicy>,
        lists: &HashMap<Digest, Vec<Referrer>>,
        (stored, facts, harbor): (&Contents, &Facts, &harbor::HarborReports),
        traceparent: Option<TraceParent>,
        out: &mut Outbox,
    ) {
        let s = &*self.inner;
        let digests: Vec<&Digest> = std::iter::once(subject.digest)
            .chain(subject.platforms)
            .collect();
        let said_of = |d: &Digest| -> Vec<Evidence> {
            lists
                .get(d)
                .into_iter()
                .flatten()
                .filter_map(|r| stored.get(r.digest.as_str()))
                .flat_map(|c| content::interpret(d.as_str(), c))
                .collect()
        };
        let said: Vec<Vec<Evidence>> = digests.iter().map(|d| said_of(d)).collect();
        // Emits `payload` when the fact under `key` of `digest` says something else.
        let changed = |digest: &Digest, key: &str, payload: &EventPayload| {
            let previous = facts.get(&(digest.to_string(), key.to_owned()));
            let value = fact_value(payload);
            let differs = previous.is_none_or(|(v, _)| *v != value);
            let after = previous.map(|(_, seq)| *seq).unwrap_or(0);
            differs.then(|| {
                EventId::for_fact(&format!(
                    "image/{registry}/{repo}@{digest}/{key}/{value}/after/{after}"
                ))
            })
        };

        // Reports and SBOMs of the digest and its platforms, once each.
        for (d, evidence) in digests.iter().zip(&said) {
            for e in evidence {
                let (key, payload) = match e {
                    Evidence::Vulnerabilities { source, summary } => {
                        let Ok(source) = source.parse::<Digest>() else {
                            continue;
                        };
                        let scanned_at = summary
                            .scanned_at
                            .as_deref()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.to_utc())
                            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
                        let c = &summary.counts;
                        let event = VulnerabilitiesReported {
                            registry_id: registry,
                            repository: repo.clone(),
                            digest: (*d).clone(),
                            scanner: ScannerInfo {
                                name: summary.scanner.name.chars().take(128).collect(),
                                version: summary
                                    .scanner
                                    .version
                                    .clone()
                                    .unwrap_or_default()
                                    .chars()
                                    .take(128)
                                    .collect(),
                            },
                            db: summary
                                .db
                                .clone()
                                .unwrap_or_default()
                                .chars()
                                .take(128)
                                .collect(),
                            scanned_at,
                            counts: SeverityCounts {
                                critical: c.critical,
                                high: c.high,
                                medium: c.medium,
                                low: c.low,
                                unknown: c.unknown,
                            },
                            fixable: summary.fixable.unwrap_or(0),
                            source: source.clone(),
                            origin: None,
                        };
                        (format!("vuln/{source}"), EventPayload::from(event))
                    }
                    Evidence::Sbom { source, format } => {
                        let Ok(source) = source.parse::<Digest>() else {
                            continue;
                        };
                        let event = SbomFound {
                            registry_id: registry,
                            repository: repo.clone(),
                            digest: (*d).clone(),
                            format: match format {
                                imagelib_trust::sbom::SbomFormat::Spdx => SbomFormat::Spdx,
                                imagelib_trust::sbom::SbomFormat::CycloneDx => {
                                    SbomFormat::Cyclonedx
                                }
                            },
                            source: source.clone(),
                        };
                        (format!("sbom/{source}"), EventPayload::from(event))
                    }
                    _ => continue,
                };
                if let Some(id) = changed(d, &key, &payload) {
                    self.emit(out, payload, id, traceparent);
                }
            }
        }

        let digest = subject.digest;
        let Some(policy) = policy else {
            // No policy (or mode off): a gate that was closed is lifted, once.
            let closed = facts
                .get(&(digest.to_string(), "policy".to_owned()))
                .is_some_and(|(v, _)| v["event"]["verdict"] != "pass");
            if closed {
                let payload = EventPayload::from(PolicyEvaluated {
                    registry_id: registry,
                    repository: repo.clone(),
                    digest: digest.clone(),
                    verdict: PolicyVerdict::Pass,
                    reasons: Vec::new(),
                    policy: subject.rule.map(|(id, _)| id.clone()),
                    findings: Vec::new(),
                });
                if let Some(id) = changed(digest, "policy", &payload) {
                    self.emit(out, payload, id, traceparent);
                }
            }
            return;
        };
        let now = Utc::now();
        // The policy also weighs Harbor's reports (not re-announced by the loop above).
        let judged: Vec<Vec<Evidence>> = digests
            .iter()
            .zip(&said)
            .map(|(d, said)| {
                let mut all = said.clone();
                all.extend(harbor::said_of(facts, harbor, d));
                all
            })
            .collect();
        let (own, children) = judged
            .split_first()
            .map(|(o, c)| (o.as_slice(), c))
            .unwrap_or((&[], &[]));
        let evaluation = policy.evaluate(&s.roots, digest.as_str(), own, children, now);
        for check in &evaluation.signatures {
            let Ok(source) = check.source.parse::<Digest>() else {
                continue;
            };
            let kind = match check.scheme {
                Scheme::Cosign => SignatureKind::Cosign,
                Scheme::Notation => SignatureKind::Notation,
            };
            let signer: String = check.signer.chars().take(512).collect();
            let issuer = check.issuer.as_ref().map(|i| i.chars().take(512).collect());
            let payload = match &check.outcome {
                Outcome::Trusted => EventPayload::from(SignatureVerified {
                    registry_id: registry,
                    repository: repo.clone(),
                    digest: digest.clone(),
                    signer,
                    issuer,
                    kind,
                    policy: Some(policy.rule.clone()),
                    source: source.clone(),
                }),
                Outcome::Untrusted(why) | Outcome::Invalid(why) => {
                    EventPayload::from(SignatureFailed {
                        registry_id: registry,
                        repository: repo.clone(),
                        digest: digest.clone(),
                        signer,
                        issuer,
                        kind,
                        policy: Some(policy.rule.clone()),
                        reason: why.chars().take(1024).collect(),
                        source: source.clone(),
                    })
                }
            };
            let key = sig_key(&source, Some(policy.rule.as_str()));
            if let Some(id) = changed(digest, &key, &payload) {
                self.emit(out, payload, id, traceparent);
            }
        }
        let (verdict, findings) = policy::outcome(policy.mode, &evaluation);
        let payload = EventPayload::from(PolicyEvaluated {
            registry_id: registry,
            repository: repo.clone(),
            digest: digest.clone(),
            verdict,
            reasons: findings.iter().map(|f| f.reason).collect(),
            policy: Some(policy.rule.clone()),
            findings,
        });
        if let Some(id) = changed(digest, "policy", &payload) {
            self.emit(out, payload, id, traceparent);
        }
    }
}
