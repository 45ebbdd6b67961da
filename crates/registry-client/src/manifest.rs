//! Manifests, config blobs and the digests that name them.
//!
//! A manifest is identified by its digest, which the scanner stores and later compares to
//! tell a moved tag from an unchanged one; so a digest is only ever taken from the content's
//! own sha256 or from a `Docker-Content-Digest` header that the content then matches. HEAD is
//! the cheap path (it does not count as a pull on Docker Hub); GET is the fallback when a
//! registry answers HEAD with 404/405 or without the digest header.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use imagelib_events::{Digest, RepositoryName, Tag};
use reqwest::Method;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::auth::Scope;
use crate::client::RegistryClient;
use crate::error::{Cap, Error, Result};

pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_MANIFEST_V1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}

/// The `Accept` header for manifests: every type this client parses.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t.as_str()),
            Reference::Digest(d) => f.write_str(d.as_str()),
        }
    }
}

impl From<Tag> for Reference {
    fn from(t: Tag) -> Self {
        Reference::Tag(t)
    }
}

impl From<Digest> for Reference {
    fn from(d: Digest) -> Self {
        Reference::Digest(d)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
}

/// An OCI image manifest or a Docker schema2 manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// Config plus layers: what pulling the image downloads. Saturating: sizes are the
    /// registry's word, and `u64::MAX` layers must not overflow.
    pub fn content_size(&self) -> u64 {
        self.layers
            .iter()
            .fold(self.config.size, |sum, l| sum.saturating_add(l.size))
    }

    /// The artifact type as the image spec defines it: `artifactType`, else the config's
    /// media type when that is not an image config or the empty descriptor.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or_else(|| {
            let config = self.config.media_type.as_str();
            (![
                media_type::OCI_CONFIG,
                media_type::DOCKER_CONFIG,
                media_type::OCI_EMPTY,
            ]
            .contains(&config))
            .then_some(config)
        })
    }
}

/// An OCI image index or a Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a few hundred bytes, short-lived; boxing buys nothing
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    /// Parses a manifest body; the media type comes from the body's `mediaType`, else the
    /// `Content-Type`, else the shape (`manifests` makes an index). Schema 1 is refused.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<(Manifest, String), String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Peek {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<IgnoredAny>,
        }
        let peek: Peek =
            serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
        let known = |mt: &str| {
            [
                media_type::OCI_INDEX,
                media_type::OCI_MANIFEST,
                media_type::DOCKER_MANIFEST_LIST,
                media_type::DOCKER_MANIFEST,
            ]
            .contains(&mt)
        };
        let declared = peek
            .media_type
            .clone()
            .or_else(|| content_type.filter(|ct| known(ct)).map(str::to_owned));
        if peek.schema_version == Some(1)
            || declared.as_deref().is_some_and(|mt| {
                mt == media_type::DOCKER_MANIFEST_V1 || mt == media_type::DOCKER_MANIFEST_V1_SIGNED
            })
        {
            return Err("Docker schema 1 manifests are not supported".into());
        }
        let is_index = match declared.as_deref() {
            Some(media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST) => true,
            Some(media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST) => false,
            _ => peek.manifests.is_some(),
        };
        if is_index {
            let index: ImageIndex = serde_json::from_slice(body)
                .map_err(|e| format!("the image index is not valid: {e}"))?;
            let mt = declared.unwrap_or_else(|| media_type::OCI_INDEX.to_owned());
            Ok((Manifest::Index(index), mt))
        } else {
            let manifest: ImageManifest = serde_json::from_slice(body)
                .map_err(|e| format!("the image manifest is not valid: {e}"))?;
            let mt = declared.unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned());
            Ok((Manifest::Image(manifest), mt))
        }
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Manifest::Image(m) => &m.annotations,
            Manifest::Index(i) => &i.annotations,
        }
    }

    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Manifest::Image(m) => m.subject.as_ref(),
            Manifest::Index(i) => i.subject.as_ref(),
        }
    }

    pub fn artifact_type(&self) -> Option<&str> {
        match self {
            Manifest::Image(m) => m.effective_artifact_type(),
            Manifest::Index(i) => i.artifact_type.as_deref(),
        }
    }
}

/// What a HEAD tells about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// A manifest with its verified digest and the exact bytes it was computed from.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub manifest: Manifest,
    pub raw: Bytes,
}

/// What an image config blob says about the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub created: Option<DateTime<Utc>>,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ImageConfig {
    /// Reads the fields of an OCI or Docker image config, tolerating absent or odd ones
    /// (a config written by some builder is not a reason to lose the image).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            created: Option<serde_json::Value>,
            os: Option<serde_json::Value>,
            architecture: Option<serde_json::Value>,
            variant: Option<serde_json::Value>,
            config: Option<RawInner>,
        }
        #[derive(Deserialize)]
        struct RawInner {
            #[serde(rename = "Labels")]
            labels: Option<BTreeMap<String, serde_json::Value>>,
        }
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| format!("the config is not a JSON object: {e}"))?;
        let text = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        Ok(ImageConfig {
            created: text(raw.created)
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|d| d.to_utc()),
            os: text(raw.os),
            architecture: text(raw.architecture),
            variant: text(raw.variant),
            labels: raw
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
        })
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The digest of `bytes` with `algorithm` (sha256 or sha512).
pub fn digest_of(algorithm: &str, bytes: &[u8]) -> Option<Digest> {
    let hex = match algorithm {
        "sha256" => hex(&sha2::Sha256::digest(bytes)),
        "sha512" => hex(&sha2::Sha512::digest(bytes)),
        _ => return None,
    };
    format!("{algorithm}:{hex}").parse().ok()
}

pub fn sha256_digest(bytes: &[u8]) -> Digest {
    digest_of("sha256", bytes).expect("sha256 digests are valid")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Checks `bytes` against `expected`; an algorithm this client cannot compute is refused.
pub(crate) fn verify(url: &url::Url, expected: &Digest, bytes: &[u8]) -> Result<()> {
    let actual = digest_of(expected.algorithm(), bytes).ok_or_else(|| {
        Error::protocol(
            url,
            format!("cannot verify a {} digest", expected.algorithm()),
        )
    })?;
    if &actual != expected {
        return Err(Error::DigestMismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

impl RegistryClient {
    fn manifest_url(&self, repository: &RepositoryName, reference: &Reference) -> url::Url {
        self.t()
            .url(&format!("v2/{repository}/manifests/{reference}"))
    }

    /// The manifest's digest, media type and size by HEAD, falling back to GET on 404/405
    /// or when the digest header is missing.
    pub async fn head_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestHead> {
        self.head_or_get(repository, reference)
            .await
            .map(|(head, _)| head)
    }

    /// HEAD, and the manifest too when the fallback had to GET it.
    pub(crate) async fn head_or_get(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<(ManifestHead, Option<FetchedManifest>)> {
        let url = self.manifest_url(repository, reference);
        let reply = self
            .t()
            .execute(
                Method::HEAD,
                url,
                &Scope::Pull(repository.to_string()),
                Some(MANIFEST_ACCEPT),
                self.config().max_manifest_bytes,
            )
            .await
            .map_err(|e| e.into_cap(Cap::ManifestBytes))?;
        let header_digest = reply
            .header("docker-content-digest")
            .and_then(|d| d.trim().parse::<Digest>().ok());
        match (reply.status.as_u16(), header_digest) {
            (200..=299, Some(digest)) => {
                if let Reference::Digest(asked) = reference
                    && asked != &digest
                {
                    return Err(Error::DigestMismatch {
                        url: reply.url.to_string(),
                        expected: asked.to_string(),
                        actual: digest.to_string(),
                    });
                }
                Ok((
                    ManifestHead {
                        digest,
                        media_type: reply.content_type().map(str::to_owned),
                        size: reply.header("content-length").and_then(|l| l.parse().ok()),
                    },
                    None,
                ))
            }
            (200..=299 | 404 | 405, _) => {
                tracing::debug!(status = %reply.status, %repository, %reference, "HEAD fell back to GET");
                let fetched = self.get_manifest(repository, reference).await?;
                let head = ManifestHead {
                    digest: fetched.digest.clone(),
                    media_type: Some(fetched.media_type.clone()),
                    size: Some(fetched.raw.len() as u64),
                };
                Ok((head, Some(fetched)))
            }
            _ => Err(reply.status_error()),
        }
    }

    /// GETs a manifest with the full `Accept` list and verifies its digest: against the
    /// reference when it is one, against `Docker-Content-Digest` when the registry sent one.
    pub async fn get_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<FetchedManifest> {
        let url = self.manifest_url(repository, reference);
        let reply = self
            .t()
            .execute(
                Method::GET,
                url,
                &Scope::Pull(repository.to_string()),
                Some(MANIFEST_ACCEPT),
                self.config().max_manifest_bytes,
            )
            .await
            .map_err(|e| e.into_cap(Cap::ManifestBytes))?;
        if !reply.status.is_success() {
            return Err(reply.status_error());
        }
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => reply
                .header("docker-content-digest")
                .and_then(|d| d.trim().parse::<Digest>().ok()),
        };
        let digest = match expected {
            Some(expected) => {
                verify(&reply.url, &expected, &reply.body)?;
                expected
            }
            None => sha256_digest(&reply.body),
        };
        let (manifest, media_type) = Manifest::parse(reply.content_type(), &reply.body)
            .map_err(|reason| Error::protocol(&reply.url, reason))?;
        Ok(FetchedManifest {
            digest,
            media_type,
            manifest,
            raw: reply.body,
        })
    }

    /// A blob read into memory (at most `max_blob_bytes`) and verified against its digest.
    pub async fn get_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<Bytes> {
        let url = self.t().url(&format!("v2/{repository}/blobs/{digest}"));
        let reply = self
            .t()
            .execute(
                Method::GET,
                url,
                &Scope::Pull(repository.to_string()),
                None,
                self.config().max_blob_bytes,
            )
            .await
            .map_err(|e| e.into_cap(Cap::ConfigBytes))?;
        if !reply.status.is_success() {
            return Err(reply.status_error());
        }
        verify(&reply.url, digest, &reply.body)?;
        Ok(reply.body)
    }

    /// A JSON blob (a config), deserialised.
    pub async fn get_blob_json<T: DeserializeOwned>(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<T> {
        let body = self.get_blob(repository, digest).await?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::protocol(
                format!("{repository}@{digest}"),
                format!("the blob is not the expected JSON: {e}"),
            )
        })
    }

    /// The image config blob: labels, created, os, architecture, variant.
    pub async fn get_config(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<ImageConfig> {
        let body = self.get_blob(repository, digest).await?;
        ImageConfig::parse(&body)
            .map_err(|reason| Error::protocol(format!("{repository}@{digest}"), reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            sha256_digest(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(digest_of("sha512", b"x").is_some());
        assert!(digest_of("md5", b"x").is_none());
    }

    #[test]
    fn parses_index_manifest_and_artifact() {
        let d = sha256_digest(b"a");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{d}","size":5,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}],"annotations":{{"a":"b"}}}}"#,
            media_type::OCI_INDEX,
            media_type::OCI_MANIFEST
        );
        let (m, mt) = Manifest::parse(Some("application/json"), index.as_bytes()).unwrap();
        assert_eq!(mt, media_type::OCI_INDEX);
        let Manifest::Index(i) = &m else {
            panic!("not an index")
        };
        assert_eq!(
            i.manifests[0].platform.as_ref().unwrap().variant.as_deref(),
            Some("v8")
        );
        assert_eq!(m.annotations()["a"], "b");

        let docker = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{d}","size":3}},"layers":[{{"mediaType":"x","digest":"{d}","size":10}}]}}"#,
            media_type::DOCKER_CONFIG
        );
        let (m, mt) =
            Manifest::parse(Some(media_type::DOCKER_MANIFEST), docker.as_bytes()).unwrap();
        assert_eq!(mt, media_type::DOCKER_MANIFEST);
        let Manifest::Image(im) = &m else {
            panic!("not an image")
        };
        assert_eq!(im.content_size(), 13);
        assert_eq!(m.artifact_type(), None);

        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.cncf.model.config.v1+json","digest":"{d}","size":3}},"layers":null,"subject":{{"mediaType":"{}","digest":"{d}","size":1}}}}"#,
            media_type::OCI_MANIFEST,
            media_type::OCI_MANIFEST
        );
        let (m, _) = Manifest::parse(None, artifact.as_bytes()).unwrap();
        assert_eq!(
            m.artifact_type(),
            Some("application/vnd.cncf.model.config.v1+json")
        );
        assert_eq!(m.subject().unwrap().digest, d);
    }

    #[test]
    fn refuses_schema1_and_garbage() {
        assert!(
            Manifest::parse(None, br#"{"schemaVersion":1,"fsLayers":[]}"#)
                .unwrap_err()
                .contains("schema 1")
        );
        assert!(Manifest::parse(None, b"\x00\xffgarbage").is_err());
        assert!(
            Manifest::parse(
                None,
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json""#
            )
            .is_err()
        );
    }

    #[test]
    fn config_is_read_leniently() {
        let c = ImageConfig::parse(
            br#"{"created":"2024-05-01T10:00:00.123456789Z","os":"linux","architecture":"arm64","variant":"v8","config":{"Labels":{"a":"1","n":2}}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture.as_deref(), Some("arm64"));
        assert_eq!(c.labels["a"], "1");
        assert_eq!(c.labels["n"], "2");
        assert_eq!(
            c.created.unwrap().to_rfc3339(),
            "2024-05-01T10:00:00.123456789+00:00"
        );
        let c = ImageConfig::parse(br#"{"created":"yesterday","config":{"Labels":null}}"#).unwrap();
        assert_eq!(c, ImageConfig::default());
    }
}
