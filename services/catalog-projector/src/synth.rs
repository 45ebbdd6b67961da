//! Synthetic streams with the real mix of a registry scanner's events (new tags, moved
//! tags, removed tags across many repositories), for the crash tests and the bench.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use imagelib_events::event::{
    PolicyEvaluated, PullsCounted, ReferrersChanged, RegistryRegistered, SbomFound,
    SignatureFailed, SignatureVerified, TagDiscovered, TagMoved, TagMutated, TagRemoved,
    VulnerabilitiesReported,
};
use imagelib_events::model::{
    AuthKind, ImageDetails, ImageKind, ModelType, MutationFoundBy, Platform, PolicyReason,
    PolicyVerdict, PostgresExtension, Referrer, ReferrerKind, RegistryType, SbomFormat,
    ScannerInfo, SeverityCounts, SignatureKind,
};
use imagelib_events::{Digest, Envelope, EventId, RegistryId, RepositoryName, Tag};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shape of a synthetic stream.
#[derive(Debug, Clone)]
pub struct Mix {
    pub registries: usize,
    pub repositories: usize,
    /// Image events (registries come on top).
    pub events: usize,
    pub seed: u64,
    /// Percent of image events that move an existing tag, and that remove one.
    pub moved_pct: u32,
    pub removed_pct: u32,
    /// Percent of image events that are trust evidence about an existing tag's digest
    /// (signature verified or failed, vulnerability report, SBOM, policy verdict, referrers
    /// listed anew).
    pub trust_pct: u32,
    /// Percent of image events that are about an existing tag's integrity or use (issue
    /// 14): a mutation found (`image.tag_mutated`) or a window of pulls
    /// (`image.pulls_counted`, by tag or by digest).
    pub integrity_pct: u32,
    pub start: DateTime<Utc>,
    /// Put before every tag name (to add tags next to an earlier stream's).
    pub tag_prefix: String,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            registries: 4,
            repositories: 10_000,
            events: 1_000_000,
            seed: 42,
            moved_pct: 15,
            removed_pct: 5,
            trust_pct: 0,
            integrity_pct: 0,
            start: DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            tag_prefix: String::new(),
        }
    }
}

/// The kind of repository `i` (stable across runs): 30 % models, 30 % databases.
pub fn repo_kind(i: usize) -> (ImageKind, Option<ModelType>) {
    match i % 10 {
        0..=2 => (
            ImageKind::Model,
            Some(ModelType::ALL[i % ModelType::ALL.len()]),
        ),
        3..=5 => (ImageKind::Database, None),
        _ => (ImageKind::Other, None),
    }
}

/// The name of repository `i`.
pub fn repo_name(i: usize) -> String {
    match repo_kind(i).0 {
        ImageKind::Model => format!("nvidia/nim/model-{i:05}"),
        ImageKind::Database => format!("postgres/cnpg-{i:05}"),
        ImageKind::Other => format!("apps/service-{i:05}"),
    }
}

fn digest(rng: &mut StdRng) -> Digest {
    let a: u128 = rng.random();
    let b: u128 = rng.random();
    format!("sha256:{a:032x}{b:032x}")
        .parse()
        .expect("64 hex digits are a sha256 digest")
}

fn details(i: usize, rng: &mut StdRng, at: DateTime<Utc>) -> ImageDetails {
    let (kind, model_type) = repo_kind(i);
    let multi = rng.random_ratio(1, 3);
    let archs: &[&str] = if multi {
        &["amd64", "arm64"]
    } else {
        &["amd64"]
    };
    let size: u64 = match kind {
        ImageKind::Model => rng.random_range(2_000_000_000..20_000_000_000),
        ImageKind::Database => rng.random_range(100_000_000..400_000_000),
        ImageKind::Other => rng.random_range(10_000_000..200_000_000),
    };
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.source".to_owned(),
        format!("https://github.com/example/{}", repo_name(i)),
    );
    annotations.insert(
        "org.opencontainers.image.revision".to_owned(),
        format!("{:040x}", rng.random::<u128>()),
    );
    annotations.insert(
        "org.opencontainers.image.created".to_owned(),
        at.to_rfc3339(),
    );
    if i.is_multiple_of(4) {
        annotations.insert(
            "org.opencontainers.image.description".to_owned(),
            format!("Synthetic image number {i} for the catalog bench"),
        );
    }
    labels.insert("maintainer".to_owned(), "platform@example.com".to_owned());
    labels.insert(
        "org.opencontainers.image.vendor".to_owned(),
        "Example".to_owned(),
    );
    let mut extensions = Vec::new();
    match kind {
        ImageKind::Model => {
            labels.insert("com.nvidia.nim.model".to_owned(), "true".to_owned());
            if let Some(m) = model_type {
                annotations.insert("io.imagelib.model.type".to_owned(), m.as_str().to_owned());
            }
        }
        ImageKind::Database => {
            labels.insert("io.imagelib.postgres.major".to_owned(), "16".to_owned());
            extensions.push(PostgresExtension {
                name: "pgvector".into(),
                version: Some("0.8.0".into()),
                description: None,
            });
        }
        ImageKind::Other => {}
    }
    let referrers = if rng.random_ratio(1, 5) {
        vec![Referrer {
            digest: digest(rng),
            kind: ReferrerKind::Signature,
            artifact_type: Some("application/vnd.dev.cosign.artifact.sig.v1+json".into()),
        }]
    } else {
        vec![]
    };
    ImageDetails {
        media_type: if multi {
            "application/vnd.oci.image.index.v1+json".into()
        } else {
            "application/vnd.oci.image.manifest.v1+json".into()
        },
        artifact_type: None,
        platforms: archs
            .iter()
            .map(|a| Platform {
                os: "linux".into(),
                architecture: (*a).into(),
                variant: None,
                digest: Some(digest(rng)),
                size: Some(size / archs.len() as u64),
            })
            .collect(),
        size,
        created: Some(at - Duration::hours(2)),
        labels,
        annotations,
        kind,
        model_type,
        extensions,
        referrers,
    }
}

/// A generator of a synthetic stream: registries first, then `mix.events` image events.
#[derive(Debug)]
pub struct Generator {
    mix: Mix,
    rng: StdRng,
    pub registry_ids: Vec<RegistryId>,
    /// Per repository: its tags and their digests.
    tags: Vec<Vec<(Tag, Digest)>>,
    next_tag: Vec<u32>,
    emitted: usize,
    registries_emitted: usize,
}

impl Generator {
    pub fn new(mix: Mix) -> Self {
        let mut rng = StdRng::seed_from_u64(mix.seed);
        let registry_ids = (0..mix.registries.max(1))
            .map(|_| RegistryId(uuid::Uuid::from_u128(rng.random())))
            .collect();
        Self::build(mix, rng, registry_ids, 0)
    }

    /// More image events for the registries of an earlier stream (not registered again).
    pub fn continuing(mix: Mix, registry_ids: Vec<RegistryId>) -> Self {
        let rng = StdRng::seed_from_u64(mix.seed);
        let n = registry_ids.len();
        Self::build(mix, rng, registry_ids, n)
    }

    fn build(
        mix: Mix,
        rng: StdRng,
        registry_ids: Vec<RegistryId>,
        registries_emitted: usize,
    ) -> Self {
        Generator {
            tags: vec![Vec::new(); mix.repositories.max(1)],
            next_tag: vec![0; mix.repositories.max(1)],
            rng,
            registry_ids,
            mix,
            emitted: 0,
            registries_emitted,
        }
    }

    /// Events in total (registries included).
    pub fn len(&self) -> usize {
        self.registry_ids.len() - self.registries_emitted.min(self.registry_ids.len())
            + self.mix.events
            - self.emitted
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn at(&self) -> DateTime<Utc> {
        self.mix.start + Duration::milliseconds(self.emitted as i64 * 250)
    }

    fn registry_of(&self, repo: usize) -> RegistryId {
        self.registry_ids[repo % self.registry_ids.len()]
    }

    fn envelope(&mut self, payload: impl Into<imagelib_events::EventPayload>) -> Envelope {
        let mut e = Envelope::new("sync-scanner", payload)
            .with_id(EventId(uuid::Uuid::from_u128(self.rng.random())))
            .with_actor("system:sync-scanner");
        e.time = self.at();
        e
    }
}

impl Generator {
    fn trust_event(
        &mut self,
        registry_id: RegistryId,
        repository: RepositoryName,
        digest_: Digest,
        at: DateTime<Utc>,
    ) -> Envelope {
        let source = digest(&mut self.rng);
        let policy = Some("synthetic".parse().expect("a valid rule id"));
        match self.rng.random_range(0..6u32) {
            0 => {
                let signer = format!("SHA256:key-{}", self.rng.random_range(0..4u32));
                self.envelope(SignatureVerified {
                    registry_id,
                    repository,
                    digest: digest_,
                    signer,
                    issuer: None,
                    kind: SignatureKind::Cosign,
                    policy,
                    source,
                })
            }
            1 => self.envelope(SignatureFailed {
                registry_id,
                repository,
                digest: digest_,
                signer: "https://github.com/example/ci".into(),
                issuer: Some("https://token.actions.githubusercontent.com".into()),
                kind: SignatureKind::Cosign,
                policy,
                reason: "the certificate expired before the signature was made".into(),
                source,
            }),
            2 => {
                let mut n = || self.rng.random_range(0..4u64);
                let counts = SeverityCounts {
                    critical: n(),
                    high: n(),
                    medium: n(),
                    low: n(),
                    unknown: n(),
                };
                let scanner = if self.rng.random_ratio(1, 2) {
                    "trivy"
                } else {
                    "grype"
                };
                let scanned_at = at - Duration::minutes(self.rng.random_range(0..600));
                self.envelope(VulnerabilitiesReported {
                    registry_id,
                    repository,
                    digest: digest_,
                    scanner: ScannerInfo {
                        name: scanner.into(),
                        version: "0.58.1".into(),
                    },
                    db: "2025-01-01T00:00:00Z".into(),
                    scanned_at,
                    counts,
                    fixable: counts.high,
                    source,
                    origin: None,
                })
            }
            3 => {
                let format = if self.rng.random_ratio(1, 2) {
                    SbomFormat::Spdx
                } else {
                    SbomFormat::Cyclonedx
                };
                self.envelope(SbomFound {
                    registry_id,
                    repository,
                    digest: digest_,
                    format,
                    source,
                })
            }
            4 => {
                let fail = self.rng.random_ratio(1, 2);
                self.envelope(PolicyEvaluated {
                    registry_id,
                    repository,
                    digest: digest_,
                    verdict: if fail {
                        PolicyVerdict::Fail
                    } else {
                        PolicyVerdict::Pass
                    },
                    reasons: if fail {
                        vec![PolicyReason::Unsigned]
                    } else {
                        vec![]
                    },
                    policy,
                    findings: vec![],
                })
            }
            _ => self.envelope(ReferrersChanged {
                registry_id,
                repository,
                digest: digest_,
                referrers: vec![Referrer {
                    digest: source,
                    kind: ReferrerKind::Attestation,
                    artifact_type: Some("application/vnd.dsse.envelope.v1+json".into()),
                }],
            }),
        }
    }
}

impl Generator {
    fn integrity_event(
        &mut self,
        registry_id: RegistryId,
        repository: RepositoryName,
        tag: Tag,
        digest_: Digest,
        at: DateTime<Utc>,
    ) -> Envelope {
        match self.rng.random_range(0..3u32) {
            0 => {
                let found_by = match self.rng.random_range(0..3u32) {
                    0 => MutationFoundBy::Webhook,
                    1 => MutationFoundBy::Sweep,
                    _ => MutationFoundBy::Scan,
                };
                let old = digest(&mut self.rng);
                let seen_at = at - Duration::seconds(self.rng.random_range(0..60));
                self.envelope(TagMutated {
                    registry_id,
                    repository,
                    tag,
                    old_digest: old,
                    new_digest: digest_,
                    found_by,
                    seen_at: Some(seen_at),
                })
            }
            n => {
                let pulls = self.rng.random_range(1..500u64);
                let first = at - Duration::seconds(self.rng.random_range(60..3600));
                let mut e = self.envelope(PullsCounted {
                    registry_id,
                    repository,
                    // Half of the windows are pulls by digest.
                    tag: (n == 1).then_some(tag),
                    digest: digest_,
                    pulls,
                    first_pulled_at: first,
                    last_pulled_at: at,
                });
                e.source = "/imagelib/registry-registry".into();
                e
            }
        }
    }
}

impl Iterator for Generator {
    type Item = Envelope;

    fn next(&mut self) -> Option<Envelope> {
        if self.registries_emitted < self.registry_ids.len() {
            let i = self.registries_emitted;
            self.registries_emitted += 1;
            let id = self.registry_ids[i];
            let mut e = Envelope::new(
                "registry-registry",
                RegistryRegistered {
                    registry_id: id,
                    label: format!("Registry {i}"),
                    url: format!("registry-{i}.example.internal"),
                    registry_type: RegistryType::Harbor,
                    insecure: false,
                    auth_kind: AuthKind::None,
                    credential: None,
                    visibility: vec![],
                    ca_pem: None,
                    scan_interval_secs: None,
                    repositories: vec![],
                    webhook_secret: None,
                    auth_hosts: vec![],
                    report_pulls: false,
                    proxy_url: None,
                    no_proxy: Vec::new(),
                    artifact_registry: None,
                },
            )
            .with_id(EventId(uuid::Uuid::from_u128(self.rng.random())));
            e.time = self.mix.start;
            return Some(e);
        }
        if self.emitted >= self.mix.events {
            return None;
        }
        let repos = self.tags.len();
        let repo = self.rng.random_range(0..repos);
        let roll = self.rng.random_range(0..100u32);
        let registry_id = self.registry_of(repo);
        let repository: RepositoryName =
            repo_name(repo).parse().expect("synthetic names are valid");
        let at = self.at();
        let has_tags = !self.tags[repo].is_empty();
        let e = if has_tags && roll < self.mix.moved_pct {
            let k = self.rng.random_range(0..self.tags[repo].len());
            let new = digest(&mut self.rng);
            let details = details(repo, &mut self.rng, at);
            let (tag, old) = self.tags[repo][k].clone();
            self.tags[repo][k].1 = new.clone();
            self.envelope(TagMoved {
                registry_id,
                repository,
                tag,
                old_digest: old,
                new_digest: new,
                details,
            })
        } else if has_tags && roll < self.mix.moved_pct + self.mix.removed_pct {
            let k = self.rng.random_range(0..self.tags[repo].len());
            let (tag, digest) = self.tags[repo].swap_remove(k);
            self.envelope(TagRemoved {
                registry_id,
                repository,
                tag,
                digest,
            })
        } else if has_tags && roll < self.mix.moved_pct + self.mix.removed_pct + self.mix.trust_pct
        {
            let k = self.rng.random_range(0..self.tags[repo].len());
            let d = self.tags[repo][k].1.clone();
            self.trust_event(registry_id, repository, d, at)
        } else if has_tags
            && roll
                < self.mix.moved_pct
                    + self.mix.removed_pct
                    + self.mix.trust_pct
                    + self.mix.integrity_pct
        {
            let k = self.rng.random_range(0..self.tags[repo].len());
            let (tag, d) = self.tags[repo][k].clone();
            self.integrity_event(registry_id, repository, tag, d, at)
        } else {
            let n = self.next_tag[repo];
            self.next_tag[repo] += 1;
            let tag: Tag = format!(
                "{}{}.{}.{}",
                self.mix.tag_prefix,
                1 + n / 100,
                (n / 10) % 10,
                n % 10
            )
            .parse()
            .expect("synthetic tags are valid");
            let d = digest(&mut self.rng);
            let details = details(repo, &mut self.rng, at);
            self.tags[repo].push((tag.clone(), d.clone()));
            self.envelope(TagDiscovered {
                registry_id,
                repository,
                tag,
                digest: d,
                details,
            })
        };
        self.emitted += 1;
        Some(e)
    }
}
