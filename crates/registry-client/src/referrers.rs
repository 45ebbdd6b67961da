//! What is attached to an image: signatures, SBOMs, attestations, vulnerability reports.
//!
//! Two discovery paths, because registries differ:
//! - OCI 1.1 registries answer `GET /v2/<name>/referrers/<digest>` with an image index of
//!   the manifests whose `subject` is that digest. The list may come in pages linked by
//!   `Link: <…>; rel="next"`, and `?artifactType=` may be applied by the registry (it then
//!   says so in `OCI-Filters-Applied`) or not, in which case the client filters.
//! - Older registries (distribution 2.x, most on-premise installs) answer 404/400/405; tools
//!   then keep the list in the tag `sha256-<hex>` (the referrers tag schema).
//!
//! Independently of both, cosign (without `--registry-referrers-mode=oci-1-1`) keeps
//! signatures, attestations and SBOMs in the tags `sha256-<hex>.sig`, `.att` and `.sbom`,
//! even on registries that have the API; they are always looked at.
//!
//! The client remembers an API-missing answer, so it asks the API once per registry; when
//! the caller passes the repository's tags it only looks at fallback tags that exist, so a
//! digest without cosign tags costs one request (API) or none (tag schema). The answer is
//! untrusted: pages, bytes, descriptors and links are bounded (`max_pages`,
//! `max_manifest_bytes` per page, `max_index_children` in all, links only on the
//! registry's own origin, a URL fetched twice ends the walk), an unreadable descriptor is
//! skipped and counted, and a list cut short says why instead of passing for the whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt as _;
use imagelib_events::model::{Referrer, ReferrerKind};
use imagelib_events::{Digest, RepositoryName, Tag};
use reqwest::Method;
use serde::Deserialize;
use url::Url;

use crate::auth::Scope;
use crate::client::RegistryClient;
use crate::error::{Cap, Error, Result};
use crate::manifest::{Descriptor, MANIFEST_ACCEPT, media_type, verify};
use crate::pagination::next_link;

const API_UNKNOWN: u8 = 0;
const API_SUPPORTED: u8 = 1;
const API_MISSING: u8 = 2;

/// The header a registry sets when it applied the filters of a referrers request.
const FILTERS_APPLIED: &str = "oci-filters-applied";

/// Guesses what a referrer is from its artifact type.
pub fn referrer_kind(artifact_type: Option<&str>) -> ReferrerKind {
    let Some(t) = artifact_type.map(str::to_ascii_lowercase) else {
        return ReferrerKind::Other;
    };
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["sbom", "spdx", "cyclonedx", "syft"]) {
        ReferrerKind::Sbom
    } else if has(&[
        "in-toto",
        "attestation",
        "provenance",
        "slsa",
        "vex",
        "dsse",
        "cosign.artifact.att",
    ]) {
        ReferrerKind::Attestation
    } else if has(&["signature", "cosign", "notary", "sigstore"]) {
        ReferrerKind::Signature
    } else {
        ReferrerKind::Other
    }
}

/// Where a referrer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FoundBy {
    /// The OCI 1.1 referrers API.
    Api,
    /// The referrers tag schema (`sha256-<hex>` index).
    TagSchema,
    /// A cosign tag (`sha256-<hex>.sig`, `.att`, `.sbom`).
    CosignTag,
}

/// One referrer of a subject, as the listing described it (nothing fetched yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerDescriptor {
    /// The referrer manifest's digest.
    pub digest: Digest,
    /// The manifest's media type, when the listing (or the tag's HEAD) said.
    pub media_type: Option<String>,
    /// The manifest's size, when the listing (or the tag's HEAD) said.
    pub size: Option<u64>,
    pub artifact_type: Option<String>,
    /// The annotations the listing carried (the referrer manifest's own, for the API).
    pub annotations: BTreeMap<String, String>,
    pub kind: ReferrerKind,
    pub found_by: FoundBy,
    /// The cosign tag it was found under.
    pub tag: Option<Tag>,
}

impl ReferrerDescriptor {
    fn from_descriptor(d: Descriptor, found_by: FoundBy) -> Self {
        ReferrerDescriptor {
            kind: referrer_kind(d.artifact_type.as_deref()),
            digest: d.digest,
            media_type: Some(d.media_type),
            size: Some(d.size),
            artifact_type: d.artifact_type,
            annotations: d.annotations,
            found_by,
            tag: None,
        }
    }

    /// As the event contract carries it.
    pub fn to_referrer(&self) -> Referrer {
        Referrer {
            digest: self.digest.clone(),
            kind: self.kind,
            artifact_type: self.artifact_type.clone(),
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Copy)]
pub struct ReferrersOptions<'a> {
    /// Only referrers of this artifact type (sent as `?artifactType=`, and applied by the
    /// client when the registry did not). Cosign tags are not looked at with a filter: their
    /// manifests have no artifact type.
    pub artifact_type: Option<&'a str>,
    /// The repository's tags, so fallback tags that do not exist cost no request.
    pub known_tags: Option<&'a [Tag]>,
    /// Look at cosign's `.sig`/`.att`/`.sbom` tags (default true).
    pub cosign_tags: bool,
}

impl Default for ReferrersOptions<'_> {
    fn default() -> Self {
        ReferrersOptions {
            artifact_type: None,
            known_tags: None,
            cosign_tags: true,
        }
    }
}

/// The referrers of one subject.
#[derive(Debug)]
pub struct Referrers {
    pub subject: Digest,
    /// Deduplicated by digest, in listing order (API or tag schema, then cosign tags).
    pub items: Vec<ReferrerDescriptor>,
    /// The registry answered the referrers API (else the tag schema was used).
    pub via_api: bool,
    /// Pages of the referrers API read.
    pub pages: u32,
    /// The registry said it applied the `artifactType` filter (`OCI-Filters-Applied`).
    pub filtered_by_registry: bool,
    /// Descriptors in the listing that could not be read (bad digest, missing fields).
    pub skipped: u32,
    /// False when a page failed, a cap was reached, a link was refused or a loop was cut;
    /// `error` says why. `items` holds what was read until then.
    pub complete: bool,
    pub error: Option<Error>,
}

impl Referrers {
    fn new(subject: &Digest) -> Self {
        Referrers {
            subject: subject.clone(),
            items: Vec::new(),
            via_api: false,
            pages: 0,
            filtered_by_registry: false,
            skipped: 0,
            complete: true,
            error: None,
        }
    }

    fn cut(&mut self, error: Error) {
        tracing::warn!(subject = %self.subject, error = %error, "referrers list cut short");
        self.complete = false;
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// As the event contract carries them.
    pub fn to_referrers(&self) -> Vec<Referrer> {
        self.items
            .iter()
            .map(ReferrerDescriptor::to_referrer)
            .collect()
    }
}

/// A referrers answer or a tag-schema index, read leniently: only `manifests` matters.
#[derive(Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Option<Vec<serde_json::Value>>,
}

impl RegistryClient {
    /// Whether this registry has the referrers API: `None` until it was asked.
    pub fn referrers_api(&self) -> Option<bool> {
        match self.inner.referrers_api.load(Ordering::Relaxed) {
            API_SUPPORTED => Some(true),
            API_MISSING => Some(false),
            _ => None,
        }
    }

    /// Seeds what a previous client of the same registry learnt about the referrers API
    /// (clients are often built per scan), so a registry without it is not asked again.
    /// Only an unknown state is set: what this client saw itself wins. A registry upgraded
    /// to have the API is then seen only by a client not seeded this way.
    pub fn assume_referrers_api(&self, supported: bool) {
        let state = if supported {
            API_SUPPORTED
        } else {
            API_MISSING
        };
        let _ = self.inner.referrers_api.compare_exchange(
            API_UNKNOWN,
            state,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The referrers of `subject` as the event contract carries them: the OCI 1.1 API, else
    /// the referrers tag schema, plus cosign's `.sig`/`.att`/`.sbom` tags. With `known_tags`
    /// (the repository's tags), fallback tags that do not exist cost no request.
    pub async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        known_tags: Option<&[Tag]>,
    ) -> Result<Vec<Referrer>> {
        let options = ReferrersOptions {
            known_tags,
            ..ReferrersOptions::default()
        };
        Ok(self
            .list_referrers(repository, subject, &options)
            .await?
            .to_referrers())
    }

    /// The referrers of each of `subjects` (an index and its platform manifests, say),
    /// concurrently up to the registry's concurrency cap. While the API's presence is not
    /// known, the first subject is asked alone, so a registry without the API costs one
    /// API request, not one per subject.
    pub async fn list_referrers_many(
        &self,
        repository: &RepositoryName,
        subjects: &[Digest],
        options: &ReferrersOptions<'_>,
    ) -> Vec<(Digest, Result<Referrers>)> {
        let mut out = Vec::with_capacity(subjects.len());
        let mut rest = subjects;
        if self.referrers_api().is_none()
            && let Some((first, tail)) = subjects.split_first()
        {
            out.push((
                first.clone(),
                self.list_referrers(repository, first, options).await,
            ));
            rest = tail;
        }
        let concurrency = self.config().max_concurrency.max(1);
        let mut results: Vec<(usize, Digest, Result<Referrers>)> =
            futures::stream::iter(rest.iter().enumerate())
                .map(|(i, subject)| async move {
                    (
                        i,
                        subject.clone(),
                        self.list_referrers(repository, subject, options).await,
                    )
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        results.sort_by_key(|(i, _, _)| *i);
        out.extend(results.into_iter().map(|(_, d, r)| (d, r)));
        out
    }

    /// The referrers of `subject`, with what the listing said of each.
    ///
    /// An error is returned when nothing could be read (the first API page or a cosign tag
    /// HEAD failed); a failure later leaves a partial [`Referrers`] with `complete: false`.
    pub async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        options: &ReferrersOptions<'_>,
    ) -> Result<Referrers> {
        let mut out = Referrers::new(subject);
        let api = &self.inner.referrers_api;
        // While the API's presence is unknown, one lookup asks it and the others wait.
        let probing = if api.load(Ordering::Relaxed) == API_UNKNOWN {
            Some(self.inner.referrers_probe.lock().await)
        } else {
            None
        };
        let use_tag_schema = if api.load(Ordering::Relaxed) == API_MISSING {
            true
        } else {
            !self
                .referrers_from_api(repository, &mut out, options)
                .await?
        };
        drop(probing);
        let exists = |tag: &str| {
            options
                .known_tags
                .is_none_or(|tags| tags.iter().any(|t| t.as_str() == tag))
        };
        let stem = format!("{}-{}", subject.algorithm(), subject.encoded());
        // A tag is at most 128 characters: a sha512 digest has no tag-schema form.
        if use_tag_schema
            && exists(&stem)
            && let Ok(stem_tag) = stem.parse::<Tag>()
        {
            self.referrers_from_tag_schema(repository, &stem_tag, &mut out, options)
                .await;
        }
        if options.cosign_tags && options.artifact_type.is_none() {
            for (suffix, kind) in [
                ("sig", ReferrerKind::Signature),
                ("att", ReferrerKind::Attestation),
                ("sbom", ReferrerKind::Sbom),
            ] {
                let name = format!("{stem}.{suffix}");
                if !exists(&name) {
                    continue;
                }
                let Ok(tag) = name.parse::<Tag>() else {
                    continue;
                };
                if let Some((digest, media_type, size)) = self.probe_tag(repository, &tag).await? {
                    out.items.push(ReferrerDescriptor {
                        digest,
                        media_type,
                        size,
                        artifact_type: None,
                        annotations: BTreeMap::new(),
                        kind,
                        found_by: FoundBy::CosignTag,
                        tag: Some(tag),
                    });
                }
            }
        }
        let mut seen = HashSet::new();
        out.items.retain(|r| seen.insert(r.digest.clone()));
        Ok(out)
    }

    /// Walks the referrers API's pages into `out`; false when the registry has no API.
    async fn referrers_from_api(
        &self,
        repository: &RepositoryName,
        out: &mut Referrers,
        options: &ReferrersOptions<'_>,
    ) -> Result<bool> {
        let t = self.t();
        let config = self.config();
        let api = &self.inner.referrers_api;
        let scope = Scope::Pull(repository.to_string());
        let mut url = t.url(&format!("v2/{repository}/referrers/{}", out.subject));
        if let Some(artifact_type) = options.artifact_type {
            url.query_pairs_mut()
                .append_pair("artifactType", artifact_type);
        }
        let limit = config.max_index_children;
        // An honest registry needs at most one page per referrer (and one empty page).
        let max_pages = config
            .max_pages
            .min(u32::try_from(limit).unwrap_or(u32::MAX).saturating_add(1))
            .max(1);
        let mut fetched: HashSet<String> = HashSet::new();
        let mut filtered_everywhere = options.artifact_type.is_some();
        loop {
            if !fetched.insert(url.to_string()) {
                out.cut(Error::protocol(
                    &url,
                    "referrers pagination loop: the Link header points at a page already fetched",
                ));
                break;
            }
            if out.pages >= max_pages {
                out.cut(Error::Capped {
                    url: url.to_string(),
                    cap: Cap::ListingPages,
                    limit: u64::from(max_pages),
                });
                break;
            }
            let first = out.pages == 0;
            let reply = match t
                .execute(
                    Method::GET,
                    url.clone(),
                    &scope,
                    Some(media_type::OCI_INDEX),
                    config.max_manifest_bytes,
                )
                .await
                .map_err(|e| e.into_cap(Cap::ManifestBytes))
            {
                Ok(reply) => reply,
                Err(e) if first => return Err(e),
                Err(e) => {
                    out.cut(e);
                    break;
                }
            };
            if first {
                match reply.status.as_u16() {
                    200..=299 => api.store(API_SUPPORTED, Ordering::Relaxed),
                    400 | 404 | 405 if api.load(Ordering::Relaxed) == API_UNKNOWN => {
                        tracing::debug!(registry = %config.url, status = %reply.status, "no referrers API: using the referrers tag schema");
                        api.store(API_MISSING, Ordering::Relaxed);
                        return Ok(false);
                    }
                    // An API-speaking registry that does not know the subject.
                    404 => return Ok(true),
                    _ => return Err(reply.status_error()),
                }
            } else if !reply.status.is_success() {
                out.cut(reply.status_error());
                break;
            }
            out.via_api = true;
            out.pages += 1;
            let applied = reply
                .headers
                .get_all(FILTERS_APPLIED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|f| f.trim().eq_ignore_ascii_case("artifactType"));
            filtered_everywhere &= applied;
            let Ok(page) = serde_json::from_slice::<ReferrersIndex>(&reply.body) else {
                out.cut(Error::protocol(
                    &reply.url,
                    "the referrers answer is not an image index",
                ));
                break;
            };
            if !push_descriptors(
                out,
                page.manifests.unwrap_or_default(),
                FoundBy::Api,
                options,
                limit,
                &reply.url,
            ) {
                break;
            }
            match next_link(&reply.headers, &reply.url) {
                Err(reason) => {
                    out.cut(Error::protocol(&reply.url, reason));
                    break;
                }
                Ok(Some(link)) if link.origin() != t.base.origin() => {
                    out.cut(Error::protocol(
                        &reply.url,
                        format!("the next referrers page {link} is not on the registry"),
                    ));
                    break;
                }
                Ok(Some(link)) => url = link,
                Ok(None) => break,
            }
        }
        out.filtered_by_registry = filtered_everywhere && out.pages > 0;
        Ok(true)
    }

    /// Reads the referrers tag schema index into `out`; a missing tag is no referrer, a
    /// garbled one is a cut list.
    async fn referrers_from_tag_schema(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        out: &mut Referrers,
        options: &ReferrersOptions<'_>,
    ) {
        let url = self.t().url(&format!("v2/{repository}/manifests/{tag}"));
        let reply = match self
            .t()
            .execute(
                Method::GET,
                url,
                &Scope::Pull(repository.to_string()),
                Some(MANIFEST_ACCEPT),
                self.config().max_manifest_bytes,
            )
            .await
            .map_err(|e| e.into_cap(Cap::ManifestBytes))
        {
            Ok(reply) => reply,
            Err(e) => return out.cut(e),
        };
        match reply.status.as_u16() {
            200..=299 => {}
            404 => return,
            _ => return out.cut(reply.status_error()),
        }
        match serde_json::from_slice::<ReferrersIndex>(&reply.body) {
            Ok(index) => {
                push_descriptors(
                    out,
                    index.manifests.unwrap_or_default(),
                    FoundBy::TagSchema,
                    options,
                    self.config().max_index_children,
                    &reply.url,
                );
            }
            Err(_) => out.cut(Error::protocol(
                &reply.url,
                "the referrers tag is not an image index",
            )),
        }
    }

    /// The digest, media type and size of the manifest a tag points at, or `None` when the
    /// tag does not exist.
    async fn probe_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<(Digest, Option<String>, Option<u64>)>> {
        let url = self.t().url(&format!("v2/{repository}/manifests/{tag}"));
        let reply = self
            .t()
            .execute(
                Method::HEAD,
                url,
                &Scope::Pull(repository.to_string()),
                Some(MANIFEST_ACCEPT),
                self.config().max_manifest_bytes,
            )
            .await?;
        let digest = reply
            .header("docker-content-digest")
            .and_then(|d| d.trim().parse::<Digest>().ok());
        match (reply.status.as_u16(), digest) {
            (200..=299, Some(d)) => Ok(Some((
                d,
                reply.content_type().map(str::to_owned),
                reply
                    .header("content-length")
                    .and_then(|l| l.trim().parse().ok()),
            ))),
            (404, _) => Ok(None),
            (200..=299 | 405, None) | (405, _) => {
                match self
                    .get_manifest(repository, &crate::manifest::Reference::Tag(tag.clone()))
                    .await
                {
                    Ok(f) => Ok(Some((
                        f.digest,
                        Some(f.media_type),
                        Some(f.raw.len() as u64),
                    ))),
                    Err(e) if e.kind() == crate::error::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            _ => Err(reply.status_error()),
        }
    }

    /// A blob read into memory and verified against its digest, refused (`too_large`) past
    /// `max_bytes`: for referrer layers, whose bound is the caller's (per kind of content),
    /// not the client's config-blob cap.
    pub async fn get_blob_bounded(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        max_bytes: u64,
    ) -> Result<Bytes> {
        let url = self.t().url(&format!("v2/{repository}/blobs/{digest}"));
        let reply = self
            .t()
            .execute(
                Method::GET,
                url,
                &Scope::Pull(repository.to_string()),
                None,
                max_bytes,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(reply.status_error());
        }
        verify(&reply.url, digest, &reply.body)?;
        Ok(reply.body)
    }
}

/// Adds the readable descriptors of one listing page to `out`, filtered by artifact type;
/// false when the total cap was reached (the list is then cut).
fn push_descriptors(
    out: &mut Referrers,
    entries: Vec<serde_json::Value>,
    found_by: FoundBy,
    options: &ReferrersOptions<'_>,
    limit: usize,
    url: &Url,
) -> bool {
    for entry in entries {
        let Ok(descriptor) = serde_json::from_value::<Descriptor>(entry) else {
            out.skipped = out.skipped.saturating_add(1);
            continue;
        };
        if let Some(wanted) = options.artifact_type
            && descriptor.artifact_type.as_deref() != Some(wanted)
        {
            continue;
        }
        if out.items.iter().any(|r| r.digest == descriptor.digest) {
            continue;
        }
        if out.items.len() >= limit {
            out.cut(Error::Capped {
                url: url.to_string(),
                cap: Cap::IndexChildren,
                limit: limit as u64,
            });
            return false;
        }
        out.items
            .push(ReferrerDescriptor::from_descriptor(descriptor, found_by));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_artifact_types() {
        for (t, k) in [
            (
                "application/vnd.dev.cosign.artifact.sig.v1+json",
                ReferrerKind::Signature,
            ),
            (
                "application/vnd.dev.cosign.artifact.att.v1+json",
                ReferrerKind::Attestation,
            ),
            (
                "application/vnd.dev.sigstore.bundle.v0.3+json",
                ReferrerKind::Signature,
            ),
            (
                "application/vnd.cncf.notary.signature",
                ReferrerKind::Signature,
            ),
            ("application/spdx+json", ReferrerKind::Sbom),
            ("application/vnd.cyclonedx+json", ReferrerKind::Sbom),
            ("application/vnd.in-toto+json", ReferrerKind::Attestation),
            (
                "application/vnd.dsse.envelope.v1+json",
                ReferrerKind::Attestation,
            ),
            (
                "application/vnd.cncf.model.manifest.v1+json",
                ReferrerKind::Other,
            ),
            (
                "application/vnd.aquasec.trivy.report+json",
                ReferrerKind::Other,
            ),
        ] {
            assert_eq!(referrer_kind(Some(t)), k, "{t}");
        }
        assert_eq!(referrer_kind(None), ReferrerKind::Other);
    }

    fn url() -> Url {
        "http://r.example/v2/a/referrers/x".parse().unwrap()
    }

    fn subject() -> Digest {
        format!("sha256:{}", "a".repeat(64)).parse().unwrap()
    }

    fn entry(n: u8, artifact_type: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)),
            "size": 10,
            "artifactType": artifact_type,
        })
    }

    #[test]
    fn garbage_descriptors_are_skipped_and_counted() {
        let mut out = Referrers::new(&subject());
        let entries = vec![
            entry(1, "a/b"),
            serde_json::json!("not a descriptor"),
            serde_json::json!({"digest": "sha256:zz", "mediaType": "x", "size": 1}),
            serde_json::json!({"mediaType": "x"}),
            entry(1, "a/b"),
            entry(2, "c/d"),
        ];
        assert!(push_descriptors(
            &mut out,
            entries,
            FoundBy::Api,
            &ReferrersOptions::default(),
            10,
            &url()
        ));
        assert_eq!(out.items.len(), 2, "the duplicate counts once");
        assert_eq!(out.skipped, 3);
        assert!(out.complete);
    }

    fn entry_or_garbage() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..6, prop_oneof![Just("a/b"), Just("c/d")]).prop_map(|(n, t)| entry(n, t)),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ -~]{0,40}".prop_map(serde_json::Value::from),
            ("[ -~]{0,80}", any::<u64>()).prop_map(|(d, size)| {
                serde_json::json!({"mediaType": "x", "digest": d, "size": size})
            }),
            Just(serde_json::Value::Null),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a listing holds, what is kept is bounded, unique, filtered, and a cut
        /// list says so.
        #[test]
        fn any_listing_is_bounded(
            entries in proptest::collection::vec(entry_or_garbage(), 0..24),
            limit in 0usize..6,
            filter in proptest::prelude::any::<bool>(),
        ) {
            let options = ReferrersOptions {
                artifact_type: filter.then_some("c/d"),
                ..ReferrersOptions::default()
            };
            let mut out = Referrers::new(&subject());
            let whole = push_descriptors(&mut out, entries, FoundBy::Api, &options, limit, &url());
            proptest::prop_assert!(out.items.len() <= limit);
            proptest::prop_assert_eq!(whole, out.complete);
            let mut seen = HashSet::new();
            proptest::prop_assert!(out.items.iter().all(|r| seen.insert(r.digest.clone())));
            if filter {
                proptest::prop_assert!(out.items.iter().all(|r| r.artifact_type.as_deref() == Some("c/d")));
            }
        }
    }

    #[test]
    fn the_client_side_filter_and_the_cap() {
        let mut out = Referrers::new(&subject());
        let options = ReferrersOptions {
            artifact_type: Some("c/d"),
            ..ReferrersOptions::default()
        };
        let entries = (1..=6)
            .map(|n| entry(n, if n % 2 == 0 { "c/d" } else { "a/b" }))
            .collect();
        assert!(!push_descriptors(
            &mut out,
            entries,
            FoundBy::Api,
            &options,
            2,
            &url()
        ));
        assert_eq!(out.items.len(), 2);
        assert!(
            out.items
                .iter()
                .all(|r| r.artifact_type.as_deref() == Some("c/d"))
        );
        assert!(!out.complete);
        assert_eq!(
            out.error.as_ref().and_then(Error::cap),
            Some(Cap::IndexChildren)
        );
    }
}
