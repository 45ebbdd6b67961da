//! What is attached to an image: signatures, SBOMs, attestations.
//!
//! OCI 1.1 registries answer `GET /v2/<name>/referrers/<digest>`; older ones (distribution
//! 2.x, most on-premise installs) answer 404, and tools then keep the list in the tag
//! `sha256-<hex>` (the referrers tag schema), while cosign keeps its signatures,
//! attestations and SBOMs in the tags `sha256-<hex>.sig`, `.att` and `.sbom`. The client
//! remembers a 404 so it asks the API once per registry, and when the caller passes the
//! repository's tags it only looks at fallback tags that exist.

use std::sync::atomic::Ordering;

use imagelib_events::model::{Referrer, ReferrerKind};
use imagelib_events::{Digest, RepositoryName, Tag};
use reqwest::Method;

use crate::auth::Scope;
use crate::client::RegistryClient;
use crate::error::{Cap, ErrorKind, Result};
use crate::manifest::{Descriptor, MANIFEST_ACCEPT, Manifest, Reference, media_type};

const API_UNKNOWN: u8 = 0;
const API_SUPPORTED: u8 = 1;
const API_MISSING: u8 = 2;

/// Guesses what a referrer is from its artifact type.
pub fn referrer_kind(artifact_type: Option<&str>) -> ReferrerKind {
    let Some(t) = artifact_type.map(str::to_ascii_lowercase) else {
        return ReferrerKind::Other;
    };
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["sbom", "spdx", "cyclonedx", "syft"]) {
        ReferrerKind::Sbom
    } else if has(&["in-toto", "attestation", "provenance", "slsa", "vex"]) {
        ReferrerKind::Attestation
    } else if has(&["signature", "cosign", "notary", "sigstore"]) {
        ReferrerKind::Signature
    } else {
        ReferrerKind::Other
    }
}

fn from_descriptor(d: &Descriptor) -> Referrer {
    Referrer {
        digest: d.digest.clone(),
        kind: referrer_kind(d.artifact_type.as_deref()),
        artifact_type: d.artifact_type.clone(),
    }
}

impl RegistryClient {
    /// The referrers of `subject`: from the OCI 1.1 API, else from the referrers tag schema,
    /// plus cosign's `.sig`/`.att`/`.sbom` tags. With `known_tags` (the repository's tags),
    /// fallback tags that do not exist cost no request.
    pub async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        known_tags: Option<&[Tag]>,
    ) -> Result<Vec<Referrer>> {
        let mut out: Vec<Referrer> = Vec::new();
        let scope = Scope::Pull(repository.to_string());
        let api = &self.inner.referrers_api;
        let mut use_tag_schema = api.load(Ordering::Relaxed) == API_MISSING;
        if !use_tag_schema {
            let url = self
                .t()
                .url(&format!("v2/{repository}/referrers/{subject}"));
            let reply = self
                .t()
                .execute(
                    Method::GET,
                    url,
                    &scope,
                    Some(media_type::OCI_INDEX),
                    self.config().max_manifest_bytes,
                )
                .await
                .map_err(|e| e.into_cap(Cap::ManifestBytes))?;
            match reply.status.as_u16() {
                200..=299 => {
                    api.store(API_SUPPORTED, Ordering::Relaxed);
                    if let Ok((Manifest::Index(index), _)) =
                        Manifest::parse(reply.content_type(), &reply.body)
                    {
                        let limit = self.config().max_index_children;
                        if index.manifests.len() > limit {
                            tracing::warn!(%repository, %subject, count = index.manifests.len(), limit, "referrers list cut at the index children cap");
                        }
                        out.extend(index.manifests.iter().take(limit).map(from_descriptor));
                    }
                }
                400 | 404 | 405 if api.load(Ordering::Relaxed) == API_UNKNOWN => {
                    api.store(API_MISSING, Ordering::Relaxed);
                    use_tag_schema = true;
                }
                404 => {}
                _ => return Err(reply.status_error()),
            }
        }
        let exists =
            |tag: &str| known_tags.is_none_or(|tags| tags.iter().any(|t| t.as_str() == tag));
        let stem = format!("{}-{}", subject.algorithm(), subject.encoded());
        // A tag is at most 128 characters: a sha512 digest has no tag-schema form.
        if use_tag_schema
            && exists(&stem)
            && let Ok(stem_tag) = stem.parse::<Tag>()
        {
            let tag = Reference::Tag(stem_tag);
            match self.get_manifest(repository, &tag).await {
                Ok(fetched) => {
                    if let Manifest::Index(index) = fetched.manifest {
                        let limit = self.config().max_index_children;
                        out.extend(index.manifests.iter().take(limit).map(from_descriptor));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
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
            if let Some(digest) = self.probe_tag(repository, &tag).await? {
                out.push(Referrer {
                    digest,
                    kind,
                    artifact_type: None,
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|r| seen.insert(r.digest.clone()));
        Ok(out)
    }

    /// The digest a tag points at, or `None` when the tag does not exist.
    async fn probe_tag(&self, repository: &RepositoryName, tag: &Tag) -> Result<Option<Digest>> {
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
            (200..=299, Some(d)) => Ok(Some(d)),
            (404, _) => Ok(None),
            (200..=299 | 405, None) | (405, _) => {
                match self
                    .get_manifest(repository, &Reference::Tag(tag.clone()))
                    .await
                {
                    Ok(f) => Ok(Some(f.digest)),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            _ => Err(reply.status_error()),
        }
    }
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
                "application/vnd.cncf.notary.signature",
                ReferrerKind::Signature,
            ),
            ("application/spdx+json", ReferrerKind::Sbom),
            ("application/vnd.cyclonedx+json", ReferrerKind::Sbom),
            ("application/vnd.in-toto+json", ReferrerKind::Attestation),
            (
                "application/vnd.cncf.model.manifest.v1+json",
                ReferrerKind::Other,
            ),
        ] {
            assert_eq!(referrer_kind(Some(t)), k, "{t}");
        }
        assert_eq!(referrer_kind(None), ReferrerKind::Other);
    }
}
