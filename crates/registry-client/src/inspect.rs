//! One call that tells what a tag is, in the terms classification and the
//! `image.tag_discovered` event use.
//!
//! Manifests and config blobs are content-addressed, so what a digest names never changes:
//! the caller's [`ManifestCache`] is consulted before every fetch by digest, and a digest it
//! holds is never fetched again. A tag costs one HEAD when its digest is already known.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use imagelib_events::model::{Platform, Referrer, ReferrerKind};
use imagelib_events::{Digest, RepositoryName, Tag};

use crate::client::RegistryClient;
use crate::error::{Cap, Error, Result};
use crate::manifest::{
    Descriptor, FetchedManifest, ImageConfig, ImageManifest, Manifest, Reference, media_type,
};

/// Content by digest, as the registry served it.
#[derive(Debug, Clone)]
pub struct CachedContent {
    pub media_type: String,
    pub bytes: Bytes,
}

/// A content-addressed store of manifests and config blobs, provided by the caller (the
/// scanner keeps one across scans). Only verified content is put.
pub trait ManifestCache: Send + Sync {
    fn get(&self, digest: &Digest) -> Option<CachedContent>;
    fn put(&self, digest: &Digest, content: CachedContent);
}

/// A cache that keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

impl ManifestCache for NoCache {
    fn get(&self, _: &Digest) -> Option<CachedContent> {
        None
    }
    fn put(&self, _: &Digest, _: CachedContent) {}
}

/// An unbounded in-memory cache.
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: RwLock<HashMap<Digest, CachedContent>>,
}

impl MemoryCache {
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ManifestCache for MemoryCache {
    fn get(&self, digest: &Digest) -> Option<CachedContent> {
        self.entries.read().ok()?.get(digest).cloned()
    }
    fn put(&self, digest: &Digest, content: CachedContent) {
        if let Ok(mut e) = self.entries.write() {
            e.insert(digest.clone(), content);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct InspectOptions<'a> {
    /// Look up referrers (signatures, SBOMs, attestations).
    pub referrers: bool,
    /// The repository's tags, so referrer fallback tags that do not exist cost nothing.
    pub known_tags: Option<&'a [Tag]>,
}

impl Default for InspectOptions<'_> {
    fn default() -> Self {
        InspectOptions {
            referrers: true,
            known_tags: None,
        }
    }
}

/// What a tag points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInspection {
    /// The digest of the manifest or index the tag points at.
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// The config's media type, for a single manifest.
    pub config_media_type: Option<String>,
    /// For an index, each image entry (attestation manifests excluded) with its digest and
    /// descriptor size; for a single manifest, the config's platform if it names one.
    pub platforms: Vec<Platform>,
    /// Config plus layers; for an index, summed over its platforms.
    pub size: u64,
    pub created: Option<DateTime<Utc>>,
    /// Config labels (for an index, of its linux/amd64 image, else its first).
    pub labels: BTreeMap<String, String>,
    /// The manifest's annotations; for an index, the index's.
    pub annotations: BTreeMap<String, String>,
    pub referrers: Vec<Referrer>,
    /// What this manifest itself refers to, when it is an artifact attached to another.
    pub subject: Option<Digest>,
}

impl ImageInspection {
    /// The digests whose referrers count for this tag: its own, then each platform's
    /// (an index is signed as itself; reports and SBOMs may be attached to either).
    pub fn subjects(&self) -> Vec<Digest> {
        let mut out = vec![self.digest.clone()];
        for d in self.platforms.iter().filter_map(|p| p.digest.as_ref()) {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }
}

const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

impl RegistryClient {
    /// Inspects what `tag` points at: a HEAD for its digest, then everything else from
    /// `cache` or by digest.
    pub async fn inspect(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        cache: &dyn ManifestCache,
        options: &InspectOptions<'_>,
    ) -> Result<ImageInspection> {
        let (head, fetched) = self
            .head_or_get(repository, &Reference::Tag(tag.clone()))
            .await?;
        if let Some(f) = fetched {
            cache.put(
                &f.digest,
                CachedContent {
                    media_type: f.media_type.clone(),
                    bytes: f.raw.clone(),
                },
            );
        }
        self.inspect_digest(repository, &head.digest, cache, options)
            .await
    }

    pub async fn inspect_digest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        cache: &dyn ManifestCache,
        options: &InspectOptions<'_>,
    ) -> Result<ImageInspection> {
        let fetched = self.manifest_by_digest(repository, digest, cache).await?;
        let mut inspection = ImageInspection {
            digest: digest.clone(),
            media_type: fetched.media_type.clone(),
            artifact_type: fetched.manifest.artifact_type().map(str::to_owned),
            config_media_type: None,
            platforms: Vec::new(),
            size: 0,
            created: None,
            labels: BTreeMap::new(),
            annotations: fetched.manifest.annotations().clone(),
            referrers: Vec::new(),
            subject: fetched.manifest.subject().map(|s| s.digest.clone()),
        };
        match &fetched.manifest {
            Manifest::Image(manifest) => {
                inspection.config_media_type = Some(manifest.config.media_type.clone());
                inspection.size = manifest.content_size();
                if let Some(config) = self.config_of(repository, manifest, cache).await? {
                    if let (Some(os), Some(architecture)) = (&config.os, &config.architecture) {
                        inspection.platforms.push(Platform {
                            os: os.clone(),
                            architecture: architecture.clone(),
                            variant: config.variant.clone(),
                            digest: Some(digest.clone()),
                            size: Some(inspection.size),
                        });
                    }
                    inspection.created = config.created;
                    inspection.labels = config.labels;
                }
            }
            Manifest::Index(index) => {
                let limit = self.config().max_index_children;
                if index.manifests.len() > limit {
                    return Err(Error::Capped {
                        url: format!("{repository}@{digest}"),
                        cap: Cap::IndexChildren,
                        limit: limit as u64,
                    });
                }
                let (images, attestations): (Vec<&Descriptor>, Vec<&Descriptor>) =
                    index.manifests.iter().partition(|d| {
                        d.annotations.get(DOCKER_REFERENCE_TYPE).map(String::as_str)
                            != Some("attestation-manifest")
                    });
                inspection
                    .referrers
                    .extend(attestations.iter().map(|d| Referrer {
                        digest: d.digest.clone(),
                        kind: ReferrerKind::Attestation,
                        artifact_type: d.artifact_type.clone(),
                    }));
                inspection.platforms = images
                    .iter()
                    .filter_map(|d| {
                        let p = d.platform.as_ref()?;
                        Some(Platform {
                            os: p.os.clone(),
                            architecture: p.architecture.clone(),
                            variant: p.variant.clone(),
                            digest: Some(d.digest.clone()),
                            size: Some(d.size),
                        })
                    })
                    .collect();
                let children = try_join_all(
                    images
                        .iter()
                        .map(|d| self.manifest_by_digest(repository, &d.digest, cache)),
                )
                .await?;
                inspection.size = children
                    .iter()
                    .zip(&images)
                    .map(|(child, d)| match &child.manifest {
                        Manifest::Image(m) => m.content_size(),
                        Manifest::Index(_) => d.size,
                    })
                    .fold(0u64, u64::saturating_add);
                let primary = images
                    .iter()
                    .position(|d| {
                        d.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    })
                    .or((!images.is_empty()).then_some(0));
                if let Some(Manifest::Image(m)) = primary.map(|i| &children[i].manifest)
                    && let Some(config) = self.config_of(repository, m, cache).await?
                {
                    inspection.created = config.created;
                    inspection.labels = config.labels;
                }
            }
        }
        if inspection.created.is_none() {
            inspection.created = inspection
                .annotations
                .get(CREATED_ANNOTATION)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.to_utc());
        }
        if options.referrers {
            let found = self
                .referrers(repository, digest, options.known_tags)
                .await?;
            for r in found {
                if !inspection.referrers.iter().any(|x| x.digest == r.digest) {
                    inspection.referrers.push(r);
                }
            }
        }
        Ok(inspection)
    }

    async fn manifest_by_digest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        cache: &dyn ManifestCache,
    ) -> Result<FetchedManifest> {
        if let Some(hit) = cache.get(digest) {
            let (manifest, media_type) = Manifest::parse(Some(&hit.media_type), &hit.bytes)
                .map_err(|reason| Error::protocol(format!("cache {digest}"), reason))?;
            return Ok(FetchedManifest {
                digest: digest.clone(),
                media_type,
                manifest,
                raw: hit.bytes,
            });
        }
        let fetched = self
            .get_manifest(repository, &Reference::Digest(digest.clone()))
            .await?;
        cache.put(
            digest,
            CachedContent {
                media_type: fetched.media_type.clone(),
                bytes: fetched.raw.clone(),
            },
        );
        Ok(fetched)
    }

    /// The config of an image, when it is JSON worth reading (not the empty descriptor).
    async fn config_of(
        &self,
        repository: &RepositoryName,
        manifest: &ImageManifest,
        cache: &dyn ManifestCache,
    ) -> Result<Option<ImageConfig>> {
        let config = &manifest.config;
        let is_json = config.media_type == media_type::OCI_CONFIG
            || config.media_type == media_type::DOCKER_CONFIG
            || config.media_type.ends_with("+json");
        if !is_json || config.media_type == media_type::OCI_EMPTY || config.size <= 2 {
            return Ok(None);
        }
        let bytes = match cache.get(&config.digest) {
            Some(hit) => hit.bytes,
            None => {
                let bytes = self.get_blob(repository, &config.digest).await?;
                cache.put(
                    &config.digest,
                    CachedContent {
                        media_type: config.media_type.clone(),
                        bytes: bytes.clone(),
                    },
                );
                bytes
            }
        };
        match ImageConfig::parse(&bytes) {
            Ok(c) => Ok(Some(c)),
            Err(reason) => {
                tracing::debug!(%repository, digest = %config.digest, reason, "config not readable");
                Ok(None)
            }
        }
    }
}
